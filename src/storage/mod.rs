//! The storage layer of a node. Today: the sans-IO replication coordinator
//! (`replication`), which the storage service and `netsim` drive; the service itself (chunk
//! and record handlers over libp2p, hints, read repair) lands with the node runtime issue.

pub mod replication;
