//! The Grassroots wire protocol without any I/O.
//!
//! Like `quinn-proto`, this crate holds only state machines and encodings: they are fed bytes,
//! messages and the current time, and drained for what to send and when to wake up. The QUIC
//! driver (`grassroots-transport`) moves their output over sockets; tests here run both sides of a
//! link against each other in memory with a virtual clock, deterministic and fast.
//!
//! What lives here: the message enum and its framing ([`message`], [`frame`]), the link session
//! that negotiates a protocol version and capabilities and keeps heartbeats ([`session`]; the
//! rule for evolving the protocol is in [`capabilities`]), reconnect back-off
//! ([`backoff`]), the content-addressed, resumable bulk-transfer machines ([`transfer`]) and
//! the referral an edge sends the hub ([`referral`]: the privacy line, field by field), and the
//! labels and status report of model distribution ([`models`]), and a federated round's task
//! and update ([`federated`]).

pub mod backoff;
pub mod capabilities;
pub mod coverage;
pub mod federated;
pub mod frame;
pub mod message;
pub mod models;
pub mod referral;
pub mod revocation;
pub mod session;
pub mod transfer;

pub use frame::{FrameDecoder, FrameError, MAX_FRAME_LEN};
pub use message::{
    ErrorCode, Message, TileAddress, WireError, ALPN, PROTOCOL_VERSION, SUPPORTED_VERSIONS,
};
pub use transfer::{ContentId, TransferOffer};
