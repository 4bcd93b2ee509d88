//! Viewing a referral's slides through the hub: the expert's browser asks the hub for Deep Zoom
//! descriptors and tiles; the hub checks that this expert holds the referral and that the slide
//! is part of it, records the request (who, which slide, what, when), and fetches it from the
//! referring edge over that edge's own QUIC connection — the hub opens a stream, the edge
//! answers (and refuses anything not in one of its referrals). Nothing is stored at the hub
//! but the audit record.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use grassroots_store::Table;
use grassroots_web::{CurrentUser, WebError};
use grassroots_wire::{Message, TileAddress};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::HubState;

/// How long an edge may take to answer a tile request.
const EDGE_TIMEOUT: Duration = Duration::from_secs(20);

/// One tile or descriptor request of an expert.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TileAudit {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub user: String,
    pub referral_id: String,
    pub slide_id: String,
    /// "dzi" or "LEVEL/COL_ROW".
    pub what: String,
    /// The HTTP status the expert got.
    pub status: u16,
}

#[derive(Clone)]
pub struct ConsultAudit {
    table: Table<TileAudit>,
}

impl ConsultAudit {
    pub fn new(table: Table<TileAudit>) -> Self {
        Self { table }
    }

    fn record(&self, entry: &TileAudit) {
        // Keyed by referral, then time: one referral's requests read in order.
        let key = format!(
            "{}/{:020}/{:08x}",
            entry.referral_id,
            entry.at.unix_timestamp_nanos(),
            rand::random::<u32>()
        );
        if let Err(error) = self.table.put(&key, entry) {
            tracing::error!(%error, "cannot record a tile request in the audit");
        }
    }

    pub fn of_referral(&self, referral_id: &str) -> Result<Vec<TileAudit>, crate::HubError> {
        Ok(self
            .table
            .entries()?
            .into_iter()
            .filter(|(key, _)| key.starts_with(&format!("{referral_id}/")))
            .map(|(_, entry)| entry)
            .collect())
    }
}

/// `POST /api/v1/referrals/{id}/claim`: the signed-in expert takes the referral on.
pub(crate) async fn claim_api(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> Response {
    match state.referrals.claim(&id, &user.username) {
        Ok(Ok(referral)) => Json(referral).into_response(),
        Ok(Err(refusal)) => refusal.response(&id),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `GET /api/v1/referrals/{id}/audit`: every tile request of a referral.
pub(crate) async fn audit_api(
    State(state): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Response {
    match state.audit.of_referral(&id) {
        Ok(entries) => Json(entries).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `GET /consult/{referral}/slides/{slide}.dzi`
pub(crate) async fn dzi(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((referral, name)): Path<(String, String)>,
) -> Response {
    let Some(slide) = name.strip_suffix(".dzi") else {
        return WebError::NotFound(format!("{name} is not a .dzi")).into_response();
    };
    fetch(&state, &user.username, &referral, slide, None).await
}

/// `GET /consult/{referral}/slides/{slide}_files/{level}/{col}_{row}.jpeg`
pub(crate) async fn tile(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((referral, name, level, file)): Path<(String, String, u32, String)>,
) -> Response {
    let address = name.strip_suffix("_files").and_then(|slide| {
        let (col, row) = file
            .strip_suffix(".jpeg")
            .or_else(|| file.strip_suffix(".jpg"))?
            .split_once('_')?;
        Some((
            slide,
            TileAddress {
                level,
                col: col.parse().ok()?,
                row: row.parse().ok()?,
            },
        ))
    });
    match address {
        Some((slide, address)) => {
            fetch(&state, &user.username, &referral, slide, Some(address)).await
        }
        None => WebError::NotFound(format!("{name}/{level}/{file} is not a tile")).into_response(),
    }
}

fn refuse(status: StatusCode, reason: String) -> Response {
    (status, Json(serde_json::json!({ "error": reason }))).into_response()
}

async fn fetch(
    state: &HubState,
    user: &str,
    referral_id: &str,
    slide_id: &str,
    tile: Option<TileAddress>,
) -> Response {
    let response = checked_fetch(state, user, referral_id, slide_id, tile).await;
    state.audit.record(&TileAudit {
        at: OffsetDateTime::now_utc(),
        user: user.to_string(),
        referral_id: referral_id.to_string(),
        slide_id: slide_id.to_string(),
        what: tile.map_or("dzi".into(), |t| format!("{}/{}_{}", t.level, t.col, t.row)),
        status: response.status().as_u16(),
    });
    response
}

async fn checked_fetch(
    state: &HubState,
    user: &str,
    referral_id: &str,
    slide_id: &str,
    tile: Option<TileAddress>,
) -> Response {
    let referral = match state.referrals.get(referral_id) {
        Ok(Some(referral)) => referral,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, format!("no referral {referral_id}")),
        Err(error) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    };
    if referral.assigned_to.as_deref() != Some(user) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("referral {referral_id} is not assigned to {user}"),
        );
    }
    if !referral
        .referral
        .slides
        .iter()
        .any(|s| s.slide_id == slide_id)
    {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("slide {slide_id} is not part of referral {referral_id}"),
        );
    }
    let Some(connection) = state.sites.connection(&referral.site) else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} is offline: its tiles come when it is back",
                referral.site
            ),
        );
    };
    let request = Message::ConsultRequest {
        referral_id: referral_id.to_string(),
        slide_id: slide_id.to_string(),
        tile,
    };
    let exchange = async {
        // Live viewing goes before bulk transfers on the same connection.
        let (mut send, mut recv) = grassroots_transport::framed::open(&connection, 10).await?;
        send.send(&request).await?;
        send.finish();
        recv.expect().await
    };
    match tokio::time::timeout(EDGE_TIMEOUT, exchange).await {
        Ok(Ok(Message::ConsultData { data })) => {
            let mime = if tile.is_some() {
                "image/jpeg"
            } else {
                "application/xml"
            };
            (
                [
                    (header::CONTENT_TYPE, mime),
                    (header::CACHE_CONTROL, "private, no-store"),
                ],
                data,
            )
                .into_response()
        }
        Ok(Ok(Message::Refused { reason })) => refuse(StatusCode::NOT_FOUND, reason),
        Ok(Ok(other)) => refuse(
            StatusCode::BAD_GATEWAY,
            format!("the edge answered {}", other.kind()),
        ),
        Ok(Err(error)) => refuse(StatusCode::BAD_GATEWAY, format!("the edge: {error}")),
        Err(_) => refuse(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{} did not answer in time", referral.site),
        ),
    }
}
