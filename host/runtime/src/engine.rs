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
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let engine = Engine::new(&engine_config(&config)).map_err(|e| {
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
        evict_least_recent(&config.cache_dir, config.cache_max_bytes, Path::new(""));
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                config,
                cache_key,
                stop_ticker,
                memory,
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
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
        self.cache_path(&hex(&Sha256::digest(bytes))).exists()
    }

    /// The path of the precompiled artifact for these component bytes.
    pub fn cache_path(&self, digest: &str) -> PathBuf {
        self.inner
            .config
            .cache_dir
            .join(format!("{digest}-{}.cwasm", self.inner.cache_key))
    }

    fn compiled(&self, bytes: &[u8], digest: &str, origin: &str) -> Result<Component, LoadError> {
        let engine = &self.inner.engine;
        let cached = self.cache_path(digest);
        if cached.exists() {
            // SAFETY: the file was written by `Engine::precompile_component`
            // of an engine with the same compatibility hash (it is in the name), in
            // a directory owned by this runtime; a truncated or foreign file
            // fails the header checks and is recompiled below.
            match unsafe { Component::deserialize_file(engine, &cached) } {
                Ok(c) => {
                    touch(&cached);
                    return Ok(c);
                }
                Err(_) => {
                    let _ = std::fs::remove_file(&cached);
                }
            }
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
        // SAFETY: as above; the file was written by this engine just now.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(mapped) => Ok(mapped),
            // SAFETY: the bytes were produced by this engine just now.
            Err(_) => unsafe { Component::deserialize(engine, &serialized) }.map_err(|e| {
                LoadError::Invalid {
                    path: origin.to_string(),
                    message: one_line(&format!("{e:#}")),
                }
            }),
        }
    }

    fn write_cache(&self, path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
        let dir = &self.inner.config.cache_dir;
        let err = |source| LoadError::Cache {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        // Unique per write, not only per process: two threads may compile
        // the same component at once, and each must rename its own file
        // (the contents are the same, so either may win).
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
        match written {
            Ok(()) => {
                evict_least_recent(dir, self.inner.config.cache_max_bytes, path);
                Ok(())
            }
            // Another writer (a thread, or another process sharing the
            // cache) put the same artifact there first: nothing is lost.
            Err(_) if path.exists() => {
                let _ = std::fs::remove_file(&tmp);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(err(e))
            }
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

fn engine_config(config: &RuntimeConfig) -> Config {
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
        config.cache_dir.join("functions"),
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

/// Marks a cached artifact as just used, for [`evict_least_recent`]. A
/// failure only makes it look older.
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
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
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        std::fs::read(self.path(key)).ok().map(Into::into)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let path = self.path(key);
        let Some(dir) = path.parent() else {
            return false;
        };
        if std::fs::create_dir_all(dir).is_err() {
            return false;
        }
        // Written whole under a unique name, then renamed: a reader never
        // sees half an entry.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let len = value.len() as u64;
        let written = std::fs::write(&tmp, value).is_ok() && std::fs::rename(&tmp, &path).is_ok();
        if written {
            self.added(len);
        }
        written
    }
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
