//! Bucket operations: ListBuckets (only the buckets the caller may see), CreateBucket (the
//! creating key owns it), HeadBucket, GetBucketLocation, DeleteBucket, GetBucketVersioning.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::{HadssS3, timestamp};
use crate::access::Action;
use crate::gateway::auth::caller_of as caller;

pub(super) async fn list_buckets(
    s3: &HadssS3,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let caller = caller(&req)?;
    let buckets = s3
        .objects
        .list_buckets()
        .await?
        .into_iter()
        .filter(|(name, _)| caller.allows(Action::See(name)))
        .map(|(name, meta)| Bucket {
            name: Some(name),
            creation_date: Some(timestamp(meta.created_ms)),
            bucket_region: None,
        })
        .collect();
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(Owner {
            display_name: Some("hadss".into()),
            id: Some("hadss".into()),
        }),
        ..Default::default()
    }))
}

pub(super) async fn create_bucket(
    s3: &HadssS3,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let caller = caller(&req)?;
    let bucket = req.input.bucket;
    let owner = req.credentials.map(|c| c.access_key).unwrap_or_default();
    let created = s3
        .objects
        .create_bucket(&bucket, &owner, caller.key_id(), || caller.allows(Action::See(&bucket)))
        .await;
    if let Some(id) = caller.key_id() {
        // The key's grants changed (or may have): the gateway's auth reads it afresh.
        s3.objects.forget_key(id);
    }
    created?;
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{bucket}")),
    }))
}

pub(super) async fn head_bucket(
    s3: &HadssS3,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    s3.objects.bucket_fresh(&req.input.bucket).await?;
    Ok(S3Response::new(HeadBucketOutput {
        bucket_region: Some(s3.region.clone()),
        ..Default::default()
    }))
}

pub(super) async fn get_bucket_location(
    s3: &HadssS3,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    s3.objects.bucket(&req.input.bucket).await?;
    Ok(S3Response::new(GetBucketLocationOutput {
        location_constraint: Some(BucketLocationConstraint::from(s3.region.clone())),
    }))
}

pub(super) async fn delete_bucket(
    s3: &HadssS3,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    s3.objects.delete_bucket(&req.input.bucket).await?;
    Ok(S3Response::new(DeleteBucketOutput {}))
}

pub(super) async fn get_bucket_versioning(
    s3: &HadssS3,
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    s3.objects.bucket(&req.input.bucket).await?;
    // Buckets are unversioned: no status element at all.
    Ok(S3Response::new(GetBucketVersioningOutput::default()))
}
