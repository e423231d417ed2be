//! SWIM membership for HADSS, built on [`foca`].
//!
//! Every node (gateway, monitor, storage) runs one member. Layers, one per module:
//! - [`identity`]: who a member is ([`PeerId`], [`Role`], zone, generation);
//! - [`broadcast`]: typed, versioned broadcasts piggybacked on gossip (cluster-map epoch);
//! - [`config`]: [`SwimConfig`] with LAN / WAN presets, units in the names;
//! - [`core`]: the sans-IO state machine [`SwimCore`] (input: bytes, timers, `now_ms`;
//!   output: [`Effects`]);
//! - [`driver`]: a thin tokio shell over a [`driver::Transport`] trait, with UDP;
//! - [`sim`]: a deterministic single-process simulator (virtual time, seeded RNG,
//!   latency, loss, duplication, partitions).
//!
//! Does not: authenticate or encrypt (the transport binds peer ids to keys), or store
//! the cluster map (only its epoch and digest travel here).
#![forbid(unsafe_code)]

pub mod broadcast;
pub mod config;
pub mod core;
pub mod driver;
pub mod error;
pub mod identity;
pub mod sim;

pub use crate::broadcast::{Broadcast, EpochAnnouncement, ReceivedBroadcast};
pub use crate::config::SwimConfig;
pub use crate::core::{CoreStats, Effects, MembershipEvent, OutgoingPacket, ScheduledTimer, SwimCore, SwimTimer};
pub use crate::error::{Result, SwimError};
pub use crate::identity::{NodeIdentity, PeerId, Role};
