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
//! once, whichever side restarts in between. Each edge has its own delivery worker with a timeout
//! per answer: one edge that stalls delays nobody else's answers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

use crate::{HubError, HubState};

/// How long an answer its edge refused waits before it is offered again.
const REFUSED_PAUSE: Duration = Duration::from_secs(300);

/// The body of `POST /api/v1/referrals/{id}/report`: the expert's answer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportForm {
    /// The answer's category.
    pub category: ReportCategory,
    /// The diagnosis, in words (not empty).
    pub diagnosis: String,
    /// What the referring doctor should do next (empty when absent).
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
#[utoipa::path(post, path = "/api/v1/referrals/{id}/report", tag = "referrals",
    params(("id" = String, Path, description = "The referral's id")),
    request_body = ReportForm,
    responses(
        (status = 201, description = "The answer, signed by the hub and stored; it goes to the referring edge when it is connected", body = ConsultReport),
        (status = 400, description = "The answer is not valid (an empty diagnosis, annotations too large...)", body = grassroots_web::openapi::ApiError),
        (status = 404, description = "No such referral", body = grassroots_web::openapi::ApiError),
        (status = 409, description = "The referral is answered already", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals, grassroots_web::openapi::InputRefusals))]
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

/// Sends every undelivered answer to its edge while that edge is connected: one worker per
/// edge, each transfer bounded by [`DELIVERY_TIMEOUT`], so an edge that is connected but does not
/// read (a stalled or faulty node) holds up only its own answers.
pub(crate) async fn deliver(state: Arc<HubState>, mut shutdown: watch::Receiver<bool>) {
    let pauses = Pauses::default();
    let mut workers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut indexed_at = Instant::now();
    loop {
        if indexed_at.elapsed() >= REINDEX_EVERY {
            indexed_at = Instant::now();
            let referrals = state.referrals.clone();
            match tokio::task::spawn_blocking(move || referrals.index_undelivered()).await {
                Ok(Err(error)) => tracing::error!(%error, "cannot index undelivered answers"),
                Err(error) => tracing::error!(%error, "cannot index undelivered answers"),
                Ok(Ok(_)) => {}
            }
        }
        workers.retain(|_, worker| !worker.is_finished());
        let mut by_site: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, site) in state.referrals.undelivered().unwrap_or_default() {
            by_site.entry(site).or_default().push(id);
        }
        for (site, ids) in by_site {
            if workers.contains_key(&site) || pauses.is_paused(&site) {
                continue;
            }
            let Some(connection) = state.sites.connection(&site) else {
                continue;
            };
            let worker =
                deliver_to_site(state.clone(), site.clone(), connection, ids, pauses.clone());
            workers.insert(site, tokio::spawn(worker));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => {
                workers.values().for_each(|worker| worker.abort());
                return;
            }
        }
    }
}

/// The answer as this hub signs it now: unchanged if it holds the certificate that signed it,
/// else the same digest signed again with its current certificate.
fn signed_now(state: &HubState, mut report: ConsultReport) -> Result<ConsultReport, HubError> {
    if report.signer_certificate_pem == state.kit.certificate_pem {
        return Ok(report);
    }
    let signature = grassroots_provisioning::signing::sign(
        &state.kit,
        REPORT_SIGNING_CONTEXT,
        report.digest.as_bytes(),
    )?;
    report.signer_certificate_pem = state.kit.certificate_pem.clone();
    report.signature = hex::encode(signature);
    Ok(report)
}

/// How often the index of undelivered answers is checked against the referrals.
const REINDEX_EVERY: Duration = Duration::from_secs(600);

/// One transfer of an answer may take this long before its edge is given up on for
/// [`STALLED_PAUSE`]; an answer is at most about 1 MiB, so this allows a 150 kbit/s uplink.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an edge that did not take an answer in time waits before it is tried again.
const STALLED_PAUSE: Duration = Duration::from_secs(30);

/// Referrals (answers the edge refused) and sites (edges that stalled) not to try until a time.
#[derive(Clone, Default)]
struct Pauses(Arc<std::sync::Mutex<HashMap<String, Instant>>>);

impl Pauses {
    fn is_paused(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut pauses = self.0.lock().unwrap_or_else(|p| p.into_inner());
        pauses.retain(|_, until| *until > now);
        pauses.contains_key(key)
    }

    fn pause(&self, key: &str, pause: Duration) {
        let mut pauses = self.0.lock().unwrap_or_else(|p| p.into_inner());
        pauses.insert(key.to_string(), Instant::now() + pause);
    }
}

/// Delivers `ids` to `site` one after the other, until one stalls.
async fn deliver_to_site(
    state: Arc<HubState>,
    site: String,
    connection: grassroots_transport::Connection,
    ids: Vec<String>,
    pauses: Pauses,
) {
    for id in ids {
        // Answers an edge refused are offered again only after a pause: the refusal is
        // recorded (and shown) meanwhile, and an edge that is fixed takes them then.
        if pauses.is_paused(&id) {
            continue;
        }
        let report = match state.referrals.get(&id) {
            Ok(Some(referral)) if referral.report_delivered_at.is_none() => referral.report,
            Ok(_) => {
                // Delivered, or no such referral: nothing to do, now or later.
                if let Err(error) = state.referrals.unindex(&id) {
                    tracing::warn!(%error, referral = %id, "cannot forget a delivered answer's index entry");
                }
                None
            }
            Err(error) => {
                tracing::error!(%error, referral = %id, "cannot read an answer to deliver");
                None
            }
        };
        let Some(report) = report else {
            continue;
        };
        let sent = async {
            // The file is made from the stored answer, which is the one truth of it, signed by
            // the certificate this hub holds now: one signed before `provision renew hub` would
            // be refused by edges that learnt the old certificate is revoked.
            let report = signed_now(&state, report)?;
            let path = report_path(&state, &id);
            let json = serde_json::to_vec_pretty(&report)
                .map_err(|e| HubError::Config(format!("report: {e}")))?;
            grassroots_store::durable::write_file(&path, &json)
                .map_err(|e| HubError::Config(format!("{}: {e}", path.display())))?;
            crate::link::send_file(&state, &connection, &path, REPORT_LABEL).await
        };
        match tokio::time::timeout(DELIVERY_TIMEOUT, sent).await {
            Ok(Ok(())) => {
                if let Err(error) = state.referrals.delivered(&id) {
                    tracing::error!(%error, "cannot record a delivered answer");
                } else {
                    tracing::info!(referral = %id, %site, "answer delivered to the edge");
                }
            }
            Ok(Err(HubError::Transport(grassroots_transport::TransportError::Peer(reason)))) => {
                tracing::error!(referral = %id, %site, %reason, "the edge refused the answer; offered again in 5 minutes");
                if let Err(error) = state.referrals.delivery_refused(&id, &reason) {
                    tracing::error!(%error, "cannot record a refused answer");
                }
                pauses.pause(&id, REFUSED_PAUSE);
            }
            Ok(Err(error)) => {
                tracing::warn!(referral = %id, %site, %error, "answer not delivered yet; will retry");
                return;
            }
            Err(_) => {
                tracing::warn!(referral = %id, %site, timeout_s = DELIVERY_TIMEOUT.as_secs(), "the edge did not take an answer in time; its answers wait, other edges' do not");
                pauses.pause(&site, STALLED_PAUSE);
                return;
            }
        }
    }
}
