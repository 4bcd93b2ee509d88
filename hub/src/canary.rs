//! Staged rollout: a version goes to a few canary sites first; their evaluations on their own
//! confirmed cases decide whether it goes to every site or is rolled back by itself.
//!
//! While a canary runs, its sites' target is the canary version and every other site keeps the
//! release, so no other site ever runs a version the canaries have not vouched for. Each canary
//! site, once it runs the version, measures it against the model it replaced on its own labels
//! (`edge/src/model_evaluation.rs`) and reports agreement and quality-control rejection. When
//! every canary site has reported: any site where agreement fell by more than
//! [`AGREEMENT_TOLERANCE`], rejection rose by more than [`QC_TOLERANCE`], or the lesion scores of
//! its recent slides moved by more than [`DRIFT_TOLERANCE`] on average rolls the version back
//! (withdrawn, with the figures as the reason; the canaries return to the release); otherwise it
//! is released to the network. A report with no labelled tiles is no evidence: the canary then
//! waits for an admin (release or roll back by hand).

use std::collections::BTreeMap;

use grassroots_store::Table;
use grassroots_wire::models::ModelEvaluationReport;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::HubError;

/// Largest fall in agreement with a site's labels a canary may show.
pub const AGREEMENT_TOLERANCE: f32 = 0.05;
/// Largest rise in the share of labelled tissue called blur, pen or fold.
pub const QC_TOLERANCE: f32 = 0.10;
/// Largest mean change in lesion probability on a site's recent slides: a retrained model moves
/// scores a little; one that moves them this much screens differently from what staff know.
pub const DRIFT_TOLERANCE: f32 = 0.25;

/// Where a canary stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum CanaryOutcome {
    Watching,
    Released,
    RolledBack {
        reason: String,
    },
    /// Replaced by a newer canary or ended by an admin.
    Ended,
}

/// A version on trial at a few sites.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Canary {
    pub digest: String,
    pub sites: Vec<String>,
    pub by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub reports: BTreeMap<String, ModelEvaluationReport>,
    pub outcome: CanaryOutcome,
}

/// What the canary's evidence says.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Wait,
    Release,
    RollBack(String),
}

impl Canary {
    pub fn is_watching(&self) -> bool {
        self.outcome == CanaryOutcome::Watching
    }

    /// The verdict once every canary site has reported on this version.
    pub fn verdict(&self) -> Verdict {
        if !self.is_watching() || !self.sites.iter().all(|s| self.reports.contains_key(s)) {
            return Verdict::Wait;
        }
        let mut worse = Vec::new();
        let mut evidence = false;
        for (site, report) in &self.reports {
            if let Some(drift) = report.score_drift.filter(|_| report.drift_tiles > 0) {
                if drift > DRIFT_TOLERANCE {
                    worse.push(format!(
                        "{site}: lesion scores on its recent slides moved by {drift:.2} on average"
                    ));
                }
            }
            if report.tiles == 0 {
                continue;
            }
            evidence = true;
            if let Some(before) = report.previous_agreement {
                if report.agreement < before - AGREEMENT_TOLERANCE {
                    worse.push(format!(
                        "{site}: agreement with its sign-offs {:.0}% (was {:.0}%)",
                        report.agreement * 100.0,
                        before * 100.0
                    ));
                }
            }
            if let Some(before) = report.previous_qc_rejection_rate {
                if report.qc_rejection_rate > before + QC_TOLERANCE {
                    worse.push(format!(
                        "{site}: {:.0}% of confirmed tissue called an artefact (was {:.0}%)",
                        report.qc_rejection_rate * 100.0,
                        before * 100.0
                    ));
                }
            }
        }
        if !worse.is_empty() {
            Verdict::RollBack(format!("canary: {}", worse.join("; ")))
        } else if evidence {
            Verdict::Release
        } else {
            Verdict::Wait
        }
    }
}

const CURRENT: &str = "current";

/// The canary, kept in the hub's store.
pub struct Canaries {
    table: Table<Canary>,
}

impl Canaries {
    pub fn new(table: Table<Canary>) -> Self {
        Self { table }
    }

    pub fn current(&self) -> Result<Option<Canary>, HubError> {
        Ok(self.table.get(CURRENT)?)
    }

    /// Starts a canary of `digest` at `sites` (replacing one that is still watching).
    pub fn start(&self, digest: &str, sites: Vec<String>, by: &str) -> Result<Canary, HubError> {
        if sites.is_empty() {
            return Err(HubError::Config("a canary needs at least one site".into()));
        }
        let canary = Canary {
            digest: digest.to_string(),
            sites,
            by: by.to_string(),
            started_at: OffsetDateTime::now_utc(),
            reports: BTreeMap::new(),
            outcome: CanaryOutcome::Watching,
        };
        self.table.put_durable(CURRENT, &canary)?;
        Ok(canary)
    }

    /// The target of `site` while a canary watches, if it is a canary site.
    pub fn target_for(&self, site: &str) -> Result<Option<String>, HubError> {
        Ok(self
            .current()?
            .filter(|c| c.is_watching() && c.sites.iter().any(|s| s == site))
            .map(|c| c.digest))
    }

    /// A site's evaluation; kept when it is about the canary's version from a canary site.
    pub fn report(&self, site: &str, report: &ModelEvaluationReport) -> Result<bool, HubError> {
        let mut kept = false;
        self.table.update(CURRENT, |current| {
            current.map(|mut canary| {
                if canary.is_watching()
                    && canary.digest == report.digest
                    && canary.sites.iter().any(|s| s == site)
                {
                    canary.reports.insert(site.to_string(), report.clone());
                    kept = true;
                }
                canary
            })
        })?;
        self.table.flush()?;
        Ok(kept)
    }

    pub fn conclude(&self, outcome: CanaryOutcome) -> Result<(), HubError> {
        self.table.update(CURRENT, |current| {
            current.map(|mut canary| {
                canary.outcome = outcome.clone();
                canary
            })
        })?;
        self.table.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(agreement: f32, before: f32, tiles: u64) -> ModelEvaluationReport {
        ModelEvaluationReport {
            digest: "a".repeat(64),
            previous_digest: Some("b".repeat(64)),
            tiles,
            agreement,
            qc_rejection_rate: 0.0,
            previous_agreement: Some(before),
            previous_qc_rejection_rate: Some(0.0),
            evaluated_at: String::new(),
            score_drift: Some(0.05),
            drift_tiles: 100,
        }
    }

    fn canary(reports: &[(&str, ModelEvaluationReport)]) -> Canary {
        Canary {
            digest: "a".repeat(64),
            sites: vec!["x".into(), "y".into()],
            by: "root".into(),
            started_at: OffsetDateTime::UNIX_EPOCH,
            reports: reports
                .iter()
                .map(|(s, r)| (s.to_string(), r.clone()))
                .collect(),
            outcome: CanaryOutcome::Watching,
        }
    }

    #[test]
    fn the_canaries_evidence_decides() {
        assert_eq!(
            canary(&[("x", report(0.9, 0.9, 50))]).verdict(),
            Verdict::Wait
        );
        assert_eq!(
            canary(&[("x", report(0.9, 0.9, 50)), ("y", report(0.88, 0.9, 50))]).verdict(),
            Verdict::Release
        );
        let Verdict::RollBack(reason) =
            canary(&[("x", report(0.9, 0.9, 50)), ("y", report(0.2, 0.9, 50))]).verdict()
        else {
            panic!("a canary that disagrees with its sign-offs rolls back");
        };
        assert!(reason.contains("y: agreement"), "{reason}");
        // Scores on recent slides that jump roll back even where labels agree.
        let jumpy = ModelEvaluationReport {
            score_drift: Some(0.6),
            ..report(0.9, 0.9, 50)
        };
        let Verdict::RollBack(reason) =
            canary(&[("x", report(0.9, 0.9, 50)), ("y", jumpy)]).verdict()
        else {
            panic!("a canary whose scores jump rolls back");
        };
        assert!(reason.contains("y: lesion scores"), "{reason}");
        // No labelled tiles anywhere: no evidence, an admin decides.
        let unlabelled = |drift| ModelEvaluationReport {
            score_drift: drift,
            drift_tiles: if drift.is_some() { 100 } else { 0 },
            ..report(0.0, 0.9, 0)
        };
        assert_eq!(
            canary(&[("x", unlabelled(None)), ("y", unlabelled(None))]).verdict(),
            Verdict::Wait
        );
        // ... but a large drift is evidence enough to roll back.
        assert!(matches!(
            canary(&[("x", unlabelled(Some(0.5))), ("y", unlabelled(None))]).verdict(),
            Verdict::RollBack(_)
        ));
    }
}
