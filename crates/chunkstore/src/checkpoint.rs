//! The index checkpoint: a snapshot of the index that makes reopening a large store fast.
//!
//! The file `index.ckpt` holds every index entry, every segment's covered length and dead
//! bytes, and the next sequence number, followed by a BLAKE3 hash of all of it. It is written
//! with the crash-safe recipe (temp file, fsync, rename, fsync the directory). On open, the
//! checkpoint is used only if it verifies and every segment it lists still exists and is at
//! least as long as it says; then only the bytes after each covered length (and segments the
//! checkpoint does not list) are scanned. Otherwise the store falls back to a full scan: a
//! checkpoint can make opening faster, never wrong.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use crate::ChunkId;
use crate::error::{Error, Result};
use crate::index::{Entry, EntryKind, Loc};
use crate::segment::sync_dir;

const CHECKPOINT_MAGIC: [u8; 8] = *b"HADSSIDX";
const CHECKPOINT_VERSION: u32 = 1;
/// File name of the checkpoint.
pub const CHECKPOINT_FILE: &str = "index.ckpt";
const CHECKPOINT_TEMP_FILE: &str = "index.ckpt.tmp";
const ENTRY_SIZE_BYTES: usize = 32 + 8 + 4 + 4 + 4 + 4 + 4 + 1 + 2;
const SEGMENT_SIZE_BYTES: usize = 4 + 8 + 8 + 8;
/// Largest checkpoint accepted: bounds the memory a corrupt or hostile file can claim.
/// 2^27 entries is far above any chunk count one store's disk holds at the minimum chunk size.
const CHECKPOINT_ENTRIES_MAX: u64 = 1 << 27;
const CHECKPOINT_SEGMENTS_MAX: u64 = 1 << 24;

/// What a checkpoint records about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentCoverage {
    /// The segment id.
    pub segment_id: u32,
    /// Records below this offset are in the checkpoint.
    pub covered_len_bytes: u64,
    /// Record bytes written below `covered_len_bytes`.
    pub record_bytes: u64,
    /// Dead record bytes below `covered_len_bytes`.
    pub dead_bytes: u64,
}

/// A decoded checkpoint.
#[derive(Debug, Default)]
pub struct Checkpoint {
    /// The next sequence number at checkpoint time.
    pub next_seq: u64,
    /// The segments covered.
    pub segments: Vec<SegmentCoverage>,
    /// Every index entry.
    pub entries: Vec<(ChunkId, Entry)>,
}

impl Checkpoint {
    /// Writes the checkpoint durably into `dir`.
    pub fn write(&self, dir: &Path) -> Result<u64> {
        let mut buf =
            Vec::with_capacity(64 + self.segments.len() * SEGMENT_SIZE_BYTES + self.entries.len() * ENTRY_SIZE_BYTES);
        buf.extend_from_slice(&CHECKPOINT_MAGIC);
        buf.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        buf.extend_from_slice(&self.next_seq.to_le_bytes());
        buf.extend_from_slice(&(self.segments.len() as u64).to_le_bytes());
        for s in &self.segments {
            buf.extend_from_slice(&s.segment_id.to_le_bytes());
            buf.extend_from_slice(&s.covered_len_bytes.to_le_bytes());
            buf.extend_from_slice(&s.record_bytes.to_le_bytes());
            buf.extend_from_slice(&s.dead_bytes.to_le_bytes());
        }
        buf.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (id, e) in &self.entries {
            buf.extend_from_slice(&id.0);
            buf.extend_from_slice(&e.seq.to_le_bytes());
            buf.extend_from_slice(&e.loc.segment_id.to_le_bytes());
            buf.extend_from_slice(&e.loc.offset.to_le_bytes());
            buf.extend_from_slice(&e.stored_len.to_le_bytes());
            buf.extend_from_slice(&e.raw_len.to_le_bytes());
            buf.extend_from_slice(&e.shadowed_puts.to_le_bytes());
            buf.push(e.kind as u8);
            buf.extend_from_slice(&e.flags.to_le_bytes());
        }
        let hash = blake3::hash(&buf);
        buf.extend_from_slice(hash.as_bytes());

        let tmp = dir.join(CHECKPOINT_TEMP_FILE);
        let path = dir.join(CHECKPOINT_FILE);
        let written = (|| {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(crate::segment::classify_write_error(
                "writing checkpoint",
                &tmp,
                e,
                buf.len() as u64,
            ));
        }
        fs::rename(&tmp, &path).map_err(|e| Error::io("renaming checkpoint", &path, e))?;
        sync_dir(dir)?;
        Ok(buf.len() as u64)
    }

    /// Reads the checkpoint in `dir`. `Ok(None)` when there is none or it does not verify
    /// (the caller then scans everything).
    pub fn read(dir: &Path) -> Result<Option<Checkpoint>> {
        let path = dir.join(CHECKPOINT_FILE);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("opening checkpoint", &path, e)),
        };
        let len = f
            .metadata()
            .map_err(|e| Error::io("reading checkpoint", &path, e))?
            .len();
        let len_max =
            64 + CHECKPOINT_SEGMENTS_MAX * SEGMENT_SIZE_BYTES as u64 + CHECKPOINT_ENTRIES_MAX * ENTRY_SIZE_BYTES as u64;
        if len > len_max {
            tracing::warn!(path = %path.display(), len, "checkpoint too large; ignoring it");
            return Ok(None);
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.read_to_end(&mut buf)
            .map_err(|e| Error::io("reading checkpoint", &path, e))?;
        match Self::decode(&buf) {
            Ok(c) => Ok(Some(c)),
            Err(reason) => {
                tracing::warn!(path = %path.display(), reason, "checkpoint unusable; scanning segments instead");
                Ok(None)
            }
        }
    }

    /// Decodes a checkpoint image; never panics on any input.
    pub fn decode(buf: &[u8]) -> Result<Checkpoint, &'static str> {
        if buf.len() < 32 {
            return Err("short");
        }
        let (body, hash) = buf.split_at(buf.len() - 32);
        if blake3::hash(body).as_bytes() != hash {
            return Err("hash mismatch");
        }
        let mut r = Reader { buf: body, pos: 0 };
        if r.take(8)? != CHECKPOINT_MAGIC {
            return Err("bad magic");
        }
        if r.u32()? != CHECKPOINT_VERSION {
            return Err("unknown version");
        }
        let next_seq = r.u64()?;
        let segment_count = r.u64()?;
        if segment_count > CHECKPOINT_SEGMENTS_MAX {
            return Err("too many segments");
        }
        let mut segments = Vec::with_capacity(segment_count as usize);
        for _ in 0..segment_count {
            segments.push(SegmentCoverage {
                segment_id: r.u32()?,
                covered_len_bytes: r.u64()?,
                record_bytes: r.u64()?,
                dead_bytes: r.u64()?,
            });
        }
        let entry_count = r.u64()?;
        if entry_count > CHECKPOINT_ENTRIES_MAX || entry_count as usize * ENTRY_SIZE_BYTES > body.len() {
            return Err("too many entries");
        }
        let mut entries = Vec::with_capacity(entry_count as usize);
        for _ in 0..entry_count {
            let mut id = [0u8; 32];
            id.copy_from_slice(r.take(32)?);
            let seq = r.u64()?;
            let segment_id = r.u32()?;
            let offset = r.u32()?;
            let stored_len = r.u32()?;
            let raw_len = r.u32()?;
            let shadowed_puts = r.u32()?;
            let kind = EntryKind::from_u8(r.take(1)?[0]).ok_or("bad entry kind")?;
            let flags = u16::from_le_bytes([r.take(1)?[0], r.take(1)?[0]]);
            entries.push((
                ChunkId(id),
                Entry {
                    seq,
                    loc: Loc { segment_id, offset },
                    stored_len,
                    raw_len,
                    shadowed_puts,
                    kind,
                    flags,
                },
            ));
        }
        if r.pos != body.len() {
            return Err("trailing bytes");
        }
        Ok(Checkpoint {
            next_seq,
            segments,
            entries,
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.pos.checked_add(n).ok_or("overflow")?;
        let s = self.buf.get(self.pos..end).ok_or("truncated")?;
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}
