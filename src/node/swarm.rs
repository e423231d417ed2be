//! The swarm task: one tokio task owns the libp2p swarm; handlers and clients talk to it
//! through a bounded command channel (`Command`). Incoming requests are answered by spawned
//! tasks (disk I/O runs on blocking threads), so a slow disk never stalls the network loop.
//! `Inner::request` is the one request helper every subsystem uses to reach a peer. A failed dial gives back the map's addresses for the
//! peer (libp2p forgets the ones it tried), so a restarted node is reachable again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::request_response::{OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, request_response};
use tokio::sync::{mpsc, oneshot};

use super::command::{Command, Reply, Rpc};
use super::error::TransportError;

use super::metrics::bump;
use super::runtime::{Inner, NodeConfig, node_id, peer_of};
use crate::cluster::NodeId;
use crate::net::codec::PostcardCodec;
use crate::net::transport::build_swarm;
use crate::node::admin::wire::{
    ADMIN_LIMITS, ADMIN_PROTOCOL, AdminRequest, AdminResponse, RAFT_LIMITS, RAFT_PROTOCOL, RaftFrame,
};
use crate::node::chunks::wire::{CHUNK_LIMITS, CHUNK_PROTOCOL, ChunkRequest, ChunkResponse};
use crate::node::maps::wire::{MAP_LIMITS, MAP_PROTOCOL, MapRequest, MapResponse};
use crate::node::membership::wire::{SWIM_LIMITS, SWIM_PROTOCOL, SwimDelivered, SwimPacket};
use crate::node::records::wire::{META_LIMITS, META_PROTOCOL, MetaRequest, MetaResponse};
use futures::StreamExt;

/// Requests in flight per connection and protocol, each way (libp2p's default of 100 drops
/// inbound requests under load). Bounds a node's inbound buffering: at most this many
/// frames (each within its protocol's size limit) per peer.
pub const STREAMS_PER_CONNECTION_MAX: usize = 512;

/// Time a peer has to answer a request.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) chunk: request_response::Behaviour<PostcardCodec<ChunkRequest, ChunkResponse>>,
    pub(super) meta: request_response::Behaviour<PostcardCodec<MetaRequest, MetaResponse>>,
    pub(super) map: request_response::Behaviour<PostcardCodec<MapRequest, MapResponse>>,
    pub(super) swim: request_response::Behaviour<PostcardCodec<SwimPacket, SwimDelivered>>,
    pub(super) raft: request_response::Behaviour<PostcardCodec<RaftFrame, RaftFrame>>,
    pub(super) admin: request_response::Behaviour<PostcardCodec<AdminRequest, AdminResponse>>,
}

/// Pending outbound requests, by request id.
#[derive(Default)]
pub(super) struct Pending {
    chunk: HashMap<OutboundRequestId, Reply<ChunkResponse>>,
    meta: HashMap<OutboundRequestId, Reply<MetaResponse>>,
    map: HashMap<OutboundRequestId, Reply<MapResponse>>,
    raft: HashMap<OutboundRequestId, Reply<RaftFrame>>,
    admin: HashMap<OutboundRequestId, Reply<AdminResponse>>,
}

async fn run_loop(mut swarm: Swarm<Behaviour>, mut cmd_rx: mpsc::Receiver<Command>, inner: Arc<Inner>) {
    let mut pending = Pending::default();
    loop {
        tokio::select! {
            cmd = cmd_rx.recv() => {
                let Some(cmd) = cmd else { return };
                handle_command(&mut swarm, &mut pending, cmd);
            }
            event = swarm.select_next_some() => handle_event(&mut swarm, &mut pending, &inner, event),
        }
    }
}

pub(super) fn handle_command(swarm: &mut Swarm<Behaviour>, pending: &mut Pending, cmd: Command) {
    let b = swarm.behaviour_mut();
    match cmd {
        Command::Chunk(peer, req, reply) => {
            pending.chunk.insert(b.chunk.send_request(&peer, req), reply);
        }
        Command::Meta(peer, req, reply) => {
            pending.meta.insert(b.meta.send_request(&peer, req), reply);
        }
        Command::Map(peer, req, reply) => {
            pending.map.insert(b.map.send_request(&peer, req), reply);
        }
        Command::Raft(peer, req, reply) => {
            pending.raft.insert(b.raft.send_request(&peer, req), reply);
        }
        Command::Admin(peer, req, reply) => {
            pending.admin.insert(b.admin.send_request(&peer, req), reply);
        }
        Command::RespondChunk(channel, resp) => {
            let _ = b.chunk.send_response(channel, resp);
        }
        Command::RespondMeta(channel, resp) => {
            let _ = b.meta.send_response(channel, resp);
        }
        Command::RespondMap(channel, resp) => {
            let _ = b.map.send_response(channel, resp);
        }
        Command::RespondRaft(channel, resp) => {
            let _ = b.raft.send_response(channel, resp);
        }
        Command::RespondAdmin(channel, resp) => {
            let _ = b.admin.send_response(channel, resp);
        }
        Command::AddAddresses(addrs) => {
            for (peer, addr) in addrs {
                swarm.add_peer_address(peer, addr);
            }
        }
        Command::SwimSend(peer, packet) => {
            b.swim.send_request(&peer, SwimPacket(packet));
        }
    }
}

/// Routes one request-response event: requests to spawned handlers, responses and failures
/// to the waiting caller.
macro_rules! route {
    ($event:expr, $pending:expr, $inner:expr, $handler:expr, $respond:path, $redial:expr) => {
        match $event {
            request_response::Event::Message { message, peer, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let inner = $inner.clone();
                    tokio::spawn(async move {
                        let cmd = inner.cmd.clone();
                        let response = $handler(inner, peer, request).await;
                        let _ = cmd.send($respond(channel, response)).await;
                    });
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = $pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer, request_id, error, ..
            } => {
                if matches!(error, request_response::OutboundFailure::DialFailure) {
                    $redial.push(peer);
                }
                if let Some(reply) = $pending.remove(&request_id) {
                    let _ = reply.send(Err(crate::node::error::TransportError::from(&error)));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                $inner
                    .counters
                    .bad_inbound
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(%peer, %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    };
}

pub(super) fn handle_event(
    swarm: &mut Swarm<Behaviour>,
    pending: &mut Pending,
    inner: &Arc<Inner>,
    event: SwarmEvent<BehaviourEvent>,
) {
    let mut redial: Vec<PeerId> = Vec::new();
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Chunk(e)) => {
            route!(
                e,
                pending.chunk,
                inner,
                |i: Arc<Inner>, _, r| Inner::handle_chunk(i, r),
                Command::RespondChunk,
                redial
            )
        }
        SwarmEvent::Behaviour(BehaviourEvent::Meta(e)) => {
            route!(
                e,
                pending.meta,
                inner,
                |i: Arc<Inner>, _, r| Inner::handle_meta(i, r),
                Command::RespondMeta,
                redial
            )
        }
        SwarmEvent::Behaviour(BehaviourEvent::Map(e)) => {
            route!(
                e,
                pending.map,
                inner,
                |i: Arc<Inner>, _, r| Inner::handle_map(i, r),
                Command::RespondMap,
                redial
            )
        }
        SwarmEvent::Behaviour(BehaviourEvent::Raft(e)) => {
            route!(e, pending.raft, inner, Inner::handle_raft, Command::RespondRaft, redial)
        }
        SwarmEvent::Behaviour(BehaviourEvent::Admin(e)) => {
            route!(
                e,
                pending.admin,
                inner,
                Inner::handle_admin,
                Command::RespondAdmin,
                redial
            )
        }
        SwarmEvent::Behaviour(BehaviourEvent::Swim(e)) => inner.on_swim_event(swarm, e),
        SwarmEvent::IncomingConnectionError {
            send_back_addr, error, ..
        } => {
            bump(&inner.counters.inbound_connection_failures);
            tracing::debug!(%send_back_addr, %error, "inbound connection failed");
        }
        _ => {}
    }
    // A failed dial makes libp2p forget the addresses it tried; the map still names them,
    // and the peer may come back (a restart): give them back for the next attempt.
    for peer in redial {
        restore_map_addresses(swarm, inner, peer);
    }
}

/// Gives the swarm back the addresses the map names for `peer` (libp2p forgets the ones
/// a dial failed on).
pub(super) fn restore_map_addresses(swarm: &mut Swarm<Behaviour>, inner: &Inner, peer: PeerId) {
    if let Some(view) = inner.view()
        && let Some(node) = view.0.node(&node_id(&peer))
    {
        for addr in node.addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
            swarm.add_peer_address(peer, addr);
        }
    }
}

impl Inner {
    /// Builds the node's swarm: every protocol of the node over the private transport,
    /// obeying the node's fault layer.
    pub(super) fn build_swarm(keypair: Keypair, config: &NodeConfig) -> anyhow::Result<Swarm<Behaviour>> {
        let rr_config = request_response::Config::default()
            .with_request_timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .with_max_concurrent_streams(STREAMS_PER_CONNECTION_MAX);
        let swarm = build_swarm(keypair, config.secret, config.faults.clone(), |_| Behaviour {
            chunk: request_response::Behaviour::with_codec(
                PostcardCodec::new(CHUNK_LIMITS),
                [(CHUNK_PROTOCOL, ProtocolSupport::Full)],
                rr_config.clone(),
            ),
            meta: request_response::Behaviour::with_codec(
                PostcardCodec::new(META_LIMITS),
                [(META_PROTOCOL, ProtocolSupport::Full)],
                rr_config.clone(),
            ),
            map: request_response::Behaviour::with_codec(
                PostcardCodec::new(MAP_LIMITS),
                [(MAP_PROTOCOL, ProtocolSupport::Full)],
                rr_config.clone(),
            ),
            raft: request_response::Behaviour::with_codec(
                PostcardCodec::new(RAFT_LIMITS),
                [(RAFT_PROTOCOL, ProtocolSupport::Full)],
                rr_config.clone(),
            ),
            admin: request_response::Behaviour::with_codec(
                PostcardCodec::new(ADMIN_LIMITS),
                [(ADMIN_PROTOCOL, ProtocolSupport::Full)],
                rr_config.clone(),
            ),
            swim: request_response::Behaviour::with_codec(
                PostcardCodec::new(SWIM_LIMITS),
                [(SWIM_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_millis(config.swim.probe_rtt_ms.max(1000)))
                    .with_max_concurrent_streams(STREAMS_PER_CONNECTION_MAX),
            ),
        })?;
        Ok(swarm)
    }

    /// Starts the task that owns `swarm` and serves `commands`; it runs until the task is
    /// aborted (the node is dropped) or every command sender is gone.
    pub(super) fn run_swarm(
        self: Arc<Self>,
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(run_loop(swarm, commands, self))
    }

    /// Sends `request` to `peer` through the network loop and waits for its answer (or
    /// the transport's reason for none): the one request helper for every protocol.
    pub(super) async fn request<R: Rpc>(&self, peer: PeerId, request: R) -> Result<R::Response, TransportError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(request.command(peer, tx))
            .await
            .map_err(|_| TransportError::Stopped)?;
        rx.await.map_err(|_| TransportError::Stopped)?
    }

    /// `request` to a node named by its id.
    pub(super) async fn request_node<R: Rpc>(&self, to: &NodeId, request: R) -> Result<R::Response, TransportError> {
        let peer = peer_of(to).ok_or(TransportError::BadPeer)?;
        self.request(peer, request).await
    }
}
