//! Who may do what through the gateway. Two kinds of credentials:
//!
//! - the gateway's **root key** (from its config; `hadss dev` prints it): every operation on
//!   every bucket, like an account's root user;
//! - **access keys** stored in the cluster (`crate::access`, made with `hadss admin key`):
//!   each request is checked against the key's grants on the bucket it names (and, for a
//!   copy, read on the source bucket).
//!
//! Anonymous requests are refused (`AccessDenied`), unknown keys get `InvalidAccessKeyId`,
//! a key without the grant `AccessDenied`. Cluster keys come through the object layer's key
//! cache (`object::KEY_CACHE_TTL_MS`), so a new key, a changed grant or a deleted key takes
//! effect on every gateway within that time.

use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{CopyObjectInput, CopySource, UploadPartCopyInput};
use s3s::path::S3Path;
use s3s::{S3Request, S3Result, s3_error};

use crate::access::{AccessKey, Action};
use crate::object::ObjectStore;

/// Who signed a request, as the handlers see it (in the request's extensions).
#[derive(Debug, Clone)]
pub enum Caller {
    /// The gateway's root key.
    Root,
    /// A cluster access key.
    Key(Arc<AccessKey>),
}

impl Caller {
    /// Whether the caller may do `action`.
    pub fn allows(&self, action: Action<'_>) -> bool {
        match self {
            Caller::Root => true,
            Caller::Key(k) => k.allows(action),
        }
    }

    /// The access key id, for a cluster key.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Caller::Root => None,
            Caller::Key(k) => Some(&k.id),
        }
    }
}

/// The gateway's credentials: the root key, and the cluster keys.
pub struct GatewayKeys {
    root_id: String,
    root_secret: String,
    objects: Option<Arc<ObjectStore>>,
}

impl std::fmt::Debug for GatewayKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayKeys")
            .field("root_id", &self.root_id)
            .finish_non_exhaustive()
    }
}

impl GatewayKeys {
    /// The root key alone (no cluster keys).
    pub fn root_only(access_key: &str, secret_key: &str) -> GatewayKeys {
        GatewayKeys {
            root_id: access_key.to_string(),
            root_secret: secret_key.to_string(),
            objects: None,
        }
    }

    /// The root key, and the cluster keys read through `objects`.
    pub fn with_cluster(access_key: &str, secret_key: &str, objects: Arc<ObjectStore>) -> GatewayKeys {
        GatewayKeys {
            objects: Some(objects),
            ..GatewayKeys::root_only(access_key, secret_key)
        }
    }

    async fn cluster_key(&self, id: &str) -> S3Result<Option<Arc<AccessKey>>> {
        match &self.objects {
            None => Ok(None),
            Some(objects) => objects.access_key(id).await.map_err(|e| match e {
                crate::object::ObjectError::Unavailable(_) => {
                    s3_error!(ServiceUnavailable, "the access key could not be read; retry")
                }
                other => other.into(),
            }),
        }
    }

    async fn caller(&self, access_key: &str) -> S3Result<Caller> {
        if access_key == self.root_id {
            return Ok(Caller::Root);
        }
        match self.cluster_key(access_key).await? {
            Some(k) => Ok(Caller::Key(k)),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// A handle the S3 service builder can own (auth and access share one cache).
#[derive(Debug, Clone)]
pub struct SharedKeys(pub Arc<GatewayKeys>);

#[async_trait::async_trait]
impl S3Auth for SharedKeys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.caller(access_key).await? {
            Caller::Root => Ok(SecretKey::from(self.0.root_secret.as_str())),
            Caller::Key(k) => Ok(SecretKey::from(k.secret.as_str())),
        }
    }
}

/// The action an S3 operation on a path needs.
pub fn action_of<'a>(op: &str, path: &'a S3Path) -> Action<'a> {
    match path {
        S3Path::Root => Action::ListBuckets,
        S3Path::Bucket { bucket } => match op {
            "CreateBucket" => Action::CreateBucket,
            "HeadBucket" | "GetBucketLocation" => Action::See(bucket),
            "ListObjects" | "ListObjectsV2" | "ListObjectVersions" | "ListMultipartUploads" | "GetBucketVersioning" => {
                Action::Read(bucket)
            }
            "DeleteObjects" => Action::Write(bucket),
            // DeleteBucket and every bucket setting.
            _ => Action::Own(bucket),
        },
        S3Path::Object { bucket, .. } => match op {
            "GetObject" | "HeadObject" | "ListParts" | "GetObjectAcl" | "GetObjectTagging" | "GetObjectAttributes" => {
                Action::Read(bucket)
            }
            _ => Action::Write(bucket),
        },
    }
}

/// Who signed `req` (the access check put it there).
pub fn caller_of<T>(req: &S3Request<T>) -> S3Result<Caller> {
    req.extensions
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| s3_error!(AccessDenied, "Signature is required"))
}

fn may_read_source(caller: &Caller, source: &CopySource) -> S3Result<()> {
    match source {
        CopySource::Bucket { bucket, .. } if caller.allows(Action::Read(bucket)) => Ok(()),
        CopySource::Bucket { .. } => Err(s3_error!(AccessDenied, "no read access to the copy source")),
        _ => Err(s3_error!(NotImplemented, "only bucket/key copy sources are supported")),
    }
}

#[async_trait::async_trait]
impl S3Access for SharedKeys {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        let caller = self.0.caller(&credentials.access_key).await?;
        if !caller.allows(action_of(cx.s3_op().name(), cx.s3_path())) {
            return Err(s3_error!(AccessDenied));
        }
        cx.extensions_mut().insert(caller);
        Ok(())
    }

    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        may_read_source(&caller_of(req)?, &req.input.copy_source)
    }

    async fn upload_part_copy(&self, req: &mut S3Request<UploadPartCopyInput>) -> S3Result<()> {
        may_read_source(&caller_of(req)?, &req.input.copy_source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_map_to_the_grant_they_need() {
        let root = S3Path::Root;
        let bucket = S3Path::Bucket { bucket: "b".into() };
        let object = S3Path::Object {
            bucket: "b".into(),
            key: "k".into(),
        };
        assert_eq!(action_of("ListBuckets", &root), Action::ListBuckets);
        assert_eq!(action_of("CreateBucket", &bucket), Action::CreateBucket);
        assert_eq!(action_of("DeleteBucket", &bucket), Action::Own("b"));
        assert_eq!(action_of("PutBucketPolicy", &bucket), Action::Own("b"));
        assert_eq!(action_of("HeadBucket", &bucket), Action::See("b"));
        assert_eq!(action_of("ListObjectsV2", &bucket), Action::Read("b"));
        assert_eq!(action_of("DeleteObjects", &bucket), Action::Write("b"));
        assert_eq!(action_of("GetObject", &object), Action::Read("b"));
        assert_eq!(action_of("HeadObject", &object), Action::Read("b"));
        for op in [
            "PutObject",
            "DeleteObject",
            "CopyObject",
            "CreateMultipartUpload",
            "UploadPart",
        ] {
            assert_eq!(action_of(op, &object), Action::Write("b"), "{op}");
        }
    }
}
