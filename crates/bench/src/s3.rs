//! `hadss-bench s3`: an S3 load generator. It PUTs and GETs small
//! objects (ops/s, p50/p99 latency) and large objects (MiB/s) at several concurrencies
//! against an S3 endpoint — by default a `hadss dev` it starts as a child process in a
//! scratch directory (the `hadss` binary beside this one unless `--hadss` names another), so
//! client and server are separate processes as with any S3 client —
//! and measures in the same run the limits they are bounded by on this machine:
//! - disk: a plain file written in 4 MiB blocks with an `fdatasync` after each (every copy
//!   of a chunk is made durable this way; three replicas on one disk share it);
//! - the chunk store alone: 4 KiB puts and gets with the same concurrency.
//!
//! Beside every figure: the CPU time the server processes spent (`/proc/<pid>/stat`, the
//! spawned `hadss dev` or each `--server-pid`) and the load generator's own, per operation
//! and per MiB: both share this machine's cores, so a reader can tell a server limit from a
//! client limit.
//!
//! Requests are signed with SigV4 query strings (`rusty-s3`, payload unsigned) and sent with
//! hyper over pooled HTTP/1.1 connections. Bodies are generated per object (a fixed random
//! block stamped with the object and block index), so no two chunks are alike and
//! content addressing cannot deduplicate them away. Bodies stream: memory stays bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::BodyExt;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

/// How long a presigned request stays valid.
const SIGNATURE_TTL: Duration = Duration::from_secs(3600);
/// Block a large body is generated in.
const BLOCK_SIZE_BYTES: usize = 1024 * 1024;
/// Most latency samples kept per measurement (beyond that the run is long enough).
const SAMPLES_MAX: usize = 2_000_000;

/// Options of `hadss-bench s3`.
#[derive(Debug, clap::Args)]
pub struct S3Bench {
    /// The S3 endpoint (default: start `hadss dev` in a scratch directory under `--dir`).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Access key (with `--endpoint`).
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    pub access_key: Option<String>,
    /// Secret key (with `--endpoint`).
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY")]
    pub secret_key: Option<String>,
    /// Region.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Concurrencies to measure.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 32])]
    pub concurrency: Vec<usize>,
    /// Small object size, in KiB.
    #[arg(long, default_value_t = 4)]
    pub small_kib: usize,
    /// Seconds per small-object measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Large object size, in MiB.
    #[arg(long, default_value_t = 64)]
    pub large_mib: usize,
    /// Large objects per concurrency level (at least the concurrency).
    #[arg(long, default_value_t = 4)]
    pub large_count: usize,
    /// Times each large object is read back (more reads, a steadier GET figure).
    #[arg(long, default_value_t = 1)]
    pub large_reads: usize,
    /// Server processes whose CPU time to report (with `--endpoint`; the spawned
    /// `hadss dev` otherwise).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Scratch directory (the dev cluster's data, the disk-limit file).
    #[arg(long, default_value = "target/bench-tmp")]
    pub dir: std::path::PathBuf,
    /// The `hadss` binary that serves `hadss dev` (default: the one beside this binary,
    /// which `cargo build --release` puts there).
    #[arg(long)]
    pub hadss: Option<std::path::PathBuf>,
}

/// The `hadss` binary to run: `given`, else the one beside this executable.
fn hadss_binary(given: Option<&std::path::Path>) -> anyhow::Result<std::path::PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?.with_file_name(format!("hadss{}", std::env::consts::EXE_SUFFIX)),
    };
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build it first (cargo build --release) or pass --hadss",
        path.display()
    );
    Ok(path)
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
>;

struct Target {
    bucket: Bucket,
    credentials: Credentials,
    client: Client,
}

fn body_of(bytes: Bytes) -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// A body of `size` bytes streamed in blocks, unique to `object`.
fn streamed_body(
    base: Arc<Vec<u8>>,
    object: u64,
    size: usize,
) -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    let blocks = size.div_ceil(BLOCK_SIZE_BYTES);
    let stream = futures::stream::iter((0..blocks).map(move |b| {
        let len = BLOCK_SIZE_BYTES.min(size - b * BLOCK_SIZE_BYTES);
        let mut block = base[..len].to_vec();
        block[..8].copy_from_slice(&object.to_le_bytes());
        block[8..16].copy_from_slice(&(b as u64).to_le_bytes());
        Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(block)))
    }));
    http_body_util::StreamBody::new(stream).boxed()
}

impl Target {
    async fn send(
        &self,
        method: http::Method,
        url: url::Url,
        body: http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
        length: usize,
    ) -> anyhow::Result<u64> {
        let request = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(http::header::CONTENT_LENGTH, length)
            .body(body)?;
        let response = self.client.request(request).await?;
        let status = response.status();
        let mut body = response.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                received += data.len() as u64;
            }
        }
        anyhow::ensure!(status.is_success(), "{status}");
        Ok(received)
    }

    async fn put(
        &self,
        key: &str,
        body: http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
        length: usize,
    ) -> anyhow::Result<()> {
        let url = self.bucket.put_object(Some(&self.credentials), key).sign(SIGNATURE_TTL);
        self.send(http::Method::PUT, url, body, length).await.map(|_| ())
    }

    async fn get(&self, key: &str) -> anyhow::Result<u64> {
        let url = self.bucket.get_object(Some(&self.credentials), key).sign(SIGNATURE_TTL);
        self.send(http::Method::GET, url, body_of(Bytes::new()), 0).await
    }
}

/// Latency percentiles of a run.
struct Latencies(Vec<u32>);

impl Latencies {
    fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() - 1) as f64 * p).round() as usize;
        f64::from(self.0[i]) / 1000.0
    }
}

/// Runs `op(i)` with `concurrency` in flight until `until` says stop; returns ops, elapsed
/// and latencies.
async fn drive<F, Fut>(
    concurrency: usize,
    until: impl Fn(u64, Duration) -> bool + Send + Sync + 'static,
    op: F,
) -> anyhow::Result<(u64, Duration, Latencies)>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let until = Arc::new(until);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (op, next, until) = (op.clone(), next.clone(), until.clone());
        tasks.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if until(i, start.elapsed()) {
                    return anyhow::Ok(samples);
                }
                let t = Instant::now();
                op(i).await.with_context(|| format!("operation {i}"))?;
                if samples.len() < SAMPLES_MAX / concurrency.max(1) {
                    samples.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    let elapsed = start.elapsed();
    Ok((all.len() as u64, elapsed, Latencies(all)))
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`; `None` if it
/// cannot be read (not Linux, process gone).
fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// CPU seconds used so far by the server processes and by this load generator.
#[derive(Clone, Copy)]
struct CpuSample {
    server_s: f64,
    client_s: f64,
}

impl CpuSample {
    fn take(server_pids: &[u32]) -> CpuSample {
        CpuSample {
            server_s: server_pids.iter().filter_map(|&p| process_cpu_s(p)).sum(),
            client_s: process_cpu_s(std::process::id()).unwrap_or(0.0),
        }
    }

    /// Table cells for the CPU spent since `self`: server and client ms per operation and
    /// per MiB.
    fn cells_since(self, server_pids: &[u32], ops: u64, bytes: u64) -> String {
        let now = CpuSample::take(server_pids);
        let (server_ms, client_ms) = (
            (now.server_s - self.server_s) * 1e3,
            (now.client_s - self.client_s) * 1e3,
        );
        let (ops, mib) = (
            ops.max(1) as f64,
            (bytes as f64 / (1024.0 * 1024.0)).max(f64::MIN_POSITIVE),
        );
        if server_pids.is_empty() {
            return format!("– | – | {:.3} | {:.2}", client_ms / ops, client_ms / mib);
        }
        format!(
            "{:.3} | {:.2} | {:.3} | {:.2}",
            server_ms / ops,
            server_ms / mib,
            client_ms / ops,
            client_ms / mib
        )
    }
}

/// A `hadss dev` child process, stopped on drop.
struct DevServer {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_dev(
    hadss: &std::path::Path,
    dir: &std::path::Path,
    access: &str,
    secret: &str,
) -> anyhow::Result<(DevServer, String)> {
    use std::io::BufRead;
    let data = dir.join(format!("dev-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut child = std::process::Command::new(hadss)
        .args([
            "dev",
            "--s3-listen",
            "127.0.0.1:0",
            "--access-key",
            access,
            "--secret-key",
            secret,
            "--data-dir",
        ])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("starting hadss dev")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let server = DevServer { child, dir: data };
    let mut lines = std::io::BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(endpoint) = line.trim().strip_prefix("S3 endpoint:") {
            // Keep reading its output: a closed pipe would fail the server's next log line.
            std::thread::spawn(move || lines.for_each(drop));
            return Ok((server, endpoint.trim().to_string()));
        }
    }
    anyhow::bail!("hadss dev exited before printing its endpoint")
}

fn mib_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / (1024.0 * 1024.0)
}

/// Runs the benchmark and prints a Markdown table.
pub async fn run(opts: S3Bench) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.dir)?;
    let (server, endpoint, access, secret) = match &opts.endpoint {
        Some(e) => (
            None,
            e.clone(),
            opts.access_key
                .clone()
                .context("--access-key is needed with --endpoint")?,
            opts.secret_key
                .clone()
                .context("--secret-key is needed with --endpoint")?,
        ),
        None => {
            let (access, secret) = (
                "HADSSBENCHKEY0000000".to_string(),
                "hadss-bench-secret-key-0000000000000000".to_string(),
            );
            eprintln!("starting hadss dev…");
            let (server, endpoint) = start_dev(&hadss_binary(opts.hadss.as_deref())?, &opts.dir, &access, &secret)?;
            (Some(server), endpoint, access, secret)
        }
    };
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector);
    let bucket_name = format!("bench-{}", std::process::id());
    let target = Arc::new(Target {
        bucket: Bucket::new(endpoint.parse()?, UrlStyle::Path, bucket_name, opts.region.clone())?,
        credentials: Credentials::new(access, secret),
        client,
    });
    let create = target.bucket.create_bucket(&target.credentials).sign(SIGNATURE_TTL);
    target
        .send(http::Method::PUT, create, body_of(Bytes::new()), 0)
        .await
        .context("creating the bucket")?;

    let mut base = vec![0u8; BLOCK_SIZE_BYTES];
    rand::fill(&mut base[..]);
    let base = Arc::new(base);
    let small = opts.small_kib * 1024;
    let large = opts.large_mib * 1024 * 1024;
    let max_c = opts.concurrency.iter().copied().max().unwrap_or(1);

    eprintln!("disk limit (4 MiB writes, fdatasync each)…");
    let disk = crate::replication::disk_limit(&opts.dir, 4 << 20, 1, 3)?;
    eprintln!("chunk store alone ({} KiB, {max_c} threads)…", opts.small_kib);
    let (store_puts, store_gets) = store_ceiling(&opts.dir, &base[..small], max_c, opts.seconds)?;

    println!("endpoint {endpoint} · 3 replicas (N=3, W=2) on one disk · every put fsync'd on W replicas");
    println!();
    let server_pids: Vec<u32> = match &server {
        Some(server) => vec![server.child.id()],
        None => opts.server_pid.clone(),
    };
    let server_pids = &server_pids[..];
    println!(
        "| workload | concurrency | ops/s | MiB/s | p50 ms | p99 ms | server CPU ms/op | server CPU ms/MiB | load gen CPU ms/op | load gen CPU ms/MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut round = 0u64;
    for &c in &opts.concurrency {
        round += 1;
        let prefix = format!("s{round}");
        let t = target.clone();
        let (b, p) = (base.clone(), prefix.clone());
        let seconds = Duration::from_secs(opts.seconds);
        let cpu = CpuSample::take(server_pids);
        let (puts, elapsed, mut lat) = drive(
            c,
            move |_, e| e >= seconds,
            move |i| {
                let (t, b, p) = (t.clone(), b.clone(), p.clone());
                async move {
                    let mut body = b[..small].to_vec();
                    body[..8].copy_from_slice(&i.to_le_bytes());
                    body[8..16].copy_from_slice(&round.to_le_bytes());
                    t.put(&format!("{p}/{i:09}"), body_of(Bytes::from(body)), small).await
                }
            },
        )
        .await?;
        println!(
            "| PUT {} KiB | {c} | {:.0} | {:.1} | {:.2} | {:.2} | {} |",
            opts.small_kib,
            puts as f64 / elapsed.as_secs_f64(),
            mib_s(puts * small as u64, elapsed),
            lat.percentile_ms(0.5),
            lat.percentile_ms(0.99),
            cpu.cells_since(server_pids, puts, puts * small as u64)
        );
        let t = target.clone();
        let written = puts.max(1);
        let cpu = CpuSample::take(server_pids);
        let (gets, elapsed, mut lat) = drive(
            c,
            move |_, e| e >= seconds,
            move |i| {
                let (t, p) = (t.clone(), prefix.clone());
                async move {
                    let key = format!("{p}/{:09}", i.wrapping_mul(0x9e37_79b9) % written);
                    let n = t.get(&key).await?;
                    anyhow::ensure!(n == small as u64, "short read of {key}: {n} bytes");
                    Ok(())
                }
            },
        )
        .await?;
        println!(
            "| GET {} KiB | {c} | {:.0} | {:.1} | {:.2} | {:.2} | {} |",
            opts.small_kib,
            gets as f64 / elapsed.as_secs_f64(),
            mib_s(gets * small as u64, elapsed),
            lat.percentile_ms(0.5),
            lat.percentile_ms(0.99),
            cpu.cells_since(server_pids, gets, gets * small as u64)
        );
    }
    for &c in &opts.concurrency {
        round += 1;
        let count = opts.large_count.max(c) as u64;
        let prefix = format!("l{round}");
        let (t, b, p) = (target.clone(), base.clone(), prefix.clone());
        let stamp = round << 32;
        let cpu = CpuSample::take(server_pids);
        let (puts, elapsed, mut lat) = drive(
            c,
            move |i, _| i >= count,
            move |i| {
                let (t, b, p) = (t.clone(), b.clone(), p.clone());
                async move {
                    t.put(&format!("{p}/{i:05}"), streamed_body(b, stamp | i, large), large)
                        .await
                }
            },
        )
        .await?;
        println!(
            "| PUT {} MiB | {c} | {:.1} | {:.0} | {:.0} | {:.0} | {} |",
            opts.large_mib,
            puts as f64 / elapsed.as_secs_f64(),
            mib_s(puts * large as u64, elapsed),
            lat.percentile_ms(0.5),
            lat.percentile_ms(0.99),
            cpu.cells_since(server_pids, puts, puts * large as u64)
        );
        let t = target.clone();
        let reads = count * opts.large_reads.max(1) as u64;
        let cpu = CpuSample::take(server_pids);
        let (gets, elapsed, mut lat) = drive(
            c,
            move |i, _| i >= reads,
            move |i| {
                let (t, p) = (t.clone(), prefix.clone());
                async move {
                    let n = t.get(&format!("{p}/{:05}", i % count)).await?;
                    anyhow::ensure!(n == large as u64, "short read: {n} bytes");
                    Ok(())
                }
            },
        )
        .await?;
        println!(
            "| GET {} MiB | {c} | {:.1} | {:.0} | {:.0} | {:.0} | {} |",
            opts.large_mib,
            gets as f64 / elapsed.as_secs_f64(),
            mib_s(gets * large as u64, elapsed),
            lat.percentile_ms(0.5),
            lat.percentile_ms(0.99),
            cpu.cells_since(server_pids, gets, gets * large as u64)
        );
    }
    println!();
    println!("Limits measured in the same run:");
    println!(
        "- disk, 4 MiB writes + fdatasync each: {disk:.0} MiB/s (÷ 3 replicas on one disk: {:.0} MiB/s; 40% of that: {:.0} MiB/s)",
        disk / 3.0,
        disk * 0.4 / 3.0
    );
    println!(
        "- chunk store alone, {} KiB, {max_c} threads: {store_puts:.0} puts/s, {store_gets:.0} gets/s",
        opts.small_kib
    );
    Ok(())
}

/// The chunk store alone: (puts/s, gets/s) of `body`-sized chunks from `threads` threads.
fn store_ceiling(dir: &std::path::Path, body: &[u8], threads: usize, seconds: u64) -> anyhow::Result<(f64, f64)> {
    let store_dir = dir.join(format!("store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store_dir);
    let store = chunkstore::Store::open(&store_dir, chunkstore::Options::default())?;
    let (puts, put_time) = crate::replication::run_threads(threads, seconds, |i| {
        store.put(&crate::replication::chunk(body, i))?;
        Ok(())
    })?;
    let ids: Vec<chunkstore::ChunkId> = (0..puts)
        .map(|i| chunkstore::ChunkId::of(&crate::replication::chunk(body, i)))
        .collect();
    let (gets, get_time) = crate::replication::run_threads(threads, seconds, |i| {
        let id = &ids[(i.wrapping_mul(0x9e37_79b9) % ids.len().max(1) as u64) as usize];
        store.get(id)?.context("chunk missing")?;
        Ok(())
    })?;
    drop(store);
    std::fs::remove_dir_all(&store_dir)?;
    Ok((
        puts as f64 / put_time.as_secs_f64(),
        gets as f64 / get_time.as_secs_f64(),
    ))
}
