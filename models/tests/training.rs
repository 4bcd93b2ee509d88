//! Training on real tissue (the fixtures of `scripts/fetch-fixtures`), scaled down to run in the
//! test suite: the dataset is reproducible from its seed and keeps its splits apart, a planted
//! lesion is where its mask says, and the trained model — written as ONNX and signed — runs in
//! tract with the same outputs as in burn.

use std::path::PathBuf;

use grassroots_models::training::dataset::{
    labelled_tiles, synthetic_slides, HostUse, Split, TissueSources, CLASSES, LESION, TISSUE,
};
use grassroots_models::training::evaluation::{check_splits, proportion};
use grassroots_models::training::{
    evaluate_by_host, evaluate_held_out_host, train, TrainingConfig, SITE_CALIBRATION_SLIDES,
};
use grassroots_models::{ModelPackage, PackageSigner, PackageVerifier, TileClassifier};
use rand::SeedableRng;

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var("GRASSROOTS_FIXTURES").expect(
        "set GRASSROOTS_FIXTURES to a directory filled by scripts/fetch-fixtures (as .ci/run does)",
    ))
}

/// Every host and lesion image of the fixtures, at 2 um/px.
fn all_sources() -> TissueSources {
    let dir = fixtures();
    let slide = grassroots_slides::Slide::open(&dir.join("cmu_small_region.svs")).unwrap();
    let host = slide.region_rgb((0, 0, 2220, 2967), (555, 742)).unwrap();
    TissueSources::all_from_fixtures(host, 0.499, &dir, 2.0).unwrap()
}

fn sources() -> TissueSources {
    let dir = fixtures();
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
        sources.host_part(Split::Train).unwrap(),
        sources.host_part(Split::Test).unwrap()
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
        hard_negatives: 40,
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
    assert!(
        lines
            .iter()
            .any(|l| l == "40 hard negatives mined (host tissue taken most for lesion)"),
        "{lines:?}"
    );
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
    // The fold limit, chosen on validation windows, travels with the model.
    let limit = report.fold_dense_share_limit.expect("a fold limit");
    assert!((0.0..1.0).contains(&limit), "{limit}");
    assert_eq!(
        trained
            .manifest
            .thresholds
            .get(grassroots_models::folds::MANIFEST_THRESHOLD),
        Some(&limit)
    );

    let signer = PackageSigner::from_seed_hex(&"5a".repeat(32)).unwrap();
    let verifier = PackageVerifier::from_public_hex(&signer.public_key_hex()).unwrap();
    let bytes = ModelPackage::seal(&trained.manifest, &trained.onnx, &signer).unwrap();
    let package = ModelPackage::open(&bytes, &verifier).unwrap();
    let classifier = TileClassifier::load(&package, 8).unwrap();
    let tile = image::RgbImage::from_pixel(32, 32, image::Rgb([245, 245, 245]));
    let probabilities = classifier.classify(&[tile]).unwrap();
    assert_eq!(probabilities[0].len(), CLASSES.len());
}

#[test]
fn lesions_are_cut_from_tumour_in_every_split() {
    let sources = all_sources();
    for lesion in &sources.lesions {
        let name = &lesion.source.provenance.name;
        assert!(lesion.source.provenance.tumour_from.is_some(), "{name}");
        for split in [Split::Train, Split::Validation, Split::Test] {
            let column = lesion.column(split);
            assert!(
                lesion.tumour_share(column) > 0.05,
                "{name} {split:?}: {column:?} holds too little tumour"
            );
        }
    }
    // The carcinoma nest is a nest in lymphocytes and stroma: the package's nuclei types put
    // its tumour in the middle, and its right fifth (the old test column) is stroma.
    let nest = sources
        .lesions
        .iter()
        .find(|l| l.source.provenance.name == "hgsc_nest.jpg")
        .unwrap();
    let (w, h) = nest.image().dimensions();
    let share = nest.tumour_share((0, 0, w, h));
    assert!((0.15..0.35).contains(&share), "nest: {share}");
    assert!(nest.tumour_share((w * 4 / 5, 0, w / 5, h)) < 0.1);
    // Planted test lesions come from the tumour of the test columns.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let planted = synthetic_slides(&sources.holding_out(2), Split::Test, 10, &mut rng);
    assert_eq!(
        planted.iter().filter(|s| s.lesion_mask.is_some()).count(),
        5
    );
}

#[test]
fn no_region_is_in_two_splits_and_no_held_out_host_trains() {
    let sources = all_sources();
    assert_eq!(
        sources.hosts.len(),
        6,
        "the SVS and five hosts from packages"
    );
    assert_eq!(sources.lesions.len(), 3);
    for host in &sources.hosts {
        let p = &host.source.provenance;
        assert!(p.microns_per_pixel > 0.0, "{} states its scale", p.name);
        assert!(!p.origin.is_empty() && !p.scale_from.is_empty());
    }
    for index in 0..sources.hosts.len() {
        let fold = sources.holding_out(index);
        assert_eq!(check_splits(&fold), Vec::<String>::new());
        // The held-out host gives test tissue only, and nothing else does.
        let name = &sources.hosts[index].source.provenance.name;
        for (region, split, _) in fold.regions() {
            if &region == name {
                assert_eq!(split, Split::Test);
            } else if sources
                .hosts
                .iter()
                .any(|h| h.source.provenance.name == region)
            {
                assert_ne!(split, Split::Test, "{region} is a training host");
            }
        }
        assert!(
            labelled_tiles(
                &fold,
                Split::Train,
                2,
                32,
                &mut rand::rngs::StdRng::seed_from_u64(1)
            )
            .len()
                > 8
        );
    }
    // A site recalibrating a model trained without its host: the host alone, its first half
    // choosing the threshold (validation), its second half screened (test), no training.
    for index in 0..sources.hosts.len() {
        let site = sources.site_calibrating(index);
        assert_eq!(check_splits(&site), Vec::<String>::new());
        let name = &sources.hosts[index].source.provenance.name;
        let host_regions: Vec<_> = site
            .regions()
            .into_iter()
            .filter(|(region, _, _)| region == name)
            .collect();
        let splits: Vec<Split> = host_regions.iter().map(|(_, split, _)| *split).collect();
        assert_eq!(splits, vec![Split::Validation, Split::Test], "{name}");
        let (w, h) = sources.hosts[index].source.image.dimensions();
        let area: u32 = host_regions.iter().map(|(_, _, a)| a.2 * a.3).sum();
        assert_eq!(area, w * h, "{name}: the two halves cover the host");
    }
    let mut leaky_site = sources.site_calibrating(0);
    let mut copy = leaky_site.hosts[0].clone();
    copy.used = HostUse::Training;
    leaky_site.hosts.push(copy);
    assert!(
        check_splits(&leaky_site)
            .iter()
            .any(|p| p.contains("overlaps")),
        "a site host that also trains is caught"
    );
    // The check can fail: one image under two names' uses (the same host once training, once
    // held out) overlaps itself across splits.
    let mut leaky = sources.holding_out(1);
    let mut copy = leaky.hosts[1].clone();
    copy.used = HostUse::Training;
    leaky.hosts.push(copy);
    let problems = check_splits(&leaky);
    assert!(
        problems.iter().any(|p| p.contains("overlaps"))
            && problems.iter().any(|p| p.contains("held-out host")),
        "{problems:?}"
    );
}

#[test]
fn the_context_models_tile_sets_hold_no_host_tissue_the_shipped_model_trained_on() {
    // The hub's validation set and the edges' tiles for the context model are cut from the SVS
    // in bands; `model train` trains on the SVS's first 60% as a training host. No band of
    // any split may lie in that part, and no region of the validation and test splits (the
    // hub's set is the test split) in any image's trained part.
    let dir = fixtures();
    let slide = grassroots_slides::Slide::open(&dir.join("cmu_small_region.svs")).unwrap();
    let svs = slide.region_rgb((0, 0, 2220, 2967), (1110, 1483)).unwrap();
    let banded = TissueSources::banded_from_fixtures(svs.clone(), 0.499, &dir, 1.0).unwrap();
    let shipped = TissueSources::all_from_fixtures(svs, 0.499, &dir, 1.0).unwrap();
    assert_eq!(check_splits(&banded), Vec::<String>::new());
    let svs_name = &shipped.hosts[0].source.provenance.name;
    let trained: Vec<_> = shipped
        .regions()
        .into_iter()
        .filter(|(name, split, _)| name == svs_name && *split == Split::Train)
        .map(|(_, _, area)| area)
        .collect();
    assert!(!trained.is_empty());
    let banded_regions: Vec<_> = banded
        .regions()
        .into_iter()
        .filter(|(name, _, _)| name == svs_name)
        .collect();
    assert_eq!(banded_regions.len(), 12, "four bands for each split");
    let overlap = |a: &(u32, u32, u32, u32), b: &(u32, u32, u32, u32)| {
        a.0 < b.0 + b.2 && b.0 < a.0 + a.2 && a.1 < b.1 + b.3 && b.1 < a.1 + a.3
    };
    for (_, split, a) in &banded_regions {
        for b in &trained {
            assert!(
                !overlap(a, b),
                "{split:?} band {a:?} lies in trained tissue {b:?}"
            );
        }
    }
    let shipped_regions = shipped.regions();
    for (name, split, a) in banded.regions() {
        if split == Split::Train {
            continue;
        }
        for (other, other_split, b) in &shipped_regions {
            assert!(
                !(other == &name && *other_split == Split::Train && overlap(&a, b)),
                "{name}: {split:?} region {a:?} lies in trained tissue {b:?}"
            );
        }
    }
    // Every split still gives the context model's 64 px tiles of tissue and lesion (glass
    // may be short: not every band has some).
    for split in [Split::Train, Split::Validation, Split::Test] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let tiles = labelled_tiles(&banded, split, 3, 64, &mut rng);
        let of = |class: usize| tiles.iter().filter(|t| t.class == class).count();
        assert_eq!((of(TISSUE), of(LESION)), (9, 3), "{split:?}");
        assert!(tiles.iter().all(|t| t.image.dimensions() == (64, 64)));
    }
}

#[test]
fn bootstrap_intervals_bracket_their_estimate() {
    let all = proportion(&[true; 40], 1);
    assert_eq!(
        (all.estimate, all.low, all.high, all.over),
        (1.0, 1.0, 1.0, 40)
    );
    let outcomes: Vec<bool> = (0..40).map(|i| i % 4 != 0).collect();
    let mixed = proportion(&outcomes, 1);
    assert_eq!(mixed.estimate, 0.75);
    assert!(mixed.low < 0.75 && mixed.high > 0.75, "{mixed}");
    assert!(mixed.low > 0.5 && mixed.high < 0.95, "{mixed}");
    assert_eq!(proportion(&outcomes, 1).low, mixed.low, "seeded");
}

/// A small, seeded leave-one-host-out run on three hosts: each fold's model never sees its
/// held-out host, yet finds a lesion on it and clears a benign slide of it.
#[test]
fn a_model_trained_without_a_host_finds_a_lesion_on_it_and_clears_a_benign_slide() {
    let mut sources = all_sources();
    let keep = [
        "cmu_small_region.svs",
        "hgsc_stromal_he.jpg",
        "template1.png",
    ];
    sources
        .hosts
        .retain(|h| keep.contains(&h.source.provenance.name.as_str()));
    let config = TrainingConfig {
        train_tiles_per_class: 160,
        validation_tiles_per_class: 15,
        epochs: 4,
        validation_slides: 8,
        test_slides_per_host: 6,
        hard_negatives: 60,
        ..TrainingConfig::default()
    };
    let evaluation = evaluate_by_host(&sources, &config, &mut |_| {}).unwrap();
    assert!(evaluation.split_problems.is_empty());
    assert_eq!(evaluation.folds.len(), 3);
    for fold in &evaluation.folds {
        assert!(!fold.training_hosts.contains(&fold.held_out_host));
        assert_eq!(fold.training_hosts.len(), 2);
        assert!(fold.slides.iter().all(|s| s.host == fold.held_out_host));
    }
    let slides: Vec<_> = evaluation.folds.iter().flat_map(|f| &f.slides).collect();
    assert!(
        slides.iter().any(|s| s.positive && s.suspicious),
        "a held-out lesion found: {slides:?}"
    );
    assert!(
        slides.iter().any(|s| !s.positive && !s.suspicious),
        "a held-out benign slide cleared: {slides:?}"
    );
    // The same folds with the threshold chosen on the host's own first half: every
    // calibration lesion suspicious at it, the other half's slides called at it.
    for fold in &evaluation.folds {
        let site = &fold.site_calibration;
        assert_eq!(site.calibration.len(), SITE_CALIBRATION_SLIDES);
        assert_eq!(site.slides.len(), 6);
        assert!(site
            .calibration
            .iter()
            .chain(&site.slides)
            .all(|s| s.host == fold.held_out_host));
        assert!(site
            .calibration
            .iter()
            .filter(|s| s.positive)
            .all(|s| s.suspicious && s.score >= site.threshold));
        assert!(site
            .slides
            .iter()
            .all(|s| s.suspicious == (s.score >= site.threshold)));
    }
    assert_eq!(evaluation.site_calibrated.sensitivity.over, 9);
    let figures = &evaluation.held_out;
    for interval in [figures.sensitivity, figures.specificity] {
        assert!(interval.low <= interval.estimate && interval.estimate <= interval.high);
        assert_eq!(interval.over, 9);
    }
    let c = &figures.confusion;
    assert_eq!(c.lesion_called_suspicious + c.lesion_missed, 9);
    assert_eq!(c.benign_called_suspicious + c.benign_cleared, 9);
    // Quality control: three benign windows per held-out host, each clean, blurred and folded.
    let qc = &evaluation.held_out_qc;
    for count in [qc.clean, qc.blurred, qc.folded] {
        assert_eq!(count.slides, 9, "{qc:?}");
        assert!(count.flagged <= count.slides);
    }
    // Folds are judged by density against a limit chosen on the other hosts' validation
    // windows; blur by this small model's blur class, which hardly finds blur on a host it
    // never saw (the full run's context model flags 42 of 42). With two training hosts the
    // limit can fall to its floor and flag the SVS's uneven tissue clean or blurred alike.
    assert!(
        qc.folded.flagged > qc.clean.flagged && qc.blurred.flagged >= qc.clean.flagged,
        "a folded slide is flagged more often than a clean one, one out of focus no less: {qc:?}"
    );
}

#[test]
fn a_fold_lays_the_mirror_image_of_its_neighbour_over_the_tissue() {
    use grassroots_models::training::evaluation::fold_over;
    let image = image::RgbImage::from_fn(10, 2, |x, _| image::Rgb([200 - 10 * x as u8, 128, 255]));
    let folded = fold_over(&image, 5, 3);
    // Left of the line and beyond the band: untouched.
    for x in (0..5).chain(8..10) {
        assert_eq!(folded.get_pixel(x, 0), image.get_pixel(x, 0));
    }
    // At line + d, the tissue at line - 1 - d lies over it: colours multiply (darker).
    for d in 0..3u32 {
        let (under, over) = (image.get_pixel(5 + d, 1).0, image.get_pixel(4 - d, 1).0);
        let expected = [0, 1, 2].map(|c| (u16::from(under[c]) * u16::from(over[c]) / 255) as u8);
        assert_eq!(folded.get_pixel(5 + d, 1).0, expected);
    }
}

#[test]
fn a_fold_of_real_tissue_is_dense_and_the_tissue_clean_or_blurred_is_not() {
    use grassroots_models::folds::dense_share;
    use grassroots_models::screening::PreparedGrid;
    use grassroots_models::training::evaluation::fold_over;
    // Every host but the SVS at 1 um/px, 64 px tiles every 32 px, as the context model screens;
    // folded as the evaluation folds (40% of the width under its neighbour's mirror image).
    let hosts = grassroots_models::training::sources::other_hosts(&fixtures(), 1.0).unwrap();
    assert_eq!(hosts.len(), 5);
    let share = |image: &image::RgbImage| dense_share(&PreparedGrid::cut(image, 64, 32).grid);
    for host in hosts {
        let (name, image) = (&host.provenance.name, &host.image);
        let w = image.width();
        let folded = fold_over(image, w / 2, w * 2 / 5);
        let blurred = grassroots_models::training::dataset::blur(image, 5.0);
        let (clean, folded, blurred) = (
            share(image).unwrap(),
            share(&folded).unwrap(),
            share(&blurred).unwrap(),
        );
        // Seen: clean and blurred 0.00-0.03; folded 0.40-0.47, template4 0.21 (much of its
        // folded band lies over glass).
        assert!(
            clean < 0.05 && blurred < 0.05 && folded > 0.15,
            "{name}: dense share clean {clean:.2}, blurred {blurred:.2}, folded {folded:.2}"
        );
    }
}

#[test]
fn the_context_model_trains_at_1_um_per_pixel_and_runs_in_tract_as_in_burn() {
    let dir = fixtures();
    let slide = grassroots_slides::Slide::open(&dir.join("cmu_small_region.svs")).unwrap();
    let host = slide.region_rgb((0, 0, 2220, 2967), (1110, 1483)).unwrap();
    let mut sources = TissueSources::all_from_fixtures(host, 0.499, &dir, 1.0).unwrap();
    sources.hosts.retain(|h| {
        ["cmu_small_region.svs", "template2.png"].contains(&h.source.provenance.name.as_str())
    });
    let config = TrainingConfig {
        train_tiles_per_class: 12,
        validation_tiles_per_class: 6,
        epochs: 1,
        validation_slides: 4,
        test_slides_per_host: 2,
        hard_negatives: 0,
        ..TrainingConfig::context()
    };
    // The quick model's resolution is refused for this tissue before anything trains.
    let refused = train(&sources, &TrainingConfig::default(), |_| {})
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("um/px"), "{refused}");
    let trained = train(&sources, &config, |_| {}).unwrap();
    assert!(
        trained.report.burn_tract_max_difference < 1e-3,
        "burn and tract differ by {}",
        trained.report.burn_tract_max_difference
    );
    assert_eq!(
        (
            trained.manifest.input.width,
            trained.manifest.microns_per_pixel
        ),
        (64, 1.0)
    );
    // Four convolutions in the graph the edge runs.
    let weights = grassroots_models::federated::Parameters::from_onnx(&trained.onnx)
        .unwrap()
        .to_cnn()
        .unwrap();
    let channels: Vec<usize> = weights.convs.iter().map(|c| c.out_channels).collect();
    assert_eq!(channels, config.channels);
}

#[test]
fn sources_that_cannot_be_evaluated_by_host_are_refused_before_training() {
    // One banded host: its test bands are not a held-out host.
    let error = evaluate_by_host(&sources(), &TrainingConfig::default(), &mut |_| {}).unwrap_err();
    assert!(error.to_string().contains("at least two hosts"), "{error}");
}

#[test]
fn the_commands_tiles_option_sets_a_quarter_as_many_validation_tiles_and_nothing_else() {
    let context = TrainingConfig::context();
    let set = context.clone().with_tiles_per_class(500);
    assert_eq!(
        (set.train_tiles_per_class, set.validation_tiles_per_class),
        (500, 125)
    );
    assert_eq!(
        context
            .clone()
            .with_tiles_per_class(20)
            .validation_tiles_per_class,
        10
    );
    assert_eq!((set.tile, set.channels), (context.tile, context.channels));
}

#[test]
fn one_fold_alone_is_refused_for_a_missing_host_or_sources_not_split_by_host() {
    let config = TrainingConfig::default();
    let error = evaluate_held_out_host(&all_sources(), 6, &config, &mut |_| {}).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no host 6: the sources have 6 hosts"),
        "{error}"
    );
    let error = evaluate_held_out_host(&sources(), 0, &config, &mut |_| {}).unwrap_err();
    assert!(error.to_string().contains("at least two hosts"), "{error}");
}

#[test]
fn a_run_without_a_validation_lesion_is_refused_for_want_of_a_threshold() {
    // One validation slide: the first of every pair, which holds no lesion.
    let config = TrainingConfig {
        train_tiles_per_class: 10,
        validation_tiles_per_class: 5,
        epochs: 1,
        validation_slides: 1,
        hard_negatives: 0,
        ..TrainingConfig::default()
    };
    let error = train(&sources(), &config, |_| {}).err().expect("refused");
    assert!(
        error
            .to_string()
            .contains("no validation slide holds a lesion"),
        "{error}"
    );
}
