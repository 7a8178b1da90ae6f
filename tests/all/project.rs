//! nango-integrations folders through the command line: init, generate,
//! compile (and its errors), dryrun of TypeScript, and `sluice test`.

use std::path::{Path, PathBuf};

use sluice_tests::{guests, repo_root, ts_sdk};

async fn sluice(args: &[&str]) -> (i32, String, String) {
    let argv = std::iter::once("sluice").chain(args.iter().copied());
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

/// Build flags pointing at this checkout's SDK and the tests' caches.
fn build_flags(build: &str) -> Vec<String> {
    vec![
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

#[tokio::test]
async fn an_initialized_folder_compiles_and_its_sync_dry_runs_against_its_mock() {
    // A fixed folder made anew each run, built beside it, so the build of
    // the (unchanged) starter is reused between runs.
    let dir = PathBuf::from(guests::BUILD_DIR).join("init-project");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (code, out, err) = sluice(&["init", &s(&dir), "--yaml"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nango.yaml"), "{out}");
    let (code, _, err) = sluice(&["init", &s(&dir), "--yaml"]).await;
    assert_eq!(code, 2, "init refuses an existing folder");
    assert!(err.contains("already has a nango.yaml"), "{err}");

    let mock = s(&dir.join("mock-api.yaml"));
    let mut args = vec![
        "dryrun".to_string(),
        "github-issue-example".into(),
        "demo".into(),
        "--dir".into(),
        s(&dir),
        "--mock-upstream".into(),
        mock.clone(),
        "--save-responses".into(),
    ];
    args.extend(build_flags("init-project-build"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("The dry run would produce the following results:"),
        "{out}"
    );
    for title in ["Found a bug", "Add a README", "Crash on start"] {
        assert!(out.contains(title), "{title} missing from {out}");
    }
    assert!(!out.contains("Fix the crash"), "pull requests are skipped");
    assert!(
        out.contains("[info] Saving 2 issues of octocat/hello-world"),
        "{out}"
    );

    let mut args = vec![
        "dryrun".to_string(),
        "create-issue".into(),
        "demo".into(),
        "--dir".into(),
        s(&dir),
        "--mock-upstream".into(),
        mock,
        "--input".into(),
        r#"{"title": "New issue"}"#.into(),
        "--save-responses".into(),
    ];
    args.extend(build_flags("init-project-build"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("\"number\": 5"), "{out}");
    assert!(!out.contains("Invalid action"), "{out}");

    // An input that does not match its model: a warning, or with
    // --validation an error before the script runs.
    let bad: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains("New issue") {
                r#"{"title": "New issue", "labels": 3}"#.to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    let argv: Vec<&str> = bad.iter().map(String::as_str).collect();
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("[warn] Invalid action input {")
            && out.contains("must NOT have additional properties: 'labels'"),
        "{out}"
    );
    let mut strict: Vec<&str> = argv
        .iter()
        .copied()
        .filter(|a| *a != "--save-responses")
        .collect();
    strict.push("--validation");
    let (code, out, _) = sluice(&strict).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("(invalid_action_input)"), "{out}");
    // `--save` writes a zero-yaml recording, which this project's tests
    // would never replay: refused, saying what to use.
    let mut save: Vec<&str> = strict
        .iter()
        .copied()
        .filter(|a| *a != "--validation")
        .collect();
    save.push("--save");
    let (code, _, err) = sluice(&save).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--save-responses"), "{err}");
    assert!(!dir.join("demo-github-integration/tests").exists());

    // The responses the valid runs saved replay as mocks.
    let mocks = dir.join("demo-github-integration/mocks");
    assert!(
        mocks
            .join("github-issue-example/GithubIssue/batchSave.json")
            .is_file()
    );
    assert!(mocks.join("create-issue/output.json").is_file());
    let mut args = vec!["test".to_string(), "--dir".into(), s(&dir)];
    args.extend(build_flags("init-project-build"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.ends_with("2 passed, 0 failed\n"), "{out}");
}

const BROKEN_YAML: &str = r#"
integrations:
    zendesk:
        syncs:
            tickets:
                runs: every hour
                output: Ticket
                endpoint: GET /tickets
                colour: blue
            users:
                runs: every 5 seconds
                output: User
                endpoint: GET /users
models:
    Ticket:
        subject: string
    User:
        id: string
"#;

#[tokio::test]
async fn nango_yaml_errors_name_their_path_and_code_and_stop_the_compile() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "nango.yaml", BROKEN_YAML);
    let mut args = vec!["compile".to_string(), "--dir".into(), s(tmp.path())];
    args.extend(build_flags("broken-yaml"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = sluice(&argv).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nango.yaml validation failed"), "{err}");
    assert!(
        err.contains("integrations > zendesk > syncs > tickets\n  error must NOT have additional properties: `colour` [additionalProperties]"),
        "{err}"
    );
    assert!(
        err.contains("integrations > zendesk > syncs > tickets > output\n  error Model \"Ticket\" doesn't have an id field. This is required to be able to uniquely identify the data record [model_missing_id]"),
        "{err}"
    );
    assert!(err.contains("[invalid_runs]"), "{err}");
    assert!(
        err.contains("Your nango.yaml contains some errors"),
        "{err}"
    );
    assert!(
        !tmp.path().join("models.ts").exists(),
        "nothing is generated from an invalid file"
    );

    write(tmp.path(), "nango.yaml", "integrations: [unclosed");
    let (code, _, err) = sluice(&argv).await;
    assert_eq!(code, 2);
    assert!(err.contains("is not valid YAML"), "{err}");

    // An integration key that is a path is refused, and nothing is written
    // beside the project.
    let project = tmp.path().join("inner");
    for key in ["../evil", "..", "a/b"] {
        write(
            &project,
            "nango.yaml",
            &format!(
                "integrations:\n  '{key}':\n    actions:\n      pwn:\n        output: Out\n        endpoint: GET /x\nmodels:\n  Out:\n    id: string\n"
            ),
        );
        for verb in ["generate", "compile"] {
            let mut args = vec![verb.to_string(), "--dir".into(), s(&project)];
            if verb == "compile" {
                args.extend(build_flags("broken-yaml"));
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, _, err) = sluice(&argv).await;
            assert_eq!(code, 2, "{verb} {key}: {err}");
            assert!(
                err.contains(&format!("integration key \"{key}\" must match"))
                    && err.contains("[pattern]"),
                "{verb} {key}: {err}"
            );
        }
    }
    assert!(!tmp.path().join("evil").exists());
    assert!(!tmp.path().join("actions").exists());
}

const GENERATE_YAML: &str = r#"
integrations:
    github:
        syncs:
            issues:
                runs: every hour
                output: Issue
                endpoint: GET /issues
                webhook-subscriptions: [issues]
        actions:
            create-issue:
                input: CreateIssue
                output: Issue
                endpoint: POST /issues
        on-events:
            post-connection-creation: [setup]
models:
    Issue:
        id: string
        title: string
        labels?: string[]
        state: open | closed
    CreateIssue:
        title: string
"#;

#[tokio::test]
async fn generate_writes_models_and_schemas_and_scaffolds_only_missing_scripts() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "nango.yaml", GENERATE_YAML);
    let mine = "export default async function fetchData() { /* mine */ }\n";
    write(tmp.path(), "github/syncs/issues.ts", mine);
    let (code, out, err) = sluice(&["generate", "--dir", &s(tmp.path())]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("[model_not_found_fallback]"),
        "warnings are printed: {err}"
    );

    let models = std::fs::read_to_string(tmp.path().join("models.ts")).unwrap();
    assert!(models.contains("export interface Issue {\n  id: string;\n  title: string;\n  labels?: string[];\n  state: 'open' | 'closed';\n};"), "{models}");
    assert!(models.contains("export declare class NangoSync extends NangoAction"));
    assert!(models.contains("export interface ProxyConfiguration"));
    assert!(models.contains("export declare class ActionError"));
    assert!(models.contains("export const NangoFlows = ["));

    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join(".nango/schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        schema["definitions"]["Issue"]["required"],
        serde_json::json!(["id", "title", "state"])
    );
    assert_eq!(
        schema["definitions"]["Issue"]["additionalProperties"],
        false
    );

    assert_eq!(
        std::fs::read_to_string(tmp.path().join("github/syncs/issues.ts")).unwrap(),
        mine,
        "an existing script is never overwritten"
    );
    let action =
        std::fs::read_to_string(tmp.path().join("github/actions/create-issue.ts")).unwrap();
    assert!(
        action.contains("export default async function runAction(nango: NangoAction, input: CreateIssue): Promise<Issue>"),
        "{action}"
    );
    let event = std::fs::read_to_string(tmp.path().join("github/on-events/setup.ts")).unwrap();
    assert!(event.contains("export default async function onEvent(nango: NangoAction)"));
    assert!(
        out.contains("create-issue.ts") && !out.contains("issues.ts\n"),
        "{out}"
    );
}

#[tokio::test]
async fn imports_the_original_forbids_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "nango.yaml",
        "integrations:\n    demo:\n        actions:\n            fetch:\n                endpoint: POST /fetch\nmodels: {}\n",
    );
    write(
        tmp.path(),
        "demo/actions/fetch.ts",
        "import axios from 'axios';\nexport default async function runAction() { return axios.get('https://x'); }\n",
    );
    // A zero-yaml index.ts beside nango.yaml is ignored, and said to be.
    write(
        tmp.path(),
        "index.ts",
        "import './demo/actions/fetch.js';\n",
    );
    write(tmp.path(), ".nango/.gitkeep", "");
    let mut args = vec!["compile".to_string(), "--dir".into(), s(tmp.path())];
    args.extend(build_flags("refused-import"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = sluice(&argv).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("Importing libraries is not allowed. Please remove the import \"axios\" from \"demo/actions/fetch.ts\""),
        "{err}"
    );
    assert!(
        err.contains(
            "warning: nango.yaml makes this a nango.yaml project: index.ts and .nango/ are ignored"
        ),
        "{err}"
    );

    write(
        tmp.path(),
        "demo/actions/fetch.ts",
        "import { x } from '../../../elsewhere';\nexport default async function runAction() { return x; }\n",
    );
    let (code, _, err) = sluice(&argv).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("All imported files must live within the nango-integrations directory"),
        "{err}"
    );

    // A Unicode property escape the engine cannot be given (known ones are
    // spelled out as code point ranges), named at its line as Node would.
    write(
        tmp.path(),
        "demo/actions/fetch.ts",
        "export default async function runAction() {\n    return /\\p{Letterz}+/u.test('a');\n}\n",
    );
    let (code, _, err) = sluice(&argv).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("demo/actions/fetch.ts:2: Invalid regular expression: /\\p{Letterz}+/u: Invalid property name"),
        "{err}"
    );
}

/// The original CLI's checks on a nango.yaml project's sources, with its
/// messages: each names the file and line, a helper file the script
/// imports is checked as the script, and the project is not built.
#[tokio::test]
async fn nango_yaml_scripts_get_the_originals_source_checks() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "nango.yaml",
        "integrations:\n    demo:\n        syncs:\n            items:\n                runs: every day\n                output: Item\n                endpoint: GET /items\n        actions:\n            make:\n                endpoint: POST /make\n                output: Item\nmodels:\n    Item:\n        id: string\n",
    );
    write(
        tmp.path(),
        "demo/syncs/items.ts",
        "import { count } from '../helpers/count';\nexport default async function fetchData(nango: any) {\n    nango.log('starting');\n    await nango.batchSave([], 'Itme');\n    await nango.get({ endpoint: '/x', retryOn: [500] });\n    return count(nango);\n}\nimport toItem from '../helpers/to-item';\nexport const optional = (nango: any) => nango?.log(toItem(1));\n",
    );
    // Imported by default: not checked, as in the original (which follows
    // only `{ named }` imports); its default export returns a value.
    write(
        tmp.path(),
        "demo/helpers/to-item.ts",
        "export default function toItem(raw: any) {\n    return { id: String(raw) };\n}\n",
    );
    write(
        tmp.path(),
        "demo/helpers/count.ts",
        "export function count(nango: any) {\n    const later = nango.getConnection();\n    return later;\n}\n",
    );
    write(
        tmp.path(),
        "demo/actions/make.ts",
        "export default async function runAction(nango: any) {\n    await nango.batchSave([{ id: '1' }], 'Item');\n    await Promise.all(['1'].map(async (id) => { nango.log(id); }));\n    await nango.batchSend([], 'Item');\n    return { id: '1' };\n}\n",
    );
    let mut args = vec!["compile".to_string(), "--dir".into(), s(tmp.path())];
    args.extend(build_flags("yaml-lint"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = sluice(&argv).await;
    assert_eq!(code, 2, "{err}");
    for message in [
        "nango.log() calls must be awaited in \"demo/syncs/items.ts:3\". Not awaiting can lead to unexpected results.",
        "\"Itme\" is not a valid model name. Please check \"demo/syncs/items.ts:4\". The possible model names are: Item",
        "Usage of 'retryOn' without 'retries' at \"demo/syncs/items.ts:5\". 'retryOn' should not be used if 'retries' is not set.",
        "The default exported function fetchData at \"demo/syncs/items.ts:2\" must not return a value.",
        "nango.getConnection() calls must be awaited in \"demo/helpers/count.ts:2\".",
        "nango.batchSave() calls are not allowed in an action script. Please remove it at \"demo/actions/make.ts:2\".",
    ] {
        assert!(err.contains(message), "expected {message:?} in\n{err}");
    }
    // Accepted as the original accepts them: a call inside an awaited
    // expression, a deprecated call (a warning).
    assert!(!err.contains("demo/actions/make.ts:3"), "{err}");
    // An optional call (`nango?.log`) is not one the original checks.
    assert!(!err.contains("demo/syncs/items.ts:9"), "{err}");
    assert!(!err.contains("to-item.ts"), "{err}");
    assert!(
        err.contains(
            "nango.batchSend() used at line 4 is deprecated. Use nango.batchSave() instead."
        ),
        "{err}"
    );
    assert!(!err.contains("Compiling demo"), "{err}");
}

/// A script name two integrations declare: named before anything is
/// built (a dry run had compiled both first).
#[tokio::test]
async fn a_dry_run_of_an_ambiguous_name_asks_for_the_integration_first() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "nango.yaml",
        "integrations:\n    one:\n        actions:\n            ping:\n                endpoint: POST /ping\n    two:\n        actions:\n            ping:\n                endpoint: POST /ping\nmodels: {}\n",
    );
    for i in ["one", "two"] {
        write(
            tmp.path(),
            &format!("{i}/actions/ping.ts"),
            "export default async function runAction() { return { ok: true }; }\n",
        );
    }
    let mut args = vec![
        "dryrun".to_string(),
        "ping".into(),
        "demo".into(),
        "--dir".into(),
        s(tmp.path()),
    ];
    args.extend(build_flags("ambiguous-name"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = sluice(&argv).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("several integrations declare it (one, two): pass --integration-id"),
        "{err}"
    );
    assert!(!err.contains("Compiling"), "{err}");
}

#[tokio::test]
async fn scripts_without_a_file_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "nango.yaml",
        "integrations:\n    demo:\n        actions:\n            one:\n                endpoint: POST /one\n            two:\n                endpoint: POST /two\nmodels: {}\n",
    );
    let mut args = vec!["compile".to_string(), "--dir".into(), s(tmp.path())];
    args.extend(build_flags("missing-scripts"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = sluice(&argv).await;
    assert_eq!(code, 2);
    assert!(
        err.contains("The following scripts are missing a corresponding .ts file: demo/actions/one.ts, demo/actions/two.ts"),
        "{err}"
    );
    // And where a script in Rust would be.
    assert!(err.contains("`<name>/Cargo.toml`"), "{err}");
}

/// A package.json the migration cannot parse is refused before anything
/// is written (it was replaced by the default, losing what it held).
#[tokio::test]
async fn migrate_refuses_a_package_json_it_cannot_parse_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = "integrations:\n    demo:\n        actions:\n            hello:\n                endpoint: POST /hello\n                output: Out\nmodels:\n    Out:\n        id: string\n";
    let script = "import type { NangoAction, Out } from '../../models';\n\nexport default async function runAction(nango: NangoAction): Promise<Out> {\n    return { id: '1' };\n}\n";
    let package = "{\n  \"name\": \"mine\",\n  \"dependencies\": { \"lodash\": \"4\" },\n}\n";
    write(tmp.path(), "nango.yaml", yaml);
    write(tmp.path(), "demo/actions/hello.ts", script);
    write(tmp.path(), "package.json", package);
    let mut args = vec![
        "migrate-to-zero-yaml".to_string(),
        "--dir".into(),
        s(tmp.path()),
    ];
    args.extend(build_flags("migrate-bad-package"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = sluice(&argv).await;
    assert_ne!(code, 0, "out: {out}\nerr: {err}");
    let path = tmp.path().join("package.json");
    assert!(
        err.contains(&format!(
            "{} cannot be updated (it is not JSON: trailing comma at line 4 column 1); nothing was changed",
            path.display()
        )),
        "{err}"
    );
    let read = |rel: &str| std::fs::read_to_string(tmp.path().join(rel)).unwrap();
    assert_eq!(read("package.json"), package);
    assert_eq!(read("nango.yaml"), yaml);
    assert_eq!(read("demo/actions/hello.ts"), script);
    assert!(!tmp.path().join("index.ts").exists());
    assert!(!tmp.path().join("models.ts").exists());
}

/// A Rust script's failed build adds a hint only where cargo's messages
/// do not say it: a crate without the script's binary is told how to name
/// it, a crate that does not compile is not sent looking for a name.
#[tokio::test]
async fn a_rust_build_failure_hints_at_the_binary_name_only_when_it_is_missing() {
    for (package, main, named) in [
        ("other", "fn main() {}\n", true),
        ("one", "fn main() { let x: u8 = \"no\"; }\n", false),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "nango.yaml",
            "integrations:\n    demo:\n        actions:\n            one:\n                endpoint: POST /one\nmodels: {}\n",
        );
        write(
            tmp.path(),
            "demo/actions/one/Cargo.toml",
            &format!(
                "[package]\nname = \"{package}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n"
            ),
        );
        write(tmp.path(), "demo/actions/one/src/main.rs", main);
        let mut args = vec!["compile".to_string(), "--dir".into(), s(tmp.path())];
        args.extend(build_flags(&format!("rust-hint-{package}")));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = sluice(&argv).await;
        assert_ne!(code, 0, "{err}");
        assert!(err.contains("cargo build of"), "{err}");
        assert_eq!(
            err.contains("the crate must build a binary named `one`"),
            named,
            "{err}"
        );
    }
}

/// A crate that builds but exports no script is named by its folder, not
/// by the file cargo built.
#[tokio::test]
async fn a_rust_crate_without_a_script_is_named_by_its_folder() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "nango.yaml",
        "integrations:\n    demo:\n        actions:\n            one:\n                endpoint: POST /one\nmodels: {}\n",
    );
    write(
        tmp.path(),
        "demo/actions/one/Cargo.toml",
        "[package]\nname = \"one\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n",
    );
    write(tmp.path(), "demo/actions/one/src/main.rs", "fn main() {}\n");
    let mut args = vec!["compile".to_string(), "--dir".into(), s(tmp.path())];
    args.extend(build_flags("rust-no-script"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = sluice(&argv).await;
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("the crate demo/actions/one does not implement a nango:scripts world"),
        "{err}"
    );
    assert!(!err.contains(".wasm"), "{err}");
}

/// Copies tests/ts-project into `to`, less its Rust script (whose path
/// dependency on the SDK only resolves in the checkout): the TypeScript
/// bundle, and so its build, stays the same.
fn copy_project(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" || name == ".sluice" || name == "rust-echo" {
            continue;
        }
        if name == "nango.yaml" {
            let yaml = std::fs::read_to_string(entry.path()).unwrap();
            let start = yaml.find("            rust-echo:").unwrap();
            let end = start + yaml[start..].find("\n\n").unwrap();
            std::fs::write(
                to.join(name),
                format!("{}{}", &yaml[..start], &yaml[end + 1..]),
            )
            .unwrap();
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_project(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn sluice_test_replays_recorded_mocks_and_reports_each_script() {
    let tmp = tempfile::tempdir().unwrap();
    copy_project(&repo_root().join("tests/ts-project"), tmp.path());
    // The harness's provider is the integration's name, as in Nango's
    // template repository.
    write(
        tmp.path(),
        "providers.yaml",
        "mock-int:\n    auth_mode: OAUTH2\n    proxy:\n        base_url: https://api.mock.example\n",
    );
    let providers = s(&tmp.path().join("providers.yaml"));
    let mut args = vec![
        "test".to_string(),
        "--dir".into(),
        s(tmp.path()),
        "--providers".into(),
        providers,
    ];
    // Its own build folder: compiles of tests/ts-project run concurrently.
    args.extend(build_flags("ts-project-copy"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();

    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("✓ mock-int/listing (sync, "), "{out}");
    assert!(out.contains("✓ mock-int/lookup (action, "), "{out}");
    assert!(out.ends_with("2 passed, 0 failed\n"), "{out}");

    // A recording that no longer matches what the script does fails it.
    write(
        tmp.path(),
        "mock-int/mocks/listing/Listing/batchSave.json",
        r#"[{"id": "1", "name": "First"}, {"id": "2", "name": "Changed"}, {"id": "3", "name": "Third"}]"#,
    );
    write(
        tmp.path(),
        "mock-int/mocks/lookup/input.json",
        r#"{"id": "43"}"#,
    );
    // An action that starts another cannot pass a replay, and says why.
    write(tmp.path(), "mock-int/mocks/trigger/input.json", "{}");
    write(tmp.path(), "mock-int/mocks/trigger/output.json", "{}");
    let (code, out, _) = sluice(&argv).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("✗ mock-int/listing (sync): Listing batchSave[1].name: expected \"Changed\", got \"Second\""),
        "{out}"
    );
    assert!(
        out.contains("✗ mock-int/lookup (action): ") && out.contains("Failed to load mock data"),
        "{out}"
    );
    assert!(
        out.contains("✗ mock-int/trigger (action): ")
            && out.contains(
                "triggerAction of `echo` cannot run while recorded responses are replayed"
            ),
        "{out}"
    );
    assert!(out.ends_with("0 passed, 3 failed\n"), "{out}");
}

/// `sluice generate` in a Rust project scaffolds a crate for a declared
/// script without one (it wrote a `.ts` file there), and the crate builds
/// and runs: the action fails with its placeholder ActionError.
#[tokio::test]
async fn generate_scaffolds_a_crate_in_a_rust_project() {
    let dir = PathBuf::from(guests::BUILD_DIR).join("generate-rust-project");
    let _ = std::fs::remove_dir_all(&dir);
    let (code, _, err) = sluice(&["init", &s(&dir), "--rust"]).await;
    assert_eq!(code, 0, "{err}");
    let yaml_path = dir.join("nango.yaml");
    let yaml = std::fs::read_to_string(&yaml_path).unwrap().replace(
        "        actions:\n",
        "        actions:\n            ping:\n                endpoint: POST /ping\n",
    );
    std::fs::write(&yaml_path, yaml).unwrap();
    let (code, out, err) = sluice(&["generate", "--dir", &s(&dir)]).await;
    assert_eq!(code, 0, "{out}{err}");
    let krate = dir.join("demo-github-integration/actions/ping");
    let main = std::fs::read_to_string(krate.join("src/main.rs")).unwrap();
    assert!(main.contains("#[action]"), "{main}");
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"ping\""), "{manifest}");
    assert!(!dir.join("demo-github-integration/actions/ping.ts").exists());
    // Built beside the starter's crates (their build is reused).
    let mut args: Vec<String> = vec![
        "dryrun".into(),
        "ping".into(),
        "demo".into(),
        "--dir".into(),
        s(&dir),
        "--input".into(),
        "{}".into(),
        "--mock-upstream".into(),
        s(&dir.join("mock-api.yaml")),
    ];
    args.extend(build_flags("init-rust-project-build"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("not implemented"), "{out}\n{err}");
}

/// `sluice init --rust`: the nango.yaml starter with its scripts as Rust
/// crates and a copy of the SDK; out of the box they build, dry-run
/// against the bundled mock, record their mocks and pass `sluice test`.
#[tokio::test]
async fn the_rust_starter_builds_dry_runs_and_passes_its_tests() {
    // A fixed folder made anew each run; cargo's target folder is beside
    // it, so later runs rebuild little.
    let dir = PathBuf::from(guests::BUILD_DIR).join("init-rust-project");
    let _ = std::fs::remove_dir_all(&dir);
    let (code, out, err) = sluice(&["init", &s(&dir), "--rust"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sluice-sdk"), "{out}");
    assert!(
        dir.join("demo-github-integration/syncs/github-issue-example/Cargo.toml")
            .is_file()
    );
    let mock = s(&dir.join("mock-api.yaml"));
    let run = |script: &str, extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "dryrun".into(),
            script.into(),
            "demo".into(),
            "--dir".into(),
            s(&dir),
            "--mock-upstream".into(),
            mock.clone(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend(build_flags("init-rust-project-build"));
        args
    };
    let args = run("github-issue-example", &["--save-responses"]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "{out}\n{err}");
    for title in ["Found a bug", "Add a README", "Crash on start"] {
        assert!(out.contains(title), "{title} missing from {out}");
    }
    assert!(!out.contains("Fix the crash"), "pull requests are skipped");
    assert!(
        out.contains("[info] Saving 2 issues of octocat/hello-world"),
        "{out}"
    );
    assert!(!out.contains("Invalid"), "{out}");
    let args = run(
        "create-issue",
        &["--input", r#"{"title": "New issue"}"#, "--save-responses"],
    );
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("\"number\": 5"), "{out}");
    assert!(!out.contains("Invalid"), "{out}");
    let args = run("create-issue", &["--input", r#"{"body": "no title"}"#]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, _) = sluice(&argv).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(r#""message": "title is required""#), "{out}");

    let mut args = vec!["test".to_string(), "--dir".into(), s(&dir)];
    args.extend(build_flags("init-rust-project-build"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = sluice(&argv).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.ends_with("2 passed, 0 failed\n"), "{out}");
}
