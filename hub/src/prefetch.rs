//! AI-guided prefetch: when a referral arrives (or its edge comes back), the hub moves the
//! tiles its expert is most likely to look at first — the Deep Zoom descriptor, the overview
//! levels, then the tiles around each region the AI or the referring doctor marked, level by
//! level — from the edge into the consult's cache, before anyone asks.
//!
//! It never competes with a person: each fetch waits until no live request is in flight and goes
//! on a lower-priority stream at both ends; it stops at the per-consult byte budget, when the
//! consult closes, or when the link drops (and resumes, skipping what it has, when it is back).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use grassroots_deepzoom::{Descriptor, Format};
use grassroots_wire::TileAddress;
use tokio::sync::watch;

use crate::consult::{from_edge, FetchFailure};
use crate::consult_cache::PrefetchState;
use crate::HubState;

/// Who the audit names for what the hub fetched ahead of the expert.
pub const PREFETCH_USER: &str = "(hub prefetch)";
/// First pause before prefetching a referral again after an edge failed it (doubling to 5 min).
const RETRY_PAUSE: Duration = Duration::from_secs(15);

/// Prefetch requests in flight at once, completing in any order: enough to fill a long, thin,
/// lossy pipe (`bench consult`: 6 in order used half of a 10 Mbit/s link, 16 unordered 92%).
const CONCURRENCY: usize = 16;
/// Levels with at most this many tiles are fetched whole (the overview).
const OVERVIEW_TILES: u64 = 64;
/// Around each region, this much at every level: two 1600 x 900 screens per axis, since
/// OpenSeadragon keeps a level until the zoom doubles, so one view spans up to twice a screen.
const SCREEN: (u64, u64) = (3200, 1800);
/// Regions planned around, at most (the doctor's and the AI's).
const MAX_REGIONS: usize = 64;
/// Tiles in one plan, at most: far beyond what a prefetch budget moves (64 MiB is about 4,000
/// tiles), so the cap only bounds the planner's own work on a hostile geometry.
pub const MAX_PLAN_TILES: usize = 20_000;

/// A rectangle in level-0 slide pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// The bounding boxes of a GeoJSON FeatureCollection's features, in order.
pub fn regions(geojson: &str) -> Vec<Region> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(geojson) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for feature in value["features"].as_array().into_iter().flatten() {
        let mut points = Vec::new();
        collect_points(&feature["geometry"]["coordinates"], &mut points);
        if points.is_empty() {
            continue;
        }
        let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for (x, y) in points {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        out.push(Region {
            x: x0,
            y: y0,
            width: x1 - x0,
            height: y1 - y0,
        });
    }
    out
}

fn collect_points(value: &serde_json::Value, out: &mut Vec<(f64, f64)>) {
    match value.as_array() {
        Some(pair) if pair.len() == 2 && pair.iter().all(|v| v.is_number()) => {
            if let (Some(x), Some(y)) = (pair[0].as_f64(), pair[1].as_f64()) {
                out.push((x, y));
            }
        }
        Some(items) => items.iter().for_each(|item| collect_points(item, out)),
        None => {}
    }
}

/// The tiles to fetch ahead, most useful first: overview levels whole, then, level by level,
/// two screens around each region (and the region itself).
pub fn plan(geometry: &Descriptor, regions: &[Region]) -> Vec<TileAddress> {
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut push = |tile: TileAddress, order: &mut Vec<TileAddress>| {
        if seen.insert(tile) {
            order.push(tile);
        }
    };
    // Levels exist up to top_level, so grid and downsample cannot fail there.
    let grid = |level: u32| {
        geometry
            .grid(level)
            .map(|(cols, rows)| (u64::from(cols), u64::from(rows)))
            .unwrap_or((0, 0))
    };
    let mut level = 0;
    while level <= geometry.top_level() {
        let (cols, rows) = grid(level);
        if cols * rows > OVERVIEW_TILES {
            break;
        }
        for row in 0..rows {
            for col in 0..cols {
                push(tile(level, col, row), &mut order);
            }
        }
        level += 1;
    }
    // The regions come from the referral: bounded, so that the plan stays small.
    let regions = &regions[..regions.len().min(MAX_REGIONS)];
    for level in level..=geometry.top_level() {
        let scale = f64::from(geometry.downsample(level).unwrap_or(1));
        let (cols, rows) = grid(level);
        for region in regions {
            let (cx, cy) = (
                (region.x + region.width / 2.0) / scale,
                (region.y + region.height / 2.0) / scale,
            );
            let (hw, hh) = (
                (region.width / scale / 2.0).max(SCREEN.0 as f64 / 2.0),
                (region.height / scale / 2.0).max(SCREEN.1 as f64 / 2.0),
            );
            let ts = f64::from(geometry.tile_size);
            let span = |low: f64, high: f64, count: u64| {
                let first = (low.max(0.0) / ts).floor() as u64;
                let last = ((high.max(0.0) / ts).floor() as u64).min(count.saturating_sub(1));
                first..=last
            };
            for row in span(cy - hh, cy + hh, rows) {
                for col in span(cx - hw, cx + hw, cols) {
                    if order.len() >= MAX_PLAN_TILES {
                        return order;
                    }
                    push(tile(level, col, row), &mut order);
                }
            }
        }
    }
    order
}

/// The tile that holds a whole `width` x `height` slide: the largest Deep Zoom level at most
/// 254 px on its longer side (one tile at the edge's tile size of 254 or more).
pub fn thumbnail_tile(width: u32, height: u32) -> TileAddress {
    let level = Descriptor::new(width.max(1), height.max(1), 254, 0, Format::Jpeg)
        .ok()
        .and_then(|geometry| {
            (0..geometry.levels()).rev().find(|&level| {
                geometry
                    .level_size(level)
                    .is_ok_and(|(w, h)| w.max(h) <= 254)
            })
        })
        .unwrap_or(0);
    tile(level, 0, 0)
}

fn tile(level: u32, col: u64, row: u64) -> TileAddress {
    TileAddress {
        level,
        col: col as u32,
        row: row as u32,
    }
}

/// Prefetches every open referral whose edge is connected, one referral at a time.
pub(crate) async fn run(state: Arc<HubState>, mut shutdown: watch::Receiver<bool>) {
    if state.consult_cache.budget() == 0 {
        return;
    }
    // After a failure with the edge connected, wait before trying that referral again.
    let mut pauses: std::collections::HashMap<String, (Instant, Duration)> =
        std::collections::HashMap::new();
    loop {
        let open: Vec<_> = state
            .referrals
            .worklist()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.report.is_none())
            .collect();
        for referral in open {
            let id = referral.referral.referral_id.clone();
            if state.consult_cache.prefetch_state(&id) != PrefetchState::Waiting
                || state.consult_cache.is_closed(&id)
                || state.sites.connection(&referral.site).is_none()
                || pauses
                    .get(&id)
                    .is_some_and(|(until, _)| Instant::now() < *until)
            {
                continue;
            }
            let link = |state: &HubState| {
                state
                    .sites
                    .connection(&referral.site)
                    .map(|c| c.stable_id())
            };
            let before = link(&state);
            tokio::select! {
                complete = prefetch_referral(&state, &referral) => {
                    // A dropped link is no reason to wait: the edge's return wakes prefetch.
                    if complete || link(&state) != before {
                        pauses.remove(&id);
                    } else {
                        let pause = pauses.get(&id).map_or(RETRY_PAUSE, |(_, p)| (*p * 2).min(Duration::from_secs(300)));
                        pauses.insert(id, (Instant::now() + pause, pause));
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
        tokio::select! {
            _ = state.prefetch_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One pass over a referral's plan; whether it completed.
async fn prefetch_referral(state: &HubState, referral: &crate::referrals::HubReferral) -> bool {
    let id = &referral.referral.referral_id;
    let cache = &state.consult_cache;
    let started = Instant::now();
    cache.update_prefetch(id, |p| p.state = PrefetchState::Running);
    let mut complete = true;
    for slide in &referral.referral.slides {
        let geometry = match fetch_one(state, referral, &slide.slide_id, None).await {
            Ok(Some(xml)) => Descriptor::parse(&String::from_utf8_lossy(&xml)).ok(),
            Ok(None) => break,
            Err(()) => {
                complete = false;
                break;
            }
        };
        let Some(geometry) = geometry else {
            tracing::warn!(referral = %id, slide = %slide.slide_id, "the edge's descriptor has no geometry; nothing prefetched");
            continue;
        };
        let marked = slide
            .regions_geojson
            .as_deref()
            .map(regions)
            .unwrap_or_default();
        let tiles = plan(&geometry, &marked);
        let mut fetches = futures_util::stream::iter(tiles)
            .map(|tile| fetch_one(state, referral, &slide.slide_id, Some(tile)))
            .buffer_unordered(CONCURRENCY);
        let mut failed = false;
        while let Some(outcome) = fetches.next().await {
            match outcome {
                Ok(Some(_)) => {}
                // The budget is spent or the consult closed.
                Ok(None) => break,
                Err(()) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            complete = false;
            break;
        }
        if cache.budget_spent(id) {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    cache.update_prefetch(id, |p| {
        if complete {
            p.state = PrefetchState::Done;
            p.seconds = Some(seconds);
        } else {
            // The link dropped: try again when the edge is back; what was fetched stays.
            p.state = PrefetchState::Waiting;
        }
    });
    let status = cache.status(id);
    tracing::info!(referral = %id, complete, tiles = status.prefetch.fetched_tiles, bytes = status.prefetch.fetched_bytes, seconds, "consult prefetch");
    complete
}

/// Fetches one item ahead unless it is cached: `Ok(None)` when the budget is spent or the
/// consult closed (stop, done), `Err` when the edge could not be reached (stop, retry later).
async fn fetch_one(
    state: &HubState,
    referral: &crate::referrals::HubReferral,
    slide: &str,
    tile: Option<TileAddress>,
) -> Result<Option<Vec<u8>>, ()> {
    let id = &referral.referral.referral_id;
    let cache = &state.consult_cache;
    if let Some(data) = cache.get(id, slide, tile) {
        return Ok(Some(data.to_vec()));
    }
    cache.live_idle().await;
    if cache.is_closed(id) || cache.budget_spent(id) {
        return Ok(None);
    }
    match from_edge(state, referral, slide, tile, true).await {
        Ok(data) => {
            let size = data.len() as u64;
            state
                .audit
                .record(
                    PREFETCH_USER,
                    id,
                    slide,
                    crate::consult::item_label(tile),
                    200,
                )
                .await;
            cache.put(id, slide, tile, data.clone().into());
            cache.update_prefetch(id, |p| {
                p.fetched_tiles += 1;
                p.fetched_bytes += size;
            });
            Ok(Some(data))
        }
        Err(FetchFailure::Refused(reason)) => {
            // A tile the edge cannot make (outside the slide): skip it, go on.
            tracing::debug!(referral = %id, %reason, "prefetch item refused");
            Ok(Some(Vec::new()))
        }
        // Starved behind live traffic for too long: skip this one rather than start over.
        Err(FetchFailure::TimedOut) => Ok(Some(Vec::new())),
        Err(failure) => {
            tracing::info!(referral = %id, ?failure, "prefetch stopped; it resumes later");
            Err(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_takes_the_overview_first_then_regions_level_by_level() {
        let g = Descriptor::new(46000, 32914, 254, 1, Format::Jpeg).unwrap();
        let region = Region {
            x: 30000.0,
            y: 20000.0,
            width: 500.0,
            height: 400.0,
        };
        let tiles = plan(&g, &[region]);
        let unique: HashSet<_> = tiles.iter().collect();
        assert_eq!(unique.len(), tiles.len(), "no tile twice");
        // Levels 0..=11 are at most 8x8 tiles: all of them come first, in level order.
        let overview: u32 = (0..=11)
            .map(|l| g.grid(l).unwrap().0 * g.grid(l).unwrap().1)
            .sum();
        assert!(tiles[..overview as usize].iter().all(|t| t.level <= 11));
        assert!(tiles[overview as usize..].iter().all(|t| t.level >= 12));
        assert!(tiles.windows(2).all(|w| w[0].level <= w[1].level));
        // At full resolution, two screens per axis around the region: about 14 x 8 tiles, all
        // near it.
        let top: Vec<_> = tiles.iter().filter(|t| t.level == 16).collect();
        assert!((100..=160).contains(&top.len()), "{}", top.len());
        assert!(top
            .iter()
            .all(|t| (t.col as f64 * 254.0 - 30250.0).abs() < 1900.0));
        // No regions: the overview only.
        assert_eq!(plan(&g, &[]).len(), overview as usize);
    }

    #[test]
    fn the_thumbnail_is_the_largest_single_tile_level() {
        // 2220 x 2967: level 12 is full size; level 8 is 139 x 186, level 9 278 x 371.
        assert_eq!(thumbnail_tile(2220, 2967).level, 8);
        assert_eq!(thumbnail_tile(254, 100).level, 8);
        assert_eq!(thumbnail_tile(255, 100).level, 7);
        assert_eq!(thumbnail_tile(1, 1).level, 0);
    }

    #[test]
    fn regions_are_the_bounding_boxes_of_polygons_and_points() {
        let geojson = r#"{"type":"FeatureCollection","features":[
            {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[10,20],[110,20],[110,70],[10,70],[10,20]]]}},
            {"type":"Feature","geometry":{"type":"Point","coordinates":[5,6]}}]}"#;
        assert_eq!(
            regions(geojson),
            vec![
                Region {
                    x: 10.0,
                    y: 20.0,
                    width: 100.0,
                    height: 50.0
                },
                Region {
                    x: 5.0,
                    y: 6.0,
                    width: 0.0,
                    height: 0.0
                }
            ]
        );
        assert!(regions("not json").is_empty());
    }
}
