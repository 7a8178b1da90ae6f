//! What a deploy carries: nango.yaml and the compiled components, each
//! component once (content-addressed by SHA-256), and how a server turns it
//! back into a [`Catalog`]. `sluice deploy` builds the manifest from a
//! compiled [`Project`]; `sluice serve` installs it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_nango_yaml as yaml;
use sluice_runtime::{Runtime, ScriptKind};

use crate::catalog::Catalog;
use crate::compile::{Project, Source};

/// One component of a deploy and the scripts it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentEntry {
    /// Hex SHA-256 of the component bytes.
    pub sha256: String,
    pub size: u64,
    /// A TypeScript bundle dispatches on the script name; any other
    /// component is one script.
    pub bundle: bool,
    pub scripts: Vec<ScriptEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptEntry {
    pub integration: String,
    pub name: String,
    pub kind: ScriptKind,
}

/// A deploy's description: uploaded after its components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The text of nango.yaml (empty for a zero-yaml project).
    pub nango_yaml: String,
    /// A zero-yaml project's definitions (`.nango/nango.json`), which
    /// stand for nango.yaml when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nango_json: Option<Vec<serde_json::Value>>,
    /// The project folder's name, which `${PWD}` integration keys stand for.
    #[serde(default)]
    pub dir_name: Option<String>,
    pub components: Vec<ComponentEntry>,
    /// `sluice deploy -v`: the version every deployed sync and action is
    /// tagged with, instead of its own (as the original's `--version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Why a deploy cannot be installed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Yaml(#[from] yaml::YamlError),
    #[error("component {sha256} was not uploaded")]
    MissingComponent { sha256: String },
    #[error("component {sha256} does not match its SHA-256")]
    Corrupt { sha256: String },
    #[error(transparent)]
    Load(#[from] sluice_runtime::LoadError),
    #[error("nango.yaml declares `{integration}/{name}`, but no component holds it")]
    MissingScript { integration: String, name: String },
    #[error("`{integration}/{name}` is not declared in nango.yaml")]
    Undeclared { integration: String, name: String },
    #[error(
        "nango.yaml declares `{integration}/{name}` as a {declared}, but its component is a {found} script"
    )]
    WrongKind {
        integration: String,
        name: String,
        declared: ScriptKind,
        found: ScriptKind,
    },
    #[error("the deploy's nango.json is invalid: {0}")]
    Definitions(String),
    #[error(
        "the version `{0}` is not one a deploy takes: 1 to 255 characters, no control characters"
    )]
    Version(String),
    /// The original platform's deploy is stricter than its nango.yaml
    /// parser: a frequency is a whole amount and a unit (its
    /// `frequencySchema`), so `every 1.5 hours` compiles and is refused
    /// at deploy, as there.
    #[error(
        "sync `{name}` of `{integration}`: the frequency `{runs}` is not one a deploy takes: a whole amount and a unit of seconds to days (`every 90 minutes`), or `every month`, `every week`, `every half day`, `every half hour`, `every quarter hour`"
    )]
    Frequency {
        integration: String,
        name: String,
        runs: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

fn runtime_kind(k: yaml::ScriptKind) -> ScriptKind {
    match k {
        yaml::ScriptKind::Sync => ScriptKind::Sync,
        yaml::ScriptKind::Action => ScriptKind::Action,
        yaml::ScriptKind::OnEvent => ScriptKind::OnEvent,
    }
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Project {
    /// The deploy manifest of this compiled project and the files of its
    /// components (by SHA-256).
    pub fn manifest(&self) -> Result<(Manifest, BTreeMap<String, PathBuf>), DeployError> {
        let path = self.root.join("nango.yaml");
        let nango_yaml = if self.definitions.is_some() {
            String::new()
        } else {
            std::fs::read_to_string(&path).map_err(|source| DeployError::Read {
                path: path.display().to_string(),
                source,
            })?
        };
        let mut components: BTreeMap<String, ComponentEntry> = BTreeMap::new();
        let mut files = BTreeMap::new();
        for s in &self.scripts {
            let bundle = matches!(s.source, Source::TypeScript(_));
            // A bundle's scripts are named `<component>#<script>`.
            let file = match s.script.origin().rsplit_once('#') {
                Some((file, _)) if bundle => file,
                _ => s.script.origin(),
            };
            let sha256 = s.script.digest().to_string();
            let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            files.insert(sha256.clone(), PathBuf::from(file));
            components
                .entry(sha256.clone())
                .or_insert_with(|| ComponentEntry {
                    sha256,
                    size,
                    bundle,
                    scripts: Vec::new(),
                })
                .scripts
                .push(ScriptEntry {
                    integration: s.integration.clone(),
                    name: s.name.clone(),
                    kind: s.kind,
                });
        }
        Ok((
            Manifest {
                nango_yaml,
                nango_json: self.definitions.clone(),
                dir_name: self
                    .root
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned()),
                components: components.into_values().collect(),
                version: None,
            },
            files,
        ))
    }
}

impl Manifest {
    /// The checks a new deploy passes beyond what [`Manifest::install`]
    /// needs: a zero-yaml deploy's definitions (see
    /// [`crate::zero::check_definitions`]), a nango.yaml deploy's
    /// integration keys (`yaml::parse_new`). Not made when a stored
    /// deployment is loaded again (at start, on a rollback), so a
    /// deployment an earlier version accepted still loads.
    pub fn check_new(&self) -> Result<(), DeployError> {
        if let Some(v) = &self.version
            && (v.trim().is_empty() || v.chars().count() > 255 || v.chars().any(char::is_control))
        {
            return Err(DeployError::Version(v.clone()));
        }
        let config = match &self.nango_json {
            Some(definitions) => {
                crate::zero::check_definitions(definitions).map_err(DeployError::Definitions)?;
                crate::zero::config(definitions)
            }
            None => {
                // A file that does not parse at all is `install`'s to
                // report, after the components; here only what a stored
                // deployment may have and a new one may not.
                let dir = self.dir_name.as_deref();
                match yaml::parse_in(&self.nango_yaml, "nango.yaml", dir) {
                    Ok(parsed) => {
                        yaml::parse_new(&self.nango_yaml, "nango.yaml", dir)?;
                        parsed.config
                    }
                    Err(_) => return Ok(()),
                }
            }
        };
        for integration in &config.integrations {
            for sync in &integration.syncs {
                if !sync.runs.is_empty() && !yaml::api_frequency_shape(&sync.runs) {
                    return Err(DeployError::Frequency {
                        integration: integration.provider_config_key.clone(),
                        name: sync.name.clone(),
                        runs: sync.runs.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks nango.yaml and loads every component (compiling those not in
    /// the runtime's cache: slow, call it off the request path), giving the
    /// deploy's scripts. Every declared script must be in a component, of
    /// the declared kind; nothing is changed when anything is wrong.
    pub fn install(
        &self,
        runtime: &Runtime,
        component: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> Result<Catalog, DeployError> {
        let mut config = match &self.nango_json {
            Some(definitions) => crate::zero::config(definitions),
            None => {
                yaml::parse_in(&self.nango_yaml, "nango.yaml", self.dir_name.as_deref())?.config
            }
        };
        if let Some(version) = &self.version {
            for i in &mut config.integrations {
                for s in &mut i.syncs {
                    s.version = version.clone();
                }
                for a in &mut i.actions {
                    a.version = version.clone();
                }
            }
        }
        // A sync and an action may share a name: scripts are declared by
        // integration, name and kind.
        let mut declared: BTreeSet<(String, String, ScriptKind)> = BTreeSet::new();
        for i in &config.integrations {
            for (name, kind) in i.scripts() {
                declared.insert((
                    i.provider_config_key.clone(),
                    name.to_string(),
                    runtime_kind(kind),
                ));
            }
        }
        let mut scripts = Vec::new();
        for c in &self.components {
            let bytes = component(&c.sha256).ok_or_else(|| DeployError::MissingComponent {
                sha256: c.sha256.clone(),
            })?;
            if sha256_hex(&bytes) != c.sha256 {
                return Err(DeployError::Corrupt {
                    sha256: c.sha256.clone(),
                });
            }
            for s in &c.scripts {
                if declared.contains(&(s.integration.clone(), s.name.clone(), s.kind)) {
                    continue;
                }
                let other = declared
                    .iter()
                    .find(|(i, n, _)| *i == s.integration && *n == s.name);
                return Err(match other {
                    Some((_, _, want)) => DeployError::WrongKind {
                        integration: s.integration.clone(),
                        name: s.name.clone(),
                        declared: *want,
                        found: s.kind,
                    },
                    None => DeployError::Undeclared {
                        integration: s.integration.clone(),
                        name: s.name.clone(),
                    },
                });
            }
            let origin = format!("component {}", &c.sha256[..c.sha256.len().min(12)]);
            if c.bundle {
                let kinds: Vec<(String, ScriptKind)> =
                    c.scripts.iter().map(|s| (s.name.clone(), s.kind)).collect();
                let loaded = runtime.load_bundle_bytes(&bytes, &origin, &kinds)?;
                for (s, script) in c.scripts.iter().zip(loaded) {
                    scripts.push((s.integration.clone(), s.name.clone(), Arc::new(script)));
                }
            } else {
                let script = runtime.load_bytes(&bytes, &origin)?;
                for s in &c.scripts {
                    if script.kind() != s.kind {
                        return Err(DeployError::WrongKind {
                            integration: s.integration.clone(),
                            name: s.name.clone(),
                            declared: s.kind,
                            found: script.kind(),
                        });
                    }
                }
                let script = Arc::new(script);
                for s in &c.scripts {
                    scripts.push((s.integration.clone(), s.name.clone(), script.clone()));
                }
            }
        }
        for (pck, name, kind) in &declared {
            if !scripts
                .iter()
                .any(|(i, n, s)| i == pck && n == name && s.kind() == *kind)
            {
                return Err(DeployError::MissingScript {
                    integration: pck.clone(),
                    name: name.clone(),
                });
            }
        }
        let catalog = Catalog::new(config, scripts);
        Ok(match &self.nango_json {
            Some(definitions) => catalog.with_definitions(definitions),
            None => catalog,
        })
    }
}

/// Why an upload to a server failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("cannot reach the server at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the server refused the deploy (HTTP {status}): {body}")]
    Refused { status: u16, body: String },
}

/// The name of the environment whose secret key `secret_key` is
/// (`GET /sluice/environment`).
pub async fn environment_of(base: &str, secret_key: &str) -> Result<String, UploadError> {
    let url = format!("{}/sluice/environment", base.trim_end_matches('/'));
    let unreachable = |source| UploadError::Unreachable {
        url: url.clone(),
        source,
    };
    let http = reqwest::Client::builder()
        .user_agent(sluice_runtime::proxy::USER_AGENT)
        .build()
        .map_err(unreachable)?;
    let resp = http
        .get(&url)
        .bearer_auth(secret_key)
        .send()
        .await
        .map_err(unreachable)?;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let name = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_string));
    match name {
        Some(name) if status == 200 => Ok(name),
        _ => Err(UploadError::Refused { status, body }),
    }
}

/// Uploads a compiled project to a server (`base`, e.g.
/// `http://127.0.0.1:3003`) with an environment's secret key: each
/// component the server does not have, then the manifest. Returns the
/// server's description of the new deployment.
pub async fn upload(
    project: &Project,
    base: &str,
    secret_key: &str,
    version: Option<&str>,
) -> Result<serde_json::Value, UploadError> {
    let (mut manifest, files) = project.manifest()?;
    manifest.version = version.map(str::to_string);
    let http = reqwest::Client::builder()
        .user_agent(sluice_runtime::proxy::USER_AGENT)
        .build()
        .map_err(|source| UploadError::Unreachable {
            url: base.to_string(),
            source,
        })?;
    let base = base.trim_end_matches('/');
    let send = |req: reqwest::RequestBuilder, url: String| async move {
        let resp = req
            .bearer_auth(secret_key)
            .send()
            .await
            .map_err(|source| UploadError::Unreachable { url, source })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Ok::<_, UploadError>((status, body))
    };
    let post_manifest = || {
        let url = format!("{base}/sluice/deploy");
        let body = serde_json::to_vec(&manifest).unwrap_or_default();
        send(
            http.post(&url)
                .header("content-type", "application/json")
                .body(body),
            url,
        )
    };
    let (mut status, mut body) = post_manifest().await?;
    if status == 400 && body.contains("missing_components") {
        let missing: Vec<String> = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| serde_json::from_value(v["error"]["payload"]["missing"].clone()).ok())
            .unwrap_or_default();
        for sha in missing {
            let Some(path) = files.get(&sha) else {
                continue;
            };
            let bytes = std::fs::read(path).map_err(|source| DeployError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let url = format!("{base}/sluice/components/{sha}");
            let (s, b) = send(http.put(&url).body(bytes), url).await?;
            if s != 200 {
                return Err(UploadError::Refused { status: s, body: b });
            }
        }
        (status, body) = post_manifest().await?;
    }
    if status != 200 {
        return Err(UploadError::Refused { status, body });
    }
    Ok(serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}
