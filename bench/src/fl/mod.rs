//! `grassroots bench fl`: federated learning against Flower, in one run, side by side. Both
//! start from the same initial values, the same three non-IID site splits of the proxy task
//! ([`data`]), the same local training (our trainer: Flower's client calls it,
//! [`trainer`]) and the same number of rounds, over the same emulated link — first one as fast
//! as the machine (no rate limit, no delay, no loss; "loopback"), then the county link (10
//! Mbit/s, 80 ms RTT, 1% loss). Reported per system: final accuracy on the held-out test
//! tiles, the per-round overhead (a round's wall time, until the next round can start, minus
//! the slowest site's local training), and IP bytes on the link per round; and ours as ratios
//! to Flower's. Figures go to stdout and to a JSON file.
//!
//! What a round costs differs in kind: Flower ships the full weights down and up every round;
//! a Grassroots round sends a task (a digest), receives compressed updates (f16), and then
//! distributes the round's signed model package to every edge — counted here, since the next
//! round cannot start before it arrives.

pub mod data;
mod flower;
mod ours;
pub mod trainer;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::netem::{EmulatedLink, LinkParams};

#[derive(Args)]
pub struct FlBenchArgs {
    #[arg(
        long,
        env = "GRASSROOTS_FIXTURES",
        default_value = "/var/cache/grassroots/fixtures"
    )]
    pub fixtures: PathBuf,
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Training tiles per class before the split (three sites share them).
    #[arg(long, default_value_t = 100)]
    pub tiles_per_class: usize,
    /// Links to run over: loopback, county (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "loopback,county")]
    pub links: Vec<String>,
    /// Flower's virtual environment (made by scripts/bench-peers when missing).
    #[arg(long, default_value = flower::DEFAULT_VENV)]
    pub flower_venv: PathBuf,
    /// Cache for the peers (scripts/bench-peers).
    #[arg(long, default_value = "/var/cache/grassroots")]
    pub cache: PathBuf,
    #[arg(long, default_value_t = 11)]
    pub seed: u64,
    #[arg(long, default_value = "target/bench/fl.json")]
    pub out: PathBuf,
}

/// What both systems train with.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub rounds: usize,
    pub local_epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub seed: u64,
}

/// One round as measured.
#[derive(Debug, Clone, Serialize)]
pub struct RoundFigures {
    pub round: usize,
    /// From the round's start to its aggregate.
    pub wall_s: f64,
    /// From the round's start until the next can start (ours: every edge runs the result;
    /// Flower: the next round's start, after its server-side evaluation).
    pub cycle_s: f64,
    pub slowest_training_s: f64,
    /// `cycle_s - slowest_training_s`.
    pub overhead_s: f64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub accuracy: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Summary {
    final_accuracy: Option<f64>,
    median_overhead_s: f64,
    bytes_per_round: f64,
}

fn summary(rounds: &[RoundFigures]) -> Summary {
    let mut overheads: Vec<f64> = rounds.iter().map(|r| r.overhead_s).collect();
    overheads.sort_by(f64::total_cmp);
    let bytes: u64 = rounds.iter().map(|r| r.bytes_up + r.bytes_down).sum();
    Summary {
        final_accuracy: rounds.last().and_then(|r| r.accuracy),
        median_overhead_s: overheads
            .get(overheads.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
        bytes_per_round: bytes as f64 / rounds.len().max(1) as f64,
    }
}

#[derive(Debug, Serialize)]
struct LinkRun {
    link: String,
    params: LinkParams,
    grassroots: Vec<RoundFigures>,
    flower: Option<Vec<RoundFigures>>,
    flower_missing: Option<String>,
}

fn link_params(name: &str) -> Result<LinkParams> {
    Ok(match name {
        "loopback" => LinkParams {
            rate_bits_per_sec: 10_000_000_000,
            one_way_delay: Duration::ZERO,
            loss: 0.0,
            max_queue: Duration::from_millis(250),
        },
        "county" => LinkParams {
            rate_bits_per_sec: 10_000_000,
            one_way_delay: Duration::from_millis(40),
            loss: 0.01,
            max_queue: Duration::from_millis(250),
        },
        other => anyhow::bail!("--links {other:?}: use loopback or county"),
    })
}

pub async fn run(args: FlBenchArgs) -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix("grassroots-bench-fl-")
        .tempdir()?;
    let settings = Settings {
        rounds: args.rounds,
        local_epochs: 1,
        batch: 16,
        learning_rate: 2e-3,
        seed: args.seed,
    };
    println!("cutting the proxy task's tiles...");
    let splits = {
        let (fixtures, dir, per_class, seed) = (
            args.fixtures.clone(),
            work.path().join("data"),
            args.tiles_per_class,
            args.seed,
        );
        tokio::task::spawn_blocking(move || data::write(&fixtures, &dir, per_class, seed)).await??
    };
    println!(
        "  sites hold {:?} training tiles; {} test tiles",
        splits.site_tiles, splits.test_tiles
    );
    let initial = grassroots_models::federated::initial_parameters(args.seed)?.values;
    if flower::missing(&args.flower_venv).is_some() {
        println!("installing the peers (scripts/bench-peers), Flower among them...");
        if let Err(error) = crate::tiles::script("bench-peers", &args.cache.join("peers")) {
            println!("  {error:#}");
        }
    }
    let flower_missing = flower::missing(&args.flower_venv);
    let mut runs = Vec::new();
    for name in &args.links {
        let params = link_params(name)?;
        let link = EmulatedLink::start(params, args.seed).context(
            "cannot make the emulated link (network namespaces and TUN devices need root)",
        )?;
        println!("{name}: Grassroots, {} rounds", settings.rounds);
        let dir = work.path().join(format!("grassroots-{name}"));
        let grassroots = ours::run(&dir, &splits, &initial, &settings, &link)
            .await?
            .rounds;
        let flower = match &flower_missing {
            Some(reason) => {
                println!("{name}: Flower skipped: {reason}");
                None
            }
            None => {
                println!("{name}: Flower, {} rounds", settings.rounds);
                let dir = work.path().join(format!("flower-{name}"));
                Some(tokio::task::block_in_place(|| {
                    flower::run(&dir, &args.flower_venv, &splits, &initial, &settings, &link)
                })?)
            }
        };
        report(name, &grassroots, flower.as_deref());
        runs.push(LinkRun {
            link: name.clone(),
            params,
            grassroots,
            flower,
            flower_missing: flower_missing.clone(),
        });
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &args.out,
        serde_json::to_vec_pretty(&serde_json::json!({
            "settings": settings,
            "site_tiles": splits.site_tiles,
            "test_tiles": splits.test_tiles,
            "runs": runs,
        }))?,
    )?;
    println!("figures written to {}", args.out.display());
    Ok(())
}

fn report(link: &str, ours: &[RoundFigures], flower: Option<&[RoundFigures]>) {
    let ours = summary(ours);
    println!(
        "{link}: Grassroots final accuracy {:?}, median overhead {:.2} s/round, {:.0} B/round",
        ours.final_accuracy, ours.median_overhead_s, ours.bytes_per_round
    );
    if let Some(flower) = flower {
        let theirs = summary(flower);
        println!(
            "{link}: Flower     final accuracy {:?}, median overhead {:.2} s/round, {:.0} B/round",
            theirs.final_accuracy, theirs.median_overhead_s, theirs.bytes_per_round
        );
        println!(
            "{link}: Grassroots / Flower: overhead {:.2}x, bytes {:.2}x, accuracy {:+.3}",
            ours.median_overhead_s / theirs.median_overhead_s,
            ours.bytes_per_round / theirs.bytes_per_round,
            ours.final_accuracy.unwrap_or(f64::NAN) - theirs.final_accuracy.unwrap_or(f64::NAN)
        );
    }
}
