//! Event scripts: `post-connection-creation` runs after a connection is
//! created (not when it is updated), `pre-connection-deletion` before it is
//! deleted; a failing one is kept in the history and blocks nothing.
//! `validate-connection` (zero-yaml) runs while a connection is created and
//! refuses it when it fails.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_runtime::ScriptKind;
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer, guests, repo_root};

use crate::server::{Client, DEV_KEY, deploy_definitions, deploy_scripts, start_with};

const YAML: &str = "
integrations:
  hubspot:
    on-events:
      post-connection-creation:
        - on-created
      pre-connection-deletion:
        - on-deleted
";

/// A server whose `hubspot` integration points at a mock upstream that
/// keeps every `POST /events` the event scripts send.
struct EventsServer {
    events: Arc<Mutex<Vec<Value>>>,
    server: sluice_server::Server,
    c: Client,
    _mock: MockServer,
    _data: tempfile::TempDir,
    master: MasterKey,
    providers: String,
}

impl EventsServer {
    async fn start() -> EventsServer {
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let seen = events.clone();
        let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
            if req.path == "/events" {
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&req.body).unwrap_or(Value::Null));
            }
            MockResponse::json(200, &json!({}))
        }))
        .await
        .unwrap();
        let providers = std::fs::read_to_string(repo_root().join("host/runtime/providers.yaml"))
            .unwrap()
            .replace("https://api.hubapi.com", &mock.url());
        let data = tempfile::tempdir().unwrap();
        let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
        let master = MasterKey::generate();
        let server = start_with(config, &master, &providers).await;
        let c = Client::new(&server, DEV_KEY);
        c.send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
        )
        .await;
        EventsServer {
            events,
            server,
            c,
            _mock: mock,
            _data: data,
            master,
            providers,
        }
    }

    /// Stopped and started again on the same data.
    async fn restart(self) -> EventsServer {
        let EventsServer {
            events,
            server,
            _mock,
            _data,
            master,
            providers,
            ..
        } = self;
        server.stop().await;
        let config = ServerConfig::new(_data.path(), "127.0.0.1:0".parse().unwrap());
        let server = start_with(config, &master, &providers).await;
        let c = Client::new(&server, DEV_KEY);
        EventsServer {
            events,
            server,
            c,
            _mock,
            _data,
            master,
            providers,
        }
    }

    /// How often `script` told the upstream it ran for connection `cid`.
    fn ran(&self, script: &str, cid: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["script"] == script && e["connection"] == cid)
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_scripts_run_on_creation_and_before_deletion() {
    let s = EventsServer::start().await;
    let c = &s.c;
    deploy_scripts(
        c,
        YAML,
        "hubspot",
        &[
            (guests::ON_EVENT_NOTIFY, "on-created", ScriptKind::OnEvent),
            (guests::ON_EVENT_NOTIFY, "on-deleted", ScriptKind::OnEvent),
        ],
    )
    .await;
    let got = |script: &str, cid: &str| s.ran(script, cid);
    let create = |cid: &'static str, metadata: Value| {
        let c = Client::at(&c.base, DEV_KEY);
        async move {
            let (code, out) = c
                .send(
                    "POST",
                    "/connection",
                    Some(json!({"provider_config_key": "hubspot", "connection_id": cid, "access_token": "t", "metadata": metadata})),
                )
                .await;
            assert_eq!(code, 201, "{out}");
        }
    };

    // Created: the post-creation script runs (after the answer).
    create("demo", Value::Null).await;
    wait("on-created ran", || got("on-created", "demo") == 1).await;
    // Updated (same id again): it does not run again.
    create("demo", json!({"k": 1})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(got("on-created", "demo"), 1, "ran for an update");

    // Deleted: the pre-deletion script has run when the answer comes.
    let (code, _) = c
        .send(
            "DELETE",
            "/connection/demo?provider_config_key=hubspot",
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(got("on-deleted", "demo"), 1);
    let (code, _) = c
        .send("GET", "/connection/demo?provider_config_key=hubspot", None)
        .await;
    assert_eq!(code, 404);

    // Scripts that fail: logged, and nothing is blocked.
    create("f", json!({"fail_events": true})).await;
    wait("the failing on-created ran", || got("on-created", "f") == 1).await;
    let (code, out) = c
        .send("DELETE", "/connection/f?provider_config_key=hubspot", None)
        .await;
    assert_eq!(
        code, 200,
        "a failing pre-deletion script blocked the deletion: {out}"
    );
    assert_eq!(got("on-deleted", "f"), 1);
    let (code, _) = c
        .send("GET", "/connection/f?provider_config_key=hubspot", None)
        .await;
    assert_eq!(code, 404);
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_validate_connection_script_refuses_the_connection() {
    let s = EventsServer::start().await;
    let c = &s.c;
    // A zero-yaml project's definitions, as `sluice compile` writes them.
    let definitions = vec![json!({
        "providerConfigKey": "hubspot",
        "syncs": [],
        "actions": [],
        "onEventScripts": {
            "post-connection-creation": [],
            "pre-connection-deletion": [],
            "validate-connection": ["check"]
        }
    })];
    deploy_definitions(
        c,
        definitions,
        "hubspot",
        &[(guests::ON_EVENT_NOTIFY, "check", ScriptKind::OnEvent)],
    )
    .await;
    let ran = |cid: &str| s.ran("check", cid);
    let create = |cid: &'static str, metadata: Value| {
        let c = Client::at(&c.base, DEV_KEY);
        async move {
            c.send(
                "POST",
                "/connection",
                Some(json!({"provider_config_key": "hubspot", "connection_id": cid, "access_token": "t", "metadata": metadata})),
            )
            .await
        }
    };
    let get = |cid: &'static str| {
        let c = Client::at(&c.base, DEV_KEY);
        async move {
            c.send(
                "GET",
                &format!("/connection/{cid}?provider_config_key=hubspot"),
                None,
            )
            .await
        }
    };

    // Passes: the connection is created, the check ran before the answer.
    let (code, out) = create("good", Value::Null).await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(ran("good"), 1);
    assert_eq!(get("good").await.0, 200);

    // Fails on creation: refused with the original's code, and not kept.
    let (code, out) = create("bad", json!({"fail_events": true})).await;
    assert_eq!(code, 400, "{out}");
    assert_eq!(out["error"]["code"], "connection_test_failed", "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("check") && message.contains("told to fail"),
        "{message}"
    );
    assert_eq!(ran("bad"), 1);
    assert_eq!(get("bad").await.0, 404, "a refused connection was kept");

    // Fails on a reconnect: refused, the connection stays, marked with the
    // error, with the credentials and metadata it had (the refused ones
    // are not kept).
    let (code, out) = c
        .send(
            "POST",
            "/connection",
            Some(
                json!({"provider_config_key": "hubspot", "connection_id": "good",
                        "access_token": "refused", "metadata": {"fail_events": true}}),
            ),
        )
        .await;
    assert_eq!(code, 400, "{out}");
    let (code, view) = get("good").await;
    assert_eq!(code, 200);
    assert_eq!(view["errors"][0]["type"], "auth", "{view}");
    assert_eq!(view["credentials"]["access_token"], "t", "{view}");
    assert_eq!(view["metadata"], Value::Null, "{view}");
    // The error names the check's execution in the logs.
    let log_id = view["errors"][0]["log_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{view}"));
    let (code, found) = c
        .send("GET", &format!("/logs?execution_id={log_id}"), None)
        .await;
    assert_eq!(code, 200, "{found}");
    assert!(
        found["logs"].as_array().is_some_and(|l| !l.is_empty()),
        "{found}"
    );
    // Imported again with credentials that pass: the error is gone.
    let (code, out) = create("good", Value::Null).await;
    assert_eq!(code, 201, "{out}");
    let (_, view) = get("good").await;
    assert_eq!(view["errors"], json!([]), "{view}");

    // Marked again, deleted and made anew: the new connection carries no
    // error of the old one.
    let (code, _) = create("good", json!({"fail_events": true})).await;
    assert_eq!(code, 400);
    assert_eq!(get("good").await.1["errors"][0]["type"], "auth");
    let (code, out) = c
        .send(
            "DELETE",
            "/connection/good?provider_config_key=hubspot",
            None,
        )
        .await;
    assert_eq!(code, 200, "{out}");
    let (code, out) = create("good", Value::Null).await;
    assert_eq!(code, 201, "{out}");
    let (_, view) = get("good").await;
    assert_eq!(view["errors"], json!([]), "{view}");
    s.server.stop().await;
}

/// A connection whose `validate-connection` check is running is not yet
/// created: a sync its check asks for is refused (the connection is not
/// found), so a connection refused by its check leaves no schedule, trigger
/// or run behind for the next one of its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_being_validated_gets_no_sync_runs_from_its_check() {
    let s = EventsServer::start().await;
    let c = &s.c;
    let definitions = vec![json!({
        "providerConfigKey": "hubspot",
        "syncs": [{"name": "contacts", "runs": "every day", "output": ["Contact"], "auto_start": false}],
        "actions": [],
        "onEventScripts": {
            "post-connection-creation": [],
            "pre-connection-deletion": [],
            "validate-connection": ["check"]
        }
    })];
    deploy_definitions(
        c,
        definitions,
        "hubspot",
        &[
            (guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync),
            (guests::ON_EVENT_NOTIFY, "check", ScriptKind::OnEvent),
        ],
    )
    .await;
    let (code, out) = c
        .send(
            "POST",
            "/connection",
            Some(
                json!({"provider_config_key": "hubspot", "connection_id": "v", "access_token": "t",
                "metadata": {"trigger_sync": "contacts", "fail_events": true}}),
            ),
        )
        .await;
    assert_eq!(
        (code, out["error"]["code"].as_str()),
        (400, Some("connection_test_failed")),
        "{out}"
    );
    let triggers: Vec<Value> = s
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["connection"] == "v")
        .map(|e| e["trigger"].clone())
        .collect();
    assert_eq!(triggers, vec![json!("unknown_connection")]);
    // Created again with credentials that pass: a new connection, its sync
    // scheduled paused (`auto_start: false`) with no run asked for.
    let (code, out) = c
        .send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "hubspot", "connection_id": "v", "access_token": "t"})),
        )
        .await;
    assert_eq!(code, 201, "{out}");
    let (code, status) = c
        .send(
            "GET",
            "/sync/status?provider_config_key=hubspot&syncs=contacts&connection_id=v",
            None,
        )
        .await;
    assert_eq!(code, 200, "{status}");
    let sync = &status["syncs"][0];
    assert_eq!(
        (&sync["status"], &sync["latestExecutionStatus"]),
        (&json!("PAUSED"), &Value::Null),
        "{status}"
    );
    s.server.stop().await;
}

async fn wait(what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A creation a crash cut short is finished at the next start: a
/// connection caught before its check passed is deleted (it was kept,
/// unchecked), one caught before its `post-connection-creation` scripts
/// ended runs them (they were lost). The documents are what a crash
/// leaves between the steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_a_crash_cut_short_is_finished_at_the_next_start() {
    use sluice_server::api::connections::CONNECTION_SETUP;

    let s = EventsServer::start().await;
    deploy_scripts(
        &s.c,
        YAML,
        "hubspot",
        &[
            (guests::ON_EVENT_NOTIFY, "on-created", ScriptKind::OnEvent),
            (guests::ON_EVENT_NOTIFY, "on-deleted", ScriptKind::OnEvent),
        ],
    )
    .await;
    for cid in ["x", "y"] {
        let (code, out) = s
            .c
            .send(
                "POST",
                "/connection",
                Some(json!({"provider_config_key": "hubspot", "connection_id": cid, "access_token": "t"})),
            )
            .await;
        assert_eq!(code, 201, "{out}");
    }
    let t = Instant::now();
    while s.ran("on-created", "x") + s.ran("on-created", "y") < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the scripts never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each finished setup is forgotten.
    let dev = s
        .server
        .app
        .envs()
        .find(|e| e.name() == "dev")
        .unwrap()
        .clone();
    let t = Instant::now();
    loop {
        let left: Vec<(String, Value)> = dev
            .store
            .docs(CONNECTION_SETUP, "", None, 10, false)
            .await
            .unwrap();
        if left.is_empty() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dev.store
        .put_doc(
            CONNECTION_SETUP,
            "hubspot/x",
            &json!({"stage": "validating"}),
        )
        .await
        .unwrap();
    dev.store
        .put_doc(
            CONNECTION_SETUP,
            "hubspot/y",
            &json!({"stage": "post_creation"}),
        )
        .await
        .unwrap();
    drop(dev);
    let s = s.restart().await;
    let (code, _) =
        s.c.send("GET", "/connection/x?provider_config_key=hubspot", None)
            .await;
    assert_eq!(code, 404, "a connection whose check never passed was kept");
    let (code, _) =
        s.c.send("GET", "/connection/y?provider_config_key=hubspot", None)
            .await;
    assert_eq!(code, 200);
    let t = Instant::now();
    while s.ran("on-created", "y") < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the post-creation scripts were not run again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.ran("on-created", "x"), 1);
    s.server.stop().await;
}
