//! HTTPS for the web UI of a real edge process (`node/web/src/tls.rs`).
//!
//! A site without a certificate of its own gets one from the network's CA at provisioning; the
//! edge serves it, marks its session cookie Secure, sends no HSTS (browsers may not trust that
//! CA) and redirects plain HTTP. When the operator later drops a certificate of their own over the
//! files, the edge serves it within seconds, without a restart, and HSTS follows. A key that does
//! not match its certificate is refused: the running certificate stays. A node whose certificate
//! cannot be read at all does not start, and says which file is wrong.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn https_client(roots: &[&[u8]]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none());
    for pem in roots {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap());
    }
    builder.build().unwrap()
}

/// The serial number of the certificate the server presented.
fn served_serial(response: &reqwest::Response) -> String {
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("TLS info");
    let der = info.peer_certificate().expect("a server certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial_as_string()
}

fn pem_serial(pem: &str) -> String {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    block.parse_x509().unwrap().raw_serial_as_string()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replaces a file the way an operator's tooling does: a new file renamed over the old.
fn replace(path: &std::path::Path, contents: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, contents).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_networks_certificate_then_an_operators_without_a_restart() {
    let net = Network::new(&["county-a"]);
    let output = Command::new(bin())
        .args(["provision", "web-cert", "--dir"])
        .arg(net.prov())
        .args(["county-a", "--host", "127.0.0.1", "--host", "localhost"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    // Never the network's own names: edges trust any certificate of the CA named the hub.
    let refused = Command::new(bin())
        .args(["provision", "web-cert", "--dir"])
        .arg(net.prov())
        .args([
            "county-a",
            "--host",
            "edge.example",
            "--host",
            "grassroots-hub",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("a name of the network itself"));
    let cert = net.prov().join("web/county-a.crt");
    let key = net.prov().join("web/county-a.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the web key is private");
    }
    let ca = std::fs::read(net.prov().join("ca.pem")).unwrap();
    let network_serial = pem_serial(&std::fs::read_to_string(&cert).unwrap());

    net.add_user("county-a", "clinician", "lin");
    let redirect_port = free_tcp_port();
    let redirect = format!("127.0.0.1:{redirect_port}");
    let edge = net.start_edge(
        "county-a",
        &[
            "--tls-cert",
            &path(&cert),
            "--tls-key",
            &path(&key),
            "--http-redirect",
            &redirect,
        ],
    );
    assert!(edge.http.starts_with("https://"), "{}", edge.http);
    let https_port: u16 = edge.http.rsplit(':').next().unwrap().parse().unwrap();

    // The network's certificate: served, trusted through the network's CA, no HSTS.
    let client = https_client(&[&ca]);
    let health = client
        .get(format!("{}/healthz", edge.http))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(served_serial(&health), network_serial);
    assert!(
        health.headers().get("strict-transport-security").is_none(),
        "no HSTS with the network CA's certificate"
    );
    // A browser that does not trust the network's CA is warned (and may go on: no HSTS).
    assert!(https_client(&[])
        .get(format!("{}/healthz", edge.http))
        .send()
        .await
        .is_err());

    // The session cookie is Secure.
    let login = client
        .post(format!("{}/login", edge.http))
        .form(&[("username", "lin"), ("password", PASSWORD), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookies: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("grassroots_session=") && c.contains("Secure")),
        "{cookies:?}"
    );

    // Plain HTTP: redirected from the redirect address, refused on the HTTPS one.
    let plain = https_client(&[]);
    let redirected = plain
        .get(format!("http://{redirect}/slides?page=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirected.status(), 308);
    assert_eq!(
        redirected.headers()["location"],
        format!("https://127.0.0.1:{https_port}/slides?page=2").as_str()
    );
    assert!(plain
        .get(format!("http://127.0.0.1:{https_port}/healthz"))
        .send()
        .await
        .is_err());

    // The operator's own certificate replaces the files: served without a restart, HSTS on.
    let operator = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let operator_pem = operator.cert.pem();
    replace(&key, &operator.signing_key.serialize_pem());
    replace(&cert, &operator_pem);
    let operator_client = https_client(&[operator_pem.as_bytes()]);
    let url = format!("{}/healthz", edge.http);
    eventually(
        "the operator's certificate is served",
        Duration::from_secs(20),
        || async {
            match operator_client.get(&url).send().await {
                Ok(response) => served_serial(&response) == pem_serial(&operator_pem),
                Err(_) => false,
            }
        },
    )
    .await;
    let health = operator_client.get(&url).send().await.unwrap();
    assert_eq!(
        health.headers()["strict-transport-security"],
        "max-age=31536000"
    );

    // A key that does not belong to the certificate is refused; the operator's stays.
    let stray = rcgen::KeyPair::generate().unwrap();
    replace(&key, &stray.serialize_pem());
    edge.wait_for_log("does not load", Duration::from_secs(20));
    let health = operator_client.get(&url).send().await.unwrap();
    assert_eq!(served_serial(&health), pem_serial(&operator_pem));
    assert!(edge.log_text().contains("do not belong together"));

    // A certificate that cannot be read stops a node at start, naming the file.
    let broken = net.dir.path().join("broken.crt");
    std::fs::write(&broken, "not a certificate").unwrap();
    let output = Command::new(bin())
        .args(["hub", "--kit"])
        .arg(net.kit("hub"))
        .arg("--data")
        .arg(net.data("hub"))
        .args(["--http", "127.0.0.1:0", "--tls-cert"])
        .arg(&broken)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broken.crt") && stderr.contains("no CERTIFICATE"),
        "{stderr}"
    );
}
