//! The map view: the signed map this node holds (`MapStore`, persisted before use), the
//! placement computed from it, and the partitions this node is *filling*: owned since a new
//! epoch and not yet synced with R of their old owners, so reads do not count its answers
//! (the old owners follow the new ones in the preference list). The view never goes back an
//! epoch. State only: `maps` adopts offered maps and serves `/hadss/map/1`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::cluster::{ClusterMap, MapEnvelope, MapStore, NodeId, Placement};

/// The map, its placement, and the partitions being filled.
pub(in crate::node) struct MapView {
    /// This node.
    me: NodeId,
    /// The persisted store of signed maps.
    maps: Mutex<MapStore>,
    /// The newest map adopted and its placement.
    view: RwLock<Option<Arc<(ClusterMap, Placement)>>>,
    /// Partitions this node became an owner of in a new epoch, with their owners under the
    /// epoch before: until anti-entropy sessions with R of those complete, this node's copy
    /// may be incomplete, and it marks its answers to reads of the partition `Filling`.
    filling: Mutex<HashMap<u32, Filling>>,
}

impl MapView {
    /// The view of `maps` (its current map, if any) for node `me`.
    pub(in crate::node) fn new(me: NodeId, maps: MapStore) -> MapView {
        let view = maps.current().map(|m| Arc::new((m.clone(), Placement::new(m))));
        MapView {
            me,
            maps: Mutex::new(maps),
            view: RwLock::new(view),
            filling: Mutex::new(HashMap::new()),
        }
    }

    /// The current map and placement.
    pub(in crate::node) fn current(&self) -> Option<Arc<(ClusterMap, Placement)>> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The signed envelope of the current map, as stored.
    pub(in crate::node) fn current_envelope(&self) -> Option<MapEnvelope> {
        self.maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .current_envelope()
            .cloned()
    }

    /// Verifies and persists an offered map (refused unless validly signed and newer than
    /// the one stored); returns it. `install` then makes it the view.
    pub(in crate::node) fn store(&self, env: MapEnvelope) -> Result<ClusterMap, crate::cluster::MapError> {
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        maps.offer(env).cloned()
    }

    /// Makes a stored map the view unless a newer one got there first (two offers may race
    /// past the store), and marks the partitions it makes this node a new owner of as
    /// filling. Returns whether the view moved to a newer epoch (not a map already held).
    pub(in crate::node) fn install(&self, map: ClusterMap) -> bool {
        let epoch = map.epoch;
        let placement = Placement::new(&map);
        let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
        let newer = view.as_ref().is_none_or(|v| v.0.epoch < epoch);
        if view.as_ref().is_none_or(|v| v.0.epoch <= epoch) {
            if let Some(old) = view.as_ref() {
                self.note_filling(&old.1, &placement, usize::from(map.policy.read_quorum));
            }
            *view = Some(Arc::new((map, placement)));
        }
        newer
    }

    /// Records the partitions this node owns under `new` but did not under `old` (with
    /// their old owners), as filling until `read_quorum` of those old owners synced with it.
    fn note_filling(&self, old: &Placement, new: &Placement, read_quorum: usize) {
        if old.partitions() != new.partitions() {
            return;
        }
        let mut filling = self.filling.lock().unwrap_or_else(|p| p.into_inner());
        for p in 0..new.partitions() {
            let owns_now = new.replicas(p).any(|n| *n == self.me);
            let owners_before: Vec<NodeId> = old.replicas(p).cloned().collect();
            if owns_now && !owners_before.contains(&self.me) && !owners_before.is_empty() {
                filling
                    .entry(p)
                    .or_insert_with(|| Filling::new(owners_before, read_quorum));
            } else if !owns_now {
                filling.remove(&p);
            }
        }
        if !filling.is_empty() {
            tracing::info!(partitions = filling.len(), "filling partitions newly owned");
        }
    }

    /// The old owners of a partition this node is still filling that have not synced with
    /// it yet.
    pub(in crate::node) fn filling_from(&self, partition: u32) -> Option<Vec<NodeId>> {
        self.filling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&partition)
            .map(Filling::unsynced)
    }

    /// Whether reads of `partition` must not count this node's answers.
    pub(in crate::node) fn is_filling(&self, partition: u32) -> bool {
        self.filling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&partition)
    }

    /// How many partitions this node is filling.
    pub(in crate::node) fn filling_count(&self) -> usize {
        self.filling.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// An anti-entropy session with `old_owner`, an old owner of `partition`, completed:
    /// filled once R old owners have.
    pub(in crate::node) fn filled(&self, partition: u32, old_owner: &NodeId) {
        let mut filling = self.filling.lock().unwrap_or_else(|p| p.into_inner());
        if filling.get_mut(&partition).is_some_and(|f| f.synced_with(old_owner)) {
            filling.remove(&partition);
            tracing::debug!(partition, "partition filled");
        }
    }
}

#[derive(Debug)]
pub(in crate::node) struct Filling {
    /// Its owners under the epoch before.
    old_owners: Vec<NodeId>,
    /// Those that completed an anti-entropy session with this node since.
    synced: Vec<NodeId>,
    /// How many must have: R (any R old owners include one holding each write acknowledged
    /// before the move), or all of them when there are fewer.
    needed: usize,
}

impl Filling {
    pub(in crate::node) fn new(old_owners: Vec<NodeId>, read_quorum: usize) -> Filling {
        let needed = read_quorum.clamp(1, old_owners.len().max(1));
        Filling {
            old_owners,
            synced: Vec::new(),
            needed,
        }
    }

    pub(in crate::node) fn unsynced(&self) -> Vec<NodeId> {
        self.old_owners
            .iter()
            .filter(|o| !self.synced.contains(o))
            .cloned()
            .collect()
    }

    /// Notes a completed session; whether the partition is now filled.
    pub(in crate::node) fn synced_with(&mut self, old_owner: &NodeId) -> bool {
        if self.old_owners.contains(old_owner) && !self.synced.contains(old_owner) {
            self.synced.push(old_owner.clone());
        }
        self.synced.len() >= self.needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId(vec![b])
    }

    #[test]
    fn a_partition_is_filled_after_r_distinct_old_owners_synced() {
        let mut f = Filling::new(vec![id(1), id(2), id(3)], 2);
        assert_eq!(f.unsynced(), vec![id(1), id(2), id(3)]);
        assert!(!f.synced_with(&id(2)));
        assert!(!f.synced_with(&id(2)), "the same old owner twice is still one");
        assert!(!f.synced_with(&id(9)), "a node that was not an owner does not count");
        assert_eq!(f.unsynced(), vec![id(1), id(3)]);
        assert!(f.synced_with(&id(3)));

        // Fewer old owners than R: all of them.
        let mut f = Filling::new(vec![id(1)], 2);
        assert!(f.synced_with(&id(1)));
    }
}
