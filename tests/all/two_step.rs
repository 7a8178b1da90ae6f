//! TWO_STEP connections: a token the provider's token endpoint gives for
//! the user's own credentials, asked for when the connection is made (an
//! import, or the browser's form) and again once it expires; the token is
//! what scripts' and the proxy's requests carry.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer};

use crate::server::{Client, DEV_KEY, start_with};

/// The provider: a login endpoint answering a fresh token (`tok-N`) for
/// client `id` with secret `s3cret` under tenant `t1`, valid for
/// `lifetime` seconds; and an API answering only the newest token.
struct Provider {
    mock: MockServer,
    logins: Arc<Mutex<Vec<Value>>>,
    lifetime: Arc<AtomicI64>,
}

impl Provider {
    async fn start() -> Provider {
        let logins = Arc::new(Mutex::new(Vec::new()));
        let lifetime = Arc::new(AtomicI64::new(7200));
        let issued = Arc::new(AtomicU32::new(0));
        let (l, life) = (logins.clone(), lifetime.clone());
        let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
            if req.path == "/auth/query-login" {
                // Credentials in the token URL's query (JobDiva's way):
                // each one value, however it is spelt.
                let (user, password) = (req.query_param("username"), req.query_param("password"));
                return if (user, password) == (Some("ann@example.com"), Some("p&ss=1 +x%"))
                    && req.query.len() == 2
                {
                    MockResponse::json(200, &json!({"token": "q-token"}))
                } else {
                    MockResponse::json(401, &json!({"message": "bad login"}))
                };
            }
            if req.path == "/auth/t1/login" {
                let body = req.json().unwrap_or_default();
                l.lock().unwrap().push(body.clone());
                if req.header("x-app") != Some("sluice-test")
                    || body != json!({"clientId": "id", "clientSecret": "s3cret", "userAccessType": "MACHINE"})
                {
                    // Echoing what it was sent, as some do.
                    let given = body["clientSecret"].as_str().unwrap_or_default().to_string();
                    return MockResponse::json(401, &json!({"message": format!("bad secret {given}")}));
                }
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                return MockResponse::json(
                    200,
                    &json!({"token": {"accessToken": format!("tok-{n}"), "expiresIn": life.load(Ordering::SeqCst)},
                            "region": "eu"}),
                );
            }
            let n = issued.load(Ordering::SeqCst);
            if req.path == "/api/tableau" {
                // Tableau's way: the token in its own header, and no other.
                let own = format!("tok-{n}");
                return if req.header("x-tableau-auth") == Some(own.as_str())
                    && req.header("authorization").is_none()
                {
                    MockResponse::json(200, &json!({"me": "ok"}))
                } else {
                    MockResponse::json(401, &json!({"message": "x-tableau-auth only"}))
                };
            }
            let newest = format!("Bearer tok-{n}");
            if req.header("authorization") == Some(newest.as_str()) {
                MockResponse::json(200, &json!({"me": "ok"}))
            } else {
                MockResponse::json(401, &json!({"message": "stale token"}))
            }
        }))
        .await
        .unwrap();
        Provider {
            mock,
            logins,
            lifetime,
        }
    }

    fn yaml(&self) -> String {
        let url = self.mock.url();
        format!(
            "toastish:\n  auth_mode: TWO_STEP\n  body_format: json\n  token_url: {url}/auth/${{connectionConfig.tenant}}/login\n  token_params:\n    clientId: ${{credentials.clientId}}\n    clientSecret: ${{credentials.clientSecret}}\n    userAccessType: MACHINE\n  token_headers:\n    content-type: application/json\n    x-app: sluice-test\n  token_response:\n    token: token.accessToken\n    token_expiration: token.expiresIn\n    token_expiration_strategy: expireIn\n  token_response_metadata:\n    - region\n  proxy:\n    base_url: {url}/api\n\
             tabish:\n  auth_mode: TWO_STEP\n  token_url: {url}/auth/t1/login\n  token_params:\n    clientId: ${{credentials.clientId}}\n    clientSecret: ${{credentials.clientSecret}}\n    userAccessType: MACHINE\n  token_headers:\n    x-app: sluice-test\n  token_response:\n    token: token.accessToken\n  proxy:\n    base_url: {url}/api\n    headers:\n      x-tableau-auth: ${{accessToken}}\n\
             querying:\n  auth_mode: TWO_STEP\n  token_url: {url}/auth/query-login?username=${{credentials.username}}&password=${{credentials.password}}\n  token_response:\n    token: token\n  proxy:\n    base_url: {url}/api\n\
             signed:\n  auth_mode: TWO_STEP\n  assertion:\n    type: saml\n  token_url: {url}/auth/t1/login\n  token_response:\n    token: access_token\n  proxy:\n    base_url: {url}/api\n"
        )
    }

    fn logins(&self) -> usize {
        self.logins.lock().unwrap().len()
    }
}

async fn connection(c: &Client, cid: &str) -> Value {
    let (status, body) = c
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key=toast"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_step_connection_gets_its_token_and_a_new_one_when_it_expires() {
    let provider = Provider::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &provider.yaml()).await;
    let dev = Client::new(&server, DEV_KEY);
    for (key, p) in [
        ("toast", "toastish"),
        ("tab", "tabish"),
        ("signed", "signed"),
        ("query", "querying"),
    ] {
        let (status, body) = dev
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": key, "provider": p})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let import = |cid: &str, secret: &str| {
        json!({"provider_config_key": "toast", "connection_id": cid,
               "connection_config": {"tenant": "t1"},
               "credentials": {"type": "TWO_STEP", "clientId": "id", "clientSecret": secret}})
    };

    // Imported without a token: asked for with the user's credentials.
    let (status, body) = dev
        .send("POST", "/connections", Some(import("c1", "s3cret")))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(provider.logins(), 1);
    let c1 = connection(&dev, "c1").await;
    assert_eq!(c1["credentials"]["token"], "tok-1", "{c1}");
    assert_eq!(c1["credentials"]["clientId"], "id", "{c1}");
    assert_eq!(c1["credentials"]["raw"]["region"], "eu", "{c1}");
    assert_eq!(c1["connection_config"]["region"], "eu", "{c1}");
    let expires =
        chrono::DateTime::parse_from_rfc3339(c1["credentials"]["expires_at"].as_str().unwrap())
            .unwrap();
    let left = expires.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!((7100..=7200).contains(&left.num_seconds()), "{c1}");
    // Its requests carry the token; reading it again asks for no other.
    let (status, body) = dev
        .send_as(("toast", "c1"), "GET", "/proxy/whoami", None)
        .await;
    assert_eq!((status, &body["me"]), (200, &json!("ok")), "{body}");
    assert_eq!(provider.logins(), 1);

    // A token about to expire is replaced, with the same credentials,
    // before the next request.
    provider.lifetime.store(60, Ordering::SeqCst);
    let (status, body) = dev
        .send("POST", "/connections", Some(import("c2", "s3cret")))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(provider.logins(), 2);
    provider.lifetime.store(7200, Ordering::SeqCst);
    let (status, body) = dev
        .send_as(("toast", "c2"), "GET", "/proxy/whoami", None)
        .await;
    assert_eq!((status, &body["me"]), (200, &json!("ok")), "{body}");
    assert_eq!(provider.logins(), 3);
    let c2 = connection(&dev, "c2").await;
    assert_eq!(c2["credentials"]["token"], "tok-3", "{c2}");
    assert_eq!(
        provider.logins.lock().unwrap()[2],
        json!({"clientId": "id", "clientSecret": "s3cret", "userAccessType": "MACHINE"})
    );

    // Refused credentials: nothing stored, the answer named (the secret
    // the endpoint echoed is not).
    let (status, body) = dev
        .send("POST", "/connections", Some(import("c3", "wrong")))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "two_step_credentials_fetch_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("401"), "{message}");
    assert!(!message.contains("wrong"), "{message}");
    let (status, _) = dev
        .send("GET", "/connections/c3?provider_config_key=toast", None)
        .await;
    assert_eq!(status, 404);

    // A provider whose own header carries the token gets no
    // `Authorization` besides (the default body is JSON).
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "tab", "connection_id": "t1",
                        "credentials": {"type": "TWO_STEP", "clientId": "id", "clientSecret": "s3cret"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send_as(("tab", "t1"), "GET", "/proxy/tableau", None)
        .await;
    assert_eq!((status, &body["me"]), (200, &json!("ok")), "{body}");

    // Credentials in a token URL's query are encoded, each staying one
    // value.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "query", "connection_id": "q1",
                        "credentials": {"type": "TWO_STEP", "username": "ann@example.com",
                                        "password": "p&ss=1 +x%"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["credentials"]["token"], "q-token", "{body}");

    // A definition asking for what sluice does not do is named.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "signed", "connection_id": "s1",
                        "credentials": {"type": "TWO_STEP", "privateKey": "k"}}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`assertion`"),
        "{body}"
    );

    // From the browser, for a connect session.
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions",
            Some(json!({"end_user": {"id": "u1"}, "allowed_integrations": ["toast"]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let post = |body: Value| {
        let url = format!(
            "{}/auth/two-step/toast?connect_session_token={token}&params[tenant]=t1",
            server.url()
        );
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
    let (status, body) = post(json!({"clientId": "id", "clientSecret": "wrong"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "two_step_credentials_fetch_error");
    let (status, body) = post(json!({"clientId": "id", "token": "mine"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(json!({"clientId": "id", "clientSecret": "s3cret"})).await;
    assert_eq!(status, 200, "{body}");
    let cid = body["connectionId"].as_str().unwrap().to_string();
    let made = connection(&dev, &cid).await;
    assert_eq!(made["credentials"]["token"], "tok-5", "{made}");
    assert_eq!(made["connection_config"]["tenant"], "t1", "{made}");
    assert_eq!(made["connection_config"]["region"], "eu", "{made}");
    assert_eq!(made["end_user"]["id"], "u1", "{made}");
    server.stop().await;
}
