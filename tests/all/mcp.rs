//! MCP servers' OAuth (`MCP_OAUTH2`): an integration whose provider
//! registers clients (`client_registration: dynamic`) gets one when it is
//! created; a user connects through the OAuth2 flow with PKCE, as a
//! public client; tokens are refreshed with the client id alone.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer};

use crate::server::{Client, DEV_KEY, start_with};

/// What the MCP server was sent: registrations and token requests.
#[derive(Default)]
struct Seen {
    registrations: Vec<Value>,
    token_requests: Vec<Vec<(String, String)>>,
}

async fn mcp_server(seen: Arc<Mutex<Seen>>) -> MockServer {
    MockServer::start(Arc::new(move |req: &MockRequest| {
        let form = || -> Vec<(String, String)> {
            url::form_urlencoded::parse(&req.body)
                .into_owned()
                .collect()
        };
        match req.path.as_str() {
            "/register" => {
                let body = req.json().unwrap_or_default();
                seen.lock().unwrap().registrations.push(body);
                MockResponse::json(
                    201,
                    &json!({"client_id": "dyn-client-1",
                    "token_endpoint_auth_method": "none"}),
                )
            }
            "/broken/register" => MockResponse::json(503, &json!({"error": "registration closed"})),
            "/token" => {
                let form = form();
                seen.lock().unwrap().token_requests.push(form.clone());
                let get = |k: &str| {
                    form.iter()
                        .find(|(have, _)| have == k)
                        .map(|(_, v)| v.as_str())
                };
                let public =
                    get("client_id") == Some("dyn-client-1") && get("client_secret").is_none();
                match (get("grant_type"), public) {
                    (Some("authorization_code"), true)
                        if get("code") == Some("c0de")
                            && get("code_verifier").is_some_and(|v| v.len() >= 43) =>
                    {
                        MockResponse::json(
                            200,
                            &json!({"access_token": "mcp-at-1",
                            "refresh_token": "mcp-rt", "expires_in": 3600}),
                        )
                    }
                    (Some("refresh_token"), true) if get("refresh_token") == Some("mcp-rt") => {
                        MockResponse::json(
                            200,
                            &json!({"access_token": "mcp-at-2",
                            "refresh_token": "mcp-rt", "expires_in": 3600}),
                        )
                    }
                    _ => MockResponse::json(400, &json!({"error": "invalid_grant"})),
                }
            }
            _ => {
                if req.header("authorization") == Some("Bearer mcp-at-1")
                    || req.header("authorization") == Some("Bearer mcp-at-2")
                {
                    MockResponse::json(200, &json!({"jsonrpc": "2.0", "result": {"tools": []}}))
                } else {
                    MockResponse::json(401, &json!({"error": "invalid_token"}))
                }
            }
        }
    }))
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_server_registers_sluice_and_its_users_connect_through_the_oauth_flow() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mock = mcp_server(seen.clone()).await;
    let url = mock.url();
    let providers = format!(
        "mcpish:\n  auth_mode: MCP_OAUTH2\n  client_registration: dynamic\n  authorization_url: {url}/authorize\n  token_url: {url}/token\n  registration_url: {url}/register\n  registration_params:\n    response_types: [code]\n    grant_types: [authorization_code, refresh_token]\n  authorization_params:\n    response_type: code\n  token_params:\n    grant_type: authorization_code\n  refresh_params:\n    grant_type: refresh_token\n  disable_pkce: true\n  proxy:\n    base_url: {url}\n\
         mcp-broken:\n  auth_mode: MCP_OAUTH2\n  client_registration: dynamic\n  authorization_url: {url}/authorize\n  token_url: {url}/token\n  registration_url: {url}/broken/register\n\
         mcp-static:\n  auth_mode: MCP_OAUTH2\n  client_registration: static\n  authorization_url: {url}/authorize\n  token_url: {url}/token\n  proxy:\n    base_url: {url}\n"
    );
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let dev = Client::new(&server, DEV_KEY);

    // Created: a public client registered for it, redirected to this
    // server's callback.
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "mcp", "provider": "mcpish"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let registration = seen.lock().unwrap().registrations[0].clone();
    assert_eq!(
        registration["redirect_uris"],
        json!([format!("{}/oauth/callback", server.url())]),
        "{registration}"
    );
    assert_eq!(registration["token_endpoint_auth_method"], "none");
    assert_eq!(
        registration["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert!(
        registration["client_name"]
            .as_str()
            .unwrap()
            .contains("dev"),
        "{registration}"
    );
    let (status, body) = dev
        .send("GET", "/integrations/mcp?include=credentials", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["credentials"]["type"], "MCP_OAUTH2", "{body}");
    assert_eq!(
        body["data"]["credentials"]["client_id"], "dyn-client-1",
        "{body}"
    );

    // A registration refused: named, no integration.
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "broken", "provider": "mcp-broken"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["code"], "client_registration_failed",
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("503"),
        "{body}"
    );
    let (status, _) = dev.send("GET", "/integrations/broken", None).await;
    assert_eq!(status, 404);
    // A provider without registration takes the app's own client, which
    // may be public.
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "st", "provider": "mcp-static"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client_id"),
        "{body}"
    );
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "st", "provider": "mcp-static",
                        "credentials": {"type": "MCP_OAUTH2", "client_id": "mine"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // A user connects: PKCE whatever the definition says, the registered
    // client, no secret.
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions",
            Some(json!({"end_user": {"id": "u1"}, "allowed_integrations": ["mcp"]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = browser
        .get(format!(
            "{}/oauth/connect/mcp?connect_session_token={token}",
            server.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "{}", resp.text().await.unwrap());
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert!(
        location.as_str().starts_with(&format!("{url}/authorize?")),
        "{location}"
    );
    let pairs: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    let param = |k: &str| {
        pairs
            .iter()
            .find(|(have, _)| have == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(param("client_id").as_deref(), Some("dyn-client-1"));
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert!(param("code_challenge").is_some(), "{location}");
    let state = param("state").unwrap();
    let resp = browser
        .get(format!(
            "{}/oauth/callback?code=c0de&state={state}",
            server.url()
        ))
        .send()
        .await
        .unwrap();
    let (status, page) = (resp.status().as_u16(), resp.text().await.unwrap());
    assert_eq!(status, 200, "{page}");
    let (_, body) = dev.send("GET", "/connections?endUserId=u1", None).await;
    let cid = body["connections"][0]["connection_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = dev
        .send_as(
            ("mcp", &cid),
            "POST",
            "/proxy/mcp",
            Some(json!({"jsonrpc": "2.0", "method": "tools/list", "id": 1})),
        )
        .await;
    assert_eq!((status, &body["jsonrpc"]), (200, &json!("2.0")), "{body}");

    // Refreshed with the client id alone.
    let (status, body) = dev
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key=mcp&force_refresh=true"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credentials"]["access_token"], "mcp-at-2", "{body}");
    assert_eq!(seen.lock().unwrap().token_requests.len(), 2);

    // Tokens from elsewhere are imported as OAuth2's.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "mcp", "connection_id": "imported",
                        "credentials": {"type": "OAUTH2", "access_token": "mcp-at-1"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    server.stop().await;
}

/// Generic MCP servers (`MCP_OAUTH2_GENERIC`), all served by one mock
/// (the server's upstream redirect): `https://mcp.example.com/<case>`,
/// whose authorization server is `https://auth.example.com/<case>`.
/// `mcp` is a good one (a public client); `secret` registers a client
/// with a secret (Basic at the token endpoint); the others each break
/// one rule: `http-token`, `local-token` (its token endpoint),
/// `no-register`, `no-s256`, `wrong-issuer`, `wrong-resource`.
async fn generic_mcp_server(seen: Arc<Mutex<Seen>>) -> MockServer {
    MockServer::start(Arc::new(move |req: &MockRequest| {
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.body)
            .into_owned()
            .collect();
        let get = |k: &str| {
            form.iter()
                .find(|(have, _)| have == k)
                .map(|(_, v)| v.as_str())
        };
        let path = req.path.as_str();
        if req.method == "GET"
            && let Some(case) = path.strip_prefix("/.well-known/oauth-protected-resource/")
        {
            let resource = if case == "wrong-resource" {
                "https://elsewhere.example.com/mcp".to_string()
            } else {
                format!("https://mcp.example.com/{case}")
            };
            return MockResponse::json(
                200,
                &json!({"resource": resource,
                        "authorization_servers": [format!("https://auth.example.com/{case}")],
                        "scopes_supported": ["tools:read", "tools:call"]}),
            );
        }
        if req.method == "GET"
            && let Some(case) = path.strip_prefix("/.well-known/oauth-authorization-server/")
        {
            let at = format!("https://auth.example.com/{case}");
            let mut m = json!({"issuer": at,
                    "authorization_endpoint": format!("{at}/authorize"),
                    "token_endpoint": format!("{at}/token"),
                    "registration_endpoint": format!("{at}/register"),
                    "response_types_supported": ["code"],
                    "code_challenge_methods_supported": ["S256"],
                    "service_documentation": "x".repeat(10_000)});
            match case {
                "http-token" => {
                    m["token_endpoint"] = json!(format!("http://auth.example.com/{case}/token"));
                }
                "local-token" => m["token_endpoint"] = json!("https://localhost/token"),
                "no-register" => {
                    m.as_object_mut().unwrap().remove("registration_endpoint");
                }
                "no-s256" => m["code_challenge_methods_supported"] = json!(["plain"]),
                "wrong-issuer" => m["issuer"] = json!("https://evil.example.com"),
                _ => {}
            }
            return MockResponse::json(200, &m);
        }
        match (req.method.as_str(), path) {
            ("POST", "/mcp/register" | "/secret/register") => {
                seen.lock()
                    .unwrap()
                    .registrations
                    .push(req.json().unwrap_or_default());
                if path == "/secret/register" {
                    MockResponse::json(
                        201,
                        &json!({"client_id": "conf-1", "client_secret": "conf-s3cret"}),
                    )
                } else {
                    MockResponse::json(201, &json!({"client_id": "gen-1"}))
                }
            }
            ("POST", "/mcp/token" | "/secret/token") => {
                let mut seen_form = form.clone();
                if let Some(auth) = req.header("authorization") {
                    seen_form.push(("authorization-header".into(), auth.to_string()));
                }
                seen.lock().unwrap().token_requests.push(seen_form);
                let basic = format!(
                    "Basic {}",
                    base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        "conf-1:conf-s3cret"
                    )
                );
                let client_ok = if path == "/secret/token" {
                    req.header("authorization") == Some(basic.as_str())
                        && get("client_secret").is_none()
                } else {
                    get("client_id") == Some("gen-1") && get("client_secret").is_none()
                };
                let case = &path[1..path.len() - "/token".len()];
                let resource = format!("https://mcp.example.com/{case}");
                let ok = client_ok && get("resource") == Some(resource.as_str());
                match (get("grant_type"), ok) {
                    (Some("authorization_code"), true) if get("code") == Some("c0de") => {
                        MockResponse::json(
                            200,
                            &json!({"access_token": "gen-at-1", "refresh_token": "gen-rt",
                                    "expires_in": 3600}),
                        )
                    }
                    (Some("refresh_token"), true) if get("refresh_token") == Some("gen-rt") => {
                        MockResponse::json(
                            200,
                            &json!({"access_token": "gen-at-2", "expires_in": 3600}),
                        )
                    }
                    _ => MockResponse::json(400, &json!({"error": "invalid_grant"})),
                }
            }
            ("GET", "/mcp/tools") => match req.header("authorization") {
                Some("Bearer gen-at-1") | Some("Bearer gen-at-2") => {
                    MockResponse::json(200, &json!({"tools": ["search"]}))
                }
                _ => MockResponse::json(401, &json!({"error": "invalid_token"})),
            },
            _ => MockResponse::json(404, &json!({"error": "not found"})),
        }
    }))
    .await
    .unwrap()
}

/// The value of `key` in a query's pairs.
fn pair(url: &url::Url, key: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("no {key} in {url}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_connects_a_generic_mcp_server_sluice_finds_and_registers_with() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mock = generic_mcp_server(seen.clone()).await;
    let providers = "mcpgen:\n  auth_mode: MCP_OAUTH2_GENERIC\n  connection_config:\n    mcp_server_url:\n      type: string\n      title: MCP Server URL\n  proxy:\n    base_url: ${connectionConfig.mcp_server_url}\n";
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.upstream_redirect = Some(mock.url().parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), providers).await;
    let base = server.url();
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "gen", "provider": "mcpgen"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions",
            Some(json!({"end_user": {"id": "u1"}, "allowed_integrations": ["gen"]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let open = |params: String| {
        let url = format!("{base}/oauth/connect/gen?connect_session_token={token}{params}");
        let browser = browser.clone();
        async move {
            let resp = browser.get(url).send().await.unwrap();
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get("location")
                .map(|l| url::Url::parse(l.to_str().unwrap()).unwrap());
            (status, location, resp.text().await.unwrap())
        }
    };
    let server_is = |url: &str| format!("&params[mcp_server_url]={url}");
    let callback = |state: String| {
        let url = format!("{base}/oauth/callback?code=c0de&state={state}");
        let browser = browser.clone();
        async move {
            let resp = browser.get(url).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };

    // Servers sluice will not go to, or cannot authorize with: named.
    for (params, words) in [
        (String::new(), "params[mcp_server_url]"),
        (
            server_is("http://mcp.example.com/mcp"),
            "URL `http://mcp.example.com/mcp` must be an https URL",
        ),
        (server_is("https://127.0.0.1/mcp"), "domain name"),
        (server_is("https://localhost/mcp"), "not a public host"),
        (server_is("https://mcp.example.com/mcp%3Fx=1"), "query"),
        (
            server_is("https://nometa.example.com"),
            "found no OAuth metadata",
        ),
        (
            server_is("https://mcp.example.com/http-token"),
            "token_endpoint `http://auth.example.com/http-token/token` must be an https URL",
        ),
        (
            server_is("https://mcp.example.com/local-token"),
            "token_endpoint `https://localhost/token` is not a public host",
        ),
        (
            server_is("https://mcp.example.com/no-register"),
            "registers no clients",
        ),
        (server_is("https://mcp.example.com/no-s256"), "S256"),
        (
            server_is("https://mcp.example.com/wrong-issuer"),
            "names another issuer",
        ),
        (
            server_is("https://mcp.example.com/wrong-resource"),
            "describes `https://elsewhere.example.com/mcp`",
        ),
    ] {
        let (status, _, page) = open(params.clone()).await;
        assert_eq!(status, 400, "{params}: {page}");
        assert!(page.contains(words), "{params}: {page}");
    }
    assert!(seen.lock().unwrap().registrations.is_empty());

    // The user names the server; sluice finds its authorization server,
    // registers a public client for this connection and sends the user
    // there with PKCE, the resource's scopes and the resource. What the
    // browser gives for what discovery sets, or for a client, is not
    // taken.
    let (status, location, page) = open(format!(
        "{}&params[oauth_token_url]=https://evil.example.com/steal&params[oauth_resource_url]=https://evil.example.com/r&params[oauth_client_id_override]=leak&params[oauth_client_secret_override]=leak",
        server_is("https://mcp.example.com/mcp")
    ))
    .await;
    assert_eq!(status, 302, "{page}");
    let location = location.unwrap();
    assert!(
        location
            .as_str()
            .starts_with("https://auth.example.com/mcp/authorize?"),
        "{location}"
    );
    assert_eq!(pair(&location, "client_id"), "gen-1");
    assert_eq!(pair(&location, "code_challenge_method"), "S256");
    assert_eq!(pair(&location, "scope"), "tools:read tools:call");
    assert_eq!(pair(&location, "resource"), "https://mcp.example.com/mcp");
    assert_eq!(
        pair(&location, "redirect_uri"),
        format!("{base}/oauth/callback")
    );
    let registration = seen.lock().unwrap().registrations[0].clone();
    assert_eq!(
        registration["redirect_uris"],
        json!([format!("{base}/oauth/callback")])
    );
    assert_eq!(registration["token_endpoint_auth_method"], "none");
    assert_eq!(registration["scope"], "tools:read tools:call");

    let (status, page) = callback(pair(&location, "state")).await;
    assert_eq!(status, 200, "{page}");
    // The code went with PKCE's verifier, the client id alone and the
    // resource.
    let exchange = seen.lock().unwrap().token_requests[0].clone();
    let verifier = &exchange
        .iter()
        .find(|(k, _)| k == "code_verifier")
        .unwrap()
        .1;
    use base64::Engine as _;
    use sha2::Digest as _;
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier)),
        pair(&location, "code_challenge")
    );
    let (_, body) = dev.send("GET", "/connections?endUserId=u1", None).await;
    let cid = body["connections"][0]["connection_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, c) = dev
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key=gen"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["credentials"]["access_token"], "gen-at-1", "{c}");
    let cc = &c["connection_config"];
    assert_eq!(cc["mcp_server_url"], "https://mcp.example.com/mcp", "{c}");
    assert_eq!(
        cc["oauth_token_url"], "https://auth.example.com/mcp/token",
        "{c}"
    );
    assert_eq!(cc["oauth_resource_url"], "https://mcp.example.com/mcp");
    assert_eq!(cc["oauth_client_auth"], "none");
    let metadata: Value = serde_json::from_str(cc["oauth_metadata"].as_str().unwrap()).unwrap();
    assert_eq!(
        metadata["registration_endpoint"],
        "https://auth.example.com/mcp/register"
    );
    // What sluice does not use is not kept; nothing the browser named for
    // the client either.
    assert!(
        metadata.get("service_documentation").is_none(),
        "{metadata}"
    );
    assert!(!c.to_string().contains("leak"), "{c}");

    // Requests go to the server the user named, with the token.
    let (status, body) = dev
        .send_as(("gen", &cid), "GET", "/proxy/tools", None)
        .await;
    assert_eq!(
        (status, &body["tools"]),
        (200, &json!(["search"])),
        "{body}"
    );

    // Refreshed at the token endpoint discovery found, with the
    // connection's own client and the resource.
    let (status, body) = dev
        .send(
            "GET",
            &format!(
                "/connections/{cid}?provider_config_key=gen&force_refresh=true&refresh_token=true"
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credentials"]["access_token"], "gen-at-2", "{body}");
    assert_eq!(body["credentials"]["refresh_token"], "gen-rt", "{body}");
    let refresh = seen.lock().unwrap().token_requests[1].clone();
    assert!(
        refresh.contains(&("grant_type".into(), "refresh_token".into()))
            && refresh.contains(&("client_id".into(), "gen-1".into()))
            && refresh.contains(&("resource".into(), "https://mcp.example.com/mcp".into())),
        "{refresh:?}"
    );
    let (status, body) = dev
        .send_as(("gen", &cid), "GET", "/proxy/tools", None)
        .await;
    assert_eq!(status, 200, "{body}");

    // A server that gives the registered client a secret: Basic at the
    // token endpoint (RFC 7591's default), for the code and the refresh.
    let (status, location, page) = open(server_is("https://mcp.example.com/secret")).await;
    assert_eq!(status, 302, "{page}");
    let (status, page) = callback(pair(&location.unwrap(), "state")).await;
    assert_eq!(status, 200, "{page}");
    let (_, body) = dev.send("GET", "/connections?endUserId=u1", None).await;
    let secret_cid = body["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["connection_id"].as_str().unwrap().to_string())
        .find(|id| *id != cid)
        .unwrap();
    let (status, body) = dev
        .send(
            "GET",
            &format!("/connections/{secret_cid}?provider_config_key=gen&force_refresh=true"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credentials"]["access_token"], "gen-at-2", "{body}");
    assert_eq!(
        body["connection_config"]["oauth_client_auth"],
        "client_secret_basic"
    );

    // A connection exported from the original (its client and metadata as
    // JSON text in its configuration) is imported and refreshes.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({
                "provider_config_key": "gen", "connection_id": "from-nango",
                "credentials": {"type": "OAUTH2", "access_token": "old", "refresh_token": "gen-rt"},
                "connection_config": {
                    "mcp_server_url": "https://mcp.example.com/mcp",
                    "oauth_resource_url": "https://mcp.example.com/mcp",
                    "oauth_metadata": "{\"token_endpoint\":\"https://auth.example.com/mcp/token\"}",
                    "oauth_client_info": "{\"client_id\":\"gen-1\"}"
                }
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send(
            "GET",
            "/connections/from-nango?provider_config_key=gen&force_refresh=true",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credentials"]["access_token"], "gen-at-2", "{body}");
    assert!(
        body["connection_config"].get("oauth_client_info").is_none(),
        "{body}"
    );
    // An imported token URL is held to discovery's rules at each use.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({
                "provider_config_key": "gen", "connection_id": "bad-url",
                "credentials": {"type": "OAUTH2", "access_token": "old", "refresh_token": "gen-rt",
                                "config_override": {"client_id": "gen-1"}},
                "connection_config": {"mcp_server_url": "https://mcp.example.com/mcp",
                                      "oauth_token_url": "http://auth.example.com/mcp/token"}
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send(
            "GET",
            "/connections/bad-url?provider_config_key=gen&force_refresh=true",
            None,
        )
        .await;
    assert!(
        status >= 400 && body.to_string().contains("must be an https URL"),
        "{status} {body}"
    );
    server.stop().await;
}
