//! The TypeScript toolchain: the SDK, esbuild and componentize-js, driven
//! through `guest-sdk/ts/compile.mjs` with Node.js.
//!
//! sluice carries the SDK's sources; on first use they are written to the
//! cache directory and their npm dependencies installed there.
//! `SLUICE_TS_SDK` (or `--sdk`) points at an installed copy instead, such as
//! a checkout's `guest-sdk/ts`.
//!
//! Every step is stopped after a time ([`STEP_TIMEOUT`], [`LOAD_TIMEOUT`],
//! `SLUICE_TS_STEP_TIMEOUT` in seconds) and when it prints more than
//! [`MAX_STEP_OUTPUT`]. The one step that runs the project's code in Node
//! (`load`: a zero-yaml script's top-level code, run to read its
//! definition) runs under Node's permission model with an empty
//! environment ([`Toolchain::run`]).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// The SDK files sluice carries, by path inside the SDK.
const FILES: &[(&str, &str)] = &[
    (
        "package.json",
        include_str!("../../../guest-sdk/ts/package.json"),
    ),
    (
        "package-lock.json",
        include_str!("../../../guest-sdk/ts/package-lock.json"),
    ),
    (
        "compile.mjs",
        include_str!("../../../guest-sdk/ts/compile.mjs"),
    ),
    ("zero.mjs", include_str!("../../../guest-sdk/ts/zero.mjs")),
    (
        "migrate.mjs",
        include_str!("../../../guest-sdk/ts/migrate.mjs"),
    ),
    (
        "models-sdk.d.ts",
        include_str!("../../../guest-sdk/ts/models-sdk.d.ts"),
    ),
    (
        "src/index.ts",
        include_str!("../../../guest-sdk/ts/src/index.ts"),
    ),
    (
        "src/harness.ts",
        include_str!("../../../guest-sdk/ts/src/harness.ts"),
    ),
    (
        "src/zero.ts",
        include_str!("../../../guest-sdk/ts/src/zero.ts"),
    ),
    (
        "src/prewarm.ts",
        include_str!("../../../guest-sdk/ts/src/prewarm.ts"),
    ),
    (
        "src/codegen.ts",
        include_str!("../../../guest-sdk/ts/src/codegen.ts"),
    ),
    (
        "src/intl.ts",
        include_str!("../../../guest-sdk/ts/src/intl.ts"),
    ),
    (
        "src/intl-date.ts",
        include_str!("../../../guest-sdk/ts/src/intl-date.ts"),
    ),
    (
        "src/intl-number.ts",
        include_str!("../../../guest-sdk/ts/src/intl-number.ts"),
    ),
    (
        "src/currencies.ts",
        include_str!("../../../guest-sdk/ts/src/currencies.ts"),
    ),
    (
        "src/intl-options.ts",
        include_str!("../../../guest-sdk/ts/src/intl-options.ts"),
    ),
    (
        "src/tz-names.ts",
        include_str!("../../../guest-sdk/ts/src/tz-names.ts"),
    ),
    (
        "src/wit.d.ts",
        include_str!("../../../guest-sdk/ts/src/wit.d.ts"),
    ),
    (
        "src/node/globals.ts",
        include_str!("../../../guest-sdk/ts/src/node/globals.ts"),
    ),
    (
        "src/node/url.ts",
        include_str!("../../../guest-sdk/ts/src/node/url.ts"),
    ),
    (
        "src/vitest.ts",
        include_str!("../../../guest-sdk/ts/src/vitest.ts"),
    ),
    (
        "src/node/test-fs.ts",
        include_str!("../../../guest-sdk/ts/src/node/test-fs.ts"),
    ),
    (
        "src/node/test-path.ts",
        include_str!("../../../guest-sdk/ts/src/node/test-path.ts"),
    ),
    (
        "src/node/crypto.ts",
        include_str!("../../../guest-sdk/ts/src/node/crypto.ts"),
    ),
];

/// The contract, as compiled into this binary.
pub const WIT: &str = include_str!("../../../wit/nango.wit");

/// The SDK declarations that `models.ts` carries under `// ------ SDK`.
pub const SDK_TYPES: &str = include_str!("../../../guest-sdk/ts/models-sdk.d.ts");

/// Why the toolchain could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error(
        "building TypeScript scripts needs Node.js 20 or later on PATH ({0}); install it from https://nodejs.org"
    )]
    NoNode(String),
    #[error(
        "{dir} is not a sluice TypeScript SDK: it has no compile.mjs and node_modules (run `npm install` there)"
    )]
    NotAnSdk { dir: String },
    #[error("cannot prepare the TypeScript toolchain in {dir}: {reason}")]
    Install { dir: String, reason: String },
    #[error("the TypeScript compiler failed to run: {0}")]
    Run(String),
    #[error(
        "reading zero-yaml definitions runs the scripts' top-level code under Node's permission model, which needs Node.js 20.20, 22.22, 24.13, 25.3 or a later release of these lines, or 26 or later (found {found}; older releases let a script read past it); install a newer one from https://nodejs.org"
    )]
    NoSandbox { found: String },
    #[error(
        "the TypeScript toolchain's `{step}` step ({subject}) did not end within {} s and was stopped (SLUICE_TS_STEP_TIMEOUT sets the limit in seconds)",
        .after.as_secs()
    )]
    Timeout {
        step: String,
        subject: String,
        after: Duration,
    },
    #[error(
        "the TypeScript toolchain's `{step}` step ({subject}) printed more than {} MiB and was stopped",
        .limit / (1024 * 1024)
    )]
    TooMuchOutput {
        step: String,
        subject: String,
        limit: usize,
    },
    #[error("SLUICE_TS_STEP_TIMEOUT must be a whole number of seconds above 0, not {0:?}")]
    BadTimeout(String),
}

/// How long a step may take: componentize-js takes up to ~30 s for an
/// integration's component (the zero-yaml templates' largest, two builds
/// at a time on two cores), so ten minutes leave room for a slow or busy
/// machine and still end a step that hangs.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the `load` step may take: it runs each script's top-level
/// code and converts its zod models, well under a second a script (the
/// whole step 0.1–2 s an integration); two minutes end `for (;;) {}`.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// The most a step may print on its standard output: its answer is one
/// JSON line, the `definitions` step's holding every entry's bundle for
/// Node (tens of MB for the largest integrations).
pub const MAX_STEP_OUTPUT: usize = 256 * 1024 * 1024;

/// How much of a step's standard error is kept (the end of it), for the
/// message of a step that fails.
const STDERR_KEPT: usize = 1024 * 1024;

/// The line the `load` step writes on standard error before each entry
/// (`LOADING` in compile.mjs), naming it.
const LOADING: &str = "sluice: reading the definition of ";

/// The longest `SLUICE_TS_STEP_TIMEOUT` taken (a larger one is this):
/// a year, where the deadline it makes cannot overflow.
const MAX_STEP_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// A step's deadline: `SLUICE_TS_STEP_TIMEOUT` (seconds) when set, for
/// every step, else `default`.
fn step_timeout(default: Duration) -> Result<Duration, ToolchainError> {
    match std::env::var("SLUICE_TS_STEP_TIMEOUT") {
        Err(_) => Ok(default),
        Ok(text) => parse_timeout(&text),
    }
}

/// `SLUICE_TS_STEP_TIMEOUT`'s seconds, at most [`MAX_STEP_TIMEOUT`].
fn parse_timeout(text: &str) -> Result<Duration, ToolchainError> {
    match text.trim().parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs).min(MAX_STEP_TIMEOUT)),
        _ => Err(ToolchainError::BadTimeout(text.to_string())),
    }
}

/// The permission-model flag of a Node.js version, or `None` for a
/// release whose model a script can get around (the fixes of January
/// 2026: 20.20, 22.22, 24.13, 25.3; 21 and 23 had none) or that has none
/// (before 20.7). 22.13 and 23.5 made it stable as `--permission`; 20
/// knows only `--experimental-permission`.
fn permission_flag((major, minor): (u32, u32)) -> Option<&'static str> {
    let fixed = match major {
        20 => minor >= 20,
        22 => minor >= 22,
        24 => minor >= 13,
        25 => minor >= 3,
        m => m >= 26,
    };
    match (fixed, major) {
        (false, _) => None,
        (true, 20) => Some("--experimental-permission"),
        (true, _) => Some("--permission"),
    }
}

/// One message from a compile step.
#[derive(Debug, Clone, Deserialize)]
pub struct StepMessage {
    pub file: Option<String>,
    pub line: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for StepMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: {}", self.message),
            (Some(file), None) => write!(f, "{file}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// What a compile step reported.
#[derive(Debug, Clone, Deserialize)]
pub struct StepResult {
    pub ok: bool,
    #[serde(default)]
    pub errors: Vec<StepMessage>,
    #[serde(default)]
    pub warnings: Vec<StepMessage>,
    /// The `definitions` step's `.nango/nango.json` entry for one integration.
    #[serde(default)]
    pub definition: Option<Value>,
    /// The `definitions` step's kind of each entry file (`sync`, `action`,
    /// `onEvent`, `function`), by the path it was given.
    #[serde(default)]
    pub kinds: std::collections::BTreeMap<String, String>,
    /// The `definitions` step's project files read (absolute paths).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// The `migrate` step's rewritten sources, by absolute path.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
    /// The `bundle` step's test files left out (they did not bundle).
    #[serde(default)]
    pub skipped: Vec<SkippedTest>,
    /// The step that finishes this one by running the project's code
    /// (the `definitions` step's `load`), which [`Toolchain::run`] runs
    /// sandboxed and whose answer it merges into this one.
    #[serde(default)]
    then: Option<Sandboxed>,
}

/// A step [`Toolchain::run`] runs under Node's permission model.
#[derive(Debug, Clone, Deserialize)]
struct Sandboxed {
    step: String,
    job: Value,
    /// What it may read besides the SDK's `compile.mjs` and `zero.mjs`.
    #[serde(default)]
    read: Vec<PathBuf>,
}

/// A test file written by hand that the `bundle` step left out, and why.
#[derive(Debug, Clone, Deserialize)]
pub struct SkippedTest {
    pub key: String,
    pub message: String,
}

/// An installed SDK with its npm dependencies.
#[derive(Debug, Clone)]
pub struct Toolchain {
    dir: PathBuf,
    /// The Node.js every step runs: the one PATH names, by the absolute
    /// path of its executable.
    node: PathBuf,
    /// Its version (major, minor).
    version: (u32, u32),
}

impl Toolchain {
    /// `explicit` when given, otherwise the carried SDK, installed under
    /// `cache_dir` on first use (`progress` hears about it).
    pub fn locate(
        explicit: Option<&Path>,
        cache_dir: &Path,
        progress: &mut dyn Write,
    ) -> Result<Self, ToolchainError> {
        let (node, version) = find_node(std::env::var_os("PATH"))?;
        crate::debug::say(progress, || {
            format!("Node.js v{}.{} at {}", version.0, version.1, node.display())
        });
        if let Some(dir) = explicit {
            if !dir.join("compile.mjs").exists() || !dir.join("node_modules").exists() {
                return Err(ToolchainError::NotAnSdk {
                    dir: dir.display().to_string(),
                });
            }
            crate::debug::say(progress, || {
                format!("TypeScript SDK at {} (given)", dir.display())
            });
            return Ok(Self {
                dir: dir.to_path_buf(),
                node,
                version,
            });
        }
        let dir = cache_dir.join(format!("ts-sdk-{}", carried_digest()));
        let marker = dir.join(".installed");
        if marker.exists() {
            // Marks it used, for the pruning of other versions' copies.
            if let Ok(f) = std::fs::File::options().append(true).open(&marker) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
        } else {
            install(&dir, progress)?;
            prune_installs(cache_dir, &dir, UNUSED_INSTALL_AGE);
        }
        crate::debug::say(progress, || format!("TypeScript SDK at {}", dir.display()));
        Ok(Self { dir, node, version })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The Node.js executable the steps run.
    pub fn node(&self) -> &Path {
        &self.node
    }

    /// The SDK's version of the world: changes whenever the SDK, its
    /// dependencies or the contract change, so builds keyed on it are redone.
    pub fn fingerprint(&self) -> String {
        let lock = std::fs::read(self.dir.join("package-lock.json")).unwrap_or_default();
        let mut h = sha2_hex(&lock);
        h.push_str(&sha2_hex(WIT.as_bytes()));
        sha2_hex(h.as_bytes())
    }

    /// A digest of the steps' own code (`compile.mjs`, `zero.mjs`): results
    /// cached by a caller are keyed on it with the fingerprint.
    pub fn steps_digest(&self) -> String {
        let mut all = Vec::new();
        for f in ["compile.mjs", "zero.mjs"] {
            all.extend(std::fs::read(self.dir.join(f)).unwrap_or_default());
        }
        sha2_hex(&all)
    }

    /// Runs `compile.mjs <step>` with `job` on its standard input, then
    /// the step its answer names to finish it (`then`: the zero-yaml
    /// `definitions` step's `load`, which runs each script's top-level
    /// code) in a Node.js that may not write files, start processes or
    /// workers, load addons or open the inspector, and reads only the
    /// SDK's step files and what the first step names (zod), with an empty
    /// environment (no secrets of sluice's own environment to read). The
    /// two answers are merged: the first's errors, then the second's.
    pub fn run(&self, step: &str, job: &Value) -> Result<StepResult, ToolchainError> {
        let mut first = self.run_step(step, job, None, step_timeout(STEP_TIMEOUT)?)?;
        let Some(then) = first.then.take() else {
            return Ok(first);
        };
        let second = self.run_step(
            &then.step,
            &then.job,
            Some(&then.read),
            step_timeout(LOAD_TIMEOUT)?,
        )?;
        first.ok = first.ok && second.ok;
        first.errors.extend(second.errors);
        first.warnings.extend(second.warnings);
        first.definition = second.definition;
        first.kinds = second.kinds;
        Ok(first)
    }

    /// The arguments that put Node under its permission model, reading
    /// `read` and the SDK's step files (each as given and where its links
    /// lead: Node checks the paths its loader resolves). Each path once:
    /// Node 20 aborts on a path given twice.
    fn sandbox_args(&self, read: &[PathBuf]) -> Result<Vec<OsString>, ToolchainError> {
        let flag = permission_flag(self.version).ok_or_else(|| ToolchainError::NoSandbox {
            found: format!("v{}.{}", self.version.0, self.version.1),
        })?;
        let mut args = vec![OsString::from(flag), OsString::from("--no-warnings")];
        let steps = [self.dir.join("compile.mjs"), self.dir.join("zero.mjs")];
        let mut paths: Vec<PathBuf> = Vec::new();
        for path in steps.iter().chain(read) {
            for p in [Some(resolved(path)), std::fs::canonicalize(path).ok()]
                .into_iter()
                .flatten()
            {
                if !paths.contains(&p) {
                    paths.push(p);
                }
            }
        }
        for p in paths {
            let mut arg = OsString::from("--allow-fs-read=");
            arg.push(p);
            args.push(arg);
        }
        Ok(args)
    }

    /// One run of `compile.mjs <step>`, sandboxed when `sandbox` names what
    /// it may read, stopped at `timeout` or past [`MAX_STEP_OUTPUT`].
    fn run_step(
        &self,
        step: &str,
        job: &Value,
        sandbox: Option<&[PathBuf]>,
        timeout: Duration,
    ) -> Result<StepResult, ToolchainError> {
        // By its absolute path: the sandboxed step's environment has no
        // PATH (a program name would be looked up in /bin:/usr/bin).
        let mut command = Command::new(&self.node);
        if let Some(read) = sandbox {
            command.env_clear();
            // Windows' process start-up needs it.
            if let Some(root) = std::env::var_os("SystemRoot") {
                command.env("SystemRoot", root);
            }
            command.args(self.sandbox_args(read)?);
        }
        die_with_this_process(&mut command);
        let child = command
            .arg(self.dir.join("compile.mjs"))
            .arg(step)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ToolchainError::Run(format!("cannot start node: {e}")))?;
        let limits = StepLimits {
            timeout,
            max_output: MAX_STEP_OUTPUT,
        };
        let output = match wait_limited(child, job.to_string().into_bytes(), limits) {
            Ok(output) => output,
            Err(Stopped::Io(e)) => return Err(ToolchainError::Run(e.to_string())),
            Err(Stopped::Timeout { stderr }) => {
                return Err(ToolchainError::Timeout {
                    step: step.to_string(),
                    subject: subject(step, job, &stderr),
                    after: timeout,
                });
            }
            Err(Stopped::TooMuchOutput { stderr }) => {
                return Err(ToolchainError::TooMuchOutput {
                    step: step.to_string(),
                    subject: subject(step, job, &stderr),
                    limit: MAX_STEP_OUTPUT,
                });
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stdout.lines().rev().find(|l| l.starts_with('{'));
        match last.and_then(|l| serde_json::from_str::<StepResult>(l).ok()) {
            // componentize-js keeps going when the scripts' top-level code
            // throws while the engine is snapshotted; every call of such a
            // component would trap, so it is a failed build.
            Some(mut r) if r.ok && step == "componentize" => {
                let text = format!("{stdout}\n{stderr}");
                if let Some(at) = text.find("Exception while evaluating top-level script") {
                    let detail: Vec<&str> = text[at..]
                        .lines()
                        .filter(|l| !l.starts_with('{') && !l.trim().is_empty())
                        .take(4)
                        .collect();
                    r.ok = false;
                    r.errors.push(StepMessage {
                        file: None,
                        line: None,
                        message: format!(
                            "the scripts' top-level code failed while the engine was snapshotted: {}",
                            detail.join(" ")
                        ),
                    });
                }
                Ok(r)
            }
            // The sandboxed step answers for itself only.
            Some(mut r) if sandbox.is_some() => {
                r.then = None;
                Ok(r)
            }
            Some(r) => Ok(r),
            None => Err(ToolchainError::Run(format!(
                "`{step}` ({}) exited with {} and printed no result: {}",
                subject(step, job, &stderr),
                output.status,
                stderr.trim()
            ))),
        }
    }
}

/// `path` as Node's `path.resolve` makes it: absolute, with no `.` or
/// `..` part and no trailing separator (links are not followed).
fn resolved(path: &Path) -> PathBuf {
    use std::path::Component;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// What a step was working on, for a message: the entry whose top-level
/// code the `load` step was running (the last line it wrote before it),
/// else the integration, bundle or project its job names.
fn subject(step: &str, job: &Value, stderr: &str) -> String {
    if let Some(file) = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(LOADING))
        .map(str::trim)
    {
        return format!("running the top-level code of {file}");
    }
    let text = |key: &str| job.get(key).and_then(Value::as_str);
    match (step, text("integration"), text("component"), text("root")) {
        ("load" | "definitions", Some(id), _, _) => format!("reading the definitions of {id}"),
        (_, _, Some(component), _) => format!("building {component}"),
        (_, Some(id), None, _) => format!("integration {id}"),
        (_, None, None, Some(root)) => format!("project {root}"),
        _ => "no file named".to_string(),
    }
}

/// What a step may use.
#[derive(Debug, Clone, Copy)]
struct StepLimits {
    timeout: Duration,
    max_output: usize,
}

/// Why a step was stopped ([`wait_limited`]).
#[derive(Debug)]
enum Stopped {
    Io(std::io::Error),
    /// With the end of its standard error, which may name what it was doing.
    Timeout {
        stderr: String,
    },
    TooMuchOutput {
        stderr: String,
    },
}

/// What a step printed, once it ended.
struct StepOutput {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// What the reading threads tell the waiting one.
enum Piped {
    Stdout(std::io::Result<Vec<u8>>),
    /// Standard output passed the limit (its reader stopped).
    Overflow,
    Stderr(Vec<u8>),
}

/// Feeds `input` to `child` and collects its output, on helper threads,
/// while this thread waits for it to end (the thread that started a child
/// must be the one that waits: [`die_with_this_process`]); kills it at
/// `limits.timeout` or when its standard output passes `limits.max_output`.
fn wait_limited(
    mut child: std::process::Child,
    input: Vec<u8>,
    limits: StepLimits,
) -> Result<StepOutput, Stopped> {
    let now = Instant::now();
    // `SLUICE_TS_STEP_TIMEOUT` is capped; a longer time still never panics.
    let deadline = now
        .checked_add(limits.timeout)
        .unwrap_or_else(|| now + MAX_STEP_TIMEOUT);
    let (tx, rx) = mpsc::channel();
    if let Some(mut stdin) = child.stdin.take() {
        // A step that exits before reading it all breaks the pipe: its
        // answer says what went wrong.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    if let Some(mut stdout) = child.stdout.take() {
        let tx = tx.clone();
        let max = limits.max_output;
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) if out.len() + n > max => {
                        let _ = tx.send(Piped::Overflow);
                        return;
                    }
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Piped::Stdout(Err(e)));
                        return;
                    }
                }
            }
            let _ = tx.send(Piped::Stdout(Ok(out)));
        });
    } else {
        let _ = tx.send(Piped::Stdout(Ok(Vec::new())));
    }
    if let Some(mut stderr) = child.stderr.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stderr.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        kept.extend_from_slice(&buf[..n]);
                        if kept.len() > 2 * STDERR_KEPT {
                            kept.drain(..kept.len() - STDERR_KEPT);
                        }
                    }
                }
            }
            if kept.len() > STDERR_KEPT {
                kept.drain(..kept.len() - STDERR_KEPT);
            }
            let _ = tx.send(Piped::Stderr(kept));
        });
    } else {
        let _ = tx.send(Piped::Stderr(Vec::new()));
    }
    drop(tx);

    let mut status = None;
    let mut stdout = None;
    let mut stderr: Option<Vec<u8>> = None;
    let stop = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    // The end of standard error once stopped (its pipe closes with the
    // child, unless a process the child started holds it: then nothing).
    let late_stderr = |rx: &mpsc::Receiver<Piped>, mut stderr: Option<Vec<u8>>| {
        let until = Instant::now() + Duration::from_millis(500);
        while stderr.is_none() {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            match rx.recv_timeout(left) {
                Ok(Piped::Stderr(b)) => stderr = Some(b),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&stderr.unwrap_or_default()).into_owned()
    };
    let mut tick = Duration::from_millis(1);
    loop {
        if status.is_none() {
            status = child.try_wait().map_err(Stopped::Io)?;
        }
        if let Some(status) = status
            && stdout.is_some()
            && stderr.is_some()
        {
            let out: std::io::Result<Vec<u8>> = stdout.take().unwrap_or(Ok(Vec::new()));
            return Ok(StepOutput {
                status,
                stdout: out.map_err(Stopped::Io)?,
                stderr: stderr.take().unwrap_or_default(),
            });
        }
        let now = Instant::now();
        if now >= deadline {
            stop(&mut child);
            return Err(Stopped::Timeout {
                stderr: late_stderr(&rx, stderr),
            });
        }
        // A message, or the next look at the child: sooner at first
        // (most steps end in well under a second), then every 50 ms.
        match rx.recv_timeout(tick.min(deadline - now)) {
            Ok(Piped::Stdout(out)) => stdout = Some(out),
            Ok(Piped::Stderr(err)) => stderr = Some(err),
            Ok(Piped::Overflow) => {
                stop(&mut child);
                return Err(Stopped::TooMuchOutput {
                    stderr: late_stderr(&rx, stderr),
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Both pipes read: only the exit is awaited.
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(tick),
        }
        tick = (tick * 2).min(Duration::from_millis(50));
    }
}

/// A build step (node, cargo) is killed when sluice dies, however it dies
/// (SIGKILL included): a `sluice compile` stopped half-way leaves no build
/// going on behind it. The parent-death signal is the kernel's; it is sent
/// when the thread that started the child ends, so the caller waits for
/// the child on that thread (as [`Toolchain::run`] does).
/// (A Wizer that node had started finishes its snapshot on its own and
/// exits; its output goes to a temporary file nobody reads.)
#[cfg(target_os = "linux")]
pub(crate) fn die_with_this_process(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, and
    // calls only async-signal-safe functions (prctl, getppid, _exit); it
    // allocates nothing.
    unsafe {
        command.pre_exec(move || {
            // prctl is variadic: the signal goes as the unsigned long the
            // kernel reads.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // sluice died before the signal was armed.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn die_with_this_process(_command: &mut Command) {}

/// The `node` executable `path` (a PATH value) names first, as an
/// absolute path, with its version (major, minor), 20 or later. The
/// executable is the one Node reports running (`process.execPath`): a
/// version manager's shim (volta, asdf) runs another program, which
/// needs the environment the sandboxed step does not have.
fn find_node(path: Option<OsString>) -> Result<(PathBuf, (u32, u32)), ToolchainError> {
    let on_path = on_path("node", path.as_deref())
        .ok_or_else(|| ToolchainError::NoNode("no `node` found".to_string()))?;
    let out = Command::new(&on_path)
        .args([
            "-e",
            "console.log(process.version); console.log(process.execPath)",
        ])
        .output()
        .map_err(|e| ToolchainError::NoNode(format!("{}: {e}", on_path.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(str::trim);
    let version = lines.next().unwrap_or("");
    let mut parts = version
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    if major < 20 {
        let found = if version.is_empty() {
            "no version"
        } else {
            version
        };
        return Err(ToolchainError::NoNode(format!(
            "found {found} at {}",
            on_path.display()
        )));
    }
    let exe = lines
        .next()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_file())
        .unwrap_or(on_path);
    Ok((exe, (major, minor)))
}

/// The first executable file `name` in the folders of `path` (a PATH
/// value), made absolute.
fn on_path(name: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let names: Vec<String> = if cfg!(windows) {
        vec![format!("{name}.exe"), format!("{name}.cmd")]
    } else {
        vec![name.to_string()]
    };
    for dir in std::env::split_paths(path?) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        for n in &names {
            let candidate = dir.join(n);
            if is_executable(&candidate) {
                return std::path::absolute(&candidate).ok();
            }
        }
    }
    None
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

fn sha2_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A digest of the carried files, naming the installed copy.
fn carried_digest() -> String {
    let mut all = Vec::new();
    for (path, text) in FILES {
        all.extend_from_slice(path.as_bytes());
        all.extend_from_slice(text.as_bytes());
    }
    sha2_hex(&all)
}

/// How long another sluice version's installed SDK (~400 MB) is kept
/// unused before a new install deletes it.
const UNUSED_INSTALL_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Deletes the other `ts-sdk-*` installs in `cache_dir` that no sluice
/// has used for `age` (their `.installed` marker is touched on use).
fn prune_installs(cache_dir: &Path, keep: &Path, age: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_install = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("ts-sdk-"));
        if !is_install || path == keep {
            continue;
        }
        let unused = std::fs::metadata(path.join(".installed"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|d| d >= age);
        if unused {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Writes the carried SDK to `dir` and installs its dependencies.
fn install(dir: &Path, progress: &mut dyn Write) -> Result<(), ToolchainError> {
    let err = |reason: String| ToolchainError::Install {
        dir: dir.display().to_string(),
        reason,
    };
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
    let staging = parent.join(format!(
        ".{}.{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    for (path, text) in FILES {
        let target = staging.join(path);
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p).map_err(|e| err(e.to_string()))?;
        }
        std::fs::write(&target, text).map_err(|e| err(e.to_string()))?;
    }
    let _ = writeln!(
        progress,
        "Installing the TypeScript toolchain (esbuild, componentize-js) into {} (first use only)…",
        dir.display()
    );
    // `npm ci` rejects npm 11's own lockfile for these packages' optional
    // platform builds; `install` follows the lockfile all the same.
    let status = Command::new("npm")
        .args([
            "install",
            "--omit=dev",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(&staging)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| err(format!("cannot run npm: {e}")))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(err(format!("`npm install` exited with {status}")));
    }
    std::fs::write(staging.join(".installed"), "").map_err(|e| err(e.to_string()))?;
    match std::fs::rename(&staging, dir) {
        Ok(()) => Ok(()),
        // Another sluice installed it meanwhile.
        Err(_) if dir.join(".installed").exists() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(())
        }
        Err(e) => Err(err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SDK source file missing from `FILES` is missing from every
    /// installed toolchain: scripts fail to bundle ("Could not resolve").
    #[test]
    fn every_sdk_source_file_is_carried() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-sdk/ts");
        let mut missing = Vec::new();
        let mut dirs = vec![sdk.join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let rel = path
                    .strip_prefix(&sdk)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                if !FILES.iter().any(|(name, _)| *name == rel) {
                    missing.push(rel);
                }
            }
        }
        assert!(missing.is_empty(), "not in FILES: {missing:?}");
    }

    fn node(script: &str) -> std::process::Child {
        Command::new("node")
            .args(["-e", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node on PATH")
    }

    #[test]
    fn a_step_gets_its_whole_input_and_gives_its_whole_output() {
        // More than a pipe holds, both ways at once.
        let input = vec![b'x'; 4 * 1024 * 1024];
        let child = node("process.stdin.pipe(process.stdout); console.error('to stderr')");
        let limits = StepLimits {
            timeout: Duration::from_secs(300),
            max_output: MAX_STEP_OUTPUT,
        };
        let out = wait_limited(child, input.clone(), limits).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), input.len());
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "to stderr");
    }

    #[test]
    fn a_step_that_never_ends_is_stopped() {
        let child = node("for (;;) {}");
        let pid = child.id();
        let limits = StepLimits {
            timeout: Duration::from_secs(1),
            max_output: MAX_STEP_OUTPUT,
        };
        let result = wait_limited(child, Vec::new(), limits);
        assert!(
            matches!(result, Err(Stopped::Timeout { .. })),
            "{:?}",
            result.err()
        );
        // Killed, not left running.
        #[cfg(target_os = "linux")]
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} still runs"
        );
        let _ = pid;
    }

    #[test]
    fn a_stopped_step_is_named_by_what_it_was_doing() {
        let job = serde_json::json!({ "integration": "demo" });
        let stderr = "sluice: reading the definition of demo/actions/ok.ts\nsluice: reading the definition of demo/actions/act.ts\n";
        assert_eq!(
            subject("load", &job, stderr),
            "running the top-level code of demo/actions/act.ts"
        );
        assert_eq!(subject("load", &job, ""), "reading the definitions of demo");
        let build =
            serde_json::json!({ "integration": "demo", "component": "/p/.sluice/build/demo.wasm" });
        assert_eq!(
            subject("componentize", &build, ""),
            "building /p/.sluice/build/demo.wasm"
        );
        let err = ToolchainError::Timeout {
            step: "load".into(),
            subject: subject("load", &job, stderr),
            after: LOAD_TIMEOUT,
        };
        assert_eq!(
            err.to_string(),
            "the TypeScript toolchain's `load` step (running the top-level code of demo/actions/act.ts) did not end within 120 s and was stopped (SLUICE_TS_STEP_TIMEOUT sets the limit in seconds)"
        );
    }

    #[test]
    fn a_step_that_prints_without_end_is_stopped() {
        let child = node(
            "const s = 'x'.repeat(1 << 16); const more = () => process.stdout.write(s, more); more();",
        );
        let limits = StepLimits {
            timeout: Duration::from_secs(300),
            max_output: 1024 * 1024,
        };
        let result = wait_limited(child, Vec::new(), limits);
        assert!(
            matches!(result, Err(Stopped::TooMuchOutput { .. })),
            "{:?}",
            result.err()
        );
    }

    #[cfg(unix)]
    #[test]
    fn sandboxed_paths_are_given_once_each() {
        let sdk = tempfile::tempdir().unwrap();
        let zod = sdk.path().join("node_modules/zod4");
        std::fs::create_dir_all(&zod).unwrap();
        let link = sdk.path().join("zod");
        std::os::unix::fs::symlink(&zod, &link).unwrap();
        let toolchain = Toolchain {
            dir: sdk.path().join("x/.."),
            node: PathBuf::from("/usr/bin/node"),
            version: (22, 22),
        };
        let read = [link.clone(), zod.join("."), zod.clone()];
        let args = toolchain.sandbox_args(&read).unwrap();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let real = std::fs::canonicalize(sdk.path()).unwrap();
        let mut want = vec!["--permission".to_string(), "--no-warnings".to_string()];
        for p in [
            sdk.path().join("compile.mjs"),
            real.join("compile.mjs"),
            sdk.path().join("zero.mjs"),
            real.join("zero.mjs"),
            link,
            real.join("node_modules/zod4"),
            zod,
        ] {
            let arg = format!("--allow-fs-read={}", p.display());
            if !want.contains(&arg) {
                want.push(arg);
            }
        }
        assert_eq!(args, want);
        for version in [(20, 5), (20, 19), (22, 21), (23, 11)] {
            let old = Toolchain {
                dir: sdk.path().to_path_buf(),
                node: PathBuf::from("/usr/bin/node"),
                version,
            };
            let err = old.sandbox_args(&[]).unwrap_err();
            assert!(
                matches!(&err, ToolchainError::NoSandbox { found } if *found == format!("v{}.{}", version.0, version.1)),
                "{err}"
            );
        }
    }

    #[test]
    fn the_permission_flag_follows_the_node_version() {
        // Releases before the fixes of January 2026 let a script read
        // past the allowed paths: refused.
        for old in [(20, 6), (20, 7), (20, 19), (21, 7), (22, 13), (22, 21)] {
            assert_eq!(permission_flag(old), None, "{old:?}");
        }
        for old in [(23, 11), (24, 12), (25, 2), (19, 9)] {
            assert_eq!(permission_flag(old), None, "{old:?}");
        }
        assert_eq!(permission_flag((20, 20)), Some("--experimental-permission"));
        assert_eq!(permission_flag((20, 21)), Some("--experimental-permission"));
        assert_eq!(permission_flag((22, 22)), Some("--permission"));
        assert_eq!(permission_flag((24, 13)), Some("--permission"));
        assert_eq!(permission_flag((25, 3)), Some("--permission"));
        assert_eq!(permission_flag((26, 0)), Some("--permission"));
    }

    #[test]
    fn a_step_timeout_is_capped_where_its_deadline_fits() {
        assert_eq!(parse_timeout("30").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse_timeout("18446744073709551615").unwrap(),
            MAX_STEP_TIMEOUT
        );
        assert!(matches!(
            parse_timeout("0"),
            Err(ToolchainError::BadTimeout(_))
        ));
        assert!(matches!(
            parse_timeout("-1"),
            Err(ToolchainError::BadTimeout(_))
        ));
        // The longest wait there is ends (here at once) without a panic.
        let child = node("");
        let limits = StepLimits {
            timeout: Duration::MAX,
            max_output: MAX_STEP_OUTPUT,
        };
        let out = wait_limited(child, Vec::new(), limits).unwrap();
        assert!(out.status.success());
    }

    /// The `node` PATH names first is the one every step runs, by its
    /// absolute path: the sandboxed step's environment has no PATH, and
    /// the name alone ran /usr/bin's node there, or none (nvm, fnm,
    /// volta, Homebrew, setup-node install elsewhere).
    #[cfg(unix)]
    #[test]
    fn every_step_runs_the_node_path_names() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let (real, version) = find_node(std::env::var_os("PATH")).expect("node on PATH");
        // A `node` elsewhere (as a version manager installs it), first on
        // PATH: it says it is itself and notes each run it passes on.
        let bin = tmp.path().join("managed/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let fake = bin.join("node");
        let runs = tmp.path().join("runs");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nif [ \"$1\" = -e ]; then {real:?} --version; echo \"$0\"; exit 0; fi\necho \"$*\" >> {runs:?}\nexec {real:?} \"$@\"\n",
                real = real.display().to_string(),
                runs = runs.display().to_string(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut path = vec![std::path::PathBuf::from(""), bin.clone()];
        path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap()));
        let path = std::env::join_paths(path).unwrap();
        let (node, found) = find_node(Some(path)).unwrap();
        assert_eq!(node, fake);
        assert_eq!(found, version);

        // An SDK whose step answers with where it ran.
        let sdk = tmp.path().join("sdk");
        std::fs::create_dir_all(&sdk).unwrap();
        std::fs::write(
            sdk.join("compile.mjs"),
            "console.log(JSON.stringify({ ok: true, warnings: [{ message: process.argv[2] }] }));\n",
        )
        .unwrap();
        std::fs::write(sdk.join("zero.mjs"), "").unwrap();
        let toolchain = Toolchain {
            dir: sdk.clone(),
            node,
            version: found,
        };
        let out = toolchain
            .run_step("build", &Value::Null, None, Duration::from_secs(60))
            .unwrap();
        assert_eq!(out.warnings[0].message, "build");
        if permission_flag(found).is_some() {
            let out = toolchain
                .run_step("load", &Value::Null, Some(&[]), Duration::from_secs(60))
                .unwrap();
            assert_eq!(out.warnings[0].message, "load");
        }
        let runs = std::fs::read_to_string(&runs).unwrap();
        let runs: Vec<&str> = runs.lines().collect();
        assert!(runs[0].ends_with("compile.mjs build"), "{runs:?}");
        if permission_flag(found).is_some() {
            assert_eq!(runs.len(), 2, "{runs:?}");
            assert!(
                runs[1].contains("-permission ") && runs[1].ends_with("compile.mjs load"),
                "{runs:?}"
            );
        }
        assert!(matches!(
            find_node(Some(std::ffi::OsString::from(tmp.path()))),
            Err(ToolchainError::NoNode(_))
        ));
    }

    #[test]
    fn other_versions_installs_unused_for_a_while_are_pruned() {
        let cache = tempfile::tempdir().unwrap();
        let make = |name: &str, age_secs: u64| {
            let dir = cache.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let marker = std::fs::File::create(dir.join(".installed")).unwrap();
            marker
                .set_modified(
                    std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs),
                )
                .unwrap();
            dir
        };
        let current = make("ts-sdk-new", 0);
        let old = make("ts-sdk-old", 30 * 24 * 3600);
        let recent = make("ts-sdk-recent", 3600);
        let other = make("compat-zero", 30 * 24 * 3600);
        prune_installs(cache.path(), &current, UNUSED_INSTALL_AGE);
        assert!(current.exists());
        assert!(!old.exists(), "unused for a month: deleted");
        assert!(recent.exists(), "used an hour ago: kept");
        assert!(other.exists(), "not an SDK install: kept");
    }
}
