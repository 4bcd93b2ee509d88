//! Deep Zoom descriptors (`.dzi` XML) as an edge or a stored pyramid could hand them over: no
//! panic, and a descriptor that parses answers every level's questions and writes back to
//! itself.
#![no_main]

use grassroots_deepzoom::Descriptor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(image) = Descriptor::parse(xml) else {
        return;
    };
    for level in 0..=image.top_level().min(40) {
        let _ = image.level_size(level);
        let _ = image.grid(level);
        let _ = image.downsample(level);
    }
    let again = Descriptor::parse(&image.to_xml()).expect("own descriptor parses");
    assert_eq!(again, image);
});
