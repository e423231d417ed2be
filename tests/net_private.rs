//! The private libp2p transport between real swarms on 127.0.0.1: nodes sharing the cluster
//! secret exchange requests; a node with another secret cannot connect at all; an oversized
//! message fails its request without harming the node.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use futures::StreamExt;
use hadss::net::codec::{FrameLimits, PostcardCodec};
use hadss::net::transport::build_swarm;
use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Req {
    Echo(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Resp {
    Echo(Vec<u8>),
}

impl hadss::net::codec::Body for Req {}
impl hadss::net::codec::Body for Resp {}

type Behaviour = request_response::Behaviour<PostcardCodec<Req, Resp>>;
const PROTOCOL: StreamProtocol = StreamProtocol::new("/hadss/test/1");
const LIMIT_BYTES: u32 = 64 * 1024;
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

fn swarm(secret: [u8; 32]) -> Swarm<Behaviour> {
    let limits = FrameLimits {
        request_size_bytes_max: LIMIT_BYTES,
        response_size_bytes_max: LIMIT_BYTES,
    };
    build_swarm(
        Keypair::generate_ed25519(),
        PreSharedKey::new(secret),
        hadss::net::fault::Faults::off(),
        |_| {
            request_response::Behaviour::with_codec(
                PostcardCodec::new(limits),
                [(PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            )
        },
    )
    .unwrap()
}

async fn listen(s: &mut Swarm<Behaviour>) -> Multiaddr {
    s.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = s.select_next_some().await {
            return address;
        }
    }
}

/// Drives both swarms until the client's request `payload` gets an answer or fails.
async fn request(
    server: &mut Swarm<Behaviour>,
    client: &mut Swarm<Behaviour>,
    payload: Vec<u8>,
) -> Result<(Resp, PeerId), String> {
    let server_id = *server.local_peer_id();
    let id = client.behaviour_mut().send_request(&server_id, Req::Echo(payload));
    let run = async {
        loop {
            tokio::select! {
                ev = server.select_next_some() => {
                    if let SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Request { request: Req::Echo(b), channel, .. }, ..
                    }) = ev {
                        let _ = server.behaviour_mut().send_response(channel, Resp::Echo(b));
                    }
                }
                ev = client.select_next_some() => match ev {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        peer, message: request_response::Message::Response { request_id, response },
                        ..
                    }) if request_id == id => return Ok((response, peer)),
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, error, .. })
                        if request_id == id => return Err(error.to_string()),
                    _ => {}
                }
            }
        }
    };
    tokio::time::timeout(TEST_TIMEOUT, run)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[tokio::test]
async fn same_secret_talks_other_secret_cannot_connect() {
    let secret = *blake3::hash(b"test cluster").as_bytes();
    let mut server = swarm(secret);
    let addr = listen(&mut server).await;
    let server_id = *server.local_peer_id();

    let mut member = swarm(secret);
    member.add_peer_address(server_id, addr.clone());
    let (resp, peer) = request(&mut server, &mut member, b"hello".to_vec()).await.unwrap();
    assert_eq!(resp, Resp::Echo(b"hello".to_vec()));
    assert_eq!(peer, server_id, "noise authenticated the server's key");

    let mut outsider = swarm([7u8; 32]);
    outsider.add_peer_address(server_id, addr);
    let result = request(&mut server, &mut outsider, b"let me in".to_vec()).await;
    assert!(result.is_err(), "a node with another secret got an answer: {result:?}");

    // The server is unharmed and still serves its member.
    let (resp, _) = request(&mut server, &mut member, b"still here".to_vec()).await.unwrap();
    assert_eq!(resp, Resp::Echo(b"still here".to_vec()));
}

#[tokio::test]
async fn oversized_messages_fail_cleanly() {
    let secret = *blake3::hash(b"limits").as_bytes();
    let mut server = swarm(secret);
    let addr = listen(&mut server).await;
    let mut client = swarm(secret);
    client.add_peer_address(*server.local_peer_id(), addr);
    let big = vec![1u8; LIMIT_BYTES as usize + 1];
    let result = request(&mut server, &mut client, big).await;
    assert!(result.is_err(), "an oversized request was delivered");
    let just_under = vec![2u8; LIMIT_BYTES as usize - 16];
    let (resp, _) = request(&mut server, &mut client, just_under.clone()).await.unwrap();
    assert_eq!(resp, Resp::Echo(just_under));
}

/// Two nodes that dial each other at the same moment both get their answer. (With dials
/// bound to the listening port, the two connects can form one TCP simultaneous-open
/// connection on which both ends start Noise as initiator, and both requests fail.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_in_both_directions_succeed() {
    const ROUNDS: usize = 40;
    let secret = *blake3::hash(b"simultaneous").as_bytes();
    for round in 0..ROUNDS {
        let mut a = swarm(secret);
        let mut b = swarm(secret);
        let (addr_a, addr_b) = (listen(&mut a).await, listen(&mut b).await);
        let (id_a, id_b) = (*a.local_peer_id(), *b.local_peer_id());
        a.add_peer_address(id_b, addr_b);
        b.add_peer_address(id_a, addr_a);
        let ask_a = a.behaviour_mut().send_request(&id_b, Req::Echo(b"from a".to_vec()));
        let ask_b = b.behaviour_mut().send_request(&id_a, Req::Echo(b"from b".to_vec()));
        let mut answered = (false, false);
        let run = async {
            while answered != (true, true) {
                let (ev, from_a) = tokio::select! {
                    ev = a.select_next_some() => (ev, true),
                    ev = b.select_next_some() => (ev, false),
                };
                let me = if from_a { &mut a } else { &mut b };
                match ev {
                    SwarmEvent::Behaviour(request_response::Event::Message { message, .. }) => match message {
                        request_response::Message::Request {
                            request: Req::Echo(body),
                            channel,
                            ..
                        } => {
                            let _ = me.behaviour_mut().send_response(channel, Resp::Echo(body));
                        }
                        request_response::Message::Response { request_id, .. } => {
                            if from_a && request_id == ask_a {
                                answered.0 = true;
                            } else if !from_a && request_id == ask_b {
                                answered.1 = true;
                            }
                        }
                    },
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure { error, .. }) => {
                        return Err(format!("round {round}: a request failed: {error}"));
                    }
                    _ => {}
                }
            }
            Ok(())
        };
        tokio::time::timeout(TEST_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| Err(format!("round {round}: timed out")))
            .unwrap();
    }
}
