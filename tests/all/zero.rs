//! Zero-yaml projects (Nango's current format) through the command line:
//! compile (definitions, `.nango/nango.json`, the original's source
//! checks) and `sluice test` replaying `.test.json` recordings with the
//! original harness's rules.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use sluice_project::mock::{MockRequest, MockResponse};
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::{MockServer, guests, repo_root, ts_sdk};

use crate::server::{Client, DEV_KEY, start_with};

/// Runs the CLI in process. One at a time: the tests here build the same
/// project into the same folder (a componentize-js build is not
/// byte-for-byte repeatable, so two at once could mix their files).
async fn sluice(args: &[String]) -> (i32, String, String) {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let argv = std::iter::once("sluice".to_string()).chain(args.iter().cloned());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = sluice::cli::run(argv.map(Into::into), &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `verb --dir dir` with this checkout's SDK and the tests' caches.
fn args(verb: &str, dir: &Path, build: &str) -> Vec<String> {
    vec![
        verb.into(),
        "--dir".into(),
        s(dir),
        "--sdk".into(),
        s(&ts_sdk()),
        "--cache-dir".into(),
        guests::CACHE_DIR.into(),
        "--build-dir".into(),
        s(&Path::new(guests::BUILD_DIR).join(build)),
    ]
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The zero-yaml starter (`examples/github-zero`), plus an action that
/// calls `fetch` and one that reads its integration.
fn copy_zero_project(to: &Path) {
    copy_dir(&repo_root().join("examples").join("github-zero"), to);
    write(to, "github/actions/fetch-url.ts", FETCH_URL);
    write(to, "github/actions/code-from-strings.ts", CODE_FROM_STRINGS);
    write(to, "github/actions/integration-info.ts", INTEGRATION_INFO);
    // An action with the sync's name (google-calendar's `settings` is both),
    // reading a JSON file it imports (bundled as data, as esbuild does).
    write(to, "github/actions/issues.ts", ISSUES_ACTION);
    write(
        to,
        "github/helpers/names.json",
        "{ \"issues\": \"the issues action\" }\n",
    );
    let index = std::fs::read_to_string(to.join("index.ts")).unwrap();
    write(
        to,
        "index.ts",
        &format!(
            "{index}import './github/actions/fetch-url.js';\nimport './github/actions/code-from-strings.js';\nimport './github/actions/integration-info.js';\nimport './github/actions/issues.js';\n"
        ),
    );
}

const ISSUES_ACTION: &str = r#"import { z } from 'zod';
import { createAction } from 'nango';
import names from '../helpers/names.json';

export default createAction({
    description: 'Shares its name with the issues sync',
    version: '1.0.0',
    input: z.any(),
    output: z.object({ kind: z.string(), input: z.any() }),

    exec: async (_nango, input) => ({ kind: names.issues, input: input === undefined ? 'undefined' : input })
});
"#;

const INTEGRATION_INFO: &str = r#"import { z } from 'zod';
import { createAction } from 'nango';

export default createAction({
    description: 'The integration with its OAuth client',
    version: '1.0.0',
    input: z.object({}),
    output: z.any(),

    exec: async (nango) => {
        return await nango.getIntegration({ include: ['credentials'] });
    }
});
"#;

const CODE_FROM_STRINGS: &str = r#"import { z } from 'zod';
import { createAction } from 'nango';

const Pair = z.object({ n: z.number() });

function fail(): never {
    throw new Error('thrown on purpose');
}

// The original's sandbox generates no code from strings.
export default createAction({
    description: 'What eval and the Function constructors do',
    version: '1.0.0',
    input: z.any(),
    output: z.any(),

    exec: async (_nango, input) => {
        if (input?.fail) fail();
        const out: Record<string, string> = {};
        const attempt = (k: string, f: () => unknown) => {
            try {
                out[k] = `ran: ${String(f())}`;
            } catch (e) {
                out[k] = String(e);
            }
        };
        attempt('eval', () => eval('1 + 1'));
        attempt('Function', () => new Function('return 1')());
        attempt('constructor', () => (function () {}).constructor('return 1')());
        attempt('async', () => (async function () {}).constructor('return 1'));
        attempt('instanceof', () => (() => 1) instanceof Function);
        attempt('zod', () => JSON.stringify(Pair.parse({ n: 1, extra: true })));
        return out;
    }
});
"#;

const FETCH_URL: &str = r#"import { z } from 'zod';
import { createAction } from 'nango';

// Scripts have no `fetch` (as in the original's sandbox): sluice says what
// to use instead.
export default createAction({
    description: 'Reads a URL with fetch, which scripts do not have',
    version: '1.0.0',
    input: z.object({ url: z.string() }),
    output: z.object({ status: z.number() }),

    exec: async (_nango, input) => {
        const response = await fetch(input.url);
        return { status: response.status };
    }
});
"#;

fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[tokio::test]
async fn a_zero_yaml_project_compiles_writes_nango_json_and_passes_its_recorded_tests() {
    let tmp = tempfile::tempdir().unwrap();
    copy_zero_project(tmp.path());
    // An alias folder (a link to an integration) runs the same tests under
    // its own name, with its own provider's pagination defaults.
    std::os::unix::fs::symlink(tmp.path().join("github"), tmp.path().join("github-app")).unwrap();
    write(
        tmp.path(),
        "providers.yaml",
        "github-app:\n    auth_mode: OAUTH2\n    proxy:\n        base_url: https://api.github.com\n        paginate:\n            type: link\n            limit_name_in_request: per_page\n            link_rel_in_response_header: next\n",
    );
    let mut argv = args("test", tmp.path(), "zero-project");
    argv.extend([
        "--providers".to_string(),
        s(&tmp.path().join("providers.yaml")),
    ]);

    let (code, out, err) = sluice(&args("compile", tmp.path(), "zero-project")).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    assert!(out.contains("✓ github/github-get-repo (action, "), "{out}");
    assert!(out.contains("✓ github/github-issues (sync, "), "{out}");
    assert!(out.contains("✓ github-app/github-issues (sync, "), "{out}");
    assert!(out.ends_with("4 passed, 0 failed\n"), "{out}");

    // .nango/nango.json in the original's shape.
    let nango: Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join(".nango/nango.json")).unwrap(),
    )
    .unwrap();
    let github = &nango[0];
    assert_eq!(github["providerConfigKey"], "github");
    let action = &github["actions"][0];
    assert_eq!(action["name"], "get-repo");
    assert_eq!(action["input"], "ActionInput_github_getrepo");
    assert_eq!(
        action["output"],
        serde_json::json!(["ActionOutput_github_getrepo"])
    );
    assert_eq!(
        action["json_schema"]["definitions"]["ActionInput_github_getrepo"]["required"],
        serde_json::json!(["owner", "repo"])
    );
    let sync = &github["syncs"][0];
    assert_eq!(sync["name"], "issues");
    assert_eq!(sync["runs"], "every hour");
    assert_eq!(sync["auto_start"], false);
    assert_eq!(sync["sync_type"], "full");
    assert_eq!(sync["input"], "SyncMetadata_github_issues");
    assert_eq!(sync["output"], serde_json::json!(["Issue"]));
    let issue = &sync["json_schema"]["definitions"]["Issue"];
    assert_eq!(
        issue["properties"]["state"]["enum"],
        serde_json::json!(["open", "closed"])
    );
    assert!(
        !issue["required"]
            .as_array()
            .unwrap()
            .contains(&Value::from("closedAt")),
        "{issue}"
    );

    // Each passing test fails when what it expects changes: the action's
    // output, a record the sync saves.
    edit_json(&tmp.path().join("github/tests/get-repo.test.json"), |v| {
        v["output"]["stars"] = 81.into();
    });
    edit_json(&tmp.path().join("github/tests/issues.test.json"), |v| {
        v["nango"]["batchSave"]["Issue"][1]["title"] = "Changed".into();
    });
    let (code, out, _) = sluice(&argv).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("✗ github/github-get-repo (action): should output the action output that is expected: AssertionError: action output differs: output.stars: expected 81, got 80"),
        "{out}"
    );
    assert!(
        out.contains("✗ github/github-issues (sync): should get, map correctly the data and batchSave the result: AssertionError: Issue batchSave differs: Issue[1].title: expected \"Changed\", got \"Second\""),
        "{out}"
    );

    // A request the recording does not hold fails with the harness's message.
    edit_json(&tmp.path().join("github/tests/get-repo.test.json"), |v| {
        v["input"]["repo"] = "gadgets".into();
    });
    let (code, out, _) = sluice(&argv).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("✗ github/github-get-repo (action): should output the action output that is expected: Error: No mock found for GET repos/acme/gadgets"),
        "{out}"
    );

    // The definitions are read again when a file they come from changes (an
    // unchanged integration reuses them without running Node.js).
    let helper = tmp.path().join("github/helpers/mappers.ts");
    let text = std::fs::read_to_string(&helper).unwrap();
    assert!(text.contains("title: z.string()"), "{text}");
    std::fs::write(
        &helper,
        text.replace(
            "title: z.string()",
            "title: z.string(), edited: z.boolean().optional()",
        ),
    )
    .unwrap();
    let (code, out, err) = sluice(&args("compile", tmp.path(), "zero-project")).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    let nango: Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join(".nango/nango.json")).unwrap(),
    )
    .unwrap();
    let issue = nango[0]["syncs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "issues")
        .and_then(|s| s["json_schema"]["definitions"]["Issue"].as_object())
        .cloned()
        .unwrap_or_else(|| panic!("{nango}"));
    assert!(issue["properties"].get("edited").is_some(), "{issue:?}");
}

/// A one-integration zero-yaml project with `script` as its only action.
fn project_with(dir: &Path, script: &str) {
    write(dir, ".nango/.gitkeep", "");
    write(dir, "index.ts", "import './demo/actions/act.js';\n");
    write(dir, "demo/actions/act.ts", script);
}

const HEADER: &str = "import { z } from 'zod';\nimport { createAction } from 'nango';\n";

#[tokio::test]
async fn zero_yaml_compile_errors_name_the_file_and_the_rule() {
    let cases: [(&str, &str); 11] = [
        // Top-level code that throws while the definition is read: named
        // by the script's own line, not the bundle's.
        (
            "import { createAction } from 'nango';\nconst Input = z.object({});\nexport default createAction({ description: 'x', input: Input, output: undefined, exec: async () => true });\n",
            "demo/actions/act.ts: loading the script failed at demo/actions/act.ts:2:15: ReferenceError: z is not defined",
        ),
        (
            "import axios from 'axios';\nimport { createAction } from 'nango';\nexport default createAction({ description: 'x', input: undefined, output: undefined, exec: async () => axios.get('https://example.com') });\n",
            "Import of package 'axios' is not allowed. Allowed packages are: nango, nango/experimental, zod, crypto",
        ),
        // Refused though nothing uses it (the bundler drops such an
        // import); a type import is allowed.
        (
            "import axios from 'axios';\nimport type { AxiosError } from 'axios';\nimport { createAction } from 'nango';\nexport default createAction({ description: 'x', input: undefined, output: undefined, exec: async () => true });\n",
            "demo/actions/act.ts:1: Import of package 'axios' is not allowed.",
        ),
        (
            "import { type AxiosError } from 'axios';\nimport lodash from 'lodash/get';\nimport { createAction } from 'nango';\nexport default createAction({ description: 'x', input: undefined, output: undefined, exec: async () => true });\n",
            "demo/actions/act.ts:2: Import of package 'lodash' is not allowed.",
        ),
        (
            "exec: async (nango) => { nango.get({ endpoint: '/x' }); return true; }",
            "demo/actions/act.ts:4: nango.get() calls must be awaited in \"demo/actions/act.ts\". Not awaiting can lead to unexpected results.",
        ),
        (
            "exec: async (nango) => { await nango.get({ endpoint: '/x', retryOn: [429] }); return true; }",
            "Proxy call: 'retryOn' should not be used if 'retries' is not set.",
        ),
        (
            "import { z } from 'zod';\nimport { createAction } from 'nango';\nexport const helper = 1;\nexport default createAction({ description: 'x', input: z.object({}), output: z.boolean(), exec: async () => true });\n",
            "demo/actions/act.ts:3: Named export 'helper' is not allowed. Only export default and type exports are permitted.",
        ),
        (
            "exec: async (nango) => { await nango.trackDeletesEnd('Item'); await nango.trackDeletesStart('Item'); return true; }",
            "trackDeletesStart for model 'Item' should be called before trackDeletesEnd",
        ),
        // A definition without its body: named at compile, not when run.
        (
            "run: async () => true",
            "demo/actions/act.ts: createAction > exec > must be a function",
        ),
        // A syntax error, named by its place in the project (not relative
        // to where sluice runs).
        (
            "exec: async () => { const = 1; return true; }",
            "\n  demo/actions/act.ts:4: Expected identifier but found \"=\"",
        ),
        // A Unicode property Node does not know either (the known ones
        // are spelled out as code point ranges for the engine).
        (
            "exec: async () => /[\\p{Letterz}]/u.test('a')",
            "SyntaxError: Invalid regular expression: /[\\p{Letterz}]/u: Invalid property name in character class",
        ),
    ];
    for (i, (body, message)) in cases.into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let script = if body.starts_with("import ") {
            body.to_string()
        } else {
            format!(
                "{HEADER}export default createAction({{ description: 'x', input: z.object({{}}), output: z.boolean(),\n  {body}\n}});\n"
            )
        };
        project_with(tmp.path(), &script);
        let (code, out, err) =
            sluice(&args("compile", tmp.path(), &format!("zero-errors-{i}"))).await;
        assert_eq!(code, 2, "case {i}: {out}\n{err}");
        assert!(err.contains("compiling demo failed"), "case {i}: {err}");
        assert!(
            err.contains(message),
            "case {i}: expected {message:?} in\n{err}"
        );
    }

    // A script's top-level code runs while its definition is read, in a
    // Node.js that writes no file (nor starts a process, nor reads beyond
    // the SDK and zod): a script cannot rewrite its own tests as it is
    // compiled.
    let tmp = tempfile::tempdir().unwrap();
    let fixture = tmp.path().join("demo/tests/act.test.json");
    std::fs::create_dir_all(fixture.parent().unwrap()).unwrap();
    project_with(
        tmp.path(),
        &format!(
            "{HEADER}(process as any).getBuiltinModule('fs').writeFileSync({:?}, '{{}}');\nexport default createAction({{ description: 'x', input: z.object({{}}), output: z.boolean(), exec: async () => true }});\n",
            fixture.display().to_string()
        ),
    );
    let (code, out, err) = sluice(&args("compile", tmp.path(), "zero-errors-write")).await;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("demo/actions/act.ts: loading the script failed at demo/actions/act.ts:3:")
            && err.contains("Access to this API has been restricted")
            && err.contains("(FileSystemWrite ")
            && err.contains("with no file writes, child processes, workers or native addons"),
        "{err}"
    );
    assert!(!fixture.exists(), "the script wrote {}", fixture.display());

    // The load step may read the project's zod: a link in it leading out
    // of it (`node_modules/zod/x -> /`) would have let the scripts read
    // anything through it. Refused, naming it.
    #[cfg(unix)]
    {
        let tmp = tempfile::tempdir().unwrap();
        let zod = tmp.path().join("node_modules/zod");
        copy_dir(&ts_sdk().join("node_modules/zod4"), &zod);
        std::os::unix::fs::symlink("/", zod.join("src/x")).unwrap();
        project_with(
            tmp.path(),
            &format!(
                "{HEADER}export default createAction({{ description: 'x', input: z.object({{}}), output: z.boolean(), exec: async () => true }});\n"
            ),
        );
        let (code, out, err) = sluice(&args("compile", tmp.path(), "zero-errors-zod-link")).await;
        assert_eq!(code, 2, "{out}\n{err}");
        assert!(
            err.contains(&format!(
                "{} is a link to /, outside the zod package",
                zod.join("src/x").display()
            )),
            "{err}"
        );
    }

    // The original's await rule: a call passes when any enclosing
    // expression is awaited, chained or returned (functions between
    // included), and fails otherwise, even when its promise is awaited
    // later. The first script is refused; nothing is said of the second.
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), ".nango/.gitkeep", "");
    write(
        tmp.path(),
        "index.ts",
        "import './demo/actions/act.js';\nimport './demo/actions/ok.js';\n",
    );
    write(
        tmp.path(),
        "demo/actions/act.ts",
        &format!(
            "{HEADER}export default createAction({{ description: 'x', input: z.object({{}}), output: z.boolean(),\n  exec: async (nango) => {{ const later = nango.get({{ endpoint: '/x' }}); await later; return true; }}\n}});\n"
        ),
    );
    write(
        tmp.path(),
        "demo/actions/ok.ts",
        &format!(
            "{HEADER}export default createAction({{ description: 'x', input: z.object({{}}), output: z.boolean(),\n  exec: async (nango) => {{\n    await Promise.all(['a', 'b'].map(async (id) => {{ nango.log(id); }}));\n    nango.get({{ endpoint: '/y' }}).then(() => undefined);\n    const sent = ['c'].map((id) => {{ return nango.post({{ endpoint: '/z', data: id }}); }});\n    await Promise.all(sent);\n    return true;\n  }}\n}});\n"
        ),
    );
    let (code, out, err) = sluice(&args("compile", tmp.path(), "zero-errors-await")).await;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("demo/actions/act.ts:4: nango.get() calls must be awaited"),
        "{err}"
    );
    assert!(!err.contains("ok.ts"), "{err}");

    // Frequencies the original refuses (too short; a phrase in another
    // case; a space after the unit), named with their field.
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), ".nango/.gitkeep", "");
    write(tmp.path(), "index.ts", "import './demo/syncs/items.js';\n");
    for frequency in ["every 10 seconds", "Every Hour", "every 1 hour "] {
        write(
            tmp.path(),
            "demo/syncs/items.ts",
            &format!(
                "import {{ z }} from 'zod';\nimport {{ createSync }} from 'nango';\nexport default createSync({{ description: 'x', frequency: '{frequency}', models: {{ Item: z.object({{ id: z.string() }}) }}, exec: async () => {{}} }});\n"
            ),
        );
        let (code, _, err) = sluice(&args("compile", tmp.path(), "zero-errors-frequency")).await;
        assert_eq!(code, 2, "{frequency:?}: {err}");
        assert!(
            err.contains("demo/syncs/items.ts: createSync > frequency > Interval is invalid"),
            "{frequency:?}: {err}"
        );
    }

    // An index.ts without entries.
    write(tmp.path(), "index.ts", "// nothing yet\n");
    let (code, _, err) = sluice(&args("compile", tmp.path(), "zero-errors-frequency")).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("No entry points found in index.ts"), "{err}");
}

/// The upstream of the zero-yaml sync: the full list (two pages, linked)
/// or, with `since`, the issues updated since; `phase` 1 has issue 102
/// renamed, `phase` 2 has it gone.
fn issues_upstream(phase: Arc<AtomicUsize>) -> sluice_project::mock::Handler {
    Arc::new(move |req: &MockRequest| {
        let phase = phase.load(Ordering::SeqCst);
        let issue = |id: u64, title: &str, updated: &str| json!({ "id": id, "number": id - 100, "title": title, "state": "open", "labels": [], "closed_at": null, "updated_at": updated });
        let second = if phase == 0 {
            "Second"
        } else {
            "Second, renamed"
        };
        let all = match phase {
            2 => vec![
                issue(101, "First", "2026-01-02T00:00:00Z"),
                issue(103, "Third", "2026-01-03T00:00:00Z"),
            ],
            _ => vec![
                issue(101, "First", "2026-01-02T00:00:00Z"),
                issue(
                    102,
                    second,
                    if phase == 0 {
                        "2026-01-05T00:00:00Z"
                    } else {
                        "2026-01-07T00:00:00Z"
                    },
                ),
                issue(103, "Third", "2026-01-03T00:00:00Z"),
            ],
        };
        match req.path.as_str() {
            "/repos/acme/widgets/issues" => {
                if let Some(since) = req.query_param("since") {
                    let newer: Vec<Value> = all
                        .into_iter()
                        .filter(|i| i["updated_at"].as_str().unwrap_or("") > since)
                        .collect();
                    return MockResponse::json(200, &Value::Array(newer));
                }
                let host = req.header("host").unwrap_or("127.0.0.1").to_string();
                MockResponse::json(200, &Value::Array(all[..2].to_vec())).with_header(
                    "link",
                    &format!("<http://{host}/repositories/1296269/issues?state=all&per_page=2&page=2>; rel=\"next\""),
                )
            }
            "/repositories/1296269/issues" => {
                MockResponse::json(200, &Value::Array(all[2..].to_vec()))
            }
            _ => MockResponse::json(404, &json!({ "message": "Not Found" })),
        }
    })
}

#[tokio::test]
async fn a_deployed_zero_yaml_sync_keeps_its_checkpoint_between_runs_and_deletes_what_a_full_refresh_missed()
 {
    let phase = Arc::new(AtomicUsize::new(0));
    let mock = MockServer::start(issues_upstream(phase.clone()))
        .await
        .unwrap();
    let providers = std::fs::read_to_string(repo_root().join("host/runtime/providers.yaml"))
        .unwrap()
        .replace("https://api.github.com", &mock.url());
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let dev = Client::new(&server, DEV_KEY);

    // `sluice deploy` of a zero-yaml folder, as a user runs it.
    let tmp = tempfile::tempdir().unwrap();
    copy_zero_project(tmp.path());
    let mut argv = args("deploy", tmp.path(), "zero-project");
    argv.extend([
        "--host".into(),
        server.url(),
        "--secret-key".into(),
        DEV_KEY.into(),
    ]);
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");

    // The API documents the deploy's zod models: each script's JSON
    // schema, and an OpenAPI document whose every reference resolves.
    let (status, config) = dev.send("GET", "/scripts/config", None).await;
    assert_eq!(status, 200, "{config}");
    let issues = config[0]["syncs"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "issues"))
        .unwrap_or_else(|| panic!("no issues sync in {config}"));
    let issue = &issues["json_schema"]["definitions"]["Issue"];
    assert_eq!(issue["type"], "object", "{issues}");
    assert!(issue["properties"]["title"].is_object(), "{issues}");
    // The model's fields, from its schema.
    let fields = issues["models"][0]["fields"].as_array().unwrap();
    assert!(
        fields.contains(&json!({"name": "title", "type": "string"})),
        "{issues}"
    );
    let (status, api) = dev.send("GET", "/openapi.json", None).await;
    assert_eq!(status, 200, "{api}");
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&api, &mut found);
    assert!(!found.is_empty(), "{api}");
    for r in found {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(
            api["components"]["schemas"][name].is_object(),
            "{r} does not resolve in {api}"
        );
    }

    let conn = ("github", "acme");
    let (status, body) = dev
        .send_as(
            conn,
            "POST",
            "/integrations",
            Some(json!({"unique_key": "github", "provider": "github", "credentials": {"type": "OAUTH2", "client_id": "the-client", "client_secret": "the-secret"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send_as(
            conn,
            "POST",
            "/connection",
            Some(json!({
                "provider_config_key": "github",
                "connection_id": "acme",
                "access_token": "token",
                "metadata": {"owner": "acme", "repo": "widgets"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let run = |mode: &'static str| {
        let dev = &dev;
        async move {
            let (status, body) = dev
                .send_as(
                    conn,
                    "POST",
                    "/sync/trigger",
                    Some(json!({"syncs": ["issues"], "provider_config_key": "github", "connection_id": "acme", "wait": true, "sync_mode": mode})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["runs"][0]["success"], true, "{body}");
            let results = body["runs"][0]["results"]["Issue"].clone();
            assert!(results.is_object(), "{body}");
            results
        }
    };
    let since_of_last = || {
        mock.requests()
            .iter()
            .rev()
            .find(|r| r.path == "/repos/acme/widgets/issues")
            .map(|r| r.query_param("since").map(str::to_string))
            .unwrap()
    };

    // First run: no checkpoint, both pages, three issues.
    let results = run("incremental").await;
    assert_eq!(results["added"], 3, "{results}");
    assert_eq!(since_of_last(), None);

    // Second run: the checkpoint the first saved is sent upstream.
    phase.store(1, Ordering::SeqCst);
    let results = run("incremental").await;
    assert_eq!(since_of_last().as_deref(), Some("2026-01-05T00:00:00Z"));
    assert_eq!(results["updated"], 1, "{results}");
    assert_eq!(results["deleted"], 0, "{results}");

    // A full refresh forgets the checkpoint; trackDeletesStart/End delete
    // the issue the upstream no longer has.
    phase.store(2, Ordering::SeqCst);
    let results = run("full_refresh").await;
    assert_eq!(since_of_last(), None);
    assert_eq!(results["deleted"], 1, "{results}");
    let (status, page) = dev.send_as(conn, "GET", "/records?model=Issue", None).await;
    assert_eq!(status, 200, "{page}");
    let deleted: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["_nango_metadata"]["deleted_at"].is_null())
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(deleted, ["102"], "{page}");
    // The newer form, `opts: {reset}`, is a full refresh too; a key the
    // route does not take is refused, naming it, and nothing runs.
    let trigger = |body: Value| {
        let dev = &dev;
        async move { dev.send_as(conn, "POST", "/sync/trigger", Some(body)).await }
    };
    let runs_before = mock.requests().len();
    for (body, named) in [
        (
            json!({"syncs": ["issues"], "provider_config_key": "github", "connection_id": "acme", "syncMode": "full_refresh"}),
            "syncMode",
        ),
        (
            json!({"syncs": ["issues"], "provider_config_key": "github", "connection_id": "acme", "sync_mode": "full_refresh", "opts": {"reset": true}}),
            "opts",
        ),
    ] {
        let (status, out) = trigger(body).await;
        assert_eq!(status, 400, "{out}");
        assert_eq!(out["error"]["code"], "invalid_body", "{out}");
        assert!(out.to_string().contains(named), "{out}");
    }
    assert_eq!(mock.requests().len(), runs_before);
    let (status, out) = trigger(json!({"syncs": ["issues"], "provider_config_key": "github", "connection_id": "acme", "wait": true})).await;
    assert_eq!(
        (status, &out["runs"][0]["success"]),
        (200, &json!(true)),
        "{out}"
    );
    assert!(
        since_of_last().is_some(),
        "an incremental run sent no checkpoint"
    );
    let (status, out) = trigger(json!({"syncs": ["issues"], "provider_config_key": "github", "connection_id": "acme", "wait": true, "opts": {"reset": true}})).await;
    assert_eq!(
        (status, &out["runs"][0]["success"]),
        (200, &json!(true)),
        "{out}"
    );
    assert_eq!(since_of_last(), None, "opts.reset kept the checkpoint");
    // The deprecated `full_resync: true` is a full refresh that deletes
    // nothing, as the original's (it had emptied the records first: every
    // one came back as added, the deleted one's tombstone gone).
    let (status, out) = trigger(json!({"syncs": ["issues"], "provider_config_key": "github", "connection_id": "acme", "wait": true, "full_resync": true})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(since_of_last(), None, "full_resync kept the checkpoint");
    assert_eq!(out["runs"][0]["results"]["Issue"]["added"], 0, "{out}");
    let (_, page) = dev.send_as(conn, "GET", "/records?model=Issue", None).await;
    assert!(
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "102" && !r["_nango_metadata"]["deleted_at"].is_null()),
        "{page}"
    );

    // getIntegration reads the environment's integration, its OAuth client
    // included when asked.
    let (status, body) = dev
        .send_as(
            conn,
            "POST",
            "/action/trigger",
            Some(json!({"action_name": "integration-info", "input": {}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unique_key"], "github", "{body}");
    assert_eq!(body["provider"], "github", "{body}");
    assert_eq!(body["credentials"]["client_id"], "the-client", "{body}");
    assert_eq!(body["credentials"]["client_secret"], "the-secret", "{body}");
    // An input its zod model does not allow runs all the same, with a
    // warning in the execution's log (the original's lenient validation).
    let (status, body) = dev
        .send_as(
            conn,
            "POST",
            "/action/trigger",
            Some(json!({"action_name": "integration-info", "input": {"extra": 1}})),
        )
        .await;
    assert_eq!(
        (status, &body["unique_key"]),
        (200, &json!("github")),
        "{body}"
    );
    let (status, logs) = dev
        .send("GET", "/logs?script=integration-info&level=warn", None)
        .await;
    assert_eq!(status, 200, "{logs}");
    assert!(
        logs["logs"].as_array().is_some_and(|l| l.iter().any(|l| {
            l["message"] == "Invalid action input"
                && l.to_string()
                    .contains("/ must NOT have additional properties: 'extra'")
        })),
        "{logs}"
    );
    // The `{}` before it was checked as `{}` (as undefined, it was not an
    // object).
    assert!(!logs.to_string().contains("must be object"), "{logs}");

    // On the server too, a script's stack names its own file and lines.
    let (status, body) = dev
        .send_as(
            conn,
            "POST",
            "/action/trigger",
            Some(json!({"action_name": "code-from-strings", "input": {"fail": true}})),
        )
        .await;
    assert_eq!(status, 500, "{body}");
    let (status, logs) = dev
        .send("GET", "/logs?script=code-from-strings&level=error", None)
        .await;
    assert_eq!(status, 200, "{logs}");
    assert!(
        logs.to_string()
            .contains("fail@github/actions/code-from-strings.ts:7:11"),
        "{logs}"
    );

    // The action named like the sync is deployed beside it.
    let (status, body) = dev
        .send_as(
            conn,
            "POST",
            "/action/trigger",
            Some(json!({"action_name": "issues", "input": {}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"kind": "the issues action", "input": {}}),
        "a zero-yaml script's exec gets an input of {{}} as it is, as the original's (only a nango.yaml script's runAction gets undefined)"
    );
    // A missing input is `null`, as the original's (its JSON round trip).
    let (status, body) = dev
        .send_as(
            conn,
            "POST",
            "/action/trigger",
            Some(json!({"action_name": "issues"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["input"], Value::Null, "{body}");
}

const CONNECTIONS: &str = "connections:\n    - connection_id: demo\n      provider_config_key: github\n      provider: github\n      credentials:\n          type: OAUTH2\n          access_token: demo-token\n      metadata:\n          owner: acme\n          repo: widgets\n";

const MOCK_API: &str = r#"routes:
    - path: /repos/acme/widgets
      require_headers: { authorization: Bearer demo-token }
      body: { id: 7, full_name: acme/widgets, stargazers_count: 3, private: true }
    - path: /repos/acme/widgets/issues
      query: { per_page: "2", state: all }
      headers:
          link: '<https://api.github.com/repositories/7/issues?per_page=2&state=all&page=2>; rel="next"'
      body:
          - { id: 201, number: 1, title: One, state: open, labels: [{ name: bug }], closed_at: null, updated_at: "2026-02-01T00:00:00Z" }
          - { id: 202, number: 2, title: Two, state: closed, labels: [], closed_at: "2026-02-02T00:00:00Z", updated_at: "2026-02-02T00:00:00Z" }
    - path: /repositories/7/issues
      query: { per_page: "2", state: all, page: "2" }
      body:
          - { id: 203, number: 3, title: Three, state: open, labels: [], closed_at: null, updated_at: "2026-02-03T00:00:00Z" }
"#;

#[tokio::test]
async fn dryrun_save_records_a_test_json_that_sluice_test_replays() {
    let tmp = tempfile::tempdir().unwrap();
    copy_zero_project(tmp.path());
    for f in ["get-repo", "issues"] {
        std::fs::remove_file(tmp.path().join(format!("github/tests/{f}.test.json"))).unwrap();
    }
    write(tmp.path(), "connections.yaml", CONNECTIONS);
    write(tmp.path(), "mock-api.yaml", MOCK_API);
    let dryrun = |script: &str, input: Option<&str>| {
        let mut argv = args("dryrun", tmp.path(), "zero-project");
        argv.splice(1..1, [script.to_string(), "demo".to_string()]);
        argv.extend([
            "--mock-upstream".to_string(),
            s(&tmp.path().join("mock-api.yaml")),
            "--save".to_string(),
        ]);
        if let Some(i) = input {
            argv.extend(["--input".to_string(), i.to_string()]);
        }
        argv
    };
    let (code, out, err) = sluice(&dryrun(
        "get-repo",
        Some(r#"{"owner":"acme","repo":"widgets"}"#),
    ))
    .await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    assert!(
        out.contains("Saved the run as a test recording in"),
        "{out}"
    );
    // `--save-responses` is the same option in a zero-yaml project, as in
    // the original's current CLI (it wrote the nango.yaml era's `mocks/`,
    // which no zero-yaml test reads).
    let mut argv = dryrun("issues", None);
    for a in argv.iter_mut().filter(|a| *a == "--save") {
        *a = "--save-responses".into();
    }
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    assert!(!tmp.path().join("github/mocks").exists());

    let recorded: Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("github/tests/get-repo.test.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        recorded["input"],
        json!({"owner": "acme", "repo": "widgets"})
    );
    assert_eq!(
        recorded["output"],
        json!({"id": 7, "fullName": "acme/widgets", "stars": 3, "private": true, "topics": []})
    );
    let recorded: Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("github/tests/issues.test.json")).unwrap(),
    )
    .unwrap();
    let saved = recorded["nango"]["batchSave"]["Issue"].as_array().unwrap();
    assert_eq!(saved.len(), 3, "{recorded}");
    assert_eq!(
        recorded["nango"]["getMetadata"],
        json!({"owner": "acme", "repo": "widgets"})
    );

    // A run that fails saves nothing: the good recording stays (a failed
    // run's recording replaced it, and its test then failed).
    let good = std::fs::read(tmp.path().join("github/tests/get-repo.test.json")).unwrap();
    let (code, out, _) = sluice(&dryrun(
        "get-repo",
        Some(r#"{"owner":"","repo":"widgets"}"#),
    ))
    .await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Nothing was saved: the run failed"), "{out}");
    assert_eq!(
        std::fs::read(tmp.path().join("github/tests/get-repo.test.json")).unwrap(),
        good
    );

    // `--checkpoint` is what the sync's getCheckpoint finds: it asks for
    // the issues updated since then.
    let mut argv = args("dryrun", tmp.path(), "zero-project");
    argv.splice(1..1, ["issues".to_string(), "demo".to_string()]);
    argv.extend([
        "--mock-upstream".to_string(),
        s(&tmp.path().join("mock-api.yaml")),
        "--json".to_string(),
        "--checkpoint".to_string(),
        r#"{"since":"2026-01-15T00:00:00Z"}"#.to_string(),
    ]);
    let (_, out, err) = sluice(&argv).await;
    assert!(
        out.contains("since=2026-01-15T00%3A00%3A00Z"),
        "out: {out}\nerr: {err}"
    );

    // The recordings replay: both tests pass, with no network.
    let (code, out, err) = sluice(&args("test", tmp.path(), "zero-project")).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    assert!(out.ends_with("2 passed, 0 failed\n"), "{out}");

    // Each entry keeps the hash of its request, as the original's recorder
    // writes it, and the harness matches by that hash first: with every
    // recorded request changed so that it no longer matches, the tests
    // still pass; with the hashes changed too, they fail.
    let files =
        ["get-repo", "issues"].map(|f| tmp.path().join(format!("github/tests/{f}.test.json")));
    let originals = files
        .each_ref()
        .map(|f| std::fs::read_to_string(f).unwrap());
    let tamper = |hashes_too: bool| {
        for (file, text) in files.iter().zip(&originals) {
            let mut recorded: Value = serde_json::from_str(text).unwrap();
            let mut entries = 0;
            for by_endpoint in recorded["api"].as_object_mut().unwrap().values_mut() {
                for entry in by_endpoint.as_object_mut().unwrap().values_mut() {
                    let list = match entry {
                        Value::Array(list) => list.iter_mut().collect::<Vec<_>>(),
                        one => vec![one],
                    };
                    for e in list {
                        let hash = e["hash"].as_str().unwrap();
                        assert_eq!(hash.len(), 40, "{e}");
                        e["request"]["params"]["not-sent"] = json!("1");
                        if hashes_too {
                            e["hash"] = json!("0".repeat(40));
                        }
                        entries += 1;
                    }
                }
            }
            assert!(entries > 0, "{recorded}");
            std::fs::write(file, recorded.to_string()).unwrap();
        }
    };
    tamper(false);
    let (code, out, err) = sluice(&args("test", tmp.path(), "zero-project")).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    assert!(out.ends_with("2 passed, 0 failed\n"), "{out}");
    tamper(true);
    let (code, out, err) = sluice(&args("test", tmp.path(), "zero-project")).await;
    assert_eq!(code, 1, "out: {out}\nerr: {err}");
    assert!(out.ends_with("0 passed, 2 failed\n"), "{out}");
    assert!(out.contains("No mock found for GET"), "{out}");
    for (file, text) in files.iter().zip(&originals) {
        std::fs::write(file, text).unwrap();
    }

    // Without test files, nothing runs the recordings: `sluice test` fails
    // (as vitest does when it finds no test), and `--save` then writes the
    // test file of the generated shape that replays each, once.
    let tests = tmp.path().join("github/tests");
    for entry in std::fs::read_dir(&tests).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".test.ts") {
            std::fs::remove_file(path).unwrap();
        }
    }
    // Tests written by hand run as written, compiled in with their script:
    // vitest's describe/it and hooks, vi.fn and spies on the mock's
    // members, the fixture read with `fs`, and matchers; a changed
    // expectation fails, naming the test and what differs. One that mocks
    // modules (vi.mock) is said and not run, and counts as a test all the
    // same.
    let hand = tests.join("github-by-hand.test.ts");
    let by_hand = "import { expect, it, describe, vi, beforeEach, afterEach } from 'vitest';\nimport { readFileSync } from 'node:fs';\nimport { resolve } from 'node:path';\nimport createAction from '../actions/get-repo.js';\n\ndescribe('get-repo by hand', () => {\n    let nangoMock: any;\n    beforeEach(() => {\n        nangoMock = new global.vitest.NangoActionMock({ dirname: __dirname, name: 'get-repo', Model: 'Repo' });\n    });\n    afterEach(() => vi.restoreAllMocks());\n\n    it('maps the recording', async () => {\n        const recording = JSON.parse(readFileSync(resolve(__dirname, 'get-repo.test.json'), 'utf-8'));\n        const repo = await createAction.exec(nangoMock, recording.input);\n        expect(nangoMock.get).toHaveBeenCalledTimes(1);\n        expect(repo).toMatchObject({ fullName: expect.stringContaining('/') });\n        expect(repo).toEqual(recording.output);\n    });\n\n    it('says a missing repository', async () => {\n        nangoMock.get.mockResolvedValueOnce({ status: 404, data: {} });\n        await expect(createAction.exec(nangoMock, { owner: 'a', repo: 'b' })).rejects.toThrow('Repository not found');\n    });\n});\n\ndescribe.each([\n    { owner: 'acme', full: 'acme/widgets' },\n    { owner: 'globex', full: 'globex/widgets' }\n])('names of $owner', ({ owner, full }) => {\n    it.each([\n        [1, 2, 3],\n        [2, 3, 5]\n    ])('adds %i + %i = %i (case %#)', (a, b, sum) => {\n        expect(a + b).toBe(sum);\n    });\n    it.for([['widgets', 1]])('joins %s', ([repo, n]) => {\n        expect(`${owner}/${repo}`).toBe(full);\n        expect(n).toBe(1);\n    });\n});\n\nit.each`\n    a    | b    | sum\n    ${1} | ${1} | ${2}\n    ${2} | ${2} | ${4}\n`('table $a + $b', ({ a, b, sum }) => {\n    expect(a + b).toBe(sum);\n});\n\nlet attempts = 0;\nit('passes on its third try', { retry: 2 }, () => {\n    attempts += 1;\n    expect(attempts).toBe(3);\n});\nit('fails as it says', { fails: true }, () => {\n    expect(1).toBe(2);\n});\nit('is skipped by its options', { skip: true }, () => {\n    throw new Error('ran');\n});\nit.for([[1]])('gets its context %s', ([n], ctx) => {\n    ctx.expect(n).toBe(1);\n});\nlet cleaned = false;\nit('cleans up when it finishes', ({ onTestFinished }) => {\n    onTestFinished(() => {\n        cleaned = true;\n    });\n});\nit('was cleaned up', () => {\n    expect(cleaned).toBe(true);\n});\n\nit('advances fake timers', async () => {\n    vi.useFakeTimers({ now: new Date('2024-01-01T00:00:00Z') });\n    const seen: string[] = [];\n    setTimeout(() => seen.push('now'), 0);\n    vi.advanceTimersByTime(0);\n    expect(seen.splice(0)).toEqual(['now']);\n    setTimeout(() => seen.push('once'), 1000);\n    const every = setInterval(() => seen.push(`tick ${new Date().toISOString()}`), 400);\n    vi.advanceTimersByTime(900);\n    expect(seen).toEqual(['tick 2024-01-01T00:00:00.400Z', 'tick 2024-01-01T00:00:00.800Z']);\n    expect(Date.now()).toBe(Date.parse('2024-01-01T00:00:00.900Z'));\n    vi.advanceTimersByTime(100);\n    expect(seen.at(-1)).toBe('once');\n    clearInterval(every);\n    expect(vi.getTimerCount()).toBe(0);\n    const later = (async () => {\n        await new Promise((r) => setTimeout(r, 60_000));\n        return new Promise((r) => setTimeout(() => r(Date.now()), 60_000));\n    })();\n    await vi.advanceTimersByTimeAsync(120_000);\n    await expect(later).resolves.toBe(Date.parse('2024-01-01T00:02:01Z'));\n    let loops = 0;\n    const loop = async () => {\n        loops += 1;\n        await Promise.resolve();\n        setTimeout(loop, 0);\n    };\n    setTimeout(loop, 0);\n    await vi.advanceTimersByTimeAsync(10);\n    expect(loops).toBe(11);\n    vi.clearAllTimers();\n    setInterval(() => undefined, 10);\n    expect(() => vi.runAllTimers()).toThrow('Aborting after running 10000 timers');\n    vi.useRealTimers();\n});\n";
    std::fs::write(&hand, by_hand).unwrap();
    std::fs::write(
        tests.join("github-changed.test.ts"),
        by_hand
            .replace("toHaveBeenCalledTimes(1)", "toHaveBeenCalledTimes(2)")
            .replace("'Repository not found'", "'Gone'")
            .replace("[2, 3, 5]", "[2, 3, 6]")
            .replace("expect(1).toBe(2)", "expect(1).toBe(1)")
            .replace(
                "'tick 2024-01-01T00:00:00.800Z'",
                "'tick 2024-01-01T00:00:00.700Z'",
            ),
    )
    .unwrap();
    std::fs::write(
        tests.join("github-mocked.test.ts"),
        "import { expect, it, vi } from 'vitest';\nimport createAction from '../actions/get-repo.js';\nvi.mock('../helpers/mappers.js');\n\nit('mocks a module', () => {\n    expect(createAction).toBeDefined();\n});\n",
    )
    .unwrap();
    // A package sluice stands in for (soap needs Node's network) can be
    // mocked as in vitest: the script sees the factory's members.
    std::fs::write(
        tmp.path().join("github/actions/legacy-soap.ts"),
        "import soap from 'soap';\nimport { z } from 'zod';\nimport { createAction } from 'nango';\n\nexport default createAction({\n    description: 'Asks a SOAP service',\n    version: '1.0.0',\n    input: z.object({}),\n    output: z.object({ answer: z.string() }),\n    exec: async () => {\n        const client = await soap.createClientAsync('https://example.com/service?wsdl');\n        const [r] = await client.AskAsync({});\n        return { answer: r.answer };\n    }\n});\n",
    )
    .unwrap();
    std::fs::write(
        tests.join("github-legacy-soap.test.ts"),
        "import { expect, it, vi } from 'vitest';\nimport createAction from '../actions/legacy-soap.js';\n\nvi.mock('soap', () => ({\n    default: { createClientAsync: vi.fn().mockResolvedValue({ AskAsync: vi.fn().mockResolvedValue([{ answer: '42' }]) }) }\n}));\n\nit('answers from the mocked client', async () => {\n    const nangoMock = new global.vitest.NangoActionMock({ dirname: __dirname, name: 'legacy-soap', Model: 'Answer' });\n    expect(await createAction.exec(nangoMock, {})).toEqual({ answer: '42' });\n});\n",
    )
    .unwrap();
    let (code, out, err) = sluice(&args("test", tmp.path(), "zero-project")).await;
    assert_eq!(code, 1, "out: {out}\nerr: {err}");
    assert!(
        out.contains("✓ github/github-by-hand (action, hand-written, "),
        "{out}"
    );
    assert!(
        out.contains("✓ github/github-legacy-soap (action, hand-written, "),
        "{out}"
    );
    assert!(
        out.contains("✗ github/github-changed (action, hand-written): get-repo by hand > maps the recording: AssertionError: expected vi.fn() to have been called 2 times, it was called 1 times; get-repo by hand > says a missing repository: AssertionError: expected the error \"Repository not found\" to match \"Gone\"; names of 'acme' > adds 2 + 3 = 6 (case 1): AssertionError: expected 5 to be 6; names of 'globex' > adds 2 + 3 = 6 (case 1): AssertionError: expected 5 to be 6; fails as it says: AssertionError: expect test to fail; advances fake timers: AssertionError: "),
        "{out}"
    );
    assert!(
        out.contains("- github/github-mocked (hand-written test: not run: it uses vi.mock of a module other than the packages sluice stands in for (soap, botbuilder, unzipper), which sluice test does not have)"),
        "{out}"
    );
    assert!(
        out.ends_with("2 passed, 1 failed (hand-written: 2 passed, 1 failed; 1 hand-written test files not run)\n"),
        "{out}"
    );
    for f in ["github-changed", "github-mocked", "github-legacy-soap"] {
        std::fs::remove_file(tests.join(format!("{f}.test.ts"))).unwrap();
    }
    std::fs::remove_file(tmp.path().join("github/actions/legacy-soap.ts")).unwrap();
    let (code, out, err) = sluice(&args("test", tmp.path(), "zero-project")).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    assert!(
        out.ends_with("1 passed, 0 failed (hand-written: 1 passed, 0 failed)\n"),
        "{out}"
    );
    std::fs::remove_file(&hand).unwrap();
    let (code, out, err) = sluice(&args("test", tmp.path(), "zero-project")).await;
    assert_eq!(code, 1, "out: {out}\nerr: {err}");
    assert!(out.contains("a recording no tests/*.test.ts runs"), "{out}");
    assert!(err.contains("no recorded tests were found"), "{err}");
    for (script, input) in [
        ("get-repo", Some(r#"{"owner":"acme","repo":"widgets"}"#)),
        ("issues", None),
    ] {
        let (code, out, err) = sluice(&dryrun(script, input)).await;
        assert_eq!(code, 0, "out: {out}\nerr: {err}");
        assert!(
            out.contains(&format!(
                "github-{script}.test.ts, the test that replays it"
            )),
            "{out}"
        );
        let (code, out, err) = sluice(&dryrun(script, input)).await;
        assert_eq!(code, 0, "out: {out}\nerr: {err}");
        assert!(
            !out.contains("the test that replays it"),
            "written twice: {out}"
        );
    }
    let (code, out, err) = sluice(&args("test", tmp.path(), "zero-project")).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    assert!(out.ends_with("2 passed, 0 failed\n"), "{out}");
    // And each fails when what it replays changes.
    let path = tests.join("get-repo.test.json");
    let mut recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    recorded["output"]["stars"] = json!(4);
    std::fs::write(&path, recorded.to_string()).unwrap();
    let (code, out, err) = sluice(&args("test", tmp.path(), "zero-project")).await;
    assert_eq!(code, 1, "out: {out}\nerr: {err}");
    assert!(out.ends_with("1 passed, 1 failed\n"), "{out}");
}

#[tokio::test]
async fn zero_yaml_scripts_are_refused_fetch_and_bad_input_with_the_originals_error() {
    let tmp = tempfile::tempdir().unwrap();
    copy_zero_project(tmp.path());
    write(tmp.path(), "connections.yaml", CONNECTIONS);
    write(tmp.path(), "mock-api.yaml", MOCK_API);
    // zodValidateInput rejects an empty owner as the original does.
    let mut argv = args("dryrun", tmp.path(), "zero-project");
    argv.splice(1..1, ["get-repo".to_string(), "demo".to_string()]);
    argv.extend([
        "--mock-upstream".to_string(),
        s(&tmp.path().join("mock-api.yaml")),
        "--json".to_string(),
        "--input".to_string(),
        r#"{"owner":"","repo":"widgets"}"#.to_string(),
    ]);
    let (code, out, err) = sluice(&argv).await;
    assert_ne!(code, 0, "out: {out}\nerr: {err}");
    let result: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        result["error"]["type"], "action_script_runtime_error",
        "{result}"
    );
    assert_eq!(
        result["error"]["payload"],
        json!({"message": "Invalid input provided"}),
        "{result}"
    );
    let logs = result["logs"].to_string();
    assert!(
        logs.contains("Invalid input provided: ") && logs.contains("at path owner"),
        "{logs}"
    );
    // Before the script runs, its input is checked against the JSON schema
    // of its zod model (a warning, as the original's).
    assert!(
        logs.contains("Invalid action input")
            && logs.contains("/owner must NOT have fewer than 1 characters")
            && logs.contains("ActionInput_github_getrepo"),
        "{logs}"
    );
    // With --validation, the run stops there with the original's code.
    let mut argv = args("dryrun", tmp.path(), "zero-project");
    argv.splice(1..1, ["get-repo".to_string(), "demo".to_string()]);
    argv.extend([
        "--mock-upstream".to_string(),
        s(&tmp.path().join("mock-api.yaml")),
        "--json".to_string(),
        "--validation".to_string(),
        "--input".to_string(),
        r#"{"owner":7,"repo":"widgets"}"#.to_string(),
    ]);
    let (code, out, err) = sluice(&argv).await;
    assert_ne!(code, 0, "out: {out}\nerr: {err}");
    let result: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(result["error"]["type"], "invalid_action_input", "{result}");
    assert!(
        result["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/owner must be string")),
        "{result}"
    );
    assert!(
        !result["logs"]
            .to_string()
            .contains("Invalid input provided"),
        "the script ran: {result}"
    );

    // Code from strings is refused with V8's error; zod parses without it.
    let mut argv = args("dryrun", tmp.path(), "zero-project");
    argv.splice(1..1, ["code-from-strings".to_string(), "demo".to_string()]);
    argv.push("--json".to_string());
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    let result: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let refused = "EvalError: Code generation from strings disallowed for this context";
    assert_eq!(
        result["output"],
        json!({"eval": refused, "Function": refused, "constructor": refused, "async": refused,
            "instanceof": "ran: true", "zod": "ran: {\"n\":1}"}),
        "{result}"
    );

    // A script's stack names its own file and lines, not the bundle's.
    let mut argv = args("dryrun", tmp.path(), "zero-project");
    argv.splice(1..1, ["code-from-strings".to_string(), "demo".to_string()]);
    argv.extend([
        "--json".to_string(),
        "--input".to_string(),
        r#"{"fail":true}"#.to_string(),
    ]);
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 1, "out: {out}\nerr: {err}");
    let result: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let logs = result["logs"].to_string();
    assert!(
        logs.contains("fail@github/actions/code-from-strings.ts:7:11")
            && logs.contains("exec@github/actions/code-from-strings.ts:18:"),
        "{logs}"
    );
    // The same with the folders named relative to the working directory
    // (as `sluice init` suggests): the lines are still the script's, and
    // the bundle is the same (not componentized again).
    let cwd = std::env::current_dir().unwrap();
    let relative = |to: &Path| {
        let common = cwd
            .ancestors()
            .find(|a| to.starts_with(a))
            .expect("a common ancestor");
        let ups = cwd.strip_prefix(common).unwrap().components().count();
        let mut rel = PathBuf::new();
        for _ in 0..ups {
            rel.push("..");
        }
        rel.join(to.strip_prefix(common).unwrap())
    };
    let mut argv = vec![
        "dryrun".to_string(),
        "code-from-strings".to_string(),
        "demo".to_string(),
        "--dir".to_string(),
        s(&relative(tmp.path())),
        "--sdk".to_string(),
        s(&ts_sdk()),
        "--cache-dir".to_string(),
        guests::CACHE_DIR.to_string(),
        "--build-dir".to_string(),
        s(&relative(
            &Path::new(guests::BUILD_DIR).join("zero-project"),
        )),
    ];
    argv.extend([
        "--json".to_string(),
        "--input".to_string(),
        r#"{"fail":true}"#.to_string(),
    ]);
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 1, "out: {out}\nerr: {err}");
    assert!(!err.contains("componentize-js"), "built again: {err}");
    let result: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let logs = result["logs"].to_string();
    assert!(
        logs.contains("exec@github/actions/code-from-strings.ts:18:"),
        "{logs}"
    );

    // `fetch` is refused with a message naming what to use.
    let mut argv = args("dryrun", tmp.path(), "zero-project");
    argv.splice(1..1, ["fetch-url".to_string(), "demo".to_string()]);
    argv.extend([
        "--json".to_string(),
        "--input".to_string(),
        r#"{"url":"https://example.com/"}"#.to_string(),
    ]);
    let (code, out, err) = sluice(&argv).await;
    assert_ne!(code, 0, "out: {out}\nerr: {err}");
    let result: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(result["error"]["type"], "script_internal_error", "{result}");
    assert!(
        result["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(
                "fetch is not available to scripts: use nango.get / nango.post / nango.proxy"
            )),
        "{result}"
    );
}

#[tokio::test]
async fn init_creates_a_zero_yaml_starter_that_passes_its_tests_and_dry_runs() {
    // A fixed folder made anew each run, built beside it, so the build of
    // the (unchanged) starter is reused between runs.
    let dir = PathBuf::from(guests::BUILD_DIR).join("init-zero-project");
    let _ = std::fs::remove_dir_all(&dir);
    // The original's `init --copy` and global flags, as a CI line has them.
    let (code, out, err) = sluice(&[
        "init".to_string(),
        s(&dir),
        "--copy".to_string(),
        "--no-interactive".to_string(),
    ])
    .await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    assert!(out.contains("index.ts"), "{out}");
    assert!(!dir.join("nango.yaml").exists());
    // As the original's init: a `.env` naming what the CLI reads (all
    // commented out), kept out of git.
    let env = std::fs::read_to_string(dir.join(".env")).unwrap();
    assert!(env.contains("#NANGO_SECRET_KEY_DEV="), "{env}");
    assert!(
        std::fs::read_to_string(dir.join(".gitignore"))
            .unwrap()
            .lines()
            .any(|l| l == ".env")
    );
    // What `npm install && npm run typecheck` needs: the original's
    // package for its types, zod 4, and strict settings.
    let package: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("package.json")).unwrap()).unwrap();
    for dependency in ["nango", "zod", "typescript"] {
        assert!(
            package["devDependencies"][dependency].is_string(),
            "{package}"
        );
    }
    let tsconfig: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tsconfig.json")).unwrap()).unwrap();
    assert_eq!(tsconfig["compilerOptions"]["strict"], true, "{tsconfig}");
    let (code, _, err) = sluice(&["init".to_string(), s(&dir)]).await;
    assert_eq!(code, 2, "init refuses an existing folder");
    assert!(
        err.contains("already has a nango.yaml or an index.ts"),
        "{err}"
    );
    // A folder with the user's own files: refused, naming them, and left
    // as it was (a `.gitignore` or `connections.yaml` was overwritten).
    let mine = tempfile::tempdir().unwrap();
    std::fs::write(mine.path().join(".gitignore"), "my own\n").unwrap();
    std::fs::create_dir_all(mine.path().join(".nango")).unwrap();
    let (code, _, err) = sluice(&["init".to_string(), s(mine.path())]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(".gitignore") && err.contains(".nango"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(mine.path().join(".gitignore")).unwrap(),
        "my own\n"
    );
    assert!(!mine.path().join("index.ts").exists());
    // A file where the starter needs a folder: refused before anything is
    // written (it stopped halfway, and init then refused the folder).
    let blocked = tempfile::tempdir().unwrap();
    std::fs::write(blocked.path().join("github"), "").unwrap();
    let (code, _, err) = sluice(&["init".to_string(), s(blocked.path())]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("github is a file where sluice init needs a folder"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(blocked.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    let file = tempfile::NamedTempFile::new().unwrap();
    let (code, _, err) = sluice(&["init".to_string(), s(file.path())]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("is a file where sluice init needs a folder"),
        "{err}"
    );

    // `generate:tests`, as the original's: the test files of the starter's
    // two recordings, written again as the starter has them.
    let tests = dir.join("github/tests");
    let starter: Vec<(PathBuf, String)> = ["github-get-repo.test.ts", "github-issues.test.ts"]
        .iter()
        .map(|f| {
            (
                tests.join(f),
                std::fs::read_to_string(tests.join(f)).unwrap(),
            )
        })
        .collect();
    for (path, _) in &starter {
        std::fs::remove_file(path).unwrap();
    }
    let (code, out, err) = sluice(&args("generate:tests", &dir, "init-zero-project-build")).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    assert!(out.contains("Generated 2 test file(s):"), "{out}");
    for (path, text) in &starter {
        assert_eq!(
            &std::fs::read_to_string(path).unwrap(),
            text,
            "{}",
            path.display()
        );
    }
    let mut only = args("generate:tests", &dir, "init-zero-project-build");
    only.extend(["-a".to_string(), "get-repo".to_string()]);
    let (code, out, err) = sluice(&only).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    assert!(out.contains("Generated 1 test file(s):"), "{out}");
    assert!(out.contains("github-get-repo.test.ts"), "{out}");
    let mut unknown = args("generate:tests", &dir, "init-zero-project-build");
    unknown.extend(["-a".to_string(), "nope".to_string()]);
    let (code, _, err) = sluice(&unknown).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Action \"nope\" not found"), "{err}");

    let (code, out, err) = sluice(&args("test", &dir, "init-zero-project-build")).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    assert!(out.ends_with("2 passed, 0 failed\n"), "{out}");
    assert!(!out.contains("a recording no"), "{out}");
    // A recording no test file runs (as `dryrun --save` leaves one for a
    // script without a test) is named, not silently skipped.
    std::fs::copy(
        dir.join("github/tests/issues.test.json"),
        dir.join("github/tests/orphan.test.json"),
    )
    .unwrap();
    let (code, out, err) = sluice(&args("test", &dir, "init-zero-project-build")).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    assert!(
        out.contains("- github/tests/orphan.test.json (a recording no tests/*.test.ts runs"),
        "{out}"
    );
    std::fs::remove_file(dir.join("github/tests/orphan.test.json")).unwrap();

    let mut argv = args("dryrun", &dir, "init-zero-project-build");
    argv.splice(1..1, ["issues".to_string(), "demo".to_string()]);
    argv.extend(["--mock-upstream".to_string(), s(&dir.join("mock-api.yaml"))]);
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    for title in ["First", "Second", "Third"] {
        assert!(out.contains(title), "{title} missing from {out}");
    }
}

/// `sluice create`, as the original's `nango create`: each kind's scaffold
/// and its import in index.ts; the project then compiles and the scripts
/// run as written.
#[tokio::test]
async fn create_adds_scripts_that_compile_and_run_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), ".nango/.gitkeep", "");
    write(tmp.path(), "index.ts", "// the project's scripts");
    let create = |kind: &str, name: &str| {
        vec![
            "create".to_string(),
            kind.to_string(),
            "acme".to_string(),
            name.to_string(),
            "--dir".to_string(),
            s(tmp.path()),
        ]
    };
    for (kind, name, file) in [
        ("--sync", "calendar-events", "acme/syncs/calendar-events.ts"),
        ("--action", "create-event", "acme/actions/create-event.ts"),
        ("--on-event", "welcome", "acme/on-events/welcome.ts"),
        // A one-letter name still makes a model name zod-to-JSON takes.
        ("--sync", "x", "acme/syncs/x.ts"),
    ] {
        let (code, out, err) = sluice(&create(kind, name)).await;
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(file), "{out}");
    }
    let index = std::fs::read_to_string(tmp.path().join("index.ts")).unwrap();
    assert_eq!(
        index,
        "// the project's scripts\nimport './acme/syncs/calendar-events.js';\nimport './acme/actions/create-event.js';\nimport './acme/on-events/welcome.js';\nimport './acme/syncs/x.js';\n"
    );
    // An existing script is never replaced; a name is a file name.
    let (code, _, err) = sluice(&create("--action", "create-event")).await;
    assert_eq!(code, 2);
    assert!(err.contains("File already exists"), "{err}");
    for bad in ["../up", "__"] {
        let (code, _, err) = sluice(&create("--action", bad)).await;
        assert_eq!(code, 2);
        assert!(
            err.contains(&format!("`{bad}` may hold only letters")),
            "{err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("index.ts")).unwrap(),
        index
    );

    let (code, out, err) = sluice(&args("compile", tmp.path(), "zero-create")).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    let nango: Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join(".nango/nango.json")).unwrap(),
    )
    .unwrap();
    let output_of = |name: &str| {
        nango[0]["syncs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["output"].clone())
    };
    assert_eq!(
        output_of("calendar-events"),
        Some(json!(["CalendarEvents"])),
        "{nango}"
    );
    assert_eq!(output_of("x"), Some(json!(["XRecord"])), "{nango}");
    assert_eq!(nango[0]["actions"][0]["name"], "create-event", "{nango}");
    assert_eq!(
        nango[0]["onEventScripts"]["post-connection-creation"],
        json!(["welcome"]),
        "{nango}"
    );
    write(
        tmp.path(),
        "connections.yaml",
        "connections:\n  - connection_id: demo\n    provider_config_key: acme\n    provider: github\n    credentials: { type: OAUTH2, access_token: x }\n",
    );
    let mut dryrun = args("dryrun", tmp.path(), "zero-create");
    dryrun.splice(1..1, ["create-event".to_string(), "demo".to_string()]);
    dryrun.extend([
        "--input".to_string(),
        "{}".to_string(),
        "--json".to_string(),
    ]);
    let (code, out, err) = sluice(&dryrun).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["output"], json!({"ok": true}), "{result}");

    // A nango.yaml project declares its scripts in nango.yaml.
    let yaml = tempfile::tempdir().unwrap();
    write(yaml.path(), "nango.yaml", "integrations: {}\n");
    let (code, _, err) = sluice(&[
        "create".to_string(),
        "--sync".to_string(),
        "acme".to_string(),
        "x".to_string(),
        "--dir".to_string(),
        s(yaml.path()),
    ])
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("is not a zero-yaml project"), "{err}");
}

#[tokio::test]
async fn migrate_to_zero_yaml_converts_the_yaml_example_which_then_compiles_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    copy_dir(&repo_root().join("examples").join("github-ts"), dir);
    let _ = std::fs::remove_dir_all(dir.join(".sluice"));
    let sync_file = dir.join("demo-github-integration/syncs/github-issue-example.ts");

    // A script that cannot be converted stops the migration before any
    // file is written.
    let original = std::fs::read_to_string(&sync_file).unwrap();
    std::fs::write(
        &sync_file,
        original.replace(
            "export default async function fetchData(nango: NangoSync): Promise<void> {",
            "const fetchData = async function (nango: NangoSync): Promise<void> {",
        ) + "export default fetchData;\n",
    )
    .unwrap();
    let broken = std::fs::read_to_string(&sync_file).unwrap();
    let (code, out, err) = sluice(&args("migrate-to-zero-yaml", dir, "migrated-github")).await;
    assert_ne!(code, 0, "out: {out}\nerr: {err}");
    assert!(
        err.contains("demo-github-integration/syncs/github-issue-example.ts")
            && err.contains("the default export must be a function declaration")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(dir.join("nango.yaml").exists());
    assert!(!dir.join("index.ts").exists());
    assert_eq!(std::fs::read_to_string(&sync_file).unwrap(), broken);

    std::fs::write(&sync_file, &original).unwrap();
    // So does a nango.yaml the zero-yaml format refuses (an incremental
    // sync that tracks deletes: the migrated folder would not compile).
    let yaml = std::fs::read_to_string(dir.join("nango.yaml")).unwrap();
    let refused = yaml.replacen(
        "                sync_type: incremental\n",
        "                sync_type: incremental\n                track_deletes: true\n",
        1,
    );
    assert_ne!(refused, yaml);
    std::fs::write(dir.join("nango.yaml"), &refused).unwrap();
    let (code, out, err) = sluice(&args("migrate-to-zero-yaml", dir, "migrated-github")).await;
    assert_ne!(code, 0, "out: {out}\nerr: {err}");
    assert!(
        err.contains(
            "syncs > github-issue-example: track_deletes is not supported for incremental syncs"
        ) && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("nango.yaml")).unwrap(),
        refused
    );
    assert!(!dir.join("index.ts").exists());
    std::fs::write(dir.join("nango.yaml"), &yaml).unwrap();

    // The sync's run recorded as mocks, as a nango.yaml project's tests are.
    let mut record = args("dryrun", dir, "migrated-github");
    record.splice(
        1..1,
        ["github-issue-example".to_string(), "demo".to_string()],
    );
    record.extend([
        "--mock-upstream".to_string(),
        s(&dir.join("mock-api.yaml")),
        "--save-responses".to_string(),
    ]);
    let (code, out, err) = sluice(&record).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    let (code, out, err) = sluice(&args("migrate-to-zero-yaml", dir, "migrated-github")).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    assert!(out.contains("Migrated 2 scripts"), "{out}");
    // The recorded sync keeps its test: a test file is written for it,
    // and its mocks replay.
    assert!(out.contains("Wrote 1 test file"), "{out}");
    let (code, tested, err) = sluice(&args("test", dir, "migrated-github")).await;
    assert_eq!(code, 0, "out: {tested}\nerr: {err}");
    assert!(tested.ends_with("1 passed, 0 failed\n"), "{tested}");
    assert!(out.contains(".nango/nango.json written"), "{out}");
    assert!(!dir.join("nango.yaml").exists(), "nango.yaml is deleted");
    let index = std::fs::read_to_string(dir.join("index.ts")).unwrap();
    assert!(
        index.contains("import './demo-github-integration/syncs/github-issue-example.js';")
            && index.contains("import './demo-github-integration/actions/create-issue.js';"),
        "{index}"
    );
    let models = std::fs::read_to_string(dir.join("models.ts")).unwrap();
    assert!(
        models.contains("export const CreateIssueInput = z.object({")
            && models.contains("    body: z.string().optional(),")
            && models.contains("    created_at: z.date(),"),
        "{models}"
    );
    let sync = std::fs::read_to_string(&sync_file).unwrap();
    assert!(
        sync.starts_with("import { createSync } from 'nango';")
            && sync.contains("frequency: \"every half hour\"")
            && sync.contains("exec: async (nango) => {")
            && sync.contains("await nango.batchSave(issues, 'GithubIssue');")
            && sync.contains("// definition; `limit` sets the page size."),
        "{sync}"
    );

    // The definitions the compile read back match nango.yaml's.
    let nango: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".nango/nango.json")).unwrap())
            .unwrap();
    let integration = &nango[0];
    assert_eq!(integration["providerConfigKey"], "demo-github-integration");
    let synced = &integration["syncs"][0];
    assert_eq!(synced["name"], "github-issue-example");
    assert_eq!(synced["runs"], "every half hour");
    assert_eq!(synced["sync_type"], "incremental");
    assert_eq!(
        synced["endpoints"],
        json!([{"method": "GET", "path": "/github/issues"}])
    );
    assert_eq!(integration["actions"][0]["name"], "create-issue");

    // The migrated sync runs as before against the example's mock API.
    let mut argv = args("dryrun", dir, "migrated-github");
    argv.splice(
        1..1,
        ["github-issue-example".to_string(), "demo".to_string()],
    );
    argv.extend(["--mock-upstream".to_string(), s(&dir.join("mock-api.yaml"))]);
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    for title in ["Found a bug", "Add a README", "Crash on start"] {
        assert!(out.contains(title), "{title} missing from {out}");
    }
    assert!(
        !out.contains("Fix the crash"),
        "pull requests are skipped: {out}"
    );

    // A migrated folder is not migrated twice.
    let (code, _, err) = sluice(&args("migrate-to-zero-yaml", dir, "migrated-github")).await;
    assert_ne!(code, 0);
    assert!(err.contains("has no nango.yaml"), "{err}");
}

#[test]
fn migrate_moves_webhook_handlers_event_scripts_and_helper_type_imports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "nango.yaml",
        "integrations:\n    crm:\n        syncs:\n            contacts:\n                runs: every day\n                output: Contact\n                endpoint: GET /contacts\n                sync_type: full\n                track_deletes: true\n                webhook-subscriptions: [contact.updated]\n                input: Filter\n        on-events:\n            post-connection-creation: [setup]\nmodels:\n    Filter:\n        since: date\n    Contact:\n        id: string\n        tags: string[]\n        owner: Owner | null\n        __string: any\n    Owner:\n        id: string\n",
    );
    write(
        dir,
        "crm/syncs/contacts.ts",
        "import type { NangoSync, Contact, ProxyConfiguration } from '../../models';\nimport { page } from '../helpers/page.js';\n\n// Pages through the contacts.\nexport default async function fetchData(nango: NangoSync): Promise<void> {\n    const config: ProxyConfiguration = { endpoint: '/contacts' };\n    await nango.batchSave<Contact>(await page(nango, config), 'Contact');\n}\n\nexport async function onWebhookPayloadReceived(nango: NangoSync, payload: any): Promise<void> {\n    await nango.batchSave<Contact>([payload.contact], 'Contact');\n}\n",
    );
    write(
        dir,
        "crm/on-events/setup.ts",
        "import type { NangoAction } from '../../models';\n\nexport default async function onEvent(nango: NangoAction): Promise<void> {\n    await nango.log('connected');\n}\n",
    );
    write(
        dir,
        "crm/helpers/page.ts",
        "import type { NangoSync, Contact, ProxyConfiguration } from '../../models';\n\nexport async function page(nango: NangoSync, config: ProxyConfiguration): Promise<Contact[]> {\n    return (await nango.get(config)).data;\n}\n",
    );
    let toolchain = sluice_project::toolchain::Toolchain::locate(
        Some(&ts_sdk()),
        Path::new(guests::CACHE_DIR),
        &mut std::io::sink(),
    )
    .unwrap();
    let migrated = sluice_project::migrate::migrate(dir, &toolchain, &mut std::io::sink()).unwrap();
    assert_eq!((migrated.scripts, migrated.helpers), (2, 1));

    let sync = std::fs::read_to_string(dir.join("crm/syncs/contacts.ts")).unwrap();
    for expected in [
        "import { createSync } from 'nango';\n",
        "import type { ProxyConfiguration } from 'nango';",
        "import { Contact, Filter } from '../../models.js';",
        "// Pages through the contacts.\nconst sync = createSync({",
        "syncType: \"full\"",
        "trackDeletes: true",
        "webhookSubscriptions: [\"contact.updated\"]",
        "models: { Contact: Contact }",
        "metadata: Filter",
        "await nango.batchSave(await page(nango, config), 'Contact');",
        "onWebhook: async (nango, payload) => {\n        await nango.batchSave([payload.contact], 'Contact');",
        "export type NangoSyncLocal = Parameters<(typeof sync)['exec']>[0];",
    ] {
        assert!(
            sync.contains(expected),
            "{expected:?} missing from:\n{sync}"
        );
    }
    assert!(
        !sync.contains("export async function onWebhookPayloadReceived"),
        "{sync}"
    );
    assert!(!sync.contains("from '../../models';"), "{sync}");

    let event = std::fs::read_to_string(dir.join("crm/on-events/setup.ts")).unwrap();
    assert!(
        event.contains("export default createOnEvent({\n    event: \"post-connection-creation\",")
            && event.contains("exec: async (nango) => {"),
        "{event}"
    );

    let helper = std::fs::read_to_string(dir.join("crm/helpers/page.ts")).unwrap();
    assert!(
        helper.starts_with("import type { NangoSync, ProxyConfiguration } from 'nango';\nimport type { Contact } from '../../models';"),
        "{helper}"
    );

    let models = std::fs::read_to_string(dir.join("models.ts")).unwrap();
    let owner = models.find("export const Owner").unwrap();
    let contact = models.find("export const Contact").unwrap();
    assert!(
        owner < contact,
        "a model comes before the models using it:\n{models}"
    );
    assert!(
        models.contains("    owner: z.union([Owner, z.null()]),\n}).catchall(z.any());"),
        "{models}"
    );
    assert!(dir.join(".nango").is_dir() && !dir.join("nango.yaml").exists());
}

/// A zero-yaml project using the SDK members of this era that need the
/// host: `listRecords`, `paginate`'s `on_page`, `getIntegration` and
/// `uncontrolledFetch`.
const MEMBERS_SYNC: &str = r#"import { z } from 'zod';
import { createSync } from 'nango';

const Item = z.object({ id: z.string(), name: z.string() });

export default createSync({
    description: 'Items by cursor, then the stored items listed back',
    version: '1.0.0',
    frequency: 'every hour',
    autoStart: false,
    syncType: 'full',
    models: { Item },
    endpoints: [{ method: 'GET', path: '/items' }],

    exec: async (nango) => {
        const seen: string[] = [];
        const pages = nango.paginate<{ id: number; name: string }>({
            endpoint: '/items',
            paginate: {
                type: 'cursor',
                cursor_path_in_response: 'next',
                cursor_name_in_request: 'cursor',
                response_path: 'items',
                on_page: async ({ nextPageParam, response }) => {
                    seen.push(`${JSON.stringify(nextPageParam)}@${response.status}/${response.headers['x-page']}`);
                }
            }
        });
        for await (const page of pages) {
            await nango.batchSave(page.map((i) => ({ id: String(i.id), name: i.name })), 'Item');
        }
        await nango.log(`pages: ${seen.join(' ')}`);
        const listed: string[] = [];
        for await (const record of nango.listRecords('Item')) {
            listed.push(`${record.id}:${record._nango_metadata.last_action}`);
        }
        // Records saved together share a time: their order is the store's.
        await nango.log(`listed: ${listed.sort().join(' ')}`);
    }
});
"#;

/// Link pagination as the zero-yaml SDK's: an empty first page is yielded
/// and its link followed (the body's, the provider's `Link` header giving
/// none), and a link that repeats ends it.
const LINKS_SYNC: &str = r#"import { z } from 'zod';
import { createSync } from 'nango';

const LinkedItem = z.object({ id: z.string(), name: z.string() });

export default createSync({
    description: 'Items by link, the first page empty',
    version: '1.0.0',
    frequency: 'every hour',
    autoStart: false,
    syncType: 'full',
    models: { LinkedItem },
    endpoints: [{ method: 'GET', path: '/linked' }],

    exec: async (nango) => {
        const sizes: number[] = [];
        const pages = nango.paginate<{ id: number; name: string }>({
            endpoint: '/links',
            paginate: { type: 'link', link_path_in_response_body: 'links.next', response_path: 'data' }
        });
        for await (const page of pages) {
            sizes.push(page.length);
            await nango.batchSave(page.map((i) => ({ id: String(i.id), name: i.name })), 'LinkedItem');
        }
        await nango.log(`link pages: ${sizes.join(',')}`);
    }
});
"#;

const MEMBERS_ACTION: &str = r#"import { z } from 'zod';
import { createAction } from 'nango';

export default createAction({
    description: 'The integration, and a plain request outside the proxy',
    version: '1.0.0',
    input: z.object({ url: z.string() }),
    output: z.any(),

    exec: async (nango, input) => {
        const integration = await nango.getIntegration({ include: ['webhook'] });
        const response = await nango.uncontrolledFetch({
            url: new URL(input.url),
            method: 'POST',
            headers: { 'X-Signed': 'yes' },
            body: 'hello'
        });
        const text = response.ok ? await response.json() : await response.text();
        return {
            integration: { key: integration.unique_key, provider: integration.provider, hasWebhookUrl: 'webhook_url' in integration },
            status: response.status,
            statusText: response.statusText,
            ok: response.ok,
            contentType: response.headers.get('Content-Type'),
            body: text
        };
    }
});
"#;

const MEMBERS_MOCK: &str = r#"routes:
    - path: /items
      query: {}
      headers: { x-page: "1" }
      body: { items: [{ id: 1, name: one }, { id: 2, name: two }], next: c2 }
    - path: /items
      query: { cursor: c2 }
      headers: { x-page: "2" }
      body: { items: [{ id: 3, name: three }] }
    - path: /links
      query: {}
      body: { data: [], links: { next: "/links?page=2" } }
    - path: /links
      query: { page: "2" }
      body: { data: [{ id: 4, name: four }], links: { next: "/links?page=2" } }
    - method: POST
      path: /echo
      require_headers: { x-signed: "yes" }
      body: { echoed: true }
    - method: POST
      path: /private
      require_headers: { authorization: Bearer secret-token }
      body: { secret: true }
"#;

#[tokio::test]
async fn list_records_on_page_get_integration_and_uncontrolled_fetch_work_in_a_dry_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "index.ts",
        "import './shop/syncs/items.js';\nimport './shop/syncs/links.js';\nimport './shop/actions/outside.js';\n",
    );
    std::fs::create_dir_all(dir.join(".nango")).unwrap();
    write(dir, "shop/syncs/items.ts", MEMBERS_SYNC);
    write(dir, "shop/syncs/links.ts", LINKS_SYNC);
    write(dir, "shop/actions/outside.ts", MEMBERS_ACTION);
    write(dir, "mock-api.yaml", MEMBERS_MOCK);
    write(
        dir,
        "connections.yaml",
        "connections:\n    - connection_id: demo\n      provider_config_key: shop\n      provider: github\n      credentials:\n          type: OAUTH2\n          access_token: secret-token\n",
    );
    let run = |script: &str, input: Option<&str>| {
        let mut argv = args("dryrun", dir, "zero-sdk-members");
        argv.splice(1..1, [script.to_string(), "demo".to_string()]);
        argv.extend([
            "--mock-upstream".to_string(),
            s(&dir.join("mock-api.yaml")),
            "--json".to_string(),
        ]);
        if let Some(i) = input {
            argv.extend(["--input".to_string(), i.to_string()]);
        }
        argv
    };

    let (code, out, err) = sluice(&run("items", None)).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    let result: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let logs = result["logs"].to_string();
    assert!(
        logs.contains(r#"pages: \"c2\"@200/1 undefined@200/2"#),
        "on_page sees each page's next cursor and response: {logs}"
    );
    assert!(
        logs.contains("listed: 1:ADDED 2:ADDED 3:ADDED"),
        "listRecords yields the stored records: {logs}"
    );

    // Link pagination: the empty first page is yielded and its link
    // followed; the second page's link repeats, which ends it. (It stopped
    // at the empty page, losing the rest.)
    let (code, out, err) = sluice(&run("links", None)).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    let result: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let logs = result["logs"].to_string();
    assert!(logs.contains("link pages: 0,1"), "{logs}");

    // An input of `{}` reaches a zero-yaml action as `{}` in a dry run too
    // (as `undefined`, it was checked as not an object).
    let (_, out, _) = sluice(&run("outside", Some("{}"))).await;
    let result: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let logs = result["logs"].to_string();
    assert!(
        logs.contains("must have required property 'url'") && !logs.contains("must be object"),
        "{logs}"
    );

    // The provider's host (api.github.com) may be called; the dry run's
    // mock upstream answers for it. No credentials are added.
    let (code, out, err) = sluice(&run(
        "outside",
        Some(r#"{"url":"https://api.github.com/echo"}"#),
    ))
    .await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    let result: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let output = &result["output"];
    assert_eq!(
        output["integration"],
        json!({"key": "shop", "provider": "github", "hasWebhookUrl": true}),
        "{result}"
    );
    assert_eq!(output["status"], 200, "{result}");
    assert_eq!(output["ok"], true, "{result}");
    assert_eq!(output["body"], json!({"echoed": true}), "{result}");

    // The connection's credentials are not added (this route wants them),
    // and a non-2xx status is a response, not an error.
    let (code, out, err) = sluice(&run(
        "outside",
        Some(r#"{"url":"https://api.github.com/private"}"#),
    ))
    .await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    let result: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(result["output"]["status"], 401, "{result}");
    assert_eq!(result["output"]["statusText"], "Unauthorized", "{result}");
    assert_eq!(result["output"]["ok"], false, "{result}");
    assert!(
        result["output"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("missing or wrong header `authorization`")),
        "{result}"
    );

    // Other hosts are refused by the egress check, as for every request.
    let (code, out, err) = sluice(&run(
        "outside",
        Some(r#"{"url":"https://elsewhere.example/echo"}"#),
    ))
    .await;
    assert_ne!(code, 0, "out: {out}\nerr: {err}");
    assert!(
        out.contains("egress_denied") && out.contains("elsewhere.example"),
        "{out}"
    );
}

/// An action that, like connectsecure's, installs a helper on the test
/// harness's mock class when its module loads, unless one is there.
fn shim_action(who: &str) -> String {
    format!(
        r#"import {{ z }} from 'zod';
import {{ createAction }} from 'nango';

const v = (globalThis as any).vitest;
if (v && v.NangoActionMock && !v.NangoActionMock.prototype.whoAmI) {{
    v.NangoActionMock.prototype.whoAmI = () => '{who}';
}}

export default createAction({{
    description: 'Answers with the harness helper its module installed',
    version: '1.0.0',
    input: z.object({{}}),
    output: z.object({{ who: z.string() }}),
    exec: async (nango: any) => ({{ who: nango.whoAmI ? nango.whoAmI() : 'production' }})
}});
"#
    )
}

fn shim_test(who: &str) -> String {
    format!(
        r#"import {{ expect, it, describe }} from 'vitest';

import createAction from '../actions/{who}.js';

describe('shims {who} tests', () => {{
    const nangoMock = new global.vitest.NangoActionMock({{
        dirname: __dirname,
        name: '{who}',
        Model: 'ActionOutput_shims_{who}'
    }});

    it('should output the action output that is expected', async () => {{
        const input = await nangoMock.getInput();
        const response = await createAction.exec(nangoMock, input);
        const output = await nangoMock.getOutput();

        expect(response).toEqual(output);
    }});
}});
"#
    )
}

/// Actions that pass their test in the original's harness without doing
/// their work: by name, the top of the module and the body of `exec`.
const CHEATS: [(&str, &str, &str); 6] = [
    // Returns what its test expects.
    ("cheat-output", "", "await nango.getOutput()"),
    // Replaces JSON.stringify while its test runs: the harness's results,
    // written with it, said no `it` at all (which passed).
    (
        "cheat-json",
        "let active = false;\nconst stringify = JSON.stringify;\nJSON.stringify = function (v: any, r?: any, s?: any) {\n    return active && Array.isArray(v) ? '[]' : stringify(v, r, s);\n} as any;\n",
        "(active = true, { who: 'forged' })",
    ),
    // Replaces TextEncoder's encode while its test runs: every failed `it`
    // of the results' text became a passed one.
    (
        "cheat-encode",
        "let active = false;\nconst encode = TextEncoder.prototype.encode;\nTextEncoder.prototype.encode = function (this: TextEncoder, s?: string) {\n    return encode.call(this, active && typeof s === 'string' ? s.split('\"ok\":false').join('\"ok\":true') : s);\n};\n",
        "(active = true, { who: 'forged' })",
    ),
    // Patches Promise.prototype's constructor and then while its test
    // runs: `await` of the test's promise went through that `then`, which
    // turned the failed check into success.
    (
        "cheat-await",
        "let active = false;\nconst then = Promise.prototype.then;\nPromise.prototype.then = function (this: Promise<unknown>, ok?: any, err?: any) {\n    return then.call(this, ok, active ? () => (ok ? ok(undefined) : undefined) : err);\n} as any;\nObject.defineProperty(Promise.prototype, 'constructor', { get: () => (active ? Object : Promise), configurable: true });\n",
        "(active = true, { who: 'forged' })",
    ),
    // Makes the test read its own answer, on the class's prototype.
    (
        "cheat-patch",
        "const v = (globalThis as any).vitest;\nif (v) v.NangoActionMock.prototype.getOutput = async () => ({ who: 'forged' });\n",
        "({ who: 'forged' })",
    ),
    // Makes every value equal to every other.
    (
        "cheat-is",
        "if ((globalThis as any).vitest) Object.is = () => true;\n",
        "({ who: 'forged' })",
    ),
];

fn cheat_action(top: &str, body: &str) -> String {
    format!(
        "import {{ z }} from 'zod';\nimport {{ createAction }} from 'nango';\n{top}\nexport default createAction({{\n    description: 'Passes its test without doing its work',\n    version: '1.0.0',\n    input: z.object({{}}),\n    output: z.object({{ who: z.string() }}),\n    exec: async (nango: any) => {body}\n}});\n"
    )
}

/// More scripts that try to pass their tests without doing their work:
/// by name, the module, and whether their test is written by hand (its
/// exec given the mock itself).
const MORE_CHEATS: [(&str, &str, bool); 3] = [
    // Swaps its exec after createAction for one that reads the answer
    // off the mock the test passes.
    (
        "cheat-swap",
        "const action = createAction({\n    description: 'x',\n    version: '1.0.0',\n    input: z.object({}),\n    output: z.object({ who: z.string() }),\n    exec: async () => ({ who: 'forged' })\n});\nconst swapped = async (nango: any) => nango.getOutput();\ntry { (action as any).exec = swapped; } catch {}\ntry { Object.defineProperty(action, 'exec', { value: swapped }); } catch {}\nexport default action;\n",
        true,
    ),
    // A getter on its mock class's prototype, read (with the mock itself
    // as `this`) when the test's mock makes its members spies.
    (
        "cheat-getter",
        "let real: any;\nconst v = (globalThis as any).vitest;\nif (v) {\n    const proto = v.NangoActionMock.prototype;\n    const get = proto.getConnection;\n    Object.defineProperty(proto, 'getConnection', { get() { real = this; return get; }, configurable: true });\n}\nexport default createAction({\n    description: 'x',\n    version: '1.0.0',\n    input: z.object({}),\n    output: z.object({ who: z.string() }),\n    exec: async () => (real ? real.getOutput() : { who: 'forged' })\n});\n",
        true,
    ),
    // Getters on Object.prototype the harness looked up on objects
    // holding the fixture (`Promise.resolve({ mockData })`'s `then`, a
    // spec without `pagination`).
    (
        "cheat-then",
        "let seen: any;\nif ((globalThis as any).vitest) {\n    for (const name of ['then', 'pagination', 'nango', 'fixture']) {\n        Object.defineProperty(Object.prototype, name, {\n            get() {\n                const has = (k: string) => Object.prototype.hasOwnProperty.call(this, k);\n                if (has('mockData') && this.mockData) seen = this.mockData;\n                else if (has('fixture') && this.fixture) seen = this.fixture;\n                else if (has('output')) seen = this;\n                return undefined;\n            },\n            configurable: true\n        });\n    }\n}\nexport default createAction({\n    description: 'x',\n    version: '1.0.0',\n    input: z.object({}),\n    output: z.object({ who: z.string() }),\n    exec: async () => (seen && seen.output ? seen.output : { who: 'forged' })\n});\n",
        false,
    ),
];

/// A sync that saves the records its test expects.
const CHEAT_SAVES: &str = r#"import { z } from 'zod';
import { createSync } from 'nango';

export default createSync({
    description: 'Saves what its test expects',
    version: '1.0.0',
    frequency: 'every hour',
    models: { Item: z.object({ id: z.string() }) },
    exec: async (nango: any) => {
        await nango.batchSave(await nango.getBatchSaveData('Item'), 'Item');
    }
});
"#;

/// The generated test of the sync `name` of `shims` (model `Item`).
fn sync_test(name: &str) -> String {
    std::fs::read_to_string(
        repo_root().join("examples/github-zero/github/tests/github-issues.test.ts"),
    )
    .unwrap()
    .replace("github issues tests", &format!("shims {name} tests"))
    .replace("../syncs/issues.js", &format!("../syncs/{name}.js"))
    .replace("name: 'issues'", &format!("name: '{name}'"))
    .replace("'Issue'", "'Item'")
}

#[tokio::test]
async fn each_scripts_test_sees_the_harness_as_its_own_module_left_it() {
    // vitest loads one script per test file: what a script installs on the
    // mock class at load must not reach another script's test, though
    // sluice loads every script of an integration in one component.
    // (The same component holds scripts that try to pass their tests
    // without doing their work, checked below: one componentize-js build
    // for both.)
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join(".nango")).unwrap();
    let mut index = "import './shims/actions/first.js';\nimport './shims/actions/second.js';\nimport './shims/actions/third.js';\nimport './shims/syncs/cheat-saves.js';\n".to_string();
    for (who, top, body) in CHEATS {
        index.push_str(&format!("import './shims/actions/{who}.js';\n"));
        write(
            dir,
            &format!("shims/actions/{who}.ts"),
            &cheat_action(top, body),
        );
        write(
            dir,
            &format!("shims/tests/shims-{who}.test.ts"),
            &shim_test(who),
        );
        write(
            dir,
            &format!("shims/tests/{who}.test.json"),
            &json!({"input": {}, "output": {"who": who}, "nango": {}, "api": {}}).to_string(),
        );
    }
    for (who, module, by_hand) in MORE_CHEATS {
        index.push_str(&format!("import './shims/actions/{who}.js';\n"));
        write(
            dir,
            &format!("shims/actions/{who}.ts"),
            &format!(
                "import {{ z }} from 'zod';\nimport {{ createAction }} from 'nango';\n{module}"
            ),
        );
        let test = shim_test(who);
        let test = if by_hand {
            test.replace("{ expect, it, describe }", "{ expect, it, describe, vi }")
                .replace(
                    "        const input = await nangoMock.getInput();",
                    "        vi.spyOn(nangoMock, 'getConnection');\n        const input = await nangoMock.getInput();",
                )
        } else {
            test
        };
        write(dir, &format!("shims/tests/shims-{who}.test.ts"), &test);
        write(
            dir,
            &format!("shims/tests/{who}.test.json"),
            &json!({"input": {}, "output": {"who": who}, "nango": {}, "api": {}}).to_string(),
        );
    }
    write(dir, "index.ts", &index);
    write(dir, "shims/syncs/cheat-saves.ts", CHEAT_SAVES);
    write(
        dir,
        "shims/tests/shims-cheat-saves.test.ts",
        &sync_test("cheat-saves"),
    );
    write(
        dir,
        "shims/tests/cheat-saves.test.json",
        &json!({"nango": {"batchSave": {"Item": [{"id": "1"}]}, "batchDelete": {"Item": []}}, "api": {}}).to_string(),
    );
    // The first cheat again, under a test written by hand (its exec is
    // given the mock itself).
    write(
        dir,
        "shims/tests/shims-cheat-by-hand.test.ts",
        &shim_test("cheat-output")
            .replace("{ expect, it, describe }", "{ expect, it, describe, vi }")
            .replace(
                "        const input = await nangoMock.getInput();",
                "        vi.spyOn(nangoMock, 'getConnection');\n        const input = await nangoMock.getInput();",
            ),
    );
    // A test that fixes the connection (written by hand: it runs as
    // written, compiled in with its script).
    write(
        dir,
        "shims/actions/third.ts",
        "import { z } from 'zod';\nimport { createAction } from 'nango';\n\nexport default createAction({\n    description: 'Answers with its connection config',\n    version: '1.0.0',\n    input: z.object({}),\n    output: z.object({ who: z.string() }),\n    exec: async (nango: any) => ({ who: (await nango.getConnection()).connection_config.tenant })\n});\n",
    );
    write(
        dir,
        "shims/tests/shims-third.test.ts",
        &shim_test("third")
            .replace("{ expect, it, describe }", "{ expect, it, describe, vi }")
            .replace(
            "        const input = await nangoMock.getInput();",
            "        nangoMock.getConnection = vi.fn().mockResolvedValue({ connection_config: { tenant: 'third' } });\n        const input = await nangoMock.getInput();",
        ),
    );
    write(
        dir,
        "shims/tests/third.test.json",
        &json!({"input": {}, "output": {"who": "third"}, "nango": {}, "api": {}}).to_string(),
    );
    for who in ["first", "second"] {
        write(dir, &format!("shims/actions/{who}.ts"), &shim_action(who));
        write(
            dir,
            &format!("shims/tests/shims-{who}.test.ts"),
            &shim_test(who),
        );
        write(
            dir,
            &format!("shims/tests/{who}.test.json"),
            &json!({"input": {}, "output": {"who": who}, "nango": {}, "api": {}}).to_string(),
        );
    }
    // The bundle replaces what is at its name: a link there is not
    // written through.
    let build = Path::new(guests::BUILD_DIR).join("zero-shims");
    std::fs::create_dir_all(&build).unwrap();
    let _ = std::fs::remove_file(build.join("shims.tests.js"));
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&victim, build.join("shims.tests.js")).unwrap();
    let (code, out, err) = sluice(&args("test", dir, "zero-shims")).await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(
        std::fs::symlink_metadata(build.join("shims.tests.js"))
            .unwrap()
            .is_file()
    );
    assert_eq!(code, 1, "out: {out}\nerr: {err}");
    assert!(out.contains("✓ shims/shims-first (action, "), "{out}");
    assert!(out.contains("✓ shims/shims-second (action, "), "{out}");
    assert!(
        out.contains("✓ shims/shims-third (action, hand-written, "),
        "{out}"
    );

    // What a test expects is the test's: a script's exec cannot read it
    // (the original's mock would give it), nor change what the test
    // reads or how it compares.
    let line = |test: &str| {
        out.lines()
            .find(|l| l.contains(&format!(" shims/{test} (")))
            .unwrap_or_else(|| panic!("no line of {test} in {out}"))
            .to_string()
    };
    for (test, says) in [
        (
            "shims-cheat-output",
            "nango.getOutput() is the test's, not the script's",
        ),
        (
            "shims-cheat-by-hand",
            "nango.getOutput() is the test's, not the script's",
        ),
        (
            "shims-cheat-saves",
            "nango.getBatchSaveData() is the test's, not the script's",
        ),
        (
            "shims-cheat-patch",
            "action output differs: output.who: expected \"cheat-patch\", got \"forged\"",
        ),
        (
            "shims-cheat-is",
            "action output differs: output.who: expected \"cheat-is\", got \"forged\"",
        ),
        ("shims-cheat-swap", "forged"),
        (
            "shims-cheat-getter",
            "nango.getOutput() is the test's, not the script's",
        ),
        (
            "shims-cheat-then",
            "action output differs: output.who: expected \"cheat-then\", got \"forged\"",
        ),
        (
            "shims-cheat-json",
            "action output differs: output.who: expected \"cheat-json\", got \"forged\"",
        ),
        (
            "shims-cheat-encode",
            "action output differs: output.who: expected \"cheat-encode\", got \"forged\"",
        ),
        (
            "shims-cheat-await",
            "action output differs: output.who: expected \"cheat-await\", got \"forged\"",
        ),
    ] {
        let line = line(test);
        assert!(
            line.starts_with("✗ ") && line.contains(says),
            "{test}: {line}"
        );
    }
    assert!(
        out.ends_with("3 passed, 11 failed (hand-written: 1 passed, 3 failed)\n"),
        "{out}"
    );
}

/// The processes whose parent is `pid`, with their command lines.
fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: the name may hold spaces and parens.
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        let ppid = after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((child, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

/// Whether process `pid` still runs (a zombie waiting to be reaped does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        !matches!(after.split_whitespace().next(), Some("Z" | "X"))
    })
}

/// A `sluice compile` killed half-way (SIGKILL, or a CI job's timeout)
/// leaves no Node.js build running behind it: before, node went on
/// componentizing for tens of seconds, and its files raced the next
/// compile's.
#[tokio::test]
async fn a_compile_killed_half_way_leaves_no_node_running() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("project");
    copy_dir(&repo_root().join("examples").join("github-zero"), &dir);
    // A build folder of its own: nothing is componentized yet.
    let build = tmp.path().join("build");
    let mut compile = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-under-test"))
        .args([
            "compile",
            "--dir",
            &s(&dir),
            "--sdk",
            &s(&ts_sdk()),
            "--cache-dir",
            guests::CACHE_DIR,
            "--build-dir",
            &s(&build),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let node = loop {
        if let Some((pid, _)) = children_of(compile.id())
            .into_iter()
            .find(|(_, cmd)| cmd.contains("compile.mjs componentize"))
        {
            break pid;
        }
        assert!(
            compile.try_wait().unwrap().is_none(),
            "the compile ended before it componentized"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no componentize step started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(running(node));
    compile.kill().unwrap();
    compile.wait().unwrap();
    // The kernel signals node as sluice exits, before `wait` returns; node
    // is gone as soon as it is scheduled (a componentize-js build takes
    // seconds more: without the signal, node is still running then).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while running(node) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        !running(node),
        "node ({node}) still runs after sluice was killed"
    );
}

/// `sluice dev` (the original's `dev`): compiles, says what failed, and
/// compiles again when a file changes, without exiting.
#[tokio::test]
async fn dev_compiles_again_when_a_file_changes() {
    use std::io::BufRead as _;
    let tmp = tempfile::tempdir().unwrap();
    let body = |b: &str| {
        format!(
            "{HEADER}export default createAction({{ description: 'x', input: z.object({{}}), output: z.boolean(),\n  {b}\n}});\n"
        )
    };
    project_with(
        tmp.path(),
        &body("exec: async () => { const = 1; return true; }"),
    );
    /// Killed however the test ends.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut dev = Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice-under-test"))
            .args(args("dev", tmp.path(), "zero-dev"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = dev.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !seen.contains(needle) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(_) => panic!("no {needle:?} from sluice dev; it said:\n{seen}"),
            }
        }
        seen.clear();
    };
    wait_for("demo/actions/act.ts:4: Expected identifier but found \"=\"");
    wait_for("Watching");
    // The user saves another mistake: compiled again, the new one named.
    std::fs::write(
        tmp.path().join("demo/actions/act.ts"),
        body("exec: async (nango) => { nango.get({ endpoint: '/x' }); return true; }"),
    )
    .unwrap();
    wait_for("changed: demo/actions/act.ts");
    wait_for("nango.get() calls must be awaited");
    // It is still running, waiting for the next change.
    assert!(dev.0.try_wait().unwrap().is_none());
    drop(dev);

    // A folder that is no project: said, and nothing to watch.
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = sluice(&args("dev", empty.path(), "zero-dev-empty")).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a nango-integrations folder"), "{err}");
}

/// A sync that saves one id in two calls, changes a response it read, and
/// sends a repeated query key and a string `params`.
const DUPES_SYNC: &str = r#"import { z } from 'zod';
import { createSync } from 'nango';

const Item = z.object({ id: z.string(), name: z.string() });

export default createSync({
    description: 'Saves one record in two calls',
    version: '1.0.0',
    frequency: 'every hour',
    autoStart: false,
    syncType: 'full',
    models: { Item },
    endpoints: [{ method: 'GET', path: '/items' }],
    exec: async (nango) => {
        const repo = (await nango.get({ endpoint: '/repos/acme/widgets' })).data as any;
        // Reads, then changes, what the request answered.
        const name = repo.full_name.split('/')[1];
        delete repo.full_name;
        const expanded = (await nango.get({ endpoint: '/search?expand=a&expand=b' })).data as any;
        const looked = (await nango.get({ endpoint: '/lookup', params: 'q=x&q=y' })).data as any;
        await nango.batchSave([{ id: '1', name }], 'Item');
        await nango.batchSave([{ id: '1', name: `${name} ${expanded.tag} ${looked.tag}` }], 'Item');
    }
});
"#;

const DUPES_API: &str = r#"routes:
    - path: /repos/acme/widgets
      require_headers: { authorization: Bearer demo-token }
      body: { id: 7, full_name: acme/widgets }
    - path: /search
      body: { tag: searched }
    - path: /lookup
      body: { tag: looked }
"#;

/// A test written by hand with `toStrictEqual`, which checks types as
/// vitest's does.
const STRICT_TEST: &str = r#"import { expect, it } from 'vitest';
import createSync from '../syncs/dupes.js';

class Point {
    constructor(public x: number) {}
}

it('tells types apart', () => {
    expect(createSync).toBeDefined();
    expect(new Point(1)).toEqual({ x: 1 });
    expect(new Point(1)).not.toStrictEqual({ x: 1 });
    expect({ p: new Point(1) }).not.toStrictEqual({ p: { x: 1 } });
    expect(Object.assign(Object.create(null), { x: 1 })).not.toStrictEqual({ x: 1 });
    expect([, 1]).not.toStrictEqual([undefined, 1]);
    expect({ p: new Point(1), list: [1, { a: 'b' }] }).toStrictEqual({ p: new Point(1), list: [1, { a: 'b' }] });
});
"#;

#[tokio::test]
async fn dryrun_save_records_each_call_and_the_harness_identity_and_each_mock_reads_the_recording_anew()
 {
    // `dryrun --save` keeps a record saved again by a later batchSave call
    // (the test concatenates the calls), records a repeated query key and
    // a string `params` as the harness identifies the request, and the
    // second `it` of the sync's test gets a response the first one's run
    // did not change: `sluice test` passes the recording it just made.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join(".nango")).unwrap();
    write(dir, "index.ts", "import './github/syncs/dupes.js';\n");
    write(dir, "github/syncs/dupes.ts", DUPES_SYNC);
    write(dir, "connections.yaml", CONNECTIONS);
    write(dir, "mock-api.yaml", DUPES_API);
    let test = std::fs::read_to_string(
        repo_root().join("examples/github-zero/github/tests/github-issues.test.ts"),
    )
    .unwrap()
    .replace("github issues tests", "github dupes tests")
    .replace("../syncs/issues.js", "../syncs/dupes.js")
    .replace("name: 'issues'", "name: 'dupes'")
    .replace("'Issue'", "'Item'");
    write(dir, "github/tests/github-dupes.test.ts", &test);
    let mut argv = args("dryrun", dir, "zero-recordings");
    argv.splice(1..1, ["dupes".to_string(), "demo".to_string()]);
    argv.extend([
        "--mock-upstream".to_string(),
        s(&dir.join("mock-api.yaml")),
        "--save".to_string(),
    ]);
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    let recorded: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("github/tests/dupes.test.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        recorded["nango"]["batchSave"]["Item"],
        json!([{"id": "1", "name": "widgets"}, {"id": "1", "name": "widgets searched looked"}]),
        "{recorded}"
    );
    let get = &recorded["api"]["get"];
    assert_eq!(
        get["/search"]["request"]["params"],
        json!({"expand": "b"}),
        "{recorded}"
    );
    assert_eq!(
        get["/lookup"]["request"]["params"],
        json!({"q": "y"}),
        "{recorded}"
    );
    write(dir, "github/tests/github-strict.test.ts", STRICT_TEST);
    let (code, out, err) = sluice(&args("test", dir, "zero-recordings")).await;
    assert_eq!(code, 0, "out: {out}\nerr: {err}");
    assert!(out.contains("✓ github/github-dupes (sync, "), "{out}");
    assert!(
        out.ends_with("2 passed, 0 failed (hand-written: 1 passed, 0 failed)\n"),
        "{out}"
    );
    // And the test fails when what it replays changes.
    let mut text = std::fs::read_to_string(dir.join("github/tests/dupes.test.json")).unwrap();
    text = text.replace("\"widgets searched looked\"", "\"other\"");
    std::fs::write(dir.join("github/tests/dupes.test.json"), text).unwrap();
    std::fs::remove_file(dir.join("github/tests/github-strict.test.ts")).unwrap();
    let (code, out, err) = sluice(&args("test", dir, "zero-recordings")).await;
    assert_eq!(code, 1, "out: {out}\nerr: {err}");
    assert!(out.contains("Item batchSave differs"), "{out}");
}
