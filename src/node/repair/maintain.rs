//! Keeping every partition at N copies: repair, re-replication, rebalancing, chunk garbage
//! collection and scrubbing. The shell around the rules of `storage::refs`.
//!
//! **Effective replicas.** A partition's replicas are the first N storage nodes of its
//! preference list that SWIM has not reported down for longer than `down_out_ms` (Ceph's
//! down → out). So when a node stays down, the next fallback becomes a replica — without
//! the monitors — and record anti-entropy and this pass fill it; when the node returns (or a
//! new epoch moves the partition) the fallback holds surplus copies, which it hands over and
//! drops only once the owners confirm theirs.
//!
//! **A pass** (every `interval_ms`, and after a scrub found bad copies):
//! 1. For each partition this node is an effective replica of: read the live chunk
//!    references (`c/…` records) it holds; fetch every referenced chunk it lacks from the
//!    other holders (verified by id, rate-limited). On the partition's first live replica
//!    only: judge every reference older than the grace period against its holder (a quorum
//!    read) and tombstone the dead ones.
//! 2. For each stored chunk: in an owned partition, a chunk without a live reference for
//!    the grace period — confirmed by asking every effective replica for its references —
//!    is deleted. In a partition it does not own (and with no hint naming it: handoff owns
//!    those), it is given to the owners that lack it and deleted once all of them have it.
//! 3. Record partitions held but not owned are pushed to every owner (anti-entropy, push
//!    only) and deleted here once a second comparison finds nothing left to push.
//! 4. If anything was deleted, the chunk store compacts (disk space returns).
//!
//! **Scrub** re-reads every chunk at `scrub_rate_bytes_per_s` every `scrub_interval_ms`;
//! the chunk store sets bad copies aside, and the next pass fetches them again as missing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chunkstore::ChunkId;
use futures::StreamExt;

use super::report::{MaintenanceConfig, MaintenanceReport};
use crate::cluster::{ClusterMap, NodeId, Placement, partition_of_chunk};
use crate::node::chunks::wire::{ChunkRequest, ChunkResponse, HAS_IDS_MAX};
use crate::node::metrics::bump;
use crate::node::records::wire::{MetaRequest, MetaResponse};
use crate::node::runtime::Inner;
use crate::node::runtime::{Node, peer_of};
use crate::storage::hints::HintItem;
use crate::storage::records::{Record, RecordValue, Version};
use crate::storage::refs::{self, ChunkHolder, ChunkRefValue, HolderState, Verdict};
use libp2p::PeerId;

/// Reference records read per page.
const REF_PAGE_RECORDS: usize = 1000;
/// Holders remembered per pass (each a quorum read); beyond it references wait a pass.
const HOLDER_CHECKS_PER_PASS_MAX: usize = 100_000;
/// Chunks one pass fetches at once.
const FETCHES_IN_FLIGHT_MAX: usize = 4;
/// Compactions one pass runs at most (each rewrites up to a segment of live data).
const COMPACTIONS_PER_PASS_MAX: usize = 16;
/// References of one chunk read when confirming it is unreferenced.
const CONFIRM_REFS_MAX: usize = 16;

/// Paces copies to a byte rate.
struct Pace {
    started: Instant,
    bytes: u64,
    rate_bytes_per_s: u64,
}

impl Pace {
    fn new(rate_bytes_per_s: u64) -> Pace {
        Pace {
            started: Instant::now(),
            bytes: 0,
            rate_bytes_per_s,
        }
    }

    async fn spend(&mut self, bytes: u64) {
        self.bytes += bytes;
        if self.rate_bytes_per_s == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate_bytes_per_s as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A live reference held here.
struct LiveRef {
    record: Record,
    chunk: [u8; 32],
    holder: ChunkHolder,
    chunk_size_bytes: u32,
}

impl Inner {
    pub(super) fn maintenance_config(&self) -> MaintenanceConfig {
        self.maintenance.get().copied().unwrap_or_default()
    }

    /// Whether SWIM has reported `node` down for longer than `down_out_ms`.
    pub(super) fn is_out(&self, node: &NodeId) -> bool {
        let out_ms = self.maintenance_config().down_out_ms;
        *node != self.node_id
            && self
                .down_since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(node)
                .is_some_and(|since| since.elapsed() >= Duration::from_millis(out_ms))
    }

    /// The members SWIM has reported down for longer than `down_out_ms`, sorted: when this
    /// changes, partitions have new effective replicas.
    pub(super) fn out_nodes(&self) -> Vec<NodeId> {
        let down: Vec<NodeId> = self
            .down_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let mut out: Vec<NodeId> = down.into_iter().filter(|n| self.is_out(n)).collect();
        out.sort();
        out
    }

    /// The partition's effective replicas: the first N of its preference list not out.
    pub(super) fn effective_replicas(&self, map: &ClusterMap, placement: &Placement, partition: u32) -> Vec<NodeId> {
        placement
            .preference(partition)
            .filter(|n| !self.is_out(n))
            .take(usize::from(map.policy.replication))
            .cloned()
            .collect()
    }

    /// The live references this node holds in `partition`.
    async fn local_refs(&self, partition: u32) -> anyhow::Result<Vec<LiveRef>> {
        let local = self
            .stores
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this node holds no data (not a storage node)"))?;
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (records, a) = (local.records.clone(), after.clone());
            let page = tokio::task::spawn_blocking(move || {
                records.scan(partition, refs::REF_PREFIX, a.as_deref(), REF_PAGE_RECORDS)
            })
            .await??;
            let done = page.len() < REF_PAGE_RECORDS;
            for record in page {
                after = Some(record.key.clone());
                let RecordValue::Data(value) = &record.value else {
                    continue;
                };
                let (Ok(chunk), Ok((holder, chunk_size_bytes))) =
                    (refs::chunk_of_ref_key(&record.key), ChunkRefValue::decode(value))
                else {
                    tracing::warn!(partition, "undecodable chunk reference record skipped");
                    continue;
                };
                out.push(LiveRef {
                    record,
                    chunk,
                    holder,
                    chunk_size_bytes,
                });
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// One maintenance pass; see the module documentation.
    pub(super) async fn maintenance_pass(self: Arc<Self>) -> MaintenanceReport {
        let Some(local) = self.stores.as_ref() else {
            return MaintenanceReport::default();
        };
        let _one_at_a_time = self.maintenance_running.lock().await;
        let mut report = MaintenanceReport::default();
        let Some(view) = self.view() else { return report };
        let (map, placement) = &*view;
        let cfg = self.maintenance_config();
        let mut pace = Pace::new(cfg.copy_rate_bytes_per_s);
        let mut holders: HashMap<(u32, Vec<u8>), HolderState> = HashMap::new();
        // Chunks with a live reference here, per owned partition.
        let mut referenced: HashSet<[u8; 32]> = HashSet::new();
        let mut owned: HashSet<u32> = HashSet::new();
        for partition in 0..map.partitions {
            let replicas = self.effective_replicas(map, placement, partition);
            if !replicas.contains(&self.node_id) {
                continue;
            }
            owned.insert(partition);
            report.partitions_owned += 1;
            let live = match self.local_refs(partition).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(partition, error = %e, "could not read chunk references");
                    continue;
                }
            };
            let leader = replicas.iter().find(|n| self.is_alive(n)) == Some(&self.node_id);
            let mut missing_here = false;
            for r in &live {
                referenced.insert(r.chunk);
            }
            // Fetch what is referenced but not here (one chunk may have several references),
            // a few at a time: each is a network read and an fsync'd write.
            let mut asked: HashSet<[u8; 32]> = HashSet::new();
            let missing: Vec<(ChunkId, u32)> = live
                .iter()
                .filter(|r| !local.chunks.contains(&ChunkId(r.chunk)) && asked.insert(r.chunk))
                .map(|r| (ChunkId(r.chunk), r.chunk_size_bytes))
                .collect();
            let mut fetches = futures::stream::iter(missing.into_iter().map(|(id, size)| {
                let this = self.clone();
                async move {
                    let stored = match this.clone().get_chunk(id).await {
                        Ok(Some(bytes)) => {
                            let len = bytes.len() as u64;
                            this.store_chunk_locally(id, bytes).await.is_ok().then_some(len)
                        }
                        _ => None,
                    };
                    (stored, u64::from(size))
                }
            }))
            .buffer_unordered(FETCHES_IN_FLIGHT_MAX);
            while let Some((stored, size)) = fetches.next().await {
                match stored {
                    Some(len) => {
                        report.chunks_fetched += 1;
                        report.fetched_bytes += len;
                        pace.spend(len).await;
                    }
                    None => {
                        missing_here = true;
                        report.chunks_missing += 1;
                        report.bytes_left += size;
                    }
                }
            }
            if missing_here {
                report.partitions_moving += 1;
            }
            if leader {
                self.judge_refs(partition, &live, &mut holders, &cfg, &mut report).await;
            }
        }
        self.sweep_chunks(map, placement, &owned, &referenced, &cfg, &mut pace, &mut report)
            .await;
        self.hand_over_records(map, placement, &owned, &mut report).await;
        let dead_bytes = local.chunks.stats().dead_record_bytes;
        if report.chunks_collected + report.surplus_chunks_dropped > 0
            || dead_bytes >= local.chunks.options().segment_size_bytes
        {
            let chunks = local.chunks.clone();
            match tokio::task::spawn_blocking(move || -> chunkstore::Result<u64> {
                let mut reclaimed = 0u64;
                for _ in 0..COMPACTIONS_PER_PASS_MAX {
                    let c = chunks.compact()?;
                    if c.inputs.is_empty() {
                        break;
                    }
                    reclaimed += c.bytes_before.saturating_sub(c.bytes_after);
                }
                Ok(reclaimed)
            })
            .await
            {
                Ok(Ok(reclaimed)) => report.compacted_bytes = reclaimed,
                other => tracing::warn!(?other, "compaction after collection failed"),
            }
        }
        let c = &self.counters;
        c.chunks_fetched.fetch_add(report.chunks_fetched, Relaxed);
        c.chunks_collected.fetch_add(report.chunks_collected, Relaxed);
        c.refs_dead.fetch_add(report.refs_dead, Relaxed);
        c.surplus_dropped
            .fetch_add(report.surplus_chunks_dropped + report.surplus_records_dropped, Relaxed);
        bump(&c.maintenance_passes);
        if report != MaintenanceReport::default() {
            tracing::info!(?report, "maintenance pass");
        }
        *self.maintenance_last.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        report
    }

    /// On the partition's first live replica: tombstones references whose holder moved on.
    async fn judge_refs(
        self: &Arc<Self>,
        partition: u32,
        live: &[LiveRef],
        holders: &mut HashMap<(u32, Vec<u8>), HolderState>,
        cfg: &MaintenanceConfig,
        report: &mut MaintenanceReport,
    ) {
        let now_ms = self.clock.now_ms();
        for r in live {
            let ref_ms = refs::version_ms(&r.record.version);
            if now_ms.saturating_sub(ref_ms) < cfg.gc_grace_ms {
                continue;
            }
            let key = (r.holder.holder_partition, r.holder.holder_key.clone());
            let state = match holders.get(&key) {
                Some(s) => *s,
                None if holders.len() >= HOLDER_CHECKS_PER_PASS_MAX => continue,
                None => {
                    let s = match self.clone().get_record(key.0, key.1.clone()).await {
                        Ok(Some(Record {
                            version,
                            value: RecordValue::Data(_),
                            ..
                        })) => HolderState::Live(version),
                        Ok(Some(Record { version, .. })) => HolderState::Deleted(version),
                        Ok(None) => HolderState::Missing,
                        Err(_) => HolderState::Unknown,
                    };
                    holders.insert(key, s);
                    s
                }
            };
            report.refs_checked += 1;
            if refs::judge(&r.holder, ref_ms, state, now_ms, cfg.gc_grace_ms) != Verdict::Dead {
                continue;
            }
            let tombstone = Record {
                partition,
                key: r.record.key.clone(),
                version: Version {
                    hlc: (now_ms << 16).max(r.record.version.hlc + 1),
                    unique: rand::random(),
                },
                value: RecordValue::Tombstone,
            };
            match self.clone().coordinate_record(tombstone).await {
                Ok(_) => report.refs_dead += 1,
                Err(e) => tracing::debug!(partition, error = %e, "could not tombstone a dead reference"),
            }
        }
    }

    /// Deletes unreferenced chunks of owned partitions and hands surplus chunks over.
    #[allow(clippy::too_many_arguments)]
    async fn sweep_chunks(
        self: &Arc<Self>,
        map: &ClusterMap,
        placement: &Placement,
        owned: &HashSet<u32>,
        referenced: &HashSet<[u8; 32]>,
        cfg: &MaintenanceConfig,
        pace: &mut Pace,
        report: &mut MaintenanceReport,
    ) {
        let Some(local) = self.stores.as_ref() else { return };
        let chunks = local.chunks.clone();
        let Ok(ids) = tokio::task::spawn_blocking(move || chunks.ids().collect::<Vec<_>>()).await else {
            return;
        };
        let now_ms = self.clock.now_ms();
        let mut surplus: HashMap<u32, Vec<ChunkId>> = HashMap::new();
        let mut candidates = Vec::new();
        {
            let mut unreferenced = self.unreferenced.lock().unwrap_or_else(|p| p.into_inner());
            for id in &ids {
                let partition = partition_of_chunk(map.partitions, &id.0);
                if !owned.contains(&partition) {
                    surplus.entry(partition).or_default().push(*id);
                } else if referenced.contains(&id.0) {
                    unreferenced.clear(&id.0);
                } else if unreferenced.note(id.0, now_ms, cfg.gc_grace_ms) {
                    candidates.push(*id);
                }
            }
            let present: HashSet<[u8; 32]> = ids.iter().map(|i| i.0).collect();
            unreferenced.retain(|c| present.contains(c));
        }
        for id in candidates {
            let partition = partition_of_chunk(map.partitions, &id.0);
            let replicas = self.effective_replicas(map, placement, partition);
            if self.referenced_anywhere(partition, &id, &replicas).await != Some(false) {
                continue;
            }
            let size = local.chunks.size_of(&id).unwrap_or(0);
            if self.delete_chunk_unless_hinted(id).await {
                self.unreferenced.lock().unwrap_or_else(|p| p.into_inner()).clear(&id.0);
                report.chunks_collected += 1;
                report.collected_bytes += size;
            }
        }
        for (partition, ids) in surplus {
            let owners: Vec<NodeId> = self
                .effective_replicas(map, placement, partition)
                .into_iter()
                .filter(|n| *n != self.node_id)
                .collect();
            let mut left = 0u64;
            for batch in ids.chunks(HAS_IDS_MAX) {
                let batch = self.not_hinted(batch).await;
                if batch.is_empty() {
                    continue;
                }
                // Per chunk, the owners that lack it (None: an owner did not answer).
                let mut lacking: Vec<Option<Vec<NodeId>>> = vec![Some(Vec::new()); batch.len()];
                for owner in &owners {
                    let request = ChunkRequest::Has {
                        ids: batch.iter().map(|i| i.0).collect(),
                    };
                    match self.request_node(owner, request).await {
                        Ok(ChunkResponse::Have(have)) if have.len() == batch.len() => {
                            for (l, has) in lacking.iter_mut().zip(have) {
                                if let (Some(l), false) = (l.as_mut(), has) {
                                    l.push(owner.clone());
                                }
                            }
                        }
                        _ => lacking.iter_mut().for_each(|l| *l = None),
                    }
                }
                for (id, lacking) in batch.iter().zip(lacking) {
                    let Some(lacking) = lacking else {
                        left += 1;
                        report.bytes_left += local.chunks.size_of(id).unwrap_or(0);
                        continue;
                    };
                    let mut given = true;
                    if !lacking.is_empty() {
                        let chunks = local.chunks.clone();
                        let id2 = *id;
                        let data = match tokio::task::spawn_blocking(move || chunks.get(&id2)).await {
                            Ok(Ok(Some(c))) => c.into_bytes(),
                            _ => continue, // gone or set aside meanwhile
                        };
                        for owner in &lacking {
                            let request = ChunkRequest::Put {
                                id: id.0,
                                data: data.clone(),
                                coordinate: false,
                                hint_for: None,
                            };
                            if matches!(
                                self.request_node(owner, request).await,
                                Ok(ChunkResponse::Stored { .. })
                            ) {
                                report.surplus_chunks_pushed += 1;
                            } else {
                                given = false;
                            }
                        }
                        pace.spend(data.len() as u64 * lacking.len() as u64).await;
                    }
                    // Dropped only when every owner has (now) acknowledged its copy; an owner
                    // list shorter than N (a cluster below strength) keeps it too.
                    if given && owners.len() >= usize::from(map.policy.replication) {
                        if self.delete_chunk_unless_hinted(*id).await {
                            report.surplus_chunks_dropped += 1;
                        }
                    } else {
                        left += 1;
                        report.bytes_left += local.chunks.size_of(id).unwrap_or(0);
                    }
                }
            }
            if left > 0 {
                report.surplus_chunks_left += left;
                report.partitions_moving += 1;
            }
        }
    }

    /// Whether any effective replica holds a live reference to `id` (None: one could not
    /// answer, so nothing may be concluded).
    async fn referenced_anywhere(&self, partition: u32, id: &ChunkId, replicas: &[NodeId]) -> Option<bool> {
        let local = self.stores.as_ref()?;
        let prefix = refs::ref_prefix(&id.0);
        for node in replicas {
            let page = if *node == self.node_id {
                let (records, p) = (local.records.clone(), prefix.clone());
                tokio::task::spawn_blocking(move || records.scan(partition, &p, None, CONFIRM_REFS_MAX))
                    .await
                    .ok()?
                    .ok()?
            } else {
                let request = MetaRequest::Scan {
                    partition,
                    prefix: prefix.clone(),
                    after: None,
                    limit: CONFIRM_REFS_MAX as u32,
                };
                match self.request_node(node, request).await {
                    Ok(MetaResponse::Records { records, .. }) => records,
                    _ => return None,
                }
            };
            if page.iter().any(|r| matches!(r.value, RecordValue::Data(_))) {
                return Some(true);
            }
        }
        Some(false)
    }

    /// The ids no hint names (hinted copies belong to handoff).
    async fn not_hinted(&self, ids: &[ChunkId]) -> Vec<ChunkId> {
        let Some(local) = self.stores.as_ref() else {
            return Vec::new();
        };
        let (hints, ids) = (local.hints.clone(), ids.to_vec());
        tokio::task::spawn_blocking(move || {
            ids.into_iter()
                .filter(|id| matches!(hints.holds_item(&HintItem::Chunk(id.0)), Ok(false)))
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Deletes a local chunk unless a hint names it, serialised with hinted stores.
    async fn delete_chunk_unless_hinted(&self, id: ChunkId) -> bool {
        let Some(local) = self.stores.as_ref() else {
            return false;
        };
        let _guard = self.hint_lock.lock().await;
        if self.not_hinted(&[id]).await.is_empty() {
            return false;
        }
        let chunks = local.chunks.clone();
        matches!(
            tokio::task::spawn_blocking(move || chunks.delete(&id)).await,
            Ok(Ok(true))
        )
    }

    /// Pushes record partitions held here but not owned to their owners; drops them once a
    /// comparison with every owner finds nothing left to push.
    async fn hand_over_records(
        self: &Arc<Self>,
        map: &ClusterMap,
        placement: &Placement,
        owned: &HashSet<u32>,
        report: &mut MaintenanceReport,
    ) {
        let Some(local) = self.stores.as_ref() else { return };
        for partition in 0..map.partitions {
            if owned.contains(&partition) || local.records.merkle_root(partition).count == 0 {
                continue;
            }
            let owners: Vec<NodeId> = self.effective_replicas(map, placement, partition);
            if owners.len() < usize::from(map.policy.replication) {
                report.partitions_moving += 1;
                continue;
            }
            let mut clean = true;
            for owner in &owners {
                // Only a comparison that finds nothing to push proves this owner holds
                // every record here at least as new; after a push, compare again.
                let mut confirmed = false;
                for _ in 0..2 {
                    match self.anti_entropy_with(owner, partition, false).await {
                        Ok(r) if r.planned_push == 0 => {
                            confirmed = true;
                            break;
                        }
                        Ok(r) => report.surplus_records_pushed += r.pushed,
                        Err(_) => break,
                    }
                }
                if !confirmed {
                    clean = false;
                    break;
                }
            }
            if !clean {
                report.partitions_moving += 1;
                continue;
            }
            match self.drop_partition_records(partition).await {
                Ok(n) => report.surplus_records_dropped += n,
                Err(e) => tracing::warn!(partition, error = %e, "could not drop surplus records"),
            }
        }
    }

    /// Removes this node's records of `partition`, except hinted ones (handoff owns them).
    async fn drop_partition_records(&self, partition: u32) -> anyhow::Result<u64> {
        let local = self
            .stores
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this node holds no data (not a storage node)"))?;
        let _guard = self.hint_lock.lock().await;
        let (records, hints) = (local.records.clone(), local.hints.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
            let mut dropped = 0u64;
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = records.scan(partition, b"", after.as_deref(), REF_PAGE_RECORDS)?;
                let done = page.len() < REF_PAGE_RECORDS;
                for r in page {
                    after = Some(r.key.clone());
                    let item = HintItem::Record {
                        partition,
                        key: r.key.clone(),
                    };
                    if hints.holds_item(&item)? {
                        continue;
                    }
                    if records.remove_exact(partition, &r.key, r.version)? {
                        dropped += 1;
                    }
                }
                if done {
                    return Ok(dropped);
                }
            }
        })
        .await?
    }
}

/// Runs passes every `interval_ms`, soon after a new epoch or a node going out, and when a
/// scrub asks.
pub(super) async fn maintenance_loop(inner: Weak<Inner>, interval_ms: u64, nudge: Arc<tokio::sync::Notify>) {
    let mut last = (0u64, Vec::new());
    let mut since_pass_ms = 0u64;
    const TICK_MS: u64 = 1000;
    loop {
        let nudged = tokio::time::timeout(Duration::from_millis(TICK_MS), nudge.notified())
            .await
            .is_ok();
        let Some(inner) = inner.upgrade() else { return };
        since_pass_ms += TICK_MS;
        let now = (inner.view().map_or(0, |v| v.0.epoch), inner.out_nodes());
        if nudged || since_pass_ms >= interval_ms || now != last {
            last = now;
            since_pass_ms = 0;
            inner.maintenance_pass().await;
        }
    }
}

/// Scrubs the chunk store every `interval_ms` at `rate_bytes_per_s`; bad copies make the
/// next pass start at once (it fetches them again).
pub(super) async fn scrub_loop(inner: Weak<Inner>, interval_ms: u64, rate_bytes_per_s: u64) {
    loop {
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        let Some(inner) = inner.upgrade() else { return };
        inner.scrub_now(rate_bytes_per_s).await;
    }
}

impl Inner {
    /// One scrub of every chunk; returns the bad copies it set aside.
    pub(super) async fn scrub_now(&self, rate_bytes_per_s: u64) -> Vec<ChunkId> {
        let Some(local) = self.stores.as_ref() else {
            return Vec::new();
        };
        let chunks = local.chunks.clone();
        let report = tokio::task::spawn_blocking(move || chunks.scrub(rate_bytes_per_s, None, |_| {}))
            .await
            .unwrap_or_default();
        self.counters.scrubbed_bytes.fetch_add(report.bytes_checked, Relaxed);
        if !report.corrupt.is_empty() {
            self.counters
                .scrub_corrupt
                .fetch_add(report.corrupt.len() as u64, Relaxed);
            tracing::error!(
                bad = report.corrupt.len(),
                "scrub set aside corrupt chunks; restoring them"
            );
            self.maintenance_nudge.notify_one();
        }
        report.corrupt
    }
}

impl Node {
    /// Starts maintenance (repair, re-replication, rebalancing, garbage collection) and
    /// scrubbing in the background, per `config`; also sets how long a node must be down
    /// before its partitions get another replica. Storage nodes run it; call it once.
    pub fn start_maintenance(&self, config: MaintenanceConfig) {
        if self.inner.maintenance.set(config).is_err() {
            tracing::warn!("maintenance already started");
            return;
        }
        if config.interval_ms > 0 {
            tokio::spawn(maintenance_loop(
                Arc::downgrade(&self.inner),
                config.interval_ms,
                self.inner.maintenance_nudge.clone(),
            ));
        }
        if config.scrub_interval_ms > 0 {
            tokio::spawn(scrub_loop(
                Arc::downgrade(&self.inner),
                config.scrub_interval_ms,
                config.scrub_rate_bytes_per_s,
            ));
        }
    }

    /// Runs one maintenance pass now (waits for a running one first).
    pub async fn maintenance_pass(&self) -> MaintenanceReport {
        self.inner.clone().maintenance_pass().await
    }

    /// What the last maintenance pass did and left (None before the first).
    pub fn maintenance_report(&self) -> Option<MaintenanceReport> {
        *self.inner.maintenance_last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Scrubs every chunk now at `rate_bytes_per_s` (0: unlimited); returns the bad copies
    /// it set aside (a maintenance pass then restores them).
    pub async fn scrub(&self, rate_bytes_per_s: u64) -> Vec<ChunkId> {
        self.inner.scrub_now(rate_bytes_per_s).await
    }

    /// The effective replicas of a partition (the first N of its preference list that are
    /// not down longer than the down-out time).
    pub fn effective_replicas(&self, partition: u32) -> Vec<PeerId> {
        self.inner.view().map_or_else(Vec::new, |v| {
            self.inner
                .effective_replicas(&v.0, &v.1, partition)
                .iter()
                .filter_map(peer_of)
                .collect()
        })
    }
}
