//! The health authorities' dashboard with real processes: three edges with a week of (demo)
//! history; the hub's daily totals equal the sum of the edges' own figures, one row per site
//! and day; an account limited to its region sees nothing else; an edge killed goes silent and
//! the webhook receiver (a local HTTP server) gets the alert; the edge, back after activity while
//! the hub was down, backfills its days exactly once and the alert clears; the dashboard renders
//! in Chromium with the map, the charts and the alert (screenshots kept), on a phone as cards,
//! and its monthly report prints to PDF.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A webhook receiver on loopback: keeps each POSTed JSON body and answers 200.
struct Receiver {
    url: String,
    posts: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let posts = Arc::new(Mutex::new(Vec::new()));
        let sink = posts.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let read = socket.read(&mut chunk).await.unwrap_or(0);
                        if read == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..read]);
                        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buffer.len() < end + 4 + length {
                            continue;
                        }
                        if let Ok(body) = serde_json::from_slice(&buffer[end + 4..end + 4 + length])
                        {
                            sink.lock().unwrap().push(body);
                        }
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                });
            }
        });
        Receiver { url, posts }
    }

    fn got(&self, event: &str, kind: &str, site: &str) -> bool {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .any(|p| p["event"] == event && p["kind"] == kind && p["site"] == site)
    }
}

fn locate(net: &Network, site: &str, region: &str, latitude: &str, longitude: &str) {
    let status = std::process::Command::new(bin())
        .args(["provision", "locate-site", "--dir"])
        .arg(net.prov())
        .args([site, "--region", region, "--latitude", latitude])
        .args(["--longitude", longitude, "--population", "600000"])
        .status()
        .unwrap();
    assert!(status.success());
}

fn add_limited_authority(net: &Network, name: &str, region: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(bin())
        .args(["user", "add", "--data"])
        .arg(net.data("hub"))
        .args(["--role", "authority", "--region", region, name])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success());
}

/// The last `count` days of the hub's daily trend (`site` or the network), oldest first.
async fn daily(client: &reqwest::Client, hub: &Node, site: Option<&str>) -> Vec<serde_json::Value> {
    let site = site.map_or(String::new(), |s| format!("&site={s}"));
    let trend = get_json(
        client,
        format!(
            "{}/api/v1/coverage/trend?period=day&count=8{site}",
            hub.http
        ),
    )
    .await;
    trend["points"].as_array().cloned().unwrap_or_default()
}

/// The edge's own figures (what it sends), by day: slides imported.
async fn edge_days(
    client: &reqwest::Client,
    edge: &Node,
) -> std::collections::BTreeMap<String, u64> {
    let report = get_json(client, format!("{}/api/v1/coverage", edge.http)).await;
    report["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["day"].as_str().unwrap().to_string(),
                d["slides_screened"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_week_of_coverage_reaches_the_dashboard_once_alerts_go_out_and_regions_stay_apart() {
    let sites = ["county-a", "county-b", "county-c"];
    let net = Network::new(&sites);
    locate(&net, "county-a", "Henan/Kaifeng/Lankao", "34.82", "114.82");
    locate(&net, "county-b", "Henan/Xinxiang/Xiuwu", "35.22", "113.45");
    locate(&net, "county-c", "Henan/Xinxiang/Huojia", "35.26", "113.66");
    net.add_user("hub", "authority", "health-bureau");
    add_limited_authority(&net, "kaifeng-bureau", "Henan/Kaifeng");
    net.add_user("hub", "expert", "prof-zhang");
    for site in sites {
        net.add_user(site, "clinician", "dr-li");
    }
    // The operator's region outline (a rough box around the three counties).
    let outline = net.prov().join("henan.geojson");
    std::fs::write(
        &outline,
        r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"name":"Henan"},
        "geometry":{"type":"Polygon","coordinates":[[[113.0,34.5],[115.2,34.5],[115.2,35.6],[113.0,35.6],[113.0,34.5]]]}}]}"#,
    )
    .unwrap();
    let hook = Receiver::start().await;
    let (token_file, token) = net.metrics_token();
    let hub_args = [
        "--metrics-token-file",
        token_file.as_str(),
        "--alert-webhook",
        hook.url.as_str(),
        "--alert-silent-after-s",
        "3",
        "--alert-check-every-s",
        "1",
        "--region-outlines",
        outline.to_str().unwrap(),
    ];
    let mut hub = net.start_hub(&hub_args);
    let history = ["--demo-history-days", "7", "--coverage-every-s", "1"];
    let edge_a = net.start_edge("county-a", &history);
    let edge_b = net.start_edge("county-b", &history);
    let mut edge_c = net.start_edge("county-c", &history);
    let authority = signed_in(&hub, "health-bureau").await;

    // A week at the hub: every site one row for each day.
    eventually(
        "the three sites' weeks at the hub",
        Duration::from_secs(60),
        || async {
            let points = daily(&authority, &hub, None).await;
            points.len() == 8 && points.iter().all(|p| p["days_reported"] == 3)
        },
    )
    .await;
    // The hub's daily totals are the sums of the edges' own figures (where shown).
    let mut edge_figures = Vec::new();
    for edge in [&edge_a, &edge_b, &edge_c] {
        edge_figures.push(edge_days(&signed_in(edge, "dr-li").await, edge).await);
    }
    let mut shown = 0;
    let points = daily(&authority, &hub, None).await;
    for (index, point) in points.iter().enumerate() {
        let day = point["first_day"].as_str().unwrap();
        let sum: u64 = edge_figures.iter().map(|f| f[day]).sum();
        match point["slides_screened"].as_u64() {
            Some(total) => {
                assert_eq!(total, sum, "{day}: hub total vs the edges' own figures");
                shown += 1;
            }
            None => assert_eq!(point["slides_screened"], "<5"),
        }
        // The week before today is invented (and marked); today is real.
        let invented = point["demo_days"].as_u64().unwrap();
        assert_eq!(invented > 0, index + 1 < points.len(), "{day}: {point}");
    }
    assert!(shown >= 3, "most days' totals are large enough to show");
    for (index, site) in sites.iter().enumerate() {
        for point in daily(&authority, &hub, Some(site)).await {
            assert_eq!(
                point["days_reported"], 1,
                "{site}: one row per day: {point}"
            );
            if let Some(value) = point["slides_screened"].as_u64() {
                let day = point["first_day"].as_str().unwrap();
                assert_eq!(value, edge_figures[index][day], "{site} {day}");
            }
        }
    }
    // Yesterday's month holds invented days whatever today is.
    let yesterday = points[points.len() - 2]["first_day"].as_str().unwrap();
    let page = get_text(
        &authority,
        format!("{}/coverage?period=month&at={yesterday}", hub.http),
    )
    .await;
    assert!(page.contains("Demo data"), "invented history is marked");
    assert!(
        page.contains("class=\"outline\""),
        "the operator's outline is drawn"
    );
    assert!(
        page.contains("/coverage/site/county-a"),
        "sites link to their pages"
    );
    let site_page = get_text(&authority, format!("{}/coverage/site/county-b", hub.http)).await;
    assert!(site_page.contains("trend-chart"), "{site_page}");
    let report = get_text(&authority, format!("{}/coverage/report", hub.http)).await;
    assert!(report.contains("Monthly coverage report") && report.contains("Key figures"));

    // An account limited to Kaifeng sees Kaifeng only: table, trends, site pages, alerts.
    let kaifeng = signed_in(&hub, "kaifeng-bureau").await;
    let own = get_json(
        &kaifeng,
        format!("{}/api/v1/coverage?period=month", hub.http),
    )
    .await;
    let listed: Vec<&str> = own["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["site"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["county-a"]);
    assert_eq!(own["total"]["site"], "Henan/Kaifeng");
    for group in own["groups"].as_array().unwrap() {
        let name = group["site"].as_str().unwrap();
        assert!(
            name.starts_with("Henan/Kaifeng"),
            "no other region's total: {name}"
        );
    }
    for refused in [
        "/api/v1/coverage?region=Henan/Xinxiang",
        "/api/v1/coverage?region=Henan",
        "/api/v1/coverage/trend?region=Henan/Xinxiang",
        "/coverage/report?region=Henan",
    ] {
        let response = kaifeng
            .get(format!("{}{refused}", hub.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{refused}");
    }
    for network_wide in ["/sites", "/api/v1/sites", "/models", "/rounds"] {
        let response = kaifeng
            .get(format!("{}{network_wide}", hub.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{network_wide}");
    }
    for hidden in [
        "/api/v1/coverage/trend?site=county-b",
        "/coverage/site/county-c",
    ] {
        let response = kaifeng
            .get(format!("{}{hidden}", hub.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{hidden}");
    }
    // Neither authority opens a referral, a consult or a tile; an expert opens no coverage.
    for path in [
        "/api/v1/referrals",
        "/consult/any-referral",
        "/consult/any-referral/slides/s.dzi",
    ] {
        let response = authority
            .get(format!("{}{path}", hub.http))
            .send()
            .await
            .unwrap();
        assert!(
            response.status() == 403 || response.status().is_redirection(),
            "{path}: {}",
            response.status()
        );
    }
    let expert = signed_in(&hub, "prof-zhang").await;
    for path in [
        "/api/v1/coverage",
        "/api/v1/coverage/trend",
        "/coverage/report",
    ] {
        let response = expert
            .get(format!("{}{path}", hub.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
    }

    // county-c goes silent: the dashboard, /metrics and the webhook say so.
    edge_c.kill9();
    eventually(
        "the silent-site alert at the webhook",
        Duration::from_secs(60),
        || async { hook.got("raised", "silent", "county-c") },
    )
    .await;
    let alerts = get_json(&authority, format!("{}/api/v1/coverage/alerts", hub.http)).await;
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "silent" && a["site"] == "county-c"),
        "{alerts}"
    );
    let limited_alerts = get_json(&kaifeng, format!("{}/api/v1/coverage/alerts", hub.http)).await;
    assert!(
        limited_alerts
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["site"] == "county-a"),
        "{limited_alerts}"
    );
    let metrics = scrape(&hub, &token).await;
    assert!(
        metrics.contains(r#"grassroots_hub_coverage_alerts{kind="silent",site="county-c"} 1"#),
        "{metrics}"
    );

    // In Chromium: the map, the charts and the alert; on a phone, cards; the report as a PDF.
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let seen = run_browser(
        "coverage.mjs",
        vec![
            ("HUB_URL", hub.http.clone()),
            ("USERNAME", "health-bureau".into()),
            ("PASSWORD", PASSWORD.into()),
            ("SCREENSHOT", path(&shots.join("coverage.png"))),
            ("PHONE_SCREENSHOT", path(&shots.join("coverage-phone.png"))),
            ("REPORT_PDF", path(&shots.join("coverage-report.pdf"))),
        ],
    )
    .await;
    assert_eq!(seen["dots"], 3, "{seen}");
    assert_eq!(seen["outlines"], 1, "{seen}");
    assert_eq!(seen["charts"], 3, "{seen}");
    assert_eq!(seen["chartPoints"], 12, "{seen}");
    assert!(
        seen["alerts"].as_str().unwrap().contains("silent"),
        "{seen}"
    );
    assert_eq!(seen["phoneHeader"], "none", "{seen}");
    assert!(seen["phoneFits"].as_bool().unwrap(), "{seen}");
    assert!(seen["pdfBytes"].as_u64().unwrap() > 10_000, "{seen}");
    assert!(seen["errors"].as_array().unwrap().is_empty(), "{seen}");

    // The hub goes down; county-c comes back and imports a slide while the link is down; when
    // the hub returns, county-c's days arrive exactly once and the alert clears.
    drop(hub);
    let edge_c = net.start_edge("county-c", &history);
    let clinician = signed_in(&edge_c, "dr-li").await;
    let mut bytes = std::fs::read(fixture_svs()).unwrap();
    bytes.push(7);
    upload_slide(&clinician, &edge_c, "offline.svs", bytes).await;
    let today_at_edge = {
        let report = get_json(&clinician, format!("{}/api/v1/coverage", edge_c.http)).await;
        report["days"].as_array().unwrap().last().unwrap()["slides_imported"]
            .as_u64()
            .unwrap()
    };
    assert!(today_at_edge >= 1);
    hub = net.start_hub(&hub_args);
    let authority = signed_in(&hub, "health-bureau").await;
    eventually(
        "county-c's import while offline at the hub",
        Duration::from_secs(60),
        || async {
            let coverage = get_json(
                &authority,
                format!("{}/api/v1/coverage?period=day", hub.http),
            )
            .await;
            coverage["rows"]
                .as_array()
                .and_then(|rows| rows.iter().find(|r| r["site"] == "county-c"))
                .is_some_and(|r| r["counts"]["slides_imported"] != 0)
        },
    )
    .await;
    for point in daily(&authority, &hub, Some("county-c")).await {
        assert_eq!(point["days_reported"], 1, "still one row per day: {point}");
    }
    eventually(
        "the silent-site alert cleared at the webhook",
        Duration::from_secs(60),
        || async { hook.got("cleared", "silent", "county-c") },
    )
    .await;
    let raised = hook
        .posts
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p["event"] == "raised" && p["kind"] == "silent" && p["site"] == "county-c")
        .count();
    assert_eq!(
        raised, 1,
        "an alert is posted once, not at every check or restart"
    );
}
