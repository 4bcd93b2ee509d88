//! The edge-hub link: control-stream drivers, stream dispatch and the edge's reconnect loop.
//!
//! The sans-IO sessions of `grassroots-wire` decide when to ping and when the peer is dead; the
//! drivers here feed them the messages read from the control stream and the tokio clock. The edge
//! keeps dialling with jittered exponential back-off whenever the link is down; each side accepts
//! the streams its peer opens and hands them, by their first message, to the node.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grassroots_wire::backoff::Backoff;
use grassroots_wire::session::{EdgeSession, HubSession, SessionEvent};
use grassroots_wire::Message;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::timeout;

use crate::endpoint::{EdgeEndpoint, PeerConnection};
use crate::framed::{self, priority, FramedRecv, FramedSend};
use crate::TransportError;

/// How long a peer may take to send the first message of a stream it opened.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the edge waits for `Welcome` after `Hello`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Application close codes, so the other side can tell why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    Shutdown = 0,
    /// The same site connected again; the older connection gives way.
    Replaced = 1,
    /// The site's certificate was revoked.
    Revoked = 2,
    ProtocolViolation = 3,
    Refused = 4,
    TimedOut = 5,
}

impl From<CloseCode> for quinn::VarInt {
    fn from(code: CloseCode) -> Self {
        quinn::VarInt::from_u32(code as u32)
    }
}

/// The edge's view of its link, published for the status page and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LinkState {
    /// Dialling (again); `last_error` says why the previous attempt or link ended.
    Connecting {
        attempt: u32,
        last_error: Option<String>,
    },
    Online {
        protocol_version: u16,
        /// Last heartbeat round-trip, milliseconds.
        rtt_ms: Option<f64>,
        /// Unix seconds when the link came up.
        since: i64,
        /// What the hub announced it understands beyond version 1 (empty for an older hub).
        hub_capabilities: Vec<String>,
    },
    Stopped,
}

/// Handles a stream the peer opened, given its first message.
pub type StreamHandler = Arc<
    dyn Fn(
            PeerConnection,
            Message,
            FramedSend,
            FramedRecv,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Told about every bad frame a peer sends (for metrics).
pub type BadFrameHook = Arc<dyn Fn(&TransportError) + Send + Sync>;

/// Accepts the streams a peer opens for as long as the connection lives, reads each one's first
/// message and passes it on. A bad first frame is answered with an error on that stream only.
pub async fn serve_streams(
    peer: PeerConnection,
    handler: StreamHandler,
    on_bad_frame: BadFrameHook,
) {
    loop {
        let (mut send, mut recv) =
            match framed::accept(&peer.connection, priority::INTERACTIVE).await {
                Ok(pair) => pair,
                Err(_) => return,
            };
        let peer = peer.clone();
        let handler = handler.clone();
        let on_bad_frame = on_bad_frame.clone();
        tokio::spawn(async move {
            match timeout(FIRST_MESSAGE_TIMEOUT, recv.next()).await {
                Ok(Ok(Some(first))) => handler(peer, first, send, recv).await,
                Ok(Ok(None)) => {}
                Ok(Err(error)) => {
                    on_bad_frame(&error);
                    tracing::warn!(site = %peer.identity.site_id, %error, "bad frame on a new stream; answered with an error");
                    send.reject(&error).await;
                    recv.stop(1);
                }
                Err(_) => {
                    send.reject(&TransportError::Peer("no message within 10 s".into()))
                        .await;
                    recv.stop(1);
                }
            }
        });
    }
}

/// Why a control session ended.
#[derive(Debug)]
pub enum SessionEnd {
    Shutdown,
    Event(SessionEvent),
    Transport(TransportError),
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEnd::Shutdown => f.write_str("shut down"),
            SessionEnd::Event(SessionEvent::TimedOut) => {
                f.write_str("peer silent for three heartbeats")
            }
            SessionEnd::Event(SessionEvent::Refused { reason }) => write!(f, "refused: {reason}"),
            SessionEnd::Event(SessionEvent::ProtocolViolation { detail }) => {
                write!(f, "protocol violation: {detail}")
            }
            SessionEnd::Event(other) => write!(f, "{other:?}"),
            SessionEnd::Transport(error) => write!(f, "{error}"),
        }
    }
}

/// Drives the hub's side of a control stream whose `Hello` has been read. `on_event` sees every
/// session event (e.g. `Established`) and `on_heard` every message (for last-seen). A whole frame
/// that is not a message this hub knows is answered with an error and the session goes on; a
/// frame that breaks the framing (oversized, truncated) ends it.
pub async fn drive_hub_control(
    hello: Message,
    mut send: FramedSend,
    mut recv: FramedRecv,
    heartbeat: Duration,
    mut on_event: impl FnMut(&SessionEvent),
    mut on_heard: impl FnMut(),
    on_bad_frame: BadFrameHook,
) -> SessionEnd {
    let mut session = HubSession::new(Instant::now(), heartbeat);
    session.handle_message(hello, Instant::now());
    on_heard();
    loop {
        // Events first: what the edge announced is recorded before our answer can reach it, so
        // an edge that waits for the answer finds its capabilities known.
        let mut end = None;
        while let Some(event) = session.poll_event() {
            on_event(&event);
            if !matches!(
                event,
                SessionEvent::Established { .. }
                    | SessionEvent::RoundTrip(_)
                    | SessionEvent::PeerCapabilities(_)
            ) {
                end = Some(event);
                break;
            }
        }
        while let Some(message) = session.poll_transmit() {
            if let Err(error) = send.send(&message).await {
                return SessionEnd::Transport(error);
            }
        }
        if let Some(event) = end {
            send.finish();
            return SessionEnd::Event(event);
        }
        let Some(deadline) = session.poll_timeout() else {
            return SessionEnd::Shutdown;
        };
        tokio::select! {
            message = recv.next() => match message {
                Ok(Some(message)) => {
                    on_heard();
                    session.handle_message(message, Instant::now());
                }
                Ok(None) => return SessionEnd::Transport(TransportError::StreamEnded),
                Err(error @ TransportError::Wire(_)) => {
                    on_bad_frame(&error);
                    tracing::warn!(%error, "bad message on the control stream; answered with an error");
                    if let Err(error) = send.report(&error).await {
                        return SessionEnd::Transport(error);
                    }
                }
                Err(error) => {
                    on_bad_frame(&error);
                    send.reject(&error).await;
                    return SessionEnd::Transport(error);
                }
            },
            _ = tokio::time::sleep_until(deadline.into()) => session.handle_timeout(Instant::now()),
        }
    }
}

/// Drives the edge's side of the control stream on a fresh connection, publishing link state.
async fn drive_edge_control(
    connection: &quinn::Connection,
    software: &str,
    state: &watch::Sender<LinkState>,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let (mut send, mut recv) = match framed::open(connection, priority::CONTROL).await {
        Ok(pair) => pair,
        Err(error) => return SessionEnd::Transport(error),
    };
    let mut session = EdgeSession::new(Instant::now(), software, HANDSHAKE_TIMEOUT);
    let since = time_now_unix();
    loop {
        while let Some(message) = session.poll_transmit() {
            if let Err(error) = send.send(&message).await {
                return SessionEnd::Transport(error);
            }
        }
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Established { version } => {
                    state.send_replace(LinkState::Online {
                        protocol_version: version,
                        rtt_ms: None,
                        since,
                        hub_capabilities: Vec::new(),
                    });
                }
                SessionEvent::RoundTrip(rtt) => state.send_modify(|state| {
                    if let LinkState::Online { rtt_ms, .. } = state {
                        *rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                    }
                }),
                SessionEvent::PeerCapabilities(announced) => {
                    tracing::info!(capabilities = ?announced.names(), "the hub announced its capabilities");
                    state.send_modify(|state| {
                        if let LinkState::Online {
                            hub_capabilities, ..
                        } = state
                        {
                            *hub_capabilities = announced.names();
                        }
                    })
                }
                other => return SessionEnd::Event(other),
            }
        }
        let Some(deadline) = session.poll_timeout() else {
            return SessionEnd::Shutdown;
        };
        tokio::select! {
            message = recv.next() => match message {
                Ok(Some(message)) => session.handle_message(message, Instant::now()),
                Ok(None) => return SessionEnd::Transport(TransportError::StreamEnded),
                // A newer hub's message: answered, and the link goes on (the evolution rule in
                // grassroots_wire::capabilities).
                Err(error @ TransportError::Wire(grassroots_wire::WireError::UnknownMessage(_))) => {
                    tracing::info!(%error, "the hub sent a message this edge does not know; answered");
                    if let Err(error) = send.report(&error).await {
                        return SessionEnd::Transport(error);
                    }
                }
                Err(error) => return SessionEnd::Transport(error),
            },
            _ = tokio::time::sleep_until(deadline.into()) => session.handle_timeout(Instant::now()),
            _ = shutdown.changed() => return SessionEnd::Shutdown,
        }
    }
}

fn time_now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// What the edge's link loop publishes.
#[derive(Clone)]
pub struct EdgeLinkHandle {
    pub state: watch::Receiver<LinkState>,
    /// The live connection to the hub, when there is one (to open transfer streams on).
    pub connection: watch::Receiver<Option<quinn::Connection>>,
}

/// The edge's link: dial, hold the control session, redial with back-off, until shutdown.
pub struct EdgeLink {
    endpoint: EdgeEndpoint,
    software: String,
    state: watch::Sender<LinkState>,
    connection: watch::Sender<Option<quinn::Connection>>,
    backoff: Backoff,
}

impl EdgeLink {
    pub fn new(endpoint: EdgeEndpoint, software: &str, seed: u64) -> (Self, EdgeLinkHandle) {
        let (state, state_rx) = watch::channel(LinkState::Connecting {
            attempt: 0,
            last_error: None,
        });
        let (connection, connection_rx) = watch::channel(None);
        let link = Self {
            endpoint,
            software: software.to_string(),
            state,
            connection,
            backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(15), seed),
        };
        (
            link,
            EdgeLinkHandle {
                state: state_rx,
                connection: connection_rx,
            },
        )
    }

    /// Runs until `shutdown` becomes true. Streams the hub opens go to `handler`.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>, handler: StreamHandler) {
        let mut attempt: u32 = 0;
        let mut last_error: Option<String> = None;
        while !*shutdown.borrow() {
            attempt += 1;
            self.state.send_replace(LinkState::Connecting {
                attempt,
                last_error: last_error.clone(),
            });
            let connected = tokio::select! {
                result = self.endpoint.connect() => result,
                _ = shutdown.changed() => break,
            };
            match connected {
                Ok(peer) => {
                    tracing::info!(hub = %self.endpoint.hub_addr(), "link up");
                    self.connection.send_replace(Some(peer.connection.clone()));
                    let streams = tokio::spawn(serve_streams(
                        peer.clone(),
                        handler.clone(),
                        Arc::new(|_| {}),
                    ));
                    let end = drive_edge_control(
                        &peer.connection,
                        &self.software,
                        &self.state,
                        &mut shutdown,
                    )
                    .await;
                    streams.abort();
                    self.connection.send_replace(None);
                    let close_reason = peer.connection.close_reason();
                    let ended_cleanly = matches!(end, SessionEnd::Shutdown);
                    peer.connection.close(CloseCode::Shutdown.into(), b"");
                    if ended_cleanly {
                        break;
                    }
                    let reason = match close_reason {
                        Some(reason) => describe_connection_error(&reason),
                        None => end.to_string(),
                    };
                    tracing::warn!(%reason, "link down");
                    // A link that was up for a while starts the back-off afresh.
                    if matches!(&*self.state.borrow(), LinkState::Online { .. }) {
                        self.backoff.reset();
                        attempt = 0;
                    }
                    last_error = Some(reason);
                }
                Err(error) => {
                    let reason = match &error {
                        TransportError::Connection(e) => describe_connection_error(e),
                        other => other.to_string(),
                    };
                    tracing::warn!(hub = %self.endpoint.hub_addr(), %reason, "cannot reach the hub");
                    last_error = Some(reason);
                }
            }
            let delay = self.backoff.next_delay();
            self.state.send_replace(LinkState::Connecting {
                attempt,
                last_error: last_error.clone(),
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => break,
            }
        }
        self.state.send_replace(LinkState::Stopped);
        self.endpoint.close();
    }
}

/// A connection error in words an installer can act on.
pub fn describe_connection_error(error: &quinn::ConnectionError) -> String {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => describe_application_close(close),
        quinn::ConnectionError::TimedOut => "no answer from the hub (timed out)".into(),
        other => other.to_string(),
    }
}

fn describe_application_close(close: &quinn::ApplicationClose) -> String {
    let reason = String::from_utf8_lossy(&close.reason);
    let code = close.error_code.into_inner();
    let what = match code {
        0 => "peer shut down",
        1 => "replaced by a newer connection of the same site",
        2 => "certificate revoked",
        3 => "protocol violation",
        4 => "refused",
        5 => "timed out",
        _ => "closed",
    };
    if reason.is_empty() {
        format!("{what} (code {code})")
    } else {
        format!("{what} (code {code}): {reason}")
    }
}
