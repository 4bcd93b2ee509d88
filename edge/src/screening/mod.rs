//! Screening a whole slide at the edge.
//!
//! First the **overview**: the whole slide read small (about 16 um/px), which finds the tissue and
//! measures the exposure. Then the **parts**: squares of grid cells at the model's resolution,
//! read one after another (a slide of 89k x 119k pixels never sits in memory whole) with the
//! overlap that keeps the grid continuous, so that the result is the same as screening the whole
//! image at once. Parts with no tissue on the overview are not read at all. Reading and decoding
//! the next part overlaps classifying this one, on as many threads as the box has cores.
//!
//! [`jobs`] persists each finished part, so a killed edge resumes where it stopped;
//! [`active_model`] holds the verified model package the edge screens with.

pub mod active_model;
pub mod jobs;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use grassroots_models::exposure::Exposure;
use grassroots_models::screening::{is_tissue, GridCell, PreparedGrid, TileGrid};
use grassroots_models::triage::{triage, Triage, TriagePolicy};
use grassroots_models::TileClassifier;
use grassroots_slides::Slide;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::EdgeError;

/// Grid cells per side of a part read at once (64 cells at 16 px: about 1,040 px square).
pub const CELLS_PER_PART: u32 = 64;

/// Resolution assumed for a slide that does not state its own.
const DEFAULT_MICRONS_PER_PIXEL: f64 = 0.5;

/// The overview's resolution, whatever the model's: tissue, exposure and the artefact detector
/// look at it, and a finer one would be too large to read at once for a large slide (a 1 um/px
/// model's overview at 8 um/px would be 11,100 x 14,835 px for an 89k x 119k px slide).
const OVERVIEW_MICRONS_PER_PIXEL: f64 = 16.0;

/// What screening found on a slide.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SlideScreening {
    /// The package digest of the model that screened it.
    pub model: String,
    /// The model's name and version, for people.
    #[serde(default)]
    pub model_name: String,
    pub cols: u32,
    pub rows: u32,
    /// Full-resolution pixels between grid cells.
    pub cell_pixels: f64,
    /// Full-resolution pixels from a cell's corner to its centre's square: where the heatmap's
    /// first pixel starts (each map pixel covers the middle `cell_pixels` of its tile).
    #[serde(default)]
    pub map_offset: f64,
    /// Lesion probability (neighbourhood-averaged) per cell, 0-255, row by row.
    #[serde(skip)]
    pub lesion_map: Vec<u8>,
    pub tiles_classified: usize,
    pub triage: Triage,
}

fn read_error(error: impl std::fmt::Display) -> EdgeError {
    EdgeError::Config(format!("screening: {error}"))
}

/// One part of the grid: its cells and the pixels to read for them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Part {
    pub first_col: u32,
    pub first_row: u32,
    pub cols: u32,
    pub rows: u32,
    /// Full-resolution region (x, y, w, h).
    pub region: (u32, u32, u32, u32),
    /// Size to read it at (the model's resolution).
    pub size: (u32, u32),
}

/// A slide about to be screened with a model: the grid, the parts and the overview.
pub struct SlideScreener<'a> {
    slide: &'a Slide,
    classifier: &'a TileClassifier,
    /// Full-resolution pixels per model pixel.
    scale: f64,
    pub cols: u32,
    pub rows: u32,
    tile: u32,
    stride: u32,
    part_cells: u32,
    overview: RgbImage,
    /// Full-resolution pixels per overview pixel.
    overview_scale: f64,
    /// The slide's own microns per pixel (or the default assumed).
    slide_mpp: f64,
    pub exposure: Exposure,
}

impl<'a> SlideScreener<'a> {
    /// Plans the screening of `slide` and reads its overview.
    pub fn new(
        slide: &'a Slide,
        classifier: &'a TileClassifier,
        part_cells: u32,
    ) -> Result<Self, EdgeError> {
        let manifest = classifier.manifest();
        let info = slide.info();
        let slide_mpp = info
            .microns_per_pixel_x
            .filter(|m| *m > 0.0)
            .unwrap_or(DEFAULT_MICRONS_PER_PIXEL);
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
        // Slide pixels per overview pixel.
        let overview_scale = (OVERVIEW_MICRONS_PER_PIXEL / slide_mpp).max(1.0);
        let overview_size = (
            ((f64::from(info.width) / overview_scale).ceil() as u32).max(1),
            ((f64::from(info.height) / overview_scale).ceil() as u32).max(1),
        );
        let overview = slide
            .region_rgb((0, 0, info.width, info.height), overview_size)
            .map_err(read_error)?;
        let exposure = Exposure::measure(&overview);
        Ok(Self {
            slide,
            classifier,
            scale,
            cols: count(width),
            rows: count(height),
            tile,
            stride,
            part_cells: part_cells.max(2),
            overview,
            overview_scale,
            slide_mpp,
            exposure,
        })
    }

    fn parts_across(&self) -> u32 {
        self.cols.div_ceil(self.part_cells)
    }

    pub fn parts(&self) -> u32 {
        self.parts_across() * self.rows.div_ceil(self.part_cells)
    }

    pub fn part(&self, index: u32) -> Part {
        let across = self.parts_across().max(1);
        let (first_col, first_row) = (
            (index % across) * self.part_cells,
            (index / across) * self.part_cells,
        );
        let (cols, rows) = (
            self.part_cells.min(self.cols - first_col),
            self.part_cells.min(self.rows - first_row),
        );
        let (x, y) = (first_col * self.stride, first_row * self.stride);
        let (w, h) = (
            (cols - 1) * self.stride + self.tile,
            (rows - 1) * self.stride + self.tile,
        );
        let info = self.slide.info();
        let full = |v: u32| (f64::from(v) * self.scale).round() as u32;
        let (fx, fy) = (full(x).min(info.width - 1), full(y).min(info.height - 1));
        Part {
            first_col,
            first_row,
            cols,
            rows,
            region: (
                fx,
                fy,
                full(w).min(info.width - fx),
                full(h).min(info.height - fy),
            ),
            size: (w, h),
        }
    }

    /// Whether the overview shows any tissue where `part` lies.
    pub fn part_has_tissue(&self, part: &Part) -> bool {
        let (x, y, w, h) = part.region;
        let to_overview = |v: u32| (f64::from(v) / self.overview_scale) as u32;
        let (x0, y0) = (to_overview(x), to_overview(y));
        let (x1, y1) = (
            to_overview(x + w).min(self.overview.width() - 1),
            to_overview(y + h).min(self.overview.height() - 1),
        );
        (y0..=y1).any(|y| (x0..=x1).any(|x| is_tissue(self.overview.get_pixel(x, y))))
    }

    /// Screens the parts `todo` in order, handing each part's cells (row by row) to `finished`
    /// as soon as they are classified. Stops early, without error, when `stop` is set.
    pub fn run(
        &self,
        todo: &[u32],
        workers: usize,
        stop: &AtomicBool,
        mut finished: impl FnMut(u32, Vec<GridCell>) -> Result<(), EdgeError>,
    ) -> Result<(), EdgeError> {
        std::thread::scope(|scope| {
            // The reader runs one part ahead of the classifiers.
            let (sender, receiver) =
                mpsc::sync_channel::<Result<(u32, PreparedGrid), EdgeError>>(1);
            let reader = scope.spawn(move || {
                for &index in todo {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let prepared = self.prepare(index).map(|grid| (index, grid));
                    let failed = prepared.is_err();
                    if sender.send(prepared).is_err() || failed {
                        break;
                    }
                }
            });
            let mut outcome = Ok(());
            for prepared in receiver.iter() {
                let step = prepared.and_then(|(index, prepared)| {
                    let part = self.part(index);
                    let grid = prepared
                        .classify(self.classifier, workers)
                        .map_err(read_error)?;
                    finished(index, part_cells(&part, &grid))
                });
                if let Err(error) = step {
                    outcome = Err(error);
                    break;
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            drop(receiver);
            let _ = reader.join();
            outcome
        })
    }

    fn prepare(&self, index: u32) -> Result<PreparedGrid, EdgeError> {
        let part = self.part(index);
        if !self.part_has_tissue(&part) {
            // Glass: every cell unclassified, nothing read.
            return Ok(PreparedGrid {
                grid: TileGrid::empty(part.cols, part.rows, self.tile, self.stride),
                on_tissue: Vec::new(),
            });
        }
        let image = self
            .slide
            .region_rgb(part.region, part.size)
            .map_err(read_error)?;
        Ok(PreparedGrid::cut(&image, self.tile, self.stride))
    }

    /// Joins the parts' cells into the slide's grid and triages it.
    pub fn finish(
        &self,
        mut part_cells: impl FnMut(u32) -> Result<Vec<GridCell>, EdgeError>,
    ) -> Result<SlideScreening, EdgeError> {
        let mut grid = TileGrid::empty(self.cols, self.rows, self.tile, self.stride);
        for index in 0..self.parts() {
            let part = self.part(index);
            let cells = part_cells(index)?;
            if cells.len() != (part.cols * part.rows) as usize {
                return Err(read_error(format!(
                    "part {index} has {} cells, not {}",
                    cells.len(),
                    part.cols * part.rows
                )));
            }
            for (i, cell) in cells.into_iter().enumerate() {
                let (col, row) = (i as u32 % part.cols, i as u32 / part.cols);
                grid.cells[((part.first_row + row) * self.cols + part.first_col + col) as usize] =
                    cell;
            }
        }
        let manifest = self.classifier.manifest();
        let policy = TriagePolicy {
            suspicious_threshold: manifest
                .thresholds
                .get("suspicious")
                .copied()
                .unwrap_or(TriagePolicy::default().suspicious_threshold),
            // Folds by the density limit the package carries (chosen on validation slides);
            // by the fold class for packages made before it.
            max_dense_share: manifest
                .thresholds
                .get(grassroots_models::folds::MANIFEST_THRESHOLD)
                .copied(),
            ..TriagePolicy::default()
        };
        // Pen on the glass and the coverslip's edge, seen on the overview by the detector the
        // package carries (learnt from real examples), if it carries one.
        let artefacts = manifest
            .artefacts
            .as_ref()
            .map_or_else(Vec::new, |detector| {
                detector.detect(&self.overview, self.overview_scale * self.slide_mpp)
            });
        let decision = triage(&grid, &manifest.classes, &policy, self.scale)
            .with_exposure(self.exposure)
            .with_artefacts(artefacts, self.overview_scale);
        let lesion_map = match manifest.class_index("lesion") {
            Some(index) => grid
                .smoothed_map(index)
                .into_iter()
                .map(|p| (p.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect(),
            None => vec![0; grid.cells.len()],
        };
        Ok(SlideScreening {
            model: self.classifier.digest().to_string(),
            model_name: format!("{} {}", manifest.name, manifest.version),
            cols: self.cols,
            rows: self.rows,
            cell_pixels: f64::from(self.stride) * self.scale,
            map_offset: f64::from(self.tile - self.stride) / 2.0 * self.scale,
            lesion_map,
            tiles_classified: grid
                .cells
                .iter()
                .filter(|c| c.probabilities.is_some())
                .count(),
            triage: decision,
        })
    }
}

/// The cells of `part` from the grid screened over its pixels (row by row; cells the part's
/// pixels could not hold stay unclassified).
fn part_cells(part: &Part, grid: &TileGrid) -> Vec<GridCell> {
    let mut cells = Vec::with_capacity((part.cols * part.rows) as usize);
    for row in 0..part.rows {
        for col in 0..part.cols {
            cells.push(if col < grid.cols && row < grid.rows {
                grid.cell(col, row).clone()
            } else {
                GridCell {
                    tissue: 0.0,
                    density: None,
                    probabilities: None,
                }
            });
        }
    }
    cells
}

/// The cores to classify on.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Screens `slide` start to finish in memory, reporting `(parts done, parts)` as it goes (the
/// benchmark and tests; the edge runs [`jobs`], which persist each part).
pub fn screen_slide(
    slide: &Slide,
    classifier: &TileClassifier,
    mut progress: impl FnMut(u32, u32),
) -> Result<SlideScreening, EdgeError> {
    let screener = SlideScreener::new(slide, classifier, CELLS_PER_PART)?;
    let parts = screener.parts();
    let mut results: Vec<Option<Vec<GridCell>>> = vec![None; parts as usize];
    let todo: Vec<u32> = (0..parts).collect();
    let mut done = 0;
    screener.run(
        &todo,
        default_workers(),
        &AtomicBool::new(false),
        |index, cells| {
            results[index as usize] = Some(cells);
            done += 1;
            progress(done, parts);
            Ok(())
        },
    )?;
    screener.finish(|index| {
        results[index as usize]
            .take()
            .ok_or_else(|| read_error(format!("part {index} was not screened")))
    })
}
