//! The monitor quorum in one process over the real transport: three monitors form a Raft
//! quorum, publish the first map, auto-admit four storage nodes that ask to join, and every
//! node holds the same epoch. Then: a retried proposal applies once, unsafe changes are
//! refused with an explanation, the quorum survives losing its leader, and with a majority
//! gone proposals answer that the quorum is unavailable while data keeps flowing.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use hadss::cluster::change::{Change, Refusal};
use hadss::cluster::{NodeId, NodeState, ReplicationPolicy, Role};
use hadss::monitor::state::{Op, Outcome};
use hadss::monitor::{Monitor, MonitorConfig, RaftTiming};
use hadss::node::protocol::{AdminRequest, AdminResponse};
use hadss::node::{Node, NodeConfig};
use libp2p::Multiaddr;
use libp2p::identity::ed25519;
use libp2p::pnet::PreSharedKey;

fn monitor_config(dir: &std::path::Path, i: usize, secret: [u8; 32], key: &ed25519::Keypair) -> MonitorConfig {
    MonitorConfig {
        node: NodeConfig {
            data_dir: dir.join(format!("monitor-{i}")),
            listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
            secret: PreSharedKey::new(secret),
            map_key: key.public(),
            chunk_options: chunkstore::Options::default(),
            memory_budget_bytes: hadss::node::MEMORY_BUDGET_BYTES_DEFAULT,
            write_timeouts: Default::default(),
            zone: "m".into(),
            swim: hadss::config::SwimPreset::Fast.config(8),
            role: swim::Role::Monitor,
            clock: hadss::clock::Clock::system(),
            faults: hadss::net::fault::Faults::off(),
        },
        map_key: key.clone(),
        initial_monitors: Vec::new(),
        auto_admit: true,
        policy: ReplicationPolicy {
            replication: 3,
            write_quorum: 2,
            read_quorum: 2,
        },
        partitions: 64,
        timing: RaftTiming {
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
        },
    }
}

fn addr_of(node: &Node) -> Multiaddr {
    format!("{}/p2p/{}", node.listen_addr(), node.peer_id())
        .parse()
        .unwrap()
}

async fn leader_of(monitors: &[Option<Monitor>]) -> usize {
    for _ in 0..100 {
        for (i, m) in monitors.iter().enumerate() {
            if let Some(m) = m {
                let s = m.status();
                if s.leader == Some(s.raft_id) {
                    return i;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_publish_epochs_and_admit_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let secret: [u8; 32] = rand::random();
    let key = ed25519::Keypair::generate();
    let mut monitors = Vec::new();
    for i in 0..3 {
        monitors.push(Some(
            Monitor::start(monitor_config(dir.path(), i, secret, &key))
                .await
                .unwrap(),
        ));
    }
    let addrs: Vec<Multiaddr> = monitors.iter().map(|m| addr_of(m.as_ref().unwrap().node())).collect();
    for m in &monitors {
        m.as_ref().unwrap().form_quorum(&addrs).await.unwrap();
    }
    common::eventually(Duration::from_secs(20), "first map on every monitor", || async {
        monitors.iter().all(|m| m.as_ref().unwrap().node().epoch() >= 1)
    })
    .await;

    // Four storage nodes ask to join through one monitor; auto_admit takes them in.
    let mut storage = Vec::new();
    for i in 0..4 {
        let node = Arc::new(
            Node::start(common::config(dir.path(), i, secret, &key, 8))
                .await
                .unwrap(),
        );
        let (peer, dial) = hadss::node::client::split_peer_addr(&addrs[i % 3]).unwrap();
        tokio::spawn(hadss::monitor::client::join_until_member(
            node.clone(),
            vec![(peer, dial)],
            format!("z{}", i % 3),
        ));
        storage.push(node);
    }
    let storage_in_map = |m: &Monitor| {
        m.status()
            .map
            .map_or(0, |map| map.nodes.iter().filter(|n| n.role == Role::Storage).count())
    };
    common::eventually(Duration::from_secs(30), "four storage nodes admitted", || async {
        storage_in_map(monitors[0].as_ref().unwrap()) == 4
    })
    .await;
    let epoch = monitors[0].as_ref().unwrap().status().map.unwrap().epoch;
    common::eventually(Duration::from_secs(20), "the epoch on every node", || async {
        storage.iter().all(|n| n.epoch() == epoch)
            && monitors.iter().all(|m| m.as_ref().unwrap().node().epoch() == epoch)
    })
    .await;

    // A node with the cluster secret that is not a monitor cannot disturb elections: its
    // vote request (for itself, at a huge term) is refused and no monitor's term moves.
    let term_before: Vec<u64> = monitors.iter().map(|m| m.as_ref().unwrap().status().term).collect();
    let intruder = storage[3].peer_id();
    let vote = openraft::raft::VoteRequest::new(
        openraft::Vote::new(1_000_000, hadss::monitor::raft::raft_id_of(&intruder)),
        None,
    );
    let frame =
        hadss::node::protocol::RaftFrame(postcard::to_allocvec(&hadss::monitor::raft::RaftRpc::Vote(vote)).unwrap());
    let monitor_peer = monitors[0].as_ref().unwrap().node().peer_id();
    let answer = storage[3].raft_request(monitor_peer, frame).await.unwrap();
    let reply: hadss::monitor::raft::RaftRpcReply = postcard::from_bytes(&answer.0).unwrap();
    assert!(
        matches!(reply, hadss::monitor::raft::RaftRpcReply::Refused(ref why) if why.contains("not a monitor")),
        "{reply:?}"
    );
    let term_after: Vec<u64> = monitors.iter().map(|m| m.as_ref().unwrap().status().term).collect();
    assert_eq!(term_before, term_after, "no monitor's term moved");

    // Data flows through the admitted nodes.
    let id = storage[0].put_chunk(b"monitor test chunk".to_vec()).await.unwrap();
    assert_eq!(
        storage[3].get_chunk(&id).await.unwrap().unwrap(),
        &b"monitor test chunk"[..]
    );

    // A proposal resent with the same request id commits once.
    let net_secret = PreSharedKey::new(secret);
    let target = NodeId(storage[1].peer_id().to_bytes());
    let op = Op::Change(Change::SetWeight {
        id: target.clone(),
        weight: 150,
    });
    let timeout = Duration::from_secs(20);
    let first = hadss::monitor::client::propose_with_id(net_secret, &addrs, 42, op.clone(), timeout)
        .await
        .unwrap();
    assert_eq!(first, Outcome::Applied { epoch: epoch + 1 });
    let again = hadss::monitor::client::propose_with_id(net_secret, &addrs[1..], 42, op, timeout)
        .await
        .unwrap();
    assert_eq!(again, first, "a retry answers the first outcome");
    // A follower applies the commit a moment after the leader answers.
    let follower = monitors[2].as_ref().unwrap();
    common::eventually(Duration::from_secs(10), "the follower applies the change", || async {
        follower.status().map.is_some_and(|m| m.epoch == epoch + 1)
    })
    .await;

    // A policy whose reads can miss writes (W + R <= N) is refused with the reason.
    let weak = hadss::monitor::client::propose(
        net_secret,
        &addrs,
        Op::Change(Change::SetPolicy(ReplicationPolicy {
            replication: 3,
            write_quorum: 1,
            read_quorum: 1,
        })),
        timeout,
    )
    .await
    .unwrap();
    assert!(matches!(weak, Outcome::Refused(Refusal::Unsafe(_))), "{weak:?}");

    // Membership: a fourth monitor joins (learner, then voter), an original one leaves; the
    // map lists the monitors and each change is an epoch.
    monitors.push(Some(
        Monitor::start(monitor_config(dir.path(), 3, secret, &key))
            .await
            .unwrap(),
    ));
    let mut addrs = addrs;
    addrs.push(addr_of(monitors[3].as_ref().unwrap().node()));
    let new = monitors[3].as_ref().unwrap().node();
    let (new_peer, new_dial) = hadss::node::client::split_peer_addr(&addrs[3]).unwrap();
    let added = hadss::monitor::client::ask_monitors(
        net_secret,
        &addrs[..3],
        AdminRequest::AddMonitor {
            peer_id: new_peer.to_bytes(),
            addr: new_dial.to_string(),
            zone: "m".into(),
        },
        timeout,
    )
    .await
    .unwrap();
    assert!(
        matches!(added, AdminResponse::Outcome(Outcome::Applied { .. })),
        "{added:?}"
    );
    let monitors_in_map = |n: &Node| {
        n.map()
            .map_or(0, |m| m.nodes.iter().filter(|n| n.role == Role::Monitor).count())
    };
    common::eventually(Duration::from_secs(20), "four monitors in every node's map", || async {
        storage.iter().all(|n| monitors_in_map(n) == 4) && monitors_in_map(new) == 4
    })
    .await;
    assert_eq!(
        monitors[3].as_ref().unwrap().status().voters.len(),
        4,
        "the new monitor caught up and votes"
    );
    let old_peer = monitors[0].as_ref().unwrap().node().peer_id();
    let removed = hadss::monitor::client::ask_monitors(
        net_secret,
        &addrs[1..],
        AdminRequest::RemoveMonitor {
            peer_id: old_peer.to_bytes(),
        },
        timeout,
    )
    .await
    .unwrap();
    assert!(matches!(removed, AdminResponse::Outcome(_)), "{removed:?}");
    common::eventually(
        Duration::from_secs(20),
        "three monitors in every node's map",
        || async {
            storage.iter().all(|n| monitors_in_map(n) == 3)
                && storage
                    .iter()
                    .all(|n| n.map().is_some_and(|m| m.node(&NodeId(old_peer.to_bytes())).is_none()))
        },
    )
    .await;
    let gone = monitors[0].take().unwrap();
    gone.shutdown().await;
    drop(gone);
    // The membership change applies in two entries (joint, then final): wait until every
    // remaining monitor has applied the same epoch before counting from it.
    let epoch_of = |m: &Option<Monitor>| m.as_ref().map(|m| m.status().map.map_or(0, |map| map.epoch));
    common::eventually(Duration::from_secs(20), "the monitors agree on the epoch", || async {
        let epochs: Vec<u64> = monitors.iter().filter_map(epoch_of).collect();
        epochs.windows(2).all(|w| w[0] == w[1]) && storage.iter().all(|n| Some(n.epoch()) == epochs.first().copied())
    })
    .await;
    let epoch = monitors.iter().find_map(epoch_of).unwrap();

    // Kill the leader: the other two elect a new one and changes go on.
    let leader = leader_of(&monitors).await;
    let dead = monitors[leader].take().unwrap();
    dead.shutdown().await;
    drop(dead);
    let alive: Vec<Multiaddr> = (1..4).filter(|i| *i != leader).map(|i| addrs[i].clone()).collect();
    let drained = hadss::monitor::client::propose(
        net_secret,
        &alive,
        Op::Change(Change::SetState {
            id: target.clone(),
            state: NodeState::Draining,
        }),
        timeout,
    )
    .await
    .unwrap();
    assert_eq!(drained, Outcome::Applied { epoch: epoch + 1 });
    common::eventually(
        Duration::from_secs(20),
        "the next epoch on every storage node",
        || async { storage.iter().all(|n| n.epoch() == epoch + 1) },
    )
    .await;

    // Kill another: no majority. Proposals say so; data keeps flowing on the last map.
    let second = monitors.iter().position(|m| m.is_some()).unwrap();
    let dead = monitors[second].take().unwrap();
    dead.shutdown().await;
    drop(dead);
    let err = hadss::monitor::client::propose(
        net_secret,
        &addrs,
        Op::Change(Change::SetWeight { id: target, weight: 90 }),
        Duration::from_secs(12),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("monitor quorum is unavailable"), "{err}");
    let id = storage[2]
        .put_chunk(b"written with no monitor quorum".to_vec())
        .await
        .unwrap();
    assert!(storage[0].get_chunk(&id).await.unwrap().is_some());
}
