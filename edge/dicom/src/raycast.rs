//! Volume rendering by ray casting on the CPU: the edge turns a CT or MR volume into a picture
//! seen from any direction, so that a browser (a phone on the ward, a PC at the hub) receives
//! a JPEG and never a voxel.
//!
//! Each output pixel casts one ray through the volume; samples at a fixed distance along it
//! are interpolated (trilinear), mapped to colour and opacity by a transfer function (presets
//! for bone, soft tissue, lung and vessels, defined in HU per millimetre of tissue) and
//! composited front to back. Two things keep it fast enough for a 2-core box: rays stop once
//! they are opaque, and they leap over blocks of 8 x 8 x 8 voxels whose value range the
//! transfer function shows nothing of (the ranges are computed once per volume). A cropping box
//! (six clip planes along the volume's axes) cuts away what hides the inside.

use rayon::prelude::*;

use crate::volume::{dot, Vector, Volume};

/// Transfer-function presets, named as radiographers know them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Bone opaque and white; soft tissue and air transparent.
    #[default]
    Bone,
    /// Skin and muscle translucent red, fat yellowish, bone white.
    SoftTissue,
    /// Lung parenchyma and airways: the air-filled structures, tissue around faint.
    Lung,
    /// Contrast-filled vessels red over faint bone (CT angiography).
    Vessels,
}

/// One control point of a transfer function: at `value` HU, this colour and this opacity per
/// millimetre of tissue; linear in between, the end points' beyond them.
type ControlPoint = (f32, [f32; 3], f32);

impl Preset {
    fn points(self) -> &'static [ControlPoint] {
        match self {
            Preset::Bone => &[
                (150.0, [0.9, 0.6, 0.4], 0.0),
                (300.0, [1.0, 0.9, 0.8], 0.25),
                (1000.0, [1.0, 1.0, 1.0], 0.9),
                (3071.0, [1.0, 1.0, 1.0], 0.9),
            ],
            Preset::SoftTissue => &[
                (-500.0, [0.7, 0.4, 0.3], 0.0),
                (-100.0, [0.9, 0.8, 0.5], 0.015),
                (20.0, [0.8, 0.3, 0.25], 0.04),
                (80.0, [0.9, 0.45, 0.35], 0.08),
                (300.0, [1.0, 0.95, 0.9], 0.4),
                (3071.0, [1.0, 1.0, 1.0], 0.8),
            ],
            Preset::Lung => &[
                (-1000.0, [0.3, 0.5, 0.9], 0.0),
                (-900.0, [0.4, 0.6, 1.0], 0.0),
                (-700.0, [0.6, 0.75, 1.0], 0.03),
                (-400.0, [0.9, 0.6, 0.5], 0.12),
                (-200.0, [0.9, 0.5, 0.4], 0.0),
            ],
            Preset::Vessels => &[
                (120.0, [0.8, 0.1, 0.1], 0.0),
                (200.0, [0.9, 0.2, 0.15], 0.3),
                (400.0, [1.0, 0.6, 0.5], 0.6),
                (700.0, [1.0, 1.0, 1.0], 0.2),
                (3071.0, [1.0, 1.0, 1.0], 0.2),
            ],
        }
    }

    /// Colour and opacity per millimetre at `value`.
    fn at(self, value: f32) -> ([f32; 3], f32) {
        let points = self.points();
        let (first, last) = (points[0], points[points.len() - 1]);
        // Beyond the ends the end points hold (as VTK's transfer functions do): bone and metal
        // above the last point stay opaque.
        if value <= first.0 {
            return (first.1, first.2);
        }
        if value >= last.0 {
            return (last.1, last.2);
        }
        for pair in points.windows(2) {
            let ((v0, c0, a0), (v1, c1, a1)) = (pair[0], pair[1]);
            if value <= v1 {
                let t = (value - v0) / (v1 - v0).max(f32::EPSILON);
                let colour = [
                    c0[0] + (c1[0] - c0[0]) * t,
                    c0[1] + (c1[1] - c0[1]) * t,
                    c0[2] + (c1[2] - c0[2]) * t,
                ];
                return (colour, a0 + (a1 - a0) * t);
            }
        }
        ([0.0; 3], 0.0)
    }
}

/// Entries of a transfer function's lookup table, spanning the volume's value range.
const TABLE_SIZE: usize = 4096;

/// A preset tabulated for one volume and one sample distance: premultiplied colour and the
/// opacity of one sample, and which table ranges show anything.
struct TransferTable {
    entries: Vec<[f32; 4]>,
    /// `visible_before[i]`: how many entries below `i` have any opacity.
    visible_before: Vec<u32>,
    low: f32,
    per_entry: f32,
}

impl TransferTable {
    fn new(preset: Preset, low: f32, high: f32, step_mm: f64) -> TransferTable {
        let per_entry = ((high - low) / (TABLE_SIZE - 1) as f32).max(f32::EPSILON);
        let entries: Vec<[f32; 4]> = (0..TABLE_SIZE)
            .map(|i| {
                let (colour, per_mm) = preset.at(low + i as f32 * per_entry);
                // Opacity per millimetre, corrected to the sample distance.
                let alpha = 1.0 - (1.0 - per_mm.clamp(0.0, 1.0)).powf(step_mm as f32);
                [
                    colour[0] * alpha,
                    colour[1] * alpha,
                    colour[2] * alpha,
                    alpha,
                ]
            })
            .collect();
        let mut visible_before = Vec::with_capacity(TABLE_SIZE + 1);
        let mut count = 0u32;
        for entry in &entries {
            visible_before.push(count);
            count += u32::from(entry[3] > 0.0);
        }
        visible_before.push(count);
        TransferTable {
            entries,
            visible_before,
            low,
            per_entry,
        }
    }

    fn index(&self, value: f32) -> usize {
        (((value - self.low) / self.per_entry) as isize).clamp(0, TABLE_SIZE as isize - 1) as usize
    }

    /// Whether any value in `low..=high` is shown.
    fn shows_any(&self, low: f32, high: f32) -> bool {
        let (a, b) = (self.index(low), self.index(high));
        self.visible_before[b + 1] > self.visible_before[a]
    }
}

/// Side of the blocks the renderer leaps over and reads by.
const BLOCK: usize = 8;
/// Blocks a side of the groups a ray leaps over at once when all their blocks are empty.
const GROUP: usize = 4;

/// Side of a brick as stored: a block and the next voxel along every axis (what trilinear
/// sampling inside the block reads), so that a sample never leaves its brick.
const APRON: usize = BLOCK + 1;
const BRICK: usize = APRON * APRON * APRON;

/// The volume as the renderer reads it: in bricks of `BLOCK`^3 voxels (each with its apron),
/// so that a ray's samples stay within a few kilobytes of memory whichever way it goes (rows
/// of a plain volume are kilobytes apart, its slices megabytes), with the value range of every
/// block, for leaping over the ones a preset shows nothing of. Values are 16-bit steps of
/// `unit` above `low` (a CT's HU to 1/16): half the memory of the volume's own floats.
#[derive(Debug, Clone)]
pub struct BlockRanges {
    counts: [usize; 3],
    ranges: Vec<(f32, f32)>,
    low: f32,
    high: f32,
    unit: f32,
    bricks: Vec<u16>,
}

impl BlockRanges {
    pub fn of(volume: &Volume) -> BlockRanges {
        let counts = [
            volume.columns.div_ceil(BLOCK),
            volume.rows.div_ceil(BLOCK),
            volume.slices.div_ceil(BLOCK),
        ];
        let (nx, ny, nz) = (volume.columns, volume.rows, volume.slices);
        let finite = |v: &f32| v.is_finite();
        let low = volume
            .values
            .iter()
            .copied()
            .filter(finite)
            .fold(f32::MAX, f32::min);
        let high = volume
            .values
            .iter()
            .copied()
            .filter(finite)
            .fold(f32::MIN, f32::max);
        let (low, high) = if low <= high { (low, high) } else { (0.0, 0.0) };
        let unit = if high > low {
            (high - low) / f32::from(u16::MAX)
        } else {
            1.0
        };
        let mut bricks = vec![0u16; counts[0] * counts[1] * counts[2] * BRICK];
        let ranges: Vec<(f32, f32)> = bricks
            .par_chunks_mut(BRICK)
            .enumerate()
            .map(|(b, brick)| {
                let (bx, by, bz) = (
                    b % counts[0],
                    b / counts[0] % counts[1],
                    b / (counts[0] * counts[1]),
                );
                let (mut lowest, mut highest) = (f32::MAX, f32::MIN);
                for (lz, plane) in brick.chunks_mut(APRON * APRON).enumerate() {
                    let z = (bz * BLOCK + lz).min(nz - 1);
                    for (ly, row) in plane.chunks_mut(APRON).enumerate() {
                        let y = (by * BLOCK + ly).min(ny - 1);
                        let source = (z * ny + y) * nx;
                        for (lx, out) in row.iter_mut().enumerate() {
                            let x = (bx * BLOCK + lx).min(nx - 1);
                            let v = volume.values[source + x];
                            let v = if v.is_finite() { v } else { low };
                            lowest = lowest.min(v);
                            highest = highest.max(v);
                            *out =
                                ((v - low) / unit).round().clamp(0.0, f32::from(u16::MAX)) as u16;
                        }
                    }
                }
                (lowest, highest)
            })
            .collect();
        BlockRanges {
            counts,
            ranges,
            low,
            high,
            unit,
            bricks,
        }
    }

    /// Memory the bricks hold.
    pub fn bytes(&self) -> usize {
        self.bricks.len() * 2 + self.ranges.len() * 8
    }
}

/// What to render: the volume seen from a direction, a preset, a cropping box.
#[derive(Debug, Clone, Copy)]
pub struct VolumeView {
    pub preset: Preset,
    /// Turn about the patient's head-foot axis, degrees: 0 sees the patient from the front
    /// (the patient's right on the picture's left), 90 from the patient's left.
    pub azimuth_degrees: f64,
    /// Tilt about the picture's horizontal axis, degrees: positive looks from above the head.
    pub elevation_degrees: f64,
    /// 1 fits the whole volume; 2 shows half of it twice as large.
    pub zoom: f64,
    /// The cropping box as fractions (0 to 1) of the volume's extent along its columns, rows
    /// and slices: low and high for each.
    pub crop: [[f64; 2]; 3],
    /// Distance between samples along a ray, mm (0: the volume's smallest voxel spacing).
    pub sample_mm: f64,
    /// Twice the sample distance: a quick frame while the viewer drags.
    pub draft: bool,
    /// Lambertian shading from a light behind the viewer, with gradients as surface normals.
    pub shade: bool,
    pub width: usize,
    pub height: usize,
}

impl Default for VolumeView {
    fn default() -> Self {
        VolumeView {
            preset: Preset::Bone,
            azimuth_degrees: 0.0,
            elevation_degrees: 0.0,
            zoom: 1.0,
            crop: [[0.0, 1.0]; 3],
            sample_mm: 0.0,
            draft: false,
            shade: true,
            width: 512,
            height: 512,
        }
    }
}

/// Samples for one picture, at most: beyond it the sample distance grows.
pub const MAX_RAY_WORK: usize = 1 << 28;

impl VolumeView {
    /// The picture's right and down, and the viewing direction, in patient space (LPS).
    pub fn axes(&self) -> (Vector, Vector, Vector) {
        let (a, e) = (
            self.azimuth_degrees.to_radians(),
            self.elevation_degrees.to_radians(),
        );
        // From the front: right is the patient's left (+x), down is the feet (-z), looking
        // towards the back (+y); then turned about z by the azimuth and tilted by the elevation.
        let right = [a.cos(), a.sin(), 0.0];
        let ahead = [-a.sin(), a.cos(), 0.0];
        let down0 = [0.0, 0.0, -1.0];
        // Looking from above the head (positive elevation) the rays go down towards the feet.
        let down = [
            down0[0] * e.cos() - ahead[0] * e.sin(),
            down0[1] * e.cos() - ahead[1] * e.sin(),
            down0[2] * e.cos() - ahead[2] * e.sin(),
        ];
        let direction = [
            ahead[0] * e.cos() + down0[0] * e.sin(),
            ahead[1] * e.cos() + down0[1] * e.sin(),
            ahead[2] * e.cos() + down0[2] * e.sin(),
        ];
        (right, down, direction)
    }
}

/// An RGB picture, row by row.
#[derive(Debug, Clone)]
pub struct RenderedVolume {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    /// The sample distance used, mm (larger than asked when the work bound required it).
    pub sample_mm: f64,
}

/// Renders `view` of `volume`; `blocks` are the volume's block ranges ([`Volume::blocks`]).
pub fn render_volume(volume: &Volume, blocks: &BlockRanges, view: &VolumeView) -> RenderedVolume {
    let (w, h) = (view.width.max(1), view.height.max(1));
    let spacing = volume.spacing;
    let extents = [
        (volume.columns - 1) as f64 * spacing[0],
        (volume.rows - 1) as f64 * spacing[1],
        (volume.slices - 1) as f64 * spacing[2],
    ];
    let diagonal = dot(extents, extents).sqrt().max(1e-3);
    let mut step = if view.sample_mm > 0.0 {
        view.sample_mm
    } else {
        spacing.iter().copied().fold(f64::MAX, f64::min)
    };
    if view.draft {
        step *= 2.0;
    }
    // Bounded work whatever the spacing or size: at most MAX_RAY_WORK samples a picture.
    let most_per_ray = (MAX_RAY_WORK / (w * h)).max(2) as f64;
    step = step.max(diagonal / (most_per_ray - 1.0));
    let table = TransferTable::new(view.preset, blocks.low, blocks.high, step);
    let visible: Vec<bool> = blocks
        .ranges
        .iter()
        .map(|(low, high)| table.shows_any(*low, *high))
        .collect();

    let groups = blocks.counts.map(|n| n.div_ceil(GROUP));
    let mut group_visible = vec![false; groups[0] * groups[1] * groups[2]];
    for (index, shown) in visible.iter().enumerate() {
        if *shown {
            let [cx, cy, _] = blocks.counts;
            let (bx, by, bz) = (index % cx, index / cx % cy, index / (cx * cy));
            group_visible[((bz / GROUP) * groups[1] + by / GROUP) * groups[0] + bx / GROUP] = true;
        }
    }
    // Everything in voxel index space: a patient vector v is (v.row/sx, v.col/sy, v.normal/sz).
    let to_index = |v: Vector| {
        [
            dot(v, volume.row_direction) / spacing[0],
            dot(v, volume.column_direction) / spacing[1],
            dot(v, volume.normal) / spacing[2],
        ]
    };
    let (right, down, direction) = view.axes();
    let (right, down, direction) = (to_index(right), to_index(down), to_index(direction));
    let centre = [
        (volume.columns - 1) as f64 / 2.0,
        (volume.rows - 1) as f64 / 2.0,
        (volume.slices - 1) as f64 / 2.0,
    ];
    let sizes = [volume.columns, volume.rows, volume.slices];
    // The box reaches half a voxel beyond the outer voxels' centres (each voxel is a cell);
    // samples there take the outer voxels' values.
    let mut low = [0.0; 3];
    let mut high = [0.0; 3];
    for axis in 0..3 {
        let n = sizes[axis] as f64;
        let [a, b] = view.crop[axis];
        let (a, b) = (a.clamp(0.0, 1.0), b.clamp(0.0, 1.0));
        low[axis] = a.min(b) * n - 0.5;
        high[axis] = a.max(b) * n - 0.5;
    }
    let pixel_mm = diagonal / (w.min(h) as f64) / view.zoom.clamp(0.1, 20.0);
    let (half_w, half_h) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    // Light from behind the viewer, in index space scaled back to mm per axis for the normals.
    let light = {
        let l = view.axes().2;
        let l = [
            -dot(l, volume.row_direction),
            -dot(l, volume.column_direction),
            -dot(l, volume.normal),
        ];
        let n = dot(l, l).sqrt().max(1e-9);
        [(l[0] / n) as f32, (l[1] / n) as f32, (l[2] / n) as f32]
    };
    let marcher = Marcher {
        volume,
        blocks,
        visible: &visible,
        group_visible: &group_visible,
        table: &table,
        light,
        shade: view.shade,
    };

    let mut rgb = vec![0u8; w * h * 3];
    rgb.par_chunks_mut(w * 3).enumerate().for_each(|(y, row)| {
        for (x, out) in row.chunks_mut(3).enumerate() {
            let (dx, dy) = (
                (x as f64 - half_w) * pixel_mm,
                (y as f64 - half_h) * pixel_mm,
            );
            let through = [
                centre[0] + right[0] * dx + down[0] * dy,
                centre[1] + right[1] * dx + down[1] * dy,
                centre[2] + right[2] * dx + down[2] * dy,
            ];
            // Where the ray (through + s * direction, s in mm) is inside the box.
            let (mut enter, mut exit) = (f64::MIN, f64::MAX);
            for axis in 0..3 {
                let d = direction[axis];
                if d.abs() < 1e-12 {
                    if through[axis] < low[axis] || through[axis] > high[axis] {
                        enter = f64::MAX;
                    }
                    continue;
                }
                let (a, b) = (
                    (low[axis] - through[axis]) / d,
                    (high[axis] - through[axis]) / d,
                );
                enter = enter.max(a.min(b));
                exit = exit.min(a.max(b));
            }
            if enter > exit {
                continue;
            }
            // Samples on planes shared by every ray (multiples of the step from the centre),
            // so that neighbouring rays agree and no wood-grain rings appear.
            let first = (enter / step).ceil();
            let count = ((exit / step).floor() - first + 1.0).max(0.0) as usize;
            let start = [
                (through[0] + direction[0] * first * step) as f32,
                (through[1] + direction[1] * first * step) as f32,
                (through[2] + direction[2] * first * step) as f32,
            ];
            let delta = [
                (direction[0] * step) as f32,
                (direction[1] * step) as f32,
                (direction[2] * step) as f32,
            ];
            let colour = marcher.march(start, delta, count);
            for (channel, value) in out.iter_mut().zip(colour) {
                *channel = (value.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
            }
        }
    });
    RenderedVolume {
        width: w,
        height: h,
        rgb,
        sample_mm: step,
    }
}

/// What a ray needs to walk through the volume.
struct Marcher<'a> {
    volume: &'a Volume,
    blocks: &'a BlockRanges,
    visible: &'a [bool],
    /// Per group of `GROUP`^3 blocks: whether any of them shows anything.
    group_visible: &'a [bool],
    table: &'a TransferTable,
    light: [f32; 3],
    shade: bool,
}

/// Opacity at which a ray stops: what lies behind shows by less than one grey level.
const OPAQUE: f32 = 0.995;

impl Marcher<'_> {
    /// Composites one ray front to back: `count` samples from `start`, `delta` apart (voxel
    /// index units). Positions in f32: an index below 65,536 keeps a 1/256-voxel precision.
    fn march(&self, start: [f32; 3], delta: [f32; 3], count: usize) -> [f32; 3] {
        let v = self.volume;
        let (nx, ny, nz) = (v.columns, v.rows, v.slices);
        let bricks = &self.blocks.bricks[..];
        // The largest position (index units) inside the volume along each axis.
        let top = [(nx - 1) as f32, (ny - 1) as f32, (nz - 1) as f32];
        // Steps per index unit along each axis, for leaps (infinite along an axis not crossed).
        let per_unit = delta.map(|d| {
            if d.abs() > 1e-9 {
                1.0 / d
            } else {
                f32::INFINITY
            }
        });
        let [bx_count, by_count, _] = self.blocks.counts;
        let (gx_count, gy_count) = (bx_count.div_ceil(GROUP), by_count.div_ceil(GROUP));
        // Gradients per mm from differences of brick units.
        let gradient_scale = v.spacing.map(|s| self.blocks.unit / s as f32);
        // Table entry of a value in brick units.
        let to_entry = self.blocks.unit / self.table.per_entry;
        let entry_offset = (self.blocks.low - self.table.low) / self.table.per_entry;
        let mut colour = [0.0f32; 3];
        let mut alpha = 0.0f32;
        let mut i = 0usize;
        while i < count {
            let s = i as f32;
            let x = (start[0] + delta[0] * s).clamp(0.0, top[0]);
            let y = (start[1] + delta[1] * s).clamp(0.0, top[1]);
            let z = (start[2] + delta[2] * s).clamp(0.0, top[2]);
            let (x0, y0, z0) = (x as usize, y as usize, z as usize);
            let (bx, by, bz) = (x0 / BLOCK, y0 / BLOCK, z0 / BLOCK);
            let block = (bz * by_count + by) * bx_count + bx;
            if !self.visible[block] {
                // Leap to the first sample outside this block, or outside its whole group of
                // blocks when none of them shows anything (rays through air leap far).
                let (gx, gy, gz) = (bx / GROUP, by / GROUP, bz / GROUP);
                let group_empty = !self.group_visible[(gz * gy_count + gy) * gx_count + gx];
                let (size, cells) = if group_empty {
                    (BLOCK * GROUP, [gx, gy, gz])
                } else {
                    (BLOCK, [bx, by, bz])
                };
                let mut leap = f32::INFINITY;
                for (axis, (position, cell)) in [x, y, z].into_iter().zip(cells).enumerate() {
                    let unit = per_unit[axis];
                    if unit.is_finite() {
                        let edge = if unit > 0.0 {
                            ((cell + 1) * size) as f32 - position
                        } else {
                            (cell * size) as f32 - position
                        };
                        leap = leap.min(edge * unit);
                    }
                }
                // At least one sample on; never past the ray's end (a leap may be huge).
                i = i.saturating_add(leap.ceil().clamp(1.0, count as f32) as usize);
                continue;
            }
            let (fx, fy, fz) = (x - x0 as f32, y - y0 as f32, z - z0 as f32);
            // The cell's eight corners, all in this block's brick (its apron holds the far ones).
            let at = block * BRICK + ((z0 % BLOCK) * APRON + (y0 % BLOCK)) * APRON + (x0 % BLOCK);
            let corner = |offset: usize| f32::from(bricks[at + offset]);
            const DY: usize = APRON;
            const DZ: usize = APRON * APRON;
            let (c000, c100, c010, c110) = (corner(0), corner(1), corner(DY), corner(DY + 1));
            let (c001, c101, c011, c111) = (
                corner(DZ),
                corner(DZ + 1),
                corner(DZ + DY),
                corner(DZ + DY + 1),
            );
            let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
            let near = lerp(lerp(c000, c100, fx), lerp(c010, c110, fx), fy);
            let far = lerp(lerp(c001, c101, fx), lerp(c011, c111, fx), fy);
            let value = lerp(near, far, fz);
            let index =
                ((value * to_entry + entry_offset) as isize).clamp(0, TABLE_SIZE as isize - 1);
            let entry = self.table.entries[index as usize];
            if entry[3] > 0.0 {
                let light = if self.shade {
                    // The gradient of the trilinear interpolant itself, per mm.
                    let g = [
                        lerp(
                            lerp(c100 - c000, c110 - c010, fy),
                            lerp(c101 - c001, c111 - c011, fy),
                            fz,
                        ) * gradient_scale[0],
                        lerp(
                            lerp(c010 - c000, c110 - c100, fx),
                            lerp(c011 - c001, c111 - c101, fx),
                            fz,
                        ) * gradient_scale[1],
                        (far - near) * gradient_scale[2],
                    ];
                    let length = (g[0] * g[0] + g[1] * g[1] + g[2] * g[2]).sqrt();
                    if length > 1e-3 {
                        let lambert =
                            ((g[0] * self.light[0] + g[1] * self.light[1] + g[2] * self.light[2])
                                / length)
                                .abs();
                        0.3 + 0.7 * lambert
                    } else {
                        1.0
                    }
                } else {
                    1.0
                };
                let remaining = 1.0 - alpha;
                colour[0] += remaining * entry[0] * light;
                colour[1] += remaining * entry[1] * light;
                colour[2] += remaining * entry[2] * light;
                alpha += remaining * entry[3];
                if alpha >= OPAQUE {
                    break;
                }
            }
            i += 1;
        }
        colour
    }
}

/// The picture as a JPEG.
pub fn encode_rgb(rendered: &RenderedVolume) -> crate::Result<Vec<u8>> {
    let mut jpeg = Vec::new();
    jpeg_encoder::Encoder::new(&mut jpeg, 88)
        .encode(
            &rendered.rgb,
            rendered.width as u16,
            rendered.height as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .map_err(|e| crate::DicomError::Unreadable {
            what: "a volume rendering".into(),
            reason: e.to_string(),
        })?;
    Ok(jpeg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 40 mm cube of "bone" (1000 HU) in a 64^3 volume of water at 1 mm.
    fn cube() -> Volume {
        let n = 64;
        let mut values = vec![0.0f32; n * n * n];
        for z in 12..52 {
            for y in 12..52 {
                for x in 12..52 {
                    values[(z * n + y) * n + x] = 1000.0;
                }
            }
        }
        Volume {
            columns: n,
            rows: n,
            slices: n,
            values,
            origin: [0.0; 3],
            row_direction: [1.0, 0.0, 0.0],
            column_direction: [0.0, 1.0, 0.0],
            normal: [0.0, 0.0, 1.0],
            spacing: [1.0; 3],
            blocks: Default::default(),
        }
    }

    fn lit(rendered: &RenderedVolume) -> usize {
        rendered.rgb.chunks(3).filter(|p| p[0] > 128).count()
    }

    #[test]
    fn the_bone_cube_fills_its_share_of_the_picture_from_any_side() {
        let volume = cube();
        let blocks = BlockRanges::of(&volume);
        for (azimuth, elevation) in [(0.0, 0.0), (90.0, 0.0), (0.0, 90.0)] {
            let view = VolumeView {
                azimuth_degrees: azimuth,
                elevation_degrees: elevation,
                width: 109,
                height: 109,
                ..VolumeView::default()
            };
            let rendered = render_volume(&volume, &blocks, &view);
            // The picture spans the diagonal (109 mm, 1 mm a pixel): the cube's face is 40 x 40.
            let share = lit(&rendered) as f64 / (40.0 * 40.0);
            assert!(
                (0.9..1.1).contains(&share),
                "{azimuth}/{elevation}: {share}"
            );
        }
    }

    #[test]
    fn the_view_turns_as_its_name_says() {
        let close = |a: Vector, b: Vector| (0..3).all(|i| (a[i] - b[i]).abs() < 1e-9);
        let view = |azimuth_degrees, elevation_degrees| VolumeView {
            azimuth_degrees,
            elevation_degrees,
            ..VolumeView::default()
        };
        // From the front the rays go towards the back (+y in LPS), the head up.
        let (right, down, ahead) = view(0.0, 0.0).axes();
        assert!(close(right, [1.0, 0.0, 0.0]) && close(down, [0.0, 0.0, -1.0]));
        assert!(close(ahead, [0.0, 1.0, 0.0]));
        // From above the head they go towards the feet; the view went over the head from the
        // front, so the face is at the bottom of the picture.
        let (_, down, ahead) = view(0.0, 90.0).axes();
        assert!(close(ahead, [0.0, 0.0, -1.0]), "{ahead:?}");
        assert!(close(down, [0.0, -1.0, 0.0]), "{down:?}");
        // From the patient's left (90 degrees) towards the right.
        let (_, _, ahead) = view(90.0, 0.0).axes();
        assert!(close(ahead, [-1.0, 0.0, 0.0]), "{ahead:?}");
    }

    #[test]
    fn values_beyond_the_last_point_stay_opaque() {
        assert_eq!(Preset::Bone.at(5000.0), Preset::Bone.at(3071.0));
        assert!(Preset::Bone.at(5000.0).1 > 0.5);
        assert_eq!(Preset::Bone.at(-2000.0).1, 0.0);
        assert_eq!(Preset::Lung.at(500.0).1, 0.0);
    }

    #[test]
    fn absurd_spacing_or_size_costs_bounded_work() {
        let mut volume = cube();
        volume.spacing = [1e-9, 1e-9, 1e-9];
        let blocks = BlockRanges::of(&volume);
        let rendered = render_volume(&volume, &blocks, &VolumeView::default());
        assert!(rendered.sample_mm > 0.0);
        assert_eq!(rendered.rgb.len(), 512 * 512 * 3);
    }

    #[test]
    fn leaping_over_empty_blocks_changes_nothing() {
        let volume = cube();
        let blocks = BlockRanges::of(&volume);
        let view = VolumeView {
            azimuth_degrees: 30.0,
            elevation_degrees: 20.0,
            width: 96,
            height: 96,
            ..VolumeView::default()
        };
        let leaping = render_volume(&volume, &blocks, &view);
        // Every block marked as showing something: no leaps.
        let mut full = blocks.clone();
        for range in &mut full.ranges {
            *range = (full.low, full.high);
        }
        let walking = render_volume(&volume, &full, &view);
        let differing = leaping
            .rgb
            .iter()
            .zip(&walking.rgb)
            .filter(|(a, b)| a.abs_diff(**b) > 1)
            .count();
        assert_eq!(differing, 0);
        assert!(lit(&leaping) > 1000);
    }

    #[test]
    fn the_cropping_box_cuts_the_cube_away() {
        let volume = cube();
        let blocks = BlockRanges::of(&volume);
        let whole = render_volume(&volume, &blocks, &VolumeView::default());
        let cropped = render_volume(
            &volume,
            &blocks,
            &VolumeView {
                crop: [[0.0, 0.5], [0.0, 1.0], [0.0, 1.0]],
                ..VolumeView::default()
            },
        );
        let (a, b) = (lit(&whole), lit(&cropped));
        assert!(b * 10 > a * 4 && b * 10 < a * 6, "whole {a}, half {b}");
        let nothing = render_volume(
            &volume,
            &blocks,
            &VolumeView {
                preset: Preset::Lung,
                ..VolumeView::default()
            },
        );
        assert_eq!(
            lit(&nothing),
            0,
            "no air in the cube: the lung preset shows nothing"
        );
    }
}
