//! Thin tokio shell around [`SwimCore`]: owns the clock, the timer queue and the
//! transport, and nothing else.
//!
//! Owns the [`Transport`] trait (send bytes to a member; receive bytes, optionally
//! with the transport-authenticated sender), a UDP implementation for tests and
//! examples, and [`spawn`], which runs one member on a task and hands back a
//! [`SwimHandle`] for commands plus a bounded receiver of [`MembershipEvent`]s.
//!
//! Invariants:
//! - One task owns the core; every input is handled to completion before the next.
//! - Channels and the timer queue are bounded ([`COMMAND_QUEUE_MAX`],
//!   [`EVENT_QUEUE_MAX`], [`TIMERS_PENDING_MAX`]). A slow event consumer never stalls
//!   the protocol (that would cause false suspicions): overflowing events are dropped,
//!   counted and logged, and [`SwimHandle::members`] gives the current view anyway.
//! - A packet whose claimed sender differs from the transport-authenticated peer is
//!   refused (see [`SwimCore::handle_packet`]).
//!
//! The libp2p binding belongs to the node runtime: implement [`Transport`] with
//! `send` pushing onto a bounded channel towards the swarm, and `recv` reading a
//! bounded channel fed with `(PeerId of the connection, bytes)`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::broadcast::Broadcast;
use crate::config::PACKET_SIZE_BYTES_MAX;
use crate::core::{Effects, MembershipEvent, SwimCore, SwimTimer};
use crate::error::{Result, SwimError};
use crate::identity::{NodeIdentity, PeerId};

/// Commands waiting for the driver. Commands are rare (join, publish, queries).
pub const COMMAND_QUEUE_MAX: usize = 64;
/// Events waiting for the consumer: room for a whole 1000-member cluster flapping once.
pub const EVENT_QUEUE_MAX: usize = 4_096;
/// Timers pending in the driver. foca keeps a handful plus one per suspect and one per
/// down member (for `remove_down_after`), so this covers a 30k-member cluster.
pub const TIMERS_PENDING_MAX: usize = 65_536;
/// Period of join retries until the member knows at least one other member.
pub const JOIN_RETRY_MS: u64 = 1_000;

/// One received packet.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// Raw packet bytes.
    pub bytes: Bytes,
    /// The sender as authenticated by the transport (e.g. the libp2p connection's
    /// PeerId); `None` if the transport cannot authenticate (plain UDP).
    pub authenticated_peer: Option<PeerId>,
}

/// How the driver moves packets. Datagram semantics: best effort, no ordering.
pub trait Transport: Send + 'static {
    /// Sends one packet to `to` (best effort; an error is treated as loss).
    fn send(&mut self, to: &NodeIdentity, packet: Bytes) -> impl Future<Output = Result<()>> + Send;
    /// The next received packet, or `None` once the transport is closed.
    /// Must be cancel-safe: the driver polls it inside `select!`.
    fn recv(&mut self) -> impl Future<Output = Option<Incoming>> + Send;
}

/// Most contacts remembered for joining.
const JOIN_CONTACTS_MAX: usize = 16;
/// Announce rounds to contacts that have not answered, before giving up on them (the
/// periodic announce to known members carries on after that).
const JOIN_RETRIES_MAX: u32 = 30;

/// Plain UDP transport: addresses are `ip:port` or `/ip4|ip6/<ip>/udp/<port>`.
/// Cannot authenticate senders; use only on trusted networks, tests and examples.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    buf: Vec<u8>,
}

impl UdpTransport {
    /// Binds a UDP socket.
    pub async fn bind(addr: SocketAddr) -> Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        // One byte more than the largest valid packet, so oversize datagrams are seen
        // as oversize (and refused) instead of silently truncated to a valid length.
        Ok(Self {
            socket,
            buf: vec![0; PACKET_SIZE_BYTES_MAX + 1],
        })
    }

    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}

/// Parses `ip:port` or a `/ip4/<ip>/udp/<port>` (or `/ip6/...`) multiaddr.
pub fn parse_udp_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        ["", "ip4" | "ip6", ip, "udp", port, ..] => Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?)),
        _ => None,
    }
}

impl Transport for UdpTransport {
    async fn send(&mut self, to: &NodeIdentity, packet: Bytes) -> Result<()> {
        let addr = to
            .addrs()
            .iter()
            .find_map(|a| parse_udp_addr(a))
            .ok_or_else(|| SwimError::NoRoute(to.peer_id().to_string()))?;
        self.socket.send_to(&packet, addr).await?;
        Ok(())
    }

    async fn recv(&mut self) -> Option<Incoming> {
        loop {
            match self.socket.recv_from(&mut self.buf).await {
                Ok((n, _from)) => {
                    return Some(Incoming {
                        bytes: Bytes::copy_from_slice(&self.buf[..n]),
                        authenticated_peer: None,
                    });
                }
                // e.g. ICMP port unreachable surfacing as ECONNREFUSED on Linux:
                // a datagram socket stays usable, so keep receiving.
                Err(e) => tracing::debug!(error = %e, "udp recv error"),
            }
        }
    }
}

enum Command {
    Join(NodeIdentity),
    Publish(Broadcast, oneshot::Sender<Result<bool>>),
    Members(oneshot::Sender<Vec<NodeIdentity>>),
    Leave(oneshot::Sender<Result<()>>),
}

/// Cloneable handle to a running driver. Dropping every handle stops the driver.
#[derive(Clone, Debug)]
pub struct SwimHandle {
    commands: mpsc::Sender<Command>,
}

impl SwimHandle {
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| SwimError::DriverStopped)?;
        rx.await.map_err(|_| SwimError::DriverStopped)
    }

    /// Joins through `contact`: announces to it now and every [`JOIN_RETRY_MS`] until it is a
    /// member (at most `JOIN_RETRIES_MAX` rounds). Several contacts may be pending at once.
    pub async fn join(&self, contact: NodeIdentity) -> Result<()> {
        self.commands
            .send(Command::Join(contact))
            .await
            .map_err(|_| SwimError::DriverStopped)
    }

    /// Gossips a broadcast; `false` if an equal or newer one is already known.
    pub async fn publish(&self, item: Broadcast) -> Result<bool> {
        self.call(|tx| Command::Publish(item, tx)).await?
    }

    /// Gossips a new cluster-map epoch.
    pub async fn publish_epoch(&self, epoch: u64, digest: [u8; 32]) -> Result<bool> {
        self.publish(Broadcast::Epoch(crate::broadcast::EpochAnnouncement { epoch, digest }))
            .await
    }

    /// The current active members (excluding ourselves).
    pub async fn members(&self) -> Result<Vec<NodeIdentity>> {
        self.call(Command::Members).await
    }

    /// Leaves the cluster gracefully; the driver keeps running but is defunct.
    pub async fn leave(&self) -> Result<()> {
        self.call(Command::Leave).await?
    }
}

enum DriverTimer {
    Swim(SwimTimer),
    JoinRetry,
}

struct Queued {
    at_ms: u64,
    seq: u64,
    timer: DriverTimer,
}
impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at_ms, self.seq) == (o.at_ms, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at_ms, self.seq).cmp(&(o.at_ms, o.seq))
    }
}

struct Driver<T, R: rand::Rng> {
    core: SwimCore<R>,
    transport: T,
    start: Instant,
    timers: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    events: mpsc::Sender<MembershipEvent>,
    events_dropped: u64,
    timers_dropped: u64,
    /// Contacts to announce to until each is a member (bounded by `JOIN_CONTACTS_MAX`),
    /// with the retries left.
    join_contacts: Vec<NodeIdentity>,
    join_retries_left: u32,
    fx: Effects,
}

/// Runs `core` over `transport` on a new tokio task.
///
/// Returns the command handle, the bounded event stream and the task handle. The task
/// ends when every [`SwimHandle`] is dropped or the transport closes.
pub fn spawn<T, R>(core: SwimCore<R>, transport: T) -> (SwimHandle, mpsc::Receiver<MembershipEvent>, JoinHandle<()>)
where
    T: Transport,
    R: rand::Rng + Send + 'static,
{
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE_MAX);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE_MAX);
    let driver = Driver {
        core,
        transport,
        start: Instant::now(),
        timers: BinaryHeap::new(),
        seq: 0,
        events: ev_tx,
        events_dropped: 0,
        timers_dropped: 0,
        join_contacts: Vec::new(),
        join_retries_left: 0,
        fx: Effects::default(),
    };
    let task = tokio::spawn(driver.run(cmd_rx));
    (SwimHandle { commands: cmd_tx }, ev_rx, task)
}

impl<T: Transport, R: rand::Rng + Send + 'static> Driver<T, R> {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn schedule(&mut self, at_ms: u64, timer: DriverTimer) {
        if self.timers.len() >= TIMERS_PENDING_MAX {
            self.timers_dropped += 1;
            tracing::warn!(dropped = self.timers_dropped, "swim timer queue full");
            return;
        }
        self.seq += 1;
        self.timers.push(Reverse(Queued {
            at_ms,
            seq: self.seq,
            timer,
        }));
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let next_at = self.timers.peek().map(|Reverse(q)| q.at_ms);
            let deadline = next_at.map(|at| self.start + std::time::Duration::from_millis(at));
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.handle_command(cmd),
                    None => break,
                },
                incoming = self.transport.recv() => match incoming {
                    Some(inc) => {
                        let now = self.now_ms();
                        let mut fx = std::mem::take(&mut self.fx);
                        if let Err(e) = self.core.handle_packet(
                            now,
                            inc.authenticated_peer.as_ref(),
                            &inc.bytes,
                            &mut fx,
                        ) {
                            tracing::debug!(error = %e, "swim packet refused");
                        }
                        self.fx = fx;
                    }
                    None => break,
                },
                () = sleep_until_opt(deadline) => self.fire_due_timers(),
            }
            self.flush().await;
        }
    }

    fn handle_command(&mut self, cmd: Command) {
        let now = self.now_ms();
        let mut fx = std::mem::take(&mut self.fx);
        match cmd {
            Command::Join(contact) => {
                // Every contact gets announced to (not only the last one), and again on each
                // retry until it shows up as a member: a node that knows nobody else only
                // learns of us through these announces.
                if !self.join_contacts.iter().any(|c| c.peer_id() == contact.peer_id()) {
                    if self.join_contacts.len() >= JOIN_CONTACTS_MAX {
                        self.join_contacts.remove(0);
                    }
                    self.join_contacts.push(contact);
                }
                self.join_retries_left = JOIN_RETRIES_MAX;
                self.schedule(now, DriverTimer::JoinRetry);
            }
            Command::Publish(item, reply) => {
                let _ = reply.send(self.core.publish(now, item, &mut fx));
            }
            Command::Members(reply) => {
                let _ = reply.send(self.core.members().cloned().collect());
            }
            Command::Leave(reply) => {
                let _ = reply.send(self.core.leave(now, &mut fx));
            }
        }
        self.fx = fx;
    }

    fn fire_due_timers(&mut self) {
        let now = self.now_ms();
        let mut fx = std::mem::take(&mut self.fx);
        while let Some(Reverse(q)) = self.timers.peek() {
            if q.at_ms > now {
                break;
            }
            let Some(Reverse(q)) = self.timers.pop() else { break };
            match q.timer {
                DriverTimer::Swim(t) => {
                    if let Err(e) = self.core.handle_timer(now, t, &mut fx) {
                        tracing::debug!(error = %e, "swim timer error");
                    }
                }
                DriverTimer::JoinRetry => {
                    let members: Vec<PeerId> = self.core.members().map(|m| *m.peer_id()).collect();
                    self.join_contacts.retain(|c| !members.contains(c.peer_id()));
                    if !self.join_contacts.is_empty() && self.join_retries_left > 0 {
                        self.join_retries_left -= 1;
                        for contact in self.join_contacts.clone() {
                            if let Err(e) = self.core.join(now, contact, &mut fx) {
                                tracing::debug!(error = %e, "swim join error");
                            }
                        }
                        self.schedule(now + JOIN_RETRY_MS, DriverTimer::JoinRetry);
                    }
                }
            }
        }
        self.fx = fx;
    }

    async fn flush(&mut self) {
        let mut fx = std::mem::take(&mut self.fx);
        for t in fx.timers.drain(..) {
            self.schedule(t.at_ms, DriverTimer::Swim(t.timer));
        }
        for e in fx.events.drain(..) {
            if self.events.try_send(e).is_err() {
                self.events_dropped += 1;
                tracing::warn!(dropped = self.events_dropped, "swim event queue full or closed");
            }
        }
        for p in fx.packets.drain(..) {
            if let Err(e) = self.transport.send(&p.to, p.bytes).await {
                tracing::debug!(error = %e, to = %p.to.peer_id(), "swim send failed");
            }
        }
        self.fx = fx;
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_udp_addresses() {
        assert_eq!(parse_udp_addr("127.0.0.1:9"), "127.0.0.1:9".parse().ok());
        assert_eq!(parse_udp_addr("/ip4/10.0.0.1/udp/7946"), "10.0.0.1:7946".parse().ok());
        assert_eq!(parse_udp_addr("/ip6/::1/udp/7946/quic-v1"), "[::1]:7946".parse().ok());
        assert_eq!(parse_udp_addr("/ip4/10.0.0.1/tcp/7946"), None);
        assert_eq!(parse_udp_addr("/dns/x/udp/1"), None);
    }
}
