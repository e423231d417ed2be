//! The node's composition root and public handle: `NodeConfig`, `Node::start` (opens the
//! stores, builds the swarm, starts the subsystems' tasks) and `Node`, the API every role
//! uses. `Inner` is the state the subsystems share, each subsystem's part in its own struct
//! or fields, documented where declared; the subsystems live in sibling modules:
//! `swarm` (the task owning libp2p and the one request helper), `membership` (SWIM over
//! libp2p), `maps` (the map view, placement, filling; adopting maps), `chunks` and `records` (services and
//! clients), `quorum` (the write shell and the quorum/hedged read helper), `handoff`,
//! `repair` (anti-entropy, maintenance, GC, scrub), `reserve` (create-only reservations),
//! `keys` (access key requests), `admin` (Raft and admin frames), `metrics`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use futures::StreamExt;
use libp2p::identity::{Keypair, ed25519};
use libp2p::pnet::PreSharedKey;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use super::admin::seam::MonitorService;
use super::command::{COMMAND_QUEUE_LEN_MAX, Command};
use super::error::{ErrorCode, RemoteError, err};
use super::hedge::HedgeBudget;
use super::maps::view::MapView;
use super::metrics::NodeCounters;
use super::repair::report::{MaintenanceConfig, MaintenanceReport};
use crate::cluster::{ClusterMap, MapStore, NodeId, Placement};
use crate::storage::hints::HintStore;
use crate::storage::records::RecordStore;
use crate::storage::replication::WriteTimeouts;

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
    /// Memory the node's caches may use (`MEMORY_BUDGET_BYTES_DEFAULT`): half goes to the
    /// record store's page cache, a sixteenth to the hint store's (see `cache_sizes`).
    pub memory_budget_bytes: u64,
    /// Replication timeouts.
    pub write_timeouts: WriteTimeouts,
    /// This node's failure domain.
    pub zone: String,
    /// Membership protocol settings.
    pub swim: swim::SwimConfig,
    /// The role this node announces in SWIM (a node's role in placement comes from the map).
    pub role: swim::Role,
    /// The wall clock that stamps this node's versions, reservations and key records.
    pub clock: crate::clock::Clock,
    /// The fault layer its streams and writes obey (`Faults::off()` but under netsim).
    pub faults: crate::net::fault::Faults,
}

/// A storage node's default memory budget for its caches.
pub const MEMORY_BUDGET_BYTES_DEFAULT: u64 = 512 * 1024 * 1024;
/// The smallest cache a store gets, whatever the budget.
const STORE_CACHE_BYTES_MIN: u64 = 4 * 1024 * 1024;

/// How a node's memory budget is shared between its caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSizes {
    /// The record store's page cache (redb).
    pub records_bytes: usize,
    /// The hint store's page cache (redb).
    pub hints_bytes: usize,
}

/// The caches a budget of `budget_bytes` pays for: half to records (the metadata every
/// request reads), a sixteenth to hints; the rest is left for what grows with the data and
/// is not a cache (the chunk store's index, Merkle summaries, requests in flight).
pub fn cache_sizes(budget_bytes: u64) -> CacheSizes {
    let part = |share: u64| usize::try_from((budget_bytes / share).max(STORE_CACHE_BYTES_MIN)).unwrap_or(usize::MAX);
    CacheSizes {
        records_bytes: part(2),
        hints_bytes: part(16),
    }
}

/// How an acknowledged record write fared against what the replicas held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordWrite {
    /// Every acknowledging replica applied it (or the write was acknowledged before a
    /// replica said otherwise).
    Written,
    /// A replica held a newer version (or this very one), which last-writer-wins kept.
    Superseded,
}

/// A storage node's stores: chunks, records, and the copies it holds for replicas that were
/// down (hints).
pub(super) struct LocalStores {
    pub(super) chunks: Arc<chunkstore::Store>,
    pub(super) records: Arc<RecordStore>,
    pub(super) hints: Arc<HintStore>,
}

impl LocalStores {
    /// Opens (or creates) the stores under the node's data directory.
    async fn open(config: &NodeConfig) -> anyhow::Result<LocalStores> {
        let chunks = {
            let dir = config.data_dir.join("chunks");
            let options = config.chunk_options.clone();
            Arc::new(tokio::task::spawn_blocking(move || chunkstore::Store::open(dir, options)).await??)
        };
        let records = {
            let path = config.data_dir.join("records.redb");
            let cache_bytes = cache_sizes(config.memory_budget_bytes).records_bytes;
            Arc::new(tokio::task::spawn_blocking(move || RecordStore::open_with_cache(&path, cache_bytes)).await??)
        };
        let hints = {
            let path = config.data_dir.join("hints.redb");
            let cache_bytes = cache_sizes(config.memory_budget_bytes).hints_bytes;
            Arc::new(tokio::task::spawn_blocking(move || HintStore::open_with_cache(&path, cache_bytes)).await??)
        };
        Ok(LocalStores { chunks, records, hints })
    }
}

/// The answer of a node that holds no data to a request about data.
pub(super) fn not_storage() -> RemoteError {
    err(ErrorCode::BadRequest, "this node holds no data (not a storage node)")
}

/// The state the subsystems share: each subsystem's own part is a struct of its module
/// (`MapView`, `HedgeBudget`, `NodeCounters`) or the fields documented as its.
pub(super) struct Inner {
    pub(super) node_id: NodeId,
    pub(super) started: Instant,
    /// The data this node holds; `None` on gateways and monitors, which hold none.
    pub(super) stores: Option<LocalStores>,
    /// Serialises "store a hinted copy" against "drop a surplus copy" so a new hint cannot
    /// lose its data to a concurrent cleanup.
    pub(super) hint_lock: tokio::sync::Mutex<()>,
    /// Wakes the handoff task (a member came back).
    pub(super) handoff_nudge: Arc<tokio::sync::Notify>,
    /// The map, placement and filling partitions (`maps::view`).
    pub(super) map: MapView,
    pub(super) timeouts: WriteTimeouts,
    pub(super) cmd: mpsc::Sender<Command>,
    pub(super) counters: NodeCounters,
    /// Members SWIM currently considers down.
    pub(super) down: RwLock<HashSet<NodeId>>,
    /// Members SWIM currently considers up (excluding this node).
    pub(super) up: RwLock<HashSet<NodeId>>,
    pub(super) swim: swim::driver::SwimHandle,
    pub(super) swim_in: mpsc::Sender<swim::driver::Incoming>,
    pub(super) role: swim::Role,
    /// How many reads may be hedged (`hedge`).
    pub(super) hedges: HedgeBudget,
    /// Set on monitors: answers Raft frames and admin requests.
    pub(super) monitor: std::sync::OnceLock<Arc<dyn MonitorService>>,
    /// Anti-entropy rounds started (picks each round's peer per partition).
    pub(super) anti_entropy_rounds: std::sync::atomic::AtomicU64,
    /// Since when SWIM has reported each down member down.
    pub(super) down_since: Mutex<HashMap<NodeId, Instant>>,
    /// Set when maintenance starts; defaults apply before.
    pub(super) maintenance: std::sync::OnceLock<MaintenanceConfig>,
    /// One maintenance pass at a time.
    pub(super) maintenance_running: tokio::sync::Mutex<()>,
    /// What the last pass did and left.
    pub(super) maintenance_last: Mutex<Option<MaintenanceReport>>,
    /// Starts a pass at once (a scrub found bad copies).
    pub(super) maintenance_nudge: Arc<tokio::sync::Notify>,
    /// Chunks seen unreferenced, and since when.
    pub(super) unreferenced: Mutex<crate::storage::refs::Unreferenced>,
    /// Clock of the chunk references this node writes.
    pub(super) ref_hlc: crate::storage::records::Hlc,
    /// The wall clock (`NodeConfig::clock`).
    pub(super) clock: crate::clock::Clock,
    /// The fault layer (`NodeConfig::faults`).
    pub(super) faults: crate::net::fault::Faults,
}

/// A running node. Dropping it stops the network loop (as a crash would, minus the disk).
pub struct Node {
    pub(super) inner: Arc<Inner>,
    pub(super) peer_id: PeerId,
    pub(super) listen_addr: Multiaddr,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) fn node_id(peer: &PeerId) -> NodeId {
    NodeId(peer.to_bytes())
}

pub(super) fn peer_of(node: &NodeId) -> Option<PeerId> {
    PeerId::from_bytes(&node.0).ok()
}

/// A node id received from a peer: must be a valid libp2p peer id.
pub(super) fn parse_node_id(raw: &[u8]) -> Result<NodeId, RemoteError> {
    PeerId::from_bytes(raw)
        .map(|p| node_id(&p))
        .map_err(|_| err(ErrorCode::BadRequest, "hint names an invalid node id"))
}

impl Inner {
    /// The current map and placement.
    pub(super) fn view(&self) -> Option<Arc<(ClusterMap, Placement)>> {
        self.map.current()
    }

    /// Milliseconds since this node started (the write coordinator's monotonic clock).
    pub(super) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

impl Node {
    /// Opens the node's stores, starts listening, and returns once the listen address is known.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&config.data_dir)?;
        let keypair: Keypair = crate::net::identity::load_or_create_keypair(&config.data_dir.join("node.key"))?;
        let peer_id = keypair.public().to_peer_id();
        // Only storage nodes hold data: placement never names a gateway or a monitor.
        let stores = match config.role {
            swim::Role::Storage => Some(LocalStores::open(&config).await?),
            _ => None,
        };
        let maps = MapStore::open(config.data_dir.join("map.bin"), config.map_key.clone())?;

        let mut swarm = Inner::build_swarm(keypair, &config)?;
        swarm.listen_on(config.listen.clone())?;
        let listen_addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE_LEN_MAX);
        let (swim_handle, swim_in_tx, swim_events) = Inner::start_swim(&config, peer_id, &listen_addr, cmd_tx.clone())?;
        let inner = Arc::new(Inner {
            node_id: node_id(&peer_id),
            started: Instant::now(),
            stores,
            hint_lock: tokio::sync::Mutex::new(()),
            handoff_nudge: Arc::new(tokio::sync::Notify::new()),
            map: MapView::new(node_id(&peer_id), maps),
            timeouts: config.write_timeouts,
            cmd: cmd_tx,
            counters: NodeCounters::default(),
            down: RwLock::new(HashSet::new()),
            up: RwLock::new(HashSet::new()),
            swim: swim_handle,
            swim_in: swim_in_tx,
            role: config.role,
            hedges: HedgeBudget::default(),
            monitor: std::sync::OnceLock::new(),
            anti_entropy_rounds: std::sync::atomic::AtomicU64::new(0),
            down_since: Mutex::new(HashMap::new()),
            maintenance: std::sync::OnceLock::new(),
            maintenance_running: tokio::sync::Mutex::new(()),
            maintenance_last: Mutex::new(None),
            maintenance_nudge: Arc::new(tokio::sync::Notify::new()),
            unreferenced: Mutex::new(crate::storage::refs::Unreferenced::default()),
            ref_hlc: crate::storage::records::Hlc::default(),
            clock: config.clock.clone(),
            faults: config.faults.clone(),
        });
        inner.follow_membership(swim_events);
        inner.start_handoff();
        if let Some(v) = inner.view() {
            inner.learn_addresses(&v.0).await;
            inner.join_members(&v.0).await;
        }
        let task = inner.clone().run_swarm(swarm, cmd_rx);
        tracing::info!(%peer_id, %listen_addr, "node started");
        Ok(Node {
            inner,
            peer_id,
            listen_addr,
            task,
        })
    }

    /// The wall clock the node was started with.
    pub fn clock(&self) -> &crate::clock::Clock {
        &self.inner.clock
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The address the node listens on.
    pub fn listen_addr(&self) -> &Multiaddr {
        &self.listen_addr
    }

    /// The local chunk store (for checks and repairs); `None` unless a storage node.
    pub fn chunk_store(&self) -> Option<&Arc<chunkstore::Store>> {
        self.inner.stores.as_ref().map(|s| &s.chunks)
    }

    /// Tells the node where a peer listens (bootstrap, before any map names it).
    pub async fn add_peer_address(&self, peer: PeerId, addr: Multiaddr) {
        let _ = self.inner.cmd.send(Command::AddAddresses(vec![(peer, addr)])).await;
    }
}
