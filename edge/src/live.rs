//! Live session, edge side: the hub relays where its expert is looking on a referred slide
//! (`Message::LiveView`, one QUIC stream per session); this edge checks that the slide is one
//! it referred in that referral and hands each update to the county doctor's browsers watching
//! `/referrals/{id}/live` (WebSocket), whose viewer follows the expert's viewport and pointer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use grassroots_transport::framed::FramedRecv;
use grassroots_web::WebError;
use grassroots_wire::Message;
use tokio::sync::broadcast;

use crate::EdgeState;

/// Updates kept for a slow browser before it skips to the newest.
const BACKLOG: usize = 32;

#[derive(Default)]
pub struct LiveSessions {
    channels: Mutex<HashMap<String, broadcast::Sender<String>>>,
}

impl LiveSessions {
    fn channel(&self, referral: &str) -> broadcast::Sender<String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(referral.to_string())
            .or_insert_with(|| broadcast::channel(BACKLOG).0)
            .clone()
    }

    pub fn subscribe(&self, referral: &str) -> broadcast::Receiver<String> {
        self.channel(referral).subscribe()
    }

    /// Hands an update to every browser following `referral`.
    pub fn publish(&self, referral: &str, update: String) {
        // No one watching is fine: the update is simply not shown.
        let _ = self.channel(referral).send(update);
    }
}

/// Reads a live session stream from the hub, whose first message was `first`, to its end.
pub(crate) async fn follow_stream(state: Arc<EdgeState>, first: Message, mut recv: FramedRecv) {
    let mut next = Some(first);
    while let Some(message) = next.take() {
        let Message::LiveView {
            referral_id,
            slide_id,
            viewport,
            pointer,
        } = message
        else {
            tracing::warn!(
                got = message.kind(),
                "a live session stream carried something else; closed"
            );
            return;
        };
        match state.referrals.slide_is_referred(&referral_id, &slide_id) {
            Ok(true) => {}
            _ => {
                tracing::warn!(%referral_id, %slide_id, "live view of a slide this edge did not refer; closed");
                return;
            }
        }
        let update = serde_json::json!({
            "slide_id": slide_id,
            "viewport": viewport,
            "pointer": pointer,
        });
        state.live.publish(&referral_id, update.to_string());
        next = recv.next().await.ok().flatten();
    }
}

/// `GET /referrals/{id}/live` (WebSocket): the expert's view of this referral, as it moves.
pub(crate) async fn live_ws(
    State(state): State<Arc<EdgeState>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    match state.referrals.get(&id) {
        Ok(Some(_)) => {
            let updates = state.live.subscribe(&id);
            let session = grassroots_web::auth::session_of(&headers);
            let accounts = state.accounts.clone();
            let signed_in = move || {
                session
                    .as_deref()
                    .is_none_or(|token| accounts.session_allows(token, crate::http::STAFF))
            };
            upgrade.on_upgrade(move |socket| forward(updates, socket, signed_in))
        }
        Ok(None) => WebError::NotFound(format!("no referral {id}")).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// How often a following screen checks that its session still holds.
const SESSION_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

async fn forward(
    mut updates: broadcast::Receiver<String>,
    mut socket: WebSocket,
    signed_in: impl Fn() -> bool,
) {
    let mut check = tokio::time::interval(SESSION_CHECK);
    loop {
        tokio::select! {
            _ = check.tick() => {
                if !signed_in() {
                    let end = serde_json::json!({ "error": "your session has ended: sign in again", "ended": true });
                    let _ = socket.send(WsMessage::Text(end.to_string().into())).await;
                    return;
                }
            }
            update = updates.recv() => match update {
                Ok(text) => {
                    if socket.send(WsMessage::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
        }
    }
}
