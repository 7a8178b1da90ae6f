//! `POST /mcp`: a connection's deployed actions as an MCP server's tools,
//! against a real `sluice serve` and the example's mock HubSpot API, as an
//! AI agent's MCP client speaks to it (JSON-RPC over the Streamable HTTP
//! transport, without sessions).

use serde_json::{Value, json};
use sluice_runtime::ScriptKind;
use sluice_server::StoreKind;
use sluice_store::MasterKey;
use sluice_tests::{Fixture, MockServer, guests, repo_root};

use crate::server::{Client, DEV_KEY, PROD_KEY, deploy_scripts, start_on};

const NANGO_YAML: &str = "
integrations:
  hubspot:
    actions:
      create-contact:
        description: Creates a contact in HubSpot
        endpoint: POST /contacts
        input: ContactInput
        output: Contact
models:
  ContactInput:
    email: string
    first_name: string
    last_name?: string
  Contact:
    id: string
";

/// POSTs `body` (text, as sent) to `/mcp` as connection `(pck, cid)`.
async fn mcp(c: &Client, conn: Option<(&str, &str)>, body: &str) -> (u16, Value) {
    let mut req = c
        .http
        .post(format!("{}/mcp", c.base))
        .bearer_auth(&c.key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some((pck, cid)) = conn {
        req = req
            .header("provider-config-key", pck)
            .header("connection-id", cid);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_lists_and_calls_a_connections_actions_as_mcp_tools() {
    let fixture =
        Fixture::from_file(&repo_root().join("examples/hubspot-rust/mock-api.yaml")).unwrap();
    let mock = MockServer::start(fixture.handler()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = start_on(
        StoreKind::Sled,
        data.path(),
        &MasterKey::generate(),
        &mock.url(),
    )
    .await;
    let dev = Client::new(&server, DEV_KEY);
    deploy_scripts(
        &dev,
        NANGO_YAML,
        "hubspot",
        &[(
            guests::HUBSPOT_RUST_CREATE_CONTACT,
            "create-contact",
            ScriptKind::Action,
        )],
    )
    .await;
    let (status, body) = dev
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/connection",
            Some(
                json!({"provider_config_key": "hubspot", "connection_id": "demo",
                        "access_token": "demo-access-token"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let demo = Some(("hubspot", "demo"));

    // The connection is named by its headers, and must be the key's
    // environment's.
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let (status, body) = mcp(&dev, None, ping).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_headers")),
        "{body}"
    );
    let (status, body) = mcp(&dev, Some(("hubspot", "nobody")), ping).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_connection")),
        "{body}"
    );
    let (status, body) = mcp(&Client::new(&server, PROD_KEY), demo, ping).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_connection")),
        "{body}"
    );

    // The handshake.
    let (status, body) = mcp(
        &dev,
        demo,
        r#"{"jsonrpc":"2.0","id":"init-1","method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"agent","version":"1"}}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "init-1");
    assert_eq!(body["result"]["protocolVersion"], "2025-03-26", "{body}");
    assert!(
        body["result"]["capabilities"]["tools"].is_object(),
        "{body}"
    );
    assert_eq!(
        body["result"]["serverInfo"]["name"],
        "Nango Connection Tools MCP server"
    );
    let (status, body) = mcp(
        &dev,
        demo,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");

    // The integration's actions, with their input models.
    let (status, body) = mcp(
        &dev,
        demo,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let tools = body["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1, "{body}");
    let tool = &tools[0];
    assert_eq!(tool["name"], "create-contact");
    assert_eq!(tool["description"], "Creates a contact in HubSpot");
    assert_eq!(tool["inputSchema"]["type"], "object");
    let properties = tool["inputSchema"]["properties"].as_object().unwrap();
    assert!(
        properties.contains_key("email") && properties.contains_key("last_name"),
        "{tool}"
    );
    let required = tool["inputSchema"]["required"].as_array().unwrap();
    assert!(
        required.contains(&json!("email")) && !required.contains(&json!("last_name")),
        "{tool}"
    );

    // A call runs the action for the connection: its output as JSON text.
    let (status, body) = mcp(
        &dev,
        demo,
        &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {"name": "create-contact", "arguments":
                    {"email": "katherine@example.com", "first_name": "Katherine", "last_name": "Johnson"}}})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let content = &body["result"]["content"][0];
    assert_eq!(content["type"], "text", "{body}");
    let output: Value = serde_json::from_str(content["text"].as_str().unwrap()).unwrap();
    assert_eq!(output["id"], "201", "{body}");
    // An execution like any other: in the environment's history.
    let (status, body) = dev
        .send(
            "GET",
            "/executions?provider_config_key=hubspot&connection_id=demo",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["executions"].as_array().unwrap().iter().any(|e| {
            e["kind"] == "action" && e["script"] == "create-contact" && e["success"] == true
        }),
        "{body}"
    );
    // An action that fails is a JSON-RPC error carrying the failure as
    // `POST /action/trigger` would answer it.
    let (status, body) = mcp(
        &dev,
        demo,
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"create-contact","arguments":{}}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["error"]["code"], -32603, "{body}");
    let failure: Value = serde_json::from_str(body["error"]["message"].as_str().unwrap()).unwrap();
    assert!(failure["code"].is_string(), "{failure}");

    // What cannot be done is a JSON-RPC error, not a crash.
    let (_, body) = mcp(
        &dev,
        demo,
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"drop-database"}}"#,
    )
    .await;
    assert_eq!(
        (
            body["error"]["code"].as_i64(),
            body["error"]["message"].as_str()
        ),
        (Some(-32603), Some("Action drop-database not found")),
        "{body}"
    );
    let (_, body) = mcp(
        &dev,
        demo,
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"create-contact","arguments":[1]}}"#,
    )
    .await;
    assert_eq!(body["error"]["code"], -32602, "{body}");
    let (_, body) = mcp(
        &dev,
        demo,
        r#"{"jsonrpc":"2.0","id":6,"method":"resources/list"}"#,
    )
    .await;
    assert_eq!(body["error"]["code"], -32601, "{body}");
    let (status, body) = mcp(&dev, demo, "{not json").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!(-32700)),
        "{body}"
    );
    // A batch gets its answers together.
    let (status, body) = mcp(
        &dev,
        demo,
        r#"[{"jsonrpc":"2.0","id":"a","method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"b","method":"tools/list"}]"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&Value> = body.as_array().unwrap().iter().map(|a| &a["id"]).collect();
    assert_eq!(ids, [&json!("a"), &json!("b")], "{body}");

    // A batch is bounded, and a message that is not one is refused.
    let many = format!(
        "[{}]",
        vec![r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#; 17].join(",")
    );
    let (status, body) = mcp(&dev, demo, &many).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!(-32600)),
        "{body}"
    );
    let (status, body) = mcp(&dev, demo, "42").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!(-32600)),
        "{body}"
    );

    // Another environment with a connection of the same names sees none
    // of dev's tools (nothing is deployed there).
    let prod = Client::new(&server, PROD_KEY);
    let (status, body) = prod
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "hubspot", "provider": "hubspot"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = prod
        .send(
            "POST",
            "/connection",
            Some(
                json!({"provider_config_key": "hubspot", "connection_id": "demo",
                        "access_token": "prod-token"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = mcp(
        &prod,
        demo,
        r#"{"jsonrpc":"2.0","id":8,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(
        (status, &body["result"]["tools"]),
        (200, &json!([])),
        "{body}"
    );
    let (_, body) = mcp(
        &prod,
        demo,
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"create-contact","arguments":{"email":"a@b.c"}}}"#,
    )
    .await;
    assert_eq!(
        body["error"]["message"], "Action create-contact not found",
        "{body}"
    );

    // No server-sent stream, as the original.
    let resp = dev
        .http
        .get(format!("{}/mcp", dev.base))
        .bearer_auth(&dev.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], -32000, "{body}");
    server.stop().await;
}
