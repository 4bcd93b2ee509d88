//! Viewing a referral's slides through the hub: the expert's browser asks the hub for Deep Zoom
//! descriptors and tiles; the hub checks that this expert holds the referral and that the slide
//! is part of it, records the request (who, which slide, what, when), and fetches it from the
//! referring edge over that edge's own QUIC connection — the hub opens a stream, the edge
//! answers (and refuses anything not in one of its referrals). What comes back is kept in the
//! consult's memory-only cache (`consult_cache`) until the consult closes; nothing of it is
//! written to the hub's disk — only the audit record is.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use grassroots_store::Table;
use grassroots_web::openapi::ApiError;
use grassroots_web::{CurrentUser, StaffRole, WebError};
use grassroots_wire::{Message, TileAddress};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::consult_cache::CacheStatus;
use crate::referrals::HubReferral;
use crate::HubState;
use grassroots_wire::referral::ReferredSlide;

/// How long an edge may take to answer a tile request.
pub(crate) const EDGE_TIMEOUT: Duration = Duration::from_secs(20);

/// One tile or descriptor request of an expert.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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

    /// Records that `user` asked for `what` of a referral's slide and got `status`; returns once
    /// the record is on disk (concurrent tiles share one fsync), before the tile is answered.
    pub(crate) async fn record(
        &self,
        user: &str,
        referral_id: &str,
        slide_id: &str,
        what: String,
        status: u16,
    ) {
        let entry = &TileAudit {
            at: OffsetDateTime::now_utc(),
            user: user.to_string(),
            referral_id: referral_id.to_string(),
            slide_id: slide_id.to_string(),
            what,
            status,
        };
        // Keyed by referral, then time: one referral's requests read in order.
        let key = format!(
            "{}/{:020}/{:08x}",
            entry.referral_id,
            entry.at.unix_timestamp_nanos(),
            rand::random::<u32>()
        );
        if let Err(error) = self.table.put(&key, entry) {
            tracing::error!(%error, "cannot record a tile request in the audit");
            return;
        }
        if let Err(error) = self.table.flush_async().await {
            tracing::error!(%error, "cannot make the audit of a tile request durable");
        }
    }

    pub fn of_referral(&self, referral_id: &str) -> Result<Vec<TileAudit>, crate::HubError> {
        // One prefix scan of this referral's keys, never the whole audit.
        Ok(self
            .table
            .scan_prefix(&format!("{referral_id}/"))?
            .into_iter()
            .map(|(_, entry)| entry)
            .collect())
    }
}

/// `POST /api/v1/referrals/{id}/claim`: the signed-in expert takes the referral on.
#[utoipa::path(post, path = "/api/v1/referrals/{id}/claim", tag = "referrals",
    params(("id" = String, Path, description = "The referral's id")),
    responses(
        (status = 200, description = "The referral, assigned to the signed-in expert (claiming it again is fine)", body = HubReferral),
        (status = 404, description = "No such referral", body = ApiError),
        (status = 409, description = "Another expert holds the referral", body = ApiError),
        grassroots_web::openapi::Refusals))]
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

/// The body of `POST /api/v1/referrals/{id}/assign`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AssignForm {
    /// The user name of an expert account.
    expert: String,
}

/// `POST /api/v1/referrals/{id}/assign` (admins): gives the referral to an expert account.
#[utoipa::path(post, path = "/api/v1/referrals/{id}/assign", tag = "referrals",
    params(("id" = String, Path, description = "The referral's id")),
    request_body = AssignForm,
    responses(
        (status = 200, description = "The referral, assigned to the expert (taken from another if need be)", body = HubReferral),
        (status = 400, description = "Not an expert account", body = ApiError),
        (status = 404, description = "No such referral", body = ApiError),
        (status = 409, description = "The referral is answered already", body = ApiError),
        grassroots_web::openapi::Refusals, grassroots_web::openapi::InputRefusals))]
pub(crate) async fn assign_api(
    State(state): State<Arc<HubState>>,
    Path(id): Path<String>,
    Json(form): Json<AssignForm>,
) -> Response {
    let is_expert = state
        .accounts
        .users()
        .map(|users| {
            users
                .iter()
                .any(|u| u.username == form.expert && u.role == StaffRole::Expert)
        })
        .unwrap_or(false);
    if !is_expert {
        return WebError::BadRequest(format!("{:?} is not an expert account", form.expert))
            .into_response();
    }
    match state.referrals.assign(&id, &form.expert) {
        Ok(Ok(referral)) => {
            tracing::info!(referral = %id, expert = %form.expert, "referral assigned");
            Json(referral).into_response()
        }
        Ok(Err(refusal)) => refusal.response(&id),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `GET /api/v1/referrals/{id}/audit`: every tile request of a referral.
#[utoipa::path(get, path = "/api/v1/referrals/{id}/audit", tag = "referrals",
    params(("id" = String, Path, description = "The referral's id")),
    responses(
        (status = 200, description = "Every tile and descriptor request of the referral, oldest first (none for an unknown referral)", body = Vec<TileAudit>),
        grassroots_web::openapi::Refusals))]
pub(crate) async fn audit_api(
    State(state): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Response {
    match state.audit.of_referral(&id) {
        Ok(entries) => Json(entries).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// How the audit names a consult item: "dzi" or "LEVEL/COL_ROW".
pub(crate) fn item_label(tile: Option<TileAddress>) -> String {
    tile.map_or("dzi".into(), |t| format!("{}/{}_{}", t.level, t.col, t.row))
}

/// `GET /api/v1/referrals/{id}/cache`: what the hub holds of a consult, and its prefetch.
#[utoipa::path(get, path = "/api/v1/referrals/{id}/cache", tag = "referrals",
    params(("id" = String, Path, description = "The referral's id")),
    responses(
        (status = 200, description = "What the hub holds in memory of the consult, and its prefetch", body = CacheStatus),
        (status = 404, description = "No such referral", body = ApiError),
        grassroots_web::openapi::Refusals))]
pub(crate) async fn cache_api(
    State(state): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Response {
    match state.referrals.get(&id) {
        Ok(Some(_)) => Json(state.consult_cache.status(&id)).into_response(),
        Ok(None) => WebError::NotFound(format!("no referral {id}")).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `GET /consult/{referral}/thumbnail/{slide}`: the whole slide in one small tile, for the
/// experts' worklist. Any expert may see it before claiming (a glance at the tissue, no
/// detail); it is audited like every tile, and usually comes from the prefetched overview.
pub(crate) async fn thumbnail(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((referral_id, slide_id)): Path<(String, String)>,
) -> Response {
    let response = async {
        let referral = match open_referral(&state, &referral_id) {
            Ok(referral) => referral,
            Err((status, reason)) => return refuse(status, reason),
        };
        let slide = match slide_of(&referral, &slide_id) {
            Ok(slide) => slide,
            Err((status, reason)) => return refuse(status, reason),
        };
        let tile = Some(crate::prefetch::thumbnail_tile(slide.width, slide.height));
        let data = match cached_or_from_edge(&state, &referral, &slide_id, tile).await {
            Ok((data, _)) => data,
            Err(failure) => return failure.response(&referral.site),
        };
        // The worklist reloads every few seconds: let the browser keep the glance for an hour.
        (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "private, max-age=3600"),
            ],
            data,
        )
            .into_response()
    }
    .await;
    let status = response.status().as_u16();
    state
        .audit
        .record(
            &user.username,
            &referral_id,
            &slide_id,
            "thumbnail".into(),
            status,
        )
        .await;
    response
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

pub(crate) fn refuse(status: StatusCode, reason: String) -> Response {
    (status, Json(ApiError { error: reason })).into_response()
}

async fn fetch(
    state: &HubState,
    user: &str,
    referral_id: &str,
    slide_id: &str,
    tile: Option<TileAddress>,
) -> Response {
    let response = checked_fetch(state, user, referral_id, slide_id, tile).await;
    let status = response.status().as_u16();
    state
        .audit
        .record(user, referral_id, slide_id, item_label(tile), status)
        .await;
    response
}

/// A refusal: the status and the reason in words (see [`refuse`]).
type Refused = (StatusCode, String);

/// The referral, or the refusal to send; an answered referral's consult is closed and keeps
/// nothing (viewing still works, uncached).
fn open_referral(state: &HubState, referral_id: &str) -> Result<HubReferral, Refused> {
    let referral = match state.referrals.get(referral_id) {
        Ok(Some(referral)) => referral,
        Ok(None) => return Err((StatusCode::NOT_FOUND, format!("no referral {referral_id}"))),
        Err(error) => return Err((StatusCode::INTERNAL_SERVER_ERROR, error.to_string())),
    };
    if referral.report.is_some() {
        state.consult_cache.purge(referral_id);
    }
    Ok(referral)
}

/// The referral's slide `slide_id`, or 404.
fn slide_of<'a>(referral: &'a HubReferral, slide_id: &str) -> Result<&'a ReferredSlide, Refused> {
    referral
        .referral
        .slides
        .iter()
        .find(|s| s.slide_id == slide_id)
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!(
                    "slide {slide_id} is not part of referral {}",
                    referral.referral.referral_id
                ),
            )
        })
}

/// An item from the consult's cache ("hit"), or from the edge as a live request, kept in the
/// cache ("miss").
async fn cached_or_from_edge(
    state: &HubState,
    referral: &HubReferral,
    slide_id: &str,
    tile: Option<TileAddress>,
) -> Result<(Vec<u8>, &'static str), FetchFailure> {
    let id = &referral.referral.referral_id;
    if let Some(data) = state.consult_cache.get(id, slide_id, tile) {
        return Ok((data.to_vec(), "hit"));
    }
    let data = {
        let _live = state.consult_cache.live_request();
        from_edge(state, referral, slide_id, tile, false).await?
    };
    state
        .consult_cache
        .put(id, slide_id, tile, data.clone().into());
    Ok((data, "miss"))
}

async fn checked_fetch(
    state: &HubState,
    user: &str,
    referral_id: &str,
    slide_id: &str,
    tile: Option<TileAddress>,
) -> Response {
    let referral = match open_referral(state, referral_id) {
        Ok(referral) => referral,
        Err((status, reason)) => return refuse(status, reason),
    };
    if referral.assigned_to.as_deref() != Some(user) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("referral {referral_id} is not assigned to {user}"),
        );
    }
    if let Err((status, reason)) = slide_of(&referral, slide_id) {
        return refuse(status, reason);
    }
    match cached_or_from_edge(state, &referral, slide_id, tile).await {
        Ok((data, cache)) => {
            state.referrals.opened(referral_id);
            answer(tile, data, cache)
        }
        Err(failure) => failure.response(&referral.site),
    }
}

fn answer(tile: Option<TileAddress>, data: Vec<u8>, cache: &'static str) -> Response {
    let mime = if tile.is_some() {
        "image/jpeg"
    } else {
        "application/xml"
    };
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "private, no-store"),
            (header::HeaderName::from_static("x-grassroots-cache"), cache),
        ],
        data,
    )
        .into_response()
}

/// Why an edge did not give a consult item.
#[derive(Debug)]
pub(crate) enum FetchFailure {
    Offline,
    /// The edge refused (not in its referral, outside the slide).
    Refused(String),
    Failed(String),
    TimedOut,
}

impl FetchFailure {
    fn response(self, site: &str) -> Response {
        let (status, reason) = self.status_and_reason(site);
        refuse(status, reason)
    }

    /// The HTTP status the expert gets, and why.
    pub(crate) fn status_and_reason(self, site: &str) -> (StatusCode, String) {
        match self {
            FetchFailure::Offline => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{site} is offline: its images come when it is back"),
            ),
            FetchFailure::Refused(reason) => (StatusCode::NOT_FOUND, reason),
            FetchFailure::Failed(reason) => (StatusCode::BAD_GATEWAY, reason),
            FetchFailure::TimedOut => (
                StatusCode::GATEWAY_TIMEOUT,
                format!("{site} did not answer in time"),
            ),
        }
    }
}

/// What an edge sent, made safe to hand to a browser on the hub's origin: a descriptor is
/// parsed, bounded and written anew from its figures (never relayed as the edge wrote it), and
/// a tile must be a JPEG.
fn relayable(tile: Option<TileAddress>, data: Vec<u8>) -> Result<Vec<u8>, FetchFailure> {
    match tile {
        None => grassroots_deepzoom::Descriptor::parse(&String::from_utf8_lossy(&data))
            .map(|descriptor| descriptor.to_xml().into_bytes())
            .map_err(|e| FetchFailure::Failed(format!("the edge's descriptor is refused: {e}"))),
        Some(_) if data.starts_with(&[0xFF, 0xD8, 0xFF]) => Ok(data),
        Some(_) => Err(FetchFailure::Failed(
            "the edge's tile is not a JPEG".to_string(),
        )),
    }
}

/// Asks the referring edge for a descriptor (`tile` none) or a tile over its QUIC connection:
/// one stream per item, at interactive priority, or behind them when `prefetch`.
pub(crate) async fn from_edge(
    state: &HubState,
    referral: &HubReferral,
    slide_id: &str,
    tile: Option<TileAddress>,
    prefetch: bool,
) -> Result<Vec<u8>, FetchFailure> {
    let Some(connection) = state.sites.connection(&referral.site) else {
        return Err(FetchFailure::Offline);
    };
    let request = Message::ConsultRequest {
        referral_id: referral.referral.referral_id.clone(),
        slide_id: slide_id.to_string(),
        tile,
        prefetch,
    };
    let priority = if prefetch {
        grassroots_transport::framed::priority::PREFETCH
    } else {
        grassroots_transport::framed::priority::INTERACTIVE
    };
    let exchange = async {
        let (mut send, mut recv) =
            grassroots_transport::framed::open(&connection, priority).await?;
        send.send(&request).await?;
        send.finish();
        recv.expect().await
    };
    match tokio::time::timeout(EDGE_TIMEOUT, exchange).await {
        Ok(Ok(Message::ConsultData { data })) => relayable(tile, data),
        Ok(Ok(Message::Refused { reason })) => Err(FetchFailure::Refused(reason)),
        Ok(Ok(other)) => Err(FetchFailure::Failed(format!(
            "the edge answered {}",
            other.kind()
        ))),
        Ok(Err(error)) => Err(FetchFailure::Failed(format!("the edge: {error}"))),
        Err(_) => Err(FetchFailure::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DZI: &str = r#"<?xml version="1.0"?><Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="jpeg" Overlap="1" TileSize="254"><Size Width="46000" Height="32914"/></Image>"#;

    #[test]
    fn an_edges_descriptor_is_relayed_only_as_its_figures() {
        // Script smuggled into the descriptor does not reach the hub's origin.
        let scripted = DZI.replace(
            "<Size",
            r#"<html:script xmlns:html="http://www.w3.org/1999/xhtml">alert(document.cookie)</html:script><Size"#,
        );
        let relayed = String::from_utf8(relayable(None, scripted.into_bytes()).unwrap()).unwrap();
        assert!(!relayed.contains("script"), "{relayed}");
        assert!(relayed.contains(r#"Width="46000""#), "{relayed}");
        // A width near 2^64 with one-pixel tiles (the prefetch planner looped over ~2^64
        // tiles) is refused with the reason.
        let hostile = DZI
            .replace("46000", "18446744073709551615")
            .replace(r#"TileSize="254""#, r#"TileSize="1""#);
        let Err(FetchFailure::Failed(reason)) = relayable(None, hostile.into_bytes()) else {
            panic!("a hostile descriptor is refused");
        };
        assert!(reason.contains("descriptor is refused"), "{reason}");
        // A "tile" that is not a JPEG is not served as one.
        let address = TileAddress {
            level: 0,
            col: 0,
            row: 0,
        };
        assert!(relayable(Some(address), b"<html><script>".to_vec()).is_err());
        assert!(relayable(Some(address), vec![0xFF, 0xD8, 0xFF, 0xE0]).is_ok());
    }

    #[test]
    fn the_plan_of_the_largest_descriptor_allowed_stays_small() {
        let largest = grassroots_deepzoom::Descriptor::new(
            grassroots_deepzoom::MAX_SIDE,
            grassroots_deepzoom::MAX_SIDE,
            grassroots_deepzoom::MIN_TILE,
            0,
            grassroots_deepzoom::Format::Jpeg,
        )
        .unwrap();
        let region = crate::prefetch::Region {
            x: 1e6,
            y: 1e6,
            width: 100.0,
            height: 100.0,
        };
        let tiles = crate::prefetch::plan(&largest, &[region; 100]);
        assert!(
            tiles.len() <= crate::prefetch::MAX_PLAN_TILES,
            "{}",
            tiles.len()
        );
    }
}
