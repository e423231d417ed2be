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
//! Repair on the data path: a write that went to a fallback carries a *hint*; the fallback
//! records it (`storage::hints`) and a handoff task sends the copy to the replica once SWIM
//! sees it alive, then drops its surplus copy. A record read that finds replicas with older
//! versions writes the newest back to them; a chunk read that finds a replica missing the
//! chunk, or holding a corrupt copy, gives it the verified bytes. Both in the background.
//!
//! Merkle anti-entropy of record partitions (`antientropy`): rounds on an interval and after
//! each new epoch compare every partition with one live replica and copy what differs.
//!
//! Not here yet: anti-entropy of chunks, re-replication after a long outage, rebalancing
//! (the anti-entropy issue).

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
use crate::storage::hints::{Hint, HintItem, HintStore};
use crate::storage::records::{Record, RecordStore};
use crate::storage::replication::{Counting, Outcome, ReadTally, WriteCoordinator, WriteEffect, WriteTimeouts};

mod antientropy;
mod keys;
mod maintain;
mod reserve;

pub use antientropy::{ANTI_ENTROPY_INTERVAL_MS_DEFAULT, AntiEntropyReport};
pub use maintain::{DOWN_OUT_MS_DEFAULT, MaintenanceConfig, MaintenanceReport};
pub use reserve::{CreateLease, CreateRefusal};

/// Commands queued to the network loop; senders wait when it is full.
const COMMAND_QUEUE_LEN_MAX: usize = 1024;
/// Received SWIM packets waiting for the member; beyond this they are dropped (SWIM treats
/// drops as loss).
const SWIM_QUEUE_LEN_MAX: usize = 256;
/// Members a node contacts to join the SWIM mesh when it adopts a map.
const SWIM_JOIN_CONTACTS_MAX: usize = 8;
/// Requests in flight per connection and protocol, each way (libp2p's default of 100 drops
/// inbound requests under load). Bounds a node's inbound buffering: at most this many
/// frames (each within its protocol's size limit) per peer.
pub const STREAMS_PER_CONNECTION_MAX: usize = 512;
/// Time a peer has to answer a request.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// A chunk read that has not been answered this long also asks the next replica (hedged
/// read): a slow or paused replica costs this much, not a request timeout. Well above a 4 MiB
/// transfer on a LAN, so healthy reads rarely hedge.
pub const HEDGED_READ_DELAY_MS: u64 = 250;
/// Hedges allowed per remote chunk read, in thousandths (a token bucket): under load every
/// read is slow, and hedging them all would double the work. At most about one read in ten
/// hedges; replicas SWIM reports down are asked last instead.
const HEDGE_TOKENS_PER_READ_MILLI: u64 = 100;
/// Most hedges saved up for a burst, in thousandths.
const HEDGE_TOKENS_MAX_MILLI: u64 = 10_000;
/// How often the handoff task looks for hints to hand back (it also runs when SWIM reports
/// a member up).
pub const HANDOFF_INTERVAL_MS: u64 = 2_000;
/// Hint copies in flight to one replica.
const HANDOFF_IN_FLIGHT_MAX: usize = 16;
/// Pages of hints one handoff round goes through (`HINTS_PAGE_MAX` each).
const HANDOFF_PAGES_PER_ROUND_MAX: usize = 64;

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
    /// The role this node announces in SWIM (a node's role in placement comes from the map).
    pub role: swim::Role,
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

/// What a monitor plugs into its node: the node runtime carries Raft frames and admin
/// requests, the monitor (`crate::monitor`) answers them. Both get the libp2p-authenticated
/// sender.
pub trait MonitorService: Send + Sync + 'static {
    /// Answers one Raft frame.
    fn raft(&self, from: PeerId, frame: RaftFrame) -> futures::future::BoxFuture<'static, RaftFrame>;
    /// Answers one admin request.
    fn admin(&self, from: PeerId, request: AdminRequest) -> futures::future::BoxFuture<'static, AdminResponse>;
    /// Gauges for `/metrics`: (name, help, value).
    fn gauges(&self) -> Vec<(&'static str, &'static str, i64)>;
    /// What `/health` adds under `"monitor"`.
    fn health(&self) -> serde_json::Value;
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    chunk: request_response::Behaviour<PostcardCodec<ChunkRequest, ChunkResponse>>,
    meta: request_response::Behaviour<PostcardCodec<MetaRequest, MetaResponse>>,
    map: request_response::Behaviour<PostcardCodec<MapRequest, MapResponse>>,
    swim: request_response::Behaviour<PostcardCodec<SwimPacket, SwimDelivered>>,
    raft: request_response::Behaviour<PostcardCodec<RaftFrame, RaftFrame>>,
    admin: request_response::Behaviour<PostcardCodec<AdminRequest, AdminResponse>>,
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Command {
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

/// Counters of a node.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Requests from peers that failed to decode or broke a limit.
    pub bad_inbound: std::sync::atomic::AtomicU64,
    /// Chunks refused because their bytes did not match their id.
    pub chunk_id_mismatch: std::sync::atomic::AtomicU64,
    /// SWIM packets dropped because a queue was full (counted as loss by SWIM).
    pub swim_dropped: std::sync::atomic::AtomicU64,
    /// Copies stored here on behalf of a replica that was down.
    pub hints_stored: std::sync::atomic::AtomicU64,
    /// Hinted copies handed back to their replica.
    pub hints_handed_off: std::sync::atomic::AtomicU64,
    /// Stale or missing record copies rewritten by reads.
    pub record_read_repairs: std::sync::atomic::AtomicU64,
    /// Missing or corrupt chunk copies on replicas rewritten by reads.
    pub chunk_read_repairs: std::sync::atomic::AtomicU64,
    /// Chunk reads refused here because the local copy failed verification.
    pub corrupt_chunks_refused: std::sync::atomic::AtomicU64,
    /// Inbound connections that failed before they were established (a wrong cluster secret
    /// shows up here: the handshake cannot complete).
    pub inbound_connection_failures: std::sync::atomic::AtomicU64,
    /// Replicated writes (chunks and records) this node coordinated that reached W copies.
    pub writes_acked: std::sync::atomic::AtomicU64,
    /// Replicated writes this node coordinated that failed.
    pub writes_failed: std::sync::atomic::AtomicU64,
    /// Members SWIM reported up or rejoined.
    pub members_up_events: std::sync::atomic::AtomicU64,
    /// Members SWIM reported down.
    pub members_down_events: std::sync::atomic::AtomicU64,
    /// Chunk reads that asked a second replica because the first was slow.
    pub hedged_chunk_reads: std::sync::atomic::AtomicU64,
    /// Record reads that asked one more replica because one was slow.
    pub hedged_record_reads: std::sync::atomic::AtomicU64,
    /// Anti-entropy comparisons of a partition with a peer.
    pub anti_entropy_sessions: std::sync::atomic::AtomicU64,
    /// Bytes of anti-entropy questions and answers (records copied not included).
    pub anti_entropy_bytes: std::sync::atomic::AtomicU64,
    /// Records anti-entropy copied (pulled here or pushed to a peer).
    pub anti_entropy_records_copied: std::sync::atomic::AtomicU64,
    /// Maintenance passes run.
    pub maintenance_passes: std::sync::atomic::AtomicU64,
    /// Referenced chunks fetched by maintenance (repair, re-replication, rebalancing).
    pub chunks_fetched: std::sync::atomic::AtomicU64,
    /// Unreferenced chunks deleted by garbage collection.
    pub chunks_collected: std::sync::atomic::AtomicU64,
    /// Chunk references found dead (holder moved on) and tombstoned.
    pub refs_dead: std::sync::atomic::AtomicU64,
    /// Surplus chunks and records dropped after their owners confirmed their copies.
    pub surplus_dropped: std::sync::atomic::AtomicU64,
    /// Bytes re-read by scrubs.
    pub scrubbed_bytes: std::sync::atomic::AtomicU64,
    /// Corrupt chunk copies scrubs found (set aside, then restored from a replica).
    pub scrub_corrupt: std::sync::atomic::AtomicU64,
}

impl NodeCounters {
    /// (name, help, value) of every counter, for metrics.
    fn all(&self) -> [(&'static str, &'static str, u64); 25] {
        use std::sync::atomic::Ordering::Relaxed;
        [
            (
                "bad_inbound_requests",
                "Requests from peers that failed to decode or broke a limit",
                self.bad_inbound.load(Relaxed),
            ),
            (
                "chunk_id_mismatches",
                "Chunks refused because their bytes did not match their id",
                self.chunk_id_mismatch.load(Relaxed),
            ),
            (
                "swim_packets_dropped",
                "SWIM packets dropped on a full queue",
                self.swim_dropped.load(Relaxed),
            ),
            (
                "hints_stored",
                "Copies stored on behalf of a replica that was down",
                self.hints_stored.load(Relaxed),
            ),
            (
                "hints_handed_off",
                "Hinted copies handed back to their replica",
                self.hints_handed_off.load(Relaxed),
            ),
            (
                "record_read_repairs",
                "Stale or missing record copies rewritten by reads",
                self.record_read_repairs.load(Relaxed),
            ),
            (
                "chunk_read_repairs",
                "Missing or corrupt chunk copies rewritten by reads",
                self.chunk_read_repairs.load(Relaxed),
            ),
            (
                "corrupt_chunks_refused",
                "Chunk reads refused because the local copy failed verification",
                self.corrupt_chunks_refused.load(Relaxed),
            ),
            (
                "inbound_connection_failures",
                "Inbound connections that failed before being established",
                self.inbound_connection_failures.load(Relaxed),
            ),
            (
                "writes_acked",
                "Replicated writes coordinated here that reached the write quorum",
                self.writes_acked.load(Relaxed),
            ),
            (
                "writes_failed",
                "Replicated writes coordinated here that failed",
                self.writes_failed.load(Relaxed),
            ),
            (
                "swim_members_up_events",
                "Members SWIM reported up or rejoined",
                self.members_up_events.load(Relaxed),
            ),
            (
                "swim_members_down_events",
                "Members SWIM reported down",
                self.members_down_events.load(Relaxed),
            ),
            (
                "hedged_chunk_reads",
                "Chunk reads that also asked the next replica because one was slow",
                self.hedged_chunk_reads.load(Relaxed),
            ),
            (
                "hedged_record_reads",
                "Record reads that also asked one more replica because one was slow",
                self.hedged_record_reads.load(Relaxed),
            ),
            (
                "anti_entropy_sessions",
                "Anti-entropy comparisons of a partition with a peer",
                self.anti_entropy_sessions.load(Relaxed),
            ),
            (
                "anti_entropy_bytes",
                "Bytes of anti-entropy questions and answers",
                self.anti_entropy_bytes.load(Relaxed),
            ),
            (
                "anti_entropy_records_copied",
                "Records anti-entropy copied between replicas",
                self.anti_entropy_records_copied.load(Relaxed),
            ),
            (
                "maintenance_passes",
                "Maintenance passes run",
                self.maintenance_passes.load(Relaxed),
            ),
            (
                "chunks_fetched",
                "Referenced chunks fetched by maintenance",
                self.chunks_fetched.load(Relaxed),
            ),
            (
                "chunks_collected",
                "Unreferenced chunks deleted by garbage collection",
                self.chunks_collected.load(Relaxed),
            ),
            (
                "chunk_refs_dead",
                "Chunk references whose holder moved on, tombstoned",
                self.refs_dead.load(Relaxed),
            ),
            (
                "surplus_copies_dropped",
                "Surplus chunks and records dropped after the owners confirmed theirs",
                self.surplus_dropped.load(Relaxed),
            ),
            (
                "scrubbed_bytes",
                "Bytes re-read by scrubs",
                self.scrubbed_bytes.load(Relaxed),
            ),
            (
                "scrub_corrupt_chunks",
                "Corrupt chunk copies found by scrubs",
                self.scrub_corrupt.load(Relaxed),
            ),
        ]
    }
}

fn bump(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// A partition this node is filling (see `Inner::filling`).
#[derive(Debug)]
struct Filling {
    /// Its owners under the epoch before.
    old_owners: Vec<NodeId>,
    /// Those that completed an anti-entropy session with this node since.
    synced: Vec<NodeId>,
    /// How many must have: R (any R old owners include one holding each write acknowledged
    /// before the move), or all of them when there are fewer.
    needed: usize,
}

impl Filling {
    fn new(old_owners: Vec<NodeId>, read_quorum: usize) -> Filling {
        let needed = read_quorum.clamp(1, old_owners.len().max(1));
        Filling {
            old_owners,
            synced: Vec::new(),
            needed,
        }
    }

    fn unsynced(&self) -> Vec<NodeId> {
        self.old_owners
            .iter()
            .filter(|o| !self.synced.contains(o))
            .cloned()
            .collect()
    }

    /// Notes a completed session; whether the partition is now filled.
    fn synced_with(&mut self, old_owner: &NodeId) -> bool {
        if self.old_owners.contains(old_owner) && !self.synced.contains(old_owner) {
            self.synced.push(old_owner.clone());
        }
        self.synced.len() >= self.needed
    }
}

struct Inner {
    node_id: NodeId,
    /// Partitions this node became an owner of in a new epoch, with their owners under the
    /// epoch before: until anti-entropy sessions with R of those complete, this node's copy
    /// may be incomplete, and it marks its answers to reads of the partition `Filling`, so
    /// quorum reads do not count them and go on to the next node (the old owners follow the
    /// new ones).
    filling: Mutex<HashMap<u32, Filling>>,
    started: Instant,
    chunks: Arc<chunkstore::Store>,
    records: Arc<RecordStore>,
    hints: Arc<HintStore>,
    /// Serialises "store a hinted copy" against "drop a surplus copy" so a new hint cannot
    /// lose its data to a concurrent cleanup.
    hint_lock: tokio::sync::Mutex<()>,
    /// Wakes the handoff task (a member came back).
    handoff_nudge: Arc<tokio::sync::Notify>,
    maps: Mutex<MapStore>,
    view: RwLock<Option<Arc<(ClusterMap, Placement)>>>,
    timeouts: WriteTimeouts,
    cmd: mpsc::Sender<Command>,
    counters: NodeCounters,
    /// Members SWIM currently considers down.
    down: RwLock<HashSet<NodeId>>,
    /// Members SWIM currently considers up (excluding this node).
    up: RwLock<HashSet<NodeId>>,
    swim: swim::driver::SwimHandle,
    swim_in: mpsc::Sender<swim::driver::Incoming>,
    role: swim::Role,
    /// Hedge token bucket, in thousandths of a hedge.
    hedge_tokens_milli: std::sync::atomic::AtomicU64,
    /// Set on monitors: answers Raft frames and admin requests.
    monitor: std::sync::OnceLock<Arc<dyn MonitorService>>,
    /// Anti-entropy rounds started (picks each round's peer per partition).
    anti_entropy_rounds: std::sync::atomic::AtomicU64,
    /// Since when SWIM has reported each down member down.
    down_since: Mutex<HashMap<NodeId, Instant>>,
    /// Set when maintenance starts; defaults apply before.
    maintenance: std::sync::OnceLock<MaintenanceConfig>,
    /// One maintenance pass at a time.
    maintenance_running: tokio::sync::Mutex<()>,
    /// What the last pass did and left.
    maintenance_last: Mutex<Option<MaintenanceReport>>,
    /// Starts a pass at once (a scrub found bad copies).
    maintenance_nudge: Arc<tokio::sync::Notify>,
    /// Chunks seen unreferenced, and since when.
    unreferenced: Mutex<crate::storage::refs::Unreferenced>,
    /// Clock of the chunk references this node writes.
    ref_hlc: crate::storage::records::Hlc,
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

/// A node id received from a peer: must be a valid libp2p peer id.
fn parse_node_id(raw: &[u8]) -> Result<NodeId, RemoteError> {
    PeerId::from_bytes(raw)
        .map(|p| node_id(&p))
        .map_err(|_| err(ErrorCode::BadRequest, "hint names an invalid node id"))
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
        let hints = {
            let path = config.data_dir.join("hints.redb");
            Arc::new(tokio::task::spawn_blocking(move || HintStore::open(&path)).await??)
        };
        let maps = MapStore::open(config.data_dir.join("map.bin"), config.map_key.clone())?;
        let view = maps.current().map(|m| Arc::new((m.clone(), Placement::new(m))));

        let rr_config = request_response::Config::default()
            .with_request_timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .with_max_concurrent_streams(STREAMS_PER_CONNECTION_MAX);
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
            hints,
            hint_lock: tokio::sync::Mutex::new(()),
            handoff_nudge: Arc::new(tokio::sync::Notify::new()),
            maps: Mutex::new(maps),
            view: RwLock::new(view),
            timeouts: config.write_timeouts,
            cmd: cmd_tx,
            counters: NodeCounters::default(),
            down: RwLock::new(HashSet::new()),
            up: RwLock::new(HashSet::new()),
            swim: swim_handle,
            swim_in: swim_in_tx,
            role: config.role,
            hedge_tokens_milli: std::sync::atomic::AtomicU64::new(HEDGE_TOKENS_MAX_MILLI),
            filling: Mutex::new(HashMap::new()),
            monitor: std::sync::OnceLock::new(),
            anti_entropy_rounds: std::sync::atomic::AtomicU64::new(0),
            down_since: Mutex::new(HashMap::new()),
            maintenance: std::sync::OnceLock::new(),
            maintenance_running: tokio::sync::Mutex::new(()),
            maintenance_last: Mutex::new(None),
            maintenance_nudge: Arc::new(tokio::sync::Notify::new()),
            unreferenced: Mutex::new(crate::storage::refs::Unreferenced::default()),
            ref_hlc: crate::storage::records::Hlc::default(),
        });
        tokio::spawn(follow_membership(swim_events, Arc::downgrade(&inner)));
        tokio::spawn(handoff_loop(Arc::downgrade(&inner), inner.handoff_nudge.clone()));
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

    /// Serves `/health`, `/ready` and `/metrics` on `listen`.
    pub async fn serve_http(&self, listen: std::net::SocketAddr) -> std::io::Result<crate::observe::HttpEndpoint> {
        crate::observe::serve(listen, self.inner.clone()).await
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
        self.inner.clone().coordinate_record(record).await.map(|_| ())
    }

    /// `put_record` that also says whether a replica already held a newer version of the
    /// record (last-writer-wins kept that one: the write is acknowledged but not visible).
    /// A writer whose clock is behind learns so here and writes again with a later version.
    pub async fn put_record_checked(&self, record: Record) -> anyhow::Result<RecordWrite> {
        self.inner.clone().coordinate_record(record).await
    }

    /// Reads a record from R replicas; the newest version wins.
    pub async fn get_record(&self, partition: u32, key: &[u8]) -> anyhow::Result<Option<Record>> {
        self.inner.clone().get_record(partition, key.to_vec()).await
    }

    /// The replicas (first N of the preference list) of a chunk under the current map.
    pub fn chunk_replicas(&self, id: &ChunkId) -> Vec<PeerId> {
        self.inner.view().map_or_else(Vec::new, |v| {
            let partition = partition_of_chunk(v.0.partitions, &id.0);
            v.1.preference(partition)
                .take(usize::from(v.0.policy.replication))
                .filter_map(peer_of)
                .collect()
        })
    }

    /// The replicas (first N of the preference list) of a record partition.
    pub fn record_replicas(&self, partition: u32) -> Vec<PeerId> {
        self.inner.view().map_or_else(Vec::new, |v| {
            v.1.preference(partition)
                .take(usize::from(v.0.policy.replication))
                .filter_map(peer_of)
                .collect()
        })
    }

    /// Sends one raw metadata request to `peer`.
    pub async fn meta_request(&self, peer: PeerId, request: MetaRequest) -> anyhow::Result<MetaResponse> {
        self.inner
            .request_meta(&node_id(&peer), request)
            .await
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// The local record store (for checks).
    pub fn record_store(&self) -> &Arc<RecordStore> {
        &self.inner.records
    }

    /// Hints this node holds for replicas that were down.
    pub fn hints_held(&self) -> u64 {
        self.inner.hints.len()
    }

    /// Runs one handoff round now (the background task also runs them periodically).
    pub async fn hand_off_now(&self) {
        self.inner.clone().hand_off_round().await;
    }

    /// Scans a partition on R replicas and merges the pages (newest version per key, only
    /// as far as every replica's page reaches). Returns the records in key order, tombstones
    /// included, and whether the scan reached the end of the matching keys.
    pub async fn scan_records(
        &self,
        partition: u32,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> anyhow::Result<(Vec<Record>, bool)> {
        self.inner.clone().scan_records(partition, prefix, after, limit).await
    }

    /// Makes this node answer Raft and admin requests with `service` (monitors). Only the
    /// first call takes effect.
    pub fn set_monitor_service(&self, service: Arc<dyn MonitorService>) -> bool {
        self.inner.monitor.set(service).is_ok()
    }

    /// Queues a request for the network loop and waits for its answer.
    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> anyhow::Result<T> {
        self.inner.ask(command).await?.map_err(|e| anyhow::anyhow!(e))
    }

    /// Sends one Raft frame to `peer` and waits for its answer.
    pub async fn raft_request(&self, peer: PeerId, frame: RaftFrame) -> anyhow::Result<RaftFrame> {
        self.ask(|tx| Command::Raft(peer, frame, tx)).await
    }

    /// Sends one admin request to `peer` and waits for its answer.
    pub async fn admin_request(&self, peer: PeerId, request: AdminRequest) -> anyhow::Result<AdminResponse> {
        self.ask(|tx| Command::Admin(peer, request, tx)).await
    }

    /// Offers a signed map to `peer` (which adopts it if it verifies and is newer).
    pub async fn offer_map_to(&self, peer: PeerId, env: MapEnvelope) -> anyhow::Result<MapResponse> {
        self.ask(|tx| Command::Map(peer, MapRequest::Offer(env), tx)).await
    }

    /// The map this node holds.
    pub fn map(&self) -> Option<ClusterMap> {
        self.inner.view().map(|v| v.0.clone())
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

    /// Reserves `key` of `partition` for a create on a majority of its replicas (the
    /// gateway's race-safe `If-None-Match: *`): at most one creator holds a key at a time,
    /// and none while a replica of the majority stores a live record under it.
    pub async fn reserve_create(&self, partition: u32, key: &[u8]) -> Result<CreateLease, CreateRefusal> {
        self.inner.clone().reserve_create(partition, key.to_vec()).await
    }

    /// Drops a create reservation (best effort: an unreleased one expires).
    pub async fn release_create(&self, lease: CreateLease) {
        self.inner.clone().release_create(lease).await;
    }

    /// Compares every record partition this node replicates with one other live replica
    /// (round-robin over rounds) and copies what differs both ways. Returns the totals.
    pub async fn anti_entropy_round(&self) -> AntiEntropyReport {
        self.inner.clone().anti_entropy_round().await
    }

    /// Runs `anti_entropy_round` every `interval_ms` in the background (0: never), and right
    /// after this node adopts a new map epoch.
    pub fn start_anti_entropy(&self, interval_ms: u64) {
        if interval_ms > 0 {
            tokio::spawn(antientropy::anti_entropy_loop(Arc::downgrade(&self.inner), interval_ms));
        }
    }

    /// Serves an access key request here (what a remote `AdminRequest::Keys` gets).
    pub async fn key_request(&self, request: crate::access::KeyRequest) -> crate::access::KeyResponse {
        self.inner.clone().handle_keys(request).await
    }

    /// Reads one access key from R replicas (`None`: no such key, or deleted).
    pub async fn access_key(&self, id: &str) -> anyhow::Result<Option<crate::access::AccessKey>> {
        Ok(self.inner.read_key(id).await?.map(|(key, _)| key))
    }

    /// Starts maintenance (repair, re-replication, rebalancing, garbage collection) and
    /// scrubbing in the background, per `config`; also sets how long a node must be down
    /// before its partitions get another replica. Storage nodes run it; call it once.
    pub fn start_maintenance(&self, config: MaintenanceConfig) {
        if self.inner.maintenance.set(config).is_err() {
            tracing::warn!("maintenance already started");
            return;
        }
        if config.interval_ms > 0 {
            tokio::spawn(maintain::maintenance_loop(
                Arc::downgrade(&self.inner),
                config.interval_ms,
                self.inner.maintenance_nudge.clone(),
            ));
        }
        if config.scrub_interval_ms > 0 {
            tokio::spawn(maintain::scrub_loop(
                Arc::downgrade(&self.inner),
                config.scrub_interval_ms,
                config.scrub_rate_bytes_per_s,
            ));
        }
    }

    /// Runs one maintenance pass now (waits for a running one first).
    pub async fn maintenance_pass(&self) -> MaintenanceReport {
        self.inner.clone().maintenance_pass().await
    }

    /// What the last maintenance pass did and left (None before the first).
    pub fn maintenance_report(&self) -> Option<MaintenanceReport> {
        *self.inner.maintenance_last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Scrubs every chunk now at `rate_bytes_per_s` (0: unlimited); returns the bad copies
    /// it set aside (a maintenance pass then restores them).
    pub async fn scrub(&self, rate_bytes_per_s: u64) -> Vec<ChunkId> {
        self.inner.scrub_now(rate_bytes_per_s).await
    }

    /// The effective replicas of a partition (the first N of its preference list that are
    /// not down longer than the down-out time).
    pub fn effective_replicas(&self, partition: u32) -> Vec<PeerId> {
        self.inner.view().map_or_else(Vec::new, |v| {
            self.inner
                .effective_replicas(&v.0, &v.1, partition)
                .iter()
                .filter_map(peer_of)
                .collect()
        })
    }

    /// Records that `holder` lists `chunk` (a quorum write in the chunk's partition), so
    /// garbage collection keeps the chunk while the holder does. Write it before the holder.
    pub async fn put_chunk_ref(
        &self,
        chunk: &ChunkId,
        chunk_size_bytes: u32,
        holder: &crate::storage::refs::ChunkHolder,
    ) -> anyhow::Result<()> {
        let Some(view) = self.inner.view() else {
            anyhow::bail!("no cluster map yet");
        };
        let value = crate::storage::refs::ChunkRefValue::V1 {
            holder: holder.clone(),
            chunk_size_bytes,
        };
        let record = Record {
            partition: partition_of_chunk(view.0.partitions, &chunk.0),
            key: crate::storage::refs::ref_key(&chunk.0, holder),
            version: crate::storage::records::Version {
                hlc: self.inner.ref_hlc.now(reserve::wall_ms()),
                unique: rand::random(),
            },
            value: crate::storage::records::RecordValue::Data(value.encode()),
        };
        self.inner.clone().coordinate_record(record).await.map(|_| ())
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
        {
            // Two offers may race past the store; the view never goes back an epoch.
            let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
            if view.as_ref().is_none_or(|v| v.0.epoch <= epoch) {
                if let Some(old) = view.as_ref() {
                    self.note_filling(&old.1, &placement, usize::from(map.policy.read_quorum));
                }
                *view = Some(Arc::new((map, placement)));
            }
        }
        tracing::info!(epoch, "accepted cluster map");
        Ok(epoch)
    }

    /// Records the partitions this node owns under `new` but did not under `old` (with
    /// their old owners), as filling until `read_quorum` of those old owners synced with it.
    fn note_filling(&self, old: &Placement, new: &Placement, read_quorum: usize) {
        if old.partitions() != new.partitions() {
            return;
        }
        let mut filling = self.filling.lock().unwrap_or_else(|p| p.into_inner());
        for p in 0..new.partitions() {
            let owns_now = new.replicas(p).any(|n| *n == self.node_id);
            let owners_before: Vec<NodeId> = old.replicas(p).cloned().collect();
            if owns_now && !owners_before.contains(&self.node_id) && !owners_before.is_empty() {
                filling
                    .entry(p)
                    .or_insert_with(|| Filling::new(owners_before, read_quorum));
            } else if !owns_now {
                filling.remove(&p);
            }
        }
        if !filling.is_empty() {
            tracing::info!(partitions = filling.len(), "filling partitions newly owned");
        }
    }

    /// The old owners of a partition this node is still filling that have not synced with
    /// it yet.
    fn filling_from(&self, partition: u32) -> Option<Vec<NodeId>> {
        self.filling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&partition)
            .map(Filling::unsynced)
    }

    /// Whether reads of `partition` must skip this node (see `filling`).
    fn is_filling(&self, partition: u32) -> bool {
        self.filling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&partition)
    }

    /// An anti-entropy session with `old_owner`, an old owner of `partition`, completed:
    /// filled once R old owners have.
    fn filled(&self, partition: u32, old_owner: &NodeId) {
        let mut filling = self.filling.lock().unwrap_or_else(|p| p.into_inner());
        if filling.get_mut(&partition).is_some_and(|f| f.synced_with(old_owner)) {
            filling.remove(&partition);
            tracing::debug!(partition, "partition filled");
        }
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

    /// Queues a request for the network loop and waits for its answer.
    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> anyhow::Result<Result<T, String>> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(command(tx))
            .await
            .map_err(|_| anyhow::anyhow!("node stopped"))?;
        rx.await.map_err(|_| anyhow::anyhow!("node stopped"))
    }

    async fn pull_map(&self, peer: PeerId) -> anyhow::Result<u64> {
        match self.ask(|tx| Command::Map(peer, MapRequest::Get, tx)).await? {
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

    /// Stores a chunk; with `hint_for`, also records (durably, before returning) that the
    /// copy is held for that replica.
    async fn store_chunk_with_hint(
        &self,
        id: ChunkId,
        data: Arc<Vec<u8>>,
        hint_for: Option<NodeId>,
    ) -> Result<(), RemoteError> {
        let Some(target) = hint_for else {
            return self.store_chunk_locally(id, data).await;
        };
        let _guard = self.hint_lock.lock().await;
        self.store_chunk_locally(id, data).await?;
        self.add_hint(Hint {
            item: HintItem::Chunk(id.0),
            target,
        })
        .await
    }

    /// Writes records last-writer-wins; with `hint_for`, also records hints for them.
    async fn store_records_locally(
        &self,
        batch: Vec<Record>,
        hint_for: Option<NodeId>,
    ) -> Result<Vec<bool>, RemoteError> {
        let hints: Vec<Hint> = match &hint_for {
            Some(target) => batch
                .iter()
                .map(|r| Hint {
                    item: HintItem::Record {
                        partition: r.partition,
                        key: r.key.clone(),
                    },
                    target: target.clone(),
                })
                .collect(),
            None => Vec::new(),
        };
        let _guard = match hint_for {
            Some(_) => Some(self.hint_lock.lock().await),
            None => None,
        };
        let records = self.records.clone();
        let applied = match tokio::task::spawn_blocking(move || records.put(batch)).await {
            Ok(Ok(applied)) => applied,
            Ok(Err(e @ crate::storage::records::RecordError::Invalid(_))) => {
                return Err(err(ErrorCode::BadRequest, e.to_string()));
            }
            Ok(Err(e)) => return Err(err(ErrorCode::Internal, e.to_string())),
            Err(e) => return Err(err(ErrorCode::Internal, e.to_string())),
        };
        for hint in hints {
            self.add_hint(hint).await?;
        }
        Ok(applied)
    }

    async fn add_hint(&self, hint: Hint) -> Result<(), RemoteError> {
        let hints = self.hints.clone();
        match tokio::task::spawn_blocking(move || hints.add(&[hint])).await {
            Ok(Ok(())) => {
                bump(&self.counters.hints_stored);
                Ok(())
            }
            Ok(Err(e @ crate::storage::hints::HintError::Full(_))) => Err(err(ErrorCode::Full, e.to_string())),
            Ok(Err(e)) => Err(err(ErrorCode::Internal, e.to_string())),
            Err(e) => Err(err(ErrorCode::Internal, e.to_string())),
        }
    }

    /// One pass over the hints: every replica SWIM does not report down gets its copies
    /// back; a replica that fails one is skipped for the rest of the round.
    async fn hand_off_round(self: Arc<Self>) {
        let mut after: Option<Hint> = None;
        for _ in 0..HANDOFF_PAGES_PER_ROUND_MAX {
            let hints = self.hints.clone();
            let cursor = after.clone();
            let page = match tokio::task::spawn_blocking(move || {
                hints.list(cursor.as_ref(), crate::storage::hints::HINTS_PAGE_MAX)
            })
            .await
            {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "listing hints failed");
                    return;
                }
                Err(_) => return,
            };
            let Some(last) = page.last().cloned() else { return };
            let full_page = page.len() >= crate::storage::hints::HINTS_PAGE_MAX;
            after = Some(last);
            let mut by_target: std::collections::BTreeMap<NodeId, Vec<Hint>> = Default::default();
            for hint in page {
                if hint.target != self.node_id && self.is_alive(&hint.target) {
                    by_target.entry(hint.target.clone()).or_default().push(hint);
                }
            }
            for (target, hints) in by_target {
                let failed = std::sync::atomic::AtomicBool::new(false);
                futures::stream::iter(hints)
                    .for_each_concurrent(HANDOFF_IN_FLIGHT_MAX, |hint| {
                        let this = self.clone();
                        let failed = &failed;
                        async move {
                            if failed.load(std::sync::atomic::Ordering::Relaxed) {
                                return;
                            }
                            if !this.hand_off(&hint).await {
                                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    })
                    .await;
                if failed.into_inner() {
                    tracing::debug!(target_node = ?target, "handoff paused: the replica did not take a copy");
                }
            }
            if !full_page {
                return;
            }
        }
    }

    /// Hands one hinted copy to its replica. Returns false if the replica did not take it.
    async fn hand_off(&self, hint: &Hint) -> bool {
        let delivered = match &hint.item {
            HintItem::Chunk(id) => {
                let id = ChunkId(*id);
                let chunks = self.chunks.clone();
                match tokio::task::spawn_blocking(move || chunks.get(&id).map(|c| c.map(|c| c.to_vec()))).await {
                    Ok(Ok(Some(data))) => {
                        let req = ChunkRequest::Put {
                            id: id.0,
                            data,
                            coordinate: false,
                            hint_for: None,
                        };
                        match self.request_chunk(&hint.target, req).await {
                            Ok(ChunkResponse::Stored { .. }) => true,
                            _ => return false,
                        }
                    }
                    // The copy is gone (or corrupt): nothing to hand back; anti-entropy
                    // restores the replica from the others.
                    _ => {
                        tracing::warn!(%id, "hinted chunk no longer readable here; hint dropped");
                        false
                    }
                }
            }
            HintItem::Record { partition, key } => {
                let records = self.records.clone();
                let (p, k) = (*partition, key.clone());
                match tokio::task::spawn_blocking(move || records.get(p, &k)).await {
                    Ok(Ok(Some(record))) => {
                        let req = MetaRequest::Put {
                            records: vec![record],
                            hint_for: None,
                        };
                        match self.request_meta(&hint.target, req).await {
                            Ok(MetaResponse::Applied(_)) => true,
                            _ => return false,
                        }
                    }
                    _ => {
                        tracing::warn!(partition, "hinted record no longer readable here; hint dropped");
                        false
                    }
                }
            }
        };
        let _guard = self.hint_lock.lock().await;
        let hints = self.hints.clone();
        let h = hint.clone();
        if !matches!(tokio::task::spawn_blocking(move || hints.remove(&h)).await, Ok(Ok(()))) {
            return false;
        }
        if delivered {
            bump(&self.counters.hints_handed_off);
        }
        self.drop_if_surplus(&hint.item).await;
        true
    }

    /// Deletes this node's copy of `item` if no hint names it any more and this node is not
    /// one of its replicas under the current map. Called with `hint_lock` held.
    async fn drop_if_surplus(&self, item: &HintItem) {
        let Some(view) = self.view() else { return };
        let (map, placement) = &*view;
        let partition = match item {
            HintItem::Chunk(id) => partition_of_chunk(map.partitions, id),
            HintItem::Record { partition, .. } => *partition,
        };
        let replicas = usize::from(map.policy.replication);
        if placement
            .preference(partition)
            .take(replicas)
            .any(|n| *n == self.node_id)
        {
            return;
        }
        let hints = self.hints.clone();
        let it = item.clone();
        if !matches!(
            tokio::task::spawn_blocking(move || hints.holds_item(&it)).await,
            Ok(Ok(false))
        ) {
            return;
        }
        let (chunks, records, item) = (self.chunks.clone(), self.records.clone(), item.clone());
        let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
            match item {
                HintItem::Chunk(id) => chunks.delete(&ChunkId(id)).map(|_| ()).map_err(|e| e.to_string()),
                HintItem::Record { partition, key } => {
                    if let Some(r) = records.get(partition, &key).map_err(|e| e.to_string())? {
                        records
                            .remove_exact(partition, &key, r.version)
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                }
            }
        })
        .await;
        if !matches!(result, Ok(Ok(()))) {
            tracing::warn!(?result, "could not drop a surplus copy after handoff");
        }
    }

    /// Replicates one write through the coordinator; `send` performs one copy. Returns the
    /// outcome as soon as it is decided; after an ack the write goes on in the background
    /// until it settles (hinted fallbacks for replicas that fail late).
    async fn replicate<F, Fut>(
        self: &Arc<Self>,
        preference: Vec<NodeId>,
        (n, w): (usize, usize),
        counting: Counting,
        payload_size_bytes: u64,
        send: F,
    ) -> Outcome
    where
        F: Fn(NodeId, Option<NodeId>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        let (out_tx, out_rx) = oneshot::channel();
        let this = self.clone();
        if crate::net::fault::ack_before_replication() {
            // netsim's deliberately broken mode (see `net::fault`): acknowledged before any
            // copy exists, replicated later; lost if this node dies in between.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(crate::net::fault::BROKEN_REPLICATION_DELAY_MS)).await;
                let (tx, _rx) = oneshot::channel();
                this.drive_write(preference, (n, w), counting, payload_size_bytes, send, tx)
                    .await
            });
            return Outcome::Acked {
                durable_on: Vec::new(),
                hints: Vec::new(),
            };
        }
        tokio::spawn(async move {
            this.drive_write(preference, (n, w), counting, payload_size_bytes, send, out_tx)
                .await
        });
        out_rx.await.unwrap_or(Outcome::Failed {
            durable_acks: 0,
            needed: w,
            reason: crate::storage::replication::FailReason::Timeout,
        })
    }

    /// The coordinator's shell: runs sends, timers and answers until the write is finished.
    async fn drive_write<F, Fut>(
        self: Arc<Self>,
        preference: Vec<NodeId>,
        (n, w): (usize, usize),
        counting: Counting,
        payload_size_bytes: u64,
        send: F,
        out_tx: oneshot::Sender<Outcome>,
    ) where
        F: Fn(NodeId, Option<NodeId>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        let mut out_tx = Some(out_tx);
        let alive = |n: &NodeId| self.is_alive(n);
        let mut fx = Vec::new();
        let timeouts = self.timeouts.for_payload(payload_size_bytes);
        let mut coord = WriteCoordinator::start(self.now_ms(), &preference, n, w, counting, timeouts, &alive, &mut fx);
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
                    WriteEffect::Done(outcome) => {
                        if let Some(out) = out_tx.take() {
                            let _ = out.send(outcome);
                        }
                    }
                    WriteEffect::Settled => {}
                }
            }
            if coord.is_finished() {
                return;
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
            .replicate(
                preference,
                (n, w),
                Counting::AnyTarget,
                data.len() as u64,
                move |to, hint_for| {
                    let this = this.clone();
                    let data = data.clone();
                    let me = me.clone();
                    async move {
                        if to == me {
                            this.store_chunk_with_hint(id, data, hint_for).await.is_ok()
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
                },
            )
            .await;
        bump(match &outcome {
            Outcome::Acked { .. } => &self.counters.writes_acked,
            Outcome::Failed { .. } => &self.counters.writes_failed,
        });
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
        let replicas = usize::from(view.0.policy.replication);
        // Replicas found without a good copy: given the verified bytes once they are found.
        let mut lacking: Vec<NodeId> = Vec::new();
        let mut candidates: Vec<(usize, NodeId)> = view
            .1
            .preference(partition)
            .enumerate()
            .filter(|(_, n)| **n != self.node_id)
            .map(|(rank, n)| (rank, n.clone()))
            .collect();
        // Members SWIM reports down are asked last (stable: preference order otherwise).
        candidates.sort_by_key(|(_, n)| !self.is_alive(n));
        self.earn_hedge_token();
        let ask = |(rank, node): (usize, NodeId)| {
            let this = self.clone();
            async move {
                let answer = this.request_chunk(&node, ChunkRequest::Get { id: id.0 }).await;
                (rank, node, answer)
            }
        };
        // Hedged read: one replica at a time, but a replica that has not answered within
        // `HEDGED_READ_DELAY_MS` gets company from the next one; the first good copy wins.
        let mut next = 0;
        let mut asking = futures::stream::FuturesUnordered::new();
        if let Some(c) = candidates.first() {
            asking.push(ask(c.clone()));
            next = 1;
        }
        let hedge = tokio::time::sleep(Duration::from_millis(HEDGED_READ_DELAY_MS));
        tokio::pin!(hedge);
        loop {
            let (rank, node, answer) = tokio::select! {
                Some(done) = asking.next() => done,
                () = &mut hedge, if next < candidates.len() => {
                    if self.take_hedge_token() {
                        bump(&self.counters.hedged_chunk_reads);
                        asking.push(ask(candidates[next].clone()));
                        next += 1;
                    }
                    hedge.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(HEDGED_READ_DELAY_MS));
                    continue;
                }
                else => break,
            };
            let bytes = match answer {
                Ok(ChunkResponse::Data(bytes)) if ChunkId::of(&bytes) == id => Some(bytes),
                Ok(ChunkResponse::Data(_)) => {
                    // Never pass on bytes that do not match their id.
                    bump(&self.counters.chunk_id_mismatch);
                    tracing::error!(%id, peer = ?node, "peer sent a chunk that does not match its id");
                    if rank < replicas {
                        lacking.push(node.clone());
                    }
                    None
                }
                Ok(ChunkResponse::NotFound)
                | Ok(ChunkResponse::Error(RemoteError {
                    code: ErrorCode::Corrupt,
                    ..
                })) => {
                    if rank < replicas {
                        lacking.push(node.clone());
                    }
                    None
                }
                _ => None,
            };
            let Some(bytes) = bytes else {
                // No copy there: ask the next one at once.
                if next < candidates.len() {
                    asking.push(ask(candidates[next].clone()));
                    next += 1;
                }
                continue;
            };
            if corrupt_here {
                let repaired = self.store_chunk_locally(id, Arc::new(bytes.clone())).await;
                tracing::info!(%id, ok = repaired.is_ok(), "replaced a corrupt local copy from a replica");
            }
            if !lacking.is_empty() {
                let this = self.clone();
                let data = bytes.clone();
                tokio::spawn(async move { this.repair_chunk_replicas(id, data, lacking).await });
            }
            return Ok(Some(bytes));
        }
        Ok(None)
    }

    async fn repair_chunk_replicas(&self, id: ChunkId, data: Vec<u8>, replicas: Vec<NodeId>) {
        for node in replicas {
            let req = ChunkRequest::Put {
                id: id.0,
                data: data.clone(),
                coordinate: false,
                hint_for: None,
            };
            if matches!(self.request_chunk(&node, req).await, Ok(ChunkResponse::Stored { .. })) {
                bump(&self.counters.chunk_read_repairs);
                tracing::info!(%id, peer = ?node, "gave a replica the chunk it lacked");
            }
        }
    }

    async fn coordinate_record(self: Arc<Self>, record: Record) -> anyhow::Result<RecordWrite> {
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
        let payload_size_bytes = match &record.value {
            crate::storage::records::RecordValue::Data(d) => (d.len() + record.key.len()) as u64,
            crate::storage::records::RecordValue::Tombstone => record.key.len() as u64,
        };
        let record = Arc::new(record);
        // Set by any copy that was not applied because its target holds a newer version.
        let superseded = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen_newer = superseded.clone();
        let outcome = self
            .replicate(
                preference,
                (n, w),
                Counting::Replicas,
                payload_size_bytes,
                move |to, hint_for| {
                    let this = this.clone();
                    let record = record.clone();
                    let me = me.clone();
                    let seen_newer = seen_newer.clone();
                    async move {
                        let applied = if to == me {
                            this.store_records_locally(vec![(*record).clone()], hint_for).await.ok()
                        } else {
                            let req = MetaRequest::Put {
                                records: vec![(*record).clone()],
                                hint_for: hint_for.map(|h| h.0),
                            };
                            match this.request_meta(&to, req).await {
                                Ok(MetaResponse::Applied(applied)) => Some(applied),
                                _ => None,
                            }
                        };
                        if applied.as_ref().is_some_and(|a| a.contains(&false)) {
                            seen_newer.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        applied.is_some()
                    }
                },
            )
            .await;
        bump(match &outcome {
            Outcome::Acked { .. } => &self.counters.writes_acked,
            Outcome::Failed { .. } => &self.counters.writes_failed,
        });
        match outcome {
            Outcome::Acked { .. } if superseded.load(std::sync::atomic::Ordering::Relaxed) => {
                Ok(RecordWrite::Superseded)
            }
            Outcome::Acked { .. } => Ok(RecordWrite::Written),
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
        let (n, r) = (usize::from(map.policy.replication), usize::from(map.policy.read_quorum));
        let preference: Vec<NodeId> = placement.preference(partition).cloned().collect();
        let replicas: Vec<NodeId> = preference.iter().take(n).cloned().collect();
        let nodes = placement.node_count();
        let (answers, counted): (Vec<(NodeId, Option<Record>)>, usize) = self
            .quorum_read(preference, (n, r, nodes), |node: NodeId| {
                let this = self.clone();
                let key = key.clone();
                async move {
                    let answer = this.read_record_at(&node, partition, key).await;
                    (node, answer)
                }
            })
            .await;
        if counted < r {
            anyhow::bail!("read quorum not reached: {counted} of {r} replicas answered");
        }
        let newest = answers
            .iter()
            .filter_map(|(_, a)| a.as_ref())
            .max_by_key(|rec| rec.version)
            .cloned();
        if let Some(newest) = &newest {
            // Read repair: replicas that answered with an older version (or nothing) get the
            // newest, in the background. Only replicas: a fallback's copy would be surplus.
            for (node, answer) in answers {
                if replicas.contains(&node) && answer.is_none_or(|a| a.version < newest.version) {
                    let this = self.clone();
                    let record = newest.clone();
                    tokio::spawn(async move { this.repair_record(node, record).await });
                }
            }
        }
        Ok(newest)
    }

    /// Asks the first `r` nodes of `preference` in parallel (members SWIM reports down
    /// last; stable otherwise); each one that cannot answer, or whose answer does not count,
    /// brings in the next, and so does one still silent after `HEDGED_READ_DELAY_MS` (a
    /// partitioned or paused replica stalls rather than fails), while hedge tokens last.
    /// Returns every answer, and how many counted (at most `r`; how they count:
    /// `ReadTally`). `nodes` is the number of storage nodes in the map.
    async fn quorum_read<T, F, Fut>(
        &self,
        mut preference: Vec<NodeId>,
        (n, r, nodes): (usize, usize, usize),
        ask: F,
    ) -> (Vec<(NodeId, T)>, usize)
    where
        F: Fn(NodeId) -> Fut,
        Fut: std::future::Future<Output = (NodeId, Option<(T, bool)>)>,
    {
        let replicas: Vec<NodeId> = preference.iter().take(n).cloned().collect();
        preference.sort_by_key(|n| !self.is_alive(n));
        self.earn_hedge_token();
        let mut answers = Vec::new();
        let mut tally = ReadTally::default();
        let mut next = 0;
        let mut asking = futures::stream::FuturesUnordered::new();
        while next < preference.len() && asking.len() < r {
            asking.push(ask(preference[next].clone()));
            next += 1;
        }
        let hedge = tokio::time::sleep(Duration::from_millis(HEDGED_READ_DELAY_MS));
        tokio::pin!(hedge);
        loop {
            let (node, answer) = tokio::select! {
                Some(done) = asking.next() => done,
                () = &mut hedge, if next < preference.len() => {
                    if self.take_hedge_token() {
                        bump(&self.counters.hedged_record_reads);
                        asking.push(ask(preference[next].clone()));
                        next += 1;
                    }
                    hedge.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(HEDGED_READ_DELAY_MS));
                    continue;
                }
                else => break,
            };
            if let Some((a, filling)) = answer {
                let before = tally.counted(nodes, r);
                tally.answer(replicas.contains(&node), filling);
                answers.push((node, a));
                let counted = tally.counted(nodes, r);
                if counted >= r {
                    break;
                }
                if counted > before {
                    continue;
                }
            }
            if next < preference.len() {
                asking.push(ask(preference[next].clone()));
                next += 1;
            }
        }
        (answers, tally.counted(nodes, r))
    }

    fn earn_hedge_token(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let _ = self.hedge_tokens_milli.fetch_update(Relaxed, Relaxed, |t| {
            Some((t + HEDGE_TOKENS_PER_READ_MILLI).min(HEDGE_TOKENS_MAX_MILLI))
        });
    }

    fn take_hedge_token(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.hedge_tokens_milli
            .fetch_update(Relaxed, Relaxed, |t| t.checked_sub(1000))
            .is_ok()
    }

    /// One replica's copy of a record: `Some(None)` when it holds none, `None` when it
    /// could not answer.
    async fn read_record_at(&self, node: &NodeId, partition: u32, key: Vec<u8>) -> Option<(Option<Record>, bool)> {
        if *node == self.node_id {
            let filling = self.is_filling(partition);
            let records = self.records.clone();
            return tokio::task::spawn_blocking(move || records.get(partition, &key))
                .await
                .ok()?
                .ok()
                .map(|r| (r, filling));
        }
        match self.request_meta(node, MetaRequest::Get { partition, key }).await {
            Ok(MetaResponse::Record(rec)) => Some((rec, false)),
            Ok(MetaResponse::Filling(inner)) => match *inner {
                MetaResponse::Record(rec) => Some((rec, true)),
                _ => None,
            },
            _ => None,
        }
    }

    async fn scan_records(
        self: Arc<Self>,
        partition: u32,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> anyhow::Result<(Vec<Record>, bool)> {
        let Some(view) = self.view() else {
            anyhow::bail!("no cluster map yet");
        };
        let (n, r) = (
            usize::from(view.0.policy.replication),
            usize::from(view.0.policy.read_quorum),
        );
        let limit = limit.clamp(1, crate::storage::records::SCAN_RECORDS_MAX);
        let preference: Vec<NodeId> = view.1.preference(partition).cloned().collect();
        let (prefix, after) = (prefix.to_vec(), after.map(<[u8]>::to_vec));
        let nodes = view.1.node_count();
        let (pages, counted) = self
            .quorum_read(preference, (n, r, nodes), |node: NodeId| {
                let this = self.clone();
                let (prefix, after) = (prefix.clone(), after.clone());
                async move {
                    let page = if node == this.node_id {
                        let filling = this.is_filling(partition);
                        let records = this.records.clone();
                        match tokio::task::spawn_blocking(move || {
                            records.scan(partition, &prefix, after.as_deref(), limit)
                        })
                        .await
                        {
                            Ok(Ok(page)) => {
                                let complete = page.len() < limit;
                                Some(((page, complete), filling))
                            }
                            _ => None,
                        }
                    } else {
                        let req = MetaRequest::Scan {
                            partition,
                            prefix,
                            after,
                            limit: limit as u32,
                        };
                        match this.request_meta(&node, req).await {
                            Ok(MetaResponse::Records { records, complete }) => Some(((records, complete), false)),
                            Ok(MetaResponse::Filling(inner)) => match *inner {
                                MetaResponse::Records { records, complete } => Some(((records, complete), true)),
                                _ => None,
                            },
                            _ => None,
                        }
                    };
                    (node, page)
                }
            })
            .await;
        if counted < r {
            anyhow::bail!("read quorum not reached: {counted} of {r} replicas answered");
        }
        Ok(merge_scan_pages(pages.into_iter().map(|(_, page)| page).collect()))
    }

    async fn repair_record(&self, node: NodeId, record: Record) {
        let ok = if node == self.node_id {
            self.store_records_locally(vec![record], None).await.is_ok()
        } else {
            let req = MetaRequest::Put {
                records: vec![record],
                hint_for: None,
            };
            matches!(self.request_meta(&node, req).await, Ok(MetaResponse::Applied(_)))
        };
        if ok {
            bump(&self.counters.record_read_repairs);
        }
    }

    async fn handle_chunk(self: Arc<Self>, request: ChunkRequest) -> ChunkResponse {
        match request {
            ChunkRequest::Put {
                id,
                data,
                coordinate,
                hint_for,
            } => {
                let id = ChunkId(id);
                if ChunkId::of(&data) != id {
                    self.counters
                        .chunk_id_mismatch
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return ChunkResponse::Error(err(ErrorCode::BadRequest, "chunk bytes do not match their id"));
                }
                let hint_for = match hint_for.map(|h| parse_node_id(&h)).transpose() {
                    Ok(h) => h,
                    Err(e) => return ChunkResponse::Error(e),
                };
                if coordinate {
                    self.coordinate_chunk(id, Arc::new(data)).await
                } else {
                    match self.store_chunk_with_hint(id, Arc::new(data), hint_for).await {
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
                    Ok(Ok(None)) => ChunkResponse::NotFound,
                    Ok(Err(e)) if e.is_corruption() => {
                        bump(&self.counters.corrupt_chunks_refused);
                        tracing::error!(%id, error = %e, "local copy failed verification; not sent");
                        ChunkResponse::Error(err(ErrorCode::Corrupt, e.to_string()))
                    }
                    Ok(Err(e)) => ChunkResponse::Error(err(ErrorCode::Internal, e.to_string())),
                    Err(e) => ChunkResponse::Error(err(ErrorCode::Internal, e.to_string())),
                }
            }
            ChunkRequest::Has { ids } => {
                if ids.len() > HAS_IDS_MAX {
                    return ChunkResponse::Error(err(ErrorCode::BadRequest, "too many ids in one question"));
                }
                ChunkResponse::Have(ids.iter().map(|id| self.chunks.contains(&ChunkId(*id))).collect())
            }
        }
    }

    /// Answers a metadata request; reads of a partition this node is still filling are
    /// marked `Filling`.
    async fn handle_meta(self: Arc<Self>, request: MetaRequest) -> MetaResponse {
        let filling = match &request {
            MetaRequest::Get { partition, .. } | MetaRequest::Scan { partition, .. } => self.is_filling(*partition),
            _ => false,
        };
        let response = self.clone().answer_meta(request).await;
        match response {
            MetaResponse::Record(_) | MetaResponse::Records { .. } if filling => {
                MetaResponse::Filling(Box::new(response))
            }
            other => other,
        }
    }

    async fn answer_meta(self: Arc<Self>, request: MetaRequest) -> MetaResponse {
        match request {
            MetaRequest::Put { records, hint_for } => {
                let hint_for = match hint_for.map(|h| parse_node_id(&h)).transpose() {
                    Ok(h) => h,
                    Err(e) => return MetaResponse::Error(e),
                };
                match self.store_records_locally(records, hint_for).await {
                    Ok(applied) => MetaResponse::Applied(applied),
                    Err(e) => MetaResponse::Error(e),
                }
            }
            MetaRequest::Scan {
                partition,
                prefix,
                after,
                limit,
            } => {
                let records = self.records.clone();
                let limit = (limit as usize).min(crate::storage::records::SCAN_RECORDS_MAX);
                match tokio::task::spawn_blocking(move || records.scan(partition, &prefix, after.as_deref(), limit))
                    .await
                {
                    Ok(Ok(mut page)) => {
                        let mut complete = page.len() < limit;
                        let mut size_bytes = 0usize;
                        if let Some(cut) = page.iter().position(|r| {
                            size_bytes += r.key.len()
                                + 64
                                + match &r.value {
                                    crate::storage::records::RecordValue::Data(d) => d.len(),
                                    crate::storage::records::RecordValue::Tombstone => 0,
                                };
                            size_bytes > SCAN_RESPONSE_BYTES_MAX
                        }) {
                            page.truncate(cut.max(1));
                            complete = false;
                        }
                        MetaResponse::Records {
                            records: page,
                            complete,
                        }
                    }
                    Ok(Err(e)) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                    Err(e) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                }
            }
            MetaRequest::Get { partition, key } => {
                let records = self.records.clone();
                match tokio::task::spawn_blocking(move || records.get(partition, &key)).await {
                    Ok(Ok(record)) => MetaResponse::Record(record),
                    Ok(Err(e)) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                    Err(e) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                }
            }
            MetaRequest::Reserve {
                partition,
                key,
                token,
                ttl_ms,
            } => {
                let records = self.records.clone();
                let now = reserve::wall_ms();
                let expires = now + u64::from(ttl_ms.min(RESERVATION_TTL_MS_MAX));
                match tokio::task::spawn_blocking(move || records.reserve(partition, &key, token, now, expires)).await {
                    Ok(Ok(r)) => MetaResponse::Reservation(r),
                    Ok(Err(e)) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                    Err(e) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                }
            }
            MetaRequest::AntiEntropy { partition, ask } => {
                let records = self.records.clone();
                match tokio::task::spawn_blocking(move || antientropy::answer_from(&records, partition, &ask)).await {
                    Ok(answer) => MetaResponse::AntiEntropy(answer),
                    Err(e) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                }
            }
            MetaRequest::Release { partition, key, token } => {
                let records = self.records.clone();
                match tokio::task::spawn_blocking(move || records.release(partition, &key, token)).await {
                    Ok(Ok(released)) => MetaResponse::Applied(vec![released]),
                    Ok(Err(e)) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                    Err(e) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                }
            }
        }
    }
}

/// Pending outbound requests, by request id.
#[derive(Default)]
struct Pending {
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
                |i, _, r| handle_map(i, r),
                Command::RespondMap,
                redial
            )
        }
        SwarmEvent::Behaviour(BehaviourEvent::Raft(e)) => {
            route!(e, pending.raft, inner, handle_raft, Command::RespondRaft, redial)
        }
        SwarmEvent::Behaviour(BehaviourEvent::Admin(e)) => {
            route!(e, pending.admin, inner, handle_admin, Command::RespondAdmin, redial)
        }
        SwarmEvent::Behaviour(BehaviourEvent::Swim(e)) => handle_swim(swarm, inner, e),
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

/// Raft frames go to the monitor service; a node that is not a monitor answers an empty
/// frame, which the sender cannot decode (an error there, never a vote or an ack).
async fn handle_raft(inner: Arc<Inner>, peer: PeerId, frame: RaftFrame) -> RaftFrame {
    match inner.monitor.get() {
        Some(m) => m.raft(peer, frame).await,
        None => RaftFrame(Vec::new()),
    }
}

/// Admin requests go to the monitor service; other nodes point at the monitors they know.
async fn handle_admin(inner: Arc<Inner>, peer: PeerId, request: AdminRequest) -> AdminResponse {
    if let AdminRequest::Keys(request) = request {
        return AdminResponse::Keys(inner.handle_keys(request).await);
    }
    if let AdminRequest::Progress = request {
        return AdminResponse::Progress(*inner.maintenance_last.lock().unwrap_or_else(|p| p.into_inner()));
    }
    if let Some(m) = inner.monitor.get() {
        return m.admin(peer, request).await;
    }
    let monitors = inner.view().map_or_else(Vec::new, |v| {
        v.0.nodes
            .iter()
            .filter(|n| n.role == crate::cluster::Role::Monitor)
            .filter_map(|n| Some(format!("{}/p2p/{}", n.addrs.first()?, peer_of(&n.id)?)))
            .collect()
    });
    AdminResponse::NotMonitor { monitors }
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

/// Hands hinted copies back: every `HANDOFF_INTERVAL_MS`, and when a member comes back.
async fn handoff_loop(inner: std::sync::Weak<Inner>, nudge: Arc<tokio::sync::Notify>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(HANDOFF_INTERVAL_MS)) => {}
            () = nudge.notified() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        if !inner.hints.is_empty() {
            inner.hand_off_round().await;
        }
    }
}

impl crate::observe::Observable for Inner {
    fn ready(&self) -> bool {
        self.view().is_some()
    }

    fn health(&self) -> serde_json::Value {
        let read = |s: &RwLock<HashSet<NodeId>>| s.read().unwrap_or_else(|p| p.into_inner()).len();
        let peer = peer_of(&self.node_id).map(|p| p.to_string()).unwrap_or_default();
        serde_json::json!({
            "role": format!("{:?}", self.role).to_lowercase(),
            "peer_id": peer,
            "epoch": self.view().map_or(0, |v| v.0.epoch),
            "members_up": read(&self.up),
            "members_down": read(&self.down),
            "hints_held": self.hints.len(),
            "chunks": self.chunks.stats().chunks,
            "uptime_s": self.started.elapsed().as_secs(),
            "monitor": self.monitor.get().map(|m| m.health()),
            "maintenance": *self.maintenance_last.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }

    fn metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        use crate::observe::{counter, gauge};
        for (name, help, value) in self.counters.all() {
            counter(registry, name, help, value);
        }
        let read = |s: &RwLock<HashSet<NodeId>>| s.read().unwrap_or_else(|p| p.into_inner()).len() as i64;
        gauge(
            registry,
            "map_epoch",
            "Epoch of the cluster map this node holds",
            self.view().map_or(0, |v| v.0.epoch as i64),
        );
        gauge(registry, "swim_members_up", "Members SWIM considers up", read(&self.up));
        gauge(
            registry,
            "swim_members_down",
            "Members SWIM considers down",
            read(&self.down),
        );
        gauge(
            registry,
            "hints_held",
            "Copies held for replicas that were down",
            self.hints.len() as i64,
        );
        gauge(
            registry,
            "uptime_seconds",
            "Seconds since the node started",
            self.started.elapsed().as_secs() as i64,
        );
        if let Some(m) = self.monitor.get() {
            for (name, help, value) in m.gauges() {
                gauge(registry, name, help, value);
            }
        }
        let st = self.chunks.stats();
        gauge(registry, "chunkstore_chunks", "Chunks stored", st.chunks as i64);
        gauge(registry, "chunkstore_segments", "Segment files", st.segments as i64);
        gauge(
            registry,
            "chunkstore_disk_bytes",
            "Bytes of segment files on disk",
            st.disk_bytes as i64,
        );
        gauge(
            registry,
            "chunkstore_dead_bytes",
            "Bytes of superseded records awaiting compaction",
            st.dead_record_bytes as i64,
        );
        counter(registry, "chunkstore_puts", "Chunk puts", st.puts);
        counter(
            registry,
            "chunkstore_dedup_puts",
            "Chunk puts of chunks already stored",
            st.dedup_puts,
        );
        counter(registry, "chunkstore_gets", "Chunk gets", st.gets);
        counter(registry, "chunkstore_deletes", "Chunk deletes", st.deletes);
        counter(
            registry,
            "chunkstore_corruptions",
            "Chunk copies that failed verification",
            st.corruptions,
        );
        counter(
            registry,
            "chunkstore_group_commits",
            "Group commits (one fdatasync each)",
            st.group_commits,
        );
        counter(
            registry,
            "chunkstore_compactions",
            "Segment compactions",
            st.compactions,
        );
    }
}

/// Merges scan pages from several replicas: newest version per key, and only keys up to the
/// smallest last key of the pages that were cut short (past it, a replica's records are
/// unknown). Complete only if every page was.
pub fn merge_scan_pages(pages: Vec<(Vec<Record>, bool)>) -> (Vec<Record>, bool) {
    let bound: Option<Vec<u8>> = pages
        .iter()
        .filter(|(_, complete)| !complete)
        .filter_map(|(records, _)| records.last().map(|r| r.key.clone()))
        .min();
    let complete = pages.iter().all(|(_, c)| *c);
    let mut merged: std::collections::BTreeMap<Vec<u8>, Record> = std::collections::BTreeMap::new();
    for (records, _) in pages {
        for rec in records {
            if bound.as_ref().is_some_and(|b| rec.key > *b) {
                continue;
            }
            match merged.get(&rec.key) {
                Some(have) if have.version >= rec.version => {}
                _ => {
                    merged.insert(rec.key.clone(), rec);
                }
            }
        }
    }
    (merged.into_values().collect(), complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId(vec![b])
    }

    #[test]
    fn a_partition_is_filled_after_r_distinct_old_owners_synced() {
        let mut f = Filling::new(vec![id(1), id(2), id(3)], 2);
        assert_eq!(f.unsynced(), vec![id(1), id(2), id(3)]);
        assert!(!f.synced_with(&id(2)));
        assert!(!f.synced_with(&id(2)), "the same old owner twice is still one");
        assert!(!f.synced_with(&id(9)), "a node that was not an owner does not count");
        assert_eq!(f.unsynced(), vec![id(1), id(3)]);
        assert!(f.synced_with(&id(3)));

        // Fewer old owners than R: all of them.
        let mut f = Filling::new(vec![id(1)], 2);
        assert!(f.synced_with(&id(1)));
    }
}
