//! IIIF Image API 3.0 requests: `{region}/{size}/{rotation}/{quality}.{format}`, parsed into
//! pixel rectangles and output sizes, with the errors the specification asks for (400 for a
//! malformed or out-of-bounds request). Level 1 compliance plus `square`, `pct:` and `!w,h`;
//! rotation 0 only (the server answers others with 400, as level 1 allows).

use crate::deepzoom::TileFormat;

/// Largest output edge this server renders, advertised in `info.json`.
pub const MAX_EDGE: u32 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IiifRequest {
    /// Region in full-resolution pixels: x, y, width, height (already clipped to the image).
    pub region: (u32, u32, u32, u32),
    /// Output width and height.
    pub size: (u32, u32),
    pub format: TileFormat,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IiifError {
    #[error("invalid region {0:?}: use full, square, x,y,w,h or pct:x,y,w,h inside the image")]
    Region(String),
    #[error("invalid size {0:?}: use max, w,, ,h, w,h, !w,h or pct:n (prefix ^ to enlarge)")]
    Size(String),
    #[error("requested size {0}x{1} exceeds the limit of {MAX_EDGE} pixels per side")]
    TooLarge(u32, u32),
    #[error("rotation {0:?} is not supported: only 0")]
    Rotation(String),
    #[error("invalid quality/format {0:?}: use default.jpg, color.jpg, default.png or color.png")]
    QualityFormat(String),
}

fn numbers<T: std::str::FromStr>(text: &str, count: usize) -> Option<Vec<T>> {
    let values: Vec<T> = text
        .split(',')
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    (values.len() == count).then_some(values)
}

fn parse_region(text: &str, width: u32, height: u32) -> Result<(u32, u32, u32, u32), IiifError> {
    let invalid = || IiifError::Region(text.to_string());
    let (x, y, w, h) = match text {
        "full" => (0, 0, width, height),
        "square" => {
            let side = width.min(height);
            ((width - side) / 2, (height - side) / 2, side, side)
        }
        _ => {
            if let Some(pct) = text.strip_prefix("pct:") {
                let v: Vec<f64> = numbers(pct, 4).ok_or_else(invalid)?;
                if v.iter().any(|n| !n.is_finite() || *n < 0.0) {
                    return Err(invalid());
                }
                let scale = |p: f64, of: u32| (p / 100.0 * f64::from(of)).round() as u32;
                (
                    scale(v[0], width),
                    scale(v[1], height),
                    scale(v[2], width),
                    scale(v[3], height),
                )
            } else {
                let v: Vec<u32> = numbers(text, 4).ok_or_else(invalid)?;
                (v[0], v[1], v[2], v[3])
            }
        }
    };
    if w == 0 || h == 0 || x >= width || y >= height {
        return Err(invalid());
    }
    // A region reaching past the edge is clipped, as the specification says.
    Ok((x, y, w.min(width - x), h.min(height - y)))
}

fn parse_size(text: &str, region_w: u32, region_h: u32) -> Result<(u32, u32), IiifError> {
    let invalid = || IiifError::Size(text.to_string());
    let (upscale, spec) = match text.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (rw, rh) = (f64::from(region_w), f64::from(region_h));
    let (w, h) = if spec == "max" {
        let scale =
            (f64::from(MAX_EDGE) / rw.max(rh)).min(if upscale { f64::INFINITY } else { 1.0 });
        ((rw * scale).round(), (rh * scale).round())
    } else if let Some(pct) = spec.strip_prefix("pct:") {
        let n: f64 = pct.parse().map_err(|_| invalid())?;
        if !n.is_finite() || n <= 0.0 || (n > 100.0 && !upscale) {
            return Err(invalid());
        }
        ((rw * n / 100.0).round(), (rh * n / 100.0).round())
    } else if let Some(fit) = spec.strip_prefix('!') {
        let v: Vec<u32> = numbers(fit, 2).ok_or_else(invalid)?;
        if v.contains(&0) {
            return Err(invalid());
        }
        let scale = (f64::from(v[0]) / rw).min(f64::from(v[1]) / rh);
        if scale > 1.0 && !upscale {
            (rw, rh)
        } else {
            ((rw * scale).round(), (rh * scale).round())
        }
    } else {
        let (w, h) = spec.split_once(',').ok_or_else(invalid)?;
        match (
            w.parse::<u32>().ok(),
            h.parse::<u32>().ok(),
            w.is_empty(),
            h.is_empty(),
        ) {
            (Some(0), ..) | (_, Some(0), ..) => return Err(invalid()),
            (Some(w), None, false, true) => (f64::from(w), (rh * f64::from(w) / rw).round()),
            (None, Some(h), true, false) => ((rw * f64::from(h) / rh).round(), f64::from(h)),
            (Some(w), Some(h), false, false) => (f64::from(w), f64::from(h)),
            _ => return Err(invalid()),
        }
    };
    // A thin region scaled down keeps at least one pixel across, as the specification expects.
    let (w, h) = (w.max(1.0), h.max(1.0));
    if !upscale && (w > rw || h > rh) {
        return Err(invalid());
    }
    if w > f64::from(MAX_EDGE) || h > f64::from(MAX_EDGE) {
        return Err(IiifError::TooLarge(w as u32, h as u32));
    }
    Ok((w as u32, h as u32))
}

/// Parses the four path segments of an image request against an image of `width` x `height`.
pub fn parse_request(
    region: &str,
    size: &str,
    rotation: &str,
    file: &str,
    width: u32,
    height: u32,
) -> Result<IiifRequest, IiifError> {
    let region = parse_region(region, width, height)?;
    let size = parse_size(size, region.2, region.3)?;
    if rotation != "0" {
        return Err(IiifError::Rotation(rotation.to_string()));
    }
    let format = match file {
        "default.jpg" | "color.jpg" => TileFormat::Jpeg,
        "default.png" | "color.png" => TileFormat::Png,
        _ => return Err(IiifError::QualityFormat(file.to_string())),
    };
    Ok(IiifRequest {
        region,
        size,
        format,
    })
}

/// The `info.json` document for an image at `id_url`.
/// Advertises the slide's stored tile grid when it has one (so that viewers ask for requests
/// served as stored), 256-pixel tiles otherwise.
pub fn info_json(id_url: &str, info: &crate::SlideInfo) -> serde_json::Value {
    let (width, height) = (info.width, info.height);
    let (tile_width, tile_height, scale_factors) = match &info.native_tiles {
        Some(grid) if !grid.scale_factors.is_empty() => {
            (grid.width, grid.height, grid.scale_factors.clone())
        }
        _ => {
            let tile = 256;
            let mut factors = vec![1u32];
            while factors
                .last()
                .is_some_and(|f| width / f > tile || height / f > tile)
            {
                let next = factors.last().copied().unwrap_or(1) * 2;
                factors.push(next);
            }
            (tile, tile, factors)
        }
    };
    serde_json::json!({
        "@context": "http://iiif.io/api/image/3/context.json",
        "id": id_url,
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level1",
        "width": width,
        "height": height,
        "maxWidth": MAX_EDGE,
        "maxHeight": MAX_EDGE,
        "tiles": [{ "width": tile_width, "height": tile_height, "scaleFactors": scale_factors }],
        "extraQualities": ["color"],
        "extraFormats": ["png"],
        "extraFeatures": ["regionSquare", "regionByPct", "sizeByPct", "sizeByConfinedWh", "sizeUpscaling"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_and_sizes_follow_the_specification() {
        let r =
            |region: &str, size: &str| parse_request(region, size, "0", "default.jpg", 2000, 1000);
        assert_eq!(r("full", "max").unwrap().size, (2000, 1000));
        assert_eq!(r("full", "max").unwrap().region, (0, 0, 2000, 1000));
        assert_eq!(r("square", "max").unwrap().region, (500, 0, 1000, 1000));
        assert_eq!(r("0,0,512,512", "256,").unwrap().size, (256, 256));
        assert_eq!(
            r("1900,900,512,512", "max").unwrap().region,
            (1900, 900, 100, 100),
            "clipped at the edge"
        );
        assert_eq!(
            r("pct:50,50,50,50", "max").unwrap().region,
            (1000, 500, 1000, 500)
        );
        assert_eq!(r("full", ",100").unwrap().size, (200, 100));
        assert_eq!(r("full", "!400,400").unwrap().size, (400, 200));
        assert_eq!(r("full", "pct:10").unwrap().size, (200, 100));
        assert_eq!(r("0,0,100,100", "^200,200").unwrap().size, (200, 200));
        assert_eq!(
            parse_request("full", "max", "0", "color.png", 10, 10)
                .unwrap()
                .format,
            TileFormat::Png
        );
    }

    #[test]
    fn malformed_or_out_of_bounds_requests_are_refused() {
        let r = |region: &str, size: &str, rotation: &str, file: &str| {
            parse_request(region, size, rotation, file, 2000, 1000)
        };
        assert!(matches!(
            r("3000,0,10,10", "max", "0", "default.jpg"),
            Err(IiifError::Region(_))
        ));
        assert!(matches!(
            r("0,0,0,10", "max", "0", "default.jpg"),
            Err(IiifError::Region(_))
        ));
        assert!(matches!(
            r("0,0,10", "max", "0", "default.jpg"),
            Err(IiifError::Region(_))
        ));
        assert!(matches!(
            r("a,b,c,d", "max", "0", "default.jpg"),
            Err(IiifError::Region(_))
        ));
        assert!(matches!(
            r("full", "0,", "0", "default.jpg"),
            Err(IiifError::Size(_))
        ));
        assert!(
            matches!(
                r("0,0,100,100", "200,200", "0", "default.jpg"),
                Err(IiifError::Size(_))
            ),
            "no upscaling without ^"
        );
        assert!(matches!(
            r("full", "^9000,", "0", "default.jpg"),
            Err(IiifError::TooLarge(..))
        ));
        assert!(matches!(
            r("full", "max", "90", "default.jpg"),
            Err(IiifError::Rotation(_))
        ));
        assert!(matches!(
            r("full", "max", "0", "bitonal.jpg"),
            Err(IiifError::QualityFormat(_))
        ));
        assert!(matches!(
            r("full", "max", "0", "default.gif"),
            Err(IiifError::QualityFormat(_))
        ));
    }

    #[test]
    fn info_lists_scale_factors_down_to_one_tile() {
        let slide = crate::SlideInfo {
            vendor: "test".into(),
            width: 2220,
            height: 2967,
            levels: vec![],
            microns_per_pixel_x: None,
            microns_per_pixel_y: None,
            objective_power: None,
            associated_images: vec![],
            deep_zoom_levels: 13,
            tile_size: 254,
            overlap: 1,
            native_tiles: None,
        };
        let info = info_json("http://edge/iiif/3/x", &slide);
        assert_eq!(
            info["tiles"][0]["scaleFactors"],
            serde_json::json!([1, 2, 4, 8, 16])
        );
        assert_eq!(info["width"], 2220);
    }
}
