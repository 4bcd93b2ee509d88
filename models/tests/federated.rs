//! Federated training on the proxy task, in one process: three sites with skewed labels
//! (non-IID), against centralised training on the union of their tiles; and one poisoned site
//! (its update scaled by -10), which plain FedAvg follows and the defences do not: outlier
//! refusal keeps the clean run's accuracy, the coordinate-wise median most of it.

use std::path::PathBuf;

use grassroots_models::federated::{
    evaluate, initial_parameters, simulate_rounds, train_local, AggregationSettings, CombiningRule,
    LocalTrainingConfig, SiteBehaviour,
};
use grassroots_models::training::dataset::{labelled_tiles, LabelledTile, Split, TissueSources};
use rand::SeedableRng;

const TILE: u32 = 32;
/// Rounds of one local epoch each: FedAvg needs about as many local steps as centralised
/// training takes on the union (each site holds a third of the tiles), and some more for the
/// skew.
const ROUNDS: usize = 25;
const LOCAL_EPOCHS: usize = 1;
const CENTRAL_EPOCHS: usize = 12;
/// Rounds of the poisoning comparison (the same for the clean run it is compared with).
const POISON_ROUNDS: usize = 10;

fn sources() -> TissueSources {
    let dir = PathBuf::from(std::env::var("GRASSROOTS_FIXTURES").expect(
        "set GRASSROOTS_FIXTURES to a directory filled by scripts/fetch-fixtures (as .ci/run does)",
    ));
    let slide = grassroots_slides::Slide::open(&dir.join("cmu_small_region.svs")).unwrap();
    let host = slide.region_rgb((0, 0, 2220, 2967), (555, 742)).unwrap();
    TissueSources::from_fixtures(host, &dir).unwrap()
}

/// Label skew: each site holds three in five of two classes' tiles and one in five of the
/// others' (a county hospital sees all kinds of tissue, some far more than others).
fn non_iid(tiles: Vec<LabelledTile>) -> Vec<Vec<LabelledTile>> {
    let favourite = |class: usize| class / 2 % 3;
    let mut sites = vec![Vec::new(), Vec::new(), Vec::new()];
    let mut seen = [0usize; 8];
    for tile in tiles {
        let n = seen[tile.class];
        seen[tile.class] += 1;
        let site = match n % 5 {
            0..=2 => favourite(tile.class),
            3 => (favourite(tile.class) + 1) % 3,
            _ => (favourite(tile.class) + 2) % 3,
        };
        sites[site].push(tile);
    }
    sites
}

struct Data {
    sites: Vec<Vec<LabelledTile>>,
    test: Vec<LabelledTile>,
}

fn data() -> Data {
    let sources = sources();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let train = labelled_tiles(&sources, Split::Train, 100, TILE, &mut rng);
    let test = labelled_tiles(&sources, Split::Test, 100, TILE, &mut rng);
    Data {
        sites: non_iid(train),
        test,
    }
}

fn local() -> LocalTrainingConfig {
    LocalTrainingConfig {
        epochs: LOCAL_EPOCHS,
        batch: 16,
        learning_rate: 2e-3,
        proximal_mu: 0.0,
        seed: 11,
    }
}

fn named(data: &Data, poisoned: Option<f32>) -> Vec<(String, Vec<LabelledTile>, SiteBehaviour)> {
    data.sites
        .iter()
        .enumerate()
        .map(|(i, tiles)| {
            let behaviour = match poisoned {
                Some(factor) if i == 2 => SiteBehaviour::Scaled(factor),
                _ => SiteBehaviour::Honest,
            };
            (format!("site-{i}"), tiles.clone(), behaviour)
        })
        .collect()
}

#[test]
fn federated_training_on_skewed_sites_comes_within_two_points_of_centralised() {
    let data = data();
    let initial = initial_parameters(5).unwrap();
    let union: Vec<LabelledTile> = data.sites.iter().flatten().cloned().collect();
    let central = train_local(
        &initial,
        union,
        TILE,
        &LocalTrainingConfig {
            epochs: CENTRAL_EPOCHS,
            ..local()
        },
        || true,
    )
    .unwrap();
    let mut central_parameters = initial.clone();
    for (v, d) in central_parameters.values.iter_mut().zip(&central.delta) {
        *v += d;
    }
    let central_accuracy = evaluate(&central_parameters, &data.test, TILE).unwrap();
    let settings = AggregationSettings::default();
    let (federated_parameters, rounds) = simulate_rounds(
        &initial,
        &named(&data, None),
        &data.test,
        TILE,
        ROUNDS,
        &local(),
        &settings,
    )
    .unwrap();
    let federated = rounds.last().unwrap().accuracy;
    eprintln!(
        "centralised {central_accuracy:.3}, federated by round {:?}",
        rounds.iter().map(|r| r.accuracy).collect::<Vec<_>>()
    );
    assert!(rounds.iter().all(|r| r.refused.is_empty()), "{rounds:?}");
    assert!(
        federated >= central_accuracy - 0.02,
        "federated {federated:.3} vs centralised {central_accuracy:.3}"
    );
    assert!(federated > 0.6, "the model learnt: {federated:.3}");

    // Slide level: both models screen the same 40 held-out synthetic slides (20 with a planted
    // lesion) as an edge screens a slide.
    let sources = sources();
    let auc = |parameters| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(99);
        grassroots_models::training::slide_auc(parameters, &sources, TILE, 40, 16, &mut rng)
            .unwrap()
    };
    let (central_auc, federated_auc) = (auc(&central_parameters), auc(&federated_parameters));
    eprintln!("slide-level AUC: centralised {central_auc:.3}, federated {federated_auc:.3}");
    assert!(
        federated_auc >= central_auc - 0.02,
        "slide-level AUC: federated {federated_auc:.3} vs centralised {central_auc:.3}"
    );
}

#[test]
fn a_poisoned_site_drags_fedavg_and_not_the_robust_rules() {
    let data = data();
    let initial = initial_parameters(5).unwrap();
    let run = |poisoned: Option<f32>, settings: AggregationSettings| {
        simulate_rounds(
            &initial,
            &named(&data, poisoned),
            &data.test,
            TILE,
            POISON_ROUNDS,
            &local(),
            &settings,
        )
        .unwrap()
        .1
        .last()
        .unwrap()
        .accuracy
    };
    let unguarded = AggregationSettings {
        outlier_factor: None,
        ..Default::default()
    };
    let clean = run(None, AggregationSettings::default());
    let attacked = run(Some(-10.0), unguarded);
    let median = run(
        Some(-10.0),
        AggregationSettings {
            rule: CombiningRule::Median,
            ..unguarded
        },
    );
    let refused = run(Some(-10.0), AggregationSettings::default());
    eprintln!("clean {clean:.3}; scaled by -10: FedAvg {attacked:.3}, median {median:.3}, outlier refusal {refused:.3}");
    assert!(
        attacked < clean - 0.2,
        "plain FedAvg is hurt: {attacked:.3} vs {clean:.3}"
    );
    // Refusing the outlier keeps the round where the clean run is: the defence that holds.
    assert!(
        refused >= clean - 0.02,
        "outlier refusal {refused:.3} vs clean {clean:.3}"
    );
    // The coordinate-wise median also defends, at a price when sites' labels differ: with
    // three sites it takes one site's value of every coordinate, not a mix of all.
    assert!(
        median > attacked + 0.2,
        "median {median:.3} vs attacked FedAvg {attacked:.3}"
    );
}
