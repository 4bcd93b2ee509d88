//! Regional coverage (real processes): two edges send their daily figures to the hub; the hub's
//! totals equal the edges' own records; small counts show as "<5" in the API, the CSV and the
//! page, with a second count hidden wherever a total would give the first away; figures that
//! changed while the hub was down arrive when it is back, still one row per site and day; an
//! authority sees the coverage but no referral, an expert no coverage.

mod common;

use std::time::Duration;

use common::*;

/// Uploads the fixture slide made distinct by `variant` trailing bytes (a TIFF is read through
/// its offsets, so the slide is the same image under another content id).
async fn upload_variant(client: &reqwest::Client, edge: &Node, variant: usize) -> String {
    let mut bytes = std::fs::read(fixture_svs()).unwrap();
    bytes.extend(std::iter::repeat_n(0u8, variant + 1));
    upload_slide(client, edge, &format!("slide-{variant}.svs"), bytes).await
}

async fn slide_count(client: &reqwest::Client, edge: &Node) -> usize {
    get_json(client, format!("{}/api/v1/slides", edge.http))
        .await
        .as_array()
        .map_or(0, Vec::len)
}

fn total(coverage: &serde_json::Value, column: &str) -> serde_json::Value {
    coverage["total"]["counts"][column].clone()
}

fn site_cell(coverage: &serde_json::Value, site: &str, column: &str) -> serde_json::Value {
    coverage["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["site"] == site))
        .map(|r| r["counts"][column].clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn daily_figures_reach_the_hub_once_per_day_and_small_counts_stay_hidden() {
    let net = Network::new(&["county-a", "county-b"]);
    net.add_user("county-a", "clinician", "dr-li");
    net.add_user("county-b", "clinician", "dr-wu");
    net.add_user("hub", "authority", "health-bureau");
    net.add_user("hub", "expert", "prof-zhang");
    // Where the sites are, as `provision locate-site` records it (the CLI, as an operator would).
    for (site, region, latitude) in [
        ("county-a", "Henan/Kaifeng/Lankao", "34.82"),
        ("county-b", "Henan/Xinxiang/Xiuwu", "35.22"),
    ] {
        let status = std::process::Command::new(bin())
            .args(["provision", "locate-site", "--dir"])
            .arg(net.prov())
            .args([site, "--region", region, "--latitude", latitude])
            .args(["--longitude", "114.0", "--population", "500000"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let every = ["--coverage-every-s", "1"];
    let mut hub = net.start_hub(&[]);
    let edge_a = net.start_edge("county-a", &every);
    let edge_b = net.start_edge("county-b", &every);
    let (a, b) = (
        signed_in(&edge_a, "dr-li").await,
        signed_in(&edge_b, "dr-wu").await,
    );
    for variant in 0..6 {
        let slide = upload_variant(&a, &edge_a, variant).await;
        if variant < 2 {
            let signed = a
                .post(format!("{}/api/v1/slides/{slide}/signoff", edge_a.http))
                .json(&serde_json::json!({"class": "benign"}))
                .send()
                .await
                .unwrap();
            assert_eq!(signed.status(), 201);
        }
    }
    for variant in 0..2 {
        upload_variant(&b, &edge_b, 100 + variant).await;
    }
    assert_eq!(slide_count(&a, &edge_a).await, 6);
    assert_eq!(slide_count(&b, &edge_b).await, 2);

    let authority = signed_in(&hub, "health-bureau").await;
    let api = format!("{}/api/v1/coverage?period=day", hub.http);
    eventually(
        "both sites' imports at the hub",
        Duration::from_secs(60),
        || async { total(&get_json(&authority, api.clone()).await, "slides_imported") == 8 },
    )
    .await;
    let coverage = get_json(&authority, api.clone()).await;
    // The hub's total is the edges' own count; county-b's 2 is hidden, and county-a's 6 with
    // it, or 8 - 6 would give the 2 away. Sign-offs are 2 at one site: the total goes too.
    assert_eq!(site_cell(&coverage, "county-b", "slides_imported"), "<5");
    assert_eq!(site_cell(&coverage, "county-a", "slides_imported"), "<5");
    assert_eq!(site_cell(&coverage, "county-a", "signed_off"), "<5");
    assert_eq!(site_cell(&coverage, "county-b", "signed_off"), 0);
    assert_eq!(total(&coverage, "signed_off"), "<5");
    for row in coverage["rows"].as_array().unwrap() {
        assert_eq!(row["days_reported"], 1, "one row per site and day: {row}");
    }
    let csv = authority
        .get(format!("{api}&format=csv"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let county_b = csv
        .lines()
        .find(|l| l.contains(",county-b,"))
        .expect("county-b in the CSV");
    assert!(county_b.contains(",<5,"), "{county_b}");
    assert!(!county_b.contains(",2,"), "{county_b}");
    let page = get_text(&authority, format!("{}/coverage?period=day", hub.http)).await;
    assert!(page.contains("&lt;5"), "the page hides small counts too");
    assert!(page.contains("Regional coverage"));
    assert!(
        page.contains("<svg class=\"coverage-map\""),
        "the map of located sites"
    );
    // One region: its sites only, its own total, and the same cells hidden as in the whole
    // network's view (so the two cannot be subtracted).
    let region = get_json(&authority, format!("{api}&region=Henan/Kaifeng")).await;
    let sites: Vec<&str> = region["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["site"].as_str().unwrap())
        .collect();
    assert_eq!(sites, ["county-a"]);
    assert_eq!(region["total"]["site"], "Henan/Kaifeng");
    assert_eq!(
        region["rows"][0]["counts"],
        coverage["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["site"] == "county-a")
            .unwrap()["counts"]
    );
    assert_eq!(region["total"]["counts"]["slides_imported"], "<5");
    let nowhere = authority
        .get(format!("{api}&region=Atlantis"))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 400);

    // Roles: the authority sees no referral; an expert sees no coverage.
    let referrals = authority
        .get(format!("{}/api/v1/referrals", hub.http))
        .send()
        .await
        .unwrap();
    assert_eq!(referrals.status(), 403);
    let expert = signed_in(&hub, "prof-zhang").await;
    let refused = expert.get(api.clone()).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let refused = expert
        .get(format!("{}/coverage", hub.http))
        .send()
        .await
        .unwrap();
    assert!(refused.status() == 403 || refused.status().is_redirection());

    // The hub goes down; county-b imports five more; its figures arrive once the hub is back.
    drop(hub);
    for variant in 0..5 {
        upload_variant(&b, &edge_b, 200 + variant).await;
    }
    hub = net.start_hub(&[]);
    let authority = signed_in(&hub, "health-bureau").await;
    let api = format!("{}/api/v1/coverage?period=day", hub.http);
    eventually(
        "county-b's new imports at the hub",
        Duration::from_secs(60),
        || async {
            site_cell(
                &get_json(&authority, api.clone()).await,
                "county-b",
                "slides_imported",
            ) == 7
        },
    )
    .await;
    let coverage = get_json(&authority, api.clone()).await;
    assert_eq!(total(&coverage, "slides_imported"), 13);
    assert_eq!(site_cell(&coverage, "county-a", "slides_imported"), 6);
    for row in coverage["rows"].as_array().unwrap() {
        assert_eq!(
            row["days_reported"], 1,
            "still one row per site and day: {row}"
        );
    }
    let bad = authority
        .get(format!("{api}&format=xml"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let free_range = authority
        .get(format!("{}/api/v1/coverage?period=fortnight", hub.http))
        .send()
        .await
        .unwrap();
    assert_eq!(free_range.status(), 400);
}
