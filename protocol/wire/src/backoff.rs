//! Reconnect back-off: exponential, capped, with jitter from an injected, seeded RNG.
//!
//! When a hub restarts, dozens of edges lose the link at the same instant; without jitter they
//! would all redial in lock-step. "Equal jitter" keeps at least half of the exponential delay (so
//! a dead hub is not hammered) and spreads the other half at random.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration, seed: u64) -> Self {
        Self {
            base,
            max,
            attempt: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The delay before the next attempt; each call counts one failed attempt.
    pub fn next_delay(&mut self) -> Duration {
        let exponent = self.attempt.min(20);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.base.saturating_mul(1u32 << exponent).min(self.max);
        let half = ceiling / 2;
        let jitter_ms = self.rng.gen_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// Call after a successful connection: the next failure starts from the base delay again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10), 7);
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(200));
        for delay in &delays {
            assert!(*delay <= Duration::from_secs(10));
        }
        assert!(
            delays[11] >= Duration::from_secs(5),
            "capped delay keeps at least half"
        );
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(200));
    }

    #[test]
    fn different_seeds_spread_the_herd() {
        let first: Vec<Duration> = (0..50)
            .map(|seed| {
                Backoff::new(Duration::from_secs(1), Duration::from_secs(60), seed).next_delay()
            })
            .collect();
        let distinct: std::collections::HashSet<_> = first.iter().collect();
        assert!(
            distinct.len() > 25,
            "jitter spreads 50 edges: {} distinct delays",
            distinct.len()
        );
    }
}
