//! Random bytes fed to every parser of on-disk data never panic, and a store opened on
//! garbage files recovers without serving wrong bytes.
#![allow(clippy::unwrap_used)]

use chunkstore::record::{RecordHeader, Scanner};
use chunkstore::{ChunkId, Options, Store};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn record_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = RecordHeader::decode(&data);
        for _ in Scanner::new(&data, 0, true) {}
        let _ = chunkstore::decode_checkpoint_for_fuzzing(&data);
    }

    #[test]
    fn valid_header_with_random_fields(
        kind in 0u8..4, flags in any::<u16>(), seq in any::<u64>(),
        stored in any::<u32>(), raw in any::<u32>(), tail in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        // A header with a correct checksum but arbitrary fields: the parser and scanner must
        // reject or bound it, never index out of range.
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(b"HCR1");
        b[4] = 1;
        b[5] = kind;
        b[6..8].copy_from_slice(&flags.to_le_bytes());
        b[8..16].copy_from_slice(&seq.to_le_bytes());
        b[48..52].copy_from_slice(&stored.to_le_bytes());
        b[52..56].copy_from_slice(&raw.to_le_bytes());
        let crc = crc32c_of(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        let mut data = b.to_vec();
        data.extend_from_slice(&tail);
        let _ = RecordHeader::decode(&data);
        for _ in Scanner::new(&data, 0, true) {}
    }
}

fn crc32c_of(b: &[u8]) -> u32 {
    // The same CRC32C the format uses, computed bitwise so the test does not share code
    // with the implementation.
    let mut crc = !0u32;
    for &byte in b {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn open_on_garbage_segments(garbage in proptest::collection::vec(any::<u8>(), 0..20_000), keep_header in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let options = Options { segment_size_bytes: 256 * 1024, chunk_size_bytes_max: 64 * 1024, ..Options::default() };
        let good = b"a chunk that must survive".to_vec();
        {
            let store = Store::open(dir.path(), options.clone()).unwrap();
            store.put(&good).unwrap();
        }
        // A second segment full of garbage (optionally behind a valid segment header).
        let mut file = if keep_header {
            let first = std::fs::read_dir(dir.path()).unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|e| e == "dat"))
                .unwrap();
            std::fs::read(first).unwrap()[..4096].to_vec()
        } else {
            Vec::new()
        };
        file.extend_from_slice(&garbage);
        std::fs::write(dir.path().join("seg-00000100.dat"), &file).unwrap();
        std::fs::write(dir.path().join("index.ckpt"), &garbage).unwrap();
        match Store::open(dir.path(), options) {
            Ok(store) => {
                prop_assert_eq!(&store.get(&ChunkId::of(&good)).unwrap().unwrap()[..], &good[..]);
                for id in store.ids().collect::<Vec<_>>() {
                    if let Ok(Some(c)) = store.get(&id) {
                        prop_assert_eq!(ChunkId::of(&c), id, "served bytes that do not match their id");
                    }
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
