//! `grassroots model train`: the first screening model, reproduced from a fixed seed.
//!
//! Reads the real tissue images (`scripts/fetch-fixtures`: the Aperio SVS read at the model's
//! resolution by the edge's slide reader, and the tumour images planted as lesions), trains with
//! burn (`grassroots_models::training`), and writes a model package signed with the network's
//! model-signing key, plus the training report as JSON. The figures are proxy-task figures.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use grassroots_models::training::dataset::TissueSources;
use grassroots_models::training::{train, TrainingConfig};
use grassroots_models::{ModelPackage, PackageSigner};

#[derive(Args)]
pub struct TrainArgs {
    /// Where `scripts/fetch-fixtures` put the real images.
    #[arg(long, env = "GRASSROOTS_FIXTURES")]
    pub fixtures: PathBuf,
    /// The network's provisioning folder, whose model-signing key signs the package.
    #[arg(long)]
    pub provisioning: PathBuf,
    /// The package to write.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = TrainingConfig::default().seed)]
    pub seed: u64,
    #[arg(long, default_value_t = TrainingConfig::default().epochs)]
    pub epochs: usize,
    /// Training tiles per class (validation and test take a quarter as many).
    #[arg(long, default_value_t = TrainingConfig::default().train_tiles_per_class)]
    pub tiles_per_class: usize,
    /// Generated validation slides (the slide threshold is chosen on them).
    #[arg(long, default_value_t = TrainingConfig::default().validation_slides)]
    pub validation_slides: usize,
    /// Generated held-out test slides (with `--hosts svs`; evaluated by host, each host gives
    /// 14).
    #[arg(long, default_value_t = TrainingConfig::default().test_slides)]
    pub test_slides: usize,
    /// The host tissue and the model: `all` (six real hosts, the context model — 64 px tiles
    /// at 1 um/px — evaluated host by host: seven trainings) or `svs` (the fixture slide alone,
    /// cut in bands, the quick model — 32 px at 2 um/px: one training, as the demo's).
    #[arg(long, value_enum, default_value_t = Hosts::All)]
    pub hosts: Hosts,
}

/// Which host tissue `model train` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Hosts {
    All,
    Svs,
}

/// What a tile set is made from and where it goes (shared by `validation-set` and `tile-set`).
#[derive(Args)]
pub struct TileSourceArgs {
    /// Where `scripts/fetch-fixtures` put the real images.
    #[arg(long, env = "GRASSROOTS_FIXTURES")]
    pub fixtures: PathBuf,
    /// The tile set to write (the hub's --validation-set, an edge's --federated-training-tiles).
    #[arg(long)]
    pub out: PathBuf,
    /// Tiles per class.
    #[arg(long, default_value_t = 60)]
    pub tiles_per_class: usize,
    #[arg(long, default_value_t = 20261130)]
    pub seed: u64,
    /// Tumour images planted as lesions (repeatable; default: the fixtures' two; the quick
    /// model's tiles only: the demo's sites).
    #[arg(long)]
    pub lesion: Vec<PathBuf>,
    /// The model whose tiles to make: `quick` (32 px at 2 um/px, the demo's and the federated
    /// rounds' model so far) or `context` (64 px at 1 um/px, what `model train` ships). The
    /// hub and the edges refuse a set made for another model's tiles.
    #[arg(long, value_enum, default_value_t = TileShape::Quick)]
    pub model: TileShape,
}

/// Which model's tiles a tile set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TileShape {
    Quick,
    Context,
}

#[derive(Args)]
pub struct ValidationSetArgs {
    #[command(flatten)]
    pub source: TileSourceArgs,
}

/// Writes the hub's validation set: tiles of the proxy task's test split (public tissue never
/// trained on centrally), raw RGB so that the hub needs no image decoder.
pub fn run_validation_set(args: ValidationSetArgs) -> Result<()> {
    write_tile_set(&args.source, SplitArg::Test)
}

/// Which part of every tissue image the tiles come from (parts never overlap).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SplitArg {
    Train,
    Validation,
    Test,
}

#[derive(Args)]
pub struct TileSetArgs {
    #[command(flatten)]
    pub source: TileSourceArgs,
    #[arg(long, value_enum, default_value = "train")]
    pub split: SplitArg,
}

/// Writes labelled tiles of the proxy task (`grassroots edge --federated-training-tiles`, the
/// hub's `--validation-set`): from one split of the fixtures' host tissue, with the lesions
/// from `--lesion` if given.
pub fn run_tile_set(args: TileSetArgs) -> Result<()> {
    write_tile_set(&args.source, args.split)
}

fn write_tile_set(args: &TileSourceArgs, split: SplitArg) -> Result<()> {
    use grassroots_models::training::dataset::{labelled_tiles, Split};
    use rand::SeedableRng;
    let config = match args.model {
        TileShape::Quick => TrainingConfig::default(),
        TileShape::Context => TrainingConfig::context(),
    };
    if !args.lesion.is_empty() && args.model != TileShape::Quick {
        anyhow::bail!(
            "--lesion makes the demo's sites, at the quick model's resolution: leave it out for --model context"
        );
    }
    let sources = match args.model {
        TileShape::Quick => {
            let mut sources = tissue_sources(&args.fixtures, config.microns_per_pixel)?;
            if !args.lesion.is_empty() {
                let host = sources.hosts.swap_remove(0).source.image;
                sources = TissueSources::with_lesion_files(host, &args.lesion)?;
            }
            sources
        }
        TileShape::Context => grassroots_bench::fl::data::banded_tissue_sources(
            &args.fixtures,
            config.microns_per_pixel,
        )?,
    };
    let split = match split {
        SplitArg::Train => Split::Train,
        SplitArg::Validation => Split::Validation,
        SplitArg::Test => Split::Test,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let tiles = labelled_tiles(&sources, split, args.tiles_per_class, config.tile, &mut rng);
    let bytes = grassroots_models::federated::validation::write(&tiles, config.tile)?;
    grassroots_store::durable::write_file(&args.out, &bytes)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let names = |sources: Vec<&grassroots_models::training::sources::Source>| {
        let names: Vec<&str> = sources.iter().map(|s| s.provenance.name.as_str()).collect();
        names.join(", ")
    };
    println!(
        "wrote {} ({} tiles of {} px at {} um/px; host: {}; lesions: {})",
        args.out.display(),
        tiles.len(),
        config.tile,
        sources.microns_per_pixel,
        names(sources.hosts.iter().map(|host| &host.source).collect()),
        names(
            sources
                .lesions
                .iter()
                .map(|lesion| &lesion.source)
                .collect()
        ),
    );
    Ok(())
}

#[derive(Args)]
pub struct SignArgs {
    /// The network's provisioning folder, whose model-signing key signs the package.
    #[arg(long)]
    pub provisioning: PathBuf,
    /// The candidate (a round's `candidate.grmodel` from a hub without the key), or a package
    /// to sign again.
    pub candidate: PathBuf,
    /// The approved package to write (then `grassroots model registry add` it).
    #[arg(long)]
    pub out: PathBuf,
}

/// The offline approval step: shows what the candidate says it is, and signs it with the
/// network's model-signing key where the provisioning folder lives (not at the hub).
pub fn run_sign(args: SignArgs) -> Result<()> {
    let authority = grassroots_provisioning::NetworkAuthority::open(&args.provisioning)?;
    let signer = PackageSigner::from_seed_hex(authority.model_signing_seed_hex())?;
    let bytes = std::fs::read(&args.candidate)
        .with_context(|| format!("reading {}", args.candidate.display()))?;
    let (manifest, approved) = ModelPackage::approve(&bytes, &signer)
        .with_context(|| format!("{} is not a model package", args.candidate.display()))?;
    println!("{} {}", manifest.name, manifest.version);
    println!("  trained on: {}", manifest.training_data);
    for (name, value) in &manifest.metrics {
        println!("  {name}: {value:.4}");
    }
    grassroots_store::durable::write_file(&args.out, &approved)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "signed: {} ({})",
        args.out.display(),
        blake3::hash(&approved).to_hex()
    );
    Ok(())
}

/// The tissue images: the SVS (0.499 um/px) read at the model's resolution by the edge's slide
/// reader, and the lesion images as they ship.
/// The real tissue the proxy task is made from (shared with `bench fl`).
pub fn tissue_sources(fixtures: &Path, microns_per_pixel: f64) -> Result<TissueSources> {
    grassroots_bench::fl::data::tissue_sources(fixtures, microns_per_pixel)
}

pub fn run_train(args: TrainArgs) -> Result<()> {
    // Every host: the shipped screening model, with context. The SVS alone: the quick model.
    let shape = match args.hosts {
        Hosts::All => TrainingConfig::context(),
        Hosts::Svs => TrainingConfig::default(),
    };
    let config = TrainingConfig {
        seed: args.seed,
        epochs: args.epochs,
        validation_slides: args.validation_slides,
        test_slides: args.test_slides,
        ..shape.with_tiles_per_class(args.tiles_per_class)
    };
    train_package(
        &args.fixtures,
        &args.provisioning,
        &config,
        args.hosts,
        &args.out,
        |line| println!("{line}"),
    )
}

/// Learns the overview's detector of pen marks and coverslip edges from the real examples in
/// the fixtures (when they are there) into the package's manifest, with its figures on the
/// examples' test regions; what it measured, if anything.
fn attach_artefact_detector(
    fixtures: &Path,
    manifest: &mut grassroots_models::package::Manifest,
    progress: &mut impl FnMut(&str),
) -> Option<grassroots_models::artefacts::ArtefactEvaluation> {
    use grassroots_models::artefacts;
    let examples = match artefacts::examples_from_fixtures(fixtures) {
        Ok(examples) => examples,
        Err(error) => {
            progress(&format!("no artefact detector in this package: {error}"));
            return None;
        }
    };
    let detector = artefacts::train(&examples);
    let test = artefacts::evaluate(&detector, &examples, artefacts::Region::Test);
    progress(&format!(
        "artefact detector (real pen marks and a coverslip edge, test regions): {:.0}% of {} windows with an artefact flagged, {:.0}% of {} clean windows flagged",
        test.sensitivity() * 100.0,
        test.with_artefact.iter().map(|k| k.1).sum::<usize>(),
        test.false_flags() * 100.0,
        test.clean.0
    ));
    manifest
        .metrics
        .insert("artefact_test_sensitivity".into(), test.sensitivity());
    manifest
        .metrics
        .insert("artefact_test_false_flags".into(), test.false_flags());
    manifest.artefacts = Some(detector);
    Some(test)
}

/// Trains with `config` and writes the signed package to `out` and the report beside it.
pub fn train_package(
    fixtures: &Path,
    provisioning: &Path,
    config: &TrainingConfig,
    hosts: Hosts,
    out: &Path,
    mut progress: impl FnMut(&str),
) -> Result<()> {
    let authority = grassroots_provisioning::NetworkAuthority::open(provisioning)?;
    let signer = PackageSigner::from_seed_hex(authority.model_signing_seed_hex())?;
    let sources = match hosts {
        Hosts::All => {
            grassroots_bench::fl::data::all_tissue_sources(fixtures, config.microns_per_pixel)?
        }
        Hosts::Svs => tissue_sources(fixtures, config.microns_per_pixel)?,
    };
    let started = std::time::Instant::now();
    let mut trained = train(&sources, config, &mut progress)?;
    let artefacts = attach_artefact_detector(fixtures, &mut trained.manifest, &mut progress);
    let package = ModelPackage::seal(&trained.manifest, &trained.onnx, &signer)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written whole, then renamed: a package file is either complete or absent.
    let temp = out.with_extension("tmp");
    std::fs::write(&temp, &package).with_context(|| format!("writing {}", temp.display()))?;
    let report_path = out.with_extension("report.json");
    std::fs::write(
        &report_path,
        serde_json::to_string_pretty(&serde_json::json!({
            "config": config, "report": trained.report, "manifest": trained.manifest,
            "artefacts": artefacts,
            "training_seconds": started.elapsed().as_secs_f64(),
        }))?,
    )?;
    std::fs::rename(&temp, out)?;
    let r = &trained.report;
    if let Some(evaluation) = &r.held_out_by_host {
        let h = &evaluation.held_out;
        progress(&format!(
            "PROXY TASK, held-out hosts (leave one host out, {} hosts): sensitivity {}, specificity {}, top tile on lesion {}, IoU {:.2}, AUC {:.2}, tile accuracy {:.3}; split problems: {}",
            evaluation.folds.len(),
            h.sensitivity,
            h.specificity,
            h.localisation_hit_rate,
            h.mean_iou,
            h.auc,
            evaluation.held_out_tile_accuracy,
            evaluation.split_problems.len()
        ));
        let site = &evaluation.site_calibrated;
        progress(&format!(
            "PROXY TASK, the same folds with the threshold chosen on the held-out host's own first half (site-calibrated; not held out: the threshold saw the host): sensitivity {}, specificity {}, AUC {:.2}",
            site.sensitivity, site.specificity, site.auc
        ));
    }
    progress(&format!(
        "PROXY TASK (planted lesions): threshold {:.4}; validation sensitivity {:.2}, specificity {:.2}; test sensitivity {:.2}, specificity {:.2}; localisation: top tile on lesion {:.2}, IoU {:.2}; test tile accuracy {:.3}",
        r.threshold, r.validation_sensitivity, r.validation_specificity, r.test_sensitivity, r.test_specificity, r.test_localisation_hit_rate, r.test_localisation_iou, r.test_tile_accuracy
    ));
    progress(&format!(
        "wrote {} ({} bytes) and {} in {:.0} s",
        out.display(),
        package.len(),
        report_path.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
