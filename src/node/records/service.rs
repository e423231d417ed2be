//! Records, service and client: storing records here (last-writer-wins, hints for a
//! replica that is down), coordinating a replicated record write (reporting a replica that
//! held a newer version: `RecordWrite::Superseded`), quorum reads and scans (only replicas'
//! answers count; filling answers are kept, not counted; read repair in the background), and
//! answering `/hadss/meta/1`.

use std::sync::Arc;

use crate::cluster::NodeId;
use crate::node::error::err;
use crate::node::error::{ErrorCode, RemoteError};
use crate::node::error::{NodeError, TransportError};
use crate::node::metrics::bump;
use crate::node::quorum::TargetCopy;
use crate::node::records::wire::{MetaRequest, MetaResponse, RESERVATION_TTL_MS_MAX, SCAN_RESPONSE_BYTES_MAX};
use crate::node::repair::antientropy;
use crate::node::runtime::{Inner, RecordWrite, not_storage, parse_node_id};
use crate::node::runtime::{Node, peer_of};
use crate::storage::hints::{Hint, HintItem};
use crate::storage::primary::{PrimaryAnswer, PrimaryOutcome};
use crate::storage::records::Record;
use crate::storage::records::RecordStore;
use crate::storage::replication::{Counting, Outcome};
use libp2p::PeerId;

/// Merges scan pages from several replicas: newest version per key, and only keys up to the
/// smallest last key of the pages that were cut short (past it, a replica's records are
/// unknown). Complete only if every page was.
pub fn merge_scan_pages(pages: Vec<(Vec<Record>, bool)>) -> (Vec<Record>, bool) {
    let bound: Option<Vec<u8>> = pages
        .iter()
        .filter(|(_, complete)| !complete)
        .filter_map(|(records, _)| records.last().map(|r| r.key.clone()))
        .min();
    let complete = pages.iter().all(|(_, c)| *c);
    let mut merged: std::collections::BTreeMap<Vec<u8>, Record> = std::collections::BTreeMap::new();
    for (records, _) in pages {
        for rec in records {
            if bound.as_ref().is_some_and(|b| rec.key > *b) {
                continue;
            }
            match merged.get(&rec.key) {
                Some(have) if have.version >= rec.version => {}
                _ => {
                    merged.insert(rec.key.clone(), rec);
                }
            }
        }
    }
    (merged.into_values().collect(), complete)
}

impl Inner {
    /// Writes records last-writer-wins; with `hint_for`, also records hints for them.
    pub(in crate::node) async fn store_records_locally(
        &self,
        batch: Vec<Record>,
        hint_for: Option<NodeId>,
    ) -> Result<Vec<bool>, RemoteError> {
        let hints: Vec<Hint> = match &hint_for {
            Some(target) => batch
                .iter()
                .map(|r| Hint {
                    item: HintItem::Record {
                        partition: r.partition,
                        key: r.key.clone(),
                    },
                    target: target.clone(),
                })
                .collect(),
            None => Vec::new(),
        };
        let _guard = match hint_for {
            Some(_) => Some(self.hint_lock.lock().await),
            None => None,
        };
        let records = self.stores.as_ref().ok_or_else(not_storage)?.records.clone();
        let applied = match tokio::task::spawn_blocking(move || records.put(batch)).await {
            Ok(Ok(applied)) => applied,
            Ok(Err(e @ crate::storage::records::RecordError::Invalid(_))) => {
                return Err(err(ErrorCode::BadRequest, e.to_string()));
            }
            Ok(Err(e)) => return Err(err(ErrorCode::Internal, e.to_string())),
            Err(e) => return Err(err(ErrorCode::Internal, e.to_string())),
        };
        for hint in hints {
            self.add_hint(hint).await?;
        }
        Ok(applied)
    }

    /// Writes a record as the design's write path does: a node that is one of the record's
    /// replicas coordinates the write itself; any other node (a gateway) sends it once, to
    /// the first live replica (the primary), which stores it, forwards it and answers after
    /// W durable copies, with fallback to the next node (`node::primary`). The version is
    /// the caller's, so a retry through another primary writes the same version: replicas
    /// that already hold it keep it, and the answer is at worst `Superseded` (the caller
    /// then writes again at a later version), never a second, different value.
    pub(in crate::node) async fn write_record(self: Arc<Self>, record: Record) -> Result<RecordWrite, NodeError> {
        let Some(view) = self.view() else {
            return Err(NodeError::NoMap);
        };
        let (map, placement) = &*view;
        let replicas = usize::from(map.policy.replication);
        let needed = usize::from(map.policy.write_quorum);
        bump(&self.counters.records_put);
        let preference: Vec<NodeId> = placement.preference(record.partition).cloned().collect();
        if self.is_replica_of(&preference, replicas) {
            return self.clone().coordinate_record(record).await;
        }
        let size_bytes = record.payload_size_bytes();
        let superseded = std::sync::atomic::AtomicBool::new(false);
        let outcome = self
            .through_primary(
                &preference,
                size_bytes,
                || MetaRequest::Coordinate { record: record.clone() },
                |response| match response {
                    MetaResponse::Coordinated { superseded: s } => {
                        superseded.store(s, std::sync::atomic::Ordering::Relaxed);
                        PrimaryAnswer::Stored { copies: needed as u32 }
                    }
                    MetaResponse::Error(e) if e.code == ErrorCode::Full => PrimaryAnswer::Full,
                    MetaResponse::Error(e) if e.code == ErrorCode::BadRequest => PrimaryAnswer::Refused,
                    _ => PrimaryAnswer::Failed,
                },
                || bump(&self.counters.record_copies_sent),
            )
            .await?;
        match outcome {
            PrimaryOutcome::Stored { .. } if superseded.load(std::sync::atomic::Ordering::Relaxed) => {
                Ok(RecordWrite::Superseded)
            }
            PrimaryOutcome::Stored { .. } => Ok(RecordWrite::Written),
            PrimaryOutcome::NoSpace => Err(NodeError::NoSpace {
                durable: 0,
                needed,
                full: replicas,
            }),
            PrimaryOutcome::Refused => Err(NodeError::Internal("the primary refused the record".into())),
            PrimaryOutcome::Unavailable { .. } => Err(NodeError::WriteQuorum { durable: 0, needed }),
        }
    }

    pub(in crate::node) async fn coordinate_record(self: Arc<Self>, record: Record) -> Result<RecordWrite, NodeError> {
        let Some(view) = self.view() else {
            return Err(NodeError::NoMap);
        };
        let (map, placement) = &*view;
        let preference: Vec<NodeId> = placement.preference(record.partition).cloned().collect();
        let (n, w) = (
            usize::from(map.policy.replication),
            usize::from(map.policy.write_quorum),
        );
        let me = self.node_id.clone();
        let this = self.clone();
        let payload_size_bytes = record.payload_size_bytes();
        let record = Arc::new(record);
        // Set by any copy that was not applied because its target holds a newer version.
        let superseded = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen_newer = superseded.clone();
        let (outcome, full) = self
            .replicate(
                preference,
                (n, w),
                Counting::Replicas,
                payload_size_bytes,
                move |to, hint_for| {
                    let this = this.clone();
                    let record = record.clone();
                    let me = me.clone();
                    let seen_newer = seen_newer.clone();
                    async move {
                        let applied = if to == me {
                            this.store_records_locally(vec![(*record).clone()], hint_for)
                                .await
                                .map_err(|e| TargetCopy::refused(e.code))
                        } else {
                            let req = MetaRequest::Put {
                                records: vec![(*record).clone()],
                                hint_for: hint_for.map(|h| h.0),
                            };
                            bump(&this.counters.record_copies_sent);
                            match this.request_node(&to, req).await {
                                Ok(MetaResponse::Applied(applied)) => Ok(applied),
                                Ok(MetaResponse::Error(e)) => Err(TargetCopy::refused(e.code)),
                                _ => Err(TargetCopy::Failed),
                            }
                        };
                        match applied {
                            Ok(applied) => {
                                if applied.contains(&false) {
                                    seen_newer.store(true, std::sync::atomic::Ordering::Relaxed);
                                }
                                TargetCopy::Durable
                            }
                            Err(refused) => refused,
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
            Outcome::Acked { .. } if superseded.load(std::sync::atomic::Ordering::Relaxed) => {
                Ok(RecordWrite::Superseded)
            }
            Outcome::Acked { .. } => Ok(RecordWrite::Written),
            Outcome::Failed {
                durable_acks, needed, ..
            } => Err(NodeError::failed_write(durable_acks, needed, full)),
        }
    }

    pub(in crate::node) async fn get_record(
        self: Arc<Self>,
        partition: u32,
        key: Vec<u8>,
    ) -> Result<Option<Record>, NodeError> {
        let Some(view) = self.view() else {
            return Err(NodeError::NoMap);
        };
        let (map, placement) = &*view;
        let (n, r) = (usize::from(map.policy.replication), usize::from(map.policy.read_quorum));
        let preference: Vec<NodeId> = placement.preference(partition).cloned().collect();
        let replicas: Vec<NodeId> = preference.iter().take(n).cloned().collect();
        let nodes = placement.node_count();
        let (answers, counted): (Vec<(NodeId, Option<Record>)>, usize) = self
            .quorum_read(preference, (n, r, nodes), |node: NodeId| {
                let this = self.clone();
                let key = key.clone();
                async move {
                    let answer = this.read_record_at(&node, partition, key).await;
                    (node, answer)
                }
            })
            .await;
        if counted < r {
            return Err(NodeError::ReadQuorum {
                answered: counted,
                needed: r,
            });
        }
        let newest = answers
            .iter()
            .filter_map(|(_, a)| a.as_ref())
            .max_by_key(|rec| rec.version)
            .cloned();
        if let Some(newest) = &newest {
            // Read repair: replicas that answered with an older version (or nothing) get the
            // newest, in the background. Only replicas: a fallback's copy would be surplus.
            for (node, answer) in answers {
                if replicas.contains(&node) && answer.is_none_or(|a| a.version < newest.version) {
                    let this = self.clone();
                    let record = newest.clone();
                    tokio::spawn(async move { this.repair_record(node, record).await });
                }
            }
        }
        Ok(newest)
    }

    /// One replica's copy of a record: `Some(None)` when it holds none, `None` when it
    /// could not answer.
    pub(in crate::node) async fn read_record_at(
        &self,
        node: &NodeId,
        partition: u32,
        key: Vec<u8>,
    ) -> Option<(Option<Record>, bool)> {
        if *node == self.node_id {
            let filling = self.map.is_filling(partition);
            let records = self.stores.as_ref()?.records.clone();
            return tokio::task::spawn_blocking(move || records.get(partition, &key))
                .await
                .ok()?
                .ok()
                .map(|r| (r, filling));
        }
        match self.request_node(node, MetaRequest::Get { partition, key }).await {
            Ok(MetaResponse::Record(rec)) => Some((rec, false)),
            Ok(MetaResponse::Filling(inner)) => match *inner {
                MetaResponse::Record(rec) => Some((rec, true)),
                _ => None,
            },
            _ => None,
        }
    }

    pub(in crate::node) async fn scan_records(
        self: Arc<Self>,
        partition: u32,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Record>, bool), NodeError> {
        let Some(view) = self.view() else {
            return Err(NodeError::NoMap);
        };
        let (n, r) = (
            usize::from(view.0.policy.replication),
            usize::from(view.0.policy.read_quorum),
        );
        let limit = limit.clamp(1, crate::storage::records::SCAN_RECORDS_MAX);
        let preference: Vec<NodeId> = view.1.preference(partition).cloned().collect();
        let (prefix, after) = (prefix.to_vec(), after.map(<[u8]>::to_vec));
        let nodes = view.1.node_count();
        let (pages, counted) = self
            .quorum_read(preference, (n, r, nodes), |node: NodeId| {
                let this = self.clone();
                let (prefix, after) = (prefix.clone(), after.clone());
                async move {
                    let page = if node == this.node_id {
                        let filling = this.map.is_filling(partition);
                        let Some(records) = this.stores.as_ref().map(|s| s.records.clone()) else {
                            return (node, None);
                        };
                        match tokio::task::spawn_blocking(move || {
                            records.scan(partition, &prefix, after.as_deref(), limit)
                        })
                        .await
                        {
                            Ok(Ok(page)) => {
                                let complete = page.len() < limit;
                                Some(((page, complete), filling))
                            }
                            _ => None,
                        }
                    } else {
                        let req = MetaRequest::Scan {
                            partition,
                            prefix,
                            after,
                            limit: limit as u32,
                        };
                        match this.request_node(&node, req).await {
                            Ok(MetaResponse::Records { records, complete }) => Some(((records, complete), false)),
                            Ok(MetaResponse::Filling(inner)) => match *inner {
                                MetaResponse::Records { records, complete } => Some(((records, complete), true)),
                                _ => None,
                            },
                            _ => None,
                        }
                    };
                    (node, page)
                }
            })
            .await;
        if counted < r {
            return Err(NodeError::ReadQuorum {
                answered: counted,
                needed: r,
            });
        }
        Ok(merge_scan_pages(pages.into_iter().map(|(_, page)| page).collect()))
    }

    pub(in crate::node) async fn repair_record(&self, node: NodeId, record: Record) {
        let ok = if node == self.node_id {
            self.store_records_locally(vec![record], None).await.is_ok()
        } else {
            let req = MetaRequest::Put {
                records: vec![record],
                hint_for: None,
            };
            matches!(self.request_node(&node, req).await, Ok(MetaResponse::Applied(_)))
        };
        if ok {
            bump(&self.counters.record_read_repairs);
        }
    }

    /// Answers a metadata request; reads of a partition this node is still filling are
    /// marked `Filling`.
    pub(in crate::node) async fn handle_meta(self: Arc<Self>, request: MetaRequest) -> MetaResponse {
        let filling = match &request {
            MetaRequest::Get { partition, .. } | MetaRequest::Scan { partition, .. } => self.map.is_filling(*partition),
            _ => false,
        };
        let response = self.clone().answer_meta(request).await;
        match response {
            MetaResponse::Record(_) | MetaResponse::Records { .. } if filling => {
                MetaResponse::Filling(Box::new(response))
            }
            other => other,
        }
    }

    pub(in crate::node) async fn answer_meta(self: Arc<Self>, request: MetaRequest) -> MetaResponse {
        match request {
            MetaRequest::Put { records, hint_for } => {
                let hint_for = match hint_for.map(|h| parse_node_id(&h)).transpose() {
                    Ok(h) => h,
                    Err(e) => return MetaResponse::Error(e),
                };
                match self.store_records_locally(records, hint_for).await {
                    Ok(applied) => MetaResponse::Applied(applied),
                    Err(e) => MetaResponse::Error(e),
                }
            }
            MetaRequest::Scan {
                partition,
                prefix,
                after,
                limit,
            } => {
                let Some(records) = self.stores.as_ref().map(|s| s.records.clone()) else {
                    return MetaResponse::Error(not_storage());
                };
                let limit = (limit as usize).min(crate::storage::records::SCAN_RECORDS_MAX);
                match tokio::task::spawn_blocking(move || records.scan(partition, &prefix, after.as_deref(), limit))
                    .await
                {
                    Ok(Ok(mut page)) => {
                        let mut complete = page.len() < limit;
                        let mut size_bytes = 0usize;
                        if let Some(cut) = page.iter().position(|r| {
                            size_bytes += r.key.len()
                                + 64
                                + match &r.value {
                                    crate::storage::records::RecordValue::Data(d) => d.len(),
                                    crate::storage::records::RecordValue::Tombstone => 0,
                                };
                            size_bytes > SCAN_RESPONSE_BYTES_MAX
                        }) {
                            page.truncate(cut.max(1));
                            complete = false;
                        }
                        MetaResponse::Records {
                            records: page,
                            complete,
                        }
                    }
                    Ok(Err(e)) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                    Err(e) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                }
            }
            MetaRequest::Get { partition, key } => {
                let Some(records) = self.stores.as_ref().map(|s| s.records.clone()) else {
                    return MetaResponse::Error(not_storage());
                };
                match tokio::task::spawn_blocking(move || records.get(partition, &key)).await {
                    Ok(Ok(record)) => MetaResponse::Record(record),
                    Ok(Err(e)) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                    Err(e) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                }
            }
            MetaRequest::Reserve {
                partition,
                key,
                token,
                ttl_ms,
            } => {
                let Some(records) = self.stores.as_ref().map(|s| s.records.clone()) else {
                    return MetaResponse::Error(not_storage());
                };
                let now = self.clock.now_ms();
                let expires = now + u64::from(ttl_ms.min(RESERVATION_TTL_MS_MAX));
                match tokio::task::spawn_blocking(move || records.reserve(partition, &key, token, now, expires)).await {
                    Ok(Ok(r)) => MetaResponse::Reservation(r),
                    Ok(Err(e)) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                    Err(e) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                }
            }
            MetaRequest::AntiEntropy { partition, ask } => {
                let Some(records) = self.stores.as_ref().map(|s| s.records.clone()) else {
                    return MetaResponse::Error(not_storage());
                };
                match tokio::task::spawn_blocking(move || antientropy::answer_from(&records, partition, &ask)).await {
                    Ok(answer) => MetaResponse::AntiEntropy(answer),
                    Err(e) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                }
            }
            MetaRequest::Coordinate { record } => match self.coordinate_record(record).await {
                Ok(written) => MetaResponse::Coordinated {
                    superseded: written == RecordWrite::Superseded,
                },
                Err(e) => MetaResponse::Error(RemoteError::from(&e)),
            },
            MetaRequest::Release { partition, key, token } => {
                let Some(records) = self.stores.as_ref().map(|s| s.records.clone()) else {
                    return MetaResponse::Error(not_storage());
                };
                match tokio::task::spawn_blocking(move || records.release(partition, &key, token)).await {
                    Ok(Ok(released)) => MetaResponse::Applied(vec![released]),
                    Ok(Err(e)) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                    Err(e) => MetaResponse::Error(err(ErrorCode::Internal, e.to_string())),
                }
            }
        }
    }
}

impl Node {
    /// Writes records to W replicas of their partitions (one coordinated write per record).
    pub async fn put_record(&self, record: Record) -> Result<(), NodeError> {
        self.inner.clone().write_record(record).await.map(|_| ())
    }

    /// `put_record` that also says whether a replica already held a newer version of the
    /// record (last-writer-wins kept that one: the write is acknowledged but not visible).
    /// A writer whose clock is behind learns so here and writes again with a later version.
    pub async fn put_record_checked(&self, record: Record) -> Result<RecordWrite, NodeError> {
        self.inner.clone().write_record(record).await
    }

    /// Reads a record from R replicas; the newest version wins.
    pub async fn get_record(&self, partition: u32, key: &[u8]) -> Result<Option<Record>, NodeError> {
        self.inner.clone().get_record(partition, key.to_vec()).await
    }

    /// Sends one raw metadata request to `peer`.
    pub async fn meta_request(&self, peer: PeerId, request: MetaRequest) -> Result<MetaResponse, TransportError> {
        self.inner.request(peer, request).await
    }

    /// The replicas (first N of the preference list) of a record partition.
    pub fn record_replicas(&self, partition: u32) -> Vec<PeerId> {
        self.inner.view().map_or_else(Vec::new, |v| {
            v.1.preference(partition)
                .take(usize::from(v.0.policy.replication))
                .filter_map(peer_of)
                .collect()
        })
    }

    /// Scans a partition on R replicas and merges the pages (newest version per key, only
    /// as far as every replica's page reaches). Returns the records in key order, tombstones
    /// included, and whether the scan reached the end of the matching keys.
    pub async fn scan_records(
        &self,
        partition: u32,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Record>, bool), NodeError> {
        self.inner.clone().scan_records(partition, prefix, after, limit).await
    }

    /// The local record store (for checks); `None` unless a storage node.
    pub fn record_store(&self) -> Option<&Arc<RecordStore>> {
        self.inner.stores.as_ref().map(|s| &s.records)
    }
}
