//! Federated rounds crossing the link: the hub's task to an edge, and the edge's update.
//!
//! Both travel as content-addressed bulk transfers (durable outbox at the edge, resumable,
//! behind live consult traffic), told apart by their labels. A task names the round's base
//! model by digest — the version the edge already runs, released through the registry — so no
//! weights travel to the edge for a round. An update is a small JSON header and the model's
//! change as little-endian numbers: no tile, slide, label or patient field exists in either.
//! The hub takes the sender's site from its verified certificate, never from the header.

use serde::{Deserialize, Serialize};

use crate::WireError;

/// The transfer label of a [`RoundTask`] (hub to edge).
pub const ROUND_TASK_LABEL: &str = "round-task";
/// The transfer label of an update (edge to hub): [`UpdateHeader`] and the values.
pub const ROUND_UPDATE_LABEL: &str = "round-update";
/// Most bytes of a task.
pub const MAX_TASK_BYTES: usize = 16 * 1024;
/// Most bytes of an update (header and values): 64 MiB, sixteen million f32 values.
pub const MAX_UPDATE_BYTES: usize = 64 << 20;
const MAX_HEADER_BYTES: usize = 4096;

/// How an update's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpdateEncoding {
    /// 4 bytes a value.
    F32,
    /// IEEE half precision, 2 bytes a value.
    F16,
    /// One byte a value, per-tensor scale: the values are preceded by one f32 scale per tensor.
    Int8,
    /// Secure aggregation: the sample-weighted values in fixed point plus masks, 8 bytes a
    /// value (`grassroots-secagg`); meaningless to the hub until summed and unmasked.
    Masked,
}

/// What the hub asks an edge to do in a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoundTask {
    pub round: u64,
    /// BLAKE3 of the base model's package: the edge trains from it only if it runs it.
    pub base_digest: String,
    /// After this (RFC 3339) the hub aggregates without the edge.
    pub deadline: String,
    pub epochs: u32,
    pub batch: u32,
    pub learning_rate: f64,
    /// FedProx's mu (0: FedAvg's local training).
    pub proximal_mu: f32,
    pub seed: u64,
    pub encoding: UpdateEncoding,
    /// Differential privacy at the edge: clip the update to this L2 norm, then add Gaussian
    /// noise of `noise_multiplier * clip_norm / sqrt(participants)` per value.
    pub clip_norm: Option<f32>,
    pub noise_multiplier: Option<f32>,
    pub participants: u32,
    /// Secure aggregation: the edge advertises round keys and sends a masked update
    /// (`grassroots-secagg`); absent, the update travels in `encoding`.
    #[serde(default)]
    pub secure_aggregation: bool,
}

fn malformed(what: impl Into<String>) -> WireError {
    WireError::Malformed(what.into())
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl RoundTask {
    pub fn from_json(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > MAX_TASK_BYTES {
            return Err(malformed("a round task that is too long"));
        }
        let task: Self =
            serde_json::from_slice(bytes).map_err(|e| malformed(format!("round task: {e}")))?;
        let sane = is_digest(&task.base_digest)
            && (1..=100).contains(&task.epochs)
            && (1..=4096).contains(&task.batch)
            && task.learning_rate.is_finite()
            && task.learning_rate > 0.0
            && task.learning_rate < 1.0
            && task.proximal_mu.is_finite()
            && task.proximal_mu >= 0.0
            && task.clip_norm.is_none_or(|c| c.is_finite() && c > 0.0)
            && task
                .noise_multiplier
                .is_none_or(|n| n.is_finite() && n >= 0.0)
            && (1..=10_000).contains(&task.participants)
            && task.deadline.len() <= 40;
        if !sane {
            return Err(malformed("round task: a figure out of range"));
        }
        Ok(task)
    }
}

/// What precedes an update's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateHeader {
    pub round: u64,
    pub base_digest: String,
    /// Training samples behind the update (FedAvg's weight).
    pub samples: u64,
    pub mean_loss: f32,
    pub encoding: UpdateEncoding,
    /// Number of values, and the tensor sizes (for int8's per-tensor scales).
    pub values: u64,
    pub tensor_sizes: Vec<u64>,
    /// Seconds the local training took, for the round's phase times.
    pub training_seconds: f64,
}

/// Header, a newline, the values' bytes.
pub fn encode_update(header: &UpdateHeader, payload: &[u8]) -> Vec<u8> {
    // A plain struct of numbers and strings: serialising it cannot fail.
    let mut bytes = serde_json::to_vec(header).unwrap_or_default();
    bytes.push(b'\n');
    bytes.extend_from_slice(payload);
    bytes
}

/// Splits and checks an update: the header's figures, and the payload's length against them.
pub fn decode_update(bytes: &[u8]) -> Result<(UpdateHeader, &[u8]), WireError> {
    if bytes.len() > MAX_UPDATE_BYTES {
        return Err(malformed(format!("an update of {} bytes", bytes.len())));
    }
    let end = bytes
        .iter()
        .take(MAX_HEADER_BYTES)
        .position(|b| *b == b'\n')
        .ok_or_else(|| malformed("an update without a header"))?;
    let header: UpdateHeader = serde_json::from_slice(&bytes[..end])
        .map_err(|e| malformed(format!("update header: {e}")))?;
    let payload = &bytes[end + 1..];
    if !is_digest(&header.base_digest) || !header.mean_loss.is_finite() {
        return Err(malformed("update header: a bad digest or loss"));
    }
    let sizes: u64 = header.tensor_sizes.iter().sum();
    if sizes != header.values || header.tensor_sizes.len() > 4096 {
        return Err(malformed("update header: tensor sizes do not add up"));
    }
    let expected = match header.encoding {
        UpdateEncoding::F32 => header.values.checked_mul(4),
        UpdateEncoding::F16 => header.values.checked_mul(2),
        UpdateEncoding::Int8 => header
            .values
            .checked_add(4 * header.tensor_sizes.len() as u64),
        UpdateEncoding::Masked => header.values.checked_mul(8),
    };
    if expected != Some(payload.len() as u64) {
        return Err(malformed(format!(
            "update: {} bytes of values where the header implies {expected:?}",
            payload.len()
        )));
    }
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> UpdateHeader {
        UpdateHeader {
            round: 3,
            base_digest: "0f".repeat(32),
            samples: 120,
            mean_loss: 0.4,
            encoding: UpdateEncoding::F32,
            values: 3,
            tensor_sizes: vec![2, 1],
            training_seconds: 1.5,
        }
    }

    #[test]
    fn an_update_round_trips_and_a_short_or_lying_one_is_refused() {
        let payload: Vec<u8> = [1.0f32, 2.0, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bytes = encode_update(&header(), &payload);
        let (decoded, values) = decode_update(&bytes).unwrap();
        assert_eq!(decoded, header());
        assert_eq!(values, payload.as_slice());
        assert!(decode_update(&bytes[..bytes.len() - 1]).is_err());
        let mut lying = header();
        lying.values = 4;
        assert!(decode_update(&encode_update(&lying, &payload)).is_err());
        assert!(decode_update(b"no header at all").is_err());
    }

    #[test]
    fn a_task_with_absurd_figures_is_refused() {
        let task = RoundTask {
            round: 1,
            base_digest: "ab".repeat(32),
            deadline: "2026-11-30T12:00:00Z".into(),
            epochs: 2,
            batch: 32,
            learning_rate: 1e-3,
            proximal_mu: 0.0,
            seed: 1,
            encoding: UpdateEncoding::F16,
            clip_norm: None,
            noise_multiplier: None,
            participants: 3,
            secure_aggregation: false,
        };
        let json = serde_json::to_vec(&task).unwrap();
        assert_eq!(RoundTask::from_json(&json).unwrap(), task);
        let absurd = RoundTask {
            epochs: 100_000,
            ..task
        };
        assert!(RoundTask::from_json(&serde_json::to_vec(&absurd).unwrap()).is_err());
    }
}
