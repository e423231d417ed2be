//! Deletes and compaction: tombstones, dead-byte accounting, and rewriting mostly dead
//! segments. Together because compaction decides when a tombstone may go, and each of its
//! steps must leave files that opening can finish after a crash.

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use super::{
    ACTIVE_ROLL_DEAD_BYTES_MIN, CompactionReport, Failpoint, PendingGuard, SEGMENT_ID_GONE, SEGMENT_SIZE_BYTES_MAX,
    Store, lock,
};
use crate::ChunkId;
use crate::error::{Error, Result};
use crate::index::{EntryKind, Loc};
use crate::record::{RECORD_HEADER_SIZE_BYTES, RecordHeader, RecordKind, ScanItem, Scanner, payload_crc};
use crate::segment::{
    COMPACTION_INPUTS_MAX, SEGMENT_HEADER_SIZE_BYTES, Segment, SegmentHeader, SegmentKind, SegmentWriter, sync_dir,
};

impl Store {
    /// Deletes a chunk. Returns `false` if it was not stored. Durable on return.
    pub fn delete(&self, id: &ChunkId) -> Result<bool> {
        let present = self
            .index
            .read(id)
            .get(id)
            .is_some_and(|e| matches!(e.kind, EntryKind::Put | EntryKind::Corrupt));
        if !present {
            return Ok(false);
        }
        let header = RecordHeader {
            kind: RecordKind::Tombstone,
            flags: 0,
            seq: 0,
            id: *id,
            stored_len: 0,
            raw_len: 0,
            payload_crc: payload_crc(&[]),
        };
        let (rec, end, segment) = self.append(header, &[])?;
        let _pending = PendingGuard { store: self, segment };
        self.wait_durable(end)?;
        self.apply(*id, rec, false);
        self.counters.deletes.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Rewrites the sealed segments whose live bytes fell below the threshold into one new
    /// segment and removes them. Reads and puts continue meanwhile. Safe across crashes at
    /// every step: the output names the inputs it replaces, and opening finishes the job.
    pub fn compact(&self) -> Result<CompactionReport> {
        let compaction = lock(&self.compaction);
        let report = match self.compact_locked(&compaction) {
            // Compaction needs room for its output before it frees the inputs.
            Err(Error::Full { .. }) if self.release_space_reserve() => self.compact_locked(&compaction),
            r => r,
        }?;
        if !report.inputs.is_empty() {
            self.ensure_space_reserve();
        }
        Ok(report)
    }

    fn compact_locked(&self, compaction: &MutexGuard<'_, ()>) -> Result<CompactionReport> {
        let mut report = CompactionReport::default();
        let size = self.options.segment_size_bytes;
        // The active segment is never rewritten while it takes puts. When most of it is dead
        // (say a bucket was emptied), it is sealed first so that this compaction reclaims it.
        {
            let mut w = lock(&self.writer);
            let active = w.active.clone();
            let dead = active.dead_bytes.load(Ordering::Relaxed);
            if dead >= (size / 4).min(ACTIVE_ROLL_DEAD_BYTES_MIN) && dead >= active.live_bytes() {
                self.roll(&mut w, false)?;
            }
        }
        let active_id = lock(&self.writer).active.id;
        let threshold = (size as f64 * self.options.compaction_live_fraction_max) as u64;
        let mut candidates: Vec<Arc<Segment>> = self
            .segments_read()
            .values()
            .filter(|s| s.id != active_id && s.pending_applies.load(Ordering::Acquire) == 0)
            .filter(|s| s.live_bytes() <= threshold)
            .cloned()
            .collect();
        candidates.sort_by_key(|s| (s.live_bytes(), s.id));
        let mut inputs: Vec<Arc<Segment>> = Vec::new();
        let mut live_total = 0u64;
        for c in candidates {
            if inputs.len() >= COMPACTION_INPUTS_MAX || live_total + c.live_bytes() > size - SEGMENT_HEADER_SIZE_BYTES {
                break;
            }
            live_total += c.live_bytes();
            inputs.push(c);
        }
        let dead_total: u64 = inputs.iter().map(|s| s.dead_bytes.load(Ordering::Relaxed)).sum();
        // One segment with nothing dead gains nothing from a rewrite.
        if inputs.is_empty() || (inputs.len() == 1 && dead_total == 0) {
            return Ok(report);
        }
        inputs.sort_by_key(|s| s.id);
        report.inputs = inputs.iter().map(|s| s.id).collect();
        report.bytes_before = inputs.iter().map(|s| s.file_len_bytes.load(Ordering::Relaxed)).sum();

        let out_id = {
            let mut w = lock(&self.writer);
            let id = w.next_segment_id;
            if id == SEGMENT_ID_GONE {
                return Err(Error::InvalidOptions("segment ids exhausted".into()));
            }
            w.next_segment_id += 1;
            id
        };
        let header = SegmentHeader {
            id: out_id,
            kind: SegmentKind::Compacted,
            replaces: report.inputs.clone(),
        };
        let mut out = SegmentWriter::create(&self.dir, &header)?;
        struct Moved {
            id: ChunkId,
            seq: u64,
            old: Loc,
            new_offset: u64,
            len: u64,
        }
        let mut moved: Vec<Moved> = Vec::new();
        let mut dropped_puts: Vec<(ChunkId, Loc)> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        for seg in &inputs {
            // Never treat unreadable bytes as empty: records not copied would be lost.
            let Some(bytes) = seg.bytes(0, seg.file_len_bytes.load(Ordering::Relaxed)) else {
                return Err(Error::io(
                    "compacting (segment shorter than its recorded length; nothing changed)",
                    &seg.path,
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                ));
            };
            for item in Scanner::new(bytes, SEGMENT_HEADER_SIZE_BYTES, false) {
                let ScanItem::Record { offset, header, .. } = item else {
                    continue;
                };
                let loc = Loc {
                    segment_id: seg.id,
                    offset: offset as u32,
                };
                let live = self.index.get(&header.id).is_some_and(|e| {
                    e.loc == loc
                        && e.seq == header.seq
                        && (e.kind == EntryKind::Put || (e.kind == EntryKind::Tombstone && e.shadowed_puts > 0))
                });
                if !live {
                    if header.kind == RecordKind::Put {
                        dropped_puts.push((header.id, loc));
                    }
                    continue;
                }
                let total = RECORD_HEADER_SIZE_BYTES + header.stored_len as usize;
                let Some(record) = seg.bytes(offset, total as u64) else {
                    continue;
                };
                if header.kind == RecordKind::Put
                    && payload_crc(&record[RECORD_HEADER_SIZE_BYTES..]) != header.payload_crc
                {
                    if let Some(entry) = self.index.get(&header.id) {
                        self.mark_corrupt(&header.id, &entry);
                    }
                    dropped_puts.push((header.id, loc));
                    continue;
                }
                let len = header.record_len_bytes();
                buf.clear();
                buf.extend_from_slice(record);
                buf.resize(len as usize, 0);
                let new_offset = out.append(&buf)?;
                moved.push(Moved {
                    id: header.id,
                    seq: header.seq,
                    old: loc,
                    new_offset,
                    len,
                });
            }
        }
        if out.len_bytes() > SEGMENT_SIZE_BYTES_MAX {
            return Err(Error::InvalidOptions(
                "compaction output exceeds the segment size limit".into(),
            ));
        }
        if self.options.failpoint == Some(Failpoint::CompactionBeforeRename) {
            std::mem::forget(out); // leave the temp file, as a crash would
            return Err(failpoint_error(&self.dir));
        }
        let out = Arc::new(out.finish()?);
        if self.options.failpoint == Some(Failpoint::CompactionAfterRename) {
            return Err(failpoint_error(&self.dir));
        }
        self.segments_write().insert(out.id, out.clone());

        // Repoint the index at the copies, unless the record changed meanwhile.
        for m in &moved {
            out.record_bytes.fetch_add(m.len, Ordering::Relaxed);
            let new_loc = Loc {
                segment_id: out.id,
                offset: m.new_offset as u32,
            };
            let mut shard = self.index.write(&m.id);
            match shard.get_mut(&m.id) {
                Some(e) if e.loc == m.old && e.seq == m.seq => {
                    e.loc = new_loc;
                    if e.kind == EntryKind::Corrupt {
                        // A read found the old copy bad after we verified ours: ours is good.
                        e.kind = EntryKind::Put;
                        lock(&self.merkle).insert(&m.id.0, &m.id.0);
                    }
                }
                _ => {
                    // Superseded while copying; the victim's copy was already counted.
                    out.dead_bytes.fetch_add(m.len, Ordering::Relaxed);
                }
            }
            report.records_copied += 1;
        }
        // Older puts that disappear with their segment no longer need a tombstone.
        for (id, loc) in &dropped_puts {
            let mut shard = self.index.write(id);
            let Some(e) = shard.get_mut(id) else { continue };
            if e.loc == *loc {
                // The (corrupt) newest record itself is gone.
                if e.shadowed_puts == 0 {
                    shard.remove(id);
                } else {
                    e.loc.segment_id = SEGMENT_ID_GONE;
                }
                continue;
            }
            e.shadowed_puts = e.shadowed_puts.saturating_sub(1);
            if e.kind == EntryKind::Tombstone && e.shadowed_puts == 0 {
                let (tomb_loc, tomb_len) = (e.loc, e.record_len_bytes());
                shard.remove(id);
                self.mark_dead(tomb_loc, tomb_len);
            }
        }
        {
            let mut segments = self.segments_write();
            for seg in &inputs {
                segments.remove(&seg.id);
            }
        }
        for (i, seg) in inputs.iter().enumerate() {
            fs::remove_file(&seg.path).map_err(|e| Error::io("removing compacted segment", &seg.path, e))?;
            if i == 0 && self.options.failpoint == Some(Failpoint::CompactionAfterFirstDelete) {
                return Err(failpoint_error(&self.dir));
            }
        }
        sync_dir(&self.dir)?;
        report.output = Some(out.id);
        report.bytes_after = out.file_len_bytes.load(Ordering::Relaxed);
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.counters.compaction_reclaimed_bytes.fetch_add(
            report.bytes_before.saturating_sub(report.bytes_after),
            Ordering::Relaxed,
        );
        tracing::info!(
            inputs = ?report.inputs,
            output = out.id,
            records = report.records_copied,
            bytes_before = report.bytes_before,
            bytes_after = report.bytes_after,
            "compacted segments"
        );
        // The old checkpoint names segments that are gone: replace it.
        self.checkpoint_locked(compaction)?;
        Ok(report)
    }

    pub(super) fn mark_dead(&self, loc: Loc, len: u64) {
        if let Some(seg) = self.segments_read().get(&loc.segment_id) {
            seg.dead_bytes.fetch_add(len, Ordering::Relaxed);
        }
    }
}

fn failpoint_error(dir: &Path) -> Error {
    Error::io("failpoint", dir, std::io::Error::other("failpoint hit"))
}
