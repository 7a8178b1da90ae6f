//! `sluice test`: replays the original's `mocks/` layout against each
//! script and compares what it did with what was recorded, as the original's
//! generated tests do.
//!
//! A script is tested when `<integration>/mocks/<script>/` exists. A sync
//! must batchSave, per declared model, exactly `<Model>/batchSave.json` (in
//! order, JSON equality) and, when `<Model>/batchDelete.json` is not empty,
//! batchDelete it in one call; an action given `input.json` must return
//! `output.json`. HTTP requests, getConnection and getMetadata are answered
//! from `mocks/nango/` (see `sluice_runtime::replay`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sluice_runtime::connection::{Connection, MemoryConnections};
use sluice_runtime::exec::SyncRun;
use sluice_runtime::providers::ProviderCatalog;
use sluice_runtime::records::ConnectionRef;
use sluice_runtime::records::{BatchCall, BatchKind, CallLog};
use sluice_runtime::replay::RecordedConnections;
use sluice_runtime::replay::Replay;
use sluice_runtime::upstream::Upstream;
use sluice_runtime::{Call, Execution, Runtime, ScriptKind, Services};

use crate::compile::{self, CompileOptions, ProjectScript};
use crate::project;

/// What to test.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The project, where to build and cache, and the integration.
    pub build: CompileOptions,
    pub script: Option<String>,
    pub providers_file: Option<PathBuf>,
    /// Freezes the scripts' clock at this time.
    pub now: Option<DateTime<Utc>>,
    pub environment: String,
}

/// Why the tests could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error(transparent)]
    Compile(#[from] compile::CompileError),
    #[error(transparent)]
    Project(#[from] project::ProjectError),
    #[error(transparent)]
    Providers(#[from] sluice_runtime::providers::ProviderError),
    #[error(transparent)]
    Load(#[from] sluice_runtime::LoadError),
    #[error("no script `{0}` with tests or mocks to test")]
    NothingToTest(String),
}

/// One script's result.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub integration: String,
    pub script: String,
    pub kind: ScriptKind,
    /// `None` when it passed.
    pub failure: Option<String>,
    pub duration: Duration,
}

/// The mocks folder of an integration: `<root>/<pck>/mocks`, else `<root>/mocks`.
fn mocks_dir(root: &Path, pck: &str) -> PathBuf {
    let nested = root.join(pck).join("mocks");
    if nested.is_dir() {
        nested
    } else {
        root.join("mocks")
    }
}

/// Runs every script that has mocks; prints one line each, then the counts.
pub async fn run_tests(
    opts: &TestOptions,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<Vec<TestOutcome>, TestError> {
    let runtime = Runtime::new(opts.build.runtime_config(8))?;
    // A zero-yaml project's tests may import scripts index.ts does not list.
    let mut build = opts.build.clone();
    build.tested_scripts = true;
    let project = compile::compile(&build, &runtime, progress)?;
    let providers = Arc::new(crate::providers::catalog(
        &opts.build.dir,
        opts.providers_file.as_deref(),
        progress,
    )?);
    let environment = Arc::new(project::load_environment(
        &opts.build.dir,
        &opts.environment,
    )?);

    // A local connection names each integration's provider; without one,
    // the provider is the integration's name, as in the original harness.
    let connections_file = opts.build.dir.join("connections.yaml");
    let connections = if connections_file.exists() {
        project::load_connections(&connections_file)?
    } else {
        Vec::new()
    };
    let provider_of = |pck: &str| {
        connections
            .iter()
            .find(|c| c.provider_config_key == pck)
            .map(|c| c.provider.clone())
            .unwrap_or_else(|| pck.to_string())
    };

    if crate::zero::is_zero_yaml(&project.root) {
        let local: std::collections::HashMap<String, String> = connections
            .iter()
            .map(|c| (c.provider_config_key.clone(), c.provider.clone()))
            .collect();
        let outcomes = crate::zerotest::run(
            opts,
            &runtime,
            &project,
            providers,
            &local,
            environment,
            out,
        )
        .await;
        if outcomes.is_empty()
            && let Some(script) = &opts.script
        {
            return Err(TestError::NothingToTest(script.clone()));
        }
        return Ok(outcomes);
    }
    let replayer = Replayer {
        runtime: &runtime,
        providers,
        environment,
        now: opts.now,
    };
    let mut outcomes = Vec::new();
    for ps in &project.scripts {
        if opts.script.as_ref().is_some_and(|s| *s != ps.name) {
            continue;
        }
        let mocks = mocks_dir(&project.root, &ps.integration);
        if ps.kind == ScriptKind::OnEvent || !mocks.join(&ps.name).is_dir() {
            continue;
        }
        let outputs: Vec<String> = project
            .config
            .integration(&ps.integration)
            .and_then(|i| i.sync(&ps.name))
            .map(|s| s.output.clone())
            .unwrap_or_default();
        let started = Instant::now();
        let failure = replayer
            .run(ps, &provider_of(&ps.integration), &mocks, &outputs)
            .await
            .err();
        let outcome = TestOutcome {
            integration: ps.integration.clone(),
            script: ps.name.clone(),
            kind: ps.kind,
            failure,
            duration: started.elapsed(),
        };
        let _ = match &outcome.failure {
            None => writeln!(
                out,
                "✓ {}/{} ({}, {}ms)",
                outcome.integration,
                outcome.script,
                outcome.kind,
                outcome.duration.as_millis()
            ),
            Some(why) => writeln!(
                out,
                "✗ {}/{} ({}): {why}",
                outcome.integration, outcome.script, outcome.kind
            ),
        };
        outcomes.push(outcome);
    }
    if outcomes.is_empty()
        && let Some(script) = &opts.script
    {
        return Err(TestError::NothingToTest(script.clone()));
    }
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    let _ = writeln!(out, "{} passed, {failed} failed", outcomes.len() - failed);
    Ok(outcomes)
}

fn read_json(path: &Path) -> Result<Option<Value>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{} is not JSON: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn required(path: &Path) -> Result<Value, String> {
    read_json(path)?.ok_or_else(|| format!("missing mock file {}", path.display()))
}

/// What every replayed script shares.
struct Replayer<'a> {
    runtime: &'a Runtime,
    providers: Arc<ProviderCatalog>,
    environment: Arc<sluice_runtime::Environment>,
    now: Option<DateTime<Utc>>,
}

impl Replayer<'_> {
    /// Runs one script against its recordings; `Err` says why it failed.
    async fn run(
        &self,
        ps: &ProjectScript,
        provider: &str,
        mocks: &Path,
        outputs: &[String],
    ) -> Result<(), String> {
        let here = mocks.join(&ps.name);
        let call = match ps.kind {
            ScriptKind::Sync => Call::Sync,
            _ => Call::Action {
                input: read_json(&here.join("input.json"))?.map(|v| v.to_string()),
            },
        };
        let conn = ConnectionRef {
            provider_config_key: ps.integration.clone(),
            connection_id: "sluice-test".into(),
        };
        let connection: Connection = serde_json::from_value(serde_json::json!({
            "connection_id": conn.connection_id,
            "provider_config_key": conn.provider_config_key,
            "provider": provider,
            "credentials": {},
        }))
        .map_err(|e| e.to_string())?;
        let replay = Arc::new(Replay::new(mocks));
        let calls = Arc::new(CallLog::default());
        let mut services = Services::new(
            self.environment.clone(),
            self.providers.clone(),
            Arc::new(RecordedConnections::new(
                replay.clone(),
                Arc::new(MemoryConnections::new([connection])),
            )),
            calls.clone(),
        );
        services.upstream = Upstream::Replay(replay);
        let mut exec = Execution::new(ps.name.clone(), conn, call);
        exec.sync = SyncRun::default();
        exec.clock = self.now;
        let report = self
            .runtime
            .execute(&ps.script, exec, Arc::new(services))
            .await;
        // Why a replayed `paginate` stopped early, if the host said.
        let notes: Vec<String> = report
            .logs
            .iter()
            .filter(|l| l.message.starts_with("paginate stopped: "))
            .map(|l| l.message.clone())
            .collect();
        let with_notes = |why: String| {
            if notes.is_empty() {
                why
            } else {
                format!("{why} (note: {})", notes.join("; "))
            }
        };
        let output = report.outcome.map_err(|e| {
            let logs: Vec<String> = report
                .logs
                .iter()
                .rev()
                .take(3)
                .map(|l| l.message.clone())
                .collect();
            if logs.is_empty() {
                e.to_string()
            } else {
                format!("{e} (last logs: {})", logs.join(" | "))
            }
        })?;
        match ps.kind {
            ScriptKind::Sync => check_sync(&here, outputs, &calls.calls()).map_err(with_notes),
            _ => {
                let expected = required(&here.join("output.json"))?;
                let actual = output.unwrap_or(Value::Null);
                match difference(&expected, &actual, "output") {
                    None => Ok(()),
                    Some(d) => Err(with_notes(d)),
                }
            }
        }
    }
}

fn check_sync(here: &Path, models: &[String], batches: &[BatchCall]) -> Result<(), String> {
    for model in models {
        let expected = required(&here.join(model).join("batchSave.json"))?;
        let saved: Vec<Value> = batches
            .iter()
            .filter(|b| b.kind == BatchKind::BatchSave && b.model == *model)
            .flat_map(|b| b.records.iter().cloned())
            .collect();
        if let Some(d) = difference(
            &expected,
            &Value::Array(saved),
            &format!("{model} batchSave"),
        ) {
            return Err(d);
        }
        let deletes = required(&here.join(model).join("batchDelete.json"))?;
        if deletes.as_array().is_some_and(|a| !a.is_empty()) {
            let called = batches.iter().any(|b| {
                b.kind == BatchKind::BatchDelete
                    && b.model == *model
                    && difference(&deletes, &Value::Array(b.records.clone()), "").is_none()
            });
            if !called {
                return Err(format!(
                    "expected a batchDelete of {model} with the {} recorded records; none matched",
                    deletes.as_array().map(Vec::len).unwrap_or(0)
                ));
            }
        }
    }
    Ok(())
}

/// Where two JSON values first differ (numbers compared as numbers, object
/// keys in any order), or `None` when they are equal.
pub fn difference(expected: &Value, actual: &Value, path: &str) -> Option<String> {
    let short = |v: &Value| {
        let t = v.to_string();
        if t.chars().count() > 80 {
            format!("{}…", t.chars().take(80).collect::<String>())
        } else {
            t
        }
    };
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => {
            (a.as_f64() != b.as_f64()).then(|| format!("{path}: expected {a}, got {b}"))
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if let Some(d) = difference(x, y, &format!("{path}[{i}]")) {
                    return Some(d);
                }
            }
            (a.len() != b.len())
                .then(|| format!("{path}: expected {} items, got {}", a.len(), b.len()))
        }
        (Value::Object(a), Value::Object(b)) => {
            for (k, x) in a {
                match b.get(k) {
                    Some(y) => {
                        if let Some(d) = difference(x, y, &format!("{path}.{k}")) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{path}.{k}: expected {}, got nothing", short(x))),
                }
            }
            b.keys()
                .find(|k| !a.contains_key(*k))
                .map(|k| format!("{path}.{k}: unexpected {}", short(&b[k])))
        }
        (a, b) if a == b => None,
        (a, b) => Some(format!("{path}: expected {}, got {}", short(a), short(b))),
    }
}
