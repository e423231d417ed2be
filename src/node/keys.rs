//! Serves access key requests (`crate::access`) on any node with a map: each is a read, an
//! edit and a write of one replicated record (R replicas read, W durable before the answer),
//! so keys can be managed with every monitor down. The gateway calls the same code for the
//! grants it makes itself (a created bucket is owned by the key that created it).

use super::runtime::Inner;
use super::runtime::Node;
use crate::access::{
    AccessKey, KEY_PREFIX, KEYS_LISTED_MAX, KEYS_PARTITION_KEY, KeyRequest, KeyResponse, key_record_key,
};
use crate::cluster::partition_of_key;
use crate::storage::records::{Record, RecordValue, Version};
use std::sync::Arc;

/// Keys asked for per scan page.
const KEYS_PAGE_LEN: usize = 1000;

impl Inner {
    fn keys_partition(&self) -> anyhow::Result<u32> {
        let view = self.view().ok_or_else(|| anyhow::anyhow!("no cluster map yet"))?;
        Ok(partition_of_key(view.0.partitions, KEYS_PARTITION_KEY))
    }

    /// Reads one key (`None`: no such key, or deleted).
    pub(super) async fn read_key(self: &Arc<Self>, id: &str) -> anyhow::Result<Option<(AccessKey, Version)>> {
        let partition = self.keys_partition()?;
        match self.clone().get_record(partition, key_record_key(id)).await? {
            Some(Record {
                value: RecordValue::Data(bytes),
                version,
                ..
            }) => Ok(Some((AccessKey::decode(&bytes)?, version))),
            _ => Ok(None),
        }
    }

    async fn write_key(self: &Arc<Self>, id: &str, value: RecordValue, after: Option<Version>) -> anyhow::Result<()> {
        let partition = self.keys_partition()?;
        let mut hlc = self.clock.now_ms() << 16;
        if let Some(v) = after {
            // Newer than what was read, even if this node's clock is behind the writer's.
            hlc = hlc.max(v.hlc + 1);
        }
        self.clone()
            .write_record(Record {
                partition,
                key: key_record_key(id),
                version: Version {
                    hlc,
                    unique: rand::random(),
                },
                value,
            })
            .await?;
        Ok(())
    }

    /// Serves one key request.
    pub(super) async fn handle_keys(self: Arc<Self>, request: KeyRequest) -> KeyResponse {
        match self.keys_op(request).await {
            Ok(r) => r,
            Err(e) => KeyResponse::Error(format!("{e:#}")),
        }
    }

    async fn keys_op(self: &Arc<Self>, request: KeyRequest) -> anyhow::Result<KeyResponse> {
        Ok(match request {
            KeyRequest::Create { name, create_bucket } => {
                let key = AccessKey::generate(&name, create_bucket, self.clock.now_ms())?;
                self.store_new(key).await?
            }
            KeyRequest::Import { id, secret, name } => {
                let key = AccessKey::import(&id, &secret, &name, self.clock.now_ms())?;
                self.store_new(key).await?
            }
            KeyRequest::Info { id } => match self.read_key(&id).await? {
                Some((key, _)) => KeyResponse::Key(key.summary()),
                None => KeyResponse::NoSuchKey,
            },
            KeyRequest::Edit { id, edit } => match self.read_key(&id).await? {
                Some((mut key, version)) => {
                    key.edit(&edit)?;
                    self.write_key(&id, RecordValue::Data(key.encode()), Some(version))
                        .await?;
                    KeyResponse::Key(key.summary())
                }
                None => KeyResponse::NoSuchKey,
            },
            KeyRequest::Delete { id } => match self.read_key(&id).await? {
                Some((_, version)) => {
                    self.write_key(&id, RecordValue::Tombstone, Some(version)).await?;
                    KeyResponse::Done
                }
                None => KeyResponse::NoSuchKey,
            },
            KeyRequest::List => KeyResponse::Keys(self.list_keys().await?),
        })
    }

    async fn store_new(self: &Arc<Self>, key: AccessKey) -> anyhow::Result<KeyResponse> {
        if self.read_key(&key.id).await?.is_some() {
            anyhow::bail!("key {} exists", key.id);
        }
        self.write_key(&key.id, RecordValue::Data(key.encode()), None).await?;
        Ok(KeyResponse::Created {
            id: key.id,
            secret: key.secret,
        })
    }

    async fn list_keys(self: &Arc<Self>) -> anyhow::Result<Vec<crate::access::KeySummary>> {
        let partition = self.keys_partition()?;
        let mut keys = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        while keys.len() < KEYS_LISTED_MAX {
            let (page, complete) = self
                .clone()
                .scan_records(partition, KEY_PREFIX, after.as_deref(), KEYS_PAGE_LEN)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for rec in page {
                if let RecordValue::Data(bytes) = &rec.value {
                    keys.push(AccessKey::decode(bytes)?.summary());
                }
            }
            if complete {
                break;
            }
        }
        keys.truncate(KEYS_LISTED_MAX);
        Ok(keys)
    }
}

impl Node {
    /// Serves an access key request here (what a remote `AdminRequest::Keys` gets).
    pub async fn key_request(&self, request: crate::access::KeyRequest) -> crate::access::KeyResponse {
        self.inner.clone().handle_keys(request).await
    }

    /// Reads one access key from R replicas (`None`: no such key, or deleted).
    pub async fn access_key(&self, id: &str) -> anyhow::Result<Option<crate::access::AccessKey>> {
        Ok(self.inner.read_key(id).await?.map(|(key, _)| key))
    }
}
