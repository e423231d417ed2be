//! The object store itself: the node it works through, its caches and write slots, and
//! the record helpers every operation uses (versioned writes that redo themselves after a
//! newer version, quorum reads, chunk references).

use std::sync::Arc;

use futures::StreamExt;

use super::cache::{BucketCache, KeyCache};
use super::error::{ObjectError, ObjectResult};
use super::layout::ChunkRef;

use crate::node::{Node, RecordWrite};
use crate::storage::records::{Hlc, Record, RecordValue, Version};
use crate::storage::refs::ChunkHolder;

/// Chunk writes in flight per PUT (bounds its memory to this many chunks plus one).
pub const CHUNKS_IN_FLIGHT_MAX: usize = 4;
/// Chunk writes in flight in the whole object store. A PUT waits for a slot before it reads
/// on, so many concurrent large uploads queue here (bounded memory: this many chunks plus one
/// buffer per request) instead of piling writes onto the storage nodes until they time out.
pub const GATEWAY_CHUNK_WRITES_MAX: usize = 16;
/// Chunks fetched ahead of the one being sent, per GET.
pub const CHUNKS_PREFETCH: usize = 2;
/// Most times a record write is redone after a replica turned out to hold a newer version.
const RECORD_REWRITES_MAX: usize = 4;

/// Buckets, objects and keys over one node's view of the cluster. Stateless but for caches:
/// any number of these (on any number of gateways) serve one cluster.
pub struct ObjectStore {
    pub(super) node: Arc<Node>,
    pub(super) hlc: Hlc,
    pub(super) chunk_writes: Arc<tokio::sync::Semaphore>,
    pub(super) buckets: BucketCache,
    pub(super) keys: KeyCache,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("peer", &self.node.peer_id())
            .finish_non_exhaustive()
    }
}

impl ObjectStore {
    /// An object store over the cluster `node` belongs to (a gateway's node: not in the map,
    /// it coordinates writes as a client). Time comes from the node's clock.
    pub fn new(node: Arc<Node>) -> ObjectStore {
        ObjectStore {
            node,
            hlc: Hlc::default(),
            chunk_writes: Arc::new(tokio::sync::Semaphore::new(GATEWAY_CHUNK_WRITES_MAX)),
            buckets: BucketCache::default(),
            keys: KeyCache::default(),
        }
    }

    /// The node it works through.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Wall-clock time by the node's clock, ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.node.clock().now_ms()
    }

    pub(super) fn version_with(&self, unique: [u8; 16]) -> Version {
        Version {
            hlc: self.hlc.now(self.now_ms()),
            unique,
        }
    }

    pub(super) fn partition(&self, key: &[u8]) -> ObjectResult<u32> {
        self.node
            .partition_of(key)
            .ok_or_else(|| ObjectError::Unavailable("this node has no cluster map yet".into()))
    }

    /// The holder a record version with `unique` at `key` will be, for chunk references.
    pub(super) fn holder(&self, partition_key: &[u8], key: &[u8], unique: [u8; 16]) -> ObjectResult<ChunkHolder> {
        Ok(ChunkHolder {
            holder_partition: self.partition(partition_key)?,
            holder_key: key.to_vec(),
            holder_unique: unique,
        })
    }

    /// Writes the references of `chunks` held by `holder` (before the holder is written).
    pub(super) async fn add_refs(&self, chunks: &[ChunkRef], holder: &ChunkHolder) -> ObjectResult<()> {
        let owned: Vec<(chunkstore::ChunkId, u32)> = chunks
            .iter()
            .map(|c| (chunkstore::ChunkId(c.id), c.size_bytes))
            .collect();
        let mut writes = futures::stream::iter(owned.into_iter().map(|(id, size)| {
            let (node, holder) = (self.node.clone(), holder.clone());
            async move { node.put_chunk_ref(&id, size, &holder).await }
        }))
        .buffer_unordered(GATEWAY_CHUNK_WRITES_MAX);
        while let Some(r) = writes.next().await {
            r?;
        }
        Ok(())
    }

    /// A record's live value by quorum read (`None`: absent or deleted).
    pub(super) async fn get_record(&self, partition_key: &[u8], key: &[u8]) -> ObjectResult<Option<Vec<u8>>> {
        let partition = self.partition(partition_key)?;
        match self.node.get_record(partition, key).await? {
            Some(Record {
                value: RecordValue::Data(d),
                ..
            }) => Ok(Some(d)),
            _ => Ok(None),
        }
    }

    pub(super) async fn put_record(&self, partition_key: &[u8], key: Vec<u8>, value: RecordValue) -> ObjectResult<()> {
        self.put_record_with(partition_key, key, value, rand::random()).await
    }

    /// `put_record` with the version's `unique` chosen by the caller (a holder of chunks).
    pub(super) async fn put_record_with(
        &self,
        partition_key: &[u8],
        key: Vec<u8>,
        value: RecordValue,
        unique: [u8; 16],
    ) -> ObjectResult<()> {
        let partition = self.partition(partition_key)?;
        self.write_versioned(partition, key, value, unique).await
    }

    /// Writes a record at a fresh version made with `unique`, again at a later one while a
    /// replica turns out to hold a newer version.
    pub(super) async fn write_versioned(
        &self,
        partition: u32,
        key: Vec<u8>,
        value: RecordValue,
        unique: [u8; 16],
    ) -> ObjectResult<()> {
        let mut record = Record {
            partition,
            key,
            version: self.version_with(unique),
            value,
        };
        // Last-writer-wins by version: if a replica already holds a later one (written
        // through a node whose clock is ahead of ours), learn it and write again after it,
        // so an acknowledged write is always the one readers see.
        for _ in 0..RECORD_REWRITES_MAX {
            match self.node.put_record_checked(record.clone()).await? {
                RecordWrite::Written => return Ok(()),
                RecordWrite::Superseded => {}
            }
            if let Ok(Some(held)) = self.node.get_record(partition, &record.key).await {
                self.hlc.observe(held.version.hlc);
            }
            record.version = self.version_with(unique);
            tracing::debug!(
                hlc = record.version.hlc,
                "a replica held a newer version; writing again after it"
            );
        }
        Err(ObjectError::Unavailable(
            "the record kept being superseded by newer versions; retry".into(),
        ))
    }
}
