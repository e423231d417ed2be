//! GetObject and HeadObject: conditions, ranges, stored headers and metadata, and the body
//! streamed from the object layer.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::{HadssS3, blob, epoch_seconds, etag_match, metadata_map, timestamp};
use crate::object::Conditions;

fn conditions(
    if_match: Option<&ETagCondition>,
    if_unmodified_since: Option<&Timestamp>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
) -> Conditions {
    Conditions {
        if_match: if_match.map(etag_match),
        if_unmodified_since_s: if_unmodified_since.and_then(epoch_seconds),
        if_none_match: if_none_match.map(etag_match),
        if_modified_since_s: if_modified_since.and_then(epoch_seconds),
    }
}

pub(super) async fn get_object(s3: &HadssS3, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
    let input = req.input;
    let conditions = conditions(
        input.if_match.as_ref(),
        input.if_unmodified_since.as_ref(),
        input.if_none_match.as_ref(),
        input.if_modified_since.as_ref(),
    );
    let meta = s3.objects.head_object(&input.bucket, &input.key, &conditions).await?;
    let (range, content_range) = match input.range {
        Some(r) => {
            let range = r.check(meta.size_bytes).map_err(|_| s3_error!(InvalidRange))?;
            let cr = format!("bytes {}-{}/{}", range.start, range.end - 1, meta.size_bytes);
            (range, Some(cr))
        }
        None => (0..meta.size_bytes, None),
    };
    let body = blob(s3.objects.body_stream(&meta, range.clone()));
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

pub(super) async fn head_object(
    s3: &HadssS3,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let input = req.input;
    let conditions = conditions(
        input.if_match.as_ref(),
        input.if_unmodified_since.as_ref(),
        input.if_none_match.as_ref(),
        input.if_modified_since.as_ref(),
    );
    let meta = s3.objects.head_object(&input.bucket, &input.key, &conditions).await?;
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
