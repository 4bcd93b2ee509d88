//! The hub's Prometheus metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Default)]
pub struct HubMetrics {
    pub sites_online: Gauge,
    pub connections_accepted: Counter,
    pub connections_refused: Counter,
    pub blobs_received: Counter,
    pub bulk_bytes_received: Counter,
    pub bad_frames: Counter,
}

impl HubMetrics {
    pub fn register(mut registry: Registry) -> (Self, Registry) {
        let metrics = Self::default();
        let prefixed = registry.sub_registry_with_prefix("grassroots_hub");
        prefixed.register(
            "sites_online",
            "Edges with a live control session",
            metrics.sites_online.clone(),
        );
        prefixed.register(
            "connections_accepted",
            "Edge connections that passed mutual TLS",
            metrics.connections_accepted.clone(),
        );
        prefixed.register(
            "connections_refused",
            "Connection attempts refused (bad, expired or revoked certificate, wrong role)",
            metrics.connections_refused.clone(),
        );
        prefixed.register(
            "blobs_received",
            "Bulk transfers received and verified",
            metrics.blobs_received.clone(),
        );
        prefixed.register(
            "bulk_bytes_received",
            "Bytes of verified bulk transfers",
            metrics.bulk_bytes_received.clone(),
        );
        prefixed.register(
            "bad_frames",
            "Malformed, oversized or unknown frames answered with an error",
            metrics.bad_frames.clone(),
        );
        (metrics, registry)
    }
}
