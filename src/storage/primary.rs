//! The sender's side of a primary-copy write, sans-IO: which node gets the item, when to move
//! on to the next, and what the sender may report. The node runtime (`node::chunks`) is its
//! shell: a `Send` becomes one request with `coordinate` set and a timer, the answer (or its
//! absence) comes back through `handle`.
//!
//! The primary is the first live node of the item's preference list (replicas first, then
//! fallbacks). It stores its copy, forwards the others and runs the `WriteCoordinator`; the
//! sender only waits for its verdict. A primary that fails or stays silent past its deadline
//! is replaced by the next candidate, at most `attempts_max` nodes in all. Items written this
//! way are content-addressed (chunks): a retry through another primary stores the same bytes
//! under the same id, so copies left by a primary that died after forwarding are never
//! contradicted, only completed.

use crate::cluster::NodeId;

/// What a primary answered, or why there is no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryAnswer {
    /// The primary reports the item durable on W copies (`copies` known to it).
    Stored {
        /// Durable copies the primary knows of.
        copies: u32,
    },
    /// The primary's write failed for lack of space on its targets.
    Full,
    /// The primary refused the item itself (bytes that do not match their id: a sender bug).
    Refused,
    /// The primary's write failed otherwise (too few replicas answered it, it has no map).
    Failed,
    /// No answer: unreachable, connection closed, or past the deadline.
    Silent,
}

/// How a primary-copy write ended, for the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryOutcome {
    /// Durable on W copies, as `primary` reported.
    Stored {
        /// The node that acknowledged.
        primary: NodeId,
        /// Durable copies it knew of.
        copies: u32,
    },
    /// Targets are out of space; another primary would meet the same replicas.
    NoSpace,
    /// The item itself was refused.
    Refused,
    /// No primary acknowledged within `attempts` tries. Copies may exist; retrying may succeed.
    Unavailable {
        /// Primaries tried.
        attempts: usize,
    },
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryEffect {
    /// Send the item to `to` (to coordinate) and report its answer, or `Silent` after
    /// `timeout_ms`.
    Send {
        /// The primary.
        to: NodeId,
        /// How long to wait for its answer.
        timeout_ms: u64,
    },
    /// The write is over.
    Done(PrimaryOutcome),
}

/// Most primaries one write may try.
pub const PRIMARY_ATTEMPTS_MAX_LIMIT: usize = 16;

/// One primary-copy write from the sender's side.
#[derive(Debug)]
pub struct PrimaryWrite {
    /// Live nodes first, preference order otherwise.
    candidates: Vec<NodeId>,
    timeout_ms: u64,
    /// Index into `candidates` of the primary asked now.
    current: usize,
    done: bool,
}

impl PrimaryWrite {
    /// Starts a write: asks the first live node of `preference` (all nodes if none is live),
    /// waiting `timeout_ms` for each primary's answer, trying at most `attempts_max` nodes.
    pub fn start(
        preference: &[NodeId],
        is_alive: &dyn Fn(&NodeId) -> bool,
        attempts_max: usize,
        timeout_ms: u64,
        effects: &mut Vec<PrimaryEffect>,
    ) -> PrimaryWrite {
        assert!(
            (1..=PRIMARY_ATTEMPTS_MAX_LIMIT).contains(&attempts_max),
            "1 <= attempts_max <= {PRIMARY_ATTEMPTS_MAX_LIMIT}"
        );
        let mut candidates = preference.to_vec();
        // Stable: preference order among the live, then among the others.
        candidates.sort_by_key(|n| !is_alive(n));
        candidates.truncate(attempts_max);
        let mut write = PrimaryWrite {
            candidates,
            timeout_ms,
            current: 0,
            done: false,
        };
        match write.candidates.first() {
            Some(first) => effects.push(PrimaryEffect::Send {
                to: first.clone(),
                timeout_ms,
            }),
            None => write.finish(PrimaryOutcome::Unavailable { attempts: 0 }, effects),
        }
        write
    }

    /// Whether the outcome has been emitted.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// How many primaries were given up on so far (0 while the first is asked).
    pub fn fallbacks(&self) -> usize {
        self.current
    }

    /// The primary asked now, if the write is not over.
    pub fn current(&self) -> Option<&NodeId> {
        if self.done {
            None
        } else {
            self.candidates.get(self.current)
        }
    }

    /// Takes `from`'s answer. Answers from a node not asked now (late ones from a primary
    /// given up on) are ignored: the write moved on, and a late `Stored` changes nothing the
    /// next primary will not also make true.
    pub fn handle(&mut self, from: &NodeId, answer: PrimaryAnswer, effects: &mut Vec<PrimaryEffect>) {
        if self.done || self.candidates.get(self.current) != Some(from) {
            return;
        }
        match answer {
            PrimaryAnswer::Stored { copies } => self.finish(
                PrimaryOutcome::Stored {
                    primary: from.clone(),
                    copies,
                },
                effects,
            ),
            PrimaryAnswer::Full => self.finish(PrimaryOutcome::NoSpace, effects),
            PrimaryAnswer::Refused => self.finish(PrimaryOutcome::Refused, effects),
            PrimaryAnswer::Failed | PrimaryAnswer::Silent => {
                self.current += 1;
                match self.candidates.get(self.current) {
                    Some(next) => effects.push(PrimaryEffect::Send {
                        to: next.clone(),
                        timeout_ms: self.timeout_ms,
                    }),
                    None => self.finish(PrimaryOutcome::Unavailable { attempts: self.current }, effects),
                }
            }
        }
    }

    fn finish(&mut self, outcome: PrimaryOutcome, effects: &mut Vec<PrimaryEffect>) {
        debug_assert!(!self.done, "a primary write decided twice");
        debug_assert!(self.current < self.candidates.len() || matches!(outcome, PrimaryOutcome::Unavailable { .. }));
        self.done = true;
        effects.push(PrimaryEffect::Done(outcome));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod properties {
    //! The sender composed with primaries that run the real `WriteCoordinator` against a
    //! model cluster, where each primary may die before forwarding, after forwarding, or
    //! after its acknowledgement was sent (lost on the way).

    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::storage::replication::{Counting, Outcome, WriteCoordinator, WriteEffect, WriteTimeouts};

    /// What happens to one primary when it is asked.
    #[derive(Debug, Clone, Copy)]
    enum Fate {
        Healthy,
        DiesBeforeForwarding,
        DiesAfterForwarding,
        DiesAfterAcknowledging,
        Full,
    }

    fn fate() -> impl Strategy<Value = Fate> {
        prop_oneof![
            3 => Just(Fate::Healthy),
            1 => Just(Fate::DiesBeforeForwarding),
            1 => Just(Fate::DiesAfterForwarding),
            1 => Just(Fate::DiesAfterAcknowledging),
            1 => Just(Fate::Full),
        ]
    }

    fn node(i: usize) -> NodeId {
        NodeId(vec![i as u8 + 1])
    }

    fn index(n: &NodeId) -> usize {
        usize::from(n.0[0]) - 1
    }

    /// Runs the primary's coordinator with every live target acknowledging at once and every
    /// dead one failing; returns the copies it made durable and whether it acknowledged.
    fn coordinate(
        primary: usize,
        preference: &[NodeId],
        (n, w): (usize, usize),
        dead: &BTreeSet<usize>,
        forward: bool,
    ) -> (BTreeSet<usize>, bool) {
        let is_alive = |id: &NodeId| !dead.contains(&index(id));
        let mut fx = Vec::new();
        let mut c = WriteCoordinator::start(
            0,
            preference,
            n,
            w,
            Counting::AnyTarget,
            WriteTimeouts::default(),
            &is_alive,
            &mut fx,
        );
        let mut durable = BTreeSet::new();
        let mut acked = false;
        // Bounded: each round either sends to a new target or the coordinator stops.
        for _ in 0..=preference.len() * 2 {
            let effects: Vec<WriteEffect> = std::mem::take(&mut fx);
            if effects.is_empty() {
                break;
            }
            for e in effects {
                match e {
                    WriteEffect::Send { to, .. } => {
                        let i = index(&to);
                        // Dying before forwarding: only the primary's own copy is made.
                        if !dead.contains(&i) && (forward || i == primary) {
                            durable.insert(i);
                            c.handle_ack(&to, &mut fx);
                        } else {
                            c.handle_failure(0, &to, &is_alive, &mut fx);
                        }
                    }
                    WriteEffect::Done(Outcome::Acked { .. }) => acked = true,
                    WriteEffect::Done(Outcome::Failed { .. }) | WriteEffect::Timer { .. } | WriteEffect::Settled => {}
                }
            }
        }
        (durable, acked)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Whatever each primary does, the sender decides once, asks each node at most once
        /// and at most `attempts_max` nodes, and reports `Stored` only when W copies are
        /// durable; with a live, healthy primary among its candidates and W live nodes, it
        /// does not give up.
        #[test]
        fn the_sender_reports_stored_only_with_w_copies(
            len in 1usize..8,
            n_raw in 1usize..5,
            w_raw in 1usize..5,
            attempts_max in 1usize..5,
            dead in proptest::collection::btree_set(0usize..8, 0..4),
            fates in proptest::collection::vec(fate(), 8),
        ) {
            let n = n_raw.min(len);
            let w = w_raw.min(n);
            let preference: Vec<NodeId> = (0..len).map(node).collect();
            let is_alive = |id: &NodeId| !dead.contains(&index(id));
            let mut fx = Vec::new();
            let mut write = PrimaryWrite::start(&preference, &is_alive, attempts_max, 1_000, &mut fx);
            let mut asked: Vec<usize> = Vec::new();
            let mut durable: BTreeSet<usize> = BTreeSet::new();
            let mut outcome = None;
            let mut healthy_live_asked = false;
            // Bounded: every round asks a new node or ends the write.
            for _ in 0..=len + 1 {
                let effects: Vec<PrimaryEffect> = std::mem::take(&mut fx);
                if effects.is_empty() {
                    break;
                }
                for e in effects {
                    prop_assert!(outcome.is_none(), "an effect after the outcome: {:?}", e);
                    match e {
                        PrimaryEffect::Send { to, .. } => {
                            let p = index(&to);
                            prop_assert!(!asked.contains(&p), "asked {} twice", p);
                            asked.push(p);
                            prop_assert!(asked.len() <= attempts_max);
                            let answer = if dead.contains(&p) {
                                PrimaryAnswer::Silent
                            } else {
                                match fates[p] {
                                    Fate::Full => PrimaryAnswer::Full,
                                    Fate::DiesBeforeForwarding => {
                                        durable.extend(coordinate(p, &preference, (n, w), &dead, false).0);
                                        PrimaryAnswer::Silent
                                    }
                                    Fate::DiesAfterForwarding => {
                                        durable.extend(coordinate(p, &preference, (n, w), &dead, true).0);
                                        PrimaryAnswer::Silent
                                    }
                                    Fate::DiesAfterAcknowledging | Fate::Healthy => {
                                        let (made, acked) = coordinate(p, &preference, (n, w), &dead, true);
                                        durable.extend(made.iter().copied());
                                        if matches!(fates[p], Fate::Healthy) {
                                            healthy_live_asked = true;
                                        }
                                        match (fates[p], acked) {
                                            (Fate::Healthy, true) => PrimaryAnswer::Stored { copies: made.len() as u32 },
                                            (Fate::Healthy, false) => PrimaryAnswer::Failed,
                                            _ => PrimaryAnswer::Silent,
                                        }
                                    }
                                }
                            };
                            write.handle(&to, answer, &mut fx);
                        }
                        PrimaryEffect::Done(o) => outcome = Some(o),
                    }
                }
            }
            let outcome = outcome.expect("the write ended");
            prop_assert!(write.is_done());
            match outcome {
                PrimaryOutcome::Stored { primary, copies } => {
                    prop_assert!(durable.len() >= w, "stored with {} < W={} durable copies", durable.len(), w);
                    prop_assert!(copies as usize >= w);
                    prop_assert!(asked.last() == Some(&index(&primary)));
                }
                PrimaryOutcome::Unavailable { attempts } => {
                    prop_assert_eq!(attempts, asked.len());
                    let live = (0..len).filter(|i| !dead.contains(i)).count();
                    // Gave up although a healthy primary was asked and W nodes were live:
                    // only if that primary's own coordinator failed, which it cannot here.
                    prop_assert!(!(healthy_live_asked && live >= w), "a healthy primary with W live nodes did not store");
                }
                PrimaryOutcome::NoSpace | PrimaryOutcome::Refused => {}
            }
        }
    }

    #[test]
    fn late_answers_from_an_abandoned_primary_change_nothing() {
        let preference: Vec<NodeId> = (0..3).map(node).collect();
        let mut fx = Vec::new();
        let mut write = PrimaryWrite::start(&preference, &|_| true, 3, 100, &mut fx);
        assert_eq!(
            std::mem::take(&mut fx),
            vec![PrimaryEffect::Send {
                to: node(0),
                timeout_ms: 100
            }]
        );
        write.handle(&node(0), PrimaryAnswer::Silent, &mut fx);
        assert_eq!(
            std::mem::take(&mut fx),
            vec![PrimaryEffect::Send {
                to: node(1),
                timeout_ms: 100
            }]
        );
        // The first primary answers after all: ignored, the second is the one asked.
        write.handle(&node(0), PrimaryAnswer::Stored { copies: 3 }, &mut fx);
        assert!(fx.is_empty());
        assert_eq!(write.current(), Some(&node(1)));
        write.handle(&node(1), PrimaryAnswer::Stored { copies: 2 }, &mut fx);
        assert_eq!(
            fx,
            vec![PrimaryEffect::Done(PrimaryOutcome::Stored {
                primary: node(1),
                copies: 2
            })]
        );
    }

    #[test]
    fn dead_nodes_are_asked_last() {
        let preference: Vec<NodeId> = (0..4).map(node).collect();
        let mut fx = Vec::new();
        let _ = PrimaryWrite::start(&preference, &|n| *n != node(0), 2, 100, &mut fx);
        assert_eq!(
            fx,
            vec![PrimaryEffect::Send {
                to: node(1),
                timeout_ms: 100
            }]
        );
    }
}
