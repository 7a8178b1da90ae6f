//! GitHub App connections (`APP`): the integration holds the app (id,
//! public page, private key); a connection names an installation, and its
//! token is an installation token the app asks GitHub for with a JWT it
//! signs, asked for when the connection is imported and again before it
//! expires.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{Value, json};
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer};

use crate::server::{Client, DEV_KEY, start_with};

/// A key made for this test alone (`openssl genrsa`, RSA 1024).
pub(crate) const APP_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIICXAIBAAKBgQCpk+NjbEWT30JL6+bckUa5qEqAx8PdjKFy+ftXgrpPSSd9YAeZ\nslNDvWsVw0hHSEQxc7bPuRrGY9S/nejcZf9KsDnkHNK50CgALqbltHpKT8UdEUvt\nXHXa7MLh6LsIbLGJcyGvchDaUKBwI4MUZLe1/bXDmEpFXaEQVVMuH29wIQIDAQAB\nAoGAN2qt76rNXhKizr7L1h7ftwJpPoaJ2pf/ltxcp+9/xTNJ5W4BbdfZ4BRBr33+\n29Sg/GwtPNroBhdPykLne0cV0yFtIY7abED2G8gMESO54Tgl2AveUIuz51ggAdGf\nOPhK58OCZHy2fngJTSMNaZWABMvoepvDygP/D0eq9c6N7LUCQQDTAcFsV5kZrxx3\nnp+2EGz1TBZGyx0+I43nydqdhM2D6jwk5dGC2XIv13kbEcG9qqyW/pGD6Z+KRKzL\ntC/plFnzAkEAzbyi07gQQrzet3n1EtpnaWCm29S0/BIHQrr3807e0PgqaNPjA2S+\nJfm1LdNRozf+IVw890p0FE0iIiPYpcOemwJAIKQS4cmjO1/lTXPSTP25fTCp+YWO\nHoCtgP+uu9NBX3iqmSKcCFvO2CvC5jcW+1odnLYAmKFZNrBs8o4LI1z5lQJBAIA6\nlUXeUAw4iZvToIL6qz+LpRQY1CDT38Cgpc/5FXkrY8toXPKNhNJIe7svHY/cY0FJ\nqxn6RrUsihy7ONnAPgcCQCZlHWvqaxvJJsrTlIJ8Vl7PFynlJxkkIEwMxEj+jiJn\ndZXb1b4vFu7ReEz64Vq3FXjOgJAS2EYq5QWfA15B1pc=\n-----END RSA PRIVATE KEY-----";

/// GitHub: installation tokens for installation 42 of app 123, each
/// `ghs_N`, valid `lifetime` seconds; an API answering the newest only.
struct GitHub {
    mock: MockServer,
    asked: Arc<Mutex<Vec<Value>>>,
    lifetime: Arc<AtomicI64>,
}

impl GitHub {
    async fn start() -> GitHub {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let lifetime = Arc::new(AtomicI64::new(3600));
        let issued = Arc::new(AtomicU32::new(0));
        let (a, life) = (asked.clone(), lifetime.clone());
        let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
            if let Some(installation) = req
                .path
                .strip_prefix("/app/installations/")
                .and_then(|p| p.strip_suffix("/access_tokens"))
            {
                // The app's JWT: its claims, as GitHub reads them.
                let jwt = req
                    .header("authorization")
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .unwrap_or_default();
                let claims: Value = jwt
                    .split('.')
                    .nth(1)
                    .and_then(|c| {
                        base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(c)
                            .ok()
                    })
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
                a.lock().unwrap().push(claims.clone());
                if req.method != "POST"
                    || claims["iss"] != "123"
                    || req.header("accept") != Some("application/vnd.github.v3+json")
                {
                    return MockResponse::json(
                        401,
                        &json!({"message": "A JSON web token could not be decoded"}),
                    );
                }
                if installation != "42" {
                    return MockResponse::json(404, &json!({"message": "Not Found"}));
                }
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                let at =
                    chrono::Utc::now() + chrono::Duration::seconds(life.load(Ordering::SeqCst));
                return MockResponse::json(
                    201,
                    &json!({"token": format!("ghs_{n}"), "expires_at": at.to_rfc3339(),
                            "permissions": {"issues": "read"}}),
                );
            }
            let newest = format!("Bearer ghs_{}", issued.load(Ordering::SeqCst));
            if req.header("authorization") == Some(newest.as_str()) {
                MockResponse::json(200, &json!({"login": "octocat"}))
            } else {
                MockResponse::json(401, &json!({"message": "Bad credentials"}))
            }
        }))
        .await
        .unwrap();
        GitHub {
            mock,
            asked,
            lifetime,
        }
    }

    fn asked(&self) -> usize {
        self.asked.lock().unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_app_connection_gets_installation_tokens_from_its_app() {
    let github = GitHub::start().await;
    let url = github.mock.url();
    let providers = format!(
        "github-app-test:\n  auth_mode: APP\n  authorization_url: ${{connectionConfig.appPublicLink}}/installations/new\n  token_url: {url}/app/installations/${{connectionConfig.installation_id}}/access_tokens\n  proxy:\n    base_url: {url}/api\n"
    );
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let dev = Client::new(&server, DEV_KEY);
    let integration = |key: Value| {
        json!({"unique_key": "gh", "provider": "github-app-test",
               "credentials": {"type": "APP", "app_id": "123", "app_link": "https://github.com/apps/sluice",
                               "private_key": key}})
    };
    // A key that is no key is refused, naming it.
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(integration(json!("bm9wZQ=="))),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("private key"), "{body}");
    // The key as the original keeps it: the base64 of the PEM.
    let encoded = base64::engine::general_purpose::STANDARD.encode(APP_KEY);
    let (status, body) = dev
        .send("POST", "/integrations", Some(integration(json!(encoded))))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send("GET", "/integrations/gh?include=credentials", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let shown = &body["data"]["credentials"];
    assert_eq!(
        (&shown["type"], &shown["app_id"], &shown["app_link"]),
        (
            &json!("APP"),
            &json!("123"),
            &json!("https://github.com/apps/sluice")
        ),
        "{body}"
    );

    let import = |cid: &str, installation: Option<&str>| {
        let mut body = json!({"provider_config_key": "gh", "connection_id": cid,
                              "credentials": {"type": "APP"}});
        if let Some(i) = installation {
            body["connection_config"] = json!({"installation_id": i});
        }
        body
    };
    let (status, body) = dev
        .send("POST", "/connections", Some(import("c1", Some("42"))))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["credentials"]["access_token"], "ghs_1", "{body}");
    assert!(body["credentials"]["expires_at"].is_string(), "{body}");
    let claims = github.asked.lock().unwrap()[0].clone();
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(
        lifetime <= 660,
        "GitHub takes at most ten minutes: {claims}"
    );
    let (status, body) = dev.send_as(("gh", "c1"), "GET", "/proxy/user", None).await;
    assert_eq!((status, &body["login"]), (200, &json!("octocat")), "{body}");
    assert_eq!(github.asked(), 1);

    // A token about to expire is replaced by the app before the request.
    github.lifetime.store(60, Ordering::SeqCst);
    let (status, body) = dev
        .send("POST", "/connections", Some(import("c2", Some("42"))))
        .await;
    assert_eq!(status, 201, "{body}");
    github.lifetime.store(3600, Ordering::SeqCst);
    let (status, body) = dev.send_as(("gh", "c2"), "GET", "/proxy/user", None).await;
    assert_eq!((status, &body["login"]), (200, &json!("octocat")), "{body}");
    assert_eq!(github.asked(), 3);

    // The original's shape: the installation in the credentials; and a
    // token given as it is, kept without asking.
    let asked = github.asked();
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "gh", "connection_id": "c5",
                        "credentials": {"type": "APP", "app_id": "123", "installation_id": "42"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["connection_config"]["installation_id"], "42", "{body}");
    assert!(
        body["credentials"]["access_token"]
            .as_str()
            .unwrap()
            .starts_with("ghs_"),
        "{body}"
    );
    assert_eq!(github.asked(), asked + 1);
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(json!({"provider_config_key": "gh", "connection_id": "c6",
                        "credentials": {"type": "APP", "installation_id": "42", "access_token": "ghs_given"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["credentials"]["access_token"], "ghs_given", "{body}");
    assert_eq!(github.asked(), asked + 1);
    // An installation id is digits: nothing else reaches the token URL.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(import("c7", Some("42/../../x"))),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(github.asked(), asked + 1);

    // No installation named, or one GitHub does not know: refused, nothing
    // stored.
    let (status, body) = dev
        .send("POST", "/connections", Some(import("c3", None)))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("installation_id"), "{body}");
    let (status, body) = dev
        .send("POST", "/connections", Some(import("c4", Some("7"))))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["code"], "github_app_token_fetch_error",
        "{body}"
    );
    assert!(body.to_string().contains("404"), "{body}");
    for cid in ["c3", "c4"] {
        let (status, _) = dev
            .send(
                "GET",
                &format!("/connections/{cid}?provider_config_key=gh"),
                None,
            )
            .await;
        assert_eq!(status, 404);
    }

    // From the browser: to the app's installation page (the
    // integration's, whatever the browser says), then GitHub's return to
    // the app's Setup URL with the installation it made.
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions",
            Some(json!({"end_user": {"id": "u1"}, "allowed_integrations": ["gh"]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let install_page = || async {
        let resp = browser
            .get(format!(
                "{}/oauth/connect/gh?connect_session_token={token}&params[appPublicLink]=https://evil.example",
                server.url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302, "{}", resp.text().await.unwrap());
        let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
        let state = location
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        (location, state)
    };
    let back = |query: String| {
        let browser = &browser;
        let base = server.url();
        async move {
            let resp = browser
                .get(format!("{base}/app-auth/connect?{query}"))
                .header(
                    "referer",
                    "https://github.com/organizations/acme/settings/installations",
                )
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string());
            (status, location, resp.text().await.unwrap())
        }
    };
    let (location, state) = install_page().await;
    assert_eq!(
        location.as_str().split('?').next(),
        Some("https://github.com/apps/sluice/installations/new"),
        "{location}"
    );
    let asked = github.asked();
    let (status, _, page) = back(format!(
        "installation_id=42&setup_action=install&state={state}"
    ))
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(github.asked(), asked + 1);
    let (status, body) = dev.send("GET", "/connections?endUserId=u1", None).await;
    assert_eq!(status, 200, "{body}");
    let made = &body["connections"][0];
    let cid = made["connection_id"].as_str().unwrap().to_string();
    let (status, body) = dev
        .send(
            "GET",
            &format!("/connections/{cid}?provider_config_key=gh"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connection_config"]["installation_id"], "42", "{body}");
    assert_eq!(
        body["connection_config"]["appPublicLink"], "https://github.com/apps/sluice",
        "{body}"
    );
    assert!(
        body["credentials"]["access_token"]
            .as_str()
            .unwrap()
            .starts_with("ghs_"),
        "{body}"
    );
    let (status, body) = dev.send_as(("gh", &cid), "GET", "/proxy/user", None).await;
    assert_eq!((status, &body["login"]), (200, &json!("octocat")), "{body}");
    // A state serves once.
    let (status, _, page) = back(format!(
        "installation_id=42&setup_action=install&state={state}"
    ))
    .await;
    assert_eq!(status, 400, "{page}");
    // An installation waiting for an owner's approval, or none at all:
    // named, nothing stored.
    let (_, state) = install_page().await;
    let (status, _, page) = back(format!("setup_action=request&state={state}")).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("approval"), "{page}");
    let (_, state) = install_page().await;
    let (status, _, page) = back(format!("setup_action=install&state={state}")).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("installation_id"), "{page}");
    // The browser cannot name the installation itself.
    let resp = browser
        .get(format!(
            "{}/oauth/connect/gh?connect_session_token={token}&params[installation_id]=42",
            server.url()
        ))
        .send()
        .await
        .unwrap();
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let state = location
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let (status, _, page) = back(format!("setup_action=install&state={state}")).await;
    assert_eq!(status, 400, "{page}");
    let (status, body) = dev.send("GET", "/connections?endUserId=u1", None).await;
    assert_eq!(
        body["connections"].as_array().map(Vec::len),
        Some(1),
        "{status} {body}"
    );
    // An installation an owner approved later comes back with no flow:
    // the browser goes back where it came from.
    let (status, location, _) = back("installation_id=42&setup_action=install".into()).await;
    assert_eq!(
        (status, location.as_deref()),
        (
            302,
            Some("https://github.com/organizations/acme/settings/installations")
        )
    );
    server.stop().await;
}
