//! Objects in PS3.18's default transfer syntax. A DICOMweb client that asks for
//! `application/dicom` without naming a transfer syntax is owed Explicit VR Little Endian
//! (PS3.18 §8.7.3.5.2): what every DICOM reader decodes, whatever codecs it lacks. An object
//! stored compressed is decoded for it (dicom-pixeldata); one asked for with
//! `transfer-syntax=*`, or in the syntax it is stored in, goes out as stored, byte for byte.
//!
//! dicom-pixeldata's `Transcode` relabels decoded colour as RGB and leaves the Planar
//! Configuration as it was, but its decoders do not all hand back the same thing
//! ([`crate::colour`]). So the written object's attributes are set here to what its pixel data
//! now are ([`decoded_colour`]); otherwise a reader would show it in wrong colours.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::OpenFileOptions;
use dicom_pixeldata::Transcode;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN as EXPLICIT_LITTLE;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::colour::decoded_colour;
use crate::instance::text;
use crate::{DicomError, Result};

/// The UID of Explicit VR Little Endian.
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

/// Whether an object stored in `transfer_syntax` can be sent as Explicit VR Little Endian:
/// its pixel data are native already or a decoder this node has reads them.
pub fn can_send_explicit_little_endian(transfer_syntax: &str) -> bool {
    TransferSyntaxRegistry
        .get(transfer_syntax.trim_end_matches('\0'))
        .is_some_and(|ts| ts.can_decode_all())
}

/// A Part 10 file (`bytes`, of `what`) in Explicit VR Little Endian: itself when it is in that
/// syntax already, else decoded and written again with its file meta group updated.
pub fn to_explicit_little_endian(bytes: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    let unreadable = |reason: String| DicomError::Unreadable {
        what: what.to_string(),
        reason,
    };
    let mut object = OpenFileOptions::new()
        .from_reader(&bytes[..])
        .map_err(|e| unreadable(e.to_string()))?;
    let stored_syntax = object
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    if stored_syntax == EXPLICIT_VR_LITTLE_ENDIAN {
        return Ok(bytes);
    }
    let colour = text(&object, tags::SAMPLES_PER_PIXEL) == "3";
    let encapsulated = TransferSyntaxRegistry
        .get(&stored_syntax)
        .is_some_and(|ts| ts.is_encapsulated_pixel_data());
    // What the decoder will hand back, read before decoding replaces the fragments.
    let relabel = (colour && encapsulated)
        .then(|| decoded_colour(&object))
        .flatten();
    object
        .transcode(&EXPLICIT_LITTLE.erased())
        .map_err(|e| unreadable(format!("decoding it to Explicit VR Little Endian: {e}")))?;
    if let Some(decoded) = relabel {
        object.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(u16::from(decoded.planar)),
        ));
        if decoded.ybr_full {
            object.put(DataElement::new(
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                PrimitiveValue::from("YBR_FULL"),
            ));
        }
    }
    let mut out = Vec::with_capacity(bytes.len());
    object
        .write_all(&mut out)
        .map_err(|e| unreadable(format!("writing it as Explicit VR Little Endian: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::colour::{decoded_encapsulated_colour, jpeg_ls_scan_components};
    use dicom_dictionary_std::uids;
    use dicom_pixeldata::PixelDecoder;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::env::var("GRASSROOTS_FIXTURES")
            .expect("set GRASSROOTS_FIXTURES to a directory filled by scripts/fetch-fixtures");
        std::fs::read(std::path::Path::new(&dir).join("pydicom").join(name)).unwrap()
    }

    #[test]
    fn a_stored_object_decodes_to_the_same_pixels_in_explicit_little_endian() {
        // RLE, JPEG 2000 and JPEG-LS lossless, deflate, implicit VR.
        for name in [
            "SC_rgb_rle.dcm",
            "MR_small_jp2klossless.dcm",
            "MR_small_jpeg_ls_lossless.dcm",
            "image_dfl.dcm",
            "MR_small_implicit.dcm",
        ] {
            let original = fixture(name);
            let stored = OpenFileOptions::new().from_reader(&original[..]).unwrap();
            let syntax = stored.meta().transfer_syntax().trim_end_matches('\0');
            assert_ne!(syntax, EXPLICIT_VR_LITTLE_ENDIAN, "{name}");
            assert!(can_send_explicit_little_endian(syntax), "{name}");
            let sent = to_explicit_little_endian(original.clone(), name).unwrap();
            let read = OpenFileOptions::new().from_reader(&sent[..]).unwrap();
            assert_eq!(
                read.meta().transfer_syntax().trim_end_matches('\0'),
                EXPLICIT_VR_LITTLE_ENDIAN,
                "{name}"
            );
            if stored.element_by_name("PixelData").is_ok() {
                let (a, b) = (
                    stored.decode_pixel_data().unwrap(),
                    read.decode_pixel_data().unwrap(),
                );
                assert_eq!(a.data(), b.data(), "{name}: the same pixels");
            }
            let uid = |o: &dicom_object::DefaultDicomObject| {
                o.element_by_name("SOPInstanceUID")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string()
            };
            assert_eq!(uid(&read), uid(&stored), "{name}");
        }
    }

    /// `original` with its attributes changed by `change`, written again in its syntax.
    fn altered(
        original: &[u8],
        change: impl FnOnce(&mut dicom_object::DefaultDicomObject),
    ) -> Vec<u8> {
        let mut object = OpenFileOptions::new().from_reader(original).unwrap();
        change(&mut object);
        let mut out = Vec::new();
        object.write_all(&mut out).unwrap();
        out
    }

    fn attribute(bytes: &[u8], tag: dicom_core::Tag) -> String {
        let object = OpenFileOptions::new().from_reader(bytes).unwrap();
        let value = object.element(tag).unwrap().to_str().unwrap();
        value.trim_end_matches(['\0', ' ']).to_string()
    }

    #[test]
    fn colour_decoded_from_rle_is_labelled_as_the_pixels_now_are() {
        let rle = fixture("SC_rgb_rle.dcm");
        let read = |bytes: &[u8]| {
            let object = OpenFileOptions::new().from_reader(bytes).unwrap();
            let decoded = object.decode_pixel_data().unwrap();
            decoded.to_dynamic_image(0).unwrap().to_rgb8().into_raw()
        };
        let colours = read(&rle);
        // RLE keeps its samples in planes whatever the attribute says; an RLE object that says
        // planar configuration 1 decodes to interleaved pixels, which must then say 0.
        let planar = altered(&rle, |o| {
            o.put(DataElement::new(
                tags::PLANAR_CONFIGURATION,
                VR::US,
                PrimitiveValue::from(1u16),
            ));
        });
        let sent = to_explicit_little_endian(planar, "planar").unwrap();
        assert_eq!(attribute(&sent, tags::PLANAR_CONFIGURATION), "0");
        assert_eq!(attribute(&sent, tags::PHOTOMETRIC_INTERPRETATION), "RGB");
        assert!(read(&sent) == colours, "the same colours once decoded");
        // YBR_FULL in RLE: the decoder leaves the samples in YBR (dicom-pixeldata labels them
        // RGB when it reads RLE, and shows them so), so they go out unchanged and labelled
        // YBR_FULL, for the reader to convert.
        let ybr = altered(&rle, |o| {
            o.put(DataElement::new(
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                PrimitiveValue::from("YBR_FULL"),
            ));
        });
        let sent = to_explicit_little_endian(ybr.clone(), "ybr").unwrap();
        assert_eq!(
            attribute(&sent, tags::PHOTOMETRIC_INTERPRETATION),
            "YBR_FULL"
        );
        // The samples go out as RLE holds them, for a reader to convert by PS3.3 C.7.6.3.1.2
        // (dicom-pixeldata 0.10.1's own conversion gets green's Cb term's sign wrong, so it
        // cannot serve as the reference here).
        let samples = OpenFileOptions::new()
            .from_reader(&ybr[..])
            .unwrap()
            .decode_pixel_data()
            .unwrap()
            .data()
            .to_vec();
        let written = OpenFileOptions::new()
            .from_reader(&sent[..])
            .unwrap()
            .element(tags::PIXEL_DATA)
            .unwrap()
            .to_bytes()
            .unwrap()
            .to_vec();
        assert!(written == samples, "the YBR samples go out unconverted");
    }

    #[test]
    fn jpeg_ls_colour_goes_out_as_charls_decodes_it_plane_by_plane_or_interleaved() {
        use dicom_core::value::PixelFragmentSequence;
        // A real picture's colours (the RLE secondary capture, decoded), coded by CharLS one
        // component per scan (interleave mode "none", as dcmtk and others may) and one scan
        // of interleaved samples; a JPEG-LS object says planar configuration 0 either way.
        let rle = fixture("SC_rgb_rle.dcm");
        let stored_rle = OpenFileOptions::new().from_reader(&rle[..]).unwrap();
        let decoded = stored_rle.decode_pixel_data().unwrap();
        let (width, height) = (decoded.columns(), decoded.rows());
        let rgb = decoded.to_dynamic_image(0).unwrap().to_rgb8().into_raw();
        let planes: Vec<u8> = (0..3)
            .flat_map(|c| rgb.iter().skip(c).step_by(3).copied())
            .collect();
        let read = |bytes: &[u8]| {
            let object = OpenFileOptions::new().from_reader(bytes).unwrap();
            let decoded = object.decode_pixel_data().unwrap();
            decoded.to_dynamic_image(0).unwrap().to_rgb8().into_raw()
        };
        let jpeg_ls = TransferSyntaxRegistry.get(uids::JPEGLS_LOSSLESS).unwrap();
        for (mode, source, planar) in [
            (charls::InterleaveMode::None, &planes, "1"),
            (charls::InterleaveMode::Sample, &rgb, "0"),
        ] {
            let mut codec = charls::CharLS::default();
            codec.set_interleave_mode(mode).unwrap();
            let info = charls::FrameInfo {
                width,
                height,
                bits_per_sample: 8,
                component_count: 3,
            };
            let stream = codec.encode(info, 0, source).unwrap();
            let stored = altered(&rle, |o| {
                o.put(DataElement::new(
                    tags::PIXEL_DATA,
                    VR::OB,
                    PixelFragmentSequence::new(Vec::<u32>::new(), vec![stream]),
                ));
                o.meta_mut().set_transfer_syntax(jpeg_ls);
            });
            let sent = to_explicit_little_endian(stored, "jpeg-ls").unwrap();
            assert_eq!(
                attribute(&sent, tags::PLANAR_CONFIGURATION),
                planar,
                "{mode:?}"
            );
            assert!(
                read(&sent) == rgb,
                "{mode:?}: the same colours once decoded"
            );
        }
        // CharLS converts no colour: YBR_FULL stays YBR_FULL, as for RLE; JPEG 2000's and
        // JPEG's decoders hand back RGB.
        let decoded = |syntax, photometric| {
            let c = decoded_encapsulated_colour(syntax, photometric, &[]);
            (c.planar, c.ybr_full)
        };
        assert_eq!(decoded(uids::JPEGLS_LOSSLESS, "YBR_FULL"), (false, true));
        assert_eq!(decoded(uids::JPEG_LOSSLESS_SV1, "YBR_FULL"), (false, true));
        assert_eq!(
            decoded(uids::JPEG_BASELINE8_BIT, "YBR_FULL_422"),
            (false, false)
        );
        assert_eq!(jpeg_ls_scan_components(b"not a codestream"), None);
    }

    #[test]
    fn an_object_in_explicit_little_endian_goes_out_byte_for_byte() {
        let original = fixture("CT_small.dcm");
        assert_eq!(
            to_explicit_little_endian(original.clone(), "CT_small").unwrap(),
            original
        );
    }

    #[test]
    fn compressed_pixels_no_decoder_reads_are_refused_with_a_reason() {
        use dicom_core::value::PixelFragmentSequence;
        // An RLE fragment cut short after its segment table.
        let broken = altered(&fixture("SC_rgb_rle.dcm"), |o| {
            let fragment =
                o.element(tags::PIXEL_DATA).unwrap().fragments().unwrap()[0][..80].to_vec();
            o.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PixelFragmentSequence::new(Vec::<u32>::new(), vec![fragment]),
            ));
        });
        let error = to_explicit_little_endian(broken, "cut short").unwrap_err();
        assert!(
            error.to_string().contains("cut short") && error.to_string().contains("decoding it"),
            "{error}"
        );
    }

    #[test]
    fn what_cannot_be_read_is_refused_with_a_reason() {
        let error = to_explicit_little_endian(b"DICM but not really".to_vec(), "junk").unwrap_err();
        assert!(error.to_string().contains("junk"), "{error}");
        assert!(!can_send_explicit_little_endian("1.2.3.4.5"));
        assert!(can_send_explicit_little_endian(EXPLICIT_VR_LITTLE_ENDIAN));
        assert!(can_send_explicit_little_endian("1.2.840.10008.1.2"));
    }
}
