//! `grassroots bench consult`: an expert's viewing session over a county hospital's slow link,
//! through the hub over QUIC (prefetch off, then on) and through a plain HTTPS reverse proxy
//! (nginx) over TCP, in one run, on one emulated link (80 ms RTT, 1% loss and 10 Mbit/s each
//! way, [`crate::netem`]), one slide and one session ([`trace`]). Reports the time to the first
//! view and the next-view latency (p50, p95, max) of each, their ratios, what prefetch moved and
//! how long it took; checks that every tile through the hub is byte-identical to the same tile
//! through the proxy and to the edge's own. Figures go to stdout and to a JSON file.

mod network;
mod proxy;
mod replay;
mod trace;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::netem::LinkParams;
use network::ConsultNetwork;
use replay::{percentile, Replay, Target};
use trace::{DeepZoom, Region};

#[derive(Args)]
pub struct ConsultBenchArgs {
    /// The slide (default: big.tif in the fixtures, a slide of a consult's real size, else the
    /// small fixture SVS).
    #[arg(long)]
    pub slide: Option<PathBuf>,
    /// Where scripts/fetch-fixtures put the fixtures.
    #[arg(
        long,
        env = "GRASSROOTS_FIXTURES",
        default_value = "/var/cache/grassroots/fixtures"
    )]
    pub fixtures: PathBuf,
    /// How long the expert looks at each view before the next, ms.
    #[arg(long, default_value_t = 1500)]
    pub think_ms: u64,
    /// The hub's prefetch budget per referral for the prefetch contender, MiB.
    #[arg(long, default_value_t = 64)]
    pub prefetch_mib: u64,
    /// Seed of the link's losses.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where the figures go.
    #[arg(long, default_value = "target/bench/consult.json")]
    pub out: PathBuf,
}

const HUB_NO_PREFETCH: &str = "hub over QUIC, no prefetch";
const HUB_PREFETCH: &str = "hub over QUIC, prefetch";
const PROXY: &str = "nginx HTTPS/TCP reverse proxy";

/// One contender's figures.
#[derive(Debug, Clone, Serialize)]
struct Figures {
    contender: &'static str,
    time_to_first_view_ms: f64,
    descriptor_ms: f64,
    next_view_p50_ms: f64,
    next_view_p95_ms: f64,
    next_view_max_ms: f64,
    /// Views after the first that needed tiles (the ones the percentiles are over).
    next_views: usize,
    tiles: usize,
    bytes: u64,
    tile_p50_ms: f64,
    tile_p95_ms: f64,
    failures: Vec<String>,
    /// Tiles whose bytes differ from the edge's own (or that are missing).
    mismatches: usize,
    views: Vec<replay::ViewTiming>,
}

impl Figures {
    fn new(contender: &'static str, replay: &Replay, reference: &Replay) -> Self {
        let next = replay.next_view_ms();
        let mismatches = reference
            .hashes
            .iter()
            .filter(|(tile, hash)| replay.hashes.get(*tile) != Some(hash))
            .count();
        Self {
            contender,
            time_to_first_view_ms: replay.first_view_ms,
            descriptor_ms: replay.descriptor_ms,
            next_view_p50_ms: percentile(&next, 0.5),
            next_view_p95_ms: percentile(&next, 0.95),
            next_view_max_ms: percentile(&next, 1.0),
            next_views: next.len(),
            tiles: replay.hashes.len(),
            bytes: replay.bytes,
            tile_p50_ms: percentile(&replay.tile_ms, 0.5),
            tile_p95_ms: percentile(&replay.tile_ms, 0.95),
            failures: replay.failures.iter().take(20).cloned().collect(),
            mismatches,
            views: replay.views.clone(),
        }
    }
}

fn default_slide(fixtures: &std::path::Path) -> Result<PathBuf> {
    let big = fixtures.join("big.tif");
    if big.is_file() {
        return Ok(big);
    }
    let svs = fixtures.join("cmu_small_region.svs");
    if svs.is_file() {
        println!(
            "note: {} is missing (README: vips replicate); the small SVS makes a short session",
            big.display()
        );
        return Ok(svs);
    }
    bail!(
        "no slide: give --slide, or fill {} with scripts/fetch-fixtures",
        fixtures.display()
    )
}

/// The referring doctor's two regions: a slide-pixel square of a fortieth of the slide's width
/// (at least 512 px), upper left and lower right of the centre.
fn regions(zoom: &DeepZoom) -> [Region; 2] {
    let side = (zoom.width / 40).max(512).min(zoom.width).min(zoom.height);
    let at = |fx: f64, fy: f64| Region {
        x: ((f64::from(zoom.width) * fx) as u32).min(zoom.width - side),
        y: ((f64::from(zoom.height) * fy) as u32).min(zoom.height - side),
        width: side,
        height: side,
    };
    [at(0.30, 0.35), at(0.68, 0.66)]
}

pub async fn run(args: ConsultBenchArgs) -> Result<()> {
    let slide = match &args.slide {
        Some(slide) => slide.clone(),
        None => default_slide(&args.fixtures)?,
    };
    let params = LinkParams {
        rate_bits_per_sec: 10_000_000,
        one_way_delay: Duration::from_millis(40),
        loss: 0.01,
        max_queue: Duration::from_millis(250),
    };
    let mut net = ConsultNetwork::start(&slide, params, args.seed).await?;
    let outcome = measure(&mut net, &args, &slide, params).await;
    net.shutdown().await?;
    outcome
}

async fn measure(
    net: &mut ConsultNetwork,
    args: &ConsultBenchArgs,
    slide: &std::path::Path,
    params: LinkParams,
) -> Result<()> {
    let edge = net.edge_target();
    let descriptor = {
        let (client, url) = (edge.client.clone(), edge.descriptor.clone());
        net.edge_rt
            .run(async move {
                Ok(client
                    .get(&url)
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await?)
            })
            .await?
    };
    let zoom = DeepZoom::parse(&descriptor)?;
    let [first, second] = regions(&zoom);
    let views = trace::session(&zoom, first, second);
    let think = Duration::from_millis(args.think_ms);
    println!(
        "slide {} ({} x {} px, {} levels, {} px tiles + {} overlap)",
        slide.display(),
        zoom.width,
        zoom.height,
        zoom.levels,
        zoom.tile_size,
        zoom.overlap
    );
    println!(
        "link: 10 Mbit/s, 40 ms and 1% loss each way (80 ms RTT), drop-tail queue of 250 ms; session: {} views at {}x{}, {} tiles, {} ms to look at each view",
        views.len(),
        trace::SCREEN.0,
        trace::SCREEN.1,
        views.iter().map(|v| v.new_tiles.len()).sum::<usize>(),
        args.think_ms
    );

    // The edge's own bytes, which also warms its tile cache for every contender alike.
    let reference = net
        .edge_rt
        .run(replay::replay(edge, views.clone(), Duration::ZERO))
        .await?;
    if !reference.failures.is_empty() {
        bail!(
            "the edge itself failed tiles of the session: {:?}",
            reference.failures
        );
    }
    println!(
        "edge (local, warm-up): {} tiles, {:.1} MiB, {:.0} KiB per tile",
        reference.hashes.len(),
        reference.bytes as f64 / 1048576.0,
        reference.bytes as f64 / 1024.0 / reference.hashes.len().max(1) as f64
    );

    print_header();
    let mut results: Vec<Figures> = Vec::new();
    let mut report = serde_json::Map::new();

    let hub = net.start_hub(|_| {}).await?;
    let referral = net.refer(None).await?;
    let (expert, _) = net.expert_claims(&hub, &referral).await?;
    let target = net.hub_target(&hub, &referral, expert);
    let replayed = net
        .expert_rt
        .run(replay::replay(target, views.clone(), think))
        .await?;
    net.stop_hub(hub).await?;
    results.push(Figures::new(HUB_NO_PREFETCH, &replayed, &reference));
    print_row(&results[results.len() - 1]);
    let hub_hashes = replayed.hashes;

    let mut proxy_hashes = None;
    match proxy::missing() {
        Some(reason) => {
            println!("  {PROXY}: SKIPPED: {reason}");
            report.insert("proxy_skipped".into(), reason.into());
        }
        None => {
            let (figures, hashes) = run_proxy(net, &views, think, &reference).await?;
            print_row(&figures);
            results.push(figures);
            proxy_hashes = Some(hashes);
        }
    }

    // Hub against proxy, tile for tile (both were checked against the edge's own bytes too).
    let hub_vs_proxy = proxy_hashes.as_ref().map(|proxy| {
        hub_hashes
            .iter()
            .filter(|(tile, hash)| proxy.get(*tile) != Some(hash))
            .count()
    });

    print_table(&results);
    let ratio = |a: &str, b: &str, f: fn(&Figures) -> f64| -> Option<f64> {
        let (a, b) = (
            results.iter().find(|r| r.contender == a)?,
            results.iter().find(|r| r.contender == b)?,
        );
        Some(f(a) / f(b))
    };
    let mut ratios = serde_json::Map::new();
    for (name, hub) in [
        ("proxy / hub without prefetch", HUB_NO_PREFETCH),
        ("proxy / hub with prefetch", HUB_PREFETCH),
    ] {
        let first = ratio(PROXY, hub, |f| f.time_to_first_view_ms);
        let p50 = ratio(PROXY, hub, |f| f.next_view_p50_ms);
        let p95 = ratio(PROXY, hub, |f| f.next_view_p95_ms);
        if let (Some(first), Some(p50), Some(p95)) = (first, p50, p95) {
            println!("  {name}: first view {first:.2}x, next view p50 {p50:.2}x, p95 {p95:.2}x");
            ratios.insert(
                name.into(),
                serde_json::json!({ "time_to_first_view": first, "next_view_p50": p50, "next_view_p95": p95 }),
            );
        }
    }
    if let Some(mismatches) = hub_vs_proxy {
        println!("  tiles through the hub that differ from the same tile through the proxy: {mismatches}");
    }

    report.insert("slide".into(), serde_json::json!(slide));
    report.insert("deep_zoom".into(), serde_json::to_value(zoom)?);
    report.insert("link".into(), serde_json::to_value(params)?);
    report.insert("screen".into(), serde_json::json!(trace::SCREEN));
    report.insert("think_ms".into(), args.think_ms.into());
    report.insert("regions".into(), serde_json::to_value([first, second])?);
    report.insert("session".into(), serde_json::to_value(&views)?);
    report.insert("contenders".into(), serde_json::to_value(&results)?);
    report.insert("ratios".into(), ratios.into());
    report.insert(
        "hub_vs_proxy_mismatches".into(),
        serde_json::json!(hub_vs_proxy),
    );
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("figures written to {}", args.out.display());

    let failed: usize = results.iter().map(|r| r.failures.len()).sum();
    let mismatched: usize =
        results.iter().map(|r| r.mismatches).sum::<usize>() + hub_vs_proxy.unwrap_or(0);
    if failed > 0 || mismatched > 0 {
        bail!("{failed} tile request(s) failed and {mismatched} tile(s) differ between contenders (see {})", args.out.display());
    }
    Ok(())
}

async fn run_proxy(
    net: &ConsultNetwork,
    views: &[trace::View],
    think: Duration,
    reference: &Replay,
) -> Result<(Figures, BTreeMap<String, blake3::Hash>)> {
    let proxy = proxy::ReverseProxy::start(net.work_dir(), net.edge_http)?;
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
                        Ok(()) => return Ok(()),
                        Err(error) if Instant::now() > deadline => return Err(error),
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            })
            .await
    };
    signed_in.with_context(|| format!("through nginx:\n{}", proxy.logs()))?;
    let slide = format!("{base}/slides/{}", net.slide_id);
    let target = Target {
        client: browser,
        descriptor: format!("{slide}.dzi"),
        tiles: format!("{slide}_files/"),
    };
    let replayed = net
        .expert_rt
        .run(replay::replay(target, views.to_vec(), think))
        .await?;
    if !replayed.failures.is_empty() {
        println!("  nginx logs:\n{}", proxy.logs());
    }
    drop(proxy);
    Ok((Figures::new(PROXY, &replayed, reference), replayed.hashes))
}

fn print_header() {
    println!(
        "  {:<34} {:>11} {:>10} {:>10} {:>10} {:>6} {:>8} {:>8} {:>10}",
        "contender",
        "first view",
        "next p50",
        "next p95",
        "next max",
        "tiles",
        "MiB",
        "failed",
        "mismatched"
    );
}

fn print_row(r: &Figures) {
    println!(
        "  {:<34} {:>8.0} ms {:>7.0} ms {:>7.0} ms {:>7.0} ms {:>6} {:>8.1} {:>8} {:>10}",
        r.contender,
        r.time_to_first_view_ms,
        r.next_view_p50_ms,
        r.next_view_p95_ms,
        r.next_view_max_ms,
        r.tiles,
        r.bytes as f64 / 1048576.0,
        r.failures.len(),
        r.mismatches
    );
}

fn print_table(results: &[Figures]) {
    println!();
    print_header();
    for r in results {
        print_row(r);
    }
    println!();
}
