//! The libp2p transport of every HADSS node: TCP, then Noise XX (authenticates the peer's
//! ed25519 key, so the remote `PeerId` is proven, and encrypts every byte once), then Yamux
//! streams, each passed through the fault layer (`super::fault`, a no-op unless netsim turned
//! it on).
//!
//! Only holders of the cluster secret complete the handshake: the Noise prologue is a key
//! derived from the secret ([`noise_prologue`]). Noise mixes the prologue into the handshake
//! hash that every handshake message's AEAD tag covers, so a peer with another prologue fails
//! the tag check of the first encrypted message it receives (the responder's, for an
//! initiator; the initiator's last message, for a responder) and no stream is ever opened.
//! This replaces an earlier private-network layer (`pnet`, XSalsa20 in software) under Noise
//! that encrypted every byte a second time and took about a quarter of a replica's cycles.
//! What a network attacker can and cannot do is in `docs/ARCHITECTURE.md` (Transport).
//!
//! Dials never reuse the listening port ([`FreshPorts`]): when two nodes dial each other at
//! the same moment from their listening ports, the two TCP connects form one 4-tuple, the
//! kernel makes them a single simultaneous-open connection, and both ends then start the
//! Noise handshake as initiator, so both dials fail. Port reuse only helps hole punching
//! through NATs, which a storage cluster does not do.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportError, TransportEvent};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Swarm, SwarmBuilder, Transport, noise, tcp, yamux};

use super::NetError;
use super::fault::{Faults, FaultyMuxer};

/// Time allowed for the whole connection upgrade (noise + yamux).
pub const UPGRADE_TIMEOUT_MS: u64 = 10_000;
/// Connections with no open stream are closed after this long.
pub const IDLE_CONNECTION_TIMEOUT_MS: u64 = 60_000;

/// Label of the key derivation that turns the cluster secret into the Noise prologue; a
/// new label is a new, incompatible handshake.
const NOISE_PROLOGUE_CONTEXT: &str = "hadss 2026-12 transport: noise prologue from the cluster secret v1";

/// The Noise prologue of a cluster: a key derived (BLAKE3) from its secret, so the secret
/// itself never enters the handshake and the prologue says nothing about it.
pub fn noise_prologue(secret: &PreSharedKey) -> [u8; 32] {
    // The key file text holds the 32 secret bytes (hex); the derivation sees all of them.
    blake3::derive_key(NOISE_PROLOGUE_CONTEXT, secret.to_string().as_bytes())
}

/// Builds a swarm over the cluster's transport with the behaviour `make` returns;
/// every stream obeys `faults` (`Faults::off()` outside netsim).
pub fn build_swarm<B, F>(keypair: Keypair, secret: PreSharedKey, faults: Faults, make: F) -> Result<Swarm<B>, NetError>
where
    B: NetworkBehaviour,
    F: FnOnce(&Keypair) -> B,
{
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|key| {
            let noise = noise::Config::new(key)?.with_prologue(noise_prologue(&secret).to_vec());
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                FreshPorts(tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)))
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(yamux::Config::default())
                    .timeout(Duration::from_millis(UPGRADE_TIMEOUT_MS))
                    .map(move |(peer, muxer), _| (peer, FaultyMuxer::new(muxer, peer, faults.clone()))),
            )
        })
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_behaviour(|key| make(key))
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_millis(IDLE_CONNECTION_TIMEOUT_MS)))
        .build();
    Ok(swarm)
}

/// A transport whose dials always bind a fresh local port (see the module comment).
#[derive(Debug)]
pub struct FreshPorts<T>(pub T);

impl<T: Transport + Unpin> Transport for FreshPorts<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Self::Error>> {
        self.0.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(&mut self, addr: Multiaddr, opts: DialOpts) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.0.dial(
            addr,
            DialOpts {
                port_use: PortUse::New,
                ..opts
            },
        )
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}
