//! Update compression: half precision (2 bytes a value) or int8 with one scale per tensor
//! (1 byte a value), with error feedback (Seide et al. 2014; Karimireddy et al. 2019): what
//! rounding lost this round is added to the next round's update before it is rounded, so the
//! error does not accumulate in the global model. The edge keeps that residual between rounds.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// How values are written (mirrors the wire's `UpdateEncoding`, which this crate does not see).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    F32,
    F16,
    Int8,
}

/// Writes `values` (tensors of `sizes`) with `encoding`, adding and updating `residual`.
pub fn encode(
    values: &[f32],
    sizes: &[usize],
    encoding: Encoding,
    residual: &mut Vec<f32>,
) -> Result<Vec<u8>, ModelError> {
    if sizes.iter().sum::<usize>() != values.len() {
        return Err(ModelError::BadParameters(
            "tensor sizes do not add up to the values".into(),
        ));
    }
    if residual.len() != values.len() {
        *residual = vec![0.0; values.len()];
    }
    let corrected: Vec<f32> = values
        .iter()
        .zip(residual.iter())
        .map(|(v, r)| v + r)
        .collect();
    let (bytes, sent) = match encoding {
        Encoding::F32 => (
            corrected.iter().flat_map(|v| v.to_le_bytes()).collect(),
            corrected.clone(),
        ),
        Encoding::F16 => {
            let halves: Vec<half::f16> =
                corrected.iter().map(|v| half::f16::from_f32(*v)).collect();
            (
                halves.iter().flat_map(|h| h.to_le_bytes()).collect(),
                halves.iter().map(|h| h.to_f32()).collect(),
            )
        }
        Encoding::Int8 => {
            let mut bytes = Vec::with_capacity(values.len() + 4 * sizes.len());
            let mut sent = Vec::with_capacity(values.len());
            let mut quantised = Vec::with_capacity(values.len());
            let mut at = 0;
            for size in sizes {
                let tensor = &corrected[at..at + size];
                at += size;
                let scale = tensor.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                bytes.extend_from_slice(&scale.to_le_bytes());
                for v in tensor {
                    let q = if scale > 0.0 {
                        (v / scale).round().clamp(-127.0, 127.0) as i8
                    } else {
                        0
                    };
                    quantised.push(q as u8);
                    sent.push(f32::from(q) * scale);
                }
            }
            bytes.extend_from_slice(&quantised);
            (bytes, sent)
        }
    };
    for ((r, c), s) in residual.iter_mut().zip(&corrected).zip(&sent) {
        *r = c - s;
    }
    Ok(bytes)
}

/// Reads values written by [`encode`].
pub fn decode(bytes: &[u8], sizes: &[usize], encoding: Encoding) -> Result<Vec<f32>, ModelError> {
    let count: usize = sizes.iter().sum();
    let bad = || ModelError::BadParameters("an update's values do not match its header".into());
    match encoding {
        Encoding::F32 => {
            if bytes.len() != count * 4 {
                return Err(bad());
            }
            Ok(bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        }
        Encoding::F16 => {
            if bytes.len() != count * 2 {
                return Err(bad());
            }
            Ok(bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect())
        }
        Encoding::Int8 => {
            if bytes.len() != count + 4 * sizes.len() {
                return Err(bad());
            }
            let (scales, quantised) = bytes.split_at(4 * sizes.len());
            let mut values = Vec::with_capacity(count);
            let mut at = 0;
            for (size, scale) in sizes.iter().zip(scales.chunks_exact(4)) {
                let scale = f32::from_le_bytes([scale[0], scale[1], scale[2], scale[3]]);
                values.extend(
                    quantised[at..at + size]
                        .iter()
                        .map(|q| f32::from(*q as i8) * scale),
                );
                at += size;
            }
            Ok(values)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_encoding_round_trips_within_its_precision_and_feedback_carries_the_error() {
        let values: Vec<f32> = (0..1000)
            .map(|i| ((i as f32) * 0.37).sin() * 0.01)
            .collect();
        let sizes = [600, 400];
        for (encoding, bytes_per_value, tolerance) in [
            (Encoding::F32, 4.0, 0.0),
            (Encoding::F16, 2.0, 1e-5),
            (Encoding::Int8, 1.0, 0.01 / 127.0),
        ] {
            let mut residual = Vec::new();
            let bytes = encode(&values, &sizes, encoding, &mut residual).unwrap();
            assert!(bytes.len() as f32 <= values.len() as f32 * bytes_per_value + 8.0);
            let decoded = decode(&bytes, &sizes, encoding).unwrap();
            for ((v, d), r) in values.iter().zip(&decoded).zip(&residual) {
                assert!((v - d).abs() <= tolerance, "{encoding:?}: {v} vs {d}");
                assert!((v - d - r).abs() < 1e-9, "the residual is what was lost");
            }
        }
        // Error feedback: the sum of what was sent over many rounds of the same update tracks
        // the sum of the updates, where plain rounding would drift by the same error each round.
        let tiny = vec![0.3f32 / 127.0; 4];
        let mut residual = Vec::new();
        let mut total = 0.0;
        for _ in 0..100 {
            // One large value sets the scale so that the tiny ones round to zero on their own.
            let mut update = tiny.clone();
            update[0] = 1.0;
            let bytes = encode(&update, &[4], Encoding::Int8, &mut residual).unwrap();
            total += decode(&bytes, &[4], Encoding::Int8).unwrap()[1];
        }
        assert!((total - 100.0 * tiny[1]).abs() < 0.01, "{total}");
        assert!(decode(&[0u8; 3], &[1], Encoding::F32).is_err());
    }
}
