//! Screening whole slides at the edge with a model trained here (scaled down to run in the test
//! suite): the real SVS is read part by part into one grid and triaged; a slide of bare glass
//! needs a re-scan for want of tissue.

use std::path::Path;

use grassroots_models::training::dataset::TissueSources;
use grassroots_models::training::{train, TrainingConfig};
use grassroots_models::triage::TriageClass;
use grassroots_models::{ModelPackage, PackageSigner, PackageVerifier, TileClassifier};
use grassroots_slides::Slide;

mod common;

fn quick_model(fixtures: &Path) -> TileClassifier {
    let slide = Slide::open(&fixtures.join("cmu_small_region.svs")).unwrap();
    let host = slide.region_rgb((0, 0, 2220, 2967), (555, 742)).unwrap();
    let sources = TissueSources::from_fixtures(host, fixtures).unwrap();
    let config = TrainingConfig {
        train_tiles_per_class: 40,
        validation_tiles_per_class: 10,
        epochs: 2,
        validation_slides: 2,
        test_slides: 2,
        ..TrainingConfig::default()
    };
    let trained = train(&sources, &config, |_| {}).unwrap();
    let signer = PackageSigner::from_seed_hex(&"3c".repeat(32)).unwrap();
    let verifier = PackageVerifier::from_public_hex(&signer.public_key_hex()).unwrap();
    let bytes = ModelPackage::seal(&trained.manifest, &trained.onnx, &signer).unwrap();
    TileClassifier::load(&ModelPackage::open(&bytes, &verifier).unwrap(), 64).unwrap()
}

#[test]
fn slides_are_screened_part_by_part_and_bare_glass_needs_a_rescan() {
    let svs = common::fixture_svs();
    let fixtures = svs.parent().unwrap();
    let classifier = quick_model(fixtures);

    let slide = Slide::open(&svs).unwrap();
    let mut reports = Vec::new();
    let screening = grassroots_edge::screening::screen_slide(&slide, &classifier, |done, parts| {
        reports.push((done, parts))
    })
    .unwrap();
    // 2220 x 2967 px at 0.499 um/px is 553 x 740 px at 2 um/px: 33 x 45 cells of 32 px, 16 apart.
    assert_eq!((screening.cols, screening.rows), (33, 45));
    assert_eq!(screening.lesion_map.len(), 33 * 45);
    assert_eq!(reports.last(), Some(&(1, 1)));
    assert!(
        screening.tiles_classified > 100,
        "{} tiles on tissue",
        screening.tiles_classified
    );
    assert!(!screening.triage.reasons.is_empty());
    assert!((screening.cell_pixels - 16.0 * 2.0 / 0.499).abs() < 0.1);

    // Bare glass: a pyramidal TIFF of near-white pixels made by libvips.
    let dir = tempfile::tempdir().unwrap();
    let glass = dir.path().join("glass.tif");
    let make = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "vips black {d}/b.v 3000 2000 --bands 3 && vips linear {d}/b.v {d}/w.v 1 244 --uchar && vips tiffsave {d}/w.v {out} --tile --pyramid --compression jpeg --tile-width 256 --tile-height 256",
            d = dir.path().display(),
            out = glass.display()
        ))
        .status()
        .unwrap();
    assert!(make.success());
    let glass = Slide::open(&glass).unwrap();
    let screening =
        grassroots_edge::screening::screen_slide(&glass, &classifier, |_, _| {}).unwrap();
    assert_eq!(screening.triage.class, TriageClass::NeedsRescan);
    assert_eq!(screening.triage.reasons, vec!["no tissue".to_string()]);
    assert_eq!(screening.tiles_classified, 0);
}
