//! Keeping every partition whole: Merkle anti-entropy of record partitions
//! (`antientropy`), and the maintenance pass and scrub (`maintain`: repair,
//! re-replication after a node stays down, rebalancing after a new epoch, chunk garbage
//! collection). Both are shells around sans-IO rules in `storage` (`antientropy`, `refs`).

pub(super) mod antientropy;
pub(super) mod maintain;
pub(crate) mod report;

pub use antientropy::{ANTI_ENTROPY_INTERVAL_MS_DEFAULT, AntiEntropyReport};
pub use report::{DOWN_OUT_MS_DEFAULT, MaintenanceConfig, MaintenanceReport};
