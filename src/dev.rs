//! `hadss dev` (part of the binary): a whole local cluster in one process — three storage
//! nodes and an S3 gateway on 127.0.0.1 over the real libp2p transport, data under
//! `--data-dir`. The first start creates the cluster secret, the map key and an access key
//! (kept in `DATA_DIR/credentials.env`), so a restart on the same directory serves the same
//! objects with the same keys. Each start signs the next map epoch with the nodes' current
//! addresses (ports are picked by the OS). No monitor yet: this process holds the map key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use hadss::cluster::{ClusterMap, MapEnvelope, NodeId, NodeInfo, NodeState, ReplicationPolicy, Role};
use hadss::node::{Node, NodeConfig};

/// Storage nodes `hadss dev` runs.
const DEV_STORAGE_NODES: usize = 3;
/// Partitions of the dev cluster.
const DEV_PARTITIONS: u32 = 64;

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
) -> NodeConfig {
    NodeConfig {
        data_dir: dir.to_path_buf(),
        listen: "/ip4/127.0.0.1/tcp/0"
            .parse()
            .unwrap_or_else(|_| unreachable!("valid address")),
        secret,
        map_key: map_key.clone(),
        chunk_options: chunkstore::Options::default(),
        write_timeouts: Default::default(),
        zone: zone.into(),
        swim: hadss::config::SwimPreset::Fast.config(DEV_STORAGE_NODES as u32 + 1),
        role: swim::Role::Storage,
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

    let mut nodes = Vec::new();
    for i in 1..=DEV_STORAGE_NODES {
        let cfg = node_config(
            &dir.join(format!("storage-{i}")),
            secret,
            &map_key.public(),
            &format!("zone-{i}"),
        );
        nodes.push(
            Node::start(cfg)
                .await
                .with_context(|| format!("starting storage node {i}"))?,
        );
    }
    let gateway = Arc::new(Node::start(node_config(&dir.join("gateway"), secret, &map_key.public(), "gateway")).await?);

    // The next epoch with this run's addresses.
    let epoch = nodes
        .iter()
        .map(Node::epoch)
        .chain([gateway.epoch()])
        .max()
        .unwrap_or(0)
        + 1;
    let mut infos: Vec<NodeInfo> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| NodeInfo {
            id: NodeId(n.peer_id().to_bytes()),
            addrs: vec![n.listen_addr().to_string()],
            role: Role::Storage,
            zone: format!("zone-{}", i + 1),
            weight: 100,
            state: NodeState::In,
        })
        .collect();
    infos.sort_by(|a, b| a.id.cmp(&b.id));
    let map = ClusterMap {
        epoch,
        nodes: infos,
        policy: ReplicationPolicy {
            replication: 3,
            write_quorum: 2,
            read_quorum: 2,
        },
        partitions: DEV_PARTITIONS,
    };
    let env = MapEnvelope::sign(&map, &map_key)?;
    for n in nodes.iter().chain([&*gateway]) {
        n.offer_map(env.clone()).await?;
    }

    let cred_file = dir.join("credentials.env");
    let (access_key, secret_key) = credentials(&opts, &cred_file)?;
    let s3 = hadss::gateway::serve(
        opts.s3_listen,
        gateway.clone(),
        hadss::gateway::StaticKeys::single(&access_key, &secret_key),
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
    println!("HADSS dev cluster: {DEV_STORAGE_NODES} storage nodes (N=3, W=2, R=2), map epoch {epoch}");
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
    drop(gateway);
    drop(nodes);
    Ok(())
}
