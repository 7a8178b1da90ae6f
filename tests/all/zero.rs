//! Zero-yaml projects (Nango's current format) through the command line:
//! compile (definitions, `.nango/nango.json`, the original's source
//! checks) and `sluice test` replaying `.test.json` recordings with the
//! original harness's rules.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sluice_tests::{guests, repo_root, ts_sdk};

async fn sluice(args: &[String]) -> (i32, String, String) {
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

fn zero_project() -> PathBuf {
    repo_root().join("tests").join("zero-project")
}

fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[tokio::test]
async fn a_zero_yaml_project_compiles_writes_nango_json_and_passes_its_recorded_tests() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&zero_project(), tmp.path());
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
    assert_eq!(sync["auto_start"], true);
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
    let cases: [(&str, &str); 5] = [
        (
            "import axios from 'axios';\nimport { createAction } from 'nango';\nexport default createAction({ description: 'x', input: undefined, output: undefined, exec: async () => axios.get('https://example.com') });\n",
            "Import of package 'axios' is not allowed. Allowed packages are: nango, nango/experimental, zod, crypto",
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

    // A frequency the original refuses, named with its field.
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), ".nango/.gitkeep", "");
    write(tmp.path(), "index.ts", "import './demo/syncs/items.js';\n");
    write(
        tmp.path(),
        "demo/syncs/items.ts",
        "import { z } from 'zod';\nimport { createSync } from 'nango';\nexport default createSync({ description: 'x', frequency: 'every 10 seconds', models: { Item: z.object({ id: z.string() }) }, exec: async () => {} });\n",
    );
    let (code, _, err) = sluice(&args("compile", tmp.path(), "zero-errors-frequency")).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("demo/syncs/items.ts: createSync > frequency > Interval is invalid"),
        "{err}"
    );

    // An index.ts without entries.
    write(tmp.path(), "index.ts", "// nothing yet\n");
    let (code, _, err) = sluice(&args("compile", tmp.path(), "zero-errors-frequency")).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("No entry points found in index.ts"), "{err}");
}
