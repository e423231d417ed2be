//! Scrubbing: a rate-limited walk that re-verifies every chunk, so corruption in data nobody
//! reads is still found and set aside while replicas can repair it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{ScrubReport, Store};
use crate::ChunkId;
use crate::index::{EntryKind, INDEX_SHARDS, Loc};

impl Store {
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
