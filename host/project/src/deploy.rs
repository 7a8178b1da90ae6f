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
    /// `sluice deploy -i/-s/-a`: the part of the project this deploy
    /// replaces; the server merges it into the environment's active
    /// deployment ([`Manifest::merged`]). A stored deployment has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<DeployScope>,
    /// The versions scripts of a merged deployment ([`Manifest::merged`])
    /// were deployed with by `--version` (by [`version_key`]), over their
    /// own and over [`Manifest::version`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub script_versions: BTreeMap<String, String>,
}

/// A `--version` a deploy takes: 1 to 255 characters, not blank, no
/// control characters.
fn valid_version(v: &str) -> bool {
    !v.trim().is_empty() && v.chars().count() <= 255 && !v.chars().any(char::is_control)
}

/// A script's key in [`Manifest::script_versions`].
pub fn version_key(integration: &str, name: &str, kind: ScriptKind) -> String {
    format!("{kind}:{integration}/{name}")
}

/// Which scripts a deploy replaces (the original's deploy modes): one
/// integration's (`--integration`: its syncs, actions and event scripts,
/// the ones it no longer has removed), or the syncs or actions of one name
/// (`--sync`/`--action`, in every integration the project has one of the
/// name, or in `--integration`'s alone). The environment's other scripts
/// stay as deployed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

impl DeployScope {
    /// `--sync` or `--action`: the name and kind.
    fn single(&self) -> Option<(&str, ScriptKind)> {
        match (&self.sync, &self.action) {
            (Some(s), _) => Some((s, ScriptKind::Sync)),
            (None, Some(a)) => Some((a, ScriptKind::Action)),
            (None, None) => None,
        }
    }

    /// Whether a script of the deployed project is one this deploy takes.
    pub fn takes(&self, integration: &str, name: &str, kind: ScriptKind) -> bool {
        if self
            .integration
            .as_deref()
            .is_some_and(|i| i != integration)
        {
            return false;
        }
        self.single().is_none_or(|(n, k)| n == name && k == kind)
    }
}

impl std::fmt::Display for DeployScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.single(), &self.integration) {
            (Some((name, kind)), Some(i)) => write!(f, "{kind} `{name}` of integration `{i}`"),
            (Some((name, kind)), None) => write!(f, "{kind} `{name}`"),
            (None, Some(i)) => write!(f, "integration `{i}`"),
            (None, None) => write!(f, "the whole project"),
        }
    }
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
    #[error("`{integration}/{name}` is not declared in the deploy's nango.yaml (or nango.json)")]
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
    #[error("a deploy takes `--sync` or `--action`, not both")]
    ScopeBoth,
    #[error("a deploy's `scope` names an `integration`, a `sync` or an `action`")]
    ScopeEmpty,
    #[error("`{integration}/{name}` is listed twice among the deploy's components")]
    Duplicate { integration: String, name: String },
    #[error("the project has no {0} to deploy: nothing was deployed")]
    NothingInScope(String),
    #[error(
        "deploying part of a project ({scope}) needs the environment's active deployment in the same format, {need}: deploy the whole project"
    )]
    ScopeFormat { scope: String, need: &'static str },
    #[error(
        "the model `{model}` of this deploy differs from the deployed one, which scripts this deploy leaves as they are use: deploy them too, or the whole project"
    )]
    ScopeModel { model: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A component's file no longer holds what was compiled (another
    /// build replaced it): its bytes would not be the ones the manifest
    /// names.
    #[error(
        "the component of {scripts} ({path}) changed after it was compiled (its SHA-256 is no longer {sha256}): nothing was deployed; deploy again"
    )]
    Changed {
        scripts: String,
        path: String,
        sha256: String,
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
            yaml::read_text_file(&path, yaml::MAX_FILE_BYTES).map_err(|source| {
                DeployError::Read {
                    path: path.display().to_string(),
                    source,
                }
            })?
        };
        let mut components: BTreeMap<String, ComponentEntry> = BTreeMap::new();
        let mut files = BTreeMap::new();
        for s in &self.scripts {
            let bundle = matches!(s.source, Source::TypeScript(_));
            let sha256 = s.script.digest().to_string();
            let size = std::fs::metadata(&s.component)
                .map(|m| m.len())
                .unwrap_or(0);
            files.insert(sha256.clone(), s.component.clone());
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
                scope: None,
                script_versions: BTreeMap::new(),
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
        for v in self.version.iter().chain(self.script_versions.values()) {
            if !valid_version(v) {
                return Err(DeployError::Version(v.clone()));
            }
        }
        let mut seen = BTreeSet::new();
        for s in self.components.iter().flat_map(|c| &c.scripts) {
            if !seen.insert((&s.integration, &s.name, s.kind)) {
                return Err(DeployError::Duplicate {
                    integration: s.integration.clone(),
                    name: s.name.clone(),
                });
            }
        }
        let config = match &self.nango_json {
            Some(definitions) => {
                crate::zero::check_definitions(definitions).map_err(DeployError::Definitions)?;
                crate::zero::config(definitions)
            }
            None => {
                // A file that does not parse at all is `install`'s to
                // report, after the components; here only what a stored
                // deployment may have and a new one may not. Its size
                // first: anchors copied millions of times, or brackets
                // nested thousands deep, cost the parser gigabytes or
                // minutes before it could say anything.
                yaml::check_size(&self.nango_yaml).map_err(|message| yaml::YamlError::Syntax {
                    path: "nango.yaml".to_string(),
                    message,
                })?;
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
        for i in &mut config.integrations {
            let pck = &i.provider_config_key;
            let tagged = |name: &str, kind| {
                self.script_versions
                    .get(&version_key(pck, name, kind))
                    .or(self.version.as_ref())
            };
            for s in &mut i.syncs {
                if let Some(v) = tagged(&s.name, ScriptKind::Sync) {
                    s.version = v.clone();
                }
            }
            for a in &mut i.actions {
                if let Some(v) = tagged(&a.name, ScriptKind::Action) {
                    a.version = v.clone();
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

/// A script by integration, name and kind.
type ScriptId = (String, String, ScriptKind);

impl Manifest {
    /// A deploy of part of a project ([`Manifest::scope`]) as the whole
    /// deployment it makes of the environment's `active` one: the scripts
    /// in scope (their definitions and components) from this deploy, every
    /// other from `active`, as they were deployed (with the version each
    /// was deployed with). Models are both deploys', this one's where
    /// both have one of a name. A manifest without a scope is returned as
    /// it is.
    pub fn merged(mut self, active: Option<&Manifest>) -> Result<Manifest, DeployError> {
        let Some(scope) = self.scope.take() else {
            return Ok(self);
        };
        if let Some(v) = self.version.as_deref().filter(|v| !valid_version(v)) {
            return Err(DeployError::Version(v.to_string()));
        }
        if scope.sync.is_some() && scope.action.is_some() {
            return Err(DeployError::ScopeBoth);
        }
        if scope == DeployScope::default() {
            return Err(DeployError::ScopeEmpty);
        }
        // The part itself is checked first, so its own faults are named as
        // they are in a whole deploy's.
        let part_config = match &self.nango_json {
            Some(definitions) => {
                crate::zero::check_definitions(definitions).map_err(DeployError::Definitions)?;
                crate::zero::config(definitions)
            }
            None => {
                yaml::parse_new(&self.nango_yaml, "nango.yaml", self.dir_name.as_deref())?.config
            }
        };
        let taken: BTreeSet<ScriptId> = self
            .components
            .iter()
            .flat_map(|c| &c.scripts)
            .filter(|s| scope.takes(&s.integration, &s.name, s.kind))
            .map(|s| (s.integration.clone(), s.name.clone(), s.kind))
            .collect();
        if taken.is_empty() {
            return Err(DeployError::NothingInScope(scope.to_string()));
        }
        // Each script taken is declared by this deploy: a definition it
        // lacks would leave the deployed one over the new component.
        let mut declared: BTreeSet<ScriptId> = BTreeSet::new();
        for i in &part_config.integrations {
            for (name, kind) in i.scripts() {
                declared.insert((
                    i.provider_config_key.clone(),
                    name.to_string(),
                    runtime_kind(kind),
                ));
            }
        }
        if let Some((integration, name, kind)) = taken.iter().find(|t| !declared.contains(*t)) {
            let other = declared
                .iter()
                .find(|(i, n, _)| i == integration && n == name);
            return Err(match other {
                Some((_, _, want)) => DeployError::WrongKind {
                    integration: integration.clone(),
                    name: name.clone(),
                    declared: *want,
                    found: *kind,
                },
                None => DeployError::Undeclared {
                    integration: integration.clone(),
                    name: name.clone(),
                },
            });
        }
        // What goes from the active deployment: the scripts taken, or with
        // `--integration` alone, all of that integration's.
        let whole = match (&scope.integration, scope.single()) {
            (Some(i), None) => Some(i.as_str()),
            _ => None,
        };
        let replaced = |s: &ScriptEntry| {
            whole.map_or_else(
                || taken.contains(&(s.integration.clone(), s.name.clone(), s.kind)),
                |i| s.integration == i,
            )
        };
        let mut components: Vec<ComponentEntry> = Vec::new();
        let kept = active.map(|a| a.components.as_slice()).unwrap_or_default();
        for c in kept {
            let scripts: Vec<ScriptEntry> =
                c.scripts.iter().filter(|s| !replaced(s)).cloned().collect();
            if !scripts.is_empty() {
                components.push(ComponentEntry {
                    scripts,
                    ..c.clone()
                });
            }
        }
        let mut by_sha: std::collections::HashMap<String, usize> = components
            .iter()
            .enumerate()
            .map(|(i, c)| (c.sha256.clone(), i))
            .collect();
        for c in &self.components {
            let scripts: Vec<ScriptEntry> = c
                .scripts
                .iter()
                .filter(|s| taken.contains(&(s.integration.clone(), s.name.clone(), s.kind)))
                .cloned()
                .collect();
            if scripts.is_empty() {
                continue;
            }
            match by_sha.get(&c.sha256) {
                Some(&at) => components[at].scripts.extend(scripts),
                None => {
                    by_sha.insert(c.sha256.clone(), components.len());
                    components.push(ComponentEntry {
                        scripts,
                        ..c.clone()
                    });
                }
            }
        }
        // Each script keeps the `--version` it was deployed with.
        let mut script_versions = BTreeMap::new();
        if let Some(a) = active {
            for s in a.components.iter().flat_map(|c| &c.scripts) {
                if replaced(s) {
                    continue;
                }
                let key = version_key(&s.integration, &s.name, s.kind);
                if let Some(v) = a.script_versions.get(&key).or(a.version.as_ref()) {
                    script_versions.insert(key, v.clone());
                }
            }
        }
        if let Some(v) = &self.version {
            for (i, n, kind) in &taken {
                script_versions.insert(version_key(i, n, *kind), v.clone());
            }
        }
        let shown = scope.to_string();
        let (nango_yaml, nango_json) = match (&self.nango_json, active) {
            (Some(new), _) => {
                let old = match active {
                    None => &[][..],
                    Some(a) => a.nango_json.as_deref().ok_or(DeployError::ScopeFormat {
                        scope: shown,
                        need: "zero-yaml (this project is)",
                    })?,
                };
                let merged = merge_definitions(old, new, whole, &taken)
                    .map_err(|model| DeployError::ScopeModel { model })?;
                (String::new(), Some(merged))
            }
            (None, Some(a)) if a.nango_json.is_some() => {
                return Err(DeployError::ScopeFormat {
                    scope: shown,
                    need: "nango.yaml (this project is)",
                });
            }
            (None, _) => {
                let old = active.map(|a| YamlSide {
                    text: &a.nango_yaml,
                    dir_name: a.dir_name.as_deref(),
                });
                let new = YamlSide {
                    text: &self.nango_yaml,
                    dir_name: self.dir_name.as_deref(),
                };
                let merged = match merge_yaml(old, new, whole, &taken) {
                    Ok(merged) => merged,
                    Err(None) => {
                        return Err(DeployError::ScopeFormat {
                            scope: shown,
                            need: "nango.yaml with `integrations:` of `syncs`/`actions` (v2)",
                        });
                    }
                    Err(Some(model)) => return Err(DeployError::ScopeModel { model }),
                };
                (merged, None)
            }
        };
        Ok(Manifest {
            nango_yaml,
            nango_json,
            dir_name: self.dir_name,
            components,
            version: None,
            scope: None,
            script_versions,
        })
    }
}

/// The definitions (`.nango/nango.json`) of a merged zero-yaml deployment.
fn merge_definitions(
    old: &[serde_json::Value],
    new: &[serde_json::Value],
    whole: Option<&str>,
    taken: &BTreeSet<ScriptId>,
) -> Result<Vec<serde_json::Value>, String> {
    use serde_json::{Value, json};
    let key = |d: &Value| {
        d["providerConfigKey"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut out: Vec<Value> = old.to_vec();
    for def in new {
        let pck = key(def);
        let def = def.clone();
        let at = out.iter().position(|d| key(d) == pck);
        if whole == Some(pck.as_str()) {
            match at {
                Some(i) => out[i] = def,
                None => out.push(def),
            }
            continue;
        }
        for (list, kind) in [("syncs", ScriptKind::Sync), ("actions", ScriptKind::Action)] {
            let Some(scripts) = def.get(list).and_then(Value::as_array) else {
                continue;
            };
            for script in scripts {
                let name = script["name"].as_str().unwrap_or_default().to_string();
                if !taken.contains(&(pck.clone(), name.clone(), kind)) {
                    continue;
                }
                let i = match out.iter().position(|d| key(d) == pck) {
                    Some(i) => i,
                    None => {
                        out.push(json!({ "providerConfigKey": pck }));
                        out.len() - 1
                    }
                };
                let target = &mut out[i];
                if !target.get(list).is_some_and(Value::is_array) {
                    target[list] = json!([]);
                }
                if let Some(list) = target[list].as_array_mut() {
                    match list.iter().position(|s| s["name"] == name.as_str()) {
                        Some(j) => list[j] = script.clone(),
                        None => list.push(script.clone()),
                    }
                }
            }
        }
    }
    // An integration's models are its scripts' (`json_schema`), one of a
    // name for all of them: a deployed script's must be the one the
    // scripts left as they were have.
    for def in &out {
        let pck = key(def);
        let mut deployed: BTreeMap<&str, &Value> = BTreeMap::new();
        let mut kept: BTreeMap<&str, &Value> = BTreeMap::new();
        for (list, kind) in [("syncs", ScriptKind::Sync), ("actions", ScriptKind::Action)] {
            for script in def
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = script["name"].as_str().unwrap_or_default().to_string();
                let side = if taken.contains(&(pck.clone(), name, kind)) {
                    &mut deployed
                } else {
                    &mut kept
                };
                let defs = script
                    .pointer("/json_schema/definitions")
                    .and_then(Value::as_object);
                for (model, schema) in defs.into_iter().flatten() {
                    side.entry(model.as_str()).or_insert(schema);
                }
            }
        }
        for (model, schema) in &deployed {
            if kept.get(model).is_some_and(|k| k != schema) {
                return Err((*model).to_string());
            }
        }
    }
    Ok(out)
}

/// One deploy's nango.yaml, for [`merge_yaml`].
#[derive(Clone, Copy)]
struct YamlSide<'a> {
    text: &'a str,
    /// What `${PWD}` integration keys stand for.
    dir_name: Option<&'a str>,
}

/// A nango.yaml (v2) as a mapping whose integration keys are resolved
/// (`${PWD}`); `None` for a file that is not one.
fn yaml_root(side: YamlSide<'_>) -> Option<serde_norway::Mapping> {
    use serde_norway::Value as Yaml;
    let root: Yaml = serde_norway::from_str(side.text).ok()?;
    let mut root = match root {
        Yaml::Mapping(m) => m,
        _ => return None,
    };
    let integrations = match root.get("integrations") {
        Some(Yaml::Mapping(m)) => m.clone(),
        None | Some(Yaml::Null) => serde_norway::Mapping::new(),
        Some(_) => return None,
    };
    let mut resolved = serde_norway::Mapping::new();
    for (k, body) in integrations {
        let key = match (k.as_str(), side.dir_name) {
            (Some("${PWD}"), Some(dir)) => Yaml::from(dir),
            _ => k,
        };
        let body = match body {
            Yaml::Mapping(m) => m,
            Yaml::Null => serde_norway::Mapping::new(),
            _ => return None,
        };
        // v1 keeps scripts right under the integration.
        if body.keys().any(|k| {
            !matches!(
                k.as_str(),
                Some("syncs" | "actions" | "on-events" | "post-connection-scripts")
            )
        }) {
            return None;
        }
        resolved.insert(key, Yaml::Mapping(body));
    }
    root.insert(Yaml::from("integrations"), Yaml::Mapping(resolved));
    Some(root)
}

/// The nango.yaml of a merged deployment; `None` when either file is not
/// nango.yaml v2.
fn merge_yaml(
    old: Option<YamlSide<'_>>,
    new: YamlSide<'_>,
    whole: Option<&str>,
    taken: &BTreeSet<ScriptId>,
) -> Result<String, Option<String>> {
    use serde_norway::{Mapping, Value as Yaml};
    let new = yaml_root(new).ok_or(None)?;
    let mut out = match old {
        Some(old) => yaml_root(old).ok_or(None)?,
        None => {
            let mut m = Mapping::new();
            m.insert(Yaml::from("integrations"), Yaml::Mapping(Mapping::new()));
            m
        }
    };
    let new_integrations = new
        .get("integrations")
        .and_then(Yaml::as_mapping)
        .ok_or(None)?
        .clone();
    let integrations = out
        .get_mut("integrations")
        .and_then(Yaml::as_mapping_mut)
        .ok_or(None)?;
    for (key, body) in &new_integrations {
        let pck = key.as_str().unwrap_or_default();
        if whole == Some(pck) {
            integrations.insert(key.clone(), body.clone());
            continue;
        }
        for (list, kind) in [("syncs", ScriptKind::Sync), ("actions", ScriptKind::Action)] {
            let Some(scripts) = body.get(list).and_then(Yaml::as_mapping) else {
                continue;
            };
            for (name, script) in scripts {
                let name_text = name.as_str().unwrap_or_default().to_string();
                if !taken.contains(&(pck.to_string(), name_text, kind)) {
                    continue;
                }
                let target = integrations
                    .entry(key.clone())
                    .or_insert_with(|| Yaml::Mapping(Mapping::new()));
                if !target.is_mapping() {
                    *target = Yaml::Mapping(Mapping::new());
                }
                let target = target.as_mapping_mut().ok_or(None)?;
                let list = target
                    .entry(Yaml::from(list))
                    .or_insert_with(|| Yaml::Mapping(Mapping::new()));
                if !list.is_mapping() {
                    *list = Yaml::Mapping(Mapping::new());
                }
                list.as_mapping_mut()
                    .ok_or(None)?
                    .insert(name.clone(), script.clone());
            }
        }
    }
    // The models the deployed scripts use (and the models those name)
    // come with them; one the scripts left as they were use too must be
    // the same (a model is the deployment's, not a script's).
    let empty = Mapping::new();
    let new_models = new
        .get("models")
        .and_then(Yaml::as_mapping)
        .unwrap_or(&empty);
    let old_models = out
        .get("models")
        .and_then(Yaml::as_mapping)
        .cloned()
        .unwrap_or_default();
    let (mut deployed, mut kept) = (Vec::new(), Vec::new());
    for (key, body) in out
        .get("integrations")
        .and_then(Yaml::as_mapping)
        .unwrap_or(&empty)
    {
        let pck = key.as_str().unwrap_or_default();
        for (list, kind) in [("syncs", ScriptKind::Sync), ("actions", ScriptKind::Action)] {
            for (name, script) in body.get(list).and_then(Yaml::as_mapping).unwrap_or(&empty) {
                let id = (
                    pck.to_string(),
                    name.as_str().unwrap_or_default().to_string(),
                    kind,
                );
                if taken.contains(&id) {
                    deployed.extend(script_models(script));
                } else {
                    kept.extend(script_models(script));
                }
            }
        }
    }
    let deployed = model_closure(new_models, deployed);
    let kept = model_closure(&old_models, kept);
    for name in &deployed {
        let (Some(new_model), Some(old_model)) = (new_models.get(name), old_models.get(name))
        else {
            continue;
        };
        if new_model != old_model && kept.contains(name) {
            return Err(Some(name.clone()));
        }
    }
    let target = out
        .entry(Yaml::from("models"))
        .or_insert_with(|| Yaml::Mapping(Mapping::new()));
    if !target.is_mapping() {
        *target = Yaml::Mapping(Mapping::new());
    }
    let target = target.as_mapping_mut().ok_or(None)?;
    for name in &deployed {
        if let Some(model) = new_models.get(name) {
            target.insert(Yaml::from(name.as_str()), model.clone());
        }
    }
    serde_norway::to_string(&Yaml::Mapping(out)).map_err(|_| None)
}

/// The model names a nango.yaml script names (`output`, `input`).
fn script_models(script: &serde_norway::Value) -> Vec<String> {
    use serde_norway::Value as Yaml;
    let mut out = Vec::new();
    for field in ["output", "input"] {
        match script.get(field) {
            Some(Yaml::String(s)) => out.push(s.clone()),
            Some(Yaml::Sequence(items)) => {
                out.extend(items.iter().filter_map(Yaml::as_str).map(str::to_string));
            }
            _ => {}
        }
    }
    out
}

/// `start` and every model of `models` they name, through their fields'
/// types and `__extends`, by name.
fn model_closure(models: &serde_norway::Mapping, start: Vec<String>) -> BTreeSet<String> {
    use serde_norway::Value as Yaml;
    fn words(v: &Yaml, out: &mut Vec<String>) {
        match v {
            Yaml::String(s) => out.extend(
                s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .filter(|w| !w.is_empty())
                    .map(str::to_string),
            ),
            Yaml::Sequence(items) => items.iter().for_each(|i| words(i, out)),
            Yaml::Mapping(m) => m.iter().for_each(|(_, v)| words(v, out)),
            Yaml::Tagged(t) => words(&t.value, out),
            _ => {}
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo = start;
    while let Some(name) = todo.pop() {
        let Some(model) = models.get(name.as_str()) else {
            continue;
        };
        if !seen.insert(name) {
            continue;
        }
        let mut named = Vec::new();
        words(model, &mut named);
        todo.extend(named.into_iter().filter(|w| !seen.contains(w)));
    }
    seen
}

/// Why an upload to a server failed. The server's text in it is at most
/// [`MAX_ERROR_BYTES`] of its answer, the secret key shown as `***`.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("cannot reach the server at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the server refused the deploy (HTTP {status}): {body}")]
    Refused { status: u16, body: String },
    #[error(
        "{url} does not answer as a sluice server (HTTP {status}, not its JSON: {start}): check --host or NANGO_HOSTPORT; nothing was deployed"
    )]
    NotSluice {
        url: String,
        status: u16,
        start: String,
    },
    /// A success answer to the deploy itself that is not a sluice
    /// server's: whether anything was deployed cannot be told.
    #[error(
        "the answer to {url} (HTTP {status}) is {problem}, not a sluice server's: check --host or NANGO_HOSTPORT; whether the project was deployed is not known (GET /sluice/deployments lists the deployments)"
    )]
    Unreadable {
        url: String,
        status: u16,
        problem: String,
    },
}

/// The largest answer of the server read: a deploy's description, or the
/// list of the components it lacks (a few hundred bytes a script).
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The most of an error answer kept for the message (a proxy's page may
/// be any size).
pub const MAX_ERROR_BYTES: usize = 16 << 10;

/// How much of an answer that is not JSON is shown.
const SHOWN_START: usize = 120;

/// An answer of the server, read with [`read_answer`].
struct Answer {
    status: u16,
    /// The body (lossy UTF-8), at most [`MAX_ANSWER_BYTES`] of it, the
    /// secret key shown as `***`.
    text: String,
    /// Whether the body was longer.
    cut: bool,
}

impl Answer {
    /// The start of the body, for an error: at most `max` bytes, said to
    /// be a start when it is one.
    fn shown(&self, max: usize) -> String {
        if self.text.len() <= max && !self.cut {
            return self.text.clone();
        }
        let mut end = max.min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        format!(
            "{}… (the first {} shown)",
            &self.text[..end],
            if max >= 1024 {
                format!("{} KiB", max >> 10)
            } else {
                format!("{max} bytes")
            }
        )
    }
}

/// `text` with every `secret` in it shown as `***`; when `text` is the
/// start of a longer one (`cut`), a start of `secret` at its end is taken
/// off too. A server (or a proxy before it) that echoes the request's
/// `Authorization` would otherwise have the key printed.
fn redacted(text: &str, secret: &str, cut: bool) -> String {
    if secret.is_empty() {
        return text.to_string();
    }
    let mut out = text.replace(secret, "***");
    if cut
        && let Some(len) = (1..secret.len())
            .rev()
            .filter(|&n| secret.is_char_boundary(n))
            .find(|&n| out.ends_with(&secret[..n]))
    {
        out.truncate(out.len() - len);
    }
    out
}

/// Reads the answer to `url`: a success's body up to
/// [`MAX_ANSWER_BYTES`] (a larger one is an error), an error's up to
/// [`MAX_ERROR_BYTES`] (a 400's, which may list the components the server
/// lacks, up to [`MAX_ANSWER_BYTES`]); the secret key in it redacted.
async fn read_answer(
    mut resp: reqwest::Response,
    url: &str,
    secret_key: &str,
) -> Result<Answer, UploadError> {
    let status = resp.status().as_u16();
    let ok = (200..300).contains(&status);
    let max = if ok || status == 400 {
        MAX_ANSWER_BYTES
    } else {
        MAX_ERROR_BYTES
    };
    let (bytes, cut) = crate::remote::read_at_most(&mut resp, max)
        .await
        .map_err(|source| UploadError::Unreachable {
            url: url.to_string(),
            source,
        })?;
    let text = redacted(&String::from_utf8_lossy(&bytes), secret_key, cut);
    Ok(Answer { status, text, cut })
}

/// The environment a secret key names, as a server says it (`GET
/// /sluice/environment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEnvironment {
    pub name: String,
    /// Whether the server takes a deploy of part of a project
    /// ([`DeployScope`]); an older one would deploy it as the whole
    /// project.
    pub takes_scopes: bool,
}

/// The environment whose secret key `secret_key` is (`GET
/// /sluice/environment`).
pub async fn environment_of(
    base: &str,
    secret_key: &str,
) -> Result<ServerEnvironment, UploadError> {
    let url = format!("{}/sluice/environment", base.trim_end_matches('/'));
    let unreachable = |source| UploadError::Unreachable {
        url: url.clone(),
        source,
    };
    let http = reqwest::Client::builder()
        .user_agent(sluice_runtime::proxy::USER_AGENT)
        // A host that never answers is said, not waited on for ever.
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(unreachable)?;
    let resp = http
        .get(&url)
        .bearer_auth(secret_key)
        .send()
        .await
        .map_err(unreachable)?;
    let answer = read_answer(resp, &url, secret_key).await?;
    let status = answer.status;
    let parsed = (!answer.cut)
        .then(|| serde_json::from_str::<serde_json::Value>(&answer.text).ok())
        .flatten();
    let Some(parsed) = parsed else {
        // Not sluice (another server on the port, a proxy's page): said
        // so, with the start of what it answered.
        return Err(UploadError::NotSluice {
            url,
            status,
            start: answer.shown(SHOWN_START),
        });
    };
    match parsed["name"].as_str() {
        Some(name) if status == 200 => Ok(ServerEnvironment {
            name: name.to_string(),
            takes_scopes: parsed["deploy_scopes"]
                .as_array()
                .is_some_and(|s| s.iter().any(|k| k == "sync")),
        }),
        _ => Err(UploadError::Refused {
            status,
            body: answer.shown(MAX_ERROR_BYTES),
        }),
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
    scope: Option<&DeployScope>,
) -> Result<serde_json::Value, UploadError> {
    let (mut manifest, files) = project.manifest()?;
    manifest.version = version.map(str::to_string);
    manifest.scope = scope.cloned();
    let http = reqwest::Client::builder()
        .user_agent(sluice_runtime::proxy::USER_AGENT)
        // A server compiles what a deploy brings before it answers
        // (minutes for a large project); one that never answers is
        // given up on after an hour, not waited on for ever.
        .connect_timeout(std::time::Duration::from_secs(30))
        .timeout(std::time::Duration::from_secs(3600))
        .build()
        .map_err(|source| UploadError::Unreachable {
            url: base.to_string(),
            source,
        })?;
    let base = base.trim_end_matches('/');
    let send = |req: reqwest::RequestBuilder, url: String| async move {
        let resp = req.bearer_auth(secret_key).send().await.map_err(|source| {
            UploadError::Unreachable {
                url: url.clone(),
                source,
            }
        })?;
        read_answer(resp, &url, secret_key).await
    };
    let deploy_url = format!("{base}/sluice/deploy");
    let post_manifest = || {
        let body = serde_json::to_vec(&manifest).unwrap_or_default();
        send(
            http.post(&deploy_url)
                .header("content-type", "application/json")
                .body(body),
            deploy_url.clone(),
        )
    };
    let mut answer = post_manifest().await?;
    if answer.status == 400 && answer.text.contains("missing_components") {
        let missing: Vec<String> = serde_json::from_str::<serde_json::Value>(&answer.text)
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
            // What the manifest names, or nothing: the server would refuse
            // other bytes under this name after they were sent.
            if sha256_hex(&bytes) != sha {
                return Err(DeployError::Changed {
                    scripts: scripts_of(&manifest, &sha),
                    path: path.display().to_string(),
                    sha256: sha,
                }
                .into());
            }
            let url = format!("{base}/sluice/components/{sha}");
            let put = send(http.put(&url).body(bytes), url).await?;
            if put.status != 200 {
                return Err(UploadError::Refused {
                    status: put.status,
                    body: put.shown(MAX_ERROR_BYTES),
                });
            }
        }
        answer = post_manifest().await?;
    }
    if answer.status != 200 {
        return Err(UploadError::Refused {
            status: answer.status,
            body: answer.shown(MAX_ERROR_BYTES),
        });
    }
    // The deployment's description, with its version: anything else
    // answered for the server (a proxy's page) deployed nothing known.
    let unreadable = |problem: String| UploadError::Unreadable {
        url: deploy_url.clone(),
        status: answer.status,
        problem,
    };
    match serde_json::from_str::<serde_json::Value>(&answer.text) {
        Ok(deployed) if !deployed["version"].is_null() => Ok(deployed),
        Ok(_) => Err(unreadable(format!(
            "JSON without the deployment's `version` ({})",
            answer.shown(SHOWN_START)
        ))),
        Err(_) if answer.cut => Err(unreadable(format!(
            "larger than {} MiB",
            MAX_ANSWER_BYTES >> 20
        ))),
        Err(_) => Err(unreadable(format!(
            "not JSON ({})",
            answer.shown(SHOWN_START)
        ))),
    }
}

/// The scripts of `manifest`'s component `sha256`, for a message:
/// `` `pck/name` (action) ``, joined.
fn scripts_of(manifest: &Manifest, sha256: &str) -> String {
    let named: Vec<String> = manifest
        .components
        .iter()
        .filter(|c| c.sha256 == sha256)
        .flat_map(|c| &c.scripts)
        .map(|s| format!("`{}/{}` ({})", s.integration, s.name, s.kind))
        .collect();
    if named.is_empty() {
        format!("component {sha256}")
    } else {
        named.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The key is not shown, whole or (where the text was cut) its start.
    #[test]
    fn the_secret_key_is_redacted_from_what_the_server_said() {
        let key = "sk-0123456789";
        assert_eq!(
            redacted(
                &format!("Authorization: Bearer {key}; again {key}."),
                key,
                false
            ),
            "Authorization: Bearer ***; again ***."
        );
        assert_eq!(redacted("Bearer sk-0123", key, true), "Bearer ");
        // Not cut: the text ends there, whatever it ends with.
        assert_eq!(redacted("Bearer sk-0123", key, false), "Bearer sk-0123");
        assert_eq!(redacted("no key", "", true), "no key");
    }

    fn entry(sha: &str, scripts: &[(&str, &str, ScriptKind)]) -> ComponentEntry {
        ComponentEntry {
            sha256: sha.repeat(64),
            size: 1,
            bundle: true,
            scripts: scripts
                .iter()
                .map(|&(i, n, kind)| ScriptEntry {
                    integration: i.into(),
                    name: n.into(),
                    kind,
                })
                .collect(),
        }
    }

    fn names(m: &Manifest) -> Vec<String> {
        let mut v: Vec<String> = m
            .components
            .iter()
            .flat_map(|c| &c.scripts)
            .map(|s| format!("{}/{}/{}", &c_sha(m, s), s.integration, s.name))
            .collect();
        v.sort();
        v
    }

    fn c_sha(m: &Manifest, s: &ScriptEntry) -> String {
        m.components
            .iter()
            .find(|c| c.scripts.contains(s))
            .map(|c| c.sha256[..1].to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_zero_yaml_sync_deployed_alone_replaces_only_itself_and_keeps_versions() {
        let active = Manifest {
            nango_yaml: String::new(),
            nango_json: Some(vec![
                json!({"providerConfigKey": "gh", "syncs": [{"name": "issues", "runs": "every hour", "version": "1"}], "actions": [{"name": "close", "version": "1"}], "onEventScripts": {"post-connection-creation": ["setup"]}}),
                json!({"providerConfigKey": "sf", "actions": [{"name": "ping"}]}),
            ]),
            dir_name: None,
            components: vec![
                entry(
                    "a",
                    &[
                        ("gh", "issues", ScriptKind::Sync),
                        ("gh", "close", ScriptKind::Action),
                        ("gh", "setup", ScriptKind::OnEvent),
                    ],
                ),
                entry("b", &[("sf", "ping", ScriptKind::Action)]),
            ],
            version: Some("7".into()),
            scope: None,
            script_versions: BTreeMap::new(),
        };
        let new = Manifest {
            nango_yaml: String::new(),
            nango_json: Some(vec![
                json!({"providerConfigKey": "gh", "syncs": [{"name": "issues", "runs": "every day", "version": "2"}], "actions": [{"name": "close", "version": "2"}, {"name": "open"}]}),
            ]),
            dir_name: None,
            components: vec![entry(
                "c",
                &[
                    ("gh", "issues", ScriptKind::Sync),
                    ("gh", "close", ScriptKind::Action),
                    ("gh", "open", ScriptKind::Action),
                ],
            )],
            version: None,
            scope: Some(DeployScope {
                sync: Some("issues".into()),
                ..Default::default()
            }),
            script_versions: BTreeMap::new(),
        };
        let merged = new.clone().merged(Some(&active)).unwrap();
        assert_eq!(
            names(&merged),
            ["a/gh/close", "a/gh/setup", "b/sf/ping", "c/gh/issues"]
        );
        let defs = merged.nango_json.unwrap();
        assert_eq!(defs[0]["syncs"][0]["runs"], "every day");
        assert_eq!(defs[0]["syncs"][0]["version"], "2");
        assert_eq!(
            defs[0]["actions"],
            json!([{"name": "close", "version": "1"}])
        );
        // The rest keeps the `--version` it was deployed with.
        let versions: Vec<(&str, &str)> = merged
            .script_versions
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            versions,
            [
                ("action:gh/close", "7"),
                ("action:sf/ping", "7"),
                ("on-event:gh/setup", "7")
            ]
        );
        assert_eq!(
            defs[0]["onEventScripts"],
            json!({"post-connection-creation": ["setup"]})
        );
        assert_eq!(merged.scope, None);

        // `--integration gh`: gh's event script went with its old
        // definition; sf stays.
        let mut whole = new;
        whole.scope = Some(DeployScope {
            integration: Some("gh".into()),
            ..Default::default()
        });
        let merged = whole.merged(Some(&active)).unwrap();
        assert_eq!(
            names(&merged),
            ["b/sf/ping", "c/gh/close", "c/gh/issues", "c/gh/open"]
        );
        let defs = merged.nango_json.unwrap();
        assert!(defs[0].get("onEventScripts").is_none(), "{defs:?}");
        assert_eq!(defs[1]["providerConfigKey"], "sf");
    }

    #[test]
    fn a_zero_yaml_script_deployed_alone_cannot_change_a_model_its_siblings_use() {
        let schema = |kind: &str| json!({"definitions": {"Issue": {"type": "object", "properties": {"id": {"type": kind}}}}});
        let active = Manifest {
            nango_yaml: String::new(),
            nango_json: Some(vec![json!({"providerConfigKey": "gh",
                "syncs": [{"name": "issues", "runs": "every day", "json_schema": schema("string")}],
                "actions": [{"name": "close", "json_schema": schema("string")}]})]),
            dir_name: None,
            components: vec![entry(
                "a",
                &[
                    ("gh", "issues", ScriptKind::Sync),
                    ("gh", "close", ScriptKind::Action),
                ],
            )],
            version: None,
            scope: None,
            script_versions: BTreeMap::new(),
        };
        let part = |kind: &str| Manifest {
            nango_json: Some(vec![json!({"providerConfigKey": "gh",
                "syncs": [{"name": "issues", "runs": "every day", "json_schema": schema(kind)}],
                "actions": [{"name": "close", "json_schema": schema(kind)}]})]),
            components: vec![entry(
                "c",
                &[
                    ("gh", "issues", ScriptKind::Sync),
                    ("gh", "close", ScriptKind::Action),
                ],
            )],
            scope: Some(DeployScope {
                sync: Some("issues".into()),
                ..Default::default()
            }),
            ..active.clone()
        };
        let e = part("number")
            .merged(Some(&active))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the model `Issue` of this deploy differs"),
            "{e}"
        );
        // Unchanged, it merges; the whole integration may change it.
        assert!(part("string").merged(Some(&active)).is_ok());
        let mut whole = part("number");
        whole.scope = Some(DeployScope {
            integration: Some("gh".into()),
            ..Default::default()
        });
        assert!(whole.merged(Some(&active)).is_ok());
    }

    #[test]
    fn a_yaml_action_deployed_alone_is_merged_into_the_active_files_integrations_and_models() {
        let active = Manifest {
            nango_yaml: "integrations:\n  ${PWD}:\n    syncs:\n      s:\n        runs: every hour\n        output: A\n        endpoint: GET /a\nmodels:\n  A:\n    id: string\n".into(),
            nango_json: None,
            dir_name: Some("gh".into()),
            components: vec![entry("a", &[("gh", "s", ScriptKind::Sync)])],
            version: None,
            scope: None,
            script_versions: BTreeMap::new(),
        };
        let new = Manifest {
            nango_yaml: "integrations:\n  gh:\n    actions:\n      act:\n        output: B\n        endpoint: POST /b\n      other:\n        endpoint: POST /c\nmodels:\n  B:\n    id: number\n".into(),
            nango_json: None,
            dir_name: Some("elsewhere".into()),
            components: vec![entry(
                "b",
                &[
                    ("gh", "act", ScriptKind::Action),
                    ("gh", "other", ScriptKind::Action),
                ],
            )],
            version: Some("3.1".into()),
            scope: Some(DeployScope {
                action: Some("act".into()),
                ..Default::default()
            }),
            script_versions: BTreeMap::new(),
        };
        let merged = new.merged(Some(&active)).unwrap();
        assert_eq!(names(&merged), ["a/gh/s", "b/gh/act"]);
        let config = yaml::parse_new(&merged.nango_yaml, "nango.yaml", None)
            .unwrap()
            .config;
        let gh = &config.integrations[0];
        assert_eq!(gh.provider_config_key, "gh");
        assert_eq!(gh.syncs[0].name, "s");
        let actions: Vec<&str> = gh.actions.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(actions, ["act"]);
        // `-v` tags the deployed action alone.
        assert_eq!(
            merged.script_versions,
            BTreeMap::from([("action:gh/act".to_string(), "3.1".to_string())])
        );
        let models: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
        assert!(models.contains(&"A") && models.contains(&"B"), "{models:?}");

        // A nango.yaml part is not merged into a zero-yaml deployment.
        let zero = Manifest {
            nango_yaml: String::new(),
            nango_json: Some(vec![]),
            ..active.clone()
        };
        let mut part = active;
        part.scope = Some(DeployScope {
            sync: Some("s".into()),
            ..Default::default()
        });
        let e = part.merged(Some(&zero)).unwrap_err().to_string();
        assert!(e.contains("in the same format, nango.yaml"), "{e}");
    }

    /// A small nango.yaml whose anchors copy one list thousands of times
    /// (30 KB, gigabytes once parsed) is refused before it is parsed, in a
    /// whole deploy as in a scoped one.
    #[test]
    fn a_nango_yaml_that_would_expand_to_millions_of_values_is_refused_unparsed() {
        let list = vec!["x"; 6000].join(",");
        let copies = vec!["*a"; 6000].join(",");
        let bomb = format!("a: &a [{list}]\nb: [{copies}]\n");
        let deploy = |scope: Option<DeployScope>| Manifest {
            nango_yaml: bomb.clone(),
            nango_json: None,
            dir_name: None,
            components: vec![entry("a", &[("gh", "s", ScriptKind::Sync)])],
            version: None,
            scope,
            script_versions: BTreeMap::new(),
        };
        let e = deploy(None).check_new().unwrap_err().to_string();
        assert!(e.contains("more than 4000000 values"), "{e}");
        let scoped = deploy(Some(DeployScope {
            integration: Some("gh".into()),
            ..Default::default()
        }));
        let e = scoped.merged(None).unwrap_err().to_string();
        assert!(e.contains("more than 4000000 values"), "{e}");
    }
}
