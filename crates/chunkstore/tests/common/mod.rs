//! Helpers shared by the chunk store's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use chunkstore::{Compression, Options};

/// Small segments so tests exercise roll-over and compaction with little data.
pub fn small_options() -> Options {
    Options {
        segment_size_bytes: 256 * 1024,
        chunk_size_bytes_max: 64 * 1024,
        compression: Compression::Zstd { level: 1 },
        ..Options::default()
    }
}

/// Deterministic pseudo-random bytes (splitmix64), so failures replay.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Compressible bytes: a short pattern repeated.
pub fn compressible(seed: u64, len: usize) -> Vec<u8> {
    let pattern = bytes(seed, 37);
    pattern.iter().copied().cycle().take(len).collect()
}

/// The segment files of a store directory, sorted by id.
pub fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    v.sort();
    v
}
