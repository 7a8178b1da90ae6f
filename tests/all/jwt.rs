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
