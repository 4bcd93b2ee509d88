//! Volume rendering by ray casting on the CPU: the edge turns a CT or MR volume into a picture
//! seen from any direction, so that a browser (a phone on the ward, a PC at the hub) receives
//! a JPEG and never a voxel.
//!
//! Each output pixel casts one ray through the volume; samples at a fixed distance along it
//! are interpolated (trilinear), mapped to colour and opacity by a transfer function
//! ([`crate::transfer`]) and composited front to back. What keeps it fast enough for a 2-core
//! box: rays stop once they are opaque; each ray is bounded before it is cast by the boxes of
//! what the preset shows, projected onto the picture ([`crate::ray_bounds`]); within them it
//! leaps by a distance field of cells about as long every way in millimetres and skips, without interpolating, the
//! voxels whose neighbourhood shows nothing ([`crate::empty_space`], both made once per volume
//! and preset); the volume is read from 8^3 bricks, rays in tiles of 8 x 8 pixels so that
//! neighbouring rays share them; sample positions, the trilinear interpolation and the
//! transfer-function lookup are fixed-point integers, so that finding a sample's voxel and
//! entry costs shifts rather than float conversions with their range checks. A cropping box
//! (six clip planes along the volume's axes) cuts away what hides the inside.

use rayon::prelude::*;

use crate::empty_space::{EmptySpace, Leaps};
use crate::ray_bounds::{PictureGeometry, RayBounds};
pub use crate::transfer::Preset;
use crate::transfer::{TransferTable, TABLE_SIZE};
use crate::volume::{dot, Vector, Volume};

/// Side of the blocks the renderer reads by.
const BLOCK: usize = 8;

/// Side of a brick as stored: a block and the next voxel along every axis (what trilinear
/// sampling inside the block reads), so that a sample never leaves its brick.
const APRON: usize = BLOCK + 1;
const BRICK: usize = APRON * APRON * APRON;

/// The volume as the renderer reads it: in bricks of `BLOCK`^3 voxels (each with its apron),
/// so that a ray's samples stay within a few kilobytes of memory whichever way it goes (rows
/// of a plain volume are kilobytes apart, its slices megabytes), with where rays may leap
/// ([`EmptySpace`]). Values are 16-bit steps of `unit` above `low` (a CT's HU to 1/16): half
/// the memory of the volume's own floats.
#[derive(Debug, Clone)]
pub struct BlockRanges {
    counts: [usize; 3],
    empty: EmptySpace,
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
        bricks
            .par_chunks_mut(BRICK)
            .enumerate()
            .for_each(|(b, brick)| {
                let (bx, by, bz) = (
                    b % counts[0],
                    b / counts[0] % counts[1],
                    b / (counts[0] * counts[1]),
                );
                for (lz, plane) in brick.chunks_mut(APRON * APRON).enumerate() {
                    let z = (bz * BLOCK + lz).min(nz - 1);
                    for (ly, row) in plane.chunks_mut(APRON).enumerate() {
                        let y = (by * BLOCK + ly).min(ny - 1);
                        let source = (z * ny + y) * nx;
                        for (lx, out) in row.iter_mut().enumerate() {
                            let x = (bx * BLOCK + lx).min(nx - 1);
                            let v = volume.values[source + x];
                            let v = if v.is_finite() { v } else { low };
                            *out =
                                ((v - low) / unit).round().clamp(0.0, f32::from(u16::MAX)) as u16;
                        }
                    }
                }
            });
        BlockRanges {
            counts,
            empty: EmptySpace::of(volume, low),
            low,
            high,
            unit,
            bricks,
        }
    }

    /// Memory the bricks and the empty space hold.
    pub fn bytes(&self) -> usize {
        self.bricks.len() * 2 + self.empty.bytes()
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
    // Steps of at least 1/1024 of the coarsest voxel: the fixed-point positions then move by
    // at least about 37/65,536 voxel along some axis a step, and rounding the step changes
    // it by under 1.4%.
    let coarsest = spacing.iter().copied().fold(0.0, f64::max);
    step = step.max(coarsest / 1024.0);
    let table = TransferTable::new(view.preset, blocks.low, blocks.high, step);
    let leaps = blocks
        .empty
        .leaps(view.preset.index(), volume, blocks.low, |low, high| {
            table.shows_any(low, high)
        });
    // Everything in voxel index space: a patient vector v is (v.row/sx, v.col/sy, v.normal/sz).
    let to_index = |v: Vector| {
        [
            dot(v, volume.row_direction) / spacing[0],
            dot(v, volume.column_direction) / spacing[1],
            dot(v, volume.normal) / spacing[2],
        ]
    };
    let axes = view.axes();
    let (right, down, direction) = (to_index(axes.0), to_index(axes.1), to_index(axes.2));
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
    let bounds = RayBounds::of(
        volume,
        &leaps.boxes,
        &PictureGeometry {
            centre,
            right: axes.0,
            down: axes.1,
            direction: axes.2,
            pixel_mm,
            width: w,
            height: h,
        },
    );
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
        leaps,
        table: &table,
        light,
        shade: view.shade,
    };

    let cast = |x: usize, y: usize, out: &mut [u8]| {
        // Most rays of a bone or vessel picture meet nothing shown: they end here.
        let (near, far) = (bounds.first[y * w + x], bounds.last[y * w + x]);
        if near == f32::INFINITY {
            return;
        }
        {
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
                return;
            }
            // Samples on planes shared by every ray (multiples of the step from the centre),
            // so that neighbouring rays agree and no wood-grain rings appear.
            let first = (enter / step).ceil();
            let count = ((exit / step).floor() - first + 1.0).max(0.0) as usize;
            // Only where the ray can meet anything shown (a step either side, for rounding);
            // the samples' positions stay those of the whole ray.
            let from = (f64::from(near) / step - 1.0 - first).floor().max(0.0) as usize;
            let to =
                ((f64::from(far) / step + 1.0 - first).ceil().max(0.0) as usize + 1).min(count);
            let start = [
                through[0] + direction[0] * first * step,
                through[1] + direction[1] * first * step,
                through[2] + direction[2] * first * step,
            ];
            let delta = [
                direction[0] * step,
                direction[1] * step,
                direction[2] * step,
            ];
            let colour = marcher.march(start, delta, from, to);
            for (channel, value) in out.iter_mut().zip(colour) {
                *channel = (value.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
            }
        }
    };
    // Rays in tiles of TILE x TILE pixels: neighbouring rays read the same bricks, so a tile's
    // bricks are read from memory about once rather than once per row of pixels. Each band of
    // tiles is a task of its own: bands differ a hundredfold in work (most rows of a bone
    // picture are empty), and rayon's adaptive split of the whole range left one of two
    // threads idle for a quarter of the frame (2 threads were 1.45x one; split, 1.9x).
    let mut rgb = vec![0u8; w * h * 3];
    rgb.par_chunks_mut(w * 3 * TILE)
        .enumerate()
        .with_max_len(1)
        .for_each(|(band, rows)| {
            let rows_here = rows.len() / (w * 3);
            for left in (0..w).step_by(TILE) {
                for dy in 0..rows_here {
                    let row = &mut rows[dy * w * 3..(dy + 1) * w * 3];
                    for x in left..(left + TILE).min(w) {
                        cast(x, band * TILE + dy, &mut row[x * 3..x * 3 + 3]);
                    }
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

/// Samples to leap for a leap of `fraction` samples: its ceiling, at least 1 and at most
/// `limit` (without `f32::ceil`, a library call on the baseline x86-64 target).
#[inline]
fn samples_to(fraction: f32, limit: usize) -> usize {
    let limit = limit.max(1) as f32;
    let fraction = fraction.clamp(1.0, limit);
    let whole = fraction as usize;
    whole + usize::from((whole as f32) < fraction)
}

/// Side of the tiles of pixels cast together.
const TILE: usize = 8;

/// What a ray needs to walk through the volume.
struct Marcher<'a> {
    volume: &'a Volume,
    blocks: &'a BlockRanges,
    /// Where rays may leap and skip for this preset.
    leaps: &'a Leaps,
    table: &'a TransferTable,
    light: [f32; 3],
    shade: bool,
}

/// Bits below the table entry in the fixed-point lookup of a value's entry.
const ENTRY_BITS: u32 = 32;

/// Bits of a sample's position below the voxel index.
const FRACTION_BITS: u32 = 16;

/// Opacity at which a ray stops: what lies behind shows by less than one grey level.
const OPAQUE: f32 = 0.995;

impl Marcher<'_> {
    /// Composites one ray front to back: samples `from` up to `to` of those at `start`, `delta`
    /// apart (voxel index units). Positions in fixed point, [`FRACTION_BITS`] bits below the
    /// voxel index (as VTK's fixed-point ray caster): a voxel and the fraction within it are a
    /// shift and a mask rather than float conversions with their range checks; the step is
    /// rounded to 1/65,536 voxel (a drift under 0.01 voxel over a thousand samples). They are
    /// the same whatever `from` is, so bounding a ray changes no sample.
    fn march(&self, start: [f64; 3], delta: [f64; 3], from: usize, to: usize) -> [f32; 3] {
        let v = self.volume;
        let (nx, ny, nz) = (v.columns, v.rows, v.slices);
        let bricks = &self.blocks.bricks[..];
        let one = (1i64 << FRACTION_BITS) as f64;
        let fixed_start = start.map(|s| (s * one).round() as i64);
        let fixed_delta = delta.map(|d| (d * one).round() as i64);
        let unfix = 1.0 / one as f32;
        // Leaps count in the steps the samples take (the rounded fixed-point step), so that a
        // long leap never drifts past the face it stops short of.
        let delta = fixed_delta.map(|d| d as f32 * unfix);
        // The largest position inside the volume along each axis.
        let top = [nx - 1, ny - 1, nz - 1].map(|n| (n as i64) << FRACTION_BITS);
        // Steps per index unit along each axis, for leaps (huge along an axis not crossed, as
        // if crossed slowly upwards), and which face of a cube of cells the ray leaves by along
        // it: `cell + near + reach * sign`, in cells.
        let per_unit = delta.map(|d| if d != 0.0 { 1.0 / d } else { 1e30 });
        let near = per_unit.map(|u| if u > 0.0 { 0.0 } else { 1.0 });
        let sign = per_unit.map(|u| if u > 0.0 { 1.0 } else { -1.0 });
        let entries: &[[f32; 4]; TABLE_SIZE] = &self.table.entries;
        let [bx_count, by_count, _] = self.blocks.counts;
        let [cx_count, cy_count, _] = self.blocks.empty.counts();
        let shifts = self.blocks.empty.shifts().map(|s| s as usize);
        let sides = shifts.map(|s| (1usize << s) as f32);
        // Gradients per mm from differences of brick units.
        let gradient_scale = v.spacing.map(|s| self.blocks.unit / s as f32);
        // Table entry of a value in brick units.
        let to_entry = self.blocks.unit / self.table.per_entry;
        let entry_offset = (self.blocks.low - self.table.low) / self.table.per_entry;
        // The same in fixed point: a value with FRACTION_BITS below the brick unit, times
        // `entry_scale`, plus `entry_shift`, is the entry with ENTRY_BITS below it.
        let entry_scale =
            (f64::from(to_entry) * (1u64 << (ENTRY_BITS - FRACTION_BITS)) as f64).round() as i64;
        let entry_shift = (f64::from(entry_offset) * (1u64 << ENTRY_BITS) as f64).round() as i64;
        let mut colour = [0.0f32; 3];
        let mut alpha = 0.0f32;
        let mut i = from;
        while i < to {
            let at = |axis: usize| {
                (fixed_start[axis] + fixed_delta[axis] * i as i64).clamp(0, top[axis])
            };
            let (px, py, pz) = (at(0), at(1), at(2));
            let (x0, y0, z0) = (
                (px >> FRACTION_BITS) as usize,
                (py >> FRACTION_BITS) as usize,
                (pz >> FRACTION_BITS) as usize,
            );
            let cells = [x0 >> shifts[0], y0 >> shifts[1], z0 >> shifts[2]];
            let distance =
                self.leaps.distances[(cells[2] * cy_count + cells[1]) * cx_count + cells[0]];
            if distance > 0 {
                // Every cell less than `distance` away shows nothing: leap to the first sample
                // outside that cube of cells.
                let reach = f32::from(distance);
                let mut leap = f32::INFINITY;
                let positions = [px as f32 * unfix, py as f32 * unfix, pz as f32 * unfix];
                for (axis, (position, cell)) in positions.into_iter().zip(cells).enumerate() {
                    let face = cell as f32 + near[axis] + reach * sign[axis];
                    leap = leap.min((face * sides[axis] - position) * per_unit[axis]);
                }
                // At least one sample on; never past the ray's end (a leap may be huge); a
                // hair short of the face, so that rounding never steps over a visible sample.
                i = i.saturating_add(samples_to(leap - 1e-3, to));
                continue;
            }
            if !self.leaps.voxel_shows(x0, y0, z0) {
                i += 1;
                continue;
            }
            let block = ((z0 / BLOCK) * by_count + y0 / BLOCK) * bx_count + x0 / BLOCK;
            const MASK: i64 = (1 << FRACTION_BITS) - 1;
            let (tx, ty, tz) = (px & MASK, py & MASK, pz & MASK);
            // The cell's eight corners, all in this block's brick (its apron holds the far ones).
            let at = block * BRICK + ((z0 % BLOCK) * APRON + (y0 % BLOCK)) * APRON + (x0 % BLOCK);
            const DY: usize = APRON;
            const DZ: usize = APRON * APRON;
            let corners = &bricks[at..at + DZ + DY + 2];
            let corner = |offset: usize| i64::from(corners[offset]);
            let (c000, c100, c010, c110) = (corner(0), corner(1), corner(DY), corner(DY + 1));
            let (c001, c101, c011, c111) = (
                corner(DZ),
                corner(DZ + 1),
                corner(DZ + DY),
                corner(DZ + DY + 1),
            );
            // Trilinear in fixed point, as the positions: brick units with FRACTION_BITS more.
            let lerp = |a: i64, b: i64, t: i64| (a << FRACTION_BITS) + (b - a) * t;
            let lerp_fixed = |a: i64, b: i64, t: i64| a + (((b - a) * t) >> FRACTION_BITS);
            let near = lerp_fixed(lerp(c000, c100, tx), lerp(c010, c110, tx), ty);
            let far = lerp_fixed(lerp(c001, c101, tx), lerp(c011, c111, tx), ty);
            let value = lerp_fixed(near, far, tz);
            let index =
                ((value * entry_scale + entry_shift) >> ENTRY_BITS).clamp(0, TABLE_SIZE as i64 - 1);
            let entry = entries[index as usize];
            if entry[3] > 0.0 {
                let light = if self.shade {
                    let (fx, fy, fz) = (tx as f32 * unfix, ty as f32 * unfix, tz as f32 * unfix);
                    let (near, far) = (near as f32 * unfix, far as f32 * unfix);
                    let f = |c: i64| c as f32;
                    let (c000, c100, c010, c110) = (f(c000), f(c100), f(c010), f(c110));
                    let (c001, c101, c011, c111) = (f(c001), f(c101), f(c011), f(c111));
                    let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
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
        // Every cell marked as showing something: no leaps.
        let mut full = blocks.clone();
        full.empty = blocks.empty.without_leaps(&volume);
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

    /// A noisy volume at a CT's anisotropic spacing, of a size that is no multiple of the
    /// cells: a ball of bone, a thin plate and scattered voxels above the bone threshold.
    fn noisy_volume(nz: usize) -> Volume {
        let (nx, ny) = (70, 62);
        let spacing = [0.7, 0.7, 2.5];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut values = Vec::with_capacity(nx * ny * nz);
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let r = (state >> 40) as f32 / (1u64 << 24) as f32;
                    let (dx, dy, dz) = (
                        (x as f64 - 30.0) * spacing[0],
                        (y as f64 - 28.0) * spacing[1],
                        (z as f64 - 11.0) * spacing[2],
                    );
                    values.push(if r > 0.999 {
                        f32::NAN
                    } else if (dx * dx + dy * dy + dz * dz).sqrt() < 9.0 {
                        1200.0
                    } else if x == 55 {
                        700.0
                    } else if r > 0.995 {
                        450.0
                    } else {
                        -950.0 + 1100.0 * r
                    });
                }
            }
        }
        Volume {
            columns: nx,
            rows: ny,
            slices: nz,
            values,
            origin: [0.0; 3],
            row_direction: [1.0, 0.0, 0.0],
            column_direction: [0.0, 1.0, 0.0],
            normal: [0.0, 0.0, 1.0],
            spacing,
            blocks: Default::default(),
        }
    }

    #[test]
    fn bounds_leaps_and_skips_change_nothing_in_a_noisy_ct_from_any_side() {
        let whole = [[0.0, 1.0]; 3];
        let cropped = [[0.1, 0.8], [0.25, 0.9], [0.0, 0.6]];
        for slices in [23, 1] {
            let volume = noisy_volume(slices);
            let blocks = BlockRanges::of(&volume);
            let mut full = blocks.clone();
            full.empty = blocks.empty.without_leaps(&volume);
            for (azimuth, elevation, preset, zoom, crop, (width, height)) in [
                (0.0, 0.0, Preset::Bone, 1.0, whole, (80, 72)),
                (90.0, 0.0, Preset::Bone, 1.0, whole, (64, 64)),
                (0.0, 90.0, Preset::Vessels, 1.0, whole, (64, 64)),
                (37.0, 21.0, Preset::Bone, 2.5, whole, (90, 40)),
                (123.0, -40.0, Preset::SoftTissue, 1.0, cropped, (80, 72)),
                (260.0, 75.0, Preset::Vessels, 0.6, cropped, (33, 77)),
                (200.0, -10.0, Preset::Lung, 1.0, whole, (80, 72)),
                (15.0, 5.0, Preset::Bone, 1.0, whole, (1, 1)),
            ] {
                let view = VolumeView {
                    preset,
                    azimuth_degrees: azimuth,
                    elevation_degrees: elevation,
                    zoom,
                    crop,
                    width,
                    height,
                    ..VolumeView::default()
                };
                let (leaping, walking) = (
                    render_volume(&volume, &blocks, &view),
                    render_volume(&volume, &full, &view),
                );
                let case = format!("{slices} slices, {azimuth}/{elevation} {preset:?} x{zoom}");
                assert!(leaping.rgb == walking.rgb, "{case}: the pictures differ");
                if width > 1 {
                    assert!(walking.rgb.iter().any(|&c| c > 40), "{case}: shows nothing");
                }
            }
        }
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
