//! Consulting a referred radiology study through the hub: the expert's reformatting and volume
//! rendering pages (the viewer both nodes share, `grassroots_web::study_views`) get their
//! frames from a WebSocket here, which relays each wish to the referring edge as a
//! [`Message::StudyView`] on its own QUIC stream; the edge renders it (and refuses anything
//! not in its referral, or with burned-in annotation) and records it before it leaves. Only
//! rendered frames cross — never an object, a voxel or a UID — and the hub keeps none of
//! them: each frame goes from the edge's stream to the expert's socket, audited here (who,
//! which series, what view, the outcome) as tiles are.
//!
//! The socket behaves as the edge's own (`edge/src/render_socket.rs`) and speaks the same
//! protocol (`grassroots_web::render_wishes`): one wish in flight, only each view's latest
//! wish kept, so an expert on a thin link skips frames instead of queueing them; the browser's
//! scripts are the same.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use grassroots_web::i18n::tr;
use grassroots_web::pages::{escape, page};
use grassroots_web::render_wishes::{frame_message, refusal_message, Wish, Wishes, MAX_WISH_BYTES};
use grassroots_web::CurrentUser;
use grassroots_wire::referral::{ReferredSeries, RegionFigures, SeriesFigures, StackPicture};
use grassroots_wire::{ErrorCode, Message};

use crate::consult::{refuse, FetchFailure, EDGE_TIMEOUT};
use crate::referrals::HubReferral;
use crate::HubState;

/// A refusal: the status and the reason in words.
type Refused = (StatusCode, String);

/// The referral, if `user` holds it, it is not answered, and the series is one of its studies'.
fn held_series(
    state: &HubState,
    user: &str,
    referral_id: &str,
    study_key: &str,
    series_key: &str,
) -> Result<(HubReferral, ReferredSeries), Refused> {
    let referral = match state.referrals.get(referral_id) {
        Ok(Some(referral)) => referral,
        Ok(None) => return Err((StatusCode::NOT_FOUND, format!("no referral {referral_id}"))),
        Err(error) => return Err((StatusCode::INTERNAL_SERVER_ERROR, error.to_string())),
    };
    if referral.assigned_to.as_deref() != Some(user) {
        return Err((
            StatusCode::FORBIDDEN,
            format!("referral {referral_id} is not assigned to {user}"),
        ));
    }
    if referral.report.is_some() {
        return Err((
            StatusCode::GONE,
            format!("referral {referral_id} is answered: its consult is closed"),
        ));
    }
    let series = referral
        .referral
        .studies
        .iter()
        .filter(|study| study.study_key == study_key)
        .flat_map(|study| study.series.iter())
        .find(|series| series.series_key == series_key)
        .cloned();
    match series {
        Some(series) => Ok((referral, series)),
        None => Err((
            StatusCode::NOT_FOUND,
            format!(
                "series {series_key} of study {study_key} is not part of referral {referral_id}"
            ),
        )),
    }
}

/// What an edge sent for a view, made safe for a browser on the hub's origin: figures (of a
/// volume, a stack's pictures, a measured region) are parsed strictly and written anew; a
/// frame must be a JPEG.
fn relayable(kind: &str, data: Vec<u8>) -> Result<Vec<u8>, FetchFailure> {
    let refused = |e: grassroots_wire::WireError| {
        FetchFailure::Failed(format!("the edge's figures are refused: {e}"))
    };
    let written =
        |json: serde_json::Result<Vec<u8>>| json.map_err(|e| FetchFailure::Failed(e.to_string()));
    match kind {
        "describe" => {
            return written(serde_json::to_vec(
                &SeriesFigures::parse(&data).map_err(refused)?,
            ))
        }
        "stack" => {
            return written(serde_json::to_vec(
                &StackPicture::parse_all(&data).map_err(refused)?,
            ))
        }
        "region" => {
            return written(serde_json::to_vec(
                &RegionFigures::parse(&data).map_err(refused)?,
            ))
        }
        _ => {}
    }
    if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok(data)
    } else {
        Err(FetchFailure::Failed(
            "the edge's frame is not a JPEG".into(),
        ))
    }
}

/// Asks the referring edge for one view over its QUIC connection (one stream, interactive
/// priority).
async fn view_from_edge(
    state: &HubState,
    referral: &HubReferral,
    study_key: &str,
    series_key: &str,
    kind: &str,
    query: &str,
) -> Result<Vec<u8>, FetchFailure> {
    let Some(connection) = state.sites.connection(&referral.site) else {
        return Err(FetchFailure::Offline);
    };
    let request = Message::StudyView {
        referral_id: referral.referral.referral_id.clone(),
        study_key: study_key.to_string(),
        series_key: series_key.to_string(),
        kind: kind.to_string(),
        query: query.to_string(),
    };
    let exchange = async {
        let (mut send, mut recv) = grassroots_transport::framed::open(
            &connection,
            grassroots_transport::framed::priority::INTERACTIVE,
        )
        .await?;
        send.send(&request).await?;
        send.finish();
        recv.expect().await
    };
    match tokio::time::timeout(EDGE_TIMEOUT, exchange).await {
        Ok(Ok(Message::ConsultData { data })) => relayable(kind, data),
        Ok(Ok(Message::Refused { reason })) => Err(FetchFailure::Refused(reason)),
        // An edge older than study consults cannot read the request (protocol rule 3).
        Ok(Ok(Message::Error {
            code: ErrorCode::UnknownMessage,
            ..
        })) => Err(FetchFailure::Refused(
            "the referring edge runs an older release that cannot render views for the hub".into(),
        )),
        Ok(Ok(other)) => Err(FetchFailure::Failed(format!(
            "the edge answered {}",
            other.kind()
        ))),
        Ok(Err(error)) => Err(FetchFailure::Failed(format!("the edge: {error}"))),
        Err(_) => Err(FetchFailure::TimedOut),
    }
}

/// One view, checked, fetched and audited: the data, or the status and reason.
async fn audited_view(
    state: &HubState,
    user: &str,
    referral_id: &str,
    (study_key, series_key): (&str, &str),
    kind: &str,
    query: &str,
) -> Result<Vec<u8>, Refused> {
    let checked = if query.len() > grassroots_wire::message::MAX_VIEW_QUERY {
        Err((
            StatusCode::BAD_REQUEST,
            format!(
                "a view's query has at most {} bytes",
                grassroots_wire::message::MAX_VIEW_QUERY
            ),
        ))
    } else {
        held_series(state, user, referral_id, study_key, series_key)
    };
    let result = match checked {
        Ok((referral, _)) => {
            match view_from_edge(state, &referral, study_key, series_key, kind, query).await {
                Ok(data) => {
                    state.referrals.opened(referral_id);
                    Ok(data)
                }
                Err(failure) => Err(failure.status_and_reason(&referral.site)),
            }
        }
        Err(refused) => Err(refused),
    };
    let status = match &result {
        Ok(_) => 200,
        Err((status, _)) => status.as_u16(),
    };
    state
        .audit
        .record(
            user,
            referral_id,
            &format!("study {study_key}"),
            format!("{series_key} {kind}?{query}"),
            status,
        )
        .await;
    result
}

/// The links above a study viewer at the hub.
fn links(referral_id: &str, study: &str, series: &str, other: (&str, &'static str)) -> String {
    format!(
        r#"<p><a href="/consult/{r}">{back}</a> · <a href="/consult/{r}/studies/{s}/series/{se}/{path}">{label}</a></p>"#,
        r = escape(referral_id),
        s = escape(study),
        se = escape(series),
        back = tr("Back to the consult"),
        path = other.0,
        label = tr(other.1),
    )
}

/// The figures of a referred series, asked of the edge, or the page saying why there are none.
async fn figures_or_page(
    state: &HubState,
    user: &grassroots_web::accounts::Account,
    (referral_id, study, series): (&str, &str, &str),
    title: &'static str,
    top: &str,
) -> Result<SeriesFigures, Response> {
    let data = audited_view(
        state,
        &user.username,
        referral_id,
        (study, series),
        "describe",
        "",
    )
    .await;
    match data {
        Ok(json) => {
            SeriesFigures::parse(&json).map_err(|e| refuse(StatusCode::BAD_GATEWAY, e.to_string()))
        }
        // Said on a page, with the status: not here (404), answered (410), offline (503)...
        Err((status, reason)) => {
            let body = grassroots_web::study_views::viewer_off(
                "viewer-off",
                top,
                "This series cannot be viewed:",
                &reason,
            );
            Err((
                status,
                page(
                    &format!("Hub — {}", state.kit.network),
                    title,
                    Some(user),
                    &body,
                ),
            )
                .into_response())
        }
    }
}

/// `GET /consult/{referral}/studies/{study}/series/{series}`: the series' pictures one at a
/// time (any series: radiographs too).
pub(crate) async fn images_page(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((referral_id, study, series)): Path<(String, String, String)>,
) -> Response {
    let referred = match held_series(&state, &user.username, &referral_id, &study, &series) {
        Ok((_, referred)) => referred,
        Err((status, reason)) => return refuse(status, reason),
    };
    let mut top = format!(
        r#"<p><a href="/consult/{r}">{back}</a> · <span translate="no">{modality}</span>"#,
        r = escape(&referral_id),
        back = tr("Back to the consult"),
        modality = escape(&referred.modality),
    );
    if referred.volume {
        top.push_str(&format!(
            r#" · <a href="/consult/{r}/studies/{s}/series/{se}/mpr">{mpr}</a> · <a href="/consult/{r}/studies/{s}/series/{se}/3d">{volume}</a>"#,
            r = escape(&referral_id),
            s = escape(&study),
            se = escape(&series),
            mpr = tr("Reformatted views"),
            volume = tr("Volume rendering"),
        ));
    }
    top.push_str("</p>");
    let base = format!("/consult/{referral_id}/studies/{study}/series/{series}");
    let body = grassroots_web::study_views::images_body(&base, referred.images, &top);
    page(
        &format!("Hub — {}", state.kit.network),
        "The series' images",
        Some(&user),
        &body,
    )
    .into_response()
}

/// `GET /consult/{referral}/studies/{study}/series/{series}/stack`: each picture's size and
/// Pixel Spacing, in stack order, for the measuring tools (a length is measured in the
/// expert's browser from them).
pub(crate) async fn stack_figures(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((referral_id, study, series)): Path<(String, String, String)>,
) -> Response {
    figures_view(
        &state,
        &user.username,
        (&referral_id, &study, &series),
        "stack",
        "",
    )
    .await
}

/// `GET /consult/{referral}/studies/{study}/series/{series}/region?index=&x=&y=&width=&height=`:
/// the modality values (HU) of a rectangle of one picture (its own pixels), measured by the
/// referring edge.
pub(crate) async fn region_figures(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((referral_id, study, series)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    figures_view(
        &state,
        &user.username,
        (&referral_id, &study, &series),
        "region",
        &query,
    )
    .await
}

/// A view the edge answers with figures, as JSON for the page's script, or the refusal.
async fn figures_view(
    state: &HubState,
    user: &str,
    (referral_id, study, series): (&str, &str, &str),
    kind: &str,
    query: &str,
) -> Response {
    match audited_view(state, user, referral_id, (study, series), kind, query).await {
        Ok(json) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err((status, reason)) => refuse(status, reason),
    }
}

/// `GET /consult/{referral}/studies/{study}/series/{series}/mpr`
pub(crate) async fn mpr_page(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((referral_id, study, series)): Path<(String, String, String)>,
) -> Response {
    let top = links(&referral_id, &study, &series, ("3d", "Volume rendering"));
    let figures = match figures_or_page(
        &state,
        &user,
        (&referral_id, &study, &series),
        "Reformatted views",
        &top,
    )
    .await
    {
        Ok(figures) => figures,
        Err(response) => return response,
    };
    let body = grassroots_web::study_views::mpr_body(
        &format!("/consult/{referral_id}/studies/{study}/series/{series}/render"),
        &figures,
        &top,
        &format!(
            r#"<p class="muted">{}</p>"#,
            tr("Rendered at the referring site: only pictures cross, each one recorded there.")
        ),
    );
    page(
        &format!("Hub — {}", state.kit.network),
        "Reformatted views",
        Some(&user),
        &body,
    )
    .into_response()
}

/// `GET /consult/{referral}/studies/{study}/series/{series}/3d`
pub(crate) async fn volume_page(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((referral_id, study, series)): Path<(String, String, String)>,
) -> Response {
    let top = links(&referral_id, &study, &series, ("mpr", "Reformatted views"));
    let figures = match figures_or_page(
        &state,
        &user,
        (&referral_id, &study, &series),
        "Volume rendering",
        &top,
    )
    .await
    {
        Ok(figures) => figures,
        Err(response) => return response,
    };
    let body = grassroots_web::study_views::volume_body(
        &format!("/consult/{referral_id}/studies/{study}/series/{series}/render"),
        &figures,
        &top,
    );
    page(
        &format!("Hub — {}", state.kit.network),
        "Volume rendering",
        Some(&user),
        &body,
    )
    .into_response()
}

/// `GET /consult/{referral}/studies/{study}/series/{series}/render` (WebSocket).
pub(crate) async fn render_ws(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((referral_id, study, series)): Path<(String, String, String)>,
    headers: axum::http::HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    // Checked before the upgrade is: a plain request (the page asking why its socket was
    // refused) gets the same answer as the socket.
    if let Err((status, reason)) =
        held_series(&state, &user.username, &referral_id, &study, &series)
    {
        return refuse(status, reason);
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let session = grassroots_web::auth::session_of(&headers);
    let expert = user.username.clone();
    upgrade
        .max_message_size(MAX_WISH_BYTES)
        .on_upgrade(move |socket| {
            relay(state, expert, session, (referral_id, study, series), socket)
        })
}

/// A relayed wish's outcome: the wish, the JPEG or the reason, and the time it took.
type Relayed = (Wish, Result<Vec<u8>, String>, f64);

/// The relay in flight, cancelled if the socket ends first.
struct InFlight(tokio::task::JoinHandle<Relayed>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn relay(
    state: Arc<HubState>,
    expert: String,
    session: Option<String>,
    (referral_id, study, series): (String, String, String),
    mut socket: WebSocket,
) {
    let mut pending = Wishes::default();
    let mut in_flight: Option<(InFlight, Wish)> = None;
    loop {
        if let Some(wish) = in_flight.is_none().then(|| pending.take_next()).flatten() {
            // Every wish is checked: a session that ended, or a case reassigned or answered,
            // stops the frames.
            let signed_in = session
                .as_deref()
                .is_none_or(|token| state.accounts.session_allows(token, crate::http::EXPERTS));
            if !signed_in {
                let end = serde_json::json!({ "error": "your session has ended: sign in again", "ended": true });
                let _ = socket.send(WsMessage::Text(end.to_string().into())).await;
                return;
            }
            let (state, expert, ids) = (
                state.clone(),
                expert.clone(),
                (referral_id.clone(), study.clone(), series.clone()),
            );
            let asked = wish.clone();
            let task = tokio::spawn(async move {
                let started = Instant::now();
                let result = audited_view(
                    &state,
                    &expert,
                    &ids.0,
                    (&ids.1, &ids.2),
                    &wish.kind,
                    &wish.query,
                )
                .await
                .map_err(|(_, reason)| reason);
                (wish, result, started.elapsed().as_secs_f64() * 1000.0)
            });
            in_flight = Some((InFlight(task), asked));
        }
        let finished = async {
            match in_flight.as_mut() {
                Some((handle, _)) => Some((&mut handle.0).await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = finished => {
                let Some((_, asked)) = in_flight.take() else { continue };
                let message = match done {
                    Some(Ok((wish, Ok(jpeg), ms))) => frame_message(&wish, &jpeg, ms),
                    Some(Ok((wish, Err(reason), _))) => refusal_message(&wish.view, wish.seq, &wish.query, reason),
                    // A relay that failed outright still answers its wish.
                    _ => refusal_message(&asked.view, asked.seq, &asked.query, "the relay failed".into()),
                };
                if socket.send(message).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    if let Err(refused) = pending.offer(&text, &["image", "plane", "volume"]) {
                        if socket.send(refused).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_figures_and_jpegs_are_relayed() {
        let figures = br#"{"axial":[359.0,359.0],"coronal":[359.0,330.0],"sagittal":[359.0,330.0],"along_patient_axes":true}"#;
        assert!(relayable("describe", figures.to_vec()).is_ok());
        // Anything else in the figures, or absurd sizes, is refused.
        let extra = br#"{"axial":[1,1],"coronal":[1,1],"sagittal":[1,1],"along_patient_axes":true,"name":"<script>"}"#;
        assert!(relayable("describe", extra.to_vec()).is_err());
        let huge =
            br#"{"axial":[1e300,1],"coronal":[1,1],"sagittal":[1,1],"along_patient_axes":true}"#;
        assert!(relayable("describe", huge.to_vec()).is_err());
        assert!(relayable("plane", b"<html><script>".to_vec()).is_err());
        assert!(relayable("volume", vec![0xFF, 0xD8, 0xFF, 0xE0]).is_ok());
        // The measuring tools' figures: written anew, and only their own fields.
        let stack = br#"[{"columns":512,"rows":512,"spacing":[0.7,0.7]}]"#;
        assert!(relayable("stack", stack.to_vec()).is_ok());
        let named = br#"[{"columns":512,"rows":512,"spacing":null,"patient":"Wang"}]"#;
        assert!(relayable("stack", named.to_vec()).is_err());
        let region = br#"{"pixels":4,"mean":1.0,"min":0.0,"max":2.0,"standard_deviation":1.0}"#;
        assert!(relayable("region", region.to_vec()).is_ok());
        assert!(relayable("region", b"<script>alert(1)</script>".to_vec()).is_err());
        assert!(relayable("region", vec![0xFF, 0xD8, 0xFF, 0xE0]).is_err());
    }
}
