//! Node identity and the cluster secret, both kept as files.
//!
//! - `node.key`: the node's ed25519 keypair (libp2p protobuf encoding), created on first start
//!   with mode 0600 through the crash-safe recipe; its public key is the node's `PeerId`.
//! - The cluster secret: a 32-byte pre-shared key for the libp2p private network, in the
//!   usual swarm-key format (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits). Without it a
//!   peer cannot finish a handshake with any node of the cluster.

use std::fs;
use std::path::Path;
use std::str::FromStr;

use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;

use super::NetError;

/// Largest key or secret file read (both are well under 1 KiB).
const KEY_FILE_SIZE_BYTES_MAX: u64 = 4096;

/// Loads the node keypair from `path`, creating it if the file does not exist.
pub fn load_or_create_keypair(path: &Path) -> Result<Keypair, NetError> {
    match read_small(path)? {
        Some(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| NetError::BadKeyFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        None => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| NetError::BadKeyFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            write_private(path, &bytes)?;
            Ok(key)
        }
    }
}

/// Reads the cluster secret from `path`.
pub fn load_cluster_secret(path: &Path) -> Result<PreSharedKey, NetError> {
    let bytes = read_small(path)?.ok_or_else(|| NetError::BadKeyFile {
        path: path.to_path_buf(),
        reason: "cluster secret file not found".into(),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| NetError::BadKeyFile {
        path: path.to_path_buf(),
        reason: "not UTF-8".into(),
    })?;
    PreSharedKey::from_str(&text).map_err(|e| NetError::BadKeyFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes a new random cluster secret to `path` (refusing to overwrite one).
pub fn create_cluster_secret(path: &Path) -> Result<PreSharedKey, NetError> {
    if path.exists() {
        return Err(NetError::BadKeyFile {
            path: path.to_path_buf(),
            reason: "already exists; refusing to overwrite a cluster secret".into(),
        });
    }
    let seed = Keypair::generate_ed25519();
    // 32 random bytes from a fresh key's secret material, hashed so the secret reveals nothing
    // about any key.
    let material = seed.to_protobuf_encoding().map_err(|e| NetError::BadKeyFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let psk = PreSharedKey::new(*blake3::hash(&material).as_bytes());
    write_private(path, psk.to_string().as_bytes())?;
    Ok(psk)
}

fn read_small(path: &Path) -> Result<Option<Vec<u8>>, NetError> {
    let io = |source| NetError::Io {
        path: path.to_path_buf(),
        source,
    };
    match fs::metadata(path) {
        Ok(m) if m.len() > KEY_FILE_SIZE_BYTES_MAX => Err(NetError::BadKeyFile {
            path: path.to_path_buf(),
            reason: format!("larger than {KEY_FILE_SIZE_BYTES_MAX} bytes"),
        }),
        Ok(_) => fs::read(path).map(Some).map_err(io),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// Crash-safe write of a private file (mode 0600).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    crate::fsutil::write_durably(path, bytes, 0o600).map_err(|source| NetError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keypair_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let a = load_or_create_keypair(&path).expect("create");
        let b = load_or_create_keypair(&path).expect("reload");
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::write(&path, b"garbage").expect("write");
        assert!(matches!(
            load_or_create_keypair(&path),
            Err(NetError::BadKeyFile { .. })
        ));
    }

    #[test]
    fn cluster_secret_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cluster.secret");
        let psk = create_cluster_secret(&path).expect("create");
        assert!(create_cluster_secret(&path).is_err(), "never overwrite");
        let loaded = load_cluster_secret(&path).expect("load");
        assert_eq!(psk.to_string(), loaded.to_string());
        fs::write(&path, b"/key/swarm/psk/1.0.0/\n/base16/\nzz").expect("write");
        assert!(load_cluster_secret(&path).is_err());
    }
}
