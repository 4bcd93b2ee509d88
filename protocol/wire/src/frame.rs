//! Length-prefixed frames: a 4-byte big-endian length, then a postcard-encoded [`Message`].
//!
//! The decoder is sans-IO: push whatever bytes arrived, pull whole frames out. A length over
//! [`MAX_FRAME_LEN`] is refused *before* any buffer is grown, so a hostile or broken peer cannot
//! make a node allocate gigabytes by sending four bytes.

use crate::message::{Message, WireError};

/// Largest frame body accepted: a 1 MiB transfer chunk plus generous room for its header.
pub const MAX_FRAME_LEN: usize = 2 * 1024 * 1024;

const HEADER_LEN: usize = 4;

/// Why the byte stream could not be cut into frames.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    Oversized { len: usize, limit: usize },
    #[error("stream ended inside a frame ({buffered} bytes of an unfinished frame)")]
    Truncated { buffered: usize },
}

impl From<FrameError> for WireError {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::Oversized { len, limit } => WireError::Oversized { len, limit },
            FrameError::Truncated { .. } => WireError::Malformed(error.to_string()),
        }
    }
}

/// Encodes one message as a frame.
pub fn encode(message: &Message) -> Result<Vec<u8>, FrameError> {
    let body = message.to_bytes();
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::Oversized {
            len: body.len(),
            limit: MAX_FRAME_LEN,
        });
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    // The check above keeps the length within u32.
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Cuts a byte stream into frame bodies.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Returns the next whole frame body, `None` if more bytes are needed.
    ///
    /// After an [`FrameError::Oversized`] the stream is out of sync and must be abandoned.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(header) = self.buffer.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; HEADER_LEN];
        len_bytes.copy_from_slice(header);
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > MAX_FRAME_LEN {
            return Err(FrameError::Oversized {
                len,
                limit: MAX_FRAME_LEN,
            });
        }
        if self.buffer.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let body = self.buffer[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buffer.drain(..HEADER_LEN + len);
        Ok(Some(body))
    }

    /// Call when the stream has ended: an unfinished frame is an error.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                buffered: self.buffer.len(),
            })
        }
    }

    /// Bytes still buffered (an unfinished frame).
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_survive_arbitrary_splits() {
        let messages = [Message::Ping { seq: 1 }, Message::Pong { seq: 2 }];
        let mut bytes = Vec::new();
        for message in &messages {
            bytes.extend(encode(message).unwrap());
        }
        for split in 0..bytes.len() {
            let mut decoder = FrameDecoder::new();
            decoder.push(&bytes[..split]);
            let mut out = Vec::new();
            while let Some(body) = decoder.next_frame().unwrap() {
                out.push(Message::from_bytes(&body).unwrap());
            }
            decoder.push(&bytes[split..]);
            while let Some(body) = decoder.next_frame().unwrap() {
                out.push(Message::from_bytes(&body).unwrap());
            }
            assert_eq!(out, messages);
            decoder.finish().unwrap();
        }
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&u32::MAX.to_be_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::Oversized {
                len: u32::MAX as usize,
                limit: MAX_FRAME_LEN
            })
        );
    }

    #[test]
    fn truncated_stream_is_reported() {
        let frame = encode(&Message::Ping { seq: 9 }).unwrap();
        let mut decoder = FrameDecoder::new();
        decoder.push(&frame[..frame.len() - 1]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert!(matches!(
            decoder.finish(),
            Err(FrameError::Truncated { .. })
        ));
    }

    proptest! {
        /// Random bytes never panic the decoder; whatever frames come out either decode or give
        /// a typed error.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut decoder = FrameDecoder::new();
            decoder.push(&bytes);
            while let Ok(Some(body)) = decoder.next_frame() {
                let _ = Message::from_bytes(&body);
            }
        }

        /// Any prefix of a valid frame sequence is either incomplete or decodes to a prefix of the
        /// messages.
        #[test]
        fn truncated_frames_decode_to_a_prefix(seqs in proptest::collection::vec(any::<u64>(), 1..8), cut in any::<prop::sample::Index>()) {
            let messages: Vec<Message> = seqs.iter().map(|&seq| Message::Ping { seq }).collect();
            let bytes: Vec<u8> = messages.iter().flat_map(|m| encode(m).unwrap()).collect();
            let cut = cut.index(bytes.len() + 1);
            let mut decoder = FrameDecoder::new();
            decoder.push(&bytes[..cut]);
            let mut out = Vec::new();
            while let Some(body) = decoder.next_frame().unwrap() {
                out.push(Message::from_bytes(&body).unwrap());
            }
            prop_assert_eq!(&messages[..out.len()], &out[..]);
        }
    }
}
