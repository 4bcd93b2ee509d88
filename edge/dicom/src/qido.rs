//! DICOMweb's search (QIDO-RS, PS3.18 10.6) over the archive's index: query parameters named by
//! keyword (`PatientName=Wang*`) or tag (`00100010=Wang*`), matched as C-FIND matches them
//! (`query.rs`), answered in the DICOM JSON model (PS3.18 F.2, written by dicom-json); and the
//! metadata of stored instances (WADO-RS), every attribute but the pixel data.

use std::path::Path;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::Tag;
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::OpenFileOptions;

use crate::index::StudyIndex;
use crate::query::{Query, QueryLevel};
use crate::{DicomError, Result};

/// A parsed QIDO-RS request.
#[derive(Debug, Clone)]
pub struct Search {
    pub query: Query,
    pub limit: Option<usize>,
    pub offset: usize,
}

/// The tag a parameter names: a keyword (`StudyDate`) or eight hexadecimal digits (`00080020`).
fn tag_of(name: &str) -> Result<Tag> {
    if name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        let group = u16::from_str_radix(&name[..4], 16).unwrap_or_default();
        let element = u16::from_str_radix(&name[4..], 16).unwrap_or_default();
        return Ok(Tag(group, element));
    }
    StandardDataDictionary
        .by_name(name)
        .map(|entry| entry.tag())
        .ok_or_else(|| DicomError::BadQuery(format!("{name:?} is not a DICOM attribute")))
}

/// Reads the query parameters of a search at `level`, within `study` (and `series`) when the
/// path names them.
pub fn parse(
    level: QueryLevel,
    params: &[(String, String)],
    study: Option<&str>,
    series: Option<&str>,
) -> Result<Search> {
    let mut pairs = Vec::new();
    let (mut limit, mut offset) = (None, 0);
    for (name, value) in params {
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| DicomError::BadQuery(format!("{name}={value:?}: a whole number")))
        };
        match name.as_str() {
            "limit" => limit = Some(number()?),
            "offset" => offset = number()?,
            // Every key of the level is answered anyway; fuzzy matching is not offered.
            "includefield" | "fuzzymatching" => {}
            _ => pairs.push((tag_of(name)?, value.clone())),
        }
    }
    if let Some(study) = study {
        pairs.push((tags::STUDY_INSTANCE_UID, study.to_string()));
    }
    if let Some(series) = series {
        pairs.push((tags::SERIES_INSTANCE_UID, series.to_string()));
    }
    Ok(Search {
        query: Query::from_pairs(level, &pairs)?,
        limit,
        offset,
    })
}

/// Runs a search: the matches in the DICOM JSON model, with each match's retrieve URL under
/// `base` (`/dicom-web`).
pub fn run(search: &Search, index: &StudyIndex, base: &str) -> Result<Vec<serde_json::Value>> {
    let matches = search.query.run(index)?;
    let page = matches
        .into_iter()
        .skip(search.offset)
        .take(search.limit.unwrap_or(usize::MAX));
    let mut out = Vec::new();
    for found in page {
        let mut identifier = found.identifier(search.query.level);
        identifier.remove_element(tags::QUERY_RETRIEVE_LEVEL);
        let value = |tag| {
            found
                .values
                .iter()
                .find(|(t, _)| *t == tag)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut url = format!("{base}/studies/{}", value(tags::STUDY_INSTANCE_UID));
        if search.query.level != QueryLevel::Study {
            url.push_str(&format!("/series/{}", value(tags::SERIES_INSTANCE_UID)));
        }
        if search.query.level == QueryLevel::Image {
            url.push_str(&format!("/instances/{}", value(tags::SOP_INSTANCE_UID)));
        }
        identifier.put(dicom_core::DataElement::new(
            tags::RETRIEVE_URL,
            dicom_core::VR::UR,
            dicom_core::PrimitiveValue::from(url),
        ));
        out.push(
            serde_json::to_value(dicom_json::DicomJson::from(&identifier))
                .map_err(|e| DicomError::BadQuery(e.to_string()))?,
        );
    }
    Ok(out)
}

/// Value representations of bulk data (pixels, overlays, embedded documents, waveforms,
/// unknown blobs): metadata leaves them out.
const BULK_VRS: [dicom_core::VR; 7] = [
    dicom_core::VR::OB,
    dicom_core::VR::OW,
    dicom_core::VR::OF,
    dicom_core::VR::OD,
    dicom_core::VR::OL,
    dicom_core::VR::OV,
    dicom_core::VR::UN,
];

/// An instance's attributes in the DICOM JSON model, without its pixel data or any other bulk
/// data, and without the icon image: metadata describes, it never carries an image.
pub fn metadata(path: &Path) -> Result<serde_json::Value> {
    let unreadable = |reason: String| DicomError::Unreadable {
        what: "an instance of the archive".into(),
        reason,
    };
    let object = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| unreadable(e.to_string()))?;
    let described = dicom_object::InMemDicomObject::from_element_iter(
        object
            .iter()
            .filter(|e| {
                !BULK_VRS.contains(&e.header().vr()) && e.header().tag != tags::ICON_IMAGE_SEQUENCE
            })
            .cloned(),
    );
    serde_json::to_value(dicom_json::DicomJson::from(&described))
        .map_err(|e| unreadable(e.to_string()))
}
