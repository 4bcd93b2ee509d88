//! What an edge can make the hub store (`hub/src/quota.rs`), against real hub processes over
//! real QUIC: an offer larger than its kind can be is refused for good before any chunk is
//! taken (no partial file at the hub), a site past its daily allowance is told to wait, and a hub
//! below its disk watermark refuses bulk work while its own records (a sign-in) keep working.

mod common;

use common::*;
use grassroots_transport::framed::{self, priority};
use grassroots_transport::{BlobStore, EdgeEndpoint, SendOptions, TransportError};
use grassroots_wire::capabilities::TRANSFER_REFUSED;
use grassroots_wire::Message;

async fn connect(net: &Network, site: &str) -> grassroots_transport::Connection {
    let kit = grassroots_provisioning::Kit::load(&net.kit(site)).unwrap();
    let endpoint = EdgeEndpoint::with_hub_addr(&kit, &net.hub_addr).unwrap();
    let connection = endpoint.connect().await.unwrap().connection;
    let (mut send, mut recv) = framed::open(&connection, priority::CONTROL).await.unwrap();
    send.send(&Message::Hello {
        versions: vec![1],
        software: "quota-test".into(),
    })
    .await
    .unwrap();
    send.send(&Message::Capabilities {
        names: vec![TRANSFER_REFUSED.into()],
    })
    .await
    .unwrap();
    assert!(matches!(
        recv.expect().await.unwrap(),
        Message::Welcome { .. }
    ));
    assert!(matches!(
        recv.expect().await.unwrap(),
        Message::Capabilities { .. }
    ));
    // Keep the control stream open for the rest of the test.
    tokio::spawn(async move {
        for seq in 0.. {
            if send.send(&Message::Ping { seq }).await.is_err() {
                return;
            }
            let _ = recv.expect().await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    connection
}

async fn offer(
    connection: &grassroots_transport::Connection,
    dir: &std::path::Path,
    label: &str,
    bytes: &[u8],
) -> Result<grassroots_transport::transfer::SendOutcome, TransportError> {
    let store = BlobStore::open(&dir.join("blobs")).unwrap();
    let file = dir.join(format!("{label}-{}", bytes.len()));
    std::fs::write(&file, bytes).unwrap();
    let offer = store.import_file(&file, label).await.unwrap();
    grassroots_transport::send_blob(connection, &store, &offer, &SendOptions::default(), |_| {})
        .await
}

fn small_referral() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "referral_id": "ab".repeat(16),
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
    .unwrap()
}

/// Partial blobs of offers on the hub (`<id>.part` and its `.state.json`); the hub's own
/// imports pass through the same folder as `import-*.tmp` for a moment and are not offers.
fn partial_files(net: &Network) -> usize {
    std::fs::read_dir(net.data("hub").join("blobs/partial"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().starts_with("import-"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_are_capped_per_kind_and_per_site_day() {
    let net = Network::new(&["county-a"]);
    let _hub = net.start_hub(&["--site-daily-mib", "1"]);
    let scratch = tempfile::tempdir().unwrap();
    let connection = connect(&net, "county-a").await;

    let huge = vec![b' '; grassroots_wire::referral::MAX_REFERRAL_BYTES + 1];
    match offer(&connection, scratch.path(), "referral", &huge).await {
        Err(TransportError::Refused(reason)) => {
            assert!(reason.contains("larger than any can be"), "{reason}")
        }
        other => panic!("expected a refusal for good, got {other:?}"),
    }
    match offer(
        &connection,
        scratch.path(),
        "model-status",
        &[b'{'; 100_000],
    )
    .await
    {
        Err(TransportError::Refused(_)) => {}
        other => panic!("a 100 kB model status must be refused, got {other:?}"),
    }
    assert_eq!(partial_files(&net), 0, "nothing of them was written");

    let taken = offer(&connection, scratch.path(), "referral", &small_referral()).await;
    assert!(taken.is_ok(), "{taken:?}");
    let over = vec![7u8; 1_500_000];
    match offer(&connection, scratch.path(), "federated-update", &over).await {
        Err(TransportError::Peer(reason)) => {
            assert!(reason.contains("daily allowance"), "{reason}")
        }
        other => panic!("expected a refusal for now, got {other:?}"),
    }
    assert!(
        connection.close_reason().is_none(),
        "the site stays connected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_disk_watermark_bulk_work_waits_and_records_go_on() {
    let net = Network::new(&["county-a"]);
    net.add_user("hub", "admin", "it-wu");
    let hub = net.start_hub(&["--min-free-disk-mib", "1000000000"]);
    let scratch = tempfile::tempdir().unwrap();
    let connection = connect(&net, "county-a").await;
    match offer(&connection, scratch.path(), "referral", &small_referral()).await {
        Err(TransportError::Peer(reason)) => assert!(reason.contains("disk"), "{reason}"),
        other => panic!("expected the disk watermark, got {other:?}"),
    }
    assert_eq!(partial_files(&net), 0);
    // The hub's own records still work: a sign-in writes a session durably.
    let admin = signed_in(&hub, "it-wu").await;
    let sites = get_json(&admin, format!("{}/api/v1/sites", hub.http)).await;
    assert_eq!(sites[0]["online"], true, "{sites}");
    let metrics = get_text(&admin, format!("{}/metrics", hub.http)).await;
    assert!(
        metrics.contains("grassroots_hub_transfers_refused_total 1"),
        "{metrics}"
    );
}
