//! `/hadss/raft/1` and `/hadss/admin/1` on a node: Raft frames and admin requests go to the
//! monitor plugged in (`MonitorService`), if any; access key requests and maintenance
//! progress are served by any node; other requests on a node that is not a monitor get
//! `NotMonitor` with the monitors its map names.

use std::sync::Arc;

use libp2p::PeerId;

use crate::node::admin::seam::MonitorService;
use crate::node::admin::wire::{AdminRequest, AdminResponse, RaftFrame};
use crate::node::error::TransportError;
use crate::node::runtime::{Inner, Node, peer_of};

impl Inner {
    /// Raft frames go to the monitor service; a node that is not a monitor answers an empty
    /// frame, which the sender cannot decode (an error there, never a vote or an ack).
    pub(in crate::node) async fn handle_raft(self: Arc<Self>, peer: PeerId, frame: RaftFrame) -> RaftFrame {
        let inner = self;
        match inner.monitor.get() {
            Some(m) => m.raft(peer, frame).await,
            None => RaftFrame(Vec::new()),
        }
    }

    /// Admin requests go to the monitor service; other nodes point at the monitors they know.
    pub(in crate::node) async fn handle_admin(self: Arc<Self>, peer: PeerId, request: AdminRequest) -> AdminResponse {
        let inner = self;
        if let AdminRequest::Keys(request) = request {
            return AdminResponse::Keys(inner.handle_keys(request).await);
        }
        if let AdminRequest::Progress = request {
            return AdminResponse::Progress(*inner.maintenance_last.lock().unwrap_or_else(|p| p.into_inner()));
        }
        if let Some(m) = inner.monitor.get() {
            return m.admin(peer, request).await;
        }
        let monitors = inner.view().map_or_else(Vec::new, |v| {
            v.0.nodes
                .iter()
                .filter(|n| n.role == crate::cluster::Role::Monitor)
                .filter_map(|n| Some(format!("{}/p2p/{}", n.addrs.first()?, peer_of(&n.id)?)))
                .collect()
        });
        AdminResponse::NotMonitor { monitors }
    }
}

impl Node {
    /// Makes this node answer Raft and admin requests with `service` (monitors). Only the
    /// first call takes effect.
    pub fn set_monitor_service(&self, service: Arc<dyn MonitorService>) -> bool {
        self.inner.monitor.set(service).is_ok()
    }

    /// Sends one Raft frame to `peer` and waits for its answer.
    pub async fn raft_request(&self, peer: PeerId, frame: RaftFrame) -> Result<RaftFrame, TransportError> {
        self.inner.request(peer, frame).await
    }

    /// Sends one admin request to `peer` and waits for its answer.
    pub async fn admin_request(&self, peer: PeerId, request: AdminRequest) -> Result<AdminResponse, TransportError> {
        self.inner.request(peer, request).await
    }
}
