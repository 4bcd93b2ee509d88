//! Federated rounds in the hub's web UI and API: `GET /api/v1/rounds` (each round: id, state,
//! base and resulting version, participants, refusals, metrics, time in each phase), `POST
//! /api/v1/rounds` (admins: start one now) and `/rounds`. Site ids, digests and figures only.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use grassroots_web::i18n::{tr, tr_any};
use grassroots_web::openapi::ApiError;
use grassroots_web::pages::{escape, page};
use grassroots_web::{CurrentUser, WebError};
use serde::Serialize;

use crate::rounds::{PrivacySpent, RoundSummary};
use crate::{HubError, HubState};

/// The answer of `GET /api/v1/rounds`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RoundList {
    /// Every round, newest first.
    pub rounds: Vec<RoundSummary>,
    /// The privacy the network has spent, when it runs with differential privacy.
    pub privacy: Option<PrivacySpent>,
}

/// `GET /api/v1/rounds`: newest first.
#[utoipa::path(get, path = "/api/v1/rounds", tag = "rounds",
    responses(
        (status = 200, description = "Every round, newest first, and the privacy spent", body = RoundList),
        grassroots_web::openapi::Refusals))]
pub(crate) async fn rounds_api(State(state): State<Arc<HubState>>) -> Response {
    match state.rounds.records() {
        Ok(records) => {
            let mut rounds: Vec<_> = records.iter().map(|r| r.summary()).collect();
            rounds.reverse();
            let privacy = state.rounds.privacy_spent().ok().flatten();
            Json(RoundList { rounds, privacy }).into_response()
        }
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `POST /api/v1/rounds` (admins): plans and starts a round now; 409 with the reason when
/// one cannot start (a round running, too few sites, no released base, no signing key).
#[utoipa::path(post, path = "/api/v1/rounds", tag = "rounds",
    responses(
        (status = 201, description = "The round, started", body = RoundSummary),
        (status = 409, description = "No round can start now: one is running, no version is released, too few sites run it, or the privacy budget is spent", body = ApiError),
        grassroots_web::openapi::Refusals))]
pub(crate) async fn start_api(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    let worker = state.clone();
    match tokio::task::spawn_blocking(move || crate::rounds::start_round(&worker)).await {
        Ok(Ok(record)) => {
            tracing::info!(round = record.round.plan.round, by = %user.username, "round started by hand");
            (StatusCode::CREATED, Json(record.summary())).into_response()
        }
        Ok(Err(HubError::Config(reason))) => {
            (StatusCode::CONFLICT, Json(ApiError { error: reason })).into_response()
        }
        Ok(Err(error)) => WebError::Internal(error.to_string()).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

fn short(digest: &str) -> String {
    digest.chars().take(12).collect()
}

/// `/rounds`: every round with its participants, outcome and validation accuracy.
pub(crate) async fn rounds_page(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    let records = match state.rounds.records() {
        Ok(records) => records,
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    let mut rows = String::new();
    for record in records.iter().rev() {
        let s = record.summary();
        let outcome = match (&s.result, &s.reason) {
            (Some(_), _) if s.awaiting_approval.is_some() => tr("awaiting offline approval: {}")
                .replace(
                    "{}",
                    &format!(
                        "<code>{}</code>",
                        escape(s.awaiting_approval.as_deref().unwrap_or_default())
                    ),
                ),
            (Some(version), _) => format!(
                "<code>{}</code> {}",
                short(version),
                if s.released {
                    tr("(released)")
                } else {
                    tr("(not released)")
                }
            ),
            (None, Some(reason)) => format!("<span class=\"error\">{}</span>", escape(reason)),
            _ => "—".into(),
        };
        let refused = s
            .refused
            .iter()
            .map(|r| format!("{}: {}", escape(&r.site), escape(&r.reason)))
            .chain(s.excluded.iter().map(|(site, why)| {
                tr("{site} excluded: {why}")
                    .replace("{why}", &escape(why))
                    .replace("{site}", &escape(site))
            }))
            .collect::<Vec<_>>()
            .join("<br>");
        let accuracy = |name: &str| {
            s.metrics
                .get(name)
                .map(|a| format!("{:.1}%", a * 100.0))
                .unwrap_or_else(|| "—".into())
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{} → {}</td><td>{} s / {}</td><td class=\"muted\">{}</td></tr>",
            s.id,
            escape(&tr_any(&s.state)),
            short(&s.base),
            outcome,
            tr("{count} of {total}")
                .replace("{count}", &s.updates.len().to_string())
                .replace("{total}", &s.participants.len().to_string()),
            accuracy("base_validation_accuracy"),
            accuracy("validation_accuracy"),
            s.seconds_training.unwrap_or(0),
            s.seconds_aggregating
                .map(|a| format!("{a} s"))
                .unwrap_or_else(|| "—".into()),
            refused,
        ));
    }
    if rows.is_empty() {
        rows.push_str(&format!(
            r#"<tr><td colspan="8" class="muted">{}</td></tr>"#,
            tr("No round yet. Rounds start on their schedule ({flag}) or with {api}, once a model version is released and enough sites run it.")
                .replace("{flag}", "<code>--rounds-every-s</code>")
                .replace("{api}", "<code>POST /api/v1/rounds</code>")
        ));
    }
    let privacy = match state.rounds.privacy_spent().ok().flatten() {
        Some(p) => format!(
            r#"<div class="card"><dl class="facts"><dt>Differential privacy</dt><dd>{}</dd></dl></div>"#,
            tr("epsilon {spent} spent of {budget} (delta {delta}) over {rounds} rounds")
                .replace("{spent}", &format!("{:.2}", p.epsilon))
                .replace("{budget}", &format!("{:.2}", p.epsilon_budget))
                .replace("{delta}", &format!("{:e}", p.delta))
                .replace("{rounds}", &p.rounds.to_string())
        ),
        None => String::new(),
    };
    let prefix = grassroots_web::assets::PREFIX;
    let live = grassroots_web::pages::live_updates(15);
    let body = format!(
        r#"{live}<link rel="stylesheet" href="{prefix}/uplot/uPlot.min.css">{privacy}
<div class="card"><h2>Validation accuracy by round</h2><div id="round-chart" data-api="/api/v1/rounds"><p class="muted">{chart_waits}</p></div></div>
<script src="{prefix}/uplot/uPlot.iife.min.js"></script>
<script src="{prefix}/web/rounds.js"></script>
<div class="table-wrap"><table><thead><tr><th>Round</th><th>State</th><th>Base</th><th>Result</th><th>Updates</th><th>Validation accuracy</th><th>Training / aggregating</th><th>Refused</th></tr></thead>
<tbody>{rows}</tbody></table></div>"#,
        chart_waits = tr("The chart appears when a round has finished."),
    );
    page(
        &format!("Hub — {}", state.kit.network),
        "Federated rounds",
        Some(&user),
        &body,
    )
    .into_response()
}
