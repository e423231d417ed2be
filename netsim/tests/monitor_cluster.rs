//! Issue-5 acceptance against real processes: `netsim up` starts 3 `hadss monitor` and 4
//! `hadss storage` processes; the storage nodes ask to join and are admitted (automatically,
//! or one by one with `hadss admin node admit`), and the map reaches every node.
//!
//! Then: all three monitors are killed; 500 chunks and 500 records are written and read, one
//! storage node is killed, more are written and everything read again; a map change through
//! `hadss admin` is refused because the monitor quorum is unavailable. The monitors restart:
//! the map is intact and the next change yields the next epoch on every node. The Raft leader
//! is killed while a change is in flight (four times, the last with the followers paused so
//! the leader holds the change uncommitted when it dies): each change commits exactly once or
//! not at all, and a restarted leader catches up. Maps signed with another key, or carrying an old epoch, are refused by every
//! node.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{Down, hadss_binary, metric, phase};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hadss::cluster::{ClusterMap, MapEnvelope, Role};
use hadss::node::Node;
use hadss::node::protocol::{MapRequest, MapResponse};
use hadss::storage::records::{Record, RecordValue, Version};
use libp2p::{Multiaddr, PeerId};

/// Bound on every "every node sees it" wait.
const SPREAD_LIMIT: Duration = Duration::from_secs(20);

fn options(dir: PathBuf, auto_admit: bool) -> netsim::UpOptions {
    netsim::UpOptions {
        dir,
        storage: 4,
        zones: 3,
        hadss: hadss_binary(),
        partitions: 64,
        gateways: 0,
        monitors: 3,
        auto_admit,
        faults: false,
        storage_config_extra: String::new(),
    }
}

/// Runs `hadss admin ARGS --secret … --monitor …` and returns (success, stdout + stderr).
fn admin(cluster: &netsim::ClusterFile, monitors: &[Multiaddr], args: &[&str], timeout_s: u64) -> (bool, String) {
    let list: Vec<String> = monitors.iter().map(|m| m.to_string()).collect();
    let out = std::process::Command::new(hadss_binary())
        .arg("admin")
        .args(args)
        .arg("--secret")
        .arg(&cluster.cluster_secret_file)
        .arg("--monitor")
        .arg(list.join(","))
        .arg("--timeout-s")
        .arg(timeout_s.to_string())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Polls every node in `names` until each holds a map with epoch ≥ `epoch`; returns the maps.
async fn wait_epoch(cluster: &netsim::ClusterFile, names: &[&str], epoch: u64) -> Vec<ClusterMap> {
    let deadline = Instant::now() + SPREAD_LIMIT;
    let mut maps = Vec::new();
    for n in cluster.nodes.iter().filter(|n| names.contains(&n.name.as_str())) {
        loop {
            if let Ok(Some(m)) = netsim::map_of(cluster, n).await
                && m.epoch >= epoch
            {
                maps.push(m);
                break;
            }
            assert!(Instant::now() < deadline, "{} did not reach epoch {epoch}", n.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    maps
}

/// Waits (at most `SPREAD_LIMIT`) until no storage node reports a partition it is filling.
async fn wait_filled(cluster: &netsim::ClusterFile, storage: &[usize]) {
    let deadline = Instant::now() + SPREAD_LIMIT;
    for &i in storage {
        let addr = netsim::http_addr(&cluster.nodes[i]).unwrap();
        loop {
            let filling = match hadss::observe::get(addr, "/health", 2_000).await {
                Ok((200, text)) => serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|j| j["filling_partitions"].as_u64()),
                _ => None,
            };
            if filling == Some(0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} still filling: {filling:?}",
                cluster.nodes[i].name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The status of one monitor (asked alone).
async fn status_of(
    cluster: &netsim::ClusterFile,
    node: &netsim::NodeEntry,
) -> Option<hadss::node::protocol::StatusReport> {
    let secret = hadss::net::identity::load_cluster_secret(&cluster.cluster_secret_file).unwrap();
    let addr: Multiaddr = node.p2p_addr.parse().unwrap();
    hadss::monitor::client::status(secret, &[addr], Duration::from_secs(3))
        .await
        .ok()
}

/// The monitor that is the Raft leader, once the live monitors agree on one.
async fn leader(cluster: &netsim::ClusterFile, live: &[usize]) -> usize {
    let deadline = Instant::now() + SPREAD_LIMIT;
    loop {
        for &i in live {
            if let Some(s) = status_of(cluster, &cluster.nodes[i]).await
                && s.leader == Some(s.raft_id)
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no monitor leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn kill(node: &netsim::NodeEntry) {
    netsim::signal(node.pid, rustix::process::Signal::KILL).unwrap();
    for _ in 0..100 {
        if !netsim::is_running(node.pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} did not die", node.name);
}

fn restart(cluster: &mut netsim::ClusterFile, i: usize) {
    let n = &cluster.nodes[i];
    let pid = netsim::spawn_node(&n.cmd, &n.cwd, &n.data_dir.with_file_name("log")).unwrap();
    cluster.nodes[i].pid = pid;
}

fn index_of(cluster: &netsim::ClusterFile, role: &str) -> Vec<usize> {
    (0..cluster.nodes.len())
        .filter(|i| cluster.nodes[*i].role == role)
        .collect()
}

fn body(i: u64) -> Vec<u8> {
    let mut v = format!("no-monitor chunk {i} ").into_bytes();
    v.extend(std::iter::repeat_n((i % 251) as u8, 300 + (i as usize * 53) % 3000));
    v
}

fn record(client: &Node, i: u64) -> Record {
    let key = format!("bucket/no-monitor-{i}").into_bytes();
    Record {
        partition: client.partition_of(&key).unwrap(),
        key,
        version: Version {
            hlc: 50_000 + i,
            unique: [(i % 256) as u8; 16],
        },
        value: RecordValue::Data(format!("record {i}").into_bytes()),
    }
}

async fn write_and_read(client: &Node, range: std::ops::Range<u64>, read_upto: u64) {
    use futures::StreamExt;
    futures::stream::iter(range.clone())
        .for_each_concurrent(16, |i| async move {
            client.put_chunk(body(i)).await.unwrap();
            client.put_record(record(client, i)).await.unwrap();
        })
        .await;
    futures::stream::iter(0..read_upto)
        .for_each_concurrent(16, |i| async move {
            let id = chunkstore::ChunkId::of(&body(i));
            assert_eq!(client.get_chunk(&id).await.unwrap().unwrap(), body(i), "chunk {i}");
            let r = record(client, i);
            let got = client.get_record(r.partition, &r.key).await.unwrap().unwrap();
            assert_eq!(got.value, r.value, "record {i}");
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_publish_and_the_data_path_survives_their_loss() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let mut cluster = netsim::up(&options(cluster_dir.clone(), true)).await.unwrap();
    let _down = Down(cluster_dir.clone());
    phase(started, "3 monitors + 4 storage up, every storage node admitted");
    let monitors = index_of(&cluster, "monitor");
    let storage = index_of(&cluster, "storage");
    let monitor_addrs = netsim::monitor_addrs(&cluster);
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();

    // The map names the 3 monitors and 4 storage nodes, and every node holds that epoch.
    let first = netsim::map_of(&cluster, &cluster.nodes[monitors[0]])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.nodes.iter().filter(|n| n.role == Role::Monitor).count(), 3);
    assert_eq!(first.nodes.iter().filter(|n| n.role == Role::Storage).count(), 4);
    let maps = wait_epoch(&cluster, &all, first.epoch).await;
    assert!(maps.iter().all(|m| *m == maps[0]), "every node holds the same map");
    let epoch = maps[0].epoch;
    phase(started, &format!("epoch {epoch} on all 7 nodes"));
    let (ok, text) = admin(&cluster, &monitor_addrs, &["status"], 10);
    assert!(ok && text.contains(&format!("epoch {epoch}")), "{text}");
    // Status also asks each storage node for its maintenance progress.
    assert!(
        text.contains("data movement:") && text.contains("of 4 storage nodes reported"),
        "{text}"
    );
    assert!(
        !text.contains("unreachable"),
        "every storage node answers its progress: {text}"
    );
    // Each monitor reports its Raft state in /metrics and /health; exactly one leads.
    let mut leaders = 0;
    for &m in &monitors {
        let addr = netsim::http_addr(&cluster.nodes[m]).unwrap();
        let (code, text) = hadss::observe::get(addr, "/metrics", 2_000).await.unwrap();
        assert_eq!(code, 200);
        assert_eq!(metric(&text, "hadss_raft_voters"), 3, "{text}");
        assert_eq!(metric(&text, "hadss_monitor_map_epoch"), epoch);
        leaders += metric(&text, "hadss_raft_is_leader");
        let (code, health) = hadss::observe::get(addr, "/health", 2_000).await.unwrap();
        assert_eq!(code, 200);
        assert!(health.contains("\"raft_state\""), "{health}");
    }
    assert_eq!(leaders, 1, "one leader");

    // A client node (not in the map) that will write while the monitors are gone.
    let secret = hadss::net::identity::load_cluster_secret(&cluster.cluster_secret_file).unwrap();
    let client = common::client_node(&cluster, dir.path().join("client")).await;
    let seed: Multiaddr = cluster.nodes[storage[0]].p2p_addr.parse().unwrap();
    let (peer, dial) = hadss::node::client::split_peer_addr(&seed).unwrap();
    client.add_peer_address(peer, dial).await;
    assert_eq!(client.pull_map(peer).await.unwrap(), epoch);

    // Every monitor down: the data path goes on with the last epoch.
    for &m in &monitors {
        kill(&cluster.nodes[m]);
    }
    phase(started, "all 3 monitors killed");
    write_and_read(&client, 0..500, 500).await;
    phase(started, "500 chunks + 500 records written and read with no monitor");
    // Partitions the storage nodes took over as they were admitted one by one are filled
    // (synced with their old owners) within seconds; until then a read whose other replica
    // is the node killed next has too few counted answers (unavailable, never stale).
    wait_filled(&cluster, &storage).await;
    phase(started, "every storage node has filled the partitions it took over");
    let victim = storage[3];
    kill(&cluster.nodes[victim]);
    write_and_read(&client, 500..700, 700).await;
    phase(started, "one storage node killed too: 200 more written, all 700 read");
    let target = cluster.nodes[storage[0]].peer_id.clone();
    let (ok, text) = admin(&cluster, &monitor_addrs, &["node", "weight", &target, "120"], 4);
    assert!(!ok, "a change with no monitor must fail: {text}");
    assert!(text.contains("monitor quorum is unavailable"), "{text}");
    phase(started, "map change refused: monitor quorum unavailable");

    // The monitors come back with the map intact; the next change is the next epoch.
    for &m in &monitors {
        restart(&mut cluster, m);
    }
    netsim::write_cluster_file(&cluster_dir, &cluster).unwrap();
    let _ = leader(&cluster, &monitors).await;
    let after = status_of(&cluster, &cluster.nodes[monitors[1]])
        .await
        .unwrap()
        .map
        .unwrap();
    assert_eq!(after, maps[0], "the monitors' map is intact after the restart");
    let (ok, text) = admin(&cluster, &monitor_addrs, &["node", "weight", &target, "120"], 20);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("epoch {}", epoch + 1)), "{text}");
    restart(&mut cluster, victim);
    netsim::write_cluster_file(&cluster_dir, &cluster).unwrap();
    let maps = wait_epoch(&cluster, &all, epoch + 1).await;
    assert!(maps.iter().all(|m| m.epoch == epoch + 1 && *m == maps[0]));
    phase(
        started,
        &format!(
            "monitors restarted; epoch {} on all 7 nodes (the killed storage node too)",
            epoch + 1
        ),
    );
    let epoch = epoch + 1;

    // Kill the leader while a change is in flight: it commits exactly once or not at all.
    let mut epoch = epoch;
    // The last round pauses the followers first, so the leader has appended the change but
    // cannot commit it when it dies: the change must then commit once through the retry.
    for (round, (delay_ms, pause_followers)) in [(0u64, false), (30, false), (120, false), (300, true)]
        .into_iter()
        .enumerate()
    {
        let lead = leader(&cluster, &monitors).await;
        let followers: Vec<usize> = monitors.iter().copied().filter(|m| *m != lead).collect();
        if pause_followers {
            for &f in &followers {
                netsim::signal(cluster.nodes[f].pid, rustix::process::Signal::STOP).unwrap();
            }
        }
        let first = monitor_addrs[monitors.iter().position(|m| *m == lead).unwrap()].clone();
        let mut order = vec![first.clone()];
        order.extend(monitor_addrs.iter().filter(|a| **a != first).cloned());
        let weight = (200 + round).to_string();
        let list: Vec<String> = order.iter().map(|m| m.to_string()).collect();
        let child = std::process::Command::new(hadss_binary())
            .args([
                "admin",
                "node",
                "weight",
                &target,
                &weight,
                "--timeout-s",
                "30",
                "--secret",
            ])
            .arg(&cluster.cluster_secret_file)
            .arg("--monitor")
            .arg(list.join(","))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        kill(&cluster.nodes[lead]);
        if pause_followers {
            for &f in &followers {
                netsim::signal(cluster.nodes[f].pid, rustix::process::Signal::CONT).unwrap();
            }
        }
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let live: Vec<usize> = monitors.iter().copied().filter(|m| *m != lead).collect();
        let _ = leader(&cluster, &live).await;
        // What the surviving monitors hold after the dust settles.
        let mut held: Option<ClusterMap> = None;
        for &m in &live {
            let s = status_of(&cluster, &cluster.nodes[m]).await.unwrap().map.unwrap();
            if let Some(h) = &held {
                assert_eq!(*h, s, "the surviving monitors agree");
            }
            held = Some(s);
        }
        let held = held.unwrap();
        let node = held
            .nodes
            .iter()
            .find(|n| PeerId::from_bytes(&n.id.0).unwrap().to_string() == target)
            .unwrap();
        if node.weight.to_string() == weight {
            assert_eq!(held.epoch, epoch + 1, "committed exactly once (round {round}): {text}");
            assert!(out.status.success(), "the client saw the commit: {text}");
        } else {
            assert_eq!(held.epoch, epoch, "not committed at all (round {round}): {text}");
            assert!(!pause_followers, "the client's retry commits the change: {text}");
        }
        phase(
            started,
            &format!(
                "round {round}: leader killed after {delay_ms} ms; epoch {} -> {}",
                epoch, held.epoch
            ),
        );
        epoch = held.epoch;
        // The old leader comes back and catches up.
        restart(&mut cluster, lead);
        netsim::write_cluster_file(&cluster_dir, &cluster).unwrap();
        let caught_up = Instant::now() + SPREAD_LIMIT;
        loop {
            if let Some(s) = status_of(&cluster, &cluster.nodes[lead]).await
                && s.map.as_ref().is_some_and(|m| m.epoch == epoch)
            {
                break;
            }
            assert!(Instant::now() < caught_up, "the restarted monitor did not catch up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let maps = wait_epoch(&cluster, &all, epoch).await;
    assert!(maps.iter().all(|m| m.epoch == epoch));
    phase(
        started,
        "leader kills: every change exactly once or not at all; restarted leaders caught up",
    );

    // Forged and stale maps are refused by every node.
    let mut forged_map = maps[0].clone();
    forged_map.epoch = epoch + 100;
    let forged = MapEnvelope::sign(&forged_map, &libp2p::identity::ed25519::Keypair::generate()).unwrap();
    let key = hadss::cluster::keys::load_map_keypair(&cluster.map_key_file).unwrap();
    let mut old_map = maps[0].clone();
    old_map.epoch = epoch - 1;
    let stale = MapEnvelope::sign(&old_map, &key).unwrap();
    for n in &cluster.nodes {
        let addr: Multiaddr = n.p2p_addr.parse().unwrap();
        for env in [&forged, &stale] {
            let answer = hadss::node::client::map_request(secret, &addr, MapRequest::Offer(env.clone()))
                .await
                .unwrap();
            assert!(
                matches!(answer, MapResponse::Refused(_)),
                "{} took a bad map: {answer:?}",
                n.name
            );
        }
        assert_eq!(netsim::map_of(&cluster, n).await.unwrap().unwrap().epoch, epoch);
    }
    phase(started, "forged and stale maps refused by all 7 nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_admit_waiting_nodes_one_by_one() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let cluster = netsim::up(&options(cluster_dir.clone(), false)).await.unwrap();
    let _down = Down(cluster_dir.clone());
    let monitor_addrs = netsim::monitor_addrs(&cluster);
    let storage: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.role == "storage")
        .map(|n| n.peer_id.clone())
        .collect();
    // The storage nodes wait for admission; status lists them.
    let deadline = Instant::now() + SPREAD_LIMIT;
    loop {
        let (ok, text) = admin(&cluster, &monitor_addrs, &["status", "--json"], 10);
        let json: serde_json::Value = if ok {
            serde_json::from_str(&text).unwrap_or_default()
        } else {
            Default::default()
        };
        if json["pending"].as_array().is_some_and(|p| p.len() == storage.len()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "storage nodes not waiting for admission: {text}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    phase(started, "4 storage nodes wait for admission");
    for peer in &storage {
        let (ok, text) = admin(&cluster, &monitor_addrs, &["node", "admit", peer], 20);
        assert!(ok, "{text}");
    }
    netsim::wait_for_members(&cluster, storage.len()).await.unwrap();
    let (ok, text) = admin(&cluster, &monitor_addrs, &["status", "--json"], 10);
    assert!(ok, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["pending"].as_array().map(Vec::len), Some(0));
    let nodes = json["nodes"].as_array().unwrap();
    assert_eq!(nodes.iter().filter(|n| n["role"] == "storage").count(), 4);
    phase(started, "admitted one by one; every storage node holds the map");
    // Taking one node out is fine; a policy whose reads can miss writes is refused.
    let (ok, text) = admin(&cluster, &monitor_addrs, &["node", "out", &storage[0]], 20);
    assert!(ok, "{text}");
    let (ok, text) = admin(
        &cluster,
        &monitor_addrs,
        &[
            "policy",
            "--replication",
            "3",
            "--write-quorum",
            "1",
            "--read-quorum",
            "2",
        ],
        20,
    );
    assert!(!ok && text.contains("W + R must exceed N"), "{text}");
}
