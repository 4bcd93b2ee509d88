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
use grassroots_web::i18n::tr;
use grassroots_web::openapi::ApiError;
use grassroots_web::pages::{escape, page};
use grassroots_web::{CurrentUser, WebError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::canary::Canary;
use crate::model_registry::{Lineage, ModelVersion, VersionRow};
use crate::{HubError, HubState};

fn refused(error: HubError) -> Response {
    match error {
        HubError::Config(reason) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(ApiError { error: reason }),
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

/// The answer of `GET /api/v1/model-versions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ModelVersions {
    /// The latest canary (watching or concluded), if one was ever started.
    pub canary: Option<Canary>,
    /// Every version, newest first.
    pub versions: Vec<VersionRow>,
    /// The digest of the version released to the network, if any.
    pub released: Option<String>,
    /// Each site's model, as far as the hub knows.
    pub sites: Vec<SiteModelView>,
}

/// A site's model in `GET /api/v1/model-versions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SiteModelView {
    /// The site's id.
    pub site: String,
    /// The digest the site runs (acknowledged install, or its own report).
    pub running: Option<String>,
    /// The digest it ran before.
    pub previous: Option<String>,
    /// The version an admin pinned the site to, overriding the network's release.
    pub pinned: Option<String>,
    /// The last package the site refused, and why.
    pub refused: Option<RefusedPackage>,
    /// When the site last reported or acknowledged its model.
    #[serde(with = "time::serde::rfc3339::option")]
    pub reported_at: Option<OffsetDateTime>,
}

/// A package a site refused.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RefusedPackage {
    /// The refused version's digest.
    pub digest: String,
    /// The site's reason.
    pub reason: String,
}

/// `GET /api/v1/model-versions`: every version, newest first, with lineage (`parent`), the
/// sites running it and whether it is released; and each site's model.
#[utoipa::path(get, path = "/api/v1/model-versions", tag = "models",
    responses(
        (status = 200, description = "Every version, newest first, the release, the canary and each site's model", body = ModelVersions),
        grassroots_web::openapi::Refusals))]
pub(crate) async fn versions_api(State(state): State<Arc<HubState>>) -> Response {
    let rows = state.models.rows();
    let sites = state.models.site_models();
    match (rows, sites) {
        (Ok(versions), Ok(sites)) => Json(ModelVersions {
            canary: state.canaries.current().ok().flatten(),
            released: versions
                .iter()
                .find(|v| v.released)
                .map(|v| v.version.digest.clone()),
            versions,
            sites: sites
                .into_iter()
                .map(|(site, model)| SiteModelView {
                    site,
                    running: model.running,
                    previous: model.previous,
                    pinned: model.pinned,
                    refused: model
                        .refused
                        .map(|(digest, reason)| RefusedPackage { digest, reason }),
                    reported_at: model.reported_at,
                })
                .collect(),
        })
        .into_response(),
        (Err(error), _) | (_, Err(error)) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `POST /api/v1/model-versions` (admins): the body is a signed package; 201 with the version,
/// 422 with the reason when it does not verify.
#[utoipa::path(post, path = "/api/v1/model-versions", tag = "models",
    request_body(content_type = "application/octet-stream",
        description = "A signed model package, as bytes (`.grmodel`, made by `grassroots model train` or `grassroots model sign`)"),
    responses(
        (status = 201, description = "The version, added to the registry (or the one already held with the same digest)", body = ModelVersion),
        (status = 413, description = "The package is larger than the request body limit", body = ApiError),
        (status = 422, description = "The package does not verify against the network's model-signing key, or is malformed", body = ApiError),
        grassroots_web::openapi::Refusals))]
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

/// The answer of `POST /api/v1/model-versions/{digest}/release`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ReleaseDone {
    /// Always true: the version is the network's release.
    pub released: bool,
}

/// `POST /api/v1/model-versions/{digest}/release` (admins).
#[utoipa::path(post, path = "/api/v1/model-versions/{digest}/release", tag = "models",
    params(("digest" = String, Path, description = "The version's digest (BLAKE3 of its package, hex)")),
    responses(
        (status = 200, description = "The version is released to every site that is not pinned", body = ReleaseDone),
        (status = 422, description = "No such model version", body = ApiError),
        grassroots_web::openapi::Refusals))]
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
        Ok(()) => Json(ReleaseDone { released: true }).into_response(),
        Err(error) => refused(error),
    }
}

/// The body of `POST /api/v1/model-versions/{digest}/canary`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CanaryForm {
    /// The canary sites' ids: at least one.
    sites: Vec<String>,
}

/// `POST /api/v1/model-versions/{digest}/canary` (admins): `{"sites": ["lankao"]}`. Those
/// sites run the version first; their evaluations release it or roll it back by themselves.
#[utoipa::path(post, path = "/api/v1/model-versions/{digest}/canary", tag = "models",
    params(("digest" = String, Path, description = "The version's digest (BLAKE3 of its package, hex)")),
    request_body = CanaryForm,
    responses(
        (status = 201, description = "The canary, started (replacing one still watching)", body = Canary),
        (status = 400, description = "A canary site that is not a site id", body = ApiError),
        (status = 422, description = "No such model version, or no canary site", body = ApiError),
        grassroots_web::openapi::Refusals, grassroots_web::openapi::InputRefusals))]
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

/// The body of `POST /api/v1/model-versions/rollback`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackForm {
    /// Why the released version is withdrawn (recorded with it).
    reason: String,
}

/// The answer of `POST /api/v1/model-versions/rollback`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RolledBack {
    /// The digest of the version released now.
    pub released: String,
}

/// `POST /api/v1/model-versions/rollback` (admins): `{"reason": "..."}`.
#[utoipa::path(post, path = "/api/v1/model-versions/rollback", tag = "models",
    request_body = RollbackForm,
    responses(
        (status = 200, description = "The released version is withdrawn and the one before it released", body = RolledBack),
        (status = 422, description = "Nothing to roll back: no release, or no earlier one that is not withdrawn", body = ApiError),
        grassroots_web::openapi::Refusals, grassroots_web::openapi::InputRefusals))]
pub(crate) async fn rollback_api(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Json(form): Json<RollbackForm>,
) -> Response {
    let worker = state.clone();
    match blocking(move || worker.models.rollback(&user.username, &form.reason)).await {
        Ok(digest) => Json(RolledBack { released: digest }).into_response(),
        Err(error) => refused(error),
    }
}

/// The body of `POST /api/v1/sites/{site}/model`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PinForm {
    /// A version's digest, or null to follow the network's release again.
    pin: Option<String>,
}

/// The answer of `POST /api/v1/sites/{site}/model`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PinSet {
    /// The version the site is pinned to now; null: it follows the network's release.
    pub pinned: Option<String>,
}

/// `POST /api/v1/sites/{site}/model` (admins): `{"pin": DIGEST}` or `{"pin": null}`.
#[utoipa::path(post, path = "/api/v1/sites/{site}/model", tag = "models",
    params(("site" = String, Path, description = "The site's id")),
    request_body = PinForm,
    responses(
        (status = 200, description = "The site's pin, set or removed", body = PinSet),
        (status = 400, description = "Not a site id", body = ApiError),
        (status = 422, description = "No such model version", body = ApiError),
        grassroots_web::openapi::Refusals, grassroots_web::openapi::InputRefusals))]
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
        Ok(()) => Json(PinSet { pinned: form.pin }).into_response(),
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
            (Some(why), _) => tr("withdrawn: {}").replace("{}", &escape(why)),
            (None, true) => format!("<b>{}</b>", tr("released")),
            (None, false) => tr("candidate").into(),
        };
        let mut metrics = v
            .metrics
            .iter()
            .map(|(k, value)| format!("{}: {value:.3}", escape(k)))
            .collect::<Vec<_>>();
        // Cross-site evaluation: each site's agreement with its own labels.
        metrics.extend(v.site_evaluations.iter().map(|(site, e)| {
            tr("at {site}: agreement {agreement} on {tiles} tiles")
                .replace("{agreement}", &format!("{:.2}", e.agreement))
                .replace("{tiles}", &e.tiles.to_string())
                .replace("{site}", &escape(site))
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
                .map(|r| {
                    tr("round {round} ({sites} sites)")
                        .replace("{round}", &r.to_string())
                        .replace("{sites}", &v.lineage.participants.len().to_string())
                })
                .unwrap_or_else(|| tr("added by {}").replace("{}", &escape(&v.added_by))),
            if row.sites.is_empty() {
                "—".to_string()
            } else {
                escape(&row.sites.join(", "))
            },
        ));
    }
    if rows.is_empty() {
        versions.push_str(&format!(
            r#"<tr><td colspan="6" class="muted">{}</td></tr>"#,
            tr("No model versions yet: add a signed package with {api} (made by {command}).")
                .replace("{api}", "<code>POST /api/v1/model-versions</code>")
                .replace("{command}", "<code>grassroots model train</code>")
        ));
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
                .unwrap_or_else(|| tr("follows the release").into()),
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
        site_rows.push_str(&format!(
            r#"<tr><td colspan="5" class="muted">{}</td></tr>"#,
            tr("No site has reported a model yet.")
        ));
    }
    let canary = match state.canaries.current().ok().flatten() {
        Some(c) => {
            let outcome = match &c.outcome {
                crate::canary::CanaryOutcome::Watching => {
                    tr("watching: {reported} of {sites} sites reported")
                        .replace("{reported}", &c.reports.len().to_string())
                        .replace("{sites}", &c.sites.len().to_string())
                }
                crate::canary::CanaryOutcome::Released => tr("released to every site").into(),
                crate::canary::CanaryOutcome::RolledBack { reason } => {
                    format!(
                        "<span class=\"error\">{}</span>",
                        tr("rolled back: {}").replace("{}", &escape(reason))
                    )
                }
                crate::canary::CanaryOutcome::Ended => tr("ended by hand").into(),
            };
            format!(
                r#"<div class="card"><dl class="facts"><dt>Canary</dt><dd>{}</dd></dl></div>"#,
                tr("{model} at {sites}: {outcome}")
                    .replace("{model}", &format!("<code>{}</code>", short(&c.digest)))
                    .replace("{sites}", &escape(&c.sites.join(", ")))
                    .replace("{outcome}", &outcome)
            )
        }
        None => String::new(),
    };
    let live = grassroots_web::pages::live_updates(10);
    let body = format!(
        r#"{live}{canary}
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
