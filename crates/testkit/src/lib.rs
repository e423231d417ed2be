//! In-process HADSS clusters for tests and benchmarks: storage nodes and a gateway node (not
//! in the map: it coordinates as a client, as `hadss gateway` does) on 127.0.0.1 over the
//! real libp2p transport, with a signed map published to all of them. Ports come from the OS.
//! One kit, so the tests and `hadss-bench` build clusters the same way.
//!
//! What it does not do: monitors (the map is signed here, as an operator would with
//! `hadss admin make-map`), processes (see `netsim` for multi-process clusters).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hadss::cluster::{ClusterMap, MapEnvelope, NodeId, NodeInfo, NodeState, ReplicationPolicy, Role};
use hadss::config::SwimPreset;
use hadss::node::MaintenanceConfig;
use hadss::node::{Node, NodeConfig};
use libp2p::identity::ed25519;

/// How long `start` and `publish_map` wait for SWIM to see every node.
pub const MEMBERSHIP_WAIT_MS_MAX: u64 = 30_000;
/// Storage nodes one kit cluster holds at most.
pub const STORAGE_NODES_MAX: usize = 64;

/// How to build a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Storage nodes (1 to `STORAGE_NODES_MAX`).
    pub storage_nodes: usize,
    /// N, W, R.
    pub policy: ReplicationPolicy,
    /// Partitions of the map.
    pub partitions: u32,
    /// Chunk store options of every storage node.
    pub chunk_options: chunkstore::Options,
    /// SWIM timing.
    pub swim: SwimPreset,
    /// Zones: node `i` is in zone `z{i % zones}`.
    pub zones: usize,
    /// Anti-entropy interval of the storage nodes (`None`: off).
    pub anti_entropy_interval_ms: Option<u64>,
    /// Maintenance of the storage nodes (`None`: off).
    pub maintenance: Option<MaintenanceConfig>,
}

impl Default for ClusterOptions {
    /// Three storage nodes in three zones, N=3 W=2 R=2, 64 partitions, fast SWIM, no
    /// background repair.
    fn default() -> ClusterOptions {
        ClusterOptions {
            storage_nodes: 3,
            policy: ReplicationPolicy {
                replication: 3,
                write_quorum: 2,
                read_quorum: 2,
            },
            partitions: 64,
            chunk_options: chunkstore::Options::default(),
            swim: SwimPreset::Fast,
            zones: 3,
            anti_entropy_interval_ms: None,
            maintenance: None,
        }
    }
}

/// Memory budget of each test node's caches (many nodes share a test process).
const TEST_MEMORY_BUDGET_BYTES: u64 = 64 * 1024 * 1024;

/// A running in-process cluster. Dropping it stops every node (as a crash would, minus the
/// disk); the data stays under `dir`.
pub struct Cluster {
    dir: PathBuf,
    secret: [u8; 32],
    key: ed25519::Keypair,
    options: ClusterOptions,
    /// Storage nodes by index; `None` once stopped.
    nodes: Vec<Option<Arc<Node>>>,
    gateway: Arc<Node>,
    epoch: u64,
}

impl Cluster {
    /// Starts the storage nodes and a gateway node under `dir`, signs a map of the storage
    /// nodes and waits until SWIM sees every node.
    pub async fn start(dir: &Path, options: ClusterOptions) -> anyhow::Result<Cluster> {
        anyhow::ensure!(
            (1..=STORAGE_NODES_MAX).contains(&options.storage_nodes),
            "1 to {STORAGE_NODES_MAX} storage nodes"
        );
        let secret: [u8; 32] = rand::random();
        let key = ed25519::Keypair::generate();
        let gateway = Arc::new(
            Node::start(node_config(
                dir,
                "gateway",
                secret,
                &key,
                "gateway",
                swim::Role::Gateway,
                &options,
            ))
            .await
            .context("starting the gateway node")?,
        );
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            secret,
            key,
            options,
            nodes: Vec::new(),
            gateway,
            epoch: 0,
        };
        for i in 0..cluster.options.storage_nodes {
            let node = cluster.start_storage(i).await?;
            cluster.nodes.push(Some(node));
        }
        cluster.publish_map().await?;
        Ok(cluster)
    }

    /// The config of a node of this cluster named `name` (its data under `dir/name`).
    pub fn config(&self, name: &str, zone: &str, role: swim::Role) -> NodeConfig {
        node_config(&self.dir, name, self.secret, &self.key, zone, role, &self.options)
    }

    async fn start_storage(&self, i: usize) -> anyhow::Result<Arc<Node>> {
        let zone = format!("z{}", i % self.options.zones.max(1));
        let node = Arc::new(
            Node::start(self.config(&format!("storage-{i}"), &zone, swim::Role::Storage))
                .await
                .with_context(|| format!("starting storage node {i}"))?,
        );
        if let Some(ms) = self.options.anti_entropy_interval_ms {
            node.start_anti_entropy(ms);
        }
        if let Some(m) = self.options.maintenance {
            node.start_maintenance(m);
        }
        Ok(node)
    }

    /// Adds a storage node and publishes a map with it.
    pub async fn add_storage(&mut self) -> anyhow::Result<Arc<Node>> {
        let node = self.start_storage(self.nodes.len()).await?;
        self.nodes.push(Some(node.clone()));
        self.publish_map().await?;
        Ok(node)
    }

    /// Stops storage node `i` (its data stays; SWIM soon reports it down). The map still
    /// names it: only an operator's map change would remove it.
    pub fn stop(&mut self, i: usize) {
        if let Some(slot) = self.nodes.get_mut(i) {
            *slot = None;
        }
    }

    /// The running storage nodes.
    pub fn storage(&self) -> Vec<Arc<Node>> {
        self.nodes.iter().flatten().cloned().collect()
    }

    /// Storage node `i`, if running.
    pub fn storage_node(&self, i: usize) -> Option<Arc<Node>> {
        self.nodes.get(i).cloned().flatten()
    }

    /// The gateway node (not in the map).
    pub fn gateway(&self) -> &Arc<Node> {
        &self.gateway
    }

    /// The map's current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Signs a map naming every storage node ever started (stopped ones stay `In`) and
    /// offers it to every running node and the gateway; waits until SWIM on each storage
    /// node sees every other running node and the gateway.
    pub async fn publish_map(&mut self) -> anyhow::Result<()> {
        self.epoch += 1;
        let mut named: Vec<(usize, Arc<Node>)> = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(n) = n {
                named.push((i, n.clone()));
            }
        }
        let mut infos: Vec<NodeInfo> = named
            .iter()
            .map(|(i, n)| storage_info(n, &format!("z{}", i % self.options.zones.max(1))))
            .collect();
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        let map = ClusterMap {
            epoch: self.epoch,
            nodes: infos,
            policy: self.options.policy,
            partitions: self.options.partitions,
        };
        let env = MapEnvelope::sign(&map, &self.key)?;
        let live = self.storage();
        for n in live.iter().chain(std::iter::once(&self.gateway)) {
            n.offer_map(env.clone()).await?;
        }
        let want = live.len();
        for n in &live {
            wait_until(
                MEMBERSHIP_WAIT_MS_MAX,
                "SWIM sees every storage node and the gateway",
                || async { n.live_members().await.len() >= want },
            )
            .await?;
        }
        Ok(())
    }
}

/// A map entry for a storage node.
pub fn storage_info(node: &Node, zone: &str) -> NodeInfo {
    NodeInfo {
        id: NodeId(node.peer_id().to_bytes()),
        addrs: vec![node.listen_addr().to_string()],
        role: Role::Storage,
        zone: zone.to_string(),
        weight: 100,
        state: NodeState::In,
    }
}

/// A node config on 127.0.0.1 with an OS-picked port, data under `dir/name`.
pub fn node_config(
    dir: &Path,
    name: &str,
    secret: [u8; 32],
    key: &ed25519::Keypair,
    zone: &str,
    role: swim::Role,
    options: &ClusterOptions,
) -> NodeConfig {
    NodeConfig {
        data_dir: dir.join(name),
        listen: libp2p::Multiaddr::empty()
            .with(libp2p::multiaddr::Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST))
            .with(libp2p::multiaddr::Protocol::Tcp(0)),
        secret: libp2p::pnet::PreSharedKey::new(secret),
        map_key: key.public(),
        chunk_options: options.chunk_options.clone(),
        memory_budget_bytes: TEST_MEMORY_BUDGET_BYTES,
        write_timeouts: Default::default(),
        zone: zone.to_string(),
        swim: options.swim.config(options.storage_nodes as u32 + 1),
        role,
        clock: hadss::clock::Clock::system(),
        faults: hadss::net::fault::Faults::off(),
    }
}

/// Polls `cond` every 50 ms until it holds or `limit_ms` passed.
pub async fn wait_until<F, Fut>(limit_ms: u64, what: &str, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_millis(limit_ms);
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("timed out after {limit_ms} ms waiting for: {what}")
}
