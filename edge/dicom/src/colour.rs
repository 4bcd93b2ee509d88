//! What colour pixel data are once decoded, and turning them into RGB ourselves.
//!
//! dicom-pixeldata's decoders do not all hand back the same thing, and what it says about them
//! is not always so: RLE's interleaves the samples and keeps their colour space (YBR_FULL stays
//! YBR_FULL) while the decoded image says RGB; CharLS (JPEG-LS) keeps the colour space too, and
//! hands a stream coded one component per scan (interleave mode "none", which the attribute
//! cannot say: CP-1843 has it 0 for JPEG-LS) back plane by plane; lossless JPEG keeps the
//! colour space; lossy JPEG and JPEG 2000 (with its colour transform) interleave and convert to
//! RGB; native pixel data, Encapsulated Uncompressed and Deflated Image Frame are as stored.
//! Native YBR_FULL_422 (two bytes a pixel) dicom-pixeldata sizes as three samples a pixel and
//! refuses, so its frames are sliced and their colour upsampled here
//! ([`stored_ybr_full_422_frame`], [`ybr_full_422_image`]). Not covered: YBR_FULL_422 in
//! Deflated Image Frame Compression, a JPEG 2000 stream labelled YBR_FULL without the colour
//! transform, and 16-bit colour, which are left to dicom-pixeldata. And its own
//! YBR_FULL to RGB conversion (0.10.1) gets the sign of green's Cb term wrong. So the viewer
//! ([`crate::render`]) and the transcoder ([`crate::transcode`]) work out from the stored
//! object what its decoded samples are ([`decoded_colour`]), and the viewer converts them to
//! RGB here by PS3.3 C.7.6.3.1.2 ([`rgb_image`]). Ultrasound, stored as YBR_FULL in RLE more
//! often than not, would otherwise be shown in false colours.

use dicom_dictionary_std::{tags, uids};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::DefaultDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::instance::text;

/// How the samples of a decoded colour frame are laid out and coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedColour {
    /// All of the first component, then the second, then the third (Planar Configuration 1);
    /// else interleaved, pixel by pixel.
    pub planar: bool,
    /// YBR_FULL (Y, Cb, Cr) rather than RGB.
    pub ybr_full: bool,
}

/// What dicom-pixeldata's decoder hands back for the colour `object` holds; `None` for native
/// pixel data in a colour space other than RGB and YBR_FULL (native YBR_FULL_422 is sliced by
/// [`stored_ybr_full_422_frame`] before any decoder sees it; others are left to
/// dicom-pixeldata).
pub fn decoded_colour(object: &DefaultDicomObject) -> Option<DecodedColour> {
    let syntax = object.meta().transfer_syntax().trim_end_matches('\0');
    let photometric = text(object, tags::PHOTOMETRIC_INTERPRETATION);
    // Encapsulated Uncompressed and Deflated Image Frame hand back the stored bytes: laid out
    // and coded as the attributes say, as native pixel data are.
    let as_stored = syntax == uids::ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN
        || syntax == uids::DEFLATED_IMAGE_FRAME_COMPRESSION
        || !TransferSyntaxRegistry
            .get(syntax)
            .is_some_and(|ts| ts.is_encapsulated_pixel_data());
    if as_stored {
        return matches!(photometric.as_str(), "RGB" | "YBR_FULL").then(|| DecodedColour {
            planar: text(object, tags::PLANAR_CONFIGURATION) == "1",
            ybr_full: photometric == "YBR_FULL",
        });
    }
    let first_fragment = object
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .and_then(|e| e.fragments())
        .and_then(|fragments| fragments.first())
        .map_or(&[][..], |fragment| &fragment[..]);
    Some(decoded_encapsulated_colour(
        syntax,
        &photometric,
        first_fragment,
    ))
}

/// What the decoder of the encapsulated `syntax` hands back for colour stored as
/// `photometric`, whose first fragment is `first_fragment`.
pub(crate) fn decoded_encapsulated_colour(
    syntax: &str,
    photometric: &str,
    first_fragment: &[u8],
) -> DecodedColour {
    let jpeg_ls = syntax == uids::JPEGLS_LOSSLESS || syntax == uids::JPEGLS_NEAR_LOSSLESS;
    // jpeg-decoder converts no colour on its lossless path (process 14), as CharLS and RLE's
    // decoder do not.
    let jpeg_lossless = syntax == uids::JPEG_LOSSLESS || syntax == uids::JPEG_LOSSLESS_SV1;
    let keeps_colour_space = jpeg_ls || jpeg_lossless || syntax == uids::RLE_LOSSLESS;
    DecodedColour {
        planar: jpeg_ls && jpeg_ls_scan_components(first_fragment) == Some(1),
        ybr_full: keeps_colour_space && photometric == "YBR_FULL",
    }
}

/// The number of components in the first scan of a JPEG-LS codestream (1 for interleave mode
/// "none", one component per scan), walking its marker segments from the start of image.
pub(crate) fn jpeg_ls_scan_components(codestream: &[u8]) -> Option<u8> {
    if codestream.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut at = 2;
    loop {
        let (marker, kind) = (*codestream.get(at)?, *codestream.get(at + 1)?);
        if marker != 0xFF {
            return None;
        }
        if kind == 0xFF {
            at += 1; // fill byte
            continue;
        }
        let length = usize::from(u16::from_be_bytes([
            *codestream.get(at + 2)?,
            *codestream.get(at + 3)?,
        ]));
        if kind == 0xDA {
            return codestream.get(at + 4).copied();
        }
        at += 2 + length;
    }
}

/// One YBR_FULL pixel in RGB (PS3.3 C.7.6.3.1.2, the inverse of its full-range equations).
pub fn ybr_full_to_rgb([y, cb, cr]: [u8; 3]) -> [u8; 3] {
    let (y, cb, cr) = (f32::from(y), f32::from(cb) - 128.0, f32::from(cr) - 128.0);
    let channel = |v: f32| (v + 0.5).floor().clamp(0.0, 255.0) as u8;
    [
        channel(y + 1.402 * cr),
        channel(y - 0.344_136 * cb - 0.714_136 * cr),
        channel(y + 1.772 * cb),
    ]
}

/// An 8-bit colour frame's decoded `samples` (`width` x `height`, laid out and coded as
/// `colour` says) as an RGB image; `None` when there are too few samples.
pub fn rgb_image(
    samples: &[u8],
    width: u32,
    height: u32,
    colour: DecodedColour,
) -> Option<image::RgbImage> {
    let pixels = width as usize * height as usize;
    let samples = samples.get(..pixels * 3)?;
    let mut rgb = Vec::with_capacity(pixels * 3);
    for i in 0..pixels {
        let pixel = if colour.planar {
            [samples[i], samples[pixels + i], samples[2 * pixels + i]]
        } else {
            [samples[3 * i], samples[3 * i + 1], samples[3 * i + 2]]
        };
        rgb.extend_from_slice(&if colour.ybr_full {
            ybr_full_to_rgb(pixel)
        } else {
            pixel
        });
    }
    image::RgbImage::from_raw(width, height, rgb)
}

/// Native YBR_FULL_422 (PS3.3 C.7.6.3.1.2; 8-bit, Planar Configuration 0): along each row,
/// every two pixels are stored as their two Y then the Cb and Cr they share, two bytes a pixel.
/// The stored bytes of `frame` (from 0) of `object`, or `None` when it holds anything else
/// (compressed pixel data, another colour space, 16 bits), which dicom-pixeldata decodes.
pub fn stored_ybr_full_422_frame(
    object: &DefaultDicomObject,
    frame: u32,
) -> Option<Result<Vec<u8>, String>> {
    let syntax = object.meta().transfer_syntax().trim_end_matches('\0');
    let encapsulated_uncompressed =
        syntax == uids::ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN;
    let native = !TransferSyntaxRegistry
        .get(syntax)
        .is_some_and(|ts| ts.is_encapsulated_pixel_data());
    let ours = (native || encapsulated_uncompressed)
        && text(object, tags::PHOTOMETRIC_INTERPRETATION) == "YBR_FULL_422"
        && crate::instance::unsigned::<u16>(object, tags::BITS_ALLOCATED) == Some(8)
        && crate::instance::unsigned::<u16>(object, tags::SAMPLES_PER_PIXEL) == Some(3);
    if !ours {
        return None;
    }
    Some((|| {
        let rows = usize::from(crate::instance::unsigned::<u16>(object, tags::ROWS).unwrap_or(0));
        let columns =
            usize::from(crate::instance::unsigned::<u16>(object, tags::COLUMNS).unwrap_or(0));
        if rows == 0 || columns == 0 {
            return Err("its Rows or Columns are missing or zero".into());
        }
        if columns % 2 == 1 {
            return Err(format!(
                "YBR_FULL_422 pixel data of {columns} columns: its Cb and Cr are shared by pairs of pixels, so the columns must be even"
            ));
        }
        let length = rows * columns * 2;
        let element = object
            .element(tags::PIXEL_DATA)
            .map_err(|_| "it has no pixel data".to_string())?;
        let frame = frame as usize;
        let bytes = if encapsulated_uncompressed {
            element
                .fragments()
                .and_then(|fragments| fragments.get(frame))
                .map(|fragment| fragment.as_slice())
                .ok_or_else(|| format!("its pixel data have no fragment for frame {}", frame + 1))?
                .get(..length)
                .map(<[u8]>::to_vec)
        } else {
            let all = element
                .to_bytes()
                .map_err(|e| format!("its pixel data cannot be read: {e}"))?;
            all.get(frame * length..(frame + 1) * length)
                .map(<[u8]>::to_vec)
        };
        bytes.ok_or_else(|| {
            format!(
                "its pixel data hold fewer bytes than frame {} of {rows} x {columns} YBR_FULL_422 needs ({length} a frame)",
                frame + 1
            )
        })
    })())
}

/// A frame of native YBR_FULL_422 ([`stored_ybr_full_422_frame`]) as an RGB image: each pixel
/// its own Y with the Cb and Cr of its pair (as a display repeats them); `None` when there are
/// too few bytes or the width is odd.
pub fn ybr_full_422_image(bytes: &[u8], width: u32, height: u32) -> Option<image::RgbImage> {
    let (w, h) = (width as usize, height as usize);
    if w % 2 == 1 {
        return None;
    }
    let bytes = bytes.get(..w * h * 2)?;
    let mut rgb = Vec::with_capacity(w * h * 3);
    for pair in bytes.chunks_exact(4) {
        let [y1, y2, cb, cr] = [pair[0], pair[1], pair[2], pair[3]];
        rgb.extend_from_slice(&ybr_full_to_rgb([y1, cb, cr]));
        rgb.extend_from_slice(&ybr_full_to_rgb([y2, cb, cr]));
    }
    image::RgbImage::from_raw(width, height, rgb)
}

/// RGB to YBR_FULL by PS3.3 C.7.6.3.1.2's equations, as a modality writes it: the tests' way of
/// making YBR_FULL pixel data from a real RGB picture.
#[cfg(test)]
pub(crate) fn rgb_to_ybr_full([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    let channel = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    [
        channel(0.299 * r + 0.587 * g + 0.114 * b),
        channel(-0.168_736 * r - 0.331_264 * g + 0.5 * b + 128.0),
        channel(0.5 * r - 0.418_688 * g - 0.081_312 * b + 128.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ybr_full_comes_back_as_the_rgb_it_was_made_from() {
        for rgb in [
            [0, 0, 0],
            [255, 255, 255],
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [30, 200, 90],
            [190, 40, 160],
        ] {
            let back = ybr_full_to_rgb(rgb_to_ybr_full(rgb));
            for c in 0..3 {
                assert!(
                    back[c].abs_diff(rgb[c]) <= 2,
                    "{rgb:?} came back as {back:?}"
                );
            }
        }
    }

    #[test]
    fn a_pair_of_ybr_full_422_pixels_shares_its_colour() {
        // Two rows of two pixels: white and black in pure grey, then red and a darker red.
        let red = rgb_to_ybr_full([255, 0, 0]);
        let bytes = [255, 0, 128, 128, red[0], red[0] / 2, red[1], red[2]];
        let image = ybr_full_422_image(&bytes, 2, 2).unwrap();
        assert_eq!(image.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(image.get_pixel(1, 0).0, [0, 0, 0]);
        let [r, g, b] = image.get_pixel(0, 1).0;
        assert!(r >= 253 && g <= 2 && b <= 2, "{r},{g},{b}");
        assert!(image.get_pixel(1, 1).0[0] < r);
        // Too few bytes, or an odd width, is no picture.
        assert!(ybr_full_422_image(&bytes[..7], 2, 2).is_none());
        assert!(ybr_full_422_image(&bytes, 1, 2).is_none());
    }

    #[test]
    fn planes_and_interleaved_samples_give_the_same_picture() {
        let interleaved = [10u8, 20, 30, 40, 50, 60];
        let planar = [10u8, 40, 20, 50, 30, 60];
        let (a, b) = (
            rgb_image(
                &interleaved,
                2,
                1,
                DecodedColour {
                    planar: false,
                    ybr_full: false,
                },
            ),
            rgb_image(
                &planar,
                2,
                1,
                DecodedColour {
                    planar: true,
                    ybr_full: false,
                },
            ),
        );
        assert_eq!(a.unwrap().into_raw(), interleaved);
        assert_eq!(b.unwrap().into_raw(), interleaved);
        assert!(rgb_image(
            &interleaved[..5],
            2,
            1,
            DecodedColour {
                planar: false,
                ybr_full: false
            }
        )
        .is_none());
    }
}
