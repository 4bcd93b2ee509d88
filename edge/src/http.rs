//! The edge's web UI and API: the status page (link state, round trip, certificate), the link
//! state as JSON, and the bulk-transfer outbox (admins queue files for the hub).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use grassroots_transport::LinkState;
use grassroots_web::i18n::tr;
use grassroots_web::nav::NavItem;
use grassroots_web::pages::{escape, page};
use grassroots_web::{require_role, CurrentUser, StaffRole, WebError, WebState};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{EdgeError, EdgeState};

pub(crate) const STAFF: &[StaffRole] = &[StaffRole::Clinician, StaffRole::Admin];
const ADMINS: &[StaffRole] = &[StaffRole::Admin];

/// The edge's pages in the header, each with the roles its route is guarded with below.
pub const NAV: &[NavItem] = &[
    NavItem::new("/worklist", "Worklist", STAFF),
    NavItem::new("/slides", "Slides", STAFF),
    NavItem::new("/cases", "Cases", STAFF),
    NavItem::new("/studies", "Studies", STAFF),
    NavItem::new("/referrals", "Referrals", STAFF),
    NavItem::new("/federated", "Learning", STAFF),
    NavItem::new("/", "Status", STAFF),
    NavItem::new("/security", "Security", ADMINS),
];

pub fn web_state(state: &EdgeState, metrics: Arc<Registry>) -> Result<WebState, EdgeError> {
    let title = state.page_title();
    let token = match &state.config.metrics_token_file {
        Some(path) => Some(grassroots_web::read_metrics_token(path)?),
        None => None,
    };
    let mut web = WebState::new(&state.store, metrics, title, state.config.secure_cookies)?
        .with_metrics_token(token.as_deref())
        .with_trusted_proxies(&state.config.trusted_proxies);
    // One instance of the accounts: live sessions check what sign-ins and admins change.
    web.accounts = state.accounts.clone();
    Ok(web)
}

/// The edge's routes: pages, tiles, and the API (each `/api/v1` route through `routes!`, so that
/// it is in the OpenAPI document; see `grassroots_web::openapi`).
pub fn router(state: Arc<EdgeState>, web: WebState) -> Result<Router, EdgeError> {
    let staff = OpenApiRouter::new()
        .route("/", get(status_page))
        .routes(routes!(link_api))
        .routes(routes!(coverage_api))
        .route_layer(from_fn_with_state((web.clone(), STAFF), require_role));
    let (schemas, paths, slides) = routes!(slides_api, upload_api);
    let viewer = OpenApiRouter::new()
        .routes((
            schemas,
            paths,
            slides.layer(axum::extract::DefaultBodyLimit::disable()),
        ))
        .route("/slides", get(crate::viewer::slide_list))
        .route("/cases", get(crate::viewer::case_list))
        .route("/cases/{number}", get(crate::viewer::case_page))
        .route("/studies", get(crate::studies::studies_page))
        .route("/studies/{study}", get(crate::studies::study_page))
        .routes(routes!(crate::studies::studies_api))
        .routes(routes!(crate::studies::study_api))
        .route(
            "/studies/{study}/series/{series}",
            get(crate::study_viewer::series_page),
        )
        .route(
            "/studies/{study}/series/{series}/mpr",
            get(crate::study_viewer::mpr_page),
        )
        .route(
            "/studies/{study}/series/{series}/mpr.jpg",
            get(crate::study_viewer::plane_image),
        )
        .route(
            "/studies/{study}/series/{series}/3d",
            get(crate::volume_viewer::volume_page),
        )
        .route(
            "/studies/{study}/series/{series}/volume.jpg",
            get(crate::volume_viewer::volume_image),
        )
        .route(
            "/studies/{study}/series/{series}/render",
            get(crate::render_socket::render_ws),
        )
        .route(
            "/dicom-web/studies",
            get(crate::dicomweb::search_studies).post(crate::dicomweb_transfer::store_studies)
                .layer(axum::extract::DefaultBodyLimit::max(crate::dicomweb_transfer::MAX_STOW_BYTES)),
        )
        .route(
            "/dicom-web/studies/{study}",
            get(crate::dicomweb_transfer::retrieve_study)
                .post(crate::dicomweb_transfer::store_study)
                .layer(axum::extract::DefaultBodyLimit::max(crate::dicomweb_transfer::MAX_STOW_BYTES)),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}",
            get(crate::dicomweb_transfer::retrieve_series),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}",
            get(crate::dicomweb_transfer::retrieve_instance),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            get(crate::dicomweb_transfer::retrieve_frames),
        )
        .route(
            "/dicom-web/studies/{study}/series",
            get(crate::dicomweb::search_series),
        )
        .route(
            "/dicom-web/instances",
            get(crate::dicomweb::search_all_instances),
        )
        .route(
            "/dicom-web/studies/{study}/instances",
            get(crate::dicomweb::search_study_instances),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances",
            get(crate::dicomweb::search_instances),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/metadata",
            get(crate::dicomweb::series_metadata),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata",
            get(crate::dicomweb::instance_metadata),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered",
            get(crate::study_viewer::instance_rendered),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered",
            get(crate::study_viewer::frame_rendered),
        )
        .routes(routes!(crate::study_viewer::region_api))
        .route(
            "/view/{id}/case",
            axum::routing::post(crate::viewer::link_case_form),
        )
        .routes(routes!(link_case_api))
        .routes(routes!(cases_api))
        .route("/worklist", get(crate::worklist::worklist_page))
        .routes(routes!(crate::worklist::jobs_api))
        .routes(routes!(crate::worklist::job_api))
        .route(
            "/screening/{id}/heatmap.png",
            get(crate::worklist::heatmap_png),
        )
        .route(
            "/screening/{id}/regions.geojson",
            get(crate::worklist::regions_geojson),
        )
        .routes(routes!(crate::worklist::model_api))
        .routes(routes!(crate::federated_pages::sign_off_api))
        .routes(routes!(crate::federated_pages::labels_api))
        .routes(routes!(crate::federated_pages::federated_api))
        .route("/federated", get(crate::federated_pages::federated_page))
        .routes(routes!(
            crate::referrals::list_api,
            crate::referrals::refer_api
        ))
        .routes(routes!(crate::referrals::preview_api))
        .route("/referrals", get(crate::referral_pages::referrals_page))
        .route("/referrals/{id}", get(crate::referral_pages::referral_page))
        .route("/referrals/{id}/live", get(crate::live::live_ws))
        .routes(routes!(crate::consult_egress::egress_api))
        .route("/view/{id}", get(crate::viewer::viewer_page))
        .route(
            "/associated/{id}/{name}",
            get(crate::viewer::associated_image),
        )
        .route("/slides/{name}", get(dzi))
        .route("/slides/{name}/{level}/{tile}", get(tile))
        .route("/iiif/3/{id}", get(iiif_base))
        .route("/iiif/3/{id}/info.json", get(iiif_info))
        .route(
            "/iiif/3/{id}/{region}/{size}/{rotation}/{file}",
            get(iiif_image),
        )
        .route_layer(from_fn_with_state((web.clone(), STAFF), require_role));
    let (schemas, paths, install) = routes!(crate::worklist::install_model_api);
    let admin = OpenApiRouter::new()
        .routes(routes!(transfers_api, enqueue_api))
        .routes((
            schemas,
            paths,
            install.layer(axum::extract::DefaultBodyLimit::max(256 << 20)),
        ))
        .routes(routes!(crate::federated_pages::withdraw_api))
        .route_layer(from_fn_with_state((web.clone(), ADMINS), require_role));
    let router = OpenApiRouter::new()
        .merge(staff)
        .merge(viewer)
        .merge(admin)
        .route(
            &format!("{}/web/{{*path}}", crate::assets::PREFIX),
            get(crate::assets::scripts),
        )
        .with_state(state)
        .merge(grassroots_web::router(web))
        .layer(from_fn_with_state(NAV, grassroots_web::nav::scope));
    Ok(grassroots_web::openapi::finish(
        router,
        "Grassroots edge API",
        "A county hospital's edge node: its slides, screening, training labels, referrals to \
         the hub and transfers. Patient data stays on this node; only what a referral sends \
         crosses to the hub.",
    )?)
}

/// The answer of `GET /api/v1/link`: this site, its link to the hub and its certificate.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct LinkStatus {
    site_id: String,
    network: String,
    /// The hub's address this edge dials.
    hub_addr: String,
    link: LinkState,
    /// When the site's certificate expires (absent if the kit's identity cannot be read).
    certificate_not_after: Option<String>,
    certificate_days_left: Option<i64>,
    /// The number of the network's revocation list the hub passed on, if any.
    revocation_list: Option<u64>,
}

/// `GET /api/v1/link`: the link's state, as the status page shows it.
#[utoipa::path(get, path = "/api/v1/link", tag = "status",
    responses((status = 200, description = "This site and its link to the hub", body = LinkStatus), grassroots_web::openapi::Refusals))]
async fn link_api(State(state): State<Arc<EdgeState>>) -> Response {
    let link = state.link.state.borrow().clone();
    let identity = state.kit.identity().ok();
    Json(LinkStatus {
        site_id: state.kit.site_id.to_string(),
        network: state.kit.network.clone(),
        hub_addr: state
            .config
            .hub_addr
            .as_deref()
            .unwrap_or(&state.kit.hub_addr)
            .to_string(),
        link,
        certificate_not_after: identity.as_ref().map(|i| i.not_after.to_string()),
        certificate_days_left: identity
            .as_ref()
            .map(|i| i.days_left(OffsetDateTime::now_utc())),
        revocation_list: state.hub_trust.number(),
    })
    .into_response()
}

async fn status_page(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    let link = match state.link.state.borrow().clone() {
        LinkState::Online {
            protocol_version,
            rtt_ms,
            since,
            hub_capabilities,
        } => format!(
            r#"<span class="online">{}</span> {}"#,
            tr("online"),
            tr("since {since} · protocol v{protocol} · round trip {rtt} · hub capabilities: {capabilities}")
                .replace(
                    "{since}",
                    &OffsetDateTime::from_unix_timestamp(since)
                        .map(grassroots_web::pages::rfc3339)
                        .map(|at| grassroots_web::pages::when(&at))
                        .unwrap_or_default()
                )
                .replace("{protocol}", &protocol_version.to_string())
                .replace(
                    "{rtt}",
                    &rtt_ms
                        .map(|rtt| format!("{rtt:.1} ms"))
                        .unwrap_or_else(|| tr("measuring").into())
                )
                .replace(
                    "{capabilities}",
                    &if hub_capabilities.is_empty() {
                        tr("none").to_string()
                    } else {
                        escape(&hub_capabilities.join(", "))
                    }
                )
        ),
        LinkState::Connecting {
            attempt,
            last_error,
        } => format!(
            r#"<span class="offline">{}</span> · {}{}"#,
            tr("offline"),
            tr("connecting (attempt {})").replace("{}", &attempt.to_string()),
            last_error
                .map(|e| format!(" · {}", tr("last error: {}").replace("{}", &escape(&e))))
                .unwrap_or_default()
        ),
        LinkState::Stopped => tr("stopped").into(),
    };
    let now = OffsetDateTime::now_utc();
    let certificate = state
        .kit
        .identity()
        .map(|identity| {
            let days = identity.days_left(now);
            let class = if days < state.config.expiry_warning_days {
                "error"
            } else {
                ""
            };
            format!(
                r#"<span class="{class}">{} {}</span>"#,
                identity.not_after.date(),
                tr("({} days)").replace("{}", &days.to_string())
            )
        })
        .unwrap_or_default();
    let mut transfers = String::new();
    if let Ok(rows) = state.outbox.statuses() {
        for row in rows {
            let progress = match (row.entry.state, row.progress) {
                (crate::outbox::OutboxState::Delivered, _) => tr("delivered").to_string(),
                (crate::outbox::OutboxState::Refused, _) => format!(
                    r#"<span class="error">{}</span>"#,
                    tr("refused by the hub: {}").replace(
                        "{}",
                        &escape(
                            row.entry
                                .last_error
                                .as_deref()
                                .unwrap_or(tr("no reason given"))
                        )
                    )
                ),
                (crate::outbox::OutboxState::Failed, _) => format!(
                    r#"<span class="error">{}</span>"#,
                    tr("failed: {}").replace(
                        "{}",
                        &escape(
                            row.entry
                                .last_error
                                .as_deref()
                                .unwrap_or(tr("unknown error"))
                        )
                    )
                ),
                (_, Some(p)) if p.total > 0 => format!(
                    "<progress max=\"{}\" value=\"{}\"></progress> {:.0}%",
                    p.total,
                    p.sent,
                    p.sent as f64 * 100.0 / p.total as f64
                ),
                _ => tr("waiting for the link").to_string(),
            };
            transfers.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{progress}</td></tr>",
                escape(&row.entry.id[..16]),
                escape(&row.entry.label),
                row.entry.size
            ));
        }
    }
    let live = grassroots_web::pages::live_updates(5);
    let body = format!(
        r#"{live}
<div class="card"><dl class="facts"><dt>Site</dt><dd>{site_name} ({site_id})</dd><dt>Network</dt><dd>{network}</dd>
<dt>Hub</dt><dd>{hub}</dd><dt>Link</dt><dd>{link}</dd><dt>Certificate expires</dt><dd>{certificate}</dd></dl></div>
<p><a href="/slides">Slides →</a> · <a href="/worklist">Screening worklist →</a></p>
<h2>Transfers to the hub</h2><div class="table-wrap"><table><thead><tr><th>Blob</th><th>What</th><th>Bytes</th><th>State</th></tr></thead><tbody>{transfers}</tbody></table></div>"#,
        site_name = escape(&state.kit.site_name),
        site_id = escape(state.kit.site_id.as_str()),
        network = escape(&state.kit.network),
        hub = escape(
            state
                .config
                .hub_addr
                .as_deref()
                .unwrap_or(&state.kit.hub_addr)
        ),
    );
    page(&state.page_title(), "Edge status", Some(&user), &body).into_response()
}

/// `GET /api/v1/transfers` (admins): the outbox, with each blob's progress.
#[utoipa::path(get, path = "/api/v1/transfers", tag = "transfers",
    responses((status = 200, description = "Every queued and sent blob", body = Vec<crate::outbox::OutboxStatus>), grassroots_web::openapi::Refusals))]
async fn transfers_api(State(state): State<Arc<EdgeState>>) -> Response {
    match state.outbox.statuses() {
        Ok(rows) => Json(rows).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct EnqueueRequest {
    /// A file in the edge's outgoing folder (relative to it, or absolute inside it).
    #[schema(value_type = String)]
    path: PathBuf,
    /// What the blob is, for the hub's list ("file" when absent).
    label: Option<String>,
}

/// `POST /api/v1/transfers` (admins): queue a file of the outgoing folder for the hub.
#[utoipa::path(post, path = "/api/v1/transfers", tag = "transfers", request_body = EnqueueRequest,
    responses(
        (status = 202, description = "Queued; it is sent, resumably, while the link is up", body = crate::outbox::OutboxEntry),
        (status = 400, description = "The path is not a file inside the outgoing folder", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals, grassroots_web::openapi::InputRefusals))]
async fn enqueue_api(
    State(state): State<Arc<EdgeState>>,
    Json(request): Json<EnqueueRequest>,
) -> Response {
    let path = match state.config.outgoing_file(&request.path) {
        Ok(path) => path,
        Err(error) => return WebError::BadRequest(error.to_string()).into_response(),
    };
    let label = request.label.unwrap_or_else(|| "file".into());
    match state.outbox.enqueue_file(&path, &label).await {
        Ok(entry) => (StatusCode::ACCEPTED, Json(entry)).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `GET /api/v1/slides`: every slide of this edge.
#[utoipa::path(get, path = "/api/v1/slides", tag = "slides",
    responses((status = 200, description = "Every slide, with its state", body = Vec<crate::slides::SlideRecord>), grassroots_web::openapi::Refusals))]
async fn slides_api(State(state): State<Arc<EdgeState>>) -> Response {
    match state.slides.records() {
        Ok(rows) => Json(rows).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

pub(crate) fn tile_error(error: crate::slides::TileError) -> Response {
    use crate::slides::TileError;
    use grassroots_slides::SlideError;
    match error {
        TileError::NoSuchSlide(_)
        | TileError::SlideFailed { .. }
        | TileError::Slide(
            SlideError::TileOutOfRange { .. } | SlideError::LevelOutOfRange { .. },
        ) => WebError::NotFound(error.to_string()).into_response(),
        TileError::Iiif(_) | TileError::Slide(SlideError::RegionTooLarge { .. }) => {
            WebError::BadRequest(error.to_string()).into_response()
        }
        other => WebError::Internal(other.to_string()).into_response(),
    }
}

/// Slides never change: a tile's address is its identity, cacheable for a year (privately: the
/// pixels are patient data).
fn immutable(
    etag: &str,
    headers: &axum::http::HeaderMap,
    content_type: &'static str,
    body: impl Into<axum::body::Body>,
) -> Response {
    use axum::http::header;
    let quoted = format!("\"{etag}\"");
    let cache = [
        (
            header::CACHE_CONTROL,
            "private, max-age=31536000, immutable".to_string(),
        ),
        (header::ETAG, quoted.clone()),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == quoted))
    {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (cache, [(header::CONTENT_TYPE, content_type)], body.into()).into_response()
}

/// `GET /slides/{id}.dzi`
async fn dzi(
    State(state): State<Arc<EdgeState>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let Some(id) = name.strip_suffix(".dzi") else {
        return WebError::NotFound(format!(
            "no {name}: slides are served as {{id}}.dzi and tiles"
        ))
        .into_response();
    };
    match state.slides.dzi(id).await {
        Ok(xml) => immutable(&format!("{id}-dzi"), &headers, "application/xml", xml),
        Err(error) => tile_error(error),
    }
}

/// `GET /slides/{id}_files/{level}/{col}_{row}.{jpeg|png}`
async fn tile(
    State(state): State<Arc<EdgeState>>,
    Path((name, level, tile)): Path<(String, String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    // Someone is looking at a slide: federated training waits.
    state.federated.activity.touch();
    let Some(id) = name.strip_suffix("_files") else {
        return WebError::NotFound(format!("no {name}")).into_response();
    };
    let (Ok(level), Some((col, row, format))) = (
        level.parse::<u32>(),
        grassroots_slides::parse_tile_name(&tile),
    ) else {
        return WebError::BadRequest(format!(
            "{level}/{tile} is not a tile address: expected LEVEL/COL_ROW.jpeg or .png"
        ))
        .into_response();
    };
    let etag = format!("{id}-{level}-{col}-{row}-{}", format.extension());
    if headers.contains_key(axum::http::header::IF_NONE_MATCH) {
        // Answer revalidations without rendering.
        if let Ok(Some(_)) = state.slides.record(id) {
            let response = immutable(&etag, &headers, format.mime(), axum::body::Body::empty());
            if response.status() == StatusCode::NOT_MODIFIED {
                return response;
            }
        }
    }
    match state.slides.tile(id, level, col, row, format).await {
        Ok(bytes) => immutable(&etag, &headers, format.mime(), bytes),
        Err(error) => tile_error(error),
    }
}

/// `GET /iiif/3/{id}`: the specification redirects the base URI to `info.json`.
async fn iiif_base(Path(id): Path<String>) -> Response {
    axum::response::Redirect::to(&format!("/iiif/3/{id}/info.json")).into_response()
}

/// `GET /iiif/3/{id}/info.json`
async fn iiif_info(
    State(state): State<Arc<EdgeState>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let info = match state.slides.ready_record(&id) {
        Ok((_, info)) => info,
        Err(error) => return tile_error(error),
    };
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if state.config.secure_cookies {
        "https"
    } else {
        "http"
    };
    let body = grassroots_slides::iiif::info_json(&format!("{scheme}://{host}/iiif/3/{id}"), &info);
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(
            "application/ld+json;profile=\"http://iiif.io/api/image/3/context.json\"",
        ),
    );
    response
}

/// `GET /iiif/3/{id}/{region}/{size}/{rotation}/{quality}.{format}`
async fn iiif_image(
    State(state): State<Arc<EdgeState>>,
    Path((id, region, size, rotation, file)): Path<(String, String, String, String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    state.federated.activity.touch();
    let mime = if file.ends_with(".png") {
        "image/png"
    } else {
        "image/jpeg"
    };
    let etag = format!("{id}-{region}-{size}-{rotation}-{file}").replace(['"', ' '], "_");
    match state
        .slides
        .iiif(&id, [&region, &size, &rotation, &file])
        .await
    {
        Ok(bytes) => immutable(&etag, &headers, mime, bytes),
        Err(error) => tile_error(error),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// The file's name (its extension tells OpenSlide the format).
    name: String,
}

/// The answer of `POST /api/v1/slides`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Uploaded {
    /// The same bytes were already here: nothing was added.
    duplicate: bool,
    slide: crate::slides::SlideRecord,
}

/// `POST /api/v1/slides?name=slide.svs` with the file as the body, streamed to disk.
#[utoipa::path(post, path = "/api/v1/slides", tag = "slides", params(UploadQuery),
    request_body(content_type = "application/octet-stream",
        description = "The slide file (OpenSlide formats, DICOM WSI), streamed"),
    responses(
        (status = 201, description = "Imported", body = Uploaded),
        (status = 200, description = "The same file was already imported", body = Uploaded),
        (status = 400, description = "Not a slide this edge reads, too large, or the disk is too full", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals, grassroots_web::openapi::InputRefusals))]
async fn upload_api(
    State(state): State<Arc<EdgeState>>,
    axum::extract::Query(query): axum::extract::Query<UploadQuery>,
    body: axum::body::Body,
) -> Response {
    let name = std::path::Path::new(&query.name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.is_empty() {
        return WebError::BadRequest("name must be a file name, e.g. slide.svs".into())
            .into_response();
    }
    let incoming = state.config.data_dir.join("incoming");
    let limits = crate::ingest::UploadLimits {
        max_bytes: state.config.max_upload_bytes,
        min_free_disk_bytes: state.config.min_free_disk_bytes,
    };
    match crate::ingest::upload(&state.slides, &incoming, &name, body, limits).await {
        Ok(outcome) => {
            let status = if outcome.duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (
                status,
                Json(Uploaded {
                    duplicate: outcome.duplicate,
                    slide: outcome.record,
                }),
            )
                .into_response()
        }
        Err(error) => {
            // A refused upload's body may be unread: the connection cannot carry another
            // request, and the client is told so (else it may reuse it and find it closed).
            let mut response = WebError::BadRequest(error.to_string()).into_response();
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct LinkCase {
    /// The case (accession) number, e.g. "S24-01234".
    number: String,
}

/// `POST /api/v1/slides/{id}/case` `{"number": "S24-01234"}`: links (or re-links) a slide by hand.
#[utoipa::path(post, path = "/api/v1/slides/{id}/case", tag = "slides",
    params(("id" = String, Path, description = "The slide's id")), request_body = LinkCase,
    responses(
        (status = 200, description = "The slide, linked to the case", body = crate::slides::SlideRecord),
        (status = 400, description = "No such slide, or not a case number", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals, grassroots_web::openapi::InputRefusals))]
async fn link_case_api(
    State(state): State<Arc<EdgeState>>,
    Path(id): Path<String>,
    Json(request): Json<LinkCase>,
) -> Response {
    let library = state.slides.clone();
    match tokio::task::spawn_blocking(move || library.link_case(&id, &request.number)).await {
        Ok(Ok(record)) => Json(record).into_response(),
        Ok(Err(error)) => WebError::BadRequest(error.to_string()).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `GET /api/v1/cases`: the cases slides are linked to.
#[utoipa::path(get, path = "/api/v1/cases", tag = "slides",
    responses((status = 200, description = "Every case with its slides", body = Vec<crate::cases::Case>), grassroots_web::openapi::Refusals))]
async fn cases_api(State(state): State<Arc<EdgeState>>) -> Response {
    match state.slides.cases().cases() {
        Ok(cases) => Json(cases).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `GET /api/v1/coverage`: the daily figures this site sends the hub, as they stand now —
/// exactly what leaves (the hub keeps one row per day from the latest report).
#[utoipa::path(get, path = "/api/v1/coverage", tag = "status",
    responses((status = 200, description = "Aggregates only: counts per day, no patient data", body = grassroots_wire::coverage::CoverageReport), grassroots_web::openapi::Refusals))]
async fn coverage_api(State(state): State<Arc<EdgeState>>) -> Response {
    match crate::coverage::compute(&state, time::OffsetDateTime::now_utc()).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}
