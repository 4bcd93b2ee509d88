//! How a newly installed model does on this site's own confirmed cases, next to the model it
//! replaced: the evidence the hub's canary rollout decides on.
//!
//! Tiles are cut from the site's labels (as for training, with a fixed seed so both models see
//! the same tiles) and classified by both models with tract, as screening runs them. Reported:
//! agreement with the labels (the share of tiles whose predicted class is the labelled one) and
//! the quality-control rejection rate (the share of labelled tissue and lesion tiles the model
//! calls blur, pen or fold). And the score drift: tiles from the site's most recent slides,
//! labelled or not, scored by both models — the mean change in lesion probability says whether
//! the new model would screen this site's current cases very differently from the one staff
//! know. Only these figures leave the edge, in a `model-evaluation` blob.

use std::sync::Arc;

use grassroots_models::training::dataset::{LabelledTile, BLUR, FOLD, LESION, PEN, TISSUE};
use grassroots_models::{ModelPackage, PackageVerifier, TileClassifier};
use grassroots_wire::models::{ModelEvaluationReport, MODEL_EVALUATION_LABEL};

use crate::labels::{LabelClass, TrainingLabel};
use crate::{EdgeError, EdgeState};

/// Recent slides the drift is measured on, and tissue tiles from each.
const DRIFT_SLIDES: usize = 10;
const DRIFT_TILES_PER_SLIDE: usize = 16;

/// Tiles per label for an evaluation.
const TILES_PER_LABEL: usize = 32;
/// The same tiles for every evaluation at this site.
const SEED: u64 = 0x6576_616c;

/// (agreement with the labels, QC rejection rate of labelled tissue and lesion tiles).
fn measure(classifier: &TileClassifier, tiles: &[LabelledTile]) -> Result<(f32, f32), EdgeError> {
    let mut agree = 0usize;
    let (mut tissue, mut rejected) = (0usize, 0usize);
    for chunk in tiles.chunks(classifier.batch_size().max(1)) {
        let images: Vec<image::RgbImage> = chunk.iter().map(|t| t.image.clone()).collect();
        let probabilities = classifier
            .classify(&images)
            .map_err(|e| EdgeError::Config(e.to_string()))?;
        for (tile, p) in chunk.iter().zip(probabilities) {
            let predicted = p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            agree += usize::from(predicted == tile.class);
            if tile.class == TISSUE || tile.class == LESION {
                tissue += 1;
                rejected += usize::from(matches!(predicted, BLUR | PEN | FOLD));
            }
        }
    }
    Ok((
        agree as f32 / tiles.len().max(1) as f32,
        rejected as f32 / tissue.max(1) as f32,
    ))
}

/// Each tile's lesion probability.
fn lesion_scores(
    classifier: &TileClassifier,
    tiles: &[LabelledTile],
) -> Result<Vec<f32>, EdgeError> {
    let mut scores = Vec::with_capacity(tiles.len());
    for chunk in tiles.chunks(classifier.batch_size().max(1)) {
        let images: Vec<image::RgbImage> = chunk.iter().map(|t| t.image.clone()).collect();
        let probabilities = classifier
            .classify(&images)
            .map_err(|e| EdgeError::Config(e.to_string()))?;
        scores.extend(
            probabilities
                .iter()
                .map(|p| p.get(LESION).copied().unwrap_or(0.0)),
        );
    }
    Ok(scores)
}

/// Tissue tiles from the most recent ready slides (cut as from a benign slide: anywhere the
/// tissue mask says tissue), the same tiles for both models.
fn recent_tiles(
    state: &EdgeState,
    tile: u32,
    microns_per_pixel: f64,
) -> Result<Vec<LabelledTile>, EdgeError> {
    let mut records = state.slides.records()?;
    records.retain(|r| r.state == crate::slides::SlideState::Ready);
    records.sort_by_key(|r| std::cmp::Reverse(r.imported_at));
    let recent: Vec<TrainingLabel> = records
        .iter()
        .take(DRIFT_SLIDES)
        .map(|r| TrainingLabel {
            id: format!("recent:{}", r.id),
            slide_id: r.id.clone(),
            class: LabelClass::Benign,
            regions: Vec::new(),
            source: "recent",
            by: String::new(),
            withdrawn: false,
        })
        .collect();
    let (tiles, _) = crate::training_tiles::cut(
        &state.slides,
        &recent,
        tile,
        microns_per_pixel,
        DRIFT_TILES_PER_SLIDE,
        SEED ^ 1,
        false,
    )?;
    Ok(tiles.into_iter().filter(|t| t.class == TISSUE).collect())
}

/// Evaluates the active model against the previous one on the site's labels (after an
/// install: the canary's evidence).
pub(crate) fn evaluate(state: &EdgeState) -> Result<ModelEvaluationReport, EdgeError> {
    let model = &state.screening.model;
    let (package, bytes) = model
        .active_package()
        .ok_or_else(|| EdgeError::Config("no active model".into()))?;
    let verifier = PackageVerifier::from_public_hex(&state.kit.model_signing_public_key)
        .map_err(|e| EdgeError::Config(e.to_string()))?;
    let previous = model
        .previous_package_bytes()
        .and_then(|b| ModelPackage::open(&b, &verifier).ok())
        .and_then(|p| TileClassifier::load(&p, 64).ok());
    compare(
        state,
        &package,
        blake3::hash(&bytes).to_hex().to_string(),
        previous,
    )
}

/// Evaluates a version the hub sent only to be measured (cross-site evaluation) against the
/// model this edge runs, on the site's labels; the candidate is not installed.
pub(crate) fn evaluate_candidate(
    state: &EdgeState,
    candidate: &[u8],
) -> Result<ModelEvaluationReport, EdgeError> {
    let verifier = PackageVerifier::from_public_hex(&state.kit.model_signing_public_key)
        .map_err(|e| EdgeError::Config(e.to_string()))?;
    let package = ModelPackage::open(candidate, &verifier)
        .map_err(|e| EdgeError::Config(format!("the candidate model is refused: {e}")))?;
    let active = state
        .screening
        .model
        .active_package()
        .and_then(|(p, _)| TileClassifier::load(&p, 64).ok());
    compare(
        state,
        &package,
        blake3::hash(candidate).to_hex().to_string(),
        active,
    )
}

/// `package` (whose digest is `digest`) against `previous`, on the site's labels and its
/// recent slides.
fn compare(
    state: &EdgeState,
    package: &ModelPackage,
    digest: String,
    previous: Option<TileClassifier>,
) -> Result<ModelEvaluationReport, EdgeError> {
    let active = TileClassifier::load(package, 64).map_err(|e| EdgeError::Config(e.to_string()))?;
    let referrals = state.referrals.list()?;
    let labels = state.labels.all(&referrals)?;
    let manifest = &package.manifest;
    let (tiles, _) = crate::training_tiles::cut(
        &state.slides,
        &labels,
        manifest.input.width,
        manifest.microns_per_pixel,
        TILES_PER_LABEL,
        SEED,
        false,
    )?;
    let (agreement, qc_rejection_rate) = measure(&active, &tiles)?;
    let (previous_agreement, previous_qc_rejection_rate, score_drift, drift_tiles) = match &previous
    {
        // The previous model may read tiles at another size: then there is no comparison.
        Some(previous) if previous.manifest().input == manifest.input => {
            let (a, q) = measure(previous, &tiles)?;
            let recent = recent_tiles(state, manifest.input.width, manifest.microns_per_pixel)?;
            let now = lesion_scores(&active, &recent)?;
            let before = lesion_scores(previous, &recent)?;
            let drift = (!recent.is_empty()).then(|| {
                now.iter()
                    .zip(&before)
                    .map(|(a, b)| (a - b).abs())
                    .sum::<f32>()
                    / recent.len() as f32
            });
            (Some(a), Some(q), drift, recent.len() as u64)
        }
        _ => (None, None, None, 0),
    };
    Ok(ModelEvaluationReport {
        digest,
        previous_digest: previous.as_ref().map(|p| p.digest().to_string()),
        tiles: tiles.len() as u64,
        agreement,
        qc_rejection_rate,
        previous_agreement,
        previous_qc_rejection_rate,
        evaluated_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        score_drift,
        drift_tiles,
    })
}

/// Evaluates the newly installed model in the background and queues the report for the hub.
pub(crate) fn spawn(state: Arc<EdgeState>) {
    let worker = state.clone();
    spawn_with(state, move || evaluate(&worker));
}

/// Evaluates a candidate the hub sent (cross-site evaluation) in the background and queues the
/// report.
pub(crate) fn spawn_candidate(state: Arc<EdgeState>, candidate: Vec<u8>) {
    let worker = state.clone();
    spawn_with(state, move || evaluate_candidate(&worker, &candidate));
}

/// Runs `measure` and queues its report; nothing at a site that opted out of federated
/// learning (the figures come from its cases).
fn spawn_with(
    state: Arc<EdgeState>,
    measure: impl FnOnce() -> Result<ModelEvaluationReport, EdgeError> + Send + 'static,
) {
    if state.federated.opt_out {
        tracing::info!(
            "model not evaluated for the hub: this edge opted out of federated learning"
        );
        return;
    }
    tokio::spawn(async move {
        let report = match tokio::task::spawn_blocking(measure).await {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot evaluate the new model on this site's labels");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "model evaluation task failed");
                return;
            }
        };
        tracing::info!(digest = %report.digest, tiles = report.tiles, agreement = report.agreement, previous = ?report.previous_agreement, drift = ?report.score_drift, "model evaluated on this site's labels");
        let queued = async {
            let json = serde_json::to_vec(&report).map_err(|e| EdgeError::Config(e.to_string()))?;
            let path = state
                .config
                .data_dir
                .join("models")
                .join(format!("evaluation-{}.json", report.digest));
            grassroots_store::durable::write_file(&path, &json)
                .map_err(|e| EdgeError::Config(format!("{}: {e}", path.display())))?;
            state
                .outbox
                .enqueue_file(&path, MODEL_EVALUATION_LABEL)
                .await
        };
        if let Err(error) = queued.await {
            tracing::warn!(%error, "cannot queue the model evaluation for the hub");
        }
    });
}
