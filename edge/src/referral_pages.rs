//! The referring doctor's pages: `/referrals` (every referral of this edge with its state, and
//! the "Refer to hub" form) and `/referrals/{id}` (what crossed and what stayed, the timeline
//! with turnaround, and the expert's answer with the annotations drawn on the slide).
//! The form posts to `POST /api/v1/referrals` (`referrals.rs`), where the privacy line is.

use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use grassroots_web::pages::{self, escape, page, rfc3339};
use grassroots_web::{CurrentUser, WebError};

use crate::outbox::{OutboxEntry, OutboxState};
use crate::referrals::LocalReferral;
use crate::slides::SlideState;
use crate::EdgeState;

/// Where a referral stands, in words.
fn stage(local: &LocalReferral, delivery: Option<&OutboxEntry>) -> String {
    match (&local.report, delivery) {
        (Some(_), _) => "answered".into(),
        (None, Some(entry)) if entry.state == OutboxState::Refused => format!(
            r#"<span class="error">refused by the hub: {}</span>"#,
            escape(entry.last_error.as_deref().unwrap_or("no reason given"))
        ),
        (None, Some(entry)) if entry.delivered_at.is_some() => "with the hub".into(),
        (None, _) => "waiting for the link".into(),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct ListQuery {
    slide: Option<String>,
}

/// `GET /referrals[?slide=ID]`
pub(crate) async fn referrals_page(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Query(query): Query<ListQuery>,
) -> Response {
    let all = match state.referrals.list() {
        Ok(all) => all,
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    let statuses = state.outbox.statuses().unwrap_or_default();
    let mut rows = String::new();
    for local in &all {
        let delivery = statuses
            .iter()
            .find(|s| s.entry.id == local.outbox_id)
            .map(|s| &s.entry);
        rows.push_str(&format!(
            r#"<tr><td><a href="/referrals/{id}">{case}</a></td><td>{name}</td><td>{question}</td><td>{urgency:?}</td><td>{referred}</td><td>{stage}</td></tr>"#,
            id = escape(&local.referral.referral_id),
            case = escape(&local.case_number),
            name = escape(&local.patient_name),
            question = escape(&local.referral.question),
            urgency = local.referral.urgency,
            referred = grassroots_web::pages::when(&local.referral.referred_at),
            stage = stage(local, delivery),
        ));
    }
    if all.is_empty() {
        rows.push_str(&format!(
            r#"<tr><td colspan="6" class="empty">{}</td></tr>"#,
            grassroots_web::i18n::tr(r#"No referrals yet. Refer a case to the hub with the form below: the expert's answer comes back here."#)
        ));
    }
    let mut slides = String::new();
    for record in state.slides.records().unwrap_or_default() {
        if record.state != SlideState::Ready {
            continue;
        }
        let checked = if query.slide.as_deref() == Some(record.id.as_str()) {
            " checked"
        } else {
            ""
        };
        slides.push_str(&format!(
            r#"<label><input type="checkbox" name="slide" value="{id}"{checked}> {name}{case}</label><br>"#,
            id = escape(&record.id),
            name = escape(&record.original_name),
            case = record
                .case_number
                .as_deref()
                .map(|c| format!(" (case {})", escape(c)))
                .unwrap_or_default(),
        ));
    }
    let body = format!(
        r#"<div class="table-wrap"><table id="referrals"><thead><tr><th>Case</th><th>Patient</th><th>Question</th><th>Urgency</th><th>Referred</th><th>State</th></tr></thead><tbody>{rows}</tbody></table></div>
<div class="card"><h2>Refer to the hub</h2>
<p class="muted">The patient's name and id and the case number stay at this edge. The hub gets a pseudonym, the age band, sex, specimen, question and the slides' tiles on demand.</p>
<form id="refer-form">
<label>Case (pathology number) <input name="case_number" required></label><br>
<label>Patient name <input name="patient_name"></label> <label>Patient id <input name="patient_id"></label><br>
<label>Age (years) <input name="age_years" type="number" min="0" max="130"></label>
<label>Sex <select name="sex"><option value="female">Female</option><option value="male">Male</option><option value="unknown">Unknown</option></select></label><br>
<label>Specimen <input name="specimen" required size="40"></label><br>
<label>Question for the expert<br><textarea name="question" rows="3" cols="60" required></textarea></label><br>
<label>Urgency <select name="urgency"><option value="routine">Routine</option><option value="priority">Priority</option><option value="urgent">Urgent</option></select></label><br>
<fieldset><legend>Slides</legend>{slides}</fieldset>
<button type="submit">Review what crosses to the hub</button> <span id="refer-result" role="status"></span>
<div id="refer-review" hidden><h3>Exactly this crosses to the hub</h3><pre id="refer-crosses"></pre>
<p class="muted">Stays here: the case number, the patient's name and id, the exact age.</p>
<button type="button" id="refer-send">Send to the hub</button> <button type="button" id="refer-edit">Edit</button></div>
</form></div>
<script src="{prefix}/web/refer.js"></script>"#,
        prefix = crate::assets::PREFIX,
    );
    page(&state.page_title(), "Referrals", Some(&user), &body).into_response()
}

/// `GET /referrals/{id}`
pub(crate) async fn referral_page(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> Response {
    let local = match state.referrals.get(&id) {
        Ok(Some(local)) => local,
        Ok(None) => return WebError::NotFound(format!("no referral {id}")).into_response(),
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    let r = &local.referral;
    let delivery = state.outbox.entry(&local.outbox_id).ok().flatten();
    let delivered_at = delivery
        .as_ref()
        .and_then(|entry| entry.delivered_at)
        .map(rfc3339);
    let refusal = delivery
        .filter(|entry| entry.state == OutboxState::Refused)
        .map(|entry| {
            format!(
                r#"<div class="card" id="refusal" role="alert"><h2>Refused by the hub</h2><p class="error">{}</p><p>No expert has seen this referral. Correct what the hub names and refer the case again.</p></div>"#,
                escape(entry.last_error.as_deref().unwrap_or("no reason given"))
            )
        })
        .unwrap_or_default();
    let timeline = pages::timeline(
        &[
            ("Referred", Some(r.referred_at.clone())),
            ("Delivered to the hub", delivered_at),
            (
                "Answered by the expert",
                local.report.as_ref().map(|r| r.answered_at.clone()),
            ),
            (
                "Answer received here",
                local.report_received_at.map(rfc3339),
            ),
        ],
        &[("Turnaround", 3)],
    );
    let slides: String = r
        .slides
        .iter()
        .map(|s| {
            format!(
                r#"<li><a href="/view/{id}">{id_short}</a> · {w}×{h}{ai} · <a href="/view/{id}?referral={referral}&amp;follow=true">follow the expert live</a></li>"#,
                referral = escape(&id),
                id = escape(&s.slide_id),
                id_short = escape(&s.slide_id[..12.min(s.slide_id.len())]),
                w = s.width,
                h = s.height,
                ai = match (&s.ai_triage, s.ai_score) {
                    (Some(t), Some(score)) => format!(" · AI {} {score:.2}", escape(t)),
                    _ => String::new(),
                },
            )
        })
        .collect();
    let answer = match &local.report {
        Some(report) => {
            let features = report
                .annotations_geojson
                .as_deref()
                .and_then(|g| serde_json::from_str::<serde_json::Value>(g).ok())
                .and_then(|g| g["features"].as_array().cloned())
                .unwrap_or_default();
            let annotations: String = features
                .iter()
                .map(|f| {
                    format!(
                        "<li>{} · {}</li>",
                        escape(f["geometry"]["type"].as_str().unwrap_or("?")),
                        escape(
                            f["properties"]["classification"]["name"]
                                .as_str()
                                .unwrap_or("annotation")
                        )
                    )
                })
                .collect();
            let viewer_link = r
                .slides
                .first()
                .map(|s| {
                    format!(
                        r#"<p><a href="/view/{}?referral={}">Open the slide with the expert's annotations</a></p>"#,
                        escape(&s.slide_id),
                        escape(&id)
                    )
                })
                .unwrap_or_default();
            let signature = format!(
                "for {} at {} by the network's hub; signature and digest <code>{}</code> verified on arrival",
                escape(&report.expert),
                escape(&report.answered_at),
                escape(&report.digest[..16.min(report.digest.len())])
            );
            format!(
                r#"<div class="card" id="answer"><h2>The expert's answer</h2><dl class="facts"><dt>Category</dt><dd>{category:?}</dd><dt>Diagnosis</dt><dd>{diagnosis}</dd><dt>Recommendations</dt><dd>{recommendations}</dd><dt>Expert</dt><dd>{expert}</dd><dt>Signed</dt><dd>{signature}</dd></dl><h3>Annotations ({count})</h3><ul>{annotations}</ul>{viewer_link}</div>"#,
                category = report.category,
                diagnosis = escape(&report.diagnosis),
                recommendations = escape(&report.recommendations),
                expert = escape(&report.expert),
                count = features.len(),
            )
        }
        None => r#"<div class="card"><h2>The expert's answer</h2><p class="muted">Not answered yet.</p></div>"#.into(),
    };
    let body = format!(
        r#"<div class="panels" style="display:grid;grid-template-columns:repeat(auto-fit,minmax(18rem,1fr));gap:1rem">
<div class="card"><h2>Case (stays here)</h2><dl class="facts"><dt>Case</dt><dd>{case}</dd><dt>Patient</dt><dd>{name} · {pid}</dd><dt>Referred by</dt><dd>{by}</dd></dl></div>
<div class="card"><h2>What the hub got</h2><dl class="facts"><dt>Pseudonym</dt><dd><code>{pseudonym}</code></dd><dt>Patient</dt><dd>{age} · {sex:?}</dd><dt>Specimen</dt><dd>{specimen}</dd><dt>Question</dt><dd>{question}</dd><dt>Urgency</dt><dd>{urgency:?}</dd><dt>Slides</dt><dd><ul>{slides}</ul></dd></dl></div>
{refusal}<div class="card"><h2>Timeline</h2>{timeline}</div>
<div class="card" id="egress"><h2>What left this edge</h2><p>{egress}</p><p class="muted">Every tile the expert's consult fetched is recorded here before it leaves; the list is at <a href="/api/v1/referrals/{id_attr}/egress">/api/v1/referrals/…/egress</a>. No pixel leaves once the referral is answered.</p></div>
{answer}
</div>"#,
        egress = match state.egress.of_referral(&id) {
            Ok(items) if items.is_empty() =>
                "Nothing yet: only the referral's text and slide geometry.".to_string(),
            Ok(items) => format!(
                "{} tiles and descriptors, {:.1} KiB, from {} to {}",
                items.len(),
                items.iter().map(|e| e.bytes).sum::<u64>() as f64 / 1024.0,
                escape(&rfc3339(items[0].at)),
                escape(&rfc3339(items[items.len() - 1].at)),
            ),
            Err(error) => escape(&format!("cannot read the record: {error}")),
        },
        id_attr = escape(&id),
        case = escape(&local.case_number),
        name = escape(&local.patient_name),
        pid = escape(&local.patient_id),
        by = escape(&local.referred_by),
        pseudonym = escape(&r.case_pseudonym[..16.min(r.case_pseudonym.len())]),
        age = escape(&r.age_band),
        sex = r.sex,
        specimen = escape(&r.specimen),
        question = escape(&r.question),
        urgency = r.urgency,
    );
    page(
        &state.page_title(),
        &format!("Referral of case {}", local.case_number),
        Some(&user),
        &body,
    )
    .into_response()
}
