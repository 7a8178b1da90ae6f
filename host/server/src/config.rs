//! The server's configuration, read once at start by the CLI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sluice_runtime::Limits;

/// Where the server tells its operator what happens while it serves: a
/// sync run that failed, a webhook to the app that failed or was given
/// up on, work a stop cut short and taken up again. One line each; the
/// CLI writes them to stderr. None by default (tests, embedding).
#[derive(Clone, Default)]
pub struct EventLog(Option<std::sync::Arc<Say>>);

type Say = dyn Fn(&str) + Send + Sync;

impl EventLog {
    pub fn new(say: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(say)))
    }

    /// Reports `line`: one line (breaks become spaces), cut to 1,000
    /// characters.
    pub fn say(&self, line: &str) {
        if let Some(say) = &self.0 {
            let line = line.replace(['\n', '\r'], " ");
            match line.char_indices().nth(1000) {
                Some((at, _)) => say(&format!("{}…", &line[..at])),
                None => say(&line),
            }
        }
    }
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "EventLog(on)"
        } else {
            "EventLog(off)"
        })
    }
}

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data directory: the database, the master key file (unless the
    /// key comes from the environment) and the component cache.
    pub data_dir: PathBuf,
    /// The embedded database the data directory holds.
    pub store: StoreKind,
    /// Start as a standby (PostgreSQL stores only): wait for the store
    /// while another server holds it, answering 503 meanwhile and keeping
    /// the component cache warm, and take over once it is let go.
    pub standby: bool,
    pub listen: SocketAddr,
    /// Limits of every environment's executions, but those named in
    /// `env_limits`.
    pub limits: Limits,
    /// Limits of the environments named here (`sluice serve --limits`):
    /// CPU, memory, timeouts, `allowed_hosts`... A name no environment
    /// has is refused at start.
    pub env_limits: std::collections::BTreeMap<String, Limits>,
    /// Executions running at once; more wait for a slot. Each live JS
    /// execution holds a few MiB, so this bounds memory too.
    pub max_concurrent_executions: usize,
    /// Largest request body of the API (the original's public API: 75 MB).
    pub max_body_bytes: usize,
    /// Largest uploaded component (a componentize-js component is ~12 MB).
    pub max_component_bytes: usize,
    /// Bytes of memory the API's bodies may take once parsed into values,
    /// all requests together (one environment's three quarters of it),
    /// counted from their text before they are parsed (a value costs up
    /// to 80 times its text: `[0,0,…]`): a deploy's manifest while it is
    /// deployed, an action's input while a run that validates it runs.
    /// What a client only passes on (an action's input, MCP's messages)
    /// is kept as text and not counted. A body past an environment's
    /// share is 413; one that finds no room within `room_wait`, 503.
    pub max_parsed_bytes: usize,
    /// Bytes of components being uploaded held in memory at once, booked
    /// from their declared length before they are read (the largest
    /// without one), likewise: each counts twice, its body and the
    /// store's copy as it writes it, so the default holds two of the
    /// largest at once and an environment one.
    pub max_held_upload_bytes: usize,
    /// Bytes of the API's other request bodies held at once while they
    /// are handled (webhooks have their own room), booked from their
    /// declared length before they are read, or as they arrive; likewise.
    pub max_held_body_bytes: usize,
    /// How long a request waits for room in those before its 503.
    pub room_wait: Duration,
    /// The rooms of `max_parsed_bytes`, `max_held_upload_bytes` and
    /// `max_held_body_bytes`, made from them at the server's first
    /// booking.
    pub(crate) budgets: crate::budget::Budgets,
    /// How long a client may take to send a request's headers, and how
    /// long a connection may sit idle between requests: past it the
    /// connection is closed (clients that connect and send nothing, or a
    /// byte at a time, cannot hold the server's connections).
    pub header_timeout: Duration,
    /// The longest pause while a request's body arrives.
    pub body_idle_timeout: Duration,
    /// Client connections open at once; past it the server accepts no
    /// more until one closes (they wait in the listen queue), so clients
    /// cannot use up the file descriptors that scripts' requests, the
    /// webhooks and the store need.
    pub max_connections: usize,
    /// How long a frontend SDK's websocket (`GET /`, which needs no key)
    /// may wait for an OAuth flow to name it (`/oauth/connect?ws_client_id=`)
    /// before it is closed: only the sockets of flows under way hold one
    /// of the slots such sockets have for long.
    pub websocket_name_grace: Duration,
    /// Where `GET /metrics` (Prometheus's text format) is answered, on a
    /// listener of its own; `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// How long a request's whole body may take to arrive, from the end
    /// of its headers, plus a second per 64 KiB its `Content-Length`
    /// declares: a client sending a byte just inside `body_idle_timeout`
    /// cannot hold a connection for days.
    pub body_timeout: Duration,
    /// Deployment versions kept per environment (the active one always):
    /// each older one is deleted at the next deploy, and the components
    /// no kept deployment of any environment uses are deleted with them.
    pub keep_deployments: usize,
    /// How long an uploaded component no deployment uses yet is kept (the
    /// deploy that uploads it comes right after).
    pub upload_grace: Duration,
    /// Every request a script makes goes to this server instead of its
    /// host (path and query kept), after the egress check: a mock of the
    /// providers' APIs (`sluice serve --mock-upstream`), for trying a
    /// project without the network.
    pub upstream_redirect: Option<url::Url>,
    /// Most bytes of precompiled components kept in `<data>/cache`; the
    /// least recently used go first (an active deploy's is compiled again
    /// at the next start if it was evicted).
    pub cache_max_bytes: u64,
    /// The URL the server is reached at, for webhook URLs.
    pub public_url: Option<String>,
    /// Scheduled sync runs at once; due syncs wait for a slot, shared
    /// fairly between environments.
    pub sync_slots: usize,
    /// The longest a sync may run before it is stopped and fails (§5: 24 h).
    pub sync_max_run: Duration,
    /// The longest a due sync may wait for a slot; past it that run is
    /// skipped and recorded as failed (§5: 1 h).
    pub sync_max_wait: Duration,
    /// Schedules run this many times faster than their `runs` say (1 in
    /// production; tests use it instead of waiting 30 s, the shortest
    /// interval the grammar allows).
    pub schedule_time_scale: u32,
    /// The first retry of a webhook to the app waits this long; each next
    /// one twice as long (jittered), up to an hour.
    pub webhook_retry_base: Duration,
    /// Wait before an async action's first retry (`X-Max-Retries`); each
    /// later one doubles, up to five minutes.
    pub action_retry_base: Duration,
    /// Bytes of components an environment may have uploaded and not yet
    /// deployed (they are kept up to two `upload_grace`s); past it an
    /// upload answers 429 (413 when it is larger than all of it), before
    /// its body is read when it declares its length.
    pub max_pending_upload_bytes: usize,
    /// Online backups of the store (embedded stores only).
    pub backup: Option<crate::backup::BackupConfig>,
    /// Async actions an environment may have accepted and not yet ended;
    /// past it `POST /action/trigger` with `X-Async` answers 429.
    pub max_async_actions: usize,
    /// Bytes of input those actions may hold (each is kept in memory until
    /// it ends); likewise.
    pub max_async_action_bytes: usize,
    /// A webhook still failing this long after it was made is given up on.
    pub webhook_give_up_after: Duration,
    /// Bytes of bodies one environment's webhook outbox may hold waiting
    /// for the app's receivers (each delivery its body; a webhook to two
    /// URLs counts twice); past it a new delivery is not queued, told in
    /// the environment's logs and to the operator, so a receiver down for
    /// a day under a flood of provider webhooks cannot fill the disk.
    pub webhook_outbox_max_bytes: u64,
    /// Most bytes of log lines kept per execution (the rest are counted).
    pub log_bytes_per_execution: usize,
    /// Logs older than this are deleted.
    pub log_retention_age: Duration,
    /// Past this many bytes of logs per environment, the oldest go.
    pub log_retention_bytes: u64,
    /// How often the retention is enforced.
    pub log_retention_every: Duration,
    /// Past this many bytes of ended async actions and webhooks given up
    /// on per environment (each kept as long as the logs), the oldest go.
    pub finished_retention_bytes: u64,
    /// Most linear memory all scripts may hold at once (one environment's
    /// three quarters of it); `None`: half the machine's memory.
    pub script_memory_budget: Option<usize>,
    /// Environments given a new secret key at this start (the one
    /// `initial_keys` names for them, else a new random one; the old key
    /// stops working): for a lost or leaked key.
    pub new_keys: Vec<String>,
    /// What the operator is told as it happens.
    pub events: EventLog,
}

/// Which database backs the store. All sit behind the same port and pass
/// the same suite; a data directory holds one of the embedded ones.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// sled 0.34, in `<data>/db/`.
    #[default]
    Sled,
    /// redb, in the file `<data>/store.redb`.
    Redb,
    /// PostgreSQL, at this libpq connection string (the data directory
    /// keeps the master key file and the component cache).
    Postgres(String),
}

impl std::fmt::Debug for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password: never printed.
        f.write_str(self.name())
    }
}

impl StoreKind {
    /// Where an embedded kind keeps its data under the data directory.
    pub fn location(&self, data_dir: &std::path::Path) -> Option<PathBuf> {
        match self {
            StoreKind::Sled => Some(data_dir.join("db")),
            StoreKind::Redb => Some(data_dir.join("store.redb")),
            StoreKind::Postgres(_) => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            StoreKind::Sled => "sled",
            StoreKind::Redb => "redb",
            StoreKind::Postgres(_) => "postgres",
        }
    }

    /// The embedded kind whose database `data_dir` already holds, if any.
    pub fn detect(data_dir: &std::path::Path) -> Option<StoreKind> {
        [StoreKind::Sled, StoreKind::Redb]
            .into_iter()
            .find(|k| k.location(data_dir).is_some_and(|at| at.exists()))
    }

    /// The PostgreSQL store at `url` (a libpq connection string), without
    /// a data directory.
    pub fn open_postgres(
        url: &str,
    ) -> Result<std::sync::Arc<dyn sluice_store::Backend>, sluice_store::BackendError> {
        Ok(std::sync::Arc::new(
            sluice_store_postgres::PostgresBackend::open(url)?,
        ))
    }

    /// The PostgreSQL store at `url` as a copy's source: its lock held
    /// (no server writes it meanwhile) but nothing written, not even the
    /// holder's token a server that held it checks when it reconnects.
    pub fn open_postgres_source(
        url: &str,
    ) -> Result<std::sync::Arc<dyn sluice_store::Backend>, sluice_store::BackendError> {
        Ok(std::sync::Arc::new(
            sluice_store_postgres::PostgresBackend::open_source(url)?,
        ))
    }

    /// The PostgreSQL store at `url` as a copy's destination: its lock
    /// taken, and refused before anything is written there (not even the
    /// holder's token a server that held the store checks when it
    /// reconnects) when its tables hold any row.
    pub fn open_postgres_destination(
        url: &str,
    ) -> Result<std::sync::Arc<dyn sluice_store::Backend>, sluice_store::CopyError> {
        Ok(std::sync::Arc::new(
            sluice_store_postgres::PostgresBackend::open_destination(url)?,
        ))
    }

    /// Whether the schema `url` names holds a PostgreSQL store, reading
    /// only: an error saying so when it holds none (nothing is created).
    pub fn check_postgres(url: &str) -> Result<(), sluice_store::BackendError> {
        sluice_store_postgres::PostgresBackend::open_reading(url).map(drop)
    }

    /// Opens this kind's database. A data directory that holds another
    /// kind's database is refused: starting on an empty store beside a
    /// full one would look like data loss.
    pub fn open(
        &self,
        data_dir: &std::path::Path,
    ) -> Result<std::sync::Arc<dyn sluice_store::Backend>, sluice_store::BackendError> {
        let held = StoreKind::detect(data_dir);
        if let StoreKind::Postgres(url) = self {
            if let Some(held) = held {
                return Err(sluice_store::BackendError::Open {
                    location: data_dir.display().to_string(),
                    cause: format!(
                        "the data directory holds a {} database ({}); start with --store {}, or give the PostgreSQL store a data directory of its own",
                        held.name(),
                        held.location(data_dir).unwrap_or_default().display(),
                        held.name()
                    ),
                });
            }
            return Self::open_postgres(url);
        }
        let at = self.location(data_dir).unwrap_or_default();
        let others: Vec<StoreKind> = [StoreKind::Sled, StoreKind::Redb]
            .into_iter()
            .filter(|k| k != self && k.location(data_dir).is_some_and(|o| o.exists()))
            .collect();
        if let Some(other) = others.first() {
            let other_at = other.location(data_dir).unwrap_or_default();
            if !at.exists() {
                return Err(sluice_store::BackendError::Open {
                    location: at.display().to_string(),
                    cause: format!(
                        "the data directory holds a {} database ({}); start with --store {}",
                        other.name(),
                        other_at.display(),
                        other.name()
                    ),
                });
            }
            // Which one holds the data is not for sluice to guess.
            return Err(sluice_store::BackendError::Open {
                location: at.display().to_string(),
                cause: format!(
                    "the data directory holds both a sled database ({}) and a redb one ({}): move the one not in use out of it",
                    data_dir.join("db").display(),
                    data_dir.join("store.redb").display()
                ),
            });
        }
        Ok(match self {
            StoreKind::Redb => std::sync::Arc::new(sluice_store_redb::RedbBackend::open(&at)?),
            _ => std::sync::Arc::new(sluice_store_sled::SledBackend::open(&at)?),
        })
    }
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            data_dir: data_dir.into(),
            store: StoreKind::Sled,
            standby: false,
            listen,
            limits: Limits::default(),
            env_limits: std::collections::BTreeMap::new(),
            max_concurrent_executions: 64,
            max_body_bytes: 75 << 20,
            max_component_bytes: 256 << 20,
            max_parsed_bytes: 1 << 30,
            max_held_upload_bytes: 1 << 30,
            max_held_body_bytes: 1 << 30,
            room_wait: Duration::from_secs(10),
            budgets: Default::default(),
            header_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            websocket_name_grace: Duration::from_secs(60),
            metrics_listen: None,
            body_timeout: Duration::from_secs(300),
            cache_max_bytes: sluice_runtime::DEFAULT_CACHE_MAX_BYTES,
            keep_deployments: 20,
            upload_grace: Duration::from_secs(3600),
            upstream_redirect: None,
            public_url: None,
            sync_slots: 16,
            sync_max_run: Duration::from_secs(24 * 3600),
            sync_max_wait: Duration::from_secs(3600),
            schedule_time_scale: 1,
            webhook_retry_base: Duration::from_secs(3),
            action_retry_base: Duration::from_secs(1),
            max_pending_upload_bytes: 8 << 30,
            backup: None,
            max_async_actions: 10_000,
            max_async_action_bytes: 256 << 20,
            webhook_give_up_after: Duration::from_secs(25 * 3600),
            webhook_outbox_max_bytes: 1 << 30,
            log_bytes_per_execution: 256 << 10,
            log_retention_age: Duration::from_secs(14 * 24 * 3600),
            log_retention_bytes: 1 << 30,
            log_retention_every: Duration::from_secs(60),
            finished_retention_bytes: 1 << 30,
            new_keys: Vec::new(),
            events: EventLog::default(),
            script_memory_budget: None,
        }
    }
}
