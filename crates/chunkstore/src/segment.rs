//! Segment files: naming, the 4 KiB segment header, creation, and the
//! read-only memory map every read goes through.
//!
//! A segment is created as `seg-<id>.tmp`, given its header, fsynced, renamed to
//! `seg-<id>.dat`, and the directory fsynced: a `.dat` file therefore always had a complete
//! header. Appends go through `pwrite` at the end of the file (so write errors are ordinary
//! errors); reads go through a shared, read-only mapping. On Linux both see the same page
//! cache, so a record is readable through the map as soon as its `pwrite` returned.
//!
//! The active segment is mapped at its maximum size while the file grows under the mapping.
//! Files are not preallocated: measured on ext4, `fdatasync` after writing into `fallocate`d
//! (unwritten) extents costs up to twice as much as after a plain append, because every sync
//! also commits the extent conversion to the journal.
//!
//! # Safety contract of the mappings
//!
//! `memmap2::Mmap` is `unsafe` to create because another process could truncate or modify the
//! file under the mapping. This module relies on:
//! - the directory lock (`LOCK`) held by the owning `Store`, so no other HADSS process writes
//!   these files;
//! - readers only touch bytes of records that were completely written, which lie below the
//!   file's length (bytes of the mapping past the end of the file would raise SIGBUS; they are
//!   never read);
//! - records below a segment's written length are never rewritten in place (append-only), and
//!   a file is only truncated down to its written length, so no mapped byte a reader may touch
//!   goes away while mapped;
//! - deleted (compacted) segment files stay mapped until the last `Chunk` handle drops, which
//!   Linux supports for unlinked files.
//!
//! A media error on a mapped page raises SIGBUS and ends the process, as in LMDB; replicas and
//! anti-entropy cover the lost node.

#![allow(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Result, is_no_space};

/// Size of the segment header; records start here.
pub const SEGMENT_HEADER_SIZE_BYTES: u64 = 4096;
const SEGMENT_MAGIC: [u8; 8] = *b"HADSSSEG";
const SEGMENT_VERSION: u32 = 1;
/// Most segments one compaction may replace (bounded by the header's size).
pub const COMPACTION_INPUTS_MAX: usize = 256;

/// How a segment came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// Filled by puts and deletes.
    Appended,
    /// Written by compaction; replaces the listed segments.
    Compacted,
}

/// The decoded segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's id (also in its file name).
    pub id: u32,
    /// Appended or compacted.
    pub kind: SegmentKind,
    /// For a compaction output: the segments it replaces.
    pub replaces: Vec<u32>,
}

impl SegmentHeader {
    /// Encodes the 4 KiB header.
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(self.replaces.len() <= COMPACTION_INPUTS_MAX);
        let mut b = vec![0u8; SEGMENT_HEADER_SIZE_BYTES as usize];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        let kind: u32 = match self.kind {
            SegmentKind::Appended => 0,
            SegmentKind::Compacted => 1,
        };
        b[12..16].copy_from_slice(&kind.to_le_bytes());
        b[16..20].copy_from_slice(&self.id.to_le_bytes());
        b[20..24].copy_from_slice(&(self.replaces.len() as u32).to_le_bytes());
        for (i, r) in self.replaces.iter().enumerate() {
            b[24 + 4 * i..28 + 4 * i].copy_from_slice(&r.to_le_bytes());
        }
        let end = b.len() - 4;
        let crc = crc32c::crc32c(&b[..end]);
        b[end..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header; `Err` carries a short reason, or the unknown version.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, HeaderProblem> {
        let b = b
            .get(..SEGMENT_HEADER_SIZE_BYTES as usize)
            .ok_or(HeaderProblem::Invalid("short"))?;
        if b[0..8] != SEGMENT_MAGIC {
            return Err(HeaderProblem::Invalid("bad magic"));
        }
        let end = b.len() - 4;
        let le32 = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if crc32c::crc32c(&b[..end]) != le32(end) {
            return Err(HeaderProblem::Invalid("bad checksum"));
        }
        let version = le32(8);
        if version != SEGMENT_VERSION {
            return Err(HeaderProblem::Version(version));
        }
        let kind = match le32(12) {
            0 => SegmentKind::Appended,
            1 => SegmentKind::Compacted,
            _ => return Err(HeaderProblem::Invalid("bad kind")),
        };
        let count = le32(20) as usize;
        if count > COMPACTION_INPUTS_MAX {
            return Err(HeaderProblem::Invalid("too many replaced segments"));
        }
        let replaces = (0..count).map(|i| le32(24 + 4 * i)).collect();
        Ok(SegmentHeader {
            id: le32(16),
            kind,
            replaces,
        })
    }
}

/// Why a segment header did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Damaged or not a segment.
    Invalid(&'static str),
    /// Written by an unknown format version.
    Version(u32),
}

/// The file name of segment `id`.
pub fn segment_file_name(id: u32) -> String {
    format!("seg-{id:08x}.dat")
}

fn temp_file_name(id: u32) -> String {
    format!("seg-{id:08x}.tmp")
}

/// Parses `seg-XXXXXXXX.dat` / `.tmp` names.
pub fn parse_file_name(name: &str) -> Option<(u32, bool)> {
    let rest = name.strip_prefix("seg-")?;
    let (hex, is_temp) = if let Some(h) = rest.strip_suffix(".dat") {
        (h, false)
    } else {
        (rest.strip_suffix(".tmp")?, true)
    };
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(|id| (id, is_temp))
}

/// fsyncs a directory so that created, renamed and deleted entries are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing directory", dir, e))
}

/// An open segment file and its mapping.
#[derive(Debug)]
pub struct Segment {
    /// The segment id.
    pub id: u32,
    /// Path of the `.dat` file.
    pub path: PathBuf,
    /// The file (appends use `pwrite`).
    pub file: File,
    /// Read-only shared mapping of the file as it was sized when mapped.
    pub map: Arc<Mmap>,
    /// Bytes of records ever written into this segment (header excluded, padding included).
    pub record_bytes: AtomicU64,
    /// Bytes of those records that are dead (superseded, deleted, corrupt).
    pub dead_bytes: AtomicU64,
    /// Records written whose index update has not happened yet; compaction skips segments
    /// with pending records.
    pub pending_applies: AtomicU32,
    /// Bytes the file occupies on disk (its length).
    pub file_len_bytes: AtomicU64,
}

impl Segment {
    /// Live record bytes.
    pub fn live_bytes(&self) -> u64 {
        self.record_bytes
            .load(Ordering::Relaxed)
            .saturating_sub(self.dead_bytes.load(Ordering::Relaxed))
    }

    /// The mapped bytes of `offset .. offset + len`, if inside the mapping.
    pub fn bytes(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.map.get(start..end)
    }

    /// Opens an existing `.dat` segment read-write and maps its current length.
    pub fn open(dir: &Path, id: u32) -> Result<Segment> {
        let path = dir.join(segment_file_name(id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("opening segment", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading segment metadata", &path, e))?
            .len();
        let map = map_file(&file, len, &path)?;
        Ok(Segment {
            id,
            path,
            file,
            map: Arc::new(map),
            record_bytes: AtomicU64::new(0),
            dead_bytes: AtomicU64::new(0),
            pending_applies: AtomicU32::new(0),
            file_len_bytes: AtomicU64::new(len),
        })
    }

    /// Creates a new segment through the temp-file-and-rename recipe and maps `map_len_bytes`
    /// (the most it will grow to). Running out of space is `Error::Full` and leaves nothing
    /// behind.
    pub fn create(dir: &Path, header: &SegmentHeader, map_len_bytes: u64) -> Result<Segment> {
        let tmp = dir.join(temp_file_name(header.id));
        let result = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| Error::io("creating segment", &tmp, e))?;
            file.write_all_at(&header.encode(), 0)
                .map_err(|e| classify_write_error("writing segment header", &tmp, e, SEGMENT_HEADER_SIZE_BYTES))?;
            file.sync_all().map_err(|e| Error::io("syncing new segment", &tmp, e))?;
            Ok(file)
        })();
        let file = match result {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let path = dir.join(segment_file_name(header.id));
        fs::rename(&tmp, &path).map_err(|e| Error::io("renaming new segment", &path, e))?;
        sync_dir(dir)?;
        let map = map_file(&file, map_len_bytes, &path)?;
        Ok(Segment {
            id: header.id,
            path,
            file,
            map: Arc::new(map),
            record_bytes: AtomicU64::new(0),
            dead_bytes: AtomicU64::new(0),
            pending_applies: AtomicU32::new(0),
            file_len_bytes: AtomicU64::new(SEGMENT_HEADER_SIZE_BYTES),
        })
    }

    /// Cuts the file to `len_bytes` (the end of its last record) and fsyncs it. Existing
    /// mappings stay valid for every byte below `len_bytes`, the only bytes readers touch.
    pub fn truncate(&self, len_bytes: u64) -> Result<()> {
        self.file
            .set_len(len_bytes)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| Error::io("truncating segment", &self.path, e))?;
        self.file_len_bytes.store(len_bytes, Ordering::Relaxed);
        Ok(())
    }
}

/// Streams a compaction output: records are appended to `seg-<id>.tmp`; `finish` fsyncs it,
/// renames it to `.dat` and fsyncs the directory. Dropped unfinished, it removes the temp file.
#[derive(Debug)]
pub struct SegmentWriter {
    dir: PathBuf,
    tmp: PathBuf,
    id: u32,
    file: File,
    len_bytes: u64,
    finished: bool,
}

impl SegmentWriter {
    /// Creates the temp file and writes the header.
    pub fn create(dir: &Path, header: &SegmentHeader) -> Result<SegmentWriter> {
        let tmp = dir.join(temp_file_name(header.id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io("creating compaction output", &tmp, e))?;
        let mut w = SegmentWriter {
            dir: dir.to_path_buf(),
            tmp,
            id: header.id,
            file,
            len_bytes: 0,
            finished: false,
        };
        w.append(&header.encode())?;
        Ok(w)
    }

    /// Appends bytes; returns the offset they start at.
    pub fn append(&mut self, bytes: &[u8]) -> Result<u64> {
        let offset = self.len_bytes;
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| classify_write_error("writing compaction output", &self.tmp, e, bytes.len() as u64))?;
        self.len_bytes += bytes.len() as u64;
        Ok(offset)
    }

    /// Bytes written so far, header included.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Makes the segment durable and visible under its final name, then opens it.
    pub fn finish(mut self) -> Result<Segment> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("syncing compaction output", &self.tmp, e))?;
        let path = self.dir.join(segment_file_name(self.id));
        fs::rename(&self.tmp, &path).map_err(|e| Error::io("renaming compaction output", &path, e))?;
        self.finished = true;
        sync_dir(&self.dir)?;
        Segment::open(&self.dir, self.id)
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn map_file(file: &File, len: u64, path: &Path) -> Result<Mmap> {
    let len_usize = usize::try_from(len).map_err(|_| Error::InvalidOptions("segment too large to map".into()))?;
    if len_usize == 0 {
        return Err(Error::io(
            "mapping segment",
            path,
            io::Error::new(io::ErrorKind::InvalidData, "empty segment file"),
        ));
    }
    // SAFETY: see the module's safety contract: the directory lock keeps other HADSS
    // processes out, and bytes below a segment's written length are never modified or
    // truncated while mapped.
    unsafe { MmapOptions::new().len(len_usize).map(file) }.map_err(|e| Error::io("mapping segment", path, e))
}

/// Maps ENOSPC to `Error::Full`, everything else to `Error::Io`.
pub fn classify_write_error(context: &'static str, path: &Path, e: io::Error, needed_bytes: u64) -> Error {
    if is_no_space(&e) {
        Error::Full {
            needed_bytes,
            capacity_bytes: 0,
        }
    } else {
        Error::io(context, path, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = SegmentHeader {
            id: 42,
            kind: SegmentKind::Compacted,
            replaces: vec![3, 7, 9],
        };
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        let mut bad = SegmentHeader {
            id: 1,
            kind: SegmentKind::Appended,
            replaces: vec![],
        }
        .encode();
        bad[100] ^= 1;
        assert!(SegmentHeader::decode(&bad).is_err());
    }

    #[test]
    fn file_names() {
        assert_eq!(parse_file_name(&segment_file_name(0xabc)), Some((0xabc, false)));
        assert_eq!(parse_file_name("seg-0000000a.tmp"), Some((10, true)));
        assert_eq!(parse_file_name("seg-xyz.dat"), None);
        assert_eq!(parse_file_name("index.ckpt"), None);
    }
}
