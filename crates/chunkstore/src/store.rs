//! The store: opening and recovery, durable puts with group commit, verified reads,
//! deletes, compaction, checkpoints, scrubbing and statistics.
//!
//! # Concurrency
//!
//! - `writer` (a mutex) serialises appends to the active segment and segment roll-over.
//! - Group commit: a put writes its record under `writer`, releases it, then waits until the
//!   durable position passes its record. The first waiter becomes the leader, fsyncs the
//!   active file once for everyone written so far, and wakes the others.
//! - A record enters the index only after it is durable, so `contains` and `get` never show
//!   data a crash could take back, and an idempotent put never returns early on a chunk
//!   that is not yet on stable storage.
//! - Lock order: `compaction` → `writer` → `tail` → `sync`; and index shard → `segments` → `merkle`.
//!
//! # Durability
//!
//! `put` and `delete` return only after their record is fsynced (`fdatasync` of the
//! segment file; new files and renames also fsync the directory). An fsync error
//! poisons the store: later writes fail with `Error::Poisoned` until it is reopened.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use memmap2::Mmap;

use crate::ChunkId;
use crate::checkpoint::{Checkpoint, SegmentCoverage};
use crate::error::{Error, Result};
use crate::index::{Entry, EntryKind, INDEX_SHARDS, Index, Loc};
use crate::merkle::{MerkleNode, MerkleShape, MerkleTree};
use crate::record::{
    FLAG_ZSTD, RECORD_HEADER_SIZE_BYTES, RECORD_PAYLOAD_SIZE_BYTES_MAX, RecordHeader, RecordKind, ScanItem, Scanner,
    align_up, payload_crc, record_len_bytes,
};
use crate::segment::{
    COMPACTION_INPUTS_MAX, HeaderProblem, SEGMENT_HEADER_SIZE_BYTES, Segment, SegmentHeader, SegmentKind,
    SegmentWriter, parse_file_name, sync_dir,
};

/// Dead bytes in the active segment (when also more than its live bytes) that make a
/// compaction seal it so it can be reclaimed (a quarter of the segment size if smaller).
pub const ACTIVE_ROLL_DEAD_BYTES_MIN: u64 = 1024 * 1024;
/// Default maximum chunk size: 64 MiB.
pub const CHUNK_SIZE_BYTES_MAX_DEFAULT: u32 = 64 * 1024 * 1024;
/// Default segment size: 256 MiB, big enough that a 4 MiB chunk wastes little at roll-over
/// and small enough that compacting one segment is a short job.
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// Largest segment: record offsets are `u32` in the index to keep entries at 32 bytes.
pub const SEGMENT_SIZE_BYTES_MAX: u64 = u32::MAX as u64;
/// Smallest segment accepted.
pub const SEGMENT_SIZE_BYTES_MIN: u64 = 64 * 1024;
/// Space at the end of every segment that puts may not use, kept for tombstones, so deletes
/// (which free space) still work when the disk is full. 1024 tombstones.
pub const TOMBSTONE_RESERVE_BYTES: u64 = 64 * 1024;
/// Chunks smaller than this are never compressed: the frame overhead eats the gain.
const COMPRESSION_SIZE_BYTES_MIN: usize = 512;
/// Bytes of a large chunk compressed first to guess whether compressing all of it pays.
const COMPRESSION_SAMPLE_BYTES: usize = 16 * 1024;
/// How long a checkpoint waits for in-flight puts to reach the index.
const CHECKPOINT_QUIESCE_TIMEOUT_MS: u64 = 10_000;
/// Segment id marking an entry whose (corrupt) newest record was removed by compaction.
const SEGMENT_ID_GONE: u32 = u32::MAX;
const LOCK_FILE: &str = "LOCK";
const RESERVE_FILE: &str = "RESERVE";
/// Size of the ballast file `RESERVE`. When the file system is full, deleting it gives
/// deletes (tombstones) and compaction room to free space; it is recreated once space is
/// back. Segment files are not preallocated, so without it a full disk could refuse the very
/// deletes that would empty it.
pub const SPACE_RESERVE_BYTES: u64 = 256 * 1024;

type SegmentMap = HashMap<u32, Arc<Segment>, foldhash::fast::RandomState>;

/// Per-record compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Store bytes as they are.
    None,
    /// zstd at `level`, kept only when it saves at least 1/16 of the chunk.
    Zstd {
        /// zstd level (1 is fast; 3 is zstd's default).
        level: i32,
    },
}

/// Crash-test hooks: stop an operation at a step, leaving the files as a crash there would.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// Compaction output fully written but not yet renamed into place.
    CompactionBeforeRename,
    /// Output renamed into place; no input segment deleted yet.
    CompactionAfterRename,
    /// Output in place and the first input segment deleted.
    CompactionAfterFirstDelete,
}

/// Options for `Store::open`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Size at which the active segment is sealed and a new one started.
    pub segment_size_bytes: u64,
    /// Largest chunk accepted.
    pub chunk_size_bytes_max: u32,
    /// Per-record compression.
    pub compression: Compression,
    /// Bytes of segment files the store may occupy (puts fail with `Full` beyond it).
    /// Compaction may exceed it by one segment while it runs.
    pub capacity_bytes: Option<u64>,
    /// A sealed segment is a compaction candidate when its live bytes fall below this
    /// fraction of `segment_size_bytes`.
    pub compaction_live_fraction_max: f64,
    /// Shape of the Merkle summary over the stored ids.
    pub merkle_shape: MerkleShape,
    #[doc(hidden)]
    pub failpoint: Option<Failpoint>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size_bytes: SEGMENT_SIZE_BYTES_DEFAULT,
            chunk_size_bytes_max: CHUNK_SIZE_BYTES_MAX_DEFAULT,
            compression: Compression::Zstd { level: 1 },
            capacity_bytes: None,
            compaction_live_fraction_max: 0.5,
            merkle_shape: MerkleShape::DEFAULT,
            failpoint: None,
        }
    }
}

impl Options {
    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidOptions(m.to_string()));
        if self.chunk_size_bytes_max == 0 || self.chunk_size_bytes_max > RECORD_PAYLOAD_SIZE_BYTES_MAX {
            return bad("chunk_size_bytes_max must be between 1 byte and 64 MiB");
        }
        if !(SEGMENT_SIZE_BYTES_MIN..=SEGMENT_SIZE_BYTES_MAX).contains(&self.segment_size_bytes) {
            return bad("segment_size_bytes must be between 64 KiB and 4 GiB");
        }
        let needed = SEGMENT_HEADER_SIZE_BYTES + record_len_bytes(self.chunk_size_bytes_max) + TOMBSTONE_RESERVE_BYTES;
        if self.segment_size_bytes < needed {
            return bad(
                "segment_size_bytes must hold the segment header, one maximum-size chunk and the tombstone reserve",
            );
        }
        if !(self.compaction_live_fraction_max > 0.0 && self.compaction_live_fraction_max <= 1.0) {
            return bad("compaction_live_fraction_max must be in (0, 1]");
        }
        if MerkleTree::new(self.merkle_shape).is_none() {
            return bad("merkle_shape out of bounds");
        }
        if let Compression::Zstd { level } = self.compression
            && !zstd::compression_level_range().contains(&level)
        {
            return bad("zstd level out of range");
        }
        Ok(())
    }
}

/// The bytes of a chunk. Uncompressed chunks borrow the segment's memory map (no copy); the
/// handle keeps the map alive, even if compaction deletes the file meanwhile.
pub struct Chunk {
    repr: ChunkRepr,
}

enum ChunkRepr {
    Mapped { map: Arc<Mmap>, start: usize, len: usize },
    Owned(Vec<u8>),
}

impl Chunk {
    /// Converts into `bytes::Bytes` without copying.
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self)
    }

    /// Whether the bytes are served straight from the memory map.
    pub fn is_mapped(&self) -> bool {
        matches!(self.repr, ChunkRepr::Mapped { .. })
    }
}

impl Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.repr {
            // The range was checked against the map when the chunk was read.
            ChunkRepr::Mapped { map, start, len } => map.get(*start..*start + *len).unwrap_or_default(),
            ChunkRepr::Owned(v) => v,
        }
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("len", &self.len())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// The chunk's id.
    pub id: ChunkId,
    /// `false` if the chunk was already stored (nothing written).
    pub written: bool,
}

/// A snapshot of the store's counters and sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Readable chunks.
    pub chunks: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes of segment files on disk.
    pub disk_bytes: u64,
    /// Bytes of live records (headers, payloads, padding).
    pub live_record_bytes: u64,
    /// Bytes of dead records compaction can reclaim.
    pub dead_record_bytes: u64,
    /// Puts that wrote a record.
    pub puts: u64,
    /// Puts of a chunk already stored.
    pub dedup_puts: u64,
    /// Deletes that wrote a tombstone.
    pub deletes: u64,
    /// Successful reads.
    pub gets: u64,
    /// Verification failures found (reads, scrubs, opening).
    pub corruptions: u64,
    /// fsyncs issued by group commit.
    pub group_commits: u64,
    /// Compactions finished.
    pub compactions: u64,
    /// Bytes of segment files removed by compaction, net of what it wrote.
    pub compaction_reclaimed_bytes: u64,
}

#[derive(Default)]
struct Counters {
    puts: AtomicU64,
    dedup_puts: AtomicU64,
    deletes: AtomicU64,
    gets: AtomicU64,
    corruptions: AtomicU64,
    group_commits: AtomicU64,
    compactions: AtomicU64,
    compaction_reclaimed_bytes: AtomicU64,
}

/// What `open` found and did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Whether a checkpoint was used.
    pub used_checkpoint: bool,
    /// Segments found.
    pub segments: u64,
    /// Records scanned (not covered by the checkpoint).
    pub records_scanned: u64,
    /// Bytes scanned.
    pub bytes_scanned: u64,
    /// Records whose payload failed its checksum (kept out of service).
    pub corrupt_records: u64,
    /// Damaged byte ranges skipped in the middle of segments.
    pub damaged_ranges: u64,
    /// Bytes cut from segment tails (torn writes).
    pub truncated_bytes: u64,
    /// Input segments of an interrupted compaction removed.
    pub replaced_segments_removed: u64,
    /// Time taken.
    pub duration: Duration,
}

/// Progress of a scrub, passed to its callback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Chunks verified.
    pub chunks_checked: u64,
    /// Content bytes verified.
    pub bytes_checked: u64,
    /// Chunks that failed verification (now set aside).
    pub corrupt: Vec<ChunkId>,
    /// Whether the scrub was cancelled before the end.
    pub cancelled: bool,
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segments rewritten (and removed).
    pub inputs: Vec<u32>,
    /// The segment written, if any.
    pub output: Option<u32>,
    /// Records copied.
    pub records_copied: u64,
    /// Segment-file bytes before.
    pub bytes_before: u64,
    /// Segment-file bytes after.
    pub bytes_after: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    segment_id: u32,
    offset: u64,
}

struct Writer {
    active: Arc<Segment>,
    pos: u64,
    next_seq: u64,
    next_segment_id: u32,
    /// A write failed part-way: seal at `pos` and start a new segment before the next append.
    broken: bool,
}

struct SyncState {
    durable: Pos,
    leader_active: bool,
}

/// A record just made durable, to be applied to the index.
#[derive(Debug, Clone, Copy)]
struct NewRecord {
    seq: u64,
    loc: Loc,
    kind: EntryKind,
    stored_len: u32,
    raw_len: u32,
    flags: u16,
}

/// Decrements the pending-apply counters when a written record has been applied (or failed).
struct PendingGuard<'a> {
    store: &'a Store,
    segment: Arc<Segment>,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.segment.pending_applies.fetch_sub(1, Ordering::AcqRel);
        self.store.pending_applies.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An embedded store of immutable, content-addressed chunks. `Send + Sync`: share it behind
/// an `Arc` and call it from many threads. Its calls block on disk I/O.
pub struct Store {
    dir: PathBuf,
    options: Options,
    _lock: File,
    index: Index,
    segments: RwLock<SegmentMap>,
    writer: Mutex<Writer>,
    /// The active segment and its written end, mirrored from `writer` so a group-commit
    /// leader can read them without waiting for the writer lock (a checkpoint holds that
    /// lock while it waits for in-flight puts, whose leader needs this).
    tail: Mutex<(Arc<Segment>, Pos)>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    merkle: Mutex<MerkleTree>,
    compaction: Mutex<()>,
    pending_applies: AtomicU64,
    poisoned: AtomicBool,
    counters: Counters,
    recovery: RecoveryReport,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave torn state behind: the guarded
    // sections only assign whole values. Take the lock over rather than propagate the panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// What opening the store found.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Number of readable chunks.
    pub fn len(&self) -> u64 {
        lock(&self.merkle).root().count
    }

    /// Whether no chunk is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `content`; returns its id. Idempotent: a chunk already stored is not written
    /// again. Returns once the record is on stable storage.
    pub fn put(&self, content: &[u8]) -> Result<PutOutcome> {
        self.check_size(content.len())?;
        self.put_inner(ChunkId::of(content), content)
    }

    /// Stores `content` received under the id `claimed`, refusing it if the content does not
    /// hash to that id (so a bad peer cannot make this store hold wrong bytes).
    pub fn put_expecting(&self, claimed: ChunkId, content: &[u8]) -> Result<PutOutcome> {
        self.check_size(content.len())?;
        let actual = ChunkId::of(content);
        if actual != claimed {
            return Err(Error::IdMismatch { claimed, actual });
        }
        self.put_inner(actual, content)
    }

    fn check_size(&self, len: usize) -> Result<()> {
        if len as u64 > u64::from(self.options.chunk_size_bytes_max) {
            return Err(Error::TooLarge {
                size_bytes: len as u64,
                max_bytes: u64::from(self.options.chunk_size_bytes_max),
            });
        }
        Ok(())
    }

    fn put_inner(&self, id: ChunkId, content: &[u8]) -> Result<PutOutcome> {
        if self.contains(&id) {
            self.counters.dedup_puts.fetch_add(1, Ordering::Relaxed);
            return Ok(PutOutcome { id, written: false });
        }
        let (header, payload) = self.encode_put(id, content);
        let (rec, end, segment) = self.append(header, &payload)?;
        let _pending = PendingGuard { store: self, segment };
        self.wait_durable(end)?;
        self.apply(id, rec, false);
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        Ok(PutOutcome { id, written: true })
    }

    /// Stores many chunks with one durability wait: one group commit for the whole batch.
    /// On error, chunks written before the failure may or may not be stored; retrying the
    /// batch is safe (puts are idempotent).
    pub fn put_many(&self, contents: &[&[u8]]) -> Result<Vec<PutOutcome>> {
        for c in contents {
            self.check_size(c.len())?;
        }
        let mut outcomes = Vec::with_capacity(contents.len());
        let mut prepared = Vec::new();
        for content in contents {
            let id = ChunkId::of(content);
            let fresh = !self.contains(&id) && !prepared.iter().any(|(p, _, _): &(ChunkId, _, _)| *p == id);
            outcomes.push(PutOutcome { id, written: fresh });
            if !fresh {
                self.counters.dedup_puts.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let (header, payload) = self.encode_put(id, content);
            prepared.push((id, header, payload));
        }
        let mut written = Vec::with_capacity(prepared.len());
        let mut guards = Vec::with_capacity(prepared.len());
        let mut end = None;
        let mut failed = None;
        {
            let mut w = lock(&self.writer);
            for (id, header, payload) in &prepared {
                match self.append_locked(&mut w, *header, payload) {
                    Ok((rec, e, segment)) => {
                        guards.push(PendingGuard { store: self, segment });
                        written.push((*id, rec));
                        end = Some(e);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        // What was written before a failure is still made durable and indexed.
        if let Some(end) = end {
            self.wait_durable(end)?;
        }
        self.counters.puts.fetch_add(written.len() as u64, Ordering::Relaxed);
        for (id, rec) in written {
            self.apply(id, rec, false);
        }
        drop(guards);
        match failed {
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    }

    /// The header (sequence number still 0) and stored payload of a put record.
    fn encode_put<'a>(&self, id: ChunkId, content: &'a [u8]) -> (RecordHeader, Cow<'a, [u8]>) {
        let (flags, payload) = self.maybe_compress(content);
        let header = RecordHeader {
            kind: RecordKind::Put,
            flags,
            seq: 0,
            id,
            stored_len: payload.len() as u32,
            raw_len: content.len() as u32,
            payload_crc: payload_crc(&payload),
        };
        (header, payload)
    }

    fn maybe_compress<'a>(&self, content: &'a [u8]) -> (u16, Cow<'a, [u8]>) {
        let Compression::Zstd { level } = self.options.compression else {
            return (0, Cow::Borrowed(content));
        };
        if content.len() < COMPRESSION_SIZE_BYTES_MIN {
            return (0, Cow::Borrowed(content));
        }
        let pays = |raw: usize, compressed: usize| compressed < raw - raw / 16;
        if content.len() > 2 * COMPRESSION_SAMPLE_BYTES {
            let sample = &content[..COMPRESSION_SAMPLE_BYTES];
            match zstd::bulk::compress(sample, level) {
                Ok(c) if pays(sample.len(), c.len()) => {}
                _ => return (0, Cow::Borrowed(content)),
            }
        }
        match zstd::bulk::compress(content, level) {
            Ok(c) if pays(content.len(), c.len()) => (FLAG_ZSTD, Cow::Owned(c)),
            _ => (0, Cow::Borrowed(content)),
        }
    }

    /// Appends a record to the active segment, assigning its sequence number.
    fn append(&self, header: RecordHeader, payload: &[u8]) -> Result<(NewRecord, Pos, Arc<Segment>)> {
        let mut w = lock(&self.writer);
        self.append_locked(&mut w, header, payload)
    }

    fn append_locked(
        &self,
        w: &mut Writer,
        header: RecordHeader,
        payload: &[u8],
    ) -> Result<(NewRecord, Pos, Arc<Segment>)> {
        match self.append_once(w, header, payload) {
            // A tombstone frees space: let it use the reserve rather than fail on a full disk.
            Err(Error::Full { .. }) if header.kind == RecordKind::Tombstone && self.release_space_reserve() => {
                self.append_once(w, header, payload)
            }
            r => r,
        }
    }

    fn append_once(
        &self,
        w: &mut Writer,
        mut header: RecordHeader,
        payload: &[u8],
    ) -> Result<(NewRecord, Pos, Arc<Segment>)> {
        let len = record_len_bytes(header.stored_len);
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        let is_put = header.kind == RecordKind::Put;
        let limit = if is_put {
            self.options.segment_size_bytes - TOMBSTONE_RESERVE_BYTES
        } else {
            self.options.segment_size_bytes
        };
        if w.broken || w.pos + len > limit {
            self.roll(w, is_put)?;
        }
        header.seq = w.next_seq;
        let offset = w.pos;
        let seg = w.active.clone();
        let written = seg
            .file
            .write_all_at_pair(&header.encode(), payload, offset)
            .map_err(|e| crate::segment::classify_write_error("appending record", &seg.path, e, len));
        if let Err(e) = written {
            w.broken = true;
            return Err(e);
        }
        seg.file_len_bytes.fetch_max(
            offset + RECORD_HEADER_SIZE_BYTES as u64 + payload.len() as u64,
            Ordering::Relaxed,
        );
        w.next_seq += 1;
        w.pos += len;
        seg.record_bytes.fetch_add(len, Ordering::Relaxed);
        seg.pending_applies.fetch_add(1, Ordering::AcqRel);
        self.pending_applies.fetch_add(1, Ordering::AcqRel);
        let rec = NewRecord {
            seq: header.seq,
            loc: Loc {
                segment_id: seg.id,
                offset: offset as u32,
            },
            kind: match header.kind {
                RecordKind::Put => EntryKind::Put,
                RecordKind::Tombstone => EntryKind::Tombstone,
            },
            stored_len: header.stored_len,
            raw_len: header.raw_len,
            flags: header.flags,
        };
        let end = Pos {
            segment_id: seg.id,
            offset: w.pos,
        };
        *lock(&self.tail) = (seg.clone(), end);
        Ok((rec, end, seg))
    }

    /// Seals the active segment and starts a new one. Called with the writer lock held.
    fn roll(&self, w: &mut Writer, is_put: bool) -> Result<()> {
        let size = self.options.segment_size_bytes;
        if let Some(capacity) = self.options.capacity_bytes {
            let used = self.disk_bytes();
            // Puts stop at the capacity; tombstones (which free space) may go one segment over.
            let allowed = if is_put {
                capacity
            } else {
                capacity.saturating_add(size)
            };
            if used + size > allowed {
                return Err(Error::Full {
                    needed_bytes: size,
                    capacity_bytes: capacity,
                });
            }
        }
        if w.next_segment_id == SEGMENT_ID_GONE {
            return Err(Error::InvalidOptions("segment ids exhausted".into()));
        }
        let new = Segment::create(
            &self.dir,
            &SegmentHeader {
                id: w.next_segment_id,
                kind: SegmentKind::Appended,
                replaces: vec![],
            },
            size,
        )?;
        w.next_segment_id += 1;
        let old = w.active.clone();
        if let Err(e) = old.file.sync_data() {
            self.poison("sealing segment", &e);
            return Err(Error::io("syncing sealed segment", &old.path, e));
        }
        old.truncate(w.pos)?;
        {
            let mut st = lock(&self.sync);
            let sealed = Pos {
                segment_id: old.id,
                offset: w.pos,
            };
            st.durable = st.durable.max(sealed);
        }
        let new = Arc::new(new);
        self.segments_write().insert(new.id, new.clone());
        w.active = new.clone();
        w.pos = SEGMENT_HEADER_SIZE_BYTES;
        w.broken = false;
        *lock(&self.tail) = (
            new.clone(),
            Pos {
                segment_id: new.id,
                offset: SEGMENT_HEADER_SIZE_BYTES,
            },
        );
        self.synced.notify_all();
        Ok(())
    }

    /// Creates the ballast file if it is missing (best effort: a full disk just leaves it out).
    fn ensure_space_reserve(&self) {
        let path = self.dir.join(RESERVE_FILE);
        if fs::metadata(&path).is_ok_and(|m| m.len() == SPACE_RESERVE_BYTES) {
            return;
        }
        let made = (|| -> std::io::Result<()> {
            let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
            let zeros = vec![0u8; SPACE_RESERVE_BYTES as usize];
            std::io::Write::write_all(&mut f, &zeros)?;
            f.sync_all()
        })();
        if let Err(e) = made {
            let _ = fs::remove_file(&path);
            tracing::warn!(error = %e, "could not create the space reserve file");
        }
    }

    /// Deletes the ballast file; `true` if there was one to delete.
    fn release_space_reserve(&self) -> bool {
        let released = fs::remove_file(self.dir.join(RESERVE_FILE)).is_ok();
        if released {
            tracing::warn!(dir = %self.dir.display(), "file system full: released the space reserve");
        }
        released
    }

    fn poison(&self, context: &str, e: &std::io::Error) {
        tracing::error!(context, error = %e, "fsync failed; refusing writes until the store is reopened");
        self.poisoned.store(true, Ordering::Release);
        self.synced.notify_all();
    }

    /// Waits until everything up to `target` is on stable storage, leading a group commit
    /// if no fsync is in progress.
    fn wait_durable(&self, target: Pos) -> Result<()> {
        let mut st = lock(&self.sync);
        loop {
            if st.durable >= target {
                return Ok(());
            }
            if self.poisoned.load(Ordering::Acquire) {
                return Err(Error::Poisoned);
            }
            if st.leader_active {
                st = self.synced.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.leader_active = true;
            drop(st);
            let (seg, upto) = lock(&self.tail).clone();
            let result = seg.file.sync_data();
            self.counters.group_commits.fetch_add(1, Ordering::Relaxed);
            st = lock(&self.sync);
            st.leader_active = false;
            match result {
                Ok(()) => {
                    st.durable = st.durable.max(upto);
                    self.synced.notify_all();
                }
                Err(e) => {
                    drop(st);
                    self.poison("group commit", &e);
                    return Err(Error::io("syncing segment", &seg.path, e));
                }
            }
        }
    }

    /// Makes every record written so far durable.
    pub fn sync(&self) -> Result<()> {
        let target = lock(&self.tail).1;
        self.wait_durable(target)
    }

    /// Applies a durable record to the index, the segment accounting and the Merkle summary.
    /// `recovering` keeps tombstones nothing needs yet, since records arrive out of order
    /// while opening; they are pruned at the end of recovery.
    fn apply(&self, id: ChunkId, rec: NewRecord, recovering: bool) {
        let rec_len = record_len_bytes(rec.stored_len);
        let mut shard = self.index.write(&id);
        let new_entry = Entry {
            seq: rec.seq,
            loc: rec.loc,
            stored_len: rec.stored_len,
            raw_len: rec.raw_len,
            shadowed_puts: 0,
            kind: rec.kind,
            flags: rec.flags,
        };
        let Some(e) = shard.get_mut(&id) else {
            match rec.kind {
                EntryKind::Put => {
                    lock(&self.merkle).insert(&id.0, &id.0);
                    shard.insert(id, new_entry);
                }
                EntryKind::Corrupt => {
                    self.mark_dead(rec.loc, rec_len);
                    shard.insert(id, new_entry);
                }
                EntryKind::Tombstone if recovering => {
                    shard.insert(id, new_entry);
                }
                EntryKind::Tombstone => self.mark_dead(rec.loc, rec_len),
            }
            return;
        };
        if rec.seq <= e.seq {
            // Older than what we have (or a duplicate left by an interrupted compaction).
            if rec.kind != EntryKind::Tombstone {
                e.shadowed_puts += 1;
            }
            if rec.kind != EntryKind::Corrupt || e.seq == rec.seq {
                self.mark_dead(rec.loc, rec_len);
            }
            return;
        }
        let old = *e;
        match old.kind {
            EntryKind::Put => {
                lock(&self.merkle).remove(&id.0, &id.0);
                self.mark_dead(old.loc, old.record_len_bytes());
            }
            EntryKind::Corrupt => {} // already counted dead when found corrupt
            EntryKind::Tombstone => self.mark_dead(old.loc, old.record_len_bytes()),
        }
        let on_disk_put = old.kind != EntryKind::Tombstone && old.loc.segment_id != SEGMENT_ID_GONE;
        *e = Entry {
            shadowed_puts: old.shadowed_puts + u32::from(on_disk_put),
            ..new_entry
        };
        match rec.kind {
            EntryKind::Put => lock(&self.merkle).insert(&id.0, &id.0),
            EntryKind::Corrupt => self.mark_dead(rec.loc, rec_len),
            EntryKind::Tombstone => {
                if !recovering && e.shadowed_puts == 0 {
                    shard.remove(&id);
                    self.mark_dead(rec.loc, rec_len);
                }
            }
        }
    }

    fn mark_dead(&self, loc: Loc, len: u64) {
        if let Some(seg) = self.segments_read().get(&loc.segment_id) {
            seg.dead_bytes.fetch_add(len, Ordering::Relaxed);
        }
    }

    /// Sets a chunk's newest record aside after it failed verification.
    fn mark_corrupt(&self, id: &ChunkId, entry: &Entry) {
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

    fn segments_read(&self) -> std::sync::RwLockReadGuard<'_, SegmentMap> {
        self.segments.read().unwrap_or_else(|p| p.into_inner())
    }

    fn segments_write(&self) -> std::sync::RwLockWriteGuard<'_, SegmentMap> {
        self.segments.write().unwrap_or_else(|p| p.into_inner())
    }

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
    fn read_entry(&self, id: &ChunkId, entry: &Entry, seg: &Segment) -> Result<Chunk> {
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

    fn disk_bytes(&self) -> u64 {
        self.segments_read()
            .values()
            .map(|s| s.file_len_bytes.load(Ordering::Relaxed))
            .sum()
    }

    /// Counters and sizes.
    pub fn stats(&self) -> Stats {
        let segments = self.segments_read();
        let mut s = Stats {
            chunks: self.len(),
            segments: segments.len() as u64,
            ..Stats::default()
        };
        for seg in segments.values() {
            s.disk_bytes += seg.file_len_bytes.load(Ordering::Relaxed);
            s.live_record_bytes += seg.live_bytes();
            s.dead_record_bytes += seg.dead_bytes.load(Ordering::Relaxed);
        }
        drop(segments);
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s.puts = get(&c.puts);
        s.dedup_puts = get(&c.dedup_puts);
        s.deletes = get(&c.deletes);
        s.gets = get(&c.gets);
        s.corruptions = get(&c.corruptions);
        s.group_commits = get(&c.group_commits);
        s.compactions = get(&c.compactions);
        s.compaction_reclaimed_bytes = get(&c.compaction_reclaimed_bytes);
        s
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

    /// Writes an index checkpoint so the next open scans only what came after it. Pauses
    /// puts for one fsync and a copy of the index (tens of milliseconds per million chunks).
    pub fn checkpoint(&self) -> Result<u64> {
        let compaction = lock(&self.compaction);
        self.checkpoint_locked(&compaction)
    }

    fn checkpoint_locked(&self, _compaction: &MutexGuard<'_, ()>) -> Result<u64> {
        let w = lock(&self.writer);
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        let upto = Pos {
            segment_id: w.active.id,
            offset: w.pos,
        };
        if let Err(e) = w.active.file.sync_data() {
            self.poison("checkpoint", &e);
            return Err(Error::io("syncing segment", &w.active.path, e));
        }
        {
            let mut st = lock(&self.sync);
            st.durable = st.durable.max(upto);
        }
        self.synced.notify_all();
        // Puts already written are now durable; wait for them to reach the index, so the
        // snapshot holds every record below the covered offsets.
        let deadline = Instant::now() + Duration::from_millis(CHECKPOINT_QUIESCE_TIMEOUT_MS);
        while self.pending_applies.load(Ordering::Acquire) > 0 {
            if Instant::now() > deadline {
                return Err(Error::Timeout("waiting for in-flight puts before a checkpoint"));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        let segments: Vec<SegmentCoverage> = self
            .segments_read()
            .values()
            .map(|s| SegmentCoverage {
                segment_id: s.id,
                covered_len_bytes: if s.id == w.active.id {
                    w.pos
                } else {
                    s.file_len_bytes.load(Ordering::Relaxed)
                },
                record_bytes: s.record_bytes.load(Ordering::Relaxed),
                dead_bytes: s.dead_bytes.load(Ordering::Relaxed),
            })
            .collect();
        let mut entries = Vec::with_capacity(self.index.len());
        for i in 0..INDEX_SHARDS {
            entries.extend(self.index.read_shard(i).iter().map(|(id, e)| (*id, *e)));
        }
        let next_seq = w.next_seq;
        drop(w);
        Checkpoint {
            next_seq,
            segments,
            entries,
        }
        .write(&self.dir)
    }

    /// Makes everything durable and writes a checkpoint, so the next open is fast. Dropping
    /// a store without `close` is safe (everything acknowledged is already durable); the next
    /// open just scans more.
    pub fn close(self) -> Result<()> {
        self.sync()?;
        self.checkpoint()?;
        Ok(())
    }

    /// Re-reads every stored chunk and checks it against its id (BLAKE3), at most
    /// `rate_bytes_per_s` content bytes per second. Bad copies are set aside and listed.
    /// `progress` is called after each index shard; `cancel` stops the walk early.
    pub fn scrub(
        &self,
        rate_bytes_per_s: u64,
        cancel: Option<&AtomicBool>,
        mut progress: impl FnMut(&ScrubReport),
    ) -> ScrubReport {
        let started = Instant::now();
        let mut report = ScrubReport::default();
        for i in 0..INDEX_SHARDS {
            let mut ids: Vec<(ChunkId, Loc)> = self
                .index
                .read_shard(i)
                .iter()
                .filter(|(_, e)| e.kind == EntryKind::Put)
                .map(|(id, e)| (*id, e.loc))
                .collect();
            ids.sort_unstable_by_key(|(_, loc)| *loc);
            for (id, _) in ids {
                if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    report.cancelled = true;
                    return report;
                }
                match self.verify(&id) {
                    Ok(Some(chunk)) => report.bytes_checked += chunk.len() as u64,
                    Ok(None) => continue, // deleted meanwhile
                    Err(e) if e.is_corruption() => report.corrupt.push(id),
                    Err(e) => tracing::warn!(%id, error = %e, "scrub could not read a chunk"),
                }
                report.chunks_checked += 1;
                if rate_bytes_per_s > 0 {
                    let due = Duration::from_secs_f64(report.bytes_checked as f64 / rate_bytes_per_s as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
            progress(&report);
        }
        report
    }
}

fn failpoint_error(dir: &Path) -> Error {
    Error::io("failpoint", dir, std::io::Error::other("failpoint hit"))
}

/// Writes a header and a payload at `offset` with one vectored write where possible.
trait WritePair {
    fn write_all_at_pair(&self, header: &[u8], payload: &[u8], offset: u64) -> std::io::Result<()>;
}

impl WritePair for File {
    fn write_all_at_pair(&self, header: &[u8], payload: &[u8], offset: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut done = 0usize;
        let total = header.len() + payload.len();
        while done < total {
            let n = if done < header.len() {
                let bufs = [std::io::IoSlice::new(&header[done..]), std::io::IoSlice::new(payload)];
                rustix::io::pwritev(self, &bufs, offset + done as u64).map_err(std::io::Error::from)?
            } else {
                let rest = &payload[done - header.len()..];
                self.write_at(rest, offset + done as u64)?
            };
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "short write"));
            }
            done += n;
        }
        Ok(())
    }
}
