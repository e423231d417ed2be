//! The storage layer of a node. Today: the metadata record store (`records`: redb,
//! last-writer-wins on hybrid-logical-clock versions, group commit, per-partition Merkle
//! summaries) and the sans-IO replication coordinator (`replication`), which the storage
//! service and `netsim` drive; the service itself (chunk
//! and record handlers over libp2p, hints, read repair) lands with the node runtime issue.

pub mod records;
pub mod replication;
