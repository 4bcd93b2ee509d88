//! The edge's half of a round: start from the global values, train on the site's own labelled
//! tiles (and the replay set of public tiles that keeps the classes its labels do not cover),
//! and return only the change, with the number of samples behind it.
//!
//! The same burn code and loss as [`crate::training`]; a fresh Adam per round (the optimiser's
//! state would otherwise be a second model to keep in step), and FedProx's proximal term
//! `mu / 2 * ||w - w_global||^2` (Li et al., MLSys 2020) when `proximal_mu` is above zero, which
//! keeps a site with skewed labels from wandering far from the global model. `keep_going` is
//! asked between batches: the edge uses it to pause while staff are working and to stop.

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::parameters::Parameters;
use crate::training::cnn::ScreeningCnn;
use crate::training::dataset::LabelledTile;
use crate::training::{labels_of, tensor_of};
use crate::ModelError;

type Train = Autodiff<NdArray>;

/// How an edge trains in a round (sent by the hub with the round, the same for every site).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LocalTrainingConfig {
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    /// FedProx's mu; 0 is plain FedAvg local training.
    pub proximal_mu: f32,
    pub seed: u64,
}

impl Default for LocalTrainingConfig {
    fn default() -> Self {
        Self {
            epochs: 2,
            batch: 32,
            learning_rate: 1e-3,
            proximal_mu: 0.0,
            seed: 1,
        }
    }
}

/// What an edge sends back: the change to the global values, not the values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalUpdate {
    pub delta: Vec<f32>,
    pub samples: u64,
    pub mean_loss: f32,
}

/// Trains from `global` on `tiles` (of `tile` pixels square).
pub fn train_local(
    global: &Parameters,
    mut tiles: Vec<LabelledTile>,
    tile: u32,
    config: &LocalTrainingConfig,
    mut keep_going: impl FnMut() -> bool,
) -> Result<LocalUpdate, ModelError> {
    if tiles.is_empty() {
        return Err(ModelError::BadParameters("no training tiles".into()));
    }
    super::all_of_size(&tiles, tile, "training tile")?;
    let device = Default::default();
    <Train as Backend>::seed(&device, config.seed);
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let weights = global.to_cnn()?;
    let mut model = ScreeningCnn::<Train>::from_weights(&weights, &device)?;
    let anchor = ScreeningCnn::<Train>::from_weights(&weights, &device)?;
    model.check_tile(tile)?;
    let mut optimiser = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (mut total_loss, mut batches) = (0f32, 0usize);
    for _ in 0..config.epochs {
        tiles.shuffle(&mut rng);
        for batch in tiles.chunks(config.batch.max(1)) {
            if !keep_going() {
                return Err(ModelError::Interrupted);
            }
            let logits = model.forward(tensor_of(batch, tile, &device));
            let mut loss = loss_fn.forward(logits, labels_of(batch, &device));
            total_loss += loss.clone().into_scalar().to_f32();
            batches += 1;
            if config.proximal_mu > 0.0 {
                loss = loss
                    + model
                        .squared_distance(&anchor)
                        .mul_scalar(config.proximal_mu / 2.0);
            }
            let gradients = GradientsParams::from_grads(loss.backward(), &model);
            model = optimiser.step(config.learning_rate, model, gradients);
        }
    }
    let trained = Parameters::from_cnn(&model.valid().weights()?);
    let delta = trained
        .values
        .iter()
        .zip(&global.values)
        .map(|(after, before)| after - before)
        .collect();
    Ok(LocalUpdate {
        delta,
        samples: tiles.len() as u64,
        mean_loss: total_loss / batches.max(1) as f32,
    })
}
