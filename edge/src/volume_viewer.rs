//! Volume rendering of a CT or MR series for the browser: the page
//! (`/studies/{study}/series/{series}/3d`), where dragging turns the volume and the wheel zooms,
//! and the picture itself, made on this server by `grassroots_dicom::raycast` and sent as JPEG
//! (`.../volume.jpg`, or a frame on the viewer's socket, `crate::render_socket`). As with the
//! stack and the reformatted views, the browser never receives a voxel.

use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use grassroots_dicom::raycast::{encode_rgb, render_volume, Preset, VolumeView};
use grassroots_dicom::volume::Volume;
use grassroots_dicom::DicomError;
use grassroots_web::i18n::tr;
use grassroots_web::pages::{escape, page};
use grassroots_web::CurrentUser;
use serde::Deserialize;

use crate::study_viewer::{refusal, volume_of};
use crate::EdgeState;

/// The largest volume rendering, either side: a ray per pixel costs far more than a plane's.
const MAX_VOLUME_VIEWPORT: usize = 1024;

/// What a volume rendering may be asked for.
#[derive(Debug, Deserialize)]
pub struct VolumeQuery {
    #[serde(default)]
    preset: Preset,
    /// Degrees about the head-foot axis (0: from the front).
    #[serde(default)]
    azimuth: f64,
    /// Degrees of tilt (positive: from above the head).
    #[serde(default)]
    elevation: f64,
    /// 1 shows the whole volume.
    zoom: Option<f64>,
    /// The cropping box: `left,right,front,back,feet,head`-wise fractions of the volume along
    /// its columns, rows and slices, `x0,x1,y0,y1,z0,z1` (0 to 1).
    crop: Option<String>,
    /// `columns,rows`: the picture's size.
    viewport: Option<String>,
    /// Surface shading (on unless `false`).
    shade: Option<bool>,
    /// `draft`: samples twice as far apart along each ray, for the quick frames while the
    /// pointer moves (as VTK's interactive sample distance); else the voxels' own spacing.
    quality: Option<String>,
}

impl VolumeQuery {
    /// The view asked for, or why it cannot be rendered.
    pub(crate) fn view(&self) -> Result<VolumeView, DicomError> {
        let bad = |reason: &str| Err(DicomError::BadQuery(reason.to_string()));
        if !(self.azimuth.is_finite() && self.elevation.is_finite()) {
            return bad("azimuth and elevation are degrees");
        }
        let zoom = self.zoom.unwrap_or(1.0);
        if !(0.25..=8.0).contains(&zoom) {
            return bad("zoom is a number from 0.25 to 8");
        }
        let mut crop = [[0.0, 1.0]; 3];
        if let Some(text) = &self.crop {
            let Ok(fractions) = text
                .split(',')
                .map(|part| part.trim().parse::<f64>())
                .collect::<Result<Vec<f64>, _>>()
            else {
                return bad("crop is six fractions: x0,x1,y0,y1,z0,z1");
            };
            if fractions.len() != 6 || fractions.iter().any(|f| !(0.0..=1.0).contains(f)) {
                return bad("crop is six fractions from 0 to 1: x0,x1,y0,y1,z0,z1");
            }
            for axis in 0..3 {
                crop[axis] = [fractions[2 * axis], fractions[2 * axis + 1]];
            }
        }
        let (width, height) = match self.viewport.as_deref() {
            None => (512, 512),
            Some(text) => {
                let mut parts = text.split(',').map(|p| p.trim().parse::<usize>());
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(Ok(w)), Some(Ok(h)), None) if w > 0 && h > 0 => {
                        (w.min(MAX_VOLUME_VIEWPORT), h.min(MAX_VOLUME_VIEWPORT))
                    }
                    _ => return bad("viewport: write columns,rows (whole numbers above 0)"),
                }
            }
        };
        let draft = match self.quality.as_deref() {
            None | Some("full") => false,
            Some("draft") => true,
            Some(other) => {
                return Err(DicomError::BadQuery(format!(
                    "quality {other:?}: draft or full"
                )))
            }
        };
        Ok(VolumeView {
            draft,
            preset: self.preset,
            azimuth_degrees: self.azimuth,
            elevation_degrees: self.elevation.clamp(-90.0, 90.0),
            zoom,
            crop,
            sample_mm: 0.0,
            shade: self.shade.unwrap_or(true),
            width,
            height,
        })
    }
}

/// The volume rendering `query` asks for, as JPEG: blocking work, for a renderer's place.
pub(crate) fn volume_jpeg(volume: &Volume, query: &VolumeQuery) -> Result<Vec<u8>, DicomError> {
    let view = query.view()?;
    encode_rgb(&render_volume(volume, volume.blocks(), &view))
}

/// `GET /studies/{study}/series/{series}/volume.jpg`: one volume rendering.
pub(crate) async fn volume_image(
    State(state): State<Arc<EdgeState>>,
    Path((study, series)): Path<(String, String)>,
    Query(query): Query<VolumeQuery>,
) -> Response {
    if let Err(error) = query.view() {
        return refusal(error);
    }
    crate::study_viewer::volume_picture(&state, &study, &series, move |volume| {
        volume_jpeg(volume, &query)
    })
    .await
}

/// `GET /studies/{study}/series/{series}/3d`: the volume rendering page; a series that is no
/// volume says why, as the reformatting page does.
pub(crate) async fn volume_page(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((study, series)): Path<(String, String)>,
) -> Response {
    let back = format!(
        r#"<p><a href="/studies/{s}/series/{se}">{images}</a> · <a href="/studies/{s}/series/{se}/mpr">{mpr}</a></p>"#,
        s = escape(&study),
        se = escape(&series),
        images = tr("Back to the images"),
        mpr = tr("Reformatted views"),
    );
    let volume = match volume_of(&state, &study, &series).await {
        Ok(volume) => volume,
        Err(response) => return volume_off(&state, &user, &back, response).await,
    };
    // The cropping sliders run along the volume's own axes: named after the patient's when
    // those lie along the patient's (an axial series), else after the images' columns, rows
    // and slices.
    let axial = volume.row_direction[0].abs() > 0.99 && volume.column_direction[1].abs() > 0.99;
    let (x_label, y_label, z_label) = if axial {
        (tr("Right to left"), tr("Front to back"), tr("Feet to head"))
    } else {
        (tr("Columns"), tr("Rows"), tr("Slices"))
    };
    let prefix = crate::assets::PREFIX;
    let crop = |axis: &str, label: &str, low: &str, high: &str| {
        format!(
            r#"<fieldset class="volume-crop"><legend>{label}</legend><label>{low} <input type="range" id="crop-{axis}0" min="0" max="100" value="0"></label><label>{high} <input type="range" id="crop-{axis}1" min="0" max="100" value="100"></label></fieldset>"#
        )
    };
    let body = format!(
        r#"<style>
.volume-tools {{ display:flex; flex-wrap:wrap; gap:.5rem 1rem; align-items:center; margin-bottom:.5rem; }}
.volume-crop {{ display:flex; gap:.5rem; border:1px solid #ccc; border-radius:6px; padding:.2rem .6rem; }}
.volume-view {{ position:relative; max-width:min(100%, 80vh); aspect-ratio:1; background:#000; border-radius:6px; overflow:hidden; touch-action:none; cursor:grab; }}
.volume-view:focus-visible {{ outline:3px solid #ffd400; }}
.volume-view img {{ width:100%; height:100%; object-fit:contain; }}
</style>
{back}
<div class="volume-tools" role="toolbar" aria-label="{tools}">
<label>{preset_label} <select id="volume-preset"><option value="bone">{bone}</option><option value="soft-tissue">{soft}</option><option value="lung">{lung}</option><option value="vessels">{vessels}</option></select></label>
<span><button type="button" data-turn="0,0">{front}</button> <button type="button" data-turn="90,0">{side}</button> <button type="button" data-turn="0,89">{top}</button></span>
{crop_x}{crop_y}{crop_z}
</div>
<div id="volume" class="volume-view" tabindex="0" data-study="{study}" data-series="{series}" aria-label="{view_label}"><img alt="{view_label}"></div>
<p class="muted">{hint}</p>
<p id="volume-status" role="status" class="muted"></p>
<script src="{prefix}/web/render-socket.js"></script>
<script src="{prefix}/web/volume.js"></script>"#,
        tools = tr("Viewer tools"),
        preset_label = tr("Preset"),
        bone = tr("Bone"),
        soft = tr("Soft tissue"),
        lung = tr("Lung"),
        vessels = tr("Vessels"),
        front = tr("Front"),
        side = tr("Side"),
        top = tr("Top"),
        crop_x = crop("x", x_label, tr("Cut from"), tr("Cut to")),
        crop_y = crop("y", y_label, tr("Cut from"), tr("Cut to")),
        crop_z = crop("z", z_label, tr("Cut from"), tr("Cut to")),
        view_label = tr("Volume rendering"),
        hint = tr("Drag to turn the volume, the wheel or + and - to zoom, the arrow keys to turn it by steps."),
        study = escape(&study),
        series = escape(&series),
    );
    page(&state.page_title(), "Volume rendering", Some(&user), &body).into_response()
}

/// The page of a series that cannot be volume rendered, saying why (or the refusal itself
/// when it is not about the series being no volume).
async fn volume_off(
    state: &EdgeState,
    user: &grassroots_web::accounts::Account,
    back: &str,
    response: Response,
) -> Response {
    if response.status() != axum::http::StatusCode::UNPROCESSABLE_ENTITY {
        return response;
    }
    let reason = crate::study_viewer::unprocessable_reason(response)
        .await
        .unwrap_or_default();
    let body = format!(
        r#"{back}<p class="warning" id="volume-off">{} <span translate="no">{}</span></p>"#,
        tr("Volume rendering is off for this series; its images are shown as a stack only:"),
        escape(&grassroots_web::i18n::message_in(
            grassroots_web::nav::lang(),
            &reason
        )),
    );
    page(&state.page_title(), "Volume rendering", Some(user), &body).into_response()
}
