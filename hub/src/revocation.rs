//! Revocation at a running hub: the revocation list file is watched, and when it changes the
//! hub swaps its TLS configuration (new handshakes are checked against the new list) and closes
//! the live connections of every revoked certificate — within about a second, no restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
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
}

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

    /// The provisioning registry beside the revocation list, for site names (optional).
    pub fn registry(&self) -> Option<Registry> {
        let dir = self.path.as_ref()?.parent()?;
        Registry::load(dir).ok()
    }
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
        for site in state
            .sites
            .close_revoked(|serial| state.revocations.is_revoked(serial))
        {
            tracing::warn!(%site, "closed the connection of a revoked site");
        }
        state
            .metrics
            .sites_online
            .set(state.sites.online_count() as i64);
    }
}
