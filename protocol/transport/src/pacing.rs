//! Bulk transfers yield the bottleneck to live traffic.
//!
//! A county hospital's uplink is thin, and the queue in front of it (a router's, or the modem's)
//! is shared by everything the edge sends. Stream priorities order what *quinn* sends next, but
//! once bulk packets sit in that queue, an expert's tile waits behind them: with BBR alone a 20 MB
//! model update kept about one round trip of data queued there, doubling the consult's round
//! trip. So bulk senders pace themselves with a delay-based controller after LEDBAT (RFC 6817),
//! applied to a sending rate: they measure the connection's round trip against the lowest seen
//! lately (the empty-queue baseline) and keep the queueing delay they cause near
//! [`TARGET_QUEUEING`], growing while it is below, shrinking in proportion while it is above.
//! Random loss, which BBR already tolerates, does not slow them; a queue does, whoever fills it.
//!
//! A round trip is too slow a signal for a consult, though: a view's tiles are a burst of about
//! a tenth of a second, over before the delay says anything, and while it lasts a bulk sender
//! that keeps its rate takes its share of the link from the tiles. Priorities cannot help
//! there, since quinn's pacer is not the bottleneck. So every framed stream of interactive or
//! control priority counts what it writes on its connection ([`live_ledger`]), and while live
//! traffic flows (tiles a person waits for, consult messages), bulk drops to [`MIN_RATE`],
//! resuming about a round trip after it ends. Prefetch (tiles nobody waits for yet) is left to
//! the delay-based part. The ledger counts what this side writes: a hub sending a package while
//! an expert's tiles flow the other way sees only the tile requests and relies on the delay.
//!
//! [`RateController`] is the arithmetic alone (no clock, no socket) so that it can be tested;
//! [`BulkPacer`] feeds it the connection's smoothed round trip, the bytes quinn has put on the
//! wire and the live bytes written, and sleeps between slices.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

/// Queueing delay a bulk transfer may add at the bottleneck. LEDBAT allows up to 100 ms; a
/// consult's next view costs a few round trips, so 25 ms keeps it within a fifth of its idle time
/// on an 80 ms link (`grassroots bench consult --background`).
pub const TARGET_QUEUEING: Duration = Duration::from_millis(25);

/// Rate a transfer starts at: low enough that the first round trips measure an empty queue.
pub const START_RATE: f64 = 128.0 * 1024.0;

/// Never slower than this, live traffic or not (a transfer must finish eventually).
pub const MIN_RATE: f64 = 16.0 * 1024.0;

/// Largest write between two pacing decisions.
pub const SLICE: usize = 16 * 1024;

/// Adjust at most once per round trip, and at least this far apart (loopback's round trip is
/// microseconds).
const MIN_ADJUST_INTERVAL: Duration = Duration::from_millis(10);

/// The baseline is the lowest round trip of the current and the previous window, so it can rise
/// again after a route change.
const BASE_WINDOW: Duration = Duration::from_secs(60);

/// Growth per round trip at zero queueing (multiplicative, so a fast link is reached in a
/// second or two rather than LEDBAT's one packet per round trip), and the largest cut.
const GROWTH: f64 = 0.25;
const CUT: f64 = 0.5;

/// The rate may run at most this far ahead of what actually left (a rate the link never
/// carried says nothing, and would take many cuts to come down from)...
const AHEAD_OF_DELIVERY: f64 = 8.0;

/// ...measured over windows at least this long (a slow transfer writes a slice only every
/// tenth of a second or so, so shorter windows would mostly see nothing leave).
const DELIVERY_WINDOW: Duration = Duration::from_millis(100);

/// Live traffic is this many bytes written by live streams within [`LIVE_WINDOW`]: a tile is
/// several times more; a heartbeat or a status message far less.
const LIVE_BYTES: u64 = 4 * 1024;
const LIVE_WINDOW: Duration = Duration::from_millis(100);

/// After live traffic, bulk waits this long (or a round trip, if longer) before resuming.
const LIVE_HOLD: Duration = Duration::from_millis(50);

/// A delay-based sending rate (bytes per second) that gives way to live traffic.
#[derive(Debug, Clone)]
pub struct RateController {
    rate: f64,
    ceiling: f64,
    target: Duration,
    base: [Option<Duration>; 2],
    window_started: Option<Instant>,
    next_adjust: Option<Instant>,
    delivery_mark: Option<(Instant, u64)>,
    delivered_rate: Option<f64>,
    live_window: Option<(Instant, u64)>,
    live_until: Option<Instant>,
}

impl RateController {
    /// `ceiling` is the operator's cap, if any.
    pub fn new(ceiling: Option<u64>, target: Duration) -> Self {
        let ceiling = ceiling
            .filter(|c| *c > 0)
            .map_or(f64::INFINITY, |c| c as f64);
        Self {
            rate: START_RATE.min(ceiling).max(MIN_RATE.min(ceiling)),
            ceiling,
            target,
            base: [None, None],
            window_started: None,
            next_adjust: None,
            delivery_mark: None,
            delivered_rate: None,
            live_window: None,
            live_until: None,
        }
    }

    /// The delay-based rate (what bulk sends at when no live traffic is about).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The empty-queue round trip as far as this controller knows.
    pub fn base(&self) -> Option<Duration> {
        match self.base {
            [Some(a), Some(b)] => Some(a.min(b)),
            [a, b] => a.or(b),
        }
    }

    /// Whether live traffic holds bulk back at `now`.
    pub fn holding(&self, now: Instant) -> bool {
        self.live_until.is_some_and(|until| now < until)
    }

    /// Takes a smoothed round trip `rtt`, the connection's total bytes put on the wire and the
    /// total bytes its live streams wrote, at `now`; returns the rate to send at.
    pub fn on_sample(
        &mut self,
        now: Instant,
        rtt: Duration,
        wire_bytes: u64,
        live_bytes: u64,
    ) -> f64 {
        self.watch_live(now, rtt, live_bytes);
        self.track_base(now, rtt);
        if self.next_adjust.is_none_or(|at| now >= at) {
            self.adjust(now, rtt, wire_bytes);
        }
        if self.holding(now) {
            MIN_RATE.min(self.ceiling)
        } else {
            self.rate
        }
    }

    fn watch_live(&mut self, now: Instant, rtt: Duration, live_bytes: u64) {
        let Some((since, then)) = self.live_window else {
            self.live_window = Some((now, live_bytes));
            return;
        };
        // Checked before the window restarts: a burst written while this sender was blocked
        // (on a write or a disk read) still counts.
        if live_bytes.saturating_sub(then) >= LIVE_BYTES {
            self.live_until = Some(now + rtt.max(LIVE_HOLD));
            self.live_window = Some((now, live_bytes));
        } else if now.duration_since(since) >= LIVE_WINDOW {
            self.live_window = Some((now, live_bytes));
        }
    }

    fn track_base(&mut self, now: Instant, rtt: Duration) {
        match self.window_started {
            Some(started) if now.duration_since(started) >= BASE_WINDOW => {
                self.base = [Some(rtt), self.base[0]];
                self.window_started = Some(now);
            }
            None => self.window_started = Some(now),
            Some(_) => {}
        }
        self.base[0] = Some(self.base[0].map_or(rtt, |b| b.min(rtt)));
    }

    fn adjust(&mut self, now: Instant, rtt: Duration, wire_bytes: u64) {
        let base = self.base().unwrap_or(rtt);
        let queueing = rtt.saturating_sub(base).as_secs_f64();
        let target = self.target.as_secs_f64().max(1e-6);
        let off_target = ((target - queueing) / target).clamp(-1.0, 1.0);
        let mut rate = if off_target < 0.0 {
            self.rate * (1.0 + CUT * off_target)
        } else if self.holding(now) {
            self.rate // the queue is the live traffic's: nothing to learn about the link
        } else {
            self.rate * (1.0 + GROWTH * off_target)
        };
        match self.delivery_mark {
            Some((then, bytes)) if now.duration_since(then) >= DELIVERY_WINDOW => {
                // While held back, what left says nothing about the link either.
                if !self.holding(now) {
                    let seconds = now.duration_since(then).as_secs_f64();
                    self.delivered_rate = Some(wire_bytes.saturating_sub(bytes) as f64 / seconds);
                }
                self.delivery_mark = Some((now, wire_bytes));
            }
            Some(_) => {}
            None => self.delivery_mark = Some((now, wire_bytes)),
        }
        if let Some(delivered) = self.delivered_rate {
            rate = rate.min((delivered * AHEAD_OF_DELIVERY).max(START_RATE));
        }
        self.rate = rate.clamp(MIN_RATE.min(self.ceiling), self.ceiling);
        self.next_adjust = Some(now + rtt.max(MIN_ADJUST_INTERVAL));
    }
}

/// Bytes written on one connection by streams above bulk priority (kept by
/// [`crate::framed::FramedSend`], read by every bulk transfer's pacer on that connection).
pub fn live_ledger(connection: &quinn::Connection) -> Arc<AtomicU64> {
    static LEDGERS: OnceLock<Mutex<HashMap<usize, Weak<AtomicU64>>>> = OnceLock::new();
    let mut ledgers = LEDGERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    ledgers.retain(|_, ledger| ledger.strong_count() > 0);
    let id = connection.stable_id();
    if let Some(ledger) = ledgers.get(&id).and_then(Weak::upgrade) {
        return ledger;
    }
    let ledger = Arc::new(AtomicU64::new(0));
    ledgers.insert(id, Arc::downgrade(&ledger));
    ledger
}

/// Longest sleep between two looks at the connection while waiting to send.
const POLL: Duration = Duration::from_millis(10);

/// How often a transfer logs its pacing (at debug level).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Most sending time saved up (beyond one slice).
const BURST: Duration = Duration::from_millis(5);

/// Now by tokio's clock (the one the pacer sleeps on, paused in tests), as a std instant.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Paces one bulk transfer's writes on a connection.
pub struct BulkPacer {
    connection: quinn::Connection,
    controller: RateController,
    live: Arc<AtomicU64>,
    /// Bytes the rate has allowed and not yet sent (at most a slice or [`BURST`]: a pause is
    /// not saved up).
    credit: f64,
    last: Instant,
    last_report: Option<Instant>,
}

impl BulkPacer {
    pub fn new(connection: &quinn::Connection, ceiling: Option<u64>) -> Self {
        Self {
            connection: connection.clone(),
            controller: RateController::new(ceiling, TARGET_QUEUEING),
            live: live_ledger(connection),
            credit: 0.0,
            last: now(),
            last_report: None,
        }
    }

    /// Waits until `bytes` more may be written.
    pub async fn before_send(&mut self, bytes: usize) {
        loop {
            let now = now();
            let rate = self.controller.on_sample(
                now,
                self.connection.rtt(),
                self.connection.stats().udp_tx.bytes,
                self.live.load(Ordering::Relaxed),
            );
            if self
                .last_report
                .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
            {
                self.last_report = Some(now);
                tracing::debug!(
                    rate_kib_s = rate / 1024.0,
                    rtt_ms = self.connection.rtt().as_secs_f64() * 1e3,
                    base_ms = self.controller.base().map(|b| b.as_secs_f64() * 1e3),
                    holding = self.controller.holding(now),
                    "bulk pacing"
                );
            }
            let elapsed = now.duration_since(self.last).as_secs_f64();
            self.last = now;
            // A timer wakes a millisecond or more late: at high rates the credit must cover
            // a few of those, or the timer, not the rate, would set the pace.
            let most = (SLICE.max(bytes) as f64).max(rate * BURST.as_secs_f64());
            self.credit = (self.credit + rate * elapsed).min(most);
            if self.credit >= bytes as f64 {
                self.credit -= bytes as f64;
                break;
            }
            let wait = Duration::from_secs_f64((bytes as f64 - self.credit) / rate);
            tokio::time::sleep(wait.min(POLL)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(80);

    /// Feeds `rounds` samples a round trip apart, with the wire keeping up with the rate.
    fn run(
        controller: &mut RateController,
        start: Instant,
        rounds: u32,
        rtt: impl Fn(f64) -> Duration,
    ) -> (Instant, u64) {
        let mut now = start;
        let mut wire = 0u64;
        for _ in 0..rounds {
            let rate = controller.rate();
            controller.on_sample(now, rtt(rate), wire, 0);
            wire += (rate * RTT.as_secs_f64()) as u64;
            now += RTT;
        }
        (now, wire)
    }

    #[test]
    fn grows_on_an_empty_queue_and_settles_where_the_queue_starts() {
        // A 1.25 MB/s bottleneck: above it, the queue grows by the excess each round trip.
        let capacity = 1_250_000.0;
        let queue_delay = |rate: f64| {
            let excess = ((rate - capacity) / capacity).max(0.0);
            RTT + Duration::from_secs_f64(excess * 0.2)
        };
        let mut controller = RateController::new(None, TARGET_QUEUEING);
        let start = Instant::now();
        run(&mut controller, start, 40, queue_delay);
        let rate = controller.rate();
        assert!(
            rate > 0.8 * capacity && rate < 1.3 * capacity,
            "settled at {rate:.0} B/s for a {capacity} B/s link"
        );
        assert_eq!(controller.base(), Some(RTT));
    }

    #[test]
    fn grows_when_slices_leave_in_bursts() {
        // 10 ms samples; a 16 KiB slice leaves only now and then, as at a low rate.
        let mut controller = RateController::new(None, TARGET_QUEUEING);
        let (mut now, mut wire, mut due) = (Instant::now(), 0u64, 0.0f64);
        let step = Duration::from_millis(10);
        for _ in 0..100 {
            let rate = controller.on_sample(now, Duration::from_millis(1), wire, 0);
            due += rate * step.as_secs_f64();
            let slices = (due / SLICE as f64).floor();
            wire += slices as u64 * SLICE as u64;
            due -= slices * SLICE as f64;
            now += step;
        }
        assert!(
            controller.rate() > 50.0 * START_RATE,
            "{}",
            controller.rate()
        );
    }

    #[test]
    fn a_queue_beyond_the_target_cuts_the_rate_and_random_loss_does_not() {
        let mut controller = RateController::new(None, TARGET_QUEUEING);
        let start = Instant::now();
        let (now, _) = run(&mut controller, start, 12, |_| RTT);
        let grown = controller.rate();
        assert!(
            grown > 4.0 * START_RATE,
            "no growth on an empty queue: {grown}"
        );
        // Someone else's traffic queues 100 ms: four times the target.
        run(&mut controller, now, 3, |_| {
            RTT + Duration::from_millis(100)
        });
        let cut = controller.rate();
        assert!(cut < grown / 4.0, "{grown} only cut to {cut}");
        assert!(cut >= MIN_RATE);
    }

    #[test]
    fn never_above_the_operators_cap_nor_far_ahead_of_delivery() {
        let mut capped = RateController::new(Some(50_000), TARGET_QUEUEING);
        run(&mut capped, Instant::now(), 30, |_| RTT);
        assert!(capped.rate() <= 50_000.0);

        // The wire carries nothing (a stalled peer): the rate stays near where it started.
        let mut stalled = RateController::new(None, TARGET_QUEUEING);
        let mut now = Instant::now();
        for _ in 0..30 {
            stalled.on_sample(now, RTT, 0, 0);
            now += RTT;
        }
        assert!(
            stalled.rate() <= START_RATE * (1.0 + GROWTH),
            "{}",
            stalled.rate()
        );
    }

    #[test]
    fn live_traffic_holds_bulk_back_until_a_round_trip_after_it_ends() {
        let mut controller = RateController::new(None, TARGET_QUEUEING);
        let start = Instant::now();
        let (now, wire) = run(&mut controller, start, 12, |_| RTT);
        let grown = controller.rate();
        // A heartbeat's worth of live bytes changes nothing...
        assert!(controller.on_sample(now, RTT, wire, 200) >= grown);
        assert!(!controller.holding(now));
        let grown = controller.rate();
        // ...a tile does: bulk drops to the minimum at once.
        let tile = now + Duration::from_millis(5);
        assert_eq!(controller.on_sample(tile, RTT, wire, 200 + 9_000), MIN_RATE);
        assert!(controller.holding(tile + RTT / 2));
        // No more live bytes: about a round trip later bulk is back at its rate, not cut.
        let after = tile + RTT + Duration::from_millis(1);
        let wire = wire + (grown * RTT.as_secs_f64()) as u64;
        let resumed = controller.on_sample(after, RTT, wire, 200 + 9_000);
        assert!(!controller.holding(after));
        assert!(resumed >= grown, "{resumed} < {grown}");
    }

    #[test]
    fn the_baseline_forgets_an_old_minimum() {
        let mut controller = RateController::new(None, TARGET_QUEUEING);
        let start = Instant::now();
        controller.on_sample(start, Duration::from_millis(20), 0, 0);
        let later = start + BASE_WINDOW + Duration::from_secs(1);
        controller.on_sample(later, Duration::from_millis(90), 0, 0);
        assert_eq!(controller.base(), Some(Duration::from_millis(20)));
        let much_later = later + BASE_WINDOW + Duration::from_secs(1);
        controller.on_sample(much_later, Duration::from_millis(90), 0, 0);
        assert_eq!(controller.base(), Some(Duration::from_millis(90)));
    }
}
