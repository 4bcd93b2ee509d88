//! The edge's slide library: import, records, and tiles for the viewer.
//!
//! Import copies a file into `DATA/slides/` under its BLAKE3 id (so a second copy of the same
//! slide is recognised), opens it, and records it as ready with its metadata or failed with the
//! reason — durably, before saying so. Tiles are rendered on a bounded pool of blocking threads
//! (never on the async workers) and kept in an in-memory cache with a byte budget. Slides never
//! change, so a tile's ETag is its address and browsers may keep it for a year.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use grassroots_slides::{Slide, SlideError, SlideInfo, TileFormat};
use grassroots_store::Table;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::EdgeError;

/// JPEG quality of rendered tiles (openslide-python's deepzoom_server default).
pub const TILE_QUALITY: u8 = 75;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SlideState {
    Ready,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SlideRecord {
    pub id: String,
    pub original_name: String,
    pub file_name: String,
    pub size: u64,
    pub state: SlideState,
    /// Why the slide failed (corrupt, truncated, unsupported...).
    pub error: Option<String>,
    pub info: Option<SlideInfo>,
    #[serde(with = "time::serde::rfc3339")]
    pub imported_at: OffsetDateTime,
    /// What the label says, when it was read.
    #[serde(default)]
    pub label: Option<crate::cases::LabelReading>,
    /// The case the slide belongs to (pathology number), and how that was decided.
    #[serde(default)]
    pub case_number: Option<String>,
    #[serde(default)]
    pub case_source: Option<crate::cases::LinkSource>,
}

/// What an import did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportOutcome {
    pub record: SlideRecord,
    /// The same bytes had been imported before.
    pub duplicate: bool,
}

/// A rendered image's address: the tile path or the IIIF request path.
type TileKey = String;

/// Rendered tiles, least recently used evicted first, within a byte budget.
struct TileCache {
    entries: lru::LruCache<TileKey, bytes::Bytes>,
    bytes: usize,
    budget: usize,
}

impl TileCache {
    fn get(&mut self, key: &TileKey) -> Option<bytes::Bytes> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: TileKey, tile: bytes::Bytes) {
        self.bytes += tile.len();
        if let Some(old) = self.entries.put(key, tile) {
            self.bytes -= old.len();
        }
        while self.bytes > self.budget {
            match self.entries.pop_lru() {
                Some((_, evicted)) => self.bytes -= evicted.len(),
                None => break,
            }
        }
    }
}

struct InflightGuard {
    library: Arc<SlideLibrary>,
    key: TileKey,
    cell: Arc<tokio::sync::OnceCell<Option<bytes::Bytes>>>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut inflight = lock(&self.library.inflight);
        if inflight
            .get(&self.key)
            .is_some_and(|cell| Arc::ptr_eq(cell, &self.cell))
        {
            inflight.remove(&self.key);
        }
    }
}

/// Slides kept open at once (each holds file descriptors and OpenSlide's cache).
const MAX_OPEN_SLIDES: usize = 32;

/// An import under way.
#[derive(Debug, Clone, Serialize)]
pub struct ImportProgress {
    pub name: String,
    pub copied: u64,
    pub total: u64,
}

pub struct SlideLibrary {
    dir: PathBuf,
    cases: crate::cases::CaseLinker,
    importing: Mutex<HashMap<String, ImportProgress>>,
    opening: Mutex<()>,
    linking: Mutex<()>,
    inflight: Mutex<HashMap<TileKey, Arc<tokio::sync::OnceCell<Option<bytes::Bytes>>>>>,
    records: Table<SlideRecord>,
    open: Mutex<lru::LruCache<String, Arc<Slide>>>,
    tiles: Mutex<TileCache>,
    renders: Arc<tokio::sync::Semaphore>,
}

/// Keeps `slide` open; the least recently used slide is closed when too many are open.
fn remember_open(open: &Mutex<lru::LruCache<String, Arc<Slide>>>, id: &str, slide: Arc<Slide>) {
    lock(open).put(id.to_string(), slide);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves its data consistent; a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The files a slide import copies, relative to `source`, with their sizes: the file itself, or
/// every visible file under a directory (a DICOM series, or an MRXS index with its data folder).
fn slide_files(source: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let metadata = std::fs::metadata(source)?;
    if !metadata.is_dir() {
        return Ok(vec![(PathBuf::new(), metadata.len())]);
    }
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(source.join(&relative))? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type()?;
            let path = relative.join(entry.file_name());
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                files.push((path, entry.metadata()?.len()));
            }
        }
    }
    if files.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the folder holds no files",
        ));
    }
    files.sort();
    Ok(files)
}

/// Removes a file or a directory tree, if there is one.
fn remove_path(path: &Path) {
    let _ = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
}

/// Why a tile could not be served.
#[derive(Debug, thiserror::Error)]
pub enum TileError {
    #[error("no slide {0}")]
    NoSuchSlide(String),
    #[error("slide {id} failed to import: {reason}")]
    SlideFailed { id: String, reason: String },
    #[error(transparent)]
    Slide(#[from] SlideError),
    #[error("tile rendering was interrupted: {0}")]
    Interrupted(String),
    #[error(transparent)]
    Store(#[from] grassroots_store::StoreError),
    #[error(transparent)]
    Iiif(#[from] grassroots_slides::iiif::IiifError),
}

/// The reason recorded for a slide whose opening the edge did not survive.
pub const CRASHED_WHILE_OPENING: &str =
    "the edge stopped while opening this slide (the file may be \
    crafted or corrupt); it was not opened again. Import it again to retry";

impl SlideLibrary {
    pub fn open(
        data_dir: &Path,
        cases: crate::cases::CaseLinker,
        records: Table<SlideRecord>,
        cache_budget_bytes: usize,
        render_threads: usize,
    ) -> Result<Self, EdgeError> {
        let dir = data_dir.join("slides");
        std::fs::create_dir_all(&dir)
            .map_err(|e| EdgeError::Config(format!("{}: {e}", dir.display())))?;
        // Imports and uploads interrupted by a crash leave temporary files: nothing refers to them.
        for folder in [dir.clone(), data_dir.join("incoming")] {
            if let Ok(entries) = std::fs::read_dir(&folder) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with(".import-") || name.starts_with(".upload-") {
                        let _ = match entry.file_type() {
                            Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(entry.path()),
                            _ => std::fs::remove_file(entry.path()),
                        };
                    }
                }
            }
        }
        Ok(Self {
            dir,
            cases,
            importing: Mutex::new(HashMap::new()),
            opening: Mutex::new(()),
            linking: Mutex::new(()),
            inflight: Mutex::new(HashMap::new()),
            records,
            open: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(MAX_OPEN_SLIDES).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            tiles: Mutex::new(TileCache {
                entries: lru::LruCache::unbounded(),
                bytes: 0,
                budget: cache_budget_bytes,
            }),
            renders: Arc::new(tokio::sync::Semaphore::new(render_threads.max(1))),
        })
    }

    pub fn records(&self) -> Result<Vec<SlideRecord>, EdgeError> {
        let mut rows: Vec<SlideRecord> = self
            .records
            .entries()?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.imported_at));
        Ok(rows)
    }

    pub fn record(&self, id: &str) -> Result<Option<SlideRecord>, EdgeError> {
        Ok(self.records.get(id)?)
    }

    /// Imports a file (blocking: call from a blocking thread). A file that is not a readable
    /// slide becomes a failed record with the reason; only I/O and store errors are errors.
    pub fn import(&self, source: &Path) -> Result<ImportOutcome, EdgeError> {
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.import_named(source, &name)
    }

    /// Imports `source` under the name the user knows it by (an upload's original name); its
    /// progress shows in [`SlideLibrary::imports_in_progress`] meanwhile.
    pub fn import_named(
        &self,
        source: &Path,
        original_name: &str,
    ) -> Result<ImportOutcome, EdgeError> {
        let total = slide_files(source)
            .map(|files| files.iter().map(|(_, size)| size).sum())
            .unwrap_or(0);
        let key = format!("{original_name}#{}", rand::random::<u32>());
        lock(&self.importing).insert(
            key.clone(),
            ImportProgress {
                name: original_name.to_string(),
                copied: 0,
                total,
            },
        );
        let outcome = self.import_inner(source, original_name, &key);
        lock(&self.importing).remove(&key);
        outcome
    }

    fn read_label(&self, slide: &Slide) -> Option<crate::cases::LabelReading> {
        let jpeg = slide.associated_image("label").ok()?;
        let image = image::load_from_memory(&jpeg).ok()?.to_rgb8();
        self.cases.read_label(&image)
    }

    pub fn cases(&self) -> &crate::cases::CaseLinker {
        &self.cases
    }

    /// Links a slide to a case by hand (or re-links it), durably.
    pub fn link_case(&self, id: &str, number: &str) -> Result<SlideRecord, EdgeError> {
        // One re-link at a time, so that a slide never ends up listed in two cases.
        let _linking = lock(&self.linking);
        let number = number.trim();
        if number.is_empty() || number.len() > 64 {
            return Err(EdgeError::Config(
                "a pathology number must have 1 to 64 characters".into(),
            ));
        }
        let record = self
            .records
            .get(id)?
            .ok_or_else(|| EdgeError::Config(format!("no slide {id}")))?;
        if let Some(previous) = &record.case_number {
            self.cases.detach(previous, id)?;
        }
        self.cases.attach(number, id)?;
        let updated = self.records.update(id, |record| {
            record.map(|mut record| {
                record.case_number = Some(number.to_string());
                record.case_source = Some(crate::cases::LinkSource::Manual);
                record
            })
        })?;
        self.records.flush()?;
        updated.ok_or_else(|| EdgeError::Config(format!("no slide {id}")))
    }

    /// Imports under way: name, bytes copied, total bytes.
    pub fn imports_in_progress(&self) -> Vec<ImportProgress> {
        lock(&self.importing).values().cloned().collect()
    }

    fn import_inner(
        &self,
        source: &Path,
        original_name: &str,
        progress_key: &str,
    ) -> Result<ImportOutcome, EdgeError> {
        let io = |e: std::io::Error| EdgeError::Config(format!("{}: {e}", source.display()));
        let extension = Path::new(original_name)
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let temp = self.dir.join(format!(
            ".import-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let files = slide_files(source).map_err(io)?;
        let directory = source.is_dir();
        let mut hasher = blake3::Hasher::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut size = 0u64;
        for (relative, _) in &files {
            let destination = if directory {
                // A multi-file slide: names and contents both make its identity.
                hasher.update(relative.to_string_lossy().as_bytes());
                hasher.update(&[0]);
                temp.join(relative)
            } else {
                temp.clone()
            };
            if let Some(parent) = destination.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            let input_path = if directory {
                source.join(relative)
            } else {
                source.to_path_buf()
            };
            let mut input = std::fs::File::open(input_path).map_err(io)?;
            let mut output = std::fs::File::create(&destination).map_err(io)?;
            loop {
                let read = input.read(&mut buffer).map_err(io)?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
                output.write_all(&buffer[..read]).map_err(io)?;
                size += read as u64;
                if let Some(progress) = lock(&self.importing).get_mut(progress_key) {
                    progress.copied = size;
                }
            }
            output.sync_all().map_err(io)?;
        }
        if directory {
            // The folders' entries must be as durable as the files in them: every folder from
            // each file's up to the copy's root, once each.
            let folders: std::collections::BTreeSet<PathBuf> = files
                .iter()
                .flat_map(|(relative, _)| {
                    relative
                        .ancestors()
                        .skip(1)
                        .map(|folder| temp.join(folder))
                        .collect::<Vec<_>>()
                })
                .collect();
            for folder in folders {
                std::fs::File::open(&folder)
                    .and_then(|f| f.sync_all())
                    .map_err(io)?;
            }
        }
        let id = hasher.finalize().to_hex().to_string();
        let previous = self.records.get(&id)?;
        if let Some(existing) = previous.clone().filter(|r| r.state == SlideState::Ready) {
            remove_path(&temp);
            return Ok(ImportOutcome {
                record: existing,
                duplicate: true,
            });
        }
        // A slide that failed before (perhaps for a passing reason) is tried again.
        // OpenSlide recognises some formats by extension: keep it.
        let file_name = if extension.is_empty() || directory {
            id.clone()
        } else {
            format!("{id}.{extension}")
        };
        let target = self.dir.join(&file_name);
        if directory {
            // An earlier failed import of the same slide: replaced by this copy.
            remove_path(&target);
        }
        std::fs::rename(&temp, &target).map_err(io)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        // Opening runs a slide reader (OpenSlide's C included) over untrusted bytes. A marker,
        // durable before the first byte is parsed, makes a slide that kills the process fail
        // once: the replay after the restart (watched folder, import queue) finds the marker
        // and records the failure instead of opening the slide again.
        let marker = self.dir.join(format!(".opening-{id}"));
        let crashed_before = marker.exists();
        if !crashed_before {
            grassroots_store::durable::write_file(&marker, original_name.as_bytes()).map_err(io)?;
        }
        let mut label = None;
        let opened = if crashed_before {
            tracing::error!(slide = %id, name = original_name, "the edge stopped while opening this slide last time: recording it as failed");
            Err(CRASHED_WHILE_OPENING.to_string())
        } else {
            Slide::open(&target).map_err(|error| error.to_string())
        };
        let (state, info, error) = match opened {
            Ok(slide) => {
                let info = slide.info().clone();
                label = self.read_label(&slide);
                remember_open(&self.open, &id, Arc::new(slide));
                (SlideState::Ready, Some(info), None)
            }
            // Name the file as the user knows it, not by its place in the store.
            Err(error) => {
                let reason = error.replace(&target.display().to_string(), original_name);
                (SlideState::Failed, None, Some(reason))
            }
        };
        let case_number = label.as_ref().and_then(|l| self.cases.automatic_link(l));
        if let Some(number) = &case_number {
            self.cases.attach(number, &id)?;
        }
        let record = SlideRecord {
            id: id.clone(),
            original_name: original_name.to_string(),
            file_name,
            size,
            state,
            error,
            info,
            imported_at: OffsetDateTime::now_utc(),
            case_source: case_number
                .as_ref()
                .map(|_| crate::cases::LinkSource::Label),
            case_number,
            label,
        };
        let recorded = if previous.is_some() {
            self.records.put_durable(&id, &record).map(|()| true)
        } else {
            self.records.insert_new_durable(&id, &record)
        };
        // The outcome is on record (or another import's is): the next import of these bytes,
        // by hand, opens them afresh.
        let _ = std::fs::remove_file(&marker);
        if !recorded? {
            // The same bytes were imported concurrently and recorded first: that record stands.
            let existing = self.records.get(&id)?.unwrap_or(record);
            return Ok(ImportOutcome {
                record: existing,
                duplicate: true,
            });
        }
        Ok(ImportOutcome {
            record,
            duplicate: false,
        })
    }

    /// The record of a slide that can be viewed, with its metadata; an unknown slide or one that
    /// failed to import is an error saying which.
    pub fn ready_record(&self, id: &str) -> Result<(SlideRecord, SlideInfo), TileError> {
        let record = self
            .records
            .get(id)?
            .ok_or_else(|| TileError::NoSuchSlide(id.to_string()))?;
        match (&record.state, record.info.clone()) {
            (SlideState::Ready, Some(info)) => Ok((record, info)),
            _ => Err(TileError::SlideFailed {
                id: id.to_string(),
                reason: record.error.unwrap_or_default(),
            }),
        }
    }

    /// The open slide for `id` (opened on first use, shared by tile serving and screening).
    pub(crate) fn slide(&self, id: &str) -> Result<Arc<Slide>, TileError> {
        if let Some(slide) = lock(&self.open).get(id).cloned() {
            return Ok(slide);
        }
        let (record, _) = self.ready_record(id)?;
        // One opener at a time, so that a burst of first requests opens the slide once.
        let _opening = lock(&self.opening);
        if let Some(slide) = lock(&self.open).get(id).cloned() {
            return Ok(slide);
        }
        let slide = Arc::new(Slide::open(&self.dir.join(&record.file_name))?);
        remember_open(&self.open, id, slide.clone());
        Ok(slide)
    }

    /// The `.dzi` descriptor of a slide.
    pub async fn dzi(self: &Arc<Self>, id: &str) -> Result<String, TileError> {
        let library = self.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || Ok(library.slide(&id)?.dzi(TileFormat::Jpeg)))
            .await
            .map_err(|e| TileError::Interrupted(e.to_string()))?
    }

    /// An associated image (label, macro, thumbnail) as JPEG.
    pub async fn associated(self: &Arc<Self>, id: &str, name: &str) -> Result<Vec<u8>, TileError> {
        let library = self.clone();
        let (id, name) = (id.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || Ok(library.slide(&id)?.associated_image(&name)?))
            .await
            .map_err(|e| TileError::Interrupted(e.to_string()))?
    }

    /// A rendered tile, from the cache or rendered on the blocking pool.
    pub async fn tile(
        self: &Arc<Self>,
        id: &str,
        level: u32,
        col: u32,
        row: u32,
        format: TileFormat,
    ) -> Result<bytes::Bytes, TileError> {
        let key = format!("{id}/{level}/{col}_{row}.{}", format.extension());
        self.cached_render(key, id, move |slide| {
            slide.tile(level, col, row, format, TILE_QUALITY)
        })
        .await
    }

    /// An IIIF image request (`region/size/rotation/quality.format` of the slide at full
    /// resolution), rendered like a tile and cached the same way.
    pub async fn iiif(
        self: &Arc<Self>,
        id: &str,
        path: [&str; 4],
    ) -> Result<bytes::Bytes, TileError> {
        let (_, info) = self.ready_record(id)?;
        let [region, size, rotation, file] = path;
        let request = grassroots_slides::iiif::parse_request(
            region,
            size,
            rotation,
            file,
            info.width,
            info.height,
        )?;
        let key = format!("iiif:{id}/{region}/{size}/{rotation}/{file}");
        self.cached_render(key, id, move |slide| {
            slide.region(request.region, request.size, request.format, TILE_QUALITY)
        })
        .await
    }

    /// Serves `key` from the cache, or renders it on the bounded blocking pool and caches it.
    /// Concurrent requests for the same image share one rendering.
    async fn cached_render(
        self: &Arc<Self>,
        key: TileKey,
        id: &str,
        render: impl FnOnce(&Slide) -> Result<Vec<u8>, SlideError> + Clone + Send + 'static,
    ) -> Result<bytes::Bytes, TileError> {
        if let Some(tile) = lock(&self.tiles).get(&key) {
            return Ok(tile);
        }
        let cell = lock(&self.inflight).entry(key.clone()).or_default().clone();
        // Removes this rendering from the in-flight map however this request ends (also when
        // the client goes away mid-render), and never a newer rendering of the same key.
        let _inflight = InflightGuard {
            library: self.clone(),
            key: key.clone(),
            cell: cell.clone(),
        };
        let mut own_error = None;
        let shared = cell
            .get_or_init(|| async {
                match self.render_now(key.clone(), id, render.clone()).await {
                    Ok(tile) => Some(tile),
                    Err(error) => {
                        own_error = Some(error);
                        None
                    }
                }
            })
            .await
            .clone();
        match (shared, own_error) {
            (Some(tile), _) => Ok(tile),
            (None, Some(error)) => Err(error),
            // Another request's rendering failed: render for ourselves to get our own error.
            (None, None) => self.render_now(key, id, render).await,
        }
    }

    async fn render_now(
        self: &Arc<Self>,
        key: TileKey,
        id: &str,
        render: impl FnOnce(&Slide) -> Result<Vec<u8>, SlideError> + Send + 'static,
    ) -> Result<bytes::Bytes, TileError> {
        // The permit moves into the blocking task: it is held for as long as the rendering
        // really runs, even if the request that started it is gone.
        let permit = self
            .renders
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| TileError::Interrupted(e.to_string()))?;
        let library = self.clone();
        let id = id.to_string();
        let tile = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            render(library.slide(&id)?.as_ref()).map_err(TileError::from)
        })
        .await
        .map_err(|e| TileError::Interrupted(e.to_string()))??;
        let tile = bytes::Bytes::from(tile);
        lock(&self.tiles).put(key, tile.clone());
        Ok(tile)
    }
}
