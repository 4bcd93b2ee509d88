//! The security events of a node, for its admins: failed and throttled sign-ins, requests
//! refused for a missing CSRF token or a foreign origin, API tokens made, used and revoked,
//! accounts disabled, enabled or given a new password, sessions revoked, and (at the hub)
//! certificates revoked and connections refused.
//!
//! Kept in the node's store, keyed by time so that the newest are read first with one range
//! scan. An admin's action is written durably at once; the noise anyone can make without an
//! account (failed and throttled sign-ins, refused tokens, redialling revoked sites) is written
//! without its own fsync (sled flushes within half a second) and coalesced: one event per kind,
//! subject and address per minute, the next one saying how many were folded into it. Pruning
//! past [`MAX_EVENTS`] removes the oldest noise first, so a flood cannot push admins' actions
//! out of the record. An event names the account only when it is one: a user name
//! typed at the login page that matches no account may be a password typed into the wrong field,
//! and is never recorded. No patient data is ever recorded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use grassroots_store::Table;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::WebError;

/// Events kept; older ones are removed as new ones come.
pub const MAX_EVENTS: usize = 20_000;

/// One security event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecurityEvent {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happened: `login-failed`, `login-throttled`, `csrf-refused`, `origin-refused`,
    /// `token-created`, `token-used`, `token-revoked`, `token-refused`, `account-disabled`,
    /// `account-enabled`, `password-reset`, `sessions-revoked`, `certificate-revoked`,
    /// `connection-refused`...
    pub kind: String,
    /// The account (or site) concerned, when it is one.
    pub subject: Option<String>,
    /// Who did it, when an admin did.
    pub by: Option<String>,
    /// The client's address, for events from the web.
    pub address: Option<String>,
    pub detail: String,
}

#[derive(Clone)]
pub struct SecurityLog {
    table: Table<SecurityEvent>,
    /// When each API token's use was last recorded: once an hour is enough to see it is used.
    token_use: Arc<Mutex<HashMap<String, OffsetDateTime>>>,
    /// Events recorded since the table was last pruned (counting the table is a full scan).
    since_prune: Arc<AtomicUsize>,
    /// Noise coalesced per (kind, subject, address): when last written, and how many since.
    folded: Arc<Mutex<HashMap<String, (OffsetDateTime, u64)>>>,
}

/// Noise of one kind, subject and address is written at most once in this long.
const FOLD_WINDOW: time::Duration = time::Duration::minutes(1);

/// Keys of coalesced noise remembered at most (then forgotten all at once).
const MAX_FOLDED: usize = 10_000;

/// The table is pruned after this many events (and at start).
const PRUNE_EVERY: usize = 1000;

impl SecurityLog {
    pub fn open(store: &grassroots_store::Store) -> Result<Self, WebError> {
        let log = Self {
            table: store.table("security_events")?,
            token_use: Arc::default(),
            since_prune: Arc::default(),
            folded: Arc::default(),
        };
        log.prune();
        Ok(log)
    }

    /// Records an event (durably); a failure to record is logged, never fatal to the request.
    pub fn record(
        &self,
        kind: &str,
        subject: Option<&str>,
        by: Option<&str>,
        address: Option<&str>,
        detail: impl Into<String>,
    ) {
        let now = OffsetDateTime::now_utc();
        let mut detail = detail.into();
        let noise = by.is_none();
        if noise {
            let fold_key = format!(
                "{kind}\n{}\n{}",
                subject.unwrap_or_default(),
                address.unwrap_or_default()
            );
            let mut folded = self.folded.lock().unwrap_or_else(|p| p.into_inner());
            if folded.len() >= MAX_FOLDED {
                folded.clear();
            }
            match folded.get_mut(&fold_key) {
                Some((last, count)) if now - *last < FOLD_WINDOW => {
                    *count += 1;
                    return;
                }
                Some((last, count)) => {
                    if *count > 0 {
                        detail
                            .push_str(&format!(" (and {count} more like it in the minute before)"));
                    }
                    *last = now;
                    *count = 0;
                }
                None => {
                    folded.insert(fold_key, (now, 0));
                }
            }
        }
        let event = SecurityEvent {
            at: now,
            kind: kind.to_string(),
            subject: subject.map(String::from),
            by: by.map(String::from),
            address: address.map(String::from),
            detail,
        };
        let key = format!(
            "{:020}-{:08x}",
            event.at.unix_timestamp_nanos().max(0),
            rand::random::<u32>()
        );
        tracing::info!(kind = %event.kind, subject = ?event.subject, by = ?event.by, address = ?event.address, detail = %event.detail, "security event");
        let written = if noise {
            self.table.put(&key, &event)
        } else {
            self.table.put_durable(&key, &event)
        };
        if let Err(error) = written {
            tracing::error!(%error, "cannot record a security event");
            return;
        }
        if self.since_prune.fetch_add(1, Ordering::Relaxed) + 1 >= PRUNE_EVERY {
            self.since_prune.store(0, Ordering::Relaxed);
            self.prune();
        }
    }

    /// Records that the token `id` acted for `user`, at most once an hour per token.
    pub fn token_used(&self, id: &str, user: &str, address: Option<&str>) {
        let now = OffsetDateTime::now_utc();
        {
            let mut recent = self.token_use.lock().unwrap_or_else(|p| p.into_inner());
            if recent
                .get(id)
                .is_some_and(|at| now - *at < time::Duration::hours(1))
            {
                return;
            }
            recent.insert(id.to_string(), now);
        }
        self.record(
            "token-used",
            Some(user),
            None,
            address,
            format!("token {id}"),
        );
    }

    /// Removes the oldest events past [`MAX_EVENTS`]: noise first; admins' actions only past
    /// twice that.
    fn prune(&self) {
        let Ok(entries) = self.table.entries() else {
            return;
        };
        let mut excess = entries.len().saturating_sub(MAX_EVENTS);
        let mut doomed: Vec<&String> = Vec::new();
        for (key, event) in &entries {
            if excess == 0 {
                break;
            }
            if event.by.is_none() {
                doomed.push(key);
                excess -= 1;
            }
        }
        let kept = entries.len() - doomed.len();
        let more = kept.saturating_sub(2 * MAX_EVENTS);
        doomed.extend(
            entries
                .iter()
                .filter(|(_, event)| event.by.is_some())
                .take(more)
                .map(|(key, _)| key),
        );
        for key in doomed {
            if let Err(error) = self.table.remove(key) {
                tracing::warn!(%error, "cannot prune the security log");
                return;
            }
        }
    }

    /// The newest `limit` events, newest first.
    pub fn newest(&self, limit: usize) -> Result<Vec<SecurityEvent>, WebError> {
        Ok(self.table.last_values(limit)?)
    }
}

/// `GET /api/v1/security-events[?limit=N]` (admins): the newest events, newest first.
#[utoipa::path(get, path = "/api/v1/security-events", tag = "accounts", params(EventsQuery),
    responses(
        (status = 200, description = "The newest events, newest first", body = Vec<SecurityEvent>),
        crate::openapi::Refusals, crate::openapi::InputRefusals))]
pub async fn events_api(
    axum::extract::State(state): axum::extract::State<crate::WebState>,
    axum::extract::Query(query): axum::extract::Query<EventsQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let limit = query.limit.unwrap_or(200).clamp(1, 5000);
    match state.accounts.security_log().newest(limit) {
        Ok(events) => axum::Json(events).into_response(),
        Err(error) => error.into_response(),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// How many events, 1 to 5000 (200 when absent).
    limit: Option<usize>,
}

/// `/security` (admins): the same as a page.
pub async fn events_page(
    axum::extract::State(state): axum::extract::State<crate::WebState>,
    axum::extract::Extension(crate::CurrentUser(user)): axum::extract::Extension<
        crate::CurrentUser,
    >,
) -> axum::response::Response {
    use crate::pages::escape;
    use axum::response::IntoResponse;
    let events = match state.accounts.security_log().newest(500) {
        Ok(events) => events,
        Err(error) => return error.into_response(),
    };
    let mut rows = String::new();
    for event in &events {
        let cell = |value: &Option<String>| escape(value.as_deref().unwrap_or("—"));
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&crate::pages::rfc3339(event.at)),
            escape(&event.kind),
            cell(&event.subject),
            cell(&event.by),
            cell(&event.address),
            escape(&event.detail),
        ));
    }
    if events.is_empty() {
        rows.push_str(&format!(
            r#"<tr><td colspan="6" class="muted">{}</td></tr>"#,
            crate::i18n::tr("No security events yet: failed sign-ins, refused requests, tokens and account changes will appear here.")
        ));
    }
    let body = format!(
        r#"<p class="muted">{newest}</p>
<div class="table-wrap"><table id="security-events"><thead><tr><th>When</th><th>Event</th><th>Account or site</th><th>By</th><th>Address</th><th>Detail</th></tr></thead><tbody>{rows}</tbody></table></div>"#,
        newest = crate::i18n::tr("The newest 500 of at most {max} events; all as JSON at {api}.")
            .replace("{max}", &MAX_EVENTS.to_string())
            .replace("{api}", "<code>/api/v1/security-events?limit=N</code>"),
    );
    crate::pages::page(&state.node_title, "Security events", Some(&user), &body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_folded_per_minute_and_admins_actions_always_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = grassroots_store::Store::open(dir.path()).unwrap();
        let log = SecurityLog::open(&store).unwrap();
        for _ in 0..1000 {
            log.record(
                "token-refused",
                None,
                None,
                Some("6.6.6.6"),
                "unknown token",
            );
        }
        log.record(
            "token-refused",
            None,
            None,
            Some("7.7.7.7"),
            "unknown token",
        );
        for _ in 0..3 {
            log.record("account-disabled", Some("dr-li"), Some("it-wu"), None, "x");
        }
        let events = log.newest(100).unwrap();
        assert_eq!(events.len(), 5, "{events:?}");
        // The next window's event says how many were folded.
        log.folded
            .lock()
            .unwrap()
            .values_mut()
            .for_each(|(at, _)| *at -= FOLD_WINDOW);
        log.record(
            "token-refused",
            None,
            None,
            Some("6.6.6.6"),
            "unknown token",
        );
        let newest = &log.newest(1).unwrap()[0];
        assert!(newest.detail.contains("and 999 more"), "{newest:?}");
    }

    #[test]
    fn events_are_kept_newest_first_and_token_use_is_sampled() {
        let dir = tempfile::tempdir().unwrap();
        let store = grassroots_store::Store::open(dir.path()).unwrap();
        let log = SecurityLog::open(&store).unwrap();
        log.record(
            "login-failed",
            Some("admin"),
            None,
            Some("203.0.113.9"),
            "wrong password",
        );
        log.record(
            "account-disabled",
            Some("dr-li"),
            Some("it-wu"),
            None,
            "left the hospital",
        );
        log.token_used("abc", "scanner", None);
        log.token_used("abc", "scanner", None);
        let events = log.newest(10).unwrap();
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0].kind, "token-used");
        assert_eq!(events[2].kind, "login-failed");
        assert_eq!(log.newest(1).unwrap().len(), 1);
    }
}
