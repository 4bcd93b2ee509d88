//! Screening a whole slide at the edge: read at the model's resolution part by part (a slide of
//! 89k x 119k pixels never sits in memory whole), every tile over tissue classified, the parts'
//! grids joined into one, then triage with the model's operating point.
//!
//! Parts are squares of [`CELLS_PER_PART`] grid cells, read with the overlap that keeps the grid
//! continuous across them, so the result is the same as screening the whole image at once.

use grassroots_models::screening::{screen_image, TileGrid};
use grassroots_models::triage::{triage, Triage, TriagePolicy};
use grassroots_models::TileClassifier;
use grassroots_slides::Slide;
use serde::{Deserialize, Serialize};

use crate::EdgeError;

/// Grid cells per side of a part read at once (64 cells at 16 px: about 1,040 px square).
pub const CELLS_PER_PART: u32 = 64;

/// Resolution assumed for a slide that does not state its own.
const DEFAULT_MICRONS_PER_PIXEL: f64 = 0.5;

/// What screening found on a slide.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlideScreening {
    /// The package digest of the model that screened it.
    pub model: String,
    pub cols: u32,
    pub rows: u32,
    /// Full-resolution pixels between grid cells.
    pub cell_pixels: f64,
    /// Lesion probability (neighbourhood-averaged) per cell, 0-255, row by row.
    pub lesion_map: Vec<u8>,
    pub tiles_classified: usize,
    pub triage: Triage,
}

fn read_error(error: impl std::fmt::Display) -> EdgeError {
    EdgeError::Config(format!("screening: {error}"))
}

/// Screens `slide`, reporting `(parts done, parts)` as it goes.
pub fn screen_slide(
    slide: &Slide,
    classifier: &TileClassifier,
    mut progress: impl FnMut(u32, u32),
) -> Result<SlideScreening, EdgeError> {
    let manifest = classifier.manifest();
    let info = slide.info();
    let slide_mpp = info
        .microns_per_pixel_x
        .filter(|m| *m > 0.0)
        .unwrap_or(DEFAULT_MICRONS_PER_PIXEL);
    // Full-resolution pixels per model pixel.
    let scale = manifest.microns_per_pixel / slide_mpp;
    let (width, height) = (
        (f64::from(info.width) / scale).floor() as u32,
        (f64::from(info.height) / scale).floor() as u32,
    );
    let tile = manifest.input.width;
    let stride = (tile / 2).max(1);
    let count = |length: u32| {
        if length >= tile {
            (length - tile) / stride + 1
        } else {
            0
        }
    };
    let (cols, rows) = (count(width), count(height));
    let mut grid = TileGrid {
        cols,
        rows,
        tile,
        stride,
        cells: vec![
            grassroots_models::screening::GridCell {
                tissue: 0.0,
                probabilities: None,
            };
            (cols * rows) as usize
        ],
    };
    let (parts_across, parts_down) = (cols.div_ceil(CELLS_PER_PART), rows.div_ceil(CELLS_PER_PART));
    let parts = parts_across * parts_down;
    for part in 0..parts {
        let (first_col, first_row) = (
            (part % parts_across) * CELLS_PER_PART,
            (part / parts_across) * CELLS_PER_PART,
        );
        let (part_cols, part_rows) = (
            CELLS_PER_PART.min(cols - first_col),
            CELLS_PER_PART.min(rows - first_row),
        );
        // The part's pixels at the model's resolution, and the same place at full resolution.
        let (x, y) = (first_col * stride, first_row * stride);
        let (w, h) = (
            (part_cols - 1) * stride + tile,
            (part_rows - 1) * stride + tile,
        );
        let full = |v: u32| (f64::from(v) * scale).round() as u32;
        let region = (
            full(x),
            full(y),
            full(w).min(info.width - full(x)),
            full(h).min(info.height - full(y)),
        );
        let image = slide.region_rgb(region, (w, h)).map_err(read_error)?;
        let part_grid = screen_image(classifier, &image, stride).map_err(read_error)?;
        for row in 0..part_rows.min(part_grid.rows) {
            for col in 0..part_cols.min(part_grid.cols) {
                let at = ((first_row + row) * cols + first_col + col) as usize;
                grid.cells[at] = part_grid.cell(col, row).clone();
            }
        }
        progress(part + 1, parts);
    }
    let policy = TriagePolicy {
        suspicious_threshold: manifest
            .thresholds
            .get("suspicious")
            .copied()
            .unwrap_or(TriagePolicy::default().suspicious_threshold),
        ..TriagePolicy::default()
    };
    let decision = triage(&grid, &manifest.classes, &policy, scale);
    let lesion_map = match manifest.class_index("lesion") {
        Some(index) => grid
            .smoothed_map(index)
            .into_iter()
            .map(|p| (p.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect(),
        None => vec![0; grid.cells.len()],
    };
    Ok(SlideScreening {
        model: classifier.digest().to_string(),
        cols,
        rows,
        cell_pixels: f64::from(stride) * scale,
        lesion_map,
        tiles_classified: grid
            .cells
            .iter()
            .filter(|c| c.probabilities.is_some())
            .count(),
        triage: decision,
    })
}
