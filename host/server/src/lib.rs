//! `sluice serve`: the platform in one process. Environments with secret
//! keys, integrations, connections with encrypted credentials, deploys, the
//! records API, actions and syncs, over the store (`sluice-store`, sled by
//! default) and the runtime.
//!
//! - [`app`]: the shared state; per environment its stores and deployment.
//! - [`api`]: one module per resource, the original's routes and errors.
//! - [`runner`]: running syncs and actions with the run semantics of the
//!   original (records kept on failure, `lastSyncDate` and `track_deletes`
//!   only after success), async actions that survive restarts.
//! - [`refresh`]: OAuth2 token refresh, one at a time per connection.
//! - [`runs`]: the executions running per connection, stopped before the
//!   connection is deleted.
//!
//! The server is the only crate that speaks HTTP to clients; the runtime
//! knows no server, the store no HTTP.

pub mod api;
pub mod app;
pub mod backup;
pub mod budget;
pub mod config;
pub mod error;
mod github_app;
pub mod health;
mod jwt;
#[doc(hidden)]
pub use jwt::made_up_rsa_key;
pub mod logs;
mod mcp;
pub mod metrics;
mod provider_clients;
pub mod refresh;
pub mod routing;
pub mod runner;
pub mod runs;
pub mod scheduler;
mod standby;
#[cfg(test)]
mod test_support;
mod two_step;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_runtime::providers::ProviderCatalog;
use sluice_runtime::{Runtime, RuntimeConfig};
use sluice_store::{MasterKey, Store};

pub use app::App;
pub use config::{EventLog, ServerConfig, StoreKind};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] sluice_store::StoreError),
    /// The data directory's database cannot be opened (the error names
    /// the file or directory and the cause).
    #[error(transparent)]
    Open(sluice_store::BackendError),
    #[error(transparent)]
    Runtime(#[from] sluice_runtime::LoadError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot load the schedules: {0}")]
    Schedules(String),
    /// A deletion a crash cut short could not be finished at start.
    #[error("cannot finish a deletion a stop cut short: {0}")]
    Deletion(String),
    /// The server's configuration does not fit its data.
    #[error("{0}")]
    Config(String),
    /// The keys of the environments just created could not be shown.
    #[error("cannot show the new environments' keys: {0}")]
    Announce(std::io::Error),
    #[error("cannot load deployment {version} of environment `{env}`: {message}")]
    Deployment {
        env: String,
        version: u64,
        message: String,
    },
}

/// A running server.
pub struct Server {
    /// Where it listens (the port is the real one when 0 was asked).
    pub addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// The scheduler's dispatcher; aborting it stops the runs it started.
    scheduler: tokio::task::JoinHandle<()>,
    /// The webhook outbox's worker.
    webhooks: tokio::task::JoinHandle<()>,
    /// The log retention's task.
    logs: tokio::task::JoinHandle<()>,
    /// The backups' schedule (`--backup-every`).
    backups: Option<tokio::task::JoinHandle<()>>,
    /// Where `GET /metrics` is answered (`--metrics-listen`), and its task.
    metrics: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.scheduler.abort();
        self.webhooks.abort();
        self.logs.abort();
        if let Some(b) = &self.backups {
            b.abort();
        }
        if let Some((_, m)) = &self.metrics {
            m.abort();
        }
    }
}

/// Accepts connections until `stop`, then waits for the requests in
/// flight (idle connections close at once).
async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    timeouts: (std::time::Duration, std::time::Duration),
    slots: ConnectionSlots,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let (header_timeout, body_idle_timeout) = timeouts;
    // At `stop` each connection is told to finish (an idle one closes at
    // once, one with a request in flight after its answer); `open` closes
    // when the last connection's task has ended. (hyper-util's
    // `GracefulShutdown` does not take connections that can upgrade.)
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let service = hyper_util::service::TowerToHyperService::new(
        tower_http::timeout::RequestBodyTimeout::new(router, body_idle_timeout),
    );
    loop {
        let slot = tokio::select! {
            slot = slots.take() => slot,
            _ = &mut stop => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            // Out of file descriptors or a connection reset before it was
            // accepted: wait a little rather than spin.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Answers are small and written at once: don't let Nagle hold them.
        let _ = tcp.set_nodelay(true);
        // Each request carries the connection's slot: a websocket it
        // upgrades to keeps it (the connection's task ends at the upgrade).
        let slot = slot.map(|s| HeldSlot(Arc::new(s)));
        let with_slot = {
            let (service, slot) = (service.clone(), slot.clone());
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                if let Some(slot) = &slot {
                    req.extensions_mut().insert(slot.clone());
                }
                hyper::service::Service::call(&service, req)
            })
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            // A client that has sent its request and shut its side of the
            // connection (`nc -N`, `shutdown(SHUT_WR)`) still gets the
            // answer; by default the request was dropped, unanswered,
            // although its write had landed.
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(tcp), with_slot)
            // The OAuth flow's websocket (`GET /` upgraded).
            .with_upgrades();
        let mut closing = closing_rx.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(slot);
            drop(open);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    drop(open);
    let _ = all_closed.recv().await;
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Bounds the client connections open at once
/// ([`ServerConfig::max_connections`]): a connection is accepted only with
/// a slot, held until it closes, so past the bound new connections wait
/// in the listen queue.
#[derive(Clone)]
pub(crate) struct ConnectionSlots {
    slots: Arc<tokio::sync::Semaphore>,
    max: usize,
    events: EventLog,
    /// When the operator was last told that every slot was taken.
    told: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl ConnectionSlots {
    pub(crate) fn new(max: usize, events: EventLog) -> Self {
        let max = max.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            events,
            told: Arc::default(),
        }
    }

    /// A free slot, waited for when every one is taken (the operator is
    /// told so, at most once a minute).
    pub(crate) async fn take(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Some(slot);
        }
        let now = std::time::Instant::now();
        let tell = {
            let mut told = self.told.lock().unwrap_or_else(|e| e.into_inner());
            let tell =
                told.is_none_or(|at| now.duration_since(at) >= std::time::Duration::from_secs(60));
            if tell {
                *told = Some(now);
            }
            tell
        };
        if tell {
            self.events.say(&format!(
                "connections: all {} client connections are open; new ones wait until one closes (--max-connections)",
                self.max
            ));
        }
        // The semaphore is never closed.
        self.slots.clone().acquire_owned().await.ok()
    }
}

/// A client connection's slot, in each of its requests' extensions: the
/// websocket a request upgrades to holds it until it closes.
#[derive(Clone)]
pub struct HeldSlot(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

/// How much of a shared pool (execution permits, sync slots) one
/// environment may hold: three quarters, so another environment always
/// finds a quarter free however many of one's scripts hang (at least one
/// slot, in a pool of two or three; a pool of one is shared as it is).
pub fn fair_share(pool: usize) -> usize {
    (pool - pool.div_ceil(4)).max(1)
}

impl Server {
    /// Opens the data directory (the database under `db/`, compiled
    /// components under `cache/`), creates the first environments on first
    /// start (their new secret keys are returned, to be shown once), loads
    /// every environment's active deployment, resumes pending async
    /// actions and starts listening.
    pub async fn start(
        config: ServerConfig,
        master: MasterKey,
        providers: ProviderCatalog,
        initial_keys: &[(String, Option<String>)],
    ) -> Result<(Server, Vec<(String, String)>), ServerError> {
        Self::start_announcing(config, master, providers, initial_keys, |_| Ok(())).await
    }

    /// [`Server::start`], calling `announce` with the environments it
    /// created and their keys as soon as they are stored, before anything
    /// else of the start: a start cut short later (a crash, a deployment
    /// that cannot load) has shown them already, since they are shown
    /// only once.
    pub async fn start_announcing(
        config: ServerConfig,
        master: MasterKey,
        providers: ProviderCatalog,
        initial_keys: &[(String, Option<String>)],
        announce: impl FnOnce(&[(String, String)]) -> std::io::Result<()>,
    ) -> Result<(Server, Vec<(String, String)>), ServerError> {
        // Bound first: a first start that cannot listen must not create
        // the environments, whose new keys are shown only once.
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let listen = |source| ServerError::Listen { addr, source };
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(listen)?;
                let at = listener.local_addr().map_err(listen)?;
                Some((Arc::new(listener), at))
            }
            None => None,
        };
        // A standby's metrics are 503 until it takes over.
        let standby_metrics = metrics_listener
            .as_ref()
            .filter(|_| config.standby)
            .map(|(l, _)| {
                AbortOnDrop(tokio::spawn(metrics::serve(
                    l.clone(),
                    std::sync::Weak::new(),
                )))
            });
        let mut runtime_config = RuntimeConfig::new(config.data_dir.join("cache"));
        runtime_config.cache_max_bytes = config.cache_max_bytes;
        if let Some(budget) = config.script_memory_budget {
            runtime_config.memory_budget_bytes = budget;
        }
        // A nested `triggerAction` runs in its own instance without a
        // permit of its own (it draws on its caller's), so the pool has a
        // slot for every level an execution may nest: an execution that
        // holds a permit always finds one free.
        let deepest = config
            .env_limits
            .values()
            .map(|l| l.max_trigger_depth)
            .fold(config.limits.max_trigger_depth, u32::max);
        let levels = deepest.min(16) as usize + 1;
        runtime_config.max_concurrent =
            (config.max_concurrent_executions.clamp(1, 1000) * levels) as u32;
        // A limit the sandbox's pool cannot give is refused, not lowered
        // without a word.
        for (name, limits) in &config.env_limits {
            if limits.memory_bytes > runtime_config.max_memory_bytes {
                return Err(ServerError::Config(format!(
                    "the limits of environment `{name}` give scripts {} bytes of memory; at most {} can be given",
                    limits.memory_bytes, runtime_config.max_memory_bytes
                )));
            }
        }
        let runtime = Runtime::new(runtime_config)?;
        // Opening waits on files or, for PostgreSQL, on the network: not
        // on a worker thread. A standby waits for the store first.
        let backend = if config.standby {
            standby::take_store(&config, &master, &runtime, &listener).await?
        } else {
            let (kind, data_dir) = (config.store.clone(), config.data_dir.clone());
            tokio::task::spawn_blocking(move || kind.open(&data_dir))
                .await
                .map_err(|e| {
                    ServerError::Open(sluice_store::BackendError::Storage(format!(
                        "opening the store failed: {e}"
                    )))
                })?
                .map_err(ServerError::Open)?
        };
        let (store, mut created) = Store::open(backend, master, initial_keys).await?;
        // New keys asked for (an environment created just now has one).
        let mut names: Vec<&String> = Vec::new();
        for name in &config.new_keys {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let replace: Vec<(String, Option<String>)> = names
            .into_iter()
            .filter(|name| !created.iter().any(|(n, _)| n == *name))
            .map(|name| {
                let given = initial_keys
                    .iter()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, k)| k.clone());
                (name.clone(), given)
            })
            .collect();
        // Connect sessions made with the old key end with it: ended first
        // (once the new keys are known to be taken), so a start stopped
        // between the two cannot leave them going with the new key in
        // place.
        store.check_new_keys(&replace)?;
        // Whoever held the old key could read the webhook signing secret:
        // it is replaced too (when there was one), before the key, so a
        // start stopped in between is asked for again and replaces both
        // (the new key is shown only once both are stored).
        let mut new_signing = Vec::new();
        for (name, _) in &replace {
            if let Some(env) = store.environment(name) {
                let ended = api::connect::forget_all(&env).await?;
                if ended > 0 {
                    eprintln!(
                        "sluice: environment `{name}`'s {ended} connect session(s) and flow(s) made with the old key were ended"
                    );
                }
                if env.secret(webhooks::SIGNING_SECRET).await?.is_some() {
                    webhooks::new_signing_secret(&env).await?;
                    new_signing.push(name.clone());
                }
            }
        }
        let (store, replaced) = store.replace_secret_keys(&replace).await?;
        created.extend(replaced);
        // Shown first: the new keys are stored, and nothing after may
        // fail before they are seen.
        announce(&created).map_err(ServerError::Announce)?;
        for name in &new_signing {
            eprintln!(
                "sluice: environment `{name}`'s webhook signing secret was replaced with its key (the old key could read it): receivers checking `webhook-signature` need the new one, from GET /sluice/webhook-settings"
            );
        }
        // A key given for an environment that has another is not taken
        // (keys are set at the first start, or with `new_keys`): said, so
        // a 401 with it is not a mystery.
        for (name, given) in initial_keys {
            if let (Some(key), Some(env)) = (given, store.environment(name))
                && !created.iter().any(|(n, _)| n == name)
                && store.environment_by_key(key).map(|e| e.id()) != Some(env.id())
            {
                eprintln!(
                    "sluice: the secret key given for environment `{name}` is not its key; it is ignored (an environment takes its key at its first start; give it a new one with --new-key {name})"
                );
            }
        }
        let app = Arc::new(App::new(store, runtime, Arc::new(providers), config.clone()).await?);
        app.set_self();
        // Whether the last process stopped on purpose, read and forgotten
        // before anything it left is taken up again (a crash from here on
        // counts as one).
        for env in app.envs() {
            // (One that cannot be read is none: a crash's count is the
            // safe side.)
            let found = env
                .store
                .doc::<chrono::DateTime<chrono::Utc>>(app::SERVER_STOP, app::STOPPED_CLEANLY)
                .await;
            if !matches!(found, Ok(None)) {
                env.store
                    .delete_doc(app::SERVER_STOP, app::STOPPED_CLEANLY)
                    .await?;
            }
            if matches!(found, Ok(Some(_))) {
                env.stopped_cleanly
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        // What each outbox holds, before anything queues more.
        for env in app.envs() {
            app.webhooks.count_outbox(env).await;
        }
        // Before anything can run (it sweeps history entries without logs).
        app.logs.load(&app).await?;
        api::deploy::load_active(&app).await?;
        runner::resume_async_actions(&app).await?;
        // Before the schedules: a connection whose check a crash cut short
        // is deleted, not scheduled.
        // Deletions first: a connection a deletion was taking away runs no
        // post-creation scripts.
        api::connections::finish_deletions(&app).await?;
        api::connections::finish_setups(&app).await?;
        missing_providers(&app).await;
        app.scheduler
            .load(&app)
            .await
            .map_err(|e| ServerError::Schedules(format!("{}: {}", e.code, e.message)))?;
        let scheduler_task = app.scheduler.spawn(&app);
        let webhooks_task = app.webhooks.spawn(&app);
        let logs_task = app.logs.spawn(&app, config.log_retention_every);
        // The provider webhooks the last process left (up to the last
        // stored now: those this one accepts are handled as they arrive),
        // paged through and handled within the room live ones take.
        api::incoming::resume(&app).await;
        let reclaimer = app.clone();
        tokio::spawn(async move { api::deploy::reclaim_at_start(&reclaimer).await });

        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = api::router(app.clone());
        let timeouts = (config.header_timeout, config.body_idle_timeout);
        let slots = ConnectionSlots::new(config.max_connections, config.events.clone());
        app.metrics.count_slots(slots.slots.clone(), slots.max);
        let task = tokio::spawn(serve(listener, router, timeouts, slots, rx));
        let backups = backup::spawn_schedule(&app);
        drop(standby_metrics);
        let metrics = metrics_listener.map(|(listener, at)| {
            let task = tokio::spawn(metrics::serve(listener, Arc::downgrade(&app)));
            (at, task)
        });
        Ok((
            Server {
                addr,
                app,
                shutdown: Some(tx),
                task,
                scheduler: scheduler_task,
                webhooks: webhooks_task,
                logs: logs_task,
                backups,
                metrics,
            },
            created,
        ))
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where `GET /metrics` is answered (`--metrics-listen`), the port
    /// the real one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    /// Waits until the server stops (it runs until [`Server::stop`] or the
    /// process ends).
    pub async fn wait(mut self) {
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task.await;
    }

    /// Takes a backup of the store now (`--backup-dir`), telling the
    /// operator how it went.
    pub async fn back_up(&self) -> Result<backup::Backup, backup::BackupError> {
        backup::back_up_and_tell(&self.app).await
    }

    /// Stops the scheduler (runs in progress end where they are, as in a
    /// crash), stops accepting and waits for requests in flight; the store
    /// notes that the stop was on purpose (what it cut short does not
    /// count towards giving up on it, as a crash's does).
    pub async fn stop(self) {
        self.halt(true).await
    }

    /// [`Server::stop`], leaving the store as a crash would (no note that
    /// the stop was on purpose): what a test of crashes needs in process.
    pub async fn stop_as_if_crashed(self) {
        self.halt(false).await
    }

    async fn halt(mut self, on_purpose: bool) {
        // A stop on purpose, noted first (a stop may be cut short itself,
        // by a slow request past the CLI's grace, or a supervisor's
        // SIGKILL): what it cuts short runs again at the next start
        // without counting as a crash's. Bounded: a store that cannot
        // write does not hold the stop up.
        if on_purpose {
            let now = chrono::Utc::now();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                for env in self.app.envs() {
                    let _ = env
                        .store
                        .put_doc(app::SERVER_STOP, app::STOPPED_CLEANLY, &now)
                        .await;
                }
            })
            .await;
        }
        self.app.oauth_clients.close();
        for task in self
            .app
            .refresh_tellers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        self.scheduler.abort();
        self.webhooks.abort();
        self.logs.abort();
        if let Some((_, m)) = self.metrics.take() {
            m.abort();
        }
        // A backup under way is given up (its folder stays `.partial`,
        // removed by the next): on sled it holds the writes back.
        if let Some(b) = self.backups.take() {
            b.abort();
            let _ = b.await;
        }
        let scheduler = std::mem::replace(&mut self.scheduler, tokio::spawn(async {}));
        let _ = scheduler.await;
        self.app.scheduler.release_waiters();
        let webhooks = std::mem::replace(&mut self.webhooks, tokio::spawn(async {}));
        let _ = webhooks.await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task.await;
        let logs = std::mem::replace(&mut self.logs, tokio::spawn(async {}));
        let _ = logs.await;
        // Work still finishing its last step (an async action writing its
        // end, a webhook round) holds the app, and with it the store: the
        // data directory can be opened again once they let go. Bounded: an
        // async action waiting to retry is left to end with the process.
        // Work holding an environment (and its store) without the app —
        // a task of the start's catch-up, a webhook delivery — counts too.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let held = |app: &Arc<App>| {
            Arc::strong_count(app) > 1 || app.envs().any(|env| Arc::strong_count(env) > 1)
        };
        while held(&self.app) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Whatever still holds the store (an async action waiting for its
        // retry), what was acknowledged unflushed is made durable now;
        // bounded, as a store that cannot write (a full disk) may never
        // finish its flush.
        // (Not when another server took the store over: it takes no more
        // writes from this one, and what this one committed is in it.)
        let flushed = tokio::select! {
            biased;
            _ = self.app.store.taken_over() => None,
            flushed = tokio::time::timeout(std::time::Duration::from_secs(10), self.app.store.flush()) => Some(flushed),
        };
        if flushed.as_ref().is_some_and(|f| !matches!(f, Ok(Ok(())))) {
            self.app.config.events.say(
                "the last flush at stop did not finish: what was acknowledged unflushed (history, logs) may be missing",
            );
        }
    }
}

/// Names, on stderr, the integrations whose provider this server's
/// catalogue lacks (created under another catalogue: a server started
/// elsewhere, without its --providers): their connections cannot refresh
/// or be proxied, said now rather than at their first failed request. By
/// provider, a few keys each, so a line stays short.
async fn missing_providers(app: &App) {
    for env in app.store.environments() {
        let integrations = match env.integrations().await {
            Ok(all) => all,
            Err(e) => {
                eprintln!(
                    "sluice: environment `{}`'s integrations could not be checked against the providers catalogue: {e}",
                    env.name()
                );
                continue;
            }
        };
        let mut by_provider: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for i in &integrations {
            if app.providers.get(&i.provider).is_none() {
                by_provider
                    .entry(i.provider.as_str())
                    .or_default()
                    .push(i.unique_key.as_str());
            }
        }
        for (provider, keys) in by_provider {
            let shown: Vec<String> = keys.iter().take(10).map(|k| format!("`{k}`")).collect();
            eprintln!(
                "sluice: environment `{}`: provider `{provider}` is not in this server's providers catalogue, and {} integration{} use{} it ({}{}): {} connections cannot refresh or be proxied until the server has it (--providers, or start it where `nango` is installed)",
                env.name(),
                keys.len(),
                if keys.len() == 1 { "" } else { "s" },
                if keys.len() == 1 { "s" } else { "" },
                shown.join(", "),
                if keys.len() > 10 { ", …" } else { "" },
                if keys.len() == 1 { "its" } else { "their" }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn another_environment_always_finds_a_slot() {
        for (pool, share) in [(1, 1), (2, 1), (3, 2), (4, 3), (5, 3), (16, 12), (64, 48)] {
            assert_eq!(super::fair_share(pool), share, "pool of {pool}");
        }
    }
}
