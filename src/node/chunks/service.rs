//! Chunks, service and client: storing a chunk here (verified against its id, with a hint
//! when held for a replica that is down), coordinating a replicated chunk put, reading a
//! chunk from here or the preference list (hedged, every copy verified, a bad local copy
//! replaced, replicas that lack it repaired in the background), and answering
//! `/hadss/chunk/1`.

use std::sync::Arc;

use bytes::Bytes;

use chunkstore::ChunkId;
use libp2p::PeerId;

use crate::cluster::{NodeId, partition_of_chunk};
use crate::node::chunks::wire::{ChunkRequest, ChunkResponse, HAS_IDS_MAX};
use crate::node::error::{ErrorCode, NodeError, RemoteError, TransportError, err};
use crate::node::metrics::{bump, bump_by};
use crate::node::quorum::{Judged, TargetCopy};
use crate::node::runtime::{Inner, Node, not_storage, parse_node_id};
use crate::storage::hints::{Hint, HintItem};
use crate::storage::primary::{PrimaryAnswer, PrimaryOutcome};
use crate::storage::records::Record;
use crate::storage::replication::{Counting, Outcome};

impl Inner {
    pub(in crate::node) async fn store_chunk_locally(&self, id: ChunkId, data: Bytes) -> Result<(), RemoteError> {
        let chunks = self.stores.as_ref().ok_or_else(not_storage)?.chunks.clone();
        let result = tokio::task::spawn_blocking(move || chunks.put_expecting(id, &data))
            .await
            .map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        match result {
            Ok(_) => Ok(()),
            Err(chunkstore::Error::IdMismatch { .. }) => {
                self.counters
                    .chunk_id_mismatch
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(err(ErrorCode::BadRequest, "chunk bytes do not match their id"))
            }
            Err(e @ chunkstore::Error::Full { .. }) => Err(err(ErrorCode::Full, e.to_string())),
            Err(e) => Err(err(ErrorCode::Internal, e.to_string())),
        }
    }

    /// Stores a chunk; with `hint_for`, also records (durably, before returning) that the
    /// copy is held for that replica.
    pub(in crate::node) async fn store_chunk_with_hint(
        &self,
        id: ChunkId,
        data: Bytes,
        hint_for: Option<NodeId>,
    ) -> Result<(), RemoteError> {
        let Some(target) = hint_for else {
            return self.store_chunk_locally(id, data).await;
        };
        let _guard = self.hint_lock.lock().await;
        self.store_chunk_locally(id, data).await?;
        self.add_hint(Hint {
            item: HintItem::Chunk(id.0),
            target,
        })
        .await
    }

    /// Stores a chunk on W of its targets; returns the durable copies known.
    pub(in crate::node) async fn coordinate_chunk(self: Arc<Self>, id: ChunkId, data: Bytes) -> Result<u32, NodeError> {
        let Some(view) = self.view() else {
            return Err(NodeError::NoMap);
        };
        let (map, placement) = &*view;
        let partition = partition_of_chunk(map.partitions, &id.0);
        let preference: Vec<NodeId> = placement.preference(partition).cloned().collect();
        let (n, w) = (
            usize::from(map.policy.replication),
            usize::from(map.policy.write_quorum),
        );
        let me = self.node_id.clone();
        let this = self.clone();
        let (outcome, full) = self
            .replicate(
                preference,
                (n, w),
                Counting::AnyTarget,
                data.len() as u64,
                move |to, hint_for| {
                    let this = this.clone();
                    let data = data.clone();
                    let me = me.clone();
                    async move {
                        if to == me {
                            match this.store_chunk_with_hint(id, data, hint_for).await {
                                Ok(()) => TargetCopy::Durable,
                                Err(e) => TargetCopy::refused(e.code),
                            }
                        } else {
                            let req = ChunkRequest::Put {
                                id: id.0,
                                data: data.clone(),
                                coordinate: false,
                                hint_for: hint_for.map(|h| h.0),
                            };
                            bump_by(&this.counters.chunk_bytes_sent, data.len() as u64);
                            match this.request_node(&to, req).await {
                                Ok(ChunkResponse::Stored { .. }) => TargetCopy::Durable,
                                Ok(ChunkResponse::Error(e)) => TargetCopy::refused(e.code),
                                _ => TargetCopy::Failed,
                            }
                        }
                    }
                },
            )
            .await;
        bump(match &outcome {
            Outcome::Acked { .. } => &self.counters.writes_acked,
            Outcome::Failed { .. } => &self.counters.writes_failed,
        });
        match outcome {
            Outcome::Acked { durable_on, .. } => Ok(durable_on.len() as u32),
            Outcome::Failed {
                durable_acks, needed, ..
            } => Err(NodeError::failed_write(durable_acks, needed, full)),
        }
    }

    /// Stores a chunk as the design's write path does: a node that is one of the chunk's
    /// replicas coordinates the write itself (stores its copy, forwards the others);
    /// any other node (a gateway, a client) sends the chunk once, to the first live replica
    /// (the primary), which stores it, forwards it and answers after W durable copies. If
    /// the primary fails or does not answer in time, the next node in preference order
    /// takes its role (past the replicas, a fallback holding hinted copies), up to
    /// `node::primary::PRIMARY_ATTEMPTS_MAX` nodes. Chunks are content-addressed, so a retry through
    /// another primary stores the same bytes under the same id: it cannot make a
    /// different outcome.
    pub(in crate::node) async fn put_chunk(self: Arc<Self>, id: ChunkId, data: Bytes) -> Result<u32, NodeError> {
        let Some(view) = self.view() else {
            return Err(NodeError::NoMap);
        };
        let (map, placement) = &*view;
        let partition = partition_of_chunk(map.partitions, &id.0);
        let replicas = usize::from(map.policy.replication);
        let (needed, size_bytes) = (usize::from(map.policy.write_quorum), data.len() as u64);
        bump_by(&self.counters.chunk_bytes_put, size_bytes);
        let preference: Vec<NodeId> = placement.preference(partition).cloned().collect();
        if self.is_replica_of(&preference, replicas) {
            return self.clone().coordinate_chunk(id, data).await;
        }
        let outcome = self
            .through_primary(
                &preference,
                size_bytes,
                || ChunkRequest::Put {
                    id: id.0,
                    data: data.clone(),
                    coordinate: true,
                    hint_for: None,
                },
                |response| match response {
                    ChunkResponse::Stored { copies } => PrimaryAnswer::Stored { copies },
                    ChunkResponse::Error(e) if e.code == ErrorCode::Full => PrimaryAnswer::Full,
                    ChunkResponse::Error(e) if e.code == ErrorCode::BadRequest => PrimaryAnswer::Refused,
                    _ => PrimaryAnswer::Failed,
                },
                || bump_by(&self.counters.chunk_bytes_sent, size_bytes),
            )
            .await?;
        match outcome {
            PrimaryOutcome::Stored { copies, .. } => {
                bump_by(&self.counters.chunk_copies_acked, u64::from(copies));
                Ok(copies)
            }
            PrimaryOutcome::NoSpace => Err(NodeError::NoSpace {
                durable: 0,
                needed,
                full: replicas,
            }),
            PrimaryOutcome::Refused => Err(NodeError::Internal(format!(
                "chunk {id}: the primary refused its bytes"
            ))),
            PrimaryOutcome::Unavailable { .. } => Err(NodeError::WriteQuorum { durable: 0, needed }),
        }
    }

    pub(in crate::node) async fn get_chunk(self: Arc<Self>, id: ChunkId) -> Result<Option<Bytes>, NodeError> {
        // Gateways and monitors hold no chunks: straight to the replicas.
        let local = match self.stores.as_ref().map(|s| s.chunks.clone()) {
            Some(chunks) => {
                tokio::task::spawn_blocking(move || chunks.get(&id).map(|c| c.map(chunkstore::Chunk::into_bytes)))
                    .await?
            }
            None => Ok(None),
        };
        // A local copy that failed verification was set aside by the chunk store; it is
        // replaced below from a healthy replica.
        let corrupt_here = match local {
            Ok(Some(bytes)) => {
                bump(&self.counters.chunk_reads_local);
                return Ok(Some(bytes));
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!(%id, error = %e, "local copy unreadable; reading from a replica");
                e.is_corruption()
            }
        };
        let Some(view) = self.view() else {
            return Err(NodeError::NoMap);
        };
        bump(&self.counters.chunk_reads_remote);
        let partition = partition_of_chunk(view.0.partitions, &id.0);
        let replicas = usize::from(view.0.policy.replication);
        // Replicas found without a good copy: given the verified bytes once they are found.
        let mut lacking: Vec<NodeId> = Vec::new();
        let mut candidates: Vec<(usize, NodeId)> = view
            .1
            .preference(partition)
            .enumerate()
            .filter(|(_, n)| **n != self.node_id)
            .map(|(rank, n)| (rank, n.clone()))
            .collect();
        // Members SWIM reports down are asked last (stable: preference order otherwise).
        candidates.sort_by_key(|(_, n)| !self.is_alive(n));
        let ask = |(rank, node): (usize, NodeId)| {
            let this = self.clone();
            async move {
                let answer = this.request_node(&node, ChunkRequest::Get { id: id.0 }).await;
                (rank, node, answer)
            }
        };
        // Hedged read: one replica at a time, but a replica that has not answered within
        // `HEDGED_READ_DELAY_MS` gets company from the next one; the first good copy wins.
        let mut found: Option<Bytes> = None;
        self.hedged_asks(
            &candidates,
            1,
            &self.counters.hedged_chunk_reads,
            ask,
            |(rank, node, answer)| {
                match answer {
                    Ok(ChunkResponse::Data(bytes)) if ChunkId::of(&bytes) == id => {
                        found = Some(bytes);
                        return Judged::Done;
                    }
                    Ok(ChunkResponse::Data(_)) => {
                        // Never pass on bytes that do not match their id.
                        bump(&self.counters.chunk_id_mismatch);
                        tracing::error!(%id, peer = ?node, "peer sent a chunk that does not match its id");
                        if rank < replicas {
                            lacking.push(node);
                        }
                    }
                    Ok(ChunkResponse::NotFound)
                    | Ok(ChunkResponse::Error(RemoteError {
                        code: ErrorCode::Corrupt,
                        ..
                    })) if rank < replicas => lacking.push(node),
                    _ => {}
                }
                // No copy there: ask the next one at once.
                Judged::AskNext
            },
        )
        .await;
        let Some(bytes) = found else {
            return Ok(None);
        };
        if corrupt_here {
            let repaired = self.store_chunk_locally(id, bytes.clone()).await;
            tracing::info!(%id, ok = repaired.is_ok(), "replaced a corrupt local copy from a replica");
        }
        if !lacking.is_empty() {
            let this = self.clone();
            let data = bytes.clone();
            tokio::spawn(async move { this.repair_chunk_replicas(id, data, lacking).await });
        }
        Ok(Some(bytes))
    }

    pub(in crate::node) async fn repair_chunk_replicas(&self, id: ChunkId, data: Bytes, replicas: Vec<NodeId>) {
        for node in replicas {
            let req = ChunkRequest::Put {
                id: id.0,
                data: data.clone(),
                coordinate: false,
                hint_for: None,
            };
            if matches!(self.request_node(&node, req).await, Ok(ChunkResponse::Stored { .. })) {
                bump(&self.counters.chunk_read_repairs);
                tracing::info!(%id, peer = ?node, "gave a replica the chunk it lacked");
            }
        }
    }

    pub(in crate::node) async fn handle_chunk(self: Arc<Self>, request: ChunkRequest) -> ChunkResponse {
        match request {
            ChunkRequest::Put {
                id,
                data,
                coordinate,
                hint_for,
            } => {
                let id = ChunkId(id);
                // A plain copy is verified once, by the store (`put_expecting`); a put to
                // coordinate is checked before it is forwarded anywhere.
                if coordinate && ChunkId::of(&data) != id {
                    self.counters
                        .chunk_id_mismatch
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return ChunkResponse::Error(err(ErrorCode::BadRequest, "chunk bytes do not match their id"));
                }
                let hint_for = match hint_for.map(|h| parse_node_id(&h)).transpose() {
                    Ok(h) => h,
                    Err(e) => return ChunkResponse::Error(e),
                };
                if coordinate {
                    match self.coordinate_chunk(id, data).await {
                        Ok(copies) => ChunkResponse::Stored { copies },
                        Err(e) => ChunkResponse::Error(RemoteError::from(&e)),
                    }
                } else {
                    match self.store_chunk_with_hint(id, data, hint_for).await {
                        Ok(()) => ChunkResponse::Stored { copies: 1 },
                        Err(e) => ChunkResponse::Error(e),
                    }
                }
            }
            ChunkRequest::Get { id } => {
                let Some(chunks) = self.stores.as_ref().map(|s| s.chunks.clone()) else {
                    return ChunkResponse::NotFound;
                };
                let id = ChunkId(id);
                match tokio::task::spawn_blocking(move || chunks.get(&id).map(|c| c.map(chunkstore::Chunk::into_bytes)))
                    .await
                {
                    Ok(Ok(Some(bytes))) => ChunkResponse::Data(bytes),
                    Ok(Ok(None)) => ChunkResponse::NotFound,
                    Ok(Err(e)) if e.is_corruption() => {
                        bump(&self.counters.corrupt_chunks_refused);
                        tracing::error!(%id, error = %e, "local copy failed verification; not sent");
                        ChunkResponse::Error(err(ErrorCode::Corrupt, e.to_string()))
                    }
                    Ok(Err(e)) => ChunkResponse::Error(err(ErrorCode::Internal, e.to_string())),
                    Err(e) => ChunkResponse::Error(err(ErrorCode::Internal, e.to_string())),
                }
            }
            ChunkRequest::Has { ids } => {
                if ids.len() > HAS_IDS_MAX {
                    return ChunkResponse::Error(err(ErrorCode::BadRequest, "too many ids in one question"));
                }
                let held = |id: &[u8; 32]| self.stores.as_ref().is_some_and(|s| s.chunks.contains(&ChunkId(*id)));
                ChunkResponse::Have(ids.iter().map(held).collect())
            }
        }
    }
}

impl Node {
    /// Stores a chunk on W of its replicas (this node coordinates). Returns its id.
    pub async fn put_chunk(&self, data: impl Into<Bytes>) -> Result<ChunkId, NodeError> {
        let data: Bytes = data.into();
        let id = ChunkId::of(&data);
        self.inner.clone().put_chunk(id, data).await.map(|_| id)
    }

    /// Stores a chunk whose id the caller computed (the one hash a writer makes; the primary
    /// or the store verifies it) and, at the same time, its reference from `holder` (see
    /// `put_chunk_ref`): both are in the chunk's partition and neither waits for the other.
    /// A reference whose chunk write then failed is harmless: its holder is never written,
    /// so maintenance drops it after the grace period as any reference without its holder.
    pub async fn put_chunk_with_ref(
        &self,
        id: ChunkId,
        data: Bytes,
        holder: &crate::storage::refs::ChunkHolder,
    ) -> Result<(), NodeError> {
        let size_bytes =
            u32::try_from(data.len()).map_err(|_| NodeError::Internal(format!("chunk {id} is larger than 4 GiB")))?;
        tokio::try_join!(
            self.inner.clone().put_chunk(id, data),
            self.put_chunk_ref(&id, size_bytes, holder)
        )
        .map(|_| ())
    }

    /// Reads a chunk from this node or, failing that, from its replicas and fallbacks in
    /// preference order. Every copy is verified (BLAKE3) before it is returned.
    pub async fn get_chunk(&self, id: &ChunkId) -> Result<Option<Bytes>, NodeError> {
        self.inner.clone().get_chunk(*id).await
    }

    /// Sends one raw chunk request to `peer` (the native client path; tests use it to play a
    /// misbehaving peer).
    pub async fn chunk_request(&self, peer: PeerId, request: ChunkRequest) -> Result<ChunkResponse, TransportError> {
        self.inner.request(peer, request).await
    }

    /// The replicas (first N of the preference list) of a chunk under the current map.
    pub fn chunk_replicas(&self, id: &ChunkId) -> Vec<PeerId> {
        self.inner.view().map_or_else(Vec::new, |v| {
            self.record_replicas(partition_of_chunk(v.0.partitions, &id.0))
        })
    }

    /// Records that `holder` lists `chunk` (a quorum write in the chunk's partition), so
    /// garbage collection keeps the chunk while the holder does. Write it before the holder.
    pub async fn put_chunk_ref(
        &self,
        chunk: &ChunkId,
        chunk_size_bytes: u32,
        holder: &crate::storage::refs::ChunkHolder,
    ) -> Result<(), NodeError> {
        let Some(view) = self.inner.view() else {
            return Err(NodeError::NoMap);
        };
        let value = crate::storage::refs::ChunkRefValue::V1 {
            holder: holder.clone(),
            chunk_size_bytes,
        };
        let record = Record {
            partition: partition_of_chunk(view.0.partitions, &chunk.0),
            key: crate::storage::refs::ref_key(&chunk.0, holder),
            version: crate::storage::records::Version {
                hlc: self.inner.ref_hlc.now(self.inner.clock.now_ms()),
                unique: rand::random(),
            },
            value: crate::storage::records::RecordValue::Data(value.encode()),
        };
        self.inner.clone().write_record(record).await.map(|_| ())
    }
}
