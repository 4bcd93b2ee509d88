//! Login rate limiting: too many failed logins for a user name, or from one address, lock further
//! attempts for a while. Kept in memory (a restart forgives, which is fine for a node that
//! restarts rarely); time is passed in so tests need not wait.
//!
//! An attempt is counted *before* the password is checked and forgiven only if it succeeds, so
//! that parallel requests cannot all slip past the limit while their hashes are computed; and at
//! most [`MAX_CONCURRENT_VERIFICATIONS`] argon2 verifications (19 MiB each) run at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Password verifications allowed to run at the same time (the node has two cores).
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 2;

/// Keys remembered before expired ones are swept (bounds memory under a spray of user names).
const SWEEP_ABOVE: usize = 10_000;

pub struct LoginThrottle {
    max_failures_per_user: usize,
    max_failures_per_address: usize,
    window: Duration,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
    /// Permits for password verification.
    pub verifications: tokio::sync::Semaphore,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(5, 20, Duration::from_secs(15 * 60))
    }
}

fn keys(username: &str, address: &str) -> [String; 2] {
    [format!("user:{username}"), format!("addr:{address}")]
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
            verifications: tokio::sync::Semaphore::new(MAX_CONCURRENT_VERIFICATIONS),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Instant>>> {
        // Every critical section leaves the map consistent, so a poisoned lock is still usable.
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts an attempt, or refuses it with how long to wait. A counted attempt stays counted
    /// as a failure unless [`LoginThrottle::succeeded`] is called.
    pub fn begin(&self, username: &str, address: &str, now: Instant) -> Result<(), Duration> {
        let mut failures = self.failures();
        if failures.len() > SWEEP_ABOVE {
            failures.retain(|_, times| {
                times
                    .last()
                    .is_some_and(|t| now.saturating_duration_since(*t) < self.window)
            });
        }
        let limits = [self.max_failures_per_user, self.max_failures_per_address];
        let mut wait: Option<Duration> = None;
        for (key, limit) in keys(username, address).iter().zip(limits) {
            let Some(times) = failures.get_mut(key) else {
                continue;
            };
            times.retain(|t| now.saturating_duration_since(*t) < self.window);
            if times.len() >= limit {
                let oldest = times.first().copied().unwrap_or(now);
                let remaining = self
                    .window
                    .saturating_sub(now.saturating_duration_since(oldest));
                wait = Some(wait.map_or(remaining, |w| w.max(remaining)));
            }
        }
        if let Some(wait) = wait {
            return Err(wait);
        }
        for key in keys(username, address) {
            failures.entry(key).or_default().push(now);
        }
        Ok(())
    }

    /// The attempt succeeded: the user's failures are forgiven, and this attempt is no longer
    /// counted against the address.
    pub fn succeeded(&self, username: &str, address: &str) {
        let mut failures = self.failures();
        let [user, addr] = keys(username, address);
        failures.remove(&user);
        if let Some(times) = failures.get_mut(&addr) {
            times.pop();
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
            assert_eq!(throttle.begin("li", "1.2.3.4", t0), Ok(()), "attempt {i}");
        }
        assert!(
            throttle.begin("li", "5.6.7.8", t0).is_err(),
            "per user, from any address"
        );
        assert_eq!(
            throttle.begin("wang", "1.2.3.4", t0),
            Ok(()),
            "other users unaffected"
        );
        assert_eq!(
            throttle.begin("li", "1.2.3.4", t0 + Duration::from_secs(61)),
            Ok(())
        );
    }

    #[test]
    fn attempts_count_before_they_are_checked_and_success_forgives() {
        let throttle = LoginThrottle::new(2, 10, Duration::from_secs(60));
        let t0 = Instant::now();
        // Two attempts in flight at once use up the allowance; a third is refused at once.
        assert!(throttle.begin("li", "a", t0).is_ok());
        assert!(throttle.begin("li", "a", t0).is_ok());
        assert!(throttle.begin("li", "a", t0).is_err());
        throttle.succeeded("li", "a");
        assert!(throttle.begin("li", "a", t0).is_ok());
    }

    #[test]
    fn a_spray_of_user_names_does_not_grow_memory_without_bound() {
        let throttle = LoginThrottle::new(5, usize::MAX, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(SWEEP_ABOVE + 10) {
            let _ = throttle.begin(&format!("user{i}"), "a", t0);
        }
        let _ = throttle.begin("late", "b", t0 + Duration::from_secs(120));
        assert!(
            throttle.failures().len() < 10,
            "{}",
            throttle.failures().len()
        );
    }
}
