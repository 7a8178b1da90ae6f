//! Zero-yaml projects (Nango's current format): no nango.yaml, an
//! `index.ts` importing every script, each script's default export built
//! with `createSync` / `createAction` / `createOnEvent`.
//!
//! Compiling one: the entries of `index.ts` grouped by integration (the
//! third-from-last path segment), each integration's definitions read by
//! the toolchain's `definitions` step (the original's source checks, then
//! the script loaded in Node, its models' JSON schema from zod 4), its
//! scripts bundled and componentized as one component like nango.yaml
//! projects, and `.nango/nango.json` written as the original writes it. The
//! definitions become a [`NangoYaml`] so everything downstream (catalog,
//! deploy, server, dry run) treats both formats alike.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_nango_yaml::{
    self as yaml, ActionConfig, Endpoint, EventKind, HttpMethod, Integration, NangoYaml,
    OnEventConfig, SyncConfig, SyncType, YamlVersion,
};
use sluice_runtime::{Runtime, ScriptKind};

use crate::compile::{
    self, CompileError, CompileOptions, Project, ProjectScript, Source, precompile,
    write_if_changed,
};
use crate::toolchain::{self, StepMessage, Toolchain};

/// Whether `dir` is a zero-yaml project: no nango.yaml, a `.nango` entry
/// and an `index.ts`.
pub fn is_zero_yaml(dir: &Path) -> bool {
    !dir.join("nango.yaml").exists()
        && dir.join(".nango").exists()
        && dir.join("index.ts").is_file()
}

/// One script `index.ts` imports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub integration: String,
    /// The file's base name: the script's name.
    pub name: String,
    /// The import path as written, `.js` appended when missing.
    pub path: String,
    /// The `.ts` source.
    pub file: PathBuf,
}

fn build_error(integration: &str, message: String) -> CompileError {
    CompileError::Build {
        integration: integration.to_string(),
        messages: vec![StepMessage {
            file: None,
            line: None,
            message,
        }],
    }
}

/// The scripts `index.ts` lists: lines that start with `import`, a space, a
/// quote and `./` (§2.2 of the zero-yaml reference).
pub fn entries(root: &Path) -> Result<Vec<Entry>, CompileError> {
    let index = root.join("index.ts");
    // A list of imports: bounded as nango.yaml is.
    let text = yaml::read_text_file(&index, yaml::MAX_FILE_BYTES)
        .map_err(|e| build_error("index.ts", format!("Could not read index.ts: {e}")))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("import ") else {
            continue;
        };
        let Some(quote) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            continue;
        };
        let rest = &rest[1..];
        if !rest.starts_with("./") {
            continue;
        }
        let Some(end) = rest.find(quote) else {
            continue;
        };
        let mut path = rest[..end].to_string();
        if !path.ends_with(".js") {
            path.push_str(".js");
        }
        let segments: Vec<&str> = path.split('/').collect();
        // `./` only at its start: an integration named `..` would be
        // built, deployed and recorded outside the project.
        if segments[1..]
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
        {
            return Err(build_error(
                "index.ts",
                format!(
                    "index.ts imports `{path}`: an entry's path holds no `.`, `..` or empty part after its leading `./` (`./<integration>/<syncs|actions|on-events>/<name>.js`)"
                ),
            ));
        }
        if segments.len() < 4 {
            return Err(build_error(
                "index.ts",
                format!(
                    "index.ts imports `{path}`: an entry must be `./<integration>/<syncs|actions|on-events>/<name>.js`"
                ),
            ));
        }
        let integration = segments[segments.len() - 3].to_string();
        let base = segments[segments.len() - 1];
        let name = base.strip_suffix(".js").unwrap_or(base).to_string();
        // The file's name is the script's: nango.yaml's rule, checked here
        // rather than by the server at deploy (a `#` broke the deploy; a
        // name over 255 characters compiled and was refused there).
        if let Some(problem) = yaml::models::script_name_problem(&name) {
            return Err(build_error(
                "index.ts",
                format!(
                    "index.ts imports `{path}`: its file's name is the script's name, and the {problem} (rename the file)"
                ),
            ));
        }
        let file = root.join(format!("{}.ts", &path[2..path.len() - 3]));
        out.push(Entry {
            integration,
            name,
            path,
            file,
        });
    }
    if out.is_empty() {
        return Err(build_error(
            "index.ts",
            "No entry points found in index.ts, add one like this `import './github/syncs/fetch.js'`"
                .into(),
        ));
    }
    Ok(out)
}

/// The scripts the integrations' tests import that `index.ts` does not
/// list (vitest imports them directly).
fn tested_entries(root: &Path, listed: &[Entry]) -> Vec<Entry> {
    let mut ids: Vec<&str> = listed.iter().map(|e| e.integration.as_str()).collect();
    ids.dedup();
    let mut out: Vec<Entry> = Vec::new();
    for id in ids {
        for tf in crate::zerotest::discover(root, Some(id)) {
            let file = tf.script_file.clone();
            let known = |e: &Entry| {
                e.integration == id
                    && std::fs::canonicalize(&e.file).ok() == std::fs::canonicalize(&file).ok()
            };
            if !file.is_file() || listed.iter().any(known) || out.iter().any(known) {
                continue;
            }
            let rel = file
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            out.push(Entry {
                integration: id.to_string(),
                name: tf.script.clone(),
                path: format!("./{}", rel.trim_end_matches(".ts")) + ".js",
                file,
            });
        }
    }
    out
}

/// The integrations in first-seen order, each with its entries.
fn by_integration(entries: Vec<Entry>) -> Vec<(String, Vec<Entry>)> {
    let mut out: Vec<(String, Vec<Entry>)> = Vec::new();
    for e in entries {
        match out.iter_mut().find(|(i, _)| *i == e.integration) {
            Some((_, list)) => list.push(e),
            None => out.push((e.integration.clone(), vec![e])),
        }
    }
    out
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// An endpoint of a definition. A path without its leading `/` (which
/// this format does not check) is served with one: `/v1/users` for
/// `users`, which the original never matched.
fn endpoint(v: &Value) -> Option<Endpoint> {
    let path = v.get("path")?.as_str()?;
    Some(Endpoint {
        method: HttpMethod::parse(v.get("method")?.as_str()?)?,
        path: match path.starts_with('/') {
            true => path.to_string(),
            false => format!("/{path}"),
        },
        group: v.get("group").and_then(Value::as_str).map(str::to_string),
    })
}

/// A frequency of the zero-yaml grammar (`every day`, `every 30 minutes`,
/// `2h`, …) as a duration; `None` when the original refuses it (see
/// [`frequency_problem`]). One longer than a century is kept as written
/// (as the original's, it has no upper bound): the scheduler runs it once a
/// century.
pub fn frequency(text: &str) -> Option<Duration> {
    frequency_ms(text)
        .filter(|ms| *ms >= 30_000.0)
        .map(|ms| Duration::from_millis(ms as u64))
}

/// What is wrong with a frequency [`frequency`] refuses.
pub fn frequency_problem(text: &str) -> &'static str {
    match frequency_ms(text) {
        Some(ms) if ms < 30_000.0 => {
            "is too short: syncs may not run more often than every 30 seconds"
        }
        _ => "is not a frequency (`every day`, `every 30 minutes`, `2h`)",
    }
}

/// The milliseconds a frequency of the zero-yaml grammar names, unbounded.
fn frequency_ms(text: &str) -> Option<f64> {
    let t = text.trim().to_ascii_lowercase();
    let ms: f64 = match t.as_str() {
        "every half day" => 12.0 * 3_600_000.0,
        "every half hour" => 30.0 * 60_000.0,
        "every quarter hour" => 15.0 * 60_000.0,
        "every hour" => 3_600_000.0,
        "every day" => 86_400_000.0,
        "every month" => 30.0 * 86_400_000.0,
        "every week" => 7.0 * 86_400_000.0,
        _ => {
            let rest = t.strip_prefix("every ").unwrap_or(&t);
            let split = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let n: f64 = rest[..split].parse().ok()?;
            let unit = rest[split..].trim();
            let per = match unit {
                "y" | "yr" | "yrs" | "year" | "years" => 365.25 * 86_400_000.0,
                "mo" | "month" | "months" => 365.25 / 12.0 * 86_400_000.0,
                "w" | "week" | "weeks" => 7.0 * 86_400_000.0,
                "d" | "day" | "days" => 86_400_000.0,
                "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000.0,
                "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
                "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
                "" | "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1.0,
                _ => return None,
            };
            n * per
        }
    };
    ms.is_finite().then_some(ms)
}

/// Checks definitions that arrive from outside (a deploy's
/// `nango_json`) for what [`config`] would otherwise pass over or replace
/// with a default: each entry an object with a `providerConfigKey`, once;
/// `syncs` and `actions` lists of objects, each named; a sync's `runs` a
/// frequency the original accepts; endpoints with a known method and a
/// path; on-event scripts listed by name. The error names the entry, the
/// script and the field.
pub fn check_definitions(definitions: &[Value]) -> Result<(), String> {
    let mut keys = std::collections::BTreeSet::new();
    for (i, def) in definitions.iter().enumerate() {
        let Some(obj) = def.as_object() else {
            return Err(format!("entry {i} is not an object"));
        };
        let key = match obj.get("providerConfigKey") {
            Some(Value::String(k)) if !k.trim().is_empty() => k.as_str(),
            _ => return Err(format!("entry {i} has no `providerConfigKey` string")),
        };
        if !keys.insert(key) {
            return Err(format!("integration `{key}` is defined twice"));
        }
        for list in ["syncs", "actions"] {
            let scripts = match obj.get(list) {
                None | Some(Value::Null) => continue,
                Some(Value::Array(a)) => a,
                Some(_) => return Err(format!("`{key}`: `{list}` is not a list")),
            };
            for (j, s) in scripts.iter().enumerate() {
                let name = match s.get("name") {
                    Some(Value::String(n)) if !n.trim().is_empty() => n.as_str(),
                    _ => return Err(format!("`{key}`: {list}[{j}] has no `name` string")),
                };
                // As nango.yaml's: a name goes into stored keys, which
                // every store must take.
                if name.len() > sluice_nango_yaml::models::MAX_NAME_LEN {
                    return Err(format!(
                        "`{key}`: {list}[{j}]'s name is longer than {} characters",
                        sluice_nango_yaml::models::MAX_NAME_LEN
                    ));
                }
                let at = |field: &str| format!("`{key}/{name}`: `{field}`");
                if list == "syncs" {
                    let runs = s.get("runs").and_then(Value::as_str).unwrap_or_default();
                    if frequency(runs).is_none() {
                        return Err(format!(
                            "{} {runs:?} {}",
                            at("runs"),
                            frequency_problem(runs)
                        ));
                    }
                    match s.get("endpoints") {
                        None | Some(Value::Null) => {}
                        Some(Value::Array(e)) => {
                            for e in e {
                                check_endpoint(e)
                                    .map_err(|why| format!("{} {why}", at("endpoints")))?;
                            }
                        }
                        Some(_) => return Err(format!("{} is not a list", at("endpoints"))),
                    }
                } else if let Some(e) = s.get("endpoint").filter(|e| !e.is_null()) {
                    check_endpoint(e).map_err(|why| format!("{} {why}", at("endpoint")))?;
                }
                for field in ["output", "scopes", "webhookSubscriptions"] {
                    match s.get(field) {
                        None | Some(Value::Null) => {}
                        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                            if field == "output"
                                && let Some(long) = a
                                    .iter()
                                    .filter_map(Value::as_str)
                                    .find(|m| m.len() > sluice_nango_yaml::models::MAX_NAME_LEN)
                            {
                                return Err(format!(
                                    "{} names a model longer than {} characters: {long:?}",
                                    at(field),
                                    sluice_nango_yaml::models::MAX_NAME_LEN
                                ));
                            }
                        }
                        Some(_) => return Err(format!("{} is not a list of strings", at(field))),
                    }
                }
                // As a deploy's `--version`: at most 255 characters, none a
                // control character.
                match s.get("version") {
                    None | Some(Value::Null) => {}
                    // Empty, as the original writes a version left out.
                    Some(Value::String(v))
                        if v.is_empty()
                            || (!v.trim().is_empty()
                                && v.chars().count() <= 255
                                && !v.chars().any(char::is_control)) => {}
                    Some(_) => {
                        return Err(format!(
                            "{} is not a version: a string of at most 255 characters, no control characters",
                            at("version")
                        ));
                    }
                }
            }
        }
        match obj.get("onEventScripts") {
            None | Some(Value::Null) => {}
            Some(Value::Object(events)) => {
                for (event, names) in events {
                    let ok = names
                        .as_array()
                        .is_some_and(|a| a.iter().all(Value::is_string));
                    if !ok {
                        return Err(format!(
                            "`{key}`: `onEventScripts.{event}` is not a list of script names"
                        ));
                    }
                }
            }
            Some(_) => return Err(format!("`{key}`: `onEventScripts` is not an object")),
        }
    }
    Ok(())
}

/// Why an endpoint (`{method, path, group?}`) is not one.
fn check_endpoint(v: &Value) -> Result<(), String> {
    let Some(method) = v.get("method").and_then(Value::as_str) else {
        return Err("has no `method` string".into());
    };
    if HttpMethod::parse(method).is_none() {
        return Err(format!("has an unknown method {method:?}"));
    }
    match v.get("path").and_then(Value::as_str) {
        Some(p) if !p.is_empty() => Ok(()),
        _ => Err("has no `path` string".into()),
    }
}

/// A zero-yaml project's definitions as nango.yaml's model.
pub fn config(definitions: &[Value]) -> NangoYaml {
    NangoYaml {
        version: YamlVersion::V2,
        integrations: definitions.iter().map(integration_config).collect(),
        models: Vec::new(),
    }
}

/// One integration's `.nango/nango.json` entry as nango.yaml's model.
pub fn integration_config(def: &Value) -> Integration {
    let syncs = def
        .get("syncs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| SyncConfig {
                    name: text(s, "name"),
                    description: text(s, "description"),
                    runs: text(s, "runs"),
                    interval: frequency(&text(s, "runs")).unwrap_or(Duration::from_secs(86_400)),
                    output: strings(s, "output"),
                    endpoints: s
                        .get("endpoints")
                        .and_then(Value::as_array)
                        .map(|e| e.iter().filter_map(endpoint).collect())
                        .unwrap_or_default(),
                    sync_type: if text(s, "sync_type") == "incremental" {
                        SyncType::Incremental
                    } else {
                        SyncType::Full
                    },
                    track_deletes: s.get("track_deletes") == Some(&Value::Bool(true)),
                    auto_start: s.get("auto_start") == Some(&Value::Bool(true)),
                    input: s.get("input").and_then(Value::as_str).map(str::to_string),
                    scopes: strings(s, "scopes"),
                    webhook_subscriptions: strings(s, "webhookSubscriptions"),
                    version: text(s, "version"),
                })
                .collect()
        })
        .unwrap_or_default();
    let actions = def
        .get("actions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| ActionConfig {
                    name: text(s, "name"),
                    description: text(s, "description"),
                    endpoint: s.get("endpoint").and_then(endpoint),
                    input: s.get("input").and_then(Value::as_str).map(str::to_string),
                    output: strings(s, "output"),
                    scopes: strings(s, "scopes"),
                    version: text(s, "version"),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut on_events = Vec::new();
    for (key, event) in [
        (
            "post-connection-creation",
            EventKind::PostConnectionCreation,
        ),
        ("pre-connection-deletion", EventKind::PreConnectionDeletion),
        ("validate-connection", EventKind::ValidateConnection),
    ] {
        for name in def
            .pointer(&format!("/onEventScripts/{key}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            on_events.push(OnEventConfig {
                event,
                name: name.to_string(),
            });
        }
    }
    Integration {
        provider_config_key: text(def, "providerConfigKey"),
        syncs,
        actions,
        on_events,
    }
}

/// Compiles a zero-yaml project (see the module documentation).
pub(crate) fn compile(
    opts: &CompileOptions,
    root: &Path,
    runtime: &Runtime,
    progress: &mut dyn Write,
) -> Result<Project, CompileError> {
    let mut listed = entries(root)?;
    if opts.tested_scripts {
        let tested = tested_entries(root, &listed);
        // As `entries` checks the listed ones' names.
        if let Some((e, problem)) = tested
            .iter()
            .find_map(|e| yaml::models::script_name_problem(&e.name).map(|p| (e, p)))
        {
            return Err(build_error(
                &e.integration,
                format!(
                    "{}: a test imports it, its file's name is the script's name, and the {problem} (rename the file)",
                    e.file.display()
                ),
            ));
        }
        listed.extend(tested);
    }
    let all = by_integration(listed);
    // An alias folder (a link to an integration's folder) compiles the
    // integration it links to; its tests run under its own name.
    let wanted = opts.integration.as_ref().map(|i| {
        std::fs::canonicalize(root.join(i))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|real| all.iter().any(|(id, _)| id == real))
            .unwrap_or_else(|| i.clone())
    });
    if let Some(i) = &wanted
        && !all.iter().any(|(id, _)| id == i)
    {
        return Err(CompileError::UnknownIntegration(i.clone()));
    }
    let missing: Vec<String> = all
        .iter()
        .flat_map(|(_, list)| list)
        .filter(|e| !e.file.is_file())
        .map(|e| e.path.clone())
        .collect();
    if !missing.is_empty() {
        return Err(CompileError::MissingImports(missing));
    }
    let toolchain = Toolchain::locate(opts.sdk.as_deref(), &opts.cache_dir, progress)?;
    let build = opts.checked_build_dir(root)?;
    let wit_dir = build.join("wit");
    write_if_changed(&wit_dir.join("nango.wit"), toolchain::WIT)?;

    let mut definitions = Vec::new();
    let mut integrations = Vec::new();
    let mut scripts = Vec::new();
    let mut hand_tests = BTreeMap::new();
    let selected: Vec<&(String, Vec<Entry>)> = all
        .iter()
        .filter(|(id, _)| wanted.as_ref().is_none_or(|i| i == id))
        .collect();
    // Integrations are independent: up to one per core compiles at a
    // time (componentize-js is one process each; Cranelift shares its
    // function cache). Each keeps its progress lines, written in order.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(selected.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<Compiled, CompileError>>>> = selected
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((id, list)) = selected.get(i).map(|e| (&e.0, &e.1)) else {
                        break;
                    };
                    // `sluice test` compiles in the integration's test
                    // files written by hand, with the scripts they test.
                    let tests = if opts.tested_scripts {
                        crate::zerotest::hand_tests(root, id)
                    } else {
                        Vec::new()
                    };
                    let done = compile_integration(
                        &toolchain, root, &build, &wit_dir, runtime, id, list, &tests,
                    );
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(done);
                }
            });
        }
    });
    for slot in results {
        let Some(done) = slot.into_inner().unwrap_or_else(|e| e.into_inner()) else {
            continue;
        };
        let c = done?;
        let _ = progress.write_all(&c.progress);
        hand_tests.extend(c.hand_tests);
        scripts.extend(c.scripts);
        definitions.push(c.definition);
        integrations.push(c.config);
    }
    if opts.integration.is_none() && !opts.tested_scripts {
        compile::write_generated(
            root,
            &Path::new(".nango").join("nango.json"),
            &format!(
                "{}\n",
                serde_json::to_string_pretty(&definitions).unwrap_or_default()
            ),
        )?;
    }
    Ok(Project {
        root: root.to_path_buf(),
        build_dir: build,
        config: NangoYaml {
            version: YamlVersion::V2,
            integrations,
            models: Vec::new(),
        },
        warnings: Vec::new(),
        scripts,
        definitions: Some(definitions),
        hand_tests,
    })
}

/// The most scripts one component holds. Every script's module (its zod
/// schemas included) is evaluated when componentize-js snapshots the
/// engine; past ~50 template scripts SpiderMonkey may run out of memory
/// there, so a bigger integration becomes several components (and a chunk
/// that still does not fit is split again).
const MAX_SCRIPTS_PER_COMPONENT: usize = 32;

/// One integration, compiled.
struct Compiled {
    definition: Value,
    config: Integration,
    scripts: Vec<ProjectScript>,
    /// The test files written by hand compiled in, or why one was not.
    hand_tests: BTreeMap<String, Result<(), String>>,
    /// What it printed while compiling.
    progress: Vec<u8>,
}

#[allow(clippy::too_many_arguments)]
fn compile_integration(
    toolchain: &Toolchain,
    root: &Path,
    build: &Path,
    wit_dir: &Path,
    runtime: &Runtime,
    id: &str,
    list: &[Entry],
    tests: &[crate::zerotest::HandTest],
) -> Result<Compiled, CompileError> {
    let mut progress = Vec::new();
    let mut hand_tests: BTreeMap<String, Result<(), String>> = BTreeMap::new();
    let (definition, file_kinds) =
        cached_definitions(toolchain, root, build, id, list, &mut progress)?;
    let config = integration_config(&definition);
    let by_name: BTreeMap<&str, ScriptKind> = config
        .scripts()
        .map(|(n, k)| (n, compile::runtime_kind(k)))
        .collect();
    // Each file's kind as its definition says (a sync and an action may
    // share a name); only kinds the platform runs (not createFunction).
    let kind_of = |e: &Entry| -> Option<ScriptKind> {
        match file_kinds.get(&e.file.display().to_string()) {
            Some(k) => script_kind(k).map(compile::runtime_kind),
            None => by_name.get(e.name.as_str()).copied(),
        }
    };
    let kinds: BTreeMap<PathBuf, ScriptKind> = list
        .iter()
        .filter_map(|e| kind_of(e).map(|k| (e.file.clone(), k)))
        .collect();
    let files: Vec<(String, PathBuf)> = list
        .iter()
        .filter(|e| kinds.contains_key(&e.file))
        .map(|e| (e.name.clone(), e.file.clone()))
        .collect();
    let mut scripts = Vec::new();
    // A component dispatches on the script's name: two scripts of one name
    // (a sync and an action, say) go to different components.
    let mut chunks: Vec<Vec<(String, PathBuf)>> = Vec::new();
    for f in &files {
        match chunks
            .iter_mut()
            .find(|c| c.len() < MAX_SCRIPTS_PER_COMPONENT && c.iter().all(|(n, _)| *n != f.0))
        {
            Some(c) => c.push(f.clone()),
            None => chunks.push(vec![f.clone()]),
        }
    }
    // A chunk whose snapshot runs out of memory is split in two and tried
    // again (the scripts' zod schemas are what fills the engine's heap).
    let single = chunks.len() == 1;
    let mut queue: std::collections::VecDeque<Vec<(String, PathBuf)>> = chunks.into();
    let mut built = 0usize;
    while let Some(chunk) = queue.pop_front() {
        let mut name = if single && built == 0 && queue.is_empty() {
            id.to_string()
        } else {
            format!("{id}.{}", built + 1)
        };
        // The hand-written tests of this chunk's scripts go in with them
        // (under their own build name, so that the deployed component
        // stays the one `compile` builds).
        let chunk_tests: Vec<(String, PathBuf)> = tests
            .iter()
            .filter(|t| {
                chunk.iter().any(|(_, f)| {
                    t.script_file.is_some() && std::fs::canonicalize(f).ok() == t.script_file
                })
            })
            .map(|t| (t.key.clone(), t.file.clone()))
            .collect();
        if !chunk_tests.is_empty() {
            name.push_str(".tests");
        }
        let mut skipped = Vec::new();
        let bundled = |progress: &mut Vec<u8>,
                       skipped: &mut Vec<(String, String)>,
                       with: &[(String, PathBuf)]| {
            compile::build_bundle(
                toolchain, root, build, wit_dir, &name, &chunk, None, with, skipped, progress,
            )
        };
        let attempt = match bundled(&mut progress, &mut skipped, &chunk_tests) {
            // A test file whose module fails as the snapshot loads it
            // must not cost the scripts their tests: once more without.
            // (A snapshot out of memory is split below instead.)
            Err(CompileError::Build { messages, .. })
                if !chunk_tests.is_empty()
                    && (chunk.len() == 1
                        || !messages.iter().any(|m| m.message.contains("out of memory"))) =>
            {
                let why: Vec<String> = messages.iter().map(|m| m.to_string()).collect();
                for (key, _) in &chunk_tests {
                    skipped.push((key.clone(), why.join("; ")));
                }
                bundled(&mut progress, &mut Vec::new(), &[])
            }
            other => other,
        };
        for (key, _) in &chunk_tests {
            hand_tests.insert(key.clone(), Ok(()));
        }
        for (key, why) in skipped {
            hand_tests.insert(key, Err(why));
        }
        let component = match attempt {
            Ok(c) => c,
            Err(CompileError::Build { messages, .. })
                if chunk.len() > 1
                    && messages.iter().any(|m| m.message.contains("out of memory")) =>
            {
                let _ = writeln!(
                    progress,
                    "{name}: {} scripts do not fit one engine snapshot; splitting them in two",
                    chunk.len()
                );
                let (a, b) = chunk.split_at(chunk.len() / 2);
                queue.push_front(b.to_vec());
                queue.push_front(a.to_vec());
                continue;
            }
            Err(e) => return Err(e),
        };
        built += 1;
        let names: Vec<(String, ScriptKind)> =
            chunk.iter().map(|(n, f)| (n.clone(), kinds[f])).collect();
        let loaded = precompile(
            runtime,
            &component,
            &name,
            &mut progress,
            |r, bytes, origin| r.load_bundle_bytes(bytes, origin, &names),
        )?;
        for (((name, kind), script), (_, file)) in names.into_iter().zip(loaded).zip(chunk.iter()) {
            scripts.push(ProjectScript {
                integration: id.to_string(),
                name,
                kind,
                source: Source::TypeScript(file.clone()),
                component: component.clone(),
                script: Arc::new(script),
            });
        }
    }
    Ok(Compiled {
        definition,
        config,
        scripts,
        hand_tests,
        progress,
    })
}

/// The toolchain's `definitions` step for one integration.
/// What [`read_definitions`] returned for an integration, kept in its build
/// folder with the digest of every file it read: an unchanged integration
/// skips Node.js altogether (the step loads every script, the slowest part
/// of an unchanged `sluice test`).
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedDefinitions {
    key: String,
    inputs: BTreeMap<String, String>,
    definition: Value,
    kinds: BTreeMap<String, String>,
    warnings: Vec<String>,
}

fn file_digest(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| file_digest_of(&b))
}

fn cached_definitions(
    toolchain: &Toolchain,
    root: &Path,
    build: &Path,
    id: &str,
    list: &[Entry],
    progress: &mut dyn Write,
) -> Result<(Value, BTreeMap<String, String>), CompileError> {
    let cache = build.join(format!("{id}.definitions.json"));
    // The step's inputs besides the scripts' files: the SDK, the entries,
    // the project's zod.
    let key = {
        let entries: Vec<String> = list
            .iter()
            .map(|e| format!("{}={}", e.name, e.file.display()))
            .collect();
        let zod = std::fs::read(root.join("node_modules/zod/package.json")).unwrap_or_default();
        let mut text = format!(
            "{}\n{}\n{}\n{}\n",
            toolchain.fingerprint(),
            toolchain.steps_digest(),
            toolchain.dir().display(),
            entries.join("\n")
        );
        text.push_str(&String::from_utf8_lossy(&zod));
        file_digest_of(text.as_bytes())
    };
    if let Some(hit) = std::fs::read(&cache)
        .ok()
        .and_then(|b| serde_json::from_slice::<CachedDefinitions>(&b).ok())
        .filter(|c| c.key == key)
        .filter(|c| {
            c.inputs
                .iter()
                .all(|(f, d)| file_digest(Path::new(f)).as_deref() == Some(d.as_str()))
        })
    {
        for w in &hit.warnings {
            let _ = writeln!(progress, "warning: {w}");
        }
        return Ok((hit.definition, hit.kinds));
    }
    let result = read_definitions(toolchain, root, id, list, progress)?;
    let inputs: Option<BTreeMap<String, String>> = result
        .inputs
        .iter()
        .map(|f| file_digest(Path::new(f)).map(|d| (f.clone(), d)))
        .collect();
    if let Some(inputs) = inputs.filter(|i| !i.is_empty()) {
        let entry = CachedDefinitions {
            key,
            inputs,
            definition: result.definition.clone(),
            kinds: result.kinds.clone(),
            warnings: result.warnings.iter().map(ToString::to_string).collect(),
        };
        // Best effort: a lost cache entry only costs the next run the step.
        if let Ok(bytes) = serde_json::to_vec(&entry) {
            let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::create_dir_all(build).is_ok() && std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(&tmp, &cache);
            }
        }
    }
    Ok((result.definition, result.kinds))
}

fn file_digest_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The definitions step's answer for one integration.
struct Definitions {
    definition: Value,
    kinds: BTreeMap<String, String>,
    inputs: Vec<String>,
    warnings: Vec<crate::toolchain::StepMessage>,
}

fn read_definitions(
    toolchain: &Toolchain,
    root: &Path,
    id: &str,
    list: &[Entry],
    progress: &mut dyn Write,
) -> Result<Definitions, CompileError> {
    crate::compile::utf8_paths(std::iter::once(root).chain(list.iter().map(|e| e.file.as_path())))?;
    let job = json!({
        "root": root,
        "integration": id,
        "entries": list.iter().map(|e| json!({ "name": e.name, "file": e.file })).collect::<Vec<_>>(),
    });
    let result = toolchain.run("definitions", &job)?;
    for w in &result.warnings {
        let _ = writeln!(progress, "warning: {w}");
    }
    if !result.ok {
        return Err(CompileError::Build {
            integration: id.to_string(),
            messages: result.errors,
        });
    }
    let definition = result
        .definition
        .ok_or_else(|| build_error(id, "the definitions step returned no definition".into()))?;
    Ok(Definitions {
        definition,
        kinds: result.kinds,
        inputs: result.inputs,
        warnings: result.warnings,
    })
}

/// `yaml::ScriptKind` of a definition kind, for callers that need it.
pub fn script_kind(kind: &str) -> Option<yaml::ScriptKind> {
    match kind {
        "sync" => Some(yaml::ScriptKind::Sync),
        "action" => Some(yaml::ScriptKind::Action),
        "onEvent" => Some(yaml::ScriptKind::OnEvent),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_the_originals_rules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("index.ts"),
            "// comment\nimport './github/syncs/issues.js';\nimport \"./github/actions/create-issue\"\n  import './skipped/actions/x.js';\nimport type { X } from './types.js';\n",
        )
        .unwrap();
        let found = entries(dir.path()).unwrap();
        let names: Vec<(&str, &str)> = found
            .iter()
            .map(|e| (e.integration.as_str(), e.name.as_str()))
            .collect();
        assert_eq!(names, [("github", "issues"), ("github", "create-issue")]);
        assert!(found[1].file.ends_with("github/actions/create-issue.ts"));

        std::fs::write(dir.path().join("index.ts"), "// nothing\n").unwrap();
        let err = entries(dir.path()).unwrap_err().to_string();
        assert!(err.contains("No entry points found in index.ts"), "{err}");

        // No integration named `..` (built and recorded outside the folder).
        for entry in [
            "./github/syncs/../syncs/issues.js",
            "./x/../github/syncs/issues.js",
            ".//github/syncs/issues.js",
        ] {
            std::fs::write(dir.path().join("index.ts"), format!("import '{entry}';\n")).unwrap();
            let err = entries(dir.path()).unwrap_err().to_string();
            assert!(err.contains("no `.`, `..` or empty part"), "{entry}: {err}");
        }

        // The file's name is the script's: nango.yaml's rule (a `#` broke
        // the deploy, 256 characters were refused only by the server).
        std::fs::write(
            dir.path().join("index.ts"),
            "import './github/actions/get#repo.js';\n",
        )
        .unwrap();
        let err = entries(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(
                "index.ts imports `./github/actions/get#repo.js`: its file's name is the script's name, and the script name \"get#repo\" must match ^[a-zA-Z0-9_-]+$"
            ),
            "{err}"
        );
        let long = "a".repeat(256);
        std::fs::write(
            dir.path().join("index.ts"),
            format!("import './github/actions/{long}.js';\n"),
        )
        .unwrap();
        let err = entries(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is longer than 255 characters"), "{err}");
        let fits = "a".repeat(255);
        std::fs::write(
            dir.path().join("index.ts"),
            format!("import './github/actions/{fits}.js';\n"),
        )
        .unwrap();
        assert_eq!(entries(dir.path()).unwrap()[0].name, fits);

        // index.ts is read only as a regular file, bounded.
        #[cfg(unix)]
        {
            std::fs::remove_file(dir.path().join("index.ts")).unwrap();
            std::os::unix::fs::symlink("/dev/zero", dir.path().join("index.ts")).unwrap();
            let err = entries(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains("Could not read index.ts: not a regular file (it is a device)"),
                "{err}"
            );
        }
    }

    #[test]
    fn frequencies_of_the_zero_yaml_grammar() {
        assert_eq!(frequency("every day"), Some(Duration::from_secs(86_400)));
        assert_eq!(
            frequency("every 30 minutes"),
            Some(Duration::from_secs(1_800))
        );
        assert_eq!(frequency("every 2h"), Some(Duration::from_secs(7_200)));
        assert_eq!(frequency("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(frequency("every 10 seconds"), None, "shorter than 30 s");
        assert_eq!(frequency("sometimes"), None);
        assert!(
            frequency("every 99999999999999999999999 years").is_some(),
            "longer than a century: kept, and the scheduler caps it"
        );
        assert_eq!(frequency("every NaN days"), None);
        // A deployed definition keeps it (it ran daily: the fallback of a
        // frequency that did not parse).
        let def = serde_json::json!({"providerConfigKey": "a", "syncs": [{"name": "s", "runs": "every 200 years", "output": []}]});
        assert!(
            integration_config(&def).syncs[0].interval > Duration::from_secs(100 * 31_557_600),
            "{:?}",
            integration_config(&def).syncs[0].interval
        );
        assert_eq!(
            frequency_problem("every 5 sec"),
            "is too short: syncs may not run more often than every 30 seconds"
        );
    }

    #[test]
    fn deployed_definitions_are_checked() {
        let good = json!([{
            "providerConfigKey": "github",
            "syncs": [{"name": "issues", "runs": "every hour", "output": ["Issue"],
                       "endpoints": [{"method": "GET", "path": "/issues"}]}],
            "actions": [{"name": "issues", "endpoint": null, "output": ["Out"]}],
            "onEventScripts": {"post-connection-creation": ["setup"]}
        }]);
        let good = good.as_array().unwrap();
        assert_eq!(check_definitions(good), Ok(()));
        assert_eq!(
            config(good).integrations[0].syncs[0].interval,
            Duration::from_secs(3_600)
        );

        let refused = |defs: Value| check_definitions(defs.as_array().unwrap()).unwrap_err();
        assert_eq!(refused(json!([3])), "entry 0 is not an object");
        // Names go into stored keys: at most 255 characters.
        let long = "n".repeat(256);
        assert_eq!(
            refused(json!([{"providerConfigKey": "a", "actions": [{"name": long}]}])),
            "`a`: actions[0]'s name is longer than 255 characters"
        );
        assert!(
            refused(
                json!([{"providerConfigKey": "a", "actions": [{"name": "x", "output": [long]}]}])
            )
            .starts_with("`a/x`: `output` names a model longer than 255 characters")
        );
        assert_eq!(
            refused(json!([{"providerConfigKey": ""}])),
            "entry 0 has no `providerConfigKey` string"
        );
        assert_eq!(
            refused(json!([{"providerConfigKey": "a"}, {"providerConfigKey": "a"}])),
            "integration `a` is defined twice"
        );
        assert_eq!(
            refused(json!([{"providerConfigKey": "a", "syncs": {}}])),
            "`a`: `syncs` is not a list"
        );
        assert_eq!(
            refused(json!([{"providerConfigKey": "a", "actions": [{"name": 1}]}])),
            "`a`: actions[0] has no `name` string"
        );
        assert!(
            refused(json!([{"providerConfigKey": "a", "syncs": [{"name": "s", "runs": "every 5 seconds"}]}]))
                .starts_with("`a/s`: `runs` \"every 5 seconds\" is too short")
        );
        assert_eq!(
            check_definitions(
                json!([{"providerConfigKey": "a", "syncs": [{"name": "s", "runs": "every 9999999 years"}]}])
                    .as_array()
                    .unwrap()
            ),
            Ok(()),
            "no upper bound, as the original's"
        );
        assert!(
            refused(
                json!([{"providerConfigKey": "a", "syncs": [{"name": "s", "runs": "sometimes"}]}])
            )
            .starts_with("`a/s`: `runs` \"sometimes\" is not a frequency")
        );
        assert!(
            refused(json!([{"providerConfigKey": "a", "syncs": [{"name": "s"}]}]))
                .contains("`runs`")
        );
        assert_eq!(
            refused(
                json!([{"providerConfigKey": "a", "syncs": [{"name": "s", "runs": "1d",
                "endpoints": [{"method": "GET"}]}]}])
            ),
            "`a/s`: `endpoints` has no `path` string"
        );
        assert_eq!(
            refused(
                json!([{"providerConfigKey": "a", "actions": [{"name": "x", "scopes": "read"}]}])
            ),
            "`a/x`: `scopes` is not a list of strings"
        );
        assert_eq!(
            refused(
                json!([{"providerConfigKey": "a", "onEventScripts": {"validate-connection": "v"}}])
            ),
            "`a`: `onEventScripts.validate-connection` is not a list of script names"
        );
    }
}
