//! The node's counters: plain atomics every subsystem bumps; `health` reports them on
//! `/health` and `/metrics`.

/// Counters of a node.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Requests from peers that failed to decode or broke a limit.
    pub bad_inbound: std::sync::atomic::AtomicU64,
    /// Chunks refused because their bytes did not match their id.
    pub chunk_id_mismatch: std::sync::atomic::AtomicU64,
    /// SWIM packets dropped because a queue was full (counted as loss by SWIM).
    pub swim_dropped: std::sync::atomic::AtomicU64,
    /// Copies stored here on behalf of a replica that was down.
    pub hints_stored: std::sync::atomic::AtomicU64,
    /// Hinted copies handed back to their replica.
    pub hints_handed_off: std::sync::atomic::AtomicU64,
    /// Stale or missing record copies rewritten by reads.
    pub record_read_repairs: std::sync::atomic::AtomicU64,
    /// Missing or corrupt chunk copies on replicas rewritten by reads.
    pub chunk_read_repairs: std::sync::atomic::AtomicU64,
    /// Chunk reads refused here because the local copy failed verification.
    pub corrupt_chunks_refused: std::sync::atomic::AtomicU64,
    /// Inbound connections that failed before they were established (a wrong cluster secret
    /// shows up here: the handshake cannot complete).
    pub inbound_connection_failures: std::sync::atomic::AtomicU64,
    /// Replicated writes (chunks and records) this node coordinated that reached W copies.
    pub writes_acked: std::sync::atomic::AtomicU64,
    /// Replicated writes this node coordinated that failed.
    pub writes_failed: std::sync::atomic::AtomicU64,
    /// Members SWIM reported up or rejoined.
    pub members_up_events: std::sync::atomic::AtomicU64,
    /// Members SWIM reported down.
    pub members_down_events: std::sync::atomic::AtomicU64,
    /// Chunk reads that asked a second replica because the first was slow.
    pub hedged_chunk_reads: std::sync::atomic::AtomicU64,
    /// Record reads that asked one more replica because one was slow.
    pub hedged_record_reads: std::sync::atomic::AtomicU64,
    /// Anti-entropy comparisons of a partition with a peer.
    pub anti_entropy_sessions: std::sync::atomic::AtomicU64,
    /// Bytes of anti-entropy questions and answers (records copied not included).
    pub anti_entropy_bytes: std::sync::atomic::AtomicU64,
    /// Records anti-entropy copied (pulled here or pushed to a peer).
    pub anti_entropy_records_copied: std::sync::atomic::AtomicU64,
    /// Maintenance passes run.
    pub maintenance_passes: std::sync::atomic::AtomicU64,
    /// Referenced chunks fetched by maintenance (repair, re-replication, rebalancing).
    pub chunks_fetched: std::sync::atomic::AtomicU64,
    /// Unreferenced chunks deleted by garbage collection.
    pub chunks_collected: std::sync::atomic::AtomicU64,
    /// Chunk references found dead (holder moved on) and tombstoned.
    pub refs_dead: std::sync::atomic::AtomicU64,
    /// Surplus chunks and records dropped after their owners confirmed their copies.
    pub surplus_dropped: std::sync::atomic::AtomicU64,
    /// Bytes re-read by scrubs.
    pub scrubbed_bytes: std::sync::atomic::AtomicU64,
    /// Corrupt chunk copies scrubs found (set aside, then restored from a replica).
    pub scrub_corrupt: std::sync::atomic::AtomicU64,
    /// Bytes of chunks put through this node by its callers (the object layer, a client).
    pub chunk_bytes_put: std::sync::atomic::AtomicU64,
    /// Bytes of chunk copies this node sent to other nodes (to a primary, or as a
    /// coordinator to the replicas). Divided by `chunk_bytes_put`: a gateway's egress per
    /// byte stored (about 1 with primary-copy writes; N when it wrote every replica).
    pub chunk_bytes_sent: std::sync::atomic::AtomicU64,
    /// Durable copies primaries reported for chunks this node put through them.
    pub chunk_copies_acked: std::sync::atomic::AtomicU64,
    /// Chunk puts that moved on to the next primary (the previous one failed or was slow).
    pub primary_fallbacks: std::sync::atomic::AtomicU64,
    /// Chunk reads for this node's callers answered from its own chunk store (an S3
    /// endpoint on a storage node that holds a copy: no network, no encryption).
    pub chunk_reads_local: std::sync::atomic::AtomicU64,
    /// Chunk reads for this node's callers that had to ask other nodes.
    pub chunk_reads_remote: std::sync::atomic::AtomicU64,
    /// Records written through this node by its callers (the object layer, keys).
    pub records_put: std::sync::atomic::AtomicU64,
    /// Record copies this node sent to other nodes (to a primary, or as a coordinator to
    /// the replicas). Divided by `records_put`: about 1 on a gateway with primary-copy writes.
    pub record_copies_sent: std::sync::atomic::AtomicU64,
}

impl NodeCounters {
    /// (name, help, value) of every counter, for metrics.
    pub(super) fn all(&self) -> [(&'static str, &'static str, u64); 33] {
        use std::sync::atomic::Ordering::Relaxed;
        [
            (
                "bad_inbound_requests",
                "Requests from peers that failed to decode or broke a limit",
                self.bad_inbound.load(Relaxed),
            ),
            (
                "chunk_id_mismatches",
                "Chunks refused because their bytes did not match their id",
                self.chunk_id_mismatch.load(Relaxed),
            ),
            (
                "swim_packets_dropped",
                "SWIM packets dropped on a full queue",
                self.swim_dropped.load(Relaxed),
            ),
            (
                "hints_stored",
                "Copies stored on behalf of a replica that was down",
                self.hints_stored.load(Relaxed),
            ),
            (
                "hints_handed_off",
                "Hinted copies handed back to their replica",
                self.hints_handed_off.load(Relaxed),
            ),
            (
                "record_read_repairs",
                "Stale or missing record copies rewritten by reads",
                self.record_read_repairs.load(Relaxed),
            ),
            (
                "chunk_read_repairs",
                "Missing or corrupt chunk copies rewritten by reads",
                self.chunk_read_repairs.load(Relaxed),
            ),
            (
                "corrupt_chunks_refused",
                "Chunk reads refused because the local copy failed verification",
                self.corrupt_chunks_refused.load(Relaxed),
            ),
            (
                "inbound_connection_failures",
                "Inbound connections that failed before being established",
                self.inbound_connection_failures.load(Relaxed),
            ),
            (
                "writes_acked",
                "Replicated writes coordinated here that reached the write quorum",
                self.writes_acked.load(Relaxed),
            ),
            (
                "writes_failed",
                "Replicated writes coordinated here that failed",
                self.writes_failed.load(Relaxed),
            ),
            (
                "swim_members_up_events",
                "Members SWIM reported up or rejoined",
                self.members_up_events.load(Relaxed),
            ),
            (
                "swim_members_down_events",
                "Members SWIM reported down",
                self.members_down_events.load(Relaxed),
            ),
            (
                "hedged_chunk_reads",
                "Chunk reads that also asked the next replica because one was slow",
                self.hedged_chunk_reads.load(Relaxed),
            ),
            (
                "hedged_record_reads",
                "Record reads that also asked one more replica because one was slow",
                self.hedged_record_reads.load(Relaxed),
            ),
            (
                "anti_entropy_sessions",
                "Anti-entropy comparisons of a partition with a peer",
                self.anti_entropy_sessions.load(Relaxed),
            ),
            (
                "anti_entropy_bytes",
                "Bytes of anti-entropy questions and answers",
                self.anti_entropy_bytes.load(Relaxed),
            ),
            (
                "anti_entropy_records_copied",
                "Records anti-entropy copied between replicas",
                self.anti_entropy_records_copied.load(Relaxed),
            ),
            (
                "maintenance_passes",
                "Maintenance passes run",
                self.maintenance_passes.load(Relaxed),
            ),
            (
                "chunks_fetched",
                "Referenced chunks fetched by maintenance",
                self.chunks_fetched.load(Relaxed),
            ),
            (
                "chunks_collected",
                "Unreferenced chunks deleted by garbage collection",
                self.chunks_collected.load(Relaxed),
            ),
            (
                "chunk_refs_dead",
                "Chunk references whose holder moved on, tombstoned",
                self.refs_dead.load(Relaxed),
            ),
            (
                "surplus_copies_dropped",
                "Surplus chunks and records dropped after the owners confirmed theirs",
                self.surplus_dropped.load(Relaxed),
            ),
            (
                "scrubbed_bytes",
                "Bytes re-read by scrubs",
                self.scrubbed_bytes.load(Relaxed),
            ),
            (
                "scrub_corrupt_chunks",
                "Corrupt chunk copies found by scrubs",
                self.scrub_corrupt.load(Relaxed),
            ),
            (
                "chunk_bytes_put",
                "Bytes of chunks put through this node by its callers",
                self.chunk_bytes_put.load(Relaxed),
            ),
            (
                "chunk_bytes_sent",
                "Bytes of chunk copies this node sent to other nodes (to a primary or to replicas)",
                self.chunk_bytes_sent.load(Relaxed),
            ),
            (
                "chunk_copies_acked",
                "Durable copies primaries reported for chunks put through this node",
                self.chunk_copies_acked.load(Relaxed),
            ),
            (
                "primary_fallbacks",
                "Chunk puts that moved on to the next primary",
                self.primary_fallbacks.load(Relaxed),
            ),
            (
                "chunk_reads_local",
                "Chunk reads answered from this node's own chunk store",
                self.chunk_reads_local.load(Relaxed),
            ),
            (
                "chunk_reads_remote",
                "Chunk reads for this node's callers that asked other nodes",
                self.chunk_reads_remote.load(Relaxed),
            ),
            (
                "records_put",
                "Records written through this node by its callers",
                self.records_put.load(Relaxed),
            ),
            (
                "record_copies_sent",
                "Record copies this node sent to other nodes (to a primary or to replicas)",
                self.record_copies_sent.load(Relaxed),
            ),
        ]
    }
}

pub(super) fn bump(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

pub(super) fn bump_by(counter: &std::sync::atomic::AtomicU64, amount: u64) {
    counter.fetch_add(amount, std::sync::atomic::Ordering::Relaxed);
}
