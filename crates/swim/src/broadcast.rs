//! Typed custom broadcasts piggybacked on SWIM gossip.
//!
//! Owns the wire format of [`Broadcast`] and the foca [`BroadcastHandler`] that decides
//! which received items are news (kept and re-gossiped) and which are stale (dropped).
//!
//! Wire format of one item: `[format version u8][kind u8][postcard body]`. A newer
//! build adds kinds; an older build answers an unknown kind with
//! [`SwimError::UnknownBroadcastKind`] instead of guessing, and never panics.
//!
//! Invariants:
//! - For each kind, only the newest version is gossiped: a newer item [`Invalidates`] an
//!   older one still in foca's backlog, and [`BroadcastHandler::receive_item`] returns
//!   `None` for anything not newer than what we hold, so stale items stop circulating.
//! - Items are small (an epoch is ~45 bytes): they share a packet of
//!   `max_packet_size_bytes` with membership updates. Larger data (the cluster map
//!   itself) is pulled over RPC once a node learns a newer epoch exists.
//! - Received news is queued for the core in a bounded inbox
//!   ([`BROADCAST_INBOX_MAX`]); overflow drops the oldest and is counted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use foca::{BroadcastHandler, Invalidates};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SwimError};
use crate::identity::{NodeIdentity, PeerId};

/// Current broadcast wire format version.
pub const BROADCAST_FORMAT_VERSION: u8 = 1;
/// Largest encoded broadcast item we produce or accept, in bytes. Keeps several items
/// plus membership updates in one packet.
pub const BROADCAST_BYTES_MAX: usize = 256;
/// Most received-but-not-yet-collected broadcasts held for the core. The core drains
/// the inbox after every input, so this only overflows if one packet carries more
/// items than this, which a 1400-byte packet cannot.
pub const BROADCAST_INBOX_MAX: usize = 64;

const KIND_EPOCH: u8 = 1;

/// "A cluster map with this epoch exists; its serialized form hashes to `digest`."
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EpochAnnouncement {
    /// Cluster-map epoch; higher is newer.
    pub epoch: u64,
    /// Digest (e.g. blake3) of the serialized map, so a receiver can verify what it pulls.
    pub digest: [u8; 32],
}

/// A typed broadcast. Versioned on the wire; add variants with new kind bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Broadcast {
    /// A newer cluster map exists.
    Epoch(EpochAnnouncement),
}

impl Broadcast {
    /// Encodes to the wire format.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = vec![BROADCAST_FORMAT_VERSION];
        match self {
            Broadcast::Epoch(e) => {
                out.push(KIND_EPOCH);
                out = postcard::to_extend(e, out).map_err(|e| SwimError::MalformedBroadcast(e.to_string()))?;
            }
        }
        debug_assert!(out.len() <= BROADCAST_BYTES_MAX);
        Ok(out)
    }

    /// Decodes one item. Unknown versions and kinds are errors, never panics.
    pub fn decode(data: &[u8]) -> Result<Self> {
        if data.len() > BROADCAST_BYTES_MAX {
            return Err(SwimError::MalformedBroadcast(format!(
                "{} bytes > {BROADCAST_BYTES_MAX}",
                data.len()
            )));
        }
        let [version, kind, body @ ..] = data else {
            return Err(SwimError::MalformedBroadcast("shorter than its 2-byte prefix".into()));
        };
        if *version != BROADCAST_FORMAT_VERSION {
            return Err(SwimError::UnsupportedBroadcastVersion(*version));
        }
        match *kind {
            KIND_EPOCH => {
                let (e, rest) = postcard::take_from_bytes::<EpochAnnouncement>(body)
                    .map_err(|e| SwimError::MalformedBroadcast(e.to_string()))?;
                if !rest.is_empty() {
                    return Err(SwimError::MalformedBroadcast("trailing bytes".into()));
                }
                Ok(Broadcast::Epoch(e))
            }
            other => Err(SwimError::UnknownBroadcastKind(other)),
        }
    }

    fn key(&self) -> BroadcastKey {
        match self {
            Broadcast::Epoch(e) => BroadcastKey::Epoch(e.epoch),
        }
    }
}

/// foca's dedup key for a broadcast in its dissemination backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastKey {
    /// An epoch announcement with this epoch.
    Epoch(u64),
}

impl Invalidates for BroadcastKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (BroadcastKey::Epoch(mine), BroadcastKey::Epoch(theirs)) => mine >= theirs,
        }
    }
}

/// A broadcast received from the network that was news to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedBroadcast {
    /// The decoded item.
    pub broadcast: Broadcast,
    /// The member whose packet carried it (not necessarily its originator).
    pub via: PeerId,
}

/// What the handler shares with the core: newest item per kind, plus the inbox.
#[derive(Debug, Default)]
pub(crate) struct BroadcastState {
    pub(crate) latest_epoch: Option<EpochAnnouncement>,
    pub(crate) inbox: VecDeque<ReceivedBroadcast>,
    pub(crate) inbox_dropped: u64,
    /// Set by the core while re-adding its own newest items for a refresh round.
    pub(crate) refreshing: bool,
}

/// foca [`BroadcastHandler`]: keeps the newest item per kind.
///
/// Shares its state with the core through an `Arc<Mutex<_>>` because foca owns the
/// handler and exposes no accessor; the lock is never contended (one owner thread).
pub struct Handler {
    pub(crate) state: Arc<Mutex<BroadcastState>>,
}

impl Handler {
    pub(crate) fn new() -> (Self, Arc<Mutex<BroadcastState>>) {
        let state = Arc::new(Mutex::new(BroadcastState::default()));
        (Self { state: state.clone() }, state)
    }
}

pub(crate) fn lock(state: &Mutex<BroadcastState>) -> std::sync::MutexGuard<'_, BroadcastState> {
    // A panic while holding this lock cannot leave the state half-updated in a way
    // that matters (each field is updated in one assignment), so poisoning is ignored.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl BroadcastHandler<NodeIdentity> for Handler {
    type Key = BroadcastKey;
    type Error = SwimError;

    fn receive_item(&mut self, data: &[u8], sender: Option<&NodeIdentity>) -> Result<Option<BroadcastKey>> {
        let item = Broadcast::decode(data)?;
        let mut st = lock(&self.state);
        let refresh = sender.is_none() && st.refreshing;
        let is_news = match item {
            Broadcast::Epoch(e) if refresh => st.latest_epoch == Some(e),
            Broadcast::Epoch(e) => match st.latest_epoch {
                Some(cur) if cur.epoch >= e.epoch => false,
                _ => {
                    st.latest_epoch = Some(e);
                    true
                }
            },
        };
        if !is_news {
            return Ok(None);
        }
        if let Some(sender) = sender {
            if st.inbox.len() >= BROADCAST_INBOX_MAX {
                st.inbox.pop_front();
                st.inbox_dropped += 1;
            }
            st.inbox.push_back(ReceivedBroadcast {
                broadcast: item,
                via: *sender.peer_id(),
            });
        }
        Ok(Some(item.key()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn epoch(n: u64) -> Broadcast {
        Broadcast::Epoch(EpochAnnouncement {
            epoch: n,
            digest: [n as u8; 32],
        })
    }

    #[test]
    fn roundtrip_and_size() {
        let b = Broadcast::Epoch(EpochAnnouncement {
            epoch: u64::MAX,
            digest: [0xff; 32],
        });
        let bytes = b.encode().unwrap();
        assert!(bytes.len() < 48, "{}", bytes.len());
        assert_eq!(Broadcast::decode(&bytes).unwrap(), b);
    }

    #[test]
    fn unknown_kind_and_version_are_errors() {
        assert!(matches!(
            Broadcast::decode(&[1, 99, 0]),
            Err(SwimError::UnknownBroadcastKind(99))
        ));
        assert!(matches!(
            Broadcast::decode(&[7, 1, 0]),
            Err(SwimError::UnsupportedBroadcastVersion(7))
        ));
        assert!(Broadcast::decode(&[1]).is_err());
        assert!(Broadcast::decode(&[1, 1]).is_err());
        let mut long = epoch(3).encode().unwrap();
        long.push(0);
        assert!(Broadcast::decode(&long).is_err());
    }

    #[test]
    fn stale_items_stop_and_newer_invalidate() {
        let (mut h, state) = Handler::new();
        let sender = NodeIdentity::contact(PeerId::new(b"s").unwrap(), "a".into()).unwrap();
        let e5 = epoch(5).encode().unwrap();
        let e4 = epoch(4).encode().unwrap();
        assert_eq!(
            h.receive_item(&e5, Some(&sender)).unwrap(),
            Some(BroadcastKey::Epoch(5))
        );
        assert_eq!(h.receive_item(&e5, Some(&sender)).unwrap(), None);
        assert_eq!(h.receive_item(&e4, Some(&sender)).unwrap(), None);
        assert_eq!(lock(&state).inbox.len(), 1);
        assert!(BroadcastKey::Epoch(6).invalidates(&BroadcastKey::Epoch(5)));
        assert!(!BroadcastKey::Epoch(4).invalidates(&BroadcastKey::Epoch(5)));
    }
}
