//! Slides reaching a running edge: uploads streamed to disk, and a watched scanner folder whose
//! files are taken only once complete.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

async fn slides(client: &reqwest::Client, edge: &Node) -> Vec<serde_json::Value> {
    let value: serde_json::Value = get_json(client, format!("{}/api/v1/slides", edge.http)).await;
    value.as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_and_the_scanner_folder_import_slides_while_the_edge_runs() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    let scanner = net.dir.path().join("scanner");
    std::fs::create_dir_all(&scanner).unwrap();
    // A crash mid-import left a temporary copy behind: the edge clears it at start.
    let leftover = net
        .data("county-a")
        .join("slides")
        .join(".import-12345-678");
    std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
    std::fs::write(&leftover, b"half a slide").unwrap();
    let edge = net.start_edge(
        "county-a",
        &["--watch", &path(&scanner), "--watch-settle-ms", "1500"],
    );
    let client = signed_in(&edge, "dr-li").await;
    assert!(
        !leftover.exists(),
        "temporary files of interrupted imports are removed at start"
    );
    let svs = std::fs::read(fixture_svs()).unwrap();

    // Upload: created, then recognised as the same slide; a broken upload fails with a reason.
    let upload = |name: &'static str, bytes: Vec<u8>| {
        let client = client.clone();
        let url = format!("{}/api/v1/slides?name={name}", edge.http);
        async move { client.post(url).body(bytes).send().await.unwrap() }
    };
    let first = upload("biopsy-17.svs", svs.clone()).await;
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(first["slide"]["state"], "ready");
    assert_eq!(first["slide"]["original_name"], "biopsy-17.svs");
    let again = upload("copy.svs", svs.clone()).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<serde_json::Value>().await.unwrap()["duplicate"],
        true
    );
    let broken: serde_json::Value = upload("broken.svs", svs[..svs.len() / 4].to_vec())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(broken["slide"]["state"], "failed");
    assert!(
        broken["slide"]["error"].as_str().unwrap().len() > 10,
        "{broken}"
    );

    // The scanner writes a slide in two halves with a pause: nothing is taken half-written.
    let mut partly = svs.clone();
    partly[1000] ^= 0xff; // a different slide file than the one uploaded
    let target = scanner.join("scan-0042.svs");
    let mut file = std::fs::File::create(&target).unwrap();
    file.write_all(&partly[..partly.len() / 2]).unwrap();
    file.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        slides(&client, &edge).await.len(),
        2,
        "a file still being written is not imported"
    );
    file.write_all(&partly[partly.len() / 2..]).unwrap();
    drop(file);
    eventually(
        "the scanned slide imported",
        Duration::from_secs(15),
        || async {
            slides(&client, &edge)
                .await
                .iter()
                .any(|s| s["original_name"] == "scan-0042.svs")
        },
    )
    .await;
    let rows = slides(&client, &edge).await;
    let scanned = rows
        .iter()
        .find(|s| s["original_name"] == "scan-0042.svs")
        .unwrap();
    assert_eq!(scanned["size"], partly.len() as u64, "imported whole");
    assert!(!target.exists());
    let moved = if scanned["state"] == "ready" {
        "imported"
    } else {
        "failed"
    };
    assert!(
        scanner.join(moved).join("scan-0042.svs").is_file(),
        "moved out of the way"
    );
    let page = get_text(&client, format!("{}/slides", edge.http)).await;
    assert!(
        page.contains("biopsy-17.svs") && page.contains("broken.svs") && page.contains("failed"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dicom_series_folder_is_one_slide_and_a_dicom_ct_image_fails() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    let scanner = net.dir.path().join("scanner");
    std::fs::create_dir_all(&scanner).unwrap();
    let edge = net.start_edge(
        "county-a",
        &["--watch", &path(&scanner), "--watch-settle-ms", "1500"],
    );
    let client = signed_in(&edge, "dr-li").await;
    let fixtures = fixture_svs().parent().unwrap().to_path_buf();

    // The scanner writes a series instance by instance, pausing between them.
    let series = scanner.join("series-0007");
    std::fs::create_dir_all(&series).unwrap();
    let mut instances: Vec<_> = std::fs::read_dir(fixtures.join("cmu-dicom-ybr"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    instances.sort();
    for (index, instance) in instances.iter().enumerate() {
        std::fs::copy(instance, series.join(instance.file_name().unwrap())).unwrap();
        if index == 2 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            assert!(
                slides(&client, &edge).await.is_empty(),
                "a series still being written is not imported"
            );
        }
    }
    std::fs::copy(fixtures.join("CT_small.dcm"), scanner.join("ct-head.dcm")).unwrap();
    eventually("both imported", Duration::from_secs(20), || async {
        slides(&client, &edge).await.len() == 2
    })
    .await;
    let rows = slides(&client, &edge).await;
    let slide = rows
        .iter()
        .find(|s| s["original_name"] == "series-0007")
        .unwrap();
    assert_eq!(slide["state"], "ready", "{slide}");
    assert_eq!(slide["info"]["vendor"], "dicom");
    assert_eq!(slide["info"]["width"], 2220);
    assert!(scanner.join("imported/series-0007").is_dir());
    let ct = rows
        .iter()
        .find(|s| s["original_name"] == "ct-head.dcm")
        .unwrap();
    assert_eq!(ct["state"], "failed");
    assert!(
        ct["error"]
            .as_str()
            .unwrap()
            .contains("not a whole-slide image"),
        "{ct}"
    );

    // Tiles of the series: the stored 256-pixel frame grid.
    let id = slide["id"].as_str().unwrap();
    let dzi = get_text(&client, format!("{}/slides/{id}.dzi", edge.http)).await;
    assert!(dzi.contains(r#"TileSize="256""#), "{dzi}");
    let tile = client
        .get(format!("{}/slides/{id}_files/12/1_1.jpeg", edge.http))
        .send()
        .await
        .unwrap();
    assert_eq!(tile.status(), 200);
    let tile = image::load_from_memory(&tile.bytes().await.unwrap()).unwrap();
    assert_eq!((tile.width(), tile.height()), (256, 256));

    // `slide import` while the edge runs: handed to the edge, which holds the store.
    let data = net.data("county-a");
    let queue = data.join("import-queue");
    let import = move |what: PathBuf| {
        std::process::Command::new(bin())
            .args(["slide", "import", "--data", &path(&data)])
            .arg(what)
            .output()
            .unwrap()
    };
    let output = tokio::task::spawn_blocking({
        let series = fixtures.join("cmu-dicom");
        move || import(series)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("(2220 x 2967 px, dicom; unlinked)"),
        "{stdout}"
    );
    assert!(slides(&client, &edge)
        .await
        .iter()
        .any(|s| s["original_name"] == "cmu-dicom" && s["state"] == "ready"));
    assert!(
        std::fs::read_dir(&queue).unwrap().next().is_none(),
        "the queue is left empty"
    );

    // A malformed request is answered with the reason and taken off the queue; the edge goes on.
    std::fs::write(queue.join("0000000000000bad.request"), b"{not json").unwrap();
    let answer = queue.join("0000000000000bad.answer");
    eventually(
        "the bad request answered",
        Duration::from_secs(10),
        || async { answer.exists() },
    )
    .await;
    let answered: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&answer).unwrap()).unwrap();
    assert!(
        answered["error"]
            .as_str()
            .unwrap()
            .starts_with("unreadable request"),
        "{answered}"
    );
    assert!(!queue.join("0000000000000bad.request").exists());
    assert_eq!(slides(&client, &edge).await.len(), 3);
}

/// Rewrites an explicit-VR UL element's value in place, keeping every offset in the file.
fn patch_ul(file: &std::path::Path, tag: (u16, u16), value: u32) {
    let mut bytes = std::fs::read(file).unwrap();
    let mut header = Vec::new();
    header.extend_from_slice(&tag.0.to_le_bytes());
    header.extend_from_slice(&tag.1.to_le_bytes());
    header.extend_from_slice(b"UL\x04\x00");
    let at = bytes
        .windows(header.len())
        .position(|w| w == header.as_slice())
        .unwrap();
    bytes[at + 8..at + 12].copy_from_slice(&value.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crafted_slide_fails_alone_and_once_without_taking_the_edge_down() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    let scanner = net.dir.path().join("scanner");
    std::fs::create_dir_all(&scanner).unwrap();
    let fixtures = fixture_svs().parent().unwrap().to_path_buf();

    // A series whose LABEL declares 2,000,000 x 2,000,000 pixels: reading the label at import
    // allocated 12 TB and aborted the edge, and the watched folder replayed it at every start.
    let crafted = scanner.join("series-crafted");
    std::fs::create_dir_all(&crafted).unwrap();
    for entry in std::fs::read_dir(fixtures.join("cmu-dicom")).unwrap() {
        let from = entry.unwrap().path();
        let to = crafted.join(from.file_name().unwrap());
        std::fs::copy(&from, &to).unwrap();
        if std::fs::read(&to).unwrap()[..4096]
            .windows(5)
            .any(|w| w == b"LABEL")
        {
            patch_ul(&to, (0x0048, 0x0006), 2_000_000);
            patch_ul(&to, (0x0048, 0x0007), 2_000_000);
        }
    }

    // A slide whose opening killed the edge last time (the marker a crash leaves), still in
    // the watched folder: the replay records it as failed rather than opening it again.
    let svs = std::fs::read(fixture_svs()).unwrap();
    let slides_dir = net.data("county-a").join("slides");
    std::fs::create_dir_all(&slides_dir).unwrap();
    let id = blake3::hash(&svs).to_hex().to_string();
    std::fs::write(slides_dir.join(format!(".opening-{id}")), b"killer.svs").unwrap();
    std::fs::write(scanner.join("killer.svs"), &svs).unwrap();

    let edge = net.start_edge(
        "county-a",
        &["--watch", &path(&scanner), "--watch-settle-ms", "1000"],
    );
    let client = signed_in(&edge, "dr-li").await;
    eventually("both imported", Duration::from_secs(30), || async {
        slides(&client, &edge).await.len() == 2
    })
    .await;
    let rows = slides(&client, &edge).await;
    let series = rows
        .iter()
        .find(|s| s["original_name"] == "series-crafted")
        .unwrap();
    assert_eq!(series["state"], "ready", "{series}");
    let series_id = series["id"].as_str().unwrap();
    let label = client
        .get(format!("{}/associated/{series_id}/label", edge.http))
        .send()
        .await
        .unwrap();
    assert!(label.status().is_client_error() || label.status().is_server_error());
    let reason = label.text().await.unwrap();
    assert!(reason.contains("2000000 x 2000000"), "{reason}");

    let killer = rows
        .iter()
        .find(|s| s["original_name"] == "killer.svs")
        .unwrap();
    assert_eq!(killer["state"], "failed", "{killer}");
    assert!(
        killer["error"]
            .as_str()
            .unwrap()
            .contains("stopped while opening"),
        "{killer}"
    );
    assert!(scanner.join("failed/killer.svs").is_file());
    assert!(!slides_dir.join(format!(".opening-{id}")).exists());

    // Imported again by hand, the same bytes are opened afresh.
    let again: serde_json::Value = client
        .post(format!("{}/api/v1/slides?name=killer.svs", edge.http))
        .body(svs)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["slide"]["state"], "ready", "{again}");
    let health = client
        .get(format!("{}/healthz", edge.http))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_bounded_by_size_and_by_the_disk_they_would_fill() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    let svs = std::fs::read(fixture_svs()).unwrap();
    // A 1 MiB cap, below the 1.9 MB fixture.
    let small = net.start_edge("county-a", &["--max-upload-mib", "1"]);
    let client = signed_in(&small, "dr-li").await;
    let refused = client
        .post(format!("{}/api/v1/slides?name=big.svs", small.http))
        .body(svs.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    // The body was cut off unread: the client must not reuse the connection.
    assert_eq!(refused.headers()["connection"], "close");
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("larger than the 1 MiB"));
    assert!(slides(&client, &small).await.is_empty());
    let incoming = net.data("county-a").join("incoming");
    let leftovers = std::fs::read_dir(&incoming).map_or(0, |d| d.count());
    assert_eq!(leftovers, 0, "the cut-off upload left nothing behind");
    drop(small);

    // A disk that would be left with less than the reserve takes no upload.
    let full = net.start_edge("county-a", &["--min-free-disk-mib", "1000000000"]);
    let client = signed_in(&full, "dr-li").await;
    let refused = client
        .post(format!("{}/api/v1/slides?name=scan.svs", full.http))
        .body(svs)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("disk is nearly full"));
}
