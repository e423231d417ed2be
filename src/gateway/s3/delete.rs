//! DeleteObject and DeleteObjects (each key's own outcome in the answer).

use s3s::dto::*;
use s3s::{S3Error, S3Request, S3Response, S3Result, s3_error};

use super::HadssS3;
use crate::object::DELETE_OBJECTS_MAX;

pub(super) async fn delete_object(
    s3: &HadssS3,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let input = req.input;
    s3.objects.delete_object(&input.bucket, &input.key).await?;
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

pub(super) async fn delete_objects(
    s3: &HadssS3,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let input = req.input;
    s3.objects.bucket(&input.bucket).await?;
    if input.delete.objects.len() > DELETE_OBJECTS_MAX {
        return Err(s3_error!(MalformedXML, "at most {DELETE_OBJECTS_MAX} keys per request"));
    }
    let quiet = input.delete.quiet.unwrap_or(false);
    let keys = input.delete.objects.into_iter().map(|o| o.key).collect();
    let results = s3.objects.delete_objects(&input.bucket, keys).await?;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for (key, r) in results {
        match r {
            Ok(()) if !quiet => deleted.push(DeletedObject {
                key: Some(key),
                ..Default::default()
            }),
            Ok(()) => {}
            Err(e) => {
                let e = S3Error::from(e);
                errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(key),
                    message: e.message().map(str::to_string),
                    version_id: None,
                });
            }
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: (!errors.is_empty()).then_some(errors),
        ..Default::default()
    }))
}
