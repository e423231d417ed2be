//! Issue-4 acceptance against real processes: `netsim up` starts 5 `hadss storage`
//! processes (N=3, W=2, R=2) and 2 `hadss gateway` processes (boto3 writes through one and
//! reads through the other); a client node writes 1,000 chunks and 1,000 records through
//! them; one storage process is killed with SIGKILL; everything stays readable and new
//! writes succeed (fallbacks hold hints); the killed node restarts from its recorded command,
//! serves again, and gets back everything written while it was dead. Finally one storage
//! process is paused (SIGSTOP) and every chunk is read through hedged reads.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{Down, hadss_binary, metric, phase};

use std::path::PathBuf;
use std::time::Duration;

use hadss::node::Node;
use hadss::storage::records::{Record, RecordValue, Version};
use libp2p::Multiaddr;

const CHUNKS: u64 = 1000;
const RECORDS: u64 = 1000;

fn body(i: u64) -> Vec<u8> {
    let mut v = format!("chunk {i} ").into_bytes();
    v.extend(std::iter::repeat_n((i % 251) as u8, 500 + (i as usize * 37) % 4000));
    v
}

fn record(client: &Node, i: u64) -> Record {
    let key = format!("bucket/object-{i}").into_bytes();
    Record {
        partition: client.partition_of(&key).unwrap(),
        key,
        version: Version {
            hlc: 10_000 + i,
            unique: [(i % 256) as u8; 16],
        },
        value: RecordValue::Data(format!("metadata {i}").into_bytes()),
    }
}

/// boto3 (from `scripts/test`'s venv) writes through one gateway and reads through the other.
fn s3_through_two_gateways(cluster: &netsim::ClusterFile, scratch: &std::path::Path) {
    let s3 = cluster.s3.as_ref().expect("cluster.json names the S3 endpoint");
    let gateways: Vec<&netsim::NodeEntry> = cluster.nodes.iter().filter(|n| n.role == "gateway").collect();
    assert_eq!(gateways.len(), 2);
    let credentials = scratch.join("credentials.env");
    std::fs::write(
        &credentials,
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\nAWS_ENDPOINT_URL={}\nAWS_REGION={}\n",
            s3.access_key, s3.secret_key, s3.endpoint, s3.region
        ),
    )
    .unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("HADSS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/py-venv/bin/python"));
    assert!(
        python.exists(),
        "no Python with boto3: run scripts/test or set HADSS_PYTHON"
    );
    let out = std::process::Command::new(python)
        .arg(root.join("tests/s3/boto3_suite.py"))
        .arg(&credentials)
        .arg("two-gateways")
        .env("SECOND_ENDPOINT", gateways[1].s3_endpoint.as_deref().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` for every item with `CONCURRENCY` in flight.
async fn for_each_concurrent<T, F, Fut>(items: impl IntoIterator<Item = T>, f: F)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::StreamExt;
    futures::stream::iter(items).for_each_concurrent(CONCURRENCY, f).await;
}

const CONCURRENCY: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_storage_processes_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let opts = netsim::UpOptions {
        dir: cluster_dir.clone(),
        storage: 5,
        zones: 3,
        hadss: hadss_binary(),
        partitions: 64,
        gateways: 2,
        monitors: 0,
        auto_admit: false,
        faults: false,
        storage_config_extra: String::new(),
    };
    let cluster = netsim::up(&opts).await.unwrap();
    let _down = Down(cluster_dir.clone());
    let started = std::time::Instant::now();
    s3_through_two_gateways(&cluster, dir.path());
    phase(started, "S3 through two gateways");
    let test = async {
        // A client node (not in the map, so never a replica) coordinates the writes.
        let client = common::client_node(&cluster, dir.path().join("client")).await;
        let seed: Multiaddr = cluster.nodes[0].p2p_addr.parse().unwrap();
        let (peer, dial) = hadss::node::client::split_peer_addr(&seed).unwrap();
        client.add_peer_address(peer, dial).await;
        assert_eq!(client.pull_map(peer).await.unwrap(), 1);

        let ids: Vec<(chunkstore::ChunkId, u64)> = (0..CHUNKS + 200)
            .map(|i| (chunkstore::ChunkId::of(&body(i)), i))
            .collect();
        let client = &client;
        phase(started, "client has the map");
        for_each_concurrent(0..CHUNKS, |i| async move {
            client.put_chunk(body(i)).await.unwrap();
        })
        .await;
        phase(started, "chunks written");
        for_each_concurrent(0..RECORDS, |i| async move {
            client.put_record(record(client, i)).await.unwrap();
        })
        .await;
        phase(started, "records written");
        for_each_concurrent(&ids[..CHUNKS as usize], |(id, i)| async move {
            assert_eq!(client.get_chunk(id).await.unwrap().unwrap(), body(*i), "chunk {i}");
        })
        .await;

        phase(started, "chunks read");
        // kill -9 storage-3.
        let victim = &cluster.nodes[2];
        netsim::signal(victim.pid, rustix::process::Signal::KILL).unwrap();
        for _ in 0..100 {
            if !netsim::is_running(victim.pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!netsim::is_running(victim.pid));
        for_each_concurrent(&ids[..CHUNKS as usize], |(id, i)| async move {
            assert_eq!(
                client.get_chunk(id).await.unwrap().unwrap(),
                body(*i),
                "chunk {i} after kill"
            );
        })
        .await;
        for_each_concurrent(0..RECORDS, |i| async move {
            let want = record(client, i);
            assert_eq!(
                client.get_record(want.partition, &want.key).await.unwrap(),
                Some(want),
                "record {i}"
            );
        })
        .await;
        phase(started, "all read after the kill");
        // New writes succeed without the killed node (its copies go to fallbacks).
        for_each_concurrent(CHUNKS..CHUNKS + 200, |i| async move {
            client.put_chunk(body(i)).await.unwrap();
            client.put_record(record(client, i)).await.unwrap();
        })
        .await;
        for_each_concurrent(&ids, |(id, i)| async move {
            assert_eq!(client.get_chunk(id).await.unwrap().unwrap(), body(*i), "chunk {i}");
        })
        .await;

        phase(started, "new writes done and read");
        // Restart it exactly as it was: it comes back at its address and serves its chunks.
        let pid = netsim::spawn_node(&victim.cmd, &victim.cwd, &victim.data_dir.with_file_name("log")).unwrap();
        let back: Multiaddr = victim.p2p_addr.parse().unwrap();
        let secret = hadss::net::identity::load_cluster_secret(&cluster.cluster_secret_file).unwrap();
        let mut served = false;
        for _ in 0..20 {
            if let Ok(hadss::node::protocol::MapResponse::Map(Some(_))) =
                hadss::node::client::map_request(secret, &back, hadss::node::protocol::MapRequest::Get).await
            {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(victim.data_dir.with_file_name("log")).unwrap_or_default();
        let tail: String = log.lines().rev().take(15).collect::<Vec<_>>().join("\n");
        assert!(served, "the restarted node does not answer; its log ends with:\n{tail}");
        phase(started, "restarted node answers");
        assert!(netsim::is_running(pid));
        let victim_peer = victim.peer_id.parse::<libp2p::PeerId>().unwrap();
        let mut held = 0;
        for (id, _) in ids.iter().take(CHUNKS as usize) {
            // The client may still be backing off from the dead address: retry a little.
            let mut answer = None;
            for _ in 0..5 {
                match client
                    .chunk_request(victim_peer, hadss::node::protocol::ChunkRequest::Get { id: id.0 })
                    .await
                {
                    Ok(a) => {
                        answer = Some(a);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            if matches!(answer, Some(hadss::node::protocol::ChunkResponse::Data(_))) {
                held += 1;
            }
        }
        assert!(held > 0, "the restarted node serves the chunks it held before the kill");
        phase(started, "restarted node serves its old chunks");

        // Its hints come back: every chunk and record written while it was dead that it is a
        // replica of is handed to it by the fallbacks (asked of it directly, no fallback).
        let missed_chunks: Vec<&(chunkstore::ChunkId, u64)> = ids[CHUNKS as usize..]
            .iter()
            .filter(|(id, _)| client.chunk_replicas(id).contains(&victim_peer))
            .collect();
        let missed_records: Vec<Record> = (CHUNKS..CHUNKS + 200)
            .map(|i| record(client, i))
            .filter(|r| client.record_replicas(r.partition).contains(&victim_peer))
            .collect();
        assert!(!missed_chunks.is_empty() && !missed_records.is_empty());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut lacking = 0;
            for (id, i) in &missed_chunks {
                match client
                    .chunk_request(victim_peer, hadss::node::protocol::ChunkRequest::Get { id: id.0 })
                    .await
                {
                    Ok(hadss::node::protocol::ChunkResponse::Data(d)) => assert_eq!(d, body(*i), "chunk {i}"),
                    _ => lacking += 1,
                }
            }
            for r in &missed_records {
                let get = hadss::node::protocol::MetaRequest::Get {
                    partition: r.partition,
                    key: r.key.clone(),
                };
                match client.meta_request(victim_peer, get).await {
                    Ok(hadss::node::protocol::MetaResponse::Record(Some(got))) => assert_eq!(&got, r),
                    _ => lacking += 1,
                }
            }
            if lacking == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{lacking} of {} hinted items never came back",
                missed_chunks.len() + missed_records.len()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        phase(started, "hints handed back");

        // Every node exposes health and Prometheus metrics; the counters show what happened.
        let mut handed_off = 0u64;
        for n in &cluster.nodes {
            let addr = netsim::http_addr(n).unwrap();
            let (status, health) = hadss::observe::get(addr, "/health", 5_000).await.unwrap();
            assert_eq!(status, 200);
            let health: serde_json::Value = serde_json::from_str(&health).unwrap();
            assert_eq!(health["epoch"], 1, "{}: {health}", n.name);
            assert_eq!(health["ready"], true);
            let (status, metrics) = hadss::observe::get(addr, "/metrics", 5_000).await.unwrap();
            assert_eq!(status, 200);
            assert!(metrics.contains("hadss_map_epoch 1"), "{}: {metrics}", n.name);
            handed_off += metric(&metrics, "hadss_hints_handed_off_total");
        }
        assert!(handed_off > 0, "the handoff counters show the hints handed back");

        // A paused replica (SIGSTOP: connections open, no answers) costs a hedge delay, not a
        // request timeout: the reads it would serve first also ask the next replica.
        let paused = &cluster.nodes[0];
        netsim::signal(paused.pid, rustix::process::Signal::STOP).unwrap();
        let hedged_before = client
            .counters()
            .hedged_chunk_reads
            .load(std::sync::atomic::Ordering::Relaxed);
        for_each_concurrent(ids[..CHUNKS as usize].iter(), |(id, i)| async move {
            assert_eq!(
                client.get_chunk(id).await.unwrap().unwrap(),
                body(*i),
                "chunk {i} with a replica paused"
            );
        })
        .await;
        netsim::signal(paused.pid, rustix::process::Signal::CONT).unwrap();
        let hedged = client
            .counters()
            .hedged_chunk_reads
            .load(std::sync::atomic::Ordering::Relaxed)
            - hedged_before;
        assert!(hedged > 0, "reads that met the paused replica first were hedged");
        phase(
            started,
            &format!("all chunks read with a replica paused ({hedged} hedged reads)"),
        );
        // netsim down (in Drop) also stops the restarted process: record its pid.
        let mut c = netsim::read_cluster_file(&cluster_dir).unwrap();
        c.nodes[2].pid = pid;
        netsim::write_cluster_file(&cluster_dir, &c).unwrap();
    };
    tokio::time::timeout(Duration::from_secs(180), test)
        .await
        .expect("test timed out");
}
