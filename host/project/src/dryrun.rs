//! `sluice dryrun`: run one script against a local connection without
//! persisting anything, then show what it would have written.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sluice_nango_yaml::models::valid_model_name;
use sluice_runtime::connection::{Connection, ConnectionStore, MemoryConnections};
use sluice_runtime::exec::{LogEntry, ScriptFailure, ScriptValidation, SyncRun};
use sluice_runtime::records::{
    BatchCall, BatchKind, Changes, ConnectionRef, Incoming, MemoryRecords, Merging, Position,
    RecordError, RecordStore, StoredRecord, WriteContext, WriteKind,
};
use sluice_runtime::replay::RecordedCall;
use sluice_runtime::upstream::{Network, Recorder, Upstream};
use sluice_runtime::{Call, Execution, Runtime, Script, ScriptKind, Services};

use crate::catalog::Catalog;
use crate::compile::{self, CompileOptions};
use crate::mock::{Fixture, MockServer};
use crate::project::{self, ProjectError};
use crate::remote::{RemoteError, ServerConnections, ServerSource};

/// What a dry run needs.
#[derive(Debug, Clone)]
pub struct DryRunOptions {
    /// The project folder (a nango-integrations folder, a Rust crate of
    /// scripts, or where `.wasm` paths are relative to), where to build and
    /// cache, and the integration (`--integration-id`).
    pub build: CompileOptions,
    /// `server` was chosen without `--from-server` (no connections file,
    /// the environment's key set): the environment its key must be, asked
    /// of the server once the script is found, before anything is read.
    pub implicit_server: Option<String>,
    /// A script name (declared in nango.yaml, or a binary of the crate in
    /// the folder) or a `.wasm` path.
    pub script: String,
    pub connection_id: String,
    /// Defaults to `<dir>/connections.yaml`.
    pub connections_file: Option<PathBuf>,
    /// Take the connection and the environment variables from this server
    /// instead of the connections file.
    pub server: Option<ServerSource>,
    /// Providers added to the built-in catalogue.
    pub providers_file: Option<PathBuf>,
    pub environment: String,
    /// Action input, JSON.
    pub input: Option<String>,
    /// Replaces the connection's metadata for this run.
    pub metadata: Option<Value>,
    pub last_sync_date: Option<DateTime<Utc>>,
    /// The checkpoint a sync's `getCheckpoint` finds (`--checkpoint`), as
    /// if a previous run had saved it.
    pub checkpoint: Option<Value>,
    pub variant: Option<String>,
    /// Serve this fixture on 127.0.0.1 and send every upstream request there.
    pub mock_upstream: Option<PathBuf>,
    /// Invalid input, output or records fail the run instead of being
    /// logged as warnings.
    pub validation: bool,
    /// Write what the run received and produced as mocks in the original's
    /// layout under this folder (`<dir>/<integration>/mocks`), for `sluice
    /// test`.
    pub save_responses: Option<PathBuf>,
    /// Write what the run received and produced as the unified recording
    /// of a zero-yaml project (`--save`): `<dir>/<integration>/tests/<script>.test.json`,
    /// which `sluice test` replays.
    pub save_fixture: Option<PathBuf>,
}

/// Why a dry run could not start.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Compile(#[from] crate::compile::CompileError),
    #[error(transparent)]
    Providers(#[from] sluice_runtime::providers::ProviderError),
    #[error(transparent)]
    Load(#[from] sluice_runtime::LoadError),
    #[error(transparent)]
    Fixture(#[from] crate::mock::FixtureError),
    #[error("cannot start the mock upstream: {0}")]
    Mock(std::io::Error),
    #[error("cannot save the responses under {path}: {source}")]
    SaveResponses {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the connection's provider `{provider}` is not in the providers catalogue (the built-in one, and the original's when the project has `nango` installed: `npm install` it, or add the provider with --providers FILE)"
    )]
    UnknownProvider { provider: String },
    #[error(
        "no {path} to read the connection from: write one (or give --connections FILE), or read it from a server: set NANGO_SECRET_KEY_{} (in the environment or .env) with NANGO_HOSTPORT, or pass --from-server --host URL --secret-key KEY",
        environment.to_uppercase()
    )]
    NoConnections { path: String, environment: String },
    #[error("{0}")]
    ImplicitServer(String),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(
        "name the connection's integration with --integration-id: the server holds connections per integration"
    )]
    NoIntegration,
    #[error(
        "payload_too_large: --input is {size} bytes, more than the {max} a script may take (max_payload_bytes)"
    )]
    InputTooLarge { size: usize, max: usize },
    #[error(
        "--save writes a zero-yaml project's test recording (<integration>/tests/<script>.test.json), which {dir} is not: a nango.yaml project's tests replay mocks/, which --save-responses writes"
    )]
    SaveNotZeroYaml { dir: String },
    #[error("cannot set the --checkpoint: {0}")]
    Checkpoint(String),
}

/// The records a model received, as the script passed them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelRecords {
    #[serde(rename = "batchSave")]
    pub saved: Vec<Value>,
    #[serde(rename = "batchDelete")]
    pub deleted: Vec<Value>,
    #[serde(rename = "batchUpdate")]
    pub updated: Vec<Value>,
    #[serde(skip)]
    saved_index: HashMap<String, usize>,
}

/// A record store that keeps what it is given in memory, and a copy of every
/// record per model to show it (the original's dry run keeps the last
/// occurrence of a saved id).
#[derive(Default)]
pub struct RecordingStore {
    inner: MemoryRecords,
    seen: Mutex<BTreeMap<String, ModelRecords>>,
}

impl RecordingStore {
    pub fn models(&self) -> BTreeMap<String, ModelRecords> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl RecordStore for RecordingStore {
    async fn checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
    ) -> Result<Option<Value>, RecordError> {
        self.inner.checkpoint(conn, key).await
    }

    async fn set_checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
        value: Option<Value>,
    ) -> Result<(), RecordError> {
        self.inner.set_checkpoint(conn, key, value).await
    }

    async fn write(
        &self,
        kind: WriteKind,
        conn: &ConnectionRef,
        model: &str,
        chunk: Vec<Incoming>,
        ctx: &WriteContext,
        merging: &mut Merging,
    ) -> Result<Changes, RecordError> {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let records = seen.entry(model.to_string()).or_default();
            for r in &chunk {
                let json = Value::Object(r.json.clone());
                match kind {
                    WriteKind::Save => match records.saved_index.get(&r.external_id) {
                        Some(&i) => records.saved[i] = json,
                        None => {
                            records
                                .saved_index
                                .insert(r.external_id.clone(), records.saved.len());
                            records.saved.push(json);
                        }
                    },
                    WriteKind::Delete => records.deleted.push(json),
                    WriteKind::Update => records.updated.push(json),
                }
            }
        }
        self.inner
            .write(kind, conn, model, chunk, ctx, merging)
            .await
    }

    async fn get_by_ids(
        &self,
        conn: &ConnectionRef,
        model: &str,
        ids: &[String],
    ) -> Result<Vec<StoredRecord>, RecordError> {
        self.inner.get_by_ids(conn, model, ids).await
    }

    async fn newest_position(
        &self,
        conn: &ConnectionRef,
        model: &str,
    ) -> Result<Option<Position>, RecordError> {
        self.inner.newest_position(conn, model).await
    }

    async fn list(
        &self,
        conn: &ConnectionRef,
        model: &str,
        after: Option<Position>,
        limit: usize,
    ) -> Result<(Vec<StoredRecord>, Option<Position>), RecordError> {
        self.inner.list(conn, model, after, limit).await
    }

    /// Offered each records call once, before its chunks are written: a
    /// batchSave starts a new call, so a record saved again by a later call
    /// is kept again (§8: saves merge by id within each call only, and the
    /// test concatenates every call). Nothing is kept here: the chunks are
    /// written as for any store.
    fn keep_call(&self, call: &BatchCall) -> bool {
        if call.kind == BatchKind::BatchSave {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            for records in seen.values_mut() {
                records.saved_index.clear();
            }
        }
        false
    }
}

/// The result of a dry run.
#[derive(Debug, Serialize)]
pub struct DryRunResult {
    pub script: String,
    pub kind: ScriptKind,
    pub connection_id: String,
    pub provider_config_key: String,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ScriptFailure>,
    /// The error as one line (`used up its CPU budget: out of fuel after N units`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub models: BTreeMap<String, ModelResult>,
    pub logs: Vec<LogEntry>,
    /// Log lines past the environment's budget, counted and not kept.
    #[serde(skip_serializing_if = "is_zero")]
    pub logs_dropped: u64,
    pub duration_ms: u128,
    pub fuel_consumed: u64,
    /// The most linear memory the script held, all its memories together.
    pub memory_bytes: u64,
    /// The limits the run had, to read the figures above against.
    pub limits: RunLimits,
    /// Where `--save-responses` wrote the mocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_mocks: Option<PathBuf>,
    /// Where `--save` wrote the recording.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_fixture: Option<PathBuf>,
    /// The test file `--save` wrote to replay it (none when one did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_test: Option<PathBuf>,
    /// `--save` or `--save-responses` was asked for and the run failed:
    /// nothing was written.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub save_skipped: bool,
}

/// The limits of a dry run (the environment's in `sluice.yaml`).
#[derive(Debug, Serialize)]
pub struct RunLimits {
    /// `None`: CPU is not metered.
    pub fuel: Option<u64>,
    pub memory_bytes: u64,
    pub timeout_ms: u128,
}

#[derive(Debug, Serialize)]
pub struct ModelResult {
    pub changes: Changes,
    #[serde(flatten)]
    pub records: ModelRecords,
}

/// The script a dry run runs, and what nango.yaml says of it.
struct Target {
    script: Arc<Script>,
    name: String,
    integration: Option<String>,
    /// Declared sync outputs (`None`: any model).
    models: Option<Vec<String>>,
    track_deletes: bool,
    validation: Option<ScriptValidation>,
    /// The project's scripts, so `triggerAction` finds its other actions.
    catalog: Option<Arc<Catalog>>,
}

/// A script name several integrations declare, said before anything is
/// compiled (the compile would have built them all first). What cannot be
/// read here is left for the compile to report.
fn refuse_ambiguous(dir: &Path, script: &str) -> Result<(), DryRunError> {
    let mut integrations: Vec<String> = if dir.join("nango.yaml").exists() {
        match sluice_nango_yaml::load(dir) {
            Ok(loaded) => loaded
                .config
                .integrations
                .iter()
                .filter(|i| i.scripts().any(|(name, _)| name == script))
                .map(|i| i.provider_config_key.clone())
                .collect(),
            Err(_) => return Ok(()),
        }
    } else {
        match crate::zero::entries(dir) {
            Ok(entries) => entries
                .into_iter()
                .filter(|e| e.name == script)
                .map(|e| e.integration)
                .collect(),
            Err(_) => return Ok(()),
        }
    };
    integrations.sort();
    integrations.dedup();
    if integrations.len() > 1 {
        return Err(ProjectError::UnknownScript {
            name: script.to_string(),
            reason: format!(
                "several integrations declare it ({}): pass --integration-id",
                integrations.join(", ")
            ),
        }
        .into());
    }
    Ok(())
}

/// A script of the nango-integrations folder (compiled as needed), or a
/// Rust crate's binary, or a `.wasm` path.
fn resolve_target(
    opts: &DryRunOptions,
    runtime: &Runtime,
    progress: &mut dyn Write,
) -> Result<Target, DryRunError> {
    let dir = &opts.build.dir;
    let is_path = opts.script.ends_with(".wasm");
    if !is_path && !dir.is_dir() {
        return Err(crate::compile::CompileError::NotAProject(format!(
            "{} does not exist or is not a folder",
            dir.display()
        ))
        .into());
    }
    if !is_path && (dir.join("nango.yaml").exists() || crate::zero::is_zero_yaml(dir)) {
        if opts.build.integration.is_none() {
            refuse_ambiguous(dir, &opts.script)?;
        }
        let project = compile::compile(&opts.build, runtime, progress)?;
        // A sync and an action may share a name: an input means the action.
        let prefer = opts.input.as_ref().map(|_| ScriptKind::Action);
        let found =
            project.script_preferring(&opts.script, opts.build.integration.as_deref(), prefer)?;
        let catalog = Arc::new(project.catalog());
        let run = catalog.sync_run(&found.integration, &found.name, "base");
        return Ok(Target {
            script: found.script.clone(),
            name: found.name.clone(),
            integration: Some(found.integration.clone()),
            models: run.models,
            track_deletes: run.track_deletes,
            validation: Some(catalog.validation(&found.integration, &found.name, opts.validation)),
            catalog: Some(catalog),
        });
    }
    let component = project::resolve_script(dir, &opts.script)?;
    let name = component
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| opts.script.clone());
    Ok(Target {
        script: Arc::new(runtime.load_file(&component)?),
        name,
        integration: None,
        models: None,
        track_deletes: false,
        validation: None,
        catalog: None,
    })
}

/// A server chosen because there is no connections file: it must be a
/// sluice server that takes the key as environment `expected`'s (a key of
/// another environment, or another server, reads nothing); said on
/// `progress` when it is.
async fn confirm_server(
    opts: &DryRunOptions,
    server: &ServerSource,
    expected: &str,
    progress: &mut dyn Write,
) -> Result<(), DryRunError> {
    let local = opts.build.dir.join("connections.yaml");
    let key_var = format!("NANGO_SECRET_KEY_{}", expected.to_uppercase());
    let host = &server.host;
    match crate::deploy::environment_of(host, &server.secret_key).await {
        Ok(s) if s.name == expected => {
            let _ = writeln!(
                progress,
                "note: no {}: the connection and the environment's variables are read from the server at {host}, environment `{expected}` ({key_var}); --from-server --host URL for another server, --connections FILE for a local file",
                local.display()
            );
            Ok(())
        }
        Ok(s) => Err(DryRunError::ImplicitServer(format!(
            "the secret key {key_var} is environment `{}`'s, not `{expected}`'s: nothing was read (and there is no {})",
            s.name,
            local.display()
        ))),
        Err(e) => Err(DryRunError::ImplicitServer(format!(
            "no {}: the dry run asked the server at {host} for the connection ({key_var} is set), and it did not answer as a sluice server does ({}); give --connections FILE for a local file, or run `sluice serve` there",
            local.display(),
            e.to_string().replace("refused the deploy", "refused")
        ))),
    }
}

/// Runs the dry run; build progress goes to `progress`.
pub async fn dry_run(
    opts: &DryRunOptions,
    progress: &mut dyn Write,
) -> Result<DryRunResult, DryRunError> {
    if opts.save_fixture.is_some() && !crate::zero::is_zero_yaml(&opts.build.dir) {
        return Err(DryRunError::SaveNotZeroYaml {
            dir: opts.build.dir.display().to_string(),
        });
    }
    let runtime = Runtime::new(opts.build.runtime_config(8))?;
    let target = resolve_target(opts, &runtime, progress)?;
    let script = target.script.clone();
    let script_name = target.name.clone();

    let integration = opts
        .build
        .integration
        .as_deref()
        .or(target.integration.as_deref());
    if let (Some(server), Some(expected)) = (&opts.server, &opts.implicit_server) {
        confirm_server(opts, server, expected, progress).await?;
    }
    // The script's own connection, and the others of connections.yaml,
    // which it may name (`getConnection`, `proxy({connectionId})`,
    // `triggerAction`) as it may any of its environment's on a server.
    let (mut connection, others): (Connection, Vec<Connection>) = match &opts.server {
        Some(server) => {
            let pck = integration.ok_or(DryRunError::NoIntegration)?;
            // The others are read from the server when named.
            (
                server.connection(pck, &opts.connection_id).await?,
                Vec::new(),
            )
        }
        None => {
            let connections_path = opts
                .connections_file
                .clone()
                .unwrap_or_else(|| opts.build.dir.join("connections.yaml"));
            if opts.connections_file.is_none() && !connections_path.exists() {
                return Err(DryRunError::NoConnections {
                    path: connections_path.display().to_string(),
                    environment: opts.environment.clone(),
                });
            }
            let connections = project::load_connections(&connections_path)?;
            let own = project::pick_connection(
                &connections,
                &opts.connection_id,
                integration,
                &connections_path,
            )?;
            let others = connections
                .into_iter()
                .filter(|c| {
                    (&c.provider_config_key, &c.connection_id)
                        != (&own.provider_config_key, &own.connection_id)
                })
                .collect();
            (own, others)
        }
    };
    if let Some(m) = &opts.metadata {
        connection.metadata = m.clone();
    }
    let providers =
        crate::providers::catalog(&opts.build.dir, opts.providers_file.as_deref(), progress)?;
    if providers.get(&connection.provider).is_none() {
        return Err(DryRunError::UnknownProvider {
            provider: connection.provider.clone(),
        });
    }
    let mut environment = project::load_environment(&opts.build.dir, &opts.environment)?;
    // Refused here, as the server refuses such a body, rather than failing
    // inside the script for memory.
    if let Some(input) = &opts.input
        && input.len() > environment.limits.max_payload_bytes
    {
        return Err(DryRunError::InputTooLarge {
            size: input.len(),
            max: environment.limits.max_payload_bytes,
        });
    }
    if let Some(server) = &opts.server {
        environment.variables = server.environment_variables().await?;
    }
    let limits = {
        let l = &environment.limits;
        let timeout = match script.kind() {
            ScriptKind::Sync => l.timeouts.sync,
            ScriptKind::Action => l.timeouts.action,
            ScriptKind::OnEvent => l.timeouts.on_event,
        };
        RunLimits {
            fuel: l.fuel,
            memory_bytes: l.memory_bytes as u64,
            timeout_ms: timeout.as_millis(),
        }
    };
    let environment = Arc::new(environment);

    let mock = match &opts.mock_upstream {
        Some(path) => Some(
            MockServer::start(Fixture::from_file(path)?.handler())
                .await
                .map_err(DryRunError::Mock)?,
        ),
        None => None,
    };
    let saved_connection = serde_json::json!({
        "metadata": connection.metadata,
        "connection_config": connection.connection_config,
    });
    let records = Arc::new(RecordingStore::default());
    let conn_ref = ConnectionRef {
        provider_config_key: connection.provider_config_key.clone(),
        connection_id: connection.connection_id.clone(),
    };
    let connections: Arc<dyn ConnectionStore> = match &opts.server {
        Some(server) => Arc::new(ServerConnections::new(server.clone(), connection)),
        None => Arc::new(MemoryConnections::new(
            std::iter::once(connection).chain(others),
        )),
    };
    let mut services = Services::new(
        environment,
        Arc::new(providers),
        connections,
        records.clone(),
    );
    let mut network = Network::new(sluice_runtime::proxy::default_client());
    network.redirect = mock.as_ref().and_then(|m| url::Url::parse(&m.url()).ok());
    let recorder =
        (opts.save_responses.is_some() || opts.save_fixture.is_some()).then(Recorder::default);
    if let Some(catalog) = &target.catalog {
        services.scripts = catalog.clone();
    }
    services.upstream = match &recorder {
        Some(r) => Upstream::Recording(network, r.clone()),
        None => Upstream::Network(network),
    };

    let call = match script.kind() {
        ScriptKind::Sync => Call::Sync,
        ScriptKind::Action => Call::Action {
            input: opts.input.clone(),
        },
        ScriptKind::OnEvent => Call::OnEvent,
    };
    let mut exec = Execution::new(script_name.clone(), conn_ref.clone(), call);
    exec.validation = target.validation.clone();
    // As the original's CLI dry run: a record given twice keeps its last.
    exec.duplicates_keep_last = true;
    exec.zero_yaml = target
        .catalog
        .as_ref()
        .is_some_and(|c| c.is_zero_yaml(&conn_ref.provider_config_key));
    exec.sync = SyncRun {
        last_sync_date: opts.last_sync_date,
        variant: opts.variant.clone().unwrap_or_else(|| "base".into()),
        models: target.models.clone(),
        track_deletes: target.track_deletes,
        ..SyncRun::default()
    };
    let variant = exec.sync.variant.clone();
    if let (Some(checkpoint), ScriptKind::Sync) = (&opts.checkpoint, script.kind()) {
        let key = exec.sync.model_full_name(&script_name);
        records
            .set_checkpoint(&conn_ref, &key, Some(checkpoint.clone()))
            .await
            .map_err(|e| DryRunError::Checkpoint(e.to_string()))?;
    }
    let report = runtime.execute(&script, exec, Arc::new(services)).await;
    let recorded = recorder.map(|r| r.take()).unwrap_or_default();
    let run = SavedRun {
        kind: script.kind(),
        input: opts.input.as_deref(),
        output: report.outcome.as_ref().ok().cloned().flatten(),
        models: target.models.clone().unwrap_or_default(),
        records: records.models(),
        calls: &recorded,
        connection: &saved_connection,
    };
    let failed_save = |path: &Path| {
        let path = path.display().to_string();
        move |source| DryRunError::SaveResponses { path, source }
    };
    // A failed run is not saved: its recording (no records, the calls up
    // to the failure) would replace a good one with a test that fails.
    let save = report.outcome.is_ok();
    let save_skipped = !save && (opts.save_fixture.is_some() || opts.save_responses.is_some());
    let saved_fixture = match &opts.save_fixture {
        Some(root) if save => {
            let path = inside(
                root,
                &Path::new(&conn_ref.provider_config_key)
                    .join("tests")
                    .join(format!("{script_name}.test.json")),
            )
            .map_err(failed_save(root))?;
            write_fixture(root, &path, &run).map_err(failed_save(&path))?;
            Some(path)
        }
        _ => None,
    };
    // A recording is run by a test file naming it: one of the generated
    // shape is written when none does (as the original's `nango
    // generate:tests` would), so `sluice test` replays it.
    let saved_test = match (&opts.save_fixture, &saved_fixture) {
        (Some(root), Some(_)) => {
            let models = target.models.clone().unwrap_or_default();
            let test = generated_test(
                root,
                &conn_ref.provider_config_key,
                &script_name,
                script.kind(),
                &models,
            );
            match test {
                Some((path, text)) => {
                    write_text(root, &path, &text).map_err(failed_save(&path))?;
                    Some(path)
                }
                None => None,
            }
        }
        _ => None,
    };
    let saved_mocks = match &opts.save_responses {
        Some(root) if save => {
            let dir = inside(
                root,
                &Path::new(&conn_ref.provider_config_key).join("mocks"),
            )
            .map_err(failed_save(root))?;
            let mocks = Mocks {
                dir: &dir,
                script: &script_name,
                variant: &variant,
            };
            mocks.write(&run).map_err(failed_save(&dir))?;
            Some(dir)
        }
        _ => None,
    };

    let mut seen = records.models();
    let models = report
        .changes
        .iter()
        .map(|(model, changes)| {
            (
                model.clone(),
                ModelResult {
                    changes: *changes,
                    records: seen.remove(model).unwrap_or_default(),
                },
            )
        })
        .collect();
    // A failure as the terminal (or a CI log) shows it: redacted, as the
    // server's logs keep it.
    let (output, error, error_message) = match (&report.outcome, report.logged_error()) {
        (Ok(output), _) => (output.clone(), None, None),
        (Err(_), Some(e)) => (None, Some(e.to_failure()), Some(e.to_string())),
        (Err(e), None) => (None, Some(e.to_failure()), Some(e.to_string())),
    };
    Ok(DryRunResult {
        script: script_name,
        kind: script.kind(),
        connection_id: conn_ref.connection_id,
        provider_config_key: conn_ref.provider_config_key,
        success: report.outcome.is_ok(),
        output,
        error,
        error_message,
        models,
        logs: report.logs,
        logs_dropped: report.logs_dropped,
        duration_ms: report.duration.as_millis(),
        fuel_consumed: report.fuel_consumed,
        memory_bytes: report.memory_bytes,
        limits,
        saved_mocks,
        saved_fixture,
        saved_test,
        save_skipped,
    })
}

/// The test file of the generated shape that replays `<script>.test.json`
/// of `integration`, with where to write it; `None` when a test file there
/// already runs that recording, when the script is not in the folder the
/// generated test imports from (`../syncs/`, `../actions/`), or for an
/// on-event script (the original generates none).
fn generated_test(
    root: &Path,
    integration: &str,
    script: &str,
    kind: ScriptKind,
    models: &[String],
) -> Option<(PathBuf, String)> {
    // A dry run knows a sync's models; an action's test names its output
    // model as the compile names an anonymous one.
    let models = if kind == ScriptKind::Sync {
        models
    } else {
        &[]
    };
    let (path, text) = test_file(root, integration, script, kind, models)?;
    let runs_it = crate::zerotest::discover(root, Some(integration))
        .iter()
        .any(|f| f.base == script || f.name == script);
    if runs_it || path.exists() {
        return None;
    }
    Some((path, text))
}

/// The test file of the generated shape for a script of `integration`
/// (`<integration>/tests/<integration>-<script>.test.ts`) and its text;
/// `None` for an on-event script or one outside `syncs/` and `actions/`.
fn test_file(
    root: &Path,
    integration: &str,
    script: &str,
    kind: ScriptKind,
    models: &[String],
) -> Option<(PathBuf, String)> {
    let folder = match kind {
        ScriptKind::Sync => "syncs",
        ScriptKind::Action => "actions",
        ScriptKind::OnEvent => return None,
    };
    let dir = root.join(integration);
    if !dir.join(folder).join(format!("{script}.ts")).is_file() {
        return None;
    }
    let path = dir
        .join("tests")
        .join(format!("{integration}-{script}.test.ts"));
    let text = match kind {
        ScriptKind::Sync => crate::migrate::sync_test(integration, script, &models.join(",")),
        _ => {
            // Named as the compile names it (`zero.mjs`: the integration's
            // other characters as `_`, the script's dropped).
            let key: String = integration
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let name: String = script.chars().filter(char::is_ascii_alphanumeric).collect();
            let model = models
                .first()
                .cloned()
                .unwrap_or_else(|| format!("ActionOutput_{key}_{name}"));
            crate::migrate::action_test(integration, script, &model)
        }
    };
    Some((path, text))
}

/// What `generate:tests` is asked for: one integration, sync or action.
#[derive(Debug, Default)]
pub struct TestFilter {
    pub integration: Option<String>,
    pub sync: Option<String>,
    pub action: Option<String>,
}

/// Why `generate:tests` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum GenerateTestsError {
    /// The integration, sync or action asked for is not in the project.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Write(#[from] std::io::Error),
}

/// What `generate:tests` did.
#[derive(Debug, Default)]
pub struct GeneratedTests {
    pub written: Vec<PathBuf>,
    /// Scripts with a recording whose test could not be generated, and why.
    pub skipped: Vec<String>,
}

/// `sluice generate:tests`, as the original's: for each sync and action of
/// a compiled zero-yaml project that has a recording
/// (`<integration>/tests/<script>.test.json`, or
/// `<integration>-<script>.test.json`, or a legacy `mocks/<script>`), the
/// test file of the generated shape that replays it, written again.
pub fn generate_tests(
    root: &Path,
    definitions: &[Value],
    filter: &TestFilter,
) -> Result<GeneratedTests, GenerateTestsError> {
    // What the filter names exists, as the original checks (it said
    // nothing and wrote nothing).
    let named = |list: &str, name: &str| {
        definitions.iter().any(|d| {
            filter
                .integration
                .as_deref()
                .is_none_or(|i| d["providerConfigKey"] == i)
                && d[list]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|s| s["name"] == name))
        })
    };
    if let Some(i) = &filter.integration
        && !definitions
            .iter()
            .any(|d| d["providerConfigKey"] == i.as_str())
    {
        return Err(GenerateTestsError::NotFound(format!(
            "Integration \"{i}\" not found"
        )));
    }
    if let Some(s) = &filter.sync
        && !named("syncs", s)
    {
        return Err(GenerateTestsError::NotFound(format!(
            "Sync \"{s}\" not found"
        )));
    }
    if let Some(a) = &filter.action
        && !named("actions", a)
    {
        return Err(GenerateTestsError::NotFound(format!(
            "Action \"{a}\" not found"
        )));
    }
    let mut done = GeneratedTests::default();
    for def in definitions {
        let Some(integration) = def["providerConfigKey"].as_str() else {
            continue;
        };
        if filter
            .integration
            .as_deref()
            .is_some_and(|i| i != integration)
        {
            continue;
        }
        let scripts = [("syncs", ScriptKind::Sync), ("actions", ScriptKind::Action)];
        for (list, kind) in scripts {
            for script in def[list].as_array().into_iter().flatten() {
                let Some(name) = script["name"].as_str() else {
                    continue;
                };
                let wanted = match (&filter.sync, &filter.action) {
                    (None, None) => true,
                    (Some(s), _) if kind == ScriptKind::Sync => s == name,
                    (_, Some(a)) if kind == ScriptKind::Action => a == name,
                    _ => false,
                };
                if !wanted {
                    continue;
                }
                let dir = root.join(integration);
                let recorded = [
                    dir.join("tests").join(format!("{name}.test.json")),
                    dir.join("tests")
                        .join(format!("{integration}-{name}.test.json")),
                    dir.join("mocks").join(name),
                ]
                .iter()
                .any(|p| p.exists());
                if !recorded {
                    continue;
                }
                let models: Vec<String> = match &script["output"] {
                    Value::Array(list) => list
                        .iter()
                        .filter_map(|m| m.as_str().map(str::to_string))
                        .collect(),
                    Value::String(m) => vec![m.clone()],
                    _ => Vec::new(),
                };
                match test_file(root, integration, name, kind, &models) {
                    Some((path, text)) => {
                        write_text(root, &path, &text)?;
                        done.written.push(path);
                    }
                    None => done.skipped.push(format!(
                        "{integration}/{name}: its file is not {integration}/{list}/{name}.ts, which the generated test imports"
                    )),
                }
            }
        }
    }
    Ok(done)
}

/// Writes `text` to `path`, a file of the project `root`, whole
/// ([`compile::replace_file`]): a link, or anything but a regular file,
/// there or among the folders between `root` and it (a `tests -> /elsewhere`
/// folder link) is refused, naming it (a cloned project's recording could
/// be a link to any file).
fn write_text(root: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    let found = match path.strip_prefix(root) {
        Ok(rel) => compile::not_plain(root, rel),
        // Not under `root` (not written so): the file itself.
        Err(_) => std::fs::symlink_metadata(path)
            .ok()
            .filter(|meta| !meta.is_file())
            .map(|meta| {
                (
                    path.to_path_buf(),
                    sluice_nango_yaml::file_kind(&meta.file_type()),
                )
            }),
    };
    if let Some((at, what)) = found {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            compile::not_plain_message(&at, what),
        ));
    }
    compile::replace_file(path, text.as_bytes())
}

/// Prints a dry run the way the original CLI does.
pub fn render(result: &DryRunResult, out: &mut dyn Write) -> std::io::Result<()> {
    for log in &result.logs {
        let level = format!("{:?}", log.level).to_lowercase();
        match &log.meta {
            Some(meta) => writeln!(out, "[{level}] {} {meta}", log.message)?,
            None => writeln!(out, "[{level}] {}", log.message)?,
        }
    }
    if result.logs_dropped > 0 {
        writeln!(
            out,
            "[warn] {} more log lines were left out: past the environment's log limits (max_log_entries, max_log_bytes)",
            result.logs_dropped
        )?;
    }
    match result.kind {
        ScriptKind::Sync => {
            let shown: BTreeMap<&String, Value> = result
                .models
                .iter()
                .map(|(m, r)| (m, serde_json::to_value(r).unwrap_or(Value::Null)))
                .collect();
            // A failed run has no results; what it saved before failing
            // is said as such (it read as a successful empty run).
            if result.success {
                writeln!(
                    out,
                    "The dry run would produce the following results: {}",
                    serde_json::to_string_pretty(&shown).unwrap_or_default()
                )?;
            } else if !shown.is_empty() {
                writeln!(
                    out,
                    "Before it failed, the run saved: {}",
                    serde_json::to_string_pretty(&shown).unwrap_or_default()
                )?;
            }
        }
        ScriptKind::Action => {
            if result.success {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(result.output.as_ref().unwrap_or(&Value::Null))
                        .unwrap_or_default()
                )?;
            }
        }
        ScriptKind::OnEvent => {}
    }
    if let (Some(message), Some(error)) = (&result.error_message, &result.error) {
        writeln!(out, "error: {message}")?;
        if !error.payload.is_null() {
            writeln!(
                out,
                "payload: {}",
                serde_json::to_string_pretty(&error.payload).unwrap_or_default()
            )?;
        }
    } else {
        writeln!(
            out,
            "Done in {}ms ({} fuel units, {} of memory).",
            result.duration_ms,
            result.fuel_consumed,
            mib(result.memory_bytes)
        )?;
    }
    if let Some(dir) = &result.saved_mocks {
        writeln!(out, "Saved the responses as mocks in {}", dir.display())?;
    }
    if let Some(path) = &result.saved_fixture {
        writeln!(
            out,
            "Saved the run as a test recording in {}",
            path.display()
        )?;
    }
    if let Some(path) = &result.saved_test {
        writeln!(
            out,
            "Wrote {}, the test that replays it (`sluice test`)",
            path.display()
        )?;
    }
    if result.save_skipped {
        writeln!(
            out,
            "Nothing was saved: the run failed (a recording of it would replace the one there)"
        )?;
    }
    Ok(())
}

/// Headers a recording's request leaves out (the zero-yaml harness's list).
const UNRECORDED_HEADERS: [&str; 17] = [
    "authorization",
    "user-agent",
    "nango-proxy-user-agent",
    "accept-encoding",
    "retries",
    "host",
    "connection-id",
    "provider-config-key",
    "nango-is-sync",
    "nango-is-script",
    "nango-is-dry-run",
    "nango-activity-log-id",
    "content-length",
    "accept",
    "base-url-override",
    "retry-on",
    "forward-headers-on-redirect",
];

/// The request's path and query pairs by the zero-yaml harness's rules
/// (§7.5.2–3): the endpoint parsed as a WHATWG URL (an absolute http(s)
/// one as it is, else with a `/` put in front if missing, against a dummy
/// origin), a string `params` appended as a query (a leading `?` dropped,
/// as `URLSearchParams` does), an object's keys set (replacing the
/// endpoint's of that name; arrays joined with `,`, null skipped as the
/// request skips it); repeated keys kept, in order.
fn harness_query(call: &RecordedCall) -> (String, Vec<(String, String)>) {
    let raw = call.target.as_str();
    let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    let url = if lower.starts_with("http://") || lower.starts_with("https://") {
        url::Url::parse(raw)
    } else {
        let rooted = if raw.starts_with('/') {
            raw.to_string()
        } else {
            format!("/{raw}")
        };
        url::Url::parse("https://example.com/").and_then(|base| base.join(&rooted))
    };
    let (path, mut pairs): (String, Vec<(String, String)>) = match &url {
        Ok(u) => (
            u.path().to_string(),
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ),
        Err(_) => (format!("/{}", raw.trim_start_matches('/')), Vec::new()),
    };
    if let Some(text) = &call.params_text {
        let text = text.strip_prefix('?').unwrap_or(text);
        pairs.extend(
            url::form_urlencoded::parse(text.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned())),
        );
    } else {
        for pair in call.identity["params"].as_array().into_iter().flatten() {
            let (Some(k), Some(v)) = (pair[0].as_str(), pair.get(1)) else {
                continue;
            };
            let text = match v {
                Value::Null => continue,
                Value::Array(items) => items
                    .iter()
                    .map(sluice_runtime::js::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                other => sluice_runtime::js::to_string(other),
            };
            // `URLSearchParams.set`: the first of the name takes the value,
            // the others go.
            match pairs.iter().position(|(pk, _)| pk == k) {
                Some(at) => {
                    pairs[at].1 = text;
                    let mut i = at + 1;
                    while i < pairs.len() {
                        if pairs[i].0 == k {
                            pairs.remove(i);
                        } else {
                            i += 1;
                        }
                    }
                }
                None => pairs.push((k.to_string(), text)),
            }
        }
    }
    (path, pairs)
}

/// One exchange as a unified recording's `api` entry: the response, and
/// the request's params, script-set headers and body (what the harness
/// matches a replayed request on).
fn fixture_entry(call: &RecordedCall) -> (String, Value) {
    let id = &call.identity;
    let (path, pairs) = harness_query(call);
    // The recording's `params` object (the last of a repeated key, as
    // `Object.fromEntries`); the hash below is of every pair, repeated
    // keys included, which the harness matches first.
    let mut params = Map::new();
    for (k, v) in &pairs {
        params.insert(k.clone(), Value::String(v.clone()));
    }
    let mut headers = Map::new();
    let mut seen = std::collections::HashSet::new();
    for pair in id["headers"].as_array().into_iter().flatten() {
        let (Some(k), Some(v)) = (pair[0].as_str(), pair[1].as_str()) else {
            continue;
        };
        // As the harness reads a request's headers (§7.5.5): without the
        // `Nango-Proxy-` prefix, the first of a name kept.
        let k = match k.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("nango-proxy-") => &k[12..],
            _ => k,
        };
        let lower = k.to_ascii_lowercase();
        if !seen.insert(lower.clone()) {
            continue;
        }
        let lower_value = v.to_ascii_lowercase();
        if UNRECORDED_HEADERS.contains(&lower.as_str())
            || (lower == "content-type"
                && (lower_value == "application/json"
                    || lower_value.starts_with("application/x-www-form-urlencoded")))
        {
            continue;
        }
        headers.insert(k.to_string(), Value::String(v.to_string()));
    }
    let strings = |m: &Map<String, Value>| -> Vec<(String, String)> {
        m.iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect()
    };
    let data = id["data"].as_str().filter(|d| !d.is_empty());
    let hash =
        sluice_runtime::replay::unified_hash(&call.method, &path, &pairs, &strings(&headers), data);
    let mut request = Map::new();
    if !params.is_empty() {
        request.insert("params".into(), Value::Object(params));
    }
    if !headers.is_empty() {
        request.insert("headers".into(), Value::Object(headers));
    }
    if let Some(data) = data {
        let parsed = serde_json::from_str::<Value>(data).unwrap_or(Value::String(data.into()));
        request.insert("data".into(), parsed);
    }
    let file = call.file();
    let entry = json!({
        "response": file.get("response").cloned().unwrap_or(Value::Null),
        "status": call.status,
        "headers": file.get("headers").cloned().unwrap_or_else(|| json!({})),
        "hash": hash,
        "request": Value::Object(request),
    });
    (path, entry)
}

/// `dryrun --save`: the run as a zero-yaml recording (`<script>.test.json`)
/// in the original's format.
fn write_fixture(root: &Path, path: &Path, run: &SavedRun<'_>) -> std::io::Result<()> {
    let mut api: Map<String, Value> = Map::new();
    for call in run.calls {
        let (endpoint, entry) = fixture_entry(call);
        let by_endpoint = api
            .entry(call.method.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(by_endpoint) = by_endpoint else {
            continue;
        };
        match by_endpoint.get_mut(&endpoint) {
            None => {
                by_endpoint.insert(endpoint, entry);
            }
            // A repeated identical request is stored once.
            Some(existing) if existing["request"] == entry["request"] => {}
            Some(Value::Array(list)) => {
                if !list.iter().any(|e| e["request"] == entry["request"]) {
                    list.push(entry);
                }
            }
            Some(one) => {
                let first = one.take();
                *one = Value::Array(vec![first, entry]);
            }
        }
    }
    let mut nango = Map::new();
    // What the original's recorder writes: the connection's own id and
    // provider from its config, normally absent.
    nango.insert("getConnection".into(), json!({}));
    nango.insert(
        "getMetadata".into(),
        run.connection
            .get("metadata")
            .cloned()
            .unwrap_or(Value::Null),
    );
    let mut fixture = Map::new();
    match run.kind {
        ScriptKind::Sync => {
            let mut saves = Map::new();
            let mut deletes = Map::new();
            let mut models = run.models.clone();
            models.extend(
                run.records
                    .keys()
                    .filter(|m| !run.models.contains(m))
                    .cloned(),
            );
            for model in models {
                let got = run.records.get(&model).cloned().unwrap_or_default();
                saves.insert(model.clone(), Value::Array(got.saved));
                deletes.insert(model, Value::Array(got.deleted));
            }
            nango.insert("batchSave".into(), Value::Object(saves));
            nango.insert("batchDelete".into(), Value::Object(deletes));
        }
        ScriptKind::Action => {
            if let Some(input) = run
                .input
                .and_then(|i| serde_json::from_str::<Value>(i).ok())
            {
                fixture.insert("input".into(), input);
            }
            // An action that returned nothing has no output (its test cannot pass).
            if let Some(output) = &run.output {
                fixture.insert("output".into(), output.clone());
            }
        }
        ScriptKind::OnEvent => {}
    }
    fixture.insert("nango".into(), Value::Object(nango));
    fixture.insert("api".into(), Value::Object(api));
    let text =
        serde_json::to_string_pretty(&Value::Object(fixture)).map_err(std::io::Error::other)?;
    write_text(root, path, &format!("{text}\n"))
}

/// What a run leaves for `--save-responses`.
struct SavedRun<'a> {
    kind: ScriptKind,
    input: Option<&'a str>,
    output: Option<Value>,
    /// The sync's declared models (each gets its files, even if empty).
    models: Vec<String>,
    records: BTreeMap<String, ModelRecords>,
    calls: &'a [RecordedCall],
    connection: &'a Value,
}

/// An integration's `mocks/` folder in the original's layout.
struct Mocks<'a> {
    dir: &'a Path,
    script: &'a str,
    variant: &'a str,
}

impl Mocks<'_> {
    /// `<script>` or `<script>/<variant>` for a variant other than base.
    fn script_dir(&self) -> PathBuf {
        if self.variant == "base" {
            PathBuf::from(self.script)
        } else {
            Path::new(self.script).join(self.variant)
        }
    }

    /// Writes the run's files, each checked to be inside the folder before
    /// any is written.
    fn write(&self, run: &SavedRun<'_>) -> std::io::Result<()> {
        let here = self.script_dir();
        let mut files: Vec<(PathBuf, Value)> = Vec::new();
        for call in run.calls {
            files.push((call.path(&here.display().to_string()), call.file()));
        }
        files.push(("nango/getConnection.json".into(), run.connection.clone()));
        files.push((
            "nango/getMetadata.json".into(),
            run.connection["metadata"].clone(),
        ));
        match run.kind {
            ScriptKind::Sync => {
                let mut models = run.models.clone();
                models.extend(
                    run.records
                        .keys()
                        .filter(|m| !run.models.contains(m))
                        .cloned(),
                );
                for model in models {
                    // A model the script chose (one no declaration lists:
                    // a `.wasm` or a crate run on its own takes any) is a
                    // folder's name here: it must be a model name.
                    if !run.models.contains(&model) && !valid_model_name(&model) {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            format!(
                                "the script saved records of `{model}`, which is not a model name (letters, digits and `_`, at most {} characters): no mocks were written",
                                sluice_nango_yaml::models::MAX_NAME_LEN
                            ),
                        ));
                    }
                    let got = run.records.get(&model).cloned().unwrap_or_default();
                    files.push((
                        here.join(&model).join("batchSave.json"),
                        Value::Array(got.saved),
                    ));
                    files.push((
                        here.join(&model).join("batchDelete.json"),
                        Value::Array(got.deleted),
                    ));
                }
            }
            ScriptKind::Action => {
                if let Some(input) = run.input.and_then(|i| serde_json::from_str(i).ok()) {
                    files.push((here.join("input.json"), input));
                }
                files.push((
                    here.join("output.json"),
                    run.output.clone().unwrap_or(Value::Null),
                ));
            }
            ScriptKind::OnEvent => {}
        }
        let files: Vec<(PathBuf, Value)> = files
            .into_iter()
            .map(|(rel, value)| {
                let path = inside(self.dir, &rel)?;
                // Nor through a link among mocks/'s folders or files.
                if let Some((at, what)) = compile::not_plain(self.dir, &rel) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        compile::not_plain_message(&at, what),
                    ));
                }
                Ok((path, value))
            })
            .collect::<std::io::Result<_>>()?;
        for (path, value) in files {
            let text = serde_json::to_string_pretty(&value).map_err(std::io::Error::other)?;
            write_text(self.dir, &path, &format!("{text}\n"))?;
        }
        Ok(())
    }
}

/// `dir` joined with `rel`, when every part of `rel` is a plain name: no
/// `..`, no root, nothing absolute. What a script or a connection chose (a
/// model, a variant, an integration key) cannot reach outside the folder
/// a recording is saved in.
fn inside(dir: &Path, rel: &Path) -> std::io::Result<PathBuf> {
    let plain = rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if rel.as_os_str().is_empty() || !plain {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "`{}` is not a path inside {}: nothing was written",
                rel.display(),
                dir.display()
            ),
        ));
    }
    Ok(dir.join(rel))
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Bytes as MiB with one decimal (`18.4 MiB`).
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// `--diagnostics`: what the run used of each of its limits.
pub fn render_diagnostics(result: &DryRunResult, out: &mut dyn Write) -> std::io::Result<()> {
    let l = &result.limits;
    writeln!(out, "Diagnostics:")?;
    writeln!(
        out,
        "  wall time  {} ms (the timeout is {} s)",
        result.duration_ms,
        l.timeout_ms / 1000
    )?;
    match l.fuel {
        Some(fuel) => writeln!(
            out,
            "  CPU        {} fuel units of {fuel} ({:.2} %)",
            result.fuel_consumed,
            result.fuel_consumed as f64 * 100.0 / fuel.max(1) as f64
        )?,
        None => writeln!(
            out,
            "  CPU        {} fuel units (not metered)",
            result.fuel_consumed
        )?,
    }
    // The limit is per linear memory; the figure is all of them.
    writeln!(
        out,
        "  memory     {} in all (the limit is {} per memory)",
        mib(result.memory_bytes),
        mib(l.memory_bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded request is the harness's (§7.5): a repeated query key
    /// and a string `params` kept whole in the hash (it was split into
    /// characters, or collapsed to one value, and `sluice test` then found
    /// no mock for the recording it had just made); an object's keys
    /// replace the endpoint's.
    #[test]
    fn a_recorded_query_is_the_harness_identitys() {
        let call = |target: &str, params_text: Option<&str>, params: Value| RecordedCall {
            method: "get".into(),
            endpoint: target.trim_start_matches('/').into(),
            identity: json!({"method": "get", "endpoint": target, "params": params, "headers": []}),
            hash: String::new(),
            status: 200,
            headers: Vec::new(),
            body: b"{}".to_vec(),
            target: target.into(),
            params_text: params_text.map(str::to_string),
        };
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let (path, entry) = fixture_entry(&call("/search?expand=a&expand=b", None, json!([])));
        assert_eq!(path, "/search");
        assert_eq!(entry["request"]["params"], json!({"expand": "b"}));
        assert_eq!(
            entry["hash"],
            sluice_runtime::replay::unified_hash(
                "get",
                "/search",
                &pairs(&[("expand", "a"), ("expand", "b")]),
                &[],
                None
            )
        );
        let (path, entry) = fixture_entry(&call(
            "lookup",
            Some("?q=x&q=y"),
            json!([["0", "q"], ["1", "="]]),
        ));
        assert_eq!(path, "/lookup");
        assert_eq!(entry["request"]["params"], json!({"q": "y"}));
        assert_eq!(
            entry["hash"],
            sluice_runtime::replay::unified_hash(
                "get",
                "/lookup",
                &pairs(&[("q", "x"), ("q", "y")]),
                &[],
                None
            )
        );
        let (_, entry) = fixture_entry(&call(
            "/a/./b/../c?x=1&x=2&y=3",
            None,
            json!([["x", 9], ["z", [1, 2]], ["n", null]]),
        ));
        assert_eq!(
            entry["hash"],
            sluice_runtime::replay::unified_hash(
                "get",
                "/a/c",
                &pairs(&[("x", "9"), ("y", "3"), ("z", "1,2")]),
                &[],
                None
            )
        );
    }

    /// A header the script sent with the `Nango-Proxy-` prefix is recorded
    /// (and hashed) without it, as the harness reads the replayed
    /// request's: a recording `--save` wrote matches its own test.
    #[test]
    fn a_recorded_request_drops_the_nango_proxy_prefix_as_the_harness_does() {
        let call = RecordedCall {
            method: "post".into(),
            endpoint: "uni/post".into(),
            identity: json!({
                "method": "POST",
                "endpoint": "uni/post",
                "params": [],
                "headers": [["Nango-Proxy-X-Other", "o"], ["X-Custom", "v1"], ["x-other", "later"]],
                "data": "{\"a\":1}",
            }),
            hash: String::new(),
            status: 200,
            headers: Vec::new(),
            body: b"{}".to_vec(),
            target: "/uni/post".into(),
            params_text: None,
        };
        let (path, entry) = fixture_entry(&call);
        assert_eq!(path, "/uni/post");
        assert_eq!(
            entry["request"]["headers"],
            json!({"X-Other": "o", "X-Custom": "v1"})
        );
        let replayed = sluice_runtime::replay::unified_hash(
            "post",
            "/uni/post",
            &[],
            &[
                ("X-Custom".into(), "v1".into()),
                ("X-Other".into(), "o".into()),
            ],
            Some("{\"a\":1}"),
        );
        assert_eq!(entry["hash"], replayed);
    }

    /// A saved test is not written through a link anywhere between the
    /// project and it: a `tests -> ../outside` folder link was followed.
    #[cfg(unix)]
    #[test]
    fn a_saved_file_is_not_written_through_a_folder_link() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("project");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("acme")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        symlink(&outside, root.join("acme/tests")).unwrap();
        let path = root.join("acme/tests/s.test.json");
        let err = write_text(&root, &path, "{}\n").unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "refusing to write {}: it is a symbolic link, and sluice writes only regular files in real folders of the project there (remove it and run again)",
                root.join("acme/tests").display()
            )
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // The file itself a link: refused too.
        std::fs::remove_file(root.join("acme/tests")).unwrap();
        std::fs::create_dir(root.join("acme/tests")).unwrap();
        symlink(outside.join("victim"), &path).unwrap();
        let err = write_text(&root, &path, "{}\n").unwrap_err().to_string();
        assert!(err.contains("s.test.json: it is a symbolic link"), "{err}");
        std::fs::remove_file(&path).unwrap();
        write_text(&root, &path, "{}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n");
    }

    /// A model a script chose, a variant or an integration key cannot make
    /// `--save-responses` write outside the mocks folder; nothing is
    /// written when one would.
    #[test]
    fn saved_mocks_stay_in_the_mocks_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("project").join("acme").join("mocks");
        let connection = json!({"metadata": null, "connection_config": {}});
        let run = |model: &str| SavedRun {
            kind: ScriptKind::Sync,
            input: None,
            output: None,
            models: Vec::new(),
            records: BTreeMap::from([(model.to_string(), ModelRecords::default())]),
            calls: &[],
            connection: &connection,
        };
        let mocks = |variant: &str, run: &SavedRun<'_>| {
            Mocks {
                dir: &dir,
                script: "s",
                variant,
            }
            .write(run)
        };
        // (An absolute name under the temporary folder: where it would
        // have been written is checked empty below.)
        let absolute = tmp.path().join("escaped").display().to_string();
        for model in ["../../../../escaped", &absolute, "a/b", "..", ""] {
            let err = mocks("base", &run(model)).unwrap_err().to_string();
            assert!(
                err.contains("which is not a model name") && err.contains("no mocks were written"),
                "{model}: {err}"
            );
        }
        for variant in ["../../../escaped", &absolute] {
            let err = mocks(variant, &run("Issue")).unwrap_err().to_string();
            assert!(err.contains("is not a path inside"), "{variant}: {err}");
        }
        let written: Vec<_> = walk(tmp.path());
        assert!(written.is_empty(), "{written:?}");
        // A model name and a plain variant are written where they belong.
        mocks("v2", &run("Issue")).unwrap();
        assert!(dir.join("s/v2/Issue/batchSave.json").is_file());
        assert!(dir.join("nango/getConnection.json").is_file());
        // A recording that is a link (a cloned project's) is not written
        // through, nor one under a folder that is.
        #[cfg(unix)]
        {
            let victim = tmp.path().join("victim.txt");
            std::fs::write(&victim, "precious").unwrap();
            let at = dir.join("nango/getMetadata.json");
            std::fs::remove_file(&at).unwrap();
            std::os::unix::fs::symlink(&victim, &at).unwrap();
            let err = mocks("v2", &run("Issue")).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "refusing to write {}: it is a symbolic link",
                    at.display()
                )),
                "{err}"
            );
            std::fs::remove_file(&at).unwrap();
            std::fs::remove_dir_all(dir.join("s")).unwrap();
            std::os::unix::fs::symlink(tmp.path(), dir.join("s")).unwrap();
            let err = mocks("v2", &run("Issue")).unwrap_err().to_string();
            assert!(err.contains("it is a symbolic link"), "{err}");
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
            assert!(!tmp.path().join("v2").exists());
        }
        // An integration key is one folder's name too.
        assert!(inside(tmp.path(), Path::new("../x/mocks")).is_err());
        assert!(inside(tmp.path(), Path::new("/x")).is_err());
        assert!(inside(tmp.path(), Path::new("acme/mocks")).is_ok());
    }

    /// Every file under `dir`.
    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
