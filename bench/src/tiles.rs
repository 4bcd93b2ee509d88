//! `grassroots bench tiles`: the edge's tile server against openslide-python's `deepzoom_server`
//! and — for pyramidal TIFFs, the only slides it reads whole — Debian's `iipimage-server` (iipsrv
//! behind lighttpd, two FastCGI processes), on the same slide, tile geometry, JPEG quality (75)
//! and machine, in one run.
//!
//! Each server runs as its own process, started cold. N clients replay the same seeded
//! pan-and-zoom trace against each: every "view" asks for the tiles covering a 1280 x 800
//! viewport, six at a time as a browser does. Reported: tiles/s, latency p50/p99, the server's
//! peak resident memory, and the ratios.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Args)]
pub struct TilesBenchArgs {
    /// The slide to serve (default: the fixture SVS, fetched with scripts/fetch-fixtures).
    #[arg(long)]
    pub slide: Option<PathBuf>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Views per client (zoom steps and pans).
    #[arg(long, default_value_t = 12)]
    pub views: usize,
    /// Cache for the peers' virtualenv and fixtures.
    #[arg(long, default_value = "/var/cache/grassroots")]
    pub cache: PathBuf,
    /// Where the figures go.
    #[arg(long, default_value = "target/bench/tiles.json")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
struct Result_ {
    server: String,
    requests: usize,
    failed: usize,
    seconds: f64,
    tiles_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_mib: f64,
}

/// Deep Zoom geometry of a slide, as both servers compute it.
pub(crate) struct Pyramid {
    levels: Vec<(u32, u32)>,
}

impl Pyramid {
    pub(crate) fn new(width: u32, height: u32) -> Self {
        let mut levels = vec![(width, height)];
        let (mut w, mut h) = (width, height);
        while w > 1 || h > 1 {
            w = w.div_ceil(2).max(1);
            h = h.div_ceil(2).max(1);
            levels.push((w, h));
        }
        levels.reverse();
        Self { levels }
    }
}

/// The tile paths (`{level}/{col}_{row}`, the extension added per server) of each view of one
/// client's session.
pub(crate) fn trace(pyramid: &Pyramid, tile: u32, views: usize, seed: u64) -> Vec<Vec<String>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let top = pyramid.levels.len() - 1;
    let first = top.saturating_sub(5);
    let (mut fx, mut fy) = (rng.gen_range(0.2..0.8), rng.gen_range(0.2..0.8));
    let mut level = first;
    (0..views)
        .map(|view| {
            if view > 0 {
                if level < top && rng.gen_bool(0.5) {
                    level += 1; // zoom in on the same spot
                } else {
                    fx = (fx + rng.gen_range(-0.15..0.15f64)).clamp(0.0, 1.0); // pan
                    fy = (fy + rng.gen_range(-0.15..0.15f64)).clamp(0.0, 1.0);
                }
            }
            let (w, h) = pyramid.levels[level];
            let (cols, rows) = (w.div_ceil(tile), h.div_ceil(tile));
            let (cx, cy) = (fx * f64::from(w), fy * f64::from(h));
            let col_range = ((cx - 640.0).max(0.0) as u32 / tile)
                ..=(((cx + 640.0) as u32 / tile).min(cols - 1));
            let row_range = ((cy - 400.0).max(0.0) as u32 / tile)
                ..=(((cy + 400.0) as u32 / tile).min(rows - 1));
            let mut tiles = Vec::new();
            for row in row_range {
                for col in col_range.clone() {
                    tiles.push(format!("{level}/{col}_{row}"));
                }
            }
            tiles
        })
        .collect()
}

/// Peak resident memory of a server: the process and its children (iipsrv's FastCGI workers).
pub(crate) fn peak_rss_mib(pid: u32) -> f64 {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    own_peak_rss_mib(pid)
        + children
            .split_whitespace()
            .filter_map(|child| child.parse::<u32>().ok())
            .map(own_peak_rss_mib)
            .sum::<f64>()
}

fn own_peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Fetches one tile once `limit` lets it (six at a time per client, as a browser does): its
/// latency in milliseconds and whether it arrived.
pub(crate) async fn fetch_tile(
    client: reqwest::Client,
    url: String,
    limit: Arc<tokio::sync::Semaphore>,
) -> (f64, bool) {
    let _permit = limit.acquire().await;
    let sent = Instant::now();
    let ok = match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
        _ => false,
    };
    (sent.elapsed().as_secs_f64() * 1000.0, ok)
}

async fn replay(
    client: reqwest::Client,
    base: String,
    extension: &'static str,
    sessions: Vec<Vec<Vec<String>>>,
) -> (Vec<f64>, usize, Duration) {
    let started = Instant::now();
    let mut handles = Vec::new();
    for session in sessions {
        let (client, base) = (client.clone(), base.clone());
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0;
            let limit = Arc::new(tokio::sync::Semaphore::new(6));
            for view in session {
                let mut requests = Vec::new();
                for tile in view {
                    let (client, url, limit) = (
                        client.clone(),
                        format!("{base}{tile}.{extension}"),
                        limit.clone(),
                    );
                    requests.push(tokio::spawn(fetch_tile(client, url, limit)));
                }
                for request in requests {
                    if let Ok((ms, ok)) = request.await {
                        latencies.push(ms);
                        failed += usize::from(!ok);
                    }
                }
            }
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for handle in handles {
        if let Ok((mut l, f)) = handle.await {
            latencies.append(&mut l);
            failed += f;
        }
    }
    (latencies, failed, started.elapsed())
}

fn summarise(
    server: &str,
    latencies: Vec<f64>,
    failed: usize,
    elapsed: Duration,
    pid: u32,
) -> Result_ {
    let mut sorted = latencies;
    sorted.sort_by(f64::total_cmp);
    Result_ {
        server: server.to_string(),
        requests: sorted.len(),
        failed,
        seconds: elapsed.as_secs_f64(),
        // Only tiles that arrived count.
        tiles_per_sec: sorted.len().saturating_sub(failed) as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&sorted, 0.5),
        p99_ms: percentile(&sorted, 0.99),
        peak_rss_mib: peak_rss_mib(pid),
    }
}

pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) async fn wait_for(client: &reqwest::Client, url: &str) -> Result<()> {
    for _ in 0..200 {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} never answered")
}

pub fn script(name: &str, arg: &Path) -> Result<String> {
    let output = Command::new(format!("scripts/{name}"))
        .arg(arg)
        .output()
        .with_context(|| {
            format!("running scripts/{name} (run the bench from the repository root)")
        })?;
    if !output.status.success() {
        bail!(
            "scripts/{name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string())
}

const IIPSRV: &str = "/usr/lib/iipimage-server/iipsrv.fcgi";

/// The trace against iipsrv, when it can serve this slide: a pyramidal TIFF (it reads an SVS's
/// thumbnail and label as pyramid levels, so it fails below full resolution there).
async fn iipsrv(
    client: &reqwest::Client,
    slide: &Path,
    info: &grassroots_slides::SlideInfo,
    sessions: Vec<Vec<Vec<String>>>,
) -> Result<Option<Result_>> {
    if !Path::new(IIPSRV).exists() {
        println!("  iipsrv: not installed (scripts/bench-peers installs it): skipped");
        return Ok(None);
    }
    if info.vendor != "generic-tiff" {
        println!(
            "  iipsrv: reads pyramidal TIFFs only, this slide is {}: skipped",
            info.vendor
        );
        return Ok(None);
    }
    let (dir, name) = (
        slide.parent().context("slide folder")?,
        slide.file_name().context("slide name")?.to_string_lossy(),
    );
    let port = free_port()?;
    let server = Server(
        Command::new("scripts/iipsrv-peer")
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting scripts/iipsrv-peer")?,
    );
    let base = format!("http://127.0.0.1:{port}/fcgi-bin/iipsrv.fcgi?DeepZoom={name}");
    wait_for(client, &format!("{base}.dzi")).await?;
    let (latencies, failed, elapsed) =
        replay(client.clone(), format!("{base}_files/"), "jpg", sessions).await;
    let result = summarise(
        "iipimage-server (iipsrv 1.1)",
        latencies,
        failed,
        elapsed,
        server.0.id(),
    );
    drop(server);
    Ok(Some(result))
}

pub async fn run(args: TilesBenchArgs) -> Result<()> {
    let slide = match args.slide.clone() {
        Some(slide) => slide,
        None => PathBuf::from(script("fetch-fixtures", &args.cache.join("fixtures"))?),
    };
    let peers = script("bench-peers", &args.cache.join("peers"))?;
    let (python, server_script) = peers.split_once(' ').context("bench-peers output")?;
    let info = grassroots_slides::Slide::open(&slide)?.info().clone();
    let pyramid = Pyramid::new(info.width, info.height);
    // Both servers use the geometry the edge chooses for this slide: the stored tile grid where
    // it can pass tiles through, openslide-python's 254 + 1 otherwise.
    let (tile, overlap) = (info.tile_size, info.overlap);
    let sessions: Vec<Vec<Vec<String>>> = (0..args.clients)
        .map(|c| trace(&pyramid, tile, args.views, 1000 + c as u64))
        .collect();
    let total: usize = sessions.iter().flatten().map(Vec::len).sum();
    println!(
        "slide {} ({} x {} px, {} Deep Zoom levels, tiles {tile} + {overlap} overlap{}); {} clients x {} views = {total} tile requests per server",
        slide.display(),
        info.width,
        info.height,
        pyramid.levels.len(),
        if info.native_tiles.is_some() { ", stored JPEG tiles passed through" } else { "" },
        args.clients,
        args.views
    );

    // The peer: openslide-python's deepzoom_server (Flask, threaded), same tile geometry and quality.
    let port = free_port()?;
    let peer = Server(
        Command::new(python)
            .arg(server_script)
            .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-Q", "75"])
            .args(["-s", &tile.to_string(), "-e", &overlap.to_string()])
            .arg(&slide)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting deepzoom_server")?,
    );
    let plain = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    wait_for(&plain, &format!("http://127.0.0.1:{port}/slide.dzi")).await?;
    let (latencies, failed, elapsed) = replay(
        plain.clone(),
        format!("http://127.0.0.1:{port}/slide_files/"),
        "jpeg",
        sessions.clone(),
    )
    .await;
    let peer_result = summarise(
        "openslide-python deepzoom_server",
        latencies,
        failed,
        elapsed,
        peer.0.id(),
    );
    drop(peer);
    let iip_result = iipsrv(&plain, &slide, &info, sessions.clone()).await?;

    // Ours: a real edge process with the slide imported.
    let edge = BenchEdge::start(std::slice::from_ref(&slide), 64).await?;
    let (ours, base, id) = (edge.client.clone(), edge.base.clone(), edge.ids[0].clone());
    wait_for(&ours, &format!("{base}/slides/{id}.dzi")).await?;
    let (latencies, failed, elapsed) = replay(
        ours,
        format!("{base}/slides/{id}_files/"),
        "jpeg",
        sessions.clone(),
    )
    .await;
    let our_result = summarise(
        "grassroots edge",
        latencies,
        failed,
        elapsed,
        edge.server.0.id(),
    );
    drop(edge);

    for result in [Some(&peer_result), iip_result.as_ref(), Some(&our_result)]
        .into_iter()
        .flatten()
    {
        println!(
            "  {:<36} {:>8.0} tiles/s   p50 {:>7.1} ms   p99 {:>7.1} ms   peak RSS {:>6.0} MiB   ({} requests, {} failed, {:.1} s)",
            result.server, result.tiles_per_sec, result.p50_ms, result.p99_ms, result.peak_rss_mib, result.requests, result.failed, result.seconds
        );
    }
    let ratio = our_result.tiles_per_sec / peer_result.tiles_per_sec;
    println!(
        "  throughput ratio grassroots / deepzoom_server: {ratio:.1}x; p99 ratio (deepzoom_server / grassroots): {:.1}x",
        peer_result.p99_ms / our_result.p99_ms
    );
    let iip_ratio = iip_result
        .as_ref()
        .map(|iip| our_result.tiles_per_sec / iip.tiles_per_sec);
    if let (Some(iip), Some(ratio)) = (&iip_result, iip_ratio) {
        println!(
            "  throughput ratio grassroots / iipsrv: {ratio:.1}x; p99 ratio (iipsrv / grassroots): {:.1}x",
            iip.p99_ms / our_result.p99_ms
        );
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&serde_json::json!({
            "slide": slide, "tile_size": tile, "overlap": overlap, "width": info.width, "height": info.height,
            "clients": args.clients, "views_per_client": args.views,
            "deepzoom_server": peer_result, "grassroots": our_result, "throughput_ratio": ratio,
            "iipsrv": iip_result, "throughput_ratio_iipsrv": iip_ratio,
        }))?,
    )?;
    println!("figures written to {}", args.out.display());
    Ok(())
}

/// A one-site network in `work` for a bench's edge; returns the edge's startup kit.
pub(crate) fn bench_site(work: &Path) -> Result<PathBuf> {
    let now = time::OffsetDateTime::now_utc();
    let (mut authority, _) = grassroots_provisioning::NetworkAuthority::init(
        &work.join("prov"),
        "bench",
        "127.0.0.1:9",
        30,
        now,
    )?;
    authority.add_site(&"bench-edge".parse()?, "bench edge", 30, now)?;
    Ok(work.join("prov/kits/bench-edge.kit"))
}

/// Starts this binary as an edge with `kit` and `data`, its web server on a free port (and
/// `extra` arguments); returns the process and the web server's `ADDR`.
pub(crate) fn spawn_edge(kit: &Path, data: &Path, extra: &[&str]) -> Result<(Server, String)> {
    let mut edge = Command::new(std::env::current_exe()?)
        .args(["edge", "--kit"])
        .arg(kit)
        .arg("--data")
        .arg(data)
        .args(["--http", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = std::io::BufReader::new(edge.stdout.take().context("edge stdout")?);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line)?;
    // Whatever the edge prints later is read and dropped: a closed pipe would stop it.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let server = Server(edge);
    let address = line
        .split("http://")
        .nth(1)
        .context("edge address")?
        .trim()
        .to_string();
    Ok((server, address))
}

/// A real edge process with slides imported and a signed-in client, in a temporary folder.
pub(crate) struct BenchEdge {
    pub(crate) server: Server,
    /// `http://ADDR`.
    pub(crate) base: String,
    /// The imported slides' ids, in the order given.
    pub(crate) ids: Vec<String>,
    pub(crate) client: reqwest::Client,
    _work: tempfile::TempDir,
}

impl BenchEdge {
    /// Imports `slides` with the edge stopped, then starts it (this binary) on a free port and
    /// signs a client in; `connections` is the client's pool size.
    pub(crate) async fn start(slides: &[PathBuf], connections: usize) -> Result<Self> {
        let work = tempfile::Builder::new()
            .prefix("grassroots-bench-edge-")
            .tempdir()?;
        let now = time::OffsetDateTime::now_utc();
        let kit = bench_site(work.path())?;
        let data = work.path().join("edge");
        let ids = {
            std::fs::create_dir_all(&data)?;
            let store = grassroots_store::Store::open(&data)?;
            let config = grassroots_edge::EdgeConfig {
                data_dir: data.clone(),
                ..Default::default()
            };
            let library = grassroots_edge::open_slides(&config, &store)?;
            let mut ids = Vec::new();
            for slide in slides {
                ids.push(library.import(slide)?.record.id);
            }
            grassroots_web::Accounts::open(&store)?.add_user(
                "bench",
                grassroots_web::StaffRole::Clinician,
                "bench-password",
                now,
            )?;
            store.flush()?;
            ids
        };
        let (server, address) = spawn_edge(&kit, &data, &[])?;
        let base = format!("http://{address}");
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .pool_max_idle_per_host(connections)
            .build()?;
        client
            .post(format!("{base}/login"))
            .form(&[("username", "bench"), ("password", "bench-password")])
            .send()
            .await?;
        Ok(Self {
            server,
            base,
            ids,
            client,
            _work: work,
        })
    }
}
