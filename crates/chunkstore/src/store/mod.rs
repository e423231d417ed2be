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
//!
//! # Layout
//!
//! This file holds the `Store` struct, its options, public types and constants. Each concern
//! has its own `impl Store` block in a sibling file: `open` (opening and crash recovery),
//! `write` (puts and group commit), `read` (verified reads), `compact` (deletes and
//! compaction), `checkpoint` (checkpoints and closing), `scrub`, `space` (disk space and
//! statistics) and `listing` (ids and the Merkle summary).

mod checkpoint;
mod compact;
mod listing;
mod open;
mod read;
mod scrub;
mod space;
mod write;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use memmap2::Mmap;

use crate::ChunkId;
use crate::error::{Error, Result};
use crate::index::{EntryKind, Index, Loc};
use crate::merkle::{MerkleShape, MerkleTree};
use crate::record::{RECORD_PAYLOAD_SIZE_BYTES_MAX, record_len_bytes};
use crate::segment::{SEGMENT_HEADER_SIZE_BYTES, Segment};

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

    fn segments_read(&self) -> std::sync::RwLockReadGuard<'_, SegmentMap> {
        self.segments.read().unwrap_or_else(|p| p.into_inner())
    }

    fn segments_write(&self) -> std::sync::RwLockWriteGuard<'_, SegmentMap> {
        self.segments.write().unwrap_or_else(|p| p.into_inner())
    }
}
