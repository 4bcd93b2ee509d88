//! Framed message streams over QUIC streams.
//!
//! A malformed, oversized or unknown frame surfaces as an error on *that* stream only: the caller
//! answers with [`grassroots_wire::Message::Error`] (see [`FramedSend::reject`]) and drops the
//! stream; the connection and its other streams carry on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use grassroots_wire::frame::encode;
use grassroots_wire::{FrameDecoder, Message};

use crate::pacing::BulkPacer;
use crate::{Result, TransportError};

/// Stream priorities (quinn sends higher first): control and interactive traffic ahead of bulk.
pub mod priority {
    pub const CONTROL: i32 = 10;
    pub const INTERACTIVE: i32 = 5;
    /// Fetched ahead of a person (consult prefetch): after interactive, before bulk.
    pub const PREFETCH: i32 = 0;
    pub const BULK: i32 = -10;
}

const READ_BUFFER: usize = 64 * 1024;

pub struct FramedRecv {
    stream: quinn::RecvStream,
    decoder: FrameDecoder,
    buffer: Vec<u8>,
}

impl FramedRecv {
    pub fn new(stream: quinn::RecvStream) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(),
            buffer: vec![0u8; READ_BUFFER],
        }
    }

    /// The next message; `Ok(None)` when the peer finished the stream cleanly between frames.
    pub async fn next(&mut self) -> Result<Option<Message>> {
        loop {
            if let Some(body) = self.decoder.next_frame()? {
                return Ok(Some(Message::from_bytes(&body)?));
            }
            match self.stream.read(&mut self.buffer).await? {
                Some(read) => self.decoder.push(&self.buffer[..read]),
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }

    /// The next message, which must be there.
    pub async fn expect(&mut self) -> Result<Message> {
        match self.next().await? {
            Some(Message::Error { code, detail }) => {
                Err(TransportError::Peer(format!("{code:?}: {detail}")))
            }
            Some(message) => Ok(message),
            None => Err(TransportError::StreamEnded),
        }
    }

    /// Tells the peer to stop sending on this stream.
    pub fn stop(&mut self, code: u32) {
        let _ = self.stream.stop(code.into());
    }
}

pub struct FramedSend {
    stream: quinn::SendStream,
    priority: i32,
    /// Where live (interactive and control) bytes on this stream's connection are counted, for the bulk
    /// pacers on it ([`crate::pacing`]).
    live: Option<Arc<AtomicU64>>,
}

impl FramedSend {
    pub fn new(stream: quinn::SendStream, priority: i32) -> Self {
        // Only fails on a stream that is already closed; the next write will say so.
        let _ = stream.set_priority(priority);
        Self {
            stream,
            priority,
            live: None,
        }
    }

    /// As [`Self::new`], counting what it sends above bulk priority on `connection`.
    fn on_connection(
        stream: quinn::SendStream,
        priority: i32,
        connection: &quinn::Connection,
    ) -> Self {
        Self {
            live: Some(crate::pacing::live_ledger(connection)),
            ..Self::new(stream, priority)
        }
    }

    /// Changes the stream's priority (see [`priority`]).
    pub fn set_priority(&mut self, priority: i32) {
        self.priority = priority;
        let _ = self.stream.set_priority(priority);
    }

    pub async fn send(&mut self, message: &Message) -> Result<()> {
        let frame = encode(message)?;
        if let Some(live) = self
            .live
            .as_ref()
            .filter(|_| self.priority >= priority::INTERACTIVE)
        {
            live.fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Sends a message in slices, waiting on `pacer` before each (bulk data; see
    /// [`crate::pacing`]).
    pub async fn send_paced(&mut self, message: &Message, pacer: &mut BulkPacer) -> Result<()> {
        let frame = encode(message)?;
        for slice in frame.chunks(crate::pacing::SLICE) {
            pacer.before_send(slice.len()).await;
            self.stream.write_all(slice).await?;
        }
        Ok(())
    }

    /// Answers a bad frame with an error message and finishes the stream.
    pub async fn reject(&mut self, error: &TransportError) {
        let _ = self.report(error).await;
        self.finish();
    }

    /// Answers a bad frame with an error message; the stream stays open (use when the frame
    /// boundaries are intact, so the next frame can still be read).
    pub async fn report(&mut self, error: &TransportError) -> Result<()> {
        let code = match error {
            TransportError::Wire(wire) => wire.code(),
            TransportError::Frame(grassroots_wire::FrameError::Oversized { .. }) => {
                grassroots_wire::ErrorCode::Oversized
            }
            TransportError::Frame(_) => grassroots_wire::ErrorCode::Malformed,
            TransportError::Unexpected { .. } => grassroots_wire::ErrorCode::Unexpected,
            _ => grassroots_wire::ErrorCode::Failed,
        };
        let message = Message::Error {
            code,
            detail: error.to_string(),
        };
        self.send(&message).await
    }

    /// Finishes the stream (the peer reads to its end).
    pub fn finish(&mut self) {
        let _ = self.stream.finish();
    }

    /// Waits until the peer has received everything (or the stream was reset).
    pub async fn stopped(&mut self) {
        let _ = self.stream.stopped().await;
    }
}

/// Opens a bidirectional stream on a connection as a framed pair.
pub async fn open(
    connection: &quinn::Connection,
    priority: i32,
) -> Result<(FramedSend, FramedRecv)> {
    let (send, recv) = connection.open_bi().await?;
    Ok((
        FramedSend::on_connection(send, priority, connection),
        FramedRecv::new(recv),
    ))
}

/// Accepts the next bidirectional stream as a framed pair.
pub async fn accept(
    connection: &quinn::Connection,
    priority: i32,
) -> Result<(FramedSend, FramedRecv)> {
    let (send, recv) = connection.accept_bi().await?;
    Ok((
        FramedSend::on_connection(send, priority, connection),
        FramedRecv::new(recv),
    ))
}
