//! The hedge budget of reads: a read that has not been answered within
//! `HEDGED_READ_DELAY_MS` also asks the next replica, but only while tokens last, so a
//! loaded cluster (where every read is slow) is not asked twice for everything.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// A chunk read that has not been answered this long also asks the next replica (hedged
/// read): a slow or paused replica costs this much, not a request timeout. Well above a 4 MiB
/// transfer on a LAN, so healthy reads rarely hedge.
pub const HEDGED_READ_DELAY_MS: u64 = 250;

/// Hedges allowed per remote chunk read, in thousandths (a token bucket): under load every
/// read is slow, and hedging them all would double the work. At most about one read in ten
/// hedges; replicas SWIM reports down are asked last instead.
const HEDGE_TOKENS_PER_READ_MILLI: u64 = 100;

/// Most hedges saved up for a burst, in thousandths.
const HEDGE_TOKENS_MAX_MILLI: u64 = 10_000;

/// A token bucket of hedges, in thousandths of a hedge.
#[derive(Debug)]
pub(super) struct HedgeBudget {
    tokens_milli: AtomicU64,
}

impl Default for HedgeBudget {
    /// A full bucket.
    fn default() -> HedgeBudget {
        HedgeBudget {
            tokens_milli: AtomicU64::new(HEDGE_TOKENS_MAX_MILLI),
        }
    }
}

impl HedgeBudget {
    /// A remote read began: earns a fraction of a hedge.
    pub(super) fn earn(&self) {
        let _ = self.tokens_milli.fetch_update(Relaxed, Relaxed, |t| {
            Some((t + HEDGE_TOKENS_PER_READ_MILLI).min(HEDGE_TOKENS_MAX_MILLI))
        });
    }

    /// Spends one hedge if there is one.
    pub(super) fn take(&self) -> bool {
        self.tokens_milli
            .fetch_update(Relaxed, Relaxed, |t| t.checked_sub(1000))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_one_read_in_ten_may_hedge_after_the_burst() {
        let budget = HedgeBudget::default();
        let burst = (0..100).take_while(|_| budget.take()).count();
        assert_eq!(burst as u64, HEDGE_TOKENS_MAX_MILLI / 1000);
        let mut hedged = 0;
        for _ in 0..100 {
            budget.earn();
            if budget.take() {
                hedged += 1;
            }
        }
        assert_eq!(hedged, 10);
    }
}
