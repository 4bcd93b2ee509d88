//! The DICOM listener: associations from modalities and PACS (dicom-ul), and on them the DIMSE
//! services this node provides (C-ECHO, C-STORE, C-FIND Study Root).
//!
//! Each association runs on a blocking thread of its own (dicom-ul's synchronous API), at most
//! [`ScpConfig::max_associations`] at once; further connections wait for a place. A C-STORE is
//! answered only after [`Ingest`] has the object durable in the archive and the index; an
//! association that breaks half-way leaves every acknowledged object stored and nothing else.
//! By default any calling AE may associate and store (as Orthanc does), but C-FIND, which lists
//! patients, answers only the AEs listed with `--dicom-allow AE@HOST` (Orthanc too refuses
//! C-FIND from unknown peers by default); with a list, only the listed AE titles, each from its
//! host, may associate at all, and the rest are rejected ("calling AE title not recognized").
//! PDUs longer than the node's maximum are refused (strict), command sets and objects are
//! capped, and a C-STORE that would leave the disk below the configured floor is refused with
//! "out of resources" before anything is written.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use dicom_dictionary_std::uids;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::server::AccessControl;
use dicom_ul::association::Association;
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PDataValue, PDataValueType, PresentationContextResultReason,
    UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociation, ServerAssociationOptions};

use crate::dimse::{self, status, Command, Response};
use crate::ingest::Ingest;
use crate::query::Query;
use crate::{DicomError, Result};

/// The storage SOP classes this node accepts: the images of a county hospital's CT, MR,
/// radiography and ultrasound machines, and secondary captures.
pub const STORAGE_SOP_CLASSES: [&str; 15] = [
    uids::CT_IMAGE_STORAGE,
    uids::ENHANCED_CT_IMAGE_STORAGE,
    uids::MR_IMAGE_STORAGE,
    uids::ENHANCED_MR_IMAGE_STORAGE,
    uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE,
    uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PROCESSING,
    uids::DIGITAL_MAMMOGRAPHY_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    uids::ULTRASOUND_IMAGE_STORAGE,
    uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
    uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_GRAYSCALE_BYTE_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_TRUE_COLOR_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::X_RAY_ANGIOGRAPHIC_IMAGE_STORAGE,
];

const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// The largest object one C-STORE may carry; a peer that sends more is aborted.
pub const MAX_OBJECT_BYTES: usize = 512 << 20;
/// The largest command set (they are a few hundred bytes).
pub const MAX_COMMAND_BYTES: usize = 64 << 10;

/// A calling AE allowed to associate, from the hosts its name resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedPeer {
    pub ae_title: String,
    pub addresses: Vec<IpAddr>,
}

impl AllowedPeer {
    /// `AE@HOST` (`CT1@10.0.0.7`, `PACS@pacs.hospital.cn`): the host is resolved once, here.
    pub fn parse(entry: &str) -> Result<AllowedPeer> {
        let (ae, host) = entry
            .split_once('@')
            .ok_or_else(|| DicomError::BadAllowEntry(entry.into()))?;
        let ae = ae.trim();
        if ae.is_empty() || ae.len() > 16 || host.trim().is_empty() {
            return Err(DicomError::BadAllowEntry(entry.into()));
        }
        let addresses: Vec<IpAddr> = (host.trim(), 0)
            .to_socket_addrs()
            .map_err(|_| DicomError::BadAllowEntry(entry.into()))?
            .map(|a| a.ip().to_canonical())
            .collect();
        Ok(AllowedPeer {
            ae_title: ae.to_string(),
            addresses,
        })
    }
}

/// How the listener behaves.
#[derive(Debug, Clone)]
pub struct ScpConfig {
    /// This node's AE title (`--ae-title`); associations must call it.
    pub ae_title: String,
    /// Empty: any calling AE may associate. Else only these.
    pub allow: Vec<AllowedPeer>,
    pub max_associations: usize,
    pub max_pdu_length: u32,
    /// A peer silent this long loses its association.
    pub idle_timeout: Duration,
    /// Answer C-FIND from any AE even without an allow list (`--dicom-find-from-anyone`).
    pub find_from_anyone: bool,
    /// Refuse a C-STORE that would leave less free space than this in the archive's folder.
    pub min_free_bytes: u64,
}

impl ScpConfig {
    pub fn new(ae_title: &str) -> ScpConfig {
        ScpConfig {
            ae_title: ae_title.to_string(),
            allow: Vec::new(),
            max_associations: 16,
            max_pdu_length: 65536,
            idle_timeout: Duration::from_secs(60),
            find_from_anyone: false,
            min_free_bytes: 1 << 30,
        }
    }
}

/// The association's gate: the called AE must be ours; the calling AE must be allowed from the
/// peer's address (`None`: anyone may).
struct Gate {
    allowed: Option<Vec<String>>,
}

impl AccessControl for Gate {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> std::result::Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        match &self.allowed {
            Some(allowed) if !allowed.iter().any(|ae| ae == calling_ae_title.trim()) => {
                Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
            }
            _ => Ok(()),
        }
    }
}

/// The running listener.
pub struct DicomListener {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// Set when the listener is dropped: associations end at their next PDU (or idle timeout).
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl DicomListener {
    /// Listens on `addr` and serves associations until dropped.
    pub async fn bind(
        addr: SocketAddr,
        config: ScpConfig,
        ingest: Ingest,
    ) -> Result<DicomListener> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| DicomError::Network(format!("cannot listen on {addr}: {error}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|error| DicomError::Network(error.to_string()))?;
        let places = Arc::new(tokio::sync::Semaphore::new(config.max_associations.max(1)));
        let config = Arc::new(config);
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = stopping.clone();
        tracing::info!(%local_addr, ae_title = %config.ae_title, "DICOM listener ready");
        let task = tokio::spawn(async move {
            loop {
                let Ok(place) = places.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "DICOM accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let config = config.clone();
                let ingest = ingest.clone();
                let stop = stop.clone();
                tokio::task::spawn_blocking(move || {
                    let _place = place;
                    let stream = match stream.into_std().and_then(|s| {
                        s.set_nonblocking(false)?;
                        Ok(s)
                    }) {
                        Ok(stream) => stream,
                        Err(error) => {
                            tracing::warn!(%peer, %error, "DICOM connection lost at once");
                            return;
                        }
                    };
                    serve(stream, peer, &config, &ingest, &stop);
                });
            }
        });
        Ok(DicomListener {
            local_addr,
            task,
            stopping,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for DicomListener {
    fn drop(&mut self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.abort();
    }
}

fn options(
    config: &ScpConfig,
    peer: SocketAddr,
) -> ServerAssociationOptions<'static, Gate, dicom_ul::association::server::DefaultNegotiation> {
    let allowed = (!config.allow.is_empty()).then(|| {
        config
            .allow
            .iter()
            .filter(|p| p.addresses.contains(&peer.ip().to_canonical()))
            .map(|p| p.ae_title.clone())
            .collect()
    });
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(Gate { allowed })
        .ae_title(config.ae_title.clone())
        .max_pdu_length(config.max_pdu_length)
        .strict(true)
        .read_timeout(config.idle_timeout)
        .write_timeout(config.idle_timeout)
        .with_abstract_syntax(uids::VERIFICATION)
        .with_abstract_syntax(uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND);
    for class in STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(class);
    }
    // Every transfer syntax the registry reads, but the retired Explicit VR Big Endian: a
    // sender that offers it beside Implicit VR Little Endian gets the latter.
    for ts in TransferSyntaxRegistry.iter() {
        if !ts.is_unsupported() && ts.uid() != EXPLICIT_VR_BIG_ENDIAN {
            options = options.with_transfer_syntax(ts.uid());
        }
    }
    options
}

/// A request waiting for its data set.
struct Pending {
    command: Command,
    context: u8,
}

/// What an association may do, decided at its start.
struct Rights<'a> {
    calling: &'a str,
    /// C-FIND lists patients: only listed peers, unless the node says anyone may.
    may_find: bool,
    min_free_bytes: u64,
}

fn serve(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    config: &ScpConfig,
    ingest: &Ingest,
    stopping: &std::sync::atomic::AtomicBool,
) {
    let mut association = match options(config, peer).establish(stream) {
        Ok(association) => association,
        Err(error) => {
            tracing::warn!(%peer, %error, "DICOM association refused");
            return;
        }
    };
    let calling = association.peer_ae_title().trim().to_string();
    let accepted = association
        .presentation_contexts()
        .iter()
        .any(|pc| pc.reason == PresentationContextResultReason::Acceptance);
    if !accepted {
        tracing::warn!(%peer, %calling, "no presentation context this node supports: aborted");
        let _ = association.abort();
        return;
    }
    tracing::info!(%peer, %calling, "DICOM association");
    let rights = Rights {
        calling: &calling,
        may_find: config.find_from_anyone || !config.allow.is_empty(),
        min_free_bytes: config.min_free_bytes,
    };
    let mut command_bytes = Vec::new();
    let mut data_bytes = Vec::new();
    let mut pending: Option<Pending> = None;
    loop {
        if stopping.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::info!(%peer, %calling, "the node stops: DICOM association aborted");
            let _ = association.abort();
            return;
        }
        let pdu = match association.receive() {
            Ok(pdu) => pdu,
            Err(error) => {
                tracing::info!(%peer, %calling, %error, "DICOM association ended");
                return;
            }
        };
        let values = match pdu {
            Pdu::PData { data } => data,
            Pdu::ReleaseRQ => {
                let _ = association.send(&Pdu::ReleaseRP);
                tracing::info!(%peer, %calling, "DICOM association released");
                return;
            }
            Pdu::AbortRQ { source } => {
                tracing::info!(%peer, %calling, ?source, "DICOM association aborted by the peer");
                return;
            }
            other => {
                tracing::warn!(%peer, %calling, ?other, "unexpected PDU: aborted");
                let _ = association.abort();
                return;
            }
        };
        for value in values {
            let outcome = match value.value_type {
                PDataValueType::Command => {
                    if command_bytes.len() + value.data.len() > MAX_COMMAND_BYTES {
                        Err(DicomError::Network(format!(
                            "a command set larger than {MAX_COMMAND_BYTES} bytes"
                        )))
                    } else {
                        command_bytes.extend_from_slice(&value.data);
                        if !value.is_last {
                            continue;
                        }
                        let bytes = std::mem::take(&mut command_bytes);
                        on_command(
                            &mut association,
                            &bytes,
                            value.presentation_context_id,
                            &mut pending,
                        )
                    }
                }
                PDataValueType::Data => {
                    if data_bytes.len() + value.data.len() > MAX_OBJECT_BYTES {
                        Err(DicomError::Network(format!(
                            "an object larger than {MAX_OBJECT_BYTES} bytes"
                        )))
                    } else {
                        data_bytes.extend_from_slice(&value.data);
                        if !value.is_last {
                            continue;
                        }
                        let bytes = std::mem::take(&mut data_bytes);
                        match pending.take() {
                            Some(request) if request.context == value.presentation_context_id => {
                                on_data_set(&mut association, request, &bytes, &rights, ingest)
                            }
                            Some(_) => Err(DicomError::Network(
                                "a data set on another presentation context than its command"
                                    .into(),
                            )),
                            None => {
                                Err(DicomError::Network("a data set without its command".into()))
                            }
                        }
                    }
                }
            };
            if let Err(error) = outcome {
                tracing::warn!(%peer, %calling, %error, "DICOM association aborted");
                let _ = association.abort();
                return;
            }
        }
    }
}

type Link = ServerAssociation<std::net::TcpStream>;

fn send_command(association: &mut Link, context: u8, response: Response<'_>) -> Result<()> {
    let data = response.encode()?;
    association
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context,
                value_type: PDataValueType::Command,
                is_last: true,
                data,
            }],
        })
        .map_err(|error| DicomError::Network(format!("sending a response: {error}")))
}

fn on_command(
    association: &mut Link,
    bytes: &[u8],
    context: u8,
    pending: &mut Option<Pending>,
) -> Result<()> {
    let command = Command::parse(bytes)?;
    if pending.is_some() {
        return Err(DicomError::Network(
            "a new command before the last one's data set".into(),
        ));
    }
    // A command that announces a data set is answered once the data set has arrived, whatever
    // the command is: answering first would leave the data set without its command.
    if command.has_data_set {
        *pending = Some(Pending { command, context });
        return Ok(());
    }
    match command.field {
        dimse::C_ECHO_RQ => send_command(
            association,
            context,
            Response {
                field: dimse::C_ECHO_RSP,
                request: &command,
                status: status::SUCCESS,
                has_data_set: false,
                comment: None,
            },
        ),
        // Finds are answered whole before the next request is read: nothing left to cancel.
        dimse::C_CANCEL_RQ => Ok(()),
        _ => refuse_operation(association, context, &command),
    }
}

/// The answer to a request this node does not perform (or a store or find without its data).
fn refuse_operation(association: &mut Link, context: u8, command: &Command) -> Result<()> {
    let comment = match command.field {
        dimse::C_STORE_RQ | dimse::C_FIND_RQ => "the request has no data set".to_string(),
        field => format!("this node does not perform command 0x{field:04X}"),
    };
    send_command(
        association,
        context,
        Response {
            field: command.field | 0x8000,
            request: command,
            status: status::UNRECOGNIZED_OPERATION,
            has_data_set: false,
            comment: Some(comment),
        },
    )
}

fn transfer_syntax_of(association: &Link, context: u8) -> Result<String> {
    association
        .presentation_contexts()
        .iter()
        .find(|pc| pc.id == context && pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| pc.transfer_syntax.trim_end_matches('\0').to_string())
        .ok_or_else(|| {
            DicomError::Network(format!("presentation context {context} was not accepted"))
        })
}

fn abstract_syntax_of(association: &Link, context: u8) -> String {
    association
        .presentation_contexts()
        .iter()
        .find(|pc| pc.id == context)
        .map(|pc| pc.abstract_syntax.trim_end_matches('\0').to_string())
        .unwrap_or_default()
}

fn on_data_set(
    association: &mut Link,
    request: Pending,
    bytes: &[u8],
    rights: &Rights<'_>,
    ingest: &Ingest,
) -> Result<()> {
    let Pending { command, context } = request;
    let ts = transfer_syntax_of(association, context)?;
    match command.field {
        dimse::C_STORE_RQ => {
            let (status, comment) = store(
                ingest,
                &command,
                bytes,
                &ts,
                rights,
                &abstract_syntax_of(association, context),
            );
            send_command(
                association,
                context,
                Response {
                    field: dimse::C_STORE_RSP,
                    request: &command,
                    status,
                    has_data_set: false,
                    comment,
                },
            )
        }
        dimse::C_FIND_RQ if rights.may_find => {
            find(association, &command, context, bytes, &ts, ingest)
        }
        dimse::C_FIND_RQ => send_command(
            association,
            context,
            Response {
                field: dimse::C_FIND_RSP,
                request: &command,
                status: status::NOT_AUTHORIZED,
                has_data_set: false,
                comment: Some("C-FIND answers only the AEs listed with --dicom-allow".into()),
            },
        ),
        _ => refuse_operation(association, context, &command),
    }
}

/// A C-STORE's status: success only once the object is durable.
fn store(
    ingest: &Ingest,
    command: &Command,
    bytes: &[u8],
    ts: &str,
    rights: &Rights<'_>,
    abstract_syntax: &str,
) -> (u16, Option<String>) {
    let calling = rights.calling;
    if !STORAGE_SOP_CLASSES.contains(&command.affected_sop_class_uid.as_str())
        || command.affected_sop_class_uid != abstract_syntax
    {
        return (
            status::SOP_CLASS_NOT_SUPPORTED,
            Some(format!(
                "SOP class {} is not stored here",
                command.affected_sop_class_uid
            )),
        );
    }
    let free = fs2::available_space(ingest.archive.path_of("")).unwrap_or(u64::MAX);
    if free.saturating_sub(bytes.len() as u64) < rights.min_free_bytes {
        tracing::error!(
            calling,
            free,
            "C-STORE refused: the archive's disk is nearly full"
        );
        return (
            status::OUT_OF_RESOURCES,
            Some("the edge's disk is nearly full".into()),
        );
    }
    match ingest.store_dataset(bytes, ts, calling, Some(&command.affected_sop_instance_uid)) {
        Ok(stored) => {
            tracing::info!(calling, sop = %stored.attributes.sop_instance_uid, bytes = stored.bytes, new = stored.new, "C-STORE");
            (status::SUCCESS, None)
        }
        Err(error) => {
            tracing::warn!(calling, %error, "C-STORE refused");
            let status = match error {
                DicomError::Io { .. } | DicomError::Store(_) => status::OUT_OF_RESOURCES,
                DicomError::InstanceMismatch { .. } => status::DATA_SET_DOES_NOT_MATCH,
                _ => status::CANNOT_UNDERSTAND,
            };
            (status, Some(error.to_string()))
        }
    }
}

fn find(
    association: &mut Link,
    command: &Command,
    context: u8,
    bytes: &[u8],
    ts: &str,
    ingest: &Ingest,
) -> Result<()> {
    let final_response = |status, comment| Response {
        field: dimse::C_FIND_RSP,
        request: command,
        status,
        has_data_set: false,
        comment,
    };
    if command.affected_sop_class_uid != uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND {
        return send_command(
            association,
            context,
            final_response(
                status::SOP_CLASS_NOT_SUPPORTED,
                Some("only the Study Root model is queried here".into()),
            ),
        );
    }
    let transfer_syntax = TransferSyntaxRegistry
        .get(ts)
        .ok_or_else(|| DicomError::UnsupportedTransferSyntax(ts.into()))?;
    let query = InMemDicomObject::read_dataset_with_ts(bytes, transfer_syntax)
        .map_err(|error| DicomError::BadQuery(format!("the identifier cannot be read: {error}")))
        .and_then(|identifier| Query::from_identifier(&identifier));
    let query = match query {
        Ok(query) => query,
        Err(error) => {
            return send_command(
                association,
                context,
                final_response(status::DATA_SET_DOES_NOT_MATCH, Some(error.to_string())),
            )
        }
    };
    let matches = match query.run(&ingest.index) {
        Ok(matches) => matches,
        Err(error) => {
            return send_command(
                association,
                context,
                final_response(status::OUT_OF_RESOURCES, Some(error.to_string())),
            )
        }
    };
    let pending_status = if query.unsupported.is_empty() {
        status::PENDING
    } else {
        status::PENDING_UNSUPPORTED_KEYS
    };
    for found in &matches {
        send_command(
            association,
            context,
            Response {
                field: dimse::C_FIND_RSP,
                request: command,
                status: pending_status,
                has_data_set: true,
                comment: None,
            },
        )?;
        let mut identifier = Vec::new();
        found
            .identifier(query.level)
            .write_dataset_with_ts(&mut identifier, transfer_syntax)
            .map_err(|error| DicomError::Network(format!("writing an identifier: {error}")))?;
        let mut writer = association.send_pdata(context);
        writer
            .write_all(&identifier)
            .and_then(|()| writer.finish())
            .map_err(|error| DicomError::Network(format!("sending an identifier: {error}")))?;
    }
    send_command(association, context, final_response(status::SUCCESS, None))
}
