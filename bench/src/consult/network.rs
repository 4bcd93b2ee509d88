//! The consult under test: a provisioned network with one edge (in the edge's namespace, with the
//! slide imported and a clinician who refers it) and a hub (in the hub's namespace) across the
//! emulated link, both running in this process on runtimes whose threads live in their
//! namespaces; the expert's browser is a third runtime in the hub's namespace, on the hub's LAN.
//! The hub is started once per hub contender (its prefetch budget is a hub-wide setting) with a
//! fresh data directory, on the same address, and the edge redials it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use grassroots_provisioning::{Kit, NetworkAuthority};
use grassroots_web::StaffRole;
use time::OffsetDateTime;

use super::trace::Region;
use crate::netem::{self, EmulatedLink, LinkParams, NamespaceRuntime};

pub const PASSWORD: &str = "bench-consult-password";
/// The referring doctor at the edge.
pub const CLINICIAN: &str = "dr-li";
/// The expert: at the hub, and (for the reverse-proxy contender) an account at the edge.
pub const EXPERT: &str = "prof-zhang";
const ADMIN: &str = "hub-admin";
const SITE: &str = "county-a";
/// The hub's QUIC port in its namespace: fixed, so that the edge redials each hub we start.
const HUB_QUIC_PORT: u16 = 7443;

/// A browser-like HTTP/1.1 client that keeps its session cookie.
pub fn browser() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .pool_max_idle_per_host(super::replay::CONNECTIONS)
        .timeout(Duration::from_secs(60))
}

/// Signs `client` in at `base` (`http(s)://host:port`); returns the session's CSRF token, which
/// requests that change anything send as [`grassroots_web::csrf::CSRF_HEADER`].
pub async fn sign_in(client: &reqwest::Client, base: &str, user: &str) -> Result<String> {
    let response = client
        .post(format!("{base}/login"))
        .form(&[("username", user), ("password", PASSWORD), ("next", "/")])
        .send()
        .await
        .with_context(|| format!("signing in at {base}"))?;
    if response.status() != 303 {
        bail!(
            "signing in as {user} at {base}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    grassroots_web::csrf::token_in_set_cookies(
        response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
    .with_context(|| format!("{base} set no CSRF cookie"))
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<serde_json::Value> {
    let response = client.get(url).send().await?;
    if !response.status().is_success() {
        bail!("{url}: {}", response.status());
    }
    Ok(response.json().await?)
}

pub struct RunningHub {
    hub: grassroots_hub::RunningHub,
    pub http: String,
}

pub struct ConsultNetwork {
    // Field order is drop order: the runtimes (and the nodes on them) stop before the link and
    // its namespaces go, and the data directories last.
    pub edge_rt: NamespaceRuntime,
    pub hub_rt: NamespaceRuntime,
    /// The expert's browser, on the hub's side of the link.
    pub expert_rt: NamespaceRuntime,
    edge: Option<grassroots_edge::RunningEdge>,
    edge_data: PathBuf,
    edge_kit: Kit,
    pub edge_http: SocketAddr,
    /// The clinician's signed-in client at the edge (use it on `edge_rt`).
    clinician: reqwest::Client,
    pub slide_id: String,
    hub_kit: Kit,
    hub_runs: usize,
    _link: EmulatedLink,
    work: tempfile::TempDir,
}

pub(crate) fn add_accounts(data: &Path, accounts: &[(&str, StaffRole)]) -> Result<()> {
    std::fs::create_dir_all(data)?;
    let store = grassroots_store::Store::open(data)?;
    let registry = grassroots_web::Accounts::open(&store)?;
    for (name, role) in accounts {
        registry.add_user(name, *role, PASSWORD, OffsetDateTime::now_utc())?;
    }
    store.flush()?;
    Ok(())
}

/// Imports `slide` into a stopped edge's data directory (a copy, as every import) and adds the
/// edge's accounts; returns the slide's id.
fn prepare_edge(data: &Path, slide: &Path) -> Result<String> {
    std::fs::create_dir_all(data)?;
    let id = {
        let store = grassroots_store::Store::open(data)?;
        let config = grassroots_edge::EdgeConfig {
            data_dir: data.to_path_buf(),
            ..Default::default()
        };
        let outcome = grassroots_edge::open_slides(&config, &store)?.import(slide)?;
        if outcome.record.state != grassroots_edge::slides::SlideState::Ready {
            bail!(
                "{} cannot be served: {}",
                slide.display(),
                outcome.record.error.unwrap_or_default()
            );
        }
        store.flush()?;
        outcome.record.id
    };
    add_accounts(
        data,
        &[
            (CLINICIAN, StaffRole::Clinician),
            (EXPERT, StaffRole::Clinician),
        ],
    )?;
    Ok(id)
}

/// Starts the edge on `data` and signs the clinician in.
async fn start_edge(
    edge_rt: &NamespaceRuntime,
    data: &Path,
    kit: &Kit,
    yields: bool,
) -> Result<(grassroots_edge::RunningEdge, SocketAddr, reqwest::Client)> {
    let config = grassroots_edge::EdgeConfig {
        data_dir: data.to_path_buf(),
        http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        bulk_yields_to_live: yields,
        ..Default::default()
    };
    let kit = kit.clone();
    let edge = edge_rt
        .run(async move { Ok(grassroots_edge::start(config, kit).await?) })
        .await?;
    let edge_http = edge.http_addr;
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let client = browser().cookie_provider(jar.clone()).build()?;
    let csrf = edge_rt
        .run(async move { sign_in(&client, &format!("http://{edge_http}"), CLINICIAN).await })
        .await?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(grassroots_web::csrf::CSRF_HEADER, csrf.parse()?);
    let clinician = browser()
        .cookie_provider(jar)
        .default_headers(headers)
        .build()?;
    Ok((edge, edge_http, clinician))
}

impl ConsultNetwork {
    /// Provisions the network, imports the slide, makes the link and starts the edge.
    pub async fn start(slide: &Path, params: LinkParams, seed: u64) -> Result<Self> {
        let work = tempfile::Builder::new()
            .prefix("grassroots-bench-consult-")
            .tempdir()?;
        let now = OffsetDateTime::now_utc();
        let hub_addr = format!("{}:{HUB_QUIC_PORT}", netem::HUB_IP);
        let (mut authority, hub_kit) =
            NetworkAuthority::init(&work.path().join("prov"), "bench", &hub_addr, 365, now)?;
        let edge_kit = authority.add_site(&SITE.parse()?, "County A hospital", 365, now)?;
        // The link first: without it (not root, no TUN) there is nothing to measure.
        let link = EmulatedLink::start(params, seed).context(
            "cannot make the emulated link (network namespaces and TUN devices need root)",
        )?;
        let edge_data = work.path().join("edge");
        println!("importing {} into the edge...", slide.display());
        let imported = Instant::now();
        let slide_id = {
            let (data, slide) = (edge_data.clone(), slide.to_path_buf());
            tokio::task::spawn_blocking(move || prepare_edge(&data, &slide)).await??
        };
        println!(
            "  imported as {slide_id} in {:.0} s",
            imported.elapsed().as_secs_f64()
        );
        let edge_rt = NamespaceRuntime::start(netem::EDGE_NS, 2)?;
        let hub_rt = NamespaceRuntime::start(netem::HUB_NS, 2)?;
        let expert_rt = NamespaceRuntime::start(netem::HUB_NS, 2)?;
        let (edge, edge_http, clinician) =
            start_edge(&edge_rt, &edge_data, &edge_kit, true).await?;
        Ok(Self {
            edge_rt,
            hub_rt,
            expert_rt,
            edge: Some(edge),
            edge_data,
            edge_kit,
            edge_http,
            clinician,
            slide_id,
            hub_kit,
            hub_runs: 0,
            _link: link,
            work,
        })
    }

    /// Stops the edge and starts it again on the same data, its bulk uploads pacing themselves
    /// to leave the link's queue to live traffic (`yields`) or not.
    pub async fn restart_edge(&mut self, yields: bool) -> Result<()> {
        if let Some(edge) = self.edge.take() {
            self.edge_rt
                .run(async move {
                    edge.shutdown().await;
                    Ok(())
                })
                .await?;
        }
        let (edge, http, clinician) =
            start_edge(&self.edge_rt, &self.edge_data, &self.edge_kit, yields).await?;
        self.edge = Some(edge);
        self.edge_http = http;
        self.clinician = clinician;
        Ok(())
    }

    /// The running edge's outbox (use it on `edge_rt`).
    pub fn edge_outbox(&self) -> Option<grassroots_edge::outbox::Outbox> {
        self.edge.as_ref().map(|edge| edge.outbox.clone())
    }

    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// The edge's own URL for the slide's descriptor and tiles, and a signed-in client (on
    /// `edge_rt`).
    pub fn edge_target(&self) -> super::replay::Target {
        let base = format!("http://{}/slides/{}", self.edge_http, self.slide_id);
        super::replay::Target {
            client: self.clinician.clone(),
            descriptor: format!("{base}.dzi"),
            tiles: format!("{base}_files/"),
        }
    }

    /// Starts a hub with a fresh data directory and waits until the edge is connected to it.
    /// `configure` sets what differs between hub contenders.
    pub async fn start_hub(
        &mut self,
        configure: impl FnOnce(&mut grassroots_hub::HubConfig),
    ) -> Result<RunningHub> {
        self.hub_runs += 1;
        let data: PathBuf = self.work.path().join(format!("hub-{}", self.hub_runs));
        add_accounts(
            &data,
            &[(EXPERT, StaffRole::Expert), (ADMIN, StaffRole::Admin)],
        )?;
        let mut config = grassroots_hub::HubConfig {
            data_dir: data,
            quic_listen: Some(SocketAddr::new(netem::HUB_IP.parse()?, HUB_QUIC_PORT)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            revocation_list: Some(self.work.path().join("prov/crl.pem")),
            ..Default::default()
        };
        configure(&mut config);
        let kit = self.hub_kit.clone();
        let hub = self
            .hub_rt
            .run(async move { Ok(grassroots_hub::start(config, kit).await?) })
            .await?;
        let http = format!("http://{}", hub.http_addr);
        let base = http.clone();
        self.expert_rt
            .run(async move {
                let admin = browser().build()?;
                sign_in(&admin, &base, ADMIN).await?;
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    let sites = get_json(&admin, &format!("{base}/api/v1/sites")).await?;
                    let online = sites.as_array().is_some_and(|all| {
                        all.iter()
                            .any(|s| s["site_id"] == SITE && s["online"] == true)
                    });
                    if online {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                bail!("the edge did not connect to the hub across the emulated link in 60 s")
            })
            .await?;
        Ok(RunningHub { hub, http })
    }

    pub async fn stop_hub(&self, hub: RunningHub) -> Result<()> {
        self.hub_rt
            .run(async move {
                hub.hub.shutdown().await;
                Ok(())
            })
            .await
    }

    /// Refers the slide from the edge, with `regions` as the referring doctor's regions when
    /// given; returns the referral's id.
    pub async fn refer(&self, regions: Option<[Region; 2]>) -> Result<String> {
        let mut form = serde_json::json!({
            "case_number": "S26-00042",
            "patient_name": "Bench Patient (fictional)",
            "patient_id": "BENCH-0001",
            "age_years": 61,
            "sex": "female",
            "specimen": "colon biopsy",
            "question": "Adenoma or adenocarcinoma?",
            "urgency": "priority",
            "slide_ids": [self.slide_id],
        });
        if let Some(regions) = regions {
            form["regions"] = regions
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "slide_id": self.slide_id,
                        "x": r.x, "y": r.y, "width": r.width, "height": r.height,
                    })
                })
                .collect();
        }
        let (client, url) = (
            self.clinician.clone(),
            format!("http://{}/api/v1/referrals", self.edge_http),
        );
        self.edge_rt
            .run(async move {
                let response = client.post(&url).json(&form).send().await?;
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                if !status.is_success() {
                    bail!("the referral was refused ({status}): {body}");
                }
                body["referral"]["referral_id"]
                    .as_str()
                    .map(String::from)
                    .context("the edge's answer has no referral id")
            })
            .await
    }

    /// Signs the expert in at `hub`, waits for `referral` to arrive there and claims it; returns
    /// the expert's client (use it on `expert_rt`) and when the referral was seen at the hub.
    pub async fn expert_claims(
        &self,
        hub: &RunningHub,
        referral: &str,
    ) -> Result<(reqwest::Client, Instant)> {
        let (base, referral) = (hub.http.clone(), referral.to_string());
        self.expert_rt
            .run(async move {
                let expert = browser().build()?;
                let csrf = sign_in(&expert, &base, EXPERT).await?;
                let deadline = Instant::now() + Duration::from_secs(120);
                let arrived = loop {
                    let all = get_json(&expert, &format!("{base}/api/v1/referrals")).await?;
                    let here = all.as_array().is_some_and(|all| {
                        all.iter()
                            .any(|r| r["referral"]["referral_id"] == referral.as_str())
                    });
                    if here {
                        break Instant::now();
                    }
                    if Instant::now() > deadline {
                        bail!("referral {referral} did not reach the hub in 120 s");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                let claim = expert
                    .post(format!("{base}/api/v1/referrals/{referral}/claim"))
                    .header(grassroots_web::csrf::CSRF_HEADER, csrf)
                    .send()
                    .await?;
                if !claim.status().is_success() {
                    bail!("claiming {referral}: {}", claim.status());
                }
                Ok((expert, arrived))
            })
            .await
    }

    /// The hub's consult URLs of the slide for `referral`.
    pub fn hub_target(
        &self,
        hub: &RunningHub,
        referral: &str,
        expert: reqwest::Client,
    ) -> super::replay::Target {
        let base = format!("{}/consult/{referral}/slides/{}", hub.http, self.slide_id);
        super::replay::Target {
            client: expert,
            descriptor: format!("{base}.dzi"),
            tiles: format!("{base}_files/"),
        }
    }

    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(edge) = self.edge.take() {
            self.edge_rt
                .run(async move {
                    edge.shutdown().await;
                    Ok(())
                })
                .await?;
        }
        Ok(())
    }
}
