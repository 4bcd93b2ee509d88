//! Differential privacy for rounds, at the site level: each edge clips its update to an L2 norm
//! `C` and adds Gaussian noise before it leaves (so that it composes with secure aggregation: the
//! hub never holds a noiseless update), each of `n` participants adding `N(0, (z C)^2 / n)` so
//! that the sum carries `N(0, (z C)^2)` — the Gaussian mechanism with noise multiplier `z` on the
//! sum of clipped updates (DP-FedAvg, McMahan et al., ICLR 2018).
//!
//! The accountant tracks Rényi differential privacy (Mironov 2017) over integer orders: for the
//! Gaussian mechanism applied to a site sample drawn with probability `q`, the order-`a` RDP is
//! `log(A_a) / (a - 1)` with `A_a = sum_k C(a,k) (1-q)^(a-k) q^k exp((k^2 - k) / (2 z^2))`
//! (Mironov, Talwar and Zhang 2019, section 3.3), which is `a / (2 z^2)` when every site takes
//! part. Rounds add up order by order; `epsilon` converts to `(epsilon, delta)` by
//! `min_a RDP(a) + log(1/delta) / (a - 1)`. A network's budget is an epsilon at a delta: the hub
//! plans no round that would spend past it.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The Rényi orders tracked.
pub const ORDERS: std::ops::RangeInclusive<u32> = 2..=256;

/// Scales `delta` to at most `clip` in L2 norm, then adds Gaussian noise of standard deviation
/// `noise_multiplier * clip / sqrt(participants)` to every value. Returns the norm before
/// clipping (for the site's own record; it is not sent).
pub fn clip_and_noise(
    delta: &mut [f32],
    clip: f32,
    noise_multiplier: f32,
    participants: u32,
    rng: &mut impl Rng,
) -> f32 {
    let norm = super::aggregate::l2_norm(delta);
    if norm > clip && norm > 0.0 {
        let scale = clip / norm;
        delta.iter_mut().for_each(|v| *v *= scale);
    }
    let sd = f64::from(noise_multiplier) * f64::from(clip) / f64::from(participants.max(1)).sqrt();
    if sd > 0.0 {
        for v in delta.iter_mut() {
            *v += (gaussian(rng) * sd) as f32;
        }
    }
    norm
}

/// A standard normal sample (Box-Muller), from the injected RNG.
fn gaussian(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        hi
    } else {
        hi + (lo - hi).exp().ln_1p()
    }
}

fn ln_binomial(n: u32, k: u32) -> f64 {
    // ln n! - ln k! - ln (n-k)!, summed directly: n is at most a few hundred.
    let ln_fact = |m: u32| (1..=m).map(|i| f64::from(i).ln()).sum::<f64>();
    ln_fact(n) - ln_fact(k) - ln_fact(n - k)
}

/// Order-`order` RDP of one round: the Gaussian mechanism with `noise_multiplier`, sites
/// sampled with probability `q`.
pub fn rdp_of_round(q: f64, noise_multiplier: f64, order: u32) -> f64 {
    if noise_multiplier <= 0.0 {
        return f64::INFINITY;
    }
    if q >= 1.0 {
        return f64::from(order) / (2.0 * noise_multiplier * noise_multiplier);
    }
    if q <= 0.0 {
        return 0.0;
    }
    let a = f64::from(order);
    let mut log_a = f64::NEG_INFINITY;
    for k in 0..=order {
        let kf = f64::from(k);
        let term = ln_binomial(order, k)
            + (a - kf) * (1.0 - q).ln()
            + kf * q.ln()
            + (kf * kf - kf) / (2.0 * noise_multiplier * noise_multiplier);
        log_a = log_add(log_a, term);
    }
    log_a / (a - 1.0)
}

/// The privacy spent so far, order by order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyAccountant {
    /// RDP at each order of [`ORDERS`].
    pub rdp: Vec<f64>,
    pub rounds: u64,
}

impl Default for PrivacyAccountant {
    fn default() -> Self {
        Self {
            rdp: vec![0.0; ORDERS.count()],
            rounds: 0,
        }
    }
}

impl PrivacyAccountant {
    /// The RDP one more round would add.
    fn round_rdp(q: f64, noise_multiplier: f64) -> Vec<f64> {
        ORDERS
            .map(|order| rdp_of_round(q, noise_multiplier, order))
            .collect()
    }

    /// Records a round.
    pub fn spend(&mut self, q: f64, noise_multiplier: f64) {
        for (total, add) in self
            .rdp
            .iter_mut()
            .zip(Self::round_rdp(q, noise_multiplier))
        {
            *total += add;
        }
        self.rounds += 1;
    }

    /// Epsilon at `delta` for the RDP curve `rdp`.
    fn epsilon_of(rdp: &[f64], delta: f64) -> f64 {
        ORDERS
            .zip(rdp)
            .map(|(order, r)| r + (1.0 / delta).ln() / (f64::from(order) - 1.0))
            .fold(f64::INFINITY, f64::min)
    }

    /// The epsilon spent so far, at `delta`.
    pub fn epsilon(&self, delta: f64) -> f64 {
        Self::epsilon_of(&self.rdp, delta)
    }

    /// The epsilon one round alone costs, at `delta`.
    pub fn epsilon_of_one_round(q: f64, noise_multiplier: f64, delta: f64) -> f64 {
        Self::epsilon_of(&Self::round_rdp(q, noise_multiplier), delta)
    }

    /// Whether one more round keeps the total within `budget` at `delta`.
    pub fn can_afford(&self, q: f64, noise_multiplier: f64, budget: f64, delta: f64) -> bool {
        let mut next = self.clone();
        next.spend(q, noise_multiplier);
        next.epsilon(delta) <= budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Order-`a` RDP of the sampled Gaussian by numerical integration of its definition,
    /// `log E_{z ~ N(0, s^2)} [((1-q) + q exp((2z - 1) / (2 s^2)))^a] / (a - 1)`: a different
    /// road to the same number than the binomial sum above.
    fn rdp_by_integration(q: f64, s: f64, a: u32) -> f64 {
        let (lo, hi, steps) = (-40.0 * s, 40.0 * s + 20.0, 400_000);
        let h = (hi - lo) / f64::from(steps);
        let mut sum = 0.0;
        for i in 0..=steps {
            let z = lo + h * f64::from(i);
            // density * ratio^a, in logarithms: either alone overflows far out.
            let log_density =
                -z * z / (2.0 * s * s) - (s * (2.0 * std::f64::consts::PI).sqrt()).ln();
            let log_ratio = if q < 1.0 {
                log_add((1.0 - q).ln(), q.ln() + (2.0 * z - 1.0) / (2.0 * s * s))
            } else {
                (2.0 * z - 1.0) / (2.0 * s * s)
            };
            let weight = if i == 0 || i == steps { 0.5 } else { 1.0 };
            sum += weight * (log_density + f64::from(a) * log_ratio).exp();
        }
        (sum * h).ln() / (f64::from(a) - 1.0)
    }

    #[test]
    fn the_sampled_gaussian_rdp_matches_numerical_integration() {
        for (q, s, a) in [
            (0.1, 1.0, 2),
            (0.1, 1.1, 8),
            (0.5, 2.0, 16),
            (0.01, 0.8, 32),
            (1.0, 1.5, 10),
        ] {
            let ours = rdp_of_round(q, s, a);
            let integrated = rdp_by_integration(q, s, a);
            assert!(
                (ours - integrated).abs() <= 1e-6 * integrated.abs().max(1e-3),
                "q {q}, sigma {s}, order {a}: {ours} vs {integrated}"
            );
        }
    }

    #[test]
    fn full_participation_matches_the_closed_form() {
        // With q = 1, T rounds: min over real orders of T a / (2 s^2) + ln(1/d) / (a - 1) is
        // T / (2 s^2) + sqrt(2 T ln(1/d)) / s, at a = 1 + s sqrt(2 ln(1/d) / T) (about 7
        // here); the integer orders give at most a little more.
        let (s, rounds, delta) = (4.0f64, 10u32, 1e-5f64);
        let mut accountant = PrivacyAccountant::default();
        for _ in 0..rounds {
            accountant.spend(1.0, s);
        }
        let t = f64::from(rounds);
        let closed = t / (2.0 * s * s) + (2.0 * t * (1.0 / delta).ln()).sqrt() / s;
        let ours = accountant.epsilon(delta);
        assert!(
            ours >= closed - 1e-9 && ours <= closed * 1.01,
            "{ours} vs {closed}"
        );
        assert!(accountant.can_afford(1.0, s, ours * 1.1, delta));
        assert!(!accountant.can_afford(1.0, s, ours, delta));
    }

    #[test]
    fn clipping_bounds_the_update_and_noise_has_the_planned_spread() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut big = vec![3.0f32, 4.0];
        clip_and_noise(&mut big, 1.0, 0.0, 1, &mut rng);
        assert!((super::super::aggregate::l2_norm(&big) - 1.0).abs() < 1e-6);
        let mut zeros = vec![0f32; 200_000];
        clip_and_noise(&mut zeros, 2.0, 1.5, 4, &mut rng);
        let variance =
            zeros.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / zeros.len() as f64;
        let planned: f64 = 1.5 * 2.0 / 2.0;
        assert!(
            (variance.sqrt() - planned).abs() < 0.01,
            "{} vs {planned}",
            variance.sqrt()
        );
    }
}
