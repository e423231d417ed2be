//! The network layer: node identity and cluster secret files (`identity`), the private
//! libp2p transport (`transport`: TCP + Noise (prologue from the cluster secret) + Yamux) and the length-prefixed postcard
//! codec with per-protocol size limits (`codec`). The node's behaviours (SWIM, chunk, record,
//! map and admin protocols) are built on these as the node runtime lands. `fault` is the
//! test-only fault layer netsim drives (partitions, delay, loss, clock skew).

pub mod codec;
pub mod fault;
pub mod identity;
pub mod transport;

use std::path::PathBuf;

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A key or secret file is missing, damaged or malformed. Nothing was changed.
    #[error("{path}: {reason}")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The transport could not be built.
    #[error("building the libp2p transport: {0}")]
    Transport(String),
    /// The fault file (netsim's fault layer, `fault`) is malformed or unreadable.
    #[error("{0}")]
    FaultFile(String),
}
