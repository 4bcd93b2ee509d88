//! DICOM whole-slide image files (seeded from real ones: `scripts/fuzz` copies OpenSlide's
//! test slides into the corpus) read as the edge reads them: open, then the top-left tile of the
//! smallest and largest levels and a small region. No panic, no unbounded allocation.
#![no_main]

use std::io::Write;

use grassroots_slides::{Slide, TileFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Only DICOM: anything else would be handed to OpenSlide, which is not ours to fuzz here.
    if data.len() < 132 || &data[128..132] != b"DICM" {
        return;
    }
    let path = std::env::temp_dir().join(format!("grassroots-fuzz-{}.dcm", std::process::id()));
    let written = std::fs::File::create(&path).and_then(|mut file| file.write_all(data));
    if written.is_err() {
        return;
    }
    if let Ok(slide) = Slide::open(&path) {
        let info = slide.info().clone();
        let top = info.levels.len().saturating_sub(1) as u32;
        let _ = slide.level_size(0);
        let _ = slide.tile(0, 0, 0, TileFormat::Jpeg, 80);
        let _ = slide.tile(top, 0, 0, TileFormat::Jpeg, 80);
        let _ = slide.region_rgb((0, 0, 64, 64), (32, 32));
    }
    let _ = std::fs::remove_file(&path);
});
