//! What this edge trusts of its hub beyond the CA in its kit: the network's revocation list.
//!
//! The hub passes the list on (`grassroots_wire::revocation`) when the edge connects and
//! whenever it changes. The edge checks the CA's signature with its own kit — a hub cannot forge
//! a list — keeps the newest by CRL number (an older or equal one changes nothing), writes it
//! durably to `DATA/revocation-list.pem`, and loads it at start. With it the edge refuses a
//! revoked hub certificate at the next handshake, closes its link at once if the hub it is
//! talking to holds one, and refuses answers signed with one (an answer already stored stays
//! valid). This is how `provision renew hub` works without new kits: the old hub certificate is
//! revoked, and the edges follow the new one, issued by the same CA.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use grassroots_provisioning::RevocationList;
use grassroots_transport::EdgeEndpoint;

pub struct HubTrust {
    ca_pem: String,
    path: PathBuf,
    endpoint: Option<EdgeEndpoint>,
    current: RwLock<Option<RevocationList>>,
    /// One list taken at a time: two arriving together cannot leave the older in force.
    taking: std::sync::Mutex<()>,
}

impl HubTrust {
    /// Loads the list kept from last time (a damaged file is logged and ignored: the hub passes
    /// the list on again at the next connection).
    pub fn open(
        data_dir: &Path,
        kit: &grassroots_provisioning::Kit,
        endpoint: Option<EdgeEndpoint>,
    ) -> Self {
        let path = data_dir.join("revocation-list.pem");
        let current = match std::fs::read_to_string(&path) {
            Ok(text) => match RevocationList::from_pem(&text, &kit.ca_certificate_pem) {
                Ok(list) => Some(list),
                Err(reason) => {
                    tracing::error!(path = %path.display(), %reason, "kept revocation list refused");
                    None
                }
            },
            Err(_) => None,
        };
        let trust = Self {
            ca_pem: kit.ca_certificate_pem.clone(),
            path,
            endpoint,
            current: RwLock::new(None),
            taking: std::sync::Mutex::new(()),
        };
        if let Some(list) = current {
            if let Err(reason) = trust.apply(list) {
                tracing::error!(%reason, "cannot apply the kept revocation list");
            }
        }
        trust
    }

    /// Puts `list` in force: first in the link's TLS check, then for answers; nothing changes if
    /// the first fails, so the two never disagree.
    fn apply(&self, list: RevocationList) -> Result<(), String> {
        if let Some(endpoint) = &self.endpoint {
            endpoint.set_revocations(&list).map_err(|error| {
                format!("cannot apply the revocation list to the link: {error}")
            })?;
        }
        let mut current = self
            .current
            .write()
            .map_err(|_| "revocation list lock poisoned".to_string())?;
        *current = Some(list);
        Ok(())
    }

    /// The CRL number of the list in force, if any.
    pub fn number(&self) -> Option<u64> {
        self.current
            .read()
            .ok()
            .and_then(|list| list.as_ref().map(|l| l.number))
    }

    pub fn is_revoked(&self, serial: &str) -> bool {
        self.current
            .read()
            .map(|list| list.as_ref().is_some_and(|l| l.is_revoked(serial)))
            .unwrap_or(false)
    }

    /// Takes a list the hub passed on: `Ok(true)` if it is newer and now in force, `Ok(false)`
    /// if it is not newer (nothing changes), `Err` with the reason if it is no list of this
    /// network's CA. If the hub on `live` holds a certificate the new list revokes, that link is
    /// closed.
    pub fn take(
        &self,
        bytes: &[u8],
        live: Option<&grassroots_transport::Connection>,
    ) -> Result<bool, String> {
        if bytes.len() > grassroots_wire::revocation::MAX_CRL_BYTES {
            return Err(format!("a revocation list of {} bytes", bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "a revocation list that is not text")?;
        let list = RevocationList::from_pem(text, &self.ca_pem)?;
        let _taking = self.taking.lock().unwrap_or_else(|p| p.into_inner());
        if self.number().is_some_and(|held| held >= list.number) {
            return Ok(false);
        }
        grassroots_store::durable::write_file(&self.path, bytes)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let revoked_hub = live.and_then(|connection| {
            grassroots_transport::PeerConnection::from_connection(connection.clone())
                .ok()
                .filter(|peer| list.is_revoked(&peer.identity.serial))
        });
        let (number, revoked) = (list.number, list.revoked_serials.len());
        // In force before the link is closed, so that the redial meets the new check.
        self.apply(list)?;
        tracing::info!(number, revoked, "revocation list from the hub in force");
        if let Some(peer) = revoked_hub {
            tracing::warn!(serial = %peer.identity.serial, "the hub's certificate is revoked: link closed");
            peer.connection.close(
                grassroots_transport::CloseCode::Revoked.into(),
                b"your certificate is revoked",
            );
        }
        Ok(true)
    }
}
