//! The fixtures as `grassroots model train` reads them, for the examples that measure its data.

use grassroots_models::training::dataset::TissueSources;

/// Every host and lesion image of the fixtures at the context model's resolution (1 um/px).
pub fn all_sources(
    fixtures: &std::path::Path,
) -> Result<TissueSources, Box<dyn std::error::Error>> {
    let slide = grassroots_slides::Slide::open(&fixtures.join("cmu_small_region.svs"))?;
    // Read as the command reads it (`grassroots_bench::fl::data`): the slide's own scale, the
    // size rounded (2,220 x 2,967 px at 0.499 um/px: 1,108 x 1,481).
    let info = slide.info();
    let microns_per_pixel = info.microns_per_pixel_x.unwrap_or(0.5);
    let size = |pixels: u32| (f64::from(pixels) * microns_per_pixel).round() as u32;
    let svs = slide.region_rgb(
        (0, 0, info.width, info.height),
        (size(info.width), size(info.height)),
    )?;
    Ok(TissueSources::all_from_fixtures(
        svs,
        microns_per_pixel,
        fixtures,
        1.0,
    )?)
}
