//! Deep Zoom tiles and IIIF regions from a DICOM WSI pyramid: a request lined up with a stored
//! YCbCr JPEG frame is that frame's bytes; anything else is composed from the closest level at or
//! above the requested resolution, resampled and encoded like OpenSlide-backed tiles.

use image::RgbImage;

use super::{DicomImage, DicomWsi};
use crate::deepzoom::{self, TileFormat};
use crate::{aligned_tile, check_read_size, fit, scale_factor, SlideError};
use grassroots_deepzoom::Descriptor as Geometry;

impl DicomWsi {
    /// The Deep Zoom tile `col`, `row` of `level`.
    pub(crate) fn deep_zoom_tile(
        &self,
        geometry: &Geometry,
        (level, col, row): (u32, u32, u32),
        format: TileFormat,
        quality: u8,
    ) -> Result<Vec<u8>, SlideError> {
        let (x, y, w, h) = geometry.tile_region(level, col, row)?;
        let scale = geometry.downsample(level)?;
        let region = (
            x.saturating_mul(scale),
            y.saturating_mul(scale),
            w.saturating_mul(scale)
                .min(geometry.width.saturating_sub(x * scale)),
            h.saturating_mul(scale)
                .min(geometry.height.saturating_sub(y * scale)),
        );
        self.region(region, (w, h), format, quality)
    }

    /// Renders `region` (`x, y, w, h` at full resolution) at `out` pixels.
    pub(crate) fn region(
        &self,
        region: (u32, u32, u32, u32),
        out: (u32, u32),
        format: TileFormat,
        quality: u8,
    ) -> Result<Vec<u8>, SlideError> {
        if format == TileFormat::Jpeg {
            if let Some(stored) = self.stored_tile(region, out) {
                return stored.map_err(SlideError::Read);
            }
        }
        let image = self.render(region, out)?;
        deepzoom::encode(&image, format, quality)
    }

    /// The stored frame a request lines up with exactly, if any: same tile size, a level whose
    /// scale is a whole number, on the frame grid, and wholly inside the image (edge frames are
    /// padded).
    fn stored_tile(
        &self,
        region: (u32, u32, u32, u32),
        out: (u32, u32),
    ) -> Option<Result<Vec<u8>, String>> {
        let base = self.levels.first()?;
        self.levels.iter().find_map(|level| {
            let factor = scale_factor(f64::from(base.width) / f64::from(level.width))?;
            let (col, row) =
                aligned_tile(region, out, (level.tile_width, level.tile_height), factor)?;
            let inside = (col + 1) * level.tile_width <= level.width
                && (row + 1) * level.tile_height <= level.height;
            inside.then(|| self.stored_jpeg(level, col, row)).flatten()
        })
    }

    pub(crate) fn render(
        &self,
        (x, y, w, h): (u32, u32, u32, u32),
        out: (u32, u32),
    ) -> Result<RgbImage, SlideError> {
        let base = self
            .levels
            .first()
            .ok_or(SlideError::Read("no levels".into()))?;
        let wanted = (f64::from(w) / f64::from(out.0.max(1)))
            .min(f64::from(h) / f64::from(out.1.max(1)))
            .max(1.0);
        // The coarsest level still at least as fine as asked for (1% slack for rounding).
        let level: &DicomImage = self
            .levels
            .iter()
            .rfind(|level| f64::from(base.width) / f64::from(level.width) <= wanted * 1.01)
            .unwrap_or(base);
        let (scale_x, scale_y) = (
            f64::from(base.width) / f64::from(level.width),
            f64::from(base.height) / f64::from(level.height),
        );
        let origin = (
            (f64::from(x) / scale_x).floor() as u32,
            (f64::from(y) / scale_y).floor() as u32,
        );
        let size = (
            ((f64::from(w) / scale_x).ceil() as u32).max(1),
            ((f64::from(h) / scale_y).ceil() as u32).max(1),
        );
        check_read_size(size.0, size.1)?;
        let image = self
            .read_region(level, origin, size)
            .map_err(SlideError::Read)?;
        Ok(fit(image, out))
    }
}
