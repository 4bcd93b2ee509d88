//! The three ways the expert gets the tiles, each replaying the same session `runs` times:
//! through the hub over QUIC with prefetch off, through the hub with prefetch on (the expert
//! opens the case once the hub says its prefetch is done: the case arrived before they looked),
//! and through nginx over HTTPS/TCP. Each hub run has its own referral, so the hub's consult
//! cache starts empty; each proxy run has fresh nginx processes and a fresh browser.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::background::{Background, Load, Moved};
use super::network::{self, ConsultNetwork};
use super::proxy;
use super::replay::{self, Replay, Target};
use super::trace::{Region, View};

/// What every contender replays.
pub struct Session {
    pub views: Vec<View>,
    pub think: Duration,
    pub runs: usize,
    pub regions: [Region; 2],
}

/// What the hub's prefetch did for one referral before the expert opened it.
#[derive(Debug, Clone, Serialize)]
pub struct PrefetchRun {
    /// From the referral's arrival at the hub until its cache API said "done".
    pub seconds_after_arrival: f64,
    /// The hub's own count, from the prefetch's start to its end.
    pub hub_seconds: Option<f64>,
    pub fetched_tiles: u64,
    pub fetched_bytes: u64,
    pub budget_bytes: u64,
}

/// The hub, with `prefetch_bytes` of prefetch per consult (0: off).
pub async fn hub(
    net: &mut ConsultNetwork,
    session: &Session,
    prefetch_bytes: u64,
) -> Result<(Vec<Replay>, Vec<PrefetchRun>)> {
    let (replays, prefetches, _) = hub_with(net, session, prefetch_bytes, None).await?;
    Ok((replays, prefetches))
}

/// The hub as [`hub`], with the edge sending `background` updates to the hub during each
/// session (from the claim until the session's last view); says what they moved.
pub async fn hub_with(
    net: &mut ConsultNetwork,
    session: &Session,
    prefetch_bytes: u64,
    background: Option<Load>,
) -> Result<(Vec<Replay>, Vec<PrefetchRun>, Vec<Moved>)> {
    let hub = net
        .start_hub(|config| config.consult_prefetch_bytes = prefetch_bytes)
        .await?;
    let mut replays = Vec::new();
    let mut prefetches = Vec::new();
    let mut moved = Vec::new();
    for run in 0..session.runs {
        let referral = net.refer(Some(session.regions)).await?;
        let (expert, arrived) = net.expert_claims(&hub, &referral).await?;
        if prefetch_bytes > 0 {
            let url = format!("{}/api/v1/referrals/{referral}/cache", hub.http);
            let client = expert.clone();
            prefetches.push(
                net.expert_rt
                    .run(prefetch_done(client, url, arrived))
                    .await?,
            );
        }
        let target = net.hub_target(&hub, &referral, expert);
        let sender = match (background, net.edge_outbox()) {
            (Some(load), Some(outbox)) => Some(Background::start(
                &net.edge_rt,
                outbox,
                load,
                net.work_dir().join(format!("background-{run}")),
            )),
            (Some(_), None) => bail!("no edge to send background updates from"),
            (None, _) => None,
        };
        replays.push(
            net.expert_rt
                .run(replay::replay(target, session.views.clone(), session.think))
                .await?,
        );
        if let Some(sender) = sender {
            moved.push(sender.stop().await?);
        }
    }
    net.stop_hub(hub).await?;
    Ok((replays, prefetches, moved))
}

/// Polls the consult's cache until its prefetch is done.
async fn prefetch_done(
    expert: reqwest::Client,
    url: String,
    arrived: Instant,
) -> Result<PrefetchRun> {
    let deadline = arrived + Duration::from_secs(600);
    loop {
        let status: serde_json::Value = expert
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let prefetch = &status["prefetch"];
        match prefetch["state"].as_str() {
            Some("done") => {
                return Ok(PrefetchRun {
                    seconds_after_arrival: arrived.elapsed().as_secs_f64(),
                    hub_seconds: prefetch["seconds"].as_f64(),
                    fetched_tiles: prefetch["fetched_tiles"].as_u64().unwrap_or(0),
                    fetched_bytes: prefetch["fetched_bytes"].as_u64().unwrap_or(0),
                    budget_bytes: prefetch["budget_bytes"].as_u64().unwrap_or(0),
                })
            }
            Some("off") => bail!("the hub says its prefetch is off: {status}"),
            Some(_) => {}
            None => bail!("{url} answered without a prefetch state: {status}"),
        }
        if Instant::now() > deadline {
            bail!("prefetch not done 600 s after the referral arrived: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// nginx at both ends of the link; `None` (with the reason printed) when it is not installed.
pub async fn proxy(net: &ConsultNetwork, session: &Session) -> Result<Option<Vec<Replay>>> {
    if let Some(reason) = proxy::missing() {
        println!("  reverse proxy SKIPPED: {reason}");
        return Ok(None);
    }
    let mut replays = Vec::new();
    for run in 0..session.runs {
        let proxy = proxy::ReverseProxy::start(net.work_dir(), run, net.edge_http)?;
        let browser = proxy.browser()?;
        let base = proxy.base();
        let signed_in = {
            let (browser, base) = (browser.clone(), base.clone());
            net.expert_rt
                .run(async move {
                    // nginx may take a moment to listen.
                    let deadline = Instant::now() + Duration::from_secs(10);
                    loop {
                        match network::sign_in(&browser, &base, network::EXPERT).await {
                            Ok(_) => return Ok(()),
                            Err(error) if Instant::now() > deadline => return Err(error),
                            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
                    }
                })
                .await
        };
        signed_in.with_context(|| format!("signing in through nginx:\n{}", proxy.logs()))?;
        let slide = format!("{base}/slides/{}", net.slide_id);
        let target = Target {
            client: browser,
            descriptor: format!("{slide}.dzi"),
            tiles: format!("{slide}_files/"),
        };
        let replayed = net
            .expert_rt
            .run(replay::replay(target, session.views.clone(), session.think))
            .await?;
        if !replayed.failures.is_empty() {
            println!("  nginx logs:\n{}", proxy.logs());
        }
        replays.push(replayed);
    }
    Ok(Some(replays))
}

/// Tiles of `ours` whose bytes differ from (or are missing in) `theirs`.
pub fn mismatches(
    ours: &BTreeMap<String, blake3::Hash>,
    theirs: &BTreeMap<String, blake3::Hash>,
) -> usize {
    ours.iter()
        .filter(|(tile, hash)| theirs.get(*tile) != Some(hash))
        .count()
        + theirs
            .keys()
            .filter(|tile| !ours.contains_key(*tile))
            .count()
}
