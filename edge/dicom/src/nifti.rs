//! A NIfTI-1 volume (`.nii` or `.nii.gz`) written as a DICOM CT series, one file per slice, with
//! the volume's own voxel values (its scale as Rescale Slope and Intercept) and geometry
//! (spacing, position and orientation from the sform, RAS turned into DICOM's LPS). Packages
//! ship real CT volumes as NIfTI but none as a long DICOM series; tests, benchmarks and the demo
//! make their series with this.

use std::io::Read;
use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::{DicomError, Result};

/// What the series says about itself.
#[derive(Debug, Clone)]
pub struct SeriesLabels {
    pub patient_name: String,
    pub patient_id: String,
    pub study_description: String,
    pub series_description: String,
    pub accession_number: String,
    /// Seeds the UIDs, so that the same volume and labels give the same series.
    pub uid_seed: String,
}

/// A UID under the `2.25` root (a decimal number from a hash), stable for the same seed.
fn uid(seed: &str, what: &str) -> String {
    let hash = blake3::hash(format!("{seed}/{what}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_bytes()[..16]);
    format!("2.25.{}", u128::from_be_bytes(bytes) >> 1)
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> DicomError {
    DicomError::Unreadable {
        what: path.display().to_string(),
        reason: format!("as NIfTI-1: {reason}"),
    }
}

/// Writes the volume in `nifti` as a CT series in `out` (one `slice-NNNN.dcm` per slice);
/// returns the files in slice order.
pub fn write_ct_series(nifti: &Path, out: &Path, labels: &SeriesLabels) -> Result<Vec<PathBuf>> {
    let raw = std::fs::read(nifti).map_err(|source| DicomError::Io {
        path: nifti.to_path_buf(),
        source,
    })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut inflated)
            .map_err(|e| bad(nifti, e))?;
        inflated
    } else {
        raw
    };
    if bytes.len() < 352 || i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) != 348 {
        return Err(bad(nifti, "no little-endian NIfTI-1 header"));
    }
    let i16_at = |at: usize| i16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let f32_at =
        |at: usize| f32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let dims: Vec<usize> = (0..4).map(|i| i16_at(40 + 2 * i).max(0) as usize).collect();
    let (columns, rows, slices) = (dims[1], dims[2], dims[3]);
    if dims[0] < 3 || columns == 0 || rows == 0 || slices == 0 || columns > 4096 || rows > 4096 {
        return Err(bad(nifti, format!("dimensions {dims:?}")));
    }
    if i16_at(70) != 4 {
        return Err(bad(
            nifti,
            format!("datatype {} (only int16 is written)", i16_at(70)),
        ));
    }
    let offset = f32_at(108) as usize;
    let (slope, intercept) = match (f32_at(112), f32_at(116)) {
        (s, i) if s != 0.0 && s.is_finite() && i.is_finite() => (s, i),
        _ => (1.0, 0.0),
    };
    let srow: Vec<f32> = (0..12).map(|i| f32_at(280 + 4 * i)).collect();
    if i16_at(254) <= 0 {
        return Err(bad(nifti, "no sform: the volume's geometry is unknown"));
    }
    let needed = offset + columns * rows * slices * 2;
    if bytes.len() < needed {
        return Err(bad(
            nifti,
            format!("{} bytes, the voxels need {needed}", bytes.len()),
        ));
    }
    // World (RAS) of voxel (i, j, k) is srow · (i, j, k, 1); DICOM's patient axes are LPS.
    let axis = |row: usize| {
        [
            srow[row * 4],
            srow[row * 4 + 1],
            srow[row * 4 + 2],
            srow[row * 4 + 3],
        ]
    };
    let (x, y, z) = (axis(0), axis(1), axis(2));
    let world = |i: f64, j: f64, k: f64| -> [f64; 3] {
        let at = |a: [f32; 4]| {
            f64::from(a[0]) * i + f64::from(a[1]) * j + f64::from(a[2]) * k + f64::from(a[3])
        };
        [-at(x), -at(y), at(z)]
    };
    let column_step = |j: f64| {
        let (a, b) = (world(0.0, j, 0.0), world(0.0, j + 1.0, 0.0));
        [b[0] - a[0], b[1] - a[1], b[2] - a[2]]
    };
    let row_step = {
        let (a, b) = (world(0.0, 0.0, 0.0), world(1.0, 0.0, 0.0));
        [b[0] - a[0], b[1] - a[1], b[2] - a[2]]
    };
    // Rows run down the image: if the volume's j axis points anterior (-y in LPS), the rows are
    // written in reverse so that the image's top is the patient's front, as scanners write it.
    let flip = column_step(0.0)[1] < 0.0;
    let length = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    let column_spacing = length(row_step);
    let row_spacing = length(column_step(0.0));
    let slice_step = {
        let (a, b) = (world(0.0, 0.0, 0.0), world(0.0, 0.0, 1.0));
        length([b[0] - a[0], b[1] - a[1], b[2] - a[2]])
    };
    let unit = |v: [f64; 3], sign: f64| {
        let l = length(v);
        [sign * v[0] / l, sign * v[1] / l, sign * v[2] / l]
    };
    let row_direction = unit(row_step, 1.0);
    let column_direction = unit(column_step(0.0), if flip { -1.0 } else { 1.0 });
    let study = uid(&labels.uid_seed, "study");
    let series = uid(&labels.uid_seed, "series");
    let frame_of_reference = uid(&labels.uid_seed, "frame-of-reference");
    std::fs::create_dir_all(out).map_err(|source| DicomError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let text = |v: &[f64]| {
        v.iter()
            .map(|n| format!("{n:.6}"))
            .collect::<Vec<_>>()
            .join("\\")
    };
    let mut files = Vec::with_capacity(slices);
    for k in 0..slices {
        let first_row = if flip { (rows - 1) as f64 } else { 0.0 };
        let position = world(0.0, first_row, k as f64);
        let mut pixels = Vec::with_capacity(columns * rows * 2);
        for r in 0..rows {
            let j = if flip { rows - 1 - r } else { r };
            let start = offset + ((k * rows + j) * columns) * 2;
            pixels.extend_from_slice(&bytes[start..start + columns * 2]);
        }
        let instance = uid(&labels.uid_seed, &format!("instance-{k}"));
        let s = |v: &str| PrimitiveValue::from(v.to_string());
        let elements = [
            (tags::SPECIFIC_CHARACTER_SET, VR::CS, s("ISO_IR 192")),
            (tags::SOP_CLASS_UID, VR::UI, s(uids::CT_IMAGE_STORAGE)),
            (tags::SOP_INSTANCE_UID, VR::UI, s(&instance)),
            (tags::STUDY_DATE, VR::DA, s("20261130")),
            (tags::ACCESSION_NUMBER, VR::SH, s(&labels.accession_number)),
            (tags::MODALITY, VR::CS, s("CT")),
            (
                tags::STUDY_DESCRIPTION,
                VR::LO,
                s(&labels.study_description),
            ),
            (
                tags::SERIES_DESCRIPTION,
                VR::LO,
                s(&labels.series_description),
            ),
            (tags::PATIENT_NAME, VR::PN, s(&labels.patient_name)),
            (tags::PATIENT_ID, VR::LO, s(&labels.patient_id)),
            (tags::BODY_PART_EXAMINED, VR::CS, s("CHEST")),
            (
                tags::SLICE_THICKNESS,
                VR::DS,
                s(&format!("{slice_step:.6}")),
            ),
            (tags::STUDY_INSTANCE_UID, VR::UI, s(&study)),
            (tags::SERIES_INSTANCE_UID, VR::UI, s(&series)),
            (tags::SERIES_NUMBER, VR::IS, s("1")),
            (tags::INSTANCE_NUMBER, VR::IS, s(&(k + 1).to_string())),
            (tags::IMAGE_POSITION_PATIENT, VR::DS, s(&text(&position))),
            (
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                s(&text(&[row_direction, column_direction].concat())),
            ),
            (tags::FRAME_OF_REFERENCE_UID, VR::UI, s(&frame_of_reference)),
            (tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16)),
            (tags::PHOTOMETRIC_INTERPRETATION, VR::CS, s("MONOCHROME2")),
            (tags::ROWS, VR::US, PrimitiveValue::from(rows as u16)),
            (tags::COLUMNS, VR::US, PrimitiveValue::from(columns as u16)),
            (
                tags::PIXEL_SPACING,
                VR::DS,
                s(&text(&[row_spacing, column_spacing])),
            ),
            (tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16)),
            (tags::BITS_STORED, VR::US, PrimitiveValue::from(16_u16)),
            (tags::HIGH_BIT, VR::US, PrimitiveValue::from(15_u16)),
            (
                tags::PIXEL_REPRESENTATION,
                VR::US,
                PrimitiveValue::from(1_u16),
            ),
            (tags::WINDOW_CENTER, VR::DS, s("40")),
            (tags::WINDOW_WIDTH, VR::DS, s("400")),
            (tags::RESCALE_INTERCEPT, VR::DS, s(&format!("{intercept}"))),
            (tags::RESCALE_SLOPE, VR::DS, s(&format!("{slope}"))),
            (tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(pixels)),
        ];
        let object = InMemDicomObject::from_element_iter(
            elements
                .into_iter()
                .map(|(tag, vr, value)| DataElement::new(tag, vr, value)),
        );
        let file = object
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(
                dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.uid(),
            ))
            .map_err(|e| bad(nifti, e))?;
        let path = out.join(format!("slice-{:04}.dcm", k + 1));
        file.write_to_file(&path).map_err(|e| bad(nifti, e))?;
        files.push(path);
    }
    Ok(files)
}
