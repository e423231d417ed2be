//! The storage layer of a node: the metadata record store (`records`: redb,
//! last-writer-wins on hybrid-logical-clock versions, group commit, per-partition Merkle
//! summaries), the hinted-handoff bookkeeping of fallback copies (`hints`), and the sans-IO
//! replication coordinator (`replication`), which the node runtime and `netsim` drive, the
//! sans-IO sender side of a primary-copy write (`primary`: which node coordinates, when to
//! move on to the next), and
//! the sans-IO Merkle anti-entropy session between two replicas of a partition
//! (`antientropy`), and chunk references with the rules of chunk garbage collection
//! (`refs`). The service around them (handlers over libp2p, handoff, read repair) is `crate::node`.

pub mod antientropy;
pub mod hints;
pub mod primary;
pub mod records;
pub mod refs;
pub mod replication;
