//! Integrations' locks, bounds and answers against a real `sluice serve`.

use base64::Engine as _;
use serde_json::{Value, json};
use sluice_server::{ServerConfig, StoreKind};
use sluice_store::MasterKey;

use crate::server::{Client, DEV_KEY, start_tuned, start_with};

async fn import(dev: &Client, pck: &str, cid: &str) -> (u16, Value) {
    dev.send(
        "POST",
        "/connections",
        Some(json!({"provider_config_key": pck, "connection_id": cid, "access_token": "t"})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_one_integration_holds_up_no_connection_of_another() {
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let server = start_tuned(
        StoreKind::Sled,
        data.path(),
        &master,
        "http://127.0.0.1:9",
        |_| {},
    )
    .await;
    let dev = Client::new(&server, DEV_KEY);
    for key in ["going", "staying"] {
        let (status, body) = dev
            .send(
                "POST",
                "/integrations",
                Some(json!({"unique_key": key, "provider": "hubspot"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Many connections: their deletion takes a while.
    let ids: Vec<String> = (0..400).map(|n| format!("c{n}")).collect();
    for chunk in ids.chunks(16) {
        let made =
            crate::server::futures_join(chunk.iter().map(|cid| import(&dev, "going", cid))).await;
        for (status, body) in made {
            assert_eq!(status, 201, "{body}");
        }
    }
    let deleting = {
        let dev = Client::at(&dev.base, DEV_KEY);
        tokio::spawn(async move { dev.send("DELETE", "/integrations/going", None).await })
    };
    // The deletion is under way once a connection of its integration is
    // refused for it (the mark it writes first): answered at once, not
    // held until the deletion ends.
    let mut n = 0;
    loop {
        n += 1;
        let (status, body) = import(&dev, "going", &format!("late{n}")).await;
        if status == 409 {
            assert_eq!(body["error"]["code"], "integration_being_deleted", "{body}");
            break;
        }
        assert_eq!(status, 201, "before the deletion's mark: {body}");
        assert!(
            !deleting.is_finished(),
            "the deletion ended before its integration's connection was refused"
        );
    }
    // Meanwhile another integration's connections are created, and its
    // own updates refused as its connections are.
    let (status, body) = import(&dev, "staying", "s1").await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = dev
        .send(
            "PATCH",
            "/integrations/staying",
            Some(json!({"display_name": "Staying"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = import(&dev, "going", "later").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("integration_being_deleted")),
        "the deletion is still under way: {body}"
    );
    let (status, body) = deleting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, _) = dev.send("GET", "/integrations/going", None).await;
    assert_eq!(status, 404);
    let (status, body) = dev
        .send("GET", "/connections?integrationId=going", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["connections"],
        json!([]),
        "every connection went with it: {body}"
    );
    let (status, body) = dev
        .send("GET", "/connection/s1?provider_config_key=staying", None)
        .await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_fields_are_bounded_and_answers_are_the_originals() {
    let data = tempfile::tempdir().unwrap();
    let providers = "github-app-test:\n  auth_mode: APP\n  authorization_url: https://github.com/apps/x/installations/new\n  token_url: http://127.0.0.1:9/app/installations/${connectionConfig.installation_id}/access_tokens\n";
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), providers).await;
    let dev = Client::new(&server, DEV_KEY);

    // Bounds, named in the original's validation shape.
    let too_big = |body: &Value, path: Value, max: usize| {
        assert_eq!(body["error"]["code"], "invalid_body", "{body}");
        let e = &body["error"]["errors"][0];
        assert_eq!(
            (&e["code"], &e["path"]),
            (&json!("too_big"), &path),
            "{body}"
        );
        assert!(
            e["message"].as_str().unwrap().contains(&max.to_string()),
            "{body}"
        );
    };
    let oauth = |key: &str, credentials: Value| json!({"unique_key": key, "provider": "github", "credentials": credentials});
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "h", "provider": "hubspot", "webhook_secret": "s".repeat(256)})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    too_big(&body, json!(["webhook_secret"]), 255);
    let big = "x".repeat((16 << 10) + 1);
    for (field, path, max) in [
        (
            "client_secret",
            json!(["credentials", "client_secret"]),
            16 << 10,
        ),
        ("scopes", json!(["credentials", "scopes"]), 16 << 10),
        (
            "webhook_secret",
            json!(["credentials", "webhook_secret"]),
            255,
        ),
    ] {
        let mut c = json!({"type": "OAUTH2", "client_id": "id", "client_secret": "cs"});
        c[field] = json!(big);
        let (status, body) = dev
            .send("POST", "/integrations", Some(oauth("gh", c)))
            .await;
        assert_eq!(status, 400, "{field}: {body}");
        too_big(&body, path, max);
    }
    let (status, _) = dev.send("GET", "/integrations/gh", None).await;
    assert_eq!(status, 404, "nothing was created");
    // At the bound it is taken; an update is bounded as a creation.
    let at_bound = json!({"type": "OAUTH2", "client_id": "id", "client_secret": "c".repeat(16 << 10),
                          "webhook_secret": "w".repeat(255)});
    let (status, body) = dev
        .send("POST", "/integrations", Some(oauth("gh", at_bound)))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "PATCH",
            "/integrations/gh",
            Some(
                json!({"credentials": {"type": "OAUTH2", "client_id": "id", "client_secret": big}}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    too_big(&body, json!(["credentials", "client_secret"]), 16 << 10);
    // The older clients' route too.
    let (status, body) = dev
        .send(
            "PUT",
            "/config",
            Some(json!({"provider": "github", "provider_config_key": "gh",
                        "oauth_client_id": "id", "oauth_client_secret": big})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (_, body) = dev
        .send("GET", "/integrations/gh?include=credentials", None)
        .await;
    assert_eq!(
        body["data"]["credentials"]["client_secret"]
            .as_str()
            .map(str::len),
        Some(16 << 10),
        "unchanged: {body}"
    );

    // The webhook URL names the key as the original's
    // (`encodeURIComponent`).
    let key = "hub spot:eu@1~x";
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": key, "provider": "hubspot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "GET",
            "/integrations/hub%20spot%3Aeu%401~x?include=webhook",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let env = server.app.store.environment("dev").unwrap().id();
    assert_eq!(
        body["data"]["webhook_url"],
        format!("{}/webhook/{env}/hub%20spot%3Aeu%401~x", dev.base),
        "{body}"
    );

    // A GitHub App's private key is shown as the original keeps it, the
    // base64 of its PEM, whether given as PEM or as that base64.
    let pem = crate::github_app::APP_KEY;
    let encoded = base64::engine::general_purpose::STANDARD.encode(pem);
    for (key, given) in [("app-pem", pem.to_string()), ("app-b64", encoded.clone())] {
        let (status, body) = dev
            .send(
                "POST",
                "/config",
                Some(
                    json!({"provider": "github-app-test", "provider_config_key": key,
                            "oauth_client_id": "123", "oauth_client_secret": given,
                            "app_link": "https://github.com/apps/sluice"}),
                ),
            )
            .await;
        assert_eq!(status, 200, "{key}: {body}");
        let (_, body) = dev
            .send(
                "GET",
                &format!("/integrations/{key}?include=credentials"),
                None,
            )
            .await;
        assert_eq!(
            body["data"]["credentials"]["private_key"],
            json!(encoded),
            "{key}: {body}"
        );
        let (_, body) = dev
            .send("GET", &format!("/config/{key}?include_creds=true"), None)
            .await;
        assert_eq!(
            body["config"]["client_secret"],
            json!(encoded),
            "{key}: {body}"
        );
    }
    server.stop().await;
}
