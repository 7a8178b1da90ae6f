//! `sluice migrate-to-zero-yaml`: a nango.yaml project into the zero-yaml
//! format, as the original's CLI converts it. Each script's default-export
//! function becomes the `exec` of a `createSync`/`createAction`/
//! `createOnEvent` whose definition comes from nango.yaml (a sync's
//! `onWebhookPayloadReceived` becomes its `onWebhook`); `models.ts` holds
//! the models as zod schemas; `index.ts` imports every script; helper files
//! import the SDK's types from `nango`; `.nango/` is created and nango.yaml
//! deleted. The sources are rewritten by the SDK's `migrate` step (text
//! splices at oxc-parser's offsets: comments and formatting stay).
//!
//! Every rewrite is computed before anything is written: a script that
//! cannot be converted leaves the folder untouched.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sluice_nango_yaml::{
    ActionConfig, Integration, NangoYaml, OnEventConfig, SyncConfig, SyncType,
};

use crate::toolchain::{StepMessage, Toolchain, ToolchainError};

/// Why a folder could not be migrated.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0} has no nango.yaml: there is nothing to migrate")]
    NoYaml(String),
    #[error("{0} already has an index.ts: it looks migrated (remove index.ts to migrate again)")]
    AlreadyZero(String),
    #[error(transparent)]
    Yaml(#[from] sluice_nango_yaml::YamlError),
    #[error(
        "{path} is declared in nango.yaml but has no TypeScript source there (only TypeScript scripts can be migrated)"
    )]
    MissingScript { path: String },
    #[error(
        "nango.yaml declares what the zero-yaml format refuses; nothing was changed:\n{}",
        .0.iter().map(|m| format!("  {m}")).collect::<Vec<_>>().join("\n")
    )]
    Unsupported(Vec<String>),
    #[error(transparent)]
    Toolchain(#[from] ToolchainError),
    #[error("the scripts cannot be migrated; nothing was changed:\n{}", .0.iter().map(|m| format!("  {m}")).collect::<Vec<_>>().join("\n"))]
    Scripts(Vec<StepMessage>),
    #[error("cannot read {path}: {source}; nothing was changed")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} cannot be updated ({why}); nothing was changed: fix it (the migration adds zod 4 to its devDependencies) and migrate again"
    )]
    PackageJson { path: String, why: String },
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a migration changed.
#[derive(Debug, Clone, Default)]
pub struct Migrated {
    /// Scripts rewritten (syncs, actions, on-event scripts).
    pub scripts: usize,
    /// Helper files whose SDK type imports moved to `nango`.
    pub helpers: usize,
    /// Scripts left as they were because their path goes through a
    /// symbolic link (an alias of another integration's folder).
    pub skipped_links: Vec<String>,
    /// `tests/<script>.test.ts` files written for scripts with recorded
    /// `mocks/` and no test file, so their recordings are still tested.
    pub tests: usize,
}

const GENERATOR: &str = "sluice migrate-to-zero-yaml";

/// What nango.yaml accepts and a zero-yaml project's compile refuses, one
/// line each, naming the script: migrated, the folder would not compile.
fn unsupported(config: &NangoYaml) -> Vec<String> {
    let mut out = Vec::new();
    for i in &config.integrations {
        for s in &i.syncs {
            if s.track_deletes && s.sync_type == SyncType::Incremental {
                out.push(format!(
                    "integrations > {} > syncs > {}: track_deletes is not supported for incremental syncs (remove one of them first)",
                    i.provider_config_key, s.name
                ));
            }
        }
    }
    out
}

fn js_string(s: &str) -> String {
    // A JSON string is a JavaScript string literal.
    Value::String(s.to_string()).to_string()
}

fn version(v: &str) -> String {
    js_string(if v.is_empty() { "0.0.1" } else { v })
}

fn endpoint(e: &sluice_nango_yaml::Endpoint) -> String {
    let mut parts = vec![
        format!("method: {}", js_string(e.method.as_str())),
        format!("path: {}", js_string(&e.path)),
    ];
    if let Some(g) = &e.group {
        parts.push(format!("group: {}", js_string(g)));
    }
    format!("{{ {} }}", parts.join(", "))
}

fn strings(list: &[String]) -> String {
    format!(
        "[{}]",
        list.iter()
            .map(|s| js_string(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The definition of a sync, as `createSync` properties before `exec`.
fn sync_props(s: &SyncConfig) -> (Vec<String>, Vec<String>, bool) {
    let mut props = vec![
        format!("description: {}", js_string(&s.description)),
        format!("version: {}", version(&s.version)),
        format!("frequency: {}", js_string(&s.runs)),
        format!("autoStart: {}", s.auto_start),
        format!(
            "syncType: {}",
            js_string(match s.sync_type {
                SyncType::Full => "full",
                SyncType::Incremental => "incremental",
            })
        ),
        format!("trackDeletes: {}", s.track_deletes),
        format!(
            "endpoints: [{}]",
            s.endpoints
                .iter()
                .map(endpoint)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    if !s.webhook_subscriptions.is_empty() {
        props.push(format!(
            "webhookSubscriptions: {}",
            strings(&s.webhook_subscriptions)
        ));
    }
    if !s.scopes.is_empty() {
        props.push(format!("scopes: {}", strings(&s.scopes)));
    }
    let mut refs = s.output.clone();
    if !s.output.is_empty() {
        props.push(format!(
            "models: {{ {} }}",
            s.output
                .iter()
                .map(|m| format!("{m}: {m}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let uses_z = match &s.input {
        Some(m) => {
            props.push(format!("metadata: {m}"));
            refs.push(m.clone());
            false
        }
        None => {
            props.push("metadata: z.object({})".into());
            true
        }
    };
    (props, refs, uses_z)
}

fn action_props(a: &ActionConfig) -> (Vec<String>, Vec<String>, bool) {
    let mut props = vec![
        format!("description: {}", js_string(&a.description)),
        format!("version: {}", version(&a.version)),
    ];
    if let Some(e) = &a.endpoint {
        props.push(format!("endpoint: {}", endpoint(e)));
    }
    let mut refs = Vec::new();
    let mut uses_z = false;
    match &a.input {
        Some(m) => {
            props.push(format!("input: {m}"));
            refs.push(m.clone());
        }
        None => {
            props.push("input: z.void()".into());
            uses_z = true;
        }
    }
    match a.output.first() {
        Some(m) => {
            props.push(format!("output: {m}"));
            refs.push(m.clone());
        }
        None => {
            props.push("output: z.void()".into());
            uses_z = true;
        }
    }
    if !a.scopes.is_empty() {
        props.push(format!("scopes: {}", strings(&a.scopes)));
    }
    (props, refs, uses_z)
}

fn event_name(e: &OnEventConfig) -> String {
    serde_json::to_value(e.event)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Whether `path` or a folder between `root` and it is a symbolic link.
fn through_link(root: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return false;
    };
    let mut at = root.to_path_buf();
    for part in rel.components() {
        at.push(part);
        if at
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            return true;
        }
    }
    false
}

/// The `.ts` files of the folder other than its scripts, models.ts and
/// what tools own (node_modules, .nango, build outputs).
fn helper_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            continue;
        }
        if kind.is_dir() {
            if !matches!(
                name.as_str(),
                "node_modules" | ".nango" | ".sluice" | "dist" | "build" | ".git" | "target"
            ) {
                helper_files(root, &path, out);
            }
        } else if name.ends_with(".ts") && !name.ends_with(".d.ts") {
            if dir == root && (name == "models.ts" || name == "index.ts") {
                continue;
            }
            out.push(path);
        }
    }
}

struct ScriptJob {
    file: PathBuf,
    value: Value,
}

fn script_jobs(
    dir: &Path,
    config: &NangoYaml,
    integration: &Integration,
    migrated: &mut Migrated,
) -> Result<Vec<ScriptJob>, MigrateError> {
    let models: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
    let key = &integration.provider_config_key;
    let mut jobs = Vec::new();
    let mut push = |folder: &str,
                    name: &str,
                    kind: &str,
                    props: Vec<String>,
                    refs: Vec<String>,
                    uses_z: bool,
                    local: Option<&str>,
                    returns: Option<&String>|
     -> Result<(), MigrateError> {
        let rel = format!("{key}/{folder}/{name}.ts");
        let file = dir.join(&rel);
        if through_link(dir, &file) {
            migrated.skipped_links.push(rel);
            return Ok(());
        }
        if !file.is_file() {
            return Err(MigrateError::MissingScript { path: rel });
        }
        jobs.push(ScriptJob {
            value: json!({
                "file": file.display().to_string(),
                "rel": rel,
                "kind": kind,
                "props": props,
                "refs": refs,
                "usesZ": uses_z,
                "localType": local,
                "returnType": returns,
                "models": models,
            }),
            file,
        });
        Ok(())
    };
    for s in &integration.syncs {
        let (props, refs, z) = sync_props(s);
        push(
            "syncs",
            &s.name,
            "sync",
            props,
            refs,
            z,
            Some("NangoSyncLocal"),
            None,
        )?;
    }
    for a in &integration.actions {
        let (props, refs, z) = action_props(a);
        push(
            "actions",
            &a.name,
            "action",
            props,
            refs,
            z,
            Some("NangoActionLocal"),
            a.output.first(),
        )?;
    }
    for e in &integration.on_events {
        let event = event_name(e);
        let props = vec![
            format!("event: {}", js_string(&event)),
            format!(
                "description: {}",
                js_string(&format!("{event} event handler"))
            ),
        ];
        push(
            "on-events",
            &e.name,
            "on-event",
            props,
            Vec::new(),
            false,
            None,
            None,
        )?;
    }
    Ok(jobs)
}

/// `index.ts`: every script of every integration, as the original writes it.
fn index_ts(config: &NangoYaml) -> String {
    let mut out = String::new();
    for i in &config.integrations {
        let key = &i.provider_config_key;
        out.push_str(&format!("// -- Integration: {key}\n"));
        for s in &i.syncs {
            out.push_str(&format!("import './{key}/syncs/{}.js';\n", s.name));
        }
        for a in &i.actions {
            out.push_str(&format!("import './{key}/actions/{}.js';\n", a.name));
        }
        for e in &i.on_events {
            out.push_str(&format!("import './{key}/on-events/{}.js';\n", e.name));
        }
        out.push('\n');
    }
    out
}

/// package.json with zod 4 among the dev dependencies (created when
/// missing; other fields kept). An existing one that is not a JSON object
/// is refused, with why: replacing it would lose what it held.
fn package_json(existing: Option<&str>) -> Result<String, String> {
    let mut pkg: Value = match existing {
        None => json!({ "name": "nango-integrations", "private": true, "type": "module" }),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v) if v.is_object() => v,
            Ok(_) => return Err("it is JSON, but not an object".into()),
            Err(e) => return Err(format!("it is not JSON: {e}")),
        },
    };
    if let Some(deps) = pkg.get_mut("dependencies").and_then(Value::as_object_mut) {
        deps.remove("zod");
    }
    let dev = pkg
        .as_object_mut()
        .map(|o| o.entry("devDependencies").or_insert_with(|| json!({})));
    if let Some(Value::Object(dev)) = dev {
        dev.insert("zod".into(), json!("^4.0.0"));
    }
    let mut text = serde_json::to_string_pretty(&pkg).unwrap_or_default();
    text.push('\n');
    Ok(text)
}

/// The project's new package.json, or why its present one cannot become
/// it (read, not parsed, or not an object), naming the file.
fn new_package_json(dir: &Path) -> Result<String, MigrateError> {
    let path = dir.join("package.json");
    let existing = match sluice_nango_yaml::read_text_file(&path, sluice_nango_yaml::MAX_FILE_BYTES)
    {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(MigrateError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    package_json(existing.as_deref()).map_err(|why| MigrateError::PackageJson {
        path: path.display().to_string(),
        why,
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), MigrateError> {
    let err = |source| MigrateError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let tmp = path.with_extension("sluice-migrate.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(err)
}

/// A test file of the generated shapes for each script whose recordings
/// are in the legacy `<integration>/mocks/<script>/` and that has no
/// `tests/<script>.test.ts`: a zero-yaml project's tests are its test
/// files, and without one the recordings would no longer be tested (they
/// are read through the harness's `mocks/` fallback).
fn legacy_tests(dir: &Path, config: &NangoYaml) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for integration in &config.integrations {
        let key = &integration.provider_config_key;
        let folder = dir.join(key);
        if through_link(dir, &folder) {
            continue;
        }
        let wanted = |name: &str| {
            let test = folder.join("tests").join(format!("{name}.test.ts"));
            (folder.join("mocks").join(name).is_dir() && !test.exists()).then_some(test)
        };
        for sync in &integration.syncs {
            if let Some(test) = wanted(&sync.name) {
                out.push((test, sync_test(key, &sync.name, &sync.output.join(","))));
            }
        }
        for action in &integration.actions {
            if let Some(test) = wanted(&action.name) {
                let model = action.output.first().map(String::as_str).unwrap_or("");
                out.push((test, action_test(key, &action.name, model)));
            }
        }
    }
    out
}

/// A single-quoted JavaScript string, as the generated tests write them.
fn js_single(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('\'', "\\'");
    format!("'{escaped}'")
}

pub(crate) fn sync_test(key: &str, name: &str, models: &str) -> String {
    let (name_s, models_s) = (js_single(name), js_single(models));
    let import = js_single(&format!("../syncs/{name}.js"));
    format!(
        r#"import {{ afterEach, vi, expect, it, describe }} from 'vitest';

import createSync from {import};

describe({title}, () => {{
    const models = {models_s}.split(',');

    const createTestContext = () => {{
        const nangoMock = new global.vitest.NangoSyncMock({{
            dirname: __dirname,
            name: {name_s},
            Model: {models_s}
        }});

        return {{
            nangoMock,
            batchSaveSpy: vi.spyOn(nangoMock, 'batchSave')
        }};
    }};

    afterEach(() => {{
        vi.clearAllMocks();
        vi.restoreAllMocks();
    }});

    it('should get, map correctly the data and batchSave the result', async () => {{
        const {{ nangoMock, batchSaveSpy }} = createTestContext();

        await createSync.exec(nangoMock);

        for (const model of models) {{
            const expectedBatchSaveData = await nangoMock.getBatchSaveData(model);

            const spiedData = batchSaveSpy.mock.calls.flatMap((call) => {{
                if (call[1] === model) {{
                    return call[0];
                }}

                return [];
            }});

            const spied = JSON.parse(JSON.stringify(spiedData));

            expect(spied).toStrictEqual(expectedBatchSaveData);
        }}
    }});

    it('should get, map correctly the data and batchDelete the result', async () => {{
        const {{ nangoMock }} = createTestContext();
        const batchDeleteSpy = vi.spyOn(nangoMock, 'batchDelete');

        await createSync.exec(nangoMock);

        for (const model of models) {{
            const batchDeleteData = await nangoMock.getBatchDeleteData(model);
            if (batchDeleteData && batchDeleteData.length > 0) {{
                const spiedData = batchDeleteSpy.mock.calls.flatMap((call) => {{
                    if (call[1] === model) {{
                        return call[0];
                    }}

                    return [];
                }});

                const spied = JSON.parse(JSON.stringify(spiedData));

                expect(spied).toStrictEqual(batchDeleteData);
            }}
        }}
    }});
}});
"#,
        title = js_single(&format!("{key} {name} tests")),
        models_s = models_s,
        name_s = name_s,
    )
}

pub(crate) fn action_test(key: &str, name: &str, model: &str) -> String {
    let import = js_single(&format!("../actions/{name}.js"));
    format!(
        r#"import {{ expect, it, describe }} from 'vitest';

import createAction from {import};

describe({title}, () => {{
    const nangoMock = new global.vitest.NangoActionMock({{
        dirname: __dirname,
        name: {name_s},
        Model: {model_s}
    }});

    it('should output the action output that is expected', async () => {{
        const input = await nangoMock.getInput();
        const response = await createAction.exec(nangoMock, input);
        const output = await nangoMock.getOutput();

        expect(response).toEqual(output);
    }});
}});
"#,
        title = js_single(&format!("{key} {name} tests")),
        name_s = js_single(name),
        model_s = js_single(model),
    )
}

/// Migrates the nango.yaml project in `dir` with the SDK `toolchain`.
pub fn migrate(
    dir: &Path,
    toolchain: &Toolchain,
    progress: &mut dyn Write,
) -> Result<Migrated, MigrateError> {
    if !dir.join("nango.yaml").is_file() {
        return Err(MigrateError::NoYaml(dir.display().to_string()));
    }
    if dir.join("index.ts").exists() {
        return Err(MigrateError::AlreadyZero(dir.display().to_string()));
    }
    let loaded = sluice_nango_yaml::load(dir)?;
    let config = &loaded.config;
    let refused = unsupported(config);
    if !refused.is_empty() {
        return Err(MigrateError::Unsupported(refused));
    }
    // Before the scripts are rewritten: a package.json it cannot read
    // leaves the folder untouched.
    let package = new_package_json(dir)?;
    let mut migrated = Migrated::default();

    let mut scripts = Vec::new();
    for integration in &config.integrations {
        scripts.extend(script_jobs(dir, config, integration, &mut migrated)?);
    }
    let mut helpers = Vec::new();
    helper_files(dir, dir, &mut helpers);
    helpers.retain(|h| !scripts.iter().any(|s| &s.file == h));
    let helper_jobs: Vec<Value> = helpers
        .iter()
        .map(|h| {
            json!({
                "file": h.display().to_string(),
                "rel": h.strip_prefix(dir).unwrap_or(h).display().to_string(),
            })
        })
        .collect();
    let _ = writeln!(
        progress,
        "Migrating {} scripts (and looking for SDK type imports in {} helper files)…",
        scripts.len(),
        helpers.len()
    );
    let job = json!({
        "scripts": scripts.iter().map(|s| s.value.clone()).collect::<Vec<_>>(),
        "helpers": helper_jobs,
    });
    let result = toolchain.run("migrate", &job)?;
    if !result.ok {
        return Err(MigrateError::Scripts(result.errors));
    }

    // Everything is known: write it.
    let files: BTreeMap<String, String> = result.files;
    migrated.scripts = scripts.len();
    migrated.helpers = files.len().saturating_sub(scripts.len());
    for (file, text) in &files {
        write_file(Path::new(file), text)?;
    }
    write_file(
        &dir.join("models.ts"),
        &sluice_nango_yaml::generate::zod_models_ts(config, GENERATOR),
    )?;
    write_file(&dir.join("index.ts"), &index_ts(config))?;
    for (path, text) in legacy_tests(dir, config) {
        write_file(&path, &text)?;
        migrated.tests += 1;
    }
    write_file(&dir.join("package.json"), &package)?;
    let nango = dir.join(".nango");
    std::fs::create_dir_all(&nango).map_err(|source| MigrateError::Io {
        path: nango.display().to_string(),
        source,
    })?;
    let yaml = dir.join("nango.yaml");
    std::fs::remove_file(&yaml).map_err(|source| MigrateError::Io {
        path: yaml.display().to_string(),
        source,
    })?;
    Ok(migrated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_json_gains_zod_4_and_keeps_the_rest() {
        let created: Value = serde_json::from_str(&package_json(None).unwrap()).unwrap();
        assert_eq!(created["devDependencies"]["zod"], "^4.0.0");
        let updated: Value = serde_json::from_str(
            &package_json(Some(
                r#"{"name":"mine","dependencies":{"zod":"3.22.0","lodash":"4"},"scripts":{"x":"y"}}"#,
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(updated["name"], "mine");
        assert_eq!(updated["scripts"]["x"], "y");
        assert_eq!(updated["dependencies"], json!({"lodash": "4"}));
        assert_eq!(updated["devDependencies"]["zod"], "^4.0.0");
    }

    #[test]
    fn an_incremental_sync_that_tracks_deletes_is_refused_before_anything_changes() {
        let yaml = |extra: &str| {
            format!(
                "integrations:\n  gh:\n    syncs:\n      issues:\n        runs: every day\n        output: Issue\n        endpoint: GET /issues\n        track_deletes: true\n{extra}models:\n  Issue:\n    id: string\n"
            )
        };
        let config = |text: &str| {
            sluice_nango_yaml::parse_in(text, "nango.yaml", None)
                .unwrap()
                .config
        };
        assert!(unsupported(&config(&yaml(""))).is_empty());
        let refused = unsupported(&config(&yaml("        sync_type: incremental\n")));
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].contains("gh > syncs > issues") && refused[0].contains("incremental"));
    }

    #[test]
    fn the_yaml_definition_becomes_create_sync_properties() {
        let loaded = sluice_nango_yaml::parse(
            "integrations:\n  gh:\n    syncs:\n      issues:\n        runs: every day\n        output: Issue\n        endpoint: GET /issues\n        track_deletes: true\n        scopes: [repo]\n        description: It's \"issues\"\nmodels:\n  Issue:\n    id: string\n",
            "nango.yaml",
        )
        .unwrap();
        let sync = &loaded.config.integrations[0].syncs[0];
        let (props, refs, uses_z) = sync_props(sync);
        let text = props.join("\n");
        assert!(text.contains(r#"description: "It's \"issues\"""#), "{text}");
        assert!(text.contains(r#"frequency: "every day""#), "{text}");
        assert!(text.contains("trackDeletes: true"), "{text}");
        assert!(
            text.contains(r#"endpoints: [{ method: "GET", path: "/issues" }]"#),
            "{text}"
        );
        assert!(text.contains(r#"scopes: ["repo"]"#), "{text}");
        assert!(text.contains("models: { Issue: Issue }"), "{text}");
        assert!(text.contains("metadata: z.object({})"), "{text}");
        assert_eq!(refs, vec!["Issue".to_string()]);
        assert!(uses_z);
    }
}
