//! The hub's tile cache of open consults: what an expert viewed, and what the prefetch moved
//! ahead of them, kept so that the next look at a tile does not cross the county's uplink again.
//!
//! **Memory only.** A tile is patient image data; the hub never writes one to its disk. The
//! cache of a consult is purged when the consult closes (the expert's answer is stored), and the
//! whole cache goes with the hub process. Each consult holds at most [`CONSULT_CAP`] bytes and
//! all together [`HUB_CAP`]; beyond that, tiles are served but not kept.
//!
//! It also counts live (expert) requests in flight, so that prefetch can stand aside for them.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use grassroots_wire::TileAddress;
use serde::Serialize;
use tokio::sync::watch;

/// Most bytes one consult's cache holds, whatever the prefetch budget.
pub const CONSULT_CAP: u64 = 256 * 1024 * 1024;
/// Most bytes all consults' caches hold together: a hub with many open consults serves the
/// rest straight from the edges rather than grow without bound.
pub const HUB_CAP: u64 = 1024 * 1024 * 1024;

/// Where a consult's prefetch stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PrefetchState {
    /// Not started yet (the edge may be offline).
    #[default]
    Waiting,
    Running,
    Done,
    /// Prefetch is turned off at this hub.
    Off,
}

/// How far a consult's prefetch has come.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct PrefetchProgress {
    pub state: PrefetchState,
    pub fetched_tiles: u64,
    pub fetched_bytes: u64,
    pub budget_bytes: u64,
    /// Seconds from start to done, once done.
    pub seconds: Option<f64>,
}

/// `GET /api/v1/referrals/{id}/cache`
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CacheStatus {
    pub cached_tiles: usize,
    pub cached_bytes: u64,
    /// Purged: the consult is closed.
    pub closed: bool,
    pub prefetch: PrefetchProgress,
}

#[derive(Default)]
struct Consult {
    items: HashMap<(String, Option<TileAddress>), Bytes>,
    bytes: u64,
    closed: bool,
    prefetch: PrefetchProgress,
}

pub struct ConsultCache {
    consults: Mutex<HashMap<String, Consult>>,
    live: watch::Sender<usize>,
    budget: u64,
}

/// Held while a live request is in flight to an edge.
pub struct LiveRequest<'a>(&'a watch::Sender<usize>);

impl Drop for LiveRequest<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl ConsultCache {
    /// A cache whose prefetch moves at most `budget` bytes per consult (0: no prefetch).
    pub fn new(budget: u64) -> Self {
        Self {
            consults: Mutex::new(HashMap::new()),
            live: watch::Sender::new(0),
            budget,
        }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Consult>> {
        self.consults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn entry<'a>(
        &self,
        consults: &'a mut HashMap<String, Consult>,
        referral: &str,
    ) -> &'a mut Consult {
        consults.entry(referral.to_string()).or_insert_with(|| {
            let mut consult = Consult::default();
            consult.prefetch.budget_bytes = self.budget;
            if self.budget == 0 {
                consult.prefetch.state = PrefetchState::Off;
            }
            consult
        })
    }

    fn with<T>(&self, referral: &str, f: impl FnOnce(&mut Consult) -> T) -> T {
        let mut consults = self.lock();
        f(self.entry(&mut consults, referral))
    }

    pub fn get(&self, referral: &str, slide: &str, tile: Option<TileAddress>) -> Option<Bytes> {
        self.with(referral, |c| {
            c.items.get(&(slide.to_string(), tile)).cloned()
        })
    }

    pub fn contains(&self, referral: &str, slide: &str, tile: Option<TileAddress>) -> bool {
        self.with(referral, |c| {
            c.items.contains_key(&(slide.to_string(), tile))
        })
    }

    /// Keeps a tile for the consult, unless it is closed or full. Returns whether it was kept.
    pub fn put(&self, referral: &str, slide: &str, tile: Option<TileAddress>, data: Bytes) -> bool {
        // One lock for the hub-wide total and the consult's own, so they agree.
        let mut consults = self.lock();
        let held: u64 = consults.values().map(|c| c.bytes).sum();
        let c = self.entry(&mut consults, referral);
        let size = data.len() as u64;
        if c.closed || c.bytes + size > CONSULT_CAP || held + size > HUB_CAP {
            return false;
        }
        if let Some(old) = c.items.insert((slide.to_string(), tile), data) {
            c.bytes -= old.len() as u64;
        }
        c.bytes += size;
        true
    }

    /// Drops everything of a consult and keeps it closed (prefetch stops, nothing is kept).
    pub fn purge(&self, referral: &str) {
        self.with(referral, |c| {
            c.items.clear();
            c.bytes = 0;
            c.closed = true;
        });
    }

    pub fn is_closed(&self, referral: &str) -> bool {
        self.with(referral, |c| c.closed)
    }

    pub fn status(&self, referral: &str) -> CacheStatus {
        self.with(referral, |c| CacheStatus {
            cached_tiles: c.items.len(),
            cached_bytes: c.bytes,
            closed: c.closed,
            prefetch: c.prefetch.clone(),
        })
    }

    /// Whether the consult's prefetch has moved its whole budget.
    pub fn budget_spent(&self, referral: &str) -> bool {
        self.with(referral, |c| c.prefetch.fetched_bytes >= self.budget)
    }

    pub fn prefetch_state(&self, referral: &str) -> PrefetchState {
        self.with(referral, |c| c.prefetch.state)
    }

    pub fn update_prefetch(&self, referral: &str, f: impl FnOnce(&mut PrefetchProgress)) {
        self.with(referral, |c| f(&mut c.prefetch));
    }

    /// Marks a live request in flight until the guard drops.
    pub fn live_request(&self) -> LiveRequest<'_> {
        self.live.send_modify(|n| *n += 1);
        LiveRequest(&self.live)
    }

    /// Returns once no live request is in flight.
    pub async fn live_idle(&self) {
        let mut live = self.live.subscribe();
        let _ = live.wait_for(|n| *n == 0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(level: u32) -> Option<TileAddress> {
        Some(TileAddress {
            level,
            col: 0,
            row: 0,
        })
    }

    #[test]
    fn a_purged_consult_keeps_nothing_and_others_are_untouched() {
        let cache = ConsultCache::new(1024);
        assert!(cache.put("a", "s", tile(1), Bytes::from_static(b"tile one")));
        assert!(cache.put("a", "s", None, Bytes::from_static(b"<Image/>")));
        assert!(cache.put("b", "s", tile(1), Bytes::from_static(b"other")));
        assert_eq!(cache.status("a").cached_tiles, 2);
        assert_eq!(cache.status("a").cached_bytes, 16);
        assert_eq!(
            cache.get("a", "s", tile(1)).as_deref(),
            Some(&b"tile one"[..])
        );

        cache.purge("a");
        let status = cache.status("a");
        assert!(status.closed);
        assert_eq!((status.cached_tiles, status.cached_bytes), (0, 0));
        assert!(cache.get("a", "s", tile(1)).is_none());
        assert!(!cache.put("a", "s", tile(2), Bytes::from_static(b"late")));
        assert_eq!(cache.status("a").cached_tiles, 0);
        assert_eq!(cache.get("b", "s", tile(1)).as_deref(), Some(&b"other"[..]));
    }

    #[test]
    fn replacing_a_tile_counts_its_bytes_once_and_no_budget_means_off() {
        let cache = ConsultCache::new(0);
        cache.put("a", "s", tile(1), Bytes::from_static(b"12345"));
        cache.put("a", "s", tile(1), Bytes::from_static(b"123"));
        assert_eq!(cache.status("a").cached_bytes, 3);
        assert_eq!(cache.prefetch_state("a"), PrefetchState::Off);
    }

    #[tokio::test]
    async fn live_idle_waits_for_every_live_request() {
        let cache = std::sync::Arc::new(ConsultCache::new(1));
        let guard = cache.live_request();
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.live_idle().await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        tokio::time::timeout(std::time::Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
