//! The wire messages of `/hadss/map/1`: get the newest signed map, or offer one.

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::cluster::MapEnvelope;
use crate::net::codec::FrameLimits;

/// Cluster map exchange.
pub const MAP_PROTOCOL: StreamProtocol = StreamProtocol::new("/hadss/map/1");

/// Map frames: one signed map.
pub const MAP_LIMITS: FrameLimits = FrameLimits {
    request_size_bytes_max: crate::cluster::map::MAP_SIZE_BYTES_MAX as u32 + 4096,
    response_size_bytes_max: crate::cluster::map::MAP_SIZE_BYTES_MAX as u32 + 4096,
};

/// A request for the cluster map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapRequest {
    /// Send your newest map.
    Get,
    /// Adopt this map if it verifies and is newer (how an operator seeds the first map).
    Offer(MapEnvelope),
}

/// The answer to a map request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapResponse {
    /// The newest map the peer holds, if any.
    Map(Option<MapEnvelope>),
    /// The offered map was adopted; the node now holds this epoch.
    Accepted(u64),
    /// The offered map was refused.
    Refused(String),
}

// No raw body: the whole message is the postcard header.
impl crate::net::codec::Body for MapRequest {}
impl crate::net::codec::Body for MapResponse {}
