//! `hadss admin` commands that talk to the monitors: status, node and policy changes,
//! monitor membership, and S3 access keys (those any node serves). Each change is sent under one request id and retried across the
//! monitors until it commits or is refused, so it applies at most once.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use hadss::cluster::change::{Change, show_id};
use hadss::cluster::{NodeId, NodeState, ReplicationPolicy};
use hadss::monitor::state::{Op, Outcome};
use hadss::node::protocol::{AdminRequest, AdminResponse};
use libp2p::{Multiaddr, PeerId};

/// How to reach the monitors.
#[derive(Args, Debug, Clone)]
pub struct Monitors {
    /// The cluster secret file.
    #[arg(long, env = "HADSS_CLUSTER_SECRET_FILE")]
    secret: PathBuf,
    /// A monitor (or any node, which names the monitors), `/ip4/…/tcp/…/p2p/<peer id>`;
    /// repeat or separate with commas.
    #[arg(long = "monitor", env = "HADSS_MONITORS", value_delimiter = ',', required = true)]
    monitors: Vec<Multiaddr>,
    /// Give up after this long without a decision (the monitor quorum is unavailable).
    #[arg(long, default_value_t = 20)]
    timeout_s: u64,
}

/// `hadss admin status`.
#[derive(Args, Debug)]
pub struct Status {
    #[command(flatten)]
    monitors: Monitors,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `hadss admin node …`.
#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Admit a storage node that asked to join (see `status`).
    Admit(NodeArg),
    /// Put a node back into placement.
    In(NodeArg),
    /// Take a node out of placement.
    Out(NodeArg),
    /// Stop giving a node new partitions (it keeps serving what it has).
    Drain(NodeArg),
    /// Remove a node from the map.
    Remove(NodeArg),
    /// Set a node's zone.
    Zone {
        #[command(flatten)]
        node: NodeArg,
        /// The zone.
        zone: String,
    },
    /// Set a node's weight (relative share of partitions; 0 takes none).
    Weight {
        #[command(flatten)]
        node: NodeArg,
        /// The weight.
        weight: u32,
    },
}

/// One node of a `node` command.
#[derive(Args, Debug)]
pub struct NodeArg {
    #[command(flatten)]
    monitors: Monitors,
    /// The node's peer id.
    peer: PeerId,
}

/// `hadss admin policy`.
#[derive(Args, Debug)]
pub struct PolicyCmd {
    #[command(flatten)]
    monitors: Monitors,
    /// Copies of every chunk and record (N).
    #[arg(long)]
    replication: u8,
    /// Durable copies before a write is acknowledged (W).
    #[arg(long)]
    write_quorum: u8,
    /// Replicas asked on a read (R).
    #[arg(long)]
    read_quorum: u8,
}

/// `hadss admin monitor …`.
#[derive(Subcommand, Debug)]
pub enum MonitorCmd {
    /// Add a running monitor (started with empty `initial_monitors`) to the quorum.
    Add {
        #[command(flatten)]
        monitors: Monitors,
        /// The new monitor, `/ip4/…/tcp/…/p2p/<peer id>`.
        #[arg(long)]
        addr: Multiaddr,
        /// Its zone.
        #[arg(long, default_value = "")]
        zone: String,
    },
    /// Remove a monitor from the quorum.
    Remove {
        #[command(flatten)]
        monitors: Monitors,
        /// The monitor's peer id.
        peer: PeerId,
    },
}

impl Monitors {
    fn secret(&self) -> anyhow::Result<libp2p::pnet::PreSharedKey> {
        Ok(hadss::net::identity::load_cluster_secret(&self.secret)?)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }
}

fn report(outcome: Outcome) -> anyhow::Result<()> {
    match outcome {
        Outcome::Applied { epoch } => {
            println!("committed: the map is now at epoch {epoch}");
            Ok(())
        }
        Outcome::Recorded => {
            println!("recorded (no new epoch)");
            Ok(())
        }
        Outcome::Refused(why) => anyhow::bail!("refused: {why}"),
    }
}

async fn propose(m: &Monitors, op: Op) -> anyhow::Result<()> {
    let outcome = hadss::monitor::client::propose(m.secret()?, &m.monitors, op, m.timeout()).await?;
    report(outcome)
}

/// Runs `hadss admin status`.
pub async fn status(cmd: Status) -> anyhow::Result<()> {
    let m = &cmd.monitors;
    let s = hadss::monitor::client::status(m.secret()?, &m.monitors, m.timeout()).await?;
    let progress = progress(m.secret()?, &s).await;
    if cmd.json {
        let mut json = status_json(&s);
        json["progress"] = serde_json::json!(progress
            .iter()
            .map(|(id, r)| serde_json::json!({"peer_id": show_id(id), "report": r.as_ref().map_err(|e| e.to_string())}))
            .collect::<Vec<_>>());
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let leader = s.leader.map_or("none known".to_string(), |l| l.to_string());
    println!(
        "monitor raft id {} · {} · term {} · leader {leader} · applied index {}",
        s.raft_id,
        s.raft_state,
        s.term,
        s.last_applied.map_or("-".into(), |i| i.to_string())
    );
    let Some(map) = &s.map else {
        println!("no map yet");
        return Ok(());
    };
    println!(
        "epoch {} · {} partitions · N={} W={} R={}",
        map.epoch, map.partitions, map.policy.replication, map.policy.write_quorum, map.policy.read_quorum
    );
    for n in &map.nodes {
        println!(
            "  {:<52} {:<8} {:<6} zone={:<10} weight={:<6} {:<8} {}",
            show_id(&n.id),
            format!("{:?}", n.role).to_lowercase(),
            liveness(&s, &n.id),
            n.zone,
            n.weight,
            format!("{:?}", n.state).to_lowercase(),
            n.addrs.join(",")
        );
    }
    for n in &s.pending {
        println!(
            "  {:<52} waiting for admission  zone={} {}",
            show_id(&n.id),
            n.zone,
            n.addrs.join(",")
        );
    }
    print_progress(&progress);
    Ok(())
}

/// Asks every storage node of the map for its last maintenance report (16 at a time).
async fn progress(
    secret: libp2p::pnet::PreSharedKey,
    s: &hadss::node::protocol::StatusReport,
) -> Vec<(NodeId, Result<Option<hadss::node::MaintenanceReport>, String>)> {
    use futures::StreamExt;
    let Some(map) = &s.map else { return Vec::new() };
    let asks = map
        .nodes
        .iter()
        .filter(|n| n.role == hadss::cluster::Role::Storage)
        .map(|n| {
            let (id, addr) = (n.id.clone(), n.addrs.first().cloned());
            async move {
                let peer = PeerId::from_bytes(&id.0).map_err(|e| e.to_string());
                let answer = async {
                    let addr: libp2p::Multiaddr = format!("{}/p2p/{}", addr.ok_or("no address")?, peer?)
                        .parse()
                        .map_err(|e: libp2p::multiaddr::Error| e.to_string())?;
                    let ask = hadss::node::client::admin_request(secret, &addr, AdminRequest::Progress);
                    match tokio::time::timeout(std::time::Duration::from_secs(PROGRESS_TIMEOUT_S), ask).await {
                        Ok(Ok(AdminResponse::Progress(r))) => Ok(r),
                        Ok(Ok(other)) => Err(format!("unexpected answer {other:?}")),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("no answer".to_string()),
                    }
                };
                (id, answer.await)
            }
        });
    futures::stream::iter(asks).buffer_unordered(16).collect().await
}

/// Seconds to wait for one node's progress report.
const PROGRESS_TIMEOUT_S: u64 = 5;

fn print_progress(progress: &[(NodeId, Result<Option<hadss::node::MaintenanceReport>, String>)]) {
    if progress.is_empty() {
        return;
    }
    let reports: Vec<_> = progress
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().copied().flatten())
        .collect();
    let moving: u64 = reports.iter().map(|r| r.partitions_moving).sum();
    let left: u64 = reports.iter().map(|r| r.bytes_left).sum();
    println!(
        "data movement: {moving} partition copies moving, {} left ({} of {} storage nodes reported)",
        human_bytes(left),
        reports.len(),
        progress.len()
    );
    for (id, r) in progress {
        match r {
            Ok(Some(r)) => println!(
                "  {:<52} owns {:>4} · moving {:>4} · {:>10} left · last pass fetched {} chunks, collected {}, dropped {} surplus",
                show_id(id),
                r.partitions_owned,
                r.partitions_moving,
                human_bytes(r.bytes_left),
                r.chunks_fetched,
                r.chunks_collected,
                r.surplus_chunks_dropped + r.surplus_records_dropped,
            ),
            Ok(None) => println!("  {:<52} no maintenance pass yet", show_id(id)),
            Err(e) => println!("  {:<52} unreachable: {e}", show_id(id)),
        }
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn liveness(s: &hadss::node::protocol::StatusReport, id: &NodeId) -> &'static str {
    if s.down.contains(&id.0) {
        "down"
    } else if s.up.contains(&id.0) || s.voters.iter().any(|(rid, p)| *rid == s.raft_id && *p == id.0) {
        "up"
    } else {
        "?"
    }
}

fn status_json(s: &hadss::node::protocol::StatusReport) -> serde_json::Value {
    let node = |n: &hadss::cluster::NodeInfo| {
        serde_json::json!({
            "peer_id": show_id(&n.id),
            "role": format!("{:?}", n.role).to_lowercase(),
            "zone": n.zone,
            "weight": n.weight,
            "state": format!("{:?}", n.state).to_lowercase(),
            "addrs": n.addrs,
            "liveness": liveness(s, &n.id),
        })
    };
    serde_json::json!({
        "raft_id": s.raft_id,
        "leader": s.leader,
        "term": s.term,
        "raft_state": s.raft_state,
        "last_applied": s.last_applied,
        "voters": s.voters.iter().map(|(id, p)| serde_json::json!({"raft_id": id, "peer_id": show_id(&NodeId(p.clone()))})).collect::<Vec<_>>(),
        "epoch": s.map.as_ref().map(|m| m.epoch),
        "policy": s.map.as_ref().map(|m| serde_json::json!({
            "replication": m.policy.replication,
            "write_quorum": m.policy.write_quorum,
            "read_quorum": m.policy.read_quorum,
        })),
        "partitions": s.map.as_ref().map(|m| m.partitions),
        "nodes": s.map.as_ref().map_or_else(Vec::new, |m| m.nodes.iter().map(node).collect()),
        "pending": s.pending.iter().map(node).collect::<Vec<_>>(),
    })
}

/// Runs `hadss admin node …`.
pub async fn node(cmd: NodeCmd) -> anyhow::Result<()> {
    let id = |p: &PeerId| NodeId(p.to_bytes());
    let state = |a: &NodeArg, state| {
        (
            a.monitors.clone(),
            Op::Change(Change::SetState { id: id(&a.peer), state }),
        )
    };
    let (monitors, op) = match &cmd {
        NodeCmd::Admit(a) => (a.monitors.clone(), Op::AdmitPending(id(&a.peer))),
        NodeCmd::In(a) => state(a, NodeState::In),
        NodeCmd::Out(a) => state(a, NodeState::Out),
        NodeCmd::Drain(a) => state(a, NodeState::Draining),
        NodeCmd::Remove(a) => (a.monitors.clone(), Op::Change(Change::Remove { id: id(&a.peer) })),
        NodeCmd::Zone { node, zone } => (
            node.monitors.clone(),
            Op::Change(Change::SetZone {
                id: id(&node.peer),
                zone: zone.clone(),
            }),
        ),
        NodeCmd::Weight { node, weight } => (
            node.monitors.clone(),
            Op::Change(Change::SetWeight {
                id: id(&node.peer),
                weight: *weight,
            }),
        ),
    };
    propose(&monitors, op).await
}

/// Runs `hadss admin policy`.
pub async fn policy(cmd: PolicyCmd) -> anyhow::Result<()> {
    propose(
        &cmd.monitors,
        Op::Change(Change::SetPolicy(ReplicationPolicy {
            replication: cmd.replication,
            write_quorum: cmd.write_quorum,
            read_quorum: cmd.read_quorum,
        })),
    )
    .await
}

/// Runs `hadss admin monitor …`.
pub async fn monitor(cmd: MonitorCmd) -> anyhow::Result<()> {
    let (m, request) = match cmd {
        MonitorCmd::Add { monitors, addr, zone } => {
            let (peer, dial) = hadss::node::client::split_peer_addr(&addr)
                .ok_or_else(|| anyhow::anyhow!("{addr} does not end in /p2p/<peer id>"))?;
            (
                monitors,
                AdminRequest::AddMonitor {
                    peer_id: peer.to_bytes(),
                    addr: dial.to_string(),
                    zone,
                },
            )
        }
        MonitorCmd::Remove { monitors, peer } => (
            monitors,
            AdminRequest::RemoveMonitor {
                peer_id: peer.to_bytes(),
            },
        ),
    };
    match hadss::monitor::client::ask_monitors(m.secret()?, &m.monitors, request, m.timeout()).await? {
        AdminResponse::Outcome(o) => report(o),
        AdminResponse::Error(e) => anyhow::bail!("refused: {e}"),
        other => anyhow::bail!("unexpected answer: {other:?}"),
    }
}

/// Runs `hadss admin node-id`: creates the node key if missing and prints the peer id (so
/// monitors' addresses can be written into `initial_monitors` before they first start).
pub fn node_id(data_dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let key = hadss::net::identity::load_or_create_keypair(&data_dir.join("node.key"))?;
    println!("{}", key.public().to_peer_id());
    Ok(())
}

/// `hadss admin key …`: S3 access keys, stored in the cluster (any node serves these, so
/// `--monitor` may name a storage node when every monitor is down).
#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Make a key with a random id and secret (printed once: keep the secret).
    Create {
        #[command(flatten)]
        monitors: Monitors,
        /// A label for the key.
        #[arg(long, default_value = "")]
        name: String,
        /// Let the key create buckets (it owns those it creates).
        #[arg(long)]
        create_bucket: bool,
    },
    /// Store a key with a given id and secret.
    Import {
        #[command(flatten)]
        monitors: Monitors,
        /// The access key id.
        #[arg(long)]
        id: String,
        /// The secret key (at least 16 characters).
        #[arg(long, env = "HADSS_IMPORT_SECRET_KEY")]
        secret_key: String,
        /// A label for the key.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List the keys and their grants (no secrets).
    List {
        #[command(flatten)]
        monitors: Monitors,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one key's grants (no secret).
    Info {
        #[command(flatten)]
        monitors: Monitors,
        /// The access key id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Give a key rights on a bucket, or the right to create buckets.
    Allow(KeyGrantArgs),
    /// Take rights away (the same flags as `allow`).
    Deny(KeyGrantArgs),
    /// Delete a key: requests signed with it fail within a second on every gateway.
    Delete {
        #[command(flatten)]
        monitors: Monitors,
        /// The access key id.
        id: String,
    },
}

/// The rights of a `key allow` or `key deny`.
#[derive(Args, Debug)]
pub struct KeyGrantArgs {
    #[command(flatten)]
    monitors: Monitors,
    /// The access key id.
    id: String,
    /// The bucket the rights are on.
    #[arg(long, required_unless_present = "create_bucket")]
    bucket: Option<String>,
    /// Get, head and list objects.
    #[arg(long, requires = "bucket")]
    read: bool,
    /// Put, copy and delete objects; multipart uploads.
    #[arg(long, requires = "bucket")]
    write: bool,
    /// Delete the bucket; change its settings.
    #[arg(long, requires = "bucket")]
    owner: bool,
    /// Creating buckets.
    #[arg(long)]
    create_bucket: bool,
}

impl KeyGrantArgs {
    fn rights(&self) -> hadss::access::Permission {
        hadss::access::Permission {
            read: self.read,
            write: self.write,
            owner: self.owner,
        }
    }
}

/// Sends a key request to the first of `m`'s nodes that answers.
async fn key_request(m: &Monitors, request: hadss::access::KeyRequest) -> anyhow::Result<hadss::access::KeyResponse> {
    let secret = m.secret()?;
    let mut errors = Vec::new();
    for addr in &m.monitors {
        let ask = hadss::node::client::admin_request(secret, addr, AdminRequest::Keys(request.clone()));
        match tokio::time::timeout(m.timeout(), ask).await {
            Ok(Ok(AdminResponse::Keys(r))) => return Ok(r),
            Ok(Ok(other)) => errors.push(format!("{addr}: unexpected answer {other:?}")),
            Ok(Err(e)) => errors.push(format!("{addr}: {e:#}")),
            Err(_) => errors.push(format!("{addr}: no answer in {} s", m.timeout_s)),
        }
    }
    anyhow::bail!("no node answered: {}", errors.join("; "))
}

fn key_json(k: &hadss::access::KeySummary) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "name": k.name,
        "created_ms": k.created_ms,
        "create_bucket": k.create_bucket,
        "buckets": k.buckets.iter().map(|(b, p)| serde_json::json!({
            "bucket": b, "read": p.read, "write": p.write, "owner": p.owner,
        })).collect::<Vec<_>>(),
    })
}

fn print_key(k: &hadss::access::KeySummary) {
    let name = if k.name.is_empty() { "-" } else { &k.name };
    let create = if k.create_bucket {
        "may create buckets"
    } else {
        "no bucket creation"
    };
    println!("{}  name={name}  {create}", k.id);
    for (bucket, p) in &k.buckets {
        println!("  {p}  {bucket}");
    }
}

/// Runs `hadss admin key …`.
pub async fn key(cmd: KeyCmd) -> anyhow::Result<()> {
    use hadss::access::{KeyEdit, KeyRequest, KeyResponse, Permission};
    let (m, request, json) = match cmd {
        KeyCmd::Create {
            monitors,
            name,
            create_bucket,
        } => (monitors, KeyRequest::Create { name, create_bucket }, false),
        KeyCmd::Import {
            monitors,
            id,
            secret_key,
            name,
        } => (
            monitors,
            KeyRequest::Import {
                id,
                secret: secret_key,
                name,
            },
            false,
        ),
        KeyCmd::List { monitors, json } => (monitors, KeyRequest::List, json),
        KeyCmd::Info { monitors, id, json } => (monitors, KeyRequest::Info { id }, json),
        KeyCmd::Delete { monitors, id } => (monitors, KeyRequest::Delete { id }, false),
        KeyCmd::Allow(a) => {
            let rights = a.rights();
            let edit = KeyEdit {
                bucket: a.bucket,
                grant: rights,
                revoke: Permission::default(),
                create_bucket: a.create_bucket.then_some(true),
            };
            (a.monitors, KeyRequest::Edit { id: a.id, edit }, false)
        }
        KeyCmd::Deny(a) => {
            let rights = a.rights();
            let edit = KeyEdit {
                bucket: a.bucket,
                grant: Permission::default(),
                // `deny --bucket B` alone takes every right on B away.
                revoke: if rights.is_empty() { Permission::ALL } else { rights },
                create_bucket: a.create_bucket.then_some(false),
            };
            (a.monitors, KeyRequest::Edit { id: a.id, edit }, false)
        }
    };
    match key_request(&m, request).await? {
        KeyResponse::Created { id, secret } => {
            println!("access key id:  {id}");
            println!("secret key:     {secret}");
            println!("(the secret is not shown again)");
        }
        KeyResponse::Key(k) if json => println!("{}", serde_json::to_string_pretty(&key_json(&k))?),
        KeyResponse::Key(k) => print_key(&k),
        KeyResponse::Keys(keys) if json => println!(
            "{}",
            serde_json::to_string_pretty(&keys.iter().map(key_json).collect::<Vec<_>>())?
        ),
        KeyResponse::Keys(keys) => {
            if keys.is_empty() {
                println!("no keys");
            }
            keys.iter().for_each(print_key);
        }
        KeyResponse::Done => println!("done"),
        KeyResponse::NoSuchKey => anyhow::bail!("no such key"),
        KeyResponse::Error(e) => anyhow::bail!("refused: {e}"),
    }
    Ok(())
}
