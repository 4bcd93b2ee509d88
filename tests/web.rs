//! The nodes' web layer end to end: sign-in, session cookies, role checks, login rate limiting,
//! health and metrics — against real hub and edge processes.

mod common;

use std::time::Duration;

use common::*;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_sessions_roles_and_rate_limits() {
    let net = Network::new(&["county-a"]);
    net.add_user("hub", "admin", "admin");
    net.add_user("hub", "expert", "dr-wang");
    net.add_user("hub", "authority", "health-bureau");
    let (token_file, token) = net.metrics_token();
    // The test's client stands in for a reverse proxy on loopback that names its clients.
    let hub = net.start_hub(&[
        "--metrics-token-file",
        &token_file,
        "--trusted-proxy",
        "127.0.0.1",
    ]);
    let http = no_redirects();

    // Anonymous: pages redirect to the login page, APIs answer 401, health is open; metrics
    // need the scrape token.
    let response = http
        .get(format!("{}/sites", hub.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/login?next=/sites");
    assert_eq!(
        http.get(format!("{}/api/v1/sites", hub.http))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(get_text(&http, format!("{}/healthz", hub.http)).await, "ok");
    let anonymous = http
        .get(format!("{}/metrics", hub.http))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = http
        .get(format!("{}/metrics", hub.http))
        .bearer_auth("scrape-token-0123456789abcdeX")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let metrics = scrape(&hub, &token).await;
    assert!(metrics.contains("grassroots_hub_sites_online"), "{metrics}");
    let authority = signed_in(&hub, "health-bureau").await;
    let refused = authority
        .get(format!("{}/metrics", hub.http))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        401,
        "an authority's session is not an admin's"
    );
    let admin = signed_in(&hub, "admin").await;
    assert!(get_text(&admin, format!("{}/metrics", hub.http))
        .await
        .contains("grassroots_hub_sites_online"));

    // A good login sets a session cookie that scripts cannot read and other sites cannot send.
    let response = http
        .post(format!("{}/login", hub.http))
        .form(&[
            ("username", "admin"),
            ("password", PASSWORD),
            ("next", "/sites"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/sites");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("grassroots_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let page = http
        .get(format!("{}/sites", hub.http))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("county-a hospital"));

    // Signing out ends the session on the server, not just in the browser.
    http.post(format!("{}/logout", hub.http))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    let after = http
        .get(format!("{}/api/v1/sites", hub.http))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);

    // Roles: the authority sees sites; an expert does not, nor the transfers page.
    let authority = signed_in(&hub, "health-bureau").await;
    assert_eq!(
        authority
            .get(format!("{}/api/v1/sites", hub.http))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        authority
            .get(format!("{}/api/v1/transfers", hub.http))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let expert = signed_in(&hub, "dr-wang").await;
    let denied = expert
        .get(format!("{}/sites", hub.http))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    assert!(denied
        .text()
        .await
        .unwrap()
        .contains("this needs the role admin or authority"));

    // Someone at 203.0.113.9 (behind the proxy) guesses at dr-wang: three wrong passwords, then
    // every attempt from there must wait, even with the right password.
    let login = |user: &'static str, password: &'static str, client: &'static str| {
        http.post(format!("{}/login", hub.http))
            .header("x-forwarded-for", client)
            .form(&[("username", user), ("password", password)])
            .send()
    };
    for _ in 0..3 {
        let response = login("dr-wang", "guess-guess", "203.0.113.9")
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    let locked = login("dr-wang", PASSWORD, "203.0.113.9").await.unwrap();
    assert_eq!(locked.status(), 429);
    assert!(locked.headers().contains_key("retry-after"));
    // That cannot be aimed at the real dr-wang at another desk behind the same proxy, nor at
    // other users at the guesser's address.
    assert_eq!(
        login("dr-wang", PASSWORD, "198.51.100.7")
            .await
            .unwrap()
            .status(),
        303
    );
    assert_eq!(
        login("admin", PASSWORD, "203.0.113.9")
            .await
            .unwrap()
            .status(),
        303
    );
    // From a peer that is no trusted proxy the header is ignored (`node/web/src/proxy.rs`).
}

#[tokio::test(flavor = "multi_thread")]
async fn edge_status_shows_the_link_and_only_admins_queue_transfers() {
    let net = Network::new(&["county-a"]);
    net.add_user("county-a", "clinician", "dr-li");
    let (token_file, token) = net.metrics_token();
    let hub = net.start_hub(&[]);
    let edge = net.start_edge("county-a", &["--metrics-token-file", &token_file]);
    let clinician = signed_in(&edge, "dr-li").await;
    eventually(
        "the edge reports the link online",
        Duration::from_secs(20),
        || async {
            let link: serde_json::Value =
                get_json(&clinician, format!("{}/api/v1/link", edge.http)).await;
            link["link"]["state"] == "online" && link["link"]["rtt_ms"].is_number()
        },
    )
    .await;
    let page = get_text(&clinician, format!("{}/", edge.http)).await;
    assert!(
        page.contains("online") && page.contains("county-a hospital"),
        "{page}"
    );
    let response = clinician
        .post(format!("{}/api/v1/transfers", edge.http))
        .json(&serde_json::json!({"path": "/etc/hostname"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let metrics = scrape(&edge, &token).await;
    assert!(metrics.contains("grassroots_edge_link_up 1"), "{metrics}");
    drop(hub);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_response_of_both_nodes_forbids_inline_script_framing_and_sniffing() {
    let net = Network::new(&["county-a"]);
    net.add_user("hub", "admin", "root");
    net.add_user("county-a", "clinician", "dr-li");
    let hub = net.start_hub(&[]);
    let edge = net.start_edge("county-a", &[]);
    let at_hub = signed_in(&hub, "root").await;
    let at_edge = signed_in(&edge, "dr-li").await;
    let anonymous = no_redirects();
    for (client, url) in [
        (&at_hub, format!("{}/sites", hub.http)),
        (&at_hub, format!("{}/api/v1/sites", hub.http)),
        (&at_hub, format!("{}/rounds", hub.http)),
        (&anonymous, format!("{}/login", hub.http)),
        (&anonymous, format!("{}/referrals", hub.http)),
        (&at_edge, format!("{}/referrals", edge.http)),
        (&at_edge, format!("{}/api/v1/slides", edge.http)),
        (&anonymous, format!("{}/healthz", edge.http)),
        (&anonymous, format!("{}/slides/nothing.dzi", edge.http)),
    ] {
        let response = client.get(&url).send().await.unwrap();
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        let script_src = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("script-src"))
            .unwrap_or_default();
        assert_eq!(script_src, "script-src 'self'", "{url}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{url}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{url}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{url}");
    }
    // A failed sign-in with a name that is no account (a password typed in the wrong field)
    // leaves the name out of the log; a real account's name is logged.
    for name in ["hunter2-typed-as-a-name", "root"] {
        let failed = anonymous
            .post(format!("{}/login", hub.http))
            .form(&[("username", name), ("password", "wrong"), ("next", "/")])
            .send()
            .await
            .unwrap();
        assert_eq!(failed.status(), 401);
    }
    let log = hub.log_text();
    assert!(!log.contains("hunter2-typed-as-a-name"), "{log}");
    assert!(log.contains("user=root"), "{log}");

    // The edge's referral form has no inline script left: its code is a file of its own.
    let page = get_text(&at_edge, format!("{}/referrals", edge.http)).await;
    assert!(page.contains("/web/refer.js"), "{page}");
    assert!(!page.contains("<script>"), "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_disable_accounts_reset_passwords_and_read_the_security_events() {
    let net = Network::new(&[]);
    net.add_user("hub", "admin", "it-wu");
    net.add_user("hub", "expert", "dr-chen");
    let hub = net.start_hub(&[]);
    let admin = signed_in(&hub, "it-wu").await;
    let expert = signed_in(&hub, "dr-chen").await;
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let referrals = format!("{}/api/v1/referrals", hub.http);
    assert_eq!(expert.get(&referrals).send().await.unwrap().status(), 200);
    // A failed sign-in by a real account and one by a name that is none.
    for user in ["dr-chen", "not-a-user"] {
        let response = anonymous
            .post(format!("{}/login", hub.http))
            .form(&[("username", user), ("password", "wrong-password")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    // Only admins manage accounts.
    let accounts = format!("{}/api/v1/accounts", hub.http);
    assert_eq!(expert.get(&accounts).send().await.unwrap().status(), 403);
    let listed = get_json(&admin, accounts.clone()).await;
    assert!(
        !listed.to_string().contains("argon2"),
        "no hashes: {listed}"
    );

    // Disabled: the live session ends at once and the password no longer signs in.
    let disabled = admin
        .post(format!("{accounts}/dr-chen/disable"))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);
    assert_eq!(expert.get(&referrals).send().await.unwrap().status(), 401);
    let login = |password: &'static str| {
        anonymous
            .post(format!("{}/login", hub.http))
            .form(&[("username", "dr-chen"), ("password", password)])
            .send()
    };
    assert_eq!(login(PASSWORD).await.unwrap().status(), 401);
    assert_eq!(
        admin
            .post(format!("{accounts}/it-wu/disable"))
            .send()
            .await
            .unwrap()
            .status(),
        400,
        "an admin cannot lock themself out"
    );
    // Enabled with a new password.
    admin
        .post(format!("{accounts}/dr-chen/enable"))
        .send()
        .await
        .unwrap();
    let reset = admin
        .post(format!("{accounts}/dr-chen/password"))
        .json(&serde_json::json!({"password": "a-new-long-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    assert_eq!(login(PASSWORD).await.unwrap().status(), 401);
    // Three failures from this desk: the next attempt waits a second (`throttle.rs`).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(login("a-new-long-password").await.unwrap().status(), 303);

    let events = get_json(&admin, format!("{}/api/v1/security-events", hub.http)).await;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "login-failed",
        "account-disabled",
        "account-enabled",
        "password-reset",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert!(
        !events.to_string().contains("not-a-user"),
        "a name that is no account may be a password: never recorded"
    );
    let page = get_text(&admin, format!("{}/security", hub.http)).await;
    assert!(
        page.contains("account-disabled") && page.contains("it-wu"),
        "{page}"
    );
    let stale = expert
        .get(format!("{}/security", hub.http))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stale.headers()["location"],
        "/login?next=/security",
        "the session ended when the account was disabled stays ended"
    );
}
