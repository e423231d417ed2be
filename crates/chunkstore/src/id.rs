//! Chunk identifiers: the BLAKE3-256 hash of a chunk's content.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Size of a chunk id in bytes.
pub const CHUNK_ID_SIZE_BYTES: usize = 32;

/// The id of a chunk: BLAKE3-256 of its (uncompressed) content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; CHUNK_ID_SIZE_BYTES]);

impl ChunkId {
    /// Computes the id of `content`.
    pub fn of(content: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(content).as_bytes())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; CHUNK_ID_SIZE_BYTES] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(CHUNK_ID_SIZE_BYTES * 2);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        s
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short form: enough to tell ids apart in logs and test failures.
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

/// Error parsing a hex chunk id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a chunk id is 64 hex characters")]
pub struct ParseChunkIdError;

impl FromStr for ChunkId {
    type Err = ParseChunkIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != CHUNK_ID_SIZE_BYTES * 2 {
            return Err(ParseChunkIdError);
        }
        let mut out = [0u8; CHUNK_ID_SIZE_BYTES];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(ParseChunkIdError)?;
            let lo = hex_value(pair[1]).ok_or(ParseChunkIdError)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(ChunkId(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::of(b"hello");
        let parsed: ChunkId = id.to_hex().parse().expect("valid hex");
        assert_eq!(parsed, id);
        assert!("zz".parse::<ChunkId>().is_err());
        assert!("g".repeat(64).parse::<ChunkId>().is_err());
    }
}
