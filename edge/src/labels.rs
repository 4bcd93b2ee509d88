//! Training labels where the data lives: what federated rounds train on at this edge.
//!
//! Two sources, both confirmed by a person: an expert's answer to a referral (benign: every
//! referred slide is benign; malignant: the regions the expert drew, GeoJSON polygons in slide
//! pixels with the slide in their properties), and a local sign-off (a clinician confirms or
//! corrects the AI's triage: benign, or lesion with the regions drawn). Answers are already in
//! the referral records, so their labels are derived from them rather than copied; sign-offs
//! have a table of their own. An admin can withdraw any label; a withdrawn label is never
//! trained on again. Labels, regions and the tiles cut from them never leave the edge.

use std::collections::BTreeMap;

use grassroots_store::Table;
use grassroots_wire::referral::ReportCategory;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::EdgeError;

/// Most regions of one sign-off, and vertices of one region.
const MAX_REGIONS: usize = 64;
const MAX_VERTICES: usize = 1024;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LabelClass {
    Benign,
    Lesion,
}

/// A polygon in level-0 slide pixels.
pub type Region = Vec<[f64; 2]>;

/// A clinician's confirmation or correction of a slide's triage.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignOff {
    pub class: LabelClass,
    /// For a lesion: where it is. Ignored for benign slides.
    /// Polygons of `[x, y]` points in level-0 slide pixels.
    #[schema(value_type = Vec<Vec<[f64; 2]>>)]
    pub regions: Vec<Region>,
    pub by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// One label as training sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TrainingLabel {
    /// `signoff:SLIDE` or `answer:REFERRAL:SLIDE`.
    pub id: String,
    pub slide_id: String,
    pub class: LabelClass,
    /// Polygons of `[x, y]` points in level-0 slide pixels.
    #[schema(value_type = Vec<Vec<[f64; 2]>>)]
    pub regions: Vec<Region>,
    /// "sign-off" or "expert".
    pub source: &'static str,
    pub by: String,
    pub withdrawn: bool,
}

/// Who withdrew a label, when and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Withdrawal {
    pub by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Counts per class and per source, for the edge's page and the hub's planning.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct LabelSummary {
    pub by_class: BTreeMap<String, usize>,
    pub by_source: BTreeMap<String, usize>,
    pub withdrawn: usize,
}

pub struct Labels {
    signoffs: Table<SignOff>,
    withdrawals: Table<Withdrawal>,
}

fn bad(reason: impl Into<String>) -> EdgeError {
    EdgeError::Config(reason.into())
}

/// Checks regions from a person or a peer: bounded, finite, each a polygon.
pub fn check_regions(regions: &[Region]) -> Result<(), EdgeError> {
    if regions.len() > MAX_REGIONS {
        return Err(bad(format!("more than {MAX_REGIONS} regions")));
    }
    for region in regions {
        if region.len() < 3 || region.len() > MAX_VERTICES {
            return Err(bad(format!("a region needs 3 to {MAX_VERTICES} vertices")));
        }
        if region
            .iter()
            .flatten()
            .any(|v| !v.is_finite() || v.abs() > 1e7)
        {
            return Err(bad("a region with a vertex outside any slide"));
        }
    }
    Ok(())
}

/// Whether `point` lies inside `polygon` (even-odd rule).
pub fn contains(polygon: &[[f64; 2]], point: [f64; 2]) -> bool {
    let mut inside = false;
    let mut j = polygon.len().wrapping_sub(1);
    for i in 0..polygon.len() {
        let ([xi, yi], [xj, yj]) = (polygon[i], polygon[j]);
        if (yi > point[1]) != (yj > point[1])
            && point[0] < (xj - xi) * (point[1] - yi) / (yj - yi) + xi
        {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// The polygons of an expert's GeoJSON that lie on `slide_id` (points and lines have no area).
fn polygons_on(geojson: &str, slide_id: &str) -> Vec<Region> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(geojson) else {
        return Vec::new();
    };
    let features = value["features"].as_array().cloned().unwrap_or_default();
    features
        .iter()
        .filter(|f| f["properties"]["slide_id"].as_str() == Some(slide_id))
        .filter(|f| f["geometry"]["type"] == "Polygon")
        .filter_map(|f| {
            let ring = f["geometry"]["coordinates"].get(0)?.as_array()?;
            let points: Option<Region> = ring
                .iter()
                .map(|p| Some([p.get(0)?.as_f64()?, p.get(1)?.as_f64()?]))
                .collect();
            points.filter(|p| check_regions(std::slice::from_ref(p)).is_ok())
        })
        .take(MAX_REGIONS)
        .collect()
}

impl Labels {
    pub fn new(signoffs: Table<SignOff>, withdrawals: Table<Withdrawal>) -> Self {
        Self {
            signoffs,
            withdrawals,
        }
    }

    /// Records a clinician's sign-off of `slide_id` (replacing an earlier one).
    pub fn sign_off(
        &self,
        slide_id: &str,
        class: LabelClass,
        regions: Vec<Region>,
        by: &str,
    ) -> Result<SignOff, EdgeError> {
        check_regions(&regions)?;
        if class == LabelClass::Lesion && regions.is_empty() {
            return Err(bad("a lesion sign-off needs the lesion's regions"));
        }
        let signoff = SignOff {
            class,
            regions: if class == LabelClass::Lesion {
                regions
            } else {
                Vec::new()
            },
            by: by.to_string(),
            at: OffsetDateTime::now_utc(),
        };
        self.signoffs.put_durable(slide_id, &signoff)?;
        // A new sign-off is a new label: an earlier withdrawal does not carry over.
        self.withdrawals
            .remove_durable(&format!("signoff:{slide_id}"))?;
        Ok(signoff)
    }

    /// Every slide's sign-off (slide id, sign-off).
    pub fn signoffs(&self) -> Result<Vec<(String, SignOff)>, EdgeError> {
        Ok(self.signoffs.entries()?)
    }

    pub fn withdraw(&self, id: &str, by: &str) -> Result<(), EdgeError> {
        self.withdrawals.put_durable(
            id,
            &Withdrawal {
                by: by.to_string(),
                at: OffsetDateTime::now_utc(),
            },
        )?;
        Ok(())
    }

    /// Every label, withdrawn ones marked: sign-offs, and answers of `referrals`.
    pub fn all(
        &self,
        referrals: &[crate::referrals::LocalReferral],
    ) -> Result<Vec<TrainingLabel>, EdgeError> {
        let withdrawn = |id: &str| self.withdrawals.get(id).map(|w| w.is_some());
        let mut labels = Vec::new();
        for (slide_id, signoff) in self.signoffs.entries()? {
            let id = format!("signoff:{slide_id}");
            labels.push(TrainingLabel {
                withdrawn: withdrawn(&id)?,
                id,
                slide_id,
                class: signoff.class,
                regions: signoff.regions,
                source: "sign-off",
                by: signoff.by,
            });
        }
        for local in referrals {
            let Some(report) = &local.report else {
                continue;
            };
            for slide in &local.referral.slides {
                let (class, regions) = match report.category {
                    ReportCategory::Benign => (LabelClass::Benign, Vec::new()),
                    ReportCategory::Malignant => {
                        let regions = report
                            .annotations_geojson
                            .as_deref()
                            .map(|g| polygons_on(g, &slide.slide_id))
                            .unwrap_or_default();
                        // A malignant answer without regions on this slide says nothing
                        // about where: not a tile-level label.
                        if regions.is_empty() {
                            continue;
                        }
                        (LabelClass::Lesion, regions)
                    }
                    ReportCategory::Uncertain | ReportCategory::InsufficientSample => continue,
                };
                let id = format!("answer:{}:{}", local.referral.referral_id, slide.slide_id);
                labels.push(TrainingLabel {
                    withdrawn: withdrawn(&id)?,
                    id,
                    slide_id: slide.slide_id.clone(),
                    class,
                    regions,
                    source: "expert",
                    by: report.expert.clone(),
                });
            }
        }
        Ok(labels)
    }

    pub fn summary(labels: &[TrainingLabel]) -> LabelSummary {
        let mut summary = LabelSummary::default();
        for label in labels {
            if label.withdrawn {
                summary.withdrawn += 1;
                continue;
            }
            let class = match label.class {
                LabelClass::Benign => "benign",
                LabelClass::Lesion => "lesion",
            };
            *summary.by_class.entry(class.into()).or_default() += 1;
            *summary.by_source.entry(label.source.into()).or_default() += 1;
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polygons_contain_their_inside_only() {
        let square = vec![[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]];
        assert!(contains(&square, [5.0, 5.0]));
        assert!(!contains(&square, [15.0, 5.0]));
        assert!(check_regions(std::slice::from_ref(&square)).is_ok());
        assert!(check_regions(&[vec![[0.0, 0.0], [1.0, f64::NAN], [2.0, 2.0]]]).is_err());
        assert!(check_regions(&[vec![[0.0, 0.0]]]).is_err());
    }

    #[test]
    fn an_experts_polygons_are_taken_per_slide() {
        let geojson = serde_json::json!({
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "properties": {"slide_id": "s1"},
                 "geometry": {"type": "Polygon", "coordinates": [[[0,0],[100,0],[100,100],[0,100],[0,0]]]}},
                {"type": "Feature", "properties": {"slide_id": "s2"},
                 "geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,0]]]}},
                {"type": "Feature", "properties": {"slide_id": "s1"},
                 "geometry": {"type": "Point", "coordinates": [5,5]}}
            ]
        })
        .to_string();
        let on_s1 = polygons_on(&geojson, "s1");
        assert_eq!(on_s1.len(), 1);
        assert_eq!(on_s1[0].len(), 5);
        assert!(polygons_on("not json", "s1").is_empty());
    }
}
