//! The expert's answer to a referral, and its way back to the referring edge.
//!
//! `POST /api/v1/referrals/{id}/report` (the expert who claimed it): the category, diagnosis,
//! recommendations and the annotations drawn on the slides (GeoJSON) become a
//! `ConsultReport`, attributed to the expert's account, sealed with a digest of its content and
//! signed with the hub's certificate key (the edge verifies it against the network's CA), and
//! stored on the referral (durable). A delivery loop sends each undelivered answer to its
//! edge whenever that edge is connected, as a content-addressed bulk transfer of the stored
//! answer written to `DATA/outgoing/reports/`; the edge stores it before acknowledging, and only then is it
//! marked delivered here — so an answer given while the edge is offline arrives when it is back,
//! once, whichever side restarts in between.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use grassroots_web::{CurrentUser, WebError};
use grassroots_wire::referral::{
    ConsultReport, ReportCategory, REPORT_LABEL, REPORT_SIGNING_CONTEXT,
};
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::referrals::{answer_refusal, Refusal};

/// How long an answer its edge refused waits before it is offered again.
const REFUSED_PAUSE: Duration = Duration::from_secs(300);
use crate::{HubError, HubState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportForm {
    pub category: ReportCategory,
    pub diagnosis: String,
    #[serde(default)]
    pub recommendations: String,
    /// A GeoJSON FeatureCollection of the expert's annotations.
    pub annotations: Option<serde_json::Value>,
}

fn report_path(state: &HubState, id: &str) -> std::path::PathBuf {
    state
        .config
        .data_dir
        .join("outgoing")
        .join("reports")
        .join(format!("{id}.json"))
}

/// `POST /api/v1/referrals/{id}/report`
pub(crate) async fn report_api(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(id): Path<String>,
    Json(form): Json<ReportForm>,
) -> Response {
    // Who may answer is checked first, so that a stranger learns nothing of the form's faults.
    match state.referrals.get(&id) {
        Ok(Some(referral)) => {
            if let Some(refusal) = answer_refusal(&referral, &user.username) {
                return refusal.response(&id);
            }
        }
        Ok(None) => return Refusal::NoSuchReferral.response(&id),
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    }
    let mut report = ConsultReport {
        referral_id: id.clone(),
        category: form.category,
        diagnosis: form.diagnosis.trim().to_string(),
        recommendations: form.recommendations.trim().to_string(),
        annotations_geojson: form.annotations.map(|a| a.to_string()),
        expert: user.username.clone(),
        answered_at: OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        digest: String::new(),
        signer_certificate_pem: state.kit.certificate_pem.clone(),
        signature: String::new(),
    };
    report.digest = report.compute_digest();
    if let Err(error) = report.validate() {
        return WebError::BadRequest(error.to_string()).into_response();
    }
    // The hub signs for the expert's account: the edge checks it against the network's CA.
    match grassroots_provisioning::signing::sign(
        &state.kit,
        REPORT_SIGNING_CONTEXT,
        report.digest.as_bytes(),
    ) {
        Ok(signature) => report.signature = hex::encode(signature),
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    }
    let worker = state.clone();
    let stored = report.clone();
    // The check again, atomically with the write: two answers at once store one.
    match tokio::task::spawn_blocking(move || worker.referrals.answer(&stored)).await {
        Ok(Ok(Ok(_))) => {
            // The consult is closed: what the hub held of its slides goes now.
            state.consult_cache.purge(&id);
            tracing::info!(referral = %report.referral_id, expert = %report.expert, "referral answered");
            (StatusCode::CREATED, Json(report)).into_response()
        }
        Ok(Ok(Err(refusal))) => refusal.response(&id),
        Ok(Err(error)) => WebError::Internal(error.to_string()).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// Sends every undelivered answer to its edge while that edge is connected.
pub(crate) async fn deliver(state: Arc<HubState>, mut shutdown: watch::Receiver<bool>) {
    // Answers an edge refused are offered again only after a pause: the refusal is recorded
    // (and shown) meanwhile, and an edge that is fixed takes them then.
    let mut refused_until: std::collections::HashMap<String, std::time::Instant> =
        std::collections::HashMap::new();
    loop {
        let pending: Vec<_> = state
            .referrals
            .worklist()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.report.is_some() && r.report_delivered_at.is_none())
            .collect();
        for referral in pending {
            let id = referral.referral.referral_id.clone();
            let Some(connection) = state.sites.connection(&referral.site) else {
                continue;
            };
            let Some(report) = &referral.report else {
                continue;
            };
            if refused_until
                .get(&id)
                .is_some_and(|until| std::time::Instant::now() < *until)
            {
                continue;
            }
            let sent = async {
                // The file is made from the stored answer, which is the one truth of it.
                let path = report_path(&state, &id);
                let json = serde_json::to_vec_pretty(report)
                    .map_err(|e| HubError::Config(format!("report: {e}")))?;
                grassroots_store::durable::write_file(&path, &json)
                    .map_err(|e| HubError::Config(format!("{}: {e}", path.display())))?;
                crate::link::send_file(&state, &connection, &path, REPORT_LABEL).await
            };
            tokio::select! {
                outcome = sent => match outcome {
                    Ok(_) => {
                        if let Err(error) = state.referrals.delivered(&id) {
                            tracing::error!(%error, "cannot record a delivered answer");
                        } else {
                            tracing::info!(referral = %id, site = %referral.site, "answer delivered to the edge");
                        }
                    }
                    Err(HubError::Transport(grassroots_transport::TransportError::Peer(reason))) => {
                        tracing::error!(referral = %id, site = %referral.site, %reason, "the edge refused the answer; offered again in 5 minutes");
                        if let Err(error) = state.referrals.delivery_refused(&id, &reason) {
                            tracing::error!(%error, "cannot record a refused answer");
                        }
                        refused_until.insert(id.clone(), std::time::Instant::now() + REFUSED_PAUSE);
                    }
                    Err(error) => tracing::warn!(referral = %id, %error, "answer not delivered yet; will retry"),
                },
                _ = shutdown.changed() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
