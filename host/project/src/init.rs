//! `sluice init` (a starter nango-integrations folder) and `sluice
//! generate` (models.ts, the JSON schemas, and a file for every declared
//! script that has none; existing files are never touched).

use std::path::{Path, PathBuf};

use sluice_nango_yaml::{self as yaml, NangoYaml, ScriptKind};

use crate::compile::{self, CompileError};

/// Why init or generate stopped.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} already has a nango.yaml or an index.ts: sluice init only creates new folders")]
    Exists(String),
    #[error("{dir} already has {files}: sluice init does not overwrite files; use a new folder")]
    WouldOverwrite { dir: String, files: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is a file where sluice init needs a folder: nothing was written")]
    NotAFolder { path: String },
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(
        "{0} is not a zero-yaml project (no index.ts and .nango/, or a nango.yaml): sluice create adds zero-yaml scripts; in a nango.yaml project declare the script in nango.yaml and run sluice generate"
    )]
    NotZeroYaml(String),
    #[error(
        "{what} `{name}` may hold only letters, digits, `_` and `-`, and a letter or digit at least"
    )]
    BadName { what: &'static str, name: String },
    #[error("File already exists: {0}")]
    ScriptExists(String),
}

/// Writes `path`, a file of the project `dir`, whole
/// ([`compile::replace_file`]): refused when it, or a folder between
/// `dir` and it, is a link or not what it should be ([`plain`]).
fn write(dir: &Path, path: &Path, text: &str) -> Result<(), InitError> {
    plain(dir, path)?;
    compile::replace_file(path, text.as_bytes()).map_err(|source| InitError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Refuses `path` under `dir` when it is not a regular file (or nothing)
/// in real folders ([`compile::not_plain`]): a cloned project's
/// `index.ts -> ../elsewhere` or `github -> /` is not written through.
fn plain(dir: &Path, path: &Path) -> Result<(), InitError> {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    match compile::not_plain(dir, rel) {
        Some((path, what)) => Err(CompileError::NotAFile {
            path: path.display().to_string(),
            what,
        }
        .into()),
        None => Ok(()),
    }
}

/// The starter folder is the bundled example, file for file.
const TEMPLATE: &[(&str, &str)] = &[
    (
        "nango.yaml",
        include_str!("../../../examples/github-ts/nango.yaml"),
    ),
    (
        "demo-github-integration/syncs/github-issue-example.ts",
        include_str!(
            "../../../examples/github-ts/demo-github-integration/syncs/github-issue-example.ts"
        ),
    ),
    (
        "demo-github-integration/helpers/issues.ts",
        include_str!("../../../examples/github-ts/demo-github-integration/helpers/issues.ts"),
    ),
    (
        "demo-github-integration/actions/create-issue.ts",
        include_str!("../../../examples/github-ts/demo-github-integration/actions/create-issue.ts"),
    ),
    (
        "connections.yaml",
        include_str!("../../../examples/github-ts/connections.yaml"),
    ),
    (
        "mock-api.yaml",
        include_str!("../../../examples/github-ts/mock-api.yaml"),
    ),
    (
        ".gitignore",
        include_str!("../../../examples/github-ts/.gitignore"),
    ),
];

/// The `.env` a starter gets (its `.gitignore` keeps it out of git).
const ENV_FILE: &str = "# Read by `sluice deploy` and `sluice dryrun --from-server`, from here or
# from the environment.

# An environment's secret key (`sluice serve` prints them at its first start,
# or takes them from these variables then).
#NANGO_SECRET_KEY_DEV=xxxx-xxx-xxxx
#NANGO_SECRET_KEY_PROD=xxxx-xxx-xxxx

# The server (default: http://127.0.0.1:3003, a local `sluice serve`).
#NANGO_HOSTPORT=http://127.0.0.1:3003
";

/// The zero-yaml starter (the default, as in the original's current CLI):
/// `examples/github-zero`, file for file.
const ZERO_TEMPLATE: &[(&str, &str)] = &[
    (
        ".gitignore",
        include_str!("../../../examples/github-zero/.gitignore"),
    ),
    (
        ".nango/.gitkeep",
        include_str!("../../../examples/github-zero/.nango/.gitkeep"),
    ),
    (
        "package.json",
        include_str!("../../../examples/github-zero/package.json"),
    ),
    (
        "tsconfig.json",
        include_str!("../../../examples/github-zero/tsconfig.json"),
    ),
    (
        "connections.yaml",
        include_str!("../../../examples/github-zero/connections.yaml"),
    ),
    (
        "github/actions/get-repo.ts",
        include_str!("../../../examples/github-zero/github/actions/get-repo.ts"),
    ),
    (
        "github/helpers/mappers.ts",
        include_str!("../../../examples/github-zero/github/helpers/mappers.ts"),
    ),
    (
        "github/syncs/issues.ts",
        include_str!("../../../examples/github-zero/github/syncs/issues.ts"),
    ),
    (
        "github/tests/get-repo.test.json",
        include_str!("../../../examples/github-zero/github/tests/get-repo.test.json"),
    ),
    (
        "github/tests/github-get-repo.test.ts",
        include_str!("../../../examples/github-zero/github/tests/github-get-repo.test.ts"),
    ),
    (
        "github/tests/github-issues.test.ts",
        include_str!("../../../examples/github-zero/github/tests/github-issues.test.ts"),
    ),
    (
        "github/tests/issues.test.json",
        include_str!("../../../examples/github-zero/github/tests/issues.test.json"),
    ),
    (
        "index.ts",
        include_str!("../../../examples/github-zero/index.ts"),
    ),
    (
        "mock-api.yaml",
        include_str!("../../../examples/github-zero/mock-api.yaml"),
    ),
];

/// The Rust starter: `examples/github-ts`'s nango.yaml project with its
/// scripts as crates (`examples/github-rust`), which name the SDK copy
/// written beside them (`sluice-sdk/`) instead of the checkout's.
const RUST_TEMPLATE: &[(&str, &str)] = &[
    (
        "nango.yaml",
        include_str!("../../../examples/github-ts/nango.yaml"),
    ),
    (
        "connections.yaml",
        include_str!("../../../examples/github-ts/connections.yaml"),
    ),
    (
        "mock-api.yaml",
        include_str!("../../../examples/github-ts/mock-api.yaml"),
    ),
    (
        ".gitignore",
        include_str!("../../../examples/github-rust/.gitignore"),
    ),
    (
        "demo-github-integration/helpers/Cargo.toml",
        include_str!("../../../examples/github-rust/demo-github-integration/helpers/Cargo.toml"),
    ),
    (
        "demo-github-integration/helpers/src/lib.rs",
        include_str!("../../../examples/github-rust/demo-github-integration/helpers/src/lib.rs"),
    ),
    (
        "demo-github-integration/syncs/github-issue-example/Cargo.toml",
        include_str!(
            "../../../examples/github-rust/demo-github-integration/syncs/github-issue-example/Cargo.toml"
        ),
    ),
    (
        "demo-github-integration/syncs/github-issue-example/src/main.rs",
        include_str!(
            "../../../examples/github-rust/demo-github-integration/syncs/github-issue-example/src/main.rs"
        ),
    ),
    (
        "demo-github-integration/actions/create-issue/Cargo.toml",
        include_str!(
            "../../../examples/github-rust/demo-github-integration/actions/create-issue/Cargo.toml"
        ),
    ),
    (
        "demo-github-integration/actions/create-issue/src/main.rs",
        include_str!(
            "../../../examples/github-rust/demo-github-integration/actions/create-issue/src/main.rs"
        ),
    ),
    // The SDK, with the contract inside it.
    (
        "sluice-sdk/Cargo.toml",
        include_str!("../../../guest-sdk/rust/Cargo.toml"),
    ),
    (
        "sluice-sdk/src/lib.rs",
        include_str!("../../../guest-sdk/rust/src/lib.rs"),
    ),
    (
        "sluice-sdk/macros/Cargo.toml",
        include_str!("../../../guest-sdk/rust/macros/Cargo.toml"),
    ),
    (
        "sluice-sdk/macros/src/lib.rs",
        include_str!("../../../guest-sdk/rust/macros/src/lib.rs"),
    ),
    (
        "sluice-sdk/wit/nango.wit",
        include_str!("../../../wit/nango.wit"),
    ),
];

/// The versions the SDK is built and tested with: each script crate of the
/// Rust starter starts from them (cargo adds the crate's own entries).
const RUST_LOCK: &str = include_str!("../../../guest-sdk/rust/Cargo.lock");

/// A Rust starter file as written: the crates name the SDK copy, and the
/// copy finds the contract inside itself.
fn rust_file(rel: &str, text: &str) -> String {
    let swaps: &[(&str, &str)] = match rel {
        "sluice-sdk/src/lib.rs" => &[(r#"path: "../../wit","#, r#"path: "wit","#)],
        "sluice-sdk/macros/src/lib.rs" => &[(
            r#"include_str!("../../../../wit/nango.wit")"#,
            r#"include_str!("../../wit/nango.wit")"#,
        )],
        _ if rel.ends_with("Cargo.toml") => &[(
            r#"path = "../../../../../guest-sdk/rust""#,
            r#"path = "../../../sluice-sdk""#,
        )],
        _ => &[],
    };
    let mut out = text.to_string();
    for (from, to) in swaps {
        out = out.replace(from, to);
    }
    out
}

/// Which starter `sluice init` creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Starter {
    /// The current format: `index.ts`, zod models, recorded tests.
    Zero,
    /// nango.yaml with TypeScript scripts.
    Yaml,
    /// nango.yaml with Rust scripts (a crate each) and a copy of the SDK.
    Rust,
}

/// Creates a starter folder: a zero-yaml project (`index.ts`, a sync and
/// an action with their recorded tests), or the older layout (nango.yaml
/// with a sync and an action, in TypeScript or in Rust); each with a local
/// connection and a mock of the API they call, and each passes `sluice
/// test`.
pub fn init(dir: &Path, starter: Starter) -> Result<Vec<PathBuf>, InitError> {
    if dir.join("nango.yaml").exists() || dir.join("index.ts").exists() {
        return Err(InitError::Exists(dir.display().to_string()));
    }
    let yaml = starter != Starter::Zero;
    // Nothing of the user's is replaced: a file the template has (a
    // `.gitignore`, a `connections.yaml` with credentials, a script) or a
    // `.nango` folder means the folder is not new.
    let template = match starter {
        Starter::Zero => ZERO_TEMPLATE,
        Starter::Yaml => TEMPLATE,
        Starter::Rust => RUST_TEMPLATE,
    };
    let mut taken: Vec<&str> = template
        .iter()
        .map(|(rel, _)| *rel)
        .chain(yaml.then_some("models.ts"))
        .filter(|rel| dir.join(rel).exists())
        .collect();
    if dir.join(".nango").exists() && !taken.iter().any(|t| t.starts_with(".nango/")) {
        taken.push(".nango/");
    }
    if !taken.is_empty() {
        return Err(InitError::WouldOverwrite {
            dir: dir.display().to_string(),
            files: taken.join(", "),
        });
    }
    // A file where a folder goes would stop the writing halfway: checked
    // first, so nothing is written.
    for (rel, _) in template {
        let mut folder = dir.join(rel);
        while folder.pop() && folder.starts_with(dir) {
            if folder.exists() && !folder.is_dir() {
                return Err(InitError::NotAFolder {
                    path: folder.display().to_string(),
                });
            }
        }
    }
    // As the original's init: a `.env` saying what the CLI reads, all of
    // it commented out (the defaults stand), kept if there is one.
    let mut written = Vec::new();
    let env = dir.join(".env");
    if !env.exists() {
        write(dir, &env, ENV_FILE)?;
        written.push(env);
    }
    if !yaml {
        for (rel, text) in ZERO_TEMPLATE {
            let path = dir.join(rel);
            write(dir, &path, text)?;
            written.push(path);
        }
        return Ok(written);
    }
    for (rel, text) in template {
        let path = dir.join(rel);
        if starter == Starter::Rust {
            write(dir, &path, &rust_file(rel, text))?;
            if rel.ends_with("/Cargo.toml") && !rel.starts_with("sluice-sdk/") {
                let lock = path.with_file_name("Cargo.lock");
                write(dir, &lock, RUST_LOCK)?;
                written.push(lock);
            }
        } else {
            write(dir, &path, text)?;
        }
        written.push(path);
    }
    let loaded = yaml::load(dir).map_err(CompileError::from)?;
    compile::generate_models(dir, &loaded.config)?;
    written.push(dir.join("models.ts"));
    Ok(written)
}

/// The file a missing script gets.
fn scaffold(config: &NangoYaml, pck: &str, name: &str, kind: ScriptKind) -> String {
    let integration = config.integration(pck);
    match kind {
        ScriptKind::Sync => {
            let sync = integration.and_then(|i| i.sync(name));
            let models = sync.map(|s| s.output.join(", ")).unwrap_or_default();
            let first = sync
                .and_then(|s| s.output.first().cloned())
                .unwrap_or_else(|| "Model".into());
            let mut text = format!(
                "import type {{ NangoSync, {models} }} from '../../models';\n\n\
                 export default async function fetchData(nango: NangoSync): Promise<void> {{\n    \
                 // Fetch with nango.get / nango.paginate, then save:\n    \
                 // await nango.batchSave<{first}>(records, '{first}');\n\
                 }}\n"
            );
            if sync.is_some_and(|s| !s.webhook_subscriptions.is_empty()) {
                text.push_str(
                    "\nexport async function onWebhookPayloadReceived(nango: NangoSync, payload: any): Promise<void> {\n    \
                     // Handle one webhook delivery.\n\
                     }\n",
                );
            }
            text
        }
        ScriptKind::Action => {
            let action = integration.and_then(|i| i.action(name));
            let input = action.and_then(|a| a.input.clone());
            let output = action
                .and_then(|a| a.output.first().cloned())
                .unwrap_or_else(|| "void".into());
            let mut types = vec!["NangoAction".to_string()];
            types.extend(input.iter().cloned());
            if output != "void" {
                types.push(output.clone());
            }
            let param = input.map(|i| format!(", input: {i}")).unwrap_or_default();
            format!(
                "import type {{ {} }} from '../../models';\n\n\
                 export default async function runAction(nango: NangoAction{param}): Promise<{output}> {{\n    \
                 // Call the API with nango.get / nango.post and return the result.\n    \
                 // Throw new nango.ActionError({{ message }}) to fail with a payload.\n    \
                 throw new nango.ActionError({{ message: 'not implemented' }});\n\
                 }}\n",
                types.join(", ")
            )
        }
        ScriptKind::OnEvent => "import type { NangoAction } from '../../models';\n\n\
             export default async function onEvent(nango: NangoAction): Promise<void> {\n    \
             // Runs after a connection is created or before it is deleted.\n\
             }\n"
        .to_string(),
    }
}

/// A missing script's crate in a Rust project (one `sluice init --rust`
/// made, with its `sluice-sdk/` copy): its `Cargo.toml` and `src/main.rs`.
fn rust_scaffold(config: &NangoYaml, pck: &str, name: &str, kind: ScriptKind) -> [String; 2] {
    let what = match kind {
        ScriptKind::Sync => "sync",
        ScriptKind::Action => "action",
        ScriptKind::OnEvent => "on-event script",
    };
    let manifest = format!(
        "[package]\nname = \"{name}\"\ndescription = \"The {what} `{name}` of nango.yaml.\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [dependencies]\nsluice-sdk = {{ path = \"../../../sluice-sdk\" }}\nserde = {{ version = \"1\", features = [\"derive\"] }}\nserde_json = \"1\"\n\n\
         [profile.release]\ndebug = false\n\n\
         # A crate of its own, outside any workspace around it.\n[workspace]\n"
    );
    let integration = config.integration(pck);
    let main = match kind {
        ScriptKind::Sync => {
            let model = integration
                .and_then(|i| i.sync(name))
                .and_then(|s| s.output.first().cloned())
                .unwrap_or_else(|| "Model".into());
            format!(
                "//! The sync `{name}` of nango.yaml.\n\n\
                 use sluice_sdk::{{Error, Nango, sync}};\n\n\
                 #[sync]\nfn fetch_data(nango: &Nango) -> Result<(), Error> {{\n    \
                 // Fetch with nango.get(...) or nango.paginate(...), then save:\n    \
                 // nango.batch_save(&records, \"{model}\")?;\n    \
                 let _ = nango;\n    \
                 Ok(())\n}}\n\nfn main() {{}}\n"
            )
        }
        ScriptKind::Action => format!(
            "//! The action `{name}` of nango.yaml.\n\n\
             use serde_json::{{Value, json}};\n\
             use sluice_sdk::{{Error, Nango, action}};\n\n\
             #[action]\nfn run(nango: &Nango, input: Option<Value>) -> Result<Value, Error> {{\n    \
             // Call the API with nango.get(...) / nango.post(...) and return the result;\n    \
             // Err(Error::action(payload)) fails with a payload.\n    \
             let _ = (nango, input);\n    \
             Err(Error::action(json!({{ \"message\": \"not implemented\" }})))\n}}\n\nfn main() {{}}\n"
        ),
        ScriptKind::OnEvent => format!(
            "//! The on-event script `{name}` of nango.yaml.\n\n\
             use sluice_sdk::{{Error, Nango, on_event}};\n\n\
             #[on_event]\nfn run(nango: &Nango) -> Result<(), Error> {{\n    \
             // Runs after a connection is created or before it is deleted.\n    \
             let _ = nango;\n    \
             Ok(())\n}}\n\nfn main() {{}}\n"
        ),
    };
    [manifest, main]
}

/// The kind of script `sluice create` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewScript {
    Sync,
    Action,
    OnEvent,
}

/// `sluice create`, as the original's `nango create`: a new zero-yaml
/// script `<integration>/<syncs|actions|on-events>/<name>.ts` and its
/// import at the end of `index.ts`. The scaffold compiles as written (a
/// model and endpoint named after the script, a frequency, an event), to
/// be filled in; an existing file is never replaced.
pub fn create(
    dir: &Path,
    kind: NewScript,
    integration: &str,
    name: &str,
) -> Result<PathBuf, InitError> {
    if !crate::zero::is_zero_yaml(dir) {
        return Err(InitError::NotZeroYaml(dir.display().to_string()));
    }
    for (what, text) in [("the integration", integration), ("the script name", name)] {
        let ok = text.chars().any(|c| c.is_ascii_alphanumeric())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(InitError::BadName {
                what,
                name: text.to_string(),
            });
        }
    }
    let folder = match kind {
        NewScript::Sync => "syncs",
        NewScript::Action => "actions",
        NewScript::OnEvent => "on-events",
    };
    let rel = format!("{integration}/{folder}/{name}.ts");
    let path = dir.join(&rel);
    if path.exists() {
        return Err(InitError::ScriptExists(path.display().to_string()));
    }
    let model: String = name
        .split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    // A model name starts with a capital and has two characters at least.
    let mut model = if model.starts_with(|c: char| c.is_ascii_digit()) {
        format!("M{model}")
    } else {
        model
    };
    if model.len() < 2 {
        model.push_str("Record");
    }
    let text = match kind {
        NewScript::Sync => format!(
            "import {{ z }} from 'zod';
import {{ createSync }} from 'nango';

// One record of the sync; `id` identifies it.
const {model}Schema = z.object({{
    id: z.string()
}});

const sync = createSync({{
    description: 'TODO: what {name} syncs',
    version: '1.0.0',
    frequency: 'every hour',
    autoStart: true,
    syncType: 'full',
    endpoints: [{{ method: 'GET', path: '/{name}' }}],
    models: {{ {model}: {model}Schema }},

    exec: async (nango) => {{
        // Read the provider's API (nango.get, nango.paginate), then save
        // what it gave: await nango.batchSave(records, '{model}');
        await nango.log('{name}: nothing fetched yet');
    }}
}});

export type NangoSyncLocal = Parameters<(typeof sync)['exec']>[0];
export default sync;
"
        ),
        NewScript::Action => format!(
            "import {{ z }} from 'zod';
import {{ createAction }} from 'nango';

const Input = z.object({{}});
const Output = z.object({{ ok: z.boolean() }});

const action = createAction({{
    description: 'TODO: what {name} does',
    version: '1.0.0',
    endpoint: {{ method: 'POST', path: '/{name}' }},
    input: Input,
    output: Output,

    exec: async (nango, input) => {{
        // Call the provider's API (nango.post, nango.get, ...) with the input.
        await nango.log(`{name}: ${{JSON.stringify(input)}}`);
        return {{ ok: true }};
    }}
}});

export type NangoActionLocal = Parameters<(typeof action)['exec']>[0];
export default action;
"
        ),
        NewScript::OnEvent => format!(
            "import {{ createOnEvent }} from 'nango';

// Runs when a connection is created (`pre-connection-deletion`: before one
// is deleted).
export default createOnEvent({{
    description: 'TODO: what {name} does',
    version: '1.0.0',
    event: 'post-connection-creation',

    exec: async (nango) => {{
        await nango.log('{name}: connection ' + nango.connectionId);
    }}
}});
"
        ),
    };
    let index = dir.join("index.ts");
    // Neither written through a link (nor the script), checked before
    // anything is written; index.ts read as a regular file of at most
    // 8 MiB.
    plain(dir, &path)?;
    plain(dir, &index)?;
    let mut imports =
        yaml::read_text_file(&index, yaml::MAX_FILE_BYTES).map_err(|source| InitError::Write {
            path: index.display().to_string(),
            source,
        })?;
    if !imports.is_empty() && !imports.ends_with('\n') {
        imports.push('\n');
    }
    imports.push_str(&format!("import './{integration}/{folder}/{name}.js';\n"));
    // The script first: an import of a missing file would break the
    // project if writing it failed.
    write(dir, &path, &text)?;
    write(dir, &index, &imports)?;
    Ok(path)
}

/// `sluice generate`: models.ts, `.nango/schema.json`, and a scaffold for
/// every declared script without a file: a `.ts` file, or in a Rust
/// project (with the `sluice-sdk/` copy `sluice init --rust` writes) a
/// crate. Returns the files written.
pub fn generate(dir: &Path) -> Result<(Vec<PathBuf>, Vec<yaml::Diagnostic>), InitError> {
    if crate::zero::is_zero_yaml(dir) {
        return Err(CompileError::NotAProject(format!(
            "{} is a zero-yaml project: its models are its scripts' zod schemas, and `sluice compile` writes .nango/nango.json; `generate` is for nango.yaml projects",
            dir.display()
        ))
        .into());
    }
    compile::not_a_project(dir)?;
    let loaded = yaml::load(dir).map_err(CompileError::from)?;
    let config = &loaded.config;
    compile::generate_models(dir, config)?;
    let mut written = vec![dir.join("models.ts"), dir.join(".nango/schema.json")];
    let rust = dir.join("sluice-sdk/Cargo.toml").is_file();
    for integration in &config.integrations {
        let pck = &integration.provider_config_key;
        for (name, kind) in integration.scripts() {
            if compile::find_source(dir, pck, name, kind).is_some() {
                continue;
            }
            let folder = dir.join(pck).join(compile::kind_dir(kind));
            if rust {
                let crate_dir = folder.join(name);
                let [manifest, main] = rust_scaffold(config, pck, name, kind);
                for (path, text) in [
                    (crate_dir.join("Cargo.toml"), manifest.as_str()),
                    (crate_dir.join("src/main.rs"), main.as_str()),
                    (crate_dir.join("Cargo.lock"), RUST_LOCK),
                ] {
                    write(dir, &path, text)?;
                    written.push(path);
                }
            } else {
                let path = folder.join(format!("{name}.ts"));
                write(dir, &path, &scaffold(config, pck, name, kind))?;
                written.push(path);
            }
        }
    }
    Ok((written, loaded.warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sluice create` writes nothing through a link: not index.ts, not
    /// the script, nor in a linked integration folder; and reads index.ts
    /// as a regular file of at most 8 MiB.
    #[cfg(unix)]
    #[test]
    fn create_writes_nothing_through_a_link() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("project");
        std::fs::create_dir_all(dir.join(".nango")).unwrap();
        let victim = tmp.path().join("victim.ts");
        std::fs::write(&victim, "precious\n").unwrap();
        symlink("../victim.ts", dir.join("index.ts")).unwrap();
        let err = create(&dir, NewScript::Action, "acme", "hello")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "refusing to write {}: it is a symbolic link, and sluice writes only regular files in real folders of the project there (remove it and run again)",
                dir.join("index.ts").display()
            )
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!dir.join("acme").exists(), "the script was written first");

        // An integration folder linked out of the project.
        std::fs::remove_file(dir.join("index.ts")).unwrap();
        std::fs::write(dir.join("index.ts"), "").unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        symlink(&outside, dir.join("acme")).unwrap();
        let err = create(&dir, NewScript::Action, "acme", "hello")
            .unwrap_err()
            .to_string();
        assert!(err.contains("acme: it is a symbolic link"), "{err}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert_eq!(std::fs::read_to_string(dir.join("index.ts")).unwrap(), "");

        // An index.ts too large to be one is not read whole.
        std::fs::remove_file(dir.join("acme")).unwrap();
        std::fs::write(dir.join("index.ts"), vec![b' '; 9 << 20]).unwrap();
        let err = create(&dir, NewScript::Action, "acme", "hello")
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than the 8 MiB"), "{err}");

        std::fs::write(dir.join("index.ts"), "import './x.js';").unwrap();
        let path = create(&dir, NewScript::Action, "acme", "hello").unwrap();
        assert_eq!(path, dir.join("acme/actions/hello.ts"));
        assert_eq!(
            std::fs::read_to_string(dir.join("index.ts")).unwrap(),
            "import './x.js';\nimport './acme/actions/hello.js';\n"
        );
    }

    /// The Rust starter's crates name the SDK copy, and the copy finds the
    /// contract inside itself: nothing points into a sluice checkout.
    #[test]
    fn the_rust_starter_names_only_its_own_files() {
        for (rel, text) in RUST_TEMPLATE {
            let written = rust_file(rel, text);
            assert!(!written.contains("guest-sdk"), "{rel}");
            assert!(!written.contains("../../../../wit"), "{rel}");
            assert!(!written.contains("../../wit\","), "{rel}");
            if rel.ends_with("/Cargo.toml") && written.contains("sluice-sdk =") {
                assert!(written.contains(r#"path = "../../../sluice-sdk""#), "{rel}");
            }
        }
    }
}
