//! TypeScript scripts (tests/ts-project, compiled with esbuild and
//! componentize-js) calling every method of the nango helper.

use std::sync::Arc;

use serde_json::{Value, json};
use sluice_runtime::connection::ConnectionStore as _;
use sluice_runtime::exec::{LogLevel, LogSource, SyncRun};
use sluice_runtime::{Call, ExecError};
use sluice_tests::{Harness, MockRequest, MockResponse, output, ts_script};

/// The upstream the scripts call: `/echo` describes the request, `/items`
/// pages by cursor, anything else is a 404.
fn upstream(req: &MockRequest) -> MockResponse {
    match req.path.as_str() {
        "/echo" => {
            let query: serde_json::Map<String, Value> = req
                .query
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            MockResponse::json(
                200,
                &json!({
                    "method": req.method,
                    "query": query,
                    "authorization": req.header("authorization"),
                    "trace": req.header("x-trace"),
                    "contentType": req.header("content-type"),
                    "accept": req.header("accept"),
                    "body": String::from_utf8_lossy(&req.body),
                }),
            )
        }
        "/moved" => MockResponse::json(302, &json!({}))
            .with_header("location", req.query_param("to").unwrap_or_default()),
        "/offset" => match req.query_param("offset") {
            Some("0") => MockResponse::json(200, &json!({"items": [{"id": "a"}, {"id": "b"}]})),
            Some("2") => MockResponse::json(200, &json!({"items": [{"id": "c"}]})),
            other => MockResponse::json(400, &json!({"error": format!("bad offset {other:?}")})),
        },
        "/items" => match req.query_param("cursor") {
            None => MockResponse::json(
                200,
                &json!({"items": [{"id": "a", "name": " Ada "}, {"id": "b", "name": "Bob"}], "next": "c2"}),
            ),
            Some("c2") => MockResponse::json(
                200,
                &json!({"items": [{"id": "c", "name": "Cy"}], "next": "  "}),
            ),
            Some(other) => {
                MockResponse::json(400, &json!({"error": format!("bad cursor {other}")}))
            }
        },
        _ => MockResponse::json(404, &json!({"error": "no such thing"})),
    }
}

async fn harness() -> Harness {
    let mut h = Harness::new(
        upstream,
        "mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: {base}\n",
        json!({"type": "OAUTH2", "access_token": "tok-ts", "refresh_token": "secret-refresh"}),
    )
    .await;
    h.environment.variables = vec![("REGION".into(), "eu".into())];
    h.environment.webhook_base_url = Some("https://hooks.example/webhook/env-1".into());
    h
}

#[tokio::test]
async fn http_verbs_return_axios_shaped_responses_and_errors() {
    let h = harness().await;
    let report = h.ts_action("http", json!({})).await;
    // A level object alone is the level, as the original pops it.
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.level == LogLevel::Error && l.message == "undefined"),
        "{:?}",
        report.logs
    );
    let out = output(&report);

    let get = &out["get"];
    assert_eq!(get["status"], 200);
    assert_eq!(get["statusText"], "OK");
    assert_eq!(get["contentType"], "application/json");
    assert_eq!(get["data"]["method"], "GET");
    assert_eq!(
        get["data"]["query"],
        json!({"limit": "10", "tags": "a,b", "q": "x y"}),
        "params are String()'d: numbers printed, arrays joined"
    );
    assert_eq!(get["data"]["authorization"], "Bearer tok-ts");
    assert_eq!(get["data"]["trace"], "t (mock)", "a relative import ran");

    // axios's defaults, as the original sends them: its Accept, and a
    // form content type on a POST without a body.
    assert_eq!(get["data"]["accept"], "application/json, text/plain, */*");
    assert_eq!(out["empty"]["method"], "POST");
    assert_eq!(
        out["empty"]["contentType"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(out["post"]["method"], "POST");
    assert_eq!(out["post"]["body"], r#"{"a":1}"#);
    assert_eq!(out["post"]["contentType"], "application/json");
    assert_eq!(out["put"]["method"], "PUT");
    assert_eq!(out["put"]["body"], "raw text");
    assert_eq!(out["put"]["contentType"], "text/plain");
    assert_eq!(out["patch"]["method"], "PATCH");
    assert_eq!(out["patch"]["body"], r#"{"b":2}"#);
    assert_eq!(out["delete"]["method"], "DELETE");
    assert_eq!(out["proxy"]["method"], "POST");
    assert_eq!(out["proxy"]["query"], json!({"raw": "1", "x": "2"}));
    assert!(
        out["text"]
            .as_str()
            .is_some_and(|t| t.contains("\"method\":\"GET\"")),
        "responseType text keeps the body as a string: {}",
        out["text"]
    );

    assert_eq!(
        out["form"]["body"],
        "grant_type=x&a+b=c%26d&nested%5Bk%5D=1&list%5B%5D=1&list%5B%5D=2&ids%5B%5D=3",
        "as axios's toFormData: null and undefined left out, a key's own [] dropped"
    );
    assert_eq!(
        out["form"]["contentType"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        out["form"]["trace"],
        Value::Null,
        "an undefined header was sent"
    );
    assert_eq!(out["searchParams"]["body"], "a=1&b=x+y");
    assert_eq!(
        out["searchParams"]["contentType"],
        "application/x-www-form-urlencoded;charset=utf-8"
    );
    assert_eq!(
        out["onPage"],
        json!(["page:2", "on_page:c2", "page:1", "on_page:undefined"])
    );
    // Offset: `on_page` gets the page's own offset, and none follows the
    // short last page, as the original's.
    assert_eq!(out["offsetPages"], json!(["page:2", "on_page:0", "page:1"]));
    assert_eq!(out["locks"], json!([true, true]), "the owner re-acquires");
    assert_eq!(out["aborted"], false, "abortSignal is there, never aborted");

    let not_found = &out["notFound"];
    assert_eq!(not_found["name"], "AxiosError");
    assert_eq!(not_found["isAxiosError"], true);
    assert_eq!(not_found["status"], 404);
    assert_eq!(not_found["code"], "ERR_BAD_REQUEST");
    assert_eq!(not_found["data"], json!({"error": "no such thing"}));
    assert_eq!(not_found["message"], "Request failed with status code 404");

    let egress = &out["egress"];
    assert_eq!(egress["name"], "SDKError");
    assert_eq!(egress["code"], "egress_denied");
    assert!(
        egress["message"]
            .as_str()
            .is_some_and(|m| m.contains("elsewhere.example")),
        "{egress}"
    );
}

#[tokio::test]
async fn an_uncaught_http_error_is_a_script_http_error_with_the_upstream_response() {
    let h = harness().await;
    let report = h.ts_action("http", json!({"uncaught": true})).await;
    let Err(ExecError::Script(failure)) = &report.outcome else {
        panic!("expected a script failure, got {:?}", report.outcome);
    };
    assert_eq!(failure.error_type, "script_http_error");
    assert_eq!(failure.status, 404);
    assert_eq!(failure.payload, json!({"error": "no such thing"}));
    let upstream = failure
        .upstream_response
        .as_ref()
        .expect("upstream response");
    assert_eq!(upstream["status"], 404);
}

#[tokio::test]
async fn records_methods_pagination_and_the_sync_context() {
    let h = harness().await;
    let last = chrono::DateTime::parse_from_rfc3339("2024-06-01T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let sync = SyncRun {
        last_sync_date: Some(last),
        track_deletes: true,
        models: Some(vec!["Item".into(), "Report".into()]),
        ..SyncRun::default()
    };
    let report = h
        .run(&ts_script("records"), "records", Call::Sync, sync)
        .await;
    output(&report);
    // An unknown strategy is refused, as the original's.
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.message == "merging: Unsupported merging strategy: newest"),
        "{:?}",
        report.logs
    );

    let pages: Vec<Vec<(String, String)>> = h
        .mock
        .requests()
        .iter()
        .filter(|r| r.path == "/items")
        .map(|r| r.query.clone())
        .collect();
    assert_eq!(
        pages,
        vec![
            vec![("limit".to_string(), "2".to_string())],
            vec![
                ("limit".to_string(), "2".to_string()),
                ("cursor".to_string(), "c2".to_string())
            ],
        ],
        "the cursor is followed; a blank one ends the pagination"
    );

    let items = h.records.all(&h.conn(), "Item");
    let by_id = |id: &str| {
        items
            .iter()
            .find(|r| r.external_id == id)
            .unwrap_or_else(|| panic!("no record {id}"))
    };
    assert_eq!(items.len(), 3);
    assert_eq!(by_id("a").json["name"], "renamed", "batchUpdate merged");
    assert_eq!(by_id("b").json["name"], "Bob (mock)");
    assert!(
        by_id("c").deleted_at.is_some(),
        "batchDelete is a soft delete"
    );
    assert!(
        items
            .iter()
            .all(|r| r.json.get("_nango_metadata").is_none()),
        "_nango_metadata is stripped before saving"
    );

    let reports = h.records.all(&h.conn(), "Report");
    let summary = &reports[0].json;
    assert_eq!(summary["saved"], 3);
    assert_eq!(summary["found"], json!(["a"]), "missing ids are absent");
    assert_eq!(summary["firstName"], "renamed");
    assert_eq!(summary["firstAction"], "UPDATED");
    assert_eq!(summary["lastSyncDate"], "2024-06-01T12:00:00.000Z");
    assert_eq!(summary["variant"], "base");
    assert_eq!(summary["trackDeletes"], true);
    assert_eq!(summary["fullName"], "Item");
    assert_eq!(report.changes["Item"].added, 3);
}

#[tokio::test]
async fn a_webhook_handler_saves_and_returns_its_output() {
    let h = harness().await;
    let call = Call::Webhook {
        payload: json!({"id": 7, "name": "Hooked"}).to_string(),
    };
    let report = h
        .run(&ts_script("records"), "records", call, SyncRun::default())
        .await;
    assert_eq!(output(&report), json!({"received": 7}));
    let items = h.records.all(&h.conn(), "Item");
    assert_eq!(
        Value::Object(items[0].json.clone()),
        json!({"id": "7", "name": "Hooked (mock)"})
    );
}

#[tokio::test]
async fn one_batch_save_of_more_records_than_a_host_call_takes_saves_them_all() {
    let h = harness().await;
    let bulk = sluice_runtime::batch::MAX_RECORDS_PER_CALL + 5_000;
    let call = Call::Webhook {
        payload: json!({"id": 8, "name": "bulk", "bulk": bulk}).to_string(),
    };
    let report = h
        .run(&ts_script("records"), "records", call, SyncRun::default())
        .await;
    assert_eq!(output(&report), json!({"received": 8}));
    assert_eq!(report.changes["Item"].added, bulk as u64);
    assert_eq!(h.records.all(&h.conn(), "Item").len(), bulk);
}

#[tokio::test]
async fn text_beyond_ascii_reaches_the_host_and_comes_back_intact() {
    let h = harness().await;
    let text = "Zoë, naïve café — 日本語 🚀 \"quoted\" \\ end";
    let report = h.ts_action("unicode", json!({ "text": text })).await;
    assert_eq!(
        output(&report),
        json!({"input": text, "metadata": text, "json": text, "plain": text, "query": text}),
        "action input and output, metadata, a JSON body, a text body and a query"
    );
    let log = report
        .logs
        .iter()
        .find(|l| l.source == LogSource::User)
        .expect("the script's log");
    assert_eq!(log.message, text);
    assert_eq!(log.meta, Some(json!({ "text": text })));

    let call = Call::Webhook {
        payload: json!({"id": "ü-1", "name": text}).to_string(),
    };
    let report = h
        .run(&ts_script("records"), "records", call, SyncRun::default())
        .await;
    assert_eq!(output(&report), json!({"received": "ü-1"}));
    let items = h.records.all(&h.conn(), "Item");
    assert_eq!(items[0].external_id, "ü-1");
    assert_eq!(items[0].json["name"], format!("{text} (mock)"));
}

#[tokio::test]
async fn get_token_gives_an_oauth1_connections_token_and_secret_as_the_original() {
    let h = Harness::new(
        upstream,
        "mock:\n  auth_mode: OAUTH1\n  proxy:\n    base_url: {base}\n",
        json!({"type": "OAUTH1", "oauth_token": "ot-1", "oauth_token_secret": "ots-1"}),
    )
    .await;
    let out = output(&h.ts_action("connection", json!({})).await);
    assert_eq!(
        out["token"],
        json!({"oAuthToken": "ot-1", "oAuthTokenSecret": "ots-1"}),
        "{out}"
    );
}

#[tokio::test]
async fn connection_metadata_environment_token_and_logs() {
    let h = harness().await;
    h.connections
        .set_metadata("mock-int", "c1", json!({"plan": "free", "region": "eu"}))
        .await
        .unwrap();
    let report = h.ts_action("connection", json!({})).await;
    let out = output(&report);
    assert_eq!(out["connectionId"], "c1");
    assert_eq!(out["providerConfigKey"], "mock-int");
    assert_eq!(out["provider"], "mock");
    assert_eq!(out["environment"], "test");
    assert_eq!(out["credentials"]["access_token"], "tok-ts");
    assert!(out["credentials"].get("refresh_token").is_none());
    assert_eq!(out["before"], json!({"plan": "free", "region": "eu"}));
    assert_eq!(
        out["after"],
        json!({"plan": "pro", "seats": 3}),
        "setMetadata replaces, updateMetadata merges"
    );
    assert_eq!(out["env"], json!([{"name": "REGION", "value": "eu"}]));
    assert_eq!(
        out["webhookUrl"],
        "https://hooks.example/webhook/env-1/mock-int"
    );
    assert_eq!(
        out["token"], "tok-ts",
        "getToken of OAUTH2 is the access token"
    );
    assert_eq!(
        out["flowAttributes"],
        "There is no current sync to get attributes from"
    );
    assert_eq!(
        out["refreshToken"], "secret-refresh",
        "shown when asked for (and empty overrides are none)"
    );

    let user: Vec<(LogLevel, &str, Option<&Value>)> = report
        .logs
        .iter()
        .filter(|l| l.source == LogSource::User)
        .map(|l| (l.level, l.message.as_str(), l.meta.as_ref()))
        .collect();
    assert!(user.contains(&(LogLevel::Info, "plain message", None)));
    assert!(user.contains(&(LogLevel::Warn, "careful", None)));
    assert!(user.contains(&(LogLevel::Error, "with a payload", Some(&json!({"a": 1})))));
    assert!(user.contains(&(LogLevel::Info, r#"{"an":"object"}"#, None)));
    assert!(user.contains(&(LogLevel::Debug, "verbose maps to debug", None)));
    // `setLogger` keeps only the lines at and above its level.
    assert!(
        !user.iter().any(|(_, m, _)| *m == "below the script level"),
        "{user:?}"
    );
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.message.contains("from console.log") && l.level == LogLevel::Info)
    );
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.message.contains("from console.error") && l.level == LogLevel::Error)
    );

    // The environment's NANGO_LOGGER_LEVEL keeps the script's lines at
    // and above it, as the original's.
    let mut h = h;
    h.environment
        .variables
        .push(("NANGO_LOGGER_LEVEL".into(), "warn".into()));
    let report = h.ts_action("connection", json!({})).await;
    let user: Vec<(LogLevel, &str)> = report
        .logs
        .iter()
        .filter(|l| l.source == LogSource::User)
        .map(|l| (l.level, l.message.as_str()))
        .collect();
    assert!(user.contains(&(LogLevel::Warn, "careful")), "{user:?}");
    assert!(
        user.contains(&(LogLevel::Error, "with a payload")),
        "{user:?}"
    );
    assert!(
        !user.contains(&(LogLevel::Info, "plain message"))
            && !user.contains(&(LogLevel::Debug, "verbose maps to debug")),
        "{user:?}"
    );
}

#[tokio::test]
async fn action_errors_reach_the_caller_with_their_payload_and_other_failures_are_normalised() {
    let h = harness().await;
    let failure = |report: sluice_runtime::Report| match report.outcome {
        Err(ExecError::Script(f)) => f,
        other => panic!("expected a script failure, got {other:?}"),
    };

    let f = failure(h.ts_action("fail", json!({"how": "action"})).await);
    assert_eq!(f.error_type, "action_script_runtime_error");
    assert_eq!(
        f.payload,
        json!({"message": "the item is locked", "code": "locked", "retryable": false})
    );
    assert_eq!(f.status, 500);

    let report = h.ts_action("fail", json!({"how": "error"})).await;
    let logs = report.logs.clone();
    let f = failure(report);
    assert_eq!(f.error_type, "script_internal_error");
    // The error as the original answers it; its stack (the build's file
    // names) in the logs only.
    assert_eq!(f.message, "TypeError: something broke");
    assert_eq!(
        f.payload,
        json!({"name": "TypeError", "message": "something broke"})
    );
    assert!(
        logs.iter().any(|l| l.level == LogLevel::Error
            && l.message.starts_with("TypeError: something broke\n")
            && l.message.contains("@mock-int.js")),
        "{logs:?}"
    );

    // An error's code is kept, as the original's `{name, code, message}`.
    let f = failure(h.ts_action("fail", json!({"how": "coded"})).await);
    assert_eq!(f.error_type, "script_internal_error");
    assert_eq!(f.message, "Error: custom msg");
    assert_eq!(
        f.payload,
        json!({"name": "Error", "code": "MY_CODE", "message": "custom msg"})
    );

    // A payload JSON cannot write (a BigInt, a cycle) still reaches the
    // caller, as JSON can hold it (the engine trapped, losing it all).
    let f = failure(h.ts_action("fail", json!({"how": "bigint"})).await);
    assert_eq!(f.error_type, "action_script_runtime_error", "{}", f.message);
    assert_eq!(
        f.payload,
        json!({"message": "too big", "id": "12345678901234567890"})
    );
    let f = failure(h.ts_action("fail", json!({"how": "cycle"})).await);
    assert_eq!(f.error_type, "action_script_runtime_error", "{}", f.message);
    assert_eq!(
        f.payload,
        json!({"message": "in a loop", "self": "[Circular]"})
    );

    let f = failure(h.ts_action("fail", json!({"how": "value"})).await);
    assert_eq!(f.error_type, "script_internal_error");
    assert_eq!(f.message, r#"{"weird":true}"#);
    assert_eq!(
        f.payload,
        json!({"name": "Error", "message": r#"{"weird":true}"#})
    );

    // A promise nothing will settle ends the run with an error saying so
    // (it was a raw wasm backtrace).
    let report = h.ts_action("fail", json!({"how": "never"})).await;
    match &report.outcome {
        Err(e @ ExecError::NeverSettled) => {
            assert!(e.to_string().contains("never settles"), "{e}");
            assert_eq!(e.to_failure().error_type, "script_internal_error");
        }
        other => panic!("expected a promise that never settled, got {other:?}"),
    }

    // `retries: -1` is no retry, not a wrapped-around four billion (a short
    // deadline makes a regression fail instead of retrying for long).
    let mut quick = harness().await;
    quick.limits().timeouts.action = std::time::Duration::from_secs(5);
    let f = failure(quick.ts_action("fail", json!({"how": "retries"})).await);
    assert_eq!(f.error_type, "script_http_error", "{}", f.message);
    let asked = quick
        .mock
        .requests()
        .iter()
        .filter(|r| r.path == "/nothing")
        .count();
    assert_eq!(asked, 1, "a negative retry count retried");

    // A header value with a line break is refused as such, not sent and
    // retried as a network error.
    let f = failure(quick.ts_action("fail", json!({"how": "header"})).await);
    assert_eq!(f.error_type, "invalid_request", "{}", f.message);
    assert!(f.message.contains("x-bad"), "{}", f.message);
    assert!(quick.mock.requests().iter().all(|r| r.path != "/echo"));

    // An output nested deeper than the host parses is an error saying so
    // (it was answered as a string of its JSON).
    let f = failure(quick.ts_action("fail", json!({"how": "deep"})).await);
    assert_eq!(f.error_type, "json_too_deep", "{}", f.message);

    // A configuration field of the wrong type is named.
    let f = failure(quick.ts_action("fail", json!({"how": "config"})).await);
    assert_eq!(
        (f.error_type.as_str(), f.message.as_str()),
        (
            "invalid_request",
            r#"retryOn must list HTTP status codes, got "x""#
        )
    );

    // An output past 10 MiB is refused as the original's is.
    let f = failure(quick.ts_action("fail", json!({"how": "big"})).await);
    assert_eq!(
        (f.error_type.as_str(), f.status),
        ("script_output_too_large", 400),
        "{}",
        f.message
    );
    assert_eq!(f.payload, json!({"message": "Output is too large"}));

    // A host the environment allows, where nothing listens.
    let mut h = harness().await;
    h.limits().allowed_hosts = vec!["127.0.0.1:1".into()];
    let f = failure(h.ts_action("fail", json!({"how": "network"})).await);
    assert_eq!(f.error_type, "script_network_error");
    assert!(f.message.starts_with("ECONNREFUSED"), "{}", f.message);
    // The URL is named without its query, which can hold a key.
    assert!(
        f.message.contains("http://127.0.0.1:1/x?…") && !f.message.contains("query-secret-123"),
        "{}",
        f.message
    );
    // The payload is the axios error's, as the original's.
    assert_eq!(f.payload["name"], "AxiosError", "{}", f.payload);
    assert_eq!(f.payload["code"], "ECONNREFUSED", "{}", f.payload);
    assert_eq!(f.payload["message"], f.message.as_str());
}

#[tokio::test]
async fn zod_validate_input_returns_the_data_or_fails_with_the_original_message() {
    let h = harness().await;
    let ok = output(
        &h.ts_action("validate", json!({"email": "ada@example.com", "age": 36}))
            .await,
    );
    assert_eq!(ok, json!({"email": "ada@example.com", "age": 36}));

    let report = h
        .ts_action("validate", json!({"email": "nope", "age": 12}))
        .await;
    let Err(ExecError::Script(f)) = &report.outcome else {
        panic!("expected an action error, got {:?}", report.outcome);
    };
    assert_eq!(f.error_type, "action_script_runtime_error");
    assert_eq!(f.payload, json!({"message": "Invalid input provided"}));
    let errors: Vec<&str> = report
        .logs
        .iter()
        .filter(|l| l.level == LogLevel::Error)
        .map(|l| l.message.as_str())
        .collect();
    assert!(
        errors
            .iter()
            .any(|m| m.starts_with("Invalid input provided: ") && m.ends_with("at path email")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|m| m.ends_with("at path age")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn trigger_action_runs_another_typescript_action() {
    let h = harness().await;
    h.scripts.insert("mock-int", "echo", ts_script("echo"));
    let out = output(&h.ts_action("trigger", json!({})).await);
    assert_eq!(out, json!({"input": {"hello": "world"}, "script": "echo"}));

    let out = output(&h.ts_action("echo", json!({})).await);
    assert_eq!(
        out["input"], "undefined",
        "an input of {{}} arrives as undefined"
    );
}

/// `tryAcquireLock` and `releaseLock` from TypeScript: the key is held
/// against a nested run until released, the original's errors for a bad
/// key or ttl, and a lock still held is released when the execution ends.
#[tokio::test]
async fn typescript_locks_hold_against_other_executions_until_released() {
    let h = harness().await;
    h.scripts.insert("mock-int", "lock", ts_script("lock"));
    let out = output(&h.ts_action("lock", json!({})).await);
    assert_eq!(
        out,
        json!({
            "first": true,
            "again": true,
            "nested": {"first": false},
            "emptyKey": "Invalid lock key (must be between 1 and 255 characters)",
            "longKey": "Invalid lock key (must be between 1 and 255 characters)",
            "zeroTtl": "Invalid lock TTL (must be greater than 0)",
            "released": true,
            "releasedAgain": false,
            "afterRelease": {"first": true},
            "kept": true,
        })
    );
    assert!(h.locks.is_empty(), "{:?}", h.locks);
}

/// What a script's `triggerSync`/`startSync` asked of the server.
#[derive(Default)]
struct RecordedSyncs(std::sync::Mutex<Vec<(&'static str, Value)>>);

#[async_trait::async_trait]
impl sluice_runtime::exec::SyncControl for RecordedSyncs {
    async fn trigger(&self, body: &[u8]) -> Result<(), sluice_runtime::exec::SyncControlError> {
        let body: Value = serde_json::from_slice(body).unwrap();
        let refused = body["syncs"] == json!(["nope"]);
        self.0.lock().unwrap().push(("trigger", body));
        if refused {
            return Err(sluice_runtime::exec::SyncControlError {
                status: 400,
                code: "no_syncs_found".into(),
                message: "no sync `nope`".into(),
            });
        }
        Ok(())
    }
    async fn start(&self, body: &[u8]) -> Result<(), sluice_runtime::exec::SyncControlError> {
        let body: Value = serde_json::from_slice(body).unwrap();
        self.0.lock().unwrap().push(("start", body));
        Ok(())
    }
}

/// `triggerSync` and `startSync` send the API the bodies the original's
/// SDK sends, for each of its call shapes; a refusal is thrown with the
/// API's code and status; without a server they are logged and run nothing.
#[tokio::test]
async fn typescript_trigger_and_start_sync_send_the_originals_bodies() {
    let mut h = harness().await;
    let recorded = Arc::new(RecordedSyncs::default());
    h.sync_control = Some(recorded.clone());
    let out = output(&h.ts_action("syncs", json!({})).await);
    assert_eq!(
        out,
        json!({
            "refused": {"code": "no_syncs_found", "message": "no sync `nope`", "payload": {"status": 400}},
            "notArray": "Syncs must be an array of strings. If it is a single sync, please wrap it in an array.",
        })
    );
    let base = |syncs: Value| json!({"syncs": syncs, "provider_config_key": "mock-int", "connection_id": "c1"});
    let with = |mut body: Value, key: &str, value: Value| {
        body[key] = value;
        body
    };
    let sent = recorded.0.lock().unwrap().clone();
    assert_eq!(
        sent,
        vec![
            ("trigger", base(json!(["records"]))),
            (
                "trigger",
                with(
                    base(json!([{"name": "records", "variant": "v2"}])),
                    "sync_mode",
                    json!("full_refresh")
                )
            ),
            (
                "trigger",
                with(base(json!(["records"])), "sync_mode", json!("incremental"))
            ),
            (
                "trigger",
                with(
                    base(json!(["records"])),
                    "sync_mode",
                    json!("full_refresh_and_clear_cache")
                )
            ),
            (
                "trigger",
                with(
                    base(json!(["records"])),
                    "opts",
                    json!({"reset": true, "emptyCache": true})
                )
            ),
            (
                "start",
                json!({"syncs": ["records", "listing"], "provider_config_key": "mock-int"})
            ),
            ("start", base(json!(["records"]))),
            ("trigger", base(json!(["nope"]))),
        ]
    );

    // Without a server: logged, nothing refused.
    h.sync_control = None;
    let report = h.ts_action("syncs", json!({})).await;
    assert_eq!(output(&report)["refused"], "not refused");
    assert!(
        report.logs.iter().any(|l| l
            .message
            .starts_with("triggerSync({\"syncs\":[\"records\"],\"provider_config_key\":\"mock-int\",\"connection_id\":\"c1\"}): not run here")),
        "{:?}",
        report.logs
    );
}

/// Timers run in due order, one per turn, cleared ones never; 50,000 at
/// once all run (the engine's own timers ran out of host handles there,
/// and cost time no fuel counted).
#[tokio::test]
async fn timers_run_in_order_and_many_at_once_all_run() {
    let h = harness().await;
    let report = h.ts_action("timers", json!({"many": 50_000})).await;
    assert!(
        report.logs.iter().any(|l| l.level == LogLevel::Error
            && l.message
                .starts_with("Uncaught error in a timer callback: Error: thrown in a timer")),
        "{:?}",
        report.logs
    );
    let out = output(&report);
    assert_eq!(out["after"], true, "{out}");
    assert_eq!(out["textCleared"], true, "{out}");
    assert_eq!(out["order"], json!(["a", "b", "c"]), "{out}");
    assert_eq!(out["ticks"], 3, "{out}");
    assert_eq!(out["fired"], 50_000, "{out}");
    assert_eq!(out["turns"], json!(["reaction", "next timer"]), "{out}");
}

#[tokio::test]
async fn node_built_ins_work_and_the_clock_is_utc() {
    let h = harness().await;
    let out = output(&h.ts_action("node", json!({})).await);
    assert_eq!(
        out["sha256"],
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(out["md5"], "5d41402abc4b2a76b9719d911017c592");
    assert_eq!(out["hmac"], "bp7ym3X//Ft6uuUn1Y/a2y/kLnIZARl2kXNDBl9Y7Uo=");
    assert_eq!(out["base64"], "aGVsbG8gd29ybGQ=");
    assert_eq!(out["decoded"], "hello");
    assert_eq!(out["url"], "https://example.com/a/b?x=1&y=2");
    assert_eq!(out["query"], "a=1&b=two+words");
    assert_eq!(out["uuid"], 36);
    assert_eq!(out["date"], "2024-01-02T03:04:05.000Z");
    assert_eq!(out["timezoneOffset"], 0);
    // Node 20's `base64url`, `globalThis.Buffer` and `URL.canParse` (each
    // value is what Node answers).
    assert_eq!(out["base64url"], "aGVsbG8-Pj4_Pz8");
    assert_eq!(out["fromBase64url"], "hello>>>???");
    assert_eq!(out["base64urlLength"], 11);
    assert_eq!(out["base64urlIsEncoding"], true);
    assert_eq!(out["base64urlWrite"], json!([2, "00ffef00"]));
    assert_eq!(out["globalBuffer"], true);
    assert_eq!(out["canParse"], json!([true, false, true]));
    // UTF-8 as Node decodes it, atob/btoa's InvalidCharacterError, and
    // setTimeout's Timeout (each value what Node 20 answers).
    assert_eq!(
        out["utf8"],
        json!([
            [0xfffd],
            [0x61, 0xfffd, 0x62, 0xfffd],
            [0xfeff, 0x61],
            [0xe9],
            [0x68, 0xe9, 0x6c, 0x6c, 0x6f],
            []
        ])
    );
    assert_eq!(
        out["base64Errors"],
        json!([
            [
                "InvalidCharacterError",
                "The string to be decoded is not correctly encoded.",
                true,
                true
            ],
            ["InvalidCharacterError", "Invalid character", true, true]
        ])
    );
    assert_eq!(
        out["timeout"],
        json!({"shape": [true, false, true, "number", true], "fired": ["r", "r"]})
    );
}

/// `uncontrolledFetch` sends what fetch sends: its `Accept: */*` (not
/// axios's), the content type of each kind of body, a `URLSearchParams`
/// body as its text (it went out as one NUL byte), and headers given as a
/// `Headers` or as pairs (a `Headers` went out as none).
#[tokio::test]
async fn uncontrolled_fetch_sends_what_fetch_sends() {
    let mut h = harness().await;
    let elsewhere = sluice_tests::MockServer::start(Arc::new(upstream))
        .await
        .unwrap();
    h.limits().allowed_hosts = vec![elsewhere.url().trim_start_matches("http://").to_string()];
    let moved = format!(
        "{}/moved?to={}",
        h.mock.url(),
        url::form_urlencoded::byte_serialize(format!("{}/echo", elsewhere.url()).as_bytes())
            .collect::<String>()
    );
    let out = output(
        &h.ts_action("fetch", json!({"base": h.mock.url(), "moved": moved}))
            .await,
    );
    let get = &out["get"];
    assert_eq!(
        (&get["method"], &get["accept"], &get["contentType"]),
        (&json!("GET"), &json!("*/*"), &Value::Null),
        "{out}"
    );
    assert_eq!(get["authorization"], Value::Null, "no credentials: {out}");
    let sent = |key: &str| (out[key]["contentType"].clone(), out[key]["body"].clone());
    assert_eq!(
        sent("text"),
        (json!("text/plain;charset=UTF-8"), json!("hello"))
    );
    assert_eq!(
        sent("typed"),
        (json!("application/json"), json!(r#"{"a":1}"#))
    );
    assert_eq!(
        sent("form"),
        (
            json!("application/x-www-form-urlencoded;charset=UTF-8"),
            json!("a=1&b=x+y")
        )
    );
    assert_eq!(sent("bytes"), (Value::Null, json!("hi")));
    assert_eq!(out["bytes"]["method"], "PUT");
    assert_eq!(sent("view"), (Value::Null, json!("ok")));
    assert_eq!(out["headers"]["trace"], "from Headers", "{out}");
    assert_eq!(out["headers"]["accept"], "application/xml", "{out}");
    assert_eq!(out["pairs"]["trace"], "from pairs", "{out}");
    assert_eq!(sent("blob"), (json!("text/csv"), json!("a,b")), "{out}");
    let form = &out["formData"];
    let boundary = form["contentType"]
        .as_str()
        .and_then(|t| t.strip_prefix("multipart/form-data; boundary="))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        form["body"],
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nAda\r\nL\r\n--{boundary}--\r\n"
        ),
        "{out}"
    );
    // A redirect to another origin the egress check allows is followed,
    // with only the headers that say how to read the answer (not the
    // script's Authorization nor its own headers).
    let moved = &out["moved"];
    assert_eq!(moved["status"], 200, "{out}");
    assert_eq!(
        (&moved["data"]["trace"], &moved["data"]["authorization"]),
        (&Value::Null, &Value::Null),
        "{out}"
    );
    assert_eq!(elsewhere.requests().len(), 1);
    assert_eq!(out["badHeader"]["name"], "SDKError", "{out}");
    assert_eq!(out["badHeader"]["code"], "invalid_request", "{out}");
}

#[tokio::test]
async fn locale_compare_collator_and_normalize_answer_as_nodes() {
    // The engine has no ICU: without the host's collation `localeCompare`
    // compared code units ("Zebra" < "apple") and `normalize` was missing.
    // Every expected value here is what Node.js 22 answers.
    let h = harness().await;
    let out = output(&h.ts_action("intl", json!({})).await);
    assert_eq!(
        out["sorted"],
        json!([
            "_x", "-x", "apple", "Apple", "äpple", "banana", "Banana", "item 10", "item 9", "Zebra"
        ])
    );
    assert_eq!(
        out["numeric"],
        json!([
            "_x", "-x", "apple", "Apple", "äpple", "banana", "Banana", "item 9", "item 10", "Zebra"
        ])
    );
    assert_eq!(out["swedish"], json!(["a", "z", "ä"]));
    assert_eq!(out["base"], 0);
    assert_eq!(
        out["resolved"],
        json!({"locale": "en-u-kn", "usage": "sort", "sensitivity": "accent",
               "ignorePunctuation": false, "collation": "default", "numeric": true,
               "caseFirst": "false"})
    );
    assert_eq!(out["withoutNew"], -1);
    assert_eq!(out["slug"], "Creme Brulee a la carte");
    assert_eq!(out["nfc"], true);
    assert_eq!(out["nfkc"], "fi");
    assert_eq!(
        out["badForm"],
        "RangeError: The normalization form should be one of NFC, NFD, NFKC, NFKD."
    );
    assert_eq!(
        out["badTag"],
        "RangeError: Incorrect locale information provided"
    );
    assert_eq!(
        out["badOption"],
        "RangeError: Value loud out of range for Intl.Collator options property sensitivity"
    );
    // What sluice cannot give stays undefined, for feature tests.
    assert_eq!(out["pluralRules"], "undefined");
    // en-US numbers as Node's; what is not there says so.
    let mut numbers = out["numbers"].clone();
    let mut refused = |key: &str| {
        numbers
            .as_object_mut()
            .and_then(|n| n.remove(key))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let compact = refused("compact");
    assert!(
        compact.starts_with(
            "TypeError: Intl.NumberFormat's notation 'compact' is not available in sluice"
        ),
        "{compact}"
    );
    let german = refused("german");
    assert!(
        german.starts_with(
            "TypeError: Intl.NumberFormat is available for en-US only in sluice (asked: de-DE)"
        ),
        "{german}"
    );
    let node: Value = serde_json::from_str(NODE_NUMBERS).unwrap();
    for (key, expected) in node.as_object().unwrap() {
        assert_eq!(&numbers[key], expected, "numbers.{key}");
    }
    assert_eq!(numbers, node);
    assert_eq!(out["canonical"], json!(["en-US", "zh-Hant-TW"]));
    assert_eq!(
        out["emptyTag"],
        "RangeError: Incorrect locale information provided"
    );
    assert_eq!(out["recalled"], "sv");
    // en-US dates as Node's (its outputs for the same calls, TZ=UTC).
    let mut dates = out["dates"].clone();
    let other = dates
        .as_object_mut()
        .and_then(|d| d.remove("otherLocale"))
        .unwrap_or_default();
    assert!(
        other.as_str().unwrap_or_default().starts_with(
            "TypeError: Intl.DateTimeFormat is available for en-US only in sluice (asked: de-DE)"
        ),
        "{other}"
    );
    let node: Value = serde_json::from_str(NODE_DATES).unwrap();
    for (key, expected) in node.as_object().unwrap() {
        assert_eq!(&dates[key], expected, "dates.{key}");
    }
    assert_eq!(dates, node);
    let node: Value = serde_json::from_str(NODE_REGEX).unwrap();
    assert_eq!(out["regex"], node);
}

/// What Node.js 20 answers to the `regex()` calls of `actions/intl.ts`.
const NODE_REGEX: &str = r#"{"letters":["Crème","Brûlée","東京","Αθήνα"],"notLetters":"Crème_Brûlée_東京_Αθήνα_","inClass":["C","B","Α","4","2"],"negatedClass":[",","&","4","2","٣","!"],"longNames":["Crème","Brûlée","東京","Αθήνα","42٣"],"script":"Αθήνα","scriptExtensions":true,"diacritics":"Creme Brulee","caseInsensitive":true,"sets":["B","Д"],"emoji":["👍","✅"],"named":{"word":"Ünïcode","n":"٤٢"},"notRewritten":true,"dynamic":true,"dynamicClass":["a","1","Б"],"dynamicNegated":"*1-*","dynamicSets":["B","Д"],"called":"ab_cd","zodEmoji":[true,false],"instance":true,"subclass":[true,true,true],"split":["a","b","c"],"legacy":"5","caseFolded":[true,true,true,true],"foldedSets":"00110","reflagged":true,"itself":[true,"RegExp"],"complements":[true,false,false,true]}"#;

/// What Node.js 20 answers to the `numbers()` calls of `actions/intl.ts`
/// (but `compact` and `german`, which sluice refuses).
const NODE_NUMBERS: &str = r#"{"plain":"1,234,567.891","en":"1,234.50","halfUp":"1.01","usd":"-$1,234.50","accounting":"($1,234.50)","chf":"CHF\u00a01,234.50","jpy":"¥1,235","percent":"25.7%","significant":"0.000123","big":"123,456,789","huge":"1,000,000,000,000,000,000,000","sign":"+5","idr":"IDR\u00a01,235","sekNarrow":"kr\u00a01.00","groupingText":"1,000","hugeText":"∞","parts":[{"type":"minusSign","value":"-"},{"type":"currency","value":"$"},{"type":"integer","value":"1"},{"type":"group","value":","},{"type":"integer","value":"234"},{"type":"decimal","value":"."},{"type":"fraction","value":"50"}],"resolved":{"locale":"en-US","numberingSystem":"latn","style":"currency","currency":"USD","currencyDisplay":"symbol","currencySign":"standard","minimumIntegerDigits":1,"minimumFractionDigits":2,"maximumFractionDigits":2,"useGrouping":"auto","notation":"standard","signDisplay":"auto","roundingMode":"halfExpand","roundingIncrement":1,"trailingZeroDisplay":"auto","roundingPriority":"auto"},"noCurrency":"TypeError: Currency code is required with currency style."}"#;

/// What Node.js 20 answers to the `dates()` calls of `actions/intl.ts`
/// (`partsSpace` keeps CLDR's U+202F before `AM`; `format` gives a space).
const NODE_DATES: &str = r#"{"default":"1/2/2026, 3:04:05 AM","date":"1/2/2026","time":"3:04:05 AM","netsuite":"01/02/26 08:34 AM","newYork":"1/1/2026, 10:04:05 PM EST","summer":"5:04:05 PM Pacific Daylight Time","h24":"24:04","h23":"00:04","styles":"Friday, January 2, 2026 at 3:04:05 AM UTC","medium":"Jan 2, 2026, 12:04 PM","short":"1/2/26","words":"Friday, January 2, 2026 at 3 AM","weekdayLast":"2 Fri","monthDay":"Jan 2, 3:04 AM","odd":"2026 (day: 2)","fraction":"03:04:05.123 AM","offset":"1/2/2026, GMT+5:30","era":"1/2/2026 AD, 3:04:05 AM","parts":[{"type":"month","value":"01"},{"type":"literal","value":"/"},{"type":"day","value":"02"},{"type":"literal","value":"/"},{"type":"year","value":"2026"}],"resolved":{"locale":"en-US","calendar":"gregory","numberingSystem":"latn","timeZone":"UTC","hourCycle":"h24","hour12":false,"hour":"2-digit","minute":"2-digit"},"zone":"UTC","invalid":"Invalid Date","badZone":"RangeError: Invalid time zone specified: Mars/Olympus","styleAndField":"TypeError: Can't set option month when dateStyle is used","partsSpace":["3",":","04","\u202f","AM"],"monthYearTime":"January 2026 at 3:04 AM","weekdayHour24":"Friday, 03","weekdayTime24":"Friday 03:04","bc":"3/3/51 BC","farFuture":"Sep 13, 275760","tagCycle":"1/2/2026, 03:04:05","bothStyles":"TypeError: Invalid option : timeStyle","utcOffset":"1/2/2026, GMT+0","paris":"4:04:05 AM Central European Standard Time","londonSummer":"7/2/2026, British Summer Time","kolkata":"Asia/Calcutta"}"#;

/// A paginator holds its request on the host until it is dropped: the SDK
/// drops it when its pages are read to the end or its loop is left, so a
/// script may open any number in turn; ones it keeps open are bounded by
/// the payload limit, as one request is.
#[tokio::test]
async fn paginators_are_released_when_their_loop_ends_and_bounded_while_open() {
    let mut h = harness().await;
    h.limits().max_payload_bytes = 32 * 1024;
    // 100 paginators of ~1.7 KB each, 50 read to the end (3 items) and
    // 50 left after their first page (2 items).
    let out = output(&h.ts_action("pagers", json!({"rounds": 100})).await);
    assert_eq!(out, json!({"items": 250, "opened": 0}));
    let out = output(
        &h.ts_action("pagers", json!({"rounds": 100, "leave": true}))
            .await,
    );
    let error = out["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the execution's open paginators hold")
            && error.contains("over the limit of 32768 bytes"),
        "{out}"
    );
    let opened = out["opened"].as_u64().unwrap_or_default();
    assert!((10..20).contains(&opened), "{out}");
}

#[tokio::test]
async fn a_typescript_busy_loop_runs_out_of_fuel() {
    let mut h = harness().await;
    h.limits().fuel = Some(200_000_000);
    let report = h.ts_action("spin", json!({})).await;
    assert!(
        matches!(
            report.outcome,
            Err(ExecError::OutOfFuel { units: 200_000_000 })
        ),
        "{:?}",
        report.outcome
    );
    assert!(report.logs.iter().any(|l| l.message == "spinning"));
}

#[tokio::test]
async fn a_rust_script_runs_beside_the_typescript_ones() {
    let h = harness().await;
    let out = output(&h.ts_action("rust-echo", json!({"n": 1})).await);
    assert_eq!(
        out,
        json!({"input": {"n": 1}, "language": "rust", "script": "rust-echo"})
    );
}

#[tokio::test]
async fn records_that_do_not_match_their_model_are_logged_or_refused() {
    use sluice_runtime::exec::ScriptValidation;
    use sluice_runtime::validate::Validation;

    // A model stricter than the upstream's data: names must be numbers.
    let schema = json!({"definitions": {"Item": {"type": "object", "properties": {
        "id": {"type": "string"}, "name": {"type": "number"}
    }, "required": ["id", "name"], "additionalProperties": false}}});
    for strict in [false, true] {
        let h = harness().await;
        let mut exec = h.execution("records", Call::Sync);
        exec.validation = Some(ScriptValidation {
            schema: Arc::new(Validation::new(&schema, strict)),
            input: None,
            output: None,
        });
        let report = sluice_tests::runtime()
            .execute(&ts_script("records"), exec, h.services())
            .await;
        if strict {
            let Err(ExecError::Script(f)) = &report.outcome else {
                panic!("expected invalid_sync_record, got {:?}", report.outcome);
            };
            assert_eq!(f.error_type, "invalid_sync_record");
            assert_eq!(f.payload["validation"], json!(["/name must be number"]));
            assert!(
                h.records.all(&h.conn(), "Item").is_empty(),
                "the batch was refused"
            );
        } else {
            output(&report);
            assert!(
                report
                    .logs
                    .iter()
                    .any(|l| l.message == "Invalid records: 2 failed (sampled to 1)"),
                "{:?}",
                report.logs
            );
            let sample = report
                .logs
                .iter()
                .find(|l| l.message == "Invalid record payload")
                .and_then(|l| l.meta.clone())
                .expect("a sampled record");
            assert_eq!(sample["model"], "Item");
            assert_eq!(sample["data"]["id"], "a");
            assert_eq!(
                h.records.all(&h.conn(), "Item").len(),
                3,
                "invalid records are still saved"
            );
        }
    }
}
