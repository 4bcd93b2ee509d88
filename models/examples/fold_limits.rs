//! The fold limit of every fold of the evaluation by host, and what it flags on the held-out
//! host: whether a limit chosen on other hosts' validation windows is stable, and whether it
//! carries to a host whose clean tissue is denser in places (the SVS's epidermis).
//!
//! `fold_limits FIXTURES [WINDOWS]` — for each fold, the limit chosen as `grassroots model
//! train` chooses it (same seed) but on `WINDOWS` benign validation windows (default: as
//! many as training draws); then `WINDOWS` benign windows of the held-out host, clean and
//! folded as the QC figures fold them, and how many the limit flags by density alone (the
//! classifier's blur class plays no part). Needs no model: about a minute for 1,000 windows
//! (release build).

use std::path::PathBuf;

use grassroots_models::training::dataset::Split;
use grassroots_models::training::evaluation::{dense_shares, fold_limit};
use grassroots_models::training::{TrainingConfig, FOLD_LIMIT_SEED, FOLD_LIMIT_WINDOWS};
use rand::SeedableRng;

#[path = "common/fixtures.rs"]
mod fixtures;

/// How many of `shares` lie above `limit`, as "flagged/all".
fn flagged(shares: &[f32], limit: f32) -> String {
    let above = shares.iter().filter(|&&s| s > limit).count();
    format!("{above}/{}", shares.len())
}

/// The 5th, 50th and 95th percentiles of `shares`.
fn spread(shares: &[f32]) -> String {
    let mut sorted = shares.to_vec();
    sorted.sort_by(f32::total_cmp);
    let at = |q: f32| {
        let last = sorted.len().max(1) - 1;
        sorted
            .get((last as f32 * q) as usize)
            .copied()
            .unwrap_or(f32::NAN)
    };
    format!("{:.2}/{:.2}/{:.2}", at(0.05), at(0.5), at(0.95))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let fixtures = PathBuf::from(args.get(1).ok_or("usage: fold_limits FIXTURES [WINDOWS]")?);
    let windows: usize = match args.get(2) {
        Some(n) => n.parse()?,
        None => FOLD_LIMIT_WINDOWS,
    };
    let config = TrainingConfig::context();
    let tiles = (config.tile, config.stride);
    let sources = fixtures::all_sources(&fixtures)?;
    println!("held out | limit | held-out clean 5/50/95% | folded 5/50/95% | clean flagged | folded flagged");
    for (index, host) in sources.hosts.iter().enumerate() {
        let fold_sources = sources.holding_out(index);
        let seed = config.seed.wrapping_add(FOLD_LIMIT_SEED + index as u64);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let limit = fold_limit(&fold_sources, windows, tiles, &mut rng).ok_or("no clean window")?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(1000));
        let (clean, folded) = dense_shares(&fold_sources, Split::Test, windows, tiles, &mut rng);
        println!(
            "{} | {limit:.3} | {} | {} | {} | {}",
            host.source.provenance.name,
            spread(&clean),
            spread(&folded),
            flagged(&clean, limit),
            flagged(&folded, limit),
        );
    }
    Ok(())
}
