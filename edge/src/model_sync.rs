//! The edge's side of model distribution: a package the hub sends is installed exactly as an
//! upload is (signature, manifest and graph checked; on any failure the active model stays),
//! and what the edge runs is reported back.
//!
//! The transfer of a package is acknowledged only after the install, so the hub's record of
//! "installed" is the edge's word; a refused package is refused on the transfer with the reason.
//! The report is a small JSON blob in the durable outbox (digests, names, versions — nothing
//! about a patient), queued at start and after every change, delivered when the link is up.

use std::path::Path;
use std::sync::Arc;

use grassroots_wire::models::MODEL_STATUS_LABEL;

use crate::{EdgeError, EdgeState};

/// Installs the package the hub sent (at `path` in the blob store). `Err` carries the reason
/// the hub is told.
pub(crate) async fn install_from_hub(state: &Arc<EdgeState>, path: &Path) -> Result<(), String> {
    let screening = state.screening.clone();
    let path = path.to_path_buf();
    let installed = tokio::task::spawn_blocking(move || screening.model.install_file(&path))
        .await
        .map_err(|e| format!("the install task failed: {e}"))?;
    match installed {
        Ok(()) => {
            after_install(state).await;
            // The evidence a canary rollout decides on, measured in the background.
            crate::model_evaluation::spawn(state.clone());
            Ok(())
        }
        Err(error) => Err(error.to_string()),
    }
}

/// What follows any install (from the hub or an admin's upload): screening picks the model up,
/// slides awaiting review are screened again with it (unless switched off), and the hub hears
/// what the edge runs.
pub(crate) async fn after_install(state: &Arc<EdgeState>) {
    if state.config.rescreen_on_new_model {
        let worker = state.clone();
        let requeued = tokio::task::spawn_blocking(move || {
            let referrals = worker.referrals.list()?;
            let reviewed: std::collections::BTreeSet<String> = worker
                .labels
                .all(&referrals)?
                .into_iter()
                .map(|label| label.slide_id)
                .collect();
            worker.screening.rescreen_unreviewed(&reviewed)
        })
        .await;
        match requeued {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot queue slides for the new model"),
            Err(error) => tracing::warn!(%error, "re-screening task failed"),
        }
    }
    state.screening.wake();
    if let Err(error) = report(state).await {
        tracing::warn!(%error, "cannot queue the model status for the hub");
    }
}

/// Queues a report of the active and previous model for the hub.
pub(crate) async fn report(state: &EdgeState) -> Result<(), EdgeError> {
    let report = state.screening.model.status_report();
    if report.active.is_none() && report.previous.is_none() {
        // No model has ever been installed: nothing to tell (and no blob to send).
        return Ok(());
    }
    let json = serde_json::to_vec(&report).map_err(|e| EdgeError::Config(e.to_string()))?;
    let path = state.config.data_dir.join("models").join("status.json");
    grassroots_store::durable::write_file(&path, &json)
        .map_err(|e| EdgeError::Config(format!("{}: {e}", path.display())))?;
    state.outbox.enqueue_file(&path, MODEL_STATUS_LABEL).await?;
    Ok(())
}
