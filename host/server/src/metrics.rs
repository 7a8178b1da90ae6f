//! What an operator's Prometheus scrapes (`serve --metrics-listen ADDR`):
//! requests, executions, records, webhook deliveries, and what is held
//! right now (connections, running scripts, schedules, queued async
//! actions, log bytes, the store's health, the process's memory and file
//! descriptors), in Prometheus's text format on a listener of its own,
//! apart from the API (so it can stay on a private address).
//!
//! Counters and histograms are updated where things happen (a request's
//! end, an execution's or a delivery's record in the logs); gauges are
//! read when scraped. Labels name environments by name, routes by their
//! template (`/connection/{connection_id}`, never an id), so the number
//! of series stays that of environments × routes × kinds.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::app::App;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExecutionLabels {
    environment: String,
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    environment: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    environment: String,
    change: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    environment: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvLabels {
    environment: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

fn execution_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0, 3600.0,
    ])
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabels>,
    executions: Family<ExecutionLabels, Counter>,
    execution_seconds: Histograms<KindLabels>,
    records: Family<RecordLabels, Counter>,
    deliveries: Family<OutcomeLabels, Counter>,
    /// The server's connection slots and how many there are: a slot
    /// taken is a client connection open (a websocket keeps its slot).
    slots: std::sync::OnceLock<(Arc<tokio::sync::Semaphore>, usize)>,
    connections: Gauge,
    connections_max: Gauge,
    executions_running: Gauge,
    executions_max: Gauge,
    schedules: Family<EnvLabels, Gauge>,
    syncs_running: Family<EnvLabels, Gauge>,
    async_waiting: Family<EnvLabels, Gauge>,
    async_waiting_bytes: Family<EnvLabels, Gauge>,
    log_bytes: Family<EnvLabels, Gauge>,
    store_failing: Gauge,
    resident_bytes: Gauge,
    open_fds: Gauge,
    start_time: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds: Histograms<RouteLabels> =
            Family::new_with_constructor(request_buckets as fn() -> Histogram);
        let executions = Family::<ExecutionLabels, Counter>::default();
        let execution_seconds: Histograms<KindLabels> =
            Family::new_with_constructor(execution_buckets as fn() -> Histogram);
        let records = Family::<RecordLabels, Counter>::default();
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        let m = Metrics {
            requests,
            request_seconds,
            executions,
            execution_seconds,
            records,
            deliveries,
            slots: std::sync::OnceLock::new(),
            connections: Gauge::default(),
            connections_max: Gauge::default(),
            executions_running: Gauge::default(),
            executions_max: Gauge::default(),
            schedules: Family::default(),
            syncs_running: Family::default(),
            async_waiting: Family::default(),
            async_waiting_bytes: Family::default(),
            log_bytes: Family::default(),
            store_failing: Gauge::default(),
            resident_bytes: Gauge::default(),
            open_fds: Gauge::default(),
            start_time: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sluice_http_requests",
            "HTTP requests answered, by method, route template and status",
            m.requests.clone(),
        );
        registry.register(
            "sluice_http_request_duration_seconds",
            "Time from a request's arrival to its answer's head, by method and route template",
            m.request_seconds.clone(),
        );
        registry.register(
            "sluice_executions",
            "Executions ended, by environment, kind (sync, action, webhook, event, proxy, auth: a failed token refresh) and outcome (success, failure)",
            m.executions.clone(),
        );
        registry.register(
            "sluice_execution_duration_seconds",
            "How long executions ran, by environment and kind",
            m.execution_seconds.clone(),
        );
        registry.register(
            "sluice_records",
            "Records changed by executions, by environment and change (added, updated, deleted)",
            m.records.clone(),
        );
        registry.register(
            "sluice_webhook_deliveries",
            "Attempts to send a webhook to the app, by environment and outcome (sent, failed, given_up)",
            m.deliveries.clone(),
        );
        registry.register(
            "sluice_client_connections",
            "Client connections open",
            m.connections.clone(),
        );
        registry.register(
            "sluice_client_connections_max",
            "Most client connections open at once (--max-connections)",
            m.connections_max.clone(),
        );
        registry.register(
            "sluice_executions_running",
            "Scripts running now",
            m.executions_running.clone(),
        );
        registry.register(
            "sluice_executions_max",
            "Most scripts running at once",
            m.executions_max.clone(),
        );
        registry.register(
            "sluice_schedules",
            "Sync schedules, by environment",
            m.schedules.clone(),
        );
        registry.register(
            "sluice_syncs_running",
            "Scheduled syncs running now, by environment",
            m.syncs_running.clone(),
        );
        registry.register(
            "sluice_async_actions_waiting",
            "Async actions waiting or running, by environment",
            m.async_waiting.clone(),
        );
        registry.register(
            "sluice_async_actions_waiting_bytes",
            "Memory the inputs of async actions waiting or running take, by environment",
            m.async_waiting_bytes.clone(),
        );
        registry.register(
            "sluice_log_bytes",
            "Bytes of execution logs kept, by environment",
            m.log_bytes.clone(),
        );
        registry.register(
            "sluice_store_failing",
            "1 while the store refuses writes (GET /health answers 503), else 0",
            m.store_failing.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            m.resident_bytes.clone(),
        );
        registry.register(
            "process_open_fds",
            "File descriptors the process has open",
            m.open_fds.clone(),
        );
        registry.register(
            "sluice_start_time_seconds",
            "When this server started serving (a standby: when it took over), in seconds since the Unix epoch",
            m.start_time.clone(),
        );
        registry.register(
            "sluice_build",
            "The running build",
            Info::new([("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]),
        );
        let start = chrono::Utc::now().timestamp();
        m.start_time.set(start);
        Metrics { registry, ..m }
    }

    /// A request answered.
    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status: status_label(status),
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// An execution ended (as its history keeps it).
    pub fn execution(&self, environment: &str, e: &crate::logs::Execution) {
        let outcome = if e.success { "success" } else { "failure" };
        self.executions
            .get_or_create(&ExecutionLabels {
                environment: environment.to_string(),
                kind: e.kind.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.execution_seconds
            .get_or_create(&KindLabels {
                environment: environment.to_string(),
                kind: e.kind.clone(),
            })
            .observe(e.duration_ms as f64 / 1000.0);
        let mut total = sluice_runtime::records::Changes::default();
        for c in e.changes.values() {
            total.add(*c);
        }
        for (change, n) in [
            ("added", total.added),
            ("updated", total.updated),
            ("deleted", total.deleted),
        ] {
            if n > 0 {
                self.records
                    .get_or_create(&RecordLabels {
                        environment: environment.to_string(),
                        change: change.to_string(),
                    })
                    .inc_by(n);
            }
        }
    }

    /// An attempt to send a webhook to the app.
    pub fn delivery(&self, environment: &str, sent: bool, given_up: bool) {
        let outcome = match (sent, given_up) {
            (true, _) => "sent",
            (false, true) => "given_up",
            (false, false) => "failed",
        };
        self.deliveries
            .get_or_create(&OutcomeLabels {
                environment: environment.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts the client connections by the server's slots.
    pub(crate) fn count_slots(&self, slots: Arc<tokio::sync::Semaphore>, max: usize) {
        let _ = self.slots.set((slots, max));
    }

    /// The text Prometheus scrapes, the gauges read from `app` now.
    pub fn render(&self, app: &App) -> String {
        let env_labels = |name: &str| EnvLabels {
            environment: name.to_string(),
        };
        if let Some((slots, max)) = self.slots.get() {
            let open = max.saturating_sub(slots.available_permits());
            self.connections
                .set(i64::try_from(open).unwrap_or(i64::MAX));
            self.connections_max
                .set(i64::try_from(*max).unwrap_or(i64::MAX));
        }
        let max = app.config.max_concurrent_executions;
        let free = app.executions.available_permits();
        self.executions_max
            .set(i64::try_from(max).unwrap_or(i64::MAX));
        self.executions_running
            .set(i64::try_from(max.saturating_sub(free)).unwrap_or(0));
        let counts = app.scheduler.counts_by_environment();
        for env in app.envs() {
            let labels = env_labels(env.store.name());
            let (schedules, running) = counts.get(&env.store.id()).copied().unwrap_or_default();
            self.schedules
                .get_or_create(&labels)
                .set(i64::try_from(schedules).unwrap_or(i64::MAX));
            self.syncs_running
                .get_or_create(&labels)
                .set(i64::try_from(running).unwrap_or(i64::MAX));
            let (actions, bytes) = env.async_actions.waiting();
            self.async_waiting
                .get_or_create(&labels)
                .set(i64::try_from(actions).unwrap_or(i64::MAX));
            self.async_waiting_bytes
                .get_or_create(&labels)
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            self.log_bytes
                .get_or_create(&labels)
                .set(i64::try_from(app.logs.bytes(&env.store)).unwrap_or(i64::MAX));
        }
        self.store_failing.set(i64::from(app.health.failing()));
        if let Some(bytes) = resident_bytes() {
            self.resident_bytes.set(bytes);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The process's resident memory (Linux: `VmRSS` of `/proc/self/status`,
/// in kB whatever the page size).
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: i64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Answers `GET /metrics` on `listener` until the task is aborted (503
/// while there is no app: a standby's, or a server stopping); any other
/// request is 404.
pub async fn serve(listener: Arc<tokio::net::TcpListener>, app: std::sync::Weak<App>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&app, &req).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30))
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(300), connection).await;
        });
    }
}

async fn answer(
    app: &std::sync::Weak<App>,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<axum::body::Body> {
    let text = |status: u16, body: String, content_type: &'static str| {
        let mut r = hyper::Response::new(axum::body::Body::from(body));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(content_type),
        );
        if status != 200 {
            // Not kept alive: a standby's scraper reconnects to the task
            // that serves once it has taken over.
            r.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
        }
        r
    };
    if req.uri().path() != "/metrics" || req.method() != hyper::Method::GET {
        return text(
            404,
            "this listener answers GET /metrics only\n".into(),
            "text/plain; charset=utf-8",
        );
    }
    match app.upgrade() {
        Some(app) => {
            // A store a request found failing is checked again, as
            // `GET /health` would: the gauge says what it would answer.
            // At most a second: a scrape must not wait out a stuck
            // store's probe (the gauge then says what was known).
            if app.health.failing() {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), app.check_store())
                    .await;
            }
            text(200, app.metrics.render(&app), CONTENT_TYPE)
        }
        None => text(
            503,
            "no metrics: this server is a standby, or stopping\n".into(),
            "text/plain; charset=utf-8",
        ),
    }
}

/// A response status as a label: the statuses sluice answers with itself
/// as they are, any other (an upstream's passed through by `/proxy`, a
/// script's own) as its class (`4xx`), so nothing an upstream or a script
/// chooses makes a new series.
fn status_label(status: u16) -> String {
    const OWN: &[u16] = &[
        200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408,
        409, 410, 412, 413, 414, 415, 422, 424, 429, 431, 500, 501, 502, 503, 504,
    ];
    if OWN.contains(&status) {
        status.to_string()
    } else {
        format!("{}xx", (status / 100).min(9))
    }
}

#[cfg(test)]
mod tests {
    use super::status_label;

    #[test]
    fn statuses_an_upstream_or_a_script_chooses_are_counted_by_class() {
        assert_eq!(status_label(404), "404");
        assert_eq!(status_label(424), "424");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
        assert_eq!(status_label(999), "9xx");
        // Every status an upstream may send makes at most one series per
        // class besides sluice's own.
        let labels: std::collections::HashSet<String> = (100..1000).map(status_label).collect();
        assert!(labels.len() <= 33 + 9, "{}", labels.len());
    }
}
