//! The seam between a node and the monitor that runs on it: the node carries Raft frames
//! and admin requests, the monitor (`crate::monitor`) answers them. The node knows only this
//! trait, so it never depends on the monitor.

use libp2p::PeerId;

use crate::node::admin::wire::{AdminRequest, AdminResponse, RaftFrame};

/// What a monitor plugs into its node: the node runtime carries Raft frames and admin
/// requests, the monitor (`crate::monitor`) answers them. Both get the libp2p-authenticated
/// sender.
pub trait MonitorService: Send + Sync + 'static {
    /// Answers one Raft frame.
    fn raft(&self, from: PeerId, frame: RaftFrame) -> futures::future::BoxFuture<'static, RaftFrame>;
    /// Answers one admin request.
    fn admin(&self, from: PeerId, request: AdminRequest) -> futures::future::BoxFuture<'static, AdminResponse>;
    /// Gauges for `/metrics`: (name, help, value).
    fn gauges(&self) -> Vec<(&'static str, &'static str, i64)>;
    /// What `/health` adds under `"monitor"`.
    fn health(&self) -> serde_json::Value;
}
