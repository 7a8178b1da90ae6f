//! The sandbox's limits: fuel, deadlines, memory, broken components.

use std::time::Duration;

use serde_json::json;
use sluice_runtime::{Call, ExecError, LoadError, Runtime, RuntimeConfig};
use sluice_tests::{Harness, MockResponse, guests, output, runtime};

fn ok(_: &sluice_tests::MockRequest) -> MockResponse {
    MockResponse::json(200, &json!({"ok": true}))
}

#[tokio::test]
async fn an_endless_loop_runs_out_of_fuel() {
    let mut h = Harness::simple(ok).await;
    h.limits().fuel = Some(20_000_000);
    let report = h
        .action(guests::ACTION_MISBEHAVE, json!({"mode": "spin"}))
        .await;
    match &report.outcome {
        Err(e @ ExecError::OutOfFuel { units }) => {
            assert_eq!(*units, 20_000_000);
            assert_eq!(
                e.to_string(),
                "used up its CPU budget: out of fuel after 20000000 units (the `fuel` limit)"
            );
        }
        other => panic!("expected out of fuel, got {other:?}"),
    }
    assert!(report.fuel_consumed >= 20_000_000 - 1000);
}

/// A script that makes the host work (a megabyte to copy and check per
/// call, hardly an instruction of its own) spends its fuel on that work:
/// it runs out after a call or two, not after thousands of calls.
#[tokio::test]
async fn the_hosts_work_for_a_script_is_counted_against_its_fuel() {
    let mut h = Harness::simple(ok).await;
    h.limits().fuel = Some(20_000_000);
    let report = h
        .action(guests::ACTION_MISBEHAVE, json!({"mode": "host-spin"}))
        .await;
    match &report.outcome {
        Err(ExecError::OutOfFuel { units }) => assert_eq!(*units, 20_000_000),
        other => panic!("expected out of fuel, got {other:?}"),
    }
    let calls = report
        .logs
        .iter()
        .filter(|l| l.message.starts_with("xxxx"))
        .count();
    assert!((1..=2).contains(&calls), "{calls} calls");
    assert!(report.fuel_consumed >= 20_000_000 - 1000);
}

/// A Rust script's stack overflow traps out of bounds; the error says
/// what commonly causes that and where, in one line, without the engine's
/// tens of backtrace frames.
#[tokio::test]
async fn a_stack_overflow_is_named_in_one_line() {
    let h = Harness::simple(ok).await;
    let report = h
        .action(guests::ACTION_MISBEHAVE, json!({"mode": "recurse"}))
        .await;
    let message = match &report.outcome {
        Err(e @ ExecError::Trap { .. }) => e.to_string(),
        other => panic!("expected a trap, got {other:?}"),
    };
    assert!(
        message.starts_with("script trapped: wasm trap: out of bounds memory access (a Rust script whose stack overflowed"),
        "{message}"
    );
    // Rust's names demangled, without their hash.
    assert!(
        message.contains(" in action_misbehave::deeper"),
        "{message}"
    );
    assert!(!message.contains("_ZN"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

/// A panic is said as Rust says it, without the `RUST_BACKTRACE` note (a
/// script has no environment to set it in).
#[tokio::test]
async fn a_rust_panic_is_logged_without_a_note_the_script_cannot_act_on() {
    let h = Harness::simple(ok).await;
    let report = h
        .action(guests::ACTION_MISBEHAVE, json!({"mode": "panic"}))
        .await;
    match &report.outcome {
        Err(e @ ExecError::Panic { .. }) => assert_eq!(
            e.to_string(),
            "script panicked at src/bin/action_misbehave.rs:31:20: the script gave up"
        ),
        other => panic!("expected a panic, got {other:?}"),
    }
    let lines: Vec<&str> = report.logs.iter().map(|l| l.message.as_str()).collect();
    assert!(
        lines.iter().any(|m| m.contains("the script gave up")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|m| m.contains("RUST_BACKTRACE")),
        "{lines:?}"
    );
}

/// An action given no input whose type needs one is told what the type
/// needs, not about a `null` it was never sent.
#[tokio::test]
async fn a_rust_action_without_the_input_it_needs_is_told_what_is_missing() {
    let h = Harness::simple(ok).await;
    let report = h.action(guests::ACTION_MISBEHAVE, json!({})).await;
    let message = match &report.outcome {
        Err(e) => e.to_failure().message,
        other => panic!("expected a failure, got {other:?}"),
    };
    assert!(
        message.contains("given no input") && message.contains("missing field `mode`"),
        "{message}"
    );
    assert!(!message.contains("null"), "{message}");
}

/// One allocation too large for the allocator to ask the host for (it
/// gives up before growing the memory, so no limit is hit): the
/// allocator's own words and the limit, not an `unreachable` trap in its
/// frames.
#[tokio::test]
async fn a_rust_allocation_past_the_limit_is_named_with_the_limit() {
    let h = Harness::simple(ok).await;
    let report = h
        .action(guests::ACTION_MISBEHAVE, json!({"mode": "huge"}))
        .await;
    let message = match &report.outcome {
        Err(e) => e.to_string(),
        other => panic!("expected a failure, got {other:?}"),
    };
    assert_eq!(
        message,
        "script trapped: memory allocation of 2147483647 bytes failed (the script's memory limit is 256 MiB)"
    );
}

#[tokio::test]
async fn a_triggered_action_spends_its_callers_fuel_not_a_fresh_budget() {
    let mut h = Harness::simple(ok).await;
    h.limits().fuel = Some(20_000_000);
    let conn = h.conn();
    h.scripts.insert(
        &conn.provider_config_key,
        "spin",
        sluice_tests::script(guests::ACTION_MISBEHAVE),
    );
    let report = h
        .action(
            guests::ACTION_FEATURES,
            json!({"trigger": [conn.provider_config_key, conn.connection_id, "spin", {"mode": "spin"}]}),
        )
        .await;
    // The nested loop burns what the caller had left; the caller has
    // nothing left to go on with: one budget for the whole chain.
    match &report.outcome {
        Err(ExecError::OutOfFuel { units }) => assert_eq!(*units, 20_000_000),
        other => panic!("expected the caller out of fuel, got {other:?}"),
    }
    assert!(
        (20_000_000 - 1000..=20_000_000).contains(&report.fuel_consumed),
        "{}",
        report.fuel_consumed
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_endless_loop_hits_the_deadline_while_another_execution_completes() {
    let mut h = Harness::simple(ok).await;
    h.limits().fuel = None;
    h.limits().timeouts.action = Duration::from_secs(2);
    let h = std::sync::Arc::new(h);
    let spinner = {
        let h = h.clone();
        tokio::spawn(async move {
            h.action(guests::ACTION_MISBEHAVE, json!({"mode": "spin"}))
                .await
        })
    };
    // Let the loop start; it yields every few million fuel units, so this
    // returns.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let other = h
        .action(guests::ACTION_PROXY, json!({"endpoint": "/x"}))
        .await;
    assert_eq!(output(&other)["status"], 200);
    let still_running = !spinner.is_finished();
    let report = spinner.await.unwrap();
    assert!(
        still_running,
        "the loop ended before the other execution completed: {:?}",
        report.outcome
    );
    match &report.outcome {
        Err(e @ ExecError::Timeout { .. }) => assert_eq!(e.to_string(), "timed out after 2s"),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn the_deadline_holds_while_the_guest_waits_in_a_host_call() {
    let mut h = Harness::simple(|req| {
        if req.path == "/slow" {
            MockResponse::json(200, &json!({})).delayed(Duration::from_secs(30))
        } else {
            MockResponse::json(200, &json!({}))
        }
    })
    .await;
    h.limits().timeouts.action = Duration::from_millis(300);
    let report = h
        .action(guests::ACTION_MISBEHAVE, json!({"mode": "wait"}))
        .await;
    assert!(
        matches!(report.outcome, Err(ExecError::Timeout { after }) if after == Duration::from_millis(300)),
        "{:?}",
        report.outcome
    );
    assert_eq!(
        h.mock.requests().len(),
        1,
        "the request was sent before the deadline"
    );
}

#[tokio::test]
async fn logs_are_kept_up_to_their_memory_budget_and_the_rest_counted() {
    let mut h = Harness::simple(ok).await;
    h.limits().max_log_bytes = 8 << 20;
    let report = h
        .action(guests::ACTION_MISBEHAVE, json!({"mode": "log-flood"}))
        .await;
    assert_eq!(output(&report), json!("flooded"));
    let kept = report
        .logs
        .iter()
        .filter(|l| l.message.starts_with("line "))
        .count();
    assert!((1..10).contains(&kept), "{kept} of the big lines kept");
    assert!(
        report.logs_dropped >= 990,
        "{} dropped",
        report.logs_dropped
    );
}

#[tokio::test]
async fn unbounded_allocation_stops_at_the_memory_cap() {
    let mut h = Harness::simple(ok).await;
    h.limits().memory_bytes = 32 << 20;
    let report = h
        .action(guests::ACTION_MISBEHAVE, json!({"mode": "hog"}))
        .await;
    match &report.outcome {
        Err(e @ ExecError::MemoryLimit { limit }) => {
            assert_eq!(*limit, 32 << 20);
            assert_eq!(e.to_string(), "memory limit of 32 MiB exceeded");
        }
        other => panic!("expected the memory limit, got {other:?}"),
    }
    // The host keeps serving.
    let again = h
        .action(guests::ACTION_MISBEHAVE, json!({"mode": "print"}))
        .await;
    assert_eq!(output(&again), json!("printed"));
}

/// Executions together hold at most the runtime's memory budget, one
/// environment three quarters of it (each was bounded alone, so a few
/// dozen nested or concurrent ones could take the machine's memory); what
/// an execution held is given back when it ends.
#[tokio::test]
async fn the_memory_all_executions_hold_is_bounded_too() {
    let mut h = Harness::simple(ok).await;
    h.limits().memory_bytes = 256 << 20;
    let mut config = RuntimeConfig::new(guests::CACHE_DIR);
    config.max_concurrent = 4;
    config.max_memory_bytes = 512 << 20;
    config.memory_budget_bytes = 64 << 20;
    let rt = Runtime::new(config).unwrap();
    let script = rt
        .load_file(std::path::Path::new(guests::ACTION_MISBEHAVE))
        .unwrap();
    let run = |mode: &str| {
        h.execution(
            "test-action",
            Call::Action {
                input: Some(json!({ "mode": mode }).to_string()),
            },
        )
    };
    let report = rt.execute(&script, run("hog"), h.services()).await;
    match &report.outcome {
        Err(e @ ExecError::MemoryBudget { budget }) => {
            assert_eq!(*budget, 64 << 20);
            assert!(e.to_string().contains("in use by other executions"), "{e}");
            assert_eq!(e.to_failure().error_type, "script_internal_error");
        }
        other => panic!("expected the memory budget, got {other:?}"),
    }
    for _ in 0..3 {
        let again = rt.execute(&script, run("print"), h.services()).await;
        assert_eq!(output(&again), json!("printed"), "{:?}", again.outcome);
    }
}

#[tokio::test]
async fn a_panic_is_an_error_naming_its_message_and_place_also_in_the_logs() {
    let h = Harness::simple(ok).await;
    let report = h
        .action(guests::ACTION_MISBEHAVE, json!({"mode": "panic"}))
        .await;
    // What the caller is told: the panic's place and message, not a wasm
    // backtrace.
    let Err(e @ ExecError::Panic { .. }) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    let told = e.to_string();
    assert!(
        told.starts_with("script panicked at src/bin/action_misbehave.rs:")
            && told.ends_with(": the script gave up"),
        "{told}"
    );
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.message.contains("the script gave up")),
        "{:#?}",
        report.logs
    );
}

/// A script whose logs used their budget still says why it failed: the end
/// of its stderr (a panic's message) is kept past the budget.
#[tokio::test]
async fn a_panic_message_is_kept_when_the_logs_are_full() {
    let mut h = Harness::simple(ok).await;
    h.limits().max_log_entries = 0;
    for output_cap in [1 << 20, 10] {
        // With a cap of 10 bytes, the message is past the captured start
        // of stderr: it is in the tail kept past the cap.
        h.limits().max_output_bytes = output_cap;
        let report = h
            .action(guests::ACTION_MISBEHAVE, json!({"mode": "panic"}))
            .await;
        assert!(
            matches!(report.outcome, Err(ExecError::Panic { .. })),
            "{:?}",
            report.outcome
        );
        assert!(
            report
                .logs
                .iter()
                .any(|l| l.message.contains("the script gave up")),
            "cap {output_cap}: {:#?}",
            report.logs
        );
    }
}

#[test]
fn a_corrupt_component_is_rejected_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm at all").unwrap();
    let err = rt.load_file(&garbage).unwrap_err();
    assert!(matches!(err, LoadError::Invalid { .. }), "{err:?}");
    assert!(
        err.to_string().contains(
            "garbage.wasm is not a valid WebAssembly component: it is not WebAssembly (it does not start with the `\\0asm` magic bytes)"
        ),
        "{err}"
    );

    let real = std::fs::read(guests::ACTION_NOOP).unwrap();
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &real[..real.len() / 2]).unwrap();
    let err = rt.load_file(&truncated).unwrap_err();
    assert!(
        err.to_string()
            .contains("truncated.wasm is not a valid WebAssembly component"),
        "{err}"
    );
    // One line, not wasmtime's indented lists.
    assert!(!err.to_string().contains('\n'), "{err}");

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let err = rt.load_file(&core).unwrap_err();
    assert!(
        err.to_string()
            .contains("core WebAssembly module, not a component"),
        "{err}"
    );

    let missing = rt.load_file(&dir.path().join("missing.wasm")).unwrap_err();
    assert!(
        missing.to_string().contains("cannot read component"),
        "{missing}"
    );
}

#[test]
fn a_corrupt_cache_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RuntimeConfig::new(dir.path());
    config.max_concurrent = 2;
    let rt = Runtime::new(config).unwrap();
    let first = rt
        .load_file(std::path::Path::new(guests::ACTION_NOOP))
        .unwrap();
    let cached = rt.cache_path(first.digest());
    assert!(cached.exists(), "the precompiled component is cached");
    let digest = first.digest().to_string();
    // A loaded component's code is mapped from its cache file, which sluice
    // only ever replaces whole (a rename); what corrupts one (a crash, a
    // disk) does so while no process has it loaded.
    drop(first);
    std::fs::write(&cached, b"garbage").unwrap();
    let again = rt
        .load_file(std::path::Path::new(guests::ACTION_NOOP))
        .unwrap();
    assert_eq!(again.digest(), digest);
    assert_ne!(std::fs::read(&cached).unwrap(), b"garbage");
}

#[test]
fn the_component_cache_keeps_the_most_recently_used_within_its_bound() {
    let load = |rt: &Runtime, path: &str| rt.load_file(std::path::Path::new(path)).unwrap();
    let (a, b, c) = (
        guests::ACTION_NOOP,
        guests::ACTION_PROXY,
        guests::SYNC_RECORDS,
    );
    // Each artifact's size, from an unbounded cache.
    let sizes = tempfile::tempdir().unwrap();
    let mut config = RuntimeConfig::new(sizes.path());
    config.max_concurrent = 2;
    let rt = Runtime::new(config).unwrap();
    let len = |rt: &Runtime, path: &str| {
        let script = load(rt, path);
        std::fs::metadata(rt.cache_path(script.digest()))
            .unwrap()
            .len()
    };
    let (len_a, len_b, len_c) = (len(&rt, a), len(&rt, b), len(&rt, c));

    // Room for A and one of B, C. A is used again after B, so B is the least
    // recently used when C arrives.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not an artifact").unwrap();
    let mut config = RuntimeConfig::new(dir.path());
    config.max_concurrent = 2;
    config.cache_max_bytes = len_a + len_b.max(len_c);
    let rt = Runtime::new(config).unwrap();
    let cached = |rt: &Runtime, path: &str| rt.is_precompiled(&std::fs::read(path).unwrap());
    load(&rt, a);
    std::thread::sleep(std::time::Duration::from_millis(20));
    load(&rt, b);
    assert!(cached(&rt, a) && cached(&rt, b), "both fit so far");
    std::thread::sleep(std::time::Duration::from_millis(20));
    load(&rt, a);
    std::thread::sleep(std::time::Duration::from_millis(20));
    load(&rt, c);
    assert!(cached(&rt, a), "A was used recently and is kept");
    assert!(cached(&rt, c), "C was just written and is kept");
    assert!(!cached(&rt, b), "B, the least recently used, is evicted");
    assert!(dir.path().join("notes.txt").exists(), "other files stay");
    // An evicted component still loads: it is compiled again.
    load(&rt, b);
    assert!(cached(&rt, b));

    // Cranelift's function cache is held to a quarter of the bound (it
    // grew without one: gigabytes over many deploys).
    let bound = (len_a + len_b.max(len_c)) / 4;
    let unbounded = dir_bytes(&sizes.path().join("functions"));
    assert!(
        unbounded > bound,
        "the test needs more functions ({unbounded} bytes) than the bound ({bound})"
    );
    let kept = dir_bytes(&dir.path().join("functions"));
    assert!(
        kept <= bound,
        "{kept} bytes of functions kept, bound {bound}"
    );

    // A bound lowered since applies at the next start, not at the next
    // compile: C, the least recently used, goes; B stays.
    drop(rt);
    let mut config = RuntimeConfig::new(dir.path());
    config.max_concurrent = 2;
    config.cache_max_bytes = len_b;
    let rt = Runtime::new(config).unwrap();
    assert!(!cached(&rt, c), "C is evicted at the start");
    assert!(cached(&rt, b), "B, the most recent, is kept");
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn without_fuel_metering_a_busy_loop_still_ends_at_its_deadline() {
    let mut config = sluice_tests::runtime().config().clone();
    config.meter_fuel = false;
    config.max_concurrent = 2;
    let unmetered = sluice_runtime::Runtime::new(config).unwrap();
    let spin = unmetered
        .load_file(std::path::Path::new(guests::ACTION_MISBEHAVE))
        .unwrap();
    let mut h = Harness::simple(ok).await;
    // A budget the runtime does not meter: the deadline ends the loop.
    h.limits().fuel = Some(1_000);
    h.limits().timeouts.action = Duration::from_millis(300);
    let exec = h.execution(
        "spin",
        sluice_runtime::Call::Action {
            input: Some(json!({"mode": "spin"}).to_string()),
        },
    );
    let report = unmetered.execute(&spin, exec, h.services()).await;
    assert!(
        matches!(report.outcome, Err(ExecError::Timeout { .. })),
        "{:?}",
        report.outcome
    );
    assert_eq!(report.fuel_consumed, 0);
}

/// Output that is not JSON (only a component built without an SDK can
/// return it) is refused naming the problem, as the contract says; JSON
/// from the same component is its output.
#[tokio::test]
async fn output_that_is_not_json_is_refused() {
    let h = Harness::simple(ok).await;
    let report = h
        .action(guests::ACTION_RAW_OUTPUT, json!("this is { not json"))
        .await;
    let Err(ExecError::Script(f)) = &report.outcome else {
        panic!("expected a script failure, got {:?}", report.outcome);
    };
    assert_eq!(f.error_type, "script_output_not_json", "{}", f.message);
    assert!(f.message.contains("`this is { not json`"), "{}", f.message);
    let report = h
        .action(guests::ACTION_RAW_OUTPUT, json!(r#"{"ok": true}"#))
        .await;
    assert_eq!(output(&report), json!({"ok": true}));
}
