//! Deep Zoom naming and encoding: the `.dzi` descriptor, tile names (`{col}_{row}.{format}`), and
//! the JPEG/PNG encoders. JPEG goes through `jpeg-encoder` (SIMD, far faster than `image`'s).

use image::RgbImage;

use crate::SlideError;

/// Tile edge in pixels, without overlap — openslide-python's default, so that the benchmark
/// compares like with like.
pub const DEFAULT_TILE_SIZE: u32 = 254;

/// Pixels each tile shares with its neighbours.
pub const DEFAULT_OVERLAP: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileFormat {
    Jpeg,
    Png,
}

impl TileFormat {
    pub fn from_extension(extension: &str) -> Option<Self> {
        match extension {
            "jpeg" | "jpg" => Some(TileFormat::Jpeg),
            "png" => Some(TileFormat::Png),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            TileFormat::Jpeg => "jpeg",
            TileFormat::Png => "png",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            TileFormat::Jpeg => "image/jpeg",
            TileFormat::Png => "image/png",
        }
    }
}

/// Parses `"{col}_{row}.{format}"`.
pub fn parse_tile_name(name: &str) -> Option<(u32, u32, TileFormat)> {
    let (stem, extension) = name.rsplit_once('.')?;
    let (col, row) = stem.split_once('_')?;
    Some((
        col.parse().ok()?,
        row.parse().ok()?,
        TileFormat::from_extension(extension)?,
    ))
}

/// Deep Zoom's pyramid over an image: level `L` of `levels` is the image scaled down by
/// `2^(levels - 1 - L)`, sizes rounded up, cut into `tile_size` tiles that share `overlap` pixels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub width: u32,
    pub height: u32,
    pub tile_size: u32,
    pub overlap: u32,
    pub levels: u32,
}

impl Geometry {
    pub fn new(width: u32, height: u32, tile_size: u32, overlap: u32) -> Self {
        let mut levels = 1;
        let mut largest = width.max(height);
        while largest > 1 {
            largest = largest.div_ceil(2);
            levels += 1;
        }
        Self {
            width,
            height,
            tile_size,
            overlap,
            levels,
        }
    }

    /// How many full-resolution pixels one pixel of `level` stands for.
    pub fn downsample(&self, level: u32) -> u32 {
        1u32.checked_shl(self.levels.saturating_sub(1).saturating_sub(level))
            .unwrap_or(u32::MAX)
    }

    pub fn level_size(&self, level: u32) -> Result<(u32, u32), SlideError> {
        if level >= self.levels {
            return Err(SlideError::LevelOutOfRange {
                level,
                levels: self.levels,
            });
        }
        let scale = self.downsample(level);
        Ok((self.width.div_ceil(scale), self.height.div_ceil(scale)))
    }

    /// The pixels of tile `col`, `row` in `level`'s own coordinates: `x, y, w, h`.
    pub fn tile_region(
        &self,
        level: u32,
        col: u32,
        row: u32,
    ) -> Result<(u32, u32, u32, u32), SlideError> {
        let (width, height) = self.level_size(level)?;
        let (cols, rows) = (
            width.div_ceil(self.tile_size),
            height.div_ceil(self.tile_size),
        );
        if col >= cols || row >= rows {
            return Err(SlideError::TileOutOfRange {
                level,
                col,
                row,
                cols,
                rows,
            });
        }
        let span = |index: u32, extent: u32| {
            let start =
                (index * self.tile_size).saturating_sub(if index > 0 { self.overlap } else { 0 });
            let end = ((index + 1) * self.tile_size + self.overlap).min(extent);
            (start, end - start)
        };
        let (x, w) = span(col, width);
        let (y, h) = span(row, height);
        Ok((x, y, w, h))
    }
}

pub(crate) fn dzi_xml(
    width: u32,
    height: u32,
    tile_size: u32,
    overlap: u32,
    format: TileFormat,
) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{}" Overlap="{overlap}" TileSize="{tile_size}"><Size Height="{height}" Width="{width}"/></Image>
"#,
        format.extension()
    )
}

pub(crate) fn encode(
    image: &RgbImage,
    format: TileFormat,
    quality: u8,
) -> Result<Vec<u8>, SlideError> {
    let (width, height) = image.dimensions();
    let encode_error = |e: &dyn std::fmt::Display| SlideError::Encode(e.to_string());
    match format {
        TileFormat::Jpeg => {
            let width = u16::try_from(width).map_err(|e| encode_error(&e))?;
            let height = u16::try_from(height).map_err(|e| encode_error(&e))?;
            let mut out = Vec::with_capacity(32 * 1024);
            jpeg_encoder::Encoder::new(&mut out, quality)
                .encode(image.as_raw(), width, height, jpeg_encoder::ColorType::Rgb)
                .map_err(|e| encode_error(&e))?;
            Ok(out)
        }
        TileFormat::Png => {
            let mut out = std::io::Cursor::new(Vec::new());
            image
                .write_to(&mut out, image::ImageFormat::Png)
                .map_err(|e| encode_error(&e))?;
            Ok(out.into_inner())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_names_parse_strictly() {
        assert_eq!(parse_tile_name("3_7.jpeg"), Some((3, 7, TileFormat::Jpeg)));
        assert_eq!(parse_tile_name("0_0.png"), Some((0, 0, TileFormat::Png)));
        for bad in [
            "3_7",
            "3-7.jpeg",
            "a_1.jpeg",
            "1_1.gif",
            "-1_0.jpeg",
            "1_1_1.jpeg",
            "",
        ] {
            assert_eq!(parse_tile_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn geometry_matches_openslide_python() {
        // openslide-python's DeepZoomGenerator for a 2220 x 2967 slide, 254-pixel tiles, overlap 1.
        let geometry = Geometry::new(2220, 2967, 254, 1);
        assert_eq!(geometry.levels, 13);
        assert_eq!(geometry.level_size(12).unwrap(), (2220, 2967));
        assert_eq!(geometry.level_size(11).unwrap(), (1110, 1484));
        assert_eq!(geometry.level_size(0).unwrap(), (1, 1));
        assert_eq!(geometry.tile_region(12, 0, 0).unwrap(), (0, 0, 255, 255));
        assert_eq!(
            geometry.tile_region(12, 1, 1).unwrap(),
            (253, 253, 256, 256)
        );
        assert_eq!(
            geometry.tile_region(12, 8, 11).unwrap(),
            (2031, 2793, 189, 174)
        );
        assert!(geometry.tile_region(12, 9, 0).is_err());
        assert!(geometry.level_size(13).is_err());
    }

    #[test]
    fn encoded_tiles_decode_to_the_same_size() {
        let image = RgbImage::from_fn(254, 100, |x, y| image::Rgb([x as u8, y as u8, 128]));
        for format in [TileFormat::Jpeg, TileFormat::Png] {
            let bytes = encode(&image, format, 75).unwrap();
            let decoded = image::load_from_memory(&bytes).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (254, 100));
        }
    }
}
