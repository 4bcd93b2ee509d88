//! One WebSocket per viewer (`/studies/{study}/series/{series}/render`): the reformatting and
//! volume-rendering pages send their wishes on it (a view's name, a sequence number, and the
//! same query the `mpr.jpg` and `volume.jpg` resources take) and receive the rendered frames.
//!
//! The socket renders one frame at a time and keeps only each view's latest wish: a viewer
//! that drags faster than the edge renders skips the frames in between instead of queueing
//! them, so its latency stays one frame, whatever the load. Renderings share the edge's
//! renderer places (one per core) with every other viewer.
//!
//! The messages and the keeping of wishes are the protocol both nodes speak
//! (`grassroots_web::render_wishes`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use grassroots_dicom::volume::Volume;
use grassroots_dicom::DicomError;
use grassroots_web::render_wishes::{frame_message, refusal_message, Wish, Wishes, MAX_WISH_BYTES};

use crate::study_viewer::{plane_jpeg, renderers, volume_of, PlaneQuery};
use crate::volume_viewer::{volume_jpeg, VolumeQuery};
use crate::EdgeState;

/// How often the socket checks that its browser session still holds.
const SESSION_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /studies/{study}/series/{series}/render` (WebSocket).
pub(crate) async fn render_ws(
    State(state): State<Arc<EdgeState>>,
    Path((study, series)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    // A series that is no volume (or none at all) is refused before the upgrade, with why;
    // a plain request (the page asking why its socket was refused) gets the same answer.
    if let Err(response) = volume_of(&state, &study, &series).await {
        return response;
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let session = grassroots_web::auth::session_of(&headers);
    let accounts = state.accounts.clone();
    let signed_in = move || {
        session
            .as_deref()
            .is_none_or(|token| accounts.session_allows(token, crate::http::STAFF))
    };
    upgrade
        .max_message_size(MAX_WISH_BYTES)
        .on_upgrade(move |socket| serve(state, study, series, socket, signed_in))
}

/// Renders a view of `volume`: `kind` `plane` or `volume`, with the query the `mpr.jpg` or
/// `volume.jpg` resource takes (blocking work). The hub's relay of an expert's wishes ends here
/// too (`crate::study_referrals`), so both are parsed and bounded alike.
pub(crate) fn render_view(volume: &Volume, kind: &str, query: &str) -> Result<Vec<u8>, DicomError> {
    let uri: axum::http::Uri = format!("/?{query}")
        .parse()
        .map_err(|_| DicomError::BadQuery(format!("query {query:?} is not a URL's query")))?;
    let bad =
        |error: axum::extract::rejection::QueryRejection| DicomError::BadQuery(error.body_text());
    match kind {
        "plane" => {
            let Query(query) = Query::<PlaneQuery>::try_from_uri(&uri).map_err(bad)?;
            plane_jpeg(volume, &query)
        }
        "volume" => {
            let Query(query) = Query::<VolumeQuery>::try_from_uri(&uri).map_err(bad)?;
            volume_jpeg(volume, &query)
        }
        other => Err(DicomError::BadQuery(format!(
            "a view is a plane or a volume, not {other:?}"
        ))),
    }
}

/// A finished rendering: its wish, the JPEG or the reason, and the time it took.
type Rendered = (Wish, Result<Vec<u8>, String>, f64);

/// How long a socket keeps using the volume it last found before asking the shared cache
/// again: long enough to spare the index a read per frame, short enough that the cache's
/// budget holds (an evicted volume is let go within it) and new slices show.
const VOLUME_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The volume a socket last found, and when.
type RecentVolume = Arc<std::sync::Mutex<Option<(Arc<Volume>, Instant)>>>;

async fn start(
    state: Arc<EdgeState>,
    study: String,
    series: String,
    recent: RecentVolume,
    wish: Wish,
) -> Rendered {
    let held = recent
        .lock()
        .ok()
        .and_then(|held| held.clone())
        .filter(|(_, found)| found.elapsed() < VOLUME_RECHECK);
    let volume = match held {
        Some((volume, _)) => volume,
        None => match volume_of(&state, &study, &series).await {
            Ok(volume) => {
                if let Ok(mut held) = recent.lock() {
                    *held = Some((volume.clone(), Instant::now()));
                }
                volume
            }
            Err(response) => {
                let reason = crate::study_viewer::unprocessable_reason(response)
                    .await
                    .unwrap_or_else(|| "the series cannot be shown".into());
                return (wish, Err(reason), 0.0);
            }
        },
    };
    let Ok(place) = renderers().acquire().await else {
        return (wish, Err("the renderer is shutting down".into()), 0.0);
    };
    let started = Instant::now();
    let task = wish.clone();
    let result = tokio::task::spawn_blocking(move || {
        let _place = place;
        render_view(&volume, &task.kind, &task.query)
    })
    .await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let result = match result {
        Ok(Ok(jpeg)) => Ok(jpeg),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.to_string()),
    };
    (wish, result, ms)
}

/// The rendering in flight, cancelled if the socket ends first (a viewer that reconnects
/// does not leave renderings queued behind it).
struct InFlight(tokio::task::JoinHandle<Rendered>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve(
    state: Arc<EdgeState>,
    study: String,
    series: String,
    mut socket: WebSocket,
    signed_in: impl Fn() -> bool,
) {
    // Each view's latest wish not yet started, oldest first.
    let mut pending = Wishes::default();
    let mut in_flight: Option<(InFlight, Wish)> = None;
    let recent = RecentVolume::default();
    let mut check = tokio::time::interval(SESSION_CHECK);
    loop {
        if let Some(wish) = in_flight.is_none().then(|| pending.take_next()).flatten() {
            let task = tokio::spawn(start(
                state.clone(),
                study.clone(),
                series.clone(),
                recent.clone(),
                wish.clone(),
            ));
            in_flight = Some((InFlight(task), wish));
        }
        let finished = async {
            match in_flight.as_mut() {
                Some((handle, _)) => Some((&mut handle.0).await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = finished => {
                let Some((_, wish)) = in_flight.take() else { continue };
                let (wish, result, ms) = match done {
                    Some(Ok(rendered)) => rendered,
                    // A rendering that failed outright still answers its wish.
                    _ => (wish, Err("the rendering failed".to_string()), 0.0),
                };
                let message = match result {
                    Ok(jpeg) => frame_message(&wish, &jpeg, ms),
                    Err(error) => refusal_message(&wish.view, wish.seq, &wish.query, error),
                };
                if socket.send(message).await.is_err() {
                    return;
                }
            }
            _ = check.tick() => {
                if !signed_in() {
                    let end = serde_json::json!({ "error": "your session has ended: sign in again", "ended": true });
                    let _ = socket.send(WsMessage::Text(end.to_string().into())).await;
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    if let Err(refused) = pending.offer(&text, &["plane", "volume"]) {
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
