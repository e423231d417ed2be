//! The wire messages of `/hadss/swim/1`: one SWIM packet per request.

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::net::codec::FrameLimits;

/// SWIM packets (one request per packet; the response is an empty acknowledgement).
pub const SWIM_PROTOCOL: StreamProtocol = StreamProtocol::new("/hadss/swim/1");

/// SWIM frames: one packet (at most `swim::config::PACKET_SIZE_BYTES_MAX`) and framing.
pub const SWIM_LIMITS: FrameLimits = FrameLimits {
    request_size_bytes_max: 2048,
    response_size_bytes_max: 64,
};

/// One SWIM packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwimPacket(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// Acknowledges a SWIM packet's delivery (SWIM's own acks travel as packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwimDelivered;

// No raw body: the whole message is the postcard header.
impl crate::net::codec::Body for SwimPacket {}
impl crate::net::codec::Body for SwimDelivered {}
