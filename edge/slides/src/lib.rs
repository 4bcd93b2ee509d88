//! Whole-slide images at the edge: open them, describe them, render their tiles.
//!
//! This is the only crate that links OpenSlide (Debian's 3.4: SVS, NDPI, SCN, BIF, generic
//! tiled TIFF...). A [`Slide`] is opened once — the Deep Zoom geometry computed then — and
//! renders any tile many times, from any thread (OpenSlide is thread-safe). Tiles are encoded
//! here to JPEG or PNG, or — where a request lines up with a stored JPEG tile — are that tile's
//! bytes: the browser only ever receives single tiles, never the file.
//!
//! The Deep Zoom layout is the slide's stored tile grid where it has one (so tiles pass through),
//! otherwise openslide-python's (254-pixel tiles, 1-pixel overlap), the peer that
//! `grassroots bench tiles` compares against.

mod deepzoom;
pub mod iiif;
mod native;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openslide_rs::deepzoom::{DeepZoomGenerator, DeepZoomOptions};
use openslide_rs::{Address, OpenSlide};
use serde::{Deserialize, Serialize};

pub use deepzoom::{parse_tile_name, TileFormat, DEFAULT_OVERLAP, DEFAULT_TILE_SIZE};

#[derive(Debug, thiserror::Error)]
pub enum SlideError {
    #[error("{path}: not a slide format this edge reads (OpenSlide does not recognise it)")]
    UnsupportedFormat { path: PathBuf },
    #[error("{path}: cannot be read as a slide: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "no tile {col}_{row} at Deep Zoom level {level} (the level has {cols} x {rows} tiles)"
    )]
    TileOutOfRange {
        level: u32,
        col: u32,
        row: u32,
        cols: u32,
        rows: u32,
    },
    #[error("no Deep Zoom level {level} (the slide has {levels})")]
    LevelOutOfRange { level: u32, levels: u32 },
    #[error("rendering this region would read {width} x {height} pixels; ask for a smaller region or size")]
    RegionTooLarge { width: u32, height: u32 },
    #[error("no associated image {0:?}")]
    NoAssociatedImage(String),
    #[error("reading pixels: {0}")]
    Read(String),
    #[error("encoding a tile: {0}")]
    Encode(String),
}

/// One level of the slide's own pyramid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SlideLevel {
    pub width: u32,
    pub height: u32,
    pub downsample: f64,
}

/// What the edge shows about a slide.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SlideInfo {
    pub vendor: String,
    pub width: u32,
    pub height: u32,
    pub levels: Vec<SlideLevel>,
    pub microns_per_pixel_x: Option<f64>,
    pub microns_per_pixel_y: Option<f64>,
    pub objective_power: Option<u32>,
    /// Label, macro, thumbnail... as the file names them.
    pub associated_images: Vec<String>,
    pub deep_zoom_levels: u32,
    pub tile_size: u32,
    pub overlap: u32,
    /// The file's own JPEG tile grid, when requests aligned with it can be served as stored.
    #[serde(default)]
    pub native_tiles: Option<NativeTileGrid>,
}

/// A slide's stored tile grid: tile size and the scale factors (level downsamples) that have it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NativeTileGrid {
    pub width: u32,
    pub height: u32,
    pub scale_factors: Vec<u32>,
}

/// An open slide.
pub struct Slide {
    native: Option<native::NativeTiles>,
    path: PathBuf,
    slide: Arc<OpenSlide>,
    deep_zoom: DeepZoomGenerator<Arc<OpenSlide>>,
    info: SlideInfo,
}

/// Most pixels one region rendering may read from the slide (about 200 MB of RGB).
const MAX_REGION_READ_PIXELS: u64 = 64 * 1024 * 1024;

/// The whole-number scale factor a level stands for. Pyramids halve odd sizes by rounding, so
/// OpenSlide reports downsamples like 2.0003; within 1% of a whole number they count as it.
fn scale_factor(downsample: f64) -> Option<u32> {
    let rounded = downsample.round();
    (rounded >= 1.0 && (downsample - rounded).abs() <= rounded * 0.01).then_some(rounded as u32)
}

fn unreadable(path: &Path, error: impl std::fmt::Display) -> SlideError {
    SlideError::Unreadable {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

impl Slide {
    /// Opens a slide and reads its metadata; a file OpenSlide does not recognise, or cannot
    /// read, is an error naming the file and the reason.
    pub fn open(path: &Path) -> Result<Self, SlideError> {
        let vendor = match OpenSlide::detect_vendor(path) {
            Ok(vendor) if !vendor.is_empty() => vendor,
            _ => {
                return Err(SlideError::UnsupportedFormat {
                    path: path.to_path_buf(),
                })
            }
        };
        let slide = Arc::new(OpenSlide::new(path).map_err(|e| unreadable(path, e))?);
        let properties = &slide.properties().openslide_properties;
        let levels = slide
            .all_level_dimensions()
            .iter()
            .zip(slide.all_level_downsamples())
            .map(|(size, downsample)| SlideLevel {
                width: size.w,
                height: size.h,
                downsample: *downsample,
            })
            .collect::<Vec<_>>();
        let first = levels
            .first()
            .cloned()
            .ok_or_else(|| unreadable(path, "no levels"))?;
        let native = native::NativeTiles::probe(path, &levels);
        let native_tiles = native.as_ref().and_then(|native| {
            let base = native.level(0)?;
            let base_size = (base.tile_width, base.tile_height);
            let scale_factors = levels
                .iter()
                .enumerate()
                .filter(|(index, level)| {
                    native
                        .level(*index)
                        .is_some_and(|l| (l.tile_width, l.tile_height) == base_size)
                        && scale_factor(level.downsample).is_some()
                })
                .filter_map(|(_, level)| scale_factor(level.downsample))
                .collect();
            Some(NativeTileGrid {
                width: base.tile_width,
                height: base.tile_height,
                scale_factors,
            })
        });
        // Deep Zoom on the stored grid where there is one (square tiles, no overlap), so that
        // tiles can be passed through as stored; openslide-python's 254 + 1 otherwise.
        let (tile_size, overlap) = match &native_tiles {
            Some(grid) if grid.width == grid.height && grid.scale_factors.len() > 1 => {
                (grid.width, 0)
            }
            _ => (DEFAULT_TILE_SIZE, DEFAULT_OVERLAP),
        };
        let deep_zoom = DeepZoomGenerator::new(
            slide.clone(),
            DeepZoomOptions::new(tile_size)
                .with_overlap(overlap)
                .with_limit_bounds(false),
        )
        .map_err(|e| unreadable(path, e))?;
        let info = SlideInfo {
            vendor,
            width: first.width,
            height: first.height,
            levels,
            microns_per_pixel_x: properties.mpp_x.map(f64::from),
            microns_per_pixel_y: properties.mpp_y.map(f64::from),
            objective_power: properties.objective_power,
            associated_images: slide.associated_image_names().unwrap_or_default(),
            deep_zoom_levels: deep_zoom.level_count(),
            tile_size,
            overlap,
            native_tiles,
        };
        let slide = Self {
            native,
            path: path.to_path_buf(),
            slide,
            deep_zoom,
            info,
        };
        // A truncated file often opens (the header is intact) and fails on the first read:
        // read the smallest level once so that such a file fails at import, not in a viewer.
        let top = slide.info.deep_zoom_levels.saturating_sub(1);
        let smallest = slide
            .info
            .deep_zoom_levels
            .min(9)
            .saturating_sub(1)
            .min(top);
        slide.tile(smallest, 0, 0, TileFormat::Jpeg, 75)?;
        Ok(slide)
    }

    pub fn info(&self) -> &SlideInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The Deep Zoom descriptor (`.dzi`) for tiles in `format`.
    pub fn dzi(&self, format: TileFormat) -> String {
        deepzoom::dzi_xml(
            self.info.width,
            self.info.height,
            self.info.tile_size,
            self.info.overlap,
            format,
        )
    }

    /// Pixel size of a Deep Zoom level.
    pub fn level_size(&self, level: u32) -> Result<(u32, u32), SlideError> {
        let dimensions = self.deep_zoom.level_dimensions();
        dimensions
            .get(level as usize)
            .map(|size| (size.w, size.h))
            .ok_or(SlideError::LevelOutOfRange {
                level,
                levels: dimensions.len() as u32,
            })
    }

    /// Renders one Deep Zoom tile.
    pub fn tile(
        &self,
        level: u32,
        col: u32,
        row: u32,
        format: TileFormat,
        quality: u8,
    ) -> Result<Vec<u8>, SlideError> {
        let tiles = self.deep_zoom.level_tiles();
        let Some(grid) = tiles.get(level as usize) else {
            return Err(SlideError::LevelOutOfRange {
                level,
                levels: tiles.len() as u32,
            });
        };
        if col >= grid.w || row >= grid.h {
            return Err(SlideError::TileOutOfRange {
                level,
                col,
                row,
                cols: grid.w,
                rows: grid.h,
            });
        }
        if let Some(stored) = self.native_deep_zoom_tile(level, col, row, format) {
            return stored.map_err(|e| SlideError::Read(e.to_string()));
        }
        let image = self
            .deep_zoom
            .tile_rgb(level, Address { x: col, y: row })
            .map_err(|e| SlideError::Read(e.to_string()))?;
        deepzoom::encode(&image, format, quality)
    }

    /// Renders a region of the full-resolution image (`x, y, w, h`) at `out_w` x `out_h`, reading
    /// from the pyramid level closest to that scale (never a coarser one).
    pub fn region(
        &self,
        region: (u32, u32, u32, u32),
        out: (u32, u32),
        format: TileFormat,
        quality: u8,
    ) -> Result<Vec<u8>, SlideError> {
        if let Some(stored) = self.native_tile(region, out, format) {
            return stored.map_err(|e| SlideError::Read(e.to_string()));
        }
        let (x, y, w, h) = region;
        let downsample = (f64::from(w) / f64::from(out.0)).min(f64::from(h) / f64::from(out.1));
        let level = self
            .slide
            .best_level_for_downsample(downsample.max(1.0))
            .map_err(|e| SlideError::Read(e.to_string()))?;
        let level_downsample = self
            .info
            .levels
            .get(level as usize)
            .map_or(1.0, |l| l.downsample);
        let read_w = ((f64::from(w) / level_downsample).ceil() as u32).max(1);
        let read_h = ((f64::from(h) / level_downsample).ceil() as u32).max(1);
        // A slide without a coarse enough level would make this read enormous.
        if u64::from(read_w) * u64::from(read_h) > MAX_REGION_READ_PIXELS {
            return Err(SlideError::RegionTooLarge {
                width: read_w,
                height: read_h,
            });
        }
        let image = self
            .slide
            .read_image_rgb(&openslide_rs::Region {
                address: Address { x, y },
                level,
                size: openslide_rs::Size {
                    w: read_w,
                    h: read_h,
                },
            })
            .map_err(|e| SlideError::Read(e.to_string()))?;
        let image = if image.dimensions() == out {
            image
        } else {
            image::imageops::resize(&image, out.0, out.1, image::imageops::FilterType::Triangle)
        };
        deepzoom::encode(&image, format, quality)
    }

    /// A Deep Zoom tile that is exactly a stored tile (no overlap, a level of the stored
    /// pyramid, not at the right or bottom edge, which the file pads).
    fn native_deep_zoom_tile(
        &self,
        level: u32,
        col: u32,
        row: u32,
        format: TileFormat,
    ) -> Option<std::io::Result<Vec<u8>>> {
        if self.info.overlap != 0 || self.native.is_none() {
            return None;
        }
        let shift = self
            .info
            .deep_zoom_levels
            .checked_sub(1)?
            .checked_sub(level)?;
        let downsample = 1u32.checked_shl(shift)?;
        let span = self.info.tile_size.checked_mul(downsample)?;
        let (x, y) = (col.checked_mul(span)?, row.checked_mul(span)?);
        if x.checked_add(span)? > self.info.width || y.checked_add(span)? > self.info.height {
            return None;
        }
        let size = self.info.tile_size;
        self.native_tile((x, y, span, span), (size, size), format)
    }

    /// The stored JPEG tile that a region request lines up with exactly, if any.
    fn native_tile(
        &self,
        region: (u32, u32, u32, u32),
        out: (u32, u32),
        format: TileFormat,
    ) -> Option<std::io::Result<Vec<u8>>> {
        let native = self.native.as_ref()?;
        if format != TileFormat::Jpeg {
            return None;
        }
        let (x, y, w, h) = region;
        self.info
            .levels
            .iter()
            .enumerate()
            .find_map(|(index, level)| {
                let grid = native.level(index)?;
                let factor = scale_factor(level.downsample)?;
                if out != (grid.tile_width, grid.tile_height) {
                    return None;
                }
                let (span_w, span_h) = (
                    grid.tile_width.checked_mul(factor)?,
                    grid.tile_height.checked_mul(factor)?,
                );
                let aligned = w == span_w && h == span_h && x % span_w == 0 && y % span_h == 0;
                aligned
                    .then(|| native.tile(index, x / span_w, y / span_h))
                    .flatten()
            })
    }

    /// An associated image (label, macro, thumbnail) as JPEG.
    pub fn associated_image(&self, name: &str) -> Result<Vec<u8>, SlideError> {
        if !self.info.associated_images.iter().any(|n| n == name) {
            return Err(SlideError::NoAssociatedImage(name.to_string()));
        }
        let image = self
            .slide
            .read_associated_image_rgb(name)
            .map_err(|e| SlideError::Read(e.to_string()))?;
        deepzoom::encode(&image, TileFormat::Jpeg, 85)
    }
}
