//! IIIF Image API request paths (`region/size/rotation/quality.format`) against an image of a
//! size the input chooses: no panic, whatever the numbers (overflow is a panic in this build).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let width = u32::from_le_bytes([data[0], data[1], data[2], 0]).max(1);
    let height = u32::from_le_bytes([data[3], data[4], data[5], 0]).max(1);
    let Ok(path) = std::str::from_utf8(&data[6..]) else {
        return;
    };
    let mut parts = path.splitn(4, '/');
    let (Some(region), Some(size), Some(rotation), Some(file)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let _ = grassroots_slides::iiif::parse_request(region, size, rotation, file, width, height);
});
