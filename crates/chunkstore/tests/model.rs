//! Property test: random put/delete/get/reopen/compact/checkpoint sequences against a
//! `HashMap` model. A failing case prints its operation list; proptest replays it.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use chunkstore::{ChunkId, Options, Store};
use common::{bytes, compressible};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put {
        seed: u64,
        len: usize,
        compressible: bool,
    },
    Delete(usize),
    Get(usize),
    Reopen,
    /// Reopen without the checkpoint, as after a crash that left it stale.
    ReopenWithoutCheckpoint,
    Close,
    Compact,
    Checkpoint,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..60, 0usize..40_000, any::<bool>()).prop_map(|(seed, len, compressible)| Op::Put { seed, len, compressible }),
        5 => (0usize..64).prop_map(Op::Delete),
        4 => (0usize..64).prop_map(Op::Get),
        1 => Just(Op::Reopen),
        1 => Just(Op::ReopenWithoutCheckpoint),
        1 => Just(Op::Close),
        2 => Just(Op::Compact),
        1 => Just(Op::Checkpoint),
    ]
}

fn options() -> Options {
    Options {
        segment_size_bytes: 160 * 1024,
        chunk_size_bytes_max: 64 * 1024,
        compaction_live_fraction_max: 0.7,
        ..Options::default()
    }
}

fn check_all(store: &Store, model: &HashMap<ChunkId, Vec<u8>>) {
    assert_eq!(store.len(), model.len() as u64);
    for (id, d) in model {
        let got = store.get(id).unwrap().unwrap_or_else(|| panic!("{id:?} missing"));
        assert_eq!(&got[..], &d[..]);
    }
    let mut ids: Vec<_> = store.ids().collect();
    ids.sort();
    let mut want: Vec<_> = model.keys().copied().collect();
    want.sort();
    assert_eq!(ids, want);
    // The Merkle root equals the root of a tree built from the model.
    let mut tree = chunkstore::MerkleTree::new(store.options().merkle_shape).unwrap();
    for id in model.keys() {
        tree.insert(&id.0, &id.0);
    }
    assert_eq!(store.merkle_root(), tree.root());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Some(Store::open(dir.path(), options()).unwrap());
        let mut model: HashMap<ChunkId, Vec<u8>> = HashMap::new();
        let mut known: Vec<ChunkId> = Vec::new();
        for op in ops {
            let s = store.as_ref().unwrap();
            match op {
                Op::Put { seed, len, compressible: c } => {
                    let data = if c { compressible(seed, len) } else { bytes(seed, len) };
                    let out = s.put(&data).unwrap();
                    prop_assert_eq!(out.written, !model.contains_key(&out.id));
                    if !known.contains(&out.id) {
                        known.push(out.id);
                    }
                    model.insert(out.id, data);
                }
                Op::Delete(i) => {
                    if let Some(id) = known.get(i % known.len().max(1)) {
                        let deleted = s.delete(id).unwrap();
                        prop_assert_eq!(deleted, model.remove(id).is_some());
                    }
                }
                Op::Get(i) => {
                    if let Some(id) = known.get(i % known.len().max(1)) {
                        let got = s.get(id).unwrap();
                        prop_assert_eq!(got.as_deref(), model.get(id).map(|v| &v[..]));
                    }
                }
                Op::Reopen => {
                    drop(store.take());
                    store = Some(Store::open(dir.path(), options()).unwrap());
                }
                Op::ReopenWithoutCheckpoint => {
                    drop(store.take());
                    let _ = std::fs::remove_file(dir.path().join("index.ckpt"));
                    store = Some(Store::open(dir.path(), options()).unwrap());
                }
                Op::Close => {
                    store.take().unwrap().close().unwrap();
                    store = Some(Store::open(dir.path(), options()).unwrap());
                }
                Op::Compact => {
                    s.compact().unwrap();
                }
                Op::Checkpoint => {
                    s.checkpoint().unwrap();
                }
            }
        }
        check_all(store.as_ref().unwrap(), &model);
        drop(store.take());
        let store = Store::open(dir.path(), options()).unwrap();
        check_all(&store, &model);
        // Compaction after everything leaves the same contents.
        store.compact().unwrap();
        check_all(&store, &model);
        let stats = store.stats();
        prop_assert_eq!(stats.corruptions, 0);
    }
}
