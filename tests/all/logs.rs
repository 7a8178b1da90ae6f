//! Execution logs and history: found by search, paged, exported as NDJSON,
//! credentials never in them, and dropped by the retention.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_runtime::ScriptKind;
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::guests;

use crate::scheduler::Upstream;
use sluice_server::Server;

use crate::server::{Client, DEV_KEY, deploy_scripts, start_with};

const YAML: &str = "
integrations:
  hubspot:
    syncs:
      contacts:
        runs: every hour
        auto_start: false
        output: Contact
        endpoint: GET /contacts
models:
  Contact:
    id: string
";

const TOKEN: &str = "very-secret-token-4711";

async fn server(
    up: &Upstream,
    config: impl FnOnce(&mut ServerConfig),
) -> (Server, Client, tempfile::TempDir) {
    let (server, client, data, _) = server_and_key(up, config).await;
    (server, client, data)
}

/// [`server`], and its master key (to start it again).
async fn server_and_key(
    up: &Upstream,
    config: impl FnOnce(&mut ServerConfig),
) -> (Server, Client, tempfile::TempDir, MasterKey) {
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let mut c = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config(&mut c);
    let server = start_with(c, &master, &up.providers()).await;
    let client = Client::new(&server, DEV_KEY);
    deploy_scripts(
        &client,
        YAML,
        "hubspot",
        &[(guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync)],
    )
    .await;
    client
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
        )
        .await;
    client
        .send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "hubspot", "connection_id": "demo", "access_token": TOKEN})),
        )
        .await;
    let (code, out) = client
        .send(
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["runs"][0]["success"], true, "{out}");
    (server, client, data, master)
}

async fn logs(c: &Client, query: &str) -> Value {
    let (code, out) = c.send("GET", &format!("/logs?{query}"), None).await;
    assert_eq!(code, 200, "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executions_logs_are_found_paged_exported_and_hold_no_credentials() {
    let up = Upstream::start().await;
    let (server, c, _data) = server(&up, |_| {}).await;

    // The script's own line, found by text.
    let found = logs(&c, "connection_id=demo&q=SAVED%202").await;
    let lines = found["logs"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{found}");
    assert_eq!(lines[0]["message"], "saved 2 contacts");
    assert_eq!(lines[0]["script"], "contacts");
    assert_eq!(lines[0]["source"], "user");
    let execution = lines[0]["execution_id"].as_str().unwrap().to_string();

    // All of that execution's lines: its HTTP attempt too, newest first.
    let all = logs(&c, &format!("execution_id={execution}")).await;
    let all = all["logs"].as_array().unwrap().clone();
    assert!(all.len() >= 2, "{all:?}");
    assert!(
        all.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .contains("/crm/v3/objects/contacts")),
        "{all:?}"
    );
    let times: Vec<&str> = all.iter().map(|l| l["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    // A window of one line's `at` as shown takes that line (it had been
    // compared to the nanosecond, past what is shown).
    let at = lines[0]["at"].as_str().unwrap().replace('+', "%2B");
    let one = logs(&c, &format!("execution_id={execution}&from={at}&to={at}")).await;
    assert!(
        one["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"] == "saved 2 contacts"),
        "{one}"
    );
    // Filters that exclude it.
    assert_eq!(logs(&c, "level=error").await["logs"], json!([]));
    assert_eq!(logs(&c, "script=other").await["logs"], json!([]));
    assert_eq!(logs(&c, "to=2000-01-01T00:00:00Z").await["logs"], json!([]));
    let (code, out) = c.send("GET", "/logs?level=loud", None).await;
    assert_eq!(
        (code, out["error"]["code"].as_str()),
        (400, Some("invalid_query_params"))
    );
    // A filter given twice is refused, not silently replaced.
    let (code, out) = c
        .send("GET", "/logs?connection_id=demo&connection_id=other", None)
        .await;
    assert_eq!(
        (code, out["error"]["message"].as_str()),
        (400, Some("`connection_id` is given more than once")),
        "{out}"
    );

    // Pages of one line walk the same lines.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(cur) => format!("connection_id=demo&limit=1&cursor={cur}"),
            None => "connection_id=demo&limit=1".into(),
        };
        let page = logs(&c, &q).await;
        paged.extend(page["logs"].as_array().unwrap().clone());
        match page["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
        assert!(paged.len() <= all.len(), "paging does not end");
    }
    assert_eq!(paged, all);

    // The export: NDJSON, oldest first, the same lines.
    let resp = c
        .http
        .get(format!("{}/logs/export?connection_id=demo", c.base))
        .bearer_auth(DEV_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    let exported: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut newest_first = exported.clone();
    newest_first.reverse();
    assert_eq!(newest_first, all);
    assert!(!text.contains(TOKEN), "a credential in the logs");

    // The connection's history.
    let (code, h) = c
        .send(
            "GET",
            "/executions?provider_config_key=hubspot&connection_id=demo",
            None,
        )
        .await;
    assert_eq!(code, 200, "{h}");
    let e = &h["executions"][0];
    assert_eq!(e["id"], execution.as_str());
    assert_eq!(e["script"], "contacts");
    assert_eq!(e["kind"], "sync");
    assert_eq!(e["success"], true);
    assert_eq!(e["changes"]["Contact"]["added"], 2, "{e}");
    assert!(
        e["duration_ms"].is_u64() && e["fuel"].as_u64().unwrap() > 0,
        "{e}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_drops_old_logs() {
    let up = Upstream::start().await;
    let (server, c, _data) = server(&up, |c| {
        c.log_retention_bytes = 1;
        c.log_retention_every = Duration::from_millis(100);
    })
    .await;
    // A log goes first, then its history entry (two writes): both go.
    let history = || async {
        let (_, h) = c
            .send(
                "GET",
                "/executions?provider_config_key=hubspot&connection_id=demo",
                None,
            )
            .await;
        h["executions"].clone()
    };
    let t = Instant::now();
    while logs(&c, "connection_id=demo").await["logs"] != json!([]) || history().await != json!([])
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the logs or history were kept: {}",
            history().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// A crash between an execution's history entry and its log (written in
/// that order) leaves an entry the retention, which walks the logs, would
/// never delete: a start deletes such entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_drops_history_entries_a_crash_left_without_their_log() {
    let up = Upstream::start().await;
    let (server, c, data, master) = server_and_key(&up, |_| {}).await;
    let history = |c: &Client| {
        let c = Client::at(&c.base, DEV_KEY);
        async move {
            let (code, h) = c
                .send(
                    "GET",
                    "/executions?provider_config_key=hubspot&connection_id=demo",
                    None,
                )
                .await;
            assert_eq!(code, 200, "{h}");
            h["executions"].as_array().unwrap().clone()
        }
    };
    let before = history(&c).await;
    assert_eq!(before.len(), 1, "{before:?}");
    // A log filter is not an execution filter: refused, not ignored.
    let (code, out) = c
        .send(
            "GET",
            "/executions?provider_config_key=hubspot&connection_id=demo&execution_id=nope",
            None,
        )
        .await;
    assert_eq!(code, 400, "{out}");
    assert_eq!(out["error"]["code"], "invalid_query_params", "{out}");
    // What the crash left: an entry whose log was never written.
    let mut orphan = before[0].clone();
    orphan["id"] = json!("orphan-1");
    let env = server
        .app
        .envs()
        .find(|e| e.name() == "dev")
        .unwrap()
        .clone();
    env.store
        .put_doc("executions", "hubspot\u{1f}demo\u{1f}orphan-1", &orphan)
        .await
        .unwrap();
    assert_eq!(history(&c).await.len(), 2);
    drop(env);
    server.stop().await;

    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &master, &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    let after = history(&c).await;
    assert_eq!(
        after, before,
        "the entry with its log stays, the orphan goes"
    );
    server.stop().await;
}

/// A connection whose sync failed lists it in its `errors` (§1.5:
/// `{type: "sync", log_id}`, the log id finding the run's logs) until a
/// run of the sync succeeds; before, a failed sync never showed there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_is_in_its_connections_errors_until_a_run_succeeds() {
    let up = Upstream::start().await;
    let (server, c, _data) = server(&up, |_| {}).await;
    // With an action beside the sync: a script's `getConnection` shows the
    // errors too, as the original's (its SDK reads `GET /connection/:id`).
    let yaml = YAML.replace(
        "models:",
        "    actions:\n      features:\n        endpoint: POST /features\nmodels:",
    );
    deploy_scripts(
        &c,
        &yaml,
        "hubspot",
        &[
            (guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync),
            (guests::ACTION_FEATURES, "features", ScriptKind::Action),
        ],
    )
    .await;
    let seen_by_script = || async {
        c.send_as(
            ("hubspot", "broken"),
            "POST",
            "/action/trigger",
            Some(json!({"action_name": "features", "input": {}})),
        )
        .await
    };
    let import = |token: &str| json!({"provider_config_key": "hubspot", "connection_id": "broken", "access_token": token});
    let (code, out) = c
        .send("POST", "/connection", Some(import("revoked-token")))
        .await;
    assert_eq!(code, 201, "{out}");
    let run = || async {
        let (code, out) = c
            .send(
                "POST",
                "/sync/trigger",
                Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "broken", "wait": true})),
            )
            .await;
        assert_eq!(code, 200, "{out}");
        out["runs"][0]["success"].as_bool().unwrap()
    };
    let errors = || async {
        let (code, one) = c
            .send(
                "GET",
                "/connection/broken?provider_config_key=hubspot",
                None,
            )
            .await;
        assert_eq!(code, 200, "{one}");
        let (code, list) = c.send("GET", "/connection?connectionId=broken", None).await;
        assert_eq!(code, 200, "{list}");
        assert_eq!(list["connections"][0]["errors"], one["errors"], "{list}");
        one["errors"].clone()
    };
    assert_eq!(errors().await, json!([]));
    let (code, out) = seen_by_script().await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["connection"]["errors"], json!([]), "{out}");
    assert!(!run().await, "a revoked token fails the run");
    let errs = errors().await;
    assert_eq!(errs.as_array().unwrap().len(), 1, "{errs}");
    assert_eq!(errs[0]["type"], "sync", "{errs}");
    let (code, out) = seen_by_script().await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["connection"]["errors"], errs, "{out}");
    let log_id = errs[0]["log_id"].as_str().unwrap();
    let lines = logs(&c, &format!("execution_id={log_id}")).await;
    let lines = lines["logs"].as_array().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "error" && l["script"] == "contacts"),
        "{lines:?}"
    );
    // The other connection's sync succeeded: nothing there.
    let (_, demo) = c
        .send("GET", "/connection/demo?provider_config_key=hubspot", None)
        .await;
    assert_eq!(demo["errors"], json!([]), "{demo}");
    // New credentials, and a run that succeeds: the error is resolved.
    let (code, out) = c
        .send("POST", "/connection", Some(import("good-token")))
        .await;
    assert!(code == 200 || code == 201, "{out}");
    assert!(run().await);
    assert_eq!(errors().await, json!([]));
    server.stop().await;
}

/// An execution whose log used `log_bytes_per_execution` still keeps the
/// script's last error lines: a panic's message says why it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_keeps_the_panic_message() {
    const ACTION_YAML: &str = "
integrations:
  hubspot:
    actions:
      misbehave:
        endpoint: POST /misbehave
";
    let up = Upstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.log_bytes_per_execution = 1;
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    deploy_scripts(
        &c,
        ACTION_YAML,
        "hubspot",
        &[(guests::ACTION_MISBEHAVE, "misbehave", ScriptKind::Action)],
    )
    .await;
    c.send(
        "POST",
        "/integrations",
        Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
    )
    .await;
    c.send(
        "POST",
        "/connection",
        Some(json!({"provider_config_key": "hubspot", "connection_id": "demo", "access_token": TOKEN})),
    )
    .await;
    let (code, out) = c
        .send_as(
            ("hubspot", "demo"),
            "POST",
            "/action/trigger",
            Some(json!({"action_name": "misbehave", "input": {"mode": "panic"}})),
        )
        .await;
    assert!(code >= 400, "{code} {out}");
    let message = out["error"]["payload"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("script panicked at ") && message.ends_with("the script gave up"),
        "{out}"
    );
    let t = Instant::now();
    loop {
        let found = logs(&c, "connection_id=demo&q=gave%20up").await;
        // The guest's own line, beside the failure's (which names it now).
        if found["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["source"] == "user")
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the panic message was not kept: {}",
            logs(&c, "connection_id=demo").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What was left out is said, where the lines would have been.
    let (code, out) = c
        .send_as(
            ("hubspot", "demo"),
            "POST",
            "/action/trigger",
            Some(json!({"action_name": "misbehave", "input": {"mode": "print"}})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    let note = logs(&c, "connection_id=demo&q=not%20kept").await;
    let note = note["logs"].as_array().unwrap();
    assert_eq!(note.len(), 1, "{note:?}");
    assert_eq!(note[0]["level"], "warn");
    assert!(
        note[0]["message"]
            .as_str()
            .unwrap()
            .contains("of this execution were not kept: past the 1 bytes kept per execution"),
        "{note:?}"
    );
    server.stop().await;
}
