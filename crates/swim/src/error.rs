//! The crate's single error type.
//!
//! Every variant says whether membership state may have changed and whether a retry can
//! help, so the node runtime can decide between "drop the packet", "log and continue" and
//! "stop". Nothing here is fatal to the process: bad input from the network is an error
//! value, never a panic.

use thiserror::Error;

/// Errors returned by the SWIM core, the broadcast codec and the driver.
#[derive(Debug, Error)]
pub enum SwimError {
    /// A peer id was empty or longer than [`crate::identity::PEER_ID_BYTES_MAX`].
    /// No state changed; retrying with the same input fails again.
    #[error("peer id must be 1..={max} bytes, got {len}")]
    PeerIdLength {
        /// Offending length.
        len: usize,
        /// Allowed maximum.
        max: usize,
    },

    /// An identity field (addresses, zone) exceeded its bound.
    /// No state changed; retrying with the same input fails again.
    #[error("identity field `{field}` too large: {len} > {max}")]
    IdentityTooLarge {
        /// Which field.
        field: &'static str,
        /// Offending size (count or bytes).
        len: usize,
        /// Allowed maximum.
        max: usize,
    },

    /// The configuration is inconsistent (e.g. probe RTT not below the probe period).
    /// No state changed; fix the configuration.
    #[error("invalid swim config: {0}")]
    InvalidConfig(&'static str),

    /// A packet's header names a sender other than the peer the transport
    /// authenticated. The packet was dropped before foca saw it: no state changed.
    #[error("packet claims sender {claimed} but transport authenticated {authenticated}")]
    SenderMismatch {
        /// Peer id in the packet header.
        claimed: String,
        /// Peer id the transport vouched for.
        authenticated: String,
    },

    /// A custom broadcast carries a format version this build does not know.
    /// The item was not applied; membership updates in the same packet were.
    #[error("unsupported broadcast format version {0}")]
    UnsupportedBroadcastVersion(u8),

    /// A custom broadcast carries a kind this build does not know (a newer peer?).
    /// The item was not applied; membership updates in the same packet were.
    #[error("unknown broadcast kind {0}")]
    UnknownBroadcastKind(u8),

    /// A custom broadcast body failed to decode: the bytes are corrupt or truncated.
    /// The item was not applied; retrying the same bytes fails again.
    #[error("malformed broadcast: {0}")]
    MalformedBroadcast(String),

    /// foca rejected an input (malformed packet, packet too large, data from
    /// ourselves, not connected...). Packets are untrusted input, so this is routine:
    /// drop the packet. Membership updates decoded before the error may have been applied.
    #[error("swim protocol error: {0}")]
    Protocol(#[from] foca::Error),

    /// The transport failed to send. Gossip is best effort: SWIM treats it as loss.
    #[error("transport error: {0}")]
    Transport(#[from] std::io::Error),

    /// No address of the member is usable by this transport. Nothing was sent.
    #[error("no dialable address for peer {0}")]
    NoRoute(String),

    /// The driver task has stopped; the command was not executed.
    #[error("swim driver stopped")]
    DriverStopped,
}

/// Result alias for this crate.
pub type Result<T, E = SwimError> = std::result::Result<T, E>;
