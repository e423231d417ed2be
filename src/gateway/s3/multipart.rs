//! Multipart uploads: create, upload a part (staged, checksums verified, then committed),
//! complete, abort, list parts, list uploads.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::{HadssS3, checked_body, given_checksums, metadata_pairs, part_number, stored_headers, timestamp};
use crate::object::CompletedPart;

pub(super) async fn create_multipart_upload(
    s3: &HadssS3,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let input = req.input;
    let upload_id = s3
        .objects
        .create_upload(
            &input.bucket,
            &input.key,
            stored_headers(
                input.content_type,
                input.content_encoding,
                input.content_disposition,
                input.content_language,
                input.cache_control,
            ),
            metadata_pairs(input.metadata),
        )
        .await?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload_id),
        ..Default::default()
    }))
}

pub(super) async fn upload_part(
    s3: &HadssS3,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let S3Request {
        input,
        headers,
        trailing_headers,
        ..
    } = req;
    let number = part_number(input.part_number)?;
    let expected = crate::gateway::checksum::Expected::from_request(
        &headers,
        given_checksums!(input),
        input.content_md5.clone(),
        input.checksum_algorithm.clone(),
    );
    let mut hasher = expected.hasher();
    let staged = s3
        .objects
        .stage_part(
            (&input.bucket, &input.key, &input.upload_id),
            number,
            input.content_length.map(|l| u64::try_from(l).unwrap_or(u64::MAX)),
            checked_body(input.body, &mut hasher),
        )
        .await?;
    let checksums = expected.verify(
        hasher.finalize(),
        &staged.md5(),
        trailing_headers.and_then(|t| t.take()),
    )?;
    let stored = s3.objects.commit_part(staged).await?;
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(ETag::Strong(stored.etag)),
        checksum_crc32: checksums.checksum_crc32,
        checksum_crc32c: checksums.checksum_crc32c,
        checksum_crc64nvme: checksums.checksum_crc64nvme,
        checksum_sha1: checksums.checksum_sha1,
        checksum_sha256: checksums.checksum_sha256,
        ..Default::default()
    }))
}

pub(super) async fn complete_multipart_upload(
    s3: &HadssS3,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    // A completion without parts is malformed XML whatever the upload (`complete_upload`
    // looks the upload up itself).
    let wanted = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
    if wanted.is_empty() {
        return Err(s3_error!(MalformedXML, "no parts listed"));
    }
    let parts = wanted
        .iter()
        .map(|p| {
            Ok(CompletedPart {
                number: part_number(p.part_number.unwrap_or(0))?,
                etag: p.e_tag.as_ref().map(|e| match e {
                    ETag::Strong(v) | ETag::Weak(v) => v.clone(),
                }),
            })
        })
        .collect::<S3Result<Vec<_>>>()?;
    let create_only = matches!(input.if_none_match, Some(ETagCondition::Any));
    let stored = s3
        .objects
        .complete_upload((&input.bucket, &input.key, &input.upload_id), &parts, create_only)
        .await?;
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(input.bucket.clone()),
        key: Some(input.key.clone()),
        e_tag: Some(ETag::Strong(stored.etag)),
        location: Some(format!("/{}/{}", input.bucket, input.key)),
        ..Default::default()
    }))
}

pub(super) async fn abort_multipart_upload(
    s3: &HadssS3,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    s3.objects
        .abort_upload(&input.bucket, &input.key, &input.upload_id)
        .await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub(super) async fn list_parts(s3: &HadssS3, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    s3.objects.upload(&input.bucket, &input.key, &input.upload_id).await?;
    let max_parts = input.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
    let marker = input.part_number_marker.unwrap_or(0).max(0) as u32;
    let stored = s3.objects.parts(&input.bucket, &input.upload_id).await?;
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

pub(super) async fn list_multipart_uploads(
    s3: &HadssS3,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    let max_uploads = input.max_uploads.unwrap_or(1000).clamp(1, 1000) as usize;
    let listing = s3
        .objects
        .list_uploads(
            &input.bucket,
            input.prefix.as_deref().unwrap_or_default(),
            input.key_marker.as_deref(),
            input.upload_id_marker.as_deref(),
            max_uploads,
        )
        .await?;
    let last = listing.uploads.last().map(|u| (u.key.clone(), u.upload_id.clone()));
    let truncated = listing.truncated;
    let uploads = listing
        .uploads
        .into_iter()
        .map(|u| MultipartUpload {
            key: Some(u.key),
            upload_id: Some(u.upload_id),
            initiated: Some(timestamp(u.initiated_ms)),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: input.prefix,
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        max_uploads: Some(max_uploads as i32),
        is_truncated: Some(truncated),
        next_key_marker: if truncated { last.clone().map(|l| l.0) } else { None },
        next_upload_id_marker: if truncated { last.map(|l| l.1) } else { None },
        uploads: Some(uploads),
        ..Default::default()
    }))
}
