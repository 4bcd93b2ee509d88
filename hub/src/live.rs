//! Live session, hub side: the expert's consult page sends where it is looking (viewport and
//! pointer, in slide pixels) over a WebSocket (`/consult/{referral}/live`); the hub relays each
//! update on one QUIC stream to the referring edge (`Message::LiveView`), whose own WebSocket
//! moves the county doctor's viewer to follow. Only the expert assigned to the referral may
//! lead, only on that referral's slides; no pixels travel this way, only coordinates.

use std::sync::Arc;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use grassroots_transport::framed::{self, priority, FramedSend};
use grassroots_web::{CurrentUser, WebError};
use grassroots_wire::Message;
use serde::Deserialize;

use crate::referrals::HubReferral;
use crate::HubState;

/// One update from the expert's page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpertView {
    slide_id: String,
    viewport: [f64; 4],
    pointer: Option<[f64; 2]>,
}

/// Whole pixels, refusing what is not a finite number within any slide's reach.
fn pixels<const N: usize>(values: [f64; N]) -> Result<[i64; N], String> {
    let mut out = [0i64; N];
    for (slot, value) in out.iter_mut().zip(values) {
        if !value.is_finite() || value.abs() > 1e9 {
            return Err("coordinates must be finite numbers of slide pixels".into());
        }
        *slot = value.round() as i64;
    }
    Ok(out)
}

/// `GET /consult/{referral}/live` (WebSocket)
pub(crate) async fn live_ws(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let session = grassroots_web::auth::session_of(&headers);
    let referral = match state.referrals.get(&id) {
        Ok(Some(referral)) => referral,
        Ok(None) => return WebError::NotFound(format!("no referral {id}")).into_response(),
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    if referral.assigned_to.as_deref() != Some(user.username.as_str()) {
        return WebError::Forbidden(format!("referral {id} is not assigned to you"))
            .into_response();
    }
    let expert = user.username.clone();
    upgrade.on_upgrade(move |socket| relay(state, referral, expert, session, socket))
}

/// Whether `expert` may still lead the session: assigned, and the consult not answered yet.
fn still_leads(state: &HubState, id: &str, expert: &str) -> Result<HubReferral, String> {
    match state.referrals.get(id) {
        Ok(Some(r)) if r.assigned_to.as_deref() == Some(expert) && r.report.is_none() => Ok(r),
        Ok(Some(_)) => Err("the consult is answered or no longer assigned to you".into()),
        Ok(None) => Err(format!("no referral {id}")),
        Err(error) => Err(error.to_string()),
    }
}

fn to_wire(referral: &HubReferral, text: &str) -> Result<Message, String> {
    let view: ExpertView = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if !referral
        .referral
        .slides
        .iter()
        .any(|s| s.slide_id == view.slide_id)
    {
        return Err(format!(
            "slide {} is not part of this referral",
            view.slide_id
        ));
    }
    Ok(Message::LiveView {
        referral_id: referral.referral.referral_id.clone(),
        slide_id: view.slide_id,
        viewport: pixels(view.viewport)?,
        pointer: view.pointer.map(pixels).transpose()?,
    })
}

async fn relay(
    state: Arc<HubState>,
    referral: HubReferral,
    expert: String,
    session: Option<String>,
    mut socket: WebSocket,
) {
    let mut stream: Option<FramedSend> = None;
    let mut relayed: u64 = 0;
    while let Some(Ok(incoming)) = socket.recv().await {
        let text = match incoming {
            WsMessage::Text(text) => text,
            WsMessage::Close(_) => break,
            _ => continue,
        };
        // Checked on every update: a reassigned or answered consult ends the session, and so
        // does the expert's session ending (signed out, disabled, new password).
        let signed_in = session
            .as_deref()
            .is_none_or(|token| state.accounts.session_allows(token, crate::http::EXPERTS));
        let led = if signed_in {
            still_leads(&state, &referral.referral.referral_id, &expert)
        } else {
            Err("your session has ended: sign in again".to_string())
        };
        let referral = match led {
            Ok(current) => current,
            Err(reason) => {
                let end = serde_json::json!({ "error": reason, "ended": true });
                let _ = socket.send(WsMessage::Text(end.to_string().into())).await;
                break;
            }
        };
        let reply = match to_wire(&referral, text.as_str()) {
            Err(reason) => serde_json::json!({ "error": reason }),
            Ok(message) => {
                let sent = send(&state, &referral, &mut stream, &message).await;
                relayed += u64::from(sent);
                serde_json::json!({
                    "edge": if sent { "following" } else { "offline" },
                    "relayed": relayed,
                })
            }
        };
        if socket
            .send(WsMessage::Text(reply.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    if let Some(mut stream) = stream {
        stream.finish();
    }
}

/// Sends on the session's stream to the edge, opening it (again) when there is none or it broke.
async fn send(
    state: &HubState,
    referral: &HubReferral,
    stream: &mut Option<FramedSend>,
    message: &Message,
) -> bool {
    for _ in 0..2 {
        if stream.is_none() {
            let Some(connection) = state.sites.connection(&referral.site) else {
                return false;
            };
            *stream = framed::open(&connection, priority::INTERACTIVE)
                .await
                .ok()
                .map(|(send, _)| send);
        }
        match stream.as_mut() {
            Some(open) => {
                if open.send(message).await.is_ok() {
                    return true;
                }
                *stream = None;
            }
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referral() -> HubReferral {
        let referral = serde_json::json!({
            "referral_id": "0f".repeat(16),
            "case_pseudonym": "ab".repeat(32),
            "age_band": "40-49", "sex": "female", "specimen": "skin", "question": "Melanoma?",
            "urgency": "routine",
            "slides": [{"slide_id": "cd".repeat(32), "width": 100, "height": 80,
                        "microns_per_pixel": null, "ai_triage": null, "ai_score": null,
                        "regions_geojson": null}],
            "referred_at": "2026-11-26T06:00:00Z",
        });
        HubReferral {
            site: "county-a".into(),
            referral: serde_json::from_value(referral).unwrap(),
            received_at: time::OffsetDateTime::now_utc(),
            assigned_to: Some("prof-zhang".into()),
            claimed_at: None,
            opened_at: None,
            report: None,
            report_delivered_at: None,
            report_refused: None,
        }
    }

    #[test]
    fn only_finite_views_of_the_referrals_slides_are_relayed() {
        let referral = referral();
        let slide = "cd".repeat(32);
        let good =
            format!(r#"{{"slide_id":"{slide}","viewport":[10.4,20,300,200],"pointer":[50.6,60]}}"#);
        match to_wire(&referral, &good).unwrap() {
            Message::LiveView {
                viewport, pointer, ..
            } => {
                assert_eq!(viewport, [10, 20, 300, 200]);
                assert_eq!(pointer, Some([51, 60]));
            }
            other => panic!("{other:?}"),
        }
        let other_slide = format!(
            r#"{{"slide_id":"{}","viewport":[0,0,1,1],"pointer":null}}"#,
            "ee".repeat(32)
        );
        let error = to_wire(&referral, &other_slide).unwrap_err();
        assert!(error.contains("not part of this referral"), "{error}");
        let huge = format!(r#"{{"slide_id":"{slide}","viewport":[0,0,1e300,1],"pointer":null}}"#);
        let error = to_wire(&referral, &huge).unwrap_err();
        assert!(error.contains("finite numbers"), "{error}");
        let error = to_wire(&referral, r#"{"slide_id": 3}"#).unwrap_err();
        assert!(error.contains("invalid type"), "{error}");
        let extra = format!(
            r#"{{"slide_id":"{slide}","viewport":[0,0,1,1],"pointer":null,"image":"AAAA"}}"#
        );
        assert!(to_wire(&referral, &extra)
            .unwrap_err()
            .contains("unknown field"));
    }
}
