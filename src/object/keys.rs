//! Access keys as front ends see them: looked up by id through a short-lived cache, so a
//! new key, a changed grant or a deleted key takes effect on every gateway (and SDK
//! listener) within `cache::KEY_CACHE_TTL_MS`. The key model and its edits are `crate::access`.

use std::sync::Arc;

use super::error::{ObjectError, ObjectResult};
use super::store::ObjectStore;
use crate::access::AccessKey;

impl ObjectStore {
    /// A cluster access key by id (`None`: no such key): from the cache if read within
    /// `KEY_CACHE_TTL_MS`, else by quorum read.
    pub async fn access_key(&self, id: &str) -> ObjectResult<Option<Arc<AccessKey>>> {
        if let Some(key) = self.keys.get(id) {
            return Ok(key);
        }
        if id.len() > crate::access::KEY_ID_LEN_MAX {
            return Ok(None);
        }
        let key = match self.node.access_key(id).await {
            Ok(k) => k.map(Arc::new),
            Err(e) => {
                tracing::warn!(error = %e, "reading an access key failed");
                return Err(ObjectError::Unavailable(format!(
                    "the access key could not be read: {e}"
                )));
            }
        };
        self.keys.put(id, key.clone());
        Ok(key)
    }

    /// Drops a cached key, so the next lookup reads it afresh.
    pub fn forget_key(&self, id: &str) {
        self.keys.forget(id);
    }
}
