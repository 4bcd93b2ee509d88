//! The hub's view of its sites: which are online now (in memory, one live connection each) and
//! what it remembers of each (in the store: first and last seen, certificate serial and expiry).
//! Names and sites that never connected come from the provisioning registry when the hub can
//! read it.

use std::collections::HashMap;
use std::sync::Mutex;

use grassroots_provisioning::{PeerIdentity, SiteId};
use grassroots_store::{Store, Table};
use grassroots_transport::Connection;
use grassroots_wire::capabilities::Capabilities;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::HubError;

/// What the hub remembers of a site across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteMemory {
    pub site_id: SiteId,
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub certificate_not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    pub connections: u64,
}

struct LiveSite {
    connection: Connection,
    serial: String,
    connected_at: OffsetDateTime,
    protocol_version: Option<u16>,
    /// What the edge announced it understands beyond version 1 (none until it does).
    capabilities: Option<Capabilities>,
}

/// One row of the sites table on the status page and in `/api/v1/sites`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SiteStatus {
    pub site_id: String,
    pub name: Option<String>,
    pub online: bool,
    pub revoked: bool,
    pub protocol_version: Option<u16>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub connected_since: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub certificate_not_after: Option<OffsetDateTime>,
    pub certificate_days_left: Option<i64>,
    pub serial: Option<String>,
    pub rtt_ms: Option<f64>,
}

pub struct Sites {
    memory: Table<SiteMemory>,
    live: Mutex<HashMap<SiteId, LiveSite>>,
}

impl Sites {
    pub fn open(store: &Store) -> Result<Self, HubError> {
        Ok(Self {
            memory: store.table("sites")?,
            live: Mutex::new(HashMap::new()),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<SiteId, LiveSite>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removals), so a poisoned lock is still usable.
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a verified connection; an older connection of the same site is closed.
    pub fn connected(
        &self,
        identity: &PeerIdentity,
        connection: Connection,
        now: OffsetDateTime,
    ) -> Result<(), HubError> {
        // Remember the site first: if the store fails, no live state has changed.
        self.memory.update(identity.site_id.as_str(), |memory| {
            Some(match memory {
                Some(mut memory) => {
                    memory.serial = identity.serial.clone();
                    memory.certificate_not_after = identity.not_after;
                    memory.last_seen = now;
                    memory.connections += 1;
                    memory
                }
                None => SiteMemory {
                    site_id: identity.site_id.clone(),
                    serial: identity.serial.clone(),
                    certificate_not_after: identity.not_after,
                    first_seen: now,
                    last_seen: now,
                    connections: 1,
                },
            })
        })?;
        self.memory.flush()?;
        let previous = self.live().insert(
            identity.site_id.clone(),
            LiveSite {
                connection,
                serial: identity.serial.clone(),
                connected_at: now,
                protocol_version: None,
                capabilities: None,
            },
        );
        if let Some(previous) = previous {
            previous.connection.close(
                grassroots_transport::CloseCode::Replaced.into(),
                b"replaced by a newer connection",
            );
        }
        Ok(())
    }

    /// The live connection of `site`, if it is online.
    pub fn connection(&self, site: &str) -> Option<Connection> {
        let site: SiteId = site.parse().ok()?;
        self.live().get(&site).map(|live| live.connection.clone())
    }

    /// The control session came up.
    pub fn established(&self, site: &SiteId, connection_id: usize, version: u16) {
        if let Some(live) = self.live().get_mut(site) {
            if live.connection.stable_id() == connection_id {
                live.protocol_version = Some(version);
            }
        }
    }

    /// The site announced its capabilities on the connection `connection_id`.
    pub fn announced(&self, site: &SiteId, connection_id: usize, capabilities: Capabilities) {
        if let Some(live) = self.live().get_mut(site) {
            if live.connection.stable_id() == connection_id {
                live.capabilities = Some(capabilities);
            }
        }
    }

    /// What the site announced on that connection, or `None` if it has not (yet).
    pub fn announced_capabilities(
        &self,
        site: &SiteId,
        connection_id: usize,
    ) -> Option<Capabilities> {
        self.live()
            .get(site)
            .filter(|live| live.connection.stable_id() == connection_id)
            .and_then(|live| live.capabilities.clone())
    }

    /// What the site announced, waiting up to `patience` for a control session that has not
    /// said yet (an edge's outbox may offer a transfer before its `Hello` is through); an edge
    /// too old to announce anything costs that wait, only when something is refused for good.
    pub async fn capabilities_soon(
        &self,
        site: &SiteId,
        connection_id: usize,
        patience: std::time::Duration,
    ) -> Capabilities {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(announced) = self.announced_capabilities(site, connection_id) {
                return announced;
            }
            if tokio::time::Instant::now() >= deadline {
                return Capabilities::default();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// A message arrived from the site.
    pub fn heard(&self, site: &SiteId, now: OffsetDateTime) -> Result<(), HubError> {
        // An atomic update, so that it never writes back a serial older than `connected` wrote.
        // Last-seen is advisory: sled's periodic flush is durable enough for it.
        self.memory.update(site.as_str(), |memory| {
            memory.map(|mut memory| {
                memory.last_seen = now;
                memory
            })
        })?;
        Ok(())
    }

    /// The connection ended; forget it unless a newer one already replaced it.
    pub fn disconnected(&self, site: &SiteId, connection_id: usize) {
        let mut live = self.live();
        if live
            .get(site)
            .is_some_and(|l| l.connection.stable_id() == connection_id)
        {
            live.remove(site);
        }
    }

    /// Closes live connections whose certificate serial is revoked; returns the sites closed.
    pub fn close_revoked(&self, is_revoked: impl Fn(&str) -> bool) -> Vec<SiteId> {
        let mut live = self.live();
        let revoked: Vec<SiteId> = live
            .iter()
            .filter(|(_, site)| is_revoked(&site.serial))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &revoked {
            if let Some(site) = live.remove(id) {
                site.connection.close(
                    grassroots_transport::CloseCode::Revoked.into(),
                    b"certificate revoked",
                );
            }
        }
        revoked
    }

    /// The sites whose control session is up.
    pub fn online_sites(&self) -> Vec<String> {
        self.live()
            .iter()
            .filter(|(_, l)| l.protocol_version.is_some())
            .map(|(id, _)| id.to_string())
            .collect()
    }

    pub fn online_count(&self) -> usize {
        self.live()
            .values()
            .filter(|l| l.protocol_version.is_some())
            .count()
    }

    /// Every site the hub knows of, from memory and from the provisioning registry.
    pub fn statuses(
        &self,
        registry: Option<&grassroots_provisioning::Registry>,
        is_revoked: impl Fn(&str) -> bool,
        now: OffsetDateTime,
    ) -> Result<Vec<SiteStatus>, HubError> {
        let live = self.live();
        let mut rows: HashMap<String, SiteStatus> = HashMap::new();
        for (id, memory) in self.memory.entries()? {
            let live_site = live
                .get(&memory.site_id)
                .filter(|l| l.protocol_version.is_some());
            rows.insert(
                id.clone(),
                SiteStatus {
                    site_id: id,
                    name: None,
                    online: live_site.is_some(),
                    revoked: is_revoked(&memory.serial),
                    protocol_version: live_site.and_then(|l| l.protocol_version),
                    connected_since: live_site.map(|l| l.connected_at),
                    last_seen: Some(if live_site.is_some() {
                        now
                    } else {
                        memory.last_seen
                    }),
                    certificate_not_after: Some(memory.certificate_not_after),
                    certificate_days_left: Some((memory.certificate_not_after - now).whole_days()),
                    serial: Some(memory.serial.clone()),
                    rtt_ms: live_site.map(|l| l.connection.rtt().as_secs_f64() * 1000.0),
                },
            );
        }
        if let Some(registry) = registry {
            for record in registry
                .certificates
                .iter()
                .filter(|r| r.role == grassroots_provisioning::Role::Edge)
            {
                let row = rows
                    .entry(record.site_id.to_string())
                    .or_insert_with(|| SiteStatus {
                        site_id: record.site_id.to_string(),
                        name: None,
                        online: false,
                        revoked: false,
                        protocol_version: None,
                        connected_since: None,
                        last_seen: None,
                        certificate_not_after: Some(record.not_after),
                        certificate_days_left: Some((record.not_after - now).whole_days()),
                        serial: Some(record.serial.clone()),
                        rtt_ms: None,
                    });
                row.name = Some(record.name.clone());
                if row.serial.as_deref() == Some(record.serial.as_str()) {
                    row.revoked |= record.revoked_at.is_some();
                }
            }
        }
        let mut rows: Vec<SiteStatus> = rows.into_values().collect();
        rows.sort_by(|a, b| a.site_id.cmp(&b.site_id));
        Ok(rows)
    }
}
