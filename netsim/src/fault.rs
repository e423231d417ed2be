//! Fault injection on a cluster started by `netsim up`, from Rust and from the command line
//! (`netsim fault …`):
//! - processes: kill -9, graceful stop, restart with the node's recorded `cmd` (its new pid
//!   goes into `cluster.json`), pause and resume (SIGSTOP / SIGCONT);
//! - network: partitions between sets of nodes (both ways or one way), delay and loss, by
//!   writing each node's fault file (`NODE_DIR/faults.json`), which the node's fault layer
//!   (`hadss::net::fault`) watches — both ends of every affected link get the rule;
//! - clock skew of one node (the same file);
//! - bitrot: bytes flipped at random offsets of a storage node's segment files;
//! - a full disk: the node restarted with `capacity_bytes` at its current usage (the chunk
//!   store then refuses new chunks with `Full`, as on ENOSPC), and restarted without it to
//!   lift the fault.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hadss::net::fault::{FaultRules, PeerFault};
use rand::RngExt;

use crate::{ClusterFile, NodeEntry, is_running, signal, spawn_node, write_cluster_file};

/// How long a killed or stopped process may take to go away.
pub const EXIT_TIMEOUT_MS: u64 = 15_000;
/// How long a restarted node may take to answer `/ready`.
pub const READY_TIMEOUT_MS: u64 = 30_000;
/// First segment-file offset bitrot touches (the file header and first records stay
/// readable, so the damage is in chunk data, where scrubs and reads must catch it).
pub const BITROT_OFFSET_MIN: u64 = 4096;

/// The node called `name`.
pub fn node<'a>(cluster: &'a ClusterFile, name: &str) -> anyhow::Result<&'a NodeEntry> {
    cluster
        .nodes
        .iter()
        .find(|n| n.name == name)
        .with_context(|| format!("no node {name} in cluster.json"))
}

fn node_dir(n: &NodeEntry) -> PathBuf {
    n.data_dir
        .parent()
        .map_or_else(|| n.data_dir.clone(), Path::to_path_buf)
}

/// The fault file of a node.
pub fn fault_file(n: &NodeEntry) -> PathBuf {
    node_dir(n).join("faults.json")
}

async fn wait_gone(pid: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(EXIT_TIMEOUT_MS);
    while is_running(pid) {
        if Instant::now() > deadline {
            bail!("process {pid} did not exit within {EXIT_TIMEOUT_MS} ms");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// kill -9, and waits until the process is gone.
pub async fn kill(cluster: &ClusterFile, name: &str) -> anyhow::Result<()> {
    let n = node(cluster, name)?;
    if is_running(n.pid) {
        // A paused process dies of SIGKILL too.
        signal(n.pid, rustix::process::Signal::KILL)?;
    }
    wait_gone(n.pid).await
}

/// SIGTERM (a clean shutdown), and waits until the process is gone.
pub async fn stop(cluster: &ClusterFile, name: &str) -> anyhow::Result<()> {
    let n = node(cluster, name)?;
    if is_running(n.pid) {
        let _ = signal(n.pid, rustix::process::Signal::CONT);
        signal(n.pid, rustix::process::Signal::TERM)?;
    }
    wait_gone(n.pid).await
}

/// Starts a stopped node again with its recorded command, records its new pid in
/// `DIR/cluster.json` and waits until it answers `/ready`.
pub async fn restart(cluster: &mut ClusterFile, dir: &Path, name: &str) -> anyhow::Result<()> {
    let i = cluster
        .nodes
        .iter()
        .position(|n| n.name == name)
        .with_context(|| format!("no node {name} in cluster.json"))?;
    if is_running(cluster.nodes[i].pid) {
        bail!("{name} is still running (pid {})", cluster.nodes[i].pid);
    }
    let n = &cluster.nodes[i];
    let pid = spawn_node(&n.cmd, &n.cwd, &node_dir(n).join("log"))?;
    cluster.nodes[i].pid = pid;
    write_cluster_file(dir, cluster)?;
    wait_node_ready(&cluster.nodes[i]).await
}

/// Waits until a node's `/ready` answers 200.
pub async fn wait_node_ready(n: &NodeEntry) -> anyhow::Result<()> {
    let Some(_) = &n.http_endpoint else { return Ok(()) };
    let addr = crate::http_addr(n)?;
    let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
    loop {
        if let Ok((200, _)) = hadss::observe::get(addr, "/ready", 2_000).await {
            return Ok(());
        }
        if !is_running(n.pid) {
            bail!("{} exited; see {}", n.name, node_dir(n).join("log").display());
        }
        if Instant::now() > deadline {
            bail!("{} not ready within {READY_TIMEOUT_MS} ms", n.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGSTOP.
pub fn pause(cluster: &ClusterFile, name: &str) -> anyhow::Result<()> {
    signal(node(cluster, name)?.pid, rustix::process::Signal::STOP)
}

/// SIGCONT.
pub fn resume(cluster: &ClusterFile, name: &str) -> anyhow::Result<()> {
    signal(node(cluster, name)?.pid, rustix::process::Signal::CONT)
}

/// The rules in a node's fault file (none if it has none).
pub fn rules_of(n: &NodeEntry) -> anyhow::Result<FaultRules> {
    match std::fs::read(fault_file(n)) {
        Ok(bytes) => Ok(hadss::net::fault::parse(&bytes)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FaultRules::default()),
        Err(e) => Err(e.into()),
    }
}

/// Replaces a node's fault rules (the node applies them within `FAULT_POLL_MS`).
pub fn set_rules(n: &NodeEntry, rules: &FaultRules) -> anyhow::Result<()> {
    hadss::fsutil::write_durably(&fault_file(n), &serde_json::to_vec_pretty(rules)?, 0o644)?;
    Ok(())
}

fn edit_link(cluster: &ClusterFile, from: &str, to: &str, edit: impl Fn(&mut PeerFault)) -> anyhow::Result<()> {
    let (a, b) = (node(cluster, from)?, node(cluster, to)?);
    if b.peer_id.is_empty() {
        bail!("{to} has no peer id in cluster.json");
    }
    let mut rules = rules_of(a)?;
    edit(rules.peers.entry(b.peer_id.clone()).or_default());
    rules.peers.retain(|_, f| f.is_active());
    set_rules(a, &rules)
}

/// Cuts the links between every node of `a` and every node of `b`. Both ways: nothing
/// passes. One way: what `a` sends to `b` is lost, what `b` sends to `a` arrives.
pub fn partition(cluster: &ClusterFile, a: &[String], b: &[String], one_way: bool) -> anyhow::Result<()> {
    for x in a {
        for y in b {
            edit_link(cluster, x, y, |f| {
                f.drop_out = true;
                f.drop_in |= !one_way;
            })?;
            edit_link(cluster, y, x, |f| {
                f.drop_in = true;
                f.drop_out |= !one_way;
            })?;
        }
    }
    Ok(())
}

/// Adds `delay_ms` (each way) and a stream loss probability to the links between `a` and `b`.
pub fn degrade(cluster: &ClusterFile, a: &[String], b: &[String], delay_ms: u64, loss: f64) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&loss) {
        bail!("loss must be within 0..=1");
    }
    for x in a {
        for y in b {
            for (p, q) in [(x, y), (y, x)] {
                edit_link(cluster, p, q, |f| {
                    f.delay_ms = delay_ms;
                    f.loss = loss;
                })?;
            }
        }
    }
    Ok(())
}

/// Lifts every network fault (partitions, delay, loss) on every node; clock skew stays.
pub fn heal_network(cluster: &ClusterFile) -> anyhow::Result<()> {
    for n in &cluster.nodes {
        let mut rules = rules_of(n)?;
        if !rules.peers.is_empty() {
            rules.peers.clear();
            set_rules(n, &rules)?;
        }
    }
    Ok(())
}

/// Sets a node's clock skew.
pub fn skew(cluster: &ClusterFile, name: &str, skew_ms: i64) -> anyhow::Result<()> {
    let n = node(cluster, name)?;
    let mut rules = rules_of(n)?;
    rules.clock_skew_ms = skew_ms;
    set_rules(n, &rules)
}

/// Turns the deliberately broken acknowledge-before-replication mode on or off on a node.
pub fn set_broken_ack(cluster: &ClusterFile, name: &str, on: bool) -> anyhow::Result<()> {
    let n = node(cluster, name)?;
    let mut rules = rules_of(n)?;
    rules.ack_before_replication = on;
    set_rules(n, &rules)
}

/// The segment files of a storage node, oldest first.
pub fn segment_files(n: &NodeEntry) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![n.data_dir.clone()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("seg-") && f.ends_with(".dat"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Flips one bit in each of `count` random bytes of a storage node's segment files (past
/// `BITROT_OFFSET_MIN`); returns how many bytes were flipped.
pub fn bitrot(cluster: &ClusterFile, name: &str, count: usize, rng: &mut impl rand::Rng) -> anyhow::Result<usize> {
    use std::os::unix::fs::FileExt;
    let n = node(cluster, name)?;
    let files: Vec<(PathBuf, u64)> = segment_files(n)?
        .into_iter()
        .filter_map(|p| {
            let len = std::fs::metadata(&p).ok()?.len();
            (len > BITROT_OFFSET_MIN).then_some((p, len))
        })
        .collect();
    if files.is_empty() {
        return Ok(0);
    }
    let mut flipped = 0;
    for _ in 0..count {
        let (path, len) = &files[rng.random_range(0..files.len())];
        let offset = rng.random_range(BITROT_OFFSET_MIN..*len);
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, offset)?;
        byte[0] ^= 1 << rng.random_range(0..8u32);
        file.write_all_at(&byte, offset)?;
        flipped += 1;
    }
    Ok(flipped)
}

/// Bytes a node's chunk store occupies on disk (its segment files).
pub fn store_bytes(n: &NodeEntry) -> anyhow::Result<u64> {
    Ok(segment_files(n)?
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum())
}

fn config_path(n: &NodeEntry) -> anyhow::Result<PathBuf> {
    let i = n
        .cmd
        .iter()
        .position(|a| a == "--config")
        .context("node command has no --config")?;
    Ok(PathBuf::from(n.cmd.get(i + 1).context("--config without a file")?))
}

/// Sets (`Some`) or removes (`None`) a storage node's `capacity_bytes` and restarts it.
pub async fn set_capacity(
    cluster: &mut ClusterFile,
    dir: &Path,
    name: &str,
    capacity_bytes: Option<u64>,
) -> anyhow::Result<()> {
    let n = node(cluster, name)?.clone();
    let path = config_path(&n)?;
    let text = std::fs::read_to_string(&path)?;
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("capacity_bytes"))
        .map(str::to_string)
        .collect();
    if let Some(c) = capacity_bytes {
        // Top-level keys must come before any table; the node configs have none.
        lines.insert(0, format!("capacity_bytes = {c}"));
    }
    std::fs::write(&path, lines.join("\n") + "\n")?;
    stop(cluster, name).await?;
    restart(cluster, dir, name).await
}

/// Fills a storage node's disk: restarts it capped at its current usage plus `slack_bytes`.
pub async fn fill_disk(cluster: &mut ClusterFile, dir: &Path, name: &str, slack_bytes: u64) -> anyhow::Result<u64> {
    let used = store_bytes(node(cluster, name)?)?;
    set_capacity(cluster, dir, name, Some(used + slack_bytes)).await?;
    Ok(used + slack_bytes)
}
