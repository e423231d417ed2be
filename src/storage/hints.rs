//! Hinted handoff bookkeeping: the copies a node holds on behalf of a replica that was down
//! when they were written, persisted until the replica has them.
//!
//! A fallback node that accepts a write with a hint stores the payload in its own chunk or
//! record store as usual, then records a `Hint` here (durably, before it acknowledges). The
//! node runtime's handoff task lists hints, sends each payload to its replica once SWIM sees
//! it alive, and removes the hint when the replica acknowledged. When no hint names an item
//! any more and this node is not one of the item's replicas, the runtime deletes its surplus
//! copy.
//!
//! Layout: one redb table (own file, `hints.redb`), key = kind ‖ item ‖ target, value empty.
//! The item encoding is prefix-free (chunk: 32-byte id; record: partition, key length, key),
//! so "any hint left for this item" is a prefix scan. Bounded: at most `HINTS_MAX` hints; a
//! full table refuses new hints (the write then goes to the next fallback) rather than
//! growing without limit.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};

use crate::cluster::NodeId;

/// Most hints a node holds.
pub const HINTS_MAX: u64 = 4_000_000;
/// Page cache of a store opened with `open` (a node sizes it from its memory budget).
pub const CACHE_BYTES_DEFAULT: usize = 8 * 1024 * 1024;
/// Most hints one `list` returns.
pub const HINTS_PAGE_MAX: usize = 4096;
/// Longest node id in a hint (libp2p peer ids are 38 bytes for ed25519).
pub const HINT_TARGET_SIZE_BYTES_MAX: usize = 64;

const HINTS: TableDefinition<&[u8], ()> = TableDefinition::new("hints");

const KIND_CHUNK: u8 = 1;
const KIND_RECORD: u8 = 2;

/// What a hint hands back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HintItem {
    /// A chunk, by id.
    Chunk([u8; 32]),
    /// A metadata record (whatever version this node holds when handing off).
    Record {
        /// Partition.
        partition: u32,
        /// Record key.
        key: Vec<u8>,
    },
}

/// One copy held for `target`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hint {
    /// The item.
    pub item: HintItem,
    /// The replica it belongs to.
    pub target: NodeId,
}

/// Errors of the hint store.
#[derive(Debug, thiserror::Error)]
pub enum HintError {
    /// The table holds `HINTS_MAX` hints.
    #[error("hint store full ({0} hints)")]
    Full(u64),
    /// The input breaks a limit.
    #[error("invalid hint: {0}")]
    Invalid(&'static str),
    /// The database failed.
    #[error("hint database: {0}")]
    Db(String),
}

fn db_err(e: impl std::fmt::Display) -> HintError {
    HintError::Db(e.to_string())
}

fn encode_item(item: &HintItem, out: &mut Vec<u8>) {
    match item {
        HintItem::Chunk(id) => {
            out.push(KIND_CHUNK);
            out.extend_from_slice(id);
        }
        HintItem::Record { partition, key } => {
            out.push(KIND_RECORD);
            out.extend_from_slice(&partition.to_be_bytes());
            // Keys are limited to 2 KiB by the record store; u16 holds any valid length.
            out.extend_from_slice(&(key.len() as u16).to_be_bytes());
            out.extend_from_slice(key);
        }
    }
}

fn encode(hint: &Hint) -> Result<Vec<u8>, HintError> {
    if hint.target.0.is_empty() || hint.target.0.len() > HINT_TARGET_SIZE_BYTES_MAX {
        return Err(HintError::Invalid("target id length"));
    }
    if let HintItem::Record { key, .. } = &hint.item
        && key.len() > crate::storage::records::RECORD_KEY_SIZE_BYTES_MAX
    {
        return Err(HintError::Invalid("record key too long"));
    }
    let mut out = Vec::with_capacity(64);
    encode_item(&hint.item, &mut out);
    out.extend_from_slice(&hint.target.0);
    Ok(out)
}

fn decode(raw: &[u8]) -> Option<Hint> {
    let (&kind, rest) = raw.split_first()?;
    let (item, target) = match kind {
        KIND_CHUNK => {
            let id: [u8; 32] = rest.get(..32)?.try_into().ok()?;
            (HintItem::Chunk(id), &rest[32..])
        }
        KIND_RECORD => {
            let partition = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
            let len = usize::from(u16::from_be_bytes(rest.get(4..6)?.try_into().ok()?));
            let key = rest.get(6..6 + len)?.to_vec();
            (HintItem::Record { partition, key }, &rest[6 + len..])
        }
        _ => return None,
    };
    if target.is_empty() || target.len() > HINT_TARGET_SIZE_BYTES_MAX {
        return None;
    }
    Some(Hint {
        item,
        target: NodeId(target.to_vec()),
    })
}

/// The persisted hints of a node.
pub struct HintStore {
    db: Database,
    len: AtomicU64,
}

impl std::fmt::Debug for HintStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HintStore")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl HintStore {
    /// Opens (or creates) the store at `path` with a `CACHE_BYTES_DEFAULT` page cache.
    pub fn open(path: &Path) -> Result<HintStore, HintError> {
        HintStore::open_with_cache(path, CACHE_BYTES_DEFAULT)
    }

    /// Opens (or creates) the store at `path`, redb's page cache held to `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<HintStore, HintError> {
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(db_err)?;
        let len = {
            let txn = db.begin_write().map_err(db_err)?;
            let len = txn.open_table(HINTS).map_err(db_err)?.len().map_err(db_err)?;
            txn.commit().map_err(db_err)?;
            len
        };
        Ok(HintStore {
            db,
            len: AtomicU64::new(len),
        })
    }

    /// Hints held.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no hint is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records hints durably (fsync) before returning.
    pub fn add(&self, hints: &[Hint]) -> Result<(), HintError> {
        let keys = hints.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let held = self.len();
        if held + keys.len() as u64 > HINTS_MAX {
            return Err(HintError::Full(held));
        }
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut added = 0;
        {
            let mut table = txn.open_table(HINTS).map_err(db_err)?;
            for k in &keys {
                if table.insert(k.as_slice(), ()).map_err(db_err)?.is_none() {
                    added += 1;
                }
            }
        }
        txn.commit().map_err(db_err)?;
        self.len.fetch_add(added, Ordering::Relaxed);
        Ok(())
    }

    /// Removes a hint (after its replica acknowledged the copy). Durable on return.
    pub fn remove(&self, hint: &Hint) -> Result<(), HintError> {
        let k = encode(hint)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = txn
            .open_table(HINTS)
            .map_err(db_err)?
            .remove(k.as_slice())
            .map_err(db_err)?
            .is_some();
        txn.commit().map_err(db_err)?;
        if removed {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Up to `limit` (at most `HINTS_PAGE_MAX`) hints after `after` (exclusive), in key
    /// order. Undecodable entries (corruption) are skipped and logged.
    pub fn list(&self, after: Option<&Hint>, limit: usize) -> Result<Vec<Hint>, HintError> {
        let limit = limit.min(HINTS_PAGE_MAX);
        let start = after.map(encode).transpose()?;
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(HINTS).map_err(db_err)?;
        let range = match &start {
            Some(s) => table.range::<&[u8]>((std::ops::Bound::Excluded(s.as_slice()), std::ops::Bound::Unbounded)),
            None => table.range::<&[u8]>(..),
        }
        .map_err(db_err)?;
        let mut out = Vec::new();
        for entry in range {
            if out.len() >= limit {
                break;
            }
            let (k, _) = entry.map_err(db_err)?;
            match decode(k.value()) {
                Some(h) => out.push(h),
                None => tracing::error!(key = ?k.value(), "undecodable hint skipped"),
            }
        }
        Ok(out)
    }

    /// Whether any hint still names `item`.
    pub fn holds_item(&self, item: &HintItem) -> Result<bool, HintError> {
        let mut prefix = Vec::new();
        encode_item(item, &mut prefix);
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(HINTS).map_err(db_err)?;
        let mut range = table.range::<&[u8]>(prefix.as_slice()..).map_err(db_err)?;
        Ok(match range.next() {
            Some(entry) => entry.map_err(db_err)?.0.value().starts_with(&prefix),
            None => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(b: u8, target: u8) -> Hint {
        Hint {
            item: HintItem::Chunk([b; 32]),
            target: NodeId(vec![target; 38]),
        }
    }

    fn record(key: &str, target: u8) -> Hint {
        Hint {
            item: HintItem::Record {
                partition: 7,
                key: key.as_bytes().to_vec(),
            },
            target: NodeId(vec![target; 38]),
        }
    }

    #[test]
    fn hints_persist_page_and_track_items() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hints.redb");
        let store = HintStore::open(&path).expect("open");
        let all = vec![
            chunk(1, 9),
            chunk(1, 8),
            chunk(2, 9),
            record("a", 9),
            record("ab", 9),
            record("a", 8),
        ];
        store.add(&all).expect("add");
        store.add(&all[..2]).expect("adding again changes nothing");
        assert_eq!(store.len(), 6);
        drop(store);

        let store = HintStore::open(&path).expect("reopen");
        assert_eq!(store.len(), 6);
        let mut listed = store.list(None, 4).expect("list");
        listed.extend(store.list(listed.last(), 100).expect("list"));
        let mut want = all.clone();
        want.sort_by_key(|h| encode(h).expect("encode"));
        assert_eq!(listed, want, "paged listing returns every hint once, in key order");

        assert!(store.holds_item(&HintItem::Chunk([1; 32])).expect("lookup"));
        store.remove(&chunk(1, 9)).expect("remove");
        assert!(store.holds_item(&HintItem::Chunk([1; 32])).expect("lookup"), "one left");
        store.remove(&chunk(1, 8)).expect("remove");
        assert!(!store.holds_item(&HintItem::Chunk([1; 32])).expect("lookup"));
        // "a" is a prefix of "ab" but the length prefix keeps the items apart.
        store.remove(&record("a", 9)).expect("remove");
        store.remove(&record("a", 8)).expect("remove");
        let a = HintItem::Record {
            partition: 7,
            key: b"a".to_vec(),
        };
        assert!(!store.holds_item(&a).expect("lookup"));
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn bad_hints_are_refused_and_garbage_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = HintStore::open(&dir.path().join("hints.redb")).expect("open");
        let empty_target = Hint {
            item: HintItem::Chunk([0; 32]),
            target: NodeId(Vec::new()),
        };
        assert!(matches!(store.add(&[empty_target]), Err(HintError::Invalid(_))));
        for raw in [
            &[][..],
            &[9, 1, 2][..],
            &[KIND_CHUNK, 1, 2][..],
            &[KIND_RECORD, 0, 0, 0, 1, 0xff, 0xff][..],
        ] {
            assert_eq!(decode(raw), None);
        }
        assert_eq!(decode(&encode(&record("k", 3)).expect("encode")), Some(record("k", 3)));
    }
}
