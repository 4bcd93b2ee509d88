//! Taking an object into the archive, from the network (a C-STORE's data set) or from a file
//! (`grassroots study import`): read it, check its UIDs, write the file durably, index it.
//! Only then is the sender told it was stored; an object that cannot be read is refused whole
//! and nothing already stored changes.

use std::path::Path;

use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use time::OffsetDateTime;

use crate::archive::Archive;
use crate::index::StudyIndex;
use crate::instance::InstanceAttributes;
use crate::{DicomError, Result};

/// The archive and its index, which always change together.
#[derive(Clone)]
pub struct Ingest {
    pub archive: Archive,
    pub index: StudyIndex,
    /// The edge's AE title, written as the receiver in the files' meta.
    pub ae_title: String,
}

/// The SOP class and instance UIDs an object's file meta names, when its bytes start as a
/// DICOM file (preamble or not) and the meta reads: what a refusal of the object can cite
/// (STOW-RS's Failed SOP Sequence) even when the rest of it could not be read or stored.
pub fn sop_reference(bytes: &[u8]) -> Option<(String, String)> {
    let from_magic = match bytes.get(128..132) {
        Some(b"DICM") => &bytes[128..],
        _ => bytes,
    };
    let meta = dicom_object::meta::FileMetaTable::from_reader(from_magic).ok()?;
    let trimmed = |uid: &str| uid.trim_end_matches(['\0', ' ']).to_string();
    let (class, instance) = (
        trimmed(meta.media_storage_sop_class_uid()),
        trimmed(meta.media_storage_sop_instance_uid()),
    );
    (!class.is_empty() && !instance.is_empty()).then_some((class, instance))
}

/// What was stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub attributes: InstanceAttributes,
    pub file: String,
    pub bytes: u64,
    /// False when the same instance had been stored before (its file and record replaced).
    pub new: bool,
}

impl Ingest {
    pub fn open(
        store: &grassroots_store::Store,
        data_dir: &Path,
        ae_title: &str,
    ) -> Result<Ingest> {
        Ok(Ingest {
            archive: Archive::open(data_dir)?,
            index: StudyIndex::open(store)?,
            ae_title: ae_title.to_string(),
        })
    }

    /// A C-STORE's data set, as it arrived in `transfer_syntax_uid` from `calling_ae`: filed
    /// with a file meta group in front of the untouched bytes. `announced` is the instance the
    /// command named; a data set that is another is refused before anything is written.
    pub fn store_dataset(
        &self,
        dataset: &[u8],
        transfer_syntax_uid: &str,
        calling_ae: &str,
        announced: Option<&str>,
    ) -> Result<Stored> {
        let what = format!("the object {calling_ae} sent");
        let ts = TransferSyntaxRegistry
            .get(transfer_syntax_uid)
            .ok_or_else(|| DicomError::UnsupportedTransferSyntax(transfer_syntax_uid.into()))?;
        let object = InMemDicomObject::read_dataset_with_ts(dataset, ts).map_err(|error| {
            DicomError::Unreadable {
                what: what.clone(),
                reason: error.to_string(),
            }
        })?;
        let attributes = InstanceAttributes::from_object(&object, &what)?;
        if let Some(announced) = announced.filter(|a| !a.is_empty()) {
            if announced.trim_end_matches('\0') != attributes.sop_instance_uid {
                return Err(DicomError::InstanceMismatch {
                    announced: announced.to_string(),
                    found: attributes.sop_instance_uid,
                });
            }
        }
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(attributes.sop_class_uid.as_str())
            .media_storage_sop_instance_uid(attributes.sop_instance_uid.as_str())
            .transfer_syntax(transfer_syntax_uid)
            .source_application_entity_title(calling_ae)
            .receiving_application_entity_title(self.ae_title.as_str())
            .build()
            .map_err(|error| DicomError::Unreadable {
                what: what.clone(),
                reason: error.to_string(),
            })?;
        let mut file = Vec::with_capacity(dataset.len() + 512);
        file.extend_from_slice(&[0u8; 128]);
        file.extend_from_slice(b"DICM");
        meta.write(&mut file)
            .map_err(|error| DicomError::Unreadable {
                what,
                reason: error.to_string(),
            })?;
        file.extend_from_slice(dataset);
        self.file(attributes, &file, transfer_syntax_uid, calling_ae)
    }

    /// A DICOM file (Part 10, with its meta group), kept byte for byte.
    pub fn import_file(&self, path: &Path) -> Result<Stored> {
        let bytes = std::fs::read(path).map_err(|source| DicomError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.store_file(&bytes, &path.display().to_string(), "import", None, true)
    }

    /// A DICOM file's bytes (Part 10, with its meta group) that came as `what` from
    /// `received_from` (a DICOMweb store), kept byte for byte; refused unless it belongs to
    /// `study`, if given. Unlike an import, it never replaces an instance stored with other
    /// content (the same bytes again are stored once): a web client cannot overwrite what a
    /// modality sent.
    pub fn store_new_file(
        &self,
        bytes: &[u8],
        what: &str,
        received_from: &str,
        study: Option<&str>,
    ) -> Result<Stored> {
        self.store_file(bytes, what, received_from, study, false)
    }

    fn store_file(
        &self,
        bytes: &[u8],
        what: &str,
        received_from: &str,
        study: Option<&str>,
        replace: bool,
    ) -> Result<Stored> {
        let what = what.to_string();
        let object =
            OpenFileOptions::new()
                .from_reader(bytes)
                .map_err(|error| DicomError::Unreadable {
                    what: what.clone(),
                    reason: error.to_string(),
                })?;
        let transfer_syntax = object.meta().transfer_syntax().to_string();
        if TransferSyntaxRegistry.get(&transfer_syntax).is_none() {
            return Err(DicomError::UnsupportedTransferSyntax(transfer_syntax));
        }
        let attributes = InstanceAttributes::from_object(&object, &what)?;
        if let Some(expected) = study.filter(|s| *s != attributes.study_instance_uid) {
            return Err(DicomError::WrongStudy {
                expected: expected.to_string(),
                found: attributes.study_instance_uid,
            });
        }
        if !replace {
            let stored = self.index.instance(
                &attributes.study_instance_uid,
                &attributes.series_instance_uid,
                &attributes.sop_instance_uid,
            )?;
            if let Some(stored) = stored {
                if self.archive.read(&stored.file)? != bytes {
                    return Err(DicomError::Duplicate(attributes.sop_instance_uid));
                }
                return Ok(Stored {
                    attributes,
                    file: stored.file,
                    bytes: bytes.len() as u64,
                    new: false,
                });
            }
        }
        self.file(attributes, bytes, &transfer_syntax, received_from)
    }

    fn file(
        &self,
        attributes: InstanceAttributes,
        bytes: &[u8],
        transfer_syntax_uid: &str,
        received_from: &str,
    ) -> Result<Stored> {
        let file = Archive::relative_path(
            &attributes.study_instance_uid,
            &attributes.series_instance_uid,
            &attributes.sop_instance_uid,
        );
        self.archive.write(&file, bytes)?;
        let (new, moved_from) = self.index.record(
            &attributes,
            transfer_syntax_uid,
            &file,
            bytes.len() as u64,
            received_from,
            OffsetDateTime::now_utc(),
        )?;
        if let Some(earlier) = moved_from.filter(|earlier| *earlier != file) {
            // The index no longer names it; a failure leaves an orphan file, never a lost one.
            if let Err(error) = std::fs::remove_file(self.archive.path_of(&earlier)) {
                tracing::warn!(file = %earlier, %error, "cannot remove an instance's earlier file");
            }
        }
        Ok(Stored {
            attributes,
            file,
            bytes: bytes.len() as u64,
            new,
        })
    }

    /// Every DICOM file under `path` (a file or a folder, walked in name order): what was
    /// stored and, for each file refused, why. A refused file changes nothing.
    pub fn import_path(&self, path: &Path) -> Vec<(std::path::PathBuf, Result<Stored>)> {
        let mut files = Vec::new();
        collect_files(path, &mut files, true);
        files.sort();
        files
            .into_iter()
            .map(|file| {
                let stored = self.import_file(&file);
                (file, stored)
            })
            .collect()
    }
}

/// The files under `path`; symbolic links to folders below it are not followed (a loop would
/// never end).
fn collect_files(path: &Path, out: &mut Vec<std::path::PathBuf>, top: bool) {
    let linked_folder =
        std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) && path.is_dir();
    if linked_folder && !top {
        return;
    }
    match std::fs::read_dir(path) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let child = entry.path();
                let hidden = child
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'));
                if !hidden {
                    collect_files(&child, out, false);
                }
            }
        }
        Err(_) => out.push(path.to_path_buf()),
    }
}
