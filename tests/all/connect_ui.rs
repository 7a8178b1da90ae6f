//! sluice's Connect UI against a real `sluice serve`: the page, its
//! headers, the session's link to it, the reads it makes with a session's
//! token, and the page's own script (as served) driven in Node
//! (`tests/connect-ui/drive.mjs`): each integration's form from its
//! provider, the checks on what a user typed, and the requests that
//! connect, which the server then holds.

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer};

use crate::server::{Client, DEV_KEY, PROD_KEY, start_with};

fn providers_yaml(mock: &str) -> String {
    format!(
        "uikey:\n  display_name: UI Key\n  auth_mode: API_KEY\n  docs_connect: https://docs.example.test/uikey\n  proxy:\n    base_url: {mock}\n    headers:\n      x-api-key: ${{apiKey}}\n  credentials:\n    apiKey:\n      type: string\n      title: Secret token\n      description: From your settings page\n      pattern: '^sk_'\n      secret: true\n  connection_config:\n    subdomain:\n      type: string\n      title: Subdomain\n      pattern: '^[a-z0-9-]+$'\n      prefix: 'https://'\n      suffix: .uikey.test\n      order: 1\n    region:\n      type: string\n      title: Region\n      enum: [eu, us]\n    internal:\n      type: string\n      automated: true\n\
         uibasic:\n  auth_mode: BASIC\n  proxy:\n    base_url: {mock}\n\
         uitoken:\n  display_name: UI Token\n  auth_mode: BASIC\n  proxy:\n    base_url: {mock}\n  credentials:\n    username:\n      type: string\n      title: API token\n    password:\n      type: string\n      hidden: true\n      default_value: ''\n\
         uioauth:\n  auth_mode: OAUTH2\n  authorization_url: {mock}/authorize\n  token_url: {mock}/oauth/token\n  proxy:\n    base_url: {mock}\n\
         uinone:\n  auth_mode: NONE\n  proxy:\n    base_url: {mock}\n"
    )
}

fn csp_hash(text: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

fn between<'a>(html: &'a str, open: &str, close: &str) -> &'a str {
    let start = html.find(open).unwrap_or_else(|| panic!("no {open}")) + open.len();
    let end = start + html[start..].find(close).unwrap();
    &html[start..end]
}

/// A server with the test's providers and, in dev, `key-int` (API key),
/// `basic-int` and `other-int` (basic), `token-int` (basic, the password
/// hidden and empty), `oauth-int` (OAuth2) and `none-int` (no auth); in
/// prod, `prod-int`.
async fn setup() -> (sluice_server::Server, MockServer, tempfile::TempDir, Client) {
    let mock = MockServer::start(std::sync::Arc::new(|_: &MockRequest| {
        MockResponse::json(404, &json!({}))
    }))
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &master, &providers_yaml(&mock.url())).await;
    let dev = Client::new(&server, DEV_KEY);
    let prod = Client::new(&server, PROD_KEY);
    for (key, provider, credentials) in [
        ("key-int", "uikey", None),
        ("basic-int", "uibasic", None),
        (
            "oauth-int",
            "uioauth",
            Some(json!({"type": "OAUTH2", "client_id": "cid", "client_secret": "cs"})),
        ),
        ("none-int", "uinone", None),
        ("token-int", "uitoken", None),
        ("other-int", "uibasic", None),
    ] {
        let mut body = json!({"unique_key": key, "provider": provider});
        if let Some(c) = credentials {
            body["credentials"] = c;
        }
        let (status, body) = dev.send("POST", "/integrations", Some(body)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = prod
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "prod-int", "provider": "uibasic"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (server, mock, data, dev)
}

/// Runs `tests/connect-ui/<script>` with `args` (off the runtime's
/// workers: the server answers Node from them); its JSON output.
async fn node(script: &str, args: Vec<String>) -> Value {
    let path = format!("{}/connect-ui/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::task::spawn_blocking(move || {
        // Node 20 or later is the TypeScript toolchain's own need.
        if std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_err()
        {
            panic!("these tests run the Connect UI's script in Node: `node` (20 or later) is not on PATH");
        }
        // The page's OAuth flow needs a WebSocket: Node 22 has one, Node
        // 20 behind a flag.
        let has_websocket = std::process::Command::new("node")
            .args([
                "-e",
                "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
            ])
            .status()
            .is_ok_and(|s| s.success());
        let mut node = std::process::Command::new("node");
        if !has_websocket {
            node.arg("--experimental-websocket");
        }
        node.arg(path).args(&args).output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn session(dev: &Client, body: Value) -> (String, String) {
    let (status, body) = dev.send("POST", "/connect/sessions", Some(body)).await;
    assert_eq!(status, 201, "{body}");
    (
        body["data"]["token"].as_str().unwrap().to_string(),
        body["data"]["connect_link"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_connects_accounts_through_the_connect_ui() {
    let (server, mock, _data, dev) = setup().await;
    let base = server.url();
    // The page: one document, its script and style allowed by their
    // hashes and nothing else; any app may frame it; no referrer.
    let http = reqwest::Client::new();
    for path in ["/connect", "/connect/"] {
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let headers = resp.headers().clone();
        let html = resp.text().await.unwrap();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(!headers.contains_key("x-frame-options"));
        let policy = headers["content-security-policy"].to_str().unwrap();
        let script = between(&html, "<script>", "</script>");
        let style = between(&html, "<style>", "</style>");
        assert!(script.contains("SluiceConnect") && style.contains("#sluice-connect"));
        assert!(
            policy.contains(&format!("script-src {};", csp_hash(script)))
                && policy.contains(&format!("style-src {};", csp_hash(style)))
                && policy.contains("default-src 'none'")
                && !policy.contains("frame-ancestors"),
            "{policy}"
        );
    }

    // The app's backend creates a session; its link opens the page.
    let (token, link) = session(
        &dev,
        json!({
            "end_user": {"id": "u1"},
            "allowed_integrations": ["key-int", "basic-int", "oauth-int", "none-int", "token-int"],
            "integrations_config_defaults": {"key-int": {"connection_config": {"region": "eu"}}}
        }),
    )
    .await;
    assert_eq!(link, format!("{base}/connect?session_token={token}"));
    let resp = http.get(&link).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("id=\"sluice-connect\""));

    // What the page reads with the session's token: the integrations it
    // allows, and their providers; nothing else a secret key reads.
    let as_session = Client::at(&base, &token);
    let (status, body) = as_session.send("GET", "/integrations", None).await;
    assert_eq!(status, 200, "{body}");
    let mut keys: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["unique_key"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["basic-int", "key-int", "none-int", "oauth-int", "token-int"]
    );
    assert!(body["data"][0].get("credentials").is_none(), "{body}");
    let (status, body) = as_session.send("GET", "/providers/uikey", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["auth_mode"], "API_KEY");
    let (status, body) = as_session.send("GET", "/providers?search=ui", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = as_session.send("GET", "/connections", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = as_session.send("GET", "/integrations/key-int", None).await;
    assert_eq!(status, 401, "{body}");

    // The page's own code, driven as a user would use it.
    let plan = json!([
        {"name": "key-bad", "integration": "key-int", "send": true,
         "values": {"credentials.apiKey": "pk_wrong", "params.subdomain": "Acme!"}},
        {"name": "key-empty", "integration": "key-int", "send": true, "values": {}},
        {"name": "key", "integration": "key-int", "send": true,
         "values": {"credentials.apiKey": "sk_live_1", "params.subdomain": "acme"}},
        {"name": "basic-refused", "integration": "basic-int", "send": true,
         "values": {"credentials.username": "ann", "credentials.password": "pw\u{7}"}},
        {"name": "basic", "integration": "basic-int", "send": true,
         "values": {"credentials.username": "ann", "credentials.password": "s3cret"}},
        {"name": "oauth", "integration": "oauth-int", "send": false, "values": {}},
        {"name": "none", "integration": "none-int", "send": true, "values": {}},
        {"name": "token", "integration": "token-int", "send": true,
         "values": {"credentials.username": " tok 1 "}},
        {"name": "other", "integration": "other-int", "send": true, "values": {}}
    ]);
    let dir = tempfile::tempdir().unwrap();
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let seen = node(
        "drive.mjs",
        vec![base.clone(), token.clone(), plan_path.display().to_string()],
    )
    .await;
    let r = &seen["results"];
    assert_eq!(seen["api"], base.as_str());
    assert_eq!(seen["session"]["endUser"]["id"], "u1", "{seen}");

    // The API-key form: the ordered field first, the key (secret, the
    // provider's title), the preconfigured region hidden, the automated
    // field absent.
    let fields: Vec<(String, bool, bool)> = r["key"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["key"].as_str().unwrap().to_string(),
                f["hidden"].as_bool().unwrap(),
                f["secret"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("params.subdomain".to_string(), false, false),
            ("credentials.apiKey".to_string(), false, true),
            ("params.region".to_string(), true, false),
        ],
        "{seen}"
    );
    assert_eq!(r["key"]["fields"][1]["title"], "Secret token");
    // What the user typed wrong is named and nothing is sent.
    assert_eq!(
        r["key-bad"]["problems"],
        json!({"credentials.apiKey": "Incorrect Secret token", "params.subdomain": "Incorrect Subdomain"}),
        "{seen}"
    );
    assert!(r["key-bad"].get("connected").is_none() && r["key-bad"].get("refused").is_none());
    assert_eq!(
        r["key-empty"]["problems"],
        json!({"credentials.apiKey": "This field is required", "params.subdomain": "This field is required"}),
        "{seen}"
    );
    // A good form connects; the server holds what the user typed and the
    // session's preset.
    assert_eq!(
        r["key"]["connected"]["providerConfigKey"], "key-int",
        "{seen}"
    );
    let cid = r["key"]["connected"]["connectionId"].as_str().unwrap();
    let (status, c) = dev
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key=key-int"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["apiKey"], "sk_live_1", "{c}");
    assert_eq!(c["connection_config"]["subdomain"], "acme", "{c}");
    assert_eq!(c["connection_config"]["region"], "eu", "{c}");
    assert_eq!(c["end_user"]["id"], "u1", "{c}");

    // The server's refusal reaches the page with its code; only the good
    // attempt is stored.
    assert_eq!(r["basic-refused"]["refused"]["status"], 400, "{seen}");
    assert_eq!(r["basic-refused"]["refused"]["code"], "invalid_body");
    let basic = r["basic"]["connected"]["connectionId"].as_str().unwrap();
    let (status, list) = dev
        .send("GET", "/connections?integrationId=basic-int", None)
        .await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["connection_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [basic], "{list}");
    let (_, c) = dev
        .send(
            "GET",
            &format!("/connections/{basic}?provider_config_key=basic-int"),
            None,
        )
        .await;
    assert_eq!(c["credentials"]["password"], "s3cret", "{c}");

    // OAuth asks nothing and starts at once, in the provider's window:
    // the page's URL is one the server takes (it sends the user on).
    assert_eq!(r["oauth"]["auto"], true, "{seen}");
    let popup = r["oauth"]["request"]["popup"].as_str().unwrap();
    assert!(
        popup.starts_with(&format!(
            "{base}/oauth/connect/oauth-int?connect_session_token={token}"
        )),
        "{popup}"
    );
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = browser.get(popup).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{}/authorize?", mock.url())),
        "{location}"
    );
    // No credentials: a connection at once.
    assert_eq!(r["none"]["connected"]["providerConfigKey"], "none-int");
    // A hidden password with an empty default: the token alone, as
    // typed (spaces kept), the password sent empty.
    assert_eq!(r["token"]["fields"][1]["hidden"], true, "{seen}");
    let tid = r["token"]["connected"]["connectionId"].as_str().unwrap();
    let (status, c) = dev
        .send(
            "GET",
            &format!("/connections/{tid}?provider_config_key=token-int"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(
        (&c["credentials"]["username"], &c["credentials"]["password"]),
        (&json!(" tok 1 "), &json!("")),
        "{c}"
    );
    // An integration the session does not allow is not offered.
    assert_eq!(r["other"]["missing"], true, "{seen}");

    // A session that names no integration shows its environment's, never
    // another's; a secret key still lists them all.
    let (token, _) = session(&dev, json!({"end_user": {"id": "u2"}})).await;
    let open = Client::at(&base, &token);
    for client in [&open, &dev] {
        let (status, body) = client.send("GET", "/integrations", None).await;
        assert_eq!(status, 200, "{body}");
        let n = body["data"].as_array().unwrap().len();
        assert_eq!(n, 6, "{body}");
        assert!(!body.to_string().contains("prod-int"));
    }
    // An ended session reads nothing.
    let (status, _) = open.send("DELETE", "/connect/session", None).await;
    assert_eq!(status, 204);
    let (status, body) = open.send("GET", "/integrations", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unknown_connect_session_token")),
        "{body}"
    );
    let (status, body) = Client::at(&base, "nango_connect_session_short")
        .send("GET", "/providers/uikey", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_connect_session_token_format")),
        "{body}"
    );
}

/// Plays `steps` on the page at `url` (framed by an app when `embedded`).
async fn play(url: &str, embedded: bool, steps: Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        json!({"url": url, "embedded": embedded, "steps": steps}).to_string(),
    )
    .unwrap();
    node("page.mjs", vec![plan.display().to_string()]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_ui_page_lists_asks_connects_and_tells_the_app() {
    let (server, _mock, _data, dev) = setup().await;
    let base = server.url();

    // Framed by the app, which hands the page its session's token.
    let (token, _) = session(
        &dev,
        json!({
            "end_user": {"id": "u1"},
            "allowed_integrations": ["key-int", "basic-int"],
            "integrations_config_defaults": {"key-int": {"connection_config": {"region": "us"}}}
        }),
    )
    .await;
    let seen = play(
        &format!("{base}/connect/"),
        true,
        json!([
            {"do": "token", "token": token},
            {"do": "wait", "text": "Select an integration"},
            {"do": "snapshot", "name": "list"},
            {"do": "click", "text": "UI Key"},
            {"do": "wait", "text": "Link UI Key"},
            {"do": "snapshot", "name": "form"},
            {"do": "fill", "id": "f-credentials_apiKey", "value": "pk_typo"},
            {"do": "fill", "id": "f-params_subdomain", "value": "acme"},
            {"do": "submit"},
            {"do": "wait", "text": "Incorrect Secret token"},
            {"do": "fill", "id": "f-credentials_apiKey", "value": "sk_from_page"},
            {"do": "submit"},
            {"do": "event", "type": "connect"},
            {"do": "wait", "text": "Connected"},
            {"do": "snapshot", "name": "done"},
            {"do": "click", "text": "Finish"},
            {"do": "event", "type": "close"}
        ]),
    )
    .await;
    let list = &seen["snapshots"]["list"]["buttons"];
    assert!(
        list.as_array().unwrap().contains(&json!("UI Key"))
            && list.as_array().unwrap().contains(&json!("uibasic"))
            && !list.to_string().contains("other-int"),
        "{seen}"
    );
    // The form: the provider's fields with their affixes; the key hidden
    // as typed; the preset region not asked.
    let form = &seen["snapshots"]["form"];
    assert_eq!(
        form["inputs"],
        json!([
            {"id": "f-params_subdomain", "type": "text", "value": ""},
            {"id": "f-credentials_apiKey", "type": "password", "value": ""}
        ]),
        "{seen}"
    );
    let text = form["text"].as_str().unwrap();
    assert!(
        text.contains("https://")
            && text.contains(".uikey.test")
            && text.contains("From your settings page")
            && !text.contains("Region"),
        "{text}"
    );
    // The app heard `ready`, then the connection, then `close`.
    let events = seen["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ready", "connect", "close"], "{seen}");
    assert_eq!(events[1]["payload"]["providerConfigKey"], "key-int");
    let cid = events[1]["payload"]["connectionId"].as_str().unwrap();
    let (status, c) = dev
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key=key-int"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["apiKey"], "sk_from_page", "{c}");
    assert_eq!(c["connection_config"]["subdomain"], "acme", "{c}");
    assert_eq!(c["connection_config"]["region"], "us", "{c}");

    // A connect link opened alone, for one integration: straight to its
    // form; the server's refusal shown; then connected.
    let (_, link) = session(
        &dev,
        json!({"end_user": {"id": "u2"}, "allowed_integrations": ["basic-int"]}),
    )
    .await;
    let seen = play(
        &link,
        false,
        json!([
            {"do": "wait", "text": "Link uibasic"},
            {"do": "snapshot", "name": "form"},
            {"do": "fill", "id": "f-credentials_username", "value": "ann"},
            {"do": "fill", "id": "f-credentials_password", "value": "pw\u{7}"},
            {"do": "submit"},
            {"do": "wait", "text": "holds a control character"},
            {"do": "snapshot", "name": "refused"},
            {"do": "fill", "id": "f-credentials_password", "value": "s3cret"},
            {"do": "submit"},
            {"do": "wait", "text": "Connected"},
            {"do": "snapshot", "name": "done"}
        ]),
    )
    .await;
    assert!(
        !seen["snapshots"]["form"]["buttons"]
            .to_string()
            .contains("Back"),
        "{seen}"
    );
    assert_eq!(seen["events"], json!([]), "alone, it tells no app: {seen}");
    let done = seen["snapshots"]["done"]["text"].as_str().unwrap();
    assert!(done.contains("You can close this page."), "{done}");
    let (status, list) = dev
        .send("GET", "/connections?integrationId=basic-int", None)
        .await;
    assert_eq!(status, 200, "{list}");
    let connections = list["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 1, "{list}");
    assert_eq!(connections[0]["end_user"]["id"], "u2", "{list}");

    // OAuth in the provider's window: the user refuses there, and the
    // page shows why and tells the app.
    let (token, _) = session(
        &dev,
        json!({"end_user": {"id": "u3"}, "allowed_integrations": ["oauth-int"]}),
    )
    .await;
    let seen = play(
        &format!("{base}/connect"),
        true,
        json!([
            {"do": "token", "token": token},
            {"do": "wait", "text": "Connect with uioauth"},
            {"do": "submit"},
            {"do": "deny", "why": "The user said no"},
            {"do": "event", "type": "error"},
            {"do": "wait", "text": "The user said no"}
        ]),
    )
    .await;
    let popup = seen["snapshots"]["popup"].as_str().unwrap();
    assert!(
        popup.starts_with(&format!(
            "{base}/oauth/connect/oauth-int?connect_session_token={token}&ws_client_id="
        )),
        "{popup}"
    );
    let events = seen["events"].as_array().unwrap();
    assert_eq!(events[0]["type"], "ready", "{seen}");
    assert_eq!(events[1]["type"], "error", "{seen}");
    assert!(
        events[1]["payload"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("The user said no"),
        "{seen}"
    );
    let (_, list) = dev
        .send("GET", "/connections?integrationId=oauth-int", None)
        .await;
    assert_eq!(list["connections"], json!([]), "{list}");

    // The app ends the session while the provider's window loads: the
    // window's refusal reaches the page, which says why.
    let (token, _) = session(
        &dev,
        json!({"end_user": {"id": "u4"}, "allowed_integrations": ["oauth-int"]}),
    )
    .await;
    let seen = play(
        &format!("{base}/connect"),
        true,
        json!([
            {"do": "token", "token": token},
            {"do": "wait", "text": "Connect with uioauth"},
            {"do": "submit"},
            {"do": "end-then-open", "token": token},
            {"do": "event", "type": "error"},
            {"do": "wait", "text": "does not match any account"}
        ]),
    )
    .await;
    assert_eq!(
        seen["events"][1]["payload"]["errorType"], "unknown_connect_session_token",
        "{seen}"
    );

    // Opened with no session at all: said so.
    let seen = play(
        &format!("{base}/connect"),
        false,
        json!([{"do": "wait", "text": "can't be opened directly"}]),
    )
    .await;
    assert_eq!(seen["events"], json!([]));
}
