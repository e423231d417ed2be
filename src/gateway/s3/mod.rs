//! The `s3s::S3` implementation: S3 protocol glue over the object layer (`crate::object`).
//! Each operation family lives in its own file (`bucket`, `put`, `get`, `list`,
//! `multipart`, `copy`, `delete`); this file holds the service, the conversions they share,
//! and the trait implementation that hands each operation to its family. Errors come from
//! the object layer and become S3 errors in `errors`.

mod bucket;
mod copy;
mod delete;
mod errors;
mod get;
mod list;
mod multipart;
mod put;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};

use crate::object::{EtagMatch, ObjectStore, StoredHeaders};

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
pub(crate) use given_checksums;

/// The gateway's S3 service.
pub struct HadssS3 {
    objects: Arc<ObjectStore>,
    region: String,
}

impl HadssS3 {
    /// A service over `objects`, reporting `region`.
    pub fn new(objects: Arc<ObjectStore>, region: &str) -> HadssS3 {
        HadssS3 {
            objects,
            region: region.to_string(),
        }
    }
}

/// A body as the object layer reads it: the request's byte stream, every piece also fed to
/// `checksums` (the trailing and header checksums are verified after the body is stored and
/// before its record is written).
fn checked_body<'a>(
    body: Option<StreamingBlob>,
    checksums: &'a mut s3s::checksum::ChecksumHasher,
) -> impl futures::Stream<Item = Result<bytes::Bytes, s3s::StdError>> + Send + 'a {
    use futures::StreamExt;
    let stream = match body {
        Some(b) => b.boxed(),
        None => futures::stream::empty().boxed(),
    };
    stream.inspect(move |piece| {
        if let Ok(piece) = piece {
            checksums.update(piece);
        }
    })
}

/// An object stream as an S3 body.
fn blob(stream: crate::object::ObjectStream) -> StreamingBlob {
    StreamingBlob::wrap(stream)
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

/// Seconds since the Unix epoch of an HTTP date.
fn epoch_seconds(t: &Timestamp) -> Option<u64> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::EpochSeconds, &mut buf).ok()?;
    let secs: f64 = std::str::from_utf8(&buf).ok()?.parse().ok()?;
    let at = UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0));
    at.duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// An S3 ETag condition as the object layer takes it.
fn etag_match(condition: &ETagCondition) -> EtagMatch {
    match condition {
        ETagCondition::Any => EtagMatch::Any,
        ETagCondition::ETag(ETag::Strong(v) | ETag::Weak(v)) => EtagMatch::Etag(v.clone()),
    }
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

/// User metadata as given (the object layer normalises and bounds it).
fn metadata_pairs(metadata: Option<Metadata>) -> Vec<(String, String)> {
    metadata.unwrap_or_default().into_iter().collect()
}

fn metadata_map(pairs: &[(String, String)]) -> Option<Metadata> {
    (!pairs.is_empty()).then(|| pairs.iter().cloned().collect())
}

/// A part number as the object layer takes it.
fn part_number(n: i32) -> S3Result<u32> {
    Ok(crate::object::part_number(i64::from(n))?)
}

#[async_trait::async_trait]
impl S3 for HadssS3 {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        bucket::list_buckets(self, req).await
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        bucket::create_bucket(self, req).await
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        bucket::head_bucket(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        bucket::get_bucket_location(self, req).await
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        bucket::delete_bucket(self, req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        bucket::get_bucket_versioning(self, req).await
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        put::put_object(self, req).await
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        get::get_object(self, req).await
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        get::head_object(self, req).await
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        delete::delete_object(self, req).await
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        delete::delete_objects(self, req).await
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        copy::copy_object(self, req).await
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        list::list_objects(self, req).await
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        list::list_objects_v2(self, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        list::list_object_versions(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create_multipart_upload(self, req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        copy::upload_part_copy(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete_multipart_upload(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort_multipart_upload(self, req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_multipart_uploads(self, req).await
    }
}
