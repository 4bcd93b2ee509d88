//! Cuts training tiles from the edge's own slides by its labels, at the model's resolution:
//! lesion tiles from inside labelled lesion regions, tissue and background tiles from slides
//! confirmed benign, and a replay set for the classes the labels do not cover — blur, pen and
//! folds inflicted on the site's own benign tissue exactly as central training inflicts them on
//! public tissue — so that local training does not forget quality control.
//!
//! Tiles are read one at a time (a region of the slide scaled to the tile), never a whole slide;
//! positions come from a seeded RNG, so a round's tiles are reproducible. Nothing here leaves the
//! edge: tiles live in memory for the length of local training.

use std::sync::Arc;

use grassroots_models::training::dataset::{
    blur, draw_pen_stroke, fold, LabelledTile, BACKGROUND, BLUR, FOLD, LESION, PEN, TISSUE,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::labels::{contains, LabelClass, TrainingLabel};
use crate::slides::SlideLibrary;
use crate::EdgeError;

/// Slides whose resolution is not recorded are taken as scanned at 40x.
const DEFAULT_MICRONS_PER_PIXEL: f64 = 0.25;

/// What cutting found, by class, beside the tiles.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CutSummary {
    pub lesion: usize,
    pub tissue: usize,
    pub background: usize,
    pub replay: usize,
    pub slides: usize,
    pub skipped_slides: Vec<String>,
}

/// Cuts up to `per_label` tiles of `tile` pixels at `microns_per_pixel` for every label that is
/// not withdrawn, and the replay set when `replay` (training wants it; judging a model against
/// the labels does not).
pub fn cut(
    library: &Arc<SlideLibrary>,
    labels: &[TrainingLabel],
    tile: u32,
    microns_per_pixel: f64,
    per_label: usize,
    seed: u64,
    replay: bool,
) -> Result<(Vec<LabelledTile>, CutSummary), EdgeError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tiles = Vec::new();
    let mut summary = CutSummary::default();
    let mut benign_tissue = Vec::new();
    for label in labels.iter().filter(|l| !l.withdrawn) {
        let slide = match library.slide(&label.slide_id) {
            Ok(slide) => slide,
            Err(error) => {
                tracing::warn!(slide = %label.slide_id, %error, "a labelled slide cannot be read; skipped");
                summary.skipped_slides.push(label.slide_id.clone());
                continue;
            }
        };
        summary.slides += 1;
        let info = slide.info().clone();
        let slide_mpp = info
            .microns_per_pixel_x
            .filter(|m| *m > 0.0)
            .unwrap_or(DEFAULT_MICRONS_PER_PIXEL);
        let span = (f64::from(tile) * microns_per_pixel / slide_mpp)
            .round()
            .max(1.0) as u32;
        if span > info.width || span > info.height {
            summary.skipped_slides.push(label.slide_id.clone());
            continue;
        }
        let read = |x: u32, y: u32| {
            slide
                .region_rgb((x, y, span, span), (tile, tile))
                .map_err(|e| EdgeError::Config(format!("reading slide {}: {e}", label.slide_id)))
        };
        match label.class {
            LabelClass::Lesion => {
                let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
                for [x, y] in label.regions.iter().flatten() {
                    (x0, y0, x1, y1) = (x0.min(*x), y0.min(*y), x1.max(*x), y1.max(*y));
                }
                let mut found = 0;
                for _ in 0..per_label * 8 {
                    if found >= per_label || x1 <= x0 || y1 <= y0 {
                        break;
                    }
                    let centre = [rng.gen_range(x0..x1), rng.gen_range(y0..y1)];
                    if !label.regions.iter().any(|r| contains(r, centre)) {
                        continue;
                    }
                    let half = f64::from(span) / 2.0;
                    let x = (centre[0] - half).clamp(0.0, f64::from(info.width - span)) as u32;
                    let y = (centre[1] - half).clamp(0.0, f64::from(info.height - span)) as u32;
                    tiles.push(LabelledTile {
                        image: read(x, y)?,
                        class: LESION,
                    });
                    found += 1;
                    summary.lesion += 1;
                }
            }
            LabelClass::Benign => {
                let (mut tissue, mut background) = (0, 0);
                for _ in 0..per_label * 4 {
                    if tissue >= per_label {
                        break;
                    }
                    let x = rng.gen_range(0..=info.width - span);
                    let y = rng.gen_range(0..=info.height - span);
                    let image = read(x, y)?;
                    let fraction = grassroots_models::screening::tissue_fraction(&image);
                    if fraction > 0.5 {
                        benign_tissue.push(image.clone());
                        tiles.push(LabelledTile {
                            image,
                            class: TISSUE,
                        });
                        tissue += 1;
                    } else if fraction < 0.05 && background < per_label / 4 + 1 {
                        tiles.push(LabelledTile {
                            image,
                            class: BACKGROUND,
                        });
                        background += 1;
                    }
                }
                summary.tissue += tissue;
                summary.background += background;
            }
        }
    }
    // The replay set: each quality fault inflicted on a share of the benign tissue.
    let replay_each = if replay {
        (benign_tissue.len() / 4).max(usize::from(!benign_tissue.is_empty()) * 8)
    } else {
        0
    };
    for _ in 0..replay_each {
        if benign_tissue.is_empty() {
            break;
        }
        let pick = |rng: &mut StdRng| benign_tissue[rng.gen_range(0..benign_tissue.len())].clone();
        let sigma = rng.gen_range(1.5..3.0);
        tiles.push(LabelledTile {
            image: blur(&pick(&mut rng), sigma),
            class: BLUR,
        });
        let mut pen = pick(&mut rng);
        draw_pen_stroke(&mut pen, &mut rng);
        tiles.push(LabelledTile {
            image: pen,
            class: PEN,
        });
        let (a, b) = (pick(&mut rng), pick(&mut rng));
        tiles.push(LabelledTile {
            image: fold(&a, &b),
            class: FOLD,
        });
        summary.replay += 3;
    }
    Ok((tiles, summary))
}
