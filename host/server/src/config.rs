//! The server's configuration, read once at start by the CLI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sluice_runtime::Limits;

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data directory: the database, the master key file (unless the
    /// key comes from the environment) and the component cache.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Limits of every environment's executions.
    pub limits: Limits,
    /// Executions running at once; more wait for a slot. Each live JS
    /// execution holds a few MiB, so this bounds memory too.
    pub max_concurrent_executions: usize,
    /// Largest request body of the API (the original's public API: 75 MB).
    pub max_body_bytes: usize,
    /// Largest uploaded component (a componentize-js component is ~12 MB).
    pub max_component_bytes: usize,
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
    /// A webhook still failing this long after it was made is given up on.
    pub webhook_give_up_after: Duration,
    /// Most bytes of log lines kept per execution (the rest are counted).
    pub log_bytes_per_execution: usize,
    /// Logs older than this are deleted.
    pub log_retention_age: Duration,
    /// Past this many bytes of logs per environment, the oldest go.
    pub log_retention_bytes: u64,
    /// How often the retention is enforced.
    pub log_retention_every: Duration,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen,
            limits: Limits::default(),
            max_concurrent_executions: 64,
            max_body_bytes: 75 << 20,
            max_component_bytes: 256 << 20,
            public_url: None,
            sync_slots: 16,
            sync_max_run: Duration::from_secs(24 * 3600),
            sync_max_wait: Duration::from_secs(3600),
            schedule_time_scale: 1,
            webhook_retry_base: Duration::from_secs(3),
            webhook_give_up_after: Duration::from_secs(25 * 3600),
            log_bytes_per_execution: 256 << 10,
            log_retention_age: Duration::from_secs(14 * 24 * 3600),
            log_retention_bytes: 1 << 30,
            log_retention_every: Duration::from_secs(60),
        }
    }
}
