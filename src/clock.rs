//! The wall clock, handed to whatever stamps versions, dates and leases (the node runtime,
//! the object layer) at construction, never read from process-global state. Production
//! uses [`Clock::system`]; netsim's fault layer hands in one skewed by its fault file
//! (`net::fault::Faults::clock`), and tests can hand in any [`WallClock`].
//!
//! Only wall-clock time lives here: intervals and timeouts use tokio's monotonic clock.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait WallClock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        system_now_ms()
    }
}

/// The operating system's clock in ms since the Unix epoch (0 before it, saturating after
/// `u64::MAX` ms).
pub fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A shared handle to a wall clock; cheap to clone.
#[derive(Debug, Clone)]
pub struct Clock(Arc<dyn WallClock>);

impl Clock {
    /// The operating system's clock.
    pub fn system() -> Clock {
        Clock(Arc::new(SystemClock))
    }

    /// A clock reading from `source`.
    pub fn new(source: impl WallClock) -> Clock {
        Clock(Arc::new(source))
    }

    /// Milliseconds since the Unix epoch by this clock.
    pub fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

/// A clock a test sets by hand.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    /// A clock reading `now_ms` until set.
    pub fn at(now_ms: u64) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicU64::new(now_ms))
    }

    /// Sets the time.
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl WallClock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl WallClock for Arc<ManualClock> {
    fn now_ms(&self) -> u64 {
        self.as_ref().now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_reads_what_it_was_set_to() {
        let manual = Arc::new(ManualClock::at(5));
        let clock = Clock::new(manual.clone());
        assert_eq!(clock.now_ms(), 5);
        manual.set(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        assert!(
            Clock::system().now_ms() > 1_600_000_000_000,
            "the system clock is after 2020"
        );
    }
}
