//! The wire messages of `/hadss/chunk/1`: storing, reading and asking about chunks.

use bytes::Bytes;
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::net::codec::{Body, FrameLimits};
use crate::node::error::RemoteError;

/// Chunk transfer.
pub const CHUNK_PROTOCOL: StreamProtocol = StreamProtocol::new("/hadss/chunk/1");

/// Chunk frames carry one chunk (at most 64 MiB) plus a little framing.
pub const CHUNK_LIMITS: FrameLimits = FrameLimits {
    request_size_bytes_max: 64 * 1024 * 1024 + 4096,
    response_size_bytes_max: 64 * 1024 * 1024 + 4096,
};

/// A request about chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkRequest {
    /// Store a chunk. With `coordinate`, the receiver also replicates it to the partition's
    /// other replicas and answers once W copies are durable. `hint_for` marks a copy held
    /// for a replica that is down.
    Put {
        /// BLAKE3 of `data`; checked by the receiver.
        id: [u8; 32],
        /// The bytes: the frame's raw body (see `net::codec`), never serialised.
        #[serde(skip)]
        data: Bytes,
        /// Replicate to the other replicas before answering.
        coordinate: bool,
        /// The replica this copy stands in for.
        hint_for: Option<Vec<u8>>,
    },
    /// Read a chunk (verified by the holder before it is sent).
    Get {
        /// The chunk id.
        id: [u8; 32],
    },
    /// Which of these chunks are stored here (readable); at most `HAS_IDS_MAX`.
    Has {
        /// Chunk ids.
        ids: Vec<[u8; 32]>,
    },
}

/// Most ids one `ChunkRequest::Has` may ask about.
pub const HAS_IDS_MAX: usize = 4096;

/// An answer about chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkResponse {
    /// Stored durably (on W replicas when the put coordinated).
    Stored {
        /// Durable copies known to the answering node.
        copies: u32,
    },
    /// The chunk's bytes: the frame's raw body (see `net::codec`), never serialised.
    Data(#[serde(skip)] Bytes),
    /// Not held here.
    NotFound,
    /// The request failed.
    Error(RemoteError),
    /// Per asked id, whether it is stored here.
    Have(Vec<bool>),
}

impl Body for ChunkRequest {
    fn body_mut(&mut self) -> Option<&mut Bytes> {
        match self {
            ChunkRequest::Put { data, .. } => Some(data),
            _ => None,
        }
    }
}

impl Body for ChunkResponse {
    fn body_mut(&mut self) -> Option<&mut Bytes> {
        match self {
            ChunkResponse::Data(data) => Some(data),
            _ => None,
        }
    }
}
