//! nango.yaml v1 and v2 into one model, with the original's defaults, the
//! schema checks and the parser checks.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde::Serialize;
use serde_norway::{Mapping, Value as Yaml};

use crate::models::{self, Model, Resolver, Type, scalar_text, valid_model_name};
use crate::{Diagnostic, Diagnostics, runs};

/// Which format the file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum YamlVersion {
    V1,
    V2,
}

/// The kinds of script nango.yaml declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScriptKind {
    Sync,
    Action,
    OnEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncType {
    Full,
    Incremental,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "GET" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// Where a script's results are served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub method: HttpMethod,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncConfig {
    pub name: String,
    pub description: String,
    pub runs: String,
    #[serde(skip)]
    pub interval: Duration,
    /// Model names (anonymous models included).
    pub output: Vec<String>,
    pub endpoints: Vec<Endpoint>,
    pub sync_type: SyncType,
    pub track_deletes: bool,
    pub auto_start: bool,
    /// The metadata model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    pub scopes: Vec<String>,
    pub webhook_subscriptions: Vec<String>,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionConfig {
    pub name: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    pub output: Vec<String>,
    pub scopes: Vec<String>,
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    PostConnectionCreation,
    PreConnectionDeletion,
    /// Zero-yaml only (`createOnEvent({ event: 'validate-connection' })`):
    /// runs while a connection is created; a failure refuses it.
    ValidateConnection,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnEventConfig {
    pub event: EventKind,
    pub name: String,
}

/// One integration (provider config key) and its scripts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Integration {
    pub provider_config_key: String,
    pub syncs: Vec<SyncConfig>,
    pub actions: Vec<ActionConfig>,
    pub on_events: Vec<OnEventConfig>,
}

impl Integration {
    /// Every script: (name, kind).
    pub fn scripts(&self) -> impl Iterator<Item = (&str, ScriptKind)> {
        self.syncs
            .iter()
            .map(|s| (s.name.as_str(), ScriptKind::Sync))
            .chain(
                self.actions
                    .iter()
                    .map(|a| (a.name.as_str(), ScriptKind::Action)),
            )
            .chain(
                self.on_events
                    .iter()
                    .map(|e| (e.name.as_str(), ScriptKind::OnEvent)),
            )
    }

    pub fn sync(&self, name: &str) -> Option<&SyncConfig> {
        self.syncs.iter().find(|s| s.name == name)
    }

    /// The syncs, the first of each name: the ones that run ([`Self::sync`]
    /// finds the first), so a sync declared twice (a zero-yaml `nango.json`
    /// written by hand) is scheduled, routed and subscribed by one
    /// definition only.
    pub fn distinct_syncs(&self) -> impl Iterator<Item = &SyncConfig> {
        let mut seen = std::collections::HashSet::new();
        self.syncs
            .iter()
            .filter(move |s| seen.insert(s.name.as_str()))
    }

    pub fn action(&self, name: &str) -> Option<&ActionConfig> {
        self.actions.iter().find(|a| a.name == name)
    }
}

/// A whole nango.yaml.
#[derive(Debug, Clone, PartialEq)]
pub struct NangoYaml {
    pub version: YamlVersion,
    pub integrations: Vec<Integration>,
    /// Declared models in file order, then anonymous ones.
    pub models: Vec<Model>,
}

impl NangoYaml {
    pub fn integration(&self, key: &str) -> Option<&Integration> {
        self.integrations
            .iter()
            .find(|i| i.provider_config_key == key)
    }

    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }
}

fn p(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn type_name(v: &Yaml) -> &'static str {
    match v {
        Yaml::Null => "null",
        Yaml::Bool(_) => "boolean",
        Yaml::Number(_) => "number",
        Yaml::String(_) => "string",
        Yaml::Sequence(_) => "array",
        Yaml::Mapping(_) => "object",
        Yaml::Tagged(_) => "tagged value",
    }
}

struct Builder<'a> {
    d: Diagnostics,
    defined: BTreeSet<String>,
    models: Vec<Model>,
    anonymous: Vec<Model>,
    yaml_models: Option<&'a Mapping>,
}

/// Builds the configuration; `None` when the file is too broken to model.
/// `strict_keys`: integration keys must be ones the API takes (a new
/// file: the CLI's, a new deploy's); a stored deployment is read as it was
/// accepted.
pub(crate) fn build(
    root: &Yaml,
    dir_name: Option<&str>,
    strict_keys: bool,
) -> (Option<NangoYaml>, Diagnostics) {
    let mut b = Builder {
        d: Diagnostics::default(),
        defined: BTreeSet::new(),
        models: Vec::new(),
        anonymous: Vec::new(),
        yaml_models: None,
    };
    let Some(root_map) = root.as_mapping() else {
        b.d.push(Diagnostic::error(
            "invalid_file",
            "Invalid file format, you should have at least an `integrations` property at the root level. Check our documentation https://docs.nango.dev/reference/integration-configuration",
            &[],
        ));
        return (None, b.d);
    };
    let Some(integrations) = root_map.get("integrations") else {
        b.d.push(Diagnostic::error(
            "invalid_file",
            "Invalid file format, you should have at least an `integrations` property at the root level. Check our documentation https://docs.nango.dev/reference/integration-configuration",
            &[],
        ));
        return (None, b.d);
    };
    let Some(integrations) = integrations.as_mapping() else {
        b.d.push(Diagnostic::schema(
            "type",
            "must be object",
            &p(&["integrations"]),
        ));
        return (None, b.d);
    };
    let version = match integrations.iter().next() {
        Some((_, Yaml::Mapping(first)))
            if ["syncs", "actions", "on-events"]
                .iter()
                .any(|k| first.contains_key(*k)) =>
        {
            crate::YamlVersion::V2
        }
        _ => crate::YamlVersion::V1,
    };
    for (key, _) in root_map {
        let key = scalar_text(key).unwrap_or_default();
        if version == YamlVersion::V2 && key != "integrations" && key != "models" {
            b.d.push(Diagnostic::schema(
                "additionalProperties",
                format!("must NOT have additional properties: `{key}`"),
                &[],
            ));
        }
    }
    b.yaml_models = match root_map.get("models") {
        None | Some(Yaml::Null) => None,
        Some(Yaml::Mapping(m)) => Some(m),
        Some(other) => {
            b.d.push(Diagnostic::schema(
                "type",
                format!("must be object, got {}", type_name(other)),
                &p(&["models"]),
            ));
            None
        }
    };
    b.models();
    let mut out = Vec::new();
    for (key, body) in integrations {
        let Some(mut pck) = scalar_text(key) else {
            continue;
        };
        let from_folder = pck == "${PWD}" && dir_name.is_some();
        if pck == "${PWD}"
            && let Some(dir) = dir_name
        {
            pck = dir.to_string();
        }
        let path = p(&["integrations", &pck]);
        // The key names the integration's folder and its files: it must be
        // one the API takes, and not a path.
        let key_ok = !strict_keys
            || !pck.is_empty()
                && pck.len() <= 255
                && pck != "."
                && pck != ".."
                && pck
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "~:.@ _-".contains(c));
        if !key_ok {
            b.d.push(Diagnostic::schema(
                "pattern",
                format!(
                    "integration key \"{pck}\"{} must match ^[a-zA-Z0-9~:.@ _-]+$ (at most 255 characters, not `.` or `..`)",
                    if from_folder { " (the project folder's name, for ${PWD})" } else { "" }
                ),
                &path,
            ));
            continue;
        }
        let Some(body) = body.as_mapping() else {
            b.d.push(Diagnostic::schema("type", "must be object", &path));
            continue;
        };
        let integration = match version {
            YamlVersion::V2 => b.integration_v2(&pck, body, &path),
            YamlVersion::V1 => b.integration_v1(&pck, body, &path),
        };
        b.check_integration(&integration, &path);
        out.push(integration);
    }
    let mut models = std::mem::take(&mut b.models);
    models.append(&mut b.anonymous);
    models::report_cycles(&models, &mut b.d);
    (
        Some(NangoYaml {
            version,
            integrations: out,
            models,
        }),
        b.d,
    )
}

impl Builder<'_> {
    fn models(&mut self) {
        let Some(yaml) = self.yaml_models else {
            return;
        };
        // A file of more models than any project has is refused before
        // the passes over them (cycles, extends) that grow with the square.
        if yaml.len() > models::MAX_MODELS {
            self.d.push(Diagnostic::error(
                "too_many_models",
                format!(
                    "nango.yaml declares {} models, more than the {} it may",
                    yaml.len(),
                    models::MAX_MODELS
                ),
                &p(&["models"]),
            ));
            return;
        }
        // And a file whose aliases copy more fields than any project has:
        // refused before they are resolved, generated and searched.
        let mut fields = 0;
        if !yaml
            .values()
            .all(|body| models::count_fields(body, &mut fields))
        {
            self.d.push(Diagnostic::error(
                "too_many_fields",
                format!(
                    "the models declare more than {} fields in all (inline objects' included, each alias `*name` counted as the copy of its anchor it makes)",
                    models::MAX_TOTAL_FIELDS
                ),
                &p(&["models"]),
            ));
            return;
        }
        for (name, _) in yaml {
            if let Some(n) = scalar_text(name) {
                self.defined.insert(n);
            }
        }
        let mut extends: HashMap<String, Vec<String>> = HashMap::new();
        for (name, body) in yaml {
            let Some(name) = scalar_text(name) else {
                continue;
            };
            let path = p(&["models", &name]);
            if !valid_model_name(&name) {
                self.d.push(Diagnostic::error(
                    "invalid_model_name",
                    if name.len() > models::MAX_NAME_LEN {
                        format!(
                            "Model \"{name}\" is longer than {} characters",
                            models::MAX_NAME_LEN
                        )
                    } else {
                        format!("Model \"{name}\" contains invalid characters")
                    },
                    &path,
                ));
            }
            let empty = Mapping::new();
            let map = match body {
                Yaml::Mapping(m) => m,
                Yaml::Null => &empty,
                other => {
                    self.d.push(Diagnostic::error(
                        "failed_to_parse_object",
                        format!(
                            "Model \"{name}\" must be a map of fields, got {}",
                            type_name(other)
                        ),
                        &path,
                    ));
                    continue;
                }
            };
            let (fields, dynamic, bases) = Resolver {
                defined: &self.defined,
                diagnostics: &mut self.d,
            }
            .fields(map, &path);
            if !bases.is_empty() {
                extends.insert(name.clone(), bases);
            }
            self.models.push(Model {
                name,
                fields,
                dynamic,
                anonymous: None,
            });
        }
        models::apply_extends(&mut self.models, &extends, &mut self.d);
    }

    /// A model name for an `input`/`output` value: the model it names, or
    /// an anonymous model holding its type.
    fn model_ref(&mut self, text: &str, anon_name: String, path: &[String]) -> String {
        let text = text.trim();
        if self.defined.contains(text) {
            return text.to_string();
        }
        let ty = Resolver {
            defined: &self.defined,
            diagnostics: &mut self.d,
        }
        .text(text, path);
        if !matches!(ty, Type::Union(_)) {
            self.d.push(Diagnostic::warning(
                "model_is_literal",
                format!(
                    "Model \"{text}\" is a literal, an anonymous model {anon_name} was created"
                ),
                path,
            ));
        }
        if !self.anonymous.iter().any(|m| m.name == anon_name) {
            self.anonymous.push(Model {
                name: anon_name.clone(),
                fields: Vec::new(),
                dynamic: None,
                anonymous: Some(ty),
            });
        }
        anon_name
    }

    fn string_list(&mut self, v: Option<&Yaml>, split: bool, path: &[String]) -> Vec<String> {
        match v {
            None | Some(Yaml::Null) => Vec::new(),
            Some(Yaml::String(s)) if split => s
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            Some(Yaml::Sequence(items)) => items.iter().filter_map(scalar_text).collect(),
            Some(other) => match scalar_text(other) {
                Some(s) => vec![s],
                None => {
                    self.d.push(Diagnostic::schema(
                        "type",
                        format!("must be string or array, got {}", type_name(other)),
                        path,
                    ));
                    Vec::new()
                }
            },
        }
    }

    fn text_field(&mut self, map: &Mapping, key: &str, path: &[String]) -> Option<String> {
        match map.get(key) {
            None | Some(Yaml::Null) => None,
            Some(Yaml::String(s)) => Some(s.clone()),
            Some(other) => {
                self.d.push(Diagnostic::schema(
                    "type",
                    format!("must be string, got {}", type_name(other)),
                    &[path, &[key.to_string()]].concat(),
                ));
                scalar_text(other)
            }
        }
    }

    fn bool_field(&mut self, map: &Mapping, key: &str, default: bool, path: &[String]) -> bool {
        match map.get(key) {
            None | Some(Yaml::Null) => default,
            Some(Yaml::Bool(b)) => *b,
            Some(other) => {
                self.d.push(Diagnostic::schema(
                    "type",
                    format!("must be boolean, got {}", type_name(other)),
                    &[path, &[key.to_string()]].concat(),
                ));
                default
            }
        }
    }

    fn version(&mut self, map: &Mapping, path: &[String]) -> String {
        let bad = |b: &mut Self| {
            b.d.push(Diagnostic::schema(
                "type",
                "version must be an integer, string or a semver string. Example: \"10\", \"1.0.0\", or 10",
                &[path, &["version".to_string()]].concat(),
            ));
        };
        match map.get("version") {
            None | Some(Yaml::Null) => String::new(),
            Some(Yaml::Number(n)) if n.is_u64() => n.to_string(),
            Some(Yaml::String(s)) => {
                let ok = !s.is_empty() && (s.chars().all(|c| c.is_ascii_digit()) || is_semver(s));
                if !ok {
                    bad(self);
                }
                s.clone()
            }
            Some(other) => {
                bad(self);
                scalar_text(other).unwrap_or_default()
            }
        }
    }

    fn unknown_keys(&mut self, map: &Mapping, allowed: &[&str], path: &[String]) {
        for (k, _) in map {
            let k = scalar_text(k).unwrap_or_default();
            if !allowed.contains(&k.as_str()) {
                self.d.push(Diagnostic::schema(
                    "additionalProperties",
                    format!("must NOT have additional properties: `{k}`"),
                    path,
                ));
            }
        }
    }

    fn endpoints(&mut self, v: Option<&Yaml>, sync: bool, path: &[String]) -> Vec<Endpoint> {
        let path = [path, &["endpoint".to_string()]].concat();
        let invalid = |b: &mut Self| {
            b.d.push(Diagnostic::schema(
                "pattern",
                "endpoint must be a URL (or an array of URLs) with an HTTP verb, i.e:\n- endpoint: GET /tickets\n- endpoint:\n    method: GET\n    path: /tickets",
                &path,
            ));
        };
        let items: Vec<&Yaml> = match v {
            None | Some(Yaml::Null) => return Vec::new(),
            Some(Yaml::Sequence(items)) => items.iter().collect(),
            Some(one) => vec![one],
        };
        let mut out = Vec::new();
        for item in items {
            let endpoint = match item {
                Yaml::String(s) => {
                    let s = s.trim();
                    let (method, route) = match s.split_once(char::is_whitespace) {
                        Some((m, r)) => (HttpMethod::parse(m), r.trim()),
                        None => (
                            Some(if sync {
                                HttpMethod::Get
                            } else {
                                HttpMethod::Post
                            }),
                            s,
                        ),
                    };
                    method.map(|method| Endpoint {
                        method,
                        path: route.to_string(),
                        group: None,
                    })
                }
                Yaml::Mapping(m) => {
                    let method = match m.get("method").and_then(scalar_text) {
                        Some(t) => HttpMethod::parse(&t),
                        None => Some(if sync {
                            HttpMethod::Get
                        } else {
                            HttpMethod::Post
                        }),
                    };
                    let route = m.get("path").and_then(scalar_text);
                    let group = m.get("group").and_then(scalar_text);
                    let bad_group = group.as_deref().is_some_and(|g| {
                        !(1..=64).contains(&g.len())
                            || !g
                                .chars()
                                .all(|c| c.is_ascii_alphabetic() || " _-".contains(c))
                    });
                    if bad_group {
                        invalid(self);
                    }
                    match (method, route) {
                        (Some(method), Some(route)) => Some(Endpoint {
                            method,
                            path: route,
                            group,
                        }),
                        _ => None,
                    }
                }
                _ => None,
            };
            match endpoint {
                Some(e) if valid_path(&e.path) && (!sync || e.method == HttpMethod::Get) => {
                    out.push(e)
                }
                _ => invalid(self),
            }
        }
        out
    }

    /// The named definitions of a mapping (`syncs:`, `actions:`, a v1
    /// integration), each with its path; a definition that is not a mapping
    /// is reported and skipped.
    fn definitions<'y>(
        &mut self,
        map: Option<&'y Mapping>,
        path: &[String],
    ) -> Vec<(String, &'y Mapping, Vec<String>)> {
        let Some(map) = map else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, def) in map {
            let Some(name) = scalar_text(name) else {
                continue;
            };
            let here = [path, std::slice::from_ref(&name)].concat();
            match def.as_mapping() {
                Some(def) => out.push((name, def, here)),
                None => self
                    .d
                    .push(Diagnostic::schema("type", "must be object", &here)),
            }
        }
        out
    }

    fn integration_v2(&mut self, pck: &str, body: &Mapping, path: &[String]) -> Integration {
        self.unknown_keys(
            body,
            &["syncs", "actions", "on-events", "post-connection-scripts"],
            path,
        );
        let anon_pck: String = pck.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let syncs = self
            .definitions(
                body.get("syncs").and_then(Yaml::as_mapping),
                &[path, &["syncs".to_string()]].concat(),
            )
            .into_iter()
            .filter_map(|(name, def, here)| self.sync_v2(&name, def, &anon_pck, &here))
            .collect();
        let actions = self
            .definitions(
                body.get("actions").and_then(Yaml::as_mapping),
                &[path, &["actions".to_string()]].concat(),
            )
            .into_iter()
            .map(|(name, def, here)| self.action_v2(&name, def, &anon_pck, &here))
            .collect();
        let mut on_events = Vec::new();
        if let Some(events) = body.get("on-events") {
            let here = [path, &["on-events".to_string()]].concat();
            match events {
                Yaml::Mapping(map) => {
                    for (event, names) in map {
                        let event_name = scalar_text(event).unwrap_or_default();
                        let kind = match event_name.as_str() {
                            "post-connection-creation" => EventKind::PostConnectionCreation,
                            "pre-connection-deletion" => EventKind::PreConnectionDeletion,
                            _ => {
                                self.d.push(Diagnostic::schema(
                                    "additionalProperties",
                                    format!("must NOT have additional properties: `{event_name}`"),
                                    &here,
                                ));
                                continue;
                            }
                        };
                        for name in self.string_list(Some(names), false, &here) {
                            self.script_name(&name, &here);
                            on_events.push(OnEventConfig { event: kind, name });
                        }
                    }
                }
                Yaml::Null => {}
                _ => self
                    .d
                    .push(Diagnostic::schema("type", "must be object", &here)),
            }
        }
        if let Some(legacy) = body.get("post-connection-scripts") {
            let here = [path, &["post-connection-scripts".to_string()]].concat();
            if body.contains_key("on-events") {
                self.d.push(Diagnostic::error(
                    "both_post_connection_scripts_and_on_events_present",
                    "Both post-connection-scripts and on-events are present. Please use only on-events",
                    &here,
                ));
            }
            for name in self.string_list(Some(legacy), false, &here) {
                self.script_name(&name, &here);
                on_events.push(OnEventConfig {
                    event: EventKind::PostConnectionCreation,
                    name,
                });
            }
        }
        Integration {
            provider_config_key: pck.to_string(),
            syncs,
            actions,
            on_events,
        }
    }

    fn script_name(&mut self, name: &str, path: &[String]) {
        if let Some(problem) = models::script_name_problem(name) {
            // The schema keyword: the pattern, else the length.
            let keyword = if problem.ends_with("must match ^[a-zA-Z0-9_-]+$") {
                "pattern"
            } else {
                "maxLength"
            };
            self.d.push(Diagnostic::schema(keyword, problem, path));
        }
    }

    fn outputs(&mut self, map: &Mapping, anon: &str, path: &[String]) -> Vec<String> {
        let here = [path, &["output".to_string()]].concat();
        self.string_list(map.get("output"), false, &here)
            .into_iter()
            .map(|o| self.model_ref(&o, format!("{anon}_output"), &here))
            .collect()
    }

    fn sync_v2(
        &mut self,
        name: &str,
        def: &Mapping,
        anon_pck: &str,
        path: &[String],
    ) -> Option<SyncConfig> {
        self.script_name(name, path);
        self.unknown_keys(
            def,
            &[
                "description",
                "runs",
                "output",
                "endpoint",
                "sync_type",
                "track_deletes",
                "auto_start",
                "input",
                "scopes",
                "webhook-subscriptions",
                "version",
            ],
            path,
        );
        let anon = format!("Anonymous_{anon_pck}_sync_{}", alnum(name));
        let runs = self.text_field(def, "runs", path);
        let interval = match runs.as_deref() {
            None => {
                self.d.push(Diagnostic::schema(
                    "required",
                    "runs must be a string and include the word \"every\".",
                    path,
                ));
                Duration::ZERO
            }
            Some(r) if !r.contains("every") => {
                self.d.push(Diagnostic::schema(
                    "pattern",
                    "runs must be a string and include the word \"every\".",
                    &[path, &["runs".to_string()]].concat(),
                ));
                Duration::ZERO
            }
            Some(r) => match runs::parse_interval(r) {
                Ok(i) => i,
                Err(code) => {
                    let why = if code == "sync_interval_too_short" {
                        "is too short: syncs may not run more often than every 30 seconds"
                    } else {
                        "is not a valid interval"
                    };
                    self.d.push(Diagnostic::error(
                        "invalid_runs",
                        format!("runs \"{r}\" {why} ({code})"),
                        &[path, &["runs".to_string()]].concat(),
                    ));
                    Duration::ZERO
                }
            },
        };
        if !def.contains_key("output") {
            self.d.push(Diagnostic::schema(
                "required",
                "An output property is required to specify what is the outcome of the sync.",
                path,
            ));
        }
        if !def.contains_key("endpoint") {
            self.d.push(Diagnostic::schema(
                "required",
                "An endpoint property is required to specify how to retrieve the data from the sync.",
                path,
            ));
        }
        let output = self.outputs(def, &anon, path);
        let endpoints = self.endpoints(def.get("endpoint"), true, path);
        let sync_type = match def.get("sync_type") {
            None | Some(Yaml::Null) => SyncType::Full,
            Some(v) => match scalar_text(v).map(|s| s.to_ascii_lowercase()).as_deref() {
                Some("incremental") => SyncType::Incremental,
                Some("full") => SyncType::Full,
                _ => {
                    self.d.push(Diagnostic::schema(
                        "enum",
                        "sync_type must be either 'incremental' or 'full'.",
                        &[path, &["sync_type".to_string()]].concat(),
                    ));
                    SyncType::Full
                }
            },
        };
        let input = self
            .text_field(def, "input", path)
            .map(|i| self.model_ref(&i, format!("{anon}_input"), path));
        let scopes_path = [path, &["scopes".to_string()]].concat();
        let hooks_path = [path, &["webhook-subscriptions".to_string()]].concat();
        Some(SyncConfig {
            name: name.to_string(),
            description: self
                .text_field(def, "description", path)
                .unwrap_or_default()
                .trim()
                .to_string(),
            runs: runs.unwrap_or_default(),
            interval,
            output,
            endpoints,
            sync_type,
            track_deletes: self.bool_field(def, "track_deletes", false, path),
            auto_start: self.bool_field(def, "auto_start", true, path),
            input,
            scopes: self.string_list(def.get("scopes"), true, &scopes_path),
            webhook_subscriptions: self.string_list(
                def.get("webhook-subscriptions"),
                false,
                &hooks_path,
            ),
            version: self.version(def, path),
        })
    }

    fn action_v2(
        &mut self,
        name: &str,
        def: &Mapping,
        anon_pck: &str,
        path: &[String],
    ) -> ActionConfig {
        self.script_name(name, path);
        self.unknown_keys(
            def,
            &[
                "description",
                "endpoint",
                "input",
                "output",
                "scopes",
                "version",
            ],
            path,
        );
        if !def.contains_key("endpoint") {
            self.d.push(Diagnostic::schema(
                "required",
                "An endpoint property is required to specify how to trigger the action.",
                path,
            ));
        }
        let anon = format!("Anonymous_{anon_pck}_action_{}", alnum(name));
        let endpoint = self.endpoints(def.get("endpoint"), false, path);
        if endpoint.len() > 1 {
            self.d.push(Diagnostic::schema(
                "type",
                "an action has one endpoint",
                &[path, &["endpoint".to_string()]].concat(),
            ));
        }
        let input = self
            .text_field(def, "input", path)
            .map(|i| self.model_ref(&i, format!("{anon}_input"), path));
        let scopes_path = [path, &["scopes".to_string()]].concat();
        ActionConfig {
            name: name.to_string(),
            description: self
                .text_field(def, "description", path)
                .unwrap_or_default()
                .trim()
                .to_string(),
            endpoint: endpoint.into_iter().next(),
            input,
            output: self.outputs(def, &anon, path),
            scopes: self.string_list(def.get("scopes"), true, &scopes_path),
            version: self.version(def, path),
        }
    }

    /// v1: `integrations.<pck>.<script>: { type?, returns, runs?, ... }`.
    fn integration_v1(&mut self, pck: &str, body: &Mapping, path: &[String]) -> Integration {
        let anon_pck: String = pck.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let mut syncs = Vec::new();
        let mut actions = Vec::new();
        for (name, def, here) in self.definitions(Some(body), path) {
            // v1 names anonymous models `sync` even for actions.
            let anon = format!("Anonymous_{anon_pck}_sync_{}", alnum(&name));
            let returns_path = [&here[..], &["returns".to_string()]].concat();
            let returns: Vec<String> = self
                .string_list(def.get("returns"), false, &returns_path)
                .into_iter()
                .map(|o| self.model_ref(&o, format!("{anon}_output"), &returns_path))
                .collect();
            let is_action = def
                .get("type")
                .and_then(scalar_text)
                .is_some_and(|t| t == "action");
            let description = self
                .text_field(def, "description", &here)
                .unwrap_or_default()
                .trim()
                .to_string();
            let version = self.version(def, &here);
            if is_action {
                actions.push(ActionConfig {
                    name,
                    description,
                    endpoint: None,
                    input: None,
                    output: returns,
                    scopes: Vec::new(),
                    version,
                });
                continue;
            }
            if returns.is_empty() {
                // The original drops a v1 sync without `returns`.
                continue;
            }
            let runs = self
                .text_field(def, "runs", &here)
                .unwrap_or_else(|| "every day".into());
            let interval = match runs::parse_interval(&runs) {
                Ok(i) => i,
                Err(code) => {
                    self.d.push(Diagnostic::error(
                        "invalid_runs",
                        format!("runs \"{runs}\" is not a valid interval ({code})"),
                        &[&here[..], &["runs".to_string()]].concat(),
                    ));
                    Duration::ZERO
                }
            };
            syncs.push(SyncConfig {
                name,
                description,
                runs,
                interval,
                output: returns,
                endpoints: Vec::new(),
                sync_type: SyncType::Incremental,
                track_deletes: self.bool_field(def, "track_deletes", false, &here),
                auto_start: self.bool_field(def, "auto_start", true, &here),
                input: None,
                scopes: Vec::new(),
                webhook_subscriptions: Vec::new(),
                version,
            });
        }
        Integration {
            provider_config_key: pck.to_string(),
            syncs,
            actions,
            on_events: Vec::new(),
        }
    }

    fn model(&self, name: &str) -> Option<&Model> {
        self.models
            .iter()
            .chain(self.anonymous.iter())
            .find(|m| m.name == name)
    }

    /// The checks across one integration's scripts.
    fn check_integration(&mut self, integration: &Integration, path: &[String]) {
        let mut seen_outputs: BTreeSet<&str> = BTreeSet::new();
        let mut inputs: BTreeSet<&str> = BTreeSet::new();
        let mut endpoints: BTreeSet<(HttpMethod, &str)> = BTreeSet::new();
        let mut findings = Vec::new();
        for sync in &integration.syncs {
            let here = [path, &["syncs".to_string(), sync.name.clone()]].concat();
            let out_path = [&here[..], &["output".to_string()]].concat();
            for model in &sync.output {
                let has_id = self.model(model).is_some_and(|m| m.field("id").is_some());
                if !has_id {
                    findings.push(Diagnostic::error(
                        "model_missing_id",
                        format!("Model \"{model}\" doesn't have an id field. This is required to be able to uniquely identify the data record"),
                        &out_path,
                    ));
                }
                if !seen_outputs.insert(model) || inputs.contains(model.as_str()) {
                    findings.push(Diagnostic::error(
                        "duplicate_model",
                        format!("Model \"{model}\" is used multiple times. Please make sure all models are unique within an integration."),
                        &out_path,
                    ));
                }
            }
            if let Some(i) = &sync.input {
                inputs.insert(i);
            }
            if version_has_endpoints(sync) && sync.endpoints.len() != sync.output.len() {
                findings.push(Diagnostic::error(
                    "endpoints_mismatch",
                    format!(
                        "The number of endpoints ({}) doesn't match the number of models ({}) returned by the sync",
                        sync.endpoints.len(),
                        sync.output.len()
                    ),
                    &[&here[..], &["endpoint".to_string()]].concat(),
                ));
            }
            for e in &sync.endpoints {
                self.check_endpoint(e, &mut endpoints, &here, &mut findings);
            }
        }
        for action in &integration.actions {
            let here = [path, &["actions".to_string(), action.name.clone()]].concat();
            if let Some(e) = &action.endpoint {
                self.check_endpoint(e, &mut endpoints, &here, &mut findings);
            }
        }
        for f in findings {
            self.d.push(f);
        }
    }

    fn check_endpoint<'e>(
        &self,
        e: &'e Endpoint,
        seen: &mut BTreeSet<(HttpMethod, &'e str)>,
        here: &[String],
        findings: &mut Vec<Diagnostic>,
    ) {
        let path = [here, &["endpoint".to_string()]].concat();
        if !seen.insert((e.method, e.path.as_str())) {
            findings.push(Diagnostic::error(
                "duplicate_endpoint",
                format!(
                    "Endpoint {} {} is used multiple times",
                    e.method.as_str(),
                    e.path
                ),
                &path,
            ));
        }
        let mut rest = e.path.as_str();
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let inner = &rest[open + 1..open + close];
            let model = inner.split(':').next().unwrap_or_default();
            if self.model(model).is_none() {
                findings.push(Diagnostic::error(
                    "model_not_found",
                    format!("Model \"{model}\" is not defined"),
                    &path,
                ));
            }
            rest = &rest[open + close + 1..];
        }
    }
}

fn version_has_endpoints(sync: &SyncConfig) -> bool {
    // v1 syncs have none; v2 requires them (a missing one is a schema error).
    !sync.endpoints.is_empty()
}

fn alnum(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

fn is_semver(s: &str) -> bool {
    let core = s.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Endpoint paths: `/` then letters, digits and `-./_:{}`.
fn valid_path(path: &str) -> bool {
    path.len() > 1
        && path.starts_with('/')
        && path[1..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-./_:{}".contains(c))
}
