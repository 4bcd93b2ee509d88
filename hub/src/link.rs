//! The hub's side of the links: accept edges, hold their control sessions, receive their bulk
//! transfers. A refused handshake is logged with the reason TLS gave (unknown CA, expired,
//! revoked, no certificate) and counted; it never affects other connections.

use std::sync::Arc;

use grassroots_store::Table;
use grassroots_transport::link::{drive_hub_control, serve_streams, SessionEnd, StreamHandler};
use grassroots_transport::{
    CloseCode, FramedRecv, FramedSend, HubEndpoint, PeerConnection, TransportError,
};
use grassroots_wire::session::SessionEvent;
use grassroots_wire::Message;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::HubState;

/// How long a refusal for good waits for the edge to announce its capabilities.
const ANNOUNCE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// A blob an edge delivered, as recorded before the delivery is acknowledged.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceivedRecord {
    pub id: String,
    pub label: String,
    pub size: u64,
    pub from_site: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

pub async fn accept_loop(
    state: Arc<HubState>,
    endpoint: Arc<HubEndpoint>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.changed() => break,
        };
        let Some(incoming) = incoming else { break };
        tokio::spawn(handle_incoming(state.clone(), incoming));
    }
    endpoint.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), endpoint.wait_idle()).await;
}

async fn handle_incoming(state: Arc<HubState>, incoming: grassroots_transport::endpoint::Incoming) {
    let remote = incoming.remote_address();
    let peer = match HubEndpoint::handshake(incoming).await {
        Ok(peer) => peer,
        Err(error) => {
            state.metrics.connections_refused.inc();
            let reason = match &error {
                TransportError::Connection(e) => {
                    grassroots_transport::link::describe_connection_error(e)
                }
                other => other.to_string(),
            };
            tracing::warn!(%remote, %reason, "refused connection");
            return;
        }
    };
    let identity = peer.identity.clone();
    if identity.network != state.kit.network {
        // Same CA but another network name cannot happen with kits we issue; refuse anyway.
        state.metrics.connections_refused.inc();
        tracing::warn!(%remote, site = %identity.site_id, network = %identity.network, "refused connection: certificate of another network");
        peer.connection
            .close(CloseCode::Refused.into(), b"certificate of another network");
        return;
    }
    if state.revocations.is_revoked(&identity.serial) {
        state.metrics.connections_refused.inc();
        state.accounts.security_log().record(
            "connection-refused",
            Some(identity.site_id.as_str()),
            None,
            Some(&remote.to_string()),
            "certificate revoked",
        );
        peer.connection
            .close(CloseCode::Revoked.into(), b"certificate revoked");
        return;
    }
    let now = OffsetDateTime::now_utc();
    if let Err(error) = state
        .sites
        .connected(&identity, peer.connection.clone(), now)
    {
        tracing::error!(%error, site = %identity.site_id, "cannot record the connection");
        peer.connection
            .close(CloseCode::Refused.into(), b"hub storage error");
        return;
    }
    // The revocation list may have been swapped, and its sweep run, between the check above and
    // the insertion: check again now that the connection is visible to the sweep.
    if state.revocations.is_revoked(&identity.serial) {
        state
            .sites
            .disconnected(&identity.site_id, peer.connection.stable_id());
        state.metrics.connections_refused.inc();
        state.accounts.security_log().record(
            "connection-refused",
            Some(identity.site_id.as_str()),
            None,
            Some(&remote.to_string()),
            "certificate revoked",
        );
        peer.connection
            .close(CloseCode::Revoked.into(), b"certificate revoked");
        return;
    }
    state.metrics.connections_accepted.inc();
    let days_left = identity.days_left(now);
    if days_left < state.config.expiry_warning_days {
        tracing::warn!(site = %identity.site_id, days_left, "site certificate expires soon: run `grassroots provision renew`");
    }
    tracing::info!(site = %identity.site_id, %remote, "edge connected");
    let connection = peer.connection.clone();
    let handler_state = state.clone();
    let handler: StreamHandler = Arc::new(move |peer, first, send, recv| {
        let state = handler_state.clone();
        Box::pin(async move { handle_stream(state, peer, first, send, recv).await })
    });
    serve_streams(peer, handler, bad_frame_counter(&state)).await;
    state
        .sites
        .disconnected(&identity.site_id, connection.stable_id());
    state
        .metrics
        .sites_online
        .set(state.sites.online_count() as i64);
    let reason = connection
        .close_reason()
        .map(|e| grassroots_transport::link::describe_connection_error(&e))
        .unwrap_or_default();
    tracing::info!(site = %identity.site_id, %reason, "edge disconnected");
}

async fn handle_stream(
    state: Arc<HubState>,
    peer: PeerConnection,
    first: Message,
    mut send: FramedSend,
    mut recv: FramedRecv,
) {
    let site = peer.identity.site_id.clone();
    match first {
        hello @ Message::Hello { .. } => {
            let connection_id = peer.connection.stable_id();
            let end = drive_hub_control(
                hello,
                send,
                recv,
                state.config.heartbeat(),
                |event| match event {
                    SessionEvent::Established { version } => {
                        state.sites.established(&site, connection_id, *version);
                        state
                            .metrics
                            .sites_online
                            .set(state.sites.online_count() as i64);
                        tracing::info!(%site, version, "site online");
                        state.prefetch_wake.notify_one();
                        crate::revocation::pass_on(&state, site.as_str());
                    }
                    SessionEvent::PeerCapabilities(announced) => {
                        tracing::info!(%site, capabilities = ?announced.names(), "site announced its capabilities");
                        state
                            .sites
                            .announced(&site, connection_id, announced.clone());
                    }
                    _ => {}
                },
                || {
                    if let Err(error) = state.sites.heard(&site, OffsetDateTime::now_utc()) {
                        tracing::warn!(%error, "cannot record last-seen");
                    }
                },
                bad_frame_counter(&state),
            )
            .await;
            let code = match &end {
                SessionEnd::Event(SessionEvent::TimedOut) => CloseCode::TimedOut,
                SessionEnd::Event(SessionEvent::Refused { .. }) => CloseCode::Refused,
                SessionEnd::Event(_) => CloseCode::ProtocolViolation,
                SessionEnd::Transport(TransportError::Wire(_) | TransportError::Frame(_)) => {
                    CloseCode::ProtocolViolation
                }
                _ => CloseCode::Shutdown,
            };
            tracing::info!(%site, reason = %end, "control session ended");
            peer.connection
                .close(code.into(), end.to_string().as_bytes());
        }
        Message::TransferOffer(offer) => {
            let label = offer.label.clone();
            // Checked before a single chunk is taken: size for its kind, the site's day, disk.
            // The reservation holds the offer's size against the disk until this stream ends.
            let admitted = state.quotas.admit(
                site.as_str(),
                &offer,
                &state.config.data_dir,
                OffsetDateTime::now_utc(),
            );
            let _reservation = match admitted {
                Ok(reservation) => reservation,
                Err(refusal) => {
                    let (reason, for_good) = match refusal {
                        crate::quota::OfferRefusal::ForGood(reason) => (reason, true),
                        crate::quota::OfferRefusal::NotNow(reason) => (reason, false),
                    };
                    tracing::warn!(%site, %label, size = offer.size, %reason, "transfer offer refused");
                    state.metrics.transfers_refused.inc();
                    let understood = for_good
                        && state
                            .sites
                            .capabilities_soon(
                                &site,
                                peer.connection.stable_id(),
                                ANNOUNCE_PATIENCE,
                            )
                            .await
                            .has(grassroots_wire::capabilities::TRANSFER_REFUSED);
                    let message = if for_good && understood {
                        Message::TransferRefused {
                            id: offer.id,
                            reason,
                        }
                    } else {
                        Message::TransferRejected {
                            id: offer.id,
                            reason,
                        }
                    };
                    let _ = send.send(&message).await;
                    send.finish();
                    return;
                }
            };
            match grassroots_transport::receive_blob(&state.blobs, offer, &mut send, &mut recv)
                .await
            {
                Ok(received) => {
                    let record = ReceivedRecord {
                        id: received.offer.id.to_hex(),
                        label: received.offer.label.clone(),
                        size: received.offer.size,
                        from_site: site.to_string(),
                        received_at: OffsetDateTime::now_utc(),
                    };
                    if let Err(error) =
                        record_received(&state.received, &record, received.already_had)
                    {
                        tracing::error!(%error, "cannot record a received blob; not acknowledging it");
                        return;
                    }
                    if record.label == grassroots_wire::referral::REFERRAL_LABEL {
                        match take_referral(&state, &site.to_string(), &record.id).await {
                            Taken::Stored => {}
                            // Not stored: not acknowledged, so the edge offers it again.
                            Taken::NotNow => return,
                            Taken::Refused(reason) => {
                                let announced = state
                                    .sites
                                    .capabilities_soon(
                                        &site,
                                        peer.connection.stable_id(),
                                        ANNOUNCE_PATIENCE,
                                    )
                                    .await;
                                if let Err(error) = received
                                    .refuse_for_good(&mut send, &reason, &announced)
                                    .await
                                {
                                    tracing::warn!(%site, %error, "could not tell the edge its referral was refused");
                                }
                                return;
                            }
                        }
                    }
                    if record.label == grassroots_wire::models::MODEL_STATUS_LABEL {
                        take_model_status(&state, &site.to_string(), &record.id).await;
                    }
                    if record.label == grassroots_wire::models::MODEL_EVALUATION_LABEL {
                        take_model_evaluation(&state, site.as_str(), &record.id).await;
                    }
                    if record.label == grassroots_wire::federated::ROUND_UPDATE_LABEL {
                        let path = state.blobs.path(&received.offer.id);
                        crate::rounds::take_update(&state, site.as_str(), &path).await;
                    }
                    if record.label == grassroots_wire::coverage::COVERAGE_LABEL {
                        let path = state.blobs.path(&received.offer.id);
                        crate::coverage::take_report(&state, site.as_str(), &path).await;
                    }
                    if record.label == grassroots_secagg::message::LABEL {
                        let path = state.blobs.path(&received.offer.id);
                        crate::secure_rounds::take_message(&state, site.as_str(), &path).await;
                    }
                    if !received.already_had {
                        state.metrics.blobs_received.inc();
                        state
                            .metrics
                            .bulk_bytes_received
                            .inc_by(received.offer.size);
                        tracing::info!(%site, id = %record.id, size = record.size, %label, "bulk transfer received");
                    }
                    if let Err(error) = received.acknowledge(&mut send).await {
                        tracing::warn!(%site, %error, "could not acknowledge a transfer; the edge will offer it again");
                    }
                }
                Err(error) => tracing::warn!(%site, %label, %error, "bulk transfer interrupted"),
            }
        }
        other => {
            state.metrics.bad_frames.inc();
            let error = TransportError::Unexpected {
                expected: "Hello or TransferOffer",
                got: other.kind(),
            };
            tracing::warn!(%site, %error, "unexpected first message on a stream");
            send.reject(&error).await;
            recv.stop(1);
        }
    }
}

/// Sends the file at `path` to a site as a bulk transfer labelled `label`, returning once the
/// site acknowledged it (its refusal comes back as `TransportError::Peer` with the reason). The
/// one way the hub sends a site anything: answers, model packages, round tasks.
pub(crate) async fn send_file(
    state: &HubState,
    connection: &grassroots_transport::Connection,
    path: &std::path::Path,
    label: &str,
) -> Result<(), crate::HubError> {
    let offer = state.blobs.import_file(path, label).await?;
    grassroots_transport::send_blob(
        connection,
        &state.blobs,
        &offer,
        &grassroots_transport::SendOptions::default(),
        |_| {},
    )
    .await?;
    Ok(())
}

fn bad_frame_counter(state: &Arc<HubState>) -> grassroots_transport::link::BadFrameHook {
    let counter = state.metrics.bad_frames.clone();
    Arc::new(move |_| {
        counter.inc();
    })
}

/// What became of a referral blob.
enum Taken {
    /// Stored (or already held): acknowledge it.
    Stored,
    /// Could not be stored now: do not acknowledge, so the edge offers it again.
    NotNow,
    /// Refused for good, with the reason the referring doctor will read.
    Refused(String),
}

/// Stores a referral blob before its transfer is acknowledged. A malformed referral is refused
/// with the reason, back to the edge (sending the same bytes again would not mend it), so the
/// doctor who referred it learns it never reached an expert.
async fn take_referral(state: &Arc<HubState>, site: &str, id: &str) -> Taken {
    let Ok(content) = id.parse::<grassroots_wire::ContentId>() else {
        return Taken::NotNow;
    };
    let path = state.blobs.path(&content);
    let size = match tokio::fs::metadata(&path).await {
        Ok(metadata) => metadata.len(),
        Err(error) => {
            tracing::error!(%site, %error, "cannot read a received referral");
            return Taken::NotNow;
        }
    };
    let max = grassroots_wire::referral::MAX_REFERRAL_BYTES;
    if size > max as u64 {
        tracing::warn!(%site, size, "referral refused unread: larger than any referral can be");
        return Taken::Refused(format!(
            "a referral of {size} bytes is larger than any valid referral ({max} bytes)"
        ));
    }
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(%site, %error, "cannot read a received referral");
            return Taken::NotNow;
        }
    };
    match state.referrals.receive(site, &bytes) {
        Ok(crate::referrals::Receipt::New) => {
            state.prefetch_wake.notify_one();
            tracing::info!(%site, blob = %id, "referral received");
            Taken::Stored
        }
        Ok(crate::referrals::Receipt::AlreadyHad) => Taken::Stored,
        Err(crate::HubError::Store(error)) => {
            tracing::error!(%site, %error, "cannot store a referral; not acknowledging it");
            Taken::NotNow
        }
        Err(crate::HubError::Config(reason)) => {
            tracing::warn!(%site, %reason, "referral refused; the edge is told why");
            Taken::Refused(reason)
        }
        Err(error) => {
            tracing::error!(%site, %error, "cannot take a referral; not acknowledging it");
            Taken::NotNow
        }
    }
}

/// A blob a site sent, read whole only if it is no larger than `max` bytes (what a blob of its
/// kind can be): a larger one is refused, with a warning naming `what`, without being read.
pub(crate) async fn read_bounded(
    site: &str,
    path: &std::path::Path,
    max: usize,
    what: &str,
) -> Option<Vec<u8>> {
    let size = match tokio::fs::metadata(path).await {
        Ok(metadata) => metadata.len(),
        Err(error) => {
            tracing::error!(%site, %error, "cannot read a {what}");
            return None;
        }
    };
    if size > max as u64 {
        tracing::warn!(%site, size, "{what} refused: larger than any {what} can be");
        return None;
    }
    match tokio::fs::read(path).await {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::error!(%site, %error, "cannot read a {what}");
            None
        }
    }
}

/// A model status or evaluation from a site, by its blob id, bounded as a report is.
async fn read_report(state: &HubState, site: &str, id: &str) -> Option<Vec<u8>> {
    let content = id.parse::<grassroots_wire::ContentId>().ok()?;
    read_bounded(
        site,
        &state.blobs.path(&content),
        grassroots_wire::models::MAX_STATUS_BYTES,
        "model report",
    )
    .await
}

/// Records what a site reports it runs. A malformed report is logged and dropped (sending the
/// same bytes again would not mend it); the transfer is acknowledged either way.
async fn take_model_status(state: &Arc<HubState>, site: &str, id: &str) {
    let Some(bytes) = read_report(state, site, id).await else {
        return;
    };
    match grassroots_wire::models::ModelStatusReport::from_json(&bytes) {
        Ok(report) => match state.models.reported(site, &report) {
            Ok(()) => {
                tracing::info!(%site, running = ?report.active.as_ref().map(|m| &m.digest), "site reported its model")
            }
            Err(error) => tracing::error!(%site, %error, "cannot record a site's model"),
        },
        Err(error) => tracing::warn!(%site, %error, "model status report refused"),
    }
}

/// A site's evaluation of its new model against its own labels: the canary's evidence.
async fn take_model_evaluation(state: &Arc<HubState>, site: &str, id: &str) {
    let Some(bytes) = read_report(state, site, id).await else {
        return;
    };
    match grassroots_wire::models::ModelEvaluationReport::from_json(&bytes) {
        Ok(report) => match state
            .models
            .evaluated(site, &report)
            .and_then(|_| state.canaries.report(site, &report))
        {
            Ok(kept) => {
                tracing::info!(%site, digest = %report.digest, agreement = report.agreement, previous = ?report.previous_agreement, canary = kept, "site evaluated its model")
            }
            Err(error) => tracing::error!(%site, %error, "cannot record a model evaluation"),
        },
        Err(error) => tracing::warn!(%site, %error, "model evaluation refused"),
    }
}

fn record_received(
    table: &Table<ReceivedRecord>,
    record: &ReceivedRecord,
    already_had: bool,
) -> Result<(), grassroots_store::StoreError> {
    if already_had && table.get(&record.id)?.is_some() {
        return Ok(());
    }
    table.put_durable(&record.id, record)
}
