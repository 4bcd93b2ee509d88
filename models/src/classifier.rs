//! Tile classification with tract: a package's graph loaded, checked against its manifest and
//! optimised once for a fixed batch size, then run many times from any thread.
//!
//! The graph must take `[batch, 3, height, width]` float tiles and give `[batch, classes]`
//! logits; a graph that declares other sizes than its manifest, or whose output does not have
//! one value per class, is refused at load — never at the first slide. Tiles are normalised as
//! the manifest says; the last batch of a run is padded and the padding's outputs dropped.

use std::sync::Arc;

use image::RgbImage;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::package::{Manifest, ModelPackage};
use crate::ModelError;

/// A loaded, optimised tile classifier.
pub struct TileClassifier {
    plan: Arc<TypedRunnableModel>,
    manifest: Manifest,
    batch: usize,
    digest: String,
    /// Each channel's 256 values as the graph takes them (the manifest's normalisation),
    /// worked out once rather than for every pixel of a million tiles.
    normalised: Box<[[f32; 256]; 3]>,
}

fn graph_error(error: impl std::fmt::Display) -> ModelError {
    ModelError::BadGraph(error.to_string())
}

impl TileClassifier {
    /// Loads `package`'s graph for batches of `batch` tiles.
    pub fn load(package: &ModelPackage, batch: usize) -> Result<Self, ModelError> {
        let manifest = package.manifest.clone();
        let batch = batch.max(1);
        let (height, width) = (
            manifest.input.height as usize,
            manifest.input.width as usize,
        );
        let model = tract_onnx::onnx()
            .model_for_read(&mut package.graph.as_slice())
            .map_err(graph_error)?;
        if model.inputs.len() != 1 || model.outputs.len() != 1 {
            return Err(ModelError::ShapeMismatch(format!(
                "{} inputs and {} outputs; one of each is expected",
                model.inputs.len(),
                model.outputs.len()
            )));
        }
        // Where the graph states its input size, it must be the manifest's.
        let declared = model.input_fact(0).map_err(graph_error)?.shape.clone();
        let expected = [None, Some(3), Some(height), Some(width)];
        let stated: Vec<Option<i64>> = declared
            .dims()
            .map(|d| d.concretize().and_then(|d| d.as_i64()))
            .collect();
        if !stated.is_empty() {
            let agrees = stated.len() == 4
                && stated
                    .iter()
                    .zip(expected)
                    .all(|(stated, wanted)| match (stated, wanted) {
                        (Some(s), Some(w)) => *s == w as i64,
                        _ => true,
                    });
            if !agrees {
                return Err(ModelError::ShapeMismatch(format!(
                    "the graph takes {stated:?}, the manifest says [batch, 3, {height}, {width}]"
                )));
            }
        }
        let typed = model
            .with_input_fact(0, f32::fact([batch, 3, height, width]).into())
            .and_then(|model| model.into_optimized())
            .map_err(graph_error)?;
        let output = typed.output_fact(0).map_err(graph_error)?;
        let output_dims: Vec<Option<usize>> = output
            .shape
            .iter()
            .map(|d| d.as_i64().and_then(|v| usize::try_from(v).ok()))
            .collect();
        if output_dims != [Some(batch), Some(manifest.classes.len())] {
            return Err(ModelError::ShapeMismatch(format!(
                "the graph gives {output_dims:?} for a batch of {batch}; the manifest names {} classes",
                manifest.classes.len()
            )));
        }
        let plan = typed.into_runnable().map_err(graph_error)?;
        let norm = manifest.normalisation;
        let normalised = Box::new(std::array::from_fn(|channel| {
            std::array::from_fn(|value| {
                (value as f32 / 255.0 - norm.mean[channel]) / norm.std[channel]
            })
        }));
        Ok(Self {
            plan,
            manifest,
            batch,
            digest: package.digest.clone(),
            normalised,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The package digest this classifier was loaded from.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Class probabilities (softmax of the logits) for each tile, in order. Tiles of another
    /// size than the model's input are an error: resampling is the caller's decision.
    pub fn classify(&self, tiles: &[RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        Ok(self
            .logits(tiles)?
            .into_iter()
            .map(|row| softmax(row.into_iter()))
            .collect())
    }

    /// The graph's raw outputs for each tile.
    pub fn logits(&self, tiles: &[RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        let (height, width) = (
            self.manifest.input.height as usize,
            self.manifest.input.width as usize,
        );
        let mut probabilities = Vec::with_capacity(tiles.len());
        for chunk in tiles.chunks(self.batch) {
            let input = self.to_tensor(chunk, height, width)?;
            let outputs = self
                .plan
                .run(tvec!(input.into()))
                .map_err(|e| ModelError::Inference(e.to_string()))?;
            let logits = outputs[0]
                .to_plain_array_view::<f32>()
                .map_err(|e| ModelError::Inference(e.to_string()))?;
            for row in logits.outer_iter().take(chunk.len()) {
                probabilities.push(row.iter().copied().collect());
            }
        }
        Ok(probabilities)
    }

    fn to_tensor(
        &self,
        tiles: &[RgbImage],
        height: usize,
        width: usize,
    ) -> Result<Tensor, ModelError> {
        let plane = height * width;
        let mut data = vec![0f32; self.batch * 3 * plane];
        let normalised = &self.normalised;
        for (index, tile) in tiles.iter().enumerate() {
            if tile.dimensions() != (width as u32, height as u32) {
                return Err(ModelError::Inference(format!(
                    "a {}x{} tile for a {width}x{height} model",
                    tile.width(),
                    tile.height()
                )));
            }
            let base = index * 3 * plane;
            let (red, rest) = data[base..base + 3 * plane].split_at_mut(plane);
            let (green, blue) = rest.split_at_mut(plane);
            for (i, pixel) in tile.pixels().enumerate() {
                red[i] = normalised[0][usize::from(pixel[0])];
                green[i] = normalised[1][usize::from(pixel[1])];
                blue[i] = normalised[2][usize::from(pixel[2])];
            }
        }
        Tensor::from_shape(&[self.batch, 3, height, width], &data)
            .map_err(|e| ModelError::Inference(e.to_string()))
    }
}

/// Normalised exponentials, computed stably.
pub fn softmax(logits: impl Iterator<Item = f32> + Clone) -> Vec<f32> {
    let max = logits.clone().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx_graph::{cnn_to_onnx, CnnWeights, ConvWeights};
    use crate::package::tests::{keys, manifest};

    fn weights(classes: usize) -> CnnWeights {
        let value = |i: usize| ((i * 7919) % 101) as f32 / 101.0 - 0.5;
        CnnWeights {
            convs: vec![
                ConvWeights {
                    in_channels: 3,
                    out_channels: 4,
                    weight: (0..4 * 3 * 9).map(value).collect(),
                    bias: vec![0.1; 4],
                },
                ConvWeights {
                    in_channels: 4,
                    out_channels: 8,
                    weight: (0..8 * 4 * 9).map(|i| value(i + 3)).collect(),
                    bias: vec![-0.05; 8],
                },
            ],
            linear_weight: (0..classes * 8).map(|i| value(i + 11)).collect(),
            linear_bias: vec![0.0; classes],
            classes,
        }
    }

    fn package(graph: &[u8]) -> ModelPackage {
        let (signer, verifier) = keys();
        let bytes = ModelPackage::seal(&manifest(), graph, &signer).unwrap();
        ModelPackage::open(&bytes, &verifier).unwrap()
    }

    #[test]
    fn a_written_graph_loads_and_classifies_in_batches() {
        let graph = cnn_to_onnx(&weights(3), 32, 32, &[("classes", "a,b,c")]);
        let classifier = TileClassifier::load(&package(&graph), 4).unwrap();
        let tiles: Vec<RgbImage> = (0..6u8)
            .map(|i| RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * i, 90])))
            .collect();
        let all = classifier.classify(&tiles).unwrap();
        assert_eq!(all.len(), 6);
        for row in &all {
            assert_eq!(row.len(), 3);
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        }
        // The same tile gives the same answer wherever it sits in a batch.
        let alone = classifier.classify(&tiles[5..]).unwrap();
        for (a, b) in alone[0].iter().zip(&all[5]) {
            assert!((a - b).abs() < 1e-5);
        }
        assert_ne!(all[0], all[5], "different tiles, different outputs");
        assert!(classifier.classify(&[RgbImage::new(16, 16)]).is_err());
    }

    #[test]
    fn graphs_that_do_not_match_their_manifest_are_refused() {
        // Declares 64 x 64 inputs; the manifest says 32 x 32.
        let wrong_input = cnn_to_onnx(&weights(3), 64, 64, &[]);
        assert!(matches!(
            TileClassifier::load(&package(&wrong_input), 2),
            Err(ModelError::ShapeMismatch(_))
        ));
        // Four outputs for three classes.
        let wrong_output = cnn_to_onnx(&weights(4), 32, 32, &[]);
        assert!(matches!(
            TileClassifier::load(&package(&wrong_output), 2),
            Err(ModelError::ShapeMismatch(_))
        ));
        // Not ONNX at all (but properly signed).
        assert!(matches!(
            TileClassifier::load(&package(b"\x08\x01garbage that is not a protobuf model"), 2),
            Err(ModelError::BadGraph(_))
        ));
        let mut truncated = cnn_to_onnx(&weights(3), 32, 32, &[]);
        truncated.truncate(truncated.len() / 2);
        assert!(TileClassifier::load(&package(&truncated), 2).is_err());
    }
}
