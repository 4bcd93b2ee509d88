//! HTTPS for the web UIs: a node serves its pages over TLS when the operator gives it a
//! certificate and key (`--tls-cert`, `--tls-key`), and picks up a renewed certificate without a
//! restart (certbot and hospital IT replace the files in place).
//!
//! Why this crate touches rustls at all: the web UI's certificate is a different trust from the
//! network's mTLS. Browsers on the hospital network must trust it, so it is the operator's (or,
//! for a site without one, a certificate the network's CA issued at provisioning). Whether it
//! came from the network's CA decides HSTS: a browser that does not trust that CA must still be
//! able to click through a warning, which HSTS would forbid for a year.
//!
//! Handshakes run in tasks of their own with a deadline, so a client that opens a connection and
//! says nothing holds up no one else. `--http-redirect` answers plain HTTP with a redirect to the
//! HTTPS address, so bookmarks of `http://` keep working.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::WebError;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// Handshakes in progress from one address: a single host that opens connections and says
/// nothing cannot take every slot.
const MAX_PENDING_PER_ADDRESS: usize = 32;
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_PENDING_HANDSHAKES: usize = 512;
/// How often the certificate files are checked for a change.
const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(2);
/// One year, as browsers' preload lists expect; sent only with an operator's certificate.
const HSTS: &str = "max-age=31536000";

/// Where a node's web certificate is, from the command line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebTlsSettings {
    /// PEM: the certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Also listen here for plain HTTP and redirect every request to HTTPS.
    pub redirect_from: Option<SocketAddr>,
}

/// HTTPS as a node runs it, or plain HTTP: the certificate loaded, the task that follows its
/// files, and the redirect listener if one was asked for.
#[derive(Default)]
pub struct WebTlsService {
    /// `None`: the node serves plain HTTP.
    pub tls: Option<WebTls>,
    /// Where plain HTTP is redirected from (the bound address, for a port chosen by the system).
    pub redirect_addr: Option<SocketAddr>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WebTlsService {
    /// With `settings`: loads the certificate (refusing to start with a bad one), binds the
    /// redirect listener and starts both background tasks; `https_port` is where redirects
    /// point. Without: nothing, and the node serves plain HTTP.
    pub async fn start(
        settings: Option<&WebTlsSettings>,
        network_ca_der: &[u8],
        https_port: u16,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, WebError> {
        let Some(settings) = settings else {
            return Ok(Self::default());
        };
        let tls = WebTls::load(settings, network_ca_der)?;
        tracing::info!(
            cert = %settings.cert.display(),
            serial = %tls.serving_serial(),
            hsts = tls.hsts(),
            "serving the web UI over HTTPS"
        );
        let mut tasks = vec![tokio::spawn(tls.clone().follow_files(shutdown.clone()))];
        let mut redirect_addr = None;
        if let Some(addr) = settings.redirect_from {
            let listen_error = |source| WebError::Listen { addr, source };
            let listener = TcpListener::bind(addr).await.map_err(listen_error)?;
            redirect_addr = Some(listener.local_addr().map_err(listen_error)?);
            tasks.push(tokio::spawn(serve_redirect(listener, https_port, shutdown)));
        }
        Ok(Self {
            tls: Some(tls),
            redirect_addr,
            tasks,
        })
    }
}

/// A loaded web certificate that follows its files.
#[derive(Clone)]
pub struct WebTls {
    resolver: Arc<ReloadingCertificate>,
    acceptor: TlsAcceptor,
}

impl WebTls {
    /// Loads the certificate and key, refusing a pair that does not match. `network_ca_der` is
    /// the network's root: a certificate it issued gets no HSTS.
    pub fn load(settings: &WebTlsSettings, network_ca_der: &[u8]) -> Result<Self, WebError> {
        // Stamps first: a change while the pair is read is then seen at the next check.
        let stamps = file_stamps(&settings.cert, &settings.key);
        let (certified, chain) = read_pair(&settings.cert, &settings.key)?;
        let resolver = Arc::new(ReloadingCertificate {
            hsts: Arc::new(AtomicBool::new(!issued_by(&chain[0], network_ca_der))),
            network_ca_der: network_ca_der.to_vec(),
            current: RwLock::new(Arc::new(certified)),
            cert: settings.cert.clone(),
            key: settings.key.clone(),
            seen: RwLock::new(stamps),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| WebError::Internal(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
        // HTTP/1.1 only: the nodes are built without HTTP/2, whose requests carry no Host header
        // (the WebSocket origin check and the redirect read it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Whether Strict-Transport-Security is sent: only with a certificate that is not the
    /// network CA's (followed across reloads).
    pub fn hsts(&self) -> bool {
        self.resolver.hsts.load(Ordering::Relaxed)
    }

    /// The flag [`strict_transport_security`] reads.
    pub fn hsts_flag(&self) -> Arc<AtomicBool> {
        self.resolver.hsts.clone()
    }

    /// Checks the files every few seconds and serves a changed pair from the next handshake on.
    /// A pair that does not load (half written, key and certificate not matching) is logged and
    /// the running certificate stays.
    pub async fn follow_files(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RELOAD_CHECK_EVERY) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            self.resolver.reload_if_changed();
        }
    }

    /// The serial number (hex) of the certificate now served, for logs and tests.
    pub fn serving_serial(&self) -> String {
        let current = self.resolver.current();
        x509_parser::parse_x509_certificate(current.cert[0].as_ref())
            .map(|(_, cert)| cert.raw_serial_as_string())
            .unwrap_or_default()
    }

    /// Accepts TLS connections on `listener`, handshaking off the accept loop.
    pub fn listener(&self, listener: TcpListener) -> TlsListener {
        TlsListener {
            listener,
            acceptor: self.acceptor.clone(),
            handshakes: JoinSet::new(),
            pending_per_address: std::collections::HashMap::new(),
        }
    }
}

/// The certificate the server presents, swapped in place when its files change.
struct ReloadingCertificate {
    current: RwLock<Arc<CertifiedKey>>,
    /// The served certificate is an operator's, not the network CA's.
    hsts: Arc<AtomicBool>,
    network_ca_der: Vec<u8>,
    cert: PathBuf,
    key: PathBuf,
    /// Modification times and sizes last looked at, so an unchanged pair is not read again
    /// and a broken one is reported once.
    seen: RwLock<FileStamps>,
}

/// Modification time, change time, inode and length of each file: a replacement that keeps the
/// old modification time and length (`cp -p`, tar) still changes the inode or the change time.
type FileStamps = Option<[(SystemTime, i64, u64, u64); 2]>;

impl ReloadingCertificate {
    fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn reload_if_changed(&self) {
        let stamps = file_stamps(&self.cert, &self.key);
        {
            let mut seen = match self.seen.write() {
                Ok(seen) => seen,
                Err(poisoned) => poisoned.into_inner(),
            };
            if *seen == stamps {
                return;
            }
            *seen = stamps;
        }
        match read_pair(&self.cert, &self.key) {
            Ok((certified, chain)) => {
                self.hsts.store(
                    !issued_by(&chain[0], &self.network_ca_der),
                    Ordering::Relaxed,
                );
                let mut current = match self.current.write() {
                    Ok(current) => current,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *current = Arc::new(certified);
                tracing::info!(cert = %self.cert.display(), "web certificate reloaded");
            }
            Err(error) => tracing::error!(
                %error,
                "the changed web certificate does not load; still serving the previous one"
            ),
        }
    }
}

impl std::fmt::Debug for ReloadingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCertificate")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn file_stamps(cert: &Path, key: &Path) -> FileStamps {
    use std::os::unix::fs::MetadataExt;
    let stamp = |path: &Path| {
        let metadata = std::fs::metadata(path).ok()?;
        Some((
            metadata.modified().ok()?,
            metadata.ctime_nsec() + metadata.ctime() * 1_000_000_000,
            metadata.ino(),
            metadata.len(),
        ))
    };
    Some([stamp(cert)?, stamp(key)?])
}

type Chain = Vec<rustls::pki_types::CertificateDer<'static>>;

/// Reads a PEM certificate chain and its key, and checks that they belong together.
fn read_pair(cert: &Path, key: &Path) -> Result<(CertifiedKey, Chain), WebError> {
    let unreadable = |path: &Path, e: &dyn std::fmt::Display| {
        WebError::BadRequest(format!("web certificate {}: {e}", path.display()))
    };
    let cert_pem = std::fs::read(cert).map_err(|e| unreadable(cert, &e))?;
    let chain: Chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable(cert, &e))?;
    if chain.is_empty() {
        return Err(unreadable(cert, &"no CERTIFICATE block in the file"));
    }
    let key_pem = std::fs::read(key).map_err(|e| unreadable(key, &e))?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| unreadable(key, &e))?
        .ok_or_else(|| unreadable(key, &"no PRIVATE KEY block in the file"))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| unreadable(key, &e))?;
    let certified = CertifiedKey::new(chain.clone(), signing_key);
    certified.keys_match().map_err(|_| {
        WebError::BadRequest(format!(
            "web certificate {} and key {} do not belong together",
            cert.display(),
            key.display()
        ))
    })?;
    Ok((certified, chain))
}

/// Whether `leaf` carries a valid signature of the certificate `ca_der`.
fn issued_by(leaf: &[u8], ca_der: &[u8]) -> bool {
    let (Ok((_, leaf)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(leaf),
        x509_parser::parse_x509_certificate(ca_der),
    ) else {
        return false;
    };
    leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
}

/// A TCP listener that hands axum only connections whose TLS handshake finished.
pub struct TlsListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<(Option<TlsStream<TcpStream>>, SocketAddr)>,
    pending_per_address: std::collections::HashMap<std::net::IpAddr, usize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_PENDING_HANDSHAKES;
            tokio::select! {
                accepted = self.listener.accept(), if room => match accepted {
                    Ok((stream, peer)) => {
                        let pending = self.pending_per_address.entry(peer.ip()).or_default();
                        if *pending >= MAX_PENDING_PER_ADDRESS {
                            tracing::debug!(%peer, "too many TLS handshakes from one address");
                            continue; // dropping the stream closes it
                        }
                        *pending += 1;
                        let acceptor = self.acceptor.clone();
                        self.handshakes.spawn(async move {
                            let tls = match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => Some(tls),
                                Ok(Err(error)) => {
                                    tracing::debug!(%peer, %error, "TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake took too long");
                                    None
                                }
                            };
                            (tls, peer)
                        });
                    }
                    // Out of file descriptors and the like: wait as axum's own listener does.
                    Err(error) => {
                        tracing::warn!(%error, "cannot accept a web connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    // A handshake task cannot panic; were one cancelled, its slot stays counted
                    // until the listener goes (the count only ever errs towards refusing).
                    let Ok((tls, peer)) = done else { continue };
                    if let Some(pending) = self.pending_per_address.get_mut(&peer.ip()) {
                        *pending -= 1;
                        if *pending == 0 {
                            self.pending_per_address.remove(&peer.ip());
                        }
                    }
                    if let Some(tls) = tls {
                        return (tls, peer);
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// Adds Strict-Transport-Security while the served certificate is an operator's.
pub async fn strict_transport_security(
    State(hsts): State<Arc<AtomicBool>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if hsts.load(Ordering::Relaxed) {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    response
}

/// Answers every plain-HTTP request with a permanent redirect to the same path on the HTTPS
/// port, until `shutdown`.
pub async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let router = Router::new()
        .fallback(move |request: Request| async move { redirect_to_https(&request, https_port) });
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "HTTP redirect server failed");
    }
}

fn redirect_to_https(request: &Request, https_port: u16) -> Response {
    let Some(host) = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_without_port)
    else {
        return (
            StatusCode::BAD_REQUEST,
            "this address serves only redirects to HTTPS; the request named no host",
        )
            .into_response();
    };
    let authority = if https_port == 443 {
        host.to_string()
    } else {
        format!("{host}:{https_port}")
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let location = format!("https://{authority}{path}");
    match HeaderValue::from_str(&location) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "unusable host").into_response(),
    }
}

/// `example.org:80` → `example.org`; `[::1]:80` → `[::1]`; refuses what is not a host name
/// or address (a redirect must not be steered into another URL's parts).
fn host_without_port(host: &str) -> Option<&str> {
    let name = if let Some(rest) = host.strip_prefix('[') {
        let end = rest.find(']')?;
        &host[..end + 2]
    } else {
        host.split(':').next()?
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':');
    (!name.is_empty() && name.chars().all(allowed)).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port_and_odd_hosts_are_refused() {
        assert_eq!(host_without_port("edge.example:8080"), Some("edge.example"));
        assert_eq!(host_without_port("10.0.0.5"), Some("10.0.0.5"));
        assert_eq!(host_without_port("[::1]:80"), Some("[::1]"));
        assert_eq!(host_without_port("evil.example/x?"), None);
        assert_eq!(host_without_port("a@b"), None);
        assert_eq!(host_without_port(""), None);
    }
}
