//! Five in-process storage nodes on 127.0.0.1 over the private libp2p transport, N=3, W=2,
//! R=2: chunks and records written through one node are readable through every node; a
//! damaged copy is never served and is replaced; a replica missing a chunk or holding an old
//! record version is repaired by reads; with one node stopped, writes still succeed
//! (fallback with hints) and everything stays readable; when it restarts, the fallbacks hand
//! its copies back and drop their own; a peer sending a chunk whose bytes do not match its id
//! is refused and counted.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

mod common;

use common::{config, eventually, map_of};
use hadss::cluster::MapEnvelope;
use hadss::node::Node;
use hadss::node::protocol::{MetaRequest, MetaResponse};
use hadss::storage::records::{Record, RecordValue, Version};
use libp2p::identity::ed25519;

const NODES: usize = 5;

fn body(i: u64) -> Vec<u8> {
    let mut v = format!("chunk {i} ").into_bytes();
    v.extend(std::iter::repeat_n((i % 251) as u8, 1000 + (i as usize * 37) % 3000));
    v
}

fn record(node: &Node, i: u64) -> Record {
    let key = format!("bucket/object-{i}").into_bytes();
    Record {
        partition: node.partition_of(&key).unwrap(),
        key,
        version: Version {
            hlc: 1_000 + i,
            unique: [i as u8; 16],
        },
        value: RecordValue::Data(format!("metadata {i}").into_bytes()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_writes_survive_a_stopped_node() {
    let test = async {
        let dir = tempfile::tempdir().unwrap();
        let secret = *blake3::hash(b"node replication test").as_bytes();
        let key = ed25519::Keypair::generate();
        let mut nodes = Vec::new();
        for i in 0..NODES {
            nodes.push(Node::start(config(dir.path(), i, secret, &key, NODES)).await.unwrap());
        }
        // The map reaches node 0 from the operator, the others pull it from node 0.
        let env = MapEnvelope::sign(&map_of(&nodes, 1), &key).unwrap();
        nodes[0].offer_map(env).await.unwrap();
        for n in &nodes[1..] {
            n.add_peer_address(nodes[0].peer_id(), nodes[0].listen_addr().clone())
                .await;
            assert_eq!(n.pull_map(nodes[0].peer_id()).await.unwrap(), 1);
        }
        // SWIM over libp2p: every node sees the four others.
        for n in &nodes {
            eventually(Duration::from_secs(20), "SWIM membership of 5", || async {
                n.live_members().await.len() == NODES - 1
            })
            .await;
        }
        // A map signed by another key is refused.
        let rogue = ed25519::Keypair::generate();
        assert!(
            nodes[1]
                .offer_map(MapEnvelope::sign(&map_of(&nodes, 9), &rogue).unwrap())
                .await
                .is_err()
        );

        let mut ids = Vec::new();
        for i in 0..200u64 {
            ids.push((nodes[(i % 5) as usize].put_chunk(body(i)).await.unwrap(), i));
            nodes[0].put_record(record(&nodes[0], i)).await.unwrap();
        }
        // Every chunk has at least W=2 durable copies, at most N=3.
        for (id, _) in &ids {
            let copies = nodes
                .iter()
                .filter(|n| n.chunk_store().expect("a storage node").contains(id))
                .count();
            assert!((2..=3).contains(&copies), "chunk {id:?} has {copies} copies");
        }
        for n in &nodes {
            for (id, i) in ids.iter().step_by(7) {
                assert_eq!(n.get_chunk(id).await.unwrap().unwrap(), body(*i));
            }
            for i in (0..200u64).step_by(11) {
                let want = record(&nodes[0], i);
                let got = n.get_record(want.partition, &want.key).await.unwrap().unwrap();
                assert_eq!(got, want);
            }
        }

        // Flip a byte of one chunk inside a holder's segment file: the holder never serves the
        // bad copy, reads it from another replica, and replaces its own copy.
        let (victim_id, victim_i) = ids[17];
        let holder = nodes
            .iter()
            .find(|n| n.chunk_store().expect("a storage node").contains(&victim_id))
            .unwrap();
        // The record header holds the id at offset 16; its payload starts at offset 64.
        let needle = victim_id.0;
        let mut flipped = false;
        for entry in std::fs::read_dir(holder.chunk_store().expect("a storage node").dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "dat") {
                let raw = std::fs::read(&path).unwrap();
                if let Some(id_at) = raw.windows(needle.len()).position(|w| w == needle) {
                    let at = id_at - 16 + 64 + 2;
                    use std::os::unix::fs::FileExt;
                    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    f.write_all_at(&[raw[at] ^ 0xff], at as u64).unwrap();
                    flipped = true;
                }
            }
        }
        assert!(flipped, "found the chunk's bytes on disk");
        assert_eq!(
            holder.get_chunk(&victim_id).await.unwrap().unwrap(),
            body(victim_i),
            "served from a replica"
        );
        assert!(
            holder.chunk_store().expect("a storage node").contains(&victim_id),
            "the bad copy was replaced"
        );
        assert_eq!(
            &holder
                .chunk_store()
                .expect("a storage node")
                .get(&victim_id)
                .unwrap()
                .unwrap()[..],
            &body(victim_i)[..]
        );
        assert!(holder.chunk_store().expect("a storage node").stats().corruptions >= 1);

        // Read repair of a chunk: the first replica loses its copy; a read through a node that
        // holds none finds it missing there, succeeds from the next replica, and gives the
        // first replica the bytes back.
        let (lost_id, lost_i) = ids[23];
        let replicas = nodes[0].chunk_replicas(&lost_id);
        let first = nodes.iter().find(|n| n.peer_id() == replicas[0]).unwrap();
        assert!(first.chunk_store().expect("a storage node").delete(&lost_id).unwrap());
        let reader = nodes.iter().find(|n| !replicas.contains(&n.peer_id())).unwrap();
        assert_eq!(reader.get_chunk(&lost_id).await.unwrap().unwrap(), body(lost_i));
        eventually(
            Duration::from_secs(10),
            "the first replica has the chunk again",
            || async { first.chunk_store().expect("a storage node").contains(&lost_id) },
        )
        .await;

        // Read repair of a record: a newer version reaches only the first replica; a quorum
        // read returns it and writes it to the second replica it read.
        let mut newer = record(&nodes[0], 5);
        newer.version.hlc += 1_000_000;
        newer.value = RecordValue::Data(b"newer".to_vec());
        let owners = nodes[0].record_replicas(newer.partition);
        let requester = nodes.iter().find(|n| n.peer_id() != owners[0]).unwrap();
        let answer = requester
            .meta_request(
                owners[0],
                MetaRequest::Put {
                    records: vec![newer.clone()],
                    hint_for: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(answer, MetaResponse::Applied(vec![true]));
        assert_eq!(
            nodes[4].get_record(newer.partition, &newer.key).await.unwrap(),
            Some(newer.clone())
        );
        let second = nodes.iter().find(|n| n.peer_id() == owners[1]).unwrap();
        eventually(
            Duration::from_secs(10),
            "the second replica has the newer record",
            || async {
                second
                    .record_store()
                    .expect("a storage node")
                    .get(newer.partition, &newer.key)
                    .unwrap()
                    == Some(newer.clone())
            },
        )
        .await;

        // A peer sending bytes that do not match the claimed id is refused and counted.
        let forged = hadss::node::protocol::ChunkRequest::Put {
            id: *blake3::hash(b"what was promised").as_bytes(),
            data: bytes::Bytes::from_static(b"something else"),
            coordinate: false,
            hint_for: None,
        };
        let answer = nodes[0].chunk_request(nodes[1].peer_id(), forged).await.unwrap();
        assert!(
            matches!(&answer, hadss::node::protocol::ChunkResponse::Error(e) if e.code == hadss::node::protocol::ErrorCode::BadRequest),
            "{answer:?}"
        );
        assert_eq!(
            nodes[1]
                .counters()
                .chunk_id_mismatch
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert!(
            !nodes[1]
                .chunk_store()
                .expect("a storage node")
                .contains(&chunkstore::ChunkId::of(b"something else"))
        );

        // Stop node 2: SWIM declares it down everywhere; writes go to fallbacks at once,
        // reads find another replica.
        let stopped = nodes.remove(2);
        let stopped_id = stopped.peer_id();
        let stopped_addr = stopped.listen_addr().clone();
        drop(stopped);
        for n in &nodes {
            eventually(Duration::from_secs(20), "the stopped node declared down", || async {
                n.is_down(&stopped_id)
            })
            .await;
        }
        for i in 200..260u64 {
            ids.push((nodes[(i % 4) as usize].put_chunk(body(i)).await.unwrap(), i));
            nodes[1].put_record(record(&nodes[1], i)).await.unwrap();
        }
        for (id, i) in &ids {
            assert_eq!(nodes[3].get_chunk(id).await.unwrap().unwrap(), body(*i), "chunk {i}");
        }
        for i in (0..260u64).step_by(3) {
            let want = record(&nodes[0], i);
            if i == 5 {
                continue; // rewritten above
            }
            let got = nodes[0].get_record(want.partition, &want.key).await.unwrap();
            assert_eq!(got, Some(want), "record {i}");
        }
        let held: u64 = nodes.iter().map(|n| n.hints_held()).sum();
        assert!(held > 0, "fallbacks hold hints for the stopped node");

        // Restart node 2 at its address: the fallbacks hand back what it missed, then drop
        // their surplus copies.
        let mut restart = config(dir.path(), 2, secret, &key, NODES);
        restart.listen = stopped_addr;
        let back = Node::start(restart).await.unwrap();
        assert_eq!(back.peer_id(), stopped_id);
        assert_eq!(back.epoch(), 1, "the map persisted across the restart");
        eventually(Duration::from_secs(30), "every hint handed back", || async {
            nodes.iter().map(|n| n.hints_held()).sum::<u64>() == 0
        })
        .await;
        let handed: u64 = nodes
            .iter()
            .map(|n| n.counters().hints_handed_off.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        assert_eq!(handed, held, "each hint was delivered, none dropped");
        for (id, i) in &ids[200..] {
            if back.chunk_replicas(id).contains(&stopped_id) {
                assert_eq!(
                    &back
                        .chunk_store()
                        .expect("a storage node")
                        .get(id)
                        .unwrap()
                        .expect("handed back")[..],
                    &body(*i)[..],
                    "chunk {i}"
                );
            }
            let copies = nodes
                .iter()
                .chain([&back])
                .filter(|n| n.chunk_store().expect("a storage node").contains(id))
                .count();
            assert!(copies <= 3, "chunk {i}: surplus copies dropped, {copies} left");
        }
        for i in 200..260u64 {
            let want = record(&nodes[0], i);
            if back.record_replicas(want.partition).contains(&stopped_id) {
                assert_eq!(
                    back.record_store()
                        .expect("a storage node")
                        .get(want.partition, &want.key)
                        .unwrap(),
                    Some(want),
                    "record {i}"
                );
            }
        }
        nodes.insert(2, back);

        // A new epoch given to one node reaches the others through SWIM gossip and a pull.
        let env = MapEnvelope::sign(&map_of(&nodes, 2), &key).unwrap();
        nodes[0].offer_map(env).await.unwrap();
        for n in &nodes {
            eventually(Duration::from_secs(20), "epoch 2 everywhere", || async {
                n.epoch() == 2
            })
            .await;
        }
    };
    tokio::time::timeout(Duration::from_secs(120), test)
        .await
        .expect("test timed out");
}
