//! Providers' webhooks end to end: a Linear-style integration whose
//! webhooks are signed with its webhook secret, a sync subscribed to
//! `Issue` whose webhook handler saves records, and a mock app that gets
//! the forwards.

use std::sync::Arc;
use std::time::Duration;

use hmac_sha256::hmac_hex;
use serde_json::{Value, json};
use sluice_runtime::ScriptKind;
use sluice_server::ServerConfig;
use sluice_store::MasterKey;
use sluice_tests::guests;

use crate::server::{Client, DEV_KEY, PROD_KEY, deploy_scripts, start_with};
use crate::webhooks::App;

pub(crate) const YAML: &str = "
integrations:
  lin:
    syncs:
      records:
        runs: every hour
        auto_start: false
        output: Item
        endpoint: GET /items
        webhook-subscriptions:
          - Issue
models:
  Item:
    id: string
";

pub(crate) const PROVIDERS: &str = "
linear-test:
  auth_mode: OAUTH2
  webhook_routing_script: linearWebhookRouting
  proxy:
    base_url: http://127.0.0.1:9
";

pub(crate) const SECRET: &str = "linear-webhook-secret";

/// HMAC-SHA256 in hex, written out here so the test does not share the
/// server's code.
mod hmac_sha256 {
    use sluice_project::deploy::sha256_hex;

    fn unhex(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }

    pub fn hmac_hex(key: &[u8], data: &[u8]) -> String {
        let mut k = [0u8; 64];
        k[..key.len()].copy_from_slice(key);
        let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
        let inner = unhex(&sha256_hex(&[pad(0x36), data.to_vec()].concat()));
        sha256_hex(&[pad(0x5c), inner].concat())
    }
}

pub(crate) async fn post(
    c: &Client,
    path: &str,
    body: &str,
    headers: &[(&str, String)],
) -> (u16, String) {
    let mut req = c
        .http
        .post(format!("{}{path}", c.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

pub(crate) fn signed(body: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "linear-signature",
            hmac_hex(SECRET.as_bytes(), body.as_bytes()),
        ),
        ("linear-delivery", "delivery-1".into()),
    ]
}

pub(crate) async fn setup(c: &Client, app: &App) {
    deploy_scripts(
        c,
        YAML,
        "lin",
        &[(guests::SYNC_RECORDS, "records", ScriptKind::Sync)],
    )
    .await;
    let (code, out) = c
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "lin", "provider": "linear-test", "webhook_secret": SECRET})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    for (cid, org) in [("c1", "org-1"), ("c2", "org-2")] {
        let (code, out) = c
            .send(
                "POST",
                "/connection",
                Some(
                    json!({"provider_config_key": "lin", "connection_id": cid, "access_token": "t",
                            "connection_config": {"organizationId": org}}),
                ),
            )
            .await;
        assert_eq!(code, 201, "{out}");
    }
    let (code, _) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": app.url()})),
        )
        .await;
    assert_eq!(code, 200);
}

pub(crate) async fn items(c: &Client, cid: &str) -> Vec<String> {
    let (code, page) = c
        .send_as(("lin", cid), "GET", "/records?model=Item", None)
        .await;
    assert_eq!(code, 200, "{page}");
    let mut ids: Vec<String> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_provider_webhook_runs_its_script_and_reaches_the_app_a_forged_one_nothing() {
    let app = App::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), PROVIDERS).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c, &app).await;
    let env = server.app.store.environment("dev").unwrap().id();
    let url = format!("/webhook/{env}/lin");

    // Signed, for org-1's Issue: c1's webhook handler saves w1.
    let body = r#"{"type":"Issue","organizationId":"org-1","model":"Item","save":[{"id":"w1"}],"amount":1.0,"big":1e21}"#.to_string();
    let (code, out) = post(&c, &url, &body, &signed(&body)).await;
    assert_eq!((code, out.as_str()), (200, r#"{"status":"success"}"#));
    app.wait_for(
        "the forward and the sync webhook",
        Duration::from_secs(10),
        |a| a.accepted().len() == 2,
    )
    .await;
    assert_eq!(items(&c, "c1").await, ["w1"]);
    assert_eq!(items(&c, "c2").await, Vec::<String>::new());
    let got = app.accepted();
    let forward = got
        .iter()
        .find(|(_, b)| b["type"] == "forward")
        .expect("a forward");
    assert_eq!(
        forward.1,
        json!({"from": "linear-test", "providerConfigKey": "lin", "type": "forward",
               "payload": {"type": "Issue", "organizationId": "org-1", "model": "Item", "save": [{"id": "w1"}], "amount": 1, "big": 1e21},
               "connectionId": "c1"})
    );
    assert_eq!(forward.0.header("linear-delivery"), Some("delivery-1"));
    // Written as the original's `JSON.stringify` writes it, so an app
    // checking the older signature over its own `JSON.stringify` of the
    // parsed body gets the signed bytes.
    let raw = String::from_utf8(forward.0.body.clone()).unwrap();
    assert!(raw.contains(r#""amount":1,"big":1e+21}"#), "{raw}");
    let sync = got
        .iter()
        .find(|(_, b)| b["type"] == "sync")
        .expect("a sync webhook");
    assert_eq!(sync.1["syncType"], "WEBHOOK", "{}", sync.1);
    assert_eq!(sync.1["responseResults"]["added"], 1, "{}", sync.1);

    // Forged or unsigned: 401, nothing runs, nothing is forwarded.
    let forged = json!({"type": "Issue", "organizationId": "org-1", "model": "Item", "save": [{"id": "evil"}]})
        .to_string();
    let (code, out) = post(&c, &url, &forged, &signed(&body)).await;
    assert_eq!(code, 401, "{out}");
    assert!(out.contains("Invalid webhook signature"), "{out}");
    assert!(
        out.contains("\"code\":\"webhook_invalid_signature\""),
        "{out}"
    );
    let (code, out) = post(&c, &url, &forged, &[]).await;
    assert_eq!(code, 401, "{out}");
    assert!(out.contains("Missing webhook signature"), "{out}");
    assert!(
        out.contains("\"code\":\"webhook_missing_signature\""),
        "{out}"
    );
    let (code, _) = post(&c, &url, &forged, &[("linear-signature", "short".into())]).await;
    assert_eq!(code, 401);

    // A type no sync subscribes to: accepted and forwarded, no script.
    let other = json!({"type": "Comment", "organizationId": "org-2", "model": "Item", "save": [{"id": "x"}]})
        .to_string();
    let (code, _) = post(&c, &url, &other, &signed(&other)).await;
    assert_eq!(code, 200);
    app.wait_for("the Comment forward", Duration::from_secs(10), |a| {
        a.accepted().len() == 3
    })
    .await;
    assert_eq!(app.accepted()[2].1["connectionId"], "c2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        items(&c, "c1").await,
        ["w1"],
        "a forged webhook changed records"
    );
    assert_eq!(items(&c, "c2").await, Vec::<String>::new());
    assert_eq!(app.accepted().len(), 3);

    // `forward_webhooks: false`: the script still runs, nothing is
    // forwarded (the sync's own webhook is still sent).
    let (code, out) = c
        .send(
            "PATCH",
            "/integrations/lin",
            Some(json!({"forward_webhooks": false})),
        )
        .await;
    assert_eq!(
        (code, &out["data"]["forward_webhooks"]),
        (200, &json!(false)),
        "{out}"
    );
    let quiet =
        json!({"type": "Issue", "organizationId": "org-1", "model": "Item", "save": [{"id": "w2"}]})
            .to_string();
    let (code, _) = post(&c, &url, &quiet, &signed(&quiet)).await;
    assert_eq!(code, 200);
    app.wait_for("the second sync webhook", Duration::from_secs(10), |a| {
        a.accepted().len() == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(items(&c, "c1").await, ["w1", "w2"]);
    let forwards = app
        .accepted()
        .iter()
        .filter(|(_, b)| b["type"] == "forward")
        .count();
    assert_eq!((app.accepted().len(), forwards), (4, 2));

    // A webhook script that fails: with `on_sync_error`, the app hears of
    // it as of a failed sync run, of type WEBHOOK.
    let (code, _) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": app.url(), "on_sync_error": true})),
        )
        .await;
    assert_eq!(code, 200);
    let failing =
        json!({"type": "Issue", "organizationId": "org-1", "model": "Item", "save": [{"name": "no id"}]})
            .to_string();
    let (code, _) = post(&c, &url, &failing, &signed(&failing)).await;
    assert_eq!(code, 200);
    app.wait_for("the failure webhook", Duration::from_secs(10), |a| {
        a.accepted().len() == 5
    })
    .await;
    let failed = &app.accepted()[4].1;
    assert_eq!(
        (
            &failed["type"],
            &failed["syncType"],
            &failed["success"],
            &failed["connectionId"]
        ),
        (
            &json!("sync"),
            &json!("WEBHOOK"),
            &json!(false),
            &json!("c1")
        ),
        "{failed}"
    );
    assert_eq!(failed["error"]["type"], "script_error", "{failed}");

    // Unknown environment or integration, an empty body, not JSON.
    let (code, _) = post(&c, &format!("/webhook/{}/lin", uuid_zero()), &body, &[]).await;
    assert_eq!(code, 404);
    let (code, _) = post(&c, &format!("/webhook/{env}/nope"), &body, &[]).await;
    assert_eq!(code, 404);
    let (code, _) = post(&c, &url, "", &[]).await;
    assert_eq!(code, 204);
    let (code, out) = post(&c, &url, "{not json", &signed("{not json")).await;
    assert_eq!(code, 400, "{out}");

    // A gzip body is read decompressed (signed as such), as the original's
    // body parser does; an encoding sluice cannot read is 415, a body that
    // does not decompress 400.
    let zipped_body =
        json!({"type": "Issue", "organizationId": "org-1", "model": "Item", "save": [{"id": "gz"}]})
            .to_string();
    let zipped = {
        use std::io::Write as _;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(zipped_body.as_bytes()).unwrap();
        z.finish().unwrap()
    };
    let send = |body: Vec<u8>, encoding: &'static str| {
        let mut req = c
            .http
            .post(format!("{}{url}", c.base))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(body);
        for (k, v) in signed(&zipped_body) {
            req = req.header(k, v);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (code, out) = send(zipped.clone(), "gzip").await;
    assert_eq!(code, 200, "{out}");
    let t = std::time::Instant::now();
    while !items(&c, "c1").await.contains(&"gz".to_string()) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the gzip webhook's script never saved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, out) = send(zipped.clone(), "br").await;
    assert_eq!(code, 415, "{out}");
    assert!(out.contains("unsupported_content_encoding"), "{out}");
    let (code, out) = send(zipped[..zipped.len() / 2].to_vec(), "gzip").await;
    assert_eq!(code, 400, "{out}");
    assert!(out.contains("does not decompress"), "{out}");
    server.stop().await;
}

/// A sync subscribed to `*` runs for a webhook of any type, as the
/// original's (before, only a subscription naming the type ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_subscribed_to_star_runs_for_every_webhook_type() {
    let app = App::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), PROVIDERS).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c, &app).await;
    deploy_scripts(
        &c,
        &YAML.replace("- Issue", "- '*'"),
        "lin",
        &[(guests::SYNC_RECORDS, "records", ScriptKind::Sync)],
    )
    .await;
    let env = server.app.store.environment("dev").unwrap().id();
    let url = format!("/webhook/{env}/lin");
    let body = json!({"type": "Comment", "organizationId": "org-2", "model": "Item", "save": [{"id": "s1"}]})
        .to_string();
    let (code, out) = post(&c, &url, &body, &signed(&body)).await;
    assert_eq!((code, out.as_str()), (200, r#"{"status":"success"}"#));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while items(&c, "c2").await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the `*` sync did not run for a Comment webhook"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(items(&c, "c2").await, ["s1"]);
    assert_eq!(items(&c, "c1").await, Vec::<String>::new());
    server.stop().await;
}

/// Clients that declare large webhook bodies and send them a byte at a
/// time hold room only for what they sent: a signed webhook meanwhile is
/// answered at once (the room was booked from the declared length, and
/// three such clients left every other webhook unanswered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_large_webhook_bodies_do_not_hold_up_the_others() {
    use tokio::io::AsyncWriteExt as _;
    let app = App::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), PROVIDERS).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c, &app).await;
    let env = server.app.store.environment("dev").unwrap().id();
    let url = format!("/webhook/{env}/lin");
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(
            format!("POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 60000000\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        tcp.write_all(&[b' '; 1000]).await.unwrap();
        slow.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = json!({"type": "Issue", "organizationId": "org-1", "model": "Item", "save": [{"id": "w9"}]})
        .to_string();
    let answered = tokio::time::timeout(
        Duration::from_secs(8),
        post(&c, &url, &body, &signed(&body)),
    )
    .await;
    let (code, out) = answered.expect("the signed webhook waited behind the slow bodies");
    assert_eq!((code, out.as_str()), (200, r#"{"status":"success"}"#));
    drop(slow);
    server.stop().await;
}

/// The room for providers' webhook bodies is shared by the environments,
/// but one holds at most half of it: large bodies arriving for one
/// environment (here 48 of 4 MiB, the largest taken, held a byte short
/// of their end: more than its share) leave room for another's webhooks,
/// which are answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_environments_large_webhooks_leave_room_for_anothers() {
    use tokio::io::AsyncWriteExt as _;
    let app = App::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), PROVIDERS).await;
    let dev = Client::new(&server, DEV_KEY);
    setup(&dev, &app).await;
    let prod = Client::new(&server, PROD_KEY);
    setup(&prod, &app).await;
    let id = |name: &str| server.app.store.environment(name).unwrap().id();
    let (dev_env, prod_env) = (id("dev"), id("prod"));
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut large = Vec::new();
    let filler: Arc<Vec<u8>> = Arc::new(vec![b' '; (4 << 20) - 1]);
    for _ in 0..48 {
        let (addr, filler) = (addr.clone(), filler.clone());
        large.push(tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "POST /webhook/{dev_env}/lin HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n"
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            // Written while the server takes it (the bodies past the
            // environment's share wait), then held unfinished.
            let _ = tcp.write_all(&filler).await;
            std::future::pending::<()>().await;
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let body = json!({"type": "Issue", "organizationId": "org-1", "model": "Item", "save": [{"id": "p1"}]})
        .to_string();
    let answered = tokio::time::timeout(
        Duration::from_secs(8),
        post(
            &prod,
            &format!("/webhook/{prod_env}/lin"),
            &body,
            &signed(&body),
        ),
    )
    .await;
    let (code, out) = answered.expect("prod's webhook waited behind dev's large bodies");
    assert_eq!((code, out.as_str()), (200, r#"{"status":"success"}"#));
    for task in large {
        task.abort();
    }
    server.stop().await;
}

fn uuid_zero() -> &'static str {
    "00000000-0000-0000-0000-000000000000"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_events_is_forwarded_once_per_connection_it_names() {
    let app = App::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let providers = "jira-test:\n  auth_mode: OAUTH2\n  webhook_routing_script: jiraWebhookRouting\n  proxy:\n    base_url: http://127.0.0.1:9\n";
    let server = start_with(config, &MasterKey::generate(), providers).await;
    let c = Client::new(&server, DEV_KEY);
    let (code, out) = c
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "jira", "provider": "jira-test"})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    for (cid, account) in [("c1", "A"), ("c2", "B"), ("c3", "C")] {
        let (code, out) = c
            .send(
                "POST",
                "/connection",
                Some(
                    json!({"provider_config_key": "jira", "connection_id": cid, "access_token": "t",
                            "connection_config": {"accountId": account}}),
                ),
            )
            .await;
        assert_eq!(code, 201, "{out}");
    }
    let (code, _) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": app.url()})),
        )
        .await;
    assert_eq!(code, 200);
    let env = server.app.store.environment("dev").unwrap().id();

    // 200 events of account A and one of B, in one delivery.
    let mut events: Vec<Value> = (0..200)
        .map(|i| json!({"payload": {"webhookEvent": "issue_updated", "n": i, "user": {"accountId": "A"}}}))
        .collect();
    events.push(json!({"payload": {"webhookEvent": "issue_created", "user": {"accountId": "B"}}}));
    let body = Value::Array(events).to_string();
    let (code, out) = post(&c, &format!("/webhook/{env}/jira"), &body, &[]).await;
    assert_eq!(code, 200, "{out}");
    app.wait_for("two forwards", Duration::from_secs(10), |a| {
        a.accepted().len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut to: Vec<String> = app
        .accepted()
        .iter()
        .map(|(_, b)| b["connectionId"].as_str().unwrap_or("-").to_string())
        .collect();
    to.sort();
    assert_eq!(to, ["c1", "c2"], "one forward per connection named");
    server.stop().await;
}

/// Webhooks accepted (answered 2xx) whose handling a crash cut short are
/// handled at the next start: forwarded, and their scripts run. One whose
/// scripts were cut short three times is not handled again (a script that
/// takes the process down would otherwise run at every start); a stop
/// while one only waited its turn (behind others) is not counted. The
/// documents are what such crashes leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_a_crash_cut_short_are_handled_at_start_their_scripts_given_up_after_three() {
    use chrono::Utc;
    use sluice_server::api::incoming::{Accepted, INCOMING};
    use sluice_server::routing::{Lookup, Route};

    let app = App::start().await;
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let config = || ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config(), &master, PROVIDERS).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c, &app).await;
    let dev = server
        .app
        .envs()
        .find(|e| e.name() == "dev")
        .unwrap()
        .clone();
    // c2's r3 saved by a run whose end a crash kept the app from hearing
    // of: the webhook is noted as having started its scripts before it.
    let env_id = server.app.store.environment("dev").unwrap().id();
    let before_r3 = Utc::now();
    let r3 = json!({"type": "Issue", "organizationId": "org-2", "model": "Item", "save": [{"id": "r3"}]})
        .to_string();
    let (code, _) = post(&c, &format!("/webhook/{env_id}/lin"), &r3, &signed(&r3)).await;
    assert_eq!(code, 200);
    app.wait_for("r3's webhooks", Duration::from_secs(10), |a| {
        a.accepted().len() == 2
    })
    .await;
    // What the app gets from here on.
    let skip = app.accepted().len();
    // (n, restarts, scripts started, running when the process stopped):
    // 2 was running at its third stop; 3 is as an earlier version stored
    // it; 4's scripts started in an earlier process, and it waited its
    // turn through the last stop; 5 never started them.
    for (n, restarts, started, running) in [
        (1, 0u32, false, None),
        (2, 2, true, Some(true)),
        (3, 0, true, None),
        (4, 2, true, Some(false)),
        (5, 5, false, None),
    ] {
        let org = if n == 3 { "org-2" } else { "org-1" };
        let body = json!({"type": "Issue", "organizationId": org, "model": "Item",
                          "save": [{"id": format!("r{n}")}]});
        let accepted = Accepted {
            id: format!("cut-short-{n}"),
            provider_config_key: "lin".into(),
            provider: "linear-test".into(),
            received_at: Utc::now(),
            routes: vec![Route {
                input: body.clone(),
                kind: Some("Issue".into()),
                header_kind: None,
                lookup: Some(Lookup::ConnectionId(
                    if n == 3 { "c2" } else { "c1" }.into(),
                )),
            }],
            // As an earlier build stored it: parsed, the input inline.
            forward: body,
            forward_text: None,
            inputs: Vec::new(),
            headers: Vec::new(),
            forwarded: started,
            restarts,
            scripts_started_at: started.then_some(before_r3),
            running,
        };
        dev.store
            .put_doc(
                INCOMING,
                &format!("{n:020}\u{1f}{}", accepted.id),
                &accepted,
            )
            .await
            .unwrap();
    }
    drop(dev);
    server.stop_as_if_crashed().await;

    let server = start_with(config(), &master, PROVIDERS).await;
    let c = Client::new(&server, DEV_KEY);
    let forwards = |a: &App| {
        a.accepted()
            .into_iter()
            .skip(skip)
            .filter(|(_, b)| b["type"] == "forward")
            .map(|(_, b)| b)
            .collect::<Vec<Value>>()
    };
    app.wait_for("both forwards", Duration::from_secs(10), |a| {
        forwards(a).len() == 2
    })
    .await;
    for f in forwards(&app) {
        assert_eq!(f["connectionId"], "c1", "{f}");
    }
    let t = std::time::Instant::now();
    while items(&c, "c1").await.len() < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the scripts of the webhooks a crash cut short never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The runs of r1, r4 and r5 have ended (their sync webhooks reached
    // the app); r2's script was not run.
    app.wait_for("c1's sync webhooks", Duration::from_secs(10), |a| {
        a.accepted()
            .iter()
            .skip(skip)
            .filter(|(_, b)| b["type"] == "sync" && b["connectionId"] == "c1")
            .count()
            == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(items(&c, "c1").await, ["r1", "r4", "r5"]);
    // r3's webhook is not forwarded again; its script runs again and finds
    // r3 unchanged, and the app is told of it all the same, from when the
    // cut-short run started.
    app.wait_for("r3's sync webhook", Duration::from_secs(10), |a| {
        a.accepted()
            .iter()
            .skip(skip)
            .any(|(_, b)| b["type"] == "sync" && b["connectionId"] == "c2")
    })
    .await;
    let syncs: Vec<Value> = app
        .accepted()
        .into_iter()
        .skip(skip)
        .filter(|(_, b)| b["type"] == "sync")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(syncs.len(), 4, "{syncs:?}");
    let resumed = syncs.iter().find(|b| b["connectionId"] == "c2").unwrap();
    assert_eq!(
        resumed["responseResults"],
        json!({"added": 1, "updated": 0, "deleted": 0}),
        "{resumed}"
    );
    let after = chrono::DateTime::parse_from_rfc3339(resumed["modifiedAfter"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert!(
        (after - before_r3).num_milliseconds().abs() <= 1,
        "{resumed}"
    );
    assert_eq!(forwards(&app).len(), 2, "r3 was forwarded again");
    assert_eq!(items(&c, "c2").await, ["r3"]);
    server.stop().await;
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

/// A webhook's signature is checked on its bytes before its body is
/// parsed, so a forged one costs no parse (the body was parsed first: a
/// 30 KB gzip of a 30 MiB `[0,0,…]` with a bad signature was a 401 after
/// 1.2 GB), and a body whose parse would take more than the server sets
/// aside for parsing is refused (413) before it is parsed; as much
/// ordinary JSON is taken, and past the largest body (4 MiB) none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_webhook_costs_no_parse_and_one_whose_parse_would_not_fit_is_413() {
    let app = App::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), PROVIDERS).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c, &app).await;
    let env = server.app.store.environment("dev").unwrap().id();
    let url = format!("/webhook/{env}/lin");

    // Forged: 401 whatever the body (one that is not JSON was a 400, as
    // it was parsed first).
    let (code, out) = post(&c, &url, "{not json", &signed("{}")).await;
    assert_eq!(code, 401, "{out}");
    assert!(out.contains("webhook_invalid_signature"), "{out}");

    let send = |body: Vec<u8>, headers: Vec<(&'static str, String)>| {
        let mut req = c
            .http
            .post(format!("{}{url}", c.base))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(gzip(&body));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // 2 MiB of `[0,0,…]`: over a million values, hundreds of MiB parsed.
    let dense = format!("[{}0]", "0,".repeat(1 << 20));
    let (code, out) = send(dense.clone().into_bytes(), signed("[]")).await;
    assert_eq!(code, 401, "{out}");
    let (code, out) = send(dense.clone().into_bytes(), signed(&dense)).await;
    assert_eq!(code, 413, "{out}");
    assert!(out.contains("payload_too_large"), "{out}");
    assert!(out.contains("once parsed"), "{out}");

    // 3 MiB of ordinary JSON (a long string) is taken and handled.
    let body = json!({"type": "Issue", "organizationId": "org-1", "model": "Item",
                      "save": [{"id": "big"}], "blob": "x".repeat(3 << 20)})
    .to_string();
    let (code, out) = send(body.clone().into_bytes(), signed(&body)).await;
    assert_eq!((code, out.as_str()), (200, r#"{"status":"success"}"#));
    let t = std::time::Instant::now();
    while items(&c, "c1").await != ["big"] {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the large webhook was not handled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.wait_for("the large forward", Duration::from_secs(10), |a| {
        a.accepted().iter().any(|(_, b)| b["type"] == "forward")
    })
    .await;
    let forward = app
        .accepted()
        .into_iter()
        .find(|(_, b)| b["type"] == "forward")
        .unwrap();
    assert_eq!(
        forward.1["payload"]["blob"].as_str().map(str::len),
        Some(3 << 20)
    );

    // Past the largest body: 413, as received or once decompressed.
    let over = json!({"type": "Issue", "blob": "x".repeat(5 << 20)}).to_string();
    let (code, out) = post(&c, &url, &over, &signed(&over)).await;
    assert_eq!(code, 413, "{out}");
    let (code, out) = send(over.clone().into_bytes(), signed(&over)).await;
    assert_eq!(code, 413, "{out}");
    server.stop().await;
}

/// One body holds at most an eighth of its environment's room (its
/// largest size, counted five times): uploads stalled one byte short of
/// their end cannot lock out the environment's webhooks (two uploads of
/// 32 MiB held all of its room, and a signed webhook got 503
/// `webhook_busy`). Here two stalled at the largest body and two that
/// declared 32 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_leave_room_for_a_signed_webhook() {
    use tokio::io::AsyncWriteExt as _;
    let app = App::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), PROVIDERS).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c, &app).await;
    let env = server.app.store.environment("dev").unwrap().id();
    let url = format!("/webhook/{env}/lin");
    let addr = server.url().trim_start_matches("http://").to_string();
    let filler: Arc<Vec<u8>> = Arc::new(vec![b' '; (32 << 20) - 1]);
    let mut stalled = Vec::new();
    for size in [4usize << 20, 4 << 20, 32 << 20, 32 << 20] {
        let (addr, url, filler) = (addr.clone(), url.clone(), filler.clone());
        stalled.push(tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head = format!("POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n");
            tcp.write_all(head.as_bytes()).await.unwrap();
            // As much as the server takes, then held unfinished.
            let _ = tcp.write_all(&filler[..size - 1]).await;
            std::future::pending::<()>().await;
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let body = json!({"type": "Issue", "organizationId": "org-1", "model": "Item", "save": [{"id": "s1"}]})
        .to_string();
    let answered = tokio::time::timeout(
        Duration::from_secs(8),
        post(&c, &url, &body, &signed(&body)),
    )
    .await;
    let (code, out) = answered.expect("the signed webhook waited behind the stalled uploads");
    assert_eq!((code, out.as_str()), (200, r#"{"status":"success"}"#));
    for task in stalled {
        task.abort();
    }
    server.stop().await;
}

const UNAUTH: &str = "
unauth-test:
  auth_mode: OAUTH2
  webhook_routing_script: unauthenticatedWebhookRouting
  proxy:
    base_url: http://127.0.0.1:9
";

/// Creates integration `un` (unauthenticated webhooks) in the client's
/// environment.
async fn unauthenticated(c: &Client) {
    let (code, out) = c
        .send(
            "POST",
            "/integrations",
            Some(json!({"unique_key": "un", "provider": "unauth-test"})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
}

/// The documents of an environment's collection.
async fn docs(server: &sluice_server::Server, env: &str, collection: &str) -> Vec<Value> {
    let env = server.app.store.environment(env).unwrap();
    env.docs::<Value>(collection, "", None, 100, false)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// Webhook URLs pointing back at sluice's own webhook route (dev's at
/// prod's and its own, prod's at dev's) make no loop: every delivery
/// carries `x-sluice-delivery`, and a webhook with it is refused (400
/// `webhook_loop`, final), not forwarded again. One webhook makes its two
/// deliveries and nothing more (it made a thousand a second, for ever),
/// and the operator is told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_urls_pointing_back_at_sluice_make_no_loop() {
    use std::sync::Mutex;
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let told: Arc<Mutex<Vec<String>>> = Arc::default();
    let lines = told.clone();
    config.events =
        sluice_server::EventLog::new(move |line| lines.lock().unwrap().push(line.to_string()));
    let server = start_with(config, &MasterKey::generate(), UNAUTH).await;
    let dev = Client::new(&server, DEV_KEY);
    let prod = Client::new(&server, PROD_KEY);
    unauthenticated(&dev).await;
    unauthenticated(&prod).await;
    let hook = |name: &str| {
        format!(
            "{}/webhook/{}/un",
            server.url(),
            server.app.store.environment(name).unwrap().id()
        )
    };
    for (c, primary, secondary) in [
        (&dev, hook("prod"), Some(hook("dev"))),
        (&prod, hook("dev"), None),
    ] {
        let (code, out) = c
            .send(
                "PUT",
                "/sluice/webhook-settings",
                Some(json!({"primary_url": primary, "secondary_url": secondary})),
            )
            .await;
        assert_eq!(code, 200, "{out}");
    }
    let body = json!({"type": "ping", "connectionId": "nobody"}).to_string();
    let (code, out) = post(&dev, &hook("dev")[server.url().len()..], &body, &[]).await;
    assert_eq!(code, 200, "{out}");
    let t = std::time::Instant::now();
    loop {
        let dead = docs(&server, "dev", "webhook-dead").await;
        if dead.len() == 2 && docs(&server, "dev", "webhook-outbox").await.is_empty() {
            for d in &dead {
                let error = d["last_error"].as_str().unwrap_or("");
                assert!(error.contains("HTTP 400"), "{d}");
            }
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10) && dead.len() <= 2,
            "the deliveries were not refused as a loop: {} given up, {} waiting",
            dead.len(),
            docs(&server, "dev", "webhook-outbox").await.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing reached prod, which would have sent it on.
    assert!(docs(&server, "prod", "webhook-outbox").await.is_empty());
    assert!(docs(&server, "prod", "webhook-dead").await.is_empty());
    assert!(docs(&server, "prod", "incoming-webhooks").await.is_empty());
    let told = told.lock().unwrap().clone();
    assert!(
        told.iter()
            .any(|l| l.contains("points at sluice's own webhook route")),
        "{told:?}"
    );
    server.stop().await;
}

/// A delivery is filed in the logs under what sluice queued it for, not
/// what its body says: a provider's payload that matched no connection is
/// a `forward` of its integration, whatever `type`, `providerConfigKey`
/// and `connectionId` it carries (it was filed as the `sync` of another
/// integration's connection, as its sender wrote).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_logged_as_queued_not_as_its_body_says() {
    let app = App::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), UNAUTH).await;
    let c = Client::new(&server, DEV_KEY);
    unauthenticated(&c).await;
    let (code, _) = c
        .send(
            "PUT",
            "/sluice/webhook-settings",
            Some(json!({"primary_url": app.url()})),
        )
        .await;
    assert_eq!(code, 200);
    let env = server.app.store.environment("dev").unwrap().id();
    let forged = json!({"type": "sync", "providerConfigKey": "other", "connectionId": "victim",
                        "syncName": "contacts", "success": true})
    .to_string();
    let (code, out) = post(&c, &format!("/webhook/{env}/un"), &forged, &[]).await;
    assert_eq!(code, 200, "{out}");
    app.wait_for("the forward", Duration::from_secs(10), |a| {
        a.accepted().len() == 1
    })
    .await;
    let logged = |query: &'static str| {
        let c = &c;
        async move {
            let (code, out) = c.send("GET", &format!("/logs?{query}"), None).await;
            assert_eq!(code, 200, "{out}");
            out["logs"].as_array().cloned().unwrap_or_default()
        }
    };
    let t = std::time::Instant::now();
    let lines = loop {
        let lines = logged("integration=un").await;
        if !lines.is_empty() {
            break lines;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no delivery logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["script"], "forward", "{lines:?}");
    assert!(
        lines[0]["message"].as_str().unwrap().contains("sent to"),
        "{lines:?}"
    );
    assert!(logged("connection_id=victim").await.is_empty());
    assert!(logged("integration=other").await.is_empty());
    server.stop().await;
}

/// The app's webhooks of a webhook script's run that cannot be queued (the
/// store refuses them: here, webhook settings it cannot read) are tried
/// for a few seconds, then the operator is told; the provider's webhook is
/// not handled again (that would run every script of it again). They
/// were lost without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_runs_webhooks_that_cannot_be_queued_are_told() {
    use std::sync::Mutex;
    let app = App::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let told: Arc<Mutex<Vec<String>>> = Arc::default();
    let lines = told.clone();
    config.events =
        sluice_server::EventLog::new(move |line| lines.lock().unwrap().push(line.to_string()));
    let server = start_with(config, &MasterKey::generate(), PROVIDERS).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c, &app).await;
    // Nothing forwarded: the settings are read only for the run's webhooks.
    let (code, out) = c
        .send(
            "PATCH",
            "/integrations/lin",
            Some(json!({"forward_webhooks": false})),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    let dev = server
        .app
        .envs()
        .find(|e| e.name() == "dev")
        .unwrap()
        .clone();
    let settings = |valid: bool| {
        let mut s = json!({"primary_url": app.url()});
        if !valid {
            s["not_a_setting"] = json!(true);
        }
        s
    };
    dev.store
        .put_doc("webhook-settings", "settings", &settings(false))
        .await
        .unwrap();
    let env = server.app.store.environment("dev").unwrap().id();
    let body = json!({"type": "Issue", "organizationId": "org-1", "model": "Item", "save": [{"id": "q1"}]})
        .to_string();
    let (code, out) = post(&c, &format!("/webhook/{env}/lin"), &body, &signed(&body)).await;
    assert_eq!(code, 200, "{out}");
    let t = std::time::Instant::now();
    while !told
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("could not be queued"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the run's webhooks were not told unqueued: {:?}",
            told.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(items(&c, "c1").await, ["q1"]);
    // Handled once: the webhook is not kept to run its scripts again.
    let t = std::time::Instant::now();
    while !docs(&server, "dev", "incoming-webhooks").await.is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "the webhook is kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dev.store
        .put_doc("webhook-settings", "settings", &settings(true))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.accepted().is_empty());
    let runs = told
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("could not be queued"))
        .count();
    assert_eq!(runs, 1, "the script ran once: {:?}", told.lock().unwrap());
    server.stop().await;
}

/// The webhooks a stopped process left are read a page at a time and all
/// handled at the next start (more than a page of them here; they were
/// all read into memory at start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_a_page_of_webhooks_left_at_a_stop_are_all_handled_at_start() {
    use chrono::Utc;
    use sluice_server::api::incoming::{Accepted, INCOMING, Text};
    use sluice_server::routing::{Lookup, Route};

    let app = App::start().await;
    let data = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let config = || ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config(), &master, PROVIDERS).await;
    let c = Client::new(&server, DEV_KEY);
    setup(&c, &app).await;
    let dev = server
        .app
        .envs()
        .find(|e| e.name() == "dev")
        .unwrap()
        .clone();
    // A type no sync subscribes to: forwarded only.
    for n in 0..300 {
        let body = json!({"type": "Comment", "organizationId": "org-2", "n": n});
        let accepted = Accepted {
            id: format!("left-{n}"),
            provider_config_key: "lin".into(),
            provider: "linear-test".into(),
            received_at: Utc::now(),
            routes: vec![Route {
                input: Value::Null,
                kind: Some("Comment".into()),
                header_kind: None,
                lookup: Some(Lookup::ConnectionId("c2".into())),
            }],
            forward: Value::Null,
            forward_text: Some(Text::new(body.to_string()).unwrap()),
            inputs: vec![None],
            headers: Vec::new(),
            forwarded: false,
            restarts: 0,
            scripts_started_at: None,
            running: None,
        };
        dev.store
            .put_doc(
                INCOMING,
                &format!("{n:020}\u{1f}{}", accepted.id),
                &accepted,
            )
            .await
            .unwrap();
    }
    drop(dev);
    server.stop().await;
    let server = start_with(config(), &master, PROVIDERS).await;
    app.wait_for("the 300 forwards", Duration::from_secs(30), |a| {
        a.accepted().len() == 300
    })
    .await;
    let mut seen: Vec<i64> = app
        .accepted()
        .iter()
        .map(|(_, b)| {
            assert_eq!(b["connectionId"], "c2", "{b}");
            b["payload"]["n"].as_i64().unwrap()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, (0..300).collect::<Vec<i64>>());
    let t = std::time::Instant::now();
    while !docs(&server, "dev", "incoming-webhooks").await.is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "webhooks are kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}
