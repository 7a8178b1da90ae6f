//! Webhooks to the app: a real `sluice serve`, a mock upstream whose
//! contacts change when the test says, and a mock app that records what it
//! receives and can be down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_project::deploy::sha256_hex;
use sluice_runtime::ScriptKind;
use sluice_server::webhooks::{nango_hmac_signature, standard_signature};
use sluice_server::{EventLog, ServerConfig};
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer, guests, repo_root};

use crate::server::{Client, DEV_KEY, PROD_KEY, deploy_scripts, start_with};

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

/// The app: every request it got, with its answer's status.
pub(crate) struct App {
    pub(crate) mock: MockServer,
    pub(crate) got: Arc<Mutex<Vec<(MockRequest, u16)>>>,
    pub(crate) down: Arc<AtomicBool>,
}

impl App {
    pub(crate) async fn start() -> App {
        let got = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let (g, d) = (got.clone(), down.clone());
        let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
            // A connection's `auth` webhook is not what these tests are
            // about (the OAuth tests see it): taken, not recorded.
            if req.json().is_some_and(|b| b["type"] == "auth") {
                return MockResponse::json(200, &json!({}));
            }
            let status = if d.load(Ordering::SeqCst) { 503 } else { 200 };
            g.lock().unwrap().push((req.clone(), status));
            MockResponse::json(status, &json!({}))
        }))
        .await
        .unwrap();
        App { mock, got, down }
    }

    pub(crate) fn url(&self) -> String {
        format!("{}/hooks", self.mock.url())
    }

    /// The bodies of the deliveries it accepted.
    pub(crate) fn accepted(&self) -> Vec<(MockRequest, Value)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| *s == 200)
            .map(|(r, _)| (r.clone(), serde_json::from_slice(&r.body).unwrap()))
            .collect()
    }

    pub(crate) fn refused(&self) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| *s != 200)
            .count()
    }

    pub(crate) async fn wait_for(&self, what: &str, limit: Duration, done: impl Fn(&App) -> bool) {
        let t = Instant::now();
        while !done(self) {
            assert!(t.elapsed() < limit, "the app never got {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// HubSpot contacts "1" and "2", whose email changes with `version`; 404
/// while `broken`.
struct Upstream {
    mock: MockServer,
    version: Arc<AtomicU64>,
    broken: Arc<AtomicBool>,
}

impl Upstream {
    async fn start() -> Upstream {
        let version = Arc::new(AtomicU64::new(0));
        let broken = Arc::new(AtomicBool::new(false));
        let (v, b) = (version.clone(), broken.clone());
        let mock = MockServer::start(Arc::new(move |_req: &MockRequest| {
            if b.load(Ordering::SeqCst) {
                return MockResponse::json(404, &json!({"message": "gone"}));
            }
            let v = v.load(Ordering::SeqCst);
            let contact = |id: &str| {
                json!({"id": id, "createdAt": "2024-01-01T00:00:00Z",
                       "properties": {"firstname": "F", "lastname": "L", "email": format!("{id}-{v}@example.com")}})
            };
            MockResponse::json(200, &json!({"results": [contact("1"), contact("2")]}))
        }))
        .await
        .unwrap();
        Upstream {
            mock,
            version,
            broken,
        }
    }

    fn providers(&self) -> String {
        let yaml =
            std::fs::read_to_string(repo_root().join("host/runtime/providers.yaml")).unwrap();
        yaml.replace("https://api.hubapi.com", &self.mock.url())
    }
}

/// Deploys the contacts sync and creates its hubspot integration.
async fn deploy_contacts(c: &Client) {
    deploy_scripts(
        c,
        YAML,
        "hubspot",
        &[(guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync)],
    )
    .await;
    c.send(
        "POST",
        "/integrations",
        Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
    )
    .await;
}

async fn run(c: &Client) -> Value {
    let (code, out) = c
        .send(
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    out["runs"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_gets_signed_webhooks_per_changed_model_retried_until_it_is_back() {
    let up = Upstream::start().await;
    let app = App::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.webhook_retry_base = Duration::from_millis(50);
    // What the operator is told (the CLI writes it to stderr).
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let told = events.clone();
    config.events = EventLog::new(move |line| told.lock().unwrap().push(line.to_string()));
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    deploy_contacts(&c).await;
    c.send(
        "POST",
        "/connection",
        Some(
            json!({"provider_config_key": "hubspot", "connection_id": "demo", "access_token": "t"}),
        ),
    )
    .await;

    // Settings: a URL that is not one is refused; the real one is kept.
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": "not a url"})),
        )
        .await;
    assert_eq!(
        (code, out["error"]["code"].as_str()),
        (400, Some("invalid_body")),
        "{out}"
    );
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": app.url()})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    // A setting left out is kept: turning a flag on keeps the URL.
    let (code, out) = c
        .send(
            "PATCH",
            "/sluice/webhook-settings",
            Some(json!({"on_sync_error": true})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(
        (out["primary_url"].as_str(), &out["on_sync_error"]),
        (Some(app.url().as_str()), &json!(true)),
        "{out}"
    );
    // An array is not read into the settings by position.
    let (code, refused) = c
        .send("PUT", "/sluice/webhook-settings", Some(json!([])))
        .await;
    assert_eq!(code, 400, "{refused}");
    assert_eq!(
        refused["error"]["message"], "the request body must be a JSON object, not an array",
        "{refused}"
    );
    assert!(
        out["signing_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_"),
        "{out}"
    );
    let (_, again) = c.send("GET", "/sluice/webhook-settings", None).await;
    assert_eq!(again, out);
    // Sent back as GET shows it: accepted; another value: refused (it is
    // made, not set); a rotation gives a new one, kept from then on.
    let (code, same) = c
        .send("PUT", "/sluice/webhook-settings", Some(again.clone()))
        .await;
    assert_eq!((code, &same), (200, &out));
    let (code, refused) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"signing_secret": "whsec_mine"})),
        )
        .await;
    assert_eq!(code, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rotate_signing_secret"),
        "{refused}"
    );
    // A setting of the wrong type or an unknown one is refused, naming it
    // (and the whole list, the rotation included); nothing changes.
    for (body, named) in [
        (json!({"secondary_url": 5}), "`secondary_url` must be a URL"),
        (
            json!({"on_async_action_completion": 1}),
            "`on_async_action_completion` must be true or false",
        ),
        (json!({"foo": 1}), "unknown setting `foo`"),
    ] {
        let (code, refused) = c
            .send("PUT", "/sluice/webhook-settings", Some(body.clone()))
            .await;
        assert_eq!(code, 400, "{body}: {refused}");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{body}: {refused}");
        if named.starts_with("unknown") {
            assert!(message.contains("rotate_signing_secret"), "{refused}");
        }
    }
    let (_, unchanged) = c.send("GET", "/sluice/webhook-settings", None).await;
    assert_eq!(unchanged, out);
    let (code, rotated) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"rotate_signing_secret": true})),
        )
        .await;
    assert_eq!(code, 200, "{rotated}");
    let secret = rotated["signing_secret"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with("whsec_") && secret != out["signing_secret"],
        "{rotated}"
    );
    let (_, again) = c.send("GET", "/sluice/webhook-settings", None).await;
    assert_eq!(again["signing_secret"], secret.as_str());

    // A run that added records: one webhook for its one model, signed.
    let r = run(&c).await;
    assert_eq!(r["results"]["Contact"]["added"], 2, "{r}");
    app.wait_for("the first webhook", Duration::from_secs(10), |a| {
        a.accepted().len() == 1
    })
    .await;
    let (req, body) = app.accepted().remove(0);
    assert_eq!(req.path, "/hooks");
    for (k, v) in [
        ("from", json!("nango")),
        ("type", json!("sync")),
        ("connectionId", json!("demo")),
        ("providerConfigKey", json!("hubspot")),
        ("syncName", json!("contacts")),
        ("syncVariant", json!("base")),
        ("model", json!("Contact")),
        ("syncType", json!("INITIAL")),
        ("success", json!(true)),
        (
            "responseResults",
            json!({"added": 2, "updated": 0, "deleted": 0}),
        ),
    ] {
        assert_eq!(body[k], v, "{k} in {body}");
    }
    assert!(body["modifiedAfter"].is_string(), "{body}");
    let raw = String::from_utf8(req.body.clone()).unwrap();
    assert_eq!(
        req.header("x-nango-signature"),
        Some(sha256_hex(format!("{DEV_KEY}{raw}").as_bytes()).as_str()),
        "X-Nango-Signature is hex(sha256(secret key + body))"
    );
    // What the original's client's verifyIncomingWebhookRequest checks
    // (the function itself is checked against RFC 4231's vector).
    assert_eq!(
        req.header("x-nango-hmac-sha256"),
        Some(nango_hmac_signature(DEV_KEY, &raw).as_str()),
    );
    let id = req.header("webhook-id").unwrap().to_string();
    let ts: i64 = req.header("webhook-timestamp").unwrap().parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    assert_eq!(
        req.header("webhook-signature").map(str::to_string),
        standard_signature(&secret, &id, ts, &raw)
    );

    // Nothing changed: no webhook.
    let r = run(&c).await;
    assert_eq!(r["results"]["Contact"]["unchanged"], 2, "{r}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.accepted().len(),
        1,
        "a webhook for a run without changes"
    );

    // The app is down: the webhook of the next change is retried, then
    // delivered once it is back, with the same id.
    app.down.store(true, Ordering::SeqCst);
    up.version.store(1, Ordering::SeqCst);
    let r = run(&c).await;
    assert_eq!(r["results"]["Contact"]["updated"], 2, "{r}");
    app.wait_for("three attempts", Duration::from_secs(10), |a| {
        a.refused() >= 3
    })
    .await;
    app.down.store(false, Ordering::SeqCst);
    app.wait_for("the retried webhook", Duration::from_secs(10), |a| {
        a.accepted().len() == 2
    })
    .await;
    let (req, body) = app.accepted().remove(1);
    assert_eq!(
        body["responseResults"],
        json!({"added": 0, "updated": 2, "deleted": 0})
    );
    assert_eq!(body["syncType"], "INCREMENTAL");
    let ids: Vec<String> = app
        .got
        .lock()
        .unwrap()
        .iter()
        .skip(1)
        .map(|(r, _)| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert!(
        ids.iter().all(|i| i == req.header("webhook-id").unwrap()),
        "{ids:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(app.accepted().len(), 2, "delivered twice");
    // Every attempt is in the logs, under the connection, found by the
    // webhook's id: the refused ones, then the one that went through.
    let webhook_id = req.header("webhook-id").unwrap().to_string();
    let t = std::time::Instant::now();
    let lines = loop {
        let (code, out) = c
            .send(
                "GET",
                &format!("/logs?connection_id=demo&script=sync&q={webhook_id}"),
                None,
            )
            .await;
        assert_eq!(code, 200, "{out}");
        let lines = out["logs"].as_array().cloned().unwrap_or_default();
        if lines.iter().any(|l| l["level"] == "info") {
            break lines;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{out}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        lines[0]["message"],
        format!(
            "webhook {webhook_id} sent to {} (attempt {})",
            app.url(),
            lines.len()
        ),
        "{lines:?}"
    );
    assert!(lines.len() >= 4, "{lines:?}");
    assert!(
        lines[1..].iter().all(|l| l["level"] == "warn"
            && l["message"].as_str().unwrap().contains("503")
            && l["message"]
                .as_str()
                .unwrap()
                .ends_with("it is tried again later")),
        "{lines:?}"
    );
    let told = events.lock().unwrap().clone();
    assert!(
        told.iter().any(|l| l.starts_with("dev: webhook ")
            && l.contains("to the app failed (attempt 1)")
            && l.contains("503")
            && l.ends_with("it is tried again later")),
        "{told:?}"
    );

    // A failed run, with on_sync_error: its failure webhook.
    up.broken.store(true, Ordering::SeqCst);
    let r = run(&c).await;
    assert_eq!(r["success"], false, "{r}");
    app.wait_for("the failure webhook", Duration::from_secs(10), |a| {
        a.accepted().len() == 3
    })
    .await;
    let (_, body) = app.accepted().remove(2);
    assert_eq!(body["success"], false, "{body}");
    let told = events.lock().unwrap().clone();
    assert!(
        told.iter()
            .any(|l| l.starts_with("dev: sync `contacts` of connection `demo` (hubspot) failed: ")),
        "{told:?}"
    );
    assert_eq!(body["model"], "Contact", "{body}");
    assert_eq!(body["error"]["type"], "script_error", "{body}");
    assert!(body["error"]["description"].is_string(), "{body}");
    assert!(
        body["startedAt"].is_string() && body["failedAt"].is_string(),
        "{body}"
    );

    // The app moves while a webhook waits for a retry: the retry goes
    // where the settings say now.
    up.broken.store(false, Ordering::SeqCst);
    app.down.store(true, Ordering::SeqCst);
    up.version.store(2, Ordering::SeqCst);
    let refused = app.refused();
    let r = run(&c).await;
    assert_eq!(r["success"], true, "{r}");
    app.wait_for("a refused attempt", Duration::from_secs(10), |a| {
        a.refused() > refused
    })
    .await;
    let moved = App::start().await;
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": moved.url(), "on_sync_error": true})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    moved
        .wait_for("the webhook at the new URL", Duration::from_secs(10), |a| {
            a.accepted().len() == 1
        })
        .await;
    assert_eq!(moved.accepted()[0].1["type"], "sync");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_holds_up_only_its_own_environment() {
    let up = Upstream::start().await;
    let prod_app = App::start().await;
    let hung = Arc::new(Mutex::new(0usize));
    let h = hung.clone();
    let hanging = MockServer::start(Arc::new(move |_req: &MockRequest| {
        *h.lock().unwrap() += 1;
        MockResponse::json(200, &json!({})).delayed(Duration::from_secs(15))
    }))
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let dev = Client::new(&server, DEV_KEY);
    let prod = Client::new(&server, PROD_KEY);
    for (c, url) in [
        (&dev, format!("{}/hooks", hanging.url())),
        (&prod, prod_app.url()),
    ] {
        deploy_scripts(
            c,
            YAML,
            "hubspot",
            &[(guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync)],
        )
        .await;
        c.integration_and_connection(
            "hubspot",
            "hubspot",
            json!({"connection_id": "demo", "access_token": "t"}),
        )
        .await;
        let (code, out) = c
            .send(
                "PUT",
                "/sluice/webhook-settings",
                Some(json!({"primary_url": url})),
            )
            .await;
        assert_eq!(code, 200, "{out}");
    }

    // dev's receiver takes the webhook and does not answer...
    run(&dev).await;
    let t = Instant::now();
    while *hung.lock().unwrap() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "dev's webhook never left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...while prod's webhook, due after it, still goes out at once.
    run(&prod).await;
    prod_app
        .wait_for("prod's webhook", Duration::from_secs(5), |a| {
            !a.accepted().is_empty()
        })
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_actions_webhook_is_queued_once_even_when_the_process_stopped_before_it() {
    let app = App::start().await;
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let providers = "mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: http://127.0.0.1:9\n";
    let config = || ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config(), &master, providers).await;
    let c = Client::new(&server, DEV_KEY);
    deploy_scripts(
        &c,
        "integrations:\n  m:\n    actions:\n      noop:\n        endpoint: POST /noop\n",
        "m",
        &[(guests::ACTION_NOOP, "noop", ScriptKind::Action)],
    )
    .await;
    c.integration_and_connection(
        "m",
        "mock",
        json!({"connection_id": "c1", "access_token": "t"}),
    )
    .await;
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": app.url(), "on_async_action_completion": true})),
        )
        .await;
    assert_eq!(code, 200, "{out}");

    // An async action's end reaches the app.
    let location = c
        .trigger_async(("m", "c1"), "noop", json!(null), None)
        .await;
    let id = location.trim_start_matches("/action/").to_string();
    app.wait_for("the async action's webhook", Duration::from_secs(10), |a| {
        a.accepted().len() == 1
    })
    .await;
    let got = app.accepted()[0].1.clone();
    assert_eq!(
        (
            got["type"].as_str(),
            got["payload"]["id"].as_str(),
            got["payload"]["statusUrl"].as_str(),
            got["success"].as_bool()
        ),
        (
            Some("async_action"),
            Some(id.as_str()),
            Some(location.as_str()),
            Some(true)
        ),
        "{got}"
    );

    // As a process that stopped between an action's end and queueing its
    // webhook leaves it: the state written, the webhook not queued.
    let env = server.app.store.environment("dev").unwrap();
    let mut ended: Value = env.doc("async-actions", &id).await.unwrap().unwrap();
    ended["id"] = json!("a-crashed");
    ended["webhook_queued"] = json!(false);
    env.put_doc("async-actions", "a-crashed", &ended)
        .await
        .unwrap();
    // And one whose webhook was queued: not queued again.
    ended["id"] = json!("a-done");
    ended["webhook_queued"] = json!(true);
    env.put_doc("async-actions", "a-done", &ended)
        .await
        .unwrap();
    drop(env);
    server.stop().await;

    let server = start_with(config(), &master, providers).await;
    app.wait_for("the caught-up webhook", Duration::from_secs(10), |a| {
        a.accepted().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<Value> = app
        .accepted()
        .iter()
        .map(|(_, b)| b["payload"]["id"].clone())
        .collect();
    assert_eq!(ids, [json!(id), json!("a-crashed")]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_webhooks_are_caught_up_at_start_when_the_process_stopped_before_queueing_them() {
    let up = Upstream::start().await;
    let app = App::start().await;
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let config = || ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config(), &master, &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    deploy_scripts(
        &c,
        YAML,
        "hubspot",
        &[(guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync)],
    )
    .await;
    c.integration_and_connection(
        "hubspot",
        "hubspot",
        json!({"connection_id": "demo", "access_token": "t"}),
    )
    .await;
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": app.url()})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    let r = run(&c).await;
    assert_eq!(r["results"]["Contact"]["added"], 2, "{r}");
    app.wait_for("the run's webhook", Duration::from_secs(10), |a| {
        a.accepted().len() == 1
    })
    .await;
    // Delivered and recorded so (a stop between the app's answer and the
    // record sends it again at the next start: at least once).
    outbox_emptied(&server).await;

    // As a process that stopped between the run's end and queueing its
    // webhooks leaves the state.
    let env = server.app.store.environment("dev").unwrap();
    let key = "hubspot\u{1f}demo\u{1f}contacts\u{1f}base";
    let mut state: Value = env.doc("sync-state", key).await.unwrap().unwrap();
    assert_eq!(state["webhooks_queued"], true, "{state}");
    state["webhooks_queued"] = json!(false);
    env.put_doc("sync-state", key, &state).await.unwrap();
    drop(env);
    server.stop().await;

    let server = start_with(config(), &master, &up.providers()).await;
    app.wait_for("the caught-up webhook", Duration::from_secs(10), |a| {
        a.accepted().len() == 2
    })
    .await;
    let got = app.accepted();
    // The same message: same id and body, which a receiver deduplicates.
    assert_eq!(got[0].1, got[1].1);
    assert_eq!(got[0].0.header("webhook-id"), got[1].0.header("webhook-id"));
    // Caught up once: a later start sends nothing more.
    outbox_emptied(&server).await;
    server.stop().await;
    let server = start_with(config(), &master, &up.providers()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.accepted().len(), 2);
    server.stop().await;
}

/// Waits until the server's outbox holds no webhook (each delivered one
/// is removed once its answer is in).
async fn outbox_emptied(server: &sluice_server::Server) {
    let env = server.app.store.environment("dev").unwrap();
    let started = std::time::Instant::now();
    loop {
        let left: Vec<(String, Value)> = env
            .docs("webhook-outbox", "", None, 10, false)
            .await
            .unwrap();
        if left.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the outbox still holds {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A receiver that hangs holds up only what is sent to it: the secondary
/// URL gets each run's webhook at once, not one per attempt timeout (the
/// environment's deliveries went out in rounds, each waiting for its
/// slowest send).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_hold_up_the_other_url() {
    let up = Upstream::start().await;
    let fast = App::start().await;
    let slow = MockServer::start(Arc::new(|_req: &MockRequest| MockResponse {
        delay: Some(Duration::from_secs(60)),
        ..MockResponse::json(200, &json!({}))
    }))
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    deploy_contacts(&c).await;
    c.send(
        "POST",
        "/connection",
        Some(
            json!({"provider_config_key": "hubspot", "connection_id": "demo", "access_token": "t"}),
        ),
    )
    .await;
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": format!("{}/hooks", slow.url()), "secondary_url": fast.url()})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    for n in 1..=3u64 {
        up.version.store(n, Ordering::SeqCst);
        let r = run(&c).await;
        assert_eq!(r["success"], true, "{r}");
        fast.wait_for(
            &format!("run {n}'s webhook at the secondary URL"),
            Duration::from_secs(8),
            |a| a.accepted().len() == n as usize,
        )
        .await;
    }
    server.stop().await;
}

/// A receiver that hangs holds at most a quarter of its environment's
/// sends (16): with more webhooks waiting for it than the environment may
/// send at once, the other URL still gets each of its own at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_holds_at_most_its_share_of_the_sends() {
    let fast = App::start().await;
    let hung = Arc::new(Mutex::new(0usize));
    let h = hung.clone();
    let slow = MockServer::start(Arc::new(move |_req: &MockRequest| {
        *h.lock().unwrap() += 1;
        MockResponse::json(200, &json!({})).delayed(Duration::from_secs(60))
    }))
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let providers = "mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: http://127.0.0.1:9\n";
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), providers).await;
    let c = Client::new(&server, DEV_KEY);
    deploy_scripts(
        &c,
        "integrations:\n  m:\n    actions:\n      noop:\n        endpoint: POST /noop\n",
        "m",
        &[(guests::ACTION_NOOP, "noop", ScriptKind::Action)],
    )
    .await;
    c.integration_and_connection(
        "m",
        "mock",
        json!({"connection_id": "c1", "access_token": "t"}),
    )
    .await;
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": format!("{}/hooks", slow.url()),
                        "secondary_url": fast.url(),
                        "on_async_action_completion": true})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    // 80 webhooks for each URL: more than the environment's 64 sends.
    for _ in 0..80 {
        c.trigger_async(("m", "c1"), "noop", json!(null), None)
            .await;
    }
    fast.wait_for("all 80 webhooks", Duration::from_secs(30), |a| {
        a.accepted().len() == 80
    })
    .await;
    let t = Instant::now();
    while *hung.lock().unwrap() < 16 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the hanging receiver got {} of its webhooks",
            *hung.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        *hung.lock().unwrap(),
        16,
        "the hanging receiver was sent more than its share at once"
    );
    server.stop().await;
}

/// A delivery queued behind more than a pass reads (1,024) that wait for
/// a hung receiver still goes out within seconds: each pass goes on
/// where the last one stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_behind_many_for_a_hung_receiver_still_goes_out() {
    let fast = App::start().await;
    let slow = MockServer::start(Arc::new(|_req: &MockRequest| {
        MockResponse::json(200, &json!({})).delayed(Duration::from_secs(60))
    }))
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.store = sluice_server::StoreKind::Redb;
    let server = start_with(config, &MasterKey::generate(), "").await;
    let c = Client::new(&server, DEV_KEY);
    let hung = format!("{}/hooks", slow.url());
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": hung})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    let env = server
        .app
        .envs()
        .find(|e| e.name() == "dev")
        .unwrap()
        .clone();
    let mut settings = sluice_server::webhooks::settings(&env).await.unwrap();
    let about = sluice_server::webhooks::About::new("test", "", "");
    for n in 0..1_200 {
        server
            .app
            .webhooks
            .enqueue(&env, &settings, &json!({"type": "test", "n": n}), &about)
            .await
            .unwrap();
    }
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": hung, "secondary_url": fast.url()})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    settings.secondary_url = Some(fast.url());
    server
        .app
        .webhooks
        .enqueue(
            &env,
            &settings,
            &json!({"type": "test", "n": "last"}),
            &about,
        )
        .await
        .unwrap();
    fast.wait_for(
        "the delivery behind the hung ones",
        Duration::from_secs(15),
        |a| a.accepted().iter().any(|(_, b)| b["n"] == "last"),
    )
    .await;
    server.stop().await;
}

/// `PATCH /connections/demo` of hubspot with `webhook_url_override`.
async fn set_override(c: &Client, url: &str) -> (u16, Value) {
    c.send(
        "PATCH",
        "/connections/demo?provider_config_key=hubspot",
        Some(json!({ "webhook_url_override": url })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connections_webhook_url_override_gets_its_webhooks_instead_of_the_environments() {
    let up = Upstream::start().await;
    let (env_primary, env_secondary, own) =
        (App::start().await, App::start().await, App::start().await);
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.webhook_retry_base = Duration::from_millis(50);
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    deploy_contacts(&c).await;
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": env_primary.url(), "secondary_url": env_secondary.url()})),
        )
        .await;
    assert_eq!(code, 200, "{out}");

    // Not a URL: refused, naming the field, and no connection made.
    for bad in [
        json!("not a url"),
        json!("ftp://example.com/x"),
        json!(7),
        json!(null),
    ] {
        let (code, out) = c
            .send(
                "POST",
                "/connections",
                Some(
                    json!({"provider_config_key": "hubspot", "connection_id": "demo",
                            "access_token": "t", "webhook_url_override": bad}),
                ),
            )
            .await;
        assert_eq!(code, 400, "{bad}: {out}");
        assert!(
            out["error"]["message"]
                .as_str()
                .unwrap()
                .contains("webhook_url_override"),
            "{out}"
        );
    }
    let (code, _) = c
        .send("GET", "/connections/demo?provider_config_key=hubspot", None)
        .await;
    assert_eq!(code, 404);

    // Imported with its own URL: shown, and a run's webhook goes there
    // alone, signed as the environment's are.
    let (code, out) = c
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "hubspot", "connection_id": "demo",
                        "access_token": "t", "webhook_url_override": own.url()}),
            ),
        )
        .await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["webhook_url_override"], json!(own.url()), "{out}");
    let r = run(&c).await;
    assert_eq!(r["results"]["Contact"]["added"], 2, "{r}");
    own.wait_for("the run's webhook", Duration::from_secs(10), |a| {
        a.accepted().len() == 1
    })
    .await;
    let (req, body) = own.accepted().remove(0);
    assert_eq!(
        (body["type"].as_str(), body["connectionId"].as_str()),
        (Some("sync"), Some("demo"))
    );
    let raw = String::from_utf8(req.body.clone()).unwrap();
    assert_eq!(
        req.header("x-nango-hmac-sha256"),
        Some(nango_hmac_signature(DEV_KEY, &raw).as_str()),
    );

    // A re-import that leaves it out keeps it.
    let (code, out) = c
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "hubspot", "connection_id": "demo", "access_token": "t2"})),
        )
        .await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["webhook_url_override"], json!(own.url()), "{out}");
    up.version.store(1, Ordering::SeqCst);
    let r = run(&c).await;
    assert_eq!(r["results"]["Contact"]["updated"], 2, "{r}");
    own.wait_for("the second run's webhook", Duration::from_secs(10), |a| {
        a.accepted().len() == 2
    })
    .await;

    // PATCH with "" removes it: the environment's two URLs get the next.
    let (code, out) = set_override(&c, "bad url").await;
    assert_eq!(code, 400, "{out}");
    let (code, out) = set_override(&c, "").await;
    assert_eq!(code, 200, "{out}");
    let (_, out) = c
        .send("GET", "/connections/demo?provider_config_key=hubspot", None)
        .await;
    assert_eq!(out["webhook_url_override"], Value::Null, "{out}");
    up.version.store(2, Ordering::SeqCst);
    let r = run(&c).await;
    assert_eq!(r["results"]["Contact"]["updated"], 2, "{r}");
    for (app, what) in [(&env_primary, "primary"), (&env_secondary, "secondary")] {
        app.wait_for(what, Duration::from_secs(10), |a| a.accepted().len() == 1)
            .await;
    }
    // And PATCH sets one again.
    let (code, out) = set_override(&c, &own.url()).await;
    assert_eq!(code, 200, "{out}");
    up.version.store(3, Ordering::SeqCst);
    run(&c).await;
    own.wait_for("the fourth run's webhook", Duration::from_secs(10), |a| {
        a.accepted().len() == 3
    })
    .await;
    assert_eq!(
        own.refused() + env_primary.refused() + env_secondary.refused(),
        0
    );

    // A delivery waiting for a retry goes to the connection's URL as it is
    // at each attempt: moved, the new URL gets it; removed, nobody does.
    let moved = App::start().await;
    own.down.store(true, Ordering::SeqCst);
    up.version.store(4, Ordering::SeqCst);
    run(&c).await;
    own.wait_for("a refused attempt", Duration::from_secs(10), |a| {
        a.refused() >= 1
    })
    .await;
    let (code, out) = set_override(&c, &moved.url()).await;
    assert_eq!(code, 200, "{out}");
    moved
        .wait_for("the moved delivery", Duration::from_secs(10), |a| {
            a.accepted().len() == 1
        })
        .await;
    assert_eq!(moved.accepted()[0].1["connectionId"], "demo");
    moved.down.store(true, Ordering::SeqCst);
    up.version.store(5, Ordering::SeqCst);
    run(&c).await;
    moved
        .wait_for("a refused attempt", Duration::from_secs(10), |a| {
            a.refused() >= 1
        })
        .await;
    let (code, out) = set_override(&c, "").await;
    assert_eq!(code, 200, "{out}");
    // An attempt under way as the URL went is refused; later ones would
    // be accepted (retries come 50 ms doubling apart), but none is made.
    tokio::time::sleep(Duration::from_millis(200)).await;
    moved.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        moved.accepted().len(),
        1,
        "delivered after the URL was removed"
    );
    assert_eq!(env_primary.accepted().len(), 1);
    assert_eq!(env_secondary.accepted().len(), 1);
}

/// A receiver that redirects is not followed: an HTTP client would follow
/// a 302 with a GET without the body, which the receiver could answer 200
/// to, and the webhook would count as sent. It is tried again instead,
/// and the log names where the receiver points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_redirects_is_not_followed_nor_counted_as_sent() {
    let up = Upstream::start().await;
    let fast = App::start().await;
    let posts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (p, g) = (posts.clone(), gets.clone());
    let moved = MockServer::start(Arc::new(move |req: &MockRequest| {
        if req.method == "GET" {
            g.fetch_add(1, Ordering::SeqCst);
            return MockResponse::json(200, &json!({"ok": true}));
        }
        p.fetch_add(1, Ordering::SeqCst);
        MockResponse::json(302, &json!({})).with_header("location", "/elsewhere")
    }))
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    deploy_contacts(&c).await;
    c.send(
        "POST",
        "/connection",
        Some(
            json!({"provider_config_key": "hubspot", "connection_id": "demo", "access_token": "t"}),
        ),
    )
    .await;
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": format!("{}/hooks", moved.url()), "secondary_url": fast.url()})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    up.version.store(1, Ordering::SeqCst);
    let r = run(&c).await;
    assert_eq!(r["success"], true, "{r}");
    fast.wait_for(
        "the webhook at the secondary URL",
        Duration::from_secs(8),
        |a| a.accepted().len() == 1,
    )
    .await;
    let t = std::time::Instant::now();
    let logged = loop {
        let (_, found) = c.send("GET", "/logs?q=a%20redirect%20to", None).await;
        if found["logs"].as_array().is_some_and(|l| !l.is_empty()) {
            break found;
        }
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "no redirect logged: {found}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        logged["logs"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/elsewhere") && m.contains("tried again")),
        "{logged}"
    );
    assert!(posts.load(Ordering::SeqCst) >= 1);
    assert_eq!(gets.load(Ordering::SeqCst), 0, "the redirect was followed");
    server.stop().await;
}

/// An environment's outbox holds at most `webhook_outbox_max_bytes` of
/// bodies waiting for the app's receivers: past it a new webhook is not
/// queued (told to the operator and in the environment's logs), what is
/// queued stays; the bound holds across a restart (the outbox is counted
/// from the store), and room is taken again as deliveries go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_past_its_bound_queues_no_more_until_its_deliveries_go_out() {
    let receiver = App::start().await;
    receiver.down.store(true, Ordering::SeqCst);
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let config = || {
        let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
        config.webhook_outbox_max_bytes = 2_000;
        config.webhook_retry_base = Duration::from_millis(50);
        let kept = lines.clone();
        config.events = EventLog::new(move |line| kept.lock().unwrap().push(line.to_string()));
        config
    };
    let body = |n: u32| json!({"type": "test", "n": n, "pad": "x".repeat(280)});
    let each = sluice_runtime::js::stringify(&body(0)).len();
    let fit = 2_000 / each;
    assert!((5..10).contains(&fit), "{each}");
    let not_queued = |lines: &Mutex<Vec<String>>| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("not queued: the environment's webhook outbox holds"))
            .count()
    };
    let queued = |server: &sluice_server::Server| {
        let env = server.app.store.environment("dev").unwrap();
        async move {
            env.docs::<Value>("webhook-outbox", "", None, 100, false)
                .await
                .unwrap()
                .len()
        }
    };
    let enqueue = |server: &sluice_server::Server, n: u32| {
        let app = server.app.clone();
        let body = body(n);
        async move {
            let env = app.envs().find(|e| e.name() == "dev").unwrap().clone();
            let settings = sluice_server::webhooks::settings(&env).await.unwrap();
            let about = sluice_server::webhooks::About::new("test", "p", "c");
            app.webhooks
                .enqueue(&env, &settings, &body, &about)
                .await
                .unwrap();
        }
    };

    let server = start_with(config(), &master, "").await;
    let c = Client::new(&server, DEV_KEY);
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": receiver.url()})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    for n in 0..10 {
        enqueue(&server, n).await;
    }
    assert_eq!(queued(&server).await, fit, "what fits is queued");
    // The operator is told once a minute at most; the environment's logs
    // tell of each.
    assert_eq!(not_queued(&lines), 1, "{:?}", lines.lock().unwrap());
    let (code, logs) = c.send("GET", "/logs?limit=100", None).await;
    assert_eq!(code, 200, "{logs}");
    assert_eq!(
        logs.to_string()
            .matches("not queued: the environment's webhook outbox holds")
            .count(),
        10 - fit,
        "the logs do not tell of each: {logs}"
    );
    server.stop().await;

    // After a restart the outbox is counted from the store: still full.
    let server = start_with(config(), &master, "").await;
    enqueue(&server, 100).await;
    assert_eq!(not_queued(&lines), 2, "a full outbox took more");
    let before = queued(&server).await;
    assert_eq!(before, fit);

    // The receiver is back: everything queued goes out, and the room is
    // taken again.
    receiver.down.store(false, Ordering::SeqCst);
    receiver
        .wait_for("every queued delivery", Duration::from_secs(20), |a| {
            a.accepted().len() >= before
        })
        .await;
    outbox_emptied(&server).await;
    enqueue(&server, 200).await;
    receiver
        .wait_for(
            "the delivery queued once room was free",
            Duration::from_secs(10),
            |a| a.accepted().iter().any(|(_, b)| b["n"] == 200),
        )
        .await;
    server.stop().await;
}
