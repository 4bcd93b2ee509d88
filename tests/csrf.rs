//! Cross-site requests and API tokens against a real edge (`node/web/src/csrf.rs`,
//! `node/web/src/api_tokens.rs`).
//!
//! A page of another application on the hospital's domain posts with the doctor's cookie, but
//! without the session's CSRF token: the slide is not relinked to another case, no referral is
//! previewed, and a live-session WebSocket from another origin is refused. Our own pages' form and
//! scripts carry the token and go through. A script with an API token needs no cookie and no CSRF
//! token, acts only in its account's role, and stops the moment the token is revoked.

mod common;

use std::process::Command;

use common::*;

fn cli(net: &Network, node: &str, args: &[&str]) -> String {
    let output = Command::new(bin())
        .args(["user", "token"])
        .args(args)
        .arg("--data")
        .arg(net.data(node))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_are_refused_and_api_tokens_need_no_cookie() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    net.add_user("county-a", "admin", "it-wu");
    let scanner_secret = cli(
        &net,
        "county-a",
        &["add", "--user", "dr-li", "--name", "slide scanner"],
    );
    assert!(scanner_secret.starts_with("grt_"), "{scanner_secret}");
    let listed = cli(&net, "county-a", &["list"]);
    assert!(
        listed.contains("slide scanner") && !listed.contains(&scanner_secret[4..]),
        "{listed}"
    );

    let edge = net.start_edge("county-a", &[]);
    let doctor = signed_in(&edge, "dr-li").await;
    let slide_id = upload_svs(&doctor, &edge).await;
    let case_of = |client: reqwest::Client| {
        let url = format!("{}/api/v1/slides", edge.http);
        let slide_id = slide_id.clone();
        async move {
            let slides = get_json(&client, url).await;
            slides
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == slide_id.as_str())
                .map(|s| s["case_number"].clone())
                .unwrap()
        }
    };
    let before = case_of(doctor.clone()).await;

    // A session that lost its CSRF cookie (or predates it) gets it back from its next page.
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = bare
        .post(format!("{}/login", edge.http))
        .form(&[("username", "dr-li"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    let set: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("grassroots_session="))
        .unwrap();
    let csrf = set
        .iter()
        .find(|c| c.starts_with("grassroots_csrf="))
        .unwrap();
    let page = bare
        .get(format!("{}/slides", edge.http))
        .header("cookie", session.as_str())
        .send()
        .await
        .unwrap();
    let restored: Vec<&str> = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap())
        .collect();
    assert_eq!(restored, [csrf.as_str()]);

    // Another site's page posting the viewer's "link to case" form with the doctor's cookie.
    let (cookie_only, token) = signed_in_without_csrf(&edge, "dr-li").await;
    let case_form = format!("{}/view/{slide_id}/case", edge.http);
    let forged = cookie_only
        .post(&case_form)
        .form(&[("number", "S26-99999")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    // Another session's token does not do either.
    let (_, other_token) = signed_in_without_csrf(&edge, "dr-li").await;
    assert_ne!(token, other_token);
    let forged = cookie_only
        .post(&case_form)
        .form(&[("number", "S26-99999"), ("csrf", other_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(
        case_of(doctor.clone()).await,
        before,
        "the slide was not relinked"
    );
    // The page's own form carries the session's token.
    let own = cookie_only
        .post(&case_form)
        .form(&[("number", "S26-00100"), ("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 303, "{:?}", own.text().await);
    assert_eq!(case_of(doctor.clone()).await, "S26-00100");

    // JSON APIs with the cookie need the header.
    let preview = serde_json::json!({
        "case_number": "S26-00100", "patient_name": "", "patient_id": "", "age_years": 50,
        "sex": "female", "specimen": "gastric biopsy", "question": "Dysplasia?",
        "urgency": "routine", "slide_ids": [slide_id], "regions": [],
    });
    let preview_url = format!("{}/api/v1/referrals/preview", edge.http);
    let refused = cookie_only
        .post(&preview_url)
        .json(&preview)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("X-CSRF-Token"));
    let allowed = cookie_only
        .post(&preview_url)
        .header("x-csrf-token", &token)
        .json(&preview)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);

    // A live-session WebSocket opens only from this node's own pages.
    let live = format!("{}/referrals/{}/live", edge.http, "0".repeat(32));
    let handshake = |origin: Option<&str>| {
        let mut request = cookie_only
            .get(&live)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(handshake(Some("http://pacs.hospital.cn")).await, 403);
    assert_eq!(handshake(None).await, 403);
    assert_ne!(
        handshake(Some(edge.http.as_str())).await,
        403,
        "our own origin passes the check (the referral may still be unknown)"
    );

    // A script with the API token the admin made on the command line: no cookie, no CSRF.
    let script = reqwest::Client::new();
    let bearer = |secret: &str| format!("Bearer {secret}");
    let listed = script
        .get(format!("{}/api/v1/slides", edge.http))
        .header("authorization", bearer(&scanner_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let previewed = script
        .post(&preview_url)
        .header("authorization", bearer(&scanner_secret))
        .json(&preview)
        .send()
        .await
        .unwrap();
    assert_eq!(previewed.status(), 200);
    // In its account's role only.
    let tokens_url = format!("{}/api/v1/tokens", edge.http);
    let not_admin = script
        .get(&tokens_url)
        .header("authorization", bearer(&scanner_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(not_admin.status(), 403);
    let unknown = script
        .get(format!("{}/api/v1/slides", edge.http))
        .header("authorization", bearer(&format!("grt_{}", "0".repeat(64))))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);

    // The admin makes and revokes tokens while the node runs.
    let admin = signed_in(&edge, "it-wu").await;
    let made = admin
        .post(&tokens_url)
        .json(&serde_json::json!({"user": "dr-li", "name": "PACS forwarder"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let made: serde_json::Value = made.json().await.unwrap();
    let secret = made["secret"].as_str().unwrap().to_string();
    let id = made["token"]["id"].as_str().unwrap().to_string();
    assert_eq!(made["token"]["role"], "clinician");
    let all = get_json(&admin, tokens_url.clone()).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert!(
        !all.to_string().contains(&secret[4..]),
        "secrets are never listed"
    );
    let with_new = || {
        script
            .get(format!("{}/api/v1/slides", edge.http))
            .header("authorization", bearer(&secret))
            .send()
    };
    assert_eq!(with_new().await.unwrap().status(), 200);
    let revoked = admin
        .delete(format!("{tokens_url}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(with_new().await.unwrap().status(), 401);
    // Revoking needs the admin's CSRF token too.
    let (admin_cookie_only, _) = signed_in_without_csrf(&edge, "it-wu").await;
    let scanner_id = get_json(&admin, tokens_url.clone()).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = admin_cookie_only
        .delete(format!("{tokens_url}/{scanner_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(
        get_json(&admin, tokens_url).await.as_array().unwrap().len(),
        1
    );
}
