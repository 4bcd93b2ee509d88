//! Bulk transfer end to end: an edge sends a file to the hub while both are killed with SIGKILL
//! mid-transfer and restarted; the transfer resumes from the last good chunk (not from zero) and
//! the hub ends up with exactly the file's bytes, recorded once.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

fn is_report(row: &serde_json::Value) -> bool {
    matches!(
        row["label"].as_str(),
        Some(
            grassroots_wire::coverage::COVERAGE_LABEL | grassroots_wire::models::MODEL_STATUS_LABEL
        )
    )
}

async fn hub_progress(client: &reqwest::Client, hub: &Node) -> (u64, usize) {
    let Ok(response) = client
        .get(format!("{}/api/v1/transfers", hub.http))
        .send()
        .await
    else {
        return (0, 0);
    };
    let value: serde_json::Value = response.json().await.unwrap_or_default();
    // The edge also sends its own small reports (coverage, model status): the test's file is
    // the large one, and the only one not labelled as a report.
    let durable = value["in_progress"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .filter(|r| !is_report(r))
                .filter_map(|r| r["durable_bytes"].as_u64())
                .max()
        })
        .unwrap_or(0);
    let received = value["received"]
        .as_array()
        .map_or(0, |rows| rows.iter().filter(|r| !is_report(r)).count());
    (durable, received)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_transfer_survives_sigkill_of_either_side_and_arrives_intact() {
    let net = Network::new(&["county-a"]);
    net.add_user("hub", "admin", "admin");
    net.add_user("county-a", "admin", "admin");
    // 24 MiB of incompressible bytes, sent at ~4 MB/s so that there is time to kill things.
    let outgoing = net.data("county-a").join("outgoing");
    std::fs::create_dir_all(&outgoing).unwrap();
    let source = outgoing.join("update.bin");
    let mut data = vec![0u8; 24 * 1024 * 1024];
    let mut state: u64 = 0x9E3779B97F4A7C15;
    for byte in data.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    std::fs::File::create(&source)
        .unwrap()
        .write_all(&data)
        .unwrap();
    let expected = blake3::hash(&data).to_hex().to_string();
    let limit = ["--bulk-limit-mbps", "32"];

    let mut hub = net.start_hub(&[]);
    let mut edge = net.start_edge("county-a", &limit);
    let edge_client = signed_in(&edge, "admin").await;
    let response = edge_client
        .post(format!("{}/api/v1/transfers", edge.http))
        .json(&serde_json::json!({ "path": source, "label": "federated-update" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let entry: serde_json::Value = response.json().await.unwrap();
    // Nothing outside the outgoing folder can be sent: not the kit (it holds the site's private
    // key), not through a symbolic link, not by climbing out with "..".
    std::os::unix::fs::symlink(net.kit("county-a"), outgoing.join("kit-link")).unwrap();
    for path in [
        net.kit("county-a").to_string_lossy().into_owned(),
        "kit-link".into(),
        "../state.sled/db".into(),
    ] {
        let refused = edge_client
            .post(format!("{}/api/v1/transfers", edge.http))
            .json(&serde_json::json!({ "path": path }))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{path}");
        let body = refused.text().await.unwrap();
        assert!(
            body.contains("only files placed there can be sent"),
            "{body}"
        );
    }
    assert_eq!(entry["id"], expected.as_str());

    // Kill the hub once a few chunks are durable there.
    let client = signed_in(&hub, "admin").await;
    eventually(
        "4 MiB durable at the hub",
        Duration::from_secs(30),
        || async { hub_progress(&client, &hub).await.0 >= 4 * 1024 * 1024 },
    )
    .await;
    hub.kill9();
    let hub = net.start_hub(&[]);
    let client = signed_in(&hub, "admin").await;
    // Now kill the edge mid-way too.
    eventually(
        "12 MiB durable at the hub",
        Duration::from_secs(40),
        || async { hub_progress(&client, &hub).await.0 >= 12 * 1024 * 1024 },
    )
    .await;
    edge.kill9();
    let edge = net.start_edge("county-a", &limit);
    eventually(
        "the transfer completes",
        Duration::from_secs(60),
        || async { hub_progress(&client, &hub).await.1 == 1 },
    )
    .await;

    let value: serde_json::Value =
        get_json(&client, format!("{}/api/v1/transfers", hub.http)).await;
    let received: Vec<&serde_json::Value> = value["received"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !is_report(r))
        .collect();
    assert_eq!(received[0]["id"], expected.as_str());
    assert_eq!(received[0]["from_site"], "county-a");
    assert_eq!(received[0]["size"], data.len() as u64);
    assert!(
        !value["in_progress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == expected.as_str()),
        "nothing of the file left half-received"
    );
    let stored = std::fs::read(net.data("hub").join("blobs").join(&expected)).unwrap();
    assert_eq!(
        blake3::hash(&stored).to_hex().to_string(),
        expected,
        "the received file hashes to its id"
    );

    // Both restarts resumed rather than starting over.
    edge.wait_for_log("bulk transfer delivered", Duration::from_secs(10));
    let edge_log = edge.log_text();
    let resumed: Vec<u64> = edge_log
        .lines()
        .filter(|line| line.contains("bulk transfer delivered"))
        .filter(|line| line.contains(&format!("size={}", data.len())))
        .filter_map(|line| line.split("resumed_from=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(resumed.len(), 1, "delivered once:\n{edge_log}");
    assert!(
        resumed[0] >= 12 * 1024 * 1024,
        "resumed from {} bytes, not from zero",
        resumed[0]
    );
}
