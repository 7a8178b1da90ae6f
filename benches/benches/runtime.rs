//! The runtime's hot paths, with the loops inside the guest where it matters:
//!
//! - `instantiate_run/rust_noop`: a fresh store, instantiation from the
//!   cached component and one call of a Rust action that does nothing.
//! - `host_call/track_deletes`: one guest→host call through the import
//!   path (the guest loops `iters` times in a single execution).
//! - `batch_save/1000x1KiB`: one batchSave of 1,000 records of ~1 KiB built
//!   in the guest, into the in-memory store.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use sluice_runtime::connection::ConnectionStore as _;
use sluice_runtime::exec::SyncRun;
use sluice_tests::{Harness, MockResponse, guests, runtime, script};

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn harness(rt: &tokio::runtime::Runtime) -> Harness {
    let mut h = rt.block_on(Harness::simple(|_| MockResponse::json(200, &json!({}))));
    // Metering stays on, as in production.
    h.limits().fuel = Some(u64::MAX / 2);
    h
}

fn instantiate_run(c: &mut Criterion) {
    let rt = tokio();
    let h = harness(&rt);
    let noop = script(guests::ACTION_NOOP);
    let services = h.services();
    let mut group = c.benchmark_group("instantiate_run");
    group.bench_function("rust_noop", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let exec = h.execution("noop", sluice_runtime::Call::Action { input: None });
                    let report = runtime().execute(&noop, exec, services.clone()).await;
                    assert!(report.outcome.is_ok());
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn host_call(c: &mut Criterion) {
    let rt = tokio();
    let h = harness(&rt);
    let calls = script(guests::SYNC_HOST_CALLS);
    let services = h.services();
    let run = |n: u64| -> Duration {
        rt.block_on(
            h.connections
                .set_metadata("mock-int", "c1", json!({ "n": n })),
        )
        .unwrap();
        let exec = h.execution("calls", sluice_runtime::Call::Sync);
        let start = Instant::now();
        let report = rt.block_on(runtime().execute(&calls, exec, services.clone()));
        let elapsed = start.elapsed();
        assert!(report.outcome.is_ok(), "{:?}", report.outcome);
        elapsed
    };
    // What one execution costs without calls, subtracted from each sample.
    let floor = (0..20).map(|_| run(0)).min().unwrap_or_default();
    let mut group = c.benchmark_group("host_call");
    group.bench_function("track_deletes", |b| {
        b.iter_custom(|iters| run(iters).saturating_sub(floor))
    });
    group.finish();
}

fn batch_save(c: &mut Criterion) {
    let rt = tokio();
    let h = harness(&rt);
    let saver = script(guests::SYNC_BATCH_SAVE);
    let services = h.services();
    let mut group = c.benchmark_group("batch_save");
    group.throughput(Throughput::Elements(1000));
    group.sample_size(20);
    group.bench_function("1000x1KiB", |b| {
        b.iter_custom(|iters| {
            rt.block_on(h.connections.set_metadata(
                "mock-int",
                "c1",
                json!({ "batches": iters, "count": 1000, "size": 1024 }),
            ))
            .unwrap();
            let mut exec = h.execution("save", sluice_runtime::Call::Sync);
            exec.sync = SyncRun::default();
            let start = Instant::now();
            let report = rt.block_on(runtime().execute(&saver, exec, services.clone()));
            let elapsed = start.elapsed();
            assert!(report.outcome.is_ok(), "{:?}", report.outcome);
            elapsed
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! { name = benches; config = config(); targets = instantiate_run, host_call, batch_save }
criterion_main!(benches);
