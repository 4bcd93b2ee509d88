//! The peer: the same tiles over HTTPS/TCP through a plain reverse proxy, as a consult system
//! without Grassroots' link would serve them. Two Debian nginx instances: one at the county
//! hospital (in the edge's namespace) terminating TLS in front of the edge's own HTTP, and one at
//! the hub's side (in the hub's namespace) that the expert's browser talks TLS to and that
//! forwards over the emulated link to the first, over TLS again (tiles do not cross the internet
//! in clear) with mutual authentication and upstream keep-alive. The certificates are a
//! throw-away CA and three certificates made with the `openssl` command for this run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netem;

const NGINX: &str = "/usr/sbin/nginx";
/// The edge-side nginx's TLS port on the edge's address.
const EDGE_SIDE_PORT: u16 = 8443;
/// The hub-side nginx's TLS port on the hub's loopback.
const HUB_SIDE_PORT: u16 = 9443;
/// The names in the certificates.
pub const HUB_SIDE_NAME: &str = "tiles.hub.bench";
const EDGE_SIDE_NAME: &str = "tiles.county-a.bench";

/// Why the proxy contender cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    if !Path::new(NGINX).exists() {
        return Some(format!(
            "{NGINX} is missing: apt-get install nginx (or scripts/bench-peers) for the reverse-proxy peer"
        ));
    }
    if Command::new("openssl").arg("version").output().is_err() {
        return Some("the openssl command is missing: apt-get install openssl".into());
    }
    None
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("running openssl")?;
    if !output.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A CA and, signed by it, a certificate for each name (ECDSA P-256, as the network's own).
fn certificates(dir: &Path, names: &[&str]) -> Result<()> {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut args = vec![
        "req",
        "-x509",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=bench CA",
    ];
    args.extend(ec);
    args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &args)?;
    for name in names {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )?;
        let subject = format!("/CN={name}");
        let mut args = vec!["req", "-nodes", "-subj", &subject];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &args)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        )?;
    }
    Ok(())
}

/// The parts of an nginx configuration both instances share: one worker (two cores here),
/// everything written under `dir` (a private temporary folder: the worker runs as root to reach
/// it), no access log.
fn preamble(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 512; }}\n"
    )
}

fn temp_paths(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "access_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
         keepalive_timeout 300s;\nkeepalive_requests 100000;\n"
    )
}

/// At the county hospital: TLS (clients must present a certificate of the CA) in front of the
/// edge's HTTP.
fn edge_side_config(dir: &Path, certs: &Path, edge_http: SocketAddr) -> String {
    let c = certs.display();
    format!(
        "{}http {{\n{}\
         upstream edge {{ server {edge_http}; keepalive 32; }}\n\
         server {{\n  listen {}:{EDGE_SIDE_PORT} ssl;\n\
           ssl_protocols TLSv1.3;\n\
           ssl_certificate {c}/{EDGE_SIDE_NAME}.pem;\n  ssl_certificate_key {c}/{EDGE_SIDE_NAME}.key;\n\
           ssl_client_certificate {c}/ca.pem;\n  ssl_verify_client on;\n\
           location / {{\n    proxy_pass http://edge;\n    proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\";\n    proxy_set_header Host $host;\n  }}\n}}\n}}\n",
        preamble(dir),
        temp_paths(dir),
        netem::EDGE_IP,
    )
}

/// At the hub's side: TLS for the expert's browser, forwarded over TLS across the link with
/// kept-alive upstream connections.
fn hub_side_config(dir: &Path, certs: &Path) -> String {
    let c = certs.display();
    format!(
        "{}http {{\n{}\
         upstream county_a {{ server {}:{EDGE_SIDE_PORT}; keepalive 32; keepalive_timeout 300s; keepalive_requests 100000; }}\n\
         server {{\n  listen 127.0.0.1:{HUB_SIDE_PORT} ssl;\n\
           ssl_protocols TLSv1.3;\n\
           ssl_certificate {c}/{HUB_SIDE_NAME}.pem;\n  ssl_certificate_key {c}/{HUB_SIDE_NAME}.key;\n\
           location / {{\n    proxy_pass https://county_a;\n    proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\";\n    proxy_set_header Host $host;\n\
             proxy_ssl_protocols TLSv1.3;\n    proxy_ssl_session_reuse on;\n\
             proxy_ssl_verify on;\n    proxy_ssl_trusted_certificate {c}/ca.pem;\n\
             proxy_ssl_name {EDGE_SIDE_NAME};\n    proxy_ssl_server_name on;\n\
             proxy_ssl_certificate {c}/{HUB_SIDE_NAME}.pem;\n    proxy_ssl_certificate_key {c}/{HUB_SIDE_NAME}.key;\n  }}\n}}\n}}\n",
        preamble(dir),
        temp_paths(dir),
        netem::EDGE_IP,
    )
}

/// One nginx in the foreground in a namespace; stopped (SIGTERM, then SIGKILL) when dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    fn start(ns: &str, dir: PathBuf, config: String) -> Result<Self> {
        for temp in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join(temp))?;
        }
        let file = dir.join("nginx.conf");
        std::fs::write(&file, config)?;
        // In the namespace: the check binds the listening address too.
        let nginx = |test: bool| {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns, NGINX]);
            if test {
                command.arg("-t");
            }
            command
                .args(["-g", "daemon off;", "-c"])
                .arg(&file)
                .arg("-p")
                .arg(&dir);
            command
        };
        let check = nginx(true).output().context("running nginx -t")?;
        if !check.status.success() {
            bail!(
                "nginx refuses {}: {}",
                file.display(),
                String::from_utf8_lossy(&check.stderr).trim()
            );
        }
        let child = nginx(false)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        Ok(Self { child, dir })
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `ip netns exec` execs nginx: this is its master process, which stops its worker on
        // SIGTERM.
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both proxies, running.
pub struct ReverseProxy {
    edge_side: Nginx,
    hub_side: Nginx,
    /// The CA the expert's browser trusts.
    pub ca_pem: Vec<u8>,
    /// Where the browser connects (the hub's loopback, in the hub's namespace).
    pub addr: SocketAddr,
}

impl ReverseProxy {
    /// Starts both, with their own folders under `work` for run `run`.
    pub fn start(work: &Path, run: usize, edge_http: SocketAddr) -> Result<Self> {
        let work = work.join(format!("proxy-{run}"));
        let certs = work.join("certs");
        std::fs::create_dir_all(&certs)?;
        certificates(&certs, &[EDGE_SIDE_NAME, HUB_SIDE_NAME])?;
        let edge_dir = work.join("nginx-edge");
        let edge_side = Nginx::start(
            netem::EDGE_NS,
            edge_dir.clone(),
            edge_side_config(&edge_dir, &certs, edge_http),
        )?;
        let hub_dir = work.join("nginx-hub");
        let hub_side = Nginx::start(
            netem::HUB_NS,
            hub_dir.clone(),
            hub_side_config(&hub_dir, &certs),
        )?;
        Ok(Self {
            edge_side,
            hub_side,
            ca_pem: std::fs::read(certs.join("ca.pem"))?,
            addr: SocketAddr::from(([127, 0, 0, 1], HUB_SIDE_PORT)),
        })
    }

    /// The browser's base URL.
    pub fn base(&self) -> String {
        format!("https://{HUB_SIDE_NAME}:{HUB_SIDE_PORT}")
    }

    /// A browser that trusts the proxy's CA and finds it on the hub's loopback.
    pub fn browser(&self) -> Result<reqwest::Client> {
        Ok(super::network::browser()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem)?)
            .resolve(HUB_SIDE_NAME, self.addr)
            .build()?)
    }

    /// What nginx logged (warnings and errors), for a failed run.
    pub fn logs(&self) -> String {
        format!(
            "edge side: {}\nhub side: {}",
            self.edge_side.error_log().trim(),
            self.hub_side.error_log().trim()
        )
    }
}
