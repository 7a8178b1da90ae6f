//! A TypeScript script compiled by sluice (esbuild + componentize-js,
//! precompiled and loaded from the cache) against the same script run the
//! way the original runs it (Node's `vm` module: compile, fresh context,
//! run), side by side in one run: the measurements take turns in short
//! blocks, so a machine whose speed drifts affects them alike. Prints a table
//! of medians.
//!
//!   cargo bench -p sluice-benches --bench ts_vs_node
//!
//! The script (benches/ts-bench) maps three pages of fifty contacts from an
//! async generator, reads the connection's metadata once and logs each page.
//! sluice's number is one execution: a fresh store, instantiation from the
//! `InstancePre` and the first (and only) call, with fuel metering on.
//! A script that does nothing runs on both sides too: what each pays to run
//! a script at all (the floor).
//!
//! After the table, the same run measures a TypeScript sync that builds
//! 1,000 records of ~1 KiB and hands them to one `batchSave` (sluice only:
//! the original sends the batch to another service).
//!
//! For profiling (see ARCHITECTURE.md, "Profiling"):
//! - `SLUICE_BENCH_ONLY=noop|pages|save` runs one script, without Node;
//!   `SLUICE_BENCH_UNMETERED=1` runs it without fuel metering;
//! - `SLUICE_BENCH_RUNS=N` measures N runs instead of 300;
//! - `SLUICE_BENCH_COMPONENT=path.wasm` runs another build of the bench's
//!   bundle (componentize-js's `debugBuild`, for instance, whose engine keeps
//!   its function names).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};
use sluice_runtime::connection::ConnectionStore as _;
use sluice_runtime::exec::SyncRun;
use sluice_runtime::{Call, Execution, Runtime, ScriptKind};
use sluice_tests::{Harness, MockResponse, compile_options, repo_root, runtime, ts_sdk};

const RUNS: usize = 300;
const WARM_UP: usize = 30;
/// Consecutive runs of one measurement before the next takes its turn.
const BLOCK: usize = 10;
/// The batchSave sync: records per batch, bytes of filler per record, runs.
const SAVE_COUNT: usize = 1000;
const SAVE_SIZE: usize = 1024;
const SAVE_RUNS: usize = 30;
const SAVE_WARM_UP: usize = 3;

/// `node-vm.mjs`, running one bench script once per request.
struct NodeVm {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl NodeVm {
    /// Starts Node on `script`, whose every run must return `expected`.
    fn start(script: &std::path::Path, expected: &Value) -> Self {
        let mut child = Command::new("node")
            .arg(repo_root().join("benches").join("node-vm.mjs"))
            .arg(script)
            .arg(ts_sdk())
            .arg(expected.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run node");
        let stdin = child.stdin.take().expect("node's stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("node's stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read node-vm.mjs");
        assert_eq!(line.trim(), "ready", "node-vm.mjs did not start");
        NodeVm {
            child,
            stdin,
            stdout,
        }
    }

    /// One run of the script in a fresh `vm` context, in µs as Node timed it.
    fn run(&mut self) -> f64 {
        self.stdin.write_all(b"\n").expect("write to node-vm.mjs");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read node-vm.mjs");
        line.trim()
            .parse()
            .unwrap_or_else(|_| panic!("node-vm.mjs printed {line:?}"))
    }
}

/// Restricts this process, and the processes it starts, to the CPU it runs on.
fn pin_to_current_cpu() {
    // SAFETY: sched_getcpu reads the calling thread's CPU; the set is a
    // zeroed cpu_set_t that CPU_SET fills in before sched_setaffinity reads it.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

impl Drop for NodeVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let runs: usize = std::env::var("SLUICE_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(RUNS);
    let dir = repo_root().join("benches").join("ts-bench");
    let project = sluice_project::compile::compile(
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
    rt.block_on(h.connections.set_metadata(
        "mock-int",
        "c1",
        json!({"team": "sales", "count": SAVE_COUNT, "size": SAVE_SIZE}),
    ))
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
        ("save".to_string(), ScriptKind::Sync),
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
    // One execution of a bench script: its time in µs and the fuel it used.
    let run = |name: &str, with_fuel: bool, expect: &dyn Fn(&Value) -> bool| {
        let i = kinds
            .iter()
            .position(|(n, _)| n == name)
            .expect("a bench script");
        let (rt_used, scripts) = if with_fuel { &metered } else { &unmetered };
        let mut exec: Execution = h.execution(name, Call::Action { input: None });
        exec.sync = SyncRun::default();
        let start = Instant::now();
        let report = rt.block_on(rt_used.execute(&scripts[i], exec, services.clone()));
        let elapsed = start.elapsed().as_secs_f64() * 1e6;
        match &report.outcome {
            Ok(Some(out)) if expect(out) => (elapsed, report.fuel_consumed),
            other => panic!("unexpected outcome {other:?}"),
        }
    };
    // One run of the batchSave sync: its time in µs and the fuel it used.
    let save = || {
        let mut exec: Execution = h.execution("save", Call::Sync);
        exec.sync = SyncRun::default();
        let start = Instant::now();
        let report = rt.block_on(metered.0.execute(&metered.1[2], exec, services.clone()));
        let elapsed = start.elapsed().as_secs_f64() * 1e6;
        assert!(report.outcome.is_ok(), "{:?}", report.outcome);
        (elapsed, report.fuel_consumed)
    };
    if let Ok(only) = std::env::var("SLUICE_BENCH_ONLY") {
        let with_fuel = std::env::var_os("SLUICE_BENCH_UNMETERED").is_none();
        let mut fuel = 0;
        let mut times: Vec<f64> = (0..WARM_UP + runs)
            .map(|_| {
                let (t, f) = if only == "save" {
                    save()
                } else {
                    run(&only, with_fuel, &|_| true)
                };
                fuel = f;
                t
            })
            .skip(WARM_UP)
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{only}: median {:.3} ms, p90 {:.3} ms, {fuel} fuel units",
            percentile(&times, 0.5) / 1000.0,
            percentile(&times, 0.9) / 1000.0
        );
        return;
    }

    // Node runs in another process: keep both on one CPU, since the cores of
    // a shared VM do not run at the same speed.
    pin_to_current_cpu();
    let pages_out = json!({"count": 150, "team": "sales"});
    let mut node = NodeVm::start(&dir.join("bench/actions/pages.ts"), &pages_out);
    let mut node_noop = NodeVm::start(&dir.join("bench/actions/noop.ts"), &json!(1));
    let pages = |out: &Value| *out == pages_out;
    // The five measurements take turns in blocks of `BLOCK` runs, each round
    // starting with the next one, so a machine whose speed drifts affects
    // them alike; the first run of a block, with caches the previous block
    // filled, is not counted.
    let mut measurements: [Box<dyn FnMut() -> (f64, u64) + '_>; 5] = [
        Box::new(|| run("pages", true, &pages)),
        Box::new(|| run("pages", false, &pages)),
        Box::new(|| (node.run(), 0)),
        Box::new(|| run("noop", true, &|out| *out == json!(1))),
        Box::new(|| (node_noop.run(), 0)),
    ];
    let mut times: [Vec<f64>; 5] = Default::default();
    let mut fuel = [0u64; 5];
    for round in 0..(WARM_UP + runs).div_ceil(BLOCK) {
        for k in 0..measurements.len() {
            let m = (round + k) % measurements.len();
            measurements[m]();
            for _ in 0..BLOCK {
                let (t, f) = measurements[m]();
                if round * BLOCK >= WARM_UP && times[m].len() < runs {
                    times[m].push(t);
                    fuel[m] = f;
                }
            }
        }
    }
    drop(measurements);
    for t in &mut times {
        t.sort_by(f64::total_cmp);
    }
    let [times, free, node_times, floor, node_floor] = times;
    let (fuel, floor_fuel) = (fuel[0], fuel[3]);

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
        ms(percentile(&node_times, 0.5)),
        ms(percentile(&node_times, 0.9))
    );
    println!(
        "| {:<58} | {:>10} | {:>10} |",
        "sluice, a script that does nothing (the floor)",
        ms(percentile(&floor, 0.5)),
        ms(percentile(&floor, 0.9))
    );
    println!(
        "| {:<58} | {:>10} | {:>10} |",
        "Node vm, the script that does nothing",
        ms(percentile(&node_floor, 0.5)),
        ms(percentile(&node_floor, 0.9))
    );
    println!();
    println!(
        "{runs} runs each after {WARM_UP} warm-up runs, in interleaved blocks of {BLOCK}; fuel units (wasm \
         instructions) per run: {fuel} for the script, {floor_fuel} for the floor."
    );

    let mut saves: Vec<(f64, u64)> = (0..SAVE_WARM_UP + SAVE_RUNS).map(|_| save()).collect();
    let save_fuel = saves[0].1;
    let mut saves: Vec<f64> = saves.drain(SAVE_WARM_UP..).map(|(t, _)| t).collect();
    saves.sort_by(f64::total_cmp);
    let median = percentile(&saves, 0.5);
    println!();
    println!(
        "TS sync, one batchSave of {SAVE_COUNT} records of ~{SAVE_SIZE} B built in the guest, fresh \
         instance, fuel on: median {}, p90 {} (≈{:.0}k records/s), {save_fuel} fuel units.",
        ms(median),
        ms(percentile(&saves, 0.9)),
        SAVE_COUNT as f64 / median * 1e3
    );
}
