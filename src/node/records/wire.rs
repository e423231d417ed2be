//! The wire messages of `/hadss/meta/1`: records (put, get, scan), create reservations
//! and anti-entropy questions, each answered by a replica of the partition.

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::net::codec::FrameLimits;
use crate::node::error::RemoteError;
use crate::storage::records::Record;

/// Metadata records.
pub const META_PROTOCOL: StreamProtocol = StreamProtocol::new("/hadss/meta/1");

/// Record frames: a batch of records or a scan page.
pub const META_LIMITS: FrameLimits = FrameLimits {
    request_size_bytes_max: 16 * 1024 * 1024,
    response_size_bytes_max: 32 * 1024 * 1024,
};

/// A request about metadata records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaRequest {
    /// Write records last-writer-wins. `hint_for` marks copies held for a replica that is
    /// down (the receiver hands them back when it returns).
    Put {
        /// The records.
        records: Vec<Record>,
        /// The replica these copies stand in for.
        hint_for: Option<Vec<u8>>,
    },
    /// Read one record.
    Get {
        /// Partition.
        partition: u32,
        /// Key.
        key: Vec<u8>,
    },
    /// Records of a partition whose keys start with `prefix` and sort after `after`, in key
    /// order, at most `limit` (capped at `SCAN_RECORDS_MAX`) and `SCAN_RESPONSE_BYTES_MAX`.
    Scan {
        /// Partition.
        partition: u32,
        /// Key prefix.
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
        /// Exclusive start key.
        after: Option<Vec<u8>>,
        /// Most records wanted.
        limit: u32,
    },
    /// Reserve a key for a create (`If-None-Match: *`): granted unless a live record is
    /// stored or another token holds an unexpired reservation (see `RecordStore::reserve`).
    Reserve {
        /// Partition.
        partition: u32,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The creator's token.
        token: [u8; 16],
        /// How long the reservation lasts (capped at `RESERVATION_TTL_MS_MAX`).
        ttl_ms: u32,
    },
    /// One anti-entropy question about a partition (`crate::storage::antientropy`).
    AntiEntropy {
        /// Partition.
        partition: u32,
        /// The question.
        ask: crate::storage::antientropy::Ask,
    },
    /// Write one record as its primary: store it here if this node is a target, forward it
    /// to the other replicas, answer once W copies are durable (`Coordinated`). Sent by
    /// nodes that are not replicas (gateways) instead of one `Put` per replica.
    Coordinate {
        /// The record.
        record: Record,
    },
    /// Drop the token's reservation of a key.
    Release {
        /// Partition.
        partition: u32,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The creator's token.
        token: [u8; 16],
    },
}

/// Longest a create reservation lasts.
pub const RESERVATION_TTL_MS_MAX: u32 = 120_000;

/// Most bytes of records one scan answer carries (well inside `META_LIMITS`).
pub const SCAN_RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// An answer about metadata records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// Per record, whether it was applied.
    Applied(Vec<bool>),
    /// The record, if any.
    Record(Option<Record>),
    /// A scan page. `complete`: nothing matching follows the last record (the page was not
    /// cut by the count or size limit).
    Records {
        /// Records in key order, tombstones included.
        records: Vec<Record>,
        /// Whether the scan reached the end of the matching keys.
        complete: bool,
    },
    /// The replica's answer to a reservation.
    Reservation(crate::storage::records::Reservation),
    /// The replica's answer to an anti-entropy question.
    AntiEntropy(crate::storage::antientropy::Answer),
    /// The request failed.
    Error(RemoteError),
    /// A `Coordinate`d record is durable on W replicas. `superseded`: a replica held a newer
    /// version (or this very one), which last-writer-wins kept.
    Coordinated {
        /// Whether a replica held a newer version.
        superseded: bool,
    },
    /// The answer (`Record` or `Records`) of a replica still filling the partition after a
    /// new epoch made it an owner: what it holds counts, but it may miss older records, so
    /// it does not count toward a read quorum.
    Filling(Box<MetaResponse>),
}

// No raw body: the whole message is the postcard header.
impl crate::net::codec::Body for MetaRequest {}
impl crate::net::codec::Body for MetaResponse {}
