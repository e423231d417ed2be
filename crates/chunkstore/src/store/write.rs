//! The write path: puts, appends, segment roll-over and group commit, and applying durable
//! records to the index. Kept together because durability rests on their order: a record is
//! written, fsynced by one leader for all waiters, and only then made visible.

use std::borrow::Cow;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{
    COMPRESSION_SAMPLE_BYTES, COMPRESSION_SIZE_BYTES_MIN, Compression, NewRecord, PendingGuard, Pos, PutOutcome,
    SEGMENT_ID_GONE, Store, TOMBSTONE_RESERVE_BYTES, Writer, lock,
};
use crate::ChunkId;
use crate::error::{Error, Result};
use crate::index::{Entry, EntryKind, Loc};
use crate::record::{FLAG_ZSTD, RECORD_HEADER_SIZE_BYTES, RecordHeader, RecordKind, payload_crc, record_len_bytes};
use crate::segment::{SEGMENT_HEADER_SIZE_BYTES, Segment, SegmentHeader, SegmentKind};

impl Store {
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
    pub(super) fn append(&self, header: RecordHeader, payload: &[u8]) -> Result<(NewRecord, Pos, Arc<Segment>)> {
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
    pub(super) fn roll(&self, w: &mut Writer, is_put: bool) -> Result<()> {
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

    pub(super) fn poison(&self, context: &str, e: &std::io::Error) {
        tracing::error!(context, error = %e, "fsync failed; refusing writes until the store is reopened");
        self.poisoned.store(true, Ordering::Release);
        self.synced.notify_all();
    }

    /// Waits until everything up to `target` is on stable storage, leading a group commit
    /// if no fsync is in progress.
    pub(super) fn wait_durable(&self, target: Pos) -> Result<()> {
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
    pub(super) fn apply(&self, id: ChunkId, rec: NewRecord, recovering: bool) {
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
