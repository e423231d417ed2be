//! The wire messages of `/hadss/raft/1` (opaque Raft frames, encoded by `crate::monitor`)
//! and `/hadss/admin/1` (status, map changes, joins, monitor membership, access keys,
//! maintenance progress).

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::net::codec::FrameLimits;

/// Raft between monitors (opaque frames: the monitor module owns their encoding).
pub const RAFT_PROTOCOL: StreamProtocol = StreamProtocol::new("/hadss/raft/1");

/// Cluster administration: status, map changes, joins (answered by monitors).
pub const ADMIN_PROTOCOL: StreamProtocol = StreamProtocol::new("/hadss/admin/1");

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
        op: crate::cluster::change::Op,
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
    Outcome(crate::cluster::change::Outcome),
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
    Progress(Option<crate::node::repair::report::MaintenanceReport>),
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

// No raw body: the whole message is the postcard header.
impl crate::net::codec::Body for RaftFrame {}
impl crate::net::codec::Body for AdminRequest {}
impl crate::net::codec::Body for AdminResponse {}
