//! Connect sessions' bodies as the original's (0.69 and later) takes
//! them: `overrides` per integration, and an `organization` whose `id`
//! may be empty.

use serde_json::{Value, json};
use sluice_server::ServerConfig;
use sluice_store::MasterKey;

use crate::server::{Client, DEV_KEY, start_with};

const PROVIDERS: &str = "sessionkey:\n  auth_mode: API_KEY\n  proxy:\n    base_url: http://127.0.0.1:9\n    headers:\n      x-api-key: ${apiKey}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_bodies_take_overrides_and_an_empty_organization_id_as_the_original() {
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), PROVIDERS).await;
    let dev = Client::new(&server, DEV_KEY);
    let base = server.url();
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "key-int", "provider": "sessionkey"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let create = |body: Value| dev.send("POST", "/connect/sessions", Some(body));
    let message = |body: &Value| {
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // `overrides`: taken, what sluice has no use for let go.
    for overrides in [
        json!({}),
        json!({"key-int": {}}),
        json!({"key-int": {"docs_connect": ""}}),
        json!({"key-int": {"docs_connect": "", "something_newer": {"x": 1}}}),
        Value::Null,
    ] {
        let (status, body) =
            create(json!({"end_user": {"id": "u1"}, "overrides": overrides.clone()})).await;
        assert_eq!(status, 201, "{overrides}: {body}");
    }
    // A docs link of its own: refused as a self-hosted original refuses it
    // (no plan allows it).
    let (status, body) = create(json!({"end_user": {"id": "u1"},
        "overrides": {"key-int": {"docs_connect": "https://docs.example.test/mine"}}}))
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("forbidden")),
        "{body}"
    );
    assert_eq!(
        message(&body),
        "You are not allowed to override the docs connect url"
    );
    // Its shape is checked, and each integration must exist.
    for (overrides, named) in [
        (json!(["key-int"]), "`overrides` must be an object"),
        (
            json!({"key-int": "x"}),
            "`overrides.key-int` must be an object",
        ),
        (
            json!({"key-int": {"docs_connect": 1}}),
            "`overrides.key-int.docs_connect` must be a string",
        ),
        (json!({"nope": {}}), "Integration `nope` does not exist"),
    ] {
        let (status, body) =
            create(json!({"end_user": {"id": "u1"}, "overrides": overrides.clone()})).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!("invalid_body")),
            "{overrides}: {body}"
        );
        assert!(message(&body).contains(named), "{overrides}: {body}");
    }
    // Still no other unknown field.
    let (status, body) = create(json!({"end_user": {"id": "u1"}, "overridez": {}})).await;
    assert_eq!(status, 400, "{body}");

    // `organization.id` may be empty (the original's schema: 0 to 255
    // characters): the session is made, and its connections get no
    // organization tag, as the original's get none.
    let (status, body) = create(json!({"end_user": {"id": "u1"},
        "organization": {"id": "", "display_name": ""}}))
    .await;
    assert_eq!(status, 201, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let (status, body) = Client::at(&base, &token)
        .send("GET", "/connect/session", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["endUser"]["organization"],
        json!({"id": "", "display_name": ""}),
        "{body}"
    );
    let connect = |token: String| {
        let url = format!("{base}/api-auth/api-key/key-int?connect_session_token={token}");
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(json!({"apiKey": "k-1"}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
            body["connectionId"].as_str().unwrap().to_string()
        }
    };
    let tags_of = |cid: String| {
        let dev = &dev;
        async move {
            let (status, body) = dev
                .send(
                    "GET",
                    &format!("/connections/{cid}?provider_config_key=key-int"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["tags"].clone()
        }
    };
    let tags = tags_of(connect(token).await).await;
    assert_eq!(tags["end_user_id"], "u1", "{tags}");
    assert!(tags.get("organization_id").is_none(), "{tags}");
    assert!(tags.get("organization_display_name").is_none(), "{tags}");
    let (status, body) = create(json!({"end_user": {"id": "u2"},
        "organization": {"id": "org-1"}}))
    .await;
    assert_eq!(status, 201, "{body}");
    let tags = tags_of(connect(body["data"]["token"].as_str().unwrap().to_string()).await).await;
    assert_eq!(tags["organization_id"], "org-1", "{tags}");
    // Still: an `id`, strings of at most 255 characters, nothing else.
    for organization in [
        json!({"display_name": "Acme"}),
        json!({"id": "x".repeat(256)}),
        json!({"id": 1}),
        json!({"id": "o", "plan": "pro"}),
    ] {
        let (status, body) =
            create(json!({"end_user": {"id": "u1"}, "organization": organization.clone()})).await;
        assert_eq!(status, 400, "{organization}: {body}");
    }

    // A reconnect session takes `overrides` too.
    let (status, body) = dev
        .send(
            "POST",
            "/connections",
            Some(
                json!({"provider_config_key": "key-int", "connection_id": "c1",
                "credentials": {"type": "API_KEY", "apiKey": "k-1"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connect/sessions/reconnect",
            Some(json!({"connection_id": "c1", "integration_id": "key-int",
                "overrides": {"key-int": {}}, "organization": {"id": ""}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    server.stop().await;
}
