//! One-off requests from outside the cluster's nodes (the admin CLI, tools): a short-lived
//! libp2p peer with the cluster secret dials one node, asks, and goes away.

use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::PreSharedKey;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};

use super::protocol::{
    ADMIN_LIMITS, ADMIN_PROTOCOL, AdminRequest, AdminResponse, MAP_LIMITS, MAP_PROTOCOL, MapRequest, MapResponse,
};
use crate::net::codec::PostcardCodec;
use crate::net::transport::build_swarm;

/// How long a one-off request may take, dial included.
pub const ONE_OFF_TIMEOUT_MS: u64 = 15_000;

/// Splits `/ip4/…/tcp/…/p2p/<id>` into the peer id and the address to dial.
pub fn split_peer_addr(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut dial = addr.clone();
    match dial.pop()? {
        Protocol::P2p(peer) => Some((peer, dial)),
        _ => None,
    }
}

/// Sends one map request to the node at `addr` (which must end in `/p2p/<peer id>`).
pub async fn map_request(secret: PreSharedKey, addr: &Multiaddr, request: MapRequest) -> anyhow::Result<MapResponse> {
    one_off(secret, addr, MAP_PROTOCOL, MAP_LIMITS, request).await
}

/// Sends one admin request to the node at `addr` (which must end in `/p2p/<peer id>`).
pub async fn admin_request(
    secret: PreSharedKey,
    addr: &Multiaddr,
    request: AdminRequest,
) -> anyhow::Result<AdminResponse> {
    one_off(secret, addr, ADMIN_PROTOCOL, ADMIN_LIMITS, request).await
}

/// One request of one protocol to one node, from a throwaway identity.
async fn one_off<Req, Resp>(
    secret: PreSharedKey,
    addr: &Multiaddr,
    protocol: libp2p::StreamProtocol,
    limits: crate::net::codec::FrameLimits,
    request: Req,
) -> anyhow::Result<Resp>
where
    Req: serde::Serialize + serde::de::DeserializeOwned + Send + Clone + std::fmt::Debug + 'static,
    Resp: serde::Serialize + serde::de::DeserializeOwned + Send + Clone + std::fmt::Debug + 'static,
{
    let (peer, dial) = split_peer_addr(addr).ok_or_else(|| anyhow::anyhow!("{addr} does not end in /p2p/<peer id>"))?;
    let mut swarm = build_swarm(Keypair::generate_ed25519(), secret, |_| {
        request_response::Behaviour::<PostcardCodec<Req, Resp>>::with_codec(
            PostcardCodec::new(limits),
            [(protocol, ProtocolSupport::Outbound)],
            request_response::Config::default().with_request_timeout(Duration::from_millis(ONE_OFF_TIMEOUT_MS)),
        )
    })?;
    swarm.add_peer_address(peer, dial);
    let id = swarm.behaviour_mut().send_request(&peer, request);
    let run = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, response },
                    ..
                }) if request_id == id => return Ok(response),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, error, .. })
                    if request_id == id =>
                {
                    anyhow::bail!("request to {peer} failed: {error}")
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_millis(ONE_OFF_TIMEOUT_MS), run)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {peer} within {ONE_OFF_TIMEOUT_MS} ms"))?
}
