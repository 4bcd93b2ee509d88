//! Version skew between edges and the hub, and refusals that reach the doctor
//! (`grassroots_wire::capabilities` has the rule).
//!
//! Against a real hub process, over real QUIC with the sites' certificates: an edge that
//! announces `transfer-refused` learns the hub's capabilities and gets a refused referral back as
//! `TransferRefused` with the reason; an edge of the first release (no announcement) gets the
//! `TransferRejected` it understands; an unknown message on the control stream is answered and
//! the session goes on. Against a real edge process and a hub made of the transport's own parts:
//! a referral the hub refuses is not offered again, and the doctor reads why on the referrals page
//! and in the API.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use grassroots_transport::framed::{self, priority};
use grassroots_transport::link::{drive_hub_control, serve_streams, StreamHandler};
use grassroots_transport::{BlobStore, EdgeEndpoint, HubEndpoint, SendOptions, TransportError};
use grassroots_wire::capabilities::{Capabilities, TRANSFER_REFUSED};
use grassroots_wire::referral::REFERRAL_LABEL;
use grassroots_wire::session::SessionEvent;
use grassroots_wire::Message;

/// A referral as a newer (or faulty) edge might send it: a field the hub does not know.
fn referral_with_unknown_field(nonce: u8) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "referral_id": format!("{nonce:02x}").repeat(16),
        "case_pseudonym": "ab".repeat(32),
        "age_band": "40-49",
        "sex": "female",
        "specimen": "gastric biopsy",
        "question": "Dysplasia?",
        "urgency": "routine",
        "slides": [],
        "referred_at": "2026-12-01T00:00:00Z",
        "ward_bed": "7-12",
    }))
    .unwrap()
}

/// Opens a control session as `site`; with `announce`, the way this release does it.
async fn control_session(
    net: &Network,
    site: &str,
    announce: bool,
) -> (
    grassroots_transport::Connection,
    grassroots_transport::FramedSend,
    grassroots_transport::FramedRecv,
) {
    let kit = grassroots_provisioning::Kit::load(&net.kit(site)).unwrap();
    let endpoint = EdgeEndpoint::with_hub_addr(&kit, &net.hub_addr).unwrap();
    let connection = endpoint.connect().await.unwrap().connection;
    let (mut send, mut recv) = framed::open(&connection, priority::CONTROL).await.unwrap();
    send.send(&Message::Hello {
        versions: vec![1],
        software: format!("wire-evolution-test {site}"),
    })
    .await
    .unwrap();
    if announce {
        send.send(&Message::Capabilities {
            names: vec![TRANSFER_REFUSED.into(), "not-yet-invented".into()],
        })
        .await
        .unwrap();
    }
    assert!(matches!(
        recv.expect().await.unwrap(),
        Message::Welcome { version: 1, .. }
    ));
    (connection, send, recv)
}

async fn send_referral(
    connection: &grassroots_transport::Connection,
    dir: &std::path::Path,
    bytes: &[u8],
) -> Result<grassroots_transport::transfer::SendOutcome, TransportError> {
    let store = BlobStore::open(&dir.join("blobs")).unwrap();
    let file = dir.join(format!("referral-{}.json", bytes.len()));
    std::fs::write(&file, bytes).unwrap();
    let offer = store.import_file(&file, REFERRAL_LABEL).await.unwrap();
    grassroots_transport::send_blob(connection, &store, &offer, &SendOptions::default(), |_| {})
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_negotiates_capabilities_and_tells_a_new_edge_why_it_refuses_a_referral() {
    let net = Network::new(&["county-a", "county-b"]);
    net.add_user("hub", "admin", "admin");
    let _hub = net.start_hub(&[]);
    let scratch = tempfile::tempdir().unwrap();

    // This release: the hub answers the announcement with its own.
    let (connection, mut send, mut recv) = control_session(&net, "county-a", true).await;
    match recv.expect().await.unwrap() {
        Message::Capabilities { names } => {
            assert!(names.contains(&TRANSFER_REFUSED.to_string()), "{names:?}")
        }
        other => panic!("expected the hub's capabilities, got {other:?}"),
    }
    // A message from a release yet to come is answered, and the session goes on.
    let mut raw = connection.open_bi().await.unwrap();
    drop(raw.1);
    raw.0.write_all(&[0, 0, 0, 1, 200]).await.unwrap();
    send.send(&Message::Ping { seq: 1 }).await.unwrap();
    assert_eq!(recv.expect().await.unwrap(), Message::Pong { seq: 1 });

    let refused = send_referral(&connection, scratch.path(), &referral_with_unknown_field(1)).await;
    match refused {
        Err(TransportError::Refused(reason)) => {
            assert!(
                reason.contains("ward_bed"),
                "the reason names the field: {reason}"
            )
        }
        other => panic!("expected a refusal for good, got {other:?}"),
    }
    // A valid referral on the same connection is still taken.
    let valid = serde_json::to_vec(&serde_json::json!({
        "referral_id": "cd".repeat(16),
        "case_pseudonym": "ab".repeat(32),
        "age_band": "40-49",
        "sex": "female",
        "specimen": "gastric biopsy",
        "question": "Dysplasia?",
        "urgency": "routine",
        "slides": [{"slide_id": "ef".repeat(32), "width": 100, "height": 100,
                    "microns_per_pixel": null, "ai_triage": null, "ai_score": null,
                    "regions_geojson": null}],
        "referred_at": "2026-12-01T00:00:00Z",
    }))
    .unwrap();
    let taken = send_referral(&connection, scratch.path(), &valid).await;
    assert!(taken.is_ok(), "{taken:?}");

    // The first release: no announcement, no capabilities from the hub, and a refusal it
    // understands (TransferRejected, which it retries as it always did).
    let (old, mut old_send, mut old_recv) = control_session(&net, "county-b", false).await;
    // It keeps its heartbeats, and every answer it gets is a Pong: the hub sends an edge that
    // announced nothing no Capabilities.
    let heard = tokio::spawn(async move {
        let mut others = Vec::new();
        for seq in 0..40 {
            if old_send.send(&Message::Ping { seq }).await.is_err() {
                break;
            }
            match old_recv.expect().await {
                Ok(Message::Pong { .. }) => {}
                Ok(other) => others.push(other),
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        others
    });
    let rejected = send_referral(&old, scratch.path(), &referral_with_unknown_field(2)).await;
    match rejected {
        Err(TransportError::Peer(reason)) => assert!(reason.contains("ward_bed"), "{reason}"),
        other => panic!("an old edge must get TransferRejected, got {other:?}"),
    }
    let others = heard.await.unwrap();
    assert!(
        others.is_empty(),
        "the hub sent an old edge something it did not ask for: {others:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_the_hub_refuses_is_not_offered_again_and_the_doctor_reads_why() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");

    // A hub of the transport's own parts that refuses every referral for good (and takes the
    // edge's other transfers).
    let kit = grassroots_provisioning::Kit::load(&net.kit("hub")).unwrap();
    let endpoint = HubEndpoint::bind(net.hub_addr.parse().unwrap(), &kit, None).unwrap();
    let blob_dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::open(blob_dir.path()).unwrap();
    let offers = Arc::new(Mutex::new(0u32));
    let announced = Arc::new(Mutex::new(Capabilities::default()));
    {
        let offers = offers.clone();
        let announced = announced.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let Ok(peer) = HubEndpoint::handshake(incoming).await else {
                    continue;
                };
                let (offers, announced, blobs) = (offers.clone(), announced.clone(), blobs.clone());
                let handler: StreamHandler = Arc::new(move |_peer, first, mut send, mut recv| {
                    let (offers, announced, blobs) =
                        (offers.clone(), announced.clone(), blobs.clone());
                    Box::pin(async move {
                        match first {
                            hello @ Message::Hello { .. } => {
                                drive_hub_control(
                                    hello,
                                    send,
                                    recv,
                                    Duration::from_millis(500),
                                    |event| {
                                        if let SessionEvent::PeerCapabilities(names) = event {
                                            *announced.lock().unwrap() = names.clone();
                                        }
                                    },
                                    || {},
                                    Arc::new(|_| {}),
                                )
                                .await;
                            }
                            Message::TransferOffer(offer) => {
                                let Ok(received) = grassroots_transport::receive_blob(
                                    &blobs, offer, &mut send, &mut recv,
                                )
                                .await
                                else {
                                    return;
                                };
                                if received.offer.label != REFERRAL_LABEL {
                                    // Coverage days, model status: taken as a hub would.
                                    let _ = received.acknowledge(&mut send).await;
                                    return;
                                }
                                *offers.lock().unwrap() += 1;
                                let peer = announced.lock().unwrap().clone();
                                received
                                    .refuse_for_good(
                                        &mut send,
                                        "the network takes no referrals of gastric biopsies",
                                        &peer,
                                    )
                                    .await
                                    .unwrap();
                            }
                            _ => {}
                        }
                    })
                });
                tokio::spawn(serve_streams(peer, handler, Arc::new(|_| {})));
            }
        });
    }

    let edge = net.start_edge("county-a", &[]);
    let client = signed_in(&edge, "dr-li").await;
    let slide_id = upload_svs(&client, &edge).await;
    let referred = client
        .post(format!("{}/api/v1/referrals", edge.http))
        .json(&serde_json::json!({
            "case_number": "S26-00042",
            "patient_name": "Li Hua",
            "patient_id": "ID-1",
            "age_years": 52,
            "sex": "male",
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

    eventually(
        "the refusal at the edge",
        Duration::from_secs(30),
        || async {
            let rows = get_json(&client, format!("{}/api/v1/referrals", edge.http)).await;
            rows[0]["delivery"] == "refused"
        },
    )
    .await;
    let rows = get_json(&client, format!("{}/api/v1/referrals", edge.http)).await;
    assert_eq!(
        rows[0]["refusal"],
        "the network takes no referrals of gastric biopsies"
    );
    assert!(announced.lock().unwrap().has(TRANSFER_REFUSED));
    let page = client
        .get(format!("{}/referrals", edge.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("refused by the hub: the network takes no referrals of gastric biopsies"),
        "{page}"
    );
    let id = rows[0]["local"]["referral"]["referral_id"]
        .as_str()
        .unwrap();
    let detail = client
        .get(format!("{}/referrals/{id}", edge.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(detail.contains("Refused by the hub"), "{detail}");

    // Not offered again: the outbox gave up on it for good.
    let offered = *offers.lock().unwrap();
    assert_eq!(offered, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        *offers.lock().unwrap(),
        offered,
        "a refused referral was offered again"
    );
}
