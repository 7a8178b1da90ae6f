//! The engine: compile once, cache on disk, instantiate per execution.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings;
use crate::host::HostState;
use crate::limits::RuntimeConfig;

/// Which world a component implements, read from its exports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ScriptKind {
    Sync,
    Action,
    OnEvent,
}

impl std::fmt::Display for ScriptKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScriptKind::Sync => "sync",
            ScriptKind::Action => "action",
            ScriptKind::OnEvent => "on-event",
        })
    }
}

/// Errors loading a component.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read component {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid WebAssembly component: {message}")]
    Invalid { path: String, message: String },
    #[error(
        "{path} does not implement a nango:scripts world: it exports none of `fetch-data`, `run-action`, `on-event` (a Rust script marks its function with `#[sync]`, `#[action]` or `#[on_event]`)"
    )]
    NoEntryPoint { path: String },
    #[error(
        "{path} is a bundle of several scripts (it exports `fetch-data`, `run-action` and `on-event`): run one of them by its name in its project (`sluice dryrun <script> <connection> --dir <project>`)"
    )]
    Bundle { path: String },
    #[error("{path} is not a bundle of scripts: it does not export `{export}`")]
    NotABundle { path: String, export: &'static str },
    #[error("{path} cannot be linked against sluice's host: {message}")]
    Link { path: String, message: String },
    #[error("cannot write the component cache in {dir}: {source}")]
    Cache { dir: String, source: std::io::Error },
    /// A cache directory another user could write: what it holds is
    /// loaded as native code.
    #[error(
        "refusing the cache directory {dir}: {problem}, and what it holds is run as native code: {fix}"
    )]
    UnsafeCache {
        dir: String,
        problem: String,
        fix: String,
    },
    #[error("cannot configure the engine: {0}")]
    Engine(String),
}

/// A loaded script, ready to instantiate many times.
pub struct Script {
    pub(crate) kind: ScriptKind,
    pub(crate) pre: ScriptPre,
    /// Where it came from, for messages.
    pub(crate) origin: String,
    /// Hex SHA-256 of the component bytes.
    pub(crate) digest: String,
}

pub(crate) enum ScriptPre {
    Sync(bindings::SyncPre<HostState>),
    Action(bindings::ActionPre<HostState>),
    OnEvent(bindings::OnEventPre<HostState>),
    /// A TypeScript bundle's `run-test` (`sluice test` on zero-yaml projects).
    Bundle(bindings::BundlePre<HostState>),
}

impl Script {
    pub fn kind(&self) -> ScriptKind {
        self.kind
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Hex SHA-256 of the component bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script")
            .field("kind", &self.kind)
            .field("origin", &self.origin)
            .finish()
    }
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) config: RuntimeConfig,
    cache_key: String,
    cache: CacheDir,
    stop_ticker: Arc<AtomicBool>,
    pub(crate) memory: Arc<MemoryBudget>,
}

/// The linear memory all executions hold, and each environment's (by
/// name), against [`RuntimeConfig::memory_budget_bytes`].
pub(crate) struct MemoryBudget {
    pub(crate) budget: usize,
    in_use: std::sync::atomic::AtomicUsize,
    by_env:
        std::sync::Mutex<std::collections::HashMap<String, Arc<std::sync::atomic::AtomicUsize>>>,
}

impl MemoryBudget {
    fn new(budget: usize) -> Self {
        Self {
            budget,
            in_use: Default::default(),
            by_env: Default::default(),
        }
    }

    pub(crate) fn env_counter(&self, env: &str) -> Arc<std::sync::atomic::AtomicUsize> {
        self.by_env
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(env.to_string())
            .or_default()
            .clone()
    }

    /// Takes `bytes` for an execution of the environment whose counter is
    /// `env`; `false` (nothing taken) when that passes its share or the
    /// whole budget.
    pub(crate) fn take(&self, env: &std::sync::atomic::AtomicUsize, bytes: usize) -> bool {
        let share = self.budget - self.budget / 4;
        let fits =
            |limit: usize| move |used: usize| used.checked_add(bytes).filter(|n| *n <= limit);
        if env
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, fits(share))
            .is_err()
        {
            return false;
        }
        if self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, fits(self.budget))
            .is_err()
        {
            env.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub(crate) fn give_back(&self, env: &std::sync::atomic::AtomicUsize, bytes: usize) {
        env.fetch_sub(bytes, Ordering::AcqRel);
        self.in_use.fetch_sub(bytes, Ordering::AcqRel);
    }
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// The sandbox: one wasmtime engine, its linker and its component cache.
/// Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

impl Runtime {
    /// A runtime whose component cache is `config.cache_dir`, refused
    /// unless only this user can write it and its `functions/` (a folder
    /// in that others can write is removed), and held open from then on
    /// ([`CacheDir`]): what happens to its name, or the folders above
    /// it, later changes nothing.
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let cache = CacheDir::open(&config.cache_dir)?;
        let engine = Engine::new(&engine_config(&config, cache.root.join(FUNCTIONS))).map_err(|e| {
            let text = format!("{e:#}");
            // The instance pool reserves its address space up front.
            let hint = if text.contains("mmap") || text.contains("reserve") {
                " (the sandbox reserves terabytes of address space, not memory: is virtual memory limited, `ulimit -v`?)"
            } else {
                ""
            };
            LoadError::Engine(format!("{text}{hint}"))
        })?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        bindings::add_to_linker(&mut linker).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        crate::host::connection::add_trigger_action(&mut linker)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;

        let mut hasher = Sha256::new();
        std::hash::Hash::hash(
            &engine.precompile_compatibility_hash(),
            &mut HashWriter(&mut hasher),
        );
        let cache_key = hex(&hasher.finalize()[..8]);

        let stop_ticker = Arc::new(AtomicBool::new(false));
        if !config.meter_fuel {
            spawn_epoch_ticker(engine.clone(), config.epoch_tick, stop_ticker.clone());
        }
        let memory = Arc::new(MemoryBudget::new(config.memory_budget_bytes));
        // A bound lowered since the last run applies now, not at the next
        // compile.
        evict_least_recent(&cache.root, config.cache_max_bytes, Path::new(""));
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                config,
                cache_key,
                cache,
                stop_ticker,
                memory,
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Makes `dir` fit to hold a cache of precompiled components, which
    /// are loaded as native code unchecked: created, mode 0700, when
    /// missing; refused when it belongs to another user than this
    /// process's (effective) one, or when its group or others can write
    /// it, or when a folder above it lets another user put a folder of
    /// their own at its name ([`safe_ancestors`]). A caller that puts
    /// other files in the cache (the TypeScript SDK's install), which are
    /// reached by their path, calls it before [`Runtime::new`] (which
    /// holds the directory open, and needs the folders above checked only
    /// where it cannot, without /proc).
    pub fn prepare_cache_dir(dir: &Path) -> Result<(), LoadError> {
        private_dir(dir, &dir.display().to_string())?;
        safe_ancestors(dir)
    }

    /// Loads a component file: from the precompiled cache when this engine
    /// compiled the same bytes before, otherwise compiled and cached.
    pub fn load_file(&self, path: &Path) -> Result<Script, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.load_bytes(&bytes, &path.display().to_string())
    }

    /// Like [`Runtime::load_file`] for bytes already in memory; `origin` names
    /// them in errors.
    pub fn load_bytes(&self, bytes: &[u8], origin: &str) -> Result<Script, LoadError> {
        let digest = hex(&Sha256::digest(bytes));
        let component = self.compiled(bytes, &digest, origin)?;
        self.prepare(component, origin, digest)
    }

    /// Loads a bundle (the `bundle` world: several scripts of one integration
    /// in one component) and gives one [`Script`] per `(name, kind)`; they
    /// share the compiled component. An execution of one of them must carry
    /// its name, which the bundle dispatches on.
    pub fn load_bundle_file(
        &self,
        path: &Path,
        scripts: &[(String, ScriptKind)],
    ) -> Result<Vec<Script>, LoadError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: origin.clone(),
            source,
        })?;
        self.load_bundle_bytes(&bytes, &origin, scripts)
    }

    /// Like [`Runtime::load_bundle_file`] for bytes already in memory.
    pub fn load_bundle_bytes(
        &self,
        bytes: &[u8],
        origin: &str,
        scripts: &[(String, ScriptKind)],
    ) -> Result<Vec<Script>, LoadError> {
        let origin = origin.to_string();
        let digest = hex(&Sha256::digest(bytes));
        let component = self.compiled(bytes, &digest, &origin)?;
        let exports = export_names(&self.inner.engine, &component);
        for export in ENTRY_POINTS {
            if !exports.iter().any(|e| e == export) {
                return Err(LoadError::NotABundle {
                    path: origin,
                    export,
                });
            }
        }
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| link_error(&origin, e))?;
        scripts
            .iter()
            .map(|(name, kind)| {
                Ok(Script {
                    kind: *kind,
                    pre: typed_pre(*kind, instance_pre.clone(), &origin)?,
                    origin: format!("{origin}#{name}"),
                    digest: digest.clone(),
                })
            })
            .collect()
    }

    /// The test harness of a TypeScript bundle's script: the same compiled
    /// component, called through its `run-test` export
    /// ([`crate::Call::Test`]). Fails for components without that export.
    pub fn test_harness(&self, script: &Script) -> Result<Script, LoadError> {
        let instance_pre = match &script.pre {
            ScriptPre::Sync(p) => p.instance_pre().clone(),
            ScriptPre::Action(p) => p.instance_pre().clone(),
            ScriptPre::OnEvent(p) => p.instance_pre().clone(),
            ScriptPre::Bundle(p) => p.instance_pre().clone(),
        };
        let pre =
            bindings::BundlePre::new(instance_pre).map_err(|e| link_error(&script.origin, e))?;
        Ok(Script {
            kind: ScriptKind::Action,
            pre: ScriptPre::Bundle(pre),
            origin: script.origin.clone(),
            digest: script.digest.clone(),
        })
    }

    /// Whether these component bytes are precompiled for this engine, so
    /// loading them will not compile.
    pub fn is_precompiled(&self, bytes: &[u8]) -> bool {
        self.cached_at(&hex(&Sha256::digest(bytes))).exists()
    }

    /// The path of the precompiled artifact for these component bytes.
    pub fn cache_path(&self, digest: &str) -> PathBuf {
        self.inner.config.cache_dir.join(self.artifact_name(digest))
    }

    fn artifact_name(&self, digest: &str) -> String {
        format!("{digest}-{}.cwasm", self.inner.cache_key)
    }

    /// The artifact for `digest` in the cache directory held open.
    fn cached_at(&self, digest: &str) -> PathBuf {
        self.inner.cache.root.join(self.artifact_name(digest))
    }

    fn compiled(&self, bytes: &[u8], digest: &str, origin: &str) -> Result<Component, LoadError> {
        let engine = &self.inner.engine;
        let cached = self.cached_at(digest);
        match load_artifact(engine, &cached) {
            Ok(Some(c)) => return Ok(c),
            // Not loadable, not this user's alone, or a link: compiled
            // again, and replaced.
            Ok(None) => {
                let _ = std::fs::remove_file(&cached);
            }
            Err(_) => {}
        }
        if is_core_module(bytes) {
            return Err(LoadError::Invalid {
                path: origin.to_string(),
                message: "this is a core WebAssembly module, not a component (build for wasm32-wasip2 or run `wasm-tools component new`)".into(),
            });
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::Invalid {
                path: origin.to_string(),
                message: "it is not WebAssembly (it does not start with the `\\0asm` magic bytes)"
                    .into(),
            });
        }
        // Compiled straight to the artifact's bytes: a component built in
        // memory first would have its code published (copied, made
        // executable) only to be serialised and dropped.
        let serialized = engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Invalid {
                path: origin.to_string(),
                message: one_line(&format!("{e:#}")),
            })?;
        self.write_cache(&cached, &serialized)?;
        // Loaded from the file just written: its code is then mapped from
        // that file (pages the kernel may share and drop) instead of held in
        // anonymous memory for as long as the script lives — a project of
        // hundreds of componentize-js components otherwise keeps tens of
        // gigabytes resident.
        match load_artifact(engine, &cached) {
            Ok(Some(mapped)) => Ok(mapped),
            // SAFETY: the bytes were produced by this engine just now.
            _ => unsafe { Component::deserialize(engine, &serialized) }.map_err(|e| {
                LoadError::Invalid {
                    path: origin.to_string(),
                    message: one_line(&format!("{e:#}")),
                }
            }),
        }
    }

    fn write_cache(&self, path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
        let dir = &self.inner.cache.root;
        let err = |source| LoadError::Cache {
            dir: self.inner.config.cache_dir.display().to_string(),
            source,
        };
        // Made again if it was deleted since the start (when it is reached
        // by its path; the directory held open cannot be: writes then fail).
        create_private_dir(dir).map_err(err)?;
        // Two threads may compile the same component at once: each writes
        // its own file and renames it (the contents are the same, so
        // either may win).
        match write_whole(path, bytes) {
            Ok(()) => {
                evict_least_recent(dir, self.inner.config.cache_max_bytes, path);
                Ok(())
            }
            // Another writer (a thread, or another process of this user)
            // put the same artifact there first: nothing is lost.
            Err(_) if path.exists() => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    fn prepare(
        &self,
        component: Component,
        origin: &str,
        digest: String,
    ) -> Result<Script, LoadError> {
        let exports = export_names(&self.inner.engine, &component);
        let found: Vec<&str> = ENTRY_POINTS
            .into_iter()
            .filter(|e| exports.iter().any(|x| x == e))
            .collect();
        let kind = match found.as_slice() {
            ["fetch-data"] => ScriptKind::Sync,
            ["run-action"] => ScriptKind::Action,
            ["on-event"] => ScriptKind::OnEvent,
            [] => {
                return Err(LoadError::NoEntryPoint {
                    path: origin.to_string(),
                });
            }
            _ => {
                return Err(LoadError::Bundle {
                    path: origin.to_string(),
                });
            }
        };
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| link_error(origin, e))?;
        Ok(Script {
            kind,
            pre: typed_pre(kind, instance_pre, origin)?,
            origin: origin.to_string(),
            digest,
        })
    }
}

/// The export each script kind is called through.
const ENTRY_POINTS: [&str; 3] = ["fetch-data", "run-action", "on-event"];

fn export_names(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

fn link_error(origin: &str, e: wasmtime::Error) -> LoadError {
    let message = one_line(&format!("{e:#}"));
    // A component built against another version of the contract imports
    // interfaces this host does not have.
    let theirs = message.split("nango:scripts/").skip(1).find_map(|rest| {
        let version = rest.split_once('@')?.1;
        let version: String = version
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
            .collect();
        (version != CONTRACT_VERSION).then_some(version)
    });
    let message = match theirs {
        Some(version) => format!(
            "it was built against the contract nango:scripts@{version}, and this sluice provides nango:scripts@{CONTRACT_VERSION}: rebuild it with this sluice's SDK ({message})"
        ),
        None => message,
    };
    LoadError::Link {
        path: origin.to_string(),
        message,
    }
}

/// The version of the `nango:scripts` package this host implements (the
/// `package` line of `wit/nango.wit`; a test keeps them equal).
pub const CONTRACT_VERSION: &str = "0.2.0";

/// An error chain on one line (wasmtime's messages hold indented lists).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn typed_pre(
    kind: ScriptKind,
    instance_pre: wasmtime::component::InstancePre<HostState>,
    origin: &str,
) -> Result<ScriptPre, LoadError> {
    let link = |e| link_error(origin, e);
    Ok(match kind {
        ScriptKind::Sync => ScriptPre::Sync(bindings::SyncPre::new(instance_pre).map_err(link)?),
        ScriptKind::Action => {
            ScriptPre::Action(bindings::ActionPre::new(instance_pre).map_err(link)?)
        }
        ScriptKind::OnEvent => {
            ScriptPre::OnEvent(bindings::OnEventPre::new(instance_pre).map_err(link)?)
        }
    })
}

/// `functions` is where Cranelift's cache goes (`functions/` in the
/// cache directory held open).
fn engine_config(config: &RuntimeConfig, functions: PathBuf) -> Config {
    let mut c = Config::new();
    // A metered guest yields every `FUEL_YIELD_INTERVAL` units and its
    // deadline is checked then; only an unmetered one needs epoch checks,
    // which would otherwise cost a second counter check in every loop.
    c.epoch_interruption(!config.meter_fuel);
    c.consume_fuel(config.meter_fuel);
    // Scripts use no component-model concurrency; leaving it off keeps the
    // host↔guest call path short.
    c.concurrency_support(false);
    // A trap names the guest's frames by function name (`trap_message`);
    // the wasm offsets an address map would add are read by nothing, and
    // generating it costs every precompile a few per cent.
    c.generate_address_map(false);
    if config.perf_map {
        c.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    // Every componentize-js component carries the same engine: Cranelift's
    // per-function cache makes the second and later components mostly
    // cache hits (see `FunctionCache`).
    let _ = c.enable_incremental_compilation(Arc::new(FunctionCache::new(
        functions,
        config.cache_max_bytes / 4,
    )));
    if config.pooling {
        let slots = config.max_concurrent.max(1);
        // Each total is what `slots` instances of the largest component
        // allowed take: an environment's components as large as allowed
        // cannot use up a pool that other environments' executions, within
        // their share of the slots, need (the totals reserve address space
        // and a little bookkeeping, not memory). A componentize-js
        // component defines one memory and two tables in four core
        // instances; a Rust one fewer. A component past these is refused
        // when it is loaded (at deploy).
        const MEMORIES: u32 = 2;
        const TABLES: u32 = 8;
        const CORE_INSTANCES: u32 = 16;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .max_memories_per_component(MEMORIES)
            .total_memories(slots * MEMORIES)
            .total_tables(slots * TABLES)
            .max_tables_per_component(TABLES)
            .total_core_instances(slots * CORE_INSTANCES)
            .max_core_instances_per_component(CORE_INSTANCES)
            .total_stacks(slots)
            .max_memory_size(config.max_memory_bytes)
            // Keep the pages a fresh instance dirties first resident between
            // executions instead of faulting them in again (see PERF.md).
            .linear_memory_keep_resident(16 << 20)
            .table_keep_resident(1 << 20)
            .pagemap_scan(wasmtime::Enabled::Auto);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

/// Marks a cached artifact (opened) as just used, for
/// [`evict_least_recent`]. A failure only makes it look older.
fn touch(file: &std::fs::File) {
    let _ = file.set_modified(std::time::SystemTime::now());
}

/// Loads the artifact at `path` from the file opened there, not from its
/// name again: opened without following a symbolic link (`Err` for one,
/// or for no file), and `Ok(None)` unless what was opened is a regular
/// file of this user's alone ([`written_by_this_user`]) that wasmtime
/// takes for this engine's. A hit is touched.
fn load_artifact(engine: &Engine, path: &Path) -> std::io::Result<Option<Component>> {
    let file = open_entry(path)?;
    if !written_by_this_user(&file.metadata()?) {
        return Ok(None);
    }
    // SAFETY: wasmtime checks only that the file is an artifact of an
    // engine like this one (its header), not who made it: what makes it
    // this engine's own code is that only this user can write the cache.
    // `Runtime::new` refused a directory of another user or that others
    // can write, and holds it open (`CacheDir`): `path` is in that
    // directory whatever was done to its name since. The file opened is a
    // regular file of this user with one link that only it can write, so
    // sluice running as this user wrote it there, with
    // `Engine::precompile_component` of an engine with the same
    // compatibility hash (it is in the name), whole (a rename). A
    // truncated or stale file fails the header checks and is compiled
    // again.
    match unsafe { deserialize_opened(engine, &file) } {
        Ok(c) => {
            touch(&file);
            Ok(Some(c))
        }
        Err(_) => Ok(None),
    }
}

/// `Component::deserialize_file` of the file `file` is open on, not of a
/// name: through `/proc/self/fd/<fd>` on Linux, so its code stays mapped
/// from the file; elsewhere (or without /proc) its bytes read from `file`.
///
/// # Safety
///
/// As `Component::deserialize`: the file must hold what this engine's
/// `precompile_component` made.
unsafe fn deserialize_opened(engine: &Engine, file: &std::fs::File) -> wasmtime::Result<Component> {
    use std::io::Read as _;
    if let Some(via) = proc_fd_path(file) {
        // SAFETY: the caller's; `via` is `file` itself.
        return unsafe { Component::deserialize_file(engine, via) };
    }
    let mut bytes = Vec::new();
    (&mut &*file).read_to_end(&mut bytes)?;
    // SAFETY: the caller's.
    unsafe { Component::deserialize(engine, &bytes) }
}

/// `/proc/self/fd/<fd>` for an open file or directory, when it is that
/// very file (Linux, with /proc mounted): a name that reaches what was
/// opened whatever is renamed or put at its path since.
fn proc_fd_path(file: &std::fs::File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::MetadataExt as _;
    if !cfg!(target_os = "linux") {
        return None;
    }
    let via = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let (there, opened) = (std::fs::metadata(&via).ok()?, file.metadata().ok()?);
    (there.dev() == opened.dev() && there.ino() == opened.ino()).then_some(via)
}

/// Opens a cache file for reading without following a symbolic link at
/// its name (O_NOFOLLOW: `Err` for one) or blocking on a FIFO.
fn open_entry(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Deletes the least recently used precompiled components in `dir` until
/// the rest fit in `max_bytes`, keeping `keep` (the one just written). A
/// file another process has loaded stays readable by it (it is mapped);
/// one deleted under a concurrent evictor is simply gone already.
fn evict_least_recent(dir: &Path, max_bytes: u64, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            let used = meta.modified().ok()?;
            Some((used, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    if total <= max_bytes {
        return;
    }
    files.sort();
    for (_, len, path) in files {
        if total <= max_bytes {
            break;
        }
        if path == keep {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

/// Cranelift's incremental compilation cache on disk: one file per
/// compiled function, named by the SHA-256 of Cranelift's key (which covers
/// the function's body and the compiler's settings). A missing or
/// unreadable entry is a miss; a failed write is only a lost reuse.
/// Bounded: past `max_bytes` (a quarter of `--cache-max`) it is emptied
/// and fills again from the next compiles (its entries are never touched
/// on a hit, so there is no order to evict in; a compile after it is
/// emptied costs what a first one does).
#[derive(Debug)]
struct FunctionCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes in `dir` as far as known: counted up from each insert, the
    /// files there before this process added once measured (on a thread
    /// of its own: a large cache takes a while to walk).
    bytes: Arc<std::sync::Mutex<Option<u64>>>,
}

impl FunctionCache {
    fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Self {
            dir,
            max_bytes,
            bytes: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    /// Counts an entry of `len` bytes written, emptying the cache when it
    /// passes its bound: the folder is renamed aside at once and deleted
    /// on a thread of its own, so no compile waits for either.
    fn added(&self, len: u64) {
        let mut bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let first = bytes.is_none();
        let now = bytes.unwrap_or(0) + len;
        if now > self.max_bytes {
            *bytes = Some(0);
            drop(bytes);
            static EMPTIED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let aside = self.dir.with_extension(format!(
                "old-{}-{}",
                std::process::id(),
                EMPTIED.fetch_add(1, Ordering::Relaxed)
            ));
            if std::fs::rename(&self.dir, &aside).is_ok() {
                let _ = std::thread::Builder::new()
                    .name("sluice-cache-trim".into())
                    .spawn(move || {
                        let _ = std::fs::remove_dir_all(&aside);
                    });
            }
            return;
        }
        *bytes = Some(now);
        drop(bytes);
        if first {
            let (dir, counted) = (self.dir.clone(), self.bytes.clone());
            let _ = std::thread::Builder::new()
                .name("sluice-cache-size".into())
                .spawn(move || {
                    // What this process wrote meanwhile is counted already
                    // and measured again here: an overestimate, which only
                    // empties the cache a little early.
                    let there = dir_bytes(&dir);
                    let mut bytes = counted.lock().unwrap_or_else(|e| e.into_inner());
                    *bytes = Some(bytes.unwrap_or(0) + there);
                });
        }
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        let name = hex(&Sha256::digest(key));
        self.dir.join(&name[..2]).join(&name[2..])
    }
}

impl wasmtime::CacheStore for FunctionCache {
    /// An entry is Cranelift's machine code for a function, used as it is:
    /// one that is not this user's own, or that others could have written,
    /// is a miss (compiled again, and replaced).
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        use std::io::Read as _;
        // Not through a link (`Runtime::new` removed the folders of
        // `functions/` others could have put one in).
        let mut file = open_entry(&self.path(key)).ok()?;
        // Of the file opened, not of the name: nothing can be swapped in
        // between.
        let meta = file.metadata().ok()?;
        if !written_by_this_user(&meta) {
            return None;
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut bytes).ok()?;
        Some(bytes.into())
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let path = self.path(key);
        let Some(dir) = path.parent() else {
            return false;
        };
        // `functions/` too, when it was emptied (`added`).
        if create_private_dir(dir).is_err() {
            return false;
        }
        let len = value.len() as u64;
        let written = write_whole(&path, &value).is_ok();
        if written {
            self.added(len);
        }
        written
    }
}

/// Cranelift's function cache, in the component cache.
const FUNCTIONS: &str = "functions";

/// This process's effective uid.
fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The component cache directory as [`Runtime::new`] found it, held open:
/// every file in it is reached through the directory opened (`root`), so
/// another user who can rename it away or replace a folder above it (a
/// data directory others can write) cannot have sluice read or write in
/// a folder of theirs.
struct CacheDir {
    /// Kept open for `root`.
    _dir: std::fs::File,
    /// `/proc/self/fd/<fd>` of the directory opened; without /proc (or
    /// off Linux) its path, and the folders above it checked.
    root: PathBuf,
}

impl CacheDir {
    fn open(dir: &Path) -> Result<Self, LoadError> {
        let opened = private_dir(dir, &dir.display().to_string())?;
        let root = match proc_fd_path(&opened) {
            Some(root) => root,
            None => {
                safe_ancestors(dir)?;
                dir.to_path_buf()
            }
        };
        let shown = dir.join(FUNCTIONS);
        private_dir(&root.join(FUNCTIONS), &shown.display().to_string())?;
        sweep_function_dirs(&root.join(FUNCTIONS), &shown)?;
        Ok(Self { _dir: opened, root })
    }
}

/// Removes from `functions` (`shown` in messages) whatever is not a
/// folder of this user's that no one else can write: Cranelift's entries
/// are read from its folders (`functions/ab/…`), and a folder made under
/// umask 002, or planted, lets others put entries there. It is a cache:
/// what is removed is compiled again. One that cannot be removed refuses
/// the cache.
fn sweep_function_dirs(functions: &Path, shown: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let io = |source| LoadError::Cache {
        dir: shown.display().to_string(),
        source,
    };
    let me = geteuid();
    for entry in std::fs::read_dir(functions).map_err(io)? {
        let entry = entry.map_err(io)?;
        // Of the entry itself, not of a link's target.
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() && meta.uid() == me && meta.mode() & 0o022 == 0 {
            continue;
        }
        let path = entry.path();
        let removed = if meta.is_dir() {
            if meta.uid() == me {
                // Closed to others first, so nothing new is put in it
                // while it is emptied.
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
            }
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = removed {
            let named = shown.join(entry.file_name());
            return Err(LoadError::UnsafeCache {
                dir: named.display().to_string(),
                problem: format!(
                    "it is not a folder only this user can write (mode {:o}, uid {}), and it cannot be removed ({e})",
                    meta.mode() & 0o7777,
                    meta.uid()
                ),
                fix: format!("rm -rf {}", named.display()),
            });
        }
    }
    Ok(())
}

/// Refuses `dir` unless no one else can put another folder at its name:
/// each folder above its real path (as ssh's `safe_path`) belongs to root
/// or this user, and neither its group nor others can write it unless it
/// is sticky (as /tmp: the folder of this user's or root's below it,
/// which every folder on the way is, cannot be renamed by others). The
/// walk goes up to `/`: a folder of root's that only root can write is
/// still renamed away by whoever can write the folder it is in.
fn safe_ancestors(dir: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::MetadataExt as _;
    let shown = dir.display().to_string();
    let io = |source| LoadError::Cache {
        dir: shown.clone(),
        source,
    };
    let real = std::fs::canonicalize(dir).map_err(io)?;
    let me = geteuid();
    for above in real.ancestors().skip(1) {
        let meta = std::fs::metadata(above).map_err(io)?;
        let mode = meta.mode() & 0o7777;
        let problem = if meta.uid() != 0 && meta.uid() != me {
            Some(format!(
                "the folder {} above it belongs to uid {}, who could put a folder of their own in its place",
                above.display(),
                meta.uid()
            ))
        } else if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            Some(format!(
                "the folder {} above it can be written by other users (mode {mode:o}), who could put a folder of their own in its place",
                above.display()
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(LoadError::UnsafeCache {
                dir: shown,
                problem,
                fix: format!(
                    "chmod go-w {} (if it is yours), or use a cache directory under folders only you or root can write",
                    above.display()
                ),
            });
        }
    }
    Ok(())
}

/// Creates `dir` and the folders above it that are missing, each mode
/// 0700; one already there is left as it is.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates `dir` (mode 0700) when missing, opens it, and refuses it
/// unless what was opened is a directory of this process's effective
/// user that neither its group nor others can write: the invariant that
/// lets a cache's files be loaded as code. Opened through a symbolic link
/// (the user's choice of where the cache is); the folders above it are
/// [`safe_ancestors`]' to check. `shown` names it in errors.
fn private_dir(dir: &Path, shown: &str) -> Result<std::fs::File, LoadError> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let shown = shown.to_string();
    let io = |source| LoadError::Cache {
        dir: shown.clone(),
        source,
    };
    create_private_dir(dir).map_err(io)?;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(io)?;
    let meta = opened.metadata().map_err(io)?;
    if !meta.is_dir() {
        return Err(io(std::io::ErrorKind::NotADirectory.into()));
    }
    let me = geteuid();
    let mode = meta.mode() & 0o7777;
    let (problem, fix) = if meta.uid() != me {
        (
            format!(
                "it belongs to uid {}, not to this user (uid {me})",
                meta.uid()
            ),
            "use a directory of your own".to_string(),
        )
    } else if mode & 0o022 != 0 {
        (
            format!("other users can write it (mode {mode:o})"),
            format!("chmod 700 {shown}"),
        )
    } else {
        return Ok(opened);
    };
    Err(LoadError::UnsafeCache {
        dir: shown,
        problem,
        fix,
    })
}

/// Whether a cache file (its own metadata, not a link's target) is a
/// regular file of this process's effective user that neither its group
/// nor others can write, with one link (a hard link elsewhere would be a
/// name others may reach it by).
fn written_by_this_user(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    meta.is_file() && meta.uid() == geteuid() && meta.mode() & 0o022 == 0 && meta.nlink() == 1
}

/// Writes `bytes` whole to `path`, in a new file beside it renamed over
/// it: a reader never sees part of one. The new file is made with
/// O_CREAT|O_EXCL (`create_new`), which fails on anything already at its
/// name and, for a symbolic link, does not follow it (POSIX `open`; what
/// O_NOFOLLOW would add), and its name has a random part: nothing can be
/// made to be written through a name planted in advance.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::hash::{BuildHasher as _, Hasher as _};
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?
        .to_string_lossy()
        .into_owned();
    write_whole_via(path, bytes, || {
        // Seeded from the OS's random source once per thread, and new
        // for every call.
        let random = std::hash::RandomState::new().build_hasher().finish();
        path.with_file_name(format!(".{name}.{}-{random:016x}.tmp", std::process::id()))
    })
}

/// [`write_whole`] through the temporary names `names` gives, the next
/// one tried when something is at one already (a few times).
fn write_whole_via(
    path: &Path,
    bytes: &[u8],
    mut names: impl FnMut() -> PathBuf,
) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tries = 0;
    let (tmp, mut file) = loop {
        let tmp = names();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 4 => tries += 1,
            Err(e) => return Err(e),
        }
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The bytes of the files under `dir`, its subfolders included; 0 when it
/// cannot be read.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Ticks the engine's epoch until the runtime is dropped. Each tick lets a
/// busy guest yield and checks its deadline.
fn spawn_epoch_ticker(engine: Engine, tick: Duration, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .ok();
}

/// A core module starts with the same magic as a component but version 1.
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds a `Hash` value (the engine's compatibility hash) into SHA-256.
struct HashWriter<'a>(&'a mut Sha256);

impl std::hash::Hasher for HashWriter<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod contract_tests {
    use super::*;

    #[test]
    fn the_contract_version_is_the_wit_packages() {
        let wit = include_str!("../../../wit/nango.wit");
        assert!(
            wit.contains(&format!("package nango:scripts@{CONTRACT_VERSION};")),
            "wit/nango.wit's package is not nango:scripts@{CONTRACT_VERSION}"
        );
    }

    #[test]
    fn a_link_error_names_the_contract_a_component_was_built_against() {
        let e = wasmtime::Error::msg(
            "component imports instance `nango:scripts/http@0.1.0`, but a matching implementation was not found in the linker\n\nCaused by:\n    0: instance export `send` has the wrong type",
        );
        let message = link_error("old.wasm", e).to_string();
        assert!(
            message.contains("built against the contract nango:scripts@0.1.0, and this sluice provides nango:scripts@0.2.0: rebuild it with this sluice's SDK"),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
        let e = wasmtime::Error::msg("import `nango:scripts/http@0.2.0` has the wrong type");
        let message = link_error("new.wasm", e).to_string();
        assert!(!message.contains("built against"), "{message}");
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    /// The smallest component: the magic and the component layer's
    /// version, no sections. It compiles (to an artifact with no code) and
    /// fails to load as a script only after it is cached.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    fn config(dir: &Path) -> RuntimeConfig {
        let mut config = RuntimeConfig::new(dir);
        config.pooling = false;
        config.max_concurrent = 1;
        config
    }

    /// This process's effective uid, as the kernel gives it to a new file
    /// (not read the way the code under test reads it).
    fn my_uid(scratch: &Path) -> u32 {
        std::fs::metadata(scratch).unwrap().uid()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    fn refusal(dir: &Path) -> String {
        match Runtime::new(config(dir)) {
            Ok(_) => panic!("the cache directory {} was accepted", dir.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_cache_directory_other_users_can_write_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        for bits in [0o777, 0o770, 0o1777] {
            let dir = scratch.path().join(format!("cache-{bits:o}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(bits)).unwrap();
            let message = refusal(&dir);
            assert!(
                message.contains(&format!("refusing the cache directory {}", dir.display())),
                "{message}"
            );
            assert!(message.contains("other users can write it"), "{message}");
            assert!(
                message.contains(&format!("chmod 700 {}", dir.display())),
                "{message}"
            );
            assert!(
                !dir.join("functions").exists(),
                "nothing is made in a refused directory"
            );
        }
        // Its `functions/` too (Cranelift's cache, read back as code).
        let dir = scratch.path().join("cache");
        let functions = dir.join("functions");
        std::fs::create_dir_all(&functions).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&functions, std::fs::Permissions::from_mode(0o777)).unwrap();
        let message = refusal(&dir);
        assert!(
            message.contains(&format!(
                "refusing the cache directory {}",
                functions.display()
            )),
            "{message}"
        );
        // Readable by others is no risk to this user; writable only by its
        // owner it is used.
        std::fs::set_permissions(&functions, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Runtime::new(config(&dir)).unwrap();
    }

    #[test]
    fn a_cache_directory_of_another_user_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let me = my_uid(scratch.path());
        // Root can give a directory away; another user finds one of root's.
        let dir = if me == 0 {
            let dir = scratch.path().join("cache");
            std::fs::create_dir(&dir).unwrap();
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            dir
        } else {
            PathBuf::from("/")
        };
        let owner = std::fs::metadata(&dir).unwrap().uid();
        assert_ne!(owner, me, "the test needs a directory of another user");
        let message = refusal(&dir);
        assert!(
            message.contains(&format!("refusing the cache directory {}", dir.display())),
            "{message}"
        );
        assert!(
            message.contains(&format!(
                "it belongs to uid {owner}, not to this user (uid {me})"
            )),
            "{message}"
        );
    }

    #[test]
    fn a_missing_cache_directory_is_made_private() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("a").join("cache");
        Runtime::new(config(&dir)).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("functions")), 0o700);
    }

    #[test]
    fn a_symlink_planted_at_an_artifacts_temporary_name_is_not_followed() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        let rt = Runtime::new(config(&dir)).unwrap();
        let victim = scratch.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let cached = rt.cache_path(&hex(&Sha256::digest(EMPTY_COMPONENT)));
        // Every name the old scheme (`.tmp<pid>-<n>`) would use first.
        for n in 0..64 {
            let name = cached.with_extension(format!("tmp{}-{n}", std::process::id()));
            std::os::unix::fs::symlink(&victim, name).unwrap();
        }
        let e = rt.load_bytes(EMPTY_COMPONENT, "empty.wasm").unwrap_err();
        assert!(matches!(e, LoadError::NoEntryPoint { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let artifact = std::fs::symlink_metadata(&cached).unwrap();
        assert!(artifact.is_file(), "the artifact is a file of its own");
        assert!(rt.is_precompiled(EMPTY_COMPONENT));
    }

    #[test]
    fn a_symlink_planted_at_a_function_entrys_temporary_name_is_not_followed() {
        let scratch = tempfile::tempdir().unwrap();
        let cache = FunctionCache::new(scratch.path().join("functions"), 1 << 20);
        let victim = scratch.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let entry = cache.path(b"key");
        let dir = entry.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        for n in 0..64 {
            let name = dir.join(format!(".{}.{n}.tmp", std::process::id()));
            std::os::unix::fs::symlink(&victim, name).unwrap();
        }
        assert!(wasmtime::CacheStore::insert(
            &cache,
            b"key",
            b"code".to_vec()
        ));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&entry).unwrap().is_file());
        let got = wasmtime::CacheStore::get(&cache, b"key");
        assert_eq!(got.as_deref(), Some(&b"code"[..]));
    }

    #[test]
    fn an_entry_other_users_can_write_is_not_read_back() {
        let scratch = tempfile::tempdir().unwrap();
        let cache = FunctionCache::new(scratch.path().join("functions"), 1 << 20);
        assert!(wasmtime::CacheStore::insert(
            &cache,
            b"key",
            b"code".to_vec()
        ));
        let entry = cache.path(b"key");
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(wasmtime::CacheStore::get(&cache, b"key").is_none());

        // An artifact likewise: it is compiled again, not loaded.
        let rt = Runtime::new(config(&scratch.path().join("cache"))).unwrap();
        let cached = rt.cache_path(&hex(&Sha256::digest(EMPTY_COMPONENT)));
        let _ = rt.load_bytes(EMPTY_COMPONENT, "empty.wasm");
        std::fs::set_permissions(&cached, std::fs::Permissions::from_mode(0o666)).unwrap();
        let _ = rt.load_bytes(EMPTY_COMPONENT, "empty.wasm");
        assert_eq!(mode(&cached) & 0o022, 0, "it was replaced by a fresh one");
    }
}

#[cfg(test)]
mod held_cache_tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    /// Compiles (to an artifact with no code) and fails to load as a
    /// script, with `NoEntryPoint`, once compiled.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";
    /// Not WebAssembly: loading it fails with `Invalid` unless an artifact
    /// is found under its digest.
    const NOT_WASM: &[u8] = b"not wasm at all";

    fn config(dir: &Path) -> RuntimeConfig {
        let mut config = RuntimeConfig::new(dir);
        config.pooling = false;
        config.max_concurrent = 1;
        config
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn digest(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// A runtime on `dir` with the empty component's artifact in it, and
    /// a copy of that artifact outside, this user's, mode 0644: what
    /// another user might try to have loaded under another digest.
    fn with_artifact(scratch: &Path, dir: &Path) -> (Runtime, PathBuf) {
        let rt = Runtime::new(config(dir)).unwrap();
        let e = rt.load_bytes(EMPTY_COMPONENT, "empty.wasm").unwrap_err();
        assert!(matches!(e, LoadError::NoEntryPoint { .. }), "{e}");
        let copy = scratch.join("planted.cwasm");
        std::fs::copy(rt.cache_path(&digest(EMPTY_COMPONENT)), &copy).unwrap();
        chmod(&copy, 0o644);
        (rt, copy)
    }

    /// What loading [`NOT_WASM`] gives: `true` when an artifact was
    /// loaded for it.
    fn loads_an_artifact_for_not_wasm(rt: &Runtime) -> bool {
        match rt.load_bytes(NOT_WASM, "not.wasm").unwrap_err() {
            LoadError::NoEntryPoint { .. } => true,
            LoadError::Invalid { message, .. } => {
                assert!(message.contains("it is not WebAssembly"), "{message}");
                false
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn a_function_folder_others_can_write_is_removed() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("cache");
        let functions = dir.join("functions");
        // As a cache made under umask 002, its two top folders fixed.
        for name in ["ab", "cd", "ef"] {
            std::fs::create_dir_all(functions.join(name)).unwrap();
            std::fs::write(functions.join(name).join("entry"), "code").unwrap();
        }
        chmod(&dir, 0o700);
        chmod(&functions, 0o700);
        chmod(&functions.join("ab"), 0o777);
        chmod(&functions.join("cd"), 0o775);
        chmod(&functions.join("ef"), 0o755);
        // A folder link, and a file where a folder goes.
        let elsewhere = scratch.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("kept"), "theirs").unwrap();
        std::os::unix::fs::symlink(&elsewhere, functions.join("01")).unwrap();
        std::fs::write(functions.join("02"), "x").unwrap();
        Runtime::new(config(&dir)).unwrap();
        for gone in ["ab", "cd", "01", "02"] {
            assert!(
                std::fs::symlink_metadata(functions.join(gone)).is_err(),
                "functions/{gone} was kept"
            );
        }
        assert!(functions.join("ef").join("entry").is_file());
        // The link was removed, not followed.
        assert!(elsewhere.join("kept").is_file());
    }

    #[test]
    fn a_function_folder_of_another_user_is_removed() {
        let scratch = tempfile::tempdir().unwrap();
        if std::fs::metadata(scratch.path()).unwrap().uid() != 0 {
            // Only root can give a folder away.
            return;
        }
        let dir = scratch.path().join("cache");
        let theirs = dir.join("functions").join("ab");
        std::fs::create_dir_all(&theirs).unwrap();
        chmod(&dir, 0o700);
        chmod(&theirs, 0o700);
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        Runtime::new(config(&dir)).unwrap();
        assert!(std::fs::symlink_metadata(&theirs).is_err());
    }

    #[test]
    fn a_linked_function_entry_is_not_read() {
        let scratch = tempfile::tempdir().unwrap();
        let cache = FunctionCache::new(scratch.path().join("functions"), 1 << 20);
        // This user's file, readable, with code of another's choosing.
        let victim = scratch.path().join("victim");
        std::fs::write(&victim, "their code").unwrap();
        chmod(&victim, 0o644);
        let entry = cache.path(b"key");
        std::fs::create_dir_all(entry.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&victim, &entry).unwrap();
        assert!(wasmtime::CacheStore::get(&cache, b"key").is_none());
        std::fs::remove_file(&entry).unwrap();
        std::fs::hard_link(&victim, &entry).unwrap();
        assert!(wasmtime::CacheStore::get(&cache, b"key").is_none());
        // Its own, written by it, is read.
        std::fs::remove_file(&entry).unwrap();
        assert!(wasmtime::CacheStore::insert(
            &cache,
            b"key",
            b"code".to_vec()
        ));
        let got = wasmtime::CacheStore::get(&cache, b"key");
        assert_eq!(got.as_deref(), Some(&b"code"[..]));
    }

    #[test]
    fn a_linked_artifact_is_not_loaded() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("cache");
        let (rt, planted) = with_artifact(scratch.path(), &dir);
        let at = rt.cache_path(&digest(NOT_WASM));
        std::os::unix::fs::symlink(&planted, &at).unwrap();
        assert!(!loads_an_artifact_for_not_wasm(&rt));
        let _ = std::fs::remove_file(&at);
        std::fs::hard_link(&planted, &at).unwrap();
        assert!(!loads_an_artifact_for_not_wasm(&rt));
        // The same file, this user's own with one link, is loaded: the
        // test can tell.
        let _ = std::fs::remove_file(&at);
        std::fs::copy(&planted, &at).unwrap();
        assert!(loads_an_artifact_for_not_wasm(&rt));
    }

    #[test]
    fn a_cache_directory_renamed_away_and_replaced_is_not_used() {
        let scratch = tempfile::tempdir().unwrap();
        // A data directory others can write: they can rename `cache`.
        let data = scratch.path().join("data");
        std::fs::create_dir(&data).unwrap();
        chmod(&data, 0o777);
        let dir = data.join("cache");
        let (rt, planted) = with_artifact(scratch.path(), &dir);
        std::fs::rename(&dir, data.join("moved")).unwrap();
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o700);
        std::fs::copy(&planted, dir.join(rt.artifact_name(&digest(NOT_WASM)))).unwrap();
        assert!(!loads_an_artifact_for_not_wasm(&rt));
        // What it compiles goes to the directory it opened.
        let e = rt.load_bytes(b"\0asm\x0d\x00\x01\x00\x00\x02\x01x", "x.wasm");
        assert!(matches!(e, Err(LoadError::NoEntryPoint { .. })));
        let name = rt.artifact_name(&digest(b"\0asm\x0d\x00\x01\x00\x00\x02\x01x"));
        assert!(data.join("moved").join(&name).is_file());
        assert!(!dir.join(&name).exists());
    }

    #[test]
    fn a_folder_above_the_cache_others_can_write_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let shared = scratch.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let dir = shared.join("sluice");
        chmod(&shared, 0o777);
        let e = Runtime::prepare_cache_dir(&dir).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "refusing the cache directory {}: the folder {} above it can be written by other users (mode 777), who could put a folder of their own in its place",
                dir.display(),
                std::fs::canonicalize(&shared).unwrap().display()
            )),
            "{e}"
        );
        assert!(e.contains("chmod go-w"), "{e}");
        // Two levels down it is refused too.
        let deeper = shared.join("mine").join("sluice");
        let e = Runtime::prepare_cache_dir(&deeper).unwrap_err().to_string();
        assert!(e.contains("above it can be written by other users"), "{e}");
        // Sticky (as /tmp), right above a folder of this user's, it is not.
        chmod(&shared, 0o1777);
        Runtime::prepare_cache_dir(&dir).unwrap();
        Runtime::prepare_cache_dir(&deeper).unwrap();
        if std::fs::metadata(scratch.path()).unwrap().uid() == 0 {
            // Under a folder of another user, sticky or not, it is.
            let theirs = shared.join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            chmod(&theirs, 0o755);
            let e = Runtime::prepare_cache_dir(&theirs.join("sluice"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("above it belongs to uid 65534, who could put a folder of their own in its place"),
                "{e}"
            );
        }
    }
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[test]
    fn a_new_file_is_never_opened_through_a_symlink_at_its_name() {
        let scratch = tempfile::tempdir().unwrap();
        let victim = scratch.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = scratch.path().join("entry");
        let planted = scratch.path().join("planted.tmp");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        // A dangling one too: it would make the file where it points.
        let dangling = scratch.path().join("dangling.tmp");
        std::os::unix::fs::symlink(scratch.path().join("made"), &dangling).unwrap();
        let mut names = vec![
            scratch.path().join("fresh.tmp"),
            dangling.clone(),
            planted.clone(),
        ];
        write_whole_via(&path, b"code", || names.pop().unwrap()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!scratch.path().join("made").exists());
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(std::fs::read(&path).unwrap(), b"code");
        // The links are left alone; the fresh name was renamed away.
        assert!(std::fs::symlink_metadata(&planted).unwrap().is_symlink());
        assert!(std::fs::symlink_metadata(&dangling).unwrap().is_symlink());
        assert!(!scratch.path().join("fresh.tmp").exists());

        // Past a few taken names it gives up rather than write elsewhere.
        let e = write_whole_via(&path, b"other", || planted.clone()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read(&path).unwrap(), b"code");
    }
}
