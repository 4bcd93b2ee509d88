//! Exposure quality control on a slide's overview: a scan that is too dark or washed out cannot
//! be screened, whatever a tile classifier says about it.
//!
//! It is a rule, not a learnt class, because exposure is a property of the whole scan (the glass
//! tells how the scanner was calibrated) and because a rule can be checked by anyone: glass is
//! near white on a good scan, so a dark brightest part means under-exposure; and a scan where even
//! the darkest pixels are pale and most pixels are clipped white is over-exposed.

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Brightness (mean of R, G, B) of the 95th-percentile pixel below which a scan is too dark.
pub const UNDER_EXPOSED_BELOW: u8 = 160;
/// Brightness of the 1st-percentile pixel above which nothing on the scan is dark.
pub const WASHED_OUT_ABOVE: u8 = 200;
/// Share of clipped pixels (every channel at 250 or more) that, with nothing dark, means a scan
/// is over-exposed.
pub const CLIPPED_SHARE: f32 = 0.3;

/// Brightness statistics of a slide's overview.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Exposure {
    /// Brightness of the 1st-percentile (darkest) pixel, 0-255.
    pub dark: u8,
    /// Brightness of the 95th-percentile (glass, on most slides) pixel, 0-255.
    pub bright: u8,
    /// Share of pixels clipped to white.
    pub clipped: f32,
}

impl Exposure {
    pub fn measure(image: &RgbImage) -> Self {
        let mut histogram = [0u64; 256];
        let mut clipped = 0u64;
        for pixel in image.pixels() {
            let [r, g, b] = pixel.0;
            let mean = (u16::from(r) + u16::from(g) + u16::from(b)) / 3;
            histogram[mean as usize] += 1;
            clipped += u64::from(r >= 250 && g >= 250 && b >= 250);
        }
        let total = histogram.iter().sum::<u64>().max(1);
        let percentile = |share: f64| {
            let wanted = (total as f64 * share).ceil() as u64;
            let mut seen = 0;
            for (value, count) in histogram.iter().enumerate() {
                seen += count;
                if seen >= wanted.max(1) {
                    return value as u8;
                }
            }
            255
        };
        Self {
            dark: percentile(0.01),
            bright: percentile(0.95),
            clipped: clipped as f32 / total as f32,
        }
    }

    /// What is wrong with the exposure, in words for the worklist, if anything.
    pub fn fault(&self) -> Option<String> {
        if self.bright < UNDER_EXPOSED_BELOW {
            Some(format!(
                "under-exposed (brightest areas at {}/255)",
                self.bright
            ))
        } else if self.dark > WASHED_OUT_ABOVE && self.clipped > CLIPPED_SHARE {
            Some(format!(
                "over-exposed ({:.0}% clipped white, darkest areas at {}/255)",
                self.clipped * 100.0,
                self.dark
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// Glass with a band of H&E-coloured tissue, brightened or darkened by `gain` and `offset`.
    fn scan(gain: f32, offset: f32) -> RgbImage {
        RgbImage::from_fn(200, 100, |x, _| {
            let base = if (60..140).contains(&x) {
                [170.0, 110.0, 180.0]
            } else {
                [238.0, 236.0, 240.0]
            };
            Rgb(base.map(|v: f32| (v * gain + offset).clamp(0.0, 255.0) as u8))
        })
    }

    #[test]
    fn a_good_scan_passes_and_bad_exposure_is_named() {
        assert_eq!(Exposure::measure(&scan(1.0, 0.0)).fault(), None);
        let dark = Exposure::measure(&scan(0.55, 0.0)).fault().unwrap();
        assert!(dark.starts_with("under-exposed"), "{dark}");
        let washed = Exposure::measure(&scan(1.0, 90.0)).fault().unwrap();
        assert!(washed.starts_with("over-exposed"), "{washed}");
    }
}
