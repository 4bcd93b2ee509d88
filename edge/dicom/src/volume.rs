//! A series as a volume, and planes cut through it on the server: multiplanar reformatting
//! (axial, coronal, sagittal, or any plane turned from them) and slabs projected to their
//! maximum, minimum or mean (MIP, MinIP, average). The browser receives the picture only.
//!
//! A volume is built once per series from its slices' modality values (HU for CT) and their
//! DICOM geometry: Image Position and Orientation (Patient) and Pixel Spacing. A series whose
//! slices do not make one regular block (orientations that differ, a gap where a slice is
//! missing, sizes that differ) is refused with the reason, and is shown as a stack only.
//! Planes are sampled with trilinear interpolation in patient coordinates (LPS, mm), so the
//! spacing of rows, columns and slices is honoured whatever the plane.

use std::path::PathBuf;

use dicom_object::OpenFileOptions;
use dicom_pixeldata::PixelDecoder;

use crate::instance::InstanceAttributes;
use crate::{DicomError, Result};

pub(crate) type Vector = [f64; 3];

pub(crate) fn dot(a: Vector, b: Vector) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: Vector, b: Vector) -> Vector {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn add(a: Vector, b: Vector, scale: f64) -> Vector {
    [
        a[0] + b[0] * scale,
        a[1] + b[1] * scale,
        a[2] + b[2] * scale,
    ]
}

/// Voxel spacing a volume may have (mm): anything else is no scanner's, and would make the
/// work of a picture unbounded or meaningless.
pub const MIN_SPACING_MM: f64 = 1e-3;
pub const MAX_SPACING_MM: f64 = 100.0;

/// A series' voxels and where they are.
#[derive(Debug, Clone)]
pub struct Volume {
    pub columns: usize,
    pub rows: usize,
    pub slices: usize,
    /// Modality values, slice by slice, row by row.
    pub values: Vec<f32>,
    /// The patient position (mm) of the first voxel of the first slice.
    pub origin: Vector,
    /// Unit vectors of increasing column, row and slice index.
    pub row_direction: Vector,
    pub column_direction: Vector,
    pub normal: Vector,
    /// Spacing (mm) between columns, rows and slices.
    pub spacing: Vector,
    /// The value ranges the volume renderer leaps by, computed when first rendered.
    pub blocks: std::sync::OnceLock<crate::raycast::BlockRanges>,
}

fn not_a_volume(reason: impl Into<String>) -> DicomError {
    DicomError::NotAVolume(reason.into())
}

impl Volume {
    /// Builds the volume of a series from its instances (files and attributes), in any order;
    /// a volume that would need more than `budget_bytes` is refused before anything is read.
    pub fn build(
        instances: &[(PathBuf, InstanceAttributes)],
        budget_bytes: usize,
    ) -> Result<Volume> {
        if instances.len() < 3 {
            return Err(not_a_volume(format!(
                "{} image(s): a volume needs at least 3 slices",
                instances.len()
            )));
        }
        let first = &instances[0].1;
        let orientation = first
            .image_orientation_patient
            .clone()
            .filter(|o| o.len() == 6)
            .ok_or_else(|| not_a_volume("the images do not say their orientation"))?;
        let row_direction = [orientation[0], orientation[1], orientation[2]];
        let column_direction = [orientation[3], orientation[4], orientation[5]];
        let normal = cross(row_direction, column_direction);
        let (rows, columns) = (first.rows.unwrap_or(0), first.columns.unwrap_or(0));
        if rows == 0 || columns == 0 {
            return Err(not_a_volume("the images do not say their size"));
        }
        let needed = usize::from(rows) * usize::from(columns) * instances.len() * 4;
        if needed > budget_bytes {
            return Err(not_a_volume(format!(
                "the series needs {} MiB, more than the {} MiB set aside for volumes",
                needed >> 20,
                budget_bytes >> 20
            )));
        }
        let spacing = first
            .pixel_spacing
            .clone()
            .filter(|s| s.len() == 2 && s[0] > 0.0 && s[1] > 0.0)
            .ok_or_else(|| not_a_volume("the images do not say their pixel spacing"))?;
        if !spacing
            .iter()
            .all(|s| (MIN_SPACING_MM..=MAX_SPACING_MM).contains(s))
        {
            return Err(not_a_volume(format!(
                "pixel spacing {spacing:?} mm is not a scanner's ({MIN_SPACING_MM} to {MAX_SPACING_MM} mm)"
            )));
        }
        let mut placed = Vec::with_capacity(instances.len());
        for (path, a) in instances {
            let same_orientation = a.image_orientation_patient.as_ref().is_some_and(|o| {
                o.iter()
                    .zip(&orientation)
                    .all(|(x, y)| (x - y).abs() < 1e-3)
            });
            if !same_orientation {
                return Err(not_a_volume(format!(
                    "image {} is oriented differently from the others",
                    a.instance_number.unwrap_or_default()
                )));
            }
            if a.rows != Some(rows)
                || a.columns != Some(columns)
                || a.pixel_spacing.as_ref() != Some(&spacing)
            {
                return Err(not_a_volume(format!(
                    "image {} differs in size or pixel spacing",
                    a.instance_number.unwrap_or_default()
                )));
            }
            let position = a
                .image_position_patient
                .clone()
                .filter(|p| p.len() == 3)
                .ok_or_else(|| not_a_volume("an image does not say its position"))?;
            let position = [position[0], position[1], position[2]];
            placed.push((dot(position, normal), position, path));
        }
        placed.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Every slice must lie on the first one's normal: a gantry tilt shifts each slice within
        // its plane, and a volume built from them would be sheared.
        let smallest_pixel = spacing[0].min(spacing[1]);
        let first_position = placed[0].1;
        for (along, position, _) in &placed {
            let d = [
                position[0] - first_position[0],
                position[1] - first_position[1],
                position[2] - first_position[2],
            ];
            let along = along - placed[0].0;
            let shift = [
                d[0] - along * normal[0],
                d[1] - along * normal[1],
                d[2] - along * normal[2],
            ];
            if dot(shift, shift).sqrt() > 0.1 * smallest_pixel {
                return Err(not_a_volume(
                    "the slices are shifted within their planes (a gantry tilt): reformatting would shear them",
                ));
            }
        }
        let gaps: Vec<f64> = placed.windows(2).map(|w| w[1].0 - w[0].0).collect();
        // The mean gap: rounding of each position must not squash the whole volume.
        let step = (placed[placed.len() - 1].0 - placed[0].0) / (placed.len() - 1) as f64;
        if gaps.iter().any(|gap| *gap <= MIN_SPACING_MM) {
            return Err(not_a_volume("two images lie at the same place"));
        }
        if step > MAX_SPACING_MM {
            return Err(not_a_volume(format!(
                "the slices are {step:.0} mm apart: not one volume"
            )));
        }
        if let Some((at, gap)) = gaps
            .iter()
            .enumerate()
            .find(|(_, gap)| (*gap - step).abs() > step * 0.05)
        {
            return Err(not_a_volume(format!(
                "the slices are {step:.2} mm apart but {gap:.2} mm between slices {} and {}: a slice is missing or the spacing is irregular",
                at + 1,
                at + 2
            )));
        }
        let plane_size = usize::from(rows) * usize::from(columns);
        let mut values = Vec::new();
        values
            .try_reserve_exact(plane_size * placed.len())
            .map_err(|_| not_a_volume("not enough memory for the volume"))?;
        for (_, _, path) in &placed {
            // A file that cannot be read now may be readable later: not remembered as "no
            // volume" (an Unreadable error, not NotAVolume).
            let unreadable = |e: &dyn std::fmt::Display| DicomError::Unreadable {
                what: "a slice of the series".into(),
                reason: e.to_string(),
            };
            let object = OpenFileOptions::new()
                .open_file(path)
                .map_err(|e| unreadable(&e))?;
            let decoded = object
                .decode_pixel_data_frame(0)
                .map_err(|e| not_a_volume(format!("a slice cannot be decoded: {e}")))?;
            let slice: Vec<f32> = decoded
                .to_vec_frame::<f32>(0)
                .map_err(|e| not_a_volume(format!("a slice cannot be decoded: {e}")))?;
            if slice.len() != plane_size {
                return Err(not_a_volume("a slice's pixel data is not rows x columns"));
            }
            values.extend_from_slice(&slice);
        }
        Ok(Volume {
            columns: usize::from(columns),
            rows: usize::from(rows),
            slices: placed.len(),
            values,
            origin: placed[0].1,
            row_direction,
            column_direction,
            normal,
            // Pixel Spacing is row spacing (between rows), then column spacing.
            spacing: [spacing[1], spacing[0], step],
            blocks: std::sync::OnceLock::new(),
        })
    }

    /// The block value ranges for volume rendering, computed once.
    pub fn blocks(&self) -> &crate::raycast::BlockRanges {
        self.blocks
            .get_or_init(|| crate::raycast::BlockRanges::of(self))
    }

    /// Memory the volume holds (with the renderer's bricks, once made).
    pub fn bytes(&self) -> usize {
        self.values.len() * std::mem::size_of::<f32>()
            + self.blocks.get().map_or(0, |blocks| blocks.bytes())
    }

    /// The volume's centre (patient mm).
    pub fn centre(&self) -> Vector {
        let mut c = self.origin;
        c = add(
            c,
            self.row_direction,
            (self.columns - 1) as f64 * self.spacing[0] / 2.0,
        );
        c = add(
            c,
            self.column_direction,
            (self.rows - 1) as f64 * self.spacing[1] / 2.0,
        );
        add(
            c,
            self.normal,
            (self.slices - 1) as f64 * self.spacing[2] / 2.0,
        )
    }

    /// A patient-space vector (mm) in voxel index units along columns, rows and slices.
    pub fn to_index(&self, v: Vector) -> Vector {
        [
            dot(v, self.row_direction) / self.spacing[0],
            dot(v, self.column_direction) / self.spacing[1],
            dot(v, self.normal) / self.spacing[2],
        ]
    }

    /// The value at voxel index position `(x, y, z)`, interpolated; `None` outside.
    pub fn sample_index(&self, x: f32, y: f32, z: f32) -> Option<f32> {
        let (nx, ny, nz) = (self.columns, self.rows, self.slices);
        let inside = |v: f32, n: usize| v >= -1e-4 && v <= (n - 1) as f32 + 1e-4;
        if !(inside(x, nx) && inside(y, ny) && inside(z, nz)) {
            return None;
        }
        let (x, y, z) = (
            x.clamp(0.0, (nx - 1) as f32),
            y.clamp(0.0, (ny - 1) as f32),
            z.clamp(0.0, (nz - 1) as f32),
        );
        let (x0, y0, z0) = (x as usize, y as usize, z as usize);
        let dx = usize::from(x0 + 1 < nx);
        let dy = if y0 + 1 < ny { nx } else { 0 };
        let dz = if z0 + 1 < nz { nx * ny } else { 0 };
        let (fx, fy, fz) = (x - x0 as f32, y - y0 as f32, z - z0 as f32);
        let at = (z0 * ny + y0) * nx + x0;
        let v = &self.values;
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let plane = |at: usize| {
            lerp(
                lerp(v[at], v[at + dx], fx),
                lerp(v[at + dy], v[at + dy + dx], fx),
                fy,
            )
        };
        Some(lerp(plane(at), plane(at + dz), fz))
    }

    /// The value at patient position `p`, interpolated; `None` outside the volume.
    pub fn sample(&self, p: Vector) -> Option<f32> {
        let d = [
            p[0] - self.origin[0],
            p[1] - self.origin[1],
            p[2] - self.origin[2],
        ];
        let x = dot(d, self.row_direction) / self.spacing[0];
        let y = dot(d, self.column_direction) / self.spacing[1];
        let z = dot(d, self.normal) / self.spacing[2];
        let limit = |v: f64, n: usize| v >= -1e-6 && v <= (n - 1) as f64 + 1e-6;
        if !(limit(x, self.columns) && limit(y, self.rows) && limit(z, self.slices)) {
            return None;
        }
        let clamp = |v: f64, n: usize| v.clamp(0.0, (n - 1) as f64);
        let (x, y, z) = (
            clamp(x, self.columns),
            clamp(y, self.rows),
            clamp(z, self.slices),
        );
        let (x0, y0, z0) = (x.floor() as usize, y.floor() as usize, z.floor() as usize);
        let (x1, y1, z1) = (
            (x0 + 1).min(self.columns - 1),
            (y0 + 1).min(self.rows - 1),
            (z0 + 1).min(self.slices - 1),
        );
        let (fx, fy, fz) = (
            (x - x0 as f64) as f32,
            (y - y0 as f64) as f32,
            (z - z0 as f64) as f32,
        );
        let at = |x: usize, y: usize, z: usize| self.values[(z * self.rows + y) * self.columns + x];
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let plane = |z: usize| {
            lerp(
                lerp(at(x0, y0, z), at(x1, y0, z), fx),
                lerp(at(x0, y1, z), at(x1, y1, z), fx),
                fy,
            )
        };
        Some(lerp(plane(z0), plane(z1), fz))
    }
}

/// The standard planes, as radiologists view them: axial from the feet (patient's right on
/// the image's left), coronal from the front, sagittal from the left, head up.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Orientation {
    Axial,
    Coronal,
    Sagittal,
}

impl Orientation {
    /// The image's right and down directions in patient space (LPS).
    fn axes(self) -> (Vector, Vector) {
        match self {
            Orientation::Axial => ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),
            Orientation::Coronal => ([1.0, 0.0, 0.0], [0.0, 0.0, -1.0]),
            Orientation::Sagittal => ([0.0, 1.0, 0.0], [0.0, 0.0, -1.0]),
        }
    }
}

/// How a slab is projected onto the plane.
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
#[serde(rename_all = "lowercase")]
pub enum Projection {
    /// The plane itself (thin MPR).
    #[default]
    Plane,
    /// Maximum intensity projection.
    Mip,
    /// Minimum intensity projection.
    Minip,
    /// Average intensity.
    Average,
}

/// A plane to cut: an orientation turned by an angle, through a point, a slab around it.
#[derive(Debug, Clone, Copy)]
pub struct PlaneRequest {
    pub orientation: Orientation,
    /// Turn about the image's vertical axis, degrees (an oblique plane).
    pub rotation_degrees: f64,
    /// Offset of the plane from the volume's centre along its normal, mm.
    pub offset_mm: f64,
    pub projection: Projection,
    /// Slab thickness, mm (for the projections).
    pub slab_mm: f64,
    /// Size of one output pixel, mm.
    pub pixel_mm: f64,
    /// Output size, pixels.
    pub width: usize,
    pub height: usize,
}

/// Samples along a slab, at most.
pub const MAX_SAMPLES: usize = 256;
/// Samples for one picture, at most (about a second of one core).
pub const MAX_WORK: usize = 1 << 27;

/// A cut plane's values (row by row; NaN outside the volume).
#[derive(Debug, Clone)]
pub struct PlaneValues {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

impl PlaneRequest {
    /// The plane's right and down unit vectors, and its normal.
    pub fn axes(&self) -> (Vector, Vector, Vector) {
        let (right, down) = self.orientation.axes();
        let normal = cross(right, down);
        let angle = self.rotation_degrees.to_radians();
        let right = add(
            [
                right[0] * angle.cos(),
                right[1] * angle.cos(),
                right[2] * angle.cos(),
            ],
            normal,
            angle.sin(),
        );
        (right, down, cross(right, down))
    }

    /// A request that shows the whole volume in this orientation at `pixel_mm` per pixel.
    pub fn fitting(volume: &Volume, orientation: Orientation, pixel_mm: f64) -> PlaneRequest {
        let (right, down) = orientation.axes();
        let extent = |axis: Vector| {
            let e = [volume.row_direction, volume.column_direction, volume.normal];
            let sizes = [
                (volume.columns - 1) as f64 * volume.spacing[0],
                (volume.rows - 1) as f64 * volume.spacing[1],
                (volume.slices - 1) as f64 * volume.spacing[2],
            ];
            (0..3)
                .map(|i| dot(axis, e[i]).abs() * sizes[i])
                .sum::<f64>()
        };
        PlaneRequest {
            orientation,
            rotation_degrees: 0.0,
            offset_mm: 0.0,
            projection: Projection::Plane,
            slab_mm: 0.0,
            pixel_mm,
            width: (extent(right) / pixel_mm).round() as usize + 1,
            height: (extent(down) / pixel_mm).round() as usize + 1,
        }
    }
}

/// Cuts the plane (or projects the slab) of `request` through `volume`: sampled in voxel
/// index space (the plane's vectors turned into it once), rows in parallel.
pub fn cut(volume: &Volume, request: &PlaneRequest) -> PlaneValues {
    use rayon::prelude::*;
    let (right, down, normal) = request.axes();
    let centre = add(volume.centre(), normal, request.offset_mm);
    let (w, h) = (request.width.max(1), request.height.max(1));
    let mut step = volume.spacing.iter().copied().fold(f64::MAX, f64::min);
    let mut samples = match request.projection {
        Projection::Plane => 1,
        _ => (request.slab_mm.max(0.0) / step).floor() as usize + 1,
    };
    // Bounded work whatever is asked: at most MAX_SAMPLES along a slab, and at most MAX_WORK
    // samples for the whole picture; a thicker slab is sampled more coarsely.
    let most = (MAX_WORK / (w * h)).clamp(1, MAX_SAMPLES);
    if samples > most {
        samples = most;
        step = if samples > 1 {
            request.slab_mm / (samples - 1) as f64
        } else {
            step
        };
    }
    let first = -((samples - 1) as f64) / 2.0 * step;
    let half_w = (w as f64 - 1.0) / 2.0;
    let half_h = (h as f64 - 1.0) / 2.0;
    // The picture's first pixel, and its steps right, down and through the slab, in voxel
    // index units.
    let to_index = |v: Vector| volume.to_index(v).map(|c| c as f32);
    let origin = volume.to_index([
        centre[0] - volume.origin[0],
        centre[1] - volume.origin[1],
        centre[2] - volume.origin[2],
    ]);
    let corner = {
        let c = add(
            add(origin, volume.to_index(right), -half_w * request.pixel_mm),
            volume.to_index(down),
            -half_h * request.pixel_mm,
        );
        add(c, volume.to_index(normal), first).map(|c| c as f32)
    };
    let along_row = to_index([
        right[0] * request.pixel_mm,
        right[1] * request.pixel_mm,
        right[2] * request.pixel_mm,
    ]);
    let along_column = to_index([
        down[0] * request.pixel_mm,
        down[1] * request.pixel_mm,
        down[2] * request.pixel_mm,
    ]);
    let through = to_index([normal[0] * step, normal[1] * step, normal[2] * step]);
    let mut values = vec![f32::NAN; w * h];
    values.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        for (x, out) in row.iter_mut().enumerate() {
            let (fx, fy) = (x as f32, y as f32);
            let point = [
                corner[0] + along_row[0] * fx + along_column[0] * fy,
                corner[1] + along_row[1] * fx + along_column[1] * fy,
                corner[2] + along_row[2] * fx + along_column[2] * fy,
            ];
            let mut found = 0usize;
            let mut accumulated = match request.projection {
                Projection::Mip => f32::MIN,
                Projection::Minip => f32::MAX,
                _ => 0.0,
            };
            for s in 0..samples {
                let s = s as f32;
                let Some(v) = volume.sample_index(
                    point[0] + through[0] * s,
                    point[1] + through[1] * s,
                    point[2] + through[2] * s,
                ) else {
                    continue;
                };
                found += 1;
                accumulated = match request.projection {
                    Projection::Mip => accumulated.max(v),
                    Projection::Minip => accumulated.min(v),
                    _ => accumulated + v,
                };
            }
            if found > 0 {
                *out = match request.projection {
                    Projection::Plane | Projection::Average => accumulated / found as f32,
                    _ => accumulated,
                };
            }
        }
    });
    PlaneValues {
        width: w,
        height: h,
        values,
    }
}

/// Volumes built once per series and shared by every viewer of it, within a memory budget:
/// the least recently used go first. A series that is not a volume is remembered with its
/// reason, so that it is not read again for every request.
pub struct VolumeCache {
    budget_bytes: usize,
    entries: std::sync::Mutex<Vec<(String, std::sync::Arc<Volume>, u64)>>,
    refused: std::sync::Mutex<std::collections::HashMap<String, String>>,
    clock: std::sync::atomic::AtomicU64,
}

impl VolumeCache {
    pub fn new(budget_bytes: usize) -> VolumeCache {
        VolumeCache {
            budget_bytes,
            entries: std::sync::Mutex::default(),
            refused: std::sync::Mutex::default(),
            clock: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The memory volumes may hold together.
    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }

    fn tick(&self) -> u64 {
        self.clock
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The volume of `key` if it is held (or why the series is no volume, if that is known);
    /// `None` when it would have to be built.
    pub fn get(&self, key: &str) -> Option<Result<std::sync::Arc<Volume>>> {
        let now = self.tick();
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(entry) = entries.iter_mut().find(|(k, _, _)| k == key) {
                entry.2 = now;
                return Some(Ok(entry.1.clone()));
            }
        }
        self.refused
            .lock()
            .ok()
            .and_then(|r| r.get(key).cloned())
            .map(|reason| Err(DicomError::NotAVolume(reason)))
    }

    /// The volume of `key`, built with `build` if it is not held; a volume larger than the
    /// whole budget is refused with the reason.
    pub fn get_or_build(
        &self,
        key: &str,
        build: impl FnOnce() -> Result<Volume>,
    ) -> Result<std::sync::Arc<Volume>> {
        let now = self.tick();
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(entry) = entries.iter_mut().find(|(k, _, _)| k == key) {
                entry.2 = now;
                return Ok(entry.1.clone());
            }
        }
        if let Some(reason) = self.refused.lock().ok().and_then(|r| r.get(key).cloned()) {
            return Err(DicomError::NotAVolume(reason));
        }
        let volume = match build() {
            Ok(volume) => volume,
            Err(DicomError::NotAVolume(reason)) => {
                if let Ok(mut refused) = self.refused.lock() {
                    refused.insert(key.to_string(), reason.clone());
                }
                return Err(DicomError::NotAVolume(reason));
            }
            Err(other) => return Err(other),
        };
        if volume.bytes() > self.budget_bytes {
            return Err(DicomError::NotAVolume(format!(
                "the series needs {} MiB, more than the {} MiB set aside for volumes",
                volume.bytes() >> 20,
                self.budget_bytes >> 20
            )));
        }
        let volume = std::sync::Arc::new(volume);
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(entry) = entries.iter().find(|(k, _, _)| k == key) {
                return Ok(entry.1.clone());
            }
            entries.push((key.to_string(), volume.clone(), self.tick()));
            let mut held: usize = entries.iter().map(|(_, v, _)| v.bytes()).sum();
            while held > self.budget_bytes {
                let Some(oldest) = entries
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (_, _, used))| *used)
                    .map(|(i, _)| i)
                else {
                    break;
                };
                // Read again: a picture may have added leaps to a volume since the sum.
                held = held.saturating_sub(entries[oldest].1.bytes());
                entries.remove(oldest);
            }
        }
        Ok(volume)
    }

    /// Forgets what is known of `key` (new images arrived in the series).
    pub fn forget(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|(k, _, _)| k != key);
        }
        if let Ok(mut refused) = self.refused.lock() {
            refused.remove(key);
        }
    }
}
