//! Execution history and logs, in the store, with no extra service.
//!
//! Every execution (sync run, action, webhook script, event script) leaves
//! two documents, written unflushed (history, not acknowledged data):
//! - `executions/<pck>\x1f<connection>\x1f<execution id>`: its summary, for
//!   the history of one connection (`GET /executions`);
//! - `logs/<execution id>`: the summary and its log lines (script logs,
//!   HTTP attempts with credentials redacted, guest stdout/stderr, the
//!   outcome), bounded in bytes per execution.
//!
//! Execution ids start with the start time (`<µs since epoch, 20
//! digits>-<random>`; a run a stop cut short, with the time the next start
//! records it), so the logs collection is in time order: a search
//! walks it newest first from the end of its time range and stops at the
//! page's limit; the NDJSON export walks it oldest first, a page at a time,
//! in constant memory. A background task enforces the retention (age and
//! total bytes), oldest first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sluice_runtime::Report;
use sluice_runtime::exec::{LogEntry, LogLevel, LogSource};
use sluice_runtime::records::{Changes, ConnectionRef};

use crate::app::{App, EnvState};
use sluice_store::EnvStore;

/// Summaries per connection.
pub const EXECUTIONS: &str = "executions";
/// Summaries with their lines, by execution id (time order).
pub const LOGS: &str = "logs";

/// A script's last error lines kept past `log_bytes_per_execution`.
const LAST_ERRORS_KEPT: usize = 20;
/// Of a last error line past the budget, the characters kept.
const LAST_ERROR_CHARS: usize = 2048;

/// One log line as stored and returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub at: DateTime<Utc>,
    pub level: String,
    pub source: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

/// One execution: what the history shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Execution {
    pub id: String,
    /// `sync`, `action`, `webhook` or `event`.
    pub kind: String,
    pub script: String,
    pub provider_config_key: String,
    pub connection_id: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub success: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub changes: BTreeMap<String, Changes>,
    pub fuel: u64,
}

/// One attempt to send a webhook to the app, for the logs.
pub struct DeliveryAttempt<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// The receiver, as errors show it (no query, no user, long path
    /// segments masked); empty when the attempt failed before it knew.
    pub url: String,
    pub body: &'a str,
    /// What the delivery is about, as queued; `None` for one queued by a
    /// build that did not keep it (its body is read instead).
    pub about: Option<&'a crate::webhooks::About>,
    pub number: u32,
    pub started_at: DateTime<Utc>,
    pub error: Option<String>,
    pub given_up: bool,
}

/// The most bytes of lines one page of `GET /logs` holds (it holds one
/// line at least); past them the page ends with a cursor.
pub const MAX_PAGE_BYTES: usize = 8 << 20;

/// The longest error text an execution's record keeps, in bytes.
const MAX_ERROR_TEXT: usize = 16 * 1024;

/// `error` cut to [`MAX_ERROR_TEXT`] on a character boundary, saying so.
fn cut_error(mut error: String) -> String {
    if error.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT;
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        let total = error.len();
        error.truncate(end);
        error.push_str(&format!("… ({total} bytes in all)"));
    }
    error
}

/// An execution's log document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionLog {
    pub execution: Execution,
    pub lines: Vec<Line>,
    /// Lines left out: past the runtime's cap or this store's byte bound.
    #[serde(default)]
    pub dropped: u64,
}

/// A stored line decoded in place: searches look at a million lines and
/// keep few, so a line is only copied when it is kept.
#[derive(Deserialize)]
struct LineRef<'a> {
    #[serde(borrow)]
    at: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    level: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    source: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    meta: Option<&'a serde_json::value::RawValue>,
}

/// What a search reads of a log before its lines: who ran it (its
/// lines skipped, not decoded).
#[derive(Deserialize)]
struct SearchHead {
    execution: SearchHeadExecution,
}

#[derive(Deserialize)]
struct SearchHeadExecution {
    id: String,
    script: String,
    provider_config_key: String,
    connection_id: String,
}

#[derive(Deserialize)]
struct LogRef<'a> {
    execution: Execution,
    #[serde(borrow)]
    lines: Vec<LineRef<'a>>,
}

/// The history and log store's settings and running size.
pub struct Logs {
    /// Most bytes of log lines kept per execution.
    pub max_bytes_per_execution: usize,
    /// Logs older than this are deleted.
    pub retention_age: Duration,
    /// Past this many bytes of logs, the oldest are deleted.
    pub retention_bytes: u64,
    /// Past this many bytes of ended async actions and webhooks given up
    /// on, the oldest are deleted.
    pub finished_bytes: u64,
    /// Where executions and deliveries are counted.
    metrics: Arc<crate::metrics::Metrics>,
    /// Bytes of log documents stored, per environment (counted at start).
    sizes: std::sync::Mutex<BTreeMap<uuid::Uuid, Arc<AtomicU64>>>,
}

fn new_id(start: DateTime<Utc>) -> String {
    let r = uuid::Uuid::new_v4().simple().to_string();
    format!("{:020}-{}", start.timestamp_micros().max(0), &r[..12])
}

impl Logs {
    pub fn new(config: &crate::ServerConfig, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Logs {
            metrics,
            max_bytes_per_execution: config.log_bytes_per_execution,
            retention_age: config.log_retention_age,
            retention_bytes: config.log_retention_bytes,
            finished_bytes: config.finished_retention_bytes,
            sizes: Default::default(),
        }
    }

    /// Bytes of logs `store`'s environment keeps.
    pub fn bytes(&self, store: &EnvStore) -> u64 {
        self.size(store).load(Ordering::Relaxed)
    }

    fn size(&self, store: &EnvStore) -> Arc<AtomicU64> {
        self.sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(store.id())
            .or_default()
            .clone()
    }

    /// Keeps an execution: its summary and its lines (best effort: the
    /// history must not fail what it describes). Returns its id (the
    /// `execution_id` of `GET /logs`).
    pub async fn record(
        &self,
        env: &EnvState,
        conn: &ConnectionRef,
        kind: &str,
        script: &str,
        report: &Report,
    ) -> String {
        let finished = Utc::now();
        let started_at = finished
            - chrono::Duration::from_std(report.duration)
                .unwrap_or_else(|_| chrono::Duration::zero());
        let execution = Execution {
            id: new_id(started_at),
            kind: kind.to_string(),
            script: script.to_string(),
            provider_config_key: conn.provider_config_key.clone(),
            connection_id: conn.connection_id.clone(),
            started_at,
            duration_ms: report.duration.as_millis() as u64,
            success: report.outcome.is_ok(),
            // Bounded: kept in the history, the log's execution and its
            // failure line (an error may quote megabytes of an answer).
            error: report.logged_error().map(|e| cut_error(e.to_string())),
            changes: report.changes.clone(),
            fuel: report.fuel_consumed,
        };
        let (mut lines, dropped) = self.kept_lines(&report.logs, report.logs_dropped);
        if dropped > 0 {
            // Said where the lines would have been read.
            lines.push(Line {
                at: finished,
                level: "warn".into(),
                source: "internal".into(),
                message: format!(
                    "{dropped} log line{} of this execution {} not kept: past the {} kept per execution, or the script's own log limits",
                    if dropped == 1 { "" } else { "s" },
                    if dropped == 1 { "was" } else { "were" },
                    match self.max_bytes_per_execution {
                        n if n % 1024 == 0 => format!("{} KiB", n / 1024),
                        n => format!("{n} bytes"),
                    }
                ),
                meta: None,
            });
        }
        if let Some(e) = &execution.error {
            lines.push(Line {
                at: finished,
                level: "error".into(),
                source: "internal".into(),
                message: format!("{script} failed: {e}"),
                meta: None,
            });
        }
        let id = execution.id.clone();
        let log = ExecutionLog {
            execution,
            lines,
            dropped,
        };
        self.write(&env.store, conn, &log).await;
        id
    }

    /// The lines of an execution within the per-execution budget, and how
    /// many were left out (`dropped` of them already). A script's last
    /// error lines (the end of its stderr: a panic's message) are kept past
    /// the budget: they say why it failed.
    fn kept_lines(&self, logs: &[LogEntry], mut dropped: u64) -> (Vec<Line>, u64) {
        let mut lines = Vec::new();
        let mut bytes = 0usize;
        let last_errors: std::collections::HashSet<usize> = logs
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, l)| l.level == LogLevel::Error && l.source == LogSource::User)
            .take(LAST_ERRORS_KEPT)
            .map(|(i, _)| i)
            .collect();
        for (i, l) in logs.iter().enumerate() {
            let size = l.message.len() + l.meta.as_ref().map_or(0, |m| m.to_string().len()) + 48;
            if bytes + size > self.max_bytes_per_execution {
                if !last_errors.contains(&i) {
                    dropped += 1;
                    continue;
                }
                // Past the budget, a last error line is kept as its first
                // few KiB without its meta: what it says, bounded (20 of
                // them at most).
                let mut message: String = l.message.chars().take(LAST_ERROR_CHARS).collect();
                if message.len() < l.message.len() {
                    message.push('…');
                }
                lines.push(Line {
                    at: l.at,
                    level: "error".into(),
                    source: "user".into(),
                    message,
                    meta: None,
                });
                continue;
            }
            bytes += size;
            lines.push(Line {
                at: l.at,
                level: serde_json::to_value(l.level)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                source: serde_json::to_value(l.source)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                message: l.message.clone(),
                meta: l.meta.clone(),
            });
        }
        (lines, dropped)
    }

    /// Keeps an app's request through `/proxy` (kind `proxy`, named by its
    /// method and path) with the log lines of its attempts; `answered`:
    /// the upstream's answer was passed on (`error` then says its status).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_proxy(
        &self,
        env: &EnvState,
        conn: &ConnectionRef,
        call: &str,
        started_at: DateTime<Utc>,
        error: Option<String>,
        answered: bool,
        lines: Vec<LogEntry>,
    ) {
        let call: String = call.chars().take(512).collect();
        let execution = Execution {
            id: new_id(started_at),
            kind: "proxy".into(),
            script: call,
            provider_config_key: conn.provider_config_key.clone(),
            connection_id: conn.connection_id.clone(),
            started_at,
            duration_ms: (Utc::now() - started_at).num_milliseconds().max(0) as u64,
            success: error.is_none(),
            error,
            changes: BTreeMap::new(),
            fuel: 0,
        };
        let (mut lines, dropped) = self.kept_lines(&lines, 0);
        // A call that got no answer to pass on (refused for its
        // credentials or the egress rules, or failed between attempts)
        // says why in a line; an upstream's answer has its attempt's line.
        if let Some(e) = execution.error.as_ref().filter(|_| !answered) {
            lines.push(Line {
                at: Utc::now(),
                level: "error".into(),
                source: "internal".into(),
                message: format!("{} failed: {e}", execution.script),
                meta: None,
            });
        }
        let log = ExecutionLog {
            execution,
            lines,
            dropped,
        };
        self.write(&env.store, conn, &log).await;
    }

    /// Keeps one attempt to send a webhook to the app (kind `delivery`,
    /// named by the webhook's kind: `sync`, `forward`, `auth`,
    /// `async_action`), under the connection it is about (none for a
    /// provider's webhook that matched no connection), as sluice queued
    /// it: never as its body says, which for a forwarded webhook is the
    /// provider's (anyone's, for an unsigned one) to write.
    pub async fn record_delivery(&self, env: &EnvState, attempt: &DeliveryAttempt<'_>) {
        self.metrics
            .delivery(env.store.name(), attempt.error.is_none(), attempt.given_up);
        let (kind, conn) = match attempt.about {
            Some(about) => (
                about.kind.clone(),
                ConnectionRef {
                    provider_config_key: about.provider_config_key.clone(),
                    connection_id: about.connection_id.clone(),
                },
            ),
            None => legacy_delivery_head(attempt.body),
        };
        let kind = Some(kind)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "webhook".to_string());
        let url = attempt.url.as_str();
        let (level, message) = match &attempt.error {
            None => (
                "info",
                format!(
                    "webhook {} sent to {} (attempt {})",
                    attempt.id, url, attempt.number
                ),
            ),
            Some(e) => (
                if attempt.given_up { "error" } else { "warn" },
                format!(
                    "webhook {} failed (attempt {}): {e}{}",
                    attempt.id,
                    attempt.number,
                    if attempt.given_up {
                        "; given up on"
                    } else {
                        "; it is tried again later"
                    }
                ),
            ),
        };
        let execution = Execution {
            id: new_id(attempt.started_at),
            kind: "delivery".into(),
            script: kind,
            provider_config_key: conn.provider_config_key.clone(),
            connection_id: conn.connection_id.clone(),
            started_at: attempt.started_at,
            duration_ms: (Utc::now() - attempt.started_at).num_milliseconds().max(0) as u64,
            success: attempt.error.is_none(),
            error: attempt.error.clone(),
            changes: BTreeMap::new(),
            fuel: 0,
        };
        let log = ExecutionLog {
            lines: vec![Line {
                at: Utc::now(),
                level: level.into(),
                source: "internal".into(),
                message,
                meta: Some(if url.is_empty() {
                    serde_json::json!({"webhook_id": attempt.id})
                } else {
                    serde_json::json!({"webhook_id": attempt.id, "url": url})
                }),
            }],
            execution,
            dropped: 0,
        };
        self.write(&env.store, &conn, &log).await;
    }

    /// Keeps an execution that has no report (a run stopped at its time
    /// limit, say). Returns its id.
    pub async fn record_failure(
        &self,
        env: &EnvState,
        conn: &ConnectionRef,
        kind: &str,
        script: &str,
        started_at: DateTime<Utc>,
        error: String,
    ) -> String {
        self.record_failure_in(&env.store, conn, kind, script, started_at, error)
            .await
    }

    /// [`Logs::record_failure`] in an environment's store (for what runs
    /// below its state: a token refresh).
    pub async fn record_failure_in(
        &self,
        store: &EnvStore,
        conn: &ConnectionRef,
        kind: &str,
        script: &str,
        started_at: DateTime<Utc>,
        error: String,
    ) -> String {
        self.record_failure_placed(store, conn, kind, script, started_at, started_at, error)
            .await
    }

    /// A run a stop cut short, recorded as failed by the start that found
    /// it: placed (its id, which orders the logs and places them in time)
    /// when it is recorded, when its line is written, so `from` finds it
    /// after a stop of days; its `started_at` is its own.
    pub async fn record_interrupted(
        &self,
        env: &EnvState,
        conn: &ConnectionRef,
        kind: &str,
        script: &str,
        started_at: DateTime<Utc>,
        error: String,
    ) -> String {
        let now = Utc::now().max(started_at);
        self.record_failure_placed(&env.store, conn, kind, script, started_at, now, error)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_failure_placed(
        &self,
        store: &EnvStore,
        conn: &ConnectionRef,
        kind: &str,
        script: &str,
        started_at: DateTime<Utc>,
        placed_at: DateTime<Utc>,
        error: String,
    ) -> String {
        let execution = Execution {
            id: new_id(placed_at),
            kind: kind.into(),
            script: script.into(),
            provider_config_key: conn.provider_config_key.clone(),
            connection_id: conn.connection_id.clone(),
            started_at,
            duration_ms: (Utc::now() - started_at).num_milliseconds().max(0) as u64,
            success: false,
            error: Some(error.clone()),
            changes: BTreeMap::new(),
            fuel: 0,
        };
        let log = ExecutionLog {
            lines: vec![Line {
                at: Utc::now(),
                level: "error".into(),
                source: "internal".into(),
                message: format!("{script} failed: {error}"),
                meta: None,
            }],
            execution,
            dropped: 0,
        };
        let id = log.execution.id.clone();
        self.write(store, conn, &log).await;
        id
    }

    async fn write(&self, store: &EnvStore, conn: &ConnectionRef, log: &ExecutionLog) {
        let e = &log.execution;
        // A delivery is counted apart (`record_delivery`).
        if e.kind != "delivery" {
            self.metrics.execution(store.name(), e);
        }
        let history_key = format!(
            "{}\u{1f}{}\u{1f}{}",
            conn.provider_config_key, conn.connection_id, e.id
        );
        // History and log in one write, off the durable path, each atomic
        // alone (an atomic pair costs sled two log-buffer writes). The
        // history entry goes first: retention walks the logs and deletes
        // each with its entry, so an entry must exist before its log can
        // be found (the other order let a retention pass between the two
        // delete the log and miss the entry written after it). A crash
        // between the two may keep an entry without its log.
        let mut batch = store.doc_batch();
        let Ok(_) = batch.put(EXECUTIONS, &history_key, e) else {
            return;
        };
        let Ok(bytes) = batch.put(LOGS, &e.id, log) else {
            return;
        };
        if batch.apply_unflushed_in_order().await.is_ok() {
            self.size(store).fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// Counts what every environment's logs weigh, and deletes the history
    /// entries a crash left without their log (an entry is written just
    /// before its log, and retention, which walks the logs, would never
    /// find such an entry). Runs at start, before any execution can write.
    pub async fn load(&self, app: &App) -> Result<(), sluice_store::StoreError> {
        for env in app.envs() {
            let mut total = 0u64;
            let mut ids = std::collections::HashSet::new();
            let mut after: Option<String> = None;
            loop {
                // Sized where they lie: a log is megabytes of lines at
                // most, tens of times that decoded, and none is copied.
                let mut bytes = 0u64;
                let page = env
                    .store
                    .docs_raw(LOGS, "", after.as_deref(), 200, false, &mut |raw| {
                        bytes += raw.len() as u64;
                        false
                    })
                    .await?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                total += bytes;
                ids.extend(page.into_iter().map(|(id, _)| id));
            }
            self.size(&env.store).store(total, Ordering::Relaxed);
            let mut after: Option<String> = None;
            loop {
                let page: Vec<(String, Value)> = env
                    .store
                    .docs(EXECUTIONS, "", after.as_deref(), 1000, false)
                    .await?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                for (key, _) in page {
                    let id = key.rsplit('\u{1f}').next().unwrap_or_default();
                    if !ids.contains(id) {
                        env.store.delete_doc(EXECUTIONS, &key).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes logs past the retention, oldest first; returns how many.
    pub async fn enforce(&self, env: &EnvState) -> Result<usize, sluice_store::StoreError> {
        let oldest_kept = Utc::now()
            - chrono::Duration::from_std(self.retention_age)
                .unwrap_or_else(|_| chrono::Duration::days(3650));
        let size = self.size(&env.store);
        let mut deleted = 0;
        /// What retention reads of a log: its execution's identity and
        /// start, not its lines (skipped, not decoded).
        #[derive(Deserialize)]
        struct Head {
            execution: HeadExecution,
        }
        #[derive(Deserialize)]
        struct HeadExecution {
            id: String,
            provider_config_key: String,
            connection_id: String,
            started_at: DateTime<Utc>,
        }
        loop {
            // Each log's size and head, read where it lies.
            let mut heads: Vec<(u64, Option<HeadExecution>)> = Vec::new();
            let page = env
                .store
                .docs_raw(LOGS, "", None, 200, false, &mut |raw| {
                    let head = serde_json::from_slice::<Head>(raw).ok();
                    heads.push((raw.len() as u64, head.map(|h| h.execution)));
                    false
                })
                .await?;
            if page.is_empty() || page.len() != heads.len() {
                return Ok(deleted);
            }
            let mut progressed = false;
            for ((key, _), (bytes, head)) in page.into_iter().zip(heads) {
                // One that does not decode is old, whatever it says.
                let old = head.as_ref().is_none_or(|e| e.started_at < oldest_kept);
                let over = size.load(Ordering::Relaxed) > self.retention_bytes;
                if !old && !over {
                    return Ok(deleted);
                }
                if env.store.delete_doc(LOGS, &key).await? {
                    // Its history entry cannot be named without the head:
                    // the next start's `load` removes it (it has no log).
                    let Some(e) = &head else {
                        let _ = size.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                            Some(s.saturating_sub(bytes))
                        });
                        deleted += 1;
                        progressed = true;
                        continue;
                    };
                    let history_key = format!(
                        "{}\u{1f}{}\u{1f}{}",
                        e.provider_config_key, e.connection_id, e.id
                    );
                    env.store.delete_doc(EXECUTIONS, &history_key).await?;
                    let _ = size.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                        Some(s.saturating_sub(bytes))
                    });
                    deleted += 1;
                    progressed = true;
                }
            }
            if !progressed {
                return Ok(deleted);
            }
        }
    }

    /// Enforces the retention every `every` until the app is dropped.
    pub fn spawn(self: &Arc<Self>, app: &Arc<App>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let app = Arc::downgrade(app);
        tokio::spawn(async move {
            let mut pass = 0u64;
            loop {
                tokio::time::sleep(every).await;
                let Some(app) = app.upgrade() else { return };
                pass += 1;
                for env in app.envs() {
                    let _ = me.enforce(env).await;
                    // Every tenth pass (each takes a full scan): what else
                    // only grows goes at the logs' age too.
                    if pass.is_multiple_of(10) {
                        let _ = me.prune_finished(env).await;
                    }
                }
                // Every sixtieth (hourly by default): components uploaded
                // and never deployed.
                if pass.is_multiple_of(60) {
                    crate::api::deploy::request_reclaim(&app);
                }
            }
        })
    }

    /// Deletes async actions that ended, and webhooks given up on, longer
    /// ago than the logs are kept (`GET /action/:id` then answers 404), and
    /// past [`Logs::finished_bytes`] of them the oldest, ten seconds' worth
    /// at a time: a first pass over both collections adds up their sizes
    /// per ten seconds (in constant memory: one sum per ten seconds of the
    /// retention at most), a second deletes those older than the newest
    /// that fit.
    pub async fn prune_finished(&self, env: &EnvState) -> Result<usize, sluice_store::StoreError> {
        let oldest_kept = Utc::now()
            - chrono::Duration::from_std(self.retention_age)
                .unwrap_or_else(|_| chrono::Duration::days(3650));
        const BUCKET: i64 = 10;
        // Nothing that ends after the count starts is deleted: it was not
        // counted.
        let started = Utc::now();
        let kinds: [(&str, EndedAt); 2] = [
            (crate::runner::ASYNC_ACTIONS, action_ended_at),
            (crate::webhooks::DEAD, given_up_at),
        ];
        let mut sizes: BTreeMap<i64, u64> = BTreeMap::new();
        for (collection, ended_at) in kinds {
            each_raw(
                env,
                collection,
                |raw| {
                    ended_at(raw)
                        .filter(|at| *at >= oldest_kept)
                        .map(|at| (at.timestamp().div_euclid(BUCKET), raw.len() as u64))
                },
                |sized| {
                    if let Some((bucket, bytes)) = sized {
                        *sizes.entry(bucket).or_default() += bytes;
                    }
                    false
                },
            )
            .await?;
        }
        let mut cutoff = oldest_kept;
        let mut kept = 0u64;
        for (bucket, bytes) in sizes.iter().rev() {
            kept = kept.saturating_add(*bytes);
            if kept > self.finished_bytes {
                if let Some(end) = DateTime::from_timestamp((bucket + 1) * BUCKET, 0) {
                    cutoff = cutoff.max(end.min(started));
                }
                break;
            }
        }
        let mut deleted = 0;
        for (collection, ended_at) in kinds {
            deleted += each_raw(
                env,
                collection,
                |raw| ended_at(raw).is_some_and(|at| at < cutoff),
                |gone| gone,
            )
            .await?;
        }
        Ok(deleted)
    }
}

/// When a document of ended work ended (read from its JSON without
/// keeping the rest); `None` for work still going or a document it
/// cannot read (kept).
type EndedAt = fn(&[u8]) -> Option<DateTime<Utc>>;

/// What a delivery queued by an earlier build (which did not keep what it
/// is about) is about, read from its body as that build read it: `type`,
/// `providerConfigKey` and `connectionId` only (a forwarded body may be
/// megabytes).
fn legacy_delivery_head(body: &str) -> (String, ConnectionRef) {
    #[derive(Deserialize, Default)]
    struct Head {
        #[serde(rename = "type", default)]
        kind: Option<String>,
        #[serde(rename = "providerConfigKey", default)]
        provider_config_key: Option<String>,
        #[serde(rename = "connectionId", default)]
        connection_id: Option<String>,
    }
    let head: Head = serde_json::from_str(body).unwrap_or_default();
    (
        head.kind.unwrap_or_default(),
        ConnectionRef {
            provider_config_key: head.provider_config_key.unwrap_or_default(),
            connection_id: head.connection_id.unwrap_or_default(),
        },
    )
}

/// An async action that succeeded or failed: when it did.
fn action_ended_at(raw: &[u8]) -> Option<DateTime<Utc>> {
    #[derive(Deserialize)]
    struct Action<'a> {
        #[serde(borrow)]
        status: std::borrow::Cow<'a, str>,
        updated_at: DateTime<Utc>,
    }
    let a: Action = serde_json::from_slice(raw).ok()?;
    matches!(a.status.as_ref(), "succeeded" | "failed").then_some(a.updated_at)
}

/// A webhook given up on: when it was made (its age is counted from it).
fn given_up_at(raw: &[u8]) -> Option<DateTime<Utc>> {
    #[derive(Deserialize)]
    struct Dead {
        created_at: DateTime<Utc>,
    }
    serde_json::from_slice::<Dead>(raw)
        .ok()
        .map(|d| d.created_at)
}

/// Reads each document of `collection` as stored with `look` (in place,
/// nothing copied out), a page at a time, then hands what it saw to
/// `then`, in order, and deletes those `then` picks (unflushed: one a
/// crash brings back goes at the next pass); returns how many.
/// (A store may read a page again after a dropped connection, calling
/// `look` twice for its first rows: only the last reading of each page
/// is handed on.)
async fn each_raw<T: Send>(
    env: &EnvState,
    collection: &str,
    mut look: impl FnMut(&[u8]) -> T + Send,
    mut then: impl FnMut(T) -> bool,
) -> Result<usize, sluice_store::StoreError> {
    let mut after: Option<String> = None;
    let mut deleted = 0;
    loop {
        let mut seen: Vec<T> = Vec::new();
        let page = env
            .store
            .docs_raw(collection, "", after.as_deref(), 500, false, &mut |raw| {
                seen.push(look(raw));
                false
            })
            .await?;
        let Some((last, _)) = page.last() else {
            return Ok(deleted);
        };
        after = Some(last.clone());
        let this_reading = seen.split_off(seen.len().saturating_sub(page.len()));
        for ((key, _), seen) in page.iter().zip(this_reading) {
            if then(seen) {
                env.store.delete_doc_unflushed(collection, key).await?;
                deleted += 1;
            }
        }
    }
}

/// What a search or an export keeps.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub provider_config_key: Option<String>,
    pub connection_id: Option<String>,
    pub script: Option<String>,
    /// Lines at this level or above (`debug` < `info` < `warn` < `error`).
    pub level: Option<u8>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub execution_id: Option<String>,
    /// A case-insensitive substring of the message.
    pub text: Option<String>,
}

/// Whether `haystack` contains `needle`, ignoring ASCII case (and the
/// case of other letters when either has any).
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    if needle.is_ascii() {
        // Lowercased copies and a linear substring search: comparing the
        // needle at every offset cost line × needle (a 5,000-byte search
        // over 10,000-byte lines took 2.5 ms a line).
        let n = needle.to_ascii_lowercase();
        return n.is_empty()
            || memchr::memmem::find(haystack.to_ascii_lowercase().as_bytes(), n.as_bytes())
                .is_some();
    }
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// Whether a stored log document can hold a line matching a text search,
/// from its raw bytes, ASCII case ignored. Decoding a document costs ten
/// times the scan, and a text search over old logs looks at every
/// document. Only for ASCII text that JSON stores as written (no quote,
/// backslash or control character), so a document without the bytes has
/// no matching line.
///
/// When the text has a run of two or more bytes that have no case (digits,
/// spaces, punctuation), that run is searched for as is and each hit
/// checked in place; otherwise a lower-cased copy of the document is.
struct TextPrefilter {
    needle: Vec<u8>,
    /// The caseless run and where it sits in the needle.
    anchor: Option<(memchr::memmem::Finder<'static>, usize)>,
    lower: memchr::memmem::Finder<'static>,
    scratch: Vec<u8>,
}

impl TextPrefilter {
    fn new(text: &str) -> Option<Self> {
        let plain = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii() && !b.is_ascii_control() && b != b'"' && b != b'\\');
        if !plain {
            return None;
        }
        let needle = text.as_bytes().to_vec();
        // The longest run of bytes without case.
        let (mut best, mut at, mut run_start) = (0, 0, 0);
        for (i, b) in needle.iter().enumerate() {
            if b.is_ascii_alphabetic() {
                run_start = i + 1;
            } else if i + 1 - run_start > best {
                best = i + 1 - run_start;
                at = run_start;
            }
        }
        let anchor = (best >= 2).then(|| {
            (
                memchr::memmem::Finder::new(&needle[at..at + best]).into_owned(),
                at,
            )
        });
        Some(TextPrefilter {
            lower: memchr::memmem::Finder::new(text.to_ascii_lowercase().as_bytes()).into_owned(),
            needle,
            anchor,
            scratch: Vec::new(),
        })
    }

    fn may_match(&mut self, raw: &[u8]) -> bool {
        if let Some((finder, offset)) = &self.anchor {
            let n = self.needle.len();
            return finder.find_iter(raw).any(|hit| {
                hit >= *offset
                    && raw
                        .get(hit - offset..hit - offset + n)
                        .is_some_and(|w| w.eq_ignore_ascii_case(&self.needle))
            });
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(raw);
        self.scratch.make_ascii_lowercase();
        self.lower.find(&self.scratch).is_some()
    }
}

pub fn level_rank(level: &str) -> Option<u8> {
    match level {
        "debug" => Some(0),
        "info" => Some(1),
        "warn" => Some(2),
        "error" => Some(3),
        _ => None,
    }
}

impl Filter {
    /// Whether stored log document `raw` is of an execution this filter
    /// keeps: its head read, its lines skipped (not decoded).
    pub fn may_keep(&self, raw: &[u8]) -> bool {
        serde_json::from_slice::<SearchHead>(raw).is_ok_and(|h| self.keeps_head(&h.execution))
    }

    /// [`Self::keeps_execution`] on a log's head.
    fn keeps_head(&self, e: &SearchHeadExecution) -> bool {
        self.keeps(&e.id, &e.script, &e.provider_config_key, &e.connection_id)
    }

    fn keeps_execution(&self, e: &Execution) -> bool {
        self.keeps(&e.id, &e.script, &e.provider_config_key, &e.connection_id)
    }

    /// Whether the execution `id` of `script` on connection `cid` of
    /// `pck` is one this filter asks for.
    fn keeps(&self, id: &str, script: &str, pck: &str, cid: &str) -> bool {
        self.provider_config_key.as_deref().is_none_or(|p| p == pck)
            && self.connection_id.as_deref().is_none_or(|c| c == cid)
            && self.script.as_deref().is_none_or(|s| s == script)
            && self.execution_id.as_deref().is_none_or(|i| i == id)
    }

    fn keeps_line(&self, l: &LineRef<'_>) -> bool {
        if self
            .level
            .is_some_and(|min| level_rank(&l.level).unwrap_or(0) < min)
        {
            return false;
        }
        if self.from.is_some() || self.to.is_some() {
            let Ok(at) = DateTime::parse_from_rfc3339(&l.at) else {
                return false;
            };
            // Compared as shown (to the microsecond): a `to` copied from a
            // line's `at` takes that line.
            let at = chrono::SubsecRound::trunc_subsecs(at, 6);
            if self.from.is_some_and(|f| at < f) || self.to.is_some_and(|t| at > t) {
                return false;
            }
        }
        match &self.text {
            None => true,
            Some(t) => contains_ignore_case(&l.message, t),
        }
    }

    /// The kept lines of a stored log document as the API returns them,
    /// oldest first.
    pub fn lines_of(&self, raw: &[u8]) -> Vec<Box<RawValue>> {
        let Ok(log) = serde_json::from_slice::<LogRef<'_>>(raw) else {
            return Vec::new();
        };
        if !self.keeps_execution(&log.execution) {
            return Vec::new();
        }
        log.lines
            .iter()
            .filter(|l| self.keeps_line(l))
            .map(|l| Self::view(&log.execution, l))
            .collect()
    }

    /// A line of an execution as the API returns it, written out as JSON
    /// (its `meta` as stored: decoded, a meta takes tens of times its
    /// text).
    fn view(e: &Execution, l: &LineRef<'_>) -> Box<RawValue> {
        #[derive(Serialize)]
        struct View<'a> {
            execution_id: &'a str,
            kind: &'a str,
            script: &'a str,
            provider_config_key: &'a str,
            connection_id: &'a str,
            at: String,
            level: &'a str,
            source: &'a str,
            message: &'a str,
            meta: Option<&'a RawValue>,
        }
        let at = DateTime::parse_from_rfc3339(&l.at)
            .map(|t| {
                t.with_timezone(&Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            })
            .unwrap_or_else(|_| l.at.to_string());
        let view = View {
            execution_id: &e.id,
            kind: &e.kind,
            script: &e.script,
            provider_config_key: &e.provider_config_key,
            connection_id: &e.connection_id,
            at,
            level: &l.level,
            source: &l.source,
            message: &l.message,
            meta: l.meta,
        };
        // Cannot fail: strings and valid JSON.
        serde_json::value::to_raw_value(&view)
            .unwrap_or_else(|_| serde_json::value::to_raw_value(&Value::Null).unwrap_or_default())
    }

    /// The lowest execution id `from` can find lines of: an execution's
    /// lines are written when it ends, so one that started up to its
    /// longest run before `from` may have lines after it (a day, or the
    /// environment's longest time limit, whichever is longer, and an hour
    /// more). A run a stop cut short is recorded when the next start
    /// finds it, under that time (see [`Logs::record_failure`]).
    pub fn floor(&self, env: &EnvState) -> Option<String> {
        let t = env.environment().limits.timeouts.clone();
        let longest = [t.action, t.sync, t.webhook, t.on_event]
            .into_iter()
            .max()
            .unwrap_or_default()
            .max(Duration::from_secs(24 * 3600))
            .saturating_add(Duration::from_secs(3600));
        let back = i64::try_from(longest.as_micros()).unwrap_or(i64::MAX);
        self.from
            .map(|f| format!("{:020}", f.timestamp_micros().saturating_sub(back).max(0)))
    }

    /// The key range of the time filter over execution ids: executions
    /// that started after `to` cannot have lines before it.
    fn upper_key(&self) -> Option<String> {
        self.to
            .map(|t| format!("{:020}-~", t.timestamp_micros().max(0)))
    }

    /// Lines newest first: up to `limit`, strictly before the cursor (an
    /// execution id and a line index); the next cursor when there is more.
    pub async fn search(
        &self,
        env: &EnvState,
        limit: usize,
        cursor: Option<(String, usize)>,
    ) -> Result<(Vec<Box<RawValue>>, Option<(String, usize)>), sluice_store::StoreError> {
        if let Some(id) = &self.execution_id {
            // One document.
            let raw = env
                .store
                .docs_raw(LOGS, id, None, 1, false, &mut |_| true)
                .await?
                .into_iter()
                .find(|(k, _)| k == id)
                .and_then(|(_, r)| r);
            let mut out = raw.map(|r| self.lines_of(&r)).unwrap_or_default();
            out.reverse();
            let start = cursor.map_or(0, |(_, i)| i);
            let mut page = Vec::new();
            let mut bytes = 0;
            for line in out.into_iter().skip(start) {
                if page.len() == limit
                    || (!page.is_empty() && bytes + line.get().len() > MAX_PAGE_BYTES)
                {
                    let next = start + page.len();
                    return Ok((page, Some((id.clone(), next))));
                }
                bytes += line.get().len();
                page.push(line);
            }
            return Ok((page, None));
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut skip_in_first = cursor.clone();
        // With a cursor the scan restarts at the cursor's execution.
        let mut after = match &cursor {
            Some((id, _)) => Some(format!("{id}~")),
            None => self.upper_key(),
        };
        let floor = self.floor(env);
        // A text search skips documents whose bytes do not hold the text
        // at all (the scan reads every line otherwise; see TextPrefilter).
        let mut prefilter = self.text.as_deref().and_then(TextPrefilter::new);
        // Documents are large (up to the per-execution bound): read few at
        // first, more as the search goes on.
        let mut batch = 8;
        loop {
            // Documents without the text are passed over in the store,
            // not copied out.
            // Nor those of other executions than asked: their head is
            // read, not their lines (a search for one connection over a
            // gigabyte of others' logs decoded every line of them).
            let page = env
                .store
                .docs_raw(LOGS, "", after.as_deref(), batch, true, &mut |raw| {
                    prefilter.as_mut().is_none_or(|p| p.may_match(raw)) && self.may_keep(raw)
                })
                .await?;
            batch = (batch * 2).min(256);
            let Some((last, _)) = page.last() else {
                return Ok((out, None));
            };
            after = Some(last.clone());
            for (key, raw) in &page {
                if floor.as_ref().is_some_and(|f| key < f) {
                    return Ok((out, None));
                }
                let Some(raw) = raw else {
                    continue;
                };
                let Ok(log) = serde_json::from_slice::<LogRef<'_>>(raw) else {
                    continue;
                };
                if !self.keeps_execution(&log.execution) {
                    continue;
                }
                let skip = match &skip_in_first {
                    Some((id, i)) if id == key => *i,
                    _ => 0,
                };
                for (i, l) in log.lines.iter().rev().enumerate().skip(skip) {
                    if !self.keeps_line(l) {
                        continue;
                    }
                    if out.len() == limit {
                        return Ok((out, Some((key.clone(), i))));
                    }
                    let line = Self::view(&log.execution, l);
                    // A page holds at most MAX_PAGE_BYTES of lines (at
                    // least one): a thousand lines of the largest are
                    // hundreds of MiB.
                    if !out.is_empty() && bytes + line.get().len() > MAX_PAGE_BYTES {
                        return Ok((out, Some((key.clone(), i))));
                    }
                    bytes += line.get().len();
                    out.push(line);
                }
                skip_in_first = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{TextPrefilter, contains_ignore_case};

    #[test]
    fn text_search_ignores_case() {
        assert!(contains_ignore_case("Fetched 3 Contacts", "contacts"));
        assert!(contains_ignore_case("x", ""));
        assert!(!contains_ignore_case("Fetched", "fetches"));
        assert!(contains_ignore_case("ÉCHEC du Sync", "échec"));
        let line = "a".repeat(10_000);
        let needle = format!("{}b", "a".repeat(4_999));
        assert!(!contains_ignore_case(&line, &needle));
        assert!(contains_ignore_case(&format!("{line}B"), &needle));
    }

    #[test]
    fn the_text_prefilter_skips_only_documents_without_the_text() {
        let doc = serde_json::to_vec(&serde_json::json!({
            "lines": [{"message": "Fetched PAGE 7 of \"contacts\"\n"}]
        }))
        .unwrap();
        let mut p = TextPrefilter::new("page 7").unwrap();
        assert!(
            p.may_match(&doc),
            "ASCII case is ignored, as the search does"
        );
        assert!(!TextPrefilter::new("page 8").unwrap().may_match(&doc));
        // Text JSON stores escaped is left to the full check.
        assert!(TextPrefilter::new("\"contacts\"").is_none());
        assert!(TextPrefilter::new("contacts\n").is_none());
        assert!(TextPrefilter::new("café").is_none());
        assert!(TextPrefilter::new("").is_none());
    }
}
