//! The network authority: the provisioning directory and every operation on it.
//!
//! Layout of the directory (kept by the installer, at the hub):
//! `ca.pem` (root certificate), `ca.key` (0600), `model-signing.key` (0600, Ed25519 seed),
//! `registry.json` (sites and serials), `crl.pem` (revocation list), `kits/*.kit` (0600).

use std::path::{Path, PathBuf};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::files::{read_to_string, write_private_file, write_public_file};
use crate::identity::{Role, SiteId, HUB_SERVER_NAME, HUB_SITE_ID};
use crate::kit::{Kit, KIT_FORMAT};
use crate::registry::{Registry, SiteLocation, SiteRecord};
use crate::{ProvisioningError, Result};

/// Default certificate validity for sites and the hub.
pub const DEFAULT_VALIDITY_DAYS: i64 = 365;

const CA_VALIDITY_DAYS: i64 = 3650;

pub struct NetworkAuthority {
    /// Held for the authority's lifetime: provisioning commands run one at a time per directory,
    /// so that two of them never rewrite the registry from the same stale copy (a lost
    /// revocation would silently drop out of the next revocation list).
    _lock: std::fs::File,
    dir: PathBuf,
    ca_cert_pem: String,
    ca_key: KeyPair,
    signing_key_hex: String,
    registry: Registry,
}

impl NetworkAuthority {
    /// Creates a network: root CA, model-signing key, registry, an empty revocation list and the
    /// hub's kit (`kits/hub.kit`). Refuses to touch a directory that already holds a network.
    pub fn init(
        dir: &Path,
        network: &str,
        hub_addr: &str,
        validity_days: i64,
        now: OffsetDateTime,
    ) -> Result<(Self, Kit)> {
        if network.is_empty() || network.len() > 64 || network.chars().any(char::is_control) {
            return Err(ProvisioningError::InvalidNetworkName(network.to_string()));
        }
        let hub_host = hub_host(hub_addr)?;
        let already_initialised = || {
            ["ca.key", "registry.json"]
                .into_iter()
                .find(|existing| dir.join(existing).exists())
                .map(|existing| ProvisioningError::AlreadyInitialised {
                    path: dir.to_path_buf(),
                    what: existing.to_string(),
                })
        };
        if let Some(error) = already_initialised() {
            return Err(error);
        }
        let lock = lock_directory(dir)?;
        if let Some(error) = already_initialised() {
            return Err(error);
        }
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name =
            distinguished_name(&format!("{network} root CA"), network, None);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
        params.serial_number = Some(random_serial().1);
        let ca_cert = params.self_signed(&ca_key)?;

        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let signing_key_hex = hex::encode(seed);

        write_private_file(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes())?;
        write_public_file(&dir.join("ca.pem"), ca_cert.pem().as_bytes())?;
        write_private_file(&dir.join("model-signing.key"), signing_key_hex.as_bytes())?;
        let registry = Registry {
            network: network.to_string(),
            hub_addr: hub_addr.to_string(),
            crl_number: 0,
            certificates: Vec::new(),
            locations: Default::default(),
        };
        let mut authority = Self {
            _lock: lock,
            dir: dir.to_path_buf(),
            ca_cert_pem: ca_cert.pem(),
            ca_key,
            signing_key_hex,
            registry,
        };
        authority.write_revocation_list(now)?;
        let hub_sans = vec![HUB_SERVER_NAME.to_string(), hub_host];
        let kit = authority.issue(
            SiteId::hub(),
            "Hub",
            Role::Hub,
            hub_sans,
            now - Duration::minutes(5),
            now + Duration::days(validity_days),
        )?;
        Ok((authority, kit))
    }

    /// Opens an existing provisioning directory.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join("registry.json").exists() {
            return Err(ProvisioningError::NotInitialised {
                path: dir.to_path_buf(),
                what: "registry.json".to_string(),
            });
        }
        let lock = lock_directory(dir)?;
        for needed in ["ca.key", "ca.pem", "model-signing.key", "registry.json"] {
            if !dir.join(needed).exists() {
                return Err(ProvisioningError::NotInitialised {
                    path: dir.to_path_buf(),
                    what: needed.to_string(),
                });
            }
        }
        let ca_key = KeyPair::from_pem(&read_to_string(&dir.join("ca.key"))?)?;
        Ok(Self {
            _lock: lock,
            dir: dir.to_path_buf(),
            ca_cert_pem: read_to_string(&dir.join("ca.pem"))?,
            ca_key,
            signing_key_hex: read_to_string(&dir.join("model-signing.key"))?
                .trim()
                .to_string(),
            registry: Registry::load(dir)?,
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn ca_certificate_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    pub fn kit_path(&self, site: &SiteId) -> PathBuf {
        self.dir.join("kits").join(format!("{site}.kit"))
    }

    pub fn revocation_list_path(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    /// The Ed25519 seed that signs model packages (hex). Only the hub's tooling needs it.
    pub fn model_signing_seed_hex(&self) -> &str {
        &self.signing_key_hex
    }

    /// Adds an edge site and writes its kit.
    pub fn add_site(
        &mut self,
        site: &SiteId,
        name: &str,
        validity_days: i64,
        now: OffsetDateTime,
    ) -> Result<Kit> {
        if site.as_str() == HUB_SITE_ID {
            return Err(ProvisioningError::ReservedSiteId(site.to_string()));
        }
        if self.registry.latest(site).is_some() {
            return Err(ProvisioningError::SiteExists(site.to_string()));
        }
        self.issue_edge(
            site,
            name,
            now - Duration::minutes(5),
            now + Duration::days(validity_days),
        )
    }

    /// Records where a site is (replacing what was recorded).
    pub fn set_location(&mut self, site: &SiteId, location: SiteLocation) -> Result<()> {
        if self.registry.latest(site).is_none() {
            return Err(ProvisioningError::UnknownSite(site.to_string()));
        }
        self.registry.locations.insert(site.to_string(), location);
        self.registry.save(&self.dir)
    }

    /// Issues an edge certificate with an explicit validity window (renewal, and tests that need
    /// a certificate that has already expired).
    pub fn issue_edge(
        &mut self,
        site: &SiteId,
        name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Kit> {
        let sans = vec![format!("{site}.sites.grassroots")];
        self.issue(site.clone(), name, Role::Edge, sans, not_before, not_after)
    }

    /// Issues a fresh certificate and kit for an existing, unrevoked site (the hub included).
    /// Renewing the hub also revokes its earlier certificates and rewrites the revocation list:
    /// the running hub passes the list to the edges, which then accept only the new certificate
    /// (from the same CA, so without a new kit of their own).
    pub fn renew(&mut self, site: &SiteId, validity_days: i64, now: OffsetDateTime) -> Result<Kit> {
        let record = self
            .registry
            .latest(site)
            .cloned()
            .ok_or_else(|| ProvisioningError::UnknownSite(site.to_string()))?;
        if record.revoked_at.is_some() {
            return Err(ProvisioningError::SiteRevoked(site.to_string()));
        }
        let not_before = now - Duration::minutes(5);
        let not_after = now + Duration::days(validity_days);
        match record.role {
            Role::Edge => self.issue_edge(site, &record.name, not_before, not_after),
            Role::Hub => {
                let sans = vec![
                    HUB_SERVER_NAME.to_string(),
                    hub_host(&self.registry.hub_addr)?,
                ];
                let kit = self.issue(
                    site.clone(),
                    &record.name,
                    Role::Hub,
                    sans,
                    not_before,
                    not_after,
                )?;
                let current = kit.identity()?.serial;
                for old in self.registry.certificates.iter_mut() {
                    if &old.site_id == site && old.serial != current && old.revoked_at.is_none() {
                        old.revoked_at = Some(now);
                    }
                }
                self.registry.save(&self.dir)?;
                self.write_revocation_list(now)?;
                Ok(kit)
            }
        }
    }

    /// Revokes every certificate of a site and rewrites the revocation list, which a running hub
    /// picks up within seconds.
    pub fn revoke(&mut self, site: &SiteId, now: OffsetDateTime) -> Result<usize> {
        // Revoking the hub's only certificate would cut every edge off with no way back (edges
        // enforce the list, and a revoked site cannot be renewed).
        if *site == SiteId::hub() {
            return Err(ProvisioningError::HubNotRevocable);
        }
        if self.registry.latest(site).is_none() {
            return Err(ProvisioningError::UnknownSite(site.to_string()));
        }
        let mut newly_revoked = 0;
        for record in self.registry.certificates.iter_mut() {
            if &record.site_id == site && record.revoked_at.is_none() {
                record.revoked_at = Some(now);
                newly_revoked += 1;
            }
        }
        self.registry.save(&self.dir)?;
        self.write_revocation_list(now)?;
        Ok(newly_revoked)
    }

    /// Issues a TLS server certificate for a site's web UI (`--tls-cert`/`--tls-key`), for
    /// hospitals without a certificate of their own: `web/SITE.crt` and `web/SITE.key` (0600).
    /// Browsers trust it only once the network's CA is installed on them, so nodes serving it
    /// send no HSTS. It is a separate key from the site's mTLS identity: the web UI's key may sit
    /// on a reverse proxy, and losing it must not let anyone speak for the site to the hub.
    pub fn issue_web_certificate(
        &self,
        site: &SiteId,
        hosts: &[String],
        validity_days: i64,
        now: OffsetDateTime,
    ) -> Result<(PathBuf, PathBuf)> {
        if self.registry.latest(site).is_none() {
            return Err(ProvisioningError::UnknownSite(site.to_string()));
        }
        if hosts.is_empty() {
            return Err(ProvisioningError::Certificate(
                "a web certificate needs at least one host name or address".to_string(),
            ));
        }
        // The network's own names: edges trust any certificate of this CA named the hub, so a
        // web certificate (whose key may sit on a reverse proxy) must never carry them.
        if let Some(reserved) = hosts.iter().find(|host| {
            let host = host.to_ascii_lowercase();
            host == HUB_SERVER_NAME || host.ends_with(".grassroots") || host == "grassroots"
        }) {
            return Err(ProvisioningError::Certificate(format!(
                "{reserved:?} is a name of the network itself, not a host browsers reach"
            )));
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&hosts[0], &self.registry.network, None);
        params.subject_alt_names = hosts
            .iter()
            .map(|host| match host.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => host.clone().try_into().map(SanType::DnsName),
            })
            .collect::<std::result::Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(validity_days);
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.serial_number = Some(random_serial().1);
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key)?;
        let cert = params.signed_by(&key, &issuer)?;
        let dir = self.dir.join("web");
        let cert_path = dir.join(format!("{site}.crt"));
        let key_path = dir.join(format!("{site}.key"));
        // Key first: a certificate on disk always has its key beside it.
        write_private_file(&key_path, key.serialize_pem().as_bytes())?;
        write_public_file(&cert_path, cert.pem().as_bytes())?;
        Ok((cert_path, key_path))
    }

    fn issue(
        &mut self,
        site: SiteId,
        name: &str,
        role: Role,
        sans: Vec<String>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Kit> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name =
            distinguished_name(site.as_str(), &self.registry.network, Some(role));
        params.subject_alt_names = sans
            .into_iter()
            .map(|san| match san.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => san.try_into().map(SanType::DnsName),
            })
            .collect::<std::result::Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            Role::Hub => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Edge => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.not_before = not_before;
        params.not_after = not_after;
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let (serial_hex, serial) = random_serial();
        params.serial_number = Some(serial);
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key)?;
        let cert = params.signed_by(&key, &issuer)?;

        self.registry.certificates.push(SiteRecord {
            site_id: site.clone(),
            name: name.to_string(),
            role,
            serial: serial_hex,
            not_before,
            not_after,
            revoked_at: None,
        });
        let public_key =
            ed25519_dalek::SigningKey::from_bytes(&self.signing_seed()?).verifying_key();
        let kit = Kit {
            format: KIT_FORMAT.to_string(),
            network: self.registry.network.clone(),
            site_id: site.clone(),
            site_name: name.to_string(),
            role,
            hub_addr: self.registry.hub_addr.clone(),
            ca_certificate_pem: self.ca_cert_pem.clone(),
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            model_signing_public_key: hex::encode(public_key.as_bytes()),
            not_after,
            checksum: String::new(),
        }
        .seal();
        // The kit is written before the registry records it: a crash in between leaves an unused
        // kit file, never a registered certificate whose key was lost.
        kit.save(&self.kit_path(&site))?;
        self.registry.save(&self.dir)?;
        Ok(kit)
    }

    fn signing_seed(&self) -> Result<[u8; 32]> {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(&self.signing_key_hex, &mut seed).map_err(|e| {
            ProvisioningError::Certificate(format!("model-signing.key is damaged: {e}"))
        })?;
        Ok(seed)
    }

    fn write_revocation_list(&mut self, now: OffsetDateTime) -> Result<()> {
        self.registry.crl_number += 1;
        let revoked_certs = self
            .registry
            .revoked()
            .map(|record| {
                let bytes = hex::decode(&record.serial).map_err(|e| {
                    ProvisioningError::Certificate(format!(
                        "registry serial {:?}: {e}",
                        record.serial
                    ))
                })?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: record.revoked_at.unwrap_or(now),
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(CA_VALIDITY_DAYS),
            crl_number: SerialNumber::from_slice(&self.registry.crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key)?;
        let crl = params.signed_by(&issuer)?;
        self.registry.save(&self.dir)?;
        write_public_file(&self.revocation_list_path(), crl.pem()?.as_bytes())
    }
}

/// How long a provisioning command waits for another one on the same directory.
const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Takes the directory's exclusive lock, waiting for another provisioning command to finish.
fn lock_directory(dir: &Path) -> Result<std::fs::File> {
    let io = |source| ProvisioningError::Io {
        path: dir.join(".lock"),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .map_err(io)?;
    let deadline = std::time::Instant::now() + LOCK_TIMEOUT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(ProvisioningError::Busy {
                    path: dir.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
        }
    }
}

fn distinguished_name(common_name: &str, network: &str, role: Option<Role>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, network);
    if let Some(role) = role {
        name.push(DnType::OrganizationalUnitName, role.as_str());
    }
    name
}

/// A random positive serial of 16 bytes whose first byte is non-zero, so that its DER encoding
/// is exactly these bytes and the hex read back from a certificate matches the registry.
fn random_serial() -> (String, SerialNumber) {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f).max(1);
    (hex::encode(bytes), SerialNumber::from_slice(&bytes))
}

fn hub_host(hub_addr: &str) -> Result<String> {
    let invalid = || ProvisioningError::InvalidHubAddr(hub_addr.to_string());
    let (host, port) = hub_addr.rsplit_once(':').ok_or_else(invalid)?;
    port.parse::<u16>().map_err(|_| invalid())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid());
    }
    Ok(host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PeerIdentity, RevocationList};

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn init_add_revoke_renew() {
        let dir = tempfile::tempdir().unwrap();
        let (mut authority, hub_kit) =
            NetworkAuthority::init(dir.path(), "Henan", "127.0.0.1:7443", 365, now()).unwrap();
        assert_eq!(hub_kit.role, Role::Hub);
        let site: SiteId = "county-a".parse().unwrap();
        let kit = authority
            .add_site(&site, "County A People's Hospital", 365, now())
            .unwrap();
        let loaded = Kit::load(&authority.kit_path(&site)).unwrap();
        assert_eq!(loaded, kit);
        let identity = kit.identity().unwrap();
        assert_eq!(identity.site_id, site);
        assert_eq!(identity.role, Role::Edge);
        assert_eq!(identity.network, "Henan");
        assert_eq!(
            identity.serial,
            authority.registry().latest(&site).unwrap().serial
        );

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for secret in [
                "ca.key",
                "model-signing.key",
                "kits/county-a.kit",
                "kits/hub.kit",
            ] {
                let mode = std::fs::metadata(dir.path().join(secret))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{secret}");
            }
        }

        assert!(matches!(
            authority.add_site(&site, "again", 365, now()),
            Err(ProvisioningError::SiteExists(_))
        ));
        let renewed = authority.renew(&site, 30, now()).unwrap();
        assert_ne!(renewed.identity().unwrap().serial, identity.serial);

        assert_eq!(authority.revoke(&site, now()).unwrap(), 2);
        let crl = RevocationList::load(
            &authority.revocation_list_path(),
            authority.ca_certificate_pem(),
        )
        .unwrap();
        assert!(crl.is_revoked(&identity.serial));
        assert!(!crl.is_revoked(&hub_kit.identity().unwrap().serial));
        assert!(matches!(
            authority.renew(&site, 30, now()),
            Err(ProvisioningError::SiteRevoked(_))
        ));

        // The hub is renewed, never revoked: renewal revokes its old certificate (and raises
        // the list's number), revocation is refused.
        let before = crl.number;
        let new_hub = authority.renew(&SiteId::hub(), 30, now()).unwrap();
        let crl = RevocationList::load(
            &authority.revocation_list_path(),
            authority.ca_certificate_pem(),
        )
        .unwrap();
        assert!(crl.number > before);
        assert!(crl.is_revoked(&hub_kit.identity().unwrap().serial));
        assert!(!crl.is_revoked(&new_hub.identity().unwrap().serial));
        assert!(matches!(
            authority.revoke(&SiteId::hub(), now()),
            Err(ProvisioningError::HubNotRevocable)
        ));

        // Reopening sees the same state.
        let registry = authority.registry().clone();
        drop(authority);
        let reopened = NetworkAuthority::open(dir.path()).unwrap();
        assert_eq!(reopened.registry(), &registry);
    }

    #[test]
    fn concurrent_commands_on_one_directory_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        drop(NetworkAuthority::init(dir.path(), "N", "127.0.0.1:7443", 365, now()).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let mut authority = NetworkAuthority::open(&dir).unwrap();
                    let site: SiteId = format!("site-{i}").parse().unwrap();
                    authority.add_site(&site, "x", 365, now()).unwrap();
                    authority.revoke(&site, now()).unwrap();
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let authority = NetworkAuthority::open(dir.path()).unwrap();
        assert_eq!(
            authority.registry().revoked().count(),
            4,
            "no revocation was lost"
        );
        let crl = RevocationList::load(
            &authority.revocation_list_path(),
            authority.ca_certificate_pem(),
        )
        .unwrap();
        assert_eq!(crl.revoked_serials.len(), 4);
    }

    #[test]
    fn refuses_to_overwrite_a_network_and_reserved_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (mut authority, _) =
            NetworkAuthority::init(dir.path(), "N", "localhost:7443", 365, now()).unwrap();
        assert!(matches!(
            NetworkAuthority::init(dir.path(), "N", "localhost:7443", 365, now()),
            Err(ProvisioningError::AlreadyInitialised { .. })
        ));
        assert!(matches!(
            authority.add_site(&SiteId::hub(), "x", 365, now()),
            Err(ProvisioningError::ReservedSiteId(_))
        ));
        assert!(matches!(
            NetworkAuthority::init(
                tempfile::tempdir().unwrap().path(),
                "N",
                "no-port",
                365,
                now()
            ),
            Err(ProvisioningError::InvalidHubAddr(_))
        ));
        assert!(matches!(
            NetworkAuthority::open(tempfile::tempdir().unwrap().path()),
            Err(ProvisioningError::NotInitialised { .. })
        ));
    }

    #[test]
    fn tampered_foreign_and_wrong_kits_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (mut authority, _) =
            NetworkAuthority::init(dir.path(), "N", "127.0.0.1:7443", 365, now()).unwrap();
        let site: SiteId = "county-a".parse().unwrap();
        let kit = authority.add_site(&site, "A", 365, now()).unwrap();
        let path = dir.path().join("edited.kit");

        // Edited field, checksum left as it was.
        let mut edited = kit.clone();
        edited.hub_addr = "10.9.9.9:7443".into();
        edited.save(&path).unwrap();
        let err = Kit::load(&path).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");

        // Certificate swapped for one from another network, checksum recomputed.
        let other = tempfile::tempdir().unwrap();
        let (mut other_authority, _) =
            NetworkAuthority::init(other.path(), "Other", "127.0.0.1:7443", 365, now()).unwrap();
        let foreign = other_authority.add_site(&site, "A", 365, now()).unwrap();
        let mut mixed = kit.clone();
        mixed.certificate_pem = foreign.certificate_pem.clone();
        mixed.seal().save(&path).unwrap();
        let err = Kit::load(&path).unwrap_err().to_string();
        assert!(err.contains("not issued by the kit's CA"), "{err}");

        // Key of another site.
        let second = authority
            .add_site(&"county-b".parse().unwrap(), "B", 365, now())
            .unwrap();
        let mut wrong_key = kit.clone();
        wrong_key.private_key_pem = second.private_key_pem;
        wrong_key.seal().save(&path).unwrap();
        let err = Kit::load(&path).unwrap_err().to_string();
        assert!(err.contains("private key does not belong"), "{err}");

        // Not a kit at all.
        std::fs::write(&path, b"\x89PNG not a kit").unwrap();
        let err = Kit::load(&path).unwrap_err().to_string();
        assert!(err.contains("is not a Grassroots startup kit"), "{err}");
        std::fs::write(&path, br#"{"format":"grassroots-kit/9"}"#).unwrap();
        assert!(matches!(
            Kit::load(&path),
            Err(ProvisioningError::UnsupportedKitFormat { .. })
        ));

        // The registry's CRL does not verify against a foreign CA.
        let err = RevocationList::load(
            &authority.revocation_list_path(),
            other_authority.ca_certificate_pem(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("not signed by this network's CA"),
            "{err}"
        );
        let _ = PeerIdentity::from_der(&kit.certificate_der().unwrap()).unwrap();
    }
}
