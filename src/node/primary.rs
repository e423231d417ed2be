//! The shell of a primary-copy write (`crate::storage::primary`): which items a node writes
//! through a primary, and the loop that turns the core's `Send` effects into requests with a
//! deadline and feeds their answers back. Chunk puts (`chunks`) and record writes (`records`)
//! both use it: a node that is one of the item's N replicas coordinates the write itself;
//! any other node (a gateway, a client) sends the item once, to the first live replica.

use std::sync::Arc;

use crate::cluster::NodeId;
use crate::node::command::Rpc;
use crate::node::error::{NodeError, TransportError};
use crate::node::metrics::bump;
use crate::node::runtime::Inner;
use crate::storage::primary::{PrimaryAnswer, PrimaryEffect, PrimaryOutcome, PrimaryWrite};

/// Nodes a write tries as its primary before it gives up (the first live replica, then the
/// next in preference order).
pub const PRIMARY_ATTEMPTS_MAX: usize = 3;

impl Inner {
    /// Whether this node coordinates writes to `preference` itself: it holds data and is one
    /// of the first `replicas`.
    pub(in crate::node) fn is_replica_of(&self, preference: &[NodeId], replicas: usize) -> bool {
        self.stores.is_some() && preference.iter().take(replicas).any(|n| *n == self.node_id)
    }

    /// Sends one item through a primary: `request()` to the first live node of
    /// `preference`, then to the next while one fails or stays silent past the deadline for
    /// `payload_size_bytes`, at most `PRIMARY_ATTEMPTS_MAX` nodes. `judge` reads a primary's
    /// answer; `on_send` runs before each send (for byte counters).
    pub(in crate::node) async fn through_primary<R: Rpc>(
        self: &Arc<Self>,
        preference: &[NodeId],
        payload_size_bytes: u64,
        request: impl Fn() -> R,
        judge: impl Fn(R::Response) -> PrimaryAnswer,
        on_send: impl Fn(),
    ) -> Result<PrimaryOutcome, NodeError> {
        let timeouts = self.timeouts.for_payload(payload_size_bytes);
        // The primary's own write may use its whole write timeout, plus the transfer to it.
        let answer_ms = timeouts.write_timeout_ms.saturating_add(timeouts.target_timeout_ms);
        let mut effects = Vec::new();
        let mut write = PrimaryWrite::start(
            preference,
            &|n| self.is_alive(n),
            PRIMARY_ATTEMPTS_MAX,
            answer_ms,
            &mut effects,
        );
        if self.faults.ack_before_replication()
            && let Some(PrimaryEffect::Send { to, .. }) = effects.last().cloned()
        {
            // netsim's deliberately broken mode (see `net::fault`): acknowledged before the
            // primary has it, sent later; lost if this node dies in between.
            let (this, late, primary) = (self.clone(), request(), to.clone());
            on_send();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(
                    crate::net::fault::BROKEN_REPLICATION_DELAY_MS,
                ))
                .await;
                let _ = this.request_node(&primary, late).await;
            });
            return Ok(PrimaryOutcome::Stored { primary: to, copies: 0 });
        }
        // Each round sends to one new primary or ends the write (at most
        // `PRIMARY_ATTEMPTS_MAX` rounds).
        while let Some(effect) = effects.pop() {
            let (primary, timeout_ms) = match effect {
                PrimaryEffect::Send { to, timeout_ms } => (to, timeout_ms),
                PrimaryEffect::Done(outcome) => return Ok(outcome),
            };
            if write.fallbacks() > 0 {
                bump(&self.counters.primary_fallbacks);
            }
            on_send();
            let answer = tokio::time::timeout(
                std::time::Duration::from_millis(timeout_ms),
                self.request_node(&primary, request()),
            )
            .await;
            let answer = match answer {
                Ok(Ok(response)) => judge(response),
                Ok(Err(TransportError::Stopped)) => return Err(NodeError::Stopped),
                Ok(Err(e)) => {
                    tracing::debug!(peer = ?primary, error = %e, "primary unreachable; trying the next");
                    PrimaryAnswer::Silent
                }
                Err(_) => {
                    tracing::debug!(peer = ?primary, timeout_ms, "primary did not answer in time; trying the next");
                    PrimaryAnswer::Silent
                }
            };
            if answer == PrimaryAnswer::Failed {
                tracing::debug!(peer = ?primary, "primary failed the write; trying the next");
            }
            write.handle(&primary, answer, &mut effects);
        }
        Err(NodeError::Internal("a primary write ended without an outcome".into()))
    }
}
