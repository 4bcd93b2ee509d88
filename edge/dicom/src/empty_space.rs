//! Where a ray may leap: the parts of a volume a transfer function shows nothing of, and from
//! any point how far the nearest visible part is.
//!
//! Most of a CT is air, fat and muscle, which a bone or vessel preset makes transparent; a ray
//! that samples them at every step spends most of its time on nothing. The volume is cut into
//! cells of about the same length every way in millimetres (8 x 8 x 2 voxels in a chest CT of
//! 0.7 mm pixels and 2.5 mm slices: cells of 8^3 voxels in such a CT would reach 20 mm along
//! the slices, and every ray passing within them of a rib would crawl) whose value range is
//! computed once; for each preset the renderer
//! asks, once per volume, which cells show anything and how many cells away (chessboard
//! distance) the nearest such cell is. From a cell `d` away a ray leaps to the face of the
//! cube of `2d - 1` cells around it, all of which are empty, instead of testing block after
//! block: a ray through a chest's air and soft tissue reaches the ribs in a few leaps.
//!
//! Inside a cell that shows something most samples still show nothing (a rib crosses a corner
//! of it; CT noise lifts one voxel above the bone threshold). So each preset also marks, one
//! bit per voxel, whether the eight voxels a trilinear sample there reads could show anything:
//! a sample in an unmarked voxel is skipped without being interpolated.

use std::sync::OnceLock;

use rayon::prelude::*;

use crate::transfer::PRESETS;
use crate::volume::Volume;

/// Side of the cells along the volume's finest axis, voxels: small enough to leap round a rib,
/// large enough that a leap is worth its arithmetic. Along a coarser axis (a CT's slices are
/// often 3 to 5 times further apart than its pixels) a cell has fewer voxels, in a power of
/// two, so that cells are about as long in millimetres every way and a leap's cube of empty
/// cells is about a cube in the patient.
const CELL: usize = 8;

/// Bits to shift a voxel index by along each axis for its cell, for `spacing` (mm).
fn cell_shifts(spacing: [f64; 3]) -> [u32; 3] {
    let finest = spacing
        .iter()
        .copied()
        .fold(f64::MAX, f64::min)
        .max(f64::MIN_POSITIVE);
    spacing.map(|mm| {
        let voxels = CELL as f64 * finest / mm.max(finest);
        // The power of two nearest (in ratio) to the voxels a side, 1 at least.
        (voxels.log2().round().max(0.0) as u32).min(CELL.trailing_zeros())
    })
}

/// Cells a side of the groups whose boxes bound the rays.
const GROUP: usize = 2;

/// Distances are kept to this many cells; beyond it a ray leaps in several goes.
const FAR: u8 = u8::MAX;

/// Value ranges per cell and, per transfer-function preset, the distance field made from them.
#[derive(Debug, Clone)]
pub struct EmptySpace {
    counts: [usize; 3],
    /// Voxel index to cell index along each axis: `>> shifts[axis]`.
    shifts: [u32; 3],
    /// Lowest and highest value a sample in the cell can take: its voxels and the next voxel
    /// along each axis (a trilinear sample near the cell's far faces reads them).
    ranges: Vec<(f32, f32)>,
    /// Per preset (by its index), made the first time a picture uses it.
    leaps: [OnceLock<Leaps>; PRESETS],
}

/// Where rays may leap and skip for one preset.
#[derive(Debug, Clone)]
pub(crate) struct Leaps {
    /// Per cell, cells to the nearest one that shows anything (0: it does itself; at most 255).
    pub(crate) distances: Vec<u8>,
    /// One bit per voxel: whether a sample between it and its neighbours up each axis could
    /// show anything ([`Leaps::voxel_shows`]).
    voxel_bits: Vec<u64>,
    /// The boxes (index space, low and high corners) of the groups of `GROUP`^3 cells in which
    /// anything shows, for bounding each ray before it is cast ([`crate::ray_bounds`]).
    pub(crate) boxes: Vec<([f32; 3], [f32; 3])>,
    /// Words of `voxel_bits` per slice.
    words_per_slice: usize,
    columns: usize,
}

impl Leaps {
    /// Whether a sample in the cell of voxels from (x, y, z) to (x + 1, y + 1, z + 1) could
    /// show anything.
    #[inline]
    pub(crate) fn voxel_shows(&self, x: usize, y: usize, z: usize) -> bool {
        let bit = y * self.columns + x;
        let word = self.voxel_bits[z * self.words_per_slice + bit / 64];
        (word >> (bit % 64)) & 1 == 1
    }
}

impl EmptySpace {
    /// The cells' value ranges; non-finite voxels count as `low`, as the renderer reads them.
    pub fn of(volume: &Volume, low: f32) -> EmptySpace {
        let (nx, ny, nz) = (volume.columns, volume.rows, volume.slices);
        let shifts = cell_shifts(volume.spacing);
        let side = shifts.map(|s| 1usize << s);
        let counts = [
            nx.div_ceil(side[0]),
            ny.div_ceil(side[1]),
            nz.div_ceil(side[2]),
        ];
        let ranges = (0..counts[0] * counts[1] * counts[2])
            .into_par_iter()
            .map(|cell| {
                let (cx, cy, cz) = (
                    cell % counts[0],
                    cell / counts[0] % counts[1],
                    cell / (counts[0] * counts[1]),
                );
                let (mut lowest, mut highest) = (f32::MAX, f32::MIN);
                for z in cz * side[2]..=((cz + 1) * side[2]).min(nz - 1) {
                    for y in cy * side[1]..=((cy + 1) * side[1]).min(ny - 1) {
                        let row = (z * ny + y) * nx;
                        let last = ((cx + 1) * side[0]).min(nx - 1);
                        for &v in &volume.values[row + cx * side[0]..=row + last] {
                            let v = if v.is_finite() { v } else { low };
                            lowest = lowest.min(v);
                            highest = highest.max(v);
                        }
                    }
                }
                (lowest, highest)
            })
            .collect();
        EmptySpace {
            counts,
            shifts,
            ranges,
            leaps: Default::default(),
        }
    }

    /// Cells along the columns, rows and slices.
    pub(crate) fn counts(&self) -> [usize; 3] {
        self.counts
    }

    /// Voxel index to cell index along each axis: `>> shifts()[axis]`.
    pub(crate) fn shifts(&self) -> [u32; 3] {
        self.shifts
    }

    /// Memory held.
    pub fn bytes(&self) -> usize {
        let made = self.leaps.iter().filter_map(|l| l.get());
        self.ranges.len() * std::mem::size_of::<(f32, f32)>()
            + made
                .map(|l| {
                    l.distances.len()
                        + l.voxel_bits.len() * 8
                        + l.boxes.len() * std::mem::size_of::<([f32; 3], [f32; 3])>()
                })
                .sum::<usize>()
    }

    /// For the preset numbered `preset` of `volume` (the one these ranges are of), where rays
    /// may leap and skip, given whether a preset `shows_any` value of a range. Made once per
    /// preset.
    pub(crate) fn leaps(
        &self,
        preset: usize,
        volume: &Volume,
        low: f32,
        shows_any: impl Fn(f32, f32) -> bool + Sync,
    ) -> &Leaps {
        self.leaps[preset].get_or_init(|| {
            let shown: Vec<bool> = self
                .ranges
                .iter()
                .map(|&(low, high)| shows_any(low, high))
                .collect();
            let columns = volume.columns;
            let words_per_slice = (columns * volume.rows).div_ceil(64);
            Leaps {
                boxes: group_boxes(&shown, self.counts, self.shifts, volume),
                distances: chessboard_distances(&shown, self.counts),
                voxel_bits: voxel_bits(volume, low, words_per_slice, &shows_any),
                words_per_slice,
                columns,
            }
        })
    }

    /// Marks every cell and voxel of `volume` as possibly showing anything, whatever the
    /// preset, and the whole volume as one box: no bounds, leaps or skips (for comparing
    /// pictures; the box is written here, not by [`group_boxes`], so that a fault there
    /// shows).
    #[cfg(test)]
    pub(crate) fn without_leaps(&self, volume: &Volume) -> EmptySpace {
        let words_per_slice = (volume.columns * volume.rows).div_ceil(64);
        let everything = Leaps {
            boxes: vec![(
                [-0.5; 3],
                [
                    volume.columns as f32 - 0.5,
                    volume.rows as f32 - 0.5,
                    volume.slices as f32 - 0.5,
                ],
            )],
            distances: vec![0; self.ranges.len()],
            voxel_bits: vec![u64::MAX; words_per_slice * volume.slices],
            words_per_slice,
            columns: volume.columns,
        };
        EmptySpace {
            counts: self.counts,
            shifts: self.shifts,
            ranges: self.ranges.clone(),
            leaps: std::array::from_fn(|_| OnceLock::from(everything.clone())),
        }
    }
}

/// The boxes of the groups of cells in which any cell is `shown`: the positions (index units)
/// whose samples fall in the group's cells, widened by half a voxel (a sample beyond the outer
/// voxels' centres reads them).
fn group_boxes(
    shown: &[bool],
    counts: [usize; 3],
    shifts: [u32; 3],
    volume: &Volume,
) -> Vec<([f32; 3], [f32; 3])> {
    let groups = counts.map(|n| n.div_ceil(GROUP));
    let mut any = vec![false; groups[0] * groups[1] * groups[2]];
    for (cell, _) in shown.iter().enumerate().filter(|(_, shown)| **shown) {
        let (x, y, z) = (
            cell % counts[0],
            cell / counts[0] % counts[1],
            cell / (counts[0] * counts[1]),
        );
        any[((z / GROUP) * groups[1] + y / GROUP) * groups[0] + x / GROUP] = true;
    }
    let sizes = [volume.columns, volume.rows, volume.slices];
    let side = shifts.map(|s| GROUP << s);
    any.iter()
        .enumerate()
        .filter(|(_, any)| **any)
        .map(|(group, _)| {
            let at = [
                group % groups[0],
                group / groups[0] % groups[1],
                group / (groups[0] * groups[1]),
            ];
            let low = std::array::from_fn(|k| (at[k] * side[k]) as f32 - 0.5);
            let high =
                std::array::from_fn(|k| ((at[k] + 1) * side[k]).min(sizes[k] - 1) as f32 + 0.5);
            (low, high)
        })
        .collect()
}

/// Per slice, one bit per voxel: whether the range of it and its neighbours up each axis (the
/// last voxel along an axis its own neighbour, as the renderer's bricks repeat it) shows
/// anything.
fn voxel_bits(
    volume: &Volume,
    low: f32,
    words_per_slice: usize,
    shows_any: &(impl Fn(f32, f32) -> bool + Sync),
) -> Vec<u64> {
    let (nx, ny, nz) = (volume.columns, volume.rows, volume.slices);
    let mut bits = vec![0u64; words_per_slice * nz];
    let value = |i: usize| {
        let v = volume.values[i];
        if v.is_finite() {
            v
        } else {
            low
        }
    };
    bits.par_chunks_mut(words_per_slice)
        .enumerate()
        .for_each(|(z, slice)| {
            let z1 = (z + 1).min(nz - 1);
            let mut lowest = vec![0f32; nx];
            let mut highest = vec![0f32; nx];
            for y in 0..ny {
                let y1 = (y + 1).min(ny - 1);
                // Each column's range over the four rows the cell spans, then pairs of columns.
                for x in 0..nx {
                    let four = [
                        value((z * ny + y) * nx + x),
                        value((z * ny + y1) * nx + x),
                        value((z1 * ny + y) * nx + x),
                        value((z1 * ny + y1) * nx + x),
                    ];
                    lowest[x] = four.iter().copied().fold(f32::MAX, f32::min);
                    highest[x] = four.iter().copied().fold(f32::MIN, f32::max);
                }
                for x in 0..nx {
                    let x1 = (x + 1).min(nx - 1);
                    if shows_any(lowest[x].min(lowest[x1]), highest[x].max(highest[x1])) {
                        let bit = y * nx + x;
                        slice[bit / 64] |= 1 << (bit % 64);
                    }
                }
            }
        });
    bits
}

/// Exact chessboard distances on a grid, in two raster passes over the 26 neighbours
/// (Rosenfeld and Pfaltz): forward from the 13 neighbours already visited, then backward.
fn chessboard_distances(shown: &[bool], counts: [usize; 3]) -> Vec<u8> {
    let [nx, ny, nz] = counts.map(|n| n as isize);
    let mut distance: Vec<u8> = shown.iter().map(|&s| if s { 0 } else { FAR }).collect();
    let index = |x: isize, y: isize, z: isize| ((z * ny + y) * nx + x) as usize;
    // The neighbours before a cell in raster order (z, then y, then x ascending).
    let mut before = Vec::with_capacity(13);
    for dz in -1isize..=0 {
        for dy in -1isize..=1 {
            for dx in -1isize..=1 {
                if dz < 0 || dy < 0 || (dy == 0 && dx < 0) {
                    before.push((dx, dy, dz));
                }
            }
        }
    }
    let mut pass = |order: &mut dyn Iterator<Item = (isize, isize, isize)>, sign: isize| {
        for (x, y, z) in order {
            let here = index(x, y, z);
            if distance[here] == 0 {
                continue;
            }
            let mut best = distance[here];
            for &(dx, dy, dz) in &before {
                let (qx, qy, qz) = (x + sign * dx, y + sign * dy, z + sign * dz);
                if (0..nx).contains(&qx) && (0..ny).contains(&qy) && (0..nz).contains(&qz) {
                    best = best.min(distance[index(qx, qy, qz)].saturating_add(1));
                }
            }
            distance[here] = best;
        }
    };
    let raster = move || {
        (0..nz).flat_map(move |z| (0..ny).flat_map(move |y| (0..nx).map(move |x| (x, y, z))))
    };
    pass(&mut raster(), 1);
    pass(
        &mut raster().map(|(x, y, z)| (nx - 1 - x, ny - 1 - y, nz - 1 - z)),
        -1,
    );
    distance
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_chessboard_distances_to_the_nearest_shown_cell() {
        let counts = [9, 7, 5];
        let mut shown = vec![false; 9 * 7 * 5];
        let marked = [(1usize, 1usize, 1usize), (7, 5, 3), (4, 0, 4)];
        for &(x, y, z) in &marked {
            shown[(z * 7 + y) * 9 + x] = true;
        }
        let distance = chessboard_distances(&shown, counts);
        for z in 0..5usize {
            for y in 0..7usize {
                for x in 0..9usize {
                    let expected = marked
                        .iter()
                        .map(|&(a, b, c)| x.abs_diff(a).max(y.abs_diff(b)).max(z.abs_diff(c)))
                        .min()
                        .unwrap();
                    assert_eq!(
                        usize::from(distance[(z * 7 + y) * 9 + x]),
                        expected,
                        "{x},{y},{z}"
                    );
                }
            }
        }
    }

    #[test]
    fn cells_are_about_as_long_every_way_in_millimetres() {
        assert_eq!(cell_shifts([1.0; 3]), [3, 3, 3]);
        // A chest CT: 0.7 mm pixels, 2.5 mm slices: cells of 8 x 8 x 2 voxels.
        assert_eq!(cell_shifts([0.703, 0.703, 2.5]), [3, 3, 1]);
        assert_eq!(cell_shifts([0.5, 0.5, 5.0]), [3, 3, 0]);
        assert_eq!(cell_shifts([2.0, 1.0, 1.0]), [2, 3, 3]);
        // Nonsense spacing still gives cells.
        assert_eq!(cell_shifts([0.0, 1.0, f64::NAN]).len(), 3);
    }

    #[test]
    fn nothing_shown_is_far_everywhere() {
        let distance = chessboard_distances(&[false; 8], [2, 2, 2]);
        assert!(distance.iter().all(|&d| d == FAR));
    }
}
