//! The object layer's error: what went wrong in terms a front end can act on. Each variant
//! says whether state changed and whether retrying may help; the S3 gateway maps each to its
//! own S3 error code (`gateway::s3::errors`), the client SDK to its own typed error.

use crate::node::NodeError;

/// Why an object-layer operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The bucket does not exist. Nothing changed.
    #[error("the bucket does not exist")]
    NoSuchBucket,
    /// The object does not exist. Nothing changed.
    #[error("the object does not exist")]
    NoSuchKey,
    /// The multipart upload does not exist (never made, completed or aborted). Nothing changed.
    #[error("the multipart upload does not exist")]
    NoSuchUpload,
    /// A bucket of that name exists and is someone else's. Nothing changed.
    #[error("the bucket name is taken")]
    BucketAlreadyExists,
    /// A bucket of that name exists and the caller can see it. Nothing changed.
    #[error("the bucket exists and is yours")]
    BucketAlreadyOwnedByYou,
    /// The bucket holds objects (or too many deleted ones to tell). Nothing changed.
    #[error("the bucket is not empty")]
    BucketNotEmpty,
    /// Not a valid bucket name. Nothing changed.
    #[error("invalid bucket name")]
    InvalidBucketName,
    /// A write or read precondition (`If-Match`, create-only, …) does not hold. Nothing
    /// changed.
    #[error("a precondition does not hold")]
    PreconditionFailed,
    /// A read's `If-None-Match`/`If-Modified-Since` says the caller's copy is current.
    #[error("not modified")]
    NotModified,
    /// Another create-only write of the same key is in progress. Nothing changed; retry.
    #[error("a conflicting create of this key is in progress; retry")]
    CreateConflict,
    /// A malformed or out-of-range argument. Nothing changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A well-formed request the object layer does not allow (copying an object onto
    /// itself unchanged, …). Nothing changed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The byte range is outside the object. Nothing changed.
    #[error("the range is not satisfiable")]
    InvalidRange,
    /// A part named in a completion was not uploaded or its ETag differs. Nothing changed.
    #[error("invalid part: {0}")]
    InvalidPart(String),
    /// A completion lists parts out of order. Nothing changed.
    #[error("parts are not in ascending order")]
    InvalidPartOrder,
    /// A part other than the last is smaller than the minimum. Nothing changed.
    #[error("entity too small: {0}")]
    EntityTooSmall(String),
    /// The body or object is over a size limit. Chunks already stored are left to garbage
    /// collection; no record was written.
    #[error("entity too large: {0}")]
    EntityTooLarge(String),
    /// User metadata over its size limit. Nothing changed.
    #[error("user metadata is too large")]
    MetadataTooLarge,
    /// The body ended early, failed to read, or does not match its declared length.
    /// Chunks already stored are left to garbage collection; no record was written.
    #[error("incomplete body: {0}")]
    IncompleteBody(String),
    /// The storage nodes that must take the write are out of space. Chunks already stored
    /// are left to garbage collection; retrying helps only after space is freed or added.
    #[error("out of space: {0}")]
    NoSpace(String),
    /// Too few replicas answered (nodes down, unreachable or slow), or the cluster map is
    /// not known yet. A write may have reached some replicas (it was not acknowledged);
    /// retrying may succeed.
    #[error("the storage cluster is unavailable: {0}")]
    Unavailable(String),
    /// Stored data failed to decode or verify. Nothing changed; the copy is set aside and
    /// repaired from replicas where one is good.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Anything else (a bug, a failed local task).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ObjectError {
    /// Whether retrying the same request later may succeed without anyone's help.
    pub fn is_transient(&self) -> bool {
        matches!(self, ObjectError::CreateConflict | ObjectError::Unavailable(_))
    }
}

impl From<NodeError> for ObjectError {
    fn from(e: NodeError) -> ObjectError {
        match e {
            NodeError::NoSpace { .. } => ObjectError::NoSpace(e.to_string()),
            NodeError::NoMap | NodeError::WriteQuorum { .. } | NodeError::ReadQuorum { .. } | NodeError::Stopped => {
                ObjectError::Unavailable(e.to_string())
            }
            NodeError::Internal(m) => ObjectError::Internal(m),
        }
    }
}

impl From<super::layout::CorruptRecord> for ObjectError {
    fn from(e: super::layout::CorruptRecord) -> ObjectError {
        ObjectError::Corrupt(e.to_string())
    }
}

/// The object layer's result.
pub type ObjectResult<T> = Result<T, ObjectError>;
