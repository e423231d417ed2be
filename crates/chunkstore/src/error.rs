//! The chunk store's one error type.
//!
//! Every variant says, in its documentation, whether the store's state changed and whether
//! retrying may help. Corruption is its own variant and never carries bytes.

use std::io;
use std::path::PathBuf;

use crate::ChunkId;

/// Everything that can go wrong in the chunk store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O call failed. For a put or delete nothing was acknowledged and
    /// the write position was not advanced; a retry may succeed if the cause is transient.
    #[error("I/O error while {context} ({path}): {source}")]
    Io {
        /// What the store was doing.
        context: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The disk is full (ENOSPC) or the configured capacity is reached. Nothing already stored
    /// was touched; puts succeed again once space is freed (delete, then compact).
    #[error("store is full: {needed_bytes} more bytes needed, capacity {capacity_bytes} bytes")]
    Full {
        /// Bytes the operation needed.
        needed_bytes: u64,
        /// The configured capacity, or the bytes in use when the file system itself is full.
        capacity_bytes: u64,
    },
    /// Stored bytes failed verification (checksum, length, or BLAKE3 of the content). The bad
    /// copy is set aside (never served again) and counted; the chunk must be repaired from a
    /// replica by putting it again. Retrying the read does not help.
    #[error("corrupt chunk {id} in segment {segment_id} at offset {offset}: {what}")]
    Corruption {
        /// The chunk whose stored copy is bad.
        id: ChunkId,
        /// Segment holding the bad record.
        segment_id: u32,
        /// Offset of the record in the segment.
        offset: u64,
        /// Which check failed.
        what: &'static str,
    },
    /// The caller claimed an id that is not the BLAKE3 of the bytes it sent. Nothing stored.
    #[error("chunk content hashes to {actual}, not the claimed id {claimed}")]
    IdMismatch {
        /// The id the caller claimed.
        claimed: ChunkId,
        /// BLAKE3 of the bytes received.
        actual: ChunkId,
    },
    /// A chunk exceeds the configured maximum size. Nothing changed.
    #[error("chunk of {size_bytes} bytes exceeds the maximum of {max_bytes} bytes")]
    TooLarge {
        /// The chunk's size.
        size_bytes: u64,
        /// The configured maximum.
        max_bytes: u64,
    },
    /// Another process (or another `Store` in this process) has the directory open.
    #[error("store directory {0} is locked by another process")]
    Locked(PathBuf),
    /// The options are inconsistent. Nothing changed.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// An fsync failed earlier. After a failed fsync the kernel may have dropped dirty pages,
    /// so the store refuses further writes until it is reopened (which rescans the disk).
    /// Reads still work.
    #[error("store refused the write: an earlier fsync failed; reopen the store")]
    Poisoned,
    /// A file was written by a newer, unknown format version. Nothing changed.
    #[error("{path}: unsupported format version {found}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// Waited too long for an internal condition (for example in-flight puts to finish
    /// before a checkpoint). Nothing changed; retry later.
    #[error("timed out while {0}")]
    Timeout(&'static str),
}

impl Error {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Io { .. } | Error::Full { .. } | Error::Timeout(_))
    }

    /// Whether this error reports damaged stored data.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }

    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }
}

/// Result alias for the chunk store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether an I/O error means "no space left on device" (or the quota equivalent).
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}
