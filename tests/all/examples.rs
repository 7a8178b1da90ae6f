//! The bundled Rust example, against its recorded mock API.

use std::sync::Arc;

use serde_json::json;
use sluice_project::project;
use sluice_runtime::connection::MemoryConnections;
use sluice_runtime::providers::ProviderCatalog;
use sluice_runtime::records::{ConnectionRef, MemoryRecords};
use sluice_runtime::upstream::{Network, Upstream};
use sluice_runtime::{Call, Environment, ExecError, Execution, Services};
use sluice_tests::{Fixture, MockResponse, MockServer, guests, output, repo_root, runtime, script};

struct Example {
    mock: MockServer,
    records: Arc<MemoryRecords>,
    services: Arc<Services>,
}

async fn example(mock: MockServer) -> Example {
    let dir = repo_root().join("examples/hubspot-rust");
    let connections = project::load_connections(&dir.join("connections.yaml")).unwrap();
    let records = Arc::new(MemoryRecords::new());
    let mut services = Services::new(
        Arc::new(Environment::default()),
        Arc::new(ProviderCatalog::builtin().unwrap()),
        Arc::new(MemoryConnections::new(connections)),
        records.clone(),
    );
    let mut network = Network::new(sluice_runtime::proxy::default_client());
    network.redirect = Some(mock.url().parse().unwrap());
    services.upstream = Upstream::Network(network);
    Example {
        mock,
        records,
        services: Arc::new(services),
    }
}

async fn recorded() -> Example {
    let fixture =
        Fixture::from_file(&repo_root().join("examples/hubspot-rust/mock-api.yaml")).unwrap();
    example(MockServer::start(fixture.handler()).await.unwrap()).await
}

fn demo() -> ConnectionRef {
    ConnectionRef {
        provider_config_key: "hubspot".into(),
        connection_id: "demo".into(),
    }
}

fn exec(name: &str, call: Call) -> Execution {
    Execution::new(name, demo(), call)
}

#[tokio::test]
async fn the_contacts_sync_pages_through_the_api_and_saves_every_contact() {
    let ex = recorded().await;
    let report = runtime()
        .execute(
            &script(guests::HUBSPOT_RUST_CONTACTS),
            exec("contacts", Call::Sync),
            ex.services.clone(),
        )
        .await;
    output(&report);
    assert_eq!(report.changes["Contact"].added, 5);
    let saved = ex.records.all(&demo(), "Contact");
    let names: Vec<_> = saved
        .iter()
        .map(|r| r.json["last_name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names.len(), 5);
    assert!(names.contains(&"Liskov".to_string()));
    let requests = ex.mock.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer demo-access-token"))
    );
    assert_eq!(requests[2].query_param("after"), Some("c3"));
    assert_eq!(
        requests[0].query_param("properties"),
        Some("firstname,lastname,email")
    );
}

#[tokio::test]
async fn the_create_contact_action_returns_the_contact() {
    let ex = recorded().await;
    let call = Call::Action {
        input: Some(json!({"email": "k@example.com", "first_name": "Katherine"}).to_string()),
    };
    let out = output(
        &runtime()
            .execute(
                &script(guests::HUBSPOT_RUST_CREATE_CONTACT),
                exec("create-contact", call),
                ex.services.clone(),
            )
            .await,
    );
    assert_eq!(out["id"], "201");
    assert_eq!(out["last_name"], "Johnson");
    let sent = ex.mock.requests()[0].json().unwrap();
    assert_eq!(sent["properties"]["email"], "k@example.com");
}

#[tokio::test]
async fn the_create_contact_action_turns_a_conflict_into_an_action_error() {
    let mock = MockServer::start(Arc::new(|_: &sluice_tests::MockRequest| {
        MockResponse::json(409, &json!({"message": "Contact already exists"}))
    }))
    .await
    .unwrap();
    let ex = example(mock).await;
    let call = Call::Action {
        input: Some(json!({"email": "dup@example.com"}).to_string()),
    };
    let report = runtime()
        .execute(
            &script(guests::HUBSPOT_RUST_CREATE_CONTACT),
            exec("create-contact", call),
            ex.services.clone(),
        )
        .await;
    let Err(ExecError::Script(f)) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(f.error_type, "action_script_runtime_error");
    assert_eq!(f.payload["email"], "dup@example.com");
}

/// A request the fixture has no route for is answered 404 naming it, query
/// included, and the query its path's routes want (the usual cause).
#[tokio::test]
async fn the_mocks_404_names_the_request_and_the_query_its_routes_want() {
    let fixture =
        Fixture::from_file(&repo_root().join("examples/hubspot-rust/mock-api.yaml")).unwrap();
    let mock = MockServer::start(fixture.handler()).await.unwrap();
    let answer = reqwest::get(format!("{}/crm/v3/objects/contacts?limit=5", mock.url()))
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    let body: serde_json::Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    let error = body["error"].as_str().unwrap().to_string();
    assert!(
        error.starts_with("no mock route for GET /crm/v3/objects/contacts?limit=5 (the routes of this path want the query limit=2 or "),
        "{error}"
    );
    let answer = reqwest::get(format!("{}/nope", mock.url())).await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    let error = body["error"].clone();
    assert_eq!(error, "no mock route for GET /nope");
}
