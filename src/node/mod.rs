//! The node runtime every role runs (storage nodes, gateways, monitors), as subsystems over
//! one libp2p swarm. Each subsystem owns its state and handlers; calls go one way:
//!
//! - `command` (what subsystems ask of the swarm task) and `swarm` (the task that owns
//!   libp2p, and the one request helper: everything below sends through it);
//! - `membership`: SWIM over libp2p (liveness, epoch gossip);
//! - `maps`: the view (`maps::view`: the signed map, placement, filling partitions) and
//!   adopting maps (`/hadss/map/1`);
//! - `quorum` and `hedge`: the replicated-write shell, the quorum/hedged read helper and
//!   its hedge budget;
//! - `chunks`, `records`: chunk and record services and clients (`/hadss/chunk/1`,
//!   `/hadss/meta/1`), built on `quorum`;
//! - `primary`: the shell of a primary-copy write (chunk puts and record writes from nodes
//!   that are not replicas: one send to the first live replica, fallback to the next);
//! - `handoff`: hinted copies back to their replicas;
//! - `repair`: record anti-entropy, maintenance (repair, re-replication, rebalancing, GC)
//!   and scrub, built on `chunks` and `records`;
//! - `reserve` (create-only reservations) and `keys` (access key requests), built on
//!   `records`;
//! - `admin`: Raft and admin frames (answered by a plugged-in `MonitorService`, the seam
//!   in `admin::seam`);
//! - `metrics` (counters) and `health` (`/health`, `/metrics`);
//! - `runtime`: `NodeConfig`, `Node::start` and the `Node` handle (the composition root);
//! - `error`: `NodeError` and the wire error (`RemoteError`); `protocol`: every wire
//!   message re-exported from the subsystem that owns it (`chunks::wire`, `records::wire`,
//!   `maps::wire`, `membership::wire`, `admin::wire`), for code outside the runtime;
//!   `client`: one-off requests from processes that are not nodes (the admin CLI).

mod admin;
mod chunks;
pub mod client;
mod command;
mod error;
mod handoff;
mod health;
mod hedge;
mod keys;
mod maps;
mod membership;
mod metrics;
mod primary;
pub mod protocol;
mod quorum;
mod records;
pub mod repair;
mod reserve;
pub mod runtime;
mod swarm;

pub use admin::seam::MonitorService;
pub use error::{AdoptError, NodeError, TransportError};
pub use hedge::HEDGED_READ_DELAY_MS;
pub use metrics::NodeCounters;
pub use records::service::merge_scan_pages;
pub use repair::{
    ANTI_ENTROPY_INTERVAL_MS_DEFAULT, AntiEntropyReport, DOWN_OUT_MS_DEFAULT, MaintenanceConfig, MaintenanceReport,
};
pub use reserve::{CreateLease, CreateRefusal};
pub use runtime::{CacheSizes, MEMORY_BUDGET_BYTES_DEFAULT, Node, NodeConfig, RecordWrite, cache_sizes};
pub use swarm::{REQUEST_TIMEOUT_MS, STREAMS_PER_CONNECTION_MAX};
