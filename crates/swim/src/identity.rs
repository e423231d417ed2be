//! Member identity: who a member is, where to dial it, and which life of it we mean.
//!
//! Owns [`PeerId`] (opaque, bounded bytes — the libp2p PeerId later), [`Role`] and
//! [`NodeIdentity`], and foca's [`foca::Identity`] impl for it.
//!
//! Invariants:
//! - foca keys members by [`foca::Identity::Addr`], which is the [`PeerId`]: two
//!   identities with one peer id are two lives of the same node, and the one with the
//!   higher [`NodeIdentity::generation`] wins. A restarted node therefore replaces its
//!   old self instead of being confused with it.
//! - Every field is bounded, and the bounds are enforced on decode too, because an
//!   identity travels in every packet (twice in each header, once per membership
//!   update). The worst case is [`IDENTITY_BYTES_MAX`].
//!
//! Does not: authenticate anything. Binding a peer id to a transport-authenticated peer
//! is done by [`crate::core::SwimCore::handle_packet`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Result, SwimError};

/// Longest peer id, in bytes. A libp2p Ed25519 PeerId is 38 bytes; 64 leaves room for
/// other key types while keeping the per-packet cost bounded.
pub const PEER_ID_BYTES_MAX: usize = 64;
/// Most dialable addresses per identity: a node normally advertises one or two
/// (e.g. a LAN and a public address); more would crowd out updates in each packet.
pub const ADDRS_MAX: usize = 2;
/// Longest single address, in bytes (a `/ip6/.../tcp/port` multiaddr fits in 64).
pub const ADDR_BYTES_MAX: usize = 64;
/// Longest zone name, in bytes.
pub const ZONE_BYTES_MAX: usize = 32;
/// Upper bound of one encoded identity, in bytes (fields plus postcard length prefixes).
/// With a 1400-byte packet this still leaves room for a header (two identities) and
/// several updates even in the worst case.
pub const IDENTITY_BYTES_MAX: usize =
    1 + PEER_ID_BYTES_MAX + 1 + ADDRS_MAX * (1 + ADDR_BYTES_MAX) + 1 + ZONE_BYTES_MAX + 1 + 10;

/// Opaque peer id bytes (1..=[`PEER_ID_BYTES_MAX`]). Stored inline so that foca's
/// frequent `addr()` calls never allocate.
#[derive(Clone, Copy)]
pub struct PeerId {
    /// FNV-1a of the bytes: lets the (very frequent) unequal comparisons in foca's
    /// linear member scans fail on one integer compare instead of a memcmp call.
    fingerprint: u64,
    len: u8,
    bytes: [u8; PEER_ID_BYTES_MAX],
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl PeerId {
    /// Wraps peer id bytes, refusing empty or oversize ids.
    pub fn new(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() || bytes.len() > PEER_ID_BYTES_MAX {
            return Err(SwimError::PeerIdLength {
                len: bytes.len(),
                max: PEER_ID_BYTES_MAX,
            });
        }
        let mut inline = [0u8; PEER_ID_BYTES_MAX];
        inline[..bytes.len()].copy_from_slice(bytes);
        // Checked above: len <= 64 fits in u8.
        Ok(Self {
            fingerprint: fnv1a(bytes),
            len: bytes.len() as u8,
            bytes: inline,
        })
    }

    /// The peer id bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl PartialEq for PeerId {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint && self.as_bytes() == other.as_bytes()
    }
}
impl Eq for PeerId {}
impl PartialOrd for PeerId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PeerId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}
impl std::hash::Hash for PeerId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl fmt::Display for PeerId {
    /// Printable ids (like the simulator's `n17`) print as text, others as hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.as_bytes();
        if b.iter().all(|c| c.is_ascii_graphic()) {
            // All bytes are ASCII graphic characters, hence valid UTF-8.
            f.write_str(std::str::from_utf8(b).unwrap_or("?"))
        } else {
            b.iter().try_for_each(|c| write!(f, "{c:02x}"))
        }
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_bytes())
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PeerId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "1..={PEER_ID_BYTES_MAX} peer id bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<PeerId, E> {
                PeerId::new(v).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<PeerId, A::Error> {
                let mut buf = [0u8; PEER_ID_BYTES_MAX];
                let mut len = 0;
                while let Some(b) = seq.next_element::<u8>()? {
                    if len == PEER_ID_BYTES_MAX {
                        return Err(serde::de::Error::custom("peer id too long"));
                    }
                    buf[len] = b;
                    len += 1;
                }
                PeerId::new(&buf[..len]).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// What a member does in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Serves S3 clients and routes requests.
    Gateway,
    /// Holds the cluster map (Raft).
    Monitor,
    /// Stores chunks.
    Storage,
}

/// Everything the cluster needs to know to reach one life of one node.
///
/// Construct with [`NodeIdentity::new`], which checks the bounds; decoding checks them
/// again.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct NodeIdentity {
    peer_id: PeerId,
    addrs: Vec<String>,
    role: Role,
    zone: String,
    generation: u64,
}

/// The unchecked wire twin of [`NodeIdentity`].
#[derive(Deserialize)]
struct NodeIdentityWire {
    peer_id: PeerId,
    addrs: Vec<BoundedString>,
    role: Role,
    zone: BoundedString,
    generation: u64,
}

/// A string refused while decoding if longer than [`ADDR_BYTES_MAX`] (the larger of
/// the per-string bounds), before allocating.
struct BoundedString(String);

impl<'de> Deserialize<'de> for BoundedString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = BoundedString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a string of at most {ADDR_BYTES_MAX} bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<BoundedString, E> {
                if v.len() > ADDR_BYTES_MAX.max(ZONE_BYTES_MAX) {
                    return Err(E::custom("string too long"));
                }
                Ok(BoundedString(v.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for NodeIdentity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = NodeIdentityWire::deserialize(d)?;
        NodeIdentity::new(
            w.peer_id,
            w.addrs.into_iter().map(|s| s.0).collect(),
            w.role,
            w.zone.0,
            w.generation,
        )
        .map_err(serde::de::Error::custom)
    }
}

impl NodeIdentity {
    /// Builds an identity, checking every bound.
    ///
    /// `generation` must grow across restarts of the same peer id. Foca bumps it by one
    /// each time it rejoins after being declared down, so a restart should pick a value
    /// well above the previous life's, e.g. the boot wall-clock time in milliseconds.
    pub fn new(peer_id: PeerId, addrs: Vec<String>, role: Role, zone: String, generation: u64) -> Result<Self> {
        if addrs.len() > ADDRS_MAX {
            return Err(SwimError::IdentityTooLarge {
                field: "addrs",
                len: addrs.len(),
                max: ADDRS_MAX,
            });
        }
        if let Some(a) = addrs.iter().find(|a| a.len() > ADDR_BYTES_MAX) {
            return Err(SwimError::IdentityTooLarge {
                field: "addr",
                len: a.len(),
                max: ADDR_BYTES_MAX,
            });
        }
        if zone.len() > ZONE_BYTES_MAX {
            return Err(SwimError::IdentityTooLarge {
                field: "zone",
                len: zone.len(),
                max: ZONE_BYTES_MAX,
            });
        }
        Ok(Self {
            peer_id,
            addrs,
            role,
            zone,
            generation,
        })
    }

    /// An identity for a contact we only know by peer id and address (a seed node).
    /// Good enough to address an announce: foca accepts an announce whose destination
    /// has the right peer id, whatever its generation.
    pub fn contact(peer_id: PeerId, addr: String) -> Result<Self> {
        Self::new(peer_id, vec![addr], Role::Monitor, String::new(), 0)
    }

    /// The node's peer id (foca's member key).
    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }
    /// Dialable addresses, most preferred first.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }
    /// The node's role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The node's zone (failure domain).
    pub fn zone(&self) -> &str {
        &self.zone
    }
    /// Which life of this peer id this is; higher wins.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// The same identity with another generation (for a restart).
    pub fn with_generation(&self, generation: u64) -> Self {
        Self {
            generation,
            ..self.clone()
        }
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = PeerId;

    /// Auto-rejoin after being declared down: same node, next generation.
    fn renew(&self) -> Option<Self> {
        Some(self.with_generation(self.generation.saturating_add(1)))
    }

    fn addr(&self) -> PeerId {
        self.peer_id
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn max_identity() -> NodeIdentity {
        NodeIdentity::new(
            PeerId::new(&[0xff; PEER_ID_BYTES_MAX]).unwrap(),
            vec!["a".repeat(ADDR_BYTES_MAX); ADDRS_MAX],
            Role::Storage,
            "z".repeat(ZONE_BYTES_MAX),
            u64::MAX,
        )
        .unwrap()
    }

    #[test]
    fn worst_case_identity_fits_bound_and_roundtrips() {
        let id = max_identity();
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert!(
            bytes.len() <= IDENTITY_BYTES_MAX,
            "{} > {IDENTITY_BYTES_MAX}",
            bytes.len()
        );
        let back: NodeIdentity = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(PeerId::new(&[]).is_err());
        assert!(PeerId::new(&[1; PEER_ID_BYTES_MAX + 1]).is_err());
        let p = PeerId::new(b"p").unwrap();
        assert!(NodeIdentity::new(p, vec![String::new(); 3], Role::Gateway, String::new(), 0).is_err());
        assert!(NodeIdentity::new(p, vec![], Role::Gateway, "z".repeat(33), 0).is_err());
    }

    #[test]
    fn oversize_zone_is_refused_on_decode() {
        #[derive(Serialize)]
        struct Raw {
            peer_id: PeerId,
            addrs: Vec<String>,
            role: Role,
            zone: String,
            generation: u64,
        }
        let raw = Raw {
            peer_id: PeerId::new(b"p").unwrap(),
            addrs: vec![],
            role: Role::Gateway,
            zone: "z".repeat(40),
            generation: 1,
        };
        let bytes = postcard::to_allocvec(&raw).unwrap();
        assert!(postcard::from_bytes::<NodeIdentity>(&bytes).is_err());
    }

    #[test]
    fn newer_generation_wins() {
        use foca::Identity;
        let a = NodeIdentity::contact(PeerId::new(b"n1").unwrap(), "x".into()).unwrap();
        let b = a.renew().unwrap();
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
        assert_eq!(a.addr(), b.addr());
    }
}
