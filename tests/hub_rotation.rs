//! The hub's certificate is rotated without new kits for the edges (`provision renew hub`,
//! `edge/src/hub_trust.rs`), with real processes over real QUIC/mTLS:
//!
//! 1. the hub passes the network's revocation list on to an edge when it connects;
//! 2. `provision renew hub` revokes the hub's old certificate; the running hub passes the new
//!    list on, and the edge — which checks the CA's signature itself — drops its link to the hub
//!    still holding the revoked certificate and refuses it at every redial;
//! 3. the hub restarted with its new kit is accepted by the same edge, with the same kit;
//! 4. an answer given before the next renewal, while the edge was away, is still delivered:
//!    the hub signs it again with the certificate it holds now;
//! 5. an edge keeps the newest list across its own restart.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

async fn link(client: &reqwest::Client, edge: &Node) -> serde_json::Value {
    get_json(client, format!("{}/api/v1/link", edge.http)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn edges_follow_a_renewed_hub_certificate_and_refuse_the_revoked_one() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    net.add_user("hub", "expert", "prof-zhang");
    let mut hub = net.start_hub(&[]);
    let mut edge = net.start_edge("county-a", &[]);
    let doctor = signed_in(&edge, "dr-li").await;
    eventually(
        "online, with the network's revocation list",
        Duration::from_secs(20),
        || async {
            let link = link(&doctor, &edge).await;
            link["link"]["state"] == "online" && link["revocation_list"].is_u64()
        },
    )
    .await;
    let first = link(&doctor, &edge).await["revocation_list"]
        .as_u64()
        .unwrap();

    let renew_hub = || {
        let status = Command::new(bin())
            .args(["provision", "renew", "--dir"])
            .arg(net.prov())
            .arg("hub")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    };
    renew_hub();
    eventually(
        "the newer list at the edge and the old hub cut off",
        Duration::from_secs(20),
        || async {
            let link = link(&doctor, &edge).await;
            link["revocation_list"].as_u64() > Some(first) && link["link"]["state"] != "online"
        },
    )
    .await;
    edge.wait_for_log("the hub's certificate is revoked", Duration::from_secs(5));
    // Redials reach the old hub and are refused by the edge's own TLS check.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let link_now = link(&doctor, &edge).await;
    assert_ne!(link_now["link"]["state"], "online", "{link_now}");
    let error = link_now["link"]["last_error"].as_str().unwrap_or_default();
    assert!(error.to_lowercase().contains("revoked"), "{link_now}");

    // The hub comes back with its new kit; the edge, with its old kit, follows.
    hub.kill9();
    hub = net.start_hub(&[]);
    eventually("back online", Duration::from_secs(30), || async {
        link(&doctor, &edge).await["link"]["state"] == "online"
    })
    .await;

    // A case is referred; the edge goes away; the expert answers with this certificate.
    let slide_id = upload_svs(&doctor, &edge).await;
    refer(
        &doctor,
        &edge,
        serde_json::json!({
            "case_number": "S26-00900", "patient_name": "", "patient_id": "", "age_years": 60,
            "sex": "male", "specimen": "gastric biopsy", "question": "Dysplasia?",
            "urgency": "routine", "slide_ids": [slide_id], "regions": [],
        }),
    )
    .await;
    let expert = signed_in(&hub, "prof-zhang").await;
    let referrals_url = format!("{}/api/v1/referrals", hub.http);
    eventually(
        "the referral at the hub",
        Duration::from_secs(30),
        || async {
            get_json(&expert, referrals_url.clone())
                .await
                .as_array()
                .is_some_and(|all| all.len() == 1)
        },
    )
    .await;
    let id = get_json(&expert, referrals_url.clone()).await[0]["referral"]["referral_id"]
        .as_str()
        .unwrap()
        .to_string();
    edge.kill9();
    let claimed = expert
        .post(format!("{}/api/v1/referrals/{id}/claim", hub.http))
        .send()
        .await
        .unwrap();
    assert_eq!(claimed.status(), 200);
    let answered = expert
        .post(format!("{}/api/v1/referrals/{id}/report", hub.http))
        .json(&serde_json::json!({"category": "benign", "diagnosis": "Chronic gastritis."}))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 201);
    // The hub's certificate is renewed again before the edge comes back.
    renew_hub();
    hub.kill9();
    hub = net.start_hub(&[]);
    edge = net.start_edge("county-a", &[]);
    let doctor = signed_in(&edge, "dr-li").await;
    let answer = answer_at_edge(&doctor, &edge, "benign").await;
    assert_eq!(answer["expert"], "prof-zhang");

    // The edge keeps the newest list across a restart.
    let held = link(&doctor, &edge).await["revocation_list"].as_u64();
    assert!(held > Some(first + 1), "both renewals' lists arrived");
    edge.kill9();
    hub.kill9();
    edge = net.start_edge("county-a", &[]);
    let doctor = signed_in(&edge, "dr-li").await;
    assert_eq!(link(&doctor, &edge).await["revocation_list"].as_u64(), held);
}
