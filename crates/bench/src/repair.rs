//! `hadss-bench repair`: what it costs to get back to full redundancy,
//! next to the limits measured in the same run.
//! - Anti-entropy: two record stores of `--records` records in one partition that differ in
//!   d records, compared by the same sans-IO session nodes run over the network; bytes of
//!   questions and answers and round trips per d, beside the bytes of sending every key and
//!   version (what a comparison without a tree would cost).
//! - Re-replication: four in-process storage nodes (N=3) hold `--data-mib` of 4 MiB chunks
//!   with their references; one is killed; the time until every chunk has 3 copies again on
//!   the survivors, and the copy rate after the down-out time, beside the disk's write rate
//!   with one `fdatasync` per 4 MiB (every copy is fsync'd).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chunkstore::ChunkId;
use hadss::node::MaintenanceConfig;
use hadss::node::Node;
use hadss::storage::records::{Record, RecordStore, RecordValue, Version};
use hadss::storage::refs::ChunkHolder;

/// Options of `hadss-bench repair`.
#[derive(Debug, clap::Args)]
pub struct RepairBench {
    /// Records per replica in the anti-entropy measurement.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Numbers of differing records to measure.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0, 1, 10, 100, 1000, 10000])]
    pub differences: Vec<u64>,
    /// MiB of chunks the four nodes hold (three copies each) before one is killed.
    #[arg(long, default_value_t = 512)]
    pub data_mib: u64,
    /// Where the stores live (a temporary directory under it is removed afterwards).
    #[arg(long, default_value = "target/bench-tmp")]
    pub dir: std::path::PathBuf,
}

const CHUNK_BYTES: usize = 4 * 1024 * 1024;
const DOWN_OUT_MS: u64 = 1000;
/// Longest wait for a cluster state in this benchmark.
const WAIT_S_MAX: u64 = 600;

fn record(i: u64, hlc: u64) -> Record {
    Record {
        partition: 0,
        key: format!("o/bench/object-{i:08}").into_bytes(),
        version: Version {
            hlc,
            unique: [(i % 251) as u8; 16],
        },
        value: RecordValue::Data(format!("object {i} metadata at {hlc}").into_bytes()),
    }
}

fn anti_entropy(opts: &RepairBench, dir: &std::path::Path) -> anyhow::Result<()> {
    // What listing every key and version would cost (key + 24-byte version + framing).
    let full_bytes: u64 = (0..opts.records).map(|i| record(i, 0).key.len() as u64 + 26).sum();
    println!(
        "\n### Anti-entropy: {} records per replica, one partition\n",
        opts.records
    );
    println!(
        "| differing records | sessions to converge | round trips | bytes exchanged | bytes per difference | vs. listing every key ({full_bytes} B) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    const BATCH: u64 = 10_000;
    for (run, &d) in opts.differences.iter().enumerate() {
        let d = d.min(opts.records);
        let a = RecordStore::open(&dir.join(format!("a-{run}.redb")))?;
        let b = RecordStore::open(&dir.join(format!("b-{run}.redb")))?;
        for start in (0..opts.records).step_by(BATCH as usize) {
            let batch: Vec<Record> = (start..(start + BATCH).min(opts.records))
                .map(|i| record(i, 1 << 20))
                .collect();
            a.put(batch.clone())?;
            b.put(batch)?;
        }
        // Newer versions on b of d records spread evenly over the key space.
        let newer: Vec<Record> = (0..d).map(|j| record(j * opts.records / d.max(1), 2 << 20)).collect();
        b.put(newer)?;
        // Sessions as a node runs them: compare, pull what is newer there, again until equal
        // (one answer carries at most 50,000 items, so many differences take several).
        let (mut sessions, mut rounds, mut bytes, mut found) = (0u64, 0u64, 0u64, 0u64);
        loop {
            let c = hadss::storage::antientropy::compare_stores(&a, &b, 0)?;
            sessions += 1;
            rounds += u64::from(c.rounds);
            bytes += c.sent_bytes + c.received_bytes;
            if c.plan.pull.is_empty() && c.plan.push.is_empty() {
                break;
            }
            anyhow::ensure!(sessions < 16, "no convergence after {sessions} sessions");
            found += c.plan.pull.len() as u64;
            let pulled: Vec<Record> = c.plan.pull.iter().filter_map(|k| b.get(0, k).ok().flatten()).collect();
            a.put(pulled)?;
        }
        anyhow::ensure!(found == d, "the sessions found {found} differences, not {d}");
        anyhow::ensure!(a.merkle_root(0) == b.merkle_root(0), "replicas did not converge");
        println!(
            "| {d} | {sessions} | {rounds} | {bytes} | {} | {:.3}% |",
            if d == 0 {
                "-".to_string()
            } else {
                format!("{:.0}", bytes as f64 / d as f64)
            },
            100.0 * bytes as f64 / full_bytes as f64
        );
    }
    Ok(())
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(WAIT_S_MAX);
    while !cond() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn re_replication(opts: &RepairBench, dir: &std::path::Path) -> anyhow::Result<()> {
    let disk = crate::replication::disk_limit(dir, CHUNK_BYTES, 1, 3)?;
    // Four storage nodes, N=3, as `hadss storage` runs them (anti-entropy brings a new
    // owner the references; maintenance fetches the chunks they name).
    let options = hadss_testkit::ClusterOptions {
        storage_nodes: 4,
        zones: 4,
        anti_entropy_interval_ms: Some(hadss::node::ANTI_ENTROPY_INTERVAL_MS_DEFAULT),
        maintenance: Some(MaintenanceConfig {
            interval_ms: 1000,
            gc_grace_ms: 3_600_000,
            down_out_ms: DOWN_OUT_MS,
            copy_rate_bytes_per_s: 0,
            scrub_interval_ms: 0,
            scrub_rate_bytes_per_s: 0,
        }),
        ..hadss_testkit::ClusterOptions::default()
    };
    let mut cluster = hadss_testkit::Cluster::start(dir, options).await?;
    let mut nodes = cluster.storage();
    let count = (opts.data_mib * 1024 * 1024).div_ceil(CHUNK_BYTES as u64);
    let base: Vec<u8> = (0..CHUNK_BYTES).map(|_| rand::random::<u8>()).collect();
    let mut ids = Vec::new();
    let started = Instant::now();
    for i in 0..count {
        let data = crate::replication::chunk(&base, i);
        let id = nodes[0].put_chunk(data).await?;
        let holder = ChunkHolder {
            holder_partition: 0,
            holder_key: format!("bench/{i}").into_bytes(),
            holder_unique: rand::random(),
        };
        nodes[0].put_chunk_ref(&id, CHUNK_BYTES as u32, &holder).await?;
        ids.push(id);
    }
    eprintln!(
        "wrote {count} chunks ({} MiB) × 3 copies in {:.1} s",
        opts.data_mib,
        started.elapsed().as_secs_f64()
    );
    let copies = |live: &[Arc<Node>], id: &ChunkId| {
        live.iter()
            .filter(|n| n.chunk_store().expect("a storage node").contains(id))
            .count()
    };
    wait_for("three copies of every chunk", || {
        ids.iter().all(|id| copies(&nodes, id) >= 3)
    })
    .await?;
    // Kill the node holding the most chunks.
    let victim = (0..nodes.len())
        .max_by_key(|i| {
            ids.iter()
                .filter(|id| nodes[*i].chunk_store().expect("a storage node").contains(id))
                .count()
        })
        .unwrap_or(0);
    let held = ids
        .iter()
        .filter(|id| nodes[victim].chunk_store().expect("a storage node").contains(id))
        .count();
    let victim_peer = nodes[victim].peer_id();
    let killed = Instant::now();
    nodes.remove(victim);
    cluster.stop(victim);
    wait_for("every survivor to see the victim down", || {
        nodes.iter().all(|n| n.is_down(&victim_peer))
    })
    .await?;
    let detected = killed.elapsed();
    // Each survivor starts its down-out clock when it sees the victim down.
    let out_at = Instant::now() + Duration::from_millis(DOWN_OUT_MS);
    wait_for("three copies again", || ids.iter().all(|id| copies(&nodes, id) >= 3)).await?;
    let copy_s = Instant::now().saturating_duration_since(out_at).as_secs_f64().max(1e-3);
    let fetched: u64 = nodes
        .iter()
        .map(|n| n.counters().chunks_fetched.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let bytes = fetched * CHUNK_BYTES as u64;
    let rate = bytes as f64 / copy_s / (1024.0 * 1024.0);
    println!("\n### Re-replication: 4 nodes, N=3, {count} chunks of 4 MiB, one node killed\n");
    println!(
        "| chunks on the killed node | chunks copied | SWIM detection | + down-out | copying | copy rate | disk write limit (fdatasync per 4 MiB) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {held} | {fetched} | {:.1} s | {:.1} s | {copy_s:.1} s | {rate:.0} MiB/s | {disk:.0} MiB/s |",
        detected.as_secs_f64(),
        DOWN_OUT_MS as f64 / 1000.0,
    );
    Ok(())
}

/// Runs the benchmark and prints Markdown tables.
pub async fn run(opts: RepairBench) -> anyhow::Result<()> {
    let tmp = opts.dir.join(format!("repair-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = async {
        anti_entropy(&opts, &tmp)?;
        re_replication(&opts, &tmp).await
    }
    .await;
    std::fs::remove_dir_all(&tmp)?;
    result
}
