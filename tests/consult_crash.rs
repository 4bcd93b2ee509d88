//! Either node killed (SIGKILL) in the middle of a consult, with real processes: nothing is lost
//! and nothing is duplicated. The edge dies while the expert's tiles are in flight; the hub dies
//! holding an answer it has not delivered yet. After the restarts the expert still holds the
//! case, views the same tiles, cannot answer twice, and the edge receives the answer exactly once.

mod common;

use std::time::Duration;

use common::*;

async fn status(client: &reqwest::Client, url: String) -> u16 {
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_either_node_mid_consult_loses_and_duplicates_nothing() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    net.add_user("hub", "expert", "prof-zhang");
    let mut edge = net.start_edge("county-a", &[]);
    let mut hub = net.start_hub(&[]);
    let client = signed_in(&edge, "dr-li").await;
    let slide_id = upload_svs(&client, &edge).await;
    let referral_id = refer(
        &client,
        &edge,
        serde_json::json!({
            "case_number": "S26-04242", "patient_name": "Li Hua", "patient_id": "ID-9",
            "age_years": 52, "sex": "female", "specimen": "cervical biopsy",
            "question": "CIN grade?", "urgency": "routine", "slide_ids": [slide_id],
        }),
    )
    .await;
    let expert = signed_in(&hub, "prof-zhang").await;
    claim_once_arrived(&expert, &hub, &referral_id).await;

    // The edge dies while the expert's viewer has tiles in flight.
    let tile_url = |hub: &Node, col: u32, row: u32| {
        format!(
            "{}/consult/{referral_id}/slides/{slide_id}_files/12/{col}_{row}.jpeg",
            hub.http
        )
    };
    // The viewer keeps asking (four at a time, round and round the level) while the edge dies.
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u16>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let viewers: Vec<_> = (0..4u32)
        .map(|lane| {
            let (expert, statuses, stop) = (expert.clone(), statuses.clone(), stop.clone());
            let urls: Vec<String> = (0..88u32)
                .filter(|i| i % 4 == lane)
                .map(|i| tile_url(&hub, i % 8, i / 8))
                .collect();
            tokio::spawn(async move {
                for url in urls.iter().cycle() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let code = status(&expert, url.clone()).await;
                    statuses.lock().unwrap().push(code);
                }
            })
        })
        .collect();
    eventually("tiles flowing", Duration::from_secs(20), || async {
        statuses.lock().unwrap().len() >= 20
    })
    .await;
    edge.kill9();
    eventually(
        "the viewer sees the edge gone",
        Duration::from_secs(30),
        || async { statuses.lock().unwrap().iter().any(|s| *s != 200) },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for viewer in viewers {
        tokio::time::timeout(Duration::from_secs(30), viewer)
            .await
            .expect("no tile request hangs when the edge dies")
            .unwrap();
    }
    let answered = statuses.lock().unwrap().clone();
    assert!(
        answered.iter().all(|s| [200, 502, 503, 504].contains(s)),
        "{answered:?}"
    );
    drop(edge);
    let edge = net.start_edge("county-a", &[]);
    let client = signed_in(&edge, "dr-li").await;
    eventually(
        "tiles again after the edge restarts",
        Duration::from_secs(30),
        || async { status(&expert, tile_url(&hub, 3, 4)).await == 200 },
    )
    .await;
    let through_hub = expert
        .get(tile_url(&hub, 3, 4))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let at_edge = get_bytes(
        &client,
        format!("{}/slides/{slide_id}_files/12/3_4.jpeg", edge.http),
    )
    .await;
    assert_eq!(through_hub, at_edge);
    let local = get_json(&client, format!("{}/api/v1/referrals", edge.http)).await;
    assert_eq!(local.as_array().unwrap().len(), 1, "{local}");

    // The edge goes away again; the expert answers; the hub dies before it could deliver.
    let mut edge = edge;
    edge.kill9();
    drop(edge);
    let report_url = format!("{}/api/v1/referrals/{referral_id}/report", hub.http);
    let answer = serde_json::json!({
        "category": "uncertain",
        "diagnosis": "Atypia of undetermined significance.",
        "recommendations": "Repeat biopsy in 3 months.",
        "annotations": {"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [640, 880]},
             "properties": {"objectType": "annotation", "classification": {"name": "Atypia"}}}]},
    });
    let posted = expert
        .post(report_url.clone())
        .json(&answer)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    // A last tile request (the edge is gone: refused) and the hub dies the moment it answers:
    // its audit record was on disk before the answer went out.
    let last = status(&expert, tile_url(&hub, 2, 12)).await;
    assert_ne!(last, 200);
    hub.kill9();
    drop(hub);

    let hub = net.start_hub(&[]);
    let expert = signed_in(&hub, "prof-zhang").await;
    let at_hub = get_json(&expert, format!("{}/api/v1/referrals", hub.http)).await;
    assert_eq!(at_hub.as_array().unwrap().len(), 1, "{at_hub}");
    assert_eq!(at_hub[0]["assigned_to"], "prof-zhang");
    assert_eq!(at_hub[0]["report"]["category"], "uncertain");
    assert!(at_hub[0]["report_delivered_at"].is_null(), "{at_hub}");
    let again = expert
        .post(format!(
            "{}/api/v1/referrals/{referral_id}/report",
            hub.http
        ))
        .json(&answer)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "the answer survived: no second one");
    let audit = get_json(
        &expert,
        format!("{}/api/v1/referrals/{referral_id}/audit", hub.http),
    )
    .await;
    assert!(
        audit.as_array().unwrap().len() >= 20,
        "the audit of the tile requests survived: {}",
        audit.as_array().unwrap().len()
    );
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["what"] == "12/2_12" && e["status"] == last),
        "the request answered just before the kill is audited"
    );

    // The edge comes back: the answer arrives, once.
    let edge = net.start_edge("county-a", &[]);
    let client = signed_in(&edge, "dr-li").await;
    answer_at_edge(&client, &edge, "uncertain").await;
    eventually(
        "the hub records the delivery",
        Duration::from_secs(30),
        || async {
            !get_json(&expert, format!("{}/api/v1/referrals", hub.http)).await[0]
                ["report_delivered_at"]
                .is_null()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let local = get_json(&client, format!("{}/api/v1/referrals", edge.http)).await;
    assert_eq!(local.as_array().unwrap().len(), 1, "{local}");
    assert_eq!(
        edge.log_text()
            .matches("the hub answered a referral")
            .count(),
        1,
        "stored once"
    );
    assert_eq!(
        hub.log_text()
            .matches("answer delivered to the edge")
            .count(),
        1,
        "delivered once"
    );
}
