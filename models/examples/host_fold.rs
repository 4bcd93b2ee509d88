//! One fold of the evaluation by host, with or without slide-level stain normalisation: whether
//! a lab's overall stain is what makes a host the model never saw read as lesion (the SVS's
//! benign skin scores above every threshold chosen on the other hosts).
//!
//! `host_fold FIXTURES HOST_INDEX [--stain]` — trains the fold as `grassroots model train`
//! does (its sources, configuration and seeds) and prints every held-out slide's score. With
//! `--stain`, every host is normalised as a whole (a host is one lab's slide) before any tile
//! is cut: each channel's optical density scaled so that the host's tissue has
//! [`REFERENCE_DENSITY`] (Beer-Lambert: the amount of stain; a table per channel, which the
//! edge could apply with the normalisation it already does). Every pixel goes through the
//! tables, glass too (glass stays bright: its density is near 0 and is scaled, not shifted),
//! and tissue is found again on the result, so the host's measured density after is near the
//! reference rather than on it. Lesion images are not normalised (a planted lesion keeps its
//! own darker stain, as tumour in a slide is darker than the tissue around it). Result
//! (README): the SVS's benign slides stay above the threshold, 0 of 7 cleared either way; the
//! lab's overall stain is not why they read as lesion. About 4.5 minutes on one core
//! (release build).

use std::path::PathBuf;

use grassroots_models::screening::is_tissue;
use grassroots_models::training::{evaluate_held_out_host, TrainingConfig};
use image::RgbImage;

#[path = "common/fixtures.rs"]
mod fixtures;

const USAGE: &str = "usage: host_fold FIXTURES HOST_INDEX [--stain]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or(USAGE)?);
    let mut sources = fixtures::all_sources(&dir)?;
    let last = sources.hosts.len().saturating_sub(1);
    let held_out: usize = args
        .next()
        .ok_or(USAGE)?
        .parse()
        .map_err(|_| format!("HOST_INDEX is a number from 0 to {last}; {USAGE}"))?;
    let normalise_stain = match (args.next().as_deref(), args.next()) {
        (None, None) => false,
        (Some("--stain"), None) => true,
        _ => return Err(USAGE.into()),
    };
    for host in &mut sources.hosts {
        let (before, _) = tissue_density(&host.source.image);
        if normalise_stain {
            host.source.image = normalised(&host.source.image);
        }
        let (after, _) = tissue_density(&host.source.image);
        println!(
            "{}: tissue density {before:.2?} -> {after:.2?}",
            host.source.provenance.name
        );
    }
    // As `grassroots model train` sets it by default (its `--tiles-per-class` default).
    let config = TrainingConfig::context()
        .with_tiles_per_class(TrainingConfig::default().train_tiles_per_class);
    let mut fold =
        evaluate_held_out_host(&sources, held_out, &config, &mut |line| println!("{line}"))?;
    fold.slides.sort_by(|a, b| a.score.total_cmp(&b.score));
    for slide in &fold.slides {
        println!(
            "{} {:.3}{}",
            if slide.positive { "lesion" } else { "benign" },
            slide.score,
            if slide.suspicious { " suspicious" } else { "" }
        );
    }
    println!(
        "threshold {:.3}, AUC {:.2}, site-calibrated threshold {:.3}",
        fold.threshold, fold.auc, fold.site_calibration.threshold
    );
    Ok(())
}

/// The tissue's mean optical density per channel (R, G, B) every host is scaled to with
/// `--stain`: the mean of the six hosts' as shipped (0.44, 0.81, 0.46), rounded.
const REFERENCE_DENSITY: [f32; 3] = [0.45, 0.80, 0.45];

/// Optical density of an 8-bit level (0 taken as 1).
fn optical_density(value: u8) -> f32 {
    -(f32::from(value.max(1)) / 255.0).ln()
}

/// Mean optical density per channel of `image`'s tissue pixels, with their count.
fn tissue_density(image: &RgbImage) -> ([f32; 3], usize) {
    let mut sum = [0.0f64; 3];
    let mut count = 0usize;
    for pixel in image.pixels().filter(|p| is_tissue(p)) {
        count += 1;
        for (c, value) in pixel.0.iter().enumerate() {
            sum[c] += f64::from(optical_density(*value));
        }
    }
    (sum.map(|s| (s / count.max(1) as f64) as f32), count)
}

/// `image` with each channel's optical density scaled so that its tissue has the reference
/// density (by at most 2.5 times either way; left as it is without tissue).
fn normalised(image: &RgbImage) -> RgbImage {
    let (measured, count) = tissue_density(image);
    let scales = [0, 1, 2].map(|c| match count > 0 && measured[c] > 0.0 {
        true => (REFERENCE_DENSITY[c] / measured[c]).clamp(0.4, 2.5),
        false => 1.0,
    });
    let tables: [[u8; 256]; 3] = scales.map(|scale| {
        std::array::from_fn(|v| (255.0 * (-optical_density(v as u8) * scale).exp()).round() as u8)
    });
    let mut out = image.clone();
    for pixel in out.pixels_mut() {
        for (c, value) in pixel.0.iter_mut().enumerate() {
            *value = tables[c][usize::from(*value)];
        }
    }
    out
}
