//! Login rate limiting that an attacker cannot aim at somebody else.
//!
//! Locking a user name after a few failures from anywhere (as this node first did) lets anyone
//! who can reach the login page lock the admin out; locking an address locks out a whole
//! hospital behind one proxy. So failures are counted three ways, each with its own remedy:
//!
//! - per **user name and address pair**: a few free failures, then each attempt waits twice as
//!   long as the one before (1 s, 2 s, 4 s ... up to the window). Guessing at `admin` from one
//!   address slows only that address's attempts at `admin`.
//! - per **address**, any names: a spray of many names from one address waits out the window.
//! - per **user name**, any address: many failures (a guessing botnet) space attempts at that
//!   name to one per few seconds, a slowdown the real user barely notices, never a lock-out.
//!
//! A pair that signed in successfully in the last [`TRUSTED_FOR`] (the admin at their own desk) is
//! exempt from the address and user-name limits: a spray or a botnet cannot keep them out.
//!
//! User names are keyed by their hash (a name typed at the login page can be megabytes), and
//! the table is bounded: past [`MAX_KEYS`], new names and pairs are no longer tracked and the
//! per-address limit carries on alone.
//!
//! The address is the client's as the trusted reverse proxy saw it (`crate::proxy`), not the
//! proxy's. Kept in memory (a restart forgives, which is fine for a node that restarts
//! rarely); time is passed in so tests need not wait.
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

/// Failures remembered per key (enough to reach the longest delay).
const MAX_REMEMBERED: usize = 64;

/// Keys tracked at most; beyond, only addresses are.
const MAX_KEYS: usize = 100_000;

/// How long a successful sign-in exempts its user name and address pair.
pub const TRUSTED_FOR: Duration = Duration::from_secs(30 * 86_400);

/// The limits; [`Default`] is what the nodes use.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failures of one user name from one address before attempts wait.
    pub free_failures_per_pair: usize,
    /// Failures from one address, any names, before it waits out the window.
    pub max_failures_per_address: usize,
    /// Failures of one user name, any addresses, before its attempts are spaced.
    pub user_slowdown_after: usize,
    /// The spacing then.
    pub user_spacing: Duration,
    /// How long a failure counts.
    pub window: Duration,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self {
            free_failures_per_pair: 3,
            max_failures_per_address: 30,
            user_slowdown_after: 20,
            user_spacing: Duration::from_secs(5),
            window: Duration::from_secs(15 * 60),
        }
    }
}

pub struct LoginThrottle {
    limits: ThrottleLimits,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
    /// Pairs that signed in, and when (bounded like the failures).
    trusted: Mutex<HashMap<String, Instant>>,
    /// Permits for password verification.
    pub verifications: tokio::sync::Semaphore,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(ThrottleLimits::default())
    }
}

/// The pair's, the address's and the user name's keys (the name by its hash: a few bytes
/// whatever was typed).
fn keys(username: &str, address: &str) -> [String; 3] {
    let name = blake3::hash(username.as_bytes()).to_hex();
    let name = &name[..32];
    [
        format!("pair:{name}\n{address}"),
        format!("addr:{address}"),
        format!("user:{name}"),
    ]
}

impl LoginThrottle {
    pub fn new(limits: ThrottleLimits) -> Self {
        Self {
            limits,
            failures: Mutex::new(HashMap::new()),
            trusted: Mutex::new(HashMap::new()),
            verifications: tokio::sync::Semaphore::new(MAX_CONCURRENT_VERIFICATIONS),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Instant>>> {
        // Every critical section leaves the map consistent, so a poisoned lock is still usable.
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long the key's next attempt must still wait, given its failures in the window.
    fn wait(&self, kind: usize, times: &[Instant], now: Instant) -> Option<Duration> {
        let limits = &self.limits;
        let last = *times.last()?;
        let since_last = now.saturating_duration_since(last);
        let needed = match kind {
            0 if times.len() >= limits.free_failures_per_pair => {
                let doublings = (times.len() - limits.free_failures_per_pair).min(30) as u32;
                Duration::from_secs(1u64 << doublings).min(limits.window)
            }
            1 if times.len() >= limits.max_failures_per_address => {
                let oldest = times.first().copied().unwrap_or(now);
                return Some(
                    limits
                        .window
                        .saturating_sub(now.saturating_duration_since(oldest)),
                )
                .filter(|wait| !wait.is_zero());
            }
            2 if times.len() >= limits.user_slowdown_after => limits.user_spacing,
            _ => return None,
        };
        Some(needed.saturating_sub(since_last)).filter(|wait| !wait.is_zero())
    }

    /// Counts an attempt, or refuses it with how long to wait. A counted attempt stays counted
    /// as a failure unless [`LoginThrottle::succeeded`] is called.
    pub fn begin(&self, username: &str, address: &str, now: Instant) -> Result<(), Duration> {
        let window = self.limits.window;
        let mut failures = self.failures();
        if failures.len() > SWEEP_ABOVE {
            failures.retain(|_, times| {
                times
                    .last()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
            });
        }
        let keys = keys(username, address);
        let trusted = self
            .trusted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&keys[0])
            .is_some_and(|at| now.saturating_duration_since(*at) < TRUSTED_FOR);
        let mut wait: Option<Duration> = None;
        for (kind, key) in keys.iter().enumerate() {
            // A pair that signed in before is held only by its own failures.
            if trusted && kind > 0 {
                continue;
            }
            let Some(times) = failures.get_mut(key) else {
                continue;
            };
            times.retain(|t| now.saturating_duration_since(*t) < window);
            if let Some(this) = self.wait(kind, times, now) {
                wait = Some(wait.map_or(this, |w| w.max(this)));
            }
        }
        if let Some(wait) = wait {
            return Err(wait);
        }
        let full = failures.len() >= MAX_KEYS;
        for key in keys {
            if full && !key.starts_with("addr:") && !failures.contains_key(&key) {
                continue;
            }
            let times = failures.entry(key).or_default();
            times.push(now);
            if times.len() > MAX_REMEMBERED {
                times.remove(0);
            }
        }
        Ok(())
    }

    /// The attempt succeeded: the pair's and the user name's failures are forgiven, and this
    /// attempt is no longer counted against the address.
    pub fn succeeded(&self, username: &str, address: &str) {
        let [pair, addr, user] = keys(username, address);
        {
            let mut failures = self.failures();
            failures.remove(&pair);
            failures.remove(&user);
            if let Some(times) = failures.get_mut(&addr) {
                times.pop();
            }
        }
        let mut trusted = self.trusted.lock().unwrap_or_else(|p| p.into_inner());
        if trusted.len() >= MAX_KEYS {
            let now = Instant::now();
            trusted.retain(|_, at| now.saturating_duration_since(*at) < TRUSTED_FOR);
        }
        if trusted.len() < MAX_KEYS {
            trusted.insert(pair, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ThrottleLimits {
        ThrottleLimits {
            free_failures_per_pair: 3,
            max_failures_per_address: 10,
            user_slowdown_after: 6,
            user_spacing: Duration::from_secs(5),
            window: Duration::from_secs(600),
        }
    }

    #[test]
    fn a_pair_waits_longer_after_each_failure_and_other_addresses_are_untouched() {
        let throttle = LoginThrottle::new(limits());
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(
                throttle.begin("admin", "1.2.3.4", t0),
                Ok(()),
                "attempt {i}"
            );
        }
        assert_eq!(
            throttle.begin("admin", "1.2.3.4", t0),
            Err(Duration::from_secs(1))
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(throttle.begin("admin", "1.2.3.4", t1), Ok(()));
        assert_eq!(
            throttle.begin("admin", "1.2.3.4", t1 + Duration::from_millis(1500)),
            Err(Duration::from_millis(500)),
            "then 2 s"
        );
        // The real admin, elsewhere, signs in at once; so does another user at that address.
        assert_eq!(throttle.begin("admin", "10.0.0.7", t1), Ok(()));
        throttle.succeeded("admin", "10.0.0.7");
        assert_eq!(throttle.begin("wang", "1.2.3.4", t1), Ok(()));
        // The window forgives.
        assert_eq!(
            throttle.begin("admin", "1.2.3.4", t0 + Duration::from_secs(601)),
            Ok(())
        );
    }

    #[test]
    fn a_spray_from_one_address_waits_and_a_botnet_only_slows_a_name() {
        let throttle = LoginThrottle::new(limits());
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(throttle.begin(&format!("user{i}"), "6.6.6.6", t0), Ok(()));
        }
        assert!(throttle.begin("user99", "6.6.6.6", t0).is_err());
        assert_eq!(throttle.begin("user99", "7.7.7.7", t0), Ok(()));

        let throttle = LoginThrottle::new(limits());
        for i in 0..6 {
            assert_eq!(throttle.begin("admin", &format!("bot{i}"), t0), Ok(()));
        }
        let refused = throttle.begin("admin", "10.0.0.7", t0 + Duration::from_secs(1));
        assert_eq!(refused, Err(Duration::from_secs(4)), "spaced, not locked");
        assert_eq!(
            throttle.begin("admin", "10.0.0.7", t0 + Duration::from_secs(5)),
            Ok(())
        );
    }

    #[test]
    fn a_desk_that_signed_in_before_is_not_kept_out_by_a_spray_or_a_botnet() {
        let throttle = LoginThrottle::new(limits());
        let t0 = Instant::now();
        assert_eq!(throttle.begin("admin", "10.0.0.7", t0), Ok(()));
        throttle.succeeded("admin", "10.0.0.7");
        // A botnet guesses at admin from many addresses, and one of them sprays the admin's
        // own address (behind the same NAT).
        for i in 0..6 {
            let _ = throttle.begin("admin", &format!("bot{i}"), t0);
        }
        for i in 0..10 {
            let _ = throttle.begin(&format!("user{i}"), "10.0.0.7", t0);
        }
        assert!(
            throttle.begin("wang", "10.0.0.7", t0).is_err(),
            "the address is sprayed"
        );
        assert_eq!(
            throttle.begin("admin", "10.0.0.7", t0),
            Ok(()),
            "the admin at their own desk is not"
        );
        // A name of megabytes costs a hash, not megabytes.
        let long = "x".repeat(1 << 20);
        let _ = throttle.begin(&long, "1.1.1.1", t0);
        assert!(throttle.failures().keys().all(|k| k.len() < 100));
    }

    #[test]
    fn attempts_count_before_they_are_checked_and_success_forgives() {
        let throttle = LoginThrottle::new(limits());
        let t0 = Instant::now();
        // Three attempts in flight at once use up the allowance; a fourth is refused at once.
        for _ in 0..3 {
            assert!(throttle.begin("li", "a", t0).is_ok());
        }
        assert!(throttle.begin("li", "a", t0).is_err());
        throttle.succeeded("li", "a");
        assert!(throttle.begin("li", "a", t0).is_ok());
    }

    #[test]
    fn a_spray_of_user_names_does_not_grow_memory_without_bound() {
        let throttle = LoginThrottle::new(ThrottleLimits {
            max_failures_per_address: usize::MAX,
            window: Duration::from_secs(60),
            ..limits()
        });
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
