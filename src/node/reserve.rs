//! Create reservations: the coordinator side of race-safe create-only writes. A creator
//! asks the N replicas of the key's partition, in preference order, to reserve it under a
//! random token (`MetaRequest::Reserve`); each replica grants at most one unexpired token per key, and
//! none while it stores a live record there, in one durable transaction. Holding a majority
//! (N/2 + 1) of grants makes the creator the only one: two majorities of the same N share a
//! replica, and that replica granted only one of them. Losers are told whether the key
//! exists (a replica had it) or is being created by someone else (`Conflict`, S3's 409).
//!
//! The creator writes its record normally (W copies) and releases; a reservation it could
//! not release (a crash) expires after `CREATE_RESERVATION_TTL_MS`.

use std::sync::Arc;

use super::runtime::Inner;
use super::runtime::Node;
use crate::cluster::NodeId;
use crate::node::records::wire::{MetaRequest, MetaResponse};
use crate::storage::records::Reservation;

/// How long a create reservation lasts if its creator never releases it.
pub const CREATE_RESERVATION_TTL_MS: u32 = 30_000;

/// A majority's reservation of one key.
#[derive(Debug, Clone)]
pub struct CreateLease {
    partition: u32,
    key: Vec<u8>,
    token: [u8; 16],
    holders: Vec<NodeId>,
}

/// Why a create reservation was not had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateRefusal {
    /// A replica stores a live record under the key.
    Exists,
    /// Another creator holds grants; retry may succeed.
    Conflict,
    /// Too few replicas answered.
    Unavailable(String),
}

impl Inner {
    async fn reserve_at(
        self: &Arc<Self>,
        node: &NodeId,
        request: MetaRequest,
    ) -> Result<MetaResponse, crate::node::error::TransportError> {
        if *node == self.node_id {
            Ok(self.clone().handle_meta(request).await)
        } else {
            self.request_node(node, request).await
        }
    }

    pub(super) async fn reserve_create(
        self: Arc<Self>,
        partition: u32,
        key: Vec<u8>,
    ) -> Result<CreateLease, CreateRefusal> {
        let Some(view) = self.view() else {
            return Err(CreateRefusal::Unavailable("no cluster map yet".into()));
        };
        let n = usize::from(view.0.policy.replication);
        let replicas: Vec<NodeId> = view.1.preference(partition).take(n).cloned().collect();
        let majority = replicas.len() / 2 + 1;
        let token: [u8; 16] = rand::random();
        // In preference order, one at a time, stopping at the first refusal: racers all ask
        // the same replica first, so one of them wins it and the rest stop there instead of
        // splitting the votes so that nobody has a majority. An unreachable replica is
        // skipped (the next ones may still make a majority).
        let (mut holders, mut exists, mut held, mut failed) = (Vec::new(), 0, 0, Vec::new());
        for node in &replicas {
            if holders.len() >= majority {
                break;
            }
            let request = MetaRequest::Reserve {
                partition,
                key: key.clone(),
                token,
                ttl_ms: CREATE_RESERVATION_TTL_MS,
            };
            match self.reserve_at(node, request).await {
                Ok(MetaResponse::Reservation(Reservation::Granted)) => holders.push(node.clone()),
                Ok(MetaResponse::Reservation(Reservation::Exists)) => {
                    exists += 1;
                    break;
                }
                Ok(MetaResponse::Reservation(Reservation::Held)) => {
                    held += 1;
                    break;
                }
                Ok(other) => failed.push(format!("{other:?}")),
                Err(e) => failed.push(e.to_string()),
            }
        }
        let lease = CreateLease {
            partition,
            key,
            token,
            holders,
        };
        if lease.holders.len() >= majority {
            debug_assert!(exists == 0 && held == 0);
            return Ok(lease);
        }
        self.clone().release_create(lease).await;
        if exists > 0 {
            Err(CreateRefusal::Exists)
        } else if held > 0 {
            Err(CreateRefusal::Conflict)
        } else {
            Err(CreateRefusal::Unavailable(format!(
                "a create reservation needs {majority} replicas; failures: {}",
                failed.join("; ")
            )))
        }
    }

    pub(super) async fn release_create(self: Arc<Self>, lease: CreateLease) {
        let CreateLease {
            partition,
            key,
            token,
            holders,
        } = lease;
        let this = &self;
        let releases = holders.iter().map(|node| {
            let request = MetaRequest::Release {
                partition,
                key: key.clone(),
                token,
            };
            async move {
                if let Err(e) = this.reserve_at(node, request).await {
                    tracing::debug!(?node, error = %e, "releasing a create reservation failed; it will expire");
                }
            }
        });
        futures::future::join_all(releases).await;
    }
}

impl Node {
    /// Reserves `key` of `partition` for a create on a majority of its replicas (the
    /// gateway's race-safe `If-None-Match: *`): at most one creator holds a key at a time,
    /// and none while a replica of the majority stores a live record under it.
    pub async fn reserve_create(&self, partition: u32, key: &[u8]) -> Result<CreateLease, CreateRefusal> {
        self.inner.clone().reserve_create(partition, key.to_vec()).await
    }

    /// Drops a create reservation (best effort: an unreleased one expires).
    pub async fn release_create(&self, lease: CreateLease) {
        self.inner.clone().release_create(lease).await;
    }
}
