//! What a node operation reports when it fails: typed, so the object layer (and through it
//! each front end) can tell a full disk from a lost quorum from a missing map, and say
//! whether a retry may help.

use serde::{Deserialize, Serialize};

/// An error reported by a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RemoteError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

/// Failure kinds a peer reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request was malformed or broke a limit (e.g. bytes that do not match their id).
    BadRequest,
    /// Not enough replicas acknowledged.
    QuorumFailed,
    /// The node has no cluster map yet.
    NoMap,
    /// Storage is full.
    Full,
    /// The holder's copy failed verification; it was set aside and not sent.
    Corrupt,
    /// Anything else on the node's side.
    Internal,
}

/// A `RemoteError` of `code`.
pub(crate) fn err(code: ErrorCode, message: impl Into<String>) -> RemoteError {
    RemoteError {
        code,
        message: message.into(),
    }
}

/// Why one request to one peer got no answer. The request may or may not have reached
/// the peer (a timeout or a closed connection can come after it acted on it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The peer id is not a valid libp2p peer id.
    #[error("not a valid peer id")]
    BadPeer,
    /// This node is shutting down; nothing was sent.
    #[error("the node stopped")]
    Stopped,
    /// No connection to the peer could be made (down, unreachable, or it refused the
    /// cluster secret).
    #[error("could not reach the peer")]
    Unreachable,
    /// The peer did not answer in time.
    #[error("the peer did not answer in time")]
    Timeout,
    /// The connection closed before the answer arrived.
    #[error("the connection closed before the answer")]
    Closed,
    /// The peer does not speak this protocol (not a HADSS node, or another version).
    #[error("the peer does not speak the protocol")]
    Unsupported,
    /// Reading or writing the stream failed (including a frame over its size limit).
    #[error("stream failed: {0}")]
    Io(String),
}

impl From<&libp2p::request_response::OutboundFailure> for TransportError {
    fn from(failure: &libp2p::request_response::OutboundFailure) -> TransportError {
        use libp2p::request_response::OutboundFailure;
        match failure {
            OutboundFailure::DialFailure => TransportError::Unreachable,
            OutboundFailure::Timeout => TransportError::Timeout,
            OutboundFailure::ConnectionClosed => TransportError::Closed,
            OutboundFailure::UnsupportedProtocols => TransportError::Unsupported,
            OutboundFailure::Io(e) => TransportError::Io(e.to_string()),
        }
    }
}

/// Why adopting a cluster map (offered, or pulled from a peer) failed.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The map did not verify or is not newer than the one held; nothing changed.
    #[error(transparent)]
    Refused(#[from] crate::cluster::MapError),
    /// The peer asked holds no map yet.
    #[error("the peer holds no map yet")]
    PeerHasNone,
    /// The peer answered something other than a map.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// The peer could not be asked.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Why a replicated read or write through this node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The node holds no cluster map yet, so it cannot place anything. Nothing changed;
    /// retry once the node has joined.
    #[error("no cluster map yet")]
    NoMap,
    /// A write reached fewer than W durable copies because targets refused it for lack of
    /// space (enough of them that, with room, it would have been acknowledged). Copies that
    /// were written stay (garbage collection removes what nothing references); retrying
    /// helps only once space is freed or added.
    #[error("out of space: {durable} of {needed} copies durable, {full} targets full")]
    NoSpace {
        /// Durable copies made.
        durable: usize,
        /// Copies needed (W).
        needed: usize,
        /// Targets that answered that they are full.
        full: usize,
    },
    /// A write reached fewer than W durable copies: replicas down, unreachable or failing.
    /// Copies that were written stay; retrying may succeed.
    #[error("write quorum not reached: {durable} of {needed} copies durable")]
    WriteQuorum {
        /// Durable copies made.
        durable: usize,
        /// Copies needed (W).
        needed: usize,
    },
    /// A read heard from fewer than R replicas. Nothing changed; retrying may succeed.
    #[error("read quorum not reached: {answered} of {needed} replicas answered")]
    ReadQuorum {
        /// Replicas whose answers counted.
        answered: usize,
        /// Answers needed (R).
        needed: usize,
    },
    /// The node is shutting down.
    #[error("the node stopped")]
    Stopped,
    /// Anything else on this node's side (a local store failed, a task panicked).
    #[error("{0}")]
    Internal(String),
}

impl NodeError {
    /// Whether retrying the same request later may succeed without an operator's help.
    pub fn is_transient(&self) -> bool {
        !matches!(self, NodeError::NoSpace { .. } | NodeError::Internal(_))
    }

    /// A failed write with `durable` of `needed` copies, `full` of whose targets refused for
    /// lack of space: `NoSpace` when room on those targets would have made the quorum.
    pub fn failed_write(durable: usize, needed: usize, full: usize) -> NodeError {
        if full > 0 && durable + full >= needed {
            NodeError::NoSpace { durable, needed, full }
        } else {
            NodeError::WriteQuorum { durable, needed }
        }
    }
}

impl From<tokio::task::JoinError> for NodeError {
    fn from(e: tokio::task::JoinError) -> NodeError {
        NodeError::Internal(format!("a node task failed: {e}"))
    }
}

impl From<&NodeError> for RemoteError {
    fn from(e: &NodeError) -> RemoteError {
        let code = match e {
            NodeError::NoMap => ErrorCode::NoMap,
            NodeError::NoSpace { .. } => ErrorCode::Full,
            NodeError::WriteQuorum { .. } | NodeError::ReadQuorum { .. } => ErrorCode::QuorumFailed,
            NodeError::Stopped | NodeError::Internal(_) => ErrorCode::Internal,
        };
        err(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_fails_for_space_only_when_room_would_have_made_the_quorum() {
        assert!(matches!(NodeError::failed_write(0, 2, 3), NodeError::NoSpace { .. }));
        assert!(matches!(NodeError::failed_write(1, 2, 1), NodeError::NoSpace { .. }));
        // Two replicas down and one full: space alone would not have helped.
        assert!(matches!(
            NodeError::failed_write(0, 2, 1),
            NodeError::WriteQuorum { .. }
        ));
        assert!(matches!(
            NodeError::failed_write(1, 2, 0),
            NodeError::WriteQuorum { .. }
        ));
        assert!(!NodeError::failed_write(0, 2, 3).is_transient());
        assert!(NodeError::failed_write(0, 2, 0).is_transient());
    }
}
