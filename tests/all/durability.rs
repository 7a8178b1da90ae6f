//! Durability: a real `sluice serve` process is killed with SIGKILL at
//! random points of a long sync, many times, and restarted each time. The
//! store must open each time, and no record whose `batchSave` had returned
//! may be lost. The mock upstream is the witness: the sync asks for page
//! k+1 only after `batchSave` of page k returned, so every page before the
//! highest one requested must be stored.
//!
//! `SLUICE_KILLS` sets the number of kills (50 by default, on each of the
//! two stores, sled and redb; the longer run in the README uses 1,000).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer, repo_root};

use crate::server::{Client, DEV_KEY, deploy};

/// Pages the upstream has; two contacts each.
const PAGES: usize = 20_000;

fn page(after: usize) -> MockResponse {
    let contact = |id: usize| {
        json!({"id": id.to_string(), "createdAt": "2024-01-01T00:00:00Z",
               "properties": {"firstname": "F", "lastname": "L", "email": format!("{id}@example.com")}})
    };
    let mut body = json!({"results": [contact(after * 2), contact(after * 2 + 1)]});
    if after + 1 < PAGES {
        body["paging"] = json!({"next": {"after": (after + 1).to_string()}});
    }
    MockResponse::json(200, &body)
}

struct Process {
    child: Child,
    url: String,
}

/// A test that fails does not leave its server running.
impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &std::path::Path, providers: &std::path::Path, master: &str) -> Process {
    start_args(data, providers, master, &[])
}

fn start_args(
    data: &std::path::Path,
    providers: &std::path::Path,
    master: &str,
    args: &[&str],
) -> Process {
    let command = Command::new(env!("CARGO_BIN_EXE_sluice-under-test"));
    start_command(command, data, providers, master, args)
}

/// `command` set to serve on a free loopback port with `data`,
/// `providers`, `master` and `args`, its stdout piped.
pub(crate) fn serve<'c>(
    command: &'c mut Command,
    data: &std::path::Path,
    providers: &std::path::Path,
    master: &str,
    args: &[&str],
) -> &'c mut Command {
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--providers")
        .arg(providers)
        .args(args)
        .env("SLUICE_MASTER_KEY", master)
        .env("NANGO_SECRET_KEY_DEV", DEV_KEY)
        .env("NANGO_SECRET_KEY_PROD", "prod-durability-key")
        .stdout(Stdio::piped())
}

/// [`start_args`] with `command` running the binary (say under `nohup`).
fn start_command(
    mut command: Command,
    data: &std::path::Path,
    providers: &std::path::Path,
    master: &str,
    args: &[&str],
) -> Process {
    let mut child = serve(&mut command, data, providers, master, args)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the server exited before listening"))
            .unwrap();
        if let Some(url) = line.strip_prefix("sluice is listening on ") {
            break url.trim().to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Process { child, url }
}

/// The paging HubSpot mock every kill test syncs from, and a providers
/// file pointing HubSpot at it.
pub(crate) struct Upstream {
    /// Serves until dropped.
    _mock: MockServer,
    /// The highest page asked for: every page before it was acknowledged.
    pub highest: Arc<AtomicUsize>,
    /// Requests in all.
    pub calls: Arc<AtomicUsize>,
    pub providers: std::path::PathBuf,
}

impl Upstream {
    pub(crate) async fn start(dir: &std::path::Path) -> Upstream {
        let highest = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let (seen, called) = (highest.clone(), calls.clone());
        let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
            let after: usize = req
                .query_param("after")
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            seen.fetch_max(after, Ordering::SeqCst);
            called.fetch_add(1, Ordering::SeqCst);
            page(after)
        }))
        .await
        .unwrap();
        let providers = dir.join("providers.yaml");
        let yaml =
            std::fs::read_to_string(repo_root().join("host/runtime/providers.yaml")).unwrap();
        std::fs::write(
            &providers,
            yaml.replace("https://api.hubapi.com", &mock.url()),
        )
        .unwrap();
        Upstream {
            _mock: mock,
            highest,
            calls,
            providers,
        }
    }
}

/// Deploys the test project, and makes the `hubspot` integration and the
/// connection `demo` the syncs run for.
pub(crate) async fn connect_demo(c: &Client) {
    deploy(c).await;
    let (status, body) = c
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c
        .send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "hubspot", "connection_id": "demo", "access_token": "t"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// The `POST /sync/trigger` body of the kill tests' sync.
pub(crate) fn contacts_trigger() -> serde_json::Value {
    json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo"})
}

/// Every record of every page before `requested` (each acknowledged) is
/// in `ids`, and no page is stored in part.
pub(crate) fn assert_acknowledged_kept(ids: &HashSet<String>, requested: usize, round: usize) {
    let missing: Vec<usize> = (0..requested * 2)
        .filter(|id| !ids.contains(&id.to_string()))
        .collect();
    assert!(
        missing.is_empty(),
        "round {round}: pages up to {requested} were acknowledged, {} records are missing (first {:?})",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(ids.len() % 2, 0, "round {round}: a page was stored in part");
}

pub(crate) async fn stored_ids(c: &Client) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/records?model=Contact&limit=10000&cursor={c}"),
            None => "/records?model=Contact&limit=10000".to_string(),
        };
        let (status, page) = c.send("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        for r in page["records"].as_array().unwrap() {
            ids.insert(r["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_sync_loses_no_acknowledged_batch() {
    sigkill_during_a_sync("sled", &["--store", "sled"], 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_sync_loses_no_acknowledged_batch_on_redb() {
    sigkill_during_a_sync("redb", &["--store", "redb"], 50).await;
}

/// On PostgreSQL (`SLUICE_TEST_POSTGRES`): a killed server's commits are
/// the database's, and its successor takes the store's lock over from the
/// dead connection at once. Fewer kills: what dies is only the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_sync_loses_no_acknowledged_batch_on_postgres() {
    let Some(url) = sluice_tests::postgres_schema().await else {
        return;
    };
    let args = ["--store", "postgres", "--database-url", &url];
    sigkill_during_a_sync("postgres", &args, 15).await;
}

/// The kill loop on a backend (`args` choose it), `kills` times unless
/// `SLUICE_KILLS` says otherwise.
async fn sigkill_during_a_sync(store: &str, args: &[&str], kills: usize) {
    let kills: usize = std::env::var("SLUICE_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(kills);
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(dir.path()).await;
    let (highest, providers) = (upstream.highest.clone(), upstream.providers.clone());
    let data = dir.path().join("data");
    let master = MasterKey::generate().to_base64();

    let mut server = start_args(&data, &providers, &master, args);
    let c = Client::at(&server.url, DEV_KEY);
    connect_demo(&c).await;

    // A small deterministic generator for the kill points (no extra crate).
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ kills as u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    let mut most_pages = 0;
    for round in 0..kills {
        // The request dies with the server; its answer is not awaited.
        let trigger = tokio::spawn(
            reqwest::Client::new()
                .post(format!("{}/sync/trigger", server.url))
                .bearer_auth(DEV_KEY)
                .header("content-type", "application/json")
                .body(contacts_trigger().to_string())
                .send(),
        );
        let wait = Duration::from_millis(10 + next() % 250);
        tokio::time::sleep(wait).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        trigger.abort();
        let requested = highest.load(Ordering::SeqCst);
        most_pages = most_pages.max(requested);

        // The store opens clean, and every page before the highest one the
        // upstream was asked for is there.
        server = start_args(&data, &providers, &master, args);
        let c = Client::at(&server.url, DEV_KEY);
        let ids = stored_ids(&c).await;
        assert_acknowledged_kept(&ids, requested, round);
    }
    println!(
        "{store}: {kills} kills in {:.1}s; the sync reached page {most_pages} of {PAGES}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        most_pages > 0,
        "the kills all came before the first batchSave"
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// SIGUSR1 backs the store up while a sync writes to it: the backup,
/// once its folder has its name, survives a SIGKILL of the server, and a
/// server started on it (with the master key) serves a whole prefix of
/// the sync's pages, none in part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_asked_for_with_sigusr1_during_a_sync_survives_sigkill_and_serves() {
    for store in ["sled", "redb"] {
        let dir = tempfile::tempdir().unwrap();
        let upstream = Upstream::start(dir.path()).await;
        let (highest, providers) = (upstream.highest.clone(), upstream.providers.clone());
        let (data, backups) = (dir.path().join("data"), dir.path().join("backups"));
        let master = MasterKey::generate().to_base64();
        let backups_arg = backups.display().to_string();
        let args = ["--store", store, "--backup-dir", &backups_arg];
        let mut server = start_args(&data, &providers, &master, &args);
        let c = Client::at(&server.url, DEV_KEY);
        connect_demo(&c).await;
        let trigger = tokio::spawn(
            reqwest::Client::new()
                .post(format!("{}/sync/trigger", server.url))
                .bearer_auth(DEV_KEY)
                .header("content-type", "application/json")
                .body(contacts_trigger().to_string())
                .send(),
        );
        let t = Instant::now();
        while highest.load(Ordering::SeqCst) < 20 {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the sync never got going"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let signalled = Command::new("kill")
            .args(["-USR1", &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(signalled.success());
        let backup = loop {
            let whole = std::fs::read_dir(&backups).ok().and_then(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| p.extension().is_none_or(|x| x != "partial") && p.is_dir())
            });
            if let Some(path) = whole {
                break path;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "{store}: no backup was taken"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The sync goes on after the backup.
        let at_backup = highest.load(Ordering::SeqCst);
        let t = Instant::now();
        while highest.load(Ordering::SeqCst) < at_backup + 5 {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{store}: the sync stopped at the backup"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        trigger.abort();

        server = start_args(&backup, &providers, &master, &[]);
        let c = Client::at(&server.url, DEV_KEY);
        let ids = stored_ids(&c).await;
        assert!(!ids.is_empty(), "{store}: the backup holds no record");
        let prefix: HashSet<String> = (0..ids.len()).map(|i| i.to_string()).collect();
        assert_eq!(
            ids, prefix,
            "{store}: the backup is not a whole prefix of the pages"
        );
        assert_eq!(ids.len() % 2, 0, "{store}: a page was backed up in part");
        server.child.kill().unwrap();
        server.child.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_action_accepted_before_a_sigkill_completes_after_the_restart() {
    let posts = Arc::new(AtomicUsize::new(0));
    let seen = posts.clone();
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hang = slow.clone();
    let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
        if req.method != "POST" {
            return page(0);
        }
        seen.fetch_add(1, Ordering::SeqCst);
        // Slow enough that the first server dies with the action in flight
        // (or, `slow`, every server).
        let wait = if hang.load(Ordering::SeqCst) {
            60_000
        } else {
            800
        };
        MockResponse::json(
            201,
            &json!({"id": "201", "createdAt": "2024-04-01T09:00:00Z",
                    "properties": {"firstname": "K", "lastname": "J", "email": "k@example.com"}}),
        )
        .delayed(Duration::from_millis(wait))
    }))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let providers = dir.path().join("providers.yaml");
    let yaml = std::fs::read_to_string(repo_root().join("host/runtime/providers.yaml")).unwrap();
    std::fs::write(
        &providers,
        yaml.replace("https://api.hubapi.com", &mock.url()),
    )
    .unwrap();
    let master = MasterKey::generate().to_base64();
    let mut server = start(&data, &providers, &master);
    let c = Client::at(&server.url, DEV_KEY);
    deploy(&c).await;
    c.send(
        "POST",
        "/integrations",
        Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
    )
    .await;
    c.send(
        "POST",
        "/connection",
        Some(
            json!({"provider_config_key": "hubspot", "connection_id": "demo", "access_token": "t"}),
        ),
    )
    .await;
    let resp = c
        .http
        .post(format!("{}/action/trigger", server.url))
        .bearer_auth(DEV_KEY)
        .header("connection-id", "demo")
        .header("provider-config-key", "hubspot")
        .header("x-async", "true")
        .header("content-type", "application/json")
        .body(json!({"action_name": "create-contact", "input": {"email": "k@example.com", "first_name": "K", "last_name": "J"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    // Killed while the action waits for the upstream.
    let deadline = Instant::now() + Duration::from_secs(10);
    while posts.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    server = start(&data, &providers, &master);
    let c = Client::at(&server.url, DEV_KEY);
    let mut result = None;
    for _ in 0..200 {
        let (status, body) = c.send("GET", &location, None).await;
        if status == 200 {
            result = Some(body);
            break;
        }
        // Not finished yet: 404, its payload naming its state.
        assert_eq!(status, 404, "{body}");
        assert!(body["error"]["payload"]["status"].is_string(), "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result = result.unwrap_or_else(|| panic!("the action never completed after the restart"));
    assert_eq!(result["id"], "201");
    assert_eq!(
        posts.load(Ordering::SeqCst),
        2,
        "the interrupted attempt ran again"
    );

    // An action that is in flight at every kill is run again at two starts,
    // then failed: one that takes the process down does not run at every
    // start.
    slow.store(true, Ordering::SeqCst);
    let c = Client::at(&server.url, DEV_KEY);
    // Counted before each process may send: the trigger's attempt can
    // reach the upstream before the 202 is read, and a resumed one before
    // the new server says it listens.
    let mut sent = posts.load(Ordering::SeqCst);
    let location = c
        .trigger_async(
            ("hubspot", "demo"),
            "create-contact",
            json!({"email": "k@example.com", "first_name": "K", "last_name": "J"}),
            Some(0),
        )
        .await;
    for attempt in 1..=3 {
        let t = Instant::now();
        while posts.load(Ordering::SeqCst) == sent {
            // Generous: a loaded CI machine starts the server slowly.
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "attempt {attempt} never ran"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        sent = posts.load(Ordering::SeqCst);
        server = start(&data, &providers, &master);
    }
    let c = Client::at(&server.url, DEV_KEY);
    let (status, body) = c.send("GET", &location, None).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "action_interrupted", "{body}");
    let before = posts.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(posts.load(Ordering::SeqCst), before, "it ran a fourth time");

    // Stops on purpose (SIGTERM: a deploy, a rolling restart) cut an
    // action short too, but do not count towards giving it up: after
    // three, it runs a fourth time.
    let mut sent = posts.load(Ordering::SeqCst);
    let location = c
        .trigger_async(
            ("hubspot", "demo"),
            "create-contact",
            json!({"email": "k@example.com", "first_name": "K", "last_name": "J"}),
            Some(0),
        )
        .await;
    for attempt in 1..=4 {
        let t = Instant::now();
        while posts.load(Ordering::SeqCst) == sent {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "attempt {attempt} never ran"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sent = posts.load(Ordering::SeqCst);
        if attempt == 4 {
            break;
        }
        let stopped = Command::new("kill")
            .arg("-TERM")
            .arg(server.child.id().to_string())
            .status()
            .unwrap();
        assert!(stopped.success());
        let exit = server.child.wait().unwrap();
        assert_eq!(exit.code(), Some(0), "{exit:?}");
        server = start(&data, &providers, &master);
    }
    let c = Client::at(&server.url, DEV_KEY);
    let (status, body) = c.send("GET", &location, None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["payload"]["status"], "running", "{body}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
/// Waits (20 s at most) until connection `cid`'s `contacts` run succeeded.
async fn succeeded(c: &Client, cid: &str) {
    let t = Instant::now();
    loop {
        let (_, s) = c
            .send(
                "GET",
                &format!(
                    "/sync/status?provider_config_key=hubspot&syncs=contacts&connection_id={cid}"
                ),
                None,
            )
            .await;
        if s["syncs"][0]["status"] == "SUCCESS" {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Schedules and paused states survive SIGKILL, and a run the kill
/// interrupted is recorded as failed, never as a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_and_pauses_survive_sigkill() {
    use crate::scheduler::{Upstream, connect, setup};

    let up = Upstream::start().await;
    up.delay.store(300, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let providers = dir.path().join("providers.yaml");
    std::fs::write(&providers, up.providers()).unwrap();
    let master = MasterKey::generate().to_base64();
    let args = ["--schedule-time-scale", "100"];
    let mut server = start_args(&data, &providers, &master, &args);
    let c = Client::at(&server.url, DEV_KEY);
    setup(&c).await;
    let app = crate::webhooks::App::start().await;
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": app.url(), "on_sync_error": true})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    let one = |cid: &str| json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": cid});
    // a: on its schedule. b: paused. c: a day apart, killed mid-run.
    connect(&c, "a", "token-a").await;
    connect(&c, "b", "token-b").await;
    let (code, _) = c.send("POST", "/sync/pause", Some(one("b"))).await;
    assert_eq!(code, 200);
    connect(&c, "c", "token-c").await;
    let daily = json!({"sync_name": "contacts", "provider_config_key": "hubspot", "connection_id": "c", "frequency": "every 1d"});
    let (code, out) = c
        .send("PUT", "/sync/update-connection-frequency", Some(daily))
        .await;
    assert_eq!(code, 200, "{out}");
    let runs_of = |token: &str| {
        up.starts
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, t)| t.ends_with(token))
            .count()
    };
    // Let c's first run end, then start another and kill during it.
    let t = Instant::now();
    succeeded(&c, "c").await;
    while runs_of("token-a") < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "a is not running on its schedule"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // d: ran once, then its frequency changed: its next run is a day
    // after the change, restart or not.
    connect(&c, "d", "token-d").await;
    let t = Instant::now();
    while runs_of("token-d") < 1 {
        assert!(t.elapsed() < Duration::from_secs(10), "d never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    succeeded(&c, "d").await;
    let daily = json!({"sync_name": "contacts", "provider_config_key": "hubspot", "connection_id": "d", "frequency": "every 1d"});
    let (code, out) = c
        .send("PUT", "/sync/update-connection-frequency", Some(daily))
        .await;
    assert_eq!(code, 200, "{out}");
    // e: its first run done, paused. Then, runs made slow so they are
    // going at the kill: e triggered (it runs) and triggered again (queued
    // behind it, answered: a restart must run it); c triggered.
    connect(&c, "e", "token-e").await;
    succeeded(&c, "e").await;
    let (code, _) = c.send("POST", "/sync/pause", Some(one("e"))).await;
    assert_eq!(code, 200);
    up.delay.store(5000, Ordering::SeqCst);
    let started = |token: &'static str, before: usize| {
        let runs_of = &runs_of;
        async move {
            let t = Instant::now();
            while runs_of(token) == before {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "the triggered run of {token} never started"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let before = runs_of("token-e");
    let (code, _) = c.send("POST", "/sync/trigger", Some(one("e"))).await;
    assert_eq!(code, 200);
    started("token-e", before).await;
    let mut full = one("e");
    full["sync_mode"] = json!("full_refresh");
    let (code, _) = c.send("POST", "/sync/trigger", Some(full)).await;
    assert_eq!(code, 200);
    let before = runs_of("token-c");
    let (code, _) = c.send("POST", "/sync/trigger", Some(one("c"))).await;
    assert_eq!(code, 200);
    started("token-c", before).await;
    let a_runs = runs_of("token-a");
    assert!(a_runs >= 2, "a ran {a_runs} times before the kill");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let b_runs = runs_of("token-b");
    let c_runs = runs_of("token-c");
    let d_runs = runs_of("token-d");
    let e_runs = runs_of("token-e");

    up.delay.store(300, Ordering::SeqCst);
    server = start_args(&data, &providers, &master, &args);
    let c2 = Client::at(&server.url, DEV_KEY);
    let status = |cid: &'static str| {
        let c2 = Client::at(&server.url, DEV_KEY);
        async move {
            let (code, s) = c2
                .send(
                    "GET",
                    &format!("/sync/status?provider_config_key=hubspot&syncs=contacts&connection_id={cid}"),
                    None,
                )
                .await;
            assert_eq!(code, 200, "{s}");
            s["syncs"][0].clone()
        }
    };
    // c's triggered run, cut short: recorded as failed (in the history;
    // the app hears of it as of any failed run that is not the first),
    // then run again, since the trigger was answered; then c waits for
    // its daily slot.
    app.wait_for(
        "the interrupted run's webhook",
        Duration::from_secs(10),
        |a| {
            a.accepted().iter().any(|(_, b)| {
                b["connectionId"] == "c" && b["success"] == false && b["syncType"] == "INCREMENTAL"
            })
        },
    )
    .await;
    let (_, history) = c2
        .send(
            "GET",
            "/executions?provider_config_key=hubspot&connection_id=c",
            None,
        )
        .await;
    assert!(
        history["executions"].as_array().unwrap().iter().any(|e| {
            e["success"] == false
                && e["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("sync_interrupted"))
        }),
        "{history}"
    );
    let t = Instant::now();
    while runs_of("token-c") == c_runs {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the trigger cut short by the kill never ran again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = status("c").await;
    assert_eq!(s["frequency"], "every 1d", "{s}");
    // a goes on by itself; b stays paused.
    let t = Instant::now();
    while runs_of("token-a") < a_runs + 3 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "a's schedule did not survive the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        runs_of("token-b"),
        b_runs,
        "a paused sync ran after the restart"
    );
    assert_eq!(status("b").await["status"], "PAUSED");
    assert_eq!(
        runs_of("token-c"),
        c_runs + 1,
        "c ran its cut-short trigger more than once, or before its daily slot"
    );
    // e ran the trigger queued at the kill (and, paused, nothing more).
    let t = Instant::now();
    while runs_of("token-e") == e_runs {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the trigger queued before the kill never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(runs_of("token-d"), d_runs, "d ran before its daily slot");
    let (_, records) = c2
        .send_as(("hubspot", "a"), "GET", "/records?model=Contact", None)
        .await;
    assert_eq!(records["records"].as_array().unwrap().len(), 2, "{records}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// A triggered run that a crash cuts short runs again after the restart,
/// three times at most: a run that takes the process down does not do so
/// at every start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_cut_short_three_times_is_not_run_again() {
    use crate::scheduler::{Upstream, connect, setup};

    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let providers = dir.path().join("providers.yaml");
    std::fs::write(&providers, up.providers()).unwrap();
    let master = MasterKey::generate().to_base64();
    let mut server = start(&data, &providers, &master);
    let c = Client::at(&server.url, DEV_KEY);
    setup(&c).await;
    let one =
        json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "a"});
    connect(&c, "a", "token-a").await;
    succeeded(&c, "a").await;
    let (code, _) = c.send("POST", "/sync/pause", Some(one.clone())).await;
    assert_eq!(code, 200);
    // Every run from now on is still going when the server is killed.
    up.delay.store(60_000, Ordering::SeqCst);
    let runs = || up.starts.lock().unwrap().len();
    let started = |before: usize, what: &str| {
        let t = Instant::now();
        let what = what.to_string();
        async move {
            while runs() == before {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "{what} never started"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let before = runs();
    let (code, _) = c.send("POST", "/sync/trigger", Some(one.clone())).await;
    assert_eq!(code, 200);
    started(before, "the triggered run").await;
    for attempt in 2..=3 {
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let before = runs();
        server = start(&data, &providers, &master);
        started(before, &format!("attempt {attempt} of the trigger")).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let before = runs();
    server = start(&data, &providers, &master);
    let c = Client::at(&server.url, DEV_KEY);
    // The third cut is recorded, saying the trigger is given up…
    let t = Instant::now();
    loop {
        let (code, history) = c
            .send(
                "GET",
                "/executions?provider_config_key=hubspot&connection_id=a",
                None,
            )
            .await;
        assert_eq!(code, 200, "{history}");
        let cut = history["executions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("sync_interrupted"))
            })
            .count();
        if cut == 3 {
            assert!(
                history.to_string().contains("cut short 3 times"),
                "{history}"
            );
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{history}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // …and the sync, paused, runs no more (a re-queued trigger starts at
    // once: the attempts above started within a second of each start).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runs(), before, "the trigger ran a fourth time");
    let (_, s) = c
        .send(
            "GET",
            "/sync/status?provider_config_key=hubspot&syncs=contacts&connection_id=a",
            None,
        )
        .await;
    assert_eq!(s["syncs"][0]["status"], "PAUSED", "{s}");
}

/// A scheduled run a crash cut short (here a new connection's first) runs
/// again at the restart, not a whole interval later: the connection had no
/// records until its next slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_run_cut_short_runs_again_at_the_restart() {
    use crate::scheduler::{Upstream, connect, setup};

    let up = Upstream::start().await;
    up.delay.store(60_000, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let providers = dir.path().join("providers.yaml");
    std::fs::write(&providers, up.providers()).unwrap();
    let master = MasterKey::generate().to_base64();
    let mut server = start(&data, &providers, &master);
    let c = Client::at(&server.url, DEV_KEY);
    setup(&c).await;
    // `every 30s`, unscaled: the next slot is 30 s away.
    connect(&c, "a", "token-a").await;
    let runs = || up.starts.lock().unwrap().len();
    let t = Instant::now();
    while runs() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the first run never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let restarted = Instant::now();
    server = start(&data, &providers, &master);
    let c = Client::at(&server.url, DEV_KEY);
    while runs() < 2 {
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "the cut-short run waited for its next slot"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Paused while that re-run goes, then cut short again: it is not run
    // again (it is the schedule's run, not anyone's trigger; it ran anyway).
    let one =
        json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "a"});
    let (code, _) = c.send("POST", "/sync/pause", Some(one.clone())).await;
    assert_eq!(code, 200);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    up.delay.store(0, Ordering::SeqCst);
    server = start(&data, &providers, &master);
    let c = Client::at(&server.url, DEV_KEY);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runs(), 2, "a paused sync's cut-short run ran again");
    let (_, status) = c
        .send(
            "GET",
            "/sync/status?provider_config_key=hubspot&syncs=contacts&connection_id=a",
            None,
        )
        .await;
    assert_eq!(status["syncs"][0]["status"], "PAUSED", "{status}");
    // Resumed, it runs.
    let (code, _) = c.send("POST", "/sync/start", Some(one)).await;
    assert_eq!(code, 200);
    succeeded(&c, "a").await;
    assert_eq!(runs(), 3);
}

/// A webhook the app could not take is still delivered after a SIGKILL of
/// the server, with the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_webhooks_survive_sigkill() {
    use crate::scheduler::{Upstream, connect, setup};
    use crate::webhooks::App;

    let up = Upstream::start().await;
    let app = App::start().await;
    app.down.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let providers = dir.path().join("providers.yaml");
    std::fs::write(&providers, up.providers()).unwrap();
    let master = MasterKey::generate().to_base64();
    let args = ["--webhook-retry-base-ms", "50"];
    let mut server = start_args(&data, &providers, &master, &args);
    let c = Client::at(&server.url, DEV_KEY);
    setup(&c).await;
    let (code, out) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": app.url()})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    // auto_start: the first run adds two contacts; its webhook is refused.
    connect(&c, "demo", "t").await;
    app.wait_for("two attempts", Duration::from_secs(20), |a| {
        a.refused() >= 2
    })
    .await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let id = app.got.lock().unwrap()[0]
        .0
        .header("webhook-id")
        .unwrap()
        .to_string();

    app.down.store(false, Ordering::SeqCst);
    server = start_args(&data, &providers, &master, &args);
    app.wait_for(
        "the webhook after the restart",
        Duration::from_secs(20),
        |a| !a.accepted().is_empty(),
    )
    .await;
    let (req, body) = app.accepted().remove(0);
    assert_eq!(req.header("webhook-id"), Some(id.as_str()));
    assert_eq!(body["responseResults"]["added"], 2, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.accepted().len(), 1, "delivered more than once");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// Every provider webhook answered 2xx is handled, even when the server is
/// killed right after answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_provider_webhooks_survive_sigkill() {
    use crate::incoming::{PROVIDERS, items, post, setup, signed};
    use crate::webhooks::App;

    let app = App::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let providers = dir.path().join("providers.yaml");
    std::fs::write(&providers, PROVIDERS).unwrap();
    let master = MasterKey::generate().to_base64();
    let mut server = start(&data, &providers, &master);
    let c = Client::at(&server.url, DEV_KEY);
    setup(&c, &app).await;
    let (_, env) = c.send("GET", "/sluice/environment", None).await;
    let url = format!("/webhook/{}/lin", env["id"].as_str().unwrap());
    // Answered one after another, as fast as the server takes them; the
    // kill comes right after the last answer.
    let mut want = Vec::new();
    for i in 0..30 {
        let id = format!("w{i:02}");
        let body = json!({"type": "Issue", "organizationId": "org-1", "model": "Item", "save": [{"id": id}]})
            .to_string();
        let (code, out) = post(&c, &url, &body, &signed(&body)).await;
        assert_eq!(code, 200, "{out}");
        want.push(id);
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    server = start(&data, &providers, &master);
    let c = Client::at(&server.url, DEV_KEY);
    let t = Instant::now();
    loop {
        let got = items(&c, "c1").await;
        if got == want {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "after the restart, {} of 30 accepted webhooks were handled",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// SIGTERM (what `docker stop` and systemd send), Ctrl-C and SIGHUP (a
/// closed terminal; by default it ended the process unflushed) stop the
/// server: it says so, exits 0, and what it had written without a flush
/// yet (an execution's history) is on disk for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly_keeping_what_it_wrote() {
    let mock = MockServer::start(Arc::new(|req: &MockRequest| {
        if req.method == "POST" {
            MockResponse::json(
                201,
                &json!({"id": "201", "createdAt": "2024-04-01T09:00:00Z",
                        "properties": {"firstname": "K", "lastname": "J", "email": "k@example.com"}}),
            )
        } else {
            page(0)
        }
    }))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let providers = dir.path().join("providers.yaml");
    let yaml = std::fs::read_to_string(repo_root().join("host/runtime/providers.yaml")).unwrap();
    std::fs::write(
        &providers,
        yaml.replace("https://api.hubapi.com", &mock.url()),
    )
    .unwrap();
    let master = MasterKey::generate().to_base64();
    for (round, signal) in ["TERM", "INT", "HUP"].into_iter().enumerate() {
        let mut server = start(&data, &providers, &master);
        let c = Client::at(&server.url, DEV_KEY);
        if round == 0 {
            deploy(&c).await;
            c.send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
            )
            .await;
            c.send(
                "POST",
                "/connection",
                Some(json!({"provider_config_key": "hubspot", "connection_id": "demo", "access_token": "t"})),
            )
            .await;
        }
        let (status, body) = c
            .send(
                "POST",
                "/action/trigger",
                Some(json!({"action_name": "create-contact", "input": {"email": "k@example.com", "first_name": "K", "last_name": "J"}})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        // At once: the history entry is not flushed yet (sled flushes
        // every 500 ms on its own).
        let killed = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(server.child.id().to_string())
            .status()
            .unwrap();
        assert!(killed.success());
        let t = Instant::now();
        let exit = loop {
            if let Some(s) = server.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(40),
                "SIG{signal}: still running"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(exit.code(), Some(0), "SIG{signal}: {exit:?}");
    }
    // Under `nohup` (SIGHUP ignored), a hangup is still ignored.
    let mut nohup = Command::new("nohup");
    nohup.arg(env!("CARGO_BIN_EXE_sluice-under-test"));
    let mut server = start_command(nohup, &data, &providers, &master, &[]);
    let signal = |name: &str, pid: u32| {
        let sent = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(sent.success());
    };
    signal("HUP", server.child.id());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "a server started under nohup stopped at SIGHUP"
    );
    signal("TERM", server.child.id());
    let t = Instant::now();
    while server.child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(40), "still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server = start(&data, &providers, &master);
    let c = Client::at(&server.url, DEV_KEY);
    let (_, history) = c
        .send(
            "GET",
            "/executions?provider_config_key=hubspot&connection_id=demo",
            None,
        )
        .await;
    let actions = history["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["script"] == "create-contact" && e["success"] == true)
        .count();
    assert_eq!(actions, 3, "{history}");
}

/// A DELETE of an integration (each of its connections deleted in turn)
/// killed at random points: after the restart the integration is there
/// with all its connections, or gone with all of them; never some (the
/// deletion is marked first and finished at the start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integration_deletion_cut_short_by_sigkill_is_finished_at_the_start() {
    use crate::scheduler::{Upstream, connect};

    const CONNECTIONS: usize = 40;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let providers = dir.path().join("providers.yaml");
    std::fs::write(&providers, up.providers()).unwrap();
    let master = MasterKey::generate().to_base64();
    let mut server = start(&data, &providers, &master);
    let mut finished = 0;
    for delay_ms in [2u64, 8, 15, 25, 40, 60] {
        let c = Client::at(&server.url, DEV_KEY);
        let (code, out) = c
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
            )
            .await;
        assert_eq!(code, 200, "{out}");
        for i in 0..CONNECTIONS {
            connect(&c, &format!("c{i}"), "t").await;
        }
        // Its answer is cut off by the kill: no client that unwraps it.
        let deleting = reqwest::Client::new()
            .delete(format!("{}/integrations/hubspot", server.url))
            .bearer_auth(DEV_KEY)
            .send();
        let deleting = tokio::spawn(deleting);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let _ = deleting.await;

        server = start(&data, &providers, &master);
        let c = Client::at(&server.url, DEV_KEY);
        let (code, _) = c.send("GET", "/integrations/hubspot", None).await;
        let (_, list) = c
            .send("GET", "/connections?integrationId=hubspot", None)
            .await;
        let left = list["connections"].as_array().unwrap().len();
        match code {
            200 => assert_eq!(left, CONNECTIONS, "the integration kept some connections"),
            404 => {
                assert_eq!(left, 0, "connections outlived their integration");
                finished += 1;
            }
            other => panic!("GET /integrations/hubspot answered {other}"),
        }
        if code == 200 {
            let (code, out) = c.send("DELETE", "/integrations/hubspot", None).await;
            assert_eq!(code, 200, "{out}");
        }
    }
    assert!(finished > 0, "no kill came after the deletion began");
}

/// A server started with a catalogue that lacks a stored integration's
/// provider (started elsewhere, without its --providers) says so at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_names_integrations_whose_provider_its_catalogue_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let with = tmp.path().join("with.yaml");
    std::fs::write(
        &with,
        "acme-crm:\n  auth_mode: API_KEY\n  proxy:\n    base_url: https://api.acme.example\n",
    )
    .unwrap();
    let without = tmp.path().join("without.yaml");
    std::fs::write(&without, "").unwrap();
    let master = MasterKey::generate().to_base64();
    let server = start(&data, &with, &master);
    let c = Client::at(&server.url, DEV_KEY);
    let (status, body) = c
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "acme-int", "provider": "acme-crm"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    drop(server);

    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-under-test"));
    let mut child = serve(&mut command, &data, &without, &master, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let said = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("not in this server's providers catalogue") => break line,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("never said; stderr:\n{}", seen.join("\n"));
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        said.contains(
            "environment `dev`: provider `acme-crm` is not in this server's providers catalogue, and 1 integration uses it (`acme-int`)"
        ),
        "{said}"
    );
}
