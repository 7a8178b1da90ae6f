//! Running scripts for the API: actions (sync and async) and sync runs with
//! the original's run semantics (§5): records saved during a run are kept
//! whatever happens; `lastSyncDate` advances and `track_deletes` runs only
//! when the run succeeds; `full_refresh` forgets `lastSyncDate`,
//! `full_refresh_and_clear_cache` also removes the sync's records.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sluice_project::catalog::Catalog;
use sluice_runtime::records::{Changes, ConnectionRef};
use sluice_runtime::{Call, ExecError, Report, Script, ScriptKind, TrackedDeletes};

use crate::app::{App, EnvState};
use crate::error::{ApiError, ApiResult};

/// Sync state per connection, sync and variant.
pub const SYNC_STATE: &str = "sync-state";
/// The sync variants created for connections (`POST /sync/:name/variant/:v`),
/// keyed by their sync state key; the base variant is not in it.
pub const SYNC_VARIANTS: &str = "sync-variants";
/// Async actions by id.
pub const ASYNC_ACTIONS: &str = "async-actions";

/// What a sync of a connection remembers between runs: its schedule, the
/// run in progress, and the last run. One document per (connection, sync,
/// variant), changed only through [`update_sync_state`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncState {
    /// Start of the last successful run.
    pub last_sync_date: Option<DateTime<Utc>>,
    /// The last job number handed out.
    pub last_job: u64,
    pub last_run: Option<RunSummary>,
    /// The schedule, once the connection and the deployed sync met (at
    /// connection creation or deploy). Kept when a deploy drops the sync,
    /// so that deploying it again restores it.
    #[serde(default)]
    pub schedule: Option<ScheduleState>,
    /// The run in progress. Written (flushed) before the script starts, so
    /// a run a crash interrupted is found at the next start and recorded
    /// as failed, never as a success.
    #[serde(default)]
    pub running: Option<RunningMark>,
    /// Whether the last run's webhooks are in the outbox: written `false`
    /// with the run's end, `true` once queued, so a crash between the two
    /// is caught up at start (see [`queue_run_webhooks`]).
    #[serde(default = "queued_before")]
    pub webhooks_queued: bool,
    /// A run asked for (`POST /sync/trigger`) and not started yet: stored
    /// (flushed) before the trigger is answered, so a restart runs it.
    #[serde(default)]
    pub queued: Option<QueuedRun>,
}

/// A triggered run waiting for its turn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QueuedRun {
    pub mode: SyncMode,
    /// When it was first asked for (ms since the epoch): a run dispatched
    /// at or after it took it.
    pub at_ms: i64,
    /// Runs of it a crash cut short.
    #[serde(default)]
    pub attempts: u32,
    /// The re-run of a scheduled run a crash cut short, not anyone's
    /// trigger: a pause drops it, as it would the schedule's next run.
    #[serde(default)]
    pub resumed: bool,
}

impl Default for SyncState {
    fn default() -> Self {
        SyncState {
            last_sync_date: None,
            last_job: 0,
            last_run: None,
            schedule: None,
            running: None,
            // Only a run's end has webhooks to queue (and says so).
            webhooks_queued: true,
            queued: None,
        }
    }
}

/// A sync run's webhooks, queued with delivery ids derived from the run
/// (so queued twice, they are the same messages), then noted as queued.
pub async fn queue_run_webhooks(
    app: &App,
    env: &EnvState,
    key: &str,
    models: &[String],
    summary: &RunSummary,
) {
    let Some((conn, name, variant)) = parse_sync_key(key) else {
        return;
    };
    let sync_type = if summary.run_type == RunType::Initial {
        "INITIAL"
    } else {
        "INCREMENTAL"
    };
    // The environment, the sync and the run's job and start: a connection
    // made again under a deleted one's id numbers its jobs from 1 again.
    let seed = format!(
        "sync-run:{}:{key}:{}:{}",
        env.store.id(),
        summary.job,
        summary.started_at.timestamp_nanos_opt().unwrap_or_default()
    );
    // Tried again over a store's passing failure (the seed gives each try
    // the same webhook ids); past the tries the next start queues them.
    let mut wait = std::time::Duration::from_secs(1);
    let mut tries = 0;
    let queued = loop {
        tries += 1;
        let queued = app
            .webhooks
            .sync_run(
                env,
                &conn,
                name,
                variant,
                models,
                summary,
                sync_type,
                Some(&seed),
            )
            .await;
        match queued {
            Err(_) if tries < 4 => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                app.config.events.say(&format!(
                    "{}: the webhooks of sync {key}'s run {} could not be queued ({}); the next start queues them",
                    env.name(),
                    summary.job,
                    e.message
                ));
                break Err(e);
            }
            Ok(q) => break Ok(q),
        }
    };
    if queued.is_ok() {
        let job = summary.job;
        let _ = update_sync_state(env, key, |s| {
            if s.last_run.as_ref().is_some_and(|r| r.job == job) {
                s.webhooks_queued = true;
            }
        })
        .await;
    }
}

/// A sync's schedule as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    pub paused: bool,
    /// The connection's own frequency (`runs` grammar), over nango.yaml's.
    #[serde(default)]
    pub frequency: Option<String>,
    /// Runs fall on `anchor + k × interval`.
    pub anchor: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningMark {
    pub job: u64,
    pub started_at: DateTime<Utc>,
    /// The trigger this run took, moved here from `queued` as it started:
    /// a start re-queues it (a few times at most) when the run was cut
    /// short, and a trigger asked meanwhile is merged with none but its
    /// own kind.
    #[serde(default)]
    pub trigger: Option<QueuedRun>,
}

/// How many times a triggered run cut short by a crash is run again at a
/// start: a run that takes the process down with it must not do so at
/// every start.
pub const TRIGGER_ATTEMPTS: u32 = 3;

/// What kind of run a job was, as `GET /sync/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunType {
    /// No `lastSyncDate` before it.
    #[default]
    Initial,
    /// An incremental sync with a `lastSyncDate`.
    Incremental,
    /// A full sync with a `lastSyncDate` (it refetches everything).
    Full,
}

/// The outcome of one run, as history and status show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub job: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub success: bool,
    pub results: BTreeMap<String, Changes>,
    #[serde(default)]
    pub error: Option<Value>,
    pub fuel: u64,
    #[serde(default, rename = "type")]
    pub run_type: RunType,
    /// The run's execution in the logs, when it has one (a failed sync's
    /// entry in its connection's `errors` names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_id: Option<String>,
}

impl RunSummary {
    /// A run that failed before or without its script finishing.
    pub fn failed(job: u64, started_at: DateTime<Utc>, code: &str, message: String) -> Self {
        RunSummary {
            job,
            started_at,
            finished_at: Utc::now(),
            success: false,
            results: BTreeMap::new(),
            error: Some(json!({ "type": code, "message": message })),
            fuel: 0,
            run_type: RunType::default(),
            log_id: None,
        }
    }
}

/// The sync state document's key: `<pck>\x1f<connection>\x1f<sync>\x1f<variant>`.
pub fn sync_key(conn: &ConnectionRef, sync: &str, variant: &str) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{sync}\u{1f}{variant}",
        conn.provider_config_key, conn.connection_id
    )
}

/// The prefix of every sync state key of a connection.
pub fn sync_key_prefix(conn: &ConnectionRef) -> String {
    format!(
        "{}\u{1f}{}\u{1f}",
        conn.provider_config_key, conn.connection_id
    )
}

/// The parts of a [`sync_key`]: connection, sync, variant.
pub fn parse_sync_key(key: &str) -> Option<(ConnectionRef, &str, &str)> {
    let mut parts = key.split('\u{1f}');
    let (pck, cid, sync, variant) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((
        ConnectionRef {
            provider_config_key: pck.to_string(),
            connection_id: cid.to_string(),
        },
        sync,
        variant,
    ))
}

/// Reads, changes and writes (flushed) a sync's state, one writer at a
/// time per sync: runs, the scheduler and the API all change it.
pub async fn update_sync_state<R>(
    env: &EnvState,
    key: &str,
    change: impl FnOnce(&mut SyncState) -> R,
) -> Result<R, sluice_store::StoreError> {
    let _guard = env.sync_lock(key).lock().await;
    let mut state: SyncState = env.store.doc(SYNC_STATE, key).await?.unwrap_or_default();
    let out = change(&mut state);
    env.store.put_doc(SYNC_STATE, key, &state).await?;
    Ok(out)
}

/// The stable id of a sync of a connection (records are stamped with it).
pub fn sync_id(conn: &ConnectionRef, sync: &str, variant: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        sync_key(conn, sync, variant).as_bytes(),
    )
    .to_string()
}

/// `incremental`, `full_refresh` or `full_refresh_and_clear_cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    #[default]
    Incremental,
    FullRefresh,
    FullRefreshAndClearCache,
}

/// The failure of an execution as the API answers it.
pub fn failure_error(e: &ExecError) -> ApiError {
    let f = e.to_failure();
    let status = axum::http::StatusCode::from_u16(f.status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    match f.error_type.as_str() {
        "action_script_runtime_error" => {
            let payload = match f.payload {
                Value::Object(_) => f.payload,
                Value::Null => json!({}),
                other => json!({ "message": other }),
            };
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "action_script_runtime_error",
                "The action script failed with a runtime error",
            )
            .with_payload(payload)
        }
        "script_http_error" => {
            let upstream = f.upstream_response.clone().unwrap_or(Value::Null);
            let mut headers = serde_json::Map::new();
            if let Some(h) = upstream["headers"].as_object() {
                for (k, v) in h {
                    if k == "content-type" || k.starts_with("x-rate") {
                        headers.insert(k.clone(), v.clone());
                    }
                }
            }
            let mut extra = serde_json::Map::new();
            extra.insert(
                "upstream".into(),
                json!({ "status": upstream["status"], "headers": headers, "body": f.payload }),
            );
            ApiError {
                status: axum::http::StatusCode::FAILED_DEPENDENCY,
                code: "script_http_error".into(),
                message: String::new(),
                payload: Some(Box::new(f.payload)),
                extra: Some(Box::new(extra)),
            }
        }
        // The original's fixed messages for these two; what went wrong
        // is in the payload (`{name, message}` of what the script threw,
        // or sluice's own reason: a trap, the CPU or memory limit).
        code @ ("script_internal_error" | "script_network_error") => {
            let message = if code == "script_network_error" {
                "A network error occurred during an HTTP call"
            } else {
                "An internal error occurred during the script execution"
            };
            let payload = match f.payload {
                Value::Null => json!({ "message": f.message }),
                other => other,
            };
            ApiError::new(status, code, message).with_payload(payload)
        }
        _ => {
            let mut err = ApiError::new(status, &f.error_type, f.message.clone());
            if !f.payload.is_null() {
                err.payload = Some(Box::new(f.payload));
            }
            err
        }
    }
}

/// The deployed script `name` of the connection's integration, of `kind`,
/// for a connection that exists. As the original, the connection is
/// looked up first: `unknown_connection` (400 for an action, 404
/// otherwise), then 404 `not_found` / `unknown_sync`.
async fn target(
    env: &EnvState,
    conn: &ConnectionRef,
    name: &str,
    kind: ScriptKind,
) -> ApiResult<(Arc<Catalog>, Arc<Script>)> {
    let pck = &conn.provider_config_key;
    if env
        .store
        .connection(pck, &conn.connection_id)
        .await?
        .is_none()
    {
        let mut e = ApiError::unknown_connection(pck, &conn.connection_id);
        if kind == ScriptKind::Action {
            e.status = axum::http::StatusCode::BAD_REQUEST;
        }
        return Err(e);
    }
    let catalog = env.catalog()?;
    let script = catalog.script(pck, name, kind).cloned().ok_or_else(|| {
        let code = if kind == ScriptKind::Sync {
            "unknown_sync"
        } else {
            "not_found"
        };
        ApiError::not_found(code, format!("integration `{pck}` has no {kind} `{name}`"))
    })?;
    Ok((catalog, script))
}

/// The answer to an execution stopped because its connection was
/// deleted while it ran.
fn deleted_during(conn: &ConnectionRef) -> ApiError {
    ApiError::not_found(
        "unknown_connection",
        format!(
            "connection `{}` of `{}` was deleted while the script ran",
            conn.connection_id, conn.provider_config_key
        ),
    )
}

/// Runs action `name` for a connection and waits for it. Its input is
/// JSON text, passed on as it came (checked by `budget::check_json`).
pub async fn run_action(
    app: &App,
    env: &EnvState,
    conn: &ConnectionRef,
    name: &str,
    input: Option<Box<RawValue>>,
) -> ApiResult<Report> {
    run_action_for(app, env, conn, name, input, None).await
}

/// [`run_action`] for the connection created at `created` (when given):
/// checked inside the connection's gate, so a connection deleted and made
/// again under the same id is not taken for it.
pub async fn run_action_for(
    app: &App,
    env: &EnvState,
    conn: &ConnectionRef,
    name: &str,
    input: Option<Box<RawValue>>,
    created: Option<DateTime<Utc>>,
) -> ApiResult<Report> {
    let running = env.runs.enter(conn).await;
    let (catalog, script) = target(env, conn, name, ScriptKind::Action).await?;
    if let Some(at) = created {
        let now = env
            .store
            .connection(&conn.provider_config_key, &conn.connection_id)
            .await?;
        if now.is_none_or(|c| c.created_at != at) {
            return Err(ApiError::not_found(
                "unknown_connection",
                format!(
                    "connection `{}` of `{}` was deleted after the action was accepted",
                    conn.connection_id, conn.provider_config_key
                ),
            ));
        }
    }
    // A run that validates its input against a model parses it into a
    // value (in the runtime): that parse's cost is booked for as long as
    // the run lasts (below).
    let validated = catalog
        .action_config(&conn.provider_config_key, name)
        .is_some_and(|a| a.input.is_some());
    let cost = match &input {
        Some(text) if validated => Some(crate::budget::parse_cost(text.get().as_bytes())),
        _ => None,
    };
    // A `null` input is passed on: `POST /action/trigger` without an
    // input gives the script `null`, as the original's (its JSON round
    // trip); no input at all (a `/v1` GET without a query) is `undefined`.
    let call = Call::Action {
        input: input.map(|v| String::from(Box::<str>::from(v))),
    };
    let exec = catalog.execution(name, conn.clone(), call, false);
    let book = |wait| async move {
        match cost {
            Some(cost) => crate::budget::book_parsed_within(
                &app.config,
                env.store.id(),
                cost,
                "this action's input",
                wait,
            )
            .await
            .map(Some),
            None => Ok(None),
        }
    };
    let report = running
        .until_stopped(async {
            // An accepted async action waits for room before it takes
            // execution slots (it may wait minutes; a request holding a
            // slot while it waits for room gives up within seconds); a
            // request, once it has its slot (waiting its turn, it holds
            // no room).
            let early = match created {
                Some(_) => book(ASYNC_ROOM_WAIT).await?,
                None => None,
            };
            let _permit = app.execution_permit(env).await;
            let _room = match early {
                Some(room) => Some(room),
                None if created.is_none() => book(app.config.room_wait).await?,
                None => None,
            };
            Ok::<_, ApiError>(
                app.runtime
                    .execute(&script, exec, app.services(env, Some(catalog.clone())))
                    .await,
            )
        })
        .await
        .ok_or_else(|| deleted_during(conn))??;
    record_execution(app, env, conn, "action", name, &report).await;
    Ok(report)
}

/// How long a run of an accepted async action waits for room to parse
/// its input ([`run_action_for`]) before it fails with `server_busy` (a
/// request waits `ServerConfig::room_wait`).
const ASYNC_ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The longest a webhook script may run (§5: 1 h).
pub const WEBHOOK_MAX_RUN: std::time::Duration = std::time::Duration::from_secs(3600);

/// Runs `onWebhookPayloadReceived` of sync `name` (its base variant) for a
/// connection with `payload`; its changes reach the app as `WEBHOOK`
/// sync webhooks.
/// Runs sync `name`'s webhook script for the connection and tells the app
/// (a sync webhook of type `WEBHOOK` per changed model, or the failure).
/// `resumed_since` is when a run of the same webhook a crash cut short
/// started: the app then hears of every change since. `seed` names this
/// run of this webhook (its id, the run's place, connection and sync): the
/// app's webhooks are queued with ids derived from it, so a run made again
/// (after a crash, or a handling tried again) sends the same messages,
/// which receivers deduplicate. Webhooks that cannot be queued are an
/// error ([`WEBHOOKS_NOT_QUEUED`]), which the caller tells the operator.
#[allow(clippy::too_many_arguments)]
pub async fn run_webhook<F: std::future::Future<Output = ApiResult<()>>>(
    app: &App,
    env: &EnvState,
    conn: &ConnectionRef,
    name: &str,
    payload: &str,
    resumed_since: Option<DateTime<Utc>>,
    seed: &str,
    on_start: Option<F>,
) -> ApiResult<()> {
    let running = env.runs.enter(conn).await;
    let (catalog, script) = target(env, conn, name, ScriptKind::Sync).await?;
    let key = sync_key(conn, name, "base");
    let state: SyncState = env.store.doc(SYNC_STATE, &key).await?.unwrap_or_default();
    let models: Vec<String> = catalog
        .sync_config(&conn.provider_config_key, name)
        .map(|s| s.output.clone())
        .unwrap_or_default();
    let call = Call::Webhook {
        payload: payload.to_string(),
    };
    let mut exec = catalog.execution(name, conn.clone(), call, false);
    exec.sync.sync_id = Some(sync_id(conn, name, "base"));
    exec.sync.job_id = Some(state.last_job);
    exec.sync.last_sync_date = state.last_sync_date;
    let started_at = Utc::now();
    let run = async {
        let _permit = app.execution_permit(env).await;
        // What the caller does as the script starts (the webhook's note).
        if let Some(on_start) = on_start {
            on_start.await?;
        }
        Ok(app
            .runtime
            .execute(&script, exec, app.services(env, Some(catalog.clone())))
            .await)
    };
    let Some(ran) = running
        .until_stopped(tokio::time::timeout(WEBHOOK_MAX_RUN, run))
        .await
    else {
        return Err(deleted_during(conn));
    };
    let ran = match ran {
        Ok(Err(e)) => return Err(e),
        Ok(Ok(report)) => Ok(report),
        Err(elapsed) => Err(elapsed),
    };
    let Ok(report) = ran else {
        let message = format!("the webhook script of `{name}` ran longer than an hour");
        // In the history, and to the app as any failed run.
        let log_id = app
            .logs
            .record_failure(env, conn, "webhook", name, started_at, message.clone())
            .await;
        let summary = RunSummary {
            run_type: RunType::Incremental,
            log_id: Some(log_id),
            ..RunSummary::failed(
                state.last_job,
                started_at,
                "webhook_timeout",
                message.clone(),
            )
        };
        queue_webhook_run_webhooks(app, env, conn, name, &models, &summary, seed).await?;
        return Err(ApiError::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "webhook_timeout",
            message,
        ));
    };
    let log_id = record_execution(app, env, conn, "webhook", name, &report).await;
    let mut summary = RunSummary {
        job: state.last_job,
        started_at,
        finished_at: Utc::now(),
        success: report.outcome.is_ok(),
        results: report.changes.clone(),
        error: report
            .logged_error()
            .map(|e| serde_json::to_value(e.to_failure()).unwrap_or(Value::Null)),
        fuel: report.fuel_consumed,
        run_type: RunType::Incremental,
        log_id: Some(log_id),
    };
    if let Some(since) = resumed_since.filter(|_| summary.success) {
        for model in &models {
            match changes_since(env, conn, model, since).await {
                Ok(c) => {
                    summary.results.insert(model.clone(), c);
                }
                Err(e) => app.config.events.say(&format!(
                    "cannot read what the cut-short webhook run of `{name}` changed: {e}"
                )),
            }
        }
        summary.started_at = since;
    }
    queue_webhook_run_webhooks(app, env, conn, name, &models, &summary, seed).await
}

/// The code of the error [`run_webhook`] gives when the app's webhooks of
/// the run could not be queued.
pub const WEBHOOKS_NOT_QUEUED: &str = "webhooks_not_queued";

/// A webhook script's run's webhooks, queued with ids derived from
/// `seed`, tried again over a store's passing failure as
/// [`queue_run_webhooks`] does.
async fn queue_webhook_run_webhooks(
    app: &App,
    env: &EnvState,
    conn: &ConnectionRef,
    name: &str,
    models: &[String],
    summary: &RunSummary,
    seed: &str,
) -> ApiResult<()> {
    let mut wait = std::time::Duration::from_secs(1);
    let mut tries = 0;
    loop {
        tries += 1;
        let queued = app
            .webhooks
            .sync_run(
                env,
                conn,
                name,
                "base",
                models,
                summary,
                "WEBHOOK",
                Some(seed),
            )
            .await;
        match queued {
            Ok(()) => return Ok(()),
            Err(_) if tries < 4 => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                return Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    WEBHOOKS_NOT_QUEUED,
                    format!(
                        "the webhooks of `{name}`'s webhook run for connection `{}` could not be queued: {}",
                        conn.connection_id, e.message
                    ),
                ));
            }
        }
    }
}

/// The changes to the connection's `model` records since `since`, read
/// from the records' own dates (a deleted record counts as deleted, one
/// first seen since as added, any other as updated).
async fn changes_since(
    env: &EnvState,
    conn: &ConnectionRef,
    model: &str,
    since: DateTime<Utc>,
) -> Result<Changes, sluice_runtime::records::RecordError> {
    use sluice_runtime::records::{Position, RecordStore as _};
    let mut changes = Changes::default();
    let mut after = Some(Position {
        updated_at: since,
        internal_id: uuid::Uuid::nil(),
    });
    while let Some(from) = after.take() {
        let (page, next) = env.store.list(conn, model, Some(from), 1_000).await?;
        for r in &page {
            if r.deleted_at.is_some() {
                changes.deleted += 1;
            } else if r.created_at >= since {
                changes.added += 1;
            } else {
                changes.updated += 1;
            }
        }
        after = next;
    }
    Ok(changes)
}

/// The longest an event script may run (§5: 5 min).
pub const EVENT_MAX_RUN: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs the connection's event scripts for `event`, one after another.
/// A failure is kept in the connection's history and does not stop the
/// others, nor what the event is about.
pub async fn run_event_scripts(
    app: &App,
    env: &EnvState,
    conn: &ConnectionRef,
    event: sluice_nango_yaml::EventKind,
) {
    let _ = run_events(app, env, conn, event, false).await;
}

/// Runs the connection's `validate-connection` scripts (zero-yaml), one
/// after another, while the connection is being created: the first that
/// fails refuses the connection, `Err` naming the script and its error.
pub async fn validate_connection(
    app: &App,
    env: &EnvState,
    conn: &ConnectionRef,
) -> Result<(), EventFailure> {
    run_events(
        app,
        env,
        conn,
        sluice_nango_yaml::EventKind::ValidateConnection,
        true,
    )
    .await
}

/// An event script that failed: why, and its execution in the logs (none
/// when the connection went away during it).
#[derive(Debug)]
pub struct EventFailure {
    pub message: String,
    pub log_id: Option<String>,
}

/// Runs the event scripts of `event` in the order declared, each kept in
/// the connection's history; with `stop_at_failure` the first failure ends
/// the run and is returned.
async fn run_events(
    app: &App,
    env: &EnvState,
    conn: &ConnectionRef,
    event: sluice_nango_yaml::EventKind,
    stop_at_failure: bool,
) -> Result<(), EventFailure> {
    let Some(catalog) = env.deployment().map(|d| d.catalog.clone()) else {
        return Ok(());
    };
    let Some(integration) = catalog.config.integration(&conn.provider_config_key) else {
        return Ok(());
    };
    let running = env.runs.enter(conn).await;
    let names: Vec<String> = integration
        .on_events
        .iter()
        .filter(|e| e.event == event)
        .map(|e| e.name.clone())
        .collect();
    for name in names {
        let Some(script) = catalog
            .script(&conn.provider_config_key, &name, ScriptKind::OnEvent)
            .cloned()
        else {
            continue;
        };
        let exec = catalog.execution(&name, conn.clone(), Call::OnEvent, false);
        let started_at = Utc::now();
        let run = async {
            let _permit = app.execution_permit(env).await;
            app.runtime
                .execute(&script, exec, app.services(env, Some(catalog.clone())))
                .await
        };
        let Some(ran) = running
            .until_stopped(tokio::time::timeout(EVENT_MAX_RUN, run))
            .await
        else {
            return Err(EventFailure {
                message: "the connection was deleted during the script".into(),
                log_id: None,
            });
        };
        let failure = match ran {
            Ok(report) => {
                let log_id = record_execution(app, env, conn, "event", &name, &report).await;
                report.logged_error().map(|e| (e.to_string(), log_id))
            }
            Err(_) => {
                let message = format!(
                    "stopped after {} s, the longest an event script may run",
                    EVENT_MAX_RUN.as_secs()
                );
                let log_id = app
                    .logs
                    .record_failure(env, conn, "event", &name, started_at, message.clone())
                    .await;
                Some((message, log_id))
            }
        };
        if let Some((message, log_id)) = failure.filter(|_| stop_at_failure) {
            return Err(EventFailure {
                message: format!("script `{name}` failed: {message}"),
                log_id: Some(log_id),
            });
        }
    }
    Ok(())
}

/// Keeps an execution in the connection's history and its logs (best
/// effort: history must not fail the execution it describes).
async fn record_execution(
    app: &App,
    env: &EnvState,
    conn: &ConnectionRef,
    kind: &str,
    name: &str,
    report: &Report,
) -> String {
    app.logs.record(env, conn, kind, name, report).await
}

/// Whether the sync variant of state key `key` exists: created, and not
/// being deleted.
pub async fn variant_exists(env: &EnvState, key: &str) -> Result<bool, sluice_store::StoreError> {
    let doc: Option<Value> = env.store.doc(SYNC_VARIANTS, key).await?;
    Ok(doc.is_some_and(|d| d["deleting"] != true))
}

/// The stored trigger a run dispatched at `dispatched_ms` takes (a
/// trigger asked after its dispatch is later, and stays queued).
fn take_trigger(state: &mut SyncState, dispatched_ms: i64) -> Option<QueuedRun> {
    let taken = state.queued.filter(|q| q.at_ms <= dispatched_ms)?;
    state.queued = None;
    Some(taken)
}

/// Runs sync `name` once for a connection, with the run semantics of §5;
/// a run longer than `max_run` is stopped and fails. The caller makes sure
/// runs of one sync do not overlap (the scheduler does); it dispatched the
/// run at `dispatched_ms`, which takes every trigger stored before it.
/// `cancel` turning `true` stops the run where it stands (a full refresh
/// triggered during it, which runs next): recorded as `sync_cancelled`,
/// the app told nothing, as for a run its connection's deletion stopped.
#[allow(clippy::too_many_arguments)]
pub async fn run_sync(
    app: &App,
    env: &EnvState,
    conn: &ConnectionRef,
    name: &str,
    variant: &str,
    mode: SyncMode,
    dispatched_ms: i64,
    max_run: std::time::Duration,
    mut cancel: tokio::sync::watch::Receiver<bool>,
) -> ApiResult<RunSummary> {
    let running = env.runs.enter(conn).await;
    let key = sync_key(conn, name, variant);
    // A variant's run holds its gate too: deleting the variant stops it.
    let variant_running = if variant == "base" {
        None
    } else {
        Some(env.runs.enter_variant(&key).await)
    };
    let found = match target(env, conn, name, ScriptKind::Sync).await {
        Ok(_) if variant != "base" && !variant_exists(env, &key).await? => {
            Err(crate::error::ApiError::not_found(
                "unknown_sync",
                format!("the variant `{variant}` of sync `{name}` was deleted"),
            ))
        }
        found => found,
    };
    let (catalog, script) = match found {
        Ok(found) => found,
        Err(e) => {
            // Nothing to run: a trigger it took is done with (a state
            // only where one still is: not for a deleted connection).
            let _guard = env.sync_lock(&key).lock().await;
            if let Some(mut state) = env.store.doc::<SyncState>(SYNC_STATE, &key).await?
                && state.queued.is_some_and(|q| q.at_ms <= dispatched_ms)
            {
                take_trigger(&mut state, dispatched_ms);
                env.store.put_doc(SYNC_STATE, &key, &state).await?;
            }
            return Err(e);
        }
    };
    let config = catalog.sync_config(&conn.provider_config_key, name);
    let models: Vec<String> = config.map(|s| s.output.clone()).unwrap_or_default();
    let incremental =
        config.is_some_and(|s| s.sync_type == sluice_nango_yaml::SyncType::Incremental);
    let full_name = |m: &str| {
        if variant == "base" {
            m.to_string()
        } else {
            format!("{m}::{variant}")
        }
    };
    // The state first (flushed): a full refresh that a crash or a store
    // error cuts short below has forgotten its `lastSyncDate` already, so
    // the next run starts over instead of going on from a cleared model.
    let started_at = Utc::now();
    let (job, last_sync_date) = update_sync_state(env, &key, |state| {
        if mode != SyncMode::Incremental {
            state.last_sync_date = None;
        }
        state.last_job += 1;
        // The trigger moves into the mark, in the same write: a crash
        // during the run finds it there.
        let trigger = take_trigger(state, dispatched_ms).map(|q| QueuedRun {
            attempts: q.attempts + 1,
            ..q
        });
        state.running = Some(RunningMark {
            job: state.last_job,
            started_at,
            trigger,
        });

        (state.last_job, state.last_sync_date)
    })
    .await?;
    let cleared = async {
        // A full refresh starts over: the script's checkpoint goes too,
        // and its trackDeletes starts, as the original's (every checkpoint
        // of the sync).
        if mode != SyncMode::Incremental {
            let sync_name = full_name(name);
            let mut keys = vec![sync_name.clone()];
            keys.extend(
                models
                    .iter()
                    .map(|m| sluice_runtime::track_deletes_key(&sync_name, m)),
            );
            for key in keys {
                sluice_runtime::records::RecordStore::set_checkpoint(&env.store, conn, &key, None)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        if mode == SyncMode::FullRefreshAndClearCache {
            for m in &models {
                env.store
                    .clear_records(conn, &full_name(m))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok::<(), String>(())
    }
    .await;
    if let Err(e) = cleared {
        let message = format!("clearing the sync's checkpoint or records failed: {e}");
        let log_id = app
            .logs
            .record_failure(env, conn, "sync", name, started_at, message.clone())
            .await;
        let summary = RunSummary {
            log_id: Some(log_id),
            ..RunSummary::failed(job, started_at, "sync_clear_failed", message.clone())
        };
        update_sync_state(env, &key, |state| {
            state.running = None;
            state.last_run = Some(summary.clone());
            state.webhooks_queued = false;
        })
        .await?;
        // Told as every failed run is.
        app.config.events.say(&format!(
            "{}: sync `{}` of connection `{}` ({}) failed: {message}",
            env.name(),
            sync_label(name, variant),
            conn.connection_id,
            conn.provider_config_key,
        ));
        queue_run_webhooks(app, env, &key, &models, &summary).await;
        return Err(crate::error::ApiError::internal(message));
    }
    let run_type = match (last_sync_date, incremental) {
        (None, _) => RunType::Initial,
        (Some(_), true) => RunType::Incremental,
        (Some(_), false) => RunType::Full,
    };

    let id = sync_id(conn, name, variant);
    let mut exec = catalog.execution(name, conn.clone(), Call::Sync, false);
    exec.sync.variant = variant.to_string();
    exec.sync.sync_id = Some(id.clone());
    exec.sync.job_id = Some(job);
    exec.sync.job_run = true;
    exec.sync.last_sync_date = last_sync_date;
    let track_deletes = exec.sync.track_deletes;
    let execution = async {
        let _permit = app.execution_permit(env).await;
        app.runtime
            .execute(&script, exec, app.services(env, Some(catalog.clone())))
            .await
    };
    let bounded = async {
        tokio::select! {
            biased;
            out = tokio::time::timeout(max_run, execution) => Some(out),
            // (A sender gone cancels nothing.)
            _ = async {
                if cancel.wait_for(|c| *c).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => None,
        }
    };
    let outer = running
        .until_stopped(async {
            match &variant_running {
                Some(v) => v.until_stopped(bounded).await,
                None => Some(bounded.await),
            }
        })
        .await;
    // Stopped by the variant's deletion, not the connection's; or
    // cancelled.
    let variant_deleted = matches!(outer, Some(None));
    let cancelled = matches!(outer, Some(Some(None)));
    let ran = outer.flatten().flatten();
    let stopped = ran.is_none();
    let summary = match ran {
        Some(Ok(mut report)) => {
            let mut results = report.changes.clone();
            let mut error = report
                .logged_error()
                .map(|e| serde_json::to_value(e.to_failure()).unwrap_or(Value::Null));
            // nango.yaml's `track_deletes` covers every model, this run's
            // saves; a script's trackDeletesStart/End the models it names,
            // since its start (which an earlier run may have made).
            let mut tracked: Vec<TrackedDeletes> = if track_deletes {
                models
                    .iter()
                    .map(|m| TrackedDeletes {
                        model: full_name(m),
                        since_job: None,
                        start_key: None,
                        ended: true,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            for t in &report.tracked_deletes {
                match tracked.iter_mut().find(|k| k.model == t.model) {
                    // Both: the earlier start keeps more.
                    Some(k) => {
                        k.since_job = t.since_job;
                        k.start_key.clone_from(&t.start_key);
                    }
                    None => tracked.push(t.clone()),
                }
            }
            // Every model the run wrote or tracks, for forgetting below.
            let mut written: Vec<String> = report.changes.keys().cloned().collect();
            for t in &tracked {
                if !written.contains(&t.model) {
                    written.push(t.model.clone());
                }
            }
            let mut ended = Vec::new();
            if error.is_none() {
                for t in &tracked {
                    let since = t.since_job.unwrap_or(job);
                    match env.store.delete_stale(conn, &t.model, &id, since).await {
                        Ok(deleted) => {
                            results.entry(t.model.clone()).or_default().deleted += deleted;
                            ended.extend(t.start_key.clone());
                        }
                        Err(e) => {
                            // The run fails (lastSyncDate stays), and says why.
                            error = Some(json!({
                                "type": "sync_track_deletes_failed",
                                "message": format!("deleting the records the run did not see failed: {e}"),
                            }));
                            break;
                        }
                    }
                }
            }
            // A start whose deletes are made is over; one whose run failed
            // stands for the next run's end. Left behind (a failed write),
            // the next end deletes from the same start, which keeps more.
            for key in &ended {
                let _ = sluice_runtime::records::RecordStore::set_checkpoint(
                    &env.store, conn, key, None,
                )
                .await;
            }
            // What the run noted as seen is for `track_deletes` only: kept
            // (stamped) while a start is open, so a later run's end keeps
            // what this one saw; else forgotten. Left behind (a failed
            // write) it only takes space until the sync's next run settles
            // it.
            for full in &written {
                let open = open_start(env, conn, name, variant, &models, full, &ended).await;
                let _ = if open {
                    env.store.keep_seen(conn, full, &id).await
                } else {
                    env.store.forget_seen(conn, full, &id).await
                };
            }
            // The history counts what `track_deletes` deleted too, as the
            // sync's status does.
            report.changes.clone_from(&results);
            // A run the script ended well whose deletes failed failed: the
            // history, the logs and the metrics say so, as its status does.
            if report.outcome.is_ok()
                && let Some(e) = &error
            {
                report.outcome = Err(sluice_runtime::ExecError::Script(
                    sluice_runtime::exec::ScriptFailure {
                        error_type: e["type"].as_str().unwrap_or("sync_failed").to_string(),
                        message: e["message"].as_str().unwrap_or_default().to_string(),
                        payload: Value::Null,
                        status: 500,
                        upstream_response: None,
                    },
                ));
            }
            let log_id = record_execution(app, env, conn, "sync", name, &report).await;
            RunSummary {
                job,
                started_at,
                finished_at: Utc::now(),
                success: error.is_none(),
                results,
                error,
                fuel: report.fuel_consumed,
                run_type,
                log_id: Some(log_id),
            }
        }
        stopped_or_late => {
            let (code, message) = match stopped_or_late {
                None if variant_deleted => (
                    "sync_variant_deleted",
                    format!("the variant `{variant}` was deleted during the run"),
                ),
                None if cancelled => (
                    "sync_cancelled",
                    "the run was cancelled by a full refresh triggered during it, which runs next"
                        .to_string(),
                ),
                None => (
                    "connection_deleted",
                    "the connection was deleted during the run".to_string(),
                ),
                _ => (
                    "sync_timeout",
                    format!(
                        "the run was stopped after {} s, the longest a sync may run",
                        max_run.as_secs()
                    ),
                ),
            };
            let log_id = app
                .logs
                .record_failure(env, conn, "sync", name, started_at, message.clone())
                .await;
            RunSummary {
                run_type,
                log_id: Some(log_id),
                ..RunSummary::failed(job, started_at, code, message)
            }
        }
    };
    update_sync_state(env, &key, |state| {
        if summary.success {
            state.last_sync_date = Some(started_at);
        }
        state.running = None;
        state.last_run = Some(summary.clone());
        // A run stopped for its connection's deletion tells the app nothing.
        state.webhooks_queued = stopped;
    })
    .await?;
    if !summary.success && !stopped {
        app.config.events.say(&format!(
            "{}: sync `{}` of connection `{}` ({}) failed: {}",
            env.name(),
            sync_label(name, variant),
            conn.connection_id,
            conn.provider_config_key,
            error_text(summary.error.as_ref()),
        ));
    }
    if !stopped {
        // The run is done and recorded whatever happens to its webhooks.
        queue_run_webhooks(app, env, &key, &models, &summary).await;
    }
    Ok(summary)
}

/// `name`, or `name::variant` for a variant.
pub(crate) fn sync_label(name: &str, variant: &str) -> String {
    if variant == "base" {
        name.to_string()
    } else {
        format!("{name}::{variant}")
    }
}

/// A stored error's message for one line of the event log: its first
/// line (a script's message can hold a stack, or lines of its own).
pub(crate) fn error_text(error: Option<&Value>) -> String {
    let text = match error {
        Some(e) => e["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string()),
        None => "no error recorded".into(),
    };
    // On one line, indentation folded (a ZodError's message is indented
    // JSON whose first line says nothing); the event log cuts it at 1,000
    // characters.
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An async action, stored before the 202 so it survives a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AsyncAction {
    pub id: String,
    pub provider_config_key: String,
    pub connection_id: String,
    pub action: String,
    /// Its input as the app sent it (JSON text).
    pub input: Option<Box<RawValue>>,
    /// `pending`, `running`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub max_retries: u32,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the connection it was accepted for was created: a connection
    /// deleted and made again under the same id (created later) is not
    /// that connection, and the action fails rather than run for it.
    #[serde(default)]
    pub connection_created_at: Option<DateTime<Utc>>,
    /// Whether its completion webhook is in the outbox: written `false`
    /// with the final state, then `true` once queued, so a crash between
    /// the two is caught up at start (the delivery's id comes from the
    /// action's, so one queued twice is the same message).
    #[serde(default = "queued_before")]
    pub webhook_queued: bool,
    /// Attempts a crash cut short: they do not count against
    /// `max_retries`, but past [`TRIGGER_ATTEMPTS`] of them the action
    /// fails, so one that takes the process down does not run at every
    /// start.
    #[serde(default)]
    pub interrupted: u32,
}

/// Documents written before the flag were queued in the same step.
fn queued_before() -> bool {
    true
}

/// Runs an async action to its end, retrying failures up to its
/// `max_retries`, saving each state change.
/// Its place in the environment's queue of async actions is `_ticket`'s,
/// given back when it ends.
pub async fn drive_async_action(
    app: Arc<App>,
    env: Arc<EnvState>,
    mut a: AsyncAction,
    _ticket: crate::app::AsyncTicket,
) {
    let conn = ConnectionRef {
        provider_config_key: a.provider_config_key.clone(),
        connection_id: a.connection_id.clone(),
    };
    loop {
        a.status = "running".into();
        a.attempts += 1;
        a.updated_at = Utc::now();
        save_async_action(&app, &env, &a).await;
        let outcome = run_action_for(
            &app,
            &env,
            &conn,
            &a.action,
            a.input.clone(),
            a.connection_created_at,
        )
        .await;
        // Retrying cannot bring a deleted connection back.
        let gone = matches!(&outcome, Err(e) if e.code == "unknown_connection");
        let failure = match outcome {
            Ok(report) => match report.outcome {
                Ok(output) => {
                    a.status = "succeeded".into();
                    a.output = Some(output.unwrap_or(Value::Null));
                    None
                }
                Err(e) => Some(failure_error(&e)),
            },
            Err(e) => Some(e),
        };
        if let Some(err) = failure {
            a.error = Some(json!({
                "status": err.status.as_u16(),
                "code": err.code,
                "message": err.message,
                "payload": err.payload,
                "extra": err.extra,
            }));
            if a.attempts <= a.max_retries && !gone {
                // A failure that a retry may fix (an upstream's 429 or
                // 5xx) needs time first: base × 2^(attempt-1), at most
                // five minutes. The state says what is coming meanwhile.
                a.status = "pending".into();
                a.updated_at = Utc::now();
                save_async_action(&app, &env, &a).await;
                let wait = app
                    .config
                    .action_retry_base
                    .saturating_mul(1 << (a.attempts - 1).min(16))
                    .min(std::time::Duration::from_secs(300));
                tokio::time::sleep(wait).await;
                continue;
            }
            a.status = "failed".into();
        }
        a.updated_at = Utc::now();
        a.webhook_queued = false;
        // The app hears of the end only once it is stored: an end the
        // store refused leaves the action running there, and the next
        // start runs it again (telling the app now would tell it twice).
        if save_async_action(&app, &env, &a).await {
            queue_completion(&app, &env, a).await;
        }
        return;
    }
}

/// Stores an async action's state, tried four times over a few seconds
/// (a store refusing writes for a moment); `false`, and the operator
/// told, when it could not be.
async fn save_async_action(app: &App, env: &EnvState, a: &AsyncAction) -> bool {
    let mut wait = std::time::Duration::from_millis(500);
    for attempt in 1..=4 {
        match env.store.put_doc(ASYNC_ACTIONS, &a.id, a).await {
            Ok(()) => return true,
            Err(e) if attempt == 4 => app.config.events.say(&format!(
                "{}: async action {} ({}) could not be stored as {} ({e}); the next start runs it again if it is not",
                env.name(),
                a.id,
                a.action,
                a.status
            )),
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
    false
}

/// Queues an ended async action's webhook and notes that it is queued.
async fn queue_completion(app: &App, env: &EnvState, mut a: AsyncAction) {
    if app.webhooks.async_action(env, &a).await.is_ok() {
        a.webhook_queued = true;
        let _ = env.store.put_doc_unflushed(ASYNC_ACTIONS, &a.id, &a).await;
    }
}

/// Starts every async action a previous process accepted and did not
/// finish (pending, or running when it stopped: it runs again).
pub async fn resume_async_actions(app: &Arc<App>) -> Result<(), crate::ServerError> {
    for env in app.envs() {
        let mut after: Option<String> = None;
        loop {
            let page: Vec<(String, AsyncAction)> = env
                .store
                .docs(ASYNC_ACTIONS, "", after.as_deref(), 500, false)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (_, mut a) in page {
                if !a.webhook_queued && (a.status == "succeeded" || a.status == "failed") {
                    // Ended, and the process stopped before its webhook
                    // was queued.
                    queue_completion(app, env, a).await;
                    continue;
                }
                if a.status == "pending" || a.status == "running" {
                    app.config.events.say(&format!(
                        "{}: async action `{}` ({}) of connection `{}` ({}) taken up again",
                        env.name(),
                        a.action,
                        a.id,
                        a.connection_id,
                        a.provider_config_key,
                    ));
                    if a.status == "running" {
                        // The attempt in flight died with the process: a
                        // crash's counts towards giving up (a stop on
                        // purpose's does not).
                        a.attempts = a.attempts.saturating_sub(1);
                        if !env.after_clean_stop() {
                            a.interrupted += 1;
                        }
                        if a.interrupted >= TRIGGER_ATTEMPTS {
                            a.status = "failed".into();
                            a.error = Some(json!({
                                "status": 500,
                                "code": "action_interrupted",
                                "message": format!(
                                    "the server stopped during the action {} times; it is not run again",
                                    a.interrupted
                                ),
                                "payload": null,
                            }));
                            a.updated_at = Utc::now();
                            a.webhook_queued = false;
                            env.store.put_doc(ASYNC_ACTIONS, &a.id, &a).await?;
                            queue_completion(app, env, a).await;
                            continue;
                        }
                    }
                    let ticket = env.async_actions.hold(input_bytes(&a.input));
                    tokio::spawn(drive_async_action(app.clone(), env.clone(), a, ticket));
                }
            }
        }
    }
    Ok(())
}

/// What an async action's input counts for in its environment's queue:
/// the memory it takes as values (it is held as its text, and parsed when
/// its run validates it), which for a body of small values is tens of
/// times its length as JSON.
pub fn input_bytes(input: &Option<Box<RawValue>>) -> usize {
    input
        .as_ref()
        .map_or(0, |i| crate::budget::value_footprint(i.get().as_bytes()))
}

/// Whether a `trackDeletesStart` of the model (full name `full`) is kept
/// for the sync and not among the starts just `ended`. Unknown is open:
/// keeping notes only costs stamps.
async fn open_start(
    env: &EnvState,
    conn: &ConnectionRef,
    name: &str,
    variant: &str,
    models: &[String],
    full: &str,
    ended: &[String],
) -> bool {
    let with_variant = |m: &str| {
        if variant == "base" {
            m.to_string()
        } else {
            format!("{m}::{variant}")
        }
    };
    let Some(model) = models.iter().find(|m| with_variant(m) == full) else {
        return false;
    };
    let key = sluice_runtime::track_deletes_key(&with_variant(name), model);
    if ended.contains(&key) {
        return false;
    }
    sluice_runtime::records::RecordStore::checkpoint(&env.store, conn, &key)
        .await
        .map_or(true, |v| v.is_some())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::error_text;

    /// The operator's line keeps the whole cause: a multi-line message (a
    /// ZodError's indented JSON) is folded onto one line, not cut at its
    /// first, which said only `ZodError: [`.
    #[test]
    fn a_multi_line_error_is_told_whole_on_one_line() {
        let e = json!({"message": "ZodError: [\n  {\n    \"path\": [\"id\"],\n    \"message\": \"Required\"\n  }\n]"});
        assert_eq!(
            error_text(Some(&e)),
            r#"ZodError: [ { "path": ["id"], "message": "Required" } ]"#
        );
        assert_eq!(error_text(None), "no error recorded");
    }
}
