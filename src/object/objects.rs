//! Objects: put (staged, then committed, so a front end can verify checksums in between),
//! create-only writes, get/head with conditions, delete, copy.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::body::ObjectStream;
use super::body::StoredBody;
use super::error::{ObjectError, ObjectResult};
use super::layout::{
    OBJECT_SIZE_BYTES_MAX, ObjectBody, ObjectMeta, ObjectRecord, StoredHeaders, USER_METADATA_SIZE_BYTES_MAX,
    object_key, objects_partition_key,
};
use super::store::ObjectStore;
use crate::node::CreateRefusal;
use crate::storage::records::RecordValue;

/// Times a create-only write retries a reservation held by another creator.
const CREATE_RETRIES_MAX: usize = 5;
/// Longest pause before such a retry (each is random below it).
const CREATE_RETRY_DELAY_MS_MAX: u64 = 40;
/// Deletes in flight for one `delete_objects`.
const DELETES_IN_FLIGHT_MAX: usize = 16;
/// Keys one `delete_objects` takes (S3's limit).
pub const DELETE_OBJECTS_MAX: usize = 1000;

/// How a new object is to be written.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Content headers kept with it.
    pub headers: StoredHeaders,
    /// User metadata (names are lower-cased and sorted; at most
    /// `USER_METADATA_SIZE_BYTES_MAX` bytes in all).
    pub user_metadata: Vec<(String, String)>,
    /// Only if no live object has the key (`If-None-Match: *`), race-safe.
    pub create_only: bool,
    /// The body's declared length, if any: a body of another length is refused.
    pub content_length: Option<u64>,
}

/// What a write stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Bytes.
    pub size_bytes: u64,
    /// The ETag (hex MD5 of a single-part body).
    pub etag: String,
    /// When, ms since the Unix epoch.
    pub last_modified_ms: u64,
}

/// A body stored as chunks (or held inline) whose object record is not written yet: a
/// front end checks what it must (checksums) before `commit_put`. Dropping it leaves the
/// chunks to garbage collection.
#[derive(Debug)]
pub struct StagedPut {
    bucket: String,
    key: String,
    unique: [u8; 16],
    options: PutOptions,
    size_bytes: u64,
    md5: [u8; 16],
    body: ObjectBody,
}

impl StagedPut {
    /// The body's size.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The body's MD5.
    pub fn md5(&self) -> [u8; 16] {
        self.md5
    }
}

/// An ETag condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtagMatch {
    /// `*`: any existing object.
    Any,
    /// This ETag (without quotes).
    Etag(String),
}

impl EtagMatch {
    fn matches(&self, etag: &str) -> bool {
        match self {
            EtagMatch::Any => true,
            EtagMatch::Etag(e) => e == etag,
        }
    }
}

/// Read preconditions, evaluated in RFC 9110's order: `If-Match`, then
/// `If-Unmodified-Since` only without it, then `If-None-Match`, then `If-Modified-Since`
/// only without it. Times have second resolution, as HTTP dates do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// The object's ETag must match.
    pub if_match: Option<EtagMatch>,
    /// The object must not have changed after this (s since the Unix epoch).
    pub if_unmodified_since_s: Option<u64>,
    /// The object's ETag must not match (else `NotModified`).
    pub if_none_match: Option<EtagMatch>,
    /// The object must have changed after this (else `NotModified`).
    pub if_modified_since_s: Option<u64>,
}

impl Conditions {
    /// Whether `meta` satisfies them: `PreconditionFailed` or `NotModified` if not.
    pub fn check(&self, meta: &ObjectMeta) -> ObjectResult<()> {
        let modified_s = meta.last_modified_ms / 1000;
        if let Some(c) = &self.if_match {
            if !c.matches(&meta.etag) {
                return Err(ObjectError::PreconditionFailed);
            }
        } else if let Some(t) = self.if_unmodified_since_s
            && modified_s > t
        {
            return Err(ObjectError::PreconditionFailed);
        }
        if let Some(c) = &self.if_none_match {
            if c.matches(&meta.etag) {
                return Err(ObjectError::NotModified);
            }
        } else if let Some(t) = self.if_modified_since_s
            && modified_s <= t
        {
            return Err(ObjectError::NotModified);
        }
        Ok(())
    }
}

/// User metadata as stored: names lower-cased, sorted, within the size limit.
pub(super) fn checked_metadata(pairs: Vec<(String, String)>) -> ObjectResult<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    pairs.sort();
    let size: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > USER_METADATA_SIZE_BYTES_MAX {
        return Err(ObjectError::MetadataTooLarge);
    }
    Ok(pairs)
}

/// Hex of bytes, lower case.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ObjectStore {
    /// An object's metadata (quorum read), or `NoSuchBucket` / `NoSuchKey`.
    pub async fn object(&self, bucket: &str, key: &str) -> ObjectResult<ObjectMeta> {
        self.bucket(bucket).await?;
        match self
            .get_record(&objects_partition_key(bucket), &object_key(bucket, key))
            .await?
        {
            Some(v) => Ok(ObjectRecord::decode(&v)?),
            None => Err(ObjectError::NoSuchKey),
        }
    }

    /// An object's metadata if `conditions` hold.
    pub async fn head_object(&self, bucket: &str, key: &str, conditions: &Conditions) -> ObjectResult<ObjectMeta> {
        let meta = self.object(bucket, key).await?;
        conditions.check(&meta)?;
        Ok(meta)
    }

    /// An object's metadata and the bytes of `range` (the whole object if `None`; a range
    /// must lie within the object, else `InvalidRange`) if `conditions` hold.
    pub async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        conditions: &Conditions,
        range: Option<std::ops::Range<u64>>,
    ) -> ObjectResult<(ObjectMeta, ObjectStream)> {
        let meta = self.head_object(bucket, key, conditions).await?;
        let range = range.unwrap_or(0..meta.size_bytes);
        if range.start > range.end || range.end > meta.size_bytes {
            return Err(ObjectError::InvalidRange);
        }
        let body = self.body_stream(&meta, range);
        Ok((meta, body))
    }

    /// Stores a body for `bucket`/`key` (chunks on W replicas with their references)
    /// without writing the object record: `commit_put` does, once the caller is content.
    pub async fn stage_put<S, E>(
        &self,
        bucket: &str,
        key: &str,
        mut options: PutOptions,
        body: S,
    ) -> ObjectResult<StagedPut>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        self.bucket(bucket).await?;
        if options.content_length.is_some_and(|l| l > OBJECT_SIZE_BYTES_MAX) {
            return Err(ObjectError::EntityTooLarge(format!(
                "a single PUT stores at most {OBJECT_SIZE_BYTES_MAX} bytes"
            )));
        }
        options.user_metadata = checked_metadata(std::mem::take(&mut options.user_metadata))?;
        if options.create_only {
            // Fail fast before the body is read; the race-safe check comes before the record
            // is written (`write_object_record`).
            match self.object(bucket, key).await {
                Ok(_) => return Err(ObjectError::PreconditionFailed),
                Err(ObjectError::NoSuchKey) => {}
                Err(e) => return Err(e),
            }
        }
        let unique: [u8; 16] = rand::random();
        let holder = self.holder(&objects_partition_key(bucket), &object_key(bucket, key), unique)?;
        let StoredBody { size_bytes, md5, body } = self.store_body(body, true, OBJECT_SIZE_BYTES_MAX, &holder).await?;
        if options.content_length.is_some_and(|l| l != size_bytes) {
            return Err(ObjectError::IncompleteBody(format!(
                "{size_bytes} bytes received of {} declared",
                options.content_length.unwrap_or_default()
            )));
        }
        Ok(StagedPut {
            bucket: bucket.to_string(),
            key: key.to_string(),
            unique,
            options,
            size_bytes,
            md5,
            body,
        })
    }

    /// Writes the object record of a staged body: the object is visible from now on.
    pub async fn commit_put(&self, staged: StagedPut) -> ObjectResult<Stored> {
        let etag = hex(&staged.md5);
        let meta = ObjectMeta {
            size_bytes: staged.size_bytes,
            etag: etag.clone(),
            last_modified_ms: self.now_ms(),
            headers: staged.options.headers,
            user_metadata: staged.options.user_metadata,
            body: staged.body,
        };
        let last_modified_ms = meta.last_modified_ms;
        self.write_object_record(
            &staged.bucket,
            &staged.key,
            ObjectRecord::V1(meta).encode(),
            staged.options.create_only,
            staged.unique,
        )
        .await?;
        Ok(Stored {
            size_bytes: staged.size_bytes,
            etag,
            last_modified_ms,
        })
    }

    /// Stores an object: `stage_put`, then `commit_put`.
    pub async fn put_object<S, E>(&self, bucket: &str, key: &str, options: PutOptions, body: S) -> ObjectResult<Stored>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let staged = self.stage_put(bucket, key, options, body).await?;
        self.commit_put(staged).await
    }

    /// Writes an object record, create-only when `create_only`: the key is first reserved
    /// on a majority of its replicas (at most one creator at a time, none while a replica
    /// holds the object), then checked with a quorum read, then written, then released.
    /// Concurrent creators: one wins, the others get `PreconditionFailed` (it exists) or
    /// `CreateConflict` (still being created; retry).
    pub(super) async fn write_object_record(
        &self,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        create_only: bool,
        unique: [u8; 16],
    ) -> ObjectResult<()> {
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
            Err(CreateRefusal::Exists) => return Err(ObjectError::PreconditionFailed),
            Err(CreateRefusal::Conflict) => return Err(ObjectError::CreateConflict),
            Err(CreateRefusal::Unavailable(why)) => return Err(ObjectError::Unavailable(why)),
        };
        // The reservation saw no object on a majority; a quorum read also covers policies
        // where W and a majority need not overlap.
        let result = match self.object(bucket, key).await {
            Ok(_) => Err(ObjectError::PreconditionFailed),
            Err(ObjectError::NoSuchKey) => {
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

    /// Deletes an object. Deleting a missing key succeeds (S3 semantics); the tombstone
    /// keeps a late, older write from resurrecting it.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> ObjectResult<()> {
        self.bucket(bucket).await?;
        self.put_record(
            &objects_partition_key(bucket),
            object_key(bucket, key),
            RecordValue::Tombstone,
        )
        .await
    }

    /// Deletes up to `DELETE_OBJECTS_MAX` objects; each key's own outcome, in no order.
    pub async fn delete_objects(
        &self,
        bucket: &str,
        keys: Vec<String>,
    ) -> ObjectResult<Vec<(String, ObjectResult<()>)>> {
        self.bucket(bucket).await?;
        if keys.len() > DELETE_OBJECTS_MAX {
            return Err(ObjectError::InvalidArgument(format!(
                "at most {DELETE_OBJECTS_MAX} keys per request"
            )));
        }
        let pk = objects_partition_key(bucket);
        Ok(futures::stream::iter(keys)
            .map(|key| {
                let pk = &pk;
                async move {
                    let r = self
                        .put_record(pk, object_key(bucket, &key), RecordValue::Tombstone)
                        .await;
                    (key, r)
                }
            })
            .buffer_unordered(DELETES_IN_FLIGHT_MAX)
            .collect()
            .await)
    }

    /// Copies an object: a new record naming the same (content-addressed, shared) chunks.
    /// `source_if_match` / `source_if_none_match` are conditions on the source; `replace`
    /// gives new headers and metadata (else the source's are kept; copying an object onto
    /// itself needs `replace`).
    pub async fn copy_object(
        &self,
        (src_bucket, src_key): (&str, &str),
        (bucket, key): (&str, &str),
        source_if_match: Option<&EtagMatch>,
        source_if_none_match: Option<&EtagMatch>,
        replace: Option<(StoredHeaders, Vec<(String, String)>)>,
    ) -> ObjectResult<ObjectMeta> {
        let src = self.object(src_bucket, src_key).await?;
        self.bucket(bucket).await?;
        if source_if_match.is_some_and(|c| !c.matches(&src.etag)) {
            return Err(ObjectError::PreconditionFailed);
        }
        if source_if_none_match.is_some_and(|c| c.matches(&src.etag)) {
            return Err(ObjectError::PreconditionFailed);
        }
        if replace.is_none() && bucket == src_bucket && key == src_key {
            return Err(ObjectError::InvalidRequest(
                "copying an object onto itself needs the REPLACE metadata directive".into(),
            ));
        }
        let mut meta = src;
        if let Some((headers, user_metadata)) = replace {
            meta.headers = headers;
            meta.user_metadata = checked_metadata(user_metadata)?;
        }
        meta.last_modified_ms = self.now_ms();
        let unique: [u8; 16] = rand::random();
        let (pk, record_key) = (objects_partition_key(bucket), object_key(bucket, key));
        if let ObjectBody::Chunks(chunks) = &meta.body {
            self.add_refs(chunks, &self.holder(&pk, &record_key, unique)?).await?;
        }
        self.put_record_with(
            &pk,
            record_key,
            RecordValue::Data(ObjectRecord::V1(meta.clone()).encode()),
            unique,
        )
        .await?;
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::layout::ObjectBody;

    fn meta(etag: &str, last_modified_ms: u64) -> ObjectMeta {
        ObjectMeta {
            size_bytes: 0,
            etag: etag.into(),
            last_modified_ms,
            headers: StoredHeaders::default(),
            user_metadata: Vec::new(),
            body: ObjectBody::Inline(Vec::new()),
        }
    }

    #[test]
    fn conditions_follow_rfc_9110_order() {
        let m = meta("abc", 10_500);
        let ok = Conditions::default();
        assert_eq!(ok.check(&m), Ok(()));
        let etag = |e: &str| Some(EtagMatch::Etag(e.into()));
        let c = Conditions {
            if_match: etag("abc"),
            // Ignored when If-Match is present.
            if_unmodified_since_s: Some(1),
            ..Default::default()
        };
        assert_eq!(c.check(&m), Ok(()));
        let c = Conditions {
            if_match: etag("zzz"),
            ..Default::default()
        };
        assert_eq!(c.check(&m), Err(ObjectError::PreconditionFailed));
        let c = Conditions {
            if_unmodified_since_s: Some(9),
            ..Default::default()
        };
        assert_eq!(c.check(&m), Err(ObjectError::PreconditionFailed));
        let c = Conditions {
            if_none_match: Some(EtagMatch::Any),
            ..Default::default()
        };
        assert_eq!(c.check(&m), Err(ObjectError::NotModified));
        let c = Conditions {
            if_none_match: etag("zzz"),
            // Ignored when If-None-Match is present.
            if_modified_since_s: Some(99),
            ..Default::default()
        };
        assert_eq!(c.check(&m), Ok(()));
        let c = Conditions {
            if_modified_since_s: Some(10),
            ..Default::default()
        };
        assert_eq!(c.check(&m), Err(ObjectError::NotModified), "same second: not modified");
    }

    #[test]
    fn metadata_is_normalised_and_bounded() {
        let pairs = checked_metadata(vec![("B".into(), "2".into()), ("a".into(), "1".into())]).expect("small");
        assert_eq!(pairs, vec![("a".into(), "1".into()), ("b".into(), "2".into())]);
        let big = vec![("k".to_string(), "v".repeat(USER_METADATA_SIZE_BYTES_MAX))];
        assert_eq!(checked_metadata(big), Err(ObjectError::MetadataTooLarge));
    }
}
