//! What large request bodies make a real `sluice serve` hold: a body is
//! held within the server's room for bodies, an action's input is passed
//! on as sent (values only where a run validates it, within the server's
//! room for parsed bodies), a deploy's manifest is parsed within that
//! room, and a component upload is weighed against its environment's room
//! and the server's before its body is read.

use std::sync::Arc;

use serde_json::{Value, json};
use sluice_project::deploy::sha256_hex;
use sluice_runtime::ScriptKind;
use sluice_server::{Server, ServerConfig};
use sluice_store::MasterKey;
use sluice_tests::{MockRequest, MockResponse, MockServer, guests};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::server::{Client, DEV_KEY, PROD_KEY, deploy_scripts, start_with};

const PROXY_YAML: &str = "
integrations:
  mock-int:
    actions:
      proxy:
        endpoint: POST /proxy
";

/// POSTs `body` (text, as sent) to `path` as connection `c1` of
/// `mock-int`, with `headers`.
async fn post(c: &Client, path: &str, body: String, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = c
        .http
        .post(format!("{}{path}", c.base))
        .bearer_auth(&c.key)
        .header("connection-id", "c1")
        .header("provider-config-key", "mock-int")
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `{"endpoint": …, "pad": [0, 0, …]}`, dense JSON whose values take about
/// `bytes` (a slot of a value's size, 2¼ times, per `0,`: as the server
/// estimates them) in a text of a few percent of that.
fn padded(endpoint: &str, bytes: usize) -> String {
    let zeros = bytes / (std::mem::size_of::<Value>() * 9 / 4);
    format!(
        r#"{{"endpoint":"{endpoint}","pad":[{}0]}}"#,
        "0,".repeat(zeros - 1)
    )
}

/// An action's input reaches its script as the app sent it, whatever its
/// size, by every way of running an action: the proxy action posts the
/// input's `json` to an upstream that answers with what it got, and the
/// answer is the input's own text — its keys in their order, its numbers
/// as written (integers past 2^53, `1.0`), a few megabytes of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_action_input_reaches_the_script_as_sent() {
    let mock = MockServer::start(Arc::new(|req: &MockRequest| MockResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: req.body.clone(),
        delay: None,
    }))
    .await
    .unwrap();
    let providers = format!(
        "mock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: {}\n",
        mock.url()
    );
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let dev = Client::new(&server, DEV_KEY);
    deploy_scripts(
        &dev,
        PROXY_YAML,
        "mock-int",
        &[(guests::ACTION_PROXY, "proxy", ScriptKind::Action)],
    )
    .await;
    dev.integration_and_connection(
        "mock-int",
        "mock",
        json!({"connection_id": "c1", "api_key": "k"}),
    )
    .await;

    let numbers: Vec<String> = (0..50_000u64).map(|i| (i * 7919).to_string()).collect();
    let sent = format!(
        r#"{{"zeta": 1, "alpha": {{"y": 1.0, "b": -0.5, "a": 18446744073709551615}},
            "min": -9223372036854775808, "tiny": 1e-7, "tenth": 0.1, "e": 3.0e10,
            "text": "caf\u00e9 \"q\" \ud83d\ude00 {}", "many": [{}], "mid": {{"k": [true, null, {{}}, []]}}}}"#,
        "x".repeat(3 << 20),
        numbers.join(",")
    );
    let expected: Value = serde_json::from_str(&sent).unwrap();
    let expected = serde_json::to_string(&expected).unwrap();
    assert!(sent.len() > 3 << 20);
    let input = format!(r#"{{"endpoint": "/echo", "method": "POST", "json": {sent}}}"#);

    // At once…
    let (status, body) = post(
        &dev,
        "/action/trigger",
        format!(r#"{{"action_name": "proxy", "input": {input}}}"#),
        &[],
    )
    .await;
    assert_eq!(
        status,
        200,
        "{}",
        body.to_string().chars().take(300).collect::<String>()
    );
    assert_eq!(serde_json::to_string(&body["data"]).unwrap(), expected);
    // …by its endpoint…
    let (status, body) = post(&dev, "/v1/proxy", input.clone(), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::to_string(&body["data"]).unwrap(), expected);
    // …queued (stored, then read back)…
    let (status, body) = post(
        &dev,
        "/action/trigger",
        format!(r#"{{"action_name": "proxy", "input": {input}}}"#),
        &[("x-async", "true")],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let location = body["statusUrl"].as_str().unwrap().to_string();
    let (_, body) = dev
        .poll_async(("mock-int", "c1"), &location, |s| s == 200)
        .await;
    assert_eq!(serde_json::to_string(&body["data"]).unwrap(), expected);
    // …and as an MCP tool's arguments.
    let (status, body) = post(
        &dev,
        "/mcp",
        format!(
            r#"{{"jsonrpc": "2.0", "id": {{"n": [1, 2]}}, "method": "tools/call",
                "params": {{"name": "proxy", "arguments": {input}}}}}"#
        ),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], json!({"n": [1, 2]}));
    let text = body["result"]["content"][0]["text"].as_str().unwrap();
    let output: Value = serde_json::from_str(text).unwrap();
    assert_eq!(serde_json::to_string(&output["data"]).unwrap(), expected);

    // JSON a value parse would refuse is refused as before, though the
    // input is kept as text.
    for bad in [
        format!("{}{}", "[".repeat(200), "]".repeat(200)),
        "1e400".to_string(),
        r#""\ud800""#.to_string(),
    ] {
        let (status, body) = post(
            &dev,
            "/action/trigger",
            format!(r#"{{"action_name": "proxy", "input": {bad}}}"#),
            &[],
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_body")),
            "{body}"
        );
        let (status, body) = post(&dev, "/v1/proxy", bad, &[]).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_body")),
            "{body}"
        );
    }
    server.stop().await;
}

/// An upstream that answers `{"ok": true}` to each request once
/// `release` is sent `true`, and says on `seen` when one arrives: until
/// then the action calling it runs, holding what it booked.
async fn held_upstream() -> (
    String,
    tokio::sync::watch::Sender<bool>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (release, released) = tokio::sync::watch::channel(false);
    let (seen_tx, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut released = released.clone();
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = seen_tx.send(());
                let _ = released.wait_for(|r| *r).await;
                let body = br#"{"ok":true}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.write_all(body).await;
            });
        }
    });
    (url, release, seen)
}

/// A run that validates its input parses it into values: their cost is
/// booked from the server's room for parsed bodies while the run lasts.
/// One environment holds at most three quarters of it: past its share a
/// request waits for room, then is refused (503), and one larger than the
/// share is refused at once (413) — through `/mcp` and as an async action
/// too —, while the other environment still finds room. An input no run
/// validates is only passed on, and books nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_a_run_validates_are_parsed_within_the_servers_room() {
    let (held, release, mut seen) = held_upstream().await;
    let mock = MockServer::start(Arc::new(|_: &MockRequest| {
        MockResponse::json(200, &json!({"ok": true}))
    }))
    .await
    .unwrap();
    let providers = format!(
        "hold:\n  auth_mode: API_KEY\n  proxy:\n    base_url: {held}\nmock:\n  auth_mode: API_KEY\n  proxy:\n    base_url: {}\n",
        mock.url()
    );
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    // An environment's share: 3 MiB.
    config.max_parsed_bytes = 4 << 20;
    config.room_wait = std::time::Duration::ZERO;
    let server = start_with(config, &MasterKey::generate(), &providers).await;
    let yaml = "
integrations:
  mock-int:
    actions:
      proxy:
        endpoint: POST /proxy
        input: ProxyInput
      raw:
        endpoint: POST /raw
models:
  ProxyInput:
    endpoint: string
";
    let (dev, prod) = (
        Client::new(&server, DEV_KEY),
        Client::new(&server, PROD_KEY),
    );
    for (c, provider) in [(&dev, "hold"), (&prod, "mock")] {
        deploy_scripts(
            c,
            yaml,
            "mock-int",
            &[
                (guests::ACTION_PROXY, "proxy", ScriptKind::Action),
                (guests::ACTION_NOOP, "raw", ScriptKind::Action),
            ],
        )
        .await;
        c.integration_and_connection(
            "mock-int",
            provider,
            json!({"connection_id": "c1", "api_key": "k"}),
        )
        .await;
    }
    let trigger =
        |name: &str, input: String| format!(r#"{{"action_name":"{name}","input":{input}}}"#);
    // About 2 MiB once parsed: it runs, its upstream holding it.
    let first = {
        let dev = Client::new(&server, DEV_KEY);
        let body = trigger("proxy", padded("/a", 2 << 20));
        tokio::spawn(async move { post(&dev, "/action/trigger", body, &[]).await })
    };
    let mut first = first;
    tokio::select! {
        _ = seen.recv() => {}
        ended = &mut first => panic!("the first action did not reach its upstream: {ended:?}"),
    }
    // Another as large finds no room in dev's share.
    let (status, body) = post(
        &dev,
        "/action/trigger",
        trigger("proxy", padded("/b", 2 << 20)),
        &[],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("server_busy")),
        "{body}"
    );
    // One larger than the share never would.
    let (status, body) = post(
        &dev,
        "/action/trigger",
        trigger("proxy", padded("/c", 7 << 19)),
        &[],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("at most 3 MiB"), "{message}");
    // Nor would it as an async action: refused before it is queued.
    let (status, body) = post(
        &dev,
        "/action/trigger",
        trigger("proxy", padded("/c", 7 << 19)),
        &[("x-async", "true")],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    let (status, body) = post(
        &dev,
        "/mcp",
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"proxy","arguments":{}}}}}"#,
            padded("/d", 7 << 19)
        ),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("payload_too_large"), "{message}");
    // Prod has room of its own, within what is left.
    let (status, body) = post(
        &prod,
        "/action/trigger",
        trigger("proxy", padded("/e", 1 << 20)),
        &[],
    )
    .await;
    assert_eq!(
        (status, &body["data"]),
        (200, &json!({"ok": true})),
        "{body}"
    );
    // What no run validates is passed on, booking nothing.
    let (status, body) = post(
        &dev,
        "/action/trigger",
        trigger("raw", padded("/f", 7 << 19)),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The held run ends, and its room is free again.
    release.send(true).unwrap();
    let (status, body) = first.await.unwrap();
    assert_eq!(
        (status, &body["data"]),
        (200, &json!({"ok": true})),
        "{body}"
    );
    let (status, body) = post(
        &dev,
        "/action/trigger",
        trigger("proxy", padded("/g", 2 << 20)),
        &[],
    )
    .await;
    assert_eq!(
        (status, &body["data"]),
        (200, &json!({"ok": true})),
        "{body}"
    );
    server.stop().await;
}

/// A deploy's manifest is parsed within the same room: a nango.json past
/// its bound is refused from its text (400), and one whose values would
/// take more than an environment's share is refused before it is parsed
/// (413).
#[tokio::test]
async fn a_deploys_manifest_is_parsed_within_the_servers_room() {
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.max_parsed_bytes = 4 << 20;
    config.room_wait = std::time::Duration::ZERO;
    let server = start_with(config, &MasterKey::generate(), "").await;
    let dev = Client::new(&server, DEV_KEY);
    let deploy = |nango_json: String| {
        format!(r#"{{"nango_yaml": "", "nango_json": {nango_json}, "components": []}}"#)
    };
    let (status, body) = post(
        &dev,
        "/sluice/deploy",
        deploy(format!(r#"[{{"pad": "{}"}}]"#, "x".repeat(9 << 20))),
        &[],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_deploy")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("larger than 8 MiB"), "{message}");
    let (status, body) = post(
        &dev,
        "/sluice/deploy",
        deploy(format!("[{}]", padded("/", 5 << 20))),
        &[],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("deploy's manifest"), "{message}");
    server.stop().await;
}

/// A `PUT /sluice/components/<sha>` whose head declares `declared` bytes
/// and that sends none of them yet: the server holds it open, reading,
/// until they come (or it answers without them).
async fn put_head(server: &Server, key: &str, sha: &str, declared: usize) -> TcpStream {
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /sluice/components/{sha} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\ncontent-length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// The answer read from `s`: its status and JSON body.
async fn answer(s: &mut TcpStream) -> (u16, Value) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed without an answer");
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while got.len() < end + len {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed within the answer");
        got.extend_from_slice(&buf[..n]);
    }
    (
        status,
        serde_json::from_slice(&got[end..end + len]).unwrap_or(Value::Null),
    )
}

/// `bytes` uploaded whole, with `reqwest`: the status.
async fn upload(c: &Client, bytes: Vec<u8>) -> (u16, Value) {
    let resp = c
        .http
        .put(format!(
            "{}/sluice/components/{}",
            c.base,
            sha256_hex(&bytes)
        ))
        .bearer_auth(&c.key)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// An upload is weighed against its environment's room among uploads
/// not yet deployed before any of its body is read: one larger than the
/// whole room is 413 naming it, one past what is left 429 — each
/// answered while its body has not arrived.
#[tokio::test]
async fn an_upload_past_its_environments_room_is_refused_before_it_is_read() {
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.max_pending_upload_bytes = 10_000;
    let server = start_with(config, &MasterKey::generate(), "").await;
    let dev = Client::new(&server, DEV_KEY);
    let sha = "ab".repeat(32);
    let mut s = put_head(&server, DEV_KEY, &sha, 20_000).await;
    let (status, body) = answer(&mut s).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("at most 10000 bytes of components uploaded and not deployed"),
        "{message}"
    );
    assert_eq!(upload(&dev, vec![1; 6_000]).await.0, 200);
    let mut s = put_head(&server, DEV_KEY, &sha, 5_000).await;
    let (status, body) = answer(&mut s).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_request")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("6000 bytes of components uploaded"),
        "{message}"
    );
    // A refused upload took no room: what is left still fits.
    assert_eq!(upload(&dev, vec![2; 4_000]).await.0, 200);
    server.stop().await;
}

/// Uploads held in memory are bounded across the server, each counted
/// twice (the body and the store's copy of it) from its declared length
/// before it is read: one environment holds at most three quarters of
/// the room, so another's uploads still fit; an upload larger than a
/// share is 413 at once, and room given back is room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_held_in_memory_are_bounded_and_each_environment_keeps_room() {
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    // An environment's share: 3 MiB, an upload of 1 MiB booking 2.
    config.max_held_upload_bytes = 4 << 20;
    config.room_wait = std::time::Duration::ZERO;
    let server = start_with(config, &MasterKey::generate(), "").await;
    let (dev, prod) = (
        Client::new(&server, DEV_KEY),
        Client::new(&server, PROD_KEY),
    );
    // Two of dev's, each 1 MiB and not sent yet: one is held, reading,
    // the other finds no room in dev's share.
    let (a, b) = (vec![0xa; 1 << 20], vec![0xb; 1 << 20]);
    let mut sa = put_head(&server, DEV_KEY, &sha256_hex(&a), a.len()).await;
    let mut sb = put_head(&server, DEV_KEY, &sha256_hex(&b), b.len()).await;
    let (refused, (mut held, body)) = tokio::select! {
        answered = answer(&mut sa) => (answered, (sb, b)),
        answered = answer(&mut sb) => (answered, (sa, a)),
    };
    assert_eq!(
        (refused.0, refused.1["error"]["code"].as_str()),
        (503, Some("server_busy")),
        "{}",
        refused.1
    );
    // Larger than a share: never.
    let mut s = put_head(&server, DEV_KEY, &"0c".repeat(32), 2 << 20).await;
    let (status, refused) = answer(&mut s).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{refused}"
    );
    // Prod's upload fits beside dev's held one.
    assert_eq!(upload(&prod, vec![4; 1 << 20]).await.0, 200);
    // The held one's body comes: it is stored, and its room is free again.
    held.write_all(&body).await.unwrap();
    let (status, stored) = answer(&mut held).await;
    assert_eq!(
        (status, stored["size"].as_u64()),
        (200, Some(1 << 20)),
        "{stored}"
    );
    assert_eq!(upload(&dev, vec![5; 1 << 20]).await.0, 200);
    server.stop().await;
}

/// A request's head, declaring a body of `declared` bytes
/// (`transfer-encoding: chunked` when `None`), sent with none of it yet.
async fn post_head(server: &Server, key: &str, declared: Option<usize>) -> TcpStream {
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let length = match declared {
        Some(n) => format!("content-length: {n}"),
        None => "transfer-encoding: chunked".to_string(),
    };
    let head = format!(
        "POST /action/trigger HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\n{length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// The API's request bodies are held within the server's room for them,
/// booked for the environment whose key sent them: a declared length
/// before any of it is read (past the environment's share 413, answered
/// at once; no room left, 503), a body of unknown length as it arrives
/// (its read fails when no room is left); another environment still
/// finds room, and room a request gives back is room again.
#[tokio::test]
async fn request_bodies_are_held_within_the_servers_room() {
    let data = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    // An environment's share: 3 MiB.
    config.max_held_body_bytes = 4 << 20;
    config.room_wait = std::time::Duration::ZERO;
    let server = start_with(config, &MasterKey::generate(), "").await;
    let (dev, prod) = (
        Client::new(&server, DEV_KEY),
        Client::new(&server, PROD_KEY),
    );
    // A body no action is named in: refused (400, the original's legacy
    // message) once read, so whether it was read says whether it had room.
    let body = |bytes: usize| format!(r#"{{"input":"{}"}}"#, "x".repeat(bytes - 12));
    // Dev's 2 MiB body, its head sent and its bytes not: held.
    let mut held = post_head(&server, DEV_KEY, Some(2 << 20)).await;
    // Another as large finds no room in dev's share (once the first is
    // booked: its head was only just sent).
    let t = std::time::Instant::now();
    loop {
        let (status, got) = post(&dev, "/action/trigger", body(2 << 20), &[]).await;
        if status == 503 {
            assert_eq!(got["error"]["code"], "server_busy", "{got}");
            break;
        }
        assert_eq!(status, 400, "{got}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "the held body was never booked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // One larger than the share is refused before its body is sent.
    let mut over = post_head(&server, DEV_KEY, Some(7 << 19)).await;
    let (status, got) = answer(&mut over).await;
    assert_eq!(
        (status, got["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{got}"
    );
    assert!(
        got["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 3 MiB"),
        "{got}"
    );
    // A chunked body is booked as it arrives: past what is left, it is
    // refused as a declared one is.
    let mut chunked = post_head(&server, DEV_KEY, None).await;
    let chunk = vec![b' '; 256 << 10];
    for _ in 0..8 {
        let head = format!("{:x}\r\n", chunk.len());
        if chunked.write_all(head.as_bytes()).await.is_err()
            || chunked.write_all(&chunk).await.is_err()
            || chunked.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = chunked.write_all(b"0\r\n\r\n").await;
    let (status, got) = answer(&mut chunked).await;
    assert_eq!(
        (status, got["error"]["code"].as_str()),
        (503, Some("server_busy")),
        "{got}"
    );
    let message = got["error"]["message"].as_str().unwrap();
    assert!(message.contains("request bodies"), "{message}");
    // Prod has room of its own, within what is left.
    let (status, got) = post(&prod, "/action/trigger", body(1 << 20), &[]).await;
    assert_eq!(status, 400, "{got}");
    // The held body ends, and its room is free again.
    let rest = format!(r#"{{"input":"{}"}}"#, "x".repeat((2 << 20) - 12));
    held.write_all(rest.as_bytes()).await.unwrap();
    let (status, got) = answer(&mut held).await;
    assert_eq!(status, 400, "{got}");
    let (status, got) = post(&dev, "/action/trigger", body(2 << 20), &[]).await;
    assert_eq!(status, 400, "{got}");
    server.stop().await;
}
