//! Screening an image at the model's resolution: the tiles over tissue classified, a lesion
//! heatmap, quality-control shares, a slide score, and the top region.
//!
//! The edge runs this on each part of a slide it reads; training runs it on synthetic slides to
//! choose the operating point. Both therefore score the same way: a slide's score is the highest
//! lesion probability on tissue after averaging each tile with its classified neighbours — a
//! lesion spans several overlapping tiles, a stray false positive one.

use image::RgbImage;

use crate::classifier::TileClassifier;
use crate::ModelError;

/// Whether a pixel looks like stained tissue rather than glass: H&E background is bright and
/// grey; tissue is darker or coloured.
pub fn is_tissue(pixel: &image::Rgb<u8>) -> bool {
    let [r, g, b] = pixel.0;
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    let mean = (u32::from(r) + u32::from(g) + u32::from(b)) / 3;
    (max - min) > 18 || mean < 200
}

/// Share of tissue pixels in an image.
pub fn tissue_fraction(image: &RgbImage) -> f32 {
    let total = image.pixels().len().max(1);
    image.pixels().filter(|p| is_tissue(p)).count() as f32 / total as f32
}

/// Share of tissue pixels in an image, and their mean optical density (-ln of the transmitted
/// share of light, averaged over R, G and B; 0 without tissue): the amount of stain the light
/// went through, which a fold doubles ([`crate::folds`]).
pub fn tissue_and_density(image: &RgbImage) -> (f32, f32) {
    let table = density_table();
    let total = image.pixels().len().max(1);
    let (mut tissue, mut density) = (0usize, 0.0f32);
    for pixel in image.pixels() {
        if is_tissue(pixel) {
            tissue += 1;
            density += pixel.0.iter().map(|&v| table[usize::from(v)]).sum::<f32>();
        }
    }
    let mean = if tissue == 0 {
        0.0
    } else {
        density / (3 * tissue) as f32
    };
    (tissue as f32 / total as f32, mean)
}

/// Optical density of each 8-bit level, glass (255) at 0 and 0 taken as 1.
fn density_table() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|v| -((v.max(1) as f32) / 255.0).ln()))
}

/// Tiles with less tissue than this are not classified.
pub const MIN_TISSUE: f32 = 0.25;

/// Classified tiles (itself included) of the 3x3 neighbourhood a tile needs to be scored.
pub const MIN_NEIGHBOURS: usize = 6;

/// One tile position of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct GridCell {
    pub tissue: f32,
    /// Mean optical density of the tile's tissue pixels ([`tissue_and_density`]), when it was
    /// measured (grids screened before it was are without).
    pub density: Option<f32>,
    /// Class probabilities, when the tile was on tissue.
    pub probabilities: Option<Vec<f32>>,
}

/// Classified tiles on a regular grid (`stride` pixels apart, `tile` pixels wide).
#[derive(Debug, Clone, PartialEq)]
pub struct TileGrid {
    pub cols: u32,
    pub rows: u32,
    pub tile: u32,
    pub stride: u32,
    pub cells: Vec<GridCell>,
}

impl TileGrid {
    /// A grid of `cols` x `rows` cells, none on tissue or classified.
    pub fn empty(cols: u32, rows: u32, tile: u32, stride: u32) -> Self {
        let blank = GridCell {
            tissue: 0.0,
            density: None,
            probabilities: None,
        };
        Self {
            cols,
            rows,
            tile,
            stride,
            cells: vec![blank; (cols * rows) as usize],
        }
    }

    pub fn cell(&self, col: u32, row: u32) -> &GridCell {
        &self.cells[(row * self.cols + col) as usize]
    }

    /// The probability of class `index` at each cell (0 off tissue).
    pub fn class_map(&self, index: usize) -> Vec<f32> {
        self.cells
            .iter()
            .map(|c| c.probabilities.as_ref().map_or(0.0, |p| p[index]))
            .collect()
    }

    /// Class `index`'s probability averaged over each classified tile and its classified
    /// neighbours (0 off tissue and where fewer than [`MIN_NEIGHBOURS`] are classified).
    pub fn smoothed_map(&self, index: usize) -> Vec<f32> {
        let map = self.class_map(index);
        let (cols, rows) = (i64::from(self.cols), i64::from(self.rows));
        (0..map.len())
            .map(|at| {
                if self.cells[at].probabilities.is_none() {
                    return 0.0;
                }
                let (col, row) = (at as i64 % cols, at as i64 / cols);
                let mut sum = 0.0;
                let mut count = 0;
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let (c, r) = (col + dx, row + dy);
                        if c < 0 || r < 0 || c >= cols || r >= rows {
                            continue;
                        }
                        let neighbour = (r * cols + c) as usize;
                        if self.cells[neighbour].probabilities.is_some() {
                            sum += map[neighbour];
                            count += 1;
                        }
                    }
                }
                // A tile with few classified neighbours (at the edge of tissue or of the image)
                // is too little evidence to score a slide on.
                if count < MIN_NEIGHBOURS {
                    return 0.0;
                }
                sum / count as f32
            })
            .collect()
    }

    /// The highest value of `map` (a [`TileGrid::smoothed_map`]; for lesions, the slide score)
    /// on a classified tile, and where (col, row).
    pub fn peak(&self, map: &[f32]) -> Option<(f32, u32, u32)> {
        map.iter()
            .copied()
            .enumerate()
            .filter(|(i, _)| self.cells[*i].probabilities.is_some())
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, p)| (p, i as u32 % self.cols, i as u32 / self.cols))
    }

    /// Share of classified tiles whose most likely class is `index`.
    pub fn share_of(&self, index: usize) -> f32 {
        let classified: Vec<&Vec<f32>> = self
            .cells
            .iter()
            .filter_map(|c| c.probabilities.as_ref())
            .collect();
        if classified.is_empty() {
            return 0.0;
        }
        let winning = classified.iter().filter(|p| argmax(p) == index).count();
        winning as f32 / classified.len() as f32
    }

    /// Cells connected (8-neighbourhood) to `start` whose value in `map` (a
    /// [`TileGrid::smoothed_map`]) is at least `threshold`: a region.
    pub fn region(&self, map: &[f32], start: (u32, u32), threshold: f32) -> Vec<(u32, u32)> {
        let mut seen = vec![false; map.len()];
        let mut stack = vec![start];
        let mut region = Vec::new();
        while let Some((col, row)) = stack.pop() {
            let at = (row * self.cols + col) as usize;
            if seen[at] || (map[at] < threshold && !region.is_empty()) {
                continue;
            }
            seen[at] = true;
            region.push((col, row));
            for (dx, dy) in [
                (-1i64, -1i64),
                (0, -1),
                (1, -1),
                (-1, 0),
                (1, 0),
                (-1, 1),
                (0, 1),
                (1, 1),
            ] {
                let (c, r) = (i64::from(col) + dx, i64::from(row) + dy);
                if c >= 0 && r >= 0 && c < i64::from(self.cols) && r < i64::from(self.rows) {
                    stack.push((c as u32, r as u32));
                }
            }
        }
        region
    }
}

pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// The tiles of an image laid out on a grid, those over tissue cut out for classification.
pub struct PreparedGrid {
    pub grid: TileGrid,
    /// (cell index, tile) of every tile with at least [`MIN_TISSUE`] tissue.
    pub on_tissue: Vec<(usize, RgbImage)>,
}

impl PreparedGrid {
    /// Cuts `image` (at the model's resolution) into `tile`-pixel tiles every `stride` pixels.
    pub fn cut(image: &RgbImage, tile: u32, stride: u32) -> Self {
        let (w, h) = image.dimensions();
        let count = |length: u32| {
            if length >= tile {
                (length - tile) / stride + 1
            } else {
                0
            }
        };
        let (cols, rows) = (count(w), count(h));
        let mut cells = Vec::with_capacity((cols * rows) as usize);
        let mut on_tissue = Vec::new();
        for row in 0..rows {
            for col in 0..cols {
                let crop = tile_at(image, col * stride, row * stride, tile);
                let (tissue, density) = tissue_and_density(&crop);
                if tissue >= MIN_TISSUE {
                    on_tissue.push((cells.len(), crop));
                }
                cells.push(GridCell {
                    tissue,
                    density: Some(density),
                    probabilities: None,
                });
            }
        }
        Self {
            grid: TileGrid {
                cols,
                rows,
                tile,
                stride,
                cells,
            },
            on_tissue,
        }
    }

    /// Classifies the tiles on tissue with `workers` threads sharing the classifier.
    pub fn classify(
        self,
        classifier: &TileClassifier,
        workers: usize,
    ) -> Result<TileGrid, ModelError> {
        let Self {
            mut grid,
            on_tissue,
        } = self;
        let (at, tiles): (Vec<usize>, Vec<RgbImage>) = on_tissue.into_iter().unzip();
        // Whole batches per worker, so that no worker pads a batch another could have filled.
        let batch = classifier.batch_size();
        let per_worker = tiles.len().div_ceil(workers.max(1)).div_ceil(batch) * batch;
        let results: Vec<Result<Vec<Vec<f32>>, ModelError>> = if per_worker == 0 {
            Vec::new()
        } else {
            std::thread::scope(|scope| {
                let running: Vec<_> = tiles
                    .chunks(per_worker)
                    .map(|chunk| scope.spawn(move || classifier.classify(chunk)))
                    .collect();
                running
                    .into_iter()
                    .map(|worker| {
                        worker.join().unwrap_or_else(|_| {
                            Err(ModelError::Inference("a classifier thread panicked".into()))
                        })
                    })
                    .collect()
            })
        };
        let mut probabilities = Vec::with_capacity(tiles.len());
        for result in results {
            probabilities.extend(result?);
        }
        for (at, p) in at.into_iter().zip(probabilities) {
            grid.cells[at].probabilities = Some(p);
        }
        Ok(grid)
    }
}

/// The `tile`-pixel square of `image` from (`x`, `y`), which lies inside it, copied a row at a
/// time (a slide's triage cuts a million of them: `crop_imm(..).to_image()` copied them
/// pixel by pixel, a tenth of the triage's time).
fn tile_at(image: &RgbImage, x: u32, y: u32, tile: u32) -> RgbImage {
    let (width, side) = (image.width() as usize, tile as usize);
    let raw: &[u8] = image.as_raw();
    let mut pixels = Vec::with_capacity(side * side * 3);
    for row in y as usize..y as usize + side {
        let start = (row * width + x as usize) * 3;
        pixels.extend_from_slice(&raw[start..start + side * 3]);
    }
    RgbImage::from_raw(tile, tile, pixels)
        .unwrap_or_else(|| image::imageops::crop_imm(image, x, y, tile, tile).to_image())
}

/// Classifies the tiles of `image` (at the model's resolution) every `stride` pixels.
pub fn screen_image(
    classifier: &TileClassifier,
    image: &RgbImage,
    stride: u32,
) -> Result<TileGrid, ModelError> {
    PreparedGrid::cut(image, classifier.manifest().input.width, stride).classify(classifier, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tile_cut_a_row_at_a_time_is_the_crop_of_the_image() {
        let image = RgbImage::from_fn(97, 70, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (x * y) as u8, (x + y * 13) as u8])
        });
        for (x, y) in [(0, 0), (33, 6), (97 - 32, 70 - 32), (16, 38)] {
            let expected = image::imageops::crop_imm(&image, x, y, 32, 32).to_image();
            assert_eq!(tile_at(&image, x, y, 32), expected, "{x},{y}");
        }
    }
}
