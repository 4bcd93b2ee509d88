//! Certificate expiry warnings. A hub runs for months; warning only at start or when a site
//! connects would miss certificates that run out in between, so the hub checks its own and every
//! known site's certificate at start and then every hour.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::HubState;

const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Logs a warning for each certificate that expires within the configured window.
pub fn check(state: &HubState, now: OffsetDateTime) {
    let warn_days = state.config.expiry_warning_days;
    if let Ok(identity) = state.kit.identity() {
        let days_left = identity.days_left(now);
        if days_left < warn_days {
            tracing::warn!(days_left, "the hub's own certificate expires soon: run `grassroots provision renew --dir DIR hub`");
        }
    }
    let Ok(rows) = state
        .sites
        .statuses(None, |serial| state.revocations.is_revoked(serial), now)
    else {
        return;
    };
    for row in rows.iter().filter(|row| !row.revoked) {
        if let Some(days_left) = row.certificate_days_left.filter(|days| *days < warn_days) {
            tracing::warn!(site = %row.site_id, days_left, "site certificate expires soon: run `grassroots provision renew --dir DIR SITE`");
        }
    }
}

pub async fn watch(state: Arc<HubState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        check(&state, OffsetDateTime::now_utc());
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}
