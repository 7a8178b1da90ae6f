//! The embedded backend of `sluice-store`: [sled](https://docs.rs/sled/0.34)
//! in one directory, one tree per [`Table`].
//!
//! # The data directory
//!
//! The directory given to [`SledBackend::open`] belongs to sled; nothing
//! else should be kept in it (put the master key file beside it, say
//! `data/master.key` next to `data/db/`). sled 0.34 lays it out as:
//!
//! - `conf` — the database's configuration, checked on open;
//! - `db` — the log-structured page store holding every tree;
//! - `blobs/` — values too large to inline (component files);
//! - `snap.<offset>` — recovery snapshots of the page table.
//!
//! Inside, each [`Table`] is the tree named [`Table::name`] (`records`,
//! `record_index`, `connections`, …); the keys and values within are
//! `sluice-store`'s (see `sluice_store::keys`).
//!
//! # Durability and atomicity
//!
//! [`Backend::apply`] writes a batch that touches one tree with
//! `Tree::apply_batch` and one that touches several in one sled transaction
//! over exactly those trees; either is atomic, also across a crash. It then
//! flushes (fsyncs) before returning: sled on its own only flushes every
//! 500 ms, and a write the caller was told succeeded must survive a
//! SIGKILL. Concurrent writers share flushes (group commit): a writer waits
//! for a flush that started after its write was applied. sled's calls block, so writes and
//! flushes never run on a worker thread: they run on tokio's blocking
//! pool. Point reads of a few keys (and the first entries of a scan) run
//! on the calling thread, longer reads in `block_in_place` (see
//! `SledBackend::read` for why).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sled::Transactional as _;
use sluice_store::{
    Backend, BackendError, INLINE_READ_KEYS, KeyRange, Op, Table, on_multi_thread_runtime,
    scan_range,
};

/// sled's files in a database directory; one of them present means the
/// directory is a sled database (or was meant to be one).
const SLED_FILES: [&str; 2] = ["conf", "db"];

/// A sled database as a [`Backend`]. Cheap to clone; the database closes
/// (and flushes) when the last clone is dropped.
#[derive(Clone)]
pub struct SledBackend {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: sled::Db,
    /// One tree per table, indexed by [`Table::index`].
    trees: Vec<sled::Tree>,
    flushes: GroupFlush,
}

/// Group commit: writers that need their write on disk share fsyncs. A
/// writer takes a ticket after its write is applied; one flush at a time
/// runs and covers every ticket taken before it started, so concurrent
/// durable writes cost one fsync per group instead of one each.
#[derive(Default)]
struct GroupFlush {
    state: std::sync::Mutex<FlushState>,
    done: std::sync::Condvar,
}

#[derive(Default)]
struct FlushState {
    /// The last ticket handed out.
    taken: u64,
    /// Every ticket up to this one is on disk.
    flushed: u64,
    running: bool,
}

impl GroupFlush {
    /// Returns once a flush that started after this call has finished.
    fn flush(&self, db: &sled::Db) -> Result<(), BackendError> {
        let lock = || self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mine = {
            let mut st = lock();
            st.taken += 1;
            st.taken
        };
        let mut st = lock();
        loop {
            if st.flushed >= mine {
                return Ok(());
            }
            if !st.running {
                st.running = true;
                let covers = st.taken;
                drop(st);
                let result = db.flush();
                st = lock();
                st.running = false;
                if result.is_ok() {
                    st.flushed = st.flushed.max(covers);
                }
                self.done.notify_all();
                result.map_err(storage)?;
                continue;
            }
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl std::fmt::Debug for SledBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledBackend")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Why sled could not open a database, in words an operator can act on.
fn open_cause(e: &sled::Error) -> String {
    match e {
        // sled wraps the failed `flock` of its `db` file in its own message.
        sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock") =>
        {
            "it is already open (sled holds a lock on it: another sluice process, or another \
             handle in this one)"
                .into()
        }
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => {
            format!("the database is unreadable (damaged, or not a sled 0.34 database): {e}")
        }
        _ => format!("sled cannot open it: {e}"),
    }
}

fn storage(e: impl std::fmt::Display) -> BackendError {
    BackendError::Storage(e.to_string())
}

/// sled's in-process page cache.
const CACHE_BYTES: u64 = 512 << 20;

impl SledBackend {
    /// Opens the database in `dir`, creating it when `dir` does not exist or
    /// is empty. A path that is not a directory, a non-empty directory that
    /// is not a sled database, or a database sled cannot read is refused
    /// with an error naming the directory and the cause; nothing in it is
    /// deleted or recreated.
    pub fn open(dir: &Path) -> Result<SledBackend, BackendError> {
        let fail = |cause: String| BackendError::Open {
            location: dir.display().to_string(),
            cause,
        };
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => return Err(fail("it is not a directory".into())),
            Ok(_) => {
                let mut entries =
                    std::fs::read_dir(dir).map_err(|e| fail(format!("cannot list it: {e}")))?;
                let non_empty = entries.next().is_some();
                let is_sled = SLED_FILES.iter().any(|f| dir.join(f).exists());
                if non_empty && !is_sled {
                    return Err(fail(
                        "it is not empty and not a sled database (no `conf` or `db` file); \
                         refusing to write into it"
                            .into(),
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(format!("cannot read it: {e}"))),
        }
        // sled's page cache (its default is 1 GiB) only grows with the
        // data read; records pages at depth need it to hold the working set.
        let config = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES);
        // sled reports most damage as errors but panics on some malformed
        // files; either way the database is refused, not recreated.
        let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .map_err(|panic| {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "sled panicked".into());
                fail(format!("the database is unreadable: {why}"))
            })?
            .map_err(|e| fail(open_cause(&e)))?;
        let trees = Table::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(format!("cannot open its trees: {e}")))?;
        Ok(SledBackend {
            inner: Arc::new(Inner {
                path: dir.to_path_buf(),
                db,
                trees,
                flushes: GroupFlush::default(),
            }),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs a read of up to `keys` entries. sled reads mostly hit its page
    /// cache and take microseconds, less than handing the work to another
    /// thread: the two hand-offs of `spawn_blocking` (tens of µs each on a
    /// loaded 2-core machine), or `block_in_place`, which first hands this
    /// worker's core to another thread. A point read of at most
    /// [`INLINE_READ_KEYS`] keys therefore runs on the calling thread. A larger
    /// read runs in `block_in_place` on a multi-threaded runtime, so the
    /// worker's other tasks are not held up even when it has to wait for
    /// the disk; a current-thread runtime cannot do that, and there such
    /// reads go to the blocking pool like writes.
    async fn read<T: Send + 'static>(
        &self,
        keys: usize,
        f: impl FnOnce(&Inner) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        if keys <= INLINE_READ_KEYS {
            return f(&self.inner);
        }
        if on_multi_thread_runtime() {
            return tokio::task::block_in_place(|| f(&self.inner));
        }
        self.blocking(f).await
    }

    /// Up to `limit` entries of `range` (backwards when `reverse`), each key
    /// with what `visit` makes of the entry, looked at in place. The first
    /// entries are read on this thread, as a point read; the rest of a
    /// longer scan in `block_in_place`. On a current-thread runtime a
    /// longer scan copies the entries out on the blocking pool first.
    async fn scan_visit<T: Send + 'static>(
        &self,
        table: Table,
        range: KeyRange,
        limit: usize,
        reverse: bool,
        visit: &mut (dyn for<'v> FnMut(&'v [u8], &'v [u8]) -> T + Send),
    ) -> Result<Vec<(Vec<u8>, T)>, BackendError> {
        let iter = self.inner.tree(table).range(range);
        let mut iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + Send> =
            if reverse {
                Box::new(iter.rev())
            } else {
                Box::new(iter)
            };
        if !on_multi_thread_runtime() && limit > INLINE_READ_KEYS {
            let entries: Vec<(sled::IVec, sled::IVec)> = self
                .blocking(move |_| iter.take(limit).map(|e| e.map_err(storage)).collect())
                .await?;
            return Ok(entries
                .into_iter()
                .map(|(k, v)| (k.to_vec(), visit(&k, &v)))
                .collect());
        }
        let mut out = Vec::new();
        let mut pull = |iter: &mut dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
                        n: usize,
                        out: &mut Vec<(Vec<u8>, T)>| {
            for item in iter.take(n) {
                let (k, v) = item.map_err(storage)?;
                out.push((k.to_vec(), visit(&k, &v)));
            }
            Ok::<(), BackendError>(())
        };
        pull(&mut iter, limit.min(INLINE_READ_KEYS), &mut out)?;
        if out.len() == INLINE_READ_KEYS && limit > INLINE_READ_KEYS {
            tokio::task::block_in_place(|| pull(&mut iter, limit - INLINE_READ_KEYS, &mut out))?;
        }
        Ok(out)
    }

    /// Runs `f` on tokio's blocking pool (writes: a batch and an fsync).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| BackendError::Storage(format!("a database task failed: {e}")))?
    }
}

impl Inner {
    fn tree(&self, table: Table) -> &sled::Tree {
        &self.trees[table.index()]
    }
}

#[async_trait::async_trait]
impl Backend for SledBackend {
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let key = key.to_vec();
        self.read(1, move |db| {
            Ok(db
                .tree(table)
                .get(&key)
                .map_err(storage)?
                .map(|v| v.to_vec()))
        })
        .await
    }

    async fn get_many(
        &self,
        table: Table,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        self.read(keys.len(), move |db| {
            let tree = db.tree(table);
            keys.iter()
                .map(|k| Ok(tree.get(k).map_err(storage)?.map(|v| v.to_vec())))
                .collect()
        })
        .await
    }

    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        let Some(range) = scan_range(prefix, after, reverse) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.scan_visit(table, range, limit, reverse, &mut |_, v| v.to_vec())
            .await
    }

    async fn scan_where(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        reverse: bool,
        keep: &mut (dyn for<'v> FnMut(&'v [u8]) -> bool + Send),
    ) -> Result<Vec<(Vec<u8>, Option<Vec<u8>>)>, BackendError> {
        let Some(range) = scan_range(prefix, after, reverse) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.scan_visit(table, range, limit, reverse, &mut |_, v| {
            keep(v).then(|| v.to_vec())
        })
        .await
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        self.write(ops, true).await
    }

    async fn apply_unflushed(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        self.write(ops, false).await
    }
}

impl SledBackend {
    /// Applies `ops` atomically; `flush`: durably before returning.
    async fn write(&self, ops: Vec<Op>, flush: bool) -> Result<(), BackendError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.blocking(move |db| {
            // One batch per table touched, in table order; within a batch
            // the last op on a key wins.
            let mut batches: Vec<Option<sled::Batch>> = vec![None; Table::ALL.len()];
            for op in ops {
                let batch = batches[op.table().index()].get_or_insert_with(Default::default);
                match op {
                    Op::Put { key, value, .. } => batch.insert(key, value),
                    Op::Delete { key, .. } => batch.remove(key),
                }
            }
            let (trees, batches): (Vec<sled::Tree>, Vec<sled::Batch>) = batches
                .into_iter()
                .enumerate()
                .filter_map(|(i, b)| b.map(|b| (db.trees[i].clone(), b)))
                .unzip();
            match (trees.as_slice(), batches.as_slice()) {
                ([tree], [_]) => {
                    let batch = batches.into_iter().next().unwrap_or_default();
                    tree.apply_batch(batch).map_err(storage)?;
                }
                _ => {
                    trees
                        .as_slice()
                        .transaction(|views| {
                            for (view, batch) in views.iter().zip(&batches) {
                                view.apply_batch(batch)?;
                            }
                            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                        })
                        .map_err(|e| match e {
                            sled::transaction::TransactionError::Storage(e) => storage(e),
                            sled::transaction::TransactionError::Abort(()) => {
                                BackendError::Storage("the transaction was aborted".into())
                            }
                        })?;
                }
            }
            if flush {
                db.flushes.flush(&db.db)?;
            }
            Ok(())
        })
        .await
    }
}
