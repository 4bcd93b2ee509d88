//! A node's durable state: named tables of JSON values over one sled database.
//!
//! Every node (hub or edge) keeps its state under its data directory in `state.sled`. This crate
//! is the only one that touches sled: the rest of the code sees typed [`Table`]s. Writes become
//! durable with [`Store::flush`] (an fsync); anything acknowledged to a peer or a user must be
//! written with [`Table::put_durable`] (or flushed) first, so that a node killed with SIGKILL at
//! any moment restarts with nothing acknowledged lost. sled itself guarantees that a crash never
//! leaves a torn write behind.

pub mod durable;

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the node store at {path} (is another node using this data directory?): {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("node store: {0}")]
    Sled(#[from] sled::Error),
    #[error("node store table {table:?}, key {key:?}: unreadable value ({reason})")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },
}

impl StoreError {
    /// Whether the store could not be opened because another process (a running node) holds it.
    pub fn is_locked(&self) -> bool {
        // sled reports a held lock only in its message (an `Other` I/O error).
        matches!(self, StoreError::Open { source: sled::Error::Io(error), .. }
            if error.kind() == std::io::ErrorKind::WouldBlock
                || error.to_string().contains("could not acquire lock"))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What sled may cache in memory (its default is 1 GiB).
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The node's database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Opens (or creates) the store under a node's data directory.
    pub fn open(data_dir: &Path) -> Result<Self> {
        // A node's data (accounts, sessions, slides, keys) is its own user's alone.
        restrict_to_owner(data_dir);
        let path = data_dir.join("state.sled");
        let db = sled::Config::new()
            .path(&path)
            // sled's background flusher bounds what an unflushed write can lose; writes that
            // matter are flushed explicitly anyway.
            .flush_every_ms(Some(500))
            // sled caches up to 1 GiB by default; a node runs on a modest box beside its work.
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| StoreError::Open { path, source })?;
        Ok(Self { db })
    }

    /// A typed table; opening the same name twice gives the same data.
    pub fn table<V>(&self, name: &'static str) -> Result<Table<V>> {
        Ok(Table {
            tree: self.db.open_tree(name)?,
            name,
            value: PhantomData,
            group: Default::default(),
        })
    }

    /// Makes every write so far durable (fsync).
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

/// A table of `V` keyed by strings (ordered by key).
pub struct Table<V> {
    tree: sled::Tree,
    name: &'static str,
    value: PhantomData<fn() -> V>,
    /// Group commit for [`Table::flush_async`], shared by the clones of this table.
    group: std::sync::Arc<GroupFlush>,
}

/// Writers that need their write on disk take a ticket; one fsync serves every ticket taken
/// before it started. (sled's own `flush_async` can leave concurrent waiters asleep forever:
/// spacejam/sled#1241.)
#[derive(Default)]
struct GroupFlush {
    tickets: std::sync::atomic::AtomicU64,
    flushed: tokio::sync::Mutex<u64>,
}

impl<V> Clone for Table<V> {
    fn clone(&self) -> Self {
        Self {
            tree: self.tree.clone(),
            name: self.name,
            value: PhantomData,
            group: self.group.clone(),
        }
    }
}

impl<V: Serialize + DeserializeOwned> Table<V> {
    fn decode(&self, key: &[u8], bytes: &[u8]) -> Result<V> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            table: self.name,
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        })
    }

    fn encode(&self, key: &str, value: &V) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
            table: self.name,
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    pub fn get(&self, key: &str) -> Result<Option<V>> {
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(self.decode(key.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Writes a value; durable at the next flush (at most ~0.5 s later).
    pub fn put(&self, key: &str, value: &V) -> Result<()> {
        let bytes = self.encode(key, value)?;
        self.tree.insert(key, bytes)?;
        Ok(())
    }

    /// Writes a value and returns only once it is on disk.
    pub fn put_durable(&self, key: &str, value: &V) -> Result<()> {
        self.put(key, value)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Inserts only if the key is absent; returns whether it was inserted. Durable on return.
    pub fn insert_new_durable(&self, key: &str, value: &V) -> Result<bool> {
        let bytes = self.encode(key, value)?;
        let inserted = self
            .tree
            .compare_and_swap(key, None as Option<&[u8]>, Some(bytes))?
            .is_ok();
        self.tree.flush()?;
        Ok(inserted)
    }

    /// Atomically replaces the value under `key` with `f(current)` (`None` removes it), retrying
    /// if another writer got there first; `f` may run more than once. Durable at the next flush.
    pub fn update(
        &self,
        key: &str,
        mut f: impl FnMut(Option<V>) -> Option<V>,
    ) -> Result<Option<V>> {
        let mut failure: Option<StoreError> = None;
        let updated = self.tree.update_and_fetch(key, |old| {
            let current = match old
                .map(|bytes| self.decode(key.as_bytes(), bytes))
                .transpose()
            {
                Ok(current) => current,
                Err(error) => {
                    failure = Some(error);
                    return old.map(<[u8]>::to_vec);
                }
            };
            match f(current).map(|value| self.encode(key, &value)).transpose() {
                Ok(bytes) => bytes,
                Err(error) => {
                    failure = Some(error);
                    old.map(<[u8]>::to_vec)
                }
            }
        })?;
        if let Some(error) = failure {
            return Err(error);
        }
        updated
            .map(|bytes| self.decode(key.as_bytes(), &bytes))
            .transpose()
    }

    pub fn remove(&self, key: &str) -> Result<Option<V>> {
        match self.tree.remove(key)? {
            Some(bytes) => Ok(Some(self.decode(key.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Makes every write to this table so far durable (fsync).
    pub fn flush(&self) -> Result<()> {
        self.tree.flush()?;
        Ok(())
    }

    /// Makes every write so far durable; concurrent callers share one fsync (sled batches them),
    /// so a busy path can afford it per request.
    pub async fn flush_async(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        // Taken after this caller's write: a flush that starts later covers it.
        let ticket = self.group.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut flushed = self.group.flushed.lock().await;
        if *flushed >= ticket {
            return Ok(());
        }
        let covers = self.group.tickets.load(Ordering::SeqCst);
        let tree = self.tree.clone();
        tokio::task::spawn_blocking(move || tree.flush())
            .await
            .map_err(|e| StoreError::Sled(sled::Error::Io(std::io::Error::other(e))))??;
        *flushed = covers;
        Ok(())
    }

    /// Removes a key and returns only once the removal is on disk.
    pub fn remove_durable(&self, key: &str) -> Result<Option<V>> {
        let removed = self.remove(key)?;
        self.tree.flush()?;
        Ok(removed)
    }

    /// All entries in key order.
    pub fn entries(&self) -> Result<Vec<(String, V)>> {
        self.tree
            .iter()
            .map(|entry| {
                let (key, bytes) = entry?;
                let value = self.decode(&key, &bytes)?;
                Ok((String::from_utf8_lossy(&key).into_owned(), value))
            })
            .collect()
    }

    /// Every key, in order (values are not decoded).
    pub fn keys(&self) -> Result<Vec<String>> {
        self.tree
            .iter()
            .keys()
            .map(|key| Ok(String::from_utf8_lossy(&key?).into_owned()))
            .collect()
    }

    /// The values of the last `limit` keys, last first (one reverse scan: the newest entries of a
    /// table keyed by time).
    pub fn last_values(&self, limit: usize) -> Result<Vec<V>> {
        self.tree
            .iter()
            .rev()
            .take(limit)
            .map(|entry| {
                let (key, bytes) = entry?;
                self.decode(&key, &bytes)
            })
            .collect()
    }

    /// The entries whose keys start with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, V)>> {
        self.collect(self.tree.scan_prefix(prefix))
    }

    /// The entries with keys from `first` to `last` (both included), in key order.
    pub fn range(&self, first: &str, last: &str) -> Result<Vec<(String, V)>> {
        self.collect(self.tree.range(first..=last))
    }

    fn collect(&self, entries: sled::Iter) -> Result<Vec<(String, V)>> {
        entries
            .map(|entry| {
                let (key, bytes) = entry?;
                let value = self.decode(&key, &bytes)?;
                Ok((String::from_utf8_lossy(&key).into_owned(), value))
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

/// Makes `dir` (created if need be) accessible to its owner only (0700). A directory the node
/// does not own is left as it is, with a warning: the operator chose its permissions.
fn restrict_to_owner(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    if let Err(error) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(dir = %dir.display(), %error, "cannot make the data directory private to this user");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_concurrent_flushes_all_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let table: Table<u32> = store.table("audit").unwrap();
        let mut writers = Vec::new();
        for i in 0..64u32 {
            let table = table.clone();
            writers.push(tokio::spawn(async move {
                table.put(&format!("{i:04}"), &i).unwrap();
                table.flush_async().await.unwrap();
            }));
        }
        let all = async {
            for writer in writers {
                writer.await.unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), all)
            .await
            .expect("every flush completes");
        assert_eq!(table.len(), 64);
    }
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Site {
        name: String,
        seen: u32,
    }

    #[test]
    fn a_store_held_by_another_opener_is_reported_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Store::open(dir.path()).unwrap();
        let error = Store::open(dir.path()).err().expect("the store is held");
        assert!(error.is_locked(), "{error}");
        std::fs::write(dir.path().join("blocker"), b"x").unwrap();
        let blocked = Store::open(&dir.path().join("blocker")).err().unwrap();
        assert!(!blocked.is_locked(), "{blocked}");
    }

    #[test]
    fn values_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let sites = store.table::<Site>("sites").unwrap();
            sites
                .put_durable(
                    "a",
                    &Site {
                        name: "A".into(),
                        seen: 1,
                    },
                )
                .unwrap();
            assert!(sites
                .insert_new_durable(
                    "b",
                    &Site {
                        name: "B".into(),
                        seen: 2
                    }
                )
                .unwrap());
            assert!(!sites
                .insert_new_durable(
                    "b",
                    &Site {
                        name: "X".into(),
                        seen: 0
                    }
                )
                .unwrap());
        }
        let store = Store::open(dir.path()).unwrap();
        let sites = store.table::<Site>("sites").unwrap();
        assert_eq!(sites.get("b").unwrap().unwrap().name, "B");
        assert_eq!(sites.entries().unwrap().len(), 2);
        assert_eq!(sites.remove_durable("a").unwrap().unwrap().seen, 1);
        assert_eq!(sites.len(), 1);
    }

    #[test]
    fn updates_are_atomic_read_modify_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sites = store.table::<Site>("sites").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let sites = sites.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        sites
                            .update("a", |site| {
                                let mut site = site.unwrap_or(Site {
                                    name: "A".into(),
                                    seen: 0,
                                });
                                site.seen += 1;
                                Some(site)
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(sites.get("a").unwrap().unwrap().seen, 400);
        assert_eq!(sites.update("a", |_| None).unwrap(), None);
        assert!(sites.get("a").unwrap().is_none());
    }

    #[test]
    fn a_value_of_the_wrong_shape_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .table::<String>("t")
            .unwrap()
            .put("k", &"text".to_string())
            .unwrap();
        let err = store.table::<Site>("t").unwrap().get("k").unwrap_err();
        assert!(err.to_string().contains("table \"t\", key \"k\""), "{err}");
    }
}
