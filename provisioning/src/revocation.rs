//! The network's certificate revocation list (an X.509 CRL signed by the root CA).
//!
//! `provision revoke` writes `crl.pem`; the hub loads it at start and again whenever the file
//! changes: new handshakes are checked against it by rustls, and live connections whose
//! certificate serial it lists are closed. The hub passes it on to every edge, which checks the
//! CA's signature itself and keeps the newest by CRL number (`edge/src/hub_trust.rs`), so a
//! revoked hub certificate is refused by the edges too.

use std::collections::BTreeSet;
use std::path::Path;

use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::files::read_to_string;
use crate::{ProvisioningError, Result};

/// A loaded, signature-checked revocation list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    /// The CRL in DER, for rustls.
    pub der: Vec<u8>,
    /// Revoked serials, lowercase hex.
    pub revoked_serials: BTreeSet<String>,
    /// The CRL number (increases with every list the authority writes; 0 if absent).
    pub number: u64,
    /// The list as PEM text, to pass on.
    pub pem: String,
}

impl RevocationList {
    /// Loads `path` and checks it was signed by the CA whose certificate is `ca_cert_pem`.
    pub fn load(path: &Path, ca_cert_pem: &str) -> Result<Self> {
        let text = read_to_string(path)?;
        Self::from_pem(&text, ca_cert_pem).map_err(|reason| ProvisioningError::RevocationList {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses a PEM CRL and checks it was signed by the CA whose certificate is `ca_cert_pem`.
    pub fn from_pem(text: &str, ca_cert_pem: &str) -> std::result::Result<Self, String> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
            .map_err(|e| format!("not PEM: {e}"))?;
        if pem.label != "X509 CRL" {
            return Err(format!("expected an X509 CRL, found {:?}", pem.label));
        }
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(ca_cert_pem.as_bytes())
            .map_err(|e| format!("CA certificate is not PEM: {e}"))?;
        let (_, ca) = X509Certificate::from_der(&ca_pem.contents)
            .map_err(|e| format!("CA certificate: {e}"))?;
        let (_, crl) = CertificateRevocationList::from_der(&pem.contents)
            .map_err(|e| format!("not a CRL: {e}"))?;
        crl.verify_signature(ca.public_key())
            .map_err(|e| format!("not signed by this network's CA: {e}"))?;
        let revoked_serials = crl
            .iter_revoked_certificates()
            .map(|revoked| hex::encode(revoked.raw_serial()))
            .collect();
        let number = crl
            .crl_number()
            .map(|n| {
                n.to_bytes_be().iter().fold(0u64, |acc, b| {
                    acc.saturating_mul(256).saturating_add(u64::from(*b))
                })
            })
            .unwrap_or(0);
        Ok(Self {
            der: pem.contents.clone(),
            revoked_serials,
            number,
            pem: text.to_string(),
        })
    }

    pub fn is_revoked(&self, serial_hex: &str) -> bool {
        self.revoked_serials.contains(serial_hex)
    }
}
