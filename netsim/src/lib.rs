//! `netsim`: starts real multi-process HADSS clusters on 127.0.0.1 and stops them.
//!
//! `up` creates the cluster's keys, writes one config per node with a fixed port (so a node
//! restarted with its recorded `cmd` comes back at the address the map names), starts the
//! processes in their own process groups (they outlive `netsim`), waits for each to report
//! its identity, builds and signs the first map, hands it to one node, waits until every node
//! holds it, and writes `DIR/cluster.json` (documented in `docs/NETSIM.md`). `down` stops
//! the processes listed there (SIGTERM, then SIGKILL after a grace period).
//!
//! `fault` injects faults into such a cluster, `workload` drives S3 clients against it,
//! `check` judges the recorded history, `scenario` puts them together (`netsim run`), and
//! `sim` runs the sans-IO protocol cores deterministically (`netsim sim`).

pub mod body;
pub mod check;
pub mod fault;
pub mod s3;
pub mod scenario;
pub mod sim;
pub mod workload;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hadss::cluster::{ClusterMap, MapEnvelope, NodeId, NodeInfo, NodeState, ReplicationPolicy, Role};
use hadss::node::protocol::{MapRequest, MapResponse};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// How long `up` waits for a node to report itself.
pub const NODE_START_TIMEOUT_MS: u64 = 30_000;
/// How long `up` waits for the first map to reach every node.
pub const MAP_SPREAD_TIMEOUT_MS: u64 = 30_000;
/// How long `down` waits after SIGTERM before SIGKILL.
pub const STOP_GRACE_MS: u64 = 10_000;

/// What to start.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Directory for everything (keys, node data, logs, `cluster.json`).
    pub dir: PathBuf,
    /// Storage nodes.
    pub storage: usize,
    /// Zones the storage nodes are spread over (round robin).
    pub zones: usize,
    /// The `hadss` binary.
    pub hadss: PathBuf,
    /// Partitions of the map.
    pub partitions: u32,
    /// S3 gateways (each a `hadss gateway` process).
    pub gateways: usize,
    /// Monitor processes (0: netsim signs the first map itself, as before monitors existed).
    pub monitors: usize,
    /// With monitors: admit storage nodes that ask to join without an operator.
    pub auto_admit: bool,
    /// Give every node a fault file (`NODE_DIR/faults.json`) for `fault` to drive.
    pub faults: bool,
    /// TOML lines added to every storage node's config (e.g. shorter maintenance intervals).
    pub storage_config_extra: String,
}

impl UpOptions {
    /// Defaults for a cluster in `dir` run by `hadss`: 5 storage nodes in 3 zones, no
    /// monitors or gateways, 256 partitions, auto-admit, no fault files.
    pub fn new(dir: PathBuf, hadss: PathBuf) -> UpOptions {
        UpOptions {
            dir,
            storage: 5,
            zones: 3,
            hadss,
            partitions: 256,
            gateways: 0,
            monitors: 0,
            auto_admit: true,
            faults: false,
            storage_config_extra: String::new(),
        }
    }

    fn fault_line(&self, node_dir: &Path) -> String {
        if self.faults {
            format!("fault_file = \"{}\"\n", node_dir.join("faults.json").display())
        } else {
            String::new()
        }
    }
}

/// Region the gateways report.
pub const REGION: &str = "us-east-1";

/// `DIR/cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterFile {
    /// The S3 endpoint (null until gateways exist).
    pub s3: Option<S3Endpoint>,
    /// The cluster secret file.
    pub cluster_secret_file: PathBuf,
    /// The map-signing key and its public half.
    pub map_key_file: PathBuf,
    /// The public key nodes verify maps with.
    pub map_public_key_file: PathBuf,
    /// Every node.
    pub nodes: Vec<NodeEntry>,
}

/// How S3 clients reach the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct S3Endpoint {
    /// `http://127.0.0.1:P`.
    pub endpoint: String,
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
    /// Region.
    pub region: String,
}

/// One node of `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeEntry {
    /// `storage-1`, …
    pub name: String,
    /// `monitor`, `storage` or `gateway`.
    pub role: String,
    /// Process id.
    pub pid: u32,
    /// The command that (re)starts this node exactly as it was, run from `cwd`.
    pub cmd: Vec<String>,
    /// Working directory for `cmd`.
    pub cwd: PathBuf,
    /// Data directory.
    pub data_dir: PathBuf,
    /// libp2p address with `/p2p/<peer id>`.
    pub p2p_addr: String,
    /// The node's peer id.
    pub peer_id: String,
    /// S3 endpoint (gateways only).
    pub s3_endpoint: Option<String>,
    /// `/health`, `/ready` and `/metrics` of the node (`http://127.0.0.1:P`).
    #[serde(default)]
    pub http_endpoint: Option<String>,
}

#[derive(Deserialize)]
struct NodeFile {
    peer_id: String,
}

/// Lowest port `free_port` hands out.
const PORT_MIN: u16 = 10_000;

/// A port free on 127.0.0.1 now, below the kernel's ephemeral range: a port the kernel
/// picked for `bind(0)` can be taken by any outgoing connection before the node binds it
/// (nodes dial from fresh ports all the time), one below the range cannot. Never the same
/// port twice in one process.
fn free_port() -> anyhow::Result<u16> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let ephemeral_min = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_min <= PORT_MIN + 1000 {
        return Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    }
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1000 {
        let port = rand::random_range(PORT_MIN..ephemeral_min);
        if !handed.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return Ok(port);
        }
    }
    bail!("no free port found below {ephemeral_min}")
}

/// Starts a node process from its command line, detached in its own process group, with
/// its output appended to `log`.
pub fn spawn_node(cmd: &[String], cwd: &Path, log: &Path) -> anyhow::Result<u32> {
    let (program, args) = cmd.split_first().context("empty command")?;
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    Ok(child.id())
}

/// Starts `hadss ROLE --config CONFIG` from `dir` with its log in `node_dir`; returns the
/// command (what `cluster.json` records to restart it) and the pid.
fn launch(hadss: &Path, role: &str, config: &Path, dir: &Path, node_dir: &Path) -> anyhow::Result<(Vec<String>, u32)> {
    let cmd = vec![
        hadss.display().to_string(),
        role.into(),
        "--config".into(),
        config.display().to_string(),
    ];
    let pid = spawn_node(&cmd, dir, &node_dir.join("log"))?;
    Ok((cmd, pid))
}

/// Starts a cluster and writes `cluster.json`.
pub async fn up(opts: &UpOptions) -> anyhow::Result<ClusterFile> {
    if opts.storage == 0 {
        bail!("at least one storage node is needed");
    }
    let dir = std::path::absolute(&opts.dir)?;
    let hadss = std::path::absolute(&opts.hadss)?;
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    if !keys.join("cluster.secret").exists() {
        hadss::net::identity::create_cluster_secret(&keys.join("cluster.secret"))?;
        hadss::cluster::keys::create_map_keypair(&keys)?;
    }
    let mut nodes = Vec::new();
    if opts.monitors > 0 {
        nodes.extend(start_monitors(&dir, &hadss, opts)?);
    }
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.p2p_addr.clone()).collect();
    let mut started = Vec::new();
    for i in 1..=opts.storage {
        started.push(start_storage(&dir, &hadss, opts, i, &bootstrap)?);
    }
    for n in &mut started {
        wait_identity(n).await?;
    }
    nodes.extend(started);
    let cluster = ClusterFile {
        s3: None,
        cluster_secret_file: keys.join("cluster.secret"),
        map_key_file: keys.join("map.key"),
        map_public_key_file: keys.join("map.pub"),
        nodes,
    };
    write_cluster_file(&dir, &cluster)?;
    if opts.monitors > 0 {
        if opts.auto_admit {
            wait_for_members(&cluster, opts.storage).await?;
        }
    } else {
        install_map(&cluster, 1, opts.partitions).await?;
    }
    let mut cluster = cluster;
    if opts.gateways > 0 {
        start_gateways(&mut cluster, &dir, &hadss, opts)?;
        for n in cluster.nodes.iter_mut().filter(|n| n.role == "gateway") {
            wait_identity(n).await?;
        }
        write_cluster_file(&dir, &cluster)?;
    }
    wait_ready(&cluster).await?;
    Ok(cluster)
}

/// Writes the config of storage node `i` and starts it (its peer id is not known yet: see
/// `wait_identity`).
fn start_storage(
    dir: &Path,
    hadss: &Path,
    opts: &UpOptions,
    i: usize,
    bootstrap: &[String],
) -> anyhow::Result<NodeEntry> {
    let keys = dir.join("keys");
    let name = format!("storage-{i}");
    let node_dir = dir.join(&name);
    std::fs::create_dir_all(&node_dir)?;
    let port = free_port()?;
    let http_port = free_port()?;
    let config = node_dir.join("config.toml");
    let bootstrap: Vec<String> = bootstrap.iter().map(|a| format!("\"{a}\"")).collect();
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\nlisten = \"/ip4/127.0.0.1/tcp/{port}\"\nhttp_listen = \"127.0.0.1:{http_port}\"\ncluster_secret_file = \"{}\"\nmap_public_key_file = \"{}\"\nzone = \"zone-{}\"\nswim_preset = \"fast\"\nbootstrap = [{}]\n{}{}",
            keys.join("cluster.secret").display(),
            keys.join("map.pub").display(),
            (i - 1) % opts.zones.max(1) + 1,
            bootstrap.join(", "),
            opts.fault_line(&node_dir),
            opts.storage_config_extra,
        ),
    )?;
    let (cmd, pid) = launch(hadss, "storage", &config, dir, &node_dir)?;
    Ok(NodeEntry {
        name,
        role: "storage".into(),
        pid,
        cmd,
        cwd: dir.to_path_buf(),
        data_dir: node_dir.join("data"),
        p2p_addr: format!("/ip4/127.0.0.1/tcp/{port}"),
        peer_id: String::new(),
        s3_endpoint: None,
        http_endpoint: Some(format!("http://127.0.0.1:{http_port}")),
    })
}

/// Waits until a started storage node or gateway has written `data/node.json` (its
/// identity, once it serves) and completes its entry with its peer id.
async fn wait_identity(n: &mut NodeEntry) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(NODE_START_TIMEOUT_MS);
    let file = n.data_dir.join("node.json");
    loop {
        if let Ok(bytes) = std::fs::read(&file)
            && let Ok(info) = serde_json::from_slice::<NodeFile>(&bytes)
        {
            n.peer_id = info.peer_id;
            n.p2p_addr = format!("{}/p2p/{}", n.p2p_addr, n.peer_id);
            return Ok(());
        }
        if !is_running(n.pid) || Instant::now() > deadline {
            bail!(
                "{} did not start; see {}",
                n.name,
                n.data_dir.with_file_name("log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Adds `count` storage nodes to a running cluster with monitors (they ask to join; with
/// auto-admit the monitors publish a new epoch naming them), records them in
/// `DIR/cluster.json` and waits until every storage node holds a map naming all of them.
pub async fn add_storage(cluster: &mut ClusterFile, opts: &UpOptions, count: usize) -> anyhow::Result<Vec<String>> {
    let dir = std::path::absolute(&opts.dir)?;
    let hadss = std::path::absolute(&opts.hadss)?;
    let bootstrap: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.role == "monitor")
        .map(|n| n.p2p_addr.clone())
        .collect();
    if bootstrap.is_empty() {
        bail!("adding storage nodes needs monitors");
    }
    let first = cluster.nodes.iter().filter(|n| n.role == "storage").count() + 1;
    let mut names = Vec::new();
    for i in first..first + count {
        let mut n = start_storage(&dir, &hadss, opts, i, &bootstrap)?;
        wait_identity(&mut n).await?;
        names.push(n.name.clone());
        // Storage nodes stay together in `nodes`, before the gateways.
        let at = cluster
            .nodes
            .iter()
            .rposition(|m| m.role == "storage")
            .map_or(cluster.nodes.len(), |p| p + 1);
        cluster.nodes.insert(at, n);
    }
    write_cluster_file(&dir, cluster)?;
    let storage = cluster.nodes.iter().filter(|n| n.role == "storage").count();
    wait_for_members(cluster, storage).await?;
    for n in cluster.nodes.iter().filter(|n| names.contains(&n.name)) {
        fault::wait_node_ready(n).await?;
    }
    Ok(names)
}

/// Starts the monitors. Their node keys are made first so every monitor's config can list
/// all of them in `initial_monitors` (each forms the quorum from the same list).
fn start_monitors(dir: &Path, hadss: &Path, opts: &UpOptions) -> anyhow::Result<Vec<NodeEntry>> {
    let keys = dir.join("keys");
    let mut planned = Vec::new();
    for i in 1..=opts.monitors {
        let name = format!("monitor-{i}");
        let node_dir = dir.join(&name);
        let data_dir = node_dir.join("data");
        std::fs::create_dir_all(&data_dir)?;
        let key = hadss::net::identity::load_or_create_keypair(&data_dir.join("node.key"))?;
        let peer = key.public().to_peer_id();
        let (port, http_port) = (free_port()?, free_port()?);
        planned.push((name, node_dir, data_dir, peer, port, http_port));
    }
    let initial: Vec<String> = planned
        .iter()
        .map(|(_, _, _, peer, port, _)| format!("\"/ip4/127.0.0.1/tcp/{port}/p2p/{peer}\""))
        .collect();
    let replication = opts.storage.clamp(1, 3);
    let quorum = replication / 2 + 1;
    let mut nodes = Vec::new();
    for (name, node_dir, data_dir, peer, port, http_port) in planned {
        let config = node_dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"data\"\nlisten = \"/ip4/127.0.0.1/tcp/{port}\"\nhttp_listen = \"127.0.0.1:{http_port}\"\ncluster_secret_file = \"{}\"\nmap_key_file = \"{}\"\nzone = \"monitors\"\nswim_preset = \"fast\"\ninitial_monitors = [{}]\nauto_admit = {}\nreplication = {replication}\nwrite_quorum = {quorum}\nread_quorum = {quorum}\npartitions = {}\nraft_heartbeat_ms = 100\nraft_election_timeout_ms = 600\n{}",
                keys.join("cluster.secret").display(),
                keys.join("map.key").display(),
                initial.join(", "),
                opts.auto_admit,
                opts.partitions,
                opts.fault_line(&node_dir),
            ),
        )?;
        let (cmd, pid) = launch(hadss, "monitor", &config, dir, &node_dir)?;
        nodes.push(NodeEntry {
            name,
            role: "monitor".into(),
            pid,
            cmd,
            cwd: dir.to_path_buf(),
            data_dir,
            p2p_addr: format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}"),
            peer_id: peer.to_string(),
            s3_endpoint: None,
            http_endpoint: Some(format!("http://127.0.0.1:{http_port}")),
        });
    }
    Ok(nodes)
}

/// The monitors' addresses (`/ip4/…/p2p/<id>`).
pub fn monitor_addrs(cluster: &ClusterFile) -> Vec<Multiaddr> {
    cluster
        .nodes
        .iter()
        .filter(|n| n.role == "monitor")
        .filter_map(|n| n.p2p_addr.parse().ok())
        .collect()
}

/// The map a node holds, verified with the cluster's public key.
pub async fn map_of(cluster: &ClusterFile, node: &NodeEntry) -> anyhow::Result<Option<ClusterMap>> {
    let key = hadss::cluster::keys::load_map_public_key(&cluster.map_public_key_file)?;
    let secret = hadss::net::identity::load_cluster_secret(&cluster.cluster_secret_file)?;
    let addr: Multiaddr = node.p2p_addr.parse()?;
    match hadss::node::client::map_request(secret, &addr, MapRequest::Get).await? {
        MapResponse::Map(Some(env)) => Ok(Some(env.open(&key)?)),
        MapResponse::Map(None) => Ok(None),
        other => bail!("unexpected answer from {}: {other:?}", node.name),
    }
}

/// Waits until every storage node holds a map naming `storage` storage nodes (they ask the
/// monitors to admit them at start).
pub async fn wait_for_members(cluster: &ClusterFile, storage: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(MAP_SPREAD_TIMEOUT_MS);
    for n in cluster.nodes.iter().filter(|n| n.role == "storage") {
        loop {
            if let Ok(Some(map)) = map_of(cluster, n).await
                && map.nodes.iter().filter(|m| m.role == Role::Storage).count() >= storage
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} did not receive a map with all {storage} storage nodes", n.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Starts `opts.gateways` gateways bootstrapping from the monitors and storage nodes; the
/// first one's endpoint and the shared access key go into `cluster.s3`.
fn start_gateways(cluster: &mut ClusterFile, dir: &Path, hadss: &Path, opts: &UpOptions) -> anyhow::Result<()> {
    let count = opts.gateways;
    let keys = dir.join("keys");
    let (access_path, secret_path) = (keys.join("s3.access"), keys.join("s3.secret"));
    if !secret_path.exists() {
        let token = |n: usize| -> String {
            let bytes: [u8; 32] = rand::random();
            bytes
                .iter()
                .take(n)
                .map(|b| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[usize::from(*b % 32)]))
                .collect()
        };
        hadss::fsutil::write_durably(&access_path, format!("NETSIM{}", token(14)).as_bytes(), 0o600)?;
        hadss::fsutil::write_durably(&secret_path, token(32).as_bytes(), 0o600)?;
    }
    let access_key = std::fs::read_to_string(&access_path)?.trim().to_string();
    let secret_key = std::fs::read_to_string(&secret_path)?.trim().to_string();
    let bootstrap: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.role == "monitor")
        .chain(cluster.nodes.iter().filter(|n| n.role == "storage").take(3))
        .map(|n| format!("\"{}\"", n.p2p_addr))
        .collect();
    for i in 1..=count {
        let name = format!("gateway-{i}");
        let node_dir = dir.join(&name);
        std::fs::create_dir_all(&node_dir)?;
        let (port, s3_port, http_port) = (free_port()?, free_port()?, free_port()?);
        let config = node_dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"data\"\nlisten = \"/ip4/127.0.0.1/tcp/{port}\"\ns3_listen = \"127.0.0.1:{s3_port}\"\nhttp_listen = \"127.0.0.1:{http_port}\"\ncluster_secret_file = \"{}\"\nmap_public_key_file = \"{}\"\nbootstrap = [{}]\nregion = \"{REGION}\"\naccess_key = \"{access_key}\"\nsecret_key_file = \"{}\"\n{}",
                keys.join("cluster.secret").display(),
                keys.join("map.pub").display(),
                bootstrap.join(", "),
                secret_path.display(),
                opts.fault_line(&node_dir),
            ),
        )?;
        let (cmd, pid) = launch(hadss, "gateway", &config, dir, &node_dir)?;
        let endpoint = format!("http://127.0.0.1:{s3_port}");
        if cluster.s3.is_none() {
            cluster.s3 = Some(S3Endpoint {
                endpoint: endpoint.clone(),
                access_key: access_key.clone(),
                secret_key: secret_key.clone(),
                region: REGION.into(),
            });
        }
        cluster.nodes.push(NodeEntry {
            name,
            role: "gateway".into(),
            pid,
            cmd,
            cwd: dir.to_path_buf(),
            data_dir: node_dir.join("data"),
            p2p_addr: format!("/ip4/127.0.0.1/tcp/{port}"),
            peer_id: String::new(),
            s3_endpoint: Some(endpoint),
            http_endpoint: Some(format!("http://127.0.0.1:{http_port}")),
        });
    }
    Ok(())
}

/// The `host:port` of a node's HTTP endpoint.
pub fn http_addr(node: &NodeEntry) -> anyhow::Result<std::net::SocketAddr> {
    let url = node.http_endpoint.as_deref().context("node has no HTTP endpoint")?;
    Ok(url.trim_start_matches("http://").parse()?)
}

/// Waits until every node's `/ready` answers 200.
pub async fn wait_ready(cluster: &ClusterFile) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(NODE_START_TIMEOUT_MS);
    for n in cluster.nodes.iter().filter(|n| n.http_endpoint.is_some()) {
        let addr = http_addr(n)?;
        loop {
            if let Ok((200, _)) = hadss::observe::get(addr, "/ready", 2_000).await {
                break;
            }
            if !is_running(n.pid) {
                bail!(
                    "{} exited before it was ready; see {}",
                    n.name,
                    n.data_dir.with_file_name("log").display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} is not ready; see {}",
                    n.name,
                    n.data_dir.with_file_name("log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Builds, signs and installs map `epoch` naming every storage node, then waits until each
/// holds it.
pub async fn install_map(cluster: &ClusterFile, epoch: u64, partitions: u32) -> anyhow::Result<()> {
    let key = hadss::cluster::keys::load_map_keypair(&cluster.map_key_file)?;
    let secret = hadss::net::identity::load_cluster_secret(&cluster.cluster_secret_file)?;
    let storage: Vec<&NodeEntry> = cluster.nodes.iter().filter(|n| n.role == "storage").collect();
    let mut infos = Vec::new();
    for (i, n) in storage.iter().enumerate() {
        let peer: PeerId = n.peer_id.parse()?;
        let addr: Multiaddr = n.p2p_addr.parse()?;
        let dial = hadss::node::client::split_peer_addr(&addr).map_or(addr, |(_, d)| d);
        infos.push(NodeInfo {
            id: NodeId(peer.to_bytes()),
            addrs: vec![dial.to_string()],
            role: Role::Storage,
            zone: format!("zone-{}", i % 3 + 1),
            weight: 100,
            state: NodeState::In,
        });
    }
    infos.sort_by(|a, b| a.id.cmp(&b.id));
    let replication = storage.len().min(3) as u8;
    let quorum = replication / 2 + 1;
    let map = ClusterMap {
        epoch,
        nodes: infos,
        policy: ReplicationPolicy {
            replication,
            write_quorum: quorum,
            read_quorum: quorum,
        },
        partitions,
    };
    let env = MapEnvelope::sign(&map, &key)?;
    let first: Multiaddr = storage[0].p2p_addr.parse()?;
    match hadss::node::client::map_request(secret, &first, MapRequest::Offer(env)).await? {
        MapResponse::Accepted(_) => {}
        other => bail!("{} refused the map: {other:?}", storage[0].name),
    }
    let deadline = Instant::now() + Duration::from_millis(MAP_SPREAD_TIMEOUT_MS);
    for n in &storage {
        let addr: Multiaddr = n.p2p_addr.parse()?;
        loop {
            if let Ok(MapResponse::Map(Some(env))) =
                hadss::node::client::map_request(secret, &addr, MapRequest::Get).await
                && env.open(&key.public()).is_ok_and(|m| m.epoch >= epoch)
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} did not receive map epoch {epoch}", n.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Writes `DIR/cluster.json` atomically.
pub fn write_cluster_file(dir: &Path, cluster: &ClusterFile) -> anyhow::Result<()> {
    hadss::fsutil::write_durably(&dir.join("cluster.json"), &serde_json::to_vec_pretty(cluster)?, 0o644)?;
    Ok(())
}

/// Reads `DIR/cluster.json`.
pub fn read_cluster_file(dir: &Path) -> anyhow::Result<ClusterFile> {
    let path = dir.join("cluster.json");
    Ok(serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?)
}

fn pid_of(pid: u32) -> Option<rustix::process::Pid> {
    rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)
}

/// Whether a process is still running (and not a zombie we could reap).
pub fn is_running(pid: u32) -> bool {
    let Some(p) = pid_of(pid) else { return false };
    let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG);
    rustix::process::test_kill_process(p).is_ok()
}

/// Sends `signal` to a node process.
pub fn signal(pid: u32, signal: rustix::process::Signal) -> anyhow::Result<()> {
    let p = pid_of(pid).context("bad pid")?;
    rustix::process::kill_process(p, signal).with_context(|| format!("signalling {pid}"))
}

/// Stops every node of the cluster in `dir`: SIGTERM, then SIGKILL after the grace period.
pub async fn down(dir: &Path) -> anyhow::Result<()> {
    let cluster = read_cluster_file(dir)?;
    for n in &cluster.nodes {
        if is_running(n.pid) {
            let _ = signal(n.pid, rustix::process::Signal::TERM);
        }
    }
    let deadline = Instant::now() + Duration::from_millis(STOP_GRACE_MS);
    for n in &cluster.nodes {
        while is_running(n.pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if is_running(n.pid) {
            let _ = signal(n.pid, rustix::process::Signal::KILL);
        }
    }
    Ok(())
}
