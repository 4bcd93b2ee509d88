//! The site registry: which sites a network has issued, with serials, expiry and revocation.
//!
//! A small JSON file in the provisioning directory, rewritten atomically. It is the source from
//! which the revocation list is generated and what `provision list` prints.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::files::{read_to_string, write_public_file};
use crate::identity::{Role, SiteId};
use crate::{ProvisioningError, Result};

/// One issued certificate of a site (renewal adds a new serial; older ones stay listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    pub site_id: SiteId,
    pub name: String,
    pub role: Role,
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub revoked_at: Option<OffsetDateTime>,
}

/// Where a site is, for the health authorities' coverage view: set at provisioning, travelling
/// in the registry (never from the edge, which could not be trusted to say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteLocation {
    /// Province, prefecture, county (outermost first), e.g. `["Henan", "Kaifeng", "Lankao"]`.
    pub region: Vec<String>,
    /// Latitude and longitude in millionths of a degree (whole numbers keep the registry exact).
    pub latitude_e6: i64,
    pub longitude_e6: i64,
    /// People the site serves.
    pub catchment_population: u64,
}

impl SiteLocation {
    /// Checks and builds a location: 1-3 region names of 1-64 printable characters, a latitude
    /// and longitude on the globe.
    pub fn new(
        region: &str,
        latitude: f64,
        longitude: f64,
        catchment_population: u64,
    ) -> Result<Self> {
        let region: Vec<String> = region.split('/').map(|p| p.trim().to_string()).collect();
        let bad = |reason: String| ProvisioningError::InvalidLocation(reason);
        if region.is_empty()
            || region.len() > 3
            || region
                .iter()
                .any(|p| p.is_empty() || p.chars().count() > 64 || p.chars().any(char::is_control))
        {
            return Err(bad(format!(
                "region {region:?}: give PROVINCE/PREFECTURE/COUNTY (1-3 names)"
            )));
        }
        if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
            return Err(bad(format!("coordinates {latitude}, {longitude}")));
        }
        Ok(Self {
            region,
            latitude_e6: (latitude * 1e6).round() as i64,
            longitude_e6: (longitude * 1e6).round() as i64,
            catchment_population,
        })
    }

    pub fn latitude(&self) -> f64 {
        self.latitude_e6 as f64 / 1e6
    }

    pub fn longitude(&self) -> f64 {
        self.longitude_e6 as f64 / 1e6
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub network: String,
    pub hub_addr: String,
    /// Increases with every revocation list issued (RFC 5280 CRL number).
    pub crl_number: u64,
    pub certificates: Vec<SiteRecord>,
    /// Where each site is (sites provisioned without a location have none).
    #[serde(default)]
    pub locations: std::collections::BTreeMap<String, SiteLocation>,
}

impl Registry {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("registry.json")
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let path = Self::path(dir);
        if !path.exists() {
            return Err(ProvisioningError::NotInitialised {
                path: dir.to_path_buf(),
                what: "registry.json".into(),
            });
        }
        let text = read_to_string(&path)?;
        serde_json::from_str(&text).map_err(|e| ProvisioningError::Registry {
            path,
            reason: e.to_string(),
        })
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ProvisioningError::Registry {
            path: Self::path(dir),
            reason: e.to_string(),
        })?;
        write_public_file(&Self::path(dir), text.as_bytes())
    }

    /// The newest certificate of a site, if the site exists.
    pub fn latest(&self, site: &SiteId) -> Option<&SiteRecord> {
        self.certificates
            .iter()
            .filter(|record| &record.site_id == site)
            .max_by_key(|record| record.not_before)
    }

    /// Serials of every revoked certificate.
    pub fn revoked(&self) -> impl Iterator<Item = &SiteRecord> {
        self.certificates.iter().filter(|r| r.revoked_at.is_some())
    }
}
