//! The model the edge screens with: one verified package, kept at `DATA/models/active.grmodel`.
//!
//! A package is installed only after its signature verifies against the network's model-signing
//! key (from the site's kit), its manifest is usable and its graph loads with the input and
//! output shapes the manifest states. Anything else is refused with the reason, and the model
//! that was active stays active — a corrupt download or a tampered update never stops screening.
//! The file on disk is replaced atomically (written, fsynced, renamed), so a crash mid-install
//! leaves the old model or the new one, never half of one. The model it replaces is kept as
//! `previous.grmodel`, so that the hub (or an admin) can roll the site back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use grassroots_models::package::Manifest;
use grassroots_models::{ModelPackage, PackageVerifier, TileClassifier};
use grassroots_wire::models::{ModelRef, ModelStatusReport};
use serde::Serialize;

use crate::EdgeError;

fn model_ref(classifier: &TileClassifier) -> ModelRef {
    let manifest = classifier.manifest();
    ModelRef {
        digest: classifier.digest().to_string(),
        name: manifest.name.clone(),
        version: manifest.version.clone(),
    }
}

/// Tiles per inference run: one, because tract takes its lazy im2col (no copy of the input
/// per convolution) only for a batch of 1, and runs our graphs faster so (`bench screen
/// --batch`: 12,600 tiles a second a thread for the context model, 9,800 at 64).
pub const BATCH: usize = 1;

/// What the UI and API say about the model.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelStatus {
    pub active: Option<ActiveSummary>,
    /// Why the last package offered was refused, if it was.
    pub last_refusal: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActiveSummary {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub classes: Vec<String>,
    pub microns_per_pixel: f64,
    pub thresholds: std::collections::BTreeMap<String, f32>,
    pub metrics: std::collections::BTreeMap<String, f64>,
    pub training_data: String,
}

pub struct ActiveModel {
    path: PathBuf,
    /// The model before the active one (`previous.json`: digest, name, version), for reports
    /// and rollback; its package is `previous.grmodel`.
    previous_path: PathBuf,
    verifier: PackageVerifier,
    current: RwLock<Option<Arc<TileClassifier>>>,
    last_refusal: Mutex<Option<String>>,
}

fn refuse(error: impl std::fmt::Display) -> EdgeError {
    EdgeError::Config(format!("model package refused: {error}"))
}

impl ActiveModel {
    /// Opens the edge's model slot, loading the installed package if there is a good one.
    pub fn open(data_dir: &Path, model_signing_public_key: &str) -> Result<Self, EdgeError> {
        let dir = data_dir.join("models");
        std::fs::create_dir_all(&dir)
            .map_err(|e| EdgeError::Config(format!("{}: {e}", dir.display())))?;
        let verifier = PackageVerifier::from_public_hex(model_signing_public_key)
            .map_err(|e| EdgeError::Config(format!("the kit's model-signing key: {e}")))?;
        let slot = Self {
            path: dir.join("active.grmodel"),
            previous_path: dir.join("previous.json"),
            verifier,
            current: RwLock::new(None),
            last_refusal: Mutex::new(None),
        };
        if let Ok(bytes) = std::fs::read(&slot.path) {
            match slot.load(&bytes) {
                Ok(classifier) => *slot.write() = Some(Arc::new(classifier)),
                Err(error) => {
                    tracing::error!(path = %slot.path.display(), %error, "the installed screening model does not load; install a good package");
                    slot.remember_refusal(&error);
                }
            }
        }
        Ok(slot)
    }

    fn load(&self, bytes: &[u8]) -> Result<TileClassifier, EdgeError> {
        let package = ModelPackage::open(bytes, &self.verifier).map_err(refuse)?;
        TileClassifier::load(&package, BATCH).map_err(refuse)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<TileClassifier>>> {
        self.current.write().unwrap_or_else(|e| e.into_inner())
    }

    fn remember_refusal(&self, error: &EdgeError) {
        *self.last_refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }

    /// Verifies, loads and activates a package; on any failure the active model stays.
    pub fn install(&self, bytes: &[u8]) -> Result<Manifest, EdgeError> {
        let classifier = match self.load(bytes) {
            Ok(classifier) => classifier,
            Err(error) => {
                tracing::warn!(%error, "screening model refused; the active model stays");
                self.remember_refusal(&error);
                return Err(error);
            }
        };
        let io =
            |path: &Path, e: std::io::Error| EdgeError::Config(format!("{}: {e}", path.display()));
        if let Some(old) = self.current().filter(|c| c.digest() != classifier.digest()) {
            // The outgoing model is kept whole beside the new one before anything is replaced.
            let previous_package = self.path.with_file_name("previous.grmodel");
            let old_bytes = std::fs::read(&self.path).map_err(|e| io(&self.path, e))?;
            grassroots_store::durable::write_file(&previous_package, &old_bytes)
                .map_err(|e| io(&previous_package, e))?;
            let reference = serde_json::to_vec(&model_ref(&old)).unwrap_or_default();
            grassroots_store::durable::write_file(&self.previous_path, &reference)
                .map_err(|e| io(&self.previous_path, e))?;
        }
        grassroots_store::durable::write_file(&self.path, bytes).map_err(|e| io(&self.path, e))?;
        let manifest = classifier.manifest().clone();
        tracing::info!(model = %manifest.name, version = %manifest.version, digest = %classifier.digest(), "screening model installed");
        *self.write() = Some(Arc::new(classifier));
        *self.last_refusal.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(manifest)
    }

    /// Installs the package file at `path` unless it is the active one already.
    pub fn install_file(&self, path: &Path) -> Result<(), EdgeError> {
        let bytes = std::fs::read(path)
            .map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?;
        let digest = blake3::hash(&bytes).to_hex().to_string();
        if self.current().is_some_and(|c| c.digest() == digest) {
            return Ok(());
        }
        self.install(&bytes).map(|_| ())
    }

    /// The active package, verified again, with its bytes: what a federated round trains
    /// from. None when no model is installed or its file no longer verifies.
    pub fn active_package(&self) -> Option<(ModelPackage, Vec<u8>)> {
        let bytes = std::fs::read(&self.path).ok()?;
        let package = ModelPackage::open(&bytes, &self.verifier).ok()?;
        Some((package, bytes))
    }

    /// The package the active one replaced, if any.
    pub fn previous_package_bytes(&self) -> Option<Vec<u8>> {
        std::fs::read(self.path.with_file_name("previous.grmodel")).ok()
    }

    /// What the edge runs, for the hub.
    pub fn status_report(&self) -> ModelStatusReport {
        ModelStatusReport {
            active: self.current().map(|c| model_ref(&c)),
            previous: std::fs::read(&self.previous_path)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok()),
            reported_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        }
    }

    pub fn current(&self) -> Option<Arc<TileClassifier>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn status(&self) -> ModelStatus {
        ModelStatus {
            active: self.current().map(|c| {
                let m = c.manifest();
                ActiveSummary {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    digest: c.digest().to_string(),
                    classes: m.classes.clone(),
                    microns_per_pixel: m.microns_per_pixel,
                    thresholds: m.thresholds.clone(),
                    metrics: m.metrics.clone(),
                    training_data: m.training_data.clone(),
                }
            }),
            last_refusal: self
                .last_refusal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}
