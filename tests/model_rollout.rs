//! Model distribution with real processes: the hub's registry takes signed packages, a release
//! reaches every edge over its link (installed, verified, acknowledged), a pinned site stays
//! where it was pinned, a rollback brings the previous version back, and a package an edge
//! cannot load is refused there with the reason recorded at the hub while the edge keeps
//! screening with its model.

mod common;

use std::time::Duration;

use common::*;

/// Waits until every edge's active model is `digest`.
async fn every_edge_runs(
    edges: &[Node],
    clients: &[reqwest::Client],
    digest: &str,
    what: &str,
    seconds: u64,
) {
    eventually(what, Duration::from_secs(seconds), || async {
        for (edge, client) in edges.iter().zip(clients) {
            if active(client, edge).await.as_deref() != Some(digest) {
                return false;
            }
        }
        true
    })
    .await;
}

fn digest(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

async fn active(client: &reqwest::Client, edge: &Node) -> Option<String> {
    let status = get_json(client, format!("{}/api/v1/models", edge.http)).await;
    status["active"]["digest"].as_str().map(str::to_string)
}

async fn post(client: &reqwest::Client, url: String, body: serde_json::Value) -> reqwest::Response {
    client.post(url).json(&body).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn releases_reach_every_edge_pins_hold_and_rollbacks_and_refusals_are_recorded() {
    let net = Network::new(&["county-a", "county-b"]);
    net.add_user("hub", "admin", "root");
    net.add_user("hub", "authority", "health-bureau");
    net.add_user("county-a", "clinician", "dr-li");
    net.add_user("county-b", "clinician", "dr-wang");
    let hub = net.start_hub(&[]);
    let edge_a = net.start_edge("county-a", &[]);
    let edge_b = net.start_edge("county-b", &[]);
    let admin = signed_in(&hub, "root").await;
    let authority = signed_in(&hub, "health-bureau").await;
    let at_a = signed_in(&edge_a, "dr-li").await;
    let at_b = signed_in(&edge_b, "dr-wang").await;
    let versions = format!("{}/api/v1/model-versions", hub.http);

    // A package signed with another key never enters the registry.
    let (first, second) = (
        untrained_package(&net, 1, "1.0.0", 6),
        untrained_package(&net, 2, "1.1.0", 6),
    );
    let mut forged = first.clone();
    let len = forged.len();
    forged[len - 1] = if forged[len - 1] == b'0' { b'1' } else { b'0' };
    let response = admin.post(&versions).body(forged).send().await.unwrap();
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("signature"));
    // Authorities read the registry but cannot change it.
    let response = authority
        .post(&versions)
        .body(first.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    for bytes in [&first, &second] {
        let response = admin
            .post(&versions)
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let (v1, v2) = (digest(&first), digest(&second));
    let listed = get_json(&authority, versions.clone()).await;
    assert_eq!(listed["versions"].as_array().unwrap().len(), 2);
    assert!(listed["released"].is_null());

    // Release v1: both edges install it and the hub knows who runs what.
    let response = post(
        &admin,
        format!("{versions}/{v1}/release"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(response.status(), 200);
    eventually("v1 on both edges", Duration::from_secs(30), || async {
        active(&at_a, &edge_a).await.as_deref() == Some(v1.as_str())
            && active(&at_b, &edge_b).await.as_deref() == Some(v1.as_str())
    })
    .await;
    eventually(
        "the hub sees both sites on v1",
        Duration::from_secs(15),
        || async {
            let listed = get_json(&authority, versions.clone()).await;
            listed["versions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["digest"] == v1 && v["sites"].as_array().unwrap().len() == 2)
        },
    )
    .await;

    // Pin county-b to v1, release v2: only county-a moves, and keeps v1 as its previous model.
    let response = post(
        &admin,
        format!("{}/api/v1/sites/county-b/model", hub.http),
        serde_json::json!({ "pin": v1 }),
    )
    .await;
    assert_eq!(response.status(), 200);
    post(
        &admin,
        format!("{versions}/{v2}/release"),
        serde_json::json!({}),
    )
    .await;
    eventually("v2 at county-a", Duration::from_secs(30), || async {
        active(&at_a, &edge_a).await.as_deref() == Some(v2.as_str())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        active(&at_b, &edge_b).await.as_deref(),
        Some(v1.as_str()),
        "pinned"
    );
    eventually(
        "county-a reports v1 as its previous model",
        Duration::from_secs(15),
        || async {
            let listed = get_json(&authority, versions.clone()).await;
            listed["sites"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["site"] == "county-a" && s["running"] == v2 && s["previous"] == v1)
        },
    )
    .await;

    // Roll back: v1 is released again, v2 withdrawn, county-a returns to v1.
    let response = post(
        &admin,
        format!("{versions}/rollback"),
        serde_json::json!({ "reason": "canary disagreed with sign-offs" }),
    )
    .await;
    assert_eq!(response.status(), 200);
    eventually("county-a back on v1", Duration::from_secs(30), || async {
        active(&at_a, &edge_a).await.as_deref() == Some(v1.as_str())
    })
    .await;
    let listed = get_json(&authority, versions.clone()).await;
    let withdrawn = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["digest"] == v2)
        .unwrap()["withdrawn"]
        .clone();
    assert!(
        withdrawn.as_str().unwrap().contains("canary disagreed"),
        "{withdrawn}"
    );

    // A package whose graph does not match its manifest passes the hub's signature check but
    // not the edge's load: refused there, the reason recorded, v1 keeps screening.
    let broken = untrained_package(&net, 3, "1.2.0", 7);
    let v3 = digest(&broken);
    admin.post(&versions).body(broken).send().await.unwrap();
    post(
        &admin,
        format!("{}/api/v1/sites/county-b/model", hub.http),
        serde_json::json!({ "pin": null }),
    )
    .await;
    post(
        &admin,
        format!("{versions}/{v3}/release"),
        serde_json::json!({}),
    )
    .await;
    eventually(
        "both refusals recorded",
        Duration::from_secs(30),
        || async {
            let listed = get_json(&authority, versions.clone()).await;
            listed["sites"].as_array().unwrap().iter().all(|s| {
                s["refused"]["digest"] == v3
                    && s["refused"]["reason"]
                        .as_str()
                        .unwrap_or("")
                        .contains("refused")
            })
        },
    )
    .await;
    assert_eq!(active(&at_a, &edge_a).await.as_deref(), Some(v1.as_str()));
    assert_eq!(active(&at_b, &edge_b).await.as_deref(), Some(v1.as_str()));
    let page = get_text(&admin, format!("{}/models", hub.http)).await;
    assert!(
        page.contains("withdrawn") && page.contains("county-a"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_degraded_canary_rolls_back_by_itself_and_no_other_site_ever_runs_it() {
    const TISSUE: usize = 1;
    const PEN: usize = 4;
    let net = Network::new(&["county-a", "county-b", "county-c"]);
    net.add_user("hub", "admin", "root");
    let sites = ["county-a", "county-b", "county-c"];
    for site in sites {
        net.add_user(site, "clinician", "dr-li");
    }
    let hub = net.start_hub(&[]);
    let edges: Vec<Node> = sites.iter().map(|s| net.start_edge(s, &[])).collect();
    let admin = signed_in(&hub, "root").await;
    let clients = signed_in_all(&edges, "dr-li").await;
    // Every site has confirmed a benign slide: its tissue is the labels the canary is judged on.
    for (edge, client) in edges.iter().zip(&clients) {
        sign_off_slide(client, edge, serde_json::json!({"class": "benign"})).await;
    }
    let versions = format!("{}/api/v1/model-versions", hub.http);
    // The release calls tissue tissue; the degraded model calls everything a pen mark.
    let good = biased_package(&net, 1, "1.0.0", 6, Some(TISSUE));
    let degraded = biased_package(&net, 2, "1.1.0", 6, Some(PEN));
    let better = biased_package(&net, 3, "1.2.0", 6, Some(TISSUE));
    for bytes in [&good, &degraded, &better] {
        let response = admin
            .post(&versions)
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let (good, degraded, better) = (digest(&good), digest(&degraded), digest(&better));
    post(
        &admin,
        format!("{versions}/{good}/release"),
        serde_json::json!({}),
    )
    .await;
    every_edge_runs(&edges, &clients, &good, "every site runs the release", 30).await;

    // The degraded version goes to county-a alone; its evaluation rolls it back by itself.
    let response = post(
        &admin,
        format!("{versions}/{degraded}/canary"),
        serde_json::json!({ "sites": ["county-a"] }),
    )
    .await;
    assert_eq!(response.status(), 201);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut canary_ran = false;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the canary never concluded"
        );
        // No other site ever runs the canary.
        for (edge, client) in edges.iter().zip(&clients).skip(1) {
            assert_ne!(
                active(client, edge).await.as_deref(),
                Some(degraded.as_str())
            );
        }
        canary_ran |= active(&clients[0], &edges[0]).await.as_deref() == Some(degraded.as_str());
        let listed = get_json(&admin, versions.clone()).await;
        if listed["canary"]["outcome"]["outcome"] == "rolled-back" {
            let reason = listed["canary"]["outcome"]["reason"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(reason.contains("county-a"), "{reason}");
            let version = listed["versions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["digest"] == degraded)
                .unwrap()
                .clone();
            assert!(
                version["withdrawn"].as_str().unwrap().contains("canary"),
                "{version}"
            );
            assert_eq!(listed["released"], good);
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(canary_ran || edges[0].log_text().contains("screening model installed"));
    eventually(
        "county-a back on the release",
        Duration::from_secs(30),
        || async { active(&clients[0], &edges[0]).await.as_deref() == Some(good.as_str()) },
    )
    .await;

    // A canary that agrees with the sign-offs as well as the release is released to all.
    post(
        &admin,
        format!("{versions}/{better}/canary"),
        serde_json::json!({ "sites": ["county-b"] }),
    )
    .await;
    every_edge_runs(
        &edges,
        &clients,
        &better,
        "the good canary released to every site",
        60,
    )
    .await;
    let listed = get_json(&admin, versions.clone()).await;
    assert_eq!(listed["canary"]["outcome"]["outcome"], "released");
    // Its scores on county-b's recent slides barely moved.
    let report = &listed["canary"]["reports"]["county-b"];
    assert!(report["drift_tiles"].as_u64().unwrap() > 0, "{report}");
    assert!(report["score_drift"].as_f64().unwrap() < 0.05, "{report}");

    // A version that would call every recent case a lesion: the score drift on the canary's
    // recent slides names it, and it rolls back.
    const LESION: usize = 2;
    let jumpy = biased_package(&net, 4, "1.3.0", 6, Some(LESION));
    assert_eq!(
        admin
            .post(&versions)
            .body(jumpy.clone())
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let jumpy = digest(&jumpy);
    post(
        &admin,
        format!("{versions}/{jumpy}/canary"),
        serde_json::json!({ "sites": ["county-c"] }),
    )
    .await;
    eventually(
        "the jumpy canary rolls back",
        Duration::from_secs(60),
        || async {
            let listed = get_json(&admin, versions.clone()).await;
            listed["canary"]["digest"] == jumpy
                && listed["canary"]["outcome"]["outcome"] == "rolled-back"
        },
    )
    .await;
    let listed = get_json(&admin, versions.clone()).await;
    let reason = listed["canary"]["outcome"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("county-c: lesion scores on its recent slides moved by"),
        "{reason}"
    );
}

/// An admin of the edge installs `bytes` as its screening model.
async fn install_at(edge: &Node, bytes: Vec<u8>) {
    let admin = signed_in(edge, "it-wang").await;
    let response = admin
        .post(format!("{}/api/v1/models", edge.http))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn screened_with(client: &reqwest::Client, edge: &Node, slide: &str) -> serde_json::Value {
    get_json(client, format!("{}/api/v1/screening/{slide}", edge.http)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_model_rescreens_slides_awaiting_review_and_never_a_reviewed_one() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    net.add_user("county-a", "admin", "it-wang");
    let v1 = untrained_package(&net, 1, "1.0.0", 6);
    let v1_path = net.dir.path().join("v1.grmodel");
    std::fs::write(&v1_path, &v1).unwrap();
    let mut edge = net.start_edge("county-a", &["--screening-model", &path(&v1_path)]);
    let client = signed_in(&edge, "dr-li").await;
    let reviewed = sign_off_slide(&client, &edge, serde_json::json!({"class": "benign"})).await;
    // Another slide (the same tissue mirrored: its own content, so its own id) waits for review.
    let mirrored = net.dir.path().join("mirrored.tif");
    let script = format!(
        "vips flip {svs} {dir}/m.v horizontal && vips tiffsave {dir}/m.v {out} --tile --pyramid --compression jpeg --Q 90 --tile-width 256 --tile-height 256",
        svs = fixture_svs().display(),
        dir = net.dir.path().display(),
        out = mirrored.display()
    );
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let uploaded: serde_json::Value = client
        .post(format!("{}/api/v1/slides?name=mirrored.tif", edge.http))
        .body(std::fs::read(&mirrored).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let waiting = uploaded["slide"]["id"].as_str().unwrap().to_string();
    assert_ne!(waiting, reviewed);
    for slide in [&reviewed, &waiting] {
        eventually("screened with v1", Duration::from_secs(60), || async {
            let job = screened_with(&client, &edge, slide).await;
            job["state"] == "done" && job["model"] == digest(&v1)
        })
        .await;
    }

    // An admin installs v2: the slide awaiting review is screened again with it; the signed-off
    // one keeps the screening it was reviewed with.
    let v2 = untrained_package(&net, 2, "2.0.0", 6);
    install_at(&edge, v2.clone()).await;
    eventually("re-screened with v2", Duration::from_secs(60), || async {
        let job = screened_with(&client, &edge, &waiting).await;
        job["state"] == "done" && job["model"] == digest(&v2)
    })
    .await;
    let job = screened_with(&client, &edge, &waiting).await;
    assert_eq!(job["rescreened_from"], digest(&v1), "{job}");
    let kept = screened_with(&client, &edge, &reviewed).await;
    assert_eq!(kept["model"], digest(&v1), "{kept}");
    assert!(kept["rescreened_from"].is_null(), "{kept}");

    // Switched off, a new model leaves every result as it was.
    edge.kill9();
    edge = net.start_edge("county-a", &["--rescreen-on-new-model", "false"]);
    let client = signed_in(&edge, "dr-li").await;
    let v3 = untrained_package(&net, 3, "3.0.0", 6);
    install_at(&edge, v3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let job = screened_with(&client, &edge, &waiting).await;
    assert_eq!(job["model"], digest(&v2), "{job}");
    assert_eq!(job["state"], "done", "{job}");
}
