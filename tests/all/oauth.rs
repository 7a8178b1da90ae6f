//! Connecting an account from a browser against a real `sluice serve`:
//! a connect session, the OAuth2 authorization-code flow with a mock
//! provider (its authorization step played by the test, as a browser
//! would follow it; its token endpoint a mock server), the frontend SDK's
//! websocket, and the refusals.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer};

use crate::server::{Client, DEV_KEY, PROD_KEY, start_with};

/// A browser: no redirects followed, so each step is seen.
/// Whether any file under `dir` holds `needle`.
fn files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_contain(&path, needle)
        } else {
            std::fs::read(&path)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        }
    })
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The provider's answers: the token endpoint checks the grant (the code,
/// PKCE's verifier against the challenge the authorization URL carried,
/// the redirect URI, the client's credentials) and hands out tokens.
struct Provider {
    /// The code the "user" approved, and the challenge that came with it.
    approved: Mutex<Option<(String, String)>>,
    /// The token endpoint refuses every grant.
    refuse: Mutex<bool>,
    issued: Mutex<u32>,
}

fn provider_handler(p: Arc<Provider>) -> sluice_project::mock::Handler {
    Arc::new(move |req: &MockRequest| {
        if req.path != "/oauth/token" {
            return MockResponse::json(404, &json!({}));
        }
        if *p.refuse.lock().unwrap() {
            return MockResponse::json(
                400,
                &json!({"error": "invalid_grant", "echo": String::from_utf8_lossy(&req.body)}),
            );
        }
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(&req.body)
                .into_owned()
                .collect();
        let Some((code, challenge)) = p.approved.lock().unwrap().clone() else {
            return MockResponse::json(400, &json!({"error": "nothing approved"}));
        };
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        let computed =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(&verifier));
        let ok = form.get("grant_type").map(String::as_str) == Some("authorization_code")
            && form.get("code") == Some(&code)
            && computed == challenge
            && matches!(
                (
                    form.get("client_id").map(String::as_str),
                    form.get("client_secret").map(String::as_str)
                ),
                (Some("cid"), Some("csecret")) | (Some("own"), Some("own-secret"))
            )
            && form
                .get("redirect_uri")
                .is_some_and(|u| u.ends_with("/oauth/callback"));
        if !ok {
            return MockResponse::json(400, &json!({"error": "bad grant", "form": form}));
        }
        let mut n = p.issued.lock().unwrap();
        *n += 1;
        MockResponse::json(
            200,
            &json!({
                "access_token": format!("at-{n}"),
                "refresh_token": format!("rt-{n}"),
                "expires_in": 3600,
                "team": {"id": "T1", "name": "Team"},
            }),
        )
    })
}

fn providers_yaml(mock: &str) -> String {
    format!(
        "mockoauth:\n  auth_mode: OAUTH2\n  authorization_url: {mock}/authorize?ignored=1\n  token_url: {mock}/oauth/token\n  authorization_params:\n    prompt: consent\n  default_scopes:\n    - offline\n  scope_separator: ','\n  token_response_metadata:\n    - team.id\n  proxy:\n    base_url: {mock}\n\
         mockhost:\n  auth_mode: OAUTH2\n  authorization_url: {mock}/authorize\n  token_url: https://${{connectionConfig.domain}}/oauth/token\n  proxy:\n    base_url: {mock}\n\
         mockkey:\n  auth_mode: API_KEY\n  proxy:\n    base_url: {mock}\n    headers:\n      x-api-key: ${{apiKey}}\n\
         mocknone:\n  auth_mode: NONE\n  proxy:\n    base_url: {mock}\n\
         mockpath:\n  auth_mode: OAUTH2\n  authorization_url: {mock}/authorize\n  token_url: {mock}/${{connectionConfig.tenant}}/token\n  proxy:\n    base_url: {mock}\n\
         mocksub:\n  auth_mode: OAUTH2\n  authorization_url: {mock}/${{connectionConfig.sub}}/authorize\n  token_url: {mock}/oauth/token\n  proxy:\n    base_url: {mock}\n"
    )
}

async fn session(dev: &Client, body: Value) -> (u16, Value) {
    dev.send("POST", "/connect/sessions", Some(body)).await
}

/// The frontend SDK's websocket: its client id from `connection_ack`.
async fn websocket(
    base: &str,
) -> (
    String,
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) {
    let url = format!("{}/", base.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let ack = next_json(&mut ws).await;
    assert_eq!(ack["message_type"], "connection_ack", "{ack}");
    (ack["ws_client_id"].as_str().unwrap().to_string(), ws)
}

async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    let message = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
        .await
        .expect("a websocket message within 30 s")
        .expect("the socket is open")
        .unwrap();
    serde_json::from_str(message.to_text().unwrap()).unwrap()
}

/// The `auth` webhooks the app got, once there are `n`.
async fn wait_auth(hooks: &MockServer, n: usize) -> Vec<Value> {
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let got: Vec<Value> = hooks
            .requests()
            .iter()
            .filter_map(MockRequest::json)
            .filter(|b| b["type"] == "auth")
            .collect();
        if got.len() >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < limit,
            "{n} auth webhooks: {got:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Opens `/oauth/connect/…` as the browser: the 302's authorization URL,
/// its query as pairs.
async fn authorize(base: &str, query: &str) -> (url::Url, Vec<(String, String)>) {
    let resp = browser()
        .get(format!("{base}/oauth/connect/oauth-int?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "{}", resp.text().await.unwrap());
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let pairs = location.query_pairs().into_owned().collect();
    (location, pairs)
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no `{key}` in {pairs:?}"))
}

/// The provider sends the browser back: the callback's status and page.
async fn callback(base: &str, query: &str) -> (u16, String) {
    let resp = browser()
        .get(format!("{base}/oauth/callback?{query}"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_connects_an_oauth2_account_through_a_connect_session() {
    let provider = Arc::new(Provider {
        approved: Mutex::new(None),
        refuse: Mutex::new(false),
        issued: Mutex::new(0),
    });
    let mock = MockServer::start(provider_handler(provider.clone()))
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &master, &providers_yaml(&mock.url())).await;
    let dev = Client::new(&server, DEV_KEY);
    let base = server.url();
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "oauth-int", "provider": "mockoauth",
                "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret", "scopes": "read,write"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The app listens for webhooks.
    let hooks = MockServer::start(Arc::new(|_: &MockRequest| {
        MockResponse::json(200, &json!({}))
    }))
    .await
    .unwrap();
    let (status, body) = dev
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": format!("{}/hooks", hooks.url())})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The app's backend creates a session for its user.
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u1", "email": "u1@example.com"}, "allowed_integrations": ["oauth-int"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    assert!(
        token.starts_with("nango_connect_session_") && token.len() == 22 + 64,
        "{token}"
    );
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["data"]["expires_at"].as_str().unwrap()).unwrap();
    let minutes = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_minutes();
    assert!((28..=30).contains(&minutes), "{body}");
    // The browser's view of its session.
    let as_session = Client::at(&base, &token);
    let (status, body) = as_session.send("GET", "/connect/session", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["endUser"]["id"], "u1", "{body}");
    assert_eq!(body["data"]["allowed_integrations"], json!(["oauth-int"]));
    // The token is not a secret key.
    let (status, body) = as_session.send("GET", "/connections", None).await;
    assert_eq!(status, 401, "{body}");

    // The frontend SDK: a websocket, then the popup.
    let (ws_id, mut ws) = websocket(&base).await;
    let (location, pairs) = authorize(
        &base,
        &format!("connect_session_token={token}&ws_client_id={ws_id}&params[region]=eu"),
    )
    .await;
    assert_eq!(
        format!(
            "{}{}",
            location.origin().ascii_serialization(),
            location.path()
        ),
        format!("{}/authorize", mock.url())
    );
    assert_eq!(param(&pairs, "response_type"), "code");
    assert_eq!(param(&pairs, "client_id"), "cid");
    assert_eq!(
        param(&pairs, "redirect_uri"),
        format!("{base}/oauth/callback")
    );
    assert_eq!(param(&pairs, "scope"), "read,write");
    assert_eq!(param(&pairs, "prompt"), "consent");
    assert_eq!(param(&pairs, "code_challenge_method"), "S256");
    assert!(!pairs.iter().any(|(k, _)| k == "ignored"), "{pairs:?}");
    let state = param(&pairs, "state").to_string();
    // The user approves: the provider remembers the code with the
    // challenge, and sends the browser back.
    *provider.approved.lock().unwrap() = Some((
        "code-1".to_string(),
        param(&pairs, "code_challenge").to_string(),
    ));
    let (status, page) = callback(&base, &format!("code=code-1&state={state}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("nango_oauth_callback_success"), "{page}");
    let done = next_json(&mut ws).await;
    assert_eq!(done["message_type"], "success", "{done}");
    assert_eq!(done["provider_config_key"], "oauth-int");
    let cid = done["connection_id"].as_str().unwrap().to_string();
    assert_eq!(cid.len(), 36, "a UUID: {cid}");

    // The connection is stored with its tokens, the browser's and the
    // token answer's values, and the session's end user.
    let (status, c) = dev
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key=oauth-int&refresh_token=true"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["type"], "OAUTH2", "{c}");
    assert_eq!(c["credentials"]["access_token"], "at-1", "{c}");
    assert_eq!(c["credentials"]["refresh_token"], "rt-1", "{c}");
    assert!(c["credentials"]["expires_at"].is_string(), "{c}");
    assert_eq!(c["credentials"]["raw"]["team"]["name"], "Team", "{c}");
    assert_eq!(c["connection_config"]["region"], "eu", "{c}");
    assert_eq!(c["connection_config"]["team.id"], "T1", "{c}");
    assert_eq!(c["end_user"]["id"], "u1", "{c}");
    // The app hears of the new connection (`auth`, `creation`).
    let auth = wait_auth(&hooks, 1).await;
    assert_eq!(auth[0]["operation"], "creation", "{auth:?}");
    assert_eq!(auth[0]["connectionId"], cid.as_str());
    assert_eq!(auth[0]["providerConfigKey"], "oauth-int");
    assert_eq!(auth[0]["authMode"], "OAUTH2");
    assert_eq!(auth[0]["provider"], "mockoauth");
    assert_eq!(auth[0]["environment"], "dev");
    assert_eq!(auth[0]["success"], true);
    assert_eq!(auth[0]["endUser"]["endUserId"], "u1");
    assert_eq!(auth[0]["endUser"]["endUserEmail"], "u1@example.com");
    // Another environment sees nothing of it.
    let prod = Client::new(&server, PROD_KEY);
    let (status, body) = prod
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key=oauth-int"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_provider_config")),
        "{body}"
    );

    // A state is used once.
    let (status, page) = callback(&base, &format!("code=code-1&state={state}")).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("No session found for state"), "{page}");
    assert_eq!(*provider.issued.lock().unwrap(), 1);

    // Reconnecting: the same connection gets new tokens.
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions/reconnect",
            Some(json!({"connection_id": cid, "integration_id": "oauth-int"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let again = body["data"]["token"].as_str().unwrap().to_string();
    let (_, pairs) = authorize(&base, &format!("connect_session_token={again}")).await;
    *provider.approved.lock().unwrap() = Some((
        "code-2".to_string(),
        param(&pairs, "code_challenge").to_string(),
    ));
    let (status, page) = callback(
        &base,
        &format!("state={}&code=code-2", param(&pairs, "state")),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let (_, c) = dev
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key=oauth-int"),
            None,
        )
        .await;
    assert_eq!(c["credentials"]["access_token"], "at-2", "{c}");
    assert_eq!(c["end_user"]["id"], "u1", "kept: {c}");
    let auth = wait_auth(&hooks, 2).await;
    assert_eq!(auth[1]["operation"], "override", "{auth:?}");
    assert_eq!(auth[1]["connectionId"], cid.as_str());
    let (_, list) = dev.send("GET", "/connections", None).await;
    assert_eq!(list["connections"].as_array().unwrap().len(), 1, "{list}");

    // The app's own OAuth client for a user, in the session's defaults:
    // the browser's view of the session shows no secret, the data
    // directory holds none in the clear while the flow waits for the
    // provider, and the code is exchanged with it.
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u3"}, "allowed_integrations": ["oauth-int"],
            "integrations_config_defaults": {"oauth-int": {"connection_config": {
                "oauth_client_id_override": "own", "oauth_client_secret_override": "own-secret"}}}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let own = body["data"]["token"].as_str().unwrap().to_string();
    let (status, body) = Client::at(&base, &own)
        .send("GET", "/connect/session", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["integrations_config_defaults"]["oauth-int"]["connection_config"],
        json!({"oauth_client_id_override": "own", "oauth_client_secret_override": "********"}),
        "{body}"
    );
    let (_, pairs) = authorize(&base, &format!("connect_session_token={own}")).await;
    assert_eq!(param(&pairs, "client_id"), "own");
    assert!(
        !files_contain(data.path(), b"own-secret"),
        "the client secret is in the clear in the data directory"
    );
    *provider.approved.lock().unwrap() = Some((
        "code-own".to_string(),
        param(&pairs, "code_challenge").to_string(),
    ));
    let (status, page) = callback(
        &base,
        &format!("state={}&code=code-own", param(&pairs, "state")),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("nango_oauth_callback_success"), "{page}");

    // A deleted session's token no longer works.
    let resp = reqwest::Client::new()
        .delete(format!("{base}/connect/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (status, body) = as_session.send("GET", "/connect/session", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unknown_connect_session_token");
    let resp = browser()
        .get(format!(
            "{base}/oauth/connect/oauth-int?connect_session_token={token}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The connection the flow stored is there after a restart.
    server.stop().await;
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &master, &providers_yaml(&mock.url())).await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, c) = dev
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key=oauth-int"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "at-2", "{c}");

    // A connection deleted while its reconnect flow was at the provider
    // is not brought back by the callback.
    let base = server.url();
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions/reconnect",
            Some(json!({"connection_id": cid, "integration_id": "oauth-int"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let again = body["data"]["token"].as_str().unwrap().to_string();
    let (_, pairs) = authorize(&base, &format!("connect_session_token={again}")).await;
    *provider.approved.lock().unwrap() = Some((
        "code-3".to_string(),
        param(&pairs, "code_challenge").to_string(),
    ));
    let (status, body) = dev
        .send(
            "DELETE",
            &format!("/connections/{cid}?provider_config_key=oauth-int"),
            None,
        )
        .await;
    assert!(status < 300, "{body}");
    let (status, page) = callback(
        &base,
        &format!("state={}&code=code-3", param(&pairs, "state")),
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("was deleted"), "{page}");
    let (status, _) = dev
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key=oauth-int"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_flow_the_provider_or_its_token_endpoint_refuses_stores_nothing() {
    let provider = Arc::new(Provider {
        approved: Mutex::new(None),
        refuse: Mutex::new(true),
        issued: Mutex::new(0),
    });
    let mock = MockServer::start(provider_handler(provider.clone()))
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &providers_yaml(&mock.url())).await;
    let dev = Client::new(&server, DEV_KEY);
    let base = server.url();
    let hooks = MockServer::start(Arc::new(|_: &MockRequest| {
        MockResponse::json(200, &json!({}))
    }))
    .await
    .unwrap();
    let (status, body) = dev
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": format!("{}/hooks", hooks.url())})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for (key, creds) in [
        (
            "oauth-int",
            json!({"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"}),
        ),
        (
            "other-int",
            json!({"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"}),
        ),
    ] {
        let (status, body) = dev
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": key, "provider": "mockoauth", "credentials": creds})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Sessions name what they allow; an unknown integration is refused.
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u1"}, "allowed_integrations": ["nope"]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`nope`"),
        "{body}"
    );
    let (status, body) = session(&dev, json!({"allowed_integrations": ["oauth-int"]})).await;
    assert_eq!(status, 400, "an end user or tags: {body}");
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u1"}, "allowed_integrations": ["oauth-int"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();

    let open = |query: String| {
        let base = base.clone();
        async move {
            let resp = browser()
                .get(format!("{base}/oauth/connect/{query}"))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, text)
        }
    };
    let (status, body) = open(format!("other-int?connect_session_token={token}")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("integration_not_allowed"), "{body}");
    let (status, body) = open(format!(
        "oauth-int?connect_session_token={token}&connection_id=x"
    ))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_query_params"), "{body}");
    let (status, body) =
        open("oauth-int?connect_session_token=nango_connect_session_zz".into()).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("invalid_connect_session_token_format"),
        "{body}"
    );
    let (status, body) = open("oauth-int".into()).await;
    assert_eq!(status, 401, "{body}");

    // The user says no: the provider's words reach the page and the SDK,
    // escaped.
    let (ws_id, mut ws) = websocket(&base).await;
    let (_, pairs) = authorize(
        &base,
        &format!("connect_session_token={token}&ws_client_id={ws_id}"),
    )
    .await;
    let state = param(&pairs, "state").to_string();
    let (status, page) = callback(
        &base,
        &format!(
            "state={state}&error=access_denied&error_description={}",
            url::form_urlencoded::byte_serialize(b"no </script><script>alert(1)</script>")
                .collect::<String>()
        ),
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("Did not get authorization code"), "{page}");
    assert!(page.contains("error: access_denied"), "{page}");
    assert!(!page.contains("<script>alert"), "{page}");
    let said = next_json(&mut ws).await;
    assert_eq!(said["message_type"], "error", "{said}");
    assert_eq!(said["error_type"], "callback_err", "{said}");

    // The token endpoint refuses the code: nothing is stored, and its
    // echo of the client secret is not shown.
    let (_, pairs) = authorize(&base, &format!("connect_session_token={token}")).await;
    let (status, page) = callback(
        &base,
        &format!("state={}&code=code-1", param(&pairs, "state")),
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("HTTP 400"), "{page}");
    assert!(!page.contains("csecret"), "{page}");
    let (_, list) = dev.send("GET", "/connections", None).await;
    assert_eq!(list["connections"], json!([]), "{list}");
    // The app hears of both failures.
    let auth = wait_auth(&hooks, 2).await;
    for a in &auth {
        assert_eq!(a["success"], false, "{a}");
        assert_eq!(a["operation"], "creation", "{a}");
        assert!(a.get("endUser").is_none() && a.get("tags").is_none(), "{a}");
    }
    assert_eq!(auth[0]["error"]["type"], "callback_err", "{auth:?}");
    assert!(
        auth[1]["error"]["description"]
            .as_str()
            .unwrap()
            .contains("HTTP 400")
            && !auth[1].to_string().contains("csecret"),
        "{auth:?}"
    );

    // The user's own OAuth app: its client id goes to the provider.
    let (_, pairs) = authorize(
        &base,
        &format!("connect_session_token={token}&credentials[oauth_client_id_override]=own&credentials[oauth_client_secret_override]=own-secret"),
    )
    .await;
    assert_eq!(param(&pairs, "client_id"), "own");
    // Or in the connection config: used, not kept in it.
    let (_, pairs) = authorize(
        &base,
        &format!("connect_session_token={token}&params[oauth_client_id_override]=own2&params[oauth_client_secret_override]=own2-secret&params[region]=eu"),
    )
    .await;
    assert_eq!(param(&pairs, "client_id"), "own2");

    // The browser's authorization params do not replace the flow's own.
    let (_, pairs) = authorize(
        &base,
        &format!("connect_session_token={token}&authorization_params[redirect_uri]=http://evil.example/cb&authorization_params[state]=x&authorization_params[prompt]=none"),
    )
    .await;
    assert_eq!(
        param(&pairs, "redirect_uri"),
        format!("{base}/oauth/callback")
    );
    assert_ne!(param(&pairs, "state"), "x");
    assert_eq!(param(&pairs, "prompt"), "none", "theirs to give: {pairs:?}");
    // A HEAD of the callback (a link checker) leaves the flow alone.
    let state = param(&pairs, "state").to_string();
    let resp = browser()
        .head(format!("{base}/oauth/callback?state={state}&code=c"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, page) = callback(&base, &format!("state={state}&code=c")).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("HTTP 400"), "exchanged, not lost: {page}");
    // A flow whose session was deleted does not finish.
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u1"}, "allowed_integrations": ["oauth-int"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let short = body["data"]["token"].as_str().unwrap().to_string();
    let (_, pairs) = authorize(&base, &format!("connect_session_token={short}")).await;
    let resp = reqwest::Client::new()
        .delete(format!("{base}/connect/session"))
        .bearer_auth(&short)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (status, page) = callback(&base, &format!("state={}&code=c", param(&pairs, "state"))).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("connect session was deleted"), "{page}");

    // A session keeps its last 16 flows, not every one it starts.
    let mut states = Vec::new();
    for _ in 0..17 {
        let (_, pairs) = authorize(&base, &format!("connect_session_token={token}")).await;
        states.push(param(&pairs, "state").to_string());
    }
    let (status, page) = callback(&base, &format!("state={}&code=c", states[0])).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("No session found for state"), "{page}");
    let (status, page) = callback(&base, &format!("state={}&code=c", states[1])).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("HTTP 400"), "kept, and exchanged: {page}");

    // Where the client secret goes is the app's to say: a browser value
    // that would be the token URL's whole host is refused, the session's
    // is taken. An integration without scopes asks for the provider's
    // default ones.
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "host-int", "provider": "mockhost",
                "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u2"}, "allowed_integrations": ["host-int", "other-int"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let browser_token = body["data"]["token"].as_str().unwrap().to_string();
    let (status, page) = open(format!(
        "host-int?connect_session_token={browser_token}&params[domain]=attacker.example"
    ))
    .await;
    assert_eq!(status, 400, "{page}");
    // Nor may a browser's value move the request along the token URL's path.
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "path-int", "provider": "mockpath",
                "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u3"}, "allowed_integrations": ["path-int"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let path_token = body["data"]["token"].as_str().unwrap().to_string();
    let (status, path_page) = open(format!(
        "path-int?connect_session_token={path_token}&params[tenant]=..%2F..%2Fevil"
    ))
    .await;
    assert_eq!(status, 400, "{path_page}");
    assert!(path_page.contains("`tenant`"), "{path_page}");
    let (status, _) = open(format!(
        "path-int?connect_session_token={path_token}&params[tenant]=acme-1"
    ))
    .await;
    assert_eq!(status, 302);
    assert!(
        page.contains("url_param_err") && page.contains("`domain`"),
        "{page}"
    );
    // A flow missing a value of its authorization URL names what it was
    // given, the session's secrets masked as `GET /connect/session` does.
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "sub-int", "provider": "mocksub",
                "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u2"}, "allowed_integrations": ["sub-int"],
            "integrations_config_defaults": {"sub-int": {"connection_config": {"partner_api_secret": "TOPSECRET-123"}}}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let sub_token = body["data"]["token"].as_str().unwrap().to_string();
    let (status, sub_page) = open(format!("sub-int?connect_session_token={sub_token}")).await;
    assert_eq!(status, 400, "{sub_page}");
    assert!(
        sub_page.contains("Provided Connection Config") && sub_page.contains("********"),
        "{sub_page}"
    );
    assert!(!sub_page.contains("TOPSECRET"), "{sub_page}");
    let (status, _) = open(format!("other-int?connect_session_token={browser_token}")).await;
    assert_eq!(status, 302);
    let resp = browser()
        .get(format!(
            "{base}/oauth/connect/other-int?connect_session_token={browser_token}"
        ))
        .send()
        .await
        .unwrap();
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let pairs: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    assert_eq!(param(&pairs, "scope"), "offline");
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u2"}, "allowed_integrations": ["host-int"],
            "integrations_config_defaults": {"host-int": {"connection_config": {"domain": "login.example.com"}}}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let pinned = body["data"]["token"].as_str().unwrap().to_string();
    let (status, page) = open(format!(
        "host-int?connect_session_token={pinned}&params[domain]=attacker.example"
    ))
    .await;
    assert_eq!(status, 302, "{page}");

    // A plain GET / is no route; a callback without a state is refused.
    let (status, _) = dev.send("GET", "/", None).await;
    assert_eq!(status, 404);
    let (status, page) = callback(&base, "code=x").await;
    assert_eq!(status, 400);
    assert!(page.contains("No state found"), "{page}");

    // A frontend still waiting when the server stops is told: its socket
    // closes, and the stop does not wait for it.
    let (_, mut waiting) = websocket(&base).await;
    server.stop().await;
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), waiting.next())
        .await
        .expect("the socket ends at the stop");
    assert!(
        matches!(
            end,
            None | Some(Err(_)) | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
        ),
        "{end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_sends_the_originals_auth_webhooks_and_the_setting_stops_creations() {
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(
        config,
        &MasterKey::generate(),
        &providers_yaml("http://127.0.0.1:9"),
    )
    .await;
    let dev = Client::new(&server, DEV_KEY);
    let hooks = MockServer::start(Arc::new(|_: &MockRequest| {
        MockResponse::json(200, &json!({}))
    }))
    .await
    .unwrap();
    let (status, body) = dev
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": format!("{}/hooks", hooks.url())})),
        )
        .await;
    assert_eq!(
        (status, &body["on_auth_creation"]),
        (200, &json!(true)),
        "{body}"
    );
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "oauth-int", "provider": "mockoauth"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let import = json!({"provider_config_key": "oauth-int", "connection_id": "c1",
        "credentials": {"type": "OAUTH2", "access_token": "t"},
        "end_user": {"id": "u1"}, "tags": {"team": "a"}});
    let (status, body) = dev.send("POST", "/connections", Some(import.clone())).await;
    assert_eq!(status, 201, "{body}");
    let auth = wait_auth(&hooks, 1).await;
    assert_eq!(auth[0]["operation"], "creation", "{auth:?}");
    assert_eq!(auth[0]["authMode"], "OAUTH2");
    assert_eq!(auth[0]["success"], true);
    assert_eq!(auth[0]["tags"]["team"], "a", "{auth:?}");
    assert!(
        auth[0].get("endUser").is_none(),
        "imports name no end user: {auth:?}"
    );
    let (status, _) = dev.send("POST", "/connections", Some(import)).await;
    assert_eq!(status, 201);
    let auth = wait_auth(&hooks, 2).await;
    assert_eq!(auth[1]["operation"], "override", "{auth:?}");

    // Off: a new connection is not told; new credentials still are.
    let (status, body) = dev
        .send(
            "PATCH",
            "/sluice/webhook-settings",
            Some(json!({"on_auth_creation": false})),
        )
        .await;
    assert_eq!(
        (status, &body["on_auth_creation"]),
        (200, &json!(false)),
        "{body}"
    );
    let c2 = json!({"provider_config_key": "oauth-int", "connection_id": "c2",
        "credentials": {"type": "OAUTH2", "access_token": "t"}});
    let (status, _) = dev.send("POST", "/connections", Some(c2.clone())).await;
    assert_eq!(status, 201);
    let (status, _) = dev.send("POST", "/connections", Some(c2)).await;
    assert_eq!(status, 201);
    let auth = wait_auth(&hooks, 3).await;
    assert_eq!(
        (
            auth[2]["connectionId"].as_str(),
            auth[2]["operation"].as_str()
        ),
        (Some("c2"), Some("override")),
        "{auth:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        wait_auth(&hooks, 3).await.len(),
        3,
        "no creation webhook for c2"
    );

    // A user types an API key in the browser (Connect UI, the frontend
    // SDK): a connection of the session's end user.
    let (status, body) = dev
        .send(
            "PATCH",
            "/sluice/webhook-settings",
            Some(json!({"on_auth_creation": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "key-int", "provider": "mockkey"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "none-int", "provider": "mocknone"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u7"}, "allowed_integrations": ["key-int", "oauth-int", "none-int"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let post = |path: String, body: Value| {
        let url = format!("{}{path}", server.url());
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (
                status,
                serde_json::from_str::<Value>(&resp.text().await.unwrap()).unwrap(),
            )
        }
    };
    let (status, body) = post(
        format!("/api-auth/api-key/key-int?connect_session_token={token}&params[region]=eu"),
        json!({"apiKey": "user-key"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["providerConfigKey"], "key-int");
    let cid = body["connectionId"].as_str().unwrap().to_string();
    let (status, c) = dev
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key=key-int"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["apiKey"], "user-key", "{c}");
    assert_eq!(c["connection_config"]["region"], "eu", "{c}");
    assert_eq!(c["end_user"]["id"], "u7", "{c}");
    let auth = wait_auth(&hooks, 4).await;
    assert_eq!(auth[3]["connectionId"], cid.as_str(), "{auth:?}");
    assert_eq!(auth[3]["authMode"], "API_KEY");
    assert_eq!(auth[3]["endUser"]["endUserId"], "u7");
    // An OAuth integration takes no key; a body of another shape is named.
    let (status, body) = post(
        format!("/api-auth/api-key/oauth-int?connect_session_token={token}"),
        json!({"apiKey": "k"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_auth_mode")),
        "{body}"
    );
    let (status, body) = post(
        format!("/api-auth/api-key/key-int?connect_session_token={token}"),
        json!({"api_key": "k"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_body")),
        "{body}"
    );
    let (status, body) = post("/api-auth/api-key/key-int".into(), json!({"apiKey": "k"})).await;
    assert_eq!(status, 401, "{body}");
    // The session is checked before the body is read, and a key with a
    // line break is refused.
    let (status, body) = post(
        format!(
            "/api-auth/api-key/key-int?connect_session_token=nango_connect_session_{}",
            "0".repeat(64)
        ),
        json!({"not": "read"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unknown_connect_session_token")),
        "{body}"
    );
    let (status, body) = post(
        format!("/api-auth/api-key/key-int?connect_session_token={token}"),
        json!({"apiKey": "k\r\nX-Evil: 1"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // A provider that takes no credentials.
    let (status, body) = post(
        format!("/auth/unauthenticated/none-int?connect_session_token={token}"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let none_cid = body["connectionId"].as_str().unwrap().to_string();
    let (status, c) = dev
        .send(
            "GET",
            &format!("/connections/{none_cid}?provider_config_key=none-int"),
            None,
        )
        .await;
    assert_eq!((status, &c["end_user"]["id"]), (200, &json!("u7")), "{c}");
    // A page on another origin may call it: the preflight is answered.
    let resp = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api-auth/api-key/key-int", server.url()),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert!(
        resp.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Content-Type")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_sends_the_client_and_params_as_the_provider_takes_them() {
    // A provider that takes the client as Basic and a JSON body, with
    // parameters of its own for a refresh.
    let mock = MockServer::start(Arc::new(|req: &MockRequest| {
        // A client-credentials provider: a new token for the client.
        if req.path == "/cc/token" {
            let form: std::collections::HashMap<String, String> =
                url::form_urlencoded::parse(&req.body)
                    .into_owned()
                    .collect();
            let ok = form.get("grant_type").map(String::as_str) == Some("client_credentials")
                && form.get("client_id").map(String::as_str) == Some("app")
                && form.get("client_secret").map(String::as_str) == Some("app-secret")
                && form.get("scope").map(String::as_str) == Some("a b");
            return if ok {
                MockResponse::json(200, &json!({"access_token": "cc-new", "expires_in": 3600}))
            } else {
                MockResponse::json(400, &json!({"error": "bad cc", "form": form}))
            };
        }
        // JSON, or else a form read as an object of its fields.
        let body = req.json().unwrap_or_else(|| {
            Value::Object(
                url::form_urlencoded::parse(&req.body)
                    .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                    .collect(),
            )
        });
        let basic = |client: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(client)
            )
        };
        // A token endpoint that refuses by echoing what it was sent.
        if body["refresh_token"] == "rt\"echo" {
            return MockResponse::json(
                400,
                &json!({"error": "invalid_grant", "got": body, "auth": req.header("authorization")}),
            );
        }
        // A connection of the user's own OAuth app refreshes with it.
        if req.header("authorization") == Some(basic("own:own-secret").as_str()) {
            // The expiry as a date of the answer's own.
            return MockResponse::json(
                200,
                &json!({"access_token": "at-own", "expires_at": "2030-01-01T00:00:00Z"}),
            );
        }
        let ok = req.path == "/oauth/token"
            && req.header("authorization") == Some(basic("cid:csecret").as_str())
            && req.header("content-type") == Some("application/json")
            && body["grant_type"] == "refresh_token"
            && body["refresh_token"] == "rt-old"
            && body["audience"] == "api-eu"
            && body.get("client_secret").is_none();
        if ok {
            // Seconds as a float, as some providers write them.
            MockResponse::json(200, &json!({"access_token": "at-new", "expires_in": 3600.5}))
        } else {
            MockResponse::json(400, &json!({"error": "bad refresh", "got": body}))
        }
    }))
    .await
    .unwrap();
    let providers = format!(
        "ccprov:\n  auth_mode: OAUTH2_CC\n  token_url: {0}/cc/token\n  token_params:\n    grant_type: client_credentials\n  proxy:\n    base_url: {0}\n\
         jsonauth:\n  auth_mode: OAUTH2\n  authorization_url: {0}/authorize\n  token_url: {0}/oauth/token\n  authorization_method: header\n  body_format: json\n  token_params:\n    grant_type: authorization_code\n  refresh_params:\n    grant_type: refresh_token\n    audience: api-${{connectionConfig.region}}\n  proxy:\n    base_url: {0}\n\
         jsonbody:\n  auth_mode: OAUTH2\n  authorization_url: {0}/authorize\n  token_url: {0}/oauth/token\n  body_format: json\n  proxy:\n    base_url: {0}\n\
         rawbasic:\n  auth_mode: OAUTH2\n  authorization_url: {0}/authorize\n  token_url: {0}/oauth/token\n  token_request_auth_method: basic\n  proxy:\n    base_url: {0}\n",
        mock.url()
    );
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "j", "provider": "jsonauth",
                "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "j", "connection_id": "c1",
                "connection_config": {"region": "eu"},
                "credentials": {"type": "OAUTH2", "access_token": "at-old", "refresh_token": "rt-old",
                    "expires_at": "2020-01-01T00:00:00Z"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, c) = dev
        .send("GET", "/connections/c1?provider_config_key=j", None)
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "at-new", "{c}");
    let expires_at = chrono::DateTime::parse_from_rfc3339(
        c["credentials"]["expires_at"].as_str().unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("no expiry after the refresh ({e}): {c}"));
    let left = expires_at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        left > chrono::TimeDelta::minutes(55) && left <= chrono::TimeDelta::minutes(61),
        "{c}"
    );
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "j", "connection_id": "c2",
                "credentials": {"type": "OAUTH2", "access_token": "at-old", "refresh_token": "rt-old",
                    "expires_at": "2020-01-01T00:00:00Z",
                    "config_override": {"client_id": "own", "client_secret": "own-secret"}}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, c) = dev
        .send("GET", "/connections/c2?provider_config_key=j", None)
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "at-own", "{c}");
    assert_eq!(
        c["credentials"]["expires_at"], "2030-01-01T00:00:00.000Z",
        "{c}"
    );
    // What such an endpoint echoes is shown without the client secret
    // or the refresh token, in any form it has there: escaped in its
    // JSON, and in the Basic header's base64.
    let secret = r#"se"cr\et/x"#;
    // The secret in a Basic header of the form-encoded pair (j2), in a
    // JSON body (j3), in a Basic header of the pair as it is (j4).
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("cid2:{secret}"));
    let form_encoded = base64::engine::general_purpose::STANDARD.encode("cid2:se%22cr%5Cet%2Fx");
    for (key, provider, sent) in [
        ("j2", "jsonauth", form_encoded.as_str()),
        ("j3", "jsonbody", "se\\\"cr\\\\et/x"),
        ("j4", "rawbasic", encoded.as_str()),
    ] {
        let (status, body) = dev
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": key, "provider": provider,
                    "credentials": {"type": "OAUTH2", "client_id": "cid2", "client_secret": secret}})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = dev
            .send(
                "POST",
                "/connections",
                Some(json!({"provider_config_key": key, "connection_id": "e1",
                    "connection_config": {"region": "eu"},
                    "credentials": {"type": "OAUTH2", "access_token": "at-old", "refresh_token": "rt\"echo",
                        "expires_at": "2020-01-01T00:00:00Z"}})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = dev
            .send(
                "GET",
                &format!("/connections/e1?provider_config_key={key}"),
                None,
            )
            .await;
        assert!(status >= 400, "{status} {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("invalid_grant"), "{body}");
        // What was sent is what the endpoint echoes; none of it is shown.
        for shown in [
            sent,
            "rt\\\"echo",
            "cr\\\\et",
            encoded.as_str(),
            form_encoded.as_str(),
        ] {
            assert!(!message.contains(shown), "{key}: {shown} in {message}");
        }
        assert!(message.contains("***"), "{key}: {message}");
    }
    // A client-credentials token that expired is asked for again with
    // the connection's client.
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "cc", "provider": "ccprov"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "cc", "connection_id": "m1",
                "connection_config": {"oauth_scopes": "a,b"},
                "credentials": {"type": "OAUTH2_CC", "token": "cc-old", "client_id": "app",
                    "client_secret": "app-secret", "expires_at": "2020-01-01T00:00:00Z"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, c) = dev
        .send("GET", "/connections/m1?provider_config_key=cc", None)
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["token"], "cc-new", "{c}");
    assert_eq!(c["credentials"]["client_id"], "app", "kept: {c}");
    // A user connects their own client from the browser: its first token
    // is asked for at once; a client the provider refuses stores nothing.
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions",
            Some(json!({"end_user": {"id": "u9"}, "allowed_integrations": ["cc"],
                "integrations_config_defaults": {"cc": {"connection_config": {"oauth_scopes": "a,b"}}}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let connect_cc = |secret: &'static str| {
        let url = format!(
            "{}/oauth2/auth/cc?connect_session_token={token}",
            server.url()
        );
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(json!({"client_id": "app", "client_secret": secret}).to_string())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (
                status,
                serde_json::from_str::<Value>(&resp.text().await.unwrap()).unwrap(),
            )
        }
    };
    let (status, body) = connect_cc("wrong-secret").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("client_credentials_fetch_error")),
        "{body}"
    );
    assert!(!body.to_string().contains("wrong-secret"), "{body}");
    let (status, body) = connect_cc("app-secret").await;
    assert_eq!(status, 200, "{body}");
    let cc_cid = body["connectionId"].as_str().unwrap().to_string();
    let (status, c) = dev
        .send(
            "GET",
            &format!("/connections/{cc_cid}?provider_config_key=cc"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["token"], "cc-new", "{c}");
    assert_eq!(c["end_user"]["id"], "u9", "{c}");
    let (_, list) = dev.send("GET", "/connections?integrationId=cc", None).await;
    assert_eq!(
        list["connections"].as_array().map(Vec::len),
        Some(2),
        "m1 and the new one: {list}"
    );

    // Empty or null overrides are left out, as before they were taken.
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(
                json!({"provider_config_key": "j", "connection_id": "c4", "access_token": "t",
                "oauth_client_id_override": null, "oauth_client_secret_override": ""}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body["credentials"].get("config_override").is_none(),
        "{body}"
    );

    // A refresh that fails is told to the app (`on_auth_refresh_error`,
    // on by default).
    let hooks = MockServer::start(Arc::new(|_: &MockRequest| {
        MockResponse::json(200, &json!({}))
    }))
    .await
    .unwrap();
    let (status, body) = dev
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": format!("{}/hooks", hooks.url())})),
        )
        .await;
    assert_eq!(
        (status, &body["on_auth_refresh_error"]),
        (200, &json!(true)),
        "{body}"
    );
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "j", "connection_id": "c3",
                "credentials": {"type": "OAUTH2", "access_token": "at-old", "refresh_token": "rt-revoked",
                    "expires_at": "2020-01-01T00:00:00Z"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send("GET", "/connections/c3?provider_config_key=j", None)
        .await;
    assert_ne!(status, 200, "{body}");
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let refresh = loop {
        let auth = wait_auth(&hooks, 1).await;
        if let Some(r) = auth.iter().find(|a| a["operation"] == "refresh") {
            break r.clone();
        }
        assert!(
            std::time::Instant::now() < limit,
            "no refresh webhook: {auth:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(refresh["connectionId"], "c3", "{refresh}");
    assert_eq!(refresh["success"], false, "{refresh}");
    assert_eq!(refresh["authMode"], "OAUTH2", "{refresh}");
    assert_eq!(
        refresh["error"]["type"], "refresh_token_external_error",
        "{refresh}"
    );
    assert!(
        refresh["error"]["description"]
            .as_str()
            .unwrap()
            .contains("HTTP 400")
            && !refresh.to_string().contains("rt-revoked")
            && !refresh.to_string().contains("csecret"),
        "{refresh}"
    );
    server.stop().await;
}

/// The original's catalogue entries of the providers whose tokens it asks
/// for with code of its own (its `ProviderClient`), their real hosts sent
/// to the mock upstream.
const CLIENT_PROVIDERS: &str = "\
figma:
  auth_mode: OAUTH2
  authorization_url: https://www.figma.com/oauth
  token_url: https://api.figma.com/v1/oauth/token
  refresh_url: https://api.figma.com/v1/oauth/refresh
  token_request_auth_method: basic
  scope_separator: ','
  disable_pkce: true
  proxy:
    base_url: https://api.figma.com
coros:
  auth_mode: OAUTH2
  authorization_url: https://open.coros.com/oauth2/authorize
  token_url: https://open.coros.com/oauth2/accesstoken
  refresh_url: https://open.coros.com/oauth2/refresh-token
  authorization_params:
    response_type: code
  token_response_metadata:
    - openId
  token_params:
    grant_type: authorization_code
  refresh_params:
    grant_type: refresh_token
  proxy:
    base_url: https://open.coros.com
facebook:
  auth_mode: OAUTH2
  authorization_url: https://www.facebook.com/v22.0/dialog/oauth
  token_url: https://graph.facebook.com/v22.0/oauth/access_token
  proxy:
    base_url: https://graph.facebook.com
tiktok-ads:
  auth_mode: OAUTH2
  authorization_url: https://business-api.tiktok.com/portal/auth
  token_url: https://business-api.tiktok.com/open_api/v1.3/oauth2/access_token/
  proxy:
    base_url: https://business-api.tiktok.com/open_api/v1.3/
  token_params:
    grant_type: authorization_code
  authorization_url_replacements:
    client_id: app_id
tiktok-accounts:
  auth_mode: OAUTH2
  authorization_url: https://www.tiktok.com/v2/auth/authorize/
  token_url: https://business-api.tiktok.com/open_api/v1.3/tt_user/oauth2/token/
  refresh_url: https://business-api.tiktok.com/open_api/v1.3/tt_user/oauth2/refresh_token/
  proxy:
    base_url: https://business-api.tiktok.com/open_api/v1.3/
  authorization_params:
    response_type: code
  authorization_url_replacements:
    client_id: client_key
  token_params:
    grant_type: authorization_code
  refresh_params:
    grant_type: refresh_token
  scope_separator: ','
stripe-app:
  auth_mode: OAUTH2
  authorization_url: https://marketplace.stripe.com/oauth/v2/authorize
  token_url: https://api.stripe.com/v1/oauth/token
  disable_pkce: true
  proxy:
    base_url: https://api.stripe.com
  refresh_params:
    grant_type: refresh_token
braintree:
  auth_mode: OAUTH2
  authorization_url: https://api.braintreegateway.com/oauth/connect
  token_url: https://api.braintreegateway.com/oauth/access_tokens
  scope_separator: ','
  authorization_method: header
  body_format: json
  token_params:
    grant_type: authorization_code
  redirect_uri_metadata:
    - merchantId
  proxy:
    base_url: https://api.braintreegateway.com
";

/// A request's form body as pairs, in order.
fn form_of(req: &MockRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The providers' token endpoints, answering as each does (a request of
/// the wrong shape gets a 400 naming it, and the test's checks of what
/// was sent say which).
fn client_provider(req: &MockRequest) -> MockResponse {
    let json_body = req.header("content-type") == Some("application/json");
    let form: std::collections::HashMap<String, String> = form_of(req).into_iter().collect();
    match req.path.as_str() {
        // Figma's and Stripe's token URLs share a path: Figma's is JSON.
        "/v1/oauth/token" if json_body => MockResponse::json(
            200,
            &json!({"access_token": "fig-at", "refresh_token": "fig-rt", "expires_in": 7776000, "user_id": "u-1"}),
        ),
        "/v1/oauth/token" => match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => MockResponse::json(
                200,
                &json!({"access_token": "sk-at", "livemode": false, "refresh_token": "sk-rt",
                    "scope": "stripe_apps", "stripe_publishable_key": "pk_1", "stripe_user_id": "acct_1",
                    "token_type": "bearer", "other": "dropped"}),
            ),
            _ => MockResponse::json(
                200,
                &json!({"access_token": "sk-at-2", "livemode": false, "refresh_token": "sk-rt-2",
                    "scope": "stripe_apps", "stripe_publishable_key": "pk_1", "stripe_user_id": "acct_1",
                    "token_type": "bearer"}),
            ),
        },
        "/v1/oauth/refresh" => MockResponse::json(
            200,
            &json!({"access_token": "fig-at-2", "expires_in": 7776000}),
        ),
        "/oauth2/accesstoken" if form.get("code").map(String::as_str) == Some("coros-bad") => {
            MockResponse::json(
                200,
                &json!({"result": "5002", "message": "Unauthorized client ID"}),
            )
        }
        "/oauth2/accesstoken" => MockResponse::json(
            200,
            &json!({"access_token": "co-at", "refresh_token": "co-rt", "expires_in": 2592000,
                "openId": "oid-1", "result": "0000"}),
        ),
        "/oauth2/refresh-token"
            if form.get("refresh_token").map(String::as_str) == Some("co-rt") =>
        {
            MockResponse::json(200, &json!({"result": "0000", "message": "OK"}))
        }
        // A refusal that echoes what it was sent.
        "/oauth2/refresh-token" => MockResponse::json(
            200,
            &json!({"result": "1001",
                "message": format!("Service exceptions for {}", String::from_utf8_lossy(&req.body))}),
        ),
        "/v22.0/oauth/access_token"
            if req.query_param("grant_type") == Some("fb_exchange_token") =>
        {
            MockResponse::json(
                200,
                &json!({"access_token": "fb-at-long", "token_type": "bearer", "expires_in": 5183944}),
            )
        }
        "/v22.0/oauth/access_token" => MockResponse::json(
            200,
            &json!({"access_token": "fb-at", "token_type": "bearer", "expires_in": 5183944}),
        ),
        "/open_api/v1.3/oauth2/access_token/" => MockResponse::json(
            200,
            &json!({"code": 0, "message": "OK", "request_id": "req-ads",
                "data": {"access_token": "ads-at", "advertiser_ids": ["a1", "a2"], "scope": [4, 5]}}),
        ),
        "/open_api/v1.3/tt_user/oauth2/token/" => MockResponse::json(
            200,
            &json!({"code": 0, "message": "OK", "request_id": "req-1",
                "data": {"access_token": "tt-at", "token_type": "Bearer", "scope": "user.info.basic",
                    "expires_in": 86400, "refresh_token": "tt-rt", "refresh_token_expires_in": 31536000,
                    "open_id": "open-1", "unkept": true}}),
        ),
        "/open_api/v1.3/tt_user/oauth2/refresh_token/" => MockResponse::json(
            200,
            &json!({"code": 0, "message": "OK", "request_id": "req-2",
                "data": {"access_token": "tt-at-2", "token_type": "Bearer", "scope": "user.info.basic",
                    "expires_in": 86400, "refresh_token": "tt-rt-2", "refresh_token_expires_in": 31536000,
                    "open_id": "open-1"}}),
        ),
        _ => MockResponse::json(404, &json!({"error": "no such endpoint"})),
    }
}

/// Seconds from now to a credentials' `expires_at`.
fn expires_in(c: &Value) -> i64 {
    let at = chrono::DateTime::parse_from_rfc3339(
        c["credentials"]["expires_at"].as_str().unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("no expiry ({e}): {c}"));
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_with_their_own_token_requests_connect_and_refresh_as_the_original() {
    let mock = MockServer::start(Arc::new(client_provider)).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.upstream_redirect = Some(mock.url().parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), CLIENT_PROVIDERS).await;
    let dev = Client::new(&server, DEV_KEY);
    let base = server.url();
    let callback_url = format!("{base}/oauth/callback");
    let providers = [
        "figma",
        "coros",
        "facebook",
        "tiktok-ads",
        "tiktok-accounts",
        "stripe-app",
        "braintree",
    ];
    for p in providers {
        let (status, body) = dev
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": p, "provider": p,
                    "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"}})),
            )
            .await;
        assert_eq!(status, 200, "{p}: {body}");
    }
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u1"}, "allowed_integrations": providers}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();

    // The browser opens the flow of integration `key`, the user approves
    // (`code`): the authorization URL's query, and the callback's page.
    let connect = |key: &'static str, code: &'static str| {
        let (base, token) = (base.clone(), token.clone());
        async move {
            let resp = browser()
                .get(format!(
                    "{base}/oauth/connect/{key}?connect_session_token={token}"
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 302, "{key}: {}", resp.text().await.unwrap());
            let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
            let pairs: Vec<(String, String)> = location.query_pairs().into_owned().collect();
            let state = param(&pairs, "state").to_string();
            let (status, page) = callback(&base, &format!("code={code}&state={state}")).await;
            (pairs, status, page)
        }
    };
    // The connection integration `key` has, as GET /connection shows it.
    let connection = |key: &'static str, query: &'static str| {
        let dev = &dev;
        async move {
            let (_, list) = dev
                .send("GET", &format!("/connections?integrationId={key}"), None)
                .await;
            let cid = list["connections"][0]["connection_id"]
                .as_str()
                .unwrap_or_else(|| panic!("{key}: no connection in {list}"))
                .to_string();
            let (status, c) = dev
                .send(
                    "GET",
                    &format!(
                        "/connection/{cid}?provider_config_key={key}&refresh_token=true{query}"
                    ),
                    None,
                )
                .await;
            (status, c)
        }
    };
    let sent = |path: &str| -> Vec<MockRequest> {
        mock.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    };
    let stripe_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("csecret:")
    );

    // Figma: JSON with the client in it, the redirect URI in the query.
    let (_, status, page) = connect("figma", "fig-code").await;
    assert_eq!(status, 200, "{page}");
    let asked = sent("/v1/oauth/token");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].method, "POST");
    assert_eq!(asked[0].query, pairs(&[("redirect_uri", &callback_url)]));
    assert_eq!(asked[0].header("content-type"), Some("application/json"));
    assert_eq!(asked[0].header("authorization"), None, "not Basic");
    assert_eq!(
        asked[0].json(),
        Some(
            json!({"client_id": "cid", "client_secret": "csecret", "code": "fig-code",
            "grant_type": "authorization_code"})
        )
    );
    let (status, c) = connection("figma", "").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "fig-at", "{c}");
    assert_eq!(c["credentials"]["refresh_token"], "fig-rt", "{c}");
    assert_eq!(
        c["credentials"]["raw"],
        json!({"access_token": "fig-at", "refresh_token": "fig-rt", "expires_in": 7776000}),
        "what the original keeps: {c}"
    );
    assert!((7776000 - 60..=7776000).contains(&expires_in(&c)), "{c}");
    // A refresh: JSON to the refresh URL; the refresh token stays.
    let (status, c) = connection("figma", "&force_refresh=true").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "fig-at-2", "{c}");
    assert_eq!(c["credentials"]["refresh_token"], "fig-rt", "{c}");
    let asked = sent("/v1/oauth/refresh");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].header("content-type"), Some("application/json"));
    assert_eq!(
        asked[0].json(),
        Some(json!({"client_id": "cid", "client_secret": "csecret", "refresh_token": "fig-rt"}))
    );

    // Coros: a form; its refusal (an HTTP 200) named by result and
    // message; its openId kept in the connection's configuration.
    let (_, status, page) = connect("coros", "coros-bad").await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("5002") && page.contains("Unauthorized client ID"),
        "{page}"
    );
    let (_, status, page) = connect("coros", "coros-code").await;
    assert_eq!(status, 200, "{page}");
    let asked = sent("/oauth2/accesstoken");
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(
        asked[1].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        form_of(&asked[1]),
        pairs(&[
            ("client_id", "cid"),
            ("redirect_uri", &callback_url),
            ("code", "coros-code"),
            ("client_secret", "csecret"),
            ("grant_type", "authorization_code"),
        ])
    );
    let (status, c) = connection("coros", "").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "co-at", "{c}");
    assert_eq!(c["credentials"]["refresh_token"], "co-rt", "{c}");
    assert_eq!(c["connection_config"]["openId"], "oid-1", "{c}");
    assert_eq!(
        c["credentials"]["raw"],
        json!({"access_token": "co-at", "refresh_token": "co-rt", "expires_in": 2592000, "openId": "oid-1"}),
        "{c}"
    );
    // Its refresh says only that it worked: the same tokens, 30 days.
    let (status, c) = connection("coros", "&force_refresh=true").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "co-at", "{c}");
    assert_eq!(c["credentials"]["refresh_token"], "co-rt", "{c}");
    assert!((2592000 - 60..=2592000).contains(&expires_in(&c)), "{c}");
    let asked = sent("/oauth2/refresh-token");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        form_of(&asked[0]),
        pairs(&[
            ("client_id", "cid"),
            ("refresh_token", "co-rt"),
            ("client_secret", "csecret"),
            ("grant_type", "refresh_token"),
        ])
    );
    // A refused refresh names Coros' result, without the secrets its
    // message echoes.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "coros", "connection_id": "co-dead",
                "credentials": {"type": "OAUTH2", "access_token": "co-at-old", "refresh_token": "co-rt-dead",
                    "expires_at": "2020-01-01T00:00:00Z"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send("GET", "/connection/co-dead?provider_config_key=coros", None)
        .await;
    assert!(status >= 400, "{status} {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("1001") && message.contains("Service exceptions"),
        "{body}"
    );
    assert!(
        !message.contains("co-rt-dead") && !message.contains("csecret"),
        "{body}"
    );

    // Facebook: JSON with PKCE's verifier, the redirect URI in the query
    // too; no refresh token, its token exchanged for a longer one.
    let (auth, status, page) = connect("facebook", "fb-code").await;
    assert_eq!(status, 200, "{page}");
    let asked = sent("/v22.0/oauth/access_token");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].query, pairs(&[("redirect_uri", &callback_url)]));
    let body = asked[0].json().unwrap_or_default();
    let verifier = body["code_verifier"].as_str().unwrap_or_default();
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier)),
        param(&auth, "code_challenge"),
        "{body}"
    );
    assert_eq!(
        body,
        json!({"client_id": "cid", "client_secret": "csecret", "code": "fb-code",
            "redirect_uri": callback_url, "code_verifier": verifier})
    );
    let (status, c) = connection("facebook", "").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "fb-at", "{c}");
    assert!(c["credentials"].get("refresh_token").is_none(), "{c}");
    assert_eq!(
        c["credentials"]["raw"],
        json!({"access_token": "fb-at", "expires_in": 5183944}),
        "{c}"
    );
    let (status, c) = connection("facebook", "&force_refresh=true").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "fb-at-long", "{c}");
    assert!((5183944 - 60..=5183944).contains(&expires_in(&c)), "{c}");
    let asked = sent("/v22.0/oauth/access_token");
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(
        asked[1].query,
        pairs(&[
            ("client_id", "cid"),
            ("client_secret", "csecret"),
            ("grant_type", "fb_exchange_token"),
            ("fb_exchange_token", "fb-at"),
        ])
    );
    assert!(asked[1].body.is_empty(), "{:?}", asked[1].body);
    assert_eq!(asked[1].header("content-type"), None);

    // TikTok Ads: TikTok's names for the client; the token and the
    // advertisers from the answer's `data`; never refreshed.
    let (_, status, page) = connect("tiktok-ads", "ads-code").await;
    assert_eq!(status, 200, "{page}");
    let asked = sent("/open_api/v1.3/oauth2/access_token/");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].header("content-type"), Some("application/json"));
    assert_eq!(
        asked[0].json(),
        Some(json!({"secret": "csecret", "app_id": "cid", "auth_code": "ads-code"}))
    );
    let (status, c) = connection("tiktok-ads", "&force_refresh=true").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "ads-at", "{c}");
    assert!(c["credentials"].get("expires_at").is_none(), "{c}");
    assert_eq!(
        c["credentials"]["raw"],
        json!({"access_token": "ads-at", "advertiser_ids": ["a1", "a2"], "scope": [4, 5],
            "request_id": "req-ads"}),
        "{c}"
    );
    assert_eq!(sent("/open_api/v1.3/oauth2/access_token/").len(), 1);

    // TikTok Accounts: JSON, the tokens under `data`.
    let (_, status, page) = connect("tiktok-accounts", "tt-code").await;
    assert_eq!(status, 200, "{page}");
    let asked = sent("/open_api/v1.3/tt_user/oauth2/token/");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        asked[0].json(),
        Some(json!({"client_id": "cid", "client_secret": "csecret",
            "grant_type": "authorization_code", "auth_code": "tt-code", "redirect_uri": callback_url}))
    );
    let (status, c) = connection("tiktok-accounts", "").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "tt-at", "{c}");
    assert_eq!(c["credentials"]["refresh_token"], "tt-rt", "{c}");
    assert_eq!(
        c["credentials"]["raw"],
        json!({"access_token": "tt-at", "token_type": "Bearer", "scope": "user.info.basic",
            "expires_in": 86400, "refresh_token": "tt-rt", "refresh_token_expires_in": 31536000,
            "open_id": "open-1", "request_id": "req-1"}),
        "{c}"
    );
    let (status, c) = connection("tiktok-accounts", "&force_refresh=true").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "tt-at-2", "{c}");
    assert_eq!(c["credentials"]["refresh_token"], "tt-rt-2", "{c}");
    assert_eq!(c["credentials"]["raw"]["request_id"], "req-2", "{c}");
    assert!((86400 - 60..=86400).contains(&expires_in(&c)), "{c}");
    let asked = sent("/open_api/v1.3/tt_user/oauth2/refresh_token/");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        asked[0].json(),
        Some(json!({"client_id": "cid", "client_secret": "csecret",
            "grant_type": "refresh_token", "refresh_token": "tt-rt"}))
    );

    // Stripe App: a form, the client secret alone as Basic; an hour.
    let (_, status, page) = connect("stripe-app", "sk-code").await;
    assert_eq!(status, 200, "{page}");
    let stripe: Vec<MockRequest> = sent("/v1/oauth/token")
        .into_iter()
        .filter(|r| r.header("content-type") != Some("application/json"))
        .collect();
    assert_eq!(stripe.len(), 1, "{stripe:?}");
    assert_eq!(
        stripe[0].header("authorization"),
        Some(stripe_basic.as_str())
    );
    assert_eq!(
        stripe[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        form_of(&stripe[0]),
        pairs(&[
            ("grant_type", "authorization_code"),
            ("code", "sk-code"),
            ("redirect_uri", &callback_url),
        ])
    );
    let (status, c) = connection("stripe-app", "").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "sk-at", "{c}");
    assert_eq!(
        c["credentials"]["raw"],
        json!({"access_token": "sk-at", "livemode": false, "refresh_token": "sk-rt",
            "scope": "stripe_apps", "stripe_publishable_key": "pk_1", "stripe_user_id": "acct_1",
            "token_type": "bearer", "expires_in": 3600}),
        "{c}"
    );
    assert!((3600 - 60..=3600).contains(&expires_in(&c)), "{c}");
    let (status, c) = connection("stripe-app", "&force_refresh=true").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "sk-at-2", "{c}");
    assert_eq!(c["credentials"]["refresh_token"], "sk-rt-2", "{c}");
    assert!((3600 - 60..=3600).contains(&expires_in(&c)), "{c}");
    let stripe: Vec<MockRequest> = sent("/v1/oauth/token")
        .into_iter()
        .filter(|r| r.header("content-type") != Some("application/json"))
        .collect();
    assert_eq!(stripe.len(), 2, "{stripe:?}");
    assert_eq!(
        stripe[1].header("authorization"),
        Some(stripe_basic.as_str())
    );
    assert_eq!(
        form_of(&stripe[1]),
        pairs(&[("grant_type", "refresh_token"), ("refresh_token", "sk-rt")])
    );

    // Braintree: refused before the user is sent there, and its imported
    // connections are not refreshed; nothing reaches its gateway.
    let resp = browser()
        .get(format!(
            "{base}/oauth/connect/braintree?connect_session_token={token}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("does not support the token exchange of provider `braintree`"),
        "{page}"
    );
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "braintree", "connection_id": "bt",
                "credentials": {"type": "OAUTH2", "access_token": "bt-at", "refresh_token": "bt-rt",
                    "expires_at": "2020-01-01T00:00:00Z"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send("GET", "/connection/bt?provider_config_key=braintree", None)
        .await;
    assert!(status >= 400, "{status} {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does not support the token exchange of provider `braintree`"),
        "{body}"
    );
    assert!(sent("/oauth/access_tokens").is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_no_flow_names_close_and_a_browser_neither_ends_others_waits_nor_widens_scopes()
{
    let provider = Arc::new(Provider {
        approved: Mutex::new(None),
        refuse: Mutex::new(false),
        issued: Mutex::new(0),
    });
    let mock = MockServer::start(provider_handler(provider.clone()))
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let grace = std::time::Duration::from_secs(3);
    config.websocket_name_grace = grace;
    // A quarter of them, 4, may be such sockets.
    config.max_connections = 16;
    let server = start_with(config, &MasterKey::generate(), &providers_yaml(&mock.url())).await;
    let dev = Client::new(&server, DEV_KEY);
    let base = server.url();
    for key in ["oauth-int", "other-int"] {
        let (status, body) = dev
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": key, "provider": "mockoauth",
                    "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret", "scopes": "read,write"}})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let token_of = |body: Value| body["data"]["token"].as_str().unwrap().to_string();
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u1"}, "allowed_integrations": ["oauth-int"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token = token_of(body);
    let closed = |end: Option<Result<tokio_tungstenite::tungstenite::Message, _>>| {
        matches!(
            end,
            None | Some(Err(_)) | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
        )
    };

    // Sockets no flow names hold their slots a grace only: past it each
    // is told why and closed, and the slots take new ones.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(websocket(&base).await.1);
    }
    let url = format!("{}/", base.replacen("http://", "ws://", 1));
    let (mut refused, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let said = next_json(&mut refused).await;
    assert_eq!(said["error_type"], "too_many_clients", "{said}");
    for ws in &mut idle {
        let said = next_json(ws).await;
        assert_eq!(
            (&said["message_type"], &said["error_type"]),
            (&json!("error"), &json!("websocket_unused")),
            "{said}"
        );
        assert!(
            said["error_desc"]
                .as_str()
                .unwrap()
                .contains("ws_client_id"),
            "{said}"
        );
        let end = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("closed after the error");
        assert!(closed(end), "the socket is closed");
    }
    let (_, mut fresh) = websocket(&base).await;

    // A socket a flow names waits past the grace for the flow's result.
    let (ws_id, mut named) = websocket(&base).await;
    let (_, pairs) = authorize(
        &base,
        &format!("connect_session_token={token}&ws_client_id={ws_id}"),
    )
    .await;
    let state = param(&pairs, "state").to_string();
    assert!(
        tokio::time::timeout(grace + std::time::Duration::from_secs(1), named.next())
            .await
            .is_err(),
        "a named socket is not closed at the grace"
    );
    let (status, _) = callback(&base, &format!("state={state}&error=access_denied")).await;
    assert_eq!(status, 400);
    let said = next_json(&mut named).await;
    assert_eq!(said["error_type"], "callback_err", "{said}");
    // The unnamed one opened meanwhile has been closed.
    assert_eq!(
        next_json(&mut fresh).await["error_type"],
        "websocket_unused"
    );

    // A request without a session the server issued (none, or a made-up
    // token) tells no socket, however it names it: the socket's own wait
    // goes on, to its grace.
    let (ws_id, mut other) = websocket(&base).await;
    for query in [
        format!("ws_client_id={ws_id}"),
        format!(
            "connect_session_token=nango_connect_session_{}&ws_client_id={ws_id}",
            "0".repeat(64)
        ),
    ] {
        let resp = browser()
            .get(format!("{base}/oauth/connect/oauth-int?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    let said = next_json(&mut other).await;
    assert_eq!(said["error_type"], "websocket_unused", "{said}");
    // A session's own refusal (an integration it does not allow) is told.
    let (ws_id, mut waiting) = websocket(&base).await;
    let resp = browser()
        .get(format!(
            "{base}/oauth/connect/other-int?connect_session_token={token}&ws_client_id={ws_id}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let said = next_json(&mut waiting).await;
    assert_eq!(said["error_type"], "integration_not_allowed", "{said}");
    // So is a session's the app ended meanwhile: the page says why.
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u2"}, "allowed_integrations": ["oauth-int"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let ended = token_of(body);
    let (status, _) = Client::at(&base, &ended)
        .send("DELETE", "/connect/session", None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = Client::at(&base, &ended)
        .send("GET", "/connect/session", None)
        .await;
    assert_eq!(status, 401, "an ended session's token does not work");
    let (ws_id, mut waiting) = websocket(&base).await;
    let resp = browser()
        .get(format!(
            "{base}/oauth/connect/oauth-int?connect_session_token={ended}&ws_client_id={ws_id}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let said = next_json(&mut waiting).await;
    assert_eq!(
        said["error_type"], "unknown_connect_session_token",
        "{said}"
    );

    // The scopes are the app's: the browser's `authorization_params`
    // cannot name others (its other parameters are taken).
    let widen = "authorization_params[scope]=admin&authorization_params[user_scope]=admin&authorization_params[Scope]=admin&authorization_params[prompt]=login";
    let (_, pairs) = authorize(&base, &format!("connect_session_token={token}&{widen}")).await;
    assert_eq!(param(&pairs, "scope"), "read,write");
    assert_eq!(param(&pairs, "prompt"), "login");
    assert!(
        !pairs
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("user_scope") || k == "Scope"),
        "{pairs:?}"
    );
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u3"}, "allowed_integrations": ["oauth-int"],
            "integrations_config_defaults": {"oauth-int": {"connection_config": {"oauth_scopes_override": "a,b"}}}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let narrowed = token_of(body);
    let (_, pairs) = authorize(
        &base,
        &format!("connect_session_token={narrowed}&{widen}&params[oauth_scopes_override]=admin"),
    )
    .await;
    assert_eq!(param(&pairs, "scope"), "a,b");
    // The session's own `authorization_params` are the app's.
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u4"}, "allowed_integrations": ["oauth-int"],
            "integrations_config_defaults": {"oauth-int": {"authorization_params": {"scope": "chosen"}}}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let chosen = token_of(body);
    let (_, pairs) = authorize(&base, &format!("connect_session_token={chosen}&{widen}")).await;
    assert_eq!(param(&pairs, "scope"), "chosen");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_websockets_of_one_client_do_not_keep_a_real_flows_socket_out() {
    let provider = Arc::new(Provider {
        approved: Mutex::new(None),
        refuse: Mutex::new(false),
        issued: Mutex::new(0),
    });
    let mock = MockServer::start(provider_handler(provider.clone()))
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    // A quarter of them, 4, may wait; the grace (a minute) does not close
    // the unnamed ones during the test.
    config.max_connections = 16;
    let server = start_with(config, &MasterKey::generate(), &providers_yaml(&mock.url())).await;
    let dev = Client::new(&server, DEV_KEY);
    let base = server.url();
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "oauth-int", "provider": "mockoauth",
                "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = session(
        &dev,
        json!({"end_user": {"id": "u1"}, "allowed_integrations": ["oauth-int"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let url = format!("{}/", base.replacen("http://", "ws://", 1));

    // One client takes every place with sockets it never names: a socket
    // opened at once after them is refused (theirs are new)…
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(websocket(&base).await.1);
    }
    let (mut refused, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(
        next_json(&mut refused).await["error_type"],
        "too_many_clients"
    );
    // …but once they have waited longer than a browser takes to name its
    // socket, a real flow's socket takes the place of the oldest, which is
    // told why.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let (ws_id, mut real) = websocket(&base).await;
    let said = next_json(&mut idle[0]).await;
    assert_eq!(said["error_type"], "websocket_unused", "{said}");
    let (_, pairs) = authorize(
        &base,
        &format!("connect_session_token={token}&ws_client_id={ws_id}"),
    )
    .await;
    let state = param(&pairs, "state").to_string();

    // New unnamed sockets take the other old ones' places, never the
    // named one's: with the places full of new unnamed sockets and the
    // named one, the next is refused.
    let mut newer = Vec::new();
    for old in &mut idle[1..] {
        newer.push(websocket(&base).await.1);
        let said = next_json(old).await;
        assert_eq!(said["error_type"], "websocket_unused", "{said}");
    }
    let (mut refused, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(
        next_json(&mut refused).await["error_type"],
        "too_many_clients"
    );
    // The real flow's socket still gets its result.
    let (status, _) = callback(&base, &format!("state={state}&error=access_denied")).await;
    assert_eq!(status, 400);
    let said = next_json(&mut real).await;
    assert_eq!(said["error_type"], "callback_err", "{said}");
    server.stop().await;
}
