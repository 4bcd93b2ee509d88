//! DICOMweb retrieval and storage at the edge (PS3.18): WADO-RS hands out the original
//! objects of a study, a series or an instance (as stored, or decoded to Explicit VR Little
//! Endian, PS3.18's default, as the Accept header asks: [`crate::dicomweb_accept`]), and an
//! instance's frames; STOW-RS stores objects posted to it as C-STORE does.
//!
//! Retrieval is where original data leaves the edge's archive, so it is a permission of its
//! own ([`Permission::DicomRetrieve`]), off for every account until an admin grants it
//! (`POST /api/v1/accounts/{name}/permissions`); viewing the rendered pictures needs only the
//! role. Each retrieval is a security event naming the account and what it took. Nothing here
//! crosses to the hub: the edge's web server listens on the hospital network.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use grassroots_dicom::InstanceRecord;
use grassroots_web::accounts::Permission;
use grassroots_web::{CurrentUser, WebError};

use crate::dicomweb_accept::{
    negotiate, Delivery, MULTIPART_DICOM, MULTIPART_FRAMES, SINGLE_DICOM,
};
use crate::EdgeState;
use grassroots_dicom::transcode::EXPLICIT_VR_LITTLE_ENDIAN;

/// A fresh boundary for each multipart body this server writes: an object stored by someone
/// else cannot hold it, and so cannot add parts to another person's retrieval.
fn boundary() -> String {
    format!(
        "grassroots-{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}
/// A STOW-RS body, at most (the C-STORE listener's object cap).
pub(crate) const MAX_STOW_BYTES: usize = 512 << 20;
/// Frames one retrieval may ask for.
const MAX_FRAMES_ASKED: usize = 1024;

fn forbidden(user: &grassroots_web::accounts::Account) -> Option<Response> {
    (!user.may(Permission::DicomRetrieve)).then(|| {
        (
            StatusCode::FORBIDDEN,
            axum::Json(grassroots_web::openapi::ApiError {
                error: "retrieving original DICOM data needs the dicom-retrieve permission, which an admin grants".into(),
            }),
        )
            .into_response()
    })
}

fn audit(state: &EdgeState, user: &str, what: String) {
    state
        .accounts
        .security_log()
        .record("dicom-retrieve", Some(user), None, None, what);
}

/// A file as `delivery` says it goes out, with the transfer syntax it is then in: as stored,
/// or decoded to Explicit VR Little Endian (on a blocking thread: a JPEG 2000 CT slice takes
/// tens of milliseconds).
async fn object_bytes(
    path: PathBuf,
    transfer_syntax: String,
    delivery: Delivery,
) -> std::io::Result<(Vec<u8>, String)> {
    let bytes = tokio::fs::read(&path).await?;
    if delivery == Delivery::AsStored
        || transfer_syntax == EXPLICIT_VR_LITTLE_ENDIAN
        || !grassroots_dicom::transcode::can_send_explicit_little_endian(&transfer_syntax)
    {
        return Ok((bytes, transfer_syntax));
    }
    let what = path.display().to_string();
    let decoded = tokio::task::spawn_blocking(move || {
        grassroots_dicom::transcode::to_explicit_little_endian(bytes, &what)
    })
    .await
    .map_err(std::io::Error::other)?;
    match decoded {
        Ok(bytes) => Ok((bytes, EXPLICIT_VR_LITTLE_ENDIAN.to_string())),
        Err(error) => {
            // The reason (which names the archive's file) goes to the log; the client gets one
            // that names no path (as a 500 for the first part, else a body cut short).
            tracing::warn!("DICOMweb retrieval: {error}");
            Err(std::io::Error::other(
                "the object could not be decoded to Explicit VR Little Endian: ask for it as stored (transfer-syntax=*)",
            ))
        }
    }
}

/// One part of a multipart/related body: the object as `delivery` says, naming its syntax.
async fn object_part(
    boundary: &str,
    path: PathBuf,
    transfer_syntax: String,
    delivery: Delivery,
) -> std::io::Result<Bytes> {
    let (bytes, transfer_syntax) = object_bytes(path, transfer_syntax, delivery).await?;
    let mut part = Vec::with_capacity(bytes.len() + 160);
    part.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={transfer_syntax}\r\n\r\n"
        )
        .as_bytes(),
    );
    part.extend_from_slice(&bytes);
    part.extend_from_slice(b"\r\n");
    Ok(Bytes::from(part))
}

/// A multipart/related body of the objects as `delivery` says (each part naming its transfer
/// syntax), the files read one at a time as it is sent. The first part is made before the
/// status line goes out, so that an object that cannot be sent as asked (a single instance,
/// most often) gets an error status with the reason; a later one can only cut the body short,
/// which the client sees as an error too.
async fn multipart_files(files: Vec<(PathBuf, String)>, delivery: Delivery) -> Response {
    let boundary = boundary();
    let mut files = files.into_iter();
    let first = match files.next() {
        Some((path, transfer_syntax)) => {
            match object_part(&boundary, path, transfer_syntax, delivery).await {
                Ok(part) => Some(Ok::<Bytes, std::io::Error>(part)),
                Err(error) => return WebError::Internal(error.to_string()).into_response(),
            }
        }
        None => None,
    };
    let each = boundary.clone();
    let rest = futures_util::stream::iter(files).then(move |(path, transfer_syntax)| {
        let boundary = each.clone();
        async move { object_part(&boundary, path, transfer_syntax, delivery).await }
    });
    let end = futures_util::stream::iter([Ok(Bytes::from(format!("--{boundary}--\r\n")))]);
    let body = futures_util::stream::iter(first).chain(rest).chain(end);
    (
        [(
            header::CONTENT_TYPE,
            format!(r#"multipart/related; type="application/dicom"; boundary={boundary}"#),
        )],
        Body::from_stream(body),
    )
        .into_response()
}

use futures_util::StreamExt as _;

fn files_of(state: &EdgeState, records: &[InstanceRecord]) -> Vec<(PathBuf, String)> {
    records
        .iter()
        .map(|record| {
            (
                state.studies.archive.path_of(&record.file),
                record.transfer_syntax_uid.clone(),
            )
        })
        .collect()
}

/// `GET /dicom-web/studies/{study}`: every instance of a study.
pub(crate) async fn retrieve_study(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = forbidden(&user) {
        return refused;
    }
    let index = &state.studies.index;
    let series = match index.series_of(&study) {
        Ok(series) if !series.is_empty() => series,
        Ok(_) => return WebError::NotFound(format!("no study {study}")).into_response(),
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    let mut records = Vec::new();
    for one in &series {
        match index.instances_of(&study, &one.series.series_instance_uid) {
            Ok(found) => records.extend(found),
            Err(error) => return WebError::Internal(error.to_string()).into_response(),
        }
    }
    let delivery = match negotiate(&headers, &[MULTIPART_DICOM], &syntaxes_of(&records)) {
        Ok(negotiated) => negotiated.delivery,
        Err(refused) => return refused,
    };
    audit(
        &state,
        &user.username,
        format!("study {study}: {} instance(s)", records.len()),
    );
    multipart_files(files_of(&state, &records), delivery).await
}

/// `GET /dicom-web/studies/{study}/series/{series}`: every instance of a series.
pub(crate) async fn retrieve_series(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = forbidden(&user) {
        return refused;
    }
    let records = match crate::studies::series_instances(&state, &study, &series) {
        Ok(records) => records,
        Err(error) => return error.into_response(),
    };
    let delivery = match negotiate(&headers, &[MULTIPART_DICOM], &syntaxes_of(&records)) {
        Ok(negotiated) => negotiated.delivery,
        Err(refused) => return refused,
    };
    audit(
        &state,
        &user.username,
        format!("series {series}: {} instance(s)", records.len()),
    );
    multipart_files(files_of(&state, &records), delivery).await
}

fn one_instance(
    state: &EdgeState,
    study: &str,
    series: &str,
    instance: &str,
) -> Result<InstanceRecord, WebError> {
    match state.studies.index.instance(study, series, instance) {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(WebError::NotFound(format!(
            "no instance {instance} in series {series}"
        ))),
        Err(error) => Err(WebError::Internal(error.to_string())),
    }
}

/// `GET /dicom-web/studies/{study}/series/{series}/instances/{instance}`: the object, as stored
/// or in Explicit VR Little Endian as the Accept header asks.
pub(crate) async fn retrieve_instance(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = forbidden(&user) {
        return refused;
    }
    let record = match one_instance(&state, &study, &series, &instance) {
        Ok(record) => record,
        Err(error) => return error.into_response(),
    };
    let negotiated = match negotiate(
        &headers,
        &[MULTIPART_DICOM, SINGLE_DICOM],
        &syntaxes_of(std::slice::from_ref(&record)),
    ) {
        Ok(negotiated) => negotiated,
        Err(refused) => return refused,
    };
    audit(&state, &user.username, format!("instance {instance}"));
    if negotiated.offer == SINGLE_DICOM {
        // PS3.18 lets one instance go out as a single part.
        let path = state.studies.archive.path_of(&record.file);
        let syntax = record.transfer_syntax_uid.clone();
        return match object_bytes(path, syntax, negotiated.delivery).await {
            Ok((bytes, transfer_syntax)) => (
                [(
                    header::CONTENT_TYPE,
                    format!("application/dicom; transfer-syntax={transfer_syntax}"),
                )],
                bytes,
            )
                .into_response(),
            Err(error) => WebError::Internal(error.to_string()).into_response(),
        };
    }
    multipart_files(files_of(&state, &[record]), negotiated.delivery).await
}

/// The transfer syntaxes `records` are stored in (and so sent in).
fn syntaxes_of(records: &[InstanceRecord]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r.transfer_syntax_uid.as_str())
        .collect()
}

/// Frame numbers (1-based) from a `frames` path segment such as `1,3,5`.
fn frame_list(text: &str) -> Result<Vec<u32>, String> {
    let frames: Vec<u32> = text
        .split(',')
        .map(|part| part.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("frames {text:?}: write frame numbers from 1, separated by commas"))?;
    if frames.is_empty() || frames.contains(&0) {
        return Err(format!("frames {text:?}: frame numbers start at 1"));
    }
    // Each frame once, in the order first asked.
    let mut seen = std::collections::HashSet::new();
    let frames: Vec<u32> = frames.into_iter().filter(|f| seen.insert(*f)).collect();
    if frames.len() > MAX_FRAMES_ASKED {
        return Err(format!("at most {MAX_FRAMES_ASKED} frames at once"));
    }
    Ok(frames)
}

/// `GET /dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}`.
pub(crate) async fn retrieve_frames(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path((study, series, instance, frames)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = forbidden(&user) {
        return refused;
    }
    // Frames go out decoded, whatever the object's transfer syntax: uncompressed bytes, as
    // Explicit VR Little Endian would carry them.
    if let Err(refused) = negotiate(&headers, &[MULTIPART_FRAMES], &[EXPLICIT_VR_LITTLE_ENDIAN]) {
        return refused;
    }
    let frames = match frame_list(&frames) {
        Ok(frames) => frames,
        Err(reason) => return WebError::BadRequest(reason).into_response(),
    };
    let record = match one_instance(&state, &study, &series, &instance) {
        Ok(record) => record,
        Err(error) => return error.into_response(),
    };
    let path = state.studies.archive.path_of(&record.file);
    let asked = frames.clone();
    let decoded =
        tokio::task::spawn_blocking(move || grassroots_dicom::render::frame_bytes(&path, &asked))
            .await;
    let parts = match decoded {
        Ok(Ok(parts)) => parts,
        Ok(Err(error)) => return crate::study_viewer::refusal(error),
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    audit(
        &state,
        &user.username,
        format!("instance {instance}: frame(s) {frames:?}"),
    );
    let boundary = boundary();
    let mut chunks: Vec<Result<Bytes, std::io::Error>> = Vec::with_capacity(parts.len() * 3 + 1);
    for part in parts {
        chunks.push(Ok(Bytes::from(format!(
            "--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        ))));
        chunks.push(Ok(Bytes::from(part)));
        chunks.push(Ok(Bytes::from_static(b"\r\n")));
    }
    chunks.push(Ok(Bytes::from(format!("--{boundary}--\r\n"))));
    (
        [(
            header::CONTENT_TYPE,
            format!(r#"multipart/related; type="application/octet-stream"; boundary={boundary}"#),
        )],
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response()
}

/// Space STOW-RS leaves free in the archive's folder, at least (as the C-STORE listener).
const STOW_MIN_FREE_BYTES: u64 = 1 << 30;

/// The parts of a multipart body: each part's headers (as text) and content.
fn multipart_parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<(String, &'a [u8])>, String> {
    let delimiter = format!("--{boundary}");
    // Within the body a delimiter starts a line: content may hold the boundary's bytes elsewhere.
    let next_delimiter = format!("\r\n--{boundary}");
    let finder = memchr::memmem::Finder::new(next_delimiter.as_bytes());
    let mut at = if body.starts_with(delimiter.as_bytes()) {
        0
    } else {
        finder
            .find(body)
            .map(|n| n + 2)
            .ok_or("the body has no part: its boundary never occurs")?
    };
    let mut parts = Vec::new();
    loop {
        let after = at + delimiter.len();
        if body[after..].starts_with(b"--") {
            return Ok(parts);
        }
        if !body[after..].starts_with(b"\r\n") {
            return Err("a boundary is not followed by a line end".into());
        }
        let start = after + 2;
        // Headers end at an empty line; a part without headers starts with it.
        let (headers, content_start) = if body[start..].starts_with(b"\r\n") {
            (String::new(), start + 2)
        } else {
            let end = memchr::memmem::find(&body[start..], b"\r\n\r\n")
                .ok_or("a part's headers do not end")?;
            (
                String::from_utf8_lossy(&body[start..start + end]).into_owned(),
                start + end + 4,
            )
        };
        let next = finder
            .find(&body[content_start..])
            .map(|n| content_start + n)
            .ok_or("the body ends inside a part: it is truncated")?;
        parts.push((headers, &body[content_start..next]));
        at = next + 2;
    }
}

/// A content type's parameter, unquoted.
fn parameter(content_type: &str, name: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|part| {
        let (key, value) = part.split_once('=')?;
        (key.trim().eq_ignore_ascii_case(name)).then(|| value.trim().trim_matches('"').to_string())
    })
}

fn tag(vr: &str, value: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "vr": vr, "Value": [value] })
}

/// `POST /dicom-web/studies`: stores the objects of a multipart/related body.
pub(crate) async fn store_studies(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    store(state, &user.username, None, &headers, body).await
}

/// `POST /dicom-web/studies/{study}`: stores objects that all belong to `study`.
pub(crate) async fn store_study(
    State(state): State<Arc<EdgeState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    store(state, &user.username, Some(study), &headers, body).await
}

async fn store(
    state: Arc<EdgeState>,
    username: &str,
    study: Option<String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let unsupported = |reason: String| {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            axum::Json(grassroots_web::openapi::ApiError { error: reason }),
        )
            .into_response()
    };
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/related")
    {
        return unsupported(format!(
            "STOW-RS takes multipart/related; type=\"application/dicom\", not {content_type:?}"
        ));
    }
    if let Some(kind) = parameter(&content_type, "type") {
        if !kind.eq_ignore_ascii_case("application/dicom") {
            return unsupported(format!(
                "this server stores application/dicom parts, not {kind}"
            ));
        }
    }
    let Some(boundary) = parameter(&content_type, "boundary").filter(|b| !b.is_empty()) else {
        return WebError::BadRequest("the content type names no boundary".into()).into_response();
    };
    let ingest = state.studies.clone();
    let received_from = format!("dicomweb:{username}");
    let stored = tokio::task::spawn_blocking(move || {
        let parts = multipart_parts(&body, &boundary)?;
        if parts.is_empty() {
            return Err("the body holds no object".to_string());
        }
        let free = fs2::available_space(ingest.archive.path_of("")).unwrap_or(u64::MAX);
        let mut results = Vec::new();
        let mut used = 0u64;
        for (number, (part_headers, content)) in parts.iter().enumerate() {
            let what = format!("part {}", number + 1);
            let declared = part_headers.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-type")
                    .then(|| value.trim().to_ascii_lowercase())
            });
            let declared_dicom = declared
                .as_deref()
                .is_none_or(|t| t.starts_with("application/dicom"));
            let has_room = free.saturating_sub(used + content.len() as u64) >= STOW_MIN_FREE_BYTES;
            let result = if !declared_dicom {
                Err((0xC000u16, format!("{what} is not application/dicom")))
            } else if !has_room {
                Err((0xA700, format!("{what}: the archive's disk is nearly full")))
            } else {
                ingest
                    .store_new_file(content, &what, &received_from, study.as_deref())
                    .map_err(|e| match e {
                        // PS3.4's "duplicate SOP instance".
                        grassroots_dicom::DicomError::Duplicate(_) => (0x0111, e.to_string()),
                        _ => (0xC000, e.to_string()),
                    })
                    .inspect(|_| used += content.len() as u64)
            };
            // A refusal by the store cites the object when its file meta names it (the
            // parts refused unread are not read for it).
            let tried = result.is_err() && declared_dicom && has_room;
            let result = result.map_err(|(code, reason)| {
                let reference = tried
                    .then(|| grassroots_dicom::ingest::sop_reference(content))
                    .flatten();
                (code, reason, reference)
            });
            results.push(result);
        }
        Ok(results)
    })
    .await;
    let results = match stored {
        Ok(Ok(results)) => results,
        Ok(Err(reason)) => return WebError::BadRequest(reason).into_response(),
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    let mut reasons = Vec::new();
    for result in results {
        match result {
            Ok(stored) => {
                let a = &stored.attributes;
                referenced.push(serde_json::json!({
                    "00081150": tag("UI", a.sop_class_uid.clone().into()),
                    "00081155": tag("UI", a.sop_instance_uid.clone().into()),
                    "00081190": tag("UR", format!(
                        "/dicom-web/studies/{}/series/{}/instances/{}",
                        a.study_instance_uid, a.series_instance_uid, a.sop_instance_uid
                    ).into()),
                }));
            }
            Err((code, reason, reference)) => {
                let mut item = serde_json::Map::new();
                if let Some((class, instance)) = reference {
                    item.insert("00081150".into(), tag("UI", class.into()));
                    item.insert("00081155".into(), tag("UI", instance.into()));
                }
                item.insert("00081197".into(), tag("US", code.into()));
                failed.push(serde_json::Value::Object(item));
                reasons.push(reason);
            }
        }
    }
    let status = match (referenced.is_empty(), failed.is_empty()) {
        (_, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        (true, false) => StatusCode::CONFLICT,
    };
    state.accounts.security_log().record(
        "dicom-store",
        Some(username),
        None,
        None,
        format!(
            "{} object(s) stored, {} refused",
            referenced.len(),
            failed.len()
        ),
    );
    let mut answer = serde_json::Map::new();
    if !referenced.is_empty() {
        answer.insert(
            "00081199".into(),
            serde_json::json!({ "vr": "SQ", "Value": referenced }),
        );
    }
    if !failed.is_empty() {
        answer.insert(
            "00081198".into(),
            serde_json::json!({ "vr": "SQ", "Value": failed }),
        );
    }
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        serde_json::Value::Object(answer).to_string(),
    )
        .into_response();
    // The reasons in words, for people (PS3.18's answer has only codes): as Warning headers.
    for reason in reasons {
        let text: String = reason
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .filter(|c| *c != '"')
            .take(300)
            .collect();
        if let Ok(value) = format!("299 grassroots \"{text}\"").parse() {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts_are_cut_at_their_boundaries_and_truncation_is_refused() {
        let body = b"preamble\r\n--b1\r\nContent-Type: application/dicom\r\n\r\nAB\r\n--b1--\r\nX\r\n--b1\r\n\r\nCD--b1\r\n--b1--\r\n";
        // The first part is complete; the body after its closing delimiter is ignored.
        let parts = multipart_parts(body, "b1").unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].1, b"AB");
        let two =
            b"--b\r\nContent-Type: application/dicom\r\n\r\n\x00\r\n--\r\n--b\r\n\r\nxyz\r\n--b--";
        let parts = multipart_parts(two, "b").unwrap();
        assert_eq!(
            parts.iter().map(|p| p.1).collect::<Vec<_>>(),
            [&b"\x00\r\n--"[..], b"xyz"]
        );
        assert!(multipart_parts(b"--b\r\n\r\nunfinished", "b").is_err());
        assert!(multipart_parts(b"no boundary here", "b").is_err());
        assert_eq!(
            parameter(
                r#"multipart/related; type="application/dicom"; boundary=abc"#,
                "boundary"
            )
            .as_deref(),
            Some("abc")
        );
        assert_eq!(frame_list("1,3").unwrap(), [1, 3]);
        assert!(frame_list("0").is_err() && frame_list("a").is_err());
    }
}
