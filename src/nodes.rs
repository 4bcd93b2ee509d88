//! `grassroots hub` and `grassroots edge`: parse flags into the nodes' typed configurations,
//! start them, and stop them cleanly on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use grassroots_provisioning::Kit;

/// HTTPS for a node's web UI; shared by `hub` and `edge`.
#[derive(Args)]
pub struct WebTlsArgs {
    /// Serve the web UI over HTTPS with this certificate (PEM, with any intermediates after
    /// it); a changed file is picked up within seconds. Needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The web certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also answer plain HTTP on this address, with a redirect to HTTPS.
    #[arg(long, requires = "tls_cert")]
    pub http_redirect: Option<SocketAddr>,
}

impl WebTlsArgs {
    fn settings(&self) -> Option<grassroots_web::tls::WebTlsSettings> {
        Some(grassroots_web::tls::WebTlsSettings {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            redirect_from: self.http_redirect,
        })
    }
}

/// How the nodes say where their web UI is.
fn web_url(https: bool, addr: SocketAddr) -> String {
    format!("{}://{addr}", if https { "https" } else { "http" })
}

#[derive(Args)]
pub struct HubArgs {
    /// The hub's startup kit (kits/hub.kit).
    #[arg(long)]
    pub kit: PathBuf,
    /// Data directory (store, received blobs).
    #[arg(long)]
    pub data: PathBuf,
    /// QUIC listen address; default: the address in the kit.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// HTTP listen address of the web UI.
    #[arg(long, default_value = "127.0.0.1:8440")]
    pub http: SocketAddr,
    #[command(flatten)]
    pub web_tls: WebTlsArgs,
    /// Revocation list to watch; default: crl.pem of the provisioning directory the kit is in.
    #[arg(long)]
    pub crl: Option<PathBuf>,
    /// Heartbeat period edges must keep, milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub heartbeat_ms: u64,
    /// Tiles moved ahead of the expert per consult (overview and marked regions), MiB; 0: off.
    #[arg(long, default_value_t = 64)]
    pub consult_prefetch_mib: u64,
    /// The network's model-signing key, with which the hub signs the versions rounds make;
    /// default: model-signing.key of the provisioning directory the kit is in.
    #[arg(long)]
    pub model_signing_key: Option<PathBuf>,
    /// The hub's validation tiles (`grassroots model validation-set`), public tissue only.
    #[arg(long)]
    pub validation_set: Option<PathBuf>,
    /// Start a federated round this many seconds after the last one ended; 0: only when an
    /// admin asks (POST /api/v1/rounds).
    #[arg(long, default_value_t = 0)]
    pub rounds_every_s: u64,
    /// Seconds from a round's start to its deadline.
    #[arg(long, default_value_t = 600)]
    pub rounds_deadline_s: u64,
    /// Fewest sites a round needs.
    #[arg(long, default_value_t = 2)]
    pub rounds_min_sites: usize,
    /// Local training epochs per round.
    #[arg(long, default_value_t = 2)]
    pub rounds_local_epochs: usize,
    /// How updates are combined: fedavg, median or trimmed-mean (one from each end).
    #[arg(long, default_value = "fedavg")]
    pub rounds_rule: String,
    /// Sites that run a round's version first; their evaluations on their own sign-offs
    /// release it or roll it back (comma-separated; default: release to all at once).
    #[arg(long, value_delimiter = ',')]
    pub canary_sites: Vec<String>,
    /// Differential privacy: the noise multiplier each round's updates carry (with
    /// --dp-clip and --dp-epsilon-budget); off when not given.
    #[arg(long, requires_all = ["dp_clip", "dp_epsilon_budget"])]
    pub dp_noise: Option<f32>,
    /// Differential privacy: the L2 norm each site's update is clipped to.
    #[arg(long)]
    pub dp_clip: Option<f32>,
    /// Differential privacy: the network's total epsilon; no round is started past it.
    #[arg(long)]
    pub dp_epsilon_budget: Option<f64>,
    /// Differential privacy: the delta the epsilon is stated for.
    #[arg(long, default_value_t = 1e-5)]
    pub dp_delta: f64,
    /// Secure aggregation: the hub learns only the sum of the sites' updates (pairwise masks,
    /// Bonawitz et al. 2017). Runs with --rounds-rule fedavg; clip with --dp-clip.
    #[arg(long)]
    pub secure_aggregation: bool,
    /// Coverage alerts: post new and cleared alerts as JSON to this URL.
    #[arg(long)]
    pub alert_webhook: Option<String>,
    /// Coverage alerts: a site silent this many seconds is an alert.
    #[arg(long, default_value_t = 86_400)]
    pub alert_silent_after_s: u64,
    /// Coverage alerts: a needs-rescan share of screened slides above this is an alert.
    #[arg(long, default_value_t = 0.2)]
    pub alert_qc_failure_rate: f64,
    /// Coverage alerts: the network's referral target; a referral unanswered longer is an alert.
    #[arg(long, default_value_t = 72)]
    pub referral_target_hours: i64,
    /// Coverage alerts: a site whose data disk has less than this share free is an alert.
    #[arg(long, default_value_t = 0.1)]
    pub alert_disk_free_share: f64,
    /// Coverage alerts: how often to check for alerts to post, seconds.
    #[arg(long, default_value_t = 300)]
    pub alert_check_every_s: u64,
    /// Region outlines for the coverage map: a GeoJSON file of Polygons and MultiPolygons
    /// (with a `name` property each).
    #[arg(long)]
    pub region_outlines: Option<PathBuf>,
    /// A file holding the token Prometheus sends to read /metrics (Authorization: Bearer);
    /// without one, only a signed-in admin reads it.
    #[arg(long)]
    pub metrics_token_file: Option<PathBuf>,
    /// The largest bulk transfer of a kind without its own cap (kinds the hub knows, such as
    /// referrals and round updates, have tighter caps), MiB.
    #[arg(long, default_value_t = 256)]
    pub max_transfer_mib: u64,
    /// What one site may send the hub in a UTC day, MiB.
    #[arg(long, default_value_t = 4096)]
    pub site_daily_mib: u64,
    /// Free space kept for the hub's own records: below it, bulk transfers are refused, MiB.
    #[arg(long, default_value_t = 1024)]
    pub min_free_disk_mib: u64,
    /// A reverse proxy in front of the web UI, trusted to name the client in X-Forwarded-For
    /// (login throttling); repeatable. Without it, the header is ignored.
    #[arg(long = "trusted-proxy")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

#[derive(Args)]
pub struct EdgeArgs {
    /// This site's startup kit.
    #[arg(long)]
    pub kit: PathBuf,
    /// Data directory (store, blobs).
    #[arg(long)]
    pub data: PathBuf,
    /// HTTP listen address of the web UI.
    #[arg(long, default_value = "127.0.0.1:8441")]
    pub http: SocketAddr,
    #[command(flatten)]
    pub web_tls: WebTlsArgs,
    /// Dial this hub address instead of the kit's.
    #[arg(long)]
    pub hub_addr: Option<String>,
    /// The folder from which files may be queued for the hub (default: DATA/outgoing).
    #[arg(long)]
    pub outgoing: Option<PathBuf>,
    /// The scanner's folder: slides written there are imported once complete.
    #[arg(long)]
    pub watch: Option<PathBuf>,
    /// How long a file must stay unchanged before it counts as complete, milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub watch_settle_ms: u64,
    /// Folder with the PP-OCRv4 models that read slide labels (scripts/fetch-fixtures DIR puts
    /// them in DIR/ocr).
    #[arg(long)]
    pub ocr_models: Option<PathBuf>,
    /// Regular expression of this site's pathology numbers on slide labels.
    #[arg(long)]
    pub pathology_pattern: Option<String>,
    /// Link a slide to the case read from its label only if the number's least certain
    /// character is at least this probable (0-1); below, the number is a suggestion.
    #[arg(long, default_value_t = 0.8)]
    pub ocr_link_confidence: f32,
    /// Cap bulk uploads to this many megabits per second.
    #[arg(long)]
    pub bulk_limit_mbps: Option<f64>,
    /// Send bulk uploads as fast as the congestion controller allows, instead of pacing them to
    /// leave the uplink's queue to consult traffic (for measurements; not for a shared uplink).
    #[arg(long)]
    pub bulk_full_speed: bool,
    /// The network's calendar for the daily coverage figures sent to the hub: hours east of
    /// UTC (default 8, Asia/Shanghai).
    #[arg(long, default_value_t = 8, allow_hyphen_values = true)]
    pub time_zone_offset_hours: i8,
    /// How often to send the daily coverage figures to the hub, seconds.
    #[arg(long, default_value_t = 3600)]
    pub coverage_every_s: u64,
    /// Invent this many days of plausible coverage history on first start, marked as demo
    /// figures at the hub (for demonstrations; never on a real site).
    #[arg(long, default_value_t = 0)]
    pub demo_history_days: u32,
    /// A file holding the token Prometheus sends to read /metrics (Authorization: Bearer);
    /// without one, only a signed-in admin reads it.
    #[arg(long)]
    pub metrics_token_file: Option<PathBuf>,
    /// A reverse proxy in front of the web UI, trusted to name the client in X-Forwarded-For
    /// (login throttling); repeatable. Without it, the header is ignored.
    #[arg(long = "trusted-proxy")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The largest slide an upload through the API may be, MiB.
    #[arg(long, default_value_t = 51_200)]
    pub max_upload_mib: u64,
    /// Free space an upload must leave in the data directory, MiB.
    #[arg(long, default_value_t = 1024)]
    pub min_free_disk_mib: u64,
    /// A screening model package (`grassroots model train`) to install, verified with the
    /// network's model-signing key; a bad one is refused and the installed model stays.
    #[arg(long)]
    pub screening_model: Option<PathBuf>,
    /// Grid cells per side of a screening part (the work a killed edge may redo).
    #[arg(long, default_value_t = grassroots_edge::EdgeConfig::default().screening_part_cells)]
    pub screening_part_cells: u32,
    /// Take no part in federated rounds.
    #[arg(long)]
    pub federated_opt_out: bool,
    /// When a new model is installed, screen again the slides not yet reviewed (no sign-off,
    /// no expert's answer); `false` keeps every result as first screened.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub rescreen_on_new_model: bool,
    /// Train federated rounds on this fixed tile set instead of the site's labels (benchmarks).
    #[arg(long)]
    pub federated_training_tiles: Option<PathBuf>,
    /// Listen for DICOM (C-ECHO, C-STORE, C-FIND) on this address, e.g. 0.0.0.0:11112.
    #[arg(long)]
    pub dicom: Option<SocketAddr>,
    /// This edge's AE title, which the hospital's machines call.
    #[arg(long, default_value = "GRASSROOTS")]
    pub ae_title: String,
    /// Only this calling AE, from this host, may send or query (AE@HOST; repeatable). Without
    /// it, any AE may, as in Orthanc.
    #[arg(long = "dicom-allow")]
    pub dicom_allow: Vec<String>,
    /// Answer C-FIND (which lists patients) from any AE even without --dicom-allow.
    #[arg(long)]
    pub dicom_find_from_anyone: bool,
}

fn load_kit(path: &std::path::Path) -> Result<Kit> {
    Kit::load(path).with_context(|| format!("cannot use the startup kit {}", path.display()))
}

/// The provisioning directory's `model-signing.key` when the kit sits in its `kits/` folder.
fn default_signing_key(kit_path: &std::path::Path) -> Option<PathBuf> {
    let candidate = kit_path.parent()?.parent()?.join("model-signing.key");
    candidate.is_file().then_some(candidate)
}

/// The provisioning directory's `crl.pem` when the kit sits in its `kits/` folder.
fn default_crl(kit_path: &std::path::Path) -> Option<PathBuf> {
    let candidate = kit_path.parent()?.parent()?.join("crl.pem");
    candidate.is_file().then_some(candidate)
}

pub async fn run_hub(args: HubArgs) -> Result<()> {
    let kit = load_kit(&args.kit)?;
    let config = grassroots_hub::HubConfig {
        data_dir: args.data,
        quic_listen: args.listen,
        http_listen: args.http,
        web_tls: args.web_tls.settings(),
        revocation_list: args.crl.or_else(|| default_crl(&args.kit)),
        heartbeat_ms: args.heartbeat_ms,
        consult_prefetch_bytes: args.consult_prefetch_mib * 1024 * 1024,
        model_signing_key: args
            .model_signing_key
            .or_else(|| default_signing_key(&args.kit)),
        validation_set: args.validation_set,
        region_outlines: args.region_outlines,
        metrics_token_file: args.metrics_token_file,
        trusted_proxies: args.trusted_proxies,
        quotas: grassroots_hub::quota::QuotaSettings {
            max_offer_bytes: args.max_transfer_mib.saturating_mul(1 << 20),
            site_daily_bytes: args.site_daily_mib.saturating_mul(1 << 20),
            min_free_disk_bytes: args.min_free_disk_mib.saturating_mul(1 << 20),
        },
        alerts: grassroots_hub::coverage_map::AlertSettings {
            silent_after_s: args.alert_silent_after_s,
            qc_failure_rate: args.alert_qc_failure_rate,
            referral_target_hours: args.referral_target_hours,
            disk_free_share: args.alert_disk_free_share,
            webhook: args.alert_webhook,
            check_every_s: args.alert_check_every_s,
            ..Default::default()
        },
        rounds: grassroots_hub::rounds::RoundSettings {
            every_seconds: args.rounds_every_s,
            deadline_seconds: args.rounds_deadline_s,
            min_participants: args.rounds_min_sites,
            local: grassroots_models::federated::LocalTrainingConfig {
                epochs: args.rounds_local_epochs,
                ..Default::default()
            },
            aggregation: grassroots_models::federated::AggregationSettings {
                rule: match args.rounds_rule.as_str() {
                    "fedavg" => grassroots_models::federated::CombiningRule::FedAvg,
                    "median" => grassroots_models::federated::CombiningRule::Median,
                    "trimmed-mean" => {
                        grassroots_models::federated::CombiningRule::TrimmedMean { trim: 1 }
                    }
                    other => {
                        anyhow::bail!("--rounds-rule {other:?}: use fedavg, median or trimmed-mean")
                    }
                },
                // Outlier refusal needs each update: the secure sum has none to compare.
                outlier_factor: if args.secure_aggregation {
                    None
                } else {
                    grassroots_models::federated::AggregationSettings::default().outlier_factor
                },
                ..Default::default()
            },
            secure_aggregation: args.secure_aggregation,
            canary_sites: args.canary_sites,
            privacy: match (args.dp_noise, args.dp_clip, args.dp_epsilon_budget) {
                (Some(noise_multiplier), Some(clip_norm), Some(epsilon_budget)) => {
                    Some(grassroots_hub::rounds::PrivacySettings {
                        clip_norm,
                        noise_multiplier,
                        delta: args.dp_delta,
                        epsilon_budget,
                    })
                }
                _ => None,
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let hub = grassroots_hub::start(config, kit).await?;
    println!(
        "hub listening: QUIC {} · web {}",
        hub.quic_addr,
        web_url(hub.https, hub.http_addr)
    );
    if let Some(redirect) = hub.redirect_addr {
        println!("redirecting http://{redirect} to HTTPS");
    }
    grassroots_web::shutdown::signal().await;
    tracing::info!("shutting down");
    hub.shutdown().await;
    Ok(())
}

pub async fn run_edge(args: EdgeArgs) -> Result<()> {
    let kit = load_kit(&args.kit)?;
    let config = grassroots_edge::EdgeConfig {
        data_dir: args.data,
        http_listen: args.http,
        web_tls: args.web_tls.settings(),
        hub_addr: args.hub_addr,
        outgoing_dir: args.outgoing,
        watch_dir: args.watch,
        watch_settle_ms: args.watch_settle_ms,
        ocr_models_dir: args.ocr_models,
        ocr_link_confidence: args.ocr_link_confidence,
        pathology_number_pattern: args
            .pathology_pattern
            .unwrap_or_else(|| grassroots_edge::EdgeConfig::default().pathology_number_pattern),
        bulk_rate_limit_bytes_per_sec: args
            .bulk_limit_mbps
            .map(|mbps| (mbps * 1_000_000.0 / 8.0) as u64),
        bulk_yields_to_live: !args.bulk_full_speed,
        coverage_offset_hours: args.time_zone_offset_hours,
        coverage_every_s: args.coverage_every_s,
        demo_history_days: args.demo_history_days,
        metrics_token_file: args.metrics_token_file,
        trusted_proxies: args.trusted_proxies,
        max_upload_bytes: args.max_upload_mib.saturating_mul(1 << 20),
        min_free_disk_bytes: args.min_free_disk_mib.saturating_mul(1 << 20),
        screening_model: args.screening_model,
        screening_part_cells: args.screening_part_cells,
        federated_opt_out: args.federated_opt_out,
        rescreen_on_new_model: args.rescreen_on_new_model,
        federated_training_tiles: args.federated_training_tiles,
        dicom_listen: args.dicom,
        dicom_ae_title: args.ae_title,
        dicom_allow: args.dicom_allow,
        dicom_find_from_anyone: args.dicom_find_from_anyone,
        ..Default::default()
    };
    let edge = grassroots_edge::start(config, kit).await?;
    println!("edge running: web {}", web_url(edge.https, edge.http_addr));
    if let Some(dicom) = edge.dicom_addr {
        println!("DICOM listener on {dicom}");
    }
    if let Some(redirect) = edge.redirect_addr {
        println!("redirecting http://{redirect} to HTTPS");
    }
    grassroots_web::shutdown::signal().await;
    tracing::info!("shutting down");
    edge.shutdown().await;
    Ok(())
}
