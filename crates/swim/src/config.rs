//! SWIM tuning knobs with units in their names, and the LAN / WAN presets.
//!
//! Owns [`SwimConfig`] and its translation to [`foca::Config`]. Every duration is in
//! milliseconds and every size in bytes, as the names say.
//!
//! Invariants (checked by [`SwimConfig::validate`]): `0 < probe_rtt_ms < probe_period_ms`,
//! every period and timeout non-zero, fan-outs non-zero, and the packet size large
//! enough for a header with two worst-case identities.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use foca::PeriodicParams;

use crate::error::{Result, SwimError};
use crate::identity::IDENTITY_BYTES_MAX;

/// Largest packet we ever produce or accept, in bytes: stays under a 1500-byte Ethernet
/// MTU with IP/UDP (or QUIC/noise) overhead, so gossip never fragments.
pub const PACKET_SIZE_BYTES_MAX: usize = 1400;

/// Membership protocol parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwimConfig {
    /// One protocol period: how often each member probes one other member.
    pub probe_period_ms: u64,
    /// How long to wait for a direct ack before asking others to probe indirectly.
    pub probe_rtt_ms: u64,
    /// How many members are asked to probe indirectly when a direct probe times out.
    pub indirect_probes: usize,
    /// How long a suspected member has to refute before it is declared down.
    pub suspicion_timeout_ms: u64,
    /// How many times each membership update or broadcast is piggybacked.
    pub max_transmissions: u8,
    /// Packet size limit for everything sent and received, in bytes.
    pub max_packet_size_bytes: usize,
    /// Extra gossip round period (only when there is something to gossip).
    pub gossip_period_ms: u64,
    /// Members contacted per extra gossip round.
    pub gossip_fanout: usize,
    /// How often to re-announce to random live members (speeds up discovery).
    pub announce_period_ms: u64,
    /// Members contacted per periodic announce.
    pub announce_fanout: usize,
    /// How often to announce to members believed down: this is what heals partitions.
    pub announce_down_period_ms: u64,
    /// Down members contacted per round.
    pub announce_down_fanout: usize,
    /// How long a down member is remembered (blocks reuse of its exact identity).
    pub remove_down_after_ms: u64,
    /// Tell a member we consider down, so it can rejoin with a new generation.
    pub notify_down_members: bool,
    /// How often each member re-gossips the newest broadcast of each kind it holds
    /// (one more round of `max_transmissions`). Epidemic gossip misses a member now
    /// and then; this is the anti-entropy that catches it up.
    pub broadcast_refresh_period_ms: u64,
}

/// Updates are sent `4·log10(n+1)` times, as in memberlist / foca; enough for
/// epidemic dissemination to reach every member with high probability.
fn max_transmissions_for(cluster_size: u32) -> u8 {
    let tx = (f64::from(cluster_size.saturating_add(1))).log10() * 4.0;
    tx.clamp(3.0, 255.0) as u8
}

impl SwimConfig {
    /// Preset for one data centre (sub-millisecond RTT) with about `cluster_size` members.
    ///
    /// The suspicion timeout is one protocol period per decade of members, plus one
    /// (2 s at 10 members, 3 s at 100, 4 s at 1000): long enough for a falsely suspected
    /// member to hear of it and refute through the 200 ms gossip rounds at 5% loss
    /// (1.5 s at 100 members already lets false downs through in the simulator), short
    /// enough to keep detection within a few periods (see docs/BENCHMARKS.md).
    pub fn lan(cluster_size: u32) -> Self {
        let probe_period_ms = 1_000;
        let decades = f64::from(cluster_size.max(1)).log10().ceil() as u64;
        Self {
            probe_period_ms,
            probe_rtt_ms: 300,
            indirect_probes: 3,
            suspicion_timeout_ms: probe_period_ms * (1 + decades.max(1)),
            max_transmissions: max_transmissions_for(cluster_size),
            max_packet_size_bytes: PACKET_SIZE_BYTES_MAX,
            gossip_period_ms: 200,
            gossip_fanout: 3,
            announce_period_ms: 10_000,
            announce_fanout: 1,
            announce_down_period_ms: 10_000,
            announce_down_fanout: 2,
            remove_down_after_ms: 24 * 3_600_000,
            notify_down_members: true,
            broadcast_refresh_period_ms: 30_000,
        }
    }

    /// Preset for members on one machine (tests, local clusters): the LAN preset sped up 5×,
    /// so joins and failure detection take seconds of wall time.
    pub fn local(cluster_size: u32) -> Self {
        Self {
            probe_period_ms: 200,
            probe_rtt_ms: 60,
            suspicion_timeout_ms: 1_000,
            gossip_period_ms: 50,
            announce_period_ms: 1_000,
            announce_down_period_ms: 1_000,
            broadcast_refresh_period_ms: 2_000,
            ..Self::lan(cluster_size)
        }
    }

    /// Preset for members spread over regions (RTT up to a few hundred ms).
    pub fn wan(cluster_size: u32) -> Self {
        let probe_period_ms = 5_000;
        let decades = f64::from(cluster_size.max(1)).log10().ceil() as u64;
        Self {
            probe_period_ms,
            probe_rtt_ms: 3_000,
            indirect_probes: 3,
            suspicion_timeout_ms: probe_period_ms * (3 + decades.max(1)),
            max_transmissions: max_transmissions_for(cluster_size),
            max_packet_size_bytes: PACKET_SIZE_BYTES_MAX,
            gossip_period_ms: 500,
            gossip_fanout: 4,
            announce_period_ms: 60_000,
            announce_fanout: 2,
            announce_down_period_ms: 30_000,
            announce_down_fanout: 3,
            remove_down_after_ms: 24 * 3_600_000,
            notify_down_members: true,
            broadcast_refresh_period_ms: 120_000,
        }
    }

    /// Checks the invariants listed in the module docs.
    pub fn validate(&self) -> Result<()> {
        let nonzero_ms = [
            (self.probe_period_ms, "probe_period_ms must be > 0"),
            (self.probe_rtt_ms, "probe_rtt_ms must be > 0"),
            (self.suspicion_timeout_ms, "suspicion_timeout_ms must be > 0"),
            (self.gossip_period_ms, "gossip_period_ms must be > 0"),
            (self.announce_period_ms, "announce_period_ms must be > 0"),
            (self.announce_down_period_ms, "announce_down_period_ms must be > 0"),
            (self.remove_down_after_ms, "remove_down_after_ms must be > 0"),
            (
                self.broadcast_refresh_period_ms,
                "broadcast_refresh_period_ms must be > 0",
            ),
        ];
        for (v, msg) in nonzero_ms {
            if v == 0 {
                return Err(SwimError::InvalidConfig(msg));
            }
        }
        if self.probe_rtt_ms >= self.probe_period_ms {
            return Err(SwimError::InvalidConfig("probe_rtt_ms must be < probe_period_ms"));
        }
        if self.max_packet_size_bytes < 2 * IDENTITY_BYTES_MAX + 64 || self.max_packet_size_bytes > u16::MAX as usize {
            return Err(SwimError::InvalidConfig(
                "max_packet_size_bytes must fit a header of two maximal identities and a u16",
            ));
        }
        Ok(())
    }

    /// Translates to foca's configuration (after validating).
    pub(crate) fn to_foca(&self) -> Result<foca::Config> {
        self.validate()?;
        let nz = |v: usize, msg: &'static str| NonZeroUsize::new(v).ok_or(SwimError::InvalidConfig(msg));
        let ms = Duration::from_millis;
        Ok(foca::Config {
            probe_period: ms(self.probe_period_ms),
            probe_rtt: ms(self.probe_rtt_ms),
            num_indirect_probes: nz(self.indirect_probes, "indirect_probes must be > 0")?,
            max_transmissions: NonZeroU8::new(self.max_transmissions)
                .ok_or(SwimError::InvalidConfig("max_transmissions must be > 0"))?,
            suspect_to_down_after: ms(self.suspicion_timeout_ms),
            remove_down_after: Some(ms(self.remove_down_after_ms)),
            max_packet_size: nz(self.max_packet_size_bytes, "max_packet_size_bytes must be > 0")?,
            notify_down_members: self.notify_down_members,
            periodic_announce: Some(PeriodicParams {
                frequency: ms(self.announce_period_ms),
                num_members: nz(self.announce_fanout, "announce_fanout must be > 0")?,
            }),
            periodic_announce_to_down_members: Some(PeriodicParams {
                frequency: ms(self.announce_down_period_ms),
                num_members: nz(self.announce_down_fanout, "announce_down_fanout must be > 0")?,
            }),
            periodic_gossip: Some(PeriodicParams {
                frequency: ms(self.gossip_period_ms),
                num_members: nz(self.gossip_fanout, "gossip_fanout must be > 0")?,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for n in [1, 10, 100, 1000, 10_000] {
            assert!(SwimConfig::lan(n).to_foca().is_ok());
            assert!(SwimConfig::wan(n).to_foca().is_ok());
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = SwimConfig::lan(10);
        c.probe_rtt_ms = c.probe_period_ms;
        assert!(c.validate().is_err());
        let mut c = SwimConfig::lan(10);
        c.gossip_fanout = 0;
        assert!(c.to_foca().is_err());
        let mut c = SwimConfig::lan(10);
        c.max_packet_size_bytes = 100;
        assert!(c.validate().is_err());
    }
}
