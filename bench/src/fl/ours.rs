//! Grassroots under the benchmark: a provisioned network whose hub (in the hub's namespace) and
//! three edges (in the edge's namespace) run in this process across the emulated link, each
//! edge training on its site's fixed tile set. The bench releases the common starting model,
//! then for each round asks the hub for a round, waits until it is done, and until every edge
//! runs the round's version (a round's result reaches the edges as a signed package, which is
//! part of our round's cost), reading the link's byte counters around it.

use grassroots_web::csrf::CSRF_HEADER;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use grassroots_provisioning::NetworkAuthority;
use grassroots_web::StaffRole;
use serde::Serialize;
use time::OffsetDateTime;

use super::data::{Splits, TILE};
use super::{RoundFigures, Settings};
use crate::consult::network::{add_accounts, browser, sign_in};
use crate::netem::{self, EmulatedLink, NamespaceRuntime};

const ADMIN: &str = "hub-admin";
const HUB_QUIC_PORT: u16 = 7444;
pub const SITES: [&str; 3] = ["county-a", "county-b", "county-c"];

/// A signed package of the common starting values.
fn initial_package(authority: &NetworkAuthority, values: &[f32]) -> Result<Vec<u8>> {
    let mut parameters = grassroots_models::federated::initial_parameters(0)?;
    parameters.values = values.to_vec();
    let onnx = grassroots_models::onnx_graph::cnn_to_onnx(
        &parameters.to_cnn()?,
        TILE as usize,
        TILE as usize,
        &[],
    );
    let classes = ["background", "tissue", "lesion", "blur", "pen", "fold"];
    let manifest = grassroots_models::Manifest {
        name: "grassroots-screening".into(),
        version: "bench-fl-0".into(),
        task: grassroots_models::ModelTask::TileClassification,
        input: grassroots_models::InputSpec {
            channels: 3,
            height: TILE,
            width: TILE,
        },
        microns_per_pixel: 2.0,
        normalisation: grassroots_models::Normalisation {
            mean: [0.75, 0.6, 0.75],
            std: [0.2, 0.25, 0.2],
        },
        classes: classes.iter().map(|c| c.to_string()).collect(),
        thresholds: std::collections::BTreeMap::from([("suspicious".to_string(), 0.5)]),
        training_data: "untrained: the federated benchmark's common starting point".into(),
        metrics: std::collections::BTreeMap::new(),
        artefacts: None,
    };
    let signer =
        grassroots_models::PackageSigner::from_seed_hex(authority.model_signing_seed_hex())?;
    Ok(grassroots_models::ModelPackage::seal(
        &manifest, &onnx, &signer,
    )?)
}

async fn json(response: reqwest::Response, what: &str) -> Result<serde_json::Value> {
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("{what}: {status} {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

/// Polls `check` every 20 ms until it says yes; fails after `limit`.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{what}: not within {} s", limit.as_secs())
}

/// Every site runs `digest`.
async fn all_run(admin: &reqwest::Client, base: &str, digest: &str) -> Result<bool> {
    let listed = json(
        admin
            .get(format!("{base}/api/v1/model-versions"))
            .send()
            .await?,
        "model versions",
    )
    .await?;
    let running = listed["sites"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|s| s["running"] == digest).count());
    Ok(running == SITES.len())
}

#[derive(Debug, Serialize)]
pub struct OursRun {
    pub rounds: Vec<RoundFigures>,
}

/// Runs the network for `settings.rounds` rounds over `link`.
pub async fn run(
    work: &Path,
    splits: &Splits,
    initial: &[f32],
    settings: &Settings,
    link: &EmulatedLink,
) -> Result<OursRun> {
    let now = OffsetDateTime::now_utc();
    let hub_addr = format!("{}:{HUB_QUIC_PORT}", netem::HUB_IP);
    let prov = work.join("prov");
    let (mut authority, hub_kit) = NetworkAuthority::init(&prov, "bench-fl", &hub_addr, 365, now)?;
    let hub_rt = NamespaceRuntime::start(netem::HUB_NS, 2)?;
    let edge_rt = NamespaceRuntime::start(netem::EDGE_NS, 2)?;
    let hub_data = work.join("hub");
    add_accounts(&hub_data, &[(ADMIN, StaffRole::Admin)])?;
    let config = grassroots_hub::HubConfig {
        data_dir: hub_data,
        quic_listen: Some(SocketAddr::new(netem::HUB_IP.parse()?, HUB_QUIC_PORT)),
        http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        revocation_list: Some(prov.join("crl.pem")),
        model_signing_key: Some(prov.join("model-signing.key")),
        validation_set: Some(splits.test.clone()),
        rounds: grassroots_hub::rounds::RoundSettings {
            every_seconds: 0,
            deadline_seconds: 3600,
            min_participants: SITES.len(),
            local: grassroots_models::federated::LocalTrainingConfig {
                epochs: settings.local_epochs,
                batch: settings.batch,
                learning_rate: settings.learning_rate,
                proximal_mu: 0.0,
                seed: settings.seed,
            },
            // Every round's version is released, as Flower's next round always starts from
            // the last aggregate.
            release_tolerance: Some(1.0),
            ..Default::default()
        },
        ..Default::default()
    };
    let kit = hub_kit.clone();
    let hub = hub_rt
        .run(async move { Ok(grassroots_hub::start(config, kit).await?) })
        .await?;
    let mut edges = Vec::new();
    for (index, site) in SITES.iter().enumerate() {
        let kit = authority.add_site(&site.parse()?, site, 365, now)?;
        let config = grassroots_edge::EdgeConfig {
            data_dir: work.join(site),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            federated_training_tiles: Some(splits.sites[index].clone()),
            ..Default::default()
        };
        edges.push(
            edge_rt
                .run(async move { Ok(grassroots_edge::start(config, kit).await?) })
                .await?,
        );
    }
    let base = format!("http://{}", hub.http_addr);
    let package = initial_package(&authority, initial)?;
    let rounds = settings.rounds;
    let counters = || link.bytes();
    let mut figures = Vec::new();
    let admin = browser().build()?;
    let csrf = {
        let (admin, base) = (admin.clone(), base.clone());
        hub_rt
            .run(async move { sign_in(&admin, &base, ADMIN).await })
            .await?
    };
    {
        let (admin, base, csrf) = (admin.clone(), base.clone(), csrf.clone());
        hub_rt
            .run(async move {
                let added = json(
                    admin
                        .post(format!("{base}/api/v1/model-versions"))
                        .header(CSRF_HEADER, &csrf)
                        .body(package)
                        .send()
                        .await?,
                    "adding the initial model",
                )
                .await?;
                let digest = added["digest"].as_str().context("no digest")?.to_string();
                json(
                    admin
                        .post(format!("{base}/api/v1/model-versions/{digest}/release"))
                        .header(CSRF_HEADER, &csrf)
                        .json(&serde_json::json!({}))
                        .send()
                        .await?,
                    "releasing the initial model",
                )
                .await?;
                wait_until(
                    "every edge runs the initial model",
                    Duration::from_secs(120),
                    || all_run(&admin, &base, &digest),
                )
                .await
            })
            .await?;
    }
    for round in 1..=rounds {
        let before = counters();
        let (admin, base, csrf) = (admin.clone(), base.clone(), csrf.clone());
        let timed = hub_rt
            .run(async move {
                let started = Instant::now();
                json(
                    admin
                        .post(format!("{base}/api/v1/rounds"))
                        .header(CSRF_HEADER, csrf)
                        .send()
                        .await?,
                    "starting a round",
                )
                .await?;
                let limit = Instant::now() + Duration::from_secs(1800);
                let summary = loop {
                    let rounds = json(
                        admin.get(format!("{base}/api/v1/rounds")).send().await?,
                        "rounds",
                    )
                    .await?;
                    let newest = rounds["rounds"][0].clone();
                    if newest["state"] == "failed" {
                        bail!("round failed: {newest}");
                    }
                    if newest["state"] == "done" {
                        break newest;
                    }
                    if Instant::now() > limit {
                        bail!("the round did not finish in 30 minutes: {newest}");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                let done = started.elapsed();
                let result = summary["result"].as_str().context("no result")?.to_string();
                wait_until(
                    "every edge runs the round's version",
                    Duration::from_secs(600),
                    || all_run(&admin, &base, &result),
                )
                .await?;
                Ok((done, started.elapsed(), summary))
            })
            .await?;
        let (done, cycle, summary) = timed;
        let after = counters();
        let slowest = summary["training_seconds"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_f64()).fold(0.0, f64::max))
            .unwrap_or(0.0);
        let figures_round = RoundFigures {
            round,
            wall_s: done.as_secs_f64(),
            cycle_s: cycle.as_secs_f64(),
            slowest_training_s: slowest,
            overhead_s: cycle.as_secs_f64() - slowest,
            bytes_up: after.0 - before.0,
            bytes_down: after.1 - before.1,
            accuracy: summary["metrics"]["validation_accuracy"].as_f64(),
        };
        println!(
            "  grassroots round {round}: {:.2} s ({:.2} s with the new model at every edge), slowest training {:.2} s, {} B up, {} B down, accuracy {:?}",
            figures_round.wall_s,
            figures_round.cycle_s,
            slowest,
            figures_round.bytes_up,
            figures_round.bytes_down,
            figures_round.accuracy
        );
        figures.push(figures_round);
    }
    for edge in edges {
        edge_rt
            .run(async move {
                edge.shutdown().await;
                Ok(())
            })
            .await?;
    }
    hub_rt
        .run(async move {
            hub.shutdown().await;
            Ok(())
        })
        .await?;
    Ok(OursRun { rounds: figures })
}
