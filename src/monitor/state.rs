//! The monitors' replicated state machine, sans-IO: the current cluster map, the monitors,
//! storage nodes waiting for admission, and the outcomes of recent proposals. Raft feeds it
//! committed proposals in log order; every monitor applying the same log reaches the same
//! state and the same maps, so the signed envelopes they publish are identical.
//!
//! Invariants: the epoch only grows, by one per applied change (or jumps to just above the
//! proposal's `epoch_floor`, the highest epoch the proposing monitor had seen, so a map that
//! reached the mesh some other way is never undercut); a refused change leaves everything
//! but the outcome table untouched; a proposal whose `request_id` was already applied is not
//! applied again and answers the first outcome (an admin client retrying through a leader
//! change gets exactly-once).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::cluster::change::{self, Change, Refusal, show_id};
pub use crate::cluster::change::{Op, Outcome};
use crate::cluster::{ClusterMap, NodeId, NodeInfo, Role};

/// Outcomes of recent proposals kept for duplicate detection (a retry older than this many
/// proposals is treated as new).
pub const RECENT_OUTCOMES_MAX: usize = 4096;
/// Storage nodes that may wait for admission at once (bounds what unadmitted nodes holding
/// the cluster secret can make the monitors store).
pub const PENDING_MAX: usize = 1024;

/// One entry of the monitors' Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Chosen by the client; retries reuse it.
    pub request_id: u128,
    /// The next epoch is above this (the proposer's newest known epoch).
    pub epoch_floor: u64,
    /// What to do.
    pub op: Op,
}

/// The replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorState {
    /// The current map (none before `Init`).
    pub map: Option<ClusterMap>,
    /// The voting monitors, from the newest applied Raft membership.
    pub monitors: Vec<NodeInfo>,
    /// Storage nodes waiting for admission.
    pub pending: BTreeMap<NodeId, NodeInfo>,
    recent: BTreeMap<u128, Outcome>,
    recent_order: VecDeque<u128>,
}

impl MonitorState {
    /// The current epoch (0 before the first map).
    pub fn epoch(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.epoch)
    }

    /// The outcome recorded for `request_id`, if it was applied recently.
    pub fn outcome_of(&self, request_id: u128) -> Option<&Outcome> {
        self.recent.get(&request_id)
    }

    /// Applies one committed proposal.
    pub fn apply(&mut self, proposal: &Proposal) -> Outcome {
        if let Some(done) = self.recent.get(&proposal.request_id) {
            return done.clone();
        }
        let outcome = self.apply_op(&proposal.op, proposal.epoch_floor);
        self.remember(proposal.request_id, outcome.clone());
        outcome
    }

    fn next_epoch(&self, floor: u64) -> u64 {
        self.epoch().max(floor) + 1
    }

    fn apply_op(&mut self, op: &Op, floor: u64) -> Outcome {
        let epoch = self.next_epoch(floor);
        match op {
            Op::Init { policy, partitions } => {
                if self.map.is_some() {
                    return Outcome::Refused(Refusal::NoOp("the cluster already has a map".into()));
                }
                let map = ClusterMap {
                    epoch,
                    nodes: self.monitors.clone(),
                    policy: *policy,
                    partitions: *partitions,
                };
                if let Err(e) = map.validate() {
                    return Outcome::Refused(Refusal::Invalid(e.to_string()));
                }
                if let Err(r) = change::check_safe(&map, &map) {
                    return Outcome::Refused(r);
                }
                self.map = Some(map);
                Outcome::Applied { epoch }
            }
            Op::Change(c) => self.change(c, epoch),
            Op::AdmitPending(id) => match self.pending.get(id) {
                Some(node) => {
                    let node = node.clone();
                    self.change(&Change::Admit { node }, epoch)
                }
                None => Outcome::Refused(Refusal::UnknownNode(format!(
                    "{} (not waiting for admission)",
                    show_id(id)
                ))),
            },
            Op::Pending(node) => {
                if node.role != Role::Storage {
                    return Outcome::Refused(Refusal::Invalid("only storage nodes wait for admission".into()));
                }
                if self.map.as_ref().and_then(|m| m.node(&node.id)).is_some() {
                    return Outcome::Refused(Refusal::NoOp("already in the map".into()));
                }
                if self.pending.len() >= PENDING_MAX && !self.pending.contains_key(&node.id) {
                    return Outcome::Refused(Refusal::Invalid(format!(
                        "{PENDING_MAX} nodes already wait for admission"
                    )));
                }
                self.pending.insert(node.id.clone(), node.clone());
                Outcome::Recorded
            }
        }
    }

    fn change(&mut self, c: &Change, epoch: u64) -> Outcome {
        let Some(map) = &self.map else {
            return Outcome::Refused(Refusal::Invalid("the cluster has no map yet".into()));
        };
        match change::apply(map, c, epoch) {
            Ok(next) => {
                if let Change::Admit { node } = c {
                    self.pending.remove(&node.id);
                }
                self.map = Some(next);
                Outcome::Applied { epoch }
            }
            Err(r) => Outcome::Refused(r),
        }
    }

    /// Applies a committed Raft membership: the voters become the map's monitors (a new
    /// epoch if the map exists and they changed).
    pub fn set_monitors(&mut self, mut monitors: Vec<NodeInfo>) -> Outcome {
        monitors.sort_by(|a, b| a.id.cmp(&b.id));
        monitors.dedup_by(|a, b| a.id == b.id);
        self.monitors = monitors.clone();
        let epoch = self.next_epoch(0);
        self.change(&Change::SetMonitors { monitors }, epoch)
    }

    fn remember(&mut self, request_id: u128, outcome: Outcome) {
        if self.recent_order.len() >= RECENT_OUTCOMES_MAX
            && let Some(old) = self.recent_order.pop_front()
        {
            self.recent.remove(&old);
        }
        self.recent.insert(request_id, outcome);
        self.recent_order.push_back(request_id);
        debug_assert_eq!(self.recent.len(), self.recent_order.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeState;
    use crate::cluster::ReplicationPolicy;

    fn node(i: u8, role: Role) -> NodeInfo {
        NodeInfo {
            id: NodeId(vec![i; 8]),
            addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", 7000 + u32::from(i))],
            role,
            zone: format!("z{}", i % 3),
            weight: if role == Role::Storage { 100 } else { 0 },
            state: NodeState::In,
        }
    }

    fn init(state: &mut MonitorState) {
        state.set_monitors(vec![node(200, Role::Monitor)]);
        let out = state.apply(&Proposal {
            request_id: 1,
            epoch_floor: 0,
            op: Op::Init {
                policy: ReplicationPolicy {
                    replication: 3,
                    write_quorum: 2,
                    read_quorum: 2,
                },
                partitions: 64,
            },
        });
        assert_eq!(out, Outcome::Applied { epoch: 1 });
    }

    #[test]
    fn epochs_grow_by_one_and_respect_the_floor() {
        let mut s = MonitorState::default();
        init(&mut s);
        let admit = |id: u128, i: u8, floor| Proposal {
            request_id: id,
            epoch_floor: floor,
            op: Op::Change(Change::Admit {
                node: node(i, Role::Storage),
            }),
        };
        assert_eq!(s.apply(&admit(2, 1, 0)), Outcome::Applied { epoch: 2 });
        assert_eq!(s.apply(&admit(3, 2, 10)), Outcome::Applied { epoch: 11 });
        assert_eq!(s.apply(&admit(4, 3, 5)), Outcome::Applied { epoch: 12 });
        assert_eq!(s.map.as_ref().map(|m| m.nodes.len()), Some(4));
    }

    #[test]
    fn a_retried_request_applies_once() {
        let mut s = MonitorState::default();
        init(&mut s);
        let p = Proposal {
            request_id: 77,
            epoch_floor: 0,
            op: Op::Change(Change::Admit {
                node: node(1, Role::Storage),
            }),
        };
        assert_eq!(s.apply(&p), Outcome::Applied { epoch: 2 });
        // The same request again (a client retry after a leader change) answers the same
        // outcome and makes no new epoch.
        assert_eq!(s.apply(&p), Outcome::Applied { epoch: 2 });
        assert_eq!(s.epoch(), 2);
        // A refused change leaves the map and epoch alone.
        let dup = Proposal { request_id: 78, ..p };
        assert!(matches!(s.apply(&dup), Outcome::Refused(Refusal::NoOp(_))));
        assert_eq!(s.epoch(), 2);
    }

    #[test]
    fn pending_nodes_wait_for_admission() {
        let mut s = MonitorState::default();
        init(&mut s);
        let n = node(5, Role::Storage);
        let pend = Proposal {
            request_id: 10,
            epoch_floor: 0,
            op: Op::Pending(n.clone()),
        };
        assert_eq!(s.apply(&pend), Outcome::Recorded);
        assert_eq!(s.epoch(), 1);
        assert!(s.pending.contains_key(&n.id));
        let admit = Proposal {
            request_id: 11,
            epoch_floor: 0,
            op: Op::AdmitPending(n.id.clone()),
        };
        assert_eq!(s.apply(&admit), Outcome::Applied { epoch: 2 });
        assert!(s.pending.is_empty());
        assert!(s.map.as_ref().and_then(|m| m.node(&n.id)).is_some());
    }

    #[test]
    fn monitors_follow_membership_and_outcomes_are_bounded() {
        let mut s = MonitorState::default();
        init(&mut s);
        assert_eq!(
            s.set_monitors(vec![node(200, Role::Monitor), node(201, Role::Monitor)]),
            Outcome::Applied { epoch: 2 }
        );
        assert!(matches!(
            s.set_monitors(vec![node(201, Role::Monitor), node(200, Role::Monitor)]),
            Outcome::Refused(_)
        ));
        for id in 0..(RECENT_OUTCOMES_MAX as u128 + 10) {
            s.apply(&Proposal {
                request_id: 1000 + id,
                epoch_floor: 0,
                op: Op::AdmitPending(NodeId(vec![1])),
            });
        }
        assert_eq!(s.recent.len(), RECENT_OUTCOMES_MAX);
        assert!(s.outcome_of(1000).is_none(), "oldest outcome evicted");
    }
}
