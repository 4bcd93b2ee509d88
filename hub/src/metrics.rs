//! The hub's Prometheus metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Default)]
pub struct HubMetrics {
    pub sites_online: Gauge,
    pub connections_accepted: Counter,
    pub connections_refused: Counter,
    pub blobs_received: Counter,
    /// Bulk offers refused before any chunk (too large for their kind, quota, disk watermark).
    pub transfers_refused: Counter,
    pub bulk_bytes_received: Counter,
    pub bad_frames: Counter,
    /// Per site (label `site`): 1 while the edge holds a session.
    pub site_online: Family<Labels, Gauge>,
    /// Per site: seconds since the hub last heard from it.
    pub site_silent_seconds: Family<Labels, Gauge>,
    /// Per site: days until its certificate expires.
    pub site_certificate_days: Family<Labels, Gauge>,
    /// Current coverage alerts, by `kind` and `site`.
    pub coverage_alerts: Family<Labels, Gauge>,
    /// Alert posts the webhook did not accept (retried at the next check).
    pub alert_webhook_failures: Counter,
}

/// Label pairs of a per-site series.
pub type Labels = Vec<(String, String)>;

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
            "transfers_refused",
            "Bulk offers refused before any chunk: too large for their kind, over the site's daily allowance, or below the disk watermark",
            metrics.transfers_refused.clone(),
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
        prefixed.register(
            "site_online",
            "1 while the site's edge holds a session with the hub",
            metrics.site_online.clone(),
        );
        prefixed.register(
            "site_silent_seconds",
            "Seconds since the hub last heard from the site",
            metrics.site_silent_seconds.clone(),
        );
        prefixed.register(
            "site_certificate_days",
            "Days until the site's certificate expires",
            metrics.site_certificate_days.clone(),
        );
        prefixed.register(
            "coverage_alerts",
            "Coverage alerts now raised, by kind and site",
            metrics.coverage_alerts.clone(),
        );
        prefixed.register(
            "alert_webhook_failures",
            "Alert posts the webhook did not accept",
            metrics.alert_webhook_failures.clone(),
        );
        (metrics, registry)
    }
}
