//! The edge's configuration: a typed struct with defaults, validated once at start.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::EdgeError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// The edge's data directory (store, blobs).
    pub data_dir: PathBuf,
    /// Where the web UI and APIs listen (HTTP, hospital network).
    pub http_listen: SocketAddr,
    /// Dial this address instead of the kit's (a NAT or DNS rewrite at the site).
    pub hub_addr: Option<String>,
    /// Cap on bulk upload speed, bytes per second, so a thin uplink stays usable.
    pub bulk_rate_limit_bytes_per_sec: Option<u64>,
    /// Warn when the site certificate expires within this many days.
    pub expiry_warning_days: i64,
    /// Add `Secure` to session cookies (serve the UI behind HTTPS).
    pub secure_cookies: bool,
    /// Congestion controller for what the edge sends (BBR holds up better on lossy uplinks).
    pub congestion: grassroots_transport::Congestion,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("edge-data"),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8441)),
            hub_addr: None,
            bulk_rate_limit_bytes_per_sec: None,
            expiry_warning_days: 30,
            secure_cookies: false,
            congestion: grassroots_transport::Congestion::default(),
        }
    }
}

impl EdgeConfig {
    pub fn validate(&self) -> Result<(), EdgeError> {
        if self.bulk_rate_limit_bytes_per_sec == Some(0) {
            return Err(EdgeError::Config(
                "bulk_rate_limit_bytes_per_sec must be positive (omit it for no limit)".into(),
            ));
        }
        if let Some(addr) = &self.hub_addr {
            if !addr.contains(':') {
                return Err(EdgeError::Config(format!(
                    "hub address {addr:?} must be HOST:PORT"
                )));
            }
        }
        Ok(())
    }
}
