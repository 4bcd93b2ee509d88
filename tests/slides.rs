//! Slides at the edge end to end: import the real SVS and broken files with the CLI, then view
//! it through the running edge's Deep Zoom endpoints as a signed-in clinician.

mod common;

use std::process::Command;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn import_then_serve_deep_zoom_tiles_with_clear_errors() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    let svs = fixture_svs();
    let broken = net.dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let bytes = std::fs::read(&svs).unwrap();
    std::fs::write(broken.join("truncated.svs"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(broken.join("noise.svs"), vec![0x5a; 50_000]).unwrap();

    let data = net.data("county-a");
    let output = Command::new(bin())
        .args(["slide", "import", "--data", &path(&data)])
        .arg(&svs)
        .arg(broken.join("truncated.svs"))
        .arg(broken.join("noise.svs"))
        .arg(&svs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "two files failed: {stdout}");
    assert!(
        stdout.contains("(2220 x 2967 px, aperio; unlinked)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("truncated.svs: failed:") && stdout.contains("noise.svs: failed:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("already imported"),
        "a second copy is recognised: {stdout}"
    );

    let edge = net.start_edge("county-a", &[]);
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{}/api/v1/slides", edge.http))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let client = signed_in(&edge, "dr-li").await;
    let slides: serde_json::Value = get_json(&client, format!("{}/api/v1/slides", edge.http)).await;
    let rows = slides.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{slides}");
    let ready: Vec<_> = rows.iter().filter(|r| r["state"] == "ready").collect();
    assert_eq!(ready.len(), 1);
    let id = ready[0]["id"].as_str().unwrap().to_string();
    assert_eq!(id, blake3::hash(&bytes).to_hex().to_string());
    assert!(ready[0]["info"]["microns_per_pixel_x"].as_f64().unwrap() > 0.0);
    for failed in rows.iter().filter(|r| r["state"] == "failed") {
        assert!(
            failed["error"].as_str().unwrap().contains(".svs"),
            "the reason names the file: {failed}"
        );
    }

    let dzi = client
        .get(format!("{}/slides/{id}.dzi", edge.http))
        .send()
        .await
        .unwrap();
    assert_eq!(dzi.status(), 200);
    assert!(dzi.text().await.unwrap().contains(r#"TileSize="254""#));

    // Tiles at the top and bottom of the pyramid decode to the right size.
    // 2220 x 2967 px: level 12 is full size, level 8 (139 x 186) fits one tile, level 0 is 1 px.
    for (level, tile, size) in [
        (12, "0_0", (255, 255)),
        (12, "8_11", (189, 174)),
        (9, "0_0", (255, 255)),
        (8, "0_0", (139, 186)),
        (0, "0_0", (1, 1)),
    ] {
        let response = client
            .get(format!(
                "{}/slides/{id}_files/{level}/{tile}.jpeg",
                edge.http
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "level {level} {tile}");
        assert_eq!(response.headers()["content-type"], "image/jpeg");
        assert!(response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable"));
        let body = response.bytes().await.unwrap();
        let decoded = image::load_from_memory(&body).unwrap();
        assert_eq!(
            (decoded.width(), decoded.height()),
            size,
            "level {level} {tile}"
        );
    }
    // The browser's cached copy is confirmed without rendering.
    let first = client
        .get(format!("{}/slides/{id}_files/11/1_1.png", edge.http))
        .send()
        .await
        .unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let again = client
        .get(format!("{}/slides/{id}_files/11/1_1.png", edge.http))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // IIIF Image API 3.0 over the same pixels.
    let info: serde_json::Value =
        get_json(&client, format!("{}/iiif/3/{id}/info.json", edge.http)).await;
    assert_eq!(
        (info["width"].as_u64(), info["height"].as_u64()),
        (Some(2220), Some(2967))
    );
    assert_eq!(info["type"], "ImageService3");
    let iiif = get_bytes(
        &client,
        format!("{}/iiif/3/{id}/0,0,255,255/max/0/default.png", edge.http),
    )
    .await;
    let dz = get_bytes(
        &client,
        format!("{}/slides/{id}_files/12/0_0.png", edge.http),
    )
    .await;
    assert_eq!(
        image::load_from_memory(&iiif).unwrap().to_rgb8(),
        image::load_from_memory(&dz).unwrap().to_rgb8(),
        "the same full-resolution region through IIIF and Deep Zoom"
    );
    let scaled = client
        .get(format!(
            "{}/iiif/3/{id}/full/!300,300/0/default.jpg",
            edge.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(scaled.status(), 200);
    let scaled = image::load_from_memory(&scaled.bytes().await.unwrap()).unwrap();
    assert_eq!((scaled.width(), scaled.height()), (224, 300));
    for bad in [
        "full/max/90/default.jpg",
        "9999,0,10,10/max/0/default.jpg",
        "full/max/0/default.gif",
        "full/0,/0/default.jpg",
    ] {
        let response = client
            .get(format!("{}/iiif/3/{id}/{bad}", edge.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }

    // Bad addresses get JSON errors: out of range 404, malformed 400, unknown slide 404.
    for (url, status) in [
        (format!("/slides/{id}_files/12/99_0.jpeg"), 404),
        (format!("/slides/{id}_files/40/0_0.jpeg"), 404),
        (format!("/slides/{id}_files/12/0-0.jpeg"), 400),
        (format!("/slides/{id}_files/x/0_0.jpeg"), 400),
        (format!("/slides/{id}_files/12/0_0.gif"), 400),
        ("/slides/0000.dzi".to_string(), 404),
        (format!("/slides/{id}.svs"), 404),
    ] {
        let response = client
            .get(format!("{}{url}", edge.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{url}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{url}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_link_slides_to_cases_and_people_can_correct_the_link() {
    let net = Network::new(&["county-a", "county-b", "county-c"]);
    net.add_user("county-a", "clinician", "dr-li");
    let svs = fixture_svs();
    let ocr = svs.parent().unwrap().join("ocr");
    // The real label is hand-written "CMU-1". For a site whose numbers look like that, the
    // reading is only a suggestion at the default certainty (handwriting)...
    let output = Command::new(bin())
        .args([
            "slide",
            "import",
            "--data",
            &path(&net.data("county-c")),
            "--ocr-models",
            &path(&ocr),
        ])
        .args(["--pathology-pattern", "(?i)cmu-[0-9a-z]"])
        .arg(&svs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("suggesting case cMu-I"), "{stdout}");
    // ...and links on its own where the site accepts less certain readings.
    let output = Command::new(bin())
        .args([
            "slide",
            "import",
            "--data",
            &path(&net.data("county-a")),
            "--ocr-models",
            &path(&ocr),
        ])
        .args([
            "--pathology-pattern",
            "(?i)cmu-[0-9a-z]",
            "--ocr-link-confidence",
            "0.05",
        ])
        .arg(&svs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("case cMu-I"), "{stdout}");
    // With the default pattern (S24-01234 style) the same label finds no number: unlinked.
    let output = Command::new(bin())
        .args([
            "slide",
            "import",
            "--data",
            &path(&net.data("county-b")),
            "--ocr-models",
            &path(&ocr),
        ])
        .arg(&svs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("unlinked; label reads \"cMu-I\""),
        "{stdout}"
    );

    let edge = net.start_edge("county-a", &[]);
    let client = signed_in(&edge, "dr-li").await;
    let slides: serde_json::Value = get_json(&client, format!("{}/api/v1/slides", edge.http)).await;
    let slide = &slides[0];
    assert_eq!(slide["case_number"], "cMu-I");
    assert_eq!(slide["case_source"], "label");
    assert_eq!(slide["label"]["lines"][0], "cMu-I");
    let id = slide["id"].as_str().unwrap();
    let case_page = get_text(&client, format!("{}/cases/cMu-I", edge.http)).await;
    assert!(case_page.contains(&format!("/view/{id}")), "{case_page}");

    // A person corrects the link.
    let relinked: serde_json::Value = client
        .post(format!("{}/api/v1/slides/{id}/case", edge.http))
        .json(&serde_json::json!({ "number": "S24-00042" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(relinked["case_number"], "S24-00042");
    assert_eq!(relinked["case_source"], "manual");
    let cases: serde_json::Value = get_json(&client, format!("{}/api/v1/cases", edge.http)).await;
    let slides_of = |number: &str| {
        cases
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["number"] == number)
            .map(|c| c["slide_ids"].as_array().unwrap().len())
    };
    assert_eq!(slides_of("S24-00042"), Some(1));
    assert_eq!(
        slides_of("cMu-I"),
        Some(0),
        "moved out of the case the label suggested"
    );
    let viewer = get_text(&client, format!("{}/view/{id}", edge.http)).await;
    assert!(
        viewer.contains("case set by hand") && viewer.contains("S24-00042"),
        "{viewer}"
    );
    let empty = client
        .post(format!("{}/api/v1/slides/{id}/case", edge.http))
        .json(&serde_json::json!({ "number": "  " }))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 400);
}
