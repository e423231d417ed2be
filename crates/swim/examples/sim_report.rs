//! Simulator report: failure detection time, broadcast dissemination rounds and message
//! load at 10, 100 and 1000 members, LAN preset, in protocol periods and milliseconds.
//!
//! Run: `cargo run --release -p swim --example sim_report [seeds]`
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::Instant;

use swim::MembershipEvent;
use swim::sim::{LinkConfig, Sim, SimConfig};

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

struct Row {
    n: usize,
    period_ms: u64,
    suspicion_ms: u64,
    det_all: Vec<u64>,
    det_first: Vec<u64>,
    dissem: Vec<u64>,
    dissem_full: Vec<u64>,
    load_steady: f64,
    load_bytes: f64,
    load_failure: f64,
    false_downs: usize,
    wall_ms: u128,
}

fn env_u64(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

fn config(seed: u64, n: usize, loss: f64) -> SimConfig {
    let mut cfg = SimConfig::lan(seed, n);
    cfg.link = LinkConfig::lan().with_loss(loss);
    if let Some(v) = env_u64("SUSPICION_MS") {
        cfg.swim.suspicion_timeout_ms = v;
    }
    if let Some(v) = env_u64("PROBE_RTT_MS") {
        cfg.swim.probe_rtt_ms = v;
    }
    cfg
}

fn run(n: usize, seeds: u64, loss: f64) -> Row {
    let start = Instant::now();
    let mut row = Row {
        n,
        period_ms: 0,
        suspicion_ms: 0,
        det_all: vec![],
        det_first: vec![],
        dissem: vec![],
        dissem_full: vec![],
        load_steady: 0.0,
        load_bytes: 0.0,
        load_failure: 0.0,
        false_downs: 0,
        wall_ms: 0,
    };
    for seed in 0..seeds {
        let cfg = config(1000 + seed, n, loss);
        let period = cfg.swim.probe_period_ms;
        row.period_ms = period;
        row.suspicion_ms = cfg.swim.suspicion_timeout_ms;
        let mut sim = Sim::new(cfg).unwrap();
        sim.bootstrap_all().unwrap();
        sim.run_for(5 * period);

        // Steady-state load over 20 periods.
        let before = sim.core_stats_total();
        sim.run_for(20 * period);
        let after = sim.core_stats_total();
        row.load_steady += (after.packets_sent - before.packets_sent) as f64 / n as f64 / 20.0;
        row.load_bytes += (after.bytes_sent - before.bytes_sent) as f64 / n as f64 / 20.0;
        // Broadcast dissemination from member 0.
        let t0 = sim.now_ms();
        sim.publish_epoch(0, 7, [7; 32]).unwrap();
        sim.run_until_true(60 * period, 10, |s| s.members_with_epoch(7) == n);
        let mut got: Vec<u64> = sim
            .trace()
            .iter()
            .filter(|e| e.at_ms >= t0 && matches!(e.event, MembershipEvent::Broadcast(_)))
            .map(|e| e.at_ms - t0)
            .collect();
        got.sort_unstable();
        if got.len() == n - 1 {
            row.dissem_full.push(*got.last().unwrap());
        } else {
            row.dissem_full.push(u64::MAX);
        }
        row.dissem.extend(got);
        // Kill 10% (at least 1) and measure detection.
        let victims: Vec<usize> = (0..n).rev().take((n / 10).max(1)).collect();
        let survivors = n - victims.len();
        let t0 = sim.now_ms();
        let trace_from = sim.trace().len();
        let before = sim.core_stats_total();
        for &v in &victims {
            sim.kill(v);
        }
        sim.run_until_true(120 * period, 50, |s| s.converged());
        let after = sim.core_stats_total();
        let elapsed_periods = (sim.now_ms() - t0) as f64 / period as f64;
        row.load_failure +=
            (after.packets_sent - before.packets_sent) as f64 / survivors as f64 / elapsed_periods.max(1.0);
        let mut first: BTreeMap<usize, u64> = BTreeMap::new();
        for e in &sim.trace()[trace_from..] {
            if let MembershipEvent::Down(id) = &e.event {
                let idx: usize = id.peer_id().to_string()[1..].parse().unwrap();
                if victims.contains(&idx) && sim.is_alive(e.node) {
                    let d = e.at_ms - t0;
                    row.det_all.push(d);
                    let f = first.entry(idx).or_insert(d);
                    *f = (*f).min(d);
                } else if !victims.contains(&idx) {
                    row.false_downs += 1;
                }
            }
        }
        row.det_first.extend(first.values());
    }
    row.det_all.sort_unstable();
    row.det_first.sort_unstable();
    row.dissem.sort_unstable();
    row.dissem_full.sort_unstable();
    row.load_steady /= seeds as f64;
    row.load_bytes /= seeds as f64;
    row.load_failure /= seeds as f64;
    row.wall_ms = start.elapsed().as_millis();
    row
}

fn main() {
    let seeds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let loss: f64 = std::env::var("LOSS").ok().and_then(|v| v.parse().ok()).unwrap_or(0.01);
    let sizes: Vec<usize> = std::env::var("SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or(vec![10, 100, 1000]);
    println!(
        "# swim simulator report (LAN preset, {:.1}% loss, 1-2 ms links, {seeds} seeds per size)\n",
        loss * 100.0
    );
    println!(
        "| members | suspicion timeout | detect p50 (all survivors) | detect p99 (all survivors) | first detect p50 / p99 | epoch dissemination p50 / p99 / all | msgs/member/period steady | bytes/member/period | msgs/member/period during failure | false downs | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let r = run(n, if n >= 1000 { seeds.min(2) } else { seeds }, loss);
        let p = r.period_ms as f64;
        let f = |ms: u64| format!("{ms} ms ({:.1} T)", ms as f64 / p);
        println!(
            "| {} | {} ms | {} | {} | {:.1} / {:.1} T | {:.1} / {:.1} / {:.1} T | {:.2} | {:.0} | {:.2} | {} | {} ms |",
            r.n,
            r.suspicion_ms,
            f(pct(&r.det_all, 0.5)),
            f(pct(&r.det_all, 0.99)),
            pct(&r.det_first, 0.5) as f64 / p,
            pct(&r.det_first, 0.99) as f64 / p,
            pct(&r.dissem, 0.5) as f64 / p,
            pct(&r.dissem, 0.99) as f64 / p,
            r.dissem_full.last().copied().unwrap_or(0) as f64 / p,
            r.load_steady,
            r.load_bytes,
            r.load_failure,
            r.false_downs,
            r.wall_ms
        );
    }
    println!(
        "\nT = one protocol period (probe_period_ms = 1000). Target: detect p99 <= 5 T at 1% loss, 100 members; dissemination to 1000 members <= 3*log2(1000) = 29.9 T."
    );
}
