//! The README's first command: `grassroots demo` provisions a network, starts a hub and three
//! edges as processes, and they all come online; Ctrl-C (SIGINT) stops everything cleanly.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_brings_three_edges_online_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let base_port = 20_000 + (std::process::id() % 20_000) as u16;
    let mut demo = Command::new(bin())
        .args(["demo", "--data"])
        .arg(dir.path())
        .args(["--base-port", &base_port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let hub_url = format!("http://127.0.0.1:{}", u32::from(base_port) + 1000);
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The first start fetches the demo data and trains the screening model (a minute or two).
    eventually(
        "the demo hub accepts the demo admin",
        Duration::from_secs(600),
        || async {
            client
                .post(format!("{hub_url}/login"))
                .form(&[("username", "admin"), ("password", "grassroots-demo")])
                .send()
                .await
                .is_ok_and(|r| r.status() == 303)
        },
    )
    .await;
    eventually("three edges online", Duration::from_secs(30), || async {
        let Ok(response) = client.get(format!("{hub_url}/api/v1/sites")).send().await else {
            return false;
        };
        let rows: serde_json::Value = response.json().await.unwrap_or_default();
        rows.as_array()
            .is_some_and(|rows| rows.len() == 3 && rows.iter().all(|row| row["online"] == true))
    })
    .await;
    // The edges' own pages answer with their demo logins.
    let edge_url = format!("http://127.0.0.1:{}", u32::from(base_port) + 1001);
    let edge = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = edge
        .post(format!("{edge_url}/login"))
        .form(&[("username", "clinician"), ("password", "grassroots-demo")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let slides: serde_json::Value = edge
        .get(format!("{edge_url}/api/v1/slides"))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        slides[0]["state"], "ready",
        "the demo edges carry the real slide: {slides}"
    );
    assert_eq!(
        slides[0]["label"]["number"], "cMu-I",
        "its hand-written label was read: {slides}"
    );

    // The demo slide is screened by the model the demo trained.
    eventually(
        "the demo slide screened",
        Duration::from_secs(120),
        || async {
            let jobs: serde_json::Value = edge
                .get(format!("{edge_url}/api/v1/screening"))
                .header("cookie", cookie.clone())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or_default();
            jobs[0]["state"] == "done" && jobs[0]["result"]["tiles_classified"].as_u64() > Some(100)
        },
    )
    .await;

    // A referral of the demo case waits at the hub for an expert.
    eventually(
        "the demo referral at the hub",
        Duration::from_secs(120),
        || async {
            let Ok(response) = client
                .get(format!("{hub_url}/api/v1/referrals"))
                .send()
                .await
            else {
                return false;
            };
            let all: serde_json::Value = response.json().await.unwrap_or_default();
            all.as_array().is_some_and(|all| {
                all.len() == 1 && all[0]["referral"]["specimen"] == "colon biopsy"
            })
        },
    )
    .await;

    // Federated learning: the demo model is the released version, the first edge holds the
    // lesion its clinician marked, and a round trains at the edges and makes a new version.
    let labels: serde_json::Value = edge
        .get(format!("{edge_url}/api/v1/labels"))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_default();
    eventually("a demo round done", Duration::from_secs(300), || async {
        let Ok(response) = client.get(format!("{hub_url}/api/v1/rounds")).send().await else {
            return false;
        };
        let rounds: serde_json::Value = response.json().await.unwrap_or_default();
        rounds["rounds"]
            .as_array()
            .is_some_and(|all| all.iter().any(|r| r["state"] == "done"))
    })
    .await;
    let versions: serde_json::Value = client
        .get(format!("{hub_url}/api/v1/model-versions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        versions["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["lineage"]["round"] == 1),
        "{versions}"
    );
    let labels = if labels["summary"]["by_class"]["lesion"] == 1 {
        labels
    } else {
        edge.get(format!("{edge_url}/api/v1/labels"))
            .header("cookie", cookie.clone())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    assert_eq!(labels["summary"]["by_class"]["lesion"], 1, "{labels}");

    // SAFETY: signalling the child we spawned.
    unsafe {
        libc::kill(demo.id() as libc::pid_t, libc::SIGINT);
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = demo.wait().unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut demo.stdout.take().unwrap(), &mut out).unwrap();
        (status, out)
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "demo exit: {:?}\n{}",
        status.0,
        status.1
    );
    assert!(
        status.1.contains("grassroots-demo") && status.1.contains("stopping"),
        "{}",
        status.1
    );
    // Every node shut down: the hub's port is free again.
    assert!(std::net::TcpListener::bind(("127.0.0.1", base_port + 1000)).is_ok());
    let hub_log = std::fs::read_to_string(dir.path().join("logs/hub.log")).unwrap();
    assert!(hub_log.contains("shutting down"), "{hub_log}");
}
