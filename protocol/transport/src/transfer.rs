//! Bulk transfers over a link: send a blob from one node's store into the other's.
//!
//! The sender opens a low-priority stream (live consult traffic goes first), offers the blob and
//! streams chunks from wherever the receiver says it stands, paced so that it leaves the
//! bottleneck's queue to live traffic ([`crate::pacing`]); the receiver checks each chunk
//! against its hash, writes it, and checkpoints durably about once a second (and at least every
//! 64 chunks). A cut, or a restart of either side, costs at most the chunks since the last
//! checkpoint. The receiver acknowledges
//! with `TransferComplete` only once the whole blob is verified, in place, and recorded by the
//! node, so a sender that saw the acknowledgement may forget the transfer.

use std::time::{Duration, Instant};

use grassroots_wire::transfer::Receiver;
use grassroots_wire::{Message, TransferOffer};
use serde::Serialize;

use crate::blobs::BlobStore;
use crate::framed::{self, priority, FramedRecv, FramedSend};
use crate::pacing::BulkPacer;
use crate::{Result, TransportError};

/// A durable checkpoint at least this often while chunks arrive (bounds what a crash costs on a
/// slow link to about a second of transfer)...
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// ...and at least every this many chunks (bounds it on a fast one).
const CHECKPOINT_MAX_CHUNKS: u32 = 64;

#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Cap on the sending rate, to leave a thin uplink usable for everything else.
    pub rate_limit_bytes_per_sec: Option<u64>,
    /// Pace the transfer so that the queueing delay it causes stays near
    /// [`crate::pacing::TARGET_QUEUEING`] (on by default; off only to measure the difference).
    pub yield_to_live: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            rate_limit_bytes_per_sec: None,
            yield_to_live: true,
        }
    }
}

/// Progress reported while sending.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TransferProgress {
    /// Bytes the receiver already held when this attempt started (resumed).
    pub resumed_from: u64,
    /// Bytes of the blob known to be at the receiver or in flight.
    pub sent: u64,
    pub total: u64,
}

/// How a send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The receiver verified and stored the blob.
    Delivered { resumed_from: u64 },
    /// The receiver already had it.
    AlreadyThere,
}

/// Sends a blob of `store` over `connection`.
pub async fn send_blob(
    connection: &quinn::Connection,
    store: &BlobStore,
    offer: &TransferOffer,
    options: &SendOptions,
    mut on_progress: impl FnMut(TransferProgress),
) -> Result<SendOutcome> {
    let (mut send, mut recv) = framed::open(connection, priority::BULK).await?;
    send.send(&Message::TransferOffer(offer.clone())).await?;
    let from_chunk = match recv.expect().await? {
        Message::TransferAccept { id, from_chunk } if id == offer.id => from_chunk,
        Message::TransferHave { id } if id == offer.id => {
            send.finish();
            return Ok(SendOutcome::AlreadyThere);
        }
        Message::TransferRejected { reason, .. } => return Err(TransportError::Peer(reason)),
        Message::TransferRefused { reason, .. } => return Err(TransportError::Refused(reason)),
        other => {
            return Err(TransportError::Unexpected {
                expected: "TransferAccept",
                got: other.kind(),
            })
        }
    };
    let resumed_from = offer.chunk_offset(from_chunk).min(offer.size);
    let mut progress = TransferProgress {
        resumed_from,
        sent: resumed_from,
        total: offer.size,
    };
    on_progress(progress);
    let started = Instant::now();
    let mut sent_now: u64 = 0;
    let mut pacer = options
        .yield_to_live
        .then(|| BulkPacer::new(connection, options.rate_limit_bytes_per_sec));
    for index in from_chunk..offer.chunk_count() {
        let data = store.read_chunk(offer, index).await?;
        let len = data.len() as u64;
        let chunk = Message::TransferChunk {
            id: offer.id,
            index,
            data,
        };
        match pacer.as_mut() {
            Some(pacer) => send.send_paced(&chunk, pacer).await?,
            None => send.send(&chunk).await?,
        }
        sent_now += len;
        progress.sent += len;
        on_progress(progress);
        if pacer.is_some() {
            continue; // the pacer keeps to the cap itself
        }
        if let Some(rate) = options.rate_limit_bytes_per_sec.filter(|rate| *rate > 0) {
            let due = Duration::from_secs_f64(sent_now as f64 / rate as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
    }
    send.finish();
    match recv.expect().await? {
        Message::TransferComplete { id } if id == offer.id => {
            Ok(SendOutcome::Delivered { resumed_from })
        }
        Message::TransferRejected { reason, .. } => Err(TransportError::Peer(reason)),
        Message::TransferRefused { reason, .. } => Err(TransportError::Refused(reason)),
        other => Err(TransportError::Unexpected {
            expected: "TransferComplete",
            got: other.kind(),
        }),
    }
}

/// A blob received (or found already present) and waiting for the node to record it before
/// [`ReceivedBlob::acknowledge`].
#[derive(Debug)]
pub struct ReceivedBlob {
    pub offer: TransferOffer,
    pub path: std::path::PathBuf,
    pub already_had: bool,
}

impl ReceivedBlob {
    /// Tells the sender the blob is safe (`TransferComplete`, or `TransferHave` if it was
    /// already here); call only after the node has durably recorded it.
    pub async fn acknowledge(&self, send: &mut FramedSend) -> Result<()> {
        let id = self.offer.id;
        let message = if self.already_had {
            Message::TransferHave { id }
        } else {
            Message::TransferComplete { id }
        };
        send.send(&message).await?;
        send.finish();
        Ok(())
    }
    /// Tells the sender the node refused the blob's content (it arrived intact but will not be
    /// kept), with the reason: the sender should not count it as delivered, and may offer it
    /// again later (`TransferRejected`).
    pub async fn refuse(&self, send: &mut FramedSend, reason: &str) -> Result<()> {
        self.answer_refusal(send, reason, false).await
    }

    /// Tells the sender the content will never be taken (a referral the hub refuses), with the
    /// reason for the people who sent it. A sender that announced
    /// [`grassroots_wire::capabilities::TRANSFER_REFUSED`] gets `TransferRefused` and stops
    /// offering it; an older one gets `TransferRejected`, as in version 1.
    pub async fn refuse_for_good(
        &self,
        send: &mut FramedSend,
        reason: &str,
        peer: &grassroots_wire::capabilities::Capabilities,
    ) -> Result<()> {
        let understood = peer.has(grassroots_wire::capabilities::TRANSFER_REFUSED);
        self.answer_refusal(send, reason, understood).await
    }

    async fn answer_refusal(
        &self,
        send: &mut FramedSend,
        reason: &str,
        for_good: bool,
    ) -> Result<()> {
        let id = self.offer.id;
        let reason = reason.to_string();
        let message = if for_good {
            Message::TransferRefused { id, reason }
        } else {
            Message::TransferRejected { id, reason }
        };
        send.send(&message).await?;
        send.finish();
        Ok(())
    }
}

async fn reject(
    send: &mut FramedSend,
    offer: &TransferOffer,
    error: TransportError,
) -> TransportError {
    let _ = send
        .send(&Message::TransferRejected {
            id: offer.id,
            reason: error.to_string(),
        })
        .await;
    send.finish();
    error
}

/// Receives the blob offered on a stream into `store`.
pub async fn receive_blob(
    store: &BlobStore,
    offer: TransferOffer,
    send: &mut FramedSend,
    recv: &mut FramedRecv,
) -> Result<ReceivedBlob> {
    if let Err(error) = offer.validate() {
        return Err(reject(send, &offer, error.into()).await);
    }
    let already_had = |offer: TransferOffer| ReceivedBlob {
        path: store.path(&offer.id),
        offer,
        already_had: true,
    };
    if store.contains(&offer.id) {
        return Ok(already_had(offer));
    }
    let Some(mut partial) = store.begin_receive(&offer).await? else {
        let busy = TransportError::Peer(format!(
            "blob {} is already being received on another stream",
            offer.id
        ));
        return Err(reject(send, &offer, busy).await);
    };
    // Another stream may have completed the blob between the check above and taking it.
    if store.contains(&offer.id) {
        partial.abandon().await;
        return Ok(already_had(offer));
    }
    let mut receiver = Receiver::new(offer.clone(), partial.durable_chunks())?;
    send.send(&receiver.accept()).await?;
    let mut last_checkpoint = (Instant::now(), receiver.next_chunk());
    while !receiver.is_complete() {
        let message = match recv
            .next()
            .await
            .and_then(|m| m.ok_or(TransportError::StreamEnded))
        {
            Ok(message) => message,
            Err(error) => {
                // The link was cut, or the sender broke the framing: keep what arrived whole,
                // and tell the sender why if the stream can still carry it.
                partial.checkpoint(receiver.next_chunk()).await?;
                if matches!(error, TransportError::Wire(_) | TransportError::Frame(_)) {
                    return Err(reject(send, &offer, error).await);
                }
                return Err(error);
            }
        };
        let Message::TransferChunk { id, index, data } = message else {
            partial.checkpoint(receiver.next_chunk()).await?;
            let unexpected = TransportError::Unexpected {
                expected: "TransferChunk",
                got: message.kind(),
            };
            return Err(reject(send, &offer, unexpected).await);
        };
        let offset = match receiver.handle_chunk(id, index, &data) {
            Ok(offset) => offset,
            Err(error) => {
                partial.checkpoint(receiver.next_chunk()).await?;
                return Err(reject(send, &offer, error.into()).await);
            }
        };
        partial.write_at(offset, &data).await?;
        let (at, chunks) = last_checkpoint;
        if at.elapsed() >= CHECKPOINT_INTERVAL
            || receiver.next_chunk() - chunks >= CHECKPOINT_MAX_CHUNKS
        {
            partial.checkpoint(receiver.next_chunk()).await?;
            last_checkpoint = (Instant::now(), receiver.next_chunk());
        }
    }
    match partial.complete().await {
        Ok(path) => Ok(ReceivedBlob {
            offer,
            path,
            already_had: false,
        }),
        Err(error) => Err(reject(send, &offer, error).await),
    }
}
