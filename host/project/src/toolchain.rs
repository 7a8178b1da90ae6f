//! The TypeScript toolchain: the SDK, esbuild and componentize-js, driven
//! through `guest-sdk/ts/compile.mjs` with Node.js.
//!
//! sluice carries the SDK's sources; on first use they are written to the
//! cache directory and their npm dependencies installed there.
//! `SLUICE_TS_SDK` (or `--sdk`) points at an installed copy instead, such as
//! a checkout's `guest-sdk/ts`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
}

impl Toolchain {
    /// `explicit` when given, otherwise the carried SDK, installed under
    /// `cache_dir` on first use (`progress` hears about it).
    pub fn locate(
        explicit: Option<&Path>,
        cache_dir: &Path,
        progress: &mut dyn Write,
    ) -> Result<Self, ToolchainError> {
        node_version()?;
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
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// Runs `compile.mjs <step>` with `job` on its standard input.
    pub fn run(&self, step: &str, job: &Value) -> Result<StepResult, ToolchainError> {
        let mut command = Command::new("node");
        die_with_this_process(&mut command);
        let mut child = command
            .arg(self.dir.join("compile.mjs"))
            .arg(step)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ToolchainError::Run(format!("cannot start node: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(job.to_string().as_bytes())
                .map_err(|e| ToolchainError::Run(e.to_string()))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| ToolchainError::Run(e.to_string()))?;
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
            Some(r) => Ok(r),
            None => Err(ToolchainError::Run(format!(
                "`{step}` exited with {} and printed no result: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))),
        }
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

fn node_version() -> Result<(), ToolchainError> {
    let out = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| ToolchainError::NoNode(e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major: u32 = text
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        let found = if text.trim().is_empty() {
            "no version"
        } else {
            text.trim()
        };
        return Err(ToolchainError::NoNode(format!("found {found}")));
    }
    Ok(())
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
