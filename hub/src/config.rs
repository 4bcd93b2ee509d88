//! The hub's configuration: a typed struct with defaults, validated once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::HubError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// The hub's data directory (store, received blobs).
    pub data_dir: PathBuf,
    /// Where to listen for edges (QUIC/UDP). Default: the address in the hub's kit.
    pub quic_listen: Option<SocketAddr>,
    /// Where the web UI and APIs listen (HTTP).
    pub http_listen: SocketAddr,
    /// The network's revocation list (`crl.pem` in the provisioning directory), re-read whenever
    /// it changes. Without one, revoked certificates are not refused: the hub says so loudly.
    pub revocation_list: Option<PathBuf>,
    /// Heartbeat period edges must keep; three missed ones mark an edge offline.
    pub heartbeat_ms: u64,
    /// Warn when a certificate expires within this many days.
    pub expiry_warning_days: i64,
    /// Add `Secure` to session cookies (serve the UI behind HTTPS).
    pub secure_cookies: bool,
    /// Serve the web UI over HTTPS with this certificate (secure cookies follow).
    pub web_tls: Option<grassroots_web::tls::WebTlsSettings>,
    /// Congestion controller for what the hub sends (model packages to edges).
    pub congestion: grassroots_transport::Congestion,
    /// Bytes of tiles moved ahead of the expert per consult (overview and marked regions);
    /// 0 turns prefetch off.
    pub consult_prefetch_bytes: u64,
    /// The network's model-signing key (`model-signing.key` of the provisioning directory),
    /// with which the hub signs the versions federated rounds make. Without it the hub runs no
    /// rounds (networks that sign offline approve each version with `grassroots model sign`).
    pub model_signing_key: Option<PathBuf>,
    /// The hub's validation tiles (`grassroots model validation-set`): public tissue only.
    pub validation_set: Option<PathBuf>,
    /// How federated rounds run.
    pub rounds: crate::rounds::RoundSettings,
    /// The coverage dashboard's alert thresholds and webhook.
    pub alerts: crate::coverage_map::AlertSettings,
    /// Region outlines for the coverage map (a GeoJSON file the operator supplies).
    pub region_outlines: Option<PathBuf>,
    /// A file holding the token scrapers send to read `/metrics` (`Authorization: Bearer`);
    /// without one, only a signed-in admin reads it.
    pub metrics_token_file: Option<PathBuf>,
    /// Reverse proxies trusted to name the client in `X-Forwarded-For` (login throttling).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// What each edge may send (`crate::quota`).
    pub quotas: crate::quota::QuotaSettings,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("hub-data"),
            quic_listen: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8440)),
            revocation_list: None,
            heartbeat_ms: 2_000,
            expiry_warning_days: 30,
            secure_cookies: false,
            web_tls: None,
            congestion: grassroots_transport::Congestion::default(),
            consult_prefetch_bytes: 64 * 1024 * 1024,
            model_signing_key: None,
            validation_set: None,
            rounds: crate::rounds::RoundSettings::default(),
            alerts: crate::coverage_map::AlertSettings::default(),
            region_outlines: None,
            metrics_token_file: None,
            trusted_proxies: Vec::new(),
            quotas: crate::quota::QuotaSettings::default(),
        }
    }
}

impl HubConfig {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    pub fn validate(&self) -> Result<(), HubError> {
        if !(100..=60_000).contains(&self.heartbeat_ms) {
            return Err(HubError::Config(format!(
                "heartbeat_ms must be between 100 and 60000, got {}",
                self.heartbeat_ms
            )));
        }
        if self.expiry_warning_days < 0 {
            return Err(HubError::Config(
                "expiry_warning_days must not be negative".into(),
            ));
        }
        self.alerts.validate().map_err(HubError::Config)?;
        if let Some(p) = &self.rounds.privacy {
            let sane = p.clip_norm.is_finite()
                && p.clip_norm > 0.0
                && p.noise_multiplier.is_finite()
                && p.noise_multiplier > 0.0
                && p.delta > 0.0
                && p.delta < 1.0
                && p.epsilon_budget > 0.0;
            if !sane {
                return Err(HubError::Config(format!(
                    "differential privacy needs a positive clip norm and noise multiplier, a delta between 0 and 1 and a positive epsilon budget, got {p:?}"
                )));
            }
        }
        if let Some(path) = &self.revocation_list {
            if !path.is_file() {
                return Err(HubError::Config(format!(
                    "revocation list {} does not exist (it is crl.pem in the provisioning directory)",
                    path.display()
                )));
            }
        }
        Ok(())
    }
}
