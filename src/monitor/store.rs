//! Durable storage of a monitor's Raft: the log, the vote, the committed index and the state
//! machine (the cluster map with everything `state::MonitorState` keeps), all in one `redb`
//! file (`raft.redb` in the monitor's data dir).
//!
//! Durability: every write (appended entries, vote, applied state, snapshot) is one redb
//! transaction committed with `Durability::Immediate` (fsync) before it is reported done; an
//! append tells Raft its entries are durable (`log_io_completed`) only after the commit. The
//! state machine is written on every apply batch, so after a restart it resumes exactly where
//! it stopped and Raft re-applies nothing it already applied. Snapshots are the encoded state
//! machine; they are built on demand by Raft's snapshot policy and let a lagging or new
//! monitor catch up without the whole log.
//!
//! Every byte read back is decoded with a size limit; a record that does not decode is a
//! storage error (Raft stops this monitor rather than guess), never a panic.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{
    Entry, EntryPayload, LogId, LogState, OptionalSend, Snapshot, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::raft::{MonitorNode, RaftId, TypeConfig};
use super::state::{MonitorState, Outcome};

/// Log entries by index (postcard of `Entry`).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Vote, committed and purged log ids, the state machine, the current snapshot.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "purged";
const KEY_STATE: &str = "state";
const KEY_SNAPSHOT: &str = "snapshot";

/// Largest log entry, state or snapshot read back (a map is at most 4 MiB; the state adds
/// the pending nodes and recent outcomes).
pub const RECORD_SIZE_BYTES_MAX: usize = 64 * 1024 * 1024;

type StorageResult<T> = Result<T, StorageError<RaftId>>;

/// The state machine as persisted and snapshotted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MachineData {
    /// Last log entry applied.
    pub last_applied: Option<LogId<RaftId>>,
    /// Last membership applied.
    pub last_membership: StoredMembership<RaftId, MonitorNode>,
    /// The replicated state.
    pub state: MonitorState,
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
    if bytes.len() > RECORD_SIZE_BYTES_MAX {
        return Err(std::io::Error::other("stored record larger than the limit"));
    }
    postcard::from_bytes(bytes).map_err(|e| std::io::Error::other(format!("stored record does not decode: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, std::io::Error> {
    postcard::to_allocvec(value).map_err(|e| std::io::Error::other(e.to_string()))
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Runs blocking database work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, std::io::Error> + Send + 'static,
) -> Result<T, std::io::Error> {
    tokio::task::spawn_blocking(f).await.map_err(io)?
}

fn get_meta<T: serde::de::DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, std::io::Error> {
    let txn = db.begin_read().map_err(io)?;
    let table = txn.open_table(META).map_err(io)?;
    match table.get(key).map_err(io)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

fn put_meta(db: &Database, items: &[(&str, Vec<u8>)]) -> Result<(), std::io::Error> {
    let txn = db.begin_write().map_err(io)?;
    {
        let mut table = txn.open_table(META).map_err(io)?;
        for (k, v) in items {
            table.insert(*k, v.as_slice()).map_err(io)?;
        }
    }
    txn.commit().map_err(io)
}

/// Page cache of the Raft database (a log of map changes: small, written far more than read).
const RAFT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Opens (or creates) the monitor's Raft database.
pub fn open_db(path: &Path) -> Result<Arc<Database>, std::io::Error> {
    let db = redb::Builder::new()
        .set_cache_size(RAFT_CACHE_BYTES)
        .create(path)
        .map_err(io)?;
    let txn = db.begin_write().map_err(io)?;
    txn.open_table(LOG).map_err(io)?;
    txn.open_table(META).map_err(io)?;
    txn.commit().map_err(io)?;
    Ok(Arc::new(db))
}

/// The Raft log, vote and committed index.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// The log in `db`.
    pub fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }
}

fn read_range(db: &Database, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry<TypeConfig>>, std::io::Error> {
    let txn = db.begin_read().map_err(io)?;
    let table = txn.open_table(LOG).map_err(io)?;
    let mut out = Vec::new();
    for item in table.range::<u64>((start, end)).map_err(io)? {
        let (_, v) = item.map_err(io)?;
        out.push(decode(v.value())?);
    }
    Ok(out)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let db = self.db.clone();
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        blocking(move || read_range(&db, start, end))
            .await
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let db = self.db.clone();
        blocking(move || {
            let purged: Option<LogId<RaftId>> = get_meta(&db, KEY_PURGED)?;
            let txn = db.begin_read().map_err(io)?;
            let table = txn.open_table(LOG).map_err(io)?;
            let last = match table.last().map_err(io)? {
                Some((_, v)) => Some(decode::<Entry<TypeConfig>>(v.value())?.log_id),
                None => purged,
            };
            Ok(LogState {
                last_purged_log_id: purged,
                last_log_id: last,
            })
        })
        .await
        .map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> StorageResult<()> {
        let db = self.db.clone();
        let bytes = encode(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        blocking(move || put_meta(&db, &[(KEY_VOTE, bytes)]))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<RaftId>>> {
        let db = self.db.clone();
        blocking(move || get_meta(&db, KEY_VOTE))
            .await
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftId>>) -> StorageResult<()> {
        let db = self.db.clone();
        let bytes = encode(&committed).map_err(|e| StorageIOError::write(&e))?;
        blocking(move || put_meta(&db, &[(KEY_COMMITTED, bytes)]))
            .await
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<RaftId>>> {
        let db = self.db.clone();
        blocking(move || Ok(get_meta::<Option<LogId<RaftId>>>(&db, KEY_COMMITTED)?.flatten()))
            .await
            .map_err(|e| StorageIOError::read(&e).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for e in entries {
            let bytes = encode(&e).map_err(|err| StorageIOError::write_logs(&err))?;
            encoded.push((e.log_id.index, bytes));
        }
        let db = self.db.clone();
        let result = blocking(move || {
            let txn = db.begin_write().map_err(io)?;
            {
                let mut table = txn.open_table(LOG).map_err(io)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice()).map_err(io)?;
                }
            }
            txn.commit().map_err(io)
        })
        .await;
        match result {
            Ok(()) => {
                // Durable (fsync'd commit): only now may Raft count these entries.
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(err.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> StorageResult<()> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write().map_err(io)?;
            {
                let mut table = txn.open_table(LOG).map_err(io)?;
                table.retain_in(log_id.index.., |_, _| false).map_err(io)?;
            }
            txn.commit().map_err(io)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<RaftId>) -> StorageResult<()> {
        let db = self.db.clone();
        let purged = encode(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        blocking(move || {
            let txn = db.begin_write().map_err(io)?;
            {
                let mut meta = txn.open_table(META).map_err(io)?;
                meta.insert(KEY_PURGED, purged.as_slice()).map_err(io)?;
                let mut table = txn.open_table(LOG).map_err(io)?;
                table.retain_in(..=log_id.index, |_, _| false).map_err(io)?;
            }
            txn.commit().map_err(io)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

/// The state machine: applies committed proposals to `MonitorState` and persists the result.
#[derive(Clone)]
pub struct MachineStore {
    db: Arc<Database>,
    data: Arc<std::sync::Mutex<MachineData>>,
    /// Every applied batch publishes the new state here (the monitor shell signs and pushes
    /// maps from it).
    published: watch::Sender<Arc<MachineData>>,
}

impl MachineStore {
    /// Loads the persisted state machine from `db`.
    pub fn open(db: Arc<Database>) -> Result<MachineStore, std::io::Error> {
        let data: MachineData = get_meta(&db, KEY_STATE)?.unwrap_or_default();
        let (published, _) = watch::channel(Arc::new(data.clone()));
        Ok(MachineStore {
            db,
            data: Arc::new(std::sync::Mutex::new(data)),
            published,
        })
    }

    /// Follows the applied state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MachineData>> {
        self.published.subscribe()
    }

    fn snapshot_of(&self) -> MachineData {
        self.data.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn persist(&self, data: MachineData, snapshot: Option<Vec<u8>>) -> Result<(), std::io::Error> {
        let db = self.db.clone();
        let bytes = encode(&data)?;
        blocking(move || {
            let mut items = vec![(KEY_STATE, bytes)];
            if let Some(s) = snapshot {
                items.push((KEY_SNAPSHOT, s));
            }
            put_meta(&db, &items)
        })
        .await?;
        self.published.send_replace(Arc::new(data));
        Ok(())
    }
}

fn monitors_of(membership: &openraft::Membership<RaftId, MonitorNode>) -> Vec<crate::cluster::NodeInfo> {
    let voters: std::collections::BTreeSet<RaftId> = membership.voter_ids().collect();
    membership
        .nodes()
        .filter(|(id, _)| voters.contains(id))
        .filter_map(|(_, n)| n.to_node_info())
        .collect()
}

impl RaftSnapshotBuilder<TypeConfig> for MachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let data = self.snapshot_of();
        let bytes = encode(&data).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.last_membership.clone(),
            snapshot_id: format!(
                "epoch-{}-index-{}",
                data.state.epoch(),
                data.last_applied.map_or(0, |l| l.index)
            ),
        };
        let stored =
            encode(&(&meta, &bytes)).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let db = self.db.clone();
        blocking(move || put_meta(&db, &[(KEY_SNAPSHOT, stored)]))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<RaftId>>, StoredMembership<RaftId, MonitorNode>)> {
        let d = self.data.lock().unwrap_or_else(|p| p.into_inner());
        Ok((d.last_applied, d.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (data, out) = {
            let mut d = self.data.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            for e in entries {
                d.last_applied = Some(e.log_id);
                // One response per entry, blank and membership entries included.
                let outcome = match e.payload {
                    EntryPayload::Blank => Outcome::Recorded,
                    EntryPayload::Normal(p) => d.state.apply(&p),
                    EntryPayload::Membership(m) => {
                        let monitors = monitors_of(&m);
                        d.last_membership = StoredMembership::new(Some(e.log_id), m);
                        d.state.set_monitors(monitors)
                    }
                };
                out.push(outcome);
            }
            (d.clone(), out)
        };
        self.persist(data, None)
            .await
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftId, MonitorNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let bytes = snapshot.into_inner();
        let data: MachineData =
            decode(&bytes).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = encode(&(meta, &bytes)).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        *self.data.lock().unwrap_or_else(|p| p.into_inner()) = data.clone();
        self.persist(data, Some(stored))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let db = self.db.clone();
        let stored: Option<(SnapshotMeta<RaftId, MonitorNode>, Vec<u8>)> =
            blocking(move || get_meta(&db, KEY_SNAPSHOT))
                .await
                .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, MachineStore, tempfile::TempDir> for Builder {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, MachineStore)> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let db = open_db(&dir.path().join("raft.redb")).map_err(|e| StorageIOError::write(&e))?;
            let machine = MachineStore::open(db.clone()).map_err(|e| StorageIOError::read(&e))?;
            Ok((dir, LogStore::new(db), machine))
        }
    }

    /// openraft's own conformance suite for log and state machine storage.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder).expect("storage suite");
    }

    /// The applied state and the log survive a reopen of the file.
    #[tokio::test]
    async fn state_survives_reopen() {
        use crate::monitor::state::{Op, Proposal};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.redb");
        let log_id = |index| LogId::new(openraft::CommittedLeaderId::new(1, 7), index);
        {
            let db = open_db(&path).expect("open");
            let mut log = LogStore::new(db.clone());
            let mut machine = MachineStore::open(db).expect("machine");
            let init = Entry::<TypeConfig> {
                log_id: log_id(1),
                payload: EntryPayload::Normal(Proposal {
                    request_id: 1,
                    epoch_floor: 0,
                    op: Op::Init {
                        policy: crate::cluster::ReplicationPolicy {
                            replication: 1,
                            write_quorum: 1,
                            read_quorum: 1,
                        },
                        partitions: 8,
                    },
                }),
            };
            log.save_vote(&Vote::new(1, 7)).await.expect("vote");
            let out = machine.apply([init]).await.expect("apply");
            assert_eq!(out, vec![Outcome::Applied { epoch: 1 }]);
        }
        let db = open_db(&path).expect("reopen");
        let mut log = LogStore::new(db.clone());
        let mut machine = MachineStore::open(db).expect("machine");
        assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(1, 7)));
        let (applied, _) = machine.applied_state().await.expect("applied");
        assert_eq!(applied, Some(log_id(1)));
        assert_eq!(machine.subscribe().borrow().state.epoch(), 1);
    }
}
