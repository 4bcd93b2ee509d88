//! Slides OpenSlide reads (SVS, NDPI, MRXS, SCN, BIF, generic tiled TIFF...). OpenSlide is
//! thread-safe, so one open slide renders for every request. Deep Zoom tiles come from
//! OpenSlide's own generator (openslide-python's layout), except where a request lines up with a
//! stored JPEG tile, which is passed through as stored ([`native`](crate::native)).

use std::path::Path;
use std::sync::Arc;

use openslide_rs::deepzoom::{DeepZoomGenerator, DeepZoomOptions};
use openslide_rs::{Address, OpenSlide};

use crate::deepzoom::{self, TileFormat, DEFAULT_OVERLAP, DEFAULT_TILE_SIZE};
use crate::{
    aligned_tile, check_read_size, fit, native, scale_factor, unreadable, NativeTileGrid,
    SlideError, SlideInfo, SlideLevel,
};

pub(crate) struct OpenSlideSource {
    native: Option<native::NativeTiles>,
    slide: Arc<OpenSlide>,
    deep_zoom: DeepZoomGenerator<Arc<OpenSlide>>,
}

impl OpenSlideSource {
    pub fn open(path: &Path) -> Result<(Self, SlideInfo), SlideError> {
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
        // The same bounds every node applies to a descriptor: a slide whose geometry a hub
        // would refuse fails here, at import.
        grassroots_deepzoom::Descriptor::new(
            first.width,
            first.height,
            tile_size,
            overlap,
            grassroots_deepzoom::Format::Jpeg,
        )
        .map_err(|e| unreadable(path, e))?;
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
        Ok((
            Self {
                native,
                slide,
                deep_zoom,
            },
            info,
        ))
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
        info: &SlideInfo,
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
        if let Some(stored) = self.native_deep_zoom_tile(info, level, col, row, format) {
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
        info: &SlideInfo,
        region: (u32, u32, u32, u32),
        out: (u32, u32),
        format: TileFormat,
        quality: u8,
    ) -> Result<Vec<u8>, SlideError> {
        if let Some(stored) = self.native_tile(info, region, out, format) {
            return stored.map_err(|e| SlideError::Read(e.to_string()));
        }
        deepzoom::encode(&self.region_rgb(info, region, out)?, format, quality)
    }

    /// The pixels of `region` (full resolution) at `out`, from the closest level at or above.
    pub fn region_rgb(
        &self,
        info: &SlideInfo,
        region: (u32, u32, u32, u32),
        out: (u32, u32),
    ) -> Result<image::RgbImage, SlideError> {
        let (x, y, w, h) = region;
        let downsample = (f64::from(w) / f64::from(out.0)).min(f64::from(h) / f64::from(out.1));
        let level = self
            .slide
            .best_level_for_downsample(downsample.max(1.0))
            .map_err(|e| SlideError::Read(e.to_string()))?;
        let level_downsample = info
            .levels
            .get(level as usize)
            .map_or(1.0, |l| l.downsample);
        let read_w = ((f64::from(w) / level_downsample).ceil() as u32).max(1);
        let read_h = ((f64::from(h) / level_downsample).ceil() as u32).max(1);
        check_read_size(read_w, read_h)?;
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
        Ok(fit(image, out))
    }

    /// A Deep Zoom tile that is exactly a stored tile (no overlap, a level of the stored
    /// pyramid, not at the right or bottom edge, which the file pads).
    fn native_deep_zoom_tile(
        &self,
        info: &SlideInfo,
        level: u32,
        col: u32,
        row: u32,
        format: TileFormat,
    ) -> Option<std::io::Result<Vec<u8>>> {
        if info.overlap != 0 || self.native.is_none() {
            return None;
        }
        let shift = info.deep_zoom_levels.checked_sub(1)?.checked_sub(level)?;
        let downsample = 1u32.checked_shl(shift)?;
        let span = info.tile_size.checked_mul(downsample)?;
        let (x, y) = (col.checked_mul(span)?, row.checked_mul(span)?);
        if x.checked_add(span)? > info.width || y.checked_add(span)? > info.height {
            return None;
        }
        let size = info.tile_size;
        self.native_tile(info, (x, y, span, span), (size, size), format)
    }

    /// The stored JPEG tile that a region request lines up with exactly, if any.
    fn native_tile(
        &self,
        info: &SlideInfo,
        region: (u32, u32, u32, u32),
        out: (u32, u32),
        format: TileFormat,
    ) -> Option<std::io::Result<Vec<u8>>> {
        let native = self.native.as_ref()?;
        if format != TileFormat::Jpeg {
            return None;
        }
        info.levels.iter().enumerate().find_map(|(index, level)| {
            let grid = native.level(index)?;
            let factor = scale_factor(level.downsample)?;
            let (col, row) =
                aligned_tile(region, out, (grid.tile_width, grid.tile_height), factor)?;
            native.tile(index, col, row)
        })
    }

    /// An associated image's size as its header states it, read before any pixel.
    pub fn associated_image_size(&self, name: &str) -> Result<(u64, u64), SlideError> {
        let size = self
            .slide
            .associated_image_dimensions(name)
            .map_err(|e| SlideError::Read(e.to_string()))?;
        Ok((u64::from(size.w), u64::from(size.h)))
    }

    /// An associated image (label, macro, thumbnail); the caller has checked its size.
    pub fn associated_image(&self, name: &str) -> Result<image::RgbImage, SlideError> {
        self.slide
            .read_associated_image_rgb(name)
            .map_err(|e| SlideError::Read(e.to_string()))
    }
}
