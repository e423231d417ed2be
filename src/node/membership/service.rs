//! Membership: the node runs a `swim` member over the `/hadss/swim/1` protocol. Each packet
//! is handed to SWIM with the libp2p-authenticated sender, so a peer cannot speak for
//! another. Members SWIM declares down are skipped by replicated writes (their copies go to
//! fallbacks at once); a newer epoch gossiped by SWIM makes the node pull the map from the
//! member that carried it; a member coming back wakes the handoff task.

use std::sync::Arc;
use std::time::Instant;

use libp2p::Multiaddr;
use libp2p::{PeerId, Swarm, request_response};
use tokio::sync::mpsc;

use crate::cluster::{ClusterMap, NodeId};
use crate::node::command::Command;
use crate::node::membership::wire::{SwimDelivered, SwimPacket};
use crate::node::metrics::bump;
use crate::node::runtime::Inner;
use crate::node::runtime::{Node, NodeConfig, node_id};
use crate::node::swarm::Behaviour;
use crate::node::swarm::restore_map_addresses;
use std::collections::HashSet;
use std::sync::RwLock;

/// Received SWIM packets waiting for the member; beyond this they are dropped (SWIM treats
/// drops as loss).
const SWIM_QUEUE_LEN_MAX: usize = 256;

/// Members a node contacts to join the SWIM mesh when it adopts a map.
pub(in crate::node) const SWIM_JOIN_CONTACTS_MAX: usize = 8;

impl Inner {
    /// Hands a received SWIM packet to the member, tagged with the authenticated sender, or
    /// notes a failed send.
    pub(in crate::node) fn on_swim_event(
        self: &Arc<Self>,
        swarm: &mut Swarm<Behaviour>,
        event: request_response::Event<SwimPacket, SwimDelivered>,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        match event {
            request_response::Event::Message {
                peer,
                message: request_response::Message::Request { request, channel, .. },
                ..
            } => {
                let _ = swarm.behaviour_mut().swim.send_response(channel, SwimDelivered);
                let Ok(sender) = swim::PeerId::new(&peer.to_bytes()) else {
                    return;
                };
                let incoming = swim::driver::Incoming {
                    bytes: bytes::Bytes::from(request.0),
                    authenticated_peer: Some(sender),
                };
                if self.swim_in.try_send(incoming).is_err() {
                    self.counters.swim_dropped.fetch_add(1, Relaxed);
                }
            }
            request_response::Event::InboundFailure { .. } => {
                self.counters.bad_inbound.fetch_add(1, Relaxed);
            }
            request_response::Event::OutboundFailure {
                peer,
                error: request_response::OutboundFailure::DialFailure,
                ..
            } => {
                // Keep the map's addresses of a peer SWIM keeps probing (it may restart).
                restore_map_addresses(swarm, self, peer);
            }
            _ => {} // other delivery failures are packet loss to SWIM
        }
    }
}

/// SWIM's transport over the node's swarm: sends become `/hadss/swim/1` requests, received
/// packets arrive from the network loop with the peer libp2p authenticated.
struct SwimOverLibp2p {
    cmd: mpsc::Sender<Command>,
    incoming: mpsc::Receiver<swim::driver::Incoming>,
}

impl swim::driver::Transport for SwimOverLibp2p {
    async fn send(&mut self, to: &swim::NodeIdentity, packet: bytes::Bytes) -> swim::Result<()> {
        if let Ok(peer) = PeerId::from_bytes(to.peer_id().as_bytes()) {
            // Best effort: a full queue is packet loss, which SWIM tolerates.
            let _ = self.cmd.try_send(Command::SwimSend(peer, packet.to_vec()));
        }
        Ok(())
    }

    async fn recv(&mut self) -> Option<swim::driver::Incoming> {
        self.incoming.recv().await
    }
}

impl Inner {
    /// Starts this node's SWIM member over the swarm (commands to send packets go to
    /// `cmd`): a fresh generation per start, so a restarted node replaces its old self.
    /// Returns the member's handle, the queue received packets go into, and its events.
    pub(in crate::node) fn start_swim(
        config: &NodeConfig,
        peer_id: PeerId,
        listen_addr: &Multiaddr,
        cmd: mpsc::Sender<Command>,
    ) -> anyhow::Result<(
        swim::driver::SwimHandle,
        mpsc::Sender<swim::driver::Incoming>,
        mpsc::Receiver<swim::MembershipEvent>,
    )> {
        let (swim_in_tx, swim_in_rx) = mpsc::channel(SWIM_QUEUE_LEN_MAX);
        let generation = crate::clock::system_now_ms().max(1);
        let identity = swim::NodeIdentity::new(
            swim::PeerId::new(&peer_id.to_bytes())?,
            vec![listen_addr.to_string()],
            config.role,
            config.zone.clone(),
            generation,
        )?;
        let seed = u64::from_le_bytes(
            blake3::hash(&[peer_id.to_bytes(), generation.to_le_bytes().to_vec()].concat()).as_bytes()[..8]
                .try_into()
                .unwrap_or([0; 8]),
        );
        let core = swim::SwimCore::new(
            identity,
            config.swim.clone(),
            <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed),
        )?;
        let (handle, events, _task) = swim::driver::spawn(
            core,
            SwimOverLibp2p {
                cmd,
                incoming: swim_in_rx,
            },
        );
        Ok((handle, swim_in_tx, events))
    }

    /// Follows SWIM's membership events in a task of its own (until the node is dropped).
    pub(in crate::node) fn follow_membership(self: &Arc<Self>, events: mpsc::Receiver<swim::MembershipEvent>) {
        tokio::spawn(follow_membership(events, Arc::downgrade(self)));
    }
}

/// Follows SWIM's membership events: tracks who is down and pulls newer maps.
async fn follow_membership(mut events: mpsc::Receiver<swim::MembershipEvent>, inner: std::sync::Weak<Inner>) {
    while let Some(event) = events.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let id_of = |m: &swim::NodeIdentity| NodeId(m.peer_id().as_bytes().to_vec());
        match event {
            swim::MembershipEvent::Down(m) => {
                tracing::info!(peer = %m.peer_id(), "member down");
                bump(&inner.counters.members_down_events);
                inner.down.write().unwrap_or_else(|p| p.into_inner()).insert(id_of(&m));
                inner.up.write().unwrap_or_else(|p| p.into_inner()).remove(&id_of(&m));
                inner
                    .down_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(id_of(&m))
                    .or_insert_with(Instant::now);
            }
            swim::MembershipEvent::Up(m) | swim::MembershipEvent::Rejoined { new: m, .. } => {
                bump(&inner.counters.members_up_events);
                inner.up.write().unwrap_or_else(|p| p.into_inner()).insert(id_of(&m));
                inner.down.write().unwrap_or_else(|p| p.into_inner()).remove(&id_of(&m));
                inner
                    .down_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id_of(&m));
                // It may be a replica we hold hints for.
                inner.handoff_nudge.notify_one();
            }
            swim::MembershipEvent::Broadcast(swim::ReceivedBroadcast {
                broadcast: swim::Broadcast::Epoch(announcement),
                via,
            }) => {
                let held = inner.view().map_or(0, |v| v.0.epoch);
                if announcement.epoch > held
                    && let Ok(peer) = PeerId::from_bytes(via.as_bytes())
                {
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        if let Err(e) = inner.pull_map(peer).await {
                            // Often the map arrived meanwhile by push or another pull.
                            if inner.view().map_or(0, |v| v.0.epoch) < announcement.epoch {
                                tracing::warn!(%peer, error = %e, "could not pull the announced map");
                            } else {
                                tracing::debug!(%peer, error = %e, "announced map already held");
                            }
                        }
                    });
                }
            }
            _ => {}
        }
    }
}

impl Inner {
    /// Joins the SWIM mesh through (up to a few of) the map's other nodes.
    pub(in crate::node) async fn join_members(&self, map: &ClusterMap) {
        for n in map
            .nodes
            .iter()
            .filter(|n| n.id != self.node_id)
            .take(SWIM_JOIN_CONTACTS_MAX)
        {
            let (Ok(peer), Some(addr)) = (swim::PeerId::new(&n.id.0), n.addrs.first()) else {
                continue;
            };
            if let Ok(contact) = swim::NodeIdentity::contact(peer, addr.clone()) {
                let _ = self.swim.join(contact).await;
            }
        }
    }

    pub(in crate::node) fn is_alive(&self, node: &NodeId) -> bool {
        !self.down.read().unwrap_or_else(|p| p.into_inner()).contains(node)
    }
}

impl Node {
    /// The members SWIM currently sees as active (excluding this node).
    pub async fn live_members(&self) -> Vec<PeerId> {
        self.inner
            .swim
            .members()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|m| PeerId::from_bytes(m.peer_id().as_bytes()).ok())
            .collect()
    }

    /// Whether SWIM has declared `peer` down.
    pub fn is_down(&self, peer: &PeerId) -> bool {
        !self.inner.is_alive(&node_id(peer))
    }

    /// The node ids SWIM reports (up, down), excluding this node.
    pub fn liveness(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        let read = |s: &RwLock<HashSet<NodeId>>| {
            let mut v: Vec<NodeId> = s.read().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
            v.sort();
            v
        };
        (read(&self.inner.up), read(&self.inner.down))
    }
}
