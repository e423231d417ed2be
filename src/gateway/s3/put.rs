//! PutObject: the body is staged (chunks on W replicas), its checksums verified, then the
//! object record written (create-only with `If-None-Match: *`).

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::{HadssS3, checked_body, given_checksums, metadata_pairs, stored_headers};
use crate::object::PutOptions;

pub(super) async fn put_object(s3: &HadssS3, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
    let S3Request {
        input,
        headers,
        trailing_headers,
        ..
    } = req;
    let expected = crate::gateway::checksum::Expected::from_request(
        &headers,
        given_checksums!(input),
        input.content_md5.clone(),
        input.checksum_algorithm.clone(),
    );
    let options = PutOptions {
        headers: stored_headers(
            input.content_type,
            input.content_encoding,
            input.content_disposition,
            input.content_language,
            input.cache_control,
        ),
        user_metadata: metadata_pairs(input.metadata),
        create_only: matches!(input.if_none_match, Some(ETagCondition::Any)),
        // A negative length is over every limit (EntityTooLarge, as for too large a one).
        content_length: input.content_length.map(|l| u64::try_from(l).unwrap_or(u64::MAX)),
    };
    let mut hasher = expected.hasher();
    let staged = s3
        .objects
        .stage_put(
            &input.bucket,
            &input.key,
            options,
            checked_body(input.body, &mut hasher),
        )
        .await?;
    let checksums = expected.verify(
        hasher.finalize(),
        &staged.md5(),
        trailing_headers.and_then(|t| t.take()),
    )?;
    let stored = s3.objects.commit_put(staged).await?;
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(ETag::Strong(stored.etag)),
        checksum_crc32: checksums.checksum_crc32,
        checksum_crc32c: checksums.checksum_crc32c,
        checksum_crc64nvme: checksums.checksum_crc64nvme,
        checksum_sha1: checksums.checksum_sha1,
        checksum_sha256: checksums.checksum_sha256,
        ..Default::default()
    }))
}
