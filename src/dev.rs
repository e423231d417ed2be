//! `hadss dev` (part of the binary): a whole local cluster in one process — a monitor (a
//! one-member Raft quorum) and three storage nodes on 127.0.0.1 over the real libp2p
//! transport, the first of them serving S3 (reading its own copies), data under `--data-dir`. The first start creates the cluster secret,
//! the map key and an access key (kept in `DATA_DIR/credentials.env`), so a restart on the
//! same directory serves the same objects with the same keys. Ports are picked by the OS on
//! every start: the storage nodes ask the monitor to refresh their addresses (auto-admitted
//! on the first start) and the monitor updates its own, each a new epoch, exactly as in a
//! cluster of separate processes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use hadss::cluster::{NodeId, ReplicationPolicy, Role};
use hadss::node::{Node, NodeConfig};

/// Storage nodes `hadss dev` runs.
const DEV_STORAGE_NODES: usize = 3;
/// Partitions of the dev cluster.
const DEV_PARTITIONS: u32 = 64;
/// Memory budget of each dev node's caches: three nodes share the process.
const DEV_MEMORY_BUDGET_BYTES: u64 = 128 * 1024 * 1024;
/// How long the storage nodes may take to be in the map at their current addresses.
const DEV_MEMBERSHIP_TIMEOUT_MS: u64 = 30_000;

/// Options of `hadss dev`.
#[derive(Debug, clap::Args)]
pub struct DevOptions {
    /// Where every node keeps its data.
    #[arg(long, default_value = "./hadss-data")]
    pub data_dir: PathBuf,
    /// S3 endpoint address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub s3_listen: std::net::SocketAddr,
    /// Access key id (default: the one in DATA_DIR/credentials.env, or a new random one).
    #[arg(long, env = "HADSS_ACCESS_KEY")]
    pub access_key: Option<String>,
    /// Secret access key (default: as for the access key).
    #[arg(long, env = "HADSS_SECRET_KEY")]
    pub secret_key: Option<String>,
    /// Region name reported to clients.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
}

fn random_token(alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| char::from(alphabet[rand::random_range(0..alphabet.len())]))
        .collect()
}

/// (access key, secret key): from the flags, else the credentials file, else new ones.
fn credentials(opts: &DevOptions, file: &Path) -> anyhow::Result<(String, String)> {
    if let (Some(a), Some(s)) = (&opts.access_key, &opts.secret_key) {
        return Ok((a.clone(), s.clone()));
    }
    if let Ok(text) = std::fs::read_to_string(file) {
        let get = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        if let (Some(a), Some(s)) = (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            return Ok((a, s));
        }
    }
    let access = format!("HADSS{}", random_token(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 15));
    let secret = random_token(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 40);
    Ok((access, secret))
}

fn node_config(
    dir: &Path,
    secret: libp2p::pnet::PreSharedKey,
    map_key: &libp2p::identity::ed25519::PublicKey,
    zone: &str,
    role: swim::Role,
) -> NodeConfig {
    NodeConfig {
        data_dir: dir.to_path_buf(),
        listen: "/ip4/127.0.0.1/tcp/0"
            .parse()
            .unwrap_or_else(|_| unreachable!("valid address")),
        secret,
        map_key: map_key.clone(),
        chunk_options: chunkstore::Options::default(),
        memory_budget_bytes: DEV_MEMORY_BUDGET_BYTES,
        write_timeouts: Default::default(),
        zone: zone.into(),
        // The storage nodes and the monitor.
        swim: hadss::config::SwimPreset::Fast.config(DEV_STORAGE_NODES as u32 + 1),
        role,
        clock: hadss::clock::Clock::system(),
        faults: hadss::net::fault::Faults::off(),
    }
}

/// Runs the dev cluster until Ctrl-C or SIGTERM.
pub async fn run(
    opts: DevOptions,
    shutdown: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let dir = std::path::absolute(&opts.data_dir)?;
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).with_context(|| format!("creating {}", keys.display()))?;
    if !keys.join("cluster.secret").exists() {
        hadss::net::identity::create_cluster_secret(&keys.join("cluster.secret"))?;
        hadss::cluster::keys::create_map_keypair(&keys)?;
    }
    let secret = hadss::net::identity::load_cluster_secret(&keys.join("cluster.secret"))?;
    let map_key = hadss::cluster::keys::load_map_keypair(&keys.join("map.key"))?;

    let monitor = hadss::monitor::Monitor::start(hadss::monitor::MonitorConfig {
        node: node_config(
            &dir.join("monitor"),
            secret,
            &map_key.public(),
            "monitor",
            swim::Role::Monitor,
        ),
        map_key: map_key.clone(),
        initial_monitors: Vec::new(),
        auto_admit: true,
        policy: ReplicationPolicy {
            replication: 3,
            write_quorum: 2,
            read_quorum: 2,
        },
        partitions: DEV_PARTITIONS,
        timing: hadss::monitor::RaftTiming::default(),
    })
    .await
    .context("starting the monitor")?;
    let monitor_addr: libp2p::Multiaddr =
        format!("{}/p2p/{}", monitor.node().listen_addr(), monitor.node().peer_id()).parse()?;
    // First start: a quorum of one. Later starts: already formed (the address is refreshed).
    monitor.form_quorum(std::slice::from_ref(&monitor_addr)).await?;
    let bootstrap = vec![(monitor.node().peer_id(), monitor.node().listen_addr().clone())];

    let mut nodes = Vec::new();
    let mut joins = Vec::new();
    for i in 1..=DEV_STORAGE_NODES {
        let zone = format!("zone-{i}");
        let cfg = node_config(
            &dir.join(format!("storage-{i}")),
            secret,
            &map_key.public(),
            &zone,
            swim::Role::Storage,
        );
        let node = Arc::new(
            Node::start(cfg)
                .await
                .with_context(|| format!("starting storage node {i}"))?,
        );
        node.start_anti_entropy(hadss::node::ANTI_ENTROPY_INTERVAL_MS_DEFAULT);
        node.start_maintenance(hadss::node::MaintenanceConfig::default());
        joins.push(tokio::spawn(hadss::monitor::client::join_until_member(
            node.clone(),
            bootstrap.clone(),
            zone,
        )));
        nodes.push(node);
    }
    // Serve once the map names every storage node where it listens now.
    let current = |map: &hadss::cluster::ClusterMap| {
        nodes.iter().all(|n| {
            map.node(&NodeId(n.peer_id().to_bytes()))
                .is_some_and(|i| i.role == Role::Storage && i.addrs == [n.listen_addr().to_string()])
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(DEV_MEMBERSHIP_TIMEOUT_MS);
    loop {
        for n in &nodes {
            let _ = n.pull_map(monitor.node().peer_id()).await;
        }
        if nodes.iter().all(|n| n.map().is_some_and(|m| current(&m))) {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the storage nodes did not join the map within {DEV_MEMBERSHIP_TIMEOUT_MS} ms"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let epoch = nodes[0].epoch();

    let cred_file = dir.join("credentials.env");
    let (access_key, secret_key) = credentials(&opts, &cred_file)?;
    // The S3 endpoint is served by the first storage node: with three replicas on three
    // nodes it holds a copy of every chunk, and reads them from its own store (no network
    // hop, no encryption), as an S3 endpoint on any storage node does for its copies.
    let s3 = hadss::gateway::serve(
        opts.s3_listen,
        nodes[0].clone(),
        (&access_key, &secret_key),
        &opts.region,
    )
    .await
    .with_context(|| format!("listening on {}", opts.s3_listen))?;
    let endpoint = format!("http://{}", s3.local_addr());
    hadss::fsutil::write_durably(
        &cred_file,
        format!(
            "AWS_ACCESS_KEY_ID={access_key}\nAWS_SECRET_ACCESS_KEY={secret_key}\nAWS_ENDPOINT_URL={endpoint}\nAWS_REGION={}\n",
            opts.region
        )
        .as_bytes(),
        0o600,
    )?;
    println!(
        "HADSS dev cluster: 1 monitor, {DEV_STORAGE_NODES} storage nodes (N=3, W=2, R=2; the first serves S3), map epoch {epoch}"
    );
    println!(
        "  monitor:      {monitor_addr} (hadss admin status --secret {} --monitor {monitor_addr})",
        keys.join("cluster.secret").display()
    );
    println!("  S3 endpoint:  {endpoint}");
    println!("  access key:   {access_key}");
    println!("  secret key:   {secret_key}");
    println!("  region:       {}", opts.region);
    println!("  data:         {}", dir.display());
    println!(
        "  credentials:  {} (source it: set -a; . {0}; set +a)",
        cred_file.display()
    );
    shutdown.await?;
    tracing::info!("shutting down");
    drop(s3);
    for j in joins {
        j.abort();
    }
    drop(nodes);
    monitor.shutdown().await;
    drop(monitor);
    Ok(())
}
