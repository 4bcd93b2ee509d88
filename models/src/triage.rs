//! From a screened slide to a triage decision a clinic can act on: **needs re-scan** (no
//! tissue, or too much of it out of focus, marked by pen, or folded), **suspicious** (the slide
//! score reaches the model's threshold) or **likely benign** — with the reasons in words, the
//! quality-control shares, and the top regions as GeoJSON polygons in full-resolution slide
//! pixels (QuPath reads them).
//!
//! Quality faults are looked up by class name ("blur", "pen", "fold") so that any model whose
//! manifest names them is checked; a model without them is not.

use serde::{Deserialize, Serialize};

use crate::artefacts::ArtefactFinding;
use crate::exposure::Exposure;
use crate::screening::{argmax, TileGrid};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TriageClass {
    Suspicious,
    LikelyBenign,
    NeedsRescan,
}

/// When a slide counts as what.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TriagePolicy {
    /// Slide score at or above which a slide is suspicious (the model's operating point).
    pub suspicious_threshold: f32,
    /// Largest share of the tissue tiles a single quality fault may take.
    pub max_fault_share: f32,
    /// Fewest tissue tiles a slide needs to be screened at all.
    pub min_tissue_tiles: usize,
    /// Largest share of the tissue that may be denser than the slide's own tissue
    /// ([`crate::folds`]), when the model's package carries one (chosen on validation slides);
    /// then folds are judged by it rather than by the share of the fold class.
    pub max_dense_share: Option<f32>,
    /// Most regions reported.
    pub max_regions: usize,
}

impl Default for TriagePolicy {
    fn default() -> Self {
        Self {
            suspicious_threshold: 0.5,
            max_fault_share: 0.3,
            min_tissue_tiles: 4,
            max_dense_share: None,
            max_regions: 3,
        }
    }
}

/// A region that drove the score: a polygon in full-resolution pixels, and its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Region {
    pub score: f32,
    pub polygon: Vec<[f64; 2]>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Triage {
    pub class: TriageClass,
    /// Why, in words staff read on the worklist.
    pub reasons: Vec<String>,
    pub score: f32,
    pub tissue_tiles: usize,
    /// Share of tissue tiles whose most likely class is each fault.
    pub faults: Vec<(String, f32)>,
    /// Share of the tissue denser than the slide's own tissue, as a fold makes it
    /// ([`crate::folds`]), when measured.
    #[serde(default)]
    pub dense_share: Option<f32>,
    pub regions: Vec<Region>,
    /// The overview's brightness, when it was measured.
    #[serde(default)]
    pub exposure: Option<Exposure>,
    /// Pen marks and coverslip edges the overview's detector found, their bounds in
    /// full-resolution slide pixels (`crate::artefacts`).
    #[serde(default)]
    pub artefacts: Vec<ArtefactFinding>,
}

/// How a fold found by density is named among the reasons.
const FOLDS_BY_DENSITY: &str = "folds";

const FAULTS: [(&str, &str); 3] = [
    ("blur", "out of focus"),
    ("pen", "pen marks"),
    ("fold", "folds"),
];

/// Triage of a grid screened with a model of `classes`; `scale` turns grid pixels (at the
/// model's resolution) into full-resolution slide pixels.
pub fn triage(grid: &TileGrid, classes: &[String], policy: &TriagePolicy, scale: f64) -> Triage {
    let index = |name: &str| classes.iter().position(|c| c == name);
    let classified: Vec<&Vec<f32>> = grid
        .cells
        .iter()
        .filter_map(|c| c.probabilities.as_ref())
        .collect();
    let tissue_tiles = classified
        .iter()
        .filter(|p| index("background") != Some(argmax(p)))
        .count();
    let faults: Vec<(String, f32)> = FAULTS
        .iter()
        .filter_map(|(name, _)| index(name).map(|i| (name.to_string(), grid.share_of(i))))
        .collect();
    let lesion_map = index("lesion").map(|i| grid.smoothed_map(i));
    let score = lesion_map
        .as_deref()
        .and_then(|map| grid.peak(map))
        .map_or(0.0, |(score, _, _)| score);
    let mut reasons = Vec::new();
    if tissue_tiles < policy.min_tissue_tiles {
        reasons.push("no tissue".to_string());
    }
    let dense_share = crate::folds::dense_share(grid);
    // Folds by density where the package carries a limit and the grid has densities; by the
    // fold class otherwise.
    let folds_by_density = match (policy.max_dense_share, dense_share) {
        (Some(limit), Some(share)) => Some(share > limit),
        _ => None,
    };
    for (name, share) in &faults {
        if name == "fold" && folds_by_density.is_some() {
            continue;
        }
        if *share > policy.max_fault_share {
            let words = FAULTS
                .iter()
                .find(|(n, _)| n == name)
                .map_or(name.as_str(), |(_, words)| words);
            reasons.push(format!("{words} ({:.0}% of tissue)", share * 100.0));
        }
    }
    let class = if !reasons.is_empty() {
        TriageClass::NeedsRescan
    } else if score >= policy.suspicious_threshold {
        reasons.push(format!(
            "lesion score {score:.2} at or above {:.2}",
            policy.suspicious_threshold
        ));
        TriageClass::Suspicious
    } else {
        reasons.push(format!(
            "lesion score {score:.2} below {:.2}",
            policy.suspicious_threshold
        ));
        TriageClass::LikelyBenign
    };
    // A fold by density needs a re-scan, but a suspicious slide stays suspicious with the fold
    // named beside (dense tumour could pass for a fold): as for an artefact on the glass.
    let (class, reasons) = match (folds_by_density, dense_share) {
        (Some(true), Some(share)) => {
            let fold = format!(
                "{FOLDS_BY_DENSITY} ({:.0}% of tissue about twice as dense as the rest)",
                share * 100.0
            );
            let mut reasons = reasons;
            match class {
                TriageClass::LikelyBenign => {
                    reasons.insert(0, fold);
                    (TriageClass::NeedsRescan, reasons)
                }
                _ => {
                    reasons.push(fold);
                    (class, reasons)
                }
            }
        }
        _ => (class, reasons),
    };
    let regions = match &lesion_map {
        Some(map) => top_regions(grid, map, policy, scale),
        None => Vec::new(),
    };
    Triage {
        class,
        reasons,
        score,
        tissue_tiles,
        faults,
        dense_share,
        regions,
        exposure: None,
        artefacts: Vec::new(),
    }
}

/// The highest-scoring separate regions: grown from each remaining peak over tiles with at least
/// half its score, as the rectangle around them.
fn top_regions(grid: &TileGrid, map: &[f32], policy: &TriagePolicy, scale: f64) -> Vec<Region> {
    let mut taken = vec![false; map.len()];
    let mut regions = Vec::new();
    while regions.len() < policy.max_regions {
        let Some((at, score)) = map
            .iter()
            .enumerate()
            .filter(|(i, score)| !taken[*i] && **score > 0.0)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, s)| (i, *s))
        else {
            break;
        };
        if score < policy.suspicious_threshold * 0.5 {
            break;
        }
        let start = (at as u32 % grid.cols, at as u32 / grid.cols);
        let cells = grid.region(map, start, score * 0.5);
        for (col, row) in &cells {
            taken[(row * grid.cols + col) as usize] = true;
        }
        let (min_col, max_col) = bounds(cells.iter().map(|c| c.0));
        let (min_row, max_row) = bounds(cells.iter().map(|c| c.1));
        let to_slide = |v: u32| f64::from(v) * scale;
        let (x0, y0) = (
            to_slide(min_col * grid.stride),
            to_slide(min_row * grid.stride),
        );
        let (x1, y1) = (
            to_slide(max_col * grid.stride + grid.tile),
            to_slide(max_row * grid.stride + grid.tile),
        );
        regions.push(Region {
            score,
            polygon: vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]],
        });
    }
    regions
}

fn bounds(values: impl Iterator<Item = u32> + Clone) -> (u32, u32) {
    (values.clone().min().unwrap_or(0), values.max().unwrap_or(0))
}

impl Triage {
    /// Whether the slide must be scanned again: it needs a re-scan, or it is suspicious with a
    /// fold or an artefact on the glass named beside (what quality control counts as flagged).
    pub fn asks_for_rescan(&self) -> bool {
        let fold = format!("{FOLDS_BY_DENSITY} (");
        self.class == TriageClass::NeedsRescan
            || !self.artefacts.is_empty()
            || self.reasons.iter().any(|r| r.starts_with(&fold))
    }

    /// Why the slide needs a re-scan, as codes (`no-tissue`, `blur`, `pen`, `fold`,
    /// `exposure`, `pen-mark`, `coverslip-edge`): what a training programme for the site's
    /// technicians would look at.
    pub fn qc_codes(&self) -> Vec<&'static str> {
        if self.class != TriageClass::NeedsRescan {
            return Vec::new();
        }
        let mut codes = Vec::new();
        if self.reasons.iter().any(|r| r == "no tissue") {
            codes.push("no-tissue");
        }
        for (code, words) in FAULTS {
            // "pen marks (40% of tissue)", not "pen marks on the glass" (an artefact's).
            let reason = format!("{words} (");
            if self.reasons.iter().any(|r| r.starts_with(&reason)) {
                codes.push(code);
            }
        }
        if self.exposure.as_ref().is_some_and(|e| e.fault().is_some()) {
            codes.push("exposure");
        }
        for (kind, code) in crate::artefacts::KINDS
            .iter()
            .zip(["pen-mark", "coverslip-edge"])
        {
            if self.artefacts.iter().any(|a| a.kind == *kind) {
                codes.push(code);
            }
        }
        codes
    }

    /// Adds what the overview's artefact detector found (bounds in overview pixels, `scale`
    /// slide pixels each): a slide with pen on the glass or the coverslip's edge over it needs
    /// a re-scan (after cleaning or re-mounting), each named first among the reasons, and where
    /// it lies is kept to be shown. A suspicious slide stays suspicious (the artefact is named
    /// beside): a lesion is never ranked behind a re-scan.
    pub fn with_artefacts(mut self, found: Vec<ArtefactFinding>, scale: f64) -> Self {
        for (at, finding) in found.into_iter().enumerate() {
            let words = crate::artefacts::KINDS
                .iter()
                .position(|k| *k == finding.kind)
                .map_or(finding.kind.as_str(), |i| crate::artefacts::WORDS[i]);
            self.reasons.insert(at, words.to_string());
            if self.class != TriageClass::Suspicious {
                self.class = TriageClass::NeedsRescan;
            }
            let to_slide = |v: u32| (f64::from(v) * scale).round().min(f64::from(u32::MAX)) as u32;
            self.artefacts.push(ArtefactFinding {
                bounds: finding.bounds.map(to_slide),
                ..finding
            });
        }
        self
    }

    /// Adds the overview's exposure: a badly exposed scan needs a re-scan whatever its tiles
    /// say, with the exposure fault as the first reason (the others stay, for the record).
    pub fn with_exposure(mut self, exposure: Exposure) -> Self {
        if let Some(fault) = exposure.fault() {
            self.class = TriageClass::NeedsRescan;
            self.reasons.insert(0, fault);
        }
        self.exposure = Some(exposure);
        self
    }

    /// The regions as a GeoJSON FeatureCollection (QuPath-compatible annotations): what a
    /// referral carries for the expert (and the hub prefetches around).
    pub fn regions_geojson(&self) -> serde_json::Value {
        self.geojson(false)
    }

    /// The regions and the artefacts found on the glass (rectangles of their own class), as the
    /// edge's viewer shows them.
    pub fn regions_and_artefacts_geojson(&self) -> serde_json::Value {
        self.geojson(true)
    }

    fn geojson(&self, with_artefacts: bool) -> serde_json::Value {
        let shown = if with_artefacts {
            self.artefacts.as_slice()
        } else {
            &[]
        };
        let artefacts = shown.iter().map(|a| {
            let [x, y, w, h] = a.bounds.map(f64::from);
            let name = match a.kind.as_str() {
                "pen" => "Pen marks (re-scan)",
                _ => "Coverslip edge (re-scan)",
            };
            serde_json::json!({
                "type": "Feature",
                "geometry": { "type": "Polygon", "coordinates": [[[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]] },
                "properties": {
                    "objectType": "annotation",
                    "classification": { "name": name },
                    "artefact": a.kind,
                },
            })
        });
        let features: Vec<serde_json::Value> = self
            .regions
            .iter()
            .map(|region| {
                serde_json::json!({
                    "type": "Feature",
                    "geometry": { "type": "Polygon", "coordinates": [region.polygon] },
                    "properties": {
                        "objectType": "annotation",
                        "classification": { "name": "AI region of interest" },
                        "score": region.score,
                    },
                })
            })
            .chain(artefacts)
            .collect();
        serde_json::json!({ "type": "FeatureCollection", "features": features })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screening::GridCell;

    fn classes() -> Vec<String> {
        ["background", "tissue", "lesion", "blur", "pen", "fold"]
            .map(String::from)
            .to_vec()
    }

    /// A 10 x 10 grid of tissue whose cells get `probabilities(col, row)`.
    fn grid(probabilities: impl Fn(u32, u32) -> Option<[f32; 6]>) -> TileGrid {
        let mut cells = Vec::new();
        for row in 0..10 {
            for col in 0..10 {
                cells.push(GridCell {
                    tissue: 1.0,
                    density: None,
                    probabilities: probabilities(col, row).map(|p| p.to_vec()),
                });
            }
        }
        TileGrid {
            cols: 10,
            rows: 10,
            tile: 32,
            stride: 16,
            cells,
        }
    }

    const TISSUE: [f32; 6] = [0.0, 0.95, 0.02, 0.01, 0.01, 0.01];
    const LESION: [f32; 6] = [0.0, 0.05, 0.9, 0.02, 0.02, 0.01];

    #[test]
    fn a_lesion_makes_a_slide_suspicious_with_its_region() {
        let grid = grid(|c, r| {
            Some(if (4..7).contains(&c) && (2..5).contains(&r) {
                LESION
            } else {
                TISSUE
            })
        });
        let triage = triage(&grid, &classes(), &TriagePolicy::default(), 8.0);
        assert_eq!(triage.class, TriageClass::Suspicious, "{triage:?}");
        assert!(triage.score > 0.8);
        let region = &triage.regions[0];
        // Cells 4..=6, 2..=4 at stride 16 with 32-pixel tiles, times 8.
        let [x0, y0] = region.polygon[0];
        let [x1, y1] = region.polygon[2];
        assert!(
            x0 <= 4.0 * 16.0 * 8.0 && x1 >= (6.0 * 16.0 + 32.0) * 8.0,
            "{region:?}"
        );
        assert!(
            y0 <= 2.0 * 16.0 * 8.0 && y1 >= (4.0 * 16.0 + 32.0) * 8.0,
            "{region:?}"
        );
        let geojson = triage.regions_geojson();
        assert_eq!(geojson["features"][0]["geometry"]["type"], "Polygon");
    }

    #[test]
    fn an_artefact_on_the_glass_needs_a_rescan_and_is_shown_where_it_lies() {
        let benign = triage(
            &grid(|_, _| Some(TISSUE)),
            &classes(),
            &TriagePolicy::default(),
            1.0,
        );
        let pen = ArtefactFinding {
            kind: "pen".into(),
            cells: 40,
            bounds: [10, 20, 30, 40],
        };
        let flagged = benign.with_artefacts(vec![pen], 128.0);
        assert_eq!(flagged.class, TriageClass::NeedsRescan);
        assert_eq!(flagged.reasons[0], "pen marks on the glass");
        assert_eq!(flagged.qc_codes(), vec!["pen-mark"]);
        assert_eq!(flagged.artefacts[0].bounds, [1280, 2560, 3840, 5120]);
        assert_eq!(flagged.regions_geojson()["features"], serde_json::json!([]));
        let geojson = flagged.regions_and_artefacts_geojson();
        assert_eq!(geojson["features"][0]["properties"]["artefact"], "pen");
        assert_eq!(
            geojson["features"][0]["geometry"]["coordinates"][0][2],
            serde_json::json!([5120.0, 7680.0])
        );
        // A lesion is not ranked behind the re-scan.
        let lesion = triage(
            &grid(|c, r| {
                Some(if (4..7).contains(&c) && (2..5).contains(&r) {
                    LESION
                } else {
                    TISSUE
                })
            }),
            &classes(),
            &TriagePolicy::default(),
            1.0,
        );
        let edge = ArtefactFinding {
            kind: "coverslip-edge".into(),
            cells: 120,
            bounds: [0, 0, 4, 40],
        };
        let still = lesion.with_artefacts(vec![edge], 1.0);
        assert_eq!(still.class, TriageClass::Suspicious);
        assert_eq!(still.reasons[0], "the coverslip's edge over the tissue");
    }

    #[test]
    fn with_a_dense_share_limit_folds_are_judged_by_density_not_by_the_fold_class() {
        const FOLD: [f32; 6] = [0.0, 0.1, 0.02, 0.01, 0.01, 0.86];
        // The right 40% of the tissue twice as dense, all of it called tissue by the model.
        let mut folded = grid(|_, _| Some(TISSUE));
        for (i, cell) in folded.cells.iter_mut().enumerate() {
            cell.density = Some(if i % 10 >= 6 { 0.9 } else { 0.45 });
        }
        // Evenly dense tissue that the model takes for a fold (a held-out host's look).
        let mut mistaken = grid(|_, _| Some(FOLD));
        for cell in &mut mistaken.cells {
            cell.density = Some(0.45);
        }
        let policy = TriagePolicy {
            max_dense_share: Some(0.3),
            ..TriagePolicy::default()
        };
        let by_density = triage(&folded, &classes(), &policy, 1.0);
        assert_eq!(by_density.class, TriageClass::NeedsRescan, "{by_density:?}");
        assert_eq!(by_density.dense_share, Some(0.4));
        assert_eq!(by_density.qc_codes(), vec!["fold"]);
        assert!(by_density.reasons[0].contains("twice as dense"));
        assert_eq!(
            triage(&mistaken, &classes(), &policy, 1.0).class,
            TriageClass::LikelyBenign
        );
        assert!(by_density.asks_for_rescan());
        // A suspicious slide stays suspicious, the fold named beside.
        let mut suspicious = grid(|c, r| {
            Some(if (1..4).contains(&c) && (2..5).contains(&r) {
                LESION
            } else {
                TISSUE
            })
        });
        for (i, cell) in suspicious.cells.iter_mut().enumerate() {
            cell.density = Some(if i % 10 >= 6 { 0.9 } else { 0.45 });
        }
        let still = triage(&suspicious, &classes(), &policy, 1.0);
        assert_eq!(still.class, TriageClass::Suspicious, "{still:?}");
        assert!(still.reasons.last().unwrap().contains("twice as dense"));
        assert!(still.asks_for_rescan());
        // A package without a limit judges by the fold class, as before.
        let by_class = triage(&mistaken, &classes(), &TriagePolicy::default(), 1.0);
        assert_eq!(by_class.class, TriageClass::NeedsRescan);
        assert_eq!(
            triage(&folded, &classes(), &TriagePolicy::default(), 1.0).class,
            TriageClass::LikelyBenign
        );
    }

    #[test]
    fn clean_tissue_is_likely_benign_and_faults_or_emptiness_need_a_rescan() {
        let benign = triage(
            &grid(|_, _| Some(TISSUE)),
            &classes(),
            &TriagePolicy::default(),
            1.0,
        );
        assert_eq!(benign.class, TriageClass::LikelyBenign);
        assert!(benign.regions.is_empty());

        let empty = triage(
            &grid(|_, _| None),
            &classes(),
            &TriagePolicy::default(),
            1.0,
        );
        assert_eq!(empty.class, TriageClass::NeedsRescan);
        assert_eq!(empty.reasons, vec!["no tissue".to_string()]);

        let blurred = triage(
            &grid(|c, _| {
                Some(if c < 6 {
                    [0.0, 0.1, 0.0, 0.9, 0.0, 0.0]
                } else {
                    TISSUE
                })
            }),
            &classes(),
            &TriagePolicy::default(),
            1.0,
        );
        assert_eq!(blurred.class, TriageClass::NeedsRescan);
        assert!(
            blurred.reasons[0].starts_with("out of focus (60%"),
            "{:?}",
            blurred.reasons
        );
    }
}
