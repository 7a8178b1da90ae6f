//! End to end against a real `sluice serve` on 127.0.0.1:0 with a sled data
//! directory, the bundled HubSpot example deployed and its recorded API
//! as the upstream.

use std::path::Path;

use serde_json::{Value, json};
use sluice_project::deploy::{ComponentEntry, Manifest, ScriptEntry, sha256_hex};
use sluice_runtime::ScriptKind;
use sluice_runtime::providers::ProviderCatalog;
use sluice_server::{Server, ServerConfig, StoreKind};
use sluice_store::MasterKey;
use sluice_tests::{Fixture, MockServer, guests, repo_root};

pub(crate) const DEV_KEY: &str = "dev-secret-key-0001";
pub(crate) const PROD_KEY: &str = "prod-secret-key-0002";

const NANGO_YAML: &str = "
integrations:
  hubspot:
    syncs:
      contacts:
        runs: every hour
        auto_start: false
        output: Contact
        endpoint: GET /contacts
    actions:
      create-contact:
        endpoint: POST /contacts
        output: Contact
models:
  Contact:
    id: string
";

async fn start(data: &Path, master: &MasterKey, upstream: &str) -> Server {
    start_on(StoreKind::Sled, data, master, upstream).await
}

pub(crate) async fn start_on(
    store: StoreKind,
    data: &Path,
    master: &MasterKey,
    upstream: &str,
) -> Server {
    start_tuned(store, data, master, upstream, |_| {}).await
}

/// [`start_on`], `tune` changing the configuration first.
pub(crate) async fn start_tuned(
    store: StoreKind,
    data: &Path,
    master: &MasterKey,
    upstream: &str,
    tune: impl FnOnce(&mut ServerConfig),
) -> Server {
    let yaml = std::fs::read_to_string(repo_root().join("host/runtime/providers.yaml")).unwrap();
    let hubspot = yaml.replace("https://api.hubapi.com", upstream);
    let mut config = ServerConfig::new(data, "127.0.0.1:0".parse().unwrap());
    config.store = store;
    tune(&mut config);
    start_with(config, master, &hubspot).await
}

/// A server with the built-in providers and `providers_yaml` over them.
pub(crate) async fn start_with(
    config: ServerConfig,
    master: &MasterKey,
    providers_yaml: &str,
) -> Server {
    sluice_tests::watchdog();
    let mut providers = ProviderCatalog::builtin().unwrap();
    providers.extend(ProviderCatalog::from_yaml(providers_yaml, "test").unwrap());
    let keys = [
        ("dev".to_string(), Some(DEV_KEY.to_string())),
        ("prod".to_string(), Some(PROD_KEY.to_string())),
    ];
    let (server, _created) = Server::start(config, master.clone(), providers, &keys)
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    server
}

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) key: String,
}

impl Client {
    pub(crate) fn new(server: &Server, key: &str) -> Self {
        sluice_tests::watchdog();
        Self {
            http: reqwest::Client::new(),
            base: server.url(),
            key: key.to_string(),
        }
    }

    pub(crate) fn at(base: &str, key: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.to_string(),
            key: key.to_string(),
        }
    }

    pub(crate) async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send_as(("hubspot", "demo"), method, path, body).await
    }

    pub(crate) async fn send_as(
        &self,
        (pck, cid): (&str, &str),
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("connection-id", cid)
            .header("provider-config-key", pck);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

impl Client {
    /// `POST /action/trigger` with `X-Async` (and `X-Max-Retries` when
    /// given) as connection `(pck, cid)`: the 202's status URL.
    pub(crate) async fn trigger_async(
        &self,
        (pck, cid): (&str, &str),
        name: &str,
        input: Value,
        max_retries: Option<u32>,
    ) -> String {
        let mut req = self
            .http
            .post(format!("{}/action/trigger", self.base))
            .bearer_auth(&self.key)
            .header("connection-id", cid)
            .header("provider-config-key", pck)
            .header("x-async", "true")
            .header("content-type", "application/json");
        if let Some(n) = max_retries {
            req = req.header("x-max-retries", n.to_string());
        }
        let resp = req
            .body(json!({"action_name": name, "input": input}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        resp.headers()["location"].to_str().unwrap().to_string()
    }

    /// Creates integration `pck` of `provider` and one connection to it
    /// (`connection`: the `POST /connection` body without the key).
    pub(crate) async fn integration_and_connection(
        &self,
        pck: &str,
        provider: &str,
        mut connection: Value,
    ) {
        let (status, body) = self
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": pck, "provider": provider})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        connection["provider_config_key"] = json!(pck);
        let (status, body) = self.send("POST", "/connection", Some(connection)).await;
        assert_eq!(status, 201, "{body}");
    }

    /// Polls an async action's status URL until `until` says stop; every
    /// answer's status, changes only, with 0 for "not finished" (a 404
    /// whose payload names the action's state, as the original answers
    /// 404 until there is a result).
    pub(crate) async fn poll_async(
        &self,
        conn: (&str, &str),
        location: &str,
        until: impl Fn(u16) -> bool,
    ) -> (Vec<u16>, Value) {
        let mut seen = Vec::new();
        for _ in 0..400 {
            let (status, body) = self.send_as(conn, "GET", location, None).await;
            let status = if status == 404 && body["error"]["payload"]["status"].is_string() {
                assert_eq!(body["error"]["code"], "not_found", "{body}");
                0
            } else {
                status
            };
            if seen.last() != Some(&status) {
                seen.push(status);
            }
            if until(status) {
                return (seen, body);
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the async action at {location} never got there: {seen:?}");
    }
}

pub(crate) async fn deploy(c: &Client) {
    deploy_scripts(
        c,
        NANGO_YAML,
        "hubspot",
        &[
            (guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync),
            (
                guests::HUBSPOT_RUST_CREATE_CONTACT,
                "create-contact",
                ScriptKind::Action,
            ),
        ],
    )
    .await;
}

/// Uploads each component and deploys them with `nango_yaml`.
pub(crate) async fn deploy_scripts(
    c: &Client,
    nango_yaml: &str,
    integration: &str,
    scripts: &[(&str, &str, ScriptKind)],
) {
    deploy_manifest(c, nango_yaml, None, integration, scripts).await;
}

/// [`deploy_scripts`] of a zero-yaml project: its definitions
/// (`.nango/nango.json`) instead of nango.yaml.
pub(crate) async fn deploy_definitions(
    c: &Client,
    definitions: Vec<Value>,
    integration: &str,
    scripts: &[(&str, &str, ScriptKind)],
) {
    deploy_manifest(c, "", Some(definitions), integration, scripts).await;
}

async fn deploy_manifest(
    c: &Client,
    nango_yaml: &str,
    nango_json: Option<Vec<Value>>,
    integration: &str,
    scripts: &[(&str, &str, ScriptKind)],
) {
    let mut components = Vec::new();
    for &(path, name, kind) in scripts {
        let bytes = std::fs::read(path).unwrap();
        let sha = sha256_hex(&bytes);
        let resp = c
            .http
            .put(format!("{}/sluice/components/{sha}", c.base))
            .bearer_auth(&c.key)
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        components.push(ComponentEntry {
            sha256: sha,
            size: bytes.len() as u64,
            bundle: false,
            scripts: vec![ScriptEntry {
                integration: integration.into(),
                name: name.into(),
                kind,
            }],
        });
    }
    let manifest = Manifest {
        nango_yaml: nango_yaml.into(),
        nango_json,
        dir_name: None,
        components,
        version: None,
        scope: None,
        script_versions: Default::default(),
    };
    let (status, body) = c
        .send(
            "POST",
            "/sluice/deploy",
            Some(serde_json::to_value(&manifest).unwrap()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn deploy_connect_sync_read_act_isolate_and_restart() {
    deploy_connect_sync_read_act_isolate_and_restart_on(StoreKind::Sled).await;
}

#[tokio::test]
async fn deploy_connect_sync_read_act_isolate_and_restart_on_redb() {
    deploy_connect_sync_read_act_isolate_and_restart_on(StoreKind::Redb).await;
}

/// The same on PostgreSQL (`SLUICE_TEST_POSTGRES`; `.ci/run` starts one):
/// the restart at its end reconnects to the same schema.
#[tokio::test]
async fn deploy_connect_sync_read_act_isolate_and_restart_on_postgres() {
    if let Some(url) = sluice_tests::postgres_schema().await {
        deploy_connect_sync_read_act_isolate_and_restart_on(StoreKind::Postgres(url)).await;
    }
}

#[tokio::test]
async fn a_data_directory_of_one_store_is_refused_by_the_other() {
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let server = start_on(StoreKind::Sled, data.path(), &master, "http://127.0.0.1:9").await;
    server.stop().await;
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.store = StoreKind::Redb;
    let Err(e) = Server::start(
        config,
        master.clone(),
        ProviderCatalog::builtin().unwrap(),
        &[],
    )
    .await
    else {
        panic!("a sled data directory opened as redb");
    };
    let e = e.to_string();
    assert!(
        e.contains("holds a sled database") && e.contains("--store sled"),
        "{e}"
    );
    // And it is still the sled store it was.
    start_on(StoreKind::Sled, data.path(), &master, "http://127.0.0.1:9")
        .await
        .stop()
        .await;
    // Both stores in one directory: refused, naming both.
    std::fs::write(data.path().join("store.redb"), b"").unwrap();
    let Err(e) = Server::start(
        ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap()),
        master.clone(),
        ProviderCatalog::builtin().unwrap(),
        &[],
    )
    .await
    else {
        panic!("a directory with both stores opened");
    };
    let e = e.to_string();
    assert!(e.contains("both a sled database"), "{e}");
}

async fn deploy_connect_sync_read_act_isolate_and_restart_on(store: StoreKind) {
    let fixture =
        Fixture::from_file(&repo_root().join("examples/hubspot-rust/mock-api.yaml")).unwrap();
    let mock = MockServer::start(fixture.handler()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let server = start_on(store.clone(), data.path(), &master, &mock.url()).await;
    let dev = Client::new(&server, DEV_KEY);
    let prod = Client::new(&server, PROD_KEY);

    // Health needs no key; everything else does.
    let health = reqwest::get(format!("{}/health", server.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let (status, body) = Client {
        key: String::new(),
        ..Client::new(&server, "")
    }
    .send("GET", "/connection", None)
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "malformed_auth_header");
    let (status, body) = Client::new(&server, "not-a-key")
        .send("GET", "/connection", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unknown_account"))
    );

    deploy(&dev).await;
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(json!({
                "provider_config_key": "hubspot",
                "connection_id": "demo",
                "access_token": "demo-access-token",
                "metadata": {"team": "sales"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // Before its first run a sync has no latest job: the original leaves
    // out what it would say of one.
    let (status, body) = dev
        .send(
            "GET",
            "/sync/status?provider_config_key=hubspot&syncs=contacts&connection_id=demo",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let never_ran = body["syncs"][0].as_object().unwrap();
    assert_eq!(never_ran["name"], "contacts", "{body}");
    for key in ["finishedAt", "latestResult", "latestExecutionStatus"] {
        assert!(!never_ran.contains_key(key), "{key}: {body}");
    }
    assert!(never_ran.contains_key("nextScheduledSyncAt"), "{body}");

    // A sync run saves every contact of the recorded API.
    let (status, body) = dev
        .send(
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"][0]["success"], true, "{body}");
    assert_eq!(body["runs"][0]["results"]["Contact"]["added"], 5, "{body}");

    // Pages of 2 by cursor reach every record once, in order.
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/records?model=Contact&limit=2&cursor={c}"),
            None => "/records?model=Contact&limit=2".to_string(),
        };
        let (status, page) = dev.send("GET", &q, None).await;
        assert_eq!(status, 200, "{page}");
        for r in page["records"].as_array().unwrap() {
            assert_eq!(r["_nango_metadata"]["last_action"], "ADDED");
            ids.push(r["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    ids.sort();
    assert_eq!(ids, ["101", "102", "103", "104", "105"]);
    let (status, body) = dev
        .send("GET", "/records?model=Contact&colour=red", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_query_params"))
    );
    // A parameter given twice is refused (the last one silently won);
    // `ids` may repeat.
    for query in [
        "model=Contact&filter=added&filter=deleted",
        "model=Contact&limit=1&limit=2",
        "model=Contact&model=Other",
        "model=Contact&modified_after=2020-01-01T00:00:00Z&delta=2020-01-01T00:00:00Z",
    ] {
        let (status, body) = dev.send("GET", &format!("/records?{query}"), None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_query_params")),
            "{query}: {body}"
        );
        assert!(body.to_string().contains("more than once"), "{body}");
    }
    let (status, body) = dev
        .send("GET", "/records?model=Contact&ids=101&ids=102", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"].as_array().unwrap().len(), 2, "{body}");

    // The action returns its output; the /v1 endpoint reaches it too.
    let (status, body) = dev
        .send(
            "POST",
            "/action/trigger",
            Some(json!({"action_name": "create-contact", "input": {"email": "katherine@example.com", "first_name": "Katherine", "last_name": "Johnson"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "201");
    let (status, body) = dev.send("GET", "/v1/contacts?limit=1", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"].as_array().unwrap().len(), 1);
    // The endpoint's model is its own: `model=` does not pick another.
    let (status, body) = dev
        .send("GET", "/v1/contacts?limit=1&model=Nope", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"].as_array().unwrap().len(), 1, "{body}");
    // Any JSON body is an action endpoint's input (the original's body
    // parser takes an array too): the action, not the API, refuses it.
    let resp = dev
        .http
        .post(format!("{}/v1/contacts", dev.base))
        .bearer_auth(&dev.key)
        .header("connection-id", "demo")
        .header("provider-config-key", "hubspot")
        .header("content-type", "application/json")
        .body("[1, 2]")
        .send()
        .await
        .unwrap();
    let refused: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_ne!(refused["error"]["code"], "invalid_body", "{refused}");
    assert!(refused["error"]["code"].is_string(), "{refused}");
    // `X-Async` on an action's endpoint queues it as on /action/trigger.
    let resp = dev
        .http
        .post(format!("{}/v1/contacts", dev.base))
        .bearer_auth(&dev.key)
        .header("connection-id", "demo")
        .header("provider-config-key", "hubspot")
        .header("x-async", "true")
        .header("content-type", "application/json")
        .body(
            json!({"email": "mary@example.com", "first_name": "Mary", "last_name": "Jackson"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let (seen, body) = dev
        .poll_async(("hubspot", "demo"), &location, |s| s != 0)
        .await;
    assert_eq!(seen.last(), Some(&200), "{body}");
    assert_eq!(body["id"], "201", "{body}");

    // Another environment's key reaches none of it.
    let (status, body) = prod.send("GET", "/records?model=Contact", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_connection")),
        "{body}"
    );
    let (_, body) = prod.send("GET", "/connection", None).await;
    assert_eq!(body["connections"], json!([]));
    let (status, _) = prod
        .send(
            "POST",
            "/action/trigger",
            Some(json!({"action_name": "create-contact", "input": {}})),
        )
        .await;
    // As the original's: the connection is looked up first, 400.
    assert_eq!(status, 400);

    // After a restart everything is still there, and the credentials are
    // nowhere in the data directory's files.
    server.stop().await;
    let server = start_on(store, data.path(), &master, &mock.url()).await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, page) = dev
        .send("GET", "/records?model=Contact&limit=100", None)
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["records"].as_array().unwrap().len(), 5);
    let (status, body) = dev
        .send(
            "POST",
            "/action/trigger",
            Some(json!({"action_name": "create-contact", "input": {"email": "katherine@example.com", "first_name": "Katherine", "last_name": "Johnson"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
    for entry in walk(data.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(17).any(|w| w == b"demo-access-token"),
            "{} holds the access token in clear",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

const MOCK_YAML: &str = "
integrations:
  mock-int:
    syncs:
      records:
        runs: every hour
        auto_start: false
        output: Item
        track_deletes: true
        endpoint: GET /items
    actions:
      proxy:
        endpoint: POST /proxy
      misbehave:
        endpoint: POST /misbehave
models:
  Item:
    id: string
";

fn ids(page: &Value) -> Vec<String> {
    let mut ids: Vec<String> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].to_string().trim_matches('"').to_string())
        .collect();
    ids.sort();
    ids
}

/// A `trackDeletesStart` outlives its run (a sync that resumes from its
/// checkpoint after a failed run does not start again): the end, in a
/// later run, deletes only what no run since the start saved; an end with
/// no start fails the run, as the original's.
#[tokio::test]
async fn a_track_deletes_start_stands_until_its_end_in_a_later_run() {
    let providers = "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: http://127.0.0.1:9\n";
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), providers).await;
    let dev = Client::new(&server, DEV_KEY);
    let c1 = ("mock-int", "c1");
    let yaml = MOCK_YAML.split("    actions:").next().unwrap().to_string()
        + "models:\n  Item:\n    id: string\n";
    deploy_scripts(
        &dev,
        &yaml,
        "mock-int",
        &[(guests::SYNC_RECORDS, "records", ScriptKind::Sync)],
    )
    .await;
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "mock-int", "provider": "mock"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let save = |ids: &[&str]| json!(ids.iter().map(|i| json!({"id": i})).collect::<Vec<_>>());
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({
                "provider_config_key": "mock-int", "connection_id": "c1", "api_key": "k",
                "metadata": {"model": "Item", "save": save(&["a", "b", "c", "d"])},
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let run = |plan: Value| {
        let dev = &dev;
        async move {
            let (status, _) = dev
                .send_as(
                    c1,
                    "POST",
                    "/connection/metadata",
                    Some(json!({"connection_id": "c1", "provider_config_key": "mock-int", "metadata": plan})),
                )
                .await;
            assert_eq!(status, 201);
            let trigger = json!({"syncs": ["records"], "provider_config_key": "mock-int", "connection_id": "c1", "wait": true});
            let (status, body) = dev
                .send_as(c1, "POST", "/sync/trigger", Some(trigger))
                .await;
            assert_eq!(status, 200, "{body}");
            body["runs"][0].clone()
        }
    };
    let alive = || {
        let dev = &dev;
        async move {
            let (_, page) = dev.send_as(c1, "GET", "/records?model=Item", None).await;
            let mut ids: Vec<String> = page["records"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["_nango_metadata"]["deleted_at"].is_null())
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    let first = run(json!({"model": "Item", "save": save(&["a", "b", "c", "d"])})).await;
    assert_eq!(first["success"], true, "{first}");
    // Starts, sees a (unchanged) and e (new), fails.
    let failed = run(json!({"model": "Item", "save": save(&["a", "e"]), "track_start": true, "fail_after": true})).await;
    assert_eq!(failed["success"], false, "{failed}");
    // Resumes without a start, sees b, ends: c and d go; a and e, seen
    // since the start, stay.
    let ended = run(json!({"model": "Item", "save": save(&["b"]), "track_end": true})).await;
    assert_eq!(ended["success"], true, "{ended}");
    assert_eq!(ended["results"]["Item"]["deleted"], 2, "{ended}");
    assert_eq!(alive().await, ["a", "b", "e"]);
    // The start ended with its deletes: an end alone now fails the run
    // and deletes nothing.
    let alone = run(json!({"model": "Item", "save": save(&["b"]), "track_end": true})).await;
    assert_eq!(alone["success"], false, "{alone}");
    assert!(
        alone["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("No track deletes starting point found for model 'Item'.")),
        "{alone}"
    );
    assert_eq!(alive().await, ["a", "b", "e"]);
    // A start and an end in one run: what it did not save goes.
    let both =
        run(json!({"model": "Item", "save": save(&["b"]), "track_start": true, "track_end": true}))
            .await;
    assert_eq!(both["success"], true, "{both}");
    assert_eq!(alive().await, ["b"]);
    // A full refresh starts over: a start left open goes with the
    // checkpoint, as the original's (every checkpoint of the sync).
    let open = run(
        json!({"model": "Item", "save": save(&["b"]), "track_start": true, "fail_after": true}),
    )
    .await;
    assert_eq!(open["success"], false, "{open}");
    let (status, _) = dev
        .send_as(
            c1,
            "POST",
            "/connection/metadata",
            Some(json!({"connection_id": "c1", "provider_config_key": "mock-int", "metadata": {"model": "Item", "save": save(&["b"]), "track_end": true}})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = dev
        .send_as(
            c1,
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": ["records"], "provider_config_key": "mock-int", "connection_id": "c1", "wait": true, "sync_mode": "full_refresh"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["runs"][0]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("No track deletes starting point")),
        "{body}"
    );
    server.stop().await;
}

/// `PATCH /records/prune` empties a connection's records up to a cursor:
/// they keep their place and metadata and show `pruned_at`, and a sync
/// that saves them again fills them.
#[tokio::test]
async fn records_are_pruned_up_to_a_cursor_and_filled_again_by_a_sync() {
    let providers = "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: http://127.0.0.1:9\n";
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), providers).await;
    let dev = Client::new(&server, DEV_KEY);
    let c1 = ("mock-int", "c1");
    let yaml = MOCK_YAML.split("    actions:").next().unwrap().to_string()
        + "models:\n  Item:\n    id: string\n";
    deploy_scripts(
        &dev,
        &yaml,
        "mock-int",
        &[(guests::SYNC_RECORDS, "records", ScriptKind::Sync)],
    )
    .await;
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "mock-int", "provider": "mock"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let items: Vec<Value> = (1..=5)
        .map(|i| json!({"id": i.to_string(), "name": format!("item {i}")}))
        .collect();
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({
                "provider_config_key": "mock-int", "connection_id": "c1", "api_key": "k",
                "metadata": {"model": "Item", "save": items, "fail_after": false},
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let trigger = json!({"syncs": ["records"], "provider_config_key": "mock-int", "connection_id": "c1", "wait": true});
    let (status, body) = dev
        .send_as(c1, "POST", "/sync/trigger", Some(trigger.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"][0]["results"]["Item"]["added"], 5, "{body}");

    let (_, before) = dev.send_as(c1, "GET", "/records?model=Item", None).await;
    let before = before["records"].as_array().unwrap().clone();
    assert_eq!(before.len(), 5);
    assert!(
        before
            .iter()
            .all(|r| r["_nango_metadata"]["pruned_at"].is_null())
    );
    let until = before[2]["_nango_metadata"]["cursor"].clone();
    let prune = |limit: Option<u32>| {
        let mut body = json!({"model": "Item", "until_cursor": until});
        if let Some(l) = limit {
            body["limit"] = json!(l);
        }
        body
    };
    let (status, body) = dev
        .send_as(c1, "PATCH", "/records/prune", Some(prune(Some(2))))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"count": 2, "has_more": true}));
    let (_, body) = dev
        .send_as(c1, "PATCH", "/records/prune", Some(prune(None)))
        .await;
    assert_eq!(body, json!({"count": 1, "has_more": false}));

    let (_, after) = dev.send_as(c1, "GET", "/records?model=Item", None).await;
    let after = after["records"].as_array().unwrap().clone();
    assert_eq!(after.len(), 5, "pruned records are still listed");
    for (i, (a, b)) in after.iter().zip(&before).enumerate() {
        assert_eq!(a["id"], b["id"]);
        for field in ["cursor", "first_seen_at", "last_modified_at", "last_action"] {
            assert_eq!(a["_nango_metadata"][field], b["_nango_metadata"][field]);
        }
        if i < 3 {
            let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["id", "_nango_metadata"], "{a}");
            assert!(a["_nango_metadata"]["pruned_at"].is_string(), "{a}");
        } else {
            assert_eq!(a, b);
        }
    }

    // What is wrong is named, and nothing is pruned.
    let other = ("mock-int", "nope");
    for (who, query, body, code) in [
        (
            c1,
            "",
            json!({"model": "Item", "until_cursor": until, "colour": 1}),
            "invalid_body",
        ),
        (
            c1,
            "",
            json!({"model": "Item", "until_cursor": "not-a-cursor"}),
            "invalid_body",
        ),
        (
            c1,
            "",
            json!({"model": "item", "until_cursor": until}),
            "invalid_body",
        ),
        (
            c1,
            "",
            json!({"model": "Item", "until_cursor": until, "limit": 0}),
            "invalid_body",
        ),
        (c1, "?model=Item", prune(None), "invalid_query_params"),
        (other, "", prune(None), "unknown_connection"),
    ] {
        let (status, answer) = dev
            .send_as(
                who,
                "PATCH",
                &format!("/records/prune{query}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {answer}"
        );
    }

    // The sync saves them again, unchanged: they are whole, in place.
    let (_, body) = dev
        .send_as(c1, "POST", "/sync/trigger", Some(trigger.clone()))
        .await;
    assert_eq!(body["runs"][0]["results"]["Item"]["unchanged"], 5, "{body}");
    let (_, again) = dev.send_as(c1, "GET", "/records?model=Item", None).await;
    assert_eq!(again["records"].as_array().unwrap(), &before);
}

#[tokio::test]
async fn runs_report_changes_errors_keep_their_shapes_and_tokens_refresh_once() {
    use sluice_tests::{MockRequest, MockResponse};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let token_calls = Arc::new(AtomicUsize::new(0));
    let calls = token_calls.clone();
    let flaky_calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let flaky = flaky_calls.clone();
    let huge_calls = Arc::new(AtomicUsize::new(0));
    let huge = huge_calls.clone();
    let handler = move |req: &MockRequest| match req.path.as_str() {
        "/flaky" => {
            flaky.lock().unwrap().push(std::time::Instant::now());
            MockResponse::json(503, &json!({"message": "busy"}))
        }
        "/oauth/token" if String::from_utf8_lossy(&req.body).contains("refresh_token=rt-huge") => {
            huge.fetch_add(1, Ordering::SeqCst);
            MockResponse::json(200, &json!({"access_token": "x".repeat(2 << 20)}))
        }
        "/oauth/token" => {
            calls.fetch_add(1, Ordering::SeqCst);
            let body = String::from_utf8_lossy(&req.body).into_owned();
            assert!(body.contains("grant_type=refresh_token"), "{body}");
            assert!(body.contains("refresh_token=rt-1"), "{body}");
            assert!(body.contains("client_id=cid"), "{body}");
            MockResponse::json(
                200,
                &json!({"access_token": "fresh-token", "expires_in": 3600}),
            )
            .delayed(std::time::Duration::from_millis(100))
        }
        "/whoami" if req.header("authorization") == Some("Bearer fresh-token") => {
            MockResponse::json(200, &json!({"me": "ok"}))
        }
        "/whoami" => MockResponse::json(401, &json!({"error": "expired"})),
        "/missing" => MockResponse::json(404, &json!({"message": "no such thing"})),
        "/wrapped" => MockResponse::json(
            422,
            &json!({"payload": {"reason": "bad-input"}, "other": 1}),
        ),
        "/text" => MockResponse {
            status: 409,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"conflict text".to_vec(),
            delay: None,
        },
        _ => MockResponse::json(200, &json!({})),
    };
    let mock = MockServer::start(Arc::new(handler)).await.unwrap();
    let providers = format!(
        "mock:\n  auth_mode: OAUTH2\n  token_url: {0}/oauth/token\n  proxy:\n    base_url: {0}\n",
        mock.url()
    );
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.max_body_bytes = 1 << 20;
    config.action_retry_base = std::time::Duration::from_millis(100);
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let dev = Client::new(&server, DEV_KEY);
    let c1 = ("mock-int", "c1");
    deploy_scripts(
        &dev,
        MOCK_YAML,
        "mock-int",
        &[
            (guests::SYNC_RECORDS, "records", ScriptKind::Sync),
            (guests::ACTION_PROXY, "proxy", ScriptKind::Action),
            (guests::ACTION_MISBEHAVE, "misbehave", ScriptKind::Action),
        ],
    )
    .await;
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "mock-int", "provider": "mock", "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let plan = |save: Value, fail: bool| json!({"model": "Item", "save": save, "fail_after": fail});
    for (cid, expires) in [
        ("c1", "2099-01-01T00:00:00Z"),
        ("c2", "2020-01-01T00:00:00Z"),
    ] {
        let (status, body) = dev
            .send(
                "POST",
                "/connection",
                Some(json!({
                    "provider_config_key": "mock-int", "connection_id": cid,
                    "access_token": "old-token", "refresh_token": "rt-1", "expires_at": expires,
                    "metadata": plan(json!([{"id": "1", "v": 1}, {"id": "2", "v": 1}, {"id": "3", "v": 1}]), false),
                })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let trigger = json!({"syncs": ["records"], "provider_config_key": "mock-int", "connection_id": "c1", "wait": true});

    // First run: three added.
    let (status, body) = dev
        .send_as(c1, "POST", "/sync/trigger", Some(trigger.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"][0]["results"]["Item"]["added"], 3, "{body}");

    // The upstream changes: 1 updated, 3 gone; track_deletes deletes it.
    let set =
        |p: Value| json!({"connection_id": "c1", "provider_config_key": "mock-int", "metadata": p});
    let (status, _) = dev
        .send_as(
            c1,
            "POST",
            "/connection/metadata",
            Some(set(plan(
                json!([{"id": "1", "v": 2}, {"id": "2", "v": 1}]),
                false,
            ))),
        )
        .await;
    assert_eq!(status, 201);
    let (_, body) = dev
        .send_as(c1, "POST", "/sync/trigger", Some(trigger.clone()))
        .await;
    let results = &body["runs"][0]["results"]["Item"];
    assert_eq!(
        (
            results["added"].as_u64(),
            results["updated"].as_u64(),
            results["deleted"].as_u64()
        ),
        (Some(0), Some(1), Some(1)),
        "{body}"
    );
    // The connection's history counts the deletion too.
    let (status, history) = dev
        .send(
            "GET",
            "/executions?provider_config_key=mock-int&connection_id=c1&limit=1",
            None,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        history["executions"][0]["changes"]["Item"]["deleted"], 1,
        "{history}"
    );
    let (_, page) = dev
        .send_as(c1, "GET", "/records?model=Item&filter=deleted", None)
        .await;
    assert_eq!(ids(&page), ["3"]);
    let (_, page) = dev
        .send_as(c1, "GET", "/records?model=Item&filter=updated", None)
        .await;
    assert_eq!(ids(&page), ["1"]);
    let (_, page) = dev
        .send_as(c1, "GET", "/records?model=Item&filter=added,updated", None)
        .await;
    assert_eq!(ids(&page), ["1", "2"]);
    let (_, page) = dev
        .send_as(
            c1,
            "GET",
            "/records?model=Item&modified_after=2099-01-01T00:00:00Z",
            None,
        )
        .await;
    assert_eq!(ids(&page), Vec::<String>::new());

    // A run that sees only record 2, unchanged: its chunk changes nothing,
    // so the run notes 2 as seen instead of stamping it, and its
    // track_deletes deletes 1 and keeps 2.
    dev.send_as(
        c1,
        "POST",
        "/connection/metadata",
        Some(set(plan(json!([{"id": "2", "v": 1}]), false))),
    )
    .await;
    let (_, body) = dev
        .send_as(c1, "POST", "/sync/trigger", Some(trigger.clone()))
        .await;
    let results = &body["runs"][0]["results"]["Item"];
    assert_eq!(
        (results["unchanged"].as_u64(), results["deleted"].as_u64()),
        (Some(1), Some(1)),
        "{body}"
    );
    let (_, page) = dev
        .send_as(c1, "GET", "/records?model=Item&filter=added,updated", None)
        .await;
    assert_eq!(ids(&page), ["2"]);

    // A failed run keeps what it saved and deletes nothing.
    dev.send_as(
        c1,
        "POST",
        "/connection/metadata",
        Some(set(plan(json!([{"id": "4"}]), true))),
    )
    .await;
    let (_, body) = dev
        .send_as(c1, "POST", "/sync/trigger", Some(trigger.clone()))
        .await;
    assert_eq!(body["runs"][0]["success"], false, "{body}");
    let (_, page) = dev
        .send_as(c1, "GET", "/records?model=Item&filter=added,updated", None)
        .await;
    assert_eq!(ids(&page), ["2", "4"]);

    // ActionError: 500 with its payload; an upstream 404: 424 with it.
    let action = |name: &str, input: Value| json!({"action_name": name, "input": input});
    let (status, body) = dev
        .send_as(
            c1,
            "POST",
            "/action/trigger",
            Some(action("misbehave", json!({"mode": "action-error"}))),
        )
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "action_script_runtime_error");
    assert_eq!(
        body["error"]["payload"],
        json!({"message": "card declined", "code": 402})
    );
    // Any other failure: the original's fixed message for its code, what
    // happened in the payload.
    let (status, body) = dev
        .send_as(
            c1,
            "POST",
            "/action/trigger",
            Some(action("misbehave", json!({"mode": "panic"}))),
        )
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "script_internal_error");
    assert_eq!(
        body["error"]["message"],
        "An internal error occurred during the script execution"
    );
    assert!(
        body["error"]["payload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("the script gave up")),
        "{body}"
    );
    let (status, body) = dev
        .send_as(
            c1,
            "POST",
            "/action/trigger",
            Some(action("proxy", json!({"endpoint": "/missing"}))),
        )
        .await;
    assert_eq!(status, 424, "{body}");
    assert_eq!(body["error"]["code"], "script_http_error");
    assert_eq!(body["error"]["upstream"]["status"], 404);
    assert_eq!(
        body["error"]["payload"],
        json!({"message": "no such thing"})
    );
    // As the original's runner: a body's `payload` member is the payload,
    // a body that is not an object becomes `{message}`; the upstream's
    // body is reported the same way.
    for (endpoint, status, payload) in [
        ("/wrapped", 422, json!({"reason": "bad-input"})),
        ("/text", 409, json!({"message": "conflict text"})),
    ] {
        let (code, body) = dev
            .send_as(
                c1,
                "POST",
                "/action/trigger",
                Some(action("proxy", json!({"endpoint": endpoint}))),
            )
            .await;
        assert_eq!(code, 424, "{body}");
        assert_eq!(body["error"]["upstream"]["status"], status, "{body}");
        assert_eq!(body["error"]["payload"], payload, "{body}");
        assert_eq!(body["error"]["upstream"]["body"], payload, "{body}");
    }
    let (status, body) = dev
        .send_as(
            c1,
            "POST",
            "/action/trigger",
            Some(action("nope", json!({}))),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // Async: 202 with a status URL, then the output.
    let location = dev
        .trigger_async(c1, "misbehave", json!({"mode": "print"}), None)
        .await;
    let (seen, done) = dev.poll_async(c1, &location, |s| s != 0).await;
    assert_eq!(seen.last(), Some(&200), "{done}");
    assert_eq!(done, json!("printed"));

    // X-Max-Retries: a failing async action runs 1 + 2 times, waiting
    // before each retry (100 ms, then 200 ms), then keeps its error.
    let location = dev
        .trigger_async(c1, "proxy", json!({"endpoint": "/flaky"}), Some(2))
        .await;
    let (seen, body) = dev.poll_async(c1, &location, |s| s != 0).await;
    assert_eq!(
        (seen.last(), body["error"]["code"].as_str()),
        (Some(&424), Some("script_http_error")),
        "{body}"
    );
    assert_eq!(body["error"]["upstream"]["status"], 503, "{body}");
    let times = flaky_calls.lock().unwrap().clone();
    assert_eq!(times.len(), 3, "one attempt and two retries");
    assert!(times[1] - times[0] >= std::time::Duration::from_millis(100));
    assert!(times[2] - times[1] >= std::time::Duration::from_millis(200));

    // An async action waiting to retry when its connection is deleted and
    // made again under the same id does not run for the new connection.
    let import = |token: &'static str| {
        dev.send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "mock-int", "connection_id": "c3", "access_token": token})),
        )
    };
    assert_eq!(import("first").await.0, 201);
    let c3 = ("mock-int", "c3");
    let before = flaky_calls.lock().unwrap().len();
    let location = dev
        .trigger_async(c3, "proxy", json!({"endpoint": "/flaky"}), Some(5))
        .await;
    while flaky_calls.lock().unwrap().len() == before {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (status, body) = dev
        .send_as(
            c3,
            "DELETE",
            "/connection/c3?provider_config_key=mock-int",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(import("second").await.0, 201);
    let attempts = flaky_calls.lock().unwrap().len();
    let (seen, body) = dev.poll_async(c3, &location, |s| s != 0).await;
    // Ended: not a 404, which a poller reads as "not finished".
    assert_eq!(
        (seen.last(), body["error"]["code"].as_str()),
        (Some(&500), Some("unknown_connection")),
        "{body}"
    );
    // Its id in capitals is the same action.
    let (status, upper) = dev
        .send_as(
            c3,
            "GET",
            &location.to_uppercase().replace("/ACTION/", "/action/"),
            None,
        )
        .await;
    assert_eq!((status, &upper), (500, &body));
    assert_eq!(
        flaky_calls.lock().unwrap().len(),
        attempts,
        "a retry ran for the new connection"
    );

    // c2's token expired: 20 concurrent actions, one refresh.
    let c2 = ("mock-int", "c2");
    let runs = (0..20).map(|_| {
        dev.send_as(
            c2,
            "POST",
            "/action/trigger",
            Some(action("proxy", json!({"endpoint": "/whoami"}))),
        )
    });
    for (status, body) in futures_join(runs).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["me"], "ok", "{body}");
    }
    assert_eq!(token_calls.load(Ordering::SeqCst), 1);

    // `force_refresh` refreshes a token imported moments ago (an import is
    // not a refresh), and again when asked again at once: as the
    // original's, an app's explicit refresh always refreshes (a script's
    // refused request does not, within minutes of the last refresh).
    for _ in 0..2 {
        let (status, body) = dev
            .send(
                "GET",
                "/connection/c1?provider_config_key=mock-int&force_refresh=true",
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["credentials"]["access_token"], "fresh-token", "{body}");
    }
    assert_eq!(token_calls.load(Ordering::SeqCst), 3);
    // The official SDK's `getConnection` query, every flag sent: taken
    // (a strict query must still know `refresh_github_app_jwt_token`).
    let (status, body) = dev
        .send(
            "GET",
            "/connections/c1?provider_config_key=mock-int&force_refresh=false&refresh_token=false&refresh_github_app_jwt_token=false",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(token_calls.load(Ordering::SeqCst), 3);
    // The refresh token is shown only when asked for, in `raw` too.
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(
                json!({"provider_config_key": "mock-int", "connection_id": "c5",
                        "access_token": "a", "refresh_token": "rt-5", "no_expiration": true,
                        "raw": {"access_token": "a", "refresh_token": "rt-5"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, body) = dev
        .send("GET", "/connection/c5?provider_config_key=mock-int", None)
        .await;
    assert!(!body.to_string().contains("rt-5"), "{body}");
    let (_, body) = dev
        .send(
            "GET",
            "/connection/c5?provider_config_key=mock-int&refresh_token=true",
            None,
        )
        .await;
    assert_eq!(body["credentials"]["refresh_token"], "rt-5", "{body}");
    assert_eq!(
        body["credentials"]["raw"]["refresh_token"], "rt-5",
        "{body}"
    );
    // Without `raw`, the import is the raw token response, as the
    // original keeps it (`getRawTokenResponse` had `{}`); without a token,
    // the original's code.
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(
                json!({"provider_config_key": "mock-int", "connection_id": "c6",
                        "access_token": "a6", "scope": "read", "no_expiration": true}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, body) = dev
        .send("GET", "/connection/c6?provider_config_key=mock-int", None)
        .await;
    assert_eq!(body["credentials"]["raw"]["access_token"], "a6", "{body}");
    assert_eq!(body["credentials"]["raw"]["scope"], "read", "{body}");
    assert!(
        body["credentials"]["raw"].get("connection_id").is_none(),
        "{body}"
    );
    // The same in the nested form: its refresh token is shown nowhere
    // (it was, inside `raw`).
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "mock-int", "connection_id": "c8",
                        "credentials": {"type": "OAUTH2", "access_token": "a8", "refresh_token": "rt-8", "no_expiration": true}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, body) = dev
        .send("GET", "/connection/c8?provider_config_key=mock-int", None)
        .await;
    assert_eq!(body["credentials"]["raw"]["access_token"], "a8", "{body}");
    assert!(!body.to_string().contains("rt-8"), "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "mock-int", "connection_id": "c7"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("missing_access_token")),
        "{body}"
    );

    // A token endpoint answering megabytes: the refresh fails, naming why.
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(
                json!({"provider_config_key": "mock-int", "connection_id": "c4",
                        "access_token": "old", "refresh_token": "rt-huge",
                        "expires_at": "2020-01-01T00:00:00Z"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send("GET", "/connection/c4?provider_config_key=mock-int", None)
        .await;
    assert!(
        status >= 400 && body.to_string().contains("longer than 1048576 bytes"),
        "{status} {body}"
    );
    // As the original's, the refusal carries the connection as stored
    // (its refresh token left out unless asked for).
    let shown = &body["error"]["payload"]["connection"];
    assert_eq!(shown["connection_id"], "c4", "{body}");
    assert_eq!(shown["credentials"]["access_token"], "old", "{body}");
    assert!(
        shown["credentials"].get("refresh_token").is_none(),
        "{body}"
    );
    // The connection's error names the refresh's log, as the original's
    // `errors: [{type: "auth", log_id}]`, and the log says why.
    let (_, list) = dev.send("GET", "/connection?connectionId=c4", None).await;
    let error = &list["connections"][0]["errors"][0];
    assert_eq!(error["type"], "auth", "{list}");
    let log_id = error["log_id"].as_str().unwrap_or_else(|| panic!("{list}"));
    let (status, found) = dev
        .send("GET", &format!("/logs?execution_id={log_id}"), None)
        .await;
    assert_eq!(status, 200, "{found}");
    assert!(
        found["logs"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("refresh_token failed")
                && m.contains("longer than 1048576 bytes")),
        "{found}"
    );
    // Asked again at once, the token endpoint is not called (the
    // original's 30 s cooldown after a failure) unless the app forces it;
    // failing the same way again keeps that log: an app polling a dead
    // connection neither hammers the provider nor fills the logs.
    assert_eq!(huge_calls.load(Ordering::SeqCst), 1);
    let (status, body) = dev
        .send("GET", "/connection/c4?provider_config_key=mock-int", None)
        .await;
    assert!(
        status >= 400 && body.to_string().contains("longer than 1048576 bytes"),
        "{status} {body}"
    );
    assert_eq!(huge_calls.load(Ordering::SeqCst), 1);
    let (status, _) = dev
        .send(
            "GET",
            "/connection/c4?provider_config_key=mock-int&force_refresh=true",
            None,
        )
        .await;
    assert!(status >= 400);
    assert_eq!(huge_calls.load(Ordering::SeqCst), 2);
    let (_, list) = dev.send("GET", "/connection?connectionId=c4", None).await;
    assert_eq!(
        list["connections"][0]["errors"][0]["log_id"], log_id,
        "{list}"
    );
    let (_, found) = dev
        .send(
            "GET",
            "/logs?connection_id=c4&q=refresh_token%20failed",
            None,
        )
        .await;
    assert_eq!(found["logs"].as_array().map(Vec::len), Some(1), "{found}");
    // Imported again (the same tokens, say with a fixed configuration):
    // tried at once.
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(
                json!({"provider_config_key": "mock-int", "connection_id": "c4",
                        "access_token": "old", "refresh_token": "rt-huge",
                        "expires_at": "2020-01-01T00:00:00Z"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = dev
        .send("GET", "/connection/c4?provider_config_key=mock-int", None)
        .await;
    assert!(status >= 400);
    assert_eq!(huge_calls.load(Ordering::SeqCst), 3);

    // Bad bodies: named, and nothing changes.
    let raw = |body: Vec<u8>| {
        dev.http
            .post(format!("{}/action/trigger", dev.base))
            .bearer_auth(DEV_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = raw(b"{\"action_name\": ".to_vec()).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json_value().await;
    assert_eq!(body["error"]["code"], "invalid_body", "{body}");
    let resp = raw(vec![b' '; 2 << 20]).await.unwrap();
    assert_eq!(resp.status(), 413);
    let (_, page) = dev.send_as(c1, "GET", "/records?model=Item", None).await;
    assert_eq!(page["records"].as_array().unwrap().len(), 4);
    server.stop().await;
}

/// Runs futures concurrently and collects their outputs in order.
pub(crate) async fn futures_join<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out = Vec::with_capacity(set.len());
    // Poll them all together.
    let joined = std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out.iter().any(|(j, _)| *j == i) {
                continue;
            }
            match f.as_mut().poll(cx) {
                std::task::Poll::Ready(v) => out.push((i, v)),
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    });
    joined.await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, v)| v).collect()
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        serde_json::from_str(&self.text().await.unwrap()).unwrap()
    }
}

/// `sluice deploy` as a user runs it (in process: the binary's code).
async fn sluice_deploy(base: &str, key: &str, extra: &[&str]) -> (i32, String, String) {
    let dir = repo_root().join("examples/github-ts");
    let build = Path::new(guests::BUILD_DIR).join("deploy-github-ts");
    let argv: Vec<String> = [
        "sluice",
        "deploy",
        "--dir",
        &dir.display().to_string(),
        "--sdk",
        &sluice_tests::ts_sdk().display().to_string(),
        "--cache-dir",
        guests::CACHE_DIR,
        "--build-dir",
        &build.display().to_string(),
        "--host",
        base,
        "--secret-key",
        key,
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = sluice::cli::run(argv.into_iter().map(Into::into), &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// A server that does not say it takes a deploy of part of a project (an
/// older sluice) would deploy it whole: the CLI refuses before sending.
#[tokio::test]
async fn a_partial_deploy_is_not_sent_to_a_server_that_would_take_it_whole() {
    let older = MockServer::start(std::sync::Arc::new(
        |req: &sluice_tests::MockRequest| match req.path.as_str() {
            "/sluice/environment" => sluice_tests::MockResponse::json(200, &json!({"name": "dev"})),
            _ => sluice_tests::MockResponse::json(404, &json!({})),
        },
    ))
    .await
    .unwrap();
    let (code, out, err) =
        sluice_deploy(&older.url(), DEV_KEY, &["-s", "github-issue-example"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("does not take a deploy of part of a project (sync `github-issue-example`): nothing was deployed"),
        "{err}"
    );
    assert!(
        older
            .requests()
            .iter()
            .all(|r| r.path == "/sluice/environment"),
        "{:?}",
        older
            .requests()
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn deploys_are_versions_a_bad_one_changes_nothing_and_rollback_works() {
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), "").await;
    let dev = Client::new(&server, DEV_KEY);

    let (code, out, err) = sluice_deploy(&server.url(), "wrong-key", &[]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("401") && err.contains("unknown_account"),
        "{out}{err}"
    );

    // Naming `prod` (as the original's CI line does) with the dev key is
    // refused before anything is deployed (it deployed to dev, exit 0).
    let (code, out, err) = sluice_deploy(&server.url(), DEV_KEY, &["prod", "--auto-confirm"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("environment `dev`'s, not `prod`'s") && err.contains("nothing was deployed"),
        "{err}"
    );
    for (version, extra) in [
        (1, &[][..]),
        (
            2,
            &[
                "dev",
                "--auto-confirm",
                "--allow-destructive",
                "-v",
                "2.0.0",
            ][..],
        ),
    ] {
        let (code, out, err) = sluice_deploy(&server.url(), DEV_KEY, extra).await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains(&format!("Deployed version {version} to `dev`")),
            "{out}"
        );
    }
    // `-v` tags every deployed script with its version, as the original's.
    let (_, config) = dev.send("GET", "/scripts/config", None).await;
    let versions: Vec<&Value> = config
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| {
            i["syncs"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(i["actions"].as_array().into_iter().flatten())
        })
        .map(|s| &s["version"])
        .collect();
    assert!(!versions.is_empty(), "{config}");
    assert!(versions.iter().all(|v| *v == "2.0.0"), "{config}");
    let (code, _, err) = sluice_deploy(&server.url(), DEV_KEY, &["-v", " "]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("the version ` ` is not one a deploy takes"),
        "{err}"
    );
    let (_, list) = dev.send("GET", "/sluice/deployments", None).await;
    let versions: Vec<(u64, bool)> = list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["version"].as_u64().unwrap(),
                d["active"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(versions, [(2, true), (1, false)]);

    // A deploy that does not validate is refused and changes nothing.
    let (_, body) = dev
        .send(
            "POST",
            "/sluice/deploy",
            Some(json!({"nango_yaml": "integrations:\n  x:\n    syncs:\n      s:\n        runs: every century\n", "components": []})),
        )
        .await;
    assert_eq!(body["error"]["code"], "invalid_deploy", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("runs"),
        "{body}"
    );
    // A frequency nango.yaml parses and the original's deploy refuses (a
    // whole amount only).
    let (status, body) = dev
        .send(
            "POST",
            "/sluice/deploy",
            Some(json!({"nango_yaml": "integrations:\n  x:\n    syncs:\n      s:\n        runs: every 1.5 hours\n        output: M\n        endpoint: GET /m\nmodels:\n  M:\n    id: string\n", "components": []})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sync `s` of `x`: the frequency `every 1.5 hours` is not one a deploy takes"),
        "{body}"
    );
    // So is a zero-yaml deploy whose definitions are not valid ones
    // (before, a bad frequency became one day and a nameless sync ran).
    for (definitions, names) in [
        (
            json!([{"providerConfigKey": "x", "syncs": [{"name": "s", "runs": "every century"}]}]),
            "`x/s`: `runs`",
        ),
        (json!([{"syncs": []}]), "providerConfigKey"),
        (
            json!([{"providerConfigKey": "x", "actions": [{"name": "a", "endpoint": {"method": "FETCH", "path": "/a"}}]}]),
            "`x/a`: `endpoint` has an unknown method",
        ),
    ] {
        let (status, body) = dev
            .send(
                "POST",
                "/sluice/deploy",
                Some(json!({"nango_yaml": "", "nango_json": definitions, "components": []})),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_deploy", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(names),
            "{names}: {body}"
        );
    }
    let (status, body) = dev
        .send("POST", "/sluice/deploy", Some(json!({"components": 3})))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );
    let (_, list) = dev.send("GET", "/sluice/deployments", None).await;
    assert_eq!(list["deployments"].as_array().unwrap().len(), 2);
    assert_eq!(list["deployments"][0]["active"], true);

    let (status, body) = dev
        .send("POST", "/sluice/deployments/1/activate", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = dev.send("GET", "/sluice/deployments", None).await;
    assert_eq!(list["deployments"][1]["active"], true);
    let (_, api) = dev.send("GET", "/openapi.json", None).await;
    assert_eq!(api["info"]["version"], "1");
    // Under /v1, where it is served.
    assert!(
        api["paths"]["/v1/github/issues"]["get"].is_object(),
        "{api}"
    );
    assert!(
        api["components"]["schemas"]["GithubIssue"].is_object(),
        "{api}"
    );
    // A page's records carry `_nango_metadata`, its query parameters and
    // the error body are described, as a generated client needs them.
    let get = &api["paths"]["/v1/github/issues"]["get"];
    let items = &get["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["records"]
        ["items"];
    assert_eq!(
        items["$ref"], "#/components/schemas/sluice.Record.GithubIssue",
        "{get}"
    );
    // The model's properties and the metadata in one schema (an `allOf`
    // of the model, which allows no other property, and the metadata
    // would refuse every record).
    let record = &api["components"]["schemas"]["sluice.Record.GithubIssue"];
    let model = &api["components"]["schemas"]["GithubIssue"];
    assert_eq!(
        record["properties"]["_nango_metadata"]["$ref"],
        "#/components/schemas/sluice.RecordMetadata",
        "{record}"
    );
    for (name, schema) in model["properties"].as_object().unwrap() {
        assert_eq!(&record["properties"][name], schema, "{record}");
    }
    // A record that failed its model's validation is stored all the same
    // (a warning): the record schema refuses no other property and
    // requires only the metadata.
    assert_eq!(model["additionalProperties"], false, "{model}");
    assert!(record.get("additionalProperties").is_none(), "{record}");
    assert_eq!(record["required"], json!(["_nango_metadata"]), "{record}");
    let params: Vec<&str> = get["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in [
        "Connection-Id",
        "cursor",
        "limit",
        "modified_after",
        "filter",
        "ids",
    ] {
        assert!(params.contains(&name), "{name}: {params:?}");
    }
    assert_eq!(
        api["components"]["schemas"]["sluice.RecordMetadata"]["properties"]["last_action"]["enum"],
        json!(["ADDED", "UPDATED", "DELETED"]),
        "{api}"
    );
    let action = api["paths"]
        .as_object()
        .unwrap()
        .values()
        .find_map(|p| p["post"].as_object())
        .expect("an action endpoint");
    assert_eq!(
        action["responses"]["424"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/sluice.Error",
        "{action:?}"
    );

    // `deploy -a/-s` deploys one script of the project, the original's
    // single-script deploy; a name the project lacks is said before
    // anything is sent.
    let (code, out, err) = sluice_deploy(&server.url(), DEV_KEY, &["-a", "create-issue"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(": action `create-issue`, 1 script; the deployment has 2 scripts in all."),
        "{out}"
    );
    let (code, out, err) = sluice_deploy(&server.url(), DEV_KEY, &["-s", "nope"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("the project has no sync `nope` to deploy: nothing was deployed"),
        "{err}"
    );
    // A user and password in the server's URL are not sent (they went as a
    // second authorization, which the server read first: every such deploy
    // was refused); a URL without a scheme is named.
    let with_user = server.url().replacen("http://", "http://ci:p%40ss@", 1);
    let (code, out, err) = sluice_deploy(&with_user, DEV_KEY, &["-a", "create-issue"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("the user and password in the server URL are not sent"),
        "{err}"
    );
    assert!(!format!("{out}{err}").contains("p%40ss"), "{out}{err}");
    let bare = server.url().replacen("http://", "", 1);
    let (code, _, err) = sluice_deploy(&bare, DEV_KEY, &[]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "the server URL `{bare}` is not one the deploy can reach"
        )),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn client_errors_are_json_errors_naming_the_problem_and_a_reimport_keeps_metadata() {
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.max_body_bytes = 4096;
    config.max_component_bytes = 4096;
    let server = start_with(config, &MasterKey::generate(), "").await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // An expiry no date can hold is refused, not a dropped connection.
    for secs in [i64::MAX, 10_000_000_000_000, -10_000_000_000_000] {
        let (status, body) = dev
            .send(
                "POST",
                "/connection",
                Some(json!({
                    "provider_config_key": "hubspot",
                    "connection_id": "demo",
                    "access_token": "t",
                    "expires_in": secs,
                })),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_body")),
            "{body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expires_in"),
            "{body}"
        );
    }

    // Credentials in their own shape (as connections.yaml and `GET
    // /connection` show them) import as the top-level fields do; they were
    // refused as lacking the token they held.
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(json!({
                "provider_config_key": "hubspot",
                "connection_id": "shaped",
                "credentials": {"type": "OAUTH2", "access_token": "in-credentials"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send(
            "GET",
            "/connection/shaped?provider_config_key=hubspot",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["credentials"]["access_token"], "in-credentials",
        "{body}"
    );

    // `include` as the original's API and SDK send it: repeated, or a list.
    for query in [
        "include=webhook&include=credentials",
        "include=webhook,credentials",
        "include[]=webhook&include[]=credentials",
    ] {
        let (status, body) = dev
            .send("GET", &format!("/integrations/hubspot?{query}"), None)
            .await;
        assert_eq!(status, 200, "{query}: {body}");
        let env = server.app.store.environment("dev").unwrap().id();
        // Without `--public-url`, the URL the request came to.
        assert_eq!(
            body["data"]["webhook_url"],
            format!("{}/webhook/{env}/hubspot", dev.base),
            "{body}"
        );
        assert_eq!(body["data"]["credentials"]["type"], "OAUTH2", "{body}");
    }
    // A provider that sends no webhooks (no routing script) has none.
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "no-hooks", "provider": "stripe"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = dev
        .send("GET", "/integrations/no-hooks?include=webhook", None)
        .await;
    assert_eq!(body["data"]["webhook_url"], Value::Null, "{body}");
    let (status, body) = dev
        .send("GET", "/integrations/hubspot?include=secrets", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_query_params")),
        "{body}"
    );
    // Without a name of its own, an integration has its provider's.
    let (_, body) = dev.send("GET", "/integrations/hubspot", None).await;
    assert_eq!(body["data"]["display_name"], "HubSpot", "{body}");
    // Credentials are checked as the original's API checks them: of the
    // provider's auth mode, OAuth with a client id and secret, scopes a
    // list. Before, each of these was taken (a typo found only when a
    // token could not refresh).
    for (credentials, says) in [
        (
            json!({"type": "API_KEY"}),
            "incompatible credentials auth type `API_KEY` and provider auth `OAUTH2`",
        ),
        (
            json!({"client_id": "a", "client_secret": "b"}),
            "`credentials.type` is required",
        ),
        (
            json!({"type": "OAUTH2", "client_id": "a"}),
            "`credentials.client_secret` is required",
        ),
        (
            json!({"type": "OAUTH2", "client_id": "a", "client_secret": "b", "scopes": "bad scope!"}),
            "`credentials.scopes` must be scopes separated by commas",
        ),
    ] {
        for (method, path, body) in [
            (
                "POST",
                "/integrations",
                json!({"unique_key": "checked", "provider": "hubspot", "credentials": credentials}),
            ),
            (
                "PATCH",
                "/integrations/hubspot",
                json!({"credentials": credentials}),
            ),
        ] {
            let (status, out) = dev.send(method, path, Some(body)).await;
            assert_eq!(
                (status, out["error"]["code"].as_str()),
                (400, Some("invalid_body")),
                "{method} {credentials}: {out}"
            );
            assert!(out.to_string().contains(says), "{out}");
        }
    }
    let (status, out) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "keyed", "provider": "stripe", "credentials": {"type": "OAUTH2", "client_id": "a", "client_secret": "b"}})),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(
        out.to_string()
            .contains("incompatible credentials auth type `OAUTH2` and provider auth `API_KEY`"),
        "{out}"
    );
    let (status, out) = dev.send("GET", "/integrations/checked", None).await;
    assert_eq!(status, 404, "nothing was created: {out}");
    let (status, out) = dev
        .send(
            "PATCH",
            "/integrations/hubspot",
            Some(json!({"credentials": {"type": "OAUTH2", "client_id": "a", "client_secret": "b", "scopes": "crm.objects.contacts.read,oauth"}})),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    // A key cannot change (it was accepted and ignored).
    let (status, body) = dev
        .send(
            "PATCH",
            "/integrations/hubspot",
            Some(json!({"unique_key": "renamed", "display_name": "HubSpot"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("unique_key"), "{body}");
    // Variables: a name given twice, or blank, is refused; so is what the
    // original's bounds refuse (more than 100, a name over 256 or a value
    // over 4,000 characters), a control character in a name and a field
    // it does not know.
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"name": format!("V{i}"), "value": "1"}))
        .collect();
    for (vars, says) in [
        (
            json!([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
            "given twice",
        ),
        (json!([{"name": "  ", "value": "1"}]), "non-blank"),
        (Value::Array(many), "at most 100"),
        (
            json!([{"name": "N".repeat(257), "value": "1"}]),
            "at most 256",
        ),
        (
            json!([{"name": "A\u{0}B", "value": "1"}]),
            "control characters",
        ),
        (
            json!([{"name": "A", "value": "v".repeat(4001)}]),
            "at most 4000",
        ),
        (
            json!([{"name": "A", "value": "1", "secret": true}]),
            "unknown field `secret`",
        ),
    ] {
        let (status, body) = dev.send("PUT", "/environment-variables", Some(vars)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_body", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{says}: {body}"
        );
    }
    // A body declared other than JSON on a JSON route: 415, as the
    // original's, and nothing is created.
    let resp = dev
        .http
        .post(format!("{}/integrations", dev.base))
        .bearer_auth(&dev.key)
        .header("content-type", "text/plain")
        .body(r#"{"unique_key": "plain", "provider": "hubspot"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "invalid_content_type", "{body}");
    let (status, _) = dev.send("GET", "/integrations/plain", None).await;
    assert_eq!(status, 404, "created from a text/plain body");
    // A Connection-Id that is not text is said to be so, not missing.
    let resp = dev
        .http
        .get(format!("{}/records?model=Contact", dev.base))
        .bearer_auth(&dev.key)
        .header("provider-config-key", "hubspot")
        .header(
            "connection-id",
            reqwest::header::HeaderValue::from_bytes(b"c\xff").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "invalid_headers", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Connection-Id header is not text"),
        "{body}"
    );

    // New credentials keep the metadata and config they leave out; `null`
    // clears the metadata.
    let import = |extra: Value| {
        let mut b = json!({
            "provider_config_key": "hubspot",
            "connection_id": "demo",
            "access_token": "first",
        });
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let first =
        import(json!({"metadata": {"team": "sales"}, "connection_config": {"portal": "7"}}));
    let (status, body) = dev.send("POST", "/connection", Some(first)).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(import(json!({"access_token": "second"}))),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, conn) = dev
        .send("GET", "/connection/demo?provider_config_key=hubspot", None)
        .await;
    assert_eq!(status, 200, "{conn}");
    assert_eq!(conn["credentials"]["access_token"], "second", "{conn}");
    assert_eq!(conn["metadata"], json!({"team": "sales"}), "{conn}");
    assert_eq!(conn["connection_config"]["portal"], "7", "{conn}");
    let (status, _) = dev
        .send(
            "POST",
            "/connection",
            Some(import(json!({"metadata": null}))),
        )
        .await;
    assert_eq!(status, 201);
    let (_, conn) = dev
        .send("GET", "/connection/demo?provider_config_key=hubspot", None)
        .await;
    assert_eq!(conn["metadata"], Value::Null, "{conn}");
    assert_eq!(conn["connection_config"]["portal"], "7", "{conn}");

    // Path and query parameters that do not parse, and a method a route
    // does not take, answer the error shape too.
    for (method, path, status, code) in [
        (
            "POST",
            "/sluice/deployments/abc/activate",
            400,
            "invalid_uri_params",
        ),
        (
            "GET",
            "/connection/%FF?provider_config_key=hubspot",
            400,
            "invalid_uri_params",
        ),
        (
            "GET",
            "/connection/demo?provider_config_key=hubspot&force_refresh=yes",
            400,
            "invalid_query_params",
        ),
        (
            "GET",
            "/connection/demo?provider_config_key=hubspot&colour=red",
            400,
            "invalid_query_params",
        ),
        ("DELETE", "/health", 405, "method_not_allowed"),
    ] {
        let (got, body) = dev.send(method, path, None).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {body}"
        );
    }

    // A component hash that is not one is the deploy's error, not the
    // store's; an uppercase hash names the same component.
    let (status, body) = dev
        .send(
            "POST",
            "/sluice/deploy",
            Some(json!({"nango_yaml": "", "components": [{"sha256": "xyz", "size": 1, "bundle": false, "scripts": []}]})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_deploy")),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("xyz"),
        "{body}"
    );
    // An integration key that is a path is refused in a new deploy.
    let (status, body) = dev
        .send(
            "POST",
            "/sluice/deploy",
            Some(json!({"nango_yaml": "integrations:\n  '../x':\n    actions:\n      go:\n        output: Out\n        endpoint: GET /x\nmodels:\n  Out:\n    id: string\n", "components": []})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_deploy")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("integration key \"../x\" must match"),
        "{body}"
    );
    let small = b"not a component".to_vec();
    let resp = dev
        .http
        .put(format!(
            "{}/sluice/components/{}",
            dev.base,
            sha256_hex(&small).to_uppercase()
        ))
        .bearer_auth(DEV_KEY)
        .body(small)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    // Bodies past the limits: 413 in the error shape on every route.
    for path in [
        "/webhook/dev/hubspot",
        "/sluice/components/00",
        "/connection",
    ] {
        let resp = dev
            .http
            .request(
                if path.starts_with("/sluice/components") {
                    reqwest::Method::PUT
                } else {
                    reqwest::Method::POST
                },
                format!("{}{path}", dev.base),
            )
            .bearer_auth(DEV_KEY)
            .header("content-type", "application/json")
            .body(vec![b' '; 8192])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (413, Some("payload_too_large")),
            "{path}: {body}"
        );
    }
    // A small gzip body that decompresses past the limit is 413 too, the
    // decompression cut off there (a megabyte of zeros is a kilobyte).
    let bomb = {
        use std::io::Write as _;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![b' '; 1 << 20]).unwrap();
        z.finish().unwrap()
    };
    assert!(bomb.len() < 4096, "{}", bomb.len());
    let resp = dev
        .http
        .post(format!("{}/connection", dev.base))
        .bearer_auth(DEV_KEY)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("once decompressed")),
        "{body}"
    );
    server.stop().await;
}

/// A server with the proxy action deployed and connection `c1`, its
/// retention as `tune` sets it.
async fn with_proxy_action(
    tune: impl FnOnce(&mut ServerConfig),
) -> (MockServer, tempfile::TempDir, Server) {
    let mock = MockServer::start(std::sync::Arc::new(|_: &sluice_tests::MockRequest| {
        sluice_tests::MockResponse::json(200, &json!({"ok": true}))
    }))
    .await
    .unwrap();
    let providers = format!(
        "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: {}\n",
        mock.url()
    );
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.log_retention_every = std::time::Duration::from_millis(50);
    tune(&mut config);
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let dev = Client::new(&server, DEV_KEY);
    deploy_scripts(
        &dev,
        "integrations:\n  mock-int:\n    actions:\n      proxy:\n        endpoint: POST /proxy\n",
        "mock-int",
        &[(guests::ACTION_PROXY, "proxy", ScriptKind::Action)],
    )
    .await;
    dev.integration_and_connection(
        "mock-int",
        "mock",
        json!({"connection_id": "c1", "api_key": "k"}),
    )
    .await;
    (mock, data, server)
}

#[tokio::test]
async fn an_ended_async_action_is_kept_as_long_as_the_logs() {
    let (_mock, _data, server) = with_proxy_action(|config| {
        config.log_retention_age = std::time::Duration::from_secs(1);
    })
    .await;
    let dev = Client::new(&server, DEV_KEY);
    let c1 = ("mock-int", "c1");
    let location = dev
        .trigger_async(c1, "proxy", json!({"endpoint": "/x"}), None)
        .await;
    let (seen, body) = dev.poll_async(c1, &location, |s| s == 404).await;
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    // Answered while kept, gone once older than the logs' retention.
    assert_eq!(seen.last(), Some(&404), "{seen:?}");
    assert!(seen.contains(&200), "{seen:?}");
    // An id that is no UUID is the request's fault, as the original says.
    let (status, body) = dev.send_as(c1, "GET", "/action/not-an-id", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_uri_params")),
        "{body}"
    );
    server.stop().await;
}

/// Ended async actions are kept up to a size per environment, whatever
/// their age: past it the oldest go (their logs stay, under the logs' own
/// bounds); under it they stay.
#[tokio::test]
async fn ended_async_actions_past_their_bound_go_and_under_it_stay() {
    for (bound, kept) in [(1, false), (1 << 30, true)] {
        let (_mock, _data, server) = with_proxy_action(|config| {
            config.finished_retention_bytes = bound;
        })
        .await;
        let dev = Client::new(&server, DEV_KEY);
        let c1 = ("mock-int", "c1");
        let location = dev
            .trigger_async(c1, "proxy", json!({"endpoint": "/x"}), None)
            .await;
        if kept {
            let (_, output) = dev.poll_async(c1, &location, |s| s == 200).await;
            // Several retention passes (a tenth of them prune ended work).
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            let (status, body) = dev.send_as(c1, "GET", &location, None).await;
            assert_eq!((status, &body), (200, &output));
        } else {
            let (seen, body) = dev.poll_async(c1, &location, |s| s == 404).await;
            assert_eq!(body["error"]["code"], "not_found", "{body}");
            assert_eq!(seen.last(), Some(&404), "{seen:?}");
        }
        // The action's execution is still in the logs either way.
        let (status, logs) = dev
            .send(
                "GET",
                "/logs?provider_config_key=mock-int&script=proxy",
                None,
            )
            .await;
        assert_eq!(status, 200, "{logs}");
        let lines = logs["logs"].as_array().map_or(0, Vec::len);
        assert!(lines > 0, "{logs}");
        server.stop().await;
    }
}

/// `sluice dryrun --from-server` as a user runs it (in process).
async fn sluice_cli(args: &[&str]) -> (i32, String, String) {
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

#[tokio::test]
async fn dryrun_takes_the_connection_and_variables_from_a_running_server() {
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let server = start(data.path(), &master, "http://127.0.0.1:9").await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "crm", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(json!({
                "provider_config_key": "crm",
                "connection_id": "remote-only",
                "access_token": "token-held-by-the-server",
                "metadata": {"region": "eu"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send(
            "PUT",
            "/environment-variables",
            Some(json!([{"name": "API_REGION", "value": "eu-west"}])),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // An empty folder: no connections file holds `remote-only`.
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().display().to_string();
    let base = server.url();
    let common = [
        "dryrun",
        guests::ACTION_FEATURES,
        "remote-only",
        "--dir",
        &dir_arg,
        "--cache-dir",
        guests::CACHE_DIR,
        "--json",
        "--input",
        r#"{"set_metadata": null}"#,
    ];
    // The in-process CLI reads the process's environment first: a
    // developer's own key there would be used (and sent to their host).
    let own_key = std::env::var_os("NANGO_SECRET_KEY_DEV").is_some()
        || std::env::var_os("NANGO_HOSTPORT").is_some();
    if own_key {
        eprintln!(
            "NANGO_SECRET_KEY_DEV or NANGO_HOSTPORT is set here: the dry run's fallback to the server is not checked"
        );
    } else {
        let (code, _, err) = sluice_cli(&common).await;
        assert_eq!(code, 2, "without a key or a connections file: {err}");
        assert!(
            err.contains("connections.yaml") && err.contains("NANGO_SECRET_KEY_DEV"),
            "{err}"
        );
        // With the environment's key in the project's .env and no
        // connections file, the connection is the server's, as the
        // original's dry run always reads it.
        std::fs::write(
            dir.path().join(".env"),
            format!("NANGO_SECRET_KEY_DEV={DEV_KEY}\nNANGO_HOSTPORT={base}\n"),
        )
        .unwrap();
        let mut implicit = common.to_vec();
        implicit.extend(["--integration-id", "crm"]);
        // A script that is not there is said first: nothing is asked of
        // the server for it.
        let mut missing = implicit.clone();
        missing[1] = "/no/such/script.wasm";
        let (code, _, err) = sluice_cli(&missing).await;
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("cannot find script `/no/such/script.wasm`") && !err.contains("server"),
            "{err}"
        );
        let (code, out, err) = sluice_cli(&implicit).await;
        assert_eq!(code, 0, "{err}\n{out}");
        assert!(
            err.contains("are read from the server at") && err.contains("environment `dev`"),
            "{err}"
        );
        let result: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            result["output"]["connection"]["credentials"]["access_token"],
            "token-held-by-the-server"
        );
        // Another environment's key in place of dev's reads nothing.
        std::fs::write(
            dir.path().join(".env"),
            format!("NANGO_SECRET_KEY_DEV={PROD_KEY}\nNANGO_HOSTPORT={base}\n"),
        )
        .unwrap();
        let (code, out, err) = sluice_cli(&implicit).await;
        assert_eq!(code, 2, "{err}\n{out}");
        assert!(
            err.contains("is environment `prod`'s, not `dev`'s: nothing was read"),
            "{err}"
        );
    }
    let _ = std::fs::remove_file(dir.path().join(".env"));

    let mut args = common.to_vec();
    args.extend([
        "--from-server",
        "--host",
        &base,
        "--secret-key",
        DEV_KEY,
        "--integration-id",
        "crm",
    ]);
    let (code, out, err) = sluice_cli(&args).await;
    assert_eq!(code, 0, "{err}\n{out}");
    let result: Value = serde_json::from_str(&out).unwrap();
    let output = &result["output"];
    assert_eq!(
        output["connection"]["credentials"]["access_token"], "token-held-by-the-server",
        "{output}"
    );
    assert_eq!(output["before"], json!({"region": "eu"}));
    assert_eq!(output["env"], json!([["API_REGION", "eu-west"]]));

    // Another of the environment's connections is read from the server when
    // the script names it, as the original's dry run asks its server; one
    // the server does not hold is unknown.
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(
                json!({"provider_config_key": "crm", "connection_id": "other-one",
                        "access_token": "the-other-token"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let with_input = |input: &'static str| {
        let mut a = args.clone();
        let at = a
            .iter()
            .position(|x| x.starts_with("{\"set_metadata"))
            .unwrap();
        a[at] = input;
        a
    };
    let (code, out, err) = sluice_cli(&with_input(r#"{"other": ["crm", "other-one"]}"#)).await;
    assert_eq!(code, 0, "{err}\n{out}");
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        result["output"]["other"]["credentials"]["access_token"], "the-other-token",
        "{result}"
    );
    let (code, out, _) = sluice_cli(&with_input(r#"{"other": ["crm", "nobody"]}"#)).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown connection `nobody`"), "{out}");

    // A wrong key and an unknown connection are named, not crashed on.
    let mut wrong = args.clone();
    let at = wrong.iter().position(|a| *a == DEV_KEY).unwrap();
    wrong[at] = "not-the-key";
    let (code, _, err) = sluice_cli(&wrong).await;
    assert_eq!(code, 2);
    assert!(err.contains("HTTP 401"), "{err}");
    let mut unknown = args.clone();
    unknown[2] = "nobody";
    let (code, _, err) = sluice_cli(&unknown).await;
    assert_eq!(code, 2);
    assert!(err.contains("HTTP 404") && err.contains("nobody"), "{err}");
    // Without an integration the server cannot pick the connection.
    let no_integration: Vec<&str> = args[..args.len() - 2].to_vec();
    let (code, _, err) = sluice_cli(&no_integration).await;
    assert_eq!(code, 2);
    assert!(err.contains("--integration-id"), "{err}");
}

/// Uploads a component holding `scripts` (integration, name, kind).
async fn component(c: &Client, path: &str, scripts: &[(&str, &str, ScriptKind)]) -> ComponentEntry {
    let bytes = std::fs::read(path).unwrap();
    let sha = sha256_hex(&bytes);
    let resp = c
        .http
        .put(format!("{}/sluice/components/{sha}", c.base))
        .bearer_auth(&c.key)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    ComponentEntry {
        sha256: sha,
        size: bytes.len() as u64,
        bundle: false,
        scripts: scripts
            .iter()
            .map(|&(integration, name, kind)| ScriptEntry {
                integration: integration.into(),
                name: name.into(),
                kind,
            })
            .collect(),
    }
}

/// An environment's components uploaded and not yet deployed are bounded
/// in bytes: past it an upload is 429 and stored nothing; the same
/// component again takes no more room; a deploy frees what it names; the
/// other environment has its own room.
#[tokio::test]
async fn uploads_not_yet_deployed_are_bounded_per_environment() {
    let data = tempfile::tempdir().unwrap();
    let guest = std::fs::read(guests::ACTION_NOOP).unwrap();
    let size = guest.len();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    // The component, and one and a half blobs of its size.
    config.max_pending_upload_bytes = size * 5 / 2;
    let server = start_with(config, &MasterKey::generate(), "").await;
    let dev = Client::new(&server, DEV_KEY);
    let put = |c: &Client, bytes: Vec<u8>| {
        let request = c
            .http
            .put(format!(
                "{}/sluice/components/{}",
                c.base,
                sha256_hex(&bytes)
            ))
            .bearer_auth(&c.key)
            .body(bytes);
        async move {
            let resp = request.send().await.unwrap();
            let status = resp.status().as_u16();
            (
                status,
                serde_json::from_str::<Value>(&resp.text().await.unwrap()).unwrap(),
            )
        }
    };
    let blob = |n: u8| vec![n; size];
    assert_eq!(put(&dev, guest.clone()).await.0, 200);
    assert_eq!(put(&dev, blob(1)).await.0, 200);
    let (status, body) = put(&dev, blob(2)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_request", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("uploaded and not deployed"), "{message}");
    assert_eq!(
        server.app.store.blob(&sha256_hex(&blob(2))).await.unwrap(),
        None,
        "a refused upload was stored"
    );
    // The same component again: no more room taken.
    assert_eq!(put(&dev, blob(1)).await.0, 200);
    // Prod has room of its own.
    assert_eq!(put(&Client::new(&server, PROD_KEY), blob(2)).await.0, 200);
    // Deploying the component frees its room.
    deploy_scripts(
        &dev,
        "integrations:\n  m:\n    actions:\n      noop:\n        endpoint: POST /noop\n",
        "m",
        &[(guests::ACTION_NOOP, "noop", ScriptKind::Action)],
    )
    .await;
    assert_eq!(put(&dev, blob(2)).await.0, 200);
    server.stop().await;
}

/// Each deployed sync and action: `integration/name` → (runs, version).
async fn deployed_scripts(c: &Client) -> std::collections::BTreeMap<String, (Value, Value)> {
    let (status, config) = c.send("GET", "/scripts/config", None).await;
    assert_eq!(status, 200, "{config}");
    let mut out = std::collections::BTreeMap::new();
    for i in config.as_array().unwrap() {
        for list in ["syncs", "actions"] {
            for s in i[list].as_array().into_iter().flatten() {
                let key = format!(
                    "{}/{}",
                    i["providerConfigKey"].as_str().unwrap(),
                    s["name"].as_str().unwrap()
                );
                out.insert(key, (s["runs"].clone(), s["version"].clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_deploy_of_one_sync_action_or_integration_keeps_the_environments_other_scripts() {
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &master, "").await;
    let dev = Client::new(&server, DEV_KEY);
    let yaml = |runs: &str, b_actions: &[&str]| {
        let mut y = format!(
            "integrations:\n  a:\n    syncs:\n      contacts:\n        runs: {runs}\n        auto_start: false\n        output: Contact\n        endpoint: GET /contacts\n    actions:\n      create-contact:\n        endpoint: POST /contacts\n        output: Contact\n  b:\n    actions:\n"
        );
        for a in b_actions {
            y.push_str(&format!("      {a}:\n        endpoint: POST /{a}\n"));
        }
        y + "models:\n  Contact:\n    id: string\n"
    };
    let manifest = |nango_yaml: String, components: Vec<ComponentEntry>| {
        json!(Manifest {
            nango_yaml,
            nango_json: None,
            dir_name: None,
            components,
            version: None,
            scope: None,
            script_versions: Default::default(),
        })
    };
    let a = [
        component(
            &dev,
            guests::HUBSPOT_RUST_CONTACTS,
            &[("a", "contacts", ScriptKind::Sync)],
        )
        .await,
        component(
            &dev,
            guests::HUBSPOT_RUST_CREATE_CONTACT,
            &[("a", "create-contact", ScriptKind::Action)],
        )
        .await,
    ];
    let b = |names: &'static [&'static str]| {
        let scripts: Vec<(&str, &str, ScriptKind)> = names
            .iter()
            .map(|n| ("b", *n, ScriptKind::Action))
            .collect();
        let dev = &dev;
        async move { component(dev, guests::ACTION_NOOP, &scripts).await }
    };
    let with = |b: ComponentEntry| {
        let mut all = a.to_vec();
        all.push(b);
        all
    };
    let mut first = manifest(yaml("every hour", &["ping"]), with(b(&["ping"]).await));
    first["version"] = json!("1.0.0");
    let (status, body) = dev.send("POST", "/sluice/deploy", Some(first)).await;
    assert_eq!(status, 200, "{body}");

    // `--sync contacts`: the project changed the sync's frequency and
    // added `b/pong`; only the sync is deployed, the rest stays as it was
    // (with the version it was deployed with).
    let mut single = manifest(
        yaml("every 2 hours", &["ping", "pong"]),
        with(b(&["ping", "pong"]).await),
    );
    single["scope"] = json!({"sync": "contacts"});
    let (status, body) = dev
        .send("POST", "/sluice/deploy", Some(single.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2, "{body}");
    let scripts = deployed_scripts(&dev).await;
    assert_eq!(
        scripts.keys().collect::<Vec<_>>(),
        ["a/contacts", "a/create-contact", "b/ping"],
        "{scripts:?}"
    );
    assert_eq!(scripts["a/contacts"].0, "every 2 hours");
    assert_eq!(scripts["a/create-contact"].1, "1.0.0");
    assert_eq!(scripts["b/ping"].1, "1.0.0");

    // `--integration b`: b's scripts are the project's (ping gone, pong
    // new), a's stay.
    let mut whole = manifest(yaml("every 3 hours", &["pong"]), with(b(&["pong"]).await));
    whole["scope"] = json!({"integration": "b"});
    let (status, body) = dev.send("POST", "/sluice/deploy", Some(whole)).await;
    assert_eq!(status, 200, "{body}");
    let scripts = deployed_scripts(&dev).await;
    assert_eq!(
        scripts.keys().collect::<Vec<_>>(),
        ["a/contacts", "a/create-contact", "b/pong"],
        "{scripts:?}"
    );
    assert_eq!(scripts["a/contacts"].0, "every 2 hours");

    // A name the project does not have is refused and changes nothing;
    // so is `--sync` with `--action`.
    for (scope, says) in [
        (
            json!({"action": "nope"}),
            "the project has no action `nope` to deploy",
        ),
        (
            json!({"sync": "contacts", "integration": "b"}),
            "no sync `contacts` of integration `b`",
        ),
        (
            json!({"sync": "contacts", "action": "pong"}),
            "`--sync` or `--action`, not both",
        ),
    ] {
        single["scope"] = scope;
        let (status, body) = dev
            .send("POST", "/sluice/deploy", Some(single.clone()))
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{says}: {body}"
        );
    }
    // The part's own faults are named as a whole deploy's are; a script
    // it does not declare, an empty or misspelt scope are refused.
    let mut broken = single.clone();
    broken["scope"] = json!({"sync": "contacts"});
    for (yaml, says) in [
        ("integrations: [\n".to_string(), "nango.yaml"),
        (
            yaml("every 2 hours", &["pong"]).replace("  a:\n", "  other:\n"),
            "`a/contacts` is not declared in the deploy's nango.yaml",
        ),
    ] {
        broken["nango_yaml"] = json!(yaml);
        let (status, body) = dev
            .send("POST", "/sluice/deploy", Some(broken.clone()))
            .await;
        assert_eq!(status, 400, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(says) && !message.contains("same format"),
            "{says}: {body}"
        );
    }
    for (scope, says) in [
        (json!({}), "names an `integration`, a `sync` or an `action`"),
        (json!({"synk": "contacts"}), "synk"),
    ] {
        broken["scope"] = scope;
        let (status, body) = dev
            .send("POST", "/sluice/deploy", Some(broken.clone()))
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains(says), "{says}: {body}");
    }
    // A model the scripts left as they were use cannot change under
    // them; nor does a scoped deploy take a version a deploy refuses.
    let mut changed = manifest(
        yaml("every 2 hours", &["pong"]).replace("    id: string\n", "    id: number\n"),
        with(b(&["pong"]).await),
    );
    changed["scope"] = json!({"sync": "contacts"});
    let (status, body) = dev
        .send("POST", "/sluice/deploy", Some(changed.clone()))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the model `Contact` of this deploy differs from the deployed one"),
        "{body}"
    );
    let mut versioned = single.clone();
    versioned["scope"] = json!({"sync": "contacts"});
    versioned["version"] = json!(" ");
    let (status, body) = dev.send("POST", "/sluice/deploy", Some(versioned)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is not one a deploy takes"),
        "{body}"
    );
    // A zero-yaml part of a project is not merged into a nango.yaml
    // deployment.
    let (status, body) = dev
        .send(
            "POST",
            "/sluice/deploy",
            Some(json!({
                "nango_yaml": "",
                "nango_json": [{"providerConfigKey": "b", "actions": [{"name": "pong", "endpoint": {"method": "POST", "path": "/pong"}}]}],
                "components": [b(&["pong"]).await],
                "scope": {"action": "pong"},
            })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("in the same format"),
        "{body}"
    );
    let (_, list) = dev.send("GET", "/sluice/deployments", None).await;
    assert_eq!(list["deployments"][0]["version"], 3, "{list}");

    // After a restart the merged deployment loads as any other.
    server.stop().await;
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &master, "").await;
    let dev = Client::new(&server, DEV_KEY);
    let scripts = deployed_scripts(&dev).await;
    assert_eq!(
        scripts.keys().collect::<Vec<_>>(),
        ["a/contacts", "a/create-contact", "b/pong"]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_each_get_their_own_version() {
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), "").await;
    let dev = Client::new(&server, DEV_KEY);
    let yaml = "integrations:\n  m:\n    actions:\n      noop:\n        endpoint: POST /noop\n";
    let scripts = [(guests::ACTION_NOOP, "noop", ScriptKind::Action)];
    deploy_scripts(&dev, yaml, "m", &scripts).await;
    futures_join((0..6).map(|_| deploy_scripts(&dev, yaml, "m", &scripts))).await;
    let (_, list) = dev.send("GET", "/sluice/deployments", None).await;
    let mut versions: Vec<u64> = list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["version"].as_u64().unwrap())
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=7).collect::<Vec<u64>>(), "{list}");
    server.stop().await;
}

/// A `/v1` action endpoint takes its body as the input for every method,
/// as the original's (a DELETE's was ignored); a GET or DELETE without a
/// body takes its query's parameters. A path is matched as declared (a
/// trailing slash too), then without its trailing slash.
#[tokio::test]
async fn a_v1_action_endpoint_takes_the_body_of_a_delete() {
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), "").await;
    let dev = Client::new(&server, DEV_KEY);
    let yaml = "integrations:\n  m:\n    actions:\n      misbehave:\n        endpoint: DELETE /things\n      slashed:\n        endpoint: DELETE /slash/\n";
    let scripts = [
        (guests::ACTION_MISBEHAVE, "misbehave", ScriptKind::Action),
        (guests::ACTION_MISBEHAVE, "slashed", ScriptKind::Action),
    ];
    deploy_scripts(&dev, yaml, "m", &scripts).await;
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "m", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send_as(
            ("m", "c"),
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "m", "connection_id": "c", "access_token": "t"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for (path, input) in [
        ("/v1/things", Some(json!({"mode": "action-error"}))),
        ("/v1/things?mode=action-error", None),
        ("/v1/things/", Some(json!({"mode": "action-error"}))),
        ("/v1/slash/", Some(json!({"mode": "action-error"}))),
    ] {
        let (status, body) = dev.send_as(("m", "c"), "DELETE", path, input).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (500, Some("action_script_runtime_error")),
            "{path}: {body}"
        );
        assert_eq!(body["error"]["payload"]["code"], 402, "{body}");
    }
    let (status, body) = dev.send_as(("m", "c"), "DELETE", "/v1/slash", None).await;
    assert_eq!(
        (status, body),
        (404, json!({"message": "Unknown endpoint 'DELETE /slash'"}))
    );
    let (_, api) = dev.send("GET", "/openapi.json", None).await;
    assert!(api["paths"]["/v1/slash/"]["delete"].is_object(), "{api}");
    server.stop().await;
}

/// A token URL whose host a connection's value chooses
/// (`${connectionConfig.host}`) gets the integration's client secret and
/// the refresh token: a connection cannot point it at the server's own
/// network unless the environment's `allowed_hosts` names the host.
#[tokio::test]
async fn a_connection_cannot_send_the_token_refresh_to_a_private_address() {
    use sluice_tests::{MockRequest, MockResponse};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
        if req.path == "/oauth/token" {
            seen.fetch_add(1, Ordering::SeqCst);
            MockResponse::json(200, &json!({"access_token": "fresh", "expires_in": 3600}))
        } else {
            MockResponse::json(200, &json!({}))
        }
    }))
    .await
    .unwrap();
    let mock_host = mock.url().trim_start_matches("http://").to_string();
    let providers = format!(
        "mock:\n  auth_mode: OAUTH2\n  token_url: http://${{connectionConfig.host}}/oauth/token\n  proxy:\n    base_url: {}\n",
        mock.url()
    );
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config.clone(), &master, &providers).await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "mock-int", "provider": "mock", "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(json!({
                "provider_config_key": "mock-int", "connection_id": "c1",
                "connection_config": {"host": mock_host},
                "access_token": "old", "refresh_token": "rt-1",
                "expires_at": "2020-01-01T00:00:00Z",
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send("GET", "/connection/c1?provider_config_key=mock-int", None)
        .await;
    assert!(
        status >= 400 && body.to_string().contains("not a public address"),
        "{status} {body}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the token URL was called");
    server.stop().await;

    // The operator allows that host: the refresh goes there.
    let mut config = config;
    config.limits.allowed_hosts = vec![mock_host.clone()];
    let server = start_with(config, &master, &providers).await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev
        .send("GET", "/connection/c1?provider_config_key=mock-int", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credentials"]["access_token"], "fresh", "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    server.stop().await;
}

/// `PATCH /connection/metadata` merges; merges that each add a key cannot
/// grow a connection's metadata past what one request could set.
#[tokio::test]
async fn metadata_merges_stop_at_the_request_limit() {
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.max_body_bytes = 4096;
    let server = start_with(
        config,
        &MasterKey::generate(),
        "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: https://api.example.com\n",
    )
    .await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "mock-int", "provider": "mock"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "mock-int", "connection_id": "c1", "api_key": "k"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut refused = None;
    for n in 0..10 {
        let (status, body) = dev
            .send(
                "PATCH",
                "/connection/metadata",
                Some(
                    json!({"provider_config_key": "mock-int", "connection_id": "c1",
                            "metadata": {format!("k{n}"): "x".repeat(1000)}}),
                ),
            )
            .await;
        if status != 200 {
            refused = Some((n, status, body));
            break;
        }
    }
    let Some((n, status, body)) = refused else {
        panic!("every merge was taken");
    };
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    let (status, conn) = dev
        .send("GET", "/connection/c1?provider_config_key=mock-int", None)
        .await;
    assert_eq!(status, 200, "{conn}");
    let metadata = conn["metadata"].as_object().unwrap();
    assert_eq!(metadata.len(), n, "{conn}");
    assert!(!metadata.contains_key(&format!("k{n}")));

    // Several connections at once: one unknown id changes none of them.
    let (status, body) = dev
        .send(
            "PATCH",
            "/connection/metadata",
            Some(
                json!({"provider_config_key": "mock-int", "connection_id": ["c1", "ghost"],
                        "metadata": {"z": 1}}),
            ),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, conn) = dev
        .send("GET", "/connection/c1?provider_config_key=mock-int", None)
        .await;
    assert!(conn["metadata"].get("z").is_none(), "{conn}");
    let (status, body) = dev
        .send(
            "PATCH",
            "/connection/metadata",
            Some(json!({"provider_config_key": "mock-int", "connection_id": [], "metadata": {"z": 1}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // The answer names the connection as it was sent; the legacy
    // `/connection/:id/metadata` replaces (POST) and merges (PATCH) too.
    let (status, body) = dev
        .send(
            "POST",
            "/connection/metadata",
            Some(json!({"provider_config_key": "mock-int", "connection_id": "c1", "metadata": {"a": 1}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["connection_id"], "c1", "{body}");
    let c1 = ("mock-int", "c1");
    let (status, body) = dev
        .send_as(
            c1,
            "PATCH",
            "/connection/c1/metadata",
            Some(json!({"b": 2})),
        )
        .await;
    // Answered with the metadata sent, as the original's.
    assert_eq!((status, &body), (200, &json!({"b": 2})));
    let (_, conn) = dev
        .send("GET", "/connection/c1?provider_config_key=mock-int", None)
        .await;
    assert_eq!(conn["metadata"], json!({"a": 1, "b": 2}), "{conn}");
    let (status, body) = dev
        .send_as(c1, "POST", "/connection/c1/metadata", Some(json!({"c": 3})))
        .await;
    assert_eq!((status, &body), (201, &json!({"c": 3})));
    let (_, conn) = dev
        .send("GET", "/connection/c1?provider_config_key=mock-int", None)
        .await;
    assert_eq!(conn["metadata"], json!({"c": 3}), "{conn}");
    server.stop().await;
}

/// Components are stored once for all environments, but a deploy finds
/// only those its own environment uploaded: another tenant's component is
/// not reachable by its hash, nor is whether it exists.
#[tokio::test]
async fn a_deploy_uses_only_components_its_environment_uploaded() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &MasterKey::generate(), "http://127.0.0.1:1").await;
    let dev = Client::new(&server, DEV_KEY);
    let prod = Client::new(&server, PROD_KEY);
    deploy(&dev).await;

    // The same manifest in prod, without uploading: the components are
    // missing there.
    let bytes = std::fs::read(guests::HUBSPOT_RUST_CONTACTS).unwrap();
    let sha = sha256_hex(&bytes);
    let manifest = Manifest {
        nango_yaml: NANGO_YAML.into(),
        nango_json: None,
        dir_name: None,
        components: vec![ComponentEntry {
            sha256: sha.clone(),
            size: bytes.len() as u64,
            bundle: false,
            scripts: vec![ScriptEntry {
                integration: "hubspot".into(),
                name: "contacts".into(),
                kind: ScriptKind::Sync,
            }],
        }],
        version: None,
        scope: None,
        script_versions: Default::default(),
    };
    let body = serde_json::to_value(&manifest).unwrap();
    let (status, out) = prod.send("POST", "/sluice/deploy", Some(body)).await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"]["code"], "missing_components", "{out}");
    assert_eq!(out["error"]["payload"]["missing"], json!([sha]), "{out}");

    // Uploaded by prod too, it deploys.
    deploy(&prod).await;
    server.stop().await;
}

/// Only the newest deployments (and the active one) are kept for rollback,
/// and a component that no kept deployment uses is deleted. An
/// environment's claim to a component it uploaded goes with its own last
/// deployment naming it, whatever the others use (so it learns nothing of
/// them): a deploy naming it again uploads it again.
#[tokio::test]
async fn old_deployments_and_the_components_only_they_used_are_deleted() {
    // How long an upload no deployment names is kept: the deploy that
    // follows it comes within it.
    const GRACE: std::time::Duration = std::time::Duration::from_secs(2);
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let config = |keep: usize| {
        let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
        config.keep_deployments = keep;
        config.upload_grace = GRACE;
        config
    };
    let server = start_with(config(2), &master, "").await;
    let dev = Client::new(&server, DEV_KEY);
    let prod = Client::new(&server, PROD_KEY);
    let sync = (guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync);
    let create = (
        guests::HUBSPOT_RUST_CREATE_CONTACT,
        "create-contact",
        ScriptKind::Action,
    );
    let noop = (guests::ACTION_NOOP, "noop", ScriptKind::Action);
    let paginate = (guests::ACTION_PAGINATE, "paginate", ScriptKind::Action);
    let sha = |path: &str| sha256_hex(&std::fs::read(path).unwrap());
    let sync_yaml = "integrations:\n  hubspot:\n    syncs:\n      contacts:\n        runs: every hour\n        auto_start: false\n        output: Contact\n        endpoint: GET /contacts\n";
    let models = "models:\n  Contact:\n    id: string\n";
    let with_actions = |actions: &[&str]| {
        let mut yaml = format!("{sync_yaml}    actions:\n");
        for a in actions {
            yaml += &format!("      {a}:\n        endpoint: POST /{a}\n");
        }
        yaml + models
    };
    let versions = |list: &Value| -> Vec<u64> {
        list["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["version"].as_u64().unwrap())
            .collect()
    };

    // prod uses `create-contact`. dev's first version has it and `noop`,
    // its second `paginate`, its third neither.
    let prod_yaml = "integrations:\n  hubspot:\n    actions:\n      create-contact:\n        endpoint: POST /contacts\n        output: Contact\nmodels:\n  Contact:\n    id: string\n";
    deploy_scripts(&prod, prod_yaml, "hubspot", &[create]).await;
    let first_yaml = with_actions(&["create-contact", "noop"]);
    deploy_scripts(&dev, &first_yaml, "hubspot", &[sync, create, noop]).await;
    deploy_scripts(
        &dev,
        &with_actions(&["paginate"]),
        "hubspot",
        &[sync, paginate],
    )
    .await;
    // The third, once the first two's uploads are past the grace.
    tokio::time::sleep(GRACE + std::time::Duration::from_millis(200)).await;
    deploy_scripts(&dev, &(sync_yaml.to_string() + models), "hubspot", &[sync]).await;
    let (_, list) = dev.send("GET", "/sluice/deployments", None).await;
    assert_eq!(versions(&list), [3, 2]);
    let (status, body) = dev
        .send("POST", "/sluice/deployments/1/activate", None)
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");

    // `noop`, which only the deleted version used, is deleted (after the
    // deploy's answer: waited for); `create-contact`, which prod uses,
    // stays, and so does `paginate`, which a kept version uses: rolling
    // back to it works.
    let started = std::time::Instant::now();
    while server
        .app
        .store
        .has_blob(&sha(guests::ACTION_NOOP))
        .await
        .unwrap()
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the unused component was never deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let create_sha = sha(guests::HUBSPOT_RUST_CREATE_CONTACT);
    assert!(server.app.store.has_blob(&create_sha).await.unwrap());
    let (status, body) = dev
        .send("POST", "/sluice/deployments/2/activate", None)
        .await;
    assert_eq!(status, 200, "{body}");

    // The first version's manifest again, without uploading: dev must
    // upload both actions again, `create-contact` too (dev no longer has
    // it; that prod does is none of dev's business).
    let entry = |(path, name, kind): (&str, &str, ScriptKind)| ComponentEntry {
        sha256: sha(path),
        size: std::fs::metadata(path).unwrap().len(),
        bundle: false,
        scripts: vec![ScriptEntry {
            integration: "hubspot".into(),
            name: name.into(),
            kind,
        }],
    };
    let manifest = serde_json::to_value(Manifest {
        nango_yaml: first_yaml.clone(),
        nango_json: None,
        dir_name: None,
        components: vec![entry(sync), entry(create), entry(noop)],
        version: None,
        scope: None,
        script_versions: Default::default(),
    })
    .unwrap();
    let (status, body) = dev.send("POST", "/sluice/deploy", Some(manifest)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "missing_components", "{body}");
    assert_eq!(
        body["error"]["payload"]["missing"],
        json!([create_sha, sha(guests::ACTION_NOOP)]),
        "{body}"
    );

    // Kept three, a fourth version; with version 2 active again, a start
    // that keeps only one deletes version 3 but not the active one.
    server.stop().await;
    let server = start_with(config(3), &master, "").await;
    let dev = Client::new(&server, DEV_KEY);
    deploy_scripts(&dev, &(sync_yaml.to_string() + models), "hubspot", &[sync]).await;
    let (status, body) = dev
        .send("POST", "/sluice/deployments/2/activate", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = dev.send("GET", "/sluice/deployments", None).await;
    assert_eq!(versions(&list), [4, 3, 2]);
    server.stop().await;
    let server = start_with(config(1), &master, "").await;
    let dev = Client::new(&server, DEV_KEY);
    let prod = Client::new(&server, PROD_KEY);
    let started = std::time::Instant::now();
    let list = loop {
        let (_, list) = dev.send("GET", "/sluice/deployments", None).await;
        if versions(&list).len() < 3 || started.elapsed() > std::time::Duration::from_secs(20) {
            break list;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(versions(&list), [4, 2], "{list}");
    assert_eq!(list["deployments"][1]["active"], true, "{list}");
    let (_, list) = prod.send("GET", "/sluice/deployments", None).await;
    assert_eq!(versions(&list), [1]);

    // Uploaded again, the first version's scripts deploy.
    deploy_scripts(&dev, &first_yaml, "hubspot", &[sync, create, noop]).await;
    let (_, list) = dev.send("GET", "/sluice/deployments", None).await;
    assert_eq!(versions(&list), [5], "{list}");
    server.stop().await;
}

/// Clients that hold connections without sending a request are
/// disconnected; a body declared past the limit is refused before it is
/// sent; every route answers a wrong method with the error shape.
#[tokio::test]
async fn slow_or_oversized_clients_do_not_hold_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.header_timeout = std::time::Duration::from_millis(500);
    config.body_idle_timeout = std::time::Duration::from_secs(2);
    config.body_timeout = std::time::Duration::from_secs(4);
    let server = start_with(config, &MasterKey::generate(), "").await;
    let addr = server.addr;
    // What the server sends until it closes the connection (bounded wait).
    let answer = |request: &'static [u8]| async move {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tcp.read_to_end(&mut out),
        )
        .await
        .expect("the server kept the connection open")
        .ok();
        String::from_utf8_lossy(&out).into_owned()
    };
    // Connected, nothing sent; half a header; a body that never comes.
    assert_eq!(answer(b"").await, "");
    let half = answer(b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
    assert!(!half.contains("200"), "{half}");
    let short = answer(
        b"POST /connection HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev-secret-key-0001\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await;
    assert!(short.starts_with("HTTP/1.1 400"), "{short}");
    // A provider's webhook for an environment that does not exist is
    // refused before its body is read (no key guards that route: nothing
    // is held for it).
    let unknown = answer(
        b"POST /webhook/00000000-0000-0000-0000-000000000000/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    assert!(unknown.contains("unknown_environment"), "{unknown}");
    // A body declared past the limit: 413 at once.
    let huge = answer(
        b"POST /connection HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev-secret-key-0001\r\nContent-Type: application/json\r\nContent-Length: 999999999999\r\n\r\n",
    )
    .await;
    assert!(huge.starts_with("HTTP/1.1 413"), "{huge}");
    assert!(huge.contains("payload_too_large"), "{huge}");

    // A body trickled a byte at a time, never pausing long enough for the
    // idle timeout: cut at the body's deadline.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"POST /connection HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev-secret-key-0001\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
    )
    .await
    .unwrap();
    let (mut read, mut write) = tcp.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..1000 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if write.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(20), read.read(&mut out))
        .await
        .expect("a trickled body held the connection past its deadline")
        .unwrap();
    let slow = String::from_utf8_lossy(&out[..n]).into_owned();
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
    assert!(slow.contains("request_timeout"), "{slow}");
    trickle.abort();

    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev.send("GET", "/sluice/components/abc", None).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    server.stop().await;
}

/// An online backup (sled and redb): taken while the server goes on
/// writing, it holds the store at one moment between the writes
/// acknowledged before it and those after; the server keeps serving and
/// writing; the newest `keep` are kept; a server started on one (a redb
/// data directory, given the master key) serves the connection, the
/// records and the deployed sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_is_the_store_at_one_moment_and_serves() {
    for kind in [StoreKind::Sled, StoreKind::Redb] {
        let tmp = tempfile::tempdir().unwrap();
        let (data, backups) = (tmp.path().join("data"), tmp.path().join("backups"));
        let master = MasterKey::generate();
        let fixture =
            Fixture::from_file(&repo_root().join("examples/hubspot-rust/mock-api.yaml")).unwrap();
        let mock = MockServer::start(fixture.handler()).await.unwrap();
        let yaml =
            std::fs::read_to_string(repo_root().join("host/runtime/providers.yaml")).unwrap();
        let providers = yaml.replace("https://api.hubapi.com", &mock.url());
        let mut config = ServerConfig::new(&data, "127.0.0.1:0".parse().unwrap());
        config.store = kind.clone();
        config.backup = Some(sluice_server::backup::BackupConfig {
            dir: backups.clone(),
            every: None,
            keep: 2,
        });
        let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let lines = told.clone();
        config.events =
            sluice_server::EventLog::new(move |line| lines.lock().unwrap().push(line.to_string()));
        let server = start_with(config, &master, &providers).await;
        let c = Client::new(&server, DEV_KEY);
        deploy(&c).await;
        c.integration_and_connection(
            "hubspot",
            "hubspot",
            json!({"connection_id": "demo", "access_token": "demo-access-token"}),
        )
        .await;
        let (status, body) = c
            .send(
                "POST",
                "/sync/trigger",
                Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (_, records) = c.send("GET", "/records?model=Contact", None).await;
        assert!(
            !records["records"].as_array().unwrap().is_empty(),
            "{records}"
        );

        // A writer that goes on all along: REGION = v1, v2, ...
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (acked, stop) = (acked.clone(), stop.clone());
            let c = Client::new(&server, DEV_KEY);
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let (status, body) = c
                        .send(
                            "PUT",
                            "/environment-variables",
                            Some(json!([{"name": "REGION", "value": format!("v{n}")}])),
                        )
                        .await;
                    assert!(status < 300, "{body}");
                    acked.store(n, std::sync::atomic::Ordering::SeqCst);
                }
            })
        };
        while acked.load(std::sync::atomic::Ordering::SeqCst) < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let mut taken = Vec::new();
        for _ in 0..3 {
            let before = acked.load(std::sync::atomic::Ordering::SeqCst);
            let backup = server.back_up().await.unwrap();
            let after = acked.load(std::sync::atomic::Ordering::SeqCst);
            assert!(backup.rows > 0, "{backup:?}");
            taken.push((backup.path, before, after));
            // Writes go on between backups.
            while acked.load(std::sync::atomic::Ordering::SeqCst) < after + 2 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        writer.await.unwrap();
        let told = told.lock().unwrap().clone();
        assert!(
            told.iter()
                .filter(|l| l.contains("backup: the store ("))
                .count()
                == 3,
            "{told:?}"
        );
        assert!(
            told.iter().any(|l| l.contains("1 older removed")),
            "{told:?}"
        );
        let mut kept: Vec<String> = std::fs::read_dir(&backups)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        kept.sort();
        let names: Vec<String> = taken[1..]
            .iter()
            .map(|(p, ..)| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(kept, names, "the two newest are kept");
        server.stop().await;

        // The newest backup, served.
        let (path, before, after) = taken.pop().unwrap();
        let copy = start_on(StoreKind::Redb, &path, &master, &mock.url()).await;
        let c = Client::new(&copy, DEV_KEY);
        let (status, body) = c
            .send("GET", "/connection/demo?provider_config_key=hubspot", None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["credentials"]["access_token"], "demo-access-token",
            "{body}"
        );
        let (_, got) = c.send("GET", "/records?model=Contact", None).await;
        assert_eq!(got, records);
        let (_, variables) = c.send("GET", "/environment-variables", None).await;
        let region = variables[0]["value"].as_str().unwrap();
        let n: u64 = region.trim_start_matches('v').parse().unwrap();
        assert!(
            before <= n && n <= after + 1,
            "{kind:?}: the backup holds write {n}, acknowledged between {before} and {after}"
        );
        let (status, body) = c
            .send(
                "POST",
                "/sync/trigger",
                Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        copy.stop().await;
    }
}

/// `--backup-every`: backups come on their own, the first at once when
/// the folder has none; only the newest `keep` stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_come_on_their_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let backups = tmp.path().join("backups");
    let mut config = ServerConfig::new(tmp.path().join("data"), "127.0.0.1:0".parse().unwrap());
    config.backup = Some(sluice_server::backup::BackupConfig {
        dir: backups.clone(),
        every: Some(std::time::Duration::from_millis(300)),
        keep: 2,
    });
    let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let lines = told.clone();
    config.events =
        sluice_server::EventLog::new(move |line| lines.lock().unwrap().push(line.to_string()));
    let server = start_with(config, &MasterKey::generate(), "").await;
    let t = std::time::Instant::now();
    while told
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("backup: the store ("))
        .count()
        < 3
    {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "{:?}",
            told.lock().unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await;
    // (A backup the stop cut short stays `.partial`, for the next to remove.)
    let kept = std::fs::read_dir(&backups)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        })
        .count();
    assert_eq!(kept, 2, "{:?}", told.lock().unwrap());
}

/// Past `max_connections` a new connection waits, unanswered, until an
/// open one closes (clients cannot take the descriptors scripts' requests
/// and the store need); a websocket (the frontend SDK's) counts as long as
/// it is open; the operator is told.
#[tokio::test]
async fn connections_past_the_bound_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.max_connections = 2;
    let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let lines = told.clone();
    config.events =
        sluice_server::EventLog::new(move |line| lines.lock().unwrap().push(line.to_string()));
    let server = start_with(config, &MasterKey::generate(), "").await;
    let addr = server.addr;
    const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    // Reads one answer's head (the health answer is small).
    async fn head(tcp: &mut tokio::net::TcpStream, within: std::time::Duration) -> Option<String> {
        let mut out = vec![0u8; 4096];
        match tokio::time::timeout(within, tcp.read(&mut out)).await {
            Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&out[..n]).into_owned()),
            Ok(_) => Some(String::new()),
            Err(_) => None,
        }
    }
    let long = std::time::Duration::from_secs(10);
    // A websocket, open, and a client answered once and kept open
    // (keep-alive).
    let (first, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
    second.write_all(HEALTH).await.unwrap();
    let answer = head(&mut second, long).await.expect("an open slot answers");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A third waits: connected (the listen queue), not answered.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    third.write_all(HEALTH).await.unwrap();
    assert_eq!(
        head(&mut third, std::time::Duration::from_secs(1)).await,
        None,
        "a connection past the bound was answered"
    );
    // The ones open still are.
    second.write_all(HEALTH).await.unwrap();
    let answer = head(&mut second, long).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The websocket closes: the third is answered.
    drop(first);
    let answer = head(&mut third, long)
        .await
        .expect("the waiting connection was not taken when one closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let told = told.lock().unwrap().clone();
    assert!(
        told.iter()
            .any(|l| l.contains("all 2 client connections are open")),
        "{told:?}"
    );
    drop((second, third));
    server.stop().await;
}

/// Creating a connection and deleting its integration at once: never both
/// (a connection left without its integration was hidden from listings
/// and came back, old credentials and all, with a new integration of that
/// key). A connection id that is not a string is refused, not replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_never_left_without_its_integration() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &MasterKey::generate(), "http://127.0.0.1:1").await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "ids", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for id in [json!(7), json!(["x"]), json!({"a": 1}), json!(true)] {
        let (status, body) = dev
            .send(
                "POST",
                "/connection",
                Some(
                    json!({"provider_config_key": "ids", "connection_id": id, "access_token": "t"}),
                ),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_body", "{body}");
    }
    // Credentials' fields of the wrong type are refused, naming the field,
    // not dropped (an expiry dropped made the token never expire).
    for (field, value) in [
        ("expires_at", json!(1700000000)),
        // Their UTC year has five digits, or is negative: stored as RFC
        // 3339 they could not be read back (the token never refreshed).
        ("expires_at", json!("9999-12-31T23:59:59-23:59")),
        ("expires_at", json!("0000-01-01T00:00:00+23:59")),
        ("expires_in", json!(400_000_000_000_i64)),
        ("expires_in", json!("3600")),
        ("expires_in", json!(3600.5)),
        ("refresh_token", json!(123)),
        ("raw", json!("text")),
    ] {
        let mut body =
            json!({"provider_config_key": "ids", "connection_id": "typed", "access_token": "t"});
        body[field] = value;
        let (status, body) = dev.send("POST", "/connection", Some(body)).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["error"]["code"], "invalid_body", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{body}"
        );
    }
    let (_, list) = dev.send("GET", "/connection", None).await;
    assert_eq!(list["connections"], json!([]), "{list}");
    for round in 0..100 {
        let key = format!("race-{round}");
        let (status, body) = dev
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": key, "provider": "hubspot"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let create = dev.send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": key, "connection_id": "c", "access_token": "t"})),
        );
        let path = format!("/integrations/{key}");
        let delete = dev.send("DELETE", &path, None);
        let ((created, _), (deleted, _)) = tokio::join!(create, delete);
        assert_eq!(deleted, 200, "round {round}");
        // Deleted with its integration, or refused for want of it.
        let (_, list) = dev
            .send("GET", &format!("/connections?integrationId={key}"), None)
            .await;
        assert_eq!(
            list["connections"],
            json!([]),
            "round {round} (created: {created}): a connection left without its integration"
        );
    }
    server.stop().await;
}

/// Requests for the same new integration at once: one creates it, the
/// others are told the key is taken (they were each told 200 while all but
/// the last one's credentials were lost). An integration's `credentials`
/// and a metadata body's `connection_id` of the wrong shape are refused,
/// naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_integration_is_created_once_and_bodies_of_the_wrong_shape_are_named() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &MasterKey::generate(), "http://127.0.0.1:1").await;
    let dev = Client::new(&server, DEV_KEY);
    for round in 0..5 {
        let key = format!("dup-{round}");
        let answers = futures_join((0..8).map(|i| {
            dev.send(
                "POST",
                "/integrations",
                Some(json!({
                    "unique_key": key,
                    "provider": "hubspot",
                    "credentials": {"type": "OAUTH2", "client_id": format!("client-{i}"), "client_secret": "s"},
                })),
            )
        }))
        .await;
        let created: Vec<usize> = answers
            .iter()
            .enumerate()
            .filter(|(_, (status, _))| *status == 200)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(created.len(), 1, "round {round}: {answers:?}");
        for (status, body) in &answers {
            assert!(
                *status == 200 || body["error"]["errors"][0]["path"] == json!(["uniqueKey"]),
                "{status} {body}"
            );
        }
        // The one told it created the integration has its credentials kept.
        let (_, stored) = dev
            .send(
                "GET",
                &format!("/integrations/{key}?include=credentials"),
                None,
            )
            .await;
        assert_eq!(
            stored["data"]["credentials"]["client_id"],
            format!("client-{}", created[0]),
            "{stored}"
        );
    }
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "arr", "provider": "hubspot", "credentials": ["OAUTH2", "cid", "secret", "s", null]})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`credentials` must be an object, got an array"),
        "{body}"
    );
    assert!(!body.to_string().contains("secret"), "echoed: {body}");
    let (status, _) = dev.send("GET", "/integrations/arr", None).await;
    assert_eq!(status, 404, "an integration was stored");
    for id in [json!(5), json!([1, 2])] {
        let (status, body) = dev
            .send(
                "PATCH",
                "/connection/metadata",
                Some(json!({"provider_config_key": "dup-0", "connection_id": id, "metadata": {}})),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`connection_id` must be a connection id"),
            "{body}"
        );
    }
    // A value of the wrong type or an unknown choice deep in a body is
    // named by where it is.
    for (body, says) in [
        (
            json!({"syncs": ["contacts"], "provider_config_key": "dup-0", "sync_mode": "sideways"}),
            "at `sync_mode`: unknown variant `sideways`",
        ),
        (
            json!({"syncs": ["contacts"], "provider_config_key": "dup-0", "opts": {"reset": "yes"}}),
            "at `opts.reset`: invalid type: string \"yes\", expected a boolean",
        ),
    ] {
        let (status, out) = dev.send("POST", "/sync/trigger", Some(body)).await;
        assert_eq!(
            (status, out["error"]["code"].as_str()),
            (400, Some("invalid_body")),
            "{out}"
        );
        let message = out["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    server.stop().await;
}

/// A first start that cannot listen creates nothing: the next start
/// creates the environments and shows their new keys (they were created,
/// never shown, and lost).
#[tokio::test]
async fn a_first_start_that_cannot_listen_keeps_the_keys_for_the_next() {
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let keys = [("dev".to_string(), None), ("prod".to_string(), None)];
    let config = ServerConfig::new(data.path(), taken.local_addr().unwrap());
    let failed = Server::start(
        config,
        master.clone(),
        ProviderCatalog::builtin().unwrap(),
        &keys,
    )
    .await;
    assert!(
        matches!(failed, Err(sluice_server::ServerError::Listen { .. })),
        "{:?}",
        failed.err().map(|e| e.to_string())
    );
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let (server, created) =
        Server::start(config, master, ProviderCatalog::builtin().unwrap(), &keys)
            .await
            .unwrap();
    let envs: Vec<&str> = created.iter().map(|(env, _)| env.as_str()).collect();
    assert_eq!(envs, ["dev", "prod"]);
    let dev = Client::new(&server, &created[0].1);
    let (status, body) = dev.send("GET", "/connection", None).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

/// A lost or leaked key is replaced at a start (`--new-key dev`): the new
/// key (the one given, or a generated one, shown once) reaches the
/// environment and its data, the old one gets 401; a key given for an
/// environment that has another is not taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environments_secret_key_is_replaced_at_a_start_that_asks_for_it() {
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let server = start(data.path(), &master, "http://127.0.0.1:9").await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "crm", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let signing_secret = |c: Client| async move {
        let (status, body) = c.send("GET", "/sluice/webhook-settings", None).await;
        assert_eq!(status, 200, "{body}");
        body["signing_secret"].as_str().unwrap().to_string()
    };
    // A connect session made with the old key (a reconnect session
    // would overwrite a connection's credentials).
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions",
            Some(json!({"end_user": {"id": "u1"}, "allowed_integrations": ["crm"]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let session_token = body["data"]["token"].as_str().unwrap().to_string();
    let old_signing = signing_secret(dev).await;
    server.stop().await;

    let restart = |new_keys: Vec<String>, dev_key: Option<&str>| {
        let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
        config.new_keys = new_keys;
        let keys = [
            ("dev".to_string(), dev_key.map(str::to_string)),
            ("prod".to_string(), None),
        ];
        let master = master.clone();
        async move {
            Server::start(config, master, ProviderCatalog::builtin().unwrap(), &keys)
                .await
                .unwrap()
        }
    };
    // A new key that is refused (the one the environment has) refuses
    // the start, and ends no session.
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.new_keys = vec!["dev".into()];
    let refused = Server::start(
        config,
        master.clone(),
        ProviderCatalog::builtin().unwrap(),
        &[
            ("dev".to_string(), Some(DEV_KEY.to_string())),
            ("prod".to_string(), None),
        ],
    )
    .await;
    assert!(
        refused.is_err(),
        "a start with the key it has as the new one"
    );
    // A key given without asking for a new one changes nothing.
    let (server, shown) = restart(Vec::new(), Some("not-the-key")).await;
    assert!(shown.is_empty(), "{shown:?}");
    let (status, body) = Client::new(&server, &session_token)
        .send("GET", "/connect/session", None)
        .await;
    assert_eq!(status, 200, "kept while the key is: {body}");
    assert_eq!(
        Client::new(&server, "not-the-key")
            .send("GET", "/integrations", None)
            .await
            .0,
        401
    );
    server.stop().await;

    let (server, shown) = restart(vec!["dev".into()], Some("the-new-dev-key-0003")).await;
    assert_eq!(
        shown,
        [("dev".to_string(), "the-new-dev-key-0003".to_string())]
    );
    let (status, _) = Client::new(&server, DEV_KEY)
        .send("GET", "/integrations", None)
        .await;
    assert_eq!(status, 401, "the old key still works");
    let (status, body) = Client::new(&server, &session_token)
        .send("GET", "/connect/session", None)
        .await;
    assert_eq!(status, 401, "a session of the old key still works: {body}");
    let (status, body) = Client::new(&server, "the-new-dev-key-0003")
        .send("GET", "/integrations/crm", None)
        .await;
    assert_eq!(status, 200, "{body}");
    // The old key could read the webhook signing secret: replaced too.
    let new_signing = signing_secret(Client::new(&server, "the-new-dev-key-0003")).await;
    assert!(new_signing.starts_with("whsec_"), "{new_signing}");
    assert_ne!(new_signing, old_signing);
    server.stop().await;
    let (server, _) = restart(Vec::new(), None).await;
    assert_eq!(
        signing_secret(Client::new(&server, "the-new-dev-key-0003")).await,
        new_signing,
        "a start without --new-key keeps it"
    );
    server.stop().await;

    // Generated when none is given; it holds after another restart.
    let (server, shown) = restart(vec!["dev".into()], None).await;
    let generated = shown[0].1.clone();
    assert_ne!(generated, "the-new-dev-key-0003");
    server.stop().await;
    let (server, _) = restart(Vec::new(), None).await;
    let (status, body) = Client::new(&server, &generated)
        .send("GET", "/integrations/crm", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        Client::new(&server, "the-new-dev-key-0003")
            .send("GET", "/integrations", None)
            .await
            .0,
        401
    );
    server.stop().await;
}

/// Deploys the action `name` (the component `guest`) of integration
/// `mock-int` (provider `mock`) to dev and prod, each with connection
/// `c1`: their clients.
async fn action_in_both_environments(server: &Server, name: &str, guest: &str) -> Vec<Client> {
    let yaml = format!(
        "integrations:\n  mock-int:\n    actions:\n      {name}:\n        endpoint: POST /{name}\n"
    );
    let mut clients = Vec::new();
    for key in [DEV_KEY, PROD_KEY] {
        let c = Client::new(server, key);
        deploy_scripts(&c, &yaml, "mock-int", &[(guest, name, ScriptKind::Action)]).await;
        c.integration_and_connection(
            "mock-int",
            "mock",
            json!({"connection_id": "c1", "api_key": "k"}),
        )
        .await;
        clients.push(c);
    }
    clients
}

/// An environment whose scripts hang holds at most three quarters of the
/// execution permits: another environment's action still runs at once
/// (it waited for the hanging ones, all permits being theirs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_whose_scripts_hang_leaves_the_other_its_share() {
    let mock = MockServer::start(std::sync::Arc::new(|req: &sluice_tests::MockRequest| {
        let answer = sluice_tests::MockResponse::json(200, &json!({"path": req.path}));
        if req.path == "/slow" {
            sluice_tests::MockResponse {
                delay: Some(std::time::Duration::from_secs(60)),
                ..answer
            }
        } else {
            answer
        }
    }))
    .await
    .unwrap();
    let providers = format!(
        "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: {}\n",
        mock.url()
    );
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.max_concurrent_executions = 4;
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let clients = action_in_both_environments(&server, "proxy", guests::ACTION_PROXY).await;
    let (dev, prod) = (&clients[0], &clients[1]);
    let c1 = ("mock-int", "c1");
    // Dev: more hanging actions than there are permits.
    for _ in 0..6 {
        dev.trigger_async(c1, "proxy", json!({"endpoint": "/slow"}), None)
            .await;
    }
    let t = std::time::Instant::now();
    while mock.requests().iter().filter(|r| r.path == "/slow").count() < 3 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "dev's actions never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        mock.requests().iter().filter(|r| r.path == "/slow").count(),
        3,
        "dev held more than its share"
    );
    let started = std::time::Instant::now();
    let (status, body) = prod
        .send_as(
            c1,
            "POST",
            "/action/trigger",
            Some(json!({"action_name": "proxy", "input": {"endpoint": "/fast"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "prod's action waited {:?} for dev's hanging ones",
        started.elapsed()
    );
    server.stop().await;
}

/// An environment's async actions waiting or running are bounded, in
/// number and in the bytes of their inputs: past either, 429
/// `too_many_request` naming the bound, nothing queued; another
/// environment is not held up, and a place frees when an action ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_actions_waiting_are_bounded_per_environment() {
    let mock = MockServer::start(std::sync::Arc::new(|req: &sluice_tests::MockRequest| {
        let answer = sluice_tests::MockResponse::json(200, &json!({"path": req.path}));
        match req.path.as_str() {
            "/slow" => answer.delayed(std::time::Duration::from_secs(60)),
            "/wait" => answer.delayed(std::time::Duration::from_secs(6)),
            _ => answer,
        }
    }))
    .await
    .unwrap();
    let providers = format!(
        "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: {}\n",
        mock.url()
    );
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.max_async_actions = 3;
    config.max_async_action_bytes = 4096;
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let clients = action_in_both_environments(&server, "proxy", guests::ACTION_PROXY).await;
    let (dev, prod) = (&clients[0], &clients[1]);
    let c1 = ("mock-int", "c1");
    let queue = |c: &'static str, input: Value| {
        let client = if c == "dev" { dev } else { prod };
        async move {
            let resp = client
                .http
                .post(format!("{}/action/trigger", client.base))
                .bearer_auth(&client.key)
                .header("connection-id", "c1")
                .header("provider-config-key", "mock-int")
                .header("x-async", "true")
                .header("content-type", "application/json")
                .body(json!({"action_name": "proxy", "input": input}).to_string())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string());
            let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
            (status, location, body)
        }
    };
    // Dev fills its three places: two hang, one ends in a few seconds.
    for endpoint in ["/slow", "/slow", "/wait"] {
        let (status, _, body) = queue("dev", json!({"endpoint": endpoint})).await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, _, refused) = queue("dev", json!({"endpoint": "/fast"})).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["code"], "too_many_request", "{refused}");
    assert_eq!(refused["error"]["payload"]["waiting"], 3, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("environment `dev` has 3 async actions"),
        "{message}"
    );
    // Prod is not held up by dev's queue...
    let (status, location, body) = queue("prod", json!({"endpoint": "/fast"})).await;
    assert_eq!(status, 202, "{body}");
    let (_, done) = prod.poll_async(c1, &location.unwrap(), |s| s == 200).await;
    assert_eq!(done["data"]["path"], "/fast", "{done}");
    // ...and has its own bound on the bytes of inputs: a hanging action
    // holds part of it, and one that would take the queue past it waits
    // for room (429)...
    let (status, _, body) = queue(
        "prod",
        json!({"endpoint": "/slow", "pad": "x".repeat(1500)}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let big = json!({"endpoint": "/fast", "pad": "x".repeat(2500)});
    let (status, _, refused) = queue("prod", big).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(
        refused["error"]["payload"]["max_waiting_bytes"], 4096,
        "{refused}"
    );
    // ...while one no room would ever fit is 413 at once.
    let (status, _, refused) = queue(
        "prod",
        json!({"endpoint": "/fast", "pad": "x".repeat(5000)}),
    )
    .await;
    assert_eq!(status, 413, "{refused}");
    assert_eq!(refused["error"]["code"], "payload_too_large", "{refused}");
    // Counted as the memory it is held in: 200 zeros are 401 bytes of
    // JSON, and far more as values.
    let zeros = json!({"endpoint": "/fast", "pad": vec![0; 200]});
    assert!(zeros.to_string().len() < 1024);
    let (status, _, refused) = queue("prod", zeros).await;
    assert_eq!(status, 413, "{refused}");
    // Once dev's short action has ended, dev may queue one more.
    let t = std::time::Instant::now();
    loop {
        let (status, _, body) = queue("dev", json!({"endpoint": "/fast"})).await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "no place freed when dev's action ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        mock.requests().iter().any(|r| r.path == "/wait"),
        "the short action never ran"
    );
    server.stop().await;
}

/// `getConnection`'s options in a script: `forceRefresh` refreshes a token
/// that has not expired (once per call, as the API's `force_refresh`), and
/// the refresh token is shown only with `refreshToken`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripts_get_connection_refreshes_and_shows_the_refresh_token_when_asked() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let refreshes = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = refreshes.clone();
    let mock = MockServer::start(std::sync::Arc::new(move |req: &sluice_tests::MockRequest| {
        if req.path == "/oauth/token" {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            return sluice_tests::MockResponse::json(
                200,
                &json!({"access_token": format!("fresh-{n}"), "refresh_token": "rt-2", "expires_in": 3600}),
            );
        }
        sluice_tests::MockResponse::json(200, &json!({}))
    }))
    .await
    .unwrap();
    let providers = format!(
        "mock:\n  auth_mode: OAUTH2\n  token_url: {0}/oauth/token\n  proxy:\n    base_url: {0}\n",
        mock.url()
    );
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let dev = Client::new(&server, DEV_KEY);
    let yaml = "integrations:\n  mock-int:\n    actions:\n      features:\n        endpoint: POST /features\n";
    deploy_scripts(
        &dev,
        yaml,
        "mock-int",
        &[(guests::ACTION_FEATURES, "features", ScriptKind::Action)],
    )
    .await;
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "mock-int", "provider": "mock", "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "mock-int", "connection_id": "c1",
                "access_token": "old", "refresh_token": "rt-1", "expires_at": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let refreshed = |force: bool, show: bool| {
        let dev = &dev;
        async move {
            let (status, body) = dev
                .send_as(
                    ("mock-int", "c1"),
                    "POST",
                    "/action/trigger",
                    Some(json!({"action_name": "features", "input": {"refreshed": [force, show]}})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["refreshed"]["credentials"].clone()
        }
    };
    let creds = refreshed(false, false).await;
    assert_eq!(
        (&creds["access_token"], creds.get("refresh_token")),
        (&json!("old"), None),
        "{creds}"
    );
    assert_eq!(refreshes.load(Ordering::SeqCst), 0);
    let creds = refreshed(false, true).await;
    assert_eq!(
        (&creds["access_token"], &creds["refresh_token"]),
        (&json!("old"), &json!("rt-1")),
        "{creds}"
    );
    assert_eq!(refreshes.load(Ordering::SeqCst), 0);
    let creds = refreshed(true, false).await;
    assert_eq!(
        (&creds["access_token"], creds.get("refresh_token")),
        (&json!("fresh-1"), None),
        "{creds}"
    );
    let creds = refreshed(true, true).await;
    assert_eq!(
        (&creds["access_token"], &creds["refresh_token"]),
        (&json!("fresh-2"), &json!("rt-2")),
        "{creds}"
    );
    assert_eq!(refreshes.load(Ordering::SeqCst), 2);
    server.stop().await;
}

/// A lock an action holds keeps other executions of its environment out,
/// not those of another environment, and is free again once the action
/// has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_is_its_environments_and_ends_with_the_action_that_holds_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let open = std::sync::Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let mock = MockServer::start(std::sync::Arc::new(move |_: &sluice_tests::MockRequest| {
        sluice_tests::MockResponse {
            delay: Some(std::time::Duration::from_millis(20)),
            ..sluice_tests::MockResponse::json(200, &json!({"open": gate.load(Ordering::SeqCst)}))
        }
    }))
    .await
    .unwrap();
    let providers = format!(
        "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: {}\n",
        mock.url()
    );
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let clients = action_in_both_environments(&server, "lock", guests::ACTION_LOCK).await;
    let (dev, prod) = (&clients[0], &clients[1]);
    let c1 = ("mock-int", "c1");
    let take = |key: &str| json!({"steps": [{"acquire": key, "ttl_ms": 600_000}]});
    async fn run(c: &Client, input: Value) -> Value {
        let (status, body) = c
            .send_as(
                ("mock-int", "c1"),
                "POST",
                "/action/trigger",
                Some(json!({"action_name": "lock", "input": input})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
    // Dev's holder takes the lock and waits for the gate.
    let holder = dev
        .trigger_async(
            c1,
            "lock",
            json!({"steps": [{"acquire": "ledger", "ttl_ms": 600_000}, {"wait_open": "/gate"}]}),
            None,
        )
        .await;
    let t = std::time::Instant::now();
    while !mock.requests().iter().any(|r| r.path == "/gate") {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "the holder never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(run(dev, take("ledger")).await, json!([false]));
    assert_eq!(run(dev, take("other")).await, json!([true]));
    assert_eq!(
        run(prod, take("ledger")).await,
        json!([true]),
        "another environment's lock of the same name"
    );
    open.store(true, Ordering::SeqCst);
    let (seen, done) = dev.poll_async(c1, &holder, |s| s != 0).await;
    assert_eq!(seen.last(), Some(&200), "{done}");
    assert_eq!(done[0], true, "{done}");
    assert_eq!(run(dev, take("ledger")).await, json!([true]));
    server.stop().await;
}

/// The provider catalogue the server runs with, as the original lists it.
#[tokio::test]
async fn the_provider_catalogue_is_listed() {
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let yaml = std::fs::read_to_string(repo_root().join("host/runtime/providers.yaml"))
        .unwrap()
        .replace("https://api.hubapi.com", "http://127.0.0.1:9");
    let extra = "zeta-ledger:\n    display_name: Acme Books\n    auth_mode: API_KEY\n    proxy:\n        base_url: http://127.0.0.1:9\n";
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &master, &format!("{yaml}\n{extra}")).await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev.send("GET", "/providers", None).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"hubspot") && names.contains(&"github"),
        "{body}"
    );
    let (status, body) = dev.send("GET", "/providers?search=HUB", None).await;
    assert_eq!(status, 200, "{body}");
    let found: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        found.contains(&"hubspot") && found.contains(&"github"),
        "{body}"
    );
    assert!(found.len() < names.len(), "{body}");
    // The search looks at the display name too.
    let (status, body) = dev.send("GET", "/providers?search=acme", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["data"][0]["name"], "zeta-ledger", "{body}");
    assert_eq!(body["data"][0]["display_name"], "Acme Books", "{body}");
    // An integration of it without a name of its own has its provider's.
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "books", "provider": "zeta-ledger"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["display_name"], "Acme Books", "{body}");
    let (status, body) = dev.send("GET", "/providers/hubspot", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "hubspot", "{body}");
    assert_eq!(body["data"]["auth_mode"], "OAUTH2", "{body}");
    assert_eq!(
        body["data"]["proxy"]["base_url"], "http://127.0.0.1:9",
        "{body}"
    );
    for (path, status_code, code) in [
        ("/providers/nope", 404, "not_found"),
        ("/providers?colour=red", 400, "invalid_query_params"),
        ("/providers/github?colour=red", 400, "invalid_query_params"),
    ] {
        let (status, body) = dev.send("GET", path, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (status_code, Some(code)),
            "{path}: {body}"
        );
    }
    let (status, _) = Client::new(&server, "not-a-key")
        .send("GET", "/providers", None)
        .await;
    assert_eq!(status, 401);
}

/// A connection's end user and tags, as the original's API takes, shows
/// and filters them.
#[tokio::test]
async fn connections_keep_their_end_user_and_tags() {
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    // Nothing here reaches an upstream; a provider of basic auth besides.
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(
        config,
        &master,
        "basic-api:\n    auth_mode: BASIC\n    proxy:\n        base_url: http://127.0.0.1:9\n",
    )
    .await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let create = |body: Value| {
        let dev = &dev;
        async move { dev.send("POST", "/connections", Some(body)).await }
    };
    let (status, body) = create(json!({
        "provider_config_key": "hubspot", "connection_id": "a",
        "credentials": {"type": "OAUTH2", "access_token": "t"},
        "end_user": {"id": "u1", "email": "u1@example.com", "tags": {"Plan": "pro"}},
        "tags": {"Team": "core"},
    }))
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["tags"],
        json!({"end_user_id": "u1", "end_user_email": "u1@example.com", "plan": "pro", "team": "core"}),
        "{body}"
    );
    assert_eq!(body["end_user"]["id"], "u1", "{body}");
    assert_eq!(body["end_user"]["display_name"], Value::Null, "{body}");
    let (status, body) = create(json!({
        "provider_config_key": "hubspot", "connection_id": "b", "access_token": "t",
        "tags": {"team": "edge"},
    }))
    .await;
    assert_eq!(status, 201, "{body}");
    // Imported again without them: kept.
    let (status, body) = create(
        json!({"provider_config_key": "hubspot", "connection_id": "a", "access_token": "t2"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["tags"]["team"], "core", "{body}");
    assert_eq!(body["end_user"]["email"], "u1@example.com", "{body}");

    let listed = |query: &'static str| {
        let dev = &dev;
        async move {
            let (status, body) = dev.send("GET", &format!("/connections{query}"), None).await;
            assert_eq!(status, 200, "{query}: {body}");
            let mut ids: Vec<String> = body["connections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["connection_id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(listed("?endUserId=u1").await, ["a"]);
    // `search` finds the end user's email too, as the original's.
    assert_eq!(listed("?search=U1@EXAMPLE").await, ["a"]);
    assert_eq!(listed("?tags[team]=edge").await, ["b"]);
    assert_eq!(listed("?tags[TEAM]=core&tags[plan]=pro").await, ["a"]);
    assert!(listed("?tags[team]=core&tags[plan]=free").await.is_empty());
    assert!(listed("?endUserOrganizationId=o1").await.is_empty());
    let (_, body) = dev.send("GET", "/connections?connectionId=a", None).await;
    assert_eq!(
        body["connections"][0]["end_user"]["tags"],
        json!({"Plan": "pro"}),
        "{body}"
    );

    // PATCH: tags alone replace the tags; an end user makes them again.
    let (status, body) = dev
        .send(
            "PATCH",
            "/connections/b?provider_config_key=hubspot",
            Some(json!({"tags": {"region": "eu"}})),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({"success": true})));
    assert_eq!(listed("?tags[region]=eu").await, ["b"]);
    assert!(listed("?tags[team]=edge").await.is_empty());
    let (status, body) = dev
        .send(
            "PATCH",
            "/connections/b?provider_config_key=hubspot",
            Some(json!({"end_user": {"id": "u2"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = dev
        .send("GET", "/connections/b?provider_config_key=hubspot", None)
        .await;
    assert_eq!(body["tags"], json!({"end_user_id": "u2"}), "{body}");
    assert_eq!(body["credentials"]["access_token"], "t", "{body}");

    // Refused, naming the problem, and nothing changed.
    for (method, path, bad, code) in [
        (
            "POST",
            "/connections",
            json!({"provider_config_key": "hubspot", "connection_id": "c", "access_token": "t", "tags": {"9lives": "x"}}),
            "invalid_body",
        ),
        (
            "POST",
            "/connections",
            json!({"provider_config_key": "hubspot", "connection_id": "c", "access_token": "t", "end_user": {"email": "x@example.com"}}),
            "invalid_body",
        ),
        (
            "PATCH",
            "/connections/b?provider_config_key=hubspot",
            json!({"tags": {"a": "x", "A": "y"}}),
            "invalid_body",
        ),
        (
            "PATCH",
            "/connections/b?provider_config_key=hubspot",
            json!({"webhook_url_override": "mailto:hooks@example.com"}),
            "invalid_body",
        ),
        (
            "PATCH",
            "/connections/b?provider_config_key=hubspot",
            json!({"metadata": {}}),
            "invalid_body",
        ),
        (
            "PATCH",
            "/connections/b",
            json!({"tags": {}}),
            "missing_provider_config_key",
        ),
        (
            "PATCH",
            "/connections/b?provider_config_key=hubspot&colour=red",
            json!({"tags": {}}),
            "invalid_query_params",
        ),
        (
            "PATCH",
            "/connections/b?provider_config_key=hubspot",
            json!({"tags": null}),
            "invalid_body",
        ),
        (
            "PATCH",
            "/connections/b?provider_config_key=nope",
            json!({"tags": {}}),
            "unknown_provider_config",
        ),
        (
            "PATCH",
            "/connections/zz?provider_config_key=hubspot",
            json!({"tags": {}}),
            "not_found",
        ),
    ] {
        let (status, body) = dev.send(method, path, Some(bad.clone())).await;
        assert!(status >= 400, "{bad}: {status} {body}");
        assert_eq!(body["error"]["code"], code, "{bad}: {body}");
    }
    let (_, body) = dev
        .send("GET", "/connections/b?provider_config_key=hubspot", None)
        .await;
    assert_eq!(body["tags"], json!({"end_user_id": "u2"}), "{body}");
    assert!(listed("?connectionId=c").await.is_empty());
    // An import naming no integration, or one this environment lacks, is
    // refused the way each route's original refuses it.
    for (path, body, expected) in [
        (
            "/connection",
            json!({"connection_id": "c", "access_token": "t"}),
            (400, "missing_provider_config"),
        ),
        (
            "/connection",
            json!({"provider_config_key": "nope", "connection_id": "c", "access_token": "t"}),
            (400, "unknown_provider_config"),
        ),
        (
            "/connections",
            json!({"connection_id": "c", "access_token": "t"}),
            (400, "invalid_body"),
        ),
        (
            "/connections",
            json!({"provider_config_key": "nope", "connection_id": "c", "access_token": "t"}),
            (404, "not_found"),
        ),
    ] {
        let (status, out) = dev.send("POST", path, Some(body.clone())).await;
        assert_eq!(
            (status, out["error"]["code"].as_str().unwrap_or_default()),
            expected,
            "{path} {body}: {out}"
        );
    }
    assert!(listed("?connectionId=c").await.is_empty());
    // Credentials the integration's provider does not take (hubspot is
    // OAuth 2), of a type that does not exist, with an empty token or a
    // field no import has, are refused by name, and the connection is
    // left as it was (an import of `NONE` emptied its credentials).
    let (_, before) = dev
        .send("GET", "/connections/b?provider_config_key=hubspot", None)
        .await;
    for (credentials, names) in [
        (
            json!({"credentials": {"type": "BOGUS"}}),
            "`BOGUS` is not a credential type",
        ),
        (
            json!({"credentials": {"type": "NONE"}}),
            "Provider OAUTH2 does not support NONE auth",
        ),
        (
            json!({"credentials": {"type": "API_KEY", "apiKey": "k"}}),
            "Provider OAUTH2 does not support API_KEY auth",
        ),
        (
            json!({"credentials": {"type": "OAUTH2", "access_token": ""}}),
            "non-empty string `access_token`",
        ),
        (
            json!({"credentials": {"type": "OAUTH2", "access_token": "t", "colour": "red"}}),
            "`credentials.colour`",
        ),
        (json!({"acces_token": "t"}), "unknown field `acces_token`"),
    ] {
        let mut body = credentials.clone();
        body["provider_config_key"] = json!("hubspot");
        body["connection_id"] = json!("b");
        let (status, out) = dev.send("POST", "/connections", Some(body)).await;
        assert_eq!(status, 400, "{credentials}: {out}");
        assert!(
            out["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(names),
            "{credentials}: {out}"
        );
        // A validation error lists its problem as the original's do.
        if out["error"]["code"] == "invalid_body" {
            assert_eq!(
                out["error"]["errors"],
                json!([{"code": "custom", "message": out["error"]["message"], "path": []}]),
                "{out}"
            );
        }
    }
    let (_, after) = dev
        .send("GET", "/connections/b?provider_config_key=hubspot", None)
        .await;
    assert_eq!(after["credentials"], before["credentials"]);
    assert_eq!(after["credentials"]["type"], "OAUTH2", "{after}");
    // A credentials object needs its type there; basic auth may have an
    // empty username, as the original's public import takes it.
    let (status, out) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "hubspot", "connection_id": "b", "credentials": {"access_token": "t", "colour": "red"}})),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`credentials.type` is required"),
        "{out}"
    );
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "basic", "provider": "basic-api"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, out) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "basic", "connection_id": "k", "credentials": {"type": "BASIC", "username": "", "password": "key"}})),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(
        (
            &out["credentials"]["username"],
            &out["credentials"]["password"]
        ),
        (&json!(""), &json!("key")),
        "{out}"
    );
    // A filter on what cannot be a tag is refused too.
    let (status, body) = dev.send("GET", "/connections?tags[9a]=x", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_query_params")),
        "{body}"
    );
}

/// What `@nangohq/node` sends (checked against its 0.71 source): the
/// records at `/records/?…`, connections at `/connections…` with the
/// original's list filters, `syncs: []` for "every sync", and a sync
/// status that leaves out what it does not know.
#[tokio::test]
async fn the_official_clients_requests_are_answered_as_the_original_answers_them() {
    let fixture =
        Fixture::from_file(&repo_root().join("examples/hubspot-rust/mock-api.yaml")).unwrap();
    let mock = MockServer::start(fixture.handler()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let server = start(data.path(), &master, &mock.url()).await;
    let dev = Client::new(&server, DEV_KEY);
    deploy(&dev).await;
    for key in ["hubspot", "hubspot-eu"] {
        let (status, body) = dev
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": key, "provider": "hubspot"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for (pck, cid) in [
        ("hubspot", "Demo-1"),
        ("hubspot", "other"),
        ("hubspot-eu", "eu"),
    ] {
        let (status, body) = dev
            .send(
                "POST",
                "/connections",
                Some(json!({"provider_config_key": pck, "connection_id": cid, "access_token": "demo-access-token"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        // Created in this order, listed newest first.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let c = ("hubspot", "Demo-1");

    // `syncs: []` is every sync of the connection.
    let (status, body) = dev
        .send_as(
            c,
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": [], "provider_config_key": "hubspot", "connection_id": "Demo-1", "wait": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"][0]["success"], true, "{body}");
    assert_eq!(body["runs"][0]["results"]["Contact"]["added"], 5, "{body}");
    // On a connection without syncs (nothing deployed for its
    // integration) it is nothing to do; for every connection, an error.
    let (status, body) = dev
        .send_as(
            ("hubspot-eu", "eu"),
            "POST",
            "/sync/pause",
            Some(json!({"syncs": [], "provider_config_key": "hubspot-eu", "connection_id": "eu"})),
        )
        .await;
    assert_eq!((status, &body["success"]), (200, &json!(true)), "{body}");
    let resp = dev
        .http
        .post(format!("{}/sync/pause", dev.base))
        .bearer_auth(&dev.key)
        .header("content-type", "application/json")
        .body(json!({"syncs": [], "provider_config_key": "hubspot-eu"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "no_syncs_found", "{body}");

    // A variant no connection has, named for every connection (no
    // connection header): nothing to run, refused as the original's.
    let resp = dev
        .http
        .post(format!("{}/sync/trigger", dev.base))
        .bearer_auth(&dev.key)
        .header("content-type", "application/json")
        .body(json!({"syncs": ["contacts::nope"], "provider_config_key": "hubspot"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "no_syncs_found", "{body}");

    // A misspelt `X-Async` is refused, not run synchronously.
    let resp = dev
        .http
        .post(format!("{}/action/trigger", dev.base))
        .bearer_auth(&dev.key)
        .header("connection-id", "Demo-1")
        .header("provider-config-key", "hubspot")
        .header("x-async", "ture")
        .header("content-type", "application/json")
        .body(json!({"action_name": "create-contact", "input": {}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "invalid_headers", "{body}");

    // `/records/` is `/records`.
    let (status, with_slash) = dev
        .send_as(c, "GET", "/records/?model=Contact&limit=3", None)
        .await;
    assert_eq!(status, 200, "{with_slash}");
    let (_, without) = dev
        .send_as(c, "GET", "/records?model=Contact&limit=3", None)
        .await;
    assert_eq!(with_slash, without);
    assert_eq!(with_slash["records"].as_array().unwrap().len(), 3);

    // The sync status leaves out a sync it does not know.
    let (status, body) = dev
        .send_as(
            c,
            "GET",
            "/sync/status?provider_config_key=hubspot&syncs=nope,contacts&connection_id=Demo-1",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["syncs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["contacts"], "{body}");
    // With its checkpoint (none here), and the original's answers for an
    // integration or connection the environment does not have.
    assert_eq!(body["syncs"][0]["checkpoint"], Value::Null, "{body}");
    assert!(body["syncs"][0].get("checkpoint").is_some(), "{body}");
    let (status, body) = dev
        .send("GET", "/sync/status?provider_config_key=nope&syncs=*", None)
        .await;
    assert_eq!((status, &body), (200, &json!({"syncs": []})));
    for pck in ["hubspot", "nope"] {
        let (status, body) = dev
            .send(
                "GET",
                &format!("/sync/status?provider_config_key={pck}&syncs=*&connection_id=zz"),
                None,
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_body")),
            "{body}"
        );
    }
    // The connection is looked up before the syncs.
    let (status, body) = dev
        .send(
            "POST",
            "/sync/trigger",
            Some(
                json!({"syncs": ["nope"], "provider_config_key": "hubspot", "connection_id": "zz"}),
            ),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_connection")),
        "{body}"
    );
    for (syncs, code) in [
        (json!(["nope"]), "no_syncs_found"),
        (json!(["contacts"]), "unknown_provider_config"),
    ] {
        let pck = if code == "no_syncs_found" {
            "hubspot"
        } else {
            "nope"
        };
        let (status, body) = dev
            .send(
                "POST",
                "/sync/trigger",
                Some(
                    json!({"syncs": syncs, "provider_config_key": pck, "connection_id": "Demo-1"}),
                ),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    let (status, body) = dev
        .send(
            "PUT",
            "/sync/update-connection-frequency",
            Some(json!({"sync_name": "nope", "provider_config_key": "hubspot", "connection_id": "Demo-1", "frequency": "every hour"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_sync")),
        "{body}"
    );
    // An endpoint no script declares: the original's bare message.
    let (status, body) = dev.send_as(c, "GET", "/v1/nope", None).await;
    assert_eq!(
        (status, body),
        (404, json!({"message": "Unknown endpoint 'GET /nope'"}))
    );
    // The connection is looked up first, as the original's.
    let (status, body) = dev
        .send_as(("hubspot", "nobody"), "GET", "/v1/nope", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_connection")),
        "{body}"
    );
    // Sync control routes take no query, as the original's.
    let (status, body) = dev
        .send(
            "POST",
            "/sync/trigger?x=1",
            Some(json!({"provider_config_key": "hubspot", "syncs": ["contacts"]})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_query_params")),
        "{body}"
    );
    // A frequency is checked before what it names is looked up.
    let (status, body) = dev
        .send(
            "PUT",
            "/sync/update-connection-frequency",
            Some(json!({"sync_name": "nope", "provider_config_key": "hubspot", "connection_id": "nobody", "frequency": "every blue moon"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_body")),
        "{body}"
    );
    // Integrations: an unknown key is `not_found`, a taken one names the
    // field as the original's does.
    let (status, body) = dev.send("GET", "/integrations/nope", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_body")),
        "{body}"
    );
    assert_eq!(
        body["error"]["errors"][0]["path"],
        json!(["uniqueKey"]),
        "{body}"
    );
    let (status, body) = dev
        .send(
            "DELETE",
            "/connections/zz?provider_config_key=hubspot",
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_connection")),
        "{body}"
    );

    // The list and its filters.
    let listed = |query: &'static str| {
        let dev = &dev;
        async move {
            let (status, body) = dev.send("GET", &format!("/connections{query}"), None).await;
            assert_eq!(status, 200, "{query}: {body}");
            body["connections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["connection_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("").await, ["eu", "other", "Demo-1"]);
    assert_eq!(listed("/").await, ["eu", "other", "Demo-1"]);
    assert_eq!(listed("?connectionId=other").await, ["other"]);
    assert_eq!(listed("?integrationId=hubspot-eu").await, ["eu"]);
    assert_eq!(
        listed("?integrationId=hubspot,hubspot-eu").await,
        ["eu", "other", "Demo-1"]
    );
    assert_eq!(listed("?search=demo").await, ["Demo-1"]);
    assert_eq!(listed("?limit=2").await, ["eu", "other"]);
    assert_eq!(listed("?limit=2&page=1").await, ["Demo-1"]);
    assert!(listed("?endUserId=u1").await.is_empty());
    let (_, body) = dev.send("GET", "/connections?connectionId=eu", None).await;
    let item = &body["connections"][0];
    assert_eq!(
        (&item["errors"], &item["end_user"], &item["tags"]),
        (&json!([]), &Value::Null, &json!({})),
        "{body}"
    );
    assert!(item["created"].as_str().unwrap().ends_with('Z'), "{body}");
    for bad in ["?colour=red", "?limit=0", "?limit=2001", "?page=-1"] {
        let (status, body) = dev.send("GET", &format!("/connections{bad}"), None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_query_params")),
            "{bad}: {body}"
        );
    }

    // One connection, its metadata, its deletion.
    let (status, body) = dev
        .send(
            "GET",
            "/connections/Demo-1?provider_config_key=hubspot",
            None,
        )
        .await;
    assert_eq!(
        (status, body["connection_id"].as_str()),
        (200, Some("Demo-1")),
        "{body}"
    );
    let (status, body) = dev
        .send(
            "PATCH",
            "/connections/metadata",
            Some(json!({"connection_id": "Demo-1", "provider_config_key": "hubspot", "metadata": {"team": "a"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = dev
        .send(
            "GET",
            "/connections/Demo-1?provider_config_key=hubspot",
            None,
        )
        .await;
    assert_eq!(body["metadata"], json!({"team": "a"}), "{body}");
    let (status, body) = dev
        .send(
            "DELETE",
            "/connections/other?provider_config_key=hubspot",
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    assert_eq!(listed("?integrationId=hubspot").await, ["Demo-1"]);

    // The deployed scripts, as the original's getScriptsConfig lists them.
    let (status, body) = dev.send("GET", "/scripts/config", None).await;
    assert_eq!(status, 200, "{body}");
    let all = body.as_array().unwrap();
    assert_eq!(all.len(), 1, "only the deployed integration: {body}");
    assert_eq!(
        (&all[0]["providerConfigKey"], &all[0]["provider"]),
        (&json!("hubspot"), &json!("hubspot"))
    );
    let sync = &all[0]["syncs"][0];
    assert_eq!(
        (
            &sync["name"],
            &sync["type"],
            &sync["runs"],
            &sync["returns"]
        ),
        (
            &json!("contacts"),
            &json!("sync"),
            &json!("every hour"),
            &json!(["Contact"])
        ),
        "{body}"
    );
    assert!(
        sync["json_schema"]["definitions"]["Contact"].is_object(),
        "{body}"
    );
    // Each model's fields, from nango.yaml (they were listed empty).
    assert_eq!(
        sync["models"],
        json!([{"name": "Contact", "fields": [{"name": "id", "type": "string"}]}]),
        "{body}"
    );
    assert_eq!(all[0]["actions"][0]["name"], "create-contact", "{body}");
    let (status, body) = dev.send("GET", "/scripts/config?format=openai", None).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["contacts", "create-contact"], "{body}");
    // Any other format is the original's shape, as the original reads it.
    let (status, body) = dev.send("GET", "/scripts/config?format=yaml", None).await;
    assert_eq!(
        (status, body[0]["providerConfigKey"].as_str()),
        (200, Some("hubspot")),
        "{body}"
    );

    // An integration is deleted with its connections, as the original's.
    let (status, body) = dev.send("DELETE", "/integrations/hubspot-eu", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(listed("?integrationId=hubspot-eu").await.is_empty());
    let (status, _) = dev.send("GET", "/integrations/hubspot-eu", None).await;
    assert_eq!(status, 404);
    assert_eq!(listed("").await, ["Demo-1"]);
    server.stop().await;
}

/// Sends `request` on a raw connection, then `close`s: shuts the writing
/// side (the request is whole, the client waits) and reads what comes, or
/// drops the connection at once (a client that timed out).
async fn raw_request(server: &Server, request: String, close: bool) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    if close {
        drop(tcp);
        return String::new();
    }
    tcp.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tcp.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A client that gives up on a request (its connection closed right after
/// sending it) does not cut the request short: a DELETE of an integration
/// with 200 connections deletes them all (it had left some, and the
/// integration, behind). And a client that shuts its side after sending
/// (`nc -N`) gets its answer (it got none, though its write landed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_runs_to_its_end_when_its_client_goes_away() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &MasterKey::generate(), "http://127.0.0.1:9").await;
    let dev = Client::new(&server, DEV_KEY);

    let body = r#"{"unique_key":"half","provider":"hubspot"}"#;
    let answer = raw_request(
        &server,
        format!(
            "POST /integrations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {DEV_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        false,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains(r#""unique_key":"half""#), "{answer}");

    let (status, out) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "crm", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    for i in 0..200 {
        let (status, out) = dev
            .send(
                "POST",
                "/connection",
                Some(json!({"provider_config_key": "crm", "connection_id": format!("c{i}"), "access_token": "t"})),
            )
            .await;
        assert_eq!(status, 201, "{out}");
    }
    raw_request(
        &server,
        format!("DELETE /integrations/crm HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {DEV_KEY}\r\n\r\n"),
        true,
    )
    .await;
    let t = std::time::Instant::now();
    loop {
        let (status, _) = dev.send("GET", "/integrations/crm", None).await;
        if status == 404 {
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "the integration is still there"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, list) = dev.send("GET", "/connection?integrationId=crm", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["connections"], json!([]), "connections left behind");
    server.stop().await;
}

/// `sluice copy-store`: a stopped server's sled store copied into a new
/// redb data directory (its master key file with it), then onto
/// PostgreSQL when `SLUICE_TEST_POSTGRES` names a server: each copy's
/// server has the same environments, keys, deployment, integration,
/// connection (credentials sealed under the same master key), variables
/// and synced records. A destination that holds a store, a source that
/// holds none, and a spec that names no store are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_store_moves_a_stopped_servers_store() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o700)).unwrap();
    let master = MasterKey::generate();
    std::fs::write(a.join("master.key"), master.to_base64()).unwrap();
    std::fs::set_permissions(a.join("master.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let fixture =
        Fixture::from_file(&repo_root().join("examples/hubspot-rust/mock-api.yaml")).unwrap();
    let mock = MockServer::start(fixture.handler()).await.unwrap();
    let server = start(&a, &master, &mock.url()).await;
    let c = Client::new(&server, DEV_KEY);
    deploy(&c).await;
    c.send(
        "POST",
        "/integrations",
        Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
    )
    .await;
    let (status, body) = c
        .send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "hubspot", "connection_id": "demo", "access_token": "demo-access-token"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = c
        .send(
            "PUT",
            "/environment-variables",
            Some(json!([{"name": "REGION", "value": "eu"}])),
        )
        .await;
    assert!(status < 300, "{body}");
    let (status, body) = c
        .send(
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"][0]["results"]["Contact"]["added"], 5, "{body}");
    let (_, records) = c.send("GET", "/records?model=Contact", None).await;
    assert!(
        !records["records"].as_array().unwrap().is_empty(),
        "{records}"
    );
    server.stop().await;

    let same = |server: &Server| {
        let c = Client::new(server, DEV_KEY);
        let records = records.clone();
        async move {
            let (status, body) = c
                .send("GET", "/connection/demo?provider_config_key=hubspot", None)
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                body["credentials"]["access_token"], "demo-access-token",
                "{body}"
            );
            let (_, variables) = c.send("GET", "/environment-variables", None).await;
            assert_eq!(variables, json!([{"name": "REGION", "value": "eu"}]));
            let (_, got) = c.send("GET", "/records?model=Contact", None).await;
            assert_eq!(got, records);
            // The deployment came along: the sync runs on the copy.
            let (status, body) = c
                .send(
                    "POST",
                    "/sync/trigger",
                    Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };

    let from = format!("sled:{}", a.display());
    let to = format!("redb:{}", b.display());
    let (code, out, err) = sluice_cli(&["copy-store", "--from", &from, "--to", &to]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Copied ") && out.contains("opens with the source's master key"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(b.join("master.key"))
            .unwrap()
            .trim(),
        master.to_base64()
    );
    let copy = start_on(StoreKind::Redb, &b, &master, &mock.url()).await;
    same(&copy).await;
    copy.stop().await;

    // Refused: a destination holding a store, a source holding none, a
    // spec naming none.
    let (code, _, err) = sluice_cli(&["copy-store", "--from", &from, "--to", &to]).await;
    assert_ne!(code, 0);
    assert!(err.contains("already holds a redb store"), "{err}");
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("master.key"), MasterKey::generate().to_base64()).unwrap();
    let (code, _, err) = sluice_cli(&[
        "copy-store",
        "--from",
        &from,
        "--to",
        &format!("redb:{}", other.display()),
    ])
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("holds another master key"), "{err}");
    assert!(!other.join("store.redb").exists());
    let nothing = format!("sled:{}", tmp.path().join("none").display());
    let (code, _, err) =
        sluice_cli(&["copy-store", "--from", &nothing, "--to", "redb:/tmp/x"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("holds no sled store"), "{err}");
    let (code, _, err) = sluice_cli(&["copy-store", "--from", "mysql://h/db", "--to", &to]).await;
    assert_ne!(code, 0);
    assert!(err.contains("a store is given as"), "{err}");

    let Some(url) = sluice_tests::postgres_schema().await else {
        return;
    };
    let (code, out, err) = sluice_cli(&["copy-store", "--from", &to, "--to", &url]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains(":sluice@"), "the password was printed: {out}");
    let pg = tmp.path().join("pg");
    let copy = start_on(StoreKind::Postgres(url), &pg, &master, &mock.url()).await;
    same(&copy).await;
    copy.stop().await;
}
