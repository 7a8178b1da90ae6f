//! A backend of `sluice-store` on PostgreSQL: the store on a database
//! server of its own, which the operator backs up, replicates and moves
//! like any other, instead of files in the data directory.
//!
//! # The database
//!
//! [`PostgresBackend::open`] takes a libpq connection string (a URL such as
//! `postgres://user:password@host:5432/dbname`, or `key=value` pairs) and
//! keeps everything in the first schema of its `search_path` (`public`
//! unless the string's `options` say otherwise, so several stores can
//! share a database, one schema each). Each [`Table`] is a table
//! `sluice_<name>` of `(k bytea PRIMARY KEY, v bytea)`; the keys and values
//! are `sluice-store`'s (see `sluice_store::keys`), and PostgreSQL orders
//! `bytea` byte by byte as the store's scans need. The tables are created
//! on first open.
//!
//! # One server per store
//!
//! The store's locks, caches and schedulers live in the process that opened
//! it, so two processes writing one store would break its invariants. The
//! backend holds a session-level advisory lock for its schema on its
//! writing connection for as long as it is open; a second open waits up to
//! ten seconds for it (a restarted server whose previous process is still
//! being torn down) and is then refused with an error saying so.
//!
//! # Durability, atomicity and group commit
//!
//! One task owns the writing connection. [`Backend::apply`] hands it a
//! batch and waits; the task takes every batch that is waiting and applies
//! them in one transaction, committed with `synchronous_commit` as the
//! server has it (on by default: the commit is on disk, and on synchronous
//! replicas if configured, before it returns) when any of them asked to be
//! durable, and `off` otherwise (history: durable with the server's next
//! WAL flush, within its `wal_writer_delay`). A batch is all or nothing.
//! When a group fails, each of its batches is retried alone, so one batch
//! cannot fail another. A write whose connection broke is retried once on
//! a new connection: every op is an upsert or a delete of a given key, so
//! applying a batch twice leaves what applying it once does, and no later
//! write can have come between (the task writes one group at a time).
//!
//! Reads go over a few connections of their own, round robin, with every
//! statement prepared once per connection; a connection found broken is
//! replaced and the read retried once.
//!
//! The connections' I/O runs on a small runtime of the backend's own, so
//! the backend can be opened and dropped from synchronous code and from
//! any tokio runtime, as the embedded backends can.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use sluice_store::writer::WriteRequest;
use sluice_store::{Backend, BackendError, Op, PendingWrite, Table, scan_range};
use tokio::sync::mpsc;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls, Statement};

/// Connections that serve reads.
const READERS: usize = 4;
/// A writer group stops growing past this many ops.
const GROUP_OPS: usize = 50_000;
/// How long an open waits for another process's lock on the store.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// How long a drop waits for the writer to finish what it was given.
const DRAIN_WAIT: Duration = Duration::from_secs(60);
/// The first half of the advisory lock's key (the second is the schema's
/// hash): "slce".
const LOCK_CLASS: i32 = 0x736c_6365;

/// The PostgreSQL table of a store table.
fn table_name(table: Table) -> String {
    format!("sluice_{}", table.name())
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A PostgreSQL database as a [`Backend`]. Cheap to clone; the connections
/// close when the last clone is dropped, after the writer committed every
/// write it was given.
#[derive(Clone)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

/// The prepared reads of one table on one connection.
struct Reads {
    get: Statement,
    get_many: Statement,
    /// `lower <= k < upper`, ascending.
    forward: Statement,
    /// `lower <= k`, ascending.
    forward_open: Statement,
    /// `lower <= k < upper`, descending.
    backward: Statement,
    /// `lower <= k`, descending.
    backward_open: Statement,
}

/// A reading connection and its statements, by [`Table::index`].
struct Reader {
    client: Client,
    reads: Vec<Reads>,
}

/// The writing connection (which holds the store's lock) and its
/// statements, by [`Table::index`].
struct Writer {
    client: Client,
    upserts: Vec<Statement>,
    deletes: Vec<Statement>,
}

struct Inner {
    /// The database, for messages: hosts, port, database and user, never
    /// the password.
    location: String,
    config: Config,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    readers: Vec<Mutex<Arc<Reader>>>,
    /// Held while a reader slot is being reconnected.
    reconnecting: Vec<tokio::sync::Mutex<()>>,
    next_reader: AtomicUsize,
    writes: Mutex<Option<mpsc::UnboundedSender<WriteRequest>>>,
    /// Answers once the writer task has ended.
    writer_ended: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has written everything
        // queued before; the lock goes with its connection.
        drop(lock(&self.writes).take());
        if let Some(ended) = lock(&self.writer_ended).take() {
            let _ = ended.recv_timeout(DRAIN_WAIT);
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A std mutex's guard, also after a panic elsewhere (the data it guards
/// is replaced whole, never left half-written).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What PostgreSQL said, in one line.
fn said(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let more = s.to_string();
                if !text.contains(&more) {
                    text = format!("{text}: {more}");
                }
                source = s.source();
            }
            text
        }
    }
}

/// Whether `e` means the connection is gone (closed, reset, or ended by
/// the server: a shutdown, a restart, `pg_terminate_backend`), so the
/// same request may succeed on a new one. The client may not know it yet.
fn broken(e: &tokio_postgres::Error, client: &Client) -> bool {
    e.is_closed()
        || client.is_closed()
        || e.code().is_some_and(|c| {
            let c = c.code();
            c.starts_with("08") || c.starts_with("57P")
        })
        || (e.as_db_error().is_none()
            && std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()))
}

fn storage(e: &tokio_postgres::Error) -> BackendError {
    BackendError::Storage(format!("PostgreSQL: {}", said(e)))
}

/// Where a connection string points, without its password.
fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = config
                .get_ports()
                .get(i)
                .or_else(|| config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{}/{db}", hosts.join(","))
}

/// Opens a connection whose I/O runs on the current (the backend's) runtime.
async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away; a
        // broken connection shows as `Client::is_closed`.
        let _ = connection.await;
    });
    Ok(client)
}

async fn prepare_reads(client: &Client) -> Result<Vec<Reads>, tokio_postgres::Error> {
    let mut sql = Vec::new();
    for table in Table::ALL {
        let t = table_name(table);
        sql.push(format!("SELECT v FROM {t} WHERE k = $1"));
        sql.push(format!("SELECT k, v FROM {t} WHERE k = ANY($1)"));
        sql.push(format!(
            "SELECT k, v FROM {t} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3"
        ));
        sql.push(format!(
            "SELECT k, v FROM {t} WHERE k >= $1 ORDER BY k LIMIT $2"
        ));
        sql.push(format!(
            "SELECT k, v FROM {t} WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT $3"
        ));
        sql.push(format!(
            "SELECT k, v FROM {t} WHERE k >= $1 ORDER BY k DESC LIMIT $2"
        ));
    }
    // Sent together: one round trip's wait, not one per statement.
    let mut prepared = try_join_all(sql.iter().map(|s| client.prepare(s)))
        .await?
        .into_iter();
    let mut reads = Vec::new();
    while let (Some(get), Some(get_many), Some(forward), Some(forward_open)) = (
        prepared.next(),
        prepared.next(),
        prepared.next(),
        prepared.next(),
    ) {
        let (Some(backward), Some(backward_open)) = (prepared.next(), prepared.next()) else {
            break;
        };
        reads.push(Reads {
            get,
            get_many,
            forward,
            forward_open,
            backward,
            backward_open,
        });
    }
    Ok(reads)
}

async fn connect_reader(config: &Config) -> Result<Reader, tokio_postgres::Error> {
    let client = connect(config).await?;
    let reads = prepare_reads(&client).await?;
    Ok(Reader { client, reads })
}

/// Why the writing connection could not be had.
#[derive(Debug)]
enum WriterError {
    Postgres(tokio_postgres::Error),
    /// Words for the operator.
    Refused(String),
}

impl From<tokio_postgres::Error> for WriterError {
    fn from(e: tokio_postgres::Error) -> Self {
        WriterError::Postgres(e)
    }
}

impl std::fmt::Display for WriterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriterError::Postgres(e) => f.write_str(&said(e)),
            WriterError::Refused(why) => f.write_str(why),
        }
    }
}

/// Connects the writer: takes the store's lock (waiting up to `wait` for
/// another holder to let go), creates the tables where missing and
/// prepares the writes.
async fn connect_writer(config: &Config, wait: Duration) -> Result<Writer, WriterError> {
    let client = connect(config).await?;
    let schema: Option<String> = client
        .query_one("SELECT current_schema()::text", &[])
        .await?
        .try_get(0)?;
    let Some(schema) = schema else {
        return Err(WriterError::Refused(
            "no schema to keep the tables in: the search_path names none that exists (create it, or fix the connection string's options)".into(),
        ));
    };
    let started = Instant::now();
    loop {
        let locked: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&LOCK_CLASS, &schema],
            )
            .await?
            .try_get(0)?;
        if locked {
            break;
        }
        if started.elapsed() >= wait {
            return Err(WriterError::Refused(format!(
                "another sluice server is using the store in schema `{schema}` of this database (one server per store: its locks and schedules live in its process); stop it, or give this one a schema of its own"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut create = String::new();
    for table in Table::ALL {
        create.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {} (k bytea PRIMARY KEY, v bytea NOT NULL);",
            table_name(table)
        ));
    }
    client
        .batch_execute(&format!("BEGIN;{create}COMMIT;"))
        .await?;
    let mut sql = Vec::new();
    for table in Table::ALL {
        let t = table_name(table);
        sql.push(format!(
            "INSERT INTO {t} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
        ));
        sql.push(format!("DELETE FROM {t} WHERE k = ANY($1)"));
    }
    let mut prepared = try_join_all(sql.iter().map(|s| client.prepare(s)))
        .await?
        .into_iter();
    let (mut upserts, mut deletes) = (Vec::new(), Vec::new());
    while let (Some(upsert), Some(delete)) = (prepared.next(), prepared.next()) {
        upserts.push(upsert);
        deletes.push(delete);
    }
    Ok(Writer {
        client,
        upserts,
        deletes,
    })
}

/// Connects everything [`PostgresBackend::open`] needs.
async fn connect_all(
    config: &Config,
    lock_wait: Duration,
) -> Result<(Writer, Vec<Reader>), WriterError> {
    let writer = connect_writer(config, lock_wait).await?;
    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(connect_reader(config).await?);
    }
    Ok((writer, readers))
}

impl PostgresBackend {
    /// Connects to the database `url` names (a libpq connection string),
    /// creating the store's tables where they are missing. A string that
    /// does not parse, a server that cannot be reached or refuses the
    /// login, a schema that does not exist, or a store another process has
    /// open is refused with an error naming the database (never its
    /// password) and the cause; nothing is created or changed then.
    pub fn open(url: &str) -> Result<PostgresBackend, BackendError> {
        Self::open_waiting(url, LOCK_WAIT)
    }

    /// [`PostgresBackend::open`], waiting at most `lock_wait` for another
    /// process to let go of the store.
    pub fn open_waiting(url: &str, lock_wait: Duration) -> Result<PostgresBackend, BackendError> {
        let mut config: Config = url.parse().map_err(|e| BackendError::Open {
            location: "the PostgreSQL connection string".into(),
            cause: format!(
                "it does not parse ({e}); write it as postgres://user:password@host:5432/dbname"
            ),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("sluice");
        }
        let location = describe(&config);
        let fail = |cause: String| BackendError::Open {
            location: location.clone(),
            cause,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-postgres")
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start its connections' threads: {e}")))?;
        let handle = runtime.handle().clone();
        let (answer, answered) = std::sync::mpsc::channel();
        let setup_config = config.clone();
        handle.spawn(async move {
            let _ = answer.send(connect_all(&setup_config, lock_wait).await);
        });
        let connected = answered
            .recv()
            .map_err(|_| fail("its connection task stopped".into()));
        let (writer, readers) = match connected.and_then(|c| c.map_err(|e| fail(e.to_string()))) {
            Ok(both) => both,
            Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let (writes, queue) = mpsc::unbounded_channel();
        let (ended, writer_ended) = std::sync::mpsc::channel();
        let writer_config = config.clone();
        handle.spawn(async move {
            write_loop(writer_config, writer, queue).await;
            let _ = ended.send(());
        });
        Ok(PostgresBackend {
            inner: Arc::new(Inner {
                location,
                config,
                handle,
                runtime: Some(runtime),
                reconnecting: readers
                    .iter()
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                readers: readers
                    .into_iter()
                    .map(|r| Mutex::new(Arc::new(r)))
                    .collect(),
                next_reader: AtomicUsize::new(0),
                writes: Mutex::new(Some(writes)),
                writer_ended: Mutex::new(Some(writer_ended)),
            }),
        })
    }

    /// Where the store is, for messages: `postgres://user@host:port/db`.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// Runs `read` on a reading connection; when that connection turns
    /// out broken, on a new one once more.
    async fn read<T: Send + 'static>(
        &self,
        read: impl Fn(Arc<Reader>) -> BoxFuture<Result<T, tokio_postgres::Error>>,
    ) -> Result<T, BackendError> {
        let slot =
            self.inner.next_reader.fetch_add(1, Ordering::Relaxed) % self.inner.readers.len();
        let reader = lock(&self.inner.readers[slot]).clone();
        let reader = if reader.client.is_closed() {
            self.reconnect(slot, &reader).await?
        } else {
            reader
        };
        match read(Arc::clone(&reader)).await {
            Ok(v) => Ok(v),
            Err(e) if broken(&e, &reader.client) => {
                let reader = self.reconnect(slot, &reader).await?;
                read(reader).await.map_err(|e| storage(&e))
            }
            Err(e) => Err(storage(&e)),
        }
    }

    /// Replaces reader `slot`, found broken in `seen`, with a new
    /// connection (unless another caller just did).
    async fn reconnect(
        &self,
        slot: usize,
        seen: &Arc<Reader>,
    ) -> Result<Arc<Reader>, BackendError> {
        let _one = self.inner.reconnecting[slot].lock().await;
        let current = lock(&self.inner.readers[slot]).clone();
        if !Arc::ptr_eq(&current, seen) && !current.client.is_closed() {
            return Ok(current);
        }
        let config = self.inner.config.clone();
        let reader = self
            .inner
            .handle
            .spawn(async move { connect_reader(&config).await })
            .await
            .map_err(|e| BackendError::Storage(format!("a database task failed: {e}")))?
            .map_err(|e| {
                BackendError::Storage(format!(
                    "cannot reach the database at {}: {}",
                    self.inner.location,
                    said(&e)
                ))
            })?;
        let reader = Arc::new(reader);
        *lock(&self.inner.readers[slot]) = Arc::clone(&reader);
        Ok(reader)
    }

    fn submit(&self, ops: Vec<Op>, durable: bool) -> PendingWrite {
        if ops.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        let closed = || BackendError::Storage("the database's writer has stopped".into());
        let (done, answer) = tokio::sync::oneshot::channel();
        let request = WriteRequest {
            ops,
            durable,
            atomic: true,
            done,
        };
        let queued = match lock(&self.inner.writes).as_ref() {
            Some(writes) => writes.send(request).is_ok(),
            None => false,
        };
        if !queued {
            return Box::pin(std::future::ready(Err(closed())));
        }
        Box::pin(async move { answer.await.map_err(|_| closed())? })
    }
}

/// Key-value pairs, as scans return them.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The rows a read returned, as `(key, value)` pairs.
fn pairs(rows: Vec<tokio_postgres::Row>) -> Result<Pairs, tokio_postgres::Error> {
    rows.into_iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

#[async_trait::async_trait]
impl Backend for PostgresBackend {
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let key = key.to_vec();
        self.read(move |reader| {
            let key = key.clone();
            Box::pin(async move {
                let row = reader
                    .client
                    .query_opt(&reader.reads[table.index()].get, &[&key])
                    .await?;
                row.map(|row| row.try_get(0)).transpose()
            })
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
        let wanted = keys.to_vec();
        let found = self
            .read(move |reader| {
                let keys = wanted.clone();
                Box::pin(async move {
                    let rows = reader
                        .client
                        .query(&reader.reads[table.index()].get_many, &[&keys])
                        .await?;
                    pairs(rows)
                })
            })
            .await?;
        let mut found: HashMap<Vec<u8>, Vec<u8>> = found.into_iter().collect();
        let mut out = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            // A key asked for twice gets its value twice.
            let again = keys[i + 1..].contains(key);
            out.push(if again {
                found.get(key).cloned()
            } else {
                found.remove(key)
            });
        }
        Ok(out)
    }

    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        let Some((lower, upper)) = scan_range(prefix, after, reverse) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        // `lower <= k`: an excluded bound's smallest successor is the key
        // with a zero byte appended.
        let lower = match lower {
            Bound::Included(k) => k,
            Bound::Excluded(mut k) => {
                k.push(0);
                k
            }
            Bound::Unbounded => Vec::new(),
        };
        let upper = match upper {
            Bound::Excluded(k) => Some(k),
            Bound::Included(mut k) => {
                k.push(0);
                Some(k)
            }
            Bound::Unbounded => None,
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |reader| {
            let (lower, upper) = (lower.clone(), upper.clone());
            Box::pin(async move {
                let reads = &reader.reads[table.index()];
                let rows = match (&upper, reverse) {
                    (Some(upper), false) => {
                        reader
                            .client
                            .query(&reads.forward, &[&lower, upper, &limit])
                            .await?
                    }
                    (None, false) => {
                        reader
                            .client
                            .query(&reads.forward_open, &[&lower, &limit])
                            .await?
                    }
                    (Some(upper), true) => {
                        reader
                            .client
                            .query(&reads.backward, &[&lower, upper, &limit])
                            .await?
                    }
                    (None, true) => {
                        reader
                            .client
                            .query(&reads.backward_open, &[&lower, &limit])
                            .await?
                    }
                };
                pairs(rows)
            })
        })
        .await
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        self.submit(ops, true).await
    }

    async fn apply_unflushed(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        self.submit(ops, false).await
    }

    async fn apply_unflushed_in_order(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        // All of them or none is one of the prefixes this allows.
        self.submit(ops, false).await
    }

    fn start_unflushed_in_order(&self, ops: Vec<Op>) -> PendingWrite {
        self.submit(ops, false)
    }
}

/// The writer task: takes every waiting request, commits them together,
/// answers each; ends when the queue closes and is empty.
async fn write_loop(
    config: Config,
    writer: Writer,
    mut queue: mpsc::UnboundedReceiver<WriteRequest>,
) {
    let mut writer = Some(writer);
    while let Some(first) = queue.recv().await {
        let mut ops = first.ops.len();
        let mut group = vec![first];
        while ops < GROUP_OPS {
            match queue.try_recv() {
                Ok(next) => {
                    ops += next.ops.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let durable = group.iter().any(|r| r.durable);
        let all: Vec<&Op> = group.iter().flat_map(|r| r.ops.iter()).collect();
        let result = write_retrying(&config, &mut writer, &all, durable).await;
        drop(all);
        match result {
            Ok(()) => {
                for request in group {
                    let _ = request.done.send(Ok(()));
                }
            }
            Err(e) if group.len() == 1 => {
                if let Some(request) = group.pop() {
                    let _ = request.done.send(Err(e));
                }
            }
            Err(_) => {
                // One batch must not fail the others: each alone.
                for request in group {
                    let ops: Vec<&Op> = request.ops.iter().collect();
                    let result = write_retrying(&config, &mut writer, &ops, request.durable).await;
                    drop(ops);
                    let _ = request.done.send(result);
                }
            }
        }
    }
    if let Some(writer) = writer {
        // Let go of the lock now rather than when the server notices the
        // connection is gone, so a reopen does not wait.
        let _ = writer
            .client
            .execute("SELECT pg_advisory_unlock_all()", &[])
            .await;
    }
}

/// Writes `ops` in one transaction, reconnecting first when the writing
/// connection is broken, and once more when it breaks during the write.
async fn write_retrying(
    config: &Config,
    writer: &mut Option<Writer>,
    ops: &[&Op],
    durable: bool,
) -> Result<(), BackendError> {
    for attempt in 0..2 {
        if writer.as_ref().is_none_or(|w| w.client.is_closed()) {
            *writer = None;
            // A server that lost its connection (a database restart) takes
            // the lock back at once, or not at all: another process may
            // have the store by now.
            *writer = Some(connect_writer(config, Duration::ZERO).await.map_err(|e| {
                BackendError::Storage(format!("cannot reconnect to the database: {e}"))
            })?);
        }
        let Some(w) = writer.as_mut() else {
            continue;
        };
        match write(w, ops, durable).await {
            Ok(()) => return Ok(()),
            Err(e) if broken(&e, &w.client) => {
                *writer = None;
                if attempt == 1 {
                    return Err(storage(&e));
                }
            }
            Err(e) => return Err(storage(&e)),
        }
    }
    Err(BackendError::Storage(
        "the database connection broke during the write".into(),
    ))
}

/// One transaction: the last op on each key wins, then one upsert and one
/// delete statement per table, sent together.
async fn write(
    writer: &mut Writer,
    ops: &[&Op],
    durable: bool,
) -> Result<(), tokio_postgres::Error> {
    let mut last: BTreeMap<(usize, &[u8]), Option<&[u8]>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put { table, key, value } => {
                last.insert((table.index(), key), Some(value));
            }
            Op::Delete { table, key } => {
                last.insert((table.index(), key), None);
            }
        }
    }
    let n = Table::ALL.len();
    let mut put_keys: Vec<Vec<&[u8]>> = vec![Vec::new(); n];
    let mut put_values: Vec<Vec<&[u8]>> = vec![Vec::new(); n];
    let mut delete_keys: Vec<Vec<&[u8]>> = vec![Vec::new(); n];
    for ((table, key), value) in last {
        match value {
            Some(value) => {
                put_keys[table].push(key);
                put_values[table].push(value);
            }
            None => delete_keys[table].push(key),
        }
    }
    let Writer {
        client,
        upserts,
        deletes,
    } = writer;
    let tx = client.transaction().await?;
    if !durable {
        tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
            .await?;
    }
    type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
    let put_params: Vec<[Param; 2]> = (0..n)
        .map(|t| [&put_keys[t] as Param, &put_values[t] as Param])
        .collect();
    let delete_params: Vec<[Param; 1]> = (0..n).map(|t| [&delete_keys[t] as Param]).collect();
    let mut statements = Vec::new();
    for t in 0..n {
        if !put_keys[t].is_empty() {
            statements.push(tx.execute(&upserts[t], &put_params[t]));
        }
    }
    let mut removals = Vec::new();
    for t in 0..n {
        if !delete_keys[t].is_empty() {
            removals.push(tx.execute(&deletes[t], &delete_params[t]));
        }
    }
    try_join_all(statements).await?;
    try_join_all(removals).await?;
    tx.commit().await
}
