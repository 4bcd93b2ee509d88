//! The edge's durable outbox of bulk transfers to the hub.
//!
//! A file to send is first copied into the edge's content-addressed blob store, then recorded in
//! the outbox — both durable before the request that asked for it is answered. A worker sends
//! pending entries whenever the link is up, resuming each from wherever the hub stands; an entry
//! is marked delivered only after the hub has acknowledged a verified, recorded blob. Killing the
//! edge (or the hub) at any moment therefore loses nothing, and content addressing makes a
//! repeated delivery a no-op.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grassroots_store::Table;
use grassroots_transport::transfer::SendOutcome;
use grassroots_transport::{BlobStore, SendOptions, TransferProgress};
use grassroots_wire::ContentId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::{watch, Notify};

use crate::metrics::EdgeMetrics;
use crate::EdgeError;

/// Errors that retrying cannot fix.
fn is_permanent(error: &EdgeError) -> bool {
    use grassroots_transport::TransportError;
    matches!(
        error,
        EdgeError::Transport(TransportError::NoSuchBlob(_) | TransportError::Transfer(_))
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutboxState {
    Pending,
    Delivered,
    /// Can never be sent as it is (its blob is gone, or it is not a valid transfer).
    Failed,
    /// The hub received it intact and refused its content for good (`last_error` says why, in
    /// the hub's words); it is not offered again.
    Refused,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboxEntry {
    pub id: String,
    pub label: String,
    pub size: u64,
    pub state: OutboxState,
    #[serde(with = "time::serde::rfc3339")]
    pub enqueued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub delivered_at: Option<OffsetDateTime>,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// An outbox entry with its live progress, for the UI and API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OutboxStatus {
    #[serde(flatten)]
    pub entry: OutboxEntry,
    pub progress: Option<TransferProgress>,
}

#[derive(Clone)]
pub struct Outbox {
    entries: Table<OutboxEntry>,
    blobs: BlobStore,
    progress: Arc<Mutex<HashMap<String, TransferProgress>>>,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(entries: Table<OutboxEntry>, blobs: BlobStore) -> Self {
        Self {
            entries,
            blobs,
            progress: Arc::new(Mutex::new(HashMap::new())),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Copies a file into the blob store and queues it for the hub. Queuing the same content
    /// again returns the existing entry.
    pub async fn enqueue_file(&self, path: &Path, label: &str) -> Result<OutboxEntry, EdgeError> {
        let offer = self.blobs.import_file(path, label).await?;
        let key = offer.id.to_hex();
        if let Some(existing) = self.entries.get(&key)? {
            return Ok(existing);
        }
        let entry = OutboxEntry {
            id: key.clone(),
            label: label.to_string(),
            size: offer.size,
            state: OutboxState::Pending,
            enqueued_at: OffsetDateTime::now_utc(),
            delivered_at: None,
            attempts: 0,
            last_error: None,
        };
        self.entries.put_durable(&key, &entry)?;
        self.wake.notify_one();
        Ok(entry)
    }

    pub fn statuses(&self) -> Result<Vec<OutboxStatus>, EdgeError> {
        let progress = self.progress.lock().map(|p| p.clone()).unwrap_or_default();
        let mut rows: Vec<OutboxStatus> = self
            .entries
            .entries()?
            .into_iter()
            .map(|(key, entry)| OutboxStatus {
                progress: progress.get(&key).copied(),
                entry,
            })
            .collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.entry.enqueued_at));
        Ok(rows)
    }

    /// Where the entry `id` stands, if it is in the outbox.
    pub fn entry(&self, id: &str) -> Result<Option<OutboxEntry>, EdgeError> {
        Ok(self.entries.get(id)?)
    }

    /// Pending entries, oldest first.
    fn pending(&self) -> Result<Vec<OutboxEntry>, EdgeError> {
        let mut pending: Vec<OutboxEntry> = self
            .entries
            .entries()?
            .into_iter()
            .map(|(_, entry)| entry)
            .filter(|entry| entry.state == OutboxState::Pending)
            .collect();
        pending.sort_by_key(|entry| entry.enqueued_at);
        Ok(pending)
    }

    /// Sends pending entries whenever there is a connection, until shutdown. An entry that fails
    /// waits (doubling, up to a minute) while the others go ahead; a new connection lets every
    /// entry try again at once.
    pub async fn run(
        self,
        mut connection: watch::Receiver<Option<grassroots_transport::Connection>>,
        options: SendOptions,
        metrics: EdgeMetrics,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut retry_at: HashMap<String, Instant> = HashMap::new();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let pending = self.pending().unwrap_or_else(|error| {
                tracing::error!(%error, "cannot read the outbox");
                Vec::new()
            });
            metrics.outbox_pending.set(pending.len() as i64);
            let now = Instant::now();
            let next = pending
                .iter()
                .find(|entry| retry_at.get(&entry.id).is_none_or(|at| *at <= now))
                .cloned();
            let current = connection.borrow().clone();
            let (Some(entry), Some(conn)) = (next, current) else {
                let earliest_retry = pending
                    .iter()
                    .filter_map(|e| retry_at.get(&e.id))
                    .min()
                    .copied();
                let wait = earliest_retry.map_or(Duration::from_secs(5), |at| {
                    at.saturating_duration_since(now)
                });
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = connection.changed() => retry_at.clear(),
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            };
            let outcome = tokio::select! {
                outcome = self.send(&entry, &conn, &options, &metrics) => outcome,
                _ = shutdown.changed() => return,
            };
            let Err(error) = outcome else {
                retry_at.remove(&entry.id);
                continue;
            };
            let mut failed = entry.clone();
            failed.attempts += 1;
            failed.last_error = Some(error.to_string());
            if let EdgeError::Transport(grassroots_transport::TransportError::Refused(reason)) =
                &error
            {
                tracing::warn!(id = %entry.id, label = %entry.label, %reason, "the hub refused this transfer for good");
                failed.state = OutboxState::Refused;
                failed.last_error = Some(reason.clone());
            } else if is_permanent(&error) {
                tracing::error!(id = %entry.id, %error, "bulk transfer cannot be sent; marked failed");
                failed.state = OutboxState::Failed;
            } else {
                let backoff =
                    Duration::from_secs(1 << failed.attempts.min(6)).min(Duration::from_secs(60));
                tracing::warn!(id = %entry.id, %error, retry_in_s = backoff.as_secs(), "bulk transfer interrupted; will resume");
                retry_at.insert(entry.id.clone(), Instant::now() + backoff);
            }
            if let Err(error) = self.entries.put_durable(&failed.id, &failed) {
                tracing::error!(%error, "cannot update the outbox");
            }
        }
    }

    async fn send(
        &self,
        entry: &OutboxEntry,
        connection: &grassroots_transport::Connection,
        options: &SendOptions,
        metrics: &EdgeMetrics,
    ) -> Result<(), EdgeError> {
        let id: ContentId =
            entry
                .id
                .parse()
                .map_err(|e: grassroots_wire::transfer::TransferError| {
                    EdgeError::Config(e.to_string())
                })?;
        let offer = self.blobs.offer(&id, &entry.label).await?;
        let progress = self.progress.clone();
        let key = entry.id.clone();
        let mut last_sent = None;
        let outcome =
            grassroots_transport::send_blob(connection, &self.blobs, &offer, options, |p| {
                if let Some(previous) = last_sent {
                    metrics
                        .bulk_bytes_sent
                        .inc_by(p.sent.saturating_sub(previous));
                }
                last_sent = Some(p.sent);
                if let Ok(mut map) = progress.lock() {
                    map.insert(key.clone(), p);
                }
            })
            .await?;
        let mut delivered = entry.clone();
        delivered.state = OutboxState::Delivered;
        delivered.delivered_at = Some(OffsetDateTime::now_utc());
        delivered.last_error = None;
        self.entries.put_durable(&delivered.id, &delivered)?;
        match outcome {
            SendOutcome::Delivered { resumed_from } => {
                tracing::info!(id = %entry.id, size = entry.size, resumed_from, "bulk transfer delivered")
            }
            SendOutcome::AlreadyThere => {
                tracing::info!(id = %entry.id, "the hub already had this blob")
            }
        }
        Ok(())
    }
}
