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

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_receives_studies_from_its_modalities_and_keeps_them() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
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
    assert_eq!(counts(&after), vec![1, 1]);

    // Killed and restarted: every acknowledged study is there, and the listener is back.
    edge.kill9();
    let edge = net.start_edge("county-a", &args);
    let clinician = signed_in(&edge, "dr-li").await;
    let restarted = get_json(&clinician, format!("{}/api/v1/studies", edge.http)).await;
    assert_eq!(counts(&restarted), vec![1, 1]);
    eventually("the listener is back", Duration::from_secs(20), || async {
        dcmtk("echoscu", &["-aec", "COUNTYCT", "-aet", "CT1"], port, &[]).0
    })
    .await;
}
