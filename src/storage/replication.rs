//! The sans-IO write coordinator: quorum bookkeeping, per-target timeouts and fallback
//! choice for one replicated write (a chunk or a record).
//!
//! The node that coordinates a write (the first live replica for a chunk put, the gateway for
//! a record put) creates one `WriteCoordinator` per write and feeds it what happens: acks,
//! failures, timer ticks, all with the current time. It answers with effects: send the
//! payload to a target (possibly as a *hint* held on behalf of a replica that is down), arm a
//! timer, and finally the outcome. The local store is a target like any other; the shell
//! "sends" to itself by writing locally.
//!
//! Invariants (checked by assertions and by a property test over random event sequences):
//! - `Outcome::Acked` is emitted only when at least W distinct targets reported the payload
//!   durable (with `Counting::Replicas`, W distinct *replicas*: the fallbacks' hinted copies
//!   add durability but not quorum); it is emitted at most once, and nothing is emitted after
//!   the outcome.
//! - Every target is sent to at most once; a replica that fails or times out is replaced by the
//!   next live fallback node not yet used, carrying a hint naming the replica.
//! - Acks from nodes that were never sent to, and repeated acks, change nothing.
//! - After `Acked`, the write goes on in the background until it is *settled*: a replica that
//!   fails or times out after the acknowledgement still gets a hinted fallback, so N copies
//!   (or hints for them) exist and the replica gets its copy back when it returns. `Settled`
//!   is emitted once, when no target is pending (or the write deadline passed). After
//!   `Failed` nothing more is emitted.
//!
//! Does not: talk to the network, read clocks, or decide liveness (the caller passes SWIM's
//! view as a predicate).

use std::collections::BTreeMap;

use crate::cluster::NodeId;

/// How long a target has to acknowledge before its fallback is tried.
pub const TARGET_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// How long a whole write may take before it fails.
pub const WRITE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Most targets one write may involve (replicas plus fallbacks): the preference list length.
pub const TARGETS_MAX: usize = crate::cluster::placement::PREFERENCE_LEN_MAX;

/// Timeouts of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteTimeouts {
    /// Per target, before trying a fallback.
    pub target_timeout_ms: u64,
    /// For the whole write.
    pub write_timeout_ms: u64,
}

/// Slowest transfer rate a healthy target is expected to sustain: a payload's timeouts grow
/// by its transfer time at this rate, so large chunks under load are not mistaken for dead
/// targets.
pub const TARGET_RATE_BYTES_PER_MS_MIN: u64 = 2 * 1024; // 2 MiB/s

impl WriteTimeouts {
    /// These timeouts extended by the time `payload_size_bytes` takes at
    /// `TARGET_RATE_BYTES_PER_MS_MIN`.
    pub fn for_payload(self, payload_size_bytes: u64) -> WriteTimeouts {
        let transfer_ms = payload_size_bytes / TARGET_RATE_BYTES_PER_MS_MIN;
        WriteTimeouts {
            target_timeout_ms: self.target_timeout_ms.saturating_add(transfer_ms),
            write_timeout_ms: self.write_timeout_ms.saturating_add(transfer_ms.saturating_mul(2)),
        }
    }
}

impl Default for WriteTimeouts {
    fn default() -> Self {
        WriteTimeouts {
            target_timeout_ms: TARGET_TIMEOUT_MS_DEFAULT,
            write_timeout_ms: WRITE_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// Which durable copies count towards W.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// Any target's, fallbacks included (a sloppy quorum). Right for content-addressed
    /// chunks: a chunk read searches the whole preference list and any verified copy is the
    /// chunk.
    AnyTarget,
    /// Only the replicas' own (the first N of the preference list). Right for records, which
    /// change: a read counts R replicas' answers, and R + W > N makes every read quorum meet
    /// every write quorum. A fallback's hinted copy in a replica's place does not count, since a
    /// read that asks that replica (back, or reachable again) would not see it.
    Replicas,
}

/// What the coordinator asks its shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteEffect {
    /// Send the payload to `to`; if `hint_for` is set, `to` holds it on behalf of that replica
    /// and hands it back when the replica returns.
    Send {
        /// The target.
        to: NodeId,
        /// The replica this copy stands in for.
        hint_for: Option<NodeId>,
    },
    /// Call `handle_timer` at this time (absolute, ms).
    Timer {
        /// When.
        at_ms: u64,
    },
    /// The write is decided.
    Done(Outcome),
    /// After `Acked`: no target is pending any more; the shell may stop driving the write.
    Settled,
}

/// The decision on a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// At least W targets hold the payload durably.
    Acked {
        /// The targets that acknowledged, in acknowledgement order.
        durable_on: Vec<NodeId>,
        /// Of those, the ones holding a hint (replica → stand-in).
        hints: Vec<(NodeId, NodeId)>,
    },
    /// W durable copies could not be reached: no live targets left, or the write timed out.
    /// Copies that did land are harmless (anti-entropy or GC deals with them).
    Failed {
        /// Durable acknowledgements received.
        durable_acks: usize,
        /// What was needed.
        needed: usize,
        /// Why.
        reason: FailReason,
    },
}

/// Why a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// Every replica and fallback was tried or is down.
    NoTargetsLeft,
    /// The write timeout passed.
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetState {
    Pending { deadline_ms: u64 },
    Durable,
    Failed,
}

#[derive(Debug, Clone)]
struct Target {
    hint_for: Option<NodeId>,
    state: TargetState,
}

/// One replicated write.
#[derive(Debug)]
pub struct WriteCoordinator {
    write_quorum: usize,
    counting: Counting,
    timeouts: WriteTimeouts,
    deadline_ms: u64,
    /// Replicas first, then fallbacks, as placement ordered them.
    preference: Vec<NodeId>,
    /// Index into `preference` of the next fallback candidate.
    next_fallback: usize,
    targets: BTreeMap<NodeId, Target>,
    durable_order: Vec<NodeId>,
    done: bool,
    /// `Acked` was emitted: the write continues only to place the remaining copies.
    acked: bool,
    settled: bool,
}

impl WriteCoordinator {
    /// Starts a write to the first `replication` nodes of `preference`, replacing each one
    /// `is_alive` says is down by the next live fallback. `write_quorum` copies must become
    /// durable, counted as `counting` says.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        now_ms: u64,
        preference: &[NodeId],
        replication: usize,
        write_quorum: usize,
        counting: Counting,
        timeouts: WriteTimeouts,
        is_alive: &dyn Fn(&NodeId) -> bool,
        effects: &mut Vec<WriteEffect>,
    ) -> WriteCoordinator {
        assert!(write_quorum >= 1 && write_quorum <= replication, "1 <= W <= N");
        let preference: Vec<NodeId> = preference.iter().take(TARGETS_MAX).cloned().collect();
        let replicas = replication.min(preference.len());
        let mut c = WriteCoordinator {
            write_quorum,
            counting,
            timeouts,
            deadline_ms: now_ms.saturating_add(timeouts.write_timeout_ms),
            next_fallback: replicas,
            preference,
            targets: BTreeMap::new(),
            durable_order: Vec::new(),
            done: false,
            acked: false,
            settled: false,
        };
        for i in 0..replicas {
            let replica = c.preference[i].clone();
            if is_alive(&replica) {
                c.send(now_ms, replica, None, effects);
            } else {
                c.send_fallback(now_ms, replica, is_alive, effects);
            }
        }
        effects.push(WriteEffect::Timer { at_ms: c.deadline_ms });
        c.check(effects);
        c
    }

    /// Whether the outcome has been emitted.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether nothing more will be emitted (failed, or acknowledged and settled).
    pub fn is_finished(&self) -> bool {
        self.done && (!self.acked || self.settled)
    }

    /// After the ack: emits `Settled` once no target is pending.
    fn settle_check(&mut self, effects: &mut Vec<WriteEffect>) {
        if self.acked
            && !self.settled
            && !self
                .targets
                .values()
                .any(|t| matches!(t.state, TargetState::Pending { .. }))
        {
            self.settled = true;
            effects.push(WriteEffect::Settled);
        }
    }

    fn send(&mut self, now_ms: u64, to: NodeId, hint_for: Option<NodeId>, effects: &mut Vec<WriteEffect>) {
        debug_assert!(!self.targets.contains_key(&to), "a target is sent to once");
        let deadline_ms = now_ms.saturating_add(self.timeouts.target_timeout_ms);
        self.targets.insert(
            to.clone(),
            Target {
                hint_for: hint_for.clone(),
                state: TargetState::Pending { deadline_ms },
            },
        );
        effects.push(WriteEffect::Send { to, hint_for });
        effects.push(WriteEffect::Timer { at_ms: deadline_ms });
    }

    /// Sends a stand-in copy for `replica` to the next live, unused fallback, if any.
    fn send_fallback(
        &mut self,
        now_ms: u64,
        replica: NodeId,
        is_alive: &dyn Fn(&NodeId) -> bool,
        effects: &mut Vec<WriteEffect>,
    ) {
        while self.next_fallback < self.preference.len() {
            let candidate = self.preference[self.next_fallback].clone();
            self.next_fallback += 1;
            if is_alive(&candidate) && !self.targets.contains_key(&candidate) {
                self.send(now_ms, candidate, Some(replica), effects);
                return;
            }
        }
    }

    /// A target reports the payload durable.
    pub fn handle_ack(&mut self, from: &NodeId, effects: &mut Vec<WriteEffect>) {
        if self.is_finished() {
            return;
        }
        let Some(t) = self.targets.get_mut(from) else {
            return; // never asked: ignore
        };
        if let TargetState::Pending { .. } = t.state {
            t.state = TargetState::Durable;
            self.durable_order.push(from.clone());
        }
        self.check(effects);
        self.settle_check(effects);
    }

    /// A target reports an error, or its connection failed: try a fallback in its place.
    pub fn handle_failure(
        &mut self,
        now_ms: u64,
        from: &NodeId,
        is_alive: &dyn Fn(&NodeId) -> bool,
        effects: &mut Vec<WriteEffect>,
    ) {
        if self.is_finished() {
            return;
        }
        let Some(t) = self.targets.get_mut(from) else {
            return;
        };
        if !matches!(t.state, TargetState::Pending { .. }) {
            return; // a late error after an ack changes nothing
        }
        t.state = TargetState::Failed;
        let replica = t.hint_for.clone().unwrap_or_else(|| from.clone());
        self.send_fallback(now_ms, replica, is_alive, effects);
        self.check(effects);
        self.settle_check(effects);
    }

    /// Time passed: fail targets past their deadline (trying fallbacks) and the whole write
    /// past its own.
    pub fn handle_timer(&mut self, now_ms: u64, is_alive: &dyn Fn(&NodeId) -> bool, effects: &mut Vec<WriteEffect>) {
        if self.is_finished() {
            return;
        }
        if now_ms >= self.deadline_ms {
            if self.acked {
                // Copies still pending past the deadline are left to anti-entropy.
                self.settled = true;
                effects.push(WriteEffect::Settled);
            } else {
                self.finish_failed(FailReason::Timeout, effects);
            }
            return;
        }
        let expired: Vec<NodeId> = self
            .targets
            .iter()
            .filter(|(_, t)| matches!(t.state, TargetState::Pending { deadline_ms } if now_ms >= deadline_ms))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.handle_failure(now_ms, &id, is_alive, effects);
            if self.is_finished() {
                return;
            }
        }
    }

    /// Whether a durable copy on this target counts towards W.
    fn counts(&self, t: &Target) -> bool {
        match self.counting {
            Counting::AnyTarget => true,
            Counting::Replicas => t.hint_for.is_none(),
        }
    }

    /// Durable copies that count towards W.
    fn durable_count(&self) -> usize {
        self.durable_order
            .iter()
            .filter(|id| self.counts(&self.targets[*id]))
            .count()
    }

    fn check(&mut self, effects: &mut Vec<WriteEffect>) {
        if self.done {
            return;
        }
        if self.durable_count() >= self.write_quorum {
            let hints = self
                .durable_order
                .iter()
                .filter_map(|id| {
                    let t = &self.targets[id];
                    t.hint_for.clone().map(|r| (r, id.clone()))
                })
                .collect();
            assert!(self.durable_count() >= self.write_quorum);
            self.done = true;
            self.acked = true;
            effects.push(WriteEffect::Done(Outcome::Acked {
                durable_on: self.durable_order.clone(),
                hints,
            }));
            return;
        }
        let pending = self
            .targets
            .values()
            .filter(|t| matches!(t.state, TargetState::Pending { .. }) && self.counts(t))
            .count();
        // Counting any target, fallbacks not yet tried may still make up the quorum; counting
        // replicas, a failed replica is gone for this write.
        let more_may_count = self.counting == Counting::AnyTarget && self.next_fallback < self.preference.len();
        if self.durable_count() + pending < self.write_quorum && !more_may_count {
            self.finish_failed(FailReason::NoTargetsLeft, effects);
        }
    }

    fn finish_failed(&mut self, reason: FailReason, effects: &mut Vec<WriteEffect>) {
        self.done = true;
        effects.push(WriteEffect::Done(Outcome::Failed {
            durable_acks: self.durable_count(),
            needed: self.write_quorum,
            reason,
        }));
    }
}

/// How the answers to one quorum read of a record (or a scan page) count towards R.
///
/// Only the replicas' answers count (records are written with `Counting::Replicas`, and
/// R + W > N makes any R replicas include one that has the newest acknowledged version).
/// A fallback's answer is kept by the caller (its hinted copy may be newer) but does not
/// count by itself: counting it could make a quorum of replicas that missed a write plus a
/// node that never had it. An answer marked *filling* (a replica that became an owner in a
/// new epoch and is still copying the partition from its old owners) does not count either;
/// each one lets one answer from beyond the replicas count in its place, in whatever order
/// the answers arrive, so reads during a move reach the old owners the new ones displaced.
/// And when every storage node of the map answered, the answers hold every copy there is,
/// so the read is complete whatever they were marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadTally {
    /// Replicas that answered and are not filling.
    replicas: usize,
    /// Replicas that answered marked filling.
    filling: usize,
    /// Nodes beyond the replicas that answered and are not filling.
    stand_ins: usize,
    /// Every node that answered.
    answered: usize,
}

impl ReadTally {
    /// Notes one node's answer: whether it is one of the partition's replicas, and whether
    /// it was marked filling.
    pub fn answer(&mut self, is_replica: bool, filling: bool) {
        self.answered += 1;
        match (is_replica, filling) {
            (true, false) => self.replicas += 1,
            (true, true) => self.filling += 1,
            (false, false) => self.stand_ins += 1,
            (false, true) => {}
        }
    }

    /// How many answers count towards R, when `nodes` is the number of storage nodes in
    /// the map and `r` the read quorum; at most `r`.
    pub fn counted(&self, nodes: usize, r: usize) -> usize {
        if nodes > 0 && self.answered >= nodes {
            return r;
        }
        (self.replicas + self.filling.min(self.stand_ins)).min(r)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_read_counts_replicas_and_one_stand_in_per_filling_replica() {
        let (nodes, r) = (10, 2);
        let mut t = ReadTally::default();
        t.answer(false, false);
        assert_eq!(t.counted(nodes, r), 0, "a fallback alone counts nothing");
        t.answer(true, true);
        assert_eq!(
            t.counted(nodes, r),
            1,
            "a filling replica lets the earlier stand-in count"
        );
        t.answer(true, true);
        t.answer(false, true);
        assert_eq!(t.counted(nodes, r), 1, "a filling fallback is no stand-in");
        t.answer(true, false);
        assert_eq!(t.counted(nodes, r), 2);
        t.answer(true, false);
        assert_eq!(t.counted(nodes, r), 2, "never more than R");

        // Every node of the map answered: complete, however they were marked.
        let mut t = ReadTally::default();
        for _ in 0..3 {
            t.answer(true, true);
        }
        assert_eq!(t.counted(4, r), 0);
        t.answer(false, true);
        assert_eq!(t.counted(4, r), r);
        assert_eq!(ReadTally::default().counted(0, r), 0, "an empty map completes nothing");
    }
    use super::*;

    fn ids(n: usize) -> Vec<NodeId> {
        (0..n).map(|i| NodeId(vec![b'a' + i as u8])).collect()
    }

    fn sends(effects: &[WriteEffect]) -> Vec<(NodeId, Option<NodeId>)> {
        effects
            .iter()
            .filter_map(|e| match e {
                WriteEffect::Send { to, hint_for } => Some((to.clone(), hint_for.clone())),
                _ => None,
            })
            .collect()
    }

    fn outcome(effects: &[WriteEffect]) -> Option<&Outcome> {
        effects.iter().find_map(|e| match e {
            WriteEffect::Done(o) => Some(o),
            _ => None,
        })
    }

    #[test]
    fn all_alive_acks_at_quorum() {
        let pref = ids(5);
        let mut fx = Vec::new();
        let mut c = WriteCoordinator::start(
            0,
            &pref,
            3,
            2,
            Counting::AnyTarget,
            WriteTimeouts::default(),
            &|_| true,
            &mut fx,
        );
        assert_eq!(
            sends(&fx),
            vec![
                (pref[0].clone(), None),
                (pref[1].clone(), None),
                (pref[2].clone(), None)
            ]
        );
        fx.clear();
        c.handle_ack(&pref[1], &mut fx);
        assert!(outcome(&fx).is_none());
        c.handle_ack(&pref[1], &mut fx); // duplicate
        c.handle_ack(&pref[4], &mut fx); // never asked
        assert!(outcome(&fx).is_none());
        c.handle_ack(&pref[0], &mut fx);
        assert!(matches!(outcome(&fx), Some(Outcome::Acked { durable_on, .. }) if durable_on.len() == 2));
    }

    #[test]
    fn dead_replica_gets_a_hinted_fallback() {
        let pref = ids(5);
        let dead = pref[1].clone();
        let alive = move |n: &NodeId| *n != dead;
        let mut fx = Vec::new();
        let mut c = WriteCoordinator::start(
            0,
            &pref,
            3,
            3,
            Counting::AnyTarget,
            WriteTimeouts::default(),
            &alive,
            &mut fx,
        );
        let s = sends(&fx);
        assert!(s.contains(&(pref[3].clone(), Some(pref[1].clone()))), "{s:?}");
        for n in [&pref[0], &pref[2], &pref[3]] {
            c.handle_ack(n, &mut fx);
        }
        let Some(Outcome::Acked { hints, .. }) = outcome(&fx) else {
            panic!("not acked: {fx:?}")
        };
        assert_eq!(hints, &vec![(pref[1].clone(), pref[3].clone())]);
    }

    #[test]
    fn counting_replicas_a_fallback_copy_adds_durability_not_quorum() {
        let pref = ids(5);
        let dead = pref[1].clone();
        let alive = move |n: &NodeId| *n != dead;
        let mut fx = Vec::new();
        let mut c = WriteCoordinator::start(
            0,
            &pref,
            3,
            2,
            Counting::Replicas,
            WriteTimeouts::default(),
            &alive,
            &mut fx,
        );
        assert!(sends(&fx).contains(&(pref[3].clone(), Some(pref[1].clone()))));
        c.handle_ack(&pref[3], &mut fx);
        c.handle_ack(&pref[0], &mut fx);
        assert!(
            outcome(&fx).is_none(),
            "one replica and a stand-in are not a quorum: {fx:?}"
        );
        c.handle_ack(&pref[2], &mut fx);
        let Some(Outcome::Acked { durable_on, hints }) = outcome(&fx) else {
            panic!("not acked: {fx:?}")
        };
        assert_eq!(durable_on.len(), 3);
        assert_eq!(hints, &vec![(pref[1].clone(), pref[3].clone())]);

        // Two replicas failing: the write fails at once, fallbacks or not.
        let mut fx = Vec::new();
        let mut c = WriteCoordinator::start(
            0,
            &pref,
            3,
            2,
            Counting::Replicas,
            WriteTimeouts::default(),
            &|_| true,
            &mut fx,
        );
        c.handle_failure(1, &pref[0], &|_| true, &mut fx);
        assert!(outcome(&fx).is_none());
        c.handle_failure(2, &pref[1], &|_| true, &mut fx);
        assert!(
            matches!(
                outcome(&fx),
                Some(Outcome::Failed {
                    reason: FailReason::NoTargetsLeft,
                    ..
                })
            ),
            "{fx:?}"
        );
    }

    #[test]
    fn a_replica_failing_after_the_ack_still_gets_a_hinted_fallback() {
        let pref = ids(5);
        let all_alive = |_: &NodeId| true;
        let mut fx = Vec::new();
        let mut c = WriteCoordinator::start(
            0,
            &pref,
            3,
            2,
            Counting::AnyTarget,
            WriteTimeouts::default(),
            &all_alive,
            &mut fx,
        );
        c.handle_ack(&pref[0], &mut fx);
        c.handle_ack(&pref[1], &mut fx);
        assert!(matches!(outcome(&fx), Some(Outcome::Acked { .. })));
        assert!(!c.is_finished(), "the third copy is still pending");
        fx.clear();
        c.handle_failure(10, &pref[2], &all_alive, &mut fx);
        assert_eq!(sends(&fx), vec![(pref[3].clone(), Some(pref[2].clone()))]);
        assert!(outcome(&fx).is_none(), "no second outcome");
        fx.clear();
        c.handle_ack(&pref[3], &mut fx);
        assert_eq!(fx, vec![WriteEffect::Settled]);
        assert!(c.is_finished());
        c.handle_failure(20, &pref[0], &all_alive, &mut fx);
        assert_eq!(fx, vec![WriteEffect::Settled], "nothing after settling");
    }

    #[test]
    fn timeouts_move_to_fallbacks_then_fail() {
        let pref = ids(4);
        let t = WriteTimeouts {
            target_timeout_ms: 100,
            write_timeout_ms: 1000,
        };
        let mut fx = Vec::new();
        let mut c = WriteCoordinator::start(0, &pref, 3, 2, Counting::AnyTarget, t, &|_| true, &mut fx);
        c.handle_ack(&pref[0], &mut fx);
        fx.clear();
        c.handle_timer(100, &|_| true, &mut fx);
        // b and c timed out: only d is left to stand in for one of them.
        assert_eq!(sends(&fx), vec![(pref[3].clone(), Some(pref[1].clone()))]);
        c.handle_timer(200, &|_| true, &mut fx);
        assert!(matches!(
            outcome(&fx),
            Some(Outcome::Failed {
                durable_acks: 1,
                needed: 2,
                reason: FailReason::NoTargetsLeft
            })
        ));
        assert!(c.is_done());
    }
}

#[cfg(test)]
mod properties {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Event {
        Ack(usize),
        Fail(usize),
        Advance(u64),
        Kill(usize),
        Revive(usize),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => (0usize..10).prop_map(Event::Ack),
            2 => (0usize..10).prop_map(Event::Fail),
            2 => (0u64..1500).prop_map(Event::Advance),
            1 => (0usize..10).prop_map(Event::Kill),
            1 => (0usize..10).prop_map(Event::Revive),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Under any sequence of acks, failures, timeouts and liveness changes, the coordinator
        /// never acknowledges a write with fewer than W durable copies, decides once, and sends
        /// to each target once.
        #[test]
        fn never_acks_below_quorum(
            len in 1usize..10,
            n_raw in 1usize..6,
            w_raw in 1usize..6,
            initially_dead in proptest::collection::btree_set(0usize..10, 0..5),
            events in proptest::collection::vec(event(), 0..60),
            replicas_only in any::<bool>(),
        ) {
            let counting = if replicas_only { Counting::Replicas } else { Counting::AnyTarget };
            let n = n_raw.min(len).max(1);
            let w = w_raw.min(n);
            let pref: Vec<NodeId> = (0..len).map(|i| NodeId(vec![i as u8 + 1])).collect();
            let mut dead: BTreeSet<usize> = initially_dead;
            let timeouts = WriteTimeouts { target_timeout_ms: 300, write_timeout_ms: 5_000 };
            let mut now = 0u64;
            let mut fx = Vec::new();
            let alive_of = |dead: &BTreeSet<usize>| {
                let dead = dead.clone();
                move |id: &NodeId| !dead.contains(&(usize::from(id.0[0]) - 1))
            };
            let mut c = WriteCoordinator::start(now, &pref, n, w, counting, timeouts, &alive_of(&dead), &mut fx);
            let mut sent: BTreeSet<NodeId> = BTreeSet::new();
            let mut acked_by_harness: BTreeSet<NodeId> = BTreeSet::new();
            let mut decisions = 0;
            let mut failed = false;
            let mut settled = 0;
            let mut check = |fx: &mut Vec<WriteEffect>, sent: &mut BTreeSet<NodeId>, acked: &BTreeSet<NodeId>| -> Result<(), TestCaseError> {
                for e in fx.drain(..) {
                    prop_assert!(!failed, "an effect after Failed: {:?}", e);
                    prop_assert!(settled == 0, "an effect after Settled: {:?}", e);
                    match e {
                        WriteEffect::Send { to, hint_for } => {
                            prop_assert!(decisions == 0 || hint_for.is_some(), "after the ack only hinted fallbacks are sent");
                            prop_assert!(sent.insert(to), "a target was sent to twice");
                        }
                        WriteEffect::Settled => {
                            prop_assert!(decisions == 1, "settled before the ack");
                            settled += 1;
                        }
                        WriteEffect::Done(Outcome::Acked { durable_on, .. }) => {
                            decisions += 1;
                            let distinct: BTreeSet<_> = durable_on.iter().cloned().collect();
                            prop_assert_eq!(distinct.len(), durable_on.len());
                            prop_assert!(durable_on.len() >= w, "acked with {} < W={}", durable_on.len(), w);
                            // Node ids are 1 + their index in the preference list.
                            let on_replicas = durable_on.iter().filter(|d| usize::from(d.0[0]) - 1 < n).count();
                            prop_assert!(!replicas_only || on_replicas >= w, "acked with {} < W={} replicas", on_replicas, w);
                            prop_assert!(durable_on.iter().all(|d| acked.contains(d) && sent.contains(d)));
                        }
                        WriteEffect::Done(Outcome::Failed { .. }) => {
                            decisions += 1;
                            failed = true;
                        }
                        WriteEffect::Timer { .. } => {}
                    }
                }
                prop_assert!(decisions <= 1, "decided twice");
                Ok(())
            };
            check(&mut fx, &mut sent, &acked_by_harness)?;
            for ev in events {
                match ev {
                    Event::Ack(i) => {
                        let id = NodeId(vec![(i % len) as u8 + 1]);
                        // Only a node that received the payload can hold it durably.
                        if sent.contains(&id) {
                            acked_by_harness.insert(id.clone());
                        }
                        c.handle_ack(&id, &mut fx);
                    }
                    Event::Fail(i) => c.handle_failure(now, &NodeId(vec![(i % len) as u8 + 1]), &alive_of(&dead), &mut fx),
                    Event::Advance(d) => {
                        now += d;
                        c.handle_timer(now, &alive_of(&dead), &mut fx);
                    }
                    Event::Kill(i) => { dead.insert(i % len); }
                    Event::Revive(i) => { dead.remove(&(i % len)); }
                }
                check(&mut fx, &mut sent, &acked_by_harness)?;
            }
        }

        /// With every node alive and acknowledging, every write is acknowledged.
        #[test]
        fn acks_when_everyone_answers(len in 1usize..10, n_raw in 1usize..6, w_raw in 1usize..6, replicas_only in any::<bool>()) {
            let counting = if replicas_only { Counting::Replicas } else { Counting::AnyTarget };
            let n = n_raw.min(len);
            let w = w_raw.min(n);
            let pref: Vec<NodeId> = (0..len).map(|i| NodeId(vec![i as u8 + 1])).collect();
            let mut fx = Vec::new();
            let mut c = WriteCoordinator::start(0, &pref, n, w, counting, WriteTimeouts::default(), &|_| true, &mut fx);
            let targets: Vec<NodeId> = fx.iter().filter_map(|e| match e { WriteEffect::Send { to, .. } => Some(to.clone()), _ => None }).collect();
            prop_assert_eq!(targets.len(), n);
            for t in &targets {
                c.handle_ack(t, &mut fx);
            }
            let acked = fx.iter().any(|e| matches!(e, WriteEffect::Done(Outcome::Acked { .. })));
            prop_assert!(acked, "every target acked but the write was not: {:?}", fx);
        }
    }
}
