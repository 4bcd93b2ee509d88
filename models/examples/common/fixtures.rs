//! The fixtures as `grassroots model train` reads them, for the examples that measure its data.

use grassroots_models::training::dataset::TissueSources;

/// The context model's resolution, which the examples here measure at.
const CONTEXT_MICRONS_PER_PIXEL: f64 = 1.0;

/// Every host and lesion image of the fixtures at the context model's resolution (1 um/px).
pub fn all_sources(
    fixtures: &std::path::Path,
) -> Result<TissueSources, Box<dyn std::error::Error>> {
    let path = fixtures.join("cmu_small_region.svs");
    let slide = grassroots_slides::Slide::open(&path)
        .map_err(|e| format!("{}: {e} (run scripts/fetch-fixtures)", path.display()))?;
    // Read as the command reads it (`grassroots_bench::fl::data`): the slide's own scale, the
    // size rounded (2,220 x 2,967 px at 0.499 um/px: 1,108 x 1,481).
    let info = slide.info();
    let microns_per_pixel = info.microns_per_pixel_x.unwrap_or(0.5);
    let scale = microns_per_pixel / CONTEXT_MICRONS_PER_PIXEL;
    let size = |pixels: u32| (f64::from(pixels) * scale).round() as u32;
    let svs = slide.region_rgb(
        (0, 0, info.width, info.height),
        (size(info.width), size(info.height)),
    )?;
    Ok(TissueSources::all_from_fixtures(
        svs,
        microns_per_pixel,
        fixtures,
        CONTEXT_MICRONS_PER_PIXEL,
    )?)
}
