//! The metadata record store of a storage node: object records, bucket records, access keys
//! and chunk references, as versioned key → value records in `redb`, sorted by key within a
//! partition, with last-writer-wins on a hybrid-logical-clock version.
//!
//! Why redb: a pure-Rust, crash-safe (copy-on-write B-tree, checksummed pages, fsync on
//! commit) ordered store, so listing with prefix / delimiter / continuation is a range scan;
//! no background compaction threads competing for the node's two cores. Its one writer at a
//! time is turned into throughput by **group commit**: concurrent writers queue their records,
//! one of them commits the whole batch in a single transaction (one fsync) and wakes the rest.
//!
//! Layout: one table, key = partition (u32 big endian) ‖ record key, value = postcard of
//! `(Version, RecordValue)`. Per partition, a Merkle summary (leaf by BLAKE3 of the key,
//! digest = BLAKE3 of key and version) is rebuilt when the store opens and kept up to date, so
//! replicas find differing records by exchanging a few hashes.
//!
//! Durability: `put` returns after the batch holding its records committed with
//! `Durability::Immediate` (fsync). Bad input (oversized keys or values) is refused before
//! anything is queued.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use chunkstore::{MerkleNode, MerkleShape, MerkleTree};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// Longest record key.
pub const RECORD_KEY_SIZE_BYTES_MAX: usize = 2048;
/// Largest record value (small objects are inlined in their record up to a gateway limit
/// well below this).
pub const RECORD_VALUE_SIZE_BYTES_MAX: usize = 1024 * 1024;
/// Most records one group commit writes; beyond this the next leader takes the rest.
pub const GROUP_COMMIT_RECORDS_MAX: usize = 4096;
/// Most records one scan returns.
pub const SCAN_RECORDS_MAX: usize = 10_000;
/// Page cache of a store opened with `open` (a node sizes it from its memory budget).
pub const CACHE_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
/// Shape of each partition's Merkle summary: 256 leaves, 10 KiB.
pub const PARTITION_MERKLE_SHAPE: MerkleShape = MerkleShape {
    fanout_bits: 4,
    depth: 2,
};

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Create reservations: table key (as in `RECORDS`) → postcard of `(token, expires_unix_ms)`.
/// Local to each replica (its vote), never replicated, scanned or summarised.
const RESERVATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("reservations");

/// A record's key and version (what anti-entropy compares).
pub type KeyVersion = (Vec<u8>, Version);

/// A replica's answer to a create reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reservation {
    /// Granted (or extended) to the asking token.
    Granted,
    /// A live record is stored under the key: a create must fail.
    Exists,
    /// Another token holds an unexpired reservation.
    Held,
}

/// A record version: hybrid-logical-clock timestamp, then a unique id to break ties.
/// Ordered; the greater version wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Milliseconds since the Unix epoch << 16 | logical counter.
    pub hlc: u64,
    /// Random per write (a UUID's 16 bytes).
    pub unique: [u8; 16],
}

/// What a record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordValue {
    /// Opaque bytes (the layer above encodes object metadata into them).
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Deleted; kept so an older write arriving late does not resurrect the record.
    Tombstone,
}

/// One record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Partition the key belongs to.
    pub partition: u32,
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Its version.
    pub version: Version,
    /// Its value.
    pub value: RecordValue,
}

impl Record {
    /// Bytes of key and value (what a write's deadline is sized by).
    pub fn payload_size_bytes(&self) -> u64 {
        let value_bytes = match &self.value {
            RecordValue::Data(d) => d.len(),
            RecordValue::Tombstone => 0,
        };
        (self.key.len() + value_bytes) as u64
    }
}

/// A hybrid logical clock: monotonic, close to wall time, advanced by versions seen from
/// peers. Sans-IO: the caller passes the wall time.
#[derive(Debug, Default)]
pub struct Hlc {
    last: Mutex<u64>,
}

impl Hlc {
    /// The next timestamp at wall time `now_ms`.
    pub fn now(&self, now_ms: u64) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let wall = now_ms << 16;
        *last = if wall > *last { wall } else { *last + 1 };
        *last
    }

    /// Moves the clock past a timestamp seen from a peer.
    pub fn observe(&self, hlc: u64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = (*last).max(hlc);
    }
}

/// Errors of the record store.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The input breaks a limit; nothing was written.
    #[error("invalid record: {0}")]
    Invalid(&'static str),
    /// The database failed; the batch was not committed (retry may help).
    #[error("record database: {0}")]
    Db(String),
    /// A stored value does not decode: corruption. The record is not served.
    #[error("corrupt record value under key {key:?}")]
    Corrupt {
        /// The table key.
        key: Vec<u8>,
    },
}

fn db_err(e: impl std::fmt::Display) -> RecordError {
    RecordError::Db(e.to_string())
}

type Slot = Arc<Mutex<Option<Result<bool, String>>>>;

struct Queued {
    record: Record,
    slot: Slot,
}

#[derive(Default)]
struct CommitState {
    queue: Vec<Queued>,
    leader_active: bool,
}

/// The record store.
pub struct RecordStore {
    db: Database,
    state: Mutex<CommitState>,
    committed: Condvar,
    merkle: Mutex<HashMap<u32, MerkleTree>>,
}

impl std::fmt::Debug for RecordStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStore").finish_non_exhaustive()
    }
}

fn table_key(partition: u32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// A record's Merkle item: (BLAKE3 of its key, BLAKE3 of key and version).
pub fn merkle_item(key: &[u8], version: &Version) -> ([u8; 32], [u8; 32]) {
    let key_hash = *blake3::hash(key).as_bytes();
    let mut h = blake3::Hasher::new();
    h.update(key);
    h.update(&version.hlc.to_le_bytes());
    h.update(&version.unique);
    (key_hash, *h.finalize().as_bytes())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RecordStore {
    /// Opens (or creates) the store at `path` with a `CACHE_BYTES_DEFAULT` page cache.
    pub fn open(path: &Path) -> Result<RecordStore, RecordError> {
        RecordStore::open_with_cache(path, CACHE_BYTES_DEFAULT)
    }

    /// Opens (or creates) the store at `path` and rebuilds the Merkle summaries. redb's page
    /// cache (reads and the write buffer) is held to `cache_bytes`; its own default, 1 GiB
    /// per database, let a node's memory grow with its metadata.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<RecordStore, RecordError> {
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(db_err)?;
        {
            let txn = db.begin_write().map_err(db_err)?;
            txn.open_table(RECORDS).map_err(db_err)?;
            txn.open_table(RESERVATIONS).map_err(db_err)?;
            txn.commit().map_err(db_err)?;
        }
        let store = RecordStore {
            db,
            state: Mutex::new(CommitState::default()),
            committed: Condvar::new(),
            merkle: Mutex::new(HashMap::new()),
        };
        store.rebuild_merkle()?;
        Ok(store)
    }

    fn rebuild_merkle(&self) -> Result<(), RecordError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(RECORDS).map_err(db_err)?;
        let mut merkle = lock(&self.merkle);
        merkle.clear();
        for item in table.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let k = k.value();
            let Some((partition, key)) = split_table_key(k) else {
                continue;
            };
            let Ok((version, _)) = postcard::from_bytes::<(Version, RecordValue)>(v.value()) else {
                tracing::error!(key = ?k, "corrupt record value found while opening");
                continue;
            };
            let (kh, d) = merkle_item(key, &version);
            partition_tree(&mut merkle, partition).insert(&kh, &d);
        }
        Ok(())
    }

    /// Writes records last-writer-wins: each is stored only if its version is greater than
    /// the stored one. Returns, per record, whether it was applied. Durable on return.
    pub fn put(&self, records: Vec<Record>) -> Result<Vec<bool>, RecordError> {
        for r in &records {
            if r.key.len() > RECORD_KEY_SIZE_BYTES_MAX {
                return Err(RecordError::Invalid("key too long"));
            }
            if let RecordValue::Data(d) = &r.value
                && d.len() > RECORD_VALUE_SIZE_BYTES_MAX
            {
                return Err(RecordError::Invalid("value too large"));
            }
        }
        let slots: Vec<Slot> = records.iter().map(|_| Arc::new(Mutex::new(None))).collect();
        let mut st = lock(&self.state);
        for (record, slot) in records.into_iter().zip(&slots) {
            st.queue.push(Queued {
                record,
                slot: slot.clone(),
            });
        }
        loop {
            if slots.iter().all(|s| lock(s).is_some()) {
                break;
            }
            if st.leader_active {
                st = self.committed.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.leader_active = true;
            let take = st.queue.len().min(GROUP_COMMIT_RECORDS_MAX);
            let batch: Vec<Queued> = st.queue.drain(..take).collect();
            drop(st);
            let result = self.commit_batch(&batch);
            for (q, r) in batch.iter().zip(result) {
                *lock(&q.slot) = Some(r);
            }
            st = lock(&self.state);
            st.leader_active = false;
            self.committed.notify_all();
        }
        drop(st);
        slots
            .iter()
            .map(|s| match lock(s).take() {
                Some(Ok(applied)) => Ok(applied),
                Some(Err(e)) => Err(RecordError::Db(e)),
                None => Err(RecordError::Db("record was not committed".into())),
            })
            .collect()
    }

    /// Commits one batch in one transaction; returns a result per record.
    fn commit_batch(&self, batch: &[Queued]) -> Vec<Result<bool, String>> {
        let mut merkle_updates: Vec<(u32, Vec<u8>, Option<Version>, Version)> = Vec::new();
        let outcome = (|| -> Result<Vec<bool>, RecordError> {
            let txn = self.db.begin_write().map_err(db_err)?;
            let mut applied = Vec::with_capacity(batch.len());
            {
                let mut table = txn.open_table(RECORDS).map_err(db_err)?;
                for q in batch {
                    let r = &q.record;
                    let tk = table_key(r.partition, &r.key);
                    let old = match table.get(tk.as_slice()).map_err(db_err)? {
                        Some(v) => postcard::from_bytes::<(Version, RecordValue)>(v.value())
                            .ok()
                            .map(|(ver, _)| ver),
                        None => None,
                    };
                    if old.is_some_and(|o| o >= r.version) {
                        applied.push(false);
                        continue;
                    }
                    let value = postcard::to_allocvec(&(r.version, &r.value)).map_err(db_err)?;
                    table.insert(tk.as_slice(), value.as_slice()).map_err(db_err)?;
                    merkle_updates.push((r.partition, r.key.clone(), old, r.version));
                    applied.push(true);
                }
            }
            txn.commit().map_err(db_err)?;
            Ok(applied)
        })();
        match outcome {
            Ok(applied) => {
                let mut merkle = lock(&self.merkle);
                for (partition, key, old, new) in merkle_updates {
                    let tree = partition_tree(&mut merkle, partition);
                    if let Some(old) = old {
                        let (kh, d) = merkle_item(&key, &old);
                        tree.remove(&kh, &d);
                    }
                    let (kh, d) = merkle_item(&key, &new);
                    tree.insert(&kh, &d);
                }
                applied.into_iter().map(Ok).collect()
            }
            Err(e) => batch.iter().map(|_| Err(e.to_string())).collect(),
        }
    }

    /// Removes the record under (`partition`, `key`) if its stored version is exactly
    /// `version` (a newer write that arrived meanwhile stays). For surplus copies a node is
    /// not a replica of (e.g. after handing a hint back). Durable on return; returns whether
    /// it removed anything.
    pub fn remove_exact(&self, partition: u32, key: &[u8], version: Version) -> Result<bool, RecordError> {
        self.exclusive(|| {
            let tk = table_key(partition, key);
            let txn = self.db.begin_write().map_err(db_err)?;
            let removed = {
                let mut table = txn.open_table(RECORDS).map_err(db_err)?;
                let stored = match table.get(tk.as_slice()).map_err(db_err)? {
                    Some(v) => postcard::from_bytes::<(Version, RecordValue)>(v.value())
                        .ok()
                        .map(|(ver, _)| ver),
                    None => None,
                };
                if stored == Some(version) {
                    table.remove(tk.as_slice()).map_err(db_err)?;
                    true
                } else {
                    false
                }
            };
            txn.commit().map_err(db_err)?;
            if removed {
                let (kh, d) = merkle_item(key, &version);
                partition_tree(&mut lock(&self.merkle), partition).remove(&kh, &d);
            }
            Ok(removed)
        })
    }

    /// Runs `f` holding the commit leadership, so no group commit interleaves with a
    /// check-then-write in `f`.
    fn exclusive<T>(&self, f: impl FnOnce() -> Result<T, RecordError>) -> Result<T, RecordError> {
        let mut st = lock(&self.state);
        while st.leader_active {
            st = self.committed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.leader_active = true;
        drop(st);
        let result = f();
        let mut st = lock(&self.state);
        st.leader_active = false;
        self.committed.notify_all();
        drop(st);
        result
    }

    /// Reserves (`partition`, `key`) for a create by `token` until `expires_unix_ms`: granted
    /// if no live record (tombstones do not count) is stored and no other token holds an
    /// unexpired reservation; the same token extends its own. One transaction, durable on
    /// return, so a restarted replica still remembers whom it granted.
    pub fn reserve(
        &self,
        partition: u32,
        key: &[u8],
        token: [u8; 16],
        now_unix_ms: u64,
        expires_unix_ms: u64,
    ) -> Result<Reservation, RecordError> {
        if key.len() > RECORD_KEY_SIZE_BYTES_MAX {
            return Err(RecordError::Invalid("key too long"));
        }
        self.exclusive(|| {
            let tk = table_key(partition, key);
            let mut txn = self.db.begin_write().map_err(db_err)?;
            txn.set_durability(redb::Durability::Immediate).map_err(db_err)?;
            let outcome = {
                let records = txn.open_table(RECORDS).map_err(db_err)?;
                let live = match records.get(tk.as_slice()).map_err(db_err)? {
                    Some(v) => match postcard::from_bytes::<(Version, RecordValue)>(v.value()) {
                        Ok((_, RecordValue::Data(_))) => true,
                        Ok((_, RecordValue::Tombstone)) => false,
                        Err(_) => return Err(RecordError::Corrupt { key: tk.clone() }),
                    },
                    None => false,
                };
                let mut reservations = txn.open_table(RESERVATIONS).map_err(db_err)?;
                let held_by_other = match reservations.get(tk.as_slice()).map_err(db_err)? {
                    Some(v) => match postcard::from_bytes::<([u8; 16], u64)>(v.value()) {
                        Ok((holder, expires)) => holder != token && expires > now_unix_ms,
                        // An unreadable reservation is treated as expired and replaced.
                        Err(_) => false,
                    },
                    None => false,
                };
                if live {
                    Reservation::Exists
                } else if held_by_other {
                    Reservation::Held
                } else {
                    let value =
                        postcard::to_allocvec(&(token, expires_unix_ms)).map_err(|e| RecordError::Db(e.to_string()))?;
                    reservations.insert(tk.as_slice(), value.as_slice()).map_err(db_err)?;
                    Reservation::Granted
                }
            };
            txn.commit().map_err(db_err)?;
            Ok(outcome)
        })
    }

    /// Drops `token`'s reservation of (`partition`, `key`), if it holds it. Durable on
    /// return; returns whether it dropped anything.
    pub fn release(&self, partition: u32, key: &[u8], token: [u8; 16]) -> Result<bool, RecordError> {
        self.exclusive(|| {
            let tk = table_key(partition, key);
            let mut txn = self.db.begin_write().map_err(db_err)?;
            txn.set_durability(redb::Durability::Immediate).map_err(db_err)?;
            let released = {
                let mut reservations = txn.open_table(RESERVATIONS).map_err(db_err)?;
                let mine = match reservations.get(tk.as_slice()).map_err(db_err)? {
                    Some(v) => postcard::from_bytes::<([u8; 16], u64)>(v.value())
                        .map(|(holder, _)| holder == token)
                        .unwrap_or(false),
                    None => false,
                };
                if mine {
                    reservations.remove(tk.as_slice()).map_err(db_err)?;
                }
                mine
            };
            txn.commit().map_err(db_err)?;
            Ok(released)
        })
    }

    /// The record stored under (`partition`, `key`), tombstones included.
    pub fn get(&self, partition: u32, key: &[u8]) -> Result<Option<Record>, RecordError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(RECORDS).map_err(db_err)?;
        let tk = table_key(partition, key);
        let Some(v) = table.get(tk.as_slice()).map_err(db_err)? else {
            return Ok(None);
        };
        let (version, value) = postcard::from_bytes::<(Version, RecordValue)>(v.value())
            .map_err(|_| RecordError::Corrupt { key: tk.clone() })?;
        Ok(Some(Record {
            partition,
            key: key.to_vec(),
            version,
            value,
        }))
    }

    /// Up to `limit` records of `partition` with keys starting with `prefix` and greater than
    /// `after` (exclusive; `None` starts at the prefix), in key order.
    pub fn scan(
        &self,
        partition: u32,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Record>, RecordError> {
        let limit = limit.min(SCAN_RECORDS_MAX);
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(RECORDS).map_err(db_err)?;
        let start = table_key(partition, after.filter(|a| *a >= prefix).unwrap_or(prefix));
        let mut out = Vec::new();
        for item in table.range(start.as_slice()..).map_err(db_err)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(db_err)?;
            let k = k.value();
            let Some((p, key)) = split_table_key(k) else { break };
            if p != partition || !key.starts_with(prefix) {
                break;
            }
            if after.is_some_and(|a| key <= a) {
                continue;
            }
            let (version, value) = postcard::from_bytes::<(Version, RecordValue)>(v.value())
                .map_err(|_| RecordError::Corrupt { key: k.to_vec() })?;
            out.push(Record {
                partition,
                key: key.to_vec(),
                version,
                value,
            });
        }
        Ok(out)
    }

    /// The (key, version) of every record of `partition` whose key falls in one of `leaves`
    /// of the partition's Merkle summary, in key order, at most `limit`; and whether that was
    /// all of them. Tombstones included (they are versions too). Scans the partition.
    pub fn leaf_items(
        &self,
        partition: u32,
        leaves: &[u32],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<KeyVersion>, bool), RecordError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(RECORDS).map_err(db_err)?;
        let start = table_key(partition, after.unwrap_or(&[]));
        let mut out = Vec::new();
        for item in table.range(start.as_slice()..).map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let k = k.value();
            let Some((p, key)) = split_table_key(k) else { break };
            if p != partition {
                break;
            }
            if after.is_some_and(|a| key <= a) {
                continue;
            }
            if !leaves.contains(&PARTITION_MERKLE_SHAPE.leaf_of(blake3::hash(key).as_bytes())) {
                continue;
            }
            if out.len() >= limit {
                return Ok((out, false));
            }
            let (version, _) = postcard::from_bytes::<(Version, RecordValue)>(v.value())
                .map_err(|_| RecordError::Corrupt { key: k.to_vec() })?;
            out.push((key.to_vec(), version));
        }
        Ok((out, true))
    }

    /// The Merkle root of a partition (empty if it holds nothing).
    pub fn merkle_root(&self, partition: u32) -> MerkleNode {
        lock(&self.merkle).get(&partition).map(|t| t.root()).unwrap_or_default()
    }

    /// A copy of a partition's Merkle summary.
    pub fn merkle_snapshot(&self, partition: u32) -> Option<MerkleTree> {
        lock(&self.merkle).get(&partition).cloned()
    }
}

fn split_table_key(k: &[u8]) -> Option<(u32, &[u8])> {
    let p = k.get(..4)?;
    Some((u32::from_be_bytes([p[0], p[1], p[2], p[3]]), &k[4..]))
}

fn partition_tree(merkle: &mut HashMap<u32, MerkleTree>, partition: u32) -> &mut MerkleTree {
    merkle.entry(partition).or_insert_with(|| {
        // The shape is a valid constant.
        MerkleTree::new(PARTITION_MERKLE_SHAPE).unwrap_or_else(|| unreachable!("valid Merkle shape"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64, u: u8) -> Version {
        Version { hlc, unique: [u; 16] }
    }

    fn rec(p: u32, key: &str, version: Version, data: &str) -> Record {
        Record {
            partition: p,
            key: key.as_bytes().to_vec(),
            version,
            value: RecordValue::Data(data.as_bytes().to_vec()),
        }
    }

    /// Anonymous memory of this process (`RssAnon`), in bytes.
    fn anonymous_rss_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("RssAnon");
        kib * 1024
    }

    /// The page cache is held to what the store was opened with: writing 128 MiB of
    /// records through an 8 MiB cache leaves the process far smaller than the data (with
    /// redb's default 1 GiB cache it grows by about the data written).
    #[test]
    fn memory_stays_within_the_cache_size_whatever_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RecordStore::open_with_cache(&dir.path().join("r.redb"), 8 * 1024 * 1024).expect("open");
        let value = vec![7u8; 64 * 1024];
        let before = anonymous_rss_bytes();
        for batch in 0..32u64 {
            let records = (0..64u64)
                .map(|i| Record {
                    partition: (i % 8) as u32,
                    key: format!("k/{batch}/{i}").into_bytes(),
                    version: v(batch + 1, 1),
                    value: RecordValue::Data(value.clone()),
                })
                .collect();
            store.put(records).expect("put");
        }
        let grown = anonymous_rss_bytes().saturating_sub(before);
        assert!(
            grown < 48 * 1024 * 1024,
            "128 MiB written through an 8 MiB cache grew the process by {} MiB",
            grown >> 20
        );
        assert!(store.get(3, b"k/31/3").expect("get").is_some());
    }

    #[test]
    fn reservations_grant_one_token_refuse_live_records_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.redb");
        let (a, b) = ([1u8; 16], [2u8; 16]);
        {
            let store = RecordStore::open(&path).expect("open");
            assert_eq!(
                store.reserve(1, b"k", a, 100, 200).expect("reserve"),
                Reservation::Granted
            );
            assert_eq!(store.reserve(1, b"k", b, 150, 300).expect("reserve"), Reservation::Held);
            assert_eq!(
                store.reserve(1, b"k", a, 150, 400).expect("extend"),
                Reservation::Granted
            );
            assert_eq!(
                store.reserve(2, b"k", b, 150, 300).expect("other partition"),
                Reservation::Granted
            );
            // Reservations are not records: not read, scanned or summarised.
            assert!(store.get(1, b"k").expect("get").is_none());
            assert!(store.scan(1, b"", None, 10).expect("scan").is_empty());
            assert_eq!(store.merkle_root(1), MerkleNode::default());
        }
        let store = RecordStore::open(&path).expect("reopen");
        assert_eq!(
            store.reserve(1, b"k", b, 150, 300).expect("after reopen"),
            Reservation::Held
        );
        // Expired: another token takes it.
        assert_eq!(
            store.reserve(1, b"k", b, 401, 500).expect("expired"),
            Reservation::Granted
        );
        assert!(!store.release(1, b"k", a).expect("not a's any more"));
        assert!(store.release(1, b"k", b).expect("release"));
        assert_eq!(
            store.reserve(1, b"k", a, 402, 500).expect("free again"),
            Reservation::Granted
        );
        assert!(store.release(1, b"k", a).expect("release"));
        // A live record refuses; a tombstone does not.
        store.put(vec![rec(1, "k", v(10, 1), "exists")]).expect("put");
        assert_eq!(store.reserve(1, b"k", a, 403, 500).expect("live"), Reservation::Exists);
        store
            .put(vec![Record {
                partition: 1,
                key: b"k".to_vec(),
                version: v(11, 1),
                value: RecordValue::Tombstone,
            }])
            .expect("delete");
        assert_eq!(
            store.reserve(1, b"k", a, 404, 500).expect("deleted"),
            Reservation::Granted
        );
        assert!(
            store
                .reserve(1, &vec![0u8; RECORD_KEY_SIZE_BYTES_MAX + 1], a, 1, 2)
                .is_err()
        );
    }

    #[test]
    fn last_writer_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.redb");
        let store = RecordStore::open(&path).expect("open");
        assert_eq!(
            store.put(vec![rec(1, "a", v(10, 1), "first")]).expect("put"),
            vec![true]
        );
        assert_eq!(
            store.put(vec![rec(1, "a", v(5, 9), "older")]).expect("put"),
            vec![false]
        );
        assert_eq!(
            store.put(vec![rec(1, "a", v(10, 2), "tie broken by id")]).expect("put"),
            vec![true]
        );
        let tomb = Record {
            value: RecordValue::Tombstone,
            ..rec(1, "a", v(11, 0), "")
        };
        store.put(vec![tomb.clone()]).expect("delete");
        assert_eq!(
            store.put(vec![rec(1, "a", v(10, 9), "late write")]).expect("put"),
            vec![false]
        );
        let root = store.merkle_root(1);
        drop(store);
        let store = RecordStore::open(&path).expect("reopen");
        assert_eq!(store.get(1, b"a").expect("get"), Some(tomb));
        assert_eq!(store.merkle_root(1), root, "summary rebuilt identically");
        assert_eq!(store.get(2, b"a").expect("get"), None);
    }

    #[test]
    fn scans_are_ordered_prefixed_and_paged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RecordStore::open(&dir.path().join("r.redb")).expect("open");
        let keys = ["b/1", "a/2", "a/1", "a/10", "c", "a/3"];
        store
            .put(keys.iter().map(|k| rec(7, k, v(1, 0), k)).collect())
            .expect("put");
        store.put(vec![rec(8, "a/0", v(1, 0), "other partition")]).expect("put");
        let all: Vec<String> = store
            .scan(7, b"a/", None, 100)
            .expect("scan")
            .iter()
            .map(|r| String::from_utf8_lossy(&r.key).into_owned())
            .collect();
        assert_eq!(all, vec!["a/1", "a/10", "a/2", "a/3"]);
        let page: Vec<Vec<u8>> = store
            .scan(7, b"a/", Some(b"a/10"), 1)
            .expect("scan")
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(page, vec![b"a/2".to_vec()]);
        assert!(store.scan(9, b"", None, 10).expect("scan").is_empty());
    }

    #[test]
    fn concurrent_writers_share_commits_and_replicas_converge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Arc::new(RecordStore::open(&dir.path().join("a.redb")).expect("open"));
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let a = a.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let key = format!("k{t}-{i}");
                        a.put(vec![rec(3, &key, v(100 + i, t as u8), "x")]).expect("put");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer");
        }
        assert_eq!(a.scan(3, b"", None, 1000).expect("scan").len(), 400);
        // A replica given the same records in another order has the same summary.
        let b = RecordStore::open(&dir.path().join("b.redb")).expect("open");
        let mut all = a.scan(3, b"", None, 1000).expect("scan");
        all.reverse();
        b.put(all).expect("put");
        assert_eq!(a.merkle_root(3), b.merkle_root(3));
        b.put(vec![rec(3, "k0-0", v(999, 0), "newer")]).expect("put");
        let diff = a
            .merkle_snapshot(3)
            .expect("tree")
            .differing_leaves(&b.merkle_snapshot(3).expect("tree"));
        assert_eq!(diff.len(), 1);
    }

    #[test]
    fn oversized_input_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RecordStore::open(&dir.path().join("r.redb")).expect("open");
        let long_key = "k".repeat(RECORD_KEY_SIZE_BYTES_MAX + 1);
        assert!(matches!(
            store.put(vec![rec(1, &long_key, v(1, 0), "x")]),
            Err(RecordError::Invalid(_))
        ));
        let hlc = Hlc::default();
        let t1 = hlc.now(1000);
        let t2 = hlc.now(1000);
        assert!(t2 > t1);
        hlc.observe(t2 + 100);
        assert!(hlc.now(999) > t2 + 100, "the clock moves past what it observed");
    }
}
