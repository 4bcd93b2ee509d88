//! Everyday use of both web UIs: the header shows each account exactly the pages it may open
//! (checked against the routes' own guards for every role), and a real Chromium on a phone and a
//! desktop finds the navigation, no word broken by a table, the consult's hint before the case is
//! taken, a second expert's claim refused with the reason, and no serious accessibility problem
//! (axe-core). Screenshots are kept in the target directory's `tmp/ui-screenshots`.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use grassroots_web::nav::NavItem;
use serde_json::{json, Value};

/// The `href`s of the header's navigation in a page's HTML.
fn nav_links(html: &str) -> Vec<String> {
    let Some(start) = html.find(r#"<nav class="site-nav""#) else {
        return Vec::new();
    };
    let nav = &html[start..start + html[start..].find("</nav>").unwrap()];
    nav.split(r#"<a href=""#)
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_string())
        .collect()
}

/// Signs in as `user`, reads the header of `home`, and checks that every page of `nav` opens
/// for that account exactly when the header shows it; returns the pages shown.
async fn shown_and_open(node: &Node, nav: &[NavItem], user: &str, home: &str) -> BTreeSet<String> {
    let client = signed_in(node, user).await;
    let html = get_text(&client, format!("{}{home}", node.http)).await;
    let shown: BTreeSet<String> = nav_links(&html).into_iter().collect();
    for item in nav {
        let response = client
            .get(format!("{}{}", node.http, item.href))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let to_login = response
            .headers()
            .get("location")
            .is_some_and(|l| l.to_str().unwrap().starts_with("/login"));
        let opens = status == 200 || (status == 303 && !to_login);
        assert_eq!(
            opens,
            shown.contains(item.href),
            "{user}: {} answers {status}, shown in the header: {}",
            item.href,
            shown.contains(item.href)
        );
    }
    shown
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_role_finds_its_pages_and_they_work_on_a_phone_and_a_desktop() {
    let net = Network::new(&["county-a"]);
    net.add_user("hub", "admin", "root");
    net.add_user("hub", "expert", "prof-zhang");
    net.add_user("hub", "expert", "dr-chen");
    net.add_user("hub", "authority", "health-bureau");
    net.add_user("county-a", "clinician", "dr-li");
    net.add_user("county-a", "admin", "it-wu");
    // An authority limited to a region sees its coverage only.
    let mut limited = Command::new(bin())
        .args(["user", "add", "--data"])
        .arg(net.data("hub"))
        .args(["--role", "authority", "--region", "Henan", "kaifeng-bureau"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(limited.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(limited.wait().unwrap().success());
    let located = Command::new(bin())
        .stdout(Stdio::null())
        .args(["provision", "locate-site", "--dir"])
        .arg(net.prov())
        .args([
            "county-a",
            "--region",
            "Henan/Kaifeng",
            "--latitude",
            "34.8",
        ])
        .args(["--longitude", "114.3", "--population", "600000"])
        .status()
        .unwrap();
    assert!(located.success());
    let hub = net.start_hub(&[]);
    let edge = net.start_edge("county-a", &[]);

    // The header against the guards, for every role of both nodes.
    let all_edge = set(&[
        "/worklist",
        "/slides",
        "/cases",
        "/studies",
        "/referrals",
        "/federated",
        "/",
    ]);
    assert_eq!(
        shown_and_open(&edge, grassroots_edge::NAV, "dr-li", "/").await,
        all_edge
    );
    let mut edge_admin = all_edge.clone();
    edge_admin.insert("/security".into());
    assert_eq!(
        shown_and_open(&edge, grassroots_edge::NAV, "it-wu", "/").await,
        edge_admin
    );
    let hub_nav = grassroots_hub::NAV;
    assert_eq!(
        shown_and_open(&hub, hub_nav, "prof-zhang", "/referrals").await,
        set(&["/referrals"])
    );
    assert_eq!(
        shown_and_open(&hub, hub_nav, "health-bureau", "/coverage").await,
        set(&["/coverage", "/sites", "/models", "/rounds"])
    );
    assert_eq!(
        shown_and_open(&hub, hub_nav, "kaifeng-bureau", "/coverage").await,
        set(&["/coverage"])
    );
    assert_eq!(
        shown_and_open(&hub, hub_nav, "root", "/sites").await,
        set(&[
            "/referrals",
            "/coverage",
            "/sites",
            "/models",
            "/rounds",
            "/transfers",
            "/security"
        ])
    );
    // "/" leads each account to its first page.
    let expert = signed_in(&hub, "prof-zhang").await;
    let home = expert.get(format!("{}/", hub.http)).send().await.unwrap();
    assert_eq!(home.headers()["location"], "/referrals");
    // A language the UI does not speak is refused with the reason, and nothing changes.
    let refused = expert
        .post(format!("{}/language", hub.http))
        .form(&[("lang", "tlh"), ("next", "/referrals")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("en or zh"));
    let page = get_text(&expert, format!("{}/referrals", hub.http)).await;
    assert!(page.contains(r#"<html lang="en">"#), "still English");

    // Something in every list: a screened slide with a long file name, its case, a referral.
    let clinician = signed_in(&edge, "dr-li").await;
    let admin = signed_in(&edge, "it-wu").await;
    let installed = admin
        .post(format!("{}/api/v1/models", edge.http))
        .body(untrained_package(&net, 1, "1.0.0", 6))
        .send()
        .await
        .unwrap();
    assert_eq!(installed.status(), 200);
    let slide = upload_slide(
        &clinician,
        &edge,
        "cmu_small_region_scanned_2026-11-30_block_A3_level_2_HE_stain.svs",
        std::fs::read(fixture_svs()).unwrap(),
    )
    .await;
    eventually("the slide screened", Duration::from_secs(120), || async {
        get_json(
            &clinician,
            format!("{}/api/v1/screening/{slide}", edge.http),
        )
        .await["result"]
            .is_object()
    })
    .await;
    let linked = clinician
        .post(format!("{}/api/v1/slides/{slide}/case", edge.http))
        .json(&json!({ "number": "S26-01234" }))
        .send()
        .await
        .unwrap();
    assert_eq!(linked.status(), 200);
    let root = signed_in(&hub, "root").await;
    eventually("county-a online", Duration::from_secs(30), || async {
        is_online(&root, &hub, "county-a").await
    })
    .await;
    let referral = refer(
        &clinician,
        &edge,
        json!({
            "case_number": "S26-01234",
            "patient_name": "Wang Xiuying",
            "patient_id": "ID-330106-1977",
            "age_years": 47,
            "sex": "female",
            "specimen": "gastric biopsy, antrum",
            "question": "High-grade dysplasia or early carcinoma?",
            "urgency": "priority",
            "slide_ids": [slide],
        }),
    )
    .await;
    referral_reaches_hub(&root, &hub).await;

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let report = run_browser(
        "ui.mjs",
        vec![
            ("EDGE_URL", edge.http.clone()),
            ("HUB_URL", hub.http.clone()),
            ("PASSWORD", PASSWORD.to_string()),
            ("SLIDE_ID", slide.clone()),
            ("REFERRAL_ID", referral.clone()),
            ("EDGE_REFERRAL", referral.clone()),
            ("SHOTS", shots.display().to_string()),
        ],
    )
    .await;

    assert_eq!(report["errors"], json!([]), "script errors on the pages");
    let pages = report["pages"].as_array().unwrap();
    assert!(pages.len() >= 36, "{} pages seen", pages.len());
    let mut problems = Vec::new();
    for seen in pages {
        let at = format!(
            "{} {} as {} ({})",
            seen["node"], seen["path"], seen["user"], seen["viewport"]
        );
        let links = seen["links"].as_array().unwrap();
        if links.is_empty() {
            problems.push(format!("{at}: no navigation"));
        }
        // The current page is marked, when it is in the header.
        let path = seen["path"].as_str().unwrap();
        let in_header = links.iter().any(|l| {
            let href = l["href"].as_str().unwrap();
            path == href || (href != "/" && path.starts_with(&format!("{href}/")))
        });
        let marked: Vec<&Value> = links.iter().filter(|l| l["current"] == true).collect();
        if in_header && marked.len() != 1 {
            problems.push(format!("{at}: {} links marked current", marked.len()));
        }
        // On a phone the links fold behind the menu, which opens them.
        if seen["viewport"] == "phone" && seen["menuShown"] != true {
            problems.push(format!("{at}: no menu button on the phone"));
        }
        if links.iter().any(|l| l["visible"] != true) {
            problems.push(format!("{at}: a navigation link is not visible"));
        }
        if seen["broken"].as_array().is_some_and(|b| !b.is_empty()) {
            problems.push(format!("{at}: words broken in a table: {}", seen["broken"]));
        }
        if seen["axe"].as_array().is_some_and(|a| !a.is_empty()) {
            problems.push(format!("{at}: accessibility: {}", seen["axe"]));
        }
    }
    let consult = &report["consult"];
    assert!(
        consult["hint"]
            .as_str()
            .unwrap()
            .contains("Take the case to view its slides"),
        "{consult}"
    );
    assert_eq!(consult["viewerBeforeClaim"], 0, "no empty viewer");
    assert_eq!(consult["viewerAfterClaim"], 1);
    assert!(
        consult["secondClaim"]
            .as_str()
            .unwrap()
            .contains("已由 prof-zhang 接诊"),
        "{consult}"
    );
    for state in ["before", "after"] {
        if consult[state]["axe"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            problems.push(format!(
                "consult {state}: accessibility: {}",
                consult[state]["axe"]
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // In Chinese: the browser's language, then the account's choice, which follows it to
    // another browser.
    let latin = |text: &str| text.chars().any(|c| c.is_ascii_alphabetic());
    for seen in report["chinese"]
        .as_array()
        .unwrap()
        .iter()
        .chain([&report["switched"], &report["switchedElsewhere"]])
    {
        assert_eq!(seen["lang"], "zh-CN", "{seen}");
        assert!(!latin(seen["h1"].as_str().unwrap()), "{seen}");
        assert!(!seen["nav"].as_array().unwrap().is_empty(), "{seen}");
        assert_eq!(
            seen["english"],
            json!([]),
            "sentences left in English: {seen}"
        );
        for time in seen["times"].as_array().unwrap() {
            assert!(
                time.as_str().unwrap().contains('年'),
                "{time} in Chinese: {seen}"
            );
        }
        for list in ["nav", "headings"] {
            let texts = seen[list].as_array().unwrap();
            for text in texts {
                let text = text.as_str().unwrap();
                assert!(
                    !latin(text) || text == "AI",
                    "{list} {text:?} in English: {seen}"
                );
            }
        }
    }
    let times: usize = report["chinese"]
        .as_array()
        .unwrap()
        .iter()
        .map(|seen| seen["times"].as_array().unwrap().len())
        .sum();
    assert!(times > 0, "the Chinese pages showed a moment");
    assert!(
        report["chinese"][0]["nav"]
            .as_array()
            .unwrap()
            .contains(&json!("工作列表")),
        "{}",
        report["chinese"][0]
    );
}

/// The English literals of `src` passed to `tr(...)` or `headings(&[...])`.
fn marked_for_translation(src: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = src.as_bytes();
    let starts_word =
        |at: usize| at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
    let mut at = 0;
    while let Some(offset) = src[at..].find("tr(") {
        let start = at + offset;
        at = start + 3;
        if !starts_word(start) {
            continue;
        }
        if let Some(rest) = src[at..].strip_prefix("r#\"") {
            found.push(rest[..rest.find("\"#").unwrap()].to_string());
        } else if let Some(rest) = src[at..].strip_prefix('"') {
            let mut text = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next().unwrap() {
                        // A line continuation: the newline and the next line's indent vanish.
                        '\n' => {
                            let mut ahead = chars.clone();
                            while ahead.next().is_some_and(char::is_whitespace) {
                                chars.next();
                            }
                        }
                        'n' => text.push('\n'),
                        other => text.push(other),
                    },
                    '"' => break,
                    other => text.push(other),
                }
            }
            found.push(text);
        }
    }
    let mut at = 0;
    while let Some(offset) = src[at..].find("headings(&[") {
        let start = at + offset + "headings(&[".len();
        let end = start + src[start..].find(']').unwrap();
        found.extend(
            src[start..end]
                .split(',')
                .map(str::trim)
                .filter(|s| s.len() > 1 && s.starts_with('"') && s.ends_with('"'))
                .map(|s| s.trim_matches('"').to_string()),
        );
        at = end;
    }
    // The pages' own words, where `i18n::own_words` translates them: the whole text of a
    // heading, term, label, option or button written in the sources.
    for tag in grassroots_web::i18n::OWN_WORD_TAGS {
        if tag == "a" {
            continue; // links mostly carry data (names, ids); the header's are the NAV labels
        }
        let close = format!("</{tag}>");
        let mut at = 0;
        while let Some(offset) = src[at..].find(&close) {
            let end = at + offset;
            at = end + close.len();
            let Some(gt) = src[..end].rfind('>') else {
                continue;
            };
            let text = src[gt + 1..end].trim();
            let opened = src[..gt]
                .rfind('<')
                .map(|lt| &src[lt + 1..gt])
                .unwrap_or("");
            let opens_tag = opened.split_whitespace().next() == Some(tag);
            if opens_tag
                && text.starts_with(|c: char| c.is_ascii_uppercase())
                && !text.contains('{')
            {
                found.push(text.to_string());
            }
        }
    }
    found
}

/// Every text the pages mark for translation has its Simplified Chinese, and so has every
/// page of both headers: a page in Chinese never shows a stray English word by oversight.
#[test]
fn every_text_marked_for_translation_has_its_chinese() {
    let mut missing = BTreeSet::new();
    let mut marked = 0;
    for (path, source) in web_sources() {
        for text in marked_for_translation(&source) {
            marked += 1;
            if !grassroots_web::i18n::has_translation(&text) {
                missing.insert(format!("{}: {text:?}", path.display()));
            }
        }
    }
    for item in grassroots_edge::NAV.iter().chain(grassroots_hub::NAV) {
        if !grassroots_web::i18n::has_translation(item.label) {
            missing.insert(format!("header: {:?}", item.label));
        }
    }
    assert!(marked > 30, "the scan found the marked texts ({marked})");
    assert!(
        missing.is_empty(),
        "no Chinese for:\n{}",
        missing.into_iter().collect::<Vec<_>>().join("\n")
    );
}
