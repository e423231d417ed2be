//! The tokio driver over real UDP sockets and over an authenticated in-memory transport.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;
use swim::driver::{self, Incoming, Transport, UdpTransport};
use swim::{MembershipEvent, NodeIdentity, PeerId, Role, SwimConfig, SwimCore};
use tokio::sync::mpsc;

/// The local preset, so the test takes a couple of seconds of wall time.
fn fast_config() -> SwimConfig {
    SwimConfig::local(3)
}

fn identity(name: &str, addr: String) -> NodeIdentity {
    NodeIdentity::new(
        PeerId::new(name.as_bytes()).unwrap(),
        vec![addr],
        Role::Storage,
        "z1".into(),
        1,
    )
    .unwrap()
}

async fn wait_members(h: &driver::SwimHandle, n: usize) -> Vec<NodeIdentity> {
    for _ in 0..200 {
        let m = h.members().await.unwrap();
        if m.len() == n {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("did not reach {n} members: {:?}", h.members().await.unwrap());
}

#[tokio::test]
async fn three_members_over_udp_join_and_share_an_epoch() {
    let mut handles = vec![];
    let mut events = vec![];
    let mut ids = vec![];
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let t = UdpTransport::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let id = identity(name, t.local_addr().unwrap().to_string());
        let core = SwimCore::new(id.clone(), fast_config(), StdRng::seed_from_u64(i as u64)).unwrap();
        let (h, ev, _task) = driver::spawn(core, t);
        handles.push(h);
        events.push(ev);
        ids.push(id);
    }
    // b and c only know a's peer id and address, as from a seed list.
    let contact = NodeIdentity::contact(*ids[0].peer_id(), ids[0].addrs()[0].clone()).unwrap();
    handles[1].join(contact.clone()).await.unwrap();
    handles[2].join(contact).await.unwrap();
    for h in &handles {
        wait_members(h, 2).await;
    }
    assert!(handles[0].publish_epoch(5, [5; 32]).await.unwrap());
    for ev in &mut events[1..] {
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(MembershipEvent::Broadcast(b)) = ev.recv().await {
                    return b;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(
            got.broadcast,
            swim::Broadcast::Epoch(swim::EpochAnnouncement {
                epoch: 5,
                digest: [5; 32]
            })
        );
    }
    // A graceful leave is seen as down by the others.
    handles[2].leave().await.unwrap();
    wait_members(&handles[0], 1).await;
}

/// In-memory network whose transport authenticates senders, like libp2p would.
#[derive(Clone, Default)]
struct Hub {
    inboxes: Arc<Mutex<BTreeMap<PeerId, mpsc::Sender<Incoming>>>>,
}

struct HubTransport {
    hub: Hub,
    /// What the "transport" vouches for on packets we send.
    authenticated_as: PeerId,
    rx: mpsc::Receiver<Incoming>,
}

impl Hub {
    fn attach(&self, me: PeerId, authenticated_as: PeerId) -> HubTransport {
        let (tx, rx) = mpsc::channel(256);
        self.inboxes.lock().unwrap().insert(me, tx);
        HubTransport {
            hub: self.clone(),
            authenticated_as,
            rx,
        }
    }
}

impl Transport for HubTransport {
    async fn send(&mut self, to: &NodeIdentity, packet: Bytes) -> swim::Result<()> {
        let tx = self.hub.inboxes.lock().unwrap().get(to.peer_id()).cloned();
        if let Some(tx) = tx {
            let _ = tx.try_send(Incoming {
                bytes: packet,
                authenticated_peer: Some(self.authenticated_as),
            });
        }
        Ok(())
    }
    async fn recv(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }
}

#[tokio::test]
async fn driver_refuses_packets_whose_sender_is_not_the_authenticated_peer() {
    let hub = Hub::default();
    let spawn = |name: &str, auth: &str, seed: u64| {
        let id = identity(name, format!("mem://{name}"));
        let t = hub.attach(*id.peer_id(), PeerId::new(auth.as_bytes()).unwrap());
        let core = SwimCore::new(id.clone(), fast_config(), StdRng::seed_from_u64(seed)).unwrap();
        let (h, _ev, _task) = driver::spawn(core, t);
        (id, h)
    };
    let (a, ha) = spawn("a", "a", 1);
    let (_b, hb) = spawn("b", "b", 2);
    // "mallory" claims to be "s" in its packets, but the transport knows better.
    let (_s, hs) = spawn("s", "mallory", 3);
    hb.join(a.clone()).await.unwrap();
    hs.join(a.clone()).await.unwrap();
    let members = wait_members(&ha, 1).await;
    assert_eq!(members[0].peer_id().as_bytes(), b"b");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let members = ha.members().await.unwrap();
    assert!(
        members.iter().all(|m| m.peer_id().as_bytes() != b"s"),
        "spoofer admitted: {members:?}"
    );
    assert!(hs.members().await.unwrap().is_empty());
}
