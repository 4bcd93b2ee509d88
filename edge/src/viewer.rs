//! The slide pages: the list of slides (ingest state, failures with their reasons) and the
//! viewer page (OpenSeadragon, navigator, scale bar, metadata and label panels). Server-rendered
//! HTML; the only script is the embedded viewer.

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use grassroots_web::i18n::tr;
use grassroots_web::pages::{escape, name as long_name, page};
use grassroots_web::{CurrentUser, WebError};

use crate::slides::{SlideRecord, SlideState};
use crate::EdgeState;

/// Percent-encodes text for one URL path segment (a pathology number may hold `/`, `?`, `#`).
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn dimensions(record: &SlideRecord) -> String {
    record
        .info
        .as_ref()
        .map(|info| format!("{} × {} px", info.width, info.height))
        .unwrap_or_default()
}

pub async fn slide_list(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    let records = match state.slides.records() {
        Ok(records) => records,
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    let mut rows = String::new();
    for record in &records {
        let name = long_name(&record.original_name);
        let (state_html, link) = match record.state {
            SlideState::Ready => (
                format!(
                    "<span class=\"online\">{}</span>",
                    grassroots_web::i18n::tr("ready")
                ),
                format!("<a href=\"/view/{}\">{name}</a>", record.id),
            ),
            SlideState::Failed => (
                format!(
                    "<span class=\"error\">{}</span><br><span class=\"muted\">{}</span>",
                    grassroots_web::i18n::tr("failed"),
                    escape(record.error.as_deref().unwrap_or(""))
                ),
                name,
            ),
        };
        let case = match &record.case_number {
            Some(number) => format!(
                "<a href=\"/cases/{}\">{}</a>",
                path_segment(number),
                escape(number)
            ),
            None if record.state == SlideState::Ready => {
                format!(
                    "<span class=\"muted\">{}</span>",
                    grassroots_web::i18n::tr("unlinked")
                )
            }
            None => String::new(),
        };
        rows.push_str(&format!(
            "<tr><td>{link}</td><td>{case}</td><td>{state_html}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&dimensions(record)),
            escape(record.info.as_ref().map_or("", |i| i.vendor.as_str())),
            megabytes(record.size),
            record.imported_at.date()
        ));
    }
    if records.is_empty() {
        rows.push_str(&format!(
            r#"<tr><td colspan="7" class="empty">{}</td></tr>"#,
            grassroots_web::i18n::tr(r#"No slides yet. Scanned slides appear here once imported: copy them into the edge's watched folder, run <code>grassroots slide import FILE</code> on the edge, or send them with <code>POST /api/v1/slides?name=FILE</code>."#)
        ));
    }
    let importing: String = state
        .slides
        .imports_in_progress()
        .iter()
        .map(|p| {
            let percent = if p.total == 0 { 0.0 } else { p.copied as f64 * 100.0 / p.total as f64 };
            format!(
                "<li>{} <progress max=\"100\" value=\"{percent:.0}\"></progress> {percent:.0}%</li>",
                escape(&p.name)
            )
        })
        .collect();
    let importing = if importing.is_empty() {
        String::new()
    } else {
        format!(
            r#"{live}<div class="card"><h2>Importing</h2><ul>{importing}</ul></div>"#,
            live = grassroots_web::pages::live_updates(3)
        )
    };
    let head = grassroots_web::pages::headings(&[
        "Slide", "Case", "State", "Size", "Scanner", "File", "Imported",
    ]);
    let body = format!(
        r#"{importing}<div class="table-wrap"><table>{head}<tbody>{rows}</tbody></table></div>"#
    );
    page(&state.page_title(), "Slides", Some(&user), &body).into_response()
}

#[derive(serde::Deserialize)]
pub struct ViewerQuery {
    /// Show the annotations of this referral's answer on the slide.
    referral: Option<String>,
    /// Follow the expert's view of that referral live.
    follow: Option<bool>,
}

/// The expert's annotations on slide `id` from the answer to `referral`, as a JSON array of
/// GeoJSON features (empty when there is no answer or none on this slide).
fn expert_annotations(state: &EdgeState, referral: Option<&str>, id: &str) -> String {
    let features = referral
        .and_then(|r| state.referrals.get(r).ok().flatten())
        .and_then(|local| local.report)
        .and_then(|report| report.annotations_geojson)
        .and_then(|g| serde_json::from_str::<serde_json::Value>(&g).ok())
        .and_then(|g| g["features"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f["properties"]["slide_id"].as_str().is_none_or(|s| s == id))
        .collect::<Vec<_>>();
    serde_json::Value::Array(features).to_string()
}

pub async fn viewer_page(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<ViewerQuery>,
) -> Response {
    let (record, info) = match state.slides.ready_record(&id) {
        Ok(found) => found,
        Err(error) => return crate::http::tile_error(error),
    };
    let mpp = info
        .microns_per_pixel_x
        .map(|m| format!("{m:.4}"))
        .unwrap_or_default();
    let label = if info.associated_images.iter().any(|n| n == "label") {
        format!(
            r#"<img class="label" src="/associated/{id}/label" alt="{}">"#,
            tr("Slide label")
        )
    } else {
        format!(r#"<span class="muted">{}</span>"#, tr("no label image"))
    };
    let prefix = crate::assets::PREFIX;
    let (screening_data, screening_card) =
        crate::worklist::viewer_screening(&state, &id, info.width);
    let body = format!(
        r#"<style>
#viewer {{ position:relative; width:100%; height:calc(100vh - 12rem); min-height:320px; background:#222; border-radius:6px; }}
#viewer .viewer-wait {{ position:absolute; top:0; left:0; margin:0; padding:1rem; color:#fff; z-index:4; }}
#scalebar {{ position:absolute; left:12px; bottom:12px; z-index:10; color:#fff; font-size:.85rem; text-shadow:0 0 3px #000; }}
#scalebar .line {{ height:4px; background:#fff; box-shadow:0 0 3px #000; margin-bottom:2px; }}
.panels {{ display:grid; grid-template-columns:repeat(auto-fit, minmax(16rem, 1fr)); gap:1rem; margin-top:1rem; }}
img.label {{ max-width:100%; border-radius:4px; }}
</style>
<p id="viewer-message" class="muted" role="status"></p>
<div id="viewer" data-dzi="/slides/{id}.dzi" data-mpp="{mpp}" data-osd-prefix="{prefix}/osd" data-annotations="{annotations}" data-follow="{follow}"{screening_data} aria-label="{the_slide}"><p class="viewer-wait">{loading}</p><div id="scalebar" hidden><div class="line"></div><span class="label"></span></div></div>
<div class="panels">
<div class="card"><h2>Slide</h2><dl class="facts"><dt>File</dt><dd>{name}</dd><dt>Size</dt><dd>{dims}</dd><dt>Levels</dt><dd>{levels}</dd>
<dt>Microns per pixel</dt><dd>{mpp_text}</dd><dt>Objective</dt><dd>{objective}</dd><dt>Scanner</dt><dd>{vendor}</dd></dl></div>
<div class="card"><h2>Label</h2>{label}{reading}
<form method="post" action="/view/{id}/case"><label for="number">Case (pathology number)</label><br>
<input id="number" name="number" value="{case}" required> <button type="submit">Link</button></form></div>
{screening_card}
</div>
<script src="{prefix}/osd/openseadragon.min.js"></script>
<script src="{prefix}/web/viewer.js"></script>"#,
        the_slide = tr("The slide"),
        loading = tr("Loading the slide…"),
        name = escape(&record.original_name),
        annotations = escape(&expert_annotations(&state, query.referral.as_deref(), &id)),
        follow = match (&query.referral, query.follow) {
            (Some(referral), Some(true)) => escape(referral),
            _ => String::new(),
        },
        dims = escape(&dimensions(&record)),
        levels = info.levels.len(),
        mpp_text = if mpp.is_empty() {
            tr("unknown").to_string()
        } else {
            mpp.clone()
        },
        objective = info
            .objective_power
            .map(|o| format!("{o}×"))
            .unwrap_or_else(|| tr("unknown").into()),
        vendor = escape(&info.vendor),
        case = escape(
            record
                .case_number
                .as_deref()
                .or(record.label.as_ref().and_then(|l| l.number.as_deref()))
                .unwrap_or("")
        ),
        reading = match &record.label {
            Some(reading) => format!(
                r#"<p class="muted">{}{}</p>"#,
                tr("Read from the label: {}").replace("{}", &escape(&reading.lines.join(" / "))),
                match (&record.case_source, &record.case_number) {
                    (Some(crate::cases::LinkSource::Manual), Some(_)) =>
                        format!(" {}", tr("(case set by hand)")),
                    (_, Some(_)) => format!(
                        " {}",
                        tr("(confidence {}%)").replace(
                            "{}",
                            &format!("{:.0}", reading.confidence.unwrap_or(0.0) * 100.0)
                        )
                    ),
                    (_, None) => match (&reading.number, reading.confidence) {
                        (Some(number), Some(confidence)) => format!(
                            " {}",
                            tr("— suggests case {case} (least certain character {percent}%): confirm or correct it below")
                                .replace("{percent}", &format!("{:.0}", confidence * 100.0))
                                .replace("{case}", &escape(number))
                        ),
                        _ => format!(" {}", tr("— no pathology number found: link the case by hand")),
                    },
                }
            ),
            None => format!(r#"<p class="muted">{}</p>"#, tr("The label was not read.")),
        },
    );
    page(
        &state.page_title(),
        &record.original_name,
        Some(&user),
        &body,
    )
    .into_response()
}

/// `GET /associated/{id}/{name}`: a label, macro or thumbnail image, as JPEG.
pub async fn associated_image(
    State(state): State<Arc<EdgeState>>,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    match state.slides.associated(&id, &name).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (
                    header::CACHE_CONTROL,
                    "private, max-age=31536000, immutable",
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(error) => WebError::NotFound(error.to_string()).into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct CaseForm {
    number: String,
}

/// The viewer's "Link" form.
pub async fn link_case_form(
    State(state): State<Arc<EdgeState>>,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CaseForm>,
) -> Response {
    let library = state.slides.clone();
    let slide = id.clone();
    match tokio::task::spawn_blocking(move || library.link_case(&slide, &form.number)).await {
        Ok(Ok(_)) => axum::response::Redirect::to(&format!("/view/{id}")).into_response(),
        Ok(Err(error)) => WebError::BadRequest(error.to_string()).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `GET /cases`: every case slides are linked to, newest first.
pub async fn case_list(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    let mut cases = match state.slides.cases().cases() {
        Ok(cases) => cases,
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    cases.sort_by_key(|case| std::cmp::Reverse(case.created_at));
    let mut rows = String::new();
    for case in &cases {
        let slides: Vec<String> = case
            .slide_ids
            .iter()
            .filter_map(|id| state.slides.record(id).ok().flatten())
            .map(|record| {
                format!(
                    "<a href=\"/view/{}\">{}</a>",
                    record.id,
                    long_name(&record.original_name)
                )
            })
            .collect();
        rows.push_str(&format!(
            "<tr><td><a href=\"/cases/{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            path_segment(&case.number),
            long_name(&case.number),
            if slides.is_empty() {
                tr("none").to_string()
            } else {
                slides.join("<br>")
            },
            case.created_at.date()
        ));
    }
    if cases.is_empty() {
        rows.push_str(&format!(
            r#"<tr><td colspan="3" class="empty">{}</td></tr>"#,
            grassroots_web::i18n::tr(r#"No cases yet. A slide joins its case when the case number on its label is read at import, or by hand: open the slide and link it under "Case (pathology number)"."#)
        ));
    }
    let head = grassroots_web::pages::headings(&["Case", "Slides", "Since"]);
    let body =
        format!(r#"<div class="table-wrap"><table>{head}<tbody>{rows}</tbody></table></div>"#);
    page(&state.page_title(), "Cases", Some(&user), &body).into_response()
}

/// A case and its slides.
pub async fn case_page(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(number): Path<String>,
) -> Response {
    let case = match state.slides.cases().case(&number) {
        Ok(Some(case)) => case,
        Ok(None) => return WebError::NotFound(format!("no case {number}")).into_response(),
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    let mut rows = String::new();
    for id in &case.slide_ids {
        if let Ok(Some(record)) = state.slides.record(id) {
            rows.push_str(&format!(
                "<tr><td><a href=\"/view/{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
                record.id,
                long_name(&record.original_name),
                escape(&dimensions(&record)),
                record.imported_at.date()
            ));
        }
    }
    let head = grassroots_web::pages::headings(&["Slide", "Size", "Imported"]);
    let body =
        format!(r#"<div class="table-wrap"><table>{head}<tbody>{rows}</tbody></table></div>"#);
    page(
        &state.page_title(),
        &tr("Case {}").replace("{}", &case.number),
        Some(&user),
        &body,
    )
    .into_response()
}
