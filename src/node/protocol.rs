//! The node-to-node protocols: one libp2p request-response protocol per concern, each with
//! its own message enums and size limits. The version is in the protocol name; a message
//! that does not decode (an unknown variant included) fails that request with an error and
//! never reaches a handler.

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::cluster::MapEnvelope;
use crate::net::codec::FrameLimits;
use crate::storage::records::Record;

/// Chunk transfer.
pub const CHUNK_PROTOCOL: StreamProtocol = StreamProtocol::new("/hadss/chunk/1");
/// Metadata records.
pub const META_PROTOCOL: StreamProtocol = StreamProtocol::new("/hadss/meta/1");
/// SWIM packets (one request per packet; the response is an empty acknowledgement).
pub const SWIM_PROTOCOL: StreamProtocol = StreamProtocol::new("/hadss/swim/1");
/// Cluster map exchange.
pub const MAP_PROTOCOL: StreamProtocol = StreamProtocol::new("/hadss/map/1");

/// Chunk frames carry one chunk (at most 64 MiB) plus a little framing.
pub const CHUNK_LIMITS: FrameLimits = FrameLimits {
    request_size_bytes_max: 64 * 1024 * 1024 + 4096,
    response_size_bytes_max: 64 * 1024 * 1024 + 4096,
};
/// Record frames: a batch of records or a scan page.
pub const META_LIMITS: FrameLimits = FrameLimits {
    request_size_bytes_max: 16 * 1024 * 1024,
    response_size_bytes_max: 32 * 1024 * 1024,
};
/// Map frames: one signed map.
pub const MAP_LIMITS: FrameLimits = FrameLimits {
    request_size_bytes_max: crate::cluster::map::MAP_SIZE_BYTES_MAX as u32 + 4096,
    response_size_bytes_max: crate::cluster::map::MAP_SIZE_BYTES_MAX as u32 + 4096,
};

/// SWIM frames: one packet (at most `swim::config::PACKET_SIZE_BYTES_MAX`) and framing.
pub const SWIM_LIMITS: FrameLimits = FrameLimits {
    request_size_bytes_max: 2048,
    response_size_bytes_max: 64,
};

/// One SWIM packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwimPacket(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// Acknowledges a SWIM packet's delivery (SWIM's own acks travel as packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwimDelivered;

/// A request about chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkRequest {
    /// Store a chunk. With `coordinate`, the receiver also replicates it to the partition's
    /// other replicas and answers once W copies are durable. `hint_for` marks a copy held
    /// for a replica that is down.
    Put {
        /// BLAKE3 of `data`; checked by the receiver.
        id: [u8; 32],
        /// The bytes (`serde_bytes`: one copy, not a per-byte sequence; same wire format).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
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
}

/// An answer about chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkResponse {
    /// Stored durably (on W replicas when the put coordinated).
    Stored {
        /// Durable copies known to the answering node.
        copies: u32,
    },
    /// The chunk's bytes.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Not held here.
    NotFound,
    /// The request failed.
    Error(RemoteError),
}

/// A request about metadata records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaRequest {
    /// Write records last-writer-wins. `hint_for` marks copies held for a replica that is
    /// down (the receiver hands them back when it returns).
    Put {
        /// The records.
        records: Vec<Record>,
        /// The replica these copies stand in for.
        hint_for: Option<Vec<u8>>,
    },
    /// Read one record.
    Get {
        /// Partition.
        partition: u32,
        /// Key.
        key: Vec<u8>,
    },
    /// Records of a partition whose keys start with `prefix` and sort after `after`, in key
    /// order, at most `limit` (capped at `SCAN_RECORDS_MAX`) and `SCAN_RESPONSE_BYTES_MAX`.
    Scan {
        /// Partition.
        partition: u32,
        /// Key prefix.
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
        /// Exclusive start key.
        after: Option<Vec<u8>>,
        /// Most records wanted.
        limit: u32,
    },
}

/// Most bytes of records one scan answer carries (well inside `META_LIMITS`).
pub const SCAN_RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// An answer about metadata records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// Per record, whether it was applied.
    Applied(Vec<bool>),
    /// The record, if any.
    Record(Option<Record>),
    /// A scan page. `complete`: nothing matching follows the last record (the page was not
    /// cut by the count or size limit).
    Records {
        /// Records in key order, tombstones included.
        records: Vec<Record>,
        /// Whether the scan reached the end of the matching keys.
        complete: bool,
    },
    /// The request failed.
    Error(RemoteError),
}

/// A request for the cluster map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapRequest {
    /// Send your newest map.
    Get,
    /// Adopt this map if it verifies and is newer (how an operator seeds the first map).
    Offer(MapEnvelope),
}

/// The answer to a map request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapResponse {
    /// The newest map the peer holds, if any.
    Map(Option<MapEnvelope>),
    /// The offered map was adopted; the node now holds this epoch.
    Accepted(u64),
    /// The offered map was refused.
    Refused(String),
}

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
