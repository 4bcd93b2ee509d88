//! Times the renderers on the chest CT (the fixtures' NIfTI written as a series): a quick loop
//! for working on their speed without building the whole binary. `grassroots bench render` is
//! the benchmark of record. Usage: render_profile FIXTURES [FRAMES] [vr|planes] (both when
//! neither is named).
use std::time::Instant;

use grassroots_dicom::raycast::{render_volume, VolumeView};
use grassroots_dicom::volume::{cut, Orientation, PlaneRequest, Projection, Volume};

const PLANE_KINDS: [(&str, Orientation, Projection, f64); 2] = [
    ("MPR coronal", Orientation::Coronal, Projection::Plane, 0.0),
    (
        "MIP coronal 40 mm",
        Orientation::Coronal,
        Projection::Mip,
        40.0,
    ),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let fixtures = std::path::PathBuf::from(
        args.next()
            .ok_or("usage: render_profile FIXTURES [FRAMES] [vr|planes]")?,
    );
    let frames: usize = args.next().map(|f| f.parse()).transpose()?.unwrap_or(10);
    let only = args.next();
    let (planes, vr) = match only.as_deref() {
        None => (true, true),
        Some("vr") => (false, true),
        Some("planes") => (true, false),
        Some(other) => return Err(format!("{other}: vr or planes").into()),
    };
    let dir = std::env::temp_dir().join("grassroots-render-profile");
    let files = if dir.join("slice-0000.dcm").is_file() {
        let mut files: Vec<_> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        files
    } else {
        grassroots_dicom::nifti::write_ct_series(
            &fixtures.join("ct/cxr.nii.gz"),
            &dir,
            &grassroots_dicom::nifti::SeriesLabels {
                patient_name: "P".into(),
                patient_id: "P".into(),
                study_description: "S".into(),
                series_description: "S".into(),
                accession_number: "A".into(),
                uid_seed: "profile".into(),
            },
        )?
    };
    let instances = files
        .iter()
        .map(|path| {
            let object = dicom_object::OpenFileOptions::new().open_file(path)?;
            Ok((
                path.clone(),
                grassroots_dicom::InstanceAttributes::from_object(&object, "p")?,
            ))
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let volume = Volume::build(&instances, 4 << 30)?;
    let blocks = volume.blocks();
    let time = |what: &str, f: &mut dyn FnMut(usize)| {
        f(0);
        let started = Instant::now();
        for i in 1..=frames {
            f(i);
        }
        println!(
            "{what:<40} {:>8.1} ms",
            started.elapsed().as_secs_f64() * 1000.0 / frames as f64
        );
    };
    let plane_kinds = if planes { &PLANE_KINDS[..] } else { &[] };
    for &(name, orientation, projection, slab) in plane_kinds {
        let whole = PlaneRequest::fitting(&volume, orientation, 1.0);
        let mut request = PlaneRequest::fitting(
            &volume,
            orientation,
            whole.width.max(whole.height) as f64 / 512.0,
        );
        request.projection = projection;
        request.slab_mm = slab;
        time(name, &mut |i| {
            let mut r = request;
            r.rotation_degrees = i as f64;
            std::hint::black_box(cut(&volume, &r));
        });
    }
    let shadings = if vr { &[false, true][..] } else { &[] };
    for &shade in shadings {
        time(&format!("VR bone 512 shade {shade}"), &mut |i| {
            let view = VolumeView {
                azimuth_degrees: i as f64,
                shade,
                ..VolumeView::default()
            };
            std::hint::black_box(render_volume(&volume, blocks, &view));
        });
    }
    Ok(())
}
