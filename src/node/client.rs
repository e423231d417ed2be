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

use crate::net::codec::PostcardCodec;
use crate::net::transport::build_swarm;
use crate::node::admin::wire::{ADMIN_LIMITS, ADMIN_PROTOCOL, AdminRequest, AdminResponse};
use crate::node::maps::wire::{MAP_LIMITS, MAP_PROTOCOL, MapRequest, MapResponse};
use crate::node::records::wire::{META_LIMITS, META_PROTOCOL, MetaRequest, MetaResponse};

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

/// Sends metadata requests (record reads, anti-entropy questions) to several nodes at once
/// from one throwaway identity; answers in the order asked. Each address must end in
/// `/p2p/<peer id>`; the whole batch gets `ONE_OFF_TIMEOUT_MS`.
pub async fn meta_requests(
    secret: PreSharedKey,
    requests: Vec<(Multiaddr, MetaRequest)>,
) -> anyhow::Result<Vec<anyhow::Result<MetaResponse>>> {
    batch(secret, META_PROTOCOL, META_LIMITS, requests).await
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
    Req: serde::Serialize
        + serde::de::DeserializeOwned
        + crate::net::codec::Body
        + Send
        + Clone
        + std::fmt::Debug
        + 'static,
    Resp: serde::Serialize
        + serde::de::DeserializeOwned
        + crate::net::codec::Body
        + Send
        + Clone
        + std::fmt::Debug
        + 'static,
{
    batch(secret, protocol, limits, vec![(addr.clone(), request)])
        .await?
        .pop()
        .unwrap_or_else(|| Err(anyhow::anyhow!("no answer from {addr}")))
}

/// Requests of one protocol to several nodes at once, from one throwaway identity; answers
/// in the order asked, the whole batch within `ONE_OFF_TIMEOUT_MS`.
async fn batch<Req, Resp>(
    secret: PreSharedKey,
    protocol: libp2p::StreamProtocol,
    limits: crate::net::codec::FrameLimits,
    requests: Vec<(Multiaddr, Req)>,
) -> anyhow::Result<Vec<anyhow::Result<Resp>>>
where
    Req: serde::Serialize
        + serde::de::DeserializeOwned
        + crate::net::codec::Body
        + Send
        + Clone
        + std::fmt::Debug
        + 'static,
    Resp: serde::Serialize
        + serde::de::DeserializeOwned
        + crate::net::codec::Body
        + Send
        + Clone
        + std::fmt::Debug
        + 'static,
{
    let mut swarm = build_swarm(
        Keypair::generate_ed25519(),
        secret,
        crate::net::fault::Faults::off(),
        |_| {
            request_response::Behaviour::<PostcardCodec<Req, Resp>>::with_codec(
                PostcardCodec::new(limits),
                [(protocol, ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(Duration::from_millis(ONE_OFF_TIMEOUT_MS)),
            )
        },
    )?;
    let mut answers: Vec<Option<anyhow::Result<Resp>>> = Vec::with_capacity(requests.len());
    let mut pending = std::collections::HashMap::new();
    for (i, (addr, request)) in requests.into_iter().enumerate() {
        answers.push(None);
        let Some((peer, dial)) = split_peer_addr(&addr) else {
            answers[i] = Some(Err(anyhow::anyhow!("{addr} does not end in /p2p/<peer id>")));
            continue;
        };
        swarm.add_peer_address(peer, dial);
        pending.insert(swarm.behaviour_mut().send_request(&peer, request), i);
    }
    let run = async {
        while !pending.is_empty() {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, response },
                    ..
                }) => {
                    if let Some(i) = pending.remove(&request_id) {
                        answers[i] = Some(Ok(response));
                    }
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    request_id,
                    error,
                    peer,
                    ..
                }) => {
                    if let Some(i) = pending.remove(&request_id) {
                        answers[i] = Some(Err(anyhow::anyhow!("request to {peer} failed: {error}")));
                    }
                }
                _ => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(ONE_OFF_TIMEOUT_MS), run).await;
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(anyhow::anyhow!("no answer within {ONE_OFF_TIMEOUT_MS} ms"))))
        .collect())
}
