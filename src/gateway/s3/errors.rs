//! The S3 error for each object-layer error: every kind keeps its own code, so a client (and
//! an operator reading logs) can tell a full disk (`507 InsufficientStorage`, not retried by
//! SDKs) from an unavailable quorum (`503 ServiceUnavailable`, retried).

use s3s::{S3Error, S3ErrorCode, s3_error};

use crate::object::ObjectError;

/// HTTP status of a write refused for lack of space (RFC 4918's 507).
const INSUFFICIENT_STORAGE: u16 = 507;

/// An S3 error with a code `s3s` does not name.
fn custom(code: &'static str, status: u16, message: String) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), message);
    if let Ok(status) = hyper::StatusCode::from_u16(status) {
        e.set_status_code(status);
    }
    e
}

impl From<ObjectError> for S3Error {
    fn from(e: ObjectError) -> S3Error {
        match e {
            ObjectError::NoSuchBucket => s3_error!(NoSuchBucket),
            ObjectError::NoSuchKey => s3_error!(NoSuchKey),
            ObjectError::NoSuchUpload => s3_error!(NoSuchUpload),
            ObjectError::BucketAlreadyExists => s3_error!(BucketAlreadyExists),
            ObjectError::BucketAlreadyOwnedByYou => s3_error!(BucketAlreadyOwnedByYou),
            ObjectError::BucketNotEmpty => s3_error!(BucketNotEmpty),
            ObjectError::InvalidBucketName => s3_error!(InvalidBucketName),
            ObjectError::PreconditionFailed => s3_error!(PreconditionFailed),
            ObjectError::NotModified => s3_error!(NotModified),
            ObjectError::CreateConflict => custom(
                "ConditionalRequestConflict",
                409,
                "A conflicting operation on this object is in progress; retry".into(),
            ),
            ObjectError::InvalidArgument(m) => s3_error!(InvalidArgument, "{m}"),
            ObjectError::InvalidRequest(m) => s3_error!(InvalidRequest, "{m}"),
            ObjectError::InvalidRange => s3_error!(InvalidRange),
            ObjectError::InvalidPart(m) => s3_error!(InvalidPart, "{m}"),
            ObjectError::InvalidPartOrder => s3_error!(InvalidPartOrder),
            ObjectError::EntityTooSmall(m) => s3_error!(EntityTooSmall, "{m}"),
            ObjectError::EntityTooLarge(m) => s3_error!(EntityTooLarge, "{m}"),
            ObjectError::MetadataTooLarge => s3_error!(MetadataTooLarge),
            ObjectError::IncompleteBody(m) => s3_error!(IncompleteBody, "{m}"),
            ObjectError::NoSpace(m) => {
                tracing::warn!(error = %m, "a write was refused for lack of space");
                custom(
                    "InsufficientStorage",
                    INSUFFICIENT_STORAGE,
                    format!("The storage nodes for this data are out of space: {m}"),
                )
            }
            ObjectError::Unavailable(m) => {
                tracing::warn!(error = %m, "cluster request failed");
                s3_error!(
                    ServiceUnavailable,
                    "the storage cluster could not serve the request: {m}"
                )
            }
            ObjectError::Corrupt(m) => {
                tracing::error!(error = %m, "corrupt data");
                s3_error!(InternalError, "corrupt data: {m}")
            }
            ObjectError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                s3_error!(InternalError, "{m}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_and_a_lost_quorum_are_different_s3_errors() {
        let full = S3Error::from(ObjectError::NoSpace("0 of 2 copies".into()));
        let lost = S3Error::from(ObjectError::Unavailable("0 of 2 copies".into()));
        assert_eq!(full.code().as_str(), "InsufficientStorage");
        assert_eq!(full.status_code().map(|s| s.as_u16()), Some(507));
        assert_eq!(lost.code(), &S3ErrorCode::ServiceUnavailable);
        let conflict = S3Error::from(ObjectError::CreateConflict);
        assert_eq!(conflict.status_code().map(|s| s.as_u16()), Some(409));
    }
}
