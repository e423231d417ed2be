//! Packet handling never panics on hostile input: random bytes, and real packets with
//! random mutations (which get past the header decoder far more often).
#![allow(clippy::unwrap_used, missing_docs)]

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use swim::sim::sim_identity;
use swim::{Broadcast, Effects, SwimConfig, SwimCore};

fn core(i: usize) -> SwimCore<StdRng> {
    core_and_timers(i).0
}

fn core_and_timers(i: usize) -> (SwimCore<StdRng>, Vec<swim::ScheduledTimer>) {
    let mut c = SwimCore::new(sim_identity(i, 1), SwimConfig::lan(8), StdRng::seed_from_u64(i as u64)).unwrap();
    let mut fx = Effects::default();
    c.bootstrap(0, (0..8).map(|j| sim_identity(j, 1)), &mut fx).unwrap();
    (c, fx.timers)
}

/// A few genuine packets from member 1 to member 0 (pings, gossip with an epoch).
fn real_packets() -> Vec<(usize, Vec<u8>)> {
    let (mut sender, timers) = core_and_timers(1);
    let mut fx = Effects::default();
    sender.publish_epoch(1, 3, [3; 32], &mut fx).unwrap();
    sender.join(2, sim_identity(0, 1), &mut fx).unwrap();
    let mut fx2 = Effects::default();
    // Fire the first probe / gossip timers: pings and gossip packets.
    for t in timers.into_iter().filter(|t| t.at_ms <= 1_000) {
        sender.handle_timer(t.at_ms, t.timer, &mut fx2).unwrap();
    }
    fx.packets
        .iter()
        .chain(fx2.packets.iter())
        .map(|p| (p.to.peer_id().to_string()[1..].parse().unwrap(), p.bytes.to_vec()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1600), auth in any::<bool>()) {
        let mut c = core(0);
        let mut fx = Effects::default();
        let peer = *sim_identity(1, 1).peer_id();
        let _ = c.handle_packet(5, auth.then_some(&peer), &data, &mut fx);
        let _ = Broadcast::decode(&data);
    }

    #[test]
    fn mutated_real_packets_never_panic(
        which in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        truncate in any::<Option<prop::sample::Index>>(),
    ) {
        let packets = real_packets();
        let (to, mut data) = packets[which.index(packets.len())].clone();
        for (at, byte) in flips {
            let i = at.index(data.len());
            data[i] = byte;
        }
        if let Some(t) = truncate {
            data.truncate(t.index(data.len() + 1));
        }
        let mut c = core(to);
        let mut fx = Effects::default();
        let _ = c.handle_packet(5, None, &data, &mut fx);
    }
}

#[test]
fn spoofed_sender_is_refused_and_genuine_accepted() {
    let packets = real_packets();
    let genuine = *sim_identity(1, 1).peer_id();
    let liar = *sim_identity(2, 1).peer_id();
    let mut fx = Effects::default();
    let (to, packet) = &packets[0];
    let mut c = core(*to);
    let err = c.handle_packet(5, Some(&liar), packet, &mut fx).unwrap_err();
    assert!(matches!(err, swim::SwimError::SenderMismatch { .. }), "{err}");
    assert!(fx.is_empty(), "a refused packet has no effect");
    c.handle_packet(6, Some(&genuine), packet, &mut fx).unwrap();
    assert_eq!(c.stats().packets_rejected, 1);
    assert_eq!(c.stats().packets_received, 1);
}

#[test]
fn unknown_broadcast_kind_is_a_clear_error() {
    // A real packet carrying one custom broadcast: swap its kind byte for an unknown one.
    let mut sender = core(1);
    let mut fx = Effects::default();
    sender.publish_epoch(1, 3, [3; 32], &mut fx).unwrap();
    let mut data = fx.packets[0].bytes.to_vec();
    let item = Broadcast::Epoch(swim::EpochAnnouncement {
        epoch: 3,
        digest: [3; 32],
    })
    .encode()
    .unwrap();
    let pos = data.windows(item.len()).position(|w| w == item.as_slice()).unwrap();
    data[pos + 1] = 200;
    // foca only reads packets addressed to the receiver: use the packet's destination.
    let to: usize = fx.packets[0].to.peer_id().to_string()[1..].parse().unwrap();
    let mut c = core(to);
    let mut fx = Effects::default();
    let err = c.handle_packet(5, None, &data, &mut fx).unwrap_err();
    assert!(err.to_string().contains("unknown broadcast kind 200"), "{err}");
}
