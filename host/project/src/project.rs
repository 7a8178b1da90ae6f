//! A project folder on disk: local connections, environments, and the
//! scripts' components (built from a Rust crate when the folder is one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
        return build_rust_script(&manifest, script, None);
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
    Some(package["targets"].as_array()?.iter().any(|t| {
        t["name"] == name
            && t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
    }))
}

/// Builds binary `name` of the crate at `manifest` for `wasm32-wasip2`
/// (into `target_dir` when given, else the crate's own `target/`).
pub fn build_rust_script(
    manifest: &Path,
    name: &str,
    target_dir: Option<&Path>,
) -> Result<PathBuf, ProjectError> {
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
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(&cargo);
    crate::toolchain::die_with_this_process(&mut command);
    if let Some(dir) = target_dir {
        command.env("CARGO_TARGET_DIR", dir);
    }
    let output = command
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--bin",
            name,
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| ProjectError::Build {
            name: name.to_string(),
            reason: format!("cannot run cargo: {e}"),
        })?;
    if !output.status.success() {
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
        return Err(ProjectError::Build {
            name: name.to_string(),
            reason: format!(
                "cargo build of {} failed ({}); cargo's messages are above{hint}",
                manifest.display(),
                output.status,
            ),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
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
        .ok_or_else(|| ProjectError::Build {
            name: name.to_string(),
            reason: "cargo produced no .wasm for it".into(),
        })
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
}
