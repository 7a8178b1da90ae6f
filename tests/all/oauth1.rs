//! OAuth 1.0a connections (`OAUTH1`: Trello, Twitter, Garmin, SmugMug):
//! every request signed for the integration's app and the connection's
//! token, and the three-legged flow from the browser (a request token,
//! the user's grant, the access token).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hmac::Mac as _;
use serde_json::json;
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer};

use crate::server::{Client, DEV_KEY, start_with};

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn dec(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The `oauth_` fields of `req`'s `Authorization: OAuth …` header, if its
/// HMAC-SHA1 signature is right for consumer secret `csecret` and the
/// secret of the token it names (`secrets`).
fn verified(req: &MockRequest, secrets: &BTreeMap<&str, &str>) -> Option<BTreeMap<String, String>> {
    verified_as(req, secrets, "HMAC-SHA1")
}

/// [`verified`] for signature method `method` (`HMAC-SHA1`,
/// `HMAC-SHA256`); a `realm` is not signed (RFC 5849 §3.4.1.3.1).
fn verified_as(
    req: &MockRequest,
    secrets: &BTreeMap<&str, &str>,
    method: &str,
) -> Option<BTreeMap<String, String>> {
    let header = req.header("authorization")?.strip_prefix("OAuth ")?;
    let mut fields = BTreeMap::new();
    for part in header.split(", ") {
        let (k, v) = part.split_once('=')?;
        fields.insert(dec(k), dec(v.trim_matches('"')));
    }
    let signature = fields.remove("oauth_signature")?;
    let realm = fields.remove("realm");
    if fields.get("oauth_signature_method").map(String::as_str) != Some(method) {
        return None;
    }
    let token_secret = match fields.get("oauth_token") {
        Some(t) => *secrets.get(t.as_str())?,
        None => "",
    };
    let mut params: Vec<(String, String)> = fields.iter().map(|(k, v)| (enc(k), enc(v))).collect();
    for (k, v) in &req.query {
        params.push((enc(k), enc(v)));
    }
    if req.header("content-type") == Some("application/x-www-form-urlencoded") {
        for (k, v) in url::form_urlencoded::parse(&req.body) {
            if !k.starts_with("oauth_") || !fields.contains_key(k.as_ref()) {
                params.push((enc(&k), enc(&v)));
            }
        }
    }
    params.sort();
    let joined: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let base = format!(
        "{}&{}&{}",
        req.method,
        enc(&format!("http://{}{}", req.header("host")?, req.path)),
        enc(&joined.join("&"))
    );
    let key = format!("csecret&{}", enc(token_secret));
    let digest = if method == "HMAC-SHA256" {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).ok()?;
        mac.update(base.as_bytes());
        mac.finalize().into_bytes().to_vec()
    } else {
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).ok()?;
        mac.update(base.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    let expected = base64::engine::general_purpose::STANDARD.encode(digest);
    if let Some(realm) = realm {
        fields.insert("realm".into(), realm);
    }
    (expected == signature && fields.get("oauth_consumer_key").map(String::as_str) == Some("ck"))
        .then_some(fields)
}

fn form(pairs: &[(&str, &str)]) -> MockResponse {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let mut r = MockResponse::json(200, &json!({}));
    r.body = body.into_bytes();
    r.headers = vec![(
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    )];
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth1_connections_are_signed_and_made_through_the_three_legged_flow() {
    let callbacks = Arc::new(Mutex::new(Vec::<String>::new()));
    let cb = callbacks.clone();
    let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
        let secrets: BTreeMap<&str, &str> =
            [("req-tok", "req&secret"), ("acc-tok", "acc secret")].into();
        let Some(fields) = verified(req, &secrets) else {
            return MockResponse::json(401, &json!({"error": "invalid signature"}));
        };
        match req.path.as_str() {
            "/oauth/request_token" => {
                let body: BTreeMap<String, String> = url::form_urlencoded::parse(&req.body)
                    .into_owned()
                    .collect();
                if fields.contains_key("oauth_token")
                    || body.get("x_auth_access_type").map(String::as_str) != Some("write")
                {
                    return MockResponse::json(400, &json!({"error": "bad request token call"}));
                }
                cb.lock().unwrap().push(fields["oauth_callback"].clone());
                form(&[
                    ("oauth_token", "req-tok"),
                    ("oauth_token_secret", "req&secret"),
                    ("oauth_callback_confirmed", "true"),
                ])
            }
            "/oauth/access_token" => {
                if fields.get("oauth_token").map(String::as_str) != Some("req-tok")
                    || fields.get("oauth_verifier").map(String::as_str) != Some("v3r")
                {
                    return MockResponse::json(401, &json!({"error": "not granted"}));
                }
                form(&[
                    ("oauth_token", "acc-tok"),
                    ("oauth_token_secret", "acc secret"),
                    ("user_id", "42"),
                ])
            }
            _ if fields.get("oauth_token").map(String::as_str) == Some("acc-tok") => {
                MockResponse::json(
                    200,
                    &json!({"id": "me", "fields": req.query_param("fields")}),
                )
            }
            _ => MockResponse::json(401, &json!({"error": "wrong token"})),
        }
    }))
    .await
    .unwrap();
    let url = mock.url();
    let providers = format!(
        "trellish:\n  auth_mode: OAUTH1\n  request_url: {url}/oauth/request_token\n  authorization_url: https://trello.example/1/OAuthAuthorizeToken\n  token_url: {url}/oauth/access_token\n  signature_method: HMAC-SHA1\n  scope_separator: ','\n  authorization_params:\n    expiration: never\n  request_params:\n    x_auth_access_type: write\n  proxy:\n    base_url: {url}\n"
    );
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "trello", "provider": "trellish",
                        "credentials": {"type": "OAUTH1", "client_id": "ck", "client_secret": "csecret",
                                        "scopes": "read,write"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // An imported token: each request signed for the app and the token.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "trello", "connection_id": "t1",
                        "credentials": {"type": "OAUTH1", "oauth_token": "acc-tok",
                                        "oauth_token_secret": "acc secret"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send_as(
            ("trello", "t1"),
            "GET",
            "/proxy/1/members/me?fields=all+of+it",
            None,
        )
        .await;
    assert_eq!(
        (status, &body["fields"]),
        (200, &json!("all of it")),
        "{body}"
    );
    // A consumer in the connection's configuration (which a browser's
    // params can fill) signs nothing: the integration's app does.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "trello", "connection_id": "t2",
                        "connection_config": {"oauth_client_id": "evil", "oauth_client_secret": "x"},
                        "credentials": {"type": "OAUTH1", "oauth_token": "acc-tok",
                                        "oauth_token_secret": "acc secret"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send_as(("trello", "t2"), "GET", "/proxy/1/members/me", None)
        .await;
    assert_eq!(status, 200, "{body}");
    // The app's secret is not the script's to see.
    let (status, body) = dev
        .send("GET", "/connections/t1?provider_config_key=trello", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains("csecret"), "{body}");

    // From the browser: a request token, the provider's page, the grant.
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions",
            Some(json!({"end_user": {"id": "u1"}, "allowed_integrations": ["trello"]})),
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
            "{}/oauth/connect/trello?connect_session_token={token}",
            server.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "{}", resp.text().await.unwrap());
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert!(
        location
            .as_str()
            .starts_with("https://trello.example/1/OAuthAuthorizeToken?"),
        "{location}"
    );
    let pairs: BTreeMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(pairs["oauth_token"], "req-tok");
    assert_eq!(pairs["scope"], "read,write");
    assert_eq!(pairs["expiration"], "never");
    let callback = url::Url::parse(&pairs["oauth_callback"]).unwrap();
    assert_eq!(callbacks.lock().unwrap()[0], callback.as_str());
    assert_eq!(callback.path(), "/oauth/callback");
    let state = callback
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    // A callback without the verifier: refused, nothing stored.
    let back = |query: String| {
        let browser = &browser;
        let base = server.url();
        async move {
            let resp = browser
                .get(format!("{base}/oauth/callback?{query}"))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let (status, page) = back(format!(
        "state={state}&oauth_token=req-tok&oauth_verifier=v3r"
    ))
    .await;
    assert_eq!(status, 200, "{page}");
    let (_, body) = dev.send("GET", "/connections?endUserId=u1", None).await;
    let cid = body["connections"][0]["connection_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = dev
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key=trello"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credentials"]["type"], "OAUTH1", "{body}");
    assert_eq!(body["credentials"]["oauth_token"], "acc-tok", "{body}");
    assert_eq!(body["credentials"]["raw"]["user_id"], "42", "{body}");
    let (status, body) = dev
        .send_as(("trello", &cid), "GET", "/proxy/1/members/me", None)
        .await;
    assert_eq!(status, 200, "{body}");

    let resp = browser
        .get(format!(
            "{}/oauth/connect/trello?connect_session_token={token}",
            server.url()
        ))
        .send()
        .await
        .unwrap();
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let callback: String = location
        .query_pairs()
        .find(|(k, _)| k == "oauth_callback")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let state = url::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let (status, page) = back(format!("state={state}&oauth_token=req-tok")).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("oauth_verifier"), "{page}");
    // Another flow's token, or the user's refusal: named, nothing stored.
    let new_state = || async {
        let resp = browser
            .get(format!(
                "{}/oauth/connect/trello?connect_session_token={token}",
                server.url()
            ))
            .send()
            .await
            .unwrap();
        let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
        let callback: String = location
            .query_pairs()
            .find(|(k, _)| k == "oauth_callback")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        url::Url::parse(&callback)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    let state = new_state().await;
    let (status, page) = back(format!(
        "state={state}&oauth_token=other&oauth_verifier=v3r"
    ))
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("another request token"), "{page}");
    let state = new_state().await;
    let (status, page) = back(format!("state={state}&denied=req-tok")).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("denied"), "{page}");
    let (_, body) = dev.send("GET", "/connections?endUserId=u1", None).await;
    assert_eq!(
        body["connections"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netsuite_tba_connections_sign_for_the_integrations_consumer() {
    let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
        let secrets: BTreeMap<&str, &str> = [("tba-tok", "tba secret")].into();
        match verified_as(req, &secrets, "HMAC-SHA256") {
            Some(fields) if fields.get("realm").map(String::as_str) == Some("123456_SB1") => {
                MockResponse::json(200, &json!({"items": []}))
            }
            _ => MockResponse::json(401, &json!({"error": "invalid login attempt"})),
        }
    }))
    .await
    .unwrap();
    let url = mock.url();
    let providers = format!("nsish:\n  auth_mode: TBA\n  proxy:\n    base_url: {url}\n");
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "ns", "provider": "nsish",
                        "credentials": {"type": "TBA", "client_id": "ck", "client_secret": "csecret"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Imported with the token alone: the integration's consumer signs.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "ns", "connection_id": "n1",
                        "connection_config": {"accountId": "123456-sb1"},
                        "credentials": {"type": "TBA", "token_id": "tba-tok", "token_secret": "tba secret"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send_as(
            ("ns", "n1"),
            "GET",
            "/proxy/services/rest/record/v1/customer?limit=5",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // From the browser.
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions",
            Some(json!({"end_user": {"id": "u1"}, "allowed_integrations": ["ns"]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let post = |body: serde_json::Value| {
        let url = format!(
            "{}/auth/tba/ns?connect_session_token={token}&params[accountId]=123456-sb1&params[oauth_client_id]=evil&params[oauth_client_secret]=evil-secret",
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
            let body: serde_json::Value =
                serde_json::from_str(&resp.text().await.unwrap()).unwrap();
            (status, body)
        }
    };
    let (status, body) = post(json!({"token_id": "tba-tok"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        post(json!({"token_id": "tba-tok", "token_secret": "tba secret", "type": "OAUTH2"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(json!({"token_id": "tba-tok", "token_secret": "tba secret"})).await;
    assert_eq!(status, 200, "{body}");
    let cid = body["connectionId"].as_str().unwrap().to_string();
    let (status, body) = dev
        .send_as(
            ("ns", &cid),
            "GET",
            "/proxy/services/rest/record/v1/customer",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The integration's secret is not copied into the connection.
    let (_, body) = dev
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key=ns"),
            None,
        )
        .await;
    assert!(!body.to_string().contains("csecret"), "{body}");
    // Nor the consumer the browser named in its params.
    assert!(!body.to_string().contains("evil"), "{body}");
    server.stop().await;
}
