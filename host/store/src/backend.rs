//! The backend port: the few key-value operations the store needs.
//!
//! A backend is an ordered key-value store with named tables, point reads,
//! prefix range scans and one atomic, durable multi-table write. That is
//! small enough for an embedded engine (sled), an in-memory map (tests, dry
//! runs) or, later, a networked database (a Postgres table of
//! `(table, key, value)` rows, FoundationDB subspaces): everything above it —
//! key layout, encryption, record semantics, locking — lives in
//! [`crate::Store`], so every backend behaves the same and passes the same
//! suite (`testsuite`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

/// The tables of the store. Each is an ordered map of byte keys to byte
/// values; the key layouts are documented in [`crate::keys`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Store-wide metadata: the format marker.
    Meta,
    /// One row per environment: name, secret-key hash, wrapped data keys.
    Environments,
    /// Integrations (provider configs) per environment.
    Integrations,
    /// Connections per environment, credentials encrypted.
    Connections,
    /// Environment variables: one encrypted row per environment.
    Variables,
    /// Record bodies by `(scope, external id)`.
    Records,
    /// `(scope, updated_at, internal id) → external id`: the paging order.
    RecordIndex,
    /// `(scope, external id) → (sync id, job id)`: the small per-row stamps
    /// `track_deletes` reads, kept apart so an unchanged record rewrites only
    /// its stamp.
    RecordStamps,
    /// `scope → number of non-deleted records`, kept in step with every write.
    RecordCounts,
    /// Typed documents of the server's own state.
    Docs,
    /// Content-addressed blobs (component files), by SHA-256.
    Blobs,
    /// `(scope, sync id, job id, n) → external ids`: the records a sync
    /// job's chunk saved unchanged, whose stamps are written only if the
    /// job's `track_deletes` needs them (see `crate::records`).
    RecordSeen,
}

impl Table {
    /// Every table, in a fixed order (a backend may index its tables by
    /// [`Table::index`]).
    pub const ALL: [Table; 12] = [
        Table::Meta,
        Table::Environments,
        Table::Integrations,
        Table::Connections,
        Table::Variables,
        Table::Records,
        Table::RecordIndex,
        Table::RecordStamps,
        Table::RecordCounts,
        Table::Docs,
        Table::Blobs,
        Table::RecordSeen,
    ];

    /// A stable name: a backend's table, tree or subspace name. Never
    /// rename one: stored data is found by it.
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Environments => "environments",
            Table::Integrations => "integrations",
            Table::Connections => "connections",
            Table::Variables => "variables",
            Table::Records => "records",
            Table::RecordIndex => "record_index",
            Table::RecordStamps => "record_stamps",
            Table::RecordCounts => "record_counts",
            Table::Docs => "docs",
            Table::Blobs => "blobs",
            Table::RecordSeen => "record_seen",
        }
    }

    /// The position of this table in [`Table::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One write of an [`Backend::apply`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: Vec<u8>,
    },
}

impl Op {
    pub fn table(&self) -> Table {
        match self {
            Op::Put { table, .. } | Op::Delete { table, .. } => *table,
        }
    }
}

/// A backend failed. The store never retries or papers over these: the
/// operation that got one did not happen (for [`Backend::apply`]: none of
/// its ops happened) — but for a networked backend whose connection broke
/// while a commit was under way and stayed broken while it retried, which
/// cannot know whether the commit landed and says so in the error.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The storage could not be opened. Nothing was created or deleted.
    #[error("cannot open the database at {location}: {cause}")]
    Open { location: String, cause: String },
    /// A read or write failed.
    #[error("database error: {0}")]
    Storage(String),
    /// Another server has the store open (a networked store takes one
    /// server at a time). Nothing was created or deleted.
    #[error("cannot open the database at {location}: {cause}")]
    Busy { location: String, cause: String },
}

/// The most keys (or scanned entries) a backend's read may have to run on
/// the calling thread: a point read of a few keys takes microseconds from
/// a page cache, less than handing the work to another thread (see the
/// backends' `read`).
pub const INLINE_READ_KEYS: usize = 16;

/// Whether this runs on a multi-threaded tokio runtime (where
/// `block_in_place` is allowed).
pub fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// The key-value port every storage backend implements.
///
/// Keys are compared as bytes; a backend keeps each table in key order.
/// Writes happen only through [`Backend::apply`], which is atomic across
/// tables and durable when it returns, so the store can keep its invariants
/// (a record, its index entry, its stamp and its model's count change
/// together) with nothing but that one call.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The value of `key`, `None` when it is missing.
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;

    /// The values of `keys`, in the same order, `None` for a missing key.
    async fn get_many(
        &self,
        table: Table,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError>;

    /// Entries whose key starts with `prefix`, in key order (descending when
    /// `reverse`), strictly after `after` in that direction when given (so
    /// strictly before it when `reverse`), at most `limit`.
    /// [`scan_range`] computes the key range both directions mean.
    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError>;

    /// [`Backend::scan`] with a test on each entry: an entry `keep`
    /// refuses still counts against `limit` and is returned with its key
    /// (so a caller can go on after it), but without its value, which a
    /// backend that can look at values in place never copies out. For
    /// scans that read many large values and keep few (a text search over
    /// stored logs).
    async fn scan_where(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        reverse: bool,
        keep: &mut (dyn for<'v> FnMut(&'v [u8]) -> bool + Send),
    ) -> Result<Vec<(Vec<u8>, Option<Vec<u8>>)>, BackendError> {
        let entries = self.scan(table, prefix, after, limit, reverse).await?;
        Ok(entries
            .into_iter()
            .map(|(k, v)| {
                let kept = keep(&v);
                (k, kept.then_some(v))
            })
            .collect())
    }

    /// Applies every op atomically and durably: when this returns `Ok`, all
    /// ops are visible and survive a crash (SIGKILL, power loss as far as the
    /// disk's fsync holds). An `Err` from the write itself means none of
    /// them happened; one from making it durable (a failed flush or
    /// commit acknowledgement) means they may have happened: the store
    /// treats an error as "not acknowledged", never as "certainly absent".
    /// Later ops on the same key win over earlier ones.
    async fn apply(&self, ops: Vec<Op>) -> Result<(), BackendError>;

    /// Like [`Backend::apply`] but acknowledged before the write is durable
    /// (it becomes so with the next flush, within the backend's interval):
    /// for what may be lost in a crash, such as execution history.
    async fn apply_unflushed(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        self.apply(ops).await
    }

    /// Like [`Backend::apply_unflushed`], but each op is atomic only on
    /// its own: the ops are applied in order, and a crash (or an `Err`)
    /// may leave any prefix of them, never a later op without the earlier
    /// ones. For writes whose parts stand alone, such as an execution's
    /// log and its history entry. A backend whose atomic batches cost
    /// more than single writes (sled) writes these one by one.
    async fn apply_unflushed_in_order(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        self.apply_unflushed(ops).await
    }

    /// [`Backend::apply_unflushed_in_order`] started now and awaited
    /// later: the write is under way when this returns, whether or not
    /// the returned future is ever polled (it only says how the write
    /// went). For writes whose caller has more to do meanwhile and keeps
    /// whatever depends on them waiting itself (the store holds a records
    /// scope's lock until its stamps are written).
    fn start_unflushed_in_order(&self, ops: Vec<Op>) -> PendingWrite;

    /// Resolves, with the reason, once another process has taken this
    /// store over (a networked store held by one server at a time, whose
    /// hold this process lost): this backend writes nothing more, and what
    /// it reads is no longer its own. Never, for a store no other process
    /// can open meanwhile (the embedded ones).
    async fn taken_over(&self) -> String {
        std::future::pending().await
    }

    /// Whether a new store may be created here when no store's format
    /// marker is found: true for a database this process made new (or
    /// whose first store was never finished). A backend whose database
    /// can come back empty while its files stay (sled recovers a damaged
    /// log as an empty database) says no once a store was made in it, so
    /// the damage is refused instead of a new store being written over it.
    fn may_create(&self) -> bool {
        true
    }

    /// Told once the database holds a store (its format marker is
    /// written and durable): from now on an empty database is damage, not
    /// a first start (see [`Backend::may_create`]).
    async fn holds_store(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// A read-only view of the whole store as it is now, which later
    /// writes do not change while it is held (an online backup reads
    /// one): a consistent copy of every table at one moment. `None` when
    /// this backend cannot take one (a networked database, backed up by
    /// its own tools). A backend may hold its writes back while the view
    /// is held (sled does); drop it as soon as it is read.
    async fn snapshot(&self) -> Result<Option<Box<dyn Backend>>, BackendError> {
        Ok(None)
    }
}

/// A backend's reads, its writes refused; held with `guard` (what keeps
/// the view still: a paused writer), dropped with it. What
/// [`Backend::snapshot`] returns for a backend whose own reads see one
/// moment while the guard is held.
pub struct ReadOnly<B, G = ()> {
    // Dropped first: a writer it holds back is let go before the backend
    // (perhaps its last handle, whose drop joins that writer) goes.
    _guard: G,
    inner: B,
}

impl<B: Backend, G: Send + Sync + 'static> ReadOnly<B, G> {
    pub fn new(inner: B, guard: G) -> Self {
        Self {
            inner,
            _guard: guard,
        }
    }
}

fn read_only() -> BackendError {
    BackendError::Storage("a snapshot of the store is read only".into())
}

#[async_trait::async_trait]
impl<B: Backend, G: Send + Sync + 'static> Backend for ReadOnly<B, G> {
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.inner.get(table, key).await
    }

    async fn get_many(
        &self,
        table: Table,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        self.inner.get_many(table, keys).await
    }

    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        self.inner.scan(table, prefix, after, limit, reverse).await
    }

    async fn apply(&self, _ops: Vec<Op>) -> Result<(), BackendError> {
        Err(read_only())
    }

    fn start_unflushed_in_order(&self, _ops: Vec<Op>) -> PendingWrite {
        Box::pin(std::future::ready(Err(read_only())))
    }
}

/// A write already handed to a backend: resolves when it is applied.
pub type PendingWrite =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BackendError>> + Send>>;

/// The smallest key greater than every key that starts with `prefix`, or
/// `None` when no such key exists (an empty prefix, or one of `0xff`s).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Lower and upper bounds of a key range, as ordered maps take them.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The key range a [`Backend::scan`] covers: `(lower, upper)` bounds for an
/// ordered map's range query, iterated forwards or, for `reverse`,
/// backwards. `None` when the range is empty. Shared by the backends so they
/// agree on the edge cases (an `after` outside the prefix, a prefix of
/// `0xff`s).
pub fn scan_range(prefix: &[u8], after: Option<&[u8]>, reverse: bool) -> Option<KeyRange> {
    let start = Bound::Included(prefix.to_vec());
    let end = match prefix_end(prefix) {
        Some(e) => Bound::Excluded(e),
        None => Bound::Unbounded,
    };
    let Some(after) = after else {
        return Some((start, end));
    };
    let below_end = match &end {
        Bound::Excluded(e) => after < e.as_slice(),
        _ => true,
    };
    if reverse {
        // Strictly before `after`, within the prefix.
        if after <= prefix {
            None
        } else if below_end {
            Some((start, Bound::Excluded(after.to_vec())))
        } else {
            Some((start, end))
        }
    } else if after < prefix {
        Some((start, end))
    } else if below_end {
        Some((Bound::Excluded(after.to_vec()), end))
    } else {
        None
    }
}

type Tables = [BTreeMap<Vec<u8>, Vec<u8>>; Table::ALL.len()];

/// A backend held in memory: one `BTreeMap` per table behind one lock, so
/// `apply` is atomic across tables. Durable only as long as the process.
/// Cloning shares the data (a "reopen" in tests is a new `Store` over a
/// clone).
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    tables: Arc<RwLock<Tables>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        // A panic while holding the lock cannot leave a half-applied batch:
        // `apply` checks nothing after it starts writing.
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.read()[table.index()].get(key).cloned())
    }

    async fn get_many(
        &self,
        table: Table,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let tables = self.read();
        let map = &tables[table.index()];
        Ok(keys.iter().map(|k| map.get(k).cloned()).collect())
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
        let tables = self.read();
        let iter = tables[table.index()].range(range);
        let clone = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        Ok(if reverse {
            iter.rev().take(limit).map(clone).collect()
        } else {
            iter.take(limit).map(clone).collect()
        })
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        self.apply_now(ops);
        Ok(())
    }

    async fn snapshot(&self) -> Result<Option<Box<dyn Backend>>, BackendError> {
        let copy = MemoryBackend {
            tables: Arc::new(RwLock::new(self.read().clone())),
        };
        Ok(Some(Box::new(ReadOnly::new(copy, ()))))
    }

    fn start_unflushed_in_order(&self, ops: Vec<Op>) -> PendingWrite {
        self.apply_now(ops);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl MemoryBackend {
    fn apply_now(&self, ops: Vec<Op>) {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        for op in ops {
            match op {
                Op::Put { table, key, value } => {
                    tables[table.index()].insert(key, value);
                }
                Op::Delete { table, key } => {
                    tables[table.index()].remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8]) -> Op {
        Op::Put {
            table: Table::Docs,
            key: key.to_vec(),
            value: key.to_vec(),
        }
    }

    async fn keys(
        b: &MemoryBackend,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Vec<Vec<u8>> {
        b.scan(Table::Docs, prefix, after, limit, reverse)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn prefix_end_skips_trailing_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[tokio::test]
    async fn scan_respects_prefix_after_limit_and_direction() {
        let b = MemoryBackend::new();
        b.apply(
            [&b"a"[..], b"b1", b"b2", b"b3", &[b'b', 0xff], b"c"]
                .iter()
                .map(|k| put(k))
                .collect(),
        )
        .await
        .unwrap();
        let all_b: Vec<Vec<u8>> = vec![
            b"b1".to_vec(),
            b"b2".to_vec(),
            b"b3".to_vec(),
            vec![b'b', 0xff],
        ];
        assert_eq!(keys(&b, b"b", None, 10, false).await, all_b);
        assert_eq!(keys(&b, b"b", Some(b"b1"), 2, false).await, all_b[1..3]);
        assert_eq!(keys(&b, b"b", Some(b"a"), 1, false).await, all_b[..1]);
        assert!(keys(&b, b"b", Some(b"c"), 10, false).await.is_empty());
        let mut rev = all_b.clone();
        rev.reverse();
        assert_eq!(keys(&b, b"b", None, 10, true).await, rev);
        assert_eq!(keys(&b, b"b", Some(b"b3"), 10, true).await, rev[2..]);
        assert_eq!(keys(&b, b"b", Some(b"z"), 1, true).await, rev[..1]);
        assert!(keys(&b, b"b", Some(b"b"), 10, true).await.is_empty());
        assert_eq!(keys(&b, b"", None, 10, false).await.len(), 6);
        assert_eq!(
            keys(&b, &[b'b', 0xff], None, 10, false).await,
            vec![vec![b'b', 0xff]]
        );
    }

    #[tokio::test]
    async fn later_ops_on_a_key_win() {
        let b = MemoryBackend::new();
        b.apply(vec![
            put(b"k"),
            Op::Delete {
                table: Table::Docs,
                key: b"k".to_vec(),
            },
            put(b"j"),
        ])
        .await
        .unwrap();
        assert_eq!(b.get(Table::Docs, b"k").await.unwrap(), None);
        assert_eq!(
            b.get_many(Table::Docs, &[b"j".to_vec(), b"k".to_vec()])
                .await
                .unwrap(),
            vec![Some(b"j".to_vec()), None]
        );
    }
}
