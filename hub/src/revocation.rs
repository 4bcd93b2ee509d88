//! Revocation at a running hub: the revocation list file is watched, and when it changes the
//! hub swaps its TLS configuration (new handshakes are checked against the new list) and closes
//! the live connections of every revoked certificate — within about a second, no restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use grassroots_provisioning::{Kit, Registry, RevocationList};
use grassroots_transport::HubEndpoint;
use tokio::sync::watch;

use crate::{HubError, HubState};

const POLL_EVERY: Duration = Duration::from_millis(500);

pub struct Revocations {
    path: Option<PathBuf>,
    ca_pem: String,
    list: RwLock<Option<RevocationList>>,
    /// The registry as last read, with the file's fingerprint: pages that list 2,000 sites
    /// would otherwise parse it on every request.
    registry: Mutex<Option<CachedRegistry>>,
}

/// A parsed registry and the (modified, length) of the file it came from.
type CachedRegistry = ((SystemTime, u64), Arc<Registry>);

impl Revocations {
    pub fn load(path: Option<&Path>, kit: &Kit) -> Result<Self, HubError> {
        let list = match path {
            Some(path) => Some(RevocationList::load(path, &kit.ca_certificate_pem)?),
            None => None,
        };
        Ok(Self {
            path: path.map(Path::to_path_buf),
            ca_pem: kit.ca_certificate_pem.clone(),
            list: RwLock::new(list),
            registry: Mutex::new(None),
        })
    }

    pub fn current(&self) -> Option<RevocationList> {
        self.list.read().map(|list| list.clone()).unwrap_or(None)
    }

    pub fn is_revoked(&self, serial: &str) -> bool {
        self.list
            .read()
            .map(|list| list.as_ref().is_some_and(|l| l.is_revoked(serial)))
            .unwrap_or(false)
    }

    /// The provisioning registry beside the revocation list, for site names (optional); read
    /// again whenever the file changes.
    pub fn registry(&self) -> Option<Arc<Registry>> {
        let dir = self.path.as_ref()?.parent()?;
        let file = fingerprint(&Registry::path(dir));
        let mut cached = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(file), Some((seen, registry))) = (file, cached.as_ref()) {
            if file == *seen {
                return Some(registry.clone());
            }
        }
        let registry = Arc::new(Registry::load(dir).ok()?);
        *cached = file.map(|file| (file, registry.clone()));
        Some(registry)
    }
}

/// Sends the current revocation list to `site` (when it connects, and to every online site when
/// the list changes), so that the edges refuse what the network revoked — the hub's own old
/// certificate included. The edge checks the CA's signature and keeps the newest.
pub(crate) fn pass_on(state: &Arc<HubState>, site: &str) {
    let Some(path) = state.revocations.path.clone() else {
        return;
    };
    let Some(connection) = state.sites.connection(site) else {
        return;
    };
    let (state, site) = (state.clone(), site.to_string());
    tokio::spawn(async move {
        let label = grassroots_wire::revocation::CRL_LABEL;
        match crate::link::send_file(&state, &connection, &path, label).await {
            Ok(()) => tracing::debug!(%site, "revocation list passed on"),
            Err(error) => tracing::warn!(%site, %error, "revocation list not passed on"),
        }
    });
}

fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

pub async fn watch(
    state: Arc<HubState>,
    endpoint: Arc<HubEndpoint>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(path) = state.revocations.path.clone() else {
        return;
    };
    let mut seen = fingerprint(&path);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let now = fingerprint(&path);
        if now == seen {
            continue;
        }
        seen = now;
        let list = match RevocationList::load(&path, &state.revocations.ca_pem) {
            Ok(list) => list,
            Err(error) => {
                tracing::error!(%error, "new revocation list refused; keeping the previous one");
                continue;
            }
        };
        if let Err(error) = endpoint.set_revocations(&list) {
            tracing::error!(%error, "cannot apply the new revocation list to the TLS configuration");
            continue;
        }
        let count = list.revoked_serials.len();
        if let Ok(mut current) = state.revocations.list.write() {
            *current = Some(list);
        }
        tracing::info!(revoked_certificates = count, "revocation list reloaded");
        state.accounts.security_log().record(
            "revocation-list-loaded",
            None,
            None,
            None,
            format!("{count} revoked certificate(s)"),
        );
        for site in state
            .sites
            .close_revoked(|serial| state.revocations.is_revoked(serial))
        {
            tracing::warn!(%site, "closed the connection of a revoked site");
            state.accounts.security_log().record(
                "certificate-revoked",
                Some(site.as_str()),
                None,
                None,
                "the site's connection was closed",
            );
        }
        state
            .metrics
            .sites_online
            .set(state.sites.online_count() as i64);
        for site in state.sites.online_sites() {
            pass_on(&state, &site);
        }
    }
}
