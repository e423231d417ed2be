//! Membership: SWIM over libp2p (`service`) and its wire messages (`wire`).

mod service;
pub mod wire;
