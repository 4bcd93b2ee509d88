//! The figures of `bench consult`: per contender the time to the first view and the next-view
//! latency percentiles over every run, the ratios of the proxy to each hub contender, and the
//! table printed on stdout.

use serde::Serialize;

use super::contenders::mismatches;
use super::replay::{percentile, Replay, ViewTiming};

pub const HUB_NO_PREFETCH: &str = "hub over QUIC, no prefetch";
pub const HUB_PREFETCH: &str = "hub over QUIC, prefetch";
pub const PROXY: &str = "nginx HTTPS/TCP reverse proxy";

/// A tile that arrives within half the link's round trip cannot have crossed it: the hub
/// answered it from its consult cache.
pub const FROM_HUB_CACHE_MS: f64 = 40.0;

/// One run of a contender.
#[derive(Debug, Clone, Serialize)]
pub struct RunFigures {
    pub time_to_first_view_ms: f64,
    pub descriptor_ms: f64,
    pub bytes: u64,
    pub views: Vec<ViewTiming>,
}

/// One contender's figures over all its runs.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub contender: &'static str,
    /// Median over the runs.
    pub time_to_first_view_ms: f64,
    pub next_view_p50_ms: f64,
    pub next_view_p95_ms: f64,
    pub next_view_max_ms: f64,
    /// Views after the first that needed tiles, over all runs (the percentiles are over these).
    pub next_views: usize,
    /// Tiles per run.
    pub tiles: usize,
    pub tile_p50_ms: f64,
    pub tile_p95_ms: f64,
    /// Tiles that arrived faster than a round trip of the link.
    pub tiles_within_half_rtt: usize,
    pub failures: Vec<String>,
    pub failure_count: usize,
    /// Tiles whose bytes differ from the edge's own (or that are missing), over all runs.
    pub mismatches: usize,
    pub runs: Vec<RunFigures>,
}

impl Figures {
    pub fn new(contender: &'static str, replays: &[Replay], reference: &Replay) -> Self {
        let next: Vec<f64> = replays.iter().flat_map(Replay::next_view_ms).collect();
        let tile_ms: Vec<f64> = replays.iter().flat_map(|r| r.tile_ms.clone()).collect();
        let firsts: Vec<f64> = replays.iter().map(|r| r.first_view_ms).collect();
        let failures: Vec<String> = replays.iter().flat_map(|r| r.failures.clone()).collect();
        Self {
            contender,
            time_to_first_view_ms: percentile(&firsts, 0.5),
            next_view_p50_ms: percentile(&next, 0.5),
            next_view_p95_ms: percentile(&next, 0.95),
            next_view_max_ms: percentile(&next, 1.0),
            next_views: next.len(),
            tiles: replays.first().map_or(0, |r| r.hashes.len()),
            tile_p50_ms: percentile(&tile_ms, 0.5),
            tile_p95_ms: percentile(&tile_ms, 0.95),
            tiles_within_half_rtt: tile_ms.iter().filter(|ms| **ms < FROM_HUB_CACHE_MS).count(),
            failure_count: failures.len(),
            failures: failures.into_iter().take(20).collect(),
            mismatches: replays
                .iter()
                .map(|r| mismatches(&r.hashes, &reference.hashes))
                .sum(),
            runs: replays
                .iter()
                .map(|r| RunFigures {
                    time_to_first_view_ms: r.first_view_ms,
                    descriptor_ms: r.descriptor_ms,
                    bytes: r.bytes,
                    views: r.views.clone(),
                })
                .collect(),
        }
    }
}

/// The proxy's figure over a hub contender's, for each headline figure.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub name: String,
    pub time_to_first_view: f64,
    pub next_view_p50: f64,
    pub next_view_p95: f64,
}

pub fn ratios(results: &[Figures]) -> Vec<Ratio> {
    let find = |name: &str| results.iter().find(|r| r.contender == name);
    let Some(proxy) = find(PROXY) else {
        return Vec::new();
    };
    [HUB_NO_PREFETCH, HUB_PREFETCH]
        .into_iter()
        .filter_map(find)
        .map(|hub| Ratio {
            name: format!("proxy / {}", hub.contender),
            time_to_first_view: proxy.time_to_first_view_ms / hub.time_to_first_view_ms,
            next_view_p50: proxy.next_view_p50_ms / hub.next_view_p50_ms,
            next_view_p95: proxy.next_view_p95_ms / hub.next_view_p95_ms,
        })
        .collect()
}

pub fn print_header() {
    println!(
        "  {:<30} {:>11} {:>10} {:>10} {:>10} {:>7} {:>9} {:>7} {:>9}",
        "contender",
        "first view",
        "next p50",
        "next p95",
        "next max",
        "views",
        "tiles/run",
        "failed",
        "mismatch"
    );
}

pub fn print_row(r: &Figures) {
    println!(
        "  {:<30} {:>8.0} ms {:>7.0} ms {:>7.0} ms {:>7.0} ms {:>7} {:>9} {:>7} {:>9}",
        r.contender,
        r.time_to_first_view_ms,
        r.next_view_p50_ms,
        r.next_view_p95_ms,
        r.next_view_max_ms,
        r.next_views,
        r.tiles,
        r.failure_count,
        r.mismatches
    );
}
