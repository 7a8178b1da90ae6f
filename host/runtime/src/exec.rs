//! Running a script: the request, the services it may use, and the report.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use wasmtime::{Store, UpdateDeadline};

use crate::bindings::types::{Response, ScriptError};
use crate::connection::ConnectionStore;
use crate::engine::{Script, ScriptPre};
use crate::host::HostState;
use crate::limits::Limits;
use crate::providers::ProviderCatalog;
use crate::records::{Changes, ConnectionRef, RecordStore};
use crate::upstream::Upstream;
use crate::{Runtime, ScriptKind};

/// A tenant: its name, variables and limits.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub name: String,
    /// What `getEnvironmentVariables` returns.
    pub variables: Vec<(String, String)>,
    pub limits: Limits,
    /// The base of incoming-webhook URLs (`<base>/<providerConfigKey>`), when
    /// a server receives them.
    pub webhook_base_url: Option<String>,
}

/// Which export to call.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// A sync's `fetchData`.
    Sync,
    /// A sync's `onWebhookPayloadReceived` with the raw webhook body (JSON).
    Webhook { payload: String },
    /// An action with its input as JSON; `{}` and none both arrive as none.
    Action { input: Option<String> },
    /// An event script.
    OnEvent,
    /// A zero-yaml test file run by the bundle's harness (`run-test`), with
    /// its spec as JSON; the output is one `{name, ok, message}` per `it`.
    /// Runs on [`crate::Runtime::test_harness`] scripts only.
    Test { spec: String },
}

impl Call {
    fn kind(&self) -> ScriptKind {
        match self {
            Call::Sync | Call::Webhook { .. } => ScriptKind::Sync,
            Call::Action { .. } | Call::Test { .. } => ScriptKind::Action,
            Call::OnEvent => ScriptKind::OnEvent,
        }
    }
}

/// What a sync run knows about itself.
#[derive(Debug, Clone)]
pub struct SyncRun {
    pub sync_id: Option<String>,
    pub job_id: Option<u64>,
    /// This is a run of job `job_id` (not a webhook script writing for the
    /// sync): see [`crate::records::WriteContext::job_run`].
    pub job_run: bool,
    /// Start of the last successful run.
    pub last_sync_date: Option<DateTime<Utc>>,
    pub variant: String,
    pub track_deletes: bool,
    /// The models the sync declares as output; `None` accepts any.
    pub models: Option<Vec<String>>,
}

impl Default for SyncRun {
    fn default() -> Self {
        Self {
            sync_id: None,
            job_id: None,
            job_run: false,
            last_sync_date: None,
            variant: "base".into(),
            track_deletes: false,
            models: None,
        }
    }
}

impl SyncRun {
    /// `Model` for the base variant, `Model::variant` otherwise.
    pub fn model_full_name(&self, model: &str) -> String {
        if self.variant == "base" {
            model.to_string()
        } else {
            format!("{model}::{}", self.variant)
        }
    }
}

/// A model whose deletes a sync tracks (`trackDeletesStart`, then
/// `trackDeletesEnd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedDeletes {
    /// The model's full name (`Model::variant` for a variant).
    pub model: String,
    /// The job of the start: records last saved before it are the ones
    /// to delete. A start outlives its run, as the original's does (a
    /// sync that resumes from a checkpoint ends what an earlier run
    /// started); `None` outside a job run (a dry run): this run.
    pub since_job: Option<u64>,
    /// Where the start is kept ([`track_deletes_key`]), to clear once its
    /// deletes are made.
    pub start_key: Option<String>,
    /// Whether `trackDeletesEnd` was called.
    pub ended: bool,
}

/// Where a job run's `trackDeletesStart` of `model` is kept, among the
/// connection's checkpoints (the original's key): `sync` is the sync's
/// full name (with its variant).
pub fn track_deletes_key(sync: &str, model: &str) -> String {
    format!("{sync}:trackDeletes:{model}")
}

/// One execution request.
#[derive(Debug, Clone)]
pub struct Execution {
    pub script_name: String,
    /// The connection the script acts for, in the services' environment.
    pub connection: ConnectionRef,
    pub call: Call,
    pub sync: SyncRun,
    pub activity_log_id: String,
    /// A frozen wall clock for the script (`Date.now()` and friends), for
    /// replaying recordings made at a known time.
    pub clock: Option<DateTime<Utc>>,
    /// Checks of records and action input/output against the models.
    pub validation: Option<ScriptValidation>,
    /// A record id given twice in one `batchSave` chunk keeps its last
    /// occurrence (the original's CLI dry run) instead of its first (the
    /// original's platform).
    pub duplicates_keep_last: bool,
    /// The script is of the zero-yaml format, whose SDK differs from a
    /// nango.yaml script's in two places: an action input of exactly `{}`
    /// reaches its `exec` as `{}` (a nango.yaml script's `runAction` gets
    /// no input, as the original's runner passes it), and link pagination
    /// yields every page, empty or missing too, until there is no next
    /// link (or it repeats), taking the body's link when the header gives
    /// none (nango-zero.md §5.6; a nango.yaml script's stops at an empty
    /// page).
    pub zero_yaml: bool,
    /// How many `triggerAction`s led here.
    pub(crate) depth: u32,
    /// What the calling execution has left, for an action a script
    /// triggered: it runs within its caller's deadline and fuel instead of
    /// a fresh budget of its own.
    pub(crate) within: Option<Budget>,
}

/// The deadline and fuel an execution may still use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) deadline: Instant,
    /// `None` when fuel is not metered.
    pub(crate) fuel: Option<u64>,
}

impl Execution {
    pub fn new(script_name: impl Into<String>, connection: ConnectionRef, call: Call) -> Self {
        Self {
            script_name: script_name.into(),
            connection,
            call,
            sync: SyncRun::default(),
            activity_log_id: uuid::Uuid::new_v4().to_string(),
            clock: None,
            validation: None,
            duplicates_keep_last: false,
            zero_yaml: false,
            depth: 0,
            within: None,
        }
    }
}

/// What to validate for one script: batchSave records against their model,
/// and an action's input and output against the models nango.yaml names.
#[derive(Debug, Clone)]
pub struct ScriptValidation {
    pub schema: Arc<crate::validate::Validation>,
    pub input: Option<String>,
    pub output: Option<String>,
}

impl ScriptValidation {
    /// Checks an action's input or output: a warning log, or (strict) the
    /// original's `invalid_action_input` / `invalid_action_output` error.
    fn check_io(
        &self,
        which: &str,
        model: Option<&String>,
        value: Option<&Value>,
        state: &mut HostState,
    ) -> Result<(), ScriptError> {
        let Some(model) = model else {
            return Ok(());
        };
        let errors = self.schema.check(model, value.unwrap_or(&Value::Null));
        if errors.is_empty() {
            return Ok(());
        }
        // The value itself when it is small; a large one (its violations
        // name where they are) is not copied into the log.
        let shown = value.map(|v| {
            let text = serde_json::to_string(v).unwrap_or_default();
            if text.len() <= MAX_VALUE_SHOWN {
                v.clone()
            } else {
                Value::String(format!("({} bytes, not shown)", text.len()))
            }
        });
        let meta = serde_json::json!({ which: shown, "validation": errors, "model": model });
        if self.schema.strict {
            return Err(ScriptError::Sdk(crate::bindings::types::NangoError {
                code: format!("invalid_action_{which}"),
                message: format!("Invalid action {which}: {}", errors.join("; ")),
                payload: Some(meta.to_string().into()),
            }));
        }
        state.push_log(LogEntry {
            meta: Some(meta),
            ..LogEntry::internal(LogLevel::Warn, format!("Invalid action {which}"))
        });
        Ok(())
    }
}

/// The largest action input or output (as JSON text) an invalid one's
/// warning or error shows.
const MAX_VALUE_SHOWN: usize = 64 * 1024;

/// Finds the action a `triggerAction` names.
pub trait ScriptDirectory: Send + Sync {
    fn action(&self, provider_config_key: &str, name: &str) -> Option<Arc<Script>>;
}

/// Scripts by integration and name, in memory.
#[derive(Default)]
pub struct ScriptSet {
    scripts: RwLock<HashMap<(String, String), Arc<Script>>>,
}

impl ScriptSet {
    pub fn insert(&self, provider_config_key: &str, name: &str, script: Arc<Script>) {
        self.scripts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((provider_config_key.into(), name.into()), script);
    }
}

impl ScriptDirectory for ScriptSet {
    fn action(&self, pck: &str, name: &str) -> Option<Arc<Script>> {
        self.scripts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(pck.to_string(), name.to_string()))
            .filter(|s| s.kind() == ScriptKind::Action)
            .cloned()
    }
}

/// Starting syncs from a script (`nango.triggerSync`, `nango.startSync`):
/// a server's, acting in the environment of the [`Services`] it is in.
#[async_trait::async_trait]
pub trait SyncControl: Send + Sync {
    /// A `POST /sync/trigger` body.
    async fn trigger(&self, body: &[u8]) -> Result<(), SyncControlError>;
    /// A `POST /sync/start` body.
    async fn start(&self, body: &[u8]) -> Result<(), SyncControlError>;
}

/// Why a [`SyncControl`] refused: the API's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncControlError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// What executions may use: everything a script can reach, all of one
/// environment. A server keeps one `Services` per environment, built from
/// that environment's stores, so no lookup a script makes can leave it.
pub struct Services {
    pub environment: Arc<Environment>,
    pub providers: Arc<ProviderCatalog>,
    pub connections: Arc<dyn ConnectionStore>,
    pub records: Arc<dyn RecordStore>,
    pub scripts: Arc<dyn ScriptDirectory>,
    pub upstream: Upstream,
    /// The environment's locks (`tryAcquireLock`): a server gives every
    /// execution of an environment the same table; [`Services::new`]
    /// makes a fresh one.
    pub locks: Arc<crate::locks::Locks>,
    /// Where `triggerSync`/`startSync` go: none outside a server (a dry
    /// run logs them).
    pub syncs: Option<Arc<dyn SyncControl>>,
}

impl Services {
    pub fn new(
        environment: Arc<Environment>,
        providers: Arc<ProviderCatalog>,
        connections: Arc<dyn ConnectionStore>,
        records: Arc<dyn RecordStore>,
    ) -> Self {
        Self {
            environment,
            providers,
            connections,
            records,
            scripts: Arc::new(ScriptSet::default()),
            upstream: Upstream::network(crate::proxy::default_client()),
            locks: Arc::default(),
            syncs: None,
        }
    }
}

/// Log levels, as the original's `log()` accepts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Who wrote a log line: the script, or sluice on its behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    User,
    Internal,
}

/// About what a JSON value takes in memory: each value's own size plus
/// the text of its strings and keys. Walked without recursion.
pub(crate) fn value_weight(value: &Value) -> usize {
    let mut total = 0usize;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(std::mem::size_of::<Value>());
        match v {
            Value::String(s) => total = total.saturating_add(s.len()),
            Value::Array(a) => stack.extend(a),
            Value::Object(o) => {
                for (k, v) in o {
                    total = total.saturating_add(k.len() + std::mem::size_of::<String>());
                    stack.push(v);
                }
            }
            _ => {}
        }
    }
    total
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEntry {
    pub at: DateTime<Utc>,
    pub level: LogLevel,
    pub source: LogSource,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

impl LogEntry {
    /// About what the entry takes in memory: its message, and its `meta`
    /// at [`value_weight`].
    pub(crate) fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.message.len()
            + self.meta.as_ref().map_or(0, value_weight)
    }

    pub(crate) fn internal(level: LogLevel, message: String) -> Self {
        Self {
            at: Utc::now(),
            level,
            source: LogSource::Internal,
            message,
            meta: None,
        }
    }
}

/// How a script failed, normalised like the original runner's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptFailure {
    /// `action_script_runtime_error`, `script_http_error`, an SDK code, ...
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
    pub payload: Value,
    /// The HTTP status the server answers with.
    pub status: u16,
    /// The upstream response of a `script_http_error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_response: Option<Value>,
}

impl std::fmt::Display for ScriptFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.error_type)?;
        if !self.payload.is_null() {
            write!(f, ": {}", self.payload)?;
        }
        Ok(())
    }
}

/// Why an execution did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecError {
    #[error("script `{script}` is a {kind} script and cannot be called as {call}")]
    WrongKind {
        script: String,
        kind: ScriptKind,
        call: ScriptKind,
    },
    #[error("used up its CPU budget: out of fuel after {units} units (the `fuel` limit)")]
    OutOfFuel { units: u64 },
    #[error("timed out after {}", human_duration(*after))]
    Timeout { after: Duration },
    #[error("memory limit of {} exceeded", human_bytes(*limit))]
    MemoryLimit { limit: usize },
    #[error(
        "memory limit exceeded: the memory this server gives scripts ({} in all, three quarters of it to one environment) is in use by other executions",
        human_bytes(*budget)
    )]
    MemoryBudget { budget: usize },
    #[error("script failed: {0}")]
    Script(ScriptFailure),
    #[error("script trapped: {message}")]
    Trap { message: String },
    /// A Rust script's panic: where and its message (from its stderr).
    #[error("script panicked at {message}")]
    Panic { message: String },
    #[error(
        "the script never finished: it awaits a promise that never settles, with nothing left to wait for (no request or timer pending)"
    )]
    NeverSettled,
    #[error("cannot start script: {message}")]
    Instantiate { message: String },
}

impl ExecError {
    /// The same error with `redact` applied to every text it carries (its
    /// message, and the strings of a script failure's payload and upstream
    /// response): an upstream's error body that echoes the connection's
    /// token must not carry it into the logs.
    pub fn redacted(self, redact: impl Fn(&str) -> String) -> Self {
        fn strings(v: &mut Value, redact: &impl Fn(&str) -> String) {
            let mut stack = vec![v];
            while let Some(v) = stack.pop() {
                match v {
                    Value::String(s) => *s = redact(s),
                    Value::Array(items) => stack.extend(items.iter_mut()),
                    Value::Object(map) => stack.extend(map.values_mut()),
                    _ => {}
                }
            }
        }
        match self {
            ExecError::Script(mut f) => {
                f.message = redact(&f.message);
                strings(&mut f.payload, &redact);
                if let Some(u) = f.upstream_response.as_mut() {
                    strings(u, &redact);
                }
                ExecError::Script(f)
            }
            ExecError::Trap { message } => ExecError::Trap {
                message: redact(&message),
            },
            ExecError::Panic { message } => ExecError::Panic {
                message: redact(&message),
            },
            ExecError::Instantiate { message } => ExecError::Instantiate {
                message: redact(&message),
            },
            other => other,
        }
    }

    /// The failure in the original's `{type, payload, status}` terms.
    pub fn to_failure(&self) -> ScriptFailure {
        match self {
            ExecError::Script(f) => f.clone(),
            ExecError::Timeout { .. } => ScriptFailure {
                error_type: "script_timeout".into(),
                message: self.to_string(),
                payload: Value::Null,
                status: 500,
                upstream_response: None,
            },
            _ => ScriptFailure {
                error_type: "script_internal_error".into(),
                message: self.to_string(),
                payload: Value::Null,
                status: 500,
                upstream_response: None,
            },
        }
    }
}

fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn human_bytes(b: usize) -> String {
    if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
        format!("{} MiB", b >> 20)
    } else {
        format!("{b} bytes")
    }
}

/// What an execution did.
#[derive(Debug)]
pub struct Report {
    /// The output (actions, webhook handlers) or why it failed.
    pub outcome: Result<Option<Value>, ExecError>,
    pub logs: Vec<LogEntry>,
    /// Log lines past the environment's cap.
    pub logs_dropped: u64,
    /// Record changes per model (full name).
    pub changes: BTreeMap<String, Changes>,
    /// Models whose records not saved since their start are to be
    /// deleted if the run succeeded: `trackDeletesEnd` (or
    /// `deleteRecordsFromPreviousExecutions`) was called for them.
    pub tracked_deletes: Vec<TrackedDeletes>,
    pub fuel_consumed: u64,
    /// The most linear memory the script held (its memories only grow).
    pub memory_bytes: u64,
    pub duration: Duration,
    /// The secrets of the connections the execution used, with the forms
    /// a URL gives them: what is stored or logged of it is redacted with
    /// them ([`Report::redact`], [`Report::logged_error`]); the outcome
    /// itself is as the script left it, for the app that called it.
    pub secrets: crate::proxy::Secrets,
}

impl Report {
    /// `text` with the execution's connection secrets as `***`.
    pub fn redact(&self, text: &str) -> String {
        self.secrets.redact(text)
    }

    /// The failure as the logs and the history keep it: its texts redacted
    /// (an upstream error body that echoes the token keeps it out).
    pub fn logged_error(&self) -> Option<ExecError> {
        let e = self.outcome.as_ref().err()?.clone();
        Some(if self.secrets.is_empty() {
            e
        } else {
            e.redacted(|t| self.redact(t))
        })
    }
}

/// Largest fuel a store can hold; used when an environment meters nothing.
const UNMETERED_FUEL: u64 = u64::MAX;

/// Fuel a metered guest burns between yields to the executor: a few
/// milliseconds of JavaScript, so a busy guest shares its thread and meets
/// its deadline about as promptly as with an epoch tick.
const FUEL_YIELD_INTERVAL: u64 = 10_000_000;

impl Runtime {
    /// Runs one execution of `script` in a fresh store. Never panics on guest
    /// misbehaviour: every failure is in the report.
    pub async fn execute(
        &self,
        script: &Script,
        exec: Execution,
        services: Arc<Services>,
    ) -> Report {
        let started = Instant::now();
        let call_kind = exec.call.kind();
        if call_kind != script.kind {
            return Report::failed(
                ExecError::WrongKind {
                    script: exec.script_name.clone(),
                    kind: script.kind,
                    call: call_kind,
                },
                started,
            );
        }
        let limits = &services.environment.limits;
        let mut timeout = limits
            .timeouts
            .for_call(script.kind, matches!(exec.call, Call::Webhook { .. }));
        let mut fuel = limits.fuel.unwrap_or(UNMETERED_FUEL);
        if let Some(within) = exec.within {
            timeout = timeout.min(within.deadline.saturating_duration_since(started));
            fuel = fuel.min(within.fuel.unwrap_or(UNMETERED_FUEL));
        }
        // Bounded by the limits' check; a time past what an `Instant`
        // holds would stop the run, not panic.
        let timeout = timeout.min(crate::limits::MAX_TIMEOUT);
        let deadline = started + timeout;
        let exec = Arc::new(exec);
        let state = HostState::new(script.kind, exec.clone(), services, self.clone(), deadline);
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        // How many times the call below returned `Pending` (it yielded, or
        // a host call waited): the pacer's view of when the guest last
        // gave its thread up.
        let suspended = Arc::new(AtomicU64::new(0));
        if self.inner.config.meter_fuel {
            // Cannot fail: fuel is metered and the interval is not zero.
            let _ = store.set_fuel(fuel);
            let _ = store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL));
            // The host's work during a call is taken from the fuel as the
            // call returns (out of fuel, the guest stops there), and the
            // guest still yields every interval (see `Pacer`).
            let mut pacer = Pacer {
                suspended: suspended.clone(),
                seen: 0,
                mark: fuel,
                since: Instant::now(),
                armed: false,
            };
            store.call_hook(move |ctx, hook| pacer.on(ctx, hook));
        } else {
            // Yield at every tick; the deadline is checked below when the
            // guest is polled again. tokio's yield defers the wake-up until
            // the I/O and timer driver ran, so other executions on this
            // thread progress.
            store.epoch_deadline_callback(|_| {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            });
            store.set_epoch_deadline(1);
        }

        // `info()` is synchronous and names the provider: read the
        // connection before the guest starts (a missing one is reported by
        // the call that needs it).
        let me = exec.connection.clone();
        let own = store
            .data_mut()
            .connection(&me.provider_config_key, &me.connection_id)
            .await;
        store.data_mut().provider = own.ok().map(|c| c.provider);

        // A guest computing past its deadline is ended where it yields (fuel
        // interval or epoch tick: either polls this future again) or, when
        // metered, as the first host call after it returns (the pacer's
        // trap); the timeout ends one that waits past it inside a
        // host call.
        let run = {
            let mut call = std::pin::pin!(call(&script.pre, &mut store, &exec.call));
            let yielding = std::future::poll_fn(|cx| {
                if Instant::now() >= deadline {
                    return Poll::Ready(None);
                }
                let polled = call.as_mut().poll(cx).map(Some);
                if polled.is_pending() {
                    suspended.fetch_add(1, Ordering::Relaxed);
                }
                polled
            });
            tokio::time::timeout(timeout, yielding).await.ok().flatten()
        };
        let outcome = match run {
            None => Err(ExecError::Timeout { after: timeout }),
            Some(Ok(Ok(output))) => Ok(output),
            Some(Ok(Err(script_error))) => {
                if store.data().limiter.hit {
                    Err(memory_error(&store.data().limiter))
                } else {
                    Err(ExecError::Script(failure_from(script_error)))
                }
            }
            Some(Err(Failed::Call(e))) if e.is::<DeadlinePassed>() => {
                Err(ExecError::Timeout { after: timeout })
            }
            Some(Err(trap)) => Err(classify_trap(trap, store.data(), fuel)),
        };
        let fuel_consumed = fuel.saturating_sub(store.get_fuel().unwrap_or(fuel));
        let mut state = store.into_data();
        let memory_bytes = state.limiter.taken() as u64;

        state.collect_output();
        Report {
            outcome,
            logs: state.logs,
            logs_dropped: state.logs_dropped,
            changes: state.changes,
            tracked_deletes: state.tracked.into_values().filter(|t| t.ended).collect(),
            fuel_consumed,
            memory_bytes,
            duration: started.elapsed(),
            secrets: state.secrets,
        }
    }
}

/// The trap a host call returns when the execution's deadline has passed
/// (reported as [`ExecError::Timeout`]).
#[derive(Debug, thiserror::Error)]
#[error("the execution's deadline passed")]
pub(crate) struct DeadlinePassed;

/// Keeps a metered guest yielding to the executor at least every
/// [`FUEL_YIELD_INTERVAL`] units, its host calls' work included, or
/// [`HOST_TIME_SLICE`] of wall time, and holds its deadline at every
/// return from the host.
///
/// wasmtime yields when the fuel it last injected (at most one interval)
/// runs out, and `set_fuel` injects a fresh interval: charging the host's
/// work as a call returns would otherwise restart the count at every
/// charged call, and a guest making one (a log line) more often than
/// every interval would never yield, so neither its deadline, its
/// timeout nor a cancellation would get a look until its fuel ran out
/// (never, when fuel is not metered). So the pacer counts the fuel used
/// since the execution last suspended; past an interval it sets the
/// yield interval to one unit, so the guest yields at its next fuel
/// check, and puts it back once it has.
///
/// Fuel does not see the host's work it is not charged for (a page of
/// `listRecords`, metadata read and serialised, WASI): a guest looping on
/// such a call spends a few hundred units a call and could keep its thread
/// for hours. So the pacer also looks at the clock at every return from
/// the host (tens of nanoseconds): past the deadline the call traps;
/// [`HOST_TIME_SLICE`] after the execution last suspended, the guest is
/// made to yield as above.
struct Pacer {
    /// Bumped by `execute` each time the call returns `Pending`.
    suspended: Arc<AtomicU64>,
    /// `suspended` when last looked at.
    seen: u64,
    /// The fuel left when the execution was last seen to have suspended.
    mark: u64,
    /// When the execution was last seen to have suspended (or started).
    since: Instant,
    /// The yield interval is one unit: the guest yields at its next fuel
    /// check.
    armed: bool,
}

/// The wall time a metered guest may keep its thread through host calls
/// before it is made to yield: about what [`FUEL_YIELD_INTERVAL`] takes
/// a guest computing on its own.
const HOST_TIME_SLICE: Duration = Duration::from_millis(5);

impl Pacer {
    /// Every host call and libcall (the one that yields when the fuel
    /// injected runs out among them) returns through here.
    fn on(
        &mut self,
        mut ctx: wasmtime::StoreContextMut<'_, HostState>,
        hook: wasmtime::CallHook,
    ) -> wasmtime::Result<()> {
        if !matches!(hook, wasmtime::CallHook::ReturningFromHost) {
            return Ok(());
        }
        let now = Instant::now();
        let mut left = ctx.get_fuel()?;
        let suspended = self.suspended.load(Ordering::Relaxed);
        if suspended != self.seen {
            self.seen = suspended;
            self.mark = left;
            self.since = now;
            if self.armed {
                self.armed = false;
                ctx.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))?;
            }
        }
        let debt = std::mem::take(&mut ctx.data_mut().fuel_debt);
        if debt > 0 {
            left = left.saturating_sub(debt);
            ctx.set_fuel(left)?;
        }
        if now >= ctx.data().deadline {
            return Err(wasmtime::Error::new(DeadlinePassed));
        }
        if !self.armed
            && (self.mark.saturating_sub(left) >= FUEL_YIELD_INTERVAL
                || now.duration_since(self.since) >= HOST_TIME_SLICE)
        {
            self.armed = true;
            ctx.fuel_async_yield_interval(Some(1))?;
        }
        Ok(())
    }
}

impl Report {
    fn failed(error: ExecError, started: Instant) -> Self {
        Report {
            outcome: Err(error),
            logs: Vec::new(),
            logs_dropped: 0,
            changes: BTreeMap::new(),
            tracked_deletes: Vec::new(),
            fuel_consumed: 0,
            memory_bytes: 0,
            duration: started.elapsed(),
            secrets: Default::default(),
        }
    }
}

/// A trap, and whether it came while instantiating or while calling.
enum Failed {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

type CallResult = Result<Result<Option<Value>, ScriptError>, Failed>;

async fn call(pre: &ScriptPre, store: &mut Store<HostState>, call: &Call) -> CallResult {
    use Failed::{Call as C, Instantiate as I};
    match (pre, call) {
        (ScriptPre::Sync(pre), Call::Sync) => {
            let instance = pre.instantiate_async(&mut *store).await.map_err(I)?;
            let out = instance.call_fetch_data(store).await.map_err(C)?;
            Ok(out.map(|()| None))
        }
        (ScriptPre::Sync(pre), Call::Webhook { payload }) => {
            let instance = pre.instantiate_async(&mut *store).await.map_err(I)?;
            let payload = payload.clone().into_bytes();
            let out = instance
                .call_on_webhook_payload_received(store, &payload)
                .await
                .map_err(C)?;
            // Bounded as an action's output is, before it is parsed.
            Ok(out.and_then(|o| match o {
                Some(json) if json.len() > MAX_ACTION_OUTPUT_BYTES => {
                    Err(output_too_large(json.len()))
                }
                o => Ok(o.map(|json| parse_output(&json))),
            }))
        }
        (ScriptPre::Action(pre), Call::Action { input }) => {
            // The original turns an input of exactly `{}` into `undefined`
            // for a nango.yaml script.
            let none_if_empty = !store.data().exec.zero_yaml;
            let input = input
                .as_ref()
                .filter(|i| !(none_if_empty && is_empty_object(i)))
                .map(|i| i.clone().into_bytes());
            let validation = store.data().exec.validation.clone();
            if let Some(v) = &validation {
                let value = input.as_deref().map(parse_output);
                if let Err(e) =
                    v.check_io("input", v.input.as_ref(), value.as_ref(), store.data_mut())
                {
                    return Ok(Err(e));
                }
            }
            let instance = pre.instantiate_async(&mut *store).await.map_err(I)?;
            let out = instance
                .call_run_action(&mut *store, input.as_ref())
                .await
                .map_err(C)?;
            let out = match out {
                Ok(Some(json)) if json.len() > MAX_ACTION_OUTPUT_BYTES => {
                    Err(output_too_large(json.len()))
                }
                Ok(Some(json)) => parse_result(&json).map(Some).map_err(ScriptError::Sdk),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            if let (Some(v), Ok(output)) = (&validation, &out)
                && let Err(e) = v.check_io(
                    "output",
                    v.output.as_ref(),
                    output.as_ref(),
                    store.data_mut(),
                )
            {
                return Ok(Err(e));
            }
            Ok(out)
        }
        (ScriptPre::OnEvent(pre), Call::OnEvent) => {
            let instance = pre.instantiate_async(&mut *store).await.map_err(I)?;
            let out = instance.call_on_event(store).await.map_err(C)?;
            Ok(out.map(|()| None))
        }
        (ScriptPre::Bundle(pre), Call::Test { spec }) => {
            let instance = pre.instantiate_async(&mut *store).await.map_err(I)?;
            let spec = spec.clone().into_bytes();
            let out = instance.call_run_test(store, &spec).await.map_err(C)?;
            Ok(out.map(|json| Some(parse_output(&json))))
        }
        // `execute` checked the kind.
        _ => Err(C(wasmtime::format_err!(
            "call does not match the script kind"
        ))),
    }
}

/// The original's error for an output past [`MAX_ACTION_OUTPUT_BYTES`]
/// (an action's, and a webhook handler's).
fn output_too_large(len: usize) -> ScriptError {
    ScriptError::Sdk(crate::bindings::types::NangoError {
        code: "script_output_too_large".into(),
        message: format!(
            "Output is too large: {len} bytes, more than {} MiB",
            MAX_ACTION_OUTPUT_BYTES >> 20
        ),
        payload: Some(br#"{"message":"Output is too large"}"#.to_vec()),
    })
}

/// Whether `json` is an empty object, `{}` with JSON whitespace at most:
/// read from the text (an input of any size is not parsed to tell).
fn is_empty_object(json: &str) -> bool {
    let space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    json.trim_matches(space)
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .is_some_and(|inside| inside.trim_matches(space).is_empty())
}

/// JSON a script passed that is not an action's output (a webhook
/// handler's answer, an error's payload, a test's result): text that is
/// not JSON is kept as a JSON string; JSON nested too deep becomes
/// `{"message": <why>}`.
fn parse_output(json: &[u8]) -> Value {
    match parse_result(json) {
        Ok(v) => v,
        Err(e) if e.code == "script_output_not_json" => {
            Value::String(String::from_utf8_lossy(json).into_owned())
        }
        Err(e) => serde_json::json!({ "message": e.message }),
    }
}

/// An action's output, which the contract (`json` in the WIT) says is
/// UTF-8 JSON: bytes that are not (only a component built without an SDK
/// can return them) are refused as `script_output_not_json`, as is JSON
/// nested deeper than the host parses (128 levels, `json_too_deep`).
fn parse_result(json: &[u8]) -> Result<Value, crate::bindings::types::NangoError> {
    match serde_json::from_slice(json) {
        Ok(v) => Ok(v),
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            Err(crate::bindings::types::NangoError {
                code: "json_too_deep".into(),
                message: format!(
                    "the script's result is JSON nested deeper than {MAX_JSON_DEPTH} levels, more than sluice takes"
                ),
                payload: None,
            })
        }
        Err(e) => {
            let text = String::from_utf8_lossy(json);
            let start: String = text.chars().take(80).collect();
            Err(crate::bindings::types::NangoError {
                code: "script_output_not_json".into(),
                message: format!(
                    "the script returned {} bytes that are not JSON ({e}), starting `{start}`",
                    json.len()
                ),
                payload: None,
            })
        }
    }
}

/// The largest output an action may return, as the original's; a
/// webhook handler's answer is bounded the same.
pub const MAX_ACTION_OUTPUT_BYTES: usize = 10 << 20;

/// The deepest JSON the host parses (serde_json's recursion limit).
pub const MAX_JSON_DEPTH: usize = 128;

/// What componentize-js's engine writes before it traps when its event
/// loop is empty and the exported call's promise has not settled.
const NEVER_SETTLED: &str = "event loop error, but no exception is pending";

/// Whether `line` is what Rust's allocator writes before it aborts:
/// `memory allocation of N bytes failed`.
fn allocation_failed(line: &str) -> bool {
    line.strip_prefix("memory allocation of ")
        .and_then(|rest| rest.strip_suffix(" bytes failed"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn memory_error(limiter: &crate::host::MemoryLimiter) -> ExecError {
    if limiter.budget_hit {
        ExecError::MemoryBudget {
            budget: limiter.budget(),
        }
    } else {
        ExecError::MemoryLimit {
            limit: limiter.limit(),
        }
    }
}

fn classify_trap(failed: Failed, state: &HostState, fuel: u64) -> ExecError {
    let (err, instantiating) = match failed {
        Failed::Instantiate(e) => (e, true),
        Failed::Call(e) => (e, false),
    };
    if let Some(wasmtime::Trap::OutOfFuel) = err.downcast_ref::<wasmtime::Trap>() {
        return ExecError::OutOfFuel { units: fuel };
    }
    if state.limiter.hit {
        return memory_error(&state.limiter);
    }
    // The JavaScript engine's event loop ran out of work while the
    // script's promise was pending: it says so on stderr and traps.
    if !instantiating && state.stderr.ends_with_text(NEVER_SETTLED) {
        return ExecError::NeverSettled;
    }
    // A panic aborts with `unreachable`: its message says more than the
    // wasm backtrace.
    if !instantiating
        && matches!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::UnreachableCodeReached)
        )
        && let Some(message) = state.stderr.last_panic()
    {
        return ExecError::Panic { message };
    }
    if instantiating {
        return ExecError::Instantiate {
            message: format!("{err:?}"),
        };
    }
    // Rust's allocator says what it could not get before it aborts.
    if matches!(
        err.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::UnreachableCodeReached)
    ) && let Some(line) = state.stderr.last_line()
        && allocation_failed(&line)
    {
        return ExecError::Trap {
            message: format!(
                "{line} (the script's memory limit is {})",
                human_bytes(state.limiter.limit())
            ),
        };
    }
    ExecError::Trap {
        message: trap_message(&err),
    }
}

/// A trap in a sentence: its kind, what commonly causes it, and the
/// innermost frames of the guest (the whole backtrace is tens of lines of
/// engine functions, which an API client is not helped by).
fn trap_message(err: &wasmtime::Error) -> String {
    let Some(trap) = err.downcast_ref::<wasmtime::Trap>() else {
        return format!("{err:?}");
    };
    let mut message = trap.to_string();
    match trap {
        wasmtime::Trap::MemoryOutOfBounds => message.push_str(
            " (a Rust script whose stack overflowed, by deep or endless recursion, ends this way too)",
        ),
        // A panic's message was looked for first; the JavaScript engine
        // aborts this way when an allocation fails.
        wasmtime::Trap::UnreachableCodeReached => message.push_str(
            " (a script whose memory ran out, or that recursed too deep, ends this way too)",
        ),
        _ => {}
    }
    if let Some(trace) = err.downcast_ref::<wasmtime::WasmBacktrace>() {
        let frames: Vec<String> = trace
            .frames()
            .iter()
            // Rust's names demangled, without their hash.
            .filter_map(|f| {
                f.func_name()
                    .map(|n| format!("{:#}", rustc_demangle::demangle(n)))
            })
            .take(3)
            .collect();
        if !frames.is_empty() {
            message.push_str(&format!(" in {}", frames.join(" ← ")));
        }
    }
    message
}

/// An upstream error's body as the original runner reports it: its
/// `payload` member when it has one, else the body; one that is not an
/// object (or array) as `{message}`.
pub fn http_error_body(data: &Value) -> Value {
    let inner = match data {
        Value::Object(m) if m.contains_key("payload") => &m["payload"],
        other => other,
    };
    match inner {
        Value::Object(_) | Value::Array(_) => inner.clone(),
        other => serde_json::json!({ "message": other }),
    }
}

/// The largest error payload a script's failure keeps whole (an
/// `ActionError`'s, an SDK error's, what it threw, an upstream's error
/// body): parsed, JSON takes tens of times its text, and a failure is
/// copied into the history, the logs and the answer. A larger one is
/// kept as its start, in a message saying so.
pub const MAX_ERROR_JSON: usize = 1 << 20;

/// A failure's payload, the script's JSON parsed as [`parse_output`] does
/// when it is at most [`MAX_ERROR_JSON`].
fn error_json(json: &[u8]) -> Value {
    if json.len() <= MAX_ERROR_JSON {
        return parse_output(json);
    }
    serde_json::json!({
        "message": format!(
            "the error's payload is {} bytes, more than the {MAX_ERROR_JSON} a failure keeps; its start: {}",
            json.len(),
            String::from_utf8_lossy(&json[..json.len().min(1024)])
        )
    })
}

/// A text the script gave with its failure, cut to [`MAX_ERROR_JSON`].
fn bounded_text(mut text: String) -> String {
    if text.len() > MAX_ERROR_JSON {
        let mut end = MAX_ERROR_JSON;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The original runner's error normalisation.
pub(crate) fn failure_from(error: ScriptError) -> ScriptFailure {
    match error {
        ScriptError::ActionError(payload) => ScriptFailure {
            error_type: "action_script_runtime_error".into(),
            message: "action script runtime error".into(),
            payload: payload.as_deref().map(error_json).unwrap_or(Value::Null),
            status: 500,
            upstream_response: None,
        },
        ScriptError::Sdk(e) => ScriptFailure {
            status: if e.code == "invalid_action_input"
                || e.code == "invalid_action_output"
                || e.code == "script_output_too_large"
            {
                400
            } else {
                500
            },
            error_type: e.code,
            message: bounded_text(e.message),
            payload: e.payload.as_deref().map(error_json).unwrap_or(Value::Null),
            upstream_response: None,
        },
        ScriptError::Http(response) => {
            let upstream = response_json(&response);
            ScriptFailure {
                error_type: "script_http_error".into(),
                message: format!("upstream answered HTTP {}", response.status),
                payload: http_error_body(&upstream["data"]),
                status: response.status,
                upstream_response: Some(upstream),
            }
        }
        ScriptError::Network(message) => ScriptFailure {
            error_type: "script_network_error".into(),
            payload: network_payload(&message),
            message,
            status: 500,
            upstream_response: None,
        },
        ScriptError::Internal(message) => {
            let message = bounded_text(message);
            let payload = error_payload(&message);
            // An error thrown with a code comes as its JSON; it reads as
            // any other error, `Name: message`.
            let message = match serde_json::from_str::<Value>(&message) {
                Ok(Value::Object(e)) => match (e.get("name"), e.get("message")) {
                    (Some(Value::String(name)), Some(Value::String(text))) => {
                        format!("{name}: {text}")
                    }
                    _ => message,
                },
                _ => message,
            };
            ScriptFailure {
                error_type: "script_internal_error".into(),
                payload,
                message,
                status: 500,
                upstream_response: None,
            }
        }
    }
}

/// The original's payload of an uncaught network failure, the axios
/// error's `{name, code, message}` (the code leads the message:
/// `ECONNREFUSED: …`).
fn network_payload(message: &str) -> Value {
    let code = message
        .split_once(": ")
        .map(|(code, _)| code)
        .filter(|c| c.len() > 1 && c.starts_with('E') && c.bytes().all(|b| b.is_ascii_uppercase()));
    match code {
        Some(code) => serde_json::json!({"name": "AxiosError", "code": code, "message": message}),
        None => serde_json::json!({"name": "AxiosError", "message": message}),
    }
}

/// The original's payload of an uncaught error, `{name, code?, message}`:
/// a JavaScript `Error` reads `Name: message`; anything else thrown comes
/// as its JSON (an object's own `name`, `code` and `message` are used).
fn error_payload(message: &str) -> Value {
    if let Ok(thrown) = serde_json::from_str::<Value>(message) {
        let mut out = serde_json::Map::new();
        out.insert(
            "name".into(),
            thrown
                .get("name")
                .filter(|n| n.is_string())
                .cloned()
                .unwrap_or_else(|| "Error".into()),
        );
        if let Some(code) = thrown
            .get("code")
            .filter(|c| c.is_string() || c.is_number())
        {
            out.insert("code".into(), code.clone());
        }
        let text = match thrown.get("message") {
            Some(Value::String(m)) => m.clone(),
            _ => message.to_string(),
        };
        out.insert("message".into(), Value::String(text));
        return Value::Object(out);
    }
    let Some((name, text)) = message.split_once(": ") else {
        return serde_json::json!({ "name": "Error", "message": message });
    };
    let identifier = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if !identifier {
        return serde_json::json!({ "name": "Error", "message": message });
    }
    serde_json::json!({ "name": name, "message": text })
}

/// `{status, headers, data}` of an upstream response that failed the
/// script, body parsed when JSON; a body over [`MAX_ERROR_JSON`] is kept
/// as the text of its start.
pub(crate) fn response_json(r: &Response) -> Value {
    let data = if r.body.len() > MAX_ERROR_JSON {
        Value::String(bounded_text(
            String::from_utf8_lossy(&r.body[..r.body.len().min(MAX_ERROR_JSON + 4)]).into_owned(),
        ))
    } else {
        serde_json::from_slice::<Value>(&r.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.body).into_owned()))
    };
    let headers: serde_json::Map<String, Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    serde_json::json!({ "status": r.status, "headers": headers, "data": data })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure's payload past [`MAX_ERROR_JSON`] (an `ActionError` of a
    /// huge value, an upstream error body of megabytes) is kept as its
    /// start in a message; one within it whole.
    #[test]
    fn a_failures_payload_is_kept_whole_up_to_its_bound() {
        let small = br#"{"reason":"already exists"}"#.to_vec();
        let f = failure_from(ScriptError::ActionError(Some(small)));
        assert_eq!(f.payload, serde_json::json!({"reason": "already exists"}));
        let huge = serde_json::to_vec(&vec![0u8; MAX_ERROR_JSON]).unwrap();
        let f = failure_from(ScriptError::ActionError(Some(huge.clone())));
        let message = f.payload["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!("the error's payload is {} bytes", huge.len())),
            "{message}"
        );
        assert!(message.len() < 2048, "{}", message.len());
        let response = |body: Vec<u8>| Response {
            status: 500,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        };
        let f = failure_from(ScriptError::Http(response(br#"{"error":"boom"}"#.to_vec())));
        assert_eq!(f.payload, serde_json::json!({"error": "boom"}));
        let f = failure_from(ScriptError::Http(response(huge)));
        let data = &f.upstream_response.as_ref().unwrap()["data"];
        let text = data.as_str().unwrap_or_default();
        assert!(
            text.starts_with("[0,0,") && text.ends_with('…'),
            "{}",
            &text[..20]
        );
        assert!(text.len() <= MAX_ERROR_JSON + 3, "{}", text.len());
        let f = failure_from(ScriptError::Internal("x".repeat(MAX_ERROR_JSON + 10)));
        assert!(f.message.len() <= MAX_ERROR_JSON + 3, "{}", f.message.len());
    }

    /// `{}` is told from the text, JSON whitespace allowed, without
    /// parsing the input.
    #[test]
    fn an_empty_object_is_told_from_its_text() {
        for empty in ["{}", " { } ", "\n{\t}\r\n"] {
            assert!(is_empty_object(empty), "{empty:?}");
        }
        for other in [
            "{\"a\":1}",
            "[]",
            "{}}",
            "{{}",
            "null",
            "",
            "{\u{a0}}",
            "\u{a0}{}",
        ] {
            assert!(!is_empty_object(other), "{other:?}");
        }
    }
}
