//! The hub's model registry: every screening model version the network has had, its lineage and
//! metrics, the version released to the network, per-site pins, and what each site runs.
//!
//! A version is a signed package (`DATA/models/DIGEST.grmodel`, verified against the network's
//! model-signing key before it is recorded, so the registry never holds a package an edge would
//! refuse) and a record keyed by the package's BLAKE3 digest. Releasing a version makes it the
//! network's target; every site follows it unless an admin pinned the site to another version.
//! Rolling back releases the version that was released before, and withdraws the current one
//! (it is never offered again unless released by hand). [`crate::model_rollout`] moves packages
//! to the sites; the sites' acknowledgements and status reports say what they run.
//!
//! Every write is durable before it is acknowledged: a hub killed mid-release restarts with the
//! release either done or not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use grassroots_models::{ModelPackage, PackageVerifier};
use grassroots_store::Table;
use grassroots_wire::models::ModelStatusReport;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::HubError;

/// Where a version came from, and what made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lineage {
    /// The version it was trained from (a round's base), if any.
    pub parent: Option<String>,
    /// The federated round that made it.
    pub round: Option<u64>,
    /// The aggregation settings of that round (as JSON, so that the registry outlives them).
    pub aggregation: Option<serde_json::Value>,
    /// The sites whose updates went into it.
    pub participants: Vec<String>,
}

/// One model version.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelVersion {
    /// BLAKE3 of the package file, hex: the version's identity.
    pub digest: String,
    pub name: String,
    pub version: String,
    pub lineage: Lineage,
    /// The manifest's figures (training report summary, validation metrics).
    pub metrics: BTreeMap<String, f64>,
    pub training_data: String,
    #[serde(with = "time::serde::rfc3339")]
    pub added_at: OffsetDateTime,
    pub added_by: String,
    /// Why it was withdrawn (rolled back), if it was.
    pub withdrawn: Option<String>,
    /// Cross-site evaluation: each site's figures for this version on its own labels, against
    /// the model it ran then (only figures travel).
    #[serde(default)]
    pub site_evaluations: BTreeMap<String, grassroots_wire::models::ModelEvaluationReport>,
}

/// One release of a version to the whole network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Release {
    pub digest: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub by: String,
}

/// What the hub knows of a site's model.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SiteModel {
    /// The digest the site runs (acknowledged install, or its own report).
    pub running: Option<String>,
    pub previous: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub reported_at: Option<OffsetDateTime>,
    /// The version an admin pinned the site to, overriding the network's release.
    pub pinned: Option<String>,
    /// The last package the site refused, with its reason: not offered again until another
    /// version becomes its target.
    pub refused: Option<(String, String)>,
}

const RELEASES: &str = "releases";

/// The registry, over the hub's store.
pub struct ModelRegistry {
    dir: PathBuf,
    verifier: PackageVerifier,
    versions: Table<ModelVersion>,
    sites: Table<SiteModel>,
    /// The network's release history, newest last, under one key.
    releases: Table<Vec<Release>>,
    /// One release or rollback at a time.
    releasing: Mutex<()>,
    /// Told whenever a site's target may have changed, so the rollout sends at once.
    changed: tokio::sync::Notify,
}

/// A version with the sites that run it and whether it is the network's release.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VersionRow {
    #[serde(flatten)]
    pub version: ModelVersion,
    /// The `parent` of the lineage, repeated at the top for the API's readers.
    pub parent: Option<String>,
    pub released: bool,
    pub sites: Vec<String>,
}

fn config(reason: impl Into<String>) -> HubError {
    HubError::Config(reason.into())
}

impl ModelRegistry {
    pub fn open(
        data_dir: &Path,
        store: &grassroots_store::Store,
        model_signing_public_key: &str,
    ) -> Result<Self, HubError> {
        let dir = data_dir.join("models");
        std::fs::create_dir_all(&dir).map_err(|e| config(format!("{}: {e}", dir.display())))?;
        let verifier = PackageVerifier::from_public_hex(model_signing_public_key)
            .map_err(|e| config(format!("the kit's model-signing key: {e}")))?;
        Ok(Self {
            dir,
            verifier,
            versions: store.table("model_versions")?,
            sites: store.table("site_models")?,
            releases: store.table("model_releases")?,
            releasing: Mutex::new(()),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Woken when a site's target may have changed (a release, rollback, pin, withdrawal or
    /// canary).
    pub fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// The package file of a version.
    pub fn package_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.grmodel"))
    }

    /// Verifies `bytes` as a package of this network and records it; a version already held is
    /// returned as it is. A package that does not verify is refused with the reason.
    pub fn add(&self, bytes: &[u8], lineage: Lineage, by: &str) -> Result<ModelVersion, HubError> {
        let package = ModelPackage::open(bytes, &self.verifier)
            .map_err(|e| config(format!("model package refused: {e}")))?;
        package
            .manifest
            .validate()
            .map_err(|e| config(format!("model package refused: {e}")))?;
        let digest = blake3::hash(bytes).to_hex().to_string();
        if let Some(existing) = self.versions.get(&digest)? {
            return Ok(existing);
        }
        let path = self.package_path(&digest);
        grassroots_store::durable::write_file(&path, bytes)
            .map_err(|e| config(format!("{}: {e}", path.display())))?;
        let version = ModelVersion {
            digest: digest.clone(),
            name: package.manifest.name.clone(),
            version: package.manifest.version.clone(),
            lineage,
            metrics: package.manifest.metrics.clone(),
            training_data: package.manifest.training_data.clone(),
            added_at: OffsetDateTime::now_utc(),
            added_by: by.to_string(),
            withdrawn: None,
            site_evaluations: BTreeMap::new(),
        };
        self.versions.insert_new_durable(&digest, &version)?;
        tracing::info!(%digest, name = %version.name, version = %version.version, %by, "model version added to the registry");
        Ok(version)
    }

    pub fn version(&self, digest: &str) -> Result<Option<ModelVersion>, HubError> {
        Ok(self.versions.get(digest)?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is in the store; a panic while holding it leaves nothing half-done.
        self.releasing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The network's release history, oldest first.
    pub fn releases(&self) -> Result<Vec<Release>, HubError> {
        Ok(self.releases.get(RELEASES)?.unwrap_or_default())
    }

    /// The version released to the network now.
    pub fn released(&self) -> Result<Option<String>, HubError> {
        Ok(self.releases()?.last().map(|r| r.digest.clone()))
    }

    /// Releases `digest` to every site that is not pinned.
    pub fn release(&self, digest: &str, by: &str) -> Result<(), HubError> {
        let _guard = self.lock();
        let mut version = self
            .versions
            .get(digest)?
            .ok_or_else(|| config(format!("no model version {digest}")))?;
        if version.withdrawn.take().is_some() {
            self.versions.put_durable(digest, &version)?;
        }
        let mut history = self.releases()?;
        if history.last().is_some_and(|r| r.digest == digest) {
            return Ok(());
        }
        history.push(Release {
            digest: digest.to_string(),
            at: OffsetDateTime::now_utc(),
            by: by.to_string(),
        });
        self.releases.put_durable(RELEASES, &history)?;
        tracing::info!(%digest, %by, "model version released to the network");
        self.changed.notify_one();
        Ok(())
    }

    /// Withdraws the released version and releases the one before it that is not withdrawn.
    /// Returns the version now released.
    pub fn rollback(&self, by: &str, reason: &str) -> Result<String, HubError> {
        let _guard = self.lock();
        let mut history = self.releases()?;
        let current = history
            .last()
            .cloned()
            .ok_or_else(|| config("no version has been released: nothing to roll back"))?;
        let target = history
            .iter()
            .rev()
            .skip(1)
            .find(|r| {
                r.digest != current.digest
                    && self
                        .versions
                        .get(&r.digest)
                        .ok()
                        .flatten()
                        .is_some_and(|v| v.withdrawn.is_none())
            })
            .cloned()
            .ok_or_else(|| config("no earlier release to roll back to"))?;
        if let Some(mut version) = self.versions.get(&current.digest)? {
            version.withdrawn = Some(format!("rolled back by {by}: {reason}"));
            self.versions.put_durable(&current.digest, &version)?;
        }
        history.push(Release {
            digest: target.digest.clone(),
            at: OffsetDateTime::now_utc(),
            by: by.to_string(),
        });
        self.releases.put_durable(RELEASES, &history)?;
        tracing::warn!(withdrawn = %current.digest, released = %target.digest, %by, %reason, "model version rolled back");
        self.changed.notify_one();
        Ok(target.digest)
    }

    /// Pins `site` to `digest` (or unpins it with `None`).
    pub fn pin(&self, site: &str, digest: Option<&str>) -> Result<(), HubError> {
        if let Some(digest) = digest {
            if self.versions.get(digest)?.is_none() {
                return Err(config(format!("no model version {digest}")));
            }
        }
        self.sites.update(site, |current| {
            let mut model = current.unwrap_or_default();
            model.pinned = digest.map(str::to_string);
            Some(model)
        })?;
        self.sites.flush()?;
        self.changed.notify_one();
        Ok(())
    }

    /// The version `site` should run: its pin, else the canary version if it is a canary site
    /// (`canary`, from [`crate::canary::Canaries::target_for`]), else the network's release.
    pub fn target_for(
        &self,
        site: &str,
        canary: Option<String>,
    ) -> Result<Option<String>, HubError> {
        if let Some(pinned) = self.sites.get(site)?.and_then(|s| s.pinned) {
            return Ok(Some(pinned));
        }
        if canary.is_some() {
            return Ok(canary);
        }
        self.released()
    }

    /// Records a site's evaluation of a version it was sent or runs; false if the version is
    /// not in the registry.
    pub fn evaluated(
        &self,
        site: &str,
        report: &grassroots_wire::models::ModelEvaluationReport,
    ) -> Result<bool, HubError> {
        let _guard = self.lock();
        let Some(mut version) = self.versions.get(&report.digest)? else {
            return Ok(false);
        };
        version
            .site_evaluations
            .insert(site.to_string(), report.clone());
        self.versions.put_durable(&report.digest, &version)?;
        Ok(true)
    }

    /// Withdraws a version that is not released (a canary that failed): never offered again
    /// unless an admin releases it.
    pub fn withdraw(&self, digest: &str, reason: &str) -> Result<(), HubError> {
        let _guard = self.lock();
        if let Some(mut version) = self.versions.get(digest)? {
            version.withdrawn = Some(reason.to_string());
            self.versions.put_durable(digest, &version)?;
        }
        tracing::warn!(%digest, %reason, "model version withdrawn");
        self.changed.notify_one();
        Ok(())
    }

    pub fn site(&self, site: &str) -> Result<SiteModel, HubError> {
        Ok(self.sites.get(site)?.unwrap_or_default())
    }

    pub fn site_models(&self) -> Result<Vec<(String, SiteModel)>, HubError> {
        Ok(self.sites.entries()?)
    }

    /// The site acknowledged `digest`: it is installed and active there.
    pub fn installed(&self, site: &str, digest: &str) -> Result<(), HubError> {
        self.sites.update(site, |current| {
            let mut model = current.unwrap_or_default();
            if model.running.as_deref() != Some(digest) {
                model.previous = model.running.take();
                model.running = Some(digest.to_string());
            }
            model.refused = None;
            model.reported_at = Some(OffsetDateTime::now_utc());
            Some(model)
        })?;
        self.sites.flush()?;
        Ok(())
    }

    /// The site refused `digest` with `reason`.
    pub fn refused(&self, site: &str, digest: &str, reason: &str) -> Result<(), HubError> {
        self.sites.update(site, |current| {
            let mut model = current.unwrap_or_default();
            model.refused = Some((digest.to_string(), reason.to_string()));
            Some(model)
        })?;
        self.sites.flush()?;
        Ok(())
    }

    /// A status report from the site (sent at start and after changes).
    pub fn reported(&self, site: &str, report: &ModelStatusReport) -> Result<(), HubError> {
        self.sites.update(site, |current| {
            let mut model = current.unwrap_or_default();
            model.running = report.active.as_ref().map(|m| m.digest.clone());
            model.previous = report.previous.as_ref().map(|m| m.digest.clone());
            model.reported_at = Some(OffsetDateTime::now_utc());
            Some(model)
        })?;
        self.sites.flush()?;
        Ok(())
    }

    /// Every version, newest first, with the sites running each.
    pub fn rows(&self) -> Result<Vec<VersionRow>, HubError> {
        let released = self.released()?;
        let sites = self.site_models()?;
        let mut rows: Vec<VersionRow> = self
            .versions
            .entries()?
            .into_iter()
            .map(|(digest, version)| VersionRow {
                parent: version.lineage.parent.clone(),
                released: released.as_deref() == Some(digest.as_str()),
                sites: sites
                    .iter()
                    .filter(|(_, s)| s.running.as_deref() == Some(digest.as_str()))
                    .map(|(site, _)| site.clone())
                    .collect(),
                version,
            })
            .collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.version.added_at));
        Ok(rows)
    }
}
