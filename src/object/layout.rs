//! How the object layer lays buckets, objects, uploads and parts out as cluster records.
//!
//! - Bucket records: all in one partition (that of `"buckets"`), key `b/<bucket>`, so
//!   ListBuckets is one scan.
//! - Object records: in the partition of `o/<bucket>` (like Garage, a bucket's object index
//!   lives on one replica set), key `o/<bucket>/<object key>`, so listing with prefix,
//!   delimiter and marker is a range scan in key order. Bucket names never contain `/`, so a
//!   bucket's keys never interleave with another's.
//! - Values are postcard of a versioned enum; a value that does not decode is reported as
//!   corrupt, never guessed at.
//!
//! Small objects are stored inline in their record; larger ones as a list of
//! content-addressed chunks.

use serde::{Deserialize, Serialize};

pub use crate::access::valid_bucket_name;

/// Objects up to this size live inline in their record (one replicated write per PUT).
pub const INLINE_SIZE_BYTES_MAX: usize = 128 * 1024;
/// Chunk size for larger objects.
pub const CHUNK_SIZE_BYTES: usize = 4 * 1024 * 1024;
/// Largest object one PutObject may store (S3's single-PUT limit).
pub const OBJECT_SIZE_BYTES_MAX: u64 = 5 * 1024 * 1024 * 1024;
/// Most user metadata bytes per object (S3 allows 2 KiB).
pub const USER_METADATA_SIZE_BYTES_MAX: usize = 2048;

/// Record key of a bucket.
pub fn bucket_key(bucket: &str) -> Vec<u8> {
    format!("b/{bucket}").into_bytes()
}

/// What every bucket record key starts with.
pub const BUCKET_PREFIX: &[u8] = b"b/";
/// The key whose partition holds every bucket record.
pub const BUCKETS_PARTITION_KEY: &[u8] = b"buckets";

/// The key whose partition holds a bucket's object records.
pub fn objects_partition_key(bucket: &str) -> Vec<u8> {
    format!("o/{bucket}").into_bytes()
}

/// What every object record key of `bucket` starts with.
pub fn object_prefix(bucket: &str) -> Vec<u8> {
    format!("o/{bucket}/").into_bytes()
}

/// Record key of an object.
pub fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = object_prefix(bucket);
    k.extend_from_slice(key.as_bytes());
    k
}

/// What every multipart-upload record key of `bucket` starts with.
pub fn upload_prefix(bucket: &str) -> Vec<u8> {
    format!("m/{bucket}/").into_bytes()
}

/// Record key of a multipart upload: object key, then NUL, then the upload id, so uploads
/// list in key order, then by id (S3 keys cannot hold NUL: XML 1.0 cannot carry it).
pub fn upload_key(bucket: &str, key: &str, upload_id: &str) -> Vec<u8> {
    let mut k = upload_prefix(bucket);
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k.extend_from_slice(upload_id.as_bytes());
    k
}

/// What every part record key of an upload starts with.
pub fn part_prefix(bucket: &str, upload_id: &str) -> Vec<u8> {
    format!("p/{bucket}/{upload_id}/").into_bytes()
}

/// Record key of one part (zero-padded so parts list in number order).
pub fn part_key(bucket: &str, upload_id: &str, part_number: u32) -> Vec<u8> {
    let mut k = part_prefix(bucket, upload_id);
    k.extend_from_slice(format!("{part_number:05}").as_bytes());
    k
}

/// Highest part number (S3's limit).
pub const PART_NUMBER_MAX: u32 = 10_000;
/// Smallest size of every part but the last (S3's limit).
pub const PART_SIZE_BYTES_MIN: u64 = 5 * 1024 * 1024;

/// A multipart upload record's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UploadRecord {
    /// Version 1.
    V1(UploadMeta),
}

/// An upload in progress: what the object will carry once completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMeta {
    /// Start, ms since the Unix epoch.
    pub initiated_ms: u64,
    /// Headers for the object.
    pub headers: StoredHeaders,
    /// User metadata for the object.
    pub user_metadata: Vec<(String, String)>,
}

/// A part record's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartRecord {
    /// Version 1.
    V1(PartMeta),
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMeta {
    /// Size in bytes.
    pub size_bytes: u64,
    /// MD5 of the part, hex.
    pub etag: String,
    /// Upload time, ms since the Unix epoch.
    pub last_modified_ms: u64,
    /// Its chunks, in order (parts are never inline: they join a chunked object).
    pub chunks: Vec<ChunkRef>,
}

macro_rules! versioned_codec {
    ($record:ident, $meta:ident, $what:literal) => {
        impl $record {
            /// Encodes for storage.
            pub fn encode(&self) -> Vec<u8> {
                // Serialising plain data into a Vec cannot fail.
                postcard::to_allocvec(self).unwrap_or_default()
            }

            /// Decodes a stored value.
            pub fn decode(bytes: &[u8]) -> Result<$meta, CorruptRecord> {
                match postcard::from_bytes::<$record>(bytes) {
                    Ok($record::V1(meta)) => Ok(meta),
                    Err(_) => Err(CorruptRecord { what: $what }),
                }
            }
        }
    };
}

versioned_codec!(ObjectRecord, ObjectMeta, "object");
versioned_codec!(BucketRecord, BucketMeta, "bucket");
versioned_codec!(UploadRecord, UploadMeta, "upload");
versioned_codec!(PartRecord, PartMeta, "part");

/// A bucket record's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BucketRecord {
    /// Version 1.
    V1(BucketMeta),
}

/// What the cluster knows of a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketMeta {
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// Access key that created it.
    pub owner: String,
}

/// An object record's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectRecord {
    /// Version 1.
    V1(ObjectMeta),
}

/// An object's metadata and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size_bytes: u64,
    /// The S3 ETag without quotes (hex MD5 for single-part objects).
    pub etag: String,
    /// Last modification, ms since the Unix epoch.
    pub last_modified_ms: u64,
    /// Standard headers stored and returned as given.
    pub headers: StoredHeaders,
    /// `x-amz-meta-*` pairs (names lower-case, without the prefix).
    pub user_metadata: Vec<(String, String)>,
    /// The bytes.
    pub body: ObjectBody,
}

/// Content headers kept with an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHeaders {
    /// Content-Type.
    pub content_type: Option<String>,
    /// Content-Encoding.
    pub content_encoding: Option<String>,
    /// Content-Disposition.
    pub content_disposition: Option<String>,
    /// Content-Language.
    pub content_language: Option<String>,
    /// Cache-Control.
    pub cache_control: Option<String>,
}

/// Where an object's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectBody {
    /// In the record itself.
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    /// In chunks, in order.
    Chunks(Vec<ChunkRef>),
}

/// One chunk of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// BLAKE3 of the chunk.
    pub id: [u8; 32],
    /// Its length.
    pub size_bytes: u32,
}

/// Why a stored value could not be read.
#[derive(Debug, thiserror::Error)]
#[error("stored {what} record does not decode")]
pub struct CorruptRecord {
    /// Which kind of record.
    pub what: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_within_a_bucket_and_values_round_trip() {
        assert!(object_key("b", "a/1") < object_key("b", "a/2"));
        assert!(object_key("b", "z").starts_with(&object_prefix("b")));
        assert!(!object_key("bb", "x").starts_with(&object_prefix("b")));
        let meta = ObjectMeta {
            size_bytes: 3,
            etag: "abc".into(),
            last_modified_ms: 1,
            headers: StoredHeaders::default(),
            user_metadata: vec![("k".into(), "v".into())],
            body: ObjectBody::Inline(b"xyz".to_vec()),
        };
        assert_eq!(
            ObjectRecord::decode(&ObjectRecord::V1(meta.clone()).encode()).expect("decode"),
            meta
        );
        assert!(ObjectRecord::decode(b"\x07garbage").is_err());
        assert!(valid_bucket_name("my-bucket.1"));
        for bad in [
            "ab",
            "Upper",
            "-x-",
            "a..b",
            "192.168.1.1",
            "has/slash",
            &"x".repeat(64),
        ] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }
}
