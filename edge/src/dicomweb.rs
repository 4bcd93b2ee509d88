//! DICOMweb at the edge (PS3.18) for signed-in staff and scripts with an API token: search
//! (QIDO-RS: studies, a study's series, a series' instances) and metadata (WADO-RS). Rendered
//! pictures are in `study_viewer.rs`; retrieving the original objects and frames (WADO-RS,
//! behind a permission of its own) and storing (STOW-RS) in `dicomweb_transfer.rs`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use grassroots_dicom::query::QueryLevel;
use grassroots_dicom::DicomError;
use grassroots_web::WebError;

use crate::EdgeState;

const BASE: &str = "/dicom-web";

fn dicom_json(value: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/dicom+json")],
        value.to_string(),
    )
        .into_response()
}

fn refusal(error: DicomError) -> Response {
    match error {
        DicomError::BadQuery(reason) => WebError::BadRequest(reason).into_response(),
        other => WebError::Internal(other.to_string()).into_response(),
    }
}

async fn search(
    state: Arc<EdgeState>,
    level: QueryLevel,
    params: Vec<(String, String)>,
    study: Option<String>,
    series: Option<String>,
) -> Response {
    let index = state.studies.index.clone();
    let found = tokio::task::spawn_blocking(move || {
        let search =
            grassroots_dicom::qido::parse(level, &params, study.as_deref(), series.as_deref())?;
        grassroots_dicom::qido::run(&search, &index, BASE)
    })
    .await;
    match found {
        Ok(Ok(matches)) => dicom_json(serde_json::Value::Array(matches)),
        Ok(Err(error)) => refusal(error),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `GET /dicom-web/studies`
pub(crate) async fn search_studies(
    State(state): State<Arc<EdgeState>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    search(state, QueryLevel::Study, params, None, None).await
}

/// `GET /dicom-web/studies/{study}/series`
pub(crate) async fn search_series(
    State(state): State<Arc<EdgeState>>,
    Path(study): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    search(state, QueryLevel::Series, params, Some(study), None).await
}

/// `GET /dicom-web/instances`: instances of any study.
pub(crate) async fn search_all_instances(
    State(state): State<Arc<EdgeState>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    search(state, QueryLevel::Image, params, None, None).await
}

/// `GET /dicom-web/studies/{study}/instances`: a study's instances, of every series.
pub(crate) async fn search_study_instances(
    State(state): State<Arc<EdgeState>>,
    Path(study): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    search(state, QueryLevel::Image, params, Some(study), None).await
}

/// `GET /dicom-web/studies/{study}/series/{series}/instances`
pub(crate) async fn search_instances(
    State(state): State<Arc<EdgeState>>,
    Path((study, series)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    search(state, QueryLevel::Image, params, Some(study), Some(series)).await
}

/// `GET /dicom-web/studies/{study}/series/{series}/metadata`: every instance's attributes.
pub(crate) async fn series_metadata(
    State(state): State<Arc<EdgeState>>,
    Path((study, series)): Path<(String, String)>,
) -> Response {
    let instances = match crate::studies::series_instances(&state, &study, &series) {
        Ok(instances) => instances,
        Err(error) => return error.into_response(),
    };
    let archive = state.studies.archive.clone();
    let found = tokio::task::spawn_blocking(move || {
        instances
            .iter()
            .map(|record| grassroots_dicom::qido::metadata(&archive.path_of(&record.file)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await;
    match found {
        Ok(Ok(all)) => dicom_json(serde_json::Value::Array(all)),
        Ok(Err(error)) => refusal(error),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `GET /dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata`
pub(crate) async fn instance_metadata(
    State(state): State<Arc<EdgeState>>,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Response {
    let record = match state.studies.index.instance(&study, &series, &instance) {
        Ok(Some(record)) => record,
        Ok(None) => {
            return WebError::NotFound(format!("no instance {instance} in series {series}"))
                .into_response()
        }
        Err(error) => return refusal(error),
    };
    let path = state.studies.archive.path_of(&record.file);
    match tokio::task::spawn_blocking(move || grassroots_dicom::qido::metadata(&path)).await {
        Ok(Ok(one)) => dicom_json(serde_json::Value::Array(vec![one])),
        Ok(Err(error)) => refusal(error),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}
