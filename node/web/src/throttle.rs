//! Login rate limiting: too many failed logins for a user name, or from one address, lock further
//! attempts for a while. Kept in memory (a restart forgives, which is fine for a node that
//! restarts rarely); time is passed in so tests need not wait.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LoginThrottle {
    max_failures_per_user: usize,
    max_failures_per_address: usize,
    window: Duration,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(5, 20, Duration::from_secs(15 * 60))
    }
}

impl LoginThrottle {
    pub fn new(
        max_failures_per_user: usize,
        max_failures_per_address: usize,
        window: Duration,
    ) -> Self {
        Self {
            max_failures_per_user,
            max_failures_per_address,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(wait)` when this attempt must be refused.
    pub fn check(&self, username: &str, address: &str, now: Instant) -> Option<Duration> {
        let mut failures = self.failures.lock().ok()?;
        let mut wait = None;
        for (key, limit) in [
            (format!("user:{username}"), self.max_failures_per_user),
            (format!("addr:{address}"), self.max_failures_per_address),
        ] {
            let Some(times) = failures.get_mut(&key) else {
                continue;
            };
            times.retain(|t| now.saturating_duration_since(*t) < self.window);
            if times.len() >= limit {
                let oldest = times.first().copied().unwrap_or(now);
                let remaining = self
                    .window
                    .saturating_sub(now.saturating_duration_since(oldest));
                wait = Some(wait.map_or(remaining, |w: Duration| w.max(remaining)));
            }
        }
        wait
    }

    pub fn record_failure(&self, username: &str, address: &str, now: Instant) {
        if let Ok(mut failures) = self.failures.lock() {
            for key in [format!("user:{username}"), format!("addr:{address}")] {
                failures.entry(key).or_default().push(now);
            }
        }
    }

    pub fn record_success(&self, username: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&format!("user:{username}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_repeated_failures_and_forgives_after_the_window() {
        let throttle = LoginThrottle::new(3, 10, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(throttle.check("li", "1.2.3.4", t0), None, "attempt {i}");
            throttle.record_failure("li", "1.2.3.4", t0);
        }
        assert!(
            throttle.check("li", "5.6.7.8", t0).is_some(),
            "per user, from any address"
        );
        assert_eq!(
            throttle.check("wang", "1.2.3.4", t0),
            None,
            "other users unaffected"
        );
        assert_eq!(
            throttle.check("li", "1.2.3.4", t0 + Duration::from_secs(61)),
            None
        );
    }
}
