//! `grassroots bench coverage`: the health authorities' dashboard of a large network — 2,000
//! sites with two years of daily rows — served by the real hub binary: response time of the
//! dashboard page, the JSON and CSV exports, the trend API, a region's view, a site's page and
//! the printable report, and the hub's memory. Goals (issue 15): p95 under 200 ms, RSS under
//! 300 MB.
//!
//! The sites are written to the provisioning registry (with locations over 18 prefectures and
//! 160 counties) as records only: they never connect, so no certificate is made for them. Their
//! days are the invented history edges make for demos (`grassroots_edge::coverage_demo`), stored
//! through the hub's own `Coverage::record`, so rows and rollups are what reports would leave.
//! Requests pick periods and days at random over the two years, so most tables are solved
//! cold (the hub keeps 64 solved tables); the current month, asked again and again, is the warm
//! case.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use grassroots_provisioning::{NetworkAuthority, Registry, Role, SiteId, SiteLocation, SiteRecord};
use grassroots_wire::coverage::{day_string, local_day, CoverageReport};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use time::{Duration as Days, OffsetDateTime};

use crate::consult::replay::percentile;
use crate::tiles::{peak_rss_mib, Server};

const PASSWORD: &str = "bench-coverage-password";
const PREFECTURES: usize = 18;
const COUNTIES_PER_PREFECTURE: usize = 9;

#[derive(Args)]
pub struct CoverageBenchArgs {
    /// Simulated sites.
    #[arg(long, default_value_t = 2000)]
    pub sites: usize,
    /// Days of history per site, ending yesterday.
    #[arg(long, default_value_t = 730)]
    pub days: i64,
    /// Requests per kind.
    #[arg(long, default_value_t = 40)]
    pub requests: usize,
    /// Keep the prepared network here (and reuse it when it exists) instead of a temporary one.
    #[arg(long)]
    pub work: Option<PathBuf>,
    #[arg(long, default_value = "target/bench/coverage.json")]
    pub out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Figure {
    kind: String,
    requests: usize,
    p50_ms: f64,
    p95_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct Results {
    sites: usize,
    days: i64,
    daily_rows: usize,
    prepare_seconds: f64,
    hub_start_seconds: f64,
    figures: Vec<Figure>,
    rss_mib: f64,
    peak_rss_mib: f64,
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn site_id(index: usize) -> String {
    format!("site-{index:04}")
}

/// The provisioned network and the hub's store, filled with `sites` x `days` rows.
fn prepare(work: &std::path::Path, sites: usize, days: i64) -> Result<usize> {
    let now = OffsetDateTime::now_utc();
    let prov = work.join("prov");
    NetworkAuthority::init(&prov, "Henan bench", "127.0.0.1:17443", 3650, now)?;
    let mut registry = Registry::load(&prov)?;
    let mut rng = StdRng::seed_from_u64(15);
    for index in 0..sites {
        let id = site_id(index);
        let site: SiteId = id.parse()?;
        registry.certificates.push(SiteRecord {
            site_id: site,
            name: format!("County hospital {index}"),
            role: Role::Edge,
            serial: format!("{:032x}", rng.gen::<u128>()),
            not_before: now - Days::days(1),
            not_after: now + Days::days(rng.gen_range(10..700)),
            revoked_at: None,
        });
        let prefecture = index % PREFECTURES;
        let county = (index / PREFECTURES) % COUNTIES_PER_PREFECTURE;
        let location = SiteLocation::new(
            &format!("Henan/P{prefecture:02}/C{prefecture:02}-{county}"),
            rng.gen_range(31.4..36.4),
            rng.gen_range(110.4..116.6),
            rng.gen_range(20_000..120_000),
        )?;
        registry.locations.insert(id, location);
    }
    registry.save(&prov)?;

    let data = work.join("hub-data");
    std::fs::create_dir_all(&data)?;
    let store = grassroots_store::Store::open(&data)?;
    let coverage =
        grassroots_hub::coverage::Coverage::open(&store).map_err(|e| anyhow::anyhow!("{e}"))?;
    let today = local_day(now, 8);
    let first = today - Days::days(days);
    let started = Instant::now();
    let mut rows = 0;
    for index in 0..sites {
        let id = site_id(index);
        let report = CoverageReport {
            offset_hours: 8,
            computed_at: day_string(today),
            days: grassroots_edge::coverage_demo::invent_days(&id, first, days),
        };
        rows += coverage
            .record(&id, &report)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if index % 200 == 199 {
            println!(
                "  {} sites stored ({rows} rows, {:.0} s)",
                index + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let accounts = grassroots_web::Accounts::open(&store)?;
    accounts.add_user(
        "health-bureau",
        grassroots_web::StaffRole::Authority,
        PASSWORD,
        now,
    )?;
    accounts.add_user_in_regions(
        "kaifeng-bureau",
        grassroots_web::StaffRole::Authority,
        PASSWORD,
        &["Henan/P03".to_string()],
        now,
    )?;
    store.flush()?;
    Ok(rows)
}

async fn timed(client: &reqwest::Client, url: &str) -> Result<f64> {
    let started = Instant::now();
    let response = client.get(url).send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !status.is_success() {
        bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(ms)
}

/// The hub binary on the prepared data, with a cold cache; returns it, its base URL and how
/// long it took to answer.
async fn start_hub(work: &std::path::Path) -> Result<(Server, String, f64)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let started = Instant::now();
    let hub = Server(
        Command::new(std::env::current_exe()?)
            .args(["hub", "--kit"])
            .arg(work.join("prov/kits/hub.kit"))
            .arg("--data")
            .arg(work.join("hub-data"))
            .args(["--listen", "127.0.0.1:0", "--http"])
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let probe = reqwest::Client::new();
    for _ in 0..600 {
        if probe.get(format!("{base}/healthz")).send().await.is_ok() {
            return Ok((hub, base, started.elapsed().as_secs_f64()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the hub did not start")
}

/// A client signed in as `user` (no redirects followed: a failed sign-in is an error, not a
/// login page timed as an answer).
async fn signed_in(base: &str, user: &str) -> Result<reqwest::Client> {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()?;
    let response = client
        .post(format!("{base}/login"))
        .form(&[
            ("username", user),
            ("password", PASSWORD),
            ("next", "/coverage"),
        ])
        .send()
        .await?;
    if response.status() != 303 {
        bail!("signing in as {user}: {}", response.status());
    }
    Ok(client)
}

pub async fn run(args: CoverageBenchArgs) -> Result<()> {
    let temporary = tempfile::tempdir()?;
    let work = args.work.clone().unwrap_or_else(|| temporary.path().into());
    std::fs::create_dir_all(&work)?;
    let started = Instant::now();
    let rows = if work.join("hub-data").exists() {
        println!("reusing the network in {}", work.display());
        args.sites * args.days as usize
    } else {
        println!(
            "preparing {} sites x {} days in {}",
            args.sites,
            args.days,
            work.display()
        );
        prepare(&work, args.sites, args.days)?
    };
    let prepare_seconds = started.elapsed().as_secs_f64();

    let today = local_day(OffsetDateTime::now_utc(), 8);
    let mut rng = StdRng::seed_from_u64(7);
    let periods = ["day", "week", "month", "quarter", "year"];
    let mut figures = Vec::new();
    type UrlMaker = Box<dyn Fn(&mut StdRng) -> String>;
    let random_day =
        move |rng: &mut StdRng| day_string(today - Days::days(rng.gen_range(1..args.days)));
    // (kind, signed in as the limited account, URLs)
    let kinds: Vec<(&str, bool, UrlMaker)> = vec![
        (
            "dashboard page, this month (cached after the first)",
            false,
            Box::new(|_| "/coverage".to_string()),
        ),
        (
            "dashboard page, random period",
            false,
            Box::new(move |rng| {
                format!(
                    "/coverage?period={}&at={}",
                    periods[rng.gen_range(0..5)],
                    random_day(rng)
                )
            }),
        ),
        (
            "JSON export, random period",
            false,
            Box::new(move |rng| {
                format!(
                    "/api/v1/coverage?period={}&at={}",
                    periods[rng.gen_range(0..5)],
                    random_day(rng)
                )
            }),
        ),
        (
            "CSV export, random month",
            false,
            Box::new(move |rng| {
                format!(
                    "/api/v1/coverage?period=month&at={}&format=csv",
                    random_day(rng)
                )
            }),
        ),
        (
            "trend, 12 months of a prefecture",
            false,
            Box::new(move |rng| {
                format!(
                    "/api/v1/coverage/trend?period=month&at={}&region=Henan/P{:02}",
                    random_day(rng),
                    rng.gen_range(0..PREFECTURES)
                )
            }),
        ),
        (
            "site page, 12 months",
            false,
            Box::new(move |rng| {
                format!(
                    "/coverage/site/{}?period=month&at={}",
                    site_id(rng.gen_range(0..args.sites)),
                    random_day(rng)
                )
            }),
        ),
        (
            "region-limited account, random month",
            true,
            Box::new(move |rng| format!("/coverage?period=month&at={}", random_day(rng))),
        ),
        (
            "printable monthly report",
            false,
            Box::new(move |rng| format!("/coverage/report?at={}", random_day(rng))),
        ),
    ];
    let mut hub_start_seconds = 0f64;
    let mut peak_rss = 0f64;
    let mut last_rss = 0f64;
    for (kind, limited, url) in &kinds {
        // A fresh hub per kind: its first tables are solved cold, not left by the last kind.
        let (hub, base, seconds) = start_hub(&work).await?;
        hub_start_seconds = hub_start_seconds.max(seconds);
        let user = if *limited {
            "kaifeng-bureau"
        } else {
            "health-bureau"
        };
        let client = signed_in(&base, user).await?;
        let mut latencies = Vec::new();
        for _ in 0..args.requests {
            let path = url(&mut rng);
            latencies.push(timed(&client, &format!("{base}{path}")).await?);
        }
        peak_rss = peak_rss.max(peak_rss_mib(hub.0.id()));
        last_rss = rss_mib(hub.0.id());
        drop(hub);
        let figure = Figure {
            kind: kind.to_string(),
            requests: latencies.len(),
            p50_ms: percentile(&latencies, 0.5),
            p95_ms: percentile(&latencies, 0.95),
            max_ms: latencies.iter().copied().fold(0.0, f64::max),
        };
        println!(
            "  {:<40} p50 {:>7.1} ms   p95 {:>7.1} ms   max {:>7.1} ms",
            figure.kind, figure.p50_ms, figure.p95_ms, figure.max_ms
        );
        figures.push(figure);
    }
    let results = Results {
        sites: args.sites,
        days: args.days,
        daily_rows: rows,
        prepare_seconds,
        hub_start_seconds,
        figures,
        rss_mib: last_rss,
        peak_rss_mib: peak_rss,
    };
    println!(
        "  hub memory: RSS {:.0} MiB, peak {:.0} MiB (goal: under 300 MB); started in {:.1} s",
        results.rss_mib, results.peak_rss_mib, results.hub_start_seconds
    );
    let worst = results.figures.iter().map(|f| f.p95_ms).fold(0.0, f64::max);
    println!("  worst p95 {worst:.0} ms (goal: under 200 ms)");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("figures written to {}", args.out.display());
    Ok(())
}
