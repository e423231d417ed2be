//! The node runtime: the protocols nodes speak (`protocol`) and the task that runs a node's
//! libp2p swarm, stores and replicated writes (`runtime`).

pub mod client;
pub mod protocol;
pub mod runtime;

pub use runtime::{Node, NodeConfig, RecordWrite};
