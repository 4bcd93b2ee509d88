//! The registry in the hub's web UI and API: versions with lineage and the sites running each
//! (`GET /api/v1/model-versions`, `/models`), and the admin's actions — add a signed package,
//! release a version to the network, roll back, pin a site to a version.
//!
//! Admins act; health authorities may read (which model each site runs is part of regional
//! coverage). Nothing here names a patient: versions, digests, figures and site ids.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use grassroots_web::pages::{escape, page};
use grassroots_web::{CurrentUser, WebError};
use serde::Deserialize;

use crate::model_registry::Lineage;
use crate::{HubError, HubState};

fn refused(error: HubError) -> Response {
    match error {
        HubError::Config(reason) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({ "error": reason })),
        )
            .into_response(),
        other => WebError::Internal(other.to_string()).into_response(),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, HubError> + Send + 'static,
) -> Result<T, HubError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| HubError::Config(format!("task failed: {e}")))?
}

/// `GET /api/v1/model-versions`: every version, newest first, with lineage (`parent`), the
/// sites running it and whether it is released; and each site's model.
pub(crate) async fn versions_api(State(state): State<Arc<HubState>>) -> Response {
    let rows = state.models.rows();
    let sites = state.models.site_models();
    match (rows, sites) {
        (Ok(versions), Ok(sites)) => Json(serde_json::json!({
            "canary": state.canaries.current().ok().flatten(),
            "versions": versions,
            "released": versions.iter().find(|v| v.released).map(|v| v.version.digest.clone()),
            "sites": sites.into_iter().map(|(site, model)| serde_json::json!({
                "site": site,
                "running": model.running,
                "previous": model.previous,
                "pinned": model.pinned,
                "refused": model.refused.map(|(digest, reason)| serde_json::json!({"digest": digest, "reason": reason})),
                "reported_at": model.reported_at,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        (Err(error), _) | (_, Err(error)) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `POST /api/v1/model-versions` (admins): the body is a signed package; 201 with the version,
/// 422 with the reason when it does not verify.
pub(crate) async fn add_api(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    body: Bytes,
) -> Response {
    let worker = state.clone();
    let added = blocking(move || {
        // An approved round candidate keeps its round's lineage; anything else is an upload.
        let approved = crate::rounds::approved_candidate(&worker, &body)?;
        let lineage = approved.as_ref().map_or_else(
            || Lineage {
                parent: None,
                round: None,
                aggregation: None,
                participants: Vec::new(),
            },
            |(lineage, _)| lineage.clone(),
        );
        let version = worker.models.add(&body, lineage, &user.username)?;
        if let Some((_, round)) = approved {
            crate::rounds::candidate_approved(&worker, round, &version.digest)?;
        }
        Ok(version)
    })
    .await;
    match added {
        Ok(version) => (StatusCode::CREATED, Json(version)).into_response(),
        Err(error) => refused(error),
    }
}

/// `POST /api/v1/model-versions/{digest}/release` (admins).
pub(crate) async fn release_api(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(digest): Path<String>,
) -> Response {
    let worker = state.clone();
    let released = blocking(move || {
        worker.models.release(&digest, &user.username)?;
        // A release by hand ends a canary that was still watching.
        if worker.canaries.current()?.is_some_and(|c| c.is_watching()) {
            worker
                .canaries
                .conclude(crate::canary::CanaryOutcome::Ended)?;
        }
        Ok(())
    })
    .await;
    match released {
        Ok(()) => Json(serde_json::json!({ "released": true })).into_response(),
        Err(error) => refused(error),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CanaryForm {
    sites: Vec<String>,
}

/// `POST /api/v1/model-versions/{digest}/canary` (admins): `{"sites": ["lankao"]}`. Those
/// sites run the version first; their evaluations release it or roll it back by themselves.
pub(crate) async fn canary_api(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(digest): Path<String>,
    Json(form): Json<CanaryForm>,
) -> Response {
    if form
        .sites
        .iter()
        .any(|s| s.parse::<grassroots_provisioning::SiteId>().is_err())
    {
        return WebError::BadRequest("a canary site that is not a site id".into()).into_response();
    }
    let worker = state.clone();
    let started = blocking(move || {
        let version = worker
            .models
            .version(&digest)?
            .ok_or_else(|| HubError::Config(format!("no model version {digest}")))?;
        worker
            .canaries
            .start(&version.digest, form.sites, &user.username)
    })
    .await;
    match started {
        Ok(canary) => {
            state.models.changed().notify_one();
            tracing::info!(digest = %canary.digest, sites = ?canary.sites, "canary started");
            (StatusCode::CREATED, Json(canary)).into_response()
        }
        Err(error) => refused(error),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackForm {
    reason: String,
}

/// `POST /api/v1/model-versions/rollback` (admins): `{"reason": "..."}`.
pub(crate) async fn rollback_api(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Json(form): Json<RollbackForm>,
) -> Response {
    let worker = state.clone();
    match blocking(move || worker.models.rollback(&user.username, &form.reason)).await {
        Ok(digest) => Json(serde_json::json!({ "released": digest })).into_response(),
        Err(error) => refused(error),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PinForm {
    /// A version's digest, or null to follow the network's release again.
    pin: Option<String>,
}

/// `POST /api/v1/sites/{site}/model` (admins): `{"pin": DIGEST}` or `{"pin": null}`.
pub(crate) async fn pin_api(
    State(state): State<Arc<HubState>>,
    Path(site): Path<String>,
    Json(form): Json<PinForm>,
) -> Response {
    if site.parse::<grassroots_provisioning::SiteId>().is_err() {
        return WebError::BadRequest(format!("{site:?} is not a site id")).into_response();
    }
    let worker = state.clone();
    let pin = form.pin.clone();
    match blocking(move || worker.models.pin(&site, pin.as_deref())).await {
        Ok(()) => Json(serde_json::json!({ "pinned": form.pin })).into_response(),
        Err(error) => refused(error),
    }
}

fn short(digest: &str) -> String {
    digest.chars().take(12).collect()
}

/// `/models`: the registry and the sites' models.
pub(crate) async fn models_page(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    let (rows, sites) = match (state.models.rows(), state.models.site_models()) {
        (Ok(rows), Ok(sites)) => (rows, sites),
        (Err(error), _) | (_, Err(error)) => {
            return WebError::Internal(error.to_string()).into_response()
        }
    };
    let mut versions = String::new();
    for row in &rows {
        let v = &row.version;
        let state_words = match (&v.withdrawn, row.released) {
            (Some(why), _) => format!("withdrawn: {}", escape(why)),
            (None, true) => "<b>released</b>".into(),
            (None, false) => "candidate".into(),
        };
        let mut metrics = v
            .metrics
            .iter()
            .map(|(k, value)| format!("{}: {value:.3}", escape(k)))
            .collect::<Vec<_>>();
        // Cross-site evaluation: each site's agreement with its own labels.
        metrics.extend(v.site_evaluations.iter().map(|(site, e)| {
            format!(
                "at {}: agreement {:.2} on {} tiles",
                escape(site),
                e.agreement,
                e.tiles
            )
        }));
        let metrics = metrics.join("<br>");
        versions.push_str(&format!(
            "<tr><td><b>{}</b> {}<br><code>{}</code></td><td>{}</td><td>{}</td><td>{state_words}</td><td>{}</td><td class=\"muted\">{metrics}</td></tr>",
            escape(&v.name),
            escape(&v.version),
            short(&v.digest),
            v.lineage
                .parent
                .as_deref()
                .map(|p| format!("<code>{}</code>", short(p)))
                .unwrap_or_else(|| "—".into()),
            v.lineage
                .round
                .map(|r| format!("round {r} ({} sites)", v.lineage.participants.len()))
                .unwrap_or_else(|| format!("added by {}", escape(&v.added_by))),
            if row.sites.is_empty() {
                "—".to_string()
            } else {
                escape(&row.sites.join(", "))
            },
        ));
    }
    if rows.is_empty() {
        versions.push_str(r#"<tr><td colspan="6" class="muted">No model versions yet: add a signed package with <code>POST /api/v1/model-versions</code> (made by <code>grassroots model train</code>).</td></tr>"#);
    }
    let mut site_rows = String::new();
    for (site, model) in &sites {
        site_rows.push_str(&format!(
            "<tr><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(site),
            model
                .running
                .as_deref()
                .map(short)
                .unwrap_or_else(|| "—".into()),
            model
                .previous
                .as_deref()
                .map(short)
                .unwrap_or_else(|| "—".into()),
            model
                .pinned
                .as_deref()
                .map(short)
                .unwrap_or_else(|| "follows the release".into()),
            model
                .refused
                .as_ref()
                .map(|(digest, reason)| format!(
                    "<span class=\"error\">{}: {}</span>",
                    short(digest),
                    escape(reason)
                ))
                .unwrap_or_else(|| "—".into()),
        ));
    }
    if sites.is_empty() {
        site_rows.push_str(
            r#"<tr><td colspan="5" class="muted">No site has reported a model yet.</td></tr>"#,
        );
    }
    let canary = match state.canaries.current().ok().flatten() {
        Some(c) => {
            let outcome = match &c.outcome {
                crate::canary::CanaryOutcome::Watching => format!(
                    "watching: {} of {} sites reported",
                    c.reports.len(),
                    c.sites.len()
                ),
                crate::canary::CanaryOutcome::Released => "released to every site".into(),
                crate::canary::CanaryOutcome::RolledBack { reason } => {
                    format!(
                        "<span class=\"error\">rolled back: {}</span>",
                        escape(reason)
                    )
                }
                crate::canary::CanaryOutcome::Ended => "ended by hand".into(),
            };
            format!(
                r#"<div class="card"><dl class="facts"><dt>Canary</dt><dd><code>{}</code> at {}: {outcome}</dd></dl></div>"#,
                short(&c.digest),
                escape(&c.sites.join(", "))
            )
        }
        None => String::new(),
    };
    let body = format!(
        r#"<meta http-equiv="refresh" content="10">{canary}
<h2>Model versions</h2>
<div class="table-wrap"><table><thead><tr><th>Version</th><th>Parent</th><th>Made by</th><th>State</th><th>Sites running it</th><th>Figures</th></tr></thead>
<tbody>{versions}</tbody></table></div>
<h2>Sites</h2>
<div class="table-wrap"><table><thead><tr><th>Site</th><th>Runs</th><th>Previous</th><th>Pinned</th><th>Last refusal</th></tr></thead>
<tbody>{site_rows}</tbody></table></div>"#
    );
    page(
        &format!("Hub — {}", state.kit.network),
        "Models",
        Some(&user),
        &body,
    )
    .into_response()
}
