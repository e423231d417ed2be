//! Crash tests: cut the last segment at every byte offset of its tail, flip bits, and stop
//! compaction at every step; reopening must keep exactly the records that were fully written.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use chunkstore::{ChunkId, Failpoint, Options, Store};
use common::{bytes, segment_files, small_options};

/// Copies a store directory (segment files and checkpoint, not the lock).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn no_compression() -> Options {
    Options {
        compression: chunkstore::Compression::None,
        ..small_options()
    }
}

/// Writes `base` chunks, then `tail` small chunks whose record ends are returned (offsets in
/// the last segment file), and drops the store without a checkpoint.
/// Chunks written before the tail segment.
type Base = Vec<(ChunkId, Vec<u8>)>;
/// Tail chunks with the offset where each record's payload ends.
type Tail = Vec<(ChunkId, Vec<u8>, u64)>;

fn build(dir: &Path, base: usize, tail: usize) -> (Base, Tail) {
    let store = Store::open(dir, no_compression()).unwrap();
    let mut base_items = Vec::new();
    for i in 0..base {
        let d = bytes(i as u64, 1000 + i * 7);
        base_items.push((store.put(&d).unwrap().id, d));
    }
    drop(store);
    // Reopen so the tail is alone in a fresh segment: its layout is then easy to compute.
    let store = Store::open(dir, no_compression()).unwrap();
    let mut tail_items = Vec::new();
    let mut start = 4096u64;
    for i in 0..tail {
        let d = bytes(10_000 + i as u64, 40 + i * 13);
        // A record is fully written once its header and payload are; padding does not count.
        let end = start + 64 + d.len() as u64;
        start += chunkstore::record::record_len_bytes(d.len() as u32);
        tail_items.push((store.put(&d).unwrap().id, d, end));
    }
    drop(store);
    (base_items, tail_items)
}

#[test]
fn torn_tail_at_every_offset() {
    let src = tempfile::tempdir().unwrap();
    let (base, tail) = build(src.path(), 10, 6);
    let last = segment_files(src.path()).into_iter().last().unwrap();
    let last_name = last.file_name().unwrap().to_owned();
    let full_len = fs::metadata(&last).unwrap().len();
    let tail_end = tail.last().unwrap().2;
    assert!(full_len >= tail_end);
    let tail_start = 4096u64;
    let mut checked = 0;
    for cut in tail_start..=tail_end {
        for zero_fill in [false, true] {
            let work = tempfile::tempdir().unwrap();
            copy_dir(src.path(), work.path());
            let f = fs::OpenOptions::new()
                .write(true)
                .open(work.path().join(&last_name))
                .unwrap();
            f.set_len(cut).unwrap();
            if zero_fill {
                // Preallocated space after the cut reads as zeros.
                f.set_len(full_len).unwrap();
            }
            drop(f);
            let store = Store::open(work.path(), no_compression()).unwrap();
            for (id, d) in &base {
                assert_eq!(
                    &store.get(id).unwrap().unwrap()[..],
                    &d[..],
                    "cut {cut}: base chunk lost"
                );
            }
            let mut expected = base.len() as u64;
            for (id, d, end) in &tail {
                let got = store.get(id).unwrap();
                if *end <= cut {
                    assert_eq!(got.as_deref(), Some(&d[..]), "cut {cut}: fully written record lost");
                    expected += 1;
                } else {
                    assert!(got.is_none(), "cut {cut}: partially written record served");
                }
            }
            assert_eq!(store.len(), expected, "cut {cut}");
            assert_eq!(store.stats().corruptions, 0, "cut {cut}: a torn tail is not corruption");
            // The store keeps working after recovery.
            let more = bytes(99_999, 300);
            let id = store.put(&more).unwrap().id;
            drop(store);
            let store = Store::open(work.path(), no_compression()).unwrap();
            assert_eq!(&store.get(&id).unwrap().unwrap()[..], &more[..]);
            assert_eq!(store.len(), expected + 1);
            checked += 1;
        }
    }
    assert!(checked > 1000, "only {checked} cuts");
}

#[test]
fn bit_flips_lose_only_the_hit_record() {
    let src = tempfile::tempdir().unwrap();
    let (base, tail) = build(src.path(), 3, 6);
    let last = segment_files(src.path()).into_iter().last().unwrap();
    let last_name = last.file_name().unwrap().to_owned();
    let tail_end = tail.last().unwrap().2;
    let starts: Vec<u64> = std::iter::once(4096)
        .chain(tail.iter().map(|t| chunkstore::record::align_up(t.2)))
        .collect();
    // Flip one bit at every byte of the tail region (a different bit each time).
    for at in 4096..tail_end {
        let work = tempfile::tempdir().unwrap();
        copy_dir(src.path(), work.path());
        let p = work.path().join(&last_name);
        let mut raw = fs::read(&p).unwrap();
        raw[at as usize] ^= 1 << (at % 8);
        fs::write(&p, &raw).unwrap();
        let hit = starts.windows(2).position(|w| w[0] <= at && at < w[1]).unwrap();
        let store = Store::open(work.path(), no_compression()).unwrap();
        for (id, d) in &base {
            assert_eq!(&store.get(id).unwrap().unwrap()[..], &d[..]);
        }
        for (i, (id, d, end)) in tail.iter().enumerate() {
            let got = store.get(id).unwrap();
            let padding = at >= *end && at < starts[i + 1];
            if i == hit && !padding {
                assert!(got.is_none(), "flip at {at}: damaged record {i} served");
            } else {
                assert_eq!(got.as_deref(), Some(&d[..]), "flip at {at}: intact record {i} lost");
            }
        }
    }
}

#[test]
fn compaction_interrupted_at_every_step() {
    for fp in [
        Failpoint::CompactionBeforeRename,
        Failpoint::CompactionAfterRename,
        Failpoint::CompactionAfterFirstDelete,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut model: HashMap<ChunkId, Vec<u8>> = HashMap::new();
        let store = Store::open(dir.path(), small_options()).unwrap();
        let mut ids = Vec::new();
        for i in 0..150u64 {
            let d = bytes(i, 6_000);
            let id = store.put(&d).unwrap().id;
            ids.push(id);
            model.insert(id, d);
        }
        for (i, id) in ids.iter().enumerate() {
            if i % 3 != 0 {
                store.delete(id).unwrap();
                model.remove(id);
            }
        }
        drop(store);
        let opts = Options {
            failpoint: Some(fp),
            ..small_options()
        };
        let store = Store::open(dir.path(), opts).unwrap();
        assert!(store.compact().is_err(), "{fp:?} should stop compaction");
        drop(store); // "crash"
        let store = Store::open(dir.path(), small_options()).unwrap();
        assert_eq!(store.len(), model.len() as u64, "{fp:?}");
        for (id, d) in &model {
            assert_eq!(&store.get(id).unwrap().unwrap()[..], &d[..], "{fp:?}");
        }
        for id in &ids {
            assert_eq!(
                store.contains(id),
                model.contains_key(id),
                "{fp:?}: deleted chunk resurrected"
            );
        }
        assert_eq!(store.stats().corruptions, 0, "{fp:?}");
        // A later compaction finishes the job.
        store.compact().unwrap();
        drop(store);
        let store = Store::open(dir.path(), small_options()).unwrap();
        assert_eq!(store.len(), model.len() as u64, "{fp:?}");
        for id in &ids {
            assert_eq!(store.contains(id), model.contains_key(id), "{fp:?}");
        }
    }
}
