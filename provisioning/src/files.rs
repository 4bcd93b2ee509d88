//! Durable, atomic file writes for provisioning state.
//!
//! A registry or kit half-written by a crash would lock a site out of its network, so every write
//! goes to a temporary file in the same directory, is fsynced, renamed over the target, and the
//! directory is fsynced. Files holding private keys are created with mode 0600 from the start
//! (never chmod-ed after the secret is already on disk).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::{ProvisioningError, Result};

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ProvisioningError + '_ {
    move |source| ProvisioningError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options.open(&temp).map_err(io_error(&temp))?;
    file.write_all(contents).map_err(io_error(&temp))?;
    file.sync_all().map_err(io_error(&temp))?;
    drop(file);
    fs::rename(&temp, path).map_err(io_error(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    Ok(())
}

/// Writes a file that holds a secret (private key, kit): owner read/write only.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomically(path, contents, 0o600)
}

/// Writes a file that may be read by others (CA certificate, registry, revocation list).
pub fn write_public_file(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomically(path, contents, 0o644)
}

pub fn read_to_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(io_error(path))
}
