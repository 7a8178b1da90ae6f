//! `nango.proxy`: credentials, headers, query, retries, egress.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use sluice_runtime::ExecError;
use sluice_runtime::connection::ConnectionStore as _;
use sluice_tests::{Harness, MockResponse, guests, output};

fn echo() -> impl Fn(&sluice_tests::MockRequest) -> MockResponse + Send + Sync + 'static {
    |req| MockResponse::json(200, &json!({ "path": req.path, "method": req.method }))
}

#[tokio::test]
async fn oauth2_bearer_is_injected() {
    let h = Harness::simple(echo()).await;
    let out = output(
        &h.action(guests::ACTION_PROXY, json!({"endpoint": "/me"}))
            .await,
    );
    assert_eq!(out["status"], 200);
    let req = &h.mock.requests()[0];
    assert_eq!(req.header("authorization"), Some("Bearer tok-123"));
    assert!(
        req.header("user-agent")
            .is_some_and(|ua| ua.starts_with("sluice/"))
    );
}

#[tokio::test]
async fn api_key_in_a_provider_header_template() {
    let h = Harness::new(
        echo(),
        "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: {base}\n    headers:\n      x-api-key: ${apiKey}\n      authorization: Token ${apiKey}\n",
        json!({"type": "API_KEY", "apiKey": "key-9"}),
    )
    .await;
    output(
        &h.action(guests::ACTION_PROXY, json!({"endpoint": "/me"}))
            .await,
    );
    let req = &h.mock.requests()[0];
    assert_eq!(req.header("x-api-key"), Some("key-9"));
    assert_eq!(req.header("authorization"), Some("Token key-9"));
}

#[tokio::test]
async fn api_key_in_the_query() {
    let h = Harness::new(
        echo(),
        "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: {base}\n    query:\n      api_key: ${apiKey}\n",
        json!({"type": "API_KEY", "apiKey": "key-9"}),
    )
    .await;
    output(
        &h.action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/me", "params": {"a": "1"}}),
        )
        .await,
    );
    let req = &h.mock.requests()[0];
    assert_eq!(req.query_param("api_key"), Some("key-9"));
    assert_eq!(req.query_param("a"), Some("1"));
    assert_eq!(req.header("authorization"), None);
}

#[tokio::test]
async fn basic_auth() {
    let h = Harness::new(
        echo(),
        "mock:\n  auth_mode: BASIC\n  proxy:\n    base_url: {base}\n",
        json!({"type": "BASIC", "username": "ann", "password": "s3cret"}),
    )
    .await;
    output(
        &h.action(guests::ACTION_PROXY, json!({"endpoint": "/me"}))
            .await,
    );
    // base64("ann:s3cret")
    assert_eq!(
        h.mock.requests()[0].header("authorization"),
        Some("Basic YW5uOnMzY3JldA==")
    );
}

#[tokio::test]
async fn script_headers_win_and_base_url_templates_expand() {
    let h = Harness::new(
        echo(),
        "mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: {base}/${connectionConfig.tenant}\n    headers:\n      x-version: ${connectionConfig.version} || 2022-11-28\n",
        json!({"type": "OAUTH2", "access_token": "tok"}),
    )
    .await;
    let mut c = h.connections.get("mock-int", "c1").await.unwrap();
    c.connection_config.insert("tenant".into(), json!("acme"));
    h.connections.insert(c);
    output(
        &h.action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/users", "headers": {"Authorization": "Custom mine"}}),
        )
        .await,
    );
    let req = &h.mock.requests()[0];
    assert_eq!(req.path, "/acme/users");
    assert_eq!(req.header("authorization"), Some("Custom mine"));
    assert_eq!(req.header("x-version"), Some("2022-11-28"));
}

#[tokio::test]
async fn json_body_is_sent_for_post() {
    let h = Harness::simple(|req| MockResponse::json(201, &req.json().unwrap_or_default())).await;
    let out = output(
        &h.action(
            guests::ACTION_PROXY,
            json!({"method": "POST", "endpoint": "/items", "json": {"name": "x"}}),
        )
        .await,
    );
    assert_eq!(out["status"], 201);
    assert_eq!(out["data"], json!({"name": "x"}));
    assert_eq!(
        h.mock.requests()[0].header("content-type"),
        Some("application/json")
    );
}

fn counting(
    statuses: Vec<u16>,
) -> (
    Arc<AtomicUsize>,
    impl Fn(&sluice_tests::MockRequest) -> MockResponse + Send + Sync + 'static,
) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let handler = move |_: &sluice_tests::MockRequest| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let status = statuses.get(n).copied().unwrap_or(200);
        MockResponse::json(status, &json!({"attempt": n + 1}))
    };
    (hits, handler)
}

/// `status` with `header: value` first, then 200s; and the hit count.
fn once_then_ok(
    status: u16,
    header: &'static str,
    value: &'static str,
) -> (
    Arc<AtomicUsize>,
    impl Fn(&sluice_tests::MockRequest) -> MockResponse + Send + Sync + 'static,
) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let handler = move |_: &sluice_tests::MockRequest| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            MockResponse::json(status, &json!({})).with_header(header, value)
        } else {
            MockResponse::json(200, &json!({"ok": true}))
        }
    };
    (hits, handler)
}

#[tokio::test]
async fn no_retry_by_default_even_on_429_and_5xx() {
    for status in [429, 500, 503] {
        let (hits, handler) = counting(vec![status, status, status]);
        let h = Harness::simple(handler).await;
        let report = h
            .action(guests::ACTION_PROXY, json!({"endpoint": "/x"}))
            .await;
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "status {status} was retried"
        );
        let Err(ExecError::Script(failure)) = &report.outcome else {
            panic!("expected a script failure, got {:?}", report.outcome);
        };
        assert_eq!(failure.error_type, "script_http_error");
        assert_eq!(failure.status, status);
        assert_eq!(
            failure.upstream_response.as_ref().unwrap()["data"],
            json!({"attempt": 1})
        );
    }
}

#[tokio::test]
async fn retries_on_429_and_5xx_when_asked() {
    let (hits, handler) = counting(vec![429, 502, 200]);
    let h = Harness::simple(handler).await;
    let out = output(
        &h.action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/x", "retries": 3}),
        )
        .await,
    );
    assert_eq!(out["data"], json!({"attempt": 3}));
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    let report = h
        .action(guests::ACTION_PROXY, json!({"endpoint": "/x"}))
        .await;
    assert!(report.outcome.is_ok());
}

#[tokio::test]
async fn retries_stop_after_the_limit_and_log_each_wait() {
    let (hits, handler) = counting(vec![500; 10]);
    let h = Harness::simple(handler).await;
    let report = h
        .action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/x", "retries": 2}),
        )
        .await;
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert!(matches!(&report.outcome, Err(ExecError::Script(f)) if f.status == 500));
    let waits: Vec<_> = report
        .logs
        .iter()
        .filter(|l| {
            l.message
                .starts_with("Retrying HTTP call (reason: status code 500)")
        })
        .collect();
    assert_eq!(waits.len(), 2);
    assert!(waits[1].message.ends_with("[2/2]"), "{}", waits[1].message);
}

#[tokio::test]
async fn a_4xx_is_not_retried_unless_listed_in_retry_on() {
    let (hits, handler) = counting(vec![409, 409, 200]);
    let h = Harness::simple(handler).await;
    let report = h
        .action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/x", "retries": 3}),
        )
        .await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(report.outcome.is_err());
    let out = output(
        &h.action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/x", "retries": 3, "retry_on": [409]}),
        )
        .await,
    );
    assert_eq!(out["status"], 200);
}

#[tokio::test]
async fn the_retry_header_sets_the_wait() {
    let (_, handler) = once_then_ok(429, "x-wait", "0");
    let h = Harness::simple(handler).await;
    let report = h
        .action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/x", "retries": 1, "retry_after_header": "x-wait"}),
        )
        .await;
    output(&report);
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.message.contains("Waiting for 0ms [1/1]")),
        "{:#?}",
        report.logs
    );
}

#[tokio::test]
async fn hosts_outside_the_allowlist_are_refused() {
    let mut h = Harness::simple(echo()).await;
    let port = h.mock.url().rsplit(':').next().unwrap().to_string();
    let elsewhere = format!("http://localhost:{port}");
    let report = h
        .action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/x", "base_url_override": elsewhere}),
        )
        .await;
    let Err(ExecError::Script(failure)) = &report.outcome else {
        panic!("expected a refusal, got {:?}", report.outcome);
    };
    assert_eq!(failure.error_type, "egress_denied");
    assert!(
        failure.message.contains(&format!("`localhost:{port}`")),
        "the refused host is named with its port: {}",
        failure.message
    );
    assert!(
        h.mock.requests().is_empty(),
        "the refused request reached the network"
    );

    h.limits().allowed_hosts = vec![format!("localhost:{port}")];
    output(
        &h.action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/x", "base_url_override": elsewhere}),
        )
        .await,
    );
    assert_eq!(h.mock.requests().len(), 1);
}

#[tokio::test]
async fn unknown_connection_override_is_an_sdk_error() {
    let h = Harness::simple(echo()).await;
    let report = h
        .action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/x", "connection": ["mock-int", "ghost"]}),
        )
        .await;
    let Err(ExecError::Script(failure)) = &report.outcome else {
        panic!("expected an SDK error, got {:?}", report.outcome);
    };
    assert_eq!(failure.error_type, "unknown_connection");
    assert!(failure.message.contains("ghost"));
}

#[tokio::test]
async fn an_oversized_upstream_response_is_refused() {
    let mut h =
        Harness::simple(|_| MockResponse::json(200, &json!({"blob": "y".repeat(10_000)}))).await;
    h.limits().max_response_bytes = 1024;
    let report = h
        .action(guests::ACTION_PROXY, json!({"endpoint": "/big"}))
        .await;
    let Err(ExecError::Script(failure)) = &report.outcome else {
        panic!("expected a refusal, got {:?}", report.outcome);
    };
    assert_eq!(failure.error_type, "response_too_large");
    assert!(
        failure.message.contains("limit of 1024 bytes"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn a_script_cannot_choose_the_host_header_the_port_or_thousands_of_headers() {
    let h = Harness::simple(echo()).await;
    let authority = h.mock.url().trim_start_matches("http://").to_string();
    output(
        &h.action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/x", "headers": {"Host": "internal.example", "x-mine": "1"}}),
        )
        .await,
    );
    let req = &h.mock.requests()[0];
    assert_eq!(req.header("host"), Some(authority.as_str()));
    assert_eq!(req.header("x-mine"), Some("1"));

    // Another port of the provider's own host is another service: a
    // provider on `http://localhost` (port 80) does not reach the mock's.
    let on_80 = Harness::new(
        echo(),
        "mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: http://localhost\n",
        json!({"type": "OAUTH2", "access_token": "tok"}),
    )
    .await;
    let port = on_80.mock.url().rsplit(':').next().unwrap().to_string();
    let report = on_80
        .action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/x", "base_url_override": format!("http://localhost:{port}")}),
        )
        .await;
    let Err(ExecError::Script(failure)) = &report.outcome else {
        panic!("expected a refusal, got {:?}", report.outcome);
    };
    assert_eq!(failure.error_type, "egress_denied", "{}", failure.message);
    assert!(on_80.mock.requests().is_empty());

    let many: serde_json::Map<String, serde_json::Value> =
        (0..40_000).map(|i| (format!("h{i}"), json!("v"))).collect();
    let report = h
        .action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/x", "headers": many}),
        )
        .await;
    let Err(ExecError::Script(failure)) = &report.outcome else {
        panic!("expected a refusal, got {:?}", report.outcome);
    };
    assert_eq!(failure.error_type, "invalid_request");
    assert!(
        failure.message.contains("at most 256 headers"),
        "{}",
        failure.message
    );
    assert_eq!(h.mock.requests().len(), 1, "a refused request was sent");
}

#[tokio::test]
async fn a_retry_header_far_in_the_future_is_no_wait_not_a_crash() {
    let (hits, handler) = once_then_ok(503, "x-reset", "1e19");
    let h = Harness::simple(handler).await;
    let report = h
        .action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/x", "retries": 1, "retry_at_header": "x-reset"}),
        )
        .await;
    assert_eq!(output(&report)["status"], 200);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

/// A base URL whose host a connection's value chooses: the connection
/// cannot make scripts call the server's own network (loopback here), nor
/// leave the template's domain, unless `allowed_hosts` names the host.
#[tokio::test]
async fn a_connection_chosen_host_must_be_public() {
    let mut h = Harness::new(
        echo(),
        "mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: http://${connectionConfig.host}\n",
        json!({"type": "OAUTH2", "access_token": "tok"}),
    )
    .await;
    let mock_host = h.mock.url().trim_start_matches("http://").to_string();
    let mut c = h.connections.get("mock-int", "c1").await.unwrap();
    c.connection_config
        .insert("host".into(), json!(mock_host.clone()));
    h.connections.insert(c);
    let report = h
        .action(guests::ACTION_PROXY, json!({"endpoint": "/users"}))
        .await;
    let Err(ExecError::Script(failure)) = &report.outcome else {
        panic!("expected a refusal, got {:?}", report.outcome);
    };
    assert_eq!(failure.error_type, "egress_denied", "{}", failure.message);
    assert!(
        failure.message.contains("not a public address"),
        "{}",
        failure.message
    );
    assert!(
        h.mock.requests().is_empty(),
        "the request reached the network"
    );

    h.limits().allowed_hosts = vec![mock_host];
    output(
        &h.action(guests::ACTION_PROXY, json!({"endpoint": "/users"}))
            .await,
    );
    assert_eq!(h.mock.requests().len(), 1);

    // A value beside fixed text in the host cannot leave it.
    let h = Harness::new(
        echo(),
        "mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: http://${connectionConfig.sub}.example.com\n",
        json!({"type": "OAUTH2", "access_token": "tok"}),
    )
    .await;
    let mut c = h.connections.get("mock-int", "c1").await.unwrap();
    c.connection_config
        .insert("sub".into(), json!("127.0.0.1:1/x?"));
    h.connections.insert(c);
    let report = h
        .action(guests::ACTION_PROXY, json!({"endpoint": "/users"}))
        .await;
    let Err(ExecError::Script(failure)) = &report.outcome else {
        panic!("expected a refusal, got {:?}", report.outcome);
    };
    assert_eq!(failure.error_type, "invalid_request", "{}", failure.message);
    assert!(
        failure.message.contains("connectionConfig.sub") && failure.message.contains("host name"),
        "{}",
        failure.message
    );
}

/// A host name a connection chose that resolves to the server's own
/// network is refused like an address written as such: the request goes
/// through a client that resolves such names to public addresses only.
#[tokio::test]
async fn a_connection_chosen_name_must_resolve_to_a_public_address() {
    use sluice_runtime::upstream::Network;
    let mut h = Harness::new(
        echo(),
        "mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: http://${connectionConfig.host}\n",
        json!({"type": "OAUTH2", "access_token": "tok"}),
    )
    .await;
    let port = h.mock.url().rsplit(':').next().unwrap().to_string();
    // Every name resolves to the mock's address, 127.0.0.1.
    let lookup: sluice_runtime::proxy::Lookup = Arc::new(|_host: String| {
        Box::pin(async { Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))]) })
    });
    let (client, public_client) = sluice_runtime::proxy::clients_with_lookup(lookup);
    h.upstream = Some(sluice_runtime::Upstream::Network(Network {
        client,
        public_client,
        redirect: None,
    }));
    let chosen = format!("api.chosen.example:{port}");
    let mut c = h.connections.get("mock-int", "c1").await.unwrap();
    c.connection_config
        .insert("host".into(), json!(chosen.clone()));
    h.connections.insert(c);
    let report = h
        .action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/users", "retries": 2}),
        )
        .await;
    let Err(ExecError::Script(failure)) = &report.outcome else {
        panic!("expected a refusal, got {:?}", report.outcome);
    };
    assert_eq!(failure.error_type, "egress_denied", "{}", failure.message);
    assert!(
        failure.message.contains("no public address"),
        "{}",
        failure.message
    );
    assert!(
        h.mock.requests().is_empty(),
        "the request reached the network"
    );

    // Named in allowed_hosts, it is called.
    h.limits().allowed_hosts = vec![chosen];
    output(
        &h.action(guests::ACTION_PROXY, json!({"endpoint": "/users"}))
            .await,
    );
    assert_eq!(h.mock.requests().len(), 1);
}

/// A redirect to another origin (a download answered from a file host:
/// box's `dl.boxcloud.com`, Graph's `*.sharepoint.com`) is followed, as
/// the original's axios follows it, when its host passes the egress
/// check; the connection's credentials stay behind. It was a thrown 302.
#[tokio::test]
async fn a_redirect_to_another_allowed_origin_is_followed_without_credentials() {
    use sluice_tests::MockServer;
    let files = MockServer::start(Arc::new(|req: &sluice_tests::MockRequest| {
        if req.path == "/busy" {
            return MockResponse::json(503, &json!({}));
        }
        MockResponse::json(200, &json!({"file": req.path, "method": req.method}))
    }))
    .await
    .unwrap();
    let files_url = files.url();
    let files_host = files_url.trim_start_matches("http://").to_string();
    let location = format!("{files_url}/d/1?sig=abc&api_key=key-9");
    let busy = format!("{files_url}/busy");
    let mut h = Harness::new(
        move |req: &sluice_tests::MockRequest| match req.path.as_str() {
            "/download" => MockResponse::json(302, &json!({})).with_header("location", &location),
            "/upload" => MockResponse::json(303, &json!({})).with_header("location", &location),
            "/keep" => MockResponse::json(307, &json!({})).with_header("location", &location),
            "/busy" => MockResponse::json(302, &json!({})).with_header("location", &busy),
            _ => MockResponse::json(404, &json!({})),
        },
        "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: {base}\n    headers:\n      x-api-key: ${apiKey}\n      authorization: Token ${apiKey}\n    query:\n      api_key: ${apiKey}\n",
        json!({"type": "API_KEY", "apiKey": "key-9"}),
    )
    .await;

    // Not in the egress policy: answered as it came (a 302 the script can
    // read), the logs naming the host; nothing is sent there.
    let report = h
        .action(guests::ACTION_PROXY, json!({"endpoint": "/download"}))
        .await;
    let Err(ExecError::Script(failure)) = &report.outcome else {
        panic!("expected the redirect, got {:?}", report.outcome);
    };
    assert_eq!(failure.status, 302, "{}", failure.message);
    assert!(
        report.logs.iter().any(
            |l| l.message.starts_with("Not following the redirect (302)")
                && l.message
                    .contains(&format!("`{files_host}` are not allowed"))
        ),
        "{:#?}",
        report.logs
    );
    assert!(files.requests().is_empty(), "the refused redirect was sent");

    h.limits().allowed_hosts = vec![files_host.clone()];
    let out = output(
        &h.action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/download", "headers": {"x-mine": "kept", "x-copy": "key-9", "cookie": "s=1"}}),
        )
        .await,
    );
    assert_eq!(out["status"], 200);
    assert_eq!(out["data"], json!({"file": "/d/1", "method": "GET"}));
    let sent = &files.requests()[0];
    assert_eq!(sent.query, vec![("sig".to_string(), "abc".to_string())]);
    // Only what says how to read the answer goes on: any other header
    // may carry a credential in some form.
    for name in ["authorization", "x-api-key", "x-copy", "cookie", "x-mine"] {
        assert_eq!(sent.header(name), None, "{name} went to the other origin");
    }
    assert!(sent.header("accept").is_some());
    // The provider still got its credentials.
    assert_eq!(h.mock.requests()[1].header("x-api-key"), Some("key-9"));

    // A 303 after a POST is a GET without the body.
    let out = output(
        &h.action(
            guests::ACTION_PROXY,
            json!({"method": "POST", "endpoint": "/upload", "json": {"a": 1}}),
        )
        .await,
    );
    assert_eq!(out["data"], json!({"file": "/d/1", "method": "GET"}));
    let sent = &files.requests()[1];
    assert!(sent.body.is_empty() && sent.header("content-type").is_none());

    // A 307 keeps the body: one holding the connection's secret is not
    // sent on (the redirect is answered as it came).
    let report = h
        .action(
            guests::ACTION_PROXY,
            json!({"method": "POST", "endpoint": "/keep", "json": {"token": "key-9"}}),
        )
        .await;
    let Err(ExecError::Script(failure)) = &report.outcome else {
        panic!("expected the redirect, got {:?}", report.outcome);
    };
    assert_eq!(failure.status, 307, "{}", failure.message);
    assert_eq!(
        files.requests().len(),
        2,
        "the secret went to the other origin"
    );

    // A 503 from there is retried by the script's rules (each try starts
    // again at the provider).
    let report = h
        .action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/busy", "retries": 2}),
        )
        .await;
    let Err(ExecError::Script(failure)) = &report.outcome else {
        panic!("expected the 503, got {:?}", report.outcome);
    };
    assert_eq!(failure.status, 503, "{}", failure.message);
    assert_eq!(files.requests().len(), 5, "tried three times");
}

/// Redirects between two origins are followed at most five times, then
/// fail naming the problem (as axios's `ERR_FR_TOO_MANY_REDIRECTS`).
#[tokio::test]
async fn redirects_between_origins_stop_after_five() {
    use sluice_tests::MockServer;
    let back = Arc::new(std::sync::Mutex::new(String::new()));
    let target = back.clone();
    let other = MockServer::start(Arc::new(move |_: &sluice_tests::MockRequest| {
        let to = target.lock().unwrap().clone();
        MockResponse::json(302, &json!({})).with_header("location", &format!("{to}/again"))
    }))
    .await
    .unwrap();
    let other_url = other.url();
    let mut h = Harness::simple(move |_: &sluice_tests::MockRequest| {
        MockResponse::json(302, &json!({})).with_header("location", &format!("{other_url}/there"))
    })
    .await;
    *back.lock().unwrap() = h.mock.url();
    h.limits().allowed_hosts = vec![other.url().trim_start_matches("http://").to_string()];
    let report = h
        .action(
            guests::ACTION_PROXY,
            json!({"endpoint": "/loop", "retries": 2}),
        )
        .await;
    let Err(ExecError::Script(failure)) = &report.outcome else {
        panic!("expected a failure, got {:?}", report.outcome);
    };
    assert_eq!(failure.error_type, "script_network_error");
    assert!(
        failure.message.starts_with("ERR_FR_TOO_MANY_REDIRECTS"),
        "{}",
        failure.message
    );
    // The first request and five redirects, not retried.
    assert_eq!(h.mock.requests().len() + other.requests().len(), 6);
    // The provider's host, reached again, got its credentials only once.
    let with_auth = h
        .mock
        .requests()
        .iter()
        .filter(|r| r.header("authorization").is_some())
        .count();
    assert_eq!(with_auth, 1);
}
