//! A federated round with real processes: three edges label their own slides (sign-offs; the
//! planted-lesion proxy stands in for an expert), the hub starts a round from the released
//! version, two edges train at home and send only their update, the third has opted out and is
//! dropped at the deadline; the hub — SIGKILLed mid-round and restarted — resumes the round,
//! aggregates, validates on its public tiles, signs and registers the new version with its
//! lineage.

mod common;

use std::time::Duration;

use common::*;

fn digest(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

async fn post_json(
    client: &reqwest::Client,
    url: String,
    body: serde_json::Value,
) -> reqwest::Response {
    client.post(url).json(&body).send().await.unwrap()
}

/// Adds `package` to the hub's registry, releases it, and waits until `sites` sites run it;
/// returns its digest.
async fn release_and_wait(
    admin: &reqwest::Client,
    hub: &Node,
    package: Vec<u8>,
    sites: usize,
) -> String {
    let base_digest = digest(&package);
    let versions = format!("{}/api/v1/model-versions", hub.http);
    assert_eq!(
        admin
            .post(&versions)
            .body(package)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    post_json(
        admin,
        format!("{versions}/{base_digest}/release"),
        serde_json::json!({}),
    )
    .await;
    eventually(
        "the edges run the base",
        Duration::from_secs(30),
        || async {
            let listed = get_json(admin, versions.clone()).await;
            listed["sites"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["running"] == base_digest)
                .count()
                == sites
        },
    )
    .await;
    base_digest
}

/// Waits until the newest round is done or failed; returns `GET /api/v1/rounds` then.
async fn rounds_once_finished(admin: &reqwest::Client, hub: &Node) -> serde_json::Value {
    let url = format!("{}/api/v1/rounds", hub.http);
    eventually("the round finishes", Duration::from_secs(300), || async {
        let rounds = get_json(admin, url.clone()).await;
        rounds["rounds"][0]["state"] == "done" || rounds["rounds"][0]["state"] == "failed"
    })
    .await;
    get_json(admin, url).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_round_trains_at_the_edges_survives_a_hub_kill_and_registers_a_signed_version() {
    let net = Network::new(&["county-a", "county-b", "county-c"]);
    net.add_user("hub", "admin", "root");
    for site in ["county-a", "county-b", "county-c"] {
        net.add_user(site, "clinician", "dr-li");
    }
    // The hub's validation tiles: public tissue, made where the fixtures are.
    let validation = net.dir.path().join("validation.tiles");
    let made = std::process::Command::new(bin())
        .args(["model", "validation-set", "--tiles-per-class", "8", "--out"])
        .arg(&validation)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let hub_args = [
        "--validation-set",
        &path(&validation),
        "--rounds-min-sites",
        "2",
        "--rounds-deadline-s",
        "45",
        "--rounds-local-epochs",
        "1",
        // Differential privacy with a budget for one round (epsilon about 5.3 at delta 1e-5
        // for one round of noise multiplier 1; two would spend about 7.9).
        "--dp-noise",
        "1.0",
        "--dp-clip",
        "1.0",
        "--dp-epsilon-budget",
        "6.0",
    ];
    let mut hub = net.start_hub(&hub_args);
    let edges: Vec<Node> = ["county-a", "county-b", "county-c"]
        .iter()
        .map(|site| {
            let extra: &[&str] = if *site == "county-c" {
                &["--federated-opt-out"]
            } else {
                &[]
            };
            net.start_edge(site, extra)
        })
        .collect();
    let mut admin = signed_in(&hub, "root").await;
    let clients = signed_in_all(&edges, "dr-li").await;

    // No released version: no round.
    let refused = admin
        .post(format!("{}/api/v1/rounds", hub.http))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    assert!(refused.text().await.unwrap().contains("released"));

    // The base: released to every edge.
    let base_digest =
        release_and_wait(&admin, &hub, untrained_package(&net, 7, "1.0.0", 6), 3).await;

    // Labels where the data lives: a lesion signed off at county-a (where the planted lesion
    // would be), the slide confirmed benign at county-b, and the same at the opted-out site.
    for (index, (edge, client)) in edges.iter().zip(&clients).enumerate() {
        let form = if index == 0 {
            serde_json::json!({"class": "lesion", "regions": [[[200.0, 300.0], [1800.0, 300.0], [1800.0, 2600.0], [200.0, 2600.0]]]})
        } else {
            serde_json::json!({"class": "benign"})
        };
        sign_off_slide(client, edge, form).await;
    }
    // A lesion without its regions is not a label.
    let slide = upload_svs(&clients[0], &edges[0]).await;
    let unplaced = post_json(
        &clients[0],
        format!("{}/api/v1/slides/{slide}/signoff", edges[0].http),
        serde_json::json!({"class": "lesion"}),
    )
    .await;
    assert_eq!(unplaced.status(), 400);
    let labels = get_json(&clients[0], format!("{}/api/v1/labels", edges[0].http)).await;
    assert_eq!(labels["summary"]["by_class"]["lesion"], 1, "{labels}");

    // The round starts with all three; the hub is killed right after and restarted.
    let started = admin
        .post(format!("{}/api/v1/rounds", hub.http))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    let started: serde_json::Value = started.json().await.unwrap();
    assert_eq!(started["participants"].as_array().unwrap().len(), 3);
    hub.kill9();
    hub = net.start_hub(&hub_args);
    admin = signed_in(&hub, "root").await;
    // The restarted hub listens on a new web port.
    let versions = format!("{}/api/v1/model-versions", hub.http);

    let rounds_url = format!("{}/api/v1/rounds", hub.http);
    let rounds = rounds_once_finished(&admin, &hub).await;
    let round = &rounds["rounds"][0];
    assert_eq!(round["state"], "done", "{round}");
    let mut updates: Vec<&str> = round["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    updates.sort();
    assert_eq!(updates, ["county-a", "county-b"], "{round}");
    assert_eq!(
        round["excluded"]["county-c"], "no update by the deadline",
        "the opted-out site is dropped: {round}"
    );
    assert!(
        round["metrics"]["validation_accuracy"].as_f64().is_some(),
        "{round}"
    );
    let result = round["result"].as_str().unwrap().to_string();

    // The registry holds the new version with its lineage, signed by the network's key: an
    // edge would install it.
    let listed = get_json(&admin, versions.clone()).await;
    let version = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["digest"] == result)
        .unwrap()
        .clone();
    assert_eq!(version["parent"], base_digest);
    assert_eq!(version["lineage"]["round"], 1);
    assert_eq!(version["version"], "round-1");
    let mut participants: Vec<&str> = version["lineage"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    participants.sort();
    assert_eq!(participants, ["county-a", "county-b"]);
    // Cross-site evaluation: every site that takes part in learning measured the round's version
    // on its own labels, and only the figures came back; the opted-out site sent none.
    eventually(
        "the round's version evaluated at county-a and county-b",
        // Measured in the background at each edge, beside the other tests' processes.
        Duration::from_secs(180),
        || async {
            let listed = get_json(&admin, versions.clone()).await;
            let version = listed["versions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["digest"] == result)
                .unwrap()
                .clone();
            let evaluations = &version["site_evaluations"];
            ["county-a", "county-b"]
                .iter()
                .all(|site| evaluations[site]["tiles"].as_u64().unwrap_or(0) > 0)
        },
    )
    .await;
    let listed = get_json(&admin, versions.clone()).await;
    let version = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["digest"] == result)
        .unwrap();
    assert!(
        version["site_evaluations"]["county-c"].is_null(),
        "{version}"
    );
    assert!(version["site_evaluations"]["county-a"]["agreement"]
        .as_f64()
        .is_some());
    if round["released"] == true {
        eventually(
            "county-a runs the round's version",
            Duration::from_secs(30),
            || async {
                let status =
                    get_json(&clients[0], format!("{}/api/v1/models", edges[0].http)).await;
                status["active"]["digest"] == result
            },
        )
        .await;
    }

    // Each edge tells what it did, and the opted-out one why it did not.
    let a = get_json(&clients[0], format!("{}/api/v1/federated", edges[0].http)).await;
    assert_eq!(a["rounds"][0]["state"], "sent", "{a}");
    let c = get_json(&clients[2], format!("{}/api/v1/federated", edges[2].http)).await;
    assert_eq!(c["rounds"][0]["state"], "skipped", "{c}");
    assert!(c["rounds"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("opted out"));
    let page = get_text(&admin, format!("{}/rounds", hub.http)).await;
    assert!(page.contains("county-c excluded"), "{page}");

    // The round spent the network's privacy budget: the edges clipped and noised their
    // updates, the hub accounted for it, and no second round starts.
    let privacy = &rounds["privacy"];
    let epsilon = privacy["epsilon"].as_f64().unwrap();
    assert!(epsilon > 4.0 && epsilon < 6.0, "{privacy}");
    assert_eq!(privacy["rounds"], 1, "{privacy}");
    let round_epsilon = round["metrics"]["epsilon"].as_f64().unwrap();
    assert!((round_epsilon - epsilon).abs() < 1e-3, "{round}");
    let second = admin.post(&rounds_url).send().await.unwrap();
    assert_eq!(second.status(), 409);
    let reason = second.text().await.unwrap();
    assert!(reason.contains("privacy budget is spent"), "{reason}");

    // In a real browser, the rounds page charts the round's validation accuracy (uPlot).
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rounds.png");
    let report = run_browser(
        "rounds.mjs",
        vec![
            ("HUB_URL", hub.http.clone()),
            ("USERNAME", "root".into()),
            ("PASSWORD", PASSWORD.into()),
            ("SCREENSHOT", path(&screenshot)),
        ],
    )
    .await;
    assert_eq!(report["points"], 1, "{report}");
    assert!(report["canvasWidth"].as_u64().unwrap() > 100, "{report}");
    assert!(report["errors"].as_array().unwrap().is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_killed_mid_round_rejoins_and_one_revoked_mid_round_is_excluded() {
    let sites = ["county-a", "county-b", "county-c"];
    let net = Network::new(&sites);
    net.add_user("hub", "admin", "root");
    for site in sites {
        net.add_user(site, "clinician", "dr-li");
    }
    // The round closes once county-a and county-b have delivered (county-c is excluded when
    // revoked), so a long deadline costs nothing and keeps a loaded machine from failing it.
    let hub = net.start_hub(&[
        "--rounds-min-sites",
        "2",
        "--rounds-deadline-s",
        "240",
        "--rounds-local-epochs",
        "10",
    ]);
    let mut edges: Vec<Node> = sites.iter().map(|s| net.start_edge(s, &[])).collect();
    let admin = signed_in(&hub, "root").await;
    let clients = signed_in_all(&edges, "dr-li").await;
    for (edge, client) in edges.iter().zip(&clients) {
        sign_off_slide(client, edge, serde_json::json!({"class": "benign"})).await;
    }
    release_and_wait(&admin, &hub, untrained_package(&net, 11, "1.0.0", 6), 3).await;
    let started = admin
        .post(format!("{}/api/v1/rounds", hub.http))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);

    // county-b is killed while it trains, and restarted: it trains again from the start and
    // its update still makes the round.
    let b = format!("{}/api/v1/federated", edges[1].http);
    eventually("county-b training", Duration::from_secs(30), || async {
        get_json(&clients[1], b.clone()).await["rounds"][0]["state"] == "training"
    })
    .await;
    edges[1].kill9();
    edges[1] = net.start_edge("county-b", &[]);
    // county-c's certificate is revoked while it trains: the hub excludes it, and the update it
    // finishes later never gets through (its connection is refused).
    let c = format!("{}/api/v1/federated", edges[2].http);
    eventually("county-c training", Duration::from_secs(30), || async {
        get_json(&clients[2], c.clone()).await["rounds"][0]["state"] == "training"
    })
    .await;
    net.revoke("county-c");

    let rounds = rounds_once_finished(&admin, &hub).await;
    let round = &rounds["rounds"][0];
    assert_eq!(round["state"], "done", "{round}");
    let mut updates: Vec<&str> = round["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    updates.sort();
    assert_eq!(
        updates,
        ["county-a", "county-b"],
        "the restarted edge rejoined, the revoked one did not: {round}"
    );
    assert_eq!(
        round["excluded"]["county-c"], "certificate revoked",
        "{round}"
    );
    assert!(hub.log_text().contains("site revoked mid-round: excluded"));
    let client = signed_in(&edges[1], "dr-li").await;
    let b = get_json(&client, format!("{}/api/v1/federated", edges[1].http)).await;
    assert_eq!(b["rounds"][0]["state"], "sent", "{b}");
    // It was killed with its record saying "training": the restarted edge took the task up
    // again and trained from the start.
    assert!(edges[1]
        .log_text()
        .contains("training for a federated round"));
}

/// The parameters of the package `digest` in the hub's registry.
fn registry_parameters(net: &Network, digest: &str) -> grassroots_models::federated::Parameters {
    fn find(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == name) {
                return Some(path);
            }
            if path.is_dir() {
                if let Some(found) = find(&path, name) {
                    return Some(found);
                }
            }
        }
        None
    }
    let file = find(&net.data("hub"), &format!("{digest}.grmodel")).unwrap();
    let signer =
        grassroots_models::PackageSigner::from_seed_hex(net.authority().model_signing_seed_hex())
            .unwrap();
    let verifier =
        grassroots_models::PackageVerifier::from_public_hex(&signer.public_key_hex()).unwrap();
    let package =
        grassroots_models::ModelPackage::open(&std::fs::read(file).unwrap(), &verifier).unwrap();
    grassroots_models::federated::Parameters::from_onnx(&package.graph).unwrap()
}

/// An update file's header and raw values.
fn read_update(path: &std::path::Path) -> (grassroots_wire::federated::UpdateHeader, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let (header, payload) = grassroots_wire::federated::decode_update(&bytes).unwrap();
    (header, payload.to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn with_secure_aggregation_the_hub_sees_only_masked_updates_and_a_dropped_site_is_recovered()
{
    let sites = ["county-a", "county-b", "county-c"];
    let net = Network::new(&sites);
    net.add_user("hub", "admin", "root");
    for site in sites {
        net.add_user(site, "clinician", "dr-li");
    }
    // A robust rule needs each update: the hub refuses to combine it with secure aggregation.
    let refused = std::process::Command::new(bin())
        .args(["hub", "--kit"])
        .arg(net.kit("hub"))
        .args(["--data"])
        .arg(net.data("refused-hub"))
        .args(["--secure-aggregation", "--rounds-rule", "median"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("median"),
        "{stderr}"
    );

    let hub = net.start_hub(&[
        "--secure-aggregation",
        "--rounds-min-sites",
        "2",
        // The round waits for the dead county-c until the deadline: long enough for ten local
        // epochs at two edges on a loaded 2-core machine (90 s was not, with the other tests
        // of this file training beside it and a build running).
        "--rounds-deadline-s",
        "150",
        "--rounds-local-epochs",
        "10",
    ]);
    let mut edges: Vec<Node> = sites.iter().map(|s| net.start_edge(s, &[])).collect();
    let admin = signed_in(&hub, "root").await;
    let clients = signed_in_all(&edges, "dr-li").await;
    for (edge, client) in edges.iter().zip(&clients) {
        sign_off_slide(client, edge, serde_json::json!({"class": "benign"})).await;
    }
    let base = release_and_wait(&admin, &hub, untrained_package(&net, 13, "1.0.0", 6), 3).await;
    let rounds_url = format!("{}/api/v1/rounds", hub.http);
    assert_eq!(admin.post(&rounds_url).send().await.unwrap().status(), 201);

    // Every site advertises signed keys and shares its secrets; once the round masks, county-c
    // dies while it trains: it shared, so the others' masks include it, and the hub must
    // recover its mask key from the survivors' shares.
    let c = format!("{}/api/v1/federated", edges[2].http);
    eventually(
        "the round masking while county-c trains",
        Duration::from_secs(60),
        || async {
            get_json(&admin, rounds_url.clone()).await["rounds"][0]["secure_phase"] == "masking"
                && get_json(&clients[2], c.clone()).await["rounds"][0]["state"] == "training"
        },
    )
    .await;
    edges[2].kill9();

    let rounds = rounds_once_finished(&admin, &hub).await;
    let round = &rounds["rounds"][0];
    assert_eq!(round["state"], "done", "{round}");
    let mut masked: Vec<&str> = round["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    masked.sort();
    assert_eq!(masked, ["county-a", "county-b"], "{round}");
    assert_eq!(
        round["excluded"]["county-c"], "no update by the deadline",
        "{round}"
    );

    // What the hub received and stored is noise one by one: no value of a masked update looks
    // like a weighted model change (|samples x delta| < 10^4); the round's files hold nothing
    // else of the sites' updates.
    let mut plain_sum: Option<Vec<f64>> = None;
    let mut samples = 0u64;
    for site in ["county-a", "county-b"] {
        let (header, payload) = read_update(
            &net.data("hub")
                .join("rounds/1")
                .join(format!("{site}.update")),
        );
        assert_eq!(
            header.encoding,
            grassroots_wire::federated::UpdateEncoding::Masked
        );
        let plausible = payload
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64 / f64::from(1u32 << 24))
            .filter(|v| v.abs() < 1e4)
            .count();
        assert!(plausible < 5, "{site}: {plausible} values look unmasked");
        // The site's own plain update, kept on its own disk until masked.
        let (plain, values) = read_update(&net.data(site).join("federated").join("round-1.plain"));
        assert_eq!(plain.samples, header.samples);
        samples += plain.samples;
        let weighted = values
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())) * plain.samples as f64);
        plain_sum = Some(match plain_sum {
            None => weighted.collect(),
            Some(sum) => sum.iter().zip(weighted).map(|(a, b)| a + b).collect(),
        });
    }
    let hub_files: Vec<String> = std::fs::read_dir(net.data("hub").join("rounds/1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        hub_files.iter().all(|f| !f.ends_with(".plain")),
        "{hub_files:?}"
    );

    // The new version is the base plus the plain FedAvg of the survivors' updates (within the
    // fixed point's rounding): the masks, county-c's included, all came off.
    let result = round["result"].as_str().unwrap();
    let before = registry_parameters(&net, &base);
    let after = registry_parameters(&net, result);
    let mean: Vec<f64> = plain_sum
        .unwrap()
        .iter()
        .map(|v| v / samples as f64)
        .collect();
    let worst = before
        .values
        .iter()
        .zip(&after.values)
        .zip(&mean)
        .map(|((b, a), m)| (f64::from(*a - *b) - m).abs())
        .fold(0f64, f64::max);
    assert!(
        worst < 1e-4,
        "largest difference from plain FedAvg: {worst}"
    );
    assert!(
        mean.iter().any(|m| m.abs() > 1e-3),
        "the round changed the model"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_without_the_signing_key_leaves_a_candidate_that_offline_approval_registers_with_its_lineage(
) {
    let sites = ["county-a", "county-b"];
    let net = Network::new(&sites);
    net.add_user("hub", "admin", "root");
    for site in sites {
        net.add_user(site, "clinician", "dr-li");
    }
    // The hub's kit away from the provisioning folder: no model-signing key on the hub's disk.
    let away = net.dir.path().join("hub-host");
    std::fs::create_dir_all(away.join("kits")).unwrap();
    let kit = away.join("kits/hub.kit");
    std::fs::copy(net.kit("hub"), &kit).unwrap();
    let hub = net.start_hub_with_kit(
        &kit,
        &[
            "--rounds-min-sites",
            "2",
            "--rounds-deadline-s",
            "60",
            "--rounds-local-epochs",
            "1",
        ],
    );
    let edges: Vec<Node> = sites.iter().map(|s| net.start_edge(s, &[])).collect();
    let admin = signed_in(&hub, "root").await;
    let clients = signed_in_all(&edges, "dr-li").await;
    for (edge, client) in edges.iter().zip(&clients) {
        sign_off_slide(client, edge, serde_json::json!({"class": "benign"})).await;
    }
    let base = release_and_wait(&admin, &hub, untrained_package(&net, 17, "1.0.0", 6), 2).await;
    let rounds_url = format!("{}/api/v1/rounds", hub.http);
    assert_eq!(admin.post(&rounds_url).send().await.unwrap().status(), 201);
    let rounds = rounds_once_finished(&admin, &hub).await;
    let round = &rounds["rounds"][0];
    assert_eq!(round["state"], "done", "{round}");
    let candidate = round["awaiting_approval"].as_str().unwrap().to_string();
    // Unsigned: not in the registry, and no edge would install it.
    let versions = format!("{}/api/v1/model-versions", hub.http);
    let listed = get_json(&admin, versions.clone()).await;
    assert_eq!(listed["versions"].as_array().unwrap().len(), 1, "{listed}");

    // Approved where the provisioning folder lives, then added: it keeps its round's lineage.
    let approved = net.dir.path().join("approved.grmodel");
    let signed = std::process::Command::new(bin())
        .args(["model", "sign", "--provisioning"])
        .arg(net.prov())
        .arg(&candidate)
        .arg("--out")
        .arg(&approved)
        .output()
        .unwrap();
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let added = admin
        .post(&versions)
        .body(std::fs::read(&approved).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let version: serde_json::Value = added.json().await.unwrap();
    assert_eq!(version["lineage"]["parent"], base, "{version}");
    assert_eq!(version["lineage"]["round"], 1, "{version}");
    let mut participants: Vec<&str> = version["lineage"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    participants.sort();
    assert_eq!(participants, ["county-a", "county-b"], "{version}");
    // The round now names the registered version and waits for nothing.
    let rounds = get_json(&admin, rounds_url).await;
    let round = &rounds["rounds"][0];
    assert!(round["awaiting_approval"].is_null(), "{round}");
    assert_eq!(round["result"], version["digest"], "{round}");
}
