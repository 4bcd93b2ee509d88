//! How a model package writes the artefact detector: its thresholds under a name that says how
//! they were measured, so that an edge that would measure them otherwise refuses the package.

use serde::{Deserialize, Serialize};

use super::{ArtefactModel, CellMeasure, KINDS};

/// [`ArtefactModel`] as a package's manifest holds it. The thresholds of a detector that
/// measures patches are written as `min_patch_cells`, never as `min_cells`: an edge from before
/// patches requires `min_cells` and so refuses such a package with a reason, rather than
/// counting every cell of a kind against a patch's size (14 pen cells where a count needs 38)
/// and flagging clean slides. A detector from before patches has `min_cells` and counts.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredArtefactModel {
    microns_per_pixel: f64,
    feature_mean: Vec<f32>,
    feature_std: Vec<f32>,
    hidden: Vec<Vec<f32>>,
    weights: Vec<Vec<f32>>,
    #[serde(default = "one_class_per_kind")]
    class_kinds: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_cells: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_patch_cells: Option<Vec<u32>>,
    provenance: String,
}

impl TryFrom<StoredArtefactModel> for ArtefactModel {
    type Error = String;

    fn try_from(stored: StoredArtefactModel) -> Result<Self, String> {
        let (min_cells, measure) = match (stored.min_cells, stored.min_patch_cells) {
            (Some(cells), None) => (cells, CellMeasure::AllCells),
            (None, Some(cells)) => (cells, CellMeasure::LargestPatch),
            _ => {
                return Err(
                    "the artefact detector needs either min_cells or min_patch_cells".into(),
                )
            }
        };
        Ok(ArtefactModel {
            microns_per_pixel: stored.microns_per_pixel,
            feature_mean: stored.feature_mean,
            feature_std: stored.feature_std,
            hidden: stored.hidden,
            weights: stored.weights,
            class_kinds: stored.class_kinds,
            min_cells,
            measure,
            provenance: stored.provenance,
        })
    }
}

impl From<ArtefactModel> for StoredArtefactModel {
    fn from(model: ArtefactModel) -> Self {
        let (min_cells, min_patch_cells) = match model.measure {
            CellMeasure::AllCells => (Some(model.min_cells), None),
            CellMeasure::LargestPatch => (None, Some(model.min_cells)),
        };
        StoredArtefactModel {
            microns_per_pixel: model.microns_per_pixel,
            feature_mean: model.feature_mean,
            feature_std: model.feature_std,
            hidden: model.hidden,
            weights: model.weights,
            class_kinds: model.class_kinds,
            min_cells,
            min_patch_cells,
            provenance: model.provenance,
        }
    }
}

/// What a package from before inks had classes of their own means: one class per kind.
fn one_class_per_kind() -> Vec<usize> {
    (0..KINDS.len()).collect()
}
