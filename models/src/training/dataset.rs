//! The proxy-task dataset: labelled tiles and synthetic slides made from real tissue images.
//!
//! No labelled malignancy data ships in any package, so the model learns what can be labelled
//! honestly (see the brief): background vs tissue, quality faults inflicted here (blur, pen
//! strokes, folds), and **planted lesions** — regions of a different real tissue (a dense H&E
//! tumour image) pasted into real H&E (the Aperio slide) at known places, which gives exact masks.
//! Every figure measured on it is a proxy-task figure.
//!
//! Splits never share tissue. Each lesion image is cut into three columns by where its tumour
//! is ([`super::tumour`]): the first half of its tumour trains, the next quarter validates, the
//! last quarter tests; a validation or test lesion is cut where at least three quarters is
//! tumour: a tile as a whole, a planted blob in the middle of its patch (`BLOB_CORE`; a
//! training one may be any tissue of its column). A host is used in one of three ways
//! ([`HostUse`]): cut into twelve bands, every third one to a split (one host shared by all three splits, so
//! that each sees its kinds of tissue alike: the federated sites' data); a training host, whose
//! first 60% trains and the rest validates; or held out, the whole image test tissue — the
//! evaluation by host of [`super::evaluation`] holds each host out in turn. No pixel is in two
//! splits. Synthetic slides are random windows of their split's hosts, so that negatives differ
//! from one another. Everything is drawn from a seeded RNG.
//!
//! Training tiles get flips, quarter turns and a colour jitter — per-channel gain and
//! brightness, or (for the sources of [`TissueSources::all_from_fixtures`]) a perturbation of the
//! haematoxylin, eosin and DAB densities after colour deconvolution — so that the model learns
//! texture and not one lab's stain.

use image::{GrayImage, Luma, Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::Rng;

use super::sources::{self, Provenance, Source};
use super::tumour::{min_tumour_share, Lesion};
use crate::screening::{is_tissue, tissue_fraction};

/// The model's classes, in output order.
pub const CLASSES: [&str; 6] = ["background", "tissue", "lesion", "blur", "pen", "fold"];
pub const BACKGROUND: usize = 0;
pub const TISSUE: usize = 1;
pub const LESION: usize = 2;
pub const BLUR: usize = 3;
pub const PEN: usize = 4;
pub const FOLD: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Split {
    Train,
    Validation,
    Test,
}

/// How a host's tissue is dealt to the splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum HostUse {
    /// Twelve bands, every third one to a split: one host for all three splits.
    Bands,
    /// Twelve bands of the part a [`HostUse::Training`] host validates on (the last 40% along
    /// its longer side), cut across that part's longer side, every third one to a split: host
    /// tissue of all three splits that a model trained on this host as a training host (the
    /// shipped context model) never trained on. (Lesions keep their columns: the validation
    /// and test splits' lesion tissue was never trained on either, the training split's was.)
    BandsBeyondTraining,
    /// The first 60% along its longer side trains, the rest validates; no test part.
    Training,
    /// Held out: the whole image is test tissue, none trains or validates.
    HeldOut,
    /// Held out from training, at a site that chose its own threshold: the first half along
    /// the longer side stands for the site's confirmed cases (the validation split, where the
    /// threshold is chosen), the second half for the cases it screens next (the test split).
    SiteCalibration,
}

/// A host image and how it is used.
#[derive(Clone)]
pub struct Host {
    pub source: Source,
    pub used: HostUse,
}

/// Real tissue images at the model's resolution.
#[derive(Clone)]
pub struct TissueSources {
    /// H&E that hosts planted lesions.
    pub hosts: Vec<Host>,
    /// Tissue planted as lesions (each cut into a column per split), with where its tumour is.
    pub lesions: Vec<Lesion>,
    /// Stain augmentation in HED space (else per-channel RGB gain).
    pub hed_augmentation: bool,
    /// The model's resolution, which the hosts are at: planted lesions and inflicted blur are
    /// sized in microns through it.
    pub microns_per_pixel: f64,
}

/// The resolution the single-host constructors assume (the quick model's): their lesion images
/// are halved from about 0.5 um/px to read at twice the magnification of a 2 um/px host.
pub const QUICK_MICRONS_PER_PIXEL: f64 = 2.0;

fn unnamed(name: &str, image: RgbImage) -> Source {
    Source {
        provenance: Provenance {
            name: name.into(),
            origin: "given by the caller".into(),
            microns_per_pixel: f64::NAN,
            scale_from: "not stated".into(),
            tumour_from: None,
        },
        image,
    }
}

/// (x, y, width, height) of a part of an image.
pub type Area = (u32, u32, u32, u32);

impl TissueSources {
    /// From the host at the model's resolution and the lesion images where
    /// `scripts/fetch-fixtures` puts them (`DIR/tissue/`).
    pub fn from_fixtures(
        host: RgbImage,
        fixtures: &std::path::Path,
    ) -> Result<Self, crate::ModelError> {
        let open = |name: &str| {
            let path = fixtures.join("tissue").join(name);
            image::open(&path)
                .map(|image| image.to_rgb8())
                .map_err(|e| crate::ModelError::Load {
                    path: path.display().to_string(),
                    reason: format!("{e} (run scripts/fetch-fixtures)"),
                })
        };
        Ok(Self::from_images(
            host,
            &open("target_image.png")?,
            &open("histo.jpg")?,
        ))
    }

    /// From the host at the model's resolution and the lesion images as they ship (about
    /// 0.5 um/px, scale not recorded), which are halved so that their dense nuclei read as a
    /// different, larger-celled tissue at the model's scale.
    pub fn from_images(host: RgbImage, lesion: &RgbImage, test_lesion: &RgbImage) -> Self {
        Self::with_lesions(host, &[lesion, test_lesion])
    }

    /// [`Self::with_lesions`] from image files.
    pub fn with_lesion_files(
        host: RgbImage,
        paths: &[std::path::PathBuf],
    ) -> Result<Self, crate::ModelError> {
        let lesions = paths
            .iter()
            .map(|path| {
                image::open(path).map(|image| image.to_rgb8()).map_err(|e| {
                    crate::ModelError::Load {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let lesions: Vec<&RgbImage> = lesions.iter().collect();
        Ok(Self::with_lesions(host, &lesions))
    }

    /// From the host and any lesion images as they ship (about 0.5 um/px), halved as in
    /// [`Self::from_images`]: one lesion source makes a site whose tumours all look alike, as
    /// a county hospital's case mix would (the demo's non-IID sites). The host is cut in bands.
    pub fn with_lesions(host: RgbImage, lesions: &[&RgbImage]) -> Self {
        let halve = |image: &RgbImage| {
            image::imageops::resize(
                image,
                image.width() / 2,
                image.height() / 2,
                image::imageops::FilterType::Triangle,
            )
        };
        Self {
            hosts: vec![Host {
                source: unnamed("host", host),
                used: HostUse::Bands,
            }],
            lesions: lesions
                .iter()
                .enumerate()
                .map(|(i, image)| {
                    Lesion::whole(unnamed(&format!("lesion {}", i + 1), halve(image)))
                })
                .collect(),
            hed_augmentation: false,
            microns_per_pixel: QUICK_MICRONS_PER_PIXEL,
        }
    }

    /// The SVS alone as host, the part `model train` does not train on cut in bands (one host
    /// for all three splits, [`HostUse::BandsBeyondTraining`]), with the fixtures' three lesion
    /// images at twice the magnification of `microns_per_pixel` and HED stain augmentation:
    /// tiles of one split at any model's resolution (the context model's tile sets: the hub's
    /// validation set must not hold tissue the central model trained on), where
    /// [`Self::from_fixtures`] assumes the quick model's.
    pub fn banded_from_fixtures(
        svs: RgbImage,
        svs_microns_per_pixel: f64,
        fixtures: &std::path::Path,
        microns_per_pixel: f64,
    ) -> Result<Self, crate::ModelError> {
        Ok(Self {
            hosts: vec![Host {
                source: sources::svs(svs, svs_microns_per_pixel),
                used: HostUse::BandsBeyondTraining,
            }],
            lesions: sources::lesions(fixtures, microns_per_pixel)?,
            hed_augmentation: true,
            microns_per_pixel,
        })
    }

    /// Every real tissue the fixtures hold, for evaluation by host: the SVS (read by the
    /// caller at the model's resolution, `svs_microns_per_pixel` as shipped) and the five
    /// other hosts of [`sources`], all training hosts; the three lesion images; HED stain
    /// augmentation.
    pub fn all_from_fixtures(
        svs: RgbImage,
        svs_microns_per_pixel: f64,
        fixtures: &std::path::Path,
        microns_per_pixel: f64,
    ) -> Result<Self, crate::ModelError> {
        let mut hosts = vec![sources::svs(svs, svs_microns_per_pixel)];
        hosts.extend(sources::other_hosts(fixtures, microns_per_pixel)?);
        Ok(Self {
            hosts: hosts
                .into_iter()
                .map(|source| Host {
                    source,
                    used: HostUse::Training,
                })
                .collect(),
            lesions: sources::lesions(fixtures, microns_per_pixel)?,
            hed_augmentation: true,
            microns_per_pixel,
        })
    }

    /// The same sources with host `index` held out (test tissue only) and every other host a
    /// training host (none has test tissue, so every test slide is of the held-out host).
    pub fn holding_out(&self, index: usize) -> Self {
        let mut held = self.clone();
        for (i, host) in held.hosts.iter_mut().enumerate() {
            host.used = match i == index {
                true => HostUse::HeldOut,
                false => HostUse::Training,
            };
        }
        held
    }

    /// Host `index` alone, as a site that recalibrates a model trained without it
    /// ([`HostUse::SiteCalibration`]); the lesions as they are.
    pub fn site_calibrating(&self, index: usize) -> Self {
        let mut site = self.clone();
        site.hosts = vec![Host {
            source: self.hosts[index].source.clone(),
            used: HostUse::SiteCalibration,
        }];
        site
    }

    /// Every host's tissue for `split` (hosts without a part in it left out).
    pub fn host_parts(&self, split: Split) -> Vec<RgbImage> {
        self.hosts
            .iter()
            .filter_map(|host| host_part(host, split))
            .collect()
    }

    /// The first host's tissue for `split`, if it has some there.
    pub fn host_part(&self, split: Split) -> Option<RgbImage> {
        self.hosts.first().and_then(|host| host_part(host, split))
    }

    /// Every region a split reads, by image name: what [`super::evaluation::check_splits`]
    /// checks.
    pub fn regions(&self) -> Vec<(String, Split, Area)> {
        let splits = [Split::Train, Split::Validation, Split::Test];
        let mut regions = Vec::new();
        for host in &self.hosts {
            for split in splits {
                for area in host_areas(host, split) {
                    regions.push((host.source.provenance.name.clone(), split, area));
                }
            }
        }
        for (source, split) in self
            .lesions
            .iter()
            .flat_map(|source| splits.map(|split| (source, split)))
        {
            regions.push((
                source.source.provenance.name.clone(),
                split,
                source.column(split),
            ));
        }
        regions
    }

    /// Each lesion image's column for `split` ([`Lesion::column`]).
    pub fn lesion_parts(&self, split: Split) -> Vec<(&Lesion, Area)> {
        self.lesions
            .iter()
            .map(|lesion| (lesion, lesion.column(split)))
            .collect()
    }
}

/// The areas of `host` that `split` reads (stacked top to bottom when there are several): the
/// one description of the splits that both the tiles and [`TissueSources::regions`] use.
fn host_areas(host: &Host, split: Split) -> Vec<Area> {
    let (w, h) = host.source.image.dimensions();
    match (host.used, split) {
        (HostUse::Bands, _) => bands_of((w, h), split, false),
        (HostUse::BandsBeyondTraining, _) => {
            let (x0, y0, aw, ah) = training_host_area(w, h, Split::Validation);
            bands_of((aw, ah), split, aw > ah)
                .into_iter()
                .map(|(x, y, bw, bh)| (x0 + x, y0 + y, bw, bh))
                .collect()
        }
        (HostUse::Training, Split::Train | Split::Validation) => {
            vec![training_host_area(w, h, split)]
        }
        (HostUse::HeldOut, Split::Test) => vec![(0, 0, w, h)],
        (HostUse::SiteCalibration, Split::Validation | Split::Test) => {
            vec![site_half(w, h, split)]
        }
        _ => Vec::new(),
    }
}

/// Bands `i`, `i + 3`, `i + 6`, `i + 9` of twelve of an area of `(w, h)` for split `i` (train
/// 0, validation 1, test 2), relative to the area: side by side (`across_width`) or stacked.
fn bands_of((w, h): (u32, u32), split: Split, across_width: bool) -> Vec<Area> {
    let first = match split {
        Split::Train => 0,
        Split::Validation => 1,
        Split::Test => 2,
    };
    [first, first + 3, first + 6, first + 9]
        .into_iter()
        .map(|index| match across_width {
            true => (index * (w / 12), 0, w / 12, h),
            false => (0, index * (h / 12), w, h / 12),
        })
        .collect()
}

/// `host`'s tissue for `split` (its areas joined top to bottom), if it has any there.
fn host_part(host: &Host, split: Split) -> Option<RgbImage> {
    let areas = host_areas(host, split);
    let first = areas.first()?;
    let height: u32 = areas.iter().map(|a| a.3).sum();
    let mut joined = RgbImage::new(first.2, height);
    let mut y = 0;
    for (x0, y0, w, h) in areas {
        let part = image::imageops::crop_imm(&host.source.image, x0, y0, w, h);
        image::imageops::replace(&mut joined, &*part, 0, i64::from(y));
        y += h;
    }
    Some(joined)
}

/// A site-calibration host's half for `split`: the first half along the longer side is the
/// site's confirmed cases (validation), the second what it screens next (test).
fn site_half(w: u32, h: u32, split: Split) -> Area {
    let first = split == Split::Validation;
    match (w >= h, first) {
        (true, true) => (0, 0, w / 2, h),
        (true, false) => (w / 2, 0, w - w / 2, h),
        (false, true) => (0, 0, w, h / 2),
        (false, false) => (0, h / 2, w, h - h / 2),
    }
}

/// A training host's part for `split`: the first 60% along the longer side trains, the rest
/// validates.
pub fn training_host_area(w: u32, h: u32, split: Split) -> Area {
    let validation = split != Split::Train;
    if w >= h {
        let cut = w * 3 / 5;
        if validation {
            (cut, 0, w - cut, h)
        } else {
            (0, 0, cut, h)
        }
    } else {
        let cut = h * 3 / 5;
        if validation {
            (0, cut, w, h - cut)
        } else {
            (0, 0, w, cut)
        }
    }
}

/// One of `hosts` at random (no draw when there is one).
fn pick_host<'a>(hosts: &'a [RgbImage], rng: &mut StdRng) -> &'a RgbImage {
    match hosts.len() {
        1 => &hosts[0],
        n => &hosts[rng.gen_range(0..n)],
    }
}

/// A crop satisfying `wanted` from a random host, or from the next ones if it has none.
fn crop_from_hosts(
    hosts: &[RgbImage],
    size: u32,
    rng: &mut StdRng,
    wanted: impl Fn(f32) -> bool + Copy,
) -> Option<RgbImage> {
    let first = match hosts.len() {
        1 => 0,
        n => rng.gen_range(0..n),
    };
    (0..hosts.len()).find_map(|k| {
        let host = &hosts[(first + k) % hosts.len()];
        crop_where(host, whole(host), size, rng, wanted)
    })
}

fn whole(image: &RgbImage) -> Area {
    (0, 0, image.width(), image.height())
}

/// One of `parts`, at random.
fn pick<'a>(parts: &[(&'a Lesion, Area)], rng: &mut StdRng) -> (&'a Lesion, Area) {
    parts[rng.gen_range(0..parts.len())]
}

/// A labelled training tile.
#[derive(Clone)]
pub struct LabelledTile {
    pub image: RgbImage,
    pub class: usize,
}

fn crop(image: &RgbImage, (x, y, w, h): Area, size: u32, rng: &mut StdRng) -> Option<RgbImage> {
    if w < size || h < size {
        return None;
    }
    let cx = x + rng.gen_range(0..=w - size);
    let cy = y + rng.gen_range(0..=h - size);
    Some(image::imageops::crop_imm(image, cx, cy, size, size).to_image())
}

/// A crop whose tissue share satisfies `wanted`, or none after enough tries.
fn crop_where(
    image: &RgbImage,
    area: Area,
    size: u32,
    rng: &mut StdRng,
    wanted: impl Fn(f32) -> bool,
) -> Option<RgbImage> {
    (0..400).find_map(|_| crop(image, area, size, rng).filter(|t| wanted(tissue_fraction(t))))
}

/// A planted blob of radius r is cut from a patch 2.6 r across ([`plant_lesion`]): the middle
/// 2 r of the patch's side is roughly where the blob samples (its wobbling edge reaches a
/// little beyond in places and leaves the square's corners out), so that is what must lie on
/// tumour.
const BLOB_CORE: f32 = 2.0 / 2.6;

/// A crop of `lesion` inside its column for `split` whose middle `core` of the side (1.0: all
/// of it) lies on its tumour as [`min_tumour_share`] asks and whose tissue share exceeds
/// `min_tissue`, or none after enough tries.
fn crop_lesion(
    (lesion, (x, y, w, h)): (&Lesion, Area),
    split: Split,
    (size, core): (u32, f32),
    rng: &mut StdRng,
    min_tissue: f32,
) -> Option<RgbImage> {
    if size == 0 || w < size || h < size {
        return None;
    }
    let middle = ((size as f32 * core).round() as u32).clamp(1, size);
    let inset = (size - middle) / 2;
    (0..400).find_map(|_| {
        let (cx, cy) = (
            x + rng.gen_range(0..=w - size),
            y + rng.gen_range(0..=h - size),
        );
        if lesion.tumour_share((cx + inset, cy + inset, middle, middle)) < min_tumour_share(split) {
            return None;
        }
        let tile = image::imageops::crop_imm(lesion.image(), cx, cy, size, size).to_image();
        (tissue_fraction(&tile) > min_tissue).then_some(tile)
    })
}

/// A mild colour jitter: per-channel gain and a brightness shift, as stains and scanners vary.
fn jitter_colour(mut tile: RgbImage, rng: &mut StdRng) -> RgbImage {
    let gains: [f32; 3] = [0, 1, 2].map(|_| rng.gen_range(0.92..1.08));
    let shift: f32 = rng.gen_range(-8.0..8.0);
    for pixel in tile.pixels_mut() {
        for (value, gain) in pixel.0.iter_mut().zip(gains) {
            *value = (f32::from(*value) * gain + shift).clamp(0.0, 255.0) as u8;
        }
    }
    tile
}

/// Haematoxylin, eosin and DAB optical densities per unit stain (Ruifrok and Johnston), rows.
const RGB_FROM_HED: [[f32; 3]; 3] = [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]];

/// The inverse of a 3x3 matrix (rows).
fn invert(m: [[f32; 3]; 3]) -> [[f32; 3]; 3] {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let c =
        |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    [
        [
            c(1, 1, 2, 2) / det,
            -c(0, 1, 2, 2) / det,
            c(0, 1, 1, 2) / det,
        ],
        [
            -c(1, 0, 2, 2) / det,
            c(0, 0, 2, 2) / det,
            -c(0, 0, 1, 2) / det,
        ],
        [
            c(1, 0, 2, 1) / det,
            -c(0, 0, 2, 1) / det,
            c(0, 0, 1, 1) / det,
        ],
    ]
}

/// Stain variation in HED space (Tellez et al.): the tile's colour deconvolved into
/// haematoxylin, eosin and DAB densities, each scaled and shifted a little, and recomposed. It
/// varies how much of each stain a lab uses, which an RGB gain cannot.
pub fn jitter_stains(mut tile: RgbImage, rng: &mut StdRng) -> RgbImage {
    let rows: [[f32; 3]; 3] = RGB_FROM_HED.map(|row| {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.map(|v| v / norm)
    });
    let hed_from_rgb = invert(rows);
    // Strong (Tellez et al.'s "HED-strong" is a quarter up or down): lesion and host images
    // from one lab share a stain, which must not be what tells them apart.
    let scale: [f32; 3] = [0, 1, 2].map(|_| rng.gen_range(0.75..1.25));
    let shift: [f32; 3] = [0, 1, 2].map(|_| rng.gen_range(-0.06..0.06));
    for pixel in tile.pixels_mut() {
        let density = pixel.0.map(|v| -((f32::from(v).max(1.0)) / 255.0).ln());
        let stains: [f32; 3] = [0, 1, 2].map(|j| {
            let s: f32 = (0..3).map(|i| density[i] * hed_from_rgb[i][j]).sum();
            s * scale[j] + shift[j]
        });
        for (c, value) in pixel.0.iter_mut().enumerate() {
            let od: f32 = (0..3).map(|j| stains[j] * rows[j][c]).sum();
            *value = (255.0 * (-od).exp()).clamp(0.0, 255.0) as u8;
        }
    }
    tile
}

/// Flips and quarter turns: tissue has no up or down.
fn augment(tile: RgbImage, rng: &mut StdRng) -> RgbImage {
    let tile = match rng.gen_range(0..4) {
        0 => tile,
        1 => image::imageops::rotate90(&tile),
        2 => image::imageops::rotate180(&tile),
        _ => image::imageops::rotate270(&tile),
    };
    if rng.gen_bool(0.5) {
        image::imageops::flip_horizontal(&tile)
    } else {
        tile
    }
}

/// A marker stroke across the tile, as a pathologist's pen leaves on the glass.
pub fn draw_pen_stroke(tile: &mut RgbImage, rng: &mut StdRng) {
    const INKS: [[f32; 3]; 4] = [
        [30.0, 140.0, 70.0],
        [40.0, 60.0, 170.0],
        [35.0, 35.0, 40.0],
        [20.0, 120.0, 140.0],
    ];
    let ink = INKS[rng.gen_range(0..INKS.len())];
    let (w, h) = (tile.width() as f32, tile.height() as f32);
    let angle: f32 = rng.gen_range(0.0..std::f32::consts::PI);
    let (dx, dy) = (angle.cos(), angle.sin());
    let (cx, cy) = (rng.gen_range(0.3..0.7) * w, rng.gen_range(0.3..0.7) * h);
    let half_width = rng.gen_range(0.15..0.35) * w;
    let opacity = rng.gen_range(0.6..0.9);
    for (x, y, pixel) in tile.enumerate_pixels_mut() {
        let distance = ((x as f32 - cx) * dy - (y as f32 - cy) * dx).abs();
        if distance < half_width {
            for (channel, value) in pixel.0.iter_mut().enumerate() {
                *value = (f32::from(*value) * (1.0 - opacity) + ink[channel] * opacity) as u8;
            }
        }
    }
}

/// Two layers of tissue on top of each other, as a fold leaves them: darker, denser colour.
pub fn fold(a: &RgbImage, b: &RgbImage) -> RgbImage {
    RgbImage::from_fn(a.width(), a.height(), |x, y| {
        let (p, q) = (a.get_pixel(x, y).0, b.get_pixel(x, y).0);
        Rgb([0, 1, 2].map(|c| ((u16::from(p[c]) * u16::from(q[c])) / 255) as u8))
    })
}

/// Tissue out of focus.
pub fn blur(tile: &RgbImage, sigma: f32) -> RgbImage {
    image::imageops::blur(tile, sigma)
}

/// `count` tiles of host tissue for `split` (augmented as training tiles are): the pool hard
/// negatives are mined from.
pub fn tissue_tiles(
    sources: &TissueSources,
    split: Split,
    count: usize,
    size: u32,
    rng: &mut StdRng,
) -> Vec<LabelledTile> {
    let hosts = &sources.host_parts(split);
    if hosts.is_empty() {
        return Vec::new();
    }
    (0..count)
        .filter_map(|_| {
            let host = pick_host(hosts, rng);
            let tile = crop_where(host, whole(host), size, rng, |f| f > 0.2)?;
            let tile = augment(tile, rng);
            let image = match sources.hed_augmentation {
                true => jitter_stains(tile, rng),
                false => jitter_colour(tile, rng),
            };
            Some(LabelledTile {
                image,
                class: TISSUE,
            })
        })
        .collect()
}

/// `per_class` tiles of each class for `split`, `size` pixels square.
pub fn labelled_tiles(
    sources: &TissueSources,
    split: Split,
    per_class: usize,
    size: u32,
    rng: &mut StdRng,
) -> Vec<LabelledTile> {
    let hosts = &sources.host_parts(split);
    let lesion_parts = sources.lesion_parts(split);
    let mut tiles = Vec::new();
    if hosts.is_empty() || lesion_parts.is_empty() {
        return tiles;
    }
    let hed = sources.hed_augmentation;
    let push =
        |tiles: &mut Vec<LabelledTile>, image: Option<RgbImage>, class: usize, rng: &mut StdRng| {
            if let Some(image) = image {
                let image = augment(image, rng);
                let image = match hed {
                    true => jitter_stains(image, rng),
                    false => jitter_colour(image, rng),
                };
                tiles.push(LabelledTile { image, class });
            }
        };
    for _ in 0..per_class {
        // Glass: not every host has some.
        let background = crop_from_hosts(hosts, size, rng, |f| f < 0.05);
        push(&mut tiles, background, BACKGROUND, rng);
        let host = pick_host(hosts, rng);
        let band = whole(host);
        // Tissue includes its edges (the screening classifies every tile a quarter on tissue),
        // and three times as much of it: it is what most of every slide is, and every false
        // lesion on it costs specificity.
        for _ in 0..3 {
            let tissue = crop_where(host, band, size, rng, |f| f > 0.2);
            push(&mut tiles, tissue, TISSUE, rng);
        }
        let (lesion_image, lesion_area) = pick(&lesion_parts, rng);
        let lesion = crop_lesion((lesion_image, lesion_area), split, (size, 1.0), rng, 0.5);
        push(&mut tiles, lesion, LESION, rng);
        // Blur of 3-7 um (sigma) from a larger crop so that the edges blur like the middle.
        let pixels_per_2um = (2.0 / sources.microns_per_pixel) as f32;
        let margin = (8.0 * pixels_per_2um).round() as u32;
        let sharp = if rng.gen_bool(0.7) {
            crop_where(host, band, size + 2 * margin, rng, |f| f > 0.5)
        } else {
            crop_where(
                lesion_image.image(),
                lesion_area,
                size + 2 * margin,
                rng,
                |f| f > 0.5,
            )
        };
        let blurred = sharp.map(|t| {
            let soft = blur(&t, rng.gen_range(1.5..3.5) * pixels_per_2um);
            image::imageops::crop_imm(&soft, margin, margin, size, size).to_image()
        });
        push(&mut tiles, blurred, BLUR, rng);
        let pen = crop_where(host, band, size, rng, |f| f > 0.3).map(|mut t| {
            draw_pen_stroke(&mut t, rng);
            t
        });
        push(&mut tiles, pen, PEN, rng);
        let layers = (
            crop_where(host, band, size, rng, |f| f > 0.5),
            crop_where(host, band, size, rng, |f| f > 0.5),
        );
        let folded = match layers {
            (Some(a), Some(b)) => Some(fold(&a, &b)),
            _ => None,
        };
        push(&mut tiles, folded, FOLD, rng);
    }
    tiles
}

/// The smallest planted lesion's radius: 48 um (a lesion about 100 um across), which covers at
/// least a 3 x 3 block of the screening grid (32 um steps). Smaller ones are below what the
/// slide score (a neighbourhood average) is built to find; the proxy-task figures are for
/// lesions of this size and larger.
pub const MIN_LESION_RADIUS_UM: f64 = 48.0;
/// The largest planted lesion's radius, as the lesion tissue allows.
pub const MAX_LESION_RADIUS_UM: f64 = 112.0;

/// A slide made for evaluation: a host band, perhaps with a planted lesion.
pub struct SyntheticSlide {
    pub image: RgbImage,
    /// Where the lesion was planted (255 inside), if one was.
    pub lesion_mask: Option<GrayImage>,
}

/// `count` slides for `split`, every other one with a planted lesion: each a random window of
/// 70% x 70% of the split's host.
pub fn synthetic_slides(
    sources: &TissueSources,
    split: Split,
    count: usize,
    rng: &mut StdRng,
) -> Vec<SyntheticSlide> {
    let bases = sources.host_parts(split);
    let lesion_parts = sources.lesion_parts(split);
    if bases.is_empty() || lesion_parts.is_empty() {
        return Vec::new();
    }
    let radii = (
        (MIN_LESION_RADIUS_UM / sources.microns_per_pixel) as f32,
        (MAX_LESION_RADIUS_UM / sources.microns_per_pixel) as f32,
    );
    // Lesion tissue large enough to plant the smallest lesion screened for.
    let plantable: Vec<(&Lesion, Area)> = lesion_parts
        .iter()
        .copied()
        .filter(|(_, (_, _, aw, ah))| (*aw).min(*ah) as f32 >= radii.0 * 2.6)
        .collect();
    let lesion_parts = if plantable.is_empty() {
        lesion_parts
    } else {
        plantable
    };
    (0..count)
        .map(|index| {
            // A slide meant to hold a lesion tries other windows where one does not fit.
            let mut tries = 0;
            loop {
                tries += 1;
                let mut image = host_window(&bases, rng);
                let (lesion_image, lesion_area) = pick(&lesion_parts, rng);
                let lesion_mask = (index % 2 == 1)
                    .then(|| {
                        plant_lesion(&mut image, (lesion_image, lesion_area), split, radii, rng)
                    })
                    .flatten();
                if index % 2 == 0 || lesion_mask.is_some() || tries >= 20 {
                    break SyntheticSlide { image, lesion_mask };
                }
            }
        })
        .collect()
}

/// `count` benign windows of `split`'s hosts, drawn one at a time as [`synthetic_slides`]
/// draws its slides but with no lesion anywhere: for measures that need clean tissue alone,
/// and much of it (none without a host part for `split`).
pub fn benign_windows<'a>(
    sources: &TissueSources,
    split: Split,
    count: usize,
    rng: &'a mut StdRng,
) -> impl Iterator<Item = RgbImage> + 'a {
    let bases = sources.host_parts(split);
    let count = if bases.is_empty() { 0 } else { count };
    (0..count).map(move |_| host_window(&bases, rng))
}

/// A random window of 70% x 70% of one of `bases`, turned and flipped at random.
fn host_window(bases: &[RgbImage], rng: &mut StdRng) -> RgbImage {
    let base = pick_host(bases, rng);
    let (w, h) = (base.width() * 7 / 10, base.height() * 7 / 10);
    let (x, y) = (
        rng.gen_range(0..=base.width() - w),
        rng.gen_range(0..=base.height() - h),
    );
    augment(image::imageops::crop_imm(base, x, y, w, h).to_image(), rng)
}

/// Pastes an irregular blob of lesion tissue onto tissue of `image`, its radius within `radii`
/// (pixels) as the lesion tissue and the image allow; returns its mask.
fn plant_lesion(
    image: &mut RgbImage,
    (lesion, area): (&Lesion, Area),
    split: Split,
    (min_r, max_r): (f32, f32),
    rng: &mut StdRng,
) -> Option<GrayImage> {
    let (w, h) = image.dimensions();
    let fits = w.min(h) as f32 / 2.0 - 3.0;
    if fits < min_r {
        return None;
    }
    let largest = (area.2.min(area.3) as f32 / 2.6)
        .clamp(min_r, max_r)
        .min(fits);
    let radius: f32 = rng.gen_range(min_r..=largest);
    let size = (radius * 2.6) as u32;
    // Lesion tissue narrower than the patch gives a smaller one, of which the blob shows more.
    let side = size.min(area.2).min(area.3);
    let core = match side < size {
        true => (BLOB_CORE * size as f32 / side.max(1) as f32).min(1.0),
        false => BLOB_CORE,
    };
    let patch = crop_lesion((lesion, area), split, (side, core), rng, 0.6)?;
    let patch = augment(patch, rng);
    // The centre on tissue, far enough inside the image.
    let margin = radius as u32 + 2;
    if w <= 2 * margin || h <= 2 * margin {
        return None;
    }
    let centre = (0..500).find_map(|_| {
        let (cx, cy) = (
            rng.gen_range(margin..w - margin),
            rng.gen_range(margin..h - margin),
        );
        is_tissue(image.get_pixel(cx, cy)).then_some((cx as f32, cy as f32))
    })?;
    let (stretch, turn): (f32, f32) = (
        rng.gen_range(0.7..1.0),
        rng.gen_range(0.0..std::f32::consts::TAU),
    );
    let wobble: [(f32, f32); 3] = [0, 1, 2].map(|_| {
        (
            rng.gen_range(0.05..0.15),
            rng.gen_range(0.0..std::f32::consts::TAU),
        )
    });
    let mut mask = GrayImage::new(w, h);
    let (pw, ph) = patch.dimensions();
    for (x, y, pixel) in image.enumerate_pixels_mut() {
        let (dx, dy) = (x as f32 - centre.0, y as f32 - centre.1);
        let (rx, ry) = (
            dx * turn.cos() + dy * turn.sin(),
            (-dx * turn.sin() + dy * turn.cos()) / stretch,
        );
        let theta = ry.atan2(rx);
        let edge = radius
            * (1.0
                + wobble
                    .iter()
                    .enumerate()
                    .map(|(k, (a, phase))| a * ((k as f32 + 2.0) * theta + phase).sin())
                    .sum::<f32>());
        if (rx * rx + ry * ry).sqrt() <= edge {
            let (px, py) = (
                ((dx + pw as f32 / 2.0) as u32).min(pw - 1),
                ((dy + ph as f32 / 2.0) as u32).min(ph - 1),
            );
            *pixel = *patch.get_pixel(px, py);
            mask.put_pixel(x, y, Luma([255]));
        }
    }
    Some(mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::tumour::MIN_TUMOUR_SHARE;
    use rand::SeedableRng;

    #[test]
    fn validation_and_test_lesions_are_cut_from_tumour_and_training_ones_from_any_tissue() {
        // Two tissues told apart by colour; the tumour is the left half only.
        let (tumour, other) = (Rgb([150, 70, 160]), Rgb([170, 90, 150]));
        let image = RgbImage::from_fn(200, 60, |x, _| if x < 100 { tumour } else { other });
        let mask = GrayImage::from_fn(200, 60, |x, _| Luma([u8::from(x < 100) * 255]));
        let lesion = Lesion::new(unnamed("two tissues", image), &mask).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let share = |tile: &RgbImage| {
            tile.pixels().filter(|p| **p == tumour).count() as f64 / f64::from(20 * 20)
        };
        // The test column (x >= 75) is mostly the other tissue: every crop of it is still
        // at least three quarters tumour.
        let column = lesion.column(Split::Test);
        for _ in 0..50 {
            let tile =
                crop_lesion((&lesion, column), Split::Test, (20, 1.0), &mut rng, 0.5).unwrap();
            assert!(share(&tile) >= MIN_TUMOUR_SHARE, "{}", share(&tile));
        }
        // Training crops of a column reaching beyond the tumour may be the other tissue.
        let wide = (0, 0, 200, 60);
        let any = (0..50)
            .filter_map(|_| crop_lesion((&lesion, wide), Split::Train, (20, 1.0), &mut rng, 0.5))
            .any(|tile| share(&tile) < 0.5);
        assert!(any);
    }

    #[test]
    fn a_planted_blob_is_cut_where_its_own_middle_is_tumour() {
        // Tumour in the middle 46 px of 60, the other tissue round it: 59% of the whole patch,
        // all of the middle a blob shows, and less of any square off the middle.
        let (tumour, other) = (Rgb([150, 70, 160]), Rgb([170, 90, 150]));
        let inside = |x: u32, y: u32| (7..53).contains(&x) && (7..53).contains(&y);
        let image = RgbImage::from_fn(60, 60, |x, y| if inside(x, y) { tumour } else { other });
        let mask = GrayImage::from_fn(60, 60, |x, y| Luma([u8::from(inside(x, y)) * 255]));
        let lesion = Lesion::new(unnamed("a nest", image), &mask).unwrap();
        let whole = (0, 0, 60, 60);
        let mut rng = StdRng::seed_from_u64(3);
        let mut crop =
            |split, core| crop_lesion((&lesion, whole), split, (60, core), &mut rng, 0.5);
        assert!(
            crop(Split::Test, 1.0).is_none(),
            "the whole patch is not 75% tumour"
        );
        assert!(crop(Split::Test, BLOB_CORE).is_some(), "its middle is");
        assert!(crop(Split::Validation, BLOB_CORE).is_some());
        // The middle and nothing else: a 46 px square at the patch's corner is 72% tumour.
        assert!(lesion.tumour_share((0, 0, 46, 46)) < MIN_TUMOUR_SHARE);
    }
}
