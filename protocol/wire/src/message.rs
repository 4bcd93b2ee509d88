//! Every message that crosses a Grassroots link, as one versioned serde enum.
//!
//! Messages are encoded with `postcard` (compact, schema-driven) inside length-limited frames (see
//! [`crate::frame`]). The enum only ever grows at the end ([`crate::capabilities`] has the whole
//! rule), so an older peer that meets a variant it
//! does not know fails to decode *that frame* with [`WireError::UnknownMessage`], answers with an
//! [`Message::Error`] on the same stream, and keeps the connection. The first message on a stream
//! says what the stream is for: `Hello` opens the control stream, `TransferOffer` a bulk transfer.

use serde::{Deserialize, Serialize};

use crate::transfer::{ContentId, TransferOffer};

/// ALPN protocol id negotiated in the TLS handshake: a peer speaking anything else is refused
/// before a single message is read.
pub const ALPN: &[u8] = b"grassroots/1";

/// The protocol version this build prefers.
pub const PROTOCOL_VERSION: u16 = 1;

/// All protocol versions this build can speak, newest first.
pub const SUPPORTED_VERSIONS: &[u16] = &[1];

/// Machine-readable reason carried by [`Message::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The frame could not be decoded as a message (truncated, garbage, wrong types).
    Malformed,
    /// The frame decoded to a message variant this peer does not know.
    UnknownMessage,
    /// The frame was longer than [`crate::MAX_FRAME_LEN`].
    Oversized,
    /// A valid message arrived where the stream's state did not allow it.
    Unexpected,
    /// The peer could not do what was asked (disk full, no such blob...).
    Failed,
}

/// One message on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Edge -> hub, first message on the control stream: the versions the edge speaks.
    Hello {
        versions: Vec<u16>,
        software: String,
    },
    /// Hub -> edge: the version chosen and the heartbeat period the edge must keep.
    Welcome { version: u16, heartbeat_ms: u32 },
    /// Hub -> edge: no common version (or another reason); the hub closes the connection.
    Refused { reason: String },
    /// Heartbeat from the edge; the hub answers with the same sequence number.
    Ping { seq: u64 },
    /// Answer to [`Message::Ping`].
    Pong { seq: u64 },
    /// An error about the previous frame on this stream. The connection stays up.
    Error { code: ErrorCode, detail: String },
    /// Sender -> receiver, first message of a bulk-transfer stream.
    TransferOffer(TransferOffer),
    /// Receiver -> sender: send from this chunk on (0 for a fresh transfer).
    TransferAccept { id: ContentId, from_chunk: u32 },
    /// Receiver -> sender: the receiver already holds the whole blob (content addressing makes a
    /// repeated transfer a no-op).
    TransferHave { id: ContentId },
    /// Sender -> receiver: one chunk of the blob.
    TransferChunk {
        id: ContentId,
        index: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Receiver -> sender: the blob is complete, verified and durable.
    TransferComplete { id: ContentId },
    /// Receiver -> sender: the transfer was refused or failed verification.
    TransferRejected { id: ContentId, reason: String },
    /// Hub -> edge, the only message of a consult stream: the Deep Zoom descriptor (`tile`
    /// none) or a JPEG tile of a slide of a referral, for the expert viewing it.
    ConsultRequest {
        referral_id: String,
        slide_id: String,
        tile: Option<TileAddress>,
        /// Fetched ahead of the expert: the edge sends it behind live requests.
        prefetch: bool,
    },
    /// Edge -> hub: what a [`Message::ConsultRequest`] asked for.
    ConsultData {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Hub -> edge, repeated on one stream for a live session: where the expert is looking on
    /// a slide of a referral (viewport x, y, width, height and the pointer, in level-0 slide
    /// pixels, which may lie outside the slide), for the county doctor's screen to follow.
    LiveView {
        referral_id: String,
        slide_id: String,
        viewport: [i64; 4],
        pointer: Option<[i64; 2]>,
    },
    /// Either way, on the control stream: what the sender understands beyond version 1 (see
    /// [`crate::capabilities`]). The edge sends it right after `Hello`; the hub answers with its
    /// own.
    Capabilities { names: Vec<String> },
    /// Receiver -> sender, instead of `TransferComplete`, to a peer that announced
    /// [`crate::capabilities::TRANSFER_REFUSED`]: the blob arrived intact but its content is
    /// refused for good (a referral the hub will not take), with the reason for the people who
    /// sent it. The sender stops offering it.
    TransferRefused { id: ContentId, reason: String },
    /// Hub -> edge, the only message of a study-view stream (to an edge that announced
    /// [`crate::capabilities::STUDY_CONSULT`]): one rendered view of a series of a referred
    /// study, for the expert viewing it. `kind` is `describe` (the series' figures as JSON, or
    /// why it is no volume), `image` (a picture of its stack; the query holds `index`,
    /// `window`, `viewport`), `plane` or `volume` (the query the edge's own `mpr.jpg` and
    /// `volume.jpg` resources take), `stack` (each picture's size and spacing as JSON,
    /// [`crate::referral::StackPicture`]) or `region` (the HU of a rectangle of one picture,
    /// `index`, `x`, `y`, `width`, `height`: [`crate::referral::RegionFigures`]; both added
    /// after study consults: an older edge refuses them, naming the kinds it knows); `query` has
    /// at most [`MAX_VIEW_QUERY`] bytes. The edge answers [`Message::ConsultData`] (JSON or a
    /// JPEG) or [`Message::Refused`] with why.
    StudyView {
        referral_id: String,
        study_key: String,
        series_key: String,
        kind: String,
        query: String,
    },
}

/// Longest query of a [`Message::StudyView`].
pub const MAX_VIEW_QUERY: usize = 2048;

/// A Deep Zoom tile: level, column, row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TileAddress {
    pub level: u32,
    pub col: u32,
    pub row: u32,
}

/// Why bytes could not become a [`Message`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unknown message type (a newer peer?): {0}")]
    UnknownMessage(String),
    #[error("message of {len} bytes exceeds the frame limit of {limit} bytes")]
    Oversized { len: usize, limit: usize },
}

impl WireError {
    /// The code to send back to the peer in a [`Message::Error`].
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::Malformed(_) => ErrorCode::Malformed,
            WireError::UnknownMessage(_) => ErrorCode::UnknownMessage,
            WireError::Oversized { .. } => ErrorCode::Oversized,
        }
    }
}

impl Message {
    /// Encodes the message body (without the frame header).
    pub fn to_bytes(&self) -> Vec<u8> {
        // postcard only fails to serialise into a growable Vec on types serde cannot describe;
        // every field of `Message` is plain data, so this cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a message body, telling an unknown variant apart from garbage.
    pub fn from_bytes(bytes: &[u8]) -> Result<Message, WireError> {
        match postcard::from_bytes::<Message>(bytes) {
            Ok(message) => Ok(message),
            Err(error) => match variant_tag(bytes) {
                Some(tag) if tag >= KNOWN_VARIANTS => {
                    Err(WireError::UnknownMessage(format!("variant tag {tag}")))
                }
                _ => Err(WireError::Malformed(error.to_string())),
            },
        }
    }

    /// A short name for logs (never the payload: chunks may hold pixels).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::Welcome { .. } => "Welcome",
            Message::Refused { .. } => "Refused",
            Message::Ping { .. } => "Ping",
            Message::Pong { .. } => "Pong",
            Message::Error { .. } => "Error",
            Message::TransferOffer(_) => "TransferOffer",
            Message::TransferAccept { .. } => "TransferAccept",
            Message::TransferHave { .. } => "TransferHave",
            Message::TransferChunk { .. } => "TransferChunk",
            Message::TransferComplete { .. } => "TransferComplete",
            Message::TransferRejected { .. } => "TransferRejected",
            Message::ConsultRequest { .. } => "ConsultRequest",
            Message::ConsultData { .. } => "ConsultData",
            Message::LiveView { .. } => "LiveView",
            Message::Capabilities { .. } => "Capabilities",
            Message::TransferRefused { .. } => "TransferRefused",
            Message::StudyView { .. } => "StudyView",
        }
    }
}

/// Number of [`Message`] variants this build knows; postcard numbers variants from 0 in
/// declaration order, so a larger tag is a message from a newer peer.
const KNOWN_VARIANTS: u32 = 18;

/// The enum variant tag at the start of a postcard body (a LEB128 varint).
fn variant_tag(bytes: &[u8]) -> Option<u32> {
    let mut tag: u32 = 0;
    for (i, byte) in bytes.iter().take(5).enumerate() {
        tag |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(tag);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind_of_message() {
        let id = ContentId::of(b"abc");
        let messages = vec![
            Message::Hello {
                versions: vec![1],
                software: "test".into(),
            },
            Message::Welcome {
                version: 1,
                heartbeat_ms: 5000,
            },
            Message::Ping { seq: 7 },
            Message::TransferChunk {
                id,
                index: 3,
                data: vec![1, 2, 3],
            },
            Message::Error {
                code: ErrorCode::Malformed,
                detail: "x".into(),
            },
        ];
        for message in messages {
            assert_eq!(Message::from_bytes(&message.to_bytes()), Ok(message));
        }
    }

    #[test]
    fn known_variant_count_matches_the_enum() {
        let last = Message::StudyView {
            referral_id: String::new(),
            study_key: String::new(),
            series_key: String::new(),
            kind: String::new(),
            query: String::new(),
        };
        assert_eq!(variant_tag(&last.to_bytes()), Some(KNOWN_VARIANTS - 1));
    }

    #[test]
    fn unknown_variant_is_told_apart_from_garbage() {
        // Variant tag 200 does not exist (yet).
        let err = Message::from_bytes(&[200, 1]).unwrap_err();
        assert!(matches!(err, WireError::UnknownMessage(_)), "{err:?}");
        assert_eq!(err.code(), ErrorCode::UnknownMessage);
        // A Hello whose string length runs past the end is malformed.
        let err = Message::from_bytes(&[0, 1, 1, 50, b'a']).unwrap_err();
        assert!(matches!(err, WireError::Malformed(_)), "{err:?}");
    }
}
