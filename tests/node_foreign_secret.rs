//! A whole node started with another cluster secret, though it holds a validly signed map
//! naming it, cannot connect to the cluster or join its gossip: three nodes with the right
//! secret never see it as a member, it never sees them, its requests fail, and writes it
//! coordinates cannot reach a quorum. The three keep working among themselves.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{config, eventually, map_of};
use hadss::cluster::MapEnvelope;
use hadss::node::Node;
use libp2p::identity::ed25519;

const NODES: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_stays_outside() {
    let test = async {
        let dir = tempfile::tempdir().unwrap();
        let secret = *blake3::hash(b"the cluster's secret").as_bytes();
        let other_secret = *blake3::hash(b"some other secret").as_bytes();
        let key = ed25519::Keypair::generate();
        let mut nodes = Vec::new();
        for i in 0..NODES - 1 {
            nodes.push(Node::start(config(dir.path(), i, secret, &key, NODES)).await.unwrap());
        }
        let outsider = Node::start(config(dir.path(), 3, other_secret, &key, NODES))
            .await
            .unwrap();
        nodes.push(outsider);
        // Every node, the outsider included, is given the same valid map naming all four.
        let env = MapEnvelope::sign(&map_of(&nodes, 1), &key).unwrap();
        for n in &nodes {
            n.offer_map(env.clone()).await.unwrap();
        }
        let outsider = nodes.pop().unwrap();
        for n in &nodes {
            eventually(Duration::from_secs(20), "the three see each other", || async {
                n.live_members().await.len() == 2
            })
            .await;
        }
        // Give the outsider many SWIM periods (100 ms each in the fast preset) to try.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for n in &nodes {
            let members = n.live_members().await;
            assert!(!members.contains(&outsider.peer_id()), "the outsider joined the gossip");
            assert_eq!(members.len(), 2);
        }
        assert!(outsider.live_members().await.is_empty(), "the outsider sees no member");
        // A handshake that cannot complete may end only at the request timeout: run these
        // together.
        let (pull_in, pull_out, get) = tokio::join!(
            outsider.pull_map(nodes[0].peer_id()),
            nodes[0].pull_map(outsider.peer_id()),
            outsider.chunk_request(
                nodes[1].peer_id(),
                hadss::node::protocol::ChunkRequest::Get { id: [0; 32] }
            ),
        );
        assert!(pull_out.is_err(), "a member reached the outsider");
        // No connection: the request never reached a member (not an answer, not a closed
        // stream after one).
        assert!(
            matches!(
                get,
                Err(hadss::node::TransportError::Unreachable | hadss::node::TransportError::Timeout)
            ),
            "the outsider's request got {get:?}"
        );
        assert!(
            matches!(
                pull_in,
                Err(hadss::node::AdoptError::Transport(
                    hadss::node::TransportError::Unreachable | hadss::node::TransportError::Timeout
                ))
            ),
            "the outsider's map pull got {pull_in:?}"
        );
        // A member gives up on a handshake that cannot complete at its own upgrade timeout,
        // which may come a little after the outsider's request timeout: wait for the count.
        let refused_handshakes = || {
            nodes
                .iter()
                .map(|n| {
                    n.counters()
                        .inbound_connection_failures
                        .load(std::sync::atomic::Ordering::Relaxed)
                })
                .sum::<u64>()
        };
        eventually(
            Duration::from_millis(2 * hadss::net::transport::UPGRADE_TIMEOUT_MS),
            "the members count the outsider's failed connections",
            || async { refused_handshakes() > 0 },
        )
        .await;
        // Its writes cannot gather W=2 copies; the cluster's own writes still succeed.
        let attempts = (0..20u32).map(|i| outsider.put_chunk(format!("outsider chunk {i}").into_bytes()));
        let results = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(attempts))
            .await
            .unwrap();
        let refused = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(refused, 20, "every write the outsider coordinated failed");
        for i in 0..20u32 {
            let id = nodes[(i % 3) as usize]
                .put_chunk(format!("member chunk {i}").into_bytes())
                .await
                .unwrap();
            assert!(
                outsider
                    .chunk_store()
                    .expect("a storage node")
                    .get(&id)
                    .unwrap()
                    .is_none(),
                "nothing reached the outsider"
            );
        }
    };
    tokio::time::timeout(Duration::from_secs(120), test)
        .await
        .expect("test timed out");
}
