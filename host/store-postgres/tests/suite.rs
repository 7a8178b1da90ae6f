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

use sluice_store::testsuite::{CutProxy, Reopen};
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
    assert!(
        matches!(
            PostgresBackend::open_waiting(&url, Duration::ZERO),
            Err(sluice_store::BackendError::Busy { .. })
        ),
        "a held store is not told apart as busy"
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

/// A backend opened for reading reads what the store's writer wrote,
/// while the writer holds it, and refuses every write; a schema with no
/// store in it is refused, and nothing is created there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_backend_reads_and_writes_nothing() {
    let Some((url, _)) = schema_url() else {
        return;
    };
    let err = PostgresBackend::open_reading(&url).unwrap_err().to_string();
    assert!(err.contains("no sluice store is in this schema"), "{err}");
    let writer = PostgresBackend::open(&url).unwrap();
    writer.apply(vec![put(b"k", b"v")]).await.unwrap();
    let reader = PostgresBackend::open_reading(&url).unwrap();
    assert_eq!(reader.get(Table::Docs, b"k").await.unwrap().unwrap(), b"v");
    let err = reader
        .apply(vec![put(b"k", b"other")])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("only reads"), "{err}");
    writer.apply(vec![put(b"k", b"w")]).await.unwrap();
    assert_eq!(reader.get(Table::Docs, b"k").await.unwrap().unwrap(), b"w");
}

/// The database ends the writing session (it stopped hearing from the
/// server: here the connection is cut on the server's side and the
/// session ended, as its keepalives would) and another process takes the
/// store: once it can reach the database again, the first backend finds
/// the lock taken (its idle check, without a write), says so, and writes
/// nothing more; what it had written is the new holder's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_taken_over_is_let_go() {
    let Some((url, _)) = schema_url() else {
        return;
    };
    let proxy = CutProxy::start(server_address(&url).await).await;
    let through = at(&url, &format!("127.0.0.1:{}", proxy.port));
    let first = PostgresBackend::open(&through).unwrap();
    first.apply(vec![put(b"k", b"first")]).await.unwrap();
    proxy.cut.send(true).unwrap();
    execute(&url, sluice_store_postgres::END_HOLDER_SQL.to_string());
    let second = PostgresBackend::open_waiting(&url, Duration::from_secs(10)).unwrap();
    proxy.cut.send(false).unwrap();
    let why = tokio::time::timeout(Duration::from_secs(60), first.taken_over())
        .await
        .expect("the first backend did not notice the store was taken over");
    assert!(why.contains("taken over by another server"), "{why}");
    let err = first
        .apply(vec![put(b"k", b"stale")])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("taken over"), "{err}");
    assert_eq!(
        second.get(Table::Docs, b"k").await.unwrap().unwrap(),
        b"first"
    );
    second.apply(vec![put(b"k", b"second")]).await.unwrap();
    assert_eq!(
        second.get(Table::Docs, b"k").await.unwrap().unwrap(),
        b"second"
    );
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

/// The writing connection vanishes on this side only (the database still
/// has its session, and with it the store's lock, for as long as its
/// keepalives take): the next write ends that session, which the backend
/// knows for its own, takes the lock back and is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_session_the_database_still_holds_is_taken_over() {
    let Some((url, _)) = schema_url() else {
        return;
    };
    let proxy = CutProxy::start(server_address(&url).await).await;
    let through = at(&url, &format!("127.0.0.1:{}", proxy.port));
    let backend = PostgresBackend::open(&through).unwrap();
    backend.apply(vec![put(b"a", b"1")]).await.unwrap();
    proxy.cut.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.cut.send(false).unwrap();
    backend.apply(vec![put(b"b", b"2")]).await.unwrap();
    let all = backend
        .scan(Table::Docs, b"", None, 10, false)
        .await
        .unwrap();
    assert_eq!(
        all,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec())
        ]
    );
}

/// A batch bigger than one PostgreSQL message may be (here 160 MB of
/// component blobs in one apply) is written in several statements of one
/// transaction; listing the blobs' keys reads them one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_large_values_is_written_and_listed() {
    let Some((url, plain)) = schema_url() else {
        return;
    };
    let backend = PostgresBackend::open(&url).unwrap();
    let blob = |i: u8| vec![i; 16 << 20];
    let ops: Vec<Op> = (0..10u8)
        .map(|i| Op::Put {
            table: Table::Blobs,
            key: vec![i],
            value: blob(i),
        })
        .collect();
    backend.apply(ops).await.unwrap();
    let keys = backend
        .scan_where(Table::Blobs, b"", None, 100, false, &mut |v| v[0] == 3)
        .await
        .unwrap();
    assert_eq!(keys.len(), 10);
    for (i, (key, value)) in keys.iter().enumerate() {
        assert_eq!(key, &vec![i as u8]);
        assert_eq!(value.is_some(), i == 3, "{i}");
    }
    assert_eq!(keys[3].1.as_deref(), Some(blob(3).as_slice()));
    drop(backend);
    let schema = url.rsplit("search_path%3D").next().unwrap().to_string();
    execute(&plain, format!("DROP SCHEMA {schema} CASCADE"));
}

/// A TLS front for the test server, as a managed database has: it answers
/// PostgreSQL's SSLRequest, shakes hands with a certificate for
/// `localhost` from a CA made here, and forwards the decrypted stream.
/// Returns its port and the CA's certificate (PEM).
async fn tls_front(target: std::net::SocketAddr) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sluice test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // SSLRequest: length 8, code 80877103.
                let mut request = [0u8; 8];
                if client.read_exact(&mut request).await.is_err()
                    || request != [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]
                    || client.write_all(b"S").await.is_err()
                {
                    return;
                }
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    (port, ca.pem())
}

/// The test server's address, and `url` with another host and port.
async fn server_address(url: &str) -> std::net::SocketAddr {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("SLUICE_TEST_POSTGRES is not a TCP address: {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap()
}

fn at(url: &str, host_port: &str) -> String {
    let start = url.find('@').unwrap() + 1;
    let end = start + url[start..].find('/').unwrap();
    format!("{}{host_port}{}", &url[..start], &url[end..])
}

/// `sslmode=verify-full` (or `require`) with `sslrootcert`: the store is
/// reached over TLS, the server's certificate checked against that CA;
/// without the CA (the system's roots) the certificate is refused, saying
/// so; a CA file that does not exist is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_used_and_the_certificate_checked_when_asked() {
    let Some((url, _)) = schema_url() else {
        return;
    };
    let (port, ca) = tls_front(server_address(&url).await).await;
    let ca_file =
        std::env::temp_dir().join(format!("sluice-ca-{}.pem", uuid::Uuid::new_v4().simple()));
    std::fs::write(&ca_file, ca).unwrap();
    let through = at(&url, &format!("localhost:{port}"));
    for mode in ["verify-full", "require"] {
        let tls = format!(
            "{through}&hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}",
            ca_file.display()
        );
        let backend = PostgresBackend::open(&tls).unwrap();
        backend
            .apply(vec![put(b"k", mode.as_bytes())])
            .await
            .unwrap();
        assert_eq!(
            backend.get(Table::Docs, b"k").await.unwrap().unwrap(),
            mode.as_bytes()
        );
    }
    // The certificate is for localhost: another name is refused.
    let by_address = at(&url, &format!("127.0.0.1:{port}"));
    let err = PostgresBackend::open(&format!(
        "{by_address}&sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("certificate"), "{err}");
    let err = PostgresBackend::open(&format!("{through}&hostaddr=127.0.0.1&sslmode=require"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate"), "{err}");
    let err = PostgresBackend::open(&format!(
        "{through}&hostaddr=127.0.0.1&sslmode=require&sslrootcert=/no/such/ca.pem"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot read sslrootcert /no/such/ca.pem"),
        "{err}"
    );
    let _ = std::fs::remove_file(&ca_file);
}

/// A batch the database refuses (a key longer than PostgreSQL indexes)
/// writes none of its ops and says why; batches committed in the same
/// group are written; the connection goes on writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_writes_nothing_and_fails_no_other() {
    let Some((url, _)) = schema_url() else {
        return;
    };
    let backend = PostgresBackend::open(&url).unwrap();
    // Random bytes do not compress below the index's limit.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let long: Vec<u8> = (0..4000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    // Two tables: two statements, of which the second is refused.
    let before = Op::Put {
        table: Table::Variables,
        key: b"before".to_vec(),
        value: b"x".to_vec(),
    };
    let refused = backend.start_unflushed_in_order(vec![before, put(&long, b"y")]);
    let fine = backend.apply(vec![put(b"other", b"z")]);
    let (refused, fine) = tokio::join!(refused, fine);
    let err = refused.unwrap_err().to_string();
    assert!(err.contains("index row size"), "{err}");
    fine.unwrap();
    assert_eq!(
        backend.get(Table::Variables, b"before").await.unwrap(),
        None
    );
    assert_eq!(
        backend.get(Table::Docs, b"other").await.unwrap().unwrap(),
        b"z"
    );
    backend.apply(vec![put(b"after", b"w")]).await.unwrap();
    assert_eq!(
        backend.get(Table::Docs, b"after").await.unwrap().unwrap(),
        b"w"
    );
}

/// Runs `sql` (one statement) on the test server and returns its rows as
/// text.
fn query(url: &str, sql: String) -> Vec<Vec<Option<String>>> {
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
            let mut rows = Vec::new();
            for message in client.simple_query(&sql).await.unwrap() {
                if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                    rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect(),
                    );
                }
            }
            rows
        })
    })
    .join()
    .unwrap()
}

/// The schema a [`schema_url`] names.
fn schema_of(url: &str) -> String {
    url.rsplit("search_path%3D").next().unwrap().to_string()
}

/// The database ends the writing session while the writer is cut off from
/// it; another server takes the store, writes, and stops (the lock is
/// free again). The first backend, reaching the database again, takes the
/// lock but finds that another server had the store meanwhile: it is
/// taken over (what it holds in memory may be out of date), and its write
/// is refused, not written over the other server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_held_by_another_server_meanwhile_is_let_go() {
    let Some((url, plain)) = schema_url() else {
        return;
    };
    let proxy = CutProxy::start(server_address(&url).await).await;
    let through = at(&url, &format!("127.0.0.1:{}", proxy.port));
    let first = PostgresBackend::open(&through).unwrap();
    first.apply(vec![put(b"k", b"first")]).await.unwrap();
    proxy.cut.send(true).unwrap();
    execute(&url, sluice_store_postgres::END_HOLDER_SQL.to_string());
    let second = PostgresBackend::open_waiting(&url, Duration::from_secs(10)).unwrap();
    second.apply(vec![put(b"k", b"second")]).await.unwrap();
    drop(second);
    proxy.cut.send(false).unwrap();
    let err = first
        .apply(vec![put(b"k", b"stale")])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("taken over by another server"), "{err}");
    assert!(err.contains("while this one was cut off"), "{err}");
    let why = futures_util::FutureExt::now_or_never(first.taken_over())
        .expect("the store taken over is not said to be");
    assert!(why.contains("while this one was cut off"), "{why}");
    // The lock is let go again; what the other server wrote stands.
    let third = PostgresBackend::open_waiting(&url, Duration::from_secs(10)).unwrap();
    assert_eq!(
        third.get(Table::Docs, b"k").await.unwrap().unwrap(),
        b"second"
    );
    drop((first, third));
    execute(&plain, format!("DROP SCHEMA {} CASCADE", schema_of(&url)));
}

/// A fresh schema named `fx2pg_…` and its connection string, with the
/// server's plain one, or `None` without a server.
fn fx2pg_schema_url() -> Option<(String, String)> {
    let url = server()?;
    let schema = format!("fx2pg_{}", uuid::Uuid::new_v4().simple());
    execute(
        &url,
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"),
    );
    Some((in_schema(&url, &schema), url))
}

/// A writer cut off from the database for longer than a managed
/// database's failover takes to begin (its checks and reconnects failing
/// all the while, the database keeping its session) is not stopped for
/// it: reachable again, it takes its own lock back (its old session
/// ended), finds its own token, and writes on. Only a store shown to be
/// another's is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_cut_off_for_a_while_reconnects_and_goes_on() {
    let Some((url, plain)) = fx2pg_schema_url() else {
        return;
    };
    let proxy = CutProxy::start(server_address(&url).await).await;
    let through = at(&url, &format!("127.0.0.1:{}", proxy.port));
    let first = PostgresBackend::open(&through).unwrap();
    first.apply(vec![put(b"k", b"first")]).await.unwrap();
    proxy.cut.send(true).unwrap();
    // Past what a fence on unconfirmed sessions would allow (15 s, and
    // checks every 5 s): several idle checks fail meanwhile.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(
        futures_util::FutureExt::now_or_never(first.taken_over()).is_none(),
        "a writer that only lost the database for a while was stopped"
    );
    proxy.cut.send(false).unwrap();
    first.apply(vec![put(b"k", b"after")]).await.unwrap();
    assert_eq!(
        first.get(Table::Docs, b"k").await.unwrap().unwrap(),
        b"after"
    );
    assert!(futures_util::FutureExt::now_or_never(first.taken_over()).is_none());
    drop(first);
    execute(&plain, format!("DROP SCHEMA {} CASCADE", schema_of(&url)));
}

/// `open_source`, a copy's source, takes the store's lock but writes
/// nothing, not its token either: a writer cut off while the copy held
/// the store takes it back afterwards and writes on (an open to write in
/// its place lets it go: `a_store_held_by_another_server_meanwhile_is_let_go`).
/// Its writes are refused; a schema without a store is refused and left
/// without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_source_leaves_the_writer_its_store() {
    let Some((url, plain)) = fx2pg_schema_url() else {
        return;
    };
    let proxy = CutProxy::start(server_address(&url).await).await;
    let through = at(&url, &format!("127.0.0.1:{}", proxy.port));
    let first = PostgresBackend::open(&through).unwrap();
    first.apply(vec![put(b"k", b"first")]).await.unwrap();
    proxy.cut.send(true).unwrap();
    execute(&url, sluice_store_postgres::END_HOLDER_SQL.to_string());
    let source = PostgresBackend::open_source(&url).unwrap();
    assert_eq!(
        source.get(Table::Docs, b"k").await.unwrap().unwrap(),
        b"first"
    );
    let err = source
        .apply(vec![put(b"k", b"copy")])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("only reads"), "{err}");
    // It holds the lock meanwhile.
    let held = query(
        &url,
        "SELECT count(*) FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(current_schema(), 1936483173)".into(),
    );
    assert_eq!(held[0][0].as_deref(), Some("1"));
    drop(source);
    proxy.cut.send(false).unwrap();
    first.apply(vec![put(b"k", b"after")]).await.unwrap();
    assert!(futures_util::FutureExt::now_or_never(first.taken_over()).is_none());
    drop(first);

    let Some((empty, _)) = fx2pg_schema_url() else {
        return;
    };
    let Err(err) = PostgresBackend::open_source(&empty) else {
        panic!("a schema without a store was opened as a copy's source");
    };
    assert!(err.to_string().contains("no sluice store"), "{err}");
    let tables = query(
        &empty,
        "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()".into(),
    );
    assert_eq!(tables[0][0].as_deref(), Some("0"));
    execute(&plain, format!("DROP SCHEMA {} CASCADE", schema_of(&url)));
    execute(&plain, format!("DROP SCHEMA {} CASCADE", schema_of(&empty)));
}

/// `open_destination`, a copy's destination, refuses a schema that holds
/// a store before it writes anything, its token to `sluice_holder` among
/// it: a server cut off from the database meanwhile takes its store back
/// when it reconnects and writes on (an open to write in its place would
/// have taken the store over from it: `a_store_held_by_another_server_meanwhile_is_let_go`),
/// and the store reads as it did. An empty schema is opened and copied
/// into, and is refused as a destination from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_onto_a_store_is_refused_before_it_writes() {
    let Some((url, plain)) = schema_url() else {
        return;
    };
    let holder = |url: &str| {
        query(
            url,
            "SELECT encode(v, 'hex') FROM sluice_holder WHERE k = 'writer'".into(),
        )
    };
    let proxy = CutProxy::start(server_address(&url).await).await;
    let through = at(&url, &format!("127.0.0.1:{}", proxy.port));
    let first = PostgresBackend::open(&through).unwrap();
    first.apply(vec![put(b"k", b"first")]).await.unwrap();
    let token = holder(&url);
    assert_eq!(token.len(), 1, "{token:?}");
    proxy.cut.send(true).unwrap();
    execute(&url, sluice_store_postgres::END_HOLDER_SQL.to_string());
    let Err(err) = PostgresBackend::open_destination(&url) else {
        panic!("a schema holding a store was opened as a copy's destination");
    };
    assert!(
        matches!(err, sluice_store::CopyError::NotEmpty { table: "docs" }),
        "{err:?}"
    );
    assert!(!err.wrote());
    assert!(
        err.to_string().contains("nothing was written to it"),
        "{err}"
    );
    assert_eq!(holder(&url), token, "the refused copy replaced the holder");
    proxy.cut.send(false).unwrap();
    first.apply(vec![put(b"k", b"after")]).await.unwrap();
    assert!(
        futures_util::FutureExt::now_or_never(first.taken_over()).is_none(),
        "the refused copy took the store over from its server"
    );
    assert_eq!(
        first.get(Table::Docs, b"k").await.unwrap().unwrap(),
        b"after"
    );
    drop(first);

    let (empty, _) = schema_url().unwrap();
    let source: Arc<dyn Backend> = Arc::new(sluice_store::MemoryBackend::new());
    let master = sluice_store::MasterKey::generate();
    sluice_store::Store::open(source.clone(), master.clone(), &[("dev".into(), None)])
        .await
        .unwrap();
    let to = PostgresBackend::open_destination(&empty).unwrap();
    let report = sluice_store::copy_store(&*source, &to, |_, _| {})
        .await
        .unwrap();
    assert!(report.rows() > 0, "{report:?}");
    drop(to);
    let Err(err) = PostgresBackend::open_destination(&empty) else {
        panic!("a copy's destination was opened again as one");
    };
    assert!(
        matches!(err, sluice_store::CopyError::NotEmpty { .. }),
        "{err:?}"
    );
    let (copy, created) = sluice_store::Store::open(
        Arc::new(PostgresBackend::open(&empty).unwrap()),
        master,
        &[],
    )
    .await
    .unwrap();
    assert!(created.is_empty());
    assert!(copy.environment("dev").is_some());
    drop(copy);
    execute(&plain, format!("DROP SCHEMA {} CASCADE", schema_of(&url)));
    execute(&plain, format!("DROP SCHEMA {} CASCADE", schema_of(&empty)));
}

/// The store's schema is the first of the `search_path` that exists: a
/// store made in the second, when the first did not exist yet, is not
/// replaced by a new, empty one once the first is created; the open is
/// refused, naming both schemas and how to name one. Named alone, the
/// store opens as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_further_along_the_search_path_is_not_replaced() {
    let Some(plain) = server() else {
        return;
    };
    let id = uuid::Uuid::new_v4().simple();
    let (first, second) = (format!("t_{id}_1"), format!("t_{id}_2"));
    execute(&plain, format!("CREATE SCHEMA {second}"));
    let url = in_schema(&plain, &format!("{first},{second}"));
    let master = sluice_store::MasterKey::generate();
    let initial = vec![("dev".to_string(), None)];
    let open = |url: &str| -> Arc<dyn Backend> { Arc::new(PostgresBackend::open(url).unwrap()) };
    let (store, created) = sluice_store::Store::open(open(&url), master.clone(), &initial)
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    drop(store);
    execute(&plain, format!("CREATE SCHEMA {first}"));
    let err = PostgresBackend::open(&url).unwrap_err().to_string();
    for said in [
        format!("schema `{first}`"),
        format!("schema `{second}`"),
        format!("options=-csearch_path%3D{second}"),
    ] {
        assert!(err.contains(&said), "{err}");
    }
    let made = query(
        &plain,
        format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{first}'"),
    );
    assert_eq!(made[0][0].as_deref(), Some("0"), "tables were made");
    let (store, created) =
        sluice_store::Store::open(open(&in_schema(&plain, &second)), master, &initial)
            .await
            .unwrap();
    assert!(created.is_empty());
    drop(store);
    execute(
        &plain,
        format!("DROP SCHEMA {first} CASCADE; DROP SCHEMA {second} CASCADE"),
    );
}

/// A first start cut short once the tables were made is finished by the
/// next; a store whose tables were emptied is refused, not made anew
/// with new keys over them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_store_is_refused_not_made_anew() {
    let Some((url, plain)) = schema_url() else {
        return;
    };
    let schema = schema_of(&url);
    let master = sluice_store::MasterKey::generate();
    let initial = vec![("dev".to_string(), None)];
    let open = || -> Arc<dyn Backend> { Arc::new(PostgresBackend::open(&url).unwrap()) };
    drop(open());
    let (store, created) = sluice_store::Store::open(open(), master.clone(), &initial)
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    drop(store);
    let tables: Vec<String> = Table::ALL
        .iter()
        .map(|t| format!("{schema}.sluice_{}", t.name()))
        .collect();
    execute(&plain, format!("TRUNCATE {}", tables.join(", ")));
    let err = sluice_store::Store::open(open(), master, &initial)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds no store"), "{err}");
    execute(&plain, format!("DROP SCHEMA {schema} CASCADE"));
}

/// How many of the sessions named `name` are TLS, of how many.
fn tls_sessions(plain: &str, name: &str) -> (i64, i64) {
    let rows = query(
        plain,
        format!(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid WHERE a.application_name = '{name}'"
        ),
    );
    let n = |i: usize| rows[0][i].as_deref().unwrap().parse().unwrap();
    (n(0), n(1))
}

/// With no `sslmode`, `prefer` or `allow`, every connection is TLS when the
/// server offers it (the test server's certificate is self-signed: as
/// libpq's `prefer`, no certificate is checked), and `disable` is plain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_is_tls_where_the_server_offers_it() {
    let Some((url, plain)) = schema_url() else {
        return;
    };
    let offered = query(&plain, "SHOW ssl".into())[0][0].as_deref() == Some("on");
    for (mode, tls) in [
        ("", offered),
        ("&sslmode=prefer", offered),
        ("&sslmode=allow", offered),
        ("&sslmode=disable", false),
    ] {
        let name = format!("sluice-test-{}", uuid::Uuid::new_v4().simple());
        let backend =
            PostgresBackend::open(&format!("{url}&application_name={name}{mode}")).unwrap();
        backend.apply(vec![put(b"k", b"v")]).await.unwrap();
        assert_eq!(backend.get(Table::Docs, b"k").await.unwrap().unwrap(), b"v");
        let (encrypted, all) = tls_sessions(&plain, &name);
        assert!(all >= 5, "{mode}: {all} sessions");
        assert_eq!(
            encrypted == all,
            tls,
            "{mode}: {encrypted} of {all} are TLS"
        );
        assert!(
            encrypted == 0 || encrypted == all,
            "{mode}: {encrypted} of {all}"
        );
    }
    execute(&plain, format!("DROP SCHEMA {} CASCADE", schema_of(&url)));
}

/// A front for the test server that answers PostgreSQL's SSLRequest with
/// no, as a server without TLS does, and forwards the rest.
async fn no_tls_front(target: std::net::SocketAddr) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if client.read_exact(&mut request).await.is_err() {
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                if request == [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f] {
                    if client.write_all(b"N").await.is_err() {
                        return;
                    }
                } else if server.write_all(&request).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    port
}

/// `prefer` against a server without TLS is plain TCP; `require` there is
/// refused. Against a server whose certificate no known CA signed,
/// `prefer` is TLS (nothing checked), unless a CA is given, which is
/// always checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_goes_plain_only_where_the_server_has_no_tls() {
    let Some((url, plain)) = schema_url() else {
        return;
    };
    let address = server_address(&url).await;
    let port = no_tls_front(address).await;
    let through = at(&url, &format!("127.0.0.1:{port}"));
    let name = format!("sluice-test-{}", uuid::Uuid::new_v4().simple());
    let backend =
        PostgresBackend::open(&format!("{through}&application_name={name}&sslmode=prefer"))
            .unwrap();
    backend.apply(vec![put(b"k", b"v")]).await.unwrap();
    let (encrypted, all) = tls_sessions(&plain, &name);
    assert_eq!((encrypted, all >= 5), (0, true), "{encrypted} of {all}");
    drop(backend);
    let err = PostgresBackend::open(&format!("{through}&sslmode=require"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not support TLS"), "{err}");

    let (port, ca) = tls_front(address).await;
    let ca_file =
        std::env::temp_dir().join(format!("sluice-ca-{}.pem", uuid::Uuid::new_v4().simple()));
    std::fs::write(&ca_file, ca).unwrap();
    let backend = PostgresBackend::open(&at(&url, &format!("127.0.0.1:{port}"))).unwrap();
    assert_eq!(backend.get(Table::Docs, b"k").await.unwrap().unwrap(), b"v");
    drop(backend);
    // The certificate is for localhost, not 127.0.0.1.
    let err = PostgresBackend::open(&format!(
        "{}&sslmode=prefer&sslrootcert={}",
        at(&url, &format!("127.0.0.1:{port}")),
        ca_file.display()
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("certificate"), "{err}");
    let _ = std::fs::remove_file(&ca_file);
    execute(&plain, format!("DROP SCHEMA {} CASCADE", schema_of(&url)));
}

/// How [`failing_tls_front`] fails TLS.
#[derive(Clone, Copy)]
enum TlsFailure {
    /// Answers the SSLRequest with yes, then the ClientHello with a fatal
    /// `handshake_failure` alert (a server whose TLS rustls refuses).
    Alert,
    /// Shakes hands, then refuses the login over TLS as a `hostnossl`
    /// line in pg_hba.conf does.
    RefusedOverTls,
}

/// A front for the test server that fails TLS as `how` says and forwards
/// a plain connection (one that starts without an SSLRequest).
async fn failing_tls_front(target: std::net::SocketAddr, how: TlsFailure) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if client.read_exact(&mut request).await.is_err() {
                    return;
                }
                if request != [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f] {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    if server.write_all(&request).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
                if client.write_all(b"S").await.is_err() {
                    return;
                }
                match how {
                    TlsFailure::Alert => {
                        // The ClientHello's record, read whole.
                        let mut header = [0u8; 5];
                        if client.read_exact(&mut header).await.is_err() {
                            return;
                        }
                        let mut hello =
                            vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
                        if client.read_exact(&mut hello).await.is_err() {
                            return;
                        }
                        // Alert record, TLS 1.2: fatal, handshake_failure.
                        let _ = client.write_all(&[0x15, 3, 3, 0, 2, 2, 40]).await;
                        let _ = client.shutdown().await;
                        let mut rest = Vec::new();
                        let _ = client.read_to_end(&mut rest).await;
                    }
                    TlsFailure::RefusedOverTls => {
                        let Ok(mut tls) = acceptor.accept(client).await else {
                            return;
                        };
                        let mut startup = [0u8; 4];
                        if tls.read_exact(&mut startup).await.is_err() {
                            return;
                        }
                        let mut fields = Vec::new();
                        for (code, text) in [
                            (b'S', "FATAL"),
                            (b'V', "FATAL"),
                            (b'C', "28000"),
                            (
                                b'M',
                                "no pg_hba.conf entry for host \"127.0.0.1\", SSL encryption",
                            ),
                        ] {
                            fields.push(code);
                            fields.extend_from_slice(text.as_bytes());
                            fields.push(0);
                        }
                        fields.push(0);
                        let mut message = vec![b'E'];
                        message.extend_from_slice(&(fields.len() as i32 + 4).to_be_bytes());
                        message.extend_from_slice(&fields);
                        let _ = tls.write_all(&message).await;
                        let _ = tls.shutdown().await;
                    }
                }
            });
        }
    });
    port
}

/// `prefer` and `allow` make a connection again in plain TCP when the
/// server offers TLS but the handshake fails, or the server refuses the
/// login over TLS (as libpq does), also with `sslrootcert` given (only a
/// certificate it does not verify is an error there:
/// `prefer_goes_plain_only_where_the_server_has_no_tls`); `require` is
/// refused, never plain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_goes_plain_where_tls_fails() {
    let Some((url, plain)) = fx2pg_schema_url() else {
        return;
    };
    let address = server_address(&url).await;
    let (_, ca) = tls_front(address).await;
    let ca_file =
        std::env::temp_dir().join(format!("fix2-pg-ca-{}.pem", uuid::Uuid::new_v4().simple()));
    std::fs::write(&ca_file, ca).unwrap();
    for how in [TlsFailure::Alert, TlsFailure::RefusedOverTls] {
        let port = failing_tls_front(address, how).await;
        let through = at(&url, &format!("127.0.0.1:{port}"));
        let with_ca = format!("&sslmode=prefer&sslrootcert={}", ca_file.display());
        let mut modes = vec!["", "&sslmode=prefer", "&sslmode=allow"];
        // A handshake refused before any certificate is seen (the front's
        // own is not the CA's: refused over TLS, it would fail to verify).
        if matches!(how, TlsFailure::Alert) {
            modes.push(&with_ca);
        }
        for mode in modes {
            let name = format!("sluice-test-{}", uuid::Uuid::new_v4().simple());
            let backend =
                PostgresBackend::open(&format!("{through}&application_name={name}{mode}"))
                    .unwrap_or_else(|e| panic!("{mode}: {e}"));
            backend.apply(vec![put(b"k", b"v")]).await.unwrap();
            assert_eq!(backend.get(Table::Docs, b"k").await.unwrap().unwrap(), b"v");
            let (encrypted, all) = tls_sessions(&plain, &name);
            assert_eq!(
                (encrypted, all >= 5),
                (0, true),
                "{mode}: {encrypted} of {all}"
            );
            drop(backend);
        }
        let err = PostgresBackend::open(&format!("{through}&sslmode=require"))
            .unwrap_err()
            .to_string();
        match how {
            TlsFailure::Alert => assert!(err.contains("HandshakeFailure"), "{err}"),
            // The front's certificate is self-signed: refused before the
            // login, as a refusal over TLS would be.
            TlsFailure::RefusedOverTls => assert!(
                err.contains("certificate") || err.contains("SSL encryption"),
                "{err}"
            ),
        }
    }
    let _ = std::fs::remove_file(&ca_file);
    execute(&plain, format!("DROP SCHEMA {} CASCADE", schema_of(&url)));
}
