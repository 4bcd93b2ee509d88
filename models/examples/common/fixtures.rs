//! The fixtures as `grassroots model train` reads them, for the examples that measure its data.

use grassroots_models::training::dataset::TissueSources;

/// Every host and lesion image of the fixtures at the context model's resolution (1 um/px).
pub fn all_sources(
    fixtures: &std::path::Path,
) -> Result<TissueSources, Box<dyn std::error::Error>> {
    let slide = grassroots_slides::Slide::open(&fixtures.join("cmu_small_region.svs"))?;
    let svs = slide.region_rgb((0, 0, 2220, 2967), (1108, 1480))?;
    Ok(TissueSources::all_from_fixtures(svs, 0.499, fixtures, 1.0)?)
}
