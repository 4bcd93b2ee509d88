//! rustls configurations built from a startup kit.
//!
//! TLS 1.3 only, ring as the crypto provider, ALPN `grassroots/1`. The hub requires a client
//! certificate chaining to the network's CA and not on its revocation list; the edge trusts only
//! the network's CA (never the system's roots) and checks the hub under the fixed name
//! [`grassroots_provisioning::HUB_SERVER_NAME`].

use std::sync::Arc;

use grassroots_provisioning::{Kit, RevocationList, HUB_SERVER_NAME};
use grassroots_wire::ALPN;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::{Result, TransportError};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(error: impl std::fmt::Display) -> TransportError {
    TransportError::TlsConfig(error.to_string())
}

struct KitMaterial {
    roots: RootCertStore,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn material(kit: &Kit) -> Result<KitMaterial> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(kit.ca_certificate_der()?))
        .map_err(tls_error)?;
    let chain = vec![CertificateDer::from(kit.certificate_der()?)];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(kit.private_key_der()?));
    Ok(KitMaterial { roots, chain, key })
}

/// The hub's TLS configuration, rejecting clients whose certificate is on `revocations`.
pub fn hub_server_config(
    kit: &Kit,
    revocations: Option<&RevocationList>,
) -> Result<rustls::ServerConfig> {
    let KitMaterial { roots, chain, key } = material(kit)?;
    let crls: Vec<CertificateRevocationListDer<'static>> = revocations
        .map(|list| vec![CertificateRevocationListDer::from(list.der.clone())])
        .unwrap_or_default();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
        .map_err(tls_error)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// An edge's TLS configuration: presents the site certificate, trusts only the network's CA,
/// and refuses a hub certificate on `revocations` (the list the hub passed on, checked by the
/// edge against its own CA).
pub fn edge_client_config(
    kit: &Kit,
    revocations: Option<&RevocationList>,
) -> Result<rustls::ClientConfig> {
    let KitMaterial { roots, chain, key } = material(kit)?;
    let crls: Vec<CertificateRevocationListDer<'static>> = revocations
        .map(|list| vec![CertificateRevocationListDer::from(list.der.clone())])
        .unwrap_or_default();
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status()
            .build()
            .map_err(tls_error)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The server name edges check in the hub's certificate.
pub fn hub_server_name() -> &'static str {
    HUB_SERVER_NAME
}
