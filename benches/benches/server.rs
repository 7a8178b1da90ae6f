//! The server under load: a real `sluice serve` process (this bench's own
//! executable re-run as the `sluice` command line, on 127.0.0.1:0, sled in
//! a temp directory, or redb with `SLUICE_STORE=redb`, or a new schema of
//! the PostgreSQL server `SLUICE_TEST_POSTGRES` names with
//! `SLUICE_STORE=postgres`) driven over loopback by HTTP clients in this process,
//! bounded in requests and time, printing medians and p99 beside the
//! targets of `../shared/PERF.md`. The two processes share the machine's
//! cores, as a load generator on the same host does.
//!
//! - `POST /action/trigger` of a Rust and a TypeScript action that each
//!   make one request to a loopback mock upstream;
//! - durable batchSave of 1 KiB records in batches of 1,000 (a Rust sync
//!   saving 100,000 records: new, unchanged, changed);
//! - `GET /records`, pages of 100 of those 100,000, at every depth;
//! - resident memory of the server process with 10,000 connections stored.
//!
//! `SLUICE_BENCH_REQUESTS` sets the requests per latency measurement;
//! `SLUICE_BENCH_ONLY` a comma list of the parts to run (`http`, `actions`,
//! `save`, `records`, `memory`; `records` runs `save` first).

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The allocator the `sluice` binary uses (this executable is the server).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use serde_json::{Value, json};
use sluice_project::deploy::{ComponentEntry, Manifest, ScriptEntry, sha256_hex};
use sluice_runtime::ScriptKind;
use sluice_store::MasterKey;
use sluice_tests::{MockResponse, MockServer, compile_options, guests, repo_root, runtime};

const KEY: &str = "bench-dev-key-0000";
const RECORDS: usize = 100_000;

const NANGO_YAML: &str = "
integrations:
  bench:
    syncs:
      save-rust:
        runs: every day
        auto_start: false
        output: Item
        endpoint: GET /items
    actions:
      ping:
        output: PingResult
        endpoint: POST /ping
      rust-ping:
        endpoint: POST /rust-ping
models:
  Item:
    id: string
  PingResult:
    ok: boolean
";

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .header("connection-id", "c1")
            .header("provider-config-key", "bench");
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The status only: the body is read, not parsed (a load generator
    /// that parsed 100 KiB pages would measure its own JSON parser).
    async fn status(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .header("connection-id", "c1")
            .header("provider-config-key", "bench");
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let text = if status == 200 {
            String::new()
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        (status, text)
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    rate: f64,
    count: usize,
}

/// `concurrency` clients send `make(i)` requests until `total` were sent or
/// `limit` passed; every answer must be 200.
async fn load(
    c: &Client,
    concurrency: usize,
    total: usize,
    limit: Duration,
    make: Arc<dyn Fn(usize) -> (String, String, Option<Value>) + Send + Sync>,
) -> Stats {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (c, next, make) = (c.clone(), next.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total || started.elapsed() > limit {
                    return times;
                }
                let (method, path, body) = make(i);
                let t = Instant::now();
                let (status, out) = c.status(&method, &path, body.as_ref()).await;
                times.push(t.elapsed());
                assert!((200..300).contains(&status), "{path}: {status} {out}");
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let at = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Stats {
        p50: at(0.5),
        p99: at(0.99),
        rate: all.len() as f64 / elapsed.as_secs_f64(),
        count: all.len(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

async fn upload(c: &Client, bytes: &[u8]) -> String {
    let sha = sha256_hex(bytes);
    let resp = c
        .http
        .put(format!("{}/sluice/components/{sha}", c.base))
        .bearer_auth(KEY)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    sha
}

async fn run_sync(c: &Client, metadata: Value) -> (Duration, Value) {
    let (status, body) = c
        .send(
            "POST",
            "/connection/metadata",
            Some(&json!({"connection_id": "c1", "provider_config_key": "bench", "metadata": metadata})),
        )
        .await;
    // 201 as the original's (it was 200 before the API matched it).
    assert_eq!(status, 201, "{body}");
    let t = Instant::now();
    let (status, body) = c
        .send(
            "POST",
            "/sync/trigger",
            Some(&json!({"syncs": ["save-rust"], "provider_config_key": "bench", "connection_id": "c1", "wait": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"][0]["success"], true, "{body}");
    (t.elapsed(), body["runs"][0]["results"]["Item"].clone())
}

/// The server process: this executable run as `sluice serve`.
struct ServerProcess {
    child: std::process::Child,
    url: String,
}

impl ServerProcess {
    /// A new server; with `SLUICE_STORE=postgres`, on a new schema of the
    /// PostgreSQL server `SLUICE_TEST_POSTGRES` names (one server per store).
    async fn start(data: &std::path::Path, providers: &std::path::Path) -> ServerProcess {
        use std::io::BufRead;
        let database = if std::env::var("SLUICE_STORE").as_deref() == Ok("postgres") {
            let url = sluice_tests::postgres_schema()
                .await
                .expect("SLUICE_STORE=postgres needs SLUICE_TEST_POSTGRES");
            vec!["--database-url".to_string(), url]
        } else {
            Vec::new()
        };
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(database)
            .arg("--providers")
            .arg(providers)
            .env(SERVE_CHILD, "1")
            .env("SLUICE_MASTER_KEY", MasterKey::generate().to_base64())
            .env("NANGO_SECRET_KEY_DEV", KEY)
            .env("NANGO_SECRET_KEY_PROD", "bench-prod-key-0000")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the server exited before listening")
                .unwrap();
            if let Some(url) = line.strip_prefix("sluice is listening on ") {
                break url.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        ServerProcess { child, url }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Set in the child process: run the command line instead of the bench.
const SERVE_CHILD: &str = "SLUICE_BENCH_SERVE_CHILD";

fn main() {
    if std::env::var_os(SERVE_CHILD).is_some() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let args = std::env::args_os();
        let code = rt.block_on(sluice::cli::run(
            args,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        ));
        std::process::exit(code);
    }
    let requests: usize = std::env::var("SLUICE_BENCH_REQUESTS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3000);
    let only: Option<Vec<String>> = std::env::var("SLUICE_BENCH_ONLY")
        .ok()
        .map(|o| o.split(',').map(|p| p.trim().to_string()).collect());
    let part = move |name: &str| {
        only.as_ref().is_none_or(|o| {
            o.iter().any(|p| p == name) || (name == "save" && o.iter().any(|p| p == "records"))
        })
    };
    println!(
        "store: {}",
        std::env::var("SLUICE_STORE").unwrap_or_else(|_| "sled".into())
    );
    // The TypeScript action, compiled once (cached between runs).
    let project = sluice_project::compile::compile(
        &compile_options(&repo_root().join("benches/ts-bench"), "ts-bench"),
        &runtime(),
        &mut std::io::stderr(),
    )
    .unwrap_or_else(|e| panic!("compile benches/ts-bench: {e}"));
    let (ts_manifest, ts_files) = project.manifest().unwrap();
    let ts_component = ts_manifest
        .components
        .iter()
        .find(|c| c.bundle)
        .unwrap()
        .clone();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mock = MockServer::start(Arc::new(|_req: &sluice_tests::MockRequest| {
            MockResponse::json(200, &json!({"ok": true}))
        }))
        .await
        .unwrap();
        let data = tempfile::tempdir().unwrap();
        let providers = data.path().join("providers.yaml");
        std::fs::write(
            &providers,
            format!("mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: {}\n", mock.url()),
        )
        .unwrap();
        let server = ServerProcess::start(&data.path().join("data"), &providers).await;
        let c = Client {
            http: reqwest::Client::new(),
            base: server.url.clone(),
        };

        // Deploy: the TS bundle (its `ping`), a Rust action, a Rust sync.
        let ts_bytes = std::fs::read(&ts_files[&ts_component.sha256]).unwrap();
        let ts_sha = upload(&c, &ts_bytes).await;
        let rust_ping = upload(&c, &std::fs::read(guests::ACTION_PROXY).unwrap()).await;
        let rust_save = upload(&c, &std::fs::read(guests::SYNC_BATCH_SAVE).unwrap()).await;
        let entry = |sha: String, bundle: bool, name: &str, kind| ComponentEntry {
            sha256: sha,
            size: 0,
            bundle,
            scripts: vec![ScriptEntry {
                integration: "bench".into(),
                name: name.into(),
                kind,
            }],
        };
        let manifest = Manifest {
            nango_yaml: NANGO_YAML.into(),
            nango_json: None,
            dir_name: None,
            components: vec![
                entry(ts_sha, true, "ping", ScriptKind::Action),
                entry(rust_ping, false, "rust-ping", ScriptKind::Action),
                entry(rust_save, false, "save-rust", ScriptKind::Sync),
            ],
            version: None,
            scope: None,
            script_versions: Default::default(),
        };
        let t = Instant::now();
        let (status, body) = c
            .send("POST", "/sluice/deploy", Some(&serde_json::to_value(&manifest).unwrap()))
            .await;
        assert_eq!(status, 200, "{body}");
        eprintln!("deployed in {:.1}s (compiling what the cache lacks)", t.elapsed().as_secs_f64());
        c.send("POST", "/integrations", Some(&json!({"unique_key": "bench", "provider": "mock"})))
            .await;
        c.send(
            "POST",
            "/connection",
            Some(&json!({"provider_config_key": "bench", "connection_id": "c1", "access_token": "t"})),
        )
        .await;

        let mut rows: Vec<(String, String, String)> = Vec::new();
        // The HTTP stack alone, and with the key checked and a store read.
        for (label, path) in [
            ("GET /health (no key, no store)", "/health"),
            ("GET /integrations (key, one store scan)", "/integrations"),
        ] {
            if !part("http") {
                break;
            }
            let make: Arc<dyn Fn(usize) -> (String, String, Option<Value>) + Send + Sync> =
                Arc::new(move |_| ("GET".into(), path.into(), None));
            let s = load(&c, 1, requests, Duration::from_secs(30), make).await;
            rows.push((
                format!("{label} (1 client, {} req)", s.count),
                format!("p50 {} · p99 {} · {:.0} req/s", ms(s.p50), ms(s.p99), s.rate),
                "".into(),
            ));
        }
        let action = |name: &'static str, input: Value| -> Arc<dyn Fn(usize) -> (String, String, Option<Value>) + Send + Sync> {
            let body = json!({"action_name": name, "input": input});
            Arc::new(move |_| ("POST".into(), "/action/trigger".into(), Some(body.clone())))
        };
        for (label, name, input, target) in [
            ("action trigger, Rust action, 1 upstream call", "rust-ping", json!({"endpoint": "/ping"}), "p50 ≤ 0.5 ms"),
            ("action trigger, TS action, 1 upstream call", "ping", Value::Null, "p50 ≤ 2 ms, p99 ≤ 10 ms"),
        ] {
            if !part("actions") {
                break;
            }
            load(&c, 1, 100, Duration::from_secs(30), action(name, input.clone())).await;
            let s = load(&c, 1, requests, Duration::from_secs(60), action(name, input.clone())).await;
            rows.push((
                format!("{label} (1 client, {} req)", s.count),
                format!("p50 {} · p99 {} · {:.0} req/s", ms(s.p50), ms(s.p99), s.rate),
                target.into(),
            ));
            let s = load(&c, 4, requests, Duration::from_secs(60), action(name, input)).await;
            rows.push((
                format!("{label} (4 clients, {} req)", s.count),
                format!("p50 {} · p99 {} · {:.0} req/s", ms(s.p50), ms(s.p99), s.rate),
                "".into(),
            ));
        }

        // Durable batchSave: 100 batches of 1,000 records of 1 KiB.
        let batches = RECORDS / 1000;
        for (label, size, target) in [
            ("batchSave 1 KiB × 1,000, new", 1024, ""),
            ("batchSave 1 KiB × 1,000, unchanged", 1024, "≥ 250,000 records/s"),
            ("batchSave 1 KiB × 1,000, changed", 1025, "≥ 50,000 records/s"),
        ] {
            if !part("save") {
                break;
            }
            let (took, results) =
                run_sync(&c, json!({"batches": batches, "count": 1000, "size": size})).await;
            rows.push((
                format!("{label} ({RECORDS} records, one sync run)"),
                format!("{:.0} records/s · {results}", RECORDS as f64 / took.as_secs_f64()),
                target.into(),
            ));
        }

        // GET /records at every depth: first collect every page's cursor.
        if part("records") {
        let mut cursors: Vec<Option<String>> = vec![None];
        loop {
            let path = match cursors.last().unwrap() {
                Some(cur) => format!("/records?model=Item&limit=100&cursor={cur}"),
                None => "/records?model=Item&limit=100".into(),
            };
            let (_, page) = c.send("GET", &path, None).await;
            match page["next_cursor"].as_str() {
                Some(n) => cursors.push(Some(n.to_string())),
                None => break,
            }
        }
        let pages = cursors.len();
        let cursors = Arc::new(cursors);
        let make = {
            let cursors = cursors.clone();
            Arc::new(move |i: usize| {
                // Stride through the pages so first, middle and last are all read.
                let cur = &cursors[(i * 7919) % cursors.len()];
                let path = match cur {
                    Some(cur) => format!("/records?model=Item&limit=100&cursor={cur}"),
                    None => "/records?model=Item&limit=100".into(),
                };
                ("GET".to_string(), path, None)
            }) as Arc<dyn Fn(usize) -> (String, String, Option<Value>) + Send + Sync>
        };
        load(&c, 4, 500, Duration::from_secs(10), make.clone()).await;
        eprintln!("measuring GET /records (server pid {})", server.child.id());
        let s = load(&c, 4, 50_000, Duration::from_secs(10), make).await;
        rows.push((
            format!("GET /records, pages of 100 of {RECORDS} at every depth ({pages} pages, 4 clients, {} req)", s.count),
            format!("{:.0} req/s · p50 {} · p99 {}", s.rate, ms(s.p50), ms(s.p99)),
            "≥ 5,000 req/s, p99 ≤ 10 ms".into(),
        ));
        }

        // Memory of the server process with 10,000 connections stored.
        // A fresh server process: its memory is what 10,000 connections
        // cost, not the page cache the records parts above warmed.
        if part("memory") {
        let fresh = ServerProcess::start(&data.path().join("memory"), &providers).await;
        let m = Client {
            http: reqwest::Client::new(),
            base: fresh.url.clone(),
        };
        m.send("POST", "/integrations", Some(&json!({"unique_key": "bench", "provider": "mock"})))
            .await;
        let t = Instant::now();
        let made = load(
            &m,
            4,
            10_000,
            Duration::from_secs(120),
            Arc::new(|i| {
                (
                    "POST".into(),
                    "/connection".into(),
                    Some(json!({"provider_config_key": "bench", "connection_id": format!("conn-{i}"), "access_token": "t"})),
                )
            }),
        )
        .await;
        let took = t.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = rss_mib(fresh.child.id());
        rows.push((
            format!("{} connections created, then idle", made.count),
            format!(
                "server process RSS {idle:.1} MiB · {:.0} creations/s",
                made.count as f64 / took.as_secs_f64()
            ),
            "≤ 64 MiB RSS".into(),
        ));
        }

        println!("\n| measurement | result | target |\n|---|---|---|");
        for (a, b, t) in rows {
            println!("| {a} | {b} | {t} |");
        }
        drop(server);
    });
}
