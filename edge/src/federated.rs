//! The edge's part in federated rounds: take the hub's task, train on this site's labels when
//! the box is idle, and send back only the change to the model.
//!
//! A task is recorded durably before its transfer is acknowledged. The worker takes pending
//! tasks in order and trains only if the edge takes part (`--federated-opt-out` says no), the
//! deadline has not passed and the edge runs the round's base version; otherwise the task is
//! skipped with the reason (shown on `/federated`), and the hub drops the site at the deadline.
//! Training runs on one thread of its own at the lowest CPU priority and pauses whenever staff
//! viewed a slide in the last few seconds: serving people comes first. The update (optionally
//! clipped and noised for differential privacy, then compressed with error feedback) is written
//! durably and queued in the outbox, which delivers it once. A task found mid-training after a
//! crash is trained again from the start (seeded, so the same update), or skipped if its
//! deadline passed: the edge rejoins or is dropped cleanly.
//!
//! What leaves the edge is the `round-update` blob: a header of numbers and the values' change.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grassroots_models::federated::compress::{self, Encoding};
use grassroots_models::federated::{privacy, train_local, LocalTrainingConfig, Parameters};
use grassroots_store::Table;
use grassroots_wire::federated::{
    encode_update, RoundTask, UpdateEncoding, UpdateHeader, ROUND_UPDATE_LABEL,
};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::secure_rounds::SecureParticipation;
use crate::{EdgeError, EdgeState};

/// Tiles cut per label in a round.
const TILES_PER_LABEL: usize = 48;
/// Fewer training tiles than this and the edge sits the round out.
pub const MIN_TRAINING_TILES: usize = 32;
/// Staff activity within this many seconds pauses training.
const QUIET_SECONDS: i64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Participation {
    Pending,
    Training,
    /// Trained in a secure round: waiting for the round's masks before sending.
    Trained,
    Sent,
    Skipped,
}

/// One round as this edge lived it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundRecord {
    pub task: RoundTask,
    pub state: Participation,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Why it was skipped, or what was sent.
    pub detail: Option<String>,
    pub samples: Option<u64>,
    pub training_seconds: Option<f64>,
    pub update_bytes: Option<u64>,
    /// With secure aggregation: this edge's keys and the round's relayed state.
    #[serde(default)]
    pub secure: Option<SecureParticipation>,
}

/// When staff last viewed a slide (unix seconds), set by the tile routes.
#[derive(Debug, Default)]
pub struct StaffActivity(AtomicI64);

impl StaffActivity {
    pub fn touch(&self) {
        self.0.store(
            OffsetDateTime::now_utc().unix_timestamp(),
            Ordering::Relaxed,
        );
    }

    fn quiet(&self) -> bool {
        OffsetDateTime::now_utc().unix_timestamp() - self.0.load(Ordering::Relaxed) > QUIET_SECONDS
    }
}

pub struct FederatedParticipant {
    rounds: Table<RoundRecord>,
    dir: PathBuf,
    pub opt_out: bool,
    pub activity: Arc<StaffActivity>,
    /// One change to a round's record at a time: training and the secure steps both write.
    lock: std::sync::Mutex<()>,
    /// Told when a task arrives (the training worker), and when a secure round has something
    /// to do (the secure steps), so neither waits for its next tick.
    pub(crate) wake: tokio::sync::Notify,
    pub(crate) secure_wake: tokio::sync::Notify,
}

fn key(round: u64) -> String {
    format!("{round:020}")
}

fn fail(reason: impl Into<String>) -> EdgeError {
    EdgeError::Config(reason.into())
}

impl FederatedParticipant {
    pub fn open(
        data_dir: &std::path::Path,
        rounds: Table<RoundRecord>,
        opt_out: bool,
    ) -> Result<Self, EdgeError> {
        let dir = data_dir.join("federated");
        std::fs::create_dir_all(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
        // A task a crash left mid-training is trained again.
        for (k, mut record) in rounds.entries()? {
            if record.state == Participation::Training {
                record.state = Participation::Pending;
                rounds.put_durable(&k, &record)?;
            }
        }
        Ok(Self {
            rounds,
            dir,
            opt_out,
            activity: Arc::new(StaffActivity::default()),
            lock: std::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            secure_wake: tokio::sync::Notify::new(),
        })
    }

    /// Records a task from the hub (durably, before the transfer is acknowledged). A task
    /// already held is not taken twice.
    pub fn take_task(&self, bytes: &[u8]) -> Result<(), EdgeError> {
        let task =
            RoundTask::from_json(bytes).map_err(|e| fail(format!("round task refused: {e}")))?;
        let record = RoundRecord {
            task: task.clone(),
            state: Participation::Pending,
            received_at: OffsetDateTime::now_utc(),
            finished_at: None,
            detail: None,
            samples: None,
            training_seconds: None,
            update_bytes: None,
            // An edge that opted out neither trains nor advertises keys for the round.
            secure: (task.secure_aggregation && !self.opt_out).then(SecureParticipation::new),
        };
        if self.rounds.insert_new_durable(&key(task.round), &record)? {
            tracing::info!(round = task.round, "federated round task received");
            self.wake.notify_one();
            self.secure_wake.notify_one();
        }
        Ok(())
    }

    pub fn records(&self) -> Result<Vec<RoundRecord>, EdgeError> {
        let mut rows: Vec<RoundRecord> =
            self.rounds.entries()?.into_iter().map(|(_, r)| r).collect();
        rows.reverse();
        Ok(rows)
    }

    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Where a secure round's trained update waits, unmasked, for the round's masks: this
    /// site's own disk only.
    pub(crate) fn plain_update_path(&self, round: u64) -> PathBuf {
        self.dir.join(format!("round-{round}.plain"))
    }

    /// Changes round `round`'s record under the lock, writing it when `change` says it changed.
    pub(crate) fn modify(
        &self,
        round: u64,
        change: impl FnOnce(&mut RoundRecord) -> Result<bool, EdgeError>,
    ) -> Result<(), EdgeError> {
        // Every change is written whole before the guard drops: a poisoned lock is still usable.
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut record) = self.rounds.get(&key(round))? else {
            return Err(fail(format!("no task for round {round}")));
        };
        if change(&mut record)? {
            self.rounds.put_durable(&key(round), &record)?;
        }
        Ok(())
    }

    /// Secure rounds that may still need a step from this edge.
    pub(crate) fn secure_in_progress(&self) -> Result<Vec<RoundRecord>, EdgeError> {
        Ok(self
            .rounds
            .entries()?
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| {
                r.secure.as_ref().is_some_and(|s| !s.reveal_queued)
                    && r.state != Participation::Skipped
                    && !deadline_passed_by(&r.task, 3600)
            })
            .collect())
    }

    pub(crate) fn finish(
        &self,
        round: u64,
        state: Participation,
        detail: String,
    ) -> Result<(), EdgeError> {
        tracing::info!(round, ?state, %detail, "federated round");
        self.modify(round, |record| {
            record.state = state;
            record.detail = Some(detail);
            record.finished_at = Some(OffsetDateTime::now_utc());
            Ok(true)
        })
    }

    fn next_pending(&self) -> Result<Option<RoundRecord>, EdgeError> {
        Ok(self
            .rounds
            .entries()?
            .into_iter()
            .map(|(_, r)| r)
            .find(|r| r.state == Participation::Pending))
    }
}

pub(crate) fn deadline_passed(task: &RoundTask) -> bool {
    deadline_passed_by(task, 0)
}

/// Whether the task's deadline passed more than `seconds` ago.
fn deadline_passed_by(task: &RoundTask, seconds: i64) -> bool {
    OffsetDateTime::parse(
        &task.deadline,
        &time::format_description::well_known::Rfc3339,
    )
    .map(|deadline| OffsetDateTime::now_utc() > deadline + time::Duration::seconds(seconds))
    .unwrap_or(true)
}

fn lowest_priority() {
    // SAFETY: setpriority(2) on this thread's own id changes only its scheduling priority.
    unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, 19);
    }
}

/// The fixed training set of `--federated-training-tiles`, checked against the model's input.
fn fixed_tiles(
    path: &std::path::Path,
    width: u32,
) -> Result<Vec<grassroots_models::training::dataset::LabelledTile>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (tiles, edge) = grassroots_models::federated::validation::read(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if edge != width {
        return Err(format!(
            "{}: tiles of {edge} px; the model reads {width} px",
            path.display()
        ));
    }
    Ok(tiles)
}

/// Trains for `record` and writes the update; the outcome's detail, or why it was skipped.
fn train_round(
    state: &EdgeState,
    record: &RoundRecord,
    stop: &AtomicBool,
) -> Result<(UpdateHeader, Vec<u8>), String> {
    let task = &record.task;
    let package = state
        .screening
        .model
        .active_package()
        .ok_or("no screening model is active")?;
    let digest = blake3::hash(&package.1).to_hex().to_string();
    if digest != task.base_digest {
        return Err("this edge runs another model version than the round's base".into());
    }
    let manifest = &package.0.manifest;
    let tiles = match &state.config.federated_training_tiles {
        Some(path) => fixed_tiles(path, manifest.input.width)?,
        None => {
            let referrals = state.referrals.list().map_err(|e| e.to_string())?;
            let labels = state.labels.all(&referrals).map_err(|e| e.to_string())?;
            let (tiles, cut) = crate::training_tiles::cut(
                &state.slides,
                &labels,
                manifest.input.width,
                manifest.microns_per_pixel,
                TILES_PER_LABEL,
                task.seed,
                true,
            )
            .map_err(|e| e.to_string())?;
            if tiles.len() < MIN_TRAINING_TILES {
                return Err(format!(
                    "only {} training tiles from {} labels (at least {MIN_TRAINING_TILES} needed)",
                    tiles.len(),
                    labels.iter().filter(|l| !l.withdrawn).count()
                ));
            }
            tracing::debug!(?cut, "training tiles cut from the site's labels");
            tiles
        }
    };
    tracing::info!(
        round = task.round,
        tiles = tiles.len(),
        "training for a federated round"
    );
    let global = Parameters::from_onnx(&package.0.graph).map_err(|e| e.to_string())?;
    let config = LocalTrainingConfig {
        epochs: task.epochs as usize,
        batch: task.batch as usize,
        learning_rate: task.learning_rate,
        proximal_mu: task.proximal_mu,
        seed: task.seed,
    };
    let activity = state.federated.activity.clone();
    let started = std::time::Instant::now();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .start_handler(|_| lowest_priority())
        .build()
        .map_err(|e| e.to_string())?;
    let mut update = pool
        .install(|| {
            train_local(&global, tiles, manifest.input.width, &config, || {
                // Serving people comes first: wait while staff are viewing.
                while !activity.quiet() {
                    if stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                !stop.load(Ordering::Relaxed)
            })
        })
        .map_err(|e| e.to_string())?;
    let training_seconds = started.elapsed().as_secs_f64();
    if let (Some(clip), Some(noise)) = (task.clip_norm, task.noise_multiplier) {
        let mut rng = rand::rngs::StdRng::from_entropy();
        privacy::clip_and_noise(&mut update.delta, clip, noise, task.participants, &mut rng);
    }
    let sizes: Vec<usize> = global
        .layout
        .iter()
        .map(|t| t.dims.iter().product())
        .collect();
    let header = UpdateHeader {
        round: task.round,
        base_digest: task.base_digest.clone(),
        samples: update.samples,
        mean_loss: update.mean_loss,
        encoding: UpdateEncoding::F32,
        values: update.delta.len() as u64,
        tensor_sizes: sizes.iter().map(|s| *s as u64).collect(),
        training_seconds,
    };
    if task.secure_aggregation {
        // Masked later in full (fixed point): no compression, no residual.
        let payload = update.delta.iter().flat_map(|v| v.to_le_bytes()).collect();
        return Ok((header, payload));
    }
    let encoding = match task.encoding {
        UpdateEncoding::F32 => Encoding::F32,
        UpdateEncoding::F16 => Encoding::F16,
        UpdateEncoding::Int8 => Encoding::Int8,
        UpdateEncoding::Masked => return Err("a masked encoding without secure aggregation".into()),
    };
    // Error feedback: what rounding lost last round goes into this one.
    let residual_path = state.federated.dir.join("residual.f32");
    let mut residual: Vec<f32> = std::fs::read(&residual_path)
        .map(|b| {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .unwrap_or_default();
    let payload = compress::encode(&update.delta, &sizes, encoding, &mut residual)
        .map_err(|e| e.to_string())?;
    let residual_bytes: Vec<u8> = residual.iter().flat_map(|v| v.to_le_bytes()).collect();
    grassroots_store::durable::write_file(&residual_path, &residual_bytes)
        .map_err(|e| e.to_string())?;
    Ok((
        UpdateHeader {
            encoding: task.encoding,
            ..header
        },
        payload,
    ))
}

/// Takes pending tasks one at a time until shutdown.
pub async fn run(state: Arc<EdgeState>, mut shutdown: watch::Receiver<bool>) {
    let stop = Arc::new(AtomicBool::new(false));
    loop {
        let pending = state.federated.next_pending();
        if let Ok(Some(record)) = pending {
            let round = record.task.round;
            let skip = if state.federated.opt_out {
                Some("this edge opted out of federated learning".to_string())
            } else if deadline_passed(&record.task) {
                Some("the round's deadline passed before training".to_string())
            } else {
                None
            };
            if let Some(reason) = skip {
                let _ = state
                    .federated
                    .finish(round, Participation::Skipped, reason);
                continue;
            }
            let training = state.federated.modify(round, |r| {
                r.state = Participation::Training;
                Ok(true)
            });
            if let Err(error) = training {
                tracing::error!(%error, "cannot record a round's training");
            }
            let worker = state.clone();
            let work_record = record.clone();
            let work_stop = stop.clone();
            let training =
                tokio::task::spawn_blocking(move || train_round(&worker, &work_record, &work_stop));
            let outcome = tokio::select! {
                outcome = training => outcome,
                _ = shutdown.changed() => {
                    // The task stays "training": trained again after the restart.
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
            };
            match outcome {
                Ok(Ok((header, payload))) if record.task.secure_aggregation => {
                    // Sent masked by the secure steps once the round's shares are in.
                    let bytes = encode_update(&header, &payload);
                    let path = state.federated.plain_update_path(round);
                    let kept = grassroots_store::durable::write_file(&path, &bytes)
                        .map_err(|e| fail(format!("{}: {e}", path.display())))
                        .and_then(|()| {
                            state.federated.modify(round, |r| {
                                r.state = Participation::Trained;
                                r.samples = Some(header.samples);
                                r.training_seconds = Some(header.training_seconds);
                                r.detail = Some("trained; waiting for the round's masks".into());
                                Ok(true)
                            })
                        });
                    state.federated.secure_wake.notify_one();
                    if let Err(error) = kept {
                        tracing::error!(%error, "cannot keep a round's update; trained again later");
                        let _ = state.federated.modify(round, |r| {
                            r.state = Participation::Pending;
                            Ok(true)
                        });
                    }
                }
                Ok(Ok((header, payload))) => {
                    let bytes = encode_update(&header, &payload);
                    let path = state
                        .federated
                        .dir
                        .join(format!("round-{}.update", header.round));
                    let queued = async {
                        grassroots_store::durable::write_file(&path, &bytes)
                            .map_err(|e| fail(format!("{}: {e}", path.display())))?;
                        state.outbox.enqueue_file(&path, ROUND_UPDATE_LABEL).await
                    };
                    match queued.await {
                        Ok(_) => {
                            let _ = state.federated.modify(round, |r| {
                                r.samples = Some(header.samples);
                                r.training_seconds = Some(header.training_seconds);
                                r.update_bytes = Some(bytes.len() as u64);
                                Ok(true)
                            });
                            let detail = format!(
                                "{} samples, loss {:.3}, {:.0} s, {} bytes sent",
                                header.samples,
                                header.mean_loss,
                                header.training_seconds,
                                bytes.len()
                            );
                            let _ = state.federated.finish(round, Participation::Sent, detail);
                        }
                        Err(error) => {
                            tracing::error!(%error, "cannot queue a round's update; trained again later");
                            let _ = state.federated.modify(round, |r| {
                                r.state = Participation::Pending;
                                Ok(true)
                            });
                        }
                    }
                }
                Ok(Err(reason)) => {
                    let _ = state
                        .federated
                        .finish(round, Participation::Skipped, reason);
                }
                Err(error) => {
                    let _ = state.federated.finish(
                        round,
                        Participation::Skipped,
                        format!("the training task failed: {error}"),
                    );
                }
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = state.federated.wake.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}
