//! How slides reach a running edge: the scanner's folder, which the edge watches, and uploads.
//!
//! A scanner writes big files slowly, so a file in the watched folder is taken only once its size
//! and modification time have stayed the same for a settling period. A folder in the watched
//! folder is one multi-file slide (a DICOM series, an MRXS with its data folder), taken once its
//! files, their total size and their newest modification time have all settled. After import it moves to
//! `imported/` (or `failed/`, the reason being on the slide's record) so the folder shows what is
//! left to do. Uploads stream to disk, never whole in memory, and are imported the same way.
//! The watcher imports one file at a time, on a blocking thread; uploads run beside it. A
//! corrupt file fails alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::slides::{ImportOutcome, SlideLibrary, SlideState};
use crate::EdgeError;

/// Imports a file on a blocking thread.
pub async fn import(
    library: &Arc<SlideLibrary>,
    path: PathBuf,
    name: String,
) -> Result<ImportOutcome, EdgeError> {
    let library = library.clone();
    tokio::task::spawn_blocking(move || library.import_named(&path, &name))
        .await
        .map_err(|e| EdgeError::Config(format!("import task failed: {e}")))?
}

fn move_into(dir: &Path, file: &Path) {
    let Some(name) = file.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    if std::fs::create_dir_all(dir).is_ok() {
        // Never overwrite an earlier file of the same name.
        let mut target = dir.join(&name);
        let mut n = 1;
        while target.exists() {
            target = dir.join(format!("{n}-{name}"));
            n += 1;
        }
        if let Err(error) = std::fs::rename(file, &target) {
            tracing::warn!(file = %file.display(), %error, "cannot move an imported file out of the watched folder");
        }
    }
}

/// What must stay the same for a scanner's output to count as complete: bytes, files, and the
/// newest modification time.
type Signature = (u64, u64, Option<SystemTime>);

fn signature(path: &Path, metadata: &std::fs::Metadata) -> Signature {
    if !metadata.is_dir() {
        return (metadata.len(), 1, metadata.modified().ok());
    }
    let mut total = (0, 0, metadata.modified().ok());
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        if let Ok(inner) = entry.metadata() {
            let (bytes, files, modified) = signature(&entry.path(), &inner);
            total.0 += bytes;
            total.1 += files;
            total.2 = total.2.max(modified);
        }
    }
    total
}

/// Watches `dir` until shutdown, importing each file once it has settled.
pub async fn watch_folder(
    library: Arc<SlideLibrary>,
    dir: PathBuf,
    settle: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(dir = %dir.display(), settle_s = settle.as_secs_f64(), "watching the scanner folder");
    let mut candidates: HashMap<PathBuf, (Signature, Instant)> = HashMap::new();
    // Files imported but not moved away (a read-only share): not taken again while unchanged.
    let mut handled: HashMap<PathBuf, Signature> = HashMap::new();
    loop {
        let entries = std::fs::read_dir(&dir)
            .map(|entries| entries.filter_map(Result::ok).collect::<Vec<_>>());
        match entries {
            Ok(entries) => {
                let mut present = Vec::new();
                for entry in entries {
                    let path = entry.path();
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let Ok(metadata) = entry.metadata() else {
                        continue;
                    };
                    // The watcher's own folders for what it has done are not slides.
                    let own = metadata.is_dir() && (name == "imported" || name == "failed");
                    if name.starts_with('.') || own || !(metadata.is_file() || metadata.is_dir()) {
                        continue;
                    }
                    present.push(path.clone());
                    let signature = signature(&path, &metadata);
                    if handled.get(&path) == Some(&signature) || signature.1 == 0 {
                        continue;
                    }
                    let now = Instant::now();
                    let stable_since = match candidates.get(&path) {
                        Some((seen, since)) if *seen == signature => *since,
                        _ => {
                            candidates.insert(path.clone(), (signature, now));
                            continue;
                        }
                    };
                    if now.duration_since(stable_since) < settle {
                        continue;
                    }
                    candidates.remove(&path);
                    match import(&library, path.clone(), name).await {
                        Ok(outcome) => {
                            let record = &outcome.record;
                            let ready = record.state == SlideState::Ready;
                            tracing::info!(file = %path.display(), id = %record.id, ready, duplicate = outcome.duplicate, error = record.error.as_deref().unwrap_or(""), "slide imported from the scanner folder");
                            move_into(&dir.join(if ready { "imported" } else { "failed" }), &path);
                            if path.exists() {
                                handled.insert(path.clone(), signature);
                            }
                        }
                        Err(error) => {
                            tracing::error!(file = %path.display(), %error, "cannot import; will retry")
                        }
                    }
                }
                candidates.retain(|path, _| present.contains(path));
                handled.retain(|path, _| present.contains(path));
            }
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot read the scanner folder")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Streams an upload body to a file under `incoming`, then imports it as `name`.
/// What an upload may use: its size, and the free space it must leave.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    pub max_bytes: u64,
    pub min_free_disk_bytes: u64,
}

/// Whether writing `more` bytes into `dir` would leave less than `keep` free.
fn leaves_too_little(dir: &Path, more: u64, keep: u64) -> Option<String> {
    let free = fs2::available_space(dir).ok()?;
    (free < keep.saturating_add(more)).then(|| {
        format!(
            "the edge's disk is nearly full ({} MiB free, {} MiB kept for its records): free some space first",
            free >> 20,
            keep >> 20
        )
    })
}

/// How often an upload in progress checks the free space again.
const CHECK_DISK_EVERY: u64 = 64 << 20;

pub async fn upload(
    library: &Arc<SlideLibrary>,
    incoming: &Path,
    name: &str,
    body: axum::body::Body,
    limits: UploadLimits,
) -> Result<ImportOutcome, EdgeError> {
    use futures_util::StreamExt;
    let io = |e: std::io::Error| EdgeError::Config(format!("{}: {e}", incoming.display()));
    tokio::fs::create_dir_all(incoming).await.map_err(io)?;
    if let Some(reason) = leaves_too_little(incoming, 0, limits.min_free_disk_bytes) {
        return Err(EdgeError::Config(reason));
    }
    let temp = incoming.join(format!(".upload-{}", rand::random::<u64>()));
    let mut file = tokio::fs::File::create(&temp).await.map_err(io)?;
    let mut stream = body.into_data_stream();
    let written: Result<(), EdgeError> = async {
        let (mut total, mut checked) = (0u64, 0u64);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| EdgeError::Config(format!("upload interrupted: {e}")))?;
            total += chunk.len() as u64;
            if total > limits.max_bytes {
                return Err(EdgeError::Config(format!(
                    "the upload is larger than the {} MiB a slide may be here",
                    limits.max_bytes >> 20
                )));
            }
            if total - checked >= CHECK_DISK_EVERY {
                checked = total;
                if let Some(reason) =
                    leaves_too_little(incoming, CHECK_DISK_EVERY, limits.min_free_disk_bytes)
                {
                    return Err(EdgeError::Config(reason));
                }
            }
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)
    }
    .await;
    drop(file);
    let outcome = match written {
        Ok(()) => import(library, temp.clone(), name.to_string()).await,
        Err(error) => Err(error),
    };
    let _ = tokio::fs::remove_file(&temp).await;
    outcome
}
