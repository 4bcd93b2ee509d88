//! Measuring a screening model on synthetic slides, and the evaluation by host.
//!
//! A figure that says "held out" must come from tissue no training or validation slide used.
//! With few real hosts, that is **leave-one-host-out**: for each host, a model is trained with
//! the same configuration on the other hosts (their first 60% trains, the rest chooses the
//! threshold), and measured on slides made of the whole held-out host with lesions from the
//! lesion images' test columns. The pooled held-out slides give the figures, each with a
//! bootstrap 95% interval (slides resampled within positives and within negatives; slides of
//! one host share tissue, so the intervals are, if anything, too narrow). The shipped model is
//! trained on every host; these figures estimate how the same training generalises to a host
//! it never saw. [`check_splits`] proves, from the regions each split reads, that no pixel is
//! in two splits and no held-out host trains.
//!
//! Beside them, never instead, each fold's model is measured once more as a site would use it
//! after recalibrating on its own confirmed cases ([`SiteCalibration`]): the threshold chosen
//! on one half of the held-out host, the other half called at it. The model still never saw the
//! host, but the threshold did, so those figures are not "held out"; they tell whether the
//! held-out misses come from calibration across hosts or from the model.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::dataset::{benign_windows, synthetic_slides, Split, TissueSources, LESION};
use crate::classifier::TileClassifier;
use crate::screening::{screen_image, TileGrid};
use crate::triage::{triage, TriagePolicy};
use crate::ModelError;
use image::RgbImage;

/// One synthetic slide as the model scored it.
#[derive(Debug, Clone, Serialize)]
pub struct ScoredSlide {
    pub positive: bool,
    pub score: f32,
    pub top_tile_on_lesion: bool,
    pub iou: f32,
    /// The host whose tissue the slide is (empty where slides mix a split's hosts).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Whether the slide scored at or above its model's threshold.
    pub suspicious: bool,
}

/// A proportion with its bootstrap 95% interval.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Interval {
    pub estimate: f32,
    pub low: f32,
    pub high: f32,
    /// Slides the proportion is over.
    pub over: usize,
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} (95% CI {:.2}-{:.2}, n={})",
            self.estimate, self.low, self.high, self.over
        )
    }
}

/// Bootstrap resamples behind every interval.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// The share of `outcomes` that are true, with the 2.5th and 97.5th percentiles of that share
/// over [`BOOTSTRAP_RESAMPLES`] resamples with replacement (seeded).
pub fn proportion(outcomes: &[bool], seed: u64) -> Interval {
    let n = outcomes.len();
    if n == 0 {
        return Interval {
            estimate: f32::NAN,
            low: f32::NAN,
            high: f32::NAN,
            over: 0,
        };
    }
    let share = |count: usize| count as f32 / n as f32;
    let estimate = share(outcomes.iter().filter(|o| **o).count());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut shares: Vec<f32> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| share((0..n).filter(|_| outcomes[rng.gen_range(0..n)]).count()))
        .collect();
    shares.sort_by(f32::total_cmp);
    let at =
        |q: f64| shares[((q * (shares.len() - 1) as f64).round() as usize).min(shares.len() - 1)];
    Interval {
        estimate,
        low: at(0.025),
        high: at(0.975),
        over: n,
    }
}

/// Slides by truth (rows: with a lesion, without) and call (columns: suspicious, not).
#[derive(Debug, Clone, Serialize)]
pub struct SlideConfusion {
    pub lesion_called_suspicious: usize,
    pub lesion_missed: usize,
    pub benign_called_suspicious: usize,
    pub benign_cleared: usize,
}

/// Figures over a set of scored slides, each called at its own model's threshold.
#[derive(Debug, Clone, Serialize)]
pub struct SlideFigures {
    pub sensitivity: Interval,
    pub specificity: Interval,
    /// Positives whose top tile lies on the planted lesion.
    pub localisation_hit_rate: Interval,
    pub mean_iou: f32,
    /// Over the slides pooled; in the evaluation by host each fold's slides are scored by its
    /// own model, so this is the AUC of the procedure, not of one model.
    pub auc: f32,
    pub confusion: SlideConfusion,
}

pub fn figures(slides: &[ScoredSlide], seed: u64) -> SlideFigures {
    let positives: Vec<&ScoredSlide> = slides.iter().filter(|s| s.positive).collect();
    let negatives: Vec<&ScoredSlide> = slides.iter().filter(|s| !s.positive).collect();
    let called: Vec<bool> = positives.iter().map(|s| s.suspicious).collect();
    let cleared: Vec<bool> = negatives.iter().map(|s| !s.suspicious).collect();
    let hits: Vec<bool> = positives.iter().map(|s| s.top_tile_on_lesion).collect();
    let count = |v: &[bool], want: bool| v.iter().filter(|x| **x == want).count();
    SlideFigures {
        sensitivity: proportion(&called, seed),
        specificity: proportion(&cleared, seed.wrapping_add(1)),
        localisation_hit_rate: proportion(&hits, seed.wrapping_add(2)),
        mean_iou: positives.iter().map(|s| s.iou).sum::<f32>() / positives.len().max(1) as f32,
        auc: auc(slides),
        confusion: SlideConfusion {
            lesion_called_suspicious: count(&called, true),
            lesion_missed: count(&called, false),
            benign_called_suspicious: count(&cleared, false),
            benign_cleared: count(&cleared, true),
        },
    }
}

/// One fold of the evaluation by host.
#[derive(Debug, Clone, Serialize)]
pub struct HostFold {
    pub held_out_host: String,
    pub training_hosts: Vec<String>,
    pub threshold: f32,
    pub best_epoch: usize,
    /// Tiles of the held-out host and the lesions' test columns, by true class (rows) and
    /// predicted class (columns).
    pub tile_confusion: Vec<Vec<usize>>,
    pub slides: Vec<ScoredSlide>,
    /// How well the slide score orders this host's slides whatever the threshold ([`auc`]):
    /// high where a fold misses only because its threshold, chosen on other hosts, does not
    /// suit this one.
    pub auc: f32,
    /// The limit on the share of tissue denser than the rest beyond which a slide is folded,
    /// chosen on the fold's validation slides ([`fold_limit`]).
    pub fold_dense_share_limit: Option<f32>,
    /// Quality control on benign slides of the held-out host, clean and spoilt.
    pub qc: QcFigures,
    /// The same model on the held-out host with the threshold chosen by the site
    /// ([`SiteCalibration`]).
    pub site_calibration: SiteCalibration,
}

/// A model trained without a host, its threshold then chosen on that host's own confirmed
/// cases, as a site would recalibrate: the slides of the host's first half (lesions from the
/// lesion images' validation columns) choose the threshold by [`threshold_for`], the slides
/// of its second half (lesions from the test columns) are called at it. The model never
/// trained on the host, but the threshold saw it: these figures are not "held out" in the
/// strict sense, and are reported beside the held-out ones, not instead.
#[derive(Debug, Clone, Serialize)]
pub struct SiteCalibration {
    /// Chosen on the calibration slides by [`threshold_for`].
    pub threshold: f32,
    /// The calibration slides, scored (their calls are at the site's threshold).
    pub calibration: Vec<ScoredSlide>,
    /// The slides screened next, called at the site's threshold.
    pub slides: Vec<ScoredSlide>,
}

/// Slides of one kind, and how many of them triage flagged "needs re-scan".
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct QcCount {
    pub flagged: usize,
    pub slides: usize,
}

impl QcCount {
    pub fn rate(&self) -> f32 {
        self.flagged as f32 / self.slides.max(1) as f32
    }
}

/// Quality control per slide, as the edge triages (fault shares over
/// [`TriagePolicy::default`]'s limit): the same benign windows clean, out of focus and folded.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct QcFigures {
    /// Clean slides flagged (goal: at most 5%).
    pub clean: QcCount,
    /// Out of focus: the whole slide blurred, Gaussian sigma of 3-7 um (goal: at least 95%).
    pub blurred: QcCount,
    /// Folded: the tissue folded back over itself along a line near the middle, a band of
    /// 35-50% of the slide covered by the mirror image of its neighbour (goal: at least 95%).
    pub folded: QcCount,
}

impl QcFigures {
    pub fn add(&mut self, other: &QcFigures) {
        for (mine, theirs) in [
            (&mut self.clean, other.clean),
            (&mut self.blurred, other.blurred),
            (&mut self.folded, other.folded),
        ] {
            mine.flagged += theirs.flagged;
            mine.slides += theirs.slides;
        }
    }
}

/// The tissue of `image` folded back over itself along a vertical line at `line`: the band
/// right of it, `width` wide, covered by the mirror image of the tissue left of it.
pub fn fold_over(image: &RgbImage, line: u32, width: u32) -> RgbImage {
    let mut folded = image.clone();
    let width = width.min(line).min(image.width().saturating_sub(line));
    if width == 0 {
        return folded;
    }
    let height = image.height();
    let under = image::imageops::crop_imm(image, line, 0, width, height).to_image();
    let neighbour = image::imageops::crop_imm(image, line - width, 0, width, height).to_image();
    let over = image::imageops::flip_horizontal(&neighbour);
    // Two layers, as the training tiles' folds are made.
    let layered = super::dataset::fold(&under, &over);
    image::imageops::replace(&mut folded, &layered, i64::from(line), 0);
    folded
}

/// The limit on a slide's dense share ([`crate::folds`]) chosen on `sources`' validation
/// split: `count` benign windows, of which the limit flags at most 5%; `None` without any.
/// Needs no model: the tiles it measures are those the edge would classify.
pub fn fold_limit(
    sources: &TissueSources,
    count: usize,
    tiles: (u32, u32),
    rng: &mut StdRng,
) -> Option<f32> {
    let shares: Vec<f32> = benign_windows(sources, Split::Validation, count, rng)
        .filter_map(|window| dense_share_of(&window, tiles))
        .collect();
    crate::folds::limit_from_clean_validation(&shares)
}

/// The dense shares of `count` benign windows of `sources`' `split`, clean and folded as
/// [`qc_slides`] folds its slides (a window without enough tissue gives neither).
pub fn dense_shares(
    sources: &TissueSources,
    split: Split,
    count: usize,
    tiles: (u32, u32),
    rng: &mut StdRng,
) -> (Vec<f32>, Vec<f32>) {
    let mut fold_rng = StdRng::seed_from_u64(rng.gen());
    let mut shares = (Vec::new(), Vec::new());
    for window in benign_windows(sources, split, count, rng) {
        let folded = fold_at_random(&window, &mut fold_rng);
        if let (Some(clean), Some(folded)) = (
            dense_share_of(&window, tiles),
            dense_share_of(&folded, tiles),
        ) {
            shares.0.push(clean);
            shares.1.push(folded);
        }
    }
    shares
}

/// [`crate::folds::dense_share`] of `image` cut as the edge cuts it.
fn dense_share_of(image: &RgbImage, (tile, stride): (u32, u32)) -> Option<f32> {
    crate::folds::dense_share(&crate::screening::PreparedGrid::cut(image, tile, stride).grid)
}

/// `image` folded as the QC figures fold a slide: along a line within 5% of the middle, a band
/// of 35-50% of its width covered.
fn fold_at_random(image: &RgbImage, rng: &mut StdRng) -> RgbImage {
    let w = image.width();
    let line = rng.gen_range(w * 45 / 100..=w * 55 / 100);
    fold_over(image, line, rng.gen_range(w * 35 / 100..=w * 50 / 100))
}

/// `count` benign slides of `sources`' test split triaged clean, out of focus and folded, with
/// folds judged by density beyond `max_dense_share` when there is one.
pub fn qc_slides(
    classifier: &TileClassifier,
    sources: &TissueSources,
    count: usize,
    (stride, max_dense_share): (u32, Option<f32>),
    rng: &mut StdRng,
) -> Result<QcFigures, ModelError> {
    let classes: Vec<String> = super::dataset::CLASSES
        .iter()
        .map(|c| c.to_string())
        .collect();
    let policy = TriagePolicy {
        max_dense_share,
        ..TriagePolicy::default()
    };
    let flagged = |image: &RgbImage| -> Result<bool, ModelError> {
        let grid = screen_image(classifier, image, stride)?;
        Ok(triage(&grid, &classes, &policy, 1.0).asks_for_rescan())
    };
    let pixels_per_um = (1.0 / sources.microns_per_pixel) as f32;
    let mut figures = QcFigures::default();
    let benign = synthetic_slides(sources, Split::Test, count * 2, rng)
        .into_iter()
        .filter(|slide| slide.lesion_mask.is_none());
    for slide in benign {
        let image = slide.image;
        let sigma = rng.gen_range(3.0..7.0) * pixels_per_um;
        let blurred = super::dataset::blur(&image, sigma);
        let folded = fold_at_random(&image, rng);
        for (kind, image) in [
            (&mut figures.clean, &image),
            (&mut figures.blurred, &blurred),
            (&mut figures.folded, &folded),
        ] {
            kind.slides += 1;
            kind.flagged += usize::from(flagged(image)?);
        }
    }
    Ok(figures)
}

/// The evaluation by host: every fold, and the pooled held-out figures.
#[derive(Debug, Clone, Serialize)]
pub struct HostEvaluation {
    pub folds: Vec<HostFold>,
    pub held_out: SlideFigures,
    pub held_out_tile_accuracy: f32,
    /// The folds' quality control on their held-out hosts, added up.
    pub held_out_qc: QcFigures,
    /// Problems [`check_splits`] found (always none: a fold whose splits leak stops training).
    pub split_problems: Vec<String>,
    /// The folds' site-calibrated slides pooled ([`SiteCalibration`]: not held out in the
    /// strict sense; the threshold saw the host).
    pub site_calibrated: SlideFigures,
}

/// Mann-Whitney's estimate of the AUC: ties count one half.
pub fn auc(slides: &[ScoredSlide]) -> f32 {
    let positives: Vec<f32> = slides
        .iter()
        .filter(|s| s.positive)
        .map(|s| s.score)
        .collect();
    let negatives: Vec<f32> = slides
        .iter()
        .filter(|s| !s.positive)
        .map(|s| s.score)
        .collect();
    if positives.is_empty() || negatives.is_empty() {
        return f32::NAN;
    }
    let mut wins = 0.0f64;
    for p in &positives {
        for n in &negatives {
            wins += match p.total_cmp(n) {
                std::cmp::Ordering::Greater => 1.0,
                std::cmp::Ordering::Equal => 0.5,
                std::cmp::Ordering::Less => 0.0,
            };
        }
    }
    (wins / (positives.len() * negatives.len()) as f64) as f32
}

/// Sensitivity and specificity of `slides` at `threshold`.
pub fn rates(slides: &[ScoredSlide], threshold: f32) -> (f32, f32) {
    let positives = slides.iter().filter(|s| s.positive);
    let negatives = slides.iter().filter(|s| !s.positive);
    let (p, n) = (
        positives.clone().count().max(1),
        negatives.clone().count().max(1),
    );
    (
        positives.filter(|s| s.score >= threshold).count() as f32 / p as f32,
        negatives.filter(|s| s.score < threshold).count() as f32 / n as f32,
    )
}

/// The operating point: just under the lowest score of a validation slide with a lesion
/// (100% validation sensitivity), the end of the gap between benign and lesion scores that
/// favours specificity. The benign end (just above the highest benign score) was measured too
/// and not kept: where a fold's benign validation slides score near zero it clears nothing on
/// a host the model never saw (held-out specificity 0.64 against 0.81; README, Screening).
pub fn threshold_for(validation: &[ScoredSlide]) -> f32 {
    validation
        .iter()
        .filter(|s| s.positive)
        .map(|s| s.score)
        .fold(f32::INFINITY, f32::min)
        * 0.999
}

/// `count` synthetic slides of `split` scored as the edge scores a slide (the smoothed lesion
/// map's peak), with the lesion's localisation.
pub fn score_slides(
    classifier: &TileClassifier,
    sources: &TissueSources,
    split: Split,
    count: usize,
    stride: u32,
    rng: &mut StdRng,
) -> Result<Vec<ScoredSlide>, ModelError> {
    // Slides of a held-out or site-calibration host are named after it (no other host has
    // tissue in their split); slides that mix a split's training hosts are not.
    let host = sources
        .hosts
        .iter()
        .filter(|h| match h.used {
            super::dataset::HostUse::HeldOut => split == Split::Test,
            super::dataset::HostUse::SiteCalibration => split != Split::Train,
            _ => false,
        })
        .map(|h| h.source.provenance.name.clone())
        .collect::<Vec<_>>()
        .join("+");
    synthetic_slides(sources, split, count, rng)
        .into_iter()
        .map(|slide| {
            let grid = screen_image(classifier, &slide.image, stride)?;
            let map = grid.smoothed_map(LESION);
            let (score, col, row) = grid.peak(&map).unwrap_or((0.0, 0, 0));
            let (top_tile_on_lesion, iou) = match &slide.lesion_mask {
                Some(mask) => localisation(&grid, &map, mask, (col, row), score),
                None => (false, 0.0),
            };
            Ok(ScoredSlide {
                positive: slide.lesion_mask.is_some(),
                score,
                top_tile_on_lesion,
                iou,
                host: host.clone(),
                suspicious: false,
            })
        })
        .collect()
}

/// Whether the top tile's centre lies on the planted mask, and the IoU of the region grown from
/// it (tiles with at least half the peak's lesion probability) with the mask.
fn localisation(
    grid: &TileGrid,
    lesion_map: &[f32],
    mask: &image::GrayImage,
    top: (u32, u32),
    peak: f32,
) -> (bool, f32) {
    let centre = |(col, row): (u32, u32)| {
        (
            col * grid.stride + grid.tile / 2,
            row * grid.stride + grid.tile / 2,
        )
    };
    let (cx, cy) = centre(top);
    let hit = mask.get_pixel(cx.min(mask.width() - 1), cy.min(mask.height() - 1))[0] > 0;
    let region = grid.region(lesion_map, top, peak * 0.5);
    let mut predicted = image::GrayImage::new(mask.width(), mask.height());
    for (col, row) in region {
        let (x0, y0) = (col * grid.stride, row * grid.stride);
        for y in y0..(y0 + grid.tile).min(mask.height()) {
            for x in x0..(x0 + grid.tile).min(mask.width()) {
                predicted.put_pixel(x, y, image::Luma([255]));
            }
        }
    }
    let (mut intersection, mut union) = (0u32, 0u32);
    for (p, m) in predicted.pixels().zip(mask.pixels()) {
        let (p, m) = (p[0] > 0, m[0] > 0);
        intersection += u32::from(p && m);
        union += u32::from(p || m);
    }
    (hit, intersection as f32 / union.max(1) as f32)
}

/// What is wrong with `sources`' splits: two regions of one image in different splits that
/// overlap, or a held-out host with tissue in training or validation. Empty when sound.
pub fn check_splits(sources: &TissueSources) -> Vec<String> {
    let regions = sources.regions();
    let mut problems = Vec::new();
    for (i, (name_a, split_a, a)) in regions.iter().enumerate() {
        for (name_b, split_b, b) in &regions[i + 1..] {
            let overlap = a.0 < b.0 + b.2 && b.0 < a.0 + a.2 && a.1 < b.1 + b.3 && b.1 < a.1 + a.3;
            if name_a == name_b && split_a != split_b && overlap {
                problems.push(format!(
                    "{name_a}: its {split_a:?} region {a:?} overlaps its {split_b:?} region {b:?}"
                ));
            }
        }
    }
    // A site-calibration host has no training area by construction; its halves (and the
    // lesion columns) are checked for overlap above.
    for host in &sources.hosts {
        if host.used == super::dataset::HostUse::HeldOut {
            let name = &host.source.provenance.name;
            if regions
                .iter()
                .any(|(n, split, _)| n == name && *split != Split::Test)
            {
                problems.push(format!(
                    "held-out host {name} has tissue in training or validation"
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slide(positive: bool, score: f32) -> ScoredSlide {
        ScoredSlide {
            positive,
            score,
            top_tile_on_lesion: false,
            iou: 0.0,
            host: String::new(),
            suspicious: false,
        }
    }

    #[test]
    fn the_threshold_sits_just_under_the_lowest_validation_lesion() {
        let validation = [
            slide(false, 0.02),
            slide(false, 0.19),
            slide(true, 0.26),
            slide(true, 0.9),
        ];
        let threshold = threshold_for(&validation);
        assert!(threshold < 0.26 && threshold > 0.259, "{threshold}");
        assert_eq!(rates(&validation, threshold), (1.0, 1.0));
        // A benign slide scoring in the gap, as on a host the model never saw, is cleared.
        assert_eq!(rates(&[slide(false, 0.22)], threshold).1, 1.0);
    }

    #[test]
    fn overlapping_validation_scores_keep_every_lesion_and_pay_in_specificity() {
        let validation = [slide(false, 0.5), slide(true, 0.3), slide(true, 0.8)];
        let threshold = threshold_for(&validation);
        assert!(threshold < 0.3 && threshold > 0.299, "{threshold}");
        assert_eq!(rates(&validation, threshold), (1.0, 0.0));
    }

    #[test]
    fn no_validation_lesion_calls_every_slide_benign() {
        let threshold = threshold_for(&[slide(false, 0.1)]);
        assert_eq!(rates(&[slide(true, 0.99)], threshold).0, 0.0);
    }
}
