//! Deterministic single-process SWIM simulator.
//!
//! Owns [`Sim`]: N [`SwimCore`]s in one process, virtual time in milliseconds, one
//! seeded RNG for the network and one per member, per-link latency, loss, duplication
//! and partitions. Everything runs from a `BinaryHeap` keyed by `(time, sequence)`, so
//! the same seed replays the same run exactly — including the [`TraceEntry`] list of
//! every membership event — and a failing seed replays with one command.
//!
//! The simulated transport is an authenticated one: each packet is delivered with the
//! sending member's peer id, as libp2p would, which exercises the core's spoofing check.
//!
//! Invariants: the pending queue is bounded by [`SIM_QUEUE_MAX`] and the trace by
//! [`SimConfig::trace_max`]; overflow is counted, never silent.
//!
//! Does not: model bandwidth, packet reordering beyond latency jitter, or clock skew.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::config::SwimConfig;
use crate::core::{CoreStats, Effects, MembershipEvent, SwimCore, SwimTimer};
use crate::error::Result;
use crate::identity::{NodeIdentity, PeerId, Role};

/// Most pending packets, timers and actions. A 1000-member LAN cluster has a few
/// thousand in flight; this stops a runaway (e.g. a gossip storm bug) from eating memory.
pub const SIM_QUEUE_MAX: usize = 4_000_000;
/// How often a member that has not joined yet re-announces to its contact.
pub const JOIN_RETRY_MS: u64 = 1_000;

/// Behaviour of a (directed) link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// Minimum one-way latency.
    pub latency_ms_min: u64,
    /// Maximum one-way latency (uniform between min and max).
    pub latency_ms_max: u64,
    /// Probability that a packet is lost.
    pub loss_rate: f64,
    /// Probability that a delivered packet is delivered twice.
    pub duplicate_rate: f64,
}

impl LinkConfig {
    /// A clean LAN link: 1–2 ms, no loss, no duplication.
    pub fn lan() -> Self {
        Self {
            latency_ms_min: 1,
            latency_ms_max: 2,
            loss_rate: 0.0,
            duplicate_rate: 0.0,
        }
    }
    /// The same link with this loss rate.
    pub fn with_loss(self, loss_rate: f64) -> Self {
        Self { loss_rate, ..self }
    }
}

/// Simulation parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed for everything random in the run.
    pub seed: u64,
    /// Number of members.
    pub members: usize,
    /// Protocol configuration of every member.
    pub swim: SwimConfig,
    /// Default link behaviour.
    pub link: LinkConfig,
    /// Most trace entries kept (later ones are counted in [`SimStats::trace_dropped`]).
    pub trace_max: usize,
}

impl SimConfig {
    /// LAN preset for `members` members, clean links.
    pub fn lan(seed: u64, members: usize) -> Self {
        Self {
            seed,
            members,
            swim: SwimConfig::lan(u32::try_from(members).unwrap_or(u32::MAX)),
            link: LinkConfig::lan(),
            trace_max: 1_000_000,
        }
    }
}

/// One membership event as observed by member `node` at `at_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// Virtual time.
    pub at_ms: u64,
    /// Observing member index.
    pub node: usize,
    /// What it observed.
    pub event: MembershipEvent,
}

/// Network-level counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Packets handed to the network.
    pub packets_sent: u64,
    /// Packets handed to a live member.
    pub packets_delivered: u64,
    /// Packets lost to random loss.
    pub packets_lost: u64,
    /// Packets dropped by a partition.
    pub packets_partitioned: u64,
    /// Packets to a dead member or an unknown peer.
    pub packets_undeliverable: u64,
    /// Extra copies delivered by duplication.
    pub packets_duplicated: u64,
    /// Errors returned by cores (malformed, stale...).
    pub core_errors: u64,
    /// Items dropped because the queue was full.
    pub queue_dropped: u64,
    /// Trace entries not recorded because the trace was full.
    pub trace_dropped: u64,
}

enum Pending {
    Packet { from: usize, to: usize, bytes: Bytes },
    Timer { node: usize, life: u32, timer: SwimTimer },
    Join { node: usize, life: u32, contact: usize },
}

struct Item {
    at_ms: u64,
    seq: u64,
    what: Pending,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}

struct Node {
    core: SwimCore<StdRng>,
    alive: bool,
    /// Bumped on restart so timers of a previous life are ignored.
    life: u32,
}

/// The simulator. See the module docs.
pub struct Sim {
    cfg: SimConfig,
    now_ms: u64,
    seq: u64,
    rng: StdRng,
    queue: BinaryHeap<Reverse<Item>>,
    nodes: Vec<Node>,
    index: BTreeMap<PeerId, usize>,
    /// Partition group per member; packets only flow within a group.
    groups: Vec<u32>,
    /// Per directed link overrides of `cfg.link`.
    links: BTreeMap<(usize, usize), LinkConfig>,
    trace: Vec<TraceEntry>,
    record: bool,
    stats: SimStats,
    fx: Effects,
}

/// The identity the simulator gives member `i`: peer id `n{i}`, address `sim://{i}`,
/// roles and zones round-robin.
pub fn sim_identity(i: usize, generation: u64) -> NodeIdentity {
    let role = match i % 3 {
        0 => Role::Monitor,
        1 => Role::Storage,
        _ => Role::Gateway,
    };
    // `n{i}` is at most 21 bytes and `sim://{i}` at most 26: both within their bounds.
    let peer = PeerId::new(format!("n{i}").as_bytes()).expect("short peer id");
    NodeIdentity::new(
        peer,
        vec![format!("sim://{i}")],
        role,
        format!("z{}", i % 3),
        generation,
    )
    .expect("simulator identities are within bounds")
}

fn member_rng(seed: u64, i: usize, life: u32) -> StdRng {
    // SplitMix-style mixing so neighbouring members get unrelated streams.
    let mut z = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(life) << 48);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

impl Sim {
    /// Creates `cfg.members` members that know nobody yet.
    pub fn new(cfg: SimConfig) -> Result<Self> {
        let mut nodes = Vec::with_capacity(cfg.members);
        let mut index = BTreeMap::new();
        for i in 0..cfg.members {
            let id = sim_identity(i, 1);
            index.insert(*id.peer_id(), i);
            let core = SwimCore::new(id, cfg.swim.clone(), member_rng(cfg.seed, i, 0))?;
            nodes.push(Node {
                core,
                alive: true,
                life: 0,
            });
        }
        Ok(Self {
            rng: StdRng::seed_from_u64(cfg.seed),
            groups: vec![0; cfg.members],
            cfg,
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            index,
            links: BTreeMap::new(),
            trace: Vec::new(),
            record: true,
            stats: SimStats::default(),
            fx: Effects::default(),
        })
    }

    /// Current virtual time.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }
    /// Number of members (dead or alive).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    /// True if there are no members.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }
    /// Member `i`'s current identity.
    pub fn identity(&self, i: usize) -> &NodeIdentity {
        self.nodes[i].core.identity()
    }
    /// Member `i`'s core (read-only).
    pub fn core(&self, i: usize) -> &SwimCore<StdRng> {
        &self.nodes[i].core
    }
    /// True unless member `i` was killed (and not restarted).
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive
    }
    /// Every membership event so far.
    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }
    /// Network counters.
    pub fn stats(&self) -> SimStats {
        self.stats
    }
    /// Sum of all members' core counters.
    pub fn core_stats_total(&self) -> CoreStats {
        let mut t = CoreStats::default();
        for n in &self.nodes {
            let s = n.core.stats();
            t.packets_sent += s.packets_sent;
            t.bytes_sent += s.bytes_sent;
            t.packets_received += s.packets_received;
            t.packets_rejected += s.packets_rejected;
        }
        t
    }

    /// Changes the default link behaviour from now on.
    pub fn set_link(&mut self, link: LinkConfig) {
        self.cfg.link = link;
    }
    /// Overrides the behaviour of the directed link `from -> to`.
    pub fn set_link_between(&mut self, from: usize, to: usize, link: LinkConfig) {
        self.links.insert((from, to), link);
    }
    /// Puts member `i` in partition group `groups[i]`; packets cross no group boundary.
    pub fn partition(&mut self, groups: Vec<u32>) {
        assert_eq!(groups.len(), self.nodes.len(), "one group per member");
        self.groups = groups;
    }
    /// Removes every partition.
    pub fn heal(&mut self) {
        self.groups.iter_mut().for_each(|g| *g = 0);
    }

    /// Member `node` announces to `contact` now, and again every [`JOIN_RETRY_MS`] until
    /// it knows at least one member.
    pub fn join(&mut self, node: usize, contact: usize) {
        let life = self.nodes[node].life;
        self.push(self.now_ms, Pending::Join { node, life, contact });
    }

    /// Every member except `contact` joins through `contact`, each at a random time in
    /// `[now, now + spread_ms]`.
    pub fn join_all_via(&mut self, contact: usize, spread_ms: u64) {
        for node in 0..self.nodes.len() {
            if node != contact {
                let at = self.now_ms + self.rng.random_range(0..=spread_ms);
                let life = self.nodes[node].life;
                self.push(at, Pending::Join { node, life, contact });
            }
        }
    }

    /// Gives every member the full member list without traffic (as if restored from
    /// the cluster map). Not traced.
    pub fn bootstrap_all(&mut self) -> Result<()> {
        let ids: Vec<NodeIdentity> = self.nodes.iter().map(|n| n.core.identity().clone()).collect();
        let now = self.now_ms;
        self.record = false;
        for i in 0..self.nodes.len() {
            let mut fx = std::mem::take(&mut self.fx);
            let r = self.nodes[i].core.bootstrap(now, ids.iter().cloned(), &mut fx);
            self.fx = fx;
            r?;
            self.absorb(i);
        }
        self.record = true;
        Ok(())
    }

    /// Stops member `i`: it neither sends nor receives; its timers are discarded.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
        self.nodes[i].life += 1;
    }

    /// Restarts member `i` with a fresh core and the next generation, joining via
    /// `contact`. Returns the new identity.
    pub fn restart(&mut self, i: usize, contact: usize) -> Result<NodeIdentity> {
        let node = &mut self.nodes[i];
        let next = node.core.identity().generation() + 1;
        let id = sim_identity(i, next);
        node.life += 1;
        node.core = SwimCore::new(
            id.clone(),
            self.cfg.swim.clone(),
            member_rng(self.cfg.seed, i, node.life),
        )?;
        node.alive = true;
        self.join(i, contact);
        Ok(id)
    }

    /// Member `i` starts gossiping epoch `epoch`.
    pub fn publish_epoch(&mut self, i: usize, epoch: u64, digest: [u8; 32]) -> Result<bool> {
        let now = self.now_ms;
        let mut fx = std::mem::take(&mut self.fx);
        let r = self.nodes[i].core.publish_epoch(now, epoch, digest, &mut fx);
        self.fx = fx;
        self.absorb(i);
        r
    }

    /// Runs every pending item due at or before `t_ms`, then sets the clock to `t_ms`.
    pub fn run_until(&mut self, t_ms: u64) {
        while let Some(Reverse(top)) = self.queue.peek() {
            if top.at_ms > t_ms {
                break;
            }
            let Some(Reverse(item)) = self.queue.pop() else { break };
            self.now_ms = item.at_ms;
            self.step(item.what);
        }
        self.now_ms = self.now_ms.max(t_ms);
    }

    /// Runs for `d_ms` of virtual time.
    pub fn run_for(&mut self, d_ms: u64) {
        self.run_until(self.now_ms + d_ms);
    }

    /// Runs until `done(self)` holds, checking every `check_every_ms`, for at most
    /// `max_ms`. Returns the time at which it first held.
    pub fn run_until_true(
        &mut self,
        max_ms: u64,
        check_every_ms: u64,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<u64> {
        let deadline = self.now_ms + max_ms;
        loop {
            if done(self) {
                return Some(self.now_ms);
            }
            if self.now_ms >= deadline {
                return None;
            }
            self.run_until((self.now_ms + check_every_ms).min(deadline));
        }
    }

    /// True if every live member sees exactly the other live members, with their
    /// current identities, as active.
    pub fn converged(&self) -> bool {
        let alive = self.nodes.iter().filter(|n| n.alive).count();
        // Cheap count check first: the full check is O(n^2) and this runs in loops.
        let counts_ok = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .all(|n| n.core.num_members() == alive.saturating_sub(1));
        counts_ok
            && self.nodes.iter().filter(|n| n.alive).all(|n| {
                n.core.num_members() == alive.saturating_sub(1)
                    && n.core.members().all(|m| {
                        self.index
                            .get(m.peer_id())
                            .is_some_and(|&j| self.nodes[j].alive && self.nodes[j].core.identity() == m)
                    })
            })
    }

    /// How many live members hold epoch `epoch` or newer.
    pub fn members_with_epoch(&self, epoch: u64) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.alive && n.core.latest_epoch().is_some_and(|e| e.epoch >= epoch))
            .count()
    }

    fn push(&mut self, at_ms: u64, what: Pending) {
        if self.queue.len() >= SIM_QUEUE_MAX {
            self.stats.queue_dropped += 1;
            return;
        }
        self.seq += 1;
        self.queue.push(Reverse(Item {
            at_ms,
            seq: self.seq,
            what,
        }));
    }

    fn step(&mut self, what: Pending) {
        let now = self.now_ms;
        let mut fx = std::mem::take(&mut self.fx);
        let acting = match what {
            Pending::Packet { from, to, bytes } => {
                if !self.nodes[to].alive {
                    self.stats.packets_undeliverable += 1;
                    None
                } else {
                    self.stats.packets_delivered += 1;
                    let sender = *self.nodes[from].core.identity().peer_id();
                    if self.nodes[to]
                        .core
                        .handle_packet(now, Some(&sender), &bytes, &mut fx)
                        .is_err()
                    {
                        self.stats.core_errors += 1;
                    }
                    Some(to)
                }
            }
            Pending::Timer { node, life, timer } => {
                let n = &mut self.nodes[node];
                if n.alive && n.life == life {
                    if n.core.handle_timer(now, timer, &mut fx).is_err() {
                        self.stats.core_errors += 1;
                    }
                    Some(node)
                } else {
                    None
                }
            }
            Pending::Join { node, life, contact } => {
                let n = &self.nodes[node];
                if n.alive && n.life == life && n.core.num_members() == 0 {
                    let contact_id = self.nodes[contact].core.identity().clone();
                    if self.nodes[node].core.join(now, contact_id, &mut fx).is_err() {
                        self.stats.core_errors += 1;
                    }
                    self.fx = fx;
                    self.absorb(node);
                    self.push(now + JOIN_RETRY_MS, Pending::Join { node, life, contact });
                    return;
                }
                None
            }
        };
        self.fx = fx;
        if let Some(i) = acting {
            self.absorb(i);
        }
    }

    /// Moves member `i`'s effects into the queue and the trace.
    fn absorb(&mut self, i: usize) {
        let mut fx = std::mem::take(&mut self.fx);
        let life = self.nodes[i].life;
        for t in fx.timers.drain(..) {
            self.push(
                t.at_ms,
                Pending::Timer {
                    node: i,
                    life,
                    timer: t.timer,
                },
            );
        }
        for p in fx.packets.drain(..) {
            self.send(i, p.to.peer_id(), p.bytes);
        }
        for event in fx.events.drain(..) {
            if !self.record {
                continue;
            }
            if self.trace.len() < self.cfg.trace_max {
                self.trace.push(TraceEntry {
                    at_ms: self.now_ms,
                    node: i,
                    event,
                });
            } else {
                self.stats.trace_dropped += 1;
            }
        }
        self.fx = fx;
    }

    fn send(&mut self, from: usize, to: &PeerId, bytes: Bytes) {
        self.stats.packets_sent += 1;
        let Some(&to) = self.index.get(to) else {
            self.stats.packets_undeliverable += 1;
            return;
        };
        if self.groups[from] != self.groups[to] {
            self.stats.packets_partitioned += 1;
            return;
        }
        let link = self.links.get(&(from, to)).copied().unwrap_or(self.cfg.link);
        if link.loss_rate > 0.0 && self.rng.random_bool(link.loss_rate.min(1.0)) {
            self.stats.packets_lost += 1;
            return;
        }
        let copies = if link.duplicate_rate > 0.0 && self.rng.random_bool(link.duplicate_rate.min(1.0)) {
            self.stats.packets_duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let lat = self
                .rng
                .random_range(link.latency_ms_min..=link.latency_ms_max.max(link.latency_ms_min));
            self.push(
                self.now_ms + lat,
                Pending::Packet {
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
    }
}
