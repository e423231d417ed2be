//! The quorum helpers every replicated request uses: `replicate` runs the sans-IO
//! `WriteCoordinator` with this module as its shell (a `Send` effect becomes a local write
//! or a request, `Timer` a sleep; acknowledgements, failures and refusals for lack of space
//! go back in), and `quorum_read` asks R replicas in parallel, hedging slow ones on a token
//! budget so a loaded cluster is not asked twice for everything.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use futures::StreamExt;

use super::hedge::HEDGED_READ_DELAY_MS;
use super::metrics::bump;
use super::runtime::Inner;
use crate::cluster::NodeId;
use crate::node::error::ErrorCode;
use crate::storage::replication::{Counting, Outcome, ReadTally, WriteCoordinator, WriteEffect};

/// What one answer of a hedged fan-out means to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Judged {
    /// The read has what it needs: stop asking.
    Done,
    /// Useful, but more answers are needed from those already asked.
    Wait,
    /// Not useful: ask the next candidate at once.
    AskNext,
}

/// How one target took its copy of a replicated write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TargetCopy {
    /// Durable there.
    Durable,
    /// Refused for lack of space.
    Full,
    /// Failed otherwise (unreachable, timed out, refused).
    Failed,
}

impl TargetCopy {
    pub(super) fn refused(code: ErrorCode) -> TargetCopy {
        if code == ErrorCode::Full {
            TargetCopy::Full
        } else {
            TargetCopy::Failed
        }
    }
}

impl Inner {
    /// Replicates one write through the coordinator; `send` performs one copy. Returns the
    /// outcome as soon as it is decided; after an ack the write goes on in the background
    /// until it settles (hinted fallbacks for replicas that fail late).
    pub(super) async fn replicate<F, Fut>(
        self: &Arc<Self>,
        preference: Vec<NodeId>,
        (n, w): (usize, usize),
        counting: Counting,
        payload_size_bytes: u64,
        send: F,
    ) -> (Outcome, usize)
    where
        F: Fn(NodeId, Option<NodeId>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = TargetCopy> + Send + 'static,
    {
        let (out_tx, out_rx) = oneshot::channel();
        let this = self.clone();
        if self.faults.ack_before_replication() {
            // netsim's deliberately broken mode (see `net::fault`): acknowledged before any
            // copy exists, replicated later; lost if this node dies in between.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(crate::net::fault::BROKEN_REPLICATION_DELAY_MS)).await;
                let (tx, _rx) = oneshot::channel();
                this.drive_write(preference, (n, w), counting, payload_size_bytes, send, tx)
                    .await
            });
            return (
                Outcome::Acked {
                    durable_on: Vec::new(),
                    hints: Vec::new(),
                },
                0,
            );
        }
        tokio::spawn(async move {
            this.drive_write(preference, (n, w), counting, payload_size_bytes, send, out_tx)
                .await
        });
        out_rx.await.unwrap_or((
            Outcome::Failed {
                durable_acks: 0,
                needed: w,
                reason: crate::storage::replication::FailReason::Timeout,
            },
            0,
        ))
    }

    /// The coordinator's shell: runs sends, timers and answers until the write is finished.
    pub(super) async fn drive_write<F, Fut>(
        self: Arc<Self>,
        preference: Vec<NodeId>,
        (n, w): (usize, usize),
        counting: Counting,
        payload_size_bytes: u64,
        send: F,
        out_tx: oneshot::Sender<(Outcome, usize)>,
    ) where
        F: Fn(NodeId, Option<NodeId>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = TargetCopy> + Send + 'static,
    {
        let mut out_tx = Some(out_tx);
        // Targets that refused their copy for lack of space (tells a full cluster from a
        // lost quorum when the write fails).
        let mut full_refusals = 0usize;
        let alive = |n: &NodeId| self.is_alive(n);
        let mut fx = Vec::new();
        let timeouts = self.timeouts.for_payload(payload_size_bytes);
        let mut coord = WriteCoordinator::start(self.now_ms(), &preference, n, w, counting, timeouts, &alive, &mut fx);
        let (tx, mut rx) = mpsc::channel::<(NodeId, TargetCopy)>(crate::storage::replication::TARGETS_MAX * 2);
        let mut timers: BTreeSet<u64> = BTreeSet::new();
        loop {
            for effect in fx.drain(..) {
                match effect {
                    WriteEffect::Send { to, hint_for } => {
                        let fut = send(to.clone(), hint_for);
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let copy = fut.await;
                            let _ = tx.send((to, copy)).await;
                        });
                    }
                    WriteEffect::Timer { at_ms } => {
                        timers.insert(at_ms);
                    }
                    WriteEffect::Done(outcome) => {
                        if let Some(out) = out_tx.take() {
                            let _ = out.send((outcome, full_refusals));
                        }
                    }
                    WriteEffect::Settled => {}
                }
            }
            if coord.is_finished() {
                return;
            }
            let next_timer = timers.first().copied();
            let sleep = async {
                match next_timer {
                    Some(at) => tokio::time::sleep(Duration::from_millis(at.saturating_sub(self.now_ms()))).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((from, copy)) = rx.recv() => {
                    match copy {
                        TargetCopy::Durable => coord.handle_ack(&from, &mut fx),
                        TargetCopy::Full => {
                            full_refusals += 1;
                            coord.handle_failure(self.now_ms(), &from, &alive, &mut fx);
                        }
                        TargetCopy::Failed => coord.handle_failure(self.now_ms(), &from, &alive, &mut fx),
                    }
                }
                () = sleep => {
                    let now = self.now_ms();
                    timers.retain(|t| *t > now);
                    coord.handle_timer(now, &alive, &mut fx);
                }
            }
        }
    }

    /// Asks the first `r` nodes of `preference` in parallel (members SWIM reports down
    /// last; stable otherwise); each one that cannot answer, or whose answer does not count,
    /// brings in the next, and so does one still silent after `HEDGED_READ_DELAY_MS` (a
    /// partitioned or paused replica stalls rather than fails), while hedge tokens last.
    /// Returns every answer, and how many counted (at most `r`; how they count:
    /// `ReadTally`). `nodes` is the number of storage nodes in the map.
    pub(super) async fn quorum_read<T, F, Fut>(
        &self,
        mut preference: Vec<NodeId>,
        (n, r, nodes): (usize, usize, usize),
        ask: F,
    ) -> (Vec<(NodeId, T)>, usize)
    where
        F: Fn(NodeId) -> Fut,
        Fut: std::future::Future<Output = (NodeId, Option<(T, bool)>)>,
    {
        let replicas: Vec<NodeId> = preference.iter().take(n).cloned().collect();
        preference.sort_by_key(|n| !self.is_alive(n));
        let mut answers = Vec::new();
        let mut tally = ReadTally::default();
        self.hedged_asks(
            &preference,
            r,
            &self.counters.hedged_record_reads,
            ask,
            |(node, answer)| {
                let Some((a, filling)) = answer else {
                    return Judged::AskNext;
                };
                let before = tally.counted(nodes, r);
                tally.answer(replicas.contains(&node), filling);
                answers.push((node, a));
                let counted = tally.counted(nodes, r);
                if counted >= r {
                    Judged::Done
                } else if counted > before {
                    Judged::Wait
                } else {
                    Judged::AskNext
                }
            },
        )
        .await;
        (answers, tally.counted(nodes, r))
    }

    /// The one hedged fan-out every read uses: asks `candidates` in order, `initial` of them
    /// at once; an answer `judge` finds useless brings in the next candidate at once, and so
    /// does silence for `HEDGED_READ_DELAY_MS` while the hedge budget lasts (each such hedge
    /// counted in `hedged`). Ends when `judge` says `Done`, or when every candidate asked
    /// has answered and none is left.
    pub(super) async fn hedged_asks<C, A, F, Fut>(
        &self,
        candidates: &[C],
        initial: usize,
        hedged: &std::sync::atomic::AtomicU64,
        ask: F,
        mut judge: impl FnMut(A) -> Judged,
    ) where
        C: Clone,
        F: Fn(C) -> Fut,
        Fut: std::future::Future<Output = A>,
    {
        self.hedges.earn();
        let mut next = 0;
        let mut asking = futures::stream::FuturesUnordered::new();
        while next < candidates.len() && asking.len() < initial.max(1) {
            asking.push(ask(candidates[next].clone()));
            next += 1;
        }
        let hedge = tokio::time::sleep(Duration::from_millis(HEDGED_READ_DELAY_MS));
        tokio::pin!(hedge);
        loop {
            let answer = tokio::select! {
                Some(done) = asking.next() => done,
                () = &mut hedge, if next < candidates.len() => {
                    if self.hedges.take() {
                        bump(hedged);
                        asking.push(ask(candidates[next].clone()));
                        next += 1;
                    }
                    hedge.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(HEDGED_READ_DELAY_MS));
                    continue;
                }
                else => break,
            };
            match judge(answer) {
                Judged::Done => break,
                Judged::Wait => {}
                Judged::AskNext => {
                    if next < candidates.len() {
                        asking.push(ask(candidates[next].clone()));
                        next += 1;
                    }
                }
            }
        }
    }
}
