//! QUIC endpoints: the hub listens, edges dial.
//!
//! The hub's endpoint can swap its TLS configuration while running
//! ([`HubEndpoint::set_revocations`]): new handshakes are checked against the new revocation list
//! without a restart. After a handshake the peer's identity is read from its verified
//! certificate ([`PeerConnection`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use grassroots_provisioning::{Kit, PeerIdentity, RevocationList, Role};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
pub use quinn::Incoming;
use rustls::pki_types::CertificateDer;

use crate::tls::{edge_client_config, hub_server_config, hub_server_name};
use crate::{Result, TransportError};

/// QUIC idle timeout: a link silent this long is dead even if no heartbeat logic noticed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The congestion controller a sender uses.
///
/// BBR is the default: on the emulated county uplink of `grassroots bench link` (20 Mbit/s,
/// 50 ms RTT, 1% random loss) quinn's Cubic reached 2.9 Mbit/s and BBR 17.9 Mbit/s (90% of the
/// link), because Cubic reads every random loss as congestion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// Loss-based (quinn's own default): backs off on every loss, as TCP Cubic does.
    Cubic,
    /// Model-based: paces at the measured bottleneck rate.
    #[default]
    Bbr,
}

fn transport_config(
    keep_alive: Option<Duration>,
    congestion: Congestion,
) -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    if congestion == Congestion::Bbr {
        config.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    }
    // 30 s fits in a VarInt of milliseconds.
    config.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    config.keep_alive_interval(keep_alive);
    // Room for a few bulk transfers plus interactive streams in each direction.
    config.max_concurrent_bidi_streams(64u32.into());
    // Windows several times the bandwidth-delay product of a county uplink (20 Mbit/s x 50 ms =
    // 125 kB) and of a LAN, yet small enough that "sent" stays close to "received" on a thin link.
    config.stream_receive_window((8u32 * 1024 * 1024).into());
    config.receive_window((16u32 * 1024 * 1024).into());
    config.send_window(8 * 1024 * 1024);
    Arc::new(config)
}

fn server_config(
    kit: &Kit,
    revocations: Option<&RevocationList>,
    congestion: Congestion,
) -> Result<quinn::ServerConfig> {
    let tls = hub_server_config(kit, revocations)?;
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|e| TransportError::TlsConfig(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config(None, congestion));
    Ok(config)
}

/// A connection whose peer presented a certificate of this network.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    pub identity: PeerIdentity,
    pub connection: quinn::Connection,
}

impl PeerConnection {
    /// The peer of an established connection, from the certificate TLS verified.
    pub fn from_connection(connection: quinn::Connection) -> Result<Self> {
        let certificates = connection
            .peer_identity()
            .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
            .ok_or_else(|| TransportError::PeerIdentity("peer presented no certificate".into()))?;
        let leaf = certificates
            .first()
            .ok_or_else(|| TransportError::PeerIdentity("empty certificate chain".into()))?;
        let identity = PeerIdentity::from_der(leaf)
            .map_err(|e| TransportError::PeerIdentity(e.to_string()))?;
        Ok(Self {
            identity,
            connection,
        })
    }
}

/// The hub's listening endpoint.
pub struct HubEndpoint {
    endpoint: quinn::Endpoint,
    kit: Kit,
    congestion: Congestion,
}

impl HubEndpoint {
    pub fn bind(addr: SocketAddr, kit: &Kit, revocations: Option<&RevocationList>) -> Result<Self> {
        Self::bind_with(addr, kit, revocations, Congestion::default())
    }

    pub fn bind_with(
        addr: SocketAddr,
        kit: &Kit,
        revocations: Option<&RevocationList>,
        congestion: Congestion,
    ) -> Result<Self> {
        let endpoint = quinn::Endpoint::server(server_config(kit, revocations, congestion)?, addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        Ok(Self {
            endpoint,
            kit: kit.clone(),
            congestion,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint
            .local_addr()
            .map_err(|source| TransportError::Io {
                path: "hub endpoint".into(),
                source,
            })
    }

    /// Replaces the revocation list for every handshake from now on.
    pub fn set_revocations(&self, revocations: &RevocationList) -> Result<()> {
        self.endpoint.set_server_config(Some(server_config(
            &self.kit,
            Some(revocations),
            self.congestion,
        )?));
        Ok(())
    }

    /// Waits for the next incoming connection attempt; `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<quinn::Incoming> {
        self.endpoint.accept().await
    }

    /// Completes a handshake and checks that the peer is an edge of this network.
    pub async fn handshake(incoming: quinn::Incoming) -> Result<PeerConnection> {
        let connection = incoming.await?;
        let peer = PeerConnection::from_connection(connection)?;
        if peer.identity.role != Role::Edge {
            peer.connection.close(
                crate::CloseCode::Refused.into(),
                b"only edges may dial the hub",
            );
            return Err(TransportError::PeerIdentity(format!(
                "{} presented a {} certificate; only edges may dial the hub",
                peer.identity.site_id,
                peer.identity.role.as_str()
            )));
        }
        Ok(peer)
    }

    pub fn close(&self) {
        self.endpoint
            .close(crate::CloseCode::Shutdown.into(), b"hub shutting down");
    }

    /// Waits until every connection has been closed cleanly.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

/// An edge's dialling endpoint.
#[derive(Clone)]
pub struct EdgeEndpoint {
    endpoint: quinn::Endpoint,
    /// Shared by every clone: a new revocation list applies to the next dial of each.
    client_config: Arc<std::sync::RwLock<quinn::ClientConfig>>,
    kit: Kit,
    congestion: Congestion,
    hub_addr: String,
}

fn edge_quinn_config(
    kit: &Kit,
    revocations: Option<&RevocationList>,
    congestion: Congestion,
) -> Result<quinn::ClientConfig> {
    let tls = edge_client_config(kit, revocations)?;
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|e| TransportError::TlsConfig(e.to_string()))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
    client_config.transport_config(transport_config(Some(Duration::from_secs(5)), congestion));
    Ok(client_config)
}

impl EdgeEndpoint {
    pub fn new(kit: &Kit) -> Result<Self> {
        Self::with_hub_addr(kit, &kit.hub_addr)
    }

    /// Dials `hub_addr` instead of the kit's address (tests, benchmarks, NAT rewrites).
    pub fn with_hub_addr(kit: &Kit, hub_addr: &str) -> Result<Self> {
        Self::with_options(kit, hub_addr, Congestion::default())
    }

    pub fn with_options(kit: &Kit, hub_addr: &str, congestion: Congestion) -> Result<Self> {
        let client_config = edge_quinn_config(kit, None, congestion)?;
        let bind: SocketAddr = if hub_addr.starts_with('[') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .map_err(|e: std::net::AddrParseError| TransportError::TlsConfig(e.to_string()))?;
        let endpoint = quinn::Endpoint::client(bind)
            .map_err(|source| TransportError::Bind { addr: bind, source })?;
        Ok(Self {
            endpoint,
            client_config: Arc::new(std::sync::RwLock::new(client_config)),
            kit: kit.clone(),
            congestion,
            hub_addr: hub_addr.to_string(),
        })
    }

    /// Refuses hub certificates on `revocations` from the next dial on.
    pub fn set_revocations(&self, revocations: &RevocationList) -> Result<()> {
        let config = edge_quinn_config(&self.kit, Some(revocations), self.congestion)?;
        let mut current = self
            .client_config
            .write()
            .map_err(|_| TransportError::TlsConfig("client configuration lock poisoned".into()))?;
        *current = config;
        Ok(())
    }

    pub fn hub_addr(&self) -> &str {
        &self.hub_addr
    }

    /// Dials the hub and completes the handshake.
    pub async fn connect(&self) -> Result<PeerConnection> {
        let addr = resolve(&self.hub_addr)?;
        let config = self
            .client_config
            .read()
            .map(|config| config.clone())
            .map_err(|_| TransportError::TlsConfig("client configuration lock poisoned".into()))?;
        let connecting = self
            .endpoint
            .connect_with(config, addr, hub_server_name())?;
        let connection = connecting.await?;
        PeerConnection::from_connection(connection)
    }

    pub fn close(&self) {
        self.endpoint
            .close(crate::CloseCode::Shutdown.into(), b"edge shutting down");
    }
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| TransportError::Resolve {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| TransportError::Resolve {
            addr: addr.to_string(),
            reason: "no address".into(),
        })
}
