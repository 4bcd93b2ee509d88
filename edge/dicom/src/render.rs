//! Rendering a stored image on the server, so that the browser only ever receives a JPEG: the
//! pixel data is decoded here (dicom-pixeldata: uncompressed, deflate, RLE, JPEG baseline,
//! extended and lossless, JPEG-LS, JPEG 2000; colour laid out and converted to RGB by
//! [`crate::colour`]), the modality LUT applied (Hounsfield units for CT), then a
//! window (center/width, DICOM's linear function, PS3.3 C.11.2.1.2), and the result scaled to the
//! viewport asked for. Region statistics (mean HU of a rectangle) are computed from the same
//! modality values, never from the windowed picture.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use dicom_pixeldata::{PhotometricInterpretation, PixelDecoder};

use crate::{DicomError, Result};

/// The largest frame rendered (as the slide viewer's regions): 64 Mpx.
pub const MAX_FRAME_PIXELS: u64 = 64 << 20;

/// A window: the values from `center - width/2` to `center + width/2` spread over black to white.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Window {
    pub center: f64,
    pub width: f64,
}

impl Window {
    /// `center,width` (PS3.18's `window` parameter, without the function or with `linear`).
    pub fn parse(text: &str) -> Result<Window> {
        let mut parts = text.split(',');
        let mut number = |name: &str| -> Result<f64> {
            parts
                .next()
                .and_then(|p| p.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    DicomError::BadQuery(format!(
                        "window {text:?}: {name} is not a number; write center,width"
                    ))
                })
        };
        let window = Window {
            center: number("the center")?,
            width: number("the width")?,
        };
        match parts.next().map(str::trim) {
            None | Some("linear") | Some("LINEAR") => {}
            Some(other) => {
                return Err(DicomError::BadQuery(format!(
                    "window function {other:?}: only linear is rendered"
                )))
            }
        }
        if window.width < 1.0 {
            return Err(DicomError::BadQuery(format!(
                "window width {}: at least 1",
                window.width
            )));
        }
        Ok(window)
    }

    /// The 8-bit grey of `value` (PS3.3 C.11.2.1.2.1, the linear function).
    pub fn grey(self, value: f64) -> u8 {
        let low = self.center - 0.5 - (self.width - 1.0) / 2.0;
        let high = self.center - 0.5 + (self.width - 1.0) / 2.0;
        if value <= low {
            0
        } else if value > high {
            255
        } else {
            (((value - (self.center - 0.5)) / (self.width - 1.0) + 0.5) * 255.0).round() as u8
        }
    }
}

/// What to render.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// Zero-based frame of a multi-frame image.
    pub frame: u32,
    /// None: the image's own window (Window Center/Width), else its values' full range.
    pub window: Option<Window>,
    /// Fit within this many pixels (never enlarged); None: full size.
    pub viewport: Option<(u32, u32)>,
}

/// A rendered frame.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// The window applied (none for colour images).
    pub window: Option<Window>,
}

/// Statistics of a rectangle's modality values (Hounsfield units for CT).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct RegionStats {
    pub pixels: usize,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub standard_deviation: f64,
}

fn unreadable(path: &Path, error: impl std::fmt::Display) -> DicomError {
    DicomError::Unreadable {
        what: path.display().to_string(),
        reason: error.to_string(),
    }
}

/// A frame's modality values (rescaled), its size, the image's own window and whether it is
/// MONOCHROME1 (inverted). Colour images give `None`.
struct Grey {
    values: Vec<f32>,
    width: u32,
    height: u32,
    own_window: Option<Window>,
    inverted: bool,
}

fn frames_of(object: &dicom_object::DefaultDicomObject) -> u32 {
    crate::instance::number::<f64>(object, tags::NUMBER_OF_FRAMES)
        .map(|n| n.max(1.0) as u32)
        .unwrap_or(1)
}

enum Decoded {
    Grey(Grey),
    Colour(image::RgbImage),
}

fn decode(path: &Path, frame: u32) -> Result<Decoded> {
    let object = OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| unreadable(path, e))?;
    let pixels = u64::from(crate::instance::unsigned::<u16>(&object, tags::ROWS).unwrap_or(0))
        * u64::from(crate::instance::unsigned::<u16>(&object, tags::COLUMNS).unwrap_or(0));
    if pixels > MAX_FRAME_PIXELS {
        return Err(DicomError::BadQuery(format!(
            "a frame of {} Mpx is more than this viewer renders ({} Mpx)",
            pixels >> 20,
            MAX_FRAME_PIXELS >> 20
        )));
    }
    let frames = frames_of(&object);
    if frame >= frames {
        return Err(DicomError::NoSuchFrame {
            frame: frame + 1,
            frames,
        });
    }
    if let Some(stored) = crate::colour::stored_ybr_full_422_frame(&object, frame) {
        let bytes = stored.map_err(|reason| unreadable(path, reason))?;
        let size = |tag| u32::from(crate::instance::unsigned::<u16>(&object, tag).unwrap_or(0));
        return crate::colour::ybr_full_422_image(&bytes, size(tags::COLUMNS), size(tags::ROWS))
            .map(Decoded::Colour)
            .ok_or_else(|| unreadable(path, "its YBR_FULL_422 pixel data do not fill a frame"));
    }
    let decoded = object
        .decode_pixel_data_frame(frame)
        .map_err(|e| unreadable(path, format!("its pixel data cannot be decoded: {e}")))?;
    let (width, height) = (decoded.columns(), decoded.rows());
    if decoded.samples_per_pixel() == 3 {
        // 8-bit colour (every colour IOD but a few 16-bit secondary captures) is laid out and
        // converted to RGB here: dicom-pixeldata's conversion mislabels or miscolours some of
        // it ([`crate::colour`]).
        let colour = crate::colour::decoded_colour(&object);
        if let (8, Some(colour)) = (decoded.bits_allocated(), colour) {
            return crate::colour::rgb_image(decoded.data(), width, height, colour)
                .map(Decoded::Colour)
                .ok_or_else(|| {
                    unreadable(path, "its pixel data hold fewer samples than its size says")
                });
        }
        let image = decoded
            .to_dynamic_image(0)
            .map_err(|e| unreadable(path, e))?
            .to_rgb8();
        return Ok(Decoded::Colour(image));
    }
    let values: Vec<f32> = decoded
        .to_vec_frame::<f32>(0)
        .map_err(|e| unreadable(path, e))?;
    let own_window = match (
        crate::instance::number::<f64>(&object, tags::WINDOW_CENTER),
        crate::instance::number::<f64>(&object, tags::WINDOW_WIDTH),
    ) {
        (Some(center), Some(width)) if width >= 1.0 => Some(Window { center, width }),
        _ => None,
    };
    let inverted = matches!(
        decoded.photometric_interpretation(),
        PhotometricInterpretation::Monochrome1
    );
    Ok(Decoded::Grey(Grey {
        values,
        width,
        height,
        own_window,
        inverted,
    }))
}

/// The pixel data of `frames` (numbers from 1) of the image in `path`, each decoded to native
/// little-endian samples (DICOMweb's `application/octet-stream` frames).
pub fn frame_bytes(path: &Path, frames: &[u32]) -> Result<Vec<Vec<u8>>> {
    let object = OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| unreadable(path, e))?;
    let count = frames_of(&object);
    let pixels = u64::from(crate::instance::unsigned::<u16>(&object, tags::ROWS).unwrap_or(0))
        * u64::from(crate::instance::unsigned::<u16>(&object, tags::COLUMNS).unwrap_or(0));
    if pixels > MAX_FRAME_PIXELS {
        return Err(DicomError::BadQuery(format!(
            "a frame of {} Mpx is more than this server decodes ({} Mpx)",
            pixels >> 20,
            MAX_FRAME_PIXELS >> 20
        )));
    }
    let mut total = 0usize;
    frames
        .iter()
        .map(|frame| {
            if *frame == 0 || *frame > count {
                return Err(DicomError::NoSuchFrame {
                    frame: *frame,
                    frames: count,
                });
            }
            // Native YBR_FULL_422 is handed out as stored (two bytes a pixel), as a native
            // frame is; dicom-pixeldata would refuse it.
            let bytes = match crate::colour::stored_ybr_full_422_frame(&object, frame - 1) {
                Some(stored) => stored.map_err(|reason| unreadable(path, reason))?,
                None => object
                    .decode_pixel_data_frame(frame - 1)
                    .map_err(|e| {
                        unreadable(path, format!("its pixel data cannot be decoded: {e}"))
                    })?
                    .data()
                    .to_vec(),
            };
            total += bytes.len();
            if total > MAX_FRAMES_BYTES {
                return Err(DicomError::BadQuery(format!(
                    "the frames asked for decode to more than {} MiB: ask for fewer at a time",
                    MAX_FRAMES_BYTES >> 20
                )));
            }
            Ok(bytes)
        })
        .collect()
}

/// Decoded frames one retrieval hands out, at most.
pub const MAX_FRAMES_BYTES: usize = 256 << 20;

/// Renders frame `options.frame` of the image in `path` to a JPEG.
pub fn render(path: &Path, options: &RenderOptions) -> Result<Rendered> {
    let (image, window) = match decode(path, options.frame)? {
        Decoded::Colour(rgb) => (image::DynamicImage::ImageRgb8(rgb), None),
        Decoded::Grey(grey) => {
            let window = options.window.or(grey.own_window).unwrap_or_else(|| {
                let (min, max) = grey
                    .values
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(lo, hi), v| {
                        (lo.min(f64::from(*v)), hi.max(f64::from(*v)))
                    });
                Window {
                    center: (min + max) / 2.0,
                    width: (max - min).max(1.0),
                }
            });
            let pixels: Vec<u8> = grey
                .values
                .iter()
                .map(|v| {
                    let g = window.grey(f64::from(*v));
                    if grey.inverted {
                        255 - g
                    } else {
                        g
                    }
                })
                .collect();
            let luma = image::GrayImage::from_raw(grey.width, grey.height, pixels)
                .ok_or_else(|| unreadable(path, "the pixel data is shorter than rows x columns"))?;
            (image::DynamicImage::ImageLuma8(luma), Some(window))
        }
    };
    let image = match options.viewport {
        Some((w, h)) if w > 0 && h > 0 && (image.width() > w || image.height() > h) => {
            image.resize(w, h, image::imageops::FilterType::Triangle)
        }
        _ => image,
    };
    let (width, height) = (image.width(), image.height());
    let jpeg = encode_jpeg(&image).map_err(|e| unreadable(path, e))?;
    Ok(Rendered {
        jpeg,
        width,
        height,
        window,
    })
}

/// Modality values (NaN: nothing there, shown black) through `window` as a greyscale JPEG of
/// `width` x `height`, scaled to fit `viewport` if given.
pub fn encode_values(
    values: &[f32],
    width: u32,
    height: u32,
    window: Window,
    viewport: Option<(u32, u32)>,
) -> Result<Vec<u8>> {
    let pixels: Vec<u8> = values
        .iter()
        .map(|v| {
            if v.is_nan() {
                0
            } else {
                window.grey(f64::from(*v))
            }
        })
        .collect();
    let luma = image::GrayImage::from_raw(width, height, pixels)
        .ok_or_else(|| DicomError::BadQuery("a plane of no pixels".into()))?;
    let mut image = image::DynamicImage::ImageLuma8(luma);
    if let Some((w, h)) = viewport {
        if w > 0 && h > 0 && (image.width() > w || image.height() > h) {
            image = image.resize(w, h, image::imageops::FilterType::Triangle);
        }
    }
    encode_jpeg(&image).map_err(|reason| DicomError::Unreadable {
        what: "a plane".into(),
        reason,
    })
}

fn encode_jpeg(image: &image::DynamicImage) -> std::result::Result<Vec<u8>, String> {
    let mut jpeg = Vec::new();
    let encoder = jpeg_encoder::Encoder::new(&mut jpeg, 90);
    let (w, h) = (
        u16::try_from(image.width()).map_err(|_| "image wider than 65535 px")?,
        u16::try_from(image.height()).map_err(|_| "image taller than 65535 px")?,
    );
    match image {
        image::DynamicImage::ImageLuma8(luma) => encoder
            .encode(luma.as_raw(), w, h, jpeg_encoder::ColorType::Luma)
            .map_err(|e| e.to_string())?,
        other => encoder
            .encode(other.to_rgb8().as_raw(), w, h, jpeg_encoder::ColorType::Rgb)
            .map_err(|e| e.to_string())?,
    }
    Ok(jpeg)
}

/// Statistics of the modality values in the rectangle `(x, y, width, height)` (image pixels,
/// clipped to the image) of a monochrome frame.
pub fn region_stats(path: &Path, frame: u32, rect: (u32, u32, u32, u32)) -> Result<RegionStats> {
    let Decoded::Grey(grey) = decode(path, frame)? else {
        return Err(DicomError::BadQuery(
            "a colour image has no modality values to measure".into(),
        ));
    };
    let (x, y, w, h) = rect;
    let x_end = x.saturating_add(w).min(grey.width);
    let y_end = y.saturating_add(h).min(grey.height);
    if x >= x_end || y >= y_end {
        return Err(DicomError::BadQuery(format!(
            "the region {x},{y} {w}x{h} lies outside the {}x{} image",
            grey.width, grey.height
        )));
    }
    // Read in place, row by row, twice (the mean, then the spread about it): a whole 64 Mpx
    // frame measured costs no copy of it.
    let (width, values) = (grey.width as usize, &grey.values[..]);
    let rows = || {
        (y as usize..y_end as usize).map(move |row| {
            let start = (row * width + x as usize).min(values.len());
            let end = (row * width + x_end as usize).min(values.len());
            &values[start..end]
        })
    };
    let (mut pixels, mut sum) = (0usize, 0.0f64);
    let (mut min, mut max) = (f64::MAX, f64::MIN);
    for value in rows().flatten().map(|v| f64::from(*v)) {
        pixels += 1;
        sum += value;
        min = min.min(value);
        max = max.max(value);
    }
    if pixels == 0 {
        return Err(DicomError::BadQuery(format!(
            "the region {x},{y} {w}x{h} holds no pixel of the image"
        )));
    }
    let mean = sum / pixels as f64;
    let spread: f64 = rows()
        .flatten()
        .map(|v| (f64::from(*v) - mean).powi(2))
        .sum();
    Ok(RegionStats {
        pixels,
        mean,
        min,
        max,
        standard_deviation: (spread / pixels as f64).sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::PixelFragmentSequence;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::uids;
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

    /// pydicom's RLE secondary capture (a real RGB picture) and its pixels, interleaved.
    fn colour_picture() -> (dicom_object::DefaultDicomObject, Vec<u8>) {
        let dir = std::env::var("GRASSROOTS_FIXTURES")
            .expect("set GRASSROOTS_FIXTURES to a directory filled by scripts/fetch-fixtures");
        let path = Path::new(&dir).join("pydicom/SC_rgb_rle.dcm");
        let object = OpenFileOptions::new().open_file(&path).unwrap();
        let rgb = object.decode_pixel_data().unwrap().data().to_vec();
        (object, rgb)
    }

    /// Interleaved RGB samples as YBR_FULL, as an ultrasound machine writes them.
    fn to_ybr_full(rgb: &[u8]) -> Vec<u8> {
        rgb.chunks(3)
            .flat_map(|p| crate::colour::rgb_to_ybr_full([p[0], p[1], p[2]]))
            .collect()
    }

    fn planes(interleaved: &[u8]) -> Vec<u8> {
        (0..3)
            .flat_map(|c| interleaved.iter().skip(c).step_by(3).copied())
            .collect()
    }

    /// RLE Lossless (PS3.5 G.3) of 8-bit planes, each row in literal runs: a segment per plane.
    fn rle(planes: &[u8], width: usize) -> Vec<u8> {
        let segments: Vec<Vec<u8>> = planes
            .chunks(planes.len() / 3)
            .map(|plane| {
                let mut segment = Vec::new();
                for row in plane.chunks(width) {
                    for run in row.chunks(128) {
                        segment.push((run.len() - 1) as u8);
                        segment.extend_from_slice(run);
                    }
                }
                if segment.len() % 2 == 1 {
                    segment.push(0);
                }
                segment
            })
            .collect();
        let mut header = [0u32; 16];
        header[0] = 3;
        let mut offset = 64;
        for (i, segment) in segments.iter().enumerate() {
            header[i + 1] = offset;
            offset += segment.len() as u32;
        }
        let mut bytes: Vec<u8> = header.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.extend(segments.concat());
        bytes
    }

    /// `object` with `pixels` as its pixel data, coded as `syntax` says, in a file.
    fn stored(
        mut object: dicom_object::DefaultDicomObject,
        syntax: &str,
        photometric: &str,
        planar: u16,
        pixels: Value,
    ) -> tempfile::NamedTempFile {
        object.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from(photometric),
        ));
        object.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(planar),
        ));
        object.put(DataElement::new(tags::PIXEL_DATA, VR::OB, pixels));
        let syntax = TransferSyntaxRegistry.get(syntax).unwrap();
        object.meta_mut().set_transfer_syntax(syntax);
        let file = tempfile::NamedTempFile::new().unwrap();
        object.write_to_file(file.path()).unwrap();
        file
    }

    type Value = dicom_core::value::Value<dicom_object::InMemDicomObject, Vec<u8>>;

    fn shown(file: &tempfile::NamedTempFile) -> Vec<u8> {
        match decode(file.path(), 0).unwrap() {
            Decoded::Colour(image) => image.into_raw(),
            Decoded::Grey(_) => panic!("a colour picture shown in grey"),
        }
    }

    fn largest_difference(a: &[u8], b: &[u8]) -> u8 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn ultrasound_colour_in_ybr_full_is_shown_in_its_own_colours() {
        let (object, rgb) = colour_picture();
        let width = usize::from(crate::instance::unsigned::<u16>(&object, tags::COLUMNS).unwrap());
        let ybr = to_ybr_full(&rgb);
        let native = |planar: u16, samples: Vec<u8>| {
            stored(
                object.clone(),
                uids::EXPLICIT_VR_LITTLE_ENDIAN,
                "YBR_FULL",
                planar,
                PrimitiveValue::from(samples).into(),
            )
        };
        let rle_coded = stored(
            object.clone(),
            uids::RLE_LOSSLESS,
            "YBR_FULL",
            0,
            PixelFragmentSequence::new(Vec::<u32>::new(), vec![rle(&planes(&ybr), width)]).into(),
        );
        // Encapsulated Uncompressed: the stored bytes in a fragment, planes as the attribute says.
        let encapsulated = stored(
            object.clone(),
            uids::ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN,
            "YBR_FULL",
            1,
            PixelFragmentSequence::new(Vec::<u32>::new(), vec![planes(&ybr)]).into(),
        );
        for (case, file) in [
            ("native, interleaved", native(0, ybr.clone())),
            ("native, planar", native(1, planes(&ybr))),
            ("RLE", rle_coded),
            ("encapsulated uncompressed, planar", encapsulated),
        ] {
            // YBR_FULL rounds each sample: one or two levels back in RGB. Through
            // dicom-pixeldata's conversion the native picture was 88 levels off (green), and
            // RLE's samples were shown unconverted.
            let difference = largest_difference(&shown(&file), &rgb);
            assert!(difference <= 2, "{case}: {difference} levels off");
        }
        // RGB as stored, natively and in RLE, is shown as it is.
        let rle_rgb = stored(
            object.clone(),
            uids::RLE_LOSSLESS,
            "RGB",
            0,
            PixelFragmentSequence::new(Vec::<u32>::new(), vec![rle(&planes(&rgb), width)]).into(),
        );
        assert!(shown(&rle_rgb) == rgb);
    }

    #[test]
    fn native_ybr_full_422_is_shown_and_handed_out_frame_by_frame() {
        // pydicom's YBR_FULL_422 secondary capture: the same picture as its RGB one (bands of
        // colour a row apart), two bytes a pixel. dicom-pixeldata refused it.
        let dir = std::env::var("GRASSROOTS_FIXTURES").unwrap();
        let path = Path::new(&dir).join("pydicom/SC_ybr_full_422_uncompressed.dcm");
        let (_, rgb) = colour_picture();
        let one = match decode(&path, 0).unwrap() {
            Decoded::Colour(image) => image.into_raw(),
            Decoded::Grey(_) => panic!("a colour picture shown in grey"),
        };
        // The file's own YBR samples are rounded: pydicom's decoding of it is 6 levels off the
        // RGB picture too (blue, row 52).
        let difference = largest_difference(&one, &rgb);
        assert!(difference <= 6, "{difference} levels off");
        // Two frames, the second upside down: each frame is its own slice of the bytes.
        let object = OpenFileOptions::new().open_file(&path).unwrap();
        let stored_frame = object
            .element(tags::PIXEL_DATA)
            .unwrap()
            .to_bytes()
            .unwrap()
            .to_vec();
        let row = 100 * 2;
        let flipped: Vec<u8> = stored_frame.rchunks(row).flatten().copied().collect();
        let two_frames = || {
            let mut two = object.clone();
            two.put(DataElement::new(
                tags::NUMBER_OF_FRAMES,
                VR::IS,
                PrimitiveValue::from("2"),
            ));
            two
        };
        let file = stored(
            two_frames(),
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            "YBR_FULL_422",
            0,
            PrimitiveValue::from([stored_frame.clone(), flipped.clone()].concat()).into(),
        );
        let Decoded::Colour(second) = decode(file.path(), 1).unwrap() else {
            panic!("a colour picture shown in grey")
        };
        let upside_down: Vec<u8> = rgb.rchunks(100 * 3).flatten().copied().collect();
        assert!(largest_difference(&second.into_raw(), &upside_down) <= 6);
        // DICOMweb's frames: each as stored, two bytes a pixel.
        let frames = frame_bytes(file.path(), &[2, 1]).unwrap();
        assert!(frames[0] == flipped && frames[1] == stored_frame);
        // Encapsulated Uncompressed: a frame a fragment.
        let encapsulated = stored(
            two_frames(),
            uids::ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN,
            "YBR_FULL_422",
            0,
            PixelFragmentSequence::new(
                Vec::<u32>::new(),
                vec![stored_frame.clone(), flipped.clone()],
            )
            .into(),
        );
        let Decoded::Colour(second) = decode(encapsulated.path(), 1).unwrap() else {
            panic!("a colour picture shown in grey")
        };
        assert!(largest_difference(&second.into_raw(), &upside_down) <= 6);
        assert!(frame_bytes(encapsulated.path(), &[1]).unwrap()[0] == stored_frame);
        // Pixel data short of a frame, or an odd number of columns, are refused with a reason.
        let short = stored(
            object.clone(),
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            "YBR_FULL_422",
            0,
            PrimitiveValue::from(stored_frame[..row * 99].to_vec()).into(),
        );
        let error = decode(short.path(), 0).err().unwrap().to_string();
        assert!(error.contains("fewer bytes"), "{error}");
        // Without Columns there is no frame to slice.
        let mut no_columns = object.clone();
        no_columns.remove_element(tags::COLUMNS);
        let no_columns = stored(
            no_columns,
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            "YBR_FULL_422",
            0,
            PrimitiveValue::from(stored_frame.clone()).into(),
        );
        let error = frame_bytes(no_columns.path(), &[1])
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("Rows or Columns"), "{error}");
        let mut odd = object;
        odd.put(DataElement::new(
            tags::COLUMNS,
            VR::US,
            PrimitiveValue::from(99u16),
        ));
        let odd = stored(
            odd,
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            "YBR_FULL_422",
            0,
            PrimitiveValue::from(stored_frame).into(),
        );
        let error = frame_bytes(odd.path(), &[1]).err().unwrap().to_string();
        assert!(error.contains("columns must be even"), "{error}");
    }

    #[test]
    fn jpeg_ls_colour_coded_a_component_per_scan_is_shown_unscrambled() {
        let (object, rgb) = colour_picture();
        let (width, height) = (
            crate::instance::unsigned::<u16>(&object, tags::COLUMNS).unwrap(),
            crate::instance::unsigned::<u16>(&object, tags::ROWS).unwrap(),
        );
        for (mode, source) in [
            (charls::InterleaveMode::None, planes(&rgb)),
            (charls::InterleaveMode::Sample, rgb.clone()),
        ] {
            let mut codec = charls::CharLS::default();
            codec.set_interleave_mode(mode).unwrap();
            let info = charls::FrameInfo {
                width: u32::from(width),
                height: u32::from(height),
                bits_per_sample: 8,
                component_count: 3,
            };
            let stream = codec.encode(info, 0, &source).unwrap();
            let file = stored(
                object.clone(),
                uids::JPEGLS_LOSSLESS,
                "RGB",
                0,
                PixelFragmentSequence::new(Vec::<u32>::new(), vec![stream]).into(),
            );
            assert!(shown(&file) == rgb, "{mode:?}");
        }
    }

    #[test]
    fn the_linear_window_of_the_standard() {
        let lung = Window {
            center: -600.0,
            width: 1500.0,
        };
        assert_eq!(lung.grey(-1400.0), 0);
        assert_eq!(lung.grey(200.0), 255);
        assert_eq!(lung.grey(-600.0), 128);
        assert_eq!(Window::parse("40,400").unwrap().width, 400.0);
        assert!(Window::parse("40").is_err());
        assert!(Window::parse("40,0").is_err());
        assert!(Window::parse("40,400,sigmoid").is_err());
        assert_eq!(Window::parse("40, 400, linear").unwrap().center, 40.0);
    }
}
