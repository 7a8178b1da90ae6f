//! Rough throughput of the store on sled (and on the in-memory backend, for
//! the store's own share): batchSave of 1 KiB records in chunks of 1,000,
//! changed and unchanged, and `GET /records` pages of 100 at any depth.
//!
//! `cargo run --release -p sluice-store-sled --example throughput [records]
//! [memory|sled|both]` (default 100,000, both). Prints numbers; asserts nothing about time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sluice_runtime::records::{
    self as rt, ConnectionRef, Incoming, Merging, Position, RecordStore, WriteContext, WriteKind,
};
use sluice_store::{Backend, EnvStore, MasterKey, MemoryBackend, RecordsQuery, Store};
use sluice_store_sled::SledBackend;

fn record(i: usize, version: u32) -> Map<String, Value> {
    let r = json!({
        "id": format!("rec-{i:08}"),
        "title": format!("Issue number {i}"),
        "state": "open",
        "version": version,
        "labels": ["bug", "p1"],
        "author": {"login": "someone", "id": i},
        "body": "lorem ipsum dolor sit amet ".repeat(34),
    });
    r.as_object().cloned().unwrap()
}

fn chunks(n: usize, version: u32) -> Vec<Vec<Incoming>> {
    (0..n)
        .step_by(rt::CHUNK_SIZE)
        .map(|start| {
            let records = (start..(start + rt::CHUNK_SIZE).min(n))
                .map(|i| record(i, version))
                .collect();
            rt::prepare_chunk(records, 0).unwrap().0
        })
        .collect()
}

async fn save_all(
    env: &EnvStore,
    conn: &ConnectionRef,
    chunks: Vec<Vec<Incoming>>,
    job: u64,
) -> (Duration, rt::Changes) {
    let ctx = WriteContext {
        sync_id: Some("sync".into()),
        job_id: Some(job),
        job_run: true,
        max_record_bytes: None,
    };
    let mut total = rt::Changes::default();
    let start = Instant::now();
    for chunk in chunks {
        let c = env
            .write(
                WriteKind::Save,
                conn,
                "Issue",
                chunk,
                &ctx,
                &mut Merging::Override,
            )
            .await
            .unwrap();
        total.add(c);
    }
    (start.elapsed(), total)
}

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{:>9.0}/s ({:.2} s)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64()
    )
}

async fn run(name: &str, backend: Arc<dyn Backend>, n: usize) {
    println!("== {name}: {n} records of ~1 KiB");
    let (store, _) = Store::open(backend, MasterKey::generate(), &[("dev".into(), None)])
        .await
        .unwrap();
    let env = store.environment("dev").unwrap();
    let conn = ConnectionRef {
        provider_config_key: "github".into(),
        connection_id: "c1".into(),
    };
    let size = serde_json::to_vec(&record(1, 1)).unwrap().len();
    let t = Instant::now();
    let first = chunks(n, 1);
    println!(
        "record JSON {size} bytes; building + hashing the chunks (runtime's share) {}",
        rate(n, t.elapsed())
    );

    let (d, c) = save_all(&env, &conn, first, 1).await;
    assert_eq!(c.added as usize, n);
    println!("batchSave new        {}", rate(n, d));
    let (d, c) = save_all(&env, &conn, chunks(n, 1), 2).await;
    assert_eq!(c.unchanged as usize, n);
    println!("batchSave unchanged  {}", rate(n, d));
    let (d, c) = save_all(&env, &conn, chunks(n, 2), 3).await;
    assert_eq!(c.updated as usize, n);
    println!("batchSave changed    {}", rate(n, d));

    // Every position, to start pages at any depth.
    let mut positions: Vec<Position> = Vec::with_capacity(n);
    let mut q = RecordsQuery {
        limit: 10_000,
        ..Default::default()
    };
    loop {
        let page = env.records_page(&conn, "Issue", &q).await.unwrap();
        positions.extend(page.records.iter().map(|r| r.position()));
        match page.next {
            Some(next) => q.after = Some(next),
            None => break,
        }
    }
    assert_eq!(positions.len(), n);

    for tasks in [1usize, 2] {
        let per_task = 2_000;
        let start = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let env = env.clone();
            let conn = conn.clone();
            let positions = positions.clone();
            handles.push(tokio::spawn(async move {
                // A fixed stride walks cursors all over the records.
                let mut i = t * 7_919;
                for _ in 0..per_task {
                    i = (i + 7_919) % (positions.len() - 100);
                    let q = RecordsQuery {
                        after: Some(positions[i].clone()),
                        limit: 100,
                        ..Default::default()
                    };
                    let page = env.records_page_raw(&conn, "Issue", &q).await.unwrap();
                    assert_eq!(page.records.len(), 100);
                    // What the server sends: the records as JSON views.
                    let mut body = b"{\"records\":[".to_vec();
                    for (i, r) in page.records.iter().enumerate() {
                        if i > 0 {
                            body.push(b',');
                        }
                        r.write_view(&mut body).unwrap();
                    }
                    body.extend_from_slice(b"]}");
                    std::hint::black_box(body);
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        println!(
            "records_page_raw of 100 at any depth, {tasks} task(s), + response JSON: {}",
            rate(per_task * tasks, start.elapsed())
        );
    }
    let start = Instant::now();
    for i in 0..2_000 {
        let q = RecordsQuery {
            after: Some(positions[(i * 7_919) % (positions.len() - 100)].clone()),
            limit: 100,
            ..Default::default()
        };
        std::hint::black_box(env.records_page(&conn, "Issue", &q).await.unwrap());
    }
    println!(
        "records_page (JSON decoded, stamps read) of 100, 1 task:       {}",
        rate(2_000, start.elapsed())
    );

    let start = Instant::now();
    let stale = env.delete_stale(&conn, "Issue", "sync", 4).await.unwrap();
    assert_eq!(stale as usize, n);
    println!("delete_stale         {}", rate(n, start.elapsed()));
    let start = Instant::now();
    env.clear_records(&conn, "Issue").await.unwrap();
    println!("clear_records        {}", rate(n, start.elapsed()));

    let conns = 10_000;
    let start = Instant::now();
    for i in 0..conns {
        let c = sluice_runtime::connection::Connection {
            connection_id: format!("conn-{i:05}"),
            provider_config_key: "github".into(),
            provider: "github".into(),
            credentials: serde_json::from_value(
                json!({"type": "OAUTH2", "access_token": format!("tok-{i}")}),
            )
            .unwrap(),
            connection_config: Map::new(),
            metadata: json!({"i": i}),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            end_user: serde_json::Value::Null,
            tags: Default::default(),
            webhook_url_override: None,
            token_host_from_browser: false,
        };
        env.put_connection(&c).await.unwrap();
    }
    println!(
        "put_connection (one durable write each) {}",
        rate(conns, start.elapsed())
    );
    let start = Instant::now();
    let listed = env.connections(Some("github")).await.unwrap();
    assert_eq!(listed.len(), conns);
    println!(
        "connections(..) of {conns}: {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |a| a.parse().unwrap());
    let which = std::env::args().nth(2).unwrap_or_else(|| "both".into());
    if which != "sled" {
        run("memory", Arc::new(MemoryBackend::new()), n).await;
    }
    if which != "memory" {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledBackend::open(&dir.path().join("db")).unwrap();
        run("sled", Arc::new(sled), n).await;
    }
}
