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
/// Raft between monitors (opaque frames: the monitor module owns their encoding).
pub const RAFT_PROTOCOL: StreamProtocol = StreamProtocol::new("/hadss/raft/1");
/// Cluster administration: status, map changes, joins (answered by monitors).
pub const ADMIN_PROTOCOL: StreamProtocol = StreamProtocol::new("/hadss/admin/1");

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

/// Raft frames: an append of at most `monitor::raft::ENTRIES_PER_APPEND_MAX` small proposals
/// or one snapshot chunk (`monitor::raft::SNAPSHOT_CHUNK_SIZE_BYTES`), well inside this.
pub const RAFT_LIMITS: FrameLimits = FrameLimits {
    request_size_bytes_max: 16 * 1024 * 1024,
    response_size_bytes_max: 1024 * 1024,
};
/// Admin frames: a proposal goes in, a status report with the map comes out.
pub const ADMIN_LIMITS: FrameLimits = FrameLimits {
    request_size_bytes_max: 64 * 1024,
    response_size_bytes_max: crate::cluster::map::MAP_SIZE_BYTES_MAX as u32 * 2 + 4096,
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
    /// The chunk's bytes.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Not held here.
    NotFound,
    /// The request failed.
    Error(RemoteError),
    /// Per asked id, whether it is stored here.
    Have(Vec<bool>),
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
    /// Reserve a key for a create (`If-None-Match: *`): granted unless a live record is
    /// stored or another token holds an unexpired reservation (see `RecordStore::reserve`).
    Reserve {
        /// Partition.
        partition: u32,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The creator's token.
        token: [u8; 16],
        /// How long the reservation lasts (capped at `RESERVATION_TTL_MS_MAX`).
        ttl_ms: u32,
    },
    /// One anti-entropy question about a partition (`crate::storage::antientropy`).
    AntiEntropy {
        /// Partition.
        partition: u32,
        /// The question.
        ask: crate::storage::antientropy::Ask,
    },
    /// Drop the token's reservation of a key.
    Release {
        /// Partition.
        partition: u32,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The creator's token.
        token: [u8; 16],
    },
}

/// Longest a create reservation lasts.
pub const RESERVATION_TTL_MS_MAX: u32 = 120_000;

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
    /// The replica's answer to a reservation.
    Reservation(crate::storage::records::Reservation),
    /// The replica's answer to an anti-entropy question.
    AntiEntropy(crate::storage::antientropy::Answer),
    /// The request failed.
    Error(RemoteError),
    /// The answer (`Record` or `Records`) of a replica still filling the partition after a
    /// new epoch made it an owner: what it holds counts, but it may miss older records, so
    /// it does not count toward a read quorum.
    Filling(Box<MetaResponse>),
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

/// One Raft message between monitors (encoded by `crate::monitor::raft`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftFrame(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// A request to the monitors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// The map, waiting nodes, liveness and Raft state as this monitor sees them (no quorum
    /// needed: it works with any monitor up).
    Status,
    /// Propose a change. Retries reuse `request_id`, so a change applies at most once.
    Propose {
        /// Chosen by the client, unique per intended change.
        request_id: u128,
        /// What to change.
        op: crate::monitor::state::Op,
    },
    /// The sender (the libp2p-authenticated peer, never a claimed id) asks to be admitted as
    /// a storage node, or to have its addresses refreshed.
    Join {
        /// Where it listens.
        addrs: Vec<String>,
        /// Its failure domain.
        zone: String,
    },
    /// Add a monitor to the Raft voters (it must be running; it first catches up as a learner).
    AddMonitor {
        /// Its peer id bytes.
        peer_id: Vec<u8>,
        /// Where it listens (without `/p2p/`).
        addr: String,
        /// Its failure domain.
        zone: String,
    },
    /// Remove a monitor from the Raft voters.
    RemoveMonitor {
        /// Its peer id bytes.
        peer_id: Vec<u8>,
    },
    /// A request a follower monitor passes to the leader (never forwarded again).
    Forwarded(Box<AdminRequest>),
    /// An access key request: served by any node with a map (monitors included), as
    /// replicated record reads and writes, without the monitor quorum.
    Keys(crate::access::KeyRequest),
    /// This node's maintenance progress (answered by any node).
    Progress,
}

/// What a monitor answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminResponse {
    /// The status report.
    Status(Box<StatusReport>),
    /// The committed outcome of a proposal.
    Outcome(crate::monitor::state::Outcome),
    /// Nothing was decided: the monitor quorum is unavailable (no leader, leader unreachable,
    /// or no majority acknowledged in time). Retrying with the same request id is safe.
    Unavailable(String),
    /// The node asked is not a monitor; these are (from its map).
    NotMonitor {
        /// Monitor addresses, `/ip4/…/tcp/…/p2p/<peer id>`.
        monitors: Vec<String>,
    },
    /// The request is malformed or not allowed.
    Error(String),
    /// The answer to an access key request.
    Keys(crate::access::KeyResponse),
    /// The last maintenance pass's report (None: none ran yet, or not a storage node).
    Progress(Option<crate::node::runtime::MaintenanceReport>),
}

/// A monitor's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The current map (as this monitor has applied it).
    pub map: Option<crate::cluster::ClusterMap>,
    /// Storage nodes waiting for admission.
    pub pending: Vec<crate::cluster::NodeInfo>,
    /// Node ids SWIM reports alive, as seen by this monitor.
    pub up: Vec<Vec<u8>>,
    /// Node ids SWIM reports down.
    pub down: Vec<Vec<u8>>,
    /// This monitor's Raft id.
    pub raft_id: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Its current term.
    pub term: u64,
    /// Leader, follower, candidate or learner.
    pub raft_state: String,
    /// Index of the last applied log entry.
    pub last_applied: Option<u64>,
    /// Voting monitors: (Raft id, peer id bytes).
    pub voters: Vec<(u64, Vec<u8>)>,
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
