//! Helpers shared by the in-process node tests: node configs, a map over running nodes, and a
//! bounded poll.
#![allow(clippy::unwrap_used, dead_code)]

pub mod dev;
pub mod s3;

use std::time::Duration;

use hadss::cluster::{ClusterMap, NodeInfo, ReplicationPolicy};
use hadss::node::{Node, NodeConfig};
use libp2p::identity::ed25519;
use libp2p::pnet::PreSharedKey;

pub fn config(
    dir: &std::path::Path,
    i: usize,
    secret: [u8; 32],
    key: &ed25519::Keypair,
    cluster_size: usize,
) -> NodeConfig {
    NodeConfig {
        data_dir: dir.join(format!("node-{i}")),
        listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        secret: PreSharedKey::new(secret),
        map_key: key.public(),
        chunk_options: chunkstore::Options {
            segment_size_bytes: 8 * 1024 * 1024,
            chunk_size_bytes_max: 1024 * 1024,
            ..chunkstore::Options::default()
        },
        memory_budget_bytes: hadss::node::MEMORY_BUDGET_BYTES_DEFAULT / 8,
        write_timeouts: Default::default(),
        zone: format!("z{}", i % 3),
        swim: hadss::config::SwimPreset::Fast.config(cluster_size as u32),
        role: swim::Role::Storage,
        clock: hadss::clock::Clock::system(),
        faults: hadss::net::fault::Faults::off(),
    }
}

/// Polls `cond` every 100 ms for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn map_of(nodes: &[Node], epoch: u64) -> ClusterMap {
    let mut infos: Vec<NodeInfo> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| hadss_testkit::storage_info(n, &format!("z{}", i % 3)))
        .collect();
    infos.sort_by(|a, b| a.id.cmp(&b.id));
    ClusterMap {
        epoch,
        nodes: infos,
        policy: ReplicationPolicy {
            replication: 3,
            write_quorum: 2,
            read_quorum: 2,
        },
        partitions: 64,
    }
}
