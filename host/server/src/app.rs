//! The server's state: the store, the runtime, and per environment its
//! stores, runtime environment and active deployment.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_project::catalog::Catalog;
use sluice_project::deploy::Manifest;
use sluice_runtime::providers::ProviderCatalog;
use sluice_runtime::{Environment, Runtime, Services};
use sluice_store::{EnvStore, Store};
use tokio::sync::Semaphore;

use crate::config::ServerConfig;
use crate::error::{ApiError, ApiResult};
use crate::refresh::Connections;

/// Deployments: `deployments/<version, zero-padded>` → [`DeploymentDoc`].
pub const DEPLOYMENTS: &str = "deployments";
/// `active` → the active deployment's version.
pub const ACTIVE: &str = "active-deployment";
/// `stopped-cleanly` → when the server last stopped on purpose (a
/// SIGTERM, not a crash): written at the end of a stop, read and removed
/// at the next start ([`EnvState::stopped_cleanly`]).
pub const SERVER_STOP: &str = "server-stop";
/// The key of [`SERVER_STOP`]'s one document.
pub const STOPPED_CLEANLY: &str = "stopped-cleanly";

/// A deployment as stored: its manifest (the components are blobs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentDoc {
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub manifest: Manifest,
}

pub fn deployment_key(version: u64) -> String {
    format!("{version:020}")
}

/// A deployment loaded into the runtime.
pub struct Deployed {
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub catalog: Arc<Catalog>,
}

/// One environment as the server holds it.
pub struct EnvState {
    pub store: EnvStore,
    /// Its connections' failed refreshes, for the app's `auth` webhook
    /// (taken by the task [`App::set_self`] starts).
    refresh_failures: std::sync::Mutex<
        Option<tokio::sync::mpsc::Receiver<(sluice_runtime::connection::Connection, String)>>,
    >,
    pub connections: Arc<Connections>,
    environment: RwLock<Arc<Environment>>,
    deployment: RwLock<Option<Arc<Deployed>>>,
    /// Writers of sync state documents take the lock of their key's stripe.
    sync_locks: Vec<tokio::sync::Mutex<()>>,
    /// Imports of a connection take the lock of its stripe, from reading
    /// whether it exists to their answer: two at once would both take it
    /// for new, and the one refused would delete the other's.
    import_locks: Vec<tokio::sync::Mutex<()>>,
    /// Changes of the set of schedules (deploys, connections created or
    /// deleted) happen one at a time.
    pub schedules_lock: tokio::sync::Mutex<()>,
    /// The executions running per connection.
    pub runs: crate::runs::ConnectionRuns,
    /// Changes of the active deployment and of the environment variables
    /// happen one at a time (each writes the store, then memory).
    pub config_lock: tokio::sync::Mutex<()>,
    /// The environment's deploys and rollbacks run one at a time, from
    /// reading what they merge into to their answer (so one environment
    /// compiles one at a time, and a deploy of part of a project merges
    /// into what the one before it deployed).
    pub deploy_lock: tokio::sync::Mutex<()>,
    /// Per integration key, its [`IntegrationLock`] (while anyone holds
    /// or waits for it): one integration's update or deletion holds up
    /// nothing of another's.
    integration_locks: std::sync::Mutex<HashMap<String, Arc<IntegrationLock>>>,
    /// Creating an integration: two requests for the same key must not both
    /// find it free. (Apart from the [`IntegrationLock`]s, whose writer
    /// waits for the connections of its integration being created.)
    pub integrations_created: tokio::sync::Mutex<()>,
    /// Creating a sync variant: likewise.
    pub variants_lock: tokio::sync::Mutex<()>,
    /// This environment's share of the execution permits
    /// ([`crate::fair_share`]), taken before one of the process's.
    executions: Semaphore,
    /// The locks its scripts take (`nango.tryAcquireLock`), one table for
    /// every execution of the environment.
    locks: Arc<sluice_runtime::locks::Locks>,
    /// Its async actions accepted and not yet ended.
    pub async_actions: Arc<AsyncQueue>,
    /// Components it uploaded that none of its deploys has named yet
    /// (`sha256` → when, bytes), bounded by
    /// `ServerConfig::max_pending_upload_bytes`: kept until the unused
    /// ones are deleted, a tenant's uploads must not fill the disk.
    pub pending_uploads: std::sync::Mutex<HashMap<String, (std::time::Instant, usize)>>,
    /// How many reconciles of its schedules after a deploy failed and are
    /// not yet made good by a retry (0: none is under way;
    /// `api::deploy::reconcile`).
    pub reconcile_failures: std::sync::Mutex<u64>,
    /// `GET /openapi.json`'s document of the active deployment (by its
    /// version), made by the first request that asks for it.
    pub openapi: tokio::sync::Mutex<Option<(u64, axum::body::Bytes)>>,
    /// The process before this one stopped on purpose: what it cut short
    /// (a running async action, a triggered run, a webhook's scripts) is
    /// run again without counting towards the limit on runs a crash cut
    /// short (`runner::TRIGGER_ATTEMPTS`), which stops a script that
    /// brings the server down from doing it forever. Set at start.
    pub stopped_cleanly: std::sync::atomic::AtomicBool,
}

/// The locks of one integration ([`EnvState::integration_lock`]).
///
/// The invariant they keep: a connection is never stored under an
/// integration whose deletion has listed its connections. A creation
/// holds `kept` (shared) from reading the integration and its deletion
/// mark (`connections::DELETIONS`) until the connection is written; a
/// deletion holds it (exclusive) only while it writes that mark, and
/// lists the connections after. So a creation either wrote its
/// connection before the mark (the deletion lists it and deletes it; the
/// creation's own check that its connection still exists, after it
/// scheduled it, answers 409 `connection_deleted`), or finds the mark
/// and answers 409 `integration_being_deleted`. An update holds `kept`
/// (exclusive) from reading the integration and the mark to writing the
/// integration: it does not put back one being deleted.
#[derive(Default)]
pub struct IntegrationLock {
    pub kept: tokio::sync::RwLock<()>,
    /// Deletions of the integration, one at a time, whole (a second one
    /// must not delete an integration of its key created after the
    /// first).
    pub deletion: tokio::sync::Mutex<()>,
}

/// An environment's async actions accepted and not yet ended, and the
/// bytes of their inputs (each is held in memory until it ends): bounded
/// by `ServerConfig::max_async_actions` and `max_async_action_bytes`, so
/// one tenant's flood of actions cannot take the server's memory.
#[derive(Default)]
pub struct AsyncQueue {
    /// (actions, bytes).
    waiting: std::sync::Mutex<(usize, usize)>,
}

/// One action's place in its [`AsyncQueue`], given back when dropped.
pub struct AsyncTicket {
    queue: Arc<AsyncQueue>,
    bytes: usize,
}

impl AsyncQueue {
    /// A place for an action whose input takes `bytes`, unless the queue
    /// holds `max_actions` actions already or `bytes` more would take it
    /// past `max_bytes`: then what it holds, as (actions, bytes).
    pub fn admit(
        self: &Arc<Self>,
        bytes: usize,
        max_actions: usize,
        max_bytes: usize,
    ) -> Result<AsyncTicket, (usize, usize)> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let (actions, held) = *waiting;
        if actions >= max_actions || held.saturating_add(bytes) > max_bytes {
            return Err((actions, held));
        }
        *waiting = (actions + 1, held + bytes);
        Ok(AsyncTicket {
            queue: self.clone(),
            bytes,
        })
    }

    /// What it holds now: (actions, bytes).
    pub fn waiting(&self) -> (usize, usize) {
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place whatever the queue holds (an action accepted before a
    /// restart is taken up again in any case).
    pub fn hold(self: &Arc<Self>, bytes: usize) -> AsyncTicket {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.0 += 1;
        waiting.1 = waiting.1.saturating_add(bytes);
        AsyncTicket {
            queue: self.clone(),
            bytes,
        }
    }
}

impl Drop for AsyncTicket {
    fn drop(&mut self) {
        let mut waiting = self.queue.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.0 = waiting.0.saturating_sub(1);
        waiting.1 = waiting.1.saturating_sub(self.bytes);
    }
}

impl EnvState {
    /// Whether the process before this one stopped on purpose
    /// ([`EnvState::stopped_cleanly`]).
    pub fn after_clean_stop(&self) -> bool {
        self.stopped_cleanly
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn name(&self) -> &str {
        self.store.name()
    }

    /// The lock a writer of the sync state document `key` holds.
    pub fn sync_lock(&self, key: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.sync_locks[(h.finish() % self.sync_locks.len() as u64) as usize]
    }

    /// The locks of integration `key` ([`IntegrationLock`]). Entries
    /// nobody holds are forgotten as the table grows.
    pub fn integration_lock(&self, key: &str) -> Arc<IntegrationLock> {
        let mut locks = self
            .integration_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if locks.len() >= 256 && !locks.contains_key(key) {
            // Only the table holds these: nobody waits for them (a holder
            // or waiter clones the `Arc` under this table's lock).
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(key.to_string()).or_default().clone()
    }

    /// The lock an import of connection `cid` of integration `pck` holds.
    pub fn import_lock(&self, pck: &str, cid: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (pck, cid).hash(&mut h);
        &self.import_locks[(h.finish() % self.import_locks.len() as u64) as usize]
    }

    pub fn environment(&self) -> Arc<Environment> {
        self.environment
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_variables(&self, variables: Vec<(String, String)>) {
        let mut env = self.environment.write().unwrap_or_else(|e| e.into_inner());
        let mut next = (**env).clone();
        next.variables = variables;
        *env = Arc::new(next);
    }

    pub fn deployment(&self) -> Option<Arc<Deployed>> {
        self.deployment
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_deployment(&self, d: Arc<Deployed>) {
        *self.deployment.write().unwrap_or_else(|e| e.into_inner()) = Some(d);
    }

    /// The active deployment's catalog, or 404 when nothing is deployed.
    pub fn catalog(&self) -> ApiResult<Arc<Catalog>> {
        self.deployment().map(|d| d.catalog.clone()).ok_or_else(|| {
            ApiError::not_found(
                "not_found",
                format!("nothing is deployed to environment `{}`", self.name()),
            )
        })
    }
}

/// See [`App::execution_permit`].
pub struct ExecutionPermit<'a> {
    _own: Option<tokio::sync::SemaphorePermit<'a>>,
    _all: Option<tokio::sync::SemaphorePermit<'a>>,
}

/// Everything the handlers share.
pub struct App {
    pub store: Store,
    pub runtime: Runtime,
    pub providers: Arc<ProviderCatalog>,
    pub http: reqwest::Client,
    pub config: ServerConfig,
    envs: HashMap<uuid::Uuid, Arc<EnvState>>,
    /// Bounds concurrent executions (a permit per running script).
    pub executions: Arc<Semaphore>,
    pub scheduler: Arc<crate::scheduler::Scheduler>,
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    pub logs: Arc<crate::logs::Logs>,
    /// Whether the store takes writes (`GET /health`, the operator's line).
    pub health: crate::health::StoreHealth,
    /// Uploads, deploys and rollbacks hold it shared from their first read
    /// of a component to their last write; reclaiming unused components
    /// holds it alone, so it never deletes one a deploy is about to name.
    pub components_gate: tokio::sync::RwLock<()>,
    /// A reclaim of unused components is waiting to run
    /// (`api::deploy::request_reclaim`).
    pub reclaim_requested: std::sync::atomic::AtomicBool,
    /// This app, for what scripts are handed that must reach it
    /// (`triggerSync`); set once it is in its `Arc` ([`App::set_self`]).
    me: std::sync::OnceLock<std::sync::Weak<App>>,
    /// Frontend SDKs waiting on the websocket for an OAuth flow's result.
    pub oauth_clients: Arc<crate::api::oauth::Clients>,
    /// The tasks telling the app of failed refreshes (stopped with the
    /// server).
    pub refresh_tellers: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Online backups (one at a time).
    pub backups: crate::backup::Backups,
    /// What `--metrics-listen` serves.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl App {
    /// Whether the store takes writes now, as `GET /health` answers (one
    /// durable write, or the answer of one made in the last second).
    pub async fn check_store(&self) -> Result<(), String> {
        self.health
            .probe(&self.store, &self.config.events, || {
                // Only sled holds its writes back while a backup reads it.
                self.backups.running() && matches!(self.config.store, crate::StoreKind::Sled)
            })
            .await
    }

    /// Records the `Arc` this app lives in.
    pub fn set_self(self: &Arc<Self>) {
        let _ = self.me.set(Arc::downgrade(self));
        // Each environment's failed refreshes become the app's `auth`
        // webhooks (`operation: "refresh"`, when `on_auth_refresh_error`).
        // The task holds neither the app nor the environment: it ends
        // with them.
        for env in self.envs() {
            let Some(mut failures) = env
                .refresh_failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            else {
                continue;
            };
            let (app, env) = (Arc::downgrade(self), Arc::downgrade(env));
            let task = tokio::spawn(async move {
                while let Some((c, message)) = failures.recv().await {
                    let (Some(app), Some(env)) = (app.upgrade(), env.upgrade()) else {
                        return;
                    };
                    let event = crate::webhooks::AuthEvent {
                        connection: &c,
                        auth_mode: &crate::api::connections::auth_mode(&app, &c),
                        operation: "refresh",
                        end_user: false,
                        error: Some(serde_json::json!({
                            "type": "refresh_token_external_error",
                            "description": message,
                        })),
                    };
                    crate::api::connections::tell(&app, &env, event).await;
                }
            });
            self.refresh_tellers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(task);
        }
    }

    pub async fn new(
        store: Store,
        runtime: Runtime,
        providers: Arc<ProviderCatalog>,
        config: ServerConfig,
    ) -> Result<Self, crate::ServerError> {
        let http = sluice_runtime::proxy::default_client();
        let mut envs = HashMap::new();
        if let Some(unknown) = config.env_limits.keys().find(|name| {
            !store
                .environments()
                .iter()
                .any(|e| e.name() == name.as_str())
        }) {
            return Err(crate::ServerError::Config(format!(
                "limits are set for environment `{unknown}`, which this server does not have (it has {})",
                store
                    .environments()
                    .iter()
                    .map(|e| format!("`{}`", e.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let logs = Arc::new(crate::logs::Logs::new(&config, metrics.clone()));
        for store_env in store.environments() {
            let variables = store_env.variables().await?;
            let limits = config
                .env_limits
                .get(store_env.name())
                .unwrap_or(&config.limits)
                .clone();
            let environment = Environment {
                name: store_env.name().to_string(),
                variables,
                limits: limits.clone(),
                webhook_base_url: config
                    .public_url
                    .as_ref()
                    .map(|u| format!("{}/webhook/{}", u.trim_end_matches('/'), store_env.id())),
            };
            let (refresh_failed, refresh_failures) = tokio::sync::mpsc::channel(1024);
            let state = EnvState {
                connections: Arc::new(
                    Connections::new(
                        store_env.clone(),
                        providers.clone(),
                        http.clone(),
                        limits.allowed_hosts.clone(),
                    )
                    .redirected(config.upstream_redirect.clone())
                    .logged(logs.clone())
                    .reporting(refresh_failed),
                ),
                refresh_failures: std::sync::Mutex::new(Some(refresh_failures)),
                store: store_env.clone(),
                environment: RwLock::new(Arc::new(environment)),
                deployment: RwLock::new(None),
                sync_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
                import_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
                schedules_lock: tokio::sync::Mutex::new(()),
                runs: Default::default(),
                config_lock: tokio::sync::Mutex::new(()),
                deploy_lock: tokio::sync::Mutex::new(()),
                reconcile_failures: std::sync::Mutex::new(0),
                openapi: tokio::sync::Mutex::new(None),
                stopped_cleanly: std::sync::atomic::AtomicBool::new(false),
                integration_locks: Default::default(),
                integrations_created: tokio::sync::Mutex::new(()),
                variants_lock: tokio::sync::Mutex::new(()),
                executions: Semaphore::new(crate::fair_share(
                    config.max_concurrent_executions.max(1),
                )),
                locks: Arc::default(),
                async_actions: Arc::default(),
                pending_uploads: Default::default(),
            };
            envs.insert(store_env.id(), Arc::new(state));
        }
        Ok(Self {
            executions: Arc::new(Semaphore::new(config.max_concurrent_executions)),
            scheduler: Arc::new(crate::scheduler::Scheduler::new(&config)),
            webhooks: Arc::new(crate::webhooks::Webhooks::new(&config)),
            logs,
            health: Default::default(),
            components_gate: Default::default(),
            reclaim_requested: Default::default(),
            me: std::sync::OnceLock::new(),
            oauth_clients: Default::default(),
            refresh_tellers: Default::default(),
            backups: Default::default(),
            metrics,
            store,
            runtime,
            providers,
            http,
            config,
            envs,
        })
    }

    /// A permit to run a script of `env`: one of its share, then one of
    /// the process's (held together, dropped when the script ends). An
    /// environment whose scripts hold its share waits for its own; the
    /// others still find a quarter of the permits.
    pub async fn execution_permit<'a>(&'a self, env: &'a EnvState) -> ExecutionPermit<'a> {
        let own = env.executions.acquire().await.ok();
        let all = self.executions.acquire().await.ok();
        ExecutionPermit {
            _own: own,
            _all: all,
        }
    }

    pub fn env(&self, store_env: &EnvStore) -> Option<Arc<EnvState>> {
        self.envs.get(&store_env.id()).cloned()
    }

    pub fn envs(&self) -> impl Iterator<Item = &Arc<EnvState>> {
        self.envs.values()
    }

    /// What a script of `env` may reach: all of it that environment's.
    pub fn services(&self, env: &EnvState, catalog: Option<Arc<Catalog>>) -> Arc<Services> {
        let connections = Arc::new(crate::refresh::ScriptConnections {
            inner: env.connections.clone(),
            catalog: catalog.clone(),
        });
        let mut services = Services::new(
            env.environment(),
            self.providers.clone(),
            connections,
            Arc::new(env.store.clone()),
        );
        services.locks = env.locks.clone();
        debug_assert!(
            self.me.get().is_some(),
            "App::set_self was not called: scripts' triggerSync would do nothing"
        );
        if let (Some(app), Some(env)) = (
            self.me.get().and_then(std::sync::Weak::upgrade),
            self.envs.get(&env.store.id()),
        ) {
            services.syncs = Some(Arc::new(crate::api::syncs::ScriptSyncs {
                app,
                env: env.clone(),
            }));
        }
        if let Some(c) = catalog {
            services.scripts = c;
        }
        if let Some(to) = &self.config.upstream_redirect {
            let mut network =
                sluice_runtime::upstream::Network::new(sluice_runtime::proxy::default_client());
            network.redirect = Some(to.clone());
            services.upstream = sluice_runtime::upstream::Upstream::Network(network);
        }
        Arc::new(services)
    }
}
