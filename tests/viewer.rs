//! A real browser (Debian's Chromium, driven by playwright-core) signs in to an edge, opens the
//! viewer on the real SVS, zooms and pans; the test asserts that tiles were fetched and tissue
//! drawn, checks the page on a phone-sized touch screen, and keeps the screenshots
//! (`$CARGO_TARGET_TMPDIR/viewer.png`, `viewer-phone.png`) as artefacts.

mod common;

use std::process::Command;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_views_the_slide_zooms_and_pans() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    let data = net.data("county-a");
    let svs = fixture_svs();
    let imported = Command::new(bin())
        .args(["slide", "import", "--data", &path(&data)])
        .arg(&svs)
        .output()
        .unwrap();
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let id = blake3::hash(&std::fs::read(&svs).unwrap())
        .to_hex()
        .to_string();
    let edge = net.start_edge("county-a", &[]);

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("viewer.png");
    let _ = std::fs::remove_file(&screenshot);
    let report = run_browser(
        "viewer.mjs",
        vec![
            ("EDGE_URL", edge.http.clone()),
            ("SLIDE_ID", id.clone()),
            ("USERNAME", "dr-li".into()),
            ("PASSWORD", PASSWORD.into()),
            ("SCREENSHOT", path(&screenshot)),
        ],
    )
    .await;

    let tiles = report["tiles"].as_array().unwrap();
    assert!(
        tiles.iter().all(|status| status == 200),
        "every tile request succeeded: {report}"
    );
    assert!(
        tiles.len() > report["tilesBefore"].as_u64().unwrap() as usize,
        "zooming fetched more tiles: {report}"
    );
    assert!(
        report["zoom"].as_f64().unwrap() > 2.0 * report["zoomBefore"].as_f64().unwrap(),
        "{report}"
    );
    assert!(
        report["nonBlankFraction"].as_f64().unwrap() > 0.3,
        "tissue was drawn: {report}"
    );
    assert_eq!(report["status"]["tilesFailed"], 0, "{report}");
    assert!(
        report["scaleBar"].as_str().unwrap().ends_with("µm"),
        "{report}"
    );
    assert_eq!(report["navigator"], true);
    assert_eq!(report["errors"].as_array().unwrap().len(), 0, "{report}");
    assert!(
        report["phoneLayout"]["pageWidth"].as_f64().unwrap() <= 391.0,
        "no sideways scrolling on a phone: {report}"
    );
    assert!(
        report["phoneLayout"]["viewerWidth"].as_f64().unwrap() > 300.0,
        "{report}"
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("viewer.png");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot kept at {}",
        shot.display()
    );
}
