//! Where received objects live on disk: one file per SOP instance, as it arrived (the data set's
//! bytes are never re-encoded, so WADO-RS hands back exactly what the modality sent), under
//! `<data>/dicom/<study>/<series>/<instance>.dcm`.
//!
//! Every write is durable before it returns (temporary file, fsync, rename, fsync of the
//! folder): the C-STORE response says success only after it. UIDs are checked to be UIDs
//! (digits and dots) before they become path segments, so no name can climb out of the archive.

use std::path::{Path, PathBuf};

use crate::{DicomError, Result};

/// The archive's folder.
#[derive(Debug, Clone)]
pub struct Archive {
    root: PathBuf,
}

/// A DICOM UID, checked: 1 to 64 characters, digits and dots, not starting or ending with a dot.
pub fn check_uid(attribute: &'static str, value: &str) -> Result<String> {
    let value = value.trim_end_matches(['\0', ' ']).trim();
    let valid = !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !value.starts_with('.')
        && !value.ends_with('.')
        && !value.contains("..");
    if valid {
        Ok(value.to_string())
    } else {
        Err(DicomError::InvalidUid {
            attribute,
            value: value.to_string(),
        })
    }
}

impl Archive {
    pub fn open(data_dir: &Path) -> Result<Archive> {
        let root = data_dir.join("dicom");
        std::fs::create_dir_all(&root).map_err(|source| DicomError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(Archive { root })
    }

    /// The file's path relative to the archive, from checked UIDs.
    pub fn relative_path(study: &str, series: &str, instance: &str) -> String {
        format!("{study}/{series}/{instance}.dcm")
    }

    pub fn path_of(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Writes a whole DICOM file durably; an earlier file of the same instance is replaced
    /// whole (a modality that sends an instance again sends the same object).
    pub fn write(&self, relative: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path_of(relative);
        grassroots_store::durable::write_file(&path, bytes).map_err(|source| DicomError::Io {
            path: path.clone(),
            source,
        })?;
        // The series folder is synced with the file; the study folder and the archive's hold
        // the new folders' names, which a power cut must not lose either.
        let mut folder = path.parent().and_then(Path::parent);
        while let Some(dir) = folder {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| DicomError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            if dir == self.root {
                break;
            }
            folder = dir.parent();
        }
        Ok(())
    }

    pub fn read(&self, relative: &str) -> Result<Vec<u8>> {
        let path = self.path_of(relative);
        std::fs::read(&path).map_err(|source| DicomError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uids_become_paths() {
        assert_eq!(
            check_uid("StudyInstanceUID", "1.2.840.113619.2.1\0").unwrap(),
            "1.2.840.113619.2.1"
        );
        for bad in [
            "",
            "../etc",
            "1.2/3",
            "1..2",
            ".1.2",
            "1.2.",
            &"1".repeat(65),
        ] {
            assert!(check_uid("SOPInstanceUID", bad).is_err(), "{bad:?}");
        }
    }
}
