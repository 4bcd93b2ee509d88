//! The Grassroots hub node.
//!
//! Edges dial in over QUIC with mutual TLS; the hub reads each edge's site id from its verified
//! certificate, keeps its control session (heartbeats, last seen), receives its bulk transfers
//! into a content-addressed blob store, and closes its connection the moment its certificate
//! appears on the revocation list. The web UI shows sites, online state, last seen and
//! certificate expiry. The hub never reads slides: it will relay tiles, not decode them.

pub mod canary;
mod config;
pub mod consult;
pub mod consult_cache;
pub mod consult_page;
pub mod coverage;
mod coverage_html;
pub mod coverage_map;
mod coverage_notify;
pub mod coverage_pages;
mod coverage_period;
mod coverage_report;
pub mod coverage_rollup;
mod coverage_trends;
mod expiry;
mod http;
pub use http::NAV;
mod link;
mod live;
mod metrics;
pub mod model_pages;
pub mod model_registry;
mod model_rollout;
mod prefetch;
pub mod quota;
pub mod referrals;
mod reports;
mod revocation;
pub mod round_pages;
pub mod rounds;
pub mod secure_rounds;
mod sites;
mod study_consult;
pub mod suppression;

use std::net::SocketAddr;
use std::sync::Arc;

use grassroots_provisioning::Kit;
use grassroots_store::Store;
use grassroots_transport::{BlobStore, HubEndpoint};
use tokio::sync::watch;

pub use config::HubConfig;
pub use sites::SiteStatus;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Provisioning(#[from] grassroots_provisioning::ProvisioningError),
    #[error(transparent)]
    Store(#[from] grassroots_store::StoreError),
    #[error(transparent)]
    Transport(#[from] grassroots_transport::TransportError),
    #[error(transparent)]
    Web(#[from] grassroots_web::WebError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Shared state of a running hub.
pub(crate) struct HubState {
    pub config: HubConfig,
    pub kit: Kit,
    pub store: Store,
    pub sites: sites::Sites,
    pub blobs: BlobStore,
    pub received: grassroots_store::Table<link::ReceivedRecord>,
    pub referrals: referrals::ReferralInbox,
    pub models: model_registry::ModelRegistry,
    pub canaries: canary::Canaries,
    pub rounds: rounds::Rounds,
    pub audit: consult::ConsultAudit,
    pub consult_cache: consult_cache::ConsultCache,
    /// Wakes the prefetch when a referral arrives or an edge connects.
    pub prefetch_wake: tokio::sync::Notify,
    pub accounts: grassroots_web::Accounts,
    pub revocations: revocation::Revocations,
    pub metrics: metrics::HubMetrics,
    pub coverage: coverage::Coverage,
    /// Region outlines drawn on the coverage map.
    pub outlines: coverage_map::Outlines,
    /// What each edge may send (`quota.rs`).
    pub quotas: quota::Quotas,
}

/// Removes partial blobs no edge added to for a week, at start and every few hours.
async fn sweep_partials(state: Arc<HubState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let blobs = state.blobs.clone();
        let freed =
            tokio::task::spawn_blocking(move || blobs.sweep_partials(quota::PARTIAL_MAX_AGE))
                .await
                .unwrap_or_default();
        if freed > 0 {
            tracing::info!(freed_bytes = freed, "stale partial blobs swept");
        }
        tokio::select! {
            _ = tokio::time::sleep(quota::SWEEP_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// A hub that is running; dropping it does not stop it, [`RunningHub::shutdown`] does.
pub struct RunningHub {
    pub quic_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The web UI is served over HTTPS (`--tls-cert`).
    pub https: bool,
    /// Where plain HTTP is redirected to HTTPS from (`--http-redirect`).
    pub redirect_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningHub {
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts a hub: opens its store, binds QUIC and HTTP, and spawns its tasks.
pub async fn start(config: HubConfig, kit: Kit) -> Result<RunningHub, HubError> {
    config.validate()?;
    let mut config = config;
    // Cookies marked Secure whenever the browser reaches the node over HTTPS.
    config.secure_cookies |= config.web_tls.is_some();
    if kit.role != grassroots_provisioning::Role::Hub {
        return Err(HubError::Config(format!(
            "the kit is for {} ({}), not for the hub; use kits/hub.kit",
            kit.site_id,
            kit.role.as_str()
        )));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| HubError::Config(format!("{}: {e}", config.data_dir.display())))?;
    let store = Store::open(&config.data_dir)?;
    let revocations = revocation::Revocations::load(config.revocation_list.as_deref(), &kit)?;
    let quic_listen = match config.quic_listen {
        Some(addr) => addr,
        None => kit.hub_addr.parse().map_err(|_| {
            HubError::Config(format!(
                "the kit's hub address {:?} is not IP:PORT; pass --listen",
                kit.hub_addr
            ))
        })?,
    };
    let endpoint = HubEndpoint::bind_with(
        quic_listen,
        &kit,
        revocations.current().as_ref(),
        config.congestion,
    )?;
    let quic_addr = endpoint.local_addr()?;
    let web_metrics = prometheus_client::registry::Registry::default();
    let (metrics, web_metrics) = metrics::HubMetrics::register(web_metrics);
    let state = Arc::new(HubState {
        sites: sites::Sites::open(&store)?,
        blobs: BlobStore::open(&config.data_dir.join("blobs"))?,
        received: store.table("received_blobs")?,
        coverage: coverage::Coverage::open(&store)?,
        outlines: match &config.region_outlines {
            Some(path) => coverage_map::Outlines::load(path).map_err(HubError::Config)?,
            None => coverage_map::Outlines::default(),
        },
        referrals: referrals::ReferralInbox::new(
            store.table("referrals")?,
            store.table("undelivered_answers")?,
        ),
        models: model_registry::ModelRegistry::open(
            &config.data_dir,
            &store,
            &kit.model_signing_public_key,
        )?,
        canaries: canary::Canaries::new(store.table("model_canary")?),
        quotas: quota::Quotas::new(config.quotas),
        rounds: rounds::Rounds::open(
            &config.data_dir,
            &store,
            config.rounds.clone(),
            config.model_signing_key.as_deref(),
            config.validation_set.as_deref(),
        )?,
        audit: consult::ConsultAudit::new(store.table("consult_audit")?),
        consult_cache: consult_cache::ConsultCache::new(config.consult_prefetch_bytes),
        accounts: grassroots_web::Accounts::open(&store)?,
        prefetch_wake: tokio::sync::Notify::new(),
        revocations,
        metrics,
        store: store.clone(),
        kit: kit.clone(),
        config: config.clone(),
    });
    if config.revocation_list.is_none() {
        tracing::warn!(
            "no revocation list configured (--crl): revoked sites would still be admitted"
        );
    }

    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| HubError::Listen {
            addr: config.http_listen,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| HubError::Listen {
        addr: config.http_listen,
        source,
    })?;
    let web = http::web_state(&state, Arc::new(web_metrics))?;
    let router = http::router(state.clone(), web)?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let web_tls = grassroots_web::tls::WebTlsService::start(
        config.web_tls.as_ref(),
        &kit.ca_certificate_der()?,
        http_addr.port(),
        shutdown_rx.clone(),
    )
    .await?;
    let endpoint = Arc::new(endpoint);
    // Before anything can answer a referral: the pass only adds, but it should see a still world.
    match state.referrals.index_undelivered() {
        Ok(waiting) => tracing::info!(waiting, "answers waiting for their edges"),
        Err(error) => tracing::error!(%error, "cannot index undelivered answers"),
    }
    let mut tasks = vec![
        tokio::spawn(link::accept_loop(
            state.clone(),
            endpoint.clone(),
            shutdown_rx.clone(),
        )),
        tokio::spawn(revocation::watch(
            state.clone(),
            endpoint.clone(),
            shutdown_rx.clone(),
        )),
        tokio::spawn(expiry::watch(state.clone(), shutdown_rx.clone())),
        tokio::spawn(reports::deliver(state.clone(), shutdown_rx.clone())),
        tokio::spawn(sweep_partials(state.clone(), shutdown_rx.clone())),
        tokio::spawn(prefetch::run(state.clone(), shutdown_rx.clone())),
        tokio::spawn(model_rollout::run(state.clone(), shutdown_rx.clone())),
        tokio::spawn(rounds::run(state.clone(), shutdown_rx.clone())),
        tokio::spawn(coverage_notify::run(state.clone(), shutdown_rx.clone())),
        tokio::spawn(grassroots_web::serve(
            listener,
            router,
            web_tls.tls.clone(),
            shutdown_rx.clone(),
        )),
    ];
    let https = web_tls.tls.is_some();
    let redirect_addr = web_tls.redirect_addr;
    tasks.extend(web_tls.tasks);
    tracing::info!(%quic_addr, %http_addr, network = %kit.network, "hub running");
    Ok(RunningHub {
        quic_addr,
        http_addr,
        https,
        redirect_addr,
        shutdown,
        tasks,
    })
}
