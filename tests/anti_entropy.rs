//! Merkle anti-entropy between in-process nodes over the real transport: replicas whose
//! record stores were made to differ (records written to one store only, newer versions on
//! another, as a lost write or an outage would leave them) converge within a few rounds on
//! each node, copying in both directions; then a round copies nothing and exchanges only
//! roots.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use hadss::cluster::MapEnvelope;
use hadss::node::Node;
use hadss::storage::records::{Record, RecordValue, Version};
use libp2p::identity::ed25519;

mod common;
use common::{config, eventually, map_of};

const NODES: usize = 3;

fn record(partition: u32, i: u64, hlc: u64) -> Record {
    Record {
        partition,
        key: format!("o/bucket/key-{i:06}").into_bytes(),
        version: Version {
            hlc,
            unique: [(i % 200) as u8; 16],
        },
        value: RecordValue::Data(format!("value {i} at {hlc}").into_bytes()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_replicas_converge_within_a_few_rounds() {
    let test = async {
        let dir = tempfile::tempdir().unwrap();
        let secret = *blake3::hash(b"anti-entropy test").as_bytes();
        let key = ed25519::Keypair::generate();
        let mut nodes: Vec<Node> = Vec::new();
        for i in 0..NODES {
            nodes.push(Node::start(config(dir.path(), i, secret, &key, NODES)).await.unwrap());
        }
        let env = MapEnvelope::sign(&map_of(&nodes, 1), &key).unwrap();
        for n in &nodes {
            n.offer_map(env.clone()).await.unwrap();
        }
        for n in &nodes {
            eventually(Duration::from_secs(20), "SWIM sees every node", || async {
                n.live_members().await.len() == NODES - 1
            })
            .await;
        }
        // With N = 3 of 3 nodes every node replicates every partition.
        let partitions = [0u32, 5, 17, 63];
        let mut expected: Vec<Record> = Vec::new();
        for &p in &partitions {
            // The same 500 records everywhere, then differences.
            let base: Vec<Record> = (0..500).map(|i| record(p, i, 1_000)).collect();
            for n in &nodes {
                n.record_store().expect("a storage node").put(base.clone()).unwrap();
            }
            let only_on_0 = record(p, 1_000, 1_000);
            let newer_on_1 = record(p, 7, 2_000);
            let newest_on_2 = record(p, 8, 3_000);
            let older_on_2 = record(p, 8, 1_500);
            nodes[0]
                .record_store()
                .expect("a storage node")
                .put(vec![only_on_0.clone()])
                .unwrap();
            nodes[1]
                .record_store()
                .expect("a storage node")
                .put(vec![newer_on_1.clone(), older_on_2])
                .unwrap();
            nodes[2]
                .record_store()
                .expect("a storage node")
                .put(vec![newest_on_2.clone()])
                .unwrap();
            expected.extend([only_on_0, newer_on_1, newest_on_2]);
        }
        let roots = |p: u32| -> Vec<_> {
            nodes
                .iter()
                .map(|n| n.record_store().expect("a storage node").merkle_root(p))
                .collect()
        };
        for &p in &partitions {
            let r = roots(p);
            assert!(r[0] != r[1] && r[1] != r[2], "partition {p} should differ everywhere");
        }

        // Rounds on every node: each compares every partition with one peer, the next peer
        // on the next round; a few rounds reach every pair.
        let converged = || partitions.iter().all(|&p| roots(p).windows(2).all(|w| w[0] == w[1]));
        let mut copied = 0;
        let mut rounds = 0;
        while !converged() {
            assert!(rounds < 3, "not converged after {rounds} rounds on every node");
            rounds += 1;
            for n in &nodes {
                let report = n.anti_entropy_round().await;
                assert_eq!(report.failed, 0, "{report:?}");
                copied += report.pulled + report.pushed;
            }
        }
        assert!(copied >= 3 * partitions.len() as u64, "copied {copied}");
        eprintln!("converged after {rounds} round(s) on every node, {copied} records copied");
        for rec in &expected {
            for (i, n) in nodes.iter().enumerate() {
                let got = n
                    .record_store()
                    .expect("a storage node")
                    .get(rec.partition, &rec.key)
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    got.version,
                    rec.version,
                    "node {i} key {:?}",
                    String::from_utf8_lossy(&rec.key)
                );
            }
        }

        // Converged: the next round copies nothing and sends only root questions and answers.
        let report = nodes[0].anti_entropy_round().await;
        assert_eq!((report.pulled, report.pushed, report.failed), (0, 0, 0));
        assert!(
            report.exchanged_bytes <= report.sessions * 64,
            "converged replicas exchanged {} bytes in {} sessions",
            report.exchanged_bytes,
            report.sessions
        );
        eprintln!("converged round: {report:?}");
    };
    tokio::time::timeout(Duration::from_secs(120), test)
        .await
        .expect("the anti-entropy test did not finish in 120 s");
}
