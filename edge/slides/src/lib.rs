//! Whole-slide images at the edge: open them, describe them, render their tiles.
//!
//! This is the only crate that reads slide files: OpenSlide (Debian's 3.4: SVS, NDPI, MRXS, SCN,
//! BIF, generic tiled TIFF...) and, since that OpenSlide cannot, DICOM WSI with dicom-rs. A
//! [`Slide`] is opened once — the Deep Zoom geometry computed then — and renders any tile many
//! times, from any thread. Tiles are encoded
//! here to JPEG or PNG, or — where a request lines up with a stored JPEG tile — are that tile's
//! bytes: the browser only ever receives single tiles, never the file.
//!
//! The Deep Zoom layout is the slide's stored tile grid where it has one (so tiles pass through),
//! otherwise openslide-python's (254-pixel tiles, 1-pixel overlap), the peer that
//! `grassroots bench tiles` compares against.

mod deepzoom;
mod dicom;
pub mod iiif;
mod native;
mod openslide_source;

use std::path::{Path, PathBuf};

use openslide_rs::OpenSlide;
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
    #[error("the {name} image declares {width} x {height} pixels, more than the {limit} this edge decodes")]
    ImageTooLarge {
        name: String,
        width: u64,
        height: u64,
        limit: u64,
    },
    #[error("reading pixels: {0}")]
    Read(String),
    #[error("encoding a tile: {0}")]
    Encode(String),
}

/// One level of the slide's own pyramid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SlideLevel {
    pub width: u32,
    pub height: u32,
    pub downsample: f64,
}

/// What the edge shows about a slide.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct NativeTileGrid {
    pub width: u32,
    pub height: u32,
    pub scale_factors: Vec<u32>,
}

/// An open slide.
pub struct Slide {
    path: PathBuf,
    source: Source,
    info: SlideInfo,
}

/// What reads the pixels.
enum Source {
    OpenSlide(openslide_source::OpenSlideSource),
    Dicom {
        wsi: dicom::DicomWsi,
        geometry: grassroots_deepzoom::Descriptor,
    },
}

/// Most pixels one region rendering may read from the slide (about 200 MB of RGB).
const MAX_REGION_READ_PIXELS: u64 = 64 * 1024 * 1024;

/// Most pixels of an associated image (label, macro, thumbnail) decoded whole. Its size comes
/// from the file's header, so it is checked before anything is allocated: a crafted label of
/// 10^6 x 10^6 pixels would otherwise abort the process at every import attempt.
pub const MAX_ASSOCIATED_PIXELS: u64 = MAX_REGION_READ_PIXELS;

/// The whole-number scale factor a level stands for. Pyramids halve odd sizes by rounding, so
/// OpenSlide reports downsamples like 2.0003; within 1% of a whole number they count as it.
pub(crate) fn scale_factor(downsample: f64) -> Option<u32> {
    let rounded = downsample.round();
    (rounded >= 1.0 && (downsample - rounded).abs() <= rounded * 0.01).then_some(rounded as u32)
}

/// The (col, row) of the stored tile of size `tile`, in a level `factor` times coarser than full
/// resolution, that a request for `region` at `out` pixels is exactly — if it is one.
pub(crate) fn aligned_tile(
    (x, y, w, h): (u32, u32, u32, u32),
    out: (u32, u32),
    tile: (u32, u32),
    factor: u32,
) -> Option<(u32, u32)> {
    if out != tile {
        return None;
    }
    let (span_w, span_h) = (tile.0.checked_mul(factor)?, tile.1.checked_mul(factor)?);
    ((w, h) == (span_w, span_h) && x % span_w == 0 && y % span_h == 0)
        .then_some((x / span_w, y / span_h))
}

/// Refuses a read of more than [`MAX_REGION_READ_PIXELS`]: a slide without a coarse enough level
/// would make it enormous.
pub(crate) fn check_read_size(width: u32, height: u32) -> Result<(), SlideError> {
    if u64::from(width) * u64::from(height) > MAX_REGION_READ_PIXELS {
        return Err(SlideError::RegionTooLarge { width, height });
    }
    Ok(())
}

/// `image` at `out` pixels, resampled only when it has another size.
pub(crate) fn fit(image: image::RgbImage, out: (u32, u32)) -> image::RgbImage {
    if image.dimensions() == out {
        image
    } else {
        image::imageops::resize(&image, out.0, out.1, image::imageops::FilterType::Triangle)
    }
}

fn unreadable(path: &Path, error: impl std::fmt::Display) -> SlideError {
    SlideError::Unreadable {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

/// The regular, visible files directly in `dir`, sorted.
fn files_in(dir: &Path) -> Result<Vec<PathBuf>, SlideError> {
    let mut files = std::fs::read_dir(dir)
        .map_err(|e| unreadable(dir, e))?
        .filter_map(Result::ok)
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| entry.path())
        .collect::<Vec<_>>();
    files.sort();
    Ok(files)
}

impl Slide {
    /// Opens a slide and reads its metadata. `path` is a slide file, or a directory holding a
    /// multi-file slide: a DICOM WSI series, or the index file of a format OpenSlide reads with
    /// its data files beside it (MRXS, VMS). A file no reader recognises, or cannot read, is an
    /// error naming the file and the reason.
    pub fn open(path: &Path) -> Result<Self, SlideError> {
        if path.is_dir() {
            let files = files_in(path)?;
            let (dicom, others): (Vec<&PathBuf>, Vec<&PathBuf>) =
                files.iter().partition(|f| dicom::is_dicom_file(f));
            if others.is_empty() && !dicom.is_empty() {
                return Self::open_dicom(path, &files);
            }
            let index = others
                .into_iter()
                .find(|f| OpenSlide::detect_vendor(f).is_ok_and(|vendor| !vendor.is_empty()));
            return match index {
                Some(index) => Self::open_openslide(index),
                None => Err(SlideError::UnsupportedFormat {
                    path: path.to_path_buf(),
                }),
            };
        }
        if dicom::is_dicom_file(path) {
            return Self::open_dicom(path, &[path.to_path_buf()]);
        }
        Self::open_openslide(path)
    }

    fn open_dicom(path: &Path, files: &[PathBuf]) -> Result<Self, SlideError> {
        let wsi = dicom::DicomWsi::open(files)
            .map_err(|(file, reason)| SlideError::Unreadable { path: file, reason })?;
        let base = wsi
            .levels
            .first()
            .ok_or_else(|| unreadable(path, "no levels"))?;
        let (width, height) = (base.width, base.height);
        let levels = wsi
            .levels
            .iter()
            .map(|level| SlideLevel {
                width: level.width,
                height: level.height,
                downsample: (f64::from(width) / f64::from(level.width)
                    + f64::from(height) / f64::from(level.height))
                    / 2.0,
            })
            .collect::<Vec<_>>();
        // The frame grid where every level shares it and there is a pyramid, so that tiles pass
        // through; openslide-python's 254 + 1 otherwise.
        let shared_tile = base.tile_width == base.tile_height
            && wsi
                .levels
                .iter()
                .all(|l| (l.tile_width, l.tile_height) == (base.tile_width, base.tile_height));
        let (tile_size, overlap) = if shared_tile && levels.len() > 1 {
            (base.tile_width, 0)
        } else {
            (DEFAULT_TILE_SIZE, DEFAULT_OVERLAP)
        };
        let native_tiles = (shared_tile && wsi.passes_through()).then(|| NativeTileGrid {
            width: base.tile_width,
            height: base.tile_height,
            scale_factors: levels
                .iter()
                .filter_map(|l| scale_factor(l.downsample))
                .collect(),
        });
        let geometry = grassroots_deepzoom::Descriptor::new(
            width,
            height,
            tile_size,
            overlap,
            grassroots_deepzoom::Format::Jpeg,
        )
        .map_err(|e| unreadable(path, e))?;
        let info = SlideInfo {
            vendor: "dicom".into(),
            width,
            height,
            levels,
            microns_per_pixel_x: wsi.microns_per_pixel.map(|(x, _)| x),
            microns_per_pixel_y: wsi.microns_per_pixel.map(|(_, y)| y),
            objective_power: wsi.objective_power,
            associated_images: wsi.associated.iter().map(|(n, _)| n.clone()).collect(),
            deep_zoom_levels: geometry.levels(),
            tile_size,
            overlap,
            native_tiles,
        };
        let slide = Self {
            path: path.to_path_buf(),
            source: Source::Dicom { wsi, geometry },
            info,
        };
        slide.check_readable()?;
        Ok(slide)
    }

    fn open_openslide(path: &Path) -> Result<Self, SlideError> {
        let (source, info) = openslide_source::OpenSlideSource::open(path)?;
        let slide = Self {
            path: path.to_path_buf(),
            source: Source::OpenSlide(source),
            info,
        };
        slide.check_readable()?;
        Ok(slide)
    }

    /// A truncated file often opens (the header is intact) and fails on the first read: read
    /// a small level once so that such a file fails at import, not in a viewer.
    fn check_readable(&self) -> Result<(), SlideError> {
        let top = self.info.deep_zoom_levels.saturating_sub(1);
        let smallest = self.info.deep_zoom_levels.min(9).saturating_sub(1).min(top);
        self.tile(smallest, 0, 0, TileFormat::Jpeg, 75)?;
        Ok(())
    }

    pub fn info(&self) -> &SlideInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The Deep Zoom descriptor (`.dzi`) for tiles in `format`.
    pub fn dzi(&self, format: TileFormat) -> String {
        // Every slide's geometry was checked against the same bounds when it opened.
        grassroots_deepzoom::Descriptor::new(
            self.info.width,
            self.info.height,
            self.info.tile_size,
            self.info.overlap,
            format.deep_zoom(),
        )
        .map(|descriptor| descriptor.to_xml())
        .unwrap_or_default()
    }

    /// Pixel size of a Deep Zoom level.
    pub fn level_size(&self, level: u32) -> Result<(u32, u32), SlideError> {
        match &self.source {
            Source::OpenSlide(source) => source.level_size(level),
            Source::Dicom { geometry, .. } => Ok(geometry.level_size(level)?),
        }
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
        match &self.source {
            Source::OpenSlide(source) => source.tile(&self.info, level, col, row, format, quality),
            Source::Dicom { wsi, geometry } => {
                wsi.deep_zoom_tile(geometry, (level, col, row), format, quality)
            }
        }
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
        match &self.source {
            Source::OpenSlide(source) => source.region(&self.info, region, out, format, quality),
            Source::Dicom { wsi, .. } => wsi.region(region, out, format, quality),
        }
    }

    /// The pixels of a region of the full-resolution image (`x, y, w, h`) at `out_w` x `out_h`,
    /// for analysis (screening reads slides this way).
    pub fn region_rgb(
        &self,
        region: (u32, u32, u32, u32),
        out: (u32, u32),
    ) -> Result<image::RgbImage, SlideError> {
        match &self.source {
            Source::OpenSlide(source) => source.region_rgb(&self.info, region, out),
            Source::Dicom { wsi, .. } => wsi.render(region, out),
        }
    }

    /// An associated image (label, macro, thumbnail) as JPEG.
    pub fn associated_image(&self, name: &str) -> Result<Vec<u8>, SlideError> {
        if !self.info.associated_images.iter().any(|n| n == name) {
            return Err(SlideError::NoAssociatedImage(name.to_string()));
        }
        let (width, height) = match &self.source {
            Source::OpenSlide(source) => source.associated_image_size(name)?,
            Source::Dicom { wsi, .. } => wsi
                .associated_image_size(name)
                .ok_or_else(|| SlideError::NoAssociatedImage(name.to_string()))?,
        };
        if width.saturating_mul(height) > MAX_ASSOCIATED_PIXELS {
            return Err(SlideError::ImageTooLarge {
                name: name.to_string(),
                width,
                height,
                limit: MAX_ASSOCIATED_PIXELS,
            });
        }
        let image = match &self.source {
            Source::OpenSlide(source) => source.associated_image(name)?,
            Source::Dicom { wsi, .. } => wsi
                .associated_image(name)
                .ok_or_else(|| SlideError::NoAssociatedImage(name.to_string()))?
                .map_err(SlideError::Read)?,
        };
        deepzoom::encode(&image, TileFormat::Jpeg, 85)
    }
}
