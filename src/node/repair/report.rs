//! What maintenance is configured with and what each pass reports (also the node's
//! rebalancing progress in `/health` and `hadss admin status`). Plain data: the runtime
//! holds it, the admin protocol carries the report.

use serde::{Deserialize, Serialize};

/// How the pass and the scrub run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// Time between passes (0: no passes).
    pub interval_ms: u64,
    /// How long a reference may wait for its holder, and a chunk may stay unreferenced,
    /// before it is collected.
    pub gc_grace_ms: u64,
    /// How long SWIM must report a node down before its partitions get another replica.
    pub down_out_ms: u64,
    /// Bytes per second of chunks copied by a pass (fetched or handed over); 0: unlimited.
    pub copy_rate_bytes_per_s: u64,
    /// Time between scrubs (0: never).
    pub scrub_interval_ms: u64,
    /// Bytes per second a scrub re-reads.
    pub scrub_rate_bytes_per_s: u64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            interval_ms: 60_000,
            gc_grace_ms: 3_600_000,
            down_out_ms: DOWN_OUT_MS_DEFAULT,
            copy_rate_bytes_per_s: 100 * 1024 * 1024,
            scrub_interval_ms: 7 * 24 * 3_600_000,
            scrub_rate_bytes_per_s: 32 * 1024 * 1024,
        }
    }
}

/// Default `down_out_ms`: 10 minutes (Ceph's `mon_osd_down_out_interval`).
pub const DOWN_OUT_MS_DEFAULT: u64 = 600_000;

/// What one pass did and what is left, also the node's rebalancing progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceReport {
    /// Partitions this node is an effective replica of.
    pub partitions_owned: u64,
    /// Partitions still moving here or away: owned ones lacking chunks, or held ones not
    /// owned (surplus records or chunks not yet handed over).
    pub partitions_moving: u64,
    /// Chunks fetched from other replicas.
    pub chunks_fetched: u64,
    /// Bytes of them.
    pub fetched_bytes: u64,
    /// Referenced chunks still missing here after the pass (no holder answered).
    pub chunks_missing: u64,
    /// References judged against their holder.
    pub refs_checked: u64,
    /// References found dead and tombstoned.
    pub refs_dead: u64,
    /// Unreferenced chunks deleted.
    pub chunks_collected: u64,
    /// Bytes of them.
    pub collected_bytes: u64,
    /// Surplus chunks given to owners that lacked them.
    pub surplus_chunks_pushed: u64,
    /// Surplus chunks deleted after every owner confirmed its copy.
    pub surplus_chunks_dropped: u64,
    /// Surplus chunks still held.
    pub surplus_chunks_left: u64,
    /// Bytes still to move: missing chunks (by their references) and surplus chunks here.
    pub bytes_left: u64,
    /// Surplus records pushed to owners.
    pub surplus_records_pushed: u64,
    /// Surplus records deleted after the owners had them.
    pub surplus_records_dropped: u64,
    /// Bytes the compaction afterwards gave back.
    pub compacted_bytes: u64,
}
