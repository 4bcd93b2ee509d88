//! A referral as it crosses from an edge to the hub: **everything** in this type leaves the
//! county hospital, so it holds only what a tertiary expert needs to take the case on — a
//! pseudonymous case id, an age band, sex, the specimen, the clinical question, the urgency, the
//! slides' geometry and the edge's AI screening summary. Names, patient ids, dates of birth and
//! pathology numbers stay at the edge (`edge/src/referrals.rs` keeps them beside the referral).
//! `docs/REFERRALS.md` lists the fields; a field added here must be added there.
//!
//! It travels as JSON in a content-addressed bulk transfer labelled [`REFERRAL_LABEL`], so it is
//! store-and-forward and delivered once (the hub keys it by `referral_id`). The hub refuses
//! unknown fields and checks every bound in [`Referral::validate`] before storing anything.

use serde::{Deserialize, Serialize};

use crate::WireError;

/// The transfer label of a referral blob.
pub const REFERRAL_LABEL: &str = "referral";

/// Most characters of the clinical question.
pub const MAX_QUESTION: usize = 2000;
/// Most slides in one referral.
pub const MAX_SLIDES: usize = 32;
/// Most bytes of a slide's regions.
pub const MAX_REGIONS_BYTES: usize = 64 * 1024;

/// The largest referral file a valid referral can make (every slide with its most regions, with
/// room for the text and JSON around them): a receiver refuses a larger one without reading it.
pub const MAX_REFERRAL_BYTES: usize = MAX_SLIDES * (MAX_REGIONS_BYTES * 2 + 4096) + 64 * 1024;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// Answer within the hour (intra-operative, say).
    Urgent,
    /// Answer within a working day.
    Priority,
    Routine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    Female,
    Male,
    Unknown,
}

/// A slide of a referral: what the hub needs to ask the edge for its tiles and to show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferredSlide {
    /// The edge's content id of the slide (a hash of its bytes: names nothing).
    pub slide_id: String,
    pub width: u32,
    pub height: u32,
    pub microns_per_pixel: Option<f64>,
    /// The edge's triage ("suspicious", "likely-benign", "needs-rescan"), if screened.
    pub ai_triage: Option<String>,
    pub ai_score: Option<f32>,
    /// The AI's top regions: a GeoJSON FeatureCollection in slide pixels, as text.
    pub regions_geojson: Option<String>,
}

/// A radiology study of a referral (CT, MR...): pseudonymous keys and the figures the
/// expert's viewer needs, nothing read from the objects' patient, study or series modules. The
/// expert sees it only as frames the edge renders on request (`Message::StudyView`).
///
/// What the PS3.15 Basic Application Level Confidentiality Profile asks of what crosses, and
/// how this type meets it: the study and series UIDs are replaced (`U`) by keyed hashes only
/// the edge can map back; names, ids, dates, times, accession numbers, institution and
/// descriptions are removed (`X`/`Z`) by not being fields at all; the modality and the image
/// geometry (rows, columns, counts) are kept (`K`). Series with burned-in annotation never
/// appear here (`grassroots_dicom::InstanceAttributes::burned_in`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferredStudy {
    /// A keyed hash of the Study Instance UID at the edge (32 hex digits).
    pub study_key: String,
    pub series: Vec<ReferredSeries>,
}

/// A series of a referred study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferredSeries {
    /// A keyed hash of the Series Instance UID at the edge (32 hex digits).
    pub series_key: String,
    /// The DICOM modality ("CT", "MR", "CR"...).
    pub modality: String,
    /// How many pictures its stack holds (every frame of every image), the expert's viewer
    /// scrolls through them by index.
    pub images: u32,
    pub rows: u16,
    pub columns: u16,
    /// Whether its slices make a volume (reformatting and volume rendering possible); the
    /// edge says why not when the expert asks.
    pub volume: bool,
}

/// A volume series' figures, as the edge answers a `describe` view of it
/// ([`crate::Message::StudyView`]) and as its own pages use them: per orientation, a picture's
/// width and height in mm (to link the three views' cursors), and whether the volume lies
/// along the patient's axes (the cropping sliders are then named after them). The hub
/// parses it strictly and writes it anew into its page.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesFigures {
    pub axial: [f64; 2],
    pub coronal: [f64; 2],
    pub sagittal: [f64; 2],
    pub along_patient_axes: bool,
}

impl SeriesFigures {
    /// Reads an edge's answer: finite sizes of at most 10 m.
    pub fn parse(bytes: &[u8]) -> Result<SeriesFigures, WireError> {
        let figures: SeriesFigures = serde_json::from_slice(bytes)
            .map_err(|e| WireError::Malformed(format!("series figures: {e}")))?;
        let sane = [figures.axial, figures.coronal, figures.sagittal]
            .iter()
            .flatten()
            .all(|mm| mm.is_finite() && (0.0..=10_000.0).contains(mm));
        if !sane {
            return Err(WireError::Malformed(
                "series figures: sizes are 0 to 10,000 mm".into(),
            ));
        }
        Ok(figures)
    }
}

/// One image of a referred series' stack, as the expert's measuring tools at the hub need it
/// (an edge's answer to a `StudyView` of kind `stack`, a list in stack order): its size in
/// pixels (0 where the image does not say) and Pixel Spacing (mm between rows, then between
/// columns) when it has one. Geometry only: no value, UID or name.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StackPicture {
    pub columns: u32,
    pub rows: u32,
    pub spacing: Option<[f64; 2]>,
}

/// Most images of a stack an edge may describe.
pub const MAX_STACK_IMAGES: usize = 20_000;

impl StackPicture {
    /// Reads an edge's list: at most [`MAX_STACK_IMAGES`] images of at most 65,535 pixels a
    /// side, spacings from 0.001 to 100 mm (the edge's volumes' bounds; it leaves out others).
    pub fn parse_all(bytes: &[u8]) -> Result<Vec<StackPicture>, WireError> {
        let images: Vec<StackPicture> = serde_json::from_slice(bytes)
            .map_err(|e| WireError::Malformed(format!("stack images: {e}")))?;
        if images.len() > MAX_STACK_IMAGES {
            return Err(WireError::Malformed(format!(
                "stack images: {} images, more than {MAX_STACK_IMAGES}",
                images.len()
            )));
        }
        let sane = images.iter().all(|image| {
            image.columns <= 65_535
                && image.rows <= 65_535
                && image
                    .spacing
                    .is_none_or(|spacing| spacing.iter().all(|mm| (0.001..=100.0).contains(mm)))
        });
        if !sane {
            return Err(WireError::Malformed(
                "stack images: sizes are at most 65,535 pixels, spacings 0.001 to 100 mm".into(),
            ));
        }
        Ok(images)
    }
}

/// The modality values (HU for CT) of a rectangle of one image, as an edge measures it for
/// the expert (a `StudyView` of kind `region`): statistics of the rectangle the expert drew on
/// a picture the expert may see anyway, never the picture itself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegionFigures {
    pub pixels: u64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub standard_deviation: f64,
}

impl RegionFigures {
    /// Reads an edge's answer: finite values, the extremes around the mean, at least a pixel.
    pub fn parse(bytes: &[u8]) -> Result<RegionFigures, WireError> {
        let figures: RegionFigures = serde_json::from_slice(bytes)
            .map_err(|e| WireError::Malformed(format!("region figures: {e}")))?;
        let values = [
            figures.mean,
            figures.min,
            figures.max,
            figures.standard_deviation,
        ];
        // A mean is a sum divided: an ulp beyond the extremes is rounding, not a lie.
        let rounding = 1e-9 * (1.0 + figures.min.abs() + figures.max.abs());
        let sane = figures.pixels > 0
            && values.iter().all(|v| v.is_finite())
            && figures.min <= figures.max
            && (figures.min - rounding..=figures.max + rounding).contains(&figures.mean)
            && figures.standard_deviation >= 0.0;
        if !sane {
            return Err(WireError::Malformed(
                "region figures: finite, min <= mean <= max, at least one pixel".into(),
            ));
        }
        Ok(figures)
    }
}

/// Most studies in one referral.
pub const MAX_STUDIES: usize = 8;
/// Most series of a referred study.
pub const MAX_SERIES: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Referral {
    /// Random, chosen at the edge: the idempotency key.
    pub referral_id: String,
    /// A keyed hash of the case at this edge: the same case gets the same pseudonym, and only
    /// the edge can tell which case it is.
    pub case_pseudonym: String,
    /// Ten-year band ("40-49"; "80+"), or "unknown".
    pub age_band: String,
    pub sex: Sex,
    /// Specimen and site, as the referring doctor wrote it ("gastric biopsy, antrum").
    pub specimen: String,
    pub question: String,
    pub urgency: Urgency,
    pub slides: Vec<ReferredSlide>,
    /// When the doctor referred it (RFC 3339, UTC).
    pub referred_at: String,
    /// Radiology studies referred with the case (added after version 1: absent when empty, so
    /// a referral of slides alone reads as before; a hub that takes them announces
    /// [`crate::capabilities::STUDY_CONSULT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub studies: Vec<ReferredStudy>,
}

fn malformed(reason: impl Into<String>) -> WireError {
    WireError::Malformed(format!("referral: {}", reason.into()))
}

impl Referral {
    /// Checks every bound; the hub stores nothing that fails.
    pub fn validate(&self) -> Result<(), WireError> {
        let hex_of = |text: &str, len: usize| {
            text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
        };
        if !hex_of(&self.referral_id, 32) {
            return Err(malformed("referral_id must be 32 hex digits"));
        }
        if !hex_of(&self.case_pseudonym, 64) {
            return Err(malformed("case_pseudonym must be 64 hex digits"));
        }
        let band_ok = self.age_band == "unknown"
            || self.age_band == "80+"
            || self
                .age_band
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
                .is_some_and(|(a, b)| a % 10 == 0 && b == a + 9 && a < 80);
        if !band_ok {
            return Err(malformed(format!("age band {:?}", self.age_band)));
        }
        if self.question.trim().is_empty() || self.question.chars().count() > MAX_QUESTION {
            return Err(malformed(format!(
                "the question must have 1 to {MAX_QUESTION} characters"
            )));
        }
        if self.specimen.chars().count() > 200 {
            return Err(malformed("the specimen has more than 200 characters"));
        }
        if self.slides.len() > MAX_SLIDES {
            return Err(malformed(format!("at most {MAX_SLIDES} slides")));
        }
        if self.studies.len() > MAX_STUDIES {
            return Err(malformed(format!("at most {MAX_STUDIES} studies")));
        }
        if self.slides.is_empty() && self.studies.is_empty() {
            return Err(malformed("a referral needs a slide or a study"));
        }
        for study in &self.studies {
            if !hex_of(&study.study_key, 32)
                || study.series.is_empty()
                || study.series.len() > MAX_SERIES
            {
                return Err(malformed(format!(
                    "study {:?}: a key of 32 hex digits and 1 to {MAX_SERIES} series",
                    study.study_key
                )));
            }
            for series in &study.series {
                let modality_ok = (1..=16).contains(&series.modality.len())
                    && series
                        .modality
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                if !hex_of(&series.series_key, 32) || !modality_ok || series.images == 0 {
                    return Err(malformed(format!("series {:?}", series.series_key)));
                }
            }
        }
        for slide in &self.slides {
            let regions = slide.regions_geojson.as_ref().map_or(0, String::len);
            if !hex_of(&slide.slide_id, 64)
                || slide.width == 0
                || slide.height == 0
                || regions > MAX_REGIONS_BYTES
            {
                return Err(malformed(format!("slide {:?}", slide.slide_id)));
            }
        }
        if self.referred_at.len() > 40 {
            return Err(malformed("referred_at"));
        }
        Ok(())
    }
}

/// The transfer label of a consult report (hub to edge).
pub const REPORT_LABEL: &str = "consult-report";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReportCategory {
    Benign,
    Malignant,
    Uncertain,
    InsufficientSample,
}

/// The expert's answer to a referral, as it travels back to the referring edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsultReport {
    pub referral_id: String,
    pub category: ReportCategory,
    pub diagnosis: String,
    pub recommendations: String,
    /// Polygons, rectangles and points the expert drew: a GeoJSON FeatureCollection in slide
    /// pixels, as text (QuPath imports it).
    pub annotations_geojson: Option<String>,
    /// The hub account that answered.
    pub expert: String,
    /// RFC 3339.
    pub answered_at: String,
    /// BLAKE3 (hex) of the fields above, in this order, each followed by a zero byte: a
    /// receiver recomputes it to see that nothing was altered after the expert answered.
    pub digest: String,
    /// The hub's certificate (PEM), issued by the network's CA.
    #[serde(default)]
    pub signer_certificate_pem: String,
    /// The hub's ECDSA P-256 signature (hex, DER) of [`REPORT_SIGNING_CONTEXT`] and the digest:
    /// the network's hub vouches for the answer and the expert account named in it.
    #[serde(default)]
    pub signature: String,
}

/// What a report signature signs, before the digest.
pub const REPORT_SIGNING_CONTEXT: &str = "grassroots consult report v1";

impl ConsultReport {
    pub fn compute_digest(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        let category = match self.category {
            ReportCategory::Benign => "benign",
            ReportCategory::Malignant => "malignant",
            ReportCategory::Uncertain => "uncertain",
            ReportCategory::InsufficientSample => "insufficient-sample",
        };
        for field in [
            self.referral_id.as_str(),
            category,
            &self.diagnosis,
            &self.recommendations,
            self.annotations_geojson.as_deref().unwrap_or(""),
            &self.expert,
            &self.answered_at,
        ] {
            hasher.update(field.as_bytes());
            hasher.update(&[0]);
        }
        hasher.finalize().to_hex().to_string()
    }

    /// Checks the bounds and the digest.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.diagnosis.trim().is_empty() || self.diagnosis.chars().count() > 10_000 {
            return Err(malformed(
                "a report needs a diagnosis of at most 10,000 characters",
            ));
        }
        if self.recommendations.chars().count() > 10_000 {
            return Err(malformed("recommendations of more than 10,000 characters"));
        }
        if self.annotations_geojson.as_ref().map_or(0, String::len) > 1024 * 1024 {
            return Err(malformed("annotations of more than 1 MiB"));
        }
        if self.digest != self.compute_digest() {
            return Err(malformed("the report's digest does not match its content"));
        }
        Ok(())
    }
}

/// The ten-year band of an age in years.
pub fn age_band(years: Option<u32>) -> String {
    match years {
        None => "unknown".into(),
        Some(years) if years >= 80 => "80+".into(),
        Some(years) => {
            let low = years / 10 * 10;
            format!("{low}-{}", low + 9)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_images_and_region_figures_are_read_strictly() {
        let stack = br#"[{"columns":512,"rows":512,"spacing":[0.7,0.7]},{"columns":2048,"rows":2500,"spacing":null}]"#;
        let images = StackPicture::parse_all(stack).unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!(images[1].spacing, None);
        for bad in [
            &br#"[{"columns":70000,"rows":512,"spacing":null}]"#[..],
            br#"[{"columns":512,"rows":512,"spacing":[0.0,0.7]}]"#,
            br#"[{"columns":512,"rows":512,"spacing":null,"uid":"1.2.3"}]"#,
            br#"{"columns":512}"#,
        ] {
            assert!(
                StackPicture::parse_all(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let region =
            br#"{"pixels":100,"mean":40.5,"min":-12.0,"max":80.0,"standard_deviation":9.5}"#;
        assert_eq!(RegionFigures::parse(region).unwrap().pixels, 100);
        // A uniform region's mean may be an ulp off its extremes.
        let uniform = format!(
            r#"{{"pixels":3,"mean":{},"min":0.1,"max":0.1,"standard_deviation":0.0}}"#,
            (0.1f64 + 0.1 + 0.1) / 3.0
        );
        assert!(RegionFigures::parse(uniform.as_bytes()).is_ok());
        for bad in [
            &br#"{"pixels":0,"mean":1.0,"min":1.0,"max":1.0,"standard_deviation":0.0}"#[..],
            br#"{"pixels":4,"mean":90.0,"min":-12.0,"max":80.0,"standard_deviation":9.5}"#,
            br#"{"pixels":4,"mean":1.0,"min":1.0,"max":1.0,"standard_deviation":-1.0}"#,
            br#"{"pixels":4,"mean":1.0,"min":1.0,"max":1.0,"standard_deviation":0.0,"pixel_data":[1]}"#,
        ] {
            assert!(RegionFigures::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn ages_become_ten_year_bands_and_bands_are_checked() {
        assert_eq!(age_band(Some(47)), "40-49");
        assert_eq!(age_band(Some(3)), "0-9");
        assert_eq!(age_band(Some(91)), "80+");
        assert_eq!(age_band(None), "unknown");
        let mut referral = Referral {
            referral_id: "0f".repeat(16),
            case_pseudonym: "ab".repeat(32),
            age_band: age_band(Some(47)),
            sex: Sex::Female,
            specimen: "skin".into(),
            question: "Melanoma?".into(),
            urgency: Urgency::Routine,
            slides: vec![ReferredSlide {
                slide_id: "cd".repeat(32),
                width: 10,
                height: 10,
                microns_per_pixel: None,
                ai_triage: None,
                ai_score: None,
                regions_geojson: None,
            }],
            referred_at: "2026-11-26T06:00:00Z".into(),
            studies: Vec::new(),
        };
        assert!(referral.validate().is_ok());
        // Slides alone serialise as before the studies were added: an older hub takes them.
        let json = serde_json::to_string(&referral).unwrap();
        assert!(!json.contains("studies"), "{json}");
        referral.age_band = "41-50".into();
        assert!(referral.validate().is_err());
        referral.age_band = "40-49".into();
        referral.question = " ".into();
        assert!(referral.validate().is_err());
        referral.question = "Melanoma?".into();
        let slides = std::mem::take(&mut referral.slides);
        assert!(referral.validate().is_err());
        // A study alone is a referral; its keys and modality are checked.
        let series = ReferredSeries {
            series_key: "12".repeat(16),
            modality: "CT".into(),
            images: 133,
            rows: 512,
            columns: 512,
            volume: true,
        };
        referral.studies = vec![ReferredStudy {
            study_key: "34".repeat(16),
            series: vec![series.clone()],
        }];
        assert!(referral.validate().is_ok());
        referral.studies[0].series[0].modality = "<b>CT".into();
        assert!(referral.validate().is_err());
        referral.studies[0].series[0] = series;
        referral.studies[0].study_key = "1.2.840.113619".into();
        assert!(referral.validate().is_err());
        referral.studies.clear();
        referral.slides = slides;
        assert!(referral.validate().is_ok());
        assert!(Urgency::Urgent < Urgency::Priority && Urgency::Priority < Urgency::Routine);
    }

    #[test]
    fn a_report_altered_after_the_answer_fails_its_digest() {
        let mut report = ConsultReport {
            referral_id: "0f".repeat(16),
            category: ReportCategory::Benign,
            diagnosis: "Hyperplastic polyp.".into(),
            recommendations: String::new(),
            annotations_geojson: None,
            expert: "prof-zhang".into(),
            answered_at: "2026-11-26T06:40:00Z".into(),
            digest: String::new(),
            signer_certificate_pem: String::new(),
            signature: String::new(),
        };
        report.digest = report.compute_digest();
        assert!(report.validate().is_ok());
        report.category = ReportCategory::Malignant;
        let error = report.validate().unwrap_err().to_string();
        assert!(error.contains("digest"), "{error}");
    }
}
