//! Federated learning's arithmetic, with no network in it (sans-IO, as quinn-proto is): the
//! model's values as one flat vector ([`parameters`]), an edge's local training from the global
//! values ([`local`]), the hub's checks and combining rules ([`aggregate`]), a round as a state
//! machine ([`round`]), update compression ([`compress`]), differential privacy and its
//! accountant ([`privacy`]), the hub's validation tiles ([`validation`]), and evaluation of a
//! set of values on labelled tiles ([`evaluate`]).
//!
//! The hub and the edges drive these over the link; tests and `grassroots bench fl` drive them
//! in one process ([`simulate_rounds`]) to compare federated training with centralised training
//! on the union of the same data, and robust rules against a poisoned site.
//!
//! Privacy: what leaves an edge is a [`local::LocalUpdate`] — a change to a few tens of
//! thousands of weights and a sample count. Tiles, slides and labels stay where they are.

pub mod aggregate;
pub mod compress;
pub mod local;
pub mod parameters;
pub mod privacy;
pub mod round;
pub mod validation;

use burn::backend::NdArray;
use serde::Serialize;

use crate::training::cnn::ScreeningCnn;
use crate::training::dataset::{LabelledTile, CLASSES};
use crate::ModelError;
pub use aggregate::{
    aggregate, AggregationSettings, ClientUpdate, CombiningRule, Refusal, ServerOptimiser,
    ServerState,
};
pub use local::{train_local, LocalTrainingConfig, LocalUpdate};
pub use parameters::{Parameters, TensorLayout};

/// Fraction of `tiles` whose class the model with `parameters` predicts.
pub fn evaluate(
    parameters: &Parameters,
    tiles: &[LabelledTile],
    tile: u32,
) -> Result<f32, ModelError> {
    let model = ScreeningCnn::<NdArray>::from_weights(&parameters.to_cnn()?, &Default::default())?;
    model.check_tile(tile)?;
    all_of_size(tiles, tile, "tile")?;
    Ok(crate::training::accuracy(&model, tiles, tile))
}

/// That every one of `tiles` (each a `what`) is `tile` x `tile` pixels, as the model takes.
fn all_of_size(tiles: &[LabelledTile], tile: u32, what: &str) -> Result<(), ModelError> {
    match tiles.iter().find(|t| t.image.dimensions() != (tile, tile)) {
        Some(odd) => Err(ModelError::BadParameters(format!(
            "a {what} of {:?} pixels where the model takes {tile} x {tile}",
            odd.image.dimensions()
        ))),
        None => Ok(()),
    }
}

/// A fresh quick model's values from `seed`: the common starting point of a federated run and
/// the centralised run it is compared with.
pub fn initial_parameters(seed: u64) -> Result<Parameters, ModelError> {
    use burn::prelude::Backend;
    let device = Default::default();
    <NdArray as Backend>::seed(&device, seed);
    let model = ScreeningCnn::<NdArray>::new(
        CLASSES.len(),
        &crate::training::cnn::QUICK_CHANNELS,
        &device,
    );
    Ok(Parameters::from_cnn(&model.weights()?))
}

/// How one simulated site turns its update before sending it (a poisoned site for tests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SiteBehaviour {
    Honest,
    /// Sends its real update multiplied by this factor (-1: sign flip; -10: scaled attack).
    Scaled(f32),
}

/// One round of a simulation, as the hub saw it.
#[derive(Debug, Clone, Serialize)]
pub struct SimulatedRound {
    pub round: usize,
    pub accepted: Vec<String>,
    pub refused: Vec<Refusal>,
    pub accuracy: f32,
}

/// Runs `rounds` federated rounds in one process: every site trains from the global values on
/// its own tiles, the hub aggregates; after each round the global model is measured on
/// `evaluation`. Returns the final values and the per-round record.
pub fn simulate_rounds(
    initial: &Parameters,
    sites: &[(String, Vec<LabelledTile>, SiteBehaviour)],
    evaluation: &[LabelledTile],
    tile: u32,
    rounds: usize,
    local: &LocalTrainingConfig,
    settings: &AggregationSettings,
) -> Result<(Parameters, Vec<SimulatedRound>), ModelError> {
    let mut global = initial.clone();
    let mut state = ServerState::default();
    let mut record = Vec::new();
    for round in 1..=rounds {
        let mut updates = Vec::new();
        for (index, (site, tiles, behaviour)) in sites.iter().enumerate() {
            let config = LocalTrainingConfig {
                seed: local.seed ^ ((round as u64) << 16) ^ index as u64,
                ..*local
            };
            let mut update = train_local(&global, tiles.clone(), tile, &config, || true)?;
            if let SiteBehaviour::Scaled(factor) = behaviour {
                update.delta.iter_mut().for_each(|v| *v *= factor);
            }
            updates.push(ClientUpdate {
                site: site.clone(),
                delta: update.delta,
                samples: update.samples,
            });
        }
        let outcome = aggregate(&global.values, &updates, settings, &mut state)?;
        global.values = outcome.global;
        record.push(SimulatedRound {
            round,
            accepted: outcome.accepted,
            refused: outcome.refused,
            accuracy: evaluate(&global, evaluation, tile)?,
        });
    }
    Ok((global, record))
}
