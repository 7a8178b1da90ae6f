//! End to end against a real `sluice serve` on 127.0.0.1:0 with a sled data
//! directory, the bundled HubSpot example deployed and its recorded API
//! as the upstream.

use std::path::Path;

use serde_json::{Value, json};
use sluice_project::deploy::{ComponentEntry, Manifest, ScriptEntry, sha256_hex};
use sluice_runtime::ScriptKind;
use sluice_runtime::providers::ProviderCatalog;
use sluice_server::{Server, ServerConfig};
use sluice_store::MasterKey;
use sluice_tests::{Fixture, MockServer, guests, repo_root};

const DEV_KEY: &str = "dev-secret-key-0001";
const PROD_KEY: &str = "prod-secret-key-0002";

const NANGO_YAML: &str = "
integrations:
  hubspot:
    syncs:
      contacts:
        runs: every hour
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
    let mut providers = ProviderCatalog::builtin().unwrap();
    let yaml = std::fs::read_to_string(repo_root().join("host/runtime/providers.yaml")).unwrap();
    let hubspot = yaml.replace("https://api.hubapi.com", upstream);
    providers.extend(ProviderCatalog::from_yaml(&hubspot, "test").unwrap());
    let config = ServerConfig::new(data, "127.0.0.1:0".parse().unwrap());
    let keys = [
        ("dev".to_string(), Some(DEV_KEY.to_string())),
        ("prod".to_string(), Some(PROD_KEY.to_string())),
    ];
    let (server, _created) = Server::start(config, master.clone(), providers, &keys)
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    server
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    fn new(server: &Server, key: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: server.url(),
            key: key.to_string(),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("connection-id", "demo")
            .header("provider-config-key", "hubspot");
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

async fn deploy(c: &Client) {
    let mut components = Vec::new();
    for (path, name, kind) in [
        (guests::HUBSPOT_RUST_CONTACTS, "contacts", ScriptKind::Sync),
        (
            guests::HUBSPOT_RUST_CREATE_CONTACT,
            "create-contact",
            ScriptKind::Action,
        ),
    ] {
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
                integration: "hubspot".into(),
                name: name.into(),
                kind,
            }],
        });
    }
    let manifest = Manifest {
        nango_yaml: NANGO_YAML.into(),
        dir_name: None,
        components,
    };
    let (status, body) = c
        .send(
            "POST",
            "/sluice/deploy",
            Some(serde_json::to_value(&manifest).unwrap()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);
}

#[tokio::test]
async fn deploy_connect_sync_read_act_isolate_and_restart() {
    let fixture =
        Fixture::from_file(&repo_root().join("examples/hubspot-rust/mock-api.yaml")).unwrap();
    let mock = MockServer::start(fixture.handler()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let server = start(data.path(), &master, &mock.url()).await;
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
    assert_eq!(status, 200, "{body}");

    // A sync run saves every contact of the recorded API.
    let (status, body) = dev
        .send(
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo"})),
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
    assert_eq!(status, 404);

    // After a restart everything is still there, and the credentials are
    // nowhere in the data directory's files.
    server.stop().await;
    let server = start(data.path(), &master, &mock.url()).await;
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
