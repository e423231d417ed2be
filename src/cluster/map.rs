//! The cluster map: which nodes belong, their roles, zones, weights and states, and the
//! replication policy — one numbered epoch of it, signed by the monitors' key.
//!
//! A node accepts a map only if its signature verifies under the configured public key and
//! its epoch is higher than the newest it holds; it persists the newest map it has seen
//! (crash-safe file recipe) and starts from it after a restart.
//!
//! The wire and file form is a versioned envelope (`MapEnvelope::V1`) around the postcard
//! bytes of the map and an ed25519 signature over exactly those bytes. Every size is bounded
//! before anything is allocated from untrusted input.

use std::fs;
use std::path::PathBuf;

use libp2p::identity::ed25519;
use serde::{Deserialize, Serialize};

/// Most nodes in one map.
pub const NODES_MAX: usize = 4096;
/// Most partitions; placement keeps a table with one row per partition.
pub const PARTITIONS_MAX: u32 = 1 << 16;
/// Highest replication factor.
pub const REPLICATION_MAX: u8 = 7;
/// Most dialable addresses per node.
pub const ADDRS_PER_NODE_MAX: usize = 8;
/// Longest address, zone name or node id, in bytes.
pub const FIELD_SIZE_BYTES_MAX: usize = 256;
/// Largest encoded map accepted from the network or disk.
pub const MAP_SIZE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A node's identity: the bytes of its libp2p `PeerId`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub Vec<u8>);

/// What a node does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Serves the S3 API; stores nothing durable.
    Gateway,
    /// Holds the Raft log of the map.
    Monitor,
    /// Stores chunks and records.
    Storage,
}

/// Whether a storage node takes data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Receives its share of partitions.
    In,
    /// Keeps serving what it has while its partitions move elsewhere; receives no new ones.
    Draining,
    /// Not part of placement.
    Out,
}

/// One node of the map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Identity (libp2p peer id bytes).
    pub id: NodeId,
    /// Dialable multiaddresses.
    pub addrs: Vec<String>,
    /// Role.
    pub role: Role,
    /// Failure domain; replicas go to distinct zones first.
    pub zone: String,
    /// Relative share of partitions (storage nodes); 0 takes none.
    pub weight: u32,
    /// Placement state.
    pub state: NodeState,
}

/// How many copies, and how many acknowledgements make a write or a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationPolicy {
    /// Copies of every chunk and record (N).
    pub replication: u8,
    /// Durable copies before a write is acknowledged (W).
    pub write_quorum: u8,
    /// Replicas asked on a read (R).
    pub read_quorum: u8,
}

/// One epoch of the cluster map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Strictly increasing version.
    pub epoch: u64,
    /// Nodes, sorted by id, ids unique.
    pub nodes: Vec<NodeInfo>,
    /// Replication policy.
    pub policy: ReplicationPolicy,
    /// Number of partitions keys hash into (fixed for the cluster's life).
    pub partitions: u32,
}

/// Why a map or envelope was refused.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The map breaks an invariant (bounds, sorting, policy).
    #[error("invalid cluster map: {0}")]
    Invalid(&'static str),
    /// The bytes do not decode (or exceed the size limit).
    #[error("cluster map does not decode: {0}")]
    Decode(String),
    /// The signature does not verify under the configured key.
    #[error("cluster map signature does not verify")]
    BadSignature,
    /// Not newer than the map already held.
    #[error("cluster map epoch {offered} is not newer than {held}")]
    Stale {
        /// Epoch offered.
        offered: u64,
        /// Epoch held.
        held: u64,
    },
    /// Reading or writing the persisted map failed.
    #[error("cluster map file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl ClusterMap {
    /// Checks every invariant a node relies on before using the map.
    pub fn validate(&self) -> Result<(), MapError> {
        let bad = |m| Err(MapError::Invalid(m));
        if self.nodes.len() > NODES_MAX {
            return bad("too many nodes");
        }
        if self.partitions == 0 || self.partitions > PARTITIONS_MAX {
            return bad("partitions out of range");
        }
        let p = self.policy;
        if p.replication == 0 || p.replication > REPLICATION_MAX {
            return bad("replication factor out of range");
        }
        if p.write_quorum == 0 || p.write_quorum > p.replication {
            return bad("write quorum must be between 1 and the replication factor");
        }
        if p.read_quorum == 0 || p.read_quorum > p.replication {
            return bad("read quorum must be between 1 and the replication factor");
        }
        for pair in self.nodes.windows(2) {
            if pair[0].id >= pair[1].id {
                return bad("nodes must be sorted by id with no duplicates");
            }
        }
        for n in &self.nodes {
            if n.id.0.is_empty() || n.id.0.len() > FIELD_SIZE_BYTES_MAX {
                return bad("node id length out of range");
            }
            if n.addrs.len() > ADDRS_PER_NODE_MAX || n.addrs.iter().any(|a| a.len() > FIELD_SIZE_BYTES_MAX) {
                return bad("too many or too long addresses");
            }
            if n.zone.len() > FIELD_SIZE_BYTES_MAX {
                return bad("zone name too long");
            }
        }
        Ok(())
    }

    /// The node with this id.
    pub fn node(&self, id: &NodeId) -> Option<&NodeInfo> {
        self.nodes
            .binary_search_by(|n| n.id.cmp(id))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// A digest of the map (BLAKE3 of its encoding), gossiped beside the epoch.
    pub fn digest(&self) -> Result<[u8; 32], MapError> {
        Ok(*blake3::hash(&encode_map(self)?).as_bytes())
    }
}

fn encode_map(map: &ClusterMap) -> Result<Vec<u8>, MapError> {
    let bytes = postcard::to_allocvec(map).map_err(|e| MapError::Decode(e.to_string()))?;
    if bytes.len() > MAP_SIZE_BYTES_MAX {
        return Err(MapError::Invalid("encoded map too large"));
    }
    Ok(bytes)
}

/// A map as it travels and is stored: its encoding plus a signature over those bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapEnvelope {
    /// Format 1: postcard map bytes, ed25519 signature.
    V1 {
        /// `postcard` encoding of a `ClusterMap`.
        map: Vec<u8>,
        /// ed25519 signature over `map`.
        signature: Vec<u8>,
    },
}

impl MapEnvelope {
    /// Signs `map` with the monitors' key.
    pub fn sign(map: &ClusterMap, key: &ed25519::Keypair) -> Result<MapEnvelope, MapError> {
        map.validate()?;
        let bytes = encode_map(map)?;
        let signature = key.sign(&bytes);
        Ok(MapEnvelope::V1 { map: bytes, signature })
    }

    /// Verifies the signature, decodes and validates the map.
    pub fn open(&self, key: &ed25519::PublicKey) -> Result<ClusterMap, MapError> {
        let MapEnvelope::V1 { map, signature } = self;
        if map.len() > MAP_SIZE_BYTES_MAX {
            return Err(MapError::Decode("map too large".into()));
        }
        if !key.verify(map, signature) {
            return Err(MapError::BadSignature);
        }
        let decoded: ClusterMap = postcard::from_bytes(map).map_err(|e| MapError::Decode(e.to_string()))?;
        decoded.validate()?;
        Ok(decoded)
    }

    /// Encodes the envelope.
    pub fn to_bytes(&self) -> Result<Vec<u8>, MapError> {
        postcard::to_allocvec(self).map_err(|e| MapError::Decode(e.to_string()))
    }

    /// Decodes an envelope, refusing anything larger than the map limit.
    pub fn from_bytes(bytes: &[u8]) -> Result<MapEnvelope, MapError> {
        if bytes.len() > MAP_SIZE_BYTES_MAX + 1024 {
            return Err(MapError::Decode("envelope too large".into()));
        }
        postcard::from_bytes(bytes).map_err(|e| MapError::Decode(e.to_string()))
    }
}

/// The newest valid map a node holds, persisted in one file.
#[derive(Debug)]
pub struct MapStore {
    path: PathBuf,
    key: ed25519::PublicKey,
    current: Option<(ClusterMap, MapEnvelope)>,
}

impl MapStore {
    /// Opens the store at `path`, loading the persisted map if there is one. A persisted map
    /// that no longer verifies (another key, damage) is an error: the operator must look.
    pub fn open(path: impl Into<PathBuf>, key: ed25519::PublicKey) -> Result<MapStore, MapError> {
        let path = path.into();
        let io = |source| MapError::Io {
            path: path.clone(),
            source,
        };
        let current = match fs::read(&path) {
            Ok(bytes) => {
                let env = MapEnvelope::from_bytes(&bytes)?;
                let map = env.open(&key)?;
                Some((map, env))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        Ok(MapStore { path, key, current })
    }

    /// The map held, if any.
    pub fn current(&self) -> Option<&ClusterMap> {
        self.current.as_ref().map(|(m, _)| m)
    }

    /// The envelope of the map held (to pass it on to peers).
    pub fn current_envelope(&self) -> Option<&MapEnvelope> {
        self.current.as_ref().map(|(_, e)| e)
    }

    /// The epoch held (0 when none).
    pub fn epoch(&self) -> u64 {
        self.current().map_or(0, |m| m.epoch)
    }

    /// Accepts `env` if it verifies and is newer; persists it durably before returning.
    /// Offering the very envelope already held is a redelivery, not an error (gossip may
    /// bring a map before its publisher gets to offer it directly).
    pub fn offer(&mut self, env: MapEnvelope) -> Result<&ClusterMap, MapError> {
        let map = env.open(&self.key)?;
        let held = self.epoch();
        let redelivery = matches!(&self.current, Some((_, held_env)) if *held_env == env);
        if redelivery {
            debug_assert_eq!(map.epoch, held);
            return self
                .current
                .as_ref()
                .map(|(held_map, _)| held_map)
                .ok_or(MapError::Invalid("held map vanished"));
        }
        if self.current.is_some() && map.epoch <= held {
            return Err(MapError::Stale {
                offered: map.epoch,
                held,
            });
        }
        crate::fsutil::write_durably(&self.path, &env.to_bytes()?, 0o644).map_err(|source| MapError::Io {
            path: self.path.clone(),
            source,
        })?;
        let (map, _) = self.current.insert((map, env));
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn storage_node(i: u32, zone: &str) -> NodeInfo {
        NodeInfo {
            id: NodeId(format!("node-{i:04}").into_bytes()),
            addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", 7000 + i)],
            role: Role::Storage,
            zone: zone.to_string(),
            weight: 100,
            state: NodeState::In,
        }
    }

    fn map(epoch: u64) -> ClusterMap {
        ClusterMap {
            epoch,
            nodes: (0..5).map(|i| storage_node(i, &format!("z{}", i % 3))).collect(),
            policy: ReplicationPolicy {
                replication: 3,
                write_quorum: 2,
                read_quorum: 2,
            },
            partitions: 1024,
        }
    }

    #[test]
    fn sign_open_and_persist() {
        let key = ed25519::Keypair::generate();
        let other = ed25519::Keypair::generate();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("map.bin");
        let mut store = MapStore::open(&path, key.public()).expect("open");
        assert_eq!(store.epoch(), 0);
        let m1 = MapEnvelope::sign(&map(1), &key).expect("sign");
        store.offer(m1.clone()).expect("first map");
        store
            .offer(m1.clone())
            .expect("the same envelope again is a redelivery");
        let mut rival = map(1);
        rival.partitions += 1;
        let rival = MapEnvelope::sign(&rival, &key).expect("sign");
        assert!(
            matches!(store.offer(rival), Err(MapError::Stale { .. })),
            "another map under a held epoch is stale"
        );
        let forged = MapEnvelope::sign(&map(9), &other).expect("sign");
        assert!(matches!(store.offer(forged), Err(MapError::BadSignature)));
        store
            .offer(MapEnvelope::sign(&map(2), &key).expect("sign"))
            .expect("newer map");
        drop(store);
        let store = MapStore::open(&path, key.public()).expect("reopen");
        assert_eq!(store.epoch(), 2);
        assert!(
            MapStore::open(&path, other.public()).is_err(),
            "a persisted map under another key is refused"
        );
    }

    #[test]
    fn tampered_or_invalid_maps_are_refused() {
        let key = ed25519::Keypair::generate();
        let MapEnvelope::V1 { mut map, signature } = MapEnvelope::sign(&map(3), &key).expect("sign");
        map[1] ^= 1;
        let env = MapEnvelope::V1 { map, signature };
        assert!(matches!(env.open(&key.public()), Err(MapError::BadSignature)));
        let mut bad = super::tests::map(4);
        bad.policy.write_quorum = 4;
        assert!(MapEnvelope::sign(&bad, &key).is_err());
        let mut unsorted = super::tests::map(4);
        unsorted.nodes.swap(0, 1);
        assert!(unsorted.validate().is_err());
        assert!(MapEnvelope::from_bytes(&[0xff; 64]).is_err());
    }
}
