//! Limits a script meets through its host calls: a deadline that holds,
//! and a thread that is given up, while the guest calls the host in a
//! loop; and the JSON a call may make the host parse.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_runtime::exec::SyncRun;
use sluice_runtime::{Call, ExecError, Limits, RuntimeConfig};
use sluice_tests::{Harness, MockRequest, MockResponse, guests, output};

fn ok(_: &MockRequest) -> MockResponse {
    MockResponse::json(200, &json!({"ok": true}))
}

/// How long a test below waits for what it runs before it fails: a guest
/// that never gives its thread up would otherwise hang the test with it.
/// Not a measure of anything: what is asserted is how the run ended.
const HANG: Duration = Duration::from_secs(120);

/// What `make`'s future gives, run on a single-threaded runtime of its own
/// on a thread of its own; `None` when it has not ended within [`HANG`]
/// (the thread is then left behind, spinning).
fn on_own_thread<F>(make: impl FnOnce() -> F + Send + 'static) -> Option<F::Output>
where
    F: Future,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = tx.send(rt.block_on(make()));
    });
    rx.recv_timeout(HANG).ok()
}

/// A guest that calls the host in a loop (a megabyte to log each time,
/// hardly an instruction of its own) ends at its deadline with the
/// deadline's error, with the default fuel, with fuel not metered
/// (`fuel: null`), and in a runtime that meters no fuel. Charging the
/// host's work used to start a fresh yield interval at every call, so
/// the guest never yielded: with the default fuel it ran until its fuel
/// was gone (~45 s), with none it ran for good.
#[test]
fn a_guest_calling_the_host_in_a_loop_ends_at_its_deadline() {
    let default = Limits::default().fuel;
    for (fuel, metered) in [(default, true), (None, true), (default, false)] {
        let outcome = on_own_thread(move || async move {
            let mut h = Harness::simple(ok).await;
            h.limits().fuel = fuel;
            h.limits().timeouts.action = Duration::from_secs(1);
            let input = json!({"mode": "host-spin"}).to_string();
            let exec = h.execution("host-spin", Call::Action { input: Some(input) });
            if metered {
                let script = sluice_tests::script(guests::ACTION_MISBEHAVE);
                sluice_tests::runtime()
                    .execute(&script, exec, h.services())
                    .await
                    .outcome
            } else {
                let mut config: RuntimeConfig = sluice_tests::runtime().config().clone();
                config.meter_fuel = false;
                config.max_concurrent = 2;
                let unmetered = sluice_runtime::Runtime::new(config).unwrap();
                let script = unmetered
                    .load_file(std::path::Path::new(guests::ACTION_MISBEHAVE))
                    .unwrap();
                unmetered.execute(&script, exec, h.services()).await.outcome
            }
        });
        let case = format!("fuel {fuel:?}, metered runtime: {metered}");
        match outcome {
            None => panic!("{case}: still running {HANG:?} after its 1 s deadline"),
            Some(Err(e @ ExecError::Timeout { .. })) => {
                assert_eq!(e.to_string(), "timed out after 1s", "{case}");
                assert_eq!(e.to_failure().error_type, "script_timeout", "{case}");
            }
            Some(other) => panic!("{case}: expected the timeout, got {other:?}"),
        }
    }
}

/// A guest looping on an import the host does not charge for (the
/// environment's variables, one of 64 MiB: ~20 ms of the host's time a
/// call, a few hundred fuel units of the guest's) ends at its deadline,
/// with the default fuel and with fuel not metered. The pacer used to
/// count fuel only and look at the deadline only at charged calls: the
/// guest would have yielded after tens of thousands of calls, minutes
/// past its deadline.
#[test]
fn a_guest_looping_on_an_uncharged_import_ends_at_its_deadline() {
    for fuel in [Limits::default().fuel, None] {
        let outcome = on_own_thread(move || async move {
            let mut h = Harness::simple(ok).await;
            h.limits().fuel = fuel;
            h.limits().timeouts.action = Duration::from_secs(1);
            h.environment.variables = vec![("BIG".into(), "x".repeat(64 << 20))];
            h.action(guests::ACTION_MISBEHAVE, json!({"mode": "env-spin"}))
                .await
                .outcome
        });
        let case = format!("fuel {fuel:?}");
        match outcome {
            None => panic!("{case}: still running {HANG:?} after its 1 s deadline"),
            Some(Err(e @ ExecError::Timeout { .. })) => {
                assert_eq!(e.to_string(), "timed out after 1s", "{case}");
            }
            Some(other) => panic!("{case}: expected the timeout, got {other:?}"),
        }
    }
}

/// The `host-spin` guest gives its thread up as it goes: another execution on
/// the one thread completes meanwhile, and the loop is cancelled by
/// dropping it (as a deleted connection's executions are), with neither
/// fuel nor a deadline to end it.
#[test]
fn a_guest_calling_the_host_in_a_loop_shares_its_thread_and_can_be_cancelled() {
    let ended = on_own_thread(|| async {
        let mut h = Harness::simple(ok).await;
        h.limits().fuel = None;
        let h = Arc::new(h);
        let spinner = {
            let h = h.clone();
            tokio::spawn(async move {
                h.action(guests::ACTION_MISBEHAVE, json!({"mode": "host-spin"}))
                    .await
            })
        };
        // The loop starts, and this goes on only once it yields.
        tokio::task::yield_now().await;
        let other = h
            .action(guests::ACTION_PROXY, json!({"endpoint": "/x"}))
            .await;
        let running = !spinner.is_finished();
        spinner.abort();
        let cancelled = spinner.await.err().is_some_and(|e| e.is_cancelled());
        (output(&other)["status"].clone(), running, cancelled)
    });
    let Some((status, running, cancelled)) = ended else {
        panic!("the other execution did not complete within {HANG:?}: the loop held the thread")
    };
    assert_eq!(status, 200);
    assert!(
        running,
        "the loop ended before the other execution completed"
    );
    assert!(cancelled, "the loop was not cancelled");
}

fn script_failure(
    outcome: &Result<Option<Value>, ExecError>,
) -> &sluice_runtime::exec::ScriptFailure {
    match outcome {
        Err(ExecError::Script(f)) => f,
        other => panic!("expected a script failure, got {other:?}"),
    }
}

/// A dense page: `{"items": [0, 0, …]}` of 20,000 items (~40 KB).
fn dense_page(req: &MockRequest) -> MockResponse {
    if req.path == "/dense" {
        MockResponse::json(200, &json!({ "items": vec![0; 20_000] }))
    } else {
        MockResponse::json(200, &json!({ "items": [] }))
    }
}

/// `paginate`'s config and params are held to the payload limit before
/// they are parsed (they were not, and the first paginator was always
/// allowed), and a page of more values than its bound is refused before
/// it is parsed.
#[tokio::test]
async fn a_paginated_requests_json_and_its_pages_are_bounded() {
    let mut h = Harness::simple(dense_page).await;
    h.limits().max_payload_bytes = 16 << 10;
    let config = || json!({"type": "cursor", "cursor_name_in_request": "cursor", "cursor_path_in_response": "next", "response_path": "items"});
    let big = "x".repeat(20_000);

    let mut padded = config();
    padded["pad"] = json!(big);
    for input in [
        json!({"endpoint": "/items", "config": padded}),
        json!({"endpoint": "/items", "config": config(), "params": {"q": big}}),
    ] {
        let report = h.action(guests::ACTION_PAGINATE, input).await;
        let f = script_failure(&report.outcome);
        assert_eq!(f.error_type, "payload_too_large", "{}", f.message);
        assert!(
            f.message.contains("the paginated request")
                && f.message.contains("over the limit of 16384 bytes"),
            "{}",
            f.message
        );
    }
    // Within the limit, the same request is sent.
    let out = output(
        &h.action(
            guests::ACTION_PAGINATE,
            json!({"endpoint": "/items", "config": config(), "params": {"q": "x"}}),
        )
        .await,
    );
    assert_eq!(out, json!({"pages": []}));

    // 64 KiB of response: at most 8,192 values a page.
    h.limits().max_response_bytes = 64 << 10;
    let report = h
        .action(
            guests::ACTION_PAGINATE,
            json!({"endpoint": "/dense", "config": config()}),
        )
        .await;
    let f = script_failure(&report.outcome);
    assert_eq!(f.error_type, "response_too_large", "{}", f.message);
    assert!(
        f.message.contains("more than 8192 JSON values"),
        "{}",
        f.message
    );
    h.limits().max_response_bytes = 1 << 20;
    let out = output(
        &h.action(
            guests::ACTION_PAGINATE,
            json!({"endpoint": "/dense", "config": config()}),
        )
        .await,
    );
    assert_eq!(out["pages"][0].as_array().map(Vec::len), Some(20_000));
}

/// A triggered action's input is held to the payload limit before the
/// action runs (and parses it).
#[tokio::test]
async fn a_triggered_actions_input_is_bounded() {
    let mut h = Harness::simple(ok).await;
    h.limits().max_payload_bytes = 16 << 10;
    h.scripts.insert(
        "mock-int",
        "print",
        sluice_tests::script(guests::ACTION_MISBEHAVE),
    );
    let trigger = |pad: usize| json!({"trigger": ["mock-int", "c1", "print", {"mode": "print", "pad": "x".repeat(pad)}]});
    let report = h.action(guests::ACTION_FEATURES, trigger(20_000)).await;
    let f = script_failure(&report.outcome);
    assert_eq!(f.error_type, "payload_too_large", "{}", f.message);
    assert!(
        f.message.contains("the triggerAction input is"),
        "{}",
        f.message
    );
    let out = output(&h.action(guests::ACTION_FEATURES, trigger(1_000)).await);
    assert_eq!(out["triggered"], "printed");
}

fn sync_run() -> SyncRun {
    SyncRun {
        models: Some(vec!["Ticket".into()]),
        ..SyncRun::default()
    }
}

/// A webhook handler's answer is bounded as an action's output is, before
/// it is parsed.
#[tokio::test]
async fn a_webhook_handlers_answer_is_bounded() {
    let h = Harness::simple(ok).await;
    let max = sluice_runtime::exec::MAX_ACTION_OUTPUT_BYTES;
    let report = h
        .webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "pad": max}),
        )
        .await;
    let f = script_failure(&report.outcome);
    assert_eq!(f.error_type, "script_output_too_large", "{}", f.message);
    assert!(f.message.contains("more than 10 MiB"), "{}", f.message);
    let out = output(
        &h.webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "pad": 1000}),
        )
        .await,
    );
    assert_eq!(out["pad"].as_str().map(str::len), Some(1000));
}

/// One record of many small values (`[0,0,…]`, which parsed takes ~40
/// times its text) is refused by its count of values, however few
/// records the batch has; a record as large in bytes but of few values
/// is saved. A batch of more values than the bound, none of its
/// 1,000-record writes past it, is saved whole (it was refused), parsed
/// a write at a time, and checked whole before anything is written; a
/// write's records past the bound are refused, naming them.
#[tokio::test]
async fn a_batch_of_too_many_json_values_is_refused_before_it_is_parsed() {
    let mut h = Harness::simple(ok).await;
    h.limits().max_payload_bytes = 64 << 10;
    let report = h
        .webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "save": [{"id": "dense", "a": vec![0; 20_000]}]}),
        )
        .await;
    let f = script_failure(&report.outcome);
    assert_eq!(f.error_type, "payload_too_large", "{}", f.message);
    assert!(
        f.message
            .contains("batchSave: record 0 holds more than 8192 JSON values"),
        "{}",
        f.message
    );

    // 2,000 records of 5 values: 10,000 in all, 5,000 a write.
    let dense = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": i.to_string(), "a": [0, 0]}))
            .collect()
    };
    let stored = |h: &Harness| h.records.all(&h.conn(), "Ticket").len();
    let mut broken = dense(2_000);
    broken[1_500] = json!(7);
    let report = h
        .webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "save": broken}),
        )
        .await;
    let f = script_failure(&report.outcome);
    assert_eq!(f.error_type, "invalid_sync_record", "{}", f.message);
    assert!(
        f.message
            .contains("record at index 1500 is not a JSON object"),
        "{}",
        f.message
    );
    assert_eq!(stored(&h), 0, "written before the batch was checked");
    output(
        &h.webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "save": dense(2_000)}),
        )
        .await,
    );
    assert_eq!(stored(&h), 2_000);
    // 1,100 records of 9 values: 9,000 in the first write.
    let wide: Vec<Value> = (0..1_100)
        .map(|i| json!({"id": format!("w{i}"), "a": [0, 0, 0, 0, 0, 0]}))
        .collect();
    let report = h
        .webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "save": wide}),
        )
        .await;
    let f = script_failure(&report.outcome);
    assert_eq!(f.error_type, "payload_too_large", "{}", f.message);
    assert!(
        f.message.contains(
            "batchSave: records 0 to 999, which are written together, hold more than 8192 JSON values"
        ),
        "{}",
        f.message
    );
    assert_eq!(stored(&h), 2_000);
    output(
        &h.webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "save": [{"id": "wide", "a": "x".repeat(40_000)}]}),
        )
        .await,
    );
}
