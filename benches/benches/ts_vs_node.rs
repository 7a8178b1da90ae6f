//! A TypeScript script compiled by sluice (esbuild + componentize-js,
//! precompiled and loaded from the cache) against the same script run the
//! way the original runs it (Node's `vm` module: compile, fresh context,
//! run), side by side in one run. Prints a table of medians.
//!
//!   cargo bench -p sluice-benches --bench ts_vs_node
//!
//! The script (benches/ts-bench) maps three pages of fifty contacts from an
//! async generator, reads the connection's metadata once and logs each page.
//! sluice's number is one execution: a fresh store, instantiation from the
//! `InstancePre` and the first (and only) call, with fuel metering on.
//!
//! For profiling (see ARCHITECTURE.md, "Profiling"):
//! - `SLUICE_BENCH_ONLY=noop|pages` runs one script, without Node;
//!   `SLUICE_BENCH_UNMETERED=1` runs it without fuel metering;
//! - `SLUICE_BENCH_RUNS=N` measures N runs instead of 300;
//! - `SLUICE_BENCH_COMPONENT=path.wasm` runs another build of the bench's
//!   bundle (componentize-js's `debugBuild`, for instance, whose engine keeps
//!   its function names).

use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};
use sluice_runtime::connection::ConnectionStore as _;
use sluice_runtime::exec::SyncRun;
use sluice_runtime::{Call, Execution, Runtime, ScriptKind};
use sluice_tests::{Harness, MockResponse, compile_options, repo_root, runtime, ts_sdk};

const RUNS: usize = 300;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let runs: usize = std::env::var("SLUICE_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(RUNS);
    let dir = repo_root().join("benches").join("ts-bench");
    let project = sluice::compile::compile(
        &compile_options(&dir, "ts-bench"),
        &runtime(),
        &mut std::io::stderr(),
    )
    .unwrap_or_else(|e| panic!("compile benches/ts-bench: {e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut h = rt.block_on(Harness::simple(|_| MockResponse::json(200, &json!({}))));
    h.limits().fuel = Some(u64::MAX / 2);
    h.connections
        .set_metadata("mock-int", "c1", json!({"team": "sales"}))
        .unwrap();
    let services = h.services();
    // The same component in a runtime that does not meter fuel.
    let unmetered = {
        let mut config = runtime().config().clone();
        config.meter_fuel = false;
        Runtime::new(config).unwrap_or_else(|e| panic!("runtime: {e}"))
    };
    let component = std::env::var_os("SLUICE_BENCH_COMPONENT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| project.build_dir.join("bench.wasm"));
    let kinds = [
        ("pages".to_string(), ScriptKind::Action),
        ("noop".to_string(), ScriptKind::Action),
    ];
    let load = |r: &Runtime| -> Vec<std::sync::Arc<sluice_runtime::Script>> {
        r.load_bundle_file(&component, &kinds)
            .unwrap_or_else(|e| panic!("load {}: {e}", component.display()))
            .into_iter()
            .map(std::sync::Arc::new)
            .collect()
    };
    let (metered, unmetered) = (
        (runtime(), load(&runtime())),
        (unmetered.clone(), load(&unmetered)),
    );
    let measure = |name: &str, with_fuel: bool, expect: &dyn Fn(&Value) -> bool| {
        let i = kinds
            .iter()
            .position(|(n, _)| n == name)
            .expect("a bench script");
        let (rt_used, scripts) = if with_fuel { &metered } else { &unmetered };
        let script = &scripts[i];
        let run = || {
            let mut exec: Execution = h.execution(name, Call::Action { input: None });
            exec.sync = SyncRun::default();
            let start = Instant::now();
            let report = rt.block_on(rt_used.execute(script, exec, services.clone()));
            let elapsed = start.elapsed().as_secs_f64() * 1e6;
            match &report.outcome {
                Ok(Some(out)) if expect(out) => (elapsed, report.fuel_consumed),
                other => panic!("unexpected outcome {other:?}"),
            }
        };
        for _ in 0..30 {
            run();
        }
        let mut fuel = 0;
        let mut times: Vec<f64> = (0..runs)
            .map(|_| {
                let (t, f) = run();
                fuel = f;
                t
            })
            .collect();
        times.sort_by(f64::total_cmp);
        (times, fuel)
    };
    if let Ok(only) = std::env::var("SLUICE_BENCH_ONLY") {
        let with_fuel = std::env::var_os("SLUICE_BENCH_UNMETERED").is_none();
        let (times, fuel) = measure(&only, with_fuel, &|_| true);
        println!(
            "{only}: median {:.3} ms, p90 {:.3} ms, {fuel} fuel units",
            percentile(&times, 0.5) / 1000.0,
            percentile(&times, 0.9) / 1000.0
        );
        return;
    }
    let (times, fuel) = measure("pages", true, &|out| out["count"] == 150);
    let (free, _) = measure("pages", false, &|out| out["count"] == 150);
    let (floor, floor_fuel) = measure("noop", true, &|out| *out == json!(1));

    let node = Command::new("node")
        .arg(repo_root().join("benches").join("node-vm.mjs"))
        .arg(dir.join("bench/actions/pages.ts"))
        .arg(ts_sdk())
        .arg(runs.to_string())
        .output()
        .expect("run node");
    assert!(
        node.status.success(),
        "node-vm.mjs failed: {}",
        String::from_utf8_lossy(&node.stderr)
    );
    let node: Value = serde_json::from_slice(&node.stdout).expect("node-vm.mjs prints JSON");

    let ms = |us: f64| format!("{:.3} ms", us / 1000.0);
    println!();
    println!(
        "| {:<58} | {:>10} | {:>10} |",
        "TS script: 3 pages × 50 contacts, getMetadata, 3 logs", "median", "p90"
    );
    println!("|{:-<60}|{:->12}|{:->12}|", "", "", "");
    println!(
        "| {:<58} | {:>10} | {:>10} |",
        "sluice: fresh instance + first call, cached, fuel on",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.9))
    );
    println!(
        "| {:<58} | {:>10} | {:>10} |",
        "sluice, the same without fuel metering",
        ms(percentile(&free, 0.5)),
        ms(percentile(&free, 0.9))
    );
    println!(
        "| {:<58} | {:>10} | {:>10} |",
        "Node vm: compile + fresh context + run (the original)",
        ms(node["median_us"].as_f64().unwrap_or(f64::NAN)),
        ms(node["p90_us"].as_f64().unwrap_or(f64::NAN))
    );
    println!(
        "| {:<58} | {:>10} | {:>10} |",
        "sluice, a script that does nothing (the floor)",
        ms(percentile(&floor, 0.5)),
        ms(percentile(&floor, 0.9))
    );
    println!();
    println!(
        "{runs} runs each after 30 warm-up runs; fuel units (wasm instructions) per run: \
         {fuel} for the script, {floor_fuel} for the floor."
    );
}
