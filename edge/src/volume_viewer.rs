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
    let body = grassroots_web::study_views::volume_body(
        &format!("/studies/{study}/series/{series}/render"),
        &crate::study_viewer::figures_of(&volume),
        &back,
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
    let body = grassroots_web::study_views::viewer_off(
        "volume-off",
        back,
        "Volume rendering is off for this series; its images are shown as a stack only:",
        &reason,
    );
    page(&state.page_title(), "Volume rendering", Some(user), &body).into_response()
}
