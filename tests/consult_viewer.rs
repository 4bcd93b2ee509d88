//! The expert's consult page in a real browser (Debian's Chromium, playwright-core) against real
//! processes: the slide's tiles come from the edge through the hub; the edge is killed while the
//! page is open, the page shows the link down, and when the edge is back the missing tiles load
//! without a reload; the expert draws a rectangle, a polygon and a point and sends the report;
//! the edge receives the answer with those shapes, in slide pixels, and shows it on its case
//! page. Before the drop, a second browser signed in at the edge follows the expert live: the
//! doctor's viewer moves to where the expert pans and zooms, and shows the expert's pointer. The screenshot is kept as `$CARGO_TARGET_TMPDIR/consult.png`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_expert_views_through_a_link_drop_annotates_and_answers_in_a_browser() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    net.add_user("hub", "expert", "prof-zhang");
    let edge = net.start_edge("county-a", &[]);
    // No prefetch here: every tile the page wants must come live, so that the link drop shows.
    let hub = net.start_hub(&["--consult-prefetch-mib", "0"]);
    let client = signed_in(&edge, "dr-li").await;
    let slide_id = upload_svs(&client, &edge).await;
    let referral_id = refer(
        &client,
        &edge,
        serde_json::json!({
            "case_number": "S26-07777",
            "patient_name": "Zhao Min",
            "patient_id": "ID-110105-1961",
            "age_years": 65,
            "sex": "male",
            "specimen": "colon biopsy",
            "question": "Invasive?",
            "urgency": "urgent",
            "slide_ids": [slide_id],
        }),
    )
    .await;
    let expert = signed_in(&hub, "prof-zhang").await;
    claim_once_arrived(&expert, &hub, &referral_id).await;

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("consult.png");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/consult.mjs");
    let mut browser = Command::new("node")
        .arg(&script)
        .env("HUB_URL", &hub.http)
        .env("REFERRAL_ID", &referral_id)
        .env("USERNAME", "prof-zhang")
        .env("PASSWORD", PASSWORD)
        .env("SCREENSHOT", &screenshot)
        .env("EDGE_URL", &edge.http)
        .env("EDGE_USERNAME", "dr-li")
        .env("SLIDE_ID", &slide_id)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (Node.js) must be installed; .ci/run installs the browser test's packages");
    let stdout = BufReader::new(browser.stdout.take().unwrap());
    let (edge_tx, edge_rx) = std::sync::mpsc::channel();
    let net = std::sync::Arc::new(net);
    let driver = {
        let net = net.clone();
        std::thread::spawn(move || {
            let mut edge = Some(edge);
            let mut last = String::new();
            for line in stdout.lines().map_while(Result::ok) {
                match line.as_str() {
                    "drop-link" => {
                        if let Some(mut running) = edge.take() {
                            running.kill9();
                        }
                    }
                    "saw-offline" => edge = Some(net.start_edge("county-a", &[])),
                    _ => {}
                }
                last = line;
            }
            let _ = edge_tx.send(edge);
            last
        })
    };
    let status = tokio::task::spawn_blocking(move || {
        let status = browser.wait().unwrap();
        let mut stderr = String::new();
        if let Some(mut err) = browser.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
        }
        (status, stderr)
    })
    .await
    .unwrap();
    let last = driver.join().unwrap();
    assert!(
        status.0.success(),
        "browser run failed:\n{last}\n{}",
        status.1
    );
    let report: serde_json::Value = serde_json::from_str(&last).unwrap();
    let edge = edge_rx.recv().unwrap().expect("the edge was restarted");

    // Live: the doctor's viewer at the edge went where the expert went, pointer included.
    assert!(
        report["followed"]["updates"].as_u64().unwrap_or(0) > 0,
        "the edge's viewer followed the expert: {report}"
    );
    assert_eq!(report["followed"]["pointerShown"], true, "{report}");
    assert_eq!(report["liveAtHub"]["edge"], "following", "{report}");

    // The link drop was shown and survived in the same page.
    assert!(
        report["offlineBanner"].as_str().unwrap().contains("down"),
        "{report}"
    );
    assert!(
        report["whileDown"]["tilesFailed"].as_u64().unwrap()
            > report["before"]["tilesFailed"].as_u64().unwrap(),
        "tiles asked for while the edge was down failed: {report}"
    );
    assert!(
        report["afterRecovery"]["reloadedAfterFailure"]
            .as_u64()
            .unwrap()
            > 0,
        "tiles that failed during the drop came back: {report}"
    );
    assert_eq!(report["sameDocument"], true, "no reload: {report}");
    assert_eq!(report["errors"].as_array().unwrap().len(), 0, "{report}");

    // Three shapes drawn and sent, in slide pixels.
    assert_eq!(report["drawnShapes"], 3, "{report}");
    assert_eq!(report["result"]["state"], "sent", "{report}");
    let features = report["annotations"]["features"].as_array().unwrap();
    let kinds: Vec<&str> = features
        .iter()
        .map(|f| f["geometry"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Polygon", "Polygon", "Point"], "{report}");
    let rectangle = features[0]["geometry"]["coordinates"][0]
        .as_array()
        .unwrap();
    assert_eq!(rectangle.len(), 5, "a closed ring of four corners");
    for point in rectangle {
        let (x, y) = (point[0].as_f64().unwrap(), point[1].as_f64().unwrap());
        assert!(
            (0.0..=2220.0).contains(&x) && (0.0..=2967.0).contains(&y),
            "{point}"
        );
    }
    assert_eq!(
        features[2]["properties"]["classification"]["name"],
        "Mitosis"
    );
    assert_eq!(features[0]["properties"]["slide_id"], slide_id.as_str());

    // The answer reaches the edge with the same shapes, and its case page shows it.
    let answer = answer_at_edge(&client, &edge, "malignant").await;
    let sent: serde_json::Value =
        serde_json::from_str(answer["annotations_geojson"].as_str().unwrap()).unwrap();
    assert_eq!(sent, report["annotations"]);
    let page = get_text(&client, format!("{}/referrals/{referral_id}", edge.http)).await;
    assert!(
        page.contains("Moderately differentiated adenocarcinoma."),
        "{page}"
    );
    assert!(page.contains("prof-zhang"), "{page}");
}
