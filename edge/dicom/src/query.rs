//! C-FIND in the Study Root model, at the STUDY and SERIES levels (PS3.4 C.2 and C.6.2): an
//! identifier names keys to match and keys to return; each study or series of the index that
//! matches every key is answered with the keys filled in.
//!
//! Matching follows PS3.4 C.2.2.2: an empty value matches anything (universal matching), `*`
//! and `?` are wildcards, UIDs may be a list (`\`), dates and times may be ranges
//! (`20260101-20261231`, `-20261231`), names match without regard to case, and a multi-valued
//! attribute (Modalities in Study) matches if any of its values does. Keys this node does not
//! keep are returned empty with the status "optional keys not supported" (FF01). DICOMweb's
//! QIDO-RS will match with the same code.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::index::{InstanceRecord, SeriesSummary, StudyIndex, StudySummary};
use crate::{DicomError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryLevel {
    Study,
    Series,
    /// Instances: DICOMweb's QIDO-RS only (C-FIND here answers studies and series).
    Image,
}

impl QueryLevel {
    /// The keys answered at this level: the level's own and those of the levels above.
    pub fn keys(self) -> impl Iterator<Item = (Tag, VR)> {
        let series: &[(Tag, VR)] = if self == QueryLevel::Study {
            &[]
        } else {
            &SERIES_KEYS
        };
        let instances: &[(Tag, VR)] = if self == QueryLevel::Image {
            &INSTANCE_KEYS
        } else {
            &[]
        };
        STUDY_KEYS.iter().chain(series).chain(instances).copied()
    }
}

/// A parsed C-FIND identifier.
#[derive(Debug, Clone)]
pub struct Query {
    pub level: QueryLevel,
    /// The keys asked for, in the identifier's order, with their matching values.
    pub keys: Vec<(Tag, String)>,
    /// Keys this node does not keep (returned empty, with the VR they were asked with).
    pub unsupported: Vec<(Tag, VR)>,
}

/// One answer: the keys with their values (empty where unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryMatch {
    pub values: Vec<(Tag, String)>,
    /// The VRs of the keys this node does not keep.
    pub unsupported: Vec<(Tag, VR)>,
}

/// The keys a STUDY-level query may match or return, with their VR.
const STUDY_KEYS: [(Tag, VR); 14] = [
    (tags::PATIENT_NAME, VR::PN),
    (tags::PATIENT_ID, VR::LO),
    (tags::PATIENT_BIRTH_DATE, VR::DA),
    (tags::PATIENT_SEX, VR::CS),
    (tags::STUDY_DATE, VR::DA),
    (tags::STUDY_TIME, VR::TM),
    (tags::ACCESSION_NUMBER, VR::SH),
    (tags::STUDY_ID, VR::SH),
    (tags::STUDY_INSTANCE_UID, VR::UI),
    (tags::STUDY_DESCRIPTION, VR::LO),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
    (tags::MODALITIES_IN_STUDY, VR::CS),
    (tags::NUMBER_OF_STUDY_RELATED_SERIES, VR::IS),
    (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS),
];

/// The keys a SERIES-level query may match or return (besides the study's unique key).
const SERIES_KEYS: [(Tag, VR); 6] = [
    (tags::SERIES_INSTANCE_UID, VR::UI),
    (tags::MODALITY, VR::CS),
    (tags::SERIES_NUMBER, VR::IS),
    (tags::SERIES_DESCRIPTION, VR::LO),
    (tags::BODY_PART_EXAMINED, VR::CS),
    (tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS),
];

/// The keys an instance-level query may match or return.
const INSTANCE_KEYS: [(Tag, VR); 6] = [
    (tags::SOP_INSTANCE_UID, VR::UI),
    (tags::SOP_CLASS_UID, VR::UI),
    (tags::INSTANCE_NUMBER, VR::IS),
    (tags::ROWS, VR::US),
    (tags::COLUMNS, VR::US),
    (tags::NUMBER_OF_FRAMES, VR::IS),
];

/// The VR of a key this node answers, if it answers it.
pub fn vr_of(tag: Tag) -> Option<VR> {
    STUDY_KEYS
        .iter()
        .chain(SERIES_KEYS.iter())
        .chain(INSTANCE_KEYS.iter())
        .find(|(t, _)| *t == tag)
        .map(|(_, vr)| *vr)
}

fn text(element: &dicom_object::mem::InMemElement) -> String {
    element
        .to_str()
        .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
        .unwrap_or_default()
}

impl Query {
    /// Reads a C-FIND identifier; a missing or unsupported Query/Retrieve Level is refused.
    pub fn from_identifier(identifier: &InMemDicomObject) -> Result<Query> {
        let level = identifier
            .element_opt(tags::QUERY_RETRIEVE_LEVEL)
            .ok()
            .flatten()
            .map(text)
            .unwrap_or_default();
        let level = match level.as_str() {
            "STUDY" => QueryLevel::Study,
            "SERIES" => QueryLevel::Series,
            "" => {
                return Err(DicomError::BadQuery(
                    "the identifier has no Query/Retrieve Level".into(),
                ))
            }
            other => {
                return Err(DicomError::BadQuery(format!(
                    "level {other} is not supported: query STUDY or SERIES"
                )))
            }
        };
        let mut keys = Vec::new();
        let mut unsupported = Vec::new();
        for element in identifier {
            let tag = element.header().tag;
            if tag == tags::QUERY_RETRIEVE_LEVEL
                || tag == tags::SPECIFIC_CHARACTER_SET
                || tag.group() == 0x0002
            {
                continue;
            }
            let known = STUDY_KEYS.iter().any(|(t, _)| *t == tag)
                || (level == QueryLevel::Series && SERIES_KEYS.iter().any(|(t, _)| *t == tag));
            if known {
                keys.push((tag, text(element)));
            } else if element.header().vr() != VR::SQ {
                unsupported.push((tag, element.header().vr()));
            }
        }
        Ok(Query {
            level,
            keys,
            unsupported,
        })
    }

    /// A query from attribute keywords or tags and their values (DICOMweb's QIDO-RS), at any
    /// level, answering every key of the level besides those asked for; an attribute this node
    /// cannot match at that level is refused with its name.
    pub fn from_pairs(level: QueryLevel, pairs: &[(Tag, String)]) -> Result<Query> {
        let mut keys: Vec<(Tag, String)> =
            level.keys().map(|(tag, _)| (tag, String::new())).collect();
        for (tag, value) in pairs {
            match keys.iter_mut().find(|(t, _)| t == tag) {
                Some(key) => key.1 = value.clone(),
                None => {
                    return Err(DicomError::BadQuery(format!(
                        "attribute ({:04X},{:04X}) cannot be matched at this level",
                        tag.group(),
                        tag.element()
                    )))
                }
            }
        }
        Ok(Query {
            level,
            keys,
            unsupported: Vec::new(),
        })
    }

    fn matches(&self, keys: &[(Tag, VR)], values: impl Fn(Tag) -> Vec<String>) -> bool {
        self.keys
            .iter()
            .filter(|(tag, _)| keys.iter().any(|(t, _)| t == tag))
            .all(|(tag, pattern)| key_matches(*tag, pattern, &values(*tag)))
    }

    /// Runs the query on the index: every matching study, series or instance, with the keys'
    /// values.
    pub fn run(&self, index: &StudyIndex) -> Result<Vec<QueryMatch>> {
        let mut matches = Vec::new();
        for study in index.studies()? {
            if !self.matches(&STUDY_KEYS, |tag| study_values(tag, &study)) {
                continue;
            }
            if self.level == QueryLevel::Study {
                matches.push(self.answer(&study, None, None));
                continue;
            }
            for series in index.series_of(&study.study.study_instance_uid)? {
                if !self.matches(&SERIES_KEYS, |tag| series_values(tag, &series)) {
                    continue;
                }
                if self.level == QueryLevel::Series {
                    matches.push(self.answer(&study, Some(&series), None));
                    continue;
                }
                let instances = index.instances_of(
                    &series.series.study_instance_uid,
                    &series.series.series_instance_uid,
                )?;
                for instance in &instances {
                    if self.matches(&INSTANCE_KEYS, |tag| instance_values(tag, instance)) {
                        matches.push(self.answer(&study, Some(&series), Some(instance)));
                    }
                }
            }
        }
        Ok(matches)
    }

    fn answer(
        &self,
        study: &StudySummary,
        series: Option<&SeriesSummary>,
        instance: Option<&InstanceRecord>,
    ) -> QueryMatch {
        let mut values: Vec<(Tag, String)> = self
            .keys
            .iter()
            .map(|(tag, _)| {
                let value = match (series, instance) {
                    (_, Some(instance)) if INSTANCE_KEYS.iter().any(|(t, _)| t == tag) => {
                        instance_values(*tag, instance)
                    }
                    (Some(series), _) if SERIES_KEYS.iter().any(|(t, _)| t == tag) => {
                        series_values(*tag, series)
                    }
                    _ => study_values(*tag, study),
                };
                (*tag, value.join("\\"))
            })
            .collect();
        // An answer always names its study, and its series and instance at those levels (the
        // unique keys of each level).
        let mut unique = vec![(
            tags::STUDY_INSTANCE_UID,
            study.study.study_instance_uid.clone(),
        )];
        if let Some(series) = series {
            unique.push((
                tags::SERIES_INSTANCE_UID,
                series.series.series_instance_uid.clone(),
            ));
        }
        if let Some(instance) = instance {
            unique.push((
                tags::SOP_INSTANCE_UID,
                instance.attributes.sop_instance_uid.clone(),
            ));
        }
        for (tag, value) in unique {
            if !values.iter().any(|(t, _)| *t == tag) {
                values.push((tag, value));
            }
        }
        values.extend(
            self.unsupported
                .iter()
                .map(|(tag, _)| (*tag, String::new())),
        );
        QueryMatch {
            values,
            unsupported: self.unsupported.clone(),
        }
    }
}

impl QueryMatch {
    /// The C-FIND response's identifier: the keys, the level, and the character set when a
    /// value is not ASCII (patients' names in Chinese).
    pub fn identifier(&self, level: QueryLevel) -> InMemDicomObject {
        let mut object = InMemDicomObject::new_empty();
        if self.values.iter().any(|(_, v)| !v.is_ascii()) {
            object.put(DataElement::new(
                tags::SPECIFIC_CHARACTER_SET,
                VR::CS,
                PrimitiveValue::from("ISO_IR 192"),
            ));
        }
        let level = match level {
            QueryLevel::Study => "STUDY",
            QueryLevel::Series => "SERIES",
            QueryLevel::Image => "IMAGE",
        };
        object.put(DataElement::new(
            tags::QUERY_RETRIEVE_LEVEL,
            VR::CS,
            PrimitiveValue::from(level),
        ));
        for (tag, value) in &self.values {
            let vr = vr_of(*tag)
                .or_else(|| {
                    self.unsupported
                        .iter()
                        .find(|(t, _)| t == tag)
                        .map(|(_, vr)| *vr)
                })
                .unwrap_or(VR::LO);
            object.put(DataElement::new(*tag, vr, typed_value(vr, value)));
        }
        object
    }
}

/// A value as its VR wants it: several values separated (`CT\\MR` is two), binary numbers for
/// US, integers for IS (so that DICOM JSON writes them as numbers, PS3.18 F.2.3).
fn typed_value(vr: VR, value: &str) -> PrimitiveValue {
    if value.is_empty() {
        return PrimitiveValue::Empty;
    }
    let parts: Vec<&str> = value.split('\\').collect();
    let numbers = |parse: &dyn Fn(&str) -> Option<PrimitiveValue>| {
        if parts.len() == 1 {
            parse(parts[0].trim())
        } else {
            None
        }
    };
    let typed = match vr {
        VR::US => numbers(&|p| p.parse::<u16>().ok().map(PrimitiveValue::from)),
        VR::IS => numbers(&|p| p.parse::<i32>().ok().map(PrimitiveValue::from)),
        _ => None,
    };
    typed.unwrap_or_else(|| {
        if parts.len() == 1 {
            PrimitiveValue::from(value)
        } else {
            PrimitiveValue::Strs(parts.iter().map(|p| p.to_string()).collect())
        }
    })
}

fn study_values(tag: Tag, s: &StudySummary) -> Vec<String> {
    let r = &s.study;
    let one = |v: &String| vec![v.clone()];
    match tag {
        tags::PATIENT_NAME => one(&r.patient_name),
        tags::PATIENT_ID => one(&r.patient_id),
        tags::PATIENT_BIRTH_DATE => one(&r.patient_birth_date),
        tags::PATIENT_SEX => one(&r.patient_sex),
        tags::STUDY_DATE => one(&r.study_date),
        tags::STUDY_TIME => one(&r.study_time),
        tags::ACCESSION_NUMBER => one(&r.accession_number),
        tags::STUDY_ID => one(&r.study_id),
        tags::STUDY_INSTANCE_UID => one(&r.study_instance_uid),
        tags::STUDY_DESCRIPTION => one(&r.study_description),
        tags::REFERRING_PHYSICIAN_NAME => one(&r.referring_physician_name),
        tags::MODALITIES_IN_STUDY => s.modalities.clone(),
        tags::NUMBER_OF_STUDY_RELATED_SERIES => vec![s.series.to_string()],
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES => vec![s.instances.to_string()],
        _ => vec![],
    }
}

fn instance_values(tag: Tag, i: &InstanceRecord) -> Vec<String> {
    let a = &i.attributes;
    let number = |n: Option<String>| vec![n.unwrap_or_default()];
    match tag {
        tags::SOP_INSTANCE_UID => vec![a.sop_instance_uid.clone()],
        tags::SOP_CLASS_UID => vec![a.sop_class_uid.clone()],
        tags::INSTANCE_NUMBER => number(a.instance_number.map(|n| n.to_string())),
        tags::ROWS => number(a.rows.map(|n| n.to_string())),
        tags::COLUMNS => number(a.columns.map(|n| n.to_string())),
        tags::NUMBER_OF_FRAMES => number(a.number_of_frames.map(|n| n.to_string())),
        _ => vec![],
    }
}

fn series_values(tag: Tag, s: &SeriesSummary) -> Vec<String> {
    let r = &s.series;
    match tag {
        tags::SERIES_INSTANCE_UID => vec![r.series_instance_uid.clone()],
        tags::MODALITY => vec![r.modality.clone()],
        tags::SERIES_NUMBER => vec![r.series_number.map(|n| n.to_string()).unwrap_or_default()],
        tags::SERIES_DESCRIPTION => vec![r.series_description.clone()],
        tags::BODY_PART_EXAMINED => vec![r.body_part_examined.clone()],
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES => vec![s.instances.to_string()],
        _ => vec![],
    }
}

/// Whether `values` (one attribute, possibly multi-valued) match the key's `pattern`.
pub fn key_matches(tag: Tag, pattern: &str, values: &[String]) -> bool {
    let pattern = pattern.trim();
    if pattern.is_empty() || pattern == "*" {
        return true;
    }
    let vr = vr_of(tag).unwrap_or(VR::LO);
    values.iter().any(|value| value_matches(vr, pattern, value))
}

fn value_matches(vr: VR, pattern: &str, value: &str) -> bool {
    match vr {
        VR::UI => pattern.split('\\').any(|uid| uid.trim() == value),
        VR::DA | VR::TM | VR::DT if pattern.contains('-') => {
            let (low, high) = pattern.split_once('-').unwrap_or((pattern, pattern));
            !value.is_empty()
                && (low.is_empty() || value >= low)
                && (high.is_empty() || value <= high || value.starts_with(high))
        }
        // A name may have an alphabetic, an ideographic and a phonetic form (`Wang^Li=王^力`):
        // a pattern matches the whole name or any one form.
        VR::PN => {
            let pattern = pattern.to_lowercase();
            let value = value.to_lowercase();
            wildcard(&pattern, &value)
                || value
                    .split('=')
                    .any(|form| !form.is_empty() && wildcard(&pattern, form))
        }
        VR::CS => pattern.split('\\').any(|p| wildcard(p.trim(), value)),
        _ => wildcard(pattern, value),
    }
}

/// `*` any run of characters, `?` one character, all else itself.
pub fn wildcard(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let (mut pi, mut vi) = (0, 0);
    let (mut star, mut resume) = (None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            pi += 1;
            resume = vi;
        } else if let Some(s) = star {
            pi = s + 1;
            resume += 1;
            vi = resume;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_follows_the_standard() {
        let one = |v: &str| vec![v.to_string()];
        assert!(key_matches(tags::PATIENT_NAME, "", &one("Wang^Li")));
        assert!(key_matches(tags::PATIENT_NAME, "wang*", &one("Wang^Li")));
        assert!(key_matches(tags::PATIENT_NAME, "W?ng^L?", &one("Wang^Li")));
        assert!(!key_matches(tags::PATIENT_NAME, "Li*", &one("Wang^Li")));
        assert!(key_matches(
            tags::PATIENT_NAME,
            "王*",
            &one("Wang^Li=王^力")
        ));
        assert!(key_matches(
            tags::PATIENT_NAME,
            "Wang^Li",
            &one("Wang^Li=王^力")
        ));
        assert!(key_matches(
            tags::STUDY_DATE,
            "20260101-20261231",
            &one("20261130")
        ));
        assert!(key_matches(tags::STUDY_DATE, "-20261231", &one("20261130")));
        assert!(!key_matches(
            tags::STUDY_DATE,
            "20270101-",
            &one("20261130")
        ));
        assert!(!key_matches(tags::STUDY_DATE, "20260101-", &one("")));
        assert!(key_matches(
            tags::STUDY_INSTANCE_UID,
            "1.2\\1.3",
            &one("1.3")
        ));
        assert!(!key_matches(tags::STUDY_INSTANCE_UID, "1.2", &one("1.23")));
        let modalities = vec!["CT".to_string(), "SR".to_string()];
        assert!(key_matches(
            tags::MODALITIES_IN_STUDY,
            "MR\\CT",
            &modalities
        ));
        assert!(!key_matches(tags::MODALITIES_IN_STUDY, "US", &modalities));
        assert!(key_matches(tags::ACCESSION_NUMBER, "A1*", &one("A123")));
        assert!(!key_matches(tags::ACCESSION_NUMBER, "A12", &one("A123")));
    }
}
