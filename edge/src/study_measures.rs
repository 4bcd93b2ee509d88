//! What the expert's measuring tools at the hub ask of a referred series: the geometry of each
//! picture of its stack (to turn a line drawn on a picture into millimetres, in the expert's
//! browser) and the modality values of a rectangle of one picture (HU for CT, measured here).
//! Numbers cross, never a pixel: the same line as the rendered frames (`crate::study_referrals`
//! checks the referral, the series and burned-in annotation, and records what leaves).

use grassroots_dicom::volume::{MAX_SPACING_MM, MIN_SPACING_MM};
use grassroots_dicom::DicomError;
use grassroots_wire::referral::{RegionFigures, StackPicture};
use serde::Deserialize;

use crate::study_viewer::{renderers, stack_frames};

/// A rectangle of picture `index` of the stack (from 0), in the image's own pixels
/// (`kind` `region`).
#[derive(Debug, Deserialize)]
struct RegionOfImage {
    index: usize,
    x: u32,
    y: u32,
    width: u32,
    height: u32,
}

/// The answer to a `stack` (the pictures' geometry, in stack order) or `region` view, as JSON.
pub(crate) async fn answer(
    state: &std::sync::Arc<crate::EdgeState>,
    (study_uid, series_uid): (&str, &str),
    kind: &str,
    query: &str,
) -> Result<Vec<u8>, String> {
    let region = if kind == "region" {
        let uri: axum::http::Uri = format!("/?{query}")
            .parse()
            .map_err(|_| format!("query {query:?} is not a URL's query"))?;
        let axum::extract::Query(region) =
            axum::extract::Query::<RegionOfImage>::try_from_uri(&uri).map_err(|e| e.body_text())?;
        Some(region)
    } else {
        None
    };
    // A region decodes a picture: it waits for a renderer's place, as a frame does; the stack's
    // geometry is read from the index alone.
    let place = match region {
        Some(_) => match renderers().acquire().await {
            Ok(place) => Some(place),
            Err(_) => return Err("the renderer is shutting down".into()),
        },
        None => None,
    };
    let studies = state.studies.clone();
    let (s, se) = (study_uid.to_string(), series_uid.to_string());
    tokio::task::spawn_blocking(move || {
        let _place = place;
        let stack = stack_frames(studies.index.instances_of(&s, &se)?);
        let json = match region {
            None => serde_json::to_vec(&geometry(&stack)),
            Some(region) => {
                let Some((record, frame)) = stack.get(region.index) else {
                    return Err(DicomError::BadQuery(format!(
                        "image {} of a series of {} images",
                        region.index,
                        stack.len()
                    )));
                };
                let rect = (region.x, region.y, region.width, region.height);
                let stats = grassroots_dicom::render::region_stats(
                    &studies.archive.path_of(&record.file),
                    *frame,
                    rect,
                )?;
                serde_json::to_vec(&RegionFigures {
                    pixels: stats.pixels as u64,
                    mean: stats.mean,
                    min: stats.min,
                    max: stats.max,
                    standard_deviation: stats.standard_deviation,
                })
            }
        };
        json.map_err(|e| DicomError::BadQuery(e.to_string()))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// Each picture's size and Pixel Spacing (0 for a size the image does not say).
fn geometry(
    stack: &[(std::sync::Arc<grassroots_dicom::index::InstanceRecord>, u32)],
) -> Vec<StackPicture> {
    stack
        .iter()
        .map(|(record, _)| {
            let a = &record.attributes;
            StackPicture {
                columns: u32::from(a.columns.unwrap_or(0)),
                rows: u32::from(a.rows.unwrap_or(0)),
                // A spacing out of the volumes' bounds (micrometres written as mm) is no spacing.
                spacing: a
                    .pixel_spacing
                    .as_ref()
                    .filter(|s| {
                        s.len() == 2
                            && s.iter()
                                .all(|mm| (MIN_SPACING_MM..=MAX_SPACING_MM).contains(mm))
                    })
                    .map(|s| [s[0], s[1]]),
            }
        })
        .collect()
}
