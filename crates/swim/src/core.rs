//! The sans-IO SWIM core: foca plus our identity, broadcasts and effect types.
//!
//! Owns [`SwimCore`]. Inputs are plain values — received packet bytes, fired timers,
//! commands — each with the current time `now_ms` supplied by the caller; outputs are
//! appended to an [`Effects`] value: packets to send, timers to schedule (at absolute
//! times) and [`MembershipEvent`]s. Randomness comes from the injected RNG. The core
//! never reads a clock, opens a socket or spawns a task, which is what lets the
//! simulator run a thousand members deterministically from one seed.
//!
//! Invariants:
//! - A packet whose header claims a sender other than the transport-authenticated peer
//!   is refused before foca sees it ([`SwimError::SenderMismatch`]).
//! - Every buffer is bounded: [`Effects`] caps each list and counts what it drops (the
//!   caller drains it after every call); the broadcast inbox is bounded; the suspect set
//!   holds at most one entry per (member, incarnation) with a pending timer.
//!
//! Does not: retransmit, encrypt or authenticate (the transport does), or persist the
//! generation (the node runtime picks a new, larger one on restart).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use foca::{Codec, Foca, Notification, PostcardCodec, Timer};

use crate::broadcast::{self, Broadcast, BroadcastState, EpochAnnouncement, Handler, ReceivedBroadcast};
use crate::config::SwimConfig;
use crate::error::{Result, SwimError};
use crate::identity::{NodeIdentity, PeerId};

/// Most packets one [`Effects`] holds before dropping (counted). One input makes a
/// handful (fan-outs are single digits), so this only trips if the caller never drains.
pub const EFFECTS_PACKETS_MAX: usize = 1_024;
/// Most timers one [`Effects`] holds before dropping (counted); see above.
pub const EFFECTS_TIMERS_MAX: usize = 1_024;
/// Most events one [`Effects`] holds before dropping (counted). A bootstrap from a full
/// member list emits one `Up` per member, so this is sized for 16k-member clusters.
pub const EFFECTS_EVENTS_MAX: usize = 16_384;

/// A packet the caller must send (best effort) to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingPacket {
    /// Destination member; dial one of `to.addrs()` or use `to.peer_id()`.
    pub to: NodeIdentity,
    /// Encoded SWIM packet, at most `max_packet_size_bytes`.
    pub bytes: Bytes,
}

/// An opaque timer: hand it back to [`SwimCore::handle_timer`] at `at_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwimTimer(pub(crate) TimerKind);

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TimerKind {
    /// One of foca's own timers.
    Foca(Timer<NodeIdentity>),
    /// Announce again to known members while renewed but not yet reconnected.
    Reannounce,
    /// Re-gossip our newest broadcasts.
    RefreshBroadcasts,
}

/// Members announced to per re-announce round after an automatic rejoin.
pub const REANNOUNCE_FANOUT: usize = 3;

/// A timer the caller must fire at (or after) `at_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledTimer {
    /// Absolute time, on the caller's clock, at which to fire.
    pub at_ms: u64,
    /// What to pass back.
    pub timer: SwimTimer,
}

/// A change in this member's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member became active in our view.
    Up(NodeIdentity),
    /// Our probe of this member failed; it is suspect until it refutes or the
    /// suspicion timeout declares it down. (Suspicions raised by other members and
    /// learned through gossip are not reported: only their outcome, `Down`, is.)
    Suspect(NodeIdentity),
    /// A member we suspected refuted the suspicion before its timeout.
    Refuted(NodeIdentity),
    /// A member was declared down.
    Down(NodeIdentity),
    /// A member came back with a newer generation (restart or auto-rejoin) and replaced
    /// its old identity. If the old one was down, an `Up(new)` follows.
    Rejoined {
        /// The identity we knew.
        old: NodeIdentity,
        /// The newer identity that replaced it.
        new: NodeIdentity,
    },
    /// The cluster had declared *us* down; we rejoined with this new generation.
    SelfRejoined(NodeIdentity),
    /// We are known by at least one active member.
    Connected,
    /// We know no active member any more.
    Disconnected,
    /// We were declared down and cannot rejoin automatically.
    Defunct,
    /// A broadcast that was news to us arrived.
    Broadcast(ReceivedBroadcast),
}

/// Outputs of one or more core calls. Drain (or [`Effects::clear`]) after every call.
#[derive(Debug, Default)]
pub struct Effects {
    /// Packets to send.
    pub packets: Vec<OutgoingPacket>,
    /// Timers to schedule.
    pub timers: Vec<ScheduledTimer>,
    /// Membership events, in order.
    pub events: Vec<MembershipEvent>,
    /// Items dropped because a list was full (the caller did not drain).
    pub dropped: u64,
}

impl Effects {
    /// Empties every list (keeps the drop counter).
    pub fn clear(&mut self) {
        self.packets.clear();
        self.timers.clear();
        self.events.clear();
    }

    /// True when there is nothing to act on.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty() && self.timers.is_empty() && self.events.is_empty()
    }

    fn push_event(&mut self, e: MembershipEvent) {
        if self.events.len() < EFFECTS_EVENTS_MAX {
            self.events.push(e);
        } else {
            self.dropped += 1;
        }
    }
}

/// Counters for observability and the benchmark report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Packets handed to the caller to send.
    pub packets_sent: u64,
    /// Bytes in those packets.
    pub bytes_sent: u64,
    /// Packets accepted by `handle_packet` (no error).
    pub packets_received: u64,
    /// Packets refused (malformed, spoofed sender, unknown broadcast kind...).
    pub packets_rejected: u64,
}

/// Adapter from foca's callback runtime to [`Effects`].
struct Rt<'a> {
    now_ms: u64,
    fx: &'a mut Effects,
    suspects: &'a mut BTreeSet<(PeerId, u16)>,
    stats: &'a mut CoreStats,
}

fn duration_to_ms_ceil(d: Duration) -> u64 {
    let ms = d.as_millis();
    let ceil = if d.subsec_nanos().is_multiple_of(1_000_000) {
        ms
    } else {
        ms + 1
    };
    u64::try_from(ceil).unwrap_or(u64::MAX)
}

impl foca::Runtime<NodeIdentity> for Rt<'_> {
    fn notify(&mut self, n: Notification<'_, NodeIdentity>) {
        let e = match n {
            Notification::MemberUp(id) => MembershipEvent::Up(id.clone()),
            Notification::MemberDown(id) => MembershipEvent::Down(id.clone()),
            Notification::Rename(old, new) => MembershipEvent::Rejoined {
                old: old.clone(),
                new: new.clone(),
            },
            Notification::Active => MembershipEvent::Connected,
            Notification::Idle => MembershipEvent::Disconnected,
            Notification::Defunct => MembershipEvent::Defunct,
            Notification::Rejoin(id) => MembershipEvent::SelfRejoined(id.clone()),
        };
        self.fx.push_event(e);
    }

    fn send_to(&mut self, to: NodeIdentity, data: &[u8]) {
        if self.fx.packets.len() >= EFFECTS_PACKETS_MAX {
            self.fx.dropped += 1;
            return;
        }
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += data.len() as u64;
        self.fx.packets.push(OutgoingPacket {
            to,
            bytes: Bytes::copy_from_slice(data),
        });
    }

    fn submit_after(&mut self, event: Timer<NodeIdentity>, after: Duration) {
        if let Timer::ChangeSuspectToDown {
            member_id, incarnation, ..
        } = &event
            && self.suspects.insert((*member_id.peer_id(), *incarnation))
        {
            self.fx.push_event(MembershipEvent::Suspect(member_id.clone()));
        }
        if self.fx.timers.len() >= EFFECTS_TIMERS_MAX {
            // Losing a timer stalls foca's probe loop; only a caller that never drains
            // can get here, and it is counted.
            self.fx.dropped += 1;
            return;
        }
        let at_ms = self.now_ms.saturating_add(duration_to_ms_ceil(after));
        self.fx.timers.push(ScheduledTimer {
            at_ms,
            timer: SwimTimer(TimerKind::Foca(event)),
        });
    }
}

type Inner<R> = Foca<NodeIdentity, PostcardCodec, R, Handler>;

/// One member's SWIM state machine. `R` is the injected RNG (e.g. a seeded `StdRng`).
pub struct SwimCore<R: rand::Rng> {
    foca: Inner<R>,
    broadcasts: Arc<Mutex<BroadcastState>>,
    config: SwimConfig,
    /// (member, incarnation) pairs whose suspicion timer is pending: dedups `Suspect`.
    suspects: BTreeSet<(PeerId, u16)>,
    stats: CoreStats,
    /// Mirrors foca's connection state (from its Active / Idle notifications).
    connected: bool,
    reannounce_pending: bool,
    refresh_scheduled: bool,
    /// Rotates which known members a re-announce round picks.
    reannounce_round: usize,
}

impl<R: rand::Rng> std::fmt::Debug for SwimCore<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwimCore")
            .field("identity", self.foca.identity())
            .finish()
    }
}

macro_rules! rt {
    ($self:ident, $now:expr, $fx:expr) => {
        Rt {
            now_ms: $now,
            fx: $fx,
            suspects: &mut $self.suspects,
            stats: &mut $self.stats,
        }
    };
}

impl<R: rand::Rng> SwimCore<R> {
    /// Creates a member that knows nobody yet. Call [`Self::join`] or [`Self::bootstrap`].
    pub fn new(identity: NodeIdentity, config: SwimConfig, rng: R) -> Result<Self> {
        let foca_config = config.to_foca()?;
        let (handler, broadcasts) = Handler::new();
        Ok(Self {
            foca: Foca::with_custom_broadcast(identity, foca_config, rng, PostcardCodec, handler),
            broadcasts,
            config,
            suspects: BTreeSet::new(),
            stats: CoreStats::default(),
            connected: false,
            reannounce_pending: false,
            refresh_scheduled: false,
            reannounce_round: 0,
        })
    }

    /// Our current identity (its generation grows if we auto-rejoin).
    pub fn identity(&self) -> &NodeIdentity {
        self.foca.identity()
    }

    /// The configuration in use.
    pub fn config(&self) -> &SwimConfig {
        &self.config
    }

    /// Counters since creation.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    /// Active members (alive or suspect), excluding ourselves, in foca's order.
    pub fn members(&self) -> impl Iterator<Item = &NodeIdentity> {
        self.foca.iter_members().map(|m| m.id())
    }

    /// Number of active members, excluding ourselves.
    pub fn num_members(&self) -> usize {
        self.foca.num_members()
    }

    /// True if `peer` is active in our view.
    pub fn is_member_active(&self, peer: &PeerId) -> bool {
        self.foca.iter_members().any(|m| m.id().peer_id() == peer)
    }

    /// The newest epoch announcement we know (ours or received).
    pub fn latest_epoch(&self) -> Option<EpochAnnouncement> {
        broadcast::lock(&self.broadcasts).latest_epoch
    }

    /// Asks `contact` to let us in. Only its peer id must be right (see
    /// [`NodeIdentity::contact`]). Repeat until [`MembershipEvent::Connected`].
    pub fn join(&mut self, now_ms: u64, contact: NodeIdentity, fx: &mut Effects) -> Result<()> {
        let before = fx.events.len();
        let r = self.foca.announce(contact, rt!(self, now_ms, fx));
        self.after(now_ms, before, fx);
        r?;
        Ok(())
    }

    /// Seeds the member list without network round trips (e.g. from the cluster map or
    /// a saved state). The members are marked alive but not re-gossiped; a dead one is
    /// found by the normal probe cycle.
    pub fn bootstrap(
        &mut self,
        now_ms: u64,
        members: impl IntoIterator<Item = NodeIdentity>,
        fx: &mut Effects,
    ) -> Result<()> {
        let me = *self.identity().peer_id();
        let updates = members
            .into_iter()
            .filter(|m| *m.peer_id() != me)
            .map(foca::Member::alive);
        let before = fx.events.len();
        let r = self.foca.apply_many(updates, false, rt!(self, now_ms, fx));
        self.after(now_ms, before, fx);
        r?;
        Ok(())
    }

    /// Handles one received packet.
    ///
    /// `authenticated_peer` is the sender the transport vouches for (e.g. the libp2p
    /// connection's PeerId), or `None` if the transport cannot tell (plain UDP). When
    /// given, a header claiming any other sender is refused.
    pub fn handle_packet(
        &mut self,
        now_ms: u64,
        authenticated_peer: Option<&PeerId>,
        data: &[u8],
        fx: &mut Effects,
    ) -> Result<()> {
        let before = fx.events.len();
        let result = self.handle_packet_inner(now_ms, authenticated_peer, data, fx);
        match &result {
            Ok(()) => self.stats.packets_received += 1,
            Err(_) => self.stats.packets_rejected += 1,
        }
        self.after(now_ms, before, fx);
        result
    }

    fn handle_packet_inner(
        &mut self,
        now_ms: u64,
        authenticated_peer: Option<&PeerId>,
        data: &[u8],
        fx: &mut Effects,
    ) -> Result<()> {
        if let Some(auth) = authenticated_peer {
            if data.len() > self.config.max_packet_size_bytes {
                return Err(SwimError::Protocol(foca::Error::DataTooBig));
            }
            let header = Codec::<NodeIdentity>::decode_header(&mut PostcardCodec, data)
                .map_err(|e| SwimError::Protocol(foca::Error::Decode(Box::new(e))))?;
            if header.src.peer_id() != auth {
                return Err(SwimError::SenderMismatch {
                    claimed: header.src.peer_id().to_string(),
                    authenticated: auth.to_string(),
                });
            }
        }
        self.foca.handle_data(data, rt!(self, now_ms, fx))?;
        Ok(())
    }

    /// Handles a timer previously emitted in [`Effects::timers`], at or after its `at_ms`.
    pub fn handle_timer(&mut self, now_ms: u64, timer: SwimTimer, fx: &mut Effects) -> Result<()> {
        let before = fx.events.len();
        let result = match timer.0 {
            TimerKind::Foca(t) => self.handle_foca_timer(now_ms, t, fx),
            TimerKind::Reannounce => self.reannounce(now_ms, fx),
            TimerKind::RefreshBroadcasts => self.refresh_broadcasts(now_ms, fx),
        };
        self.after(now_ms, before, fx);
        result
    }

    /// While renewed but not reconnected, announce to a few known members (any state).
    ///
    /// foca 2.0.0 resets its timers on an automatic rejoin and only restarts them once a
    /// packet addressed to the *new* identity arrives. If the members it talks to have
    /// renewed too (both sides of a healed partition get `TurnUndead` at once), every
    /// packet is addressed to an old identity and dropped, and nobody ever recovers.
    /// An announce is accepted by peer id alone, so this breaks the deadlock.
    fn reannounce(&mut self, now_ms: u64, fx: &mut Effects) -> Result<()> {
        self.reannounce_pending = false;
        if self.connected {
            return Ok(());
        }
        let known: Vec<NodeIdentity> = self.foca.iter_membership_state().map(|m| m.id().clone()).collect();
        if !known.is_empty() {
            for k in 0..REANNOUNCE_FANOUT.min(known.len()) {
                let idx = (self.reannounce_round * REANNOUNCE_FANOUT + k) % known.len();
                self.foca.announce(known[idx].clone(), rt!(self, now_ms, fx))?;
            }
            self.reannounce_round += 1;
        }
        self.schedule_reannounce(now_ms + self.config.probe_period_ms, fx);
        Ok(())
    }

    fn refresh_broadcasts(&mut self, now_ms: u64, fx: &mut Effects) -> Result<()> {
        let latest = broadcast::lock(&self.broadcasts).latest_epoch;
        let result = match latest {
            Some(e) if self.connected => {
                let bytes = Broadcast::Epoch(e).encode()?;
                broadcast::lock(&self.broadcasts).refreshing = true;
                let r = self.foca.add_broadcast(&bytes);
                broadcast::lock(&self.broadcasts).refreshing = false;
                r.map(|_| ()).map_err(SwimError::from)
            }
            _ => Ok(()),
        };
        let at = now_ms + self.config.broadcast_refresh_period_ms;
        fx.timers.push(ScheduledTimer {
            at_ms: at,
            timer: SwimTimer(TimerKind::RefreshBroadcasts),
        });
        result
    }

    fn schedule_reannounce(&mut self, at_ms: u64, fx: &mut Effects) {
        if !self.reannounce_pending {
            self.reannounce_pending = true;
            fx.timers.push(ScheduledTimer {
                at_ms,
                timer: SwimTimer(TimerKind::Reannounce),
            });
        }
    }

    /// Bookkeeping after every input: track connection state from the new events,
    /// start re-announcing after an automatic rejoin, start the refresh loop, and
    /// surface received broadcasts.
    fn after(&mut self, now_ms: u64, events_before: usize, fx: &mut Effects) {
        let mut renewed = false;
        for e in &fx.events[events_before.min(fx.events.len())..] {
            match e {
                MembershipEvent::Connected => self.connected = true,
                MembershipEvent::Disconnected | MembershipEvent::Defunct => self.connected = false,
                MembershipEvent::SelfRejoined(_) => {
                    self.connected = false;
                    renewed = true;
                }
                _ => {}
            }
        }
        if renewed {
            // Give packets already in flight to the new identity a chance first.
            self.schedule_reannounce(now_ms + self.config.probe_rtt_ms, fx);
        }
        if self.connected && !self.refresh_scheduled {
            self.refresh_scheduled = true;
            let at = now_ms + self.config.broadcast_refresh_period_ms;
            fx.timers.push(ScheduledTimer {
                at_ms: at,
                timer: SwimTimer(TimerKind::RefreshBroadcasts),
            });
        }
        self.drain_broadcast_inbox(fx);
    }

    fn handle_foca_timer(&mut self, now_ms: u64, timer: Timer<NodeIdentity>, fx: &mut Effects) -> Result<()> {
        let suspicion = match &timer {
            Timer::ChangeSuspectToDown {
                member_id, incarnation, ..
            } => Some((member_id.clone(), *incarnation)),
            _ => None,
        };
        let events_before = fx.events.len();
        let packets_before = fx.packets.len();
        let result = self.foca.handle_timer(timer, rt!(self, now_ms, fx));
        if let Some((id, incarnation)) = suspicion {
            self.suspects.remove(&(*id.peer_id(), incarnation));
            let went_down = fx.events[events_before..]
                .iter()
                .any(|e| matches!(e, MembershipEvent::Down(d) if d.peer_id() == id.peer_id()));
            if !went_down && self.foca.iter_members().any(|m| m.id() == &id) {
                // foca 2.0.0 sends `TurnUndead` from this timer even when the member
                // refuted the suspicion (the incarnation check failed, nothing was
                // declared down). The refuted member would then believe it is down and
                // rejoin with a new generation: churn on every false suspicion. The
                // only packet this timer sends is that courtesy notice, so drop it.
                let mut i = packets_before;
                while i < fx.packets.len() {
                    if fx.packets[i].to == id {
                        let dropped = fx.packets.remove(i);
                        self.stats.packets_sent -= 1;
                        self.stats.bytes_sent -= dropped.bytes.len() as u64;
                    } else {
                        i += 1;
                    }
                }
                fx.push_event(MembershipEvent::Refuted(id));
            }
        }
        result.map_err(SwimError::from)
    }

    /// Starts gossiping a broadcast (e.g. a new epoch) and pushes it to a few members
    /// right away. Returns `false` if it was not news (an equal or newer one is known).
    pub fn publish(&mut self, now_ms: u64, item: Broadcast, fx: &mut Effects) -> Result<bool> {
        let bytes = item.encode()?;
        let news = self.foca.add_broadcast(&bytes)?;
        let before = fx.events.len();
        let r = if news {
            self.foca.broadcast(rt!(self, now_ms, fx))
        } else {
            Ok(())
        };
        self.after(now_ms, before, fx);
        r?;
        Ok(news)
    }

    /// Convenience for `publish(Broadcast::Epoch(..))`.
    pub fn publish_epoch(&mut self, now_ms: u64, epoch: u64, digest: [u8; 32], fx: &mut Effects) -> Result<bool> {
        self.publish(now_ms, Broadcast::Epoch(EpochAnnouncement { epoch, digest }), fx)
    }

    /// Leaves gracefully: tells a few members we are going down. The core is then
    /// defunct; a restart must use a new generation.
    pub fn leave(&mut self, now_ms: u64, fx: &mut Effects) -> Result<()> {
        let before = fx.events.len();
        let r = self.foca.leave_cluster(rt!(self, now_ms, fx));
        self.after(now_ms, before, fx);
        r?;
        Ok(())
    }

    fn drain_broadcast_inbox(&mut self, fx: &mut Effects) {
        let mut st = broadcast::lock(&self.broadcasts);
        while let Some(b) = st.inbox.pop_front() {
            fx.push_event(MembershipEvent::Broadcast(b));
        }
    }
}
