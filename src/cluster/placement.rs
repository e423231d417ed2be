//! Placement: key → partition → ordered list of storage nodes, computed from the map alone.
//!
//! - A key hashes (BLAKE3, first 8 bytes little endian) to one of the map's P partitions; a
//!   chunk id is already a BLAKE3 hash and uses its own first 8 bytes.
//! - Each partition orders the storage nodes that are `In` with weight > 0 by weighted
//!   rendezvous hashing (`hrw-hash`: score = −weight / ln(hash(node, partition))), hashed with
//!   rapidhash v3 over the node id bytes and the partition number — fixed and portable, never
//!   `RandomState`.
//! - Replicas are the first N of that order after moving nodes from not-yet-used zones first;
//!   the rest of the order is the fallback list (where hinted writes go when a replica is
//!   down).
//!
//! Why rendezvous and not AnchorHash or a hash ring: the mapping depends only on the current
//! node set and weights (AnchorHash depends on the add/remove history, so two nodes that
//! learnt the same map differently could disagree), it yields a full preference list per key
//! (needed for fallback), and adding one node to ten moves ~1/11 of the replica slots, the
//! minimum (`tests::adding_a_node_moves_about_one_eleventh`). The cost, O(nodes · log nodes)
//! per partition, is paid once per epoch for the whole table.
//!
//! Scores use `f64::ln` from the platform's libm; two builds that round a logarithm
//! differently could only disagree where two scores are within one ulp of each other.

use std::hash::{Hash, Hasher};

use hrw_hash::{HrwNode, HrwNodes};

use super::map::{ClusterMap, NodeId, NodeState, Role};

/// Longest preference list kept per partition (replicas plus fallbacks): bounds the table at
/// `partitions × PREFERENCE_LEN_MAX` entries.
pub const PREFERENCE_LEN_MAX: usize = 16;

/// The partition of an arbitrary key (bucket name, object key...).
pub fn partition_of_key(partitions: u32, key: &[u8]) -> u32 {
    let h = blake3::hash(key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    (u64::from_le_bytes(first) % u64::from(partitions.max(1))) as u32
}

/// The partition of a chunk (its id is already a uniform hash).
pub fn partition_of_chunk(partitions: u32, id: &[u8; 32]) -> u32 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&id[..8]);
    (u64::from_le_bytes(first) % u64::from(partitions.max(1))) as u32
}

/// A storage node as the rendezvous hash sees it: its id bytes and weight.
#[derive(PartialEq, Eq)]
struct Candidate {
    index: u16,
    id: Vec<u8>,
    weight: u32,
}

impl Hash for Candidate {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Only the id: the hash must not change when the weight does.
        state.write(&self.id);
    }
}

impl HrwNode for Candidate {
    fn capacity(&self) -> usize {
        self.weight as usize
    }
}

/// The placement table of one map: for every partition, its ordered storage nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    epoch: u64,
    replication: usize,
    /// Ids of the map's storage candidates, indexed by the table.
    nodes: Vec<NodeId>,
    /// `partitions` rows of up to `PREFERENCE_LEN_MAX` indices into `nodes`.
    table: Vec<Vec<u16>>,
}

impl Placement {
    /// Computes the table for `map` (which must be valid).
    pub fn new(map: &ClusterMap) -> Placement {
        let eligible: Vec<(usize, &super::map::NodeInfo)> = map
            .nodes
            .iter()
            .filter(|n| n.role == Role::Storage && n.state == NodeState::In && n.weight > 0)
            .enumerate()
            .collect();
        let nodes: Vec<NodeId> = eligible.iter().map(|(_, n)| n.id.clone()).collect();
        let zones: Vec<&str> = eligible.iter().map(|(_, n)| n.zone.as_str()).collect();
        let hrw = HrwNodes::new(eligible.iter().map(|(i, n)| Candidate {
            index: *i as u16,
            id: n.id.0.clone(),
            weight: n.weight,
        }));
        let replication = usize::from(map.policy.replication);
        let table = (0..map.partitions)
            .map(|p| {
                let order: Vec<u16> = if nodes.is_empty() {
                    Vec::new()
                } else {
                    hrw.sorted(&p.to_le_bytes()).map(|c| c.index).collect()
                };
                zone_first(&order, &zones, replication)
            })
            .collect();
        Placement {
            epoch: map.epoch,
            replication,
            nodes,
            table,
        }
    }

    /// The epoch this table was computed from.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of storage nodes placement draws from.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.table.len() as u32
    }

    /// The full preference list of a partition: replicas first, then fallbacks.
    pub fn preference(&self, partition: u32) -> impl Iterator<Item = &NodeId> {
        self.table
            .get(partition as usize)
            .into_iter()
            .flatten()
            .map(|&i| &self.nodes[usize::from(i)])
    }

    /// The replicas of a partition (the first N of its preference list).
    pub fn replicas(&self, partition: u32) -> impl Iterator<Item = &NodeId> {
        self.preference(partition).take(self.replication)
    }
}

/// Reorders a rendezvous order so the first `n` entries cover as many distinct zones as
/// possible, keeping rendezvous order within each pass; truncates to the preference limit.
fn zone_first(order: &[u16], zones: &[&str], n: usize) -> Vec<u16> {
    let mut picked: Vec<u16> = Vec::with_capacity(order.len().min(PREFERENCE_LEN_MAX));
    let mut used_zones: Vec<&str> = Vec::new();
    for &i in order {
        if picked.len() == n {
            break;
        }
        let z = zones[usize::from(i)];
        if !used_zones.contains(&z) {
            used_zones.push(z);
            picked.push(i);
        }
    }
    for &i in order {
        if picked.len() >= PREFERENCE_LEN_MAX {
            break;
        }
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::{NodeInfo, ReplicationPolicy};

    fn node(i: u32, zone: &str, weight: u32) -> NodeInfo {
        NodeInfo {
            id: NodeId(format!("node-{i:04}").into_bytes()),
            addrs: vec![],
            role: Role::Storage,
            zone: zone.to_string(),
            weight,
            state: NodeState::In,
        }
    }

    fn map(nodes: Vec<NodeInfo>) -> ClusterMap {
        let mut nodes = nodes;
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        ClusterMap {
            epoch: 1,
            nodes,
            policy: ReplicationPolicy {
                replication: 3,
                write_quorum: 2,
                read_quorum: 2,
            },
            partitions: 1024,
        }
    }

    const PINNED_0: [&str; 3] = ["node-0005", "node-0006", "node-0007"];
    const PINNED_777: [&str; 3] = ["node-0006", "node-0002", "node-0004"];

    fn replica_sets(p: &Placement) -> Vec<Vec<NodeId>> {
        (0..p.partitions()).map(|i| p.replicas(i).cloned().collect()).collect()
    }

    #[test]
    fn placement_is_a_pure_function_of_the_map() {
        let m = map((0..10).map(|i| node(i, &format!("z{}", i % 3), 100)).collect());
        let a = Placement::new(&m);
        let b = Placement::new(&m.clone());
        assert_eq!(a, b);
        // Pinned values: every build, process and machine must compute the same table, so a
        // change of hash function or scoring shows up here.
        let names = |p: u32| -> Vec<String> {
            a.replicas(p)
                .map(|n| String::from_utf8_lossy(&n.0).into_owned())
                .collect()
        };
        eprintln!("partition 0: {:?}, partition 777: {:?}", names(0), names(777));
        assert_eq!(names(0), PINNED_0);
        assert_eq!(names(777), PINNED_777);
    }

    #[test]
    fn adding_a_node_moves_about_one_eleventh() {
        let ten: Vec<NodeInfo> = (0..10).map(|i| node(i, &format!("z{i}"), 100)).collect();
        let mut eleven = ten.clone();
        eleven.push(node(10, "z10", 100));
        let before = replica_sets(&Placement::new(&map(ten)));
        let after = replica_sets(&Placement::new(&map(eleven)));
        let slots = before.len() * 3;
        let moved: usize = before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.iter().filter(|n| !b.contains(n)).count())
            .sum();
        let fraction = moved as f64 / slots as f64;
        eprintln!("adding 1 node to 10 moved {moved}/{slots} replica slots ({fraction:.3}); ideal 1/11 = 0.091");
        assert!((0.07..0.115).contains(&fraction), "moved {fraction}");
        // Every moved slot went to the new node: nothing moved between old nodes.
        for (b, a) in before.iter().zip(&after) {
            for n in a {
                assert!(b.contains(n) || n.0 == b"node-0010", "data moved between old nodes");
            }
        }
    }

    #[test]
    fn replicas_prefer_distinct_zones() {
        let nodes: Vec<NodeInfo> = (0..9).map(|i| node(i, &format!("z{}", i % 3), 100)).collect();
        let zone_of = |id: &NodeId| nodes.iter().find(|n| &n.id == id).map(|n| n.zone.clone());
        let p = Placement::new(&map(nodes.clone()));
        for part in 0..p.partitions() {
            let mut zones: Vec<_> = p.replicas(part).map(zone_of).collect();
            zones.sort();
            zones.dedup();
            assert_eq!(zones.len(), 3, "partition {part}");
            assert_eq!(p.preference(part).count(), 9);
        }
    }

    #[test]
    fn weights_shape_the_share() {
        let mut nodes: Vec<NodeInfo> = (0..4).map(|i| node(i, "z", 100)).collect();
        nodes.push(node(4, "z", 300));
        let p = Placement::new(&map(nodes));
        let heavy = (0..p.partitions())
            .filter(|&i| p.replicas(i).next().is_some_and(|n| n.0 == b"node-0004"))
            .count();
        // Weight 300 of 700: about 43% of primaries.
        let share = heavy as f64 / f64::from(p.partitions());
        assert!((0.36..0.50).contains(&share), "share {share}");
    }

    #[test]
    fn out_and_zero_weight_nodes_take_nothing() {
        let mut nodes: Vec<NodeInfo> = (0..5).map(|i| node(i, &format!("z{i}"), 100)).collect();
        nodes[1].state = NodeState::Out;
        nodes[2].weight = 0;
        let p = Placement::new(&map(nodes));
        for part in 0..p.partitions() {
            assert!(p.preference(part).all(|n| n.0 != b"node-0001" && n.0 != b"node-0002"));
        }
        assert_eq!(
            partition_of_key(1024, b"bucket/key"),
            partition_of_key(1024, b"bucket/key")
        );
        assert!(partition_of_chunk(1024, &[0xff; 32]) < 1024);
    }
}
