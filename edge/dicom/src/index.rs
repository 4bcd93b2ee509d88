//! The patient / study / series / instance index of the archive, in the edge's sled store.
//!
//! Three tables keyed so that a prefix scan walks down the hierarchy: studies by Study Instance
//! UID, series by `study/series`, instances by `study/series/instance`. An instance is indexed
//! after its file is durable and the index is flushed before a C-STORE is answered, so an
//! acknowledged object is never missing; receiving the same instance again replaces its record
//! rather than adding one, also when it comes back under another study or series (a corrected
//! study: a fourth table knows where each SOP Instance UID is), so counts never double.

use std::collections::BTreeSet;

use grassroots_store::{Store, Table};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::instance::InstanceAttributes;
use crate::Result;

/// A study: the patient and study words of the latest object received for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StudyRecord {
    pub study_instance_uid: String,
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
    /// When the first and the latest of its objects arrived (RFC 3339).
    pub first_received_at: String,
    pub last_received_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeriesRecord {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub modality: String,
    pub series_number: Option<i32>,
    pub series_description: String,
    pub body_part_examined: String,
}

/// One stored object: its attributes, where its file is and how it came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub attributes: InstanceAttributes,
    pub transfer_syntax_uid: String,
    /// The file, relative to the archive's folder.
    pub file: String,
    pub bytes: u64,
    /// The calling AE title of a C-STORE, or `import` for a file imported by hand.
    pub received_from: String,
    pub received_at: String,
}

/// A study with what it holds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StudySummary {
    #[serde(flatten)]
    pub study: StudyRecord,
    pub modalities: Vec<String>,
    pub series: usize,
    pub instances: usize,
}

/// A series with how many instances it holds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SeriesSummary {
    #[serde(flatten)]
    pub series: SeriesRecord,
    pub instances: usize,
}

#[derive(Clone)]
pub struct StudyIndex {
    studies: Table<StudyRecord>,
    series: Table<SeriesRecord>,
    instances: Table<InstanceRecord>,
    /// SOP Instance UID → its key in `instances`.
    placed: Table<String>,
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl StudyIndex {
    pub fn open(store: &Store) -> Result<StudyIndex> {
        Ok(StudyIndex {
            studies: store.table("dicom_studies")?,
            series: store.table("dicom_series")?,
            instances: store.table("dicom_instances")?,
            placed: store.table("dicom_instance_keys")?,
        })
    }

    /// Indexes an object whose file is durable at `file`; durable on return. Returns whether
    /// the instance is new (false: the same instance again, its record replaced) and, when it
    /// had been filed under another study or series, that earlier file, now unindexed.
    pub fn record(
        &self,
        attributes: &InstanceAttributes,
        transfer_syntax_uid: &str,
        file: &str,
        bytes: u64,
        received_from: &str,
        at: OffsetDateTime,
    ) -> Result<(bool, Option<String>)> {
        let a = attributes;
        let received_at = rfc3339(at);
        let study_key = a.study_instance_uid.clone();
        let first = self
            .studies
            .get(&study_key)?
            .map(|s| s.first_received_at)
            .unwrap_or_else(|| received_at.clone());
        self.studies.put(
            &study_key,
            &StudyRecord {
                study_instance_uid: a.study_instance_uid.clone(),
                patient_name: a.patient_name.clone(),
                patient_id: a.patient_id.clone(),
                patient_birth_date: a.patient_birth_date.clone(),
                patient_sex: a.patient_sex.clone(),
                study_date: a.study_date.clone(),
                study_time: a.study_time.clone(),
                accession_number: a.accession_number.clone(),
                study_id: a.study_id.clone(),
                study_description: a.study_description.clone(),
                referring_physician_name: a.referring_physician_name.clone(),
                first_received_at: first,
                last_received_at: received_at.clone(),
            },
        )?;
        let series_key = format!("{}/{}", a.study_instance_uid, a.series_instance_uid);
        self.series.put(
            &series_key,
            &SeriesRecord {
                study_instance_uid: a.study_instance_uid.clone(),
                series_instance_uid: a.series_instance_uid.clone(),
                modality: a.modality.clone(),
                series_number: a.series_number,
                series_description: a.series_description.clone(),
                body_part_examined: a.body_part_examined.clone(),
            },
        )?;
        let instance_key = format!("{series_key}/{}", a.sop_instance_uid);
        let mut new = self.instances.get(&instance_key)?.is_none();
        let mut moved_from = None;
        if let Some(earlier) = self.placed.get(&a.sop_instance_uid)? {
            if earlier != instance_key {
                if let Some(old) = self.instances.remove(&earlier)? {
                    moved_from = Some(old.file);
                    new = false;
                }
                self.drop_if_empty(&earlier)?;
            }
        }
        self.placed.put(&a.sop_instance_uid, &instance_key)?;
        self.instances.put_durable(
            &instance_key,
            &InstanceRecord {
                attributes: a.clone(),
                transfer_syntax_uid: transfer_syntax_uid.to_string(),
                file: file.to_string(),
                bytes,
                received_from: received_from.to_string(),
                received_at,
            },
        )?;
        Ok((new, moved_from))
    }

    /// After an instance left `instance_key`, its series and study go if nothing is left.
    fn drop_if_empty(&self, instance_key: &str) -> Result<()> {
        let mut parts = instance_key.split('/');
        let (Some(study), Some(series)) = (parts.next(), parts.next()) else {
            return Ok(());
        };
        let series_key = format!("{study}/{series}");
        if self
            .instances
            .scan_prefix(&format!("{series_key}/"))?
            .is_empty()
        {
            self.series.remove(&series_key)?;
        }
        if self.series.scan_prefix(&format!("{study}/"))?.is_empty() {
            self.studies.remove(study)?;
        }
        Ok(())
    }

    fn summarise(&self, study: StudyRecord) -> Result<StudySummary> {
        let prefix = format!("{}/", study.study_instance_uid);
        let series = self.series.scan_prefix(&prefix)?;
        let modalities: BTreeSet<String> = series
            .iter()
            .map(|(_, s)| s.modality.clone())
            .filter(|m| !m.is_empty())
            .collect();
        let instances = self.instances.scan_prefix(&prefix)?.len();
        Ok(StudySummary {
            study,
            modalities: modalities.into_iter().collect(),
            series: series.len(),
            instances,
        })
    }

    /// Every study, the latest received first.
    pub fn studies(&self) -> Result<Vec<StudySummary>> {
        let mut studies = self
            .studies
            .entries()?
            .into_iter()
            .map(|(_, study)| self.summarise(study))
            .collect::<Result<Vec<_>>>()?;
        studies.sort_by(|a, b| b.study.last_received_at.cmp(&a.study.last_received_at));
        Ok(studies)
    }

    pub fn study(&self, study_uid: &str) -> Result<Option<StudySummary>> {
        self.studies
            .get(study_uid)?
            .map(|study| self.summarise(study))
            .transpose()
    }

    /// The series of a study, by series number.
    pub fn series_of(&self, study_uid: &str) -> Result<Vec<SeriesSummary>> {
        let mut series = self
            .series
            .scan_prefix(&format!("{study_uid}/"))?
            .into_iter()
            .map(|(key, series)| {
                let instances = self.instances.scan_prefix(&format!("{key}/"))?.len();
                Ok(SeriesSummary { series, instances })
            })
            .collect::<Result<Vec<_>>>()?;
        series.sort_by_key(|s| {
            (
                s.series.series_number.unwrap_or(i32::MAX),
                s.series.series_instance_uid.clone(),
            )
        });
        Ok(series)
    }

    /// The instances of a series, by instance number.
    pub fn instances_of(&self, study_uid: &str, series_uid: &str) -> Result<Vec<InstanceRecord>> {
        let mut instances: Vec<InstanceRecord> = self
            .instances
            .scan_prefix(&format!("{study_uid}/{series_uid}/"))?
            .into_iter()
            .map(|(_, record)| record)
            .collect();
        instances.sort_by_key(|i| {
            (
                i.attributes.instance_number.unwrap_or(i32::MAX),
                i.attributes.sop_instance_uid.clone(),
            )
        });
        Ok(instances)
    }

    pub fn instance(
        &self,
        study_uid: &str,
        series_uid: &str,
        sop_uid: &str,
    ) -> Result<Option<InstanceRecord>> {
        Ok(self
            .instances
            .get(&format!("{study_uid}/{series_uid}/{sop_uid}"))?)
    }

    /// How many instances the archive holds.
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(study: &str, series: &str, sop: &str) -> InstanceAttributes {
        InstanceAttributes {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: sop.into(),
            study_instance_uid: study.into(),
            series_instance_uid: series.into(),
            patient_name: "Wang^Li".into(),
            patient_id: "P1".into(),
            patient_birth_date: String::new(),
            patient_sex: "F".into(),
            study_date: "20261130".into(),
            study_time: String::new(),
            accession_number: "A1".into(),
            study_id: String::new(),
            study_description: String::new(),
            referring_physician_name: String::new(),
            modality: "CT".into(),
            series_number: Some(1),
            series_description: String::new(),
            body_part_examined: String::new(),
            instance_number: Some(1),
            rows: Some(512),
            columns: Some(512),
            number_of_frames: None,
            burned_in_annotation: None,
            image_position_patient: None,
            image_orientation_patient: None,
            pixel_spacing: None,
            slice_thickness: None,
        }
    }

    #[test]
    fn burned_in_annotation_keeps_ultrasound_and_secondary_captures_unless_they_say_no() {
        let mut ct = attributes("1.2", "1.2.3", "1.2.3.4");
        assert!(!ct.burned_in(), "a CT that says nothing");
        ct.burned_in_annotation = Some("YES ".into());
        assert!(ct.burned_in());
        ct.burned_in_annotation = Some("maybe".into());
        assert!(ct.burned_in(), "an odd value counts as yes");
        let mut capture = attributes("1.2", "1.2.3", "1.2.3.5");
        capture.sop_class_uid = "1.2.840.10008.5.1.4.1.1.7".into();
        capture.modality = "OT".into();
        assert!(capture.burned_in());
        capture.burned_in_annotation = Some("NO".into());
        assert!(!capture.burned_in());
        let mut ultrasound = attributes("1.2", "1.2.3", "1.2.3.6");
        ultrasound.sop_class_uid = "1.2.840.10008.5.1.4.1.1.6.1".into();
        ultrasound.modality = "US".into();
        assert!(ultrasound.burned_in());
    }

    #[test]
    fn an_instance_sent_again_under_another_study_moves_there() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let index = StudyIndex::open(&store).unwrap();
        let at = OffsetDateTime::now_utc();
        let first = index
            .record(
                &attributes("1.1", "1.1.1", "9.9"),
                "1.2.840.10008.1.2.1",
                "a.dcm",
                10,
                "CT1",
                at,
            )
            .unwrap();
        assert_eq!(first, (true, None));
        let again = index
            .record(
                &attributes("1.1", "1.1.1", "9.9"),
                "1.2.840.10008.1.2.1",
                "a.dcm",
                10,
                "CT1",
                at,
            )
            .unwrap();
        assert_eq!(again, (false, None), "the same place: replaced, not added");
        let moved = index
            .record(
                &attributes("1.2", "1.2.1", "9.9"),
                "1.2.840.10008.1.2.1",
                "b.dcm",
                10,
                "RIS",
                at,
            )
            .unwrap();
        assert_eq!(moved, (false, Some("a.dcm".to_string())));
        let studies = index.studies().unwrap();
        assert_eq!(studies.len(), 1, "the emptied study is gone");
        assert_eq!(studies[0].study.study_instance_uid, "1.2");
        assert_eq!(studies[0].instances, 1);
        assert_eq!(index.instance_count(), 1);
    }
}
