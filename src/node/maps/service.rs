//! Maps between nodes: adopting an offered or pulled map (verify, persist, learn its
//! addresses, join SWIM through its nodes, gossip the epoch, then make it the view), and
//! serving `/hadss/map/1`.

use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};

use crate::cluster::{ClusterMap, MapEnvelope, partition_of_key};
use crate::node::command::Command;
use crate::node::error::{AdoptError, TransportError};
use crate::node::maps::wire::{MapRequest, MapResponse};
use crate::node::runtime::{Inner, Node, peer_of};

impl Inner {
    /// Answers one map request.
    pub(in crate::node) async fn handle_map(self: Arc<Self>, request: MapRequest) -> MapResponse {
        match request {
            MapRequest::Get => MapResponse::Map(self.map.current_envelope()),
            MapRequest::Offer(env) => match self.offer_map(env).await {
                Ok(epoch) => MapResponse::Accepted(epoch),
                Err(e) => MapResponse::Refused(e.to_string()),
            },
        }
    }

    /// Adopts a map if it verifies and is newer; returns its epoch.
    pub(in crate::node) async fn offer_map(&self, env: MapEnvelope) -> Result<u64, AdoptError> {
        let map = self.map.store(env)?;
        let epoch = map.epoch;
        self.learn_addresses(&map).await;
        self.join_members(&map).await;
        if let Ok(digest) = map.digest() {
            let _ = self.swim.publish_epoch(epoch, digest).await;
        }
        if self.map.install(map) {
            tracing::info!(epoch, "accepted cluster map");
        } else {
            // The same map again (offered by several peers, pulled again): not news.
            tracing::debug!(epoch, "cluster map already held");
        }
        Ok(epoch)
    }

    /// Tells the swarm where the map's nodes listen.
    pub(in crate::node) async fn learn_addresses(&self, map: &ClusterMap) {
        let addrs: Vec<(PeerId, Multiaddr)> = map
            .nodes
            .iter()
            .filter_map(|n| Some((peer_of(&n.id)?, n.addrs.clone())))
            .flat_map(|(p, addrs)| addrs.into_iter().filter_map(move |a| Some((p, a.parse().ok()?))))
            .collect();
        let _ = self.cmd.send(Command::AddAddresses(addrs)).await;
    }

    /// Pulls the newest map from `peer` and adopts it.
    pub(in crate::node) async fn pull_map(&self, peer: PeerId) -> Result<u64, AdoptError> {
        match self.request(peer, MapRequest::Get).await? {
            MapResponse::Map(Some(env)) => self.offer_map(env).await,
            MapResponse::Map(None) => Err(AdoptError::PeerHasNone),
            other => Err(AdoptError::Unexpected(format!("{other:?}"))),
        }
    }
}

impl Node {
    /// Offers a signed map; accepted if it verifies and is newer.
    pub async fn offer_map(&self, env: MapEnvelope) -> Result<u64, AdoptError> {
        self.inner.offer_map(env).await
    }

    /// Asks `peer` for its newest map and adopts it if it verifies and is newer.
    pub async fn pull_map(&self, peer: PeerId) -> Result<u64, AdoptError> {
        self.inner.pull_map(peer).await
    }

    /// Offers a signed map to `peer` (which adopts it if it verifies and is newer).
    pub async fn offer_map_to(&self, peer: PeerId, env: MapEnvelope) -> Result<MapResponse, TransportError> {
        self.inner.request(peer, MapRequest::Offer(env)).await
    }

    /// The map this node holds.
    pub fn map(&self) -> Option<ClusterMap> {
        self.inner.view().map(|v| v.0.clone())
    }

    /// The epoch of the map this node holds.
    pub fn epoch(&self) -> u64 {
        self.inner.view().map_or(0, |v| v.0.epoch)
    }

    /// The partition a record key belongs to under the current map.
    pub fn partition_of(&self, key: &[u8]) -> Option<u32> {
        self.inner.view().map(|v| partition_of_key(v.0.partitions, key))
    }
}
