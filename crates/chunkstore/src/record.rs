//! The on-disk record format and its parser.
//!
//! A segment is a 4 KiB segment header followed by records. Each record is a fixed 64-byte
//! header, then `stored_len` payload bytes, then zero padding to an 8-byte boundary:
//!
//! ```text
//! offset size field
//!      0    4 magic        "HCR1"
//!      4    1 version      1
//!      5    1 kind         1 = put, 2 = tombstone
//!      6    2 flags        bit 0: payload is zstd-compressed
//!      8    8 seq          store-wide sequence number; the highest seq of an id wins
//!     16   32 id           BLAKE3-256 of the uncompressed content
//!     48    4 stored_len   payload bytes on disk
//!     52    4 raw_len      content bytes after decompression
//!     56    4 payload_crc  CRC32C of the stored payload
//!     60    4 header_crc   CRC32C of bytes 0..60
//! ```
//!
//! All integers are little endian. The parser here is pure: it takes bytes and returns a
//! header or a reason it is not one, and never panics on any input (property-tested).

use crate::ChunkId;

/// Record magic, "HCR1".
pub const RECORD_MAGIC: [u8; 4] = *b"HCR1";
/// The only record format version this code writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Size of a record header.
pub const RECORD_HEADER_SIZE_BYTES: usize = 64;
/// Records start at multiples of this, so a resync after damage only tries aligned offsets.
pub const RECORD_ALIGN_BYTES: u64 = 8;
/// Flag: payload is zstd-compressed.
pub const FLAG_ZSTD: u16 = 1;
const KNOWN_FLAGS: u16 = FLAG_ZSTD;

/// Hard ceiling on a record's payload, whatever the options say: bounds what a corrupt
/// length field can make the parser or a reader touch.
pub const RECORD_PAYLOAD_SIZE_BYTES_MAX: u32 = 64 * 1024 * 1024;

/// What a record says about its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// The chunk's content follows.
    Put = 1,
    /// The chunk was deleted; no payload.
    Tombstone = 2,
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Put or tombstone.
    pub kind: RecordKind,
    /// Flags (`FLAG_ZSTD`).
    pub flags: u16,
    /// Store-wide sequence number.
    pub seq: u64,
    /// The chunk id.
    pub id: ChunkId,
    /// Payload bytes on disk.
    pub stored_len: u32,
    /// Content bytes after decompression.
    pub raw_len: u32,
    /// CRC32C of the stored payload.
    pub payload_crc: u32,
}

/// Why bytes are not a valid record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than 64 bytes left.
    Short,
    /// Magic mismatch: not a record start (zeros after a torn tail look like this).
    BadMagic,
    /// The header checksum does not match.
    BadChecksum,
    /// A version this code does not know.
    UnknownVersion(u8),
    /// A field holds an impossible value (kind, flags, lengths).
    InvalidField(&'static str),
}

impl RecordHeader {
    /// Total bytes the record occupies on disk, padding included.
    pub fn record_len_bytes(&self) -> u64 {
        record_len_bytes(self.stored_len)
    }

    /// Whether the payload is zstd-compressed.
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_ZSTD != 0
    }

    /// Encodes the header, computing its checksum.
    pub fn encode(&self) -> [u8; RECORD_HEADER_SIZE_BYTES] {
        let mut b = [0u8; RECORD_HEADER_SIZE_BYTES];
        b[0..4].copy_from_slice(&RECORD_MAGIC);
        b[4] = RECORD_VERSION;
        b[5] = self.kind as u8;
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..48].copy_from_slice(&self.id.0);
        b[48..52].copy_from_slice(&self.stored_len.to_le_bytes());
        b[52..56].copy_from_slice(&self.raw_len.to_le_bytes());
        b[56..60].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates a header from the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<RecordHeader, HeaderError> {
        let b: &[u8; RECORD_HEADER_SIZE_BYTES] = bytes
            .get(..RECORD_HEADER_SIZE_BYTES)
            .and_then(|s| s.try_into().ok())
            .ok_or(HeaderError::Short)?;
        if b[0..4] != RECORD_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let crc_stored = u32::from_le_bytes([b[60], b[61], b[62], b[63]]);
        if crc32c::crc32c(&b[0..60]) != crc_stored {
            return Err(HeaderError::BadChecksum);
        }
        if b[4] != RECORD_VERSION {
            return Err(HeaderError::UnknownVersion(b[4]));
        }
        let kind = match b[5] {
            1 => RecordKind::Put,
            2 => RecordKind::Tombstone,
            _ => return Err(HeaderError::InvalidField("kind")),
        };
        let flags = u16::from_le_bytes([b[6], b[7]]);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(HeaderError::InvalidField("flags"));
        }
        let le32 = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[8..16]);
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[16..48]);
        let header = RecordHeader {
            kind,
            flags,
            seq: u64::from_le_bytes(seq),
            id: ChunkId(id),
            stored_len: le32(48),
            raw_len: le32(52),
            payload_crc: le32(56),
        };
        header.validate()?;
        Ok(header)
    }

    fn validate(&self) -> Result<(), HeaderError> {
        if self.stored_len > RECORD_PAYLOAD_SIZE_BYTES_MAX || self.raw_len > RECORD_PAYLOAD_SIZE_BYTES_MAX {
            return Err(HeaderError::InvalidField("length"));
        }
        match self.kind {
            RecordKind::Tombstone if self.stored_len != 0 || self.raw_len != 0 || self.flags != 0 => {
                Err(HeaderError::InvalidField("tombstone with payload"))
            }
            RecordKind::Put if !self.is_compressed() && self.stored_len != self.raw_len => {
                Err(HeaderError::InvalidField("uncompressed length mismatch"))
            }
            _ => Ok(()),
        }
    }
}

/// Bytes a record with `stored_len` payload bytes occupies, padding included.
pub fn record_len_bytes(stored_len: u32) -> u64 {
    align_up(RECORD_HEADER_SIZE_BYTES as u64 + u64::from(stored_len))
}

/// Rounds up to the record alignment.
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(RECORD_ALIGN_BYTES) * RECORD_ALIGN_BYTES
}

/// CRC32C of a payload.
pub fn payload_crc(payload: &[u8]) -> u32 {
    crc32c::crc32c(payload)
}

/// One step of a segment scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanItem {
    /// A record whose header is valid. `payload_ok` says whether the payload checksum matched
    /// (only computed when the scan was asked to verify payloads; otherwise `true`).
    Record {
        /// Offset of the record in the scanned bytes.
        offset: u64,
        /// Its header.
        header: RecordHeader,
        /// Whether the payload checksum matched.
        payload_ok: bool,
        /// Whether this record was found by resynchronising after damage.
        after_resync: bool,
    },
    /// Bytes between `offset` and `offset + len_bytes` held no valid record.
    Damaged {
        /// Start of the damaged range.
        offset: u64,
        /// Length of the damaged range.
        len_bytes: u64,
    },
}

/// Iterates over the records in `bytes[start..]`, resynchronising past damage.
///
/// After an invalid header the scanner looks for the next aligned record magic whose header
/// validates and whose payload fits; everything skipped is reported as `Damaged`. A run of
/// damage that reaches the end of `bytes` is the torn tail (or zeros where a crash left a hole); `end_of_valid` tells where the last valid record ended.
pub struct Scanner<'a> {
    bytes: &'a [u8],
    pos: u64,
    verify_payload: bool,
    resynced: bool,
    /// End of the last valid record seen, or the start offset if none.
    pub end_of_valid: u64,
}

impl<'a> Scanner<'a> {
    /// Starts scanning `bytes` at `start` (which must be aligned).
    pub fn new(bytes: &'a [u8], start: u64, verify_payload: bool) -> Scanner<'a> {
        debug_assert_eq!(start % RECORD_ALIGN_BYTES, 0);
        Scanner {
            bytes,
            pos: start,
            verify_payload,
            resynced: false,
            end_of_valid: start,
        }
    }

    /// Tries to read a full record at `pos`.
    fn record_at(&self, pos: u64) -> Option<(RecordHeader, bool)> {
        let start = usize::try_from(pos).ok()?;
        let header = RecordHeader::decode(self.bytes.get(start..)?).ok()?;
        let payload_start = start + RECORD_HEADER_SIZE_BYTES;
        let payload_end = payload_start.checked_add(header.stored_len as usize)?;
        let payload = self.bytes.get(payload_start..payload_end)?;
        let payload_ok = !self.verify_payload || payload_crc(payload) == header.payload_crc;
        Some((header, payload_ok))
    }

    /// Finds the next aligned offset `>= from` that holds a valid record.
    fn resync(&self, from: u64) -> Option<u64> {
        let finder = memchr::memmem::Finder::new(&RECORD_MAGIC);
        let mut search = usize::try_from(from).ok()?;
        while search < self.bytes.len() {
            let found = search + finder.find(self.bytes.get(search..)?)?;
            let found_u64 = found as u64;
            if found_u64.is_multiple_of(RECORD_ALIGN_BYTES) && self.record_at(found_u64).is_some() {
                return Some(found_u64);
            }
            search = found + 1;
        }
        None
    }
}

impl Iterator for Scanner<'_> {
    type Item = ScanItem;

    fn next(&mut self) -> Option<ScanItem> {
        let len = self.bytes.len() as u64;
        if self.pos + RECORD_HEADER_SIZE_BYTES as u64 > len {
            return None;
        }
        if let Some((header, payload_ok)) = self.record_at(self.pos) {
            let offset = self.pos;
            self.pos += header.record_len_bytes();
            self.end_of_valid = self.pos.min(len);
            let after_resync = std::mem::take(&mut self.resynced);
            return Some(ScanItem::Record {
                offset,
                header,
                payload_ok,
                after_resync,
            });
        }
        let damaged_from = self.pos;
        match self.resync(self.pos + RECORD_ALIGN_BYTES) {
            Some(next) => {
                self.pos = next;
                self.resynced = true;
                Some(ScanItem::Damaged {
                    offset: damaged_from,
                    len_bytes: next - damaged_from,
                })
            }
            None => {
                self.pos = len;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(seq: u64, payload: &[u8]) -> (RecordHeader, Vec<u8>) {
        let header = RecordHeader {
            kind: RecordKind::Put,
            flags: 0,
            seq,
            id: ChunkId::of(payload),
            stored_len: payload.len() as u32,
            raw_len: payload.len() as u32,
            payload_crc: payload_crc(payload),
        };
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(payload);
        bytes.resize(header.record_len_bytes() as usize, 0);
        (header, bytes)
    }

    #[test]
    fn header_round_trip() {
        let (h, bytes) = put(7, b"abc");
        assert_eq!(RecordHeader::decode(&bytes), Ok(h));
        assert_eq!(bytes.len(), 72);
    }

    #[test]
    fn scanner_resyncs_past_damage() {
        let (h1, mut log) = put(1, b"first");
        let (_, r2) = put(2, b"second record");
        let (h3, r3) = put(3, b"third");
        let damaged_at = log.len();
        log.extend_from_slice(&r2);
        log[damaged_at + 2] ^= 0xff; // break record 2's magic
        log.extend_from_slice(&r3);
        log.extend_from_slice(&[0u8; 100]);
        let items: Vec<_> = Scanner::new(&log, 0, true).collect();
        assert_eq!(items.len(), 3);
        assert!(matches!(items[0], ScanItem::Record { header, .. } if header == h1));
        assert!(matches!(items[1], ScanItem::Damaged { offset, .. } if offset == damaged_at as u64));
        assert!(matches!(items[2], ScanItem::Record { header, after_resync: true, .. } if header == h3));
    }
}
