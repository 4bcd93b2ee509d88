//! What a DICOMweb client asked for in its `Accept` header, against what this server can send
//! (PS3.18 §8.7.3): objects as stored (no transcoding), frames as they decode, rendered
//! pictures as JPEG. A request whose Accept admits none of these is answered 406 with what the
//! resource offers, rather than with bytes the client said it cannot take; a request without
//! Accept takes the default.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

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

/// One media range of an Accept header, with the parameters this server looks at.
#[derive(Debug, PartialEq)]
struct Range {
    essence: String,
    part_type: Option<String>,
    transfer_syntax: Option<String>,
    quality: f32,
}

/// The media ranges of `accept`, split at commas outside quoted strings; ranges that do not
/// parse are skipped (as a server ignores what it cannot read), those with q=0 kept out.
fn ranges(accept: &str) -> Vec<Range> {
    let mut pieces = Vec::new();
    let (mut current, mut quoted) = (String::new(), false);
    for c in accept.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => pieces.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    pieces.push(current);
    pieces
        .iter()
        .filter_map(|piece| piece.trim().parse::<mime::Mime>().ok())
        .map(|media| {
            let parameter = |name: &str| {
                media
                    .get_param(name)
                    .map(|v| v.as_str().trim().to_ascii_lowercase())
            };
            Range {
                essence: media.essence_str().to_ascii_lowercase(),
                part_type: parameter("type"),
                transfer_syntax: parameter("transfer-syntax"),
                quality: parameter("q")
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0),
            }
        })
        .filter(|range| range.quality > 0.0)
        .collect()
}

fn admits(range: &Range, offer: &Offer, transfer_syntaxes: &[&str]) -> bool {
    let essence = match range.essence.split_once('/') {
        Some(("*", "*")) => true,
        Some((kind, "*")) => offer.essence.split('/').next() == Some(kind),
        _ => range.essence == offer.essence,
    };
    let part = match (&range.part_type, offer.part_type) {
        (Some(asked), Some(offered)) => asked == offered || asked == "*/*",
        _ => true,
    };
    // Objects go out as stored: a named transfer syntax is met only if every object has it.
    let syntax = match range.transfer_syntax.as_deref() {
        None | Some("*") => true,
        Some(asked) => {
            !transfer_syntaxes.is_empty() && transfer_syntaxes.iter().all(|t| *t == asked)
        }
    };
    essence && part && syntax
}

/// The first of `offers` (in the server's order of preference) that the request's Accept
/// header admits — the first offer when it has none — or the 406 answer saying what is
/// offered. `transfer_syntaxes` are those of the objects to be sent, as stored.
#[allow(clippy::result_large_err)] // a Response, as axum handlers return
pub(crate) fn negotiate(
    headers: &HeaderMap,
    offers: &[Offer],
    transfer_syntaxes: &[&str],
) -> Result<Offer, Response> {
    let Some(accept) = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(offers[0]);
    };
    let mut asked = ranges(accept);
    asked.sort_by(|a, b| b.quality.total_cmp(&a.quality));
    for range in &asked {
        if let Some(offer) = offers.iter().find(|o| admits(range, o, transfer_syntaxes)) {
            return Ok(*offer);
        }
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
    let as_stored = match syntaxes.is_empty() {
        true => String::new(),
        false => format!(
            " (objects are sent as stored, in transfer syntax {})",
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

    #[test]
    fn no_accept_or_a_wildcard_takes_the_default() {
        let offers = [MULTIPART_DICOM, SINGLE_DICOM];
        assert_eq!(
            negotiate(&HeaderMap::new(), &offers, &[DEFLATE]).unwrap(),
            MULTIPART_DICOM
        );
        assert_eq!(
            negotiate(&accept("*/*"), &offers, &[DEFLATE]).unwrap(),
            MULTIPART_DICOM
        );
        assert_eq!(
            negotiate(&accept("image/*, */*;q=0.1"), &[JPEG], &[]).unwrap(),
            JPEG
        );
    }

    #[test]
    fn the_part_type_and_transfer_syntax_asked_for_are_honoured() {
        let offers = [MULTIPART_DICOM, SINGLE_DICOM];
        let asked = r#"multipart/related; type="application/dicom"; transfer-syntax=*"#;
        assert_eq!(
            negotiate(&accept(asked), &offers, &[DEFLATE]).unwrap(),
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
            negotiate(&accept("application/dicom"), &offers, &[DEFLATE]).unwrap(),
            SINGLE_DICOM
        );
    }

    #[test]
    fn quality_orders_the_ranges_and_zero_refuses() {
        let offers = [MULTIPART_DICOM, SINGLE_DICOM];
        let asked = r#"multipart/related; type="application/dicom"; q=0.5, application/dicom"#;
        assert_eq!(
            negotiate(&accept(asked), &offers, &[DEFLATE]).unwrap(),
            SINGLE_DICOM
        );
        assert!(negotiate(&accept("image/jpeg; q=0"), &[JPEG], &[]).is_err());
        assert!(negotiate(&accept("image/png"), &[JPEG], &[]).is_err());
        // A range that does not parse is skipped, not fatal.
        assert_eq!(
            negotiate(&accept("nonsense, image/jpeg"), &[JPEG], &[]).unwrap(),
            JPEG
        );
    }
}
