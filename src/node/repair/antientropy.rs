//! Merkle anti-entropy of record partitions between live replicas: the shell around the
//! sans-IO `storage::antientropy` session. Each round, a node compares every partition it
//! replicates (it is among the partition's effective replicas, see `maintain`) with one other
//! live replica, taking them in turn from round to round, and copies what differs both ways:
//! it pulls records the peer has newer and pushes those it has newer. Identical partitions
//! cost one root exchange. Rounds run on an interval and right after a new map epoch.
//!
//! Chunks follow their references (records like any other, so compared here): the
//! maintenance pass (`maintain`) fetches referenced chunks a replica lacks. Records are not
//! rate-limited beyond one partition at a time.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::cluster::NodeId;
use crate::node::records::wire::{MetaRequest, MetaResponse};
use crate::node::runtime::Inner;
use crate::node::runtime::Node;
use crate::storage::antientropy::{self, Answer, Ask, ITEMS_PER_ANSWER_MAX, Session};
use crate::storage::records::{PARTITION_MERKLE_SHAPE, Record, RecordStore};

/// Default time between anti-entropy rounds.
pub const ANTI_ENTROPY_INTERVAL_MS_DEFAULT: u64 = 60_000;
/// Most bytes of (key, version) items in one answer (well inside the meta frame limit).
const ANSWER_ITEM_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Records sent per push request.
const PUSH_BATCH_RECORDS: usize = 256;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AntiEntropyReport {
    /// Partition comparisons run.
    pub sessions: u64,
    /// Comparisons that failed (peer unreachable, bad answer); retried next round.
    pub failed: u64,
    /// Bytes of questions and answers.
    pub exchanged_bytes: u64,
    /// Records fetched from peers.
    pub pulled: u64,
    /// Records sent to peers.
    pub pushed: u64,
    /// Records the comparison found the peer lacking or older (pushed or not).
    pub planned_push: u64,
}

/// The peer's side: answers `ask` from this store's summary and records of `partition`.
pub(in crate::node) fn answer_from(records: &RecordStore, partition: u32, ask: &Ask) -> Answer {
    let tree = records.merkle_snapshot(partition);
    let mut failure = None;
    let answer = antientropy::answer(
        tree.as_ref(),
        PARTITION_MERKLE_SHAPE,
        ask,
        &mut |leaves, after| match records.leaf_items(partition, leaves, after, ITEMS_PER_ANSWER_MAX) {
            Ok((mut items, mut complete)) => {
                let mut size_bytes = 0usize;
                if let Some(cut) = items.iter().position(|(k, _)| {
                    size_bytes += k.len() + 32;
                    size_bytes > ANSWER_ITEM_BYTES_MAX
                }) {
                    items.truncate(cut);
                    complete = false;
                }
                (items, complete)
            }
            Err(e) => {
                failure = Some(e.to_string());
                (Vec::new(), false)
            }
        },
    );
    match failure {
        Some(e) => Answer::Refused(e),
        None => answer,
    }
}

impl Inner {
    /// Compares one partition with one peer and copies the differences: pushes what the
    /// peer lacks, and with `pull` also fetches what this node lacks.
    pub(super) async fn anti_entropy_with(
        self: &Arc<Self>,
        peer: &NodeId,
        partition: u32,
        pull: bool,
    ) -> anyhow::Result<AntiEntropyReport> {
        let local = self
            .stores
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this node holds no data (not a storage node)"))?;
        let records = local.records.clone();
        let tree = tokio::task::spawn_blocking(move || records.merkle_snapshot(partition))
            .await?
            .or_else(|| chunkstore::MerkleTree::new(PARTITION_MERKLE_SHAPE))
            .ok_or_else(|| anyhow::anyhow!("bad Merkle shape"))?;
        let (mut session, mut ask) = Session::new(tree);
        loop {
            let answer = match self
                .request_node(
                    peer,
                    MetaRequest::AntiEntropy {
                        partition,
                        ask: ask.clone(),
                    },
                )
                .await
            {
                Ok(MetaResponse::AntiEntropy(a)) => a,
                Ok(other) => anyhow::bail!("unexpected answer {other:?}"),
                Err(e) => anyhow::bail!("{e}"),
            };
            // This side's items of the asked leaves, read off the async threads.
            let mut local = match &ask {
                Ask::Leaves { leaves, .. } => {
                    let (records, leaves) = (local.records.clone(), leaves.clone());
                    Some(
                        tokio::task::spawn_blocking(move || records.leaf_items(partition, &leaves, None, usize::MAX))
                            .await??
                            .0,
                    )
                }
                _ => None,
            };
            match session.on_answer(answer, &mut |_| local.take().unwrap_or_default())? {
                Some(next) => ask = next,
                None => break,
            }
        }
        let exchanged_bytes = session.sent_bytes() + session.received_bytes();
        let plan = session.into_plan();
        let mut pulled = 0u64;
        let planned_push = plan.push.len() as u64;
        for key in plan.pull.into_iter().filter(|_| pull) {
            if let Ok(MetaResponse::Record(Some(record))) =
                self.request_node(peer, MetaRequest::Get { partition, key }).await
                && self.store_records_locally(vec![record], None).await.is_ok()
            {
                pulled += 1;
            }
        }
        let mut pushed = 0u64;
        for keys in plan.push.chunks(PUSH_BATCH_RECORDS) {
            let (records, keys) = (local.records.clone(), keys.to_vec());
            let batch: Vec<Record> = tokio::task::spawn_blocking(move || {
                keys.iter()
                    .filter_map(|k| records.get(partition, k).ok().flatten())
                    .collect()
            })
            .await?;
            let count = batch.len() as u64;
            let request = MetaRequest::Put {
                records: batch,
                hint_for: None,
            };
            if let Ok(MetaResponse::Applied(_)) = self.request_node(peer, request).await {
                pushed += count;
            }
        }
        Ok(AntiEntropyReport {
            sessions: 1,
            failed: 0,
            exchanged_bytes,
            pulled,
            pushed,
            planned_push,
        })
    }

    /// One round over every partition this node replicates.
    pub(super) async fn anti_entropy_round(self: Arc<Self>) -> AntiEntropyReport {
        let mut report = AntiEntropyReport::default();
        let Some(view) = self.view() else { return report };
        let (map, placement) = &*view;
        let round = self.anti_entropy_rounds.fetch_add(1, Relaxed) as usize;
        for partition in 0..map.partitions {
            let replicas = self.effective_replicas(map, placement, partition);
            if !replicas.contains(&self.node_id) {
                continue;
            }
            let peers: Vec<&NodeId> = replicas
                .iter()
                .filter(|r| **r != self.node_id && self.is_alive(r))
                .collect();
            if peers.is_empty() {
                continue;
            }
            // A partition still filling is compared with the old owners it has not synced
            // with yet, in this round, until R of them have (see `Filling`); any other with
            // one replica, taken in turn.
            let old_owners: Vec<NodeId> = self
                .map
                .filling_from(partition)
                .unwrap_or_default()
                .into_iter()
                .filter(|o| *o != self.node_id && self.is_alive(o))
                .collect();
            let sessions: Vec<(NodeId, bool)> = if old_owners.is_empty() {
                vec![(peers[round % peers.len()].clone(), false)]
            } else {
                old_owners.into_iter().map(|o| (o, true)).collect()
            };
            for (peer, is_old_owner) in sessions {
                match self.anti_entropy_with(&peer, partition, true).await {
                    Ok(r) => {
                        if is_old_owner {
                            self.map.filled(partition, &peer);
                        }
                        report.sessions += 1;
                        report.exchanged_bytes += r.exchanged_bytes;
                        report.pulled += r.pulled;
                        report.pushed += r.pushed;
                    }
                    Err(e) => {
                        report.failed += 1;
                        tracing::debug!(partition, ?peer, error = %e, "anti-entropy session failed");
                    }
                }
                if is_old_owner && !self.map.is_filling(partition) {
                    break;
                }
            }
        }
        self.counters.anti_entropy_sessions.fetch_add(report.sessions, Relaxed);
        self.counters
            .anti_entropy_bytes
            .fetch_add(report.exchanged_bytes, Relaxed);
        self.counters
            .anti_entropy_records_copied
            .fetch_add(report.pulled + report.pushed, Relaxed);
        if report.pulled + report.pushed > 0 {
            tracing::info!(?report, "anti-entropy copied records");
        }
        if report.pulled > 0 {
            // New records may be chunk references this node must fetch the chunks of.
            self.maintenance_nudge.notify_one();
        }
        report
    }
}

/// Runs rounds every `interval_ms`, and soon after the map epoch changes or a node goes out
/// (either gives partitions new effective replicas, which need their records).
pub(super) async fn anti_entropy_loop(inner: Weak<Inner>, interval_ms: u64) {
    let mut last = (0u64, Vec::new());
    let mut since_round_ms = 0u64;
    const TICK_MS: u64 = 1000;
    loop {
        tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
        let Some(inner) = inner.upgrade() else { return };
        since_round_ms += TICK_MS;
        let now = (inner.view().map_or(0, |v| v.0.epoch), inner.out_nodes());
        if since_round_ms >= interval_ms || now != last {
            last = now;
            since_round_ms = 0;
            inner.anti_entropy_round().await;
        }
    }
}

impl Node {
    /// Compares every record partition this node replicates with one other live replica
    /// (round-robin over rounds) and copies what differs both ways. Returns the totals.
    pub async fn anti_entropy_round(&self) -> AntiEntropyReport {
        self.inner.clone().anti_entropy_round().await
    }

    /// Runs `anti_entropy_round` every `interval_ms` in the background (0: never), and right
    /// after this node adopts a new map epoch.
    pub fn start_anti_entropy(&self, interval_ms: u64) {
        if interval_ms > 0 {
            tokio::spawn(anti_entropy_loop(Arc::downgrade(&self.inner), interval_ms));
        }
    }
}
