//! The public API on one store: puts, gets, deletes, reopen, compaction, checkpoints.
#![allow(clippy::unwrap_used)]

mod common;

use chunkstore::{ChunkId, Error, Options, Store};
use common::{bytes, compressible, small_options};

#[test]
fn put_get_delete_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_options()).unwrap();
    assert!(store.is_empty());
    let a = bytes(1, 10_000);
    let put = store.put(&a).unwrap();
    assert!(put.written);
    assert_eq!(put.id, ChunkId::of(&a));
    assert!(store.contains(&put.id));
    let got = store.get(&put.id).unwrap().unwrap();
    assert_eq!(&got[..], &a[..]);
    assert!(got.is_mapped(), "uncompressible chunks are served from the map");
    // Idempotent.
    let again = store.put(&a).unwrap();
    assert!(!again.written);
    assert_eq!(store.stats().dedup_puts, 1);
    // Delete.
    assert!(store.delete(&put.id).unwrap());
    assert!(!store.delete(&put.id).unwrap());
    assert!(store.get(&put.id).unwrap().is_none());
    let b = bytes(2, 500);
    let pb = store.put(&b).unwrap();
    drop(store);

    let store = Store::open(dir.path(), small_options()).unwrap();
    assert!(!store.contains(&put.id), "a deleted chunk stays deleted after reopen");
    assert_eq!(&store.get(&pb.id).unwrap().unwrap()[..], &b[..]);
    assert_eq!(store.ids().collect::<Vec<_>>(), vec![pb.id]);
    // Re-put after delete works and survives reopen.
    store.put(&a).unwrap();
    drop(store);
    let store = Store::open(dir.path(), small_options()).unwrap();
    assert_eq!(&store.get(&put.id).unwrap().unwrap()[..], &a[..]);
    assert_eq!(store.len(), 2);
}

#[test]
fn compression_only_when_it_pays() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_options()).unwrap();
    let text = compressible(3, 60_000);
    let id = store.put(&text).unwrap().id;
    let got = store.get(&id).unwrap().unwrap();
    assert!(!got.is_mapped(), "compressible chunk stored compressed");
    assert_eq!(&got[..], &text[..]);
    let stats = store.stats();
    assert!(
        stats.live_record_bytes < 10_000,
        "stored {} bytes",
        stats.live_record_bytes
    );
    let random = bytes(4, 60_000);
    let id = store.put(&random).unwrap().id;
    assert!(store.get(&id).unwrap().unwrap().is_mapped());
}

#[test]
fn limits_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_options()).unwrap();
    let big = vec![0u8; 64 * 1024 + 1];
    assert!(matches!(store.put(&big), Err(Error::TooLarge { .. })));
    let claimed = ChunkId::of(b"something else");
    assert!(matches!(
        store.put_expecting(claimed, b"data"),
        Err(Error::IdMismatch { .. })
    ));
    assert!(store.is_empty());
    let ok = store.put_expecting(ChunkId::of(b"data"), b"data").unwrap();
    assert!(ok.written);
    assert!(matches!(
        Store::open(dir.path(), small_options()),
        Err(Error::Locked(_))
    ));
    let bad = Options {
        segment_size_bytes: 1000,
        ..Options::default()
    };
    assert!(matches!(
        Store::open(dir.path().join("x"), bad),
        Err(Error::InvalidOptions(_))
    ));
    // The empty chunk is a chunk too.
    let empty = store.put(b"").unwrap();
    assert_eq!(store.get(&empty.id).unwrap().unwrap().len(), 0);
}

#[test]
fn compaction_reclaims_space_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_options()).unwrap();
    let mut kept = Vec::new();
    let mut ids = Vec::new();
    for i in 0..200u64 {
        let data = bytes(i, 8_000);
        let id = store.put(&data).unwrap().id;
        ids.push(id);
        if i % 5 == 0 {
            kept.push((id, data));
        }
    }
    for (i, id) in ids.iter().enumerate() {
        if i % 5 != 0 {
            assert!(store.delete(id).unwrap());
        }
    }
    let before = store.stats();
    let report = store.compact().unwrap();
    assert!(report.inputs.len() >= 2, "{report:?}");
    let after = store.stats();
    assert!(after.disk_bytes < before.disk_bytes, "{before:?} -> {after:?}");
    for (id, data) in &kept {
        assert_eq!(&store.get(id).unwrap().unwrap()[..], &data[..]);
    }
    drop(store);
    let store = Store::open(dir.path(), small_options()).unwrap();
    assert!(
        store.recovery_report().used_checkpoint,
        "compaction leaves a fresh checkpoint"
    );
    assert_eq!(store.len(), kept.len() as u64);
    for (id, data) in &kept {
        assert_eq!(&store.get(id).unwrap().unwrap()[..], &data[..]);
    }
    for (i, id) in ids.iter().enumerate() {
        if i % 5 != 0 {
            assert!(!store.contains(id), "deleted chunk came back after compaction + reopen");
        }
    }
}

#[test]
fn checkpoint_then_more_writes_then_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_options()).unwrap();
    let mut model = std::collections::HashMap::new();
    for i in 0..50u64 {
        let d = bytes(100 + i, 3_000);
        model.insert(store.put(&d).unwrap().id, d);
    }
    store.checkpoint().unwrap();
    for i in 50..100u64 {
        let d = bytes(100 + i, 3_000);
        model.insert(store.put(&d).unwrap().id, d);
    }
    let victim = *model.keys().next().unwrap();
    store.delete(&victim).unwrap();
    model.remove(&victim);
    drop(store); // no close: the tail after the checkpoint is replayed
    let store = Store::open(dir.path(), small_options()).unwrap();
    let r = store.recovery_report();
    assert!(r.used_checkpoint);
    assert!(r.records_scanned >= 51, "{r:?}");
    assert_eq!(store.len(), model.len() as u64);
    for (id, d) in &model {
        assert_eq!(&store.get(id).unwrap().unwrap()[..], &d[..]);
    }
    store.close().unwrap();
    let store = Store::open(dir.path(), small_options()).unwrap();
    assert_eq!(store.recovery_report().records_scanned, 0, "clean close scans nothing");
    assert_eq!(store.len(), model.len() as u64);
}

#[test]
fn merkle_summary_tracks_contents() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let a = Store::open(a_dir.path(), small_options()).unwrap();
    let b = Store::open(b_dir.path(), small_options()).unwrap();
    for i in 0..300u64 {
        let d = bytes(i, 100);
        a.put(&d).unwrap();
        if i % 100 != 7 {
            b.put(&d).unwrap();
        }
    }
    assert_ne!(a.merkle_root(), b.merkle_root());
    let leaves = a.merkle_snapshot().differing_leaves(&b.merkle_snapshot());
    let mut missing = Vec::new();
    for leaf in leaves {
        let ours = a.ids_in_leaf(leaf);
        let theirs = b.ids_in_leaf(leaf);
        missing.extend(ours.into_iter().filter(|id| !theirs.contains(id)));
    }
    missing.sort();
    let mut want: Vec<ChunkId> = [7u64, 107, 207].iter().map(|&i| ChunkId::of(&bytes(i, 100))).collect();
    want.sort();
    assert_eq!(missing, want);
    for id in &missing {
        let d = a.get(id).unwrap().unwrap();
        b.put(&d).unwrap();
    }
    assert_eq!(a.merkle_root(), b.merkle_root());
    // Survives reopen.
    let root = a.merkle_root();
    drop(a);
    let a = Store::open(a_dir.path(), small_options()).unwrap();
    assert_eq!(a.merkle_root(), root);
}

#[test]
fn corruption_is_never_served_and_scrub_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_options()).unwrap();
    let mut items = Vec::new();
    for i in 0..20u64 {
        let d = bytes(500 + i, 4_000);
        items.push((store.put(&d).unwrap().id, d));
    }
    drop(store);
    // Flip a byte inside the payload of item 5 on disk.
    let seg = &common::segment_files(dir.path())[0];
    let mut raw = std::fs::read(seg).unwrap();
    let needle = &items[5].1[100..132];
    let at = raw.windows(needle.len()).position(|w| w == needle).unwrap();
    raw[at] ^= 0x40;
    std::fs::write(seg, &raw).unwrap();

    let store = Store::open(dir.path(), small_options()).unwrap();
    assert_eq!(store.recovery_report().corrupt_records, 1);
    assert!(!store.contains(&items[5].0), "the bad copy is set aside at open");
    assert!(store.get(&items[5].0).unwrap().is_none());
    for (i, (id, d)) in items.iter().enumerate() {
        if i != 5 {
            assert_eq!(&store.get(id).unwrap().unwrap()[..], &d[..]);
        }
    }
    // A replica re-puts it: repaired.
    store.put(&items[5].1).unwrap();
    assert_eq!(&store.get(&items[5].0).unwrap().unwrap()[..], &items[5].1[..]);
    let report = store.scrub(0, None, |_| {});
    assert!(report.corrupt.is_empty());
    assert_eq!(report.chunks_checked, 20);
}

#[test]
fn scrub_detects_rot_after_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_options()).unwrap();
    let d = bytes(9, 4_000);
    let id = store.put(&d).unwrap().id;
    let other = store.put(&bytes(10, 4_000)).unwrap().id;
    // Rot under a running store (the file is shared with the mapping).
    let seg = common::segment_files(dir.path()).into_iter().last().unwrap();
    let mut raw = std::fs::read(&seg).unwrap();
    let at = raw.windows(32).position(|w| w == &d[1000..1032]).unwrap();
    raw[at] ^= 1;
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .write_all_at(&raw[at..at + 1], at as u64)
        .unwrap();
    let report = store.scrub(1 << 30, None, |_| {});
    assert_eq!(report.corrupt, vec![id]);
    assert!(matches!(store.get(&id), Ok(None)));
    assert!(store.get(&other).unwrap().is_some());
    assert_eq!(store.stats().corruptions, 1);
}

#[test]
fn put_many_is_one_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_options()).unwrap();
    let items: Vec<Vec<u8>> = (0..500u64)
        .map(|i| bytes(70_000 + i, 100 + (i as usize % 300)))
        .collect();
    let mut refs: Vec<&[u8]> = items.iter().map(|v| &v[..]).collect();
    refs.push(&items[0]); // a duplicate inside the batch is written once
    let before = store.stats().group_commits;
    let out = store.put_many(&refs).unwrap();
    assert_eq!(out.len(), 501);
    assert!(out[..500].iter().all(|o| o.written));
    assert!(!out[500].written);
    assert!(
        store.stats().group_commits - before <= 2,
        "segment rolls aside, one fsync for the batch"
    );
    drop(store);
    let store = Store::open(dir.path(), small_options()).unwrap();
    assert_eq!(store.len(), 500);
    for v in &items {
        assert_eq!(&store.get(&ChunkId::of(v)).unwrap().unwrap()[..], &v[..]);
    }
}

#[test]
fn tombstone_outlives_compaction_of_its_own_segment() {
    // The put of X stays in a mostly-live segment; its tombstone lands in a mostly-dead one
    // that compaction rewrites alone. Dropping the tombstone there would resurrect X.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_options()).unwrap();
    let x = bytes(424_242, 1_000);
    let x_id = store.put(&x).unwrap().id;
    for i in 0..5u64 {
        store.put(&bytes(1_000 + i, 40_000)).unwrap(); // keeps segment 1 live
    }
    let doomed: Vec<ChunkId> = (0..4u64)
        .map(|i| store.put(&bytes(2_000 + i, 40_000)).unwrap().id)
        .collect();
    for id in &doomed {
        assert!(store.delete(id).unwrap());
    }
    assert!(store.delete(&x_id).unwrap());
    for i in 0..6u64 {
        store.put(&bytes(3_000 + i, 40_000)).unwrap(); // moves on to later segments
    }
    let report = store.compact().unwrap();
    assert!(!report.inputs.is_empty(), "{report:?}");
    assert!(!report.inputs.contains(&1), "segment 1 is mostly live: {report:?}");
    assert!(!store.contains(&x_id));
    drop(store);
    // Without the checkpoint (as after a crash right after the inputs were deleted), the
    // segments alone must say that X is deleted.
    std::fs::remove_file(dir.path().join("index.ckpt")).unwrap();
    let store = Store::open(dir.path(), small_options()).unwrap();
    assert!(!store.recovery_report().used_checkpoint);
    assert!(
        !store.contains(&x_id),
        "deleted chunk resurrected after its tombstone's segment was compacted"
    );
    for id in &doomed {
        assert!(!store.contains(id));
    }
}

#[test]
fn emptying_the_store_returns_the_active_segment_too() {
    // Everything written fits in the active segment; once it is mostly dead, a compaction
    // seals it and reclaims it like any other.
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_size_bytes: 8 * 1024 * 1024,
        chunk_size_bytes_max: 1024 * 1024,
        ..Options::default()
    };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    let empty = store.stats().disk_bytes;
    let ids: Vec<ChunkId> = (0..40u64)
        .map(|i| store.put(&bytes(i, 64 * 1024)).unwrap().id)
        .collect();
    let keep = bytes(1000, 64 * 1024);
    let kept = store.put(&keep).unwrap().id;
    let full = store.stats();
    assert_eq!(full.segments, 1, "one active segment holds everything: {full:?}");
    for id in &ids {
        assert!(store.delete(id).unwrap());
    }
    let report = store.compact().unwrap();
    assert!(
        !report.inputs.is_empty(),
        "the sealed active segment is compacted: {report:?}"
    );
    let after = store.stats();
    assert!(
        after.disk_bytes < empty + (full.disk_bytes - empty) / 10,
        "space back: empty {empty}, full {}, after {}",
        full.disk_bytes,
        after.disk_bytes
    );
    assert_eq!(&store.get(&kept).unwrap().unwrap()[..], &keep[..]);
    drop(store);
    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(&store.get(&kept).unwrap().unwrap()[..], &keep[..]);
    for id in &ids {
        assert!(!store.contains(id), "a deleted chunk came back");
    }
}
