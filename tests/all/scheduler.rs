//! The scheduler end to end: a real `sluice serve` on 127.0.0.1:0, the
//! HubSpot contacts sync deployed against a mock upstream that records
//! when each run asks for its first page.
//!
//! Schedules run at `schedule_time_scale` 100: `every 30s` (the shortest
//! interval the grammar allows) is every 0.3 s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_runtime::ScriptKind;
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer, guests, repo_root};

use crate::server::{Client, DEV_KEY, PROD_KEY, deploy_scripts, futures_join, start_with};

const YAML: &str = "
integrations:
  hubspot:
    syncs:
      contacts:
        runs: every 30s
        output: Contact
        endpoint: GET /contacts
models:
  Contact:
    id: string
";

/// The start of every run (its first page request), with the token it
/// carried; each answer waits `delay` ms.
pub(crate) struct Upstream {
    mock: MockServer,
    pub(crate) starts: Arc<Mutex<Vec<(Instant, String)>>>,
    pub(crate) delay: Arc<AtomicU64>,
}

impl Upstream {
    pub(crate) async fn start() -> Upstream {
        let starts = Arc::new(Mutex::new(Vec::new()));
        let delay = Arc::new(AtomicU64::new(0));
        let (s, d) = (starts.clone(), delay.clone());
        let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
            if req.query_param("after").is_none() {
                let token = req.header("authorization").unwrap_or("").to_string();
                s.lock().unwrap().push((Instant::now(), token));
            }
            // A token the API does not take.
            if req.header("authorization").is_some_and(|a| a.contains("revoked")) {
                return MockResponse::json(401, &json!({"message": "token revoked"}));
            }
            let contact = |id: &str| {
                json!({"id": id, "createdAt": "2024-01-01T00:00:00Z", "properties": {"firstname": "F", "lastname": "L", "email": format!("{id}@example.com")}})
            };
            MockResponse::json(200, &json!({"results": [contact("1"), contact("2")]}))
                .delayed(Duration::from_millis(d.load(Ordering::SeqCst)))
        }))
        .await
        .unwrap();
        Upstream {
            mock,
            starts,
            delay,
        }
    }

    fn runs(&self) -> usize {
        self.starts.lock().unwrap().len()
    }

    pub(crate) fn providers(&self) -> String {
        let yaml =
            std::fs::read_to_string(repo_root().join("host/runtime/providers.yaml")).unwrap();
        yaml.replace("https://api.hubapi.com", &self.mock.url())
    }

    /// Waits until `n` runs started (or panics after `limit`).
    async fn wait_runs(&self, n: usize, limit: Duration) {
        let t = Instant::now();
        while self.runs() < n {
            assert!(
                t.elapsed() < limit,
                "{} runs after {limit:?}, expected {n}",
                self.runs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub(crate) async fn setup(c: &Client) {
    deploy_scripts(
        c,
        YAML,
        "hubspot",
        &[(guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync)],
    )
    .await;
    let (status, body) = c
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

pub(crate) async fn connect(c: &Client, cid: &str, token: &str) {
    let (status, body) = c
        .send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "hubspot", "connection_id": cid, "access_token": token})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn status(c: &Client) -> Value {
    let (code, body) = c
        .send(
            "GET",
            "/sync/status?provider_config_key=hubspot&syncs=contacts&connection_id=demo",
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    body["syncs"][0].clone()
}

/// Waits for the run in progress, if any, to end.
async fn settle(c: &Client) {
    let t = Instant::now();
    while status(c).await["status"] == "RUNNING" {
        assert!(t.elapsed() < Duration::from_secs(10), "a run never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_run_on_their_schedule_pause_resume_change_frequency_and_never_overlap() {
    let up = Upstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.schedule_time_scale = 100;
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c).await;

    // auto_start: the connection's sync runs at once, then every 0.3 s.
    connect(&c, "demo", "t").await;
    up.wait_runs(4, Duration::from_secs(10)).await;
    // A status between runs (they come every 0.3 s): a running one shows
    // no result yet.
    let t = Instant::now();
    let s = loop {
        let s = status(&c).await;
        if s["status"] != "RUNNING" {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "a run never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(s["name"], "contacts", "{s}");
    assert_eq!(s["connection_id"], "demo", "{s}");
    assert_eq!(s["variant"], "base", "{s}");
    assert_eq!(s["frequency"], "every 30s", "{s}");
    assert!(s["id"].as_str().is_some_and(|id| id.len() == 36), "{s}");
    assert!(
        ["SUCCESS", "RUNNING"].contains(&s["status"].as_str().unwrap()),
        "{s}"
    );
    assert!(s["nextScheduledSyncAt"].is_string(), "{s}");
    assert!(s["finishedAt"].is_string(), "{s}");
    assert_eq!(s["recordCount"]["Contact"], 2, "{s}");
    assert!(s["latestResult"]["Contact"].is_object(), "{s}");
    // A full sync's run, which the original reports as `INITIAL`.
    assert_eq!(s["type"], "INITIAL", "{s}");
    let (_, records) = c.send("GET", "/records?model=Contact", None).await;
    assert_eq!(records["records"].as_array().unwrap().len(), 2, "{records}");

    // Paused: no more runs, and no next run.
    let body =
        json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo"});
    let (code, out) = c.send("POST", "/sync/pause", Some(body.clone())).await;
    assert_eq!((code, &out), (200, &json!({"success": true})));
    settle(&c).await;
    let paused_at = up.runs();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(up.runs(), paused_at, "a paused sync ran");
    let s = status(&c).await;
    assert_eq!(s["status"], "PAUSED", "{s}");
    assert!(s["nextScheduledSyncAt"].is_null(), "{s}");

    // A trigger runs a paused sync once, and `wait` answers with the run.
    let (code, out) = c
        .send(
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["runs"][0]["success"], true, "{out}");
    assert_eq!(
        out["runs"][0]["results"]["Contact"]["unchanged"], 2,
        "{out}"
    );
    assert_eq!(up.runs(), paused_at + 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(up.runs(), paused_at + 1, "the trigger un-paused the sync");

    // Started: it runs now, then on its interval again.
    let (code, _) = c.send("POST", "/sync/start", Some(body.clone())).await;
    assert_eq!(code, 200);
    up.wait_runs(paused_at + 4, Duration::from_secs(10)).await;

    // A frequency of an hour: no run for a while.
    let freq = |f: Value| json!({"sync_name": "contacts", "provider_config_key": "hubspot", "connection_id": "demo", "frequency": f});
    // The answer is the interval, as the original's `getInterval` gives it.
    let (code, out) = c
        .send(
            "PUT",
            "/sync/update-connection-frequency",
            Some(freq(json!("every half hour"))),
        )
        .await;
    assert_eq!((code, &out), (200, &json!({"frequency": "30m"})));
    let (code, out) = c
        .send(
            "PUT",
            "/sync/update-connection-frequency",
            Some(freq(json!("every 1h"))),
        )
        .await;
    assert_eq!((code, &out), (200, &json!({"frequency": "1h"})));
    settle(&c).await;
    let slow_at = up.runs();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(up.runs(), slow_at, "ran sooner than its new frequency");
    assert_eq!(status(&c).await["frequency"], "every 1h");
    // Frequencies the original's API refuses: a unit it does not take,
    // an amount that is not whole, and (past a century) one whose slots
    // leave the calendar (such a date once overflowed and panicked).
    for f in [
        "every 100000000 years",
        "every 1.5h",
        "every 5000 ms",
        "every 99999999999 days",
    ] {
        let (code, out) = c
            .send(
                "PUT",
                "/sync/update-connection-frequency",
                Some(freq(json!(f))),
            )
            .await;
        assert_eq!(
            (code, out["error"]["code"].as_str()),
            (400, Some("invalid_body")),
            "{f}: {out}"
        );
    }
    assert_eq!(status(&c).await["frequency"], "every 1h");
    // `null`: back to nango.yaml's `runs`, so runs resume.
    let (code, out) = c
        .send(
            "PUT",
            "/sync/update-connection-frequency",
            Some(freq(Value::Null)),
        )
        .await;
    assert_eq!((code, &out), (200, &json!({"frequency": "every 30s"})));
    up.wait_runs(slow_at + 2, Duration::from_secs(10)).await;

    // A sync named by neither a name nor `{name, variant}` is refused
    // saying what a sync name is.
    let (code, out) = c
        .send(
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": [{"name": "contacts"}], "provider_config_key": "hubspot"})),
        )
        .await;
    assert_eq!(code, 400, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("name::variant"),
        "{out}"
    );
    // Bad frequencies and unknown names are refused, naming the problem;
    // so is a body without `frequency` (it reset the frequency).
    let (code, out) = c
        .send(
            "PUT",
            "/sync/update-connection-frequency",
            Some(json!({"sync_name": "contacts", "provider_config_key": "hubspot", "connection_id": "demo"})),
        )
        .await;
    assert_eq!(code, 400, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing field `frequency`"),
        "{out}"
    );
    let (code, out) = c
        .send(
            "PUT",
            "/sync/update-connection-frequency",
            Some(freq(json!("every 5s"))),
        )
        .await;
    assert_eq!(code, 400, "{out}");
    assert_eq!(out["error"]["code"], "invalid_body", "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("every 5s"),
        "{out}"
    );
    let (code, out) = c
        .send(
            "POST",
            "/sync/pause",
            Some(json!({"syncs": ["nope"], "provider_config_key": "hubspot", "connection_id": "demo"})),
        )
        .await;
    assert_eq!(
        (code, out["error"]["code"].as_str()),
        (400, Some("no_syncs_found")),
        "{out}"
    );
    // An unknown integration has no syncs to show (as the original's status)
    let (code, out) = c
        .send("GET", "/sync/status?provider_config_key=nope&syncs=*", None)
        .await;
    assert_eq!((code, &out), (200, &json!({"syncs": []})));
    // and a trigger names it (400, as the original's).
    let (code, out) = c
        .send(
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": ["contacts"], "provider_config_key": "nope"})),
        )
        .await;
    assert_eq!(
        (code, out["error"]["code"].as_str()),
        (400, Some("unknown_provider_config")),
        "{out}"
    );
    // Webhook settings with a misspelt key are refused, not half-taken.
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"on_sync_errors": true})),
        )
        .await;
    assert_eq!(code, 400, "{out}");
    assert!(out.to_string().contains("on_sync_errors"), "{out}");
    // What GET answers is taken back as it is.
    let (code, settings) = c.send("GET", "/sluice/webhook-settings", None).await;
    assert_eq!(code, 200, "{settings}");
    let (code, out) = c
        .send("PUT", "/sluice/webhook-settings", Some(settings.clone()))
        .await;
    assert_eq!((code, &out), (200, &settings));
    let (code, out) = c
        .send(
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "ghost"})),
        )
        .await;
    assert_eq!(
        (code, out["error"]["code"].as_str()),
        (404, Some("unknown_connection")),
        "{out}"
    );

    // A sync slower than its interval is never overlapped: each run starts
    // after the previous one ended, and the slots it missed are skipped.
    up.delay.store(700, Ordering::SeqCst);
    settle(&c).await;
    let from = up.runs();
    up.wait_runs(from + 4, Duration::from_secs(15)).await;
    let starts: Vec<Instant> = up.starts.lock().unwrap()[from..]
        .iter()
        .map(|(t, _)| *t)
        .collect();
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(690),
            "a run started {gap:?} after the previous one, which takes 700 ms"
        );
    }
    up.delay.store(0, Ordering::SeqCst);

    // Deleting the connection ends its schedule.
    let (code, _) = c
        .send(
            "DELETE",
            "/connection/demo?provider_config_key=hubspot",
            None,
        )
        .await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let gone_at = up.runs();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(up.runs(), gone_at, "a deleted connection's sync ran");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_with_many_due_syncs_does_not_hold_up_another() {
    let up = Upstream::start().await;
    up.delay.store(150, Ordering::SeqCst);
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    // One run at a time: every due sync waits for the slot.
    config.sync_slots = 1;
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let (a, b) = (
        Client::new(&server, DEV_KEY),
        Client::new(&server, PROD_KEY),
    );
    setup(&a).await;
    setup(&b).await;
    for i in 0..10 {
        connect(&a, &format!("a{i}"), &format!("token-a{i}")).await;
    }
    up.wait_runs(1, Duration::from_secs(10)).await;
    // Environment A has ten due syncs and the slot; B's one becomes due.
    let a_started_before = up.runs();
    connect(&b, "b", "token-b").await;
    up.wait_runs(11, Duration::from_secs(30)).await;
    let order: Vec<String> = up
        .starts
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| t.trim_start_matches("Bearer ").to_string())
        .collect();
    let b_at = order.iter().position(|t| t == "token-b").unwrap();
    assert!(
        b_at <= a_started_before + 1,
        "B's sync started as run {b_at}, after {a_started_before} of A's had started when it became due \
         (at most one more may start first): {order:?}"
    );
    assert!(
        order[..10]
            .iter()
            .filter(|t| t.starts_with("token-a"))
            .count()
            >= 9
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frequency_change_keeps_a_first_run_that_is_waiting_for_a_slot() {
    let up = Upstream::start().await;
    up.delay.store(1000, Ordering::SeqCst);
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.schedule_time_scale = 100;
    // One run at a time: `b`'s first run waits while `a`'s runs.
    config.sync_slots = 1;
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c).await;
    connect(&c, "a", "token-a").await;
    up.wait_runs(1, Duration::from_secs(10)).await;
    connect(&c, "b", "token-b").await;
    // An hour is 36 s at this scale: far past the wait below.
    let (code, out) = c
        .send(
            "PUT",
            "/sync/update-connection-frequency",
            Some(json!({"provider_config_key": "hubspot", "connection_id": "b", "sync_name": "contacts", "frequency": "every 1h"})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    let t = Instant::now();
    while !up
        .starts
        .lock()
        .unwrap()
        .iter()
        .any(|(_, token)| token.ends_with("token-b"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "b's first run was pushed back by the frequency change"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_removed_and_deployed_again_during_its_run_keeps_its_schedule() {
    let up = Upstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.schedule_time_scale = 100;
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c).await;

    // A run that lasts: each page waits 5 s.
    up.delay.store(5000, Ordering::SeqCst);
    connect(&c, "demo", "t").await;
    up.wait_runs(1, Duration::from_secs(10)).await;
    let first_page_asked = Instant::now();
    assert_eq!(status(&c).await["status"], "RUNNING");

    // While it runs, a deploy without the sync, then one with it again.
    deploy_scripts(
        &c,
        "integrations:\n  hubspot:\n    actions:\n      create-contact:\n        endpoint: POST /contacts\n        output: Contact\nmodels:\n  Contact:\n    id: string\n",
        "hubspot",
        &[(
            guests::HUBSPOT_RUST_CREATE_CONTACT,
            "create-contact",
            ScriptKind::Action,
        )],
    )
    .await;
    deploy_scripts(
        &c,
        YAML,
        "hubspot",
        &[(guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync)],
    )
    .await;
    assert_eq!(
        status(&c).await["status"],
        "RUNNING",
        "the run ended before the deploys"
    );
    up.delay.store(0, Ordering::SeqCst);

    // The schedule outlived the run: the sync runs again on it. (Nothing
    // asks the server anything meanwhile: a status request would put a
    // lost schedule back.)
    tokio::time::sleep(
        (first_page_asked + Duration::from_millis(5500)).saturating_duration_since(Instant::now()),
    )
    .await;
    up.wait_runs(3, Duration::from_secs(10)).await;
}

/// At real speed (`every 30s`), nothing runs that is not due: not after a
/// restart when the sync was resumed while it ran (the resume's "run now"
/// was that run), nor when a deploy brings back a sync whose queued
/// trigger a deploy without it had answered as removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_run_that_is_not_due_after_a_resume_during_a_run_or_a_removed_trigger() {
    let up = Upstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config.clone(), &master, &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c).await;
    let body =
        json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo"});

    // The first run lasts; it is paused and resumed while it runs.
    up.delay.store(1500, Ordering::SeqCst);
    connect(&c, "demo", "t").await;
    up.wait_runs(1, Duration::from_secs(10)).await;
    for route in ["/sync/pause", "/sync/start"] {
        let (code, out) = c.send("POST", route, Some(body.clone())).await;
        assert_eq!(code, 200, "{out}");
    }
    settle(&c).await;
    server.stop().await;
    let server = start_with(config.clone(), &master, &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(up.runs(), 1, "a run after the restart, none due");

    // A trigger queued behind a run, then the sync deployed away (the
    // waiting caller is told) and back.
    let (code, _) = c.send("POST", "/sync/trigger", Some(body.clone())).await;
    assert_eq!(code, 200);
    up.wait_runs(2, Duration::from_secs(10)).await;
    let mut waiting = body.clone();
    waiting["wait"] = json!(true);
    let queued = {
        let c = Client::new(&server, DEV_KEY);
        tokio::spawn(async move { c.send("POST", "/sync/trigger", Some(waiting)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    deploy_scripts(
        &c,
        "integrations:\n  hubspot:\n    actions:\n      create-contact:\n        endpoint: POST /contacts\n        output: Contact\nmodels:\n  Contact:\n    id: string\n",
        "hubspot",
        &[(
            guests::HUBSPOT_RUST_CREATE_CONTACT,
            "create-contact",
            ScriptKind::Action,
        )],
    )
    .await;
    let (code, out) = queued.await.unwrap();
    assert_eq!(
        (code, &out["error"]["code"]),
        (404, &json!("unknown_sync")),
        "{out}"
    );
    up.delay.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    deploy_scripts(
        &c,
        YAML,
        "hubspot",
        &[(guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync)],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        up.runs(),
        2,
        "the removed trigger ran when the sync came back"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_deleted_during_its_run_leaves_nothing_for_a_new_one_of_that_id() {
    let up = Upstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.schedule_time_scale = 100;
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c).await;

    // A run that is waiting for its page when its connection is deleted.
    up.delay.store(1000, Ordering::SeqCst);
    connect(&c, "demo", "t").await;
    up.wait_runs(1, Duration::from_secs(10)).await;
    assert_eq!(status(&c).await["status"], "RUNNING");
    let (code, body) = c
        .send(
            "DELETE",
            "/connection/demo?provider_config_key=hubspot",
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // Past the time the run's page would have come back (and been saved,
    // had the run not been stopped).
    tokio::time::sleep(Duration::from_millis(2000)).await;

    // A connection of the same id starts afresh: no run of the old one in
    // its status, none of its records.
    up.delay.store(5000, Ordering::SeqCst);
    connect(&c, "demo", "t2").await;
    up.wait_runs(2, Duration::from_secs(10)).await;
    let now = status(&c).await;
    assert_eq!(now["status"], "RUNNING", "{now}");
    // Not finished (the current original leaves `finishedAt` out while
    // its job runs), its result empty: nothing of the old connection's
    // run.
    assert!(now.get("finishedAt").is_none(), "{now}");
    assert_eq!(now["latestResult"], json!({}), "{now}");
    // A sync named twice is one sync.
    let (code, body) = c
        .send(
            "GET",
            "/sync/status?provider_config_key=hubspot&syncs=contacts,contacts&connection_id=demo",
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["syncs"].as_array().map(Vec::len), Some(1), "{body}");
    let (code, body) = c.send("GET", "/records?model=Contact", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["records"], json!([]), "{body}");
    server.stop().await;
}

/// A variant of a sync for one connection: created, run on its own
/// records (`Model::variant`), scheduled after a restart, and gone with
/// its records when deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_variant_runs_on_its_own_records_and_goes_when_deleted() {
    let up = Upstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config.clone(), &master, &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c).await;
    connect(&c, "demo", "t").await;

    let (code, out) = c.send("POST", "/sync/contacts/variant/eu", None).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(
        (out["name"].as_str(), out["variant"].as_str()),
        (Some("contacts"), Some("eu"))
    );
    let (code, out) = c.send("POST", "/sync/contacts/variant/eu", None).await;
    assert_eq!(
        (code, out["error"]["code"].as_str()),
        (400, Some("sync_variant_already_exists")),
        "{out}"
    );
    // Created by several requests at once: once.
    let answers =
        futures_join((0..8).map(|_| c.send("POST", "/sync/contacts/variant/w", None))).await;
    let codes: Vec<u16> = answers.iter().map(|(code, _)| *code).collect();
    assert_eq!(
        codes.iter().filter(|c| **c == 200).count(),
        1,
        "{answers:?}"
    );
    assert!(
        answers.iter().all(
            |(code, out)| *code == 200 || out["error"]["code"] == "sync_variant_already_exists"
        ),
        "{answers:?}"
    );
    let (code, out) = c.send("DELETE", "/sync/contacts/variant/w", None).await;
    assert_eq!(code, 200, "{out}");
    // A parameter of the status given twice is refused, not read as its
    // last value.
    let (code, out) = c
        .send(
            "GET",
            "/sync/status?provider_config_key=hubspot&syncs=nope&syncs=contacts&connection_id=demo",
            None,
        )
        .await;
    assert_eq!(
        (code, out["error"]["code"].as_str()),
        (400, Some("invalid_query_params")),
        "{out}"
    );
    for bad in ["/sync/contacts/variant/base", "/sync/contacts/variant/a::b"] {
        let (code, out) = c.send("POST", bad, None).await;
        assert_eq!(
            (code, out["error"]["code"].as_str()),
            (400, Some("invalid_variant")),
            "{out}"
        );
    }
    let (code, out) = c.send("POST", "/sync/nope/variant/eu", None).await;
    assert_eq!(
        (code, out["error"]["code"].as_str()),
        (400, Some("unknown_sync")),
        "{out}"
    );

    // Its run saves the variant's records, apart from the base's.
    let run = |name: &str| json!({"syncs": [name], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true});
    let (code, out) = c
        .send("POST", "/sync/trigger", Some(run("contacts::eu")))
        .await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["runs"][0]["success"], true, "{out}");
    assert_eq!(out["runs"][0]["variant"], "eu", "{out}");
    assert_eq!(records_of(&c, "eu").await, 2);
    let (_, status) = c
        .send(
            "GET",
            "/sync/status?provider_config_key=hubspot&syncs=contacts::eu&connection_id=demo",
            None,
        )
        .await;
    assert_eq!(status["syncs"][0]["variant"], "eu", "{status}");
    assert_eq!(status["syncs"][0]["status"], "SUCCESS", "{status}");

    // After a restart it is still there, scheduled beside the base.
    let (_, before) = c.send("GET", "/sluice/scheduler", None).await;
    assert_eq!(before["schedules"], 2, "{before}");
    server.stop().await;
    let server = start_with(config, &master, &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    let (_, after) = c.send("GET", "/sluice/scheduler", None).await;
    assert_eq!(after["schedules"], 2, "{after}");
    let (code, out) = c
        .send("POST", "/sync/trigger", Some(run("contacts::eu")))
        .await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["runs"][0]["success"], true, "{out}");

    // `*` lists it beside the base sync.
    let (_, all) = c
        .send(
            "GET",
            "/sync/status?provider_config_key=hubspot&syncs=*&connection_id=demo",
            None,
        )
        .await;
    let listed: Vec<&str> = all["syncs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["variant"].as_str())
        .collect();
    assert_eq!(listed, ["base", "eu"], "{all}");

    // Deleted while it runs: the run stops (nothing saved after), and
    // its records and schedule go; the base's stay. The connection is
    // named in the body, as the original's SDK sends it.
    let (_, before_run) = c
        .send(
            "GET",
            "/sync/status?provider_config_key=hubspot&syncs=contacts::eu&connection_id=demo",
            None,
        )
        .await;
    let last_finished = before_run["syncs"][0]["finishedAt"]
        .as_str()
        .expect("a finished run")
        .to_string();
    up.delay.store(1000, Ordering::SeqCst);
    let before = up.runs();
    let (code, out) = c
        .send(
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": ["contacts::eu"], "provider_config_key": "hubspot", "connection_id": "demo"})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    up.wait_runs(before + 1, Duration::from_secs(10)).await;
    // While it runs, its status shows no finish time and no result yet
    // (the last run's were shown as this one's).
    let started = Instant::now();
    let status = loop {
        let (_, status) = c
            .send(
                "GET",
                "/sync/status?provider_config_key=hubspot&syncs=contacts::eu&connection_id=demo",
                None,
            )
            .await;
        if status["syncs"][0]["status"] == "RUNNING" || started.elapsed() > Duration::from_secs(5) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status["syncs"][0]["status"], "RUNNING", "{status}");
    assert_eq!(status["syncs"][0]["latestResult"], json!({}), "{status}");
    assert!(
        status["syncs"][0].get("finishedAt").is_none(),
        "the last run's time ({last_finished}): {status}"
    );
    let resp = c
        .http
        .delete(format!("{}/sync/contacts/variant/eu", c.base))
        .bearer_auth(&c.key)
        .header("content-type", "application/json")
        .body(json!({"provider_config_key": "hubspot", "connection_id": "demo"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    up.delay.store(0, Ordering::SeqCst);
    // Long past the upstream's answer: a run not stopped has saved.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(records_of(&c, "eu").await, 0);
    let (_, history) = c
        .send(
            "GET",
            "/executions?provider_config_key=hubspot&connection_id=demo",
            None,
        )
        .await;
    assert!(
        history
            .to_string()
            .contains("the variant `eu` was deleted during the run"),
        "{history}"
    );
    let (_, after) = c.send("GET", "/sluice/scheduler", None).await;
    assert_eq!(after["schedules"], 1, "{after}");
    let (code, out) = c
        .send("POST", "/sync/trigger", Some(run("contacts::eu")))
        .await;
    assert_eq!(
        (code, out["error"]["code"].as_str()),
        (400, Some("no_syncs_found")),
        "{out}"
    );
    let (code, out) = c.send("DELETE", "/sync/contacts/variant/eu", None).await;
    assert_eq!(
        (code, out["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{out}"
    );
    let (code, out) = c.send("POST", "/sync/trigger", Some(run("contacts"))).await;
    assert_eq!(out["runs"][0]["success"], true, "{code} {out}");
    assert_eq!(records_of(&c, "base").await, 2);

    // A DELETE cut short (the variant marked deleted, its records not yet
    // cleared, as a crash leaves it) serves none of them; repeating it
    // finishes it.
    let (code, out) = c.send("POST", "/sync/contacts/variant/us", None).await;
    assert_eq!(code, 200, "{out}");
    let (_, out) = c
        .send("POST", "/sync/trigger", Some(run("contacts::us")))
        .await;
    assert_eq!(out["runs"][0]["success"], true, "{out}");
    assert_eq!(records_of(&c, "us").await, 2);
    let dev = server
        .app
        .envs()
        .find(|e| e.name() == "dev")
        .unwrap()
        .clone();
    let key = "hubspot\u{1f}demo\u{1f}contacts\u{1f}us";
    let mut doc: Value = dev
        .store
        .doc(sluice_server::runner::SYNC_VARIANTS, key)
        .await
        .unwrap()
        .unwrap();
    doc["deleting"] = json!(true);
    dev.store
        .put_doc(sluice_server::runner::SYNC_VARIANTS, key, &doc)
        .await
        .unwrap();
    assert_eq!(
        records_of(&c, "us").await,
        0,
        "a deleted variant's records were served"
    );
    let (code, out) = c.send("DELETE", "/sync/contacts/variant/us", None).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(records_of(&c, "base").await, 2);
    drop(dev);
    server.stop().await;
}

/// How many `Contact` records of `variant` the `demo` connection has.
async fn records_of(c: &Client, variant: &str) -> usize {
    let (code, page) = c
        .send(
            "GET",
            &format!("/records?model=Contact&variant={variant}"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{page}");
    page["records"].as_array().unwrap().len()
}

/// A server whose requests go to a mock upstream (`serve
/// --mock-upstream`): the provider keeps its real base URL, and the sync's
/// requests, `/proxy`'s and an expired token's refresh all reach the mock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_mock_upstream_sends_every_request_to_it() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
        let auth = req.header("authorization").unwrap_or("").to_string();
        log.lock()
            .unwrap()
            .push(format!("{} {} {auth}", req.method, req.path));
        if req.path == "/oauth/v1/token" {
            return MockResponse::json(200, &json!({"access_token": "fresh", "expires_in": 3600}));
        }
        let contact = |id: &str| {
            json!({"id": id, "createdAt": "2024-01-01T00:00:00Z", "properties": {"firstname": "F", "lastname": "L", "email": format!("{id}@example.com")}})
        };
        MockResponse::json(200, &json!({"results": [contact("1"), contact("2")]}))
    }))
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.upstream_redirect = Some(mock.url().parse().unwrap());
    let real = std::fs::read_to_string(repo_root().join("host/runtime/providers.yaml")).unwrap();
    assert!(real.contains("https://api.hubapi.com/oauth/v1/token"));
    let server = start_with(config, &master, &real).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c).await;
    let (status, body) = c
        .send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "hubspot", "connection_id": "demo",
                "access_token": "old", "refresh_token": "rt", "expires_at": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (code, out) = c
        .send(
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["runs"][0]["success"], true, "{out}");
    assert_eq!(records_of(&c, "base").await, 2);
    let (code, out) = c.send("GET", "/proxy/crm/v3/objects/contacts", None).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["results"][0]["id"], "1", "{out}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter()
            .filter(|r| r.starts_with("POST /oauth/v1/token"))
            .count(),
        1,
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|r| r.starts_with("GET /crm/v3/objects/contacts Bearer fresh")),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|r| r.ends_with("Bearer old")), "{seen:?}");
    server.stop().await;
}

/// A stop answers a trigger still waiting (`wait: true`) for its run at
/// once, 503 `server_stopping`, rather than holding the stop for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_answers_the_triggers_still_waiting_for_their_run() {
    let up = Upstream::start().await;
    up.delay.store(2000, Ordering::SeqCst);
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c).await;
    // auto_start: its first run starts at once, and takes a while.
    connect(&c, "demo", "t").await;
    up.wait_runs(1, Duration::from_secs(10)).await;
    // Queued behind the run going.
    let url = server.url();
    let waiting = tokio::spawn(async move {
        Client::at(&url, DEV_KEY)
            .send(
                "POST",
                "/sync/trigger",
                Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true})),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::time::timeout(Duration::from_secs(20), server.stop())
        .await
        .expect("the stop waited for the trigger's run");
    let (code, body) = waiting.await.unwrap();
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (503, Some("server_stopping")),
        "{body}"
    );
}

/// A script's `triggerSync` runs a sync of its own environment now and its
/// `startSync` un-pauses one; what the API would refuse reaches the script
/// with the API's code and status, and another environment's connection is
/// not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_triggers_and_starts_syncs_of_its_own_environment() {
    let up = Upstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let yaml = "
integrations:
  hubspot:
    syncs:
      contacts:
        runs: every day
        auto_start: false
        output: Contact
        endpoint: GET /contacts
    actions:
      control:
        endpoint: POST /control
models:
  Contact:
    id: string
";
    let dev = Client::new(&server, DEV_KEY);
    let prod = Client::new(&server, PROD_KEY);
    for (c, cid) in [(&dev, "demo"), (&prod, "other")] {
        deploy_scripts(
            c,
            yaml,
            "hubspot",
            &[
                (guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync),
                (guests::ACTION_SYNC_CONTROL, "control", ScriptKind::Action),
            ],
        )
        .await;
        let (status, body) = c
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        connect(c, cid, "tok").await;
    }
    async fn control(c: &Client, input: Value) -> Value {
        let (status, body) = c
            .send_as(
                ("hubspot", "demo"),
                "POST",
                "/action/trigger",
                Some(json!({"action_name": "control", "input": input})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
    async fn control_as(c: &Client, cid: &str, input: Value) -> Value {
        let (status, body) = c
            .send_as(
                ("hubspot", cid),
                "POST",
                "/action/trigger",
                Some(json!({"action_name": "control", "input": input})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    assert_eq!(up.runs(), 0, "auto_start is off");
    let out = control(
        &dev,
        json!({"trigger": ["hubspot", "demo", "contacts", null]}),
    )
    .await;
    assert_eq!(out, json!({"ok": true}));
    up.wait_runs(1, Duration::from_secs(30)).await;
    settle(&dev).await;
    assert_eq!(status(&dev).await["latestExecutionStatus"], "SUCCESS");

    let out = control(&dev, json!({"trigger": ["hubspot", "demo", "nope", null]})).await;
    assert_eq!(
        (&out["error"]["code"], &out["error"]["status"]),
        (&json!("no_syncs_found"), &json!(400)),
        "{out}"
    );
    let out = control(
        &dev,
        json!({"trigger": ["hubspot", "demo", "contacts", "sideways"]}),
    )
    .await;
    assert_eq!(out["error"]["code"], "invalid_body", "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at `sync_mode`"),
        "{out}"
    );
    // Prod's script names dev's connection: there is none in prod.
    let out = control_as(
        &prod,
        "other",
        json!({"trigger": ["hubspot", "demo", "contacts", null]}),
    )
    .await;
    assert_eq!(
        (&out["error"]["code"], &out["error"]["status"]),
        (&json!("unknown_connection"), &json!(404)),
        "{out}"
    );

    // Paused through the API, started by the script.
    let (code, body) = dev
        .send(
            "POST",
            "/sync/pause",
            Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo"})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(status(&dev).await["status"], "PAUSED");
    let out = control(&dev, json!({"start": ["hubspot", ["contacts"], "demo"]})).await;
    assert_eq!(out, json!({"ok": true}));
    assert_ne!(status(&dev).await["status"], "PAUSED");
    // Started, it runs at once (then every day).
    up.wait_runs(2, Duration::from_secs(30)).await;
    server.stop().await;
}

/// A trigger that waits for its runs (`wait: true`) holds a client
/// connection until they end: one environment may have a quarter of
/// `--max-connections` waiting; past that a waiting trigger is 429
/// `too_many_request`, queuing nothing, and one without `wait` still
/// works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_triggers_are_bounded_per_environment() {
    let up = Upstream::start().await;
    up.delay.store(3000, Ordering::SeqCst);
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    // Two waiting triggers per environment.
    config.max_connections = 8;
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c).await;
    // auto_start: its first run starts at once, and lasts.
    connect(&c, "demo", "t").await;
    up.wait_runs(1, Duration::from_secs(10)).await;
    let body = json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true});
    let url = server.url();
    let mut waiting = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let (url, body) = (url.clone(), body.clone());
        waiting.spawn(async move {
            Client::at(&url, DEV_KEY)
                .send("POST", "/sync/trigger", Some(body))
                .await
        });
    }
    // The first answer is the trigger past the bound's: the other two
    // wait for the runs.
    let (code, out) = waiting.join_next().await.unwrap().unwrap();
    assert_eq!(
        (code, out["error"]["code"].as_str()),
        (429, Some("too_many_request")),
        "{out}"
    );
    assert_eq!(out["error"]["payload"]["max_waiting"], 2, "{out}");
    let mut no_wait = body.clone();
    no_wait["wait"] = json!(false);
    let (code, out) = c.send("POST", "/sync/trigger", Some(no_wait)).await;
    assert_eq!((code, &out), (200, &json!({"success": true})));
    up.delay.store(0, Ordering::SeqCst);
    while let Some(done) = waiting.join_next().await {
        let (code, out) = done.unwrap();
        assert_eq!(code, 200, "{out}");
        assert_eq!(out["runs"][0]["success"], true, "{out}");
    }
    // Their places are given back when they answer.
    let (code, out) = c.send("POST", "/sync/trigger", Some(body)).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["runs"][0]["success"], true, "{out}");
    server.stop().await;
}

/// A trigger, start or pause names at most 256 syncs (each is looked up
/// for each connection): past it, 400 `invalid_body` naming the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_start_or_pause_names_at_most_256_syncs() {
    let up = Upstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c).await;
    connect(&c, "demo", "t").await;
    for route in ["/sync/trigger", "/sync/pause", "/sync/start"] {
        for (n, want) in [(257, 400), (256, 200)] {
            let syncs: Vec<Value> = (0..n).map(|_| json!("contacts")).collect();
            for cid in [Some("demo"), None] {
                let mut body = json!({"syncs": syncs, "provider_config_key": "hubspot"});
                if let Some(cid) = cid {
                    body["connection_id"] = json!(cid);
                }
                let (code, out) = match cid {
                    Some(_) => c.send("POST", route, Some(body)).await,
                    None => send_for_every_connection(&c, route, body).await,
                };
                assert_eq!(code, want, "{route} {n} {cid:?}: {out}");
                if want == 400 {
                    assert_eq!(out["error"]["code"], "invalid_body", "{out}");
                    let message = out["error"]["message"].as_str().unwrap_or_default();
                    assert!(message.contains("256"), "{out}");
                }
            }
        }
    }
    server.stop().await;
}

/// With an integration but nothing deployed, the status lists no syncs
/// and a trigger, start or pause of a sync answers as it does for a sync
/// the deployment lacks (400 `no_syncs_found`), as the original's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_deployed_there_are_no_syncs() {
    let up = Upstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    let (status, body) = c
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    connect(&c, "demo", "t").await;
    for query in [
        "provider_config_key=hubspot&syncs=contacts",
        "provider_config_key=hubspot&syncs=*",
        "provider_config_key=hubspot&syncs=contacts&connection_id=demo",
        "provider_config_key=hubspot&syncs=*&connection_id=demo",
    ] {
        let (code, out) = c.send("GET", &format!("/sync/status?{query}"), None).await;
        assert_eq!((code, &out), (200, &json!({"syncs": []})), "{query}");
    }
    for route in ["/sync/trigger", "/sync/start", "/sync/pause"] {
        let named = json!({"syncs": ["contacts"], "provider_config_key": "hubspot"});
        let mut of_demo = named.clone();
        of_demo["connection_id"] = json!("demo");
        for (code, out) in [
            c.send("POST", route, Some(of_demo)).await,
            send_for_every_connection(&c, route, named).await,
        ] {
            assert_eq!(
                (code, out["error"]["code"].as_str()),
                (400, Some("no_syncs_found")),
                "{route}: {out}"
            );
        }
        // Every sync of every connection: none.
        let (code, out) = send_for_every_connection(
            &c,
            route,
            json!({"syncs": [], "provider_config_key": "hubspot"}),
        )
        .await;
        assert_eq!(
            (code, out["error"]["code"].as_str()),
            (400, Some("no_syncs_found")),
            "{route}: {out}"
        );
    }
    // Deployed, an unknown sync is answered the same.
    setup_deploy_only(&c).await;
    let (code, out) = c
        .send(
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": ["nope"], "provider_config_key": "hubspot", "connection_id": "demo"})),
        )
        .await;
    assert_eq!(
        (code, out["error"]["code"].as_str()),
        (400, Some("no_syncs_found")),
        "{out}"
    );
    server.stop().await;
}

/// A request without the connection headers [`Client::send`] adds.
async fn send_for_every_connection(c: &Client, route: &str, body: Value) -> (u16, Value) {
    let resp = c
        .http
        .post(format!("{}{route}", c.base))
        .bearer_auth(&c.key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn setup_deploy_only(c: &Client) {
    deploy_scripts(
        c,
        YAML,
        "hubspot",
        &[(guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync)],
    )
    .await;
}

/// A triggered run that a stop cut short, its sync deployed away while it
/// ran, is not run again after the restart when a later deploy brings the
/// sync back (paused, it does not run at all): the removal dropped the
/// trigger, as it does one still queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_cut_short_by_a_stop_does_not_outlive_its_sync() {
    let up = Upstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    // At real speed (`every 30s`): paused, nothing is due.
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config.clone(), &master, &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c).await;
    connect(&c, "demo", "t").await;
    up.wait_runs(1, Duration::from_secs(10)).await;
    settle(&c).await;
    let one =
        json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo"});
    let (code, out) = c.send("POST", "/sync/pause", Some(one.clone())).await;
    assert_eq!(code, 200, "{out}");
    // A full refresh triggered, which lasts; the sync is deployed away
    // while it runs, then the server stops.
    up.delay.store(60_000, Ordering::SeqCst);
    let mut full = one.clone();
    full["sync_mode"] = json!("full_refresh");
    let (code, out) = c.send("POST", "/sync/trigger", Some(full)).await;
    assert_eq!(code, 200, "{out}");
    up.wait_runs(2, Duration::from_secs(10)).await;
    deploy_scripts(
        &c,
        "integrations:\n  hubspot:\n    actions:\n      create-contact:\n        endpoint: POST /contacts\n        output: Contact\nmodels:\n  Contact:\n    id: string\n",
        "hubspot",
        &[(
            guests::HUBSPOT_RUST_CREATE_CONTACT,
            "create-contact",
            ScriptKind::Action,
        )],
    )
    .await;
    server.stop().await;
    up.delay.store(0, Ordering::SeqCst);

    let server = start_with(config, &master, &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    setup_deploy_only(&c).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        up.runs(),
        2,
        "the cut-short trigger of a removed sync ran when the sync came back"
    );
    assert_eq!(status(&c).await["status"], "PAUSED");
    server.stop().await;
}

/// A scheduled run that waited past `sync_max_wait` for a slot is
/// recorded as `sync_not_started` with the type the run would have had:
/// for a sync that ran before (it has a `lastSyncDate`), its failure
/// webhook's `syncType` is `INCREMENTAL`, not `INITIAL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_not_started_has_the_type_it_would_have_had() {
    let up = Upstream::start().await;
    let hooks = crate::webhooks::App::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.schedule_time_scale = 100;
    // No scheduled run may wait: each dispatched after its slot is not
    // started (a trigger's run is not held to it).
    config.sync_max_wait = Duration::ZERO;
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    deploy_scripts(
        &c,
        &YAML.replace(
            "endpoint: GET /contacts",
            "endpoint: GET /contacts\n        auto_start: false",
        ),
        "hubspot",
        &[(guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync)],
    )
    .await;
    let (code, out) = c
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": hooks.url(), "on_sync_error": true})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    connect(&c, "demo", "t").await;
    // Paused (no `auto_start`): its first run is a trigger's, which sets
    // its `lastSyncDate`.
    let one =
        json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo"});
    let mut waiting = one.clone();
    waiting["wait"] = json!(true);
    let (code, out) = c.send("POST", "/sync/trigger", Some(waiting)).await;
    assert_eq!(
        (code, &out["runs"][0]["success"]),
        (200, &json!(true)),
        "{out}"
    );
    let (code, out) = c.send("POST", "/sync/start", Some(one.clone())).await;
    assert_eq!(code, 200, "{out}");
    let failed = |h: &crate::webhooks::App| {
        h.accepted()
            .into_iter()
            .map(|(_, b)| b)
            .find(|b| b["type"] == "sync" && b["success"] == false)
    };
    hooks
        .wait_for("a failure webhook", Duration::from_secs(20), |h| {
            failed(h).is_some()
        })
        .await;
    let (code, out) = c.send("POST", "/sync/pause", Some(one)).await;
    assert_eq!(code, 200, "{out}");
    let body = failed(&hooks).unwrap();
    assert_eq!(body["syncType"], "INCREMENTAL", "{body}");
    server.stop().await;
}

/// A full refresh triggered during a run does not wait for it: the run
/// going is cancelled (its waiting trigger told so, `sync_cancelled`)
/// and the full refresh runs, as the original's `runSyncCommand` cancels
/// the running job. An incremental trigger waits for the run instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refresh_triggered_during_a_run_cancels_it() {
    let up = Upstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &up.providers()).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c).await;
    connect(&c, "demo", "t").await;
    up.wait_runs(1, Duration::from_secs(10)).await;
    settle(&c).await;
    let one = json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true});
    // A triggered run that lasts (its page answers after 60 s).
    up.delay.store(60_000, Ordering::SeqCst);
    let url = server.url();
    let first = {
        let one = one.clone();
        tokio::spawn(async move {
            Client::at(&url, DEV_KEY)
                .send("POST", "/sync/trigger", Some(one))
                .await
        })
    };
    up.wait_runs(2, Duration::from_secs(10)).await;
    up.delay.store(0, Ordering::SeqCst);
    let mut full = one.clone();
    full["sync_mode"] = json!("full_refresh");
    let (code, out) = c.send("POST", "/sync/trigger", Some(full)).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["runs"][0]["success"], true, "{out}");
    let (code, out) = first.await.unwrap();
    assert_eq!(code, 200, "{out}");
    assert_eq!(
        (&out["runs"][0]["success"], &out["runs"][0]["error"]["type"]),
        (&json!(false), &json!("sync_cancelled")),
        "{out}"
    );
    assert_eq!(up.runs(), 3);
    server.stop().await;
}
