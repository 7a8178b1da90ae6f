//! `sluice test` on a zero-yaml project: each `<integration>/tests/*.test.ts`
//! of a generated shape (§7.2 of the zero-yaml reference) replayed against
//! its `.test.json` (or the legacy `mocks/`), with the original harness's
//! pass rules.
//!
//! The host finds the test files (alias folders, which are symlinks, under
//! their own name), reads each one's shape, mock name and models, finds
//! its fixture, and hands all of it to the component's `run-test` export:
//! the mock `nango` object, request identities and vitest's equalities run
//! in JavaScript inside the sandbox (`guest-sdk/ts/src/harness.ts`).
//! Test files written by hand (spies with their own return values, extra
//! assertions) are not of a generated shape and are reported apart.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sluice_runtime::connection::{Connection, MemoryConnections};
use sluice_runtime::providers::ProviderCatalog;
use sluice_runtime::records::{CallLog, ConnectionRef};
use sluice_runtime::replay::Replay;
use sluice_runtime::upstream::Upstream;
use sluice_runtime::{Call, Execution, Runtime, ScriptKind, Services};

use crate::compile::Project;
use crate::test::{TestOptions, TestOutcome};

/// The generated shapes a test file can have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Action,
    /// A sync; `second` names the check of the second `it` (see the
    /// harness's `TestSpec`), `shared` whether both `it`s share one mock.
    Sync {
        second: &'static str,
        shared: bool,
    },
}

/// What a test file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestFile {
    pub path: PathBuf,
    /// The folder the test sits in, by its own (alias) path: its parent's
    /// name is the mock's `providerConfigKey`.
    pub integration: String,
    /// `<base>` of `<base>.test.ts`.
    pub base: String,
    /// The script it imports (`../<kind>/<script>.js`).
    pub script: String,
    /// That script's source, by the test folder's own path.
    pub script_file: PathBuf,
    /// The mock's `name` (the fixture's name).
    pub name: String,
    pub models: Vec<String>,
    /// `None` for a hand-written test.
    pub shape: Option<Shape>,
    /// The instant `vi.setSystemTime(...)` freezes the clock at.
    pub frozen: Option<DateTime<Utc>>,
    /// `<integration>/tests/<file>` by the real folder (an alias folder's
    /// test is its integration's file): how a hand-written test compiled
    /// into its script's component is named there.
    pub key: String,
    /// What of vitest a hand-written test uses that `sluice test` does not
    /// run.
    pub unsupported: Option<&'static str>,
}

/// A hand-written test file to compile in with the script it tests.
#[derive(Debug, Clone)]
pub struct HandTest {
    pub key: String,
    /// The file, under the project's folder as given.
    pub file: PathBuf,
    /// The script it imports, canonical (`None` when it does not exist).
    pub script_file: Option<PathBuf>,
}

/// The test files written by hand in `integration`'s own folder that
/// `sluice test` runs by compiling them in.
pub fn hand_tests(root: &Path, integration: &str) -> Vec<HandTest> {
    discover(root, Some(integration))
        .into_iter()
        .filter(|tf| tf.shape.is_none() && tf.unsupported.is_none())
        .map(|tf| HandTest {
            file: std::path::absolute(root.join(&tf.key)).unwrap_or_else(|_| root.join(&tf.key)),
            script_file: std::fs::canonicalize(&tf.script_file).ok(),
            key: tf.key,
        })
        .collect()
}

/// Whether a test (`flat`: no whitespace, quotes as `'`) mocks a module
/// other than the packages sluice stands in for.
fn mocks_other_modules(flat: &str) -> bool {
    flat.match_indices("vi.mock(").any(|(at, m)| {
        let rest = &flat[at + m.len()..];
        let rest = rest.strip_prefix("import(").unwrap_or(rest);
        !["'soap'", "'botbuilder'", "'unzipper'"]
            .iter()
            .any(|p| rest.starts_with(p))
    })
}

/// Every `name: '…'` a test file gives (its mocks' names).
fn mock_names(path: &Path) -> Vec<String> {
    let text = read_regular(path)
        .ok()
        .flatten()
        .map(|t| strip_comments(&t))
        .unwrap_or_default();
    let mut names: Vec<String> = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("name:") {
        let after = &rest[at..];
        if let Some(name) = quoted_after(after, "name:")
            && !name.is_empty()
            && !name.contains('/')
            && !names.contains(&name)
        {
            names.push(name);
        }
        rest = &after["name:".len()..];
    }
    names
}

/// The vitest features a hand-written test may use that `sluice test`
/// does not have, by the text that shows them.
const UNSUPPORTED: [(&str, &str); 1] = [("vi.doMock(", "vi.doMock (module mocks made in a test)")];

fn strip_comments(text: &str) -> String {
    // Bytes are copied whole: what is dropped (a comment) starts and ends
    // at ASCII, so the rest stays the UTF-8 it was (`'café'` included).
    let mut out: Vec<u8> = Vec::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            out.push(c);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1]);
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
            continue;
        }
        if c == b'\'' || c == b'"' || c == b'`' {
            quote = Some(c);
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The string literal after the first `key` that starts a word (`name:`
/// but not `dirname:`).
fn quoted_after(text: &str, key: &str) -> Option<String> {
    let at = text
        .match_indices(key)
        .find(|(i, _)| {
            !key.starts_with(|c: char| c.is_alphanumeric())
                || !text[..*i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
        })?
        .0
        + key.len();
    let rest = text[at..].trim_start();
    let q = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let rest = &rest[1..];
    Some(rest[..rest.find(q)?].to_string())
}

/// Occurrences of `needle` not preceded by an identifier character or `.`
/// (`it(` but not `split(`).
fn count(hay: &str, needle: &str) -> usize {
    hay.match_indices(needle)
        .filter(|(i, _)| {
            !hay[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '$')
        })
        .count()
}

/// Reads a test file's script, mock name, models and shape.
pub fn read_test_file(path: &Path, integration: &str) -> Option<TestFile> {
    let raw = read_regular(path).ok()??;
    let text = strip_comments(&raw);
    let file_name = path.file_name()?.to_str()?;
    let base = file_name.strip_suffix(".test.ts")?.to_string();
    // `import X from '../<syncs|actions|on-events>/<script>.js'`
    let (kind_dir, script) = text.lines().find_map(|l| {
        let l = l.trim();
        if !l.starts_with("import ") || l.contains("vitest") {
            return None;
        }
        let from = quoted_after(l, " from ")?;
        let rest = from.strip_prefix("../")?;
        let (dir, file) = rest.split_once('/')?;
        Some((
            dir.to_string(),
            file.strip_suffix(".js").unwrap_or(file).to_string(),
        ))
    })?;
    let script_file = path
        .parent()?
        .parent()?
        .join(&kind_dir)
        .join(format!("{script}.ts"));
    let name = quoted_after(&text, "name:").unwrap_or_else(|| script.clone());
    let models: Vec<String> = quoted_after(&text, "Model:")
        .map(|m| m.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let flat: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| if c == '"' { '\'' } else { c })
        .collect();
    let frozen = quoted_after(&text, "setSystemTime(new Date(")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let key = real
        .components()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    let unsupported = UNSUPPORTED
        .iter()
        .find(|(marker, _)| text.contains(marker))
        .map(|(_, what)| *what)
        .or_else(|| mocks_other_modules(&flat).then_some("vi.mock of a module other than the packages sluice stands in for (soap, botbuilder, unzipper)"));
    Some(TestFile {
        key,
        unsupported,
        path: path.to_path_buf(),
        integration: integration.to_string(),
        base,
        script,
        script_file,
        name,
        models,
        // A test that freezes the clock is written by hand: it runs as
        // written.
        shape: if frozen.is_some() { None } else { shape(&flat) },
        frozen,
    })
}

/// Anything a generated test never does.
const HAND_WRITTEN: [&str; 17] = [
    "setSystemTime",
    "mockResolvedValue",
    "mockReturnValue",
    "mockImplementation",
    "vi.fn(",
    "vi.mock(",
    ".rejects",
    "toThrow",
    "beforeEach",
    "beforeAll",
    "getConnection",
    "getMetadata",
    "defineProperty",
    "toMatchObject",
    "toHaveLength",
    "toContain",
    "useFakeTimers",
];

fn shape(flat: &str) -> Option<Shape> {
    if HAND_WRITTEN.iter().any(|m| flat.contains(m)) {
        return None;
    }
    let its = count(flat, "it('");
    let expects = count(flat, "expect(");
    if flat.contains("NangoActionMock(") {
        return (its == 1
            && expects == 1
            && flat.contains(".exec(nangoMock,input)")
            && flat.contains("expect(response).toEqual(output)"))
        .then_some(Shape::Action);
    }
    if !flat.contains("NangoSyncMock(") {
        return None;
    }
    let save = flat.contains("getBatchSaveData(model)")
        && flat.contains("JSON.parse(JSON.stringify(spiedData))")
        && flat.contains("expect(spied).toStrictEqual(expectedBatchSaveData)");
    if !save {
        return None;
    }
    let shared = !flat.contains("createTestContext=()=>");
    let second = match (its, expects) {
        (1, 1) => "none",
        (2, 2)
            if flat.contains("getBatchDeleteData(model)")
                && flat.contains("expect(spied).toStrictEqual(batchDeleteData)") =>
        {
            "delete"
        }
        (2, 2)
            if flat.contains(
                "expect(nangoMock.batchDelete).toHaveBeenCalledWith(batchDeleteData,model)",
            ) =>
        {
            "delete-some"
        }
        (2, 2) if flat.contains("expect(batchDeleteSpy).not.toHaveBeenCalled()") => "no-delete",
        (2, 3)
            if flat.contains("expect(nangoMock.trackDeletesStart).toHaveBeenCalledWith(model)")
                && flat
                    .contains("expect(nangoMock.trackDeletesEnd).toHaveBeenCalledWith(model)") =>
        {
            "track"
        }
        (2, 4)
            if flat.contains("expect(nangoMock.trackDeletesStart).toHaveBeenCalledWith(model)")
                && flat.contains("invocationCallOrder[0]).toBeLessThan(") =>
        {
            "track-ordered"
        }
        _ => return None,
    };
    Some(Shape::Sync { second, shared })
}

/// Each integration folder of the project (alias folders included, in
/// name order; `integration` alone when given) and its `tests` folder.
fn test_folders(root: &Path, integration: Option<&str>) -> Vec<(String, PathBuf)> {
    let Ok(dirs) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = dirs.filter_map(|d| d.ok().map(|d| d.path())).collect();
    dirs.sort();
    dirs.into_iter()
        .filter_map(|dir| {
            let id = dir.file_name()?.to_str()?.to_string();
            (!id.starts_with('.') && integration.is_none_or(|i| i == id))
                .then(|| (id, dir.join("tests")))
        })
        .collect()
}

/// The `<integration>/tests/<name>.test.json` recordings that none of
/// `files` uses (by its base name or its mock's name).
fn unrun_recordings(root: &Path, integration: Option<&str>, files: &[TestFile]) -> Vec<String> {
    let mut out = Vec::new();
    for (id, tests) in test_folders(root, integration) {
        let id = id.as_str();
        let Ok(entries) = std::fs::read_dir(tests) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".test.json")
                    .map(str::to_string)
            })
            .filter(|name| {
                !files
                    .iter()
                    .any(|f| f.integration == id && (f.base == *name || f.name == *name))
            })
            .map(|name| format!("{id}/tests/{name}.test.json"))
            .collect();
        names.sort();
        out.extend(names);
    }
    out
}

/// Every `*.test.ts` in `<root>/<integration>/tests/`, alias folders
/// included, sorted.
pub fn discover(root: &Path, integration: Option<&str>) -> Vec<TestFile> {
    let mut out = Vec::new();
    for (id, tests) in test_folders(root, integration) {
        let Ok(files) = std::fs::read_dir(tests) else {
            continue;
        };
        let mut files: Vec<PathBuf> = files
            .filter_map(|f| f.ok().map(|f| f.path()))
            .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".test.ts")))
            .collect();
        files.sort();
        out.extend(files.iter().filter_map(|f| read_test_file(f, &id)));
    }
    out
}

/// The most bytes a recording (or a test file) `sluice test` reads.
const MAX_TEST_FILE_BYTES: u64 = 256 << 20;

/// A test's file as text: `None` when there is none; only a regular file
/// (or a link to one) of at most [`MAX_TEST_FILE_BYTES`] is read (a
/// `.test.json` linked to `/dev/zero` or a FIFO was read for ever).
fn read_text(path: &Path) -> Result<Option<String>, String> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    // Checked again on the file opened (it may have changed since
    // [`read_regular`] looked).
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "cannot read {}: not a regular file",
            path.display()
        ));
    }
    let too_large = || {
        format!(
            "cannot read {}: larger than {} MiB",
            path.display(),
            MAX_TEST_FILE_BYTES >> 20
        )
    };
    if meta.len() > MAX_TEST_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_TEST_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_TEST_FILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// [`read_text`] of a path that is not a FIFO or device (opening a FIFO
/// blocks until something writes to it).
fn read_regular(path: &Path) -> Result<Option<String>, String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        Ok(m) if !m.is_file() => Err(format!(
            "cannot read {}: not a regular file",
            path.display()
        )),
        Ok(_) => read_text(path),
    }
}

fn read_json(path: &Path) -> Result<Option<Value>, String> {
    match read_regular(path)? {
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{} is not JSON: {e}", path.display())),
        None => Ok(None),
    }
}

/// The most entries [`legacy_files`] looks at: a recorded mocks folder
/// holds hundreds.
const MAX_LEGACY_ENTRIES: usize = 100_000;

/// The legacy `mocks/` files a test may read, by path relative to `mocks/`.
/// A link to a folder is followed only when the folder is inside the
/// project `root` (a `mocks/<script>` link to another integration's
/// recordings), each real folder once (`mocks/x -> /` walked the whole
/// file system, `loop -> .` for ever, one out of the project read what is
/// there); the walk stops after [`MAX_LEGACY_ENTRIES`]; only regular
/// files (or links to them) are read.
fn legacy_files(root: &Path, mocks: &Path, name: &str) -> Map<String, Value> {
    let mut out = Map::new();
    let real_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut seen: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    if let Ok(real) = std::fs::canonicalize(mocks) {
        seen.insert(real);
    }
    let mut stack = vec![mocks.to_path_buf()];
    let mut looked = 0usize;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            looked += 1;
            if looked > MAX_LEGACY_ENTRIES {
                return out;
            }
            let p = e.path();
            let Ok(kind) = e.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if let Ok(real) = std::fs::canonicalize(&p)
                    && seen.insert(real)
                {
                    stack.push(p);
                }
                continue;
            }
            if kind.is_symlink() && p.is_dir() {
                if let Ok(real) = std::fs::canonicalize(&p)
                    && real.starts_with(&real_root)
                    && seen.insert(real)
                {
                    stack.push(p);
                }
                continue;
            }
            if !p.is_file() {
                continue;
            }
            let Ok(rel) = p.strip_prefix(mocks) else {
                continue;
            };
            let rel = rel.to_string_lossy().replace('\\', "/");
            let wanted = rel.starts_with(&format!("{name}/"))
                || rel.contains(&format!("/{name}/"))
                || rel.ends_with(&format!("/{name}.json"))
                || (rel.starts_with("nango/") && rel.matches('/').count() == 1);
            if wanted
                && rel.ends_with(".json")
                && let Ok(Some(v)) = read_json(&p)
            {
                out.insert(rel, v);
            }
        }
    }
    out
}

/// Runs every generated-shape test file; prints one line each, then counts.
pub async fn run(
    opts: &TestOptions,
    runtime: &Runtime,
    project: &Project,
    providers: Arc<ProviderCatalog>,
    local_providers: &std::collections::HashMap<String, String>,
    environment: Arc<sluice_runtime::Environment>,
    out: &mut dyn Write,
) -> Vec<TestOutcome> {
    let files = discover(&project.root, opts.build.integration.as_deref());
    let unrun = unrun_recordings(&project.root, opts.build.integration.as_deref(), &files);
    let mut outcomes = Vec::new();
    let mut hand_written = 0usize;
    let mut hand_run: Vec<bool> = Vec::new();
    let mut harnesses: BTreeMap<(String, String), Arc<sluice_runtime::Script>> = BTreeMap::new();
    for tf in files {
        if opts
            .script
            .as_ref()
            .is_some_and(|s| *s != tf.script && *s != tf.base)
        {
            continue;
        }
        // A test written by hand runs as written when it was compiled in
        // with its script (vitest's API as far as guest-sdk/ts/src/vitest.ts
        // has it); otherwise it is said and not run.
        if tf.shape.is_none() {
            let why = match (tf.unsupported, project.hand_tests.get(&tf.key)) {
                (Some(what), _) => Some(format!("it uses {what}, which sluice test does not have")),
                (None, Some(Ok(()))) => None,
                (None, Some(Err(why))) => Some(format!("it does not compile: {why}")),
                (None, None) => Some(format!(
                    "its script `{}` is not among the compiled scripts",
                    tf.script
                )),
            };
            if let Some(why) = why {
                hand_written += 1;
                let _ = writeln!(
                    out,
                    "- {}/{} (hand-written test: not run: {why})",
                    tf.integration, tf.base
                );
                continue;
            }
        }
        let kind = match &tf.shape {
            Some(Shape::Action) => ScriptKind::Action,
            Some(Shape::Sync { .. }) => ScriptKind::Sync,
            None => project
                .scripts
                .iter()
                .filter(|s| s.name == tf.script)
                .find(|s| {
                    s.integration == tf.integration
                        || tf.key.starts_with(&format!("{}/", s.integration))
                })
                .or_else(|| project.scripts.iter().find(|s| s.name == tf.script))
                .map_or(ScriptKind::Action, |s| s.kind),
        };
        let started = Instant::now();
        let failure = run_one(
            &tf,
            tf.shape.as_ref(),
            opts,
            runtime,
            project,
            &providers,
            local_providers,
            &environment,
            &mut harnesses,
        )
        .await
        .err();
        let outcome = TestOutcome {
            integration: tf.integration.clone(),
            script: tf.base.clone(),
            kind,
            failure,
            duration: started.elapsed(),
        };
        // A test written by hand runs as written, counted apart.
        let hand = tf.shape.is_none();
        let tag = if hand { ", hand-written" } else { "" };
        let _ = match &outcome.failure {
            None => writeln!(
                out,
                "✓ {}/{} ({kind}{tag}, {}ms)",
                outcome.integration,
                outcome.script,
                outcome.duration.as_millis()
            ),
            Some(why) => writeln!(
                out,
                "✗ {}/{} ({kind}{tag}): {why}",
                outcome.integration, outcome.script
            ),
        };
        if hand {
            hand_run.push(outcome.failure.is_none());
        }
        outcomes.push(outcome);
    }
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    let mut notes = Vec::new();
    if !hand_run.is_empty() {
        let passed = hand_run.iter().filter(|ok| **ok).count();
        notes.push(format!(
            "hand-written: {passed} passed, {} failed",
            hand_run.len() - passed
        ));
    }
    if hand_written > 0 {
        notes.push(format!("{hand_written} hand-written test files not run"));
    }
    if opts.script.is_none() && !unrun.is_empty() {
        // A recording (`dryrun --save`) is run by a test file naming it,
        // as the original's `nango generate:tests` writes them.
        let _ = writeln!(
            out,
            "- {} (a recording no tests/*.test.ts runs: add one, like those `sluice init` writes, or record it again with `sluice dryrun --save`, which writes one)",
            unrun.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "{} passed, {failed} failed{}",
        outcomes.len() - failed,
        if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        }
    );
    outcomes
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    tf: &TestFile,
    shape: Option<&Shape>,
    opts: &TestOptions,
    runtime: &Runtime,
    project: &Project,
    providers: &ProviderCatalog,
    local_providers: &std::collections::HashMap<String, String>,
    environment: &Arc<sluice_runtime::Environment>,
    harnesses: &mut BTreeMap<(String, String), Arc<sluice_runtime::Script>>,
) -> Result<(), String> {
    // An alias folder is a link to the integration whose scripts it runs.
    let folder = project.root.join(&tf.integration);
    let real = std::fs::canonicalize(&folder)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| tf.integration.clone());
    let wanted = std::fs::canonicalize(&tf.script_file).ok();
    let candidates: Vec<&crate::compile::ProjectScript> = project
        .scripts
        .iter()
        .filter(|s| {
            s.name == tf.script && (s.integration == tf.integration || s.integration == real)
        })
        .collect();
    let ps = candidates
        .iter()
        .find(|s| wanted.is_some() && std::fs::canonicalize(s.source.path()).ok() == wanted)
        .or(candidates.first())
        .copied()
        .ok_or_else(|| {
            format!(
                "the test imports `{}`, which index.ts does not list for {}",
                tf.script, tf.integration
            )
        })?;
    let key = (ps.integration.clone(), ps.name.clone());
    let harness = match harnesses.get(&key) {
        Some(h) => h.clone(),
        None => {
            let h = Arc::new(
                runtime
                    .test_harness(&ps.script)
                    .map_err(|e| e.to_string())?,
            );
            harnesses.insert(key, h.clone());
            h
        }
    };
    let tests = folder.join("tests");
    let mut fixture = read_json(&tests.join(format!("{}.test.json", tf.base)))?;
    let own_fixture = fixture.is_some();
    if fixture.is_none() && tf.base != tf.name {
        fixture = read_json(&tests.join(format!("{}.test.json", tf.name)))?;
    }
    let legacy = if fixture.is_none() {
        let mocks = folder.join("mocks");
        // A test written by hand may need no recording at all.
        if !mocks.is_dir() && shape.is_none() {
            None
        } else if !mocks.is_dir() {
            return Err(format!(
                "no fixture: neither tests/{}.test.json nor tests/{}.test.json nor mocks/ exists",
                tf.base, tf.name
            ));
        } else {
            Some(Value::Object(legacy_files(&project.root, &mocks, &tf.name)))
        }
    } else {
        None
    };
    // The provider is the integration's name, as in the original harness,
    // unless the project's connections.yaml names another for it (a
    // migrated nango.yaml project's integrations are often not named after
    // their provider).
    let provider_name = local_providers
        .get(&tf.integration)
        .cloned()
        .unwrap_or_else(|| tf.integration.clone());
    let provider = providers.get(&provider_name);
    let mut spec = json!({
        "kind": match shape {
            Some(Shape::Action) => "action",
            Some(Shape::Sync { .. }) => "sync",
            None => "file",
        },
        "name": tf.name,
        "models": tf.models,
        "providerConfigKey": tf.integration,
        "fixture": fixture.unwrap_or(Value::Null),
        "providerKnown": provider.is_some(),
    });
    if shape.is_none() {
        // The bundled file by its key; its `fs` reads the recordings next
        // to it (by the path its `__dirname` gives).
        spec["file"] = json!(tf.key);
        let file = project.root.join(&tf.key);
        let file = std::path::absolute(&file).unwrap_or(file);
        let dir = file.parent().unwrap_or(&project.root);
        let mut files = Map::new();
        for name in [&tf.base, &tf.name] {
            let at = tests.join(format!("{name}.test.json"));
            if let Some(text) = read_regular(&at)? {
                files.insert(
                    dir.join(format!("{name}.test.json")).display().to_string(),
                    Value::String(text),
                );
            }
        }
        spec["files"] = Value::Object(files);
        // Each mock's recording, as the original finds it: the test file's
        // own `<file>.test.json`, else the one of the mock's `name`.
        if !own_fixture {
            let mut fixtures = Map::new();
            for name in mock_names(&tf.path) {
                if let Some(f) = read_json(&tests.join(format!("{name}.test.json")))? {
                    fixtures.insert(name, f);
                }
            }
            spec["fixtures"] = Value::Object(fixtures);
        }
    }
    if let Some(Shape::Sync { second, shared }) = shape {
        spec["second"] = json!(second);
        spec["sharedMock"] = json!(shared);
    }
    if let Some(l) = legacy {
        spec["legacy"] = l;
    }
    if let Some(p) = provider.and_then(|p| p.proxy.paginate.clone()) {
        spec["pagination"] = Value::Object(p);
    }
    let conn = ConnectionRef {
        provider_config_key: ps.integration.clone(),
        connection_id: "sluice-test".into(),
    };
    let connection: Connection = serde_json::from_value(json!({
        "connection_id": conn.connection_id,
        "provider_config_key": conn.provider_config_key,
        "provider": provider_name,
        "credentials": {},
    }))
    .map_err(|e| e.to_string())?;
    let mut services = Services::new(
        environment.clone(),
        Arc::new(ProviderCatalog::default()),
        Arc::new(MemoryConnections::new([connection])),
        Arc::new(CallLog::default()),
    );
    // The harness answers from the fixture; nothing may reach the network.
    services.upstream = Upstream::Replay(Arc::new(Replay::new(tests)));
    let mut exec = Execution::new(
        ps.name.clone(),
        conn,
        Call::Test {
            spec: spec.to_string(),
        },
    );
    exec.clock = opts.now.or(tf.frozen);
    let report = runtime.execute(&harness, exec, Arc::new(services)).await;
    let output = report.outcome.map_err(|e| e.to_string())?;
    verdict(shape, &output.unwrap_or(Value::Null))
}

/// The `it`s of a generated shape, in order (§7.2): one for an action, the
/// batchSave check and, unless the shape has none, the second check for a
/// sync.
fn expected_its(shape: &Shape) -> Vec<&'static str> {
    match shape {
        Shape::Action => vec!["should output the action output that is expected"],
        Shape::Sync { second, .. } => {
            let mut its = vec!["should get, map correctly the data and batchSave the result"];
            if *second != "none" {
                its.push("should get, map correctly the data and batchDelete the result");
            }
            its
        }
    }
}

/// Whether the harness's `results` pass the test: every `it` passed, and
/// a generated shape's are exactly its `it`s (a hand-written test's at
/// least one). What the component answers is not taken on trust: results
/// missing, extra or renamed (a script that got at how they are written)
/// fail the test.
fn verdict(shape: Option<&Shape>, results: &Value) -> Result<(), String> {
    let its = results
        .as_array()
        .ok_or_else(|| format!("the harness returned {results}"))?;
    let failures: Vec<String> = its
        .iter()
        .filter(|it| it.get("ok") != Some(&Value::Bool(true)))
        .map(|it| {
            format!(
                "{}: {}",
                it.get("name").and_then(Value::as_str).unwrap_or("it"),
                it.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("failed")
            )
        })
        .collect();
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    let names: Vec<Option<&str>> = its
        .iter()
        .map(|it| it.get("name").and_then(Value::as_str))
        .collect();
    match shape {
        Some(shape) => {
            let expected = expected_its(shape);
            if names.len() != expected.len()
                || names.iter().zip(&expected).any(|(n, e)| *n != Some(*e))
            {
                return Err(format!(
                    "the harness reported {} result(s) for this test, not its {} `it`(s): {results}",
                    its.len(),
                    expected.len()
                ));
            }
        }
        None if its.is_empty() => {
            return Err("the harness reported no result for this test".to_string());
        }
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Links to folders under mocks/ are walked only to folders inside the
    /// project, each once: one to `/` walked the whole file system, one
    /// out of the project read what is there; one to another
    /// integration's recordings is read.
    #[cfg(unix)]
    #[test]
    fn legacy_mocks_are_read_without_following_folder_links() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("project");
        let mocks = root.join("acme").join("mocks");
        let write = |path: &Path, text: &str| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(&mocks.join("nango/getConnection.json"), "{}");
        write(&mocks.join("s/Issue/batchSave.json"), "[1]");
        write(&mocks.join("other/x.json"), "[2]");
        let outside = tmp.path().join("outside");
        write(&outside.join("s/leak.json"), "\"secret\"");
        symlink(&outside, mocks.join("out")).unwrap();
        symlink("/", mocks.join("root")).unwrap();
        symlink(".", mocks.join("loop")).unwrap();
        symlink("/dev/zero", mocks.join("s/zero.json")).unwrap();
        // Another integration's recordings, linked as this one's.
        let other = root.join("other/mocks/t");
        write(&other.join("Issue/batchSave.json"), "[3]");
        symlink(&other, mocks.join("s/linked")).unwrap();
        symlink("..", mocks.join("s/up")).unwrap();
        let mut found: Vec<String> = legacy_files(&root, &mocks, "s").keys().cloned().collect();
        found.sort();
        assert_eq!(
            found,
            [
                "nango/getConnection.json",
                "s/Issue/batchSave.json",
                "s/linked/Issue/batchSave.json"
            ]
        );
    }

    /// A recording is read only when it is a regular file of a bounded
    /// size: one linked to /dev/zero, a FIFO or a folder is an error (it
    /// was read for ever, or blocked), a missing one is none.
    #[cfg(unix)]
    #[test]
    fn recordings_are_read_only_from_regular_files_of_bounded_size() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("ok.test.json"), r#"{"input": 1}"#).unwrap();
        assert_eq!(
            read_json(&dir.join("ok.test.json")).unwrap(),
            Some(json!({"input": 1}))
        );
        assert_eq!(read_json(&dir.join("missing.test.json")).unwrap(), None);
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero.test.json")).unwrap();
        let err = read_json(&dir.join("zero.test.json")).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let fifo = dir.join("fifo.test.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        if made {
            let err = read_json(&fifo).unwrap_err();
            assert!(err.contains("not a regular file"), "{err}");
        }
        std::fs::create_dir(dir.join("folder.test.json")).unwrap();
        assert!(read_json(&dir.join("folder.test.json")).is_err());
        // A sparse file one byte over the limit is refused unread.
        let big = std::fs::File::create(dir.join("big.test.json")).unwrap();
        big.set_len(MAX_TEST_FILE_BYTES + 1).unwrap();
        let err = read_json(&dir.join("big.test.json")).unwrap_err();
        assert!(err.contains("larger than 256 MiB"), "{err}");
        // The hand-written tests' `fs` files and mock names read the same way.
        assert!(read_regular(&dir.join("zero.test.json")).is_err());
        assert!(mock_names(&dir.join("zero.test.json")).is_empty());
    }

    /// A generated shape passes only with exactly its `it`s, each passed:
    /// no results, fewer, more or renamed ones fail (what a script that got
    /// at how results are written could answer).
    #[test]
    fn a_generated_shape_passes_only_with_its_own_its_all_passed() {
        let action = Shape::Action;
        let sync = Shape::Sync {
            second: "delete",
            shared: false,
        };
        let save_only = Shape::Sync {
            second: "none",
            shared: false,
        };
        let ok = |name: &str| json!({"name": name, "ok": true});
        let act = "should output the action output that is expected";
        let save = "should get, map correctly the data and batchSave the result";
        let delete = "should get, map correctly the data and batchDelete the result";
        assert_eq!(verdict(Some(&action), &json!([ok(act)])), Ok(()));
        assert_eq!(verdict(Some(&sync), &json!([ok(save), ok(delete)])), Ok(()));
        assert_eq!(verdict(Some(&save_only), &json!([ok(save)])), Ok(()));
        for (shape, results) in [
            (&action, json!([])),
            (&action, json!([ok(act), ok(act)])),
            (&action, json!([ok("something else")])),
            (&sync, json!([ok(save)])),
            (&sync, json!([ok(delete), ok(save)])),
            (&save_only, json!([ok(save), ok(delete)])),
        ] {
            let err = verdict(Some(shape), &results).unwrap_err();
            assert!(err.contains("result(s) for this test"), "{err}");
        }
        assert_eq!(
            verdict(
                Some(&action),
                &json!([{"name": act, "ok": false, "message": "differs"}])
            ),
            Err(format!("{act}: differs"))
        );
        assert!(verdict(Some(&action), &json!({"ok": true})).is_err());
        // A hand-written test's its are its own; none at all fails.
        assert_eq!(verdict(None, &json!([ok("any")])), Ok(()));
        assert!(verdict(None, &json!([])).is_err());
    }

    #[test]
    fn only_mocks_of_the_stand_in_packages_run() {
        assert!(!mocks_other_modules("vi.mock('soap',()=>({default:{}}))"));
        assert!(!mocks_other_modules(
            "vi.mock(import('soap'),async(o)=>({}))"
        ));
        assert!(mocks_other_modules("vi.mock('../helpers/x.js')"));
        assert!(mocks_other_modules(
            "vi.mock('soap',()=>({}));vi.mock('crypto')"
        ));
        assert!(!mocks_other_modules("expect(x).toEqual(1)"));
    }

    #[test]
    fn comments_go_and_text_beyond_ascii_stays_as_written() {
        let text = "const n = 'café — 日本'; // a comment: ü\n/* ö */ const m = \"naïve\\\"é\";";
        assert_eq!(
            strip_comments(text),
            "const n = 'café — 日本'; \n const m = \"naïve\\\"é\";"
        );
    }

    #[test]
    fn hand_written_markers_make_a_test_hand_written() {
        assert_eq!(shape("nothing"), None);
        assert_eq!(
            shape(
                "NangoActionMock(it('x',async()=>{.exec(nangoMock,input)expect(response).toEqual(output)})"
            ),
            Some(Shape::Action)
        );
        assert_eq!(
            shape(
                "NangoActionMock(it('x',async()=>{vi.fn(.exec(nangoMock,input)expect(response).toEqual(output)})"
            ),
            None
        );
    }
}
