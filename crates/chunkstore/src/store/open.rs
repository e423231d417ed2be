//! Opening a store and recovering it after a crash. Kept apart because it is the one path
//! that trusts nothing on disk: it finishes interrupted compactions, cuts torn tails and keeps
//! corrupt records out of service, so every acknowledged write survives a crash at any instant.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use super::{
    Counters, LOCK_FILE, NewRecord, Options, Pos, RecoveryReport, SEGMENT_ID_GONE, SegmentMap, Store, SyncState,
    Writer, lock,
};
use crate::ChunkId;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::index::{Entry, EntryKind, INDEX_SHARDS, Index, Loc};
use crate::merkle::MerkleTree;
use crate::record::{RecordHeader, RecordKind, ScanItem, Scanner, align_up};
use crate::segment::{
    HeaderProblem, SEGMENT_HEADER_SIZE_BYTES, Segment, SegmentHeader, SegmentKind, parse_file_name, sync_dir,
};

impl Store {
    /// Opens (creating if needed) the store in `dir`, recovering from any crash.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        options.validate()?;
        let started = Instant::now();
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::io("creating store directory", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("opening lock file", &lock_path, e))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked(dir)),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("locking store directory", &lock_path, e)),
        }
        let mut report = RecoveryReport::default();

        // 1. Find segment files; remove temp files left by an interrupted create or compaction.
        let mut ids = Vec::new();
        let listing = fs::read_dir(&dir).map_err(|e| Error::io("listing store directory", &dir, e))?;
        for item in listing {
            let item = item.map_err(|e| Error::io("listing store directory", &dir, e))?;
            let name = item.file_name();
            let Some((id, is_temp)) = name.to_str().and_then(parse_file_name) else {
                continue;
            };
            if is_temp {
                fs::remove_file(item.path()).map_err(|e| Error::io("removing temp segment", item.path(), e))?;
            } else {
                ids.push(id);
            }
        }
        ids.sort_unstable();

        // 2. Open them; finish any compaction whose output is in place.
        let mut segments = SegmentMap::default();
        let mut replaced: Vec<u32> = Vec::new();
        let mut bad_headers = 0u64;
        for &id in &ids {
            let seg = Segment::open(&dir, id)?;
            match SegmentHeader::decode(seg.bytes(0, SEGMENT_HEADER_SIZE_BYTES).unwrap_or_default()) {
                Ok(h) if h.id == id => {
                    if h.kind == SegmentKind::Compacted {
                        replaced.extend(h.replaces.iter().copied().filter(|r| *r != id));
                    }
                }
                Ok(_) | Err(HeaderProblem::Invalid(_)) => {
                    bad_headers += 1;
                    tracing::error!(segment = id, "segment header damaged; scanning its records anyway");
                }
                Err(HeaderProblem::Version(found)) => {
                    return Err(Error::UnsupportedVersion {
                        path: seg.path.clone(),
                        found,
                    });
                }
            }
            segments.insert(id, Arc::new(seg));
        }
        for r in replaced {
            if let Some(seg) = segments.remove(&r) {
                fs::remove_file(&seg.path).map_err(|e| Error::io("removing replaced segment", &seg.path, e))?;
                report.replaced_segments_removed += 1;
            }
        }
        if report.replaced_segments_removed > 0 {
            sync_dir(&dir)?;
        }
        report.segments = segments.len() as u64;

        let merkle = MerkleTree::new(options.merkle_shape)
            .ok_or_else(|| Error::InvalidOptions("merkle_shape out of bounds".into()))?;
        let next_segment_id = segments.keys().max().map_or(1, |m| m + 1);
        if next_segment_id == SEGMENT_ID_GONE {
            return Err(Error::InvalidOptions("segment ids exhausted".into()));
        }

        // 3. The checkpoint, if it is still consistent with the files.
        let checkpoint = Checkpoint::read(&dir)?.filter(|c| {
            c.segments.iter().all(|cov| {
                cov.covered_len_bytes.is_multiple_of(crate::record::RECORD_ALIGN_BYTES)
                    && cov.covered_len_bytes >= SEGMENT_HEADER_SIZE_BYTES
                    && segments
                        .get(&cov.segment_id)
                        .is_some_and(|s| s.file_len_bytes.load(Ordering::Relaxed) >= cov.covered_len_bytes)
            })
        });

        // The active segment is created after recovery; until then a placeholder writer.
        let placeholder = Segment::create(
            &dir,
            &SegmentHeader {
                id: next_segment_id,
                kind: SegmentKind::Appended,
                replaces: vec![],
            },
            options.segment_size_bytes,
        )?;
        let active = Arc::new(placeholder);
        segments.insert(active.id, active.clone());

        let store = Store {
            dir: dir.clone(),
            options,
            _lock: lock_file,
            index: Index::default(),
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                active: active.clone(),
                pos: SEGMENT_HEADER_SIZE_BYTES,
                next_seq: 1,
                next_segment_id: next_segment_id + 1,
                broken: false,
            }),
            tail: Mutex::new((
                active.clone(),
                Pos {
                    segment_id: active.id,
                    offset: SEGMENT_HEADER_SIZE_BYTES,
                },
            )),
            sync: Mutex::new(SyncState {
                durable: Pos {
                    segment_id: active.id,
                    offset: SEGMENT_HEADER_SIZE_BYTES,
                },
                leader_active: false,
            }),
            synced: Condvar::new(),
            merkle: Mutex::new(merkle),
            compaction: Mutex::new(()),
            pending_applies: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            counters: Counters::default(),
            recovery: RecoveryReport::default(),
        };
        store.counters.corruptions.fetch_add(bad_headers, Ordering::Relaxed);
        let mut store = store;
        store.recover(checkpoint, active.id, &mut report)?;
        report.duration = started.elapsed();
        tracing::info!(
            dir = %dir.display(),
            chunks = store.len(),
            segments = report.segments,
            used_checkpoint = report.used_checkpoint,
            records_scanned = report.records_scanned,
            corrupt_records = report.corrupt_records,
            truncated_bytes = report.truncated_bytes,
            duration_ms = report.duration.as_millis() as u64,
            "chunk store opened"
        );
        store.recovery = report;
        store.ensure_space_reserve();
        Ok(store)
    }

    fn recover(&mut self, checkpoint: Option<Checkpoint>, active_id: u32, report: &mut RecoveryReport) -> Result<()> {
        let mut covered: HashMap<u32, u64> = HashMap::new();
        let mut max_seq = 0u64;
        if let Some(c) = checkpoint {
            report.used_checkpoint = true;
            max_seq = c.next_seq.saturating_sub(1);
            let segments = self.segments_read();
            for cov in &c.segments {
                if let Some(seg) = segments.get(&cov.segment_id) {
                    seg.record_bytes.store(cov.record_bytes, Ordering::Relaxed);
                    seg.dead_bytes.store(cov.dead_bytes, Ordering::Relaxed);
                    covered.insert(cov.segment_id, cov.covered_len_bytes);
                }
            }
            drop(segments);
            let mut merkle = lock(&self.merkle);
            for (id, entry) in c.entries {
                if entry.kind == EntryKind::Put {
                    merkle.insert(&id.0, &id.0);
                }
                self.index.write(&id).insert(id, entry);
            }
        }

        let mut segs: Vec<Arc<Segment>> = self.segments_read().values().cloned().collect();
        segs.sort_by_key(|s| s.id);
        for seg in segs.iter().filter(|s| s.id != active_id) {
            let start = covered.get(&seg.id).copied().unwrap_or(SEGMENT_HEADER_SIZE_BYTES);
            let file_len = seg.file_len_bytes.load(Ordering::Relaxed);
            let bytes = seg.bytes(0, file_len).unwrap_or_default();
            let mut scanner = Scanner::new(bytes, start, true);
            // A put whose payload fails its checksum is corruption in the middle of a
            // segment, but a torn write when nothing valid follows it: hold it until we know.
            let mut held: Option<(u64, RecordHeader)> = None;
            for item in scanner.by_ref() {
                if let Some((offset, header)) = held.take() {
                    self.recover_record(seg, offset, header, EntryKind::Corrupt, report);
                    max_seq = max_seq.max(header.seq);
                }
                match item {
                    ScanItem::Record {
                        offset,
                        header,
                        payload_ok,
                        after_resync,
                    } => {
                        let mut kind = match header.kind {
                            RecordKind::Put if payload_ok => EntryKind::Put,
                            RecordKind::Put => EntryKind::Corrupt,
                            RecordKind::Tombstone => EntryKind::Tombstone,
                        };
                        if after_resync {
                            // Found by searching past damage: only trust what proves itself.
                            // A put must hash to its id; a tombstone cannot prove anything and
                            // is ignored (at worst a deleted chunk returns: a space leak).
                            match kind {
                                EntryKind::Put if !self.content_matches(seg, offset, &header) => {
                                    kind = EntryKind::Corrupt;
                                }
                                EntryKind::Tombstone => {
                                    let len = header.record_len_bytes();
                                    seg.record_bytes.fetch_add(len, Ordering::Relaxed);
                                    seg.dead_bytes.fetch_add(len, Ordering::Relaxed);
                                    continue;
                                }
                                _ => {}
                            }
                        }
                        if kind == EntryKind::Corrupt {
                            held = Some((offset, header));
                            continue;
                        }
                        max_seq = max_seq.max(header.seq);
                        self.recover_record(seg, offset, header, kind, report);
                    }
                    ScanItem::Damaged { offset, len_bytes } => {
                        report.damaged_ranges += 1;
                        self.counters.corruptions.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            segment = seg.id,
                            offset,
                            len_bytes,
                            "damaged bytes inside a segment skipped"
                        );
                    }
                }
            }
            let mut end_of_valid = scanner.end_of_valid;
            if let Some((offset, header)) = held {
                tracing::warn!(segment = seg.id, offset, id = %header.id, "incomplete record at a segment's end (torn write) dropped");
                end_of_valid = offset;
            }
            report.bytes_scanned += end_of_valid.saturating_sub(start);
            // Segments end on a record boundary (the last record's padding included), so the
            // next scan, or a checkpoint's covered length, starts aligned.
            let end = align_up(end_of_valid.max(start));
            if file_len != end {
                // A torn tail: a record the crash interrupted.
                seg.truncate(end)?;
                report.truncated_bytes += file_len.saturating_sub(end);
                // Map the new length (the old mapping may be a few bytes short of it).
                let reopened = Segment::open(&self.dir, seg.id)?;
                reopened
                    .record_bytes
                    .store(seg.record_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
                reopened
                    .dead_bytes
                    .store(seg.dead_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
                self.segments_write().insert(seg.id, Arc::new(reopened));
            }
        }

        // Tombstones no older put needs any more are dead.
        for i in 0..INDEX_SHARDS {
            let mut shard = self.index.write_shard(i);
            shard.retain(|_, e| {
                if e.kind == EntryKind::Tombstone && e.shadowed_puts == 0 {
                    self.mark_dead(e.loc, e.record_len_bytes());
                    false
                } else {
                    true
                }
            });
        }
        let mut w = lock(&self.writer);
        w.next_seq = max_seq + 1;
        Ok(())
    }

    /// Applies one record found while opening.
    fn recover_record(
        &self,
        seg: &Segment,
        offset: u64,
        header: RecordHeader,
        kind: EntryKind,
        report: &mut RecoveryReport,
    ) {
        report.records_scanned += 1;
        seg.record_bytes.fetch_add(header.record_len_bytes(), Ordering::Relaxed);
        if kind == EntryKind::Corrupt {
            report.corrupt_records += 1;
            self.counters.corruptions.fetch_add(1, Ordering::Relaxed);
            tracing::error!(segment = seg.id, offset, id = %header.id, "corrupt record found while opening; not served");
        }
        self.apply(
            header.id,
            NewRecord {
                seq: header.seq,
                loc: Loc {
                    segment_id: seg.id,
                    offset: offset as u32,
                },
                kind,
                stored_len: header.stored_len,
                raw_len: header.raw_len,
                flags: header.flags,
            },
            true,
        );
    }

    fn content_matches(&self, seg: &Segment, offset: u64, header: &RecordHeader) -> bool {
        let entry = Entry {
            seq: header.seq,
            loc: Loc {
                segment_id: seg.id,
                offset: offset as u32,
            },
            stored_len: header.stored_len,
            raw_len: header.raw_len,
            shadowed_puts: 0,
            kind: EntryKind::Put,
            flags: header.flags,
        };
        matches!(self.read_entry(&header.id, &entry, seg), Ok(c) if ChunkId::of(&c) == header.id)
    }
}
