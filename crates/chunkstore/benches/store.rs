//! Chunk store benchmark, each figure beside the physical limit measured in the same run:
//!
//! - put throughput (fsync'd, group commit) for 4 KiB, 64 KiB, 1 MiB and 4 MiB chunks, against
//!   writing the same bytes to a plain file and fsyncing it;
//! - get throughput of 4 KiB and 1 MiB chunks from the page cache on one thread, against a
//!   plain memcpy of the same sizes;
//! - open time of a store holding 1 million chunks, with and without a checkpoint.
//!
//! Run: `cargo bench -p chunkstore --bench store` (data under `target/bench-tmp`, or
//! `HADSS_BENCH_DIR`). `HADSS_BENCH_SCALE=0.1` shrinks every data size for a quick look.
//! Prints a Markdown table for `docs/BENCHMARKS.md`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use chunkstore::{ChunkId, Options, Store};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn scale() -> f64 {
    std::env::var("HADSS_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// Store options: the defaults, or `HADSS_BENCH_COMPRESSION=none` to switch compression off.
fn options() -> Options {
    let mut o = Options::default();
    if std::env::var("HADSS_BENCH_COMPRESSION").is_ok_and(|v| v == "none") {
        o.compression = chunkstore::Compression::None;
    }
    o
}

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("HADSS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bench-tmp")));
    let dir = base.join(format!("run-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A pool of incompressible bytes; chunk `n` is a slice of it with `n` written in front, so
/// every chunk is distinct without generating fresh random data in the timed loop.
fn pool(len: usize) -> Vec<u8> {
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Repetitions of each put measurement (medians are reported).
const REPETITIONS: usize = 3;

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn plain_file_write(dir: &Path, chunk: usize, count: usize, data: &[u8]) -> Duration {
    let path = dir.join("plain.bin");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let mut buf = data[..chunk].to_vec();
    let start = Instant::now();
    for n in 0..count {
        buf[..8].copy_from_slice(&(n as u64).to_le_bytes());
        f.write_all(&buf).unwrap();
    }
    f.sync_data().unwrap();
    let d = start.elapsed();
    drop(f);
    fs::remove_file(&path).unwrap();
    d
}

fn store_put(dir: &Path, chunk: usize, count: usize, threads: usize, data: &Arc<Vec<u8>>) -> (Duration, u64) {
    let store_dir = dir.join(format!("put-{chunk}"));
    let store = Arc::new(Store::open(&store_dir, options()).unwrap());
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let store = store.clone();
            let next = next.clone();
            let data = data.clone();
            thread::spawn(move || {
                let mut buf = data[..chunk].to_vec();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count as u64 {
                        break;
                    }
                    buf[..8].copy_from_slice(&n.to_le_bytes());
                    assert!(store.put(&buf).unwrap().written);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let d = start.elapsed();
    let commits = store.stats().group_commits;
    drop(store);
    fs::remove_dir_all(&store_dir).unwrap();
    (d, commits)
}

fn get_bench(dir: &Path, chunk: usize, count: usize, data: &[u8]) -> (f64, f64) {
    let store_dir = dir.join(format!("get-{chunk}"));
    let store = Store::open(&store_dir, options()).unwrap();
    let mut ids = Vec::with_capacity(count);
    let mut buf = data[..chunk].to_vec();
    let batch = (4 * MIB / chunk).max(1);
    let mut pending: Vec<Vec<u8>> = Vec::new();
    for n in 0..count {
        buf[..8].copy_from_slice(&(n as u64).to_le_bytes());
        ids.push(ChunkId::of(&buf));
        pending.push(buf.clone());
        if pending.len() == batch || n + 1 == count {
            let refs: Vec<&[u8]> = pending.iter().map(|v| &v[..]).collect();
            store.put_many(&refs).unwrap();
            pending.clear();
        }
    }
    // Warm the page cache, then read in a scrambled order on one thread.
    let mut checksum = 0u64;
    for id in &ids {
        checksum += store.get(id).unwrap().unwrap()[0] as u64;
    }
    let order: Vec<usize> = (0..count).map(|i| (i * 7919) % count).collect();
    let budget = Duration::from_secs(2);
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < budget {
        for &i in order.iter().take(10_000) {
            let c = store.get(&ids[i]).unwrap().unwrap();
            checksum = checksum.wrapping_add(c[c.len() - 1] as u64);
            ops += 1;
        }
    }
    let get_ops = ops as f64 / start.elapsed().as_secs_f64();

    // memcpy of the same sizes from a pool as large as the stored data.
    let src = pool(chunk * count.min(512 * MIB / chunk));
    let slots = src.len() / chunk;
    let mut dst = vec![0u8; chunk];
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < budget {
        for k in 0..10_000usize {
            let at = ((k * 7919) % slots) * chunk;
            dst.copy_from_slice(&src[at..at + chunk]);
            checksum = checksum.wrapping_add(dst[chunk - 1] as u64);
            ops += 1;
        }
    }
    let memcpy_ops = ops as f64 / start.elapsed().as_secs_f64();
    std::hint::black_box(checksum);
    drop(store);
    fs::remove_dir_all(&store_dir).unwrap();
    (get_ops, memcpy_ops)
}

fn reopen_bench(dir: &Path, count: usize) -> (Duration, Duration, Duration, u64) {
    let store_dir = dir.join("reopen");
    let store = Store::open(&store_dir, options()).unwrap();
    let data = pool(256);
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(4096);
    let start = Instant::now();
    for n in 0..count {
        let mut b = data[..128].to_vec();
        b[..8].copy_from_slice(&(n as u64).to_le_bytes());
        batch.push(b);
        if batch.len() == 4096 || n + 1 == count {
            let refs: Vec<&[u8]> = batch.iter().map(|v| &v[..]).collect();
            store.put_many(&refs).unwrap();
            batch.clear();
        }
    }
    eprintln!("  wrote {count} chunks in {:.1} s", start.elapsed().as_secs_f64());
    let disk = store.stats().disk_bytes;
    store.close().unwrap();
    let t = Instant::now();
    let store = Store::open(&store_dir, options()).unwrap();
    let with_ckpt = t.elapsed();
    assert_eq!(store.len(), count as u64);
    assert!(store.recovery_report().used_checkpoint);
    drop(store);
    // Dropped without close: the next open replays the segment written since the checkpoint.
    let t = Instant::now();
    let store = Store::open(&store_dir, options()).unwrap();
    let after_crash = t.elapsed();
    drop(store);
    fs::remove_file(store_dir.join("index.ckpt")).unwrap();
    let t = Instant::now();
    let store = Store::open(&store_dir, options()).unwrap();
    let full_scan = t.elapsed();
    assert_eq!(store.len(), count as u64);
    drop(store);
    fs::remove_dir_all(&store_dir).unwrap();
    (with_ckpt, after_crash, full_scan, disk)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there are no criterion-style tests.
    }
    let dir = bench_dir();
    let s = scale();
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "chunkstore benchmark: {cores} cores, data in {}, scale {s}, compression {:?}",
        dir.display(),
        options().compression
    );
    println!();
    println!(
        "| put (median of {REPETITIONS}) | chunks | threads | store MB/s | plain file MB/s | store/plain | chunks/s | fsyncs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let data = Arc::new(pool(8 * MIB));
    for (chunk, total, threads) in [
        (4 * KIB, 128 * MIB, 32),
        (4 * KIB, 128 * MIB, 128),
        (64 * KIB, 512 * MIB, 32),
        (64 * KIB, 512 * MIB, 128),
        (MIB, 512 * MIB, 16),
        (4 * MIB, 512 * MIB, 8),
    ] {
        let count = ((total as f64 * s) as usize / chunk).max(16);
        let bytes = (count * chunk) as u64;
        // The disk's speed drifts between runs: alternate the limit and the store three times
        // and report medians, so both see the same conditions.
        let mut plain = Vec::new();
        let mut put = Vec::new();
        let mut commits = 0;
        for _ in 0..REPETITIONS {
            plain.push(plain_file_write(&dir, chunk, count, &data));
            let (d, c) = store_put(&dir, chunk, count, threads, &data);
            put.push(d);
            commits = c;
        }
        let (plain, put) = (median(&mut plain), median(&mut put));
        println!(
            "| {} KiB | {count} | {threads} | {:.0} | {:.0} | {:.0}% | {:.0} | {commits} |",
            chunk / KIB,
            mb_s(bytes, put),
            mb_s(bytes, plain),
            100.0 * plain.as_secs_f64() / put.as_secs_f64(),
            count as f64 / put.as_secs_f64(),
        );
    }
    println!();
    println!("| get (1 thread, page cache) | chunks | store gets/s | store GB/s | memcpy ops/s | memcpy GB/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (chunk, total) in [(4 * KIB, 400 * MIB), (MIB, 512 * MIB)] {
        let count = ((total as f64 * s) as usize / chunk).max(16);
        let (get, memcpy) = get_bench(&dir, chunk, count, &data);
        println!(
            "| {} KiB | {count} | {get:.0} | {:.2} | {memcpy:.0} | {:.2} |",
            chunk / KIB,
            get * chunk as f64 / 1e9,
            memcpy * chunk as f64 / 1e9,
        );
    }
    println!();
    let count = ((1_000_000f64 * s) as usize).max(1000);
    let (ckpt, crash, scan, disk) = reopen_bench(&dir, count);
    println!(
        "| open with {count} chunks of 128 B ({:.0} MB of segments) | seconds |",
        disk as f64 / 1e6
    );
    println!("|---|---:|");
    println!("| after close (checkpoint) | {:.3} |", ckpt.as_secs_f64());
    println!(
        "| after a crash (checkpoint + replay of the active segment) | {:.3} |",
        crash.as_secs_f64()
    );
    println!(
        "| no checkpoint (full scan, page cache warm) | {:.3} |",
        scan.as_secs_f64()
    );
    let _ = fs::remove_dir_all(&dir);
}
