//! The cluster layer: the signed cluster map (`map`) and placement computed from it
//! (`placement`), and the rules by which a map moves to its next epoch (`change`). Pure data
//! and functions: no I/O except persisting the newest map.

pub mod change;
pub mod keys;
pub mod map;
pub mod placement;

pub use map::{ClusterMap, MapEnvelope, MapError, MapStore, NodeId, NodeInfo, NodeState, ReplicationPolicy, Role};
pub use placement::{Placement, partition_of_chunk, partition_of_key};
