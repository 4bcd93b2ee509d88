//! Who a peer is, as far as its verified certificate says.
//!
//! A site's certificate carries its site id as the subject common name, its role as the
//! organisational unit and the network's name as the organisation. The hub reads these from the
//! certificate that TLS has already verified against the network's CA: a message can never claim
//! to be another site.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{ProvisioningError, Result};

/// The site id reserved for the hub itself.
pub const HUB_SITE_ID: &str = "hub";

/// The TLS server name edges use for the hub, present in every hub certificate whatever address
/// the hub is reached at.
pub const HUB_SERVER_NAME: &str = "grassroots-hub";

/// A site's id: a DNS-label-shaped name chosen by the installer ("county-a", "lankao-people").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SiteId(String);

impl SiteId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hub's own id.
    pub fn hub() -> Self {
        SiteId(HUB_SITE_ID.to_string())
    }
}

impl FromStr for SiteId {
    type Err = ProvisioningError;

    fn from_str(text: &str) -> Result<Self> {
        let valid_chars = text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let valid = !text.is_empty() && text.len() <= 63 && valid_chars && !text.starts_with('-');
        if valid {
            Ok(SiteId(text.to_string()))
        } else {
            Err(ProvisioningError::InvalidSiteId(text.to_string()))
        }
    }
}

impl TryFrom<String> for SiteId {
    type Error = ProvisioningError;

    fn try_from(text: String) -> Result<Self> {
        text.parse()
    }
}

impl From<SiteId> for String {
    fn from(id: SiteId) -> Self {
        id.0
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a node is in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Hub,
    Edge,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hub => "hub",
            Role::Edge => "edge",
        }
    }
}

impl FromStr for Role {
    type Err = ProvisioningError;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "hub" => Ok(Role::Hub),
            "edge" => Ok(Role::Edge),
            other => Err(ProvisioningError::Certificate(format!(
                "unknown role {other:?} in certificate"
            ))),
        }
    }
}

/// The identity read from a peer's (already verified) certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerIdentity {
    pub site_id: SiteId,
    pub role: Role,
    pub network: String,
    /// Certificate serial number, lowercase hex.
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

impl PeerIdentity {
    /// Reads the identity fields of a DER certificate. This does *not* verify the certificate:
    /// call it on certificates TLS has verified, or after [`crate::Kit`] validation.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| {
            ProvisioningError::Certificate(format!("cannot parse certificate: {e}"))
        })?;
        Self::from_certificate(&cert)
    }

    pub(crate) fn from_certificate(cert: &X509Certificate<'_>) -> Result<Self> {
        let subject = cert.subject();
        let field = |values: Vec<&x509_parser::x509::AttributeTypeAndValue<'_>>, name: &str| {
            values
                .first()
                .and_then(|value| value.as_str().ok())
                .map(str::to_string)
                .ok_or_else(|| ProvisioningError::Certificate(format!("certificate has no {name}")))
        };
        let site_id = field(
            subject.iter_common_name().collect(),
            "common name (site id)",
        )?;
        let role = field(
            subject.iter_organizational_unit().collect(),
            "organisational unit (role)",
        )?;
        let network = field(
            subject.iter_organization().collect(),
            "organisation (network)",
        )?;
        Ok(PeerIdentity {
            site_id: site_id.parse()?,
            role: role.parse()?,
            network,
            serial: hex::encode(cert.raw_serial()),
            not_after: cert.validity().not_after.to_datetime(),
        })
    }

    /// Days until the certificate expires (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_ids_are_dns_labels() {
        assert!("county-a".parse::<SiteId>().is_ok());
        assert!("a1".parse::<SiteId>().is_ok());
        for bad in ["", "-a", "A", "a b", "a.b", &"x".repeat(64)] {
            assert!(bad.parse::<SiteId>().is_err(), "{bad:?}");
        }
    }
}
