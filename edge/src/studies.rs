//! Radiology studies at the edge: the DICOM listener started with the node (`--dicom`), and the
//! studies list and study pages with their API. The archive and its index are
//! `grassroots_dicom`'s; this module wires them into the node and shows them to its staff.
//! Studies never leave the edge from here: no route of this module sends anything to the hub.

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use grassroots_dicom::index::{SeriesSummary, StudySummary};
use grassroots_web::i18n::tr;
use grassroots_web::pages::{escape, headings, page};
use grassroots_web::{CurrentUser, WebError};
use serde::Serialize;

use crate::{EdgeError, EdgeState};

/// Starts the DICOM listener when the configuration asks for one.
pub async fn start_listener(
    config: &crate::EdgeConfig,
    ingest: grassroots_dicom::Ingest,
) -> Result<Option<grassroots_dicom::DicomListener>, EdgeError> {
    let Some(addr) = config.dicom_listen else {
        return Ok(None);
    };
    let mut scp = grassroots_dicom::ScpConfig::new(&config.dicom_ae_title);
    // Host names are resolved once, here, off the runtime's threads.
    let entries = config.dicom_allow.clone();
    scp.allow = tokio::task::spawn_blocking(move || {
        entries
            .iter()
            .map(|entry| grassroots_dicom::scp::AllowedPeer::parse(entry))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|error| EdgeError::Config(error.to_string()))?
    .map_err(|error| EdgeError::Config(error.to_string()))?;
    scp.find_from_anyone = config.dicom_find_from_anyone;
    scp.min_free_bytes = config.min_free_disk_bytes;
    if scp.allow.is_empty() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "DICOM listener open to any AE for C-STORE (no --dicom-allow); C-FIND is refused to them");
    }
    let listener = grassroots_dicom::DicomListener::bind(addr, scp, ingest)
        .await
        .map_err(|error| EdgeError::Config(error.to_string()))?;
    Ok(Some(listener))
}

/// One file of `grassroots study import`: what it was stored as, or why it was refused.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct StudyImportLine {
    pub file: std::path::PathBuf,
    /// `Modality patient — study description (SOP Instance UID)` of a stored file.
    pub stored: Option<String>,
    pub new: bool,
    pub error: Option<String>,
}

/// Imports a file or a folder of files into the archive, one line per file.
pub fn import_lines(
    ingest: &grassroots_dicom::Ingest,
    path: &std::path::Path,
) -> Vec<StudyImportLine> {
    ingest
        .import_path(path)
        .into_iter()
        .map(|(file, outcome)| match outcome {
            Ok(stored) => {
                let a = &stored.attributes;
                StudyImportLine {
                    file,
                    stored: Some(format!(
                        "{} {} — {} ({})",
                        a.modality,
                        person(&a.patient_name),
                        a.study_description,
                        a.sop_instance_uid
                    )),
                    new: stored.new,
                    error: None,
                }
            }
            Err(error) => StudyImportLine {
                file,
                stored: None,
                new: false,
                error: Some(error.to_string()),
            },
        })
        .collect()
}

/// A study with its series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StudyDetail {
    pub study: StudySummary,
    pub series: Vec<SeriesSummary>,
}

/// `GET /api/v1/studies`: every study the edge holds, the latest received first.
#[utoipa::path(get, path = "/api/v1/studies", tag = "studies",
    responses((status = 200, description = "Every study, with its modalities and counts", body = Vec<StudySummary>), grassroots_web::openapi::Refusals))]
pub(crate) async fn studies_api(State(state): State<Arc<EdgeState>>) -> Response {
    match state.studies.index.studies() {
        Ok(studies) => Json(studies).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `GET /api/v1/studies/{study}`: one study and its series.
#[utoipa::path(get, path = "/api/v1/studies/{study}", tag = "studies",
    params(("study" = String, Path, description = "Study Instance UID")),
    responses((status = 200, description = "The study and its series", body = StudyDetail),
        (status = 404, description = "No such study", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals))]
pub(crate) async fn study_api(
    State(state): State<Arc<EdgeState>>,
    Path(study): Path<String>,
) -> Response {
    match detail(&state, &study) {
        Ok(detail) => Json(detail).into_response(),
        Err(error) => error.into_response(),
    }
}

fn detail(state: &EdgeState, study_uid: &str) -> Result<StudyDetail, WebError> {
    let index = &state.studies.index;
    let internal = |error: grassroots_dicom::DicomError| WebError::Internal(error.to_string());
    let study = index
        .study(study_uid)
        .map_err(internal)?
        .ok_or_else(|| WebError::NotFound(format!("no study {study_uid}")))?;
    let series = index.series_of(study_uid).map_err(internal)?;
    Ok(StudyDetail { study, series })
}

/// The instances of a series, in instance order; a series that holds none is not found.
pub(crate) fn series_instances(
    state: &EdgeState,
    study: &str,
    series: &str,
) -> Result<Vec<grassroots_dicom::InstanceRecord>, WebError> {
    match state.studies.index.instances_of(study, series) {
        Ok(instances) if !instances.is_empty() => Ok(instances),
        Ok(_) => Err(WebError::NotFound(format!(
            "no series {series} in study {study}"
        ))),
        Err(error) => Err(WebError::Internal(error.to_string())),
    }
}

/// A DICOM person name as people write it: `Wang^Xiuying` as `Wang Xiuying`, and with its
/// ideographic form (`Wang^Xiuying=王^秀英`) as `Wang Xiuying (王秀英)`.
fn person(name: &str) -> String {
    let mut groups = name.split('=');
    let parts = |group: &str, separator: &str| {
        group
            .split('^')
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(separator)
    };
    let alphabetic = parts(groups.next().unwrap_or_default(), " ");
    let ideographic = parts(groups.next().unwrap_or_default(), "");
    match (alphabetic.is_empty(), ideographic.is_empty()) {
        (_, true) => alphabetic,
        (true, false) => ideographic,
        (false, false) => format!("{alphabetic} ({ideographic})"),
    }
}

/// A DICOM date (`20261130`) as `2026-11-30`.
fn date(da: &str) -> String {
    if da.len() == 8 && da.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}-{}-{}", &da[..4], &da[4..6], &da[6..])
    } else {
        da.to_string()
    }
}

/// `GET /studies`: the studies list.
pub(crate) async fn studies_page(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    let studies = match state.studies.index.studies() {
        Ok(studies) => studies,
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    let mut rows = String::new();
    for s in &studies {
        let r = &s.study;
        rows.push_str(&format!(
            r#"<tr><td translate="no">{patient}</td><td translate="no">{id}</td><td>{date}</td><td translate="no">{modalities}</td><td translate="no"><a href="/studies/{uid}">{description}</a></td><td translate="no">{accession}</td><td>{series}</td><td>{instances}</td></tr>"#,
            patient = escape(&person(&r.patient_name)),
            id = escape(&r.patient_id),
            date = escape(&date(&r.study_date)),
            modalities = escape(&s.modalities.join(", ")),
            uid = escape(&r.study_instance_uid),
            description = if r.study_description.is_empty() {
                escape(tr("(no description)"))
            } else {
                escape(&r.study_description)
            },
            accession = escape(&r.accession_number),
            series = s.series,
            instances = s.instances,
        ));
    }
    let listening = match state.config.dicom_listen {
        Some(addr) => tr("Modalities and PACS send studies to AE title {ae} at port {port} (C-STORE); C-FIND answers queries.")
            .replace("{ae}", &format!("<code>{}</code>", escape(&state.config.dicom_ae_title)))
            .replace("{port}", &format!("<code>{}</code>", addr.port())),
        None => tr("The DICOM listener is off: start the edge with --dicom to receive studies from the hospital's machines.").to_string(),
    };
    if studies.is_empty() {
        rows.push_str(&format!(
            r#"<tr><td colspan="8" class="empty">{}</td></tr>"#,
            tr("No studies yet. Send them from a CT, MR or X-ray machine or a PACS to this edge, or import files with {command}.")
                .replace("{command}", r#"<code class="nowrap">grassroots study import</code>"#)
        ));
    }
    let head = headings(&[
        "Patient",
        "Patient ID",
        "Study date",
        "Modalities",
        "Study",
        "Accession",
        "Series",
        "Images",
    ]);
    let body = format!(
        r#"<p class="muted">{listening}</p><div class="table-wrap"><table id="studies">{head}<tbody>{rows}</tbody></table></div>"#
    );
    page(&state.page_title(), "Studies", Some(&user), &body).into_response()
}

/// `GET /studies/{study}`: a study and its series.
pub(crate) async fn study_page(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(study_uid): Path<String>,
) -> Response {
    let StudyDetail { study, series } = match detail(&state, &study_uid) {
        Ok(detail) => detail,
        Err(error) => return error.into_response(),
    };
    let r = &study.study;
    let facts = format!(
        r#"<dl class="facts"><dt>Patient</dt><dd translate="no">{patient}</dd><dt>Patient ID</dt><dd translate="no">{id}</dd><dt>Sex</dt><dd translate="no">{sex}</dd><dt>Birth date</dt><dd>{birth}</dd><dt>Study date</dt><dd>{date}</dd><dt>Accession</dt><dd translate="no">{accession}</dd><dt>Referring physician</dt><dd translate="no">{referrer}</dd><dt>Study Instance UID</dt><dd translate="no"><code>{uid}</code></dd><dt>Received</dt><dd>{first}</dd></dl>"#,
        patient = escape(&person(&r.patient_name)),
        id = escape(&r.patient_id),
        sex = escape(&r.patient_sex),
        birth = escape(&date(&r.patient_birth_date)),
        date = escape(&date(&r.study_date)),
        accession = escape(&r.accession_number),
        referrer = escape(&person(&r.referring_physician_name)),
        uid = escape(&r.study_instance_uid),
        first = escape(&r.first_received_at),
    );
    let mut rows = String::new();
    for s in &series {
        rows.push_str(&format!(
            r#"<tr><td><a href="/studies/{study}/series/{series}">{number}</a></td><td translate="no">{modality}</td><td translate="no">{description}</td><td translate="no">{body}</td><td>{instances}</td></tr>"#,
            study = escape(&r.study_instance_uid),
            series = escape(&s.series.series_instance_uid),
            number = s
                .series
                .series_number
                .map(|n| n.to_string())
                .unwrap_or_else(|| tr("view").to_string()),
            modality = escape(&s.series.modality),
            description = escape(&s.series.series_description),
            body = escape(&s.series.body_part_examined),
            instances = s.instances,
        ));
    }
    let head = headings(&["Series", "Modality", "Description", "Body part", "Images"]);
    let title = if r.study_description.is_empty() {
        tr("Study").to_string()
    } else {
        r.study_description.clone()
    };
    let body = format!(
        r#"{facts}<p><a href="/referrals?study={uid}#refer-form">{refer}</a></p><h2>Series</h2><div class="table-wrap"><table id="series">{head}<tbody>{rows}</tbody></table></div>"#,
        uid = escape(&r.study_instance_uid),
        refer = tr("Refer to the hub"),
    );
    page(&state.page_title(), &title, Some(&user), &body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicom_names_and_dates_read_as_people_write_them() {
        assert_eq!(person("Wang^Xiuying"), "Wang Xiuying");
        assert_eq!(person("CompressedSamples^MR1"), "CompressedSamples MR1");
        assert_eq!(person("Wang^Xiuying=王^秀英"), "Wang Xiuying (王秀英)");
        assert_eq!(person("=王^秀英"), "王秀英");
        assert_eq!(date("20261130"), "2026-11-30");
        assert_eq!(date(""), "");
    }
}
