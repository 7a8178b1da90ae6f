//! `serve --metrics-listen`: what an operator's Prometheus scrapes, after
//! real requests, a sync run, an action and a webhook to the app.

use std::time::Duration;

use serde_json::json;
use sluice_server::StoreKind;
use sluice_store::MasterKey;
use sluice_tests::{Fixture, MockServer, repo_root};

use crate::server::{Client, DEV_KEY, deploy, start_tuned};
use crate::webhooks::App;

/// The value of the sample named exactly `series` (name and labels as
/// the text format writes them), if there is one.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_executions_records_and_deliveries() {
    let fixture =
        Fixture::from_file(&repo_root().join("examples/hubspot-rust/mock-api.yaml")).unwrap();
    let mock = MockServer::start(fixture.handler()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = start_tuned(
        StoreKind::Sled,
        data.path(),
        &MasterKey::generate(),
        &mock.url(),
        |c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap()),
    )
    .await;
    let metrics = format!("http://{}/metrics", server.metrics_addr().unwrap());
    let app = App::start().await;
    let dev = Client::new(&server, DEV_KEY);
    deploy(&dev).await;
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
            Some(json!({"provider_config_key": "hubspot", "connection_id": "demo", "access_token": "demo-access-token"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = dev
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": app.url()})),
        )
        .await;
    assert_eq!(status, 200);

    // Before anything ran: no executions, nothing waiting.
    let before = scrape(&metrics).await;
    assert_eq!(
        sample(
            &before,
            r#"sluice_executions_total{environment="dev",kind="sync",outcome="success"}"#
        ),
        None,
        "{before}"
    );
    assert_eq!(
        sample(
            &before,
            r#"sluice_async_actions_waiting{environment="dev"}"#
        ),
        Some(0.0),
        "{before}"
    );
    assert_eq!(sample(&before, "sluice_store_failing"), Some(0.0));
    assert_eq!(
        sample(&before, "sluice_client_connections_max"),
        Some(10_000.0)
    );
    assert!(sample(&before, "sluice_client_connections").unwrap() >= 1.0);
    assert!(sample(&before, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&before, "process_open_fds").unwrap() > 0.0);
    let version = format!(
        r#"sluice_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&before, &version), Some(1.0), "{before}");

    // A sync run (five contacts added), an action, a read by id, a 404.
    let (status, body) = dev
        .send(
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": ["contacts"], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"][0]["results"]["Contact"]["added"], 5, "{body}");
    let (status, body) = dev
        .send(
            "POST",
            "/action/trigger",
            Some(json!({"action_name": "create-contact", "input": {"email": "katherine@example.com", "first_name": "Katherine", "last_name": "Johnson"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dev
        .send("GET", "/connection/demo?provider_config_key=hubspot", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = dev
        .send(
            "GET",
            "/connection/nobody?provider_config_key=hubspot",
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = dev.send("GET", "/no/such/route", None).await;
    assert_eq!(status, 404);
    // A method a client made up is `other`, not a series of its own.
    let brewed = reqwest::Client::new()
        .request(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            format!("{}/no/such/route", server.url()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(brewed.status(), 404);
    app.wait_for("the sync's webhook", Duration::from_secs(10), |a| {
        !a.accepted().is_empty()
    })
    .await;

    let mut after = String::new();
    for _ in 0..100 {
        after = scrape(&metrics).await;
        if sample(
            &after,
            r#"sluice_webhook_deliveries_total{environment="dev",outcome="sent"}"#,
        )
        .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let count =
        |series: &str| sample(&after, series).unwrap_or_else(|| panic!("{series}:\n{after}"));
    assert_eq!(
        count(r#"sluice_executions_total{environment="dev",kind="sync",outcome="success"}"#),
        1.0
    );
    assert_eq!(
        count(r#"sluice_executions_total{environment="dev",kind="action",outcome="success"}"#),
        1.0
    );
    assert_eq!(
        count(r#"sluice_execution_duration_seconds_count{environment="dev",kind="action"}"#),
        1.0
    );
    assert_eq!(
        count(r#"sluice_records_total{environment="dev",change="added"}"#),
        5.0
    );
    assert_eq!(
        count(r#"sluice_webhook_deliveries_total{environment="dev",outcome="sent"}"#),
        1.0
    );
    // Requests by their route's template, never by an id.
    assert_eq!(
        count(r#"sluice_http_requests_total{method="GET",route="/connection/{id}",status="200"}"#),
        1.0
    );
    assert_eq!(
        count(r#"sluice_http_requests_total{method="GET",route="/connection/{id}",status="404"}"#),
        1.0
    );
    assert_eq!(
        count(r#"sluice_http_requests_total{method="GET",route="unmatched",status="404"}"#),
        1.0
    );
    assert_eq!(
        count(
            r#"sluice_http_request_duration_seconds_count{method="POST",route="/action/trigger"}"#
        ),
        1.0
    );
    assert_eq!(
        count(r#"sluice_http_requests_total{method="other",route="unmatched",status="404"}"#),
        1.0
    );
    assert!(!after.contains("BREW"), "{after}");
    assert!(
        !after.contains("nobody") && !after.contains("demo"),
        "{after}"
    );
    // Prod ran nothing.
    assert_eq!(
        sample(
            &after,
            r#"sluice_executions_total{environment="prod",kind="action",outcome="success"}"#
        ),
        None
    );

    // The listener answers nothing else.
    let other = reqwest::get(metrics.replace("/metrics", "/records"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    server.stop().await;
}
