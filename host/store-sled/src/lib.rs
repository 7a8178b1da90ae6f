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
//! One thread owns the writing side (`sluice_store::writer`).
//! [`Backend::apply`] hands it a batch and waits; the thread takes every
//! batch that is waiting and writes them in arrival order: a batch that
//! must be atomic with `Tree::apply_batch` (one tree) or one sled
//! transaction (several), consecutive such batches together; a single op,
//! or ops that may land one by one ([`Backend::apply_unflushed_in_order`]),
//! with plain inserts and removes, which sled makes cheaper (`write_loop`
//! says why). Either way each write is atomic, also across a crash. Writes
//! acknowledged unflushed ([`Backend::apply_unflushed`]: history) are
//! answered at once and reach the disk with the next flush, at most 500 ms
//! later (sled's own interval); the durable ones are answered after one
//! flush for the whole group (group commit), because a write the caller
//! was told succeeded must survive a SIGKILL. sled's calls block, so writes
//! and flushes never run on a tokio thread, and a group costs two thread
//! hand-offs whatever its size (the blocking pool and a shared flush had
//! cost several wake-ups per write). Point reads of a few keys (and the
//! first entries of a scan) run on the calling thread, longer reads in
//! `block_in_place` (see `SledBackend::read` for why).

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use sled::Transactional as _;
use sluice_store::writer::{WriteRequest, WriterThread, take_group};
use sluice_store::{
    Backend, BackendError, INLINE_READ_KEYS, KeyRange, Op, PendingWrite, ReadOnly, Table,
    on_multi_thread_runtime, scan_range,
};

/// sled's files in a database directory; one of them present means the
/// directory is a sled database (or was meant to be one).
const SLED_FILES: [&str; 2] = ["conf", "db"];

/// Written in a directory before sled makes its database there, removed
/// once the database holds a store: while it is there, an empty database
/// is a new one (a first start, or one cut short), and once it is gone an
/// empty database is damage ([`Backend::may_create`]).
const NEW_STORE_FILE: &str = "sluice-new-store";

/// Most ops one sled batch of merged requests takes: sled applies a batch
/// with its global lock held, which every read waits for (reads run on
/// tokio workers), so merging is bounded; a larger request still goes
/// whole, being atomic.
const MERGED_OPS: usize = 8 * 1024;

/// A sled database as a [`Backend`]. Cheap to clone; the database closes
/// (and flushes) when the last clone is dropped, after the writer thread
/// answered every write it had, and the directory can be opened again
/// once that drop returns.
#[derive(Clone)]
pub struct SledBackend {
    inner: Arc<Inner>,
}

// Fields drop in this order: our tree handles, then the writer (joining
// it drops its `Db`), then `_unlocked` waits for sled to let go.
struct Inner {
    path: PathBuf,
    /// One tree per table, indexed by [`Table::index`].
    trees: Vec<sled::Tree>,
    /// [`NEW_STORE_FILE`] is in the directory: a store may be created.
    new_store: std::sync::atomic::AtomicBool,
    /// Held by snapshots: the writer writes nothing while one is.
    pause: Arc<Pause>,
    writer: WriterThread,
    _unlocked: WaitForUnlock,
}

/// Dropped after every handle on the database: sled flushes as the last
/// one goes, handing the buffer write to its I/O threads, which hold the
/// database's file, and its lock, until they finish (which can be just
/// after the last handle is gone). Waiting for the lock here (a bounded
/// time) means the directory can be opened again once the backend's drop
/// returns.
struct WaitForUnlock(PathBuf);

impl Drop for WaitForUnlock {
    fn drop(&mut self) {
        let Ok(f) = std::fs::File::open(&self.0) else {
            return;
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Err(std::fs::TryLockError::WouldBlock) = f.try_lock() {
            if std::time::Instant::now() > deadline {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let _ = f.unlock();
    }
}

/// What keeps the writer still while a snapshot is read: sled 0.34 has
/// no snapshots of its own, so a [`Backend::snapshot`] holds the writer
/// back (writes wait in its queue) until the view is dropped, and reads
/// the trees as they are.
#[derive(Default)]
struct Pause {
    state: std::sync::Mutex<PauseState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct PauseState {
    /// Snapshots held.
    held: usize,
    /// The writer is writing a group (and flushing it).
    writing: bool,
}

impl Pause {
    fn lock(&self) -> std::sync::MutexGuard<'_, PauseState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer, before a group: waits while a snapshot is held.
    fn start_writing(&self) {
        let mut state = self.lock();
        while state.held > 0 {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.writing = true;
    }

    fn done_writing(&self) {
        self.lock().writing = false;
        self.changed.notify_all();
    }

    /// Holds the writer back once the group it is writing (if any) is
    /// written; blocks until then.
    fn hold(self: &Arc<Self>) -> PauseGuard {
        let mut state = self.lock();
        state.held += 1;
        while state.writing {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        PauseGuard(Arc::clone(self))
    }
}

/// A snapshot's hold on the writer, let go when dropped.
struct PauseGuard(Arc<Pause>);

impl Drop for PauseGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.held = state.held.saturating_sub(1);
        drop(state);
        self.0.changed.notify_all();
    }
}

/// The writer thread: takes every batch that is waiting, applies them
/// (see below for how), answers the unflushed ones, then flushes once and
/// answers the durable ones. Concurrent durable writers share one flush
/// (group commit), and no write, flush or wake-up of a waiting writer runs
/// on a tokio worker or the blocking pool.
fn write_loop(
    db: &sled::Db,
    trees: &[sled::Tree],
    disk: &mut Disk,
    pause: &Pause,
    requests: &mpsc::Receiver<WriteRequest>,
) {
    while let Ok(first) = requests.recv() {
        pause.start_writing();
        write_group(db, trees, disk, take_group(first, requests));
        pause.done_writing();
    }
}

/// What sled's flush leaves undone: it writes its log out with
/// `sync_file_range`, which neither keeps the file's size nor empties the
/// disk's write cache, and writes values too large for the log (`blobs/`)
/// with no sync at all. So before a durable write is acknowledged the
/// writer flushes, syncs every blob file that is new or has grown since it
/// last looked (sled's own threads write blobs too, and a file may be
/// half written when listed: it is synced again once it is whole) and
/// their folder, and then the log file: what was acknowledged is on disk,
/// blobs and log alike (power loss, not only a killed process; sled may
/// write its log out before the blobs it names, which it did before too,
/// but only for writes not yet acknowledged). The folder
/// is listed at every durable write: its cost grows with the number of
/// large values stored (each blob is one value or node over 128 KiB).
struct Disk {
    log: std::fs::File,
    blobs: PathBuf,
    /// Each blob file synced, by name, with its length then. Empty at
    /// start, so blobs a crash left unsynced are synced once.
    synced: std::collections::HashMap<std::ffi::OsString, u64>,
}

impl Disk {
    fn open(dir: &Path) -> std::io::Result<Disk> {
        Ok(Disk {
            log: std::fs::File::open(dir.join("db"))?,
            blobs: dir.join("blobs"),
            synced: std::collections::HashMap::new(),
        })
    }

    /// The blob files new or grown since the last call, their folder,
    /// then the log (after sled's flush wrote it out).
    fn sync(&mut self) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => Some(entries),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut present = std::collections::HashSet::new();
        let mut changed = false;
        for entry in entries.into_iter().flatten() {
            let entry = entry?;
            let name = entry.file_name();
            let len = match entry.metadata() {
                Ok(m) => m.len(),
                // Collected by sled meanwhile: nothing to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            present.insert(name.clone());
            if self.synced.get(&name) == Some(&len) {
                continue;
            }
            match std::fs::File::open(entry.path()) {
                Ok(f) => f.sync_data()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            self.synced.insert(name, len);
            changed = true;
        }
        // Forget the ones sled deleted (a name is not used again).
        self.synced.retain(|name, _| present.contains(name));
        if changed {
            sync_dir(&self.blobs)?;
        }
        self.log.sync_data()
    }
}

/// Makes the entries of `dir` (files created or removed in it) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes one group and answers its requests (see [`write_loop`]).
fn write_group(db: &sled::Db, trees: &[sled::Tree], disk: &mut Disk, group: Vec<WriteRequest>) {
    // sled writes each batch or transaction with its global write
    // lock held (it waits for every reader and holds new ones, on
    // tokio workers, back) and writes out its log buffer twice (each
    // a disk write, handed to sled's I/O threads); a single insert or
    // remove does neither. So requests that need no batch (one op, or
    // ops that may land one by one) are written op by op, and each run
    // of consecutive atomic ones in one batch (should that fail, each
    // is tried alone, so one bad batch fails alone). Arrival order is
    // kept, so the last write to a key wins.
    let mut results: Vec<Result<(), BackendError>> = Vec::with_capacity(group.len());
    let mut i = 0;
    while i < group.len() {
        let batched = |r: &WriteRequest| r.atomic && r.ops.len() > 1;
        if !batched(&group[i]) {
            results.push(group[i].ops.iter().try_for_each(|op| apply_one(trees, op)));
            i += 1;
            continue;
        }
        let start = i;
        let mut ops = 0;
        while i < group.len()
            && batched(&group[i])
            && (i == start || ops + group[i].ops.len() <= MERGED_OPS)
        {
            ops += group[i].ops.len();
            i += 1;
        }
        let run = &group[start..i];
        match apply_batch(trees, run.iter().flat_map(|r| &r.ops)) {
            Ok(()) => results.extend(run.iter().map(|_| Ok(()))),
            Err(e) if run.len() == 1 => results.push(Err(e)),
            Err(_) => results.extend(run.iter().map(|r| apply_batch(trees, &r.ops))),
        }
    }
    // Writes acknowledged unflushed (and failed ones) are answered now,
    // visible as they are; the durable ones after the flush.
    let mut durable = Vec::new();
    for (r, result) in group.into_iter().zip(results) {
        if r.durable && result.is_ok() {
            durable.push(r.done);
        } else {
            let _ = r.done.send(result);
        }
    }
    if durable.is_empty() {
        return;
    }
    let flushed = db
        .flush()
        .map(|_| ())
        .map_err(|e| e.to_string())
        .and_then(|()| disk.sync().map_err(|e| e.to_string()))
        .map_err(|e| {
            // Applied (and visible) but not known to be on disk: not
            // acknowledged, which the caller must not read as "absent".
            format!("flushing the database failed: {e}")
        });
    for done in durable {
        let _ = done.send(flushed.clone().map_err(BackendError::Storage));
    }
}

/// Applies one op (atomic on its own, and without sled's global write
/// lock).
fn apply_one(trees: &[sled::Tree], op: &Op) -> Result<(), BackendError> {
    let tree = &trees[op.table().index()];
    match op {
        Op::Put { key, value, .. } => tree.insert(key.as_slice(), value.as_slice()),
        Op::Delete { key, .. } => tree.remove(key.as_slice()),
    }
    .map(|_| ())
    .map_err(storage)
}

/// Applies `ops` atomically: a batch that touches one tree with
/// `Tree::apply_batch`, one that touches several in one sled transaction
/// over exactly those trees. Within a batch the last op on a key wins.
fn apply_batch<'a>(
    trees: &[sled::Tree],
    ops: impl IntoIterator<Item = &'a Op>,
) -> Result<(), BackendError> {
    let mut batches: Vec<Option<sled::Batch>> = vec![None; Table::ALL.len()];
    for op in ops {
        let batch = batches[op.table().index()].get_or_insert_with(Default::default);
        match op {
            Op::Put { key, value, .. } => batch.insert(key.as_slice(), value.as_slice()),
            Op::Delete { key, .. } => batch.remove(key.as_slice()),
        }
    }
    let (trees, batches): (Vec<sled::Tree>, Vec<sled::Batch>) = batches
        .into_iter()
        .enumerate()
        .filter_map(|(i, b)| b.map(|b| (trees[i].clone(), b)))
        .unzip();
    match (trees.as_slice(), batches.as_slice()) {
        ([], _) => Ok(()),
        ([tree], [_]) => {
            let batch = batches.into_iter().next().unwrap_or_default();
            tree.apply_batch(batch).map_err(storage)
        }
        _ => trees
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
            }),
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

/// Whether `dir` or a folder in it (two levels down) holds anything but
/// empty folders.
fn holds_files(dir: &Path) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            return Ok(true);
        }
        for inner in std::fs::read_dir(entry.path())? {
            let inner = inner?;
            if !inner.file_type()?.is_dir() || std::fs::read_dir(inner.path())?.next().is_some() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

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
        let new_store_file = dir.join(NEW_STORE_FILE);
        let new = match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => return Err(fail("it is not a directory".into())),
            Ok(_) => {
                // Empty folders hold nothing: a first start cut short
                // leaves sled's `blobs/` alone, and that is still a new
                // database, not one to refuse.
                let non_empty =
                    holds_files(dir).map_err(|e| fail(format!("cannot list it: {e}")))?;
                let is_sled = SLED_FILES.iter().any(|f| dir.join(f).exists());
                if non_empty && !is_sled && !new_store_file.exists() {
                    return Err(fail(
                        "it is not empty and not a sled database (no `conf` or `db` file); \
                         refusing to write into it"
                            .into(),
                    ));
                }
                !non_empty
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(fail(format!("cannot read it: {e}"))),
        };
        if new {
            // Marked before sled writes anything, so a first start cut
            // short anywhere is still a new database on the next.
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::File::create(&new_store_file)?.sync_all())
                .and_then(|()| sync_dir(dir))
                .map_err(|e| fail(format!("cannot create it: {e}")))?;
        }
        let new_store = new_store_file.exists();
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
        let writer_trees = trees.clone();
        let pause = Arc::new(Pause::default());
        let writer_pause = Arc::clone(&pause);
        // The writer thread holds the `Db`; dropping the backend joins it
        // (see `Inner` for the rest of the close).
        let mut disk = Disk::open(dir).map_err(|e| fail(format!("cannot open its log: {e}")))?;
        if new {
            sync_dir(dir).map_err(|e| fail(format!("cannot sync it: {e}")))?;
        }
        let writer = WriterThread::spawn("sluice-sled-writer", move |rx| {
            write_loop(&db, &writer_trees, &mut disk, &writer_pause, &rx)
        })
        .map_err(|e| fail(format!("cannot start its writer thread: {e}")))?;
        Ok(SledBackend {
            inner: Arc::new(Inner {
                path: dir.to_path_buf(),
                trees,
                new_store: std::sync::atomic::AtomicBool::new(new_store),
                pause,
                writer,
                _unlocked: WaitForUnlock(dir.join("db")),
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

    /// Runs `f` on tokio's blocking pool (long reads on a current-thread
    /// runtime).
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
    fn may_create(&self) -> bool {
        self.inner
            .new_store
            .load(std::sync::atomic::Ordering::Acquire)
    }

    async fn holds_store(&self) -> Result<(), BackendError> {
        use std::sync::atomic::Ordering;
        if !self.inner.new_store.load(Ordering::Acquire) {
            return Ok(());
        }
        let dir = self.inner.path.clone();
        tokio::task::spawn_blocking(move || {
            match std::fs::remove_file(dir.join(NEW_STORE_FILE)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            sync_dir(&dir)
        })
        .await
        .map_err(|e| BackendError::Storage(format!("a database task failed: {e}")))?
        .map_err(|e| {
            BackendError::Storage(format!(
                "cannot remove {NEW_STORE_FILE} from {}: {e}",
                self.inner.path.display()
            ))
        })?;
        self.inner.new_store.store(false, Ordering::Release);
        Ok(())
    }

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
        self.write(ops, true, true).await
    }

    async fn apply_unflushed(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        self.write(ops, false, true).await
    }

    async fn apply_unflushed_in_order(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        self.write(ops, false, false).await
    }

    fn start_unflushed_in_order(&self, ops: Vec<Op>) -> PendingWrite {
        self.inner.writer.submit(ops, false, false)
    }

    /// The trees as they are, the writer held back (writes wait in its
    /// queue) until the snapshot is dropped.
    async fn snapshot(&self) -> Result<Option<Box<dyn Backend>>, BackendError> {
        let pause = Arc::clone(&self.inner.pause);
        let guard = tokio::task::spawn_blocking(move || pause.hold())
            .await
            .map_err(|e| BackendError::Storage(format!("a database task failed: {e}")))?;
        Ok(Some(Box::new(ReadOnly::new(self.clone(), guard))))
    }
}

impl SledBackend {
    /// Hands `ops` to the writer thread and waits for its answer; when
    /// `durable`, the answer comes after the flush that put them on disk;
    /// when `atomic`, all of them are written or none.
    async fn write(&self, ops: Vec<Op>, durable: bool, atomic: bool) -> Result<(), BackendError> {
        self.inner.writer.write(ops, durable, atomic).await
    }
}
