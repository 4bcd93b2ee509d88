//! Screening models crossing the link: packages from the hub to an edge, and the edge's report
//! of what it runs.
//!
//! Both travel as content-addressed bulk transfers (resumable, behind live consult traffic), told
//! apart by their labels, so no new message variant is needed. A package is the signed file of
//! `grassroots_models::package`; the edge verifies it exactly as an upload and acknowledges the
//! transfer only once the model is active, or refuses it with the reason, which the hub records
//! for that site. The status report holds digests, names and versions, the evaluation report
//! shares of tiles: nothing about a patient.

use serde::{Deserialize, Serialize};

use crate::WireError;

/// The transfer label of a model package sent by the hub.
pub const MODEL_PACKAGE_LABEL: &str = "model-package";
/// The transfer label of an edge's [`ModelStatusReport`].
pub const MODEL_STATUS_LABEL: &str = "model-status";
/// The transfer label of a model package sent only to be evaluated (cross-site evaluation):
/// the edge measures it on its own labels against the model it runs, reports the figures, and
/// does not install it.
pub const MODEL_CANDIDATE_LABEL: &str = "model-candidate";
/// The transfer label of an edge's [`ModelEvaluationReport`].
pub const MODEL_EVALUATION_LABEL: &str = "model-evaluation";
/// Most bytes of a status report.
pub const MAX_STATUS_BYTES: usize = 16 * 1024;

/// One model as an edge names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// BLAKE3 of the package file, hex.
    pub digest: String,
    pub name: String,
    pub version: String,
}

/// What an edge runs, sent at start and after every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelStatusReport {
    pub active: Option<ModelRef>,
    /// The model before the active one, kept for rollback.
    pub previous: Option<ModelRef>,
    /// When the report was made (RFC 3339), so that the hub keeps the newest of two.
    pub reported_at: String,
}

impl ModelStatusReport {
    /// Parses and bounds a report from an edge.
    pub fn from_json(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > MAX_STATUS_BYTES {
            return Err(WireError::Malformed(format!(
                "a model status of {} bytes (at most {MAX_STATUS_BYTES})",
                bytes.len()
            )));
        }
        let report: Self = serde_json::from_slice(bytes)
            .map_err(|e| WireError::Malformed(format!("model status: {e}")))?;
        for model in report.active.iter().chain(&report.previous) {
            let hex =
                model.digest.len() == 64 && model.digest.bytes().all(|b| b.is_ascii_hexdigit());
            let short = |s: &str| s.len() <= 64 && !s.chars().any(char::is_control);
            if !hex || !short(&model.name) || !short(&model.version) {
                return Err(WireError::Malformed(
                    "model status: a digest that is not 64 hex digits, or a name or version that is not 1-64 printable characters".into(),
                ));
            }
        }
        Ok(report)
    }
}

/// How the active model does on the edge's own confirmed cases, next to the one it replaced:
/// shares of tiles only (the canary rollout's evidence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelEvaluationReport {
    pub digest: String,
    pub previous_digest: Option<String>,
    /// Labelled tiles measured.
    pub tiles: u64,
    /// Share of tiles whose predicted class is the labelled one.
    pub agreement: f32,
    /// Share of labelled tissue and lesion tiles called blur, pen or fold.
    pub qc_rejection_rate: f32,
    pub previous_agreement: Option<f32>,
    pub previous_qc_rejection_rate: Option<f32>,
    pub evaluated_at: String,
    /// Mean absolute change in the lesion probability of tiles from the site's most recent
    /// slides, new model against previous (unlabelled: every recent case counts).
    #[serde(default)]
    pub score_drift: Option<f32>,
    /// Tiles the drift was measured on.
    #[serde(default)]
    pub drift_tiles: u64,
}

impl ModelEvaluationReport {
    pub fn from_json(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > MAX_STATUS_BYTES {
            return Err(WireError::Malformed(
                "a model evaluation that is too long".into(),
            ));
        }
        let report: Self = serde_json::from_slice(bytes)
            .map_err(|e| WireError::Malformed(format!("model evaluation: {e}")))?;
        let share = |v: f32| v.is_finite() && (0.0..=1.0).contains(&v);
        let hex = |d: &str| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit());
        let sane = hex(&report.digest)
            && report.previous_digest.as_deref().is_none_or(hex)
            && share(report.agreement)
            && share(report.qc_rejection_rate)
            && report.previous_agreement.is_none_or(share)
            && report.previous_qc_rejection_rate.is_none_or(share)
            && report.score_drift.is_none_or(share)
            && report.evaluated_at.len() <= 40;
        if !sane {
            return Err(WireError::Malformed(
                "model evaluation: a digest or a share out of range".into(),
            ));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_report_round_trips_and_bad_ones_are_refused() {
        let report = ModelStatusReport {
            active: Some(ModelRef {
                digest: "ab".repeat(32),
                name: "grassroots-screening".into(),
                version: "0.2.0".into(),
            }),
            previous: None,
            reported_at: "2026-11-30T10:00:00Z".into(),
        };
        let json = serde_json::to_vec(&report).unwrap();
        assert_eq!(ModelStatusReport::from_json(&json).unwrap(), report);
        let mut bad = report.clone();
        bad.active.as_mut().unwrap().digest = "<script>".into();
        let json = serde_json::to_vec(&bad).unwrap();
        assert!(ModelStatusReport::from_json(&json).is_err());
        assert!(ModelStatusReport::from_json(
            br#"{"active":null,"previous":null,"reported_at":"x","extra":1}"#
        )
        .is_err());
        assert!(ModelStatusReport::from_json(&vec![b' '; MAX_STATUS_BYTES + 1]).is_err());
    }

    #[test]
    fn an_evaluation_with_a_share_out_of_range_or_a_bad_digest_is_refused() {
        let report = ModelEvaluationReport {
            digest: "cd".repeat(32),
            previous_digest: Some("ef".repeat(32)),
            tiles: 40,
            agreement: 0.9,
            qc_rejection_rate: 0.05,
            previous_agreement: Some(0.85),
            previous_qc_rejection_rate: Some(0.0),
            evaluated_at: "2026-11-30T10:00:00Z".into(),
            score_drift: Some(0.04),
            drift_tiles: 160,
        };
        let json = serde_json::to_vec(&report).unwrap();
        assert_eq!(ModelEvaluationReport::from_json(&json).unwrap(), report);
        for bad in [
            ModelEvaluationReport {
                agreement: 1.5,
                ..report.clone()
            },
            ModelEvaluationReport {
                qc_rejection_rate: f32::NAN,
                ..report.clone()
            },
            ModelEvaluationReport {
                previous_agreement: Some(-0.1),
                ..report.clone()
            },
            ModelEvaluationReport {
                digest: "not hex".into(),
                ..report.clone()
            },
            ModelEvaluationReport {
                score_drift: Some(1.2),
                ..report.clone()
            },
        ] {
            // NaN serialises as null, which does not parse as a share either.
            let json = serde_json::to_vec(&bad).unwrap();
            let error = ModelEvaluationReport::from_json(&json).unwrap_err();
            assert!(error.to_string().contains("model evaluation"), "{error}");
        }
    }
}
