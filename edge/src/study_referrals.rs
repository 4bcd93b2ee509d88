//! Radiology studies in a referral: **the privacy line for DICOM**. A referred study crosses
//! only as a [`ReferredStudy`] — keyed hashes in place of its UIDs, the modality and image
//! counts and sizes of its series — and its pixels only as frames this edge renders for the
//! expert who holds the referral, one request at a time ([`serve_study_view`]).
//!
//! The rules applied, after the PS3.15 Basic Application Level Confidentiality Profile:
//! - UIDs are replaced (`U`): the study and series keys are BLAKE3 keyed hashes under the
//!   edge's referral key, so the hub cannot tell which study it is, and the edge maps a key
//!   back through its own record ([`LocalStudy`], kept beside the referral, never sent). A
//!   study referred twice gets the same keys, as a case gets the same pseudonym: the hub can
//!   tell it is the same study, not which.
//! - Series without images (reports, key objects, presentation states) are left out.
//! - Refusals reach the hub without a path or a UID (`for_the_hub`).
//! - Names, ids, birth dates, study dates and times, accession numbers, descriptions and every
//!   other attribute are removed (`X`, `Z`) by construction: [`ReferredStudy`] has no field
//!   for them, and the hub refuses unknown fields.
//! - Burned-in annotation: a series any of whose images may carry text in its pixels
//!   (`grassroots_dicom::InstanceAttributes::burned_in`: Burned In Annotation `YES`, or
//!   ultrasound and secondary capture unless they say `NO`) is withheld from the referral
//!   and refused at render time, even if it changed since.
//! - A rendered frame is only pixels (a JPEG the edge encodes: no DICOM header, no overlay
//!   text), and each one is recorded in the consult ledger before it leaves
//!   (`crate::consult_egress`).

use serde::{Deserialize, Serialize};

use grassroots_dicom::index::InstanceRecord;
use grassroots_wire::referral::{ReferredSeries, ReferredStudy};

use crate::EdgeError;

/// A referred study as this edge keeps it: the keys that crossed and the UIDs they stand for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocalStudy {
    pub study_uid: String,
    pub study_key: String,
    pub series: Vec<LocalSeries>,
    /// Series left out because their images may carry burned-in annotation.
    #[serde(default)]
    pub withheld: Vec<WithheldSeries>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocalSeries {
    pub series_uid: String,
    pub series_key: String,
}

/// A series that stays at the edge, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WithheldSeries {
    pub series_uid: String,
    pub modality: String,
    pub reason: String,
}

/// The keyed hash that stands for a UID at the hub (32 hex digits).
fn key_of(key: &[u8; 32], what: &str, uid: &str) -> String {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(what.as_bytes());
    hasher.update(&[0]);
    hasher.update(uid.as_bytes());
    hasher.finalize().to_hex()[..32].to_string()
}

/// Whether a series' images may make a volume (at least three, each with its place and
/// orientation): the expert's viewer offers reformatting; the edge says why not if they do not.
fn may_be_volume(instances: &[InstanceRecord]) -> bool {
    instances.len() >= 3
        && instances.iter().all(|i| {
            i.attributes.image_position_patient.is_some()
                && i.attributes.image_orientation_patient.is_some()
                && i.attributes.pixel_spacing.is_some()
        })
}

/// What crosses for the study `study_uid` of this edge's archive, and what this edge keeps to
/// answer for it; refused when the study is unknown or none of its series may leave.
pub fn refer_study(
    index: &grassroots_dicom::StudyIndex,
    key: &[u8; 32],
    study_uid: &str,
) -> Result<(ReferredStudy, LocalStudy), EdgeError> {
    let refused = |reason: String| EdgeError::Config(reason);
    let all_series = index
        .series_of(study_uid)
        .map_err(|e| refused(format!("study {study_uid}: {e}")))?;
    if all_series.is_empty() {
        return Err(refused(format!("no study {study_uid} at this edge")));
    }
    let study_key = key_of(key, "study", study_uid);
    let mut referred = Vec::new();
    let mut local = Vec::new();
    let mut withheld = Vec::new();
    for summary in all_series {
        let series_uid = summary.series.series_instance_uid.clone();
        let instances = index
            .instances_of(study_uid, &series_uid)
            .map_err(|e| refused(format!("series {series_uid}: {e}")))?;
        let Some(first) = instances.first() else {
            continue;
        };
        if instances.iter().any(|i| i.attributes.burned_in()) {
            withheld.push(WithheldSeries {
                series_uid,
                modality: summary.series.modality.clone(),
                reason: "its images may carry burned-in annotation (names, dates): they never leave the edge".into(),
            });
            continue;
        }
        if first.attributes.rows.unwrap_or(0) == 0 || first.attributes.columns.unwrap_or(0) == 0 {
            withheld.push(WithheldSeries {
                series_uid,
                modality: summary.series.modality.clone(),
                reason: "it holds no images (a report, a key object or a presentation state)"
                    .into(),
            });
            continue;
        }
        let modality = if summary.series.modality.is_empty() {
            "OT".to_string()
        } else {
            summary.series.modality.clone()
        };
        let series_key = key_of(key, "series", &series_uid);
        referred.push(ReferredSeries {
            series_key: series_key.clone(),
            modality,
            images: crate::study_viewer::stack_frames(instances.clone()).len() as u32,
            rows: first.attributes.rows.unwrap_or(0),
            columns: first.attributes.columns.unwrap_or(0),
            volume: may_be_volume(&instances),
        });
        local.push(LocalSeries {
            series_uid,
            series_key,
        });
    }
    if referred.is_empty() {
        return Err(refused(format!(
            "no series of study {study_uid} may leave the edge: {}",
            withheld
                .first()
                .map(|w| w.reason.as_str())
                .unwrap_or("it holds no images")
        )));
    }
    Ok((
        ReferredStudy {
            study_key: study_key.clone(),
            series: referred,
        },
        LocalStudy {
            study_uid: study_uid.to_string(),
            study_key,
            series: local,
            withheld,
        },
    ))
}

/// The kinds of view the hub may ask for.
const KINDS: &[&str] = &["describe", "image", "plane", "volume", "stack", "region"];

/// Answers the hub's request for a view of a referred study's series: **the only radiology
/// pixels that leave the edge**, and only of a series this edge referred in that referral,
/// never of one whose images may carry burned-in annotation, until the referral is answered
/// (the hub checks the expert; the edge checks the series), each frame recorded durably
/// before it leaves.
pub(crate) async fn serve_study_view(
    state: &std::sync::Arc<crate::EdgeState>,
    referral_id: &str,
    study_key: &str,
    series_key: &str,
    kind: &str,
    query: &str,
) -> Result<Vec<u8>, String> {
    checked_study_view(state, referral_id, study_key, series_key, kind, query)
        .await
        .map_err(|reason| for_the_hub(referral_id, reason))
}

/// A refusal's reason as the hub may read it: the edge's own words about the request, but
/// never a path or a UID (a decoder's error names the archive's file, whose path is made of
/// the study's, series' and instance's UIDs): those are logged here and replaced.
fn for_the_hub(referral_id: &str, reason: String) -> String {
    let uid_like = reason
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .any(|word| word.matches('.').count() >= 3 && word.chars().any(|c| c.is_ascii_digit()));
    if reason.contains('/') || reason.contains('\\') || uid_like {
        tracing::warn!(%referral_id, %reason, "a study view failed; the hub is told without the details");
        "the referring edge could not render this view (its log says why)".into()
    } else {
        reason
    }
}

async fn checked_study_view(
    state: &std::sync::Arc<crate::EdgeState>,
    referral_id: &str,
    study_key: &str,
    series_key: &str,
    kind: &str,
    query: &str,
) -> Result<Vec<u8>, String> {
    let local = match state.referrals.get(referral_id) {
        Ok(Some(local)) => local,
        Ok(None) => return Err(format!("no referral {referral_id} from this edge")),
        Err(error) => return Err(error.to_string()),
    };
    let place = local
        .studies
        .iter()
        .find(|s| s.study_key == study_key)
        .and_then(|study| {
            study
                .series
                .iter()
                .find(|s| s.series_key == series_key)
                .map(|series| (study.study_uid.clone(), series.series_uid.clone()))
        });
    let Some((study_uid, series_uid)) = place else {
        return Err(format!(
            "series {series_key} of study {study_key} is not part of referral {referral_id} from this edge"
        ));
    };
    if local.report.is_some() {
        return Err(format!(
            "referral {referral_id} is answered: its consult is closed at this edge"
        ));
    }
    if !KINDS.contains(&kind) || query.len() > grassroots_wire::message::MAX_VIEW_QUERY {
        return Err(format!(
            "a view is one of {KINDS:?} with a query of at most {} bytes",
            grassroots_wire::message::MAX_VIEW_QUERY
        ));
    }
    // Checked again now: an image with burned-in annotation may have arrived since.
    let index = state.studies.index.clone();
    let (s, se) = (study_uid.clone(), series_uid.clone());
    let burned_in = tokio::task::spawn_blocking(move || {
        index
            .instances_of(&s, &se)
            .map(|all| all.iter().any(|i| i.attributes.burned_in()))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    if burned_in {
        return Err(
            "the series' images may carry burned-in annotation: they never leave the edge".into(),
        );
    }
    let data = match kind {
        "image" => stack_image(state, (&study_uid, &series_uid), query).await?,
        "stack" | "region" => {
            crate::study_measures::answer(state, (&study_uid, &series_uid), kind, query).await?
        }
        _ => volume_view(state, (&study_uid, &series_uid), kind, query).await?,
    };
    // On disk before it is on the wire (`crate::consult_egress`).
    state
        .egress
        .record(crate::consult_egress::Egress {
            at: time::OffsetDateTime::now_utc(),
            referral_id: referral_id.to_string(),
            slide_id: format!("study {study_key}"),
            item: format!("{series_key} {kind}?{query}"),
            bytes: data.len() as u64,
            prefetch: false,
        })
        .await
        .map_err(|error| format!("cannot record what leaves this edge: {error}"))?;
    Ok(data)
}

/// A picture of the series' stack (`kind` `image`).
async fn stack_image(
    state: &std::sync::Arc<crate::EdgeState>,
    (study_uid, series_uid): (&str, &str),
    query: &str,
) -> Result<Vec<u8>, String> {
    let uri: axum::http::Uri = format!("/?{query}")
        .parse()
        .map_err(|_| format!("query {query:?} is not a URL's query"))?;
    let axum::extract::Query(query) =
        axum::extract::Query::<crate::study_viewer::ImageQuery>::try_from_uri(&uri)
            .map_err(|e| e.body_text())?;
    let Ok(place) = crate::study_viewer::renderers().acquire().await else {
        return Err("the renderer is shutting down".into());
    };
    let studies = state.studies.clone();
    let (s, se) = (study_uid.to_string(), series_uid.to_string());
    tokio::task::spawn_blocking(move || {
        let _place = place;
        let instances = studies.index.instances_of(&s, &se)?;
        crate::study_viewer::stack_image_jpeg(&studies.archive, instances, &query)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// The series' figures (`describe`), a plane or a volume rendering of its volume.
async fn volume_view(
    state: &std::sync::Arc<crate::EdgeState>,
    (study_uid, series_uid): (&str, &str),
    kind: &str,
    query: &str,
) -> Result<Vec<u8>, String> {
    let volume = match crate::study_viewer::volume_of(state, study_uid, series_uid).await {
        Ok(volume) => volume,
        Err(response) => {
            return Err(crate::study_viewer::unprocessable_reason(response)
                .await
                .unwrap_or_else(|| "the series cannot be shown".into()))
        }
    };
    if kind == "describe" {
        serde_json::to_vec(&crate::study_viewer::figures_of(&volume)).map_err(|e| e.to_string())
    } else {
        let Ok(place) = crate::study_viewer::renderers().acquire().await else {
            return Err("the renderer is shutting down".into());
        };
        let (kind, query) = (kind.to_string(), query.to_string());
        tokio::task::spawn_blocking(move || {
            let _place = place;
            crate::render_socket::render_view(&volume, &kind, &query)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_reach_the_hub_without_paths_or_uids() {
        let ours = "series 0123abcd of study 4567ef is not part of referral 89ab from this edge";
        assert_eq!(for_the_hub("r", ours.into()), ours);
        let spacing = "pixel spacing [0.7, 0.7] mm is not a scanner's (0.001 to 100 mm)";
        assert_eq!(for_the_hub("r", spacing.into()), spacing);
        for leaky in [
            "not a DICOM object (/var/lib/grassroots/dicom/1.2.840.113619.2.55/1.2.3.4/5.dcm)",
            "instance 1.2.840.113619.2.55.3 is unreadable",
        ] {
            let told = for_the_hub("r", leaky.into());
            assert!(!told.contains("1.2.840") && !told.contains('/'), "{told}");
        }
    }

    #[test]
    fn keys_stand_for_uids_only_under_this_edges_key() {
        let key = [7u8; 32];
        let study = key_of(&key, "study", "1.2.840.113619.2.55");
        assert_eq!(study.len(), 32);
        assert_eq!(study, key_of(&key, "study", "1.2.840.113619.2.55"));
        assert_ne!(study, key_of(&[8u8; 32], "study", "1.2.840.113619.2.55"));
        // A series UID equal to a study UID still gets another key.
        assert_ne!(study, key_of(&key, "series", "1.2.840.113619.2.55"));
        assert!(!study.contains("113619"));
    }
}
