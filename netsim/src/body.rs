//! Self-describing object bodies: each names its key, the write that made it and its
//! size, followed by bytes derived from those (BLAKE3 in XOF mode), so a body read back
//! tells which write it is and whether any byte of it changed.
//!
//! Layout: `HADSS-NETSIM 1 <key> <write> <size>\n` then `size` payload bytes.

/// First bytes of every body.
const MAGIC: &str = "HADSS-NETSIM 1 ";
/// Longest header accepted (keys are short).
const HEADER_BYTES_MAX: usize = 512;

/// What a body read back says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Intact: the body `make(key, write, _)` made.
    Intact {
        /// The key it was written under.
        key: String,
        /// The write id.
        write: u64,
    },
    /// Not a body `make` could have made: what is wrong.
    Corrupt(String),
}

fn payload(key: &str, write: u64, size: usize) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(key.as_bytes());
    h.update(&write.to_le_bytes());
    let mut out = vec![0u8; size];
    h.finalize_xof().fill(&mut out);
    out
}

/// The body of write `write` of `key`, with `size` payload bytes.
pub fn make(key: &str, write: u64, size: usize) -> Vec<u8> {
    debug_assert!(!key.contains([' ', '\n']), "keys of the workload have no spaces");
    let mut body = format!("{MAGIC}{key} {write} {size}\n").into_bytes();
    body.extend_from_slice(&payload(key, write, size));
    body
}

/// Reads a body back.
pub fn decode(body: &[u8]) -> Decoded {
    let corrupt = |why: &str| Decoded::Corrupt(why.to_string());
    let Some(end) = body.iter().take(HEADER_BYTES_MAX).position(|b| *b == b'\n') else {
        return corrupt("no header line");
    };
    let Ok(header) = std::str::from_utf8(&body[..end]) else {
        return corrupt("header is not UTF-8");
    };
    let Some(fields) = header.strip_prefix(MAGIC) else {
        return corrupt("bad magic");
    };
    let mut parts = fields.split(' ');
    let (Some(key), Some(write), Some(size), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return corrupt("header fields");
    };
    let (Ok(write), Ok(size)) = (write.parse::<u64>(), size.parse::<usize>()) else {
        return corrupt("header numbers");
    };
    let rest = &body[end + 1..];
    if rest.len() != size {
        return Decoded::Corrupt(format!("{} payload bytes, header says {size}", rest.len()));
    }
    if rest != payload(key, write, size).as_slice() {
        return corrupt("payload bytes differ from what the write sent");
    }
    Decoded::Intact {
        key: key.to_string(),
        write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_describe_themselves_and_any_flipped_bit_shows() {
        let body = make("c1/k7", 42, 1000);
        assert_eq!(
            decode(&body),
            Decoded::Intact {
                key: "c1/k7".into(),
                write: 42
            }
        );
        for i in [0, 15, body.len() / 2, body.len() - 1] {
            let mut bad = body.clone();
            bad[i] ^= 0x10;
            assert!(
                matches!(decode(&bad), Decoded::Corrupt(_)),
                "flip at {i} went unnoticed"
            );
        }
        assert!(matches!(decode(&body[..body.len() - 1]), Decoded::Corrupt(_)));
        assert!(matches!(decode(b""), Decoded::Corrupt(_)));
        assert_ne!(make("c1/k7", 43, 1000), body);
    }
}
