//! The command line: parses arguments, reads files, prints results. The only
//! place that turns errors into exit codes.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Parser, Subcommand};
use serde_json::Value;

use sluice_runtime::Runtime;

use sluice_project::compile::{self, CompileOptions};
use sluice_project::dryrun::{self, DryRunOptions};
use sluice_project::init;
use sluice_project::remote::ServerSource;
use sluice_project::test::{self, TestOptions};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Run Nango-style integration scripts as sandboxed WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Accepted on every command, as the original's global flag: sluice
    /// never asks for a confirmation (a deploy keeps every version for a
    /// rollback).
    #[arg(long = "auto-confirm", global = true)]
    auto_confirm: bool,
    /// Say what the command decides and reuses as it goes (the project's
    /// format, folders, the SDK, cache hits, the server), on stderr.
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted on every command, as the original's global flags, so
    /// command lines written for it (CI scripts) run unchanged: sluice
    /// never prompts, never updates or installs a project's dependencies
    /// by itself, and sends no telemetry.
    #[arg(long = "no-interactive", global = true, hide = true)]
    no_interactive: bool,
    #[arg(long = "no-dependency-update", global = true, hide = true)]
    no_dependency_update: bool,
    #[arg(long = "no-telemetry", global = true, hide = true)]
    no_telemetry: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a starter nango-integrations folder.
    Init(InitArgs),
    /// Write models.ts and the models' JSON schemas, and a file for every declared script that has none.
    Generate(GenerateArgs),
    /// Add a zero-yaml script: <integration>/<syncs|actions|on-events>/<name>.ts
    /// and its import in index.ts.
    Create(CreateArgs),
    /// Write the test file of the generated shape for each zero-yaml sync
    /// and action with a recording (<integration>/tests/<name>.test.json).
    #[command(name = "generate:tests")]
    GenerateTests(GenerateTestsArgs),
    /// Check the project (nango.yaml, or a zero-yaml index.ts), generate its
    /// models and build every script.
    Compile(CompileArgs),
    /// Compile the project, then again each time one of its files
    /// changes, saying what failed (the original's `dev`; Ctrl-C stops).
    Dev(CompileArgs),
    /// Run a script once against a local connection; nothing is persisted.
    Dryrun(DryrunArgs),
    /// Replay each script's recorded mocks and compare its results.
    Test(TestArgs),
    /// Run the platform: the API, deploys, connections, syncs and actions.
    Serve(ServeArgs),
    /// Compile the folder and deploy it to a server's environment.
    Deploy(DeployArgs),
    /// Print sluice's version and the script contract (WIT package) it
    /// runs.
    Version,
    /// Convert a nango.yaml folder to the zero-yaml format (createSync,
    /// createAction, zod models, index.ts), then compile it.
    #[command(name = "migrate-to-zero-yaml")]
    MigrateToZeroYaml(MigrateArgs),
    /// Copy a whole store, its server stopped, into a new empty one: an
    /// embedded store onto PostgreSQL (or back, or between sled and redb).
    #[command(name = "copy-store")]
    CopyStore(CopyStoreArgs),
}

#[derive(Debug, clap::Args)]
struct CopyStoreArgs {
    /// The store to copy (no server may have it open): `sled:<data
    /// directory>`, `redb:<data directory>`, or a PostgreSQL connection
    /// string (`postgres://user:password@host:5432/dbname`).
    #[arg(long)]
    from: String,
    /// The new store, empty, in the same forms. Unless SLUICE_MASTER_KEY
    /// is set, a new data directory gets the source data directory's
    /// master key file, when it has one.
    #[arg(long)]
    to: String,
}

#[derive(Debug, clap::Args)]
struct MigrateArgs {
    #[command(flatten)]
    build: BuildArgs,
}

#[derive(Debug, clap::Args)]
struct DeployArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// The environment (its key is NANGO_SECRET_KEY_<ENV>), as the
    /// original's `nango deploy <env>`.
    #[arg(value_name = "ENV", conflicts_with = "env")]
    environment: Option<String>,
    /// The environment, as a flag (default: dev).
    #[arg(short = 'e', long = "env", alias = "environment")]
    env: Option<String>,
    /// The server (default: NANGO_HOSTPORT, else http://127.0.0.1:3003).
    #[arg(long)]
    host: Option<String>,
    /// The environment's secret key (default: NANGO_SECRET_KEY_<ENV>).
    #[arg(long)]
    secret_key: Option<String>,
    /// Accepted for the original's CI lines: sluice never asks before a
    /// deploy that removes syncs or models (the previous version stays for
    /// a rollback).
    #[arg(long = "allow-destructive")]
    allow_destructive: bool,
    /// Tag every deployed sync and action with this version (instead of
    /// each one's own), as the original's `--version`.
    #[arg(short = 'v', long = "version")]
    version: Option<String>,
    /// Deploy only the sync of this name (of every integration with one,
    /// or of `--integration`'s); the environment's other scripts stay as
    /// deployed.
    #[arg(short = 's', long = "sync", conflicts_with = "action")]
    sync: Option<String>,
    /// Deploy only the action of this name (as `--sync`).
    #[arg(short = 'a', long = "action")]
    action: Option<String>,
    /// Deploy only this integration's scripts: its syncs, actions and
    /// event scripts replace the deployed ones (those it no longer has
    /// are removed); other integrations' stay as deployed.
    #[arg(short = 'i', long = "integration")]
    integration: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The data directory (database, master key file, compiled
    /// components), created readable by its owner only. The master key that
    /// seals credentials is SLUICE_MASTER_KEY (the base64 of 32 bytes) when
    /// set, else <data>/master.key (created on first start, mode 0600).
    #[arg(long = "data", env = "SLUICE_DATA", default_value = "sluice-data")]
    data: PathBuf,
    /// The database: `sled` (in <data>/db/), `redb` (the file
    /// <data>/store.redb) or `postgres` (a PostgreSQL server, at
    /// --database-url). A data directory holds one embedded database;
    /// `auto` opens the one it holds, PostgreSQL when --database-url is
    /// given, and sled for a new data directory.
    #[arg(long, env = "SLUICE_STORE", default_value = "auto", value_parser = ["auto", "sled", "redb", "postgres"])]
    store: String,
    /// The PostgreSQL connection string for `--store postgres`
    /// (`postgres://user:password@host:5432/dbname`; the tables go in the
    /// first schema of its search_path). One server per store: a second
    /// one on the same schema is refused, unless it is a --standby.
    #[arg(long, env = "SLUICE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Start as a standby of the server that holds the PostgreSQL store:
    /// answer 503 (`standby`), check that this server's master key opens
    /// the store and compile its deployments, and take over as soon as
    /// that server's database session ends (it stopped or died; one cut
    /// off, once the database drops it, in about a minute). A server whose
    /// store another one took over stops (exit status 3).
    #[arg(long)]
    standby: bool,
    /// Where to listen: an address and port, or a host name and port
    /// (`localhost:3003`).
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:3003", value_parser = parse_listen)]
    listen: std::net::SocketAddr,
    /// Where to answer `GET /metrics` (Prometheus's text format), on a
    /// listener of its own apart from the API: keep it on a private
    /// address. Off unless given.
    #[arg(long, env = "SLUICE_METRICS_LISTEN", value_parser = parse_listen)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Providers added to the catalogue (Nango's providers.yaml format),
    /// over the built-in one and an installed @nangohq/providers.
    #[arg(long, env = "SLUICE_PROVIDERS")]
    providers: Option<PathBuf>,
    /// The URL clients reach this server at (for webhook URLs).
    #[arg(long, env = "SLUICE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Most memory all running scripts may hold at once (one environment
    /// three quarters of it), e.g. 8G, at least 64M; default: half the
    /// memory of the machine, or of the container (its cgroup's limit).
    #[arg(long = "script-memory", env = "SLUICE_SCRIPT_MEMORY", value_parser = parse_size)]
    script_memory: Option<u64>,
    /// Limits per environment, in sluice.yaml's format
    /// (`environments: {prod: {limits: {allowed_hosts: [...], fuel: ...}}}`):
    /// CPU, memory, timeouts and the hosts scripts may call. Environments
    /// it does not name keep the defaults. Its `variables` are not applied
    /// (PUT /environment-variables sets a server's).
    #[arg(long, env = "SLUICE_LIMITS", value_name = "FILE")]
    limits: Option<PathBuf>,
    /// Give this environment a new secret key at this start (repeatable):
    /// NANGO_SECRET_KEY_<ENV> if set, else a new random one, printed once;
    /// the old key stops working, and the environment's webhook signing
    /// secret is replaced too. For a lost or leaked key.
    #[arg(long = "new-key", value_name = "ENV", value_parser = ["dev", "prod"])]
    new_keys: Vec<String>,
    /// Also deploy the bundled example against a mock of its API, create
    /// its connection, run its sync once and print what to try next.
    #[arg(long)]
    demo: bool,
    /// Serve this fixture (the format of `dryrun --mock-upstream`) as every
    /// provider's API: each request a script or `/proxy` makes goes to it
    /// instead, for trying a project on the server without the network.
    #[arg(long = "mock-upstream", value_name = "FILE", conflicts_with = "demo")]
    mock_upstream: Option<PathBuf>,
    /// Where precompiled components are cached (for --demo's compile).
    #[arg(long, env = "SLUICE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Most bytes of precompiled components kept in the cache (the data
    /// directory's, and --demo's); the least recently used go first.
    #[arg(long, env = "SLUICE_CACHE_MAX", default_value = "10G", value_parser = parse_size)]
    cache_max: u64,
    /// An installed TypeScript SDK (for --demo's compile).
    #[arg(long, env = "SLUICE_TS_SDK")]
    sdk: Option<PathBuf>,
    /// Scheduled syncs run this many times more often than their `runs`
    /// says (tests: `every 30s` at 100 is every 0.3 s).
    #[arg(long, default_value_t = 1, hide = true)]
    schedule_time_scale: u32,
    /// The first retry of a webhook to the app waits this many ms (then
    /// twice as long each time, up to an hour; tests shorten it).
    #[arg(long, default_value_t = 3000, hide = true)]
    webhook_retry_base_ms: u64,
    /// Scheduled sync runs at once, shared fairly between environments.
    #[arg(long, env = "SLUICE_SYNC_SLOTS", default_value_t = 16)]
    sync_slots: usize,
    /// Client connections open at once; more wait until one closes.
    /// Default: 10,000, or half the process's open-file limit when that is
    /// lower (the rest is for scripts' requests, webhooks and the store).
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// Async actions one environment may have waiting or running; past it
    /// `X-Async` triggers answer 429 `too_many_request`.
    #[arg(long, env = "SLUICE_MAX_ASYNC_ACTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_async_actions: u64,
    /// Bytes of input those actions may hold (each is kept in memory until
    /// it ends), e.g. 256M; likewise.
    #[arg(long, env = "SLUICE_MAX_ASYNC_ACTION_BYTES", default_value = "256M", value_parser = parse_size)]
    max_async_action_bytes: u64,
    /// Bytes of components one environment may have uploaded and not yet
    /// deployed (unused uploads are deleted within two hours), e.g. 8G;
    /// past it an upload answers 429.
    #[arg(long = "max-pending-uploads", env = "SLUICE_MAX_PENDING_UPLOADS", default_value = "8G", value_parser = parse_size)]
    max_pending_uploads: u64,
    /// Bytes of webhook bodies one environment's outbox may hold waiting
    /// for the app's receivers, e.g. 1G; past it a new webhook to the app
    /// is not queued (told in the environment's logs and on stderr).
    #[arg(long = "max-webhook-outbox", env = "SLUICE_MAX_WEBHOOK_OUTBOX", default_value = "1G", value_parser = parse_size)]
    max_webhook_outbox: u64,
    /// Back the store up while it serves (sled and redb stores): each
    /// backup is a folder here, `<UTC time>`, holding the whole store at
    /// one moment as a redb data directory (serve it with --data and the
    /// master key, which is not copied, or copy-store it elsewhere). Taken
    /// every --backup-every, and on SIGUSR1.
    #[arg(long = "backup-dir", env = "SLUICE_BACKUP_DIR", value_name = "DIR")]
    backup_dir: Option<PathBuf>,
    /// How often a backup is taken (`30m`, `6h`, `1d`; at least a
    /// minute), counted from the newest in --backup-dir; without it only
    /// SIGUSR1 takes one.
    #[arg(long = "backup-every", env = "SLUICE_BACKUP_EVERY", value_parser = parse_every, requires = "backup_dir")]
    backup_every: Option<std::time::Duration>,
    /// Backups kept in --backup-dir; older ones are deleted after each new one.
    #[arg(long = "backup-keep", env = "SLUICE_BACKUP_KEEP", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(1..))]
    backup_keep: u64,
    /// Deployment versions kept per environment for rollback (the active
    /// one always); older ones, and the uploaded components no kept
    /// deployment uses, are deleted at the next deploy or start.
    #[arg(long = "keep-deploys", env = "SLUICE_KEEP_DEPLOYS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    keep_deploys: u64,
}

/// Options every command that builds scripts shares.
#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// The nango-integrations folder (holding nango.yaml, or a zero-yaml
    /// project's index.ts).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Where precompiled components are cached.
    #[arg(long, env = "SLUICE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Most bytes of precompiled components kept in the cache (a number
    /// with K, M or G); the least recently used go first.
    #[arg(long, env = "SLUICE_CACHE_MAX", default_value = "10G", value_parser = parse_size)]
    cache_max: u64,
    /// An installed TypeScript SDK (a `guest-sdk/ts` with node_modules)
    /// instead of the one sluice carries.
    #[arg(long, env = "SLUICE_TS_SDK")]
    sdk: Option<PathBuf>,
    /// Where bundles and components are built (default: <dir>/.sluice/build).
    #[arg(long, env = "SLUICE_BUILD_DIR")]
    build_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// The folder to create (default: the current one).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The older layout: nango.yaml and `fetchData`/`runAction` exports
    /// (default: the current zero-yaml format).
    #[arg(long)]
    yaml: bool,
    /// nango.yaml with the scripts in Rust: a crate per script, a crate
    /// of shared models, and a copy of the Rust SDK (`sluice-sdk/`).
    #[arg(long, conflicts_with = "yaml")]
    rust: bool,
    /// Accepted as the original's `init --copy` (only copy the files):
    /// sluice's init only ever writes the files.
    #[arg(long, hide = true)]
    copy: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["sync", "action", "on_event"])))]
struct CreateArgs {
    /// A sync.
    #[arg(long)]
    sync: bool,
    /// An action.
    #[arg(long)]
    action: bool,
    /// An on-event script.
    #[arg(long = "on-event")]
    on_event: bool,
    /// The integration (its folder), e.g. `google-calendar`.
    integration: String,
    /// The script's name, e.g. `calendar-events`.
    name: String,
    /// The zero-yaml project.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

#[derive(Debug, clap::Args)]
struct GenerateTestsArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// Only this integration's scripts.
    #[arg(short = 'i', long)]
    integration: Option<String>,
    /// Only this sync.
    #[arg(short = 's', long, conflicts_with = "action")]
    sync: Option<String>,
    /// Only this action.
    #[arg(short = 'a', long)]
    action: Option<String>,
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// The nango-integrations folder holding nango.yaml (a zero-yaml
    /// project's models come from its scripts: nothing to generate).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

#[derive(Debug, clap::Args)]
struct CompileArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// Only this integration.
    #[arg(long = "integration", alias = "integration-id")]
    integration: Option<String>,
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// Only this integration.
    #[arg(long = "integration", alias = "integration-id")]
    integration: Option<String>,
    /// Only this script.
    #[arg(long)]
    script: Option<String>,
    /// A providers file in Nango's providers.yaml format, over the built-in
    /// catalogue and an installed @nangohq/providers.
    #[arg(long, env = "SLUICE_PROVIDERS")]
    providers: Option<PathBuf>,
    /// Freeze the scripts' clock at this time (RFC 3339, YYYY-MM-DD or
    /// YYYY-MM-DD HH:MM[:SS] in UTC).
    #[arg(long)]
    now: Option<String>,
    /// The environment whose variables and limits apply.
    #[arg(short = 'e', long = "environment", default_value = "dev")]
    environment: String,
}

#[derive(Debug, clap::Args)]
struct DryrunArgs {
    /// A script of the project (declared in nango.yaml or imported by a
    /// zero-yaml index.ts; or a binary of the Rust crate in --dir), or a
    /// .wasm component path.
    script: String,
    /// The connection to run as (from the connections file, or the
    /// server's: --from-server, or no connections file and the
    /// environment's secret key set).
    connection_id: String,
    #[command(flatten)]
    build: BuildArgs,
    /// The integration, when the script or connection id exists for several.
    #[arg(long = "integration-id")]
    integration_id: Option<String>,
    /// Local connections (default: <dir>/connections.yaml; without it, and
    /// with NANGO_SECRET_KEY_<ENV> set, the server's).
    #[arg(long, conflicts_with = "from_server")]
    connections: Option<PathBuf>,
    /// Take the connection (credentials refreshed by the server, metadata,
    /// config) and the environment variables from a running server instead
    /// of a connections file.
    #[arg(long = "from-server")]
    from_server: bool,
    /// The server for --from-server (default: NANGO_HOSTPORT, else
    /// http://127.0.0.1:3003).
    #[arg(long, requires = "from_server")]
    host: Option<String>,
    /// The environment's secret key for --from-server (default:
    /// NANGO_SECRET_KEY_<ENV>, from the environment or .env).
    #[arg(long, requires = "from_server")]
    secret_key: Option<String>,
    /// A providers file in Nango's providers.yaml format, over the built-in
    /// catalogue and an installed @nangohq/providers.
    #[arg(long, env = "SLUICE_PROVIDERS")]
    providers: Option<PathBuf>,
    /// The environment whose variables and limits apply (from <dir>/sluice.yaml).
    #[arg(short = 'e', long = "environment", default_value = "dev")]
    environment: String,
    /// Action input: JSON, or @file.json.
    #[arg(short = 'i', long)]
    input: Option<String>,
    /// Metadata for the run, replacing the connection's: JSON, or @file.json.
    #[arg(short = 'm', long)]
    metadata: Option<String>,
    /// The checkpoint a sync's getCheckpoint finds, as if a previous run
    /// had saved it (zero-yaml syncs): a JSON object, or @file.json.
    #[arg(short = 'c', long)]
    checkpoint: Option<String>,
    /// The last successful sync's start (RFC 3339, YYYY-MM-DD or
    /// YYYY-MM-DD HH:MM[:SS] in UTC).
    #[arg(short = 'l', long = "lastSyncDate", alias = "last-sync-date")]
    last_sync_date: Option<String>,
    /// Run the sync as this variant.
    #[arg(long)]
    variant: Option<String>,
    /// Serve this fixture on 127.0.0.1 and send every upstream request to it.
    #[arg(long = "mock-upstream")]
    mock_upstream: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Fail on input, output or records that do not match their models
    /// (otherwise a warning is logged).
    #[arg(long, visible_alias = "validate")]
    validation: bool,
    /// Save the responses and results as mocks for `sluice test`, under
    /// <dir>/<integration>/mocks (or $NANGO_MOCKS_RESPONSE_DIRECTORY/<integration>/mocks).
    /// In a zero-yaml project the same as --save, as in the original's
    /// current CLI.
    #[arg(long = "save-responses")]
    save_responses: bool,
    /// Print what the run used of its limits: wall time, CPU (fuel) and
    /// the script's memory.
    #[arg(long)]
    diagnostics: bool,
    /// Save the run as a test recording for `sluice test`:
    /// <dir>/<integration>/tests/<script>.test.json (zero-yaml projects);
    /// the run is validated as with --validation, so nothing invalid is
    /// recorded.
    #[arg(long)]
    save: bool,
}

impl BuildArgs {
    /// The options, with the cache directory checked (created when
    /// missing) before anything is put in it or loaded from it.
    fn options(self, integration: Option<String>) -> anyhow::Result<CompileOptions> {
        Ok(CompileOptions {
            dir: self.dir,
            integration,
            sdk: self.sdk,
            cache_dir: cache_dir(self.cache_dir)?,
            cache_max_bytes: self.cache_max,
            build_dir: self.build_dir,
            tested_scripts: false,
        })
    }
}

/// Runs the command line; returns the exit code (0 ok, 1 the script
/// failed, 2 the command could not run).
pub async fn run(
    args: impl IntoIterator<Item = OsString>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            // Styled only for a terminal, and not when NO_COLOR is set
            // (https://no-color.org): piped or logged, it is plain text.
            use std::io::IsTerminal as _;
            let terminal = if code == 0 {
                std::io::stdout().is_terminal()
            } else {
                std::io::stderr().is_terminal()
            };
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            let styled = e.render();
            let text = if terminal && !no_color {
                styled.ansi().to_string()
            } else {
                styled.to_string()
            };
            let _ = if code == 0 {
                write!(out, "{text}")
            } else {
                write!(err, "{text}")
            };
            return code;
        }
    };
    // Nothing asks: the flag only keeps the original's command lines working.
    let _never_asks = (
        cli.auto_confirm,
        cli.no_interactive,
        cli.no_dependency_update,
        cli.no_telemetry,
    );
    if cli.debug {
        sluice_project::debug::enable();
    }
    let result = match cli.command {
        Command::Init(args) => run_init(args, out),
        Command::Generate(args) => run_generate(args, out, err),
        Command::Create(args) => run_create(args, out),
        Command::Version => writeln!(
            out,
            "sluice {} (scripts: nango:scripts@{})",
            env!("CARGO_PKG_VERSION"),
            sluice_runtime::CONTRACT_VERSION
        )
        .map(|()| 0)
        .map_err(Into::into),
        Command::GenerateTests(args) => run_generate_tests(args, out, err),
        Command::Compile(args) => run_compile(args, out, err),
        Command::Dev(args) => run_dev(args, out, err),
        Command::Dryrun(args) => run_dryrun(args, out, err).await,
        Command::Test(args) => run_test(args, out, err).await,
        Command::Serve(args) => run_serve(args, out, err).await,
        Command::Deploy(args) => run_deploy(args, out, err).await,
        Command::MigrateToZeroYaml(args) => run_migrate(args, out, err),
        Command::CopyStore(args) => run_copy_store(args, out, err).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "error: {}", error_chain(&e));
            2
        }
    }
}

/// An error and its causes on one line, leaving out a cause its message
/// already says (most errors name their source in their own text: `{:#}`
/// showed it twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.is_empty() {
            message = text;
        } else if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
    }
    message
}

async fn run_dryrun(
    args: DryrunArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let input = args
        .input
        .as_deref()
        .map(|i| json_argument("--input", i))
        .transpose()?
        .map(|v| v.to_string());
    let metadata = args
        .metadata
        .as_deref()
        .map(|m| json_argument("--metadata", m))
        .transpose()?;
    if let Some(m) = &metadata
        && !m.is_object()
    {
        bail!("--metadata must be a JSON object (a connection's metadata), got {m}");
    }
    let checkpoint = args
        .checkpoint
        .as_deref()
        .map(|c| json_argument("--checkpoint", c))
        .transpose()?;
    if let Some(c) = &checkpoint
        && !c.is_object()
    {
        bail!("--checkpoint must be a JSON object (what saveCheckpoint saves), got {c}");
    }
    let last_sync_date = args
        .last_sync_date
        .as_deref()
        .map(|d| parse_date("--lastSyncDate", d))
        .transpose()?;
    // The original's current CLI has one option for both names in a
    // zero-yaml project, and validates what it saves.
    let zero = sluice_project::zero::is_zero_yaml(&args.build.dir);
    let save = args.save || (zero && args.save_responses);
    let save_fixture = save.then(|| args.build.dir.clone());
    let save_responses = (args.save_responses && !zero).then(|| {
        std::env::var_os("NANGO_MOCKS_RESPONSE_DIRECTORY")
            .map(PathBuf::from)
            .unwrap_or_else(|| args.build.dir.clone())
    });
    // As the original's dry run, which always reads the connection from
    // the server: without a connections file of its own, a project whose
    // environment's secret key is set (in the environment or .env) reads
    // it from the server too.
    let local = args
        .connections
        .clone()
        .unwrap_or_else(|| args.build.dir.join("connections.yaml"));
    // The server chosen without --from-server: the dry run asks it whose
    // the key is before reading anything.
    let mut implicit_server = None;
    let server = if args.from_server {
        let settings = server_settings(
            &args.build.dir,
            &args.environment,
            args.host,
            args.secret_key,
            "the dry run",
            err,
        )?;
        Some(ServerSource {
            host: settings.host,
            secret_key: settings.key,
        })
    } else if args.connections.is_none()
        && args.build.dir.is_dir()
        && !local.exists()
        && secret_key_set(&args.build.dir, &args.environment)?
    {
        implicit_server = Some(args.environment.clone());
        let key_var = format!("NANGO_SECRET_KEY_{}", args.environment.to_uppercase());
        let settings = server_settings(
            &args.build.dir,
            &args.environment,
            None,
            None,
            "the dry run",
            err,
        )
        .map_err(|e| anyhow::anyhow!("no {}, and {key_var} is set: {e:#}", local.display()))?;
        Some(ServerSource {
            host: settings.host,
            secret_key: settings.key,
        })
    } else {
        None
    };
    let options = DryRunOptions {
        build: args.build.options(args.integration_id)?,
        server,
        implicit_server,
        script: args.script,
        connection_id: args.connection_id,
        connections_file: args.connections,
        providers_file: args.providers,
        environment: args.environment,
        input,
        metadata,
        last_sync_date,
        checkpoint,
        variant: args.variant,
        mock_upstream: args.mock_upstream,
        validation: args.validation || save,
        save_responses,
        save_fixture,
    };
    let result = dryrun::dry_run(&options, err).await?;
    // Said, not silently dropped: an option the script's kind takes no use of.
    use sluice_runtime::ScriptKind;
    let sync = result.kind == ScriptKind::Sync;
    let unused = [
        (
            result.kind != ScriptKind::Action && options.input.is_some(),
            "--input (only an action takes an input)",
        ),
        (
            !sync && options.variant.is_some(),
            "--variant (only a sync has variants)",
        ),
        (
            !sync && options.checkpoint.is_some(),
            "--checkpoint (only a sync has checkpoints)",
        ),
        (
            !sync && options.last_sync_date.is_some(),
            "--lastSyncDate (only a sync has a last sync date)",
        ),
    ];
    for (_, what) in unused.iter().filter(|(unused, _)| *unused) {
        writeln!(err, "note: {what} was not used by `{}`", result.script)?;
    }
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&result)?)?;
    } else {
        dryrun::render(&result, out)?;
        if args.diagnostics {
            dryrun::render_diagnostics(&result, out)?;
        }
    }
    Ok(if result.success { 0 } else { 1 })
}

fn run_init(args: InitArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    // `--copy` asks for what init does anyway.
    let _only_copies = args.copy;
    let starter = match (args.yaml, args.rust) {
        (_, true) => init::Starter::Rust,
        (true, false) => init::Starter::Yaml,
        (false, false) => init::Starter::Zero,
    };
    let written = init::init(&args.dir, starter)?;
    for path in &written {
        writeln!(out, "created {}", path.display())?;
    }
    let yaml = starter != init::Starter::Zero;
    let script = if yaml {
        "github-issue-example"
    } else {
        "issues"
    };
    writeln!(
        out,
        "Try it: sluice dryrun {script} demo --dir {} --mock-upstream {}",
        args.dir.display(),
        args.dir.join("mock-api.yaml").display()
    )?;
    if starter == init::Starter::Rust {
        writeln!(
            out,
            "(the scripts are built for wasm32-wasip2: `rustup target add wasm32-wasip2` once)"
        )?;
    }
    if yaml {
        // The older layout's tests replay mocks a dry run records.
        writeln!(
            out,
            "record its mocks with --save-responses added, then: sluice test --dir {}",
            args.dir.display()
        )?;
    } else {
        writeln!(out, "and: sluice test --dir {}", args.dir.display())?;
    }
    Ok(0)
}

fn run_create(args: CreateArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let (kind, what) = match (args.sync, args.action) {
        (true, _) => (init::NewScript::Sync, "sync"),
        (_, true) => (init::NewScript::Action, "action"),
        _ => (init::NewScript::OnEvent, "on-event"),
    };
    let path = init::create(&args.dir, kind, &args.integration, &args.name)?;
    writeln!(out, "Created {what}: {}", path.display())?;
    Ok(0)
}

fn run_generate_tests(
    args: GenerateTestsArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let dir = args.build.dir.clone();
    if !sluice_project::zero::is_zero_yaml(&dir) {
        bail!(
            "{} is not a zero-yaml project: generate:tests writes the tests of a zero-yaml project's recordings (a nango.yaml project's `sluice test` replays mocks/ with no test files)",
            dir.display()
        );
    }
    // Compiled first, as the original does: the definitions name each
    // script's kind and output model.
    let options = args.build.options(args.integration.clone())?;
    let runtime = Runtime::new(options.runtime_config(1))?;
    let project = compile::compile(&options, &runtime, err)?;
    let definitions = project.definitions.unwrap_or_default();
    let filter = dryrun::TestFilter {
        integration: args.integration,
        sync: args.sync,
        action: args.action,
    };
    let done = dryrun::generate_tests(&dir, &definitions, &filter)?;
    for s in &done.skipped {
        writeln!(err, "skipped {s}")?;
    }
    if done.written.is_empty() {
        writeln!(
            out,
            "No test files were generated. Make sure you have mocks in place (sluice dryrun <script> <connection> --save records one)."
        )?;
    } else {
        writeln!(out, "Generated {} test file(s):", done.written.len())?;
        for path in &done.written {
            writeln!(out, "  {}", path.display())?;
        }
    }
    Ok(0)
}

fn run_generate(
    args: GenerateArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let (written, warnings) = init::generate(&args.dir)?;
    for w in &warnings {
        writeln!(err, "{w}")?;
    }
    for path in &written {
        writeln!(out, "wrote {}", path.display())?;
    }
    Ok(0)
}

fn run_migrate(args: MigrateArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let options = args.build.options(None)?;
    let toolchain = sluice_project::toolchain::Toolchain::locate(
        options.sdk.as_deref(),
        &options.cache_dir,
        err,
    )?;
    let migrated = sluice_project::migrate::migrate(&options.dir, &toolchain, err)?;
    for link in &migrated.skipped_links {
        writeln!(err, "skipped {link}: its path goes through a symbolic link")?;
    }
    writeln!(
        out,
        "Migrated {} script{} to the zero-yaml format ({} helper file{} had SDK type imports moved to `nango`); wrote models.ts, index.ts, package.json and .nango/, and deleted nango.yaml.",
        migrated.scripts,
        if migrated.scripts == 1 { "" } else { "s" },
        migrated.helpers,
        if migrated.helpers == 1 { "" } else { "s" },
    )?;
    if migrated.tests > 0 {
        writeln!(
            out,
            "Wrote {} test file{} (tests/<script>.test.ts) for the scripts recorded in mocks/, which sluice test replays.",
            migrated.tests,
            if migrated.tests == 1 { "" } else { "s" },
        )?;
    }
    // As the original does, compile the result: this checks it and writes
    // .nango/nango.json.
    let runtime = Runtime::new(options.runtime_config(1))?;
    match compile::compile(&options, &runtime, err) {
        Ok(project) => {
            writeln!(
                out,
                "Compiled {} script{}; .nango/nango.json written.",
                project.scripts.len(),
                if project.scripts.len() == 1 { "" } else { "s" }
            )?;
            Ok(0)
        }
        Err(e) => {
            writeln!(
                err,
                "The migrated folder does not compile yet (fix it, then run `sluice compile`):\n{e}"
            )?;
            Ok(1)
        }
    }
}

fn run_compile(args: CompileArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let options = args.build.options(args.integration)?;
    let runtime = Runtime::new(options.runtime_config(1))?;
    let project = compile::compile(&options, &runtime, err)?;
    let integrations: std::collections::BTreeSet<&str> = project
        .scripts
        .iter()
        .map(|s| s.integration.as_str())
        .collect();
    writeln!(
        out,
        "Compiled {} script{} in {} integration{}.",
        project.scripts.len(),
        if project.scripts.len() == 1 { "" } else { "s" },
        integrations.len(),
        if integrations.len() == 1 { "" } else { "s" }
    )?;
    Ok(0)
}

/// `sluice dev`: compiles, then waits for a change of the project's
/// sources (polled twice a second; builds, dependencies and what a
/// compile writes are not watched) and compiles again, until stopped. A
/// failed compile is said and waited past, not an exit.
fn run_dev(args: CompileArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    use sluice_project::watch::Snapshot;
    let options = args.build.options(args.integration)?;
    let runtime = Runtime::new(options.runtime_config(1))?;
    let dir = options.dir.clone();
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let mut first = true;
    let mut warned_full = false;
    loop {
        // What compiling writes is not a change of the user's: the build
        // and cache folders, wherever they were put.
        let excluded: Vec<PathBuf> = [options.build_dir(), options.cache_dir.clone()]
            .into_iter()
            .flat_map(|p| {
                let canonical = p.canonicalize().ok();
                std::iter::once(dir.join(&p)).chain(canonical)
            })
            .collect();
        let before = Snapshot::take(&dir, &excluded);
        if before.is_full() && !warned_full {
            warned_full = true;
            writeln!(
                err,
                "warning: {} holds too many files to watch them all: some changes will not be seen",
                dir.display()
            )?;
        }
        match compile::compile(&options, &runtime, err) {
            Ok(project) => writeln!(
                out,
                "Compiled {} script{}. Watching {} for changes (Ctrl-C to stop).",
                project.scripts.len(),
                if project.scripts.len() == 1 { "" } else { "s" },
                dir.display()
            )?,
            // Not a project at all: nothing to watch for.
            Err(e @ compile::CompileError::NotAProject(_)) if first => return Err(e.into()),
            Err(e) => writeln!(
                err,
                "error: {:#}\nWatching {} for changes (Ctrl-C to stop).",
                anyhow::Error::from(e),
                dir.display()
            )?,
        }
        first = false;
        out.flush()?;
        err.flush()?;
        // A file the user saved while it compiled is compiled next, at
        // once; else the next change is waited for, and then a moment
        // more (an editor saving several files).
        let mut changed = Snapshot::take(&dir, &excluded).changed_since(&before);
        while changed.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(500));
            changed = Snapshot::take(&dir, &excluded).changed_since(&before);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let shown: Vec<String> = changed
            .iter()
            .take(5)
            .map(|p| p.display().to_string())
            .collect();
        writeln!(
            err,
            "changed: {}{}",
            shown.join(", "),
            if changed.len() > 5 { ", …" } else { "" }
        )?;
    }
}

async fn run_test(args: TestArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let now = args
        .now
        .as_deref()
        .map(|d| parse_date("--now", d))
        .transpose()?;
    let options = TestOptions {
        build: args.build.options(args.integration)?,
        script: args.script,
        providers_file: args.providers,
        now,
        environment: args.environment,
    };
    let outcomes = test::run_tests(&options, out, err).await?;
    // Test files sluice does not run (hand-written ones) are tests all the
    // same: only a project without any is a failure.
    let dir = &options.build.dir;
    let has_test_files = sluice_project::zero::is_zero_yaml(dir)
        && !sluice_project::zerotest::discover(dir, options.build.integration.as_deref())
            .is_empty();
    if outcomes.is_empty() && !has_test_files {
        writeln!(
            err,
            "no recorded tests were found: record them with `sluice dryrun <script> <connection> --save` \
             (zero-yaml: <integration>/tests/<script>.test.json) or `--save-responses` \
             (nango.yaml: <integration>/mocks/)"
        )?;
        // As vitest, which fails when it finds no test file.
        return Ok(1);
    }
    Ok(if outcomes.iter().all(|o| o.failure.is_none()) {
        0
    } else {
        1
    })
}

/// JSON given inline or as `@file`.
/// `KEY=value` lines of a `.env` file (the original's CLI reads the one in
/// the current directory); the process environment wins.
/// A missing file is nothing; one that cannot be read (not UTF-8, a folder,
/// no permission) is an error naming it, not silently nothing (its
/// settings would be missed, and the error would blame the setting). It
/// is read as the project's other files: a regular file of at most 8 MiB
/// (a cloned project's `.env -> /dev/zero` was read for ever).
fn dotenv(path: &std::path::Path) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let text = match sluice_nango_yaml::read_text_file(path, sluice_nango_yaml::MAX_FILE_BYTES) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            // Quoted: up to the closing quote (`\"` inside double quotes is
            // a quote); bare: up to a comment after a space or tab (a `#`
            // inside a bare value, as in a URL's fragment, is kept).
            let quoted = ['"', '\''].into_iter().find_map(|q| {
                let rest = v.strip_prefix(q)?;
                let mut escaped = false;
                let end = rest.char_indices().find_map(|(i, c)| {
                    let closes = c == q && !escaped;
                    escaped = q == '"' && c == '\\' && !escaped;
                    closes.then_some(i)
                })?;
                Some(if q == '"' {
                    rest[..end].replace("\\\"", "\"")
                } else {
                    rest[..end].to_string()
                })
            });
            let v = quoted.unwrap_or_else(|| match v.find(" #").or_else(|| v.find("\t#")) {
                Some(at) => v[..at].trim_end().to_string(),
                None => v.to_string(),
            });
            (k.trim().to_string(), v)
        })
        .collect())
}

/// The `.env` files a command reads, in the order they count: the
/// current directory's, then the project's in `dir`.
type EnvFiles = Vec<(PathBuf, std::collections::HashMap<String, String>)>;

fn env_files(dir: &std::path::Path) -> anyhow::Result<EnvFiles> {
    let mut files = Vec::new();
    for path in [PathBuf::from(".env"), dir.join(".env")] {
        let file = dotenv(&path)?;
        files.push((path, file));
    }
    Ok(files)
}

/// The setting `name` from the first of the process environment and the
/// `.env` files that has it, unless it is empty there; with where it was
/// found (`NANGO_HOSTPORT in ./.env`).
fn setting(name: &str, files: &EnvFiles) -> Option<(String, String)> {
    let found = match std::env::var(name) {
        Ok(v) => Some((v, format!("{name} in the environment"))),
        Err(_) => files.iter().find_map(|(path, file)| {
            let shown = match path.to_str() {
                Some(".env") => "./.env".to_string(),
                _ => path.display().to_string(),
            };
            file.get(name)
                .map(|v| (v.clone(), format!("{name} in {shown}")))
        }),
    };
    found.filter(|(v, _)| !v.is_empty())
}

/// `serve --limits FILE`: each environment's limits, and the
/// environments the file gives variables to (which serve does not apply).
fn limits_from_file(
    file: &std::path::Path,
) -> anyhow::Result<(
    std::collections::BTreeMap<String, sluice_runtime::Limits>,
    Vec<String>,
)> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the limits file {}", file.display()))?;
    let config: sluice_project::project::ProjectConfig = serde_norway::from_str(&text)
        .with_context(|| format!("{} is not a valid limits file", file.display()))?;
    let with_variables = config
        .environments
        .iter()
        .filter(|(_, e)| !e.variables.is_empty())
        .map(|(name, _)| name.clone())
        .collect();
    if let Some((name, problem)) = config
        .environments
        .iter()
        .find_map(|(name, e)| e.limits.problem().map(|p| (name, p)))
    {
        anyhow::bail!(
            "{}: the limits of environment `{name}`: {problem}",
            file.display()
        );
    }
    let limits = config
        .environments
        .into_iter()
        .map(|(name, e)| (name, e.limits))
        .collect();
    Ok((limits, with_variables))
}

/// Whether the environment's secret key is set (`NANGO_SECRET_KEY_<ENV>`,
/// in the environment, `./.env` or the project's `.env`), as
/// [`server_settings`] looks for it.
fn secret_key_set(dir: &std::path::Path, env: &str) -> anyhow::Result<bool> {
    let files = env_files(dir)?;
    Ok(setting(&format!("NANGO_SECRET_KEY_{}", env.to_uppercase()), &files).is_some())
}

/// The server a command sends its requests to, the secret key they carry,
/// and where each was found (a flag, a variable, which `.env`).
struct ServerSettings {
    /// Without a user and password.
    host: String,
    key: String,
    host_from: String,
    key_from: String,
}

/// Whether `url` names this machine (`localhost`, a loopback address).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

/// The server and the environment's secret key: flags first, then
/// `NANGO_HOSTPORT` and `NANGO_SECRET_KEY_<ENV>` from the process
/// environment, then from `.env` (the current directory's, then the
/// project's), as the original's CLI reads them. Plain `http://` to
/// another machine is warned of on `err`.
fn server_settings(
    dir: &std::path::Path,
    env: &str,
    host: Option<String>,
    secret_key: Option<String>,
    purpose: &str,
    err: &mut dyn Write,
) -> anyhow::Result<ServerSettings> {
    let files = env_files(dir)?;
    let key_var = format!("NANGO_SECRET_KEY_{}", env.to_uppercase());
    let Some((key, key_from)) = secret_key
        .map(|k| (k, "--secret-key".to_string()))
        .or_else(|| setting(&key_var, &files))
    else {
        bail!(
            "{key_var} is not set (in the environment or .env): {purpose} needs the environment's secret key"
        );
    };
    let (host, host_from) = host
        .map(|h| (h, "--host".to_string()))
        .or_else(|| setting("NANGO_HOSTPORT", &files))
        .unwrap_or_else(|| ("http://127.0.0.1:3003".into(), "the default".into()));
    let Some(mut url) = url::Url::parse(&host)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
    else {
        bail!(
            "the server URL `{}` is not one {purpose} can reach: give its scheme and host, as http://127.0.0.1:3003",
            shown_host(&host)
        );
    };
    // The request's authorization is the secret key: a user and password
    // would go as a second one (which the server takes first).
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("");
        let _ = url.set_password(None);
        writeln!(
            err,
            "note: the user and password in the server URL are not sent: the environment's secret key is the requests' authorization"
        )?;
    }
    let host = url.as_str().trim_end_matches('/').to_string();
    if url.scheme() == "http" && !is_loopback(&url) {
        writeln!(
            err,
            "warning: {host} ({host_from}) is plain http:// to another machine: {purpose} sends the secret key ({key_from}) unencrypted, for anyone on the way to read; use https://"
        )?;
    }
    Ok(ServerSettings {
        host,
        key,
        host_from,
        key_from,
    })
}

async fn run_deploy(
    args: DeployArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    // Nothing to confirm: a deploy replaces the environment's project, and
    // every version is kept for a rollback.
    let _never_asks = args.allow_destructive;
    let named = args.environment.or(args.env);
    let env = named.clone().unwrap_or_else(|| "dev".into());
    let ServerSettings {
        host,
        key,
        host_from,
        key_from,
    } = server_settings(
        &args.build.dir,
        &env,
        args.host,
        args.secret_key,
        "the deploy",
        err,
    )?;
    // `server_settings` took out any user and password.
    let shown = &host;
    // Said before anything is sent: the key and the server may come from
    // different places (a cloned project's .env naming the server, the
    // shell's key).
    writeln!(
        err,
        "Deploying to {shown} (environment `{env}`; the server from {host_from}, the secret key from {key_from})"
    )?;
    // A key is its environment's: deploying `prod` with dev's key would
    // deploy to dev. Asked before the build either way: a wrong key or an
    // unreachable server is said at once, not after compiling.
    let server = sluice_project::deploy::environment_of(&host, &key).await?;
    let holds = server.name;
    if let Some(named) = &named
        && &holds != named
    {
        bail!(
            "the secret key is environment `{holds}`'s, not `{named}`'s: nothing was deployed (give {named}'s key, NANGO_SECRET_KEY_{})",
            named.to_uppercase()
        );
    }
    let has_sluice_yaml = args.build.dir.join("sluice.yaml").is_file();
    let options = args.build.options(None)?;
    let runtime = Runtime::new(options.runtime_config(1))?;
    let scope = sluice_project::deploy::DeployScope {
        integration: args.integration,
        sync: args.sync,
        action: args.action,
    };
    let scope = (scope != Default::default()).then_some(scope);
    // A server without them would deploy the project whole, dropping the
    // scripts only it has.
    if let Some(scope) = &scope
        && !server.takes_scopes
    {
        bail!(
            "the server at {shown} does not take a deploy of part of a project ({scope}): nothing was deployed; upgrade it, or deploy the whole project"
        );
    }
    let project = compile::compile(&options, &runtime, err)?;
    // Said before anything is sent.
    let in_scope = project
        .scripts
        .iter()
        .filter(|s| {
            scope
                .as_ref()
                .is_none_or(|sc| sc.takes(&s.integration, &s.name, s.kind))
        })
        .count();
    if let Some(scope) = &scope
        && in_scope == 0
    {
        bail!("the project has no {scope} to deploy: nothing was deployed");
    }
    let deployed = sluice_project::deploy::upload(
        &project,
        &host,
        &key,
        args.version.as_deref(),
        scope.as_ref(),
    )
    .await?;
    // The environment the key belongs to, whatever `--env` said.
    let environment = deployed["environment"].as_str().unwrap_or(&env);
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    match &scope {
        None => writeln!(
            out,
            "Deployed version {} to `{}` at {shown}: {in_scope} script{}.",
            deployed["version"],
            environment,
            plural(in_scope)
        )?,
        Some(scope) => {
            let all = deployed["scripts"].as_array().map_or(0, Vec::len);
            writeln!(
                out,
                "Deployed version {} to `{}` at {shown}: {scope}, {in_scope} script{}; the deployment has {all} script{} in all.",
                deployed["version"],
                environment,
                plural(in_scope),
                plural(all)
            )?
        }
    }
    // What a dry run takes from sluice.yaml stays behind: said, so a
    // variable the scripts read is not found empty on the server.
    if has_sluice_yaml {
        writeln!(
            err,
            "note: sluice.yaml is not deployed: a server's variables are set with PUT /environment-variables, its limits with `sluice serve --limits`"
        )?;
    }
    Ok(0)
}

/// A server URL as printed: a user name and password in it as `***`.
fn shown_host(host: &str) -> String {
    match url::Url::parse(host) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("***");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(u) if matches!(u.scheme(), "http" | "https") => host.to_string(),
        // Not a URL sluice can send to (`ci:secret@host:3003` has the
        // scheme `ci`): whatever is before an `@` may be a password.
        _ => match host.rsplit_once('@') {
            Some((before, after)) => {
                let scheme = before.split_once("://").map_or("", |(s, _)| s);
                let sep = if scheme.is_empty() { "" } else { "://" };
                format!("{scheme}{sep}***@{after}")
            }
            None => host.to_string(),
        },
    }
}

/// The master key: `SLUICE_MASTER_KEY` (base64 of 32 bytes), or the key
/// file in the data directory, created with mode 0600 on first start.
fn master_key(data: &std::path::Path) -> anyhow::Result<sluice_store::MasterKey> {
    if let Ok(text) = std::env::var("SLUICE_MASTER_KEY") {
        let key = sluice_store::MasterKey::from_base64(&text)
            .context("SLUICE_MASTER_KEY must be the base64 of 32 bytes")?;
        // Two keys for one store: which one sealed it is not for sluice to
        // guess (taking the variable's would make the store unreadable
        // without it, and the file's key wrong).
        let file = data.join("master.key");
        if file.exists() {
            let in_file = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let same = sluice_store::MasterKey::from_base64(in_file.trim())
                .is_ok_and(|k| k.to_base64() == key.to_base64());
            if !same {
                anyhow::bail!(
                    "SLUICE_MASTER_KEY and {} hold different master keys: keep the one that sealed this store (unset the variable, or move the file away); nothing was changed",
                    file.display()
                );
            }
        }
        return Ok(key);
    }
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let file = data.join("master.key");
    // A store without its key file is refused, not given a new key that
    // cannot open what the store holds.
    if !file.exists() && sluice_server::StoreKind::detect(data).is_some() {
        anyhow::bail!(
            "{} holds a store but no master.key: put its master key back (or set SLUICE_MASTER_KEY); nothing was changed",
            data.display()
        );
    }
    Ok(sluice_store::MasterKey::load_or_create(&file)?)
}

/// A store named on the command line: its kind, and its data directory
/// for the embedded kinds. Errors never repeat the text (it may hold a
/// password).
fn store_spec(spec: &str) -> anyhow::Result<(sluice_server::StoreKind, Option<PathBuf>)> {
    let dir = |d: &str| match d.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(rest))
            .unwrap_or_else(|| PathBuf::from(d)),
        None => PathBuf::from(d),
    };
    match spec.split_once(':') {
        Some(("sled", d)) if !d.is_empty() => {
            return Ok((sluice_server::StoreKind::Sled, Some(dir(d))));
        }
        Some(("redb", d)) if !d.is_empty() => {
            return Ok((sluice_server::StoreKind::Redb, Some(dir(d))));
        }
        _ => {}
    }
    // A URL, or libpq's `host=… dbname=…` pairs.
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") || spec.contains('=') {
        return Ok((sluice_server::StoreKind::Postgres(spec.to_string()), None));
    }
    anyhow::bail!(
        "a store is given as sled:<data directory>, redb:<data directory> or a PostgreSQL connection string (postgres://user:password@host:5432/dbname)"
    )
}

/// Opens a store named on the command line, off the async workers. A
/// PostgreSQL `source` must hold a store already (nothing is created in a
/// schema that has none).
async fn open_spec(
    kind: &sluice_server::StoreKind,
    dir: &Option<PathBuf>,
    source: bool,
) -> anyhow::Result<std::sync::Arc<dyn sluice_store::Backend>> {
    let (kind, dir) = (kind.clone(), dir.clone());
    let opened = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        Ok(match (&kind, &dir) {
            (sluice_server::StoreKind::Postgres(url), _) if source => {
                sluice_server::StoreKind::open_postgres_source(url)?
            }
            // Refused, nothing written, when it is not empty.
            (sluice_server::StoreKind::Postgres(url), _) => {
                sluice_server::StoreKind::open_postgres_destination(url)?
            }
            (kind, Some(dir)) => kind.open(dir)?,
            (_, None) => bail!("an embedded store needs its data directory"),
        })
    })
    .await
    .context("opening the store stopped")??;
    Ok(opened)
}

/// The master key that sealed the source: `SLUICE_MASTER_KEY`, or the
/// source data directory's key file.
fn source_master(
    from_dir: &Option<PathBuf>,
) -> anyhow::Result<Option<(sluice_store::MasterKey, Option<PathBuf>)>> {
    if let Ok(text) = std::env::var("SLUICE_MASTER_KEY") {
        let key = sluice_store::MasterKey::from_base64(&text)
            .context("SLUICE_MASTER_KEY must be the base64 of 32 bytes")?;
        return Ok(Some((key, None)));
    }
    let Some(file) = from_dir.as_ref().map(|d| d.join("master.key")) else {
        return Ok(None);
    };
    if !file.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let key = sluice_store::MasterKey::from_base64(text.trim())
        .with_context(|| format!("{} holds no master key", file.display()))?;
    Ok(Some((key, Some(file))))
}

async fn run_copy_store(
    args: CopyStoreArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let (from_kind, from_dir) = store_spec(&args.from).context("--from")?;
    let (to_kind, to_dir) = store_spec(&args.to).context("--to")?;
    let describe = |kind: &sluice_server::StoreKind, dir: &Option<PathBuf>| match (kind, dir) {
        (_, Some(dir)) => format!("the {} store in {}", kind.name(), dir.display()),
        (sluice_server::StoreKind::Postgres(url), None) => match url::Url::parse(url) {
            // Never the password.
            Ok(u) => format!(
                "the PostgreSQL store at {}://{}@{}{}{}",
                u.scheme(),
                u.username(),
                u.host_str().unwrap_or(""),
                u.port().map(|p| format!(":{p}")).unwrap_or_default(),
                u.path()
            ),
            Err(_) => "the PostgreSQL store".to_string(),
        },
        _ => "the store".to_string(),
    };
    let (from_name, to_name) = (describe(&from_kind, &from_dir), describe(&to_kind, &to_dir));
    if let Some(dir) = &from_dir {
        let at = from_kind.location(dir).unwrap_or_default();
        if !at.exists() {
            anyhow::bail!(
                "{} holds no {} store ({} is missing)",
                dir.display(),
                from_kind.name(),
                at.display()
            );
        }
    }
    let same_place = match (&from_dir, &to_dir) {
        (Some(a), Some(b)) => {
            a == b || std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok()
        }
        (None, None) => args.from == args.to,
        _ => false,
    };
    if same_place {
        anyhow::bail!("--from and --to name the same place: copy into a new store");
    }
    let master = source_master(&from_dir)?;
    if let Some(dir) = &to_dir {
        if let Some(held) = sluice_server::StoreKind::detect(dir) {
            anyhow::bail!(
                "{} already holds a {} store: copy into a new data directory",
                dir.display(),
                held.name()
            );
        }
        let existing = dir.join("master.key");
        if let (Some((key, _)), true) = (&master, existing.exists()) {
            let there = std::fs::read_to_string(&existing)
                .with_context(|| format!("cannot read {}", existing.display()))?;
            if sluice_store::MasterKey::from_base64(there.trim())
                .map(|k| k.to_base64())
                .ok()
                != Some(key.to_base64())
            {
                anyhow::bail!(
                    "{} holds another master key than the one that sealed {from_name}: the copy could not be read with it; copy into a new data directory",
                    existing.display()
                );
            }
        }
    }
    let from = open_spec(&from_kind, &from_dir, true).await?;
    // Checked before anything is made at the destination.
    sluice_store::check_source(&*from)
        .await
        .with_context(|| from_name.clone())?;
    if let Some(dir) = &to_dir {
        private_data_dir(dir, err)?;
    }
    let to = open_spec(&to_kind, &to_dir, false)
        .await
        .with_context(|| format!("copying into {to_name}"))?;
    writeln!(out, "Copying {from_name} into {to_name} …")?;
    out.flush()?;
    let started = std::time::Instant::now();
    let report = match sluice_store::copy_store(&*from, &*to, |_, _| {}).await {
        Ok(report) => report,
        // Refused before writing: the destination is as it was (it may
        // be a whole store).
        Err(e) if !e.wrote() => {
            return Err(anyhow::Error::new(e).context(format!("copying into {to_name}")));
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(match &to_dir {
                Some(dir) => format!("the copy stopped after it began writing; {} may hold part of it: delete it before copying again", dir.display()),
                None => format!("the copy stopped after it began writing; {to_name} may hold part of it: empty its schema before copying again"),
            }));
        }
    };
    for (table, rows, bytes) in &report.tables {
        if *rows > 0 {
            writeln!(
                out,
                "  {:<14} {rows:>10} rows {:>12} bytes",
                table.name(),
                bytes
            )?;
        }
    }
    writeln!(
        out,
        "Copied {} rows ({} bytes) in {:.1} s",
        report.rows(),
        report.bytes(),
        started.elapsed().as_secs_f64()
    )?;
    let mut status = 0;
    // The copy's credentials are sealed under the source's master key.
    match &master {
        // Opening a store of an older format migrates it: left to the
        // copy's first server, which checks the key then.
        Some(_) if !report.current_format => writeln!(
            out,
            "The copy is of an older store format: its first server start migrates it, and checks the master key then."
        )?,
        Some((key, _)) => match sluice_store::Store::open(to.clone(), key.clone(), &[]).await {
            Ok(_) => writeln!(out, "The copy opens with the source's master key.")?,
            Err(e) => {
                let retry = match &to_dir {
                    Some(dir) => format!("delete {} and copy again", dir.display()),
                    None => format!("empty {to_name}'s schema and copy again"),
                };
                writeln!(
                    err,
                    "error: the copy does not open with the master key given ({e}): the key is not the one that sealed {from_name}; {retry} with that key (SLUICE_MASTER_KEY)"
                )?;
                status = 1;
            }
        },
        None => writeln!(
            out,
            "Start the copy's server with the master key of {from_name} (SLUICE_MASTER_KEY)."
        )?,
    }
    match (&master, &to_dir) {
        (Some((_, Some(file))), Some(dir)) if !dir.join("master.key").exists() => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let target = dir.join("master.key");
            let text =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&target)
                .with_context(|| format!("cannot create {}", target.display()))?;
            f.write_all(&text)?;
            f.sync_all()?;
            writeln!(out, "{} now holds the master key file too.", dir.display())?;
        }
        (Some((_, Some(file))), None) => writeln!(
            out,
            "Its server needs the master key of {from_name}: give it as SLUICE_MASTER_KEY (what {} holds), or put that file in the server's data directory.",
            file.display()
        )?,
        _ => {}
    }
    Ok(status)
}

/// The least `--script-memory`: below it no script could start.
const MIN_SCRIPT_MEMORY: u64 = 64 << 20;

/// Creates the data directory readable by its owner only (it holds the
/// records in the clear, the master key file unless SLUICE_MASTER_KEY is
/// set, and `cache`, whose compiled scripts are run as native code). One
/// that others can read, or write, or of another user, is reported, not
/// refused: container volumes are often so (an emptyDir is 0777, a
/// restored or mounted folder keeps its owner), and `cache` is checked on
/// its own by the runtime, which makes it 0700 and holds it open, so
/// another folder put at its name later is never used. A master key file
/// others can write is refused: whoever can write it can swap the key
/// that seals credentials stored from then on for one they know.
fn private_data_dir(data: &std::path::Path, err: &mut dyn Write) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    if !data.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data)
            .with_context(|| format!("cannot create the data directory {}", data.display()))?;
        return Ok(());
    }
    if !data.is_dir() {
        bail!(
            "the data directory {} is not a directory: give --data a folder (a new one is created)",
            data.display()
        );
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for (path, what) in [
        (data.to_path_buf(), "the data directory"),
        (data.join("master.key"), "the master key file"),
    ] {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        let shown = path.display();
        if path == data {
            if mode & 0o022 != 0 || meta.uid() != me {
                let who = if meta.uid() != me {
                    format!("belongs to uid {} (this user is uid {me})", meta.uid())
                } else {
                    format!("can be written by other users (mode {mode:o})")
                };
                writeln!(
                    err,
                    "warning: {what} {shown} {who}: they can move or replace the store and the master key file in it (the compiled-script cache is checked on its own); give --data a folder of your own only you can write, or chmod go-w {shown}"
                )?;
                continue;
            }
        } else if mode & 0o022 != 0 {
            bail!(
                "{what} {shown} can be written by other users (mode {mode:o}), who could replace the key that seals the credentials stored from then on: chmod go-rwx {shown}"
            );
        }
        if mode & 0o077 != 0 {
            writeln!(
                err,
                "warning: {what} {shown} can be read by other users (mode {mode:o}): chmod go-rwx {shown}"
            )?;
        }
    }
    Ok(())
}

async fn run_serve(
    args: ServeArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    if let Some(b) = args.script_memory
        && b < MIN_SCRIPT_MEMORY
    {
        bail!("--script-memory must be at least 64M: no script could run in {b} bytes");
    }
    if let Some(u) = &args.public_url {
        let parsed = url::Url::parse(u).map_err(|e| {
            anyhow::anyhow!(
                "--public-url `{u}` is not a URL: {e} (give it as https://sluice.example.com)"
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            bail!(
                "--public-url `{u}` must be an http or https URL with a host (https://sluice.example.com)"
            );
        }
    }
    private_data_dir(&args.data, err)?;
    let master = master_key(&args.data)?;
    // The original's catalogue when the folder the server starts in has
    // `nango` installed (for the names sluice's lacks), then --providers;
    // said every time, since it depends on that folder.
    let loaded = sluice_project::providers::load(
        std::path::Path::new("."),
        args.providers.as_deref(),
        sluice_project::providers::installed_wanted(),
        err,
    )?;
    writeln!(err, "providers: {}", loaded.summary)?;
    let providers = loaded.providers;
    let mut config = sluice_server::ServerConfig::new(&args.data, args.listen);
    config.metrics_listen = args.metrics_listen;
    config.public_url = args.public_url;
    config.cache_max_bytes = args.cache_max;
    config.new_keys = args.new_keys;
    config.script_memory_budget = args
        .script_memory
        .map(|b| usize::try_from(b).unwrap_or(usize::MAX));
    // An empty SLUICE_DATABASE_URL (`${DATABASE_URL:-}` in a compose
    // file) is no URL.
    let database_url = args.database_url.filter(|u| !u.trim().is_empty());
    config.store = match (args.store.as_str(), database_url) {
        ("sled", None) => sluice_server::StoreKind::Sled,
        ("redb", None) => sluice_server::StoreKind::Redb,
        ("postgres" | "auto", Some(url)) => sluice_server::StoreKind::Postgres(url),
        ("postgres", None) => {
            anyhow::bail!("--store postgres needs --database-url (or SLUICE_DATABASE_URL)")
        }
        (kind, Some(_)) => anyhow::bail!(
            "--database-url is for --store postgres; --store {kind} keeps its database in the data directory"
        ),
        _ => sluice_server::StoreKind::detect(&args.data).unwrap_or_default(),
    };
    if args.standby && !matches!(config.store, sluice_server::StoreKind::Postgres(_)) {
        anyhow::bail!(
            "--standby waits for a store another server holds: it needs --store postgres and --database-url (an embedded store in the data directory is this server's alone)"
        );
    }
    config.standby = args.standby;
    if let Some(dir) = args.backup_dir {
        if matches!(config.store, sluice_server::StoreKind::Postgres(_)) {
            anyhow::bail!(
                "--backup-dir backs up a sled or redb store; back a PostgreSQL store up with PostgreSQL's own tools (pg_dump, base backups)"
            );
        }
        let dir = absolute(&dir)?;
        // Made when the first backup runs; what is there must be a folder.
        if dir.exists() && !dir.is_dir() {
            anyhow::bail!(
                "--backup-dir {} is not a folder: give a folder (made if missing) to keep backups in",
                dir.display()
            );
        }
        let backup = sluice_server::backup::BackupConfig {
            dir,
            every: args.backup_every,
            keep: usize::try_from(args.backup_keep).unwrap_or(usize::MAX),
        };
        // Neither inside the other, as the file system reaches them
        // (links, `..`): the pruning would delete a data directory inside.
        backup.check(&args.data)?;
        config.backup = Some(backup);
    }
    if let Some(file) = &args.limits {
        let (limits, with_variables) = limits_from_file(file)?;
        for env in with_variables {
            writeln!(
                out,
                "note: {} gives environment `{env}` variables, which serve does not apply: PUT /environment-variables sets a server's",
                file.display()
            )?;
        }
        config.env_limits = limits;
    }
    // Connections, scripts' requests, webhooks and the store all take
    // file descriptors: use all the process may have.
    let open_files = raise_open_files_limit();
    config.max_connections = match args.max_connections {
        Some(n) => {
            if open_files.is_some_and(|limit| n >= limit) {
                writeln!(
                    out,
                    "note: --max-connections {n} is not below the open-file limit ({}): the server may run out of file descriptors for scripts' requests and the store first",
                    open_files.unwrap_or_default()
                )?;
            }
            usize::try_from(n).unwrap_or(usize::MAX)
        }
        None => open_files.map_or(10_000, |limit| {
            usize::try_from(limit / 2)
                .unwrap_or(usize::MAX)
                .clamp(16, 10_000)
        }),
    };
    config.max_async_actions = usize::try_from(args.max_async_actions).unwrap_or(usize::MAX);
    config.max_pending_upload_bytes =
        usize::try_from(args.max_pending_uploads).unwrap_or(usize::MAX);
    config.max_async_action_bytes =
        usize::try_from(args.max_async_action_bytes).unwrap_or(usize::MAX);
    config.webhook_outbox_max_bytes = args.max_webhook_outbox;
    config.schedule_time_scale = args.schedule_time_scale.max(1);
    config.sync_slots = args.sync_slots.max(1);
    config.keep_deployments = usize::try_from(args.keep_deploys).unwrap_or(usize::MAX);
    config.webhook_retry_base = std::time::Duration::from_millis(args.webhook_retry_base_ms.max(1));
    // What happens while it serves, one line each, on stderr.
    config.events = sluice_server::EventLog::new(|line| {
        // Not `eprintln!`, which panics when stderr is gone.
        let _ = writeln!(
            std::io::stderr(),
            "{} {line}",
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
    });
    if args.demo {
        let cache = cache_dir(args.cache_dir)?;
        return crate::demo::run(
            config,
            master,
            providers,
            cache,
            args.cache_max,
            args.sdk,
            out,
        )
        .await;
    }
    // Kept until the server stops.
    let _mock = match &args.mock_upstream {
        Some(path) => {
            let fixture = sluice_project::mock::Fixture::from_file(path)?;
            let mock = sluice_project::mock::MockServer::start(fixture.handler())
                .await
                .context("cannot start the mock upstream")?;
            config.upstream_redirect = Some(url::Url::parse(&mock.url())?);
            writeln!(
                out,
                "Every request a script or /proxy makes goes to the mock of {} at {} (sluice serve --mock-upstream)",
                path.display(),
                mock.url()
            )?;
            Some(mock)
        }
        None => None,
    };
    writeln!(
        out,
        "Opening {} (each environment's deployed scripts are loaded; compiled again, seconds per integration, when their cache is gone, as after an upgrade) …",
        args.data.display()
    )?;
    if args.standby {
        writeln!(
            out,
            "Standby: answering 503 `standby` until the store is free, then taking over"
        )?;
    }
    out.flush()?;
    let initial = initial_keys();
    let (server, _) =
        sluice_server::Server::start_announcing(config, master, providers, &initial, |created| {
            for (env, key) in created {
                // A key the operator gave is not printed back (stdout
                // often goes to a journal).
                let given = initial
                    .iter()
                    .any(|(e, k)| e == env && k.as_deref() == Some(key.as_str()));
                if given {
                    writeln!(
                        out,
                        "Environment `{env}` has the secret key NANGO_SECRET_KEY_{} gives",
                        env.to_uppercase()
                    )?;
                } else {
                    writeln!(
                        out,
                        "Environment `{env}` has a new secret key (shown once): {key}"
                    )?;
                }
            }
            out.flush()
        })
        .await?;
    writeln!(out, "sluice is listening on {}", server.url())?;
    if let Some(at) = server.metrics_addr() {
        writeln!(out, "metrics: http://{at}/metrics")?;
    }
    out.flush()?;
    until_stopped(server, out).await
}

/// The next SIGHUP, when it is watched; never otherwise.
async fn hangup(hup: &mut Option<tokio::signal::unix::Signal>) {
    match hup {
        Some(h) => {
            h.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Raises the process's soft limit of open files to its hard limit and
/// returns the soft limit then in force (`None` when it cannot be read or
/// is unlimited).
fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: a valid rlimit, read above; a refusal keeps the old one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Whether SIGHUP is ignored in this process (`nohup`).
fn hangup_ignored() -> bool {
    // SAFETY: reads the current disposition only (a null new action).
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// How long a stop waits for the requests in flight before it lets go.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves until SIGTERM, SIGINT (Ctrl-C) or SIGHUP, then stops: no new
/// connections, the requests in flight answered (30 s at most; a second
/// signal stops at once), the database closed and flushed. Work cut short
/// (a sync's run, an async action) is taken up at the next start as after
/// a crash. A server whose store another server took over stops the same
/// way, with exit status 3. The exit status is returned.
pub(crate) async fn until_stopped(
    server: sluice_server::Server,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    // A closed terminal (SIGHUP) stops as SIGTERM does: by default it
    // would end the process without the last flush. Not when it is ignored
    // (`nohup`, a supervisor's choice): watching it would undo that.
    let mut hup = if hangup_ignored() {
        None
    } else {
        Some(signal(SignalKind::hangup()).context("cannot watch for SIGHUP")?)
    };
    // SIGUSR1: a backup now (`--backup-dir`), beside the serving.
    let mut usr1 = signal(SignalKind::user_defined1()).context("cannot watch for SIGUSR1")?;
    let mut asked = tokio::task::JoinSet::new();
    let store = server.app.store.clone();
    let mut status = 0;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hangup(&mut hup) => break,
            why = store.taken_over() => {
                let _ = writeln!(out, "sluice: {why}");
                status = 3;
                break;
            }
            _ = usr1.recv() => {
                while asked.try_join_next().is_some() {}
                let app = server.app.clone();
                asked.spawn(async move {
                    // Told on stderr, as a scheduled one is (or that one
                    // is being taken already).
                    let _ = sluice_server::backup::back_up_and_tell(&app).await;
                });
            }
        }
    }
    // A backup asked for is given up: the stop does not wait for it (on
    // sled it holds the writes back).
    asked.shutdown().await;
    // Said where it can be (a closed stdout does not stop the stop).
    let _ = writeln!(
        out,
        "Stopping: answering the requests in flight (at most {} s; signal again to stop at once) …",
        STOP_GRACE.as_secs()
    );
    let _ = out.flush();
    let stopped = tokio::select! {
        r = tokio::time::timeout(STOP_GRACE, server.stop()) => r.is_ok(),
        _ = term.recv() => false,
        _ = int.recv() => false,
        _ = hangup(&mut hup) => false,
    };
    if status != 0 {
        // Nothing can be flushed: the store takes no more writes from
        // this process (what it acknowledged durable is in it).
        let _ = writeln!(out, "sluice stopped: the store is another server's now");
        let _ = out.flush();
        return Ok(status);
    }
    // Stopped or not, what was acknowledged is made durable before exit.
    let flushed = matches!(
        tokio::time::timeout(std::time::Duration::from_secs(10), store.flush()).await,
        Ok(Ok(()))
    );
    let _ = match (stopped, flushed) {
        (true, true) => writeln!(out, "sluice stopped"),
        (false, true) => writeln!(
            out,
            "sluice stopped without waiting for the rest: what was cut short is taken up at the next start"
        ),
        (_, false) => writeln!(
            out,
            "sluice stopped, but the database could not be flushed: the last history and logs may be missing"
        ),
    };
    let _ = out.flush();
    if !flushed {
        // A store whose writes fail (a full disk) may never finish the
        // write in hand, and closing it waits for that: the process ends
        // here instead (what was acknowledged durable is on disk; the
        // unflushed history and logs may not be, as printed above).
        std::process::exit(1);
    }
    Ok(0)
}

/// The environments a first start creates, each with the key its
/// `NANGO_SECRET_KEY_<ENV>` gives (generated when unset).
pub(crate) fn initial_keys() -> Vec<(String, Option<String>)> {
    ["dev", "prod"]
        .iter()
        .map(|env| {
            let var = format!("NANGO_SECRET_KEY_{}", env.to_uppercase());
            (
                env.to_string(),
                std::env::var(var).ok().filter(|k| !k.is_empty()),
            )
        })
        .collect()
}

fn json_argument(flag: &str, value: &str) -> anyhow::Result<Value> {
    let text = match value.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("{flag}: cannot read {path}"))?
        }
        None => value.to_string(),
    };
    serde_json::from_str(&text).with_context(|| format!("{flag} is not valid JSON"))
}

fn parse_date(flag: &str, value: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(value) {
        return Ok(d.with_timezone(&Utc));
    }
    // A date and time without a zone, as `new Date()` takes it: in the
    // time zone scripts run in (UTC).
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(value, format) {
            return Ok(t.and_utc());
        }
    }
    // Minutes with a zone (`2024-01-02T10:30Z`, `…T10:30+02:00`).
    if let Ok(d) = DateTime::parse_from_str(value, "%Y-%m-%dT%H:%M%#z")
        .or_else(|_| DateTime::parse_from_str(&value.replace('Z', "+00:00"), "%Y-%m-%dT%H:%M%#z"))
    {
        return Ok(d.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    bail!(
        "{flag} `{value}` is not a date: expected RFC 3339, YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS] (UTC)"
    )
}

/// `127.0.0.1:3003`, `[::1]:3003` or `localhost:3003` (its first address).
fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|e| format!("`{text}` is not an address and port (e.g. 127.0.0.1:3003): {e}"))?
        .next()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}

/// A size in bytes: digits, optionally followed by K, M or G (powers of
/// 1024; `B`/`iB` suffixes accepted), e.g. `10G`, `512MiB`.
/// `--backup-every`: a number with `m`, `h` or `d`, at least a minute.
fn parse_every(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: give a number with m, h or d (6h)"))?;
    let secs = match unit {
        "m" | "min" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit is m, h or d (6h)")),
    };
    let every = n.saturating_mul(secs);
    if every < 60 {
        return Err(format!("`{text}`: at least a minute"));
    }
    if every > 366 * 86_400 {
        return Err(format!("`{text}`: at most a year"));
    }
    Ok(std::time::Duration::from_secs(every))
}

/// `path` made absolute (against the current folder), not resolved.
fn absolute(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))
}

fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        Some((i, 'T' | 't')) => (&t[..i], 40),
        _ => (t, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("`{text}` is not a size (e.g. 10G, 512M, 1000000)"))
}

/// The cache directory: `given` (--cache-dir) or the default, created
/// when missing and refused unless only this user can write it
/// (`Runtime::prepare_cache_dir`): what it holds is run as native code.
fn cache_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(dir) => dir,
        None => default_cache_dir(
            std::env::var_os("XDG_CACHE_HOME"),
            std::env::var_os("HOME"),
            &std::env::temp_dir(),
        )?,
    };
    Runtime::prepare_cache_dir(&dir)?;
    Ok(dir)
}

/// `$XDG_CACHE_HOME/sluice` or `~/.cache/sluice` (an empty or relative
/// value is ignored, as the XDG spec says); with neither (`env -i`,
/// service managers, CI runners), `sluice-cache-<uid>` in the temporary
/// directory `tmp`, this user's alone ([`per_user_temp_cache`]).
fn default_cache_dir(
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
    tmp: &std::path::Path,
) -> anyhow::Result<PathBuf> {
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(dir) = absolute(xdg_cache_home) {
        return Ok(dir.join("sluice"));
    }
    match absolute(home) {
        Some(home) => Ok(home.join(".cache").join("sluice")),
        None => per_user_temp_cache(tmp),
    }
}

/// `<tmp>/sluice-cache-<uid>`, made by this process (mode 0700) or
/// refused: its name is known in advance, so in a directory every user
/// can write another user may have made it first, or put a symbolic link
/// there, to have sluice load their code as this user's.
fn per_user_temp_cache(tmp: &std::path::Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let dir = tmp.join(format!("sluice-cache-{me}"));
    let refuse = |problem: String| {
        anyhow::anyhow!(
            "HOME and XDG_CACHE_HOME are unset, and the cache directory sluice uses then, {}, is not safe: {problem}; set XDG_CACHE_HOME or give --cache-dir (SLUICE_CACHE_DIR)",
            dir.display()
        )
    };
    let parent = std::fs::metadata(tmp)
        .with_context(|| format!("cannot read the temporary directory {}", tmp.display()))?;
    // In a directory others can write, only the sticky bit (as on /tmp)
    // keeps them from renaming this user's directory away.
    if parent.mode() & 0o002 != 0 && parent.mode() & 0o1000 == 0 {
        return Err(refuse(format!(
            "{} can be written by every user and is not sticky (mode {:o})",
            tmp.display(),
            parent.mode() & 0o7777
        )));
    }
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(refuse(format!("it cannot be created ({e})"))),
    }
    let meta = std::fs::symlink_metadata(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?;
    let mode = meta.mode() & 0o7777;
    if meta.file_type().is_symlink() {
        Err(refuse("it is a symbolic link".into()))
    } else if !meta.is_dir() {
        Err(refuse("it is not a directory".into()))
    } else if meta.uid() != me {
        Err(refuse(format!(
            "it belongs to uid {}, not to this user (uid {me})",
            meta.uid()
        )))
    } else if mode & 0o077 != 0 {
        Err(refuse(format!(
            "other users can use it (mode {mode:o}, not 700)"
        )))
    } else {
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::{
        cache_dir, default_cache_dir, dotenv, is_loopback, parse_date, parse_size,
        private_data_dir, shown_host,
    };
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    use std::path::{Path, PathBuf};

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// This process's effective uid, as the kernel gives it to a new file.
    fn my_uid(scratch: &Path) -> u32 {
        std::fs::metadata(scratch).unwrap().uid()
    }

    #[test]
    fn without_home_the_cache_is_a_private_directory_of_this_user() {
        let tmp = tempfile::tempdir().unwrap();
        // Shared, as /tmp is.
        chmod(tmp.path(), 0o1777);
        let me = my_uid(tmp.path());
        let dir = default_cache_dir(None, None, tmp.path()).unwrap();
        assert_eq!(dir, tmp.path().join(format!("sluice-cache-{me}")));
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.uid(), me);
        assert_eq!(meta.mode() & 0o7777, 0o700);
        // Its own, made before, is used again; empty or relative
        // variables are as good as unset.
        let again = default_cache_dir(Some("".into()), Some("home".into()), tmp.path()).unwrap();
        assert_eq!(again, dir);
        assert_eq!(
            default_cache_dir(Some("/xdg".into()), Some("/home/u".into()), tmp.path()).unwrap(),
            PathBuf::from("/xdg/sluice")
        );
        assert_eq!(
            default_cache_dir(None, Some("/home/u".into()), tmp.path()).unwrap(),
            PathBuf::from("/home/u/.cache/sluice")
        );
    }

    #[test]
    fn a_temp_cache_directory_made_by_another_is_refused() {
        let refused = |plant: &dyn Fn(&Path, &Path)| {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp
                .path()
                .join(format!("sluice-cache-{}", my_uid(tmp.path())));
            plant(tmp.path(), &dir);
            chmod(tmp.path(), 0o1777);
            let e = default_cache_dir(None, None, tmp.path())
                .unwrap_err()
                .to_string();
            assert!(e.contains(&dir.display().to_string()), "{e}");
            assert!(
                e.contains("set XDG_CACHE_HOME or give --cache-dir (SLUICE_CACHE_DIR)"),
                "{e}"
            );
            e
        };
        let e = refused(&|_, dir| {
            std::fs::create_dir(dir).unwrap();
            chmod(dir, 0o777);
        });
        assert!(
            e.contains("other users can use it (mode 777, not 700)"),
            "{e}"
        );
        // A link to a private directory of this user's still points where
        // another user chose.
        let e = refused(&|tmp, dir| {
            let elsewhere = tmp.join("elsewhere");
            std::fs::create_dir(&elsewhere).unwrap();
            chmod(&elsewhere, 0o700);
            std::os::unix::fs::symlink(&elsewhere, dir).unwrap();
        });
        assert!(e.contains("it is a symbolic link"), "{e}");
        let e = refused(&|_, dir| std::fs::write(dir, "").unwrap());
        assert!(e.contains("it is not a directory"), "{e}");
        // Root can make one that belongs to another user.
        let probe = tempfile::tempdir().unwrap();
        if my_uid(probe.path()) == 0 {
            let e = refused(&|_, dir| {
                std::fs::create_dir(dir).unwrap();
                chmod(dir, 0o700);
                std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
            });
            assert!(
                e.contains("it belongs to uid 65534, not to this user (uid 0)"),
                "{e}"
            );
        }
        // A temporary directory anyone can write and that is not sticky
        // lets another user rename this user's away.
        let tmp = tempfile::tempdir().unwrap();
        chmod(tmp.path(), 0o777);
        let e = default_cache_dir(None, None, tmp.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("can be written by every user and is not sticky"),
            "{e}"
        );
    }

    #[test]
    fn a_cache_directory_others_can_write_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o777);
        let e = cache_dir(Some(dir.clone())).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "refusing the cache directory {}: other users can write it (mode 777)",
                dir.display()
            )),
            "{e}"
        );
        assert!(e.contains(&format!("chmod 700 {}", dir.display())), "{e}");
        chmod(&dir, 0o700);
        assert_eq!(cache_dir(Some(dir.clone())).unwrap(), dir);
        // A new one is made private.
        let new = scratch.path().join("new").join("cache");
        cache_dir(Some(new.clone())).unwrap();
        assert_eq!(std::fs::metadata(&new).unwrap().mode() & 0o777, 0o700);
    }

    /// What `serve` does with `--data` before it opens the store: the
    /// data directory checked, then the runtime made on `<data>/cache`.
    fn serve_checks(data: &Path) -> anyhow::Result<String> {
        let mut err = Vec::new();
        private_data_dir(data, &mut err)?;
        let mut config = sluice_runtime::RuntimeConfig::new(data.join("cache"));
        config.pooling = false;
        config.max_concurrent = 1;
        sluice_runtime::Runtime::new(config)?;
        Ok(String::from_utf8(err).unwrap())
    }

    #[test]
    fn a_data_directory_others_can_write_is_reported_and_its_cache_kept_private() {
        let scratch = tempfile::tempdir().unwrap();
        let data = scratch.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // A Kubernetes emptyDir.
        chmod(&data, 0o777);
        let warned = serve_checks(&data).unwrap();
        assert!(
            warned.contains(&format!(
                "warning: the data directory {} can be written by other users (mode 777)",
                data.display()
            )),
            "{warned}"
        );
        let cache = data.join("cache");
        assert_eq!(std::fs::metadata(&cache).unwrap().mode() & 0o7777, 0o700);
        // `cache` itself stays strictly checked.
        chmod(&cache, 0o777);
        let e = serve_checks(&data).unwrap_err().to_string();
        assert!(
            e.contains(&format!("refusing the cache directory {}", cache.display())),
            "{e}"
        );
        chmod(&cache, 0o700);
        // A master key file others can write is refused.
        let key = data.join("master.key");
        std::fs::write(&key, "key").unwrap();
        chmod(&key, 0o666);
        let e = serve_checks(&data).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "the master key file {} can be written by other users (mode 666)",
                key.display()
            )),
            "{e}"
        );
        chmod(&key, 0o600);
        // Readable by others it is only reported (as before).
        chmod(&data, 0o755);
        let warned = serve_checks(&data).unwrap();
        assert!(warned.contains("can be read by other users"), "{warned}");
        // Another user's (a volume of uid 1000, mode 2775, served as
        // root) is reported too.
        if my_uid(scratch.path()) == 0 {
            std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
            chmod(&data, 0o2775);
            let warned = serve_checks(&data).unwrap();
            assert!(
                warned.contains("belongs to uid 65534 (this user is uid 0)"),
                "{warned}"
            );
        }
    }

    #[test]
    fn a_servers_user_and_password_are_not_shown() {
        let host = "https://ci:p%40ss@nango.example.com";
        assert_eq!(shown_host(host), "https://***@nango.example.com/");
        assert_eq!(shown_host("http://127.0.0.1:3003"), "http://127.0.0.1:3003");
        assert_eq!(shown_host("ci:secret@host:3003"), "***@host:3003");
        assert_eq!(shown_host("ftp://ci:secret@host"), "ftp://***@host/");
    }

    #[test]
    fn dates_take_the_forms_new_date_reads_in_utc() {
        for (text, at) in [
            ("2024-01-02", "2024-01-02T00:00:00+00:00"),
            ("2024-01-02T10:30:00+02:00", "2024-01-02T08:30:00+00:00"),
            ("2024-01-02T10:30:00", "2024-01-02T10:30:00+00:00"),
            ("2024-01-02 10:30:05.250", "2024-01-02T10:30:05.250+00:00"),
            ("2024-01-02 10:30", "2024-01-02T10:30:00+00:00"),
            ("2024-01-02T10:30Z", "2024-01-02T10:30:00+00:00"),
            ("2024-01-02T10:30+02:00", "2024-01-02T08:30:00+00:00"),
        ] {
            assert_eq!(parse_date("-l", text).unwrap().to_rfc3339(), at, "{text}");
        }
        for bad in ["yesterday", "2024-13-01", "2024-01-02 25:00"] {
            let e = parse_date("-l", bad).unwrap_err().to_string();
            assert!(e.contains(&format!("-l `{bad}` is not a date")), "{e}");
        }
    }

    /// Plain http:// is warned of unless it stays on this machine.
    #[test]
    fn loopback_hosts_are_this_machine_only() {
        for url in [
            "http://127.0.0.1:3003",
            "http://127.1.2.3",
            "http://localhost:3003",
            "http://LOCALHOST.",
            "http://api.localhost",
            "http://[::1]:3003",
            "http://[::ffff:127.0.0.1]",
        ] {
            assert!(is_loopback(&url::Url::parse(url).unwrap()), "{url}");
        }
        for url in [
            "http://10.0.0.2:3003",
            "http://0.0.0.0:3003",
            "http://nango.example.com",
            "http://localhost.example.com",
            "http://[::]",
        ] {
            assert!(!is_loopback(&url::Url::parse(url).unwrap()), "{url}");
        }
    }

    #[test]
    fn dotenv_reads_quotes_and_drops_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(
            &path,
            "# a comment\nA=plain # the key\nexport B=\"quoted # kept\" # dropped\nC='single'\nD=no#comment\nE=\nF=\"x\\\"y\"\nG=tab\t# c\n",
        )
        .unwrap();
        let env = dotenv(&path).unwrap();
        // One it cannot read is an error naming it, not nothing.
        let bad = dir.path().join("bad.env");
        std::fs::write(&bad, b"# r\xe9sum\xe9\nNANGO_HOSTPORT=http://127.0.0.1:1\n").unwrap();
        let err = dotenv(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.env"), "{err}");
        assert!(dotenv(&dir.path().join("absent.env")).unwrap().is_empty());
        // A cloned project's `.env -> /dev/zero` is not read for ever.
        #[cfg(unix)]
        {
            let zero = dir.path().join("zero.env");
            std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
            let err = dotenv(&zero).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "cannot read {}: not a regular file (it is a device)",
                    zero.display()
                )
            );
        }
        assert_eq!(env["A"], "plain");
        assert_eq!(env["B"], "quoted # kept");
        assert_eq!(env["C"], "single");
        assert_eq!(env["D"], "no#comment");
        assert_eq!(env["E"], "");
        assert_eq!(env["F"], "x\"y");
        assert_eq!(env["G"], "tab");
        assert_eq!(env.len(), 7);
    }

    #[test]
    fn sizes_take_binary_suffixes_and_reject_the_rest() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4kB"), Ok(4096));
        assert!(
            parse_size("ten gigabytes")
                .unwrap_err()
                .contains("not a size")
        );
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err(), "overflow is refused");
    }
}
