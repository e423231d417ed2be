//! Back to full redundancy, in-process nodes over the real transport with an S3 gateway and
//! the official Rust SDK: a storage node of five killed for good (its partitions get a new
//! replica after the down-out time), a node added by a new epoch (data moves to it while
//! every object stays readable, and afterwards exactly the owners hold each copy), bytes
//! flipped in a segment file (scrub finds them, the copy is restored, no GET serves them),
//! and 1 GiB written then deleted (garbage collection and compaction return the disk).
//! A checker reads every replica's stores directly.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use chunkstore::ChunkId;
use hadss::cluster::{MapEnvelope, NodeId, partition_of_chunk, partition_of_key};
use hadss::node::MaintenanceConfig;
use hadss::node::{Node, NodeConfig};
use hadss::object::layout::{CHUNK_SIZE_BYTES, object_key, objects_partition_key};
use hadss::storage::refs::ref_prefix;
use libp2p::identity::ed25519;

mod common;
use common::s3::{body, client};
use common::{eventually, map_of};

const ROOT_KEY: &str = "HKMAINTENANCETEST0000000";
const ROOT_SECRET: &str = "maintenance-test-secret";
const BUCKET: &str = "maint";
const PARTITIONS: u32 = 64;

fn node_config(
    dir: &std::path::Path,
    name: &str,
    secret: [u8; 32],
    key: &ed25519::Keypair,
    zone: &str,
    role: swim::Role,
) -> NodeConfig {
    NodeConfig {
        data_dir: dir.join(name),
        listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        secret: libp2p::pnet::PreSharedKey::new(secret),
        map_key: key.public(),
        chunk_options: chunkstore::Options {
            segment_size_bytes: 32 * 1024 * 1024,
            chunk_size_bytes_max: 8 * 1024 * 1024,
            ..chunkstore::Options::default()
        },
        memory_budget_bytes: hadss::node::MEMORY_BUDGET_BYTES_DEFAULT / 8,
        write_timeouts: Default::default(),
        zone: zone.to_string(),
        swim: hadss::config::SwimPreset::Fast.config(8),
        role,
        clock: hadss::clock::Clock::system(),
        faults: hadss::net::fault::Faults::off(),
    }
}

/// Storage nodes (index = position in `nodes`; `None` once killed), a gateway and a client.
struct Cluster {
    dir: tempfile::TempDir,
    secret: [u8; 32],
    key: ed25519::Keypair,
    nodes: Vec<Option<Arc<Node>>>,
    epoch: u64,
    gateway: Arc<Node>,
    _endpoint: hadss::gateway::S3Endpoint,
    s3: Client,
    maintenance: MaintenanceConfig,
}

fn maintenance(gc_grace_ms: u64) -> MaintenanceConfig {
    MaintenanceConfig {
        interval_ms: 1000,
        gc_grace_ms,
        down_out_ms: 3000,
        copy_rate_bytes_per_s: 0,
        scrub_interval_ms: 0,
        scrub_rate_bytes_per_s: 0,
    }
}

impl Cluster {
    async fn start(storage: usize, maintenance: MaintenanceConfig) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let secret = *blake3::hash(b"maintenance test").as_bytes();
        let key = ed25519::Keypair::generate();
        let mut nodes = Vec::new();
        for i in 0..storage {
            nodes.push(Some(Self::storage_node(dir.path(), i, secret, &key, maintenance).await));
        }
        let gateway = Arc::new(
            Node::start(node_config(
                dir.path(),
                "gateway",
                secret,
                &key,
                "gw",
                swim::Role::Gateway,
            ))
            .await
            .unwrap(),
        );
        let endpoint = hadss::gateway::serve(
            "127.0.0.1:0".parse().unwrap(),
            gateway.clone(),
            (ROOT_KEY, ROOT_SECRET),
            "us-east-1",
        )
        .await
        .unwrap();
        let s3 = client(&format!("http://{}", endpoint.local_addr()), ROOT_KEY, ROOT_SECRET);
        let mut c = Cluster {
            dir,
            secret,
            key,
            nodes,
            epoch: 0,
            gateway,
            _endpoint: endpoint,
            s3,
            maintenance,
        };
        c.publish_map().await;
        c.s3.create_bucket().bucket(BUCKET).send().await.unwrap();
        c
    }

    async fn storage_node(
        dir: &std::path::Path,
        i: usize,
        secret: [u8; 32],
        key: &ed25519::Keypair,
        maintenance: MaintenanceConfig,
    ) -> Arc<Node> {
        let node = Arc::new(
            Node::start(node_config(
                dir,
                &format!("storage-{i}"),
                secret,
                key,
                &format!("z{}", i % 3),
                swim::Role::Storage,
            ))
            .await
            .unwrap(),
        );
        node.start_anti_entropy(1000);
        node.start_maintenance(maintenance);
        node
    }

    fn live(&self) -> Vec<Arc<Node>> {
        self.nodes.iter().flatten().cloned().collect()
    }

    /// Signs a map of every storage node ever started (killed ones stay `In`: only SWIM
    /// knows they are gone) and offers it to every live node and the gateway.
    async fn publish_map(&mut self) {
        self.epoch += 1;
        let all: Vec<Arc<Node>> = self.nodes.iter().flatten().cloned().collect();
        let refs: Vec<&Node> = all.iter().map(|n| n.as_ref()).collect();
        let map = map_of_refs(&refs, self.epoch);
        let env = MapEnvelope::sign(&map, &self.key).unwrap();
        for n in self.live().iter().chain(std::iter::once(&self.gateway)) {
            n.offer_map(env.clone()).await.unwrap();
        }
        let want = self.live().len();
        for n in self.live() {
            eventually(
                Duration::from_secs(30),
                "SWIM sees every storage node and the gateway",
                || async { n.live_members().await.len() >= want },
            )
            .await;
        }
    }

    async fn add_node(&mut self) {
        let i = self.nodes.len();
        let node = Self::storage_node(self.dir.path(), i, self.secret, &self.key, self.maintenance).await;
        self.nodes.push(Some(node));
        self.publish_map().await;
    }

    async fn put(&self, key: &str, data: &[u8]) {
        self.s3
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from(data.to_vec()))
            .send()
            .await
            .unwrap();
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, String> {
        let out = self
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(out
            .body
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .into_bytes()
            .to_vec())
    }

    fn owners(&self, partition: u32) -> BTreeSet<NodeId> {
        let any = self.live()[0].clone();
        any.effective_replicas(partition)
            .iter()
            .map(|p| NodeId(p.to_bytes()))
            .collect()
    }
}

fn map_of_refs(nodes: &[&Node], epoch: u64) -> hadss::cluster::ClusterMap {
    // `map_of` takes owned nodes; the same map from references.
    let mut map = map_of(&[], epoch);
    for (i, n) in nodes.iter().enumerate() {
        map.nodes.push(hadss_testkit::storage_info(n, &format!("z{}", i % 3)));
    }
    map.nodes.sort_by(|a, b| a.id.cmp(&b.id));
    map.partitions = PARTITIONS;
    map
}

/// What was written: key → body.
struct Objects(Vec<(String, Vec<u8>)>);

impl Objects {
    fn chunks(&self) -> Vec<ChunkId> {
        let mut ids: Vec<ChunkId> = self
            .0
            .iter()
            .filter(|(_, b)| b.len() > hadss::object::layout::INLINE_SIZE_BYTES_MAX)
            .flat_map(|(_, b)| b.chunks(CHUNK_SIZE_BYTES).map(ChunkId::of).collect::<Vec<_>>())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// Per chunk and per record, which live nodes hold a copy (read from their stores directly).
struct Copies {
    chunks: Vec<(ChunkId, u32, BTreeSet<NodeId>)>,
    refs: Vec<(ChunkId, u32, BTreeSet<NodeId>)>,
    records: Vec<(String, u32, BTreeSet<NodeId>)>,
}

fn copies(cluster: &Cluster, objects: &Objects) -> Copies {
    let live = cluster.live();
    let id = |n: &Node| NodeId(n.peer_id().to_bytes());
    let mut out = Copies {
        chunks: Vec::new(),
        refs: Vec::new(),
        records: Vec::new(),
    };
    for c in objects.chunks() {
        let p = partition_of_chunk(PARTITIONS, &c.0);
        let holders = live
            .iter()
            .filter(|n| n.chunk_store().expect("a storage node").contains(&c))
            .map(|n| id(n))
            .collect();
        out.chunks.push((c, p, holders));
        let with_ref = live
            .iter()
            .filter(|n| {
                n.record_store()
                    .expect("a storage node")
                    .scan(p, &ref_prefix(&c.0), None, 16)
                    .unwrap()
                    .iter()
                    .any(|r| matches!(r.value, hadss::storage::records::RecordValue::Data(_)))
            })
            .map(|n| id(n))
            .collect();
        out.refs.push((c, p, with_ref));
    }
    let p = partition_of_key(PARTITIONS, &objects_partition_key(BUCKET));
    for (key, _) in &objects.0 {
        let k = object_key(BUCKET, key);
        let holders = live
            .iter()
            .filter(|n| n.record_store().expect("a storage node").get(p, &k).unwrap().is_some())
            .map(|n| id(n))
            .collect();
        out.records.push((key.clone(), p, holders));
    }
    out
}

/// Every chunk, reference and record on exactly its partition's owners (`exact`), or on at
/// least N live nodes including every owner.
fn fully_replicated(cluster: &Cluster, objects: &Objects, exact: bool) -> Result<(), String> {
    let c = copies(cluster, objects);
    let check = |what: String, p: u32, holders: &BTreeSet<NodeId>| -> Result<(), String> {
        let owners = cluster.owners(p);
        let ok = if exact {
            *holders == owners
        } else {
            holders.len() >= 3 && owners.is_subset(holders)
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{what} (partition {p}): {} copies, owners hold {}",
                holders.len(),
                owners.intersection(holders).count()
            ))
        }
    };
    for (id, p, h) in &c.chunks {
        check(format!("chunk {id}"), *p, h)?;
    }
    for (id, p, h) in &c.refs {
        check(format!("reference to {id}"), *p, h)?;
    }
    for (key, p, h) in &c.records {
        check(format!("record {key}"), *p, h)?;
    }
    Ok(())
}

async fn write_objects(cluster: &Cluster, prefix: &str, count: usize) -> Objects {
    let mut objects = Vec::new();
    for i in 0..count {
        // Mostly chunked (1–3 chunks), some inline.
        let size = if i % 4 == 3 {
            10_000
        } else {
            CHUNK_SIZE_BYTES * (1 + i % 3) - 1000
        };
        let key = format!("{prefix}/object-{i:03}");
        let data = body(&key, size);
        cluster.put(&key, &data).await;
        objects.push((key, data));
    }
    Objects(objects)
}

async fn read_all(cluster: &Cluster, objects: &Objects) {
    for (key, data) in &objects.0 {
        let got = cluster.get(key).await.unwrap_or_else(|e| panic!("GET {key}: {e}"));
        assert!(got == *data, "{key}: bytes differ");
    }
}

/// Waits until `fully_replicated` holds, at most `limit_s`; fails with the last gap seen.
async fn until_replicated(cluster: &Cluster, objects: &Objects, exact: bool, limit_s: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(limit_s);
    loop {
        let gap = match fully_replicated(cluster, objects, exact) {
            Ok(()) => return,
            Err(e) => e,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "not fully replicated (exact: {exact}): {gap}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn within<F: std::future::Future<Output = ()>>(limit_s: u64, f: F) {
    tokio::time::timeout(Duration::from_secs(limit_s), f)
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_for_good_gets_its_copies_restored_elsewhere() {
    within(240, async {
        let mut cluster = Cluster::start(5, maintenance(3_600_000)).await;
        let objects = write_objects(&cluster, "kill", 16).await;
        eventually(
            Duration::from_secs(60),
            "every copy on its owners before the kill",
            || async { fully_replicated(&cluster, &objects, false).is_ok() },
        )
        .await;
        // The victim: a node holding some of the chunks.
        let victim = (0..5)
            .max_by_key(|i| {
                let n = cluster.nodes[*i].as_ref().unwrap();
                objects
                    .chunks()
                    .iter()
                    .filter(|c| n.chunk_store().expect("a storage node").contains(c))
                    .count()
            })
            .unwrap();
        cluster.nodes[victim] = None;
        // SWIM reports it down, 3 s later (down-out) its partitions get a new replica, and the
        // maintenance passes and anti-entropy rounds copy the data there.
        until_replicated(&cluster, &objects, false, 120).await;
        read_all(&cluster, &objects).await;
        let fetched: u64 = cluster
            .live()
            .iter()
            .map(|n| n.counters().chunks_fetched.load(Ordering::Relaxed))
            .sum();
        assert!(fetched > 0, "re-replication should have copied chunks");
        cluster.nodes.clear();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_node_takes_its_share_and_each_copy_ends_on_exactly_its_owners() {
    within(240, async {
        let mut cluster = Cluster::start(4, maintenance(3_600_000)).await;
        let objects = Arc::new(write_objects(&cluster, "grow", 16).await);
        eventually(
            Duration::from_secs(60),
            "every copy on exactly its owners before the move",
            || async { fully_replicated(&cluster, &objects, true).is_ok() },
        )
        .await;
        // Readers run all through the move; every GET must succeed with the right bytes.
        let stop = Arc::new(AtomicBool::new(false));
        let (reads, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let reader = {
            let (s3, objects, stop) = (cluster.s3.clone(), objects.clone(), stop.clone());
            let (reads, failures) = (reads.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for (key, data) in &objects.0 {
                        let got = match s3.get_object().bucket(BUCKET).key(key).send().await {
                            Ok(o) => o.body.collect().await.ok().map(|b| b.into_bytes().to_vec()),
                            Err(_) => None,
                        };
                        reads.fetch_add(1, Ordering::Relaxed);
                        if got.as_deref() != Some(data.as_slice()) {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        cluster.add_node().await;
        let newcomer = NodeId(cluster.nodes[4].as_ref().unwrap().peer_id().to_bytes());
        let moved = (0..PARTITIONS)
            .filter(|p| cluster.owners(*p).contains(&newcomer))
            .count();
        assert!(moved > 0, "the new node should own some partitions");
        until_replicated(&cluster, &objects, true, 120).await;
        stop.store(true, Ordering::Relaxed);
        reader.await.unwrap();
        assert!(reads.load(Ordering::Relaxed) > 0);
        assert_eq!(failures.load(Ordering::Relaxed), 0, "a GET failed during the move");
        // The newcomer's share arrives by its own fetches or by the old owners pushing their
        // surplus copies to it, whichever runs first; either way it now holds chunks.
        let n = cluster.nodes[4].as_ref().unwrap();
        let held = objects
            .chunks()
            .iter()
            .filter(|c| n.chunk_store().expect("a storage node").contains(c))
            .count();
        assert!(held > 0, "the new node holds none of the objects' chunks");
        // Its copies can all arrive by pushes before its own first pass ends: wait (bounded)
        // for that pass's report.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let report = loop {
            match n.maintenance_report() {
                Some(report) => break report,
                None if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                None => panic!("the new node finished no maintenance pass in 30 s"),
            }
        };
        assert_eq!(report.partitions_moving, 0, "{report:?}");
        read_all(&cluster, &objects).await;
        cluster.nodes.clear();
    })
    .await;
}

/// Finds `needle` in the node's segment files; returns (file, offset).
fn find_in_segments(dir: &std::path::Path, needle: &[u8]) -> Option<(std::path::PathBuf, usize)> {
    for entry in std::fs::read_dir(dir.join("chunks")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "dat") {
            let bytes = std::fs::read(&path).unwrap();
            if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                return Some((path, at));
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_finds_flipped_bytes_and_the_copy_is_restored() {
    within(180, async {
        let cluster = Cluster::start(3, maintenance(3_600_000)).await;
        let objects = write_objects(&cluster, "rot", 3).await;
        let (key, data) = &objects.0[1];
        eventually(Duration::from_secs(60), "three copies", || async {
            fully_replicated(&cluster, &objects, true).is_ok()
        })
        .await;
        // Flip bytes in the middle of the object's first chunk on node 0's disk.
        let node = cluster.nodes[0].as_ref().unwrap().clone();
        let chunk = ChunkId::of(&data[..CHUNK_SIZE_BYTES.min(data.len())]);
        assert!(node.chunk_store().expect("a storage node").contains(&chunk));
        let (file, at) = find_in_segments(&cluster.dir.path().join("storage-0"), &data[500_000..500_064]).unwrap();
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
            f.write_all_at(&[data[500_010] ^ 0xff, data[500_011] ^ 0x55], (at + 10) as u64)
                .unwrap();
            f.sync_all().unwrap();
        }
        // Scrub finds it and sets it aside ...
        let bad = node.scrub(0).await;
        assert_eq!(bad, vec![chunk], "scrub should report exactly the damaged chunk");
        assert!(
            !node.chunk_store().expect("a storage node").contains(&chunk),
            "a corrupt copy stays set aside"
        );
        // ... and GETs meanwhile never serve it.
        for _ in 0..3 {
            assert!(cluster.get(key).await.unwrap() == *data, "a GET served wrong bytes");
        }
        // The next pass (started at once by the scrub) restores it from a healthy replica.
        eventually(Duration::from_secs(60), "the copy restored", || async {
            node.chunk_store()
                .expect("a storage node")
                .verify(&chunk)
                .ok()
                .flatten()
                .is_some()
        })
        .await;
        assert!(node.scrub(0).await.is_empty(), "a second scrub finds nothing");
        assert_eq!(node.counters().scrub_corrupt.load(Ordering::Relaxed), 1);
        read_all(&cluster, &objects).await;
    })
    .await;
}

/// Bytes the files under `dir` occupy on disk (allocated blocks).
fn disk_usage_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_usage_bytes(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_gibibyte_returns_the_disk_space() {
    within(600, async {
        const GRACE_MS: u64 = 2_000;
        let cluster = Cluster::start(3, maintenance(GRACE_MS)).await;
        let data_dirs: Vec<_> = (0..3)
            .map(|i| cluster.dir.path().join(format!("storage-{i}")))
            .collect();
        let usage = || data_dirs.iter().map(|d| disk_usage_bytes(d)).sum::<u64>();
        // Something that stays: an object sharing its content with one that is deleted
        // (identical chunks are stored once and referenced twice).
        let shared = body("shared", 2 * CHUNK_SIZE_BYTES);
        cluster.put("keep/shared", &shared).await;
        let start = usage();
        const OBJECT_BYTES: usize = 64 * 1024 * 1024;
        let count = 16; // 1 GiB
        for i in 0..count {
            cluster
                .put(&format!("big/{i:02}"), &body(&format!("big {i}"), OBJECT_BYTES))
                .await;
        }
        cluster.put("big/shared-copy", &shared).await;
        // A PUT returns once W = 2 copies are durable; the third follows in the background.
        let expected = 3 * (count as u64) * OBJECT_BYTES as u64 * 9 / 10;
        eventually(Duration::from_secs(120), "1 GiB × 3 copies on disk", || async {
            usage() - start >= expected
        })
        .await;
        let grown = usage() - start;
        for i in 0..count {
            cluster
                .s3
                .delete_object()
                .bucket(BUCKET)
                .key(format!("big/{i:02}"))
                .send()
                .await
                .unwrap();
        }
        cluster
            .s3
            .delete_object()
            .bucket(BUCKET)
            .key("big/shared-copy")
            .send()
            .await
            .unwrap();
        // After the grace period the references die, then (another grace period) the chunks
        // go — every chunk of the deleted objects, on each replica — and compaction gives the
        // segments back.
        let collected = || -> u64 {
            cluster
                .live()
                .iter()
                .map(|n| n.counters().chunks_collected.load(Ordering::Relaxed))
                .sum()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            let (now, gone) = (usage(), collected());
            if now <= start + grown / 10 && gone >= 3 * 16 * 16 {
                assert_eq!(gone, 3 * 16 * 16, "only the deleted objects' chunks are collected");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "disk usage {now} vs start {start} + 10% of {grown}; {gone} chunk copies collected"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // The shared content is still there, referenced by the surviving object.
        assert!(cluster.get("keep/shared").await.unwrap() == shared);
        let kept = Objects(vec![("keep/shared".to_string(), shared.clone())]);
        fully_replicated(&cluster, &kept, true).unwrap();
    })
    .await;
}
