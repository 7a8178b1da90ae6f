//! `sluice deploy` as a user runs it (in process: the binary's code)
//! against a real server, and against mock servers that answer what a
//! sluice server does not: a huge error page, a page that is not JSON, an
//! echo of the request's secret key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer, guests};

use crate::server::{Client, DEV_KEY, start_with};

/// `sluice <args>`.
async fn sluice(args: &[&str]) -> (i32, String, String) {
    let mut argv = vec!["sluice".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = sluice::cli::run(argv.into_iter().map(Into::into), &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Copies the folder `from` to `to`, less cargo's `target`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "target" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every Rust crate of a project is built into one cargo folder, where a
/// binary's output is named by the binary alone: two integrations'
/// `create-issue` wrote one file, and the deploy sent the last one built
/// for both (the server refused it for the first: "the body's SHA-256 is
/// not …"). Each is deployed, and each integration runs its own.
#[tokio::test]
async fn two_integrations_with_a_rust_script_of_one_name_deploy_and_run_their_own() {
    let root = PathBuf::from(guests::BUILD_DIR);
    let dir = root.join("deploy-rust-same-name");
    let _ = std::fs::remove_dir_all(&dir);
    let (code, _, err) = sluice(&["init", &s(&dir), "--rust"]).await;
    assert_eq!(code, 0, "{err}");
    // A second integration with its own `create-issue`, which answers a
    // missing title in its own words.
    let first = dir.join("demo-github-integration/actions/create-issue");
    let second = dir.join("other-github-integration/actions/create-issue");
    copy_dir(&first, &second);
    let manifest = std::fs::read_to_string(second.join("Cargo.toml")).unwrap();
    let helpers = r#"path = "../../helpers""#;
    assert!(manifest.contains(helpers), "{manifest}");
    std::fs::write(
        second.join("Cargo.toml"),
        manifest.replace(
            helpers,
            r#"path = "../../../demo-github-integration/helpers""#,
        ),
    )
    .unwrap();
    let main = std::fs::read_to_string(second.join("src/main.rs")).unwrap();
    assert!(main.contains("title is required"), "{main}");
    std::fs::write(
        second.join("src/main.rs"),
        main.replace("title is required", "the other integration needs a title"),
    )
    .unwrap();
    let yaml_path = dir.join("nango.yaml");
    let yaml = std::fs::read_to_string(&yaml_path).unwrap().replace(
        "\nmodels:\n",
        "    other-github-integration:\n        actions:\n            create-issue:\n                input: CreateIssueInput\n                output: GithubIssue\n                endpoint: POST /other/issues\n\nmodels:\n",
    );
    std::fs::write(&yaml_path, yaml).unwrap();

    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(
        config,
        &MasterKey::generate(),
        "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: http://127.0.0.1:9\n",
    )
    .await;
    // Kept between runs (cargo rebuilds little), shared with the other
    // Rust projects' tests (their builds take turns).
    let build = root.join("rust-projects-build");
    let (code, out, err) = sluice(&[
        "deploy",
        "--cache-dir",
        guests::CACHE_DIR,
        "--dir",
        &s(&dir),
        "--build-dir",
        &s(&build),
        "--host",
        &server.url(),
        "--secret-key",
        DEV_KEY,
    ])
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("Deployed version 1 to `dev`") && out.contains("3 scripts"),
        "{out}"
    );

    let dev = Client::new(&server, DEV_KEY);
    let mut said = Vec::new();
    for pck in ["demo-github-integration", "other-github-integration"] {
        dev.integration_and_connection(pck, "mock", json!({"connection_id": "c1", "api_key": "k"}))
            .await;
        let (_, body) = dev
            .send_as(
                (pck, "c1"),
                "POST",
                "/action/trigger",
                Some(json!({"action_name": "create-issue", "input": {"title": ""}})),
            )
            .await;
        said.push(body.to_string());
    }
    assert!(
        said[0].contains("title is required") && !said[0].contains("other integration"),
        "{said:?}"
    );
    assert!(
        said[1].contains("the other integration needs a title"),
        "{said:?}"
    );
}

/// A project of one prebuilt component (no build): the action `noop`.
fn wasm_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nango.yaml"),
        "integrations:\n    mock-int:\n        actions:\n            noop:\n                endpoint: POST /noop\nmodels: {}\n",
    )
    .unwrap();
    let actions = dir.path().join("mock-int/actions");
    std::fs::create_dir_all(&actions).unwrap();
    std::fs::copy(guests::ACTION_NOOP, actions.join("noop.wasm")).unwrap();
    dir
}

const KEY: &str = "sk-deploy-cli-0123456789";

/// A mock that says the key is dev's, and answers the deploy itself with
/// `deploy`.
async fn mock(deploy: impl Fn(&MockRequest) -> MockResponse + Send + Sync + 'static) -> MockServer {
    MockServer::start(Arc::new(move |req: &MockRequest| match req.path.as_str() {
        "/sluice/environment" => MockResponse::json(
            200,
            &json!({"name": "dev", "deploy_scopes": ["integration", "sync", "action"]}),
        ),
        _ => deploy(req),
    }))
    .await
    .unwrap()
}

/// `sluice deploy` of `project` to `host` with [`KEY`].
async fn deploy(project: &Path, host: &str) -> (i32, String, String) {
    sluice(&[
        "deploy",
        "--cache-dir",
        guests::CACHE_DIR,
        "--dir",
        &s(project),
        "--build-dir",
        &s(&project.join("build")),
        "--host",
        host,
        "--secret-key",
        KEY,
    ])
    .await
}

/// A 502 page of 20 MiB that echoes the request's authorization was
/// printed whole (200 MB printed, 534 MB resident): at most 16 KiB of it
/// is shown, without the key.
#[tokio::test]
async fn a_huge_error_page_is_shown_in_part_and_without_the_key() {
    let project = wasm_project();
    let server = mock(|req: &MockRequest| {
        let mut body = format!(
            "<html>Bad gateway; you sent {}\n",
            req.header("authorization").unwrap_or_default()
        )
        .into_bytes();
        body.resize(20 << 20, b'x');
        MockResponse {
            status: 502,
            headers: vec![("content-type".into(), "text/html".into())],
            body,
            delay: None,
        }
    })
    .await;
    let (code, out, err) = deploy(project.path(), &server.url()).await;
    assert_ne!(code, 0, "{out}");
    assert!(err.len() < 24 << 10, "{} bytes on stderr", err.len());
    assert!(
        err.contains(
            "the server refused the deploy (HTTP 502): <html>Bad gateway; you sent Bearer ***\n"
        ),
        "{err:.2000}"
    );
    assert!(err.contains("… (the first 16 KiB shown)"), "{err:.2000}");
    assert!(!err.contains(KEY), "{err:.2000}");
}

/// The server's refusal of the key, echoing it, is shown without it.
#[tokio::test]
async fn an_echoed_key_is_not_shown() {
    let project = wasm_project();
    let server = MockServer::start(Arc::new(|req: &MockRequest| {
        MockResponse::json(
            401,
            &json!({"error": {"code": "unknown_account", "message": format!("no account for {}", req.header("authorization").unwrap_or_default())}}),
        )
    }))
    .await
    .unwrap();
    let (code, out, err) = deploy(project.path(), &server.url()).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("HTTP 401") && err.contains("no account for Bearer ***"),
        "{err}"
    );
    assert!(!err.contains(KEY), "{err}");
}

/// A success that is not a sluice server's answer (a proxy's page) was
/// "Deployed version null", exit 0.
#[tokio::test]
async fn a_success_answer_that_is_not_json_is_an_error() {
    let project = wasm_project();
    for (answer, problem) in [
        (
            MockResponse {
                status: 200,
                headers: vec![("content-type".into(), "text/html".into())],
                body: b"<html>Welcome to nginx!</html>".to_vec(),
                delay: None,
            },
            "is not JSON (<html>Welcome to nginx!</html>), not a sluice server's",
        ),
        (
            MockResponse::json(200, &json!({"ok": true})),
            "is JSON without the deployment's `version` ({\"ok\":true}), not a sluice server's",
        ),
    ] {
        let server = mock(move |_: &MockRequest| answer.clone()).await;
        let (code, out, err) = deploy(project.path(), &server.url()).await;
        assert_ne!(code, 0, "{out}\n{err}");
        assert!(!out.contains("Deployed"), "{out}");
        assert!(
            err.contains(&format!(
                "the answer to {}/sluice/deploy (HTTP 200) {problem}",
                server.url()
            )),
            "{err}"
        );
        assert!(
            err.contains("whether the project was deployed is not known"),
            "{err}"
        );
    }
}

/// Where the deploy goes, and where the server and the key came from, is
/// said before anything is sent; plain http:// to another machine is
/// warned of, to this one not.
#[tokio::test]
async fn the_target_is_said_first_and_plain_http_elsewhere_is_warned_of() {
    let project = wasm_project();
    let (code, _, err) = deploy(project.path(), "http://sluice-test.invalid:3003").await;
    assert_ne!(code, 0);
    let said = "Deploying to http://sluice-test.invalid:3003 (environment `dev`; the server from --host, the secret key from --secret-key)";
    let warned = "warning: http://sluice-test.invalid:3003 (--host) is plain http:// to another machine: the deploy sends the secret key (--secret-key) unencrypted";
    let reach = "cannot reach the server at http://sluice-test.invalid:3003/sluice/environment";
    let at = |text: &str| {
        err.find(text)
            .unwrap_or_else(|| panic!("{text} missing: {err}"))
    };
    assert!(at(warned) < at(reach) && at(said) < at(reach), "{err}");

    // A cloned project's .env naming the server is said to.
    let server = mock(|_: &MockRequest| {
        MockResponse::json(200, &json!({"version": 1, "environment": "dev"}))
    })
    .await;
    std::fs::write(
        project.path().join(".env"),
        format!("NANGO_HOSTPORT={}\n", server.url()),
    )
    .unwrap();
    if std::env::var_os("NANGO_HOSTPORT").is_none() {
        let (code, out, err) = sluice(&[
            "deploy",
            "--cache-dir",
            guests::CACHE_DIR,
            "--dir",
            &s(project.path()),
            "--build-dir",
            &s(&project.path().join("build")),
            "--secret-key",
            KEY,
        ])
        .await;
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(
            err.contains(&format!(
                "Deploying to {} (environment `dev`; the server from NANGO_HOSTPORT in {}, the secret key from --secret-key)",
                server.url(),
                project.path().join(".env").display()
            )),
            "{err}"
        );
        assert!(!err.contains("warning:"), "{err}");
        assert!(out.contains("Deployed version 1 to `dev`"), "{out}");
    }
}
