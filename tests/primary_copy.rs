//! The primary-copy write path with real nodes: three storage nodes (N=3, W=2) and a gateway
//! that is not in the map. The gateway sends each chunk once, to the chunk's first live
//! replica, which stores and forwards it; when that primary is gone, the next node takes its
//! role and the write still succeeds.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hadss_testkit::{Cluster, ClusterOptions, wait_until};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const CHUNK_SIZE_BYTES: usize = 64 * 1024;

fn chunk(i: u32) -> Vec<u8> {
    let mut data = vec![0u8; CHUNK_SIZE_BYTES];
    for (j, b) in data.iter_mut().enumerate() {
        *b = (j as u32).wrapping_mul(2_654_435_761).wrapping_add(i).to_le_bytes()[1];
    }
    data[..4].copy_from_slice(&i.to_le_bytes());
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_sends_each_chunk_once_and_falls_back_when_the_primary_is_gone() {
    let test = async {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster::start(dir.path(), ClusterOptions::default()).await.unwrap();
        let gateway = cluster.gateway().clone();

        // Each chunk leaves the gateway once; the primaries forward the other copies.
        let mut ids = Vec::new();
        for i in 0..20u32 {
            ids.push((gateway.put_chunk(chunk(i)).await.unwrap(), i));
        }
        let counters = gateway.counters();
        let put = counters.chunk_bytes_put.load(Relaxed);
        assert_eq!(put, 20 * CHUNK_SIZE_BYTES as u64);
        assert_eq!(
            counters.chunk_bytes_sent.load(Relaxed),
            put,
            "the gateway sent a chunk more than once"
        );
        assert_eq!(counters.primary_fallbacks.load(Relaxed), 0);
        assert!(
            counters.chunk_copies_acked.load(Relaxed) >= 2 * 20,
            "fewer than W copies acknowledged"
        );
        let forwarded: u64 = cluster
            .storage()
            .iter()
            .map(|n| n.counters().chunk_bytes_sent.load(Relaxed))
            .sum();
        // Each primary sends the chunk to the two other replicas.
        assert_eq!(
            forwarded,
            2 * put,
            "the primaries did not forward each chunk to the other replicas"
        );
        // Every replica ends up with its copy.
        let storage = cluster.storage();
        wait_until(10_000, "every replica holds every chunk", || {
            let storage = storage.clone();
            let ids = ids.clone();
            async move {
                ids.iter()
                    .all(|(id, _)| storage.iter().all(|n| n.chunk_store().unwrap().contains(id)))
            }
        })
        .await
        .unwrap();
        drop(storage);

        // Stop the primary of the next chunk and write it at once, before SWIM can report
        // the primary down: the gateway must move on to the next node.
        let next = chunk(1000);
        let next_id = chunkstore::ChunkId::of(&next);
        let primary = gateway.chunk_replicas(&next_id)[0];
        let index = cluster.storage().iter().position(|n| n.peer_id() == primary).unwrap();
        cluster.stop(index);
        assert_eq!(gateway.put_chunk(next.clone()).await.unwrap(), next_id);
        assert!(
            counters.primary_fallbacks.load(Relaxed) >= 1,
            "the write did not go through a fallback primary"
        );
        // Both surviving replicas hold it (W=2 of the two left).
        for n in cluster.storage() {
            assert!(
                n.chunk_store().unwrap().contains(&next_id),
                "a surviving replica lacks the chunk"
            );
        }
        assert_eq!(gateway.get_chunk(&next_id).await.unwrap().unwrap(), next);
        for (id, i) in &ids {
            assert_eq!(gateway.get_chunk(id).await.unwrap().unwrap(), chunk(*i));
        }
    };
    tokio::time::timeout(TEST_TIMEOUT, test).await.unwrap();
}

fn record(partition: u32, i: u32) -> hadss::storage::records::Record {
    hadss::storage::records::Record {
        partition,
        key: format!("k/{i}").into_bytes(),
        version: hadss::storage::records::Version {
            hlc: (u64::from(i) + 1) << 16,
            unique: [7; 16],
        },
        value: hadss::storage::records::RecordValue::Data(format!("value {i}").into_bytes()),
    }
}

/// Records take the same path: the gateway sends each once, to the partition's first live
/// replica, which writes and forwards it; with that replica stopped, the next one takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_sends_each_record_once_and_falls_back_when_the_primary_is_gone() {
    let test = async {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster::start(dir.path(), ClusterOptions::default()).await.unwrap();
        let gateway = cluster.gateway().clone();
        let partition = 5;
        for i in 0..20u32 {
            assert_eq!(
                gateway.put_record_checked(record(partition, i)).await.unwrap(),
                hadss::node::RecordWrite::Written
            );
        }
        let counters = gateway.counters();
        assert_eq!(counters.records_put.load(Relaxed), 20);
        assert_eq!(
            counters.record_copies_sent.load(Relaxed),
            20,
            "the gateway sent a record more than once"
        );
        let forwarded: u64 = cluster
            .storage()
            .iter()
            .map(|n| n.counters().record_copies_sent.load(Relaxed))
            .sum();
        assert_eq!(
            forwarded,
            2 * 20,
            "the primary did not forward each record to the two others"
        );
        // Written again at the same version (a retry): kept as it is, reported as such.
        assert_eq!(
            gateway.put_record_checked(record(partition, 3)).await.unwrap(),
            hadss::node::RecordWrite::Superseded
        );

        // The primary stopped before SWIM can tell: the next replica takes the write.
        let primary = gateway.record_replicas(partition)[0];
        let index = cluster.storage().iter().position(|n| n.peer_id() == primary).unwrap();
        cluster.stop(index);
        let fallbacks = counters.primary_fallbacks.load(Relaxed);
        assert_eq!(
            gateway.put_record_checked(record(partition, 100)).await.unwrap(),
            hadss::node::RecordWrite::Written
        );
        assert!(
            counters.primary_fallbacks.load(Relaxed) > fallbacks,
            "the write did not go through a fallback primary"
        );
        for n in cluster.storage() {
            let held = n.record_store().unwrap().get(partition, b"k/100").unwrap();
            assert_eq!(
                held,
                Some(record(partition, 100)),
                "a surviving replica lacks the record"
            );
        }
        let read = gateway.get_record(partition, b"k/7").await.unwrap();
        assert_eq!(read, Some(record(partition, 7)));
    };
    tokio::time::timeout(TEST_TIMEOUT, test).await.unwrap();
}
