//! Training on real tissue (the fixtures of `scripts/fetch-fixtures`), scaled down to run in the
//! test suite: the dataset is reproducible from its seed and keeps its splits apart, a planted
//! lesion is where its mask says, and the trained model — written as ONNX and signed — runs in
//! tract with the same outputs as in burn.

use std::path::PathBuf;

use grassroots_models::training::dataset::{
    labelled_tiles, synthetic_slides, Split, TissueSources, CLASSES,
};
use grassroots_models::training::{train, TrainingConfig};
use grassroots_models::{ModelPackage, PackageSigner, PackageVerifier, TileClassifier};
use rand::SeedableRng;

fn sources() -> TissueSources {
    let dir = PathBuf::from(std::env::var("GRASSROOTS_FIXTURES").expect(
        "set GRASSROOTS_FIXTURES to a directory filled by scripts/fetch-fixtures (as .ci/run does)",
    ));
    let slide = grassroots_slides::Slide::open(&dir.join("cmu_small_region.svs")).unwrap();
    let host = slide.region_rgb((0, 0, 2220, 2967), (555, 742)).unwrap();
    TissueSources::from_fixtures(host, &dir).unwrap()
}

#[test]
fn the_dataset_is_reproducible_and_its_lesions_are_where_their_masks_say() {
    let sources = sources();
    let draw = |seed| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        labelled_tiles(&sources, Split::Train, 5, 32, &mut rng)
    };
    let (a, b, c) = (draw(1), draw(1), draw(2));
    assert_eq!(
        a.len(),
        5 * (CLASSES.len() + 2),
        "tissue is drawn three times"
    );
    assert!(a
        .iter()
        .zip(&b)
        .all(|(x, y)| x.image == y.image && x.class == y.class));
    assert!(a.iter().zip(&c).any(|(x, y)| x.image != y.image));
    // Splits come from different rows of the host.
    assert_ne!(
        sources.host_part(Split::Train),
        sources.host_part(Split::Test)
    );

    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let slides = synthetic_slides(&sources, Split::Test, 4, &mut rng);
    assert!(slides[0].lesion_mask.is_none());
    let planted = &slides[1];
    let mask = planted
        .lesion_mask
        .as_ref()
        .expect("every other slide has a lesion");
    let area = mask.pixels().filter(|p| p[0] > 0).count();
    // At least the smallest lesion screened for: a radius of 24 px, some 1,800 px in area.
    assert!(area > 1500, "a lesion of 48 to 112 pixels across: {area}");
    // Test lesions come from the test columns of the tumour images, slides from random windows.
    assert_ne!(slides[0].image.dimensions(), (0, 0));
    assert!(slides[0].image != slides[2].image, "negatives differ");
}

#[test]
fn a_trained_model_runs_in_tract_as_in_burn_and_travels_signed() {
    let config = TrainingConfig {
        train_tiles_per_class: 40,
        validation_tiles_per_class: 15,
        epochs: 2,
        validation_slides: 4,
        test_slides: 4,
        ..TrainingConfig::default()
    };
    let mut lines = Vec::new();
    let trained = train(&sources(), &config, |line| lines.push(line.to_string())).unwrap();
    let report = &trained.report;
    assert_eq!(report.epochs.len(), 2);
    assert!(
        report.burn_tract_max_difference < 1e-3,
        "burn and tract differ by {}",
        report.burn_tract_max_difference
    );
    assert!(lines.iter().any(|l| l.starts_with("epoch 2:")));
    for rate in [
        report.validation_sensitivity,
        report.test_specificity,
        report.test_localisation_iou,
    ] {
        assert!((0.0..=1.0).contains(&rate));
    }
    assert_eq!(
        report.validation_sensitivity, 1.0,
        "the threshold is chosen for it"
    );
    assert!(trained.manifest.training_data.contains("PROXY TASK"));
    assert!(trained.manifest.thresholds.contains_key("suspicious"));

    let signer = PackageSigner::from_seed_hex(&"5a".repeat(32)).unwrap();
    let verifier = PackageVerifier::from_public_hex(&signer.public_key_hex()).unwrap();
    let bytes = ModelPackage::seal(&trained.manifest, &trained.onnx, &signer).unwrap();
    let package = ModelPackage::open(&bytes, &verifier).unwrap();
    let classifier = TileClassifier::load(&package, 8).unwrap();
    let tile = image::RgbImage::from_pixel(32, 32, image::Rgb([245, 245, 245]));
    let probabilities = classifier.classify(&[tile]).unwrap();
    assert_eq!(probabilities[0].len(), CLASSES.len());
}
