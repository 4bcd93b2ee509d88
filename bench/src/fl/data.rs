//! The data both systems learn from: the proxy task's tiles from the public fixtures, split
//! among three sites with skewed labels (non-IID, as in `models/tests/federated.rs`), and the
//! held-out test tiles every round is measured on. Written once as tile sets
//! (`grassroots model validation-set`'s format) that our edges and Flower's clients read alike.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use grassroots_models::federated::validation;
use grassroots_models::training::dataset::{labelled_tiles, LabelledTile, Split, TissueSources};
use rand::SeedableRng;

/// Tile edge, as the screening model reads.
pub const TILE: u32 = 32;
/// The proxy task's resolution.
const MICRONS_PER_PIXEL: f64 = 2.0;

/// The real tissue the proxy task is made from: the fixture slide as host, and the fixtures'
/// other images, at `microns_per_pixel`.
pub fn tissue_sources(fixtures: &Path, microns_per_pixel: f64) -> Result<TissueSources> {
    let (host, _) = svs_host(fixtures, microns_per_pixel)?;
    Ok(TissueSources::from_fixtures(host, fixtures)?)
}

/// The SVS cut in bands with the three lesion images, all at `microns_per_pixel`: one split's
/// tiles for a model at any resolution (`model tile-set --model context`).
pub fn banded_tissue_sources(fixtures: &Path, microns_per_pixel: f64) -> Result<TissueSources> {
    let (host, svs_microns_per_pixel) = svs_host(fixtures, microns_per_pixel)?;
    Ok(TissueSources::banded_from_fixtures(
        host,
        svs_microns_per_pixel,
        fixtures,
        microns_per_pixel,
    )?)
}

/// Every real tissue of the fixtures (six hosts, three lesion images) at `microns_per_pixel`,
/// for training evaluated host by host.
pub fn all_tissue_sources(fixtures: &Path, microns_per_pixel: f64) -> Result<TissueSources> {
    let (host, svs_microns_per_pixel) = svs_host(fixtures, microns_per_pixel)?;
    Ok(TissueSources::all_from_fixtures(
        host,
        svs_microns_per_pixel,
        fixtures,
        microns_per_pixel,
    )?)
}

/// The fixture slide read whole at `microns_per_pixel`, and its own microns per pixel.
fn svs_host(fixtures: &Path, microns_per_pixel: f64) -> Result<(image::RgbImage, f64)> {
    let svs = fixtures.join("cmu_small_region.svs");
    let slide = grassroots_slides::Slide::open(&svs)
        .with_context(|| format!("{} (run scripts/fetch-fixtures)", svs.display()))?;
    let info = slide.info();
    let scale = info.microns_per_pixel_x.unwrap_or(0.5) / microns_per_pixel;
    let out = (
        (f64::from(info.width) * scale).round() as u32,
        (f64::from(info.height) * scale).round() as u32,
    );
    let host = slide.region_rgb((0, 0, info.width, info.height), out)?;
    Ok((host, info.microns_per_pixel_x.unwrap_or(0.5)))
}

/// Label skew: each site holds three in five of two classes' tiles and one in five of each
/// other class's.
fn non_iid(tiles: Vec<LabelledTile>, sites: usize) -> Vec<Vec<LabelledTile>> {
    let favourite = |class: usize| class / 2 % sites;
    let mut split = vec![Vec::new(); sites];
    let mut seen = [0usize; 16];
    for tile in tiles {
        let n = seen[tile.class % 16];
        seen[tile.class % 16] += 1;
        let site = match n % 5 {
            0..=2 => favourite(tile.class),
            3 => (favourite(tile.class) + 1) % sites,
            _ => (favourite(tile.class) + 2) % sites,
        };
        split[site].push(tile);
    }
    split
}

/// The tile sets on disk.
pub struct Splits {
    pub sites: Vec<PathBuf>,
    pub test: PathBuf,
    pub site_tiles: Vec<usize>,
    pub test_tiles: usize,
}

/// Writes three sites' training sets and the test set under `dir`.
pub fn write(fixtures: &Path, dir: &Path, per_class: usize, seed: u64) -> Result<Splits> {
    let sources = tissue_sources(fixtures, MICRONS_PER_PIXEL)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let train = labelled_tiles(&sources, Split::Train, per_class, TILE, &mut rng);
    let test = labelled_tiles(&sources, Split::Test, per_class, TILE, &mut rng);
    std::fs::create_dir_all(dir)?;
    let mut sites = Vec::new();
    let mut site_tiles = Vec::new();
    for (index, tiles) in non_iid(train, 3).into_iter().enumerate() {
        let path = dir.join(format!("site-{index}.tiles"));
        std::fs::write(&path, validation::write(&tiles, TILE)?)?;
        site_tiles.push(tiles.len());
        sites.push(path);
    }
    let test_path = dir.join("test.tiles");
    std::fs::write(&test_path, validation::write(&test, TILE)?)?;
    Ok(Splits {
        sites,
        test: test_path,
        site_tiles,
        test_tiles: test.len(),
    })
}

/// A tile set from disk.
pub fn read(path: &Path) -> Result<Vec<LabelledTile>> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let (tiles, edge) = validation::read(&bytes)?;
    anyhow::ensure!(edge == TILE, "{}: tiles of {edge} px", path.display());
    Ok(tiles)
}

/// Writes `values` as a one-dimensional float32 `.npy` file (NumPy format 1.0).
pub fn write_npy(path: &Path, values: &[f32]) -> Result<()> {
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        values.len()
    );
    // Magic (6) + version (2) + header length (2) + header, padded to 64 bytes, ending in \n.
    let unpadded = 10 + dict.len() + 1;
    let padding = (64 - unpadded % 64) % 64;
    let header = format!("{dict}{}\n", " ".repeat(padding));
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes)?;
    Ok(())
}

/// Little-endian float32 values from a file.
pub fn read_f32(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    anyhow::ensure!(
        bytes.len() % 4 == 0,
        "{}: not float32 values",
        path.display()
    );
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}
