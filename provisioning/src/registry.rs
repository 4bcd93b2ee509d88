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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub network: String,
    pub hub_addr: String,
    /// Increases with every revocation list issued (RFC 5280 CRL number).
    pub crl_number: u64,
    pub certificates: Vec<SiteRecord>,
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
