//! Writing a file so that a crash leaves the old content or the new, never a mix: written to a
//! temporary beside it, fsynced, renamed over it, and the folder fsynced so the rename itself
//! survives a power cut. Model packages, screening parts and import answers are written so.

use std::path::Path;

pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temp)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
