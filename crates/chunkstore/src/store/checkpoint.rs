//! Taking an index checkpoint and closing the store, so the next open scans only what came
//! after it. The file format lives in `crate::checkpoint`; this file makes the snapshot
//! consistent (writes paused, in-flight puts applied) before it is written.

use std::sync::MutexGuard;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{CHECKPOINT_QUIESCE_TIMEOUT_MS, Pos, Store, lock};
use crate::checkpoint::{Checkpoint, SegmentCoverage};
use crate::error::{Error, Result};
use crate::index::INDEX_SHARDS;

impl Store {
    /// Writes an index checkpoint so the next open scans only what came after it. Pauses
    /// puts for one fsync and a copy of the index (tens of milliseconds per million chunks).
    pub fn checkpoint(&self) -> Result<u64> {
        let compaction = lock(&self.compaction);
        self.checkpoint_locked(&compaction)
    }

    pub(super) fn checkpoint_locked(&self, _compaction: &MutexGuard<'_, ()>) -> Result<u64> {
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
}
