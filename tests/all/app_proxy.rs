//! `ALL /proxy/*`: an app's request to the provider's API, sent with a
//! connection's credentials, against a real server and a mock upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer};

use crate::server::{Client, DEV_KEY, PROD_KEY, start_with};

/// `path` through `/proxy` as connection `cid` of `mock-int`, with extra
/// headers: the status, the headers and the body as text.
async fn proxy(
    c: &Client,
    method: &str,
    path: &str,
    cid: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = c
        .http
        .request(method.parse().unwrap(), format!("{}/proxy{path}", c.base))
        .bearer_auth(&c.key)
        .header("connection-id", cid)
        .header("provider-config-key", "mock-int");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

/// An app's request goes out with the connection's credentials (refreshed
/// first when expired), its `Nango-Proxy-*` headers, body and query, and
/// comes back as the upstream answered; retries, the egress check, the
/// environment's scope and the history hold as for scripts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_request_goes_out_with_the_connections_credentials() {
    let refreshes = Arc::new(AtomicUsize::new(0));
    let flaky = Arc::new(AtomicUsize::new(0));
    let (r, f) = (refreshes.clone(), flaky.clone());
    // Another service on another port of the provider's host.
    let internal = MockServer::start(Arc::new(|_: &MockRequest| {
        MockResponse::json(200, &json!({"internal": "data"}))
    }))
    .await
    .unwrap();
    let away = format!("{}/stolen", internal.url());
    let handler = move |req: &MockRequest| match req.path.as_str() {
        // A redirect within the provider's origin, and one to another port.
        "/hop" => MockResponse::json(302, &json!({})).with_header("location", "/landing"),
        "/away" => MockResponse::json(302, &json!({})).with_header("location", &away),
        // Refused, echoing what it was sent (the refresh token, the
        // client secret), as some providers do.
        "/oauth/token" if String::from_utf8_lossy(&req.body).contains("refresh_token=revoked") => {
            MockResponse::json(
                400,
                &json!({"error": "invalid_grant", "sent": String::from_utf8_lossy(&req.body)}),
            )
        }
        "/oauth/token" => {
            r.fetch_add(1, Ordering::SeqCst);
            MockResponse::json(200, &json!({"access_token": "fresh", "expires_in": 3600}))
        }
        "/cookies" => MockResponse::json(200, &json!({}))
            .with_header(
                "set-cookie",
                "a=1; Expires=Wed, 21 Oct 2015 07:28:00 GMT; Path=/",
            )
            .with_header("set-cookie", "b=2; Path=/"),
        _ if req.header("authorization") != Some("Bearer fresh") => {
            MockResponse::json(401, &json!({"error": "bad token"}))
        }
        "/flaky" if f.fetch_add(1, Ordering::SeqCst) < 2 => {
            MockResponse::json(409, &json!({"error": "busy"})).with_header("retry-after", "0")
        }
        "/missing" => MockResponse::json(404, &json!({"message": "no such thing"}))
            .with_header("x-ratelimit-remaining", "7"),
        "/text" => MockResponse {
            status: 200,
            headers: vec![("content-type".into(), "text/csv".into())],
            body: b"a,b\n1,2\n".to_vec(),
            delay: None,
        },
        _ => MockResponse::json(
            200,
            &json!({
                "method": req.method, "path": req.path, "query": req.query,
                "custom": req.header("x-custom"), "type": req.header("content-type"),
                "connection": req.header("connection-id"),
                "body": String::from_utf8_lossy(&req.body),
            }),
        ),
    };
    let mock = MockServer::start(Arc::new(handler)).await.unwrap();
    let providers = format!(
        "mock:\n  auth_mode: OAUTH2\n  token_url: {0}/oauth/token\n  proxy:\n    base_url: {0}\n    retry:\n      after: retry-after\n",
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
            Some(json!({"unique_key": "mock-int", "provider": "mock", "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": "the-client-secret"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "mock-int", "connection_id": "c1",
                        "access_token": "stale", "refresh_token": "rt", "expires_at": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // Credentials refreshed first; path, query, body and the app's
    // forwarded headers go upstream, its own (the secret key, the
    // connection headers) do not.
    let (status, headers, text) = proxy(
        &dev,
        "POST",
        "/v3/items/a%20b?limit=2&tag=x",
        "c1",
        &[
            ("nango-proxy-x-custom", "yes"),
            ("content-type", "application/json"),
        ],
        Some(r#"{"name":"n"}"#),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let seen: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/v3/items/a%20b");
    assert_eq!(seen["query"], json!([["limit", "2"], ["tag", "x"]]));
    assert_eq!(seen["custom"], "yes");
    assert_eq!(seen["type"], "application/json");
    assert_eq!(seen["connection"], Value::Null);
    assert_eq!(seen["body"], r#"{"name":"n"}"#);
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    let sent: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v3"))
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].header("authorization"), Some("Bearer fresh"));

    // A forwarded framing header is left out: the body goes whole.
    let (status, _, text) = proxy(
        &dev,
        "POST",
        "/v3/framed",
        "c1",
        &[
            ("nango-proxy-content-length", "3"),
            ("nango-proxy-connection", "close"),
        ],
        Some("abcdefgh"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["body"],
        "abcdefgh",
        "{text}"
    );

    // Upstream statuses, headers and bodies come back as they are.
    let (status, headers, text) = proxy(&dev, "GET", "/missing", "c1", &[], None).await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-ratelimit-remaining"], "7");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"message": "no such thing"})
    );
    let (status, headers, text) = proxy(&dev, "GET", "/text", "c1", &[], None).await;
    assert_eq!((status, text.as_str()), (200, "a,b\n1,2\n"));
    assert_eq!(headers["content-type"], "text/csv");

    // Cookies come back one header each (joined, an Expires date's comma
    // broke them).
    let (status, headers, _) = proxy(&dev, "GET", "/cookies", "c1", &[], None).await;
    assert_eq!(status, 200);
    let cookies: Vec<&str> = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        cookies,
        [
            "a=1; Expires=Wed, 21 Oct 2015 07:28:00 GMT; Path=/",
            "b=2; Path=/"
        ]
    );

    // A token that cannot be refreshed is the connection's fault, not the
    // server's (it answered 500, which clients retry).
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "mock-int", "connection_id": "c2",
                        "access_token": "stale", "refresh_token": "revoked", "expires_at": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, text) = proxy(&dev, "GET", "/x", "c2", &[], None).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_credentials"), "{text}");
    // What the endpoint echoed is not shown, nor kept in the connection's
    // errors or the logs: the refresh token and the client secret.
    let (_, view) = dev
        .send("GET", "/connection/c2?provider_config_key=mock-int", None)
        .await;
    let (_, logs) = dev.send("GET", "/logs?connection_id=c2", None).await;
    for shown in [text.clone(), view.to_string(), logs.to_string()] {
        assert!(shown.contains("invalid_grant"), "{shown}");
        assert!(
            !shown.contains("revoked") && !shown.contains("the-client-secret"),
            "{shown}"
        );
    }

    // Retries: Retry-On adds 409 to what is retried, Retries bounds them.
    let (status, _, text) = proxy(
        &dev,
        "GET",
        "/flaky",
        "c1",
        &[("retries", "1"), ("retry-on", "409")],
        None,
    )
    .await;
    assert_eq!(status, 409, "one retry is not enough: {text}");
    flaky.store(0, Ordering::SeqCst);
    let (status, _, text) = proxy(
        &dev,
        "GET",
        "/flaky",
        "c1",
        &[("retries", "2"), ("retry-on", "409")],
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(flaky.load(Ordering::SeqCst), 3);

    // A redirect is followed within the provider's origin only: another
    // port of its host gets nothing (the credentials would go with it),
    // and the app gets the redirect as it came.
    let (status, _, text) = proxy(&dev, "GET", "/hop", "c1", &[], None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["path"],
        "/landing",
        "{text}"
    );
    // (Asked with a client that does not follow redirects itself.)
    let mut no_follow = Client::new(&server, DEV_KEY);
    no_follow.http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (status, headers, text) = proxy(&no_follow, "GET", "/away", "c1", &[], None).await;
    assert_eq!(status, 302, "{text}");
    assert!(
        headers["location"].to_str().unwrap().ends_with("/stolen"),
        "{headers:?}"
    );
    assert!(internal.requests().is_empty(), "{:?}", internal.requests());

    // Bad requests name the problem; the egress check holds.
    for (headers, code) in [
        (vec![("retries", "many")], "invalid_request"),
        (vec![("retry-on", "409,abc")], "invalid_request"),
        (
            vec![("base-url-override", "http://127.0.0.2:9")],
            "egress_denied",
        ),
    ] {
        let (status, _, text) = proxy(&dev, "GET", "/x", "c1", &headers, None).await;
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"]["code"], code, "{headers:?}: {status} {text}");
        assert!(status == 400 || status == 403, "{status} {text}");
    }
    let (status, _, text) = proxy(&dev, "GET", "/x", "nobody", &[], None).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("unknown_connection"), "{text}");

    // Another environment's key reaches none of it.
    let prod = Client::new(&server, PROD_KEY);
    let before = mock.requests().len();
    let (status, _, text) = proxy(&prod, "GET", "/x", "c1", &[], None).await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("unknown_provider_config"), "{text}");
    assert_eq!(mock.requests().len(), before);

    // Each request is in the history, its attempts in its log.
    let (status, history) = dev
        .send(
            "GET",
            "/executions?provider_config_key=mock-int&connection_id=c1",
            None,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    let calls: Vec<&Value> = history["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "proxy")
        .collect();
    assert!(
        calls
            .iter()
            .any(|e| e["script"] == "GET /missing" && e["success"] == false),
        "{history}"
    );
    assert!(
        calls
            .iter()
            .any(|e| e["script"] == "POST /v3/items/a%20b" && e["success"] == true),
        "{history}"
    );
    // A call refused before any attempt (the egress check) has a line
    // saying why in its log, as a failed script has.
    let refused = calls
        .iter()
        .find(|e| e["error"].as_str().is_some_and(|m| m.contains("egress")))
        .unwrap_or_else(|| panic!("{history}"));
    let id = refused["id"].as_str().unwrap();
    let (_, lines) = dev
        .send("GET", &format!("/logs?execution_id={id}&level=error"), None)
        .await;
    assert!(
        lines["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"].as_str().is_some_and(|m| m.contains("egress"))),
        "{lines}"
    );

    // A call whose path holds the connection's token, and whose query the
    // app's own secret key: neither is kept in the history or the logs.
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(
                json!({"provider_config_key": "mock-int", "connection_id": "c3",
                        "access_token": "tok-in-the-path-3333"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let path = format!("/users/tok-in-the-path-3333?key={DEV_KEY}");
    proxy(&dev, "GET", &path, "c3", &[], None).await;
    let (_, history) = dev
        .send(
            "GET",
            "/executions?provider_config_key=mock-int&connection_id=c3",
            None,
        )
        .await;
    let (_, logs) = dev.send("GET", "/logs?connection_id=c3", None).await;
    assert!(history.to_string().contains("GET /users/***"), "{history}");
    for kept in [history.to_string(), logs.to_string()] {
        assert!(
            !kept.contains("tok-in-the-path-3333") && !kept.contains(DEV_KEY),
            "{kept}"
        );
    }
    server.stop().await;
}

/// Limits are per environment on a server too (`serve --limits`): the
/// host one environment's `allowed_hosts` names is called for it and
/// refused for the other, and limits for an environment the server does
/// not have are refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_environment_has_its_own_limits() {
    let mock = MockServer::start(Arc::new(|req: &MockRequest| {
        MockResponse::json(200, &json!({"path": req.path}))
    }))
    .await
    .unwrap();
    // A second API of the provider, on another port.
    let other = MockServer::start(Arc::new(|_: &MockRequest| {
        MockResponse::json(200, &json!({"other": true}))
    }))
    .await
    .unwrap();
    let providers = format!(
        "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: {}\n    headers:\n      authorization: Bearer ${{apiKey}}\n",
        mock.url()
    );
    let other_host = other.url().trim_start_matches("http://").to_string();
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let dev_limits = sluice_runtime::Limits {
        allowed_hosts: vec![other_host.clone()],
        ..Default::default()
    };
    config.env_limits.insert("dev".into(), dev_limits);
    let server = start_with(config, &master, &providers).await;
    for key in [DEV_KEY, PROD_KEY] {
        let c = Client::new(&server, key);
        let (status, body) = c
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": "mock-int", "provider": "mock"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = c
            .send(
                "POST",
                "/connection",
                Some(json!({"provider_config_key": "mock-int", "connection_id": "c1", "api_key": "k"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let override_to_other = [("base-url-override", other.url())];
    let headers: Vec<(&str, &str)> = override_to_other
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let dev = Client::new(&server, DEV_KEY);
    let (status, _, text) = proxy(&dev, "GET", "/x", "c1", &headers, None).await;
    assert_eq!((status, text.as_str()), (200, r#"{"other":true}"#));
    let prod = Client::new(&server, PROD_KEY);
    let (status, _, text) = proxy(&prod, "GET", "/x", "c1", &headers, None).await;
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("egress_denied") && text.contains(&other_host),
        "{text}"
    );
    // Both still reach the provider's own host.
    let (status, _, _) = proxy(&prod, "GET", "/x", "c1", &[], None).await;
    assert_eq!(status, 200);
    server.stop().await;

    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config
        .env_limits
        .insert("staging".into(), sluice_runtime::Limits::default());
    let refused = sluice_server::Server::start(
        config,
        master.clone(),
        sluice_runtime::providers::ProviderCatalog::builtin().unwrap(),
        &[],
    )
    .await;
    let err = match refused {
        Ok(_) => panic!("limits for an unknown environment were taken"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("limits are set for environment `staging`, which this server does not have"),
        "{err}"
    );
    // More memory than a sandbox slot holds: refused, not lowered.
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.env_limits.insert(
        "prod".into(),
        sluice_runtime::Limits {
            memory_bytes: 2 << 30,
            ..Default::default()
        },
    );
    let refused = sluice_server::Server::start(
        config,
        master,
        sluice_runtime::providers::ProviderCatalog::builtin().unwrap(),
        &[],
    )
    .await;
    let err = match refused {
        Ok(_) => panic!("more memory than a slot holds was taken"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("the limits of environment `prod` give scripts 2147483648 bytes of memory; at most 1073741824 can be given"),
        "{err}"
    );
}

/// Requests missing what a route needs get the original's codes, each
/// naming the header or parameter; `/proxy` passes the upstream's answer
/// without a type of its own, and sends a request's `Content-Type` only
/// with its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_headers_and_parameters_get_the_originals_codes() {
    let mock = MockServer::start(Arc::new(|req: &MockRequest| match req.path.as_str() {
        "/empty" => MockResponse {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
        },
        _ => MockResponse::json(
            200,
            &json!({"content_type": req.headers.get("content-type"), "body": String::from_utf8_lossy(&req.body)}),
        ),
    }))
    .await
    .unwrap();
    let providers = format!(
        "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: {}\n    headers:\n      authorization: Bearer ${{apiKey}}\nbasic:\n  auth_mode: BASIC\n  proxy:\n    base_url: {}\n",
        mock.url(),
        mock.url()
    );
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let c = Client::new(&server, DEV_KEY);
    for (key, provider) in [("mock-int", "mock"), ("basic-int", "basic")] {
        let (status, body) = c
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": key, "provider": provider})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = c
        .send(
            "POST",
            "/connection",
            Some(json!({"provider_config_key": "mock-int", "connection_id": "c1", "api_key": "k"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // An upstream 204 without a type comes back without one.
    let (status, headers, text) = proxy(&c, "GET", "/empty", "c1", &[], None).await;
    assert_eq!((status, text.as_str()), (204, ""));
    assert_eq!(headers.get("content-type"), None, "{headers:?}");
    // A GET has no body, so no type for it goes upstream; a POST's does.
    let json_type = [("content-type", "application/json")];
    let (status, _, text) = proxy(&c, "GET", "/echo", "c1", &json_type, None).await;
    assert_eq!(status, 200, "{text}");
    let seen: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(seen["content_type"], Value::Null, "{seen}");
    let (_, _, text) = proxy(&c, "POST", "/echo", "c1", &json_type, Some(r#"{"a":1}"#)).await;
    let seen: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        seen,
        json!({"content_type": "application/json", "body": r#"{"a":1}"#})
    );

    // A missing header: 400 `invalid_headers`, naming it.
    let without = |path: &str, header: &str| {
        let mut req = c.http.get(format!("{}{path}", c.base)).bearer_auth(&c.key);
        for (name, value) in [("connection-id", "c1"), ("provider-config-key", "mock-int")] {
            if name != header {
                req = req.header(name, value);
            }
        }
        req.send()
    };
    for path in ["/records?model=Item", "/proxy/echo"] {
        for header in ["connection-id", "provider-config-key"] {
            let resp = without(path, header).await.unwrap();
            assert_eq!(resp.status().as_u16(), 400, "{path} {header}");
            let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "invalid_headers", "{body}");
            assert_eq!(
                body["error"]["errors"][0]["path"],
                json!([header]),
                "{body}"
            );
        }
    }

    // A variant is letters, digits, `_` and `-`.
    let resp = c
        .http
        .get(format!("{}/records?model=Item&variant=bad!", c.base))
        .bearer_auth(&c.key)
        .header("connection-id", "c1")
        .header("provider-config-key", "mock-int")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "invalid_query_params", "{body}");

    // A connection is named with its integration: a missing one is a
    // query parameter problem, and nothing is deleted.
    for method in ["GET", "DELETE"] {
        let (status, body) = c.send(method, "/connection/c1", None).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_query_params", "{body}");
        assert_eq!(
            body["error"]["errors"][0]["path"],
            json!(["provider_config_key"]),
            "{body}"
        );
    }
    let (status, _) = c
        .send("GET", "/connection/c1?provider_config_key=mock-int", None)
        .await;
    assert_eq!(status, 200);

    // The original's own code for a trigger without its integration.
    let resp = c
        .http
        .post(format!("{}/sync/trigger", c.base))
        .bearer_auth(&c.key)
        .header("content-type", "application/json")
        .body(json!({"syncs": ["items"]}).to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("missing_provider_config_key")),
        "{body}"
    );

    // A BASIC connection needs its username.
    let (status, body) = c
        .send(
            "POST",
            "/connection",
            Some(
                json!({"provider_config_key": "basic-int", "connection_id": "b1", "password": "p"}),
            ),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("missing_basic_username")),
        "{body}"
    );

    // An API_KEY integration has no client credentials to show: `null`.
    let (status, body) = c
        .send("GET", "/integrations/mock-int?include=credentials", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["credentials"], Value::Null, "{body}");

    // A display name is 1 to 255 characters; the stored one is kept.
    for bad in [String::new(), "x".repeat(256)] {
        let (status, body) = c
            .send(
                "PATCH",
                "/integrations/mock-int",
                Some(json!({"display_name": bad})),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            body["error"]["errors"][0]["path"],
            json!(["display_name"]),
            "{body}"
        );
    }
    let (_, body) = c.send("GET", "/integrations/mock-int", None).await;
    assert_eq!(body["data"]["display_name"], "mock", "{body}");
    server.stop().await;
}

/// An app's request that outlives the environment's action timeout (a
/// long poll) ends with `proxy_timeout`, and the call's name keeps
/// neither the connection's token nor the app's key, which its path
/// carries: the timeout used to be the server's, which knew the key
/// only, and named the call with the token in it.
#[tokio::test]
async fn an_apps_request_that_times_out_is_named_without_its_credentials() {
    let mut h = sluice_tests::Harness::simple(|_: &MockRequest| MockResponse {
        delay: Some(std::time::Duration::from_secs(60)),
        ..MockResponse::json(200, &json!({"ok": true, "result": []}))
    })
    .await;
    h.limits().timeouts.action = std::time::Duration::from_secs(1);
    let request = sluice_runtime::proxy::AppRequest {
        method: "GET".into(),
        endpoint: "/app-secret-key/bottok-123/getUpdates?timeout=50".into(),
        headers: Vec::new(),
        body: None,
        retries: 0,
        retry_on: Vec::new(),
        base_url_override: None,
        secrets: vec!["app-secret-key".into()],
    };
    let (outcome, _lines, call) = sluice_runtime::proxy::send_for_app(
        h.services(),
        sluice_tests::runtime().config(),
        &h.conn(),
        request,
    )
    .await;
    let e = outcome.expect_err("the upstream answers after the timeout");
    assert_eq!(e.code, "proxy_timeout", "{e}");
    assert_eq!(
        e.message, "the request and its retries took longer than 1 s",
        "{e}"
    );
    assert!(
        call.starts_with("GET /") && call.ends_with("/getUpdates"),
        "{call}"
    );
    assert!(
        !call.contains("tok-123") && !call.contains("app-secret-key"),
        "{call}"
    );
}
