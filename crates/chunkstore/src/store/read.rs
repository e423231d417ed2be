//! Verified reads. Every byte served is checked first, and a copy that fails is set aside
//! here, so a corrupt chunk is counted, never served, and left for a replica to repair.

use std::sync::atomic::Ordering;

use super::{Chunk, ChunkRepr, Store, lock};
use crate::ChunkId;
use crate::error::{Error, Result};
use crate::index::{Entry, EntryKind};
use crate::record::{RECORD_HEADER_SIZE_BYTES, RecordHeader, RecordKind, payload_crc};
use crate::segment::Segment;

impl Store {
    /// Whether a readable copy of `id` is stored.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.index.read(id).get(id).is_some_and(|e| e.kind == EntryKind::Put)
    }

    /// The content size of a readable copy of `id`, from the index (nothing is read).
    pub fn size_of(&self, id: &ChunkId) -> Option<u64> {
        self.index
            .read(id)
            .get(id)
            .filter(|e| e.kind == EntryKind::Put)
            .map(|e| u64::from(e.raw_len))
    }

    /// Reads a chunk, verifying its checksums. `Ok(None)` if absent; `Err(Corruption)` if the
    /// stored copy is bad (it is then set aside and no longer listed).
    pub fn get(&self, id: &ChunkId) -> Result<Option<Chunk>> {
        let (entry, seg) = {
            let shard = self.index.read(id);
            let Some(e) = shard.get(id).copied() else {
                return Ok(None);
            };
            if e.kind != EntryKind::Put {
                return Ok(None);
            }
            // Holding the shard lock while taking the segment: compaction repoints entries
            // under the shard's write lock before it drops a segment, so this pair is
            // consistent.
            (e, self.segments_read().get(&e.loc.segment_id).cloned())
        };
        let Some(seg) = seg else {
            return Err(self.corrupt(id, &entry, "segment missing"));
        };
        let chunk = self.read_entry(id, &entry, &seg).inspect_err(|e| {
            if e.is_corruption() {
                self.mark_corrupt(id, &entry);
            }
        })?;
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        Ok(Some(chunk))
    }

    fn corrupt(&self, id: &ChunkId, entry: &Entry, what: &'static str) -> Error {
        Error::Corruption {
            id: *id,
            segment_id: entry.loc.segment_id,
            offset: u64::from(entry.loc.offset),
            what,
        }
    }

    /// Reads and checks the record `entry` points at.
    pub(super) fn read_entry(&self, id: &ChunkId, entry: &Entry, seg: &Segment) -> Result<Chunk> {
        let offset = u64::from(entry.loc.offset);
        let total = RECORD_HEADER_SIZE_BYTES as u64 + u64::from(entry.stored_len);
        let Some(bytes) = seg.bytes(offset, total) else {
            return Err(self.corrupt(id, entry, "record outside its segment"));
        };
        let header = RecordHeader::decode(bytes).map_err(|_| self.corrupt(id, entry, "record header invalid"))?;
        if header.id != *id || header.seq != entry.seq || header.kind != RecordKind::Put {
            return Err(self.corrupt(id, entry, "record header does not match the index"));
        }
        let payload = &bytes[RECORD_HEADER_SIZE_BYTES..];
        if payload_crc(payload) != header.payload_crc {
            return Err(self.corrupt(id, entry, "payload checksum mismatch"));
        }
        if header.is_compressed() {
            let raw = zstd::bulk::decompress(payload, header.raw_len as usize)
                .map_err(|_| self.corrupt(id, entry, "zstd payload does not decompress"))?;
            if raw.len() != header.raw_len as usize {
                return Err(self.corrupt(id, entry, "decompressed length mismatch"));
            }
            return Ok(Chunk {
                repr: ChunkRepr::Owned(raw),
            });
        }
        Ok(Chunk {
            repr: ChunkRepr::Mapped {
                map: seg.map.clone(),
                start: (offset as usize) + RECORD_HEADER_SIZE_BYTES,
                len: entry.stored_len as usize,
            },
        })
    }

    /// Reads a chunk and also checks that its content hashes to its id (what a scrub does
    /// for every chunk).
    pub fn verify(&self, id: &ChunkId) -> Result<Option<Chunk>> {
        let Some(chunk) = self.get(id)? else {
            return Ok(None);
        };
        if ChunkId::of(&chunk) != *id
            && let Some(entry) = self.index.get(id)
        {
            self.mark_corrupt(id, &entry);
            return Err(self.corrupt(id, &entry, "content does not hash to its id"));
        }
        Ok(Some(chunk))
    }

    /// Sets a chunk's newest record aside after it failed verification.
    pub(super) fn mark_corrupt(&self, id: &ChunkId, entry: &Entry) {
        let mut shard = self.index.write(id);
        if let Some(e) = shard.get_mut(id)
            && e.seq == entry.seq
            && e.loc == entry.loc
            && e.kind == EntryKind::Put
        {
            e.kind = EntryKind::Corrupt;
            lock(&self.merkle).remove(&id.0, &id.0);
            self.mark_dead(e.loc, e.record_len_bytes());
            self.counters.corruptions.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%id, segment = e.loc.segment_id, offset = e.loc.offset, "corrupt chunk set aside");
        }
    }
}
