//! Where along each ray of a picture anything can show, before any ray is cast.
//!
//! A ray through a chest in the bone preset crosses air, skin, fat and muscle before it meets a
//! rib; the distance field ([`crate::empty_space`]) lets it leap, but a leap at a time. The
//! groups of cells that show anything are few (a few thousand boxes of 16 voxels a side), so
//! their boxes are projected onto the picture first: each pixel learns the nearest and farthest
//! depth at which its ray can meet one, and a pixel no box covers casts no ray at all. The
//! bounds are conservative (each box's projected rectangle, rounded outwards, and its depth
//! range over all eight corners): a ray starts before anything it could show. They assume what
//! the whole renderer assumes: the volume's axes orthonormal, as DICOM defines Image
//! Orientation (Patient) to be.

use rayon::prelude::*;

use crate::volume::{dot, Vector, Volume};

/// The picture's geometry in the volume's index space, as the renderer casts its rays.
pub(crate) struct PictureGeometry {
    /// The volume's centre (index units), where the picture's centre ray passes.
    pub centre: [f64; 3],
    /// Unit vectors of the picture's right, down and the viewing direction, in patient space.
    pub right: Vector,
    pub down: Vector,
    pub direction: Vector,
    /// Millimetres per pixel, and the picture's size.
    pub pixel_mm: f64,
    pub width: usize,
    pub height: usize,
}

/// Per pixel, the depths (mm along its ray from the picture plane through the centre) between
/// which its ray can meet anything shown; `f32::INFINITY` first for a ray that meets nothing.
pub(crate) struct RayBounds {
    pub first: Vec<f32>,
    pub last: Vec<f32>,
}

/// Rows of pixels filled together.
const BAND: usize = 16;

impl RayBounds {
    /// Projects `boxes` (index-space corners, low and high, each voxel's half-width included)
    /// of `volume` onto the picture.
    pub(crate) fn of(
        volume: &Volume,
        boxes: &[([f32; 3], [f32; 3])],
        geometry: &PictureGeometry,
    ) -> RayBounds {
        let (w, h) = (geometry.width, geometry.height);
        let axes = [volume.row_direction, volume.column_direction, volume.normal];
        // Index offset (along columns, rows, slices) to pixels right, pixels down, mm deep.
        let to_picture = |target: Vector, scale: f64| -> [f64; 3] {
            std::array::from_fn(|k| dot(axes[k], target) * volume.spacing[k] / scale)
        };
        let rows = [
            to_picture(geometry.right, geometry.pixel_mm),
            to_picture(geometry.down, geometry.pixel_mm),
            to_picture(geometry.direction, 1.0),
        ];
        let (half_w, half_h) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
        // Each box as a rectangle of pixels and a depth range.
        let projected: Vec<([usize; 4], f32, f32)> = boxes
            .iter()
            .filter_map(|(low, high)| {
                let middle: [f64; 3] = std::array::from_fn(|k| {
                    (f64::from(low[k]) + f64::from(high[k])) / 2.0 - geometry.centre[k]
                });
                let half: [f64; 3] =
                    std::array::from_fn(|k| (f64::from(high[k]) - f64::from(low[k])) / 2.0);
                let [across, downwards, depth] = rows.map(|row| {
                    let at = dot(row, middle);
                    let reach: f64 = (0..3).map(|k| row[k].abs() * half[k]).sum();
                    (at - reach, at + reach)
                });
                let (x0, x1) = (across.0 + half_w, across.1 + half_w);
                let (y0, y1) = (downwards.0 + half_h, downwards.1 + half_h);
                if x1 < 0.0 || y1 < 0.0 || x0 > (w - 1) as f64 || y0 > (h - 1) as f64 {
                    return None;
                }
                let clamp = |v: f64, n: usize| v.clamp(0.0, (n - 1) as f64) as usize;
                Some((
                    [
                        clamp(x0.floor(), w),
                        clamp(x1.ceil(), w),
                        clamp(y0.floor(), h),
                        clamp(y1.ceil(), h),
                    ],
                    depth.0 as f32,
                    depth.1 as f32,
                ))
            })
            .collect();
        let mut first = vec![f32::INFINITY; w * h];
        let mut last = vec![f32::NEG_INFINITY; w * h];
        first
            .par_chunks_mut(w * BAND)
            .zip(last.par_chunks_mut(w * BAND))
            .enumerate()
            .for_each(|(band, (first, last))| {
                let top = band * BAND;
                let bottom = top + first.len() / w;
                for &([x0, x1, y0, y1], near, far) in &projected {
                    for y in y0.max(top)..=y1.min(bottom - 1) {
                        let row = (y - top) * w;
                        for x in x0..=x1 {
                            first[row + x] = first[row + x].min(near);
                            last[row + x] = last[row + x].max(far);
                        }
                    }
                }
            });
        RayBounds { first, last }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(spacing: [f64; 3]) -> Volume {
        Volume {
            columns: 10,
            rows: 10,
            slices: 10,
            values: vec![0.0; 1000],
            origin: [0.0; 3],
            row_direction: [1.0, 0.0, 0.0],
            column_direction: [0.0, 1.0, 0.0],
            normal: [0.0, 0.0, 1.0],
            spacing,
            blocks: Default::default(),
        }
    }

    #[test]
    fn a_box_covers_the_pixels_its_rays_cross_and_no_others() {
        // Looking along +y at a 10 mm volume, 1 mm a pixel: a box over columns 2-4, slices
        // 6-8, rows 1-3 (mm 1-3 deep of the volume's 10, centred on 4.5).
        let geometry = PictureGeometry {
            centre: [4.5; 3],
            right: [1.0, 0.0, 0.0],
            down: [0.0, 0.0, -1.0],
            direction: [0.0, 1.0, 0.0],
            pixel_mm: 1.0,
            width: 10,
            height: 10,
        };
        let bounds = RayBounds::of(
            &volume([1.0; 3]),
            &[([2.0, 1.0, 6.0], [4.0, 3.0, 8.0])],
            &geometry,
        );
        for y in 0..10 {
            for x in 0..10 {
                let first = bounds.first[y * 10 + x];
                // Slices 6-8 are 1.5 to 3.5 mm above the centre: picture rows 1-3.
                let inside = (2..=4).contains(&x) && (1..=3).contains(&y);
                if inside {
                    assert_eq!((first, bounds.last[y * 10 + x]), (-3.5, -1.5), "{x},{y}");
                } else if !(1..=5).contains(&x) || !(0..=4).contains(&y) {
                    assert_eq!(first, f32::INFINITY, "{x},{y}");
                }
            }
        }
    }
}
