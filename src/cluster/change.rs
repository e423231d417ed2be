//! Changes to the cluster map and the rules that make them safe: the only way a map moves
//! from one epoch to the next. Pure functions of (map, change), so every monitor applying the
//! same committed change gets the same next map, and tests can check the rules directly.
//!
//! Safety rule for placement: data acknowledged under the old map is on at least W of each
//! partition's old replicas. A change may take at most W − 1 of those replicas out of the
//! partition's new replica set, so at least one acknowledged copy always stays with the new
//! owners (until rebalancing, which moves data to new owners, exists, an owner that lost its
//! replica slot is the only way to find the data). A change that would take more is refused
//! with the partition and count. The policy must keep W + R > N (every read quorum meets
//! every write quorum), and a change may not leave fewer `In` storage nodes than W (writes
//! would fail) unless there were already that few.
//!
//! Not here: who may propose a change (the monitors' admin protocol) and replication of the
//! change (Raft in `crate::monitor`).

use serde::{Deserialize, Serialize};

use super::map::{
    ADDRS_PER_NODE_MAX, ClusterMap, FIELD_SIZE_BYTES_MAX, NodeId, NodeInfo, NodeState, ReplicationPolicy, Role,
};
use super::placement::Placement;

/// Default weight of an admitted storage node.
pub const WEIGHT_DEFAULT: u32 = 100;
/// Highest weight a node may be given (keeps weighted rendezvous well conditioned).
pub const WEIGHT_MAX: u32 = 1_000_000;

/// One change to the map. Every applied change yields the next epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Add a storage node (state `In`), or refresh the addresses of a node already in the map.
    Admit {
        /// Its identity, addresses and zone; its role must be `Storage`.
        node: NodeInfo,
    },
    /// Set a node's failure domain.
    SetZone {
        /// The node.
        id: NodeId,
        /// Its zone.
        zone: String,
    },
    /// Set a node's relative share of partitions.
    SetWeight {
        /// The node.
        id: NodeId,
        /// Its weight (0 takes no partitions).
        weight: u32,
    },
    /// Set a node's placement state (`In`, `Draining`, `Out`).
    SetState {
        /// The node.
        id: NodeId,
        /// The new state.
        state: NodeState,
    },
    /// Remove a node from the map altogether.
    Remove {
        /// The node.
        id: NodeId,
    },
    /// Set N, W and R.
    SetPolicy(ReplicationPolicy),
    /// Replace the map's monitors (from a committed Raft membership change).
    SetMonitors {
        /// The voting monitors, each with role `Monitor`.
        monitors: Vec<NodeInfo>,
    },
}

/// What a proposal to the monitors asks for (the admin protocol carries it; the monitors'
/// state machine applies it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Create the first map (refused once there is one).
    Init {
        /// Replication policy.
        policy: ReplicationPolicy,
        /// Partitions, fixed for the life of the cluster.
        partitions: u32,
    },
    /// Change the map.
    Change(Change),
    /// Record a storage node that asked to join and waits for an operator.
    Pending(NodeInfo),
    /// Admit a node that is waiting.
    AdmitPending(NodeId),
}

/// The result of applying a proposal to the monitors' state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The map moved to this epoch.
    Applied {
        /// The new epoch.
        epoch: u64,
    },
    /// Recorded without a new epoch (a pending node).
    Recorded,
    /// Nothing changed.
    Refused(Refusal),
}

/// Why a change was refused. Nothing changed; retrying the same change cannot help until
/// the map changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The node is not in the map.
    #[error("node {0} is not in the map")]
    UnknownNode(String),
    /// The change names bad values (a role, a length, a weight out of range).
    #[error("invalid change: {0}")]
    Invalid(String),
    /// The change would leave some data without a reachable copy or the cluster unable to
    /// accept writes.
    #[error("unsafe change: {0}")]
    Unsafe(String),
    /// The change would not change anything.
    #[error("no change: {0}")]
    NoOp(String),
}

/// A short printable form of a node id (its peer id when it is one).
pub fn show_id(id: &NodeId) -> String {
    libp2p::PeerId::from_bytes(&id.0)
        .map_or_else(|_| id.0.iter().map(|b| format!("{b:02x}")).collect(), |p| p.to_string())
}

fn node_mut<'m>(map: &'m mut ClusterMap, id: &NodeId) -> Result<&'m mut NodeInfo, Refusal> {
    match map.nodes.binary_search_by(|n| n.id.cmp(id)) {
        Ok(i) => Ok(&mut map.nodes[i]),
        Err(_) => Err(Refusal::UnknownNode(show_id(id))),
    }
}

fn check_node_fields(node: &NodeInfo) -> Result<(), Refusal> {
    if node.id.0.is_empty() || node.id.0.len() > FIELD_SIZE_BYTES_MAX {
        return Err(Refusal::Invalid("node id length out of range".into()));
    }
    if node.addrs.is_empty() || node.addrs.len() > ADDRS_PER_NODE_MAX {
        return Err(Refusal::Invalid(format!(
            "a node needs 1 to {ADDRS_PER_NODE_MAX} addresses"
        )));
    }
    if node.addrs.iter().any(|a| a.len() > FIELD_SIZE_BYTES_MAX) || node.zone.len() > FIELD_SIZE_BYTES_MAX {
        return Err(Refusal::Invalid("address or zone too long".into()));
    }
    if node.weight > WEIGHT_MAX {
        return Err(Refusal::Invalid(format!("weight above {WEIGHT_MAX}")));
    }
    Ok(())
}

/// The map `change` makes of `map`, with epoch `epoch`, if it is valid and safe.
pub fn apply(map: &ClusterMap, change: &Change, epoch: u64) -> Result<ClusterMap, Refusal> {
    debug_assert!(epoch > map.epoch, "epochs only move forward");
    let mut next = map.clone();
    next.epoch = epoch;
    match change {
        Change::Admit { node } => {
            if node.role != Role::Storage {
                return Err(Refusal::Invalid(
                    "only storage nodes are admitted; monitors join through Raft".into(),
                ));
            }
            check_node_fields(node)?;
            match next.nodes.binary_search_by(|n| n.id.cmp(&node.id)) {
                Ok(i) => {
                    let held = &mut next.nodes[i];
                    if held.addrs == node.addrs {
                        return Err(Refusal::NoOp(format!("{} is already in the map", show_id(&node.id))));
                    }
                    // A known node that moved: only its addresses change.
                    held.addrs = node.addrs.clone();
                }
                Err(i) => {
                    let mut node = node.clone();
                    node.state = NodeState::In;
                    next.nodes.insert(i, node);
                }
            }
        }
        Change::SetZone { id, zone } => {
            if zone.len() > FIELD_SIZE_BYTES_MAX {
                return Err(Refusal::Invalid("zone too long".into()));
            }
            let n = node_mut(&mut next, id)?;
            if n.zone == *zone {
                return Err(Refusal::NoOp(format!("{} is already in zone {zone}", show_id(id))));
            }
            n.zone = zone.clone();
        }
        Change::SetWeight { id, weight } => {
            if *weight > WEIGHT_MAX {
                return Err(Refusal::Invalid(format!("weight above {WEIGHT_MAX}")));
            }
            let n = node_mut(&mut next, id)?;
            if n.weight == *weight {
                return Err(Refusal::NoOp(format!("{} already has weight {weight}", show_id(id))));
            }
            n.weight = *weight;
        }
        Change::SetState { id, state } => {
            let n = node_mut(&mut next, id)?;
            if n.role != Role::Storage {
                return Err(Refusal::Invalid("only storage nodes have a placement state".into()));
            }
            if n.state == *state {
                return Err(Refusal::NoOp(format!("{} is already {state:?}", show_id(id))));
            }
            n.state = *state;
        }
        Change::Remove { id } => {
            let i = next
                .nodes
                .binary_search_by(|n| n.id.cmp(id))
                .map_err(|_| Refusal::UnknownNode(show_id(id)))?;
            if next.nodes[i].role == Role::Monitor {
                return Err(Refusal::Invalid(
                    "monitors leave through a monitor membership change".into(),
                ));
            }
            next.nodes.remove(i);
        }
        Change::SetPolicy(policy) => {
            if *policy == next.policy {
                return Err(Refusal::NoOp("the policy is already this".into()));
            }
            next.policy = *policy;
        }
        Change::SetMonitors { monitors } => {
            for m in monitors {
                if m.role != Role::Monitor {
                    return Err(Refusal::Invalid("SetMonitors lists monitors only".into()));
                }
                check_node_fields(m)?;
            }
            next.nodes.retain(|n| n.role != Role::Monitor);
            for m in monitors {
                match next.nodes.binary_search_by(|n| n.id.cmp(&m.id)) {
                    Ok(_) => return Err(Refusal::Invalid("a monitor id is already a storage node".into())),
                    Err(i) => next.nodes.insert(i, m.clone()),
                }
            }
            if next.nodes == map.nodes {
                return Err(Refusal::NoOp("the monitors are already these".into()));
            }
        }
    }
    next.validate().map_err(|e| Refusal::Invalid(e.to_string()))?;
    check_safe(map, &next)?;
    Ok(next)
}

/// Refuses `next` if it could hide acknowledged data or stop writes (see the module doc).
pub fn check_safe(prev: &ClusterMap, next: &ClusterMap) -> Result<(), Refusal> {
    let p = next.policy;
    if u16::from(p.write_quorum) + u16::from(p.read_quorum) <= u16::from(p.replication) {
        return Err(Refusal::Unsafe(format!(
            "W + R must exceed N so every read meets every write (N={}, W={}, R={})",
            p.replication, p.write_quorum, p.read_quorum
        )));
    }
    let in_count = |m: &ClusterMap| {
        m.nodes
            .iter()
            .filter(|n| n.role == Role::Storage && n.state == NodeState::In && n.weight > 0)
            .count()
    };
    let (was, now) = (in_count(prev), in_count(next));
    if now < usize::from(p.write_quorum) && now < was {
        return Err(Refusal::Unsafe(format!(
            "it leaves {now} storage nodes taking data, fewer than the write quorum W={}",
            p.write_quorum
        )));
    }
    let before = Placement::new(prev);
    let after = Placement::new(next);
    let lost_max = usize::from(prev.policy.write_quorum).saturating_sub(1);
    let mut worst: Option<(u32, usize, Vec<String>)> = None;
    for partition in 0..prev.partitions.min(next.partitions) {
        let new: Vec<&NodeId> = after.replicas(partition).collect();
        let lost: Vec<String> = before
            .replicas(partition)
            .filter(|n| !new.contains(n))
            .map(show_id)
            .collect();
        if lost.len() > lost_max && worst.as_ref().is_none_or(|w| lost.len() > w.1) {
            worst = Some((partition, lost.len(), lost));
        }
    }
    if let Some((partition, count, lost)) = worst {
        return Err(Refusal::Unsafe(format!(
            "partition {partition} would lose {count} of its replicas at once ({}); with W={} a \
             partition can lose at most {lost_max} per change before its data has moved — change \
             one node at a time",
            lost.join(", "),
            prev.policy.write_quorum
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(i: u32, zone: &str) -> NodeInfo {
        NodeInfo {
            id: NodeId(format!("node-{i:04}").into_bytes()),
            addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", 7000 + i)],
            role: Role::Storage,
            zone: zone.to_string(),
            weight: WEIGHT_DEFAULT,
            state: NodeState::In,
        }
    }

    fn map(nodes: u32) -> ClusterMap {
        ClusterMap {
            epoch: 1,
            nodes: (0..nodes).map(|i| storage(i, &format!("z{}", i % 3))).collect(),
            policy: ReplicationPolicy {
                replication: 3,
                write_quorum: 2,
                read_quorum: 2,
            },
            partitions: 256,
        }
    }

    #[test]
    fn admit_adds_and_refreshes() {
        let m = map(4);
        let next = apply(&m, &Change::Admit { node: storage(9, "z1") }, 2).expect("admit");
        assert_eq!(next.nodes.len(), 5);
        assert_eq!(next.epoch, 2);
        assert!(matches!(
            apply(&next, &Change::Admit { node: storage(9, "z1") }, 3),
            Err(Refusal::NoOp(_))
        ));
        let mut moved = storage(9, "z1");
        moved.addrs = vec!["/ip4/127.0.0.1/tcp/1".into()];
        let next2 = apply(&next, &Change::Admit { node: moved.clone() }, 3).expect("new address");
        assert_eq!(next2.node(&moved.id).expect("node").addrs, moved.addrs);
    }

    #[test]
    fn one_node_out_is_safe_two_at_once_are_not() {
        let m = map(5);
        let out = |m: &ClusterMap, i: u32, e| {
            apply(
                m,
                &Change::SetState {
                    id: storage(i, "").id,
                    state: NodeState::Out,
                },
                e,
            )
        };
        let one = out(&m, 0, 2).expect("one node out of 5 with W=2");
        // Removing two nodes in one change could take two of three replicas of a partition.
        let mut two = m.clone();
        two.epoch = 2;
        two.nodes[0].state = NodeState::Out;
        two.nodes[1].state = NodeState::Out;
        assert!(matches!(check_safe(&m, &two), Err(Refusal::Unsafe(_))));
        // One at a time, each step relative to the map before it, is allowed.
        out(&one, 1, 3).expect("second node, next change");
    }

    #[test]
    fn policy_bounds() {
        let m = map(5);
        let set = |n, w, r| {
            apply(
                &m,
                &Change::SetPolicy(ReplicationPolicy {
                    replication: n,
                    write_quorum: w,
                    read_quorum: r,
                }),
                2,
            )
        };
        assert!(matches!(set(3, 1, 2), Err(Refusal::Unsafe(_))), "W + R must exceed N");
        assert!(matches!(set(3, 4, 2), Err(Refusal::Invalid(_))), "W <= N");
        set(3, 3, 1).expect("N=3 W=3 R=1 is a valid quorum system");
        set(5, 3, 3).expect("more copies is always safe");
        // N 3 -> 1 drops two replica slots of every partition at once.
        assert!(matches!(set(1, 1, 1), Err(Refusal::Unsafe(_))));
    }

    #[test]
    fn cannot_fall_below_write_quorum() {
        let m = map(2);
        let mut m = m;
        m.policy = ReplicationPolicy {
            replication: 2,
            write_quorum: 2,
            read_quorum: 1,
        };
        let r = apply(&m, &Change::Remove { id: storage(0, "").id }, 2);
        assert!(matches!(r, Err(Refusal::Unsafe(_))), "{r:?}");
        // Growing a cluster that is still below W is allowed.
        let mut small = map(0);
        small.epoch = 1;
        apply(&small, &Change::Admit { node: storage(1, "a") }, 2).expect("first node");
    }

    #[test]
    fn monitors_replace_monitors_only() {
        let m = map(3);
        let mon = |i: u32| NodeInfo {
            role: Role::Monitor,
            weight: 0,
            ..storage(100 + i, "m")
        };
        let next = apply(
            &m,
            &Change::SetMonitors {
                monitors: vec![mon(1), mon(2)],
            },
            2,
        )
        .expect("monitors");
        assert_eq!(next.nodes.iter().filter(|n| n.role == Role::Monitor).count(), 2);
        let next = apply(&next, &Change::SetMonitors { monitors: vec![mon(3)] }, 3).expect("replace");
        let monitors: Vec<_> = next.nodes.iter().filter(|n| n.role == Role::Monitor).collect();
        assert_eq!(monitors.len(), 1);
        assert_eq!(next.nodes.len(), 4);
        assert!(matches!(
            apply(&next, &Change::Remove { id: mon(3).id }, 4),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            apply(&next, &Change::Admit { node: mon(4) }, 4),
            Err(Refusal::Invalid(_))
        ));
    }
}
