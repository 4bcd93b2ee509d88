//! What every Grassroots node serves over HTTP, whatever its role.
//!
//! Staff accounts with argon2id password hashes and server-side sessions ([`accounts`]), login
//! with rate limiting ([`throttle`], [`auth`]), role checks as middleware, `/healthz`, `/metrics`
//! in the Prometheus text format, and the page layout that both nodes' server-rendered HTML
//! shares ([`pages`]). The hub and the edge add their own pages and APIs on top of [`router`].

pub mod accounts;
pub mod api_tokens;
pub mod assets;
pub mod auth;
pub mod csrf;
pub mod headers;
pub mod i18n;
pub mod lifecycle;
pub mod nav;
pub mod openapi;
pub mod pages;
pub mod proxy;
pub mod render_wishes;
pub mod security_log;
pub mod shutdown;
pub mod study_views;
pub mod throttle;
pub mod tls;

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use accounts::{normalize_region, Account, Accounts, StaffRole};
pub use auth::{require_role, CurrentUser};
pub use throttle::LoginThrottle;

/// Errors of the web layer; each maps to an HTTP status with a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    Store(#[from] grassroots_store::StoreError),
    #[error("invalid user name {0:?}: use 1-32 letters, digits, '.', '_' or '-'")]
    InvalidUsername(String),
    #[error("password too short: at least {min} characters")]
    WeakPassword { min: usize },
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("region limit: {0}")]
    InvalidRegion(String),
    #[error("unknown role {0:?}: clinician, expert, authority or admin")]
    UnknownRole(String),
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::InvalidUsername(_)
            | WebError::WeakPassword { .. }
            | WebError::UnknownRole(_)
            | WebError::InvalidRegion(_)
            | WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::UserExists(_) => StatusCode::CONFLICT,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::Store(_)
            | WebError::Hashing(_)
            | WebError::Internal(_)
            | WebError::Listen { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        (
            status,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// Shared state of the web layer.
#[derive(Clone)]
pub struct WebState {
    pub accounts: Accounts,
    pub throttle: Arc<LoginThrottle>,
    pub metrics: Arc<Registry>,
    /// Shown in page titles ("Hub — Henan network", "Edge — County A").
    pub node_title: String,
    /// Adds `Secure` to the session cookie; on when the node is reached over HTTPS.
    pub secure_cookies: bool,
    /// BLAKE3 of the scrape token `/metrics` accepts (`Authorization: Bearer`), if one is set;
    /// a signed-in admin may read it without one.
    pub metrics_token: Option<blake3::Hash>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (`proxy.rs`).
    pub trusted_proxies: Arc<Vec<std::net::IpAddr>>,
}

impl WebState {
    pub fn new(
        store: &grassroots_store::Store,
        metrics: Arc<Registry>,
        node_title: String,
        secure_cookies: bool,
    ) -> Result<Self, WebError> {
        Ok(Self {
            accounts: Accounts::open(store)?,
            throttle: Arc::new(LoginThrottle::default()),
            metrics,
            node_title,
            secure_cookies,
            metrics_token: None,
            trusted_proxies: Arc::default(),
        })
    }

    /// Trusts these reverse proxies to name the client in `X-Forwarded-For`.
    pub fn with_trusted_proxies(mut self, proxies: &[std::net::IpAddr]) -> Self {
        self.trusted_proxies = Arc::new(proxies.to_vec());
        self
    }

    /// Lets scrapers read `/metrics` with this token (from the operator's token file).
    pub fn with_metrics_token(mut self, token: Option<&str>) -> Self {
        self.metrics_token = token.map(|t| blake3::hash(t.trim().as_bytes()));
        self
    }
}

/// Reads a scrape token file: one line of at least 16 characters.
pub fn read_metrics_token(path: &std::path::Path) -> Result<String, WebError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| WebError::BadRequest(format!("{}: {e}", path.display())))?;
    let token = text.trim();
    if token.chars().count() < 16 || token.chars().any(char::is_whitespace) {
        return Err(WebError::BadRequest(format!(
            "{}: a scrape token is one word of at least 16 characters",
            path.display()
        )));
    }
    Ok(token.to_string())
}

/// Serves a node's router until `shutdown` turns true, with each request's peer address
/// available (login rate limiting needs it); over TLS when `tls` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<tls::WebTls>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let result = match tls {
        None => {
            let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, service)
                .with_graceful_shutdown(stop)
                .await
        }
        Some(tls) => {
            let router = router.layer(axum::middleware::from_fn_with_state(
                tls.hsts_flag(),
                tls::strict_transport_security,
            ));
            let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
            // `tap_io` only lends the listener axum's generic peer-address plumbing.
            let listener = axum::serve::ListenerExt::tap_io(tls.listener(listener), |_| {});
            axum::serve(listener, service)
                .with_graceful_shutdown(stop)
                .await
        }
    };
    if let Err(error) = result {
        tracing::error!(%error, "HTTP server failed");
    }
}

/// `/healthz`, `/metrics`, `/login`, `/logout`, and for admins: API tokens (`/api/v1/tokens`),
/// accounts' lifecycle (`/api/v1/accounts`) and the security events (`/security`). The API
/// routes carry their OpenAPI description ([`openapi`]).
pub fn router(state: WebState) -> OpenApiRouter {
    const ADMINS: &[StaffRole] = &[StaffRole::Admin];
    let admin_only =
        axum::middleware::from_fn_with_state((state.clone(), ADMINS), auth::require_role);
    let tokens = OpenApiRouter::new()
        .routes(routes!(api_tokens::list_api, api_tokens::create_api))
        .routes(routes!(api_tokens::revoke_api))
        .routes(routes!(lifecycle::list_api))
        .routes(routes!(lifecycle::disable_api))
        .routes(routes!(lifecycle::enable_api))
        .routes(routes!(lifecycle::password_api))
        .routes(routes!(lifecycle::revoke_sessions_api))
        .routes(routes!(lifecycle::permissions_api))
        .routes(routes!(security_log::events_api))
        .route("/security", get(security_log::events_page))
        .route_layer(admin_only);
    let language = OpenApiRouter::new()
        .route("/language", axum::routing::post(i18n::switch))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), StaffRole::ALL),
            auth::require_role,
        ));
    OpenApiRouter::new()
        .merge(tokens)
        .merge(language)
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", axum::routing::post(auth::logout))
        .route(
            "/static/grassroots.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], pages::CSS) }),
        )
        .route(
            "/static/grassroots.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript")],
                    include_str!("static/grassroots.js"),
                )
            }),
        )
        .route(
            &format!("{}/osd/{{*path}}", assets::PREFIX),
            get(assets::openseadragon),
        )
        .route(
            &format!("{}/uplot/{{*path}}", assets::PREFIX),
            get(assets::uplot),
        )
        .route(
            &format!("{}/viewer/{{*path}}", assets::PREFIX),
            get(assets::study_viewer),
        )
        .with_state(state)
}

/// `GET /metrics`: for the scrape token or a signed-in admin only. Operational figures name
/// sites and tell when they are silent: not for anyone who can reach the port.
async fn metrics(
    axum::extract::State(state): axum::extract::State<WebState>,
    headers: axum::http::HeaderMap,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|token| blake3::hash(token.trim().as_bytes()));
    // blake3::Hash compares in constant time.
    let token_ok = bearer.is_some() && bearer == state.metrics_token;
    let admin = || {
        auth::signed_in(&state, &headers).is_some_and(|account| account.role == StaffRole::Admin)
    };
    if !token_ok && !admin() {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({
                "error": "metrics need the scrape token (Authorization: Bearer) or an admin's session"
            })),
        )
            .into_response();
    }
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.metrics) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}
