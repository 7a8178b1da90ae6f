//! A project folder on disk: local connections, environments, and the
//! scripts' components (built from a Rust crate when the folder is one).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sluice_runtime::connection::Connection;
use sluice_runtime::{Environment, Limits};

/// Errors reading a project.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Invalid { path: String, message: String },
    #[error("no connection `{connection_id}`{of_integration} in {path}{hint}")]
    UnknownConnection {
        connection_id: String,
        /// ` for integration `X`` when one was asked for.
        of_integration: String,
        path: String,
        hint: String,
    },
    #[error(
        "connection `{connection_id}` exists for several integrations ({keys}): pass --integration-id"
    )]
    AmbiguousConnection { connection_id: String, keys: String },
    #[error("no environment `{name}` in {path} (it has: {known})")]
    UnknownEnvironment {
        name: String,
        path: String,
        known: String,
    },
    #[error("cannot find script `{name}`: {reason}")]
    UnknownScript { name: String, reason: String },
    #[error("building `{name}` failed: {reason}")]
    Build { name: String, reason: String },
}

/// A project's own file (`connections.yaml`, `sluice.yaml`): a regular
/// file of at most 8 MiB, as nango.yaml.
fn read(path: &Path) -> Result<String, ProjectError> {
    sluice_nango_yaml::read_text_file(path, sluice_nango_yaml::MAX_FILE_BYTES).map_err(|source| {
        ProjectError::Read {
            path: path.display().to_string(),
            source,
        }
    })
}

/// `connections.yaml`: the connections a dry run may use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionsFile {
    connections: Vec<Connection>,
}

/// Reads a connections file.
pub fn load_connections(path: &Path) -> Result<Vec<Connection>, ProjectError> {
    let text = read(path)?;
    let invalid = |message: String| ProjectError::Invalid {
        path: path.display().to_string(),
        message,
    };
    let raw: serde_norway::Value =
        serde_norway::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    if let Some(entries) = raw.get("connections").and_then(|c| c.as_sequence()) {
        for (i, entry) in entries.iter().enumerate() {
            check_connection_entry(entry)
                .map_err(|why| invalid(format!("connections[{i}]: {why}")))?;
        }
    }
    // Read again, typed, from the text: its errors give the line.
    let file: ConnectionsFile =
        serde_norway::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    Ok(file.connections)
}

/// The keys a `connections.yaml` entry may have (a connection's fields).
const CONNECTION_KEYS: [&str; 11] = [
    "connection_id",
    "provider_config_key",
    "provider",
    "credentials",
    "connection_config",
    "metadata",
    "end_user",
    "tags",
    "webhook_url_override",
    "created_at",
    "updated_at",
];

/// Credential types, as the original's auth modes name them.
const CREDENTIAL_TYPES: [&str; 19] = [
    "OAUTH2",
    "OAUTH2_CC",
    "OAUTH1",
    "BASIC",
    "API_KEY",
    "APP",
    "APP_STORE",
    "CUSTOM",
    "JWT",
    "SIGNATURE",
    "TWO_STEP",
    "TABLEAU",
    "TBA",
    "BILL",
    "AWS_SIGV4",
    "INSTALL_PLUGIN",
    "MCP_OAUTH2",
    "MCP_OAUTH2_GENERIC",
    "NONE",
];

/// A misspelt key, or a credential type written in the wrong case, in a
/// `connections.yaml` entry would otherwise be ignored: a run without
/// credentials (retried for seconds on 401s), or without its metadata.
/// (Another type is taken as it is: the host injects nothing for a type it
/// does not know, as before.)
fn check_connection_entry(entry: &serde_norway::Value) -> Result<(), String> {
    let Some(map) = entry.as_mapping() else {
        return Ok(()); // the typed read names it
    };
    for key in map.keys() {
        let key = key.as_str().unwrap_or_default();
        if !CONNECTION_KEYS.contains(&key) {
            return Err(format!(
                "unknown field `{key}`, expected one of {}",
                CONNECTION_KEYS.map(|k| format!("`{k}`")).join(", ")
            ));
        }
    }
    let kind = map
        .get("credentials")
        .and_then(|c| c.get("type"))
        .and_then(|t| t.as_str());
    if let Some(kind) = kind
        && !CREDENTIAL_TYPES.contains(&kind)
    {
        let upper = kind.to_ascii_uppercase();
        if CREDENTIAL_TYPES.contains(&upper.as_str()) {
            return Err(format!(
                "credentials type `{kind}` is written `{upper}` (types are upper case: {})",
                CREDENTIAL_TYPES.join(", ")
            ));
        }
    }
    Ok(())
}

/// The connection a dry run names, by id and optionally integration.
pub fn pick_connection(
    connections: &[Connection],
    connection_id: &str,
    integration: Option<&str>,
    path: &Path,
) -> Result<Connection, ProjectError> {
    let matching: Vec<&Connection> = connections
        .iter()
        .filter(|c| c.connection_id == connection_id)
        .filter(|c| integration.is_none_or(|i| c.provider_config_key == i))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            // One of this id for another integration is named with it.
            let known: Vec<String> = connections
                .iter()
                .map(|c| match integration {
                    Some(_) if c.connection_id == connection_id => {
                        format!(
                            "{} for integration `{}`",
                            c.connection_id, c.provider_config_key
                        )
                    }
                    _ => c.connection_id.clone(),
                })
                .collect();
            Err(ProjectError::UnknownConnection {
                connection_id: connection_id.to_string(),
                of_integration: integration
                    .map(|i| format!(" for integration `{i}`"))
                    .unwrap_or_default(),
                path: path.display().to_string(),
                hint: if known.is_empty() {
                    String::new()
                } else {
                    format!(" (it has: {})", known.join(", "))
                },
            })
        }
        many => Err(ProjectError::AmbiguousConnection {
            connection_id: connection_id.to_string(),
            keys: many
                .iter()
                .map(|c| c.provider_config_key.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// `sluice.yaml`: per-environment variables and limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: Limits,
}

/// The environment `name` from `<dir>/sluice.yaml`, or defaults when the
/// project has no such file.
pub fn load_environment(dir: &Path, name: &str) -> Result<Environment, ProjectError> {
    let path = dir.join("sluice.yaml");
    if !path.exists() {
        return Ok(Environment {
            name: name.to_string(),
            ..Environment::default()
        });
    }
    let config: ProjectConfig =
        serde_norway::from_str(&read(&path)?).map_err(|e| ProjectError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    let Some(env) = config.environments.get(name) else {
        if config.environments.is_empty() {
            return Ok(Environment {
                name: name.to_string(),
                ..Environment::default()
            });
        }
        return Err(ProjectError::UnknownEnvironment {
            name: name.to_string(),
            path: path.display().to_string(),
            known: config
                .environments
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    if let Some(problem) = env.limits.problem() {
        return Err(ProjectError::Invalid {
            path: path.display().to_string(),
            message: format!("the limits of environment `{name}`: {problem}"),
        });
    }
    Ok(Environment {
        name: name.to_string(),
        variables: env
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        limits: env.limits.clone(),
        webhook_base_url: None,
    })
}

/// Finds the component of `script`: a `.wasm` path as is, or a binary of
/// the Rust crate in `dir`, built for `wasm32-wasip2` (cargo's progress goes
/// to stderr).
pub fn resolve_script(dir: &Path, script: &str) -> Result<PathBuf, ProjectError> {
    let as_path = Path::new(script);
    if as_path.extension().is_some_and(|e| e == "wasm") {
        return if as_path.exists() {
            Ok(as_path.to_path_buf())
        } else {
            Err(ProjectError::UnknownScript {
                name: script.to_string(),
                reason: format!("{} does not exist", as_path.display()),
            })
        };
    }
    let manifest = dir.join("Cargo.toml");
    if manifest.exists() {
        return build_rust_script(&manifest, script, None).map(|built| built.path);
    }
    Err(ProjectError::UnknownScript {
        name: script.to_string(),
        reason: format!(
            "{} has no Cargo.toml; pass the path of a .wasm component",
            dir.display()
        ),
    })
}

/// Whether the toolchain the build ran with (chosen as for the build:
/// from this process's directory and environment) lacks the standard
/// library for `wasm32-wasip2`. `false` when that cannot be told.
fn wasm_target_missing() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc)
        .args(["--print", "sysroot"])
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    !Path::new(&sysroot)
        .join("lib/rustlib/wasm32-wasip2")
        .is_dir()
}

/// Whether the crate at `manifest` has a binary target `name`, as `cargo
/// metadata` reads it (offline, no dependencies); `None` when it cannot
/// tell (a manifest cargo cannot read says so itself).
fn has_bin(cargo: &str, manifest: &Path, name: &str) -> Option<bool> {
    Some(package_targets(cargo, manifest)?.iter().any(|t| {
        t["name"] == name
            && t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
    }))
}

/// Whether the crate at `manifest` builds binaries alone (no library, no
/// build script).
fn only_bins(cargo: &str, manifest: &Path) -> Option<bool> {
    Some(package_targets(cargo, manifest)?.iter().all(|t| {
        t["kind"]
            .as_array()
            .is_some_and(|k| k.iter().all(|k| k == "bin"))
    }))
}

/// The targets of the package at `manifest`, from `cargo metadata`.
fn package_targets(cargo: &str, manifest: &Path) -> Option<Vec<serde_json::Value>> {
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let manifest = manifest.canonicalize().ok()?;
    let package = meta["packages"].as_array()?.iter().find(|p| {
        p["manifest_path"]
            .as_str()
            .and_then(|m| Path::new(m).canonicalize().ok())
            .is_some_and(|m| m == manifest)
    })?;
    package["targets"].as_array().cloned()
}

/// How long a Rust script's `cargo build` may take: a first build of a
/// crate and its dependencies takes minutes (the SDK's, about two on two
/// busy cores), so half an hour leaves room for a slow machine and still
/// ends a build script or proc macro that hangs.
/// `SLUICE_CARGO_BUILD_TIMEOUT` (seconds) sets another.
pub const CARGO_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The longest `SLUICE_CARGO_BUILD_TIMEOUT` taken (a larger one is this):
/// a year, where the deadline it makes cannot overflow.
const MAX_CARGO_BUILD_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The most of cargo's JSON messages read (its standard output): one
/// line per crate built, a few kilobytes each.
const MAX_CARGO_OUTPUT: usize = 64 << 20;

/// `SLUICE_CARGO_BUILD_TIMEOUT` (whole seconds above 0), else
/// [`CARGO_BUILD_TIMEOUT`].
fn cargo_build_timeout(name: &str) -> Result<Duration, ProjectError> {
    let Ok(text) = std::env::var("SLUICE_CARGO_BUILD_TIMEOUT") else {
        return Ok(CARGO_BUILD_TIMEOUT);
    };
    match text.trim().parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs).min(MAX_CARGO_BUILD_TIMEOUT)),
        _ => Err(ProjectError::Build {
            name: name.to_string(),
            reason: format!(
                "SLUICE_CARGO_BUILD_TIMEOUT must be a whole number of seconds above 0, not {text:?}"
            ),
        }),
    }
}

/// Whether a variable of sluice's environment is kept from a project's
/// `cargo build`: sluice's and Nango's settings (`NANGO_SECRET_KEY_*`,
/// `NANGO_HOSTPORT`, `SLUICE_MASTER_KEY`, …), so a crate's build script or
/// proc macro does not come by them by accident (logging its
/// environment, say). It is no sandbox: that code runs as the user, and
/// can read what the user can (files, other processes' environments).
/// The user's other variables are cargo's to use (a registry's
/// credentials, a credential provider's cloud keys, proxies).
pub fn hidden_from_cargo(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("NANGO_") || upper.starts_with("SLUICE_")
}

/// `vars` less those [`hidden_from_cargo`] names (a name that is not
/// UTF-8 is kept: none of those is).
fn cargo_environment(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    vars.into_iter()
        .filter(|(k, _)| !k.to_str().is_some_and(hidden_from_cargo))
        .collect()
}

/// A Rust script's component, as cargo built it.
#[derive(Debug)]
pub struct BuiltComponent {
    /// Where cargo put it. A later build of a binary of this name into the
    /// same target folder replaces it.
    pub path: PathBuf,
    /// Its bytes, read before another sluice's build into the target
    /// folder could replace them.
    pub bytes: Vec<u8>,
}

/// Builds binary `name` of the crate at `manifest` for `wasm32-wasip2`
/// (into `target_dir` when given, else the crate's own `target/`; as a
/// crate of its own there, [`crate_identity`]), with
/// sluice's environment less its secrets ([`hidden_from_cargo`]), stopped
/// after [`CARGO_BUILD_TIMEOUT`] (or `SLUICE_CARGO_BUILD_TIMEOUT`). Builds
/// into one `target_dir` take turns (a lock file in it), each reading what
/// it built before the next starts.
pub fn build_rust_script(
    manifest: &Path,
    name: &str,
    target_dir: Option<&Path>,
) -> Result<BuiltComponent, ProjectError> {
    let timeout = cargo_build_timeout(name)?;
    build_rust_script_with(
        manifest,
        name,
        target_dir,
        cargo_environment(std::env::vars_os()),
        timeout,
    )
}

/// [`build_rust_script`] with cargo's whole environment `env` and its
/// time limit given.
fn build_rust_script_with(
    manifest: &Path,
    name: &str,
    target_dir: Option<&Path>,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
) -> Result<BuiltComponent, ProjectError> {
    // Said before cargo spends a minute building the dependencies.
    static TARGET_MISSING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *TARGET_MISSING.get_or_init(wasm_target_missing) {
        return Err(ProjectError::Build {
            name: name.to_string(),
            reason: format!(
                "cannot build {}: the `wasm32-wasip2` target is not installed for the Rust toolchain: run `rustup target add wasm32-wasip2`",
                manifest.display()
            ),
        });
    }
    let failed = |reason: String| ProjectError::Build {
        name: name.to_string(),
        reason,
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // A crate of binaries alone shares the target folder, its binary told
    // apart from another crate's of the same name by a `--cfg`
    // ([`crate_identity`]); one with a library or a build script, whose
    // units that `--cfg` does not reach, builds in a folder of its own
    // there. Without a target folder (the crate's own `target/`), a plain
    // `cargo build` (which a virtual manifest takes).
    let (target_dir, tell_apart) = match target_dir {
        None => (None, false),
        Some(dir) if only_bins(&cargo, manifest) == Some(true) => (Some(dir.to_path_buf()), true),
        Some(dir) => (
            Some(dir.join(format!("crate-{}", crate_id(manifest)))),
            false,
        ),
    };
    // Held until the bytes are read: cargo names a binary's output by the
    // binary alone, and serializes builds into one folder only while they
    // run. (Not followed if a link; a file system without locks builds
    // without one, as cargo does.)
    let _turn = match &target_dir {
        Some(dir) => {
            use std::os::unix::fs::OpenOptionsExt as _;
            let path = dir.join(".sluice-build.lock");
            let lock = std::fs::create_dir_all(dir)
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&path)
                })
                .and_then(|file| file.lock().map(|()| Some(file)))
                .or_else(|e| match e.raw_os_error() {
                    Some(libc::ENOLCK | libc::EOPNOTSUPP) => Ok(None),
                    _ => Err(e),
                });
            lock.map_err(|e| failed(format!("cannot lock {}: {e}", path.display())))?
        }
        None => None,
    };
    let mut command = Command::new(&cargo);
    command.env_clear().envs(env);
    crate::toolchain::die_with_this_process(&mut command);
    if let Some(dir) = &target_dir {
        command.env("CARGO_TARGET_DIR", dir);
    }
    command.arg(if tell_apart { "rustc" } else { "build" });
    command
        .args(["--release", "--target", "wasm32-wasip2", "--bin", name])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--message-format=json-render-diagnostics");
    if tell_apart {
        command.arg("--").args(crate_identity(manifest));
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| failed(format!("cannot run cargo: {e}")))?;
    let (status, stdout) = match wait_for_cargo(child, timeout) {
        Ok(done) => done,
        Err(CargoStopped::Io(e)) => return Err(failed(format!("cannot run cargo: {e}"))),
        Err(CargoStopped::Timeout) => {
            return Err(failed(format!(
                "cargo build of {} did not end within {} s and was stopped (SLUICE_CARGO_BUILD_TIMEOUT sets the limit in seconds); cargo's messages are above",
                manifest.display(),
                timeout.as_secs()
            )));
        }
        Err(CargoStopped::TooMuchOutput) => {
            return Err(failed(format!(
                "cargo build of {} printed more than {} MiB of messages and was stopped",
                manifest.display(),
                MAX_CARGO_OUTPUT >> 20
            )));
        }
    };
    if !status.success() {
        // A hint only for what cargo's own messages do not say plainly.
        let hint = if wasm_target_missing() {
            " (the `wasm32-wasip2` target is not installed for the toolchain cargo used: run `rustup target add wasm32-wasip2`)".to_string()
        } else if has_bin(&cargo, manifest, name) == Some(false) {
            format!(
                " (the crate must build a binary named `{name}`: its package name, or src/bin/{name}.rs)"
            )
        } else {
            String::new()
        };
        return Err(failed(format!(
            "cargo build of {} failed ({status}); cargo's messages are above{hint}",
            manifest.display(),
        )));
    }
    let stdout = String::from_utf8_lossy(&stdout);
    let path = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .collect::<Vec<_>>()
        })
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
        .ok_or_else(|| failed("cargo produced no .wasm for it".into()))?;
    let bytes =
        std::fs::read(&path).map_err(|e| failed(format!("cannot read {}: {e}", path.display())))?;
    Ok(BuiltComponent { path, bytes })
}

/// What tells this crate from another of the same name in the same cargo
/// target folder, for its binary alone (given to `cargo rustc`, the
/// dependencies are not rebuilt): a `--cfg` naming its folder. Each crate
/// is the root of its own workspace, and cargo knows a workspace's root
/// package by its name, version and path in the workspace (none): two
/// integrations' `users` crates were one to it, and the second was taken
/// as built already, the first one's binary given for it.
fn crate_identity(manifest: &Path) -> [String; 2] {
    let id = crate_id(manifest);
    ["--cfg".into(), format!("sluice_crate=\"{id}\"")]
}

/// A name of the crate at `manifest` from its folder (a hash).
fn crate_id(manifest: &Path) -> String {
    use sha2::Digest as _;
    let path = manifest
        .canonicalize()
        .unwrap_or_else(|_| manifest.to_path_buf());
    let digest = sha2::Sha256::digest(path.as_os_str().as_encoded_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a `cargo build` was stopped ([`wait_for_cargo`]).
#[derive(Debug)]
enum CargoStopped {
    Io(std::io::Error),
    Timeout,
    TooMuchOutput,
}

/// Waits for cargo to end, on this thread (the one that started it: see
/// [`crate::toolchain::die_with_this_process`]), its standard output read
/// on another; at `timeout`, or past [`MAX_CARGO_OUTPUT`], stops it and
/// what it started ([`stop_tree`]).
fn wait_for_cargo(
    mut child: std::process::Child,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, Vec<u8>), CargoStopped> {
    let now = Instant::now();
    let deadline = now
        .checked_add(timeout)
        .unwrap_or_else(|| now + MAX_CARGO_BUILD_TIMEOUT);
    let (tx, rx) = mpsc::channel::<Option<std::io::Result<Vec<u8>>>>();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            // One byte past the limit tells that there was more.
            let read = stdout
                .take(MAX_CARGO_OUTPUT as u64 + 1)
                .read_to_end(&mut out);
            let _ = tx.send(match read {
                Ok(_) if out.len() > MAX_CARGO_OUTPUT => None,
                Ok(_) => Some(Ok(out)),
                Err(e) => Some(Err(e)),
            });
        });
    } else {
        let _ = tx.send(Some(Ok(Vec::new())));
    }
    let mut status = None;
    let mut stdout = None;
    // Once cargo has ended (and been reaped), its process id may be
    // another's: only what still runs under it is stopped, never it.
    let stop = |child: &mut std::process::Child, ended: bool| {
        if !ended {
            stop_tree(child);
        }
    };
    loop {
        if status.is_none() {
            status = match child.try_wait() {
                Ok(s) => s,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CargoStopped::Io(e));
                }
            };
        }
        if let Some(status) = status
            && let Some(out) = stdout.take()
        {
            return Ok((status, out));
        }
        let now = Instant::now();
        if now >= deadline {
            stop(&mut child, status.is_some());
            return Err(CargoStopped::Timeout);
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_millis(50))) {
            Ok(Some(Ok(out))) => stdout = Some(out),
            Ok(Some(Err(e))) => {
                stop(&mut child, status.is_some());
                return Err(CargoStopped::Io(e));
            }
            Ok(None) => {
                stop(&mut child, status.is_some());
                return Err(CargoStopped::TooMuchOutput);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Read whole: only the exit is awaited.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(10))
            }
        }
    }
}

/// Kills `child` and every process under it (cargo's rustc, build scripts
/// and the programs they started, which would otherwise go on without
/// it): each is stopped first, so none starts another while they are
/// found, then all are killed.
#[cfg(target_os = "linux")]
fn stop_tree(child: &mut std::process::Child) {
    let Ok(top) = libc::pid_t::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    let mut found = vec![top];
    // SAFETY: kill(2) with a process id and a signal number.
    unsafe { libc::kill(top, libc::SIGSTOP) };
    loop {
        let more: Vec<libc::pid_t> = children_of(&found)
            .into_iter()
            .filter(|p| !found.contains(p))
            .collect();
        if more.is_empty() {
            break;
        }
        for pid in more {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            found.push(pid);
        }
    }
    for pid in found {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = child.wait();
}

#[cfg(not(target_os = "linux"))]
fn stop_tree(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The processes whose parent is one of `parents`, from `/proc`.
#[cfg(target_os = "linux")]
fn children_of(parents: &[libc::pid_t]) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let pid: libc::pid_t = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid …`: the name may hold spaces and
            // parentheses, so fields are counted after its last `)`.
            let ppid: libc::pid_t = stat
                .get(stat.rfind(')')? + 1..)?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            parents.contains(&ppid).then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cloned project's `connections.yaml -> /dev/zero` was read for
    /// ever.
    #[cfg(unix)]
    #[test]
    fn project_files_are_read_only_as_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connections.yaml");
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let err = load_connections(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot read {}: not a regular file (it is a device)",
                path.display()
            )
        );
    }

    #[test]
    fn secrets_are_kept_from_cargo_and_its_own_settings_are_not() {
        for hidden in [
            "NANGO_SECRET_KEY_DEV",
            "NANGO_HOSTPORT",
            "SLUICE_MASTER_KEY",
            "SLUICE_TEST_POSTGRES",
            "nango_secret_key_prod",
        ] {
            assert!(hidden_from_cargo(hidden), "{hidden}");
        }
        // A credential provider's or a git helper's keys are cargo's to
        // use.
        for kept in [
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "PATH",
            "HOME",
            "RUSTFLAGS",
            "RUSTUP_TOOLCHAIN",
            "RUSTC_WRAPPER",
            "CARGO_HOME",
            "CARGO_REGISTRIES_MINE_TOKEN",
            "SSH_AUTH_SOCK",
            "HTTPS_PROXY",
        ] {
            assert!(!hidden_from_cargo(kept), "{kept}");
        }
    }

    /// A crate `name` in `dir` whose build script runs `build_rs`'s body.
    fn crate_with_build_script(dir: &Path, name: &str, build_rs: &str) -> PathBuf {
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\nbuild = \"build.rs\"\n\n[workspace]\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(
            dir.join("build.rs"),
            format!("fn main() {{\n{build_rs}\n}}\n"),
        )
        .unwrap();
        dir.join("Cargo.toml")
    }

    /// A project's build script sees cargo's environment: sluice's
    /// secrets are not in it, what builds need is.
    #[test]
    fn a_crates_build_script_does_not_see_sluices_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen.txt");
        let manifest = crate_with_build_script(
            &dir.path().join("peek"),
            "peek",
            &format!(
                "let names: Vec<String> = std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned()).collect();\nstd::fs::write({:?}, names.join(\"\\n\")).unwrap();",
                seen.display().to_string()
            ),
        );
        let planted = [
            ("NANGO_SECRET_KEY_DEV", "leak-1"),
            ("SLUICE_MASTER_KEY", "leak-2"),
            ("NANGO_HOSTPORT", "http://leak"),
        ];
        let env = cargo_environment(
            std::env::vars_os().chain(planted.map(|(k, v)| (k.into(), v.into()))),
        );
        let built = build_rust_script_with(
            &manifest,
            "peek",
            Some(&dir.path().join("target")),
            env,
            CARGO_BUILD_TIMEOUT,
        )
        .unwrap();
        assert!(built.path.is_file(), "{}", built.path.display());
        assert_eq!(std::fs::read(&built.path).unwrap(), built.bytes);
        let names = std::fs::read_to_string(&seen).unwrap();
        let names: Vec<&str> = names.lines().collect();
        for (planted, _) in planted {
            assert!(!names.contains(&planted), "{planted} in {names:?}");
        }
        for kept in ["PATH", "CARGO_MANIFEST_DIR"] {
            assert!(names.contains(&kept), "{kept} not in {names:?}");
        }
    }

    /// Two crates of one name built into one target folder each give
    /// their own binary: cargo took the second for the first, built
    /// already, when its files were older than that build.
    #[test]
    fn crates_of_one_name_in_one_target_folder_are_each_built() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let manifests: Vec<PathBuf> = ["first", "second"]
            .iter()
            .map(|which| {
                let krate = dir.path().join(which).join("users");
                std::fs::create_dir_all(krate.join("src")).unwrap();
                std::fs::write(
                    krate.join("Cargo.toml"),
                    "[package]\nname = \"users\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n",
                )
                .unwrap();
                std::fs::write(
                    krate.join("src/main.rs"),
                    format!("fn main() {{ println!(\"the {which} crate\"); }}\n"),
                )
                .unwrap();
                krate.join("Cargo.toml")
            })
            .collect();
        // And crates with a library (which a `--cfg` on the binary does
        // not reach): each in a folder of its own.
        let with_lib: Vec<PathBuf> = ["first", "second"]
            .iter()
            .map(|which| {
                let krate = dir.path().join(which).join("people");
                std::fs::create_dir_all(krate.join("src")).unwrap();
                std::fs::write(
                    krate.join("Cargo.toml"),
                    "[package]\nname = \"people\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n",
                )
                .unwrap();
                std::fs::write(
                    krate.join("src/lib.rs"),
                    format!("pub fn who() -> &'static str {{ \"the {which} library\" }}\n"),
                )
                .unwrap();
                std::fs::write(
                    krate.join("src/main.rs"),
                    "fn main() { println!(\"{}\", people::who()); }\n",
                )
                .unwrap();
                krate.join("Cargo.toml")
            })
            .collect();
        for round in 0..2 {
            for (name, crates, what) in [
                ("users", &manifests, "crate"),
                ("people", &with_lib, "library"),
            ] {
                for (manifest, which) in crates.iter().zip(["first", "second"]) {
                    let built = build_rust_script_with(
                        manifest,
                        name,
                        Some(&target),
                        cargo_environment(std::env::vars_os()),
                        CARGO_BUILD_TIMEOUT,
                    )
                    .unwrap();
                    let bytes = built.bytes;
                    let has = |text: &str| bytes.windows(text.len()).any(|w| w == text.as_bytes());
                    assert!(
                        has(&format!("the {which} {what}")),
                        "round {round}: {which} {name}"
                    );
                }
            }
        }
    }

    /// A build script that never ends is stopped at the time limit, with
    /// what it started.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_build_that_hangs_is_stopped_with_its_build_script() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid.txt");
        let manifest = crate_with_build_script(
            &dir.path().join("hang"),
            "hang",
            &format!(
                "std::fs::write({:?}, std::process::id().to_string()).unwrap();\nloop {{ std::thread::sleep(std::time::Duration::from_secs(1)); }}",
                pid_file.display().to_string()
            ),
        );
        let started = Instant::now();
        let err = build_rust_script_with(
            &manifest,
            "hang",
            Some(&dir.path().join("target")),
            cargo_environment(std::env::vars_os()),
            Duration::from_secs(20),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("did not end within 20 s and was stopped (SLUICE_CARGO_BUILD_TIMEOUT"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        let pid = std::fs::read_to_string(&pid_file).expect("the build script ran");
        // Killed, and reaped once cargo was gone.
        let gone = (0..100).any(|_| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
            let done = stat.is_err() || stat.is_ok_and(|s| s.contains(") Z "));
            if !done {
                std::thread::sleep(Duration::from_millis(50));
            }
            done
        });
        assert!(gone, "build script {pid} is still running");
    }
}
