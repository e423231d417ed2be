//! The `s3s::S3` implementation: each S3 operation in terms of replicated records and chunks.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use md5::Digest;
use s3s::dto::*;
use s3s::{S3, S3Error, S3Request, S3Response, S3Result, s3_error};

use super::auth::caller_of as caller;
use super::model::*;
use crate::access::{Action, KeyEdit, KeyRequest, KeyResponse, Permission};
use crate::node::Node;
use crate::node::runtime::CreateRefusal;
use crate::storage::records::{Hlc, Record, RecordValue, Version};
use crate::storage::refs::ChunkHolder;

/// The `x-amz-checksum-*` headers of an upload input (PutObject and UploadPart name them
/// alike).
macro_rules! given_checksums {
    ($input:expr) => {
        Checksum {
            checksum_crc32: $input.checksum_crc32.clone(),
            checksum_crc32c: $input.checksum_crc32c.clone(),
            checksum_crc64nvme: $input.checksum_crc64nvme.clone(),
            checksum_sha1: $input.checksum_sha1.clone(),
            checksum_sha256: $input.checksum_sha256.clone(),
            ..Default::default()
        }
    };
}

/// Chunk writes in flight per PUT (bounds its memory to this many chunks plus one).
pub const CHUNKS_IN_FLIGHT_MAX: usize = 4;
/// Chunk writes in flight in the whole gateway. A PUT waits for a slot before it reads on,
/// so many concurrent large uploads queue at the gateway (bounded memory: this many chunks
/// plus one buffer per request) instead of piling writes onto the storage nodes until they
/// time out.
pub const GATEWAY_CHUNK_WRITES_MAX: usize = 16;
/// How long an object request may trust that a bucket it saw still exists, without a quorum
/// read. Only existing buckets are cached (a new bucket is visible at once everywhere); a
/// bucket deleted through another gateway may still take writes here this long, as S3
/// documents bucket deletion as eventually consistent. Bucket operations never use it.
pub const BUCKET_CACHE_TTL_MS: u64 = 1_000;
/// Buckets remembered at most (the cache is emptied when full).
const BUCKET_CACHE_LEN_MAX: usize = 10_000;
/// Chunks fetched ahead of the one being sent, per GET.
pub const CHUNKS_PREFETCH: usize = 2;
/// Records read per scan while listing.
const LIST_PAGE_RECORDS: usize = 1000;
/// Most scan pages one listing request reads (tombstones and skipped prefixes included).
const LIST_PAGES_MAX: usize = 64;
/// Keys per DeleteObjects request (S3's limit).
const DELETE_OBJECTS_MAX: usize = 1000;
/// Times a create-only write retries a reservation held by another creator.
const CREATE_RETRIES_MAX: usize = 5;
/// Longest pause before such a retry (each is random below it).
const CREATE_RETRY_DELAY_MS_MAX: u64 = 40;
/// Most times a record write is redone after a replica turned out to hold a newer version.
const RECORD_REWRITES_MAX: usize = 4;

/// The gateway's S3 service.
pub struct HadssS3 {
    node: Arc<Node>,
    region: String,
    hlc: Hlc,
    chunk_writes: Arc<tokio::sync::Semaphore>,
    buckets: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, BucketMeta)>>,
    keys: Arc<super::auth::GatewayKeys>,
}

impl HadssS3 {
    /// A service over the cluster `node` belongs to.
    pub fn new(node: Arc<Node>, region: &str, keys: Arc<super::auth::GatewayKeys>) -> HadssS3 {
        HadssS3 {
            node,
            region: region.to_string(),
            hlc: Hlc::default(),
            chunk_writes: Arc::new(tokio::sync::Semaphore::new(GATEWAY_CHUNK_WRITES_MAX)),
            buckets: std::sync::Mutex::new(std::collections::HashMap::new()),
            keys,
        }
    }

    /// The wall clock (skewed only by netsim's fault layer).
    fn now_ms() -> u64 {
        crate::net::fault::wall_clock_ms()
    }

    fn version_with(&self, unique: [u8; 16]) -> Version {
        Version {
            hlc: self.hlc.now(Self::now_ms()),
            unique,
        }
    }

    /// The holder a record version with `unique` at `key` will be, for chunk references.
    fn holder(&self, partition_key: &[u8], key: &[u8], unique: [u8; 16]) -> S3Result<ChunkHolder> {
        Ok(ChunkHolder {
            holder_partition: self.partition(partition_key)?,
            holder_key: key.to_vec(),
            holder_unique: unique,
        })
    }

    /// Writes the references of `chunks` held by `holder` (before the holder is written).
    async fn add_refs(&self, chunks: &[ChunkRef], holder: &ChunkHolder) -> S3Result<()> {
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
            r.map_err(unavailable)?;
        }
        Ok(())
    }

    fn partition(&self, key: &[u8]) -> S3Result<u32> {
        self.node
            .partition_of(key)
            .ok_or_else(|| s3_error!(ServiceUnavailable, "the gateway has no cluster map yet"))
    }

    async fn get_record(&self, partition_key: &[u8], key: &[u8]) -> S3Result<Option<Vec<u8>>> {
        let partition = self.partition(partition_key)?;
        match self.node.get_record(partition, key).await {
            Ok(Some(Record {
                value: RecordValue::Data(d),
                ..
            })) => Ok(Some(d)),
            Ok(_) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn put_record(&self, partition_key: &[u8], key: Vec<u8>, value: RecordValue) -> S3Result<()> {
        self.put_record_with(partition_key, key, value, rand::random()).await
    }

    /// `put_record` with the version's `unique` chosen by the caller (a holder of chunks).
    async fn put_record_with(
        &self,
        partition_key: &[u8],
        key: Vec<u8>,
        value: RecordValue,
        unique: [u8; 16],
    ) -> S3Result<()> {
        let partition = self.partition(partition_key)?;
        self.write_versioned(partition, key, value, unique).await
    }

    /// Writes a record at a fresh version made with `unique`, again at a later one while a
    /// replica turns out to hold a newer version.
    async fn write_versioned(
        &self,
        partition: u32,
        key: Vec<u8>,
        value: RecordValue,
        unique: [u8; 16],
    ) -> S3Result<()> {
        let mut record = Record {
            partition,
            key,
            version: self.version_with(unique),
            value,
        };
        // Last-writer-wins by version: if a replica already holds a later one (written
        // through a gateway whose clock is ahead of ours), learn it and write again after
        // it, so an acknowledged write is always the one readers see.
        for _ in 0..RECORD_REWRITES_MAX {
            match self
                .node
                .put_record_checked(record.clone())
                .await
                .map_err(unavailable)?
            {
                crate::node::RecordWrite::Written => return Ok(()),
                crate::node::RecordWrite::Superseded => {}
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
        Err(s3_error!(
            ServiceUnavailable,
            "the record kept being superseded by newer versions; retry"
        ))
    }

    /// Writes an object record, create-only when `create_only` (`If-None-Match: *`): the
    /// key is first reserved on a majority of its replicas (at most one creator at a time,
    /// none while a replica holds the object), then checked with a quorum read, then
    /// written, then released. Concurrent creators: one wins, the others get
    /// `412 PreconditionFailed` (it exists) or `409 ConditionalRequestConflict` (still being
    /// created; retry).
    async fn write_object_record(
        &self,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        create_only: bool,
        unique: [u8; 16],
    ) -> S3Result<()> {
        let record_key = object_key(bucket, key);
        if !create_only {
            return self
                .put_record_with(
                    &objects_partition_key(bucket),
                    record_key,
                    RecordValue::Data(value),
                    unique,
                )
                .await;
        }
        let partition = self.partition(&objects_partition_key(bucket))?;
        // A creator that meets another's reservation tries again shortly: usually it then
        // finds the object (412) or the key free.
        let mut reserved = self.node.reserve_create(partition, &record_key).await;
        for _ in 0..CREATE_RETRIES_MAX {
            if !matches!(reserved, Err(CreateRefusal::Conflict)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(rand::random_range(5..CREATE_RETRY_DELAY_MS_MAX))).await;
            reserved = self.node.reserve_create(partition, &record_key).await;
        }
        let lease = match reserved {
            Ok(lease) => lease,
            Err(CreateRefusal::Exists) => return Err(s3_error!(PreconditionFailed)),
            Err(CreateRefusal::Conflict) => {
                let mut e = S3Error::with_message(
                    s3s::S3ErrorCode::Custom("ConditionalRequestConflict".into()),
                    "A conflicting operation on this object is in progress; retry",
                );
                e.set_status_code(hyper::StatusCode::CONFLICT);
                return Err(e);
            }
            Err(CreateRefusal::Unavailable(why)) => return Err(unavailable(anyhow::anyhow!(why))),
        };
        // The reservation saw no object on a majority; a quorum read also covers policies
        // where W and a majority need not overlap.
        let result = match self.object(bucket, key).await {
            Ok(_) => Err(s3_error!(PreconditionFailed)),
            Err(e) if *e.code() == s3s::S3ErrorCode::NoSuchKey => {
                self.put_record_with(
                    &objects_partition_key(bucket),
                    record_key,
                    RecordValue::Data(value),
                    unique,
                )
                .await
            }
            Err(e) => Err(e),
        };
        self.node.release_create(lease).await;
        result
    }

    /// The bucket as a quorum read finds it now.
    async fn bucket_fresh(&self, bucket: &str) -> S3Result<BucketMeta> {
        let meta = match self.get_record(BUCKETS_PARTITION_KEY, &bucket_key(bucket)).await? {
            Some(v) => BucketRecord::decode(&v).map_err(internal)?,
            None => {
                self.forget_bucket(bucket);
                return Err(s3_error!(NoSuchBucket));
            }
        };
        let mut cache = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= BUCKET_CACHE_LEN_MAX {
            cache.clear();
        }
        cache.insert(bucket.to_string(), (std::time::Instant::now(), meta.clone()));
        Ok(meta)
    }

    /// The bucket for an object request: from the cache if seen within `BUCKET_CACHE_TTL_MS`.
    async fn bucket(&self, bucket: &str) -> S3Result<BucketMeta> {
        if let Some((seen, meta)) = self.buckets.lock().unwrap_or_else(|p| p.into_inner()).get(bucket)
            && seen.elapsed() < Duration::from_millis(BUCKET_CACHE_TTL_MS)
        {
            return Ok(meta.clone());
        }
        self.bucket_fresh(bucket).await
    }

    /// Removes every key's grant on a deleted bucket, so a bucket created later under the
    /// same name starts with no grants. Best effort: a failure is logged, and what is left
    /// can be removed with `hadss admin key deny`.
    async fn revoke_all_grants(&self, bucket: &str) {
        let keys = match self.node.key_request(KeyRequest::List).await {
            KeyResponse::Keys(keys) => keys,
            other => {
                tracing::warn!(%bucket, ?other, "listing keys to revoke a deleted bucket's grants failed");
                return;
            }
        };
        for key in keys.into_iter().filter(|k| k.buckets.iter().any(|(b, _)| b == bucket)) {
            let edit = KeyRequest::Edit {
                id: key.id.clone(),
                edit: KeyEdit {
                    bucket: Some(bucket.to_string()),
                    revoke: Permission::ALL,
                    ..Default::default()
                },
            };
            let reply = self.node.key_request(edit).await;
            self.keys.forget(&key.id);
            if let KeyResponse::Error(_) | KeyResponse::NoSuchKey = reply {
                tracing::warn!(%bucket, key = %key.id, ?reply, "revoking a deleted bucket's grant failed");
            }
        }
    }

    fn forget_bucket(&self, bucket: &str) {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).remove(bucket);
    }

    async fn object(&self, bucket: &str, key: &str) -> S3Result<ObjectMeta> {
        self.bucket(bucket).await?;
        match self
            .get_record(&objects_partition_key(bucket), &object_key(bucket, key))
            .await?
        {
            Some(v) => ObjectRecord::decode(&v).map_err(internal),
            None => Err(s3_error!(NoSuchKey)),
        }
    }

    /// Waits for one of the gateway's chunk-write slots.
    async fn chunk_write_slot(&self) -> S3Result<tokio::sync::OwnedSemaphorePermit> {
        self.chunk_writes
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| s3_error!(ServiceUnavailable, "the gateway is shutting down"))
    }

    /// Reads a body to its end, storing it inline or as chunks, each chunk with its
    /// reference by `holder`; returns size, MD5 hex and body.
    async fn store_body(
        &self,
        body: Option<StreamingBlob>,
        allow_inline: bool,
        checksums: &mut s3s::checksum::ChecksumHasher,
        holder: &ChunkHolder,
    ) -> S3Result<(u64, String, ObjectBody)> {
        let mut md5 = md5::Md5::new();
        let mut size_bytes = 0u64;
        let mut buffer: Vec<u8> = Vec::new();
        let mut chunks: Vec<ChunkRef> = Vec::new();
        // Each write runs as its own task, so it progresses (and frees its slot) while this
        // request waits for the next slot.
        let put = |node: Arc<Node>, data: Vec<u8>, slot: tokio::sync::OwnedSemaphorePermit| {
            let holder = holder.clone();
            let write = tokio::spawn(async move {
                let size = data.len() as u32;
                let r = match node.put_chunk(data).await {
                    Ok(id) => node.put_chunk_ref(&id, size, &holder).await,
                    Err(e) => Err(e),
                };
                drop(slot);
                r
            });
            async move { write.await.map_err(anyhow::Error::from)? }
        };
        let mut writes = futures::stream::FuturesOrdered::new();
        let mut stream = body;
        while let Some(s) = stream.as_mut() {
            let Some(piece) = s.next().await else { break };
            let piece = piece.map_err(|e| s3_error!(IncompleteBody, "reading the body: {e}"))?;
            size_bytes += piece.len() as u64;
            if size_bytes > OBJECT_SIZE_BYTES_MAX {
                return Err(s3_error!(EntityTooLarge));
            }
            md5.update(&piece);
            checksums.update(&piece);
            let mut rest: &[u8] = &piece;
            while !rest.is_empty() {
                let take = rest.len().min(CHUNK_SIZE_BYTES - buffer.len());
                buffer.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buffer.len() == CHUNK_SIZE_BYTES {
                    let data = std::mem::take(&mut buffer);
                    chunks.push(ChunkRef {
                        id: chunkstore::ChunkId::of(&data).0,
                        size_bytes: data.len() as u32,
                    });
                    let slot = self.chunk_write_slot().await?;
                    writes.push_back(put(self.node.clone(), data, slot));
                    // Bounded memory: wait for the oldest write when too many are in flight.
                    while writes.len() >= CHUNKS_IN_FLIGHT_MAX {
                        if let Some(r) = writes.next().await {
                            r.map_err(unavailable)?;
                        }
                    }
                }
            }
        }
        let etag = hex(&md5.finalize());
        if allow_inline && chunks.is_empty() && buffer.len() <= INLINE_SIZE_BYTES_MAX {
            return Ok((size_bytes, etag, ObjectBody::Inline(buffer)));
        }
        if !buffer.is_empty() {
            chunks.push(ChunkRef {
                id: chunkstore::ChunkId::of(&buffer).0,
                size_bytes: buffer.len() as u32,
            });
            let slot = self.chunk_write_slot().await?;
            writes.push_back(put(self.node.clone(), buffer, slot));
        }
        while let Some(r) = writes.next().await {
            r.map_err(unavailable)?;
        }
        Ok((size_bytes, etag, ObjectBody::Chunks(chunks)))
    }

    async fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> S3Result<UploadMeta> {
        self.bucket(bucket).await?;
        match self
            .get_record(&objects_partition_key(bucket), &upload_key(bucket, key, upload_id))
            .await?
        {
            Some(v) => UploadRecord::decode(&v).map_err(internal),
            None => Err(s3_error!(NoSuchUpload)),
        }
    }

    /// Writes a part record: the holder `store_body` wrote the part's chunk references for.
    async fn put_part(&self, holder: &ChunkHolder, size_bytes: u64, etag: &str, body: ObjectBody) -> S3Result<()> {
        let ObjectBody::Chunks(chunks) = body else {
            return Err(internal("a part was stored inline"));
        };
        let meta = PartMeta {
            size_bytes,
            etag: etag.to_string(),
            last_modified_ms: Self::now_ms(),
            chunks,
        };
        self.write_versioned(
            holder.holder_partition,
            holder.holder_key.clone(),
            RecordValue::Data(PartRecord::V1(meta).encode()),
            holder.holder_unique,
        )
        .await
    }

    /// Every stored part of an upload, by number.
    async fn parts(&self, bucket: &str, upload_id: &str) -> S3Result<std::collections::BTreeMap<u32, PartMeta>> {
        let partition = self.partition(&objects_partition_key(bucket))?;
        let prefix = part_prefix(bucket, upload_id);
        let mut parts = std::collections::BTreeMap::new();
        let mut after: Option<Vec<u8>> = None;
        // 10,000 parts at most: 11 pages of 1,000.
        for _ in 0..=(PART_NUMBER_MAX as usize / LIST_PAGE_RECORDS) {
            let (page, complete) = self
                .node
                .scan_records(partition, &prefix, after.as_deref(), LIST_PAGE_RECORDS)
                .await
                .map_err(unavailable)?;
            let empty = page.is_empty();
            for rec in page {
                after = Some(rec.key.clone());
                let RecordValue::Data(v) = &rec.value else { continue };
                let number = std::str::from_utf8(&rec.key[prefix.len()..])
                    .ok()
                    .and_then(|n| n.parse::<u32>().ok())
                    .ok_or_else(|| internal("bad part record key"))?;
                parts.insert(number, PartRecord::decode(v).map_err(internal)?);
            }
            if complete || empty {
                break;
            }
        }
        Ok(parts)
    }

    /// Tombstones an upload and its parts (their chunks stay for a completed object, or wait
    /// for garbage collection).
    async fn forget_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: impl Iterator<Item = u32>,
    ) -> S3Result<()> {
        let pk = objects_partition_key(bucket);
        for number in parts {
            self.put_record(&pk, part_key(bucket, upload_id, number), RecordValue::Tombstone)
                .await?;
        }
        self.put_record(&pk, upload_key(bucket, key, upload_id), RecordValue::Tombstone)
            .await
    }

    /// The bytes `range` of an object as a stream, chunks fetched ahead and verified.
    fn body_stream(&self, meta: &ObjectMeta, range: std::ops::Range<u64>) -> StreamingBlob {
        match &meta.body {
            ObjectBody::Inline(data) => {
                let bytes = Bytes::copy_from_slice(&data[range.start as usize..range.end as usize]);
                StreamingBlob::wrap(futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) }))
            }
            ObjectBody::Chunks(chunks) => {
                // (chunk, offset of its first byte in the object)
                let mut offset = 0u64;
                let mut wanted = Vec::new();
                for c in chunks {
                    let end = offset + u64::from(c.size_bytes);
                    if end > range.start && offset < range.end {
                        let from = range.start.saturating_sub(offset) as usize;
                        let to = (range.end.min(end) - offset) as usize;
                        wanted.push((*c, from, to));
                    }
                    offset = end;
                }
                let node = self.node.clone();
                let stream = futures::stream::iter(wanted)
                    .map(move |(c, from, to)| {
                        let node = node.clone();
                        async move {
                            let id = chunkstore::ChunkId(c.id);
                            match node.get_chunk(&id).await {
                                Ok(Some(data)) if data.len() == c.size_bytes as usize => {
                                    Ok(Bytes::from(data).slice(from..to))
                                }
                                Ok(_) => Err(std::io::Error::other(format!("chunk {id} is missing"))),
                                Err(e) => Err(std::io::Error::other(format!("chunk {id}: {e}"))),
                            }
                        }
                    })
                    .buffered(CHUNKS_PREFETCH + 1);
                StreamingBlob::wrap(stream)
            }
        }
    }

    /// One listing page: objects and common prefixes after `after` (an object key).
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max_keys: usize,
    ) -> S3Result<Listing> {
        self.bucket(bucket).await?;
        let partition = self.partition(&objects_partition_key(bucket))?;
        let base = object_prefix(bucket);
        let mut scan_prefix = base.clone();
        scan_prefix.extend_from_slice(prefix.as_bytes());
        let mut cursor: Option<Vec<u8>> = after.map(|a| object_key(bucket, a));
        let mut out = Listing::default();
        let delimiter = delimiter.filter(|d| !d.is_empty());
        for _ in 0..LIST_PAGES_MAX {
            let (page, complete) = self
                .node
                .scan_records(partition, &scan_prefix, cursor.as_deref(), LIST_PAGE_RECORDS)
                .await
                .map_err(unavailable)?;
            let page_len = page.len();
            let mut jumped = false;
            for rec in page {
                cursor = Some(rec.key.clone());
                let RecordValue::Data(value) = &rec.value else { continue };
                let Ok(key) = std::str::from_utf8(&rec.key[base.len()..]) else {
                    continue;
                };
                if let Some(d) = delimiter
                    && let Some(i) = key[prefix.len()..].find(d)
                {
                    let common = &key[..prefix.len() + i + d.len()];
                    // Skip every key under this common prefix: keys are UTF-8, never 0xFF.
                    let mut skip = object_key(bucket, common);
                    skip.push(0xff);
                    cursor = Some(skip);
                    jumped = true;
                    // A prefix at or before the marker was returned on an earlier page.
                    if after.is_some_and(|a| common <= a) {
                        break;
                    }
                    if out.len() >= max_keys {
                        out.truncated = true;
                        return Ok(out);
                    }
                    out.common_prefixes.push(common.to_string());
                    out.last = Some(common.to_string());
                    break;
                }
                if out.len() >= max_keys {
                    out.truncated = true;
                    return Ok(out);
                }
                let meta = ObjectRecord::decode(value).map_err(internal)?;
                out.last = Some(key.to_string());
                out.objects.push((key.to_string(), meta));
            }
            if !jumped && (complete || page_len == 0) {
                return Ok(out);
            }
        }
        // Too many tombstones or skipped keys for one request: return what we have.
        out.truncated = true;
        Ok(out)
    }

    fn to_object(key: &str, meta: &ObjectMeta, encoding: Option<&EncodingType>) -> Object {
        Object {
            key: Some(encode_key(key, encoding)),
            size: Some(meta.size_bytes as i64),
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            last_modified: Some(timestamp(meta.last_modified_ms)),
            storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
            ..Default::default()
        }
    }
}

#[derive(Default)]
struct Listing {
    objects: Vec<(String, ObjectMeta)>,
    common_prefixes: Vec<String>,
    truncated: bool,
    /// The last key or common prefix returned (the next marker).
    last: Option<String>,
}

impl Listing {
    fn len(&self) -> usize {
        self.objects.len() + self.common_prefixes.len()
    }
}

/// What S3 leaves unescaped in `encoding-type=url` listings: unreserved characters and `/`.
const URL_KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Applies the listing's `encoding-type` to a key or prefix.
fn encode_key(s: &str, encoding: Option<&EncodingType>) -> String {
    match encoding {
        Some(e) if e.as_str() == EncodingType::URL => percent_encoding::utf8_percent_encode(s, URL_KEEP).to_string(),
        _ => s.to_string(),
    }
}

fn common_prefix(prefix: &str, encoding: Option<&EncodingType>) -> CommonPrefix {
    CommonPrefix {
        prefix: Some(encode_key(prefix, encoding)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex_bytes(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn unhex(s: &str) -> Option<String> {
    String::from_utf8(unhex_bytes(s)?).ok()
}

fn part_number(n: i32) -> S3Result<u32> {
    match u32::try_from(n) {
        Ok(n) if (1..=PART_NUMBER_MAX).contains(&n) => Ok(n),
        _ => Err(s3_error!(InvalidArgument, "part numbers run from 1 to 10000")),
    }
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

fn system_time(t: &Timestamp) -> Option<SystemTime> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::EpochSeconds, &mut buf).ok()?;
    let secs: f64 = std::str::from_utf8(&buf).ok()?.parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0)))
}

fn unavailable(e: anyhow::Error) -> S3Error {
    tracing::warn!(error = %e, "cluster request failed");
    s3_error!(
        ServiceUnavailable,
        "the storage cluster could not serve the request: {e}"
    )
}

fn internal(e: impl std::fmt::Display) -> S3Error {
    tracing::error!(error = %e, "internal error");
    s3_error!(InternalError, "{e}")
}

fn etag_matches(condition: &ETagCondition, etag: &str) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(ETag::Strong(v) | ETag::Weak(v)) => v == etag,
    }
}

/// Evaluates If-Match / If-None-Match / If-Modified-Since / If-Unmodified-Since (RFC 9110
/// order: If-Match, then If-Unmodified-Since only without If-Match, then If-None-Match, then
/// If-Modified-Since only without If-None-Match).
fn check_conditions(
    meta: &ObjectMeta,
    if_match: Option<&ETagCondition>,
    if_unmodified_since: Option<&Timestamp>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
) -> S3Result<()> {
    // HTTP dates have second resolution.
    let modified_s = meta.last_modified_ms / 1000;
    let secs = |t: &Timestamp| {
        system_time(t)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    };
    if let Some(c) = if_match {
        if !etag_matches(c, &meta.etag) {
            return Err(s3_error!(PreconditionFailed));
        }
    } else if let Some(t) = if_unmodified_since.and_then(secs)
        && modified_s > t
    {
        return Err(s3_error!(PreconditionFailed));
    }
    if let Some(c) = if_none_match {
        if etag_matches(c, &meta.etag) {
            return Err(s3_error!(NotModified));
        }
    } else if let Some(t) = if_modified_since.and_then(secs)
        && modified_s <= t
    {
        return Err(s3_error!(NotModified));
    }
    Ok(())
}

fn stored_headers(
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
) -> StoredHeaders {
    StoredHeaders {
        content_type,
        content_encoding,
        content_disposition,
        content_language,
        cache_control,
    }
}

fn user_metadata(metadata: Option<Metadata>) -> S3Result<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    pairs.sort();
    let size: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > USER_METADATA_SIZE_BYTES_MAX {
        return Err(s3_error!(MetadataTooLarge));
    }
    Ok(pairs)
}

fn metadata_map(pairs: &[(String, String)]) -> Option<Metadata> {
    (!pairs.is_empty()).then(|| pairs.iter().cloned().collect())
}

#[async_trait::async_trait]
impl S3 for HadssS3 {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let caller = caller(&req)?;
        let partition = self.partition(BUCKETS_PARTITION_KEY)?;
        let mut buckets = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        for _ in 0..LIST_PAGES_MAX {
            let (page, complete) = self
                .node
                .scan_records(partition, BUCKET_PREFIX, after.as_deref(), LIST_PAGE_RECORDS)
                .await
                .map_err(unavailable)?;
            let empty = page.is_empty();
            for rec in page {
                after = Some(rec.key.clone());
                let RecordValue::Data(v) = &rec.value else { continue };
                let meta = BucketRecord::decode(v).map_err(internal)?;
                let name = String::from_utf8_lossy(&rec.key[BUCKET_PREFIX.len()..]).into_owned();
                if !caller.allows(Action::See(&name)) {
                    continue;
                }
                buckets.push(Bucket {
                    name: Some(name),
                    creation_date: Some(timestamp(meta.created_ms)),
                    bucket_region: None,
                });
            }
            if complete || empty {
                break;
            }
        }
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some("hadss".into()),
                id: Some("hadss".into()),
            }),
            ..Default::default()
        }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let caller = caller(&req)?;
        let bucket = req.input.bucket;
        if !valid_bucket_name(&bucket) {
            return Err(s3_error!(InvalidBucketName));
        }
        let owner = req.credentials.map(|c| c.access_key).unwrap_or_default();
        match self.bucket_fresh(&bucket).await {
            Ok(_) if caller.allows(Action::See(&bucket)) => return Err(s3_error!(BucketAlreadyOwnedByYou)),
            Ok(_) => return Err(s3_error!(BucketAlreadyExists)),
            Err(e) if *e.code() == s3s::S3ErrorCode::NoSuchBucket => {}
            Err(e) => return Err(e),
        }
        let meta = BucketMeta {
            created_ms: Self::now_ms(),
            owner,
        };
        self.put_record(
            BUCKETS_PARTITION_KEY,
            bucket_key(&bucket),
            RecordValue::Data(BucketRecord::V1(meta).encode()),
        )
        .await?;
        if let Some(id) = caller.key_id() {
            // The creating key owns the bucket; without that grant the bucket is unusable to
            // it, so a failed grant undoes the creation.
            let edit = KeyRequest::Edit {
                id: id.to_string(),
                edit: KeyEdit {
                    bucket: Some(bucket.clone()),
                    grant: Permission::ALL,
                    ..Default::default()
                },
            };
            let reply = self.node.key_request(edit).await;
            self.keys.forget(id);
            if let KeyResponse::Error(_) | KeyResponse::NoSuchKey = reply {
                tracing::warn!(%bucket, key = %id, ?reply, "granting the new bucket to its creator failed");
                self.put_record(BUCKETS_PARTITION_KEY, bucket_key(&bucket), RecordValue::Tombstone)
                    .await?;
                self.forget_bucket(&bucket);
                return Err(s3_error!(
                    ServiceUnavailable,
                    "the bucket could not be granted to its creator; retry"
                ));
            }
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.bucket_fresh(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.region.clone()),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: Some(BucketLocationConstraint::from(self.region.clone())),
        }))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        let listing = self.list(&bucket, "", None, None, 1).await?;
        if listing.len() > 0 || listing.truncated {
            return Err(s3_error!(BucketNotEmpty));
        }
        self.forget_bucket(&bucket);
        self.put_record(BUCKETS_PARTITION_KEY, bucket_key(&bucket), RecordValue::Tombstone)
            .await?;
        self.forget_bucket(&bucket);
        self.revoke_all_grants(&bucket).await;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let S3Request {
            input,
            headers,
            trailing_headers,
            ..
        } = req;
        let expected = super::checksum::Expected::from_request(
            &headers,
            given_checksums!(input),
            input.content_md5.clone(),
            input.checksum_algorithm.clone(),
        );
        self.bucket(&input.bucket).await?;
        if input
            .content_length
            .is_some_and(|l| l < 0 || l as u64 > OBJECT_SIZE_BYTES_MAX)
        {
            return Err(s3_error!(EntityTooLarge));
        }
        let user_metadata = user_metadata(input.metadata)?;
        let create_only = matches!(input.if_none_match, Some(ETagCondition::Any));
        if create_only {
            // Fail fast before the body is read; the race-safe check comes before the record
            // is written (`write_object_record`).
            match self.object(&input.bucket, &input.key).await {
                Ok(_) => return Err(s3_error!(PreconditionFailed)),
                Err(e) if *e.code() == s3s::S3ErrorCode::NoSuchKey => {}
                Err(e) => return Err(e),
            }
        }
        let mut hasher = expected.hasher();
        let unique: [u8; 16] = rand::random();
        let holder = self.holder(
            &objects_partition_key(&input.bucket),
            &object_key(&input.bucket, &input.key),
            unique,
        )?;
        let (size_bytes, etag, body) = self.store_body(input.body, true, &mut hasher, &holder).await?;
        let md5 = unhex_bytes(&etag).unwrap_or_default();
        let checksums = expected.verify(hasher.finalize(), &md5, trailing_headers.and_then(|t| t.take()))?;
        if input.content_length.is_some_and(|l| l as u64 != size_bytes) {
            return Err(s3_error!(IncompleteBody));
        }
        let meta = ObjectMeta {
            size_bytes,
            etag: etag.clone(),
            last_modified_ms: Self::now_ms(),
            headers: stored_headers(
                input.content_type,
                input.content_encoding,
                input.content_disposition,
                input.content_language,
                input.cache_control,
            ),
            user_metadata,
            body,
        };
        self.write_object_record(
            &input.bucket,
            &input.key,
            ObjectRecord::V1(meta).encode(),
            create_only,
            unique,
        )
        .await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            checksum_crc32: checksums.checksum_crc32,
            checksum_crc32c: checksums.checksum_crc32c,
            checksum_crc64nvme: checksums.checksum_crc64nvme,
            checksum_sha1: checksums.checksum_sha1,
            checksum_sha256: checksums.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let meta = self.object(&input.bucket, &input.key).await?;
        check_conditions(
            &meta,
            input.if_match.as_ref(),
            input.if_unmodified_since.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
        )?;
        let full = 0..meta.size_bytes;
        let (range, content_range) = match input.range {
            Some(r) => {
                let range = r.check(meta.size_bytes).map_err(|_| s3_error!(InvalidRange))?;
                let cr = format!("bytes {}-{}/{}", range.start, range.end - 1, meta.size_bytes);
                (range, Some(cr))
            }
            None => (full, None),
        };
        let body = self.body_stream(&meta, range.clone());
        let h = meta.headers.clone();
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some((range.end - range.start) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            last_modified: Some(timestamp(meta.last_modified_ms)),
            content_type: input.response_content_type.or(h.content_type),
            content_encoding: input.response_content_encoding.or(h.content_encoding),
            content_disposition: input.response_content_disposition.or(h.content_disposition),
            content_language: input.response_content_language.or(h.content_language),
            cache_control: input.response_cache_control.or(h.cache_control),
            metadata: metadata_map(&meta.user_metadata),
            ..Default::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let meta = self.object(&input.bucket, &input.key).await?;
        check_conditions(
            &meta,
            input.if_match.as_ref(),
            input.if_unmodified_since.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
        )?;
        let h = meta.headers.clone();
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(meta.size_bytes as i64),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            last_modified: Some(timestamp(meta.last_modified_ms)),
            content_type: h.content_type,
            content_encoding: h.content_encoding,
            content_disposition: h.content_disposition,
            content_language: h.content_language,
            cache_control: h.cache_control,
            metadata: metadata_map(&meta.user_metadata),
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.bucket(&input.bucket).await?;
        // Deleting a missing key succeeds (S3 semantics); the tombstone keeps a late,
        // older write from resurrecting it.
        self.put_record(
            &objects_partition_key(&input.bucket),
            object_key(&input.bucket, &input.key),
            RecordValue::Tombstone,
        )
        .await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.bucket(&input.bucket).await?;
        if input.delete.objects.len() > DELETE_OBJECTS_MAX {
            return Err(s3_error!(MalformedXML, "at most 1000 keys per request"));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let bucket = input.bucket.clone();
        let results: Vec<(String, S3Result<()>)> = futures::stream::iter(input.delete.objects)
            .map(|o| {
                let bucket = bucket.clone();
                async move {
                    let r = self
                        .put_record(
                            &objects_partition_key(&bucket),
                            object_key(&bucket, &o.key),
                            RecordValue::Tombstone,
                        )
                        .await;
                    (o.key, r)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for (key, r) in results {
            match r {
                Ok(()) if !quiet => deleted.push(DeletedObject {
                    key: Some(key),
                    ..Default::default()
                }),
                Ok(()) => {}
                Err(e) => errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(key),
                    message: e.message().map(str::to_string),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &input.copy_source
        else {
            return Err(s3_error!(NotImplemented, "copy from an access point"));
        };
        let src = self.object(src_bucket, src_key).await?;
        self.bucket(&input.bucket).await?;
        if let Some(c) = &input.copy_source_if_match
            && !etag_matches(c, &src.etag)
        {
            return Err(s3_error!(PreconditionFailed));
        }
        if let Some(c) = &input.copy_source_if_none_match
            && etag_matches(c, &src.etag)
        {
            return Err(s3_error!(PreconditionFailed));
        }
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && input.bucket == **src_bucket && input.key == **src_key {
            return Err(s3_error!(
                InvalidRequest,
                "copying an object onto itself needs the REPLACE metadata directive"
            ));
        }
        let mut meta = src;
        if replace {
            meta.headers = stored_headers(
                input.content_type,
                input.content_encoding,
                input.content_disposition,
                input.content_language,
                input.cache_control,
            );
            meta.user_metadata = user_metadata(input.metadata)?;
        }
        // Chunks are content-addressed and shared: the copy is a new record naming them.
        meta.last_modified_ms = Self::now_ms();
        let etag = meta.etag.clone();
        let last_modified = meta.last_modified_ms;
        let unique: [u8; 16] = rand::random();
        let (pk, key) = (
            objects_partition_key(&input.bucket),
            object_key(&input.bucket, &input.key),
        );
        if let ObjectBody::Chunks(chunks) = &meta.body {
            self.add_refs(chunks, &self.holder(&pk, &key, unique)?).await?;
        }
        self.put_record_with(&pk, key, RecordValue::Data(ObjectRecord::V1(meta).encode()), unique)
            .await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(etag)),
                last_modified: Some(timestamp(last_modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let prefix = input.prefix.clone().unwrap_or_default();
        let listing = self
            .list(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                input.marker.as_deref(),
                max_keys,
            )
            .await?;
        let next_marker = (listing.truncated && input.delimiter.is_some())
            .then(|| listing.last.clone())
            .flatten();
        let enc = input.encoding_type.as_ref();
        let code = |s: &str| encode_key(s, enc);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket.clone()),
            prefix: Some(code(&prefix)),
            marker: input.marker.as_deref().map(code),
            max_keys: Some(max_keys as i32),
            delimiter: input.delimiter.as_deref().map(code),
            is_truncated: Some(listing.truncated),
            next_marker: next_marker.as_deref().map(code),
            contents: Some(
                listing
                    .objects
                    .iter()
                    .map(|(k, m)| Self::to_object(k, m, enc))
                    .collect(),
            ),
            common_prefixes: Some(listing.common_prefixes.iter().map(|p| common_prefix(p, enc)).collect()),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = match &input.continuation_token {
            Some(t) => Some(unhex(t).ok_or_else(|| s3_error!(InvalidArgument, "bad continuation token"))?),
            None => input.start_after.clone(),
        };
        let listing = self
            .list(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                after.as_deref(),
                max_keys,
            )
            .await?;
        let next = listing
            .truncated
            .then(|| listing.last.as_deref().map(|l| hex(l.as_bytes())))
            .flatten();
        let enc = input.encoding_type.as_ref();
        let code = |s: &str| encode_key(s, enc);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket.clone()),
            prefix: Some(code(&prefix)),
            max_keys: Some(max_keys as i32),
            key_count: Some(listing.len() as i32),
            delimiter: input.delimiter.as_deref().map(code),
            is_truncated: Some(listing.truncated),
            continuation_token: input.continuation_token.clone(),
            next_continuation_token: next,
            start_after: input.start_after.as_deref().map(code),
            contents: Some(
                listing
                    .objects
                    .iter()
                    .map(|(k, m)| Self::to_object(k, m, enc))
                    .collect(),
            ),
            common_prefixes: Some(listing.common_prefixes.iter().map(|p| common_prefix(p, enc)).collect()),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        self.bucket(&input.bucket).await?;
        let upload_id = hex(&rand::random::<[u8; 16]>());
        let meta = UploadMeta {
            initiated_ms: Self::now_ms(),
            headers: stored_headers(
                input.content_type,
                input.content_encoding,
                input.content_disposition,
                input.content_language,
                input.cache_control,
            ),
            user_metadata: user_metadata(input.metadata)?,
        };
        self.put_record(
            &objects_partition_key(&input.bucket),
            upload_key(&input.bucket, &input.key, &upload_id),
            RecordValue::Data(UploadRecord::V1(meta).encode()),
        )
        .await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let S3Request {
            input,
            headers,
            trailing_headers,
            ..
        } = req;
        let part_number = part_number(input.part_number)?;
        self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let expected = super::checksum::Expected::from_request(
            &headers,
            given_checksums!(input),
            input.content_md5.clone(),
            input.checksum_algorithm.clone(),
        );
        let mut hasher = expected.hasher();
        let unique: [u8; 16] = rand::random();
        let holder = self.holder(
            &objects_partition_key(&input.bucket),
            &part_key(&input.bucket, &input.upload_id, part_number),
            unique,
        )?;
        let (size_bytes, etag, body) = self.store_body(input.body, false, &mut hasher, &holder).await?;
        let md5 = unhex_bytes(&etag).unwrap_or_default();
        let checksums = expected.verify(hasher.finalize(), &md5, trailing_headers.and_then(|t| t.take()))?;
        if input.content_length.is_some_and(|l| l as u64 != size_bytes) {
            return Err(s3_error!(IncompleteBody));
        }
        self.put_part(&holder, size_bytes, &etag, body).await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            checksum_crc32: checksums.checksum_crc32,
            checksum_crc32c: checksums.checksum_crc32c,
            checksum_crc64nvme: checksums.checksum_crc64nvme,
            checksum_sha1: checksums.checksum_sha1,
            checksum_sha256: checksums.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        let part_number = part_number(input.part_number)?;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &input.copy_source
        else {
            return Err(s3_error!(NotImplemented, "copy from an access point"));
        };
        self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let src = self.object(src_bucket, src_key).await?;
        if let Some(c) = &input.copy_source_if_match
            && !etag_matches(c, &src.etag)
        {
            return Err(s3_error!(PreconditionFailed));
        }
        let range = match &input.copy_source_range {
            Some(r) => {
                let parsed = r
                    .strip_prefix("bytes=")
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                    .ok_or_else(|| s3_error!(InvalidArgument, "x-amz-copy-source-range must be bytes=first-last"))?;
                if parsed.0 > parsed.1 || parsed.1 >= src.size_bytes {
                    return Err(s3_error!(InvalidRange));
                }
                parsed.0..parsed.1 + 1
            }
            None => 0..src.size_bytes,
        };
        let stream = self.body_stream(&src, range);
        let unique: [u8; 16] = rand::random();
        let holder = self.holder(
            &objects_partition_key(&input.bucket),
            &part_key(&input.bucket, &input.upload_id, part_number),
            unique,
        )?;
        let (size_bytes, etag, body) = self
            .store_body(
                Some(stream),
                false,
                &mut s3s::checksum::ChecksumHasher::default(),
                &holder,
            )
            .await?;
        self.put_part(&holder, size_bytes, &etag, body).await?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(etag)),
                last_modified: Some(timestamp(Self::now_ms())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let upload = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let wanted = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        if wanted.is_empty() {
            return Err(s3_error!(MalformedXML, "no parts listed"));
        }
        let stored = self.parts(&input.bucket, &input.upload_id).await?;
        let mut chunks = Vec::new();
        let mut size_bytes = 0u64;
        let mut md5s = md5::Md5::new();
        let numbers = wanted
            .iter()
            .map(|p| part_number(p.part_number.unwrap_or(0)))
            .collect::<S3Result<Vec<u32>>>()?;
        if numbers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(s3_error!(InvalidPartOrder));
        }
        for (i, (p, &number)) in wanted.iter().zip(&numbers).enumerate() {
            let Some(part) = stored.get(&number) else {
                return Err(s3_error!(InvalidPart, "part {number} was not uploaded"));
            };
            let etag_ok = match &p.e_tag {
                Some(ETag::Strong(e) | ETag::Weak(e)) => e.trim_matches('"') == part.etag,
                None => true,
            };
            if !etag_ok {
                return Err(s3_error!(InvalidPart, "part {number}: ETag does not match"));
            }
            if i + 1 < wanted.len() && part.size_bytes < PART_SIZE_BYTES_MIN {
                return Err(s3_error!(EntityTooSmall, "part {number} is smaller than 5 MiB"));
            }
            size_bytes += part.size_bytes;
            chunks.extend_from_slice(&part.chunks);
            md5s.update(unhex_bytes(&part.etag).ok_or_else(|| internal("stored part ETag is not hex"))?);
        }
        let etag = format!("{}-{}", hex(&md5s.finalize()), wanted.len());
        let meta = ObjectMeta {
            size_bytes,
            etag: etag.clone(),
            last_modified_ms: Self::now_ms(),
            headers: upload.headers,
            user_metadata: upload.user_metadata,
            body: ObjectBody::Chunks(chunks),
        };
        let value = ObjectRecord::V1(meta).encode();
        if value.len() > crate::storage::records::RECORD_VALUE_SIZE_BYTES_MAX {
            return Err(s3_error!(EntityTooLarge, "too many chunks for one object record"));
        }
        let create_only = matches!(input.if_none_match, Some(ETagCondition::Any));
        // The object holds its chunks from now on (the parts' references die with them).
        let unique: [u8; 16] = rand::random();
        let holder = self.holder(
            &objects_partition_key(&input.bucket),
            &object_key(&input.bucket, &input.key),
            unique,
        )?;
        let chunk_refs: Vec<ChunkRef> = ObjectRecord::decode(&value).map_err(internal).map(|m| match m.body {
            ObjectBody::Chunks(c) => c,
            ObjectBody::Inline(_) => Vec::new(),
        })?;
        self.add_refs(&chunk_refs, &holder).await?;
        self.write_object_record(&input.bucket, &input.key, value, create_only, unique)
            .await?;
        self.forget_upload(&input.bucket, &input.key, &input.upload_id, stored.keys().copied())
            .await?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(ETag::Strong(etag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let stored = self.parts(&input.bucket, &input.upload_id).await?;
        self.forget_upload(&input.bucket, &input.key, &input.upload_id, stored.keys().copied())
            .await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let max_parts = input.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
        let marker = input.part_number_marker.unwrap_or(0).max(0) as u32;
        let stored = self.parts(&input.bucket, &input.upload_id).await?;
        let mut listed: Vec<Part> = Vec::new();
        let mut truncated = false;
        for (number, part) in stored.range(marker + 1..) {
            if listed.len() >= max_parts {
                truncated = true;
                break;
            }
            listed.push(Part {
                part_number: Some(*number as i32),
                e_tag: Some(ETag::Strong(part.etag.clone())),
                size: Some(part.size_bytes as i64),
                last_modified: Some(timestamp(part.last_modified_ms)),
                ..Default::default()
            });
        }
        let next = listed.last().and_then(|p| p.part_number);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max_parts as i32),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: if truncated { next } else { None },
            is_truncated: Some(truncated),
            parts: Some(listed),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.bucket(&input.bucket).await?;
        let max_uploads = input.max_uploads.unwrap_or(1000).clamp(1, 1000) as usize;
        let prefix = input.prefix.clone().unwrap_or_default();
        let partition = self.partition(&objects_partition_key(&input.bucket))?;
        let base = upload_prefix(&input.bucket);
        let mut scan_prefix = base.clone();
        scan_prefix.extend_from_slice(prefix.as_bytes());
        let mut after = match (&input.key_marker, &input.upload_id_marker) {
            (Some(k), Some(u)) => Some(upload_key(&input.bucket, k, u)),
            // Past every upload of the marker key (upload ids are hex, below 0x7f).
            (Some(k), None) => Some(upload_key(&input.bucket, k, &char::from(0x7f).to_string())),
            _ => None,
        };
        let mut uploads = Vec::new();
        let mut truncated = false;
        'pages: for _ in 0..LIST_PAGES_MAX {
            let (page, complete) = self
                .node
                .scan_records(partition, &scan_prefix, after.as_deref(), LIST_PAGE_RECORDS)
                .await
                .map_err(unavailable)?;
            let empty = page.is_empty();
            for rec in page {
                after = Some(rec.key.clone());
                let RecordValue::Data(v) = &rec.value else { continue };
                let meta = UploadRecord::decode(v).map_err(internal)?;
                let Some((key, id)) = std::str::from_utf8(&rec.key[base.len()..])
                    .ok()
                    .and_then(|s| s.split_once(char::from(0)))
                else {
                    continue;
                };
                if uploads.len() >= max_uploads {
                    truncated = true;
                    break 'pages;
                }
                uploads.push(MultipartUpload {
                    key: Some(key.to_string()),
                    upload_id: Some(id.to_string()),
                    initiated: Some(timestamp(meta.initiated_ms)),
                    ..Default::default()
                });
            }
            if complete || empty {
                break;
            }
        }
        let last = uploads.last().map(|u| (u.key.clone(), u.upload_id.clone()));
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max_uploads as i32),
            is_truncated: Some(truncated),
            next_key_marker: if truncated {
                last.clone().and_then(|l| l.0)
            } else {
                None
            },
            next_upload_id_marker: if truncated { last.and_then(|l| l.1) } else { None },
            uploads: Some(uploads),
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        // Unversioned buckets: every object is its one `null` version.
        let input = req.input;
        let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let prefix = input.prefix.clone().unwrap_or_default();
        let listing = self
            .list(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                input.key_marker.as_deref(),
                max_keys,
            )
            .await?;
        let enc = input.encoding_type.as_ref();
        let code = |s: &str| encode_key(s, enc);
        let versions = listing
            .objects
            .iter()
            .map(|(k, m)| ObjectVersion {
                key: Some(code(k)),
                version_id: Some("null".into()),
                is_latest: Some(true),
                size: Some(m.size_bytes as i64),
                e_tag: Some(ETag::Strong(m.etag.clone())),
                last_modified: Some(timestamp(m.last_modified_ms)),
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket.clone()),
            prefix: Some(code(&prefix)),
            key_marker: input.key_marker.as_deref().map(code),
            max_keys: Some(max_keys as i32),
            delimiter: input.delimiter.as_deref().map(code),
            is_truncated: Some(listing.truncated),
            next_key_marker: if listing.truncated {
                listing.last.as_deref().map(code)
            } else {
                None
            },
            next_version_id_marker: listing.truncated.then(|| "null".to_string()),
            versions: Some(versions),
            common_prefixes: Some(listing.common_prefixes.iter().map(|p| common_prefix(p, enc)).collect()),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.bucket(&req.input.bucket).await?;
        // Buckets are unversioned: no status element at all.
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }
}
