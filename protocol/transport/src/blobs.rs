//! A content-addressed blob store on disk, with resumable partial blobs.
//!
//! Complete blobs live at `<dir>/<blake3-hex>` beside their offer (`<hex>.offer.json`, the chunk
//! hashes, so a blob is never hashed twice to be sent). A blob being received lives in
//! `<dir>/partial/<hex>.part` with `<hex>.state.json` recording the offer and how many chunks are
//! durable. The state file is only rewritten after the data it counts has been fsynced, so after
//! a crash the part file is cut back to the recorded length and the transfer resumes from there.
//! A blob becomes visible under its id only once its whole hash has been checked.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use grassroots_wire::transfer::{OfferBuilder, DEFAULT_CHUNK_SIZE};
use grassroots_wire::{ContentId, TransferOffer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::{io_error, Result, TransportError};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartialState {
    offer: TransferOffer,
    durable_chunks: u32,
}

/// A partial blob, as listed for status pages.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PartialBlobStatus {
    pub id: String,
    pub label: String,
    pub size: u64,
    pub durable_bytes: u64,
}

#[derive(Clone)]
pub struct BlobStore {
    dir: PathBuf,
    receiving: Arc<Mutex<HashSet<ContentId>>>,
}

impl BlobStore {
    pub fn open(dir: &Path) -> Result<Self> {
        let partial = dir.join("partial");
        std::fs::create_dir_all(&partial).map_err(io_error(&partial))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            receiving: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    pub fn path(&self, id: &ContentId) -> PathBuf {
        self.dir.join(id.to_hex())
    }

    fn offer_path(&self, id: &ContentId) -> PathBuf {
        self.dir.join(format!("{}.offer.json", id.to_hex()))
    }

    fn part_path(&self, id: &ContentId) -> PathBuf {
        self.dir
            .join("partial")
            .join(format!("{}.part", id.to_hex()))
    }

    fn state_path(&self, id: &ContentId) -> PathBuf {
        self.dir
            .join("partial")
            .join(format!("{}.state.json", id.to_hex()))
    }

    pub fn contains(&self, id: &ContentId) -> bool {
        self.path(id).is_file()
    }

    /// Copies a file into the store (hashing it on the way) and returns its offer. Importing the
    /// same content twice yields the same id and keeps one copy.
    pub async fn import_file(&self, source: &Path, label: &str) -> Result<TransferOffer> {
        let temp = self.dir.join("partial").join(format!(
            "import-{}-{}.tmp",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut input = tokio::fs::File::open(source)
            .await
            .map_err(io_error(source))?;
        let mut output = tokio::fs::File::create(&temp)
            .await
            .map_err(io_error(&temp))?;
        let mut builder = OfferBuilder::new(DEFAULT_CHUNK_SIZE);
        let mut chunk = vec![0u8; DEFAULT_CHUNK_SIZE as usize];
        loop {
            let filled = read_full(&mut input, &mut chunk)
                .await
                .map_err(io_error(source))?;
            if filled == 0 {
                break;
            }
            builder.add_chunk(&chunk[..filled]);
            output
                .write_all(&chunk[..filled])
                .await
                .map_err(io_error(&temp))?;
            if filled < chunk.len() {
                break;
            }
        }
        output.sync_all().await.map_err(io_error(&temp))?;
        drop(output);
        let offer = builder.finish(label);
        self.write_offer(&offer).await?;
        let target = self.path(&offer.id);
        tokio::fs::rename(&temp, &target)
            .await
            .map_err(io_error(&target))?;
        sync_dir(&self.dir).await?;
        Ok(offer)
    }

    async fn write_offer(&self, offer: &TransferOffer) -> Result<()> {
        let path = self.offer_path(&offer.id);
        let json = serde_json::to_vec(offer).map_err(|e| TransportError::Peer(e.to_string()))?;
        write_durably(&path, &json).await
    }

    /// The offer for a blob in the store, relabelled.
    pub async fn offer(&self, id: &ContentId, label: &str) -> Result<TransferOffer> {
        if !self.contains(id) {
            return Err(TransportError::NoSuchBlob(id.to_hex()));
        }
        let path = self.offer_path(id);
        let bytes = tokio::fs::read(&path).await.map_err(io_error(&path))?;
        let mut offer: TransferOffer = serde_json::from_slice(&bytes)
            .map_err(|e| TransportError::Peer(format!("{}: {e}", path.display())))?;
        offer.label = label.to_string();
        Ok(offer)
    }

    /// Reads one chunk of a complete blob.
    pub async fn read_chunk(&self, offer: &TransferOffer, index: u32) -> Result<Vec<u8>> {
        let path = self.path(&offer.id);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(io_error(&path))?;
        file.seek(std::io::SeekFrom::Start(offer.chunk_offset(index)))
            .await
            .map_err(io_error(&path))?;
        let mut data = vec![0u8; offer.chunk_len(index)];
        file.read_exact(&mut data).await.map_err(io_error(&path))?;
        Ok(data)
    }

    /// Blobs currently partially received.
    pub fn partials(&self) -> Vec<PartialBlobStatus> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("partial")) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".state.json"))
            .filter_map(|entry| std::fs::read(entry.path()).ok())
            .filter_map(|bytes| serde_json::from_slice::<PartialState>(&bytes).ok())
            // A crash between completing a blob and removing its state file leaves the latter.
            .filter(|state| !self.contains(&state.offer.id))
            .map(|state| PartialBlobStatus {
                id: state.offer.id.to_hex(),
                label: state.offer.label.clone(),
                size: state.offer.size,
                durable_bytes: state
                    .offer
                    .chunk_offset(state.durable_chunks)
                    .min(state.offer.size),
            })
            .collect()
    }

    /// Removes partial blobs nobody has added to for `max_age` (a sender that went away for
    /// good, or an offer that will never be repeated), except those being received right now;
    /// returns how many bytes went. A sender that comes back later starts that blob again.
    pub fn sweep_partials(&self, max_age: std::time::Duration) -> u64 {
        let Ok(entries) = std::fs::read_dir(self.dir.join("partial")) else {
            return 0;
        };
        let receiving: HashSet<String> = self
            .receiving
            .lock()
            .map(|ids| ids.iter().map(ContentId::to_hex).collect())
            .unwrap_or_default();
        let now = std::time::SystemTime::now();
        // A blob's state file and data file go together, judged by the newer of the two: a
        // state file kept without its data would make zeros look received.
        let mut blobs: std::collections::HashMap<
            String,
            (std::time::SystemTime, Vec<(PathBuf, u64)>),
        > = std::collections::HashMap::new();
        for entry in entries.filter_map(|entry| entry.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_suffix(".state.json")
                .or_else(|| name.strip_suffix(".part"))
            else {
                continue;
            };
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            let modified = metadata.modified().unwrap_or(now);
            let files = blobs
                .entry(id.to_string())
                .or_insert((std::time::UNIX_EPOCH, Vec::new()));
            files.0 = files.0.max(modified);
            files.1.push((entry.path(), metadata.len()));
        }
        let mut freed = 0;
        for (id, (newest, files)) in blobs {
            let stale = now.duration_since(newest).is_ok_and(|age| age >= max_age);
            if !stale || receiving.contains(&id) {
                continue;
            }
            for (path, bytes) in files {
                if std::fs::remove_file(&path).is_ok() {
                    freed += bytes;
                }
            }
            tracing::info!(blob = %id, "removed a stale partial blob");
        }
        freed
    }

    /// Starts or resumes receiving `offer`. Returns `None` if another stream is receiving the
    /// same blob right now.
    pub async fn begin_receive(&self, offer: &TransferOffer) -> Result<Option<PartialBlob>> {
        {
            let mut receiving = self
                .receiving
                .lock()
                .map_err(|_| TransportError::Peer("blob store lock poisoned".into()))?;
            if !receiving.insert(offer.id) {
                return Ok(None);
            }
        }
        let guard = ReceivingGuard {
            id: offer.id,
            receiving: self.receiving.clone(),
        };
        let state_path = self.state_path(&offer.id);
        let part_path = self.part_path(&offer.id);
        if self.contains(&offer.id) {
            // Left over from a crash after completion: nothing to resume.
            let _ = tokio::fs::remove_file(&state_path).await;
        }
        let previous: Option<PartialState> = match tokio::fs::read(&state_path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).ok(),
            Err(_) => None,
        };
        // Resume only a transfer of the very same offer (same chunking); otherwise start over.
        let durable_chunks = match previous {
            Some(state)
                if state.offer.chunk_size == offer.chunk_size
                    && state.offer.chunk_hashes == offer.chunk_hashes =>
            {
                state.durable_chunks
            }
            _ => 0,
        };
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(&part_path)
            .await
            .map_err(io_error(&part_path))?;
        // Whatever lies beyond the durable count was never acknowledged: cut it off.
        file.set_len(offer.chunk_offset(durable_chunks).min(offer.size))
            .await
            .map_err(io_error(&part_path))?;
        let mut partial = PartialBlob {
            store: self.clone(),
            offer: offer.clone(),
            file,
            durable_chunks,
            part_path,
            state_path,
            _guard: guard,
        };
        partial.write_state().await?;
        Ok(Some(partial))
    }
}

struct ReceivingGuard {
    id: ContentId,
    receiving: Arc<Mutex<HashSet<ContentId>>>,
}

impl Drop for ReceivingGuard {
    fn drop(&mut self) {
        if let Ok(mut receiving) = self.receiving.lock() {
            receiving.remove(&self.id);
        }
    }
}

/// A blob being received.
pub struct PartialBlob {
    store: BlobStore,
    offer: TransferOffer,
    file: tokio::fs::File,
    durable_chunks: u32,
    part_path: PathBuf,
    state_path: PathBuf,
    _guard: ReceivingGuard,
}

impl PartialBlob {
    /// Gives up on this partial blob and removes its files.
    pub async fn abandon(self) {
        let _ = tokio::fs::remove_file(&self.part_path).await;
        let _ = tokio::fs::remove_file(&self.state_path).await;
    }

    pub fn durable_chunks(&self) -> u32 {
        self.durable_chunks
    }

    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.file
            .seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(io_error(&self.part_path))?;
        self.file
            .write_all(data)
            .await
            .map_err(io_error(&self.part_path))
    }

    /// Makes everything written so far durable, then records `chunks` as received.
    pub async fn checkpoint(&mut self, chunks: u32) -> Result<()> {
        if chunks == self.durable_chunks {
            return Ok(());
        }
        self.file.flush().await.map_err(io_error(&self.part_path))?;
        self.file
            .sync_data()
            .await
            .map_err(io_error(&self.part_path))?;
        self.durable_chunks = chunks;
        self.write_state().await
    }

    async fn write_state(&mut self) -> Result<()> {
        let state = PartialState {
            offer: self.offer.clone(),
            durable_chunks: self.durable_chunks,
        };
        let json = serde_json::to_vec(&state).map_err(|e| TransportError::Peer(e.to_string()))?;
        write_durably(&self.state_path, &json).await
    }

    /// Checks the whole blob against its id and moves it into the store.
    pub async fn complete(mut self) -> Result<PathBuf> {
        self.file.flush().await.map_err(io_error(&self.part_path))?;
        self.file
            .sync_all()
            .await
            .map_err(io_error(&self.part_path))?;
        let path = self.part_path.clone();
        let actual = tokio::task::spawn_blocking(move || -> std::io::Result<ContentId> {
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(std::fs::File::open(&path)?)?;
            Ok(hasher.finalize().into())
        })
        .await
        .map_err(|e| TransportError::Peer(format!("hashing task failed: {e}")))?
        .map_err(io_error(&self.part_path))?;
        if actual != self.offer.id {
            // Start over rather than resume from data that does not add up.
            let _ = tokio::fs::remove_file(&self.part_path).await;
            let _ = tokio::fs::remove_file(&self.state_path).await;
            return Err(TransportError::BlobHashMismatch {
                id: self.offer.id.to_hex(),
                actual: actual.to_hex(),
            });
        }
        self.store.write_offer(&self.offer).await?;
        let target = self.store.path(&self.offer.id);
        tokio::fs::rename(&self.part_path, &target)
            .await
            .map_err(io_error(&target))?;
        sync_dir(&self.store.dir).await?;
        let _ = tokio::fs::remove_file(&self.state_path).await;
        Ok(target)
    }
}

async fn read_full(file: &mut tokio::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let read = file.read(&mut buffer[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}

async fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    // A unique temporary name: two writers of the same file must not share one.
    let temp = path.with_extension(format!(
        "{}-{}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut file = tokio::fs::File::create(&temp)
        .await
        .map_err(io_error(&temp))?;
    file.write_all(bytes).await.map_err(io_error(&temp))?;
    file.sync_all().await.map_err(io_error(&temp))?;
    drop(file);
    tokio::fs::rename(&temp, path)
        .await
        .map_err(io_error(path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir).await?;
    }
    Ok(())
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(&dir))
    })
    .await
    .map_err(|e| TransportError::Peer(format!("sync task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_partials_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("blobs")).unwrap();
        let source = dir.path().join("source.bin");
        std::fs::write(&source, vec![7u8; 300_000]).unwrap();
        let offer = store.import_file(&source, "test").await.unwrap();
        let receiver = BlobStore::open(&dir.path().join("received")).unwrap();
        let mut partial = receiver.begin_receive(&offer).await.unwrap().unwrap();
        let chunk = store.read_chunk(&offer, 0).await.unwrap();
        partial.write_at(0, &chunk).await.unwrap();
        partial.checkpoint(1).await.unwrap();
        // Being received: never swept, however old.
        assert_eq!(receiver.sweep_partials(std::time::Duration::ZERO), 0);
        drop(partial);
        assert_eq!(receiver.partials().len(), 1);
        // Not old enough yet.
        assert_eq!(
            receiver.sweep_partials(std::time::Duration::from_secs(3600)),
            0
        );
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 86_400);
        for entry in std::fs::read_dir(dir.path().join("received/partial")).unwrap() {
            let file = std::fs::File::options()
                .write(true)
                .open(entry.unwrap().path())
                .unwrap();
            file.set_modified(old).unwrap();
        }
        assert!(receiver.sweep_partials(std::time::Duration::from_secs(7 * 86_400)) > 0);
        assert!(receiver.partials().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("received/partial"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn import_is_content_addressed_and_resume_cuts_back_to_the_durable_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("blobs")).unwrap();
        let source = dir.path().join("source.bin");
        let data: Vec<u8> = (0..3_500_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&source, &data).unwrap();
        let offer = store.import_file(&source, "test").await.unwrap();
        assert_eq!(offer.id, ContentId::of(&data));
        assert_eq!(
            store.import_file(&source, "again").await.unwrap().id,
            offer.id
        );
        assert_eq!(std::fs::read(store.path(&offer.id)).unwrap(), data);
        assert_eq!(
            store.offer(&offer.id, "x").await.unwrap().chunk_hashes,
            offer.chunk_hashes
        );

        // Receive into a second store: two chunks made durable, a third written but not.
        let receiver = BlobStore::open(&dir.path().join("received")).unwrap();
        let mut partial = receiver.begin_receive(&offer).await.unwrap().unwrap();
        assert!(
            receiver.begin_receive(&offer).await.unwrap().is_none(),
            "one receiver per blob"
        );
        for index in 0..3 {
            let chunk = store.read_chunk(&offer, index).await.unwrap();
            partial
                .write_at(offer.chunk_offset(index), &chunk)
                .await
                .unwrap();
            if index == 1 {
                partial.checkpoint(2).await.unwrap();
            }
        }
        drop(partial); // the "crash"
        assert_eq!(receiver.partials()[0].durable_bytes, offer.chunk_offset(2));
        let mut partial = receiver.begin_receive(&offer).await.unwrap().unwrap();
        assert_eq!(partial.durable_chunks(), 2);
        for index in 2..offer.chunk_count() {
            let chunk = store.read_chunk(&offer, index).await.unwrap();
            partial
                .write_at(offer.chunk_offset(index), &chunk)
                .await
                .unwrap();
        }
        let path = partial.complete().await.unwrap();
        assert_eq!(std::fs::read(path).unwrap(), data);
        assert!(receiver.partials().is_empty());
        assert!(receiver.contains(&offer.id));
    }

    #[tokio::test]
    async fn a_blob_that_does_not_hash_to_its_id_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let offer = TransferOffer::for_bytes(b"the real bytes", 1024, "t");
        let mut partial = store.begin_receive(&offer).await.unwrap().unwrap();
        partial.write_at(0, b"the fake bytes").await.unwrap();
        let err = partial.complete().await.unwrap_err();
        assert!(
            matches!(err, TransportError::BlobHashMismatch { .. }),
            "{err}"
        );
        assert!(!store.contains(&offer.id));
        assert!(store.partials().is_empty());
    }
}
