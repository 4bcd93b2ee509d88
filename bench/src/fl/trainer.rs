//! Our local training and evaluation as commands, for Flower's client and server app to call
//! (`bench/flower/`): so both systems run exactly the same training on the same tiles, and the
//! comparison measures the federation around it.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use clap::Args;
use grassroots_models::federated::{
    evaluate, initial_parameters, train_local, LocalTrainingConfig,
};

use super::data;

#[derive(Args)]
pub struct TrainArgs {
    /// The site's tile set.
    #[arg(long)]
    pub tiles: PathBuf,
    /// The global values (little-endian float32, the model's flat layout).
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Where the trained values go.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub round: u64,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 2e-3)]
    pub learning_rate: f64,
    /// The network's seed; each round trains with `seed ^ round`, as our hub's tasks say.
    #[arg(long)]
    pub seed: u64,
}

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub tiles: PathBuf,
    #[arg(long = "in")]
    pub input: PathBuf,
}

fn parameters(path: &std::path::Path) -> Result<grassroots_models::federated::Parameters> {
    let mut parameters = initial_parameters(0)?;
    let values = data::read_f32(path)?;
    ensure!(
        values.len() == parameters.values.len(),
        "{} values; the model has {}",
        values.len(),
        parameters.values.len()
    );
    parameters.values = values;
    Ok(parameters)
}

/// Trains one site's round on one thread (as an edge does) and prints `samples=N`.
pub fn train(args: TrainArgs) -> Result<()> {
    let global = parameters(&args.input)?;
    let tiles = data::read(&args.tiles)?;
    let config = LocalTrainingConfig {
        epochs: args.epochs,
        batch: args.batch,
        learning_rate: args.learning_rate,
        proximal_mu: 0.0,
        seed: args.seed ^ args.round,
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let update = pool.install(|| train_local(&global, tiles, data::TILE, &config, || true))?;
    let trained: Vec<u8> = global
        .values
        .iter()
        .zip(&update.delta)
        .flat_map(|(g, d)| (g + d).to_le_bytes())
        .collect();
    std::fs::write(&args.out, trained)?;
    println!("samples={}", update.samples);
    Ok(())
}

/// Prints the tile accuracy of the values on the tile set: `accuracy=X`.
pub fn eval(args: EvalArgs) -> Result<()> {
    let values = parameters(&args.input)?;
    let tiles = data::read(&args.tiles)?;
    println!("accuracy={}", evaluate(&values, &tiles, data::TILE)?);
    Ok(())
}
