//! `netsim run SCENARIO --seed N --duration-s S`: starts a cluster (3 monitors, 5 storage
//! nodes in 3 zones, 2 gateways, N=3, W=R=2, fault files on), runs the workload
//! (`crate::workload`) while applying the scenario's fault schedule (derived from the seed,
//! so the seed reproduces it), stops the workload, lifts every fault, waits until the
//! replicas of every record partition have identical Merkle roots, reads every key back, and
//! checks the history (`crate::check`). The report has operation counts, latency
//! percentiles, availability per phase, the faults applied, every violation, and a final
//! `PASS` or `FAIL` line.
//!
//! Every scenario keeps its faults within the cluster's tolerance (at most one storage node
//! faulty at a time; any number of monitors; one gateway), so every phase must stay
//! available and nothing acknowledged may be lost.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hadss::cluster::NodeId;
use hadss::cluster::placement::Placement;
use hadss::node::protocol::{MetaRequest, MetaResponse};
use hadss::storage::antientropy::{Answer, Ask};
use libp2p::{Multiaddr, PeerId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::check::{self, FINAL_CLIENT, Kind, Op, Outcome, Phase, PhaseAvailability, Violation};
use crate::s3::S3;
use crate::workload::{self, WorkloadOptions};
use crate::{ClusterFile, UpOptions, fault, is_running};

/// The bucket the workload uses.
pub const BUCKET: &str = "netsim";
/// Per-request timeout of the workload's clients.
pub const OP_TIMEOUT_MS: u64 = 10_000;
/// Attempts of each final read (a failed attempt is retried on the next gateway).
pub const FINAL_READ_ATTEMPTS: usize = 3;
/// Storage settings of netsim runs: maintenance often enough to act within a short run.
pub const STORAGE_CONFIG: &str = "anti_entropy_interval_s = 3\nmaintenance_interval_s = 5\nscrub_interval_s = 5\nscrub_rate_mib_s = 64\ndown_out_s = 15\n";

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// kill -9 one storage node, restart it later.
    KillStorage,
    /// Every monitor killed before the workload starts, down for the whole run.
    MonitorsDown,
    /// Delay and loss between gateways and storage, then one storage node cut off both ways,
    /// then another cut off one way (it cannot send).
    Partition,
    /// Bytes flipped in two storage nodes' segment files.
    Bitrot,
    /// Large objects; a storage node and a gateway killed with -9 in the middle of writes.
    TornWrite,
    /// Large objects; every storage node in turn killed with -9 and restarted. Each is the
    /// primary of the chunk puts whose first replica it is, so every kill lands on primaries
    /// before, while and after they forward; the gateways must fall back to the next replica.
    KillPrimaries,
    /// One storage node's disk full (capacity capped at its usage), lifted later.
    DiskFull,
    /// A gateway's clock behind, a storage node's ahead.
    ClockSkew,
    /// Every storage node, gateway and monitor restarted in turn.
    RollingRestart,
    /// Two storage nodes added mid-run (the monitors publish a new epoch; data moves).
    ScaleOut,
    /// A random sequence of the faults above, one at a time.
    All,
}

impl Scenario {
    /// Every scenario but `all`.
    pub const EACH: [Scenario; 10] = [
        Scenario::KillStorage,
        Scenario::MonitorsDown,
        Scenario::Partition,
        Scenario::Bitrot,
        Scenario::TornWrite,
        Scenario::KillPrimaries,
        Scenario::DiskFull,
        Scenario::ClockSkew,
        Scenario::RollingRestart,
        Scenario::ScaleOut,
    ];

    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::KillStorage => "kill-storage",
            Scenario::MonitorsDown => "monitors-down",
            Scenario::Partition => "partition",
            Scenario::Bitrot => "bitrot",
            Scenario::TornWrite => "torn-write",
            Scenario::KillPrimaries => "kill-primaries",
            Scenario::DiskFull => "disk-full",
            Scenario::ClockSkew => "clock-skew",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::ScaleOut => "scale-out",
            Scenario::All => "all",
        }
    }
}

/// What `netsim run` does.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The scenario.
    pub scenario: Scenario,
    /// Seed of the fault schedule and the workload.
    pub seed: u64,
    /// How long the workload runs.
    pub duration_s: u64,
    /// Directory of the cluster (made fresh; must not hold a running cluster).
    pub dir: PathBuf,
    /// The hadss binary.
    pub hadss: PathBuf,
    /// Concurrent S3 clients.
    pub clients: usize,
    /// Leave the cluster running afterwards.
    pub keep: bool,
    /// Turn on the deliberately broken acknowledge-before-replication mode on the gateways
    /// (the checker must catch it).
    pub broken_ack: bool,
    /// Bound on replica convergence after the faults are lifted.
    pub converge_timeout_s: u64,
    /// Fraction of operations that must succeed in every phase.
    pub min_availability: f64,
}

/// One fault action.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// kill -9.
    Kill(String),
    /// SIGTERM and wait.
    Stop(String),
    /// Start again with the recorded command.
    Restart(String),
    /// Stop then restart (a rolling restart step).
    Bounce(String),
    /// SIGSTOP.
    Pause(String),
    /// SIGCONT.
    Resume(String),
    /// Cut links between two sets of nodes.
    Partition {
        /// One side.
        a: Vec<String>,
        /// The other.
        b: Vec<String>,
        /// Only what `a` sends is lost.
        one_way: bool,
    },
    /// Delay and stream loss between two sets.
    Degrade {
        /// One side.
        a: Vec<String>,
        /// The other.
        b: Vec<String>,
        /// Each way.
        delay_ms: u64,
        /// Per stream.
        loss: f64,
    },
    /// Lift every network fault.
    HealNetwork,
    /// Set a node's clock skew.
    Skew(String, i64),
    /// Flip bytes in a storage node's segments.
    Bitrot(String, usize),
    /// Cap a storage node's capacity at its usage (restarts it).
    FillDisk(String),
    /// Lift the cap (restarts it).
    UnfillDisk(String),
    /// Add storage nodes.
    AddStorage(usize),
    /// kill -9 every monitor.
    KillMonitors,
}

/// One step of a schedule: actions at a time, starting a phase.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// When, ms after the workload starts.
    pub at_ms: u64,
    /// What.
    pub actions: Vec<Action>,
    /// The phase it starts.
    pub phase: String,
}

/// Names of a cluster's nodes by role.
struct Names {
    storage: Vec<String>,
    gateways: Vec<String>,
    monitors: Vec<String>,
}

impl Names {
    fn of(cluster: &ClusterFile) -> Names {
        let by = |role: &str| -> Vec<String> {
            cluster
                .nodes
                .iter()
                .filter(|n| n.role == role)
                .map(|n| n.name.clone())
                .collect()
        };
        Names {
            storage: by("storage"),
            gateways: by("gateway"),
            monitors: by("monitor"),
        }
    }
    fn all_but(&self, name: &str) -> Vec<String> {
        self.storage
            .iter()
            .chain(&self.gateways)
            .chain(&self.monitors)
            .filter(|n| *n != name)
            .cloned()
            .collect()
    }
}

fn pick<'a>(rng: &mut StdRng, from: &'a [String]) -> &'a String {
    &from[rng.random_range(0..from.len())]
}

/// The fault schedule of a scenario over `duration_ms`, from `rng`.
fn schedule(scenario: Scenario, rng: &mut StdRng, duration_ms: u64, names: &Names) -> Vec<Step> {
    let at = |f: f64| (duration_ms as f64 * f) as u64;
    let step = |f: f64, actions: Vec<Action>, phase: String| Step {
        at_ms: at(f),
        actions,
        phase,
    };
    let s = &names.storage;
    match scenario {
        Scenario::KillStorage => {
            let v = pick(rng, s).clone();
            vec![
                step(0.25, vec![Action::Kill(v.clone())], format!("{v} killed")),
                step(0.6, vec![Action::Restart(v.clone())], format!("{v} restarted")),
            ]
        }
        Scenario::MonitorsDown => vec![step(0.0, vec![Action::KillMonitors], "every monitor down".into())],
        Scenario::Partition => {
            let v1 = pick(rng, s).clone();
            let v2 = loop {
                let v = pick(rng, s);
                if *v != v1 {
                    break v.clone();
                }
            };
            let delay_ms = rng.random_range(10..40u64);
            vec![
                step(
                    0.1,
                    vec![Action::Degrade {
                        a: names.gateways.clone(),
                        b: s.clone(),
                        delay_ms,
                        loss: 0.02,
                    }],
                    format!("{delay_ms} ms delay, 2% loss gateways↔storage"),
                ),
                step(
                    0.25,
                    vec![
                        Action::HealNetwork,
                        Action::Partition {
                            a: vec![v1.clone()],
                            b: names.all_but(&v1),
                            one_way: false,
                        },
                    ],
                    format!("{v1} cut off"),
                ),
                step(0.45, vec![Action::HealNetwork], "healed".into()),
                step(
                    0.55,
                    vec![Action::Partition {
                        a: vec![v2.clone()],
                        b: names.all_but(&v2),
                        one_way: true,
                    }],
                    format!("{v2} cannot send"),
                ),
                step(0.75, vec![Action::HealNetwork], "healed".into()),
            ]
        }
        Scenario::Bitrot => {
            let v1 = pick(rng, s).clone();
            let v2 = pick(rng, s).clone();
            vec![
                step(
                    0.3,
                    vec![Action::Bitrot(v1.clone(), 200)],
                    format!("200 bytes flipped on {v1}"),
                ),
                step(
                    0.55,
                    vec![Action::Bitrot(v2.clone(), 200)],
                    format!("200 bytes flipped on {v2}"),
                ),
            ]
        }
        Scenario::TornWrite => {
            let v = pick(rng, s).clone();
            let g = pick(rng, &names.gateways).clone();
            vec![
                step(
                    0.3,
                    vec![Action::Kill(v.clone()), Action::Kill(g.clone())],
                    format!("{v} and {g} killed mid-write"),
                ),
                step(
                    0.55,
                    vec![Action::Restart(v.clone()), Action::Restart(g.clone())],
                    "restarted".into(),
                ),
            ]
        }
        Scenario::KillPrimaries => {
            let mut order = s.clone();
            order.shuffle(rng);
            let slot = 0.8 / order.len() as f64;
            order
                .iter()
                .enumerate()
                .flat_map(|(i, v)| {
                    let kill = 0.1 + slot * i as f64;
                    [
                        step(kill, vec![Action::Kill(v.clone())], format!("{v} (a primary) killed")),
                        step(
                            kill + 0.5 * slot,
                            vec![Action::Restart(v.clone())],
                            format!("{v} restarted"),
                        ),
                    ]
                })
                .collect()
        }
        Scenario::DiskFull => {
            let v = pick(rng, s).clone();
            vec![
                step(0.25, vec![Action::FillDisk(v.clone())], format!("{v} disk full")),
                step(0.65, vec![Action::UnfillDisk(v.clone())], format!("{v} has room again")),
            ]
        }
        Scenario::ClockSkew => {
            let g = pick(rng, &names.gateways).clone();
            let v = pick(rng, s).clone();
            let behind_ms = rng.random_range(30_000..120_000i64);
            vec![
                step(
                    0.15,
                    vec![Action::Skew(g.clone(), -behind_ms), Action::Skew(v.clone(), 60_000)],
                    format!("{g} {} s behind, {v} 60 s ahead", behind_ms / 1000),
                ),
                step(0.8, vec![Action::Skew(g, 0), Action::Skew(v, 0)], "clocks right".into()),
            ]
        }
        Scenario::RollingRestart => {
            let order: Vec<&String> = s.iter().chain(&names.gateways).chain(&names.monitors).collect();
            order
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    step(
                        0.1 + 0.75 * i as f64 / order.len() as f64,
                        vec![Action::Bounce((*n).clone())],
                        format!("{n} restarted"),
                    )
                })
                .collect()
        }
        Scenario::ScaleOut => vec![step(0.3, vec![Action::AddStorage(2)], "two storage nodes added".into())],
        Scenario::All => {
            let windows = rng.random_range(3..=5usize);
            let mut steps = Vec::new();
            for w in 0..windows {
                let (from, to) = (w as f64 / windows as f64, (w + 1) as f64 / windows as f64);
                let (on, off) = (from + 0.1 * (to - from), to - 0.15 * (to - from));
                let v = pick(rng, s).clone();
                let (apply, lift, what) = match rng.random_range(0..7u32) {
                    0 => (
                        vec![Action::Kill(v.clone())],
                        vec![Action::Restart(v.clone())],
                        format!("{v} killed"),
                    ),
                    1 => (
                        vec![Action::Pause(v.clone())],
                        vec![Action::Resume(v.clone())],
                        format!("{v} paused"),
                    ),
                    2 => (
                        vec![Action::Partition {
                            a: vec![v.clone()],
                            b: names.all_but(&v),
                            one_way: rng.random_bool(0.5),
                        }],
                        vec![Action::HealNetwork],
                        format!("{v} partitioned"),
                    ),
                    3 => (vec![Action::Bitrot(v.clone(), 100)], vec![], format!("bitrot on {v}")),
                    4 => {
                        let m = pick(rng, &names.monitors).clone();
                        (
                            vec![Action::Kill(m.clone())],
                            vec![Action::Restart(m.clone())],
                            format!("{m} killed"),
                        )
                    }
                    5 => {
                        let g = pick(rng, &names.gateways).clone();
                        (
                            vec![Action::Skew(g.clone(), -45_000)],
                            vec![Action::Skew(g.clone(), 0)],
                            format!("{g} 45 s behind"),
                        )
                    }
                    _ => (
                        vec![Action::Degrade {
                            a: vec![v.clone()],
                            b: names.all_but(&v),
                            delay_ms: 50,
                            loss: 0.05,
                        }],
                        vec![Action::HealNetwork],
                        format!("{v} slow and lossy"),
                    ),
                };
                steps.push(step(on, apply, what));
                steps.push(step(off, lift, "healthy".into()));
            }
            steps
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario.
    pub scenario: Scenario,
    /// Seed.
    pub seed: u64,
    /// Workload duration.
    pub duration_s: u64,
    /// Whether the broken mode was on.
    pub broken_ack: bool,
    /// Faults applied: (ms since start, what), failures included.
    pub faults: Vec<(u64, String)>,
    /// Per kind: (succeeded, total).
    pub ops: Vec<(Kind, u64, u64)>,
    /// Per kind: (p50, p99, max) ms of successful operations.
    pub latency_ms: Vec<(Kind, u64, u64, u64)>,
    /// Availability per phase.
    pub phases: Vec<PhaseAvailability>,
    /// Ms from lifting the faults until every partition's replicas had identical roots.
    pub converged_after_ms: Option<u64>,
    /// Keys read back at the end.
    pub final_reads: usize,
    /// Chunk puts the gateways running at the end moved on to the next primary
    /// (`hadss_primary_fallbacks`), if their metrics could be read.
    pub primary_fallbacks: Option<u64>,
    /// Broken invariants.
    pub violations: Vec<Violation>,
    /// No violations.
    pub pass: bool,
}

/// Most violations printed in the report (all are in `report.json`).
pub const VIOLATIONS_SHOWN_MAX: usize = 20;

impl Report {
    /// The human-readable report, ending in `PASS` or `FAIL`.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "netsim run {} --seed {} --duration-s {}{}",
            self.scenario.name(),
            self.seed,
            self.duration_s,
            if self.broken_ack { " --broken-ack" } else { "" }
        );
        let _ = writeln!(s, "faults:");
        for (at, what) in &self.faults {
            let _ = writeln!(s, "  {:>7.1} s  {what}", *at as f64 / 1000.0);
        }
        let _ = writeln!(s, "operations (succeeded/total):");
        for (kind, ok, all) in &self.ops {
            let _ = writeln!(s, "  {kind:?}: {ok}/{all}");
        }
        let _ = writeln!(s, "latency of successful operations, ms (p50 / p99 / max):");
        for (kind, p50, p99, max) in &self.latency_ms {
            let _ = writeln!(s, "  {kind:?}: {p50} / {p99} / {max}");
        }
        let _ = writeln!(s, "availability per phase:");
        for p in &self.phases {
            let ops: Vec<String> = p.ops.iter().map(|(k, (o, a))| format!("{k:?} {o}/{a}")).collect();
            let _ = writeln!(s, "  {:<48} {:>6.2}%  {}", p.name, p.fraction() * 100.0, ops.join(", "));
        }
        match self.converged_after_ms {
            Some(ms) => {
                let _ = writeln!(
                    s,
                    "convergence: every partition's replicas had identical Merkle roots {:.1} s after the faults were lifted",
                    ms as f64 / 1000.0
                );
            }
            None => {
                let _ = writeln!(s, "convergence: NOT reached");
            }
        }
        let _ = writeln!(s, "final reads: {} keys", self.final_reads);
        if let Some(n) = self.primary_fallbacks {
            let _ = writeln!(s, "primary fallbacks (chunk puts moved to the next replica): {n}");
        }
        if self.violations.is_empty() {
            let _ = writeln!(s, "violations: none");
        } else {
            let mut by: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
            for v in &self.violations {
                *by.entry(v.invariant.as_str()).or_default() += 1;
            }
            let by: Vec<String> = by.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(s, "violations: {} ({})", self.violations.len(), by.join(", "));
            for v in self.violations.iter().take(VIOLATIONS_SHOWN_MAX) {
                let _ = writeln!(s, "  [{}] {}", v.invariant, v.detail);
            }
        }
        let _ = writeln!(s, "{}", if self.pass { "PASS" } else { "FAIL" });
        s
    }
}

fn cluster_clients(cluster: &ClusterFile) -> anyhow::Result<Arc<Vec<S3>>> {
    let key = cluster.s3.as_ref().context("the cluster has no gateways")?;
    let gateways = cluster
        .nodes
        .iter()
        .filter_map(|n| n.s3_endpoint.as_deref())
        .map(|e| S3::new(e, &key.access_key, &key.secret_key, &key.region, BUCKET, OP_TIMEOUT_MS))
        .collect::<anyhow::Result<Vec<S3>>>()?;
    Ok(Arc::new(gateways))
}

/// The sum of a counter over the running gateways' `/metrics` (`None` if one could not be
/// read).
async fn gateway_counter(cluster: &ClusterFile, name: &str) -> Option<u64> {
    let mut sum = 0;
    for n in cluster
        .nodes
        .iter()
        .filter(|n| n.role == "gateway" && is_running(n.pid))
    {
        let addr = crate::http_addr(n).ok()?;
        let (200, text) = hadss::observe::get(addr, "/metrics", OP_TIMEOUT_MS).await.ok()? else {
            return None;
        };
        sum += text
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .find_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())?;
    }
    Some(sum)
}

/// Applies one action.
async fn apply(
    action: &Action,
    cluster: &mut ClusterFile,
    up: &UpOptions,
    rng: &mut StdRng,
    filled: &mut BTreeSet<String>,
) -> anyhow::Result<String> {
    let dir = up.dir.clone();
    Ok(match action {
        Action::Kill(n) => {
            fault::kill(cluster, n).await?;
            format!("kill -9 {n}")
        }
        Action::Stop(n) => {
            fault::stop(cluster, n).await?;
            format!("stop {n}")
        }
        Action::Restart(n) => {
            fault::restart(cluster, &dir, n).await?;
            format!("restart {n}")
        }
        Action::Bounce(n) => {
            fault::stop(cluster, n).await?;
            fault::restart(cluster, &dir, n).await?;
            format!("restart {n} (SIGTERM, start, ready)")
        }
        Action::Pause(n) => {
            fault::pause(cluster, n)?;
            format!("SIGSTOP {n}")
        }
        Action::Resume(n) => {
            fault::resume(cluster, n)?;
            format!("SIGCONT {n}")
        }
        Action::Partition { a, b, one_way } => {
            fault::partition(cluster, a, b, *one_way)?;
            format!(
                "partition {} {} {}",
                a.join(","),
                if *one_way { "-/->" } else { "<-/->" },
                b.join(",")
            )
        }
        Action::Degrade { a, b, delay_ms, loss } => {
            fault::degrade(cluster, a, b, *delay_ms, *loss)?;
            format!(
                "{delay_ms} ms delay, {:.0}% stream loss {} <-> {}",
                loss * 100.0,
                a.join(","),
                b.join(",")
            )
        }
        Action::HealNetwork => {
            fault::heal_network(cluster)?;
            "heal the network".into()
        }
        Action::Skew(n, ms) => {
            fault::skew(cluster, n, *ms)?;
            format!("clock of {n} {ms:+} ms")
        }
        Action::Bitrot(n, count) => {
            let flipped = fault::bitrot(cluster, n, *count, rng)?;
            format!("flip {flipped} bytes in {n}'s segment files")
        }
        Action::FillDisk(n) => {
            let cap = fault::fill_disk(cluster, &dir, n, 256 * 1024).await?;
            filled.insert(n.clone());
            format!("{n} disk full (capacity {cap} bytes, restarted)")
        }
        Action::UnfillDisk(n) => {
            fault::set_capacity(cluster, &dir, n, None).await?;
            filled.remove(n);
            format!("{n} capacity lifted (restarted)")
        }
        Action::AddStorage(count) => {
            let names = crate::add_storage(cluster, up, *count).await?;
            format!(
                "added {} (new epoch {})",
                names.join(", "),
                epoch_of(cluster).await.unwrap_or(0)
            )
        }
        Action::KillMonitors => {
            let monitors: Vec<String> = Names::of(cluster).monitors;
            for m in &monitors {
                fault::kill(cluster, m).await?;
            }
            format!("kill -9 {}", monitors.join(", "))
        }
    })
}

async fn epoch_of(cluster: &ClusterFile) -> Option<u64> {
    let n = cluster
        .nodes
        .iter()
        .find(|n| n.role == "storage" && is_running(n.pid))?;
    crate::map_of(cluster, n).await.ok().flatten().map(|m| m.epoch)
}

/// Lifts every fault: network, clocks, pauses, full disks, stopped processes.
async fn heal_all(
    cluster: &mut ClusterFile,
    up: &UpOptions,
    filled: &mut BTreeSet<String>,
    log: &mut Vec<(u64, String)>,
    started: Instant,
) -> anyhow::Result<()> {
    fault::heal_network(cluster)?;
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    for n in &names {
        let node = fault::node(cluster, n)?;
        if fault::rules_of(node)?.clock_skew_ms != 0 {
            fault::skew(cluster, n, 0)?;
        }
        if is_running(node.pid) {
            let _ = fault::resume(cluster, n);
        }
    }
    for n in std::mem::take(filled) {
        fault::set_capacity(cluster, &up.dir, &n, None).await?;
        log.push((workload::since_ms(started), format!("{n} capacity lifted (restarted)")));
    }
    for n in &names {
        if !is_running(fault::node(cluster, n)?.pid) {
            fault::restart(cluster, &up.dir, n).await?;
            log.push((workload::since_ms(started), format!("restart {n}")));
        }
    }
    log.push((workload::since_ms(started), "every fault lifted".into()));
    Ok(())
}

/// Whether the replicas of every record partition have identical Merkle roots under the
/// current map (asked of every replica directly).
pub async fn roots_agree(cluster: &ClusterFile) -> anyhow::Result<bool> {
    let storage: Vec<&crate::NodeEntry> = cluster.nodes.iter().filter(|n| n.role == "storage").collect();
    let mut map = None;
    for n in &storage {
        if let Ok(Some(m)) = crate::map_of(cluster, n).await
            && map
                .as_ref()
                .is_none_or(|held: &hadss::cluster::ClusterMap| m.epoch > held.epoch)
        {
            map = Some(m);
        }
    }
    let map = map.context("no storage node holds a map")?;
    let placement = Placement::new(&map);
    let addr_of = |id: &NodeId| -> Option<Multiaddr> {
        let peer = PeerId::from_bytes(&id.0).ok()?.to_string();
        storage.iter().find(|n| n.peer_id == peer)?.p2p_addr.parse().ok()
    };
    let mut requests = Vec::new();
    let mut groups = Vec::new();
    for p in 0..map.partitions {
        let replicas: Vec<Multiaddr> = placement.replicas(p).filter_map(addr_of).collect();
        groups.push(replicas.len());
        for a in replicas {
            requests.push((
                a,
                MetaRequest::AntiEntropy {
                    partition: p,
                    ask: Ask::Root,
                },
            ));
        }
    }
    let secret = hadss::net::identity::load_cluster_secret(&cluster.cluster_secret_file)?;
    let answers = hadss::node::client::meta_requests(secret, requests).await?;
    let mut it = answers.into_iter();
    for size in groups {
        let mut roots = Vec::new();
        for _ in 0..size {
            match it.next() {
                Some(Ok(MetaResponse::AntiEntropy(Answer::Root(r)))) => roots.push(r),
                _ => return Ok(false),
            }
        }
        if roots.windows(2).any(|w| w[0] != w[1]) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reads every key of the history back (retrying on the next gateway), then lists every
/// client's prefix; the results are the checker's final operations.
async fn final_reads(gateways: &[S3], ops: &[Op], started: Instant) -> Vec<Op> {
    let keys: BTreeSet<&str> = ops
        .iter()
        .filter(|o| matches!(o.kind, Kind::Put | Kind::Delete))
        .map(|o| o.key.as_str())
        .collect();
    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut attempt = 0;
        loop {
            let g = (i + attempt) % gateways.len();
            let start_ms = workload::since_ms(started);
            let outcome = workload::read_outcome(key, gateways[g].get(key).await);
            attempt += 1;
            if outcome.is_success() || attempt >= FINAL_READ_ATTEMPTS {
                out.push(Op {
                    client: FINAL_CLIENT,
                    kind: Kind::Get,
                    key: key.to_string(),
                    write: None,
                    gateway: g,
                    start_ms,
                    end_ms: workload::since_ms(started),
                    outcome,
                });
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let clients: BTreeSet<u32> = ops.iter().map(|o| o.client).filter(|c| *c != FINAL_CLIENT).collect();
    for c in clients {
        let prefix = workload::prefix_of(c);
        let start_ms = workload::since_ms(started);
        let outcome = match gateways[0].list(&prefix).await {
            Ok(keys) => Outcome::Listed(keys),
            Err(e) => Outcome::Failed(e.to_string()),
        };
        out.push(Op {
            client: FINAL_CLIENT,
            kind: Kind::List,
            key: prefix,
            write: None,
            gateway: 0,
            start_ms,
            end_ms: workload::since_ms(started),
            outcome,
        });
    }
    out
}

/// Runs a scenario end to end and returns its report (also written to `DIR/report.json`,
/// with every operation in `DIR/ops.jsonl`). Stops the cluster unless `keep`.
pub async fn run(opts: &RunOptions) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.duration_s > 0, "--duration-s must be positive");
    if opts.dir.join("cluster.json").exists() {
        let _ = crate::down(&opts.dir).await;
    }
    if opts.dir.exists() {
        // Only a directory netsim made (or an empty one) is cleared.
        let empty = std::fs::read_dir(&opts.dir)?.next().is_none();
        anyhow::ensure!(
            empty || opts.dir.join("keys").join("cluster.secret").exists(),
            "{} is not empty and not a netsim cluster directory; refusing to clear it",
            opts.dir.display()
        );
        std::fs::remove_dir_all(&opts.dir).with_context(|| format!("clearing {}", opts.dir.display()))?;
    }
    let mut up = UpOptions::new(opts.dir.clone(), opts.hadss.clone());
    up.monitors = 3;
    up.gateways = 2;
    up.partitions = 64;
    up.faults = true;
    up.storage_config_extra = STORAGE_CONFIG.into();
    let mut cluster = crate::up(&up).await?;
    let result = drive(opts, &up, &mut cluster).await;
    if !opts.keep {
        let _ = crate::down(&opts.dir).await;
    }
    let report = result?;
    std::fs::write(opts.dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}

async fn drive(opts: &RunOptions, up: &UpOptions, cluster: &mut ClusterFile) -> anyhow::Result<Report> {
    let gateways = cluster_clients(cluster)?;
    gateways[0]
        .create_bucket()
        .await
        .map_err(|e| anyhow::anyhow!("creating the bucket: {e}"))?;
    let names = Names::of(cluster);
    if opts.broken_ack {
        for g in &names.gateways {
            fault::set_broken_ack(cluster, g, true)?;
        }
        // The gateways pick the rule up within FAULT_POLL_MS.
        tokio::time::sleep(Duration::from_millis(3 * hadss::net::fault::FAULT_POLL_MS)).await;
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let duration_ms = opts.duration_s * 1000;
    let steps = schedule(opts.scenario, &mut rng, duration_ms, &names);
    let mut workload_opts = WorkloadOptions {
        clients: opts.clients,
        seed: opts.seed,
        ..WorkloadOptions::default()
    };
    if matches!(opts.scenario, Scenario::TornWrite | Scenario::KillPrimaries) {
        workload_opts.size_min_bytes = 256 * 1024;
        workload_opts.size_max_bytes = 4 * 1024 * 1024;
        workload_opts.large_percent = 0;
        workload_opts.keys_per_client_max = 40;
    }
    let mut phases = vec![Phase {
        start_ms: 0,
        name: "healthy".into(),
        within_tolerance: true,
    }];
    let mut log = Vec::new();
    let mut filled = BTreeSet::new();
    let started = Instant::now();
    // Steps at time 0 happen before the first operation; the workload starts with the
    // first later step.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let start_load = || {
        tokio::spawn(workload::run(
            gateways.clone(),
            workload_opts.clone(),
            started,
            stop_rx.clone(),
        ))
    };
    let mut load = None;
    let mut harness_failures = Vec::new();
    for step in steps {
        if step.at_ms > 0 && load.is_none() {
            load = Some(start_load());
        }
        let wait = step.at_ms.saturating_sub(workload::since_ms(started));
        tokio::time::sleep(Duration::from_millis(wait)).await;
        harness_failures.extend(
            run_step(
                &step,
                cluster,
                up,
                &mut rng,
                &mut filled,
                &mut log,
                &mut phases,
                started,
            )
            .await,
        );
    }
    let load = load.unwrap_or_else(start_load);
    tokio::time::sleep(Duration::from_millis(
        duration_ms.saturating_sub(workload::since_ms(started)),
    ))
    .await;
    let _ = stop_tx.send(true);
    let mut ops = load.await.context("the workload panicked")?;
    phases.push(Phase {
        start_ms: workload::since_ms(started),
        name: "after the run".into(),
        within_tolerance: true,
    });
    heal_all(cluster, up, &mut filled, &mut log, started).await?;
    let healed = Instant::now();
    let deadline = healed + Duration::from_secs(opts.converge_timeout_s);
    let mut converged_after_ms = None;
    while Instant::now() < deadline {
        if roots_agree(cluster).await.unwrap_or(false) {
            converged_after_ms = Some(healed.elapsed().as_millis() as u64);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let gateways = cluster_clients(cluster)?;
    let finals = final_reads(&gateways, &ops, started).await;
    let final_reads = finals.iter().filter(|o| o.kind == Kind::Get).count();
    ops.extend(finals);
    write_ops(&opts.dir.join("ops.jsonl"), &ops)?;

    // A fault that could not be applied makes the run meaningless: it fails.
    let mut violations: Vec<Violation> = harness_failures
        .into_iter()
        .map(|detail| Violation {
            invariant: "harness".into(),
            detail,
        })
        .collect();
    violations.extend(check::check(&ops));
    let availability = check::availability(&ops, &phases);
    for p in &availability {
        if p.within_tolerance && p.fraction() < opts.min_availability {
            violations.push(Violation {
                invariant: "availability".into(),
                detail: format!(
                    "phase \"{}\": {:.2}% of operations succeeded, {:.2}% required",
                    p.name,
                    p.fraction() * 100.0,
                    opts.min_availability * 100.0
                ),
            });
        }
    }
    if converged_after_ms.is_none() {
        violations.push(Violation {
            invariant: "convergence".into(),
            detail: format!(
                "replicas' Merkle roots still differ {} s after the faults were lifted",
                opts.converge_timeout_s
            ),
        });
    }
    let primary_fallbacks = gateway_counter(cluster, "hadss_primary_fallbacks").await;
    if opts.scenario == Scenario::KillPrimaries && !opts.broken_ack && primary_fallbacks.is_none_or(|n| n == 0) {
        violations.push(Violation {
            invariant: "harness".into(),
            detail: format!(
                "no chunk put fell back to another primary ({primary_fallbacks:?}): the kills did not hit a write"
            ),
        });
    }
    let kinds = [Kind::Put, Kind::Get, Kind::Delete, Kind::List];
    let live: Vec<&Op> = ops.iter().filter(|o| o.client != FINAL_CLIENT).collect();
    Ok(Report {
        scenario: opts.scenario,
        seed: opts.seed,
        duration_s: opts.duration_s,
        broken_ack: opts.broken_ack,
        faults: log,
        ops: kinds
            .iter()
            .map(|k| {
                let of: Vec<&&Op> = live.iter().filter(|o| o.kind == *k).collect();
                (
                    *k,
                    of.iter().filter(|o| o.outcome.is_success()).count() as u64,
                    of.len() as u64,
                )
            })
            .collect(),
        latency_ms: kinds
            .iter()
            .map(|k| {
                let (p50, p99, max, _) = check::latency_ms(&ops, *k);
                (*k, p50, p99, max)
            })
            .collect(),
        phases: availability,
        converged_after_ms,
        final_reads,
        primary_fallbacks,
        pass: violations.is_empty(),
        violations,
    })
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    step: &Step,
    cluster: &mut ClusterFile,
    up: &UpOptions,
    rng: &mut StdRng,
    filled: &mut BTreeSet<String>,
    log: &mut Vec<(u64, String)>,
    phases: &mut Vec<Phase>,
    started: Instant,
) -> Vec<String> {
    let mut failed = Vec::new();
    phases.push(Phase {
        start_ms: workload::since_ms(started),
        name: step.phase.clone(),
        within_tolerance: true,
    });
    for action in &step.actions {
        let what = match apply(action, cluster, up, rng, filled).await {
            Ok(what) => what,
            Err(e) => {
                let what = format!("FAILED to apply {action:?}: {e:#}");
                failed.push(what.clone());
                what
            }
        };
        tracing::info!(at_ms = workload::since_ms(started), "{what}");
        log.push((workload::since_ms(started), what));
    }
    failed
}

fn write_ops(path: &std::path::Path, ops: &[Op]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for op in ops {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            storage: (1..=5).map(|i| format!("storage-{i}")).collect(),
            gateways: vec!["gateway-1".into(), "gateway-2".into()],
            monitors: (1..=3).map(|i| format!("monitor-{i}")).collect(),
        }
    }

    #[test]
    fn a_seed_reproduces_its_schedule_and_seeds_differ() {
        for scenario in Scenario::EACH.into_iter().chain([Scenario::All]) {
            let a = schedule(scenario, &mut StdRng::seed_from_u64(7), 60_000, &names());
            let b = schedule(scenario, &mut StdRng::seed_from_u64(7), 60_000, &names());
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{}", scenario.name());
            assert!(!a.is_empty());
            assert!(a.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "steps in time order");
            assert!(a.iter().all(|s| s.at_ms < 60_000));
        }
        let differ = (0..20u64).any(|seed| {
            format!(
                "{:?}",
                schedule(Scenario::All, &mut StdRng::seed_from_u64(seed), 60_000, &names())
            ) != format!(
                "{:?}",
                schedule(Scenario::All, &mut StdRng::seed_from_u64(seed + 1), 60_000, &names())
            )
        });
        assert!(differ);
    }
}
