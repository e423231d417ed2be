//! The fault layer: network and clock faults injected into a running node by the `netsim`
//! harness, read from a JSON file the node watches (`fault_file` in its config; never set it
//! in production). The layer is a handle ([`Faults`]) made at start-up and handed to the
//! transport, the write path and the node's clock; without that setting it is off and costs
//! one branch per poll. No process-global state: two nodes in one process have their own.
//!
//! The file (at most [`FAULT_FILE_BYTES_MAX`], re-read when its length or mtime changes, at
//! most every [`FAULT_POLL_MS`]):
//!
//! ```json
//! {"peers": {"12D3Koo…": {"drop_out": true, "drop_in": true, "delay_ms": 0, "loss": 0.0}},
//!  "clock_skew_ms": 0, "ack_before_replication": false}
//! ```
//!
//! Faults act on the Yamux streams of the connections with each listed peer
//! ([`FaultyMuxer`]), so every protocol (SWIM, replication, maps, Raft) sees them:
//! - `drop_out`: what this node sends to the peer is lost: writes on its streams stall until
//!   the rule is lifted (requests time out; a request the peer sent is still received and
//!   acted on, but its answer never arrives). With `drop_in` on both sides this is a full
//!   partition; one side only is a one-way partition.
//! - `drop_in`: what the peer sends is lost: reads on its streams stall.
//! - `delay_ms`: the data of each stream from the peer is held until `delay_ms` after the
//!   stream opened (every request and answer arrives at least that late).
//! - `loss`: each new stream with the peer is lost (stalls both ways) with this probability.
//!
//! `clock_skew_ms` shifts [`Faults::clock`], the wall clock this node stamps versions and
//! dates with. `ack_before_replication` is a deliberately broken mode that exists to prove
//! the harness catches it: writes are acknowledged at once and replicated
//! [`BROKEN_REPLICATION_DELAY_MS`] later (an acknowledged write is lost if the node dies in
//! between).
//!
//! Stalled streams are re-checked every [`FAULT_POLL_MS`], so lifting a fault lets them go on.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite};
use libp2p::PeerId;
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use serde::{Deserialize, Serialize};

use super::NetError;
use crate::clock::{Clock, WallClock};

/// Largest fault file read.
pub const FAULT_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// How often the file is checked for changes, and stalled streams re-check their rule.
pub const FAULT_POLL_MS: u64 = 100;
/// How long the broken `ack_before_replication` mode waits before replicating.
pub const BROKEN_REPLICATION_DELAY_MS: u64 = 2_000;

/// Faults towards one peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerFault {
    /// What this node sends to the peer is lost.
    pub drop_out: bool,
    /// What the peer sends to this node is lost.
    pub drop_in: bool,
    /// Data from the peer arrives this long after its stream opened.
    pub delay_ms: u64,
    /// Probability that a new stream with the peer is lost.
    pub loss: f64,
}

impl PeerFault {
    /// Whether the rule does anything.
    pub fn is_active(&self) -> bool {
        self.drop_out || self.drop_in || self.delay_ms > 0 || self.loss > 0.0
    }
}

/// The fault file's contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultRules {
    /// Per peer id (base58), the faults on the connections with it.
    pub peers: BTreeMap<String, PeerFault>,
    /// Added to this node's wall clock.
    pub clock_skew_ms: i64,
    /// The deliberately broken mode: acknowledge writes before replicating them.
    pub ack_before_replication: bool,
}

struct Active {
    peers: HashMap<PeerId, PeerFault>,
    ack_before_replication: bool,
}

/// One node's fault layer: the rules of its fault file, swapped in whole when the file
/// changes.
#[derive(Debug)]
struct FaultLayer {
    active: RwLock<Arc<Active>>,
    skew_ms: AtomicI64,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Active")
            .field("peers", &self.peers.len())
            .field("ack_before_replication", &self.ack_before_replication)
            .finish()
    }
}

impl FaultLayer {
    fn apply(&self, rules: &FaultRules) {
        let peers = rules
            .peers
            .iter()
            .filter_map(|(p, f)| Some((p.parse().ok()?, f.clone())))
            .collect();
        let next = Arc::new(Active {
            peers,
            ack_before_replication: rules.ack_before_replication,
        });
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.skew_ms.store(rules.clock_skew_ms, Ordering::Relaxed);
    }

    fn active(&self) -> Arc<Active> {
        self.active.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The fault layer a node is built with: off (the default, and the only production value)
/// or driven by a watched fault file. Handed to the transport, the write path and the clock
/// at construction; nothing reads process-global fault state. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Faults(Option<Arc<FaultLayer>>);

impl Faults {
    /// No faults: every check is one branch on `None`.
    pub fn off() -> Faults {
        Faults(None)
    }

    /// A fault layer with fixed `rules` (tests; nothing is watched).
    pub fn fixed(rules: &FaultRules) -> Faults {
        let layer = FaultLayer {
            active: RwLock::new(Arc::new(Active {
                peers: HashMap::new(),
                ack_before_replication: false,
            })),
            skew_ms: AtomicI64::new(0),
        };
        layer.apply(rules);
        Faults(Some(Arc::new(layer)))
    }

    /// A fault layer reading `path` now (a missing file means no faults) and watching it
    /// from a tokio task for as long as any clone of the handle lives.
    pub fn watch(path: &Path) -> Result<Faults, NetError> {
        let path: PathBuf = path.to_path_buf();
        let faults = Faults::fixed(&read_rules(&path)?.unwrap_or_default());
        tracing::warn!(file = %path.display(), "fault injection is on (netsim's fault layer); never in production");
        let weak = Arc::downgrade(faults.0.as_ref().expect("fixed() makes a layer"));
        tokio::spawn(async move {
            let stamp = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.len(), m.modified().ok()));
            let mut seen = stamp(&path);
            let mut tick = tokio::time::interval(Duration::from_millis(FAULT_POLL_MS));
            loop {
                tick.tick().await;
                let Some(layer) = weak.upgrade() else { return };
                let now = stamp(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                match read_rules(&path) {
                    Ok(rules) => {
                        let rules = rules.unwrap_or_default();
                        tracing::info!(?rules, "fault rules changed");
                        layer.apply(&rules);
                    }
                    Err(e) => tracing::warn!(error = %e, "fault file refused; keeping the previous rules"),
                }
            }
        });
        Ok(faults)
    }

    /// Whether a fault layer is on (watched or fixed).
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The faults towards `peer`, if the layer is on and any apply.
    pub fn peer_fault(&self, peer: &PeerId) -> Option<PeerFault> {
        self.0
            .as_ref()?
            .active()
            .peers
            .get(peer)
            .filter(|f| f.is_active())
            .cloned()
    }

    /// Whether the broken acknowledge-before-replication mode is on.
    pub fn ack_before_replication(&self) -> bool {
        self.0.as_ref().is_some_and(|l| l.active().ack_before_replication)
    }

    /// The wall clock of a node under this layer: the system clock, skewed by the fault
    /// file's `clock_skew_ms` while the layer is on.
    pub fn clock(&self) -> Clock {
        match &self.0 {
            None => Clock::system(),
            Some(layer) => Clock::new(SkewedClock(layer.clone())),
        }
    }
}

/// The system clock shifted by a fault layer's current skew.
#[derive(Debug)]
struct SkewedClock(Arc<FaultLayer>);

impl WallClock for SkewedClock {
    fn now_ms(&self) -> u64 {
        crate::clock::system_now_ms().saturating_add_signed(self.0.skew_ms.load(Ordering::Relaxed))
    }
}

/// Parses fault rules; peers whose id does not parse are refused.
pub fn parse(bytes: &[u8]) -> Result<FaultRules, NetError> {
    let rules: FaultRules =
        serde_json::from_slice(bytes).map_err(|e| NetError::FaultFile(format!("fault file: {e}")))?;
    for (peer, fault) in &rules.peers {
        peer.parse::<PeerId>()
            .map_err(|e| NetError::FaultFile(format!("fault file: peer {peer}: {e}")))?;
        if !(0.0..=1.0).contains(&fault.loss) {
            return Err(NetError::FaultFile(format!(
                "fault file: loss {} not in 0..=1",
                fault.loss
            )));
        }
    }
    Ok(rules)
}

fn read_rules(path: &Path) -> Result<Option<FaultRules>, NetError> {
    let io = |e: std::io::Error| NetError::FaultFile(format!("fault file {}: {e}", path.display()));
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    if meta.len() > FAULT_FILE_BYTES_MAX {
        return Err(NetError::FaultFile(format!(
            "fault file {} is larger than {FAULT_FILE_BYTES_MAX} bytes",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(FaultRules::default()));
    }
    parse(&bytes).map(Some)
}

/// A stream muxer whose streams obey the fault rules for the remote peer.
pub struct FaultyMuxer<M> {
    inner: M,
    peer: PeerId,
    faults: Faults,
}

impl<M> FaultyMuxer<M> {
    /// Wraps the muxer of a connection with `peer`.
    pub fn new(inner: M, peer: PeerId, faults: Faults) -> Self {
        FaultyMuxer { inner, peer, faults }
    }
}

impl<M> StreamMuxer for FaultyMuxer<M>
where
    M: StreamMuxer + Unpin,
    M::Substream: Unpin,
{
    type Substream = FaultyStream<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner)
            .poll_inbound(cx)
            .map_ok(|s| FaultyStream::new(s, this.peer, this.faults.clone()))
    }

    fn poll_outbound(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner)
            .poll_outbound(cx)
            .map_ok(|s| FaultyStream::new(s, this.peer, this.faults.clone()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}

/// A stream of a [`FaultyMuxer`].
pub struct FaultyStream<S> {
    inner: S,
    peer: PeerId,
    faults: Faults,
    opened: Instant,
    /// Drawn at open from the peer's `loss`.
    lost: bool,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> FaultyStream<S> {
    fn new(inner: S, peer: PeerId, faults: Faults) -> Self {
        let lost = faults
            .peer_fault(&peer)
            .is_some_and(|f| f.loss > 0.0 && rand::random::<f64>() < f.loss);
        FaultyStream {
            inner,
            peer,
            faults,
            opened: Instant::now(),
            lost,
            wait: None,
        }
    }

    /// Whether the direction may proceed now; if not, arranges a wake-up and says so.
    fn held(&mut self, cx: &mut Context<'_>, reading: bool) -> bool {
        let Some(fault) = self.faults.peer_fault(&self.peer) else {
            self.wait = None;
            return false;
        };
        let dropped = self.lost || if reading { fault.drop_in } else { fault.drop_out };
        let until = if dropped {
            Some(Instant::now() + Duration::from_millis(FAULT_POLL_MS))
        } else if reading && fault.delay_ms > 0 {
            let ready = self.opened + Duration::from_millis(fault.delay_ms);
            (Instant::now() < ready).then(|| ready.min(Instant::now() + Duration::from_millis(FAULT_POLL_MS)))
        } else {
            None
        };
        let Some(until) = until else {
            self.wait = None;
            return false;
        };
        let wait = self
            .wait
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until.into())));
        if wait.is_elapsed() {
            wait.as_mut().reset(until.into());
        }
        // Registers the waker; if it fired already, poll again at once.
        if wait.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        true
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FaultyStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.held(cx, true) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FaultyStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.held(cx, false) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.held(cx, false) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_bad_ones_are_refused() {
        let peer = PeerId::random();
        let ok = format!(r#"{{"peers": {{"{peer}": {{"drop_out": true, "delay_ms": 50}}}}, "clock_skew_ms": -5000}}"#);
        let rules = parse(ok.as_bytes()).expect("parses");
        assert_eq!(rules.clock_skew_ms, -5000);
        assert!(rules.peers[&peer.to_string()].drop_out);
        assert!(!rules.peers[&peer.to_string()].drop_in);
        assert!(parse(br#"{"peers": {"not-a-peer": {}}}"#).is_err());
        assert!(parse(br#"{"clock_skew": 1}"#).is_err(), "unknown fields are refused");
        let bad_loss = format!(r#"{{"peers": {{"{peer}": {{"loss": 1.5}}}}}}"#);
        assert!(parse(bad_loss.as_bytes()).is_err());
        assert!(parse(b"[1, 2").is_err());
    }

    #[test]
    fn two_handles_do_not_share_rules() {
        let peer = PeerId::random();
        let rules = parse(
            format!(r#"{{"peers": {{"{peer}": {{"drop_out": true}}}}, "clock_skew_ms": 3600000, "ack_before_replication": true}}"#)
                .as_bytes(),
        )
        .expect("parses");
        let on = Faults::fixed(&rules);
        let off = Faults::off();
        assert!(on.peer_fault(&peer).is_some_and(|f| f.drop_out));
        assert!(on.ack_before_replication());
        assert!(off.peer_fault(&peer).is_none());
        assert!(!off.ack_before_replication());
        let skewed = on.clock().now_ms();
        let plain = off.clock().now_ms();
        assert!(skewed >= plain + 3_500_000, "skew applies to this handle's clock only");
    }
}
