//! The hub's driver of federated rounds: plans a round, sends each chosen site its task, takes
//! their updates, and when the round's state machine says so aggregates, validates, signs and
//! registers the new version (releasing it when it does no worse than its base on the hub's
//! validation set).
//!
//! The round itself is `grassroots_models::federated::round::FederatedRound`, a sans-IO state
//! machine; this driver feeds it and persists it whole (table `rounds`) after every change, so a
//! hub killed mid-round resumes it: tasks not yet delivered are sent again, updates received are
//! on disk (`DATA/rounds/N/SITE.update`, durable before the round records them), and a round
//! caught aggregating aggregates again from the same files.
//!
//! Who takes part: sites online and not revoked (the link closes revoked sites), running the
//! round's base version (the network's release). An edge with too few labels sits the round out
//! and is dropped at the deadline; so is one that dies mid-training. A site revoked mid-round is
//! excluded and its update refused.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grassroots_models::federated::compress::{self, Encoding};
use grassroots_models::federated::privacy::PrivacyAccountant;
use grassroots_models::federated::round::{
    FederatedRound, NextStep, ReceivedUpdate, RoundPhase, RoundPlan,
};
use grassroots_models::federated::{
    aggregate, evaluate, AggregationSettings, ClientUpdate, LocalTrainingConfig, Parameters,
    ServerState,
};
use grassroots_models::training::dataset::LabelledTile;
use grassroots_models::{ModelPackage, PackageSigner, PackageVerifier};
use grassroots_store::Table;
use grassroots_wire::federated::{decode_update, RoundTask, UpdateEncoding, ROUND_TASK_LABEL};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::model_registry::Lineage;
use crate::secure_rounds::{SecurePhase, SecureRound};
use crate::{HubError, HubState};

/// How the network runs rounds (the hub's `--rounds-*` flags).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoundSettings {
    /// Seconds between the end of one round and the start of the next; 0: only on request.
    pub every_seconds: u64,
    /// Seconds from a round's start to its deadline.
    pub deadline_seconds: u64,
    pub min_participants: usize,
    pub local: LocalTrainingConfig,
    pub aggregation: AggregationSettings,
    pub encoding: UpdateEncoding,
    /// Release a round's version when its validation accuracy is at least the base's minus this.
    pub release_tolerance: Option<f32>,
    /// Sites that run a round's version first (a canary); empty: released to all at once.
    pub canary_sites: Vec<String>,
    /// Differential privacy at the edges, and the network's budget.
    pub privacy: Option<PrivacySettings>,
    /// Secure aggregation: the hub sees only the sum of the updates (`crate::secure_rounds`).
    /// Needs FedAvg without hub-side clipping or outlier refusal, which need single updates.
    pub secure_aggregation: bool,
}

/// Site-level differential privacy: each edge clips its update to `clip_norm` and adds
/// Gaussian noise (`noise_multiplier`, shared out among the participants); the hub accounts
/// for every round and plans none that would spend past `epsilon_budget` at `delta`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacySettings {
    pub clip_norm: f32,
    pub noise_multiplier: f32,
    pub delta: f64,
    pub epsilon_budget: f64,
}

/// What the network has spent, for the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PrivacySpent {
    pub epsilon: f64,
    pub delta: f64,
    pub epsilon_budget: f64,
    pub rounds: u64,
}

/// Every round takes every eligible site, so sites are "sampled" with probability one: the
/// accountant's most conservative case.
const SITE_SAMPLING: f64 = 1.0;

impl Default for RoundSettings {
    fn default() -> Self {
        Self {
            every_seconds: 0,
            deadline_seconds: 600,
            min_participants: 2,
            local: LocalTrainingConfig::default(),
            aggregation: AggregationSettings::default(),
            encoding: UpdateEncoding::F16,
            release_tolerance: Some(0.02),
            canary_sites: Vec::new(),
            privacy: None,
            secure_aggregation: false,
        }
    }
}

/// A round as the hub keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: FederatedRound,
    pub task: RoundTask,
    pub aggregation: AggregationSettings,
    /// Sites whose task transfer was acknowledged.
    pub delivered: Vec<String>,
    /// Hub validation accuracy of the base and of the result.
    pub base_accuracy: Option<f32>,
    pub accuracy: Option<f32>,
    pub released: bool,
    /// With differential privacy: epsilon this round cost, and the network's total after it.
    #[serde(default)]
    pub epsilon: Option<(f64, f64)>,
    /// On a hub without the model-signing key: the unsigned candidate the round made, waiting
    /// for `grassroots model sign` where the provisioning folder lives.
    #[serde(default)]
    pub awaiting_approval: Option<String>,
    /// With secure aggregation: the relay's state (keys, encrypted shares, reveals).
    #[serde(default)]
    pub secure: Option<SecureRound>,
}

/// The API's view of a round.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RoundSummary {
    pub id: u64,
    pub state: String,
    pub reason: Option<String>,
    pub base: String,
    pub result: Option<String>,
    pub participants: Vec<String>,
    pub updates: Vec<String>,
    pub refused: Vec<grassroots_models::federated::Refusal>,
    pub excluded: BTreeMap<String, String>,
    pub delivered: Vec<String>,
    pub metrics: BTreeMap<String, f32>,
    pub released: bool,
    /// The unsigned candidate waiting for offline approval, if the hub has no signing key.
    pub awaiting_approval: Option<String>,
    /// Seconds in each phase so far: training (tasks out, updates in) and aggregation.
    pub seconds_training: Option<i64>,
    pub seconds_aggregating: Option<i64>,
    pub started_at: i64,
    /// With secure aggregation: its phase (advertising, sharing, masking, unmasking).
    pub secure_phase: Option<SecurePhase>,
    /// Seconds each site's local training took, as its update says.
    pub training_seconds: BTreeMap<String, f64>,
}

impl RoundRecord {
    pub fn summary(&self) -> RoundSummary {
        let r = &self.round;
        let (state, reason, result) = match &r.phase {
            RoundPhase::Training => ("training", None, None),
            RoundPhase::Aggregating => ("aggregating", None, None),
            RoundPhase::Done { version } => ("done", None, Some(version.clone())),
            RoundPhase::Failed { reason } => ("failed", Some(reason.clone()), None),
        };
        let mut metrics = BTreeMap::new();
        if let Some(a) = self.base_accuracy {
            metrics.insert("base_validation_accuracy".into(), a);
        }
        if let Some(a) = self.accuracy {
            metrics.insert("validation_accuracy".into(), a);
        }
        if let Some((round, total)) = self.epsilon {
            metrics.insert("epsilon".into(), round as f32);
            metrics.insert("epsilon_total".into(), total as f32);
        }
        RoundSummary {
            id: r.plan.round,
            state: state.into(),
            reason,
            base: r.plan.base.clone(),
            result,
            participants: r.plan.participants.clone(),
            updates: r.received.keys().cloned().collect(),
            refused: r.refused.clone(),
            excluded: r.excluded.clone(),
            delivered: self.delivered.clone(),
            metrics,
            released: self.released,
            awaiting_approval: self.awaiting_approval.clone(),
            seconds_training: Some(
                r.aggregating_since.or(r.finished_at).unwrap_or_else(now) - r.started_at,
            ),
            seconds_aggregating: r
                .aggregating_since
                .map(|since| r.finished_at.unwrap_or_else(now) - since),
            started_at: r.started_at,
            secure_phase: self.secure.as_ref().map(|s| s.phase),
            training_seconds: r
                .received
                .iter()
                .map(|(site, update)| (site.clone(), update.training_seconds))
                .collect(),
        }
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn config(reason: impl Into<String>) -> HubError {
    HubError::Config(reason.into())
}

/// The coordinator's durable state and what it needs to sign and validate.
pub struct Rounds {
    pub settings: RoundSettings,
    table: Table<RoundRecord>,
    server: Table<ServerState>,
    privacy: Table<PrivacyAccountant>,
    dir: PathBuf,
    signer: Option<PackageSigner>,
    validation: Option<(Vec<LabelledTile>, u32)>,
    /// One change to the rounds at a time (updates arrive on many streams).
    lock: Mutex<()>,
    /// Told when something arrives that may move a round on (an update, a secure message, a
    /// round started), so the driver acts at once rather than at its next tick.
    pub(crate) wake: tokio::sync::Notify,
}

/// Why the hub's validation set (tiles of `tile` px) cannot measure version `version`, if it
/// cannot: a set made for another model's tiles would give a figure that means nothing.
fn validation_misfit(
    tile: u32,
    version: &str,
    manifest: &grassroots_models::package::Manifest,
) -> Option<String> {
    (tile != manifest.input.width || tile != manifest.input.height).then(|| {
        format!(
            "the hub's validation set has {tile} px tiles and version {version} takes {} x {} px: make one for this model",
            manifest.input.width, manifest.input.height
        )
    })
}

fn key(round: u64) -> String {
    format!("{round:020}")
}

impl Rounds {
    pub fn open(
        data_dir: &std::path::Path,
        store: &grassroots_store::Store,
        settings: RoundSettings,
        signing_key: Option<&std::path::Path>,
        validation_set: Option<&std::path::Path>,
    ) -> Result<Self, HubError> {
        if settings.secure_aggregation {
            let a = &settings.aggregation;
            if !matches!(a.rule, grassroots_models::federated::CombiningRule::FedAvg)
                || a.clip_norm.is_some()
                || a.outlier_factor.is_some()
            {
                return Err(config(
                    "secure aggregation shows the hub only the sum of the updates: it runs with FedAvg (and any server optimiser), not with the median, trimmed mean, hub-side clipping or outlier refusal, which need each update; clip at the edges with --dp-clip instead",
                ));
            }
        }
        let dir = data_dir.join("rounds");
        std::fs::create_dir_all(&dir).map_err(|e| config(format!("{}: {e}", dir.display())))?;
        let signer = match signing_key {
            Some(path) => {
                let seed = std::fs::read_to_string(path)
                    .map_err(|e| config(format!("model-signing key {}: {e}", path.display())))?;
                Some(
                    PackageSigner::from_seed_hex(&seed).map_err(|e| {
                        config(format!("model-signing key {}: {e}", path.display()))
                    })?,
                )
            }
            None => None,
        };
        let validation = match validation_set {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| config(format!("validation set {}: {e}", path.display())))?;
                Some(
                    grassroots_models::federated::validation::read(&bytes)
                        .map_err(|e| config(format!("validation set {}: {e}", path.display())))?,
                )
            }
            None => None,
        };
        Ok(Self {
            settings,
            table: store.table("rounds")?,
            server: store.table("rounds_server_state")?,
            privacy: store.table("rounds_privacy")?,
            dir,
            signer,
            validation,
            lock: Mutex::new(()),
            wake: tokio::sync::Notify::new(),
        })
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // Every change is written whole before the guard drops: a poisoned lock is still usable.
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn records(&self) -> Result<Vec<RoundRecord>, HubError> {
        Ok(self.table.entries()?.into_iter().map(|(_, r)| r).collect())
    }

    /// The privacy spent so far, when the network runs with differential privacy.
    pub fn privacy_spent(&self) -> Result<Option<PrivacySpent>, HubError> {
        let Some(privacy) = self.settings.privacy else {
            return Ok(None);
        };
        let accountant = self.privacy.get("accountant")?.unwrap_or_default();
        Ok(Some(PrivacySpent {
            epsilon: accountant.epsilon(privacy.delta),
            delta: privacy.delta,
            epsilon_budget: privacy.epsilon_budget,
            rounds: accountant.rounds,
        }))
    }

    fn latest(&self) -> Result<Option<RoundRecord>, HubError> {
        Ok(self.records()?.pop())
    }

    fn save(&self, record: &RoundRecord) -> Result<(), HubError> {
        self.table
            .put_durable(&key(record.round.plan.round), record)?;
        Ok(())
    }

    pub(crate) fn round_dir(&self, round: u64) -> PathBuf {
        self.dir.join(round.to_string())
    }

    pub(crate) fn update_path(&self, round: u64, site: &str) -> PathBuf {
        self.round_dir(round).join(format!("{site}.update"))
    }

    /// Changes round `round` under the lock with `change`, saving it when `change` says it
    /// changed something. Returns that.
    pub(crate) fn modify(&self, round: u64, change: impl FnOnce(&mut RoundRecord) -> bool) -> bool {
        let _guard = self.guard();
        let Ok(Some(mut record)) = self.table.get(&key(round)) else {
            return false;
        };
        if !change(&mut record) {
            return false;
        }
        if let Err(error) = self.save(&record) {
            tracing::error!(%error, round, "cannot record a round's change");
            return false;
        }
        true
    }
}

/// Plans and starts a round now; the reason when it cannot.
pub(crate) fn start_round(state: &HubState) -> Result<RoundRecord, HubError> {
    let rounds = &state.rounds;
    let _guard = rounds.guard();
    let latest = rounds.latest()?;
    if let Some(latest) = &latest {
        if matches!(
            latest.round.phase,
            RoundPhase::Training | RoundPhase::Aggregating
        ) {
            return Err(config(format!(
                "round {} is still running",
                latest.round.plan.round
            )));
        }
    }
    let base = state
        .models
        .released()?
        .ok_or_else(|| config("no model version is released: a round needs a base"))?;
    let mut participants: Vec<String> = state
        .sites
        .online_sites()
        .into_iter()
        .filter(|site| {
            state
                .models
                .site(site)
                .is_ok_and(|m| m.running.as_deref() == Some(base.as_str()))
        })
        .collect();
    participants.sort();
    let settings = &rounds.settings;
    if participants.len() < settings.min_participants.max(1) {
        return Err(config(format!(
            "{} site(s) online and running the released version; a round needs {}",
            participants.len(),
            settings.min_participants
        )));
    }
    let number = latest.map_or(1, |r| r.round.plan.round + 1);
    let started = now();
    let deadline = started + settings.deadline_seconds as i64;
    let deadline_text = OffsetDateTime::from_unix_timestamp(deadline)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let task = RoundTask {
        round: number,
        base_digest: base.clone(),
        deadline: deadline_text,
        epochs: settings.local.epochs as u32,
        batch: settings.local.batch as u32,
        learning_rate: settings.local.learning_rate,
        proximal_mu: settings.local.proximal_mu,
        seed: settings.local.seed ^ number,
        encoding: if settings.secure_aggregation {
            UpdateEncoding::Masked
        } else {
            settings.encoding
        },
        clip_norm: settings.privacy.map(|p| p.clip_norm),
        noise_multiplier: settings.privacy.map(|p| p.noise_multiplier),
        participants: participants.len() as u32,
        secure_aggregation: settings.secure_aggregation,
    };
    let mut record = RoundRecord {
        round: FederatedRound::new(
            RoundPlan {
                round: number,
                base,
                participants,
                min_participants: settings.min_participants,
                deadline,
            },
            started,
        ),
        task,
        aggregation: settings.aggregation,
        delivered: Vec::new(),
        base_accuracy: None,
        accuracy: None,
        released: false,
        epsilon: None,
        awaiting_approval: None,
        secure: settings
            .secure_aggregation
            .then(|| SecureRound::new(started, settings.deadline_seconds)),
    };
    if let Some(privacy) = settings.privacy {
        // The updates the edges will send are what spends privacy: accounted for before any
        // task goes out, durably, and refused once the budget would be passed.
        let mut accountant = rounds.privacy.get("accountant")?.unwrap_or_default();
        let z = f64::from(privacy.noise_multiplier);
        if !accountant.can_afford(SITE_SAMPLING, z, privacy.epsilon_budget, privacy.delta) {
            return Err(config(format!(
                "the network's privacy budget is spent: epsilon {:.2} of {:.2} at delta {:e} after {} rounds; another would pass it",
                accountant.epsilon(privacy.delta),
                privacy.epsilon_budget,
                privacy.delta,
                accountant.rounds
            )));
        }
        accountant.spend(SITE_SAMPLING, z);
        rounds.privacy.put_durable("accountant", &accountant)?;
        record.epsilon = Some((
            PrivacyAccountant::epsilon_of_one_round(SITE_SAMPLING, z, privacy.delta),
            accountant.epsilon(privacy.delta),
        ));
    }
    rounds.save(&record)?;
    rounds.wake.notify_one();
    tracing::info!(round = number, participants = ?record.round.plan.participants, "federated round started");
    Ok(record)
}

/// An update blob from `site` (its identity from the certificate). Refusals are recorded in the
/// round and logged with the site; the transfer is acknowledged either way, since sending the
/// same bytes again would not change the answer.
pub(crate) async fn take_update(state: &Arc<HubState>, site: &str, blob: &std::path::Path) {
    let Some(bytes) = crate::link::read_bounded(
        site,
        blob,
        grassroots_wire::federated::MAX_UPDATE_BYTES,
        "round update",
    )
    .await
    else {
        return;
    };
    let header = match decode_update(&bytes) {
        Ok((header, _)) => header,
        Err(error) => {
            tracing::warn!(%site, %error, "round update refused: malformed");
            return;
        }
    };
    let rounds = &state.rounds;
    let _guard = rounds.guard();
    let Ok(Some(mut record)) = rounds.table.get(&key(header.round)) else {
        tracing::warn!(%site, round = header.round, "round update refused: no such round");
        return;
    };
    let path = rounds.update_path(header.round, site);
    let received = ReceivedUpdate {
        samples: header.samples,
        mean_loss: header.mean_loss,
        training_seconds: header.training_seconds,
        received_at: now(),
        bytes: bytes.len() as u64,
    };
    if record.secure.is_some() != (header.encoding == UpdateEncoding::Masked) {
        let reason = "masked where the round is plain, or plain where it is secure".to_string();
        tracing::warn!(%site, round = header.round, %reason, "round update refused");
        record
            .round
            .refused
            .push(grassroots_models::federated::Refusal {
                site: site.to_string(),
                reason,
            });
        if let Err(error) = rounds.save(&record) {
            tracing::error!(%error, "cannot record a refused update");
        }
        return;
    }
    // The file is durable before the round says the update is in.
    let mut candidate = record.round.clone();
    match candidate.offer_update(site, header.round, &header.base_digest, received, now()) {
        Ok(()) => {
            if let Err(error) = grassroots_store::durable::write_file(&path, &bytes) {
                tracing::error!(%site, %error, "cannot store a round update");
                return;
            }
            tracing::info!(%site, round = header.round, samples = header.samples, "round update received");
        }
        Err(refusal) => {
            tracing::warn!(%site, round = header.round, reason = %refusal.reason, "round update refused");
        }
    }
    record.round = candidate;
    if let Err(error) = rounds.save(&record) {
        tracing::error!(%error, "cannot record a round update");
    }
    rounds.wake.notify_one();
}

/// Aggregates, validates, signs and registers; returns the record as it ends.
fn aggregate_round(state: &HubState, mut record: RoundRecord) -> Result<RoundRecord, HubError> {
    let rounds = &state.rounds;
    let plan = record.round.plan.clone();
    let base_path = state.models.package_path(&plan.base);
    let base_bytes =
        std::fs::read(&base_path).map_err(|e| config(format!("{}: {e}", base_path.display())))?;
    let verifier = PackageVerifier::from_public_hex(&state.kit.model_signing_public_key)
        .map_err(|e| config(e.to_string()))?;
    let base = ModelPackage::open(&base_bytes, &verifier).map_err(|e| config(e.to_string()))?;
    let global = Parameters::from_onnx(&base.graph).map_err(|e| config(e.to_string()))?;
    let sizes: Vec<usize> = global
        .layout
        .iter()
        .map(|t| t.dims.iter().product())
        .collect();
    let mut updates = Vec::new();
    let secure_sites = record.secure.as_ref().map(|s| s.masked.clone());
    if secure_sites.is_some() {
        match crate::secure_rounds::unmasked_mean(state, &record, global.values.len()) {
            Ok((delta, samples)) => updates.push(ClientUpdate {
                site: "the secure sum".into(),
                delta,
                samples,
            }),
            Err(error) => {
                record
                    .round
                    .fail(format!("unmasking failed: {error}"), now());
                return Ok(record);
            }
        }
    }
    for site in record
        .round
        .received
        .keys()
        .filter(|_| secure_sites.is_none())
    {
        let path = rounds.update_path(plan.round, site);
        let bytes = std::fs::read(&path).map_err(|e| config(format!("{}: {e}", path.display())))?;
        let decoded =
            decode_update(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|(header, payload)| {
                    let sent: Vec<usize> =
                        header.tensor_sizes.iter().map(|s| *s as usize).collect();
                    if sent != sizes {
                        return Err(
                            "mis-shaped: tensors of other sizes than the model's".to_string()
                        );
                    }
                    let encoding = match header.encoding {
                        UpdateEncoding::F32 => Encoding::F32,
                        UpdateEncoding::F16 => Encoding::F16,
                        UpdateEncoding::Int8 => Encoding::Int8,
                        UpdateEncoding::Masked => {
                            return Err(
                                "a masked update in a round without secure aggregation".to_string()
                            )
                        }
                    };
                    compress::decode(payload, &sizes, encoding)
                        .map(|delta| (delta, header.samples))
                        .map_err(|e| e.to_string())
                });
        match decoded {
            Ok((delta, samples)) => updates.push(ClientUpdate {
                site: site.clone(),
                delta,
                samples,
            }),
            Err(reason) => record
                .round
                .refused
                .push(grassroots_models::federated::Refusal {
                    site: site.clone(),
                    reason,
                }),
        }
    }
    let mut server = rounds.server.get("state")?.unwrap_or_default();
    let outcome = match aggregate(&global.values, &updates, &record.aggregation, &mut server) {
        Ok(outcome) => outcome,
        Err(error) => {
            record.round.fail(error.to_string(), now());
            return Ok(record);
        }
    };
    for refusal in &outcome.refused {
        tracing::warn!(site = %refusal.site, reason = %refusal.reason, round = plan.round, "update refused at aggregation");
        record.round.exclude(&refusal.site, &refusal.reason);
        record.round.refused.push(refusal.clone());
    }
    let next = Parameters {
        layout: global.layout.clone(),
        values: outcome.global,
    };
    if let Some((tiles, edge)) = &rounds.validation {
        if let Some(reason) = validation_misfit(*edge, &plan.base, &base.manifest) {
            record.round.fail(reason, now());
            return Ok(record);
        }
        // The base is usually the version an earlier round made and measured on the same
        // tiles: its figure is reused rather than measured again.
        let measured = rounds
            .records()?
            .into_iter()
            .rev()
            .find_map(|r| match r.round.phase {
                RoundPhase::Done { version } if version == plan.base => r.accuracy,
                _ => None,
            });
        record.base_accuracy = match measured {
            Some(accuracy) => Some(accuracy),
            None => Some(evaluate(&global, tiles, *edge).map_err(|e| config(e.to_string()))?),
        };
        record.accuracy = Some(evaluate(&next, tiles, *edge).map_err(|e| config(e.to_string()))?);
    }
    let weights = next.to_cnn().map_err(|e| config(e.to_string()))?;
    let input = base.manifest.input;
    let onnx = grassroots_models::onnx_graph::cnn_to_onnx(
        &weights,
        input.height as usize,
        input.width as usize,
        &[("round", &plan.round.to_string())],
    );
    let mut manifest = base.manifest.clone();
    manifest.version = format!("round-{}", plan.round);
    manifest.training_data = format!(
        "federated round {} from {} over {} site(s): each site's confirmed cases, at the site",
        plan.round,
        &plan.base[..12.min(plan.base.len())],
        outcome.accepted.len()
    );
    manifest
        .metrics
        .retain(|name, _| !name.starts_with("proxy_"));
    if let Some(accuracy) = record.accuracy {
        manifest
            .metrics
            .insert("hub_validation_accuracy".into(), f64::from(accuracy));
    }
    manifest
        .metrics
        .insert("round_samples".into(), outcome.samples as f64);
    let Some(signer) = rounds.signer.as_ref() else {
        // No key at the hub: the network approves offline. The candidate waits on disk.
        let candidate =
            ModelPackage::seal_unsigned(&manifest, &onnx).map_err(|e| config(e.to_string()))?;
        let path = rounds
            .dir
            .join(plan.round.to_string())
            .join("candidate.grmodel");
        grassroots_store::durable::write_file(&path, &candidate)
            .map_err(|e| config(format!("{}: {e}", path.display())))?;
        rounds.server.put_durable("state", &server)?;
        tracing::warn!(round = plan.round, candidate = %path.display(), "the round's model awaits offline approval: `grassroots model sign --provisioning DIR CANDIDATE --out APPROVED`, then `grassroots model registry add APPROVED`");
        record.awaiting_approval = Some(path.display().to_string());
        record
            .round
            .finish(blake3::hash(&candidate).to_hex().to_string(), now());
        return Ok(record);
    };
    let package =
        ModelPackage::seal(&manifest, &onnx, signer).map_err(|e| config(e.to_string()))?;
    let version = state.models.add(
        &package,
        Lineage {
            parent: Some(plan.base.clone()),
            round: Some(plan.round),
            aggregation: serde_json::to_value(record.aggregation).ok(),
            participants: secure_sites.unwrap_or_else(|| outcome.accepted.clone()),
        },
        &format!("round {}", plan.round),
    )?;
    rounds.server.put_durable("state", &server)?;
    let release = match (
        rounds.settings.release_tolerance,
        record.base_accuracy,
        record.accuracy,
    ) {
        (Some(tolerance), Some(base), Some(new)) => new >= base - tolerance,
        (Some(_), None, None) => true,
        _ => false,
    };
    if release && !rounds.settings.canary_sites.is_empty() {
        state.canaries.start(
            &version.digest,
            rounds.settings.canary_sites.clone(),
            &format!("round {}", plan.round),
        )?;
        state.models.changed().notify_one();
        tracing::info!(round = plan.round, sites = ?rounds.settings.canary_sites, "round's version goes to the canary sites first");
    } else if release {
        state
            .models
            .release(&version.digest, &format!("round {}", plan.round))?;
        record.released = true;
    } else {
        tracing::warn!(round = plan.round, base = ?record.base_accuracy, new = ?record.accuracy, "round's version not released: it does worse on the hub's validation set");
    }
    record.round.finish(version.digest, now());
    Ok(record)
}

/// Sends the round's task to participants that have not acknowledged it.
async fn deliver_tasks(state: &Arc<HubState>, record: &RoundRecord) {
    let task = match serde_json::to_vec(&record.task) {
        Ok(task) => task,
        Err(_) => return,
    };
    let path = state
        .rounds
        .dir
        .join(format!("{}.task", record.round.plan.round));
    if grassroots_store::durable::write_file(&path, &task).is_err() {
        return;
    }
    for site in &record.round.plan.participants {
        if record.delivered.contains(site) || record.round.excluded.contains_key(site) {
            continue;
        }
        let Some(connection) = state.sites.connection(site) else {
            continue;
        };
        let sent = crate::link::send_file(state, &connection, &path, ROUND_TASK_LABEL);
        match tokio::time::timeout(Duration::from_secs(30), sent).await {
            Ok(Ok(())) => {
                state.rounds.modify(record.round.plan.round, |latest| {
                    let new = !latest.delivered.contains(site);
                    if new {
                        latest.delivered.push(site.clone());
                    }
                    new
                });
                tracing::info!(%site, round = record.round.plan.round, "round task delivered");
            }
            Ok(Err(error)) => tracing::warn!(%site, %error, "round task not delivered yet"),
            Err(_) => tracing::warn!(%site, "round task delivery timed out; retried"),
        }
    }
}

/// If `package` is a round's candidate approved offline (`grassroots model sign`): the lineage
/// that round would have given it, and the round.
pub(crate) fn approved_candidate(
    state: &HubState,
    package: &[u8],
) -> Result<Option<(Lineage, u64)>, HubError> {
    for record in state.rounds.records()? {
        let Some(path) = &record.awaiting_approval else {
            continue;
        };
        let Ok(candidate) = std::fs::read(path) else {
            continue;
        };
        if ModelPackage::same_contents(&candidate, package) {
            let participants = record
                .round
                .received
                .keys()
                .filter(|site| !record.round.excluded.contains_key(*site))
                .cloned()
                .collect();
            return Ok(Some((
                Lineage {
                    parent: Some(record.round.plan.base.clone()),
                    round: Some(record.round.plan.round),
                    aggregation: serde_json::to_value(record.aggregation).ok(),
                    participants,
                },
                record.round.plan.round,
            )));
        }
    }
    Ok(None)
}

/// Records that round `round`'s candidate was approved and registered as `digest`.
pub(crate) fn candidate_approved(
    state: &HubState,
    round: u64,
    digest: &str,
) -> Result<(), HubError> {
    state.rounds.modify(round, |record| {
        record.awaiting_approval = None;
        if let RoundPhase::Done { version } = &mut record.round.phase {
            *version = digest.to_string();
        }
        true
    });
    tracing::info!(round, %digest, "the round's candidate was approved and registered");
    Ok(())
}

/// Cross-site evaluation: sends a round's version to every online site that will not run it
/// anyway, to be measured on its own labels against the model it runs (not installed); the
/// figures come back as model evaluations and are kept in the registry by version and site.
/// Sites that will run it evaluate it on install, and report the same figures.
async fn send_for_evaluation(state: Arc<HubState>, digest: String) {
    let path = state.models.package_path(&digest);
    for site in state.sites.online_sites() {
        // A site whose target is this version receives it from the rollout and evaluates it
        // on install; sending the same blob twice at once would collide at the edge.
        let canary = state.canaries.target_for(&site).ok().flatten();
        if state
            .models
            .target_for(&site, canary)
            .ok()
            .flatten()
            .as_deref()
            == Some(digest.as_str())
        {
            continue;
        }
        let Some(connection) = state.sites.connection(&site) else {
            continue;
        };
        let sent = crate::link::send_file(
            &state,
            &connection,
            &path,
            grassroots_wire::models::MODEL_CANDIDATE_LABEL,
        );
        match tokio::time::timeout(Duration::from_secs(60), sent).await {
            Ok(Ok(())) => {
                tracing::info!(%site, %digest, "round's version sent for cross-site evaluation")
            }
            Ok(Err(error)) => {
                tracing::warn!(%site, %error, "round's version not sent for evaluation")
            }
            Err(_) => tracing::warn!(%site, "sending the round's version for evaluation timed out"),
        }
    }
}

/// Excludes participants whose certificate was revoked (their connection is gone and the
/// registry marks them revoked).
fn exclude_revoked(state: &HubState, record: &mut RoundRecord) -> bool {
    let Some(registry) = state.revocations.registry() else {
        return false;
    };
    let mut changed = false;
    for site in record.round.plan.participants.clone() {
        // Revoked when every certificate the site was issued is revoked (a renewal revokes
        // only the old one).
        let mut certificates = registry
            .certificates
            .iter()
            .filter(|c| c.site_id.as_str() == site)
            .peekable();
        let revoked = certificates.peek().is_some() && certificates.all(|c| c.revoked_at.is_some());
        if revoked && !record.round.excluded.contains_key(&site) {
            tracing::warn!(%site, round = record.round.plan.round, "site revoked mid-round: excluded");
            record.round.exclude(&site, "certificate revoked");
            changed = true;
        }
    }
    changed
}

/// Drives rounds until shutdown.
pub(crate) async fn run(state: Arc<HubState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let latest = state.rounds.latest().ok().flatten();
        match latest {
            Some(record)
                if matches!(
                    record.round.phase,
                    RoundPhase::Training | RoundPhase::Aggregating
                ) =>
            {
                deliver_tasks(&state, &record).await;
                crate::secure_rounds::deliver(&state, &record).await;
                let step = {
                    let _guard = state.rounds.guard();
                    match state.rounds.table.get(&key(record.round.plan.round)) {
                        Ok(Some(mut current)) => {
                            let mut changed = exclude_revoked(&state, &mut current);
                            changed |= crate::secure_rounds::advance(&mut current, now());
                            let before = current.round.phase.clone();
                            let mut step = current.round.next_step(now());
                            if step == NextStep::Aggregate {
                                // A secure round first collects the survivors' reveals.
                                let (ready, secure_changed) =
                                    crate::secure_rounds::ready_to_unmask(&mut current, now());
                                changed |= secure_changed;
                                if !ready {
                                    step = NextStep::Wait;
                                }
                            }
                            if changed || before != current.round.phase {
                                let _ = state.rounds.save(&current);
                            }
                            Some((step, current))
                        }
                        _ => None,
                    }
                };
                if let Some((NextStep::Aggregate, current)) = step {
                    let worker = state.clone();
                    let round = current.round.plan.round;
                    let finished =
                        tokio::task::spawn_blocking(move || aggregate_round(&worker, current))
                            .await;
                    match finished {
                        Ok(Ok(done)) => {
                            {
                                let _guard = state.rounds.guard();
                                let _ = state.rounds.save(&done);
                            }
                            tracing::info!(round, phase = ?done.round.phase, accuracy = ?done.accuracy, "federated round finished");
                            if let (RoundPhase::Done { version }, None) =
                                (&done.round.phase, &done.awaiting_approval)
                            {
                                tokio::spawn(send_for_evaluation(state.clone(), version.clone()));
                            }
                        }
                        Ok(Err(error)) => {
                            tracing::error!(round, %error, "aggregation failed; retried")
                        }
                        Err(error) => tracing::error!(round, %error, "aggregation task failed"),
                    }
                }
            }
            previous => {
                let every = state.rounds.settings.every_seconds;
                let due = every > 0
                    && previous
                        .as_ref()
                        .and_then(|r| r.round.finished_at)
                        .is_none_or(|end| now() - end >= every as i64);
                if due {
                    if let Err(error) = start_round(&state) {
                        tracing::debug!(%error, "no round started");
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = state.rounds.wake.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_set_for_other_tiles_cannot_measure_a_version() {
        let mut manifest: grassroots_models::package::Manifest =
            serde_json::from_value(serde_json::json!({
                "name": "grassroots-screening", "version": "3", "task": "tile-classification",
                "input": {"channels": 3, "height": 64, "width": 64}, "microns_per_pixel": 1.0,
                "normalisation": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
                "classes": ["background", "tissue"], "thresholds": {}, "training_data": "",
                "metrics": {}
            }))
            .unwrap();
        let reason = validation_misfit(32, "3", &manifest).expect("misfit");
        assert!(
            reason.contains("32 px tiles") && reason.contains("64 x 64"),
            "{reason}"
        );
        assert!(validation_misfit(64, "3", &manifest).is_none());
        manifest.input.height = 32;
        assert!(validation_misfit(64, "3", &manifest).is_some());
    }
}
