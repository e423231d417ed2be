//! Listing what the store holds: all ids, and the Merkle summary with the ids of one leaf,
//! which replicas compare to find what they are missing without sending every id.

use super::{Store, lock};
use crate::ChunkId;
use crate::index::{EntryKind, INDEX_SHARDS};
use crate::merkle::{MerkleNode, MerkleTree};

impl Store {
    /// All readable chunk ids, in no particular order. Takes one shard's snapshot at a time,
    /// so memory stays at 1/256 of the ids.
    pub fn ids(&self) -> impl Iterator<Item = ChunkId> + '_ {
        (0..INDEX_SHARDS).flat_map(move |i| {
            let shard = self.index.read_shard(i);
            shard
                .iter()
                .filter(|(_, e)| e.kind == EntryKind::Put)
                .map(|(id, _)| *id)
                .collect::<Vec<_>>()
        })
    }

    /// The Merkle root over the stored ids.
    pub fn merkle_root(&self) -> MerkleNode {
        lock(&self.merkle).root()
    }

    /// The children of Merkle node (`level`, `index`).
    pub fn merkle_children(&self, level: u32, index: u32) -> Option<Vec<MerkleNode>> {
        lock(&self.merkle).children(level, index).map(<[MerkleNode]>::to_vec)
    }

    /// A copy of the whole Merkle summary.
    pub fn merkle_snapshot(&self) -> MerkleTree {
        lock(&self.merkle).clone()
    }

    /// The readable ids in Merkle leaf `leaf`, sorted.
    pub fn ids_in_leaf(&self, leaf: u32) -> Vec<ChunkId> {
        let shape = self.options.merkle_shape;
        let bits = shape.fanout_bits * shape.depth;
        // A leaf of 8 bits or more lies in one shard; a shorter prefix spans several.
        let shards = if bits >= 8 {
            let s = (leaf >> (bits - 8)) as usize;
            s..s + 1
        } else {
            let span = 1usize << (8 - bits);
            leaf as usize * span..(leaf as usize + 1) * span
        };
        let mut out = Vec::new();
        for s in shards {
            let shard = self.index.read_shard(s);
            out.extend(
                shard
                    .iter()
                    .filter(|(id, e)| e.kind == EntryKind::Put && shape.leaf_of(&id.0) == leaf)
                    .map(|(id, _)| *id),
            );
        }
        out.sort_unstable();
        out
    }
}
