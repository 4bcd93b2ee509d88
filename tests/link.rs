//! End-to-end tests of the hub-edge link with real processes and real QUIC/mTLS on loopback:
//! sites come online, revocation cuts a live site off, bad certificates are refused with a clear
//! log line, and a hub killed with SIGKILL gets its edges back after a restart.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn edges_come_online_and_a_revoked_site_is_cut_off_and_refused() {
    let net = Network::new(&["county-a", "county-b"]);
    net.add_user("hub", "admin", "admin");
    let hub = net.start_hub(&[]);
    let _a = net.start_edge("county-a", &[]);
    let b = net.start_edge("county-b", &[]);
    let client = signed_in(&hub, "admin").await;
    eventually("both edges online", Duration::from_secs(20), || async {
        is_online(&client, &hub, "county-a").await && is_online(&client, &hub, "county-b").await
    })
    .await;
    let rows = sites(&client, &hub).await;
    assert_eq!(site_field(&rows, "county-a", "name"), "county-a hospital");
    assert_eq!(site_field(&rows, "county-a", "protocol_version"), 1);

    net.revoke("county-b");
    eventually(
        "county-b disconnected and marked revoked",
        Duration::from_secs(5),
        || async {
            let rows = sites(&client, &hub).await;
            site_field(&rows, "county-b", "online") == false
                && site_field(&rows, "county-b", "revoked") == true
        },
    )
    .await;
    hub.wait_for_log(
        "closed the connection of a revoked site site=county-b",
        Duration::from_secs(5),
    );
    // The edge keeps redialling and is refused by TLS each time.
    b.wait_for_log("certificate revoked", Duration::from_secs(10));
    hub.wait_for_log("refused connection", Duration::from_secs(10));
    assert!(
        hub.log_text().contains("Revoked"),
        "the refusal names the reason:\n{}",
        hub.log_text()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        is_online(&client, &hub, "county-a").await,
        "the other site is unaffected"
    );
    assert!(
        !is_online(&client, &hub, "county-b").await,
        "a revoked site never comes back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_expired_and_certificateless_clients_are_refused_with_a_clear_log_line() {
    let net = Network::new(&["county-a", "old-site"]);
    net.add_user("hub", "admin", "admin");
    let hub = net.start_hub(&[]);

    // A kit of another network dialling this hub.
    let other = Network::named("Other network", &["county-a"]);
    let foreign = net.start_edge_with_kit("foreign", &other.kit("county-a"), &[]);
    hub.wait_for_log("refused connection", Duration::from_secs(10));
    assert!(
        hub.log_text().contains("UnknownIssuer"),
        "{}",
        hub.log_text()
    );
    // ...and the edge, for its part, does not trust that hub either.
    foreign.wait_for_log("cannot reach the hub", Duration::from_secs(10));
    drop(foreign);

    // An expired certificate.
    let expired = net.expired_kit("old-site");
    let old = net.start_edge_with_kit("old-site", &expired, &[]);
    old.wait_for_log("certificate has expired", Duration::from_secs(5));
    hub.wait_for_log("certificate expired", Duration::from_secs(10));
    drop(old);

    // A client that presents no certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    let kit = grassroots_provisioning::Kit::load(&net.kit("county-a")).unwrap();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            kit.ca_certificate_der().unwrap(),
        ))
        .unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"grassroots/1".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    let connection = endpoint
        .connect(net.hub_addr.parse().unwrap(), "grassroots-hub")
        .unwrap()
        .await;
    if let Ok(connection) = connection {
        // TLS 1.3: the client may finish before the hub has judged its (absent) certificate.
        let closed = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
        assert!(
            closed.is_ok(),
            "the hub must close a connection without a client certificate"
        );
    }
    hub.wait_for_log("peer sent no certificates", Duration::from_secs(10));

    // After all that the hub still serves a good edge.
    let _a = net.start_edge("county-a", &[]);
    let client = signed_in(&hub, "admin").await;
    eventually("county-a online", Duration::from_secs(20), || async {
        is_online(&client, &hub, "county-a").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_killed_with_sigkill_gets_its_edges_back_after_restart() {
    let net = Network::new(&["county-a", "county-b"]);
    net.add_user("hub", "admin", "admin");
    let mut hub = net.start_hub(&[]);
    let a = net.start_edge("county-a", &[]);
    let _b = net.start_edge("county-b", &[]);
    let client = signed_in(&hub, "admin").await;
    eventually("both online", Duration::from_secs(20), || async {
        is_online(&client, &hub, "county-a").await && is_online(&client, &hub, "county-b").await
    })
    .await;
    let first_seen = site_field(&sites(&client, &hub).await, "county-a", "serial");

    hub.kill9();
    a.wait_for_log("link down", Duration::from_secs(10));
    let hub = net.start_hub(&[]);
    let client = signed_in(&hub, "admin").await;
    eventually(
        "both back online after the restart",
        Duration::from_secs(20),
        || async {
            is_online(&client, &hub, "county-a").await && is_online(&client, &hub, "county-b").await
        },
    )
    .await;
    // The hub remembered the site across the crash.
    assert_eq!(
        site_field(&sites(&client, &hub).await, "county-a", "serial"),
        first_seen
    );
}

#[test]
fn a_tampered_kit_or_the_wrong_kit_stops_a_node_with_the_reason() {
    let net = Network::new(&["county-a"]);
    let kit = std::fs::read_to_string(net.kit("county-a")).unwrap();
    let tampered = net.dir.path().join("tampered.kit");
    std::fs::write(&tampered, kit.replace(&net.hub_addr, "10.1.2.3:7443")).unwrap();
    let output = std::process::Command::new(bin())
        .args([
            "edge",
            "--kit",
            &path(&tampered),
            "--data",
            &path(&net.data("x")),
            "--http",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("has been altered or damaged: checksum mismatch"),
        "{stderr}"
    );

    let output = std::process::Command::new(bin())
        .args([
            "edge",
            "--kit",
            &path(&net.kit("hub")),
            "--data",
            &path(&net.data("x")),
            "--http",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("an edge needs a site kit"), "{stderr}");

    let output = std::process::Command::new(bin())
        .args([
            "hub",
            "--kit",
            &path(&net.prov().join("ca.pem")),
            "--data",
            &path(&net.data("y")),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not a Grassroots startup kit"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_near_expiry_are_warned_about_at_both_ends() {
    let net = Network::new(&["county-a"]);
    let now = time::OffsetDateTime::now_utc();
    let mut authority = net.authority();
    authority
        .renew(&grassroots_provisioning::SiteId::hub(), 20, now)
        .unwrap();
    authority
        .renew(&"county-a".parse().unwrap(), 10, now)
        .unwrap();
    let hub = net.start_hub(&[]);
    hub.wait_for_log(
        "the hub's own certificate expires soon",
        Duration::from_secs(5),
    );
    let edge = net.start_edge("county-a", &[]);
    edge.wait_for_log(
        "this site's certificate expires soon",
        Duration::from_secs(5),
    );
    hub.wait_for_log("site certificate expires soon", Duration::from_secs(10));
    assert!(
        hub.log_text().contains("days_left=9") || hub.log_text().contains("days_left=10"),
        "{}",
        hub.log_text()
    );
}
