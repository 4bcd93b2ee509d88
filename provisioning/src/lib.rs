//! Provisioning: the identities of a Grassroots network.
//!
//! One directory, kept by the installer at the hub, holds the network's root CA, its model-signing
//! key, the site registry and the revocation list. From it come *startup kits*: one file per site
//! with that site's certificate and key, the CA certificate, the hub's address and the network's
//! name — everything a node needs to join. Every link is mutual TLS against this CA, and a site's
//! id and role are read from its verified certificate ([`PeerIdentity`]), never from a message.
//!
//! Time is passed in (`now`) so that expiry and revocation are testable without waiting.

mod authority;
mod files;
mod identity;
mod kit;
mod registry;
mod revocation;

pub mod signing;

pub use authority::{NetworkAuthority, DEFAULT_VALIDITY_DAYS};
pub use files::write_private_file;
pub use identity::{PeerIdentity, Role, SiteId, HUB_SERVER_NAME, HUB_SITE_ID};
pub use kit::{Kit, KIT_FORMAT};
pub use registry::{Registry, SiteLocation, SiteRecord};
pub use revocation::RevocationList;

use std::path::PathBuf;

/// Everything that can go wrong while provisioning or loading an identity.
#[derive(Debug, thiserror::Error)]
pub enum ProvisioningError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a Grassroots startup kit: {reason}")]
    NotAKit { path: PathBuf, reason: String },
    #[error("{path} is a startup kit of format {found:?}; this build reads {expected:?}")]
    UnsupportedKitFormat {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("startup kit {path} has been altered or damaged: {reason}")]
    KitTampered { path: PathBuf, reason: String },
    #[error("{path} already holds a network ({what} exists); refusing to overwrite it")]
    AlreadyInitialised { path: PathBuf, what: String },
    #[error("{path} is not a provisioning directory (missing {what}); run `grassroots provision init` first")]
    NotInitialised { path: PathBuf, what: String },
    #[error("invalid site id {0:?}: use 1-63 lowercase letters, digits and '-', starting with a letter or digit")]
    InvalidSiteId(String),
    #[error("another provisioning command is using {path}; try again when it has finished")]
    Busy { path: PathBuf },
    #[error("site id {0:?} is reserved")]
    ReservedSiteId(String),
    #[error("invalid network name {0:?}: use 1-64 printable characters")]
    InvalidNetworkName(String),
    #[error("invalid hub address {0:?}: expected HOST:PORT")]
    InvalidHubAddr(String),
    #[error("site {0:?} already exists in this network")]
    SiteExists(String),
    #[error("no site {0:?} in this network")]
    UnknownSite(String),
    #[error("site {0:?} is revoked; a revoked site cannot be renewed")]
    SiteRevoked(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("revocation list {path}: {reason}")]
    RevocationList { path: PathBuf, reason: String },
    #[error("{path}: malformed registry: {reason}")]
    Registry { path: PathBuf, reason: String },
    #[error("invalid site location: {0}")]
    InvalidLocation(String),
    #[error("the hub is not revoked, it is renewed: `grassroots provision renew hub` issues a new hub certificate and revokes the old one (edges follow it with their kits)")]
    HubNotRevocable,
}

impl From<rcgen::Error> for ProvisioningError {
    fn from(error: rcgen::Error) -> Self {
        ProvisioningError::Certificate(error.to_string())
    }
}

pub type Result<T, E = ProvisioningError> = std::result::Result<T, E>;
