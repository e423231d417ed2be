//! CopyObject (a new record naming the source's chunks) and UploadPartCopy (a range of an
//! object copied into a part).

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::{HadssS3, etag_match, metadata_pairs, part_number, stored_headers, timestamp};

fn source(copy_source: &CopySource) -> S3Result<(&str, &str)> {
    match copy_source {
        CopySource::Bucket { bucket, key, .. } => Ok((bucket, key)),
        _ => Err(s3_error!(NotImplemented, "copy from an access point")),
    }
}

pub(super) async fn copy_object(
    s3: &HadssS3,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let input = req.input;
    let src = source(&input.copy_source)?;
    let replace = input
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    let replace = replace.then(|| {
        (
            stored_headers(
                input.content_type,
                input.content_encoding,
                input.content_disposition,
                input.content_language,
                input.cache_control,
            ),
            metadata_pairs(input.metadata),
        )
    });
    let meta = s3
        .objects
        .copy_object(
            src,
            (&input.bucket, &input.key),
            input.copy_source_if_match.as_ref().map(etag_match).as_ref(),
            input.copy_source_if_none_match.as_ref().map(etag_match).as_ref(),
            replace,
        )
        .await?;
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(ETag::Strong(meta.etag)),
            last_modified: Some(timestamp(meta.last_modified_ms)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

pub(super) async fn upload_part_copy(
    s3: &HadssS3,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let input = req.input;
    let number = part_number(input.part_number)?;
    let src = source(&input.copy_source)?;
    let range = match &input.copy_source_range {
        Some(r) => Some(
            r.strip_prefix("bytes=")
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                .ok_or_else(|| s3_error!(InvalidArgument, "x-amz-copy-source-range must be bytes=first-last"))?,
        ),
        None => None,
    };
    let stored = s3
        .objects
        .copy_part(
            (&input.bucket, &input.key, &input.upload_id),
            number,
            src,
            input.copy_source_if_match.as_ref().map(etag_match).as_ref(),
            range,
        )
        .await?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(ETag::Strong(stored.etag)),
            last_modified: Some(timestamp(stored.last_modified_ms)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}
