//! Screening whole slides with a model trained here (scaled down to run in the test suite).
//!
//! In the library: the real SVS read part by part into one grid and triaged; bare glass needs a
//! re-scan for want of tissue; a darkened scan fails exposure control. In a running edge (real
//! processes): slides are screened as they arrive, a kill mid-screening resumes without
//! screening finished parts again, and broken packages are refused while the model stays.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use grassroots_models::package::Manifest;
use grassroots_models::training::dataset::TissueSources;
use grassroots_models::training::{train, TrainingConfig};
use grassroots_models::triage::TriageClass;
use grassroots_models::{ModelPackage, PackageSigner, PackageVerifier, TileClassifier};
use grassroots_slides::Slide;

mod common;
use common::*;

/// A model trained once per test binary: its manifest and ONNX graph.
fn quick_model() -> &'static (Manifest, Vec<u8>) {
    static MODEL: OnceLock<(Manifest, Vec<u8>)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let svs = fixture_svs();
        let fixtures = svs.parent().unwrap();
        let slide = Slide::open(&svs).unwrap();
        let host = slide.region_rgb((0, 0, 2220, 2967), (555, 742)).unwrap();
        let sources = TissueSources::from_fixtures(host, fixtures).unwrap();
        let config = TrainingConfig {
            train_tiles_per_class: 150,
            validation_tiles_per_class: 30,
            epochs: 6,
            validation_slides: 8,
            test_slides: 2,
            ..TrainingConfig::default()
        };
        let trained = train(&sources, &config, |_| {}).unwrap();
        (trained.manifest, trained.onnx)
    })
}

fn sealed(seed_hex: &str) -> Vec<u8> {
    let (manifest, onnx) = quick_model();
    let signer = PackageSigner::from_seed_hex(seed_hex).unwrap();
    ModelPackage::seal(manifest, onnx, &signer).unwrap()
}

fn quick_classifier() -> TileClassifier {
    let signer = PackageSigner::from_seed_hex(&"3c".repeat(32)).unwrap();
    let verifier = PackageVerifier::from_public_hex(&signer.public_key_hex()).unwrap();
    let bytes = sealed(&"3c".repeat(32));
    TileClassifier::load(&ModelPackage::open(&bytes, &verifier).unwrap(), 64).unwrap()
}

/// Runs a libvips pipeline (`sh -c`), panicking with its output if it fails.
fn vips(script: &str) {
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A pyramidal JPEG TIFF of `input` at `out`.
fn pyramid(input: &str, out: &Path) -> String {
    format!(
        "vips tiffsave {input} {} --tile --pyramid --compression jpeg --Q 90 --tile-width 256 --tile-height 256",
        out.display()
    )
}

#[test]
fn slides_are_screened_part_by_part_and_bare_glass_or_a_dark_scan_needs_a_rescan() {
    let svs = fixture_svs();
    let classifier = quick_classifier();

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
    let exposure = screening.triage.exposure.unwrap();
    assert!(exposure.bright > 200, "{exposure:?}");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // Bare glass: near-white pixels, made by libvips.
    let glass = dir.path().join("glass.tif");
    vips(&format!(
        "vips black {d}/b.v 3000 2000 --bands 3 && vips linear {d}/b.v {d}/w.v 1 244 --uchar && {}",
        pyramid(&format!("{d}/w.v"), &glass)
    ));
    let glass = Slide::open(&glass).unwrap();
    let screening =
        grassroots_edge::screening::screen_slide(&glass, &classifier, |_, _| {}).unwrap();
    assert_eq!(screening.triage.class, TriageClass::NeedsRescan);
    assert_eq!(screening.triage.reasons, vec!["no tissue".to_string()]);
    assert_eq!(screening.tiles_classified, 0);

    // The real slide scanned with too little light: half as bright.
    let dark = dir.path().join("dark.tif");
    vips(&format!(
        "vips linear {} {d}/dark.v 0.5 0 --uchar && {}",
        svs.display(),
        pyramid(&format!("{d}/dark.v"), &dark)
    ));
    let dark = Slide::open(&dark).unwrap();
    let screening =
        grassroots_edge::screening::screen_slide(&dark, &classifier, |_, _| {}).unwrap();
    assert_eq!(screening.triage.class, TriageClass::NeedsRescan);
    assert!(
        screening.triage.reasons[0].starts_with("under-exposed"),
        "{:?}",
        screening.triage.reasons
    );
}

/// The bounding box of a GeoJSON polygon ring: (x0, y0, x1, y1).
fn bounds(polygon: &[[f64; 2]]) -> (f64, f64, f64, f64) {
    polygon.iter().fold(
        (f64::MAX, f64::MAX, f64::MIN, f64::MIN),
        |(x0, y0, x1, y1), [x, y]| (x0.min(*x), y0.min(*y), x1.max(*x), y1.max(*y)),
    )
}

#[test]
fn a_planted_lesion_is_flagged_and_found_and_a_blurred_slide_fails_quality_control() {
    let svs = fixture_svs();
    let fixtures = svs.parent().unwrap();
    let classifier = quick_classifier();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();

    // The real SVS twice across and down, with a column of the tumour image's held-out test
    // part (never trained on) pasted in at (1600, 2000): 400 x 1200 px at full resolution.
    let (x, y, w, h) = (1600.0, 2000.0, 400.0, 1200.0);
    let planted = dir.path().join("planted.tif");
    vips(&format!(
        "vips flatten {svs} {d}/flat.v && vips replicate {d}/flat.v {d}/host.v 2 2 && vips extract_area {target} {d}/col.v 800 100 200 600 && vips resize {d}/col.v {d}/col2.v 2 && vips insert {d}/host.v {d}/col2.v {d}/planted.v {x} {y} && {}",
        pyramid(&format!("{d}/planted.v"), &planted),
        svs = svs.display(),
        target = fixtures.join("tissue/target_image.png").display(),
    ));
    let slide = Slide::open(&planted).unwrap();
    let screening =
        grassroots_edge::screening::screen_slide(&slide, &classifier, |_, _| {}).unwrap();
    assert_eq!(
        screening.triage.class,
        TriageClass::Suspicious,
        "{:?}",
        screening.triage.reasons
    );
    // The control: the same host without the lesion scores lower.
    let host = dir.path().join("host.tif");
    vips(&pyramid(&format!("{d}/host.v"), &host));
    let control = grassroots_edge::screening::screen_slide(
        &Slide::open(&host).unwrap(),
        &classifier,
        |_, _| {},
    )
    .unwrap();
    assert!(
        control.triage.score < screening.triage.score,
        "host alone {} vs with the lesion {}",
        control.triage.score,
        screening.triage.score
    );
    let (x0, y0, x1, y1) = bounds(&screening.triage.regions[0].polygon);
    let overlap = (x1.min(x + w) - x0.max(x)).max(0.0) * (y1.min(y + h) - y0.max(y)).max(0.0);
    assert!(
        overlap > 0.0,
        "top region {:?} misses the planted lesion",
        (x0, y0, x1, y1)
    );

    // The real slide out of focus (a Gaussian blur of 8 px at full resolution).
    let blurred = dir.path().join("blurred.tif");
    vips(&format!(
        "vips gaussblur {svs} {d}/blur.v 8 && {}",
        pyramid(&format!("{d}/blur.v"), &blurred),
        svs = svs.display()
    ));
    let slide = Slide::open(&blurred).unwrap();
    let screening =
        grassroots_edge::screening::screen_slide(&slide, &classifier, |_, _| {}).unwrap();
    assert_eq!(screening.triage.class, TriageClass::NeedsRescan);
    assert!(
        screening.triage.reasons[0].starts_with("out of focus"),
        "{:?}",
        screening.triage.reasons
    );
}

async fn job(client: &reqwest::Client, edge: &Node, id: &str) -> serde_json::Value {
    get_json(client, format!("{}/api/v1/screening/{id}", edge.http)).await
}

/// The jobs as `grassroots slide screening` reads them (the edge's status file).
fn status_file(data: &Path) -> Vec<serde_json::Value> {
    std::fs::read(data.join("screening/status.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_screens_new_slides_resumes_after_a_kill_and_refuses_bad_models() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    net.add_user("county-a", "admin", "it-wang");
    let package = net.dir.path().join("screening.grmodel");
    std::fs::write(&package, sealed(net.authority().model_signing_seed_hex())).unwrap();
    let digest = blake3::hash(&std::fs::read(&package).unwrap())
        .to_hex()
        .to_string();

    // A slide nine times the SVS (6660 x 8901 px), screened in parts of 8 x 8 cells: 234 parts.
    let big = net.dir.path().join("big.tif");
    vips(&format!(
        "vips replicate {} {d}/r.v 3 3 && {}",
        fixture_svs().display(),
        pyramid(&format!("{}/r.v", net.dir.path().display()), &big),
        d = net.dir.path().display()
    ));
    let args = [
        "--screening-model",
        &path(&package),
        "--screening-part-cells",
        "8",
    ];
    let mut edge = net.start_edge("county-a", &args);
    let client = signed_in(&edge, "dr-li").await;
    let uploaded: serde_json::Value = client
        .post(format!("{}/api/v1/slides?name=big.tif", edge.http))
        .body(std::fs::read(&big).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = uploaded["slide"]["id"].as_str().unwrap().to_string();

    // Screening starts by itself; kill the edge once a good share of the parts are done.
    let data = net.data("county-a");
    let mut done_before_kill = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        if let Some(job) = status_file(&data).into_iter().find(|j| j["slide_id"] == id) {
            done_before_kill = job["parts_done"].as_u64().unwrap_or(0);
            if done_before_kill >= 20 {
                break;
            }
            assert_ne!(job["state"], "done", "screening finished before the kill");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(done_before_kill >= 20, "screening never got going");
    edge.kill9();
    drop(edge);

    // Restart with a package whose signature is broken: refused, the installed model stays.
    let mut tampered = std::fs::read(&package).unwrap();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
    let tampered_path = net.dir.path().join("tampered.grmodel");
    std::fs::write(&tampered_path, &tampered).unwrap();
    let edge = net.start_edge(
        "county-a",
        &[
            "--screening-model",
            &path(&tampered_path),
            "--screening-part-cells",
            "8",
        ],
    );
    edge.wait_for_log("screening model not installed", Duration::from_secs(10));
    let client = signed_in(&edge, "dr-li").await;
    eventually("the job to finish", Duration::from_secs(180), || async {
        job(&client, &edge, &id).await["state"] == "done"
    })
    .await;
    edge.wait_for_log("resuming screening", Duration::from_secs(1));
    let finished = job(&client, &edge, &id).await;
    assert_eq!(finished["model"], digest.as_str());
    assert_eq!(finished["runs"], 2);
    let parts = finished["parts"].as_u64().unwrap();
    assert_eq!(parts, 234);
    let by_run: Vec<u64> = finished["parts_by_run"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // Every part screened once: what the first run finished stayed finished.
    assert_eq!(by_run.iter().sum::<u64>(), parts, "{by_run:?}");
    assert!(
        by_run[0] >= done_before_kill,
        "{by_run:?} vs {done_before_kill}"
    );
    let result = &finished["result"];
    // 6660 x 8901 px at about 0.5 um/px (libvips rounds the resolution) is about 1665 x 2225 px
    // at 2 um/px: about 103 x 138 cells.
    let (cols, rows) = (
        result["cols"].as_u64().unwrap() as u32,
        result["rows"].as_u64().unwrap() as u32,
    );
    assert!(
        (102..=103).contains(&cols) && rows == 138,
        "{cols} x {rows}"
    );
    assert!(result["tiles_classified"].as_u64().unwrap() > 1000);

    // The heatmap (a pixel per cell) and the regions serve; the worklist lists the slide.
    let heatmap = client
        .get(format!("{}/screening/{id}/heatmap.png", edge.http))
        .send()
        .await
        .unwrap();
    assert_eq!(heatmap.status(), 200);
    let heatmap = image::load_from_memory(&heatmap.bytes().await.unwrap()).unwrap();
    assert_eq!((heatmap.width(), heatmap.height()), (cols, rows));
    let regions = get_json(
        &client,
        format!("{}/screening/{id}/regions.geojson", edge.http),
    )
    .await;
    assert_eq!(regions["type"], "FeatureCollection");
    let worklist = get_text(&client, format!("{}/worklist", edge.http)).await;
    assert!(worklist.contains("big.tif"), "{worklist}");
    let viewer = get_text(&client, format!("{}/view/{id}", edge.http)).await;
    assert!(viewer.contains("data-heatmap="), "{viewer}");

    // Bad packages offered over the API: each refused with its reason; the model stays.
    let admin = signed_in(&edge, "it-wang").await;
    let offer = |client: reqwest::Client, bytes: Vec<u8>| {
        let url = format!("{}/api/v1/models", edge.http);
        async move { client.post(url).body(bytes).send().await.unwrap() }
    };
    let refused = offer(admin.clone(), tampered.clone()).await;
    assert_eq!(refused.status(), 422);
    let reason = refused.json::<serde_json::Value>().await.unwrap()["error"].to_string();
    assert!(reason.contains("signature does not verify"), "{reason}");

    let seed = net.authority().model_signing_seed_hex().to_string();
    let signer = PackageSigner::from_seed_hex(&seed).unwrap();
    let (manifest, onnx) = quick_model();
    let mut wrong_shape = manifest.clone();
    wrong_shape.input.width = 48;
    wrong_shape.input.height = 48;
    let refused = offer(
        admin.clone(),
        ModelPackage::seal(&wrong_shape, onnx, &signer).unwrap(),
    )
    .await;
    assert_eq!(refused.status(), 422);
    let reason = refused.json::<serde_json::Value>().await.unwrap()["error"].to_string();
    assert!(reason.contains("does not match the manifest"), "{reason}");

    let mut corrupt = onnx.clone();
    corrupt.truncate(onnx.len() / 2);
    let refused = offer(
        admin.clone(),
        ModelPackage::seal(manifest, &corrupt, &signer).unwrap(),
    )
    .await;
    assert_eq!(refused.status(), 422);
    let reason = refused.json::<serde_json::Value>().await.unwrap()["error"].to_string();
    assert!(reason.contains("ONNX graph cannot be loaded"), "{reason}");

    let status = get_json(&client, format!("{}/api/v1/models", edge.http)).await;
    assert_eq!(status["active"]["digest"], digest.as_str());
    assert!(status["last_refusal"].as_str().unwrap().contains("ONNX"));
    // Only admins install models.
    let clinician = offer(client.clone(), std::fs::read(&package).unwrap()).await;
    assert_eq!(clinician.status(), 403);

    // The CLI reads the same progress while the edge runs.
    let output = std::process::Command::new(bin())
        .args(["slide", "screening", "--data", &path(&data)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(text.contains(&id), "{text}");
}
