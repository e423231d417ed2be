//! Multipart uploads: create, upload parts (staged then committed, as PUTs are), copy a
//! range of an object as a part, list parts, complete (the object's record names every
//! part's chunks, in order), abort.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::Stream;
use md5::Digest;

use super::body::StoredBody;
use super::error::{ObjectError, ObjectResult};
use super::layout::{
    ChunkRef, OBJECT_SIZE_BYTES_MAX, ObjectBody, ObjectMeta, ObjectRecord, PART_NUMBER_MAX, PART_SIZE_BYTES_MIN,
    PartMeta, PartRecord, StoredHeaders, UploadMeta, UploadRecord, object_key, objects_partition_key, part_key,
    part_prefix, upload_key,
};
use super::list::LIST_PAGE_RECORDS;
use super::objects::{EtagMatch, Stored, checked_metadata, hex};
use super::store::ObjectStore;
use crate::storage::records::RecordValue;
use crate::storage::refs::ChunkHolder;

/// A part as a completion names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    /// Its number.
    pub number: u32,
    /// The ETag the client got for it (checked when given).
    pub etag: Option<String>,
}

/// A part's body, stored as chunks, whose part record is not written yet.
#[derive(Debug)]
pub struct StagedPart {
    holder: ChunkHolder,
    size_bytes: u64,
    md5: [u8; 16],
    chunks: Vec<ChunkRef>,
}

impl StagedPart {
    /// The body's size.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The body's MD5.
    pub fn md5(&self) -> [u8; 16] {
        self.md5
    }
}

/// Checks a part number (1 to `PART_NUMBER_MAX`).
pub fn part_number(n: i64) -> ObjectResult<u32> {
    match u32::try_from(n) {
        Ok(n) if (1..=PART_NUMBER_MAX).contains(&n) => Ok(n),
        _ => Err(ObjectError::InvalidArgument(format!(
            "part numbers run from 1 to {PART_NUMBER_MAX}"
        ))),
    }
}

impl ObjectStore {
    /// Starts an upload; returns its id.
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        headers: StoredHeaders,
        user_metadata: Vec<(String, String)>,
    ) -> ObjectResult<String> {
        self.bucket(bucket).await?;
        let upload_id = hex(&rand::random::<[u8; 16]>());
        let meta = UploadMeta {
            initiated_ms: self.now_ms(),
            headers,
            user_metadata: checked_metadata(user_metadata)?,
        };
        self.put_record(
            &objects_partition_key(bucket),
            upload_key(bucket, key, &upload_id),
            RecordValue::Data(UploadRecord::V1(meta).encode()),
        )
        .await?;
        Ok(upload_id)
    }

    /// An upload in progress, or `NoSuchUpload`.
    pub async fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> ObjectResult<UploadMeta> {
        self.bucket(bucket).await?;
        match self
            .get_record(&objects_partition_key(bucket), &upload_key(bucket, key, upload_id))
            .await?
        {
            Some(v) => Ok(UploadRecord::decode(&v)?),
            None => Err(ObjectError::NoSuchUpload),
        }
    }

    /// Stores a part's body (chunks and their references) without writing the part record:
    /// `commit_part` does. `content_length`, when given, must be the body's length.
    pub async fn stage_part<S, E>(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        number: u32,
        content_length: Option<u64>,
        body: S,
    ) -> ObjectResult<StagedPart>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        self.upload(bucket, key, upload_id).await?;
        let holder = self.holder(
            &objects_partition_key(bucket),
            &part_key(bucket, upload_id, number),
            rand::random(),
        )?;
        let StoredBody { size_bytes, md5, body } = self.store_body(body, false, OBJECT_SIZE_BYTES_MAX, &holder).await?;
        if content_length.is_some_and(|l| l != size_bytes) {
            return Err(ObjectError::IncompleteBody(format!(
                "{size_bytes} bytes received of {} declared",
                content_length.unwrap_or_default()
            )));
        }
        let ObjectBody::Chunks(chunks) = body else {
            return Err(ObjectError::Internal("a part was stored inline".into()));
        };
        Ok(StagedPart {
            holder,
            size_bytes,
            md5,
            chunks,
        })
    }

    /// Writes a staged part's record (a later upload of the same number replaces it).
    pub async fn commit_part(&self, staged: StagedPart) -> ObjectResult<Stored> {
        let etag = hex(&staged.md5);
        let meta = PartMeta {
            size_bytes: staged.size_bytes,
            etag: etag.clone(),
            last_modified_ms: self.now_ms(),
            chunks: staged.chunks,
        };
        let last_modified_ms = meta.last_modified_ms;
        self.write_versioned(
            staged.holder.holder_partition,
            staged.holder.holder_key.clone(),
            RecordValue::Data(PartRecord::V1(meta).encode()),
            staged.holder.holder_unique,
        )
        .await?;
        Ok(Stored {
            size_bytes: staged.size_bytes,
            etag,
            last_modified_ms,
        })
    }

    /// Copies bytes `range` (whole object if `None`; `first..=last` inclusive) of an object
    /// into part `number` of an upload. `source_if_match` is a condition on the source.
    pub async fn copy_part(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        number: u32,
        (src_bucket, src_key): (&str, &str),
        source_if_match: Option<&EtagMatch>,
        range: Option<(u64, u64)>,
    ) -> ObjectResult<Stored> {
        self.upload(bucket, key, upload_id).await?;
        let src = self.object(src_bucket, src_key).await?;
        if let Some(c) = source_if_match
            && !matches!(c, EtagMatch::Any)
            && *c != EtagMatch::Etag(src.etag.clone())
        {
            return Err(ObjectError::PreconditionFailed);
        }
        let range = match range {
            Some((first, last)) if first > last || last >= src.size_bytes => return Err(ObjectError::InvalidRange),
            Some((first, last)) => first..last + 1,
            None => 0..src.size_bytes,
        };
        let stream = self.body_stream(&src, range);
        let staged = self.stage_part((bucket, key, upload_id), number, None, stream).await?;
        self.commit_part(staged).await
    }

    /// Every stored part of an upload, by number.
    pub async fn parts(&self, bucket: &str, upload_id: &str) -> ObjectResult<BTreeMap<u32, PartMeta>> {
        let partition = self.partition(&objects_partition_key(bucket))?;
        let prefix = part_prefix(bucket, upload_id);
        let mut parts = BTreeMap::new();
        let mut after: Option<Vec<u8>> = None;
        // 10,000 parts at most: 11 pages of 1,000.
        for _ in 0..=(PART_NUMBER_MAX as usize / LIST_PAGE_RECORDS) {
            let (page, complete) = self
                .node
                .scan_records(partition, &prefix, after.as_deref(), LIST_PAGE_RECORDS)
                .await?;
            let empty = page.is_empty();
            for rec in page {
                after = Some(rec.key.clone());
                let RecordValue::Data(v) = &rec.value else { continue };
                let number = std::str::from_utf8(&rec.key[prefix.len()..])
                    .ok()
                    .and_then(|n| n.parse::<u32>().ok())
                    .ok_or_else(|| ObjectError::Corrupt("a part record's key is not a part number".into()))?;
                parts.insert(number, PartRecord::decode(v)?);
            }
            if complete || empty {
                break;
            }
        }
        Ok(parts)
    }

    /// Completes an upload: the object (create-only when `create_only`) is made of the
    /// listed parts, in order; the upload and its parts are then forgotten.
    pub async fn complete_upload(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        wanted: &[CompletedPart],
        create_only: bool,
    ) -> ObjectResult<Stored> {
        let upload = self.upload(bucket, key, upload_id).await?;
        if wanted.is_empty() {
            return Err(ObjectError::InvalidArgument("no parts listed".into()));
        }
        if wanted.windows(2).any(|w| w[0].number >= w[1].number) {
            return Err(ObjectError::InvalidPartOrder);
        }
        let stored = self.parts(bucket, upload_id).await?;
        let mut chunks = Vec::new();
        let mut size_bytes = 0u64;
        let mut md5s = md5::Md5::new();
        for (i, p) in wanted.iter().enumerate() {
            let number = p.number;
            let Some(part) = stored.get(&number) else {
                return Err(ObjectError::InvalidPart(format!("part {number} was not uploaded")));
            };
            if p.etag.as_ref().is_some_and(|e| e.trim_matches('"') != part.etag) {
                return Err(ObjectError::InvalidPart(format!("part {number}: ETag does not match")));
            }
            if i + 1 < wanted.len() && part.size_bytes < PART_SIZE_BYTES_MIN {
                return Err(ObjectError::EntityTooSmall(format!(
                    "part {number} is smaller than 5 MiB"
                )));
            }
            size_bytes += part.size_bytes;
            chunks.extend_from_slice(&part.chunks);
            md5s.update(unhex(&part.etag).ok_or_else(|| ObjectError::Corrupt("a stored part ETag is not hex".into()))?);
        }
        let etag = format!("{}-{}", hex(&md5s.finalize()), wanted.len());
        let meta = ObjectMeta {
            size_bytes,
            etag: etag.clone(),
            last_modified_ms: self.now_ms(),
            headers: upload.headers,
            user_metadata: upload.user_metadata,
            body: ObjectBody::Chunks(chunks.clone()),
        };
        let last_modified_ms = meta.last_modified_ms;
        let value = ObjectRecord::V1(meta).encode();
        if value.len() > crate::storage::records::RECORD_VALUE_SIZE_BYTES_MAX {
            return Err(ObjectError::EntityTooLarge(
                "too many chunks for one object record".into(),
            ));
        }
        // The object holds its chunks from now on (the parts' references die with them).
        let unique: [u8; 16] = rand::random();
        let holder = self.holder(&objects_partition_key(bucket), &object_key(bucket, key), unique)?;
        self.add_refs(&chunks, &holder).await?;
        self.write_object_record(bucket, key, value, create_only, unique)
            .await?;
        self.forget_upload(bucket, key, upload_id, stored.keys().copied())
            .await?;
        Ok(Stored {
            size_bytes,
            etag,
            last_modified_ms,
        })
    }

    /// Aborts an upload: it and its parts are forgotten (their chunks wait for garbage
    /// collection).
    pub async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> ObjectResult<()> {
        self.upload(bucket, key, upload_id).await?;
        let stored = self.parts(bucket, upload_id).await?;
        self.forget_upload(bucket, key, upload_id, stored.keys().copied()).await
    }

    /// Tombstones an upload and its parts (their chunks stay for a completed object, or wait
    /// for garbage collection).
    async fn forget_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: impl Iterator<Item = u32>,
    ) -> ObjectResult<()> {
        let pk = objects_partition_key(bucket);
        for number in parts {
            self.put_record(&pk, part_key(bucket, upload_id, number), RecordValue::Tombstone)
                .await?;
        }
        self.put_record(&pk, upload_key(bucket, key, upload_id), RecordValue::Tombstone)
            .await
    }
}

/// Bytes of a hex string (`None` if it is not hex).
fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
