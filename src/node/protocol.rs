//! The wire vocabulary of every node protocol, re-exported from the subsystem that owns
//! each message (`chunks::wire`, `records::wire`, `maps::wire`, `membership::wire`,
//! `admin::wire`) and the shared error (`error`). For code outside the node runtime (the
//! admin CLI, monitors, netsim, tests); the subsystems import from the owners. One
//! libp2p request-response protocol per concern, each with its own message enums and size
//! limits; the version is in the protocol name; a message that does not decode (an unknown
//! variant included) fails that request with an error and never reaches a handler.

pub use super::admin::wire::*;
pub use super::chunks::wire::*;
pub use super::error::{ErrorCode, RemoteError};
pub use super::maps::wire::*;
pub use super::membership::wire::*;
pub use super::records::wire::*;
