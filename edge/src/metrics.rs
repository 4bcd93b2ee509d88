//! The edge's Prometheus metrics.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Default)]
pub struct EdgeMetrics {
    pub link_up: Gauge,
    pub hub_rtt_ms: Gauge<f64, AtomicU64>,
    pub link_reconnects: Counter,
    pub outbox_pending: Gauge,
    pub bulk_bytes_sent: Counter,
}

impl EdgeMetrics {
    pub fn register(mut registry: Registry) -> (Self, Registry) {
        let metrics = Self::default();
        let prefixed = registry.sub_registry_with_prefix("grassroots_edge");
        prefixed.register(
            "link_up",
            "1 while the control session with the hub is up",
            metrics.link_up.clone(),
        );
        prefixed.register(
            "hub_rtt_ms",
            "Last heartbeat round-trip to the hub, milliseconds",
            metrics.hub_rtt_ms.clone(),
        );
        prefixed.register(
            "link_reconnects",
            "Times the link to the hub came up",
            metrics.link_reconnects.clone(),
        );
        prefixed.register(
            "outbox_pending",
            "Bulk transfers waiting for the hub",
            metrics.outbox_pending.clone(),
        );
        prefixed.register(
            "bulk_bytes_sent",
            "Bytes of bulk transfers sent",
            metrics.bulk_bytes_sent.clone(),
        );
        (metrics, registry)
    }
}
