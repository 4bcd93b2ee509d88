//! Deep Zoom naming and encoding: tile names (`{col}_{row}.{format}`) and the JPEG/PNG encoders.
//! JPEG goes through `jpeg-encoder` (SIMD, far faster than `image`'s). The geometry and the
//! `.dzi` descriptor are `grassroots-deepzoom`'s, shared with the hub.

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

impl TileFormat {
    /// The descriptor's format.
    pub fn deep_zoom(self) -> grassroots_deepzoom::Format {
        match self {
            TileFormat::Jpeg => grassroots_deepzoom::Format::Jpeg,
            TileFormat::Png => grassroots_deepzoom::Format::Png,
        }
    }
}

impl From<grassroots_deepzoom::DeepZoomError> for SlideError {
    fn from(error: grassroots_deepzoom::DeepZoomError) -> Self {
        use grassroots_deepzoom::DeepZoomError;
        match error {
            DeepZoomError::NoLevel { level, levels } => {
                SlideError::LevelOutOfRange { level, levels }
            }
            DeepZoomError::NoTile {
                level,
                col,
                row,
                cols,
                rows,
            } => SlideError::TileOutOfRange {
                level,
                col,
                row,
                cols,
                rows,
            },
            other => SlideError::Read(other.to_string()),
        }
    }
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
    fn encoded_tiles_decode_to_the_same_size() {
        let image = RgbImage::from_fn(254, 100, |x, y| image::Rgb([x as u8, y as u8, 128]));
        for format in [TileFormat::Jpeg, TileFormat::Png] {
            let bytes = encode(&image, format, 75).unwrap();
            let decoded = image::load_from_memory(&bytes).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (254, 100));
        }
    }
}
