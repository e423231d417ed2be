//! What the subsystems ask of the swarm task: send a request (the answer comes back on a
//! `Reply`), send a response, learn addresses, send a SWIM packet. The queue is bounded;
//! senders wait when it is full. `Rpc` ties each protocol's request type to its response
//! and its command, so `Inner::request` is one helper for every protocol.

use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

use crate::node::admin::wire::{AdminRequest, AdminResponse, RaftFrame};
use crate::node::chunks::wire::{ChunkRequest, ChunkResponse};
use crate::node::error::TransportError;
use crate::node::maps::wire::{MapRequest, MapResponse};
use crate::node::records::wire::{MetaRequest, MetaResponse};

/// Commands queued to the network loop; senders wait when it is full.
pub(super) const COMMAND_QUEUE_LEN_MAX: usize = 1024;

/// Where a request's answer (or the transport's error) goes.
pub(super) type Reply<T> = oneshot::Sender<Result<T, TransportError>>;

/// One command for the swarm task.
pub(super) enum Command {
    Chunk(PeerId, ChunkRequest, Reply<ChunkResponse>),
    Meta(PeerId, MetaRequest, Reply<MetaResponse>),
    Map(PeerId, MapRequest, Reply<MapResponse>),
    Raft(PeerId, RaftFrame, Reply<RaftFrame>),
    Admin(PeerId, AdminRequest, Reply<AdminResponse>),
    RespondChunk(ResponseChannel<ChunkResponse>, ChunkResponse),
    RespondMeta(ResponseChannel<MetaResponse>, MetaResponse),
    RespondMap(ResponseChannel<MapResponse>, MapResponse),
    RespondRaft(ResponseChannel<RaftFrame>, RaftFrame),
    RespondAdmin(ResponseChannel<AdminResponse>, AdminResponse),
    AddAddresses(Vec<(PeerId, Multiaddr)>),
    SwimSend(PeerId, Vec<u8>),
}

/// A request the swarm task can carry to a peer: names its answer's type and the command
/// that sends it.
pub(super) trait Rpc: Send + Sized + 'static {
    /// What the peer answers.
    type Response: Send + 'static;
    /// The command sending `self` to `peer`, answering on `reply`.
    fn command(self, peer: PeerId, reply: Reply<Self::Response>) -> Command;
}

macro_rules! rpc {
    ($request:ty, $response:ty, $variant:ident) => {
        impl Rpc for $request {
            type Response = $response;
            fn command(self, peer: PeerId, reply: Reply<$response>) -> Command {
                Command::$variant(peer, self, reply)
            }
        }
    };
}

rpc!(ChunkRequest, ChunkResponse, Chunk);
rpc!(MetaRequest, MetaResponse, Meta);
rpc!(MapRequest, MapResponse, Map);
rpc!(RaftFrame, RaftFrame, Raft);
rpc!(AdminRequest, AdminResponse, Admin);
