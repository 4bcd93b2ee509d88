//! Referring a case from an edge to the hub (real processes): the referral waits in the edge's
//! outbox while the hub is down, arrives once when it starts, and stays one referral across an
//! edge restart. The expert who claims it views its slide through the hub, byte-identical to the
//! edge's tiles; another expert gets 403, a slide outside the referral 404, every request is
//! audited, and a revoked edge's tiles are unreachable. The patient's name, id and case number
//! never reach the hub, nor does the slide or a tile.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_referral_arrives_once_without_identifiers_and_only_its_expert_views_its_tiles() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    net.add_user("hub", "expert", "prof-zhang");
    net.add_user("hub", "authority", "health-bureau");
    net.add_user("hub", "expert", "dr-chen");
    net.add_user("hub", "admin", "it-wu");
    let mut edge = net.start_edge("county-a", &[]);
    let client = signed_in(&edge, "dr-li").await;
    let svs = std::fs::read(fixture_svs()).unwrap();
    let slide_id = upload_svs(&client, &edge).await;

    let form = serde_json::json!({
        "case_number": "S26-01234",
        "patient_name": "Wang Xiuying",
        "patient_id": "ID-330106-1977",
        "age_years": 47,
        "sex": "female",
        "specimen": "gastric biopsy, antrum",
        "question": "High-grade dysplasia or early carcinoma?",
        "urgency": "priority",
        "slide_ids": [slide_id],
        "regions": [{"slide_id": slide_id, "x": 1000, "y": 1000, "width": 300, "height": 200}],
    });
    let referred = client
        .post(format!("{}/api/v1/referrals", edge.http))
        .json(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(referred.status(), 201);
    let referred: serde_json::Value = referred.json().await.unwrap();
    let referral_id = referred["referral"]["referral_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(referred["referral"]["age_band"], "40-49");
    // A referral of a slide this edge does not have is refused.
    let mut unknown = form.clone();
    unknown["slide_ids"] = serde_json::json!(["00".repeat(32)]);
    let refused = client
        .post(format!("{}/api/v1/referrals", edge.http))
        .json(&unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let mut outside_slide = form.clone();
    outside_slide["regions"][0]["x"] = 2100.into();
    let refused = client
        .post(format!("{}/api/v1/referrals", edge.http))
        .json(&outside_slide)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        400,
        "a marked region must lie inside its slide"
    );
    let mut stray = form.clone();
    stray["regions"][0]["slide_id"] = "00".repeat(32).into();
    let refused = client
        .post(format!("{}/api/v1/referrals", edge.http))
        .json(&stray)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("which is not referred"),
        "a marked region must be on a referred slide"
    );

    // The hub starts later and receives it.
    let hub = net.start_hub(&[]);
    let expert = signed_in(&hub, "prof-zhang").await;
    eventually(
        "the referral at the hub",
        Duration::from_secs(30),
        || async {
            get_json(&expert, format!("{}/api/v1/referrals", hub.http))
                .await
                .as_array()
                .is_some_and(|all| all.len() == 1)
        },
    )
    .await;
    let at_hub = get_json(&expert, format!("{}/api/v1/referrals", hub.http)).await;
    assert_eq!(at_hub[0]["site"], "county-a");
    assert_eq!(at_hub[0]["referral"]["referral_id"], referral_id.as_str());
    assert_eq!(
        at_hub[0]["referral"]["slides"][0]["slide_id"],
        slide_id.as_str()
    );
    assert_eq!(
        at_hub[0]["referral"]["question"],
        "High-grade dysplasia or early carcinoma?"
    );
    let page = get_text(&expert, format!("{}/referrals", hub.http)).await;
    assert!(page.contains("gastric biopsy, antrum"), "{page}");

    // The edge restarts: the referral is not sent again as a second one.
    edge.kill9();
    drop(edge);
    let edge = net.start_edge("county-a", &[]);
    let client = signed_in(&edge, "dr-li").await;
    eventually("the edge online again", Duration::from_secs(30), || async {
        get_json(&client, format!("{}/api/v1/link", edge.http)).await["link"]["state"] == "online"
    })
    .await;
    let local = get_json(&client, format!("{}/api/v1/referrals", edge.http)).await;
    assert_eq!(local[0]["delivery"], "delivered", "{local}");
    // The pseudonym key and the node's data are its own user's alone.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(net.data("county-a").join("referral-key")), 0o600);
        assert_eq!(mode(net.data("county-a")), 0o700);
        assert_eq!(mode(net.data("hub")), 0o700);
    }
    assert_eq!(local[0]["local"]["patient_name"], "Wang Xiuying");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_hub = get_json(&expert, format!("{}/api/v1/referrals", hub.http)).await;
    assert_eq!(at_hub.as_array().unwrap().len(), 1);

    // Only experts and admins see referrals.
    let authority = signed_in(&hub, "health-bureau").await;
    let forbidden = authority
        .get(format!("{}/api/v1/referrals", hub.http))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);

    // The expert takes the case on and views its slide through the hub: the tiles are the
    // edge's own, byte for byte.
    let claim = |client: reqwest::Client| {
        let url = format!("{}/api/v1/referrals/{referral_id}/claim", hub.http);
        async move { client.post(url).send().await.unwrap().status() }
    };
    // An admin may assign it, to an expert account only.
    let admin = signed_in(&hub, "it-wu").await;
    let assign_url = format!("{}/api/v1/referrals/{referral_id}/assign", hub.http);
    let assign = |who: &str| {
        let (admin, url) = (admin.clone(), assign_url.clone());
        let body = serde_json::json!({ "expert": who });
        async move { admin.post(url).json(&body).send().await.unwrap().status() }
    };
    assert_eq!(assign("health-bureau").await, 400, "not an expert");
    assert_eq!(assign("nobody").await, 400);
    assert_eq!(assign("prof-zhang").await, 200);
    let not_admin = expert
        .post(assign_url.clone())
        .json(&serde_json::json!({ "expert": "prof-zhang" }))
        .send()
        .await
        .unwrap();
    assert_eq!(not_admin.status(), 403, "only admins assign");
    // An admin administers: taking a case, viewing its slides and answering are the experts'.
    assert_eq!(
        claim(admin.clone()).await,
        403,
        "an admin cannot take a case"
    );
    for url in [
        format!("{}/consult/{referral_id}", hub.http),
        format!("{}/consult/{referral_id}/slides/{slide_id}.dzi", hub.http),
        format!("{}/consult/{referral_id}/thumbnail/{slide_id}", hub.http),
    ] {
        let status = admin.get(&url).send().await.unwrap().status();
        assert_eq!(status, 403, "an admin sees no slide: {url}");
    }
    let report = admin
        .post(format!(
            "{}/api/v1/referrals/{referral_id}/report",
            hub.http
        ))
        .json(&serde_json::json!({"category": "benign", "diagnosis": "x", "recommendations": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 403, "an admin signs no diagnosis");
    let worklist = get_text(&admin, format!("{}/referrals", hub.http)).await;
    assert!(!worklist.contains("/thumbnail/"), "{worklist}");
    assert_eq!(claim(expert.clone()).await, 200);
    let other = signed_in(&hub, "dr-chen").await;
    assert_eq!(
        claim(other.clone()).await,
        409,
        "already held by prof-zhang"
    );
    let consult = format!("{}/consult/{referral_id}/slides/{slide_id}", hub.http);
    // The overview and the tiles around the marked region came ahead of the expert.
    let cache_url = format!("{}/api/v1/referrals/{referral_id}/cache", hub.http);
    eventually(
        "the consult prefetched",
        Duration::from_secs(30),
        || async { get_json(&expert, cache_url.clone()).await["prefetch"]["state"] == "done" },
    )
    .await;
    let cache = get_json(&expert, cache_url.clone()).await;
    assert!(cache["cached_tiles"].as_u64().unwrap() > 20, "{cache}");
    assert_eq!(
        cache["prefetch"]["fetched_tiles"], cache["cached_tiles"],
        "{cache}"
    );
    let near_region = expert
        .get(format!("{consult}_files/12/4_4.jpeg"))
        .send()
        .await
        .unwrap();
    assert_eq!(near_region.status(), 200);
    assert_eq!(near_region.headers()["x-grassroots-cache"], "hit");
    let near_region = near_region.bytes().await.unwrap();
    assert_eq!(
        near_region,
        get_bytes(
            &client,
            format!("{}/slides/{slide_id}_files/12/4_4.jpeg", edge.http)
        )
        .await,
        "a prefetched tile is the edge's own"
    );
    let dzi = get_text(&expert, format!("{consult}.dzi")).await;
    assert!(
        dzi.contains("<Image") && dzi.contains("Width=\"2220\""),
        "{dzi}"
    );
    let through_hub = expert
        .get(format!("{consult}_files/12/0_0.jpeg"))
        .send()
        .await
        .unwrap();
    assert_eq!(through_hub.status(), 200);
    let through_hub = through_hub.bytes().await.unwrap();
    let at_edge = get_bytes(
        &client,
        format!("{}/slides/{slide_id}_files/12/0_0.jpeg", edge.http),
    )
    .await;
    assert_eq!(through_hub, at_edge);
    // Another expert may not look; a slide outside the referral is refused.
    let denied = other
        .get(format!("{consult}_files/12/0_0.jpeg"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    // Any expert sees the worklist's thumbnail: the whole slide in one small tile.
    let thumbnail = other
        .get(format!(
            "{}/consult/{referral_id}/thumbnail/{slide_id}",
            hub.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(thumbnail.status(), 200);
    assert_eq!(
        thumbnail.bytes().await.unwrap(),
        get_bytes(
            &client,
            format!("{}/slides/{slide_id}_files/8/0_0.jpeg", edge.http)
        )
        .await
    );
    let worklist = get_text(&other, format!("{}/referrals", hub.http)).await;
    assert!(
        worklist.contains(&format!("/consult/{referral_id}/thumbnail/{slide_id}")),
        "{worklist}"
    );
    let outside = expert
        .get(format!(
            "{}/consult/{referral_id}/slides/{}_files/12/0_0.jpeg",
            hub.http,
            "ab".repeat(32)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), 404);
    // Every request is audited: who, which slide, what, and the answer.
    let audit = get_json(
        &expert,
        format!("{}/api/v1/referrals/{referral_id}/audit", hub.http),
    )
    .await;
    let audit = audit.as_array().unwrap();
    assert!(audit
        .iter()
        .any(|e| e["user"] == "prof-zhang" && e["what"] == "12/0_0" && e["status"] == 200));
    assert!(audit
        .iter()
        .any(|e| e["user"] == "dr-chen" && e["status"] == 403));

    // Privacy: nothing at the hub — store, blobs, logs — names the patient or the case, and no
    // file there is the slide or a tile.
    let mut hub_files = files(&net.data("hub"));
    hub_files.push(hub.log.clone());
    for file in &hub_files {
        let bytes = std::fs::read(file).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        for secret in ["Wang Xiuying", "ID-330106-1977", "S26-01234"] {
            assert!(!text.contains(secret), "{secret} in {}", file.display());
        }
        assert!(
            bytes != svs,
            "the slide reached the hub: {}",
            file.display()
        );
        assert!(
            bytes != through_hub.as_ref(),
            "a tile was stored at the hub: {}",
            file.display()
        );
    }

    // The expert answers, with annotations drawn on the slide; the answer reaches the edge.
    let annotations = serde_json::json!({
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature",
             "geometry": {"type": "Polygon", "coordinates": [[[100, 100], [400, 100], [400, 300], [100, 100]]]},
             "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}}},
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [250, 200]}, "properties": {}}
        ]
    });
    let report = serde_json::json!({
        "category": "malignant",
        "diagnosis": "Well-differentiated adenocarcinoma.",
        "recommendations": "Refer for surgery; staging CT.",
        "annotations": annotations,
    });
    let report_url = format!("{}/api/v1/referrals/{referral_id}/report", hub.http);
    let post = |client: reqwest::Client| {
        let (url, body) = (report_url.clone(), report.clone());
        async move { client.post(url).json(&body).send().await.unwrap().status() }
    };
    assert_eq!(post(other.clone()).await, 403);
    let empty = expert
        .post(report_url.clone())
        .json(&serde_json::json!({ "category": "benign", "diagnosis": "  " }))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 400, "a report needs a diagnosis");
    assert!(empty.text().await.unwrap().contains("diagnosis"));
    assert_eq!(post(expert.clone()).await, 201);
    assert_eq!(post(expert.clone()).await, 409, "one answer per referral");
    assert_eq!(
        assign("dr-chen").await,
        409,
        "an answered referral stays with its expert"
    );
    // The answer closes the consult: the hub's cache of it is gone.
    let cache = get_json(&expert, cache_url.clone()).await;
    assert_eq!(cache["closed"], true, "{cache}");
    assert_eq!(cache["cached_tiles"], 0, "{cache}");
    let answer = answer_at_edge(&client, &edge, "malignant").await;
    assert_eq!(answer["expert"], "prof-zhang");
    // The edge's own ledger of what left: the prefetched overview and the tiles viewed, each
    // recorded before it was sent; and with the answer here, nothing more leaves.
    let egress = get_json(
        &client,
        format!("{}/api/v1/referrals/{referral_id}/egress", edge.http),
    )
    .await;
    let items = egress["egress"].as_array().unwrap();
    assert!(items.len() > 20, "{egress}");
    assert!(items.iter().any(|e| e["item"] == "dzi"), "{egress}");
    assert!(items.iter().any(|e| e["prefetch"] == true), "{egress}");
    assert_eq!(
        egress["bytes"].as_u64().unwrap(),
        items
            .iter()
            .map(|e| e["bytes"].as_u64().unwrap())
            .sum::<u64>()
    );
    let closed = expert
        .get(format!("{consult}_files/12/3_3.jpeg"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        closed.status(),
        404,
        "the edge sends no pixel of an answered referral"
    );
    assert!(closed.text().await.unwrap().contains("answered"));
    let ledger = get_json(
        &client,
        format!("{}/api/v1/referrals/{referral_id}/egress", edge.http),
    )
    .await;
    assert_eq!(ledger["items"], egress["items"], "nothing more left");
    let page = get_text(&client, format!("{}/referrals/{referral_id}", edge.http)).await;
    assert!(page.contains("What left this edge"), "{page}");
    let drawn: serde_json::Value =
        serde_json::from_str(answer["annotations_geojson"].as_str().unwrap()).unwrap();
    assert_eq!(drawn, annotations);

    // A revoked edge's tiles are out of reach.
    net.revoke("county-a");
    eventually(
        "the revoked edge's tiles unreachable",
        Duration::from_secs(20),
        || async {
            expert
                .get(format!("{consult}_files/12/0_0.jpeg"))
                .send()
                .await
                .unwrap()
                .status()
                == 503
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn identifiers_typed_into_free_text_are_refused_and_the_form_shows_what_crosses() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    let edge = net.start_edge("county-a", &[]);
    let client = signed_in(&edge, "dr-li").await;
    let slide_id = upload_svs(&client, &edge).await;
    let form = serde_json::json!({
        "case_number": "S26-01234",
        "patient_name": "Wang Xiuying",
        "patient_id": "ID-330106-1977",
        "age_years": 47,
        "sex": "female",
        "specimen": "gastric biopsy, antrum",
        "question": "High-grade dysplasia or early carcinoma?",
        "urgency": "priority",
        "slide_ids": [slide_id],
    });
    let post = |url: &'static str, body: serde_json::Value| {
        let client = client.clone();
        let base = edge.http.clone();
        async move {
            let response = client
                .post(format!("{base}{url}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    for (field, text, named) in [
        (
            "question",
            "Recurrence of Wang Xiuying's earlier lesion?",
            "patient's name",
        ),
        ("question", "recurrence in xiuying?", "patient's name"),
        ("specimen", "antrum, ID 330106 1977", "patient id"),
        (
            "question",
            "Compare with s26 01234, please",
            "pathology number",
        ),
    ] {
        let mut typed = form.clone();
        typed[field] = text.into();
        for url in ["/api/v1/referrals/preview", "/api/v1/referrals"] {
            let (status, reason) = post(url, typed.clone()).await;
            assert_eq!(status, 400, "{url} {text:?}: {reason}");
            assert!(reason.contains(field) && reason.contains(named), "{reason}");
            assert!(
                !reason.contains("Xiuying") && !reason.contains("330106"),
                "{reason}"
            );
        }
    }
    let recorded = get_json(&client, format!("{}/api/v1/referrals", edge.http)).await;
    assert_eq!(
        recorded,
        serde_json::json!([]),
        "nothing refused is recorded or queued"
    );

    // The form's review step: exactly what would cross, and none of what stays.
    let (status, preview) = post("/api/v1/referrals/preview", form.clone()).await;
    assert_eq!(status, 200, "{preview}");
    let preview: serde_json::Value = serde_json::from_str(&preview).unwrap();
    let crosses = preview["crosses"].to_string();
    for identifier in ["Wang", "Xiuying", "330106", "S26-01234", "\"47\""] {
        assert!(!crosses.contains(identifier), "{identifier} in {crosses}");
    }
    assert_eq!(preview["crosses"]["question"], form["question"]);
    assert_eq!(preview["crosses"]["age_band"], "40-49");
    assert_eq!(preview["stays"]["patient_name"], "Wang Xiuying");
    let recorded = get_json(&client, format!("{}/api/v1/referrals", edge.http)).await;
    assert_eq!(recorded, serde_json::json!([]), "a preview records nothing");
    let page = get_text(&client, format!("{}/referrals", edge.http)).await;
    assert!(page.contains("Review what crosses to the hub"));

    // In Chromium: the refusal beside the button, the review, then the referral's page.
    let seen = run_browser(
        "refer.mjs",
        vec![
            ("EDGE_URL", edge.http.clone()),
            ("USERNAME", "dr-li".into()),
            ("PASSWORD", PASSWORD.into()),
            ("SLIDE_ID", slide_id.clone()),
        ],
    )
    .await;
    let refusal = seen["refusal"].as_str().unwrap();
    assert!(
        refusal.contains("question contains the patient's name"),
        "{seen}"
    );
    assert_eq!(seen["reviewHiddenAfterRefusal"], true, "{seen}");
    let crosses = seen["crosses"].as_str().unwrap();
    assert!(
        crosses.contains("High-grade dysplasia") && !crosses.contains("Wang"),
        "{seen}"
    );
    assert!(
        seen["landed"].as_str().unwrap().contains("/referrals/"),
        "{seen}"
    );
    assert!(seen["errors"].as_array().unwrap().is_empty(), "{seen}");
    let recorded = get_json(&client, format!("{}/api/v1/referrals", edge.http)).await;
    assert_eq!(
        recorded.as_array().unwrap().len(),
        1,
        "sent once, after the review"
    );
}

/// A referral whose queueing fails after it was recorded is still one referral: the doctor is
/// told it is recorded (not asked to send it again), and it is queued once the store recovers.
#[tokio::test(flavor = "multi_thread")]
async fn a_referral_whose_queueing_fails_is_recorded_once_and_queued_later() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    let mut edge = net.start_edge("county-a", &[]);
    let client = signed_in(&edge, "dr-li").await;
    let slide_id = upload_svs(&client, &edge).await;
    // The blob store becomes unusable (a file where its folder was): queueing fails.
    let blobs = net.data("county-a").join("blobs");
    let aside = net.data("county-a").join("blobs.aside");
    std::fs::rename(&blobs, &aside).unwrap();
    std::fs::write(&blobs, b"not a folder").unwrap();
    let referred = client
        .post(format!("{}/api/v1/referrals", edge.http))
        .json(&serde_json::json!({
            "case_number": "S26-00555", "patient_name": "", "patient_id": "", "age_years": 40,
            "sex": "female", "specimen": "gastric biopsy", "question": "Dysplasia?",
            "urgency": "routine", "slide_ids": [slide_id], "regions": [],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        referred.status(),
        201,
        "recorded: the doctor must not refer it again"
    );
    let rows = get_json(&client, format!("{}/api/v1/referrals", edge.http)).await;
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["local"]["outbox_id"], "", "not queued yet");
    // The store recovers; at the next start (or within a minute) the referral is queued, once.
    edge.kill9();
    std::fs::remove_file(&blobs).unwrap();
    std::fs::rename(&aside, &blobs).unwrap();
    edge = net.start_edge("county-a", &[]);
    let client = signed_in(&edge, "dr-li").await;
    let rows = get_json(&client, format!("{}/api/v1/referrals", edge.http)).await;
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_ne!(rows[0]["local"]["outbox_id"], "", "{rows}");
    assert_eq!(rows[0]["delivery"], "pending", "{rows}");
}
