//! DICOM whole-slide images (Supplement 145), read with dicom-rs.
//!
//! Debian's OpenSlide (3.4) cannot read DICOM WSI, so the edge does: a slide is one series of
//! instances — one instance a pyramid level (image type VOLUME), plus LABEL, OVERVIEW and
//! THUMBNAIL — each a grid of frames (tiles), JPEG-compressed or native. Only the data set up to
//! Pixel Data is parsed; frames are located by walking item headers ([`frames`]) and read on
//! demand, so a level of gigabytes costs a few kilobytes of memory. Tiled-full and tiled-sparse
//! organisations are read, and concatenations; of several focal planes or optical paths, the
//! first. JPEG 2000 and other codecs this crate cannot decode make the slide fail with that
//! reason, rather than show wrong pixels.

mod frames;
mod lengths;
mod render;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use image::RgbImage;

use frames::FrameLocation;

/// VL Whole Slide Microscopy Image Storage.
const WSI_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.77.1.6";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const EXPLICIT_LITTLE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LITTLE: &str = "1.2.840.10008.1.2";

/// Most frames one image may declare (a 1,000,000-pixel-square level of 256-pixel tiles has
/// about 15 million): the frame table is allocated from this figure.
const MAX_FRAMES: u32 = 1 << 24;
/// Most pixels of one frame (a tile, or an associated image stored as one frame).
const MAX_FRAME_PIXELS: u64 = crate::MAX_ASSOCIATED_PIXELS;

/// Whether the file at `path` starts like a DICOM Part 10 file ("DICM" after the preamble).
pub(crate) fn is_dicom_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head[128..132] == b"DICM")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Codec {
    /// Baseline JPEG; `ybr` when the frames are YCbCr, which browsers decode unaided.
    Jpeg { ybr: bool },
    /// Uncompressed, interleaved 8-bit samples (1 or 3 a pixel).
    Native { samples: u16 },
}

/// One image of the series: a pyramid level or an associated image.
pub(crate) struct DicomImage {
    pub width: u32,
    pub height: u32,
    pub tile_width: u32,
    pub tile_height: u32,
    tiles_across: u32,
    codec: Codec,
    /// Frames in file order, each with the index of its file.
    frames: Vec<(usize, FrameLocation)>,
    /// For tiled-sparse images: the frame at each tile position.
    sparse: Option<HashMap<(u32, u32), usize>>,
}

/// An open DICOM WSI series.
pub(crate) struct DicomWsi {
    files: Vec<File>,
    /// Pyramid levels, largest first.
    pub levels: Vec<DicomImage>,
    /// Label, macro (overview) and thumbnail, by OpenSlide's names.
    pub associated: Vec<(String, DicomImage)>,
    pub microns_per_pixel: Option<(f64, f64)>,
    pub objective_power: Option<u32>,
}

/// What one instance says about itself.
struct Instance {
    path: PathBuf,
    object: InMemDicomObject,
    transfer_syntax: String,
    dataset_start: u64,
}

fn text(object: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = object.element_opt(tag).ok()??.to_str().ok()?;
    Some(value.trim().trim_end_matches('\0').to_string())
}

fn number(object: &InMemDicomObject, tag: Tag) -> Option<u32> {
    object.element_opt(tag).ok()??.to_int::<u32>().ok()
}

fn first_item(object: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    object.element_opt(tag).ok()??.items()?.first()
}

impl Instance {
    fn read(path: &Path) -> Result<Self, String> {
        // dicom-rs allocates what an element declares before reading it.
        lengths::check_declared_lengths(path)
            .map_err(|e| format!("not a readable DICOM file: {e}"))?;
        let file = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)
            .map_err(|e| format!("not a readable DICOM file: {e}"))?;
        let meta = file.meta();
        let transfer_syntax = meta.transfer_syntax().trim_end_matches('\0').to_string();
        // Preamble and "DICM", the group length element, then the rest of the meta group.
        let dataset_start = 132 + 12 + u64::from(meta.information_group_length);
        Ok(Self {
            path: path.to_path_buf(),
            object: file.into_inner(),
            transfer_syntax,
            dataset_start,
        })
    }

    fn get(&self, tag: Tag, name: &str) -> Result<u32, String> {
        number(&self.object, tag).ok_or_else(|| format!("no {name}"))
    }

    /// VOLUME, LABEL, OVERVIEW or THUMBNAIL (the third value of Image Type).
    fn flavor(&self) -> String {
        text(&self.object, tags::IMAGE_TYPE)
            .and_then(|t| t.split('\\').nth(2).map(|s| s.trim().to_uppercase()))
            .unwrap_or_default()
    }

    fn codec(&self) -> Result<Codec, String> {
        let photometric = text(&self.object, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
        let samples = number(&self.object, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
        let bits = number(&self.object, tags::BITS_ALLOCATED).unwrap_or(8);
        let planar = number(&self.object, tags::PLANAR_CONFIGURATION).unwrap_or(0);
        match self.transfer_syntax.as_str() {
            JPEG_BASELINE => Ok(Codec::Jpeg {
                ybr: photometric.starts_with("YBR"),
            }),
            EXPLICIT_LITTLE | IMPLICIT_LITTLE
                if bits == 8
                    && planar == 0
                    && matches!(
                        (samples, photometric.as_str()),
                        (3, "RGB") | (1, "MONOCHROME2")
                    ) =>
            {
                Ok(Codec::Native {
                    samples: samples as u16,
                })
            }
            EXPLICIT_LITTLE | IMPLICIT_LITTLE => Err(format!(
                "uncompressed {photometric} pixels with {samples} samples of {bits} bits are not supported"
            )),
            other => Err(format!(
                "frames in transfer syntax {other} (JPEG 2000, JPEG-LS...) are not supported; baseline JPEG and uncompressed are"
            )),
        }
    }

    /// The tile positions of a tiled-sparse image, frame by frame.
    fn sparse_positions(
        &self,
        tile_width: u32,
        tile_height: u32,
    ) -> Option<HashMap<(u32, u32), usize>> {
        let organised = text(&self.object, tags::DIMENSION_ORGANIZATION_TYPE);
        if organised.as_deref() == Some("TILED_FULL") {
            return None;
        }
        let frames = self
            .object
            .element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .ok()??
            .items()?;
        let mut positions = HashMap::new();
        for (index, frame) in frames.iter().enumerate() {
            let Some(position) = first_item(frame, tags::PLANE_POSITION_SLIDE_SEQUENCE) else {
                continue;
            };
            let column = number(position, tags::COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX);
            let row = number(position, tags::ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX);
            if let (Some(column), Some(row)) = (column, row) {
                let tile = (
                    column.saturating_sub(1) / tile_width,
                    row.saturating_sub(1) / tile_height,
                );
                // The first focal plane and optical path at each position.
                positions.entry(tile).or_insert(index);
            }
        }
        Some(positions)
    }

    fn microns_per_pixel(&self) -> Option<(f64, f64)> {
        let shared = first_item(&self.object, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)?;
        let measures = first_item(shared, tags::PIXEL_MEASURES_SEQUENCE)?;
        let spacing = measures
            .element_opt(tags::PIXEL_SPACING)
            .ok()??
            .to_multi_float64()
            .ok()?;
        // Row spacing (vertical) first, in millimetres.
        match spacing.as_slice() {
            [y, x] if *x > 0.0 && *y > 0.0 => Some((x * 1000.0, y * 1000.0)),
            _ => None,
        }
    }

    fn objective_power(&self) -> Option<u32> {
        let path = first_item(&self.object, tags::OPTICAL_PATH_SEQUENCE)?;
        let power = path
            .element_opt(tags::OBJECTIVE_LENS_POWER)
            .ok()??
            .to_float64()
            .ok()?;
        (power > 0.0 && power < 1000.0).then_some(power.round() as u32)
    }
}

impl DicomWsi {
    /// Opens the instances of one series. Any file that is not DICOM, a DICOM object that is
    /// not a whole-slide image, or a second series is an error naming the file.
    pub fn open(paths: &[PathBuf]) -> Result<Self, (PathBuf, String)> {
        let mut instances = Vec::new();
        for path in paths {
            let instance = Instance::read(path).map_err(|e| (path.clone(), e))?;
            let class = text(&instance.object, tags::SOP_CLASS_UID).unwrap_or_default();
            if class != WSI_SOP_CLASS {
                let modality = text(&instance.object, tags::MODALITY).unwrap_or_default();
                return Err((
                    path.clone(),
                    format!("a DICOM {modality} object (SOP class {class}), not a whole-slide image (Supplement 145)"),
                ));
            }
            instances.push(instance);
        }
        let series: std::collections::BTreeSet<String> = instances
            .iter()
            .map(|i| text(&i.object, tags::SERIES_INSTANCE_UID).unwrap_or_default())
            .collect();
        if series.len() > 1 {
            let first = paths.first().cloned().unwrap_or_default();
            return Err((
                first,
                format!(
                    "{} series in one slide; import each series on its own",
                    series.len()
                ),
            ));
        }
        let mut files = Vec::new();
        let mut volume: Vec<(u32, u32, u32, DicomImage)> = Vec::new();
        let mut associated = Vec::new();
        let mut microns_per_pixel = None;
        let mut objective_power = None;
        for instance in &instances {
            let fail = |e: String| (instance.path.clone(), e);
            let flavor = instance.flavor();
            let name = match flavor.as_str() {
                "VOLUME" => None,
                "LABEL" => Some("label"),
                "OVERVIEW" => Some("macro"),
                "THUMBNAIL" => Some("thumbnail"),
                _ => continue,
            };
            let file = File::open(&instance.path).map_err(|e| fail(e.to_string()))?;
            files.push(file);
            let image = DicomImage::read(instance, files.len() - 1).map_err(fail)?;
            match name {
                Some(name) => associated.push((name.to_string(), image)),
                None => {
                    // The spacing of the largest level is the slide's.
                    if volume.iter().all(|v| v.2 < image.width) {
                        microns_per_pixel = instance.microns_per_pixel().or(microns_per_pixel);
                    }
                    objective_power = objective_power.or_else(|| instance.objective_power());
                    let offset = number(&instance.object, tags::CONCATENATION_FRAME_OFFSET_NUMBER)
                        .unwrap_or(0);
                    let order = number(&instance.object, tags::INSTANCE_NUMBER).unwrap_or(0);
                    volume.push((offset, order, image.width, image));
                }
            }
        }
        let levels = merge_levels(volume);
        if levels.is_empty() {
            let first = paths.first().cloned().unwrap_or_default();
            return Err((
                first,
                "the series has no VOLUME image (no pyramid level)".into(),
            ));
        }
        Ok(Self {
            files,
            levels,
            associated,
            microns_per_pixel,
            objective_power,
        })
    }

    /// Reads `width` x `height` pixels at (`x`, `y`) of a level, in that level's pixels; what
    /// lies outside the image is white.
    pub fn read_region(
        &self,
        image: &DicomImage,
        (x, y): (u32, u32),
        (width, height): (u32, u32),
    ) -> Result<RgbImage, String> {
        let mut out = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
        let (tw, th) = (image.tile_width, image.tile_height);
        let last_col = (x + width).min(image.width).saturating_sub(1) / tw;
        let last_row = (y + height).min(image.height).saturating_sub(1) / th;
        for row in y / th..=last_row {
            for col in x / tw..=last_col {
                let Some(tile) = self.decode_tile(image, col, row)? else {
                    continue;
                };
                let (tile_x, tile_y) = (
                    i64::from(col * tw) - i64::from(x),
                    i64::from(row * th) - i64::from(y),
                );
                image::imageops::replace(&mut out, &tile, tile_x, tile_y);
            }
        }
        Ok(out)
    }

    /// A tile's stored bytes, when it is a baseline YCbCr JPEG a browser shows as it is.
    pub fn stored_jpeg(
        &self,
        image: &DicomImage,
        col: u32,
        row: u32,
    ) -> Option<Result<Vec<u8>, String>> {
        if image.codec != (Codec::Jpeg { ybr: true }) {
            return None;
        }
        let (file, frame) = image.frame(col, row)?;
        Some(frames::read_frame(&self.files[*file], frame).map_err(|e| e.to_string()))
    }

    /// Whether every level's frames are YCbCr JPEG, which aligned requests get as stored.
    pub fn passes_through(&self) -> bool {
        self.levels
            .iter()
            .all(|level| level.codec == Codec::Jpeg { ybr: true })
    }

    /// An associated image's size as its header states it.
    pub fn associated_image_size(&self, name: &str) -> Option<(u64, u64)> {
        let (_, image) = self.associated.iter().find(|(n, _)| n == name)?;
        Some((u64::from(image.width), u64::from(image.height)))
    }

    /// A whole associated image; the caller has checked its size against
    /// [`MAX_ASSOCIATED_PIXELS`](crate::MAX_ASSOCIATED_PIXELS).
    pub fn associated_image(&self, name: &str) -> Option<Result<RgbImage, String>> {
        let (_, image) = self.associated.iter().find(|(n, _)| n == name)?;
        Some(self.read_region(image, (0, 0), (image.width, image.height)))
    }

    fn decode_tile(
        &self,
        image: &DicomImage,
        col: u32,
        row: u32,
    ) -> Result<Option<RgbImage>, String> {
        let Some((file, frame)) = image.frame(col, row) else {
            return Ok(None);
        };
        let bytes = frames::read_frame(&self.files[*file], frame)
            .map_err(|e| format!("reading frame at tile {col},{row}: {e}"))?;
        let decoded = match image.codec {
            Codec::Jpeg { .. } => {
                image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
                    .map_err(|e| format!("decoding the JPEG frame at tile {col},{row}: {e}"))?
                    .to_rgb8()
            }
            Codec::Native { samples: 3 } => {
                RgbImage::from_raw(image.tile_width, image.tile_height, bytes)
                    .ok_or("a native frame of the wrong size")?
            }
            Codec::Native { .. } => {
                let gray = image::GrayImage::from_raw(image.tile_width, image.tile_height, bytes)
                    .ok_or("a native frame of the wrong size")?;
                image::DynamicImage::ImageLuma8(gray).to_rgb8()
            }
        };
        Ok(Some(decoded))
    }
}

impl DicomImage {
    fn read(instance: &Instance, file: usize) -> Result<Self, String> {
        let width = instance
            .get(
                tags::TOTAL_PIXEL_MATRIX_COLUMNS,
                "Total Pixel Matrix Columns",
            )
            .or_else(|_| instance.get(tags::COLUMNS, "Columns"))?;
        let height = instance
            .get(tags::TOTAL_PIXEL_MATRIX_ROWS, "Total Pixel Matrix Rows")
            .or_else(|_| instance.get(tags::ROWS, "Rows"))?;
        let tile_width = instance.get(tags::COLUMNS, "Columns")?;
        let tile_height = instance.get(tags::ROWS, "Rows")?;
        let frame_count = number(&instance.object, tags::NUMBER_OF_FRAMES).unwrap_or(1);
        if width == 0 || height == 0 || tile_width == 0 || tile_height == 0 || frame_count == 0 {
            return Err("an image of no pixels".into());
        }
        // Every figure below sizes an allocation or a loop: bound them before use.
        if frame_count > MAX_FRAMES {
            return Err(format!(
                "{frame_count} frames declared, more than the {MAX_FRAMES} this edge reads"
            ));
        }
        if u64::from(tile_width) * u64::from(tile_height) > MAX_FRAME_PIXELS {
            return Err(format!(
                "frames of {tile_width} x {tile_height} pixels, more than the {MAX_FRAME_PIXELS} this edge decodes"
            ));
        }
        let codec = instance.codec()?;
        let frame_bytes = match codec {
            Codec::Native { samples } => {
                u64::from(tile_width) * u64::from(tile_height) * u64::from(samples)
            }
            Codec::Jpeg { .. } => 0,
        };
        let frames = frames::locate_frames(
            &instance.path,
            instance.dataset_start,
            &instance.transfer_syntax,
            frame_count,
            frame_bytes,
        )?
        .into_iter()
        .map(|frame| (file, frame))
        .collect();
        Ok(Self {
            width,
            height,
            tile_width,
            tile_height,
            tiles_across: width.div_ceil(tile_width),
            codec,
            frames,
            sparse: instance.sparse_positions(tile_width, tile_height),
        })
    }

    fn frame(&self, col: u32, row: u32) -> Option<&(usize, FrameLocation)> {
        if col >= self.tiles_across || row >= self.height.div_ceil(self.tile_height) {
            return None;
        }
        let index = match &self.sparse {
            Some(positions) => *positions.get(&(col, row))?,
            None => usize::try_from(u64::from(row) * u64::from(self.tiles_across) + u64::from(col))
                .ok()?,
        };
        self.frames.get(index)
    }
}

/// Groups VOLUME images by size into levels, largest first. Instances of one size that are a
/// concatenation are joined in frame-offset order; otherwise the first (by instance number) is
/// the level and the rest — other focal planes or optical paths — are left out.
fn merge_levels(mut volume: Vec<(u32, u32, u32, DicomImage)>) -> Vec<DicomImage> {
    volume.sort_by_key(|(offset, order, width, _)| (std::cmp::Reverse(*width), *offset, *order));
    let mut levels: Vec<DicomImage> = Vec::new();
    let mut last_offset = 0;
    for (offset, _, _, image) in volume {
        match levels.last_mut() {
            Some(level) if (level.width, level.height) == (image.width, image.height) => {
                if offset > last_offset
                    && offset as usize == level.frames.len()
                    && level.sparse.is_none()
                {
                    level.frames.extend(image.frames);
                    last_offset = offset;
                }
            }
            _ => {
                last_offset = offset;
                levels.push(image);
            }
        }
    }
    levels
}
