//! What a DICOMweb client asked for in its `Accept` header, against what this server can send
//! (PS3.18 §8.7.3): objects as stored or decoded to Explicit VR Little Endian, frames as they
//! decode, rendered pictures as JPEG. A request whose Accept admits none of these is answered
//! 406 with what the resource offers, rather than with bytes the client said it cannot take; a
//! request without Accept takes the default. Objects asked for without a transfer syntax get
//! PS3.18's default, Explicit VR Little Endian; `transfer-syntax=*` (or the syntax they are
//! stored in) gets them as stored, byte for byte.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use grassroots_dicom::transcode::{can_send_explicit_little_endian, EXPLICIT_VR_LITTLE_ENDIAN};

/// One representation a resource can be sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offer {
    /// The media type of the body (`multipart/related`, `application/dicom`, `image/jpeg`).
    pub essence: &'static str,
    /// For `multipart/related`, the type of its parts.
    pub part_type: Option<&'static str>,
}

pub(crate) const MULTIPART_DICOM: Offer = Offer {
    essence: "multipart/related",
    part_type: Some("application/dicom"),
};
pub(crate) const SINGLE_DICOM: Offer = Offer {
    essence: "application/dicom",
    part_type: None,
};
pub(crate) const MULTIPART_FRAMES: Offer = Offer {
    essence: "multipart/related",
    part_type: Some("application/octet-stream"),
};
pub(crate) const JPEG: Offer = Offer {
    essence: "image/jpeg",
    part_type: None,
};

impl Offer {
    /// Whether the offer carries DICOM objects (whose transfer syntax the client may choose).
    fn carries_objects(&self) -> bool {
        self.essence == "application/dicom" || self.part_type == Some("application/dicom")
    }
}

/// How the objects of a response go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The files as stored, byte for byte.
    AsStored,
    /// Decoded to Explicit VR Little Endian where stored otherwise.
    ExplicitLittleEndian,
}

/// The representation chosen and how objects in it are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Negotiated {
    pub offer: Offer,
    pub delivery: Delivery,
}

/// Explicit VR Little Endian for objects in `stored`, if every one of them can be decoded to it.
fn explicit(stored: &[&str]) -> Option<Delivery> {
    stored
        .iter()
        .all(|syntax| can_send_explicit_little_endian(syntax))
        .then_some(Delivery::ExplicitLittleEndian)
}

/// How `offer` goes out when no range names a transfer syntax: PS3.18's default for objects,
/// Explicit VR Little Endian, for every object a decoder here reads; one none reads (a video,
/// JPEG XL) goes as stored, which PS3.18 §8.7.3.4 allows, its part naming its syntax.
fn default_delivery(offer: &Offer) -> Delivery {
    match offer.carries_objects() {
        true => Delivery::ExplicitLittleEndian,
        false => Delivery::AsStored,
    }
}

/// One media range of an Accept header, with the parameters this server looks at.
#[derive(Debug, PartialEq)]
struct Range {
    essence: String,
    part_type: Option<String>,
    transfer_syntax: Option<String>,
    quality: f32,
}

/// `text` split at `separator` outside quoted strings.
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let (mut pieces, mut start, mut quoted) = (Vec::new(), 0, false);
    for (at, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            pieces.push(&text[start..at]);
            start = at + c.len_utf8();
        }
    }
    pieces.push(&text[start..]);
    pieces
}

/// The media ranges of `accept` (RFC 9110 §12.5.1). Written here rather than with a media-type
/// parser because DICOMweb clients send `type=application/dicom` unquoted, which a strict
/// parser refuses; a range without a `/` is skipped.
fn ranges(accept: &str) -> Vec<Range> {
    split_unquoted(accept, ',')
        .into_iter()
        .filter_map(|piece| {
            let mut parts = split_unquoted(piece, ';').into_iter();
            let essence = parts.next()?.trim().to_ascii_lowercase();
            if essence.split('/').count() != 2 || essence.contains(char::is_whitespace) {
                return None;
            }
            let mut range = Range {
                essence,
                part_type: None,
                transfer_syntax: None,
                quality: 1.0,
            };
            for parameter in parts {
                let Some((name, value)) = parameter.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"').trim().to_ascii_lowercase();
                match name.trim().to_ascii_lowercase().as_str() {
                    "type" => range.part_type = Some(value),
                    "transfer-syntax" => range.transfer_syntax = Some(value),
                    "q" => range.quality = value.parse::<f32>().unwrap_or(1.0).clamp(0.0, 1.0),
                    _ => {}
                }
            }
            Some(range)
        })
        .collect()
}

/// How closely `range` names `offer`, if it admits it, and how objects then go out: 0 for
/// `*/*`, 1 for `type/*`, 2 for the media type, 3 for the media type with a parameter that
/// matches. `stored` are the transfer syntaxes of the objects to be sent.
fn specificity(range: &Range, offer: &Offer, stored: &[&str]) -> Option<(u8, Delivery)> {
    let essence = match range.essence.split_once('/') {
        Some(("*", "*")) => 0,
        Some((kind, "*")) if offer.essence.split('/').next() == Some(kind) => 1,
        _ if range.essence == offer.essence => 2,
        _ => return None,
    };
    let part = match (&range.part_type, offer.part_type) {
        (Some(asked), Some(offered)) if asked == offered => true,
        (Some(asked), _) if asked != "*/*" && asked != "*" => return None,
        _ => false,
    };
    // Objects go out as stored when asked for with `*` or in the syntax they all have, decoded
    // to Explicit VR Little Endian when asked for without a syntax (PS3.18's default) or in it.
    let (named, delivery) = match range.transfer_syntax.as_deref() {
        Some("*") => (false, Delivery::AsStored),
        None => (false, default_delivery(offer)),
        Some(asked) if !stored.is_empty() && stored.iter().all(|t| *t == asked) => {
            (true, Delivery::AsStored)
        }
        Some(EXPLICIT_VR_LITTLE_ENDIAN) if offer.carries_objects() => (true, explicit(stored)?),
        Some(_) => return None,
    };
    Some((essence + u8::from(part || named), delivery))
}

/// The first of `offers` (in the server's order of preference) that the request's Accept
/// header admits with the highest quality — each offer takes the quality of the most specific
/// range that names it, so `*/*, image/jpeg;q=0` refuses JPEG — the first offer when there is
/// no Accept header or none of it parses, or the 406 answer saying what is offered.
/// `transfer_syntaxes` are those of the objects to be sent, as stored.
#[allow(clippy::result_large_err)] // a Response, as axum handlers return
pub(crate) fn negotiate(
    headers: &HeaderMap,
    offers: &[Offer],
    transfer_syntaxes: &[&str],
) -> Result<Negotiated, Response> {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let asked = ranges(&accept);
    let Some(&default) = offers.first() else {
        return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
    };
    if asked.is_empty() {
        let delivery = default_delivery(&default);
        return Ok(Negotiated {
            offer: default,
            delivery,
        });
    }
    let mut best: Option<(f32, Negotiated)> = None;
    for offer in offers {
        let chosen = asked
            .iter()
            .filter_map(|range| {
                let (specific, delivery) = specificity(range, offer, transfer_syntaxes)?;
                Some((specific, range.quality, delivery))
            })
            // The most specific range; among equally specific ones the highest quality (the
            // client's preferred syntax), whatever order they were listed in.
            .max_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        if let Some((_, quality, delivery)) = chosen.filter(|(_, q, _)| *q > 0.0) {
            if best.is_none_or(|(q, _)| quality > q) {
                let offer = *offer;
                best = Some((quality, Negotiated { offer, delivery }));
            }
        }
    }
    if let Some((_, negotiated)) = best {
        return Ok(negotiated);
    }
    let described: Vec<String> = offers
        .iter()
        .map(|o| match o.part_type {
            Some(part) => format!("{}; type=\"{part}\"", o.essence),
            None => o.essence.to_string(),
        })
        .collect();
    let mut syntaxes: Vec<&str> = transfer_syntaxes.to_vec();
    syntaxes.sort_unstable();
    syntaxes.dedup();
    let decodable = explicit(&syntaxes).is_some();
    let as_stored = match (syntaxes.is_empty(), decodable) {
        (true, _) => String::new(),
        (false, true) => format!(
            " (objects are sent as stored, in transfer syntax {}, or decoded to Explicit VR Little Endian, {EXPLICIT_VR_LITTLE_ENDIAN})",
            syntaxes.join(", ")
        ),
        (false, false) => format!(
            " (objects are sent as stored, in transfer syntax {}, which this node cannot decode: ask with transfer-syntax=*)",
            syntaxes.join(", ")
        ),
    };
    Err((
        StatusCode::NOT_ACCEPTABLE,
        axum::Json(grassroots_web::openapi::ApiError {
            error: format!(
                "this resource is sent as {}{as_stored}; the Accept header {accept:?} admits none",
                described.join(" or ")
            ),
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, value.parse().unwrap());
        headers
    }

    const DEFLATE: &str = "1.2.840.10008.1.2.1.99";
    const RLE: &str = "1.2.840.10008.1.2.5";

    #[test]
    fn no_accept_or_a_wildcard_takes_the_default() {
        let offers = [MULTIPART_DICOM, SINGLE_DICOM];
        assert_eq!(
            negotiate(&HeaderMap::new(), &offers, &[DEFLATE])
                .unwrap()
                .offer,
            MULTIPART_DICOM
        );
        assert_eq!(
            negotiate(&accept("*/*"), &offers, &[DEFLATE])
                .unwrap()
                .offer,
            MULTIPART_DICOM
        );
        assert_eq!(
            negotiate(&accept("image/*, */*;q=0.1"), &[JPEG], &[])
                .unwrap()
                .offer,
            JPEG
        );
    }

    #[test]
    fn the_part_type_and_transfer_syntax_asked_for_are_honoured() {
        let offers = [MULTIPART_DICOM, SINGLE_DICOM];
        let asked = r#"multipart/related; type="application/dicom"; transfer-syntax=*"#;
        assert_eq!(
            negotiate(&accept(asked), &offers, &[DEFLATE])
                .unwrap()
                .offer,
            MULTIPART_DICOM
        );
        let same =
            format!(r#"multipart/related; type="application/dicom"; transfer-syntax={DEFLATE}"#);
        assert!(negotiate(&accept(&same), &offers, &[DEFLATE]).is_ok());
        // Another syntax would need transcoding, which this server does not do.
        let other = r#"multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50"#;
        let refused = negotiate(&accept(other), &offers, &[DEFLATE]).unwrap_err();
        assert_eq!(refused.status(), StatusCode::NOT_ACCEPTABLE);
        // Frames are not objects; a bare application/dicom picks the single-part form.
        assert!(negotiate(
            &accept(r#"multipart/related; type="application/octet-stream""#),
            &offers,
            &[DEFLATE]
        )
        .is_err());
        assert_eq!(
            negotiate(&accept("application/dicom"), &offers, &[DEFLATE])
                .unwrap()
                .offer,
            SINGLE_DICOM
        );
    }

    #[test]
    fn unquoted_part_types_as_viewers_send_them_are_understood() {
        // Cornerstone's and OHIF's WADO-RS loaders.
        let frames = "multipart/related; type=application/octet-stream; transfer-syntax=*";
        assert_eq!(
            negotiate(&accept(frames), &[MULTIPART_FRAMES], &[])
                .unwrap()
                .offer,
            MULTIPART_FRAMES
        );
        let objects = "multipart/related; type=application/dicom";
        assert_eq!(
            negotiate(
                &accept(objects),
                &[MULTIPART_DICOM, SINGLE_DICOM],
                &[DEFLATE]
            )
            .unwrap()
            .offer,
            MULTIPART_DICOM
        );
        // Headers that say nothing this server can read take the default.
        assert_eq!(
            negotiate(&accept("nonsense"), &[JPEG], &[]).unwrap().offer,
            JPEG
        );
    }

    #[test]
    fn quality_orders_the_ranges_and_zero_refuses() {
        let offers = [MULTIPART_DICOM, SINGLE_DICOM];
        let asked = r#"multipart/related; type="application/dicom"; q=0.5, application/dicom"#;
        assert_eq!(
            negotiate(&accept(asked), &offers, &[DEFLATE])
                .unwrap()
                .offer,
            SINGLE_DICOM
        );
        assert!(negotiate(&accept("image/jpeg; q=0"), &[JPEG], &[]).is_err());
        // The most specific range decides: a wildcard does not undo a refusal.
        assert!(negotiate(&accept("*/*, image/jpeg;q=0"), &[JPEG], &[]).is_err());
        assert_eq!(
            negotiate(&accept("image/*;q=0, image/jpeg"), &[JPEG], &[])
                .unwrap()
                .offer,
            JPEG
        );
        assert!(negotiate(&accept("image/png"), &[JPEG], &[]).is_err());
        // A range that does not parse is skipped, not fatal.
        assert_eq!(
            negotiate(&accept("nonsense, image/jpeg"), &[JPEG], &[])
                .unwrap()
                .offer,
            JPEG
        );
    }

    #[test]
    fn objects_asked_for_without_a_syntax_are_decoded_to_explicit_little_endian() {
        let offers = [MULTIPART_DICOM, SINGLE_DICOM];
        let delivery = |value: Option<&str>, stored: &[&str]| {
            let headers = value.map(accept).unwrap_or_default();
            negotiate(&headers, &offers, stored)
                .ok()
                .map(|n| n.delivery)
        };
        let decoded = Some(Delivery::ExplicitLittleEndian);
        let bare = r#"multipart/related; type="application/dicom""#;
        assert_eq!(delivery(None, &[DEFLATE]), decoded);
        assert_eq!(delivery(Some(bare), &[DEFLATE]), decoded);
        assert_eq!(delivery(Some("application/dicom"), &[DEFLATE]), decoded);
        let named = format!("{bare}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}");
        assert_eq!(delivery(Some(&named), &[DEFLATE, RLE]), decoded);
        // `*` or the syntax they all have: as stored.
        let any = format!("{bare}; transfer-syntax=*");
        assert_eq!(delivery(Some(&any), &[RLE]), Some(Delivery::AsStored));
        let same = format!("{bare}; transfer-syntax={RLE}");
        assert_eq!(delivery(Some(&same), &[RLE]), Some(Delivery::AsStored));
        // Frames and pictures have no transfer syntax to choose.
        let frames = negotiate(&HeaderMap::new(), &[MULTIPART_FRAMES], &[]).unwrap();
        assert_eq!(frames.delivery, Delivery::AsStored);
        // An object this node cannot decode is sent as stored by default (each part names its
        // syntax) but refused where Explicit VR Little Endian is named.
        let unknown = "1.2.3.4.5.6";
        assert_eq!(delivery(None, &[unknown]), decoded);
        assert!(can_send_explicit_little_endian(RLE) && !can_send_explicit_little_endian(unknown));
        let refused = negotiate(&accept(&named), &offers, &[unknown]).unwrap_err();
        assert_eq!(refused.status(), StatusCode::NOT_ACCEPTABLE);
        assert_eq!(delivery(Some(&any), &[unknown]), Some(Delivery::AsStored));
        // Equally specific ranges: the higher quality decides, in whatever order they come.
        let stored_first = format!("{same}, {named};q=0.5");
        let stored_last = format!("{named};q=0.5, {same}");
        for asked in [stored_first, stored_last] {
            assert_eq!(
                delivery(Some(&asked), &[RLE]),
                Some(Delivery::AsStored),
                "{asked}"
            );
        }
        let zero = format!("{bare}; transfer-syntax=*; q=0");
        for asked in [format!("{zero}, {same}"), format!("{same}, {zero}")] {
            assert_eq!(
                delivery(Some(&asked), &[RLE]),
                Some(Delivery::AsStored),
                "{asked}"
            );
        }
    }
}
