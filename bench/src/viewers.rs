//! `grassroots bench viewers`: one edge under many people viewing at once, with the most this
//! machine can answer over HTTP measured in the same run.
//!
//! - **Busy clients** (no think time): 32 clients replay pan-and-zoom traces as fast as answers
//!   come, six tiles at a time as a browser does: the per-tile latency under saturation.
//! - **Viewing sessions** with think time: 1, 32 and 160 people, each looking at a view (the
//!   tiles of a 1280 x 800 viewport, fetched six at a time, as OpenSeadragon does), then pausing
//!   before the next pan or zoom; on one slide and on ten different slides. Reported per view
//!   (all its tiles arrived), with errors and the edge's peak memory.
//! - **The ceiling**: nginx answering every URL of the same busy trace with one cached file of a
//!   tile's size. The edge's throughput is reported against it with each tile asked once (a cold
//!   cache) and with the same views again (warm).
//!
//! Two slides: the 88,800 x 118,680 pyramidal TIFF of the fixtures (stored JPEG tiles, passed
//! through) and the SVS (tiles rendered by OpenSlide, resized and encoded per request). Ten
//! different slides are ten copies of the SVS made distinct by trailing bytes; ten copies of the
//! pyramid would take 25 GB, so the pyramid is viewed as one slide. Authentication is included:
//! every edge request carries a session cookie, as a browser's does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::tiles::{
    fetch_tile, free_port, peak_rss_mib, percentile, script, trace, wait_for, BenchEdge, Pyramid,
    Server,
};

#[derive(Args)]
pub struct ViewersBenchArgs {
    /// The pyramid with stored tiles (default: big.tif in the fixtures, which `grassroots bench
    /// screen` makes).
    #[arg(long)]
    pub pyramid: Option<PathBuf>,
    /// The slide whose tiles are rendered (default: the fixture SVS).
    #[arg(long)]
    pub svs: Option<PathBuf>,
    /// Views per session (zoom steps and pans).
    #[arg(long, default_value_t = 8)]
    pub views: usize,
    /// Mean pause between a person's views, milliseconds (each pause is drawn from half to one
    /// and a half times it).
    #[arg(long, default_value_t = 2000)]
    pub think_ms: u64,
    /// Clients with no think time.
    #[arg(long, default_value_t = 32)]
    pub busy_clients: usize,
    /// Cache of the fixtures.
    #[arg(long, default_value = "/var/cache/grassroots")]
    pub cache: PathBuf,
    /// Where the figures go.
    #[arg(long, default_value = "target/bench/viewers.json")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
struct Figures {
    scenario: String,
    sessions: usize,
    tiles: usize,
    failed: usize,
    seconds: f64,
    tiles_per_sec: f64,
    tile_p50_ms: f64,
    tile_p99_ms: f64,
    view_p50_ms: f64,
    view_p99_ms: f64,
    /// The edge's peak resident memory since it started (so far in the run).
    peak_rss_mib: f64,
}

impl Figures {
    fn print(&self) {
        println!(
            "  {:<44} {:>4} sessions {:>7.0} tiles/s  tile p50 {:>6.1} p99 {:>7.1} ms  view p50 {:>7.1} p99 {:>7.1} ms  {} failed  RSS {:>5.0} MiB",
            self.scenario,
            self.sessions,
            self.tiles_per_sec,
            self.tile_p50_ms,
            self.tile_p99_ms,
            self.view_p50_ms,
            self.view_p99_ms,
            self.failed,
            self.peak_rss_mib
        );
    }
}

/// One session: the views it looks at, each a list of tile URLs.
type Session = Vec<Vec<String>>;

/// Replays sessions at once: each view's tiles six at a time, then a pause (`think`, if any)
/// before the next view.
async fn replay(
    client: &reqwest::Client,
    sessions: Vec<Session>,
    think: Option<Duration>,
    seed: u64,
) -> (Vec<f64>, Vec<f64>, usize, Duration) {
    let started = Instant::now();
    let mut handles = Vec::new();
    for (index, session) in sessions.into_iter().enumerate() {
        let client = client.clone();
        let mut rng = StdRng::seed_from_u64(seed + index as u64);
        handles.push(tokio::spawn(async move {
            let (mut tiles, mut views, mut failed) = (Vec::new(), Vec::new(), 0);
            let limit = Arc::new(tokio::sync::Semaphore::new(6));
            // People do not all start in the same millisecond.
            if let Some(think) = think {
                tokio::time::sleep(think.mul_f64(rng.gen_range(0.0..1.0))).await;
            }
            let mut remaining = session.len();
            for view in session {
                let view_started = Instant::now();
                let mut requests = Vec::new();
                for url in view {
                    requests.push(tokio::spawn(fetch_tile(client.clone(), url, limit.clone())));
                }
                for request in requests {
                    match request.await {
                        Ok((ms, true)) => tiles.push(ms),
                        _ => failed += 1,
                    }
                }
                views.push(view_started.elapsed().as_secs_f64() * 1000.0);
                remaining -= 1;
                // No pause after the last view: the session is over.
                if let (Some(think), true) = (think, remaining > 0) {
                    tokio::time::sleep(think.mul_f64(rng.gen_range(0.5..1.5))).await;
                }
            }
            (tiles, views, failed)
        }));
    }
    let (mut tiles, mut views, mut failed) = (Vec::new(), Vec::new(), 0);
    for handle in handles {
        if let Ok((mut t, mut v, f)) = handle.await {
            tiles.append(&mut t);
            views.append(&mut v);
            failed += f;
        }
    }
    (tiles, views, failed, started.elapsed())
}

struct Measured {
    tiles: Vec<f64>,
    views: Vec<f64>,
    failed: usize,
    elapsed: Duration,
}

fn figures(scenario: &str, sessions: usize, run: Measured, pid: u32) -> Figures {
    let (mut tiles, mut views) = (run.tiles, run.views);
    tiles.sort_by(f64::total_cmp);
    views.sort_by(f64::total_cmp);
    let seconds = run.elapsed.as_secs_f64();
    Figures {
        scenario: scenario.to_string(),
        sessions,
        tiles: tiles.len(),
        failed: run.failed,
        seconds,
        // Latencies are of tiles that arrived; failures are counted apart.
        tiles_per_sec: tiles.len() as f64 / seconds,
        tile_p50_ms: percentile(&tiles, 0.5),
        tile_p99_ms: percentile(&tiles, 0.99),
        view_p50_ms: percentile(&views, 0.5),
        view_p99_ms: percentile(&views, 0.99),
        peak_rss_mib: peak_rss_mib(pid),
    }
}

async fn measure(
    client: &reqwest::Client,
    sessions: Vec<Session>,
    think: Option<Duration>,
    seed: u64,
) -> Measured {
    let (tiles, views, failed, elapsed) = replay(client, sessions, think, seed).await;
    Measured {
        tiles,
        views,
        failed,
        elapsed,
    }
}

/// Traces for `count` sessions, each on slide `slide_of(i)` of `bases` (`{base}/slides/{id}`).
fn sessions(
    pyramid: &Pyramid,
    tile: u32,
    views: usize,
    count: usize,
    seed: u64,
    bases: &[String],
) -> Vec<Session> {
    (0..count)
        .map(|i| {
            let base = &bases[i % bases.len()];
            trace(pyramid, tile, views, seed + i as u64)
                .into_iter()
                .map(|view| {
                    view.into_iter()
                        .map(|t| format!("{base}_files/{t}.jpeg"))
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// The same requests with every tile asked only once (the first time it appears).
fn each_tile_once(sessions: &[Session]) -> Vec<Session> {
    let mut seen = BTreeSet::new();
    sessions
        .iter()
        .map(|session| {
            session
                .iter()
                .map(|view| {
                    view.iter()
                        .filter(|url| seen.insert((*url).clone()))
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .filter(|view| !view.is_empty())
                .collect()
        })
        .collect()
}

/// nginx answering every URL with one file, from its open-file cache: about the most this
/// machine can answer over HTTP. Two workers: the edge uses both cores too.
struct Nginx {
    server: Server,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(tile_bytes: &[u8]) -> Result<Option<Self>> {
        if !Path::new("/usr/sbin/nginx").exists() {
            println!("  nginx: not installed (scripts/bench-peers installs it): no ceiling");
            return Ok(None);
        }
        let dir = tempfile::Builder::new()
            .prefix("grassroots-bench-nginx-")
            .tempdir()?;
        std::fs::write(dir.path().join("tile.jpeg"), tile_bytes)?;
        let port = free_port()?;
        let d = dir.path().display();
        let config = format!(
            "daemon off;\nuser root;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             keepalive_timeout 300s;\n keepalive_requests 1000000;\n open_file_cache max=16;\n\
             server {{\n  listen 127.0.0.1:{port};\n  root {d};\n  default_type image/jpeg;\n\
             location / {{ rewrite ^ /tile.jpeg break; }}\n }}\n}}\n"
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, config)?;
        let server = Server(
            Command::new("/usr/sbin/nginx")
                .arg("-c")
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting nginx")?,
        );
        Ok(Some(Self {
            server,
            port,
            _dir: dir,
        }))
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its workers (a SIGKILL would leave them running).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.server.0.id().to_string()])
            .status();
        let _ = self.server.0.wait();
    }
}

/// Rewrites an edge URL to the same path on nginx.
fn on_nginx(sessions: &[Session], edge_base: &str, port: u16) -> Vec<Session> {
    let nginx = format!("http://127.0.0.1:{port}");
    sessions
        .iter()
        .map(|s| {
            s.iter()
                .map(|v| v.iter().map(|u| u.replacen(edge_base, &nginx, 1)).collect())
                .collect()
        })
        .collect()
}

/// The fixture SVS made distinct `copies` times (TIFF readers ignore trailing bytes, and a
/// different file is a different slide to the edge).
fn distinct_copies(svs: &Path, copies: usize, dir: &Path) -> Result<Vec<PathBuf>> {
    let bytes = std::fs::read(svs).with_context(|| svs.display().to_string())?;
    (0..copies)
        .map(|i| {
            let path = dir.join(format!("copy-{i}.svs"));
            let mut copy = bytes.clone();
            copy.extend_from_slice(format!("bench-viewers-copy-{i:04}").as_bytes());
            std::fs::write(&path, copy)?;
            Ok(path)
        })
        .collect()
}

pub async fn run(args: ViewersBenchArgs) -> Result<()> {
    let fixtures = args.cache.join("fixtures");
    let svs = match args.svs.clone() {
        Some(svs) => svs,
        None => PathBuf::from(script("fetch-fixtures", &fixtures)?),
    };
    let pyramid_path = args.pyramid.clone().unwrap_or(fixtures.join("big.tif"));
    if !pyramid_path.is_file() {
        bail!(
            "{} is missing: `grassroots bench screen` makes it (or pass --pyramid)",
            pyramid_path.display()
        );
    }
    let _ = script("bench-peers", &args.cache.join("peers"));
    let copies_dir = tempfile::Builder::new()
        .prefix("grassroots-bench-viewers-")
        .tempdir()?;
    let mut slides = vec![pyramid_path.clone()];
    slides.extend(distinct_copies(&svs, 10, copies_dir.path())?);
    println!(
        "importing {} and ten copies of {} into a fresh edge…",
        pyramid_path.display(),
        svs.display()
    );
    // Enough pooled connections for 160 sessions of six requests each.
    let edge = BenchEdge::start(&slides, 1024).await?;
    let (client, base) = (edge.client.clone(), edge.base.clone());
    let pid = edge.server.0.id();
    let think = Some(Duration::from_millis(args.think_ms));
    let mut results = Vec::new();
    let mut ceiling = serde_json::Map::new();

    for (kind, ids) in [
        ("pyramid (stored tiles)", &edge.ids[..1]),
        ("SVS (rendered tiles)", &edge.ids[1..]),
    ] {
        let slide = grassroots_slides::Slide::open(&slides[if ids.len() == 1 { 0 } else { 1 }])?;
        let info = slide.info().clone();
        let pyramid = Pyramid::new(info.width, info.height);
        let bases: Vec<String> = ids.iter().map(|id| format!("{base}/slides/{id}")).collect();
        wait_for(&client, &format!("{}.dzi", bases[0])).await?;
        println!(
            "{kind}: {} x {} px, tiles {} + {}",
            info.width, info.height, info.tile_size, info.overlap
        );
        let mut seed = 10_000;
        let mut next_seed = || {
            seed += 1_000;
            seed
        };

        // First, while nothing of this slide has been asked for: the ceiling, the same trace
        // against nginx, and the edge cold (each tile once) then warm (the same views again).
        let busy_traces = |seed| {
            sessions(
                &pyramid,
                info.tile_size,
                args.views,
                args.busy_clients,
                seed,
                &bases[..1],
            )
        };
        let trace_busy = busy_traces(next_seed());
        let cold = each_tile_once(&trace_busy);
        let sample = client.get(&cold[0][0][0]).send().await?;
        if !sample.status().is_success() {
            bail!("the edge refused a tile: {}", sample.status());
        }
        let sample = sample.bytes().await?.to_vec();
        let edge_cold = figures(
            &format!("{kind}: edge, each tile once"),
            args.busy_clients,
            measure(&client, cold.clone(), None, 0).await,
            pid,
        );
        let edge_warm = figures(
            &format!("{kind}: edge, the same views again"),
            args.busy_clients,
            measure(&client, cold.clone(), None, 0).await,
            pid,
        );
        edge_cold.print();
        edge_warm.print();
        if let Some(nginx) = Nginx::start(&sample)? {
            let plain = reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()?;
            wait_for(&plain, &format!("http://127.0.0.1:{}/x", nginx.port)).await?;
            let run = measure(&plain, on_nginx(&cold, &base, nginx.port), None, 0).await;
            let top = figures(
                &format!("{kind}: nginx, one cached file"),
                args.busy_clients,
                run,
                nginx.server.0.id(),
            );
            top.print();
            let (cold_share, warm_share) = (
                edge_cold.tiles_per_sec / top.tiles_per_sec,
                edge_warm.tiles_per_sec / top.tiles_per_sec,
            );
            println!(
                "  {kind}: the edge reaches {:.0}% of nginx's ceiling cold and {:.0}% warm",
                cold_share * 100.0,
                warm_share * 100.0
            );
            ceiling.insert(
                kind.to_string(),
                serde_json::json!({
                    "tile_bytes": sample.len(), "nginx": top, "edge_cold": edge_cold,
                    "edge_warm": edge_warm, "cold_share": cold_share, "warm_share": warm_share,
                }),
            );
        }

        // Busy clients: no think time.
        let busy = busy_traces(next_seed());
        let run = measure(&client, busy, None, 0).await;
        let f = figures(&format!("{kind}: busy"), args.busy_clients, run, pid);
        f.print();
        results.push(f);

        // Viewing sessions with think time, on one slide and (SVS) on ten.
        let spreads: &[usize] = if bases.len() > 1 { &[1, 10] } else { &[1] };
        for &spread in spreads {
            for count in [1, 32, 160] {
                let traces = sessions(
                    &pyramid,
                    info.tile_size,
                    args.views,
                    count,
                    next_seed(),
                    &bases[..spread],
                );
                let run = measure(&client, traces, think, next_seed()).await;
                let on = if spread == 1 {
                    "one slide"
                } else {
                    "ten slides"
                };
                let f = figures(&format!("{kind}: viewing, {on}"), count, run, pid);
                f.print();
                results.push(f);
            }
        }
    }
    let peak = peak_rss_mib(pid);
    println!("edge peak RSS over the whole run: {peak:.0} MiB");
    drop(edge);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&serde_json::json!({
            "views_per_session": args.views, "think_ms": args.think_ms,
            "busy_clients": args.busy_clients, "scenarios": results, "ceiling": ceiling,
            "edge_peak_rss_mib": peak,
        }))?,
    )?;
    println!("figures written to {}", args.out.display());
    Ok(())
}
