//! The expert's consult page (`/consult/{referral}`): the case as it crossed (pseudonymous), the
//! AI's and the referring doctor's regions, each slide in OpenSeadragon over the consult tile
//! URLs, drawing tools for annotations, the report form, the timeline, and a live indicator of
//! the link to the referring edge — when it drops, the page says so and reloads the missing
//! tiles when it is back, without a page reload (`hub/assets/web/consult.js`).

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use grassroots_web::i18n::{tr, tr_any};
use grassroots_web::pages::{self, escape, page, rfc3339};
use grassroots_web::{CurrentUser, WebError};
use rust_embed::RustEmbed;
use serde::Serialize;

use crate::referrals::HubReferral;
use crate::HubState;

#[derive(RustEmbed)]
#[folder = "assets/web/"]
struct HubScripts;

/// `GET PREFIX/web/{*path}`: the hub's own scripts.
pub(crate) async fn scripts(Path(path): Path<String>) -> Response {
    grassroots_web::assets::serve(HubScripts::get(&path), &path)
}

/// The answer of `GET /api/v1/referrals/{id}/link`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ReferralLink {
    /// The referring site.
    pub site: String,
    /// Whether it is connected to the hub now (its tiles can be fetched).
    pub online: bool,
}

/// `GET /api/v1/referrals/{id}/link`: whether the referring edge is connected now.
#[utoipa::path(get, path = "/api/v1/referrals/{id}/link", tag = "referrals",
    params(("id" = String, Path, description = "The referral's id")),
    responses(
        (status = 200, description = "The referring site and whether it is connected now", body = ReferralLink),
        (status = 404, description = "No such referral", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals))]
pub(crate) async fn link_api(
    State(state): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Response {
    match state.referrals.get(&id) {
        Ok(Some(referral)) => Json(ReferralLink {
            online: state.sites.connection(&referral.site).is_some(),
            site: referral.site,
        })
        .into_response(),
        Ok(None) => WebError::NotFound(format!("no referral {id}")).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// The referral's timeline as (step, when), in order; steps not reached yet have no time.
pub fn timeline(referral: &HubReferral) -> Vec<(&'static str, Option<String>)> {
    vec![
        (
            "Referred at the edge",
            Some(referral.referral.referred_at.clone()),
        ),
        ("Received at the hub", Some(rfc3339(referral.received_at))),
        ("Claimed", referral.claimed_at.map(rfc3339)),
        ("Opened", referral.opened_at.map(rfc3339)),
        (
            "Answered",
            referral.report.as_ref().map(|r| r.answered_at.clone()),
        ),
        (
            "Answer delivered to the edge",
            referral.report_delivered_at.map(rfc3339).or_else(|| {
                referral
                    .report_refused
                    .as_ref()
                    .map(|why| tr("refused by the edge: {}").replace("{}", why))
            }),
        ),
    ]
}

fn timeline_html(referral: &HubReferral) -> String {
    pages::timeline(
        &timeline(referral),
        &[
            ("Turnaround (referred → answered)", 4),
            ("Referred → delivered", 5),
        ],
    )
}

/// The referral's radiology studies: each series with links to its views at the hub (for
/// the expert who holds the open case), rendered by the referring edge.
fn studies_html(
    id: &str,
    referral: &grassroots_wire::referral::Referral,
    viewable: bool,
) -> String {
    if referral.studies.is_empty() {
        return String::new();
    }
    let mut html = format!(
        r#"<div class="card" id="studies"><h2>{}</h2><p class="muted">{}</p>"#,
        tr("Studies"),
        tr("Rendered at the referring site: only pictures cross, each one recorded there.")
    );
    for (number, study) in referral.studies.iter().enumerate() {
        html.push_str(&format!(
            "<h3>{}</h3><ul>",
            tr("Study {}").replace("{}", &(number + 1).to_string())
        ));
        for series in &study.series {
            let figures = format!(
                "{} · {} · {}×{}",
                escape(&series.modality),
                tr("{} images").replace("{}", &series.images.to_string()),
                series.columns,
                series.rows
            );
            let base = format!(
                "/consult/{}/studies/{}/series/{}",
                escape(id),
                escape(&study.study_key),
                escape(&series.series_key)
            );
            let links = match (viewable, series.volume) {
                (true, true) => format!(
                    r#" · <a href="{base}">{}</a> · <a href="{base}/mpr">{}</a> · <a href="{base}/3d">{}</a>"#,
                    tr("View the images"),
                    tr("Reformatted views"),
                    tr("Volume rendering")
                ),
                (true, false) => format!(r#" · <a href="{base}">{}</a>"#, tr("View the images")),
                (false, _) => String::new(),
            };
            html.push_str(&format!("<li>{figures}{links}</li>"));
        }
        html.push_str("</ul>");
    }
    html.push_str("</div>");
    html
}

/// `GET /consult/{referral}`
pub(crate) async fn consult_page(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> Response {
    let referral = match state.referrals.get(&id) {
        Ok(Some(referral)) => referral,
        Ok(None) => return WebError::NotFound(format!("no referral {id}")).into_response(),
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    let r = &referral.referral;
    let prefix = grassroots_web::assets::PREFIX;
    let mine = referral.assigned_to.as_deref() == Some(user.username.as_str());
    let holder = match (&referral.assigned_to, mine) {
        (_, true) => tr("you").to_string(),
        (Some(other), false) => escape(other),
        (None, _) => tr("nobody yet").to_string(),
    };
    let mut slides = String::new();
    for (index, slide) in r.slides.iter().enumerate() {
        slides.push_str(&format!(
            r#"<button type="button" class="slide-tab" data-slide="{id}" data-width="{w}" data-mpp="{mpp}" data-regions="{regions}">{n} · {w}×{h}{ai}</button> "#,
            id = escape(&slide.slide_id),
            n = tr("Slide {}").replace("{}", &(index + 1).to_string()),
            w = slide.width,
            h = slide.height,
            mpp = slide.microns_per_pixel.unwrap_or(0.0),
            regions = escape(slide.regions_geojson.as_deref().unwrap_or("")),
            ai = match (&slide.ai_triage, slide.ai_score) {
                (Some(triage), Some(score)) => format!(" · AI {} {score:.2}", escape(&tr_any(triage))),
                _ => String::new(),
            },
        ));
    }
    let answer = match &referral.report {
        Some(report) => format!(
            r#"<div class="card" id="answer"><h2>Answer</h2><dl class="facts"><dt>Category</dt><dd>{}</dd><dt>Diagnosis</dt><dd>{}</dd><dt>Recommendations</dt><dd>{}</dd><dt>By</dt><dd>{}</dd><dt>Digest</dt><dd><code>{}</code></dd></dl></div>"#,
            tr_any(&format!("{:?}", report.category)),
            escape(&report.diagnosis),
            escape(&report.recommendations),
            tr("{expert} at {time}")
                .replace("{time}", &escape(&report.answered_at))
                .replace("{expert}", &escape(&report.expert)),
            escape(&report.digest),
        ),
        None if mine => r#"<div class="card"><h2>Report</h2><form id="report-form">
<label for="category">Category</label><br><select id="category" name="category"><option value="benign">Benign</option><option value="malignant">Malignant</option><option value="uncertain">Uncertain</option><option value="insufficient-sample">Insufficient sample</option></select><br>
<label for="diagnosis">Diagnosis</label><br><textarea id="diagnosis" name="diagnosis" rows="3" required style="width:100%"></textarea><br>
<label for="recommendations">Recommendations</label><br><textarea id="recommendations" name="recommendations" rows="2" style="width:100%"></textarea><br>
<button type="submit">Sign and send the answer</button> <span id="report-result" role="status"></span></form></div>"#.to_string(),
        None => String::new(),
    };
    // Only the expert who holds the case views its slides: anyone else is told why, and how to
    // take it, instead of an empty viewer.
    let hint = match (&referral.assigned_to, mine) {
        (_, true) => String::new(),
        (None, false) => format!(
            r#"<div class="card hint" id="consult-hint"><p>{}</p><button type="button" id="claim">{}</button></div>"#,
            tr("Take the case to view its slides and answer it."),
            tr("Take this case"),
        ),
        (Some(other), false) if referral.report.is_some() => format!(
            r#"<div class="card hint" id="consult-hint"><p>{}</p></div>"#,
            tr("{} answered this case: the answer is below.").replace("{}", &escape(other))
        ),
        (Some(other), false) => format!(
            r#"<div class="card hint" id="consult-hint"><p>{}</p></div>"#,
            tr("{} holds this case: only they view its slides and answer it. An admin can reassign it.")
                .replace("{}", &escape(other))
        ),
    };
    let studies = studies_html(&id, r, mine && referral.report.is_none());
    let viewer = if mine && !r.slides.is_empty() {
        format!(
            r##"<div id="link-status" role="status" data-state="unknown">{checking}</div>
<div class="slides">{slides}</div>
<div class="toolbar" role="toolbar" aria-label="{tools}">
<button type="button" data-tool="pan" aria-pressed="true">Pan</button>
<button type="button" data-tool="rectangle" aria-pressed="false">Rectangle</button>
<button type="button" data-tool="polygon" aria-pressed="false">Polygon</button>
<button type="button" data-tool="point" aria-pressed="false">Point</button>
<label>Class <input id="annotation-class" value="Tumor" size="12"></label>
<button type="button" id="undo">Undo</button> <span id="annotation-count" class="muted">{none_yet}</span>
<a id="export" href="#" download="annotations.geojson">Export GeoJSON</a>
</div>
<div id="viewer" aria-label="{streamed}"><p class="viewer-wait">{loading}</p><svg class="annotations"></svg></div>"##,
            checking = tr("Checking the link to {}…").replace("{}", &escape(&referral.site)),
            tools = tr("Annotation tools"),
            none_yet = tr("0 annotations"),
            streamed = tr("The slide, streamed from the referring site"),
            loading = tr("Loading the slide from the referring site…"),
        )
    } else {
        String::new()
    };
    let body = format!(
        r##"<style>
#viewer {{ position:relative; width:100%; height:calc(100vh - 14rem); min-height:360px; background:#222; border-radius:6px; }}
#viewer svg.annotations {{ position:absolute; inset:0; width:100%; height:100%; pointer-events:none; z-index:5; }}
#link-status {{ padding:.4rem .8rem; border-radius:4px; margin:.5rem 0; }}
#link-status[data-state="offline"] {{ background:#fde2e1; color:#8a1c14; }}
#link-status[data-state="online"] {{ background:#e3f4e6; color:#1d5e2a; }}
.toolbar button[aria-pressed="true"] {{ outline:2px solid #2a6ebb; }}
.toolbar button, .slide-tab {{ min-height:2.75rem; min-width:2.75rem; }}
#viewer .viewer-wait {{ position:absolute; top:0; left:0; margin:0; padding:1rem; color:#fff; z-index:4; }}
.panels {{ display:grid; grid-template-columns:repeat(auto-fit, minmax(18rem, 1fr)); gap:1rem; margin-top:1rem; }}
</style>
<div id="consult" data-referral="{id}" data-mine="{mine}" data-answered="{answered}" data-osd-prefix="{prefix}/osd">
<p>{assigned}</p>
{hint}
{viewer}
{studies}
</div>
<div class="panels">
<div class="card"><h2>Case</h2><dl class="facts"><dt>Site</dt><dd>{site}</dd><dt>Patient</dt><dd>{age} · {sex}</dd><dt>Specimen</dt><dd>{specimen}</dd><dt>Question</dt><dd>{question}</dd><dt>Urgency</dt><dd>{urgency}</dd><dt>Case pseudonym</dt><dd><code>{pseudonym}</code></dd></dl></div>
<div class="card"><h2>Timeline</h2>{timeline}</div>
{answer}
</div>
<script src="{prefix}/osd/openseadragon.min.js"></script>
<script src="{prefix}/web/consult.js"></script>"##,
        id = escape(&id),
        assigned = tr("Assigned to {}.").replace("{}", &holder),
        answered = referral.report.is_some(),
        site = escape(&referral.site),
        age = escape(&r.age_band),
        sex = tr_any(&format!("{:?}", r.sex)),
        specimen = escape(&r.specimen),
        question = escape(&r.question),
        urgency = tr_any(&format!("{:?}", r.urgency)),
        pseudonym = escape(&r.case_pseudonym[..16.min(r.case_pseudonym.len())]),
        timeline = timeline_html(&referral),
    );
    page(
        &format!("Hub — {}", state.kit.network),
        "Consult",
        Some(&user),
        &body,
    )
    .into_response()
}
