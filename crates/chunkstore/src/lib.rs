//! `chunkstore`: an embedded store of immutable, content-addressed chunks.
//!
//! A chunk's id is the BLAKE3-256 of its content. Chunks live in append-only segment files
//! read through `mmap`; every read verifies a checksum and never returns a corrupt byte;
//! puts are durable when they return and share fsyncs (group commit); opening the store after
//! a crash at any instant keeps every acknowledged write. See `docs/ARCHITECTURE.md` for the
//! file formats, the recovery procedure and the memory per chunk.
//!
//! ```no_run
//! # fn main() -> Result<(), chunkstore::Error> {
//! let store = chunkstore::Store::open("/tmp/chunks", chunkstore::Options::default())?;
//! let put = store.put(b"hello")?;
//! let chunk = store.get(&put.id)?.expect("just stored");
//! assert_eq!(&chunk[..], b"hello");
//! store.close()?;
//! # Ok(()) }
//! ```
//!
//! What this crate does not do: replication, networking, or choosing what to delete. The
//! storage node builds those on top, using the Merkle summary to find differences between
//! replicas.

#![deny(unsafe_code)]

mod checkpoint;
mod error;
mod id;
mod index;
pub mod merkle;
pub mod record;
mod segment;
mod store;

pub use error::{Error, Result};
pub use id::{CHUNK_ID_SIZE_BYTES, ChunkId, ParseChunkIdError};
pub use merkle::{MerkleNode, MerkleShape, MerkleTree};
pub use store::{
    CHUNK_SIZE_BYTES_MAX_DEFAULT, Chunk, CompactionReport, Compression, Failpoint, Options, PutOutcome, RecoveryReport,
    SEGMENT_SIZE_BYTES_DEFAULT, ScrubReport, Stats, Store, TOMBSTONE_RESERVE_BYTES,
};

/// Checkpoint decoding, exposed for fuzzing.
#[doc(hidden)]
pub fn decode_checkpoint_for_fuzzing(bytes: &[u8]) -> bool {
    checkpoint::Checkpoint::decode(bytes).is_ok()
}
