//! Deep Zoom: a pyramid over an image where level `L` of `levels` is the image scaled down by
//! `2^(levels - 1 - L)` (sizes rounded up), cut into `tile_size` tiles sharing `overlap` pixels,
//! and the `.dzi` descriptor that states it.
//!
//! One small crate so that the edge (which renders tiles), the hub (which relays an edge's
//! descriptor to browsers and plans prefetch from it) and the consult bench compute the same
//! geometry — and so that the hub may use it without linking a slide reader. A descriptor is a
//! figure a peer sends: every figure is bounded at parse ([`Descriptor::new`]) and every
//! computation is checked, so a hostile edge cannot make the hub loop over 2^64 tiles or
//! overflow; the hub relays only [`Descriptor::to_xml`] of what it parsed, never the edge's
//! bytes, so nothing but the five figures reaches a browser.

/// Largest image side (pixels): about 40 cm of tissue at 0.025 um/px; real slides are under
/// 250,000 pixels.
pub const MAX_SIDE: u32 = 1 << 24;
/// Smallest and largest tile edge.
pub const MIN_TILE: u32 = 8;
pub const MAX_TILE: u32 = 4096;
/// Largest overlap.
pub const MAX_OVERLAP: u32 = 64;
/// Longest descriptor read.
const MAX_XML: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeepZoomError {
    #[error("not a Deep Zoom descriptor: {0}")]
    Malformed(String),
    #[error("{what} {value} is out of range ({min} to {max})")]
    OutOfRange {
        what: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("no Deep Zoom level {level} (the image has {levels})")]
    NoLevel { level: u32, levels: u32 },
    #[error(
        "no tile {col}_{row} at Deep Zoom level {level} (the level has {cols} x {rows} tiles)"
    )]
    NoTile {
        level: u32,
        col: u32,
        row: u32,
        cols: u32,
        rows: u32,
    },
}

/// How tiles are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
        }
    }
}

/// A Deep Zoom image: its size, tiles and format, within bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub width: u32,
    pub height: u32,
    pub tile_size: u32,
    pub overlap: u32,
    pub format: Format,
    levels: u32,
}

fn check(what: &'static str, value: u32, min: u32, max: u32) -> Result<(), DeepZoomError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(DeepZoomError::OutOfRange {
            what,
            value: u64::from(value),
            min: u64::from(min),
            max: u64::from(max),
        })
    }
}

/// The value of `name="..."` in `xml`.
fn attribute(xml: &str, name: &str) -> Result<String, DeepZoomError> {
    let key = format!(" {name}=\"");
    let start = xml
        .find(&key)
        .ok_or_else(|| DeepZoomError::Malformed(format!("no {name}")))?
        + key.len();
    let end = xml[start..]
        .find('"')
        .ok_or_else(|| DeepZoomError::Malformed(format!("{name} is not closed")))?;
    Ok(xml[start..start + end].to_string())
}

fn number(xml: &str, name: &str) -> Result<u32, DeepZoomError> {
    let text = attribute(xml, name)?;
    text.parse()
        .map_err(|_| DeepZoomError::Malformed(format!("{name}={text:?} is not a whole number")))
}

impl Descriptor {
    pub fn new(
        width: u32,
        height: u32,
        tile_size: u32,
        overlap: u32,
        format: Format,
    ) -> Result<Self, DeepZoomError> {
        check("width", width, 1, MAX_SIDE)?;
        check("height", height, 1, MAX_SIDE)?;
        check("tile size", tile_size, MIN_TILE, MAX_TILE)?;
        check("overlap", overlap, 0, MAX_OVERLAP.min(tile_size / 2))?;
        // Halvings until the longer side is one pixel: at most 25 for MAX_SIDE.
        let mut levels = 1;
        let mut largest = width.max(height);
        while largest > 1 {
            largest = largest.div_ceil(2);
            levels += 1;
        }
        Ok(Self {
            width,
            height,
            tile_size,
            overlap,
            format,
            levels,
        })
    }

    /// Reads a `.dzi` descriptor (`<Image Format Overlap TileSize><Size Width Height/></Image>`).
    pub fn parse(xml: &str) -> Result<Self, DeepZoomError> {
        if xml.len() > MAX_XML {
            return Err(DeepZoomError::Malformed(format!(
                "{} bytes (at most {MAX_XML})",
                xml.len()
            )));
        }
        if !xml.contains("<Image") || !xml.contains("<Size") {
            return Err(DeepZoomError::Malformed(
                "no Image and Size elements".into(),
            ));
        }
        let format = match attribute(xml, "Format")?.as_str() {
            "jpeg" | "jpg" => Format::Jpeg,
            "png" => Format::Png,
            other => {
                return Err(DeepZoomError::Malformed(format!(
                    "tile format {other:?} (jpeg or png)"
                )))
            }
        };
        Self::new(
            number(xml, "Width")?,
            number(xml, "Height")?,
            number(xml, "TileSize")?,
            number(xml, "Overlap")?,
            format,
        )
    }

    /// The descriptor as XML, written from the figures alone.
    pub fn to_xml(&self) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{}" Overlap="{}" TileSize="{}"><Size Height="{}" Width="{}"/></Image>
"#,
            self.format.extension(),
            self.overlap,
            self.tile_size,
            self.height,
            self.width
        )
    }

    /// Number of levels; the last is full resolution.
    pub fn levels(&self) -> u32 {
        self.levels
    }

    pub fn top_level(&self) -> u32 {
        self.levels - 1
    }

    fn check_level(&self, level: u32) -> Result<(), DeepZoomError> {
        if level < self.levels {
            Ok(())
        } else {
            Err(DeepZoomError::NoLevel {
                level,
                levels: self.levels,
            })
        }
    }

    /// Full-resolution pixels one pixel of `level` stands for.
    pub fn downsample(&self, level: u32) -> Result<u32, DeepZoomError> {
        self.check_level(level)?;
        // top_level - level is at most 24: the shift cannot overflow.
        Ok(1u32 << (self.top_level() - level))
    }

    pub fn level_size(&self, level: u32) -> Result<(u32, u32), DeepZoomError> {
        let scale = self.downsample(level)?;
        Ok((self.width.div_ceil(scale), self.height.div_ceil(scale)))
    }

    /// Columns and rows of tiles at `level`.
    pub fn grid(&self, level: u32) -> Result<(u32, u32), DeepZoomError> {
        let (width, height) = self.level_size(level)?;
        Ok((
            width.div_ceil(self.tile_size),
            height.div_ceil(self.tile_size),
        ))
    }

    /// The pixels of tile `col`, `row` in `level`'s own coordinates: `x, y, w, h`.
    pub fn tile_region(
        &self,
        level: u32,
        col: u32,
        row: u32,
    ) -> Result<(u32, u32, u32, u32), DeepZoomError> {
        let (width, height) = self.level_size(level)?;
        let (cols, rows) = self.grid(level)?;
        if col >= cols || row >= rows {
            return Err(DeepZoomError::NoTile {
                level,
                col,
                row,
                cols,
                rows,
            });
        }
        // index < cols = ceil(extent / tile), so index * tile < extent + tile <= 2^24 + 2^12.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_openslide_python() {
        // openslide-python's DeepZoomGenerator for a 2220 x 2967 slide, 254-pixel tiles, overlap 1.
        let g = Descriptor::new(2220, 2967, 254, 1, Format::Jpeg).unwrap();
        assert_eq!(g.levels(), 13);
        assert_eq!(g.level_size(12).unwrap(), (2220, 2967));
        assert_eq!(g.level_size(11).unwrap(), (1110, 1484));
        assert_eq!(g.level_size(0).unwrap(), (1, 1));
        assert_eq!(g.tile_region(12, 0, 0).unwrap(), (0, 0, 255, 255));
        assert_eq!(g.tile_region(12, 1, 1).unwrap(), (253, 253, 256, 256));
        assert_eq!(g.tile_region(12, 8, 11).unwrap(), (2031, 2793, 189, 174));
        assert!(g.tile_region(12, 9, 0).is_err());
        assert!(g.level_size(13).is_err());
    }

    #[test]
    fn a_descriptor_round_trips_and_hostile_figures_are_refused() {
        let xml = r#"<?xml version="1.0"?><Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="jpeg" Overlap="1" TileSize="254"><Size Width="46000" Height="32914"/></Image>"#;
        let d = Descriptor::parse(xml).unwrap();
        assert_eq!(
            (d.width, d.height, d.tile_size, d.overlap),
            (46000, 32914, 254, 1)
        );
        assert_eq!(d.levels(), 17);
        assert_eq!(d.grid(16).unwrap(), (182, 130));
        assert_eq!(Descriptor::parse(&d.to_xml()).unwrap(), d);
        // A huge width with tiles of one pixel (the planner looped over ~2^64 tiles).
        let huge = xml
            .replace("46000", "18446744073709551615")
            .replace("254", "1");
        assert!(Descriptor::parse(&huge).is_err());
        let tiny_tiles = xml.replace("TileSize=\"254\"", "TileSize=\"1\"");
        assert!(matches!(
            Descriptor::parse(&tiny_tiles),
            Err(DeepZoomError::OutOfRange {
                what: "tile size",
                ..
            })
        ));
        // Script in the descriptor never survives: only the figures are written back.
        let scripted = xml.replace(
            "<Size",
            "<script xmlns=\"http://www.w3.org/1999/xhtml\">alert(1)</script><Size",
        );
        let relayed = Descriptor::parse(&scripted).unwrap().to_xml();
        assert!(!relayed.contains("script"), "{relayed}");
        assert!(Descriptor::parse("<Image/>").is_err());
        assert!(Descriptor::parse(&"x".repeat(10_000)).is_err());
        let format = xml.replace("jpeg", "gif");
        assert!(Descriptor::parse(&format).is_err());
    }
}
