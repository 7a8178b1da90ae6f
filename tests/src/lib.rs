//! Helpers for sluice's integration tests and benches: the guest components
//! (built by build.rs), a shared runtime whose compile cache persists between
//! runs, and a harness that wires services around a mock upstream.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use sluice_runtime::connection::{Connection, MemoryConnections};
use sluice_runtime::exec::{ScriptSet, SyncRun};
use sluice_runtime::providers::ProviderCatalog;
use sluice_runtime::records::{ConnectionRef, MemoryRecords};
use sluice_runtime::{
    Call, Environment, Execution, Limits, Report, Runtime, RuntimeConfig, Script, Services,
};

use sluice_project::compile::{self, CompileOptions, Project};
pub use sluice_project::mock::{Fixture, MockRequest, MockResponse, MockServer};

/// Paths of the guest components.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// Ends the test process, failing it, when it is still running
/// [`watchdog_limit`] after its first call: a test stuck on something that
/// never comes (a full disk, a lost wake-up) then fails the run with a
/// message instead of holding it until CI's own time runs out. libtest's
/// "has been running for over 60 seconds" lines above it name the test.
/// A guard against hangs, not a speed check: the limit is far beyond any
/// run of the suite.
pub fn watchdog() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let limit = watchdog_limit();
        std::thread::Builder::new()
            .name("test-watchdog".into())
            .spawn(move || {
                std::thread::sleep(limit);
                eprintln!(
                    "\nsluice-tests: still running {} minutes after the first test started; \
                     a test is stuck (the \"running for over 60 seconds\" lines name it). \
                     Stopping the run.",
                    limit.as_secs() / 60
                );
                std::process::exit(101);
            })
            .expect("spawning the test watchdog");
    });
}

/// How long one test process may run: `SLUICE_TEST_WATCHDOG_SECS`, or 60
/// minutes.
fn watchdog_limit() -> Duration {
    let secs = std::env::var("SLUICE_TEST_WATCHDOG_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60 * 60);
    Duration::from_secs(secs)
}

/// A new, empty schema on the PostgreSQL server that `SLUICE_TEST_POSTGRES`
/// names (a connection string whose user may create schemas; `.ci/run`
/// starts a server and sets it), as a connection string whose
/// `search_path` is that schema. `None` without the variable, said on
/// stderr: the PostgreSQL tests do not run then. A server that is named
/// but cannot be reached fails the test.
pub async fn postgres_schema() -> Option<String> {
    let Some(url) = std::env::var("SLUICE_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("SLUICE_TEST_POSTGRES is not set: this PostgreSQL test does not run");
        return None;
    };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to SLUICE_TEST_POSTGRES: {e}"));
    tokio::spawn(connection);
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let joiner = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{joiner}options=-csearch_path%3D{schema}"))
}

/// The repository root.
pub fn repo_root() -> &'static Path {
    watchdog();
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
}

/// One runtime per test process; components compile once per machine and
/// are loaded from the cache afterwards.
pub fn runtime() -> Runtime {
    watchdog();
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let mut config = RuntimeConfig::new(guests::CACHE_DIR);
            config.max_concurrent = 64;
            config.max_memory_bytes = 512 << 20;
            // Retry waits in tests are short; the default backoff is tested
            // as a unit in the runtime.
            config.retry_base_delay = Duration::from_millis(20);
            // For profiling the benches and tests (ARCHITECTURE.md).
            config.perf_map = std::env::var_os("SLUICE_PERFMAP").is_some();
            Runtime::new(config).unwrap_or_else(|e| panic!("runtime: {e}"))
        })
        .clone()
}

/// A loaded script, shared across the tests of this process.
pub fn script(path: &str) -> Arc<Script> {
    static SCRIPTS: OnceLock<Mutex<HashMap<String, Arc<Script>>>> = OnceLock::new();
    let scripts = SCRIPTS.get_or_init(Default::default);
    if let Some(s) = scripts.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
        return s.clone();
    }
    let loaded = Arc::new(
        runtime()
            .load_file(Path::new(path))
            .unwrap_or_else(|e| panic!("load {path}: {e}")),
    );
    scripts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(path.to_string(), loaded.clone());
    loaded
}

/// The TypeScript SDK of this checkout (build.rs installed its node_modules).
pub fn ts_sdk() -> PathBuf {
    repo_root().join("guest-sdk").join("ts")
}

/// Compile options for a nango-integrations folder, with this checkout's
/// SDK and the tests' caches; `build` names its build folder under target/.
pub fn compile_options(dir: &Path, build: &str) -> CompileOptions {
    CompileOptions {
        dir: dir.to_path_buf(),
        integration: None,
        sdk: Some(ts_sdk()),
        cache_dir: PathBuf::from(guests::CACHE_DIR),
        cache_max_bytes: sluice_runtime::DEFAULT_CACHE_MAX_BYTES,
        build_dir: Some(Path::new(guests::BUILD_DIR).join(build)),
        tested_scripts: false,
    }
}

/// `tests/ts-project`, compiled once per test process (its component and
/// precompiled artifact are reused between runs while it is unchanged).
pub fn ts_project() -> &'static Project {
    static PROJECT: OnceLock<Project> = OnceLock::new();
    PROJECT.get_or_init(|| {
        let dir = repo_root().join("tests").join("ts-project");
        let mut progress = Vec::new();
        compile::compile(
            &compile_options(&dir, "ts-project"),
            &runtime(),
            &mut progress,
        )
        .unwrap_or_else(|e| {
            panic!(
                "compile tests/ts-project: {e}\n{}",
                String::from_utf8_lossy(&progress)
            )
        })
    })
}

/// A script of `tests/ts-project` by name.
pub fn ts_script(name: &str) -> Arc<Script> {
    ts_project()
        .script(name, None)
        .unwrap_or_else(|e| panic!("{e}"))
        .script
        .clone()
}

/// A connection from its credentials (JSON in the original's shape).
pub fn connection(
    pck: &str,
    connection_id: &str,
    provider: &str,
    credentials: Value,
) -> Connection {
    serde_json::from_value(serde_json::json!({
        "connection_id": connection_id,
        "provider_config_key": pck,
        "provider": provider,
        "credentials": credentials,
    }))
    .unwrap_or_else(|e| panic!("connection: {e}"))
}

/// Everything an execution needs, around one mock upstream.
pub struct Harness {
    pub mock: MockServer,
    pub providers: ProviderCatalog,
    pub connections: Arc<MemoryConnections>,
    pub records: Arc<MemoryRecords>,
    pub scripts: Arc<ScriptSet>,
    pub environment: Environment,
    /// Where requests go, when not the network through the default clients.
    pub upstream: Option<sluice_runtime::Upstream>,
    /// The environment's locks, one table for every execution (as a
    /// server's environment has).
    pub locks: Arc<sluice_runtime::locks::Locks>,
    /// Where `triggerSync`/`startSync` go (none: logged, as in a dry run).
    pub sync_control: Option<Arc<dyn sluice_runtime::exec::SyncControl>>,
}

impl Harness {
    /// A mock upstream answering with `handler`, and a provider `mock`
    /// (defined by `provider_yaml`, with `{base}` replaced by the mock's URL)
    /// used by connection `c1` of integration `mock-int`.
    pub async fn new(
        handler: impl Fn(&MockRequest) -> MockResponse + Send + Sync + 'static,
        provider_yaml: &str,
        credentials: Value,
    ) -> Self {
        let mock = MockServer::start(Arc::new(handler))
            .await
            .unwrap_or_else(|e| panic!("mock: {e}"));
        let yaml = provider_yaml.replace("{base}", &mock.url());
        let providers = ProviderCatalog::from_yaml(&yaml, "test providers")
            .unwrap_or_else(|e| panic!("providers: {e}"));
        let connections = Arc::new(MemoryConnections::new([connection(
            "mock-int",
            "c1",
            "mock",
            credentials,
        )]));
        Self {
            mock,
            providers,
            connections,
            records: Arc::new(MemoryRecords::new()),
            scripts: Arc::new(ScriptSet::default()),
            environment: Environment {
                name: "test".into(),
                ..Environment::default()
            },
            upstream: None,
            locks: Arc::default(),
            sync_control: None,
        }
    }

    /// A harness whose provider is simply the mock, with bearer credentials.
    pub async fn simple(
        handler: impl Fn(&MockRequest) -> MockResponse + Send + Sync + 'static,
    ) -> Self {
        Self::new(
            handler,
            "mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: {base}\n",
            serde_json::json!({"type": "OAUTH2", "access_token": "tok-123"}),
        )
        .await
    }

    pub fn limits(&mut self) -> &mut Limits {
        &mut self.environment.limits
    }

    pub fn services(&self) -> Arc<Services> {
        let mut services = Services::new(
            Arc::new(self.environment.clone()),
            Arc::new(self.providers.clone()),
            self.connections.clone(),
            self.records.clone(),
        );
        services.scripts = self.scripts.clone();
        services.locks = self.locks.clone();
        services.syncs = self.sync_control.clone();
        if let Some(upstream) = &self.upstream {
            services.upstream = upstream.clone();
        }
        Arc::new(services)
    }

    pub fn conn(&self) -> ConnectionRef {
        ConnectionRef {
            provider_config_key: "mock-int".into(),
            connection_id: "c1".into(),
        }
    }

    pub fn execution(&self, name: &str, call: Call) -> Execution {
        Execution::new(name, self.conn(), call)
    }

    /// Runs an action with a JSON input.
    pub async fn action(&self, path: &str, input: Value) -> Report {
        let exec = self.execution(
            "test-action",
            Call::Action {
                input: Some(input.to_string()),
            },
        );
        runtime()
            .execute(&script(path), exec, self.services())
            .await
    }

    /// Runs a sync's `fetchData`.
    pub async fn sync(&self, path: &str, sync: SyncRun) -> Report {
        let mut exec = self.execution("test-sync", Call::Sync);
        exec.sync = sync;
        runtime()
            .execute(&script(path), exec, self.services())
            .await
    }

    /// Runs `script` (a script of a bundle is found by its name) once.
    pub async fn run(&self, script: &Script, name: &str, call: Call, sync: SyncRun) -> Report {
        let mut exec = self.execution(name, call);
        exec.sync = sync;
        runtime().execute(script, exec, self.services()).await
    }

    /// Runs an action of `tests/ts-project` with a JSON input.
    pub async fn ts_action(&self, name: &str, input: Value) -> Report {
        let call = Call::Action {
            input: Some(input.to_string()),
        };
        self.run(&ts_script(name), name, call, SyncRun::default())
            .await
    }

    /// Runs a sync's webhook handler with a JSON payload.
    pub async fn webhook(&self, path: &str, sync: SyncRun, payload: Value) -> Report {
        let mut exec = self.execution(
            "test-sync",
            Call::Webhook {
                payload: payload.to_string(),
            },
        );
        exec.sync = sync;
        runtime()
            .execute(&script(path), exec, self.services())
            .await
    }
}

/// The output of a successful report; panics with the error otherwise.
pub fn output(report: &Report) -> Value {
    match &report.outcome {
        Ok(v) => v.clone().unwrap_or(Value::Null),
        Err(e) => panic!("execution failed: {e}\nlogs: {:#?}", report.logs),
    }
}
