//! Screening jobs: every ready slide is screened once with the active model, in the background,
//! in import order, and a killed edge resumes where it stopped.
//!
//! A job's record (table `screening`) holds its state, progress and, when done, the triage. The
//! unit of work that survives a crash is the **part**: each screened part's cells are written to
//! `DATA/screening/SLIDE/MODEL/part-N.bin` (written, fsynced, renamed), tagged with the run
//! that screened it. A restarted job skips every part whose file exists, so no finished tile is
//! classified again; the record's per-run counts show it. When all parts are in, the grid is
//! joined and triaged, the lesion heatmap is kept as a small grey PNG, and the part files go.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use grassroots_models::screening::GridCell;
use grassroots_store::Table;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::{watch, Notify};

use super::active_model::ActiveModel;
use super::{SlideScreener, SlideScreening};
use crate::slides::{SlideLibrary, SlideState};
use crate::{io_error, EdgeError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScreeningJob {
    pub slide_id: String,
    /// Digest of the model package screening it.
    pub model: String,
    pub state: JobState,
    pub parts: u32,
    pub parts_done: u32,
    /// Runs of this job so far (a restart mid-job starts another).
    pub runs: u32,
    /// Parts each run screened (index 0: the first run), counted from the part files when the
    /// job finished: a part screened twice would show under the later run only.
    #[serde(default)]
    pub parts_by_run: Vec<u32>,
    #[serde(with = "time::serde::rfc3339")]
    pub queued_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Seconds the last run took.
    #[serde(default)]
    pub seconds: f64,
    pub error: Option<String>,
    /// While re-screened by a new model: the previous result stays here until the new one
    /// replaces it. The model it came from:
    #[serde(default)]
    pub rescreened_from: Option<String>,
    pub result: Option<SlideScreening>,
}

/// How jobs run.
#[derive(Debug, Clone, Copy)]
pub struct JobOptions {
    /// Grid cells per side of a part (the unit of resumable work).
    pub part_cells: u32,
    /// Threads classifying at once.
    pub workers: usize,
}

pub struct ScreeningJobs {
    table: Table<ScreeningJob>,
    dir: PathBuf,
    library: Arc<SlideLibrary>,
    pub model: Arc<ActiveModel>,
    options: JobOptions,
    wake: Notify,
}

/// The part format: [`PART_MAGIC`] with each cell's tissue density; parts written before it
/// ([`PART_MAGIC_WITHOUT_DENSITY`]) are still read, their cells without one.
const PART_MAGIC: &[u8; 8] = b"GRPART2\n";
const PART_MAGIC_WITHOUT_DENSITY: &[u8; 8] = b"GRPART1\n";

/// Least time between rewrites of the status file while a slide is screened.
const STATUS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// A part's cells: run (u32), cell count (u32), classes (u16), then per cell the tissue share
/// (u16, of 65535), its tissue's optical density (f32, NaN when not measured), whether it was
/// classified (u8) and its probabilities (f32 each).
fn encode_part(run: u32, cells: &[GridCell], classes: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(18 + cells.len() * (7 + 4 * classes));
    bytes.extend_from_slice(PART_MAGIC);
    bytes.extend_from_slice(&run.to_le_bytes());
    bytes.extend_from_slice(&(cells.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&(classes as u16).to_le_bytes());
    for cell in cells {
        let tissue = (cell.tissue.clamp(0.0, 1.0) * 65535.0).round() as u16;
        bytes.extend_from_slice(&tissue.to_le_bytes());
        bytes.extend_from_slice(&cell.density.unwrap_or(f32::NAN).to_le_bytes());
        match &cell.probabilities {
            Some(p) => {
                bytes.push(1);
                for value in p.iter().take(classes) {
                    bytes.extend_from_slice(&value.to_le_bytes());
                }
            }
            None => bytes.push(0),
        }
    }
    bytes
}

fn decode_part(bytes: &[u8]) -> Option<(u32, Vec<GridCell>)> {
    let (rest, with_density) = match bytes.strip_prefix(PART_MAGIC) {
        Some(rest) => (rest, true),
        None => (bytes.strip_prefix(PART_MAGIC_WITHOUT_DENSITY)?, false),
    };
    let u32_at = |at: usize| {
        rest.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (run, count) = (u32_at(0)?, u32_at(4)? as usize);
    let classes = usize::from(u16::from_le_bytes([*rest.get(8)?, *rest.get(9)?]));
    let mut at = 10;
    let mut cells = Vec::with_capacity(count.min(rest.len()));
    for _ in 0..count {
        let tissue = u16::from_le_bytes([*rest.get(at)?, *rest.get(at + 1)?]);
        at += 2;
        let density = if with_density {
            let value = f32::from_bits(u32_at(at)?);
            at += 4;
            value.is_finite().then_some(value)
        } else {
            None
        };
        let classified = *rest.get(at)? == 1;
        at += 1;
        let probabilities = if classified {
            let values = rest.get(at..at + 4 * classes)?;
            at += 4 * classes;
            Some(
                values
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )
        } else {
            None
        };
        cells.push(GridCell {
            tissue: f32::from(tissue) / 65535.0,
            density,
            probabilities,
        });
    }
    (at == rest.len()).then_some((run, cells))
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), EdgeError> {
    grassroots_store::durable::write_file(path, bytes).map_err(io_error(path))
}

impl ScreeningJobs {
    pub fn new(
        data_dir: &Path,
        table: Table<ScreeningJob>,
        library: Arc<SlideLibrary>,
        model: Arc<ActiveModel>,
        options: JobOptions,
    ) -> Self {
        Self {
            table,
            dir: data_dir.join("screening"),
            library,
            model,
            options,
            wake: Notify::new(),
        }
    }

    /// Writes `DATA/screening/status.json`: every job without its result's map, for
    /// `grassroots slide screening` (the store is the edge's alone while it runs). A view only:
    /// written whole and renamed, not fsynced.
    fn write_status(&self) {
        let write = || -> Result<(), EdgeError> {
            let jobs = self.jobs()?;
            let path = self.dir.join("status.json");
            let temp = path.with_extension("tmp");
            let json = serde_json::to_vec_pretty(&jobs)
                .map_err(|e| EdgeError::Config(format!("screening status: {e}")))?;
            std::fs::create_dir_all(&self.dir).map_err(io_error(&self.dir))?;
            std::fs::write(&temp, json).map_err(io_error(&temp))?;
            std::fs::rename(&temp, &path).map_err(io_error(&path))
        };
        if let Err(error) = write() {
            tracing::warn!(%error, "could not write the screening status file");
        }
    }

    /// Looks for work now (a slide was imported, a model installed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn job(&self, slide_id: &str) -> Result<Option<ScreeningJob>, EdgeError> {
        Ok(self.table.get(slide_id)?)
    }

    pub fn jobs(&self) -> Result<Vec<ScreeningJob>, EdgeError> {
        Ok(self.table.entries()?.into_iter().map(|(_, j)| j).collect())
    }

    fn parts_dir(&self, job: &ScreeningJob) -> PathBuf {
        self.dir
            .join(&job.slide_id)
            .join(&job.model[..16.min(job.model.len())])
    }

    fn heatmap_path(&self, slide_id: &str) -> PathBuf {
        self.dir.join(slide_id).join("heatmap.png")
    }

    /// The lesion heatmap of a screened slide: one grey pixel per grid cell.
    pub fn heatmap(&self, slide_id: &str) -> Option<image::GrayImage> {
        image::open(self.heatmap_path(slide_id))
            .ok()
            .map(|i| i.to_luma8())
    }

    /// Queues every ready slide that has no job yet; returns how many were queued.
    pub fn queue_new_slides(&self) -> Result<usize, EdgeError> {
        let Some(model) = self.model.current() else {
            return Ok(0);
        };
        let mut queued = 0;
        for record in self.library.records()? {
            if record.state != SlideState::Ready || self.table.get(&record.id)?.is_some() {
                continue;
            }
            let job = ScreeningJob {
                slide_id: record.id.clone(),
                model: model.digest().to_string(),
                state: JobState::Queued,
                parts: 0,
                parts_done: 0,
                runs: 0,
                parts_by_run: Vec::new(),
                queued_at: OffsetDateTime::now_utc(),
                finished_at: None,
                seconds: 0.0,
                error: None,
                rescreened_from: None,
                result: None,
            };
            if self.table.insert_new_durable(&record.id, &job)? {
                queued += 1;
            }
        }
        if queued > 0 {
            self.write_status();
        }
        Ok(queued)
    }

    /// After a new model is installed: queues again every slide screened (or failed) with
    /// another model that staff have not reviewed — `reviewed` holds the slides with a sign-off
    /// or an expert's answer, whose screening never changes. The previous result stays visible
    /// until the new one replaces it. Returns how many were queued.
    pub fn rescreen_unreviewed(
        &self,
        reviewed: &std::collections::BTreeSet<String>,
    ) -> Result<usize, EdgeError> {
        let Some(model) = self.model.current() else {
            return Ok(0);
        };
        let mut queued = 0;
        for mut job in self.jobs()? {
            let finished = matches!(job.state, JobState::Done | JobState::Failed);
            if !finished || job.model == model.digest() || reviewed.contains(&job.slide_id) {
                continue;
            }
            job.rescreened_from = Some(std::mem::replace(
                &mut job.model,
                model.digest().to_string(),
            ));
            job.state = JobState::Queued;
            job.parts = 0;
            job.parts_done = 0;
            job.error = None;
            job.queued_at = OffsetDateTime::now_utc();
            self.table.put_durable(&job.slide_id, &job)?;
            queued += 1;
        }
        if queued > 0 {
            tracing::info!(
                slides = queued,
                "slides awaiting review queued for the new model"
            );
            self.write_status();
            self.wake();
        }
        Ok(queued)
    }

    /// The oldest job not yet finished (one a crash interrupted comes first: it is oldest).
    fn next_job(&self) -> Result<Option<ScreeningJob>, EdgeError> {
        Ok(self
            .jobs()?
            .into_iter()
            .filter(|j| matches!(j.state, JobState::Queued | JobState::Running))
            .min_by_key(|j| j.queued_at))
    }

    /// Runs one job to the end (or until `stop`). Blocking.
    pub fn run_job(&self, mut job: ScreeningJob, stop: &AtomicBool) -> Result<(), EdgeError> {
        let Some(classifier) = self.model.current() else {
            return Ok(());
        };
        if classifier.digest() != job.model {
            // The model changed while the job waited: screen with the one now active.
            if let Err(error) = std::fs::remove_dir_all(self.parts_dir(&job)) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(%error, "could not remove an old model's screening parts");
                }
            }
            job.model = classifier.digest().to_string();
        }
        let started = std::time::Instant::now();
        job.runs += 1;
        job.state = JobState::Running;
        let run = job.runs;
        self.table.put_durable(&job.slide_id, &job)?;
        let parts_dir = self.parts_dir(&job);
        std::fs::create_dir_all(&parts_dir).map_err(io_error(&parts_dir))?;
        type Finished = Option<(SlideScreening, Vec<u32>)>;
        let outcome = (|| -> Result<Finished, EdgeError> {
            let slide = self
                .library
                .slide(&job.slide_id)
                .map_err(|e| EdgeError::Config(format!("the slide cannot be read: {e}")))?;
            let screener = SlideScreener::new(&slide, &classifier, self.options.part_cells)?;
            let parts = screener.parts();
            let part_path = |index: u32| parts_dir.join(format!("part-{index}.bin"));
            let todo: Vec<u32> = (0..parts).filter(|i| !part_path(*i).exists()).collect();
            job.parts = parts;
            job.parts_done = parts - todo.len() as u32;
            self.table.put(&job.slide_id, &job)?;
            if job.parts_done > 0 {
                tracing::info!(slide = %job.slide_id, done = job.parts_done, parts, "resuming screening");
            }
            let classes = classifier.manifest().classes.len();
            // The status file holds every job: rewritten at most a few times a second, not
            // once per part.
            let mut status_written = std::time::Instant::now();
            screener.run(&todo, self.options.workers, stop, |index, cells| {
                write_durably(&part_path(index), &encode_part(run, &cells, classes))?;
                job.parts_done += 1;
                self.table.put(&job.slide_id, &job)?;
                if status_written.elapsed() >= STATUS_INTERVAL {
                    self.write_status();
                    status_written = std::time::Instant::now();
                }
                Ok(())
            })?;
            if job.parts_done < parts {
                return Ok(None);
            }
            let mut parts_by_run = vec![0u32; run as usize];
            let screening = screener.finish(|index| {
                let path = part_path(index);
                let bytes = std::fs::read(&path).map_err(io_error(&path))?;
                let (part_run, cells) = decode_part(&bytes).ok_or_else(|| {
                    EdgeError::Config(format!("{} is not a screening part", path.display()))
                })?;
                if let Some(count) = parts_by_run.get_mut(part_run.saturating_sub(1) as usize) {
                    *count += 1;
                }
                Ok(cells)
            })?;
            Ok(Some((screening, parts_by_run)))
        })();
        job.seconds = started.elapsed().as_secs_f64();
        let result = self.record_outcome(job, outcome, &parts_dir);
        self.write_status();
        result
    }

    fn record_outcome(
        &self,
        mut job: ScreeningJob,
        outcome: Result<Option<(SlideScreening, Vec<u32>)>, EdgeError>,
        parts_dir: &Path,
    ) -> Result<(), EdgeError> {
        match outcome {
            Ok(None) => {
                // Stopped: the record says where; the next start resumes.
                self.table.put_durable(&job.slide_id, &job)?;
            }
            Ok(Some((screening, parts_by_run))) => {
                let heatmap = image::GrayImage::from_raw(
                    screening.cols,
                    screening.rows,
                    screening.lesion_map.clone(),
                );
                if let Some(heatmap) = heatmap.filter(|h| h.width() > 0 && h.height() > 0) {
                    let mut png = std::io::Cursor::new(Vec::new());
                    heatmap
                        .write_to(&mut png, image::ImageFormat::Png)
                        .map_err(|e| EdgeError::Config(format!("heatmap: {e}")))?;
                    write_durably(&self.heatmap_path(&job.slide_id), &png.into_inner())?;
                }
                tracing::info!(slide = %job.slide_id, class = ?screening.triage.class, score = screening.triage.score, tiles = screening.tiles_classified, seconds = job.seconds, "slide screened");
                job.parts_by_run = parts_by_run;
                job.state = JobState::Done;
                job.finished_at = Some(OffsetDateTime::now_utc());
                job.result = Some(screening);
                self.table.put_durable(&job.slide_id, &job)?;
                let _ = std::fs::remove_dir_all(parts_dir);
            }
            Err(error) => {
                tracing::warn!(slide = %job.slide_id, %error, "screening failed");
                job.state = JobState::Failed;
                job.error = Some(error.to_string());
                job.finished_at = Some(OffsetDateTime::now_utc());
                self.table.put_durable(&job.slide_id, &job)?;
            }
        }
        Ok(())
    }

    /// Screens queued slides one at a time until shutdown; looks for new slides every two
    /// seconds or when woken.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let stop = Arc::new(AtomicBool::new(false));
        loop {
            let jobs = self.clone();
            let flag = stop.clone();
            let mut work = tokio::task::spawn_blocking(move || -> Result<bool, EdgeError> {
                jobs.queue_new_slides()?;
                match jobs.next_job()? {
                    Some(job) => jobs.run_job(job, &flag).map(|_| true),
                    None => Ok(false),
                }
            });
            let busy = tokio::select! {
                done = &mut work => match done {
                    Ok(Ok(busy)) => busy,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "screening jobs");
                        false
                    }
                    Err(error) => {
                        tracing::error!(%error, "screening thread failed");
                        false
                    }
                },
                _ = shutdown.changed() => {
                    // Let the running part finish and be recorded, then stop.
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    let _ = work.await;
                    return;
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The jobs as the edge of `data_dir` last wrote them (`DATA/screening/status.json`), in
/// import order; none when the edge has screened nothing yet.
pub fn read_status(data_dir: &Path) -> Result<Vec<ScreeningJob>, EdgeError> {
    let path = data_dir.join("screening").join("status.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let mut jobs: Vec<ScreeningJob> = serde_json::from_slice(&bytes)
                .map_err(|e| EdgeError::Config(format!("{}: {e}", path.display())))?;
            jobs.sort_by_key(|j| j.queued_at);
            Ok(jobs)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(io_error(&path)(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_and_truncated_parts_are_rejected() {
        let cells = vec![
            GridCell {
                tissue: 0.5,
                density: Some(0.42),
                probabilities: Some(vec![0.1, 0.2, 0.7]),
            },
            GridCell {
                tissue: 0.0,
                density: None,
                probabilities: None,
            },
        ];
        let bytes = encode_part(3, &cells, 3);
        let (run, decoded) = decode_part(&bytes).unwrap();
        assert_eq!(run, 3);
        assert_eq!(decoded[0].probabilities, cells[0].probabilities);
        assert!((decoded[0].tissue - 0.5).abs() < 1e-4);
        assert_eq!(decoded[0].density, Some(0.42));
        assert_eq!(decoded[1].probabilities, None);
        assert_eq!(decoded[1].density, None);
        // A part written before densities were kept (an edge upgraded mid-slide) still reads.
        let mut old = PART_MAGIC_WITHOUT_DENSITY.to_vec();
        old.extend_from_slice(&7u32.to_le_bytes());
        old.extend_from_slice(&1u32.to_le_bytes());
        old.extend_from_slice(&2u16.to_le_bytes());
        old.extend_from_slice(&65535u16.to_le_bytes());
        old.push(1);
        old.extend_from_slice(&0.25f32.to_le_bytes());
        old.extend_from_slice(&0.75f32.to_le_bytes());
        let (run, decoded) = decode_part(&old).unwrap();
        assert_eq!((run, decoded[0].density), (7, None));
        assert_eq!(decoded[0].probabilities, Some(vec![0.25, 0.75]));
        assert!(decode_part(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode_part(b"GRPART2\n").is_none());
    }
}
