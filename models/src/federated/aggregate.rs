//! The hub's half of a round: the sites' updates (each a change to the global values, with its
//! number of training samples) checked, combined and applied.
//!
//! Every update is checked before any arithmetic: the right length, finite, a positive sample
//! count, and — when outlier refusal is on — a norm no more than `outlier_factor` times the
//! median norm of the round. A refused update is named with its site and reason and the round
//! goes on with the rest. Then, in order: optional norm clipping, the combining rule (FedAvg
//! weighted by samples, coordinate-wise median, or trimmed mean), and the server step (plain
//! addition, or the FedAdam / FedYogi server optimisers of Reddi et al., "Adaptive Federated
//! Optimization", ICLR 2021, whose moments persist between rounds in [`ServerState`]).
//!
//! With secure aggregation the hub only ever sees the sum of the (weighted) updates, so only
//! FedAvg and the server optimisers apply; median, trimmed mean and the outlier check need each
//! update on its own, and clipping must then happen at the edges (see `docs/FEDERATED.md`).

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// How the accepted updates are combined into one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum CombiningRule {
    /// Sample-weighted mean (McMahan et al. 2017).
    FedAvg,
    /// Coordinate-wise median (Yin et al. 2018): robust to a minority of arbitrary updates.
    Median,
    /// Coordinate-wise mean after dropping the `trim` largest and smallest values of each
    /// coordinate (the count, at most half of the updates minus one).
    TrimmedMean { trim: usize },
}

/// What the hub does with the combined update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "optimiser", rename_all = "kebab-case")]
pub enum ServerOptimiser {
    /// `global += combined` (FedAvg and FedProx).
    Plain,
    /// FedAvgM (Hsu et al. 2019): `v = momentum * v + combined; global += learning_rate * v`,
    /// which carries the direction of past rounds and helps sites whose labels differ.
    Momentum { learning_rate: f32, momentum: f32 },
    /// FedAdam.
    Adam {
        learning_rate: f32,
        beta1: f32,
        beta2: f32,
        tau: f32,
    },
    /// FedYogi: FedAdam with Yogi's additive second-moment update.
    Yogi {
        learning_rate: f32,
        beta1: f32,
        beta2: f32,
        tau: f32,
    },
}

impl ServerOptimiser {
    /// Reddi et al.'s defaults for FedAdam.
    pub fn adam() -> Self {
        Self::Adam {
            learning_rate: 0.01,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
        }
    }

    /// Reddi et al.'s defaults for FedYogi.
    pub fn yogi() -> Self {
        Self::Yogi {
            learning_rate: 0.01,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
        }
    }
}

/// A network's aggregation settings, recorded with every version a round makes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AggregationSettings {
    pub rule: CombiningRule,
    pub server: ServerOptimiser,
    /// Each update is scaled down to at most this L2 norm before combining.
    pub clip_norm: Option<f32>,
    /// Refuse an update whose norm exceeds this many times the round's median norm (needs at
    /// least three updates to have a meaningful median).
    pub outlier_factor: Option<f32>,
}

impl Default for AggregationSettings {
    fn default() -> Self {
        Self {
            rule: CombiningRule::FedAvg,
            server: ServerOptimiser::Plain,
            clip_norm: None,
            outlier_factor: Some(5.0),
        }
    }
}

/// One site's update: `global_after_local_training - global`, and how many samples made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientUpdate {
    pub site: String,
    pub delta: Vec<f32>,
    pub samples: u64,
}

/// An update the hub would not use, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Refusal {
    pub site: String,
    pub reason: String,
}

/// The server optimiser's moments, kept (durably, by the hub) from round to round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerState {
    pub first_moment: Vec<f32>,
    pub second_moment: Vec<f32>,
}

/// What a round's aggregation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub global: Vec<f32>,
    pub accepted: Vec<String>,
    pub refused: Vec<Refusal>,
    pub samples: u64,
    /// L2 norm of the combined update.
    pub combined_norm: f32,
}

pub fn l2_norm(values: &[f32]) -> f32 {
    values
        .iter()
        .map(|v| f64::from(*v) * f64::from(*v))
        .sum::<f64>()
        .sqrt() as f32
}

fn median_of(values: &mut [f32]) -> f32 {
    values.sort_by(f32::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The updates fit to combine, and the refusals with their reasons.
pub fn screen_updates<'a>(
    global_len: usize,
    updates: &'a [ClientUpdate],
    settings: &AggregationSettings,
) -> (Vec<&'a ClientUpdate>, Vec<Refusal>) {
    let mut refused = Vec::new();
    let mut fit: Vec<&ClientUpdate> = Vec::new();
    for update in updates {
        let reason = if update.delta.len() != global_len {
            Some(format!(
                "mis-shaped: {} values, the model has {global_len}",
                update.delta.len()
            ))
        } else if update.delta.iter().any(|v| !v.is_finite()) {
            Some("non-finite values".to_string())
        } else if update.samples == 0 {
            Some("no training samples".to_string())
        } else if fit.iter().any(|u| u.site == update.site) {
            Some("a second update from the same site".to_string())
        } else {
            None
        };
        match reason {
            Some(reason) => refused.push(Refusal {
                site: update.site.clone(),
                reason,
            }),
            None => fit.push(update),
        }
    }
    if let Some(factor) = settings.outlier_factor {
        if fit.len() >= 3 {
            let norms: Vec<f32> = fit.iter().map(|u| l2_norm(&u.delta)).collect();
            let median = median_of(&mut norms.clone());
            let mut kept = Vec::new();
            for (update, norm) in fit.into_iter().zip(norms) {
                if median > 0.0 && norm > factor * median {
                    refused.push(Refusal {
                        site: update.site.clone(),
                        reason: format!(
                            "an outlier: update norm {norm:.3e} is more than {factor} times the round's median {median:.3e}"
                        ),
                    });
                } else {
                    kept.push(update);
                }
            }
            fit = kept;
        }
    }
    (fit, refused)
}

/// Combines `updates` into a new global model from `global` under `settings`.
pub fn aggregate(
    global: &[f32],
    updates: &[ClientUpdate],
    settings: &AggregationSettings,
    state: &mut ServerState,
) -> Result<Aggregate, ModelError> {
    let (fit, refused) = screen_updates(global.len(), updates, settings);
    if fit.is_empty() {
        return Err(ModelError::NoUsableUpdates(
            refused
                .iter()
                .map(|r| format!("{}: {}", r.site, r.reason))
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    let deltas: Vec<std::borrow::Cow<'_, [f32]>> = fit
        .iter()
        .map(|update| match settings.clip_norm {
            Some(clip) => {
                let norm = l2_norm(&update.delta);
                if norm > clip {
                    let scale = clip / norm;
                    std::borrow::Cow::Owned(update.delta.iter().map(|v| v * scale).collect())
                } else {
                    std::borrow::Cow::Borrowed(update.delta.as_slice())
                }
            }
            None => std::borrow::Cow::Borrowed(update.delta.as_slice()),
        })
        .collect();
    let samples: u64 = fit.iter().map(|u| u.samples).sum();
    let combined = combine(&deltas, &fit, settings.rule, global.len())?;
    let global = apply(global, &combined, settings.server, state);
    Ok(Aggregate {
        global,
        accepted: fit.iter().map(|u| u.site.clone()).collect(),
        refused,
        samples,
        combined_norm: l2_norm(&combined),
    })
}

fn combine(
    deltas: &[std::borrow::Cow<'_, [f32]>],
    fit: &[&ClientUpdate],
    rule: CombiningRule,
    len: usize,
) -> Result<Vec<f32>, ModelError> {
    let mut combined = vec![0f32; len];
    match rule {
        CombiningRule::FedAvg => {
            let total: f64 = fit.iter().map(|u| u.samples as f64).sum();
            for (delta, update) in deltas.iter().zip(fit) {
                let weight = (update.samples as f64 / total) as f32;
                for (c, d) in combined.iter_mut().zip(delta.iter()) {
                    *c += weight * d;
                }
            }
        }
        CombiningRule::Median | CombiningRule::TrimmedMean { .. } => {
            let trim = match rule {
                CombiningRule::TrimmedMean { trim } => trim,
                _ => 0,
            };
            if 2 * trim >= deltas.len() {
                return Err(ModelError::NoUsableUpdates(format!(
                    "a trimmed mean dropping {trim} from each end needs more than {} updates",
                    2 * trim
                )));
            }
            let mut column = vec![0f32; deltas.len()];
            for (i, c) in combined.iter_mut().enumerate() {
                for (slot, delta) in column.iter_mut().zip(deltas) {
                    *slot = delta[i];
                }
                *c = if matches!(rule, CombiningRule::Median) {
                    median_of(&mut column)
                } else {
                    column.sort_by(f32::total_cmp);
                    let kept = &column[trim..column.len() - trim];
                    kept.iter().sum::<f32>() / kept.len() as f32
                };
            }
        }
    }
    Ok(combined)
}

fn apply(
    global: &[f32],
    combined: &[f32],
    server: ServerOptimiser,
    state: &mut ServerState,
) -> Vec<f32> {
    let (learning_rate, beta1, beta2, tau, yogi) = match server {
        ServerOptimiser::Plain => {
            return global.iter().zip(combined).map(|(g, d)| g + d).collect();
        }
        ServerOptimiser::Momentum {
            learning_rate,
            momentum,
        } => {
            if state.first_moment.len() != global.len() {
                state.first_moment = vec![0.0; global.len()];
            }
            return global
                .iter()
                .zip(combined)
                .zip(state.first_moment.iter_mut())
                .map(|((g, d), v)| {
                    *v = momentum * *v + d;
                    g + learning_rate * *v
                })
                .collect();
        }
        ServerOptimiser::Adam {
            learning_rate,
            beta1,
            beta2,
            tau,
        } => (learning_rate, beta1, beta2, tau, false),
        ServerOptimiser::Yogi {
            learning_rate,
            beta1,
            beta2,
            tau,
        } => (learning_rate, beta1, beta2, tau, true),
    };
    if state.first_moment.len() != global.len() {
        state.first_moment = vec![0.0; global.len()];
        // Reddi et al. start the second moment at tau^2.
        state.second_moment = vec![tau * tau; global.len()];
    }
    let mut next = Vec::with_capacity(global.len());
    for (i, (g, d)) in global.iter().zip(combined).enumerate() {
        let m = beta1 * state.first_moment[i] + (1.0 - beta1) * d;
        let square = d * d;
        let v_old = state.second_moment[i];
        let v = if yogi {
            v_old - (1.0 - beta2) * square * (v_old - square).signum()
        } else {
            beta2 * v_old + (1.0 - beta2) * square
        };
        state.first_moment[i] = m;
        state.second_moment[i] = v;
        next.push(g + learning_rate * m / (v.max(0.0).sqrt() + tau));
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(site: &str, delta: Vec<f32>, samples: u64) -> ClientUpdate {
        ClientUpdate {
            site: site.into(),
            delta,
            samples,
        }
    }

    #[test]
    fn fedavg_weights_by_samples() {
        let global = vec![1.0, 1.0];
        let updates = vec![
            update("a", vec![1.0, 0.0], 3),
            update("b", vec![0.0, 1.0], 1),
        ];
        let out = aggregate(
            &global,
            &updates,
            &AggregationSettings::default(),
            &mut ServerState::default(),
        )
        .unwrap();
        assert_eq!(out.global, vec![1.75, 1.25]);
        assert_eq!(out.samples, 4);
    }

    #[test]
    fn bad_updates_are_refused_by_name_and_the_rest_aggregated() {
        let global = vec![0.0; 3];
        let updates = vec![
            update("good-1", vec![0.1, 0.1, 0.1], 10),
            update("good-2", vec![0.1, 0.2, 0.1], 10),
            update("good-3", vec![0.2, 0.1, 0.1], 10),
            update("short", vec![0.1, 0.1], 10),
            update("nan", vec![0.1, f32::NAN, 0.1], 10),
            update("empty", vec![0.1, 0.1, 0.1], 0),
            update("huge", vec![-10.0, -10.0, -10.0], 10),
            update("good-1", vec![0.1, 0.1, 0.1], 10),
        ];
        let out = aggregate(
            &global,
            &updates,
            &AggregationSettings::default(),
            &mut ServerState::default(),
        )
        .unwrap();
        assert_eq!(out.accepted, vec!["good-1", "good-2", "good-3"]);
        let reason = |site: &str| {
            out.refused
                .iter()
                .find(|r| r.site == site)
                .map(|r| r.reason.clone())
                .unwrap()
        };
        assert!(reason("short").contains("mis-shaped"));
        assert!(reason("nan").contains("non-finite"));
        assert!(reason("empty").contains("no training samples"));
        assert!(reason("huge").contains("outlier"));
        assert!(out.refused.iter().any(|r| r.reason.contains("same site")));
        let all_bad = vec![update("nan", vec![f32::NAN; 3], 1)];
        let error = aggregate(
            &global,
            &all_bad,
            &AggregationSettings::default(),
            &mut ServerState::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("nan: non-finite"), "{error}");
    }

    #[test]
    fn median_and_trimmed_mean_ignore_one_flipped_update() {
        let global = vec![0.0; 2];
        let updates = vec![
            update("a", vec![1.0, 2.0], 1),
            update("b", vec![1.2, 2.2], 1),
            update("c", vec![0.8, 1.8], 1),
            update("evil", vec![-10.0, -20.0], 1),
        ];
        let plain = AggregationSettings {
            outlier_factor: None,
            ..Default::default()
        };
        let averaged = aggregate(&global, &updates, &plain, &mut ServerState::default()).unwrap();
        assert!(
            averaged.global[0] < 0.0,
            "FedAvg is dragged: {:?}",
            averaged.global
        );
        for rule in [
            CombiningRule::Median,
            CombiningRule::TrimmedMean { trim: 1 },
        ] {
            let settings = AggregationSettings { rule, ..plain };
            let out = aggregate(&global, &updates, &settings, &mut ServerState::default()).unwrap();
            assert!(
                (out.global[0] - 1.0).abs() < 0.15,
                "{rule:?}: {:?}",
                out.global
            );
            assert!(
                (out.global[1] - 2.0).abs() < 0.15,
                "{rule:?}: {:?}",
                out.global
            );
        }
    }

    #[test]
    fn clipping_bounds_each_update() {
        let settings = AggregationSettings {
            clip_norm: Some(1.0),
            outlier_factor: None,
            ..Default::default()
        };
        let out = aggregate(
            &[0.0, 0.0],
            &[update("a", vec![30.0, 40.0], 1)],
            &settings,
            &mut ServerState::default(),
        )
        .unwrap();
        assert!((l2_norm(&out.global) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn fedadam_and_fedyogi_move_along_the_update_and_keep_their_moments() {
        for server in [ServerOptimiser::adam(), ServerOptimiser::yogi()] {
            let settings = AggregationSettings {
                server,
                ..Default::default()
            };
            let mut state = ServerState::default();
            let mut global = vec![0.0f32; 2];
            for _ in 0..3 {
                global = aggregate(
                    &global,
                    &[update("a", vec![0.5, -0.5], 1)],
                    &settings,
                    &mut state,
                )
                .unwrap()
                .global;
            }
            assert!(global[0] > 0.0 && global[1] < 0.0, "{server:?}: {global:?}");
            // Each step is lr * m / (sqrt(v) + tau) with m / sqrt(v) below 2 in the first
            // rounds: three steps stay within 6 lr, whatever the update's size.
            assert!(global[0] < 0.06 + 1e-6, "{server:?}: {global:?}");
            assert_eq!(state.first_moment.len(), 2);
        }
    }
}
