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
    provider.lifetime.store(1, Ordering::SeqCst);
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
        body["error"]["message"].as_str().unwrap().contains("saml"),
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

/// The claims of JWT `jwt`, and its header.
fn jwt_parts(jwt: &str) -> (Value, Value) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let part = |i: usize| -> Value {
        serde_json::from_slice(
            &b64.decode(jwt.split('.').nth(i).unwrap_or_default())
                .unwrap_or_default(),
        )
        .unwrap_or_default()
    };
    (part(1), part(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_step_assertions_answers_that_are_tokens_refresh_requests_and_session_cookies() {
    let seen = Arc::new(Mutex::new(Vec::<(String, Value)>::new()));
    let s = seen.clone();
    let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
        let form: std::collections::BTreeMap<String, String> =
            url::form_urlencoded::parse(&req.body)
                .into_owned()
                .collect();
        s.lock()
            .unwrap()
            .push((req.path.clone(), req.json().unwrap_or_else(|| json!(form))));
        match req.path.as_str() {
            // NetSuite's machine-to-machine token: a JWT assertion.
            "/m2m/token" => {
                let (claims, header) = jwt_parts(
                    form.get("client_assertion")
                        .map(String::as_str)
                        .unwrap_or(""),
                );
                if claims["iss"] == "client-1"
                    && header["kid"] == "cert-1"
                    && header["alg"] == "RS256"
                    && claims["jti"].as_str().is_some_and(|j| j.len() == 36)
                    && claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0)
                        == 3600
                    && form.get("grant_type").map(String::as_str) == Some("client_credentials")
                {
                    MockResponse::json(
                        200,
                        &json!({"access_token": "m2m-token", "expires_in": 3600}),
                    )
                } else {
                    MockResponse::json(401, &json!({"error": "invalid_client"}))
                }
            }
            // JobDiva's: the answer is the token.
            "/jobdiva/authenticate" => {
                if req.query_param("password") == Some("pw") {
                    MockResponse::json(200, &json!("jd-token"))
                } else {
                    MockResponse::json(401, &json!("bad login"))
                }
            }
            // Aspire's: a login, then refreshes with its refresh token.
            "/aspire/Authorization" => {
                MockResponse::json(200, &json!({"Token": "asp-1", "RefreshToken": "rt-1"}))
            }
            "/aspire/Authorization/RefreshToken" => {
                let body = req.json().unwrap_or_default();
                // Each use of a token this short-lived refreshes it.
                if body == json!({"RefreshToken": "rt-1"})
                    || body == json!({"RefreshToken": "rt-2"})
                {
                    MockResponse::json(200, &json!({"Token": "asp-2", "RefreshToken": "rt-2"}))
                } else {
                    MockResponse::json(401, &json!({"error": "stale refresh token"}))
                }
            }
            // SAP Business One's: a session cookie.
            "/b1/Login" => {
                let mut r = MockResponse::json(200, &json!({"SessionId": "sess-1"}));
                r.headers.push((
                    "set-cookie".into(),
                    "B1SESSION=sess-1; path=/b1s; HttpOnly".into(),
                ));
                r.headers
                    .push(("set-cookie".into(), "ROUTEID=.node1; path=/".into()));
                r
            }
            "/b1/Items" => {
                if req.header("cookie") == Some("B1SESSION=sess-1; ROUTEID=.node1")
                    && req.header("authorization").is_none()
                {
                    MockResponse::json(200, &json!({"value": []}))
                } else {
                    MockResponse::json(401, &json!({"error": "no session"}))
                }
            }
            "/aspire/api/Properties" => {
                if req.header("authorization") == Some("Bearer asp-2") {
                    MockResponse::json(200, &json!({"ok": true}))
                } else {
                    MockResponse::json(401, &json!({"error": "stale"}))
                }
            }
            _ => MockResponse::json(404, &json!({})),
        }
    }))
    .await
    .unwrap();
    let url = mock.url();
    let providers = format!(
        "m2m:\n  auth_mode: TWO_STEP\n  body_format: form\n  token_url: {url}/m2m/token\n  token_params:\n    grant_type: client_credentials\n    client_assertion_type: urn:ietf:params:oauth:client-assertion-type:jwt-bearer\n    client_assertion: ${{credentials.assertion}}\n  assertion:\n    type: jwt\n    key: ${{assertionOption.privateKey}}\n    lifetimeInSeconds: 3600\n    header:\n      alg: RS256\n      kid: ${{credentials.certificateId}}\n    payload:\n      iss: ${{credentials.clientId}}\n      aud: {url}/m2m/token\n      jti: ${{random}}\n  token_response:\n    token: access_token\n    token_expiration: expires_in\n    token_expiration_strategy: expireIn\n  proxy:\n    base_url: {url}\n\
         saml:\n  auth_mode: TWO_STEP\n  token_url: {url}/saml\n  assertion:\n    type: saml\n  token_response:\n    token: access_token\n\
         jobdiva:\n  auth_mode: TWO_STEP\n  token_request_method: GET\n  token_url: {url}/jobdiva/authenticate?username=${{credentials.username}}&password=${{credentials.password}}\n  token_response:\n    token: ''\n  proxy:\n    base_url: {url}\n\
         aspire:\n  auth_mode: TWO_STEP\n  body_format: json\n  token_url: {url}/aspire/Authorization\n  refresh_url: {url}/aspire/Authorization/RefreshToken\n  token_params:\n    ClientId: ${{credentials.clientId}}\n    Secret: ${{credentials.secret}}\n  refresh_token_params:\n    RefreshToken: ${{refresh_token}}\n  token_expires_in_ms: 1000\n  token_response:\n    token: Token\n    refresh_token: RefreshToken\n  proxy:\n    base_url: {url}/aspire\n\
         b1:\n  auth_mode: TWO_STEP\n  body_format: json\n  token_url: {url}/b1/Login\n  token_params:\n    UserName: ${{credentials.userName}}\n    Password: ${{credentials.password}}\n  token_response:\n    token: SessionId\n  token_response_headers:\n    - set-cookie\n  proxy:\n    base_url: {url}/b1\n    headers:\n      cookie: ${{credentials._cookies}}\n"
    );
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let dev = Client::new(&server, DEV_KEY);
    for p in ["m2m", "saml", "jobdiva", "aspire", "b1"] {
        let (status, body) = dev
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": p, "provider": p})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let import = |pck: &str, creds: Value| {
        let mut creds = creds;
        creds["type"] = json!("TWO_STEP");
        json!({"provider_config_key": pck, "connection_id": "c1", "credentials": creds})
    };

    // A JWT assertion signed with the user's key.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(import(
                "m2m",
                json!({"clientId": "client-1", "certificateId": "cert-1",
                "assertionOption": {"privateKey": crate::github_app::APP_KEY}}),
            )),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["credentials"]["token"], "m2m-token", "{body}");
    // The key the user gave is kept to sign the next assertions, and
    // never shown.
    assert!(
        body["credentials"].get("assertionOption").is_none(),
        "{body}"
    );
    let (status, body) = dev
        .send(
            "GET",
            "/connections/c1?provider_config_key=m2m&force_refresh=true",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credentials"]["token"], "m2m-token", "{body}");
    assert!(!body.to_string().contains("PRIVATE KEY"), "{body}");
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == "/m2m/token")
            .count(),
        2
    );
    // A SAML assertion: named, nothing stored.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(import("saml", json!({"apiKey": "k"}))),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("saml"),
        "{body}"
    );

    // The answer is the token.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(import(
                "jobdiva",
                json!({"username": "ann", "password": "pw"}),
            )),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["credentials"]["token"], "jd-token", "{body}");

    // A refresh request of its own, with the refresh token the login gave.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(import("aspire", json!({"clientId": "id", "secret": "s"}))),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["credentials"]["refresh_token"], "rt-1", "{body}");
    let (status, body) = dev
        .send_as(("aspire", "c1"), "GET", "/proxy/api/Properties", None)
        .await;
    assert_eq!((status, &body["ok"]), (200, &json!(true)), "{body}");
    let refreshes: Vec<Value> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == "/aspire/Authorization/RefreshToken")
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(
        refreshes.first(),
        Some(&json!({"RefreshToken": "rt-1"})),
        "{refreshes:?}"
    );

    // A session cookie from the answer's headers, sent as the provider's
    // proxy headers say (and no bearer token besides).
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(import(
                "b1",
                json!({"userName": "manager", "password": "pw"}),
            )),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["credentials"]["_cookies"], "B1SESSION=sess-1; ROUTEID=.node1",
        "{body}"
    );
    let (status, body) = dev.send_as(("b1", "c1"), "GET", "/proxy/Items", None).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

/// A token URL whose host the browser's value chooses
/// (`http://${connectionConfig.host}/…`, as Drupal's): from a connect
/// session it is asked only at a public address, whatever the
/// environment's `allowed_hosts` opens to scripts and the app (else anyone
/// holding a session could make the server post to an internal host and
/// read its answer in the refusal); the app's own import may name it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_cannot_send_a_token_request_to_a_host_only_allowed_hosts_opens() {
    let provider = Provider::start().await;
    let mock_host = provider
        .mock
        .url()
        .trim_start_matches("http://")
        .to_string();
    let yaml = format!(
        "{}hosted:\n  auth_mode: TWO_STEP\n  body_format: json\n  token_url: http://${{connectionConfig.host}}/auth/t1/login\n  token_params:\n    clientId: ${{credentials.clientId}}\n    clientSecret: ${{credentials.clientSecret}}\n    userAccessType: MACHINE\n  token_headers:\n    x-app: sluice-test\n  token_response:\n    token: token.accessToken\n  proxy:\n    base_url: {}/api\n",
        provider.yaml(),
        provider.mock.url()
    );
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.limits.allowed_hosts = vec![mock_host.clone()];
    let server = start_with(config, &MasterKey::generate(), &yaml).await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "hosted", "provider": "hosted"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions",
            Some(json!({"end_user": {"id": "u1"}, "allowed_integrations": ["hosted"]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let url = format!(
        "{}/auth/two-step/hosted?connect_session_token={token}&params[host]={mock_host}",
        server.url()
    );
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(json!({"clientId": "id", "clientSecret": "s3cret"}).to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "two_step_credentials_fetch_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a public address"),
        "{body}"
    );
    assert_eq!(provider.logins(), 0, "the internal host was asked");

    // The app's own import names the host: allowed_hosts lets it through.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "hosted", "connection_id": "h1",
                "connection_config": {"host": mock_host},
                "credentials": {"type": "TWO_STEP", "clientId": "id", "clientSecret": "s3cret"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(provider.logins(), 1);
    server.stop().await;
}
