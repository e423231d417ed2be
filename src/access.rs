//! Access keys: the S3 credentials the cluster knows and what each may do, stored as
//! replicated records (so every gateway sees them, and they stay readable with every monitor
//! down). Sans-IO: the record layout, the key model, the edits an operator makes and the
//! permission check. The node runtime applies edits (`hadss admin key …` reaches any node);
//! the gateway checks requests against them.
//!
//! - Every key record lives in one partition (that of `"keys"`), record key `k/<key id>`,
//!   so listing keys is one scan. Values are postcard of a versioned enum; a value that does
//!   not decode is reported as corrupt, never guessed at.
//! - A key holds per-bucket grants (`read`: get, head and list; `write`: put, copy, delete
//!   and multipart; `owner`: delete the bucket and change its settings) and a flag that lets
//!   it create buckets (it then owns them).
//! - Edits are read-modify-write of one record, last writer wins: two operators editing the
//!   same key at the same instant can lose one edit (the later `key info` shows which won).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The key whose partition holds every access key record.
pub const KEYS_PARTITION_KEY: &[u8] = b"keys";
/// What every access key record key starts with.
pub const KEY_PREFIX: &[u8] = b"k/";
/// What every generated key id starts with.
pub const KEY_ID_PREFIX: &str = "HK";
/// Hex digits after the prefix of a generated key id.
pub const KEY_ID_HEX_LEN: usize = 24;
/// Hex digits of a generated secret key.
pub const SECRET_HEX_LEN: usize = 64;
/// Longest key id accepted anywhere (imported keys included).
pub const KEY_ID_LEN_MAX: usize = 128;
/// Longest secret accepted.
pub const SECRET_LEN_MAX: usize = 128;
/// Longest key name.
pub const KEY_NAME_LEN_MAX: usize = 128;
/// Most buckets one key holds grants on.
pub const KEY_BUCKETS_MAX: usize = 1000;
/// Most keys `list` returns.
pub const KEYS_LISTED_MAX: usize = 10_000;

/// Record key of an access key.
pub fn key_record_key(key_id: &str) -> Vec<u8> {
    let mut k = KEY_PREFIX.to_vec();
    k.extend_from_slice(key_id.as_bytes());
    k
}

/// Errors of the access model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// A stored value does not decode.
    #[error("corrupt access key record")]
    Corrupt,
    /// The edit breaks a rule or limit; nothing changed.
    #[error("{0}")]
    Invalid(String),
}

/// What a key may do on one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// Get, head and list objects.
    pub read: bool,
    /// Put, copy and delete objects; multipart uploads.
    pub write: bool,
    /// Delete the bucket; change its settings.
    pub owner: bool,
}

impl Permission {
    /// Read, write and owner.
    pub const ALL: Permission = Permission {
        read: true,
        write: true,
        owner: true,
    };

    /// Whether it grants nothing.
    pub fn is_empty(self) -> bool {
        !(self.read || self.write || self.owner)
    }

    /// `self` with `other`'s grants added.
    pub fn with(self, other: Permission) -> Permission {
        Permission {
            read: self.read || other.read,
            write: self.write || other.write,
            owner: self.owner || other.owner,
        }
    }

    /// `self` with `other`'s grants removed.
    pub fn without(self, other: Permission) -> Permission {
        Permission {
            read: self.read && !other.read,
            write: self.write && !other.write,
            owner: self.owner && !other.owner,
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flag = |on: bool, c: char| if on { c } else { '-' };
        write!(
            f,
            "{}{}{}",
            flag(self.read, 'R'),
            flag(self.write, 'W'),
            flag(self.owner, 'O')
        )
    }
}

/// One access key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// The access key id clients send.
    pub id: String,
    /// The secret SigV4 signs with.
    pub secret: String,
    /// The operator's label.
    pub name: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// May create buckets (and owns those it creates).
    pub create_bucket: bool,
    /// Grants per bucket (no empty grant is kept).
    pub buckets: BTreeMap<String, Permission>,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("create_bucket", &self.create_bucket)
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

/// An access key record's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum KeyRecord {
    /// Version 1.
    V1(AccessKey),
}

/// What a request wants to do, as far as access is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// List the buckets (each key sees those it holds a grant on).
    ListBuckets,
    /// Create a bucket.
    CreateBucket,
    /// Learn that a bucket exists (any grant).
    See(&'a str),
    /// Read a bucket's objects.
    Read(&'a str),
    /// Change a bucket's objects.
    Write(&'a str),
    /// Delete a bucket or change its settings.
    Own(&'a str),
}

impl AccessKey {
    /// A new key with a random id and secret.
    pub fn generate(name: &str, create_bucket: bool, now_ms: u64) -> Result<AccessKey, AccessError> {
        check_name(name)?;
        let id_bytes: [u8; KEY_ID_HEX_LEN / 2] = rand::random();
        let secret_bytes: [u8; SECRET_HEX_LEN / 2] = rand::random();
        Ok(AccessKey {
            id: format!("{KEY_ID_PREFIX}{}", hex_upper(&id_bytes)),
            secret: hex_lower(&secret_bytes),
            name: name.to_string(),
            created_ms: now_ms,
            create_bucket,
            buckets: BTreeMap::new(),
        })
    }

    /// A key with a given id and secret (moving keys in from another system, fixed test
    /// keys). Ids are printable ASCII without spaces; secrets at least 16 characters.
    pub fn import(id: &str, secret: &str, name: &str, now_ms: u64) -> Result<AccessKey, AccessError> {
        check_name(name)?;
        let printable = |s: &str| s.bytes().all(|c| c.is_ascii_graphic());
        if id.is_empty() || id.len() > KEY_ID_LEN_MAX || !printable(id) {
            return Err(AccessError::Invalid(format!(
                "a key id is 1 to {KEY_ID_LEN_MAX} printable ASCII characters"
            )));
        }
        if secret.len() < 16 || secret.len() > SECRET_LEN_MAX || !printable(secret) {
            return Err(AccessError::Invalid(format!(
                "a secret key is 16 to {SECRET_LEN_MAX} printable ASCII characters"
            )));
        }
        Ok(AccessKey {
            id: id.to_string(),
            secret: secret.to_string(),
            name: name.to_string(),
            created_ms: now_ms,
            create_bucket: false,
            buckets: BTreeMap::new(),
        })
    }

    /// The record value.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(&KeyRecord::V1(self.clone())).unwrap_or_default()
    }

    /// Decodes a record value.
    pub fn decode(bytes: &[u8]) -> Result<AccessKey, AccessError> {
        match postcard::from_bytes::<KeyRecord>(bytes) {
            Ok(KeyRecord::V1(k)) => Ok(k),
            Err(_) => Err(AccessError::Corrupt),
        }
    }

    /// The grant this key holds on `bucket`.
    pub fn permission(&self, bucket: &str) -> Permission {
        self.buckets.get(bucket).copied().unwrap_or_default()
    }

    /// Whether the key may do `action`.
    pub fn allows(&self, action: Action<'_>) -> bool {
        match action {
            Action::ListBuckets => true,
            Action::CreateBucket => self.create_bucket,
            Action::See(b) => !self.permission(b).is_empty(),
            Action::Read(b) => self.permission(b).read,
            Action::Write(b) => self.permission(b).write,
            Action::Own(b) => self.permission(b).owner,
        }
    }

    /// Applies an edit: grants added, then grants removed, on `bucket` (if given), and the
    /// create-bucket flag (if given). An empty grant is dropped.
    pub fn edit(&mut self, edit: &KeyEdit) -> Result<(), AccessError> {
        if let Some(bucket) = &edit.bucket {
            if !valid_bucket_name(bucket) {
                return Err(AccessError::Invalid(format!("{bucket:?} is not a valid bucket name")));
            }
            let now = self.permission(bucket).with(edit.grant).without(edit.revoke);
            if now.is_empty() {
                self.buckets.remove(bucket);
            } else {
                if !self.buckets.contains_key(bucket) && self.buckets.len() >= KEY_BUCKETS_MAX {
                    return Err(AccessError::Invalid(format!(
                        "a key holds grants on at most {KEY_BUCKETS_MAX} buckets"
                    )));
                }
                self.buckets.insert(bucket.clone(), now);
            }
        } else if !edit.grant.is_empty() || !edit.revoke.is_empty() {
            return Err(AccessError::Invalid("grants need a bucket".into()));
        }
        if let Some(allow) = edit.create_bucket {
            self.create_bucket = allow;
        }
        Ok(())
    }

    /// What may be shown of the key without its secret.
    pub fn summary(&self) -> KeySummary {
        KeySummary {
            id: self.id.clone(),
            name: self.name.clone(),
            created_ms: self.created_ms,
            create_bucket: self.create_bucket,
            buckets: self.buckets.iter().map(|(b, p)| (b.clone(), *p)).collect(),
        }
    }
}

fn check_name(name: &str) -> Result<(), AccessError> {
    if name.len() > KEY_NAME_LEN_MAX || name.chars().any(char::is_control) {
        return Err(AccessError::Invalid(format!(
            "a key name is at most {KEY_NAME_LEN_MAX} bytes without control characters"
        )));
    }
    Ok(())
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An operator's change to one key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEdit {
    /// The bucket the grants are about.
    pub bucket: Option<String>,
    /// Grants to add.
    pub grant: Permission,
    /// Grants to remove (after adding).
    pub revoke: Permission,
    /// Set or clear the create-bucket flag.
    pub create_bucket: Option<bool>,
}

/// A key without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySummary {
    /// The access key id.
    pub id: String,
    /// The operator's label.
    pub name: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// May create buckets.
    pub create_bucket: bool,
    /// Grants per bucket.
    pub buckets: Vec<(String, Permission)>,
}

/// An access key request (`hadss admin key …`; any node with a map serves it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRequest {
    /// Make a new key with a random id and secret.
    Create {
        /// Its label.
        name: String,
        /// May it create buckets.
        create_bucket: bool,
    },
    /// Store a key with a given id and secret (refused if the id exists).
    Import {
        /// The key id.
        id: String,
        /// The secret.
        secret: String,
        /// Its label.
        name: String,
    },
    /// Every key, without secrets.
    List,
    /// One key, without its secret.
    Info {
        /// The key id.
        id: String,
    },
    /// Change a key's grants or flag.
    Edit {
        /// The key id.
        id: String,
        /// The change.
        edit: KeyEdit,
    },
    /// Delete a key (requests signed with it fail from then on).
    Delete {
        /// The key id.
        id: String,
    },
}

/// The answer to a key request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyResponse {
    /// A created or imported key, with its secret (shown once: the operator keeps it).
    Created {
        /// The key id.
        id: String,
        /// The secret.
        secret: String,
    },
    /// One key.
    Key(KeySummary),
    /// Keys, in id order.
    Keys(Vec<KeySummary>),
    /// Done.
    Done,
    /// No such key.
    NoSuchKey,
    /// Refused or failed; nothing was changed unless the message says so.
    Error(String),
}

/// Whether `name` is a valid S3 bucket name (3–63 of lower-case letters, digits, `-`, `.`;
/// starts and ends with a letter or digit; not an IP address).
pub fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b.first().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.last().is_some_and(|c| c.is_ascii_alphanumeric())
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn grants_add_remove_and_check() {
        let mut k = AccessKey::generate("app", false, 1).unwrap();
        assert!(k.id.starts_with(KEY_ID_PREFIX) && k.id.len() == KEY_ID_PREFIX.len() + KEY_ID_HEX_LEN);
        assert_eq!(k.secret.len(), SECRET_HEX_LEN);
        assert!(!k.allows(Action::CreateBucket));
        assert!(!k.allows(Action::See("photos")));
        let read = Permission {
            read: true,
            ..Default::default()
        };
        k.edit(&KeyEdit {
            bucket: Some("photos".into()),
            grant: read,
            ..Default::default()
        })
        .unwrap();
        assert!(k.allows(Action::See("photos")) && k.allows(Action::Read("photos")));
        assert!(!k.allows(Action::Write("photos")) && !k.allows(Action::Own("photos")));
        assert!(!k.allows(Action::Read("photos2")));
        k.edit(&KeyEdit {
            bucket: Some("photos".into()),
            grant: Permission::ALL,
            revoke: read,
            create_bucket: Some(true),
        })
        .unwrap();
        assert_eq!(k.permission("photos").to_string(), "-WO");
        assert!(k.allows(Action::CreateBucket));
        k.edit(&KeyEdit {
            bucket: Some("photos".into()),
            revoke: Permission::ALL,
            ..Default::default()
        })
        .unwrap();
        assert!(k.buckets.is_empty(), "an empty grant is dropped");
        let back = AccessKey::decode(&k.encode()).unwrap();
        assert_eq!(back, k);
    }

    #[test]
    fn bad_edits_and_bytes_are_refused() {
        let mut k = AccessKey::generate("", true, 1).unwrap();
        let before = k.clone();
        for bucket in ["", "UPPER", "a", "has/slash"] {
            let e = k.edit(&KeyEdit {
                bucket: Some(bucket.into()),
                grant: Permission::ALL,
                ..Default::default()
            });
            assert!(matches!(e, Err(AccessError::Invalid(_))), "{bucket:?}");
        }
        assert!(
            k.edit(&KeyEdit {
                grant: Permission::ALL,
                ..Default::default()
            })
            .is_err()
        );
        assert_eq!(k, before);
        for i in 0..KEY_BUCKETS_MAX {
            k.buckets.insert(format!("bucket-{i}"), Permission::ALL);
        }
        assert!(
            k.edit(&KeyEdit {
                bucket: Some("one-more".into()),
                grant: Permission::ALL,
                ..Default::default()
            })
            .is_err()
        );
        assert_eq!(AccessKey::decode(b"\x07garbage"), Err(AccessError::Corrupt));
        assert_eq!(AccessKey::decode(&[]), Err(AccessError::Corrupt));
        assert!(AccessKey::generate(&"x".repeat(KEY_NAME_LEN_MAX + 1), false, 1).is_err());
        assert!(AccessKey::import("id with space", "0123456789abcdef", "", 1).is_err());
        assert!(AccessKey::import("ID", "short", "", 1).is_err());
        assert!(AccessKey::import("ID", "0123456789abcdef", "", 1).is_ok());
        assert!(
            !format!("{:?}", AccessKey::import("ID", "0123456789abcdef", "", 1).unwrap()).contains("0123456789abcdef")
        );
    }
}
