//! Viewing a radiology series in the browser without sending it any pixel data: the stack
//! viewer page (`/studies/{study}/series/{series}`), the rendered frames it shows (DICOMweb's
//! WADO-RS rendered resources under `/dicom-web`, JPEG made on this server by
//! `grassroots_dicom::render`), and the HU of a region it measures. The browser gets pictures
//! and numbers; the images stay in the edge's archive.

use std::sync::{Arc, OnceLock};

use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use grassroots_dicom::index::InstanceRecord;
use grassroots_dicom::render::{RegionStats, RenderOptions, Window};
use grassroots_dicom::DicomError;
use grassroots_web::i18n::tr;
use grassroots_web::pages::{escape, page};
use grassroots_web::{CurrentUser, WebError};
use grassroots_wire::referral::SeriesFigures;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::EdgeState;

/// Renderings at once: one per core, so that a burst of viewers queues instead of starving the
/// screening and the web server.
pub(crate) fn renderers() -> &'static Semaphore {
    static RENDERERS: OnceLock<Semaphore> = OnceLock::new();
    RENDERERS
        .get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())))
}

pub(crate) fn refusal(error: DicomError) -> Response {
    match error {
        DicomError::BadQuery(reason) => WebError::BadRequest(reason).into_response(),
        DicomError::NoSuchFrame { .. } => WebError::NotFound(error.to_string()).into_response(),
        DicomError::Unreadable { .. }
        | DicomError::UnsupportedTransferSyntax(_)
        | DicomError::NotAVolume(_) => (
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            Json(grassroots_web::openapi::ApiError {
                error: error.to_string(),
            }),
        )
            .into_response(),
        other => WebError::Internal(other.to_string()).into_response(),
    }
}

fn instance(
    state: &EdgeState,
    study: &str,
    series: &str,
    sop: &str,
) -> Result<InstanceRecord, WebError> {
    match state.studies.index.instance(study, series, sop) {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(WebError::NotFound(format!(
            "no instance {sop} in series {series}"
        ))),
        Err(error) => Err(WebError::Internal(error.to_string())),
    }
}

/// PS3.18's query parameters of a rendered resource that this server honours.
#[derive(Debug, Deserialize)]
pub struct RenderedQuery {
    /// `center,width[,linear]`
    pub(crate) window: Option<String>,
    /// `columns,rows`: fit within.
    pub(crate) viewport: Option<String>,
}

/// The largest picture sent, either side.
const MAX_VIEWPORT: u32 = 2048;
/// Images of a series the stack viewer lists, at most (a file may claim any number of frames).
const MAX_STACK_IMAGES: usize = grassroots_wire::referral::MAX_STACK_IMAGES;

pub(crate) fn render_options(
    query: &RenderedQuery,
    frame: u32,
) -> Result<RenderOptions, DicomError> {
    let window = query.window.as_deref().map(Window::parse).transpose()?;
    let viewport = match query.viewport.as_deref() {
        None => None,
        Some(text) => {
            let mut parts = text.split(',').map(|p| p.trim().parse::<u32>());
            match (parts.next(), parts.next()) {
                // A larger box than this is served as this: pictures are never enlarged.
                (Some(Ok(w)), Some(Ok(h))) if w > 0 && h > 0 => {
                    Some((w.min(MAX_VIEWPORT), h.min(MAX_VIEWPORT)))
                }
                _ => {
                    return Err(DicomError::BadQuery(format!(
                        "viewport {text:?}: write columns,rows (whole numbers above 0)"
                    )))
                }
            }
        }
    };
    Ok(RenderOptions {
        frame,
        window,
        viewport,
    })
}

async fn rendered(
    state: Arc<EdgeState>,
    (study, series, sop): (String, String, String),
    frame: u32,
    (query, headers): (RenderedQuery, HeaderMap),
) -> Response {
    if let Err(refused) =
        crate::dicomweb_accept::negotiate(&headers, &[crate::dicomweb_accept::JPEG], &[])
    {
        return refused;
    }
    let record = match instance(&state, &study, &series, &sop) {
        Ok(record) => record,
        Err(error) => return error.into_response(),
    };
    let options = match render_options(&query, frame) {
        Ok(options) => options,
        Err(error) => return refusal(error),
    };
    let Ok(place) = renderers().acquire().await else {
        return WebError::Internal("the renderer is shutting down".into()).into_response();
    };
    let path = state.studies.archive.path_of(&record.file);
    // The place is held by the work itself: a client that leaves does not free it early.
    match tokio::task::spawn_blocking(move || {
        let _place = place;
        grassroots_dicom::render::render(&path, &options)
    })
    .await
    {
        Ok(Ok(image)) => {
            let mut response = ([(header::CONTENT_TYPE, "image/jpeg")], image.jpeg).into_response();
            if let Some(window) = image.window {
                if let Ok(value) = format!("{},{}", window.center, window.width).parse() {
                    response.headers_mut().insert("x-window", value);
                }
            }
            response
        }
        Ok(Err(error)) => refusal(error),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `GET /dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered`: the first
/// frame as JPEG.
pub(crate) async fn instance_rendered(
    State(state): State<Arc<EdgeState>>,
    Path(ids): Path<(String, String, String)>,
    Query(query): Query<RenderedQuery>,
    headers: HeaderMap,
) -> Response {
    rendered(state, ids, 0, (query, headers)).await
}

/// `GET /dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered`
/// (frames count from 1, as in DICOMweb).
pub(crate) async fn frame_rendered(
    State(state): State<Arc<EdgeState>>,
    Path((study, series, sop, frame)): Path<(String, String, String, u32)>,
    Query(query): Query<RenderedQuery>,
    headers: HeaderMap,
) -> Response {
    if frame == 0 {
        return WebError::BadRequest("frames are numbered from 1".into()).into_response();
    }
    rendered(state, (study, series, sop), frame - 1, (query, headers)).await
}

/// The rectangle of `GET .../region`, in image pixels.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RegionQuery {
    /// Frame, from 1 (default 1).
    frame: Option<u32>,
    x: u32,
    y: u32,
    width: u32,
    height: u32,
}

/// `GET /api/v1/studies/{study}/series/{series}/instances/{instance}/region`: the modality
/// values (HU for CT) of a rectangle: mean, extremes, standard deviation.
#[utoipa::path(get, path = "/api/v1/studies/{study}/series/{series}/instances/{instance}/region", tag = "studies",
    params(("study" = String, Path, description = "Study Instance UID"),
        ("series" = String, Path, description = "Series Instance UID"),
        ("instance" = String, Path, description = "SOP Instance UID"), RegionQuery),
    responses((status = 200, description = "The region's statistics", body = RegionStats),
        (status = 404, description = "No such instance or frame", body = grassroots_web::openapi::ApiError),
        (status = 422, description = "The image cannot be decoded", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals, grassroots_web::openapi::InputRefusals))]
pub(crate) async fn region_api(
    State(state): State<Arc<EdgeState>>,
    Path((study, series, sop)): Path<(String, String, String)>,
    Query(query): Query<RegionQuery>,
) -> Response {
    let record = match instance(&state, &study, &series, &sop) {
        Ok(record) => record,
        Err(error) => return error.into_response(),
    };
    let frame = match query.frame.unwrap_or(1) {
        0 => return WebError::BadRequest("frames are numbered from 1".into()).into_response(),
        frame => frame - 1,
    };
    let rect = (query.x, query.y, query.width, query.height);
    let path = state.studies.archive.path_of(&record.file);
    let Ok(place) = renderers().acquire().await else {
        return WebError::Internal("the renderer is shutting down".into()).into_response();
    };
    match tokio::task::spawn_blocking(move || {
        let _place = place;
        grassroots_dicom::render::region_stats(&path, frame, rect)
    })
    .await
    {
        Ok(Ok(stats)) => Json(stats).into_response(),
        Ok(Err(error)) => refusal(error),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `GET /studies/{study}/series/{series}/mpr.jpg`: a plane cut through the series' volume
/// (or a slab projected), as JPEG.
#[derive(Debug, Deserialize)]
pub struct PlaneQuery {
    orientation: grassroots_dicom::volume::Orientation,
    /// From the volume's centre along the plane's normal, mm.
    #[serde(default)]
    offset: f64,
    /// Turn about the image's vertical axis, degrees.
    #[serde(default)]
    rotation: f64,
    #[serde(default)]
    projection: grassroots_dicom::volume::Projection,
    /// Slab thickness, mm.
    #[serde(default)]
    slab: f64,
    window: Option<String>,
    /// `columns,rows`: the picture fits within.
    viewport: Option<String>,
}

/// The volume of a series, from the cache or built now: the index read off the runtime, and a
/// build (only when the cache does not hold the volume) holding a renderer's place.
pub(crate) async fn volume_of(
    state: &Arc<EdgeState>,
    study: &str,
    series: &str,
) -> Result<Arc<grassroots_dicom::volume::Volume>, Response> {
    let index = state.studies.index.clone();
    let archive = state.studies.archive.clone();
    let volumes = state.volumes.clone();
    let (study_uid, series_uid) = (study.to_string(), series.to_string());
    let internal =
        |error: &dyn std::fmt::Display| WebError::Internal(error.to_string()).into_response();
    let (s, se) = (study_uid.clone(), series_uid.clone());
    let instances = tokio::task::spawn_blocking(move || index.instances_of(&s, &se))
        .await
        .map_err(|e| internal(&e))?
        .map_err(refusal)?;
    if instances.is_empty() {
        return Err(
            WebError::NotFound(format!("no series {series_uid} in study {study_uid}"))
                .into_response(),
        );
    }
    // The count and the latest arrival are in the key: a series that changed is built again.
    let latest = instances
        .iter()
        .map(|i| i.received_at.as_str())
        .max()
        .unwrap_or_default()
        .to_string();
    let key = format!("{study_uid}/{series_uid}#{}#{latest}", instances.len());
    match volumes.get(&key) {
        Some(Ok(volume)) => return Ok(volume),
        Some(Err(error)) => return Err(refusal(error)),
        None => {}
    }
    let Ok(place) = renderers().acquire().await else {
        return Err(WebError::Internal("the renderer is shutting down".into()).into_response());
    };
    let built = tokio::task::spawn_blocking(move || {
        let _place = place;
        let budget = volumes.budget_bytes();
        volumes.get_or_build(&key, || {
            let files: Vec<_> = instances
                .into_iter()
                .map(|record| (archive.path_of(&record.file), record.attributes))
                .collect();
            grassroots_dicom::volume::Volume::build(&files, budget)
        })
    })
    .await
    .map_err(|e| internal(&e))?;
    built.map_err(refusal)
}

pub(crate) async fn plane_image(
    State(state): State<Arc<EdgeState>>,
    Path((study, series)): Path<(String, String)>,
    Query(query): Query<PlaneQuery>,
) -> Response {
    if let Err(error) = query.check() {
        return refusal(error);
    }
    volume_picture(&state, &study, &series, move |volume| {
        plane_jpeg(volume, &query)
    })
    .await
}

/// The JPEG `render` makes of a series' volume (blocking work, holding a renderer's place),
/// as an answer: the picture, or the refusal with its reason.
pub(crate) async fn volume_picture(
    state: &Arc<EdgeState>,
    study: &str,
    series: &str,
    render: impl FnOnce(&grassroots_dicom::volume::Volume) -> Result<Vec<u8>, DicomError>
        + Send
        + 'static,
) -> Response {
    let volume = match volume_of(state, study, series).await {
        Ok(volume) => volume,
        Err(response) => return response,
    };
    let Ok(place) = renderers().acquire().await else {
        return WebError::Internal("the renderer is shutting down".into()).into_response();
    };
    let result = tokio::task::spawn_blocking(move || {
        let _place = place;
        render(&volume)
    })
    .await;
    match result {
        Ok(Ok(jpeg)) => ([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response(),
        Ok(Err(error)) => refusal(error),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

impl PlaneQuery {
    /// Refuses what no plane can be cut for, before any volume is built.
    pub(crate) fn check(&self) -> Result<(), DicomError> {
        render_options(
            &RenderedQuery {
                window: self.window.clone(),
                viewport: self.viewport.clone(),
            },
            0,
        )?;
        let sane = self.offset.is_finite()
            && self.rotation.is_finite()
            && (0.0..=500.0).contains(&self.slab);
        if sane {
            Ok(())
        } else {
            Err(DicomError::BadQuery(
                "offset, rotation and slab (0 to 500 mm) are numbers".into(),
            ))
        }
    }
}

/// The plane (or slab) `query` asks for, cut through `volume` and encoded as JPEG: blocking
/// work, for a renderer's place.
pub(crate) fn plane_jpeg(
    volume: &grassroots_dicom::volume::Volume,
    query: &PlaneQuery,
) -> Result<Vec<u8>, DicomError> {
    use grassroots_dicom::volume::{cut, PlaneRequest};
    query.check()?;
    let rendered = render_options(
        &RenderedQuery {
            window: query.window.clone(),
            viewport: query.viewport.clone(),
        },
        0,
    )?;
    let window = rendered.window.unwrap_or(Window {
        center: 40.0,
        width: 400.0,
    });
    let viewport = rendered.viewport.unwrap_or((512, 512));
    // The whole volume fits the viewport: one output pixel is this many mm.
    let whole = PlaneRequest::fitting(volume, query.orientation, 1.0);
    let pixel_mm = (whole.width as f64 / f64::from(viewport.0))
        .max(whole.height as f64 / f64::from(viewport.1))
        // Never finer than the volume's own voxels: a bigger picture would show nothing more.
        .max(volume.spacing.iter().copied().fold(f64::MAX, f64::min));
    let mut request = PlaneRequest::fitting(volume, query.orientation, pixel_mm);
    request.offset_mm = query.offset;
    request.rotation_degrees = query.rotation;
    request.projection = query.projection;
    request.slab_mm = query.slab;
    let plane = cut(volume, &request);
    grassroots_dicom::render::encode_values(
        &plane.values,
        plane.width as u32,
        plane.height as u32,
        window,
        None,
    )
}

/// Why a series cannot be shown, if `response` is a 422 refusal (a series that is no volume).
pub(crate) async fn unprocessable_reason(response: Response) -> Option<String> {
    if response.status() != axum::http::StatusCode::UNPROCESSABLE_ENTITY {
        return None;
    }
    axum::body::to_bytes(response.into_body(), 16 * 1024)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<grassroots_web::openapi::ApiError>(&b).ok())
        .map(|e| e.error)
}

/// The figures the viewer pages need of a volume (the edge's own, and the hub's through a
/// `describe` view): each orientation's picture size in mm, and whether the volume lies along
/// the patient's axes.
pub(crate) fn figures_of(volume: &grassroots_dicom::volume::Volume) -> SeriesFigures {
    use grassroots_dicom::volume::{Orientation, PlaneRequest};
    let extent = |o| {
        let r = PlaneRequest::fitting(volume, o, 1.0);
        [(r.width - 1) as f64, (r.height - 1) as f64]
    };
    SeriesFigures {
        axial: extent(Orientation::Axial),
        coronal: extent(Orientation::Coronal),
        sagittal: extent(Orientation::Sagittal),
        along_patient_axes: volume.row_direction[0].abs() > 0.99
            && volume.column_direction[1].abs() > 0.99,
    }
}

/// `GET /studies/{study}/series/{series}/mpr`: axial, coronal and sagittal views of the volume
/// with linked cursors, slabs and an oblique turn; a series that is no volume says why.
pub(crate) async fn mpr_page(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((study, series)): Path<(String, String)>,
) -> Response {
    let stack_link = format!(
        r#"<p><a href="/studies/{}/series/{}">{}</a></p>"#,
        escape(&study),
        escape(&series),
        tr("Back to the images")
    );
    let volume = match volume_of(&state, &study, &series).await {
        Ok(volume) => volume,
        Err(response) if response.status() == axum::http::StatusCode::UNPROCESSABLE_ENTITY => {
            let reason = unprocessable_reason(response).await.unwrap_or_default();
            let body = grassroots_web::study_views::viewer_off(
                "mpr-off",
                &stack_link,
                "Reformatting is off for this series; its images are shown as a stack only:",
                &reason,
            );
            return page(&state.page_title(), "Reformatted views", Some(&user), &body)
                .into_response();
        }
        Err(response) => return response,
    };
    let body = grassroots_web::study_views::mpr_body(
        &format!("/studies/{study}/series/{series}/render"),
        &figures_of(&volume),
        &stack_link,
        &format!(
            r#"<p><a href="/studies/{}/series/{}/3d">{}</a></p>"#,
            escape(&study),
            escape(&series),
            tr("Volume rendering")
        ),
    );
    page(&state.page_title(), "Reformatted views", Some(&user), &body).into_response()
}

/// One image of the stack, as the viewer script reads it.
#[derive(Debug, Serialize)]
struct StackImage {
    instance: String,
    frame: u32,
    rows: u16,
    columns: u16,
    /// Row and column spacing, mm (Pixel Spacing), if the image says.
    spacing: Option<[f64; 2]>,
}

/// The pictures of a series as the stack viewer scrolls them: each instance in scan order
/// ([`stack_order`]), each of its frames (from 0), at most `MAX_STACK_IMAGES`.
pub(crate) fn stack_frames(instances: Vec<InstanceRecord>) -> Vec<(Arc<InstanceRecord>, u32)> {
    stack_order(instances)
        .into_iter()
        .flat_map(|record| {
            let frames = record
                .attributes
                .number_of_frames
                .unwrap_or(1)
                .clamp(1, MAX_STACK_IMAGES as u32);
            let record = Arc::new(record);
            (0..frames).map(move |frame| (record.clone(), frame))
        })
        .take(MAX_STACK_IMAGES)
        .collect()
}

/// A picture of a series' stack, as the hub's relay asks for it (`kind` `image`).
#[derive(Debug, Deserialize)]
pub(crate) struct ImageQuery {
    /// Its place in the stack, from 0.
    pub(crate) index: usize,
    pub(crate) window: Option<String>,
    pub(crate) viewport: Option<String>,
}

/// Renders picture `query.index` of a series' stack (blocking work, for a renderer's place).
pub(crate) fn stack_image_jpeg(
    archive: &grassroots_dicom::Archive,
    instances: Vec<InstanceRecord>,
    query: &ImageQuery,
) -> Result<Vec<u8>, DicomError> {
    let stack = stack_frames(instances);
    let Some((record, frame)) = stack.get(query.index) else {
        return Err(DicomError::BadQuery(format!(
            "image {} of a series of {} images",
            query.index,
            stack.len()
        )));
    };
    let options = render_options(
        &RenderedQuery {
            window: query.window.clone(),
            viewport: query.viewport.clone(),
        },
        *frame,
    )?;
    grassroots_dicom::render::render(&archive.path_of(&record.file), &options).map(|r| r.jpeg)
}

/// The series' images in the order of their place along the scan: by position on the slice
/// normal when every image has its geometry, else by instance number.
fn stack_order(mut instances: Vec<InstanceRecord>) -> Vec<InstanceRecord> {
    let along = |record: &InstanceRecord| -> Option<f64> {
        let a = &record.attributes;
        let o = a
            .image_orientation_patient
            .as_ref()
            .filter(|o| o.len() == 6)?;
        let p = a.image_position_patient.as_ref().filter(|p| p.len() == 3)?;
        let normal = [
            o[1] * o[5] - o[2] * o[4],
            o[2] * o[3] - o[0] * o[5],
            o[0] * o[4] - o[1] * o[3],
        ];
        Some(normal[0] * p[0] + normal[1] * p[1] + normal[2] * p[2])
    };
    if instances.iter().all(|i| along(i).is_some()) {
        instances.sort_by(|a, b| {
            along(a)
                .unwrap_or_default()
                .total_cmp(&along(b).unwrap_or_default())
        });
    }
    instances
}

/// `GET /studies/{study}/series/{series}`: the stack viewer.
pub(crate) async fn series_page(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((study, series)): Path<(String, String)>,
) -> Response {
    let instances = match crate::studies::series_instances(&state, &study, &series) {
        Ok(instances) => instances,
        Err(error) => return error.into_response(),
    };
    let description = state
        .studies
        .index
        .series_of(&study)
        .ok()
        .and_then(|all| {
            all.into_iter()
                .find(|s| s.series.series_instance_uid == series)
        })
        .map(|s| format!("{} {}", s.series.modality, s.series.series_description))
        .unwrap_or_default();
    let stack: Vec<StackImage> = stack_frames(instances)
        .into_iter()
        .map(|(record, frame)| {
            let a = &record.attributes;
            StackImage {
                instance: a.sop_instance_uid.clone(),
                frame: frame + 1,
                rows: a.rows.unwrap_or(0),
                columns: a.columns.unwrap_or(0),
                spacing: a
                    .pixel_spacing
                    .as_ref()
                    .filter(|s| s.len() == 2)
                    .map(|s| [s[0], s[1]]),
            }
        })
        .collect();
    let stack_json = serde_json::to_string(&stack).unwrap_or_else(|_| "[]".into());
    let prefix = crate::assets::PREFIX;
    let body = format!(
        r#"<style>
.stack-tools {{ display:flex; flex-wrap:wrap; gap:.5rem 1rem; align-items:center; margin-bottom:.5rem; }}
.stack-tools fieldset {{ display:flex; flex-wrap:wrap; gap:.25rem .75rem; border:1px solid #ccc; border-radius:6px; padding:.25rem .75rem; margin:0; }}
.stack-tools button {{ min-width:2.75rem; min-height:2.75rem; }}
.stack-viewer {{ position:relative; width:100%; height:calc(100vh - 16rem); min-height:320px; background:#000; border-radius:6px; overflow:hidden; touch-action:none; }}
.stack-viewer:focus-visible {{ outline:3px solid #ffd400; }}
.stack-frame {{ position:absolute; inset:0; display:flex; align-items:center; justify-content:center; }}
.stack-frame img, .stack-frame svg {{ max-width:100%; max-height:100%; transform-origin:center; }}
.stack-frame svg {{ position:absolute; width:100%; height:100%; pointer-events:none; }}
.stack-viewer .viewer-wait {{ position:absolute; top:0; left:0; margin:0; padding:1rem; color:#fff; }}
</style>
<p><a href="/studies/{study_link}">{back}</a> · <span translate="no">{description}</span> · <a href="/studies/{study_link}/series/{series_link}/mpr">{mpr}</a> · <a href="/studies/{study_link}/series/{series_link}/3d">{volume_link}</a></p>
<div class="stack-tools" role="toolbar" aria-label="{tools}">
{window}
<fieldset class="stack-mode"><legend>{mouse}</legend>
<label><input type="radio" name="stack-mode" value="scroll" checked> {scroll}</label>
<label><input type="radio" name="stack-mode" value="window"> {window_tool}</label>
<label><input type="radio" name="stack-mode" value="pan"> {pan}</label>
<label><input type="radio" name="stack-mode" value="length"> {length}</label>
<label><input type="radio" name="stack-mode" value="region"> {region}</label>
</fieldset>
<button type="button" id="stack-zoom-in" aria-label="{zoom_in}">+</button> <button type="button" id="stack-zoom-out" aria-label="{zoom_out}">−</button> <button type="button" id="stack-reset">{reset}</button>
<label>{image_label} <input type="range" id="stack-index" min="1" max="{count}" value="1"></label>
</div>
<div id="stack-viewer" class="stack-viewer" tabindex="0" aria-label="{viewer_label}" data-study="{study}" data-series="{series}" data-stack="{stack}">
<div class="stack-frame"><img id="stack-image" alt="{image_alt}"><svg id="stack-overlay" aria-hidden="true"></svg></div>
<p class="viewer-wait">{loading}</p>
</div>
<p id="stack-status" role="status" class="muted"></p>
<p id="stack-measure" role="status"></p>
<script src="{prefix}/viewer/marks.js"></script>
<script src="{prefix}/web/stack.js"></script>"#,
        study_link = escape(&study),
        series_link = escape(&series),
        mpr = tr("Reformatted views (MPR, MIP)"),
        volume_link = tr("Volume rendering"),
        back = tr("Back to the study"),
        description = escape(&description),
        tools = tr("Viewer tools"),
        window = grassroots_web::study_views::window_select("stack-window", true),
        mouse = tr("Dragging"),
        scroll = tr("scrolls the images"),
        window_tool = tr("changes the window"),
        pan = tr("moves the image"),
        length = tr("measures a length"),
        region = tr("measures a region's HU"),
        zoom_in = tr("Zoom in"),
        zoom_out = tr("Zoom out"),
        reset = tr("Reset"),
        image_label = tr("Image"),
        count = stack.len(),
        viewer_label = tr("The series' images: arrow keys or the wheel move through them"),
        study = escape(&study),
        series = escape(&series),
        stack = escape(&stack_json),
        image_alt = tr("An image of the series, rendered by the edge"),
        loading = tr("Loading the image…"),
    );
    page(&state.page_title(), "Series", Some(&user), &body).into_response()
}
