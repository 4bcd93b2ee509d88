//! Where a model calls a host's benign tissue "lesion", and whether training on that host's
//! own cases mends it. The evaluation by host says *that* a fold fails (the SVS: specificity
//! 0.00 in every run); this shows *on what*, and tests the two remedies a network has.
//!
//! `site_learning FIXTURES INDEX OUT_PREFIX [EPOCHS]` — the fold that holds host `INDEX` out
//! (0 the SVS, 1 the stroma, 2-5 HistoQC's templates 1-4) trains as in the evaluation by host.
//! Then the site — the held-out host — trains it once as an edge trains in a federated round
//! (`train_local`, the hub's default settings but `EPOCHS`, default 2) on tiles cut from its
//! confirmed cases: the host's first half, lesions from the lesion images' validation columns,
//! the quality faults inflicted as replay. The network's threshold is chosen again on the
//! fold's validation slides (other hosts; the site's tissue plays no part in it). The same is
//! done after one federated round of the whole network instead (every training host on its
//! own training tiles, the site on its cases, FedAvg: `simulate_rounds`). Each model screens
//! the same 28 slides of the host's second half (lesions from the test columns), and the
//! lesion map over the whole host is drawn for each (`OUT_PREFIX-before.png`, `-after.png`,
//! `-federated.png`: red where a tile's smoothed lesion score reaches the threshold). The fold's
//! model is kept as `OUT_PREFIX-fold.onnx`, so that another local round needs no retraining.
//! The "after" figures are not held out: the model trained on the site's other half.
//!
//! `site_learning FIXTURES shipped PACKAGE SIGNING_KEY` — the shipped model (it trained on the
//! SVS's first 60%) on 28 slides of the SVS's last 40%, which it never trained on.
//!
//! `site_learning FIXTURES width 8,16,32,64` — the same for a context model of those channels
//! trained here on the SVS's first 60% and four other hosts (template4 held out, so that one
//! model trains), and the time it takes to screen the whole SVS: whether a wider model tells
//! the SVS's epithelium from the lesion, and what it would cost the triage.

use std::path::PathBuf;

use grassroots_models::federated::{
    simulate_rounds, train_local, AggregationSettings, LocalTrainingConfig, Parameters,
    SiteBehaviour,
};
use grassroots_models::screening::screen_image;
use grassroots_models::training::dataset::{
    labelled_tiles, training_host_area, Host, HostUse, Split, TissueSources, LESION,
};
use grassroots_models::training::evaluation::{auc, rates, score_slides, ScoredSlide};
use grassroots_models::training::sources::Source;
use grassroots_models::training::{chosen_threshold, proxy_manifest, train, TrainingConfig};
use grassroots_models::{Manifest, ModelPackage, PackageSigner, PackageVerifier, TileClassifier};
use image::{Rgb, RgbImage};
use rand::SeedableRng;

#[path = "common/fixtures.rs"]
mod fixtures;
use fixtures::all_sources;

type Failure = Box<dyn std::error::Error>;

/// Tiles of each class `labelled_tiles` cuts from the site's confirmed cases (about 1,100-1,300
/// tiles in all, of the order of what the edge's cutter takes from 20 labelled slides at 48
/// tiles a label).
const TILES_PER_CLASS: usize = 160;

/// Slides of the host's second half each model screens (half with a lesion).
const SITE_SLIDES: usize = 28;

/// `onnx` as the edge runs it, `batch` tiles a run.
fn edge_classifier(
    onnx: &[u8],
    manifest: &Manifest,
    batch: usize,
) -> Result<TileClassifier, Failure> {
    let package = ModelPackage {
        manifest: manifest.clone(),
        graph: onnx.to_vec(),
        digest: String::new(),
    };
    Ok(TileClassifier::load(&package, batch)?)
}

/// The host's lesion map over its tissue, with how many tissue tiles reach `threshold` and how
/// many there are: green under it, red at or over it, stronger the higher the score.
fn draw(
    classifier: &TileClassifier,
    host: &RgbImage,
    stride: u32,
    threshold: f32,
) -> Result<(RgbImage, usize, usize), Failure> {
    let grid = screen_image(classifier, host, stride)?;
    let map = grid.smoothed_map(LESION);
    let mut picture = host.clone();
    let (mut tissue, mut above) = (0, 0);
    // Each cell's own stride-square at the tile's centre.
    let inset = grid.tile / 2 - stride / 2;
    for row in 0..grid.rows {
        for col in 0..grid.cols {
            let at = (row * grid.cols + col) as usize;
            if grid.cells[at].probabilities.is_none() {
                continue;
            }
            tissue += 1;
            let score = map[at];
            above += usize::from(score >= threshold);
            let tint = match score >= threshold {
                true => [255.0, 0.0, 0.0],
                false => [0.0, 160.0, 0.0],
            };
            let alpha = 0.15 + 0.5 * score.clamp(0.0, 1.0);
            let (x0, y0) = (col * stride + inset, row * stride + inset);
            for y in y0..(y0 + stride).min(picture.height()) {
                for x in x0..(x0 + stride).min(picture.width()) {
                    let Rgb(c) = *picture.get_pixel(x, y);
                    let mix = |i: usize| (f32::from(c[i]) * (1.0 - alpha) + tint[i] * alpha) as u8;
                    picture.put_pixel(x, y, Rgb([mix(0), mix(1), mix(2)]));
                }
            }
        }
    }
    Ok((picture, above, tissue))
}

fn report(name: &str, slides: &[ScoredSlide], threshold: f32) {
    let (sensitivity, specificity) = rates(slides, threshold);
    let positives = slides.iter().filter(|s| s.positive).count();
    let on_lesion = slides
        .iter()
        .filter(|s| s.positive && s.top_tile_on_lesion)
        .count();
    let sorted = |positive: bool| {
        let mut scores: Vec<f32> = slides
            .iter()
            .filter(|s| s.positive == positive)
            .map(|s| s.score)
            .collect();
        scores.sort_by(f32::total_cmp);
        scores
    };
    println!(
        "{name}: threshold {threshold:.3}, sensitivity {sensitivity:.2}, specificity {specificity:.2}, top tile on lesion {on_lesion}/{positives}, AUC {:.2}\n  benign scores {:.2?}\n  lesion scores {:.2?}",
        auc(slides),
        sorted(false),
        sorted(true)
    );
}

/// [`SITE_SLIDES`] test slides of `sources`, drawn from `seed` (the same slides for every model
/// given the same seed), scored by `model`.
fn test_slides(
    model: &TileClassifier,
    sources: &TissueSources,
    stride: u32,
    seed: u64,
) -> Result<Vec<ScoredSlide>, Failure> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Ok(score_slides(
        model,
        sources,
        Split::Test,
        SITE_SLIDES,
        stride,
        &mut rng,
    )?)
}

/// `model` (called `name`) on [`SITE_SLIDES`] slides of the part of the SVS a model that trains
/// on it validates on and never trains on (its last 40%), called at `threshold`.
fn report_on_svs_beyond_training(
    name: &str,
    model: &TileClassifier,
    threshold: f32,
    sources: &TissueSources,
) -> Result<(), Failure> {
    let config = TrainingConfig::context();
    let mut beyond = sources.holding_out(0);
    let svs = &sources.hosts[0].source;
    let (x, y, w, h) = training_host_area(svs.image.width(), svs.image.height(), Split::Validation);
    beyond.hosts = vec![Host {
        source: Source {
            provenance: svs.provenance.clone(),
            image: image::imageops::crop_imm(&svs.image, x, y, w, h).to_image(),
        },
        used: HostUse::HeldOut,
    }];
    let slides = test_slides(model, &beyond, config.stride, config.seed)?;
    report(&format!("{name}, the SVS's last 40%"), &slides, threshold);
    Ok(())
}

/// The shipped model on the part of the SVS it validated on and never trained on.
fn shipped(fixtures: &std::path::Path, package: &str, key: &str) -> Result<(), Failure> {
    let signer = PackageSigner::from_seed_hex(std::fs::read_to_string(key)?.trim())?;
    let verifier = PackageVerifier::from_public_hex(&signer.public_key_hex())?;
    let package = ModelPackage::open(&std::fs::read(package)?, &verifier)?;
    let model = TileClassifier::load(&package, 64)?;
    let threshold = *package
        .manifest
        .thresholds
        .get("suspicious")
        .ok_or("the package states no suspicious threshold")?;
    report_on_svs_beyond_training("shipped model", &model, threshold, &all_sources(fixtures)?)
}

/// A context model of `channels` trained on the SVS's first 60% and four other hosts
/// (template4 held out, so that one model trains), its threshold chosen on their validation
/// slides, measured on the SVS's last 40%; and the time it takes to screen the whole SVS.
fn of_width(fixtures: &std::path::Path, channels: &str) -> Result<(), Failure> {
    let config = TrainingConfig {
        channels: channels
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<usize>, _>>()?,
        ..TrainingConfig::context()
    };
    let sources = all_sources(fixtures)?;
    let trained = train(&sources.holding_out(5), &config, |line| eprintln!("{line}"))?;
    let model = edge_classifier(&trained.onnx, &trained.manifest, 64)?;
    report_on_svs_beyond_training(
        &format!("channels {channels}"),
        &model,
        trained.report.threshold,
        &sources,
    )?;
    // One tile a run, as the edge screens.
    let single = edge_classifier(&trained.onnx, &trained.manifest, 1)?;
    let started = std::time::Instant::now();
    let grid = screen_image(&single, &sources.hosts[0].source.image, config.stride)?;
    println!(
        "channels {channels}: the whole SVS ({} tiles) screened in {:.2} s",
        grid.cells
            .iter()
            .filter(|c| c.probabilities.is_some())
            .count(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: site_learning FIXTURES INDEX OUT_PREFIX [EPOCHS] | FIXTURES shipped PACKAGE SIGNING_KEY | FIXTURES width CHANNELS";
    let (fixtures, index, out) = match args.as_slice() {
        [_, fixtures, mode, package, key] if mode == "shipped" => {
            return shipped(&PathBuf::from(fixtures), package, key)
        }
        [_, fixtures, mode, channels] if mode == "width" => {
            return of_width(&PathBuf::from(fixtures), channels)
        }
        [_, fixtures, index, out] | [_, fixtures, index, out, _] => match index.parse::<usize>() {
            Ok(index) => (PathBuf::from(fixtures), index, out),
            Err(_) => return Err(usage.into()),
        },
        _ => return Err(usage.into()),
    };
    let epochs = match args.get(4) {
        Some(epochs) => epochs.parse()?,
        None => LocalTrainingConfig::default().epochs,
    };
    let config = TrainingConfig::context();
    let sources = all_sources(&fixtures)?;
    if index >= sources.hosts.len() {
        return Err(format!(
            "INDEX {index}: there are {} hosts; {usage}",
            sources.hosts.len()
        )
        .into());
    }
    let fold = sources.holding_out(index);
    let site = sources.site_calibrating(index);
    let host = sources.hosts[index].source.clone();
    let manifest = proxy_manifest(config.tile, config.microns_per_pixel, &[]);
    let kept = format!("{out}-fold.onnx");
    let fold_onnx = match std::fs::read(&kept) {
        Ok(onnx) => onnx,
        Err(_) => {
            eprintln!("training without {}", host.provenance.name);
            let trained = train(&fold, &config, |line| eprintln!("{line}"))?;
            std::fs::write(&kept, &trained.onnx)?;
            trained.onnx
        }
    };
    let seed = config.seed.wrapping_add(5000 + index as u64);
    let site_slides = |model: &TileClassifier| test_slides(model, &site, config.stride, seed);
    let tile = config.tile as usize;
    // A model's values as the edge runs them, with the network's threshold chosen for them on
    // the fold's validation slides.
    let as_screened = |values: &Parameters| -> Result<(TileClassifier, f32), Failure> {
        let onnx = grassroots_models::onnx_graph::cnn_to_onnx(&values.to_cnn()?, tile, tile, &[]);
        let model = edge_classifier(&onnx, &manifest, 64)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 1);
        let validation = score_slides(
            &model,
            &fold,
            Split::Validation,
            config.validation_slides,
            config.stride,
            &mut rng,
        )?;
        Ok((model, chosen_threshold(&validation, "validation")?))
    };
    let global = Parameters::from_onnx(&fold_onnx)?;
    let (before, threshold_before) = as_screened(&global)?;
    report("the fold's model", &site_slides(&before)?, threshold_before);

    // The site's confirmed cases, as tiles.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 2);
    let site_tiles = labelled_tiles(
        &site,
        Split::Validation,
        TILES_PER_CLASS,
        config.tile,
        &mut rng,
    );
    let local = LocalTrainingConfig {
        epochs,
        ..LocalTrainingConfig::default()
    };
    let started = std::time::Instant::now();
    let update = train_local(&global, site_tiles.clone(), config.tile, &local, || true)?;
    eprintln!(
        "local round: {} tiles of the site's first half, {epochs} epochs, {:.0} s, mean loss {:.3}",
        site_tiles.len(),
        started.elapsed().as_secs_f64(),
        update.mean_loss
    );
    let mut trained = global.clone();
    for (value, change) in trained.values.iter_mut().zip(&update.delta) {
        *value += change;
    }
    let (after, threshold_after) = as_screened(&trained)?;
    report(
        "after one local round at the site (not held out)",
        &site_slides(&after)?,
        threshold_after,
    );

    // The same site in a federated round of the whole network: every training host trains on
    // its own training tiles, the site on its cases, the hub averages (FedAvg, by samples).
    let mut sites = Vec::new();
    for (i, host) in fold.hosts.iter().enumerate() {
        if host.used != HostUse::Training {
            continue;
        }
        let mut own = fold.clone();
        own.hosts = vec![host.clone()];
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 10 + i as u64);
        let tiles = labelled_tiles(&own, Split::Train, TILES_PER_CLASS, config.tile, &mut rng);
        sites.push((
            host.source.provenance.name.clone(),
            tiles,
            SiteBehaviour::Honest,
        ));
    }
    sites.push((
        host.provenance.name.clone(),
        site_tiles,
        SiteBehaviour::Honest,
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 3);
    let evaluation = labelled_tiles(&fold, Split::Validation, 20, config.tile, &mut rng);
    let started = std::time::Instant::now();
    let (network, rounds) = simulate_rounds(
        &global,
        &sites,
        &evaluation,
        config.tile,
        1,
        &local,
        &AggregationSettings::default(),
    )?;
    eprintln!(
        "federated round of {} sites: {:.0} s, validation tile accuracy {:.3}",
        sites.len(),
        started.elapsed().as_secs_f64(),
        rounds.first().ok_or("no round ran")?.accuracy
    );
    let (federated, threshold_federated) = as_screened(&network)?;
    report(
        "after one federated round with the site (not held out)",
        &site_slides(&federated)?,
        threshold_federated,
    );

    for (name, model, threshold) in [
        ("before", &before, threshold_before),
        ("after", &after, threshold_after),
        ("federated", &federated, threshold_federated),
    ] {
        let (picture, above, tissue) = draw(model, &host.image, config.stride, threshold)?;
        picture.save(format!("{out}-{name}.png"))?;
        println!("{name}: {above} of {tissue} tissue tiles of the whole host reach the threshold");
    }
    Ok(())
}
