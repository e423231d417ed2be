//! Listings: a bucket's objects in key order with prefix, delimiter (common prefixes) and
//! marker, one page at a time; and the multipart uploads in progress.

use super::error::ObjectResult;
use super::layout::{
    ObjectMeta, ObjectRecord, UploadRecord, object_key, object_prefix, objects_partition_key, upload_key, upload_prefix,
};
use super::store::ObjectStore;
use crate::storage::records::RecordValue;

/// Records read per scan while listing.
pub(super) const LIST_PAGE_RECORDS: usize = 1000;
/// Most scan pages one listing request reads (tombstones and skipped prefixes included).
const LIST_PAGES_MAX: usize = 64;

/// One page of a bucket listing.
#[derive(Debug, Default)]
pub struct Listing {
    /// Objects, in key order.
    pub objects: Vec<(String, ObjectMeta)>,
    /// Common prefixes (with a delimiter), in order.
    pub common_prefixes: Vec<String>,
    /// Whether more follow.
    pub truncated: bool,
    /// The last key or common prefix returned (the next marker).
    pub last: Option<String>,
}

impl Listing {
    /// Objects and common prefixes returned.
    pub fn len(&self) -> usize {
        self.objects.len() + self.common_prefixes.len()
    }

    /// Whether nothing was returned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSummary {
    /// The object key.
    pub key: String,
    /// The upload id.
    pub upload_id: String,
    /// When it started, ms since the Unix epoch.
    pub initiated_ms: u64,
}

/// One page of uploads in progress.
#[derive(Debug, Default)]
pub struct UploadListing {
    /// Uploads by key, then id.
    pub uploads: Vec<UploadSummary>,
    /// Whether more follow.
    pub truncated: bool,
}

impl ObjectStore {
    /// One listing page: objects and common prefixes after `after` (an object key or a
    /// common prefix returned before), at most `max_keys`.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max_keys: usize,
    ) -> ObjectResult<Listing> {
        self.bucket(bucket).await?;
        let partition = self.partition(&objects_partition_key(bucket))?;
        let base = object_prefix(bucket);
        let mut scan_prefix = base.clone();
        scan_prefix.extend_from_slice(prefix.as_bytes());
        let mut cursor: Option<Vec<u8>> = after.map(|a| object_key(bucket, a));
        let mut out = Listing::default();
        let delimiter = delimiter.filter(|d| !d.is_empty());
        for _ in 0..LIST_PAGES_MAX {
            let (page, complete) = self
                .node
                .scan_records(partition, &scan_prefix, cursor.as_deref(), LIST_PAGE_RECORDS)
                .await?;
            let page_len = page.len();
            let mut jumped = false;
            for rec in page {
                cursor = Some(rec.key.clone());
                let RecordValue::Data(value) = &rec.value else { continue };
                let Ok(key) = std::str::from_utf8(&rec.key[base.len()..]) else {
                    continue;
                };
                if let Some(d) = delimiter
                    && let Some(i) = key[prefix.len()..].find(d)
                {
                    let common = &key[..prefix.len() + i + d.len()];
                    // Skip every key under this common prefix: keys are UTF-8, never 0xFF.
                    let mut skip = object_key(bucket, common);
                    skip.push(0xff);
                    cursor = Some(skip);
                    jumped = true;
                    // A prefix at or before the marker was returned on an earlier page.
                    if after.is_some_and(|a| common <= a) {
                        break;
                    }
                    if out.len() >= max_keys {
                        out.truncated = true;
                        return Ok(out);
                    }
                    out.common_prefixes.push(common.to_string());
                    out.last = Some(common.to_string());
                    break;
                }
                if out.len() >= max_keys {
                    out.truncated = true;
                    return Ok(out);
                }
                let meta = ObjectRecord::decode(value)?;
                out.last = Some(key.to_string());
                out.objects.push((key.to_string(), meta));
            }
            if !jumped && (complete || page_len == 0) {
                return Ok(out);
            }
        }
        // Too many tombstones or skipped keys for one request: return what we have.
        out.truncated = true;
        Ok(out)
    }

    /// Uploads in progress whose key starts with `prefix`, after (`key_marker`,
    /// `upload_id_marker`), at most `max_uploads`.
    pub async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: Option<&str>,
        upload_id_marker: Option<&str>,
        max_uploads: usize,
    ) -> ObjectResult<UploadListing> {
        self.bucket(bucket).await?;
        let partition = self.partition(&objects_partition_key(bucket))?;
        let base = upload_prefix(bucket);
        let mut scan_prefix = base.clone();
        scan_prefix.extend_from_slice(prefix.as_bytes());
        let mut after = match (key_marker, upload_id_marker) {
            (Some(k), Some(u)) => Some(upload_key(bucket, k, u)),
            // Past every upload of the marker key (upload ids are hex, below 0x7f).
            (Some(k), None) => Some(upload_key(bucket, k, &char::from(0x7f).to_string())),
            _ => None,
        };
        let mut out = UploadListing::default();
        'pages: for _ in 0..LIST_PAGES_MAX {
            let (page, complete) = self
                .node
                .scan_records(partition, &scan_prefix, after.as_deref(), LIST_PAGE_RECORDS)
                .await?;
            let empty = page.is_empty();
            for rec in page {
                after = Some(rec.key.clone());
                let RecordValue::Data(v) = &rec.value else { continue };
                let meta = UploadRecord::decode(v)?;
                let Some((key, id)) = std::str::from_utf8(&rec.key[base.len()..])
                    .ok()
                    .and_then(|s| s.split_once(char::from(0)))
                else {
                    continue;
                };
                if out.uploads.len() >= max_uploads {
                    out.truncated = true;
                    break 'pages;
                }
                out.uploads.push(UploadSummary {
                    key: key.to_string(),
                    upload_id: id.to_string(),
                    initiated_ms: meta.initiated_ms,
                });
            }
            if complete || empty {
                break;
            }
        }
        Ok(out)
    }
}
