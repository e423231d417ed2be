//! The object store's caches: buckets seen to exist, and access keys read from the
//! cluster (or learned not to exist), each trusted for a short time and bounded in size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::layout::BucketMeta;
use crate::access::AccessKey;

/// How long an object request may trust that a bucket it saw still exists, without a quorum
/// read. Only existing buckets are cached (a new bucket is visible at once everywhere); a
/// bucket deleted through another gateway may still take writes here this long, as S3
/// documents bucket deletion as eventually consistent. Bucket operations never use it.
pub const BUCKET_CACHE_TTL_MS: u64 = 1_000;
/// Buckets remembered at most (the cache is emptied when full).
const BUCKET_CACHE_LEN_MAX: usize = 10_000;

/// Buckets seen to exist, and when.
#[derive(Default)]
pub(super) struct BucketCache(Mutex<HashMap<String, (Instant, BucketMeta)>>);

impl BucketCache {
    pub(super) fn get(&self, bucket: &str) -> Option<BucketMeta> {
        let cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (seen, meta) = cache.get(bucket)?;
        (seen.elapsed() < Duration::from_millis(BUCKET_CACHE_TTL_MS)).then(|| meta.clone())
    }

    pub(super) fn put(&self, bucket: &str, meta: &BucketMeta) {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= BUCKET_CACHE_LEN_MAX {
            cache.clear();
        }
        cache.insert(bucket.to_string(), (Instant::now(), meta.clone()));
    }

    pub(super) fn forget(&self, bucket: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(bucket);
    }
}

/// How long a key read from the cluster (or learned not to exist) is trusted.
pub const KEY_CACHE_TTL_MS: u64 = 1000;
/// Most keys cached; past it the cache starts over.
pub const KEY_CACHE_LEN_MAX: usize = 10_000;

/// A key read from the cluster (or its absence), and when.
type Cached = (Instant, Option<Arc<AccessKey>>);

/// Keys by id.
#[derive(Default)]
pub(super) struct KeyCache(Mutex<HashMap<String, Cached>>);

impl KeyCache {
    /// A key (or its absence) read within `KEY_CACHE_TTL_MS`.
    pub(super) fn get(&self, id: &str) -> Option<Option<Arc<AccessKey>>> {
        let cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (seen, key) = cache.get(id)?;
        (seen.elapsed() < Duration::from_millis(KEY_CACHE_TTL_MS)).then(|| key.clone())
    }

    /// Remembers a key (or its absence) read now.
    pub(super) fn put(&self, id: &str, key: Option<Arc<AccessKey>>) {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= KEY_CACHE_LEN_MAX {
            cache.clear();
        }
        cache.insert(id.to_string(), (Instant::now(), key));
    }

    /// Drops a cached key (this store changed it: the next lookup reads it afresh).
    pub(super) fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}
