//! `POST /webhook/:environment/:integration` (§4.6): providers' webhooks,
//! no API key. The signature is checked by the provider's routing script
//! (`crate::routing`); a webhook that passes is stored (flushed) before
//! the answer, then a worker runs the matching `onWebhookPayloadReceived`
//! scripts for each connection it names and forwards it to the app. A
//! webhook stored but not yet handled when the server stops is handled at
//! the next start.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_runtime::records::ConnectionRef;

use super::ApiPath;
use crate::app::{App, EnvState};
use crate::error::{ApiError, ApiResult};
use crate::routing::{self, Incoming, Lookup, Route, Secrets};

/// Accepted webhooks not yet handled, keyed `<received µs>\x1f<id>`.
pub const INCOMING: &str = "incoming-webhooks";

/// An accepted webhook as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    pub id: String,
    pub provider_config_key: String,
    pub provider: String,
    pub received_at: DateTime<Utc>,
    pub routes: Vec<Route>,
    pub forward: Value,
    /// The incoming headers the app gets with the forward.
    pub headers: Vec<(String, String)>,
    /// Its forwards are queued (only its scripts are left to run).
    #[serde(default)]
    pub forwarded: bool,
    /// Starts that found its scripts started: they were cut short. Past
    /// [`crate::runner::TRIGGER_ATTEMPTS`] its scripts are given up
    /// (its forwards are still made), so a script that takes the process
    /// down does not run at every start.
    #[serde(default)]
    pub restarts: u32,
    /// When its scripts first started: noted (flushed) with `forwarded`,
    /// before they run. A start that finds it set runs them again and
    /// tells the app of every record changed since, as what the runs a
    /// crash cut short saved is unchanged to the new ones.
    #[serde(default)]
    pub scripts_started_at: Option<DateTime<Utc>>,
    /// Whether its scripts were running when the process stopped: set
    /// (flushed) as they start, cleared by the start that counts the
    /// restart, so a webhook that waited through a restart for its turn
    /// is not counted. `None`: stored by an earlier version, which did
    /// not keep it (then `scripts_started_at` says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
}

impl Accepted {
    /// Its scripts were cut short too often to run again; its routes
    /// still name the connections its forwards are for.
    pub fn scripts_given_up(&self) -> bool {
        // (Starts counted before their scripts had started, by an earlier
        // version, cut nothing short.)
        self.restarts >= crate::runner::TRIGGER_ATTEMPTS && self.scripts_started_at.is_some()
    }
}

/// Bytes of providers' webhook bodies held at once, process-wide, from
/// reading to the end of their handling (the route has no key: a client
/// sending large bodies waits for room instead of filling the memory).
const WEBHOOK_BYTES_HELD: usize = 128 << 20;

/// Room for [`WEBHOOK_BYTES_HELD`], in KiB.
static WEBHOOK_ROOM: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(WEBHOOK_BYTES_HELD >> 10);

/// Of which one environment holds at most this much: another's slow or
/// large webhooks cannot take the whole room from it.
const WEBHOOK_BYTES_PER_ENV: usize = WEBHOOK_BYTES_HELD / 2;

/// Each environment's share of the room (see [`WEBHOOK_BYTES_PER_ENV`]),
/// in KiB, made when it first takes a webhook.
fn env_room(env: uuid::Uuid) -> Arc<tokio::sync::Semaphore> {
    type Rooms = std::collections::HashMap<uuid::Uuid, Arc<tokio::sync::Semaphore>>;
    static ROOMS: std::sync::LazyLock<std::sync::Mutex<Rooms>> =
        std::sync::LazyLock::new(Default::default);
    ROOMS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(env)
        .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(WEBHOOK_BYTES_PER_ENV >> 10)))
        .clone()
}

/// A webhook's room: the same KiB of the process's and of its
/// environment's.
struct Room {
    all: tokio::sync::SemaphorePermit<'static>,
    env: tokio::sync::OwnedSemaphorePermit,
    env_room: Arc<tokio::sync::Semaphore>,
}

/// How long a webhook waits for room before it is refused (503, which
/// providers retry): a few clients holding the room cannot keep the
/// others waiting unanswered.
const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `bytes` in KiB, rounded up, never more than an environment's share of
/// the room (or it would wait for ever).
fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024).clamp(1, WEBHOOK_BYTES_PER_ENV >> 10)
}

/// `n` KiB of the room, its environment's share first, waiting at most
/// [`ROOM_WAIT`] in all for them.
async fn take_room(env_room: Arc<tokio::sync::Semaphore>, n: usize) -> ApiResult<Room> {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    let busy = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook_busy",
            "the server is holding as many webhook bodies as it takes at once; retry later",
        )
    };
    let closed =
        |e: tokio::sync::AcquireError| ApiError::internal(format!("no room for the webhook: {e}"));
    let deadline = tokio::time::Instant::now() + ROOM_WAIT;
    let env = tokio::time::timeout_at(deadline, env_room.clone().acquire_many_owned(n))
        .await
        .map_err(|_| busy())?
        .map_err(closed)?;
    let all = tokio::time::timeout_at(deadline, WEBHOOK_ROOM.acquire_many(n))
        .await
        .map_err(|_| busy())?
        .map_err(closed)?;
    Ok(Room { all, env, env_room })
}

/// The largest webhook body taken (GitHub's cap is 25 MB; most are
/// kilobytes), well under the room, so a few bodies never take it all.
const WEBHOOK_MAX_BYTES: usize = 32 << 20;

/// Grows `room` to `needed` KiB: at once when there is room; otherwise it
/// lets go of what it holds and waits (at most [`ROOM_WAIT`]) for the
/// whole, so no two bodies each hold part of the room waiting for the
/// other's.
async fn grow(room: &mut Room, needed: usize) -> ApiResult<()> {
    let have = room.all.num_permits();
    if needed <= have {
        return Ok(());
    }
    let more = u32::try_from(needed - have).unwrap_or(u32::MAX);
    if let Ok(env) = room.env_room.clone().try_acquire_many_owned(more)
        && let Ok(all) = WEBHOOK_ROOM.try_acquire_many(more)
    {
        room.env.merge(env);
        room.all.merge(all);
        return Ok(());
    }
    // Let go of what it holds first, so no two bodies each hold part of
    // the room waiting for the other's.
    let env_room = room.env_room.clone();
    drop(room.all.split(have));
    drop(room.env.split(have));
    *room = take_room(env_room, needed).await?;
    Ok(())
}

/// The body, at most `limit` bytes, by the request's deadline, taking room
/// for its bytes as they arrive: a client that declares a large body and
/// sends it slowly holds only what it sent (booked from the declared
/// length, three such clients held the room, and every other webhook
/// waited unanswered).
async fn read_within_room(
    req: axum::extract::Request,
    limit: usize,
    env_room: Arc<tokio::sync::Semaphore>,
) -> ApiResult<(Bytes, Room)> {
    use futures_util::StreamExt as _;
    let limit = limit.min(WEBHOOK_MAX_BYTES);
    // A provider sends at datacenter speed: a minute, and a second more per
    // 256 KiB declared, not the API's allowance for a slow link (which let
    // a client trickle a large body for half an hour, holding its room).
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(limit as u64)
        .min(limit as u64);
    let own =
        tokio::time::Instant::now() + std::time::Duration::from_secs(60 + declared / (256 << 10));
    let deadline = match req.extensions().get::<super::BodyDeadline>().copied() {
        Some(super::BodyDeadline(at)) => Some(super::BodyDeadline(at.min(own))),
        None => Some(super::BodyDeadline(own)),
    };
    let mut room = take_room(env_room, 1).await?;
    let mut stream = req.into_body().into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::invalid_body(format!("cannot read the request body: {e}"))
            })?;
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "The request body is over the size limit.",
                ));
            }
            grow(&mut room, kib(buf.len() + chunk.len())).await?;
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match deadline {
        Some(super::BodyDeadline(at)) => match tokio::time::timeout_at(at, read).await {
            Ok(read) => read?,
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "The request body did not arrive in time.",
                ));
            }
        },
        None => read.await?,
    }
    Ok((Bytes::from(buf), room))
}

pub async fn receive(
    State(app): State<Arc<App>>,
    ApiPath((environment, pck)): ApiPath<(String, String)>,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let env = uuid::Uuid::parse_str(&environment)
        .ok()
        .and_then(|id| app.store.environment_by_id(id))
        .and_then(|e| app.env(&e))
        .ok_or_else(|| {
            ApiError::not_found(
                "unknown_environment",
                format!("no environment `{environment}`"),
            )
        })?;
    let integration = env.store.integration(&pck).await?.ok_or_else(|| {
        ApiError::not_found(
            "unknown_provider_config",
            format!("No integration `{pck}` in this environment"),
        )
    })?;
    let Some(script) = app
        .providers
        .get(&integration.provider)
        .and_then(|p| p.definition.get("webhook_routing_script"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    // Read (and decompressed) only now, for an environment and an
    // integration that take webhooks, and within the room for webhook
    // bodies: the route has no key to check first.
    let encoding = super::content_encoding(&headers);
    let limit = app.config.max_body_bytes.min(WEBHOOK_MAX_BYTES);
    // The query string: some scripts read a parameter of it.
    let query = req.uri().query().unwrap_or("").to_string();
    let (body, mut room) = read_within_room(req, limit, env_room(env.store.id())).await?;
    if body.is_empty() && !routing::accepts_empty_body(&script) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let body = super::decoded(encoding, body, limit).await?;
    // A decompressed body holds more: its room grows to match.
    grow(&mut room, kib(body.len())).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let parsed: Value = if body.is_empty() {
        json!({})
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        Value::Object(
            url::form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect(),
        )
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_body",
                format!("the webhook body is not JSON (nor a form): {e}"),
            )
        })?
    };
    let list: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.as_str().to_ascii_lowercase(),
                v.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    let request = Incoming {
        headers: &list,
        raw: &body,
        body: &parsed,
        content_type: &content_type,
        query: &query,
        now: Utc::now().timestamp(),
    };
    // The connection a script takes its secret from (GitLab's, PagerDuty's).
    let connection_metadata = match routing::connection_to_read(&script, &request) {
        Some(cid) => env.store.connection(&pck, &cid).await?.map(|c| c.metadata),
        None => None,
    };
    let secrets = Secrets {
        webhook_secret: integration.webhook_secret.as_deref(),
        oauth_client_id: integration.oauth_client_id.as_deref(),
        oauth_client_secret: integration.oauth_client_secret.as_deref(),
        connection_metadata: connection_metadata.as_ref(),
    };
    let routed = match routing::route_webhook(&script, &request, &secrets) {
        None => {
            // Its signature cannot be checked, nor its connections found:
            // nothing is forwarded unverified. Said (once per integration
            // and script), so it is not silent.
            static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
            let what = format!("{}\u{1f}{pck}\u{1f}{script}", env.store.id());
            let mut said = SAID
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !said.contains(&what) && said.len() < 10_000 {
                said.push(what);
                app.config.events.say(&format!(
                    "webhooks for integration `{pck}` are dropped: sluice has no `{script}` (the webhook_routing_script of provider `{}`); they are answered 204",
                    integration.provider
                ));
            }
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Some(Err(refused)) => {
            let status = StatusCode::from_u16(refused.status).unwrap_or(StatusCode::BAD_REQUEST);
            return Err(ApiError::new(status, refused.code, refused.message));
        }
        Some(Ok(r)) => r,
    };
    let now = Utc::now();
    let accepted = Accepted {
        id: uuid::Uuid::new_v4().to_string(),
        provider_config_key: pck,
        provider: integration.provider,
        received_at: now,
        routes: routed.routes,
        forward: routed.forward,
        headers: routing::forwarded_headers(&list),
        forwarded: false,
        restarts: 0,
        scripts_started_at: None,
        running: None,
    };
    let key = format!("{:020}\u{1f}{}", now.timestamp_micros().max(0), accepted.id);
    env.store.put_doc(INCOMING, &key, &accepted).await?;
    drop(body);
    tokio::spawn(async move {
        // The room is kept until it is handled: it holds the webhook.
        let _room = room;
        handle(app.clone(), env.clone(), key, accepted).await;
    });
    let status = StatusCode::from_u16(routed.status).unwrap_or(StatusCode::OK);
    Ok(match routed.response {
        Ok(json) => (status, axum::Json(json)).into_response(),
        Err(text) => (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response(),
    })
}

/// The connections each lookup of a webhook's routes finds, in order of
/// connection id: a lookup by connection id is one read; the others
/// (metadata, configuration, every connection) are matched in one pass
/// over the integration's connections that holds one at a time.
async fn resolve<'a>(
    env: &EnvState,
    pck: &str,
    routes: &'a [routing::Route],
) -> ApiResult<std::collections::HashMap<&'a Lookup, Vec<String>>> {
    let lookups: Vec<&'a Lookup> = routes.iter().filter_map(|r| r.lookup.as_ref()).collect();
    let mut matcher = routing::Matcher::new(lookups.iter().copied());
    if !matcher.is_empty() {
        env.store
            .each_connection(Some(pck), |c| matcher.see(&c))
            .await?;
    }
    let mut found = std::collections::HashMap::new();
    for lookup in lookups {
        if found.contains_key(lookup) {
            continue;
        }
        let ids = match lookup {
            Lookup::ConnectionId(cid) => {
                if env.store.connection_exists(pck, cid).await? {
                    vec![cid.clone()]
                } else {
                    Vec::new()
                }
            }
            other => matcher.found(other),
        };
        found.insert(lookup, ids);
    }
    Ok(found)
}

/// Forwards an accepted webhook to the app, runs the webhook scripts it
/// asks for, and forgets it.
pub async fn handle(app: Arc<App>, env: Arc<EnvState>, key: String, a: Accepted) {
    // A step that fails for the store is tried again a few times (as the
    // webhook now stands: forwarded or not); past them the webhook stays
    // stored, and the next start handles it again.
    let mut a = a;
    let mut wait = std::time::Duration::from_secs(1);
    // Forwards an earlier try queued: a try that failed after them (its
    // note not written) does not queue them again.
    let mut queued = false;
    for attempt in 1..=HANDLE_TRIES {
        a.forwarded |= queued;
        match handle_once(&app, &env, &key, &a, &mut queued).await {
            Ok(()) => {
                // Unflushed: were it lost in a crash, the webhook is
                // handled again.
                let _ = env.store.delete_doc_unflushed(INCOMING, &key).await;
                return;
            }
            Err(e) if attempt == HANDLE_TRIES => {
                app.config.events.say(&format!(
                    "{}: webhook {} ({}) could not be handled ({}); it is kept and handled at the next start",
                    env.name(),
                    a.id,
                    a.provider_config_key,
                    e.message
                ));
            }
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
                match env.store.doc::<Accepted>(INCOMING, &key).await {
                    Ok(Some(now)) => a = now,
                    // Handled meanwhile (another start's task).
                    Ok(None) => return,
                    Err(_) => {}
                }
            }
        }
    }
}

/// Tries of a webhook's handling over a failing store (1, 2, 4 and 8 s
/// apart).
const HANDLE_TRIES: u32 = 5;

async fn handle_once(
    app: &Arc<App>,
    env: &Arc<EnvState>,
    key: &str,
    a: &Accepted,
    queued: &mut bool,
) -> ApiResult<()> {
    let pck = a.provider_config_key.clone();
    let catalog = env.deployment().map(|d| d.catalog.clone());
    // Each connection once, in the order first matched; each lookup made
    // once (a batch of thousands of events names a few connections).
    let mut matched: Vec<String> = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let found = resolve(env, &pck, &a.routes).await?;
    let mut runs: Vec<(String, String, &Value)> = Vec::new();
    for route in &a.routes {
        let Some(lookup) = &route.lookup else {
            continue;
        };
        let ids = found.get(lookup).cloned().unwrap_or_default();
        let subscribed: Vec<String> = catalog
            .as_ref()
            .and_then(|c| c.config.integration(&pck))
            .map(|i| {
                i.distinct_syncs()
                    .filter(|s| route.runs(&s.webhook_subscriptions))
                    .map(|s| s.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        for cid in &ids {
            for sync in &subscribed {
                runs.push((cid.clone(), sync.clone(), &route.input));
            }
        }
        for id in ids {
            if seen.insert(id.clone()) {
                matched.push(id);
            }
        }
    }
    if a.scripts_given_up() {
        runs.clear();
    }
    // Forwarded first, so the app does not wait for the scripts (each
    // may run for an hour); noted (flushed) as the first script starts,
    // once it has its execution permit, so a crash during the scripts
    // runs them again without forwarding again, and a stop while the
    // webhook only waited for a permit is not counted against it.
    if !a.forwarded {
        forward(app, env, a, &matched).await?;
        *queued = true;
    }
    // 0: to note; 1: noted; 2: the note failed.
    let note = std::sync::atomic::AtomicU8::new(u8::from(
        runs.is_empty() || (a.forwarded && a.running == Some(true)),
    ));
    // After a crash, the changes since the first attempt are told once
    // per connection and sync: with its last run.
    let last_of: std::collections::HashMap<(&str, &str), usize> = runs
        .iter()
        .enumerate()
        .map(|(i, (cid, sync, _))| ((cid.as_str(), sync.as_str()), i))
        .collect();
    let last: std::collections::HashSet<usize> = last_of.into_values().collect();
    for (i, (cid, sync, input)) in runs.iter().enumerate() {
        let conn = ConnectionRef {
            provider_config_key: pck.clone(),
            connection_id: cid.clone(),
        };
        let resumed = a.scripts_started_at.filter(|_| last.contains(&i));
        let on_start = (note.load(Ordering::SeqCst) == 0).then_some(async {
            let noted = Accepted {
                forwarded: true,
                scripts_started_at: a.scripts_started_at.or_else(|| Some(Utc::now())),
                running: Some(true),
                ..a.clone()
            };
            let written = env.store.put_doc(INCOMING, key, &noted).await;
            note.store(if written.is_ok() { 1 } else { 2 }, Ordering::SeqCst);
            written.map_err(ApiError::from)
        });
        // A script's failure is in the connection's history (and, when
        // the app asked for them, in a failure webhook); a note that could
        // not be written fails the handling, which is tried again.
        let ran = crate::runner::run_webhook(app, env, &conn, sync, input, resumed, on_start).await;
        if note.load(Ordering::SeqCst) == 2 {
            return ran;
        }
    }
    Ok(())
}

/// Queues an accepted webhook's forwards to the app: one per matched
/// connection, or the raw payload once when it matched none.
async fn forward(
    app: &Arc<App>,
    env: &Arc<EnvState>,
    a: &Accepted,
    matched: &[String],
) -> ApiResult<()> {
    let pck = &a.provider_config_key;
    // The integration says not to (`forward_webhooks: false`).
    if env
        .store
        .integration(pck)
        .await?
        .is_some_and(|i| !i.forward_webhooks)
    {
        return Ok(());
    }
    // Where each goes: the environment's URLs, or a matched connection's
    // `webhook_url_override`.
    let sends = |s: &crate::webhooks::Settings| {
        [&s.primary_url, &s.secondary_url]
            .into_iter()
            .flatten()
            .any(|u| !u.is_empty())
    };
    let settings = crate::webhooks::settings(env).await?;
    if matched.is_empty() {
        if sends(&settings) {
            let seed = format!("{}:0", a.id);
            app.webhooks
                .enqueue_with(env, &settings, &a.forward, &a.headers, Some(&seed))
                .await?;
        }
        return Ok(());
    }
    // One forward per connection, each built as it is queued.
    for cid in matched {
        let settings = crate::webhooks::for_connection(settings.clone(), env, pck, cid).await?;
        if !sends(&settings) {
            continue;
        }
        let body = json!({
            "from": a.provider,
            "providerConfigKey": pck,
            "type": "forward",
            "payload": a.forward,
            "connectionId": cid,
        });
        let seed = format!("{}:{cid}", a.id);
        app.webhooks
            .enqueue_with(env, &settings, &body, &a.headers, Some(&seed))
            .await?;
    }
    Ok(())
}

/// At start, before listening: the webhooks a previous process accepted
/// and did not finish; [`handle`] each (in a task, so the start is not
/// held up).
pub async fn pending(
    app: &Arc<App>,
) -> Result<Vec<(Arc<EnvState>, String, Accepted)>, crate::ServerError> {
    let mut out = Vec::new();
    for env in app.envs() {
        let mut after: Option<String> = None;
        loop {
            let page: Vec<(String, Accepted)> = env
                .store
                .docs(INCOMING, "", after.as_deref(), 500, false)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (k, mut a) in page {
                // Only a webhook whose scripts had started was cut short
                // by the stop: one still waiting its turn (behind others,
                // or for an execution) keeps its scripts however many
                // restarts it waits through.
                if a.running.unwrap_or(a.scripts_started_at.is_some()) {
                    a.restarts += 1;
                    a.running = Some(false);
                    // Said once, at the start that gives them up.
                    if a.restarts == crate::runner::TRIGGER_ATTEMPTS && !a.routes.is_empty() {
                        eprintln!(
                            "sluice: the scripts of webhook {} ({}) were cut short {} times; they are not run again",
                            a.id, a.provider_config_key, a.restarts
                        );
                    }
                    env.store.put_doc(INCOMING, &k, &a).await?;
                }
                out.push((env.clone(), k, a));
            }
        }
    }
    Ok(out)
}
