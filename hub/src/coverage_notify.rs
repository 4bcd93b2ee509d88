//! Alerts leave the dashboard: each check sets the per-site Prometheus series and posts every
//! newly raised alert, and every cleared one, to the network's webhook.
//!
//! Why a store table: an alert is posted once when it is raised, not at every check, and not
//! again after a restart; a post the receiver did not accept is retried at the next check
//! (the alert is recorded as sent only once the receiver answered 2xx). A post carries what the
//! dashboard shows — kind, site and the same words — so it follows the same privacy rule: no
//! counts that could describe a case.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use grassroots_store::Table;
use grassroots_wire::coverage::{local_day, DEFAULT_OFFSET_HOURS};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::coverage::Period;
use crate::coverage_map::Alert;
use crate::HubState;

/// How long the hub waits for the webhook.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// An alert the webhook accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sent {
    detail: String,
    #[serde(with = "time::serde::rfc3339")]
    raised_at: OffsetDateTime,
}

/// What the webhook receives.
#[derive(Debug, Serialize)]
struct Post<'a> {
    network: &'a str,
    /// `raised` or `cleared`.
    event: &'static str,
    kind: &'a str,
    site: &'a str,
    detail: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

fn key(kind: &str, site: &str) -> String {
    format!("{kind}/{site}")
}

/// Runs the checks until shutdown.
pub(crate) async fn run(state: Arc<HubState>, mut shutdown: watch::Receiver<bool>) {
    let sent: Table<Sent> = match state.store.table("coverage_alerts_sent") {
        Ok(table) => table,
        Err(error) => {
            tracing::error!(%error, "coverage alerts cannot be posted");
            return;
        }
    };
    let client = match reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "coverage alerts cannot be posted");
            return;
        }
    };
    let every = Duration::from_secs(state.config.alerts.check_every_s);
    // The first check soon after start, so the per-site series exist from the beginning.
    let mut wait = every.min(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        wait = every;
        let alerts = {
            let state = state.clone();
            tokio::task::spawn_blocking(move || current(&state)).await
        };
        let Ok(Some(alerts)) = alerts else {
            continue;
        };
        update_metrics(&state, &alerts);
        if let Some(url) = &state.config.alerts.webhook {
            post_changes(&state, &client, url, &sent, &alerts).await;
        }
    }
}

/// The whole network's alerts now (this month's figures).
fn current(state: &HubState) -> Option<Vec<Alert>> {
    let today = local_day(OffsetDateTime::now_utc(), DEFAULT_OFFSET_HOURS);
    match crate::coverage_pages::table(state, Period::Month, today, None) {
        Ok((table, _)) => Some(crate::coverage_pages::current_alerts(state, &table)),
        Err(_) => {
            tracing::warn!("cannot compute the coverage alerts");
            None
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> crate::metrics::Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn update_metrics(state: &HubState, alerts: &[Alert]) {
    let metrics = &state.metrics;
    metrics.site_online.clear();
    metrics.site_silent_seconds.clear();
    metrics.site_certificate_days.clear();
    metrics.coverage_alerts.clear();
    let now = OffsetDateTime::now_utc();
    for status in crate::http::statuses(state).unwrap_or_default() {
        if status.revoked {
            continue;
        }
        let site = labels(&[("site", &status.site_id)]);
        metrics
            .site_online
            .get_or_create(&site)
            .set(i64::from(status.online));
        if let Some(seen) = status.last_seen {
            metrics
                .site_silent_seconds
                .get_or_create(&site)
                .set((now - seen).whole_seconds().max(0));
        }
        if let Some(days) = status.certificate_days_left {
            metrics.site_certificate_days.get_or_create(&site).set(days);
        }
    }
    for alert in alerts {
        metrics
            .coverage_alerts
            .get_or_create(&labels(&[("kind", alert.kind), ("site", &alert.site)]))
            .set(1);
    }
}

async fn post(client: &reqwest::Client, url: &str, body: &Post<'_>) -> bool {
    match client.post(url).json(body).send().await {
        Ok(response) if response.status().is_success() => true,
        Ok(response) => {
            tracing::warn!(status = %response.status(), kind = body.kind, site = body.site, "the alert webhook refused an alert");
            false
        }
        Err(error) => {
            tracing::warn!(%error, kind = body.kind, site = body.site, "cannot post an alert to the webhook");
            false
        }
    }
}

async fn post_changes(
    state: &HubState,
    client: &reqwest::Client,
    url: &str,
    sent: &Table<Sent>,
    alerts: &[Alert],
) {
    let now = OffsetDateTime::now_utc();
    let network = state.kit.network.as_str();
    let mut raised: BTreeMap<String, &Alert> = BTreeMap::new();
    for alert in alerts {
        raised.insert(key(alert.kind, &alert.site), alert);
    }
    let already: BTreeMap<String, Sent> = match sent.entries() {
        Ok(entries) => entries.into_iter().collect(),
        Err(error) => {
            // Without the record, every alert would be posted again: wait for the next check.
            tracing::error!(%error, "cannot read the posted alerts");
            return;
        }
    };
    for (key, alert) in &raised {
        if already.contains_key(key) {
            continue;
        }
        let body = Post {
            network,
            event: "raised",
            kind: alert.kind,
            site: &alert.site,
            detail: &alert.detail,
            at: now,
        };
        if !post(client, url, &body).await {
            state.metrics.alert_webhook_failures.inc();
            continue;
        }
        tracing::info!(kind = alert.kind, site = %alert.site, "alert posted");
        let record = Sent {
            detail: alert.detail.clone(),
            raised_at: now,
        };
        if let Err(error) = sent.put_durable(key, &record) {
            tracing::error!(%error, "cannot record a posted alert");
        }
    }
    for (key, record) in &already {
        if raised.contains_key(key) {
            continue;
        }
        let (kind, site) = key.split_once('/').unwrap_or((key.as_str(), ""));
        let body = Post {
            network,
            event: "cleared",
            kind,
            site,
            detail: &record.detail,
            at: now,
        };
        if !post(client, url, &body).await {
            state.metrics.alert_webhook_failures.inc();
            continue;
        }
        if let Err(error) = sent.remove_durable(key) {
            tracing::error!(%error, "cannot record a cleared alert");
        }
    }
}
