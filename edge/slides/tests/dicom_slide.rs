//! DICOM WSI made by wsidicomizer from the real SVS (`scripts/fetch-fixtures`): the same pixels as
//! the SVS read by OpenSlide, every level, stored frames passed through, and broken series.

use std::path::{Path, PathBuf};

use grassroots_slides::{Slide, SlideError, TileFormat};

fn fixtures() -> PathBuf {
    let dir = std::env::var("GRASSROOTS_FIXTURES").expect(
        "set GRASSROOTS_FIXTURES to a directory filled by scripts/fetch-fixtures (as .ci/run does)",
    );
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("cmu-dicom-ybr/.complete").exists(),
        "{} lacks the DICOM fixtures: run scripts/fetch-fixtures",
        dir.display()
    );
    dir
}

fn decode(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory(bytes).unwrap().to_rgb8()
}

/// Mean absolute difference per channel.
fn mean_difference(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let total: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    total as f64 / a.as_raw().len() as f64
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The file of the series holding the full-resolution level.
fn base_level_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .find(|path| {
            let object = dicom_object::OpenFileOptions::new()
                .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
                .open_file(path)
                .unwrap();
            let columns = object
                .element(dicom_dictionary_std::tags::TOTAL_PIXEL_MATRIX_COLUMNS)
                .unwrap()
                .to_int::<u32>()
                .unwrap();
            let kind = object
                .element(dicom_dictionary_std::tags::IMAGE_TYPE)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            columns == 2220 && kind.contains("VOLUME")
        })
        .unwrap()
}

#[test]
fn a_dicom_series_opens_with_the_svs_metadata() {
    let svs = Slide::open(&fixtures().join("cmu_small_region.svs")).unwrap();
    let slide = Slide::open(&fixtures().join("cmu-dicom")).unwrap();
    let info = slide.info();
    assert_eq!(info.vendor, "dicom");
    assert_eq!((info.width, info.height), (2220, 2967));
    assert_eq!(info.levels.len(), 5, "{info:?}");
    assert!((info.levels[1].downsample - 2.0).abs() < 0.01, "{info:?}");
    let (mpp, svs_mpp) = (
        info.microns_per_pixel_x.unwrap(),
        svs.info().microns_per_pixel_x.unwrap(),
    );
    assert!((mpp - svs_mpp).abs() < 0.001, "{mpp} vs {svs_mpp}");
    for name in ["label", "macro", "thumbnail"] {
        assert!(info.associated_images.iter().any(|n| n == name), "{info:?}");
        let dicom = decode(&slide.associated_image(name).unwrap());
        let aperio = decode(&svs.associated_image(name).unwrap());
        assert_eq!(dicom.dimensions(), aperio.dimensions(), "{name}");
        let difference = mean_difference(&dicom, &aperio);
        assert!(difference < 4.0, "{name} differs by {difference}");
    }
}

#[test]
fn dicom_regions_match_the_svs_read_by_openslide() {
    let svs = Slide::open(&fixtures().join("cmu_small_region.svs")).unwrap();
    // "cmu-dicom" holds the SVS's own JPEG tiles: at full resolution the pixels are the same.
    // "cmu-dicom-ybr" was re-encoded (lossy). Below full resolution the two pyramids differ:
    // wsidicomizer's generated levels against OpenSlide's base level resampled here.
    for (series, full_resolution_tolerance) in [("cmu-dicom", 0.5), ("cmu-dicom-ybr", 8.0)] {
        let slide = Slide::open(&fixtures().join(series)).unwrap();
        for (region, out, tolerance) in [
            ((700, 1000, 600, 500), (600, 500), full_resolution_tolerance),
            ((0, 0, 2220, 2967), (555, 742), 8.0),
            ((1024, 2048, 1024, 512), (256, 128), 14.0),
        ] {
            let dicom = decode(&slide.region(region, out, TileFormat::Png, 90).unwrap());
            let aperio = decode(&svs.region(region, out, TileFormat::Png, 90).unwrap());
            assert_eq!(dicom.dimensions(), out);
            let difference = mean_difference(&dicom, &aperio);
            assert!(
                difference < tolerance,
                "{series} {region:?}: mean difference {difference}"
            );
            // Not blank: the region holds tissue.
            let first = dicom.get_pixel(0, 0);
            assert!(dicom.pixels().any(|p| p
                .0
                .iter()
                .zip(first.0)
                .any(|(a, b)| a.abs_diff(b) > 30)));
        }
    }
}

#[test]
fn dicom_tiles_at_every_level_decode_to_the_right_size() {
    for series in ["cmu-dicom", "cmu-dicom-ybr"] {
        let slide = Slide::open(&fixtures().join(series)).unwrap();
        let info = slide.info().clone();
        assert_eq!(info.deep_zoom_levels, 13);
        let (tile, overlap) = (info.tile_size, info.overlap);
        for level in 0..info.deep_zoom_levels {
            let (width, height) = slide.level_size(level).unwrap();
            let (cols, rows) = (width.div_ceil(tile), height.div_ceil(tile));
            for (col, row) in [(0, 0), (cols - 1, rows - 1), (cols / 2, rows / 2)] {
                let bytes = slide.tile(level, col, row, TileFormat::Jpeg, 75).unwrap();
                let axis = |length: u32, index: u32, count: u32| {
                    (length - index * tile).min(tile)
                        + overlap * (u32::from(index > 0) + u32::from(index + 1 < count))
                };
                assert_eq!(
                    decode(&bytes).dimensions(),
                    (axis(width, col, cols), axis(height, row, rows)),
                    "{series} level {level} tile {col}_{row}"
                );
            }
            assert!(matches!(
                slide.tile(level, cols, 0, TileFormat::Jpeg, 75),
                Err(SlideError::TileOutOfRange { .. })
            ));
        }
    }
}

#[test]
fn a_tile_aligned_with_a_stored_frame_is_the_frames_bytes() {
    let dir = fixtures().join("cmu-dicom-ybr");
    let slide = Slide::open(&dir).unwrap();
    let info = slide.info();
    assert_eq!((info.tile_size, info.overlap), (256, 0));
    let grid = info
        .native_tiles
        .as_ref()
        .expect("YCbCr JPEG frames pass through");
    assert_eq!(grid.scale_factors, vec![1, 2, 4, 8, 16]);
    // dicom-rs reading the whole object: the second frame of the base level (tile 1, 0).
    let object = dicom_object::open_file(base_level_file(&dir)).unwrap();
    let pixel_data = object
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap();
    let fragments = pixel_data.value().fragments().unwrap();
    let top = info.deep_zoom_levels - 1;
    let served = slide.tile(top, 1, 0, TileFormat::Jpeg, 75).unwrap();
    assert_eq!(served, fragments[1], "tile 1_0 is frame 2 as stored");
    // The same frame through IIIF-style region addressing.
    let region = slide
        .region((256, 0, 256, 256), (256, 256), TileFormat::Jpeg, 75)
        .unwrap();
    assert_eq!(region, fragments[1]);
    // An edge tile (padded in the file) is rendered, cut to the image.
    let edge = slide.tile(top, 8, 0, TileFormat::Jpeg, 75).unwrap();
    assert_eq!(decode(&edge).dimensions(), (2220 - 8 * 256, 256));
}

#[test]
fn openslide_pythons_dicom_fixtures_open_with_jpeg_and_native_frames() {
    let slide = Slide::open(&fixtures().join("openslide-dicom")).unwrap();
    let info = slide.info();
    assert_eq!((info.width, info.height), (16, 16));
    assert_eq!(info.associated_images, vec!["thumbnail".to_string()]);
    // The image is smaller than one frame: the frame's padding is not shown.
    let tile = decode(
        &slide
            .tile(info.deep_zoom_levels - 1, 0, 0, TileFormat::Png, 75)
            .unwrap(),
    );
    assert_eq!(tile.dimensions(), (16, 16));
    // The thumbnail's frame is native (uncompressed) RGB; "boxes" has distinct colours.
    let thumbnail = decode(&slide.associated_image("thumbnail").unwrap());
    assert_eq!(thumbnail.dimensions(), (16, 16));
    let colours: std::collections::HashSet<[u8; 3]> =
        tile.pixels().map(|p| p.0.map(|c| c / 64)).collect();
    assert!(colours.len() >= 3, "{colours:?}");
}

#[test]
fn broken_and_foreign_dicom_fails_with_a_clear_reason() {
    let dir = tempfile::tempdir().unwrap();
    // A CT image: DICOM, but not a slide.
    let error = Slide::open(&fixtures().join("CT_small.dcm"))
        .err()
        .expect("a CT image is not a slide")
        .to_string();
    assert!(error.contains("not a whole-slide image"), "{error}");

    // A series whose base level was cut short in transfer.
    let truncated = dir.path().join("truncated");
    copy_dir(&fixtures().join("cmu-dicom"), &truncated);
    let base = base_level_file(&truncated);
    let length = std::fs::metadata(&base).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&base).unwrap();
    file.set_len(length / 2).unwrap();
    let error = Slide::open(&truncated)
        .err()
        .expect("truncated")
        .to_string();
    assert!(error.contains("truncated"), "{error}");

    // Two series in one folder.
    let mixed = dir.path().join("mixed");
    copy_dir(&fixtures().join("cmu-dicom"), &mixed);
    copy_dir(&fixtures().join("cmu-dicom-ybr"), &mixed);
    let error = Slide::open(&mixed).err().expect("two series").to_string();
    assert!(error.contains("2 series"), "{error}");

    // DICOM's magic followed by garbage.
    let garbage = dir.path().join("garbage.dcm");
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM");
    bytes.extend((0..5000u32).map(|i| (i * 7919 % 251) as u8));
    std::fs::write(&garbage, bytes).unwrap();
    let error = Slide::open(&garbage).err().expect("garbage").to_string();
    assert!(error.contains("garbage.dcm"), "{error}");
}

/// The file of the series whose Image Type names `flavor` (LABEL, OVERVIEW...).
fn instance_of_flavor(dir: &Path, flavor: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|path| {
            let object = dicom_object::OpenFileOptions::new()
                .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
                .open_file(path)
                .unwrap();
            object
                .element(dicom_dictionary_std::tags::IMAGE_TYPE)
                .unwrap()
                .to_str()
                .unwrap()
                .contains(flavor)
        })
        .unwrap_or_else(|| panic!("no {flavor} instance in {}", dir.display()))
}

/// Rewrites an explicit-VR UL element's value in place (the value keeps its length, so no
/// offset in the file moves): how a crafted header is made from a real one.
pub fn patch_ul(file: &Path, tag: (u16, u16), value: u32) {
    let mut bytes = std::fs::read(file).unwrap();
    let mut header = Vec::new();
    header.extend_from_slice(&tag.0.to_le_bytes());
    header.extend_from_slice(&tag.1.to_le_bytes());
    header.extend_from_slice(b"UL\x04\x00");
    let at = bytes
        .windows(header.len())
        .position(|w| w == header.as_slice())
        .unwrap_or_else(|| panic!("no UL element {tag:04x?} in {}", file.display()));
    bytes[at + 8..at + 12].copy_from_slice(&value.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn a_label_declaring_a_huge_image_is_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let crafted = dir.path().join("crafted");
    copy_dir(&fixtures().join("cmu-dicom"), &crafted);
    let label = instance_of_flavor(&crafted, "LABEL");
    // 2,000,000 x 2,000,000 pixels: 12 TB of RGB, which aborted the process before.
    patch_ul(&label, (0x0048, 0x0006), 2_000_000);
    patch_ul(&label, (0x0048, 0x0007), 2_000_000);
    let slide = Slide::open(&crafted).unwrap();
    assert!(slide.info().associated_images.iter().any(|n| n == "label"));
    let error = slide.associated_image("label").unwrap_err();
    assert!(
        matches!(
            error,
            SlideError::ImageTooLarge {
                width: 2_000_000,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("2000000 x 2000000"), "{error}");
    // The slide itself still reads.
    let info = slide.info().clone();
    slide
        .tile(info.deep_zoom_levels - 1, 0, 0, TileFormat::Jpeg, 75)
        .unwrap();

    // A level declaring four billion frames fails the slide with the reason, allocating nothing.
    let frames = dir.path().join("frames");
    copy_dir(&fixtures().join("cmu-dicom"), &frames);
    let base = base_level_file(&frames);
    let bytes = std::fs::read(&base).unwrap();
    // Number of Frames (0028,0008), an IS string, replaced by a longer one: the elements after
    // it move, which a reader that parses the data set (as this one does) does not mind.
    let at = bytes
        .windows(6)
        .position(|w| w == b"\x28\x00\x08\x00IS")
        .unwrap();
    let length = u16::from_le_bytes([bytes[at + 6], bytes[at + 7]]) as usize;
    let mut patched = bytes[..at + 6].to_vec();
    patched.extend_from_slice(&10u16.to_le_bytes());
    patched.extend_from_slice(b"4000000000");
    patched.extend_from_slice(&bytes[at + 8 + length..]);
    std::fs::write(&base, patched).unwrap();
    let error = Slide::open(&frames)
        .err()
        .expect("too many frames")
        .to_string();
    assert!(error.contains("frames declared"), "{error}");
}
