//! Tissue folds, measured rather than learnt: a fold lays the section over itself, so the light
//! crosses two layers of stained tissue and the folded part's optical density is about twice
//! that of the tissue around it. Measured against the slide's own tissue, the rule holds for a
//! lab's pale stain and another's dark one alike, which a tile classifier trained on a few
//! hosts does not: held out by host, its fold class flagged 14 of 42 folded slides and 14 of 42
//! clean ones (README). Slide-adaptive thresholds on stain intensity are how the fold detectors
//! in the literature work too (Kothari et al. 2013, on saturation less intensity).
//!
//! A tile is *dense* when the optical density of its tissue is more than [`DENSER_THAN`] times
//! that of the slide's lighter tissue (the [`REFERENCE_QUANTILE`] of its tissue tiles: a fold
//! covers less than half the tissue, so the reference lies in unfolded tissue). The slide is
//! folded when the dense share of its tissue exceeds a limit chosen on validation slides at
//! training time ([`limit_from_clean_validation`]) and carried in the model's manifest
//! (`fold_dense_share`); a package without one keeps judging folds by its fold class, as does
//! a grid with too few measured tissue tiles ([`dense_share`] is `None`). As with an artefact on
//! the glass, a suspicious slide stays suspicious with the fold named beside: dense tumour
//! could pass for a fold, and a lesion is never ranked behind a re-scan.
//!
//! Densities are taken against white (255) as glass; on a scan whose glass is greyer, a fold's
//! ratio to its surroundings is a little under 2, still above [`DENSER_THAN`] for tissue of
//! ordinary density.

use crate::screening::{TileGrid, MIN_TISSUE};

/// How many times the reference density a tile must exceed to count as dense: between one
/// layer (1x) and two (2x), nearer one, as a fold's upper layer is often thinner or partly
/// over glass.
pub const DENSER_THAN: f32 = 1.5;

/// The quantile of the slide's tissue tiles' density taken as one layer's.
pub const REFERENCE_QUANTILE: f32 = 0.25;

/// Fewest tissue tiles with a density for the share to mean anything.
pub const MIN_TILES: usize = 8;

/// The manifest threshold that carries the limit.
pub const MANIFEST_THRESHOLD: &str = "fold_dense_share";

/// The lowest limit chosen: a fold over less than a tenth of the tissue leaves enough to
/// screen, and a limit of 0 (when nearly every validation slide has no dense tile at all)
/// would flag a whole slide for one dense tile.
pub const LOWEST_LIMIT: f32 = 0.1;

/// The share of clean validation slides a chosen limit may flag, at most.
pub const CLEAN_FLAGGED_AT_MOST: f32 = 0.05;

/// The share of the grid's tissue tiles (those with at least [`MIN_TISSUE`] tissue) that are
/// dense; `None` when fewer than [`MIN_TILES`] of them have a measured density (a grid screened
/// before densities were kept, or hardly any tissue).
pub fn dense_share(grid: &TileGrid) -> Option<f32> {
    let mut densities: Vec<f32> = grid
        .cells
        .iter()
        .filter(|cell| cell.tissue >= MIN_TISSUE)
        .map(|cell| cell.density)
        .collect::<Option<Vec<f32>>>()?;
    if densities.len() < MIN_TILES {
        return None;
    }
    densities.sort_by(f32::total_cmp);
    let reference = densities[((densities.len() - 1) as f32 * REFERENCE_QUANTILE) as usize];
    let dense = densities
        .iter()
        .filter(|&&d| d > DENSER_THAN * reference)
        .count();
    Some(dense as f32 / densities.len() as f32)
}

/// The dense-share limit that flags at most [`CLEAN_FLAGGED_AT_MOST`] of `clean` (the dense
/// shares of clean validation slides): the smallest share above all but that many of them,
/// and at least [`LOWEST_LIMIT`]. `None` without any clean slide.
pub fn limit_from_clean_validation(clean: &[f32]) -> Option<f32> {
    let mut shares: Vec<f32> = clean.iter().copied().filter(|s| s.is_finite()).collect();
    if shares.is_empty() {
        return None;
    }
    shares.sort_by(f32::total_cmp);
    let may_flag = (shares.len() as f32 * CLEAN_FLAGGED_AT_MOST).floor() as usize;
    // Flagged means above the limit: the limit is the share of the highest clean slide that
    // must stay unflagged.
    Some(shares[shares.len() - 1 - may_flag.min(shares.len() - 1)].max(LOWEST_LIMIT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screening::GridCell;

    fn grid(densities: &[f32]) -> TileGrid {
        TileGrid {
            cols: densities.len() as u32,
            rows: 1,
            tile: 64,
            stride: 32,
            cells: densities
                .iter()
                .map(|&d| GridCell {
                    tissue: if d > 0.0 { 1.0 } else { 0.0 },
                    density: Some(d),
                    probabilities: None,
                })
                .collect(),
        }
    }

    #[test]
    fn tissue_twice_as_dense_as_the_rest_counts_glass_does_not() {
        // Twelve tiles of one layer, four of two, four of glass.
        let mut densities = vec![0.4; 12];
        densities.extend([0.8; 4]);
        densities.extend([0.0; 4]);
        assert_eq!(dense_share(&grid(&densities)), Some(0.25));
        // The same tissue stained twice as dark is just as unfolded.
        let dark: Vec<f32> = densities.iter().map(|d| d * 2.0).collect();
        assert_eq!(dense_share(&grid(&dark)), Some(0.25));
        assert_eq!(dense_share(&grid(&[0.4; 12])), Some(0.0));
        assert_eq!(dense_share(&grid(&[0.4; 5])), None, "too little tissue");
        let mut unmeasured = grid(&[0.4; 12]);
        unmeasured.cells[3].density = None;
        assert_eq!(dense_share(&unmeasured), None, "screened before densities");
    }

    #[test]
    fn the_limit_leaves_all_but_one_in_twenty_clean_slides_unflagged() {
        let clean: Vec<f32> = (0..40).map(|i| i as f32 / 100.0).collect();
        // Two of forty may be flagged: the limit is the third-highest share.
        assert_eq!(limit_from_clean_validation(&clean), Some(0.37));
        assert_eq!(limit_from_clean_validation(&[0.1, 0.2]), Some(0.2));
        assert_eq!(limit_from_clean_validation(&[0.0; 30]), Some(LOWEST_LIMIT));
        assert_eq!(limit_from_clean_validation(&[]), None);
    }
}
