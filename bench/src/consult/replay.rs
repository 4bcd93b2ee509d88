//! Replaying the session against one contender as a browser would: the descriptor first, then
//! each view's new tiles, all asked for at once and fetched over at most six HTTP/1.1
//! connections (a browser's limit per host), with the expert looking at each view for a while
//! before moving on. A view's latency runs from the request of its first tile until its last
//! tile has arrived. Every tile's BLAKE3 hash is kept so that contenders can be compared byte
//! for byte.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use super::trace::{Tile, View};

/// Browsers open at most six HTTP/1.1 connections per host.
pub const CONNECTIONS: usize = 6;

/// Where one contender serves the slide: its descriptor URL and the prefix of its tile URLs
/// (`.../{slide}_files/`), with a client that is signed in there.
#[derive(Clone)]
pub struct Target {
    pub client: reqwest::Client,
    pub descriptor: String,
    pub tiles: String,
}

/// One view as the expert saw it.
#[derive(Debug, Clone, Serialize)]
pub struct ViewTiming {
    pub action: &'static str,
    pub level: u32,
    pub tiles: usize,
    pub bytes: u64,
    pub ms: f64,
}

/// A whole replay.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    pub descriptor_ms: f64,
    /// From the descriptor's request until the last tile of the first view arrived.
    pub first_view_ms: f64,
    pub views: Vec<ViewTiming>,
    /// Each tile's latency (request to last byte), in request order.
    pub tile_ms: Vec<f64>,
    pub bytes: u64,
    /// Requests that did not end in a 200 with a body, with the reason.
    pub failures: Vec<String>,
    /// `LEVEL/COL_ROW` → BLAKE3 of the tile's bytes.
    #[serde(skip)]
    pub hashes: BTreeMap<String, blake3::Hash>,
}

struct Fetched {
    tile: Tile,
    ms: f64,
    outcome: Result<Body, String>,
}

/// What arrived: its length and hash.
struct Body {
    len: u64,
    hash: blake3::Hash,
}

async fn get(client: &reqwest::Client, url: &str) -> Result<Body, String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "{url}: {status} {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    Ok(Body {
        len: body.len() as u64,
        hash: blake3::hash(&body),
    })
}

/// Fetches `tiles` six at a time; returns them when the last has arrived.
async fn fetch_view(target: &Target, tiles: &[Tile]) -> Vec<Fetched> {
    let limit = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    let mut requests = Vec::new();
    for tile in tiles {
        let (client, limit, tile) = (target.client.clone(), limit.clone(), *tile);
        let url = format!("{}{}.jpeg", target.tiles, tile.path());
        requests.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let sent = Instant::now();
            let outcome = get(&client, &url).await;
            Fetched {
                tile,
                ms: sent.elapsed().as_secs_f64() * 1000.0,
                outcome,
            }
        }));
    }
    let mut fetched = Vec::new();
    for request in requests {
        match request.await {
            Ok(done) => fetched.push(done),
            Err(error) => fetched.push(Fetched {
                tile: Tile {
                    level: 0,
                    col: 0,
                    row: 0,
                },
                ms: 0.0,
                outcome: Err(format!("request task failed: {error}")),
            }),
        }
    }
    fetched
}

/// Replays `views` against `target`, pausing `think` between views.
pub async fn replay(target: Target, views: Vec<View>, think: Duration) -> Result<Replay> {
    let Some((first, rest)) = views.split_first() else {
        bail!("an empty session");
    };
    let mut replay = Replay {
        descriptor_ms: 0.0,
        first_view_ms: 0.0,
        views: Vec::new(),
        tile_ms: Vec::new(),
        bytes: 0,
        failures: Vec::new(),
        hashes: BTreeMap::new(),
    };
    let opened = Instant::now();
    if let Err(error) = get(&target.client, &target.descriptor).await {
        replay.failures.push(error);
    }
    replay.descriptor_ms = opened.elapsed().as_secs_f64() * 1000.0;
    let fetched = fetch_view(&target, &first.new_tiles).await;
    replay.first_view_ms = opened.elapsed().as_secs_f64() * 1000.0;
    let first_ms = replay.first_view_ms - replay.descriptor_ms;
    replay.record(first, fetched, first_ms);
    for view in rest {
        tokio::time::sleep(think).await;
        let started = Instant::now();
        let fetched = fetch_view(&target, &view.new_tiles).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        replay.record(view, fetched, ms);
    }
    Ok(replay)
}

/// The value at quantile `q` of `values` (nearest rank); NaN when there are none.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

impl Replay {
    fn record(&mut self, view: &View, fetched: Vec<Fetched>, ms: f64) {
        let mut bytes = 0;
        for tile in fetched {
            self.tile_ms.push(tile.ms);
            match tile.outcome {
                Ok(body) => {
                    bytes += body.len;
                    self.hashes.insert(tile.tile.path(), body.hash);
                }
                Err(error) => self.failures.push(error),
            }
        }
        self.bytes += bytes;
        self.views.push(ViewTiming {
            action: view.action,
            level: view.level,
            tiles: view.new_tiles.len(),
            bytes,
            ms,
        });
    }

    /// Latencies of the views after the first that needed at least one new tile (a view whose
    /// tiles the viewer already has shows at once, whichever the contender).
    pub fn next_view_ms(&self) -> Vec<f64> {
        self.views
            .iter()
            .skip(1)
            .filter(|v| v.tiles > 0)
            .map(|v| v.ms)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 11.0);
        assert_eq!(percentile(&values, 0.95), 19.0);
        assert_eq!(percentile(&values, 1.0), 20.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
