//! `sluice dryrun` as a user runs it (in process: same code as the binary).

use serde_json::{Value, json};
use sluice_tests::{guests, repo_root};

async fn sluice(args: &[&str]) -> (i32, String, String) {
    let mut argv = vec!["sluice".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv.extend(["--cache-dir".to_string(), guests::CACHE_DIR.to_string()]);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = sluice::cli::run(argv.into_iter().map(Into::into), &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn example_dir() -> String {
    repo_root()
        .join("examples/hubspot-rust")
        .display()
        .to_string()
}

fn fixture() -> String {
    repo_root()
        .join("examples/hubspot-rust/mock-api.yaml")
        .display()
        .to_string()
}

#[tokio::test]
async fn dryrun_of_a_sync_prints_what_it_would_save() {
    let dir = example_dir();
    let fx = fixture();
    let (code, out, err) = sluice(&[
        "dryrun",
        guests::HUBSPOT_RUST_CONTACTS,
        "demo",
        "--dir",
        &dir,
        "--mock-upstream",
        &fx,
        "--diagnostics",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("The dry run would produce the following results: {"),
        "{out}"
    );
    assert!(out.contains("\"Lovelace\""), "{out}");
    assert!(out.contains("[info] saved 5 contacts"), "{out}");
    assert!(!err.contains("was not used"), "{err}");
    // `--diagnostics`: what the run used of its limits (the defaults).
    let used = |what: &str| {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(what))
            .unwrap_or_else(|| panic!("no {what} line in {out}"));
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert!(out.contains("Diagnostics:"), "{out}");
    assert!(used("CPU") > 0.0, "{out}");
    assert!(used("memory") > 0.0, "{out}");
    assert!(out.contains("(the limit is 256.0 MiB per memory)"), "{out}");

    // An input given to a sync is said to be unused, not silently dropped.
    let (code, _, err) = sluice(&[
        "dryrun",
        guests::HUBSPOT_RUST_CONTACTS,
        "demo",
        "--dir",
        &dir,
        "--mock-upstream",
        &fx,
        "--input",
        "{}",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("note: --input (only an action takes an input) was not used by"),
        "{err}"
    );
}

#[tokio::test]
async fn dryrun_json_is_machine_readable() {
    let dir = example_dir();
    let fx = fixture();
    let (code, out, _) = sluice(&[
        "dryrun",
        guests::HUBSPOT_RUST_CONTACTS,
        "demo",
        "--dir",
        &dir,
        "--mock-upstream",
        &fx,
        "--json",
        "--lastSyncDate",
        "2024-01-02",
        // The original's global flags and its current name for --validation.
        "--auto-confirm",
        "--no-interactive",
        "--no-dependency-update",
        "--no-telemetry",
        "--validate",
    ])
    .await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["success"], true);
    assert_eq!(v["kind"], "sync");
    assert_eq!(
        v["models"]["Contact"]["batchSave"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(v["models"]["Contact"]["changes"]["added"], 5);
    let logs = v["logs"].as_array().unwrap();
    assert!(
        logs.iter()
            .any(|l| l["message"] == "last successful sync started at 2024-01-02T00:00:00.000Z"),
        "{logs:?}"
    );
}

#[tokio::test]
async fn dryrun_of_an_action_prints_its_output_and_reads_input_files() {
    let dir = example_dir();
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input.json");
    std::fs::write(&input, json!({"email": "k@example.com"}).to_string()).unwrap();
    let at_input = format!("@{}", input.display());
    let (code, out, err) = sluice(&[
        "dryrun",
        guests::HUBSPOT_RUST_CREATE_CONTACT,
        "demo",
        "--dir",
        &dir,
        "--mock-upstream",
        &fx,
        "--input",
        &at_input,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"id\": \"201\""), "{out}");
}

#[tokio::test]
async fn a_failing_script_exits_1_with_its_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("connections.yaml"),
        "connections:\n  - connection_id: c\n    provider_config_key: hubspot\n    provider: hubspot\n    credentials: {type: API_KEY, apiKey: k}\n",
    )
    .unwrap();
    let dir = tmp.path().display().to_string();
    let (code, out, _) = sluice(&[
        "dryrun",
        guests::ACTION_MISBEHAVE,
        "c",
        "--dir",
        &dir,
        "--input",
        r#"{"mode":"action-error"}"#,
    ])
    .await;
    assert_eq!(code, 1);
    assert!(
        out.contains(
            "error: script failed: action script runtime error (action_script_runtime_error)"
        ),
        "{out}"
    );
    assert!(out.contains("\"card declined\""), "{out}");

    // A sync that fails after saving: no results line (it read as a
    // successful empty run), what it saved said as such.
    let (code, out, _) = sluice(&[
        "dryrun",
        guests::SYNC_RECORDS,
        "c",
        "--dir",
        &dir,
        "--metadata",
        r#"{"model":"Item","save":[{"id":"1"}],"fail_after":true}"#,
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("would produce"), "{out}");
    assert!(out.contains("Before it failed, the run saved"), "{out}");
    assert!(out.contains("failing after the writes"), "{out}");
}

#[tokio::test]
async fn bad_invocations_exit_2_naming_the_problem() {
    let dir = example_dir();
    let contacts = guests::HUBSPOT_RUST_CONTACTS;
    let cases: &[(&[&str], &[&str])] = &[
        (
            &[contacts, "nobody"],
            &["no connection `nobody`", "(it has: demo)"],
        ),
        (
            &[contacts, "demo", "--input", "{not json"],
            &["--input is not valid JSON"],
        ),
        (
            &["/no/such/script.wasm", "demo"],
            &["cannot find script `/no/such/script.wasm`"],
        ),
        (
            &[contacts, "demo", "--lastSyncDate", "yesterday"],
            &[
                "`yesterday` is not a date: expected RFC 3339, YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS] (UTC)",
            ],
        ),
        (
            &[contacts, "demo", "--metadata", "[1,2]"],
            &["--metadata must be a JSON object", "[1,2]"],
        ),
    ];
    for (args, expected) in cases {
        let mut argv = vec!["dryrun", "--dir", &dir];
        argv.extend_from_slice(args);
        let (code, _, err) = sluice(&argv).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        for e in *expected {
            assert!(err.contains(e), "{args:?}: expected `{e}` in: {err}");
        }
    }

    // connections.yaml: a misspelt field or credentials type is named
    // (it was ignored: a run without credentials or metadata), and a
    // connection of another integration is said to be that.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("connections.yaml");
    let conns = file.display().to_string();
    let entry = "connections:\n  - connection_id: demo\n    provider_config_key: other\n    provider: hubspot\n";
    let argv = [
        "dryrun",
        "--dir",
        &dir,
        contacts,
        "demo",
        "--connections",
        &conns,
        "--integration-id",
        "hubspot",
    ];
    for (extra, expected) in [
        (
            "    credentials: {type: oauth2, access_token: t}\n",
            "connections[0]: credentials type `oauth2` is written `OAUTH2`",
        ),
        (
            "    credentials: {type: OAUTH2}\n",
            "OAUTH2 credentials need a string `access_token`",
        ),
        (
            "    credentials: {type: OAUTH2, access_token: t}\n    metdata: {a: 1}\n",
            "connections[0]: unknown field `metdata`",
        ),
        (
            "    credentials: {type: OAUTH2, access_token: t}\n",
            "no connection `demo` for integration `hubspot` in",
        ),
    ] {
        std::fs::write(&file, format!("{entry}{extra}")).unwrap();
        let (code, _, err) = sluice(&argv).await;
        assert_eq!(code, 2, "{extra}: {err}");
        assert!(
            err.contains(expected),
            "{extra}: expected `{expected}` in: {err}"
        );
    }
    // A mock fixture status HTTP has no use for is refused, naming the
    // route (it was served as a 200).
    let fixture = tmp.path().join("mock.yaml");
    std::fs::write(&fixture, "routes:\n  - path: /x\n    status: 99\n").unwrap();
    let fixture = fixture.display().to_string();
    let (code, _, err) = sluice(&[
        "dryrun",
        "--dir",
        &dir,
        contacts,
        "demo",
        "--mock-upstream",
        &fixture,
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("routes[0] (GET /x): status 99 is not an HTTP status"),
        "{err}"
    );
    assert!(
        sluice(&argv)
            .await
            .2
            .contains("(it has: demo for integration `other`)")
    );

    // A folder that is not a project is named as such, by every verb.
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().display().to_string();
    let zero = repo_root()
        .join("examples/github-zero")
        .display()
        .to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &["compile", "--dir", "/no/such/folder"],
            "/no/such/folder does not exist or is not a folder",
        ),
        (
            &["dryrun", "issues", "demo", "--dir", "/no/such/folder"],
            "/no/such/folder does not exist or is not a folder",
        ),
        (
            &["test", "--dir", &empty],
            "it has neither a nango.yaml nor an index.ts",
        ),
    ];
    for (argv, expected) in cases {
        let (code, _, err) = sluice(argv).await;
        assert_eq!(code, 2, "{argv:?}: {err}");
        assert!(
            err.contains(expected),
            "{argv:?}: expected `{expected}` in: {err}"
        );
    }
    // An input past max_payload_bytes is refused before the script runs.
    let small = tempfile::tempdir().unwrap();
    std::fs::write(
        small.path().join("connections.yaml"),
        "connections:\n  - connection_id: c\n    provider_config_key: hubspot\n    provider: hubspot\n    credentials: {type: API_KEY, apiKey: k}\n",
    )
    .unwrap();
    std::fs::write(
        small.path().join("sluice.yaml"),
        "environments:\n  dev:\n    limits:\n      max_payload_bytes: 100\n",
    )
    .unwrap();
    let big = format!("{{\"mode\":\"{}\"}}", "x".repeat(200));
    let small_dir = small.path().display().to_string();
    let (code, _, err) = sluice(&[
        "dryrun",
        guests::ACTION_MISBEHAVE,
        "c",
        "--dir",
        &small_dir,
        "--input",
        &big,
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("payload_too_large: --input is 211 bytes"),
        "{err}"
    );
    // A cause is said once (it was repeated after the message naming it).
    let (code, _, err) = sluice(&[
        "dryrun",
        "--dir",
        &dir,
        contacts,
        "demo",
        "--mock-upstream",
        "/no/such/fixture.yaml",
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
    // `generate` (no cache to name) on a zero-yaml project says why not.
    let argv = ["sluice", "generate", "--dir", &zero].map(String::from);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = sluice::cli::run(argv.into_iter().map(Into::into), &mut out, &mut err).await;
    let err = String::from_utf8(err).unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a zero-yaml project"), "{err}");
}

/// A dry run's script may name the other connections of connections.yaml
/// (another connection's credentials on a request), as a deployed one may
/// its environment's; it knew only its own.
#[tokio::test]
async fn a_dry_run_may_name_the_other_connections_of_connections_yaml() {
    use sluice_tests::{MockRequest, MockResponse, MockServer};
    let mock = MockServer::start(std::sync::Arc::new(|req: &MockRequest| {
        MockResponse::json(200, &json!({"auth": req.header("authorization")}))
    }))
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("providers.yaml"),
        format!(
            "mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: {}\n",
            mock.url()
        ),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("connections.yaml"),
        "connections:\n  - connection_id: c1\n    provider_config_key: mock-int\n    provider: mock\n    credentials: {type: OAUTH2, access_token: tok-1}\n  - connection_id: c2\n    provider_config_key: mock-int\n    provider: mock\n    credentials: {type: OAUTH2, access_token: tok-2}\n",
    )
    .unwrap();
    let dir = tmp.path().display().to_string();
    let providers = tmp.path().join("providers.yaml").display().to_string();
    let (code, out, err) = sluice(&[
        "dryrun",
        guests::ACTION_PROXY,
        "c1",
        "--dir",
        &dir,
        "--providers",
        &providers,
        "--input",
        r#"{"endpoint": "/who", "connection": ["mock-int", "c2"]}"#,
    ])
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Bearer tok-2"), "{out}");
}

/// A project with `nango` installed has the original's whole providers
/// catalogue (`node_modules/@nangohq/providers/providers.yaml`): a dry run
/// reads it without `--providers`, and says what to do when it is not
/// there.
#[tokio::test]
async fn a_dry_run_reads_the_installed_originals_providers_catalogue() {
    use sluice_tests::{MockRequest, MockResponse, MockServer};
    let mock = MockServer::start(std::sync::Arc::new(|req: &MockRequest| {
        MockResponse::json(200, &json!({"auth": req.header("authorization")}))
    }))
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("connections.yaml"),
        "connections:\n  - connection_id: c1\n    provider_config_key: acme-int\n    provider: acme-crm\n    credentials: {type: OAUTH2, access_token: tok-1}\n",
    )
    .unwrap();
    let dir = tmp.path().display().to_string();
    let args = [
        "dryrun",
        guests::ACTION_PROXY,
        "c1",
        "--dir",
        &dir,
        "--debug",
        "--input",
        r#"{"endpoint": "/who"}"#,
    ];
    let run = || sluice(&args);
    let (code, out, err) = run().await;
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("`acme-crm` is not in the providers catalogue") && err.contains("npm install"),
        "{err}"
    );
    let installed = tmp.path().join("node_modules/@nangohq/providers");
    std::fs::create_dir_all(&installed).unwrap();
    std::fs::write(
        installed.join("providers.yaml"),
        format!(
            "acme-crm:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: {}\n",
            mock.url()
        ),
    )
    .unwrap();
    let (code, out, err) = run().await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Bearer tok-1"), "{out}");
    assert!(
        err.contains("built-in, 1 from")
            && err.contains("node_modules/@nangohq/providers/providers.yaml"),
        "{err}"
    );
}

/// A dry run says how many log lines it left out past the limits (it
/// showed the first ones and said nothing of the rest).
#[tokio::test]
async fn a_dry_run_says_how_many_log_lines_it_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("connections.yaml"),
        "connections:\n  - connection_id: c\n    provider_config_key: hubspot\n    provider: hubspot\n    credentials: {type: API_KEY, apiKey: k}\n",
    )
    .unwrap();
    let dir = tmp.path().display().to_string();
    let (code, out, err) = sluice(&[
        "dryrun",
        guests::ACTION_MISBEHAVE,
        "c",
        "--dir",
        &dir,
        "--input",
        r#"{"mode":"log-flood"}"#,
    ])
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let shown = out
        .lines()
        .filter(|l| l.starts_with("[info] line "))
        .count();
    assert!(shown < 1_000, "{shown} lines shown");
    assert!(
        out.contains(&format!(
            "[warn] {} more log lines were left out",
            1_000 - shown
        )),
        "{}",
        out.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
}

/// A data directory whose store lost its master.key is refused, and no new
/// key is written there (one was, while the message said nothing changed).
#[tokio::test]
async fn serve_refuses_a_store_without_its_master_key_and_writes_none() {
    if std::env::var_os("SLUICE_MASTER_KEY").is_some() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("db")).unwrap();
    let dir = tmp.path().display().to_string();
    let (code, out, err) = sluice(&["serve", "--data", &dir, "--listen", "127.0.0.1:0"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("holds a store but no master.key"), "{err}");
    assert!(!tmp.path().join("master.key").exists());
}

/// `serve --store postgres`: the connection string is needed, only for
/// it, never beside an embedded store's data directory, and never printed
/// (a server that cannot be reached is named without its password).
#[tokio::test]
async fn serve_on_postgres_refuses_what_cannot_work() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data").display().to_string();
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--data", &data, "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sluice(&args).await
        }
    };
    let (code, _, err) = serve(&["--store", "postgres"]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("--store postgres needs --database-url"),
        "{err}"
    );
    let (code, _, err) = serve(&["--store", "redb", "--database-url", "postgres://h/db"]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("--database-url is for --store postgres"),
        "{err}"
    );
    let (code, _, err) = serve(&["--store", "sled", "--standby"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("--standby waits for a store"), "{err}");
    // Backups are of embedded stores, outside their data directory, at
    // most once a minute.
    let backups = tmp.path().join("backups").display().to_string();
    let (code, _, err) = serve(&[
        "--database-url",
        "postgres://u:pw@127.0.0.1:1/db",
        "--backup-dir",
        &backups,
    ])
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("PostgreSQL's own tools"), "{err}");
    let inside = format!("{data}/backups");
    let (code, _, err) = serve(&["--store", "sled", "--backup-dir", &inside]).await;
    assert_ne!(code, 0);
    assert!(err.contains("is inside the data directory"), "{err}");
    let (code, _, err) = serve(&["--backup-dir", &backups, "--backup-every", "30s"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("the unit is m, h or d"), "{err}");
    let (code, _, err) = serve(&["--database-url", "postgres://u:pw@h:notaport/db"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("does not parse"), "{err}");
    assert!(!err.contains("pw@"), "{err}");
    // Nothing listens on port 1: refused, naming the server but not the
    // password.
    let (code, _, err) = serve(&[
        "--store",
        "postgres",
        "--database-url",
        "postgres://someone:hunter2@127.0.0.1:1/db",
    ])
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("postgres://someone@127.0.0.1:1/db"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    // A data directory with a sled store in it is not given to PostgreSQL.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(dir.join("db")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = dir.join("master.key");
        std::fs::write(&key, sluice_store::MasterKey::generate().to_base64()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (code, _, err) = serve(&["--database-url", "postgres://someone@127.0.0.1:1/db"]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("holds a sled database") && err.contains("a data directory of its own"),
        "{err}"
    );
}

/// `serve --limits FILE`: a file that is not sluice.yaml's format, or that
/// sets limits for an environment the server lacks, stops the start with
/// the reason (the limits would otherwise be silently the defaults).
#[tokio::test]
async fn serve_refuses_a_limits_file_it_cannot_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data").display().to_string();
    let file = tmp.path().join("limits.yaml");
    let serve = |file: &std::path::Path| {
        let file = file.display().to_string();
        let data = data.clone();
        async move {
            sluice(&[
                "serve",
                "--data",
                &data,
                "--listen",
                "127.0.0.1:0",
                "--limits",
                &file,
            ])
            .await
        }
    };
    std::fs::write(
        &file,
        "environments:\n  prod:\n    limits:\n      fule: 10\n",
    )
    .unwrap();
    let (code, _, err) = serve(&file).await;
    assert_ne!(code, 0);
    assert!(err.contains("is not a valid limits file"), "{err}");
    assert!(err.contains("unknown field `fule`"), "{err}");
    std::fs::write(
        &file,
        "environments:\n  staging:\n    limits:\n      allowed_hosts: [\"api.example.com\"]\n",
    )
    .unwrap();
    let (code, _, err) = serve(&file).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("limits are set for environment `staging`, which this server does not have (it has `dev`, `prod`)"),
        "{err}"
    );
    // Limits no script could run under are refused, naming the field.
    for (limits, says) in [
        ("memory_bytes: 10", "`memory_bytes: 10` is below"),
        ("fuel: 10", "`fuel: 10` is below"),
        (
            "timeouts: {action: 0, sync: 60, webhook: 60, on_event: 60}",
            "`timeouts.action` is 0",
        ),
        // A time past what a clock holds (every run of it panicked).
        (
            "timeouts: {action: 1e19, sync: 60, webhook: 60, on_event: 60}",
            "`timeouts.action` is 10000000000000000000 s, more than a year",
        ),
        (
            "allowed_hosts: [\"http://api.example.com\"]",
            "entry `http://api.example.com` is not a host name",
        ),
    ] {
        std::fs::write(
            &file,
            format!("environments:\n  prod:\n    limits:\n      {limits}\n"),
        )
        .unwrap();
        let (code, _, err) = serve(&file).await;
        assert_ne!(code, 0, "{limits}");
        assert!(
            err.contains("the limits of environment `prod`") && err.contains(says),
            "{limits}: {err}"
        );
    }
    // A public URL that is not one would make every webhook URL wrong.
    let (code, _, err) = sluice(&[
        "serve",
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--public-url",
        "notaurl",
    ])
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("--public-url `notaurl` is not a URL"), "{err}");
}

/// `sluice version`, as the original's `nango version`: the CLI's version,
/// and the contract its scripts are built against.
#[tokio::test]
async fn version_names_the_script_contract() {
    let mut out = Vec::new();
    let code = sluice::cli::run(
        ["sluice", "version"].map(Into::into),
        &mut out,
        &mut Vec::new(),
    )
    .await;
    assert_eq!(code, 0);
    let out = String::from_utf8(out).unwrap();
    let wit = std::fs::read_to_string(repo_root().join("wit/nango.wit")).unwrap();
    let package = wit
        .lines()
        .find_map(|l| l.strip_prefix("package "))
        .and_then(|p| p.strip_suffix(';'))
        .unwrap();
    assert_eq!(
        out,
        format!(
            "sluice {} (scripts: {package})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// `--debug` on any command (the original's global flag): what the
/// command decided, on stderr; nothing of it without the flag.
#[tokio::test]
async fn debug_says_what_the_command_decided() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("nango.yaml"),
        "integrations: {}\nmodels: {}\n",
    )
    .unwrap();
    let run = |debug: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-under-test"));
        command.args(["compile", "--dir"]).arg(tmp.path());
        command.args(["--cache-dir", guests::CACHE_DIR]);
        if debug {
            command.arg("--debug");
        }
        command.output().unwrap()
    };
    let quiet = run(false);
    assert!(quiet.status.success(), "{quiet:?}");
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("debug:"));
    let said = run(true);
    assert!(said.status.success(), "{said:?}");
    let err = String::from_utf8_lossy(&said.stderr);
    assert!(
        err.contains(&format!(
            "debug: {}: a nango.yaml project; builds in {}",
            tmp.path().display(),
            tmp.path().join(".sluice/build").display()
        )),
        "{err}"
    );
}

/// The Rust SDK as a script uses it, in a project made by `init --rust`
/// (its SDK copy) and run by a dry run against a live upstream: a binary
/// body arrives as its bytes (not UTF-8, not replaced); a pagination
/// gives each page with what the original's `on_page` receives (the next
/// page's parameter and the page's response).
#[tokio::test]
async fn a_rust_script_sends_bytes_and_reads_each_pages_next_cursor() {
    use sluice_tests::{MockRequest, MockResponse, MockServer};
    let mock = MockServer::start(std::sync::Arc::new(|req: &MockRequest| {
        match (req.path.as_str(), req.query_param("cursor")) {
            ("/upload", _) => MockResponse::json(201, &json!({"stored": req.body.len()})),
            ("/items", None) => MockResponse::json(200, &json!({"items": [1, 2], "next": "c2"})),
            ("/items", Some("c2")) => MockResponse::json(200, &json!({"items": [3]})),
            _ => MockResponse::json(404, &json!({})),
        }
    }))
    .await
    .unwrap();
    let dir = std::path::PathBuf::from(guests::BUILD_DIR).join("rust-sdk-project");
    let _ = std::fs::remove_dir_all(&dir);
    sluice_project::init::init(&dir, sluice_project::init::Starter::Rust).unwrap();
    std::fs::write(
        dir.join("nango.yaml"),
        "integrations:\n    mock-int:\n        actions:\n            sdk-check:\n                endpoint: POST /check\nmodels: {}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("connections.yaml"),
        "connections:\n  - connection_id: c1\n    provider_config_key: mock-int\n    provider: mock\n    credentials: {type: OAUTH2, access_token: tok-1}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("providers.yaml"),
        format!(
            "mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: {}\n",
            mock.url()
        ),
    )
    .unwrap();
    let starter = dir.join("demo-github-integration/actions/create-issue");
    let krate = dir.join("mock-int/actions/sdk-check");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    // The starter's versions: built with what the SDK is tested with.
    std::fs::copy(starter.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"sdk-check\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n[dependencies]\nsluice-sdk = { path = \"../../../sluice-sdk\" }\nserde_json = \"1\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        krate.join("src/main.rs"),
        r#"use serde_json::{Value, json};
use sluice_sdk::{Error, Nango, action};

#[action]
fn run(nango: &Nango, _input: Option<Value>) -> Result<Value, Error> {
    let stored = nango
        .post("/upload")
        .bytes(vec![0u8, 159, 146, 150, 255])
        .header("content-type", "application/octet-stream")
        .send()?
        .json::<Value>()?;
    let config = json!({
        "type": "cursor",
        "cursor_path_in_response": "next",
        "cursor_name_in_request": "cursor",
        "response_path": "items",
    });
    let mut pages = Vec::new();
    for page in nango.get("/items").paginate::<u32>(Some(config)).with_page_info() {
        let (items, info) = page?;
        let info = info.ok_or_else(|| Error::msg("no page info"))?;
        pages.push(json!({
            "items": items,
            "next": info.next_page_param,
            "status": info.response.map(|r| r.status),
        }));
    }
    Ok(json!({"stored": stored, "pages": pages}))
}

fn main() {}
"#,
    )
    .unwrap();
    let build = std::path::Path::new(guests::BUILD_DIR).join("rust-projects-build");
    let (code, out, err) = sluice(&[
        "dryrun",
        "sdk-check",
        "c1",
        "--dir",
        &dir.display().to_string(),
        "--providers",
        &dir.join("providers.yaml").display().to_string(),
        "--build-dir",
        &build.display().to_string(),
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["output"],
        json!({
            "stored": {"stored": 5},
            "pages": [
                {"items": [1, 2], "next": "c2", "status": 200},
                {"items": [3], "next": null, "status": 200},
            ],
        }),
        "{out}"
    );
    let upload = mock
        .requests()
        .into_iter()
        .find(|r| r.path == "/upload")
        .unwrap();
    assert_eq!(upload.body, [0u8, 159, 146, 150, 255]);
    assert_eq!(
        upload.header("content-type"),
        Some("application/octet-stream")
    );
}
