//! The monitors' map-signing key as files: `map.key` (the ed25519 keypair, hex, mode 0600)
//! and `map.pub` (the public key, hex), which every node is configured with.

use std::path::Path;

use libp2p::identity::ed25519;

use crate::net::NetError;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) || text.len() > 256 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn bad(path: &Path, reason: &str) -> NetError {
    NetError::BadKeyFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Creates a new signing keypair in `dir` (`map.key`, `map.pub`), refusing to overwrite.
pub fn create_map_keypair(dir: &Path) -> Result<ed25519::Keypair, NetError> {
    let key_path = dir.join("map.key");
    if key_path.exists() {
        return Err(bad(&key_path, "already exists; refusing to overwrite the map key"));
    }
    let key = ed25519::Keypair::generate();
    crate::net::identity::write_private(&key_path, hex(&key.to_bytes()).as_bytes())?;
    crate::net::identity::write_private(&dir.join("map.pub"), hex(&key.public().to_bytes()).as_bytes())?;
    Ok(key)
}

/// Loads the signing keypair.
pub fn load_map_keypair(path: &Path) -> Result<ed25519::Keypair, NetError> {
    let text = std::fs::read_to_string(path).map_err(|source| NetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut bytes = unhex(&text).ok_or_else(|| bad(path, "not hex"))?;
    ed25519::Keypair::try_from_bytes(&mut bytes).map_err(|e| bad(path, &e.to_string()))
}

/// Loads the public key nodes verify maps with.
pub fn load_map_public_key(path: &Path) -> Result<ed25519::PublicKey, NetError> {
    let text = std::fs::read_to_string(path).map_err(|source| NetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = unhex(&text).ok_or_else(|| bad(path, "not hex"))?;
    ed25519::PublicKey::try_from_bytes(&bytes).map_err(|e| bad(path, &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = create_map_keypair(dir.path()).expect("create");
        assert!(create_map_keypair(dir.path()).is_err());
        let loaded = load_map_keypair(&dir.path().join("map.key")).expect("load");
        assert_eq!(loaded.public(), key.public());
        assert_eq!(
            load_map_public_key(&dir.path().join("map.pub")).expect("pub"),
            key.public()
        );
        std::fs::write(dir.path().join("map.pub"), "zz").expect("write");
        assert!(load_map_public_key(&dir.path().join("map.pub")).is_err());
    }
}
