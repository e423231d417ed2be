//! Hinted handoff: a fallback stores the copy, then records the hint durably
//! (`storage::hints`), then acknowledges; this task walks the hints every
//! `HANDOFF_INTERVAL_MS` (and at once when a member comes back), sends each copy to its
//! replica, removes the hint on acknowledgement, and drops its own copy once no hint names
//! the item and it is not one of the item's replicas.

use std::sync::Arc;
use std::time::Duration;

use chunkstore::ChunkId;
use futures::StreamExt;

use super::error::err;
use super::metrics::bump;
use super::runtime::Node;
use super::runtime::{Inner, not_storage};
use crate::cluster::{NodeId, partition_of_chunk};
use crate::node::chunks::wire::{ChunkRequest, ChunkResponse};
use crate::node::error::{ErrorCode, RemoteError};
use crate::node::records::wire::{MetaRequest, MetaResponse};
use crate::storage::hints::{Hint, HintItem};

/// How often the handoff task looks for hints to hand back (it also runs when SWIM reports
/// a member up).
pub const HANDOFF_INTERVAL_MS: u64 = 2_000;

/// Hint copies in flight to one replica.
pub(super) const HANDOFF_IN_FLIGHT_MAX: usize = 16;

/// Pages of hints one handoff round goes through (`HINTS_PAGE_MAX` each).
pub(super) const HANDOFF_PAGES_PER_ROUND_MAX: usize = 64;

/// Hands hinted copies back: every `HANDOFF_INTERVAL_MS`, and when a member comes back.
impl Inner {
    /// Starts the handoff task (until the node is dropped).
    pub(super) fn start_handoff(self: &Arc<Self>) {
        tokio::spawn(handoff_loop(Arc::downgrade(self), self.handoff_nudge.clone()));
    }
}

async fn handoff_loop(inner: std::sync::Weak<Inner>, nudge: Arc<tokio::sync::Notify>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(HANDOFF_INTERVAL_MS)) => {}
            () = nudge.notified() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.stores.as_ref().is_some_and(|s| !s.hints.is_empty()) {
            inner.hand_off_round().await;
        }
    }
}

impl Inner {
    pub(super) async fn add_hint(&self, hint: Hint) -> Result<(), RemoteError> {
        let hints = self.stores.as_ref().ok_or_else(not_storage)?.hints.clone();
        match tokio::task::spawn_blocking(move || hints.add(&[hint])).await {
            Ok(Ok(())) => {
                bump(&self.counters.hints_stored);
                Ok(())
            }
            Ok(Err(e @ crate::storage::hints::HintError::Full(_))) => Err(err(ErrorCode::Full, e.to_string())),
            Ok(Err(e)) => Err(err(ErrorCode::Internal, e.to_string())),
            Err(e) => Err(err(ErrorCode::Internal, e.to_string())),
        }
    }

    /// One pass over the hints: every replica SWIM does not report down gets its copies
    /// back; a replica that fails one is skipped for the rest of the round.
    pub(super) async fn hand_off_round(self: Arc<Self>) {
        let Some(local) = self.stores.as_ref() else { return };
        let mut after: Option<Hint> = None;
        for _ in 0..HANDOFF_PAGES_PER_ROUND_MAX {
            let hints = local.hints.clone();
            let cursor = after.clone();
            let page = match tokio::task::spawn_blocking(move || {
                hints.list(cursor.as_ref(), crate::storage::hints::HINTS_PAGE_MAX)
            })
            .await
            {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "listing hints failed");
                    return;
                }
                Err(_) => return,
            };
            let Some(last) = page.last().cloned() else { return };
            let full_page = page.len() >= crate::storage::hints::HINTS_PAGE_MAX;
            after = Some(last);
            let mut by_target: std::collections::BTreeMap<NodeId, Vec<Hint>> = Default::default();
            for hint in page {
                if hint.target != self.node_id && self.is_alive(&hint.target) {
                    by_target.entry(hint.target.clone()).or_default().push(hint);
                }
            }
            for (target, hints) in by_target {
                let failed = std::sync::atomic::AtomicBool::new(false);
                futures::stream::iter(hints)
                    .for_each_concurrent(HANDOFF_IN_FLIGHT_MAX, |hint| {
                        let this = self.clone();
                        let failed = &failed;
                        async move {
                            if failed.load(std::sync::atomic::Ordering::Relaxed) {
                                return;
                            }
                            if !this.hand_off(&hint).await {
                                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    })
                    .await;
                if failed.into_inner() {
                    tracing::debug!(target_node = ?target, "handoff paused: the replica did not take a copy");
                }
            }
            if !full_page {
                return;
            }
        }
    }

    /// Hands one hinted copy to its replica. Returns false if the replica did not take it.
    pub(super) async fn hand_off(&self, hint: &Hint) -> bool {
        let Some(local) = self.stores.as_ref() else {
            return false;
        };
        let delivered = match &hint.item {
            HintItem::Chunk(id) => {
                let id = ChunkId(*id);
                let chunks = local.chunks.clone();
                match tokio::task::spawn_blocking(move || chunks.get(&id).map(|c| c.map(chunkstore::Chunk::into_bytes)))
                    .await
                {
                    Ok(Ok(Some(data))) => {
                        let req = ChunkRequest::Put {
                            id: id.0,
                            data,
                            coordinate: false,
                            hint_for: None,
                        };
                        match self.request_node(&hint.target, req).await {
                            Ok(ChunkResponse::Stored { .. }) => true,
                            _ => return false,
                        }
                    }
                    // The copy is gone (or corrupt): nothing to hand back; anti-entropy
                    // restores the replica from the others.
                    _ => {
                        tracing::warn!(%id, "hinted chunk no longer readable here; hint dropped");
                        false
                    }
                }
            }
            HintItem::Record { partition, key } => {
                let records = local.records.clone();
                let (p, k) = (*partition, key.clone());
                match tokio::task::spawn_blocking(move || records.get(p, &k)).await {
                    Ok(Ok(Some(record))) => {
                        let req = MetaRequest::Put {
                            records: vec![record],
                            hint_for: None,
                        };
                        match self.request_node(&hint.target, req).await {
                            Ok(MetaResponse::Applied(_)) => true,
                            _ => return false,
                        }
                    }
                    _ => {
                        tracing::warn!(partition, "hinted record no longer readable here; hint dropped");
                        false
                    }
                }
            }
        };
        let _guard = self.hint_lock.lock().await;
        let hints = local.hints.clone();
        let h = hint.clone();
        if !matches!(tokio::task::spawn_blocking(move || hints.remove(&h)).await, Ok(Ok(()))) {
            return false;
        }
        if delivered {
            bump(&self.counters.hints_handed_off);
        }
        self.drop_if_surplus(&hint.item).await;
        true
    }

    /// Deletes this node's copy of `item` if no hint names it any more and this node is not
    /// one of its replicas under the current map. Called with `hint_lock` held.
    pub(super) async fn drop_if_surplus(&self, item: &HintItem) {
        let Some(local) = self.stores.as_ref() else { return };
        let Some(view) = self.view() else { return };
        let (map, placement) = &*view;
        let partition = match item {
            HintItem::Chunk(id) => partition_of_chunk(map.partitions, id),
            HintItem::Record { partition, .. } => *partition,
        };
        let replicas = usize::from(map.policy.replication);
        if placement
            .preference(partition)
            .take(replicas)
            .any(|n| *n == self.node_id)
        {
            return;
        }
        let hints = local.hints.clone();
        let it = item.clone();
        if !matches!(
            tokio::task::spawn_blocking(move || hints.holds_item(&it)).await,
            Ok(Ok(false))
        ) {
            return;
        }
        let (chunks, records, item) = (local.chunks.clone(), local.records.clone(), item.clone());
        let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
            match item {
                HintItem::Chunk(id) => chunks.delete(&ChunkId(id)).map(|_| ()).map_err(|e| e.to_string()),
                HintItem::Record { partition, key } => {
                    if let Some(r) = records.get(partition, &key).map_err(|e| e.to_string())? {
                        records
                            .remove_exact(partition, &key, r.version)
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                }
            }
        })
        .await;
        if !matches!(result, Ok(Ok(()))) {
            tracing::warn!(?result, "could not drop a surplus copy after handoff");
        }
    }
}

impl Node {
    /// Hints this node holds for replicas that were down.
    pub fn hints_held(&self) -> u64 {
        self.inner.stores.as_ref().map_or(0, |s| s.hints.len())
    }

    /// Runs one handoff round now (the background task also runs them periodically).
    pub async fn hand_off_now(&self) {
        self.inner.clone().hand_off_round().await;
    }
}
