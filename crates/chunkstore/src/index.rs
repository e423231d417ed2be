//! The in-memory index: chunk id → where its newest record lives.
//!
//! Sharded by the id's first byte into 256 hash maps behind `RwLock`s, so readers rarely
//! meet writers and the ids of one Merkle leaf (an id prefix) live in one shard.
//!
//! # Bookkeeping invariant
//!
//! For every id, each *put* record on disk is either the entry's newest record (`loc`) or
//! counted in `shadowed_puts`. A tombstone is needed on disk exactly while it is the newest
//! record of its id and `shadowed_puts > 0` (otherwise an older put would come back on the
//! next scan); an entry whose newest record is an unneeded tombstone is removed. Older
//! tombstones are always dead. This is what lets compaction drop tombstones safely.
//!
//! Memory: 32 bytes of key and 32 bytes of `Entry` per id, plus the hash table's control
//! byte and its spare capacity (load factor between 7/16 and 7/8): 73 to 147 bytes per
//! chunk, about 100 on average.

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::ChunkId;

/// Number of index shards (one per value of the id's first byte).
pub const INDEX_SHARDS: usize = 256;

/// What the newest record of an id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    /// A readable chunk.
    Put = 1,
    /// Deleted; the tombstone is still needed on disk.
    Tombstone = 2,
    /// The newest put failed verification: not served, not listed, waits for a re-put.
    Corrupt = 3,
}

impl EntryKind {
    /// Decodes the checkpoint byte.
    pub fn from_u8(b: u8) -> Option<EntryKind> {
        match b {
            1 => Some(EntryKind::Put),
            2 => Some(EntryKind::Tombstone),
            3 => Some(EntryKind::Corrupt),
            _ => None,
        }
    }
}

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    /// Segment id.
    pub segment_id: u32,
    /// Offset of the record header in the segment.
    pub offset: u32,
}

/// The index entry of one id: its newest record and how many older puts remain on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Sequence number of the newest record.
    pub seq: u64,
    /// Location of the newest record.
    pub loc: Loc,
    /// Payload bytes on disk of the newest record.
    pub stored_len: u32,
    /// Content bytes of the newest record.
    pub raw_len: u32,
    /// Older put records of this id still on disk.
    pub shadowed_puts: u32,
    /// What the newest record is.
    pub kind: EntryKind,
    /// Record flags of the newest record.
    pub flags: u16,
}

const _: () = assert!(std::mem::size_of::<Entry>() <= 32);

impl Entry {
    /// Bytes the newest record occupies on disk.
    pub fn record_len_bytes(&self) -> u64 {
        crate::record::record_len_bytes(self.stored_len)
    }
}

/// foldhash with a per-process random seed: fast on 32-byte keys, and the seed keeps ids
/// crafted to collide in the table's low bits from degrading lookups.
type Shard = HashMap<ChunkId, Entry, foldhash::fast::RandomState>;

/// The sharded map.
#[derive(Debug)]
pub struct Index {
    shards: Vec<RwLock<Shard>>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: (0..INDEX_SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
        }
    }
}

impl Index {
    /// The shard index of an id.
    pub fn shard_of(id: &ChunkId) -> usize {
        usize::from(id.0[0])
    }

    /// Read access to the shard holding `id`.
    pub fn read(&self, id: &ChunkId) -> RwLockReadGuard<'_, Shard> {
        self.read_shard(Self::shard_of(id))
    }

    /// Write access to the shard holding `id`.
    pub fn write(&self, id: &ChunkId) -> RwLockWriteGuard<'_, Shard> {
        self.write_shard(Self::shard_of(id))
    }

    /// Read access to shard `i`. A poisoned lock (a panic while held) is taken over: the
    /// maps are only mutated by short, non-panicking sections.
    pub fn read_shard(&self, i: usize) -> RwLockReadGuard<'_, Shard> {
        self.shards[i % INDEX_SHARDS].read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access to shard `i`.
    pub fn write_shard(&self, i: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[i % INDEX_SHARDS].write().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest entry of `id`.
    pub fn get(&self, id: &ChunkId) -> Option<Entry> {
        self.read(id).get(id).copied()
    }

    /// Number of entries in all shards (puts, tombstones and corrupt entries).
    pub fn len(&self) -> usize {
        (0..INDEX_SHARDS).map(|i| self.read_shard(i).len()).sum()
    }
}
