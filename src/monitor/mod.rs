//! The monitor: one member of the 3- or 5-node Raft quorum whose only product is the cluster
//! map. It owns the Raft instance (`raft`, persisted by `store`), the replicated state
//! (`state`), and the admin protocol that proposes changes.
//!
//! A monitor is also a full node of the mesh (SWIM member, map holder): the node runtime
//! carries its Raft frames and admin requests and hands them to `Service`. Every committed
//! change is applied on every monitor to the same next map; each signs it with the monitors'
//! key (ed25519 signatures are deterministic, so the envelopes are identical), adopts it on
//! its own node — which gossips the new epoch over SWIM, so every node pulls it within a few
//! rounds — and the leader also offers it directly to every node of the map.
//!
//! The data path never waits on monitors: storage nodes and gateways keep serving with the
//! last map they hold when every monitor is down. Only map changes need a majority of
//! monitors; without one, proposals answer `Unavailable` (retrying with the same request id
//! is safe: a proposal applies at most once).
//!
//! Not here: rebalancing data after a change (the anti-entropy issue), access keys.

pub mod client;
pub mod raft;
pub mod state;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use libp2p::identity::ed25519;
use libp2p::{Multiaddr, PeerId};
use openraft::error::{ClientWriteError, RaftError};

use self::raft::{MonitorNode, MonitorRaft, RaftId, TypeConfig, raft_id_of};
use self::state::{Op, Outcome, Proposal};
use crate::cluster::change::{Change, WEIGHT_DEFAULT};
use crate::cluster::{MapEnvelope, NodeId, NodeInfo, NodeState, ReplicationPolicy, Role};
use crate::node::MonitorService;
use crate::node::protocol::{AdminRequest, AdminResponse, RaftFrame, StatusReport};
use crate::node::{Node, NodeConfig};

/// How long a proposal may wait for a majority before the answer is `Unavailable`.
pub const PROPOSAL_TIMEOUT_MS: u64 = 8_000;
/// How long a follower waits for the leader to answer a forwarded request.
pub const FORWARD_TIMEOUT_MS: u64 = 10_000;
/// How often a leader checks whether the cluster still needs its first map.
const INIT_RETRY_MS: u64 = 500;
/// Nodes the leader offers a new map to at once.
const MAP_PUSH_IN_FLIGHT_MAX: usize = 16;
/// Time one map offer may take.
const MAP_PUSH_TIMEOUT_MS: u64 = 5_000;

/// Raft timing.
#[derive(Debug, Clone, Copy)]
pub struct RaftTiming {
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// Shortest election timeout.
    pub election_timeout_min_ms: u64,
    /// Longest election timeout.
    pub election_timeout_max_ms: u64,
}

impl Default for RaftTiming {
    /// Sub-second heartbeats, 1–2 s elections: a dead leader is replaced in about 2 s.
    fn default() -> RaftTiming {
        RaftTiming {
            heartbeat_ms: 200,
            election_timeout_min_ms: 1_000,
            election_timeout_max_ms: 2_000,
        }
    }
}

/// How to start a monitor.
pub struct MonitorConfig {
    /// The node underneath (its role should be `Monitor`).
    pub node: NodeConfig,
    /// The monitors' map-signing key.
    pub map_key: ed25519::Keypair,
    /// The first monitors (`/ip4/…/tcp/…/p2p/<peer id>`), identical on each of them. Used
    /// only on a first start, when this monitor has no Raft state: each initializes Raft
    /// with them (safe when all use the same list). Empty: wait to be added by a running
    /// quorum (`hadss admin monitor add`).
    pub initial_monitors: Vec<Multiaddr>,
    /// Admit storage nodes that ask to join (they hold the cluster secret) without an operator.
    pub auto_admit: bool,
    /// Replication policy of the first map.
    pub policy: ReplicationPolicy,
    /// Partitions of the first map.
    pub partitions: u32,
    /// Raft timing.
    pub timing: RaftTiming,
}

/// A running monitor.
pub struct Monitor {
    node: Arc<Node>,
    service: Arc<Service>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The monitor's answers to Raft frames and admin requests.
#[derive(Clone)]
pub struct Service {
    raft: MonitorRaft,
    machine: store::MachineStore,
    node: std::sync::Weak<Node>,
    auto_admit: bool,
}

impl Monitor {
    /// Starts the node, opens the Raft state and joins (or forms) the quorum.
    pub async fn start(config: MonitorConfig) -> anyhow::Result<Monitor> {
        let data_dir = config.node.data_dir.clone();
        let node = Arc::new(Node::start(config.node).await?);
        let db = {
            let path = data_dir.join("raft.redb");
            tokio::task::spawn_blocking(move || store::open_db(&path)).await??
        };
        let machine = store::MachineStore::open(db.clone())?;
        let raft_config = openraft::Config {
            cluster_name: "hadss-monitors".into(),
            heartbeat_interval: config.timing.heartbeat_ms,
            election_timeout_min: config.timing.election_timeout_min_ms,
            election_timeout_max: config.timing.election_timeout_max_ms,
            install_snapshot_timeout: 5_000,
            max_payload_entries: raft::ENTRIES_PER_APPEND_MAX,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(raft::LOGS_PER_SNAPSHOT),
            snapshot_max_chunk_size: raft::SNAPSHOT_CHUNK_SIZE_BYTES,
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()?;
        let id = raft_id_of(&node.peer_id());
        let raft = openraft::Raft::<TypeConfig>::new(
            id,
            Arc::new(raft_config),
            raft::Network::new(node.clone()),
            store::LogStore::new(db),
            machine.clone(),
        )
        .await?;
        let service = Arc::new(Service {
            raft: raft.clone(),
            machine: machine.clone(),
            node: Arc::downgrade(&node),
            auto_admit: config.auto_admit,
        });
        node.set_monitor_service(service.clone());

        let tasks = vec![
            tokio::spawn(publish_maps(
                machine.subscribe(),
                Arc::downgrade(&node),
                raft.clone(),
                config.map_key,
            )),
            tokio::spawn(create_first_map(
                raft.clone(),
                machine.clone(),
                config.policy,
                config.partitions,
            )),
        ];
        let mut tasks = tasks;
        tasks.push(tokio::spawn(refresh_own_address(
            service.clone(),
            Arc::downgrade(&node),
        )));
        let monitor = Monitor { node, service, tasks };
        if !config.initial_monitors.is_empty() {
            monitor.form_quorum(&config.initial_monitors).await?;
        }
        let node = &monitor.node;
        tracing::info!(raft_id = id, peer = %node.peer_id(), "monitor started");
        Ok(monitor)
    }

    /// Forms the quorum from `monitors` (`/ip4/…/p2p/<id>`, this one included) if this
    /// monitor has no Raft state yet; otherwise does nothing. Every initial monitor may call
    /// it with the same list (Raft's voting keeps that safe); different lists must never be
    /// used.
    pub async fn form_quorum(&self, monitors: &[Multiaddr]) -> anyhow::Result<()> {
        let raft = &self.service.raft;
        if raft.is_initialized().await? {
            return Ok(());
        }
        let members = initial_members(monitors)?;
        anyhow::ensure!(
            members.contains_key(&self.raft_id()),
            "the initial monitors must include this one ({}/p2p/{})",
            self.node.listen_addr(),
            self.node.peer_id()
        );
        match raft.initialize(members).await {
            Ok(()) => tracing::info!(raft_id = self.raft_id(), "formed the monitor quorum"),
            // Another initial monitor got there first and this one already heard of it.
            Err(e) => tracing::info!(error = %e, "monitor quorum already initialized"),
        }
        Ok(())
    }

    /// The node underneath.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// This monitor's Raft id.
    pub fn raft_id(&self) -> RaftId {
        raft_id_of(&self.node.peer_id())
    }

    /// The status report (as `hadss admin status` shows it).
    pub fn status(&self) -> StatusReport {
        self.service.status()
    }

    /// Stops Raft (the node stops when the monitor is dropped).
    pub async fn shutdown(&self) {
        let _ = self.service.raft.shutdown().await;
    }
}

/// The initial Raft membership from `/ip4/…/p2p/<id>` addresses.
fn initial_members(addrs: &[Multiaddr]) -> anyhow::Result<BTreeMap<RaftId, MonitorNode>> {
    let mut members = BTreeMap::new();
    for a in addrs {
        let (peer, dial) = crate::node::client::split_peer_addr(a)
            .ok_or_else(|| anyhow::anyhow!("initial monitor {a} does not end in /p2p/<peer id>"))?;
        members.insert(
            raft_id_of(&peer),
            MonitorNode {
                peer_id: peer.to_bytes(),
                addr: dial.to_string(),
                zone: String::new(),
            },
        );
    }
    Ok(members)
}

/// Signs every new map the state machine produces, adopts it locally (which gossips the
/// epoch) and, on the leader, offers it to every node of the map.
async fn publish_maps(
    mut applied: tokio::sync::watch::Receiver<Arc<store::MachineData>>,
    node: std::sync::Weak<Node>,
    raft: MonitorRaft,
    key: ed25519::Keypair,
) {
    loop {
        let map = applied.borrow_and_update().state.map.clone();
        if let (Some(map), Some(node)) = (map, node.upgrade())
            && map.epoch > node.epoch()
        {
            match MapEnvelope::sign(&map, &key) {
                Ok(env) => {
                    if let Err(e) = node.offer_map(env.clone()).await {
                        tracing::warn!(epoch = map.epoch, error = %e, "could not adopt the committed map");
                    } else if raft.current_leader().await == Some(raft_id_of(&node.peer_id())) {
                        push_map(&node, &map, env).await;
                    }
                }
                Err(e) => tracing::error!(epoch = map.epoch, error = %e, "committed map does not sign"),
            }
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

/// Offers `env` to every other node of `map`, a few at a time; failures are left to gossip.
async fn push_map(node: &Node, map: &crate::cluster::ClusterMap, env: MapEnvelope) {
    let me = node.peer_id();
    let peers: Vec<PeerId> = map
        .nodes
        .iter()
        .filter_map(|n| PeerId::from_bytes(&n.id.0).ok())
        .filter(|p| *p != me && !node.is_down(p))
        .collect();
    futures::stream::iter(peers)
        .for_each_concurrent(MAP_PUSH_IN_FLIGHT_MAX, |peer| {
            let env = env.clone();
            async move {
                let offer = node.offer_map_to(peer, env);
                match tokio::time::timeout(Duration::from_millis(MAP_PUSH_TIMEOUT_MS), offer).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "map push failed"),
                    Err(_) => tracing::debug!(%peer, "map push timed out"),
                }
            }
        })
        .await;
}

use futures::StreamExt;

/// How often a monitor checks that the Raft membership names the address it listens on.
const ADDRESS_CHECK_MS: u64 = 2_000;

/// Keeps this monitor's entry in the Raft membership (and so in the map) at the address it
/// listens on now: a monitor restarted on another address asks the leader (or, leading,
/// itself) to update it.
async fn refresh_own_address(service: Arc<Service>, node: std::sync::Weak<Node>) {
    loop {
        tokio::time::sleep(Duration::from_millis(ADDRESS_CHECK_MS)).await;
        let Some(node) = node.upgrade() else { return };
        let me = raft_id_of(&node.peer_id());
        let current = node.listen_addr().to_string();
        let held = {
            let m = service.raft.metrics().borrow().clone();
            m.membership_config.membership().get_node(&me).cloned()
        };
        let Some(held) = held else { continue };
        if held.addr == current {
            continue;
        }
        let request = AdminRequest::AddMonitor {
            peer_id: node.peer_id().to_bytes(),
            addr: current.clone(),
            zone: held.zone.clone(),
        };
        let answer = service.clone().handle(node.peer_id(), request).await;
        tracing::info!(old = %held.addr, new = %current, answer = ?answer, "updating this monitor's address");
    }
}

/// The leader proposes the first map once the quorum exists and has none.
async fn create_first_map(raft: MonitorRaft, machine: store::MachineStore, policy: ReplicationPolicy, partitions: u32) {
    let applied = machine.subscribe();
    loop {
        if applied.borrow().state.map.is_some() {
            return;
        }
        let metrics = raft.metrics().borrow().clone();
        if metrics.current_leader == Some(metrics.id) {
            let proposal = Proposal {
                request_id: rand::random(),
                epoch_floor: 0,
                op: Op::Init { policy, partitions },
            };
            match tokio::time::timeout(Duration::from_millis(PROPOSAL_TIMEOUT_MS), raft.client_write(proposal)).await {
                Ok(Ok(r)) => tracing::info!(outcome = ?r.data, "first map proposed"),
                Ok(Err(e)) => tracing::debug!(error = %e, "first map not proposed"),
                Err(_) => tracing::debug!("first map proposal timed out"),
            }
        }
        tokio::time::sleep(Duration::from_millis(INIT_RETRY_MS)).await;
    }
}

fn unavailable_no_leader() -> AdminResponse {
    AdminResponse::Unavailable(
        "the monitor quorum is unavailable: no leader is known (a majority of monitors must be up \
         to change the map; reads and writes continue on the last map)"
            .into(),
    )
}

impl Service {
    fn status(&self) -> StatusReport {
        let m = self.raft.metrics().borrow().clone();
        let data = self.machine.subscribe().borrow().clone();
        let (up, down) = self.node.upgrade().map_or_else(Default::default, |n| n.liveness());
        let membership = m.membership_config.membership();
        let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
        StatusReport {
            map: data.state.map.clone(),
            pending: data.state.pending.values().cloned().collect(),
            up: up.into_iter().map(|n| n.0).collect(),
            down: down.into_iter().map(|n| n.0).collect(),
            raft_id: m.id,
            leader: m.current_leader,
            term: m.current_term,
            raft_state: format!("{:?}", m.state),
            last_applied: m.last_applied.map(|l| l.index),
            voters: membership
                .nodes()
                .filter(|(id, _)| voters.contains(id))
                .map(|(id, n)| (*id, n.peer_id.clone()))
                .collect(),
        }
    }

    /// The leader's node, when this monitor is not the leader and knows who is.
    fn leader_peer(&self) -> Option<PeerId> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        if leader == m.id {
            return None;
        }
        m.membership_config.membership().get_node(&leader)?.peer()
    }

    async fn forward(&self, request: AdminRequest) -> AdminResponse {
        let (Some(node), Some(leader)) = (self.node.upgrade(), self.leader_peer()) else {
            return unavailable_no_leader();
        };
        let ask = node.admin_request(leader, AdminRequest::Forwarded(Box::new(request)));
        match tokio::time::timeout(Duration::from_millis(FORWARD_TIMEOUT_MS), ask).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => AdminResponse::Unavailable(format!(
                "the monitor quorum is unavailable: the leader ({leader}) did not answer: {e}"
            )),
            Err(_) => AdminResponse::Unavailable(format!(
                "the monitor quorum is unavailable: the leader ({leader}) did not answer in {FORWARD_TIMEOUT_MS} ms"
            )),
        }
    }

    /// Commits `op` through Raft (on the leader; followers forward when `may_forward`).
    async fn propose(&self, request_id: u128, op: Op, may_forward: bool) -> AdminResponse {
        if let Some(done) = self.machine.subscribe().borrow().state.outcome_of(request_id) {
            // Already committed (a retry): the first outcome, without touching Raft.
            return AdminResponse::Outcome(done.clone());
        }
        let epoch_floor = self.node.upgrade().map_or(0, |n| n.epoch());
        let proposal = Proposal {
            request_id,
            epoch_floor,
            op: op.clone(),
        };
        let write = self.raft.client_write(proposal);
        match tokio::time::timeout(Duration::from_millis(PROPOSAL_TIMEOUT_MS), write).await {
            Ok(Ok(r)) => AdminResponse::Outcome(r.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) if may_forward => {
                self.forward(AdminRequest::Propose { request_id, op }).await
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => unavailable_no_leader(),
            Ok(Err(e)) => AdminResponse::Unavailable(format!("the monitor quorum is unavailable: {e}")),
            Err(_) => AdminResponse::Unavailable(format!(
                "the monitor quorum is unavailable: no majority acknowledged within {PROPOSAL_TIMEOUT_MS} ms \
                 (the change may still commit; retrying with the same request id applies it at most once)"
            )),
        }
    }

    /// What a storage node's join asks for, given the current state.
    fn join_op(&self, from: PeerId, addrs: Vec<String>, zone: String) -> Result<Op, Outcome> {
        let node = NodeInfo {
            id: NodeId(from.to_bytes()),
            addrs,
            role: Role::Storage,
            zone,
            weight: WEIGHT_DEFAULT,
            state: NodeState::In,
        };
        let data = self.machine.subscribe().borrow().clone();
        let Some(map) = &data.state.map else {
            return Err(Outcome::Refused(crate::cluster::change::Refusal::Invalid(
                "the cluster has no map yet".into(),
            )));
        };
        match map.node(&node.id) {
            Some(held) if held.addrs == node.addrs => Err(Outcome::Refused(crate::cluster::change::Refusal::NoOp(
                "already in the map".into(),
            ))),
            // A member that moved: refresh its addresses (no operator needed: it proved its key).
            Some(_) => Ok(Op::Change(Change::Admit { node })),
            None if self.auto_admit => Ok(Op::Change(Change::Admit { node })),
            None if data.state.pending.get(&node.id) == Some(&node) => Err(Outcome::Recorded),
            None => Ok(Op::Pending(node)),
        }
    }

    async fn membership(&self, request: AdminRequest, may_forward: bool) -> AdminResponse {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(m.id) {
            return if may_forward {
                self.forward(request).await
            } else {
                unavailable_no_leader()
            };
        }
        let mut voters: BTreeSet<RaftId> = m.membership_config.membership().voter_ids().collect();
        let result = match &request {
            AdminRequest::AddMonitor { peer_id, addr, zone } => {
                let Ok(peer) = PeerId::from_bytes(peer_id) else {
                    return AdminResponse::Error("bad peer id".into());
                };
                if addr.parse::<Multiaddr>().is_err() {
                    return AdminResponse::Error(format!("bad address {addr}"));
                }
                let id = raft_id_of(&peer);
                let node = MonitorNode {
                    peer_id: peer_id.clone(),
                    addr: addr.clone(),
                    zone: zone.clone(),
                };
                if voters.contains(&id) {
                    // Already a voter: refresh where it listens (a restart on a new address).
                    let set = openraft::ChangeMembers::SetNodes(BTreeMap::from([(id, node)]));
                    let change = self.raft.change_membership(set, false);
                    return match tokio::time::timeout(Duration::from_millis(PROPOSAL_TIMEOUT_MS), change).await {
                        Ok(Ok(_)) => AdminResponse::Outcome(Outcome::Applied {
                            epoch: self.machine.subscribe().borrow().state.epoch(),
                        }),
                        Ok(Err(e)) => AdminResponse::Unavailable(format!("address update failed: {e}")),
                        Err(_) => AdminResponse::Unavailable("address update did not commit in time".into()),
                    };
                }
                // Catch up as a learner first, then become a voter.
                let learn = self.raft.add_learner(id, node, true);
                match tokio::time::timeout(Duration::from_millis(PROPOSAL_TIMEOUT_MS * 2), learn).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return AdminResponse::Unavailable(format!("adding the learner failed: {e}")),
                    Err(_) => return AdminResponse::Unavailable("the new monitor did not catch up in time".into()),
                }
                voters.insert(id);
                self.raft.change_membership(voters, false)
            }
            AdminRequest::RemoveMonitor { peer_id } => {
                let Ok(peer) = PeerId::from_bytes(peer_id) else {
                    return AdminResponse::Error("bad peer id".into());
                };
                if !voters.remove(&raft_id_of(&peer)) {
                    return AdminResponse::Error(format!("{peer} is not a voting monitor"));
                }
                if voters.is_empty() {
                    return AdminResponse::Error("refusing to remove the last monitor".into());
                }
                self.raft.change_membership(voters, false)
            }
            _ => return AdminResponse::Error("not a membership request".into()),
        };
        match tokio::time::timeout(Duration::from_millis(PROPOSAL_TIMEOUT_MS), result).await {
            // The joint and final membership entries each apply; report where the map is now.
            Ok(Ok(_)) => AdminResponse::Outcome(Outcome::Applied {
                epoch: self.machine.subscribe().borrow().state.epoch(),
            }),
            Ok(Err(e)) => AdminResponse::Unavailable(format!("membership change failed: {e}")),
            Err(_) => AdminResponse::Unavailable("membership change did not commit in time".into()),
        }
    }

    async fn handle(self: Arc<Self>, from: PeerId, request: AdminRequest) -> AdminResponse {
        // A forwarded request is handled here, as the leader, and never forwarded again.
        let (request, may_forward) = match request {
            AdminRequest::Forwarded(inner) => (*inner, false),
            r => (r, true),
        };
        match request {
            AdminRequest::Status => AdminResponse::Status(Box::new(self.status())),
            AdminRequest::Propose { request_id, op } => {
                if matches!(op, Op::Pending(_)) {
                    return AdminResponse::Error("nodes ask to join with Join".into());
                }
                self.propose(request_id, op, may_forward).await
            }
            AdminRequest::Join { addrs, zone } => match self.join_op(from, addrs, zone) {
                Ok(op) => self.propose(rand::random(), op, may_forward).await,
                Err(outcome) => AdminResponse::Outcome(outcome),
            },
            r @ (AdminRequest::AddMonitor { .. } | AdminRequest::RemoveMonitor { .. }) => {
                self.membership(r, may_forward).await
            }
            AdminRequest::Forwarded(_) => AdminResponse::Error("forwarded twice".into()),
            // The node runtime serves key requests itself, before they reach a monitor.
            AdminRequest::Keys(_) | AdminRequest::Progress => {
                AdminResponse::Error("key and progress requests are served by the node".into())
            }
        }
    }
}

impl MonitorService for Service {
    fn raft(&self, from: PeerId, frame: RaftFrame) -> BoxFuture<'static, RaftFrame> {
        let raft = self.raft.clone();
        async move { raft::serve(&raft, from, frame).await }.boxed()
    }

    fn admin(&self, from: PeerId, request: AdminRequest) -> BoxFuture<'static, AdminResponse> {
        Arc::new(self.clone()).handle(from, request).boxed()
    }

    fn gauges(&self) -> Vec<(&'static str, &'static str, i64)> {
        let s = self.status();
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        vec![
            ("raft_term", "Current Raft term of this monitor", as_i64(s.term)),
            (
                "raft_is_leader",
                "1 when this monitor is the Raft leader",
                i64::from(s.leader == Some(s.raft_id)),
            ),
            (
                "raft_leader_known",
                "1 when this monitor knows a leader",
                i64::from(s.leader.is_some()),
            ),
            (
                "raft_last_applied_index",
                "Index of the last Raft entry applied",
                s.last_applied.map_or(-1, as_i64),
            ),
            ("raft_voters", "Voting monitors", s.voters.len() as i64),
            (
                "monitor_map_epoch",
                "Epoch of the monitors' committed map",
                as_i64(s.map.map_or(0, |m| m.epoch)),
            ),
            (
                "monitor_pending_nodes",
                "Storage nodes waiting for admission",
                s.pending.len() as i64,
            ),
        ]
    }

    fn health(&self) -> serde_json::Value {
        let s = self.status();
        serde_json::json!({
            "raft_id": s.raft_id,
            "raft_state": s.raft_state,
            "leader": s.leader,
            "term": s.term,
            "last_applied": s.last_applied,
            "voters": s.voters.len(),
            "map_epoch": s.map.map_or(0, |m| m.epoch),
            "pending_nodes": s.pending.len(),
        })
    }
}
