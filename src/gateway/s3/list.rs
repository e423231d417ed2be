//! ListObjects (v1), ListObjectsV2 (hex continuation tokens) and ListObjectVersions (every
//! object is its one `null` version: buckets are unversioned).

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::{HadssS3, encode_key, hex, timestamp, unhex};
use crate::object::ObjectMeta;

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

fn common_prefix(prefix: &str, encoding: Option<&EncodingType>) -> CommonPrefix {
    CommonPrefix {
        prefix: Some(encode_key(prefix, encoding)),
    }
}

fn max_keys(given: Option<i32>) -> usize {
    given.unwrap_or(1000).clamp(0, 1000) as usize
}

pub(super) async fn list_objects(
    s3: &HadssS3,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let input = req.input;
    let max_keys = max_keys(input.max_keys);
    let prefix = input.prefix.clone().unwrap_or_default();
    let listing = s3
        .objects
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
        contents: Some(listing.objects.iter().map(|(k, m)| to_object(k, m, enc)).collect()),
        common_prefixes: Some(listing.common_prefixes.iter().map(|p| common_prefix(p, enc)).collect()),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

pub(super) async fn list_objects_v2(
    s3: &HadssS3,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let input = req.input;
    let max_keys = max_keys(input.max_keys);
    let prefix = input.prefix.clone().unwrap_or_default();
    let after = match &input.continuation_token {
        Some(t) => Some(unhex(t).ok_or_else(|| s3_error!(InvalidArgument, "bad continuation token"))?),
        None => input.start_after.clone(),
    };
    let listing = s3
        .objects
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
        contents: Some(listing.objects.iter().map(|(k, m)| to_object(k, m, enc)).collect()),
        common_prefixes: Some(listing.common_prefixes.iter().map(|p| common_prefix(p, enc)).collect()),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

pub(super) async fn list_object_versions(
    s3: &HadssS3,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    // Unversioned buckets: every object is its one `null` version.
    let input = req.input;
    let max_keys = max_keys(input.max_keys);
    let prefix = input.prefix.clone().unwrap_or_default();
    let listing = s3
        .objects
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
