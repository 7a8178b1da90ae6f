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
//! on first open, beside `sluice_holder`, the backend's own (see
//! [`HOLDER`]).
//!
//! A new store is made only where there is none to be found: an open of
//! a schema without a store is refused when another schema on the
//! `search_path` holds one (the store would otherwise move to a schema
//! created before its own on the path, empty, with new keys), and tables
//! without a store are one only while the first start that made them is
//! unfinished ([`Backend::may_create`]; emptied tables are refused, as
//! sled refuses an empty database without its mark).
//!
//! TLS is as `sslmode` says (see `tls.rs`): `prefer`, the default, is TLS
//! whenever the server offers it; a connection to another machine that
//! ends up plain is warned about once on stderr.
//!
//! # One server per store
//!
//! The store's locks, caches and schedulers live in the process that opened
//! it, so two processes writing one store would break its invariants. The
//! backend holds a session-level advisory lock for its schema on its
//! writing connection for as long as it is open; a second open waits up to
//! ten seconds for it (a restarted server whose previous process is still
//! being torn down) and is then refused with [`BackendError::Busy`].
//!
//! A server that loses its session (the database ended it: a restart,
//! keepalives unanswered, `pg_terminate_backend`) connects again and takes
//! the lock back, unless another process took it meanwhile (a standby,
//! `sluice serve --standby`, waiting for it): then the store was taken
//! over; the backend writes nothing more and [`Backend::taken_over`]
//! resolves. Another process that had the store and let go of it before
//! this one reconnected is found too: each open writes its backend's
//! token to `sluice_holder` with the lock held, and a reconnect that finds
//! another token there is taken over as well (this process's state may
//! be stale: keys replaced, variables changed). An idle writer checks its
//! session every five seconds, and at once when the connection ends. A
//! database out of reach is tried again and again (writes fail
//! meanwhile): the writer stops only once the store is shown to be
//! another's, not because the database is slow or gone for a while.
//! [`PostgresBackend::open_reading`] opens the store without the lock, for
//! reading only; [`PostgresBackend::open_destination`], a copy's
//! destination, opens it to write only once the lock is held and the
//! schema's tables are found empty, so a copy refused writes nothing
//! (not even its token).
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{Either, try_join_all};
use sluice_store::writer::WriteRequest;
use sluice_store::{Backend, BackendError, CopyError, Op, PendingWrite, Table, scan_range};
use tokio::sync::mpsc;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls, Statement};

mod tls;
use tls::Tls;

/// Connections that serve reads.
const READERS: usize = 4;
/// A writer group stops growing past this many ops...
const GROUP_OPS: usize = 50_000;
/// ...or this many bytes of keys and values.
const GROUP_BYTES: usize = 64 << 20;
/// The largest key and value PostgreSQL takes (one message is at most
/// 1 GiB), with room for the message's own fields.
const MAX_OP_BYTES: usize = (1 << 30) - (1 << 20);
/// One statement's parameters stay under this many bytes (PostgreSQL takes
/// no message over 1 GiB).
const STATEMENT_BYTES: usize = 128 << 20;
/// How long a write whose connection broke is retried (on new connections)
/// before it is answered with an error.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// How long connecting (TCP, TLS, login, the lock aside) may take.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);
/// A reader slot whose reconnect failed fails its callers at once for
/// this long, rather than each trying again.
const READER_BACKOFF: Duration = Duration::from_secs(1);
/// How long an open waits for another process's lock on the store.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// An idle writing connection is checked this often, so a lost session
/// (and with it the store's lock) is noticed while nothing is written.
const PING_EVERY: Duration = Duration::from_secs(5);
/// A check the server has not answered in this long is given up; the
/// connection is kept unless it has closed (a stalled database keeps the
/// lock; a dead connection is ended by its keepalives and user timeout).
const PING_WITHIN: Duration = Duration::from_secs(10);
/// How long a drop waits for the writer to finish what it was given.
const DRAIN_WAIT: Duration = Duration::from_secs(60);
/// The seed of the advisory lock's key, a 64-bit hash of the schema's
/// name: "slce".
const LOCK_SEED: i64 = 0x736c_6365;

/// SQL that ends the database session of the server holding the store in
/// the connection's schema (the first of its `search_path`), as the
/// database does by itself when it stops hearing from that server: the
/// store's lock goes with the session, and whoever asks first gets it: a
/// server that can still reach the database reconnects at once and races
/// a waiting standby for it (either may win); one that cannot leaves it to
/// the standby, and stops once it reconnects and finds the lock taken. For
/// tests of that; to hand a store over on purpose, stop its server.
pub const END_HOLDER_SQL: &str = "SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(current_schema(), 1936483173)";

/// The PostgreSQL table of a store table.
fn table_name(table: Table) -> String {
    format!("sluice_{}", table.name())
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A PostgreSQL database as a [`Backend`]. Cheap to clone; the connections
/// close when the last clone is dropped, after the writer committed every
/// write it was given: that drop blocks its thread until then (a minute
/// at most; writes still queued after it are lost, as they would be in a
/// crash), as the embedded backends' drops wait for their writer threads.
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
    /// Whether the connection is TLS.
    tls: bool,
}

/// The writing connection (which holds the store's lock) and its
/// statements, by [`Table::index`].
struct Writer {
    client: Client,
    upserts: Vec<Statement>,
    deletes: Vec<Statement>,
    session: Session,
    /// Resolves when the connection has ended (then never again).
    ended: futures_util::future::Fuse<tokio::sync::oneshot::Receiver<()>>,
    /// Whether the connection is TLS.
    tls: bool,
    /// At the first open: whether the schema is marked as a new store's
    /// (see [`Backend::may_create`]).
    new_store: bool,
}

/// A server session: its process id and start time in microseconds
/// since the epoch (together unique; a pid alone is reused).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    pid: i32,
    started: i64,
}

/// A session's start, as [`Session::started`] holds it (a number: text
/// would follow the session's `TimeZone` and `DateStyle`).
const SESSION_START: &str = "(extract(epoch from backend_start) * 1000000)::int8";

/// How many of its own earlier writing sessions a backend remembers.
const OWN_SESSIONS: usize = 16;

struct Inner {
    /// The database, for messages: hosts, port, database and user, never
    /// the password.
    location: String,
    target: Target,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    readers: Vec<Mutex<Arc<Reader>>>,
    /// Held while a reader slot is being reconnected; holds the slot's
    /// last failed attempt.
    reconnecting: Vec<tokio::sync::Mutex<Option<(Instant, String)>>>,
    next_reader: AtomicUsize,
    writes: Mutex<Option<mpsc::UnboundedSender<WriteRequest>>>,
    /// Answers once the writer task has ended.
    writer_ended: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// Set, with the reason, once another process took the store's lock
    /// from this backend.
    taken: tokio::sync::watch::Sender<Option<String>>,
    /// Opened by [`PostgresBackend::open_reading`] (no writer at all) or
    /// [`PostgresBackend::open_source`] (one that only holds the lock).
    read_only: bool,
    /// The schema is marked as a new store's (see [`Backend::may_create`]).
    new_store: AtomicBool,
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

/// Where and how to connect.
#[derive(Clone)]
struct Target {
    config: Config,
    tls: Tls,
}

/// A new connection: its client, a receiver that resolves when the
/// connection has ended, and whether it is TLS.
type Connected = (Client, tokio::sync::oneshot::Receiver<()>, bool);

impl Target {
    /// Opens a connection whose I/O runs on the current (the backend's)
    /// runtime; says whether it is TLS.
    async fn connect(&self) -> Result<(Client, bool), tokio_postgres::Error> {
        let (client, _, tls) = self.connect_watched().await?;
        Ok((client, tls))
    }

    /// [`Target::connect`], with a receiver that resolves when the
    /// connection has ended (the server ended the session, or it broke).
    async fn connect_watched(&self) -> Result<Connected, tokio_postgres::Error> {
        let (ended, ended_rx) = tokio::sync::oneshot::channel();
        let (client, connection, tls) = match &self.tls {
            Tls::Plain => {
                let (client, connection) = self.config.connect(NoTls).await?;
                (client, Either::Left(connection), false)
            }
            Tls::Rustls(make, fallback) => {
                let seen = Arc::new(tls::Seen::default());
                let noted = tls::Noted {
                    inner: make.clone(),
                    seen: Arc::clone(&seen),
                };
                match self.config.connect(noted).await {
                    Ok((client, connection)) => (
                        client,
                        Either::Right(connection),
                        seen.used.load(Ordering::Relaxed),
                    ),
                    Err(e) if fallback.plain_again(&seen, &e) => {
                        // `prefer`: the TLS handshake failed, or the server
                        // refused the connection once it was TLS; plain
                        // TCP, as libpq does.
                        let mut plain = self.config.clone();
                        plain.ssl_mode(SslMode::Disable);
                        match plain.connect(NoTls).await {
                            Ok((client, connection)) => (client, Either::Left(connection), false),
                            // Refused plain as well, by a pg_hba.conf that
                            // wants TLS (or knows no such role): what went
                            // wrong with TLS says more.
                            Err(again)
                                if again.code()
                                    == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION) =>
                            {
                                return Err(e);
                            }
                            Err(again) => return Err(again),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        // The connection task ends when the client is dropped or the
        // server goes away; a broken connection shows as
        // `Client::is_closed`.
        tokio::spawn(async move {
            let _ = connection.await;
            let _ = ended.send(());
        });
        Ok((client, ended_rx, tls))
    }
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

async fn connect_reader(target: &Target) -> Result<Reader, tokio_postgres::Error> {
    let (client, tls) = target.connect().await?;
    let reads = prepare_reads(&client).await?;
    Ok(Reader { client, reads, tls })
}

/// Why the writing connection could not be had.
#[derive(Debug)]
enum WriterError {
    Postgres(tokio_postgres::Error),
    /// The server did not answer in time (words for the operator).
    Unanswered(String),
    /// Words for the operator: waiting will not help.
    Refused(String),
    /// Another process holds the store's lock (words for the operator).
    Busy(String),
    /// A copy's destination holds rows in this table (nothing was
    /// written to it).
    NotEmpty(&'static str),
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
            WriterError::Unanswered(why) | WriterError::Refused(why) | WriterError::Busy(why) => {
                f.write_str(why)
            }
            WriterError::NotEmpty(table) => {
                write!(
                    f,
                    "the schema is not empty (its table `sluice_{table}` has rows)"
                )
            }
        }
    }
}

/// Connects the writer: takes the store's lock (waiting up to `wait` for
/// another holder to let go) and prepares the writes; at the first open
/// it also creates the tables where missing and writes `token`, this
/// backend's, as the store's holder's (see [`prepare_store`]); at a
/// reconnect it checks that the store's holder is still `token` (see
/// [`check_holder`]). With no `token` (a copy's source, see
/// [`PostgresBackend::open_source`]) it only takes the lock: nothing is
/// written, and a schema without a store is refused. With `only_empty`
/// (a copy's destination, see [`PostgresBackend::open_destination`]), a
/// schema whose store tables hold any row is refused, the lock held,
/// before anything is written ([`WriterError::NotEmpty`]). `own` lists
/// this backend's earlier writing sessions (none at the first open); each
/// new session is added before it asks for the lock, and on success the
/// list is that session alone.
///
/// On a reconnect (`own` not empty), the earlier sessions the database
/// still has (the connection broke on this side only, or the server has
/// not noticed yet) are ended, so the lock goes with them rather than
/// after the server's keepalives; then a lock held by a session not in
/// `own` is another process's at once ([`WriterError::Busy`]: the store
/// was taken over), and one held by an own session is waited for, up to
/// `wait`, then reported as a failure to try again. At the first open,
/// any holder is waited for up to `wait`, then `Busy`.
async fn connect_writer(
    target: &Target,
    wait: Duration,
    own: &mut Vec<Session>,
    token: Option<&[u8]>,
    only_empty: bool,
) -> Result<Writer, WriterError> {
    let (mut client, ended, tls) = timeout(target.connect_watched()).await?;
    // Dead peers are noticed in about a minute, not the server's default
    // two hours (a dead writer keeps the store's lock till then): by
    // keepalives while idle, and by the user timeout while an answer to
    // it goes unacknowledged (keepalives stop then). A durable commit is
    // durable whatever the role's default says.
    client
        .batch_execute(
            "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3; SET tcp_user_timeout = 30000;",
        )
        .await?;
    let row = client
        .query_one(
            &format!("SELECT current_schema()::text, pg_backend_pid(), {SESSION_START}, current_setting('synchronous_commit'), pg_is_in_recovery() FROM pg_stat_activity WHERE pid = pg_backend_pid()"),
            &[],
        )
        .await?;
    let schema: Option<String> = row.try_get(0)?;
    let session = Session {
        pid: row.try_get(1)?,
        started: row.try_get(2)?,
    };
    let synchronous: String = row.try_get(3)?;
    let standby: bool = row.try_get(4)?;
    let Some(schema) = schema else {
        return Err(WriterError::Refused(
            "no schema to keep the tables in: the search_path names none that exists (create it, or fix the connection string's options)".into(),
        ));
    };
    if standby {
        return Err(WriterError::Refused(
            "the server is a standby (read-only): give the primary's address".into(),
        ));
    }
    if synchronous == "off" {
        client.batch_execute("SET synchronous_commit TO on").await?;
    }
    let reconnect = !own.is_empty();
    for previous in own.iter() {
        // Ours: ended, so its lock is released (same pid and start: not a
        // reused pid of another process).
        client
            .query(
                &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND {SESSION_START} = $2"),
                &[&previous.pid, &previous.started],
            )
            .await?;
    }
    own.push(session.clone());
    if own.len() > OWN_SESSIONS {
        own.remove(0);
    }
    let started = Instant::now();
    loop {
        let locked: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, $2))",
                &[&schema, &LOCK_SEED],
            )
            .await?
            .try_get(0)?;
        if locked {
            break;
        }
        let busy = || {
            WriterError::Busy(format!(
                "another sluice server is using the store in schema `{schema}` of this database (one server per store: its locks and schedules live in its process); stop it, or give this one a schema of its own"
            ))
        };
        if reconnect {
            // A lock held by a session that is not one of this backend's
            // is another process's: no waiting.
            let holders = client
                .query(
                    &format!("SELECT a.pid, {SESSION_START} FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($1, $2)"),
                    &[&schema, &LOCK_SEED],
                )
                .await?;
            let other = holders.iter().any(|row| {
                let holder = (row.try_get::<_, i32>(0), row.try_get::<_, i64>(1));
                match holder {
                    (Ok(pid), Ok(started)) => !own.contains(&Session { pid, started }),
                    // A session whose start this role may not see (another
                    // role's, without `pg_read_all_stats`) is not ours:
                    // ours are this role's.
                    _ => true,
                }
            });
            if other {
                return Err(busy());
            }
            if started.elapsed() >= wait {
                return Err(WriterError::Unanswered(format!(
                    "an earlier session of this server still holds the store's lock after {} s",
                    wait.as_secs()
                )));
            }
        } else if started.elapsed() >= wait {
            return Err(busy());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_store = match token {
        Some(token) if reconnect => {
            check_holder(&client, &schema, token).await?;
            false
        }
        Some(token) => {
            if only_empty {
                refuse_rows(&client, &schema).await?;
            }
            prepare_store(&mut client, &schema, token).await?
        }
        None => {
            let holds: bool = client
                .query_one(
                    "SELECT to_regclass(format('%I.sluice_meta', $1::text)) IS NOT NULL",
                    &[&schema],
                )
                .await?
                .try_get(0)?;
            if !holds {
                return Err(WriterError::Refused(format!(
                    "no sluice store is in schema `{schema}`"
                )));
            }
            false
        }
    };
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
    own.retain(|s| *s == session);
    Ok(Writer {
        client,
        upserts,
        deletes,
        session,
        ended: futures_util::FutureExt::fuse(ended),
        tls,
        new_store,
    })
}

/// The backend's own table in a store's schema, `(k text PRIMARY KEY, v
/// bytea)` (no [`Table`] is named `holder`): `writer`, the token of the
/// backend that last took the store's lock at its first open, and
/// `new-store`, there while the tables were made by a first start whose
/// store is not finished yet. Not among the store's tables: a copy of the
/// store (`copy_store`) must not take the source's holder along.
const HOLDER: &str = "sluice_holder";

/// `name` as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A new token for a backend: 16 bytes no other backend has. std's
/// `RandomState` is seeded from the system's randomness once per process
/// (and stepped for each new one); the time and the process id tell
/// processes apart besides.
fn new_token() -> Vec<u8> {
    use std::hash::{BuildHasher as _, Hasher as _};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut token = Vec::with_capacity(16);
    for half in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(half);
        h.write_u128(now);
        h.write_u32(std::process::id());
        token.extend_from_slice(&h.finish().to_le_bytes());
    }
    token
}

/// The first open's work once the lock is held: the store's tables made
/// where missing (with the `new-store` mark when there were none) and
/// `token` written as the holder's, in one transaction. Returns whether
/// the `new-store` mark is there.
///
/// A schema without a store (no `sluice_meta` rows) is refused when
/// another schema on the connection's `search_path` holds one: the
/// schema a store is in is the first of the `search_path` that exists,
/// so a schema created before the store's own makes a restart find an
/// empty schema, where a new store would be made over nothing and
/// serve with new keys.
async fn prepare_store(
    client: &mut Client,
    schema: &str,
    token: &[u8],
) -> Result<bool, WriterError> {
    let here = quoted(schema);
    let had_tables: bool = client
        .query_one(
            "SELECT to_regclass(format('%I.sluice_meta', $1::text)) IS NOT NULL",
            &[&schema],
        )
        .await?
        .try_get(0)?;
    let holds = had_tables
        && client
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM {here}.sluice_meta)"),
                &[],
            )
            .await?
            .try_get::<_, bool>(0)?;
    if !holds {
        refuse_beside_another_store(client, schema).await?;
    }
    let mut create = String::new();
    for table in Table::ALL {
        create.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {here}.{} (k bytea PRIMARY KEY, v bytea NOT NULL);",
            table_name(table)
        ));
    }
    create.push_str(&format!(
        "CREATE TABLE IF NOT EXISTS {here}.{HOLDER} (k text PRIMARY KEY, v bytea NOT NULL);"
    ));
    if !had_tables {
        create.push_str(&format!(
            "INSERT INTO {here}.{HOLDER} (k, v) VALUES ('new-store', '') ON CONFLICT (k) DO NOTHING;"
        ));
    }
    let tx = client.transaction().await?;
    tx.batch_execute(&create).await?;
    tx.execute(
        &format!("INSERT INTO {here}.{HOLDER} (k, v) VALUES ('writer', $1) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"),
        &[&token],
    )
    .await?;
    let new_store: bool = tx
        .query_one(
            &format!("SELECT EXISTS (SELECT 1 FROM {here}.{HOLDER} WHERE k = 'new-store')"),
            &[],
        )
        .await?
        .try_get(0)?;
    tx.commit().await?;
    Ok(new_store)
}

/// Refuses a schema whose store tables (those that exist) hold any row,
/// naming the first such table; reads only.
async fn refuse_rows(client: &Client, schema: &str) -> Result<(), WriterError> {
    let here = quoted(schema);
    for table in Table::ALL {
        let name = table_name(table);
        let exists: bool = client
            .query_one(
                "SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL",
                &[&schema, &name],
            )
            .await?
            .try_get(0)?;
        if !exists {
            continue;
        }
        let rows: bool = client
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM {here}.{})", quoted(&name)),
                &[],
            )
            .await?
            .try_get(0)?;
        if rows {
            return Err(WriterError::NotEmpty(table.name()));
        }
    }
    Ok(())
}

/// Refuses, naming both schemas, when a schema on the `search_path` other
/// than `schema` (the first that exists) holds a store.
async fn refuse_beside_another_store(client: &Client, schema: &str) -> Result<(), WriterError> {
    let others = client
        .query(
            "SELECT s::text FROM unnest(current_schemas(false)) AS s WHERE s <> current_schema() AND to_regclass(format('%I.sluice_meta', s)) IS NOT NULL",
            &[],
        )
        .await?;
    for row in others {
        let other: String = row.try_get(0)?;
        let holds = match client
            .query_one(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {}.sluice_meta)",
                    quoted(&other)
                ),
                &[],
            )
            .await
        {
            Ok(row) => row.try_get::<_, bool>(0)?,
            // Another role's: a store all the same, as far as this one
            // can tell.
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => true,
            Err(e) => return Err(e.into()),
        };
        if holds {
            return Err(WriterError::Refused(format!(
                "schema `{schema}`, the first on the connection's search_path that exists, holds no sluice store, but schema `{other}`, also on it, holds one (was `{schema}` created after the store was made in `{other}`?); refusing to make a new, empty store in `{schema}`. Name one schema in the connection string: options=-csearch_path%3D{other} in a URL's query (options='-csearch_path={other}' as a keyword) to open the store in `{other}`, or the same with `{schema}` to make a new store there"
            )));
        }
    }
    Ok(())
}

/// At a reconnect, the lock held: is the store's holder still this
/// backend (`token`)? Every first open writes its own token with the lock
/// held, so another token means another server had the store while this
/// one was cut off, and let go of it since (one still holding it would
/// have kept the lock): what this backend holds in memory may be out of
/// date (keys replaced, variables changed). That is a store taken over,
/// as a lock held by another is; the lock is let go again.
async fn check_holder(client: &Client, schema: &str, token: &[u8]) -> Result<(), WriterError> {
    let stored = client
        .query_opt(
            &format!(
                "SELECT v FROM {}.{HOLDER} WHERE k = 'writer'",
                quoted(schema)
            ),
            &[],
        )
        .await;
    let stored: Option<Vec<u8>> = match stored {
        Ok(row) => row.map(|row| row.try_get(0)).transpose()?,
        // The tables are gone (dropped, or the search_path finds another
        // schema now): not this backend's store either.
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => None,
        Err(e) => return Err(e.into()),
    };
    if stored.as_deref() == Some(token) {
        return Ok(());
    }
    let _ = client.execute("SELECT pg_advisory_unlock_all()", &[]).await;
    Err(WriterError::Busy(format!(
        "another sluice server opened the store in schema `{schema}` while this one was cut off from the database, and has let go of it since; what this one holds in memory may be out of date"
    )))
}

/// `connect` within [`CONNECT_WITHIN`]: a server that takes the connection
/// and never answers is given up on.
async fn timeout<T>(
    connecting: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, WriterError> {
    match tokio::time::timeout(CONNECT_WITHIN, connecting).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(WriterError::Unanswered(format!(
            "the server did not answer within {} s",
            CONNECT_WITHIN.as_secs()
        ))),
    }
}

/// How a backend is opened.
#[derive(Clone, Copy)]
enum Mode {
    /// Reading and writing, waiting at most this long for the store's lock.
    Write(Duration),
    /// Reading only, without the lock.
    Read,
    /// Reading only, holding the store's lock (waiting at most this long
    /// for it), writing nothing: a copy's source.
    Hold(Duration),
    /// As `Write`, but refused before anything is written when the
    /// schema's store tables hold any row: a copy's destination.
    Destination(Duration),
}

/// Why an open failed: the backend's error, or (a copy's destination,
/// [`Mode::Destination`]) rows in this table of the schema.
enum OpenFailure {
    Backend(BackendError),
    NotEmpty(&'static str),
}

impl From<BackendError> for OpenFailure {
    fn from(e: BackendError) -> Self {
        OpenFailure::Backend(e)
    }
}

/// Connects everything [`PostgresBackend::open`] needs (no writer when
/// only reading).
async fn connect_all(
    target: &Target,
    mode: Mode,
    token: &[u8],
) -> Result<(Option<Writer>, Vec<Reader>), WriterError> {
    // The writer first: it takes the lock and makes the tables the
    // readers' statements name.
    let writer = match mode {
        Mode::Write(lock_wait) => {
            Some(connect_writer(target, lock_wait, &mut Vec::new(), Some(token), false).await?)
        }
        Mode::Destination(lock_wait) => {
            Some(connect_writer(target, lock_wait, &mut Vec::new(), Some(token), true).await?)
        }
        Mode::Hold(lock_wait) => {
            Some(connect_writer(target, lock_wait, &mut Vec::new(), None, false).await?)
        }
        Mode::Read => None,
    };
    let mut readers = Vec::new();
    for _ in 0..READERS {
        match timeout(connect_reader(target)).await {
            Ok(reader) => readers.push(reader),
            // A store not created yet has none of the tables the reads
            // name (only a writer creates them).
            Err(WriterError::Postgres(e))
                if writer.is_none()
                    && e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
            {
                return Err(WriterError::Refused(
                    "no sluice store is in this schema yet (a server opening it to write creates one)".into(),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((writer, readers))
}

/// The warning for a connection that went plain (the server answered
/// `prefer`'s request for TLS with no, or TLS failed and the connection
/// was made again plain) to a database on another machine,
/// or `None`: a TLS connection, or the database on this machine (a Unix
/// socket, `localhost`, a loopback address), where the traffic is not on
/// a network.
fn plaintext_warning(config: &Config, location: &str, tls: bool) -> Option<String> {
    let loopback = |ip: std::net::IpAddr| ip.is_loopback();
    let local = if config.get_hostaddrs().is_empty() {
        config.get_hosts().iter().all(|host| match host {
            Host::Tcp(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse()
                        .is_ok_and(loopback)
            }
            Host::Unix(_) => true,
        })
    } else {
        config.get_hostaddrs().iter().copied().all(loopback)
    };
    (!tls && !local).then(|| {
        format!(
            "warning: the database at {location} offers no TLS (or none that sluice could use: its TLS handshake failed, or the server refused the connection over TLS), so sluice's connections to it are plain TCP, readable on the network (the password too, unless it is sent with SCRAM); turn ssl on in its postgresql.conf and add sslmode=verify-full (with sslrootcert for its CA) to the connection string, or add sslmode=disable to say plain TCP is meant"
        )
    })
}

/// Says `warning` on stderr, once per process for each `location` (a
/// standby opens the store again and again).
fn warn_once(location: &str, warning: &str) {
    static WARNED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut warned = lock(&WARNED);
    if !warned.iter().any(|l| l == location) {
        warned.push(location.to_string());
        eprintln!("{warning}");
    }
}

impl PostgresBackend {
    /// Connects to the database `url` names (a libpq connection string),
    /// creating the store's tables where they are missing. A string that
    /// does not parse, a server that cannot be reached or refuses the
    /// login, a schema that does not exist, or a store another process has
    /// open is refused with an error naming the database (never its
    /// password) and the cause; nothing is changed then (the empty tables
    /// may have been made, when it failed after taking the lock).
    pub fn open(url: &str) -> Result<PostgresBackend, BackendError> {
        Self::open_waiting(url, LOCK_WAIT)
    }

    /// [`PostgresBackend::open`], waiting at most `lock_wait` for another
    /// process to let go of the store; [`BackendError::Busy`] when it does
    /// not.
    pub fn open_waiting(url: &str, lock_wait: Duration) -> Result<PostgresBackend, BackendError> {
        Self::open_with(url, Mode::Write(lock_wait))
    }

    /// The store for reading only, whoever holds it (a standby checking
    /// the store it waits for, and reading what it will serve): every
    /// write is refused, and nothing is created, so a schema without a
    /// store is refused.
    pub fn open_reading(url: &str) -> Result<PostgresBackend, BackendError> {
        Self::open_with(url, Mode::Read)
    }

    /// The store as a copy's source (`sluice copy-store`): for reading
    /// only, holding the store's lock as [`PostgresBackend::open`] does
    /// (a server using the store is waited for as long, then
    /// [`BackendError::Busy`]), so nothing writes the store while it is
    /// read. Nothing is written, not even this backend's token to
    /// `sluice_holder`: a server that was cut off from the database while
    /// the copy held the lock takes it back afterwards and finds its own
    /// token still there. A schema without a store is refused.
    pub fn open_source(url: &str) -> Result<PostgresBackend, BackendError> {
        Self::open_with(url, Mode::Hold(LOCK_WAIT))
    }

    /// The store as a copy's destination (`sluice copy-store`): opened to
    /// write as [`PostgresBackend::open`] does, but once the store's lock
    /// is held, and before anything is written (the tables, this
    /// backend's token to `sluice_holder`), a schema whose store tables
    /// hold any row is refused with [`CopyError::NotEmpty`]: a store
    /// there is left as it was, and a server that holds it and was cut
    /// off from the database finds its own token when it reconnects.
    /// Every other failure is [`CopyError::Refused`] (nothing of a store
    /// written: at most empty tables made, when it failed after taking
    /// the lock).
    pub fn open_destination(url: &str) -> Result<PostgresBackend, CopyError> {
        Self::open_inner(url, Mode::Destination(LOCK_WAIT)).map_err(|e| match e {
            OpenFailure::Backend(e) => CopyError::from(e),
            OpenFailure::NotEmpty(table) => CopyError::NotEmpty { table },
        })
    }

    fn open_with(url: &str, mode: Mode) -> Result<PostgresBackend, BackendError> {
        Self::open_inner(url, mode).map_err(|e| match e {
            OpenFailure::Backend(e) => e,
            // Only a destination's open looks for rows.
            OpenFailure::NotEmpty(table) => {
                BackendError::Storage(WriterError::NotEmpty(table).to_string())
            }
        })
    }

    fn open_inner(url: &str, mode: Mode) -> Result<PostgresBackend, OpenFailure> {
        let unparsed = |cause: String| BackendError::Open {
            location: "the PostgreSQL connection string".into(),
            cause,
        };
        let (url, wanted) = tls::split(url).map_err(unparsed)?;
        let mut config: Config = url.parse().map_err(|e| {
            unparsed(format!(
                "it does not parse ({e}); write it as postgres://user:password@host:5432/dbname"
            ))
        })?;
        config.ssl_mode(wanted.mode.ssl_mode());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("sluice");
        }
        // A peer that vanished is noticed in about a minute: unanswered
        // data for 30 s, or an idle connection's keepalives unanswered.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(30));
        }
        if config.get_keepalives_idle() > Duration::from_secs(30) {
            config.keepalives_idle(Duration::from_secs(30));
        }
        // With several hosts, the writable one (reads too: a standby may
        // lag behind what was just written).
        if config.get_target_session_attrs() == tokio_postgres::config::TargetSessionAttrs::Any {
            config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        }
        let location = describe(&config);
        let fail = |cause: String| BackendError::Open {
            location: location.clone(),
            cause,
        };
        let tls = tls::connector(&wanted).map_err(fail)?;
        let target = Target {
            config: config.clone(),
            tls,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-postgres")
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start its connections' threads: {e}")))?;
        let handle = runtime.handle().clone();
        let (answer, answered) = std::sync::mpsc::channel();
        let setup = target.clone();
        let token = new_token();
        let writer_token = token.clone();
        handle.spawn(async move {
            let _ = answer.send(connect_all(&setup, mode, &token).await);
        });
        let connected = answered
            .recv()
            .map_err(|_| fail("its connection task stopped".into()));
        let (writer, readers) = match connected.map_err(OpenFailure::Backend).and_then(|c| {
            c.map_err(|e| match e {
                WriterError::Busy(cause) => OpenFailure::Backend(BackendError::Busy {
                    location: location.clone(),
                    cause,
                }),
                WriterError::NotEmpty(table) => OpenFailure::NotEmpty(table),
                e => OpenFailure::Backend(fail(e.to_string())),
            })
        }) {
            Ok(both) => both,
            Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let tls = match (&writer, readers.first()) {
            (Some(writer), _) => writer.tls,
            (None, Some(reader)) => reader.tls,
            (None, None) => true,
        };
        if wanted.mode == tls::Mode::Prefer
            && let Some(warning) = plaintext_warning(&config, &location, tls)
        {
            warn_once(&location, &warning);
        }
        let new_store = writer.as_ref().is_some_and(|w| w.new_store);
        let (taken, _) = tokio::sync::watch::channel(None);
        let (mut writes, mut writer_ended) = (None, None);
        if let Some(writer) = writer {
            let (sender, queue) = mpsc::unbounded_channel();
            let (ended, ended_rx) = std::sync::mpsc::channel();
            let writer_target = target.clone();
            let lost = taken.clone();
            let hold_only = matches!(mode, Mode::Hold(_));
            handle.spawn(async move {
                if hold_only {
                    // Nothing is sent (every write is refused): the
                    // connection, and with it the lock, is kept till the
                    // backend is dropped.
                    let mut queue = queue;
                    while queue.recv().await.is_some() {}
                    drop(writer);
                } else {
                    write_loop(writer_target, writer, queue, lost, writer_token).await;
                }
                let _ = ended.send(());
            });
            writes = Some(sender);
            writer_ended = Some(ended_rx);
        }
        Ok(PostgresBackend {
            inner: Arc::new(Inner {
                location,
                target,
                handle,
                runtime: Some(runtime),
                reconnecting: readers
                    .iter()
                    .map(|_| tokio::sync::Mutex::new(None))
                    .collect(),
                readers: readers
                    .into_iter()
                    .map(|r| Mutex::new(Arc::new(r)))
                    .collect(),
                next_reader: AtomicUsize::new(0),
                writes: Mutex::new(writes),
                writer_ended: Mutex::new(writer_ended),
                read_only: matches!(mode, Mode::Read | Mode::Hold(_)),
                taken,
                new_store: AtomicBool::new(new_store),
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
        let (slot, reader) = self.reader().await?;
        match read(Arc::clone(&reader)).await {
            Ok(v) => Ok(v),
            Err(e) if broken(&e, &reader.client) => {
                let reader = self.reconnect(slot, &reader).await?;
                read(reader).await.map_err(|e| storage(&e))
            }
            Err(e) => Err(storage(&e)),
        }
    }

    /// The next reading connection, round robin, and its slot; replaced
    /// first when it is known to be broken.
    async fn reader(&self) -> Result<(usize, Arc<Reader>), BackendError> {
        let slot =
            self.inner.next_reader.fetch_add(1, Ordering::Relaxed) % self.inner.readers.len();
        let reader = lock(&self.inner.readers[slot]).clone();
        if reader.client.is_closed() {
            return Ok((slot, self.reconnect(slot, &reader).await?));
        }
        Ok((slot, reader))
    }

    /// Replaces reader `slot`, found broken in `seen`, with a new
    /// connection (unless another caller just did). An attempt that
    /// failed less than [`READER_BACKOFF`] ago is answered with its error.
    async fn reconnect(
        &self,
        slot: usize,
        seen: &Arc<Reader>,
    ) -> Result<Arc<Reader>, BackendError> {
        let mut failed = self.inner.reconnecting[slot].lock().await;
        let current = lock(&self.inner.readers[slot]).clone();
        if !Arc::ptr_eq(&current, seen) && !current.client.is_closed() {
            return Ok(current);
        }
        if let Some((when, why)) = failed.as_ref()
            && when.elapsed() < READER_BACKOFF
        {
            return Err(BackendError::Storage(why.clone()));
        }
        let target = self.inner.target.clone();
        let connected = self
            .inner
            .handle
            .spawn(async move { timeout(connect_reader(&target)).await })
            .await
            .map_err(|e| BackendError::Storage(format!("a database task failed: {e}")))?;
        match connected {
            Ok(reader) => {
                *failed = None;
                let reader = Arc::new(reader);
                *lock(&self.inner.readers[slot]) = Arc::clone(&reader);
                Ok(reader)
            }
            Err(e) => {
                let why = format!("cannot reach the database at {}: {e}", self.inner.location);
                *failed = Some((Instant::now(), why.clone()));
                Err(BackendError::Storage(why))
            }
        }
    }

    fn submit(&self, ops: Vec<Op>, durable: bool) -> PendingWrite {
        if ops.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        if self.inner.read_only {
            return Box::pin(std::future::ready(Err(BackendError::Storage(
                "this connection to the store only reads".into(),
            ))));
        }
        if let Some(why) = self.inner.taken.borrow().clone() {
            return Box::pin(std::future::ready(Err(BackendError::Storage(why))));
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

/// A scan's range as `lower <= k` and, when bounded, `k < upper`; `None`
/// when it is empty. An excluded lower bound's smallest successor is the
/// key with a zero byte appended.
fn bounds(
    prefix: &[u8],
    after: Option<&[u8]>,
    reverse: bool,
) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let (lower, upper) = scan_range(prefix, after, reverse)?;
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
    Some((lower, upper))
}

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// Entries a `scan_where` returns: each key, with its value when kept.
type Tested = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A scan whose rows are tested by `keep` as they arrive, so one that
/// keeps few values (the keys of component blobs) never holds more than
/// one of the others.
async fn stream_scan(
    reader: &Reader,
    table: Table,
    (lower, upper): (&[u8], Option<&[u8]>),
    limit: i64,
    reverse: bool,
    keep: &mut (dyn for<'v> FnMut(&'v [u8]) -> bool + Send),
) -> Result<Tested, tokio_postgres::Error> {
    use futures_util::StreamExt as _;
    let reads = &reader.reads[table.index()];
    let (statement, params): (&Statement, Vec<Param>) = match (&upper, reverse) {
        (Some(upper), false) => (&reads.forward, vec![&lower, upper, &limit]),
        (None, false) => (&reads.forward_open, vec![&lower, &limit]),
        (Some(upper), true) => (&reads.backward, vec![&lower, upper, &limit]),
        (None, true) => (&reads.backward_open, vec![&lower, &limit]),
    };
    let rows = reader.client.query_raw(statement, params).await?;
    let mut rows = std::pin::pin!(rows);
    let mut out = Vec::new();
    while let Some(row) = rows.next().await {
        let row = row?;
        let key: Vec<u8> = row.try_get(0)?;
        let value: &[u8] = row.try_get(1)?;
        let kept = keep(value);
        out.push((key, kept.then(|| value.to_vec())));
    }
    Ok(out)
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
        let found: HashMap<Vec<u8>, Vec<u8>> = found.into_iter().collect();
        // A key asked for twice gets its value twice.
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }

    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        // Every value kept: the streamed scan (which also retries on a new
        // connection).
        let found = self
            .scan_where(table, prefix, after, limit, reverse, &mut |_| true)
            .await?;
        Ok(found
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect())
    }

    async fn scan_where(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        reverse: bool,
        keep: &mut (dyn for<'v> FnMut(&'v [u8]) -> bool + Send),
    ) -> Result<Tested, BackendError> {
        let Some((lower, upper)) = bounds(prefix, after, reverse) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let range = (lower.as_slice(), upper.as_deref());
        let (slot, mut reader) = self.reader().await?;
        let mut retried = false;
        loop {
            // Retried only when no row has reached `keep` yet: a caller's
            // `keep` may count what it sees, and would see rows twice.
            let mut seen = false;
            let result = {
                let mut tracked = |raw: &[u8]| {
                    seen = true;
                    keep(raw)
                };
                stream_scan(&reader, table, range, limit, reverse, &mut tracked).await
            };
            match result {
                Ok(found) => return Ok(found),
                Err(e) if !retried && !seen && broken(&e, &reader.client) => {
                    retried = true;
                    reader = self.reconnect(slot, &reader).await?;
                }
                Err(e) => return Err(storage(&e)),
            }
        }
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

    /// True only while the schema holds the `new-store` mark: its tables
    /// were made by a first start whose store is not finished. Tables
    /// without a store and without the mark (emptied, or made by an
    /// older sluice) are refused, not written over.
    fn may_create(&self) -> bool {
        self.inner.new_store.load(Ordering::Acquire)
    }

    async fn holds_store(&self) -> Result<(), BackendError> {
        if !self.inner.new_store.load(Ordering::Acquire) {
            return Ok(());
        }
        self.read(|reader| {
            Box::pin(async move {
                reader
                    .client
                    .execute(&format!("DELETE FROM {HOLDER} WHERE k = 'new-store'"), &[])
                    .await
                    .map(drop)
            })
        })
        .await?;
        self.inner.new_store.store(false, Ordering::Release);
        Ok(())
    }

    async fn taken_over(&self) -> String {
        let mut taken = self.inner.taken.subscribe();
        let why = match taken.wait_for(Option::is_some).await {
            Ok(why) => why.clone(),
            Err(_) => None,
        };
        match why {
            Some(why) => why,
            // The sender lives as long as this backend.
            None => std::future::pending().await,
        }
    }
}

/// What the writer says once another process took the store's lock.
fn taken_reason(why: &str) -> String {
    format!(
        "the store was taken over by another server, and this one writes to it no more (a write under way then may have been committed): {why}"
    )
}

/// The writer task: takes every waiting request, commits them together,
/// answers each; ends when the queue closes and is empty.
async fn write_loop(
    target: Target,
    writer: Writer,
    mut queue: mpsc::UnboundedReceiver<WriteRequest>,
    taken: tokio::sync::watch::Sender<Option<String>>,
    token: Vec<u8>,
) {
    // This backend's writing sessions, the current one last.
    let mut own = vec![writer.session.clone()];
    let mut writer = Some(writer);
    // Set while the database cannot be reached: each later group is tried
    // once, not for a minute each.
    let mut unreachable = false;
    loop {
        // Idle, the session is checked every few seconds, and at once when
        // its connection ends (the database ended the session).
        let ended = async {
            match writer.as_mut() {
                Some(w) => {
                    let _ = (&mut w.ended).await;
                }
                None => std::future::pending().await,
            }
        };
        let first = tokio::select! {
            first = queue.recv() => match first {
                Some(first) => Some(first),
                None => break,
            },
            () = ended => None,
            () = tokio::time::sleep(PING_EVERY) => None,
        };
        let Some(first) = first else {
            // Is the session (and the lock) still ours?
            if taken.borrow().is_none() {
                let mut link = Link {
                    target: &target,
                    own: &mut own,
                    token: &token,
                    taken: &taken,
                };
                check(&mut link, &mut writer).await;
            }
            continue;
        };
        if let Some(why) = taken.borrow().clone() {
            let _ = first.done.send(Err(BackendError::Storage(why)));
            continue;
        }
        let mut ops = first.ops.len();
        let mut bytes = op_bytes(&first.ops);
        let mut group = vec![first];
        while ops < GROUP_OPS && bytes < GROUP_BYTES {
            match queue.try_recv() {
                Ok(next) => {
                    ops += next.ops.len();
                    bytes += op_bytes(&next.ops);
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let durable = group.iter().any(|r| r.durable);
        let all: Vec<&Op> = group.iter().flat_map(|r| r.ops.iter()).collect();
        let mut w = WriteState {
            link: Link {
                target: &target,
                own: &mut own,
                token: &token,
                taken: &taken,
            },
            writer: &mut writer,
            unreachable: &mut unreachable,
        };
        let result = w.write(&all, durable).await;
        drop(all);
        match result {
            Ok(()) => {
                for request in group {
                    let _ = request.done.send(Ok(()));
                }
            }
            Err(Failure::Unreachable(e)) => {
                for request in group {
                    let _ = request.done.send(Err(BackendError::Storage(e.clone())));
                }
            }
            Err(Failure::Refused(e)) if group.len() == 1 => {
                for request in group {
                    let _ = request.done.send(Err(BackendError::Storage(e.clone())));
                }
            }
            Err(Failure::Refused(_)) => {
                // The database refused something in one of the batches
                // (a key too long for its index, say): each alone, so one
                // batch cannot fail the others.
                for request in group {
                    let ops: Vec<&Op> = request.ops.iter().collect();
                    let mut w = WriteState {
                        link: Link {
                            target: &target,
                            own: &mut own,
                            token: &token,
                            taken: &taken,
                        },
                        writer: &mut writer,
                        unreachable: &mut unreachable,
                    };
                    let result = w.write(&ops, request.durable).await;
                    drop(ops);
                    let _ = request.done.send(result.map_err(|f| {
                        BackendError::Storage(match f {
                            Failure::Unreachable(e) | Failure::Refused(e) => e,
                        })
                    }));
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

/// What the writer task keeps about its hold on the store, lent to a
/// check or a write.
struct Link<'a> {
    target: &'a Target,
    /// This backend's writing sessions, the current one last.
    own: &'a mut Vec<Session>,
    /// This backend's token (see [`check_holder`]).
    token: &'a [u8],
    taken: &'a tokio::sync::watch::Sender<Option<String>>,
}

impl Link<'_> {
    /// Connects the writer again, taking the lock back and checking the
    /// holder's token. A store another server holds, or had meanwhile
    /// ([`WriterError::Busy`]), is given up here, for good: `taken` says
    /// so. Any other failure (the database out of reach, slow, refusing)
    /// is only returned: the next check or write tries again.
    async fn reconnect(&mut self) -> Result<Writer, WriterError> {
        match connect_writer(self.target, LOCK_WAIT, self.own, Some(self.token), false).await {
            Err(WriterError::Busy(why)) => {
                let why = taken_reason(&why);
                self.taken.send_replace(Some(why.clone()));
                Err(WriterError::Busy(why))
            }
            result => result,
        }
    }
}

/// Checks the idle writing connection; when it is gone (the database
/// ended the session, or stopped answering), connects again, taking the
/// store's lock back (this backend's own old session, if the database
/// still has it, is ended first). When another process holds the lock
/// by then, or held it meanwhile, the store was taken over: `taken` says
/// so, and nothing is written again. A database out of reach is tried
/// again at the next check, for as long as it takes.
async fn check(link: &mut Link<'_>, writer: &mut Option<Writer>) {
    if let Some(w) = writer.as_ref() {
        let answered = tokio::time::timeout(PING_WITHIN, w.client.simple_query("")).await;
        match answered {
            Ok(Ok(_)) => return,
            // Slow, not gone (a database stalled on its disk): dropping
            // the connection would give its lock up. A dead one is ended
            // by its keepalives and user timeout.
            Err(_) if !w.client.is_closed() => return,
            _ => {}
        }
        *writer = None;
    }
    if let Ok(w) = link.reconnect().await {
        *writer = Some(w);
    }
}

/// The bytes of keys and values in `ops`.
fn op_bytes(ops: &[Op]) -> usize {
    ops.iter().map(size).sum()
}

/// The bytes of an op's key and value.
fn size(op: &Op) -> usize {
    match op {
        Op::Put { key, value, .. } => key.len() + value.len(),
        Op::Delete { key, .. } => key.len(),
    }
}

/// Why a write failed.
enum Failure {
    /// The database could not be reached, or the connection kept breaking,
    /// for [`RETRY_FOR`]: nothing about the batch.
    Unreachable(String),
    /// The database refused the transaction (nothing of it happened).
    Refused(String),
}

/// The writer task's connection state, lent to one write.
struct WriteState<'a> {
    link: Link<'a>,
    writer: &'a mut Option<Writer>,
    unreachable: &'a mut bool,
}

impl WriteState<'_> {
    /// Writes `ops` in one transaction. When the connection is broken, or
    /// breaks during the write, it is replaced and the write made again,
    /// for up to [`RETRY_FOR`] (once, while the database is known to be
    /// unreachable): every op sets a key to a value or deletes it, so a
    /// transaction whose commit landed before the break leaves, made
    /// again, what it left; and nothing written later can come between,
    /// since the new connection writes only once it holds the store's lock,
    /// which the old one held until it was gone.
    async fn write(&mut self, ops: &[&Op], durable: bool) -> Result<(), Failure> {
        if let Some(op) = ops.iter().find(|op| size(op) > MAX_OP_BYTES) {
            return Err(Failure::Refused(format!(
                "a value of {} bytes in table `{}` is more than PostgreSQL takes in one message (1 GiB)",
                size(op),
                op.table().name()
            )));
        }
        if let Some(why) = self.link.taken.borrow().clone() {
            // Never the lock again, even if it is free by now: this
            // process's state is not the store's any more.
            return Err(Failure::Unreachable(why));
        }
        let deadline = Instant::now()
            + if *self.unreachable {
                Duration::ZERO
            } else {
                RETRY_FOR
            };
        let mut pause = Duration::from_millis(100);
        loop {
            let last_try = Instant::now() >= deadline;
            if self.writer.as_ref().is_none_or(|w| w.client.is_closed()) {
                *self.writer = None;
                match self.link.reconnect().await {
                    Ok(w) => {
                        *self.writer = Some(w);
                    }
                    Err(WriterError::Busy(why)) => {
                        // Another server took the store: for good
                        // (`reconnect` said so).
                        return Err(Failure::Unreachable(why));
                    }
                    Err(WriterError::Refused(why)) => {
                        // The server is a standby now: not a matter of
                        // waiting.
                        *self.unreachable = true;
                        return Err(Failure::Unreachable(format!(
                            "cannot write to the database: {why}"
                        )));
                    }
                    Err(e) if last_try => {
                        *self.unreachable = true;
                        return Err(Failure::Unreachable(format!(
                            "cannot reach the database to write: {e}"
                        )));
                    }
                    Err(_) => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            let Some(w) = self.writer.as_mut() else {
                continue;
            };
            match write(w, ops, durable).await {
                Ok(()) => {
                    *self.unreachable = false;
                    return Ok(());
                }
                Err(e) if broken(&e, &w.client) => {
                    *self.writer = None;
                    if !last_try {
                        // Not at once: a failure that repeats (a pooler
                        // cutting connections) is not a busy loop.
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                    if last_try {
                        *self.unreachable = true;
                        return Err(Failure::Unreachable(format!(
                            "the database connection broke during the write (it may have been committed; it was not made again): {}",
                            said(&e)
                        )));
                    }
                }
                Err(e) => return Err(Failure::Refused(format!("PostgreSQL: {}", said(&e)))),
            }
        }
    }
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
    // Statements of at most STATEMENT_BYTES each: (table, keys, values
    // for an upsert or none for a delete).
    type Chunk<'a> = (usize, Vec<&'a [u8]>, Option<Vec<&'a [u8]>>, usize);
    let mut puts: Vec<Chunk> = Vec::new();
    let mut removals: Vec<Chunk> = Vec::new();
    for ((table, key), value) in last {
        let chunks = if value.is_some() {
            &mut puts
        } else {
            &mut removals
        };
        let size = key.len() + value.map_or(0, <[u8]>::len);
        let fits = chunks
            .last()
            .is_some_and(|(t, _, _, bytes)| *t == table && bytes + size <= STATEMENT_BYTES);
        if !fits {
            chunks.push((table, Vec::new(), value.map(|_| Vec::new()), 0));
        }
        if let Some((_, keys, values, bytes)) = chunks.last_mut() {
            keys.push(key);
            if let (Some(values), Some(value)) = (values.as_mut(), value) {
                values.push(value);
            }
            *bytes += size;
        }
    }
    let Writer {
        client,
        upserts,
        deletes,
        ..
    } = writer;
    // Three round trips: BEGIN, the statements (sent together), COMMIT.
    let begin = if durable {
        "BEGIN"
    } else {
        "BEGIN; SET LOCAL synchronous_commit TO OFF"
    };
    let result = async {
        client.batch_execute(begin).await?;
        let put_params: Vec<[Param; 2]> = puts
            .iter()
            .map(|(_, keys, values, _)| [keys as Param, values as Param])
            .collect();
        let delete_params: Vec<[Param; 1]> = removals
            .iter()
            .map(|(_, keys, _, _)| [keys as Param])
            .collect();
        // Each key is in one statement only, so they may run in any order.
        let statements = puts
            .iter()
            .zip(&put_params)
            .map(|((t, ..), params)| client.execute(&upserts[*t], params))
            .chain(
                removals
                    .iter()
                    .zip(&delete_params)
                    .map(|((t, ..), params)| client.execute(&deletes[*t], params)),
            );
        // COMMIT only once every statement is answered: one refused by
        // the client before it was sent would otherwise leave the others
        // to be committed.
        try_join_all(statements).await?;
        client.batch_execute("COMMIT").await
    }
    .await;
    if result.is_err() && !client.is_closed() {
        // Whatever failed, the connection leaves no transaction open.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn plain_connections_to_other_machines_are_warned_about() {
        let warned = |conn: &str, tls: bool| {
            let config: Config = conn.parse().unwrap();
            plaintext_warning(&config, "postgres://u@h/db", tls)
        };
        let warning = warned("host=db.example.com user=u", false).unwrap();
        assert!(warning.contains("offers no TLS"), "{warning}");
        assert!(warning.contains("sslmode=disable"), "{warning}");
        assert!(warned("host=10.0.0.5 user=u", false).is_some());
        assert!(warned("host=db.example.com,localhost user=u", false).is_some());
        assert_eq!(warned("host=db.example.com user=u", true), None);
        for local in [
            "host=localhost user=u",
            "host=127.0.0.1 user=u",
            "host=::1 user=u",
            "host=/var/run/postgresql user=u",
            "host=db.example.com hostaddr=127.0.0.1 user=u",
        ] {
            assert_eq!(warned(local, false), None, "{local}");
        }
    }

    #[test]
    fn tokens_differ() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }
}
