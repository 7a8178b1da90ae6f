//! The shared store suite on PostgreSQL, each case in a schema of its own.
//!
//! The server is the one `SLUICE_TEST_POSTGRES` names (a connection string
//! whose user may create schemas; `.ci/run` starts one and sets it). Without
//! it these tests say so on stderr and do not run (a developer without a
//! PostgreSQL server still runs the rest of the workspace's tests).
// Test code: helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use sluice_store::testsuite::Reopen;
use sluice_store_postgres::PostgresBackend;

/// The test server's connection string, or `None` (said on stderr).
fn server() -> Option<String> {
    match std::env::var("SLUICE_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("SLUICE_TEST_POSTGRES is not set: the PostgreSQL backend is not tested");
            None
        }
    }
}

/// Runs `sql` on the test server from a thread of its own (the callers are
/// synchronous closures inside a test's runtime).
fn execute(url: &str, sql: String) {
    let url = url.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client.batch_execute(&sql).await.unwrap();
        });
    })
    .join()
    .unwrap();
}

/// `url` with its `search_path` set to `schema`.
fn in_schema(url: &str, schema: &str) -> String {
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}options=-csearch_path%3D{schema}")
}

/// A new, empty schema for one case (dropped and made again, so a rerun
/// starts empty).
fn new_schema(url: &str) -> String {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    execute(
        url,
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"),
    );
    schema
}

/// A case's storage: a schema of its own on the test server; `None`
/// without one.
fn postgres_schema() -> Option<Reopen> {
    let url = server()?;
    let schema = new_schema(&url);
    let url = in_schema(&url, &schema);
    Some(Reopen::new(move || {
        Arc::new(PostgresBackend::open(&url).unwrap())
    }))
}

sluice_store::backend_tests!(postgres_schema);
