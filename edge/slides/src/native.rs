//! Native JPEG tiles: the stored bytes of a TIFF-based slide, served without decoding.
//!
//! Many slides (generic tiled TIFF, and the pyramids made from them) store each level as JPEG
//! tiles. When a request lines up exactly with one stored tile — same level, same grid, same
//! size — the fastest and most faithful answer is the file's own bytes: no decode, no resample,
//! no second lossy encode. TIFF stores the JPEG tables once per level (`JPEGTables`); a tile is
//! made self-contained by splicing those tables in front of its scan. Only YCbCr JPEG tiles
//! qualify: RGB-coded ones (as Aperio writes) would show wrong colours in a browser, so those
//! are rendered instead.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tiff::decoder::Decoder;
use tiff::tags::Tag;

use crate::SlideLevel;

const COMPRESSION_JPEG: u32 = 7;
/// Largest stored tile edge used as a Deep Zoom / IIIF grid (larger ones are rendered instead).
pub const MAX_NATIVE_TILE: u32 = 1024;
const PHOTOMETRIC_YCBCR: u32 = 6;

/// One pyramid level stored as JPEG tiles.
#[derive(Debug, Clone)]
pub struct NativeLevel {
    pub tile_width: u32,
    pub tile_height: u32,
    tiles_across: u32,
    tiles_down: u32,
    offsets: Vec<u64>,
    byte_counts: Vec<u64>,
    tables: Option<Vec<u8>>,
}

/// The native tiles of a slide, by OpenSlide level.
#[derive(Debug)]
pub struct NativeTiles {
    path: PathBuf,
    levels: Vec<Option<NativeLevel>>,
}

fn read_level<R: std::io::Read + std::io::Seek>(
    decoder: &mut Decoder<R>,
    file_len: u64,
) -> Option<((u32, u32), NativeLevel)> {
    if decoder.find_tag_unsigned::<u32>(Tag::Compression).ok()?? != COMPRESSION_JPEG {
        return None;
    }
    if decoder
        .find_tag_unsigned::<u32>(Tag::PhotometricInterpretation)
        .ok()??
        != PHOTOMETRIC_YCBCR
    {
        return None;
    }
    let tile_width = decoder.find_tag_unsigned::<u32>(Tag::TileWidth).ok()??;
    let tile_height = decoder.find_tag_unsigned::<u32>(Tag::TileLength).ok()??;
    if !(16..=MAX_NATIVE_TILE).contains(&tile_width)
        || !(16..=MAX_NATIVE_TILE).contains(&tile_height)
    {
        return None;
    }
    let (width, height) = decoder.dimensions().ok()?;
    let offsets = decoder.get_tag_u64_vec(Tag::TileOffsets).ok()?;
    let byte_counts = decoder.get_tag_u64_vec(Tag::TileByteCounts).ok()?;
    let tables = decoder
        .find_tag(Tag::JPEGTables)
        .ok()?
        .and_then(|v| v.into_u8_vec().ok());
    let (tiles_across, tiles_down) = (width.div_ceil(tile_width), height.div_ceil(tile_height));
    let expected = tiles_across as usize * tiles_down as usize;
    if offsets.len() != expected || byte_counts.len() != expected {
        return None;
    }
    // A crafted file must not make us read past its end or allocate more than a tile can need;
    // empty (missing) tiles are rendered instead.
    let max_count = 4 * u64::from(tile_width) * u64::from(tile_height) * 3;
    let sane = offsets.iter().zip(&byte_counts).all(|(offset, count)| {
        *count > 0
            && *count <= max_count
            && offset
                .checked_add(*count)
                .is_some_and(|end| end <= file_len)
    });
    if !sane {
        return None;
    }
    Some((
        (width, height),
        NativeLevel {
            tile_width,
            tile_height,
            tiles_across,
            tiles_down,
            offsets,
            byte_counts,
            tables,
        },
    ))
}

impl NativeTiles {
    /// Finds, for each OpenSlide level, a TIFF directory of the same size stored as YCbCr JPEG
    /// tiles. `None` when the file is not a TIFF or no level qualifies.
    pub fn probe(path: &Path, levels: &[SlideLevel]) -> Option<Self> {
        let file = File::open(path).ok()?;
        let file_len = file.metadata().ok()?.len();
        let mut decoder = Decoder::new(std::io::BufReader::new(file)).ok()?;
        let mut found = Vec::new();
        loop {
            if let Some(level) = read_level(&mut decoder, file_len) {
                found.push(level);
            }
            if !decoder.more_images() || decoder.next_image().is_err() {
                break;
            }
        }
        let levels: Vec<Option<NativeLevel>> = levels
            .iter()
            .map(|level| {
                found
                    .iter()
                    .find(|((w, h), _)| (*w, *h) == (level.width, level.height))
                    .map(|(_, native)| native.clone())
            })
            .collect();
        levels.iter().any(Option::is_some).then(|| Self {
            path: path.to_path_buf(),
            levels,
        })
    }

    /// The native tile grid of an OpenSlide level, if it has one.
    pub fn level(&self, level: usize) -> Option<&NativeLevel> {
        self.levels.get(level).and_then(Option::as_ref)
    }

    /// The stored JPEG of one tile, made self-contained. Only interior tiles are offered: edge
    /// tiles are padded in the file and must be cropped, so those are rendered.
    pub fn tile(&self, level: usize, col: u32, row: u32) -> Option<std::io::Result<Vec<u8>>> {
        let native = self.level(level)?;
        if col + 1 >= native.tiles_across || row + 1 >= native.tiles_down {
            return None;
        }
        let index = (row * native.tiles_across + col) as usize;
        let (offset, count) = (*native.offsets.get(index)?, *native.byte_counts.get(index)?);
        Some((|| {
            let mut scan = vec![0u8; usize::try_from(count).map_err(std::io::Error::other)?];
            File::open(&self.path)?.read_exact_at(&mut scan, offset)?;
            Ok(splice_tables(native.tables.as_deref(), scan))
        })())
        // Whatever is stored must at least start like a JPEG; otherwise render.
        .filter(|bytes| !matches!(bytes, Ok(jpeg) if !jpeg.starts_with(&[0xFF, 0xD8])))
    }
}

/// Joins JPEG tables (SOI, DQT/DHT..., EOI) and an abbreviated scan (SOI, SOF, SOS..., EOI)
/// into one JPEG: the tables without their EOI, then the scan without its SOI.
fn splice_tables(tables: Option<&[u8]>, scan: Vec<u8>) -> Vec<u8> {
    match tables {
        Some(tables) if tables.len() > 4 && scan.len() > 2 && scan[..2] == [0xFF, 0xD8] => {
            let mut jpeg = Vec::with_capacity(tables.len() + scan.len());
            jpeg.extend_from_slice(&tables[..tables.len() - 2]);
            jpeg.extend_from_slice(&scan[2..]);
            jpeg
        }
        _ => scan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_spliced_in_front_of_the_scan() {
        let tables = [0xFF, 0xD8, 0xFF, 0xDB, 1, 2, 0xFF, 0xD9];
        let scan = vec![0xFF, 0xD8, 0xFF, 0xC0, 9, 0xFF, 0xD9];
        assert_eq!(
            splice_tables(Some(&tables), scan.clone()),
            vec![0xFF, 0xD8, 0xFF, 0xDB, 1, 2, 0xFF, 0xC0, 9, 0xFF, 0xD9]
        );
        assert_eq!(splice_tables(None, scan.clone()), scan);
    }
}
