//! The older `@nangohq/node` clients' `/config` routes (up to 0.62.1:
//! `createIntegration(provider, key, credentials)`, `updateIntegration`,
//! `getIntegration(key, includeCredentials)`), against a real server.

use serde_json::json;
use sluice_server::ServerConfig;
use sluice_store::MasterKey;

use crate::server::{Client, DEV_KEY, PROD_KEY, start_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_clients_manage_integrations_through_config() {
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), "").await;
    let dev = Client::new(&server, DEV_KEY);

    // As `createIntegration('github', 'gh', {oauth_client_id, …})` sends it.
    let (status, body) = dev
        .send(
            "POST",
            "/config",
            Some(json!({"provider": "github", "provider_config_key": "gh",
                        "oauth_client_id": "cid", "oauth_client_secret": "cs",
                        "oauth_scopes": "repo, user"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"config": {"unique_key": "gh", "provider": "github"}})
    );
    // The same integration the current routes see (the scopes, given with
    // a space, stored as the original stores them).
    let (status, body) = dev
        .send("GET", "/integrations/gh?include=credentials", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["credentials"]["client_id"], "cid", "{body}");
    assert_eq!(body["data"]["credentials"]["scopes"], "repo,user", "{body}");

    // Read back, without and with its credentials.
    let (status, body) = dev.send("GET", "/config/gh", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config"]["unique_key"], "gh");
    assert_eq!(body["config"]["syncs"], json!([]));
    assert!(body["config"].get("client_secret").is_none(), "{body}");
    let (status, body) = dev.send("GET", "/config/gh?include_creds=true", None).await;
    assert_eq!(status, 200, "{body}");
    let c = &body["config"];
    assert_eq!(
        (
            &c["client_id"],
            &c["client_secret"],
            &c["auth_mode"],
            &c["connection_count"]
        ),
        (&json!("cid"), &json!("cs"), &json!("OAUTH2"), &json!(0)),
        "{body}"
    );

    // `updateIntegration('github', 'gh', {...})`.
    let (status, body) = dev
        .send(
            "PUT",
            "/config",
            Some(json!({"provider": "github", "provider_config_key": "gh",
                        "oauth_client_id": "cid2", "oauth_client_secret": "cs2"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = dev.send("GET", "/config/gh?include_creds=true", None).await;
    assert_eq!(
        (&body["config"]["client_id"], &body["config"]["scopes"]),
        (&json!("cid2"), &json!("repo,user")),
        "{body}"
    );
    let (status, body) = dev.send("GET", "/config", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["configs"][0]["unique_key"], "gh", "{body}");
    let (_, body) = Client::new(&server, PROD_KEY)
        .send("GET", "/config", None)
        .await;
    assert_eq!(body["configs"], json!([]), "another environment's: {body}");

    // Refusals, with the original's codes, and nothing made.
    for (body, code) in [
        (json!({"provider": "github"}), "missing_provider_config"),
        (
            json!({"provider_config_key": "x"}),
            "missing_provider_template",
        ),
        (
            json!({"provider": "no-such", "provider_config_key": "x"}),
            "unknown_provider_template",
        ),
        (
            json!({"provider": "github", "provider_config_key": "x",
                   "oauth_client_id": "a", "oauth_client_secret": "b", "oauth_scopes": ["repo"]}),
            "invalid_oauth_scopes",
        ),
        (
            json!({"provider": "github", "provider_config_key": "x", "oauth_client_secret": "b"}),
            "missing_client_id",
        ),
        (
            json!({"provider": "github", "provider_config_key": "x", "oauth_client_id": "a"}),
            "missing_client_secret",
        ),
        (
            json!({"provider": "github", "provider_config_key": "x",
                   "oauth_client_id": "a", "oauth_client_secret": "b", "custom": {"app_id": "1"}}),
            "invalid_body",
        ),
    ] {
        let (status, answer) = dev.send("POST", "/config", Some(body.clone())).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {answer}"
        );
    }
    let (status, _) = dev.send("GET", "/integrations/x", None).await;
    assert_eq!(status, 404);
    let (status, body) = dev
        .send(
            "POST",
            "/config",
            Some(json!({"provider": "github", "provider_config_key": "gh",
                        "oauth_client_id": "a", "oauth_client_secret": "b"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("duplicate_provider_config")),
        "a second `gh`: {body}"
    );
    let (status, body) = dev
        .send(
            "PUT",
            "/config",
            Some(json!({"provider": "github", "provider_config_key": "nope",
                        "oauth_client_id": "a", "oauth_client_secret": "b"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_provider_config")),
        "{body}"
    );
    let (status, body) = dev.send("GET", "/config/nope", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_provider_config")),
        "{body}"
    );
    // Another environment's key reaches none of it.
    let prod = Client::new(&server, PROD_KEY);
    let (status, _) = prod.send("GET", "/config/gh", None).await;
    assert_eq!(status, 400);
    let (status, _) = prod.send("DELETE", "/config/gh", None).await;
    assert_eq!(status, 404);
    let (status, _) = dev.send("GET", "/config/gh", None).await;
    assert_eq!(status, 200, "dev's `gh` is still there");

    // `DELETE /config/gh` deletes it as `/integrations` does.
    let (status, body) = dev.send("DELETE", "/config/gh", None).await;
    assert_eq!((status, &body), (200, &json!({"success": true})));
    let (status, _) = dev.send("GET", "/config/gh", None).await;
    assert_eq!(status, 400);
    server.stop().await;
}
