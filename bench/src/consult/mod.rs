//! `grassroots bench consult`: an expert's viewing session over a county hospital's slow link,
//! through the hub over QUIC (prefetch off, then on) and through a plain HTTPS reverse proxy
//! (nginx) over TCP, in one run, on one emulated link (80 ms RTT, 1% loss and 10 Mbit/s each
//! way, [`crate::netem`]), one slide and one session ([`trace`]). Reports the time to the first
//! view and the next-view latency (p50, p95, max) of each, their ratios, what prefetch moved and
//! how long it took; checks that every tile through the hub is byte-identical to the same tile
//! through the proxy and to the edge's own. Figures go to stdout and to a JSON file.

mod background;
mod contenders;
pub(crate) mod network;
mod proxy;
pub(crate) mod replay;
mod report;
mod trace;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::netem::LinkParams;
use background::Load;
use contenders::{mismatches, Session};
use network::ConsultNetwork;
use report::{Figures, HUB_NO_PREFETCH, HUB_PREFETCH, PROXY};
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
    /// Sessions per contender (each with its own referral, so an empty hub cache); the
    /// percentiles are over the views of all of them.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// How long the expert looks at each view before the next, ms.
    #[arg(long, default_value_t = 1500)]
    pub think_ms: u64,
    /// The hub's prefetch budget per referral for the prefetch contender, MiB.
    #[arg(long, default_value_t = 64)]
    pub prefetch_mib: u64,
    /// Seed of the link's losses.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Instead of the three contenders: the hub without prefetch while the edge sends model
    /// updates back to back over the same link (idle; the screening model's update; a 20 MB
    /// update; the 20 MB update without yielding), to see what a round does to a consult.
    #[arg(long)]
    pub background: bool,
    /// Where the figures go (default: target/bench/consult.json, or consult-background.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn default_slide(fixtures: &Path) -> Result<PathBuf> {
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
    if args.runs == 0 || args.prefetch_mib == 0 {
        bail!("--runs and --prefetch-mib must be at least 1");
    }
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
    let outcome = if args.background {
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("target/bench/consult-background.json"));
        measure_background(&mut net, &args, &slide, params, &out).await
    } else {
        measure(&mut net, &args, &slide, params).await
    };
    net.shutdown().await?;
    outcome
}

/// The session every contender replays, and the edge's own replay of it (which also warms the
/// edge's tile cache for every contender alike).
async fn prepare(
    net: &ConsultNetwork,
    args: &ConsultBenchArgs,
    slide: &Path,
) -> Result<(DeepZoom, Session, replay::Replay)> {
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
    let session = Session {
        views: trace::session(&zoom, first, second),
        think: Duration::from_millis(args.think_ms),
        runs: args.runs,
        regions: [first, second],
    };
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
        "link: 10 Mbit/s, 40 ms and 1% loss each way (80 ms RTT), drop-tail queue of 250 ms; \
         session: {} views at {}x{}, {} tiles, {} ms to look at each view; {} run(s) per contender",
        session.views.len(),
        trace::SCREEN.0,
        trace::SCREEN.1,
        session
            .views
            .iter()
            .map(|v| v.new_tiles.len())
            .sum::<usize>(),
        args.think_ms,
        args.runs
    );

    let reference = net
        .edge_rt
        .run(replay::replay(edge, session.views.clone(), Duration::ZERO))
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
    Ok((zoom, session, reference))
}

async fn measure(
    net: &mut ConsultNetwork,
    args: &ConsultBenchArgs,
    slide: &Path,
    params: LinkParams,
) -> Result<()> {
    let (zoom, session, reference) = prepare(net, args, slide).await?;
    let [first, second] = session.regions;
    println!();
    report::print_header();

    let mut results = Vec::new();
    let (no_prefetch, _) = contenders::hub(net, &session, 0).await?;
    results.push(Figures::new(HUB_NO_PREFETCH, &no_prefetch, &reference));
    report::print_row(&results[results.len() - 1]);

    let proxied = contenders::proxy(net, &session).await?;
    if let Some(proxied) = &proxied {
        results.push(Figures::new(PROXY, proxied, &reference));
        report::print_row(&results[results.len() - 1]);
    }

    let (prefetched, prefetches) =
        contenders::hub(net, &session, args.prefetch_mib * 1024 * 1024).await?;
    results.push(Figures::new(HUB_PREFETCH, &prefetched, &reference));
    report::print_row(&results[results.len() - 1]);
    println!();

    for (run, p) in prefetches.iter().enumerate() {
        println!(
            "  prefetch (run {}): {} tiles, {:.1} MiB of a {} MiB budget, done {:.1} s after the referral arrived ({:.1} s by the hub's count)",
            run + 1,
            p.fetched_tiles,
            p.fetched_bytes as f64 / 1048576.0,
            p.budget_bytes / 1048576,
            p.seconds_after_arrival,
            p.hub_seconds.unwrap_or(f64::NAN)
        );
    }
    let from_cache = &results[results.len() - 1];
    println!(
        "  tiles the expert got from the hub's cache (under half a round trip): {} of {}",
        from_cache.tiles_within_half_rtt,
        from_cache.tiles * args.runs
    );
    let ratios = report::ratios(&results);
    for r in &ratios {
        println!(
            "  {}: first view {:.2}x, next view p50 {:.2}x, p95 {:.2}x",
            r.name, r.time_to_first_view, r.next_view_p50, r.next_view_p95
        );
    }
    // Hub against proxy, tile for tile (each was also checked against the edge's own bytes).
    let hub_vs_proxy = proxied.as_ref().map(|proxied| {
        no_prefetch
            .iter()
            .chain(&prefetched)
            .flat_map(|hub| proxied.iter().map(|p| mismatches(&hub.hashes, &p.hashes)))
            .sum::<usize>()
    });
    match hub_vs_proxy {
        Some(n) => println!(
            "  tiles through the hub that differ from the same tile through the proxy: {n}"
        ),
        None => println!("  no proxy run: hub tiles checked against the edge's own only"),
    }
    let prefetch_p95 = results[results.len() - 1].next_view_p95_ms;
    println!(
        "  goal, next view under 1 s at p95 with prefetch: {} ({prefetch_p95:.0} ms)",
        if prefetch_p95 < 1000.0 {
            "met"
        } else {
            "NOT met"
        }
    );

    let report = serde_json::json!({
        "slide": slide,
        "deep_zoom": zoom,
        "link": params,
        "screen": trace::SCREEN,
        "think_ms": args.think_ms,
        "runs": args.runs,
        "regions": [first, second],
        "session": session.views,
        "contenders": results,
        "prefetch": prefetches,
        "ratios": ratios,
        "hub_vs_proxy_mismatches": hub_vs_proxy,
        "proxy_skipped": proxy::missing(),
    });
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench/consult.json"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("figures written to {}", out.display());

    let failed: usize = results.iter().map(|r| r.failure_count).sum();
    let mismatched: usize =
        results.iter().map(|r| r.mismatches).sum::<usize>() + hub_vs_proxy.unwrap_or(0);
    if failed > 0 || mismatched > 0 {
        bail!(
            "{failed} tile request(s) failed and {mismatched} tile(s) differ between contenders (see {})",
            out.display()
        );
    }
    Ok(())
}

/// One condition of `--background`.
#[derive(serde::Serialize)]
struct BackgroundRow {
    condition: String,
    yields: bool,
    figures: Figures,
    moved: Vec<background::Moved>,
}

async fn measure_background(
    net: &mut ConsultNetwork,
    args: &ConsultBenchArgs,
    slide: &Path,
    params: LinkParams,
    out: &Path,
) -> Result<()> {
    let (_, session, reference) = prepare(net, args, slide).await?;
    println!(
        "the hub without prefetch, {} session(s) per condition; the edge sends updates back to \
         back during each session",
        args.runs
    );
    let conditions = [
        ("idle link", None, true),
        ("screening model's update", Some(Load::RealUpdate), true),
        ("20 MB update", Some(Load::Large), true),
        ("20 MB update, not yielding", Some(Load::Large), false),
    ];
    let mut rows: Vec<BackgroundRow> = Vec::new();
    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>10} {:>12}",
        "condition", "p50 ms", "p95 ms", "max ms", "p95/idle", "bulk Mbit/s"
    );
    for (name, load, yields) in conditions {
        if !yields {
            net.restart_edge(false).await?;
        }
        let (replays, _, moved) = contenders::hub_with(net, &session, 0, load).await?;
        if !yields {
            net.restart_edge(true).await?;
        }
        let figures = Figures::new(HUB_NO_PREFETCH, &replays, &reference);
        let idle_p95 = rows.first().map_or(figures.next_view_p95_ms, |idle| {
            idle.figures.next_view_p95_ms
        });
        let (bytes, seconds) = moved.iter().fold((0u64, 0f64), |(b, s), m| {
            (b + m.bytes_delivered, s + m.seconds)
        });
        println!(
            "{name:<30} {:>9.0} {:>9.0} {:>9.0} {:>9.2}x {:>12.2}",
            figures.next_view_p50_ms,
            figures.next_view_p95_ms,
            figures.next_view_max_ms,
            figures.next_view_p95_ms / idle_p95,
            bytes as f64 * 8.0 / seconds.max(1e-9) / 1e6
        );
        rows.push(BackgroundRow {
            condition: name.to_string(),
            yields,
            figures,
            moved,
        });
    }
    if let Some(limit) = rows.first().map(|idle| idle.figures.next_view_p95_ms * 1.2) {
        for row in rows.iter().skip(1).filter(|row| row.yields) {
            println!(
                "  goal, next-view p95 at most 20% above idle with {}: {} ({:.0} ms, limit {limit:.0} ms)",
                row.condition,
                if row.figures.next_view_p95_ms <= limit {
                    "met"
                } else {
                    "NOT met"
                },
                row.figures.next_view_p95_ms
            );
        }
    }
    let report = serde_json::json!({
        "link": params,
        "think_ms": args.think_ms,
        "runs": args.runs,
        "target_queueing_ms": grassroots_transport::pacing::TARGET_QUEUEING.as_millis() as u64,
        "conditions": rows,
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    println!("figures written to {}", out.display());
    let failed: usize = rows.iter().map(|r| r.figures.failure_count).sum();
    let mismatched: usize = rows.iter().map(|r| r.figures.mismatches).sum();
    if failed > 0 || mismatched > 0 {
        bail!("{failed} tile request(s) failed and {mismatched} differ from the edge's own");
    }
    Ok(())
}
