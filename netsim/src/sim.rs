//! The deterministic simulator mode (`netsim sim`): the sans-IO protocol cores run in one
//! process with virtual time and a seeded network, so thousands of seeds run in minutes and
//! a failing seed replays exactly (`netsim sim --only KIND --seed S`).
//!
//! - `swim`: `swim::sim::Sim` with 5–24 members, seeded latency and loss; some members
//!   killed, the rest split into two sides for a while, then healed. Invariants: the
//!   survivors converge (each sees exactly the other live members) within a bound after
//!   healing, and no live member is still declared down then.
//! - `write`: one `WriteCoordinator` write with random N, W, fallbacks, liveness and
//!   per-target behaviour (acknowledges, fails, never answers, answers late), driven by a
//!   virtual clock. Invariants: exactly one outcome; `Acked` only with ≥ W distinct targets
//!   that acknowledged, each sent to once; hints only on fallbacks, for replicas; an ack
//!   whenever W of the first N replicas are alive and prompt; finished by the write deadline.
//! - `primary`: one primary-copy write from a sender (`storage::primary::PrimaryWrite`) over
//!   3–8 nodes, each primary running the real `WriteCoordinator` against the model cluster and
//!   meeting a random fate: healthy (answers after a delay, maybe after the sender's deadline),
//!   dies before forwarding, after forwarding, or after acknowledging (the answer is lost),
//!   refuses for space. Invariants: exactly one outcome; `Stored` only with ≥ W durable copies
//!   in the cluster; each node asked once, at most the attempt limit; answers arriving after
//!   the sender moved on change nothing; a live, prompt, healthy first candidate with W live
//!   nodes means `Stored`; decided within attempts × the answer timeout.
//! - `anti-entropy`: 2–4 replicas of one record partition (in memory, the store's Merkle
//!   shape) that diverge at random (missing keys, older and newer versions, keys only one
//!   holds), reconciled by rounds of `antientropy::Session`s against `antientropy::answer`
//!   with questions and answers lost at random. Invariants: every replica ends with the
//!   last-writer-wins merge of all of them (nothing lost, no older version winning) and
//!   identical roots, within a bound on rounds; identical replicas exchange only roots.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use chunkstore::MerkleTree;
use hadss::cluster::NodeId;
use hadss::storage::antientropy::{self, Answer, Ask, Session};
use hadss::storage::records::{KeyVersion, PARTITION_MERKLE_SHAPE, Version, merkle_item};
use hadss::storage::replication::{Counting, Outcome, WriteCoordinator, WriteEffect, WriteTimeouts};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The cores the simulator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum SimKind {
    /// SWIM membership.
    Swim,
    /// The replication write coordinator.
    Write,
    /// Merkle anti-entropy of records.
    AntiEntropy,
    /// The sender's side of a primary-copy write.
    Primary,
}

impl SimKind {
    /// All of them.
    pub const ALL: [SimKind; 4] = [SimKind::Swim, SimKind::Write, SimKind::AntiEntropy, SimKind::Primary];

    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            SimKind::Swim => "swim",
            SimKind::Write => "write",
            SimKind::AntiEntropy => "anti-entropy",
            SimKind::Primary => "primary",
        }
    }
}

/// Runs one seed of one core; `Err` says which invariant broke.
pub fn run_seed(kind: SimKind, seed: u64) -> Result<String, String> {
    match kind {
        SimKind::Swim => swim_seed(seed),
        SimKind::Write => write_seed(seed),
        SimKind::AntiEntropy => anti_entropy_seed(seed),
        SimKind::Primary => primary_seed(seed),
    }
}

fn rng_of(kind: SimKind, seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ kind as u64)
}

// ---------------------------------------------------------------------------------------
// SWIM

/// Probe periods allowed for the survivors to converge after healing.
const SWIM_CONVERGE_PERIODS: u64 = 120;

fn swim_seed(seed: u64) -> Result<String, String> {
    use swim::sim::{LinkConfig, Sim, SimConfig};
    let mut rng = rng_of(SimKind::Swim, seed);
    let n = rng.random_range(5..=24usize);
    let mut sim = Sim::new(SimConfig::lan(seed, n)).map_err(|e| e.to_string())?;
    let period = sim.config().swim.probe_period_ms;
    let loss = [0.0, 0.01, 0.05][rng.random_range(0..3usize)];
    sim.set_link(LinkConfig::lan().with_loss(loss));
    sim.bootstrap_all().map_err(|e| e.to_string())?;
    sim.run_for(rng.random_range(3..10u64) * period);
    let kills = rng.random_range(0..=(n - 1) / 3);
    let mut killed = BTreeSet::new();
    while killed.len() < kills {
        killed.insert(rng.random_range(0..n));
    }
    for &k in &killed {
        sim.kill(k);
    }
    let split = rng.random_bool(0.5);
    if split {
        sim.partition((0..n).map(|_| u32::from(rng.random_bool(0.5))).collect());
        sim.run_for(rng.random_range(5..40u64) * period);
        sim.heal();
    } else {
        sim.run_for(rng.random_range(5..20u64) * period);
    }
    let t_heal = sim.now_ms();
    let converged = sim.run_until_true(SWIM_CONVERGE_PERIODS * period, period, |s| s.converged());
    let Some(at) = converged else {
        return Err(format!(
            "{n} members, {} killed, split {split}, loss {loss}: survivors did not converge within {SWIM_CONVERGE_PERIODS} periods of healing",
            killed.len()
        ));
    };
    Ok(format!(
        "{n} members, {} killed, split {split}, loss {loss}: converged {:.0} periods after healing",
        killed.len(),
        (at - t_heal) as f64 / period as f64
    ))
}

// ---------------------------------------------------------------------------------------
// Write coordinator

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Ack(u64),
    Fail(u64),
    Silent,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Timer,
    Answer { target: usize, ok: bool },
}

fn write_seed(seed: u64) -> Result<String, String> {
    let mut rng = rng_of(SimKind::Write, seed);
    let n = rng.random_range(1..=5usize);
    let w = rng.random_range(1..=n);
    let fallbacks = rng.random_range(0..=4usize);
    let counting = if rng.random_bool(0.5) {
        Counting::Replicas
    } else {
        Counting::AnyTarget
    };
    let total = n + fallbacks;
    let timeouts = WriteTimeouts {
        target_timeout_ms: rng.random_range(50..500u64),
        write_timeout_ms: rng.random_range(500..3000u64),
    };
    let nodes: Vec<NodeId> = (0..total).map(|i| NodeId(format!("node-{i}").into_bytes())).collect();
    let alive: Vec<bool> = (0..total).map(|_| rng.random_bool(0.8)).collect();
    let behaviour: Vec<Behaviour> = (0..total)
        .map(|_| match rng.random_range(0..10u32) {
            0..6 => Behaviour::Ack(rng.random_range(1..timeouts.target_timeout_ms * 2)),
            6..8 => Behaviour::Fail(rng.random_range(1..timeouts.target_timeout_ms)),
            _ => Behaviour::Silent,
        })
        .collect();
    let index = |id: &NodeId| nodes.iter().position(|n| n == id);
    let is_alive = |id: &NodeId| index(id).is_some_and(|i| alive[i]);
    let describe =
        format!("N={n} W={w} {counting:?} fallbacks={fallbacks} {timeouts:?} alive={alive:?} behaviour={behaviour:?}");

    let mut now_ms = 0u64;
    let mut fx = Vec::new();
    let mut coord = WriteCoordinator::start(now_ms, &nodes, n, w, counting, timeouts, &is_alive, &mut fx);
    let mut queue: BinaryHeap<std::cmp::Reverse<(u64, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut sent: BTreeSet<usize> = BTreeSet::new();
    let mut acked_by: BTreeSet<usize> = BTreeSet::new();
    let mut outcomes: Vec<(u64, Outcome)> = Vec::new();
    let mut steps = 0u32;
    loop {
        for effect in fx.drain(..) {
            match effect {
                WriteEffect::Send { to, hint_for } => {
                    let i = index(&to).ok_or_else(|| format!("{describe}: sent to an unknown node"))?;
                    if !sent.insert(i) {
                        return Err(format!("{describe}: node {i} sent to twice"));
                    }
                    if let Some(h) = &hint_for {
                        let r = index(h).ok_or_else(|| format!("{describe}: hint for an unknown node"))?;
                        if i < n || r >= n {
                            return Err(format!("{describe}: hint on node {i} for node {r}"));
                        }
                    } else if i >= n {
                        return Err(format!("{describe}: fallback {i} sent to without a hint"));
                    }
                    seq += 1;
                    match behaviour[i] {
                        Behaviour::Ack(d) if alive[i] => queue.push(std::cmp::Reverse((
                            now_ms + d,
                            seq,
                            Event::Answer { target: i, ok: true },
                        ))),
                        Behaviour::Fail(d) => queue.push(std::cmp::Reverse((
                            now_ms + d,
                            seq,
                            Event::Answer { target: i, ok: false },
                        ))),
                        _ => {}
                    }
                }
                WriteEffect::Timer { at_ms } => {
                    seq += 1;
                    queue.push(std::cmp::Reverse((at_ms, seq, Event::Timer)));
                }
                WriteEffect::Done(outcome) => outcomes.push((now_ms, outcome)),
                WriteEffect::Settled => {}
            }
        }
        if coord.is_finished() {
            break;
        }
        steps += 1;
        if steps > 10_000 {
            return Err(format!("{describe}: did not finish in 10,000 steps"));
        }
        let Some(std::cmp::Reverse((at, _, event))) = queue.pop() else {
            return Err(format!("{describe}: unfinished with nothing left to happen"));
        };
        now_ms = now_ms.max(at);
        match event {
            Event::Timer => coord.handle_timer(now_ms, &is_alive, &mut fx),
            Event::Answer { target, ok: true } => {
                acked_by.insert(target);
                coord.handle_ack(&nodes[target], &mut fx);
            }
            Event::Answer { target, ok: false } => coord.handle_failure(now_ms, &nodes[target], &is_alive, &mut fx),
        }
    }
    let [(done_at, outcome)] = outcomes.as_slice() else {
        return Err(format!("{describe}: {} outcomes", outcomes.len()));
    };
    if *done_at > timeouts.write_timeout_ms {
        return Err(format!("{describe}: decided at {done_at} ms, after the write deadline"));
    }
    let prompt_replicas = (0..n)
        .filter(|&i| alive[i] && matches!(behaviour[i], Behaviour::Ack(d) if d < timeouts.target_timeout_ms))
        .count();
    match outcome {
        Outcome::Acked { durable_on, .. } => {
            let on: BTreeSet<usize> = durable_on.iter().filter_map(index).collect();
            if on.len() != durable_on.len() || on.len() < w {
                return Err(format!("{describe}: acked on {durable_on:?}, W={w}"));
            }
            if !on.is_subset(&acked_by) {
                return Err(format!("{describe}: acked on nodes that never acknowledged"));
            }
            // Nodes 0..n are the replicas.
            if counting == Counting::Replicas && on.iter().filter(|&&i| i < n).count() < w {
                return Err(format!(
                    "{describe}: acked on {durable_on:?}: fewer than W={w} replicas"
                ));
            }
            Ok(format!("{describe}: acked at {done_at} ms on {}", on.len()))
        }
        Outcome::Failed { durable_acks, .. } => {
            if prompt_replicas >= w {
                return Err(format!(
                    "{describe}: failed ({durable_acks} acks) though {prompt_replicas} replicas were alive and prompt"
                ));
            }
            if *durable_acks >= w {
                return Err(format!("{describe}: failed with {durable_acks} acks"));
            }
            Ok(format!("{describe}: failed at {done_at} ms"))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Anti-entropy

/// Rounds (each replica runs one session with a random peer) allowed to converge.
const AE_ROUNDS_MAX: u32 = 60;

struct Replica {
    records: BTreeMap<Vec<u8>, Version>,
    tree: MerkleTree,
}

impl Replica {
    fn new() -> Replica {
        Replica {
            records: BTreeMap::new(),
            tree: MerkleTree::new(PARTITION_MERKLE_SHAPE).unwrap_or_else(|| unreachable!("valid shape")),
        }
    }

    /// Last-writer-wins apply.
    fn apply(&mut self, key: &[u8], version: Version) {
        match self.records.get(key) {
            Some(held) if *held >= version => {}
            held => {
                if let Some(old) = held {
                    let (k, d) = merkle_item(key, old);
                    self.tree.remove(&k, &d);
                }
                let (k, d) = merkle_item(key, &version);
                self.tree.insert(&k, &d);
                self.records.insert(key.to_vec(), version);
            }
        }
    }

    /// Items of `leaves` after `after`, in key order, at most `limit`; and whether that
    /// was all of them.
    fn leaf_items(&self, leaves: &[u32], after: Option<&[u8]>, limit: usize) -> (Vec<KeyVersion>, bool) {
        let leaves: BTreeSet<u32> = leaves.iter().copied().collect();
        let mut out = Vec::new();
        for (k, v) in &self.records {
            if after.is_some_and(|a| k.as_slice() <= a) {
                continue;
            }
            if !leaves.contains(&self.tree.leaf_of(blake3::hash(k).as_bytes())) {
                continue;
            }
            if out.len() == limit {
                return (out, false);
            }
            out.push((k.clone(), *v));
        }
        (out, true)
    }
}

/// One session from `a` to `b`, each message lost with probability `loss`. Returns the
/// plan, or `None` if a message was lost (the session is abandoned), and the bytes moved.
fn session(
    a: &Replica,
    b: &Replica,
    loss: f64,
    rng: &mut StdRng,
) -> Result<(Option<antientropy::Plan>, u64, u32), String> {
    let (mut s, mut ask): (Session, Ask) = Session::new(a.tree.clone());
    loop {
        if rng.random_bool(loss) {
            return Ok((None, s.sent_bytes() + s.received_bytes(), s.rounds()));
        }
        let answer: Answer = antientropy::answer(Some(&b.tree), PARTITION_MERKLE_SHAPE, &ask, &mut |leaves, after| {
            b.leaf_items(leaves, after, antientropy::ITEMS_PER_ANSWER_MAX)
        });
        if rng.random_bool(loss) {
            return Ok((None, s.sent_bytes() + s.received_bytes(), s.rounds()));
        }
        let next = s
            .on_answer(answer, &mut |leaves| a.leaf_items(leaves, None, usize::MAX).0)
            .map_err(|e| e.to_string())?;
        match next {
            Some(n) => ask = n,
            None => {
                let bytes = s.sent_bytes() + s.received_bytes();
                let rounds = s.rounds();
                return Ok((Some(s.into_plan()), bytes, rounds));
            }
        }
    }
}

fn anti_entropy_seed(seed: u64) -> Result<String, String> {
    let mut rng = rng_of(SimKind::AntiEntropy, seed);
    let replicas = rng.random_range(2..=4usize);
    let keys = rng.random_range(0..3000usize);
    let differ_percent = [0u32, 1, 10, 50][rng.random_range(0..4usize)];
    let loss = [0.0, 0.05, 0.2][rng.random_range(0..3usize)];
    let describe = format!("{replicas} replicas, {keys} keys, {differ_percent}% differ, {loss} message loss");
    let mut reps: Vec<Replica> = (0..replicas).map(|_| Replica::new()).collect();
    let version = |rng: &mut StdRng| Version {
        hlc: rng.random_range(1..1_000_000u64),
        unique: rng.random(),
    };
    for k in 0..keys {
        let key = format!("bucket/object-{k:06}").into_bytes();
        let base = version(&mut rng);
        for r in reps.iter_mut() {
            if rng.random_range(0..100u32) >= differ_percent {
                r.apply(&key, base);
            } else {
                match rng.random_range(0..3u32) {
                    0 => {}                                // missing here
                    1 => r.apply(&key, version(&mut rng)), // another version
                    _ => r.apply(
                        &key,
                        Version {
                            hlc: base.hlc + 1,
                            ..base
                        },
                    ), // newer
                }
            }
        }
    }
    // What every replica must end with: the newest version of every key anyone holds.
    let mut merged: BTreeMap<Vec<u8>, Version> = BTreeMap::new();
    for r in &reps {
        for (k, v) in &r.records {
            let e = merged.entry(k.clone()).or_insert(*v);
            *e = (*e).max(*v);
        }
    }
    let identical_at_start = reps.windows(2).all(|p| p[0].records == p[1].records);
    let mut bytes = 0u64;
    let mut rounds = 0u32;
    loop {
        if reps.iter().all(|r| r.records == merged) {
            break;
        }
        rounds += 1;
        if rounds > AE_ROUNDS_MAX {
            return Err(format!("{describe}: not converged after {AE_ROUNDS_MAX} rounds"));
        }
        for i in 0..replicas {
            let j = (i + rng.random_range(1..replicas)) % replicas;
            let (plan, moved, _) = session(&reps[i], &reps[j], loss, &mut rng)?;
            bytes += moved;
            let Some(plan) = plan else { continue };
            for key in &plan.pull {
                if let Some(v) = reps[j].records.get(key).copied() {
                    reps[i].apply(key, v);
                }
            }
            for key in &plan.push {
                if let Some(v) = reps[i].records.get(key).copied() {
                    reps[j].apply(key, v);
                }
            }
        }
    }
    let roots: Vec<_> = reps.iter().map(|r| r.tree.root()).collect();
    if roots.windows(2).any(|p| p[0] != p[1]) {
        return Err(format!("{describe}: same records, different roots"));
    }
    if identical_at_start && loss == 0.0 {
        // Identical replicas: one session exchanges the root question and answer only.
        let (plan, moved, session_rounds) = session(&reps[0], &reps[1], 0.0, &mut rng)?;
        if session_rounds != 1 || plan.is_none_or(|p| !p.pull.is_empty() || !p.push.is_empty()) {
            return Err(format!(
                "{describe}: identical replicas took {session_rounds} rounds ({moved} bytes)"
            ));
        }
    }
    Ok(format!("{describe}: converged in {rounds} rounds, {bytes} bytes"))
}

// ---------------------------------------------------------------------------------------
// Primary-copy writes

/// What happens to one node when it is asked to be the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Coordinates and answers after this many ms.
    Healthy(u64),
    DiesBeforeForwarding,
    DiesAfterForwarding,
    DiesAfterAcknowledging,
    Full(u64),
}

/// Runs a primary's coordinator against the model cluster (live targets acknowledge, dead
/// ones fail); `forward: false` makes only the primary's own copy. Returns the copies made
/// durable and whether it reached W.
fn coordinate_as_primary(
    primary: usize,
    nodes: &[NodeId],
    (n, w): (usize, usize),
    alive: &[bool],
    forward: bool,
) -> Result<(BTreeSet<usize>, bool), String> {
    let index = |id: &NodeId| nodes.iter().position(|x| x == id);
    let is_alive = |id: &NodeId| index(id).is_some_and(|i| alive[i]);
    let mut fx = Vec::new();
    let mut c = WriteCoordinator::start(
        0,
        nodes,
        n,
        w,
        Counting::AnyTarget,
        WriteTimeouts::default(),
        &is_alive,
        &mut fx,
    );
    let (mut durable, mut acked) = (BTreeSet::new(), false);
    for _ in 0..=nodes.len() * 2 {
        if fx.is_empty() {
            break;
        }
        for e in std::mem::take(&mut fx) {
            match e {
                WriteEffect::Send { to, .. } => {
                    let i = index(&to).ok_or("the coordinator sent to an unknown node")?;
                    if alive[i] && (forward || i == primary) {
                        durable.insert(i);
                        c.handle_ack(&to, &mut fx);
                    } else {
                        c.handle_failure(0, &to, &is_alive, &mut fx);
                    }
                }
                WriteEffect::Done(Outcome::Acked { .. }) => acked = true,
                _ => {}
            }
        }
    }
    Ok((durable, acked))
}

/// A primary's answer or deadline in the queue: (at ms, sequence, node, code, copies); codes
/// 0 silent (the deadline), 1 stored, 2 failed, 3 full.
type PrimaryEvent = (u64, u64, usize, u8, u32);

fn primary_seed(seed: u64) -> Result<String, String> {
    use hadss::storage::primary::{PrimaryAnswer, PrimaryEffect, PrimaryOutcome, PrimaryWrite};
    let mut rng = rng_of(SimKind::Primary, seed);
    let total = rng.random_range(3..=8usize);
    let n = rng.random_range(1..=total.min(5));
    let w = rng.random_range(1..=n);
    let attempts_max = rng.random_range(1..=4usize);
    let timeout_ms = rng.random_range(100..1000u64);
    let nodes: Vec<NodeId> = (0..total).map(|i| NodeId(format!("node-{i}").into_bytes())).collect();
    let alive: Vec<bool> = (0..total).map(|_| rng.random_bool(0.75)).collect();
    let fates: Vec<Fate> = (0..total)
        .map(|_| match rng.random_range(0..10u32) {
            0..5 => Fate::Healthy(rng.random_range(1..timeout_ms * 2)),
            5 => Fate::DiesBeforeForwarding,
            6 => Fate::DiesAfterForwarding,
            7 => Fate::DiesAfterAcknowledging,
            _ => Fate::Full(rng.random_range(1..timeout_ms)),
        })
        .collect();
    let index = |id: &NodeId| nodes.iter().position(|x| x == id);
    let is_alive = |id: &NodeId| index(id).is_some_and(|i| alive[i]);
    let describe =
        format!("N={n} W={w} attempts={attempts_max} timeout={timeout_ms} ms alive={alive:?} fates={fates:?}");

    let mut now_ms = 0u64;
    let mut fx = Vec::new();
    let mut write = PrimaryWrite::start(&nodes, &is_alive, attempts_max, timeout_ms, &mut fx);
    // (at, seq, node, answer): answers and deadlines (a deadline is `Silent` from that node).
    let mut queue: BinaryHeap<std::cmp::Reverse<PrimaryEvent>> = BinaryHeap::new();
    let (mut seq, mut asked, mut durable) = (0u64, Vec::<usize>::new(), BTreeSet::<usize>::new());
    let mut outcomes: Vec<(u64, PrimaryOutcome)> = Vec::new();
    for _ in 0..=total * 3 {
        for effect in std::mem::take(&mut fx) {
            match effect {
                PrimaryEffect::Send { to, timeout_ms: t } => {
                    let p = index(&to).ok_or_else(|| format!("{describe}: asked an unknown node"))?;
                    if asked.contains(&p) {
                        return Err(format!("{describe}: node {p} asked twice"));
                    }
                    asked.push(p);
                    if asked.len() > attempts_max {
                        return Err(format!("{describe}: asked {} nodes", asked.len()));
                    }
                    seq += 1;
                    queue.push(std::cmp::Reverse((now_ms + t, seq, p, 0, 0)));
                    if !alive[p] {
                        continue;
                    }
                    let answer = match fates[p] {
                        Fate::DiesBeforeForwarding => {
                            durable.extend(coordinate_as_primary(p, &nodes, (n, w), &alive, false)?.0);
                            None
                        }
                        Fate::DiesAfterForwarding | Fate::DiesAfterAcknowledging => {
                            durable.extend(coordinate_as_primary(p, &nodes, (n, w), &alive, true)?.0);
                            None
                        }
                        Fate::Healthy(d) => {
                            let (made, acked) = coordinate_as_primary(p, &nodes, (n, w), &alive, true)?;
                            let copies = made.len() as u32;
                            durable.extend(made);
                            Some((d, if acked { 1 } else { 2 }, copies))
                        }
                        Fate::Full(d) => Some((d, 3, 0)),
                    };
                    if let Some((d, code, copies)) = answer {
                        seq += 1;
                        queue.push(std::cmp::Reverse((now_ms + d, seq, p, code, copies)));
                    }
                }
                PrimaryEffect::Done(outcome) => outcomes.push((now_ms, outcome)),
            }
        }
        if write.is_done() {
            break;
        }
        let Some(std::cmp::Reverse((at, _, p, code, copies))) = queue.pop() else {
            return Err(format!("{describe}: unfinished with nothing left to happen"));
        };
        now_ms = now_ms.max(at);
        let answer = match code {
            1 => PrimaryAnswer::Stored { copies },
            2 => PrimaryAnswer::Failed,
            3 => PrimaryAnswer::Full,
            _ => PrimaryAnswer::Silent,
        };
        // An answer in time cancels that node's deadline; an answer after its deadline is
        // still delivered (late), and must change nothing.
        if code != 0 && write.current() == Some(&nodes[p]) {
            queue.retain(|std::cmp::Reverse((_, _, q, c, _))| !(*q == p && *c == 0));
        }
        write.handle(&nodes[p], answer, &mut fx);
    }
    let [(done_at, outcome)] = outcomes.as_slice() else {
        return Err(format!("{describe}: {} outcomes", outcomes.len()));
    };
    if *done_at > timeout_ms * attempts_max as u64 {
        return Err(format!("{describe}: decided at {done_at} ms"));
    }
    let live = alive.iter().filter(|a| **a).count();
    let first = asked.first().copied();
    match outcome {
        PrimaryOutcome::Stored { copies, .. } => {
            if durable.len() < w || (*copies as usize) < w {
                return Err(format!("{describe}: stored with {} durable copies < W", durable.len()));
            }
        }
        _ => {
            if let Some(f) = first
                && alive[f]
                && live >= w
                && matches!(fates[f], Fate::Healthy(d) if d < timeout_ms)
            {
                return Err(format!(
                    "{describe}: a prompt healthy primary with W live nodes, outcome {outcome:?}"
                ));
            }
        }
    }
    Ok(format!(
        "{describe}: {outcome:?} at {done_at} ms after {} primaries",
        asked.len()
    ))
}

/// The first failing seed of a core and what broke.
pub type FirstFailure = Option<(u64, String)>;

/// Runs `seeds` seeds from `first` of each of `kinds`; returns per kind the seeds passed
/// and the first failure.
pub fn run_seeds(kinds: &[SimKind], first: u64, seeds: u64) -> Vec<(SimKind, u64, FirstFailure)> {
    kinds
        .iter()
        .map(|&kind| {
            let mut passed = 0;
            let mut failed = None;
            for seed in first..first + seeds {
                match run_seed(kind, seed) {
                    Ok(_) => passed += 1,
                    Err(e) => {
                        failed.get_or_insert((seed, e));
                    }
                }
            }
            (kind, passed, failed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_exactly() {
        for kind in SimKind::ALL {
            for seed in [1, 2, 3] {
                assert_eq!(
                    run_seed(kind, seed),
                    run_seed(kind, seed),
                    "{} seed {seed}",
                    kind.name()
                );
            }
        }
    }
}
