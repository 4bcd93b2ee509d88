//! Labels and federated learning in the edge's web UI and API: sign-offs (a clinician confirms
//! or corrects a slide's triage), the label set with counts per class and source, withdrawal
//! (admins), and `/federated` — the edge's labels, its rounds, its current and previous model
//! and whether it takes part.

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use grassroots_web::i18n::{tr, tr_any};
use grassroots_web::pages::{escape, page};
use grassroots_web::{CurrentUser, WebError};
use serde::{Deserialize, Serialize};

use crate::labels::{LabelClass, Labels, Region};
use crate::EdgeState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignOffForm {
    class: LabelClass,
    /// Lesion regions: polygons in level-0 slide pixels.
    #[serde(default)]
    /// Polygons of `[x, y]` points in level-0 slide pixels.
    #[schema(value_type = Vec<Vec<[f64; 2]>>)]
    regions: Vec<Region>,
}

/// `POST /api/v1/slides/{id}/signoff`: `{"class": "benign"}` or
/// `{"class": "lesion", "regions": [[[x, y], ...], ...]}`.
#[utoipa::path(post, path = "/api/v1/slides/{id}/signoff", tag = "labels", params(("id" = String, Path, description = "The slide's id")),
    request_body = SignOffForm,
    responses(
        (status = 201, description = "The sign-off, stored as a training label", body = crate::labels::SignOff),
        (status = 400, description = "Refused (a lesion without regions, a region off the slide...)", body = grassroots_web::openapi::ApiError),
        (status = 404, description = "No such slide, or not ready", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals, grassroots_web::openapi::InputRefusals))]
pub(crate) async fn sign_off_api(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(id): Path<String>,
    Json(form): Json<SignOffForm>,
) -> Response {
    if let Err(error) = state.slides.ready_record(&id) {
        return WebError::NotFound(error.to_string()).into_response();
    }
    let worker = state.clone();
    let signed = tokio::task::spawn_blocking(move || {
        worker
            .labels
            .sign_off(&id, form.class, form.regions, &user.username)
    })
    .await;
    match signed {
        Ok(Ok(signoff)) => (StatusCode::CREATED, Json(signoff)).into_response(),
        Ok(Err(error)) => WebError::BadRequest(error.to_string()).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// The answer of `GET /api/v1/labels`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LabelList {
    summary: crate::labels::LabelSummary,
    labels: Vec<crate::labels::TrainingLabel>,
}

/// `GET /api/v1/labels`: every label (withdrawn ones marked) and the counts.
#[utoipa::path(get, path = "/api/v1/labels", tag = "labels",
    responses((status = 200, description = "Every training label and the counts per class and source", body = LabelList), grassroots_web::openapi::Refusals))]
pub(crate) async fn labels_api(State(state): State<Arc<EdgeState>>) -> Response {
    let labels = state
        .referrals
        .list()
        .and_then(|referrals| state.labels.all(&referrals));
    match labels {
        Ok(labels) => Json(LabelList {
            summary: Labels::summary(&labels),
            labels,
        })
        .into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// The answer of `POST /api/v1/labels/{id}/withdraw`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Withdrawn {
    /// The label withdrawn: no later round trains on it.
    withdrawn: String,
}

/// `POST /api/v1/labels/{id}/withdraw` (admins).
#[utoipa::path(post, path = "/api/v1/labels/{id}/withdraw", tag = "labels",
    params(("id" = String, Path, description = "The label's id")),
    responses(
        (status = 200, description = "Withdrawn", body = Withdrawn),
        (status = 404, description = "No such label", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals))]
pub(crate) async fn withdraw_api(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> Response {
    let known = state
        .referrals
        .list()
        .and_then(|referrals| state.labels.all(&referrals))
        .map(|labels| labels.iter().any(|l| l.id == id));
    match known {
        Ok(true) => match state.labels.withdraw(&id, &user.username) {
            Ok(()) => {
                tracing::info!(label = %id, by = %user.username, "training label withdrawn");
                Json(Withdrawn { withdrawn: id }).into_response()
            }
            Err(error) => WebError::Internal(error.to_string()).into_response(),
        },
        Ok(false) => WebError::NotFound(format!("no label {id}")).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// One round as `GET /api/v1/federated` shows it: the round's secrets stay in the store, the
/// API says only where a secure round stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RoundView {
    task: grassroots_wire::federated::RoundTask,
    state: crate::federated::Participation,
    #[serde(with = "time::serde::rfc3339")]
    received_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    finished_at: Option<time::OffsetDateTime>,
    /// Why it was skipped, or what was sent.
    detail: Option<String>,
    samples: Option<u64>,
    training_seconds: Option<f64>,
    update_bytes: Option<u64>,
    /// With secure aggregation, the phase this edge reached ("advertised" ... "revealed").
    secure: Option<&'static str>,
}

impl From<&crate::federated::RoundRecord> for RoundView {
    fn from(record: &crate::federated::RoundRecord) -> Self {
        Self {
            task: record.task.clone(),
            state: record.state,
            received_at: record.received_at,
            finished_at: record.finished_at,
            detail: record.detail.clone(),
            samples: record.samples,
            training_seconds: record.training_seconds,
            update_bytes: record.update_bytes,
            secure: record.secure.as_ref().map(|s| s.phase()),
        }
    }
}

/// The answer of `GET /api/v1/federated`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct FederatedStatus {
    /// This edge does not take part in rounds (`--no-federated`).
    opted_out: bool,
    rounds: Vec<RoundView>,
    model: grassroots_wire::models::ModelStatusReport,
}

/// `GET /api/v1/federated`: this edge's rounds, whether it takes part, and its models.
#[utoipa::path(get, path = "/api/v1/federated", tag = "federated",
    responses((status = 200, description = "This edge's rounds, whether it takes part, and its models", body = FederatedStatus), grassroots_web::openapi::Refusals))]
pub(crate) async fn federated_api(State(state): State<Arc<EdgeState>>) -> Response {
    match state.federated.records() {
        Ok(records) => Json(FederatedStatus {
            opted_out: state.federated.opt_out,
            rounds: records.iter().map(RoundView::from).collect(),
            model: state.screening.model.status_report(),
        })
        .into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `/federated`: labels, participation, models.
pub(crate) async fn federated_page(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    let labels = match state
        .referrals
        .list()
        .and_then(|referrals| state.labels.all(&referrals))
    {
        Ok(labels) => labels,
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    let summary = Labels::summary(&labels);
    let counts = |map: &std::collections::BTreeMap<String, usize>| {
        if map.is_empty() {
            tr("none").to_string()
        } else {
            map.iter()
                .map(|(k, v)| format!("{v} {}", escape(&tr_any(k))))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut rows = String::new();
    for record in state.federated.records().unwrap_or_default() {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}{}</td><td>{}</td><td><code>{}</code></td></tr>",
            record.task.round,
            tr_any(&format!("{:?}", record.state)),
            record
                .secure
                .as_ref()
                .map(|s| format!(
                    " · {}",
                    tr("secure aggregation: {}").replace("{}", s.phase())
                ))
                .unwrap_or_default(),
            escape(record.detail.as_deref().unwrap_or("")),
            escape(&record.task.base_digest[..12.min(record.task.base_digest.len())]),
        ));
    }
    if rows.is_empty() {
        rows.push_str(&format!(
            r#"<tr><td colspan="4" class="muted">{}</td></tr>"#,
            tr("No round yet: the hub sends a task when a round starts and this edge runs the released model.")
        ));
    }
    let report = state.screening.model.status_report();
    let name = |m: &Option<grassroots_wire::models::ModelRef>| {
        m.as_ref()
            .map(|m| {
                format!(
                    "{} {} <code>{}</code>",
                    escape(&m.name),
                    escape(&m.version),
                    escape(&m.digest[..12.min(m.digest.len())])
                )
            })
            .unwrap_or_else(|| tr("none").into())
    };
    let live = grassroots_web::pages::live_updates(10);
    let body = format!(
        r#"{live}
<div class="card"><dl class="facts">
<dt>Taking part</dt><dd>{part}</dd>
<dt>Labels</dt><dd>{classes} {by_source}</dd>
<dt>Current model</dt><dd>{current}</dd><dt>Previous model</dt><dd>{previous}</dd>
</dl><p class="muted">{labels_note}</p></div>
<div class="table-wrap"><table><thead><tr><th>Round</th><th>State</th><th>Detail</th><th>Base</th></tr></thead><tbody>{rows}</tbody></table></div>"#,
        part = if state.federated.opt_out {
            tr("no (opted out with --federated-opt-out)")
        } else {
            tr("yes")
        },
        classes = counts(&summary.by_class),
        by_source = tr("(by source: {sources}; {withdrawn} withdrawn)")
            .replace("{withdrawn}", &summary.withdrawn.to_string())
            .replace("{sources}", &counts(&summary.by_source)),
        labels_note = tr("Labels come from experts' answers and from sign-offs ({}). Only the change to the model's weights leaves this edge; slides, tiles and labels stay here.")
            .replace("{}", "<code>POST /api/v1/slides/ID/signoff</code>"),
        current = name(&report.active),
        previous = name(&report.previous),
    );
    page(
        &state.page_title(),
        "Federated learning",
        Some(&user),
        &body,
    )
    .into_response()
}
