//! An incrementally maintained Merkle summary of a set, grouped by key prefix.
//!
//! Two replicas that hold (almost) the same set find the differences by exchanging a few
//! node values: compare roots; where they differ, compare the children; descend only into
//! differing subtrees; at the leaves, exchange the keys. The cost grows with the number of
//! differences, not with the size of the set.
//!
//! The tree is generic: an item is a `key_hash` (32 bytes, decides the leaf: its first
//! `fanout_bits * depth` bits) and a `digest` (32 bytes, what is summed). The chunk store uses
//! `key_hash = digest = chunk id`; a metadata store uses `key_hash = hash(key)` and
//! `digest = hash(key, version)`, so a newer version of a record shows as a difference in the
//! leaf of its key.
//!
//! A node's value is the wrapping sum of its items' digests (as four `u64` lanes) plus their
//! count. Sums are commutative and invertible, so insert and remove are `O(depth)` additions
//! and the root of a set does not depend on the order it was built in. This is a summary for
//! replicas that trust each other, not an authenticated structure: a malicious peer could
//! craft colliding sums.

use serde::{Deserialize, Serialize};

/// Largest supported `fanout_bits * depth`: 2^24 leaves of 40 bytes would already be 640 MiB.
pub const MERKLE_LEAF_BITS_MAX: u32 = 24;

/// The value of one tree node: the sum of the digests below it and how many there are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MerkleNode {
    /// Wrapping sum of the items' digests, as four little-endian `u64` lanes.
    pub sum: [u64; 4],
    /// Number of items below this node.
    pub count: u64,
}

impl MerkleNode {
    fn add(&mut self, d: &[u64; 4]) {
        for (s, x) in self.sum.iter_mut().zip(d) {
            *s = s.wrapping_add(*x);
        }
        self.count = self.count.wrapping_add(1);
    }

    fn sub(&mut self, d: &[u64; 4]) {
        for (s, x) in self.sum.iter_mut().zip(d) {
            *s = s.wrapping_sub(*x);
        }
        self.count = self.count.wrapping_sub(1);
    }

    /// Whether the subtree is empty.
    pub fn is_empty(&self) -> bool {
        *self == MerkleNode::default()
    }
}

/// A fixed-shape tree with `2^fanout_bits` children per node and `depth` levels below the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    fanout_bits: u32,
    depth: u32,
    /// `levels[0]` is the root; `levels[depth]` the leaves. Level `l` has `fanout^l` nodes.
    levels: Vec<Vec<MerkleNode>>,
}

/// Shape of a Merkle tree. Both sides of a comparison must use the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleShape {
    /// log2 of the number of children per node (4 → 16 children).
    pub fanout_bits: u32,
    /// Levels below the root.
    pub depth: u32,
}

impl MerkleShape {
    /// 16 children per node, 3 levels: 4096 leaves, about 170 KiB of nodes.
    pub const DEFAULT: MerkleShape = MerkleShape {
        fanout_bits: 4,
        depth: 3,
    };

    /// Number of leaves.
    pub fn leaf_count(&self) -> u32 {
        1 << (self.fanout_bits * self.depth)
    }

    /// The leaf an item with this key hash belongs to: the first `fanout_bits * depth` bits.
    pub fn leaf_of(&self, key_hash: &[u8; 32]) -> u32 {
        let prefix = u32::from_be_bytes([key_hash[0], key_hash[1], key_hash[2], key_hash[3]]);
        prefix >> (32 - self.fanout_bits * self.depth)
    }

    fn is_valid(&self) -> bool {
        self.fanout_bits >= 1 && self.depth >= 1 && self.fanout_bits * self.depth <= MERKLE_LEAF_BITS_MAX
    }
}

impl MerkleTree {
    /// An empty tree. Returns `None` if the shape is out of bounds.
    pub fn new(shape: MerkleShape) -> Option<MerkleTree> {
        if !shape.is_valid() {
            return None;
        }
        let levels = (0..=shape.depth)
            .map(|l| vec![MerkleNode::default(); 1usize << (shape.fanout_bits * l)])
            .collect();
        Some(MerkleTree {
            fanout_bits: shape.fanout_bits,
            depth: shape.depth,
            levels,
        })
    }

    /// The tree's shape.
    pub fn shape(&self) -> MerkleShape {
        MerkleShape {
            fanout_bits: self.fanout_bits,
            depth: self.depth,
        }
    }

    /// The leaf an item with this key hash belongs to: the first `fanout_bits * depth` bits.
    pub fn leaf_of(&self, key_hash: &[u8; 32]) -> u32 {
        self.shape().leaf_of(key_hash)
    }

    /// Adds an item. Adding the same item twice counts it twice: callers keep the set a set.
    pub fn insert(&mut self, key_hash: &[u8; 32], digest: &[u8; 32]) {
        let d = lanes(digest);
        self.update(key_hash, |n| n.add(&d));
    }

    /// Removes an item previously inserted.
    pub fn remove(&mut self, key_hash: &[u8; 32], digest: &[u8; 32]) {
        let d = lanes(digest);
        self.update(key_hash, |n| n.sub(&d));
    }

    fn update(&mut self, key_hash: &[u8; 32], f: impl Fn(&mut MerkleNode)) {
        let leaf = self.leaf_of(key_hash) as usize;
        for level in 0..=self.depth {
            let index = leaf >> (self.fanout_bits * (self.depth - level));
            f(&mut self.levels[level as usize][index]);
        }
    }

    /// The root: equal roots mean (with overwhelming probability) equal sets.
    pub fn root(&self) -> MerkleNode {
        self.levels[0][0]
    }

    /// The node at `level` (0 = root), `index`; `None` if out of range.
    pub fn node(&self, level: u32, index: u32) -> Option<MerkleNode> {
        self.levels.get(level as usize)?.get(index as usize).copied()
    }

    /// The children of node (`level`, `index`), in order; `None` at the leaves or out of range.
    pub fn children(&self, level: u32, index: u32) -> Option<&[MerkleNode]> {
        if level >= self.depth {
            return None;
        }
        let fanout = 1usize << self.fanout_bits;
        let start = (index as usize).checked_mul(fanout)?;
        self.levels.get(level as usize + 1)?.get(start..start + fanout)
    }

    /// Indices (at `level + 1`) of the children of (`level`, `index`) that differ from
    /// `remote_children`. A length mismatch means every child differs.
    pub fn differing_children(&self, level: u32, index: u32, remote_children: &[MerkleNode]) -> Vec<u32> {
        let Some(local) = self.children(level, index) else {
            return Vec::new();
        };
        let fanout = local.len() as u32;
        (0..fanout)
            .filter(|&i| local.get(i as usize) != remote_children.get(i as usize))
            .map(|i| index * fanout + i)
            .collect()
    }

    /// The leaves where two trees of the same shape differ (a local walk; replicas do the same
    /// walk over the network, level by level). Trees of different shapes differ everywhere.
    pub fn differing_leaves(&self, other: &MerkleTree) -> Vec<u32> {
        if self.shape() != other.shape() {
            return (0..self.shape().leaf_count()).collect();
        }
        let mut frontier = if self.root() == other.root() {
            vec![]
        } else {
            vec![0u32]
        };
        for level in 0..self.depth {
            let mut next = Vec::new();
            for index in frontier {
                if let Some(remote) = other.children(level, index) {
                    next.extend(self.differing_children(level, index, remote));
                }
            }
            frontier = next;
        }
        frontier
    }
}

fn lanes(d: &[u8; 32]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (i, lane) in out.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[i * 8..i * 8 + 8]);
        *lane = u64::from_le_bytes(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u32) -> [u8; 32] {
        *blake3::hash(&i.to_le_bytes()).as_bytes()
    }

    #[test]
    fn order_independent_and_invertible() {
        let mut a = MerkleTree::new(MerkleShape::DEFAULT).expect("shape");
        let mut b = MerkleTree::new(MerkleShape::DEFAULT).expect("shape");
        for i in 0..1000 {
            a.insert(&h(i), &h(i));
        }
        for i in (0..1000).rev() {
            b.insert(&h(i), &h(i));
        }
        assert_eq!(a.root(), b.root());
        b.insert(&h(5000), &h(5000));
        assert_ne!(a.root(), b.root());
        assert_eq!(a.differing_leaves(&b), vec![a.leaf_of(&h(5000))]);
        b.remove(&h(5000), &h(5000));
        assert_eq!(a, b);
        assert!(a.differing_leaves(&b).is_empty());
    }

    #[test]
    fn finds_every_difference() {
        let mut a = MerkleTree::new(MerkleShape {
            fanout_bits: 2,
            depth: 4,
        })
        .expect("shape");
        let mut b = a.clone();
        for i in 0..500 {
            a.insert(&h(i), &h(i));
            if i % 50 != 0 {
                b.insert(&h(i), &h(i));
            }
        }
        let mut want: Vec<u32> = (0..500).step_by(50).map(|i| a.leaf_of(&h(i))).collect();
        want.sort_unstable();
        want.dedup();
        assert_eq!(a.differing_leaves(&b), want);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(
            MerkleTree::new(MerkleShape {
                fanout_bits: 0,
                depth: 3
            })
            .is_none()
        );
        assert!(
            MerkleTree::new(MerkleShape {
                fanout_bits: 8,
                depth: 4
            })
            .is_none()
        );
    }
}
