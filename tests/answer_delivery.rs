//! One stalled edge must not hold up answers to the others: a site that is connected and keeps
//! its heartbeats but never reads a stream the hub opens (a hung node, a faulty release) gets its
//! answer later; a real edge whose answer is given afterwards receives it at once.

mod common;

use std::time::Duration;

use common::*;
use grassroots_transport::framed::{self, priority};
use grassroots_transport::{BlobStore, EdgeEndpoint, SendOptions};
use grassroots_wire::referral::REFERRAL_LABEL;
use grassroots_wire::Message;

async fn answer(hub: &Node, expert: &reqwest::Client, referral_id: &str) {
    let claimed = expert
        .post(format!("{}/api/v1/referrals/{referral_id}/claim", hub.http))
        .send()
        .await
        .unwrap();
    assert_eq!(claimed.status(), 200);
    let answered = expert
        .post(format!(
            "{}/api/v1/referrals/{referral_id}/report",
            hub.http
        ))
        .json(&serde_json::json!({
            "category": "benign",
            "diagnosis": "Chronic gastritis, no dysplasia.",
            "recommendations": "",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_edge_does_not_hold_up_answers_to_other_edges() {
    let net = Network::new(&["county-a", "county-b"]);
    net.add_user("hub", "expert", "prof-zhang");
    net.add_user("county-b", "clinician", "dr-li");
    let hub = net.start_hub(&[]);
    let expert = signed_in(&hub, "prof-zhang").await;

    // county-a: connected, heartbeats answered, one referral sent, and then it reads nothing.
    let kit = grassroots_provisioning::Kit::load(&net.kit("county-a")).unwrap();
    let endpoint = EdgeEndpoint::with_hub_addr(&kit, &net.hub_addr).unwrap();
    let stalled = endpoint.connect().await.unwrap().connection;
    let (mut control, mut control_recv) = framed::open(&stalled, priority::CONTROL).await.unwrap();
    control
        .send(&Message::Hello {
            versions: vec![1],
            software: "stalled".into(),
        })
        .await
        .unwrap();
    assert!(matches!(
        control_recv.expect().await.unwrap(),
        Message::Welcome { .. }
    ));
    tokio::spawn(async move {
        for seq in 0.. {
            if control.send(&Message::Ping { seq }).await.is_err() {
                return;
            }
            let _ = control_recv.expect().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let scratch = tempfile::tempdir().unwrap();
    let blobs = BlobStore::open(&scratch.path().join("blobs")).unwrap();
    let stalled_referral = "a1".repeat(16);
    let file = scratch.path().join("referral.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&serde_json::json!({
            "referral_id": stalled_referral,
            "case_pseudonym": "ab".repeat(32),
            "age_band": "50-59",
            "sex": "male",
            "specimen": "gastric biopsy",
            "question": "Dysplasia?",
            "urgency": "urgent",
            "slides": [{"slide_id": "ef".repeat(32), "width": 100, "height": 100,
                        "microns_per_pixel": null, "ai_triage": null, "ai_score": null,
                        "regions_geojson": null}],
            "referred_at": "2026-12-01T00:00:00Z",
        }))
        .unwrap(),
    )
    .unwrap();
    let offer = blobs.import_file(&file, REFERRAL_LABEL).await.unwrap();
    grassroots_transport::send_blob(&stalled, &blobs, &offer, &SendOptions::default(), |_| {})
        .await
        .unwrap();

    // county-b: a real edge with a real referral.
    let edge = net.start_edge("county-b", &[]);
    let doctor = signed_in(&edge, "dr-li").await;
    let slide_id = upload_svs(&doctor, &edge).await;
    let referred = doctor
        .post(format!("{}/api/v1/referrals", edge.http))
        .json(&serde_json::json!({
            "case_number": "S26-00077",
            "patient_name": "Zhao Min",
            "patient_id": "ID-2",
            "age_years": 61,
            "sex": "female",
            "specimen": "gastric biopsy",
            "question": "Intestinal metaplasia?",
            "urgency": "routine",
            "slide_ids": [slide_id],
            "regions": [],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(referred.status(), 201);
    let referred: serde_json::Value = referred.json().await.unwrap();
    let edge_referral = referred["referral"]["referral_id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(
        "both referrals at the hub",
        Duration::from_secs(30),
        || async {
            get_json(&expert, format!("{}/api/v1/referrals", hub.http))
                .await
                .as_array()
                .is_some_and(|all| all.len() == 2)
        },
    )
    .await;

    // The stalled site's answer first: its delivery starts and hangs.
    answer(&hub, &expert, &stalled_referral).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    answer(&hub, &expert, &edge_referral).await;
    eventually(
        "the real edge has its answer",
        Duration::from_secs(20),
        || async {
            let rows = get_json(&doctor, format!("{}/api/v1/referrals", edge.http)).await;
            !rows[0]["local"]["report"].is_null()
        },
    )
    .await;
    let worklist = get_json(&expert, format!("{}/api/v1/referrals", hub.http)).await;
    let stalled_row = worklist
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["referral"]["referral_id"] == stalled_referral.as_str())
        .unwrap();
    assert!(
        stalled_row["report_delivered_at"].is_null(),
        "the stalled edge read nothing, so nothing was delivered: {stalled_row}"
    );
    assert!(
        stalled.close_reason().is_none(),
        "the stalled site stays connected"
    );
}
