//! How a newly installed model does on this site's own confirmed cases, next to the model it
//! replaced: the evidence the hub's canary rollout decides on.
//!
//! Tiles are cut from the site's labels (as for training, with a fixed seed so both models see
//! the same tiles) and classified by both models with tract, as screening runs them. Reported:
//! agreement with the labels (the share of tiles whose predicted class is the labelled one) and
//! the quality-control rejection rate (the share of labelled tissue and lesion tiles the model
//! calls blur, pen or fold). Only these figures leave the edge, in a `model-evaluation` blob.

use std::sync::Arc;

use grassroots_models::training::dataset::{LabelledTile, BLUR, FOLD, LESION, PEN, TISSUE};
use grassroots_models::{ModelPackage, PackageVerifier, TileClassifier};
use grassroots_wire::models::{ModelEvaluationReport, MODEL_EVALUATION_LABEL};

use crate::{EdgeError, EdgeState};

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

/// Evaluates the active model against the previous one on the site's labels.
pub(crate) fn evaluate(state: &EdgeState) -> Result<ModelEvaluationReport, EdgeError> {
    let model = &state.screening.model;
    let (package, bytes) = model
        .active_package()
        .ok_or_else(|| EdgeError::Config("no active model".into()))?;
    let active =
        TileClassifier::load(&package, 64).map_err(|e| EdgeError::Config(e.to_string()))?;
    let verifier = PackageVerifier::from_public_hex(&state.kit.model_signing_public_key)
        .map_err(|e| EdgeError::Config(e.to_string()))?;
    let previous = model
        .previous_package_bytes()
        .and_then(|b| ModelPackage::open(&b, &verifier).ok())
        .and_then(|p| TileClassifier::load(&p, 64).ok());
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
    let (previous_agreement, previous_qc_rejection_rate) = match &previous {
        // The previous model may read tiles at another size: it is measured on its own cut.
        Some(previous) if previous.manifest().input == manifest.input => {
            let (a, q) = measure(previous, &tiles)?;
            (Some(a), Some(q))
        }
        _ => (None, None),
    };
    Ok(ModelEvaluationReport {
        digest: blake3::hash(&bytes).to_hex().to_string(),
        previous_digest: previous.as_ref().map(|p| p.digest().to_string()),
        tiles: tiles.len() as u64,
        agreement,
        qc_rejection_rate,
        previous_agreement,
        previous_qc_rejection_rate,
        evaluated_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    })
}

/// Evaluates in the background and queues the report for the hub.
pub(crate) fn spawn(state: Arc<EdgeState>) {
    tokio::spawn(async move {
        let worker = state.clone();
        let report = match tokio::task::spawn_blocking(move || evaluate(&worker)).await {
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
        tracing::info!(digest = %report.digest, tiles = report.tiles, agreement = report.agreement, previous = ?report.previous_agreement, "new model evaluated on this site's labels");
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
