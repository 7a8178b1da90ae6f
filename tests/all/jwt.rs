//! JWT and SIGNATURE connections: a token sluice makes itself from the
//! user's credentials (a JWT signed with their key, a WSSE header), when
//! the connection is made (an import, or the browser's form) and again
//! once it expires; the token is what the proxy's and scripts' requests
//! carry.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hmac::Mac as _;
use serde_json::{Value, json};
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer};

use crate::server::{Client, DEV_KEY, start_with};

/// Ghost's Admin API key of the test (`id:secret`, the secret in hex).
const GHOST_ID: &str = "65a1b2";
const GHOST_SECRET: [u8; 4] = [0x0a, 0x0b, 0x0c, 0x0d];

/// Whether `jwt` is an HS256 token of kid `GHOST_ID`, audience `/admin/`,
/// signed with `GHOST_SECRET`, that has not expired.
fn ghost_accepts(jwt: &str) -> bool {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Some((input, signature)) = jwt.rsplit_once('.') else {
        return false;
    };
    let Some((header, claims)) = input.split_once('.') else {
        return false;
    };
    let decode = |p: &str| -> Value {
        serde_json::from_slice(&b64.decode(p).unwrap_or_default()).unwrap_or_default()
    };
    let (header, claims) = (decode(header), decode(claims));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&GHOST_SECRET).unwrap();
    mac.update(input.as_bytes());
    let signed = mac
        .verify_slice(&b64.decode(signature).unwrap_or_default())
        .is_ok();
    signed
        && header["alg"] == "HS256"
        && header["kid"] == GHOST_ID
        && claims["aud"] == "/admin/"
        && claims["exp"].as_i64().unwrap_or(0) > chrono::Utc::now().timestamp()
}

/// Whether `header` is a WSSE `UsernameToken` of user `acme` made with
/// password `s3cret`.
fn emarsys_accepts(header: &str) -> bool {
    use sha1::Digest as _;
    let field = |name: &str| {
        let start = header.find(&format!("{name}=\""))? + name.len() + 2;
        let end = header[start..].find('"')? + start;
        Some(header[start..end].to_string())
    };
    let (Some(user), Some(digest), Some(nonce), Some(created)) = (
        field("Username"),
        field("PasswordDigest"),
        field("Nonce"),
        field("Created"),
    ) else {
        return false;
    };
    let hex: String = sha1::Sha1::digest(format!("{nonce}{created}s3cret"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    header.starts_with("UsernameToken ")
        && user == "acme"
        && digest == base64::engine::general_purpose::STANDARD.encode(hex)
}

struct Provider {
    mock: MockServer,
    /// The tokens the API was sent, in order.
    seen: Arc<Mutex<Vec<String>>>,
}

impl Provider {
    async fn start() -> Provider {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
            if req.path.starts_with("/ghost/") {
                let auth = req.header("authorization").unwrap_or_default();
                let token = auth.strip_prefix("Ghost ").unwrap_or_default();
                s.lock().unwrap().push(token.to_string());
                return if ghost_accepts(token) {
                    MockResponse::json(200, &json!({"posts": []}))
                } else {
                    MockResponse::json(401, &json!({"errors": [{"message": "Invalid token"}]}))
                };
            }
            let wsse = req.header("x-wsse").unwrap_or_default();
            s.lock().unwrap().push(wsse.to_string());
            if emarsys_accepts(wsse) {
                MockResponse::json(200, &json!({"replyCode": 0}))
            } else {
                MockResponse::json(401, &json!({"replyText": "Unauthorized"}))
            }
        }))
        .await
        .unwrap();
        Provider { mock, seen }
    }

    fn yaml(&self) -> String {
        let url = self.mock.url();
        format!(
            "ghost-admin:\n  auth_mode: JWT\n  signature:\n    protocol: HMAC\n  token:\n    signing_key: ${{credentials.privateKey.secret}}\n    expires_in_ms: 300000\n    header:\n      alg: HS256\n      kid: ${{credentials.privateKey.id}}\n    payload:\n      aud: /admin/\n      sub: ${{connectionConfig.site}}\n  proxy:\n    base_url: {url}/ghost\n    headers:\n      authorization: Ghost ${{accessToken}}\n\
             emarsys:\n  auth_mode: SIGNATURE\n  signature:\n    protocol: WSSE\n  token:\n    expires_in_ms: 300000\n  proxy:\n    base_url: {url}/emarsys\n    headers:\n      x-wsse: ${{accessToken}}\n"
        )
    }

    fn last(&self) -> String {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

async fn connection(c: &Client, pck: &str, cid: &str) -> Value {
    let (status, body) = c
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key={pck}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn seconds_left(c: &Value) -> i64 {
    let at = chrono::DateTime::parse_from_rfc3339(c["credentials"]["expires_at"].as_str().unwrap())
        .unwrap();
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_and_signature_connections_carry_tokens_made_from_the_users_credentials() {
    let provider = Provider::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &provider.yaml()).await;
    let dev = Client::new(&server, DEV_KEY);
    for (key, p) in [("ghost", "ghost-admin"), ("emarsys", "emarsys")] {
        let (status, body) = dev
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": key, "provider": p})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let ghost_key = format!("{GHOST_ID}:0a0b0c0d");

    // Imported without a token: one is signed with the user's key, valid
    // as long as the provider says, and the API takes it.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "ghost", "connection_id": "g1",
                        "credentials": {"type": "JWT", "privateKey": ghost_key}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let g1 = connection(&dev, "ghost", "g1").await;
    let first = g1["credentials"]["token"].as_str().unwrap().to_string();
    assert!(ghost_accepts(&first), "{g1}");
    assert!((295..=300).contains(&seconds_left(&g1)), "{g1}");
    let (status, body) = dev
        .send_as(("ghost", "g1"), "GET", "/proxy/posts", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(provider.last(), first);

    // A token that expired (imported so) is made again before the next
    // request, from the credentials the connection keeps.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "ghost", "connection_id": "g2",
                        "credentials": {"type": "JWT", "privateKey": ghost_key,
                                        "token": "stale", "expires_at": "2020-01-01T00:00:00Z"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send_as(("ghost", "g2"), "GET", "/proxy/posts", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let remade = provider.last();
    assert!(ghost_accepts(&remade), "{remade}");
    let g2 = connection(&dev, "ghost", "g2").await;
    assert_eq!(g2["credentials"]["token"], json!(remade), "{g2}");
    assert!(seconds_left(&g2) > 200, "{g2}");

    // Imported with a token but no expiry: made again before use.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "ghost", "connection_id": "g5",
                        "credentials": {"type": "JWT", "privateKey": ghost_key, "token": "given"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send_as(("ghost", "g5"), "GET", "/proxy/posts", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(ghost_accepts(&provider.last()), "{}", provider.last());

    // The configuration's values go into the claims; a re-import that
    // leaves the configuration out signs with the stored one.
    let claims = |jwt: &str| -> Value {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        serde_json::from_slice(&b64.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap()
    };
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "ghost", "connection_id": "g4",
                        "connection_config": {"site": "blog-1"},
                        "credentials": {"type": "JWT", "privateKey": ghost_key}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        claims(body["credentials"]["token"].as_str().unwrap())["sub"],
        "blog-1"
    );
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "ghost", "connection_id": "g4",
                        "credentials": {"type": "JWT", "privateKey": ghost_key}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        claims(body["credentials"]["token"].as_str().unwrap())["sub"],
        "blog-1"
    );
    assert!(claims(&first).get("sub").is_none(), "no site: no claim");

    // Credentials the definition cannot sign with: refused, named, and
    // nothing stored.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "ghost", "connection_id": "g3",
                        "credentials": {"type": "JWT", "privateKey": GHOST_ID}}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "failed_to_generate", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("privateKey.secret"),
        "{body}"
    );
    let (status, _) = dev
        .send("GET", "/connections/g3?provider_config_key=ghost", None)
        .await;
    assert_eq!(status, 404);

    // SIGNATURE: a WSSE header made from the username and password.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "emarsys", "connection_id": "e1",
                        "credentials": {"type": "SIGNATURE", "username": "acme", "password": "s3cret"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send_as(("emarsys", "e1"), "GET", "/proxy/api/v2/settings", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(emarsys_accepts(&provider.last()), "{}", provider.last());
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "emarsys", "connection_id": "e2",
                        "credentials": {"type": "SIGNATURE", "username": "acme"}}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("password"),
        "{body}"
    );

    // From the browser, for a connect session.
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions",
            Some(json!({"end_user": {"id": "u1"}, "allowed_integrations": ["ghost", "emarsys"]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let post = |path: &str, body: Value| {
        let url = format!("{}{path}?connect_session_token={token}", server.url());
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
        "/auth/jwt/ghost",
        json!({"privateKey": ghost_key, "token": "mine"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        "/auth/signature/ghost",
        json!({"username": "acme", "password": "s3cret"}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_auth_mode")),
        "{body}"
    );
    let (status, body) = post("/auth/jwt/ghost", json!({"privateKey": ghost_key})).await;
    assert_eq!(status, 200, "{body}");
    let cid = body["connectionId"].as_str().unwrap().to_string();
    let made = connection(&dev, "ghost", &cid).await;
    assert!(
        ghost_accepts(made["credentials"]["token"].as_str().unwrap()),
        "{made}"
    );
    assert_eq!(made["end_user"]["id"], "u1", "{made}");
    let (status, body) = post(
        "/auth/signature/emarsys",
        json!({"username": "acme", "password": "s3cret"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let cid = body["connectionId"].as_str().unwrap().to_string();
    let (status, body) = dev
        .send_as(("emarsys", &cid), "GET", "/proxy/api/v2/settings", None)
        .await;
    assert_eq!(status, 200, "{body}");

    // The user's key is not in the data directory's files.
    server.stop().await;
    let secret_half = "0a0b0c0d";
    for entry in walk(data.path()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !bytes
                .windows(secret_half.len())
                .any(|w| w == secret_half.as_bytes()),
            "{} holds the key",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A 2,048-bit RSA key made for these tests alone (`openssl genpkey`).
const RSA_KEY_2048: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDoglkSKGokJ4Uv\naZ5IKNeFO0i65pkcBWzt5f/4avg+qUmWqvu7b4f6Kr5yC/a3g52k6O6ins8bs0cY\n7L3+rAUqrH7csdvAx/dEviFVjqswkeSkuWZBrX2UxaxeVdT1kLi+9Thyp3gE+jTc\neYQCsVi/N69zDdT+Qf4zIXx5mtSq70QBXJG3QQQHlP7lwd44tLgH0NiV2k/Kn7xd\nhVNQP2HFWStmorOXJdlTnLXH44WmvC6ZT1I4NCcJa3p1IuUlbCsMc9XdnHdb2cLp\n066BPidUXwAxQVs6ernZoGzOPEeDyEGQl51lgEiMV2S52cH4wX9GfHFTyNSYS8yC\nu4iQmpH1AgMBAAECggEAAUk3ad7HycbnlO3V3wirdn8aZZiDFh3fodknTbRcSuiQ\n5OpCwWmxsW0dQ4OFU4jjJLZgpC9SLkz1Q7IT62l//khQZWIQQXIpsiP1AgJajXnN\noo+sSd4CAORmiWorr4TjrtXFSPkxYzLcNvSRCcU9xuc+hxmiEZJH+Kt17axTHAkd\na4tkP5F1/0ksjBV8MSwdQWZ6wmtZZOA0mcXXcRpmofyYEaaYPpTCseou9Lyk6vTu\nkMNNgDeFFYRF2M9vqDQGZ9wZCD3KbQhazaIhkLGN9SHf22LuByOxvWp5oUdi20XC\nWcouQor6/DnqtvzPfpulRtVMU12cDRkCkW15EfWKqQKBgQD4ZM2ilXtnUc1jJHZn\nVoMPl3kDOSIl/AsaTAJ8P4j57rFyFW/Rz6r+jm7pi/n5jwWniXRrfN5HH+WGoaWf\n1ijYrUMdTsBrvSA4E+Yjki757y2IqkCL4wZT3nmCrlYUCrj02Jqd4p2Y4kXtOHAX\n1UJkR8LAXQYawNEGfucae8RBrQKBgQDvoQXesXMl1yt7joRSY6eppxZVqcOVSmuF\n5JyMdHBMO7j/zbX8pSo4C+yM1a8aRQrBJFvEvG1hR/1bLDF0mY9sraCkWwFhqKY8\nlL3EQ1XD4XH6R6asARnrjxw9z6i1r3/truQRa9ttZxFzGaX3b2yW2VwJpWOGVwfA\nU6EiktJqaQKBgQDDtQigNQ7J1RXyK2Ru/ya8PihGddmF/BPzYDgFFTojUgHVVTaJ\nJQohDrAsqvEFw748xnxHxFaNy3/Yl7wbN21vavQaP1Y0jQq5pFQLar5AhkZmC15X\n2UO/CObMI/gGSnx3zcHk7AwnzQAza+hFnu10fWXgkmqg4ZLPf2Uu5J048QKBgHAk\nPSkAhlC5J6JFCeu8s2QTy8H/FoaxMyyP1its+njSojskO/ymFuHvwp4OCkoS8Xt9\n1mx1egLCu/CE+AgHLTXA86K27CiV0mYbfctxb5uhz8M+8OMiCM1SRfcvTVbpcMb8\nx8LXZPMH/wSMhj0LqhfWVNo2yiK+a+Q3vvr9FvexAoGBAO2cDCulOB+Lo6YHbvRJ\nU7AJeRN/dDrRW84ekJqoJXC/FnRdg7yPxsUSn5Bgfma8z//lPW6cL9dbM/lvTXHP\n2LL/G6MUaJXXl6oPLqSNnanO9IBLJZ9okOSWZKkOut5igg+h1Qpk/aGrBhaco+M5\nJAoFRi9b5U106Okd8W4GRlcw\n-----END PRIVATE KEY-----";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_keys_past_8192_bits_are_refused_at_once_and_real_ones_sign() {
    let logins = Arc::new(Mutex::new(0u32));
    let l = logins.clone();
    let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
        if req.path == "/m2m/token" {
            *l.lock().unwrap() += 1;
            return MockResponse::json(200, &json!({"access_token": "m2m-1", "expires_in": 3600}));
        }
        MockResponse::json(200, &json!({}))
    }))
    .await
    .unwrap();
    let url = mock.url();
    let yaml = format!(
        "rsajwt:\n  auth_mode: JWT\n  signature:\n    protocol: RSA\n  token:\n    signing_key: ${{credentials.privateKey}}\n    expires_in_ms: 300000\n    header:\n      alg: RS256\n    payload:\n      iss: ${{credentials.issuerId}}\n  proxy:\n    base_url: {url}\n\
         m2m:\n  auth_mode: TWO_STEP\n  body_format: form\n  token_url: {url}/m2m/token\n  token_params:\n    grant_type: client_credentials\n    client_assertion: ${{credentials.assertion}}\n  assertion:\n    type: jwt\n    key: ${{assertionOption.privateKey}}\n    header:\n      alg: RS256\n    payload:\n      iss: ${{credentials.clientId}}\n  token_response:\n    token: access_token\n    token_expiration: expires_in\n    token_expiration_strategy: expireIn\n  proxy:\n    base_url: {url}\n"
    );
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &yaml).await;
    let dev = Client::new(&server, DEV_KEY);
    for (key, p) in [("rsa", "rsajwt"), ("m2m", "m2m")] {
        let (status, body) = dev
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": key, "provider": p})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions",
            Some(json!({"end_user": {"id": "u1"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let post = |path: &str, body: Value| {
        let url = format!("{}{path}?connect_session_token={token}", server.url());
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
    let limit_named = |body: &Value| {
        let message = body["error"]["message"].as_str().unwrap_or_default();
        message.contains("16377 bits") && message.contains("at most 8192 bits")
    };

    // A key of 16,377 bits, from the browser of a connect session, from
    // an import, as a TWO_STEP assertion's key: refused at once, the
    // limit named, nothing stored and nothing asked of the provider.
    let huge = sluice_server::made_up_rsa_key(8192, 8184);
    let started = std::time::Instant::now();
    let (status, body) = post(
        "/auth/jwt/rsa",
        json!({"privateKey": huge, "issuerId": "i-1"}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("failed_to_generate")),
        "{body}"
    );
    assert!(limit_named(&body), "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "rsa", "connection_id": "r1",
                "credentials": {"type": "JWT", "privateKey": huge, "issuerId": "i-1"}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(limit_named(&body), "{body}");
    let (status, body) = post(
        "/auth/two-step/m2m",
        json!({"clientId": "c-1", "assertionOption": {"privateKey": huge}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(limit_named(&body), "{body}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "refused in {:?}",
        started.elapsed()
    );
    assert_eq!(*logins.lock().unwrap(), 0);
    let (status, body) = dev.send("GET", "/connections", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connections"], json!([]), "{body}");

    // A key far larger: refused before it is read, its size named.
    let (status, body) = post(
        "/auth/jwt/rsa",
        json!({"privateKey": sluice_server::made_up_rsa_key(16384, 16376), "issuerId": "i-1"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("an RSA key of at most 8192 bits"),
        "{body}"
    );

    // A real key of 2,048 bits signs, from the browser and as an
    // assertion's key.
    let (status, body) = post(
        "/auth/jwt/rsa",
        json!({"privateKey": RSA_KEY_2048, "issuerId": "i-1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let cid = body["connectionId"].as_str().unwrap().to_string();
    let made = connection(&dev, "rsa", &cid).await;
    let jwt = made["credentials"]["token"].as_str().unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(
        (&header["alg"], &claims["iss"]),
        (&json!("RS256"), &json!("i-1"))
    );
    assert_eq!(
        b64.decode(parts[2]).unwrap().len(),
        256,
        "a 2,048-bit signature"
    );
    let (status, body) = post(
        "/auth/two-step/m2m",
        json!({"clientId": "c-1", "assertionOption": {"privateKey": RSA_KEY_2048}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(*logins.lock().unwrap(), 1);
    server.stop().await;
}
