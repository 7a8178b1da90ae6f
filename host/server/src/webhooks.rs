//! Webhooks to the app (§4.7): after each sync run with changes (one per
//! model), after a failed run when the environment asks for it, after an
//! async action. Each is written to a durable outbox, one delivery per
//! target URL, before anything is sent; a worker delivers them with retries
//! and jittered exponential backoff for a day and more, so a restart or a
//! crash loses none.
//!
//! Every delivery is signed as the original signs it, `X-Nango-Signature`
//! (`hex(sha256(secret key + body))`) and `X-Nango-Hmac-Sha256`
//! (`hex(HMAC-SHA256(secret key, body))`), and with Standard Webhooks
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
//! HMAC-SHA256 of "id.timestamp.body">` with the environment's `whsec_`
//! signing secret), so receivers verify with existing libraries and refuse
//! replays. The id stays the same across retries: it is the idempotency id.

use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::app::{App, EnvState};
use crate::error::{ApiError, ApiResult};

/// The environment's settings: `webhook-settings/settings`.
pub const SETTINGS: &str = "webhook-settings";
/// Deliveries waiting, keyed `<next attempt, ms, zero-padded>\x1f<id>`.
pub const OUTBOX: &str = "webhook-outbox";
/// Deliveries given up on, keyed by id, for inspection.
pub const DEAD: &str = "webhook-dead";
/// The environment secret holding the Standard Webhooks signing secret.
pub const SIGNING_SECRET: &str = "webhook-signing-secret";
/// The header every delivery carries (its `webhook-id`): a provider's
/// webhook that has it came from a sluice (a webhook URL pointing back at
/// `/webhook/…`), and is refused rather than forwarded again, which would
/// loop for ever ([`crate::api::incoming`]).
pub const DELIVERY_HEADER: &str = "x-sluice-delivery";

/// An error message without its JavaScript stack frames (`fn@file:1:2`,
/// `    at fn (file:1:2)`): the app gets the message; the stack, with the
/// build's paths, stays in the logs.
fn without_stack(message: &str) -> String {
    let frame = |line: &str| {
        let line = line.trim();
        let at_form = line.starts_with("at ") && line.ends_with(')');
        let at_sign = line.contains('@')
            && !line.contains(' ')
            && line
                .rsplit(':')
                .take(2)
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        at_form || at_sign
    };
    let kept: Vec<&str> = message.lines().filter(|l| !frame(l)).collect();
    kept.join("\n").trim_end().to_string()
}

/// Which webhooks an environment gets, and where.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub primary_url: Option<String>,
    #[serde(default)]
    pub secondary_url: Option<String>,
    /// Also after runs that changed nothing.
    #[serde(default)]
    pub on_sync_completion_always: bool,
    /// After failed runs.
    #[serde(default)]
    pub on_sync_error: bool,
    /// After async actions.
    #[serde(default = "yes")]
    pub on_async_action_completion: bool,
    /// When a connection is created (`type: "auth"`, `operation:
    /// "creation"`); on, as in the original's new environments. A
    /// connection given new credentials (`"override"`) is always told.
    /// Stored only when off: a settings document an earlier sluice reads
    /// (it refuses fields it does not know) is one it wrote.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub on_auth_creation: bool,
    /// When a token refresh fails (`operation: "refresh"`); on, as in the
    /// original's new environments. Stored only when off.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub on_auth_refresh_error: bool,
    /// `Some((provider_config_key, connection_id))` when `primary_url` is
    /// that connection's `webhook_url_override` (see [`settings_for`]).
    /// Never stored.
    #[serde(skip)]
    pub connection_override: Option<(String, String)>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            primary_url: None,
            secondary_url: None,
            on_sync_completion_always: false,
            on_sync_error: false,
            on_async_action_completion: true,
            on_auth_creation: true,
            on_auth_refresh_error: true,
            connection_override: None,
        }
    }
}

/// What an `auth` webhook tells ([`Webhooks::auth`]).
pub struct AuthEvent<'a> {
    pub connection: &'a sluice_runtime::connection::Connection,
    /// The provider's auth mode (`OAUTH2`, `API_KEY`, …).
    pub auth_mode: &'a str,
    /// `creation` or `override`.
    pub operation: &'a str,
    /// Whether the connection's end user is told (a connect session's;
    /// the original leaves it out for imports).
    pub end_user: bool,
    pub error: Option<Value>,
}

/// What a delivery is about, as sluice queued it: the logs file its
/// attempts under these, never under what its body says (a provider's
/// forwarded payload is the sender's to write).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct About {
    /// `sync`, `forward`, `auth`, `async_action`.
    pub kind: String,
    pub provider_config_key: String,
    /// Empty for a provider's webhook that matched no connection.
    pub connection_id: String,
}

impl About {
    pub fn new(kind: &str, provider_config_key: &str, connection_id: &str) -> Self {
        About {
            kind: kind.to_string(),
            provider_config_key: provider_config_key.to_string(),
            connection_id: connection_id.to_string(),
        }
    }
}

/// One delivery of one webhook to one URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// `webhook-id`: the same on every attempt.
    pub id: String,
    pub url: String,
    /// The JSON body, exactly as signed and sent.
    pub body: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub next_at: DateTime<Utc>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Headers sent besides the signatures (a forwarded webhook's).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Which of the settings' URLs it goes to (0 primary, 1 secondary):
    /// each attempt goes to that URL as the settings say then, so a
    /// receiver moved while deliveries wait gets them, and one removed
    /// gets none. `None`: a connection's own URL (see `connection`), or
    /// (queued before either was kept) `url`.
    #[serde(default)]
    pub slot: Option<u8>,
    /// `(provider_config_key, connection_id)` when it goes to that
    /// connection's `webhook_url_override`: each attempt goes to the
    /// connection's URL then, and none once it is removed or the
    /// connection deleted. (An older build, which does not know this
    /// field, sends to `url`.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<(String, String)>,
    /// What it is about, for the logs. `None`: queued by a build that did
    /// not keep it (the logs then read its body, as that build did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<About>,
}

fn outbox_key(next_at: DateTime<Utc>, id: &str) -> String {
    format!("{:020}\u{1f}{id}", next_at.timestamp_millis().max(0))
}

/// The `webhook-id` of a delivery to `url` of work identified by `seed`:
/// the same when the work is done again after a crash.
fn delivery_id(seed: &str, url: &str) -> String {
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    h.update(b"\x1f");
    h.update(url.as_bytes());
    format!("msg_{}", &hex(&h.finalize())[..32])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `X-Nango-Signature`: `hex(sha256(secret key + body))`.
pub fn nango_signature(secret_key: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(secret_key.as_bytes());
    h.update(body.as_bytes());
    hex(&h.finalize())
}

/// `X-Nango-Hmac-Sha256`: `hex(HMAC-SHA256(secret key, body))`, what the
/// original's current client (`verifyIncomingWebhookRequest`) checks.
pub fn nango_hmac_signature(secret_key: &str, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC keys may have any length"));
    mac.update(body.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// `webhook-signature` of Standard Webhooks: `v1,` and the base64 of
/// HMAC-SHA256 over `id.timestamp.body`, keyed with the base64 part of the
/// `whsec_` secret.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_")?)
        .ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The webhook settings of `env`.
pub async fn settings(env: &EnvState) -> ApiResult<Settings> {
    Ok(env
        .store
        .doc(SETTINGS, "settings")
        .await?
        .unwrap_or_default())
}

/// The webhook settings for connection `cid` of integration `pck`: the
/// environment's, unless the connection has a `webhook_url_override`;
/// then its webhooks go to that URL alone (the environment's secondary URL
/// too is left out, as the original's `resolveWebhookSettings` does).
pub async fn settings_for(env: &EnvState, pck: &str, cid: &str) -> ApiResult<Settings> {
    for_connection(settings(env).await?, env, pck, cid).await
}

/// `settings` (the environment's) for connection `cid` of `pck`; see
/// [`settings_for`]. A connection that is gone has no URL of its own; one
/// that cannot be read is an error (its webhooks must not go elsewhere).
pub async fn for_connection(
    mut settings: Settings,
    env: &EnvState,
    pck: &str,
    cid: &str,
) -> ApiResult<Settings> {
    if let Some(url) = override_url(env, pck, cid).await? {
        settings.primary_url = Some(url);
        settings.secondary_url = None;
        settings.connection_override = Some((pck.to_string(), cid.to_string()));
    }
    Ok(settings)
}

/// The connection's `webhook_url_override`, when it exists and has one.
async fn override_url(env: &EnvState, pck: &str, cid: &str) -> ApiResult<Option<String>> {
    Ok(env
        .store
        .connection(pck, cid)
        .await?
        .and_then(|c| c.webhook_url_override)
        .filter(|u| !u.is_empty()))
}

/// The environment's Standard Webhooks secret, made on first use.
pub async fn signing_secret(env: &EnvState) -> ApiResult<String> {
    if let Some(s) = env.store.secret(SIGNING_SECRET).await? {
        return Ok(s);
    }
    let _guard = env.sync_lock(SIGNING_SECRET).lock().await;
    if let Some(s) = env.store.secret(SIGNING_SECRET).await? {
        return Ok(s);
    }
    Ok(new_signing_secret(&env.store).await?)
}

/// Makes and stores a new Standard Webhooks secret for the environment
/// (deliveries sent from now on are signed with it).
pub async fn new_signing_secret(
    store: &sluice_store::EnvStore,
) -> Result<String, sluice_store::StoreError> {
    let mut raw = Vec::with_capacity(32);
    raw.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    raw.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    );
    store.set_secret(SIGNING_SECRET, &secret).await?;
    Ok(secret)
}

/// Checks a URL an app gives for its webhooks.
pub fn check_url(url: &str) -> ApiResult<()> {
    // As a connection's `webhook_url_override`.
    if url.len() > 2048 {
        return Err(ApiError::invalid_body(format!(
            "a webhook URL is at most 2,048 bytes, got {}",
            url.len()
        )));
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| ApiError::invalid_body(format!("`{url}` is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::invalid_body(format!(
            "`{url}` must be an http or https URL"
        )));
    }
    Ok(())
}

/// Most deliveries of one environment sent at once.
const IN_FLIGHT: usize = 64;
/// Most of them sent at once to one URL: a receiver that hangs holds a
/// quarter of the environment's sends, the other URLs the rest.
const IN_FLIGHT_PER_URL: usize = IN_FLIGHT / 4;
/// Most of an environment's outbox read in one pass for due deliveries
/// whose URL has room; the next pass goes on where it stopped.
const SCAN: usize = 1024;

/// The deliveries being sent, by outbox key, with where each goes.
type Flying = std::collections::HashMap<String, String>;

/// What the outbox worker keeps of a delivery it has read.
#[derive(Clone)]
struct Head {
    slot: Option<u8>,
    url: String,
    /// Its last outcome could not be stored (the store refused the write):
    /// not tried again before then, so a failing store does not make the
    /// worker send it in a loop.
    not_before: Option<DateTime<Utc>>,
}

/// An environment's [`Head`]s, by outbox key.
type Heads = std::collections::HashMap<String, Head>;

/// The most heads kept per environment (past it they are read again).
const MAX_HEADS: usize = 65_536;

/// When the delivery of outbox key `key` is due (see [`outbox_key`]).
fn due_at(key: &str) -> DateTime<Utc> {
    key.get(..20)
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_else(Utc::now)
}

/// The outbox worker and its timing.
pub struct Webhooks {
    wake: Notify,
    /// The deliveries being sent, by environment: each is sent on its own,
    /// at most [`IN_FLIGHT`] at once per environment and
    /// [`IN_FLIGHT_PER_URL`] to one URL, so a receiver that hangs holds up
    /// only the deliveries sent to it — not the other URLs', nor another
    /// environment's.
    in_flight: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, Flying>>,
    /// Per environment, the outbox key a pass stopped at when it had read
    /// [`SCAN`] deliveries: the next pass goes on from there.
    resume_at: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, String>>,
    /// Per environment, what a pass needs of the deliveries it has read,
    /// by outbox key: a pass over a backlog (a receiver down, large
    /// forwarded webhooks) reads their keys, not their bodies.
    heads: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, Heads>>,
    /// First retry delay; each later one doubles, up to `max_delay`.
    base_delay: Duration,
    max_delay: Duration,
    /// Past this age a delivery that still fails is given up on.
    give_up_after: Duration,
    /// Per environment, the bytes of bodies its outbox holds
    /// ([`OutboxBytes`]), bounded by `max_outbox_bytes`.
    outbox_bytes: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, OutboxBytes>>,
    /// `ServerConfig::webhook_outbox_max_bytes`.
    max_outbox_bytes: u64,
    /// Where a delivery not queued is told (the environment's logs),
    /// once the worker runs.
    app: std::sync::OnceLock<Weak<App>>,
    /// And the operator: at most once a minute per environment, with how
    /// many were not queued since (a flood of provider webhooks while the
    /// receivers are down is not a flood of lines).
    events: crate::config::EventLog,
    told: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, (std::time::Instant, u64)>>,
}

/// What an environment's outbox holds: the bodies' bytes, counted from
/// the store at start ([`Webhooks::count_outbox`]; until then only what
/// this process queued), then kept as deliveries are queued and leave.
/// A crash may bring back a delivery whose removal was not yet flushed;
/// the next start counts it again.
#[derive(Default, Clone, Copy)]
struct OutboxBytes {
    bytes: u64,
    counted: bool,
}

/// A stored delivery's body, for counting an outbox without decoding the
/// rest.
#[derive(Deserialize)]
struct BodyOf<'a> {
    #[serde(borrow)]
    body: std::borrow::Cow<'a, str>,
}

impl Webhooks {
    pub fn new(config: &crate::ServerConfig) -> Self {
        Webhooks {
            wake: Notify::new(),
            in_flight: Default::default(),
            resume_at: Default::default(),
            heads: Default::default(),
            base_delay: config.webhook_retry_base,
            max_delay: Duration::from_secs(3600).max(config.webhook_retry_base),
            give_up_after: config.webhook_give_up_after,
            outbox_bytes: Default::default(),
            max_outbox_bytes: config.webhook_outbox_max_bytes,
            app: std::sync::OnceLock::new(),
            events: config.events.clone(),
            told: Default::default(),
        }
    }

    /// Books `bytes` of `env`'s outbox for deliveries about to be queued;
    /// `Err` with what it holds when they do not fit.
    fn book_outbox(&self, env: uuid::Uuid, bytes: u64) -> Result<(), u64> {
        let mut all = self.outbox_bytes.lock().unwrap_or_else(|e| e.into_inner());
        let held = all.entry(env).or_default();
        if held.counted && held.bytes.saturating_add(bytes) > self.max_outbox_bytes {
            return Err(held.bytes);
        }
        held.bytes = held.bytes.saturating_add(bytes);
        Ok(())
    }

    /// `bytes` of `env`'s outbox are free again (deliveries sent, given up
    /// on, or not stored after all).
    fn release_outbox(&self, env: uuid::Uuid, bytes: u64) {
        let mut all = self.outbox_bytes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = all.get_mut(&env) {
            held.bytes = held.bytes.saturating_sub(bytes);
        }
    }

    /// Counts what `env`'s outbox holds, once per start (at start, before
    /// anything queues or sends; an environment made later, or one whose
    /// store failed then, at the worker's next pass, before it sends any
    /// of its deliveries): the bodies are measured in the store, not
    /// copied out.
    pub(crate) async fn count_outbox(&self, env: &EnvState) {
        let id = env.store.id();
        let counted = {
            let all = self.outbox_bytes.lock().unwrap_or_else(|e| e.into_inner());
            all.get(&id).is_some_and(|h| h.counted)
        };
        if counted {
            return;
        }
        const PAGE: usize = 4096;
        let mut total = 0u64;
        let mut after: Option<String> = None;
        loop {
            let mut measure = |v: &[u8]| {
                total +=
                    serde_json::from_slice::<BodyOf>(v).map_or(v.len(), |d| d.body.len()) as u64;
                false
            };
            let Ok(page) = env
                .store
                .docs_raw(OUTBOX, "", after.as_deref(), PAGE, false, &mut measure)
                .await
            else {
                return;
            };
            let full = page.len() == PAGE;
            after = page.into_iter().last().map(|(k, _)| k);
            if !full {
                break;
            }
        }
        let mut all = self.outbox_bytes.lock().unwrap_or_else(|e| e.into_inner());
        // What this process queued meanwhile is in the store, counted.
        all.insert(
            id,
            OutboxBytes {
                bytes: total,
                counted: true,
            },
        );
    }

    /// Stores one delivery of `body` per target URL (flushed); the worker
    /// sends them. Nothing when no URL is set.
    pub async fn enqueue(
        &self,
        env: &EnvState,
        settings: &Settings,
        body: &Value,
        about: &About,
    ) -> ApiResult<()> {
        self.enqueue_with(env, settings, body, &[], None, about)
            .await
    }

    /// [`Webhooks::enqueue`] with headers of its own, and with `seed` the
    /// delivery ids derived from it (and the URL) rather than random: work
    /// done again after a crash (a provider webhook handled twice) sends
    /// the same `webhook-id`s, which receivers deduplicate.
    pub async fn enqueue_with(
        &self,
        env: &EnvState,
        settings: &Settings,
        body: &Value,
        headers: &[(String, String)],
        seed: Option<&str>,
        about: &About,
    ) -> ApiResult<()> {
        // As the original's `JSON.stringify` writes it (`1.0` as `1`, big
        // integers as the nearest double): an app that checks the older
        // signature over its own `JSON.stringify(JSON.parse(body))` gets
        // the bytes that were signed.
        let body = sluice_runtime::js::stringify(body);
        self.enqueue_text(env, settings, body, headers, seed, about)
            .await
    }

    /// [`Webhooks::enqueue_with`] of a body already written (as
    /// `JSON.stringify` writes it): a forwarded webhook's, written once
    /// from its stored text. Each delivery is written in turn, the body
    /// copied only for a URL after the first, so a large body is held at
    /// most twice (and once more as its document is written).
    pub async fn enqueue_text(
        &self,
        env: &EnvState,
        settings: &Settings,
        body: String,
        headers: &[(String, String)],
        seed: Option<&str>,
        about: &About,
    ) -> ApiResult<()> {
        let now = Utc::now();
        let urls: Vec<(u8, &String)> = [(0u8, &settings.primary_url), (1, &settings.secondary_url)]
            .into_iter()
            .filter_map(|(slot, u)| u.as_ref().filter(|u| !u.is_empty()).map(|u| (slot, u)))
            .collect();
        if urls.is_empty() {
            return Ok(());
        }
        let each = body.len() as u64;
        let id = env.store.id();
        if let Err(held) = self.book_outbox(id, each * urls.len() as u64) {
            self.not_queued(env, &urls, seed, about, held, each).await;
            return Ok(());
        }
        let mut body = Some(body);
        for (i, (slot, url)) in urls.iter().enumerate() {
            let text = if i + 1 == urls.len() {
                body.take().unwrap_or_default()
            } else {
                body.clone().unwrap_or_default()
            };
            let d = Delivery {
                id: match seed {
                    Some(seed) => delivery_id(seed, url),
                    None => format!("msg_{}", uuid::Uuid::new_v4().simple()),
                },
                url: (*url).clone(),
                body: text,
                attempts: 0,
                created_at: now,
                next_at: now,
                last_error: None,
                headers: headers.to_vec(),
                slot: settings.connection_override.is_none().then_some(*slot),
                connection: settings.connection_override.clone(),
                about: Some(about.clone()),
            };
            if let Err(e) = env
                .store
                .put_doc(OUTBOX, &outbox_key(d.next_at, &d.id), &d)
                .await
            {
                self.release_outbox(id, each * (urls.len() - i) as u64);
                return Err(e.into());
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Tells the environment's logs and the operator of deliveries not
    /// queued because its outbox holds `held` bytes already.
    async fn not_queued(
        &self,
        env: &EnvState,
        urls: &[(u8, &String)],
        seed: Option<&str>,
        about: &About,
        held: u64,
        each: u64,
    ) {
        let error = format!(
            "not queued: the environment's webhook outbox holds {held} bytes waiting for the app's receivers, and this {each}-byte webhook would pass its bound of {} (--max-webhook-outbox)",
            self.max_outbox_bytes
        );
        let untold = {
            let mut told = self.told.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            match told.get_mut(&env.store.id()) {
                None => {
                    told.insert(env.store.id(), (now, 0));
                    Some(0)
                }
                Some((at, n)) if at.elapsed() >= Duration::from_secs(60) => {
                    *at = now;
                    Some(std::mem::take(n))
                }
                Some((_, n)) => {
                    *n += 1;
                    None
                }
            }
        };
        if let Some(n) = untold {
            let more = if n > 0 {
                format!(" ({n} more were not queued since the last such line)")
            } else {
                String::new()
            };
            self.events.say(&format!(
                "{}: a {} webhook for {}/{} was {error}{more}",
                env.name(),
                about.kind,
                about.provider_config_key,
                about.connection_id
            ));
        }
        let Some(app) = self.app.get().and_then(Weak::upgrade) else {
            return;
        };
        for (_, url) in urls {
            let id = match seed {
                Some(seed) => delivery_id(seed, url),
                None => format!("msg_{}", uuid::Uuid::new_v4().simple()),
            };
            app.logs
                .record_delivery(
                    env,
                    &crate::logs::DeliveryAttempt {
                        id: &id,
                        url: shown_url(url),
                        body: "",
                        about: Some(about),
                        number: 0,
                        started_at: Utc::now(),
                        error: Some(error.clone()),
                        given_up: true,
                    },
                )
                .await;
        }
    }

    /// The webhooks of a finished sync run, per the environment's settings.
    #[allow(clippy::too_many_arguments)]
    pub async fn sync_run(
        &self,
        env: &EnvState,
        conn: &sluice_runtime::records::ConnectionRef,
        sync: &str,
        variant: &str,
        models: &[String],
        summary: &crate::runner::RunSummary,
        sync_type: &str,
        seed: Option<&str>,
    ) -> ApiResult<()> {
        let seeded = |part: &str| seed.map(|s| format!("{s}:{part}"));
        let about = About::new("sync", &conn.provider_config_key, &conn.connection_id);
        let settings = settings_for(env, &conn.provider_config_key, &conn.connection_id).await?;
        if settings.primary_url.is_none() && settings.secondary_url.is_none() {
            return Ok(());
        }
        let base = json!({
            "from": "nango",
            "type": "sync",
            "connectionId": conn.connection_id,
            "providerConfigKey": conn.provider_config_key,
            "syncName": sync,
            "syncVariant": variant,
            "syncType": sync_type,
        });
        let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        if !summary.success {
            if !settings.on_sync_error {
                return Ok(());
            }
            let mut body = base;
            body["model"] = json!(models.join(","));
            body["success"] = json!(false);
            let error = summary.error.clone().unwrap_or(Value::Null);
            // As the original's: always `script_error`, the message as the
            // description, and the error's payload when it has one.
            body["error"] = json!({
                "type": "script_error",
                "description": without_stack(error["message"].as_str().unwrap_or("the run failed")),
            });
            if let Some(payload) = error.get("payload").filter(|p| !p.is_null()) {
                body["error"]["payload"] = payload.clone();
            }
            body["startedAt"] = json!(at(summary.started_at));
            body["failedAt"] = json!(at(summary.finished_at));
            return self
                .enqueue_with(
                    env,
                    &settings,
                    &body,
                    &[],
                    seeded("failed").as_deref(),
                    &about,
                )
                .await;
        }
        for model in models {
            let full = if variant == "base" {
                model.clone()
            } else {
                format!("{model}::{variant}")
            };
            let c = summary.results.get(&full).cloned().unwrap_or_default();
            if c.added + c.updated + c.deleted == 0 && !settings.on_sync_completion_always {
                continue;
            }
            let mut body = base.clone();
            body["model"] = json!(model);
            body["success"] = json!(true);
            body["responseResults"] =
                json!({"added": c.added, "updated": c.updated, "deleted": c.deleted});
            body["modifiedAfter"] = json!(at(summary.started_at));
            body["queryTimeStamp"] = json!(at(summary.started_at));
            self.enqueue_with(env, &settings, &body, &[], seeded(model).as_deref(), &about)
                .await?;
        }
        Ok(())
    }

    /// The webhook of a finished async action.
    pub async fn async_action(
        &self,
        env: &EnvState,
        a: &crate::runner::AsyncAction,
    ) -> ApiResult<()> {
        let settings = settings_for(env, &a.provider_config_key, &a.connection_id).await?;
        if !settings.on_async_action_completion {
            return Ok(());
        }
        // The original's shape: the app polls `statusUrl` for the result.
        // `actionName` and `success` are sluice's additions.
        let body = json!({
            "from": "nango",
            "type": "async_action",
            "connectionId": a.connection_id,
            "providerConfigKey": a.provider_config_key,
            "payload": {"id": a.id, "statusUrl": format!("/action/{}", a.id)},
            "actionName": a.action,
            "success": a.status == "succeeded",
        });
        // One message per action, however often it is queued.
        let seed = format!("async-action:{}", a.id);
        let about = About::new("async_action", &a.provider_config_key, &a.connection_id);
        self.enqueue_with(env, &settings, &body, &[], Some(&seed), &about)
            .await
    }

    /// The original's `auth` webhook: a connection created (`creation`,
    /// when `on_auth_creation`) or given new credentials (`override`), or
    /// a failure to (`error`: `{type, description}`). Sent to the
    /// connection's `webhook_url_override` when it has one.
    pub async fn auth(&self, env: &EnvState, event: AuthEvent<'_>) -> ApiResult<()> {
        let c = event.connection;
        let mut settings = settings(env).await?;
        if let Some(url) = c.webhook_url_override.as_ref().filter(|u| !u.is_empty()) {
            settings.primary_url = Some(url.clone());
            settings.secondary_url = None;
            settings.connection_override =
                Some((c.provider_config_key.clone(), c.connection_id.clone()));
        }
        if (event.operation == "creation" && !settings.on_auth_creation)
            || (event.operation == "refresh" && !settings.on_auth_refresh_error)
        {
            return Ok(());
        }
        let mut body = json!({
            "from": "nango",
            "type": "auth",
            "connectionId": c.connection_id,
            "providerConfigKey": c.provider_config_key,
            "authMode": event.auth_mode,
            "provider": c.provider,
            "environment": env.name(),
            "operation": event.operation,
            "success": event.error.is_none(),
        });
        match event.error {
            Some(e) => body["error"] = e,
            None => {
                body["tags"] = json!(c.tags);
                if event.end_user
                    && let Some(e) = c.end_user.as_object()
                {
                    let mut user = Map::new();
                    for (from, to) in [("id", "endUserId"), ("email", "endUserEmail")] {
                        if let Some(v) = e.get(from).filter(|v| v.is_string()) {
                            user.insert(to.into(), v.clone());
                        }
                    }
                    if let Some(org) = c.tags.get("organization_id") {
                        user.insert("organizationId".into(), json!(org));
                    }
                    user.insert(
                        "tags".into(),
                        e.get("tags")
                            .filter(|t| t.is_object())
                            .cloned()
                            .unwrap_or_else(|| json!({})),
                    );
                    body["endUser"] = Value::Object(user);
                }
            }
        }
        let about = About::new("auth", &c.provider_config_key, &c.connection_id);
        self.enqueue(env, &settings, &body, &about).await
    }

    /// Starts the delivery worker; it stops when the app is dropped.
    pub fn spawn(self: &Arc<Self>, app: &Arc<App>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let app = Arc::downgrade(app);
        let _ = self.app.set(app.clone());
        tokio::spawn(async move { me.work(app).await })
    }

    async fn work(self: Arc<Self>, app: Weak<App>) {
        // The sends in flight; dropped with this task (when the server
        // stops), which aborts them.
        let mut sends = tokio::task::JoinSet::new();
        loop {
            while sends.try_join_next().is_some() {}
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let Some(strong) = app.upgrade() else { return };
            let next = self.deliver_due(&strong, &mut sends).await;
            drop(strong);
            let wait = next
                .map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = woken => {}
            }
        }
    }

    /// Starts sending every due delivery not already in flight (up to
    /// [`IN_FLIGHT`] per environment, [`IN_FLIGHT_PER_URL`] per URL);
    /// returns when the next one is due. A send that ends wakes the worker.
    async fn deliver_due(
        self: &Arc<Self>,
        app: &Arc<App>,
        sends: &mut tokio::task::JoinSet<()>,
    ) -> Option<DateTime<Utc>> {
        let now = Utc::now();
        let mut earliest: Option<DateTime<Utc>> = None;
        for env in app.envs() {
            let id = env.store.id();
            self.count_outbox(env).await;
            let flying = self.flying(id);
            if flying.len() >= IN_FLIGHT {
                continue;
            }
            let mut per_url = std::collections::HashMap::<String, usize>::new();
            for target in flying.values() {
                *per_url.entry(target.clone()).or_default() += 1;
            }
            // The settings' URLs as they are now (a delivery to a slot
            // goes to its URL then).
            let slots = settings(env)
                .await
                .map(|s| [s.primary_url, s.secondary_url])
                .unwrap_or_default();
            let mut room = IN_FLIGHT - flying.len();
            // Where the last pass stopped at its bound, else the head.
            let mut after: Option<String> = self.resume(id);
            let mut scanned = 0;
            // The scan stopped at its bound: the next pass goes on from
            // there (round the outbox), so what lies past a hung
            // receiver's deliveries is reached in a few passes.
            let mut carry_on = false;
            'pages: while room > 0 {
                if scanned >= SCAN {
                    carry_on = true;
                    break;
                }
                let page = (IN_FLIGHT + flying.len()).min(SCAN - scanned);
                // Keys only: a delivery's body is read when it is sent.
                let Ok(batch) = env
                    .store
                    .docs_raw(OUTBOX, "", after.as_deref(), page, false, &mut |_| false)
                    .await
                else {
                    break;
                };
                let full = batch.len() == page;
                scanned += batch.len();
                for (key, _) in batch {
                    after = Some(key.clone());
                    let due = due_at(&key);
                    if due > now {
                        earliest = Some(earliest.map_or(due, |e| e.min(due)));
                        break 'pages;
                    }
                    if flying.contains_key(&key) {
                        continue;
                    }
                    let (mut read, head) = match self.head(id, &key) {
                        Some(head) => (None, head),
                        None => match env.store.doc::<Delivery>(OUTBOX, &key).await {
                            Ok(Some(d)) => {
                                let head = Head {
                                    slot: d.slot,
                                    url: d.url.clone(),
                                    not_before: None,
                                };
                                self.set_head(id, &key, Some(head.clone()));
                                (Some(d), head)
                            }
                            // Sent meanwhile, or unreadable (the next pass
                            // tries again).
                            _ => continue,
                        },
                    };
                    if let Some(at) = head.not_before.filter(|at| *at > now) {
                        earliest = Some(earliest.map_or(at, |e| e.min(at)));
                        continue;
                    }
                    let target = target(head.slot, &head.url, &slots);
                    let to_it = per_url.entry(target.clone()).or_default();
                    if *to_it >= IN_FLIGHT_PER_URL {
                        continue;
                    }
                    let d = match read.take() {
                        Some(d) => d,
                        None => match env.store.doc::<Delivery>(OUTBOX, &key).await {
                            Ok(Some(d)) => d,
                            _ => {
                                self.set_head(id, &key, None);
                                continue;
                            }
                        },
                    };
                    *to_it += 1;
                    room -= 1;
                    self.set_flying(id, &key, Some(target));
                    let (me, app, env) = (self.clone(), app.clone(), env.clone());
                    sends.spawn(async move {
                        // The attempt stores its outcome (the delivery gone or
                        // moved to its next time) before it lands.
                        me.attempt(&app, &env, key.clone(), d).await;
                        me.set_flying(id, &key, None);
                        me.wake.notify_one();
                    });
                    if room == 0 {
                        break 'pages;
                    }
                }
                if !full {
                    break;
                }
            }
            self.set_resume(id, after.filter(|_| carry_on));
        }
        earliest
    }

    /// The head kept of `env`'s delivery `key`.
    fn head(&self, env: uuid::Uuid, key: &str) -> Option<Head> {
        self.heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&env)
            .and_then(|h| h.get(key))
            .cloned()
    }

    /// Keeps (or, `None`, forgets) the head of `env`'s delivery `key`.
    fn set_head(&self, env: uuid::Uuid, key: &str, head: Option<Head>) {
        let mut map = self
            .heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match head {
            Some(head) => {
                let heads = map.entry(env).or_default();
                if heads.len() >= MAX_HEADS {
                    heads.clear();
                }
                heads.insert(key.to_string(), head);
            }
            None => {
                if let Some(heads) = map.get_mut(&env) {
                    heads.remove(key);
                    if heads.is_empty() {
                        map.remove(&env);
                    }
                }
            }
        }
    }

    /// The outcome of delivery `key` was stored (`Ok`): its head goes.
    /// Not stored: it stays in the outbox as it was, due, and is held
    /// back until `retry_at` (told to the operator).
    fn outcome_stored(
        &self,
        app: &App,
        env: &EnvState,
        key: &str,
        d: &Delivery,
        stored: Result<(), String>,
        retry_at: DateTime<Utc>,
    ) {
        let id = env.store.id();
        match stored {
            Ok(()) => self.set_head(id, key, None),
            Err(e) => {
                app.config.events.say(&format!(
                    "{}: the outcome of webhook {} could not be stored ({e}); it is not sent again before {}",
                    env.name(),
                    d.id,
                    retry_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ));
                self.set_head(
                    id,
                    key,
                    Some(Head {
                        slot: d.slot,
                        url: d.url.clone(),
                        not_before: Some(retry_at),
                    }),
                );
            }
        }
    }

    /// Where `env`'s next pass starts (see [`Webhooks::deliver_due`]).
    fn resume(&self, env: uuid::Uuid) -> Option<String> {
        self.resume_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&env)
            .cloned()
    }

    fn set_resume(&self, env: uuid::Uuid, at: Option<String>) {
        let mut map = self
            .resume_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match at {
            Some(at) => map.insert(env, at),
            None => map.remove(&env),
        };
    }

    /// `env`'s deliveries in flight.
    fn flying(&self, env: uuid::Uuid) -> Flying {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&env)
            .cloned()
            .unwrap_or_default()
    }

    /// Notes delivery `key` of `env` in flight to `target`, or (`None`) no
    /// longer.
    fn set_flying(&self, env: uuid::Uuid, key: &str, target: Option<String>) {
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(target) = target {
            map.entry(env).or_default().insert(key.to_string(), target);
        } else if let Some(set) = map.get_mut(&env) {
            set.remove(key);
            if set.is_empty() {
                map.remove(&env);
            }
        }
    }

    async fn attempt(&self, app: &App, env: &EnvState, key: String, mut d: Delivery) {
        let started_at = Utc::now();
        let result = send(env, &d).await;
        d.attempts += 1;
        let logged =
            |url: String, error: Option<String>, given_up: bool| crate::logs::DeliveryAttempt {
                id: &d.id,
                url,
                body: &d.body,
                about: d.about.as_ref(),
                number: d.attempts,
                started_at,
                error,
                given_up,
            };
        match result {
            Ok(sent_to) => {
                if let Some(url) = sent_to {
                    app.logs
                        .record_delivery(env, &logged(url, None, false))
                        .await;
                }
                // Unflushed: a crash may bring it back, and it is sent
                // again with the same id, which receivers deduplicate.
                let stored = env.store.delete_doc_unflushed(OUTBOX, &key).await;
                if stored.is_ok() {
                    self.release_outbox(env.store.id(), d.body.len() as u64);
                }
                let retry_at = Utc::now() + self.backoff(d.attempts, &d.id);
                let stored = stored.map(|_| ()).map_err(|e| e.to_string());
                self.outcome_stored(app, env, &key, &d, stored, retry_at);
            }
            Err((error, retry, url)) => {
                let age = (Utc::now() - d.created_at).to_std().unwrap_or_default();
                let give_up = !retry || age >= self.give_up_after;
                app.logs
                    .record_delivery(env, &logged(url, Some(error.clone()), give_up))
                    .await;
                app.config.events.say(&format!(
                    "{}: webhook {} to the app failed (attempt {}): {error}{}",
                    env.name(),
                    d.id,
                    d.attempts,
                    if give_up {
                        "; given up on"
                    } else {
                        "; it is tried again later"
                    }
                ));
                d.last_error = Some(error);
                let retry_at = Utc::now() + self.backoff(d.attempts, &d.id);
                if give_up {
                    let stored = match env.store.put_doc(DEAD, &d.id, &d).await {
                        Ok(()) => env.store.delete_doc(OUTBOX, &key).await,
                        Err(e) => Err(e),
                    };
                    if let Ok(true) = stored {
                        self.release_outbox(env.store.id(), d.body.len() as u64);
                    }
                    let stored = stored.map(|_| ());
                    let stored = stored.map_err(|e| e.to_string());
                    self.outcome_stored(app, env, &key, &d, stored, retry_at);
                    return;
                }
                d.next_at = retry_at;
                // One atomic write: never lost, never twice.
                let stored = env
                    .store
                    .move_doc(OUTBOX, &key, &outbox_key(d.next_at, &d.id), &d)
                    .await
                    .map_err(|e| e.to_string());
                self.outcome_stored(app, env, &key, &d, stored, retry_at);
            }
        }
    }

    /// `base × 2^(attempts-1)`, capped, ±20 % jitter (from the id and the
    /// attempt, so retries of many deliveries spread out).
    fn backoff(&self, attempts: u32, id: &str) -> chrono::Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
            .min(self.max_delay);
        let mut h = Sha256::new();
        h.update(id.as_bytes());
        h.update(attempts.to_be_bytes());
        let r = h.finalize()[0] as f64 / 255.0; // 0..=1
        let factor = 0.8 + 0.4 * r;
        chrono::Duration::from_std(exp.mul_f64(factor)).unwrap_or(chrono::Duration::seconds(1))
    }
}

/// Where delivery `d` goes, for the bound per URL: its slot's URL in the
/// settings `slots` (primary, secondary) as they are now, else the URL
/// it was queued with (for a connection's own URL, the one it had then).
fn target(slot: Option<u8>, url: &str, slots: &[Option<String>; 2]) -> String {
    match slot {
        Some(n) => slots
            .get(usize::from(n))
            .cloned()
            .flatten()
            .unwrap_or_else(|| format!("slot {n}")),
        _ => url.to_string(),
    }
}

/// One attempt: `Ok(Some(url))` sent there (shown without its query),
/// `Ok(None)` nothing to send it to any more, `Err((why, retry?))`.
/// Network errors, timeouts, 408, 429 and 5xx are retried; other answers
/// are final.
async fn send(env: &EnvState, d: &Delivery) -> Result<Option<String>, (String, bool, String)> {
    // A delivery is never sent unsigned because a secret could not be
    // read: a receiver that checks signatures would refuse it for good.
    let secret_key = env
        .store
        .secret(sluice_store::SECRET_KEY)
        .await
        .map_err(|e| {
            (
                format!("cannot read the environment's secret key to sign it: {e}"),
                true,
                String::new(),
            )
        })?;
    let signing = Some(signing_secret(env).await.map_err(|e| {
        (
            format!("cannot read the webhook signing secret: {}", e.message),
            true,
            String::new(),
        )
    })?);
    let url = match d.slot {
        // The connection's URL as it is now; none once it was removed or
        // the connection deleted.
        None if let Some((pck, cid)) = &d.connection => match override_url(env, pck, cid).await {
            Ok(Some(u)) => u,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err((
                    format!("cannot read the connection's webhook URL: {}", e.message),
                    true,
                    String::new(),
                ));
            }
        },
        None => d.url.clone(),
        Some(slot) => {
            let now = settings(env).await.map_err(|e| {
                (
                    format!("cannot read the webhook settings: {}", e.message),
                    true,
                    String::new(),
                )
            })?;
            let current = if slot == 0 {
                now.primary_url
            } else {
                now.secondary_url
            };
            match current.filter(|u| !u.is_empty()) {
                Some(u) => u,
                // The URL was removed: nothing to send to.
                None => return Ok(None),
            }
        }
    };
    let timestamp = Utc::now().timestamp();
    let mut req = delivery_client().post(&url);
    for (k, v) in &d.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let mut req = req
        .timeout(DELIVERY_TIMEOUT)
        .header("content-type", "application/json")
        .header("user-agent", concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", &d.id)
        .header(DELIVERY_HEADER, &d.id)
        .header("webhook-timestamp", timestamp.to_string());
    if let Some(key) = &secret_key {
        req = req
            .header("x-nango-signature", nango_signature(key, &d.body))
            .header("x-nango-hmac-sha256", nango_hmac_signature(key, &d.body));
    }
    if let Some(sig) = signing
        .as_deref()
        .and_then(|s| standard_signature(s, &d.id, timestamp, &d.body))
    {
        req = req.header("webhook-signature", sig);
    }
    let shown = shown_url(&url);
    match req.body(d.body.clone()).send().await {
        Ok(resp) if resp.status().is_success() => Ok(Some(shown)),
        // Not followed: an HTTP client follows a 301 or 302 with a GET
        // without the body, which a receiver could answer 200 to. Tried
        // again, as the URL may be fixed meanwhile.
        Ok(resp) if resp.status().is_redirection() => {
            let s = resp.status();
            let to = resp
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                // A relative one is read against the URL it came from.
                .and_then(|l| url::Url::parse(&url).and_then(|u| u.join(l)).ok())
                .map(|l| shown_url(l.as_str()))
                .unwrap_or_else(|| "nowhere".into());
            Err((
                format!(
                    "{shown} answered HTTP {s}, a redirect to {to}: webhooks are not sent on to another URL (set that one)"
                ),
                true,
                shown,
            ))
        }
        Ok(resp) => {
            let s = resp.status();
            let retry = s.is_server_error() || s.as_u16() == 408 || s.as_u16() == 429;
            Err((format!("{shown} answered HTTP {s}"), retry, shown))
        }
        Err(e) if e.is_timeout() => Err((
            format!(
                "{shown} did not answer within {} s",
                DELIVERY_TIMEOUT.as_secs()
            ),
            true,
            shown,
        )),
        Err(e) => Err((
            format!("cannot reach {shown}: {}", e.without_url()),
            true,
            shown,
        )),
    }
}

/// The client deliveries go out with: it follows no redirect.
fn delivery_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default()
        })
        .clone()
}

/// How long a receiver has to answer a delivery.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// A receiver's URL as errors and the event log name it: without the
/// query or a user and password, which can hold a token.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let had_query = u.query().is_some();
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            // A path segment that looks like a token (Slack's and Zapier's
            // hook URLs carry their secret in the path) is masked.
            let path: Vec<String> = u
                .path_segments()
                .map(|segments| {
                    segments
                        .map(|p| {
                            let token_like = p.len() >= 16
                                && p.chars()
                                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                            if token_like {
                                "***".to_string()
                            } else {
                                p.to_string()
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !path.is_empty() {
                u.set_path(&path.join("/"));
            }
            if had_query {
                format!("{u}?…")
            } else {
                u.to_string()
            }
        }
        Err(_) => "the app's webhook URL".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receivers_url_is_named_without_its_secrets() {
        assert_eq!(
            shown_url("https://u:p@app.example/hooks?token=s3cret#x"),
            "https://app.example/hooks?…"
        );
        assert_eq!(shown_url("http://127.0.0.1:9/h"), "http://127.0.0.1:9/h");
        assert_eq!(
            shown_url("https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXXXXXXXXXX"),
            "https://hooks.slack.com/services/T0001/B0002/***"
        );
    }

    #[test]
    fn a_failure_webhook_describes_the_error_without_its_stack() {
        let message = "Error: the upstream said no\nsecond line: kept\nfetchData@.sluice/build/wh.js:3592:11\nrun@wh.js:10:2\n    at exec (main.js:1:2)";
        assert_eq!(
            without_stack(message),
            "Error: the upstream said no\nsecond line: kept"
        );
        assert_eq!(without_stack("no stack: 1:2"), "no stack: 1:2");
    }

    #[test]
    fn signatures_match_their_definitions() {
        // sha256("key" + "{}") in hex.
        assert_eq!(nango_signature("key", "{}"), hex(&Sha256::digest(b"key{}")));
        // RFC 4231, test case 2.
        assert_eq!(
            nango_hmac_signature("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The Standard Webhooks reference vector.
        let sig = standard_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(standard_signature("not-a-secret", "i", 1, "b"), None);
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let w = Webhooks {
            wake: Notify::new(),
            in_flight: Default::default(),
            resume_at: Default::default(),
            heads: Default::default(),
            base_delay: Duration::from_secs(3),
            max_delay: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(25 * 3600),
            outbox_bytes: Default::default(),
            max_outbox_bytes: 1 << 30,
            app: std::sync::OnceLock::new(),
            events: Default::default(),
            told: Default::default(),
        };
        let secs = |n| w.backoff(n, "msg_x").num_milliseconds() as f64 / 1000.0;
        assert!((2.4..=3.6).contains(&secs(1)), "{}", secs(1));
        assert!((4.8..=7.2).contains(&secs(2)), "{}", secs(2));
        assert!((2880.0..=4320.0).contains(&secs(30)), "{}", secs(30));
        // Over a day of retries before giving up: the sum of the delays.
        let total: f64 = (1..=40).map(secs).sum();
        assert!(total > 24.0 * 3600.0, "{total}");
    }
}
