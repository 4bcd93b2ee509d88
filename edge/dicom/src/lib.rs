//! The edge's DICOM node: what a county hospital's CT, MR, X-ray and ultrasound machines (and
//! its PACS) send the edge, kept in one archive with a patient / study / series / instance index.
//!
//! dicom-rs reads and writes the objects and `dicom-ul` carries the associations and PDUs; the
//! DIMSE services on top (C-ECHO, C-STORE, C-FIND in the Study Root model) are ours
//! ([`scp`]), as is the archive's promise ([`archive`], [`ingest`]): an object is on disk and in
//! the index, fsynced, before anyone is told it was stored. Nothing here sends data anywhere:
//! studies stay at the edge; what may cross to the hub is decided by the edge's consult code.

pub mod archive;
pub mod colour;
pub mod dimse;
pub mod empty_space;
pub mod index;
pub mod ingest;
pub mod instance;
pub mod nifti;
pub mod qido;
pub mod query;
pub(crate) mod ray_bounds;
pub mod raycast;
pub mod render;
pub mod scp;
pub mod transcode;
pub(crate) mod transfer;
pub mod volume;

pub use archive::Archive;
pub use index::{InstanceRecord, SeriesRecord, StudyIndex, StudyRecord};
pub use ingest::{Ingest, Stored};
pub use instance::InstanceAttributes;
pub use query::{Query, QueryLevel};
pub use scp::{DicomListener, ScpConfig};

/// Everything that can go wrong in the DICOM node, with what it concerned.
#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    #[error(transparent)]
    Store(#[from] grassroots_store::StoreError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("not a DICOM object ({what}): {reason}")]
    Unreadable { what: String, reason: String },
    #[error("{what} lacks {attribute}, which every stored object needs")]
    MissingAttribute {
        what: String,
        attribute: &'static str,
    },
    #[error("{attribute} {value:?} is not a DICOM UID (digits and dots, at most 64 characters)")]
    InvalidUid {
        attribute: &'static str,
        value: String,
    },
    #[error("the command announced instance {announced} but the data set is {found}")]
    InstanceMismatch { announced: String, found: String },
    #[error("transfer syntax {0} is not one this node reads")]
    UnsupportedTransferSyntax(String),
    #[error("frame {frame} does not exist: the image has {frames}")]
    NoSuchFrame { frame: u32, frames: u32 },
    #[error("the object belongs to study {found}, not to study {expected} named in the request")]
    WrongStudy { expected: String, found: String },
    #[error("instance {0} is stored already with other content: it is not replaced")]
    Duplicate(String),
    #[error("not a volume: {0}")]
    NotAVolume(String),
    #[error("query: {0}")]
    BadQuery(String),
    #[error("DICOM network: {0}")]
    Network(String),
    #[error("--dicom-allow {0:?}: write AE@HOST, for example CT1@10.0.0.7")]
    BadAllowEntry(String),
}

pub type Result<T, E = DicomError> = std::result::Result<T, E>;
