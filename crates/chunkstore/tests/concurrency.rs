//! Several writers, readers, deleters and a compactor at once; then everything checks out,
//! before and after reopen.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use chunkstore::{ChunkId, Store};
use common::{bytes, small_options};

#[test]
fn writers_readers_and_compactor() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), small_options()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = 300;

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            thread::spawn(move || {
                let mut kept = HashMap::new();
                for i in 0..PER_WRITER {
                    let seed = w * 1_000_000 + i;
                    let d = bytes(seed, 200 + (seed as usize * 37) % 9_000);
                    let id = store.put(&d).unwrap().id;
                    // Every writer sees its own write at once (read-after-write).
                    assert_eq!(&store.get(&id).unwrap().unwrap()[..], &d[..]);
                    if i % 3 == 0 {
                        assert!(store.delete(&id).unwrap());
                    } else {
                        kept.insert(id, d);
                    }
                }
                kept
            })
        })
        .collect();
    // Readers re-read a shared set of chunks written up front.
    let shared: Vec<(ChunkId, Vec<u8>)> = (0..50u64)
        .map(|i| {
            let d = bytes(9_000_000 + i, 3_000);
            (store.put(&d).unwrap().id, d)
        })
        .collect();
    let shared = Arc::new(shared);
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let store = store.clone();
            let shared = shared.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for (id, d) in shared.iter() {
                        assert_eq!(&store.get(id).unwrap().unwrap()[..], &d[..]);
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    let compactor = {
        let store = store.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                store.compact().unwrap();
                runs += 1;
                thread::sleep(std::time::Duration::from_millis(5));
            }
            runs
        })
    };
    let mut model: HashMap<ChunkId, Vec<u8>> = HashMap::new();
    for w in writers {
        model.extend(w.join().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    compactor.join().unwrap();
    model.extend(shared.iter().cloned());

    let check = |store: &Store| {
        assert_eq!(store.len(), model.len() as u64);
        for (id, d) in &model {
            assert_eq!(&store.get(id).unwrap().unwrap()[..], &d[..]);
        }
        assert_eq!(store.stats().corruptions, 0);
    };
    check(&store);
    let stats = store.stats();
    assert!(
        stats.group_commits < stats.puts + stats.deletes,
        "concurrent writes share fsyncs: {stats:?}"
    );
    store.compact().unwrap();
    check(&store);
    drop(store);
    let store = Store::open(dir.path(), small_options()).unwrap();
    check(&store);
}
