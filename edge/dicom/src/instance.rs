//! The attributes the archive indexes, read once from each object as it arrives: the four UIDs
//! that place it (a missing or malformed one refuses the object), the patient and study words
//! that C-FIND and the studies page show, and the geometry the viewer will need.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};

use crate::archive::check_uid;
use crate::{DicomError, Result};

/// What one instance says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceAttributes {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub patient_name: String,
    pub patient_id: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub study_id: String,
    pub study_description: String,
    pub referring_physician_name: String,
    pub modality: String,
    pub series_number: Option<i32>,
    pub series_description: String,
    pub body_part_examined: String,
    pub instance_number: Option<i32>,
    pub rows: Option<u16>,
    pub columns: Option<u16>,
    pub number_of_frames: Option<u32>,
    /// Burned In Annotation (0028,0301) as written, if it is: `YES` keeps the images at the
    /// edge even rendered.
    pub burned_in_annotation: Option<String>,
    pub image_position_patient: Option<Vec<f64>>,
    pub image_orientation_patient: Option<Vec<f64>>,
    pub pixel_spacing: Option<Vec<f64>>,
    pub slice_thickness: Option<f64>,
}

/// An attribute's value as text, without DICOM's padding; empty when absent or not text.
pub(crate) fn text(object: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    object
        .element_opt(tag)
        .ok()
        .flatten()
        .and_then(|element| element.to_str().ok().map(|s| s.into_owned()))
        .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
        .unwrap_or_default()
}

/// An attribute's first value as a number (IS and DS are text in DICOM).
pub(crate) fn number<T: std::str::FromStr>(
    object: &InMemDicomObject,
    tag: dicom_core::Tag,
) -> Option<T> {
    let text = text(object, tag);
    text.split('\\').next()?.trim().parse().ok()
}

/// A binary integer attribute (US, UL) that fits `T`.
pub(crate) fn unsigned<T: TryFrom<u64>>(
    object: &InMemDicomObject,
    tag: dicom_core::Tag,
) -> Option<T> {
    let element = object.element_opt(tag).ok().flatten()?;
    element
        .to_int::<u64>()
        .ok()
        .and_then(|v| T::try_from(v).ok())
}

fn numbers(object: &InMemDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    let text = text(object, tag);
    if text.is_empty() {
        return None;
    }
    text.split('\\').map(|v| v.trim().parse().ok()).collect()
}

impl InstanceAttributes {
    /// Whether the image may carry text burned into its pixels (a name, a date, an id), so that
    /// it must never leave the edge, even rendered: Burned In Annotation (0028,0301) is `YES`
    /// (or any value but `YES` or `NO`), or the object is ultrasound or a secondary capture
    /// (screenshots, scanned documents, whose pixels so often hold such text) and does not
    /// say `NO`. Other images that do not say count as clean, as the attribute is optional
    /// for them.
    pub fn burned_in(&self) -> bool {
        let says = self
            .burned_in_annotation
            .as_deref()
            .map(|value| value.trim().to_ascii_uppercase());
        match says.as_deref() {
            Some("YES") => true,
            Some("NO") => false,
            _ => {
                let secondary_capture = self.sop_class_uid.starts_with("1.2.840.10008.5.1.4.1.1.7");
                let ultrasound = matches!(self.modality.as_str(), "US" | "IVUS")
                    || self.sop_class_uid.starts_with("1.2.840.10008.5.1.4.1.1.6.")
                    || self.sop_class_uid.starts_with("1.2.840.10008.5.1.4.1.1.3.");
                secondary_capture || ultrasound || says.is_some()
            }
        }
    }

    /// Reads the attributes of `object`; `what` names it in errors (a file, a C-STORE from an AE).
    pub fn from_object(object: &InMemDicomObject, what: &str) -> Result<InstanceAttributes> {
        let uid = |tag, attribute: &'static str| -> Result<String> {
            let value = text(object, tag);
            if value.is_empty() {
                return Err(DicomError::MissingAttribute {
                    what: what.to_string(),
                    attribute,
                });
            }
            check_uid(attribute, &value)
        };
        let burned_in = text(object, tags::BURNED_IN_ANNOTATION);
        Ok(InstanceAttributes {
            sop_class_uid: uid(tags::SOP_CLASS_UID, "SOPClassUID")?,
            sop_instance_uid: uid(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
            study_instance_uid: uid(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?,
            series_instance_uid: uid(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
            patient_name: text(object, tags::PATIENT_NAME),
            patient_id: text(object, tags::PATIENT_ID),
            patient_birth_date: text(object, tags::PATIENT_BIRTH_DATE),
            patient_sex: text(object, tags::PATIENT_SEX),
            study_date: text(object, tags::STUDY_DATE),
            study_time: text(object, tags::STUDY_TIME),
            accession_number: text(object, tags::ACCESSION_NUMBER),
            study_id: text(object, tags::STUDY_ID),
            study_description: text(object, tags::STUDY_DESCRIPTION),
            referring_physician_name: text(object, tags::REFERRING_PHYSICIAN_NAME),
            modality: text(object, tags::MODALITY),
            series_number: number(object, tags::SERIES_NUMBER),
            series_description: text(object, tags::SERIES_DESCRIPTION),
            body_part_examined: text(object, tags::BODY_PART_EXAMINED),
            instance_number: number(object, tags::INSTANCE_NUMBER),
            rows: unsigned(object, tags::ROWS),
            columns: unsigned(object, tags::COLUMNS),
            number_of_frames: number(object, tags::NUMBER_OF_FRAMES),
            burned_in_annotation: (!burned_in.is_empty()).then_some(burned_in),
            image_position_patient: numbers(object, tags::IMAGE_POSITION_PATIENT),
            image_orientation_patient: numbers(object, tags::IMAGE_ORIENTATION_PATIENT),
            pixel_spacing: numbers(object, tags::PIXEL_SPACING),
            slice_thickness: number(object, tags::SLICE_THICKNESS),
        })
    }
}
