//! Drives the Grassroots wire protocol over QUIC with mutual TLS.
//!
//! `grassroots-wire` decides *what* to say; this crate moves it: rustls configurations built
//! from a startup kit ([`tls`]), the hub's listening endpoint and the edge's dialling endpoint
//! ([`endpoint`]), length-limited framed streams ([`framed`]), the control-stream drivers with
//! reconnect ([`link`]), and resumable bulk transfers into a content-addressed blob store
//! ([`blobs`], [`transfer`]), paced to leave a thin link's queue to live traffic ([`pacing`]). quinn and rustls appear in no other crate.

pub mod blobs;
pub mod endpoint;
pub mod framed;
pub mod link;
pub mod pacing;
pub mod tls;
pub mod transfer;

use std::path::PathBuf;

pub use blobs::{BlobStore, PartialBlobStatus};
pub use endpoint::{Congestion, EdgeEndpoint, HubEndpoint, PeerConnection};
pub use framed::{FramedRecv, FramedSend};
pub use link::{CloseCode, LinkState};
pub use quinn::Connection;
pub use transfer::{receive_blob, send_blob, SendOptions, TransferProgress};

use grassroots_wire::transfer::TransferError;
use grassroots_wire::{FrameError, WireError};

/// Everything that can go wrong on a link.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    #[error(transparent)]
    Provisioning(#[from] grassroots_provisioning::ProvisioningError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot resolve hub address {addr:?}: {reason}")]
    Resolve { addr: String, reason: String },
    #[error("cannot dial: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream read: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("stream already closed")]
    ClosedStream(#[from] quinn::ClosedStream),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("peer reported an error: {0}")]
    Peer(String),
    /// The receiver refused the blob's content for good (`TransferRefused`): offering it again
    /// cannot help, and the reason is for the people who sent it.
    #[error("refused by the peer: {0}")]
    Refused(String),
    #[error("expected {expected}, peer sent {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("peer closed the stream early")]
    StreamEnded,
    #[error("peer identity: {0}")]
    PeerIdentity(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("blob {id}: received bytes hash to {actual}; the transfer is discarded")]
    BlobHashMismatch { id: String, actual: String },
    #[error("no blob {0} in the store")]
    NoSuchBlob(String),
}

pub type Result<T, E = TransportError> = std::result::Result<T, E>;

pub(crate) fn io_error(
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> TransportError + '_ {
    move |source| TransportError::Io {
        path: path.to_path_buf(),
        source,
    }
}
