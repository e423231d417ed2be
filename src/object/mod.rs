//! The object layer: buckets, objects with chunked bodies, listings, multipart uploads,
//! conditional and create-only writes, and access keys with their grants — one typed async
//! API over the node runtime, used by every front end (the S3 gateway today, the client SDK
//! next). It owns the record layout (`layout`), the chunking of bodies (`body`), the
//! clock-skew rewrite loop for records, and the bucket and key caches. It knows nothing of
//! HTTP or S3 XML: errors are [`ObjectError`]s, bodies are byte streams.
//!
//! Invariants:
//! - an object record is written only after every chunk it names is on W replicas and has
//!   its chunk reference (`storage::refs`), so a reader never finds a record whose chunks
//!   are missing and garbage collection never takes a chunk a record names;
//! - memory per request is bounded whatever the object size (`CHUNKS_IN_FLIGHT_MAX`
//!   chunk writes per PUT, `GATEWAY_CHUNK_WRITES_MAX` in the whole store);
//! - an acknowledged record write is the version readers see: a write that lost to a newer
//!   version (another writer's clock was ahead) is redone after it (`RECORD_REWRITES_MAX`).
//!
//! Files: `store` (the `ObjectStore` and the record helpers every operation uses), `bucket`
//! (buckets, grants of new and deleted buckets), `objects` (put, get, head, delete, copy,
//! conditions, create-only), `list` (listings), `multipart` (uploads and parts), `body`
//! (chunking a body in, streaming one out), `keys` (access keys), `cache` (the bucket and
//! key caches), `layout` (record keys and values), `error`. This file only declares and
//! re-exports: every other file imports what it needs from the file that defines it.

mod body;
mod bucket;
mod cache;
mod error;
mod keys;
pub mod layout;
mod list;
mod multipart;
mod objects;
mod store;

pub use body::ObjectStream;
pub use cache::{BUCKET_CACHE_TTL_MS, KEY_CACHE_LEN_MAX, KEY_CACHE_TTL_MS};
pub use error::{ObjectError, ObjectResult};
pub use layout::{
    BucketMeta, ChunkRef, ObjectBody, ObjectMeta, PART_NUMBER_MAX, PART_SIZE_BYTES_MIN, PartMeta, StoredHeaders,
    UploadMeta,
};
pub use list::{Listing, UploadListing, UploadSummary};
pub use multipart::{CompletedPart, StagedPart, part_number};
pub use objects::{Conditions, DELETE_OBJECTS_MAX, EtagMatch, PutOptions, StagedPut, Stored};
pub use store::{CHUNKS_IN_FLIGHT_MAX, CHUNKS_PREFETCH, GATEWAY_CHUNK_WRITES_MAX, ObjectStore};
