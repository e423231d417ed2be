//! openraft's types for the monitors and its network over the node runtime: each Raft RPC
//! is one `/hadss/raft/1` request-response exchange of a postcard-encoded `RaftRpc`.
//!
//! Identity: a monitor's Raft id is derived from its libp2p peer id (first 8 bytes of BLAKE3
//! of the peer id bytes), so no operator has to number monitors. Every inbound RPC must come
//! from the peer whose Raft id it claims as its sender (the vote's node id): a peer with the
//! cluster secret but not that monitor's key cannot speak for it, and only members of the
//! membership this monitor knows (voters and learners) are heard at all.

use std::time::Duration;

use libp2p::PeerId;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::state::{Outcome, Proposal};
use crate::cluster::{NodeId, NodeInfo, NodeState, Role};
use crate::node::Node;
use crate::node::protocol::RaftFrame;

/// A monitor's Raft id.
pub type RaftId = u64;

/// Most log entries in one append (each a small proposal), keeping frames far below
/// `RAFT_LIMITS`.
pub const ENTRIES_PER_APPEND_MAX: u64 = 64;
/// Bytes of snapshot per install-snapshot RPC.
pub const SNAPSHOT_CHUNK_SIZE_BYTES: u64 = 4 * 1024 * 1024;
/// Raft log entries between snapshots (then the log before the snapshot is purged).
pub const LOGS_PER_SNAPSHOT: u64 = 1_000;

/// A monitor as Raft knows it: enough to reach it and to list it in the map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorNode {
    /// libp2p peer id bytes.
    pub peer_id: Vec<u8>,
    /// Where it listens, without `/p2p/` (e.g. `/ip4/10.0.0.1/tcp/7100`).
    pub addr: String,
    /// Failure domain.
    pub zone: String,
}

impl std::fmt::Display for MonitorNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match PeerId::from_bytes(&self.peer_id) {
            Ok(p) => write!(f, "{}/p2p/{p}", self.addr),
            Err(_) => write!(f, "{} (bad peer id)", self.addr),
        }
    }
}

impl MonitorNode {
    /// The peer id, if the bytes are one.
    pub fn peer(&self) -> Option<PeerId> {
        PeerId::from_bytes(&self.peer_id).ok()
    }

    /// The map entry of this monitor.
    pub fn to_node_info(&self) -> Option<NodeInfo> {
        self.peer()?;
        Some(NodeInfo {
            id: NodeId(self.peer_id.clone()),
            addrs: vec![self.addr.clone()],
            role: Role::Monitor,
            zone: self.zone.clone(),
            weight: 0,
            state: NodeState::In,
        })
    }
}

openraft::declare_raft_types!(
    /// The monitors' Raft: proposals in, outcomes out, the map as the state machine.
    pub TypeConfig:
        D = Proposal,
        R = Outcome,
        NodeId = RaftId,
        Node = MonitorNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of a monitor.
pub type MonitorRaft = openraft::Raft<TypeConfig>;

/// The Raft id of the monitor with this peer id.
pub fn raft_id_of(peer: &PeerId) -> RaftId {
    let hash = blake3::hash(&peer.to_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// One Raft RPC.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    /// Log replication and heartbeats.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Elections.
    Vote(VoteRequest<RaftId>),
    /// One chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a `RaftRpc`.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpcReply {
    /// To `AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse<RaftId>, RaftError<RaftId>>),
    /// To `Vote`.
    Vote(Result<VoteResponse<RaftId>, RaftError<RaftId>>),
    /// To `InstallSnapshot`.
    InstallSnapshot(Result<InstallSnapshotResponse<RaftId>, RaftError<RaftId, InstallSnapshotError>>),
    /// Refused before reaching Raft (bad frame, sender mismatch).
    Refused(String),
}

impl RaftRpc {
    /// The Raft id the sender claims to be.
    fn sender(&self) -> Option<RaftId> {
        match self {
            RaftRpc::AppendEntries(r) => r.vote.leader_id().voted_for(),
            RaftRpc::Vote(r) => r.vote.leader_id().voted_for(),
            RaftRpc::InstallSnapshot(r) => r.vote.leader_id().voted_for(),
        }
    }
}

/// Most bytes of a Raft frame decoded (the transport limit also applies).
const FRAME_SIZE_BYTES_MAX: usize = crate::node::protocol::RAFT_LIMITS.request_size_bytes_max as usize;

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail; an empty frame is refused by the peer.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Answers one inbound frame from `from` with the local Raft.
pub async fn serve(raft: &MonitorRaft, from: PeerId, frame: RaftFrame) -> RaftFrame {
    let reply = |r: RaftRpcReply| RaftFrame(encode(&r));
    if frame.0.len() > FRAME_SIZE_BYTES_MAX {
        return reply(RaftRpcReply::Refused("frame too large".into()));
    }
    let rpc: RaftRpc = match postcard::from_bytes(&frame.0) {
        Ok(r) => r,
        Err(e) => return reply(RaftRpcReply::Refused(format!("frame does not decode: {e}"))),
    };
    let sender = raft_id_of(&from);
    if rpc.sender() != Some(sender) {
        return reply(RaftRpcReply::Refused(
            "sender does not match the monitor the RPC names".into(),
        ));
    }
    // Only monitors of the membership this one knows may vote or replicate to it (a node
    // holding the cluster secret must not disturb elections). A monitor with no membership
    // yet accepts the leader that is adding it.
    let known = {
        let m = raft.metrics().borrow().membership_config.clone();
        let membership = m.membership();
        membership.nodes().next().is_none() || membership.get_node(&sender).is_some()
    };
    if !known {
        return reply(RaftRpcReply::Refused(
            "the sender is not a monitor of this quorum".into(),
        ));
    }
    reply(match rpc {
        RaftRpc::AppendEntries(r) => RaftRpcReply::AppendEntries(raft.append_entries(r).await),
        RaftRpc::Vote(r) => RaftRpcReply::Vote(raft.vote(r).await),
        RaftRpc::InstallSnapshot(r) => RaftRpcReply::InstallSnapshot(raft.install_snapshot(r).await),
    })
}

/// Creates connections to monitors over the node runtime.
#[derive(Clone)]
pub struct Network {
    node: std::sync::Arc<Node>,
}

impl Network {
    /// Raft traffic through `node`.
    pub fn new(node: std::sync::Arc<Node>) -> Network {
        Network { node }
    }
}

/// The way to one monitor.
pub struct Connection {
    node: std::sync::Arc<Node>,
    target: RaftId,
    peer: Option<PeerId>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: RaftId, node: &MonitorNode) -> Connection {
        let peer = node.peer();
        if let (Some(p), Ok(addr)) = (peer, node.addr.parse()) {
            self.node.add_peer_address(p, addr).await;
        }
        Connection {
            node: self.node.clone(),
            target,
            peer,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

impl Connection {
    async fn call<E>(&self, rpc: RaftRpc, option: &RPCOption) -> Result<RaftRpcReply, RPCError<RaftId, MonitorNode, E>>
    where
        E: std::error::Error,
    {
        let peer = self
            .peer
            .ok_or_else(|| RPCError::Unreachable(Unreachable::new(&TransportError("bad peer id".into()))))?;
        let ttl = option.hard_ttl().max(Duration::from_millis(50));
        let answer = tokio::time::timeout(ttl, self.node.raft_request(peer, RaftFrame(encode(&rpc)))).await;
        let frame = match answer {
            Err(_) => {
                return Err(RPCError::Network(NetworkError::new(&TransportError(format!(
                    "no answer within {} ms",
                    ttl.as_millis()
                )))));
            }
            Ok(Err(e)) => return Err(RPCError::Unreachable(Unreachable::new(&TransportError(e.to_string())))),
            Ok(Ok(f)) => f,
        };
        match postcard::from_bytes::<RaftRpcReply>(&frame.0) {
            Ok(RaftRpcReply::Refused(why)) => Err(RPCError::Network(NetworkError::new(&TransportError(why)))),
            Ok(reply) => Ok(reply),
            Err(_) => Err(RPCError::Network(NetworkError::new(&TransportError(
                "the peer is not a monitor or sent a bad frame".into(),
            )))),
        }
    }
}

fn unexpected<E: std::error::Error>() -> RPCError<RaftId, MonitorNode, E> {
    RPCError::Network(NetworkError::new(&TransportError("answer of the wrong kind".into())))
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, MonitorNode, RaftError<RaftId>>> {
        match self.call(RaftRpc::AppendEntries(rpc), &option).await? {
            RaftRpcReply::AppendEntries(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<RaftId>, RPCError<RaftId, MonitorNode, RaftError<RaftId, InstallSnapshotError>>>
    {
        match self.call(RaftRpc::InstallSnapshot(rpc), &option).await? {
            RaftRpcReply::InstallSnapshot(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, MonitorNode, RaftError<RaftId>>> {
        match self.call(RaftRpc::Vote(rpc), &option).await? {
            RaftRpcReply::Vote(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(unexpected()),
        }
    }
}
