//! The shared store suite on PostgreSQL, each case in a schema of its own.
//!
//! The server is the one `SLUICE_TEST_POSTGRES` names (a connection string
//! whose user may create schemas; `.ci/run` starts one and sets it). Without
//! it these tests say so on stderr and do not run (a developer without a
//! PostgreSQL server still runs the rest of the workspace's tests).
// Test code: helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_store::testsuite::Reopen;
use sluice_store::{Backend, Op, Table};
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

/// A test of its own: a fresh schema's connection string and the server's
/// plain one, or `None` without a server.
fn schema_url() -> Option<(String, String)> {
    let url = server()?;
    let schema = new_schema(&url);
    Some((in_schema(&url, &schema), url))
}

fn put(key: &[u8], value: &[u8]) -> Op {
    Op::Put {
        table: Table::Docs,
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

/// One server per store: a second open of the same schema waits for the
/// first, and is refused, saying why, while the first holds it; it opens
/// once the first is dropped. Another schema of the same database is
/// another store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_one_store_is_refused() {
    let Some((url, plain)) = schema_url() else {
        return;
    };
    let first = PostgresBackend::open(&url).unwrap();
    first.apply(vec![put(b"k", b"first")]).await.unwrap();
    let started = Instant::now();
    let err = PostgresBackend::open_waiting(&url, Duration::from_millis(500))
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it did not wait"
    );
    assert!(
        err.contains("another sluice server is using the store"),
        "{err}"
    );
    // The refused open changed nothing.
    assert_eq!(
        first.get(Table::Docs, b"k").await.unwrap().unwrap(),
        b"first"
    );

    let (other, _) = schema_url().unwrap();
    let beside = PostgresBackend::open_waiting(&other, Duration::ZERO).unwrap();
    assert_eq!(beside.get(Table::Docs, b"k").await.unwrap(), None);
    drop(beside);

    // A writer that is not awaited is still written before the drop ends.
    let pending = first.start_unflushed_in_order(vec![put(b"k", b"last")]);
    drop(pending);
    drop(first);
    let second = PostgresBackend::open_waiting(&url, Duration::ZERO).unwrap();
    assert_eq!(
        second.get(Table::Docs, b"k").await.unwrap().unwrap(),
        b"last"
    );
    let _ = plain;
}

/// A bad connection string, a server that is not there and a schema that
/// does not exist are each refused with the cause, and the password is
/// never in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connection_strings_are_refused_clearly() {
    let Some(url) = server() else {
        return;
    };
    let err = PostgresBackend::open("postgres://a:b@host:notaport/db")
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not parse"), "{err}");

    let err = PostgresBackend::open("postgres://someone:hunter2@127.0.0.1:1/db")
        .unwrap_err()
        .to_string();
    assert!(err.contains("postgres://someone@127.0.0.1:1/db"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    let err = PostgresBackend::open(&in_schema(&url, "no_such_schema"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no schema to keep the tables in"), "{err}");

    let wrong = url.replacen("://", "://nobody_here:", 1);
    let wrong = match wrong.split_once('@') {
        Some((_, host)) => format!("postgres://nobody_here:wrong-password@{host}"),
        None => wrong,
    };
    let err = PostgresBackend::open(&wrong).unwrap_err().to_string();
    assert!(err.contains("nobody_here"), "{err}");
    assert!(!err.contains("wrong-password"), "{err}");
}

/// The database drops every connection (a restart, a failover, an idle
/// timeout): the next reads and writes reconnect, the writer takes the
/// store's lock back, and nothing written before is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_replaced() {
    let Some((url, plain)) = schema_url() else {
        return;
    };
    let name = format!("sluice-test-{}", uuid::Uuid::new_v4().simple());
    let url = format!("{url}&application_name={name}");
    let backend = PostgresBackend::open(&url).unwrap();
    backend.apply(vec![put(b"a", b"1")]).await.unwrap();
    for round in 0..2 {
        execute(
            &plain,
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{name}'"
            ),
        );
        // Every reader slot meets a dead connection once.
        for _ in 0..8 {
            assert_eq!(
                backend.get(Table::Docs, b"a").await.unwrap().unwrap(),
                b"1",
                "round {round}"
            );
        }
        let key = format!("b{round}");
        backend
            .apply(vec![put(key.as_bytes(), b"2")])
            .await
            .unwrap();
        let all = backend
            .scan(Table::Docs, b"", None, 100, false)
            .await
            .unwrap();
        assert_eq!(all.len(), 2 + round, "round {round}: {all:?}");
    }
    // The reconnected writer holds the lock again.
    let err = PostgresBackend::open_waiting(&url, Duration::ZERO)
        .unwrap_err()
        .to_string();
    assert!(err.contains("another sluice server"), "{err}");
}
