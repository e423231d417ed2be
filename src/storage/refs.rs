//! Chunk references: which record holds each chunk, kept next to the chunk, sans-IO.
//!
//! A chunk may be shared by many objects (identical content is stored once), so it is
//! deleted only when nothing references it. Every record that lists chunks (an object, a
//! multipart part) is a **holder**; before a holder is written, one reference record per
//! chunk is written in the chunk's own partition (so a chunk's references live on the
//! same replica set as the chunk):
//!
//! - key `c/` ‖ chunk id (32 bytes) ‖ first 16 bytes of BLAKE3(holder partition ‖ holder key
//!   ‖ holder unique) — fixed length, one per (chunk, holder version);
//! - value postcard of [`ChunkRefValue`]: the holder's partition, key and the `unique` part
//!   of the holder record's version.
//!
//! References are never trusted to be removed by whoever deleted the holder (a gateway may
//! crash between the two): the chunk partition's first live replica checks every reference
//! older than the grace period against its holder with a quorum read, and tombstones it
//! when the holder now has another version or none ([`judge`]). A chunk with no live
//! reference for the grace period is deleted from each replica ([`Unreferenced`]).
//! Both rules are pure functions here; the node runtime's maintenance pass is the shell.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::records::Version;

/// What every reference record key starts with.
pub const REF_PREFIX: &[u8] = b"c/";
/// Length of a reference record key.
pub const REF_KEY_LEN: usize = REF_PREFIX.len() + 32 + 16;
/// Chunks tracked at most as "unreferenced since"; beyond it new candidates wait for a later
/// pass (bounds memory to ~48 bytes × this).
pub const UNREFERENCED_TRACKED_MAX: usize = 1_000_000;

/// A reference record's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkRefValue {
    /// Version 1.
    V1 {
        /// Who lists the chunk.
        holder: ChunkHolder,
        /// The chunk's size (for progress reports before it is fetched).
        chunk_size_bytes: u32,
    },
}

/// One holder of a chunk: a record version that lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkHolder {
    /// The holder record's partition.
    pub holder_partition: u32,
    /// The holder record's key.
    #[serde(with = "serde_bytes")]
    pub holder_key: Vec<u8>,
    /// The `unique` of the holder version that lists the chunk.
    pub holder_unique: [u8; 16],
}

/// Errors decoding a reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The key is not a reference key.
    #[error("not a chunk reference key")]
    BadKey,
    /// The value does not decode.
    #[error("undecodable chunk reference: {0}")]
    BadValue(String),
}

impl ChunkRefValue {
    /// Postcard bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes untrusted bytes into the holder and the chunk size.
    pub fn decode(bytes: &[u8]) -> Result<(ChunkHolder, u32), RefError> {
        match postcard::from_bytes::<ChunkRefValue>(bytes) {
            Ok(ChunkRefValue::V1 {
                holder,
                chunk_size_bytes,
            }) => Ok((holder, chunk_size_bytes)),
            Err(e) => Err(RefError::BadValue(e.to_string())),
        }
    }
}

/// The prefix of every reference to `chunk`.
pub fn ref_prefix(chunk: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(REF_KEY_LEN);
    k.extend_from_slice(REF_PREFIX);
    k.extend_from_slice(chunk);
    k
}

/// The reference key of `chunk` held by `holder`.
pub fn ref_key(chunk: &[u8; 32], holder: &ChunkHolder) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(&holder.holder_partition.to_be_bytes());
    h.update(&(holder.holder_key.len() as u64).to_be_bytes());
    h.update(&holder.holder_key);
    h.update(&holder.holder_unique);
    let mut k = ref_prefix(chunk);
    k.extend_from_slice(&h.finalize().as_bytes()[..16]);
    debug_assert_eq!(k.len(), REF_KEY_LEN);
    k
}

/// The chunk a reference key names.
pub fn chunk_of_ref_key(key: &[u8]) -> Result<[u8; 32], RefError> {
    if key.len() != REF_KEY_LEN || !key.starts_with(REF_PREFIX) {
        return Err(RefError::BadKey);
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(&key[REF_PREFIX.len()..REF_PREFIX.len() + 32]);
    Ok(id)
}

/// Milliseconds since the Unix epoch of a version (its HLC's physical part).
pub fn version_ms(version: &Version) -> u64 {
    version.hlc >> 16
}

/// What a quorum read of a reference's holder found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderState {
    /// A live record with this version.
    Live(Version),
    /// A tombstone with this version.
    Deleted(Version),
    /// No record at all.
    Missing,
    /// The read failed: nothing may be concluded.
    Unknown,
}

/// Verdict on one reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The holder still lists the chunk (or may still come to): keep.
    Keep,
    /// The holder moved on or never appeared within the grace period: tombstone it.
    Dead,
}

/// Judges a live reference written at `ref_ms` whose holder was read as `holder`, at
/// `now_ms`, with `grace_ms`. A reference younger than the grace period is always kept (its
/// holder may still be being written: a large upload writes references chunk by chunk before
/// its record). After it, the reference lives exactly while the holder's live version is the
/// one it names.
pub fn judge(reference: &ChunkHolder, ref_ms: u64, holder: HolderState, now_ms: u64, grace_ms: u64) -> Verdict {
    if now_ms.saturating_sub(ref_ms) < grace_ms {
        return Verdict::Keep;
    }
    match holder {
        HolderState::Unknown => Verdict::Keep,
        HolderState::Live(v) if v.unique == reference.holder_unique => Verdict::Keep,
        HolderState::Live(_) | HolderState::Deleted(_) | HolderState::Missing => Verdict::Dead,
    }
}

/// Chunks seen without a live reference, and since when: a chunk is deleted only after it
/// stayed unreferenced for the whole grace period (a reference being written, or still on
/// its way by anti-entropy, has that long to appear). Forgetting on restart only delays.
#[derive(Debug, Default)]
pub struct Unreferenced {
    since_ms: HashMap<[u8; 32], u64>,
}

impl Unreferenced {
    /// Notes `chunk` unreferenced at `now_ms`; true once it has been for `grace_ms`.
    pub fn note(&mut self, chunk: [u8; 32], now_ms: u64, grace_ms: u64) -> bool {
        if let Some(since) = self.since_ms.get(&chunk) {
            return now_ms.saturating_sub(*since) >= grace_ms;
        }
        if self.since_ms.len() < UNREFERENCED_TRACKED_MAX {
            self.since_ms.insert(chunk, now_ms);
        }
        grace_ms == 0
    }

    /// `chunk` is referenced (or gone): forget it.
    pub fn clear(&mut self, chunk: &[u8; 32]) {
        self.since_ms.remove(chunk);
    }

    /// Drops every chunk `keep` refuses (gone from the store since).
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8; 32]) -> bool) {
        self.since_ms.retain(|c, _| keep(c));
    }

    /// Chunks tracked.
    pub fn len(&self) -> usize {
        self.since_ms.len()
    }

    /// Whether none are tracked.
    pub fn is_empty(&self) -> bool {
        self.since_ms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(unique: u8) -> ChunkHolder {
        ChunkHolder {
            holder_partition: 7,
            holder_key: b"o/b/k".to_vec(),
            holder_unique: [unique; 16],
        }
    }

    fn version(ms: u64, unique: u8) -> Version {
        Version {
            hlc: ms << 16,
            unique: [unique; 16],
        }
    }

    #[test]
    fn keys_are_fixed_length_and_name_their_chunk() {
        let chunk = [9u8; 32];
        let a = ref_key(&chunk, &holder(1));
        let b = ref_key(&chunk, &holder(2));
        assert_eq!(a.len(), REF_KEY_LEN);
        assert_ne!(a, b, "each holder version has its own reference");
        assert!(a.starts_with(&ref_prefix(&chunk)));
        assert_eq!(chunk_of_ref_key(&a), Ok(chunk));
        assert_eq!(chunk_of_ref_key(b"c/short"), Err(RefError::BadKey));
        assert_eq!(chunk_of_ref_key(&[b'x'; REF_KEY_LEN]), Err(RefError::BadKey));
        let value = ChunkRefValue::V1 {
            holder: holder(1),
            chunk_size_bytes: 4096,
        }
        .encode();
        assert_eq!(ChunkRefValue::decode(&value), Ok((holder(1), 4096)));
        assert!(ChunkRefValue::decode(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn references_die_only_after_the_grace_period_and_when_the_holder_moved_on() {
        let r = holder(1);
        let grace = 1000;
        // Young: kept whatever the holder looks like.
        for h in [
            HolderState::Missing,
            HolderState::Deleted(version(5, 3)),
            HolderState::Live(version(5, 2)),
        ] {
            assert_eq!(judge(&r, 100, h, 500, grace), Verdict::Keep);
        }
        // Old: the holder's current version decides.
        assert_eq!(
            judge(&r, 100, HolderState::Live(version(50, 1)), 5000, grace),
            Verdict::Keep
        );
        assert_eq!(
            judge(&r, 100, HolderState::Live(version(50, 2)), 5000, grace),
            Verdict::Dead
        );
        assert_eq!(
            judge(&r, 100, HolderState::Deleted(version(50, 1)), 5000, grace),
            Verdict::Dead
        );
        assert_eq!(judge(&r, 100, HolderState::Missing, 5000, grace), Verdict::Dead);
        // A failed read concludes nothing.
        assert_eq!(judge(&r, 100, HolderState::Unknown, 5000, grace), Verdict::Keep);
    }

    #[test]
    fn a_chunk_is_collectable_only_after_staying_unreferenced_for_the_grace_period() {
        let mut u = Unreferenced::default();
        assert!(!u.note([1; 32], 1000, 500));
        assert!(!u.note([1; 32], 1400, 500));
        assert!(u.note([1; 32], 1500, 500));
        // Referenced again: the clock restarts.
        u.clear(&[1; 32]);
        assert!(!u.note([1; 32], 1600, 500));
        u.retain(|_| false);
        assert!(u.is_empty());
        // No grace: at once.
        assert!(u.note([2; 32], 0, 0));
    }
}
