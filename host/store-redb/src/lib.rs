//! A backend of `sluice-store` on [redb](https://docs.rs/redb/4): one file,
//! one redb table per [`Table`], copy-on-write B-trees with checksums.
//!
//! # The file
//!
//! [`RedbBackend::open`] takes the path of one file (the server keeps it at
//! `<data>/store.redb`). Inside, each [`Table`] is the redb table named
//! [`Table::name`], of byte keys to byte values; the keys and values are
//! `sluice-store`'s (see `sluice_store::keys`).
//!
//! # Durability, atomicity and group commit
//!
//! One thread owns the writing side. [`Backend::apply`] hands it a batch
//! and waits; the thread takes every batch that is waiting, applies them in
//! one write transaction and commits it, with [`Durability::Immediate`]
//! (redb's commit fsyncs before it returns) when any of them asked to be
//! durable, and answers them all. A batch is atomic (all of a transaction
//! commits or none does, also across a crash), and concurrent durable
//! writers share one fsync. A write acknowledged unflushed
//! ([`Backend::apply_unflushed`]: history) reaches the disk with the next
//! durable commit, or at most 500 ms later by an empty durable commit.
//! Reads run in their own read transaction (a
//! snapshot: they never wait for a writer, and never for an fsync): point
//! reads of a few keys on the calling thread, larger ones in
//! `block_in_place` or on the blocking pool (see `RedbBackend::read`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase as _, TableDefinition};
use sluice_store::writer::{WriteRequest, WriterThread, take_group};
use sluice_store::{
    Backend, BackendError, INLINE_READ_KEYS, KeyRange, Op, PendingWrite, Table,
    on_multi_thread_runtime, scan_range,
};

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

fn definition(table: Table) -> Def {
    TableDefinition::new(table.name())
}

/// redb's in-process page cache: it only grows with the data read.
const CACHE_BYTES: usize = 256 << 20;

/// A redb database as a [`Backend`]. Cheap to clone; the database closes
/// when the last clone is dropped (after the writer finished what it had).
#[derive(Clone)]
pub struct RedbBackend {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: Arc<Database>,
    writer: WriterThread,
}

impl std::fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBackend")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn storage(e: impl std::fmt::Display) -> BackendError {
    BackendError::Storage(e.to_string())
}

/// Creates a new, empty database at `path` whole or not at all: made
/// beside it (`<name>.creating`), flushed, then renamed into place, so a
/// first start killed midway leaves no half-written file that every later
/// start would have to refuse (a file that is not a database is never
/// overwritten), only the stray to replace. The file is its owner's alone
/// (mode 0600) from the start: it holds the whole store.
fn create_new(path: &Path) -> Result<(), String> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create its directory: {e}"))?;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".creating");
    let creating = path.with_file_name(name);
    match std::fs::remove_file(&creating) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove {}: {e}", creating.display())),
    }
    let file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&creating)
            .map_err(|e| format!("cannot create {}: {e}", creating.display()))?
    };
    let db = redb::backends::FileBackend::new(file)
        .and_then(|backend| Database::builder().create_with_backend(backend))
        .map_err(|e| open_cause(&e))?;
    create_tables(&db)?;
    drop(db);
    // redb syncs its commits; the rename is made durable with the folder.
    std::fs::rename(&creating, path).map_err(|e| format!("cannot move it into place: {e}"))?;
    let dir = parent.unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync its directory: {e}"))
}

/// Opens (creating where missing) every table, in one commit.
fn create_tables(db: &Database) -> Result<(), String> {
    let txn = db
        .begin_write()
        .map_err(|e| format!("cannot write to it: {e}"))?;
    for table in Table::ALL {
        txn.open_table(definition(table))
            .map_err(|e| format!("cannot open its table `{}`: {e}", table.name()))?;
    }
    txn.commit().map_err(|e| format!("cannot write to it: {e}"))
}

/// Why redb could not open a file, in words an operator can act on.
fn open_cause(e: &redb::DatabaseError) -> String {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            "it is already open (redb holds a lock on it: another sluice process, or another \
             handle in this one)"
                .into()
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => {
            format!("the database is unreadable (damaged, or not a redb file): {why}")
        }
        other => format!("redb cannot open it: {other}"),
    }
}

/// Whether a process has the database file at `path` open (redb locks
/// it): asked by opening it to read, which redb refuses while another
/// handle has it (in this process or another), and let go at once. A
/// missing file is not in use, nor is one no one has open that redb
/// cannot read (damaged, or a copy a crash cut short: redb takes its
/// lock before it reads the file). Meant for a file nothing is about to
/// open (an old backup): an open made at the very moment of the question
/// is refused as one made while it is in use.
pub fn in_use(path: &Path) -> Result<bool, BackendError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(BackendError::Open {
                location: path.display().to_string(),
                cause: format!("cannot read it: {e}"),
            });
        }
    };
    // redb may panic on a damaged file (see `RedbBackend::open`).
    let opened = std::panic::catch_unwind(|| {
        redb::backends::FileBackend::new(file)
            .and_then(|backend| Database::builder().open_read_only_with_backend(backend))
    });
    Ok(matches!(
        opened,
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen))
    ))
}

impl RedbBackend {
    /// Opens the database file at `path`, creating it (and its parent
    /// directory) when it does not exist. A path that is a directory, or a
    /// file redb cannot read, is refused with an error naming the file and
    /// the cause; nothing is deleted or recreated. After a crash, redb
    /// checks and repairs the file's allocation state on open; committed
    /// transactions are kept.
    pub fn open(path: &Path) -> Result<RedbBackend, BackendError> {
        let fail = |cause: String| BackendError::Open {
            location: path.display().to_string(),
            cause,
        };
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => return Err(fail("it is a directory, not a redb file".into())),
            Ok(m) if m.len() == 0 => {
                return Err(fail(
                    "the file is empty: it holds no data, but it is not a redb database; refusing to write into it (delete it to start afresh)".into(),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_new(path).map_err(fail)?;
            }
            Err(e) => return Err(fail(format!("cannot read it: {e}"))),
        }
        // redb reports most damage as errors but panics on some (an
        // unreachable branch in a damaged B-tree page): either way the
        // database is refused, named, not recreated.
        let db = std::panic::catch_unwind(|| {
            Database::builder().set_cache_size(CACHE_BYTES).create(path)
        })
        .map_err(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "redb panicked".into());
            fail(format!(
                "the database is unreadable (damaged): {why}; restore it from a backup"
            ))
        })?
        .map_err(|e| fail(open_cause(&e)))?;
        // Every table exists from the start (a file of an older sluice may
        // lack a newer one), so reads never meet a missing one.
        create_tables(&db).map_err(fail)?;
        let db = Arc::new(db);
        let writer_db = Arc::clone(&db);
        let writer =
            WriterThread::spawn("sluice-redb-writer", move |rx| write_loop(&writer_db, &rx))
                .map_err(|e| fail(format!("cannot start its writer thread: {e}")))?;
        Ok(RedbBackend {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                db,
                writer,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs a read of up to `keys` entries in a read transaction of its
    /// own. A point read of at most [`INLINE_READ_KEYS`] keys runs on the
    /// calling thread: from redb's cache it takes microseconds, and a cold
    /// one is a few page reads of a B-tree, while handing the worker's
    /// core to another thread (`block_in_place`) or the read to the
    /// blocking pool costs more than the read (accepting a webhook, three
    /// point reads and a write: 8,100/s with `block_in_place`, 8,900/s on
    /// the blocking pool, 11,500/s inline). Larger reads run in
    /// `block_in_place` on a multi-threaded runtime (the worker's other
    /// tasks move to another thread first), on the blocking pool
    /// otherwise. No read waits for a write or an fsync: those are the
    /// writer thread's.
    async fn read<T: Send + 'static>(
        &self,
        keys: usize,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let db = Arc::clone(&self.inner.db);
        let run = move || {
            let txn = db.begin_read().map_err(storage)?;
            f(&txn)
        };
        if keys <= INLINE_READ_KEYS {
            return run();
        }
        if on_multi_thread_runtime() {
            return tokio::task::block_in_place(run);
        }
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|e| BackendError::Storage(format!("a database task failed: {e}")))?
    }

    /// Up to `limit` entries of `range` (backwards when `reverse`), each key
    /// with what `visit` makes of the entry, looked at in place. The first
    /// entries are read on this thread, as a point read; the rest of a
    /// longer scan, in the same snapshot, in `block_in_place`. On a
    /// current-thread runtime the entries are copied out on the blocking
    /// pool first.
    async fn scan_visit<T: Send + 'static>(
        &self,
        table: Table,
        range: KeyRange,
        limit: usize,
        reverse: bool,
        visit: &mut (dyn for<'v> FnMut(&'v [u8], &'v [u8]) -> T + Send),
    ) -> Result<Vec<(Vec<u8>, T)>, BackendError> {
        if !on_multi_thread_runtime() {
            let entries = self
                .read(usize::MAX, move |txn| {
                    let t = txn.open_table(definition(table)).map_err(storage)?;
                    let mut out = Vec::new();
                    pull(&t, &range, reverse, limit, &mut out, &mut |_, v| v.to_vec())?;
                    Ok(out)
                })
                .await?;
            return Ok(entries
                .into_iter()
                .map(|(k, v)| {
                    let t = visit(&k, &v);
                    (k, t)
                })
                .collect());
        }
        let txn = self.inner.db.begin_read().map_err(storage)?;
        let t = txn.open_table(definition(table)).map_err(storage)?;
        let mut out = Vec::new();
        pull(
            &t,
            &range,
            reverse,
            limit.min(INLINE_READ_KEYS),
            &mut out,
            visit,
        )?;
        if let Some((last, _)) = out
            .last()
            .filter(|_| out.len() < limit && out.len() == INLINE_READ_KEYS)
        {
            let after = std::ops::Bound::Excluded(last.clone());
            let rest: KeyRange = if reverse {
                (range.0, after)
            } else {
                (after, range.1)
            };
            tokio::task::block_in_place(|| {
                pull(
                    &t,
                    &rest,
                    reverse,
                    limit - INLINE_READ_KEYS,
                    &mut out,
                    visit,
                )
            })?;
        }
        Ok(out)
    }

    async fn write(&self, ops: Vec<Op>, durable: bool) -> Result<(), BackendError> {
        // One transaction is atomic whatever was asked.
        self.inner.writer.write(ops, durable, true).await
    }
}

/// How long a write acknowledged unflushed may stay off the disk: past
/// this, the writer commits durably on its own (sled flushes every 500 ms
/// too), so a crash loses at most that much of such writes.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// The writer thread: one transaction per group of waiting batches.
fn write_loop(db: &Database, requests: &mpsc::Receiver<WriteRequest>) {
    // When the first write not yet on disk was committed.
    let mut unflushed_since: Option<Instant> = None;
    loop {
        let first = match unflushed_since {
            None => match requests.recv() {
                Ok(r) => r,
                Err(_) => return,
            },
            Some(since) => {
                let left = FLUSH_EVERY.saturating_sub(since.elapsed());
                match requests.recv_timeout(left) {
                    Ok(r) => r,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // Due: on disk now, or tried again an interval
                        // later (a failing disk does not spin the writer).
                        unflushed_since = if commit(db, &[], true).is_ok() {
                            None
                        } else {
                            Some(Instant::now())
                        };
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        let _ = commit(db, &[], true);
                        return;
                    }
                }
            }
        };
        let group = take_group(first, requests);
        // A group is made durable when one of its writes must be, or when
        // writes acknowledged unflushed are due: a steady stream of
        // unflushed writes never leaves the queue empty for the timeout.
        let overdue = unflushed_since.is_some_and(|since| since.elapsed() >= FLUSH_EVERY);
        let durable = overdue || group.iter().any(|r| r.durable);
        let result = commit(db, &group, durable);
        match (&result, durable) {
            (Ok(()), true) => unflushed_since = None,
            (Ok(()), false) => {
                unflushed_since.get_or_insert_with(Instant::now);
            }
            (Err(_), _) => {}
        }
        if result.is_err() && group.len() > 1 {
            // Nothing of the group was written: give each batch its own
            // transaction, so one bad batch fails alone.
            for request in group {
                let alone = commit(db, std::slice::from_ref(&request), request.durable);
                if alone.is_ok() && !request.durable {
                    unflushed_since.get_or_insert_with(Instant::now);
                }
                let _ = request.done.send(alone);
            }
            continue;
        }
        for request in group {
            let _ = request.done.send(result.clone_error());
        }
    }
}

/// Applies every batch of `group` in one transaction and commits it.
fn commit(db: &Database, group: &[WriteRequest], durable: bool) -> Result<(), BackendError> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })
    .map_err(storage)?;
    {
        let mut tables: Vec<Option<redb::Table<'_, &'static [u8], &'static [u8]>>> =
            (0..Table::ALL.len()).map(|_| None).collect();
        for op in group.iter().flat_map(|r| &r.ops) {
            let table = op.table();
            let slot = &mut tables[table.index()];
            if slot.is_none() {
                *slot = Some(txn.open_table(definition(table)).map_err(storage)?);
            }
            let Some(t) = slot.as_mut() else {
                continue;
            };
            match op {
                Op::Put { key, value, .. } => {
                    t.insert(key.as_slice(), value.as_slice())
                        .map_err(storage)?;
                }
                Op::Delete { key, .. } => {
                    t.remove(key.as_slice()).map_err(storage)?;
                }
            }
        }
    }
    txn.commit().map_err(storage)
}

/// A result that can be handed to every batch of a group.
trait CloneError {
    fn clone_error(&self) -> Self;
}

impl CloneError for Result<(), BackendError> {
    fn clone_error(&self) -> Self {
        match self {
            Ok(()) => Ok(()),
            Err(BackendError::Open { location, cause }) => Err(BackendError::Open {
                location: location.clone(),
                cause: cause.clone(),
            }),
            Err(BackendError::Storage(s)) => Err(BackendError::Storage(s.clone())),
            Err(BackendError::Busy { location, cause }) => Err(BackendError::Busy {
                location: location.clone(),
                cause: cause.clone(),
            }),
        }
    }
}

/// Appends up to `n` entries of `range` (backwards when `reverse`), each
/// key with what `visit` makes of the entry.
fn pull<T>(
    t: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    range: &KeyRange,
    reverse: bool,
    n: usize,
    out: &mut Vec<(Vec<u8>, T)>,
    visit: &mut (dyn for<'v> FnMut(&'v [u8], &'v [u8]) -> T + Send),
) -> Result<(), BackendError> {
    type Guard<'a> = redb::AccessGuard<'a, &'static [u8]>;
    let iter = t.range::<&[u8]>(bounds(range)).map_err(storage)?;
    let mut push = |item: Result<(Guard<'_>, Guard<'_>), redb::StorageError>| {
        let (k, v) = item.map_err(storage)?;
        let (k, v) = (k.value(), v.value());
        out.push((k.to_vec(), visit(k, v)));
        Ok::<(), BackendError>(())
    };
    if reverse {
        iter.rev().take(n).try_for_each(&mut push)
    } else {
        iter.take(n).try_for_each(&mut push)
    }
}

fn bounds(range: &KeyRange) -> (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>) {
    (
        range.0.as_ref().map(Vec::as_slice),
        range.1.as_ref().map(Vec::as_slice),
    )
}

/// The value of `key` in `table`, read in `txn`.
fn get_in(
    txn: &redb::ReadTransaction,
    table: Table,
    key: &[u8],
) -> Result<Option<Vec<u8>>, BackendError> {
    let t = txn.open_table(definition(table)).map_err(storage)?;
    Ok(t.get(key).map_err(storage)?.map(|v| v.value().to_vec()))
}

/// The values of `keys` in `table`, read in `txn`.
fn get_many_in(
    txn: &redb::ReadTransaction,
    table: Table,
    keys: &[Vec<u8>],
) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
    let t = txn.open_table(definition(table)).map_err(storage)?;
    keys.iter()
        .map(|k| {
            Ok(t.get(k.as_slice())
                .map_err(storage)?
                .map(|v| v.value().to_vec()))
        })
        .collect()
}

/// A read transaction held for as long as the view is: redb's snapshot
/// of the whole file at one commit, which later commits do not change
/// (pages it reads are not reused meanwhile, so the file may grow while it
/// is held).
struct RedbSnapshot {
    txn: Arc<redb::ReadTransaction>,
}

impl RedbSnapshot {
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let txn = Arc::clone(&self.txn);
        tokio::task::spawn_blocking(move || f(&txn))
            .await
            .map_err(|e| BackendError::Storage(format!("a database task failed: {e}")))?
    }
}

fn read_only() -> BackendError {
    BackendError::Storage("a snapshot of the store is read only".into())
}

#[async_trait::async_trait]
impl Backend for RedbSnapshot {
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let key = key.to_vec();
        self.read(move |txn| get_in(txn, table, &key)).await
    }

    async fn get_many(
        &self,
        table: Table,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let keys = keys.to_vec();
        self.read(move |txn| get_many_in(txn, table, &keys)).await
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
        self.read(move |txn| {
            let t = txn.open_table(definition(table)).map_err(storage)?;
            let mut out = Vec::new();
            pull(&t, &range, reverse, limit, &mut out, &mut |_, v| v.to_vec())?;
            Ok(out)
        })
        .await
    }

    async fn apply(&self, _ops: Vec<Op>) -> Result<(), BackendError> {
        Err(read_only())
    }

    fn start_unflushed_in_order(&self, _ops: Vec<Op>) -> PendingWrite {
        Box::pin(std::future::ready(Err(read_only())))
    }
}

#[async_trait::async_trait]
impl Backend for RedbBackend {
    /// redb's own snapshot: a read transaction, held as long as the view.
    async fn snapshot(&self) -> Result<Option<Box<dyn Backend>>, BackendError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        Ok(Some(Box::new(RedbSnapshot { txn: Arc::new(txn) })))
    }

    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let key = key.to_vec();
        self.read(1, move |txn| get_in(txn, table, &key)).await
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
        self.read(keys.len(), move |txn| get_many_in(txn, table, &keys))
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

    fn start_unflushed_in_order(&self, ops: Vec<Op>) -> PendingWrite {
        // One transaction is atomic whatever was asked.
        self.inner.writer.submit(ops, false, true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A new database file is its owner's alone; whether it is open is
    /// told, here as from another process, and asking lets it go.
    #[test]
    fn a_new_file_is_private_and_its_use_is_told() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        assert!(!in_use(&path).unwrap());
        let db = RedbBackend::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert!(in_use(&path).unwrap());
        drop(db);
        assert!(!in_use(&path).unwrap());
        // Asking held nothing.
        drop(RedbBackend::open(&path).unwrap());
        // Not a database, or one a crash cut short: no one has it open.
        let junk = dir.path().join("junk.redb");
        std::fs::write(&junk, vec![7u8; 8192]).unwrap();
        assert!(!in_use(&junk).unwrap());
    }

    #[test]
    fn a_directory_or_an_empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = RedbBackend::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("it is a directory"), "{err}");
        let empty = dir.path().join("empty.redb");
        std::fs::write(&empty, b"").unwrap();
        let err = RedbBackend::open(&empty).unwrap_err().to_string();
        assert!(err.contains("the file is empty"), "{err}");
        let junk = dir.path().join("junk.redb");
        std::fs::write(&junk, vec![7u8; 8192]).unwrap();
        let err = RedbBackend::open(&junk).unwrap_err().to_string();
        assert!(err.contains("junk.redb"), "{err}");
        assert_eq!(
            std::fs::read(&junk).unwrap(),
            vec![7u8; 8192],
            "left as it was"
        );
    }

    /// A page damaged in the middle of the file (redb panics on it inside
    /// its open): refused with the file named, not a crash of the server.
    #[test]
    fn a_damaged_file_is_refused_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        drop(RedbBackend::open(&path).unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        let end = bytes.len().min(8192 + 20_000);
        bytes[8192..end].fill(0xff);
        std::fs::write(&path, &bytes).unwrap();
        let err = RedbBackend::open(&path).unwrap_err().to_string();
        assert!(err.contains("store.redb"), "{err}");
        assert!(err.contains("unreadable"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
    }

    #[test]
    fn a_second_handle_on_an_open_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let first = RedbBackend::open(&path).unwrap();
        let err = RedbBackend::open(&path).unwrap_err().to_string();
        assert!(err.contains("already open"), "{err}");
        drop(first);
        RedbBackend::open(&path).unwrap();
    }
}
