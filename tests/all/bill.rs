//! Bill.com connections (`BILL`): a session opened with the user's
//! username, password, organization and developer key, when the
//! connection is made (an import, or the browser's form) and again after
//! 35 minutes, as the original logs in.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer};

use crate::server::{Client, DEV_KEY, start_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bill_connection_opens_its_session_with_the_users_credentials() {
    let logins = Arc::new(Mutex::new(Vec::<Value>::new()));
    // The session the API takes: each login opens the next one.
    let current = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (l, cur) = (logins.clone(), current.clone());
    let mock = MockServer::start(Arc::new(move |req: &MockRequest| {
        use std::sync::atomic::Ordering;
        if req.path == "/connect/v3/login" {
            let body = req.json().unwrap_or_default();
            l.lock().unwrap().push(body.clone());
            return if body
                == json!({"username": "ann@example.com", "password": "pw",
                          "organizationId": "org-1", "devKey": "dev-1"})
            {
                let n = cur.fetch_add(1, Ordering::SeqCst) + 1;
                MockResponse::json(
                    200,
                    &json!({"sessionId": format!("sess-{n}"),
                    "organizationId": "org-1", "userId": "user-1"}),
                )
            } else {
                // Echoing what it was sent, as some do.
                MockResponse::json(
                    400,
                    &json!({"errorMessage": format!("wrong password {}", body["password"])}),
                )
            };
        }
        let newest = format!("sess-{}", cur.load(Ordering::SeqCst));
        if req.header("sessionid") == Some(newest.as_str()) && req.header("devkey") == Some("dev-1")
        {
            MockResponse::json(200, &json!({"results": []}))
        } else {
            MockResponse::json(401, &json!({"error": "no session"}))
        }
    }))
    .await
    .unwrap();
    let url = mock.url();
    let providers = format!(
        "billish:\n  auth_mode: BILL\n  token_url: {url}/connect/v3/login\n  proxy:\n    base_url: {url}/connect\n    headers:\n      sessionId: ${{credentials.session_id}}\n      devKey: ${{credentials.dev_key}}\n"
    );
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let dev = Client::new(&server, DEV_KEY);
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "bill", "provider": "billish"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let import = |cid: &str, password: &str| {
        json!({"provider_config_key": "bill", "connection_id": cid,
               "credentials": {"type": "BILL", "username": "ann@example.com", "password": password,
                               "organization_id": "org-1", "dev_key": "dev-1"}})
    };
    let (status, body) = dev
        .send("POST", "/connections", Some(import("b1", "pw")))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["credentials"]["session_id"], "sess-1", "{body}");
    assert_eq!(body["credentials"]["user_id"], "user-1", "{body}");
    let at =
        chrono::DateTime::parse_from_rfc3339(body["credentials"]["expires_at"].as_str().unwrap())
            .unwrap();
    let left = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!((34..=35).contains(&left.num_minutes()), "{body}");
    let (status, body) = dev
        .send_as(("bill", "b1"), "GET", "/proxy/v3/vendors", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(logins.lock().unwrap().len(), 1);

    // A session Bill closed (another login meanwhile): requests refused
    // with it (the API's /proxy does not retry unasked) open one new
    // session between them, which later requests carry (one sent after
    // the renewal already does).
    current.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (a, b) = tokio::join!(
        dev.send_as(("bill", "b1"), "GET", "/proxy/v3/vendors", None),
        dev.send_as(("bill", "b1"), "GET", "/proxy/v3/vendors", None)
    );
    assert!(
        [a.0, b.0].contains(&401) && [a.0, b.0].iter().all(|s| [200, 401].contains(s)),
        "{a:?} {b:?}"
    );
    let (status, body) = dev
        .send_as(("bill", "b1"), "GET", "/proxy/v3/vendors", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(logins.lock().unwrap().len(), 2);

    // Refused: named, the password redacted, nothing stored.
    let (status, body) = dev
        .send("POST", "/connections", Some(import("b2", "wrong")))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bill_tokens_fetch_error", "{body}");
    assert!(!body.to_string().contains("wrong"), "{body}");
    let (status, _) = dev
        .send("GET", "/connections/b2?provider_config_key=bill", None)
        .await;
    assert_eq!(status, 404);

    // From the browser.
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions",
            Some(json!({"end_user": {"id": "u1"}, "allowed_integrations": ["bill"]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/auth/bill/bill?connect_session_token={token}",
            server.url()
        ))
        .header("content-type", "application/json")
        .body(
            json!({"username": "ann@example.com", "password": "pw", "organization_id": "org-1",
                   "dev_key": "dev-1"})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(status, 200, "{body}");
    let cid = body["connectionId"].as_str().unwrap().to_string();
    let (status, body) = dev
        .send_as(("bill", &cid), "GET", "/proxy/v3/vendors", None)
        .await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}
