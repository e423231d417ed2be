//! The deterministic simulator mode: a few hundred seeds of each sans-IO core (SWIM, the
//! write coordinator, the primary-copy sender, anti-entropy) must hold their invariants. A failing seed is printed;
//! `netsim sim --only KIND --seed S` replays it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use netsim::sim::{SimKind, run_seeds};

fn seeds_pass(kind: SimKind, seeds: u64) {
    let started = std::time::Instant::now();
    let results = run_seeds(&[kind], 0, seeds);
    let (_, passed, failed) = &results[0];
    eprintln!(
        "{}: {passed}/{seeds} seeds passed in {:.1} s",
        kind.name(),
        started.elapsed().as_secs_f64()
    );
    if let Some((seed, why)) = failed {
        panic!(
            "{} seed {seed} failed: {why}\nreplay: netsim sim --only {} --seed {seed}",
            kind.name(),
            kind.name()
        );
    }
}

#[test]
fn swim_seeds() {
    seeds_pass(SimKind::Swim, 500);
}

#[test]
fn write_coordinator_seeds() {
    seeds_pass(SimKind::Write, 5_000);
}

#[test]
fn primary_write_seeds() {
    seeds_pass(SimKind::Primary, 5_000);
}

#[test]
fn anti_entropy_seeds() {
    seeds_pass(SimKind::AntiEntropy, 500);
}
