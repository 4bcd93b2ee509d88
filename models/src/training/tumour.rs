//! Where each lesion image's tumour is, so that a planted "lesion" is tumour.
//!
//! The lesion images are tumour *with its surroundings*: histolytics' carcinoma nest is a nest
//! in a sea of lymphocytes and fibrous stroma, and tiatoolbox's tumour image has a band of
//! stroma and lymphocytes down its right side. Cut by columns alone, the nest's test column
//! held almost no tumour, so held-out "lesions" were mostly stroma and lymphocytes, labelled
//! lesion — and the training lesions held lymphocyte sheets. A mask says where tumour is, from
//! the best source each image has:
//! - `hgsc_nest.jpg`: the package's own nuclei type mask (histolytics annotated every nucleus
//!   as neoplastic, inflammatory or connective): tumour where neoplastic nuclei cover at least
//!   a tenth of the 30 um window around a pixel and at least twice the other nuclei's area;
//! - `target_image.png`: outlined by eye by the developers (not pathologists): all of it except
//!   the stroma band and the lymphocytes right of it;
//! - `histo.jpg` (stardist): taken for tumour throughout (by eye), as are images given by a
//!   caller.
//!
//! Each image is then split into columns by its *tumour*, not its width: the left half of its
//! tumour pixels trains, the next quarter validates, the last quarter tests. A validation or
//! test lesion is cut from a square (a tile, or the patch a planted lesion's blob is cut out
//! of) that lies on tumour for at least [`MIN_TUMOUR_SHARE`] of its pixels; a training one may
//! be any tissue of its column ([`min_tumour_share`]). The blob inside a patch is not checked
//! on its own: its share of tumour may be lower than the patch's.

use std::path::Path;

use image::{GrayImage, Luma};

use super::dataset::{Area, Split};
use super::sources::Source;
use crate::ModelError;

/// The share of a validation or test lesion's square (a tile, or a planted lesion's patch) that
/// must be tumour.
pub const MIN_TUMOUR_SHARE: f64 = 0.75;

/// The share of a lesion crop of `split` that must be tumour. Training lesions may be any
/// tissue of the training column: the proxy's lesion is tissue at twice its size (enlarged
/// cells), and its lymphocytes and stroma teach the model that where its tumour alone teaches
/// it epithelium (one run, README: held-out specificity 0.50 with tumour-only training tiles).
/// What the model is validated and measured on is tumour.
pub fn min_tumour_share(split: Split) -> f64 {
    match split {
        Split::Train => 0.0,
        Split::Validation | Split::Test => MIN_TUMOUR_SHARE,
    }
}

/// Where the tumour's pixels split: the first half trains, the next quarter validates.
const SPLIT_AT: (f64, f64) = (0.5, 0.75);

/// A lesion image and where its tumour is.
#[derive(Clone)]
pub struct Lesion {
    pub source: Source,
    /// Summed-area table of the tumour mask, `(width + 1) x (height + 1)`.
    sums: Vec<u32>,
    /// The columns' boundaries: validation from `.0`, test from `.1`.
    bounds: (u32, u32),
}

impl Lesion {
    /// `source` with its tumour where `tumour` is non-zero (the same size as the image).
    pub fn new(source: Source, tumour: &GrayImage) -> Result<Self, ModelError> {
        let (w, h) = source.image.dimensions();
        if tumour.dimensions() != (w, h) {
            return Err(ModelError::Load {
                path: source.provenance.name.clone(),
                reason: format!(
                    "a tumour mask of {:?} for an image of {:?}",
                    tumour.dimensions(),
                    (w, h)
                ),
            });
        }
        let stride = w as usize + 1;
        let mut sums = vec![0u32; stride * (h as usize + 1)];
        let mut per_column = vec![0u64; w as usize];
        for y in 0..h as usize {
            let mut row = 0u32;
            for x in 0..w as usize {
                let inside = tumour.get_pixel(x as u32, y as u32).0[0] > 0;
                row += u32::from(inside);
                per_column[x] += u64::from(inside);
                sums[(y + 1) * stride + x + 1] = sums[y * stride + x + 1] + row;
            }
        }
        let total: u64 = per_column.iter().sum();
        if total == 0 {
            return Err(ModelError::Load {
                path: source.provenance.name.clone(),
                reason: "its tumour mask marks no tumour".into(),
            });
        }
        let column_at = |share: f64| {
            let wanted = (total as f64 * share).ceil() as u64;
            let mut seen = 0;
            per_column
                .iter()
                .position(|&count| {
                    seen += count;
                    seen >= wanted
                })
                .map_or(w, |x| x as u32 + 1)
        };
        let bounds = (column_at(SPLIT_AT.0), column_at(SPLIT_AT.1));
        Ok(Self {
            source,
            sums,
            bounds,
        })
    }

    /// `source` taken for tumour throughout, cut by width into 60/20/20 columns as every lesion
    /// image was before the masks: the quick model's lesions (the demo's and the federated
    /// sites'), whose CI checks rest on that data.
    pub fn whole(source: Source) -> Self {
        let (w, h) = source.image.dimensions();
        let all = GrayImage::from_pixel(w, h, Luma([255]));
        // Columns by width, 60/20/20, as before the masks (the quick model's data unchanged).
        let bounds = (w * 3 / 5, w * 4 / 5);
        match Self::new(source.clone(), &all) {
            Ok(lesion) => Self { bounds, ..lesion },
            Err(_) => Self {
                source,
                sums: vec![0; (w as usize + 1) * (h as usize + 1)],
                bounds,
            },
        }
    }

    /// The lesion image at the proxy's scale.
    pub fn image(&self) -> &image::RgbImage {
        &self.source.image
    }

    /// The image's column for `split`.
    pub fn column(&self, split: Split) -> Area {
        let (w, h) = self.source.image.dimensions();
        let (validation, test) = self.bounds;
        match split {
            Split::Train => (0, 0, validation, h),
            Split::Validation => (validation, 0, test - validation, h),
            Split::Test => (test, 0, w - test, h),
        }
    }

    /// The share of `(x, y, w, h)` that is tumour.
    pub fn tumour_share(&self, (x, y, w, h): Area) -> f64 {
        if w == 0 || h == 0 {
            return 0.0;
        }
        let stride = self.source.image.width() as usize + 1;
        let at = |x: u32, y: u32| i64::from(self.sums[y as usize * stride + x as usize]);
        let inside = at(x + w, y + h) - at(x, y + h) - at(x + w, y) + at(x, y);
        inside as f64 / (f64::from(w) * f64::from(h))
    }
}

/// The nest's tumour from histolytics' nuclei type mask (`hgsc_nest_types.png`: 3 neoplastic,
/// 1 and 2 the other nuclei), at the mask's own scale.
pub fn tumour_from_nuclei(types: &GrayImage) -> GrayImage {
    const NEOPLASTIC: u8 = 3;
    // A window 61 px (about 30 um at the image's 0.5 um/px) across: a few tumour cells.
    const HALF_WINDOW_PX: i64 = 30;
    let (w, h) = types.dimensions();
    let table = |wanted: &dyn Fn(u8) -> bool| {
        let stride = w as usize + 1;
        let mut sums = vec![0u32; stride * (h as usize + 1)];
        for y in 0..h as usize {
            let mut row = 0;
            for x in 0..w as usize {
                row += u32::from(wanted(types.get_pixel(x as u32, y as u32).0[0]));
                sums[(y + 1) * stride + x + 1] = sums[y * stride + x + 1] + row;
            }
        }
        sums
    };
    let neoplastic = table(&|v| v == NEOPLASTIC);
    let others = table(&|v| v != 0 && v != NEOPLASTIC);
    let stride = w as usize + 1;
    GrayImage::from_fn(w, h, |x, y| {
        let (x0, y0) = (
            (x as i64 - HALF_WINDOW_PX).max(0),
            (y as i64 - HALF_WINDOW_PX).max(0),
        );
        let (x1, y1) = (
            (x as i64 + HALF_WINDOW_PX + 1).min(i64::from(w)),
            (y as i64 + HALF_WINDOW_PX + 1).min(i64::from(h)),
        );
        let count = |sums: &[u32]| {
            let at = |x: i64, y: i64| i64::from(sums[y as usize * stride + x as usize]);
            at(x1, y1) - at(x0, y1) - at(x1, y0) + at(x0, y0)
        };
        let area = (x1 - x0) * (y1 - y0);
        let (tumour, other) = (count(&neoplastic), count(&others));
        Luma([u8::from(tumour * 10 >= area && tumour >= 2 * other) * 255])
    })
}

/// The width `target_image.png` ships at, which [`TARGET_IMAGE_TUMOUR`] is drawn at.
const TARGET_IMAGE_WIDTH_PX: f64 = 1000.0;

/// `target_image.png`'s tumour, outlined by eye at the image's own 1000 x 1000 px: everything
/// left of the stroma band running down from about x = 700 (less a notch of lymphocytes beside
/// it), and the tumour at the top right above the lymphocytes.
const TARGET_IMAGE_TUMOUR: [&[(f64, f64)]; 2] = [
    &[
        (0.0, 0.0),
        (690.0, 0.0),
        (705.0, 250.0),
        (620.0, 300.0),
        (610.0, 460.0),
        (720.0, 470.0),
        (745.0, 700.0),
        (770.0, 1000.0),
        (0.0, 1000.0),
    ],
    &[
        (790.0, 0.0),
        (1000.0, 0.0),
        (1000.0, 170.0),
        (880.0, 250.0),
        (790.0, 250.0),
    ],
];

/// A mask of `(w, h)` px, set inside `polygons` (drawn at `drawn_at` px wide), even-odd rule.
fn polygons_mask((w, h): (u32, u32), polygons: &[&[(f64, f64)]], drawn_at: f64) -> GrayImage {
    let scale = drawn_at / f64::from(w);
    GrayImage::from_fn(w, h, |x, y| {
        let (px, py) = ((f64::from(x) + 0.5) * scale, (f64::from(y) + 0.5) * scale);
        let inside = polygons.iter().any(|polygon| {
            let mut inside = false;
            for (i, &(xi, yi)) in polygon.iter().enumerate() {
                let (xj, yj) = polygon[(i + polygon.len() - 1) % polygon.len()];
                if (yi > py) != (yj > py) && px < (xj - xi) * (py - yi) / (yj - yi) + xi {
                    inside = !inside;
                }
            }
            inside
        });
        Luma([u8::from(inside) * 255])
    })
}

/// What says where `name`'s tumour is, for the report's provenance.
pub fn tumour_described(name: &str) -> &'static str {
    match name {
        "hgsc_nest.jpg" => {
            "histolytics' nuclei type mask (hgsc_nest_type_mask.npz): neoplastic nuclei over a \
             tenth of the 30 um around and twice the other nuclei"
        }
        "target_image.png" => {
            "outlined by eye (not by a pathologist): the stroma band and the lymphocytes right \
             of it left out"
        }
        _ => "the whole image",
    }
}

/// `source` (one of the fixtures' lesion images, already at the proxy's scale) with its tumour.
pub fn lesion(dir: &Path, source: Source) -> Result<Lesion, ModelError> {
    let size = source.image.dimensions();
    let tumour = match source.provenance.name.as_str() {
        "hgsc_nest.jpg" => {
            let path = dir.join("tissue").join("hgsc_nest_types.png");
            let types = image::open(&path)
                .map_err(|e| ModelError::Load {
                    path: path.display().to_string(),
                    reason: format!("{e} (run scripts/fetch-fixtures)"),
                })?
                .to_luma8();
            // Same shape as the image (both ship 1500 x 1500; the image may be rescaled).
            let (tw, th) = types.dimensions();
            if u64::from(tw) * u64::from(size.1) != u64::from(th) * u64::from(size.0) {
                return Err(ModelError::Load {
                    path: path.display().to_string(),
                    reason: format!("nuclei types of {tw} x {th} for an image of {size:?}"),
                });
            }
            let mask = tumour_from_nuclei(&types);
            image::imageops::resize(&mask, size.0, size.1, image::imageops::FilterType::Nearest)
        }
        "target_image.png" => polygons_mask(size, &TARGET_IMAGE_TUMOUR, TARGET_IMAGE_WIDTH_PX),
        _ => return Ok(Lesion::whole(source)),
    };
    Lesion::new(source, &tumour)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::sources::Provenance;

    fn source(w: u32, h: u32) -> Source {
        Source {
            provenance: Provenance {
                name: "test".into(),
                origin: "test".into(),
                microns_per_pixel: 1.0,
                scale_from: "test".into(),
                tumour_from: None,
            },
            image: image::RgbImage::new(w, h),
        }
    }

    #[test]
    fn columns_split_the_tumour_not_the_width() {
        // Tumour only in x 100..200 of a 400 px image: half of it trains (up to 150), a quarter
        // validates, a quarter tests, and the test column runs to the image's edge.
        let mask = GrayImage::from_fn(400, 50, |x, _| {
            Luma([u8::from((100..200).contains(&x)) * 255])
        });
        let lesion = Lesion::new(source(400, 50), &mask).unwrap();
        assert_eq!(lesion.column(Split::Train), (0, 0, 150, 50));
        assert_eq!(lesion.column(Split::Validation), (150, 0, 25, 50));
        assert_eq!(lesion.column(Split::Test), (175, 0, 225, 50));
        assert_eq!(lesion.tumour_share((100, 0, 100, 50)), 1.0);
        assert_eq!(lesion.tumour_share((0, 0, 200, 50)), 0.5);
        assert_eq!(lesion.tumour_share((300, 10, 20, 20)), 0.0);
    }

    #[test]
    fn a_mask_of_no_tumour_or_the_wrong_size_is_refused() {
        assert!(Lesion::new(source(10, 10), &GrayImage::new(10, 10)).is_err());
        let all = GrayImage::from_pixel(10, 9, Luma([255]));
        assert!(Lesion::new(source(10, 10), &all).is_err());
    }

    #[test]
    fn tumour_is_where_neoplastic_nuclei_outnumber_the_others() {
        // Left: neoplastic nuclei (every fourth pixel); right: as many inflammatory ones.
        let types = GrayImage::from_fn(300, 100, |x, y| {
            let nucleus = (x + y) % 4 == 0;
            Luma([match (nucleus, x < 150) {
                (false, _) => 0,
                (true, true) => 3,
                (true, false) => 2,
            }])
        });
        let tumour = tumour_from_nuclei(&types);
        assert_eq!(tumour.get_pixel(40, 50).0[0], 255);
        assert_eq!(tumour.get_pixel(260, 50).0[0], 0);
    }

    #[test]
    fn the_outline_is_filled_inside_and_scaled() {
        let square: &[(f64, f64)] = &[(10.0, 10.0), (30.0, 10.0), (30.0, 30.0), (10.0, 30.0)];
        let mask = polygons_mask((20, 20), &[square], 40.0);
        assert_eq!(mask.get_pixel(10, 10).0[0], 255);
        assert_eq!(mask.get_pixel(2, 2).0[0], 0);
        assert_eq!(mask.get_pixel(17, 10).0[0], 0);
    }
}
