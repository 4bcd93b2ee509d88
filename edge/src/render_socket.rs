//! One WebSocket per viewer (`/studies/{study}/series/{series}/render`): the reformatting and
//! volume-rendering pages send their wishes on it (a view's name, a sequence number, and the
//! same query the `mpr.jpg` and `volume.jpg` resources take) and receive the rendered frames.
//!
//! The socket renders one frame at a time and keeps only each view's latest wish: a viewer
//! that drags faster than the edge renders skips the frames in between instead of queueing
//! them, so its latency stays one frame, whatever the load. Renderings share the edge's
//! renderer places (one per core) with every other viewer.
//!
//! Frames are binary messages: a 4-byte big-endian length, a JSON header
//! (`{"view","seq","query","ms"}`) of that length, then the JPEG. A wish that cannot be
//! rendered is answered by a text message `{"view","seq","query","error"}`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use grassroots_dicom::volume::Volume;
use grassroots_dicom::DicomError;
use serde::{Deserialize, Serialize};

use crate::study_viewer::{plane_jpeg, renderers, volume_of, PlaneQuery};
use crate::volume_viewer::{volume_jpeg, VolumeQuery};
use crate::EdgeState;

/// What a viewer asks for.
#[derive(Debug, Clone, Deserialize)]
struct Wish {
    /// The view it is for (`axial`, `coronal`, `sagittal`, `volume`...): each view keeps only
    /// its latest wish.
    view: String,
    seq: u64,
    kind: WishKind,
    /// The rendered resource's query (as `mpr.jpg` or `volume.jpg` take it).
    query: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WishKind {
    Plane,
    Volume,
}

/// What comes back with a frame or a refusal.
#[derive(Debug, Serialize)]
struct Answer<'a> {
    view: &'a str,
    seq: u64,
    query: &'a str,
    /// Milliseconds of rendering.
    #[serde(skip_serializing_if = "Option::is_none")]
    ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Wishes kept per socket (one per view), at most: a viewer has a handful of views.
const MAX_VIEWS: usize = 8;
/// Largest wish accepted.
const MAX_WISH_BYTES: usize = 4096;
/// How often the socket checks that its browser session still holds.
const SESSION_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /studies/{study}/series/{series}/render` (WebSocket).
pub(crate) async fn render_ws(
    State(state): State<Arc<EdgeState>>,
    Path((study, series)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // A series that is no volume (or none at all) is refused before the upgrade, with why.
    if let Err(response) = volume_of(&state, &study, &series).await {
        return response;
    }
    let session = grassroots_web::auth::session_of(&headers);
    let accounts = state.accounts.clone();
    let signed_in = move || {
        session
            .as_deref()
            .is_none_or(|token| accounts.session_is_live(token))
    };
    upgrade
        .max_message_size(MAX_WISH_BYTES)
        .on_upgrade(move |socket| serve(state, study, series, socket, signed_in))
}

/// Renders one wish (blocking work).
fn render(volume: &Volume, wish: &Wish) -> Result<Vec<u8>, DicomError> {
    let kind = match wish.kind {
        WishKind::Plane => "plane",
        WishKind::Volume => "volume",
    };
    render_view(volume, kind, &wish.query)
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
        render(&volume, &task)
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

fn frame_message(wish: &Wish, jpeg: &[u8], ms: f64) -> WsMessage {
    let header = serde_json::to_vec(&Answer {
        view: &wish.view,
        seq: wish.seq,
        query: &wish.query,
        ms: Some((ms * 10.0).round() / 10.0),
        error: None,
    })
    .unwrap_or_default();
    let mut message = Vec::with_capacity(4 + header.len() + jpeg.len());
    message.extend_from_slice(&(header.len() as u32).to_be_bytes());
    message.extend_from_slice(&header);
    message.extend_from_slice(jpeg);
    WsMessage::Binary(message.into())
}

fn refusal_message(view: &str, seq: u64, query: &str, error: String) -> WsMessage {
    let answer = Answer {
        view,
        seq,
        query,
        ms: None,
        error: Some(error),
    };
    WsMessage::Text(serde_json::to_string(&answer).unwrap_or_default().into())
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
    let mut pending: Vec<Wish> = Vec::new();
    let mut in_flight: Option<(InFlight, Wish)> = None;
    let recent = RecentVolume::default();
    let mut check = tokio::time::interval(SESSION_CHECK);
    loop {
        if in_flight.is_none() && !pending.is_empty() {
            let wish = pending.remove(0);
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
                Some(Ok(WsMessage::Text(text))) => match serde_json::from_str::<Wish>(&text) {
                    Ok(wish) => {
                        // The view's older wish, if it has not started, is dropped: its frame
                        // would be out of date before it arrived.
                        if let Some(place) = pending.iter().position(|w| w.view == wish.view) {
                            pending[place] = wish;
                        } else if pending.len() < MAX_VIEWS {
                            pending.push(wish);
                        } else {
                            let refused = refusal_message(&wish.view, wish.seq, &wish.query, format!("at most {MAX_VIEWS} views per viewer"));
                            if socket.send(refused).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(error) => {
                        let refused = refusal_message("", 0, "", format!("a wish is JSON with view, seq, kind (plane or volume) and query: {error}"));
                        if socket.send(refused).await.is_err() {
                            return;
                        }
                    }
                },
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
        }
    }
}
