//! The edge's configuration: a typed struct with defaults, validated once at start.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::EdgeError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// The edge's data directory (store, blobs).
    pub data_dir: PathBuf,
    /// Where the web UI and APIs listen (HTTP, hospital network).
    pub http_listen: SocketAddr,
    /// Dial this address instead of the kit's (a NAT or DNS rewrite at the site).
    pub hub_addr: Option<String>,
    /// The only folder from which files may be queued for the hub (default: DATA/outgoing).
    /// Nothing else on the edge — its kit, its store, patient files — can be sent that way.
    pub outgoing_dir: Option<PathBuf>,
    /// The scanner's folder to import slides from (none: no watching).
    pub watch_dir: Option<PathBuf>,
    /// How long a file in the watched folder must stay unchanged before it is taken, ms.
    pub watch_settle_ms: u64,
    /// Folder with the PP-OCRv4 label-reading models (none: labels are not read).
    pub ocr_models_dir: Option<PathBuf>,
    /// Regular expression of this site's pathology numbers, as printed on slide labels.
    pub pathology_number_pattern: String,
    /// How certain the least certain character of a number read from a label must be for the
    /// slide to be linked to that case without a person (below: a suggestion only).
    pub ocr_link_confidence: f32,
    /// Memory for rendered tiles, bytes.
    pub tile_cache_bytes: usize,
    /// Tiles rendered at once (blocking OpenSlide reads); default: twice the cores.
    pub render_threads: Option<usize>,
    /// Cap on bulk upload speed, bytes per second, so a thin uplink stays usable.
    pub bulk_rate_limit_bytes_per_sec: Option<u64>,
    /// Pace bulk uploads so they leave the uplink's queue to live traffic (consult tiles); off
    /// only sends them as fast as the congestion controller allows.
    pub bulk_yields_to_live: bool,
    /// The network's calendar for daily coverage figures: hours east of UTC (Asia/Shanghai: 8).
    pub coverage_offset_hours: i8,
    /// How often the edge sends its daily coverage figures to the hub, seconds.
    pub coverage_every_s: u64,
    /// Invent this many days of plausible coverage history on first start, marked as demo
    /// figures everywhere they appear (demonstrations only; 0: none).
    pub demo_history_days: u32,
    /// A file holding the token scrapers send to read `/metrics`; without one, only a
    /// signed-in admin reads it.
    pub metrics_token_file: Option<PathBuf>,
    /// Reverse proxies trusted to name the client in `X-Forwarded-For` (login throttling).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The largest slide an upload may bring (larger ones are cut off and refused).
    pub max_upload_bytes: u64,
    /// Free space an upload must leave in the data directory (for the store and the slides).
    pub min_free_disk_bytes: u64,
    /// Warn when the site certificate expires within this many days.
    pub expiry_warning_days: i64,
    /// Add `Secure` to session cookies (serve the UI behind HTTPS).
    pub secure_cookies: bool,
    /// Serve the web UI over HTTPS with this certificate (secure cookies follow).
    pub web_tls: Option<grassroots_web::tls::WebTlsSettings>,
    /// Congestion controller for what the edge sends (BBR holds up better on lossy uplinks).
    pub congestion: grassroots_transport::Congestion,
    /// A screening model package to install at start (verified with the network's
    /// model-signing key; a bad one is refused and the installed model stays).
    pub screening_model: Option<PathBuf>,
    /// Grid cells per side of a screening part: the work a killed edge may have to redo.
    pub screening_part_cells: u32,
    /// Threads classifying tiles; default: the cores.
    pub screening_workers: Option<usize>,
    /// Take no part in federated rounds (tasks are recorded and skipped with this reason).
    pub federated_opt_out: bool,
    /// When a new model is installed, screen again the slides staff have not reviewed (no
    /// sign-off, no expert's answer). Reviewed slides never change.
    pub rescreen_on_new_model: bool,
    /// Train federated rounds on this fixed tile set (`grassroots model validation-set`'s
    /// format) instead of tiles cut from the site's labels: for benchmarks and reproducible
    /// comparisons, where every system must see the same data.
    pub federated_training_tiles: Option<PathBuf>,
    /// Where the DICOM listener (C-ECHO, C-STORE, C-FIND) listens; none: no listener.
    pub dicom_listen: Option<SocketAddr>,
    /// This edge's AE title, which modalities and PACS call.
    pub dicom_ae_title: String,
    /// `AE@HOST` entries: only these calling AEs may associate (empty: any may).
    pub dicom_allow: Vec<String>,
    /// Answer C-FIND from any AE when there is no allow list.
    pub dicom_find_from_anyone: bool,
    /// Memory for series' volumes (reformatted views), MiB; the least recently viewed go first.
    pub volume_budget_mib: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("edge-data"),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8441)),
            hub_addr: None,
            outgoing_dir: None,
            watch_dir: None,
            watch_settle_ms: 5_000,
            ocr_models_dir: None,
            pathology_number_pattern: r"[A-Z]{1,3}\d{2}-\d{4,6}".to_string(),
            ocr_link_confidence: 0.8,
            tile_cache_bytes: 256 * 1024 * 1024,
            render_threads: None,
            bulk_rate_limit_bytes_per_sec: None,
            bulk_yields_to_live: true,
            coverage_offset_hours: grassroots_wire::coverage::DEFAULT_OFFSET_HOURS,
            coverage_every_s: 3600,
            demo_history_days: 0,
            metrics_token_file: None,
            trusted_proxies: Vec::new(),
            max_upload_bytes: 50 << 30,
            min_free_disk_bytes: 1 << 30,
            expiry_warning_days: 30,
            secure_cookies: false,
            web_tls: None,
            congestion: grassroots_transport::Congestion::default(),
            screening_model: None,
            screening_part_cells: crate::screening::CELLS_PER_PART,
            screening_workers: None,
            federated_opt_out: false,
            rescreen_on_new_model: true,
            federated_training_tiles: None,
            dicom_listen: None,
            dicom_ae_title: "GRASSROOTS".to_string(),
            dicom_allow: Vec::new(),
            dicom_find_from_anyone: false,
            volume_budget_mib: 1024,
        }
    }
}

impl EdgeConfig {
    pub fn render_threads(&self) -> usize {
        self.render_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()) * 2)
    }

    pub fn outgoing_dir(&self) -> PathBuf {
        self.outgoing_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("outgoing"))
    }

    /// Resolves a file to queue for the hub, refusing anything outside the outgoing folder
    /// (symbolic links and `..` are resolved first).
    pub fn outgoing_file(&self, requested: &std::path::Path) -> Result<PathBuf, EdgeError> {
        let dir = self.outgoing_dir();
        let outside = || {
            EdgeError::Config(format!(
                "{} is not a file in the outgoing folder {}; only files placed there can be sent to the hub",
                requested.display(),
                dir.display()
            ))
        };
        let root = dir.canonicalize().map_err(|_| outside())?;
        let resolved = root.join(requested).canonicalize().map_err(|_| outside())?;
        if !resolved.starts_with(&root) || !resolved.is_file() {
            return Err(outside());
        }
        Ok(resolved)
    }

    pub fn validate(&self) -> Result<(), EdgeError> {
        // With today, the history must fit one report.
        if self.demo_history_days >= grassroots_wire::coverage::MAX_DAYS as u32 {
            return Err(EdgeError::Config(format!(
                "demo_history_days is at most {}",
                grassroots_wire::coverage::MAX_DAYS - 1
            )));
        }
        if !(-12..=14).contains(&self.coverage_offset_hours) {
            return Err(EdgeError::Config(format!(
                "a time zone offset of {} hours (between -12 and 14)",
                self.coverage_offset_hours
            )));
        }
        if self.bulk_rate_limit_bytes_per_sec == Some(0) {
            return Err(EdgeError::Config(
                "bulk_rate_limit_bytes_per_sec must be positive (omit it for no limit)".into(),
            ));
        }
        let ae = self.dicom_ae_title.trim();
        if ae.is_empty()
            || ae.len() > 16
            || ae.contains(['\\', '@'])
            || !ae.is_ascii()
            || ae.chars().any(char::is_control)
        {
            return Err(EdgeError::Config(format!(
                "AE title {:?}: 1 to 16 ASCII characters, without a backslash",
                self.dicom_ae_title
            )));
        }
        if self.screening_part_cells < 2 {
            return Err(EdgeError::Config(
                "screening_part_cells must be at least 2".into(),
            ));
        }
        if let Some(addr) = &self.hub_addr {
            if !addr.contains(':') {
                return Err(EdgeError::Config(format!(
                    "hub address {addr:?} must be HOST:PORT"
                )));
            }
        }
        Ok(())
    }
}
