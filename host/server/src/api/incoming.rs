//! `POST /webhook/:environment/:integration` (§4.6): providers' webhooks,
//! no API key. The signature is checked by the provider's routing script
//! (`crate::routing`); a webhook that passes is stored (flushed) before
//! the answer, then a worker runs the matching `onWebhookPayloadReceived`
//! scripts for each connection it names and forwards it to the app. A
//! webhook stored but not yet handled when the server stops is handled at
//! the next start.
//!
//! The route has no key, so what a webhook may make the server hold is
//! bounded before it is made: its bytes as they arrive (a share of its
//! environment's room), then a few copies of its text until it is handled
//! ([`TEXT_COPIES`]), and, while it is parsed and routed, what the parsed
//! copies cost, estimated from the text before parsing ([`parse_cost`],
//! [`PARSE_BYTES`]). A serde_json value costs tens of times its text (a
//! `[0,0,…]` of 30 MiB parsed into 1.2 GB): what is kept of a routed
//! webhook is text, never the parsed value. Parsing, routing and writing
//! texts run on the blocking pool, two at a time, not on the async
//! workers.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sluice_runtime::records::ConnectionRef;

use super::ApiPath;
use crate::app::{App, EnvState};
use crate::budget::parse_cost;
use crate::error::{ApiError, ApiResult};
use crate::routing::{self, Incoming, Lookup, Route, Secrets};
use crate::webhooks::About;

/// Accepted webhooks not yet handled, keyed `<received µs>\x1f<id>`.
pub const INCOMING: &str = "incoming-webhooks";

/// An accepted webhook as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    pub id: String,
    pub provider_config_key: String,
    pub provider: String,
    pub received_at: DateTime<Utc>,
    /// Where its scripts run. Each route's input is in `inputs` (its
    /// `input` then `null`), or, in a webhook an earlier build stored,
    /// its `input`.
    pub routes: Vec<Route>,
    /// What is forwarded, parsed, as an earlier build stored it; `null`
    /// (and left out) when `forward_text` holds it.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub forward: Value,
    /// What is forwarded, as `JSON.stringify` writes it: the text the app
    /// gets. Kept as text (its parse costs tens of times more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_text: Option<Text>,
    /// Each route's input as the script gets it: `None` where it is the
    /// forward itself (its text is `forward_text`'s).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Option<Text>>,
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

    /// What is forwarded, as text.
    pub fn forward_text(&self) -> Cow<'_, str> {
        match &self.forward_text {
            Some(text) => Cow::Borrowed(text.get()),
            None => Cow::Owned(sluice_runtime::js::stringify(&self.forward)),
        }
    }

    /// Route `i`'s input as its scripts get it.
    pub fn input_text(&self, i: usize) -> Cow<'_, str> {
        match &self.forward_text {
            Some(forward) => match self.inputs.get(i) {
                Some(Some(own)) => Cow::Borrowed(own.get()),
                _ => Cow::Borrowed(forward.get()),
            },
            None => Cow::Owned(
                self.routes
                    .get(i)
                    .map(|r| r.input.to_string())
                    .unwrap_or_else(|| "null".into()),
            ),
        }
    }

    /// One an earlier build stored (its forward and inputs parsed) made
    /// into texts, as this build keeps them.
    fn into_texts(mut self) -> ApiResult<Self> {
        if self.forward_text.is_some() {
            return Ok(self);
        }
        let (forward_text, inputs) = texts(&std::mem::take(&mut self.forward), &mut self.routes)?;
        self.forward_text = Some(forward_text);
        self.inputs = inputs;
        Ok(self)
    }
}

/// A JSON text kept as it is (never parsed again), shared: a copy of an
/// accepted webhook (the note written as its scripts start) copies none
/// of its bytes.
#[derive(Debug, Clone)]
pub struct Text(Arc<RawValue>);

impl Text {
    /// `text`, which must be JSON (it is written by serde or
    /// `JSON.stringify` from a parsed value: its depth is one the parser's
    /// limit allows, with a few levels of wrapping, so it is read without
    /// the limit).
    pub fn new(text: String) -> Result<Text, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(&text);
        de.disable_recursion_limit();
        let raw = Box::<RawValue>::deserialize(&mut de)?;
        de.end()?;
        Ok(Text(Arc::from(raw)))
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(|raw| Text(Arc::from(raw)))
    }
}

/// The texts of a routed webhook: its forward as `JSON.stringify` writes
/// it, and each route's input as serde writes it (as scripts always got
/// it), `None` for one that is the forward and has its text; the routes'
/// `input`s are emptied.
fn texts(forward: &Value, routes: &mut [Route]) -> ApiResult<(Text, Vec<Option<Text>>)> {
    let raw = |text: String| {
        Text::new(text)
            .map_err(|e| ApiError::internal(format!("a webhook's text is not JSON: {e}")))
    };
    let forward_text = sluice_runtime::js::stringify(forward);
    // The forward as serde writes it, when a route's input is the forward
    // and the two writings differ (`1.0`, integers past 2^53).
    let mut forward_serde: Option<Option<String>> = None;
    let mut inputs = Vec::with_capacity(routes.len());
    for route in routes.iter_mut() {
        let input = std::mem::take(&mut route.input);
        if input == *forward {
            let own = forward_serde
                .get_or_insert_with(|| Some(forward.to_string()).filter(|t| *t != forward_text));
            inputs.push(own.clone().map(&raw).transpose()?);
        } else {
            inputs.push(Some(raw(input.to_string())?));
        }
    }
    Ok((raw(forward_text)?, inputs))
}

/// The largest webhook body taken, as received and once decompressed. A
/// body is held a few times over ([`TEXT_COPIES`]) and its parse costs
/// tens of times its bytes, so this bounds what one webhook makes the
/// server hold: most are kilobytes (GitHub's cap is 25 MB, but its
/// pushes list 20 commits at most).
const WEBHOOK_MAX_BYTES: usize = 4 << 20;

/// How many times a webhook's text is counted in the room, from the end
/// of its reading to the end of its handling: the body as received (until
/// it is routed), the forward and the routes' inputs as kept, a forward to
/// the app as written, and that delivery's document (whose escaping
/// can double it) as stored.
const TEXT_COPIES: usize = 5;

/// The room one webhook takes at most: its largest body, [`TEXT_COPIES`]
/// times.
const WEBHOOK_BODY_ROOM: usize = TEXT_COPIES * WEBHOOK_MAX_BYTES;

/// Of the room, one environment holds at most this much: eight of the
/// largest bodies, so two (or seven) slow or stalled uploads leave room
/// for its other webhooks, and another environment's cannot take the
/// room from it.
const WEBHOOK_BYTES_PER_ENV: usize = 8 * WEBHOOK_BODY_ROOM;

/// Bytes of providers' webhook bodies held at once, process-wide, from
/// reading to the end of their handling, counted as [`TEXT_COPIES`] of
/// each (the route has no key: a client sending large bodies waits for
/// room instead of filling the memory).
const WEBHOOK_BYTES_HELD: usize = 2 * WEBHOOK_BYTES_PER_ENV;

/// Room for [`WEBHOOK_BYTES_HELD`], in KiB.
static WEBHOOK_ROOM: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(WEBHOOK_BYTES_HELD >> 10);

/// What the webhooks being parsed and routed may hold at once, beside the
/// room for their texts: each books its parse's cost estimated from its
/// text ([`parse_cost`]) times the copies its script makes
/// ([`routing::parsed_copies`]). A body whose parse would need more is
/// refused (413): dense JSON (`[0,0,…]`) past a megabyte, small objects
/// past about 1.4 MiB; 4 MiB of JSON like GitHub's payloads (long
/// strings) fits.
const PARSE_BYTES: usize = 256 << 20;

/// Room for [`PARSE_BYTES`], in KiB.
static PARSE_ROOM: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PARSE_BYTES >> 10);

/// Webhook texts parsed, routed or written (and large parsed values
/// dropped) at once, on the blocking pool: each may take a core for a
/// while, and none runs on an async worker, so a few large webhooks
/// cannot hold up every other request.
const PARSERS: usize = 2;

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

/// `bytes` in KiB, rounded up (one at least).
fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024).max(1)
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "webhook_busy",
        "the server is holding as many webhook bodies as it takes at once; retry later",
    )
}

/// `n` KiB of the room, its environment's share first, waiting at most
/// `wait` in all for them (for ever without).
async fn take_room(
    env_room: Arc<tokio::sync::Semaphore>,
    n: usize,
    wait: Option<std::time::Duration>,
) -> ApiResult<Room> {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    let closed =
        |e: tokio::sync::AcquireError| ApiError::internal(format!("no room for the webhook: {e}"));
    let env = env_room.clone().acquire_many_owned(n);
    let all = WEBHOOK_ROOM.acquire_many(n);
    let (env, all) = match wait {
        Some(wait) => {
            let deadline = tokio::time::Instant::now() + wait;
            let env = tokio::time::timeout_at(deadline, env)
                .await
                .map_err(|_| busy())?
                .map_err(closed)?;
            let all = tokio::time::timeout_at(deadline, all)
                .await
                .map_err(|_| busy())?
                .map_err(closed)?;
            (env, all)
        }
        None => {
            let env = env.await.map_err(closed)?;
            (env, all.await.map_err(closed)?)
        }
    };
    Ok(Room { all, env, env_room })
}

/// Makes `room` `needed` KiB: it lets go of what it holds past them, or
/// grows at once when there is room; otherwise it lets go of what it
/// holds and waits (at most [`ROOM_WAIT`]) for the whole, so no two
/// bodies each hold part of the room waiting for the other's.
async fn resize(room: &mut Room, needed: usize) -> ApiResult<()> {
    let have = room.all.num_permits();
    if needed <= have {
        drop(room.all.split(have - needed));
        drop(room.env.split(have - needed));
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
    let env_room = room.env_room.clone();
    drop(room.all.split(have));
    drop(room.env.split(have));
    *room = take_room(env_room, needed, Some(ROOM_WAIT)).await?;
    Ok(())
}

fn too_large(message: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
}

fn too_slow() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "The request body did not arrive in time.",
    )
}

/// How long a body may take before it must keep up [`MIN_RATE`].
const READ_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The slowest a webhook body may arrive, on average, past
/// [`READ_GRACE`] (bytes a second): a provider sends at datacenter
/// speed, and a sender trickling a body holds its room only while it
/// keeps up (before, one trickling 32 MiB over three minutes held them,
/// and two such held all of their environment's room).
const MIN_RATE: u64 = 64 << 10;

/// The body, at most `limit` bytes, taking room for its bytes as they
/// arrive: a client that declares a large body and sends it slowly holds
/// only what it sent (booked from the declared length, three such clients
/// held the room, and every other webhook waited unanswered), and only
/// while it keeps up [`MIN_RATE`] (a second per 64 KiB it sent, after
/// [`READ_GRACE`]); the whole by the request's deadline, and within a
/// minute and a second per 256 KiB declared.
async fn read_within_room(
    req: axum::extract::Request,
    limit: usize,
    env_room: Arc<tokio::sync::Semaphore>,
) -> ApiResult<(Bytes, Room)> {
    use futures_util::StreamExt as _;
    use tokio::time::{Duration, Instant};
    let limit = limit.min(WEBHOOK_MAX_BYTES);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(limit as u64)
        .min(limit as u64);
    let started = Instant::now();
    let mut whole = started + Duration::from_secs(60 + declared / (256 << 10));
    if let Some(super::BodyDeadline(at)) = req.extensions().get::<super::BodyDeadline>().copied() {
        whole = whole.min(at);
    }
    let mut room = take_room(env_room, 1, Some(ROOM_WAIT)).await?;
    let mut stream = req.into_body().into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    // Time spent waiting for room (the sender waited for the server).
    let mut waited = Duration::ZERO;
    loop {
        let keep_up = started
            + READ_GRACE
            + waited
            + Duration::from_millis((buf.len() as u64).saturating_mul(1000) / MIN_RATE);
        let Ok(next) = tokio::time::timeout_at(keep_up.min(whole), stream.next()).await else {
            return Err(too_slow());
        };
        let Some(chunk) = next else { break };
        let chunk = chunk
            .map_err(|e| ApiError::invalid_body(format!("cannot read the request body: {e}")))?;
        let len = buf.len() + chunk.len();
        if len > limit {
            return Err(too_large(format!(
                "A webhook body is at most {} MiB.",
                limit >> 20
            )));
        }
        if len > buf.capacity() {
            // The buffer's growth is in the room (as Vec would grow it,
            // never past the limit).
            let cap = len.max(buf.capacity() * 2).min(limit);
            let at = Instant::now();
            resize(&mut room, kib(cap)).await?;
            waited += at.elapsed();
            buf.reserve_exact(cap - buf.len());
        }
        buf.extend_from_slice(&chunk);
    }
    buf.shrink_to_fit();
    Ok((Bytes::from(buf), room))
}

/// [`parse_cost`] of a webhook body as the handler reads it: JSON, or a
/// form (each pair two strings in an object; Slack's `payload` field,
/// JSON parsed again, counted as the densest JSON could be).
fn body_cost(body: &[u8], form: bool, script: &str) -> usize {
    if body.is_empty() {
        return 0;
    }
    if !form {
        return parse_cost(body);
    }
    let slot = std::mem::size_of::<Value>() * 9 / 4;
    let pairs = body.iter().filter(|b| **b == b'&').count() + 1;
    let mut cost = pairs
        .saturating_mul(2 * slot + 32)
        .saturating_add(4 * slot)
        .saturating_add(body.len() + body.len() / 4);
    if script == "slackWebhookRouting" {
        // One value (and a separator) a two bytes.
        cost = cost.saturating_add(body.len().saturating_mul(slot) / 2);
    }
    cost
}

/// Runs `f` on the blocking pool, [`PARSERS`] at a time.
async fn off_worker<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PARSERS);
    let _turn = TURNS
        .acquire()
        .await
        .map_err(|e| ApiError::internal(format!("webhook work stopped: {e}")))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("webhook work failed: {e}")))
}

/// Room to parse and route a webhook whose parse costs about `bytes`,
/// waiting at most [`ROOM_WAIT`] for it; 413 past [`PARSE_BYTES`].
async fn take_parse_room(bytes: usize) -> ApiResult<tokio::sync::SemaphorePermit<'static>> {
    if bytes > PARSE_BYTES {
        return Err(too_large(format!(
            "This webhook body would take about {} MiB of memory once parsed; at most {} MiB are taken (send it smaller, or less dense).",
            bytes >> 20,
            PARSE_BYTES >> 20
        )));
    }
    let n = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    tokio::time::timeout(ROOM_WAIT, PARSE_ROOM.acquire_many(n))
        .await
        .map_err(|_| busy())?
        .map_err(|e| ApiError::internal(format!("no room to parse the webhook: {e}")))
}

/// The integration's secrets, owned (for work off the async workers).
struct OwnedSecrets {
    webhook_secret: Option<String>,
    oauth_client_id: Option<String>,
    oauth_client_secret: Option<String>,
    connection_metadata: Option<Value>,
}

impl OwnedSecrets {
    fn get(&self) -> Secrets<'_> {
        Secrets {
            webhook_secret: self.webhook_secret.as_deref(),
            oauth_client_id: self.oauth_client_id.as_deref(),
            oauth_client_secret: self.oauth_client_secret.as_deref(),
            connection_metadata: self.connection_metadata.as_ref(),
        }
    }
}

/// A webhook's request as read, owned (for work off the async workers).
struct Received {
    headers: Vec<(String, String)>,
    body: Bytes,
    content_type: String,
    query: String,
    now: i64,
}

impl Received {
    fn incoming<'a>(&'a self, parsed: &'a Value) -> Incoming<'a> {
        Incoming {
            headers: &self.headers,
            raw: &self.body,
            body: parsed,
            content_type: &self.content_type,
            query: &self.query,
            now: self.now,
        }
    }

    fn is_form(&self) -> bool {
        self.content_type
            .starts_with("application/x-www-form-urlencoded")
    }

    fn parse(&self) -> ApiResult<Value> {
        Ok(if self.body.is_empty() {
            json!({})
        } else if self.is_form() {
            Value::Object(
                url::form_urlencoded::parse(&self.body)
                    .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                    .collect(),
            )
        } else {
            serde_json::from_slice(&self.body).map_err(|e| {
                ApiError::bad_request(
                    "invalid_body",
                    format!("the webhook body is not JSON (nor a form): {e}"),
                )
            })?
        })
    }
}

/// What the routing of a webhook gave, kept as text.
struct RoutedTexts {
    status: u16,
    response: Result<Value, String>,
    routes: Vec<Route>,
    forward_text: Text,
    inputs: Vec<Option<Text>>,
}

/// Says `line` to the operator once per `what` (of at most 10,000).
fn say_once(app: &App, what: String, line: &str) {
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !said.contains(&what) && said.len() < 10_000 {
        said.push(what);
        app.config.events.say(line);
    }
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
    // A webhook a sluice sent (this one or another): a webhook URL points
    // back at `/webhook/…`. Taken, it would be forwarded again, and again
    // (one webhook made a thousand deliveries a second, for ever).
    if headers.contains_key(crate::webhooks::DELIVERY_HEADER) {
        say_once(
            &app,
            format!("loop\u{1f}{}\u{1f}{pck}", env.store.id()),
            &format!(
                "{}: a webhook sluice sent to an app came back to /webhook/…/{pck}: a webhook URL (primary, secondary or a connection's override) points at sluice's own webhook route; such webhooks are refused (400 webhook_loop), not forwarded again",
                env.name()
            ),
        );
        return Err(ApiError::bad_request(
            "webhook_loop",
            format!(
                "This is a webhook sluice sent (it has `{}`): a webhook URL points back at sluice's webhook route, and forwarding it again would loop. Point the webhook URL at the app.",
                crate::webhooks::DELIVERY_HEADER
            ),
        ));
    }
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
    let body = match encoding {
        Some(encoding) => {
            // Decompressing may hold its buffer grown past the limit
            // (twice it) and a copy of the limit beside the body: no
            // more, whatever the body claims.
            let decoding = (3 * limit + body.len()).min(WEBHOOK_BODY_ROOM);
            resize(&mut room, kib(decoding)).await?;
            let decoded = super::decoded(Some(encoding), body, limit).await?;
            // Its own allocation, of its length.
            Bytes::from(decoded.to_vec())
        }
        None => body,
    };
    // The text as held until it is handled.
    resize(&mut room, kib(TEXT_COPIES * body.len())).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let list: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.as_str().to_ascii_lowercase(),
                v.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    let request = Arc::new(Received {
        headers: list,
        body,
        content_type,
        query,
        now: Utc::now().timestamp(),
    });
    let secrets = OwnedSecrets {
        webhook_secret: integration.webhook_secret.clone(),
        oauth_client_id: integration.oauth_client_id.clone(),
        oauth_client_secret: integration.oauth_client_secret.clone(),
        connection_metadata: None,
    };
    // Off the workers: the signature on the bytes (a forged webhook costs
    // no parse), then what parsing will cost.
    let (secrets, estimate) = {
        let (request, script) = (request.clone(), script.clone());
        off_worker(move || {
            routing::check_before_parsing(&script, &request.incoming(&Value::Null), &secrets.get())
                .map(|()| {
                    let cost = body_cost(&request.body, request.is_form(), &script);
                    (secrets, cost)
                })
        })
        .await?
        .map_err(refused)?
    };
    // The parsed copies, and the texts made of them (each written, then
    // kept: copied twice).
    let parse_room = take_parse_room(
        estimate
            .saturating_mul(routing::parsed_copies(&script))
            .saturating_add(4 * request.body.len()),
    )
    .await?;
    let parsed = {
        let request = request.clone();
        off_worker(move || request.parse()).await??
    };
    // The connection a script takes its secret from (GitLab's, PagerDuty's).
    let to_read = routing::connection_to_read(&script, &request.incoming(&parsed));
    let secrets = match to_read {
        Some(cid) => OwnedSecrets {
            connection_metadata: env.store.connection(&pck, &cid).await?.map(|c| c.metadata),
            ..secrets
        },
        None => secrets,
    };
    let routed = {
        let (request, script) = (request.clone(), script.clone());
        off_worker(
            move || -> ApiResult<Option<Result<RoutedTexts, routing::Refused>>> {
                let routed =
                    routing::route_webhook(&script, &request.incoming(&parsed), &secrets.get());
                drop(parsed);
                match routed {
                    None => Ok(None),
                    Some(Err(r)) => Ok(Some(Err(r))),
                    Some(Ok(mut r)) => {
                        let (forward_text, inputs) = texts(&r.forward, &mut r.routes)?;
                        Ok(Some(Ok(RoutedTexts {
                            status: r.status,
                            response: r.response,
                            routes: r.routes,
                            forward_text,
                            inputs,
                        })))
                    }
                }
            },
        )
        .await??
    };
    drop(parse_room);
    let routed = match routed {
        None => {
            // Its signature cannot be checked, nor its connections found:
            // nothing is forwarded unverified. Said (once per integration
            // and script), so it is not silent.
            say_once(
                &app,
                format!("{}\u{1f}{pck}\u{1f}{script}", env.store.id()),
                &format!(
                    "webhooks for integration `{pck}` are dropped: sluice has no `{script}` (the webhook_routing_script of provider `{}`); they are answered 204",
                    integration.provider
                ),
            );
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Some(Err(r)) => return Err(refused(r)),
        Some(Ok(r)) => r,
    };
    let now = Utc::now();
    let accepted = Accepted {
        id: uuid::Uuid::new_v4().to_string(),
        provider_config_key: pck,
        provider: integration.provider,
        received_at: now,
        routes: routed.routes,
        forward: Value::Null,
        forward_text: Some(routed.forward_text),
        inputs: routed.inputs,
        headers: routing::forwarded_headers(&request.headers),
        forwarded: false,
        restarts: 0,
        scripts_started_at: None,
        running: None,
    };
    // The body is routed: from here on the room holds its texts. The
    // forward is about the body's bytes (more for Google's, whose forward
    // is the headers, or a form whose values escape longer in JSON); the
    // routes' inputs (an event each, or the body with a field added) come
    // to about as much again, within the copies the room counts.
    let forward = accepted.forward_text.as_ref().map_or(0, |t| t.get().len());
    let held = forward.max(request.body.len());
    drop(request);
    if forward > WEBHOOK_MAX_BYTES {
        return Err(too_large(format!(
            "This webhook's forward would be over {} MiB.",
            WEBHOOK_MAX_BYTES >> 20
        )));
    }
    resize(&mut room, kib(TEXT_COPIES * held)).await?;
    let key = format!("{:020}\u{1f}{}", key_time(now), accepted.id);
    env.store.put_doc(INCOMING, &key, &accepted).await?;
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

/// A routing script's refusal as the answer.
fn refused(r: routing::Refused) -> ApiError {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    ApiError::new(status, r.code, r.message)
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
            Err(e) => {
                app.config.events.say(&format!(
                    "{}: webhook {} ({}) could not be handled ({}); it is tried again in {} s",
                    env.name(),
                    a.id,
                    a.provider_config_key,
                    e.message,
                    wait.as_secs()
                ));
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
    // (connection, sync, route): each run with its route's input.
    let mut runs: Vec<(String, String, usize)> = Vec::new();
    for (r, route) in a.routes.iter().enumerate() {
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
                runs.push((cid.clone(), sync.clone(), r));
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
    for (i, (cid, sync, route)) in runs.iter().enumerate() {
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
        let input = a.input_text(*route);
        // The same for this run of this webhook however often it is made.
        let seed = format!("webhook:{}:{i}:{cid}:{sync}", a.id);
        let ran =
            crate::runner::run_webhook(app, env, &conn, sync, &input, resumed, &seed, on_start)
                .await;
        if note.load(Ordering::SeqCst) == 2 {
            return ran;
        }
        // Told, not tried again: trying again would run every script of
        // the webhook again, those whose webhooks were queued too.
        if let Err(e) = ran
            && e.code == crate::runner::WEBHOOKS_NOT_QUEUED
        {
            app.config.events.say(&format!(
                "{}: webhook {} of {pck}: {}",
                env.name(),
                a.id,
                e.message
            ));
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
    let payload = a.forward_text();
    if matched.is_empty() {
        if sends(&settings) {
            let seed = format!("{}:0", a.id);
            let about = About::new("forward", pck, "");
            app.webhooks
                .enqueue_text(
                    env,
                    &settings,
                    payload.into_owned(),
                    &a.headers,
                    Some(&seed),
                    &about,
                )
                .await?;
        }
        return Ok(());
    }
    // One forward per connection, each written as it is queued.
    for cid in matched {
        let settings = crate::webhooks::for_connection(settings.clone(), env, pck, cid).await?;
        if !sends(&settings) {
            continue;
        }
        let body = forward_body(&a.provider, pck, &payload, cid);
        let seed = format!("{}:{cid}", a.id);
        let about = About::new("forward", pck, cid);
        app.webhooks
            .enqueue_text(env, &settings, body, &a.headers, Some(&seed), &about)
            .await?;
    }
    Ok(())
}

/// A forward to a matched connection as `JSON.stringify` writes
/// `{from, providerConfigKey, type: "forward", payload, connectionId}`,
/// with `payload` (already so written) copied in, not parsed again.
fn forward_body(provider: &str, pck: &str, payload: &str, cid: &str) -> String {
    let text = |s: &str| sluice_runtime::js::stringify(&Value::String(s.to_string()));
    let (provider, pck, cid) = (text(provider), text(pck), text(cid));
    let mut out =
        String::with_capacity(payload.len() + provider.len() + pck.len() + cid.len() + 80);
    out.push_str("{\"from\":");
    out.push_str(&provider);
    out.push_str(",\"providerConfigKey\":");
    out.push_str(&pck);
    out.push_str(",\"type\":\"forward\",\"payload\":");
    out.push_str(payload);
    out.push_str(",\"connectionId\":");
    out.push_str(&cid);
    out.push('}');
    out
}

/// Webhooks a previous process left that are handled at once (each also
/// within the room): the others wait their turn, so they cannot take for
/// long all the room live webhooks need.
const RESUMING: usize = 4;

/// The time part of stored webhooks' keys: after every key stored when
/// this process started (a previous process's clock may have been ahead:
/// a key of this one's must not fall among those [`resume`] takes up) and
/// rising, in µs.
static KEY_FLOOR: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn key_time(now: DateTime<Utc>) -> i64 {
    use std::sync::atomic::Ordering;
    let now = now.timestamp_micros().max(0);
    let mut out = now;
    let _ = KEY_FLOOR.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |floor| {
        out = now.max(floor.saturating_add(1));
        Some(out)
    });
    out
}

/// At start, before listening: the webhooks a previous process accepted
/// and did not finish (those stored up to the last key there is now: not
/// by this process's clock, which may be behind the last one's) are
/// handled, by a task: their keys read a page at a time, and each
/// webhook, as its turn comes, read, given its room (waiting for it) and
/// handled in a task of its own as a live one is, at most [`RESUMING`] at
/// once (before, all were read into memory at start and handled one at
/// a time).
pub async fn resume(app: &Arc<App>) {
    let mut bounds = Vec::new();
    for env in app.envs() {
        let last = env
            .store
            .docs_raw(INCOMING, "", None, 1, true, &mut |_| false)
            .await;
        match last {
            Ok(last) => {
                if let Some((key, _)) = last.into_iter().next() {
                    // This process's keys come after it.
                    if let Some(at) = key.get(..20).and_then(|t| t.parse::<i64>().ok()) {
                        KEY_FLOOR.fetch_max(at, std::sync::atomic::Ordering::SeqCst);
                    }
                    bounds.push((env.clone(), key));
                }
            }
            Err(e) => app.config.events.say(&format!(
                "{}: the webhooks the last process left cannot be read ({e}); they are handled at the next start",
                env.name()
            )),
        }
    }
    let app = app.clone();
    tokio::spawn(async move {
        let turns = Arc::new(tokio::sync::Semaphore::new(RESUMING));
        for (env, bound) in bounds {
            let mut after: Option<String> = None;
            'pages: loop {
                let page = env
                    .store
                    .docs_raw(INCOMING, "", after.as_deref(), 256, false, &mut |_| false)
                    .await;
                let page = match page {
                    Ok(page) => page,
                    Err(e) => {
                        app.config.events.say(&format!(
                            "{}: the webhooks the last process left cannot be read ({e}); they are handled at the next start",
                            env.name()
                        ));
                        break;
                    }
                };
                if page.is_empty() {
                    break;
                }
                for (key, _) in page {
                    if key.as_str() > bound.as_str() {
                        break 'pages;
                    }
                    after = Some(key.clone());
                    let Ok(turn) = turns.clone().acquire_owned().await else {
                        return;
                    };
                    match take_up(&app, &env, &key).await {
                        Ok(Some((a, room))) => {
                            let (app, env) = (app.clone(), env.clone());
                            tokio::spawn(async move {
                                let (_turn, _room) = (turn, room);
                                handle(app, env, key, a).await;
                            });
                        }
                        // Handled meanwhile.
                        Ok(None) => {}
                        Err(e) => app.config.events.say(&format!(
                            "{}: webhook {key} the last process left cannot be taken up ({}); it is handled at the next start",
                            env.name(),
                            e.message
                        )),
                    }
                }
            }
        }
    });
}

/// Webhook `key` a previous process left, read (within room: its stored
/// size, [`TEXT_COPIES`] times, as a live one's) and, when its scripts
/// were running as that process stopped, counted as cut short (flushed)
/// before it is handled again.
async fn take_up(app: &App, env: &Arc<EnvState>, key: &str) -> ApiResult<Option<(Accepted, Room)>> {
    // Its size first (nothing copied out), for its room.
    let mut size = 0;
    let found = env
        .store
        .docs_raw(INCOMING, key, None, 1, false, &mut |v| {
            size = v.len();
            false
        })
        .await?;
    if !found.iter().any(|(k, _)| k == key) {
        return Ok(None);
    }
    // (One an earlier build stored may be larger than a body now taken.)
    let n = kib(TEXT_COPIES.saturating_mul(size)).min(WEBHOOK_BODY_ROOM >> 10);
    let room = take_room(env_room(env.store.id()), n, None).await?;
    let Some((_, Some(bytes))) = env
        .store
        .docs_raw(INCOMING, key, None, 1, false, &mut |_| true)
        .await?
        .into_iter()
        .find(|(k, _)| k == key)
    else {
        return Ok(None);
    };
    // Decoded off the workers; an earlier build's parses its forward and
    // inputs (made texts at once): within the parse room.
    let earlier = {
        let bytes = Bytes::from(bytes);
        let peek = bytes.clone();
        let earlier = off_worker(move || {
            #[derive(Deserialize)]
            struct Peek<'a> {
                #[serde(borrow, default)]
                forward_text: Option<&'a RawValue>,
            }
            let mut de = serde_json::Deserializer::from_slice(&peek);
            de.disable_recursion_limit();
            Peek::deserialize(&mut de)
                .ok()
                .filter(|p| p.forward_text.is_some())
                .is_none()
                .then(|| parse_cost(&peek))
        })
        .await?;
        (bytes, earlier)
    };
    let (bytes, earlier) = earlier;
    let booking = earlier.unwrap_or(0).saturating_add(4 * bytes.len());
    let parse_room = PARSE_ROOM
        .acquire_many(u32::try_from(kib(booking.min(PARSE_BYTES))).unwrap_or(u32::MAX))
        .await
        .map_err(|e| ApiError::internal(format!("no room to read the webhook: {e}")))?;
    let what = format!("webhook {key}");
    let a = off_worker(move || -> ApiResult<Accepted> {
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        de.disable_recursion_limit();
        let a = Accepted::deserialize(&mut de)
            .map_err(|e| ApiError::internal(format!("{what} cannot be read: {e}")))?;
        a.into_texts()
    })
    .await??;
    drop(parse_room);
    let mut a = a;
    // Only a webhook whose scripts had started was cut short by the stop:
    // one still waiting its turn (behind others, or for an execution)
    // keeps its scripts however many restarts it waits through.
    // (A stop on purpose cut them short too, but does not count towards
    // giving them up: only a crash's does.)
    if a.running.unwrap_or(a.scripts_started_at.is_some()) {
        if !env.after_clean_stop() {
            a.restarts += 1;
        }
        a.running = Some(false);
        // Said once, at the start that gives them up.
        if a.restarts == crate::runner::TRIGGER_ATTEMPTS && !a.routes.is_empty() {
            app.config.events.say(&format!(
                "{}: the scripts of webhook {} ({}) were cut short {} times; they are not run again",
                env.name(),
                a.id,
                a.provider_config_key,
                a.restarts
            ));
        }
        env.store.put_doc(INCOMING, key, &a).await?;
    }
    Ok(Some((a, room)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forms_parse_is_estimated_from_its_text() {
        // (`parse_cost` itself is tested in `crate::budget`.) A form: two strings a pair; Slack's parsed again, as dense JSON.
        assert!(body_cost(b"a=1&b=2", true, "unauthenticatedWebhookRouting") < 2_000);
        assert!(
            body_cost(b"payload=%5B0%2C0%5D", true, "slackWebhookRouting")
                > body_cost(
                    b"payload=%5B0%2C0%5D",
                    true,
                    "unauthenticatedWebhookRouting"
                )
        );
    }

    #[test]
    fn a_forward_is_written_as_json_stringify_writes_it() {
        let payload = json!({"a": 1.0, "s": "q\"u\u{e9}\u{1}"});
        let text = sluice_runtime::js::stringify(&payload);
        for (provider, pck, cid) in [("linear", "lin", "c1"), ("p\"", "k\\", "\u{2028}x")] {
            let whole = json!({
                "from": provider,
                "providerConfigKey": pck,
                "type": "forward",
                "payload": payload,
                "connectionId": cid,
            });
            assert_eq!(
                forward_body(provider, pck, &text, cid),
                sluice_runtime::js::stringify(&whole)
            );
        }
    }

    #[test]
    fn a_routes_input_that_is_the_forward_is_kept_once() {
        let route = |input: Value| Route {
            input,
            kind: None,
            header_kind: None,
            lookup: None,
        };
        let forward = json!([{"n": 1}, {"n": 2}]);
        let mut routes = vec![
            route(forward.clone()),
            route(json!({"n": 2})),
            route(forward.clone()),
        ];
        let (text, inputs) = texts(&forward, &mut routes).unwrap();
        assert_eq!(text.get(), r#"[{"n":1},{"n":2}]"#);
        assert!(inputs[0].is_none() && inputs[2].is_none());
        assert_eq!(inputs[1].as_ref().map(Text::get), Some(r#"{"n":2}"#));
        assert!(routes.iter().all(|r| r.input.is_null()));
        // Where serde and `JSON.stringify` write it apart, the script gets
        // serde's text, as it always did.
        let forward = json!({"amount": 1.0});
        let mut routes = vec![route(forward.clone())];
        let (text, inputs) = texts(&forward, &mut routes).unwrap();
        assert_eq!(text.get(), r#"{"amount":1}"#);
        assert_eq!(inputs[0].as_ref().map(Text::get), Some(r#"{"amount":1.0}"#));
        // An earlier build's webhook reads the same once made texts.
        let earlier = Accepted {
            id: "w".into(),
            provider_config_key: "lin".into(),
            provider: "linear".into(),
            received_at: Utc::now(),
            routes: vec![route(json!({"n": 2})), route(forward.clone())],
            forward: forward.clone(),
            forward_text: None,
            inputs: Vec::new(),
            headers: Vec::new(),
            forwarded: false,
            restarts: 0,
            scripts_started_at: None,
            running: None,
        };
        let before = (
            earlier.forward_text(),
            earlier.input_text(0),
            earlier.input_text(1),
        );
        let before = (
            before.0.into_owned(),
            before.1.into_owned(),
            before.2.into_owned(),
        );
        let now = earlier.into_texts().unwrap();
        assert_eq!(
            (now.forward_text(), now.input_text(0), now.input_text(1)),
            (
                Cow::Borrowed(before.0.as_str()),
                Cow::Borrowed(before.1.as_str()),
                Cow::Borrowed(before.2.as_str())
            )
        );
        // Stored and read back, the texts are as written.
        let stored = serde_json::to_string(&now).unwrap();
        assert!(
            stored.contains(r#""forward_text":{"amount":1}"#),
            "{stored}"
        );
        assert!(!stored.contains(r#""forward":"#), "{stored}");
        let read: Accepted = serde_json::from_str(&stored).unwrap();
        assert_eq!(read.input_text(1), before.2);
    }
}
