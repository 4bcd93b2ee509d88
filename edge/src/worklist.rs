//! Screening in the edge's UI and API: the worklist (slides by risk, with the reasons), each
//! slide's screening as JSON, its heatmap as an overlay image and its regions as GeoJSON, and
//! the model: what is active, and installing a package (admins).
//!
//! Risk order: suspicious slides first (highest score first), then slides that need a re-scan,
//! then the ones still being screened, then likely benign (highest score first): what needs a
//! pathologist's eyes comes first, and a benign call is never above an open question.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use grassroots_models::triage::TriageClass;
use grassroots_web::i18n::tr;
use grassroots_web::pages::{escape, page};
use grassroots_web::{CurrentUser, WebError};

use crate::screening::jobs::{JobState, ScreeningJob};
use crate::EdgeState;

/// Lower sorts first.
fn risk_rank(job: &ScreeningJob) -> (u8, i64) {
    let score = |job: &ScreeningJob| {
        job.result
            .as_ref()
            .map_or(0, |r| -(r.triage.score * 1e6) as i64)
    };
    match (&job.state, job.result.as_ref().map(|r| r.triage.class)) {
        (JobState::Done, Some(TriageClass::Suspicious)) => (0, score(job)),
        (JobState::Done, Some(TriageClass::NeedsRescan)) | (JobState::Failed, _) => (1, 0),
        (JobState::Done, Some(TriageClass::LikelyBenign)) => (3, score(job)),
        _ => (2, job.queued_at.unix_timestamp()),
    }
}

/// A screening reason in the page's language: `grassroots_models` writes them in English (for
/// the record and the API) with figures in them, which the catalogue's patterns keep.
fn reason_words(reason: &str) -> String {
    grassroots_web::i18n::message_in(grassroots_web::nav::lang(), reason)
}

/// One line of the worklist: what the job says, in words.
fn status_words(job: &ScreeningJob) -> (String, String) {
    match (&job.state, &job.result) {
        (JobState::Done, Some(result)) => {
            let (class, css) = match result.triage.class {
                TriageClass::Suspicious => (tr("suspicious"), "error"),
                TriageClass::NeedsRescan => (tr("needs re-scan"), "warning"),
                TriageClass::LikelyBenign => (tr("likely benign"), "online"),
            };
            (
                format!("<span class=\"{css}\">{class}</span>"),
                escape(
                    &result
                        .triage
                        .reasons
                        .iter()
                        .map(|reason| reason_words(reason))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            )
        }
        (JobState::Failed, _) => (
            format!("<span class=\"error\">{}</span>", tr("screening failed")),
            escape(job.error.as_deref().unwrap_or("")),
        ),
        (JobState::Running, _) if job.parts > 0 => {
            let percent = job.parts_done as f64 * 100.0 / f64::from(job.parts);
            (
                format!(
                    "{} <progress max=\"100\" value=\"{percent:.0}\"></progress> {percent:.0}%",
                    tr("screening")
                ),
                tr("part {done} of {total}")
                    .replace("{done}", &job.parts_done.to_string())
                    .replace("{total}", &job.parts.to_string()),
            )
        }
        _ => (tr("queued").into(), String::new()),
    }
}

pub async fn worklist_page(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    let mut jobs = match state.screening.jobs() {
        Ok(jobs) => jobs,
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    jobs.sort_by_key(risk_rank);
    let mut rows = String::new();
    let mut busy = false;
    for job in &jobs {
        busy |= matches!(job.state, JobState::Queued | JobState::Running);
        let record = state.slides.record(&job.slide_id).ok().flatten();
        let name = record
            .as_ref()
            .map_or(job.slide_id.clone(), |r| r.original_name.clone());
        let case = record
            .as_ref()
            .and_then(|r| r.case_number.clone())
            .unwrap_or_default();
        let (class, why) = status_words(job);
        let score = job
            .result
            .as_ref()
            .map(|r| format!("{:.2}", r.triage.score))
            .unwrap_or_default();
        rows.push_str(&format!(
            "<tr><td><a href=\"/view/{id}\">{name}</a></td><td>{case}</td><td>{class}</td><td>{score}</td><td>{why}</td></tr>",
            id = job.slide_id,
            name = grassroots_web::pages::name(&name),
            case = grassroots_web::pages::name(&case),
        ));
    }
    let model = state.screening.model.status();
    let model_line = match (&model.active, &model.last_refusal) {
        (Some(active), refusal) => format!(
            "<p class=\"muted\">{}{}</p>",
            tr("Model {name} {version} (proxy-task model: see its metrics)")
                .replace("{version}", &escape(&active.version))
                .replace("{name}", &escape(&active.name)),
            refusal
                .as_ref()
                .map(|r| format!(" · <span class=\"error\">{}</span>", escape(r)))
                .unwrap_or_default()
        ),
        (None, refusal) => format!(
            "<p class=\"warning\">{}{}</p>",
            tr("No screening model is installed: slides are not screened."),
            refusal
                .as_ref()
                .map(|r| format!(" {}", escape(r)))
                .unwrap_or_default()
        ),
    };
    if jobs.is_empty() {
        rows.push_str(&format!(
            r#"<tr><td colspan="5" class="empty">{}</td></tr>"#,
            grassroots_web::i18n::tr(r#"No slides screened yet. Every slide imported at this edge is screened here by the installed model, highest risk first (<a href="/slides">Slides</a> says how to import one)."#)
        ));
    }
    let refresh = if busy {
        grassroots_web::pages::live_updates(5)
    } else {
        String::new()
    };
    let head = grassroots_web::pages::headings(&["Slide", "Case", "Triage", "Score", "Why"]);
    let body = format!(
        r#"{refresh}{model_line}<div class="table-wrap"><table id="worklist">{head}<tbody>{rows}</tbody></table></div>"#
    );
    page(
        &state.page_title(),
        "Screening worklist",
        Some(&user),
        &body,
    )
    .into_response()
}

/// `GET /api/v1/screening`: every job, in risk order.
#[utoipa::path(get, path = "/api/v1/screening", tag = "screening",
    responses((status = 200, description = "Every screening job, highest risk first", body = Vec<ScreeningJob>), grassroots_web::openapi::Refusals))]
pub async fn jobs_api(State(state): State<Arc<EdgeState>>) -> Response {
    match state.screening.jobs() {
        Ok(mut jobs) => {
            jobs.sort_by_key(risk_rank);
            Json(jobs).into_response()
        }
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

fn job_or_404(state: &EdgeState, id: &str) -> Result<ScreeningJob, WebError> {
    match state.screening.job(id) {
        Ok(Some(job)) => Ok(job),
        Ok(None) => Err(WebError::NotFound(format!(
            "slide {id} has not been screened"
        ))),
        Err(error) => Err(WebError::Internal(error.to_string())),
    }
}

/// `GET /api/v1/screening/{id}`: one slide's job and result.
#[utoipa::path(get, path = "/api/v1/screening/{id}", tag = "screening", params(("id" = String, Path, description = "The slide's id")),
    responses(
        (status = 200, description = "The slide's screening job and its result", body = ScreeningJob),
        (status = 404, description = "The slide has not been screened", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals))]
pub async fn job_api(State(state): State<Arc<EdgeState>>, Path(id): Path<String>) -> Response {
    match job_or_404(&state, &id) {
        Ok(job) => Json(job).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `GET /screening/{id}/regions.geojson`: the top regions, as QuPath imports them.
pub async fn regions_geojson(
    State(state): State<Arc<EdgeState>>,
    Path(id): Path<String>,
) -> Response {
    let id = id.trim_end_matches(".geojson").to_string();
    match job_or_404(&state, &id) {
        Ok(ScreeningJob {
            result: Some(result),
            ..
        }) => (
            [(header::CONTENT_TYPE, "application/geo+json")],
            result.triage.regions_and_artefacts_geojson().to_string(),
        )
            .into_response(),
        Ok(_) => WebError::NotFound(format!("slide {id} is not screened yet")).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `GET /screening/{id}/heatmap.png`: the lesion heatmap as a translucent overlay, one pixel
/// per grid cell (the viewer stretches it over the slide): clear below a tenth, then yellow to
/// red with rising opacity.
pub async fn heatmap_png(State(state): State<Arc<EdgeState>>, Path(id): Path<String>) -> Response {
    let screening = state.screening.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        let grey = screening.heatmap(&id)?;
        let overlay = image::RgbaImage::from_fn(grey.width(), grey.height(), |x, y| {
            let p = f32::from(grey.get_pixel(x, y)[0]) / 255.0;
            if p < 0.1 {
                image::Rgba([0, 0, 0, 0])
            } else {
                let green = (220.0 * (1.0 - p)) as u8;
                image::Rgba([255, green, 0, (60.0 + 180.0 * p) as u8])
            }
        });
        let mut png = std::io::Cursor::new(Vec::new());
        overlay
            .write_to(&mut png, image::ImageFormat::Png)
            .ok()
            .map(|_| png.into_inner())
    })
    .await;
    match rendered {
        Ok(Some(png)) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "private, no-cache"),
            ],
            png,
        )
            .into_response(),
        _ => WebError::NotFound("no heatmap for this slide yet".into()).into_response(),
    }
}

/// `GET /api/v1/models`: the active model and the last refusal.
#[utoipa::path(get, path = "/api/v1/models", tag = "models",
    responses((status = 200, description = "The active screening model, and why the last package was refused", body = crate::screening::active_model::ModelStatus), grassroots_web::openapi::Refusals))]
pub async fn model_api(State(state): State<Arc<EdgeState>>) -> Response {
    Json(state.screening.model.status()).into_response()
}

/// `POST /api/v1/models` (admins): install a model package (the body); 422 with the reason when
/// it is refused — the active model stays.
#[utoipa::path(post, path = "/api/v1/models", tag = "models",
    request_body(content_type = "application/octet-stream",
        description = "A model package signed by the network's model-signing key"),
    responses(
        (status = 200, description = "Installed and active", body = InstalledModel),
        (status = 413, description = "Larger than a model package may be (256 MiB)", body = grassroots_web::openapi::ApiError),
        (status = 422, description = "Refused (signature, manifest, graph); the active model stays", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals))]
pub async fn install_model_api(State(state): State<Arc<EdgeState>>, body: Bytes) -> Response {
    let screening = state.screening.clone();
    let installed =
        tokio::task::spawn_blocking(move || screening.model.install(&body).map(|m| (m, screening)))
            .await;
    match installed {
        Ok(Ok((manifest, _))) => {
            crate::model_sync::after_install(&state).await;
            Json(InstalledModel {
                installed: manifest.name,
                version: manifest.version,
            })
            .into_response()
        }
        Ok(Err(error)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(grassroots_web::openapi::ApiError {
                error: error.to_string(),
            }),
        )
            .into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// The answer of `POST /api/v1/models`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct InstalledModel {
    /// The installed model's name.
    pub installed: String,
    pub version: String,
}

/// The viewer's screening card and the data attributes that lay the heatmap and the regions over
/// the slide (in OpenSeadragon's viewport units: the slide's width is 1).
pub fn viewer_screening(state: &EdgeState, id: &str, slide_width: u32) -> (String, String) {
    let job = match state.screening.job(id) {
        Ok(Some(job)) => job,
        _ => {
            let words = if state.screening.model.current().is_some() {
                tr("Not screened yet.")
            } else {
                tr("No screening model is installed.")
            };
            return (
                String::new(),
                format!(
                    r#"<div class="card"><h2>Screening</h2><p class="muted">{words}</p></div>"#
                ),
            );
        }
    };
    let (class, why) = status_words(&job);
    let Some(result) = job.result.as_ref() else {
        return (
            String::new(),
            format!(
                r#"<div class="card"><h2>Screening</h2><p>{class}</p><p class="muted">{why}</p></div>"#
            ),
        );
    };
    let width = f64::from(slide_width.max(1));
    let attributes = format!(
        r#" data-heatmap="/screening/{id}/heatmap.png" data-heat-x="{:.8}" data-heat-y="{:.8}" data-heat-w="{:.8}" data-heat-h="{:.8}" data-regions="/screening/{id}/regions.geojson" data-slide-width="{slide_width}""#,
        result.map_offset / width,
        result.map_offset / width,
        f64::from(result.cols) * result.cell_pixels / width,
        f64::from(result.rows) * result.cell_pixels / width,
    );
    let faults: String = result
        .triage
        .faults
        .iter()
        .map(|(name, share)| {
            format!(
                "<dt>{}</dt><dd>{}</dd>",
                escape(name),
                tr("{}% of tissue").replace("{}", &format!("{:.0}", share * 100.0))
            )
        })
        .collect();
    let card = format!(
        r#"<div class="card"><h2>Screening</h2><p>{class} · {score_word} {score:.2}</p><p class="muted">{why}</p>
<label><input type="checkbox" id="heatmap-toggle" checked> {heatmap}</label> <label><input type="checkbox" id="regions-toggle" checked> {regions}</label>
<dl class="facts">{faults}<dt>Tiles classified</dt><dd>{tiles}</dd><dt>Model</dt><dd>{model}</dd></dl>
<p class="muted">{aid}</p>
<p><a href="/screening/{id}/regions.geojson" download>Regions (GeoJSON)</a></p></div>"#,
        score_word = tr("score"),
        heatmap = tr("Heatmap"),
        regions = tr("Regions"),
        aid = tr("Proxy-task model (planted lesions): a screening aid, not a diagnosis."),
        score = result.triage.score,
        tiles = result.tiles_classified,
        model = escape(&result.model_name),
    );
    (attributes, card)
}
