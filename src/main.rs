//! `hadss`: the one binary of HADSS. `dev` runs a whole local cluster with an S3 endpoint in
//! one process; `monitor`, `storage` and `gateway` run the production roles; `admin` creates
//! the cluster's secrets, shows the cluster and proposes map changes to the monitors (and,
//! for clusters without monitors, signs maps offline); `bench` measures.

mod admin;

mod dev;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use hadss::cluster::{ClusterMap, MapEnvelope, NodeId, NodeInfo, NodeState, ReplicationPolicy, Role};
use hadss::config::StorageConfig;
use hadss::node::protocol::{MapRequest, MapResponse};
use hadss::node::{Node, NodeConfig};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(
    name = "hadss",
    version,
    about = "HADSS: a high-availability distributed object store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log detail: -v HADSS at debug, -vv everything at debug, -vvv trace (`RUST_LOG`,
    /// when set, decides instead).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log format on stderr: `text` for people, `json` (one object per line) for machines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The log filter for `command` at `verbose` (`-v` count) when `RUST_LOG` is not set.
fn default_log_filter(command: &Command, verbose: u8) -> &'static str {
    // Servers log their life at info; one-shot admin commands print results, logs only warn.
    // Dependencies speak at warn (openraft's state dumps and libp2p's chatter are not news);
    // s3s logs every client error (a 403, a 404) at ERROR, so it is silenced: the gateway
    // logs what is its own.
    match (verbose, command) {
        (0, Command::Admin(_)) => "warn",
        (0, _) => {
            "info,openraft=warn,libp2p=warn,libp2p_swarm=warn,libp2p_noise=warn,libp2p_yamux=warn,libp2p_tcp=warn,s3s=off,hyper=warn"
        }
        (1, _) => "info,hadss=debug,chunkstore=debug,swim=debug,openraft=warn,libp2p=warn,s3s=warn,hyper=warn",
        (2, _) => "debug",
        _ => "trace",
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a local cluster (a monitor and three storage nodes, the first serving S3) in this process.
    Dev(dev::DevOptions),
    /// Run a monitor (one member of the Raft quorum that publishes the cluster map).
    Monitor {
        /// The monitor's TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a storage node.
    Storage {
        /// The node's TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run an S3 gateway (stateless; any number per cluster).
    Gateway {
        /// The gateway's TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Cluster administration.
    #[command(subcommand)]
    Admin(Admin),
}

#[derive(Subcommand, Debug)]
enum Admin {
    /// Show the cluster map, node liveness, nodes waiting for admission and the monitors'
    /// Raft state (any one monitor answers; no quorum needed).
    Status(admin::Status),
    /// Change a storage node: admit, in, out, drain, remove, zone, weight.
    #[command(subcommand)]
    Node(admin::NodeCmd),
    /// Set the replication policy (N, W, R; refused outside safe bounds).
    Policy(admin::PolicyCmd),
    /// Add or remove a monitor (Raft membership change).
    #[command(subcommand)]
    Monitor(admin::MonitorCmd),
    /// S3 access keys and their bucket rights: create, import, list, info, allow, deny,
    /// delete (stored in the cluster; any node answers).
    #[command(subcommand)]
    Key(admin::KeyCmd),
    /// Create a node key in a data dir if it has none and print its peer id.
    NodeId {
        /// The node's data dir.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Create a cluster secret (`cluster.secret`) and a map-signing key (`map.key`, `map.pub`).
    Init {
        /// Directory to write them to.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Build and sign a cluster map from the `node.json` files storage nodes write at start.
    MakeMap {
        /// The signing key (`map.key`).
        #[arg(long)]
        key: PathBuf,
        /// A storage node's `node.json` (repeat for each node).
        #[arg(long = "node", required = true)]
        nodes: Vec<PathBuf>,
        /// Map epoch (each new map needs a higher one).
        #[arg(long, default_value_t = 1)]
        epoch: u64,
        /// Copies of every chunk and record.
        #[arg(long, default_value_t = 3)]
        replication: u8,
        /// Durable copies before a write is acknowledged.
        #[arg(long, default_value_t = 2)]
        write_quorum: u8,
        /// Replicas asked on a read.
        #[arg(long, default_value_t = 2)]
        read_quorum: u8,
        /// Partitions (fixed for the life of the cluster).
        #[arg(long, default_value_t = 1024)]
        partitions: u32,
        /// Where to write the signed map.
        #[arg(long)]
        out: PathBuf,
    },
    /// Offer a signed map to a running node (it adopts it if it verifies and is newer; the
    /// others learn it through gossip).
    PushMap {
        /// The cluster secret.
        #[arg(long)]
        secret: PathBuf,
        /// The signed map file.
        #[arg(long)]
        map: PathBuf,
        /// The node, as `/ip4/…/tcp/…/p2p/<peer id>`.
        #[arg(long)]
        to: Multiaddr,
    },
    /// Print the map a node holds.
    ShowMap {
        /// The cluster secret.
        #[arg(long)]
        secret: PathBuf,
        /// The node, as `/ip4/…/tcp/…/p2p/<peer id>`.
        #[arg(long)]
        from: Multiaddr,
        /// The map-signing public key (`map.pub`) to verify it with.
        #[arg(long)]
        key: PathBuf,
    },
}

/// What a storage node tells the world about itself at start (`DATA_DIR/node.json`).
#[derive(Debug, Serialize, Deserialize)]
struct NodeFile {
    peer_id: String,
    addr: String,
    zone: String,
    /// `/health`, `/ready` and `/metrics` listen here.
    #[serde(default)]
    http_addr: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Logs go to stderr, so stdout carries only what a command prints for people and
    // scripts (`hadss dev`'s banner). `RUST_LOG` overrides the default filter.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log_filter(&cli.command, cli.verbose)));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        Command::Dev(opts) => runtime.block_on(dev::run(opts, wait_for_shutdown())),
        Command::Monitor { config } => runtime.block_on(run_monitor(&config)),
        Command::Storage { config } => runtime.block_on(run_storage(&config)),
        Command::Gateway { config } => runtime.block_on(run_gateway(&config)),
        Command::Admin(admin) => runtime.block_on(run_admin(admin)),
    }
}

async fn run_storage(config_path: &Path) -> anyhow::Result<()> {
    let cfg = StorageConfig::load(config_path)?;
    let faults = match &cfg.fault_file {
        Some(file) => hadss::net::fault::Faults::watch(file)?,
        None => hadss::net::fault::Faults::off(),
    };
    let secret = hadss::net::identity::load_cluster_secret(&cfg.cluster_secret_file)?;
    let map_key = hadss::cluster::keys::load_map_public_key(&cfg.map_public_key_file)?;
    let mut chunk_options = chunkstore::Options::default();
    if let Some(s) = cfg.segment_size_bytes {
        chunk_options.segment_size_bytes = s;
    }
    chunk_options.capacity_bytes = cfg.capacity_bytes;
    let node = Node::start(NodeConfig {
        data_dir: cfg.data_dir.clone(),
        listen: cfg.listen.parse().context("listen address")?,
        secret,
        map_key,
        chunk_options,
        memory_budget_bytes: cfg
            .memory_budget_mib
            .map_or(hadss::node::MEMORY_BUDGET_BYTES_DEFAULT, |m| {
                m.saturating_mul(1024 * 1024)
            }),
        write_timeouts: Default::default(),
        zone: cfg.zone.clone(),
        swim: cfg.swim_preset.config(16),
        role: swim::Role::Storage,
        clock: faults.clock(),
        faults: faults.clone(),
    })
    .await?;
    let http = start_http(&node, cfg.http_listen.as_deref()).await?;
    let addr = write_node_file(&node, &cfg.data_dir, &cfg.zone, &http)?;
    pull_map_from_bootstrap(&node, &cfg.bootstrap).await;
    let node = std::sync::Arc::new(node);
    node.start_anti_entropy(
        cfg.anti_entropy_interval_s
            .map_or(hadss::node::ANTI_ENTROPY_INTERVAL_MS_DEFAULT, |s| s * 1000),
    );
    node.start_maintenance(cfg.maintenance());
    let join = tokio::spawn(hadss::monitor::client::join_until_member(
        node.clone(),
        bootstrap_peers(&cfg.bootstrap),
        cfg.zone.clone(),
    ));
    let s3 = match &cfg.s3 {
        Some(s3) => Some(serve_s3(&node, &s3.listen, &s3.access_key, &s3.secret_key_file, &s3.region).await?),
        None => None,
    };
    println!(
        "storage node {} listening on {addr}; health and metrics on http://{}{}",
        node.peer_id(),
        http.local_addr(),
        s3.as_ref()
            .map(|e| format!("; S3 on http://{}", e.local_addr()))
            .unwrap_or_default()
    );
    wait_for_shutdown().await?;
    tracing::info!("shutting down");
    if let Some(s3) = s3 {
        drain_s3(s3).await;
    }
    join.abort();
    drop(http);
    drop(node);
    Ok(())
}

async fn run_monitor(config_path: &Path) -> anyhow::Result<()> {
    let cfg = hadss::config::MonitorFileConfig::load(config_path)?;
    let faults = match &cfg.fault_file {
        Some(file) => hadss::net::fault::Faults::watch(file)?,
        None => hadss::net::fault::Faults::off(),
    };
    let secret = hadss::net::identity::load_cluster_secret(&cfg.cluster_secret_file)?;
    let map_key = hadss::cluster::keys::load_map_keypair(&cfg.map_key_file)?;
    let initial_monitors = cfg
        .initial_monitors
        .iter()
        .map(|a| a.parse().with_context(|| format!("initial monitor {a}")))
        .collect::<anyhow::Result<Vec<Multiaddr>>>()?;
    let mut timing = hadss::monitor::RaftTiming::default();
    if let Some(h) = cfg.raft_heartbeat_ms {
        timing.heartbeat_ms = h;
    }
    if let Some(e) = cfg.raft_election_timeout_ms {
        timing.election_timeout_min_ms = e;
        timing.election_timeout_max_ms = e * 2;
    }
    let monitor = hadss::monitor::Monitor::start(hadss::monitor::MonitorConfig {
        node: NodeConfig {
            data_dir: cfg.data_dir.clone(),
            listen: cfg.listen.parse().context("listen address")?,
            secret,
            map_key: map_key.public(),
            chunk_options: chunkstore::Options::default(),
            memory_budget_bytes: hadss::node::MEMORY_BUDGET_BYTES_DEFAULT,
            write_timeouts: Default::default(),
            zone: cfg.zone.clone(),
            swim: cfg.swim_preset.config(16),
            role: swim::Role::Monitor,
            clock: faults.clock(),
            faults: faults.clone(),
        },
        map_key,
        initial_monitors,
        auto_admit: cfg.auto_admit,
        policy: ReplicationPolicy {
            replication: cfg.replication,
            write_quorum: cfg.write_quorum,
            read_quorum: cfg.read_quorum,
        },
        partitions: cfg.partitions,
        timing,
    })
    .await?;
    let node = monitor.node().clone();
    let http = start_http(&node, cfg.http_listen.as_deref()).await?;
    let addr = write_node_file(&node, &cfg.data_dir, &cfg.zone, &http)?;
    println!(
        "monitor {} (raft id {}) listening on {addr}; health and metrics on http://{}",
        node.peer_id(),
        monitor.raft_id(),
        http.local_addr()
    );
    wait_for_shutdown().await?;
    tracing::info!("shutting down");
    monitor.shutdown().await;
    drop(http);
    drop(monitor);
    Ok(())
}

/// Writes `DATA_DIR/node.json` (what `make-map` and tools read) and returns the node's
/// `/ip4/…/p2p/<id>` address.
fn write_node_file(
    node: &Node,
    data_dir: &Path,
    zone: &str,
    http: &hadss::observe::HttpEndpoint,
) -> anyhow::Result<String> {
    let addr = format!("{}/p2p/{}", node.listen_addr(), node.peer_id());
    let info = NodeFile {
        peer_id: node.peer_id().to_string(),
        addr: addr.clone(),
        zone: zone.to_string(),
        http_addr: http.local_addr().to_string(),
    };
    hadss::fsutil::write_durably(&data_dir.join("node.json"), &serde_json::to_vec_pretty(&info)?, 0o644)?;
    Ok(addr)
}

/// The bootstrap addresses that name their peer.
fn bootstrap_peers(bootstrap: &[String]) -> Vec<(PeerId, Multiaddr)> {
    bootstrap
        .iter()
        .filter_map(|b| b.parse().ok().as_ref().and_then(hadss::node::client::split_peer_addr))
        .collect()
}

/// How long a stopping gateway lets the requests in flight finish.
const GATEWAY_DRAIN_MS: u64 = 10_000;

/// Serves S3 on `listen` through `node`, with the root key whose secret is in `secret_key_file`.
async fn serve_s3(
    node: &std::sync::Arc<Node>,
    listen: &str,
    access_key: &str,
    secret_key_file: &Path,
    region: &str,
) -> anyhow::Result<hadss::gateway::S3Endpoint> {
    let secret_key = std::fs::read_to_string(secret_key_file)
        .with_context(|| format!("reading {}", secret_key_file.display()))?
        .trim()
        .to_string();
    anyhow::ensure!(!secret_key.is_empty(), "{} is empty", secret_key_file.display());
    hadss::gateway::serve(
        listen.parse().with_context(|| format!("S3 listen address {listen}"))?,
        node.clone(),
        (access_key, &secret_key),
        region,
    )
    .await
    .with_context(|| format!("listening on {listen}"))
}

/// Stops an S3 endpoint, letting the requests in flight finish.
async fn drain_s3(s3: hadss::gateway::S3Endpoint) {
    let open = s3.shutdown(GATEWAY_DRAIN_MS).await;
    if open > 0 {
        tracing::warn!(open, "connections still open after {GATEWAY_DRAIN_MS} ms; closing them");
    }
}

async fn run_gateway(config_path: &Path) -> anyhow::Result<()> {
    let cfg = hadss::config::GatewayConfig::load(config_path)?;
    let faults = match &cfg.fault_file {
        Some(file) => hadss::net::fault::Faults::watch(file)?,
        None => hadss::net::fault::Faults::off(),
    };
    let secret = hadss::net::identity::load_cluster_secret(&cfg.cluster_secret_file)?;
    let map_key = hadss::cluster::keys::load_map_public_key(&cfg.map_public_key_file)?;
    let node = std::sync::Arc::new(
        Node::start(NodeConfig {
            data_dir: cfg.data_dir.clone(),
            listen: cfg.listen.parse().context("listen address")?,
            secret,
            map_key,
            chunk_options: chunkstore::Options::default(),
            memory_budget_bytes: hadss::node::MEMORY_BUDGET_BYTES_DEFAULT,
            write_timeouts: Default::default(),
            zone: "gateway".into(),
            swim: hadss::config::SwimPreset::Lan.config(16),
            role: swim::Role::Gateway,
            clock: faults.clock(),
            faults: faults.clone(),
        })
        .await?,
    );
    pull_map_from_bootstrap(&node, &cfg.bootstrap).await;
    let http = start_http(&node, cfg.http_listen.as_deref()).await?;
    let s3 = serve_s3(
        &node,
        &cfg.s3_listen,
        &cfg.access_key,
        &cfg.secret_key_file,
        &cfg.region,
    )
    .await?;
    write_node_file(&node, &cfg.data_dir, "gateway", &http)?;
    println!(
        "gateway {}: S3 on http://{}, health and metrics on http://{}, map epoch {}",
        node.peer_id(),
        s3.local_addr(),
        http.local_addr(),
        node.epoch()
    );
    wait_for_shutdown().await?;
    tracing::info!("shutting down: finishing the requests in flight");
    drain_s3(s3).await;
    drop(http);
    Ok(())
}

/// Adopts the newest map any bootstrap peer holds (a node started before has its own).
async fn pull_map_from_bootstrap(node: &Node, bootstrap: &[String]) {
    for b in bootstrap {
        let Some((peer, dial)) = b.parse().ok().as_ref().and_then(hadss::node::client::split_peer_addr) else {
            tracing::warn!(bootstrap = %b, "bootstrap address must end in /p2p/<peer id>; skipped");
            continue;
        };
        node.add_peer_address(peer, dial).await;
        match node.pull_map(peer).await {
            Ok(epoch) => tracing::info!(%peer, epoch, "map pulled from bootstrap peer"),
            Err(e) => tracing::info!(%peer, error = %e, "no newer map from bootstrap peer"),
        }
    }
}

/// Serves `/health`, `/ready` and `/metrics` on `listen` (default: an ephemeral port on
/// 127.0.0.1).
async fn start_http(node: &Node, listen: Option<&str>) -> anyhow::Result<hadss::observe::HttpEndpoint> {
    let addr: std::net::SocketAddr = listen.unwrap_or("127.0.0.1:0").parse().context("http_listen address")?;
    node.serve_http(addr).await.context("starting the HTTP endpoint")
}

async fn wait_for_shutdown() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn run_admin(admin: Admin) -> anyhow::Result<()> {
    match admin {
        Admin::Status(cmd) => admin::status(cmd).await?,
        Admin::Node(cmd) => admin::node(cmd).await?,
        Admin::Policy(cmd) => admin::policy(cmd).await?,
        Admin::Monitor(cmd) => admin::monitor(cmd).await?,
        Admin::Key(cmd) => admin::key(cmd).await?,
        Admin::NodeId { data_dir } => admin::node_id(&data_dir)?,
        Admin::Init { dir } => {
            std::fs::create_dir_all(&dir)?;
            hadss::net::identity::create_cluster_secret(&dir.join("cluster.secret"))?;
            hadss::cluster::keys::create_map_keypair(&dir)?;
            println!(
                "wrote {0}/cluster.secret, {0}/map.key (keep private) and {0}/map.pub",
                dir.display()
            );
        }
        Admin::MakeMap {
            key,
            nodes,
            epoch,
            replication,
            write_quorum,
            read_quorum,
            partitions,
            out,
        } => {
            let key = hadss::cluster::keys::load_map_keypair(&key)?;
            let mut infos = Vec::new();
            for path in &nodes {
                let file: NodeFile = serde_json::from_slice(&std::fs::read(path)?)
                    .with_context(|| format!("reading {}", path.display()))?;
                let peer: PeerId = file.peer_id.parse().context("peer id")?;
                let addr: Multiaddr = file.addr.parse().context("address")?;
                let dial = hadss::node::client::split_peer_addr(&addr).map_or(addr, |(_, d)| d);
                infos.push(NodeInfo {
                    id: NodeId(peer.to_bytes()),
                    addrs: vec![dial.to_string()],
                    role: Role::Storage,
                    zone: file.zone,
                    weight: 100,
                    state: NodeState::In,
                });
            }
            infos.sort_by(|a, b| a.id.cmp(&b.id));
            let map = ClusterMap {
                epoch,
                nodes: infos,
                policy: ReplicationPolicy {
                    replication,
                    write_quorum,
                    read_quorum,
                },
                partitions,
            };
            let env = MapEnvelope::sign(&map, &key)?;
            hadss::fsutil::write_durably(&out, &env.to_bytes()?, 0o644)?;
            println!(
                "wrote map epoch {epoch} with {} nodes to {}",
                map.nodes.len(),
                out.display()
            );
        }
        Admin::PushMap { secret, map, to } => {
            let secret = hadss::net::identity::load_cluster_secret(&secret)?;
            let env = MapEnvelope::from_bytes(&std::fs::read(&map)?)?;
            match hadss::node::client::map_request(secret, &to, MapRequest::Offer(env)).await? {
                MapResponse::Accepted(epoch) => println!("accepted: the node now holds epoch {epoch}"),
                MapResponse::Refused(why) => anyhow::bail!("refused: {why}"),
                other => anyhow::bail!("unexpected answer: {other:?}"),
            }
        }
        Admin::ShowMap { secret, from, key } => {
            let secret = hadss::net::identity::load_cluster_secret(&secret)?;
            let key = hadss::cluster::keys::load_map_public_key(&key)?;
            match hadss::node::client::map_request(secret, &from, MapRequest::Get).await? {
                MapResponse::Map(Some(env)) => {
                    let map = env.open(&key)?;
                    println!(
                        "epoch {} · {} partitions · N={} W={} R={}",
                        map.epoch,
                        map.partitions,
                        map.policy.replication,
                        map.policy.write_quorum,
                        map.policy.read_quorum
                    );
                    for n in &map.nodes {
                        let peer = PeerId::from_bytes(&n.id.0).map(|p| p.to_string()).unwrap_or_default();
                        println!(
                            "  {peer} {:?} zone={} weight={} {:?} {:?}",
                            n.role, n.zone, n.weight, n.state, n.addrs
                        );
                    }
                }
                MapResponse::Map(None) => println!("the node holds no map yet"),
                other => anyhow::bail!("unexpected answer: {other:?}"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// clap checks a command's definition (unique names, valid requirements) only when it
    /// parses in a debug build; this checks every subcommand at once.
    #[test]
    fn cli_definition_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
