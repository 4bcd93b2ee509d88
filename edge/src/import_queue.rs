//! `grassroots slide import` and `grassroots study import` while the edge runs: the running edge
//! holds the store (sled allows one process per data directory), so the command hands each path
//! to it through a queue folder, `DATA/import-queue/`, and waits for the outcome.
//!
//! A request is a JSON file written whole and renamed into place; the edge imports it on a
//! blocking thread, writes the outcome beside it the same way, then removes the request. An edge
//! killed mid-import finds the request again at start and imports it again, which the content
//! id makes harmless (a duplicate is recognised). Only the node's own user can write `DATA`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::slides::{ImportOutcome, SlideLibrary};
use crate::EdgeError;

const QUEUE: &str = "import-queue";

/// What a request imports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    #[default]
    Slide,
    /// DICOM files of radiology studies (a file or a folder of them).
    Study,
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    path: PathBuf,
    name: String,
    #[serde(default)]
    kind: Kind,
}

/// What the edge answers: the import's outcome, or why it could not import at all.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Answer {
    Imported(Box<ImportOutcome>),
    Studies(Vec<crate::studies::StudyImportLine>),
    Error(String),
}

fn queue_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(QUEUE)
}

/// Hands `paths` to the edge running on `data_dir`, one at a time, reporting each outcome.
/// Waits at most `patience` for an edge that does not answer (it may be importing a big slide).
pub fn submit(
    data_dir: &Path,
    paths: &[PathBuf],
    patience: Duration,
    mut on_imported: impl FnMut(&Path, &ImportOutcome),
) -> Result<(), EdgeError> {
    submit_kind(data_dir, paths, patience, Kind::Slide, |path, answer| {
        if let Answer::Imported(outcome) = answer {
            on_imported(path, &outcome);
        }
    })
}

/// As [`submit`], for any kind of request: each path's answer (never [`Answer::Error`], which
/// ends the submission with its reason).
pub(crate) fn submit_kind(
    data_dir: &Path,
    paths: &[PathBuf],
    patience: Duration,
    kind: Kind,
    mut on_answer: impl FnMut(&Path, Answer),
) -> Result<(), EdgeError> {
    let queue = queue_dir(data_dir);
    let io = |e: std::io::Error| EdgeError::Config(format!("{}: {e}", queue.display()));
    std::fs::create_dir_all(&queue).map_err(io)?;
    for path in paths {
        let absolute = std::path::absolute(path).map_err(io)?;
        let name = absolute
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = format!("{:016x}", rand::random::<u64>());
        let request = serde_json::to_vec(&Request {
            path: absolute,
            name,
            kind,
        })
        .map_err(|e| EdgeError::Config(e.to_string()))?;
        let request_path = queue.join(format!("{key}.request"));
        grassroots_store::durable::write_file(&request_path, &request).map_err(io)?;
        let answer_path = queue.join(format!("{key}.answer"));
        let started = std::time::Instant::now();
        let answer = loop {
            if let Ok(bytes) = std::fs::read(&answer_path) {
                break serde_json::from_slice::<Answer>(&bytes)
                    .map_err(|e| EdgeError::Config(format!("the edge's answer: {e}")))?;
            }
            if started.elapsed() > patience {
                let _ = std::fs::remove_file(&request_path);
                return Err(EdgeError::Config(format!(
                    "the edge using {} did not take {} within {} s; is it running?",
                    data_dir.display(),
                    path.display(),
                    patience.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let _ = std::fs::remove_file(&answer_path);
        match answer {
            Answer::Error(error) => {
                return Err(EdgeError::Config(format!("{}: {error}", path.display())))
            }
            answer => on_answer(path, answer),
        }
    }
    Ok(())
}

/// Serves the queue until shutdown: each request imported in turn, its answer written.
pub async fn serve(
    library: Arc<SlideLibrary>,
    studies: grassroots_dicom::Ingest,
    data_dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let queue = queue_dir(&data_dir);
    if let Err(error) = std::fs::create_dir_all(&queue) {
        tracing::error!(dir = %queue.display(), %error, "cannot create the import queue");
        return;
    }
    loop {
        let mut requests: Vec<PathBuf> = std::fs::read_dir(&queue)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "request"))
            .collect();
        requests.sort();
        for request_path in requests {
            let answer = match std::fs::read(&request_path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Request>(&bytes).map_err(|e| e.to_string())
                }) {
                Ok(Request {
                    path,
                    kind: Kind::Study,
                    ..
                }) => {
                    tracing::info!(path = %path.display(), "importing studies for `study import`");
                    let studies = studies.clone();
                    match tokio::task::spawn_blocking(move || {
                        crate::studies::import_lines(&studies, &path)
                    })
                    .await
                    {
                        Ok(lines) => Answer::Studies(lines),
                        Err(error) => Answer::Error(error.to_string()),
                    }
                }
                Ok(request) => {
                    tracing::info!(path = %request.path.display(), "importing a slide for `slide import`");
                    match crate::ingest::import(&library, request.path, request.name).await {
                        Ok(outcome) => Answer::Imported(Box::new(outcome)),
                        Err(error) => Answer::Error(error.to_string()),
                    }
                }
                Err(error) => Answer::Error(format!("unreadable request: {error}")),
            };
            let written = serde_json::to_vec(&answer)
                .map_err(std::io::Error::other)
                .and_then(|bytes| {
                    grassroots_store::durable::write_file(
                        &request_path.with_extension("answer"),
                        &bytes,
                    )
                });
            match written {
                Ok(()) => {
                    let _ = std::fs::remove_file(&request_path);
                }
                Err(error) => {
                    tracing::error!(request = %request_path.display(), %error, "cannot answer an import request")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
