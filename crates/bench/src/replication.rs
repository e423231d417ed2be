//! `hadss-bench replication`: replicated chunk put/get throughput of
//! three in-process storage nodes on loopback (N=3, W=2, every copy fsync'd), next to the
//! figures it is bounded by, all measured in the same run on the same disk:
//! - disk: appending the same chunks to one file with one `fdatasync` per `concurrency`
//!   chunks (what group commit does at best);
//! - loopback: one TCP stream copying bytes between two threads;
//! - single node: the chunk store alone with the same concurrency.
//!
//! Three replicas on one disk write every byte three times, so the replicated put can reach at
//! most a third of the single-node figure on this machine; a real cluster has a disk per node.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chunkstore::ChunkId;

/// Options of `hadss-bench replication`.
#[derive(Debug, clap::Args)]
pub struct ReplicationBench {
    /// Chunk sizes to measure, in KiB.
    #[arg(long, value_delimiter = ',', default_values_t = vec![4, 64, 1024, 4096])]
    pub sizes_kib: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
    /// Operations in flight (at most `--inflight-mib` worth of chunks, like a gateway's
    /// memory budget).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Bytes of chunks in flight at most, in MiB.
    #[arg(long, default_value_t = 64)]
    pub inflight_mib: usize,
    /// Skip the disk, loopback and single-node measurements (for profiling).
    #[arg(long)]
    pub replicated_only: bool,
    /// Where the stores live (a temporary directory under it is removed afterwards); use a
    /// directory on the disk you want to measure.
    #[arg(long, default_value = "target/bench-tmp")]
    pub dir: std::path::PathBuf,
}

/// Distinct chunk contents: a fixed random body with the index stamped in front.
pub(crate) fn chunk(base: &[u8], i: u64) -> Vec<u8> {
    let mut v = base.to_vec();
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

fn mib_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / (1024.0 * 1024.0)
}

pub(crate) fn disk_limit(dir: &std::path::Path, size: usize, group: usize, seconds: u64) -> anyhow::Result<f64> {
    let path = dir.join("disk-limit.dat");
    let mut f = std::fs::File::create(&path)?;
    let buf = vec![0xa5u8; size];
    let start = Instant::now();
    let mut written = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..group.max(1) {
            f.write_all(&buf)?;
            written += size as u64;
        }
        f.sync_data()?;
    }
    let rate = mib_s(written, start.elapsed());
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

fn loopback_limit(seconds: u64) -> anyhow::Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    let buf = vec![7u8; 1 << 20];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        s.write_all(&buf)?;
    }
    drop(s);
    let total = reader.join().map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
    Ok(mib_s(total, start.elapsed()))
}

/// Runs `op(i)` from `concurrency` threads for `seconds`; returns (ops, elapsed).
pub(crate) fn run_threads(
    concurrency: usize,
    seconds: u64,
    op: impl Fn(u64) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<(u64, Duration)> {
    let next = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..concurrency)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    while start.elapsed() < Duration::from_secs(seconds) {
                        op(next.fetch_add(1, Ordering::Relaxed))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        }
        Ok(())
    })?;
    Ok((next.load(Ordering::Relaxed), start.elapsed()))
}

/// Runs `op(i)` with `concurrency` in flight for `seconds`; returns (ops, elapsed).
async fn run_tasks<F, Fut>(concurrency: usize, seconds: u64, op: F) -> anyhow::Result<(u64, Duration)>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        tasks.spawn(async move {
            while start.elapsed() < Duration::from_secs(seconds) {
                op(next.fetch_add(1, Ordering::Relaxed)).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok((next.load(Ordering::Relaxed), start.elapsed()))
}

/// Three storage nodes in three zones, N=3 W=2 R=2, LAN SWIM timing, and a client node
/// (the kit's gateway node: not in the map, it coordinates writes).
async fn start_cluster(dir: &std::path::Path, size_max: usize) -> anyhow::Result<hadss_testkit::Cluster> {
    let options = hadss_testkit::ClusterOptions {
        chunk_options: chunkstore::Options {
            chunk_size_bytes_max: u32::try_from(size_max.max(1 << 20))?,
            ..chunkstore::Options::default()
        },
        swim: hadss::config::SwimPreset::Lan,
        ..hadss_testkit::ClusterOptions::default()
    };
    hadss_testkit::Cluster::start(dir, options).await
}

/// Runs the benchmark and prints a Markdown table.
pub async fn run(opts: ReplicationBench) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.dir)?;
    let tmp = tempfile_dir(&opts.dir)?;
    let c_max = opts.concurrency.max(1);
    eprintln!("measuring loopback TCP…");
    let loopback = if opts.replicated_only {
        0.0
    } else {
        loopback_limit(opts.seconds)?
    };
    println!("loopback TCP, one stream: {loopback:.0} MiB/s");
    println!(
        "up to {c_max} operations and {} MiB in flight, {} s per cell, N=3 W=2 (replicated) on one disk\n",
        opts.inflight_mib, opts.seconds
    );
    println!(
        "| chunk | in flight | disk append+fdatasync per batch MiB/s | single-node put MiB/s (ops/s) | replicated put MiB/s (ops/s) | put ratio | single-node get ops/s | replicated get ops/s (MiB/s) | gateway bytes sent per byte put |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    // Incompressible bodies (object data usually is): the store's zstd attempt is measured
    // as it would be, but never pays off.
    let mut base = vec![0u8; opts.sizes_kib.iter().max().copied().unwrap_or(64) * 1024];
    rand::fill(&mut base[..]);
    for &kib in &opts.sizes_kib {
        let size = kib * 1024;
        let body = &base[..size];
        let c = c_max.min((opts.inflight_mib * 1024 / kib.max(1)).max(1));
        if opts.replicated_only {
            let cluster_dir = tmp.join(format!("cluster-{kib}"));
            let cluster = Arc::new(start_cluster(&cluster_dir, size).await?);
            let (cluster2, body2) = (cluster.clone(), Arc::new(body.to_vec()));
            let (n, t) = run_tasks(c, opts.seconds, move |i| {
                let (cluster, body) = (cluster2.clone(), body2.clone());
                async move {
                    cluster.gateway().put_chunk(chunk(&body, i)).await?;
                    Ok(())
                }
            })
            .await?;
            println!(
                "| {kib} KiB | replicated put {:.0} MiB/s ({:.0}/s) |",
                mib_s(n * size as u64, t),
                n as f64 / t.as_secs_f64()
            );
            continue;
        }
        eprintln!("{kib} KiB: disk limit…");
        let disk = disk_limit(&tmp, size, c, opts.seconds)?;

        eprintln!("{kib} KiB: single-node chunk store…");
        let single_dir = tmp.join(format!("single-{kib}"));
        let store = chunkstore::Store::open(
            &single_dir,
            chunkstore::Options {
                chunk_size_bytes_max: u32::try_from(size.max(1 << 20))?,
                ..chunkstore::Options::default()
            },
        )?;
        let (puts, put_time) = run_threads(c, opts.seconds, |i| {
            store.put(&chunk(body, i))?;
            Ok(())
        })?;
        let ids: Vec<ChunkId> = (0..puts).map(|i| ChunkId::of(&chunk(body, i))).collect();
        let (gets, get_time) = run_threads(c, opts.seconds, |i| {
            let id = &ids[(i.wrapping_mul(0x9e37_79b9) % ids.len() as u64) as usize];
            store.get(id)?.context("chunk missing")?;
            Ok(())
        })?;
        drop(store);
        std::fs::remove_dir_all(&single_dir)?;

        eprintln!("{kib} KiB: three replicated nodes…");
        let cluster_dir = tmp.join(format!("cluster-{kib}"));
        let cluster = Arc::new(start_cluster(&cluster_dir, size).await?);
        let body = Arc::new(body.to_vec());
        let (rputs, rput_time) = {
            let (cluster, body) = (cluster.clone(), body.clone());
            run_tasks(c, opts.seconds, move |i| {
                let (cluster, body) = (cluster.clone(), body.clone());
                async move {
                    cluster.gateway().put_chunk(chunk(&body, i)).await?;
                    Ok(())
                }
            })
            .await?
        };
        let rids: Arc<Vec<ChunkId>> = Arc::new((0..rputs).map(|i| ChunkId::of(&chunk(&body, i))).collect());
        let (rgets, rget_time) = {
            let (cluster, rids) = (cluster.clone(), rids.clone());
            run_tasks(c, opts.seconds, move |i| {
                let (cluster, rids) = (cluster.clone(), rids.clone());
                async move {
                    let id = rids[(i.wrapping_mul(0x9e37_79b9) % rids.len() as u64) as usize];
                    cluster.gateway().get_chunk(&id).await?.context("chunk missing")?;
                    Ok(())
                }
            })
            .await?
        };
        // Let the third copies of the last writes land, then check every chunk has N=3.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut copies = [0u64; 4];
        for id in rids.iter() {
            copies[cluster
                .storage()
                .iter()
                .filter(|n| n.chunk_store().expect("a storage node").contains(id))
                .count()] += 1;
        }
        if copies[3] != rputs {
            eprintln!("  warning: chunks by number of copies (0, 1, 2, 3): {copies:?}");
        }
        // The gateway's egress per byte stored: bytes of chunk copies it sent over bytes put.
        let counters = cluster.gateway().counters();
        let egress = counters.chunk_bytes_sent.load(std::sync::atomic::Ordering::Relaxed) as f64
            / (counters.chunk_bytes_put.load(std::sync::atomic::Ordering::Relaxed) as f64).max(1.0);
        drop(cluster);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = std::fs::remove_dir_all(&cluster_dir);

        let size_u = size as u64;
        let single = mib_s(puts * size_u, put_time);
        let replicated = mib_s(rputs * size_u, rput_time);
        println!(
            "| {kib} KiB | {c} | {disk:.0} | {single:.0} ({:.0}) | {replicated:.0} ({:.0}) | {:.0}% | {:.0} | {:.0} ({:.0}) | {egress:.2} |",
            puts as f64 / put_time.as_secs_f64(),
            rputs as f64 / rput_time.as_secs_f64(),
            100.0 * replicated / single.max(f64::MIN_POSITIVE),
            gets as f64 / get_time.as_secs_f64(),
            rgets as f64 / rget_time.as_secs_f64(),
            mib_s(rgets * size_u, rget_time),
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn tempfile_dir(parent: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = parent.join(format!("replication-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
