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

#[cfg(test)]
mod tests {
    use super::*;
    use grassroots_models::training::dataset::LabelledTile;

    /// Flower's client and server call these commands: a tile set and float32 values in, the
    /// trained values (same length) and `samples=N`, or the accuracy, out.
    #[test]
    fn the_commands_flower_calls_train_and_evaluate_on_tile_sets() {
        let dir = tempfile::tempdir().unwrap();
        let tiles: Vec<LabelledTile> = (0..24)
            .map(|i| LabelledTile {
                image: image::RgbImage::from_pixel(
                    data::TILE,
                    data::TILE,
                    image::Rgb([i * 10, 90, 200]),
                ),
                class: (i % 3) as usize,
            })
            .collect();
        let tile_set = dir.path().join("site.tiles");
        std::fs::write(
            &tile_set,
            grassroots_models::federated::validation::write(&tiles, data::TILE).unwrap(),
        )
        .unwrap();
        let initial = initial_parameters(5).unwrap().values;
        let input = dir.path().join("in.f32");
        std::fs::write(
            &input,
            initial
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        let out = dir.path().join("out.f32");
        train(TrainArgs {
            tiles: tile_set.clone(),
            input: input.clone(),
            out: out.clone(),
            round: 1,
            epochs: 1,
            batch: 8,
            learning_rate: 2e-3,
            seed: 3,
        })
        .unwrap();
        let trained = data::read_f32(&out).unwrap();
        assert_eq!(trained.len(), initial.len());
        assert!(
            trained.iter().zip(&initial).any(|(a, b)| a != b),
            "training changed nothing"
        );
        eval(EvalArgs {
            tiles: tile_set,
            input: out,
        })
        .unwrap();
        // Values of another model's size are refused.
        std::fs::write(&input, [0u8; 12]).unwrap();
        assert!(parameters(&input)
            .unwrap_err()
            .to_string()
            .contains("3 values"));
    }

    #[test]
    fn npy_files_carry_a_padded_header_and_the_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.npy");
        data::write_npy(&path, &[1.0, -2.5]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(
            header.contains("'shape': (2,)") && header.ends_with('\n'),
            "{header}"
        );
        assert_eq!(bytes.len(), 10 + header_len + 8);
    }
}
