//! Records written by a sync component through the records import.

use serde_json::json;
use sluice_runtime::ExecError;
use sluice_runtime::exec::SyncRun;
use sluice_runtime::records::{Changes, RecordStore as _};
use sluice_tests::{Harness, MockResponse, guests, output};

fn sync_run() -> SyncRun {
    SyncRun {
        models: Some(vec!["Ticket".into()]),
        ..SyncRun::default()
    }
}

async fn harness() -> Harness {
    Harness::simple(|_| MockResponse::json(200, &json!({}))).await
}

#[tokio::test]
async fn batch_save_delete_update_and_lookup() {
    let h = harness().await;
    let report = h
        .webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({
                "model": "Ticket",
                "save": [
                    {"id": 1, "title": "a", "tags": ["x"], "_nango_metadata": {"first_seen_at": "old"}},
                    {"id": "2", "title": "b"},
                    {"id": "3", "title": "c"},
                    {"id": 1, "title": "duplicate"}
                ],
                "delete": [{"id": "3"}],
                "update": [{"id": "2", "extra": {"n": 1}}, {"id": "404", "title": "ignored"}],
                "lookup": ["1", "2", "3", "404"],
                "list": 2
            }),
        )
        .await;
    let out = output(&report);
    let found = &out["found"];
    assert_eq!(
        found["1"]["title"], "a",
        "the first duplicate in a batch wins"
    );
    assert!(found["1"]["_nango_metadata"]["cursor"].is_string());
    assert_eq!(found["1"]["_nango_metadata"]["last_action"], "ADDED");
    assert_eq!(found["2"]["extra"], json!({"n": 1}));
    assert_eq!(found["2"]["_nango_metadata"]["last_action"], "UPDATED");
    assert_eq!(found["3"]["_nango_metadata"]["last_action"], "DELETED");
    assert!(found.get("404").is_none());
    // The Rust SDK's `list_records` pages through them in modification
    // order, the deleted one included, as the records API lists them.
    assert_eq!(out["listed"], json!([[1, "3"], ["2"]]), "{out}");
    assert_eq!(
        report.changes["Ticket"],
        Changes {
            added: 3,
            updated: 1,
            deleted: 1,
            unchanged: 0
        }
    );
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.message
                == "Found duplicate key '1' for model Ticket. The record was ignored.")
    );
    let stored = h
        .records
        .get_by_ids(&h.conn(), "Ticket", &["1".into()])
        .await
        .unwrap();
    assert!(
        stored[0].json.get("_nango_metadata").is_none(),
        "_nango_metadata is stripped before saving"
    );
}

#[tokio::test]
async fn saving_an_undeclared_model_fails_and_keeps_what_was_saved() {
    let h = harness().await;
    output(
        &h.webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "save": [{"id": "k"}]}),
        )
        .await,
    );
    let report = h
        .webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Invoice", "save": [{"id": 1}]}),
        )
        .await;
    let Err(ExecError::Script(f)) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(
        f.message,
        "The model 'Invoice' is not included in the declared sync models: Ticket."
    );
    assert_eq!(
        h.records
            .get_by_ids(&h.conn(), "Ticket", &["k".into()])
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn records_without_a_valid_id_are_refused() {
    let h = harness().await;
    let report = h
        .webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "save": [{"id": "ok"}, {"title": "no id"}]}),
        )
        .await;
    let Err(ExecError::Script(f)) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(f.error_type, "invalid_sync_record");
    assert!(f.message.contains("index 1"), "{}", f.message);
}

#[tokio::test]
async fn a_failed_run_keeps_the_records_it_saved() {
    let h = harness().await;
    let report = h
        .webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "save": [{"id": "kept"}], "fail_after": true}),
        )
        .await;
    assert!(report.outcome.is_err());
    assert_eq!(
        h.records
            .get_by_ids(&h.conn(), "Ticket", &["kept".into()])
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn variants_and_sync_context_reach_the_script() {
    let h = harness().await;
    let run = SyncRun {
        variant: "eu".into(),
        last_sync_date: Some(
            chrono::DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
                .unwrap()
                .into(),
        ),
        track_deletes: true,
        ..sync_run()
    };
    let out = output(
        &h.webhook(
            guests::SYNC_RECORDS,
            run,
            json!({"model": "Ticket", "save": [{"id": "v"}], "lookup": ["v"]}),
        )
        .await,
    );
    assert_eq!(out["variant"], "eu");
    assert_eq!(out["last_sync_date"], "2024-05-01T12:00:00.000Z");
    assert_eq!(out["track_deletes"], true);
    assert_eq!(out["found"]["v"]["id"], "v");
    assert_eq!(
        h.records
            .get_by_ids(&h.conn(), "Ticket::eu", &["v".into()])
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        h.records
            .get_by_ids(&h.conn(), "Ticket", &["v".into()])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn fetch_data_reads_its_plan_from_metadata() {
    let h = harness().await;
    use sluice_runtime::connection::ConnectionStore as _;
    h.connections
        .set_metadata(
            "mock-int",
            "c1",
            json!({"model": "Ticket", "save": [{"id": "m1"}, {"id": "m2"}]}),
        )
        .await
        .unwrap();
    let report = h.sync(guests::SYNC_RECORDS, sync_run()).await;
    output(&report);
    assert_eq!(report.changes["Ticket"].added, 2);
    // Metadata of another shape: the error says what was read, as what.
    h.connections
        .set_metadata("mock-int", "c1", json!({"model": 5}))
        .await
        .unwrap();
    let report = h.sync(guests::SYNC_RECORDS, sync_run()).await;
    let Err(ExecError::Script(f)) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(
        f.message
            .starts_with("reading the connection's metadata as Plan: invalid type: integer `5`"),
        "{}",
        f.message
    );
    // The sync has no webhook handler of its own kind mismatch: calling it as an action fails.
    let wrong = h.action(guests::SYNC_RECORDS, json!({})).await;
    assert!(
        matches!(wrong.outcome, Err(ExecError::WrongKind { .. })),
        "{:?}",
        wrong.outcome
    );
}

#[tokio::test]
async fn an_oversized_batch_is_refused_and_loses_nothing() {
    let mut h = harness().await;
    h.limits().max_payload_bytes = 4096;
    output(
        &h.webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "save": [{"id": "small", "v": 1}]}),
        )
        .await,
    );
    let big = "x".repeat(8192);
    let report = h
        .webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "save": [{"id": "small", "v": big}]}),
        )
        .await;
    let Err(ExecError::Script(f)) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(f.error_type, "payload_too_large");
    assert!(
        f.message.contains("the batchSave batch is")
            && f.message.contains("over the limit of 4096 bytes"),
        "{}",
        f.message
    );
    let kept = h
        .records
        .get_by_ids(&h.conn(), "Ticket", &["small".into()])
        .await
        .unwrap();
    assert_eq!(kept[0].json["v"], 1);
}

#[tokio::test]
async fn a_lookup_answers_each_record_once_and_stops_at_the_payload_limit() {
    let mut h = harness().await;
    h.limits().max_payload_bytes = 4096;
    let body = "x".repeat(1000);
    for id in ["a", "b", "c", "d", "e"] {
        output(
            &h.webhook(
                guests::SYNC_RECORDS,
                sync_run(),
                json!({"model": "Ticket", "save": [{"id": id, "body": body}]}),
            )
            .await,
        );
    }
    // One record asked for 300 times is one record of the answer.
    let many_a: Vec<&str> = vec!["a"; 300];
    let report = h
        .webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "lookup": many_a}),
        )
        .await;
    assert_eq!(output(&report)["found"]["a"]["body"], body);

    // Five records of 1 KB do not fit in a 4 KiB answer: a clear error.
    let report = h
        .webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "lookup": ["a", "b", "c", "d", "e"]}),
        )
        .await;
    let Err(ExecError::Script(f)) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(f.error_type, "payload_too_large");
    assert!(f.message.contains("ask for fewer ids"), "{}", f.message);

    // More ids than one host call takes (as many as a batchSave takes
    // records) are sent in parts by the SDK; that many short ids pass the
    // payload limit, so it is raised here.
    h.limits().max_payload_bytes = 4 << 20;
    let mut many: Vec<String> = (0..100_001).map(|i| i.to_string()).collect();
    many.push("e".into());
    let report = h
        .webhook(
            guests::SYNC_RECORDS,
            sync_run(),
            json!({"model": "Ticket", "lookup": many}),
        )
        .await;
    assert_eq!(output(&report)["found"]["e"]["body"], body);
    assert_eq!(output(&report)["found"].as_object().unwrap().len(), 1);
}

/// A variant marked deleted (a DELETE cut short) serves none of its
/// records however many other variants its connection has: its own mark
/// is found behind a thousand variant documents that sort before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_variant_behind_a_thousand_others_serves_no_records() {
    use crate::scheduler::{Upstream, connect, setup};
    use crate::server::{Client, DEV_KEY, start_with};
    use serde_json::Value;

    let up = Upstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = sluice_server::ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(
        config,
        &sluice_store::MasterKey::generate(),
        &up.providers(),
    )
    .await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c).await;
    connect(&c, "demo", "t").await;
    let (code, out) = c.send("POST", "/sync/contacts/variant/us", None).await;
    assert_eq!(code, 200, "{out}");
    let (_, out) = c
        .send(
            "POST",
            "/sync/trigger",
            Some(json!({"syncs": ["contacts::us"], "provider_config_key": "hubspot", "connection_id": "demo", "wait": true})),
        )
        .await;
    assert_eq!(out["runs"][0]["success"], true, "{out}");
    let records = || async {
        let (code, page) = c
            .send("GET", "/records?model=Contact&variant=us", None)
            .await;
        assert_eq!(code, 200, "{page}");
        page["records"].as_array().unwrap().len()
    };
    assert_eq!(records().await, 2);
    let dev = server
        .app
        .envs()
        .find(|e| e.name() == "dev")
        .unwrap()
        .clone();
    // A thousand variants of syncs named before `contacts`.
    let mut batch = dev.store.doc_batch();
    for i in 0..1000 {
        batch
            .put(
                sluice_server::runner::SYNC_VARIANTS,
                &format!("hubspot\u{1f}demo\u{1f}aaa{i:04}\u{1f}other"),
                &json!({"models": ["Other"]}),
            )
            .unwrap();
    }
    batch.apply().await.unwrap();
    let key = "hubspot\u{1f}demo\u{1f}contacts\u{1f}us";
    let mut doc: Value = dev
        .store
        .doc(sluice_server::runner::SYNC_VARIANTS, key)
        .await
        .unwrap()
        .unwrap();
    doc["deleting"] = json!(true);
    dev.store
        .put_doc(sluice_server::runner::SYNC_VARIANTS, key, &doc)
        .await
        .unwrap();
    assert_eq!(
        records().await,
        0,
        "a deleted variant's records were served"
    );
    drop(dev);
    server.stop().await;
}
