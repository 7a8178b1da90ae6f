//! `sluice compile`: a nango-integrations folder into loaded scripts.
//!
//! nango.yaml is checked and `models.ts` / `.nango/schema.json` generated as
//! the original does; each declared script is found by name. TypeScript
//! scripts of one integration become one component (the `bundle` world):
//! esbuild bundles them with their relative imports, componentize-js turns
//! the bundle into a component, and the runtime precompiles it. An
//! integration whose bundle did not change is not rebuilt. A script may also
//! be a `.wasm` component or a Rust crate (`<name>/Cargo.toml`), in any
//! language that targets the contract.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use sluice_nango_yaml::{self as yaml, NangoYaml};
use sluice_runtime::{Runtime, RuntimeConfig, Script, ScriptKind};

use crate::catalog::Catalog;
use crate::project::{self, ProjectError};
use crate::toolchain::{self, StepMessage, Toolchain, ToolchainError};

/// What `sluice` writes its build outputs under, inside the project.
pub const BUILD_DIR: &str = ".sluice/build";

/// The folder of the build folder holding each Rust script's component
/// ([`rust_component_path`]).
pub const RUST_COMPONENTS: &str = "rust";

/// Where the component of Rust script `name` (of kind `kind`) of
/// integration `pck` is kept: a file of its own, under
/// [`RUST_COMPONENTS`]. Every crate is built into one cargo target folder
/// (their dependencies are built once), where cargo names a binary's
/// output by the binary alone: two integrations' `users` (or a sync and
/// an action of one name) would write the same file. Named by a hash of
/// all three (names may hold any character), and the name for whoever
/// looks.
pub fn rust_component_path(build: &Path, pck: &str, kind: ScriptKind, name: &str) -> PathBuf {
    let id = hex_digest(format!("{pck}\0{kind}\0{name}").as_bytes());
    let shown: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    build
        .join(RUST_COMPONENTS)
        .join(format!("{shown}-{}.wasm", &id[..16]))
}

/// Refuses a path the TypeScript toolchain cannot be given (it takes
/// paths as JSON text, which holds only UTF-8), naming it.
pub(crate) fn utf8_paths<'a>(
    paths: impl IntoIterator<Item = &'a Path>,
) -> Result<(), CompileError> {
    match paths.into_iter().find(|p| p.to_str().is_none()) {
        Some(p) => Err(CompileError::NotAProject(format!(
            "the path `{}` is not UTF-8: the TypeScript toolchain takes UTF-8 paths only (rename the folder or file)",
            p.display()
        ))),
        None => Ok(()),
    }
}

/// Why a project did not compile.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Yaml(#[from] yaml::YamlError),
    #[error("no integration `{0}` in this project")]
    UnknownIntegration(String),
    #[error("{0}")]
    NotAProject(String),
    /// The original's message, then where else a script may be.
    #[error(
        "The following scripts are missing a corresponding .ts file: {} (a script in Rust is a crate in a folder of its name, `<name>/Cargo.toml`, beside where its .ts file would be; a prebuilt component is `<name>.wasm`)",
        .0.join(", ")
    )]
    MissingScripts(Vec<String>),
    /// A zero-yaml project's `index.ts` imports files that are not there.
    #[error(
        "The following scripts are missing a corresponding .ts file: {}",
        .0.join(", ")
    )]
    MissingImports(Vec<String>),
    #[error(
        "script `{name}` of `{integration}` has more than one source: {}; keep one",
        .sources.join(", ")
    )]
    AmbiguousScript {
        integration: String,
        name: String,
        sources: Vec<String>,
    },
    #[error(transparent)]
    Toolchain(#[from] ToolchainError),
    #[error("compiling {integration} failed:\n{}", messages.iter().map(|m| format!("  {m}")).collect::<Vec<_>>().join("\n"))]
    Build {
        integration: String,
        messages: Vec<StepMessage>,
    },
    #[error(transparent)]
    Load(#[from] sluice_runtime::LoadError),
    #[error("nango.yaml declares `{name}` as {declared}, but its component ({path}) is {found}")]
    WrongKind {
        name: String,
        path: String,
        declared: &'static str,
        found: &'static str,
    },
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    /// Something sluice writes (a generated file, a build output) is a
    /// link, a folder or a device where a regular file belongs.
    #[error("{}", not_plain_message(Path::new(path), what))]
    NotAFile { path: String, what: &'static str },
}

/// Where a script comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    TypeScript(PathBuf),
    Component(PathBuf),
    RustCrate(PathBuf),
}

impl Source {
    pub fn path(&self) -> &Path {
        match self {
            Source::TypeScript(p) | Source::Component(p) | Source::RustCrate(p) => p,
        }
    }
}

/// One loaded script of the project.
#[derive(Debug, Clone)]
pub struct ProjectScript {
    pub integration: String,
    pub name: String,
    pub kind: ScriptKind,
    pub source: Source,
    /// The component file it was loaded from (a TypeScript script's is its
    /// integration's bundle, a Rust crate's its own copy of what cargo
    /// built, [`rust_component_path`]).
    pub component: PathBuf,
    pub script: Arc<Script>,
}

/// A compiled project.
#[derive(Debug)]
pub struct Project {
    pub root: PathBuf,
    /// Where the bundles and components were built.
    pub build_dir: PathBuf,
    pub config: NangoYaml,
    pub warnings: Vec<yaml::Diagnostic>,
    pub scripts: Vec<ProjectScript>,
    /// A zero-yaml project's definitions (`.nango/nango.json`'s entries),
    /// which its deploys carry instead of nango.yaml.
    pub definitions: Option<Vec<serde_json::Value>>,
    /// Test files written by hand that `sluice test` compiled in with their
    /// scripts (by key, see [`crate::zerotest::TestFile::key`]), and those
    /// it had to leave out, with why.
    pub hand_tests: BTreeMap<String, Result<(), String>>,
}

impl Project {
    /// The project's scripts as they run (see [`Catalog`]).
    pub fn catalog(&self) -> Catalog {
        let catalog = Catalog::new(
            self.config.clone(),
            self.scripts
                .iter()
                .map(|s| (s.integration.clone(), s.name.clone(), s.script.clone())),
        );
        match &self.definitions {
            Some(definitions) => catalog.with_definitions(definitions),
            None => catalog,
        }
    }

    /// The script `name`, in `integration` when given; an error names the
    /// candidates when the name is ambiguous or unknown.
    pub fn script(
        &self,
        name: &str,
        integration: Option<&str>,
    ) -> Result<&ProjectScript, ProjectError> {
        self.script_preferring(name, integration, None)
    }

    /// [`Project::script`]; when one integration has a sync and an action
    /// of this name, the one of kind `prefer` (else the sync).
    pub fn script_preferring(
        &self,
        name: &str,
        integration: Option<&str>,
        prefer: Option<ScriptKind>,
    ) -> Result<&ProjectScript, ProjectError> {
        let mut found: Vec<&ProjectScript> = self
            .scripts
            .iter()
            .filter(|s| s.name == name && integration.is_none_or(|i| s.integration == i))
            .collect();
        if found.len() > 1 && found.iter().all(|s| s.integration == found[0].integration) {
            let want = prefer.unwrap_or(ScriptKind::Sync);
            if let Some(one) = found.iter().find(|s| s.kind == want) {
                found = vec![*one];
            }
        }
        match found.as_slice() {
            [one] => Ok(one),
            [] => Err(ProjectError::UnknownScript {
                name: name.to_string(),
                reason: format!(
                    "the project in {} has no such script{}",
                    self.root.display(),
                    integration
                        .map(|i| format!(" in integration `{i}`"))
                        .unwrap_or_default()
                ),
            }),
            many => Err(ProjectError::UnknownScript {
                name: name.to_string(),
                reason: format!(
                    "several integrations declare it ({}): pass --integration-id",
                    many.iter()
                        .map(|s| s.integration.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }
}

/// What to compile.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// The nango-integrations folder (holding nango.yaml).
    pub dir: PathBuf,
    /// Only this integration.
    pub integration: Option<String>,
    /// An installed TypeScript SDK instead of the carried one.
    pub sdk: Option<PathBuf>,
    /// The cache of precompiled components and of the installed SDK.
    pub cache_dir: PathBuf,
    /// Most bytes of precompiled components kept in `cache_dir`
    /// ([`RuntimeConfig::cache_max_bytes`]).
    pub cache_max_bytes: u64,
    /// Where bundles, components and Rust builds go (default:
    /// `<dir>/.sluice/build`).
    pub build_dir: Option<PathBuf>,
    /// Also compile the scripts the tests import that `index.ts` does not
    /// list (zero-yaml projects; `sluice test` runs those tests as the
    /// original's harness does). `.nango/nango.json` is then not written.
    pub tested_scripts: bool,
}

impl CompileOptions {
    /// Options for `dir` with the default build folder.
    pub fn new(dir: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            integration: None,
            sdk: None,
            cache_dir: cache_dir.into(),
            cache_max_bytes: sluice_runtime::DEFAULT_CACHE_MAX_BYTES,
            build_dir: None,
            tested_scripts: false,
        }
    }

    /// A runtime configuration using this cache, running `max_concurrent`
    /// executions at once.
    pub fn runtime_config(&self, max_concurrent: u32) -> RuntimeConfig {
        let mut config = RuntimeConfig::new(&self.cache_dir);
        config.cache_max_bytes = self.cache_max_bytes;
        config.max_concurrent = max_concurrent;
        config
    }

    pub fn build_dir(&self) -> PathBuf {
        self.build_dir
            .clone()
            .unwrap_or_else(|| self.dir.join(BUILD_DIR))
    }

    /// [`Self::build_dir`], refused when it is inside the project `root`
    /// and one of its folders there (`.sluice`, `build`, its `wit`,
    /// `cargo` and `rust`) is a link or not a folder: a cloned project's
    /// `.sluice -> ../outside` had the build written outside it.
    pub fn checked_build_dir(&self, root: &Path) -> Result<PathBuf, CompileError> {
        let build = self.build_dir();
        let absolute = std::path::absolute(&build).unwrap_or_else(|_| build.clone());
        if let Ok(rel) = absolute.strip_prefix(root) {
            for rel in [
                rel.to_path_buf(),
                rel.join("wit"),
                rel.join("cargo"),
                rel.join(RUST_COMPONENTS),
            ] {
                if let Some((path, what)) = not_a_folder(root, &rel) {
                    return Err(CompileError::NotAFile {
                        path: path.display().to_string(),
                        what,
                    });
                }
            }
        }
        Ok(build)
    }
}

/// The first of the folders `rel` names under `root` (itself included)
/// that exists and is not a real folder, with what it is.
fn not_a_folder(root: &Path, rel: &Path) -> Option<(PathBuf, &'static str)> {
    let mut at = root.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if !meta.is_dir() => return Some((at, yaml::file_kind(&meta.file_type()))),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

pub(crate) fn runtime_kind(k: yaml::ScriptKind) -> ScriptKind {
    match k {
        yaml::ScriptKind::Sync => ScriptKind::Sync,
        yaml::ScriptKind::Action => ScriptKind::Action,
        yaml::ScriptKind::OnEvent => ScriptKind::OnEvent,
    }
}

/// Where scripts of a kind live in the nested layout.
pub fn kind_dir(k: yaml::ScriptKind) -> &'static str {
    match k {
        yaml::ScriptKind::Sync => "syncs",
        yaml::ScriptKind::Action => "actions",
        yaml::ScriptKind::OnEvent => "on-events",
    }
}

/// Finds a script's source: in `<pck>/<syncs|actions|on-events>/`, then
/// `<pck>/`, `<syncs|…>/` and the root, as `<name>.ts`, `<name>.wasm` or a
/// Rust crate `<name>/Cargo.toml`.
pub fn find_source(root: &Path, pck: &str, name: &str, kind: yaml::ScriptKind) -> Option<Source> {
    find_sources(root, pck, name, kind).into_iter().next()
}

/// Every source of a script in the first folder that has one (more than
/// one is an error for the compile: which is meant is not for it to guess).
pub fn find_sources(root: &Path, pck: &str, name: &str, kind: yaml::ScriptKind) -> Vec<Source> {
    let sub = kind_dir(kind);
    let dirs = [
        root.join(pck).join(sub),
        root.join(pck),
        root.join(sub),
        root.to_path_buf(),
    ];
    for dir in dirs {
        let mut found = Vec::new();
        let ts = dir.join(format!("{name}.ts"));
        if ts.is_file() {
            found.push(Source::TypeScript(ts));
        }
        let wasm = dir.join(format!("{name}.wasm"));
        if wasm.is_file() {
            found.push(Source::Component(wasm));
        }
        let krate = dir.join(name).join("Cargo.toml");
        if krate.is_file() {
            found.push(Source::RustCrate(krate));
        }
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

/// `a sync`, `an action`, `an on-event script`.
fn with_article(kind: ScriptKind) -> &'static str {
    match kind {
        ScriptKind::Sync => "a sync",
        ScriptKind::Action => "an action",
        ScriptKind::OnEvent => "an on-event script",
    }
}

/// What keeps sluice from writing `rel` under `root`: the first of its
/// folders there that exists and is not a real folder (a link, even to a
/// folder), or the file itself when it exists and is not a regular file;
/// with what it is. Git checks links out, so a cloned project's
/// `models.ts -> ../victim.txt` (or `.nango -> ../..`) would have had sluice
/// write outside it, and one to `/dev/zero` be read for ever.
pub(crate) fn not_plain(root: &Path, rel: &Path) -> Option<(PathBuf, &'static str)> {
    let mut at = root.to_path_buf();
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        at.push(part);
        let last = parts.peek().is_none();
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if last && !meta.is_file() => {
                return Some((at, yaml::file_kind(&meta.file_type())));
            }
            Ok(meta) if !last && !meta.is_dir() => {
                return Some((at, yaml::file_kind(&meta.file_type())));
            }
            _ => {}
        }
    }
    None
}

/// The error [`not_plain`]'s finding makes.
pub(crate) fn not_plain_message(path: &Path, what: &str) -> String {
    format!(
        "refusing to write {}: it is {what}, and sluice writes only regular files in real folders of the project there (remove it and run again)",
        path.display()
    )
}

/// Writes `bytes` to `path` whole: into a new file beside it, renamed over
/// it, which replaces whatever the name is then (a link included) rather
/// than writing through it. Its folder is made when missing.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.sluice-{}.tmp", std::process::id()));
    // `create_new`: never a file (or link) already at the temporary name.
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes `path` only when its content changes (keeps editors and
/// watchers quiet). What is there must be a regular file, or nothing (see
/// [`not_plain`]); it is replaced whole ([`replace_file`]).
pub(crate) fn write_if_changed(path: &Path, text: &str) -> Result<(), CompileError> {
    use std::io::Read as _;
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => (dir, Path::new(name)),
        _ => (Path::new(""), path),
    };
    if let Some((path, what)) = not_plain(dir, name) {
        return Err(CompileError::NotAFile {
            path: path.display().to_string(),
            what,
        });
    }
    // Unchanged: at most one byte more than the new text is read.
    let mut old = Vec::new();
    let same = std::fs::File::open(path)
        .and_then(|f| f.take(text.len() as u64 + 1).read_to_end(&mut old))
        .is_ok_and(|_| old == text.as_bytes());
    if same {
        return Ok(());
    }
    replace_file(path, text.as_bytes()).map_err(|source| CompileError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// [`write_if_changed`] for a file sluice generates in the project
/// (`models.ts`, `.nango/schema.json`, `.nango/nango.json`): the folders
/// between `root` and it must be real folders too.
pub(crate) fn write_generated(root: &Path, rel: &Path, text: &str) -> Result<(), CompileError> {
    if let Some((path, what)) = not_plain(root, rel) {
        return Err(CompileError::NotAFile {
            path: path.display().to_string(),
            what,
        });
    }
    write_if_changed(&root.join(rel), text)
}

/// `models.ts` and `.nango/schema.json` from nango.yaml.
pub fn generate_models(root: &Path, config: &NangoYaml) -> Result<(), CompileError> {
    let generator = concat!("sluice (v", env!("CARGO_PKG_VERSION"), ")");
    write_generated(
        root,
        Path::new("models.ts"),
        &yaml::generate::models_ts(config, toolchain::SDK_TYPES, generator),
    )?;
    let schema = yaml::generate::json_schema(config, generator);
    write_generated(
        root,
        &Path::new(".nango").join("schema.json"),
        &format!(
            "{}\n",
            serde_json::to_string_pretty(&schema).unwrap_or_default()
        ),
    )
}

fn hex_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Names what keeps `root` from being a project of either format: it is
/// missing, has neither file, or is a zero-yaml one without `.nango`.
pub fn not_a_project(root: &Path) -> Result<(), CompileError> {
    let shown = root.display();
    if !root.is_dir() {
        return Err(CompileError::NotAProject(format!(
            "{shown} does not exist or is not a folder"
        )));
    }
    if root.join("nango.yaml").exists() {
        return Ok(());
    }
    if root.join("index.ts").is_file() {
        return Err(CompileError::NotAProject(format!(
            "{shown} has an index.ts but no .nango folder: a zero-yaml project has one (create it, empty)"
        )));
    }
    Err(CompileError::NotAProject(format!(
        "{shown} is not a nango-integrations folder: it has neither a nango.yaml nor an index.ts (`sluice init` makes one)"
    )))
}

/// Compiles (or reuses) every script of the project and loads it.
pub fn compile(
    opts: &CompileOptions,
    runtime: &Runtime,
    progress: &mut dyn Write,
) -> Result<Project, CompileError> {
    // Absolute (without resolving symlinks: an integration's folder may be
    // a link, and its files must still count as inside the project).
    let root = std::path::absolute(&opts.dir).unwrap_or_else(|_| opts.dir.clone());
    let zero = crate::zero::is_zero_yaml(&root);
    crate::debug::say(progress, || {
        format!(
            "{}: a {} project; builds in {}, precompiled components cached in {} (at most {} MiB)",
            root.display(),
            if zero { "zero-yaml" } else { "nango.yaml" },
            opts.build_dir().display(),
            opts.cache_dir.display(),
            opts.cache_max_bytes >> 20
        )
    });
    if zero {
        return crate::zero::compile(opts, &root, runtime, progress);
    }
    not_a_project(&root)?;
    let loaded = yaml::load(&root)?;
    for w in &loaded.warnings {
        let _ = writeln!(progress, "{w}");
    }
    // Both formats in one folder: nango.yaml decides, as in the original.
    if root.join("index.ts").is_file() && root.join(".nango").exists() {
        let _ = writeln!(
            progress,
            "warning: nango.yaml makes this a nango.yaml project: index.ts and .nango/ are ignored (remove nango.yaml to use the zero-yaml format, or convert it with `sluice migrate-to-zero-yaml`)"
        );
    }
    let config = loaded.config;
    if let Some(i) = &opts.integration
        && config.integration(i).is_none()
    {
        return Err(CompileError::UnknownIntegration(i.clone()));
    }
    generate_models(&root, &config)?;

    // Every declared script's source, or the list of missing ones.
    let mut missing = Vec::new();
    let mut sources: BTreeMap<String, Vec<(String, yaml::ScriptKind, Source)>> = BTreeMap::new();
    for integration in &config.integrations {
        let pck = &integration.provider_config_key;
        if opts.integration.as_ref().is_some_and(|i| i != pck) {
            continue;
        }
        for (name, kind) in integration.scripts() {
            let mut found = find_sources(&root, pck, name, kind);
            if found.len() > 1 {
                return Err(CompileError::AmbiguousScript {
                    integration: pck.clone(),
                    name: name.to_string(),
                    sources: found
                        .iter()
                        .map(|s| {
                            s.path()
                                .strip_prefix(&root)
                                .unwrap_or(s.path())
                                .display()
                                .to_string()
                        })
                        .collect(),
                });
            }
            match found.pop() {
                Some(src) => {
                    sources
                        .entry(pck.clone())
                        .or_default()
                        .push((name.to_string(), kind, src))
                }
                None => missing.push(format!("{pck}/{}/{name}.ts", kind_dir(kind))),
            }
        }
    }
    if !missing.is_empty() {
        return Err(CompileError::MissingScripts(missing));
    }

    let needs_ts = sources
        .values()
        .flatten()
        .any(|(_, _, s)| matches!(s, Source::TypeScript(_)));
    let toolchain = if needs_ts {
        Some(Toolchain::locate(
            opts.sdk.as_deref(),
            &opts.cache_dir,
            progress,
        )?)
    } else {
        None
    };
    let build = opts.checked_build_dir(&root)?;
    let wit_dir = build.join("wit");
    if needs_ts {
        write_if_changed(&wit_dir.join("nango.wit"), toolchain::WIT)?;
    }

    let mut scripts = Vec::new();
    for (pck, list) in &sources {
        let ts: Vec<&(String, yaml::ScriptKind, Source)> = list
            .iter()
            .filter(|(_, _, s)| matches!(s, Source::TypeScript(_)))
            .collect();
        if let Some(toolchain) = &toolchain
            && !ts.is_empty()
        {
            let files: Vec<(String, PathBuf)> = ts
                .iter()
                .map(|(n, _, src)| (n.clone(), src.path().to_path_buf()))
                .collect();
            let lint = YamlLint {
                kinds: ts
                    .iter()
                    .map(|(n, k, _)| {
                        let kind = match k {
                            yaml::ScriptKind::Sync => "sync",
                            yaml::ScriptKind::Action => "action",
                            yaml::ScriptKind::OnEvent => "on-event",
                        };
                        (n.clone(), kind)
                    })
                    .collect(),
                models: config.models.iter().map(|m| m.name.clone()).collect(),
            };
            let component = build_bundle(
                toolchain,
                &root,
                &build,
                &wit_dir,
                pck,
                &files,
                Some(&lint),
                &[],
                &mut Vec::new(),
                progress,
            )?;
            let kinds: Vec<(String, ScriptKind)> = ts
                .iter()
                .map(|(n, k, _)| (n.clone(), runtime_kind(*k)))
                .collect();
            let loaded = precompile(runtime, &component, pck, progress, |r, bytes, origin| {
                r.load_bundle_bytes(bytes, origin, &kinds)
            })?;
            for ((name, kind, source), script) in ts.iter().zip(loaded) {
                scripts.push(ProjectScript {
                    integration: pck.clone(),
                    name: name.clone(),
                    kind: runtime_kind(*kind),
                    source: source.clone(),
                    component: component.clone(),
                    script: Arc::new(script),
                });
            }
        }
        for (name, kind, source) in list {
            // What a load error names: the component, or the crate the
            // user wrote rather than the file cargo built from it.
            let (path, shown) = match source {
                Source::TypeScript(_) => continue,
                Source::Component(p) => (p.clone(), None),
                Source::RustCrate(manifest) => {
                    let _ = writeln!(progress, "Building {name} with cargo…");
                    let built =
                        project::build_rust_script(manifest, name, Some(&build.join("cargo")))?;
                    // A file of its own: the next crate's build may replace
                    // cargo's, and the deploy reads it later.
                    let own = rust_component_path(&build, pck, runtime_kind(*kind), name);
                    replace_file(&own, &built.bytes).map_err(|source| CompileError::Write {
                        path: own.display().to_string(),
                        source,
                    })?;
                    let krate = manifest.parent().unwrap_or(manifest);
                    let krate = krate.strip_prefix(&root).unwrap_or(krate);
                    (own, Some(format!("the crate {}", krate.display())))
                }
            };
            let script = precompile(runtime, &path, name, progress, |r, bytes, origin| {
                r.load_bytes(bytes, origin)
            })
            .map_err(|e| match (e, &shown) {
                (
                    CompileError::Load(sluice_runtime::LoadError::NoEntryPoint { .. }),
                    Some(krate),
                ) => CompileError::Load(sluice_runtime::LoadError::NoEntryPoint {
                    path: krate.clone(),
                }),
                (e, _) => e,
            })?;
            if script.kind() != runtime_kind(*kind) {
                return Err(CompileError::WrongKind {
                    name: name.clone(),
                    path: path
                        .strip_prefix(".")
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                    declared: with_article(runtime_kind(*kind)),
                    found: with_article(script.kind()),
                });
            }
            scripts.push(ProjectScript {
                integration: pck.clone(),
                name: name.clone(),
                kind: script.kind(),
                source: source.clone(),
                component: path,
                script: Arc::new(script),
            });
        }
    }
    Ok(Project {
        root,
        build_dir: build,
        config,
        warnings: loaded.warnings,
        scripts,
        definitions: None,
        hand_tests: BTreeMap::new(),
    })
}

/// Loads a component, saying so when Cranelift has to compile it first.
pub(crate) fn precompile<T>(
    runtime: &Runtime,
    component: &Path,
    what: &str,
    progress: &mut dyn Write,
    load: impl FnOnce(&Runtime, &[u8], &str) -> Result<T, sluice_runtime::LoadError>,
) -> Result<T, CompileError> {
    let origin = component.display().to_string();
    let bytes = std::fs::read(component).map_err(|source| sluice_runtime::LoadError::Read {
        path: origin.clone(),
        source,
    })?;
    let cached = runtime.is_precompiled(&bytes);
    let started = Instant::now();
    if !cached {
        let _ = writeln!(progress, "Precompiling {what}…");
    } else {
        crate::debug::say(progress, || {
            format!("{what}: its precompiled artifact is in the cache")
        });
    }
    let out = load(runtime, &bytes, &origin)?;
    if !cached {
        let _ = writeln!(
            progress,
            "Precompiled {what} in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(out)
}

/// What the nango.yaml era's source checks need (`lintYamlScript` in
/// `zero.mjs`): each script's kind by name, and every model the nango.yaml
/// declares.
pub(crate) struct YamlLint {
    pub kinds: BTreeMap<String, &'static str>,
    pub models: Vec<String>,
}

/// Bundles an integration's TypeScript scripts and componentizes the
/// bundle unless the same bundle was componentized before. `yaml` bundles
/// nango.yaml scripts, checked as the original CLI checks them; without it
/// they are zero-yaml scripts (`nango` is the SDK's zero-yaml module, `zod`
/// is zod 4), checked when their definitions are read.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_bundle(
    toolchain: &Toolchain,
    root: &Path,
    build: &Path,
    wit_dir: &Path,
    pck: &str,
    scripts: &[(String, PathBuf)],
    yaml: Option<&YamlLint>,
    tests: &[(String, PathBuf)],
    skipped: &mut Vec<(String, String)>,
    progress: &mut dyn Write,
) -> Result<PathBuf, CompileError> {
    // The bundle and the component replace what is at their names (a
    // link included) by a rename (compile.mjs).
    let bundle = build.join(format!("{pck}.js"));
    let component = build.join(format!("{pck}.wasm"));
    let key_file = build.join(format!("{pck}.key"));
    utf8_paths(
        [root, build, wit_dir]
            .into_iter()
            .chain(scripts.iter().map(|(_, f)| f.as_path()))
            .chain(tests.iter().map(|(_, f)| f.as_path())),
    )?;
    let job = json!({
        "root": root,
        "scripts": scripts
            .iter()
            .map(|(name, file)| json!({
                "name": name,
                "file": file,
                "kind": yaml.and_then(|l| l.kinds.get(name)),
            }))
            .collect::<Vec<_>>(),
        "zero": yaml.is_none(),
        "models": yaml.map(|l| &l.models),
        "tests": tests
            .iter()
            .map(|(key, file)| json!({ "key": key, "file": file }))
            .collect::<Vec<_>>(),
        "bundle": bundle,
        "component": component,
        "wit": wit_dir,
    });
    let failed = |messages| CompileError::Build {
        integration: pck.to_string(),
        messages,
    };
    let result = toolchain.run("bundle", &job)?;
    for w in &result.warnings {
        let _ = writeln!(progress, "warning: {w}");
    }
    skipped.extend(
        result
            .skipped
            .iter()
            .map(|t| (t.key.clone(), t.message.clone())),
    );
    if !result.ok {
        return Err(failed(result.errors));
    }
    let text = std::fs::read(&bundle).map_err(|source| CompileError::Write {
        path: bundle.display().to_string(),
        source,
    })?;
    // The steps' own code too: how a bundle is componentized may change.
    let key = hex_digest(
        format!(
            "{}{}{}",
            hex_digest(&text),
            toolchain.fingerprint(),
            toolchain.steps_digest()
        )
        .as_bytes(),
    );
    if component.is_file() && yaml::read_text_file(&key_file, 1024).is_ok_and(|k| k.trim() == key) {
        crate::debug::say(progress, || {
            format!(
                "{pck}: bundle unchanged, its component {} is reused",
                component.display()
            )
        });
        return Ok(component);
    }
    let _ = writeln!(
        progress,
        "Compiling {pck}: {} TypeScript script{} with componentize-js…",
        scripts.len(),
        if scripts.len() == 1 { "" } else { "s" }
    );
    let started = Instant::now();
    let result = toolchain.run("componentize", &job)?;
    if !result.ok {
        return Err(failed(result.errors));
    }
    let _ = writeln!(
        progress,
        "Compiled {pck} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    write_if_changed(&key_file, &key)?;
    Ok(component)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NangoYaml {
        yaml::parse(
            "integrations:\n  acme:\n    actions:\n      hello:\n        endpoint: POST /hello\n        output: Out\nmodels:\n  Out:\n    id: string\n",
            "nango.yaml",
        )
        .unwrap()
        .config
    }

    /// A cloned project's links are not written through: the generated
    /// files replace only regular files, in real folders.
    #[cfg(unix)]
    #[test]
    fn generated_files_are_not_written_through_links() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        std::fs::create_dir_all(root.join(".nango")).unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "precious\n").unwrap();
        symlink("../victim.txt", root.join("models.ts")).unwrap();
        let err = generate_models(&root, &config()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "refusing to write {}: it is a symbolic link, and sluice writes only regular files in real folders of the project there (remove it and run again)",
                root.join("models.ts").display()
            )
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

        // A link to a device is not read either (it was, without end).
        std::fs::remove_file(root.join("models.ts")).unwrap();
        symlink("/dev/zero", root.join("models.ts")).unwrap();
        let err = generate_models(&root, &config()).unwrap_err().to_string();
        assert!(err.contains("models.ts: it is a symbolic link"), "{err}");

        // `.nango` a link out of the project: nothing is written there.
        std::fs::remove_file(root.join("models.ts")).unwrap();
        std::fs::remove_dir(root.join(".nango")).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        symlink(&outside, root.join(".nango")).unwrap();
        let err = generate_models(&root, &config()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "refusing to write {}: it is a symbolic link",
                root.join(".nango").display()
            )),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

        // Regular files are written, replaced, and left alone when unchanged.
        std::fs::remove_file(root.join(".nango")).unwrap();
        generate_models(&root, &config()).unwrap();
        let models = std::fs::read_to_string(root.join("models.ts")).unwrap();
        assert!(models.contains("export interface Out"), "{models}");
        std::fs::write(root.join("models.ts"), "stale").unwrap();
        generate_models(&root, &config()).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("models.ts")).unwrap(),
            models
        );
        let names: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    }

    /// The build folder inside the project is refused when a folder of
    /// it is a link: `.sluice -> ../outside` put the build outside it.
    #[cfg(unix)]
    #[test]
    fn a_linked_build_folder_in_the_project_is_refused() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(outside.join("build/wit")).unwrap();
        let opts = CompileOptions::new(&root, dir.path().join("cache"));
        // None yet: it is made where it belongs.
        assert_eq!(opts.checked_build_dir(&root).unwrap(), root.join(BUILD_DIR));
        let refused = |at: &Path| {
            let err = opts.checked_build_dir(&root).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "refusing to write {}: it is a symbolic link, and sluice writes only regular files in real folders of the project there (remove it and run again)",
                    at.display()
                )
            );
        };
        symlink("../outside", root.join(".sluice")).unwrap();
        refused(&root.join(".sluice"));
        std::fs::remove_file(root.join(".sluice")).unwrap();
        std::fs::create_dir(root.join(".sluice")).unwrap();
        symlink(outside.join("build"), root.join(".sluice/build")).unwrap();
        refused(&root.join(".sluice/build"));
        std::fs::remove_file(root.join(".sluice/build")).unwrap();
        std::fs::create_dir(root.join(".sluice/build")).unwrap();
        symlink(outside.join("build/wit"), root.join(".sluice/build/wit")).unwrap();
        refused(&root.join(".sluice/build/wit"));
        std::fs::remove_file(root.join(".sluice/build/wit")).unwrap();
        std::fs::write(root.join(".sluice/build/cargo"), "").unwrap();
        let err = opts.checked_build_dir(&root).unwrap_err().to_string();
        assert!(err.contains("cargo: it is a regular file"), "{err}");
        std::fs::remove_file(root.join(".sluice/build/cargo")).unwrap();
        assert_eq!(opts.checked_build_dir(&root).unwrap(), root.join(BUILD_DIR));
        // One given outside the project is the user's to choose.
        let mut given = opts.clone();
        given.build_dir = Some(dir.path().join("linked"));
        symlink(&outside, dir.path().join("linked")).unwrap();
        assert_eq!(
            given.checked_build_dir(&root).unwrap(),
            dir.path().join("linked")
        );
    }

    #[test]
    fn a_script_with_two_sources_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("nango.yaml"),
            "integrations:\n  acme:\n    actions:\n      hello:\n        endpoint: POST /hello\n",
        )
        .unwrap();
        let actions = root.join("acme").join("actions");
        std::fs::create_dir_all(actions.join("hello")).unwrap();
        std::fs::write(
            actions.join("hello.ts"),
            "export default async function () {}\n",
        )
        .unwrap();
        std::fs::write(
            actions.join("hello").join("Cargo.toml"),
            "[package]\nname = \"hello\"\n",
        )
        .unwrap();
        let cache = tempfile::tempdir().unwrap();
        let opts = CompileOptions::new(root, cache.path());
        let runtime = Runtime::new(opts.runtime_config(1)).unwrap();
        let err = compile(&opts, &runtime, &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "script `hello` of `acme` has more than one source: acme/actions/hello.ts, acme/actions/hello/Cargo.toml; keep one"
        );
    }
}
