//! Content-addressed, chunked, resumable bulk transfer, as pure state machines.
//!
//! A blob is named by the BLAKE3 hash of its bytes ([`ContentId`]). The sender offers it with the
//! hash of every chunk; the receiver answers from which chunk to send (its durable progress, so a
//! cut or a restart of either side resumes from the last good chunk) or that it already holds the
//! blob. Each chunk is checked against its hash as it arrives, so a corrupt chunk is refused
//! before it is written; the whole blob is checked against its id once complete. The I/O — files,
//! fsync, streams — lives in `grassroots-transport`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::message::Message;

/// Default chunk size: large enough to keep a QUIC stream busy, small enough that a cut loses
/// little and a frame stays well under [`crate::MAX_FRAME_LEN`].
pub const DEFAULT_CHUNK_SIZE: u32 = 1024 * 1024;

/// Largest chunk a receiver accepts.
pub const MAX_CHUNK_SIZE: u32 = 1024 * 1024;

/// The BLAKE3 hash naming a blob or a chunk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentId(pub [u8; 32]);

impl ContentId {
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<blake3::Hash> for ContentId {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", &self.to_hex()[..16])
    }
}

impl FromStr for ContentId {
    type Err = TransferError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| TransferError::BadContentId(text.chars().take(80).collect()))?;
        Ok(Self(bytes))
    }
}

/// What the sender announces before the first chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferOffer {
    pub id: ContentId,
    pub size: u64,
    pub chunk_size: u32,
    pub chunk_hashes: Vec<ContentId>,
    /// What the blob is, for the receiver's records ("model-package", "federated-update"...).
    pub label: String,
}

/// Why a transfer step was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransferError {
    #[error("not a content id: {0:?}")]
    BadContentId(String),
    #[error("invalid offer for {id}: {reason}")]
    InvalidOffer { id: ContentId, reason: String },
    #[error("chunk {got} of {id} arrived, expected chunk {expected}")]
    OutOfOrder {
        id: ContentId,
        expected: u32,
        got: u32,
    },
    #[error("chunk {index} of {id} has {got} bytes, expected {expected}")]
    WrongLength {
        id: ContentId,
        index: u32,
        expected: usize,
        got: usize,
    },
    #[error("chunk {index} of {id} does not match its hash")]
    ChunkHashMismatch { id: ContentId, index: u32 },
    #[error("chunk for {got} arrived on the stream of {expected}")]
    WrongBlob { expected: ContentId, got: ContentId },
}

impl TransferOffer {
    /// Builds the offer for bytes held in memory (the transport builds it while reading a file).
    pub fn for_bytes(bytes: &[u8], chunk_size: u32, label: &str) -> Self {
        let mut builder = OfferBuilder::new(chunk_size);
        for chunk in bytes.chunks(chunk_size as usize) {
            builder.add_chunk(chunk);
        }
        builder.finish(label)
    }

    pub fn chunk_count(&self) -> u32 {
        if self.chunk_size == 0 {
            return 0;
        }
        // validate() bounds the count to what a u32 holds.
        self.size.div_ceil(u64::from(self.chunk_size)) as u32
    }

    /// Byte offset of a chunk in the blob.
    pub fn chunk_offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size)
    }

    /// Length of a chunk (the last one may be short).
    pub fn chunk_len(&self, index: u32) -> usize {
        let start = self.chunk_offset(index);
        self.size
            .saturating_sub(start)
            .min(u64::from(self.chunk_size)) as usize
    }

    /// Checks that an offer received from a peer is self-consistent and within limits.
    pub fn validate(&self) -> Result<(), TransferError> {
        let invalid = |reason: String| TransferError::InvalidOffer {
            id: self.id,
            reason,
        };
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return Err(invalid(format!(
                "chunk size {} outside 1..={MAX_CHUNK_SIZE}",
                self.chunk_size
            )));
        }
        let count = self.size.div_ceil(u64::from(self.chunk_size));
        if count > u64::from(u32::MAX) || count != self.chunk_hashes.len() as u64 {
            return Err(invalid(format!(
                "{} chunk hashes for {} bytes in chunks of {}",
                self.chunk_hashes.len(),
                self.size,
                self.chunk_size
            )));
        }
        Ok(())
    }
}

/// Hashes a blob chunk by chunk into a [`TransferOffer`].
#[derive(Debug)]
pub struct OfferBuilder {
    chunk_size: u32,
    whole: blake3::Hasher,
    size: u64,
    chunk_hashes: Vec<ContentId>,
}

impl OfferBuilder {
    pub fn new(chunk_size: u32) -> Self {
        Self {
            chunk_size,
            whole: blake3::Hasher::new(),
            size: 0,
            chunk_hashes: Vec::new(),
        }
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Adds the next chunk: every chunk but the last must be exactly `chunk_size` long.
    pub fn add_chunk(&mut self, chunk: &[u8]) {
        self.whole.update(chunk);
        self.size += chunk.len() as u64;
        self.chunk_hashes.push(ContentId::of(chunk));
    }

    pub fn finish(self, label: &str) -> TransferOffer {
        TransferOffer {
            id: self.whole.finalize().into(),
            size: self.size,
            chunk_size: self.chunk_size,
            chunk_hashes: self.chunk_hashes,
            label: label.to_string(),
        }
    }
}

/// The receiving side of one transfer.
#[derive(Debug)]
pub struct Receiver {
    offer: TransferOffer,
    next_chunk: u32,
}

impl Receiver {
    /// Starts (or resumes, with the number of chunks already durable) receiving `offer`.
    pub fn new(offer: TransferOffer, durable_chunks: u32) -> Result<Self, TransferError> {
        offer.validate()?;
        let next_chunk = durable_chunks.min(offer.chunk_count());
        Ok(Self { offer, next_chunk })
    }

    pub fn offer(&self) -> &TransferOffer {
        &self.offer
    }

    /// The message telling the sender where to start.
    pub fn accept(&self) -> Message {
        Message::TransferAccept {
            id: self.offer.id,
            from_chunk: self.next_chunk,
        }
    }

    /// Checks one chunk. On success it is the caller's to write it at the returned offset; the
    /// chunk counts as received once [`Receiver::next_chunk`] is made durable.
    pub fn handle_chunk(
        &mut self,
        id: ContentId,
        index: u32,
        data: &[u8],
    ) -> Result<u64, TransferError> {
        let offer = &self.offer;
        if id != offer.id {
            return Err(TransferError::WrongBlob {
                expected: offer.id,
                got: id,
            });
        }
        if index != self.next_chunk {
            return Err(TransferError::OutOfOrder {
                id,
                expected: self.next_chunk,
                got: index,
            });
        }
        let expected = offer.chunk_len(index);
        if data.len() != expected {
            return Err(TransferError::WrongLength {
                id,
                index,
                expected,
                got: data.len(),
            });
        }
        if offer.chunk_hashes.get(index as usize) != Some(&ContentId::of(data)) {
            return Err(TransferError::ChunkHashMismatch { id, index });
        }
        self.next_chunk += 1;
        Ok(offer.chunk_offset(index))
    }

    /// Chunks received and checked so far.
    pub fn next_chunk(&self) -> u32 {
        self.next_chunk
    }

    pub fn is_complete(&self) -> bool {
        self.next_chunk >= self.offer.chunk_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn receives_a_blob_and_resumes_after_a_cut() {
        let data = blob(10_000);
        let offer = TransferOffer::for_bytes(&data, 1024, "test");
        assert_eq!(offer.chunk_count(), 10);
        assert_eq!(offer.id, ContentId::of(&data));
        let mut receiver = Receiver::new(offer.clone(), 0).unwrap();
        let mut written = vec![0u8; data.len()];
        for index in 0..4 {
            let chunk = &data[offer.chunk_offset(index) as usize..][..offer.chunk_len(index)];
            let at = receiver.handle_chunk(offer.id, index, chunk).unwrap() as usize;
            written[at..at + chunk.len()].copy_from_slice(chunk);
        }
        // The link is cut; a new receiver resumes from the durable count.
        let mut receiver = Receiver::new(offer.clone(), receiver.next_chunk()).unwrap();
        assert_eq!(
            receiver.accept(),
            Message::TransferAccept {
                id: offer.id,
                from_chunk: 4
            }
        );
        for index in 4..offer.chunk_count() {
            let chunk = &data[offer.chunk_offset(index) as usize..][..offer.chunk_len(index)];
            let at = receiver.handle_chunk(offer.id, index, chunk).unwrap() as usize;
            written[at..at + chunk.len()].copy_from_slice(chunk);
        }
        assert!(receiver.is_complete());
        assert_eq!(written, data);
    }

    #[test]
    fn corrupt_skipped_and_foreign_chunks_are_refused() {
        let data = blob(3000);
        let offer = TransferOffer::for_bytes(&data, 1024, "test");
        let mut receiver = Receiver::new(offer.clone(), 0).unwrap();
        let mut corrupt = data[..1024].to_vec();
        corrupt[5] ^= 1;
        assert_eq!(
            receiver.handle_chunk(offer.id, 0, &corrupt),
            Err(TransferError::ChunkHashMismatch {
                id: offer.id,
                index: 0
            })
        );
        assert!(matches!(
            receiver.handle_chunk(offer.id, 1, &data[1024..2048]),
            Err(TransferError::OutOfOrder {
                expected: 0,
                got: 1,
                ..
            })
        ));
        assert!(matches!(
            receiver.handle_chunk(ContentId::of(b"other"), 0, &data[..1024]),
            Err(TransferError::WrongBlob { .. })
        ));
        assert!(matches!(
            receiver.handle_chunk(offer.id, 0, &data[..1000]),
            Err(TransferError::WrongLength { .. })
        ));
        assert_eq!(receiver.next_chunk(), 0, "nothing bad was counted");
    }

    #[test]
    fn inconsistent_offers_are_refused() {
        let mut offer = TransferOffer::for_bytes(&blob(5000), 1024, "test");
        offer.chunk_hashes.pop();
        assert!(matches!(
            Receiver::new(offer.clone(), 0),
            Err(TransferError::InvalidOffer { .. })
        ));
        offer.chunk_size = 0;
        assert!(matches!(
            offer.validate(),
            Err(TransferError::InvalidOffer { .. })
        ));
        let empty = TransferOffer::for_bytes(&[], 1024, "empty");
        assert!(Receiver::new(empty, 0).unwrap().is_complete());
    }

    #[test]
    fn content_ids_parse_from_hex() {
        let id = ContentId::of(b"x");
        assert_eq!(id.to_hex().parse::<ContentId>().unwrap(), id);
        assert!("zz".parse::<ContentId>().is_err());
    }
}
