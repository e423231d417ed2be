//! Every `netsim run` scenario, short (a 20 s workload each), against real processes: each
//! must PASS its invariants. And the checker must catch a deliberately broken build (the
//! gateways acknowledging writes before replicating them). The longer soak is
//! `netsim run all --duration-s 600` (docs/NETSIM.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Down, hadss_binary};
use netsim::scenario::{Report, RunOptions, Scenario};

/// Workload seconds per scenario.
const DURATION_S: u64 = 20;

async fn run(scenario: Scenario, seed: u64, broken_ack: bool) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let _down = Down(cluster_dir.clone());
    let opts = RunOptions {
        scenario,
        seed,
        duration_s: DURATION_S,
        dir: cluster_dir.clone(),
        hadss: hadss_binary(),
        clients: 4,
        keep: false,
        broken_ack,
        converge_timeout_s: 90,
        min_availability: 0.95,
    };
    let report = netsim::scenario::run(&opts).await.expect("the run itself failed");
    eprintln!("{}", report.render());
    report
}

/// One line per broken invariant with its count and first example: short enough that CI's
/// excerpt of the output keeps it (the full report is printed above it).
fn failure_summary(report: &Report) -> String {
    let mut by_kind: std::collections::BTreeMap<&str, (usize, &str)> = Default::default();
    for v in &report.violations {
        by_kind.entry(&v.invariant).or_insert((0, &v.detail)).0 += 1;
    }
    let mut out = format!("{} failed its invariants:", report.scenario.name());
    for (kind, (count, first)) in by_kind {
        out.push_str(&format!("\n  {kind} x{count}, first: {first}"));
    }
    out
}

async fn passes(scenario: Scenario) {
    let report = run(scenario, 1, false).await;
    assert!(report.pass, "{}", failure_summary(&report));
    let (ok, all) = report.ops.iter().fold((0, 0), |(o, a), (_, ok, all)| (o + ok, a + all));
    assert!(all > 0 && ok > 0, "the workload did nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_storage() {
    passes(Scenario::KillStorage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_down() {
    passes(Scenario::MonitorsDown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition() {
    passes(Scenario::Partition).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrot() {
    passes(Scenario::Bitrot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_write() {
    passes(Scenario::TornWrite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_primaries() {
    passes(Scenario::KillPrimaries).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full() {
    passes(Scenario::DiskFull).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew() {
    passes(Scenario::ClockSkew).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart() {
    passes(Scenario::RollingRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out() {
    passes(Scenario::ScaleOut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all() {
    passes(Scenario::All).await;
}

/// The same torn-write run with the gateways acknowledging before replicating: killing a
/// gateway loses the writes it acknowledged but had not sent, and the checker says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_build_that_acknowledges_before_replicating() {
    let report = run(Scenario::TornWrite, 1, true).await;
    assert!(!report.pass, "the broken build passed");
    assert!(
        report.violations.iter().any(|v| v.invariant == "lost-write"),
        "expected lost acknowledged writes, got {:#?}",
        report.violations
    );
}
