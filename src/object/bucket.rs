//! Buckets: create (granting the creating key), look up (through a short-lived cache for
//! object requests), list, delete (revoking every key's grant on it).

use super::error::{ObjectError, ObjectResult};
use super::layout::{BUCKET_PREFIX, BUCKETS_PARTITION_KEY, BucketMeta, BucketRecord, bucket_key, valid_bucket_name};
use super::store::ObjectStore;
use crate::access::{KeyEdit, KeyRequest, KeyResponse, Permission};
use crate::storage::records::RecordValue;

/// Records read per scan while listing buckets.
const BUCKET_PAGE_RECORDS: usize = 1000;
/// Most scan pages one bucket listing reads (deleted buckets included).
const BUCKET_PAGES_MAX: usize = 64;

impl ObjectStore {
    /// The bucket as a quorum read finds it now.
    pub async fn bucket_fresh(&self, bucket: &str) -> ObjectResult<BucketMeta> {
        match self.get_record(BUCKETS_PARTITION_KEY, &bucket_key(bucket)).await? {
            Some(v) => {
                let meta = BucketRecord::decode(&v)?;
                self.buckets.put(bucket, &meta);
                Ok(meta)
            }
            None => {
                self.buckets.forget(bucket);
                Err(ObjectError::NoSuchBucket)
            }
        }
    }

    /// The bucket for an object request: from the cache if seen within
    /// `BUCKET_CACHE_TTL_MS`, else by quorum read.
    pub async fn bucket(&self, bucket: &str) -> ObjectResult<BucketMeta> {
        if let Some(meta) = self.buckets.get(bucket) {
            return Ok(meta);
        }
        self.bucket_fresh(bucket).await
    }

    /// Every bucket, in name order, with its metadata.
    pub async fn list_buckets(&self) -> ObjectResult<Vec<(String, BucketMeta)>> {
        let partition = self.partition(BUCKETS_PARTITION_KEY)?;
        let mut buckets = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        for _ in 0..BUCKET_PAGES_MAX {
            let (page, complete) = self
                .node
                .scan_records(partition, BUCKET_PREFIX, after.as_deref(), BUCKET_PAGE_RECORDS)
                .await?;
            let empty = page.is_empty();
            for rec in page {
                after = Some(rec.key.clone());
                let RecordValue::Data(v) = &rec.value else { continue };
                let meta = BucketRecord::decode(v)?;
                let name = String::from_utf8_lossy(&rec.key[BUCKET_PREFIX.len()..]).into_owned();
                buckets.push((name, meta));
            }
            if complete || empty {
                break;
            }
        }
        Ok(buckets)
    }

    /// Creates a bucket. `creator` is the access key making it (`None` for a gateway's root
    /// key), which is granted every right on it; `creator_sees_existing` says whether the
    /// caller may see the bucket if it exists already (which error that gets).
    pub async fn create_bucket(
        &self,
        bucket: &str,
        owner: &str,
        creator: Option<&str>,
        creator_sees_existing: impl FnOnce() -> bool,
    ) -> ObjectResult<()> {
        if !valid_bucket_name(bucket) {
            return Err(ObjectError::InvalidBucketName);
        }
        match self.bucket_fresh(bucket).await {
            Ok(_) if creator_sees_existing() => return Err(ObjectError::BucketAlreadyOwnedByYou),
            Ok(_) => return Err(ObjectError::BucketAlreadyExists),
            Err(ObjectError::NoSuchBucket) => {}
            Err(e) => return Err(e),
        }
        let meta = BucketMeta {
            created_ms: self.now_ms(),
            owner: owner.to_string(),
        };
        self.put_record(
            BUCKETS_PARTITION_KEY,
            bucket_key(bucket),
            RecordValue::Data(BucketRecord::V1(meta).encode()),
        )
        .await?;
        if let Some(id) = creator {
            // The creating key owns the bucket; without that grant the bucket is unusable to
            // it, so a failed grant undoes the creation.
            let edit = KeyRequest::Edit {
                id: id.to_string(),
                edit: KeyEdit {
                    bucket: Some(bucket.to_string()),
                    grant: Permission::ALL,
                    ..Default::default()
                },
            };
            let reply = self.node.key_request(edit).await;
            self.keys.forget(id);
            if let KeyResponse::Error(_) | KeyResponse::NoSuchKey = reply {
                tracing::warn!(%bucket, key = %id, ?reply, "granting the new bucket to its creator failed");
                self.put_record(BUCKETS_PARTITION_KEY, bucket_key(bucket), RecordValue::Tombstone)
                    .await?;
                self.buckets.forget(bucket);
                return Err(ObjectError::Unavailable(
                    "the bucket could not be granted to its creator; retry".into(),
                ));
            }
        }
        Ok(())
    }

    /// Deletes an empty bucket and every key's grant on it.
    pub async fn delete_bucket(&self, bucket: &str) -> ObjectResult<()> {
        let listing = self.list(bucket, "", None, None, 1).await?;
        if !listing.is_empty() || listing.truncated {
            return Err(ObjectError::BucketNotEmpty);
        }
        self.buckets.forget(bucket);
        self.put_record(BUCKETS_PARTITION_KEY, bucket_key(bucket), RecordValue::Tombstone)
            .await?;
        self.buckets.forget(bucket);
        self.revoke_all_grants(bucket).await;
        Ok(())
    }

    /// Removes every key's grant on a deleted bucket, so a bucket created later under the
    /// same name starts with no grants. Best effort: a failure is logged, and what is left
    /// can be removed with `hadss admin key deny`.
    async fn revoke_all_grants(&self, bucket: &str) {
        let keys = match self.node.key_request(KeyRequest::List).await {
            KeyResponse::Keys(keys) => keys,
            other => {
                tracing::warn!(%bucket, ?other, "listing keys to revoke a deleted bucket's grants failed");
                return;
            }
        };
        for key in keys.into_iter().filter(|k| k.buckets.iter().any(|(b, _)| b == bucket)) {
            let edit = KeyRequest::Edit {
                id: key.id.clone(),
                edit: KeyEdit {
                    bucket: Some(bucket.to_string()),
                    revoke: Permission::ALL,
                    ..Default::default()
                },
            };
            let reply = self.node.key_request(edit).await;
            self.keys.forget(&key.id);
            if let KeyResponse::Error(_) | KeyResponse::NoSuchKey = reply {
                tracing::warn!(%bucket, key = %key.id, ?reply, "revoking a deleted bucket's grant failed");
            }
        }
    }
}
