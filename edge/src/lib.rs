//! The Grassroots edge node, one per county hospital.
//!
//! It dials the hub over QUIC with its site certificate and keeps that link alive (heartbeats,
//! reconnect with jittered back-off), sends bulk transfers from a durable outbox, accepts the
//! streams the hub opens, and serves its web UI on the hospital network. Later work adds slides,
//! screening and consults on top of this; raw images and patient identifiers never leave it.

mod assets;
pub mod cases;
mod config;
pub mod consult_egress;
pub mod coverage;
pub mod coverage_demo;
mod federated;
mod federated_pages;
mod http;
pub use http::NAV;
mod dicomweb;
mod dicomweb_accept;
mod dicomweb_transfer;
pub mod hub_trust;
mod import_queue;
mod ingest;
pub mod labels;
mod live;
mod metrics;
mod model_evaluation;
mod model_sync;
pub mod outbox;
mod referral_pages;
mod referral_privacy;
pub mod referrals;
mod render_socket;
pub mod screening;
mod secure_rounds;
pub mod slides;
pub mod studies;
mod study_measures;
pub mod study_referrals;
mod study_viewer;
mod training_tiles;
mod viewer;
mod volume_viewer;
mod worklist;

use std::net::SocketAddr;
use std::sync::Arc;

use grassroots_provisioning::Kit;
use grassroots_store::Store;
use grassroots_transport::link::{EdgeLink, EdgeLinkHandle, StreamHandler};
use grassroots_transport::{BlobStore, EdgeEndpoint, LinkState, SendOptions, TransportError};
use grassroots_wire::Message;
use tokio::sync::watch;

pub use config::EdgeConfig;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Provisioning(#[from] grassroots_provisioning::ProvisioningError),
    #[error(transparent)]
    Store(#[from] grassroots_store::StoreError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Web(#[from] grassroots_web::WebError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// An I/O error on `path`, as the edge reports it.
pub(crate) fn io_error(path: &std::path::Path) -> impl Fn(std::io::Error) -> EdgeError + '_ {
    move |e| EdgeError::Config(format!("{}: {e}", path.display()))
}

pub(crate) struct EdgeState {
    pub config: EdgeConfig,
    pub kit: Kit,
    pub store: Store,
    pub link: EdgeLinkHandle,
    pub outbox: outbox::Outbox,
    pub slides: Arc<slides::SlideLibrary>,
    pub screening: Arc<screening::jobs::ScreeningJobs>,
    pub referrals: Arc<referrals::Referrals>,
    /// The ledger of every tile that left for a consult.
    pub egress: consult_egress::ConsultEgress,
    /// The network's revocation list as the hub passed it on (`hub_trust.rs`).
    pub hub_trust: Arc<hub_trust::HubTrust>,
    /// Staff accounts and sessions (the web layer uses this same instance).
    pub accounts: grassroots_web::Accounts,
    pub live: live::LiveSessions,
    pub labels: labels::Labels,
    pub federated: federated::FederatedParticipant,
    /// The radiology archive and its index (`grassroots_dicom`).
    pub studies: grassroots_dicom::Ingest,
    /// Series' volumes for reformatting, shared by every viewer (`study_viewer.rs`).
    pub volumes: Arc<grassroots_dicom::volume::VolumeCache>,
}

impl EdgeState {
    /// This edge's name in page titles: "County A (county-a)".
    pub(crate) fn page_title(&self) -> String {
        format!("{} ({})", self.kit.site_name, self.kit.site_id)
    }
}

pub struct RunningEdge {
    pub http_addr: SocketAddr,
    /// The web UI is served over HTTPS (`--tls-cert`).
    pub https: bool,
    /// Where plain HTTP is redirected to HTTPS from (`--http-redirect`).
    pub redirect_addr: Option<SocketAddr>,
    pub link: EdgeLinkHandle,
    /// What the edge sends the hub (benchmarks queue background transfers here).
    pub outbox: outbox::Outbox,
    /// Where the DICOM listener listens (`--dicom`).
    pub dicom_addr: Option<SocketAddr>,
    dicom: Option<grassroots_dicom::DicomListener>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningEdge {
    pub async fn shutdown(self) {
        // No new associations; those under way finish on their own threads.
        drop(self.dicom);
        self.shutdown.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts an edge: opens its store, starts dialling the hub, serves HTTP.
pub async fn start(config: EdgeConfig, kit: Kit) -> Result<RunningEdge, EdgeError> {
    config.validate()?;
    let mut config = config;
    // Cookies marked Secure whenever the browser reaches the node over HTTPS.
    config.secure_cookies |= config.web_tls.is_some();
    if kit.role != grassroots_provisioning::Role::Edge {
        return Err(EdgeError::Config(format!(
            "the kit is for the {} ({}); an edge needs a site kit from `grassroots provision add-site`",
            kit.site_id,
            kit.role.as_str()
        )));
    }
    kit.identity()?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| EdgeError::Config(format!("{}: {e}", config.data_dir.display())))?;
    let store = Store::open(&config.data_dir)?;
    let outgoing = config.outgoing_dir();
    std::fs::create_dir_all(&outgoing)
        .map_err(|e| EdgeError::Config(format!("{}: {e}", outgoing.display())))?;
    let blobs = BlobStore::open(&config.data_dir.join("blobs"))?;
    // Partial blobs the hub stopped sending a week ago are not coming back as they are.
    let freed = blobs.sweep_partials(std::time::Duration::from_secs(7 * 86_400));
    if freed > 0 {
        tracing::info!(freed_bytes = freed, "stale partial blobs swept");
    }
    let hub_addr = config.hub_addr.as_deref().unwrap_or(&kit.hub_addr);
    let endpoint = EdgeEndpoint::with_options(&kit, hub_addr, config.congestion)?;
    let hub_trust = Arc::new(hub_trust::HubTrust::open(
        &config.data_dir,
        &kit,
        Some(endpoint.clone()),
    ));
    let (link, link_handle) = EdgeLink::new(
        endpoint,
        concat!("grassroots-edge/", env!("CARGO_PKG_VERSION")),
        rand::random(),
    );
    let outbox = outbox::Outbox::new(store.table("outbox")?, blobs.clone());
    let (metrics, registry) =
        metrics::EdgeMetrics::register(prometheus_client::registry::Registry::default());
    let slide_library = Arc::new(open_slides(&config, &store)?);
    let model = Arc::new(screening::active_model::ActiveModel::open(
        &config.data_dir,
        &kit.model_signing_public_key,
    )?);
    if let Some(package) = &config.screening_model {
        // A bad package is logged and shown on the status page; the installed model stays.
        if let Err(error) = model.install_file(package) {
            tracing::error!(package = %package.display(), %error, "screening model not installed");
        }
    }
    let screening = Arc::new(screening::jobs::ScreeningJobs::new(
        &config.data_dir,
        store.table("screening")?,
        slide_library.clone(),
        model,
        screening::jobs::JobOptions {
            part_cells: config.screening_part_cells,
            workers: config
                .screening_workers
                .unwrap_or_else(screening::default_workers),
        },
    ));
    let studies = grassroots_dicom::Ingest::open(&store, &config.data_dir, &config.dicom_ae_title)
        .map_err(|error| EdgeError::Config(error.to_string()))?;
    let referrals = Arc::new(referrals::Referrals::open(
        kit.clone(),
        &config.data_dir,
        &outgoing,
        store.table("referrals")?,
        referrals::ReferralParts {
            outbox: outbox.clone(),
            slides: slide_library.clone(),
            screening: screening.clone(),
            hub_trust: hub_trust.clone(),
            studies: studies.index.clone(),
        },
    )?);
    match referrals.requeue().await {
        Ok(0) => {}
        Ok(queued) => tracing::info!(queued, "queued referrals a crash had left unqueued"),
        Err(error) => tracing::error!(%error, "could not queue recorded referrals"),
    }
    let state = Arc::new(EdgeState {
        config: config.clone(),
        kit: kit.clone(),
        store: store.clone(),
        link: link_handle.clone(),
        outbox: outbox.clone(),
        slides: slide_library.clone(),
        screening: screening.clone(),
        referrals,
        egress: consult_egress::ConsultEgress::new(store.table("consult_egress")?),
        hub_trust,
        accounts: grassroots_web::Accounts::open(&store)?,
        live: live::LiveSessions::default(),
        labels: labels::Labels::new(store.table("signoffs")?, store.table("label_withdrawals")?),
        federated: federated::FederatedParticipant::open(
            &config.data_dir,
            store.table("federated_rounds")?,
            config.federated_opt_out,
        )?,
        studies,
        volumes: Arc::new(grassroots_dicom::volume::VolumeCache::new(
            config.volume_budget_mib.saturating_mul(1 << 20),
        )),
    });
    let dicom = studies::start_listener(&config, state.studies.clone()).await?;
    // The hub learns what this edge runs (also a model installed while the link was down).
    if let Err(error) = model_sync::report(&state).await {
        tracing::warn!(%error, "cannot queue the model status for the hub");
    }
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| EdgeError::Listen {
            addr: config.http_listen,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| EdgeError::Listen {
        addr: config.http_listen,
        source,
    })?;
    let web = http::web_state(&state, Arc::new(registry))?;
    let router = http::router(state.clone(), web)?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let web_tls = grassroots_web::tls::WebTlsService::start(
        config.web_tls.as_ref(),
        &kit.ca_certificate_der()?,
        http_addr.port(),
        shutdown_rx.clone(),
    )
    .await?;
    let handler = incoming_streams(blobs, state.clone());
    let send_options = SendOptions {
        rate_limit_bytes_per_sec: config.bulk_rate_limit_bytes_per_sec,
        yield_to_live: config.bulk_yields_to_live,
    };
    let mut tasks = vec![
        tokio::spawn(link.run(shutdown_rx.clone(), handler)),
        tokio::spawn(outbox.clone().run(
            link_handle.connection.clone(),
            send_options,
            metrics.clone(),
            shutdown_rx.clone(),
        )),
        tokio::spawn(federated::run(state.clone(), shutdown_rx.clone())),
        tokio::spawn(requeue_referrals(state.clone(), shutdown_rx.clone())),
        tokio::spawn(secure_rounds::run(state.clone(), shutdown_rx.clone())),
        tokio::spawn(coverage::run(
            state.clone(),
            std::time::Duration::from_secs(config.coverage_every_s.max(1)),
            shutdown_rx.clone(),
        )),
        tokio::spawn(watch_link(
            link_handle.state.clone(),
            metrics,
            shutdown_rx.clone(),
        )),
        tokio::spawn(watch_expiry(
            kit.clone(),
            config.expiry_warning_days,
            shutdown_rx.clone(),
        )),
        tokio::spawn(grassroots_web::serve(
            listener,
            router,
            web_tls.tls.clone(),
            shutdown_rx,
        )),
    ];
    let https = web_tls.tls.is_some();
    let redirect_addr = web_tls.redirect_addr;
    tasks.extend(web_tls.tasks);
    tasks.push(tokio::spawn(screening.run(shutdown.subscribe())));
    tasks.push(tokio::spawn(import_queue::serve(
        slide_library.clone(),
        state.studies.clone(),
        config.data_dir.clone(),
        shutdown.subscribe(),
    )));
    if let Some(dir) = config.watch_dir.clone() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| EdgeError::Config(format!("{}: {e}", dir.display())))?;
        let settle = std::time::Duration::from_millis(config.watch_settle_ms);
        tasks.push(tokio::spawn(ingest::watch_folder(
            slide_library,
            dir,
            settle,
            shutdown.subscribe(),
        )));
    }
    tracing::info!(site = %kit.site_id, %http_addr, hub = %config.hub_addr.as_deref().unwrap_or(&kit.hub_addr), "edge running");
    Ok(RunningEdge {
        http_addr,
        https,
        redirect_addr,
        link: link_handle,
        outbox,
        dicom_addr: dicom.as_ref().map(|listener| listener.local_addr()),
        dicom,
        shutdown,
        tasks,
    })
}

/// Imports slides into an edge's data directory, reporting each outcome as it comes. With the
/// edge stopped, opens its store and slide library here and makes everything durable; while the
/// edge runs (it holds the store: sled allows one process per directory), hands each path to it
/// through its import queue and waits up to `patience` for each answer.
pub fn import_slides(
    config: &EdgeConfig,
    paths: &[std::path::PathBuf],
    patience: std::time::Duration,
    mut on_imported: impl FnMut(&std::path::Path, &slides::ImportOutcome),
) -> Result<(), EdgeError> {
    let data = &config.data_dir;
    std::fs::create_dir_all(data)
        .map_err(|e| EdgeError::Config(format!("{}: {e}", data.display())))?;
    let store = match Store::open(data) {
        Ok(store) => store,
        Err(error) if error.is_locked() => {
            return import_queue::submit(data, paths, patience, on_imported)
        }
        Err(error) => return Err(error.into()),
    };
    let library = open_slides(config, &store)?;
    for path in paths {
        let outcome = library.import(path)?;
        on_imported(path, &outcome);
    }
    store.flush()?;
    Ok(())
}

/// Imports DICOM files or folders of them into an edge's radiology archive, reporting each
/// file's outcome: directly when the edge is stopped, through the running edge otherwise.
pub fn import_studies(
    config: &EdgeConfig,
    paths: &[std::path::PathBuf],
    patience: std::time::Duration,
    mut on_line: impl FnMut(&studies::StudyImportLine),
) -> Result<(), EdgeError> {
    let data = &config.data_dir;
    std::fs::create_dir_all(data)
        .map_err(|e| EdgeError::Config(format!("{}: {e}", data.display())))?;
    let store = match Store::open(data) {
        Ok(store) => store,
        Err(error) if error.is_locked() => {
            return import_queue::submit_kind(
                data,
                paths,
                patience,
                import_queue::Kind::Study,
                |path, answer| match answer {
                    import_queue::Answer::Studies(lines) => lines.iter().for_each(&mut on_line),
                    // An edge of an older version took the files for slides.
                    _ => on_line(&studies::StudyImportLine {
                        file: path.to_path_buf(),
                        stored: None,
                        new: false,
                        error: Some(
                            "the running edge does not import studies: update it first".into(),
                        ),
                    }),
                },
            );
        }
        Err(error) => return Err(error.into()),
    };
    let ingest = grassroots_dicom::Ingest::open(&store, data, &config.dicom_ae_title)
        .map_err(|error| EdgeError::Config(error.to_string()))?;
    for path in paths {
        studies::import_lines(&ingest, path)
            .iter()
            .for_each(&mut on_line);
    }
    store.flush()?;
    Ok(())
}

/// Queues, every minute, a referral recorded but not queued (its queueing failed after the
/// record was durable; the doctor was told it is recorded, so it must not be referred twice).
async fn requeue_referrals(state: Arc<EdgeState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            _ = shutdown.changed() => return,
        }
        match state.referrals.requeue().await {
            Ok(0) => {}
            Ok(queued) => tracing::info!(queued, "queued referrals whose queueing had failed"),
            Err(error) => tracing::warn!(%error, "referrals still not queued; will retry"),
        }
    }
}

/// The slide library of an edge's data directory.
pub fn open_slides(config: &EdgeConfig, store: &Store) -> Result<slides::SlideLibrary, EdgeError> {
    let reader = match &config.ocr_models_dir {
        Some(dir) => Some(Arc::new(
            grassroots_models::LabelReader::load(dir).map_err(|e| {
                EdgeError::Config(format!("label OCR models in {}: {e}", dir.display()))
            })?,
        )),
        None => None,
    };
    let cases = cases::CaseLinker::new(
        reader,
        &config.pathology_number_pattern,
        config.ocr_link_confidence,
        store.table("cases")?,
    )?;
    slides::SlideLibrary::open(
        &config.data_dir,
        cases,
        store.table("slides")?,
        config.tile_cache_bytes,
        config.render_threads(),
    )
}

/// Streams the hub opens: bulk transfers into the edge's blob store (consult answers are taken
/// from there before they are acknowledged; model packages will come this way), and consult
/// requests for a referred slide's descriptor or tiles; anything else is refused on that stream.
fn incoming_streams(blobs: BlobStore, state: Arc<EdgeState>) -> StreamHandler {
    Arc::new(move |peer, first, mut send, mut recv| {
        let blobs = blobs.clone();
        let state = state.clone();
        Box::pin(async move {
            match first {
                live @ Message::LiveView { .. } => {
                    live::follow_stream(state, live, recv).await;
                }
                Message::ConsultRequest {
                    referral_id,
                    slide_id,
                    tile,
                    prefetch,
                } => {
                    if prefetch {
                        send.set_priority(grassroots_transport::framed::priority::PREFETCH);
                    }
                    let answer = match referrals::serve_consult(
                        &state,
                        &referral_id,
                        &slide_id,
                        tile,
                        prefetch,
                    )
                    .await
                    {
                        Ok(data) => Message::ConsultData { data },
                        Err(reason) => {
                            tracing::warn!(%referral_id, %slide_id, %reason, "consult request refused");
                            Message::Refused { reason }
                        }
                    };
                    if let Err(error) = send.send(&answer).await {
                        tracing::debug!(%error, "consult answer not delivered");
                    }
                    send.finish();
                }
                Message::StudyView {
                    referral_id,
                    study_key,
                    series_key,
                    kind,
                    query,
                } => {
                    let answer = match study_referrals::serve_study_view(
                        &state,
                        &referral_id,
                        &study_key,
                        &series_key,
                        &kind,
                        &query,
                    )
                    .await
                    {
                        Ok(data) => Message::ConsultData { data },
                        Err(reason) => {
                            tracing::warn!(%referral_id, %study_key, %series_key, %reason, "study view refused");
                            Message::Refused { reason }
                        }
                    };
                    if let Err(error) = send.send(&answer).await {
                        tracing::debug!(%error, "study view not delivered");
                    }
                    send.finish();
                }
                Message::TransferOffer(offer) => {
                    match grassroots_transport::receive_blob(&blobs, offer, &mut send, &mut recv)
                        .await
                    {
                        Ok(received) => {
                            tracing::info!(id = %received.offer.id, label = %received.offer.label, "blob received from the hub");
                            if received.offer.label == grassroots_wire::models::MODEL_PACKAGE_LABEL
                            {
                                let path = blobs.path(&received.offer.id);
                                if let Err(reason) =
                                    model_sync::install_from_hub(&state, &path).await
                                {
                                    if let Err(error) = received.refuse(&mut send, &reason).await {
                                        tracing::warn!(%error, "could not tell the hub a model package was refused");
                                    }
                                    return;
                                }
                            }
                            if received.offer.label
                                == grassroots_wire::models::MODEL_CANDIDATE_LABEL
                            {
                                // Measured, never installed: only the figures go back.
                                match tokio::fs::read(blobs.path(&received.offer.id)).await {
                                    Ok(bytes) => {
                                        model_evaluation::spawn_candidate(state.clone(), bytes)
                                    }
                                    Err(error) => {
                                        tracing::warn!(%error, "cannot read a candidate model")
                                    }
                                }
                            }
                            if received.offer.label == grassroots_wire::federated::ROUND_TASK_LABEL
                            {
                                let taken = tokio::fs::read(blobs.path(&received.offer.id))
                                    .await
                                    .map_err(|e| EdgeError::Config(e.to_string()))
                                    .and_then(|bytes| state.federated.take_task(&bytes));
                                if let Err(error) = taken {
                                    tracing::warn!(%error, "round task refused");
                                    if let Err(error) =
                                        received.refuse(&mut send, &error.to_string()).await
                                    {
                                        tracing::warn!(%error, "could not tell the hub a round task was refused");
                                    }
                                    return;
                                }
                            }
                            if received.offer.label == grassroots_secagg::message::LABEL {
                                let taken = tokio::fs::read(blobs.path(&received.offer.id))
                                    .await
                                    .map_err(|e| EdgeError::Config(e.to_string()))
                                    .and_then(|bytes| secure_rounds::take_message(&state, &bytes));
                                if let Err(error) = taken {
                                    tracing::warn!(%error, "secure aggregation message refused");
                                    if let Err(error) =
                                        received.refuse(&mut send, &error.to_string()).await
                                    {
                                        tracing::warn!(%error, "could not tell the hub a secure aggregation message was refused");
                                    }
                                    return;
                                }
                            }
                            if received.offer.label == grassroots_wire::revocation::CRL_LABEL {
                                let live = state.link.connection.borrow().clone();
                                let max = grassroots_wire::revocation::MAX_CRL_BYTES as u64;
                                let taken = if received.offer.size > max {
                                    Err(format!(
                                        "a revocation list of {} bytes",
                                        received.offer.size
                                    ))
                                } else {
                                    tokio::fs::read(blobs.path(&received.offer.id))
                                        .await
                                        .map_err(|e| e.to_string())
                                        .and_then(|bytes| {
                                            state.hub_trust.take(&bytes, live.as_ref())
                                        })
                                };
                                if let Err(reason) = taken {
                                    tracing::warn!(%reason, "revocation list from the hub refused");
                                    if let Err(error) = received.refuse(&mut send, &reason).await {
                                        tracing::warn!(%error, "could not tell the hub a revocation list was refused");
                                    }
                                    return;
                                }
                            }
                            if received.offer.label == grassroots_wire::referral::REPORT_LABEL {
                                match state
                                    .referrals
                                    .take_report_file(&blobs.path(&received.offer.id))
                                    .await
                                {
                                    Ok(()) => {}
                                    // Not stored: not acknowledged, so the hub sends it again.
                                    Err(None) => return,
                                    Err(Some(reason)) => {
                                        if let Err(error) =
                                            received.refuse(&mut send, &reason).await
                                        {
                                            tracing::warn!(%error, "could not tell the hub an answer was refused");
                                        }
                                        return;
                                    }
                                }
                            }
                            if let Err(error) = received.acknowledge(&mut send).await {
                                tracing::warn!(%error, "could not acknowledge a blob from the hub");
                            }
                        }
                        Err(error) => tracing::warn!(%error, "transfer from the hub interrupted"),
                    }
                }
                other => {
                    let error = TransportError::Unexpected {
                        expected: "TransferOffer, ConsultRequest, StudyView or LiveView",
                        got: other.kind(),
                    };
                    tracing::warn!(hub = %peer.identity.site_id, %error, "refused a stream from the hub");
                    send.reject(&error).await;
                }
            }
        })
    })
}

/// Warns at start and then hourly when this site's certificate has expired or expires soon: an
/// edge runs for months, and an expired certificate silently cuts it off from the hub.
async fn watch_expiry(kit: Kit, warn_days: i64, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Ok(identity) = kit.identity() {
            let days_left = identity.days_left(time::OffsetDateTime::now_utc());
            if days_left < 0 {
                tracing::error!(site = %kit.site_id, expired_on = %identity.not_after, "this site's certificate has expired: the hub will refuse it; ask the hub's installer for `grassroots provision renew`");
            } else if days_left < warn_days {
                tracing::warn!(site = %kit.site_id, days_left, "this site's certificate expires soon; ask the hub's installer for `grassroots provision renew`");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn watch_link(
    mut state: watch::Receiver<LinkState>,
    metrics: metrics::EdgeMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut was_online = false;
    loop {
        let current = state.borrow_and_update().clone();
        match current {
            LinkState::Online { rtt_ms, .. } => {
                if !was_online {
                    metrics.link_reconnects.inc();
                    tracing::info!("online at the hub");
                }
                was_online = true;
                metrics.link_up.set(1);
                if let Some(rtt) = rtt_ms {
                    metrics.hub_rtt_ms.set(rtt);
                }
            }
            _ => {
                was_online = false;
                metrics.link_up.set(0);
            }
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}
