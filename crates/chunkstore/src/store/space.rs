//! Disk space and statistics: the ballast file that lets deletes and compaction run on a full
//! disk, the segment bytes the capacity is checked against, and the counters snapshot.

use std::fs::{self, OpenOptions};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{RESERVE_FILE, SPACE_RESERVE_BYTES, Stats, Store};

impl Store {
    /// Creates the ballast file if it is missing (best effort: a full disk just leaves it out).
    pub(super) fn ensure_space_reserve(&self) {
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
    pub(super) fn release_space_reserve(&self) -> bool {
        let released = fs::remove_file(self.dir.join(RESERVE_FILE)).is_ok();
        if released {
            tracing::warn!(dir = %self.dir.display(), "file system full: released the space reserve");
        }
        released
    }

    pub(super) fn disk_bytes(&self) -> u64 {
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
}
