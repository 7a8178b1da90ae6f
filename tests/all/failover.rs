//! Failover on PostgreSQL (`sluice serve --standby`): real server
//! processes on one store, a standby waiting beside the server, the server
//! cut off or killed with SIGKILL, the standby taking over with every
//! acknowledged batch. Needs `SLUICE_TEST_POSTGRES` (skipped without it).
//!
//! `SLUICE_KILLS` sets the number of failovers of the kill loop (5 by
//! default; `tests/durability.sh N postgres-failover` runs more).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_store::MasterKey;

use crate::durability::{
    Upstream, assert_acknowledged_kept, connect_demo, contacts_trigger, serve, stored_ids,
};
use crate::server::{Client, DEV_KEY};

/// A server process whose output lines arrive on channels.
struct Watched {
    child: Child,
    stdout: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watched {
    fn start(
        data: &std::path::Path,
        providers: &std::path::Path,
        master: &str,
        args: &[&str],
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-under-test"));
        let mut child = serve(&mut command, data, providers, master, args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let forward = |from: Box<dyn std::io::Read + Send>, echo: bool| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(from).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("{line}");
                    }
                    let _ = tx.send(line);
                }
            });
            rx
        };
        let stdout = forward(Box::new(child.stdout.take().unwrap()), false);
        let stderr = forward(Box::new(child.stderr.take().unwrap()), true);
        Watched {
            child,
            stdout,
            stderr,
        }
    }

    /// The text after `prefix` in the first line of `lines` holding it,
    /// waiting at most `within`.
    fn line_after(
        lines: &std::sync::mpsc::Receiver<String>,
        prefix: &str,
        within: Duration,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line with `{prefix}` within {within:?}"));
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].to_string();
            }
        }
    }

    /// The server's URL once it serves.
    fn serving(&self, within: Duration) -> String {
        Self::line_after(&self.stdout, "sluice is listening on ", within)
            .trim()
            .to_string()
    }
}

/// How `child` exited, waiting at most `within`.
async fn exit_within(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Failover on PostgreSQL (`serve --standby`): a standby answers 503
/// `standby` while another server holds the store and compiles the
/// deployed scripts meanwhile. When the database ends the holder's session
/// (it stopped hearing from it: here its connection is cut and the session
/// ended, as the database's keepalives would), the standby takes over at
/// once with every batch the old server acknowledged, and the old server,
/// reaching the database again, finds the store taken and stops with exit
/// status 3. A second standby then takes over from the new server killed
/// with SIGKILL, and runs the sync on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_and_the_server_it_replaced_stops_on_postgres() {
    let Some(url) = sluice_tests::postgres_schema().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(dir.path()).await;
    let (highest, calls, providers) = (
        upstream.highest.clone(),
        upstream.calls.clone(),
        upstream.providers.clone(),
    );
    let master = MasterKey::generate().to_base64();
    // The first server reaches the database through a proxy that can cut
    // it off.
    let parsed = url::Url::parse(&url).unwrap();
    let database =
        tokio::net::lookup_host((parsed.host_str().unwrap(), parsed.port().unwrap_or(5432)))
            .await
            .unwrap()
            .next()
            .unwrap();
    let proxy = sluice_store::testsuite::CutProxy::start(database).await;
    let mut through = parsed.clone();
    through.set_ip_host("127.0.0.1".parse().unwrap()).unwrap();
    through.set_port(Some(proxy.port)).unwrap();
    let through = through.to_string();

    let first = Watched::start(
        &dir.path().join("a"),
        &providers,
        &master,
        &["--store", "postgres", "--database-url", &through],
    );
    let first_url = first.serving(Duration::from_secs(120));
    let c = Client::at(&first_url, DEV_KEY);
    connect_demo(&c).await;
    let trigger = contacts_trigger();

    // A standby, with a data directory of its own (the master key is the
    // same): 503 `standby`, and the deployment compiled into its cache.
    let standby_args = [
        "--store",
        "postgres",
        "--database-url",
        url.as_str(),
        "--standby",
    ];
    let second = Watched::start(&dir.path().join("b"), &providers, &master, &standby_args);
    let at = Watched::line_after(
        &second.stderr,
        "this one answers 503 on ",
        Duration::from_secs(60),
    );
    let at = at.split_whitespace().next().unwrap().to_string();
    let standby = Client::at(&format!("http://{at}"), DEV_KEY);
    let (status, body) = standby.send("GET", "/health", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "standby", "{body}");
    let (status, _) = standby.send("GET", "/connection", None).await;
    assert_eq!(status, 503);
    let compiled = |data: &std::path::Path| {
        std::fs::read_dir(data.join("cache"))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !compiled(&dir.path().join("b")) {
        assert!(Instant::now() < deadline, "the standby compiled nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A standby whose master key does not open the store is refused at
    // its start, not at the takeover.
    let mut wrong = Watched::start(
        &dir.path().join("w"),
        &providers,
        &MasterKey::generate().to_base64(),
        &standby_args,
    );
    let status = exit_within(&mut wrong.child, Duration::from_secs(60)).await;
    assert_ne!(status.code(), Some(0), "{status:?}");
    let said: Vec<String> = wrong.stderr.try_iter().collect();
    assert!(
        said.iter()
            .any(|l| l.contains("wrong master key for this store")),
        "{said:?}"
    );

    // The first server syncs; then it is cut off and its session ended.
    let (status, body) = c.send("POST", "/sync/trigger", Some(trigger.clone())).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while highest.load(Ordering::SeqCst) < 5 {
        assert!(Instant::now() < deadline, "the sync did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.cut.send(true).unwrap();
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(sluice_store_postgres::END_HOLDER_SQL)
        .await
        .unwrap();
    let second_url = second.serving(Duration::from_secs(60));
    let requested = highest.load(Ordering::SeqCst);
    let c = Client::at(&second_url, DEV_KEY);
    assert_acknowledged_kept(&stored_ids(&c).await, requested, 0);

    // The first server reaches the database again, finds the store taken
    // and stops.
    proxy.cut.send(false).unwrap();
    let mut first = first;
    let status = exit_within(&mut first.child, Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(3), "{status:?}");
    let said: Vec<String> = first.stdout.try_iter().collect();
    assert!(
        said.iter()
            .any(|l| l.contains("taken over by another server")),
        "{said:?}"
    );

    // A second standby takes over from the new server killed with SIGKILL,
    // and runs the sync.
    let third = Watched::start(&dir.path().join("c"), &providers, &master, &standby_args);
    let at = Watched::line_after(
        &third.stderr,
        "this one answers 503 on ",
        Duration::from_secs(60),
    );
    // Meanwhile the standby answers `GET /records` from the store: the
    // pages the server holding it answers; a wrong key is refused, and
    // everything else is 503 `standby`.
    let at = at.split_whitespace().next().unwrap().to_string();
    let reader = Client::at(&format!("http://{at}"), DEV_KEY);
    let deadline = Instant::now() + Duration::from_secs(60);
    while reader.send("GET", "/records?model=Contact", None).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the standby never read the store"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (The server may still be taking up the sync the cut cut short, so
    // the records only grow between the three reads.)
    let before = stored_ids(&reader).await;
    let held = stored_ids(&Client::at(&second_url, DEV_KEY)).await;
    let after = stored_ids(&reader).await;
    assert!(!before.is_empty());
    // As the server's router: `@nangohq/node` asks for `/records/`.
    let (status, body) = reader.send("GET", "/records/?model=Contact", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        before.is_subset(&held) && held.is_subset(&after),
        "{} ⊆ {} ⊆ {}",
        before.len(),
        held.len(),
        after.len()
    );
    let (status, body) = Client::at(&format!("http://{at}"), "not-a-key")
        .send("GET", "/records?model=Contact", None)
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unknown_account")),
        "{body}"
    );
    let (status, body) = reader
        .send_as(("hubspot", "nobody"), "GET", "/records?model=Contact", None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unknown_connection", "{body}");
    for (method, path) in [
        ("GET", "/health"),
        ("GET", "/connection"),
        ("POST", "/records"),
    ] {
        let (status, body) = reader.send(method, path, None).await;
        assert_eq!(status, 503, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "standby", "{body}");
    }
    let mut second = second;
    second.child.kill().unwrap();
    second.child.wait().unwrap();
    let third_url = third.serving(Duration::from_secs(60));
    let c = Client::at(&third_url, DEV_KEY);
    let before = calls.load(Ordering::SeqCst);
    let (status, body) = c.send("POST", "/sync/trigger", Some(trigger)).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while calls.load(Ordering::SeqCst) == before {
        assert!(
            Instant::now() < deadline,
            "the new server did not run the sync"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids = stored_ids(&c).await;
    assert!(ids.len() >= requested * 2, "{} records", ids.len());
}

/// The kill loop across servers: a server and a standby on one
/// PostgreSQL store; the server is killed with SIGKILL at a random point
/// of a sync, the standby takes over, every batch acknowledged before the
/// kill is there, and the killed server's data directory starts the next
/// standby. `SLUICE_KILLS` failovers (5 by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_failovers_lose_no_acknowledged_batch_on_postgres() {
    let Some(url) = sluice_tests::postgres_schema().await else {
        return;
    };
    let kills: usize = std::env::var("SLUICE_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(dir.path()).await;
    let master = MasterKey::generate().to_base64();
    let args = ["--store", "postgres", "--database-url", url.as_str()];
    let standby_args = [&args[..], &["--standby"]].concat();
    let data = [dir.path().join("a"), dir.path().join("b")];
    let mut server = Watched::start(&data[0], &upstream.providers, &master, &args);
    let mut server_url = server.serving(Duration::from_secs(120));
    connect_demo(&Client::at(&server_url, DEV_KEY)).await;
    let mut standby = Watched::start(&data[1], &upstream.providers, &master, &standby_args);
    Watched::line_after(
        &standby.stderr,
        "this one answers 503 on ",
        Duration::from_secs(60),
    );
    // The data directory of the server serving now.
    let mut serving = 0;

    let mut seed: u64 = 0x2545_f491_4f6c_dd1d ^ kills as u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    let mut taking_over = Duration::ZERO;
    for round in 0..kills {
        // The request dies with the server; its answer is not awaited.
        let trigger = tokio::spawn(
            reqwest::Client::new()
                .post(format!("{server_url}/sync/trigger"))
                .bearer_auth(DEV_KEY)
                .header("content-type", "application/json")
                .body(contacts_trigger().to_string())
                .send(),
        );
        tokio::time::sleep(Duration::from_millis(50 + next() % 400)).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let killed = Instant::now();
        trigger.abort();
        let requested = upstream.highest.load(Ordering::SeqCst);

        server_url = standby.serving(Duration::from_secs(60));
        taking_over = taking_over.max(killed.elapsed());
        let ids = stored_ids(&Client::at(&server_url, DEV_KEY)).await;
        assert_acknowledged_kept(&ids, requested, round);
        // The killed server's data directory (its component cache warm)
        // makes the next standby.
        let next_standby =
            Watched::start(&data[serving], &upstream.providers, &master, &standby_args);
        Watched::line_after(
            &next_standby.stderr,
            "this one answers 503 on ",
            Duration::from_secs(60),
        );
        server = std::mem::replace(&mut standby, next_standby);
        serving = 1 - serving;
    }
    println!(
        "postgres failover: {kills} kills in {:.1}s, each taken over within {:.2}s; the sync reached page {}",
        started.elapsed().as_secs_f64(),
        taking_over.as_secs_f64(),
        upstream.highest.load(Ordering::SeqCst)
    );
    assert!(
        upstream.highest.load(Ordering::SeqCst) > 0,
        "the kills all came before the first batchSave"
    );
}
