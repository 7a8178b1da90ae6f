//! Connection, metadata, environment variables, triggerAction, logs, ActionError.

use std::sync::Arc;

use serde_json::json;
use sluice_runtime::ExecError;
use sluice_runtime::connection::ConnectionStore as _;
use sluice_runtime::exec::LogSource;
use sluice_tests::{Harness, MockResponse, guests, output, script};

async fn harness() -> Harness {
    let mut h = Harness::new(
        |req| MockResponse::json(200, &json!({"path": req.path})),
        "mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: {base}\n",
        json!({"type": "OAUTH2", "access_token": "at-1", "refresh_token": "rt-1", "raw": {"refresh_token": "rt-1", "scope": "read"}}),
    )
    .await;
    h.environment.variables = vec![("REGION".into(), "eu".into())];
    h.environment.webhook_base_url = Some("https://hooks.example/webhook/env-1".into());
    h
}

#[tokio::test]
async fn metadata_set_and_update_persist_and_the_connection_hides_refresh_tokens() {
    let h = harness().await;
    h.connections
        .set_metadata("mock-int", "c1", json!({"a": 1, "nested": {"x": 1}}))
        .await
        .unwrap();
    let out = output(
        &h.action(
            guests::ACTION_FEATURES,
            json!({"set_metadata": {"b": 2, "nested": {"x": 1}}, "update_metadata": {"nested": {"y": 2}, "c": 3}}),
        )
        .await,
    );
    assert_eq!(out["before"], json!({"a": 1, "nested": {"x": 1}}));
    assert_eq!(
        out["after"],
        json!({"b": 2, "nested": {"y": 2}, "c": 3}),
        "set replaces, update merges shallowly"
    );
    assert_eq!(
        h.connections.get("mock-int", "c1").await.unwrap().metadata,
        out["after"]
    );
    let creds = &out["connection"]["credentials"];
    assert_eq!(creds["access_token"], "at-1");
    assert!(creds.get("refresh_token").is_none());
    assert!(creds["raw"].get("refresh_token").is_none());
    assert_eq!(out["env"], json!([["REGION", "eu"]]));
    assert_eq!(
        out["webhook_url"],
        "https://hooks.example/webhook/env-1/mock-int"
    );
    assert_eq!(out["info"]["provider"], "mock");
    assert_eq!(out["info"]["environment"], "test");

    // An input of `{}` (which the original passes on as no input) fits a
    // Rust input struct whose fields are all optional.
    let out = output(&h.action(guests::ACTION_FEATURES, json!({})).await);
    assert_eq!(out["before"], out["after"], "{out}");
}

#[tokio::test]
async fn invalid_metadata_is_refused_and_loses_nothing() {
    let h = harness().await;
    h.connections
        .set_metadata("mock-int", "c1", json!({"keep": true}))
        .await
        .unwrap();
    let report = h
        .action(guests::ACTION_FEATURES, json!({"set_metadata": [1, 2]}))
        .await;
    let Err(ExecError::Script(f)) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(f.error_type, "invalid_metadata");
    assert_eq!(
        h.connections.get("mock-int", "c1").await.unwrap().metadata,
        json!({"keep": true})
    );
}

#[tokio::test]
async fn trigger_action_runs_another_action_and_returns_its_output() {
    let h = harness().await;
    h.scripts
        .insert("mock-int", "fetch-path", script(guests::ACTION_PROXY));
    let report = h
        .action(
            guests::ACTION_FEATURES,
            json!({"trigger": ["mock-int", "c1", "fetch-path", {"endpoint": "/nested"}]}),
        )
        .await;
    let out = output(&report);
    assert_eq!(out["triggered"]["data"], json!({"path": "/nested"}));
    // What the triggered action logged is in the caller's log, marked.
    let nested: Vec<&str> = report
        .logs
        .iter()
        .map(|l| l.message.as_str())
        .filter(|m| m.starts_with("[action fetch-path] "))
        .collect();
    assert!(!nested.is_empty(), "{:?}", report.logs);

    let report = h
        .action(
            guests::ACTION_FEATURES,
            json!({"trigger": ["mock-int", "c1", "nope", {}]}),
        )
        .await;
    let Err(ExecError::Script(f)) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(f.error_type, "unknown_action");

    // An ActionError of the triggered action that the caller lets through
    // fails the caller with that ActionError's payload, not wrapped.
    h.scripts
        .insert("mock-int", "charge", script(guests::ACTION_MISBEHAVE));
    let report = h
        .action(
            guests::ACTION_FEATURES,
            json!({"trigger": ["mock-int", "c1", "charge", {"mode": "action-error"}]}),
        )
        .await;
    let Err(ExecError::Script(f)) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(
        (f.error_type.as_str(), f.status, &f.payload),
        (
            "action_script_runtime_error",
            500,
            &json!({"message": "card declined", "code": 402})
        ),
        "{}",
        f.message
    );

    // A connection that does not exist: refused before the action runs
    // (`charge` would have failed with its ActionError, as above).
    let report = h
        .action(
            guests::ACTION_FEATURES,
            json!({"trigger": ["mock-int", "nobody", "charge", {"mode": "action-error"}]}),
        )
        .await;
    let Err(ExecError::Script(f)) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(f.error_type, "unknown_connection", "{}", f.message);
}

#[tokio::test]
async fn trigger_action_nesting_is_bounded() {
    let h = Arc::new(harness().await);
    // An action that triggers itself, forever.
    h.scripts
        .insert("mock-int", "again", script(guests::ACTION_FEATURES));
    let report = h
        .action(guests::ACTION_FEATURES, json!({"trigger": ["mock-int", "c1", "again", {"trigger": ["mock-int", "c1", "again", {"trigger": ["mock-int", "c1", "again", {"trigger": ["mock-int", "c1", "again", {"trigger": ["mock-int", "c1", "again", {}]}]}]}]}]}))
        .await;
    let Err(ExecError::Script(f)) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(
        f.message
            .contains("triggerAction may nest at most 4 levels"),
        "{}",
        f.message
    );
}

#[tokio::test]
async fn action_error_reaches_the_caller_with_its_payload() {
    let h = harness().await;
    let report = h
        .action(guests::ACTION_MISBEHAVE, json!({"mode": "action-error"}))
        .await;
    let Err(ExecError::Script(f)) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(f.error_type, "action_script_runtime_error");
    assert_eq!(f.status, 500);
    assert_eq!(f.payload, json!({"message": "card declined", "code": 402}));
}

#[tokio::test]
async fn stdout_stderr_and_log_calls_become_logs() {
    let h = harness().await;
    let report = h
        .action(guests::ACTION_MISBEHAVE, json!({"mode": "print"}))
        .await;
    output(&report);
    let user: Vec<_> = report
        .logs
        .iter()
        .filter(|l| l.source == LogSource::User)
        .map(|l| (format!("{:?}", l.level), l.message.clone(), l.meta.clone()))
        .collect();
    assert!(
        user.contains(&("Warn".into(), "with meta".into(), Some(json!({"k": 1})))),
        "{user:?}"
    );
    assert!(
        user.contains(&("Info".into(), "to stdout".into(), None)),
        "{user:?}"
    );
    assert!(
        user.contains(&("Error".into(), "to stderr".into(), None)),
        "{user:?}"
    );
    // In the order the script wrote them (printed lines came after every
    // log call).
    let order: Vec<&str> = user.iter().map(|(_, m, _)| m.as_str()).collect();
    assert_eq!(order, ["to stdout", "to stderr", "with meta"], "{user:?}");
}

#[tokio::test]
async fn http_logs_never_show_credentials() {
    let h = Harness::new(
        |_| MockResponse::json(200, &json!({})),
        "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: {base}\n    query:\n      key: ${apiKey}\n",
        json!({"type": "API_KEY", "apiKey": "super-secret-key"}),
    )
    .await;
    let report = h
        .action(guests::ACTION_PROXY, json!({"endpoint": "/x"}))
        .await;
    output(&report);
    let http: Vec<_> = report
        .logs
        .iter()
        .filter(|l| l.message.starts_with("GET "))
        .collect();
    assert_eq!(http.len(), 1);
    assert!(
        !http[0].message.contains("super-secret-key"),
        "{}",
        http[0].message
    );
    assert!(http[0].message.contains("key=***"), "{}", http[0].message);
}

/// An upstream error body that echoes the connection's token: the failure
/// as the logs and the history keep it (its message, payload and upstream
/// response) shows `***` instead; the app that called gets the payload as
/// the upstream sent it, as from the original.
#[tokio::test]
async fn a_logged_failure_does_not_carry_the_connections_token() {
    let h = Harness::simple(|_| {
        MockResponse::json(500, &json!({"error": "internal: token tok-123 rejected"}))
    })
    .await;
    let report = h
        .action(guests::ACTION_PROXY, json!({"endpoint": "/echo"}))
        .await;
    let Err(e) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(
        e.to_failure().payload,
        json!({"error": "internal: token tok-123 rejected"})
    );
    let logged = report.logged_error().unwrap();
    let shown = format!("{logged} {:?}", logged.to_failure());
    assert!(shown.contains("***"), "{shown}");
    assert!(!shown.contains("tok-123"), "{shown}");
}

/// A triggered action's failure quoting its connection's token, passed on
/// by its caller (which made no request of its own): redacted where the
/// caller's failure is logged.
#[tokio::test]
async fn a_triggered_actions_secret_is_redacted_in_its_callers_logged_failure() {
    let h = Harness::simple(|_| {
        MockResponse::json(500, &json!({"error": "internal: token tok-123 rejected"}))
    })
    .await;
    h.scripts
        .insert("mock-int", "fetch-path", script(guests::ACTION_PROXY));
    let report = h
        .action(
            guests::ACTION_FEATURES,
            json!({"trigger": ["mock-int", "c1", "fetch-path", {"endpoint": "/echo"}]}),
        )
        .await;
    let logged = report
        .logged_error()
        .unwrap_or_else(|| panic!("{:?}", report.outcome));
    let shown = format!("{logged} {:?}", logged.to_failure());
    assert!(!shown.contains("tok-123"), "{shown}");
    let raw = format!("{:?}", report.outcome);
    assert!(
        raw.contains("tok-123"),
        "the caller's failure quotes it: {raw}"
    );
}

/// Locks are the environment's: an execution holds a key against every
/// other (a nested action included) until it releases it, its time to live
/// runs out or it ends, however it ends.
#[tokio::test]
async fn a_lock_is_held_by_one_execution_until_released_lapsed_or_ended() {
    let mut h = Harness::new(
        |req| {
            let answer = MockResponse::json(200, &json!({"open": req.path == "/later"}));
            match req.path.as_str() {
                "/later" => MockResponse {
                    delay: Some(std::time::Duration::from_millis(50)),
                    ..answer
                },
                "/broken" => MockResponse::json(500, &json!({"error": "down"})),
                _ => answer,
            }
        },
        "mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: {base}\n",
        json!({"type": "OAUTH2", "access_token": "at-1"}),
    )
    .await;
    // The harness runs its actions as `test-action`: the nested runs find
    // the same script under that name.
    h.scripts
        .insert("mock-int", "test-action", script(guests::ACTION_LOCK));
    let long = 600_000;
    let out = output(
        &h.action(
            guests::ACTION_LOCK,
            json!({"steps": [
                {"acquire": "k", "ttl_ms": long},
                {"acquire": "k", "ttl_ms": long},
                {"nested": {"steps": [
                    {"acquire": "k", "ttl_ms": long},
                    {"release": "k"},
                    {"acquire": "n", "ttl_ms": long},
                ]}},
                {"acquire": "n", "ttl_ms": long},
                {"acquire": "short", "ttl_ms": 1},
                {"wait_open": "/later"},
                {"nested": {"steps": [{"acquire": "short", "ttl_ms": long}]}},
                {"release": "short"},
                {"release": "k"},
                {"release": "k"},
                {"acquire": "", "ttl_ms": long},
                {"acquire": "x".repeat(256), "ttl_ms": long},
                {"acquire": "x", "ttl_ms": 0},
                {"acquire": "kept", "ttl_ms": long},
            ]}),
        )
        .await,
    );
    let bad_key = json!({"code": "invalid_lock", "message": "Invalid lock key (must be between 1 and 255 characters)"});
    assert_eq!(
        out,
        json!([
            true,
            true,
            // The nested run cannot take its caller's key, nor release it;
            // its own key is released when it ends.
            [false, false, true],
            true,
            true,
            1,
            // `short` had lapsed: the nested run took it (and released it
            // by ending), so it is not its first taker's to release.
            [true],
            false,
            true,
            false,
            bad_key,
            bad_key,
            {"code": "invalid_lock", "message": "Invalid lock TTL (must be greater than 0)"},
            true,
        ])
    );
    // `kept` and `n` were released when the execution ended.
    assert!(h.locks.is_empty(), "{:?}", h.locks);
    let out = output(
        &h.action(
            guests::ACTION_LOCK,
            json!({"steps": [
                {"acquire": "kept", "ttl_ms": long},
                {"nested": {"steps": [{"acquire": "kept", "ttl_ms": long}]}},
            ]}),
        )
        .await,
    );
    assert_eq!(out, json!([true, [false]]));

    // A failed execution's locks go with it.
    let report = h
        .action(
            guests::ACTION_LOCK,
            json!({"steps": [{"acquire": "f", "ttl_ms": long}, {"wait_open": "/broken"}]}),
        )
        .await;
    assert!(report.outcome.is_err(), "{:?}", report.outcome);
    assert!(h.locks.is_empty(), "{:?}", h.locks);
    // And a timed-out one's (it waits for a gate that never opens).
    h.limits().timeouts.action = std::time::Duration::from_millis(300);
    let report = h
        .action(
            guests::ACTION_LOCK,
            json!({"steps": [{"acquire": "t", "ttl_ms": long}, {"wait_open": "/never"}]}),
        )
        .await;
    assert!(
        matches!(report.outcome, Err(ExecError::Timeout { .. })),
        "{:?}",
        report.outcome
    );
    assert!(h.locks.is_empty(), "{:?}", h.locks);
}
