//! The hub's validation set: labelled tiles made only from public tissue images, stored as raw
//! RGB so that the hub — which links no image decoder and no slide reader — can read it.
//!
//! `grassroots model validation-set` makes it where the public images are (the provisioning
//! side), from the test split of the proxy task; the hub measures every version a round makes
//! on it before release. No patient pixel is in it, so it may live at the hub.
//!
//! Layout: `GRTILES1`, tile edge (u32 LE), count (u32 LE), then per tile its class (u8) and
//! `edge * edge * 3` bytes of RGB.

use image::RgbImage;

use crate::training::dataset::{LabelledTile, CLASSES};
use crate::ModelError;

const MAGIC: &[u8; 8] = b"GRTILES1";
/// Most tiles a set may hold, and the largest tile edge: bounds on what a file can make the hub
/// allocate.
const MAX_TILES: u32 = 100_000;
const MAX_EDGE: u32 = 512;

pub fn write(tiles: &[LabelledTile], edge: u32) -> Result<Vec<u8>, ModelError> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&edge.to_le_bytes());
    bytes.extend_from_slice(&(tiles.len() as u32).to_le_bytes());
    for tile in tiles {
        if tile.image.dimensions() != (edge, edge) || tile.class >= CLASSES.len() {
            return Err(ModelError::BadParameters(
                "a validation tile of the wrong size or class".into(),
            ));
        }
        bytes.push(tile.class as u8);
        bytes.extend_from_slice(tile.image.as_raw());
    }
    Ok(bytes)
}

pub fn read(bytes: &[u8]) -> Result<(Vec<LabelledTile>, u32), ModelError> {
    let bad = |why: &str| ModelError::BadParameters(format!("validation set: {why}"));
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(bad("not a tile set"));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (edge, count) = (word(8), word(12));
    if edge == 0 || edge > MAX_EDGE || count > MAX_TILES {
        return Err(bad("an absurd tile size or count"));
    }
    let record = 1 + (edge as usize) * (edge as usize) * 3;
    if bytes.len() != 16 + record * count as usize {
        return Err(bad("truncated or padded"));
    }
    let mut tiles = Vec::with_capacity(count as usize);
    for chunk in bytes[16..].chunks_exact(record) {
        let class = usize::from(chunk[0]);
        if class >= CLASSES.len() {
            return Err(bad("an unknown class"));
        }
        let image = RgbImage::from_raw(edge, edge, chunk[1..].to_vec())
            .ok_or_else(|| bad("a short tile"))?;
        tiles.push(LabelledTile { image, class });
    }
    Ok((tiles, edge))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tile_set_round_trips_and_a_cut_one_is_refused() {
        let tiles: Vec<LabelledTile> = (0..3)
            .map(|i| LabelledTile {
                image: RgbImage::from_pixel(4, 4, image::Rgb([i as u8, 2, 3])),
                class: i,
            })
            .collect();
        let bytes = write(&tiles, 4).unwrap();
        let (back, edge) = read(&bytes).unwrap();
        assert_eq!(edge, 4);
        assert!(back
            .iter()
            .zip(&tiles)
            .all(|(a, b)| a.image == b.image && a.class == b.class));
        assert!(read(&bytes[..bytes.len() - 1]).is_err());
        assert!(read(b"GRTILES1\xff\xff\xff\xff\x01\x00\x00\x00").is_err());
    }
}
