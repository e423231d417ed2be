//! What a node reports on `/health` (JSON) and `/metrics` (OpenMetrics): its counters, SWIM
//! membership, the map epoch, the chunk store, maintenance progress and, on monitors, the
//! monitor's own gauges.

use std::collections::HashSet;
use std::sync::RwLock;

use super::metrics::NodeCounters;
use super::runtime::{Inner, Node, peer_of};
use crate::cluster::NodeId;

impl crate::observe::Observable for Inner {
    fn ready(&self) -> bool {
        self.view().is_some()
    }

    fn health(&self) -> serde_json::Value {
        let read = |s: &RwLock<HashSet<NodeId>>| s.read().unwrap_or_else(|p| p.into_inner()).len();
        let peer = peer_of(&self.node_id).map(|p| p.to_string()).unwrap_or_default();
        serde_json::json!({
            "role": format!("{:?}", self.role).to_lowercase(),
            "peer_id": peer,
            "epoch": self.view().map_or(0, |v| v.0.epoch),
            "filling_partitions": self.map.filling_count(),
            "members_up": read(&self.up),
            "members_down": read(&self.down),
            "hints_held": self.stores.as_ref().map_or(0, |s| s.hints.len()),
            "chunks": self.stores.as_ref().map_or(0, |s| s.chunks.stats().chunks),
            "uptime_s": self.started.elapsed().as_secs(),
            "monitor": self.monitor.get().map(|m| m.health()),
            "maintenance": *self.maintenance_last.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }

    fn metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        use crate::observe::{counter, gauge};
        for (name, help, value) in self.counters.all() {
            counter(registry, name, help, value);
        }
        let read = |s: &RwLock<HashSet<NodeId>>| s.read().unwrap_or_else(|p| p.into_inner()).len() as i64;
        gauge(
            registry,
            "map_epoch",
            "Epoch of the cluster map this node holds",
            self.view().map_or(0, |v| v.0.epoch as i64),
        );
        gauge(registry, "swim_members_up", "Members SWIM considers up", read(&self.up));
        gauge(
            registry,
            "swim_members_down",
            "Members SWIM considers down",
            read(&self.down),
        );
        gauge(
            registry,
            "hints_held",
            "Copies held for replicas that were down",
            self.stores.as_ref().map_or(0, |s| s.hints.len()) as i64,
        );
        gauge(
            registry,
            "uptime_seconds",
            "Seconds since the node started",
            self.started.elapsed().as_secs() as i64,
        );
        if let Some(m) = self.monitor.get() {
            for (name, help, value) in m.gauges() {
                gauge(registry, name, help, value);
            }
        }
        // Gateways and monitors hold no chunks: their chunk store figures are zero.
        let st = self.stores.as_ref().map(|s| s.chunks.stats()).unwrap_or_default();
        gauge(registry, "chunkstore_chunks", "Chunks stored", st.chunks as i64);
        gauge(registry, "chunkstore_segments", "Segment files", st.segments as i64);
        gauge(
            registry,
            "chunkstore_disk_bytes",
            "Bytes of segment files on disk",
            st.disk_bytes as i64,
        );
        gauge(
            registry,
            "chunkstore_dead_bytes",
            "Bytes of superseded records awaiting compaction",
            st.dead_record_bytes as i64,
        );
        counter(registry, "chunkstore_puts", "Chunk puts", st.puts);
        counter(
            registry,
            "chunkstore_dedup_puts",
            "Chunk puts of chunks already stored",
            st.dedup_puts,
        );
        counter(registry, "chunkstore_gets", "Chunk gets", st.gets);
        counter(registry, "chunkstore_deletes", "Chunk deletes", st.deletes);
        counter(
            registry,
            "chunkstore_corruptions",
            "Chunk copies that failed verification",
            st.corruptions,
        );
        counter(
            registry,
            "chunkstore_group_commits",
            "Group commits (one fdatasync each)",
            st.group_commits,
        );
        counter(
            registry,
            "chunkstore_compactions",
            "Segment compactions",
            st.compactions,
        );
    }
}

impl Node {
    /// The node's counters.
    pub fn counters(&self) -> &NodeCounters {
        &self.inner.counters
    }

    /// Serves `/health`, `/ready` and `/metrics` on `listen`.
    pub async fn serve_http(&self, listen: std::net::SocketAddr) -> std::io::Result<crate::observe::HttpEndpoint> {
        crate::observe::serve(listen, self.inner.clone()).await
    }
}
