//! Startup kits: one file that lets a node join its network.
//!
//! A kit holds the site's certificate and private key, the network's CA certificate, the hub's
//! address and the network's name (plus the public key that model packages are signed with). It is
//! JSON with a BLAKE3 checksum over its contents. Loading checks, in order: that the file is a kit
//! at all, its format version, the checksum, that the certificate was signed by the kit's CA, that
//! the certificate names the same site, role and network as the kit, and that the private key
//! belongs to the certificate. Each failure says which.

use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::files::write_private_file;
use crate::identity::{PeerIdentity, Role, SiteId};
use crate::{ProvisioningError, Result};

/// The kit format this build writes and reads.
pub const KIT_FORMAT: &str = "grassroots-kit/1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kit {
    pub format: String,
    pub network: String,
    pub site_id: SiteId,
    pub site_name: String,
    pub role: Role,
    /// Where edges dial the hub (and where the hub listens), HOST:PORT.
    pub hub_addr: String,
    pub ca_certificate_pem: String,
    pub certificate_pem: String,
    pub private_key_pem: String,
    /// Ed25519 public key (hex) that verifies model packages of this network.
    pub model_signing_public_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// BLAKE3 (hex) of the kit serialised with this field empty.
    pub checksum: String,
}

impl Kit {
    fn compute_checksum(&self) -> String {
        let mut unsealed = self.clone();
        unsealed.checksum = String::new();
        // Serialising a struct of strings and a date cannot fail.
        let bytes = serde_json::to_vec(&unsealed).unwrap_or_default();
        blake3::hash(&bytes).to_hex().to_string()
    }

    /// Sets the checksum; call after the last field is filled in.
    pub fn seal(mut self) -> Self {
        self.checksum = self.compute_checksum();
        self
    }

    /// Writes the kit with owner-only permissions (it holds a private key).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ProvisioningError::NotAKit {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        write_private_file(path, text.as_bytes())
    }

    /// Reads and fully validates a kit.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| ProvisioningError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses and fully validates a kit's file contents; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ProvisioningError::NotAKit {
                path: path.to_path_buf(),
                reason: format!("not JSON ({e})"),
            })?;
        let format = value
            .get("format")
            .and_then(|f| f.as_str())
            .ok_or_else(|| ProvisioningError::NotAKit {
                path: path.to_path_buf(),
                reason: "no \"format\" field".into(),
            })?;
        if format != KIT_FORMAT {
            return Err(ProvisioningError::UnsupportedKitFormat {
                path: path.to_path_buf(),
                found: format.to_string(),
                expected: KIT_FORMAT,
            });
        }
        let kit: Kit =
            serde_json::from_value(value).map_err(|e| ProvisioningError::KitTampered {
                path: path.to_path_buf(),
                reason: format!("fields do not parse: {e}"),
            })?;
        kit.validate()
            .map_err(|reason| ProvisioningError::KitTampered {
                path: path.to_path_buf(),
                reason,
            })?;
        Ok(kit)
    }

    /// Checks the kit's integrity and internal consistency (not expiry: an expired kit still
    /// loads, so the node can say clearly that it has expired).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.checksum != self.compute_checksum() {
            return Err("checksum mismatch: the file was edited after it was issued".into());
        }
        let ca_der = pem_contents(&self.ca_certificate_pem, "CA certificate")?;
        let cert_der = pem_contents(&self.certificate_pem, "certificate")?;
        let (_, ca) =
            X509Certificate::from_der(&ca_der).map_err(|e| format!("CA certificate: {e}"))?;
        let (_, cert) =
            X509Certificate::from_der(&cert_der).map_err(|e| format!("certificate: {e}"))?;
        cert.verify_signature(Some(ca.public_key()))
            .map_err(|_| "the certificate was not issued by the kit's CA".to_string())?;
        let identity = PeerIdentity::from_certificate(&cert).map_err(|e| e.to_string())?;
        if identity.site_id != self.site_id
            || identity.role != self.role
            || identity.network != self.network
        {
            return Err(format!(
                "the certificate is for {} ({}) of network {:?}, the kit says {} ({}) of {:?}",
                identity.site_id,
                identity.role.as_str(),
                identity.network,
                self.site_id,
                self.role.as_str(),
                self.network
            ));
        }
        let key = rcgen::KeyPair::from_pem(&self.private_key_pem)
            .map_err(|e| format!("private key: {e}"))?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err("the private key does not belong to the certificate".into());
        }
        Ok(())
    }

    /// The identity in the kit's certificate.
    pub fn identity(&self) -> Result<PeerIdentity> {
        let der = pem_contents(&self.certificate_pem, "certificate")
            .map_err(ProvisioningError::Certificate)?;
        PeerIdentity::from_der(&der)
    }

    /// The certificate in DER.
    pub fn certificate_der(&self) -> Result<Vec<u8>> {
        pem_contents(&self.certificate_pem, "certificate").map_err(ProvisioningError::Certificate)
    }

    /// The CA certificate in DER.
    pub fn ca_certificate_der(&self) -> Result<Vec<u8>> {
        pem_contents(&self.ca_certificate_pem, "CA certificate")
            .map_err(ProvisioningError::Certificate)
    }

    /// The private key in PKCS#8 DER.
    pub fn private_key_der(&self) -> Result<Vec<u8>> {
        let key = rcgen::KeyPair::from_pem(&self.private_key_pem)?;
        Ok(key.serialize_der())
    }
}

fn pem_contents(text: &str, what: &str) -> std::result::Result<Vec<u8>, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|e| format!("{what}: not PEM ({e})"))?;
    Ok(pem.contents)
}
