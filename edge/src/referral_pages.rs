//! The referring doctor's pages: `/referrals` (every referral of this edge with its state, and
//! the "Refer to hub" form) and `/referrals/{id}` (what crossed and what stayed, the timeline
//! with turnaround, and the expert's answer with the annotations drawn on the slide).
//! The form posts to `POST /api/v1/referrals` (`referrals.rs`), where the privacy line is.

use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use grassroots_web::i18n::{tr, tr_any};
use grassroots_web::pages::{self, escape, page, rfc3339};
use grassroots_web::{CurrentUser, WebError};

use crate::outbox::{OutboxEntry, OutboxState};
use crate::referrals::LocalReferral;
use crate::slides::SlideState;
use crate::EdgeState;

/// Where a referral stands, in words.
fn stage(local: &LocalReferral, delivery: Option<&OutboxEntry>) -> String {
    match (&local.report, delivery) {
        (Some(_), _) => tr("answered").into(),
        (None, Some(entry)) if entry.state == OutboxState::Refused => format!(
            r#"<span class="error">{}</span>"#,
            tr("refused by the hub: {}").replace(
                "{}",
                &escape(entry.last_error.as_deref().unwrap_or(tr("no reason given")))
            )
        ),
        (None, Some(entry)) if entry.delivered_at.is_some() => tr("with the hub").into(),
        (None, _) => tr("waiting for the link").into(),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct ListQuery {
    slide: Option<String>,
    /// A study to tick in the form (from the study page's "Refer to the hub").
    study: Option<String>,
}

/// Studies the referral form offers besides the one asked for: the most recently received.
const RECENT_STUDIES: usize = 20;

/// `GET /referrals[?slide=ID][&study=UID]`
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
            r#"<tr><td><a href="/referrals/{id}">{case}</a></td><td>{name}</td><td>{question}</td><td>{urgency}</td><td>{referred}</td><td>{stage}</td></tr>"#,
            id = escape(&local.referral.referral_id),
            case = escape(&local.case_number),
            name = escape(&local.patient_name),
            question = escape(&local.referral.question),
            urgency = tr_any(&format!("{:?}", local.referral.urgency)),
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
                .map(|c| format!(" {}", tr("(case {})").replace("{}", &escape(c))))
                .unwrap_or_default(),
        ));
    }
    // The study asked for, and the most recent ones (an archive holds thousands).
    let mut studies = String::new();
    let recent = state.studies.index.studies().unwrap_or_default();
    let chosen = recent
        .iter()
        .filter(|s| query.study.as_deref() == Some(s.study.study_instance_uid.as_str()))
        .cloned();
    let shown: Vec<_> = chosen
        .chain(
            recent
                .iter()
                .filter(|s| query.study.as_deref() != Some(s.study.study_instance_uid.as_str()))
                .take(RECENT_STUDIES)
                .cloned(),
        )
        .collect();
    for summary in shown {
        let r = &summary.study;
        let checked = if query.study.as_deref() == Some(r.study_instance_uid.as_str()) {
            " checked"
        } else {
            ""
        };
        studies.push_str(&format!(
            r#"<label><input type="checkbox" name="study" value="{uid}"{checked}> <span translate="no">{modalities} {date} {accession} {description}</span></label><br>"#,
            uid = escape(&r.study_instance_uid),
            modalities = escape(&summary.modalities.join("/")),
            date = escape(&r.study_date),
            accession = escape(&r.accession_number),
            description = escape(&r.study_description),
        ));
    }
    let studies = if studies.is_empty() {
        String::new()
    } else {
        format!(
            r#"<fieldset><legend>{}</legend>{studies}<p class="muted">{}</p></fieldset>"#,
            tr("Studies"),
            tr("A study crosses as keyed series without names, dates or UIDs; the expert sees pictures this edge renders. Series that may carry burned-in text stay here.")
        )
    };
    let body = format!(
        r#"<div class="table-wrap"><table id="referrals"><thead><tr><th>Case</th><th>Patient</th><th>Question</th><th>Urgency</th><th>Referred</th><th>State</th></tr></thead><tbody>{rows}</tbody></table></div>
<div class="card"><h2>Refer to the hub</h2>
<p class="muted">{stays_at_edge}</p>
<form id="refer-form">
<label>Case (pathology number) <input name="case_number" required></label><br>
<label>Patient name <input name="patient_name"></label> <label>Patient id <input name="patient_id"></label><br>
<label>Age (years) <input name="age_years" type="number" min="0" max="130"></label>
<label>Sex <select name="sex"><option value="female">Female</option><option value="male">Male</option><option value="unknown">Unknown</option></select></label><br>
<label>Specimen <input name="specimen" required size="40"></label><br>
<label>Question for the expert<br><textarea name="question" rows="3" cols="60" required></textarea></label><br>
<label>Urgency <select name="urgency"><option value="routine">Routine</option><option value="priority">Priority</option><option value="urgent">Urgent</option></select></label><br>
<fieldset><legend>Slides</legend>{slides}</fieldset>
{studies}
<button type="submit" id="refer-review-button">Review what crosses to the hub</button>
<div id="refer-review" hidden><h3>Exactly this crosses to the hub</h3><pre id="refer-crosses"></pre>
<p class="muted">{stays_here}</p>
<button type="button" id="refer-send">Send to the hub</button> <button type="button" id="refer-edit">Edit</button></div>
</form></div>
<script src="{prefix}/web/refer.js"></script>"#,
        prefix = crate::assets::PREFIX,
        stays_at_edge = tr("The patient's name and id and the case number stay at this edge. The hub gets a pseudonym, the age band, sex, specimen, question and the slides' tiles on demand."),
        stays_here = tr("Stays here: the case number, the patient's name and id, the exact age."),
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
                r#"<div class="card" id="refusal" role="alert"><h2>Refused by the hub</h2><p class="error">{}</p><p>{}</p></div>"#,
                escape(entry.last_error.as_deref().unwrap_or(tr("no reason given"))),
                tr("No expert has seen this referral. Correct what the hub names and refer the case again.")
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
                r#"<li><a href="/view/{id}">{id_short}</a> · {w}×{h}{ai} · <a href="/view/{id}?referral={referral}&amp;follow=true">{follow}</a></li>"#,
                follow = tr("follow the expert live"),
                referral = escape(&id),
                id = escape(&s.slide_id),
                id_short = escape(&s.slide_id[..12.min(s.slide_id.len())]),
                w = s.width,
                h = s.height,
                ai = match (&s.ai_triage, s.ai_score) {
                    (Some(t), Some(score)) => format!(" · AI {} {score:.2}", escape(&tr_any(t))),
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
                        escape(&tr_any(f["geometry"]["type"].as_str().unwrap_or("?"))),
                        escape(
                            f["properties"]["classification"]["name"]
                                .as_str()
                                .unwrap_or(tr("annotation"))
                        )
                    )
                })
                .collect();
            let viewer_link = r
                .slides
                .first()
                .map(|s| {
                    format!(
                        r#"<p><a href="/view/{}?referral={}">{}</a></p>"#,
                        escape(&s.slide_id),
                        escape(&id),
                        tr("Open the slide with the expert's annotations")
                    )
                })
                .unwrap_or_default();
            let signature = tr("for {expert} at {time} by the network's hub; signature and digest {digest} verified on arrival")
                .replace(
                    "{digest}",
                    &format!(
                        "<code>{}</code>",
                        escape(&report.digest[..16.min(report.digest.len())])
                    ),
                )
                .replace("{time}", &escape(&report.answered_at))
                .replace("{expert}", &escape(&report.expert));
            format!(
                r#"<div class="card" id="answer"><h2>The expert's answer</h2><dl class="facts"><dt>Category</dt><dd>{category}</dd><dt>Diagnosis</dt><dd>{diagnosis}</dd><dt>Recommendations</dt><dd>{recommendations}</dd><dt>Expert</dt><dd>{expert}</dd><dt>Signed</dt><dd>{signature}</dd></dl><h3>{annotations_heading}</h3><ul>{annotations}</ul>{viewer_link}</div>"#,
                annotations_heading =
                    tr("Annotations ({})").replace("{}", &features.len().to_string()),
                category = tr_any(&format!("{:?}", report.category)),
                diagnosis = escape(&report.diagnosis),
                recommendations = escape(&report.recommendations),
                expert = escape(&report.expert),
            )
        }
        None => format!(
            r#"<div class="card"><h2>The expert's answer</h2><p class="muted">{}</p></div>"#,
            tr("Not answered yet.")
        ),
    };
    let body = format!(
        r#"<div class="panels" style="display:grid;grid-template-columns:repeat(auto-fit,minmax(18rem,1fr));gap:1rem">
<div class="card"><h2>Case (stays here)</h2><dl class="facts"><dt>Case</dt><dd>{case}</dd><dt>Patient</dt><dd>{name} · {pid}</dd><dt>Referred by</dt><dd>{by}</dd></dl></div>
<div class="card"><h2>What the hub got</h2><dl class="facts"><dt>Pseudonym</dt><dd><code>{pseudonym}</code></dd><dt>Patient</dt><dd>{age} · {sex}</dd><dt>Specimen</dt><dd>{specimen}</dd><dt>Question</dt><dd>{question}</dd><dt>Urgency</dt><dd>{urgency}</dd><dt>Slides</dt><dd><ul>{slides}</ul></dd></dl></div>
{refusal}<div class="card"><h2>Timeline</h2>{timeline}</div>
<div class="card" id="egress"><h2>What left this edge</h2><p>{egress}</p><p class="muted">{egress_note}</p></div>
{answer}
</div>"#,
        egress = match state.egress.of_referral(&id) {
            Ok(items) if items.is_empty() =>
                tr("Nothing yet: only the referral's text and slide geometry.").to_string(),
            Ok(items) => tr("{count} tiles and descriptors, {size} KiB, from {from} to {to}")
                .replace("{count}", &items.len().to_string())
                .replace(
                    "{size}",
                    &format!(
                        "{:.1}",
                        items.iter().map(|e| e.bytes).sum::<u64>() as f64 / 1024.0
                    ),
                )
                .replace("{from}", &escape(&rfc3339(items[0].at)))
                .replace("{to}", &escape(&rfc3339(items[items.len() - 1].at))),
            Err(error) => escape(&tr("cannot read the record: {}").replace("{}", &error.to_string())),
        },
        egress_note = tr("Every tile the expert's consult fetched is recorded here before it leaves; the list is at {}. No pixel leaves once the referral is answered.")
            .replace(
                "{}",
                &format!(
                    r#"<a href="/api/v1/referrals/{}/egress">/api/v1/referrals/…/egress</a>"#,
                    escape(&id)
                ),
            ),
        case = escape(&local.case_number),
        name = escape(&local.patient_name),
        pid = escape(&local.patient_id),
        by = escape(&local.referred_by),
        pseudonym = escape(&r.case_pseudonym[..16.min(r.case_pseudonym.len())]),
        age = escape(&r.age_band),
        sex = tr_any(&format!("{:?}", r.sex)),
        specimen = escape(&r.specimen),
        question = escape(&r.question),
        urgency = tr_any(&format!("{:?}", r.urgency)),
    );
    page(
        &state.page_title(),
        &tr("Referral of case {}").replace("{}", &local.case_number),
        Some(&user),
        &body,
    )
    .into_response()
}
