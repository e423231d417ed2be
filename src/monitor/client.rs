//! Talking to the monitors from outside the quorum: the admin CLI's proposals (with retries
//! that keep their request id, so a change applies at most once however often it is resent)
//! and a storage node's join loop (ask to be admitted, or to have its addresses refreshed,
//! until the map names it where it listens).

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::pnet::PreSharedKey;
use libp2p::{Multiaddr, PeerId};

use super::state::{Op, Outcome};
use crate::cluster::NodeId;
use crate::node::Node;
use crate::node::protocol::{AdminRequest, AdminResponse, StatusReport};

/// Pause between rounds over the monitors while none can decide.
const RETRY_PAUSE_MS: u64 = 1_000;
/// How often a node that is not (yet) in the map asks to join.
pub const JOIN_RETRY_MS: u64 = 2_000;
/// Most monitor addresses a client keeps (learned from answers included).
const MONITORS_MAX: usize = 16;

/// Why no monitor could decide.
#[derive(Debug, thiserror::Error)]
#[error("the monitor quorum is unavailable ({tried} attempts over {elapsed_ms} ms): {last}")]
pub struct QuorumUnavailable {
    /// Requests sent.
    pub tried: usize,
    /// Time spent.
    pub elapsed_ms: u128,
    /// The last reason heard.
    pub last: String,
}

/// Sends `request` to the monitors in turn until one decides, or `timeout` passes. Nodes
/// that are not monitors answer with the monitors they know; those are tried too.
pub async fn ask_monitors(
    secret: PreSharedKey,
    monitors: &[Multiaddr],
    request: AdminRequest,
    timeout: Duration,
) -> Result<AdminResponse, QuorumUnavailable> {
    let started = Instant::now();
    let mut targets: Vec<Multiaddr> = monitors.to_vec();
    let mut tried = 0;
    let mut last = String::from("no monitor address given");
    loop {
        let mut i = 0;
        while i < targets.len() {
            tried += 1;
            match crate::node::client::admin_request(secret, &targets[i], request.clone()).await {
                Ok(AdminResponse::Unavailable(why)) => last = format!("{}: {why}", targets[i]),
                Ok(AdminResponse::NotMonitor { monitors }) => {
                    last = format!("{} is not a monitor", targets[i]);
                    for m in monitors.iter().filter_map(|m| m.parse::<Multiaddr>().ok()) {
                        if !targets.contains(&m) && targets.len() < MONITORS_MAX {
                            targets.push(m);
                        }
                    }
                }
                Ok(answer) => return Ok(answer),
                Err(e) => last = format!("{}: {e}", targets[i]),
            }
            i += 1;
            if started.elapsed() >= timeout {
                return Err(QuorumUnavailable {
                    tried,
                    elapsed_ms: started.elapsed().as_millis(),
                    last,
                });
            }
        }
        if started.elapsed() + Duration::from_millis(RETRY_PAUSE_MS) >= timeout {
            return Err(QuorumUnavailable {
                tried,
                elapsed_ms: started.elapsed().as_millis(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
    }
}

/// Proposes `op` under one fresh request id, retrying through leader changes and monitor
/// failures until it commits or is refused, or `timeout` passes.
pub async fn propose(
    secret: PreSharedKey,
    monitors: &[Multiaddr],
    op: Op,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    propose_with_id(secret, monitors, rand::random(), op, timeout).await
}

/// `propose` with a caller-chosen request id (tests resend one on purpose).
pub async fn propose_with_id(
    secret: PreSharedKey,
    monitors: &[Multiaddr],
    request_id: u128,
    op: Op,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    match ask_monitors(secret, monitors, AdminRequest::Propose { request_id, op }, timeout).await? {
        AdminResponse::Outcome(o) => Ok(o),
        AdminResponse::Error(e) => anyhow::bail!("refused: {e}"),
        other => anyhow::bail!("unexpected answer: {other:?}"),
    }
}

/// The status report of the first monitor that answers.
pub async fn status(secret: PreSharedKey, monitors: &[Multiaddr], timeout: Duration) -> anyhow::Result<StatusReport> {
    match ask_monitors(secret, monitors, AdminRequest::Status, timeout).await? {
        AdminResponse::Status(s) => Ok(*s),
        other => anyhow::bail!("unexpected answer: {other:?}"),
    }
}

/// Whether `map` names this node at exactly `addrs`.
fn admitted(node: &Node, addrs: &[String]) -> bool {
    node.map()
        .and_then(|m| m.node(&NodeId(node.peer_id().to_bytes())).map(|n| n.addrs == addrs))
        .unwrap_or(false)
}

/// Asks the monitors (from the map, else `bootstrap`) to admit this node, or to refresh its
/// addresses, until the map names it where it listens. Runs until then (a node waiting for
/// an operator keeps asking, quietly).
pub async fn join_until_member(node: Arc<Node>, bootstrap: Vec<(PeerId, Multiaddr)>, zone: String) {
    let addrs = vec![node.listen_addr().to_string()];
    let mut told_pending = false;
    loop {
        if admitted(&node, &addrs) {
            tracing::info!(epoch = node.epoch(), "this node is in the map");
            return;
        }
        let mut candidates: Vec<PeerId> = node
            .map()
            .map(|m| {
                m.nodes
                    .iter()
                    .filter(|n| n.role == crate::cluster::Role::Monitor)
                    .filter_map(|n| PeerId::from_bytes(&n.id.0).ok())
                    .collect()
            })
            .unwrap_or_default();
        for (peer, addr) in &bootstrap {
            node.add_peer_address(*peer, addr.clone()).await;
            if !candidates.contains(peer) {
                candidates.push(*peer);
            }
        }
        for peer in candidates {
            let request = AdminRequest::Join {
                addrs: addrs.clone(),
                zone: zone.clone(),
            };
            match node.admin_request(peer, request).await {
                Ok(AdminResponse::Outcome(Outcome::Applied { epoch })) => {
                    tracing::info!(epoch, "admitted to the cluster map");
                    // The map arrives by push or gossip; pull it in case both are slow.
                    let _ = node.pull_map(peer).await;
                    break;
                }
                Ok(AdminResponse::Outcome(Outcome::Recorded)) => {
                    if !told_pending {
                        tracing::info!(
                            peer = %node.peer_id(),
                            "waiting for an operator to admit this node: hadss admin node admit {}",
                            node.peer_id()
                        );
                        told_pending = true;
                    }
                    // Hold the map meanwhile (a node without one is not ready).
                    if node.epoch() == 0 {
                        let _ = node.pull_map(peer).await;
                    }
                    break;
                }
                Ok(AdminResponse::Outcome(Outcome::Refused(why))) => {
                    tracing::debug!(%peer, %why, "join refused");
                    let _ = node.pull_map(peer).await;
                    break;
                }
                Ok(AdminResponse::NotMonitor { monitors }) => {
                    for m in monitors.iter().filter_map(|m| m.parse::<Multiaddr>().ok()) {
                        if let Some((p, dial)) = crate::node::client::split_peer_addr(&m) {
                            node.add_peer_address(p, dial).await;
                        }
                    }
                    let _ = node.pull_map(peer).await;
                }
                Ok(other) => tracing::debug!(%peer, answer = ?other, "join not decided"),
                Err(e) => tracing::debug!(%peer, error = %e, "join request failed"),
            }
        }
        tokio::time::sleep(Duration::from_millis(JOIN_RETRY_MS)).await;
    }
}
