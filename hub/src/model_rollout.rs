//! Moves each site to its target model version (its pin, the canary version at a canary site,
//! else the release): the package goes over the site's link as a bulk transfer (resumable, on
//! the low-priority bulk stream, so live consults go first). Each pass first acts on a canary's
//! verdict ([`crate::canary`]).
//!
//! The edge acknowledges the transfer only once the package verified and is active, so an
//! acknowledgement is recorded as "installed". A refusal (bad signature, a graph that does not
//! load) is recorded with its reason and that version is not offered to that site again until
//! its target changes. Sites are served one at a time per pass, each send bounded by a deadline,
//! so one unresponsive edge delays the others by at most that deadline.

use std::sync::Arc;
use std::time::Duration;

use grassroots_wire::models::MODEL_PACKAGE_LABEL;
use tokio::sync::watch;

use crate::canary::{CanaryOutcome, Verdict};
use crate::{HubError, HubState};

/// Longest a package send may take before the pass moves on (resumed on the next pass).
const SEND_DEADLINE: Duration = Duration::from_secs(120);
/// Between passes.
const PASS: Duration = Duration::from_secs(2);

/// One pass: every connected site whose running version is not its target gets the target.
async fn pass(state: &Arc<HubState>) {
    let registry = &state.models;
    for site in state.sites.online_sites() {
        let canary = state.canaries.target_for(&site).ok().flatten();
        let Ok(Some(target)) = registry.target_for(&site, canary) else {
            continue;
        };
        let Ok(current) = registry.site(&site) else {
            continue;
        };
        if current.running.as_deref() == Some(target.as_str())
            || current
                .refused
                .as_ref()
                .is_some_and(|(digest, _)| *digest == target)
        {
            continue;
        }
        let Some(connection) = state.sites.connection(&site) else {
            continue;
        };
        let path = registry.package_path(&target);
        let send = crate::link::send_file(state, &connection, &path, MODEL_PACKAGE_LABEL);
        match tokio::time::timeout(SEND_DEADLINE, send).await {
            Ok(Ok(())) => {
                tracing::info!(%site, digest = %target, "model installed at the site");
                if let Err(error) = registry.installed(&site, &target) {
                    tracing::error!(%site, %error, "cannot record a model installed at a site");
                }
            }
            Ok(Err(HubError::Transport(grassroots_transport::TransportError::Peer(reason)))) => {
                tracing::error!(%site, digest = %target, %reason, "the site refused the model package");
                if let Err(error) = registry.refused(&site, &target, &reason) {
                    tracing::error!(%site, %error, "cannot record a refused model package");
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(%site, digest = %target, %error, "model package not delivered yet; will retry")
            }
            Err(_) => {
                tracing::warn!(%site, digest = %target, "model package send took too long; resumed on the next pass")
            }
        }
    }
}

/// Acts on a canary's verdict: release to the network, or roll back by itself.
fn judge_canary(state: &HubState) -> Result<(), HubError> {
    let Some(canary) = state.canaries.current()? else {
        return Ok(());
    };
    match canary.verdict() {
        Verdict::Wait => {}
        Verdict::Release => {
            state.models.release(&canary.digest, "canary")?;
            state.canaries.conclude(CanaryOutcome::Released)?;
            tracing::info!(digest = %canary.digest, sites = ?canary.sites, "canary vouched for the version: released to every site");
        }
        Verdict::RollBack(reason) => {
            state.models.withdraw(&canary.digest, &reason)?;
            state.canaries.conclude(CanaryOutcome::RolledBack {
                reason: reason.clone(),
            })?;
            tracing::warn!(digest = %canary.digest, %reason, "canary rolled back by itself; its sites return to the release");
        }
    }
    Ok(())
}

/// Runs passes until shutdown.
pub(crate) async fn run(state: Arc<HubState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(error) = judge_canary(&state) {
            tracing::error!(%error, "cannot act on the canary's verdict");
        }
        tokio::select! {
            _ = pass(&state) => {}
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(PASS) => {}
            _ = state.models.changed().notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}
