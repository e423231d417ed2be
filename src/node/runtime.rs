//! The node runtime: one tokio task owns the libp2p swarm; handlers and clients talk to it
//! through a bounded command channel. Incoming requests are answered by spawned tasks (disk
//! I/O runs on blocking threads), so a slow disk never stalls the network loop.
//!
//! Replicated writes (chunks and records) are driven by the sans-IO `WriteCoordinator`: this
//! module is its shell — it turns `Send` effects into local writes or requests to peers,
//! `Timer` effects into sleeps, and feeds back acknowledgements and failures.
//!
//! Membership: the node runs a `swim` member over the `/hadss/swim/1` protocol. Each packet
//! is handed to SWIM with the libp2p-authenticated sender, so a peer cannot speak for
//! another. Members SWIM declares down are skipped by replicated writes (their copies go to
//! fallbacks at once instead of after a failed request); a newer epoch gossiped by SWIM makes
//! the node pull the map from the member that carried it.
//!
//! Not here yet: hinted handoff back to a returning replica, read repair, anti-entropy.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chunkstore::ChunkId;
use futures::StreamExt;
use libp2p::identity::{Keypair, ed25519};
use libp2p::pnet::PreSharedKey;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};

use super::protocol::*;
use crate::cluster::{ClusterMap, MapEnvelope, MapStore, NodeId, Placement, partition_of_chunk, partition_of_key};
use crate::net::codec::PostcardCodec;
use crate::net::transport::build_swarm;
use crate::storage::records::{Record, RecordStore};
use crate::storage::replication::{Outcome, WriteCoordinator, WriteEffect, WriteTimeouts};

/// Commands queued to the network loop; senders wait when it is full.
const COMMAND_QUEUE_LEN_MAX: usize = 1024;
/// Received SWIM packets waiting for the member; beyond this they are dropped (SWIM treats
/// drops as loss).
const SWIM_QUEUE_LEN_MAX: usize = 256;
/// Members a node contacts to join the SWIM mesh when it adopts a map.
const SWIM_JOIN_CONTACTS_MAX: usize = 8;
/// Time a peer has to answer a request.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where the node keeps its key, map, chunks and records.
    pub data_dir: PathBuf,
    /// Address to listen on (`/ip4/127.0.0.1/tcp/0` picks a port).
    pub listen: Multiaddr,
    /// The cluster secret.
    pub secret: PreSharedKey,
    /// The monitors' public key: only maps signed by it are accepted.
    pub map_key: ed25519::PublicKey,
    /// Chunk store options.
    pub chunk_options: chunkstore::Options,
    /// Replication timeouts.
    pub write_timeouts: WriteTimeouts,
    /// This node's failure domain.
    pub zone: String,
    /// Membership protocol settings.
    pub swim: swim::SwimConfig,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    chunk: request_response::Behaviour<PostcardCodec<ChunkRequest, ChunkResponse>>,
    meta: request_response::Behaviour<PostcardCodec<MetaRequest, MetaResponse>>,
    map: request_response::Behaviour<PostcardCodec<MapRequest, MapResponse>>,
    swim: request_response::Behaviour<PostcardCodec<SwimPacket, SwimDelivered>>,
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Command {
    Chunk(PeerId, ChunkRequest, Reply<ChunkResponse>),
    Meta(PeerId, MetaRequest, Reply<MetaResponse>),
    Map(PeerId, MapRequest, Reply<MapResponse>),
    RespondChunk(ResponseChannel<ChunkResponse>, ChunkResponse),
    RespondMeta(ResponseChannel<MetaResponse>, MetaResponse),
    RespondMap(ResponseChannel<MapResponse>, MapResponse),
    AddAddresses(Vec<(PeerId, Multiaddr)>),
    SwimSend(PeerId, Vec<u8>),
}

/// Counters of a node.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Requests from peers that failed to decode or broke a limit.
    pub bad_inbound: std::sync::atomic::AtomicU64,
    /// Chunks refused because their bytes did not match their id.
    pub chunk_id_mismatch: std::sync::atomic::AtomicU64,
    /// SWIM packets dropped because a queue was full (counted as loss by SWIM).
    pub swim_dropped: std::sync::atomic::AtomicU64,
}

struct Inner {
    node_id: NodeId,
    started: Instant,
    chunks: Arc<chunkstore::Store>,
    records: Arc<RecordStore>,
    maps: Mutex<MapStore>,
    view: RwLock<Option<Arc<(ClusterMap, Placement)>>>,
    timeouts: WriteTimeouts,
    cmd: mpsc::Sender<Command>,
    counters: NodeCounters,
    /// Members SWIM currently considers down.
    down: RwLock<HashSet<NodeId>>,
    swim: swim::driver::SwimHandle,
    swim_in: mpsc::Sender<swim::driver::Incoming>,
}

/// A running node. Dropping it stops the network loop (as a crash would, minus the disk).
pub struct Node {
    inner: Arc<Inner>,
    peer_id: PeerId,
    listen_addr: Multiaddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> RemoteError {
    RemoteError {
        code,
        message: message.into(),
    }
}

fn node_id(peer: &PeerId) -> NodeId {
    NodeId(peer.to_bytes())
}

fn peer_of(node: &NodeId) -> Option<PeerId> {
    PeerId::from_bytes(&node.0).ok()
}

impl Node {
    /// Opens the node's stores, starts listening, and returns once the listen address is known.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&config.data_dir)?;
        let keypair: Keypair = crate::net::identity::load_or_create_keypair(&config.data_dir.join("node.key"))?;
        let peer_id = keypair.public().to_peer_id();
        let chunks = {
            let dir = config.data_dir.join("chunks");
            let options = config.chunk_options.clone();
            Arc::new(tokio::task::spawn_blocking(move || chunkstore::Store::open(dir, options)).await??)
        };
        let records = {
            let path = config.data_dir.join("records.redb");
            Arc::new(tokio::task::spawn_blocking(move || RecordStore::open(&path)).await??)
        };
        let maps = MapStore::open(config.data_dir.join("map.bin"), config.map_key.clone())?;
        let view = maps.current().map(|m| Arc::new((m.clone(), Placement::new(m))));

        let rr_config =
            request_response::Config::default().with_request_timeout(Duration::from_millis(REQUEST_TIMEOUT_MS));
        let mut swarm: Swarm<Behaviour> = build_swarm(keypair, config.secret, |_| Behaviour {
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
            swim: request_response::Behaviour::with_codec(
                PostcardCodec::new(SWIM_LIMITS),
                [(SWIM_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_millis(config.swim.probe_rtt_ms.max(1000))),
            ),
        })?;
        swarm.listen_on(config.listen.clone())?;
        let listen_addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE_LEN_MAX);
        let (swim_in_tx, swim_in_rx) = mpsc::channel(SWIM_QUEUE_LEN_MAX);
        // A fresh generation per start: a restarted node replaces its old self in SWIM.
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let identity = swim::NodeIdentity::new(
            swim::PeerId::new(&peer_id.to_bytes())?,
            vec![listen_addr.to_string()],
            swim::Role::Storage,
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
        let (swim_handle, swim_events, _swim_task) = swim::driver::spawn(
            core,
            SwimOverLibp2p {
                cmd: cmd_tx.clone(),
                incoming: swim_in_rx,
            },
        );
        let inner = Arc::new(Inner {
            node_id: node_id(&peer_id),
            started: Instant::now(),
            chunks,
            records,
            maps: Mutex::new(maps),
            view: RwLock::new(view),
            timeouts: config.write_timeouts,
            cmd: cmd_tx,
            counters: NodeCounters::default(),
            down: RwLock::new(HashSet::new()),
            swim: swim_handle,
            swim_in: swim_in_tx,
        });
        tokio::spawn(follow_membership(swim_events, Arc::downgrade(&inner)));
        if let Some(v) = inner.view() {
            inner.learn_addresses(&v.0).await;
            inner.join_members(&v.0).await;
        }
        let task = tokio::spawn(run_loop(swarm, cmd_rx, inner.clone()));
        tracing::info!(%peer_id, %listen_addr, "node started");
        Ok(Node {
            inner,
            peer_id,
            listen_addr,
            task,
        })
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The address the node listens on.
    pub fn listen_addr(&self) -> &Multiaddr {
        &self.listen_addr
    }

    /// The node's counters.
    pub fn counters(&self) -> &NodeCounters {
        &self.inner.counters
    }

    /// The local chunk store (for checks and repairs).
    pub fn chunk_store(&self) -> &Arc<chunkstore::Store> {
        &self.inner.chunks
    }

    /// Offers a signed map; accepted if it verifies and is newer.
    pub async fn offer_map(&self, env: MapEnvelope) -> anyhow::Result<u64> {
        self.inner.offer_map(env).await
    }

    /// Asks `peer` for its newest map and adopts it if it verifies and is newer.
    pub async fn pull_map(&self, peer: PeerId) -> anyhow::Result<u64> {
        self.inner.pull_map(peer).await
    }

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

    /// Sends one raw chunk request to `peer` (the native client path; tests use it to play a
    /// misbehaving peer).
    pub async fn chunk_request(&self, peer: PeerId, request: ChunkRequest) -> anyhow::Result<ChunkResponse> {
        self.inner
            .request_chunk(&node_id(&peer), request)
            .await
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// Tells the node where a peer listens (bootstrap, before any map names it).
    pub async fn add_peer_address(&self, peer: PeerId, addr: Multiaddr) {
        let _ = self.inner.cmd.send(Command::AddAddresses(vec![(peer, addr)])).await;
    }

    /// The epoch of the map this node holds.
    pub fn epoch(&self) -> u64 {
        self.inner.view().map_or(0, |v| v.0.epoch)
    }

    /// Stores a chunk on W of its replicas (this node coordinates). Returns its id.
    pub async fn put_chunk(&self, data: Vec<u8>) -> anyhow::Result<ChunkId> {
        let id = ChunkId::of(&data);
        match self.inner.clone().coordinate_chunk(id, Arc::new(data)).await {
            ChunkResponse::Stored { .. } => Ok(id),
            other => anyhow::bail!("chunk put failed: {other:?}"),
        }
    }

    /// Reads a chunk from this node or, failing that, from its replicas and fallbacks in
    /// preference order. Every copy is verified (BLAKE3) before it is returned.
    pub async fn get_chunk(&self, id: &ChunkId) -> anyhow::Result<Option<Vec<u8>>> {
        self.inner.clone().get_chunk(*id).await
    }

    /// Writes records to W replicas of their partitions (one coordinated write per record).
    pub async fn put_record(&self, record: Record) -> anyhow::Result<()> {
        self.inner.clone().coordinate_record(record).await
    }

    /// Reads a record from R replicas; the newest version wins.
    pub async fn get_record(&self, partition: u32, key: &[u8]) -> anyhow::Result<Option<Record>> {
        self.inner.clone().get_record(partition, key.to_vec()).await
    }

    /// The partition a record key belongs to under the current map.
    pub fn partition_of(&self, key: &[u8]) -> Option<u32> {
        self.inner.view().map(|v| partition_of_key(v.0.partitions, key))
    }
}

impl Inner {
    fn view(&self) -> Option<Arc<(ClusterMap, Placement)>> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn offer_map(&self, env: MapEnvelope) -> anyhow::Result<u64> {
        let map = {
            let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
            maps.offer(env)?.clone()
        };
        let epoch = map.epoch;
        self.learn_addresses(&map).await;
        self.join_members(&map).await;
        if let Ok(digest) = map.digest() {
            let _ = self.swim.publish_epoch(epoch, digest).await;
        }
        let placement = Placement::new(&map);
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new((map, placement)));
        tracing::info!(epoch, "accepted cluster map");
        Ok(epoch)
    }

    async fn learn_addresses(&self, map: &ClusterMap) {
        let addrs: Vec<(PeerId, Multiaddr)> = map
            .nodes
            .iter()
            .filter_map(|n| Some((peer_of(&n.id)?, n.addrs.clone())))
            .flat_map(|(p, addrs)| addrs.into_iter().filter_map(move |a| Some((p, a.parse().ok()?))))
            .collect();
        let _ = self.cmd.send(Command::AddAddresses(addrs)).await;
    }

    /// Joins the SWIM mesh through (up to a few of) the map's other nodes.
    async fn join_members(&self, map: &ClusterMap) {
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

    fn is_alive(&self, node: &NodeId) -> bool {
        !self.down.read().unwrap_or_else(|p| p.into_inner()).contains(node)
    }

    async fn pull_map(&self, peer: PeerId) -> anyhow::Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Map(peer, MapRequest::Get, tx))
            .await
            .map_err(|_| anyhow::anyhow!("node stopped"))?;
        match rx.await.map_err(|_| anyhow::anyhow!("node stopped"))? {
            Ok(MapResponse::Map(Some(env))) => self.offer_map(env).await,
            Ok(MapResponse::Map(None)) => anyhow::bail!("{peer} has no map"),
            Ok(other) => anyhow::bail!("unexpected answer from {peer}: {other:?}"),
            Err(e) => anyhow::bail!("asking {peer} for its map: {e}"),
        }
    }

    async fn request_chunk(&self, to: &NodeId, req: ChunkRequest) -> Result<ChunkResponse, String> {
        let peer = peer_of(to).ok_or("bad peer id")?;
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Chunk(peer, req, tx))
            .await
            .map_err(|_| "node stopped")?;
        rx.await.map_err(|_| "node stopped".to_string())?
    }

    async fn request_meta(&self, to: &NodeId, req: MetaRequest) -> Result<MetaResponse, String> {
        let peer = peer_of(to).ok_or("bad peer id")?;
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Meta(peer, req, tx))
            .await
            .map_err(|_| "node stopped")?;
        rx.await.map_err(|_| "node stopped".to_string())?
    }

    async fn store_chunk_locally(&self, id: ChunkId, data: Arc<Vec<u8>>) -> Result<(), RemoteError> {
        let chunks = self.chunks.clone();
        let result = tokio::task::spawn_blocking(move || chunks.put_expecting(id, &data))
            .await
            .map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        match result {
            Ok(_) => Ok(()),
            Err(chunkstore::Error::IdMismatch { .. }) => {
                self.counters
                    .chunk_id_mismatch
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(err(ErrorCode::BadRequest, "chunk bytes do not match their id"))
            }
            Err(e @ chunkstore::Error::Full { .. }) => Err(err(ErrorCode::Full, e.to_string())),
            Err(e) => Err(err(ErrorCode::Internal, e.to_string())),
        }
    }

    /// Replicates one write through the coordinator; `send` performs one copy.
    async fn replicate<F, Fut>(&self, preference: Vec<NodeId>, n: usize, w: usize, send: F) -> Outcome
    where
        F: Fn(NodeId, Option<NodeId>) -> Fut,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        let alive = |n: &NodeId| self.is_alive(n);
        let mut fx = Vec::new();
        let mut coord = WriteCoordinator::start(self.now_ms(), &preference, n, w, self.timeouts, &alive, &mut fx);
        let (tx, mut rx) = mpsc::channel::<(NodeId, bool)>(crate::storage::replication::TARGETS_MAX * 2);
        let mut timers: BTreeSet<u64> = BTreeSet::new();
        loop {
            for effect in fx.drain(..) {
                match effect {
                    WriteEffect::Send { to, hint_for } => {
                        let fut = send(to.clone(), hint_for);
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let ok = fut.await;
                            let _ = tx.send((to, ok)).await;
                        });
                    }
                    WriteEffect::Timer { at_ms } => {
                        timers.insert(at_ms);
                    }
                    WriteEffect::Done(outcome) => return outcome,
                }
            }
            let next_timer = timers.first().copied();
            let sleep = async {
                match next_timer {
                    Some(at) => tokio::time::sleep(Duration::from_millis(at.saturating_sub(self.now_ms()))).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((from, ok)) = rx.recv() => {
                    if ok {
                        coord.handle_ack(&from, &mut fx);
                    } else {
                        coord.handle_failure(self.now_ms(), &from, &alive, &mut fx);
                    }
                }
                () = sleep => {
                    let now = self.now_ms();
                    timers.retain(|t| *t > now);
                    coord.handle_timer(now, &alive, &mut fx);
                }
            }
        }
    }

    async fn coordinate_chunk(self: Arc<Self>, id: ChunkId, data: Arc<Vec<u8>>) -> ChunkResponse {
        let Some(view) = self.view() else {
            return ChunkResponse::Error(err(ErrorCode::NoMap, "no cluster map yet"));
        };
        let (map, placement) = &*view;
        let partition = partition_of_chunk(map.partitions, &id.0);
        let preference: Vec<NodeId> = placement.preference(partition).cloned().collect();
        let (n, w) = (
            usize::from(map.policy.replication),
            usize::from(map.policy.write_quorum),
        );
        let me = self.node_id.clone();
        let this = self.clone();
        let outcome = self
            .replicate(preference, n, w, move |to, hint_for| {
                let this = this.clone();
                let data = data.clone();
                let me = me.clone();
                async move {
                    if to == me {
                        this.store_chunk_locally(id, data).await.is_ok()
                    } else {
                        let req = ChunkRequest::Put {
                            id: id.0,
                            data: data.to_vec(),
                            coordinate: false,
                            hint_for: hint_for.map(|h| h.0),
                        };
                        matches!(this.request_chunk(&to, req).await, Ok(ChunkResponse::Stored { .. }))
                    }
                }
            })
            .await;
        match outcome {
            Outcome::Acked { durable_on, .. } => ChunkResponse::Stored {
                copies: durable_on.len() as u32,
            },
            Outcome::Failed {
                durable_acks, needed, ..
            } => ChunkResponse::Error(err(
                ErrorCode::QuorumFailed,
                format!("{durable_acks} of {needed} copies durable"),
            )),
        }
    }

    async fn get_chunk(self: Arc<Self>, id: ChunkId) -> anyhow::Result<Option<Vec<u8>>> {
        let chunks = self.chunks.clone();
        let local = tokio::task::spawn_blocking(move || chunks.get(&id).map(|c| c.map(|c| c.to_vec()))).await?;
        // A local copy that failed verification was set aside by the chunk store; it is
        // replaced below from a healthy replica.
        let corrupt_here = match local {
            Ok(Some(bytes)) => return Ok(Some(bytes)),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(%id, error = %e, "local copy unreadable; reading from a replica");
                e.is_corruption()
            }
        };
        let Some(view) = self.view() else {
            anyhow::bail!("no cluster map yet");
        };
        let partition = partition_of_chunk(view.0.partitions, &id.0);
        for node in view.1.preference(partition) {
            if *node == self.node_id {
                continue;
            }
            if let Ok(ChunkResponse::Data(bytes)) = self.request_chunk(node, ChunkRequest::Get { id: id.0 }).await {
                // Never pass on bytes that do not match their id.
                if ChunkId::of(&bytes) != id {
                    tracing::error!(%id, peer = ?node, "peer sent a chunk that does not match its id");
                    continue;
                }
                if corrupt_here {
                    let repaired = self.store_chunk_locally(id, Arc::new(bytes.clone())).await;
                    tracing::info!(%id, ok = repaired.is_ok(), "replaced a corrupt local copy from a replica");
                }
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    }

    async fn coordinate_record(self: Arc<Self>, record: Record) -> anyhow::Result<()> {
        let Some(view) = self.view() else {
            anyhow::bail!("no cluster map yet");
        };
        let (map, placement) = &*view;
        let preference: Vec<NodeId> = placement.preference(record.partition).cloned().collect();
        let (n, w) = (
            usize::from(map.policy.replication),
            usize::from(map.policy.write_quorum),
        );
        let me = self.node_id.clone();
        let this = self.clone();
        let record = Arc::new(record);
        let outcome = self
            .replicate(preference, n, w, move |to, _hint_for| {
                let this = this.clone();
                let record = record.clone();
                let me = me.clone();
                async move {
                    if to == me {
                        let records = this.records.clone();
                        let r = (*record).clone();
                        matches!(
                            tokio::task::spawn_blocking(move || records.put(vec![r])).await,
                            Ok(Ok(_))
                        )
                    } else {
                        let req = MetaRequest::Put {
                            records: vec![(*record).clone()],
                        };
                        matches!(this.request_meta(&to, req).await, Ok(MetaResponse::Applied(_)))
                    }
                }
            })
            .await;
        match outcome {
            Outcome::Acked { .. } => Ok(()),
            Outcome::Failed {
                durable_acks, needed, ..
            } => {
                anyhow::bail!("record write failed: {durable_acks} of {needed} copies durable")
            }
        }
    }

    async fn get_record(self: Arc<Self>, partition: u32, key: Vec<u8>) -> anyhow::Result<Option<Record>> {
        let Some(view) = self.view() else {
            anyhow::bail!("no cluster map yet");
        };
        let (map, placement) = &*view;
        let r = usize::from(map.policy.read_quorum);
        let mut answers: Vec<Option<Record>> = Vec::new();
        for node in placement.preference(partition) {
            if answers.len() >= r {
                break;
            }
            let answer = if *node == self.node_id {
                let records = self.records.clone();
                let k = key.clone();
                tokio::task::spawn_blocking(move || records.get(partition, &k))
                    .await?
                    .ok()
            } else {
                match self
                    .request_meta(
                        node,
                        MetaRequest::Get {
                            partition,
                            key: key.clone(),
                        },
                    )
                    .await
                {
                    Ok(MetaResponse::Record(rec)) => Some(rec),
                    _ => None,
                }
            };
            if let Some(a) = answer {
                answers.push(a);
            }
        }
        if answers.len() < r {
            anyhow::bail!("read quorum not reached: {} of {r} replicas answered", answers.len());
        }
        Ok(answers.into_iter().flatten().max_by_key(|rec| rec.version))
    }

    async fn handle_chunk(self: Arc<Self>, request: ChunkRequest) -> ChunkResponse {
        match request {
            ChunkRequest::Put {
                id,
                data,
                coordinate,
                hint_for: _,
            } => {
                let id = ChunkId(id);
                if ChunkId::of(&data) != id {
                    self.counters
                        .chunk_id_mismatch
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return ChunkResponse::Error(err(ErrorCode::BadRequest, "chunk bytes do not match their id"));
                }
                if coordinate {
                    self.coordinate_chunk(id, Arc::new(data)).await
                } else {
                    match self.store_chunk_locally(id, Arc::new(data)).await {
                        Ok(()) => ChunkResponse::Stored { copies: 1 },
                        Err(e) => ChunkResponse::Error(e),
                    }
                }
            }
            ChunkRequest::Get { id } => {
                let chunks = self.chunks.clone();
                let id = ChunkId(id);
                match tokio::task::spawn_blocking(move || chunks.get(&id).map(|c| c.map(|c| c.to_vec()))).await {
                    Ok(Ok(Some(bytes))) => ChunkResponse::Data(bytes),
                    Ok(Ok(None)) | Ok(Err(_)) => ChunkResponse::NotFound,
                    Err(e) => ChunkResponse::Error(err(ErrorCode::Internal, e.to_string())),
                }
            }
        }
    }

    async fn handle_meta(self: Arc<Self>, request: MetaRequest) -> MetaResponse {
        let records = self.records.clone();
        let result = tokio::task::spawn_blocking(move || match request {
            MetaRequest::Put { records: batch } => records.put(batch).map(MetaResponse::Applied),
            MetaRequest::Get { partition, key } => records.get(partition, &key).map(MetaResponse::Record),
        })
        .await;
        match result {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => MetaResponse::Error(err(ErrorCode::BadRequest, e.to_string())),
            Err(e) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
        }
    }
}

/// Pending outbound requests, by request id.
#[derive(Default)]
struct Pending {
    chunk: HashMap<OutboundRequestId, Reply<ChunkResponse>>,
    meta: HashMap<OutboundRequestId, Reply<MetaResponse>>,
    map: HashMap<OutboundRequestId, Reply<MapResponse>>,
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

fn handle_command(swarm: &mut Swarm<Behaviour>, pending: &mut Pending, cmd: Command) {
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
        Command::RespondChunk(channel, resp) => {
            let _ = b.chunk.send_response(channel, resp);
        }
        Command::RespondMeta(channel, resp) => {
            let _ = b.meta.send_response(channel, resp);
        }
        Command::RespondMap(channel, resp) => {
            let _ = b.map.send_response(channel, resp);
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
            request_response::Event::Message { message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let inner = $inner.clone();
                    tokio::spawn(async move {
                        let cmd = inner.cmd.clone();
                        let response = $handler(inner, request).await;
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
                    let _ = reply.send(Err(error.to_string()));
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

fn handle_event(
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
                Inner::handle_chunk,
                Command::RespondChunk,
                redial
            )
        }
        SwarmEvent::Behaviour(BehaviourEvent::Meta(e)) => {
            route!(e, pending.meta, inner, Inner::handle_meta, Command::RespondMeta, redial)
        }
        SwarmEvent::Behaviour(BehaviourEvent::Map(e)) => {
            route!(e, pending.map, inner, handle_map, Command::RespondMap, redial)
        }
        SwarmEvent::Behaviour(BehaviourEvent::Swim(e)) => handle_swim(swarm, inner, e),
        _ => {}
    }
    // A failed dial makes libp2p forget the addresses it tried; the map still names them,
    // and the peer may come back (a restart): give them back for the next attempt.
    for peer in redial {
        restore_map_addresses(swarm, inner, peer);
    }
}

async fn handle_map(inner: Arc<Inner>, request: MapRequest) -> MapResponse {
    match request {
        MapRequest::Get => {
            let maps = inner.maps.lock().unwrap_or_else(|p| p.into_inner());
            MapResponse::Map(maps.current_envelope().cloned())
        }
        MapRequest::Offer(env) => match inner.offer_map(env).await {
            Ok(epoch) => MapResponse::Accepted(epoch),
            Err(e) => MapResponse::Refused(e.to_string()),
        },
    }
}

/// Gives the swarm back the addresses the map names for `peer` (libp2p forgets the ones
/// a dial failed on).
fn restore_map_addresses(swarm: &mut Swarm<Behaviour>, inner: &Inner, peer: PeerId) {
    if let Some(view) = inner.view()
        && let Some(node) = view.0.node(&node_id(&peer))
    {
        for addr in node.addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
            swarm.add_peer_address(peer, addr);
        }
    }
}

/// Hands a received SWIM packet to the member, tagged with the authenticated sender.
fn handle_swim(
    swarm: &mut Swarm<Behaviour>,
    inner: &Arc<Inner>,
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
            if inner.swim_in.try_send(incoming).is_err() {
                inner.counters.swim_dropped.fetch_add(1, Relaxed);
            }
        }
        request_response::Event::InboundFailure { .. } => {
            inner.counters.bad_inbound.fetch_add(1, Relaxed);
        }
        request_response::Event::OutboundFailure {
            peer,
            error: request_response::OutboundFailure::DialFailure,
            ..
        } => {
            // Keep the map's addresses of a peer SWIM keeps probing (it may restart).
            restore_map_addresses(swarm, inner, peer);
        }
        _ => {} // other delivery failures are packet loss to SWIM
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

/// Follows SWIM's membership events: tracks who is down and pulls newer maps.
async fn follow_membership(mut events: mpsc::Receiver<swim::MembershipEvent>, inner: std::sync::Weak<Inner>) {
    while let Some(event) = events.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let id_of = |m: &swim::NodeIdentity| NodeId(m.peer_id().as_bytes().to_vec());
        match event {
            swim::MembershipEvent::Down(m) => {
                tracing::info!(peer = %m.peer_id(), "member down");
                inner.down.write().unwrap_or_else(|p| p.into_inner()).insert(id_of(&m));
            }
            swim::MembershipEvent::Up(m) | swim::MembershipEvent::Rejoined { new: m, .. } => {
                inner.down.write().unwrap_or_else(|p| p.into_inner()).remove(&id_of(&m));
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
                            tracing::warn!(%peer, error = %e, "could not pull the announced map");
                        }
                    });
                }
            }
            _ => {}
        }
    }
}
