//! The OAuth2 authorization-code flow that creates a connection from a
//! browser, as the original's: the app's backend creates a connect session
//! ([`super::connect`]), the browser opens `GET /oauth/connect/:key?
//! connect_session_token=…` (a popup, or `@nangohq/frontend`'s `auth()`),
//! which redirects to the provider's authorization URL; the provider sends
//! the browser back to `GET /oauth/callback?code&state`, where the code is
//! exchanged for tokens at the provider's token URL and the connection is
//! stored as an import stores one (validated, its syncs scheduled, its
//! `post-connection-creation` scripts run). The browser gets the
//! original's page, which tells its opener (`postMessage` and a
//! `BroadcastChannel`); a frontend SDK waiting on the websocket (`GET /`
//! upgraded) gets `{message_type: "success" | "error", …}`.
//!
//! A flow between the redirect and the callback is a document of its
//! environment (`oauth_flows`, keyed by its `state`), used once; one never
//! finished lapses after an hour. PKCE (S256) is used unless the provider
//! says `disable_pkce`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use sluice_runtime::connection::{Connection, Credentials};

use super::connect::{self, ConnectSession};
use super::connections::{self, Draft};
use crate::app::{App, EnvState};
use crate::error::ApiError;
use crate::provider_clients::ProviderClient;

/// The document collection of an environment's OAuth flows under way.
pub(crate) const FLOWS: &str = "oauth_flows";

/// How long a flow waits for its callback.
const FLOW_TTL: chrono::Duration = chrono::Duration::hours(1);

/// The authorization URL's parameters that bind the flow to this server
/// and this browser: neither the browser's nor the session's
/// `authorization_params` replace them.
const FLOW_PARAMS: [&str; 6] = [
    "state",
    "redirect_uri",
    "client_id",
    "response_type",
    "code_challenge",
    "code_challenge_method",
];

/// The authorization URL's parameters that say what the user grants: the
/// app's to choose (the session's scopes, else the integration's), never
/// the browser's `authorization_params`.
const SCOPE_PARAMS: [&str; 3] = ["scope", "user_scope", "optional_scope"];

/// The longest query string taken from the browser or the provider.
const MAX_QUERY: usize = 16 << 10;

/// An OAuth flow between the redirect and the callback.
#[derive(Clone, Serialize, Deserialize)]
struct Flow {
    provider_config_key: String,
    provider: String,
    connection_id: String,
    callback_url: String,
    /// PKCE's verifier (`None`: the provider disables PKCE).
    code_verifier: Option<String>,
    connection_config: Map<String, Value>,
    end_user: Option<Value>,
    tags: crate::api::end_users::Tags,
    webhook_url_override: Option<String>,
    /// The frontend SDK's websocket client waiting for the result.
    ws_client_id: Option<String>,
    /// A reconnect: the connection exists and gets new credentials.
    reconnect: bool,
    /// The connect session that started it (its token's hash): a flow
    /// whose session was deleted meanwhile does not finish.
    #[serde(default)]
    session_key: Option<String>,
    /// The user's own OAuth app (`credentials[oauth_client_*_override]`):
    /// the code is exchanged, and the token refreshed, with it.
    #[serde(default)]
    client_override: Option<(String, String)>,
    /// The `connection_config` keys the app gave (the session's
    /// defaults): the only ones that may choose a URL's whole host.
    #[serde(default)]
    trusted: Vec<String>,
    /// An OAuth 1.0a flow's request token and its secret (the token comes
    /// back with the user).
    #[serde(default)]
    request_token: Option<(String, String)>,
    expires_at: DateTime<Utc>,
    /// The two secrets above (the client's and the request token's),
    /// sealed with the environment's data key while the flow is stored;
    /// there they are empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
}

/// What a stored flow keeps sealed.
#[derive(Serialize, Deserialize)]
struct FlowSecrets {
    client_secret: Option<String>,
    request_token_secret: Option<String>,
}

impl Flow {
    /// The flow as stored: its secrets sealed for `state`'s document.
    async fn sealed(&self, env: &EnvState, state: &str) -> Result<Flow, ApiError> {
        let secrets = FlowSecrets {
            client_secret: self.client_override.as_ref().map(|(_, s)| s.clone()),
            request_token_secret: self.request_token.as_ref().map(|(_, s)| s.clone()),
        };
        let sealed = env.store.seal_for_doc(FLOWS, state, &secrets).await?;
        Ok(Flow {
            client_override: self
                .client_override
                .as_ref()
                .map(|(id, _)| (id.clone(), String::new())),
            request_token: self
                .request_token
                .as_ref()
                .map(|(t, _)| (t.clone(), String::new())),
            sealed: Some(sealed),
            ..self.clone()
        })
    }

    /// The stored flow `state` with its secrets opened (one stored before
    /// they were sealed has them in place).
    async fn opened(
        mut self,
        env: &EnvState,
        state: &str,
    ) -> Result<Flow, sluice_store::StoreError> {
        if let Some(sealed) = self.sealed.take() {
            let secrets: FlowSecrets = env.store.open_for_doc(FLOWS, state, &sealed).await?;
            if let (Some((_, s)), Some(secret)) = (&mut self.client_override, secrets.client_secret)
            {
                *s = secret;
            }
            if let (Some((_, s)), Some(secret)) =
                (&mut self.request_token, secrets.request_token_secret)
            {
                *s = secret;
            }
        }
        Ok(self)
    }
}

/// The websocket clients of frontend SDKs waiting for a flow's result, by
/// the id this server gave each (`connection_ack`); and the flows whose
/// callback is being handled (a `state` is used once, however many
/// callbacks come at once).
pub struct Clients {
    senders: Mutex<HashMap<String, Waiting>>,
    taking: Mutex<HashSet<String>>,
    /// The flows each connect session (by its token's hash) started, and
    /// when the session lapses: a session keeps its last
    /// [`MAX_FLOWS_PER_SESSION`] (a browser reloading the page), not
    /// every one a script could make in its 30 minutes.
    flows: Mutex<HashMap<String, SessionFlows>>,
    /// Set at the server's stop: every socket closes.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Default for Clients {
    fn default() -> Self {
        Self {
            senders: Mutex::default(),
            taking: Mutex::default(),
            flows: Mutex::default(),
            closing: tokio::sync::watch::channel(false).0,
        }
    }
}

/// A websocket client waiting: where its result goes, and whether a
/// flow named it (its `ws_client_id` in a flow a connect session
/// started).
struct Waiting {
    result: tokio::sync::mpsc::UnboundedSender<String>,
    named: bool,
    /// When it was opened: an unnamed socket older than
    /// [`EVICTABLE_AFTER`] gives its place to a new one when every place
    /// is taken.
    opened: std::time::Instant,
}

/// How long a socket no flow named keeps its place whatever comes (a
/// browser names its socket as soon as it is acknowledged, in the popup's
/// first request); past it, when every place is taken, the oldest such
/// socket is closed for a new one (shortened by `websocket_name_grace`
/// when that is shorter). Sockets that do nothing cannot keep real
/// flows out: holding the places takes opening a new socket for each
/// one this often, not once a grace; and a socket a flow named is never
/// closed for another.
const EVICTABLE_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// When a connect session lapses, and the states of the flows it started,
/// oldest first.
type SessionFlows = (DateTime<Utc>, std::collections::VecDeque<String>);

/// The most flows under way per connect session.
const MAX_FLOWS_PER_SESSION: usize = 16;

/// The most websocket clients waiting at once (each is a browser in the
/// middle of connecting an account).
const MAX_CLIENTS: usize = 10_000;

/// How long a websocket waits for its flow's result: a user signing in
/// at the provider, two-factor step included.
const CLIENT_LIFE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The largest frame or message a client may send (it has nothing to say
/// but a close).
const MAX_CLIENT_FRAME: usize = 4 << 10;

impl Clients {
    fn notify(&self, id: Option<&str>, message: Value) {
        let Some(id) = id else {
            return;
        };
        let sender = self
            .senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(s) = sender {
            let _ = s.result.send(message.to_string());
        }
    }

    /// A flow names websocket client `id`: it waits for the result.
    fn named(&self, id: &str) {
        if let Some(waiting) = self
            .senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id)
        {
            waiting.named = true;
        }
    }

    /// Whether client `id` waits without a flow naming it (one already
    /// told its result is not waiting).
    fn unnamed(&self, id: &str) -> bool {
        self.senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|w| !w.named)
    }

    /// Notes flow `state` of session `session`; returns the state of a
    /// flow it replaces (to be deleted), if any.
    fn started(&self, session: &str, lapses: DateTime<Utc>, state: &str) -> Option<String> {
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        if flows.len() >= 1024 {
            let now = Utc::now();
            flows.retain(|_, (at, _)| *at > now);
        }
        let (_, states) = flows
            .entry(session.to_string())
            .or_insert_with(|| (lapses, Default::default()));
        states.push_back(state.to_string());
        if states.len() > MAX_FLOWS_PER_SESSION {
            states.pop_front()
        } else {
            None
        }
    }

    /// Every socket closes (the server stops).
    pub fn close(&self) {
        let _ = self.closing.send(true);
    }

    /// Marks `state` as being taken; `false` if another callback has it.
    fn take(&self, state: &str) -> bool {
        self.taking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(state.to_string())
    }

    fn taken(&self, state: &str) {
        self.taking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(state);
    }
}

/// `GET /` upgraded to a websocket: the frontend SDK's channel. The server
/// names the client (`{message_type: "connection_ack", ws_client_id}`),
/// the SDK passes that id to `/oauth/connect`, and the flow's result is
/// sent here; then the socket closes. A socket no flow names within
/// `websocket_name_grace` (a minute) is told so (`{message_type: "error",
/// error_type: "websocket_unused", …}`) and closed: anyone may open one,
/// and only the sockets of flows under way hold a slot for long. When
/// every place is taken, a new socket takes the place of the oldest one
/// no flow named, once that has waited [`EVICTABLE_AFTER`]: sockets
/// opened and left unnamed cannot keep a real flow's socket out, and a
/// named one is never closed for another. (Not by client address: the
/// server behind a proxy sees one for everyone.) A plain `GET /` is 404.
pub async fn websocket(
    State(app): State<Arc<App>>,
    slot: Option<axum::Extension<crate::HeldSlot>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return ApiError::not_found("not_found", "no such route").into_response();
    };
    let clients = app.oauth_clients.clone();
    // Unauthenticated and up to 15 minutes long: at most a quarter of the
    // client connections may be such sockets.
    let cap = MAX_CLIENTS.min((app.config.max_connections / 4).max(1));
    let grace = app.config.websocket_name_grace;
    // Small buffers (tungstenite's are 128 KiB each way): a socket that
    // waits costs kilobytes, not a quarter of a megabyte.
    ws.max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .read_buffer_size(MAX_CLIENT_FRAME)
        .write_buffer_size(0)
        .max_write_buffer_size(64 << 10)
        .on_upgrade(move |socket| async move {
            // The socket counts against `max_connections` until it closes.
            let _slot = slot;
            client(clients, socket, cap, grace).await
        })
}

async fn client(
    clients: Arc<Clients>,
    mut socket: WebSocket,
    cap: usize,
    grace: std::time::Duration,
) {
    let id = uuid::Uuid::new_v4().to_string();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let evictable = EVICTABLE_AFTER.min(grace);
    let full = {
        let mut senders = clients.senders.lock().unwrap_or_else(|e| e.into_inner());
        if senders.len() >= cap {
            // Every place is taken: the oldest socket no flow named, if
            // it waited past `evictable`, gives its place (its browser
            // would have named it by now), told so.
            let now = std::time::Instant::now();
            let oldest = senders
                .iter()
                .filter(|(_, w)| !w.named && now.duration_since(w.opened) >= evictable)
                .min_by_key(|(_, w)| w.opened)
                .map(|(k, _)| k.clone());
            if let Some(w) = oldest.and_then(|k| senders.remove(&k)) {
                let said = json!({
                    "message_type": "error",
                    "error_type": "websocket_unused",
                    "error_desc": format!(
                        "no authorization flow named this websocket (its ws_client_id) within {:?}, and every place was taken: it gave its place to a newer one; open /oauth/connect with it right after connection_ack",
                        now.duration_since(w.opened)
                    ),
                });
                let _ = w.result.send(said.to_string());
            }
        }
        let full = senders.len() >= cap;
        if !full {
            senders.insert(
                id.clone(),
                Waiting {
                    result: tx,
                    named: false,
                    opened: std::time::Instant::now(),
                },
            );
        }
        full
    };
    if full {
        let said = json!({
            "message_type": "error",
            "error_type": "too_many_clients",
            "error_desc": format!("{cap} browsers are waiting for a connection already (none unnamed for {evictable:?} or more); try again later"),
        });
        let _ = socket.send(Message::Text(said.to_string().into())).await;
        let _ = socket.send(Message::Close(None)).await;
        return;
    }
    let mut closing = clients.closing.subscribe();
    let ack = json!({"message_type": "connection_ack", "ws_client_id": id}).to_string();
    if socket.send(Message::Text(ack.into())).await.is_ok() {
        let deadline = tokio::time::sleep(CLIENT_LIFE);
        let naming = tokio::time::sleep(grace);
        tokio::pin!(deadline, naming);
        let mut unnamed = true;
        loop {
            tokio::select! {
                result = rx.recv() => {
                    if let Some(text) = result {
                        let _ = socket.send(Message::Text(text.into())).await;
                    }
                    break;
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => break,
                _ = &mut naming, if unnamed => {
                    unnamed = false;
                    if clients.unnamed(&id) {
                        let said = json!({
                            "message_type": "error",
                            "error_type": "websocket_unused",
                            "error_desc": format!(
                                "no authorization flow named this websocket (its ws_client_id) within {grace:?}: open /oauth/connect with it right after connection_ack"
                            ),
                        });
                        let _ = socket.send(Message::Text(said.to_string().into())).await;
                        break;
                    }
                }
                _ = &mut deadline => break,
            }
        }
    }
    clients
        .senders
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    let _ = socket.send(Message::Close(None)).await;
}

/// The page the browser gets at the end of the flow (or when it cannot
/// start): it tells the window that opened it (`postMessage`, and a
/// `BroadcastChannel` named `nango-oauth-callback`, as the original's
/// page), and closes itself on success.
fn page(error: Option<(&str, &str)>) -> Response {
    let (status, title, detail, message) = match error {
        None => (
            StatusCode::OK,
            "Successful connection \u{2705}",
            "You can close this window.".to_string(),
            json!({"type": "nango_oauth_callback_success"}),
        ),
        Some((kind, text)) => (
            StatusCode::BAD_REQUEST,
            "Connection failed \u{2715}",
            text.to_string(),
            json!({"type": "nango_oauth_callback_error", "payload": {"message": text, "errorType": kind}}),
        ),
    };
    // The message goes into a script: `<`, `>` and `&` escaped so no text
    // of a provider's can end the script element.
    let message = message
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let detail = detail
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let close = if error.is_none() {
        "setTimeout(function () { window.close(); }, 500);"
    } else {
        ""
    };
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Connection</title></head>\n<body>\n<h1>{title}</h1>\n<p id=\"detail\">{detail}</p>\n<script>\n(function () {{\n  var message = {message};\n  window.__nangoOAuthError = message.type === 'nango_oauth_callback_error' ? message.payload : null;\n  try {{ if (window.opener) {{ window.opener.postMessage(message, '*'); }} }} catch (e) {{}}\n  try {{ var channel = new BroadcastChannel('nango-oauth-callback'); channel.postMessage(message); }} catch (e) {{}}\n  window.addEventListener('message', function (event) {{\n    if (event.data && event.data.type === 'nango_oauth_callback_ack') {{ window.close(); }}\n  }});\n  {close}\n}})();\n</script>\n</body></html>\n"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// A failure shown to the browser (the page) and to the waiting frontend
/// SDK (`{message_type: "error", …}`).
struct Failure {
    kind: &'static str,
    message: String,
}

fn failure(kind: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

fn fail(app: &App, ws: Option<&str>, pck: &str, cid: &str, f: Failure) -> Response {
    app.oauth_clients.notify(
        ws,
        json!({
            "message_type": "error",
            "provider_config_key": pck,
            "connection_id": cid,
            "error_type": f.kind,
            "error_desc": f.message,
        }),
    );
    page(Some((f.kind, &f.message)))
}

/// A query string's pairs (repeated keys kept in order); `params[x]=v`
/// and `authorization_params[x]=v` are collected apart, as the
/// original's `qs` parsing makes them objects.
struct Query {
    plain: Vec<(String, String)>,
    params: Map<String, Value>,
    authorization_params: Map<String, Value>,
    /// `credentials[oauth_client_id_override]` and
    /// `credentials[oauth_client_secret_override]`: the user's own OAuth
    /// app for this connection.
    credentials: Map<String, Value>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let raw = raw.unwrap_or("");
        if raw.len() > MAX_QUERY {
            return Err(ApiError::bad_request(
                "invalid_query_params",
                format!("the query string is longer than {MAX_QUERY} bytes"),
            ));
        }
        let mut q = Query {
            plain: Vec::new(),
            params: Map::new(),
            authorization_params: Map::new(),
            credentials: Map::new(),
        };
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            let nested = |prefix: &str| {
                k.strip_prefix(prefix)
                    .and_then(|r| r.strip_suffix(']'))
                    .map(str::to_string)
            };
            if let Some(key) = nested("params[") {
                q.params.insert(key, Value::String(v.into_owned()));
            } else if let Some(key) = nested("credentials[") {
                q.credentials.insert(key, Value::String(v.into_owned()));
            } else if let Some(key) = nested("authorization_params[") {
                q.authorization_params
                    .insert(key, Value::String(v.into_owned()));
            } else {
                q.plain.push((k.into_owned(), v.into_owned()));
            }
        }
        Ok(q)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.plain
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A provider definition's string map (`authorization_params`,
/// `token_params`), each value expanded with the connection's values;
/// the keys whose placeholders have none are named.
fn expanded_params(
    definition: &Map<String, Value>,
    key: &str,
    c: &Connection,
) -> Result<Vec<(String, String)>, Vec<String>> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for (k, v) in definition
        .get(key)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let Some(template) = text(v) else {
            continue;
        };
        match sluice_runtime::template::expand(&template, &|name| c.lookup(name)) {
            Some(value) => out.push((k.clone(), value)),
            None => missing.push(template),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

/// A connection carrying only the values the provider's templates read
/// (`${connectionConfig.x}`).
pub(crate) fn template_connection(
    pck: &str,
    cid: &str,
    provider: &str,
    config: &Map<String, Value>,
) -> Connection {
    let now = Utc::now();
    Connection {
        connection_id: cid.to_string(),
        provider_config_key: pck.to_string(),
        provider: provider.to_string(),
        credentials: Credentials::try_from(Map::new()).unwrap_or_else(|_| unreachable!()),
        connection_config: config.clone(),
        metadata: Value::Null,
        created_at: now,
        updated_at: now,
        end_user: Value::Null,
        tags: Default::default(),
        webhook_url_override: None,
        token_host_from_browser: false,
    }
}

/// `GET /oauth/connect/:key?connect_session_token=…`: starts the flow
/// (302 to the provider's authorization URL).
pub async fn connect(
    State(app): State<Arc<App>>,
    super::ApiPath(key): super::ApiPath<String>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    // A HEAD starts no flow.
    if method == axum::http::Method::HEAD {
        return StatusCode::OK.into_response();
    }
    match start(&app, &key, uri.query(), &headers).await {
        Ok(Ok(location)) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
        )
            .into_response(),
        Ok(Err((ws, f))) => fail(&app, ws.as_deref(), &key, "", f),
        Err((ws, e)) => {
            // A refusal before any flow (the session expired or ended,
            // the integration not allowed) reaches the waiting frontend
            // SDK or Connect UI too; else it would wait on a window
            // showing the error. Only for a request holding a session's
            // token (see `start`).
            app.oauth_clients.notify(
                ws.as_deref(),
                json!({
                    "message_type": "error",
                    "provider_config_key": key,
                    "connection_id": "",
                    "error_type": e.code,
                    "error_desc": e.message,
                }),
            );
            e.into_response()
        }
    }
}

/// The authorization URL, or why not (a failure shown as the page, or a
/// refusal), each with the websocket client to tell (`ws_client_id`).
type Started = Result<Result<String, (Option<String>, Failure)>, (Option<String>, ApiError)>;

/// Starts the flow the browser's query asks for. The websocket client it
/// names is told of a failure only if the request holds the token of a
/// connect session this server issued (in force, or one that expired or
/// was ended meanwhile, which the page says): an id alone, without the
/// session the flow is for, cannot end someone else's wait.
async fn start(app: &App, key: &str, query: Option<&str>, headers: &HeaderMap) -> Started {
    let q = Query::parse(query).map_err(|e| (None, e))?;
    let ws = q.get("ws_client_id").map(str::to_string);
    let (env, session, session_key) = match browser_session(app, key, &q).await {
        Ok(found) => found,
        Err(e) => {
            let issued = match q.get("connect_session_token") {
                Some(token) => connect::issued(app, token).await,
                None => false,
            };
            return Err((ws.filter(|_| issued), e));
        }
    };
    match flow(app, &env, &session, &session_key, key, &q, headers).await {
        Ok(Ok(location)) => Ok(Ok(location)),
        Ok(Err(f)) => Ok(Err((ws, f))),
        Err(e) => Err((ws, e)),
    }
}

/// A connection's `connection_config` from the browser's `params[…]`
/// (strings only) under the session's `connection_config` for the
/// integration (`defaults`), which wins; and the keys the app gave. With
/// a session, the scopes are the app's to choose: the browser's
/// `user_scope` and `params[oauth_scopes_override]` are not taken (as the
/// original).
fn session_config(q: &Query, defaults: &Map<String, Value>) -> (Map<String, Value>, Vec<String>) {
    let mut config: Map<String, Value> = q
        .params
        .iter()
        .filter(|(k, v)| {
            v.is_string()
                && !matches!(
                    k.as_str(),
                    "webhook_url" | "oauth_scopes_override" | "user_scope"
                )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let own = match defaults.get("connection_config") {
        Some(Value::Object(own)) => own.clone(),
        _ => Map::new(),
    };
    let trusted: Vec<String> = own.keys().cloned().collect();
    config.extend(own);
    (config, trusted)
}

/// Takes `oauth_client_id_override` and `oauth_client_secret_override`
/// out of a connection config: the pair when both are non-empty strings.
fn take_client_override(config: &mut Map<String, Value>) -> Option<(String, String)> {
    let id = config.remove("oauth_client_id_override");
    let secret = config.remove("oauth_client_secret_override");
    match (id, secret) {
        (Some(Value::String(id)), Some(Value::String(secret)))
            if !id.is_empty() && !secret.is_empty() =>
        {
            Some((id, secret))
        }
        _ => None,
    }
}

/// The connect session a browser's request names
/// (`?connect_session_token=`), allowing integration `key`; the
/// original's refusals (401 for the token, 400 for a `connection_id`,
/// which a session chooses, or an integration it does not allow).
async fn browser_session(
    app: &App,
    key: &str,
    q: &Query,
) -> Result<(Arc<EnvState>, ConnectSession, String), ApiError> {
    let Some(token) = q.get("connect_session_token") else {
        let (code, message) = if q.get("public_key").is_some() {
            (
                "deprecated_authentication",
                "public keys are not supported: create a connect session (POST /connect/sessions) and pass its token as `connect_session_token`",
            )
        } else {
            (
                "missing_connect_session_token",
                "connecting an account needs a connect session: pass the token of POST /connect/sessions as `connect_session_token`",
            )
        };
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, code, message));
    };
    let (env, session) = connect::find(app, token).await?;
    if q.get("connection_id").is_some() {
        return Err(ApiError::bad_request(
            "invalid_query_params",
            "connection_id is forbidden when using session token",
        ));
    }
    if !session.allows(key) {
        return Err(ApiError::bad_request(
            "integration_not_allowed",
            format!("this connect session does not allow integration `{key}`"),
        ));
    }
    Ok((env, session, connect::token_key(token)))
}

/// Before a browser's credentials are read: its connect session must be
/// one, allowing the integration (so no body is read, up to the route's
/// limit, for a request no session stands behind).
pub async fn session_first(
    State(app): State<Arc<App>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::RequestExt as _;
    let key = match req.extract_parts::<axum::extract::Path<String>>().await {
        Ok(axum::extract::Path(key)) => key,
        Err(e) => {
            return ApiError::bad_request("invalid_uri_params", e.body_text()).into_response();
        }
    };
    let q = match Query::parse(req.uri().query()) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = browser_session(&app, &key, &q).await {
        return e.into_response();
    }
    next.run(req).await
}

/// The most bytes of credentials a browser sends (a key, a password, a
/// client's secret).
pub const MAX_BROWSER_CREDENTIALS: usize = 64 << 10;

/// Typed credentials are kept as typed, but a control character (a line
/// break that would end up in a header) is refused.
fn typed(field: &str, value: &str) -> Result<(), ApiError> {
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid_body(format!(
            "`{field}` holds a control character (a line break, a tab…)"
        )));
    }
    Ok(())
}

/// `POST /api-auth/api-key/:key?connect_session_token=…` (`{apiKey}`):
/// the browser (Connect UI, `@nangohq/frontend`) creates an API_KEY
/// connection with the user's key.
pub async fn api_key(
    State(app): State<Arc<App>>,
    super::ApiPath(key): super::ApiPath<String>,
    uri: axum::http::Uri,
    super::JsonBody(body): super::JsonBody<Map<String, Value>>,
) -> Result<axum::Json<Value>, ApiError> {
    let api_key = match (body.get("apiKey"), body.len()) {
        (Some(Value::String(k)), 1) if (1..=1024).contains(&k.chars().count()) => k.clone(),
        _ => {
            return Err(ApiError::invalid_body(
                "the body is `{\"apiKey\": \"…\"}` (1 to 1,024 characters) and nothing else",
            ));
        }
    };
    typed("apiKey", &api_key)?;
    let credentials = json!({"type": "API_KEY", "apiKey": api_key});
    browser_credentials(&app, &key, uri.query(), "API_KEY", credentials).await
}

/// `POST /api-auth/basic/:key?connect_session_token=…` (`{username,
/// password}`, either may be empty).
pub async fn basic(
    State(app): State<Arc<App>>,
    super::ApiPath(key): super::ApiPath<String>,
    uri: axum::http::Uri,
    super::JsonBody(body): super::JsonBody<Map<String, Value>>,
) -> Result<axum::Json<Value>, ApiError> {
    let field = |k: &str| match body.get(k) {
        Some(Value::String(v)) if v.chars().count() <= 1024 => Some(v.clone()),
        _ => None,
    };
    let (Some(username), Some(password), 2) = (field("username"), field("password"), body.len())
    else {
        return Err(ApiError::invalid_body(
            "the body is `{\"username\": \"…\", \"password\": \"…\"}` (strings of at most 1,024 characters) and nothing else",
        ));
    };
    typed("username", &username)?;
    typed("password", &password)?;
    let credentials = json!({"type": "BASIC", "username": username, "password": password});
    browser_credentials(&app, &key, uri.query(), "BASIC", credentials).await
}

/// `POST /oauth2/auth/:key?connect_session_token=…` (`{client_id,
/// client_secret}`): a client-credentials (`OAUTH2_CC`) connection for
/// the user's own client; its first token is asked for at once.
pub async fn client_credentials(
    State(app): State<Arc<App>>,
    super::ApiPath(key): super::ApiPath<String>,
    uri: axum::http::Uri,
    super::JsonBody(body): super::JsonBody<Map<String, Value>>,
) -> Result<axum::Json<Value>, ApiError> {
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let Some(client_id) = text("client_id") else {
        return Err(ApiError::bad_request(
            "missing_client_id",
            "`client_id` is required",
        ));
    };
    let Some(client_secret) = text("client_secret") else {
        return Err(ApiError::bad_request(
            "missing_client_secret",
            "`client_secret` is required",
        ));
    };
    typed("client_id", client_id)?;
    typed("client_secret", client_secret)?;
    // `token` is asked for before the connection is stored.
    let credentials = json!({"type": "OAUTH2_CC", "token": "-", "client_id": client_id,
        "client_secret": client_secret});
    browser_credentials(&app, &key, uri.query(), "OAUTH2_CC", credentials).await
}

/// The credentials a browser sends for a connection of mode `kind` whose
/// fields each provider names (`privateKey`, `issuerId`, `username`…):
/// strings (a private key's lines kept, other control characters
/// refused), or, for JWT, objects of strings (Ghost's key given as
/// `{id, secret}`); never the token the connection is to get.
fn users_credentials(body: Map<String, Value>, kind: &str) -> Result<Value, ApiError> {
    fn checked(field: &str, value: &str) -> Result<(), ApiError> {
        if value
            .chars()
            .any(|ch| ch.is_control() && ch != '\n' && ch != '\r')
        {
            return Err(ApiError::invalid_body(format!(
                "`{field}` holds a control character"
            )));
        }
        Ok(())
    }
    let mut credentials = Map::new();
    for (field, value) in body {
        if field == "type" {
            continue;
        }
        if matches!(
            field.as_str(),
            "token" | "expires_at" | "raw" | "refresh_token"
        ) {
            return Err(ApiError::invalid_body(format!(
                "`{field}` is the provider's to give, not the user's"
            )));
        }
        match &value {
            Value::String(v) => checked(&field, v)?,
            // Ghost's key as `{id, secret}`; a TWO_STEP assertion's key as
            // `assertionOption: {privateKey}`.
            Value::Object(m) if kind == "JWT" || kind == "TWO_STEP" => {
                for (k, v) in m {
                    let Value::String(v) = v else {
                        return Err(ApiError::invalid_body(format!(
                            "`{field}.{k}` must be a string"
                        )));
                    };
                    checked(&format!("{field}.{k}"), v)?;
                }
            }
            _ => {
                return Err(ApiError::invalid_body(format!(
                    "`{field}` must be a string: the body holds the credentials the provider asks for"
                )));
            }
        }
        credentials.insert(field, value);
    }
    credentials.insert("type".into(), json!(kind));
    Ok(Value::Object(credentials))
}

/// `POST /auth/two-step/:key?connect_session_token=…` (the user's
/// credentials, as the provider's definition names them): a TWO_STEP
/// connection; its first token is asked for at once.
pub async fn two_step(
    State(app): State<Arc<App>>,
    super::ApiPath(key): super::ApiPath<String>,
    uri: axum::http::Uri,
    super::JsonBody(body): super::JsonBody<Map<String, Value>>,
) -> Result<axum::Json<Value>, ApiError> {
    let credentials = users_credentials(body, "TWO_STEP")?;
    browser_credentials(&app, &key, uri.query(), "TWO_STEP", credentials).await
}

/// `POST /auth/jwt/:key?connect_session_token=…` (the user's credentials,
/// as the provider's definition names them: Apple's `issuerId`,
/// `privateKeyId` and `privateKey`, Ghost's `privateKey`…): a JWT
/// connection; its token is made at once (see [`crate::jwt`]).
pub async fn jwt(
    State(app): State<Arc<App>>,
    super::ApiPath(key): super::ApiPath<String>,
    uri: axum::http::Uri,
    super::JsonBody(body): super::JsonBody<Map<String, Value>>,
) -> Result<axum::Json<Value>, ApiError> {
    let credentials = users_credentials(body, "JWT")?;
    browser_credentials(&app, &key, uri.query(), "JWT", credentials).await
}

/// `POST /auth/signature/:key?connect_session_token=…` (`{username,
/// password}`, neither empty): a SIGNATURE connection (Emarsys's WSSE);
/// its token is made at once.
pub async fn signature(
    State(app): State<Arc<App>>,
    super::ApiPath(key): super::ApiPath<String>,
    uri: axum::http::Uri,
    super::JsonBody(body): super::JsonBody<Map<String, Value>>,
) -> Result<axum::Json<Value>, ApiError> {
    let credentials = required_fields(&body, "SIGNATURE", &["username", "password"])?;
    browser_credentials(&app, &key, uri.query(), "SIGNATURE", credentials).await
}

/// Credentials of type `kind` from a body of exactly `fields` (and an
/// optional `type`), each a string of 1 to 1,024 characters without
/// control characters.
fn required_fields(
    body: &Map<String, Value>,
    kind: &str,
    fields: &[&str],
) -> Result<Value, ApiError> {
    if body.get("type").is_some_and(|t| t.as_str() != Some(kind)) {
        return Err(ApiError::invalid_body(format!(
            "`type` is `{kind}` here, if given"
        )));
    }
    let mut credentials = Map::new();
    credentials.insert("type".into(), json!(kind));
    for field in fields {
        match body.get(*field) {
            Some(Value::String(v)) if (1..=1024).contains(&v.chars().count()) => {
                typed(field, v)?;
                credentials.insert((*field).into(), Value::String(v.clone()));
            }
            _ => {
                return Err(ApiError::invalid_body(format!(
                    "`{field}` is required: a string of 1 to 1,024 characters"
                )));
            }
        }
    }
    if let Some(other) = body
        .keys()
        .find(|k| k.as_str() != "type" && !fields.contains(&k.as_str()))
    {
        return Err(ApiError::invalid_body(format!(
            "unknown field `{other}`; the body is {}",
            fields.join(", ")
        )));
    }
    Ok(Value::Object(credentials))
}

/// `POST /auth/tba/:key?connect_session_token=…&params[accountId]=…`
/// (`{token_id, token_secret, oauth_client_id_override?,
/// oauth_client_secret_override?}`): a NetSuite token-based
/// authentication connection; its requests are signed for the
/// integration's consumer unless the user names their own.
pub async fn tba(
    State(app): State<Arc<App>>,
    super::ApiPath(key): super::ApiPath<String>,
    uri: axum::http::Uri,
    super::JsonBody(mut body): super::JsonBody<Map<String, Value>>,
) -> Result<axum::Json<Value>, ApiError> {
    let mut own = Map::new();
    for (field, own_key) in [
        ("oauth_client_id_override", "client_id"),
        ("oauth_client_secret_override", "client_secret"),
    ] {
        match body.remove(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) if v.is_empty() => {}
            Some(Value::String(v)) if v.chars().count() <= 1024 => {
                typed(field, &v)?;
                own.insert(own_key.into(), Value::String(v));
            }
            Some(_) => {
                return Err(ApiError::invalid_body(format!(
                    "`{field}` must be a string of at most 1,024 characters"
                )));
            }
        }
    }
    let mut credentials = required_fields(&body, "TBA", &["token_id", "token_secret"])?;
    if !own.is_empty() {
        if own.len() != 2 {
            return Err(ApiError::invalid_body(
                "`oauth_client_id_override` and `oauth_client_secret_override` go together",
            ));
        }
        credentials["config_override"] = Value::Object(own);
    }
    browser_credentials(&app, &key, uri.query(), "TBA", credentials).await
}

/// `POST /auth/bill/:key?connect_session_token=…` (`{username, password,
/// organization_id, dev_key}`, none empty): a Bill.com connection; its
/// session is opened at once.
pub async fn bill(
    State(app): State<Arc<App>>,
    super::ApiPath(key): super::ApiPath<String>,
    uri: axum::http::Uri,
    super::JsonBody(body): super::JsonBody<Map<String, Value>>,
) -> Result<axum::Json<Value>, ApiError> {
    let credentials = required_fields(
        &body,
        "BILL",
        &["username", "password", "organization_id", "dev_key"],
    )?;
    browser_credentials(&app, &key, uri.query(), "BILL", credentials).await
}

/// `POST /auth/unauthenticated/:key?connect_session_token=…`: a connection
/// of an integration whose provider takes no credentials (`NONE`).
pub async fn unauthenticated(
    State(app): State<Arc<App>>,
    super::ApiPath(key): super::ApiPath<String>,
    uri: axum::http::Uri,
) -> Result<axum::Json<Value>, ApiError> {
    browser_credentials(&app, &key, uri.query(), "NONE", json!({})).await
}

/// A connection of integration `key` with credentials the user typed,
/// for the connect session the query names; stored as an import is
/// (checked, scheduled, the app told). Answers the original's
/// `{connectionId, providerConfigKey}`.
async fn browser_credentials(
    app: &Arc<App>,
    key: &str,
    query: Option<&str>,
    mode: &str,
    credentials: Value,
) -> Result<axum::Json<Value>, ApiError> {
    let q = Query::parse(query)?;
    let (env, session, _) = browser_session(app, key, &q).await?;
    let integration = env.store.integration(key).await?.ok_or_else(|| {
        ApiError::not_found(
            "unknown_provider_config",
            format!("No integration `{key}` in this environment"),
        )
    })?;
    let provider_mode = app
        .providers
        .get(&integration.provider)
        .map(|p| p.auth_mode.clone().unwrap_or_default())
        .ok_or_else(|| {
            ApiError::not_found(
                "unknown_provider_template",
                format!(
                    "The provider `{}` is not in the server's catalogue",
                    integration.provider
                ),
            )
        })?;
    if provider_mode != mode {
        return Err(ApiError::bad_request(
            "invalid_auth_mode",
            format!(
                "integration `{key}` ({}) is {}, not {mode}",
                integration.provider,
                if provider_mode.is_empty() {
                    "of no auth mode"
                } else {
                    &provider_mode
                }
            ),
        ));
    }
    let connection_id = match &session.connection_id {
        Some(cid) => {
            if !env.store.connection_exists(key, cid).await? {
                return Err(ApiError::bad_request(
                    "invalid_connection",
                    format!("the connection `{cid}` this session reconnects no longer exists"),
                ));
            }
            cid.clone()
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let (mut config, trusted) = session_config(&q, &session.defaults(key));
    // Nothing to do with an OAuth app here; never stored.
    let _ = take_client_override(&mut config);
    // A TBA consumer is the integration's, or the user's own override:
    // not one the browser's `params` put in the configuration.
    if mode == "TBA" {
        for k in ["oauth_client_id", "oauth_client_secret"] {
            if !trusted.iter().any(|t| t == k) {
                config.remove(k);
            }
        }
    }
    let mut credentials: Credentials = serde_json::from_value(credentials)
        .map_err(|e| ApiError::invalid_body(format!("invalid credentials: {e}")))?;
    // A token URL whose host a value from the browser chose (Drupal's
    // `http://${connectionConfig.baseUrl}/…`, Auth0's domain): asked only
    // at a public address, whatever `allowed_hosts` opens to scripts.
    let browser_chose_host = app
        .providers
        .get(&integration.provider)
        .and_then(|p| definition_url(&p.definition, "token_url"))
        .is_some_and(|template| untrusted_host_key(&template, &trusted, &config).is_some());
    let for_browser;
    let token_connections = if browser_chose_host {
        for_browser = env.connections.for_browser();
        &for_browser
    } else {
        &*env.connections
    };
    if mode == "OAUTH2_CC" {
        // The client's first token, asked for now (its scopes the
        // integration's unless the session's config names them).
        if let Some(scopes) = integration.oauth_scopes.as_ref().filter(|s| !s.is_empty()) {
            config
                .entry("oauth_scopes")
                .or_insert_with(|| Value::String(scopes.clone()));
        }
        let mut c = template_connection(key, &connection_id, &integration.provider, &config);
        c.credentials = credentials;
        let definition = &app
            .providers
            .get(&integration.provider)
            .map(|p| p.definition.clone())
            .unwrap_or_default();
        credentials = token_connections
            .renew_client_credentials(&c, definition)
            .await
            .map_err(|e| {
                ApiError::bad_request(
                    "client_credentials_fetch_error",
                    format!("the provider did not give a token for this client: {e}"),
                )
            })?;
        for k in definition
            .get("token_response_metadata")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let raw = credentials.as_map().get("raw").cloned().unwrap_or_default();
            if let Some(v) = at_path(&raw, k).filter(|v| v.is_string() || v.is_boolean()) {
                config.insert(k.to_string(), v.clone());
            }
        }
    }
    if mode == "TWO_STEP" {
        (credentials, config) = connections::two_step_token(
            app,
            token_connections,
            key,
            &connection_id,
            &integration.provider,
            credentials,
            config,
        )
        .await?;
    }
    if mode == "BILL" {
        let mut c = template_connection(key, &connection_id, &integration.provider, &config);
        c.credentials = credentials;
        credentials = env.connections.bill_session(&c).await.map_err(|e| {
            ApiError::bad_request(
                "bill_tokens_fetch_error",
                format!("Bill gave no session for these credentials: {e}"),
            )
        })?;
    }
    if matches!(mode, "JWT" | "SIGNATURE") {
        credentials = connections::made_token(
            app,
            key,
            &connection_id,
            &integration.provider,
            credentials,
            &config,
        )
        .await?;
    }
    let reconnect = session.connection_id.is_some();
    let draft = Draft {
        provider_config_key: key.to_string(),
        connection_id: connection_id.clone(),
        credentials,
        metadata: None,
        connection_config: Some(config),
        end_user: if reconnect {
            None
        } else {
            session.end_user.clone()
        },
        tags: (!reconnect || !session.tags.is_empty()).then(|| session.tags.clone()),
        webhook_url: session.webhook_url_override.clone().map(Some),
        tell_end_user: true,
        reconnect,
        token_host_from_browser: browser_chose_host,
    };
    connections::store(app, &env, draft, |pck| {
        ApiError::not_found(
            "unknown_provider_config",
            format!("No integration `{pck}` in this environment"),
        )
    })
    .await
    .map_err(|mut e| {
        if e.code == "connection_test_failed" {
            e.code = "connection_validation_failed".into();
        }
        e
    })?;
    Ok(axum::Json(json!({
        "connectionId": connection_id,
        "providerConfigKey": key,
    })))
}

/// The authorization URL for integration `key`, with its flow stored.
async fn flow(
    app: &App,
    env: &EnvState,
    session: &ConnectSession,
    session_key: &str,
    key: &str,
    q: &Query,
    headers: &HeaderMap,
) -> Result<Result<String, Failure>, ApiError> {
    let Some(integration) = env.store.integration(key).await? else {
        return Ok(Err(failure(
            "provider_config_err",
            format!("Could not find a Provider Config matching the \"{key}\" key."),
        )));
    };
    let Some(provider) = app.providers.get(&integration.provider) else {
        return Ok(Err(failure(
            "unknown_config_key",
            format!(
                "The provider `{}` of integration `{key}` is not in the server's catalogue.",
                integration.provider
            ),
        )));
    };
    let mode = provider.auth_mode.as_deref().unwrap_or("");
    if mode == "MCP_OAUTH2_GENERIC" {
        return mcp_generic_flow(
            app,
            env,
            session,
            session_key,
            key,
            q,
            headers,
            &integration,
        )
        .await;
    }
    if mode == "OAUTH1" {
        return oauth1_flow(
            app,
            env,
            session,
            session_key,
            key,
            q,
            headers,
            &integration,
            &provider.definition,
        )
        .await;
    }
    if mode == "APP" {
        return app_flow(
            app,
            env,
            session,
            session_key,
            key,
            q,
            headers,
            &integration,
            &provider.definition,
        )
        .await;
    }
    // An MCP server's OAuth is OAuth2's, with PKCE always and a client
    // that may be public (no secret).
    let mcp = mode == "MCP_OAUTH2";
    if mode != "OAUTH2" && !mcp {
        return Ok(Err(failure(
            "unsupported_auth_mode",
            format!(
                "The OAuth flow connects OAUTH2, OAUTH1, MCP_OAUTH2, MCP_OAUTH2_GENERIC and GitHub App (APP) integrations; `{}` is {}: create its connections with POST /connections.",
                integration.provider,
                if mode.is_empty() {
                    "of no auth mode"
                } else {
                    mode
                }
            ),
        )));
    }
    // A provider the original asks for tokens in a way sluice does not
    // follow is refused before the user is sent there.
    let client = ProviderClient::of(&integration.provider);
    if let Some(why) = client.and_then(|p| p.unsupported(&integration.provider)) {
        return Ok(Err(failure("unsupported_provider", why)));
    }
    let definition = &provider.definition;
    let defaults = session.defaults(key);
    let (mut config, trusted) = session_config(q, &defaults);
    // A user's own OAuth app named in the connection config (the
    // session's, else the browser's `params`) wins over `credentials[…]`;
    // it is used, never stored in the config nor shown.
    let config_override = take_client_override(&mut config);
    // The user's own OAuth app (both or neither), else the integration's.
    let client_override = match (
        q.credentials
            .get("oauth_client_id_override")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty()),
        q.credentials
            .get("oauth_client_secret_override")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty()),
    ) {
        (Some(id), Some(secret)) => Some((id.to_string(), secret.to_string())),
        _ => None,
    };
    let client_override = config_override.or(client_override);
    let (Some(client_id), Some(_)) = (
        client_override
            .as_ref()
            .map(|(id, _)| id.as_str())
            .or(integration
                .oauth_client_id
                .as_deref()
                .filter(|s| !s.is_empty())),
        client_override
            .as_ref()
            .map(|(_, s)| s.as_str())
            .or(integration
                .oauth_client_secret
                .as_deref()
                .filter(|s| mcp || !s.is_empty()))
            .or(mcp.then_some("")),
    ) else {
        return Ok(Err(failure(
            "provider_config_err",
            format!("Provider Config \"{key}\" is missing client ID, secret and/or scopes."),
        )));
    };
    let scopes_override = config
        .remove("oauth_scopes_override")
        .and_then(|v| v.as_str().map(str::to_string));
    let user_scope = defaults
        .get("user_scopes")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(s) = &user_scope {
        config.insert("user_scope".into(), Value::String(s.clone()));
    }
    // A value that makes up a URL's whole host must be the app's: the
    // client secret goes to the token URL (and to the refresh URL of a
    // provider that refreshes there).
    let refresh_url = client.is_some_and(ProviderClient::uses_refresh_url);
    for (which, template) in ["authorization_url", "token_url", "refresh_url"]
        .iter()
        .filter(|w| **w != "refresh_url" || refresh_url)
        .filter_map(|w| Some((*w, definition_url(definition, w)?)))
    {
        if let Some(key) = untrusted_host_key(&template, &trusted, &config) {
            return Ok(Err(host_refused(key, which)));
        }
        if let Some(key) = untrusted_url_value(&template, &trusted, &config) {
            return Ok(Err(value_refused(key, which)));
        }
    }
    let connection_id = flow_connection(env, session, key).await?;
    let c = template_connection(key, &connection_id, &integration.provider, &config);
    let template = definition
        .get("authorization_url")
        .and_then(Value::as_str)
        .unwrap_or("");
    let missing_config = |url: &str| {
        failure(
            "url_param_err",
            format!(
                "Missing Connection Config param(s) in Auth request to interpolate url {url}. Provided Connection Config: {}",
                // As `GET /connect/session` shows a session's defaults.
                crate::api::connect::without_secrets(Value::Object(config.clone()))
            ),
        )
    };
    let Ok(expanded) = sluice_runtime::template::expand_url(template, &|k| c.lookup(k)) else {
        return Ok(Err(missing_config(template)));
    };
    let mut url = match url::Url::parse(&expanded.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        _ => {
            return Ok(Err(failure(
                "unknown_err",
                format!(
                    "Unknown error during the Oauth flow. The provider's authorization URL `{}` is not an http(s) URL.",
                    expanded.url
                ),
            )));
        }
    };
    url.set_query(None);
    url.set_fragment(None);
    let mut params = match expanded_params(definition, "authorization_params", &c) {
        Ok(p) => p,
        Err(_) => return Ok(Err(missing_config(template))),
    };
    if let Err(_missing) = expanded_params(definition, "token_params", &c) {
        return Ok(Err(missing_config(template)));
    }
    if let Some(grant) = definition
        .get("token_params")
        .and_then(|p| p.get("grant_type"))
        .and_then(Value::as_str)
        && grant != "authorization_code"
    {
        return Ok(Err(failure(
            "grant_type_err",
            format!(
                "The grant type `{grant}` of provider `{}` is not authorization_code.",
                integration.provider
            ),
        )));
    }
    let pkce = mcp
        || definition
            .get("disable_pkce")
            .is_none_or(|v| v != &Value::Bool(true));
    let code_verifier = pkce.then(connect::random_hex);
    if let Some(verifier) = &code_verifier {
        let challenge =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
        params.push(("code_challenge".into(), challenge));
        params.push(("code_challenge_method".into(), "S256".into()));
    }
    if integration.provider == "slack"
        && let Some(s) = &user_scope
    {
        params.push(("user_scope".into(), s.clone()));
    }
    // The session's `authorization_params` replace the browser's; an MCP
    // server's are its definition's alone (its `resource`), as the
    // original's.
    let (own, browsers) = match defaults.get("authorization_params") {
        _ if mcp => (Map::new(), false),
        Some(Value::Object(p)) => (p.clone(), false),
        _ => (q.authorization_params.clone(), true),
    };
    for (k, v) in own {
        // What binds the flow to this server and this browser is not
        // theirs to replace; and the scopes are the app's (the session's
        // or the integration's), not the browser's.
        if FLOW_PARAMS.contains(&k.as_str())
            || (browsers && SCOPE_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(&k)))
        {
            continue;
        }
        params.retain(|(p, _)| *p != k);
        if let Some(v) = v.as_str().filter(|v| *v != "undefined") {
            params.push((k, v.to_string()));
        }
    }
    let separator = definition
        .get("scope_separator")
        .and_then(Value::as_str)
        .unwrap_or(" ");
    // The session's override, else the integration's, else (an
    // integration created without any) the provider's `default_scopes`.
    let mut scopes: Vec<String> = scopes_override
        .or(integration.oauth_scopes.clone())
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if scopes.is_empty() {
        scopes = definition
            .get("default_scopes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
    }
    let state = uuid::Uuid::new_v4().to_string();
    // A client sluice registered is redirected where it was registered to.
    let callback_url = integration
        .registered_redirect
        .clone()
        .filter(|_| mcp)
        .unwrap_or_else(|| format!("{}/oauth/callback", super::base_url(app, headers)));
    let mut all: Vec<(String, String)> = vec![
        ("response_type".into(), "code".into()),
        ("client_id".into(), client_id.to_string()),
        ("redirect_uri".into(), callback_url.clone()),
        ("scope".into(), scopes.join(separator)),
        ("state".into(), state.clone()),
    ];
    for (k, v) in params {
        match all.iter_mut().find(|(have, _)| *have == k) {
            Some(slot) => slot.1 = v,
            None => all.push((k, v)),
        }
    }
    url.query_pairs_mut().extend_pairs(&all);
    let location = rewritten(definition, url, &scopes.join(separator));
    let flow = Flow {
        provider_config_key: key.to_string(),
        provider: integration.provider.clone(),
        connection_id,
        callback_url,
        code_verifier,
        connection_config: config,
        end_user: session.end_user.clone(),
        tags: session.tags.clone(),
        webhook_url_override: session.webhook_url_override.clone(),
        ws_client_id: q.get("ws_client_id").map(str::to_string),
        reconnect: session.connection_id.is_some(),
        trusted,
        client_override,
        session_key: Some(session_key.to_string()),
        request_token: None,
        expires_at: Utc::now() + FLOW_TTL,
        sealed: None,
    };
    keep_flow(app, env, session, session_key, &state, &flow).await?;
    Ok(Ok(location))
}

/// A generic MCP server's flow (see [`crate::mcp`]): the server the user
/// names (`params[mcp_server_url]`, or the session's), its authorization
/// server found, a public client registered for this connection, then
/// OAuth2's authorization code with PKCE and the resource.
#[allow(clippy::too_many_arguments)]
async fn mcp_generic_flow(
    app: &App,
    env: &EnvState,
    session: &ConnectSession,
    session_key: &str,
    key: &str,
    q: &Query,
    headers: &HeaderMap,
    integration: &sluice_store::Integration,
) -> Result<Result<String, Failure>, ApiError> {
    let defaults = session.defaults(key);
    let (mut config, trusted) = session_config(q, &defaults);
    // Discovery's, never a browser's or a session's; and no client or
    // scopes of anyone else's: the connection registers its own.
    for k in crate::mcp::DISCOVERED_KEYS {
        config.remove(k);
    }
    let _ = take_client_override(&mut config);
    config.remove("oauth_scopes_override");
    config.remove("user_scope");
    let Some(server) = config
        .get("mcp_server_url")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
    else {
        return Ok(Err(failure(
            "missing_connection_config",
            "A generic MCP server's connection needs its URL: `params[mcp_server_url]` (or the session's `connection_config.mcp_server_url`).",
        )));
    };
    // A reconnect of a connection deleted meanwhile goes no further.
    let connection_id = flow_connection(env, session, key).await?;
    let found = match crate::mcp::discover(&env.connections, &server).await {
        Ok(found) => found,
        Err(e) => {
            return Ok(Err(failure(
                "unknown_err",
                format!("Could not find how to authorize with the MCP server `{server}`: {e}"),
            )));
        }
    };
    let base = super::base_url(app, headers);
    if base.is_empty() {
        return Ok(Err(failure(
            "unknown_err",
            "The MCP server must be told where users come back to, and this request names no host: start the server with --public-url.",
        )));
    }
    let callback_url = format!("{base}/oauth/callback");
    let Some(registration) = found.registration_endpoint.as_deref() else {
        return Ok(Err(failure(
            "unknown_err",
            format!(
                "The MCP server `{server}`'s authorization server registers no clients (its metadata names no public https `registration_endpoint`), and sluice has none of its own to give it."
            ),
        )));
    };
    let name = format!("sluice - {} - {key}", env.store.name());
    let client = match crate::mcp::register(
        &env.connections,
        registration,
        &callback_url,
        &name,
        found.scopes.as_deref(),
    )
    .await
    {
        Ok(client) => client,
        Err(e) => {
            return Ok(Err(failure(
                "client_registration_failed",
                format!(
                    "The MCP server `{server}`'s authorization server refused to register a client: {e}"
                ),
            )));
        }
    };
    let client_auth = crate::mcp::client_auth(&client).to_string();
    let crate::refresh::Registered {
        client_id,
        client_secret,
        ..
    } = client;
    let verifier = connect::random_hex();
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(&verifier));
    let state = uuid::Uuid::new_v4().to_string();
    let mut url = match url::Url::parse(&found.authorization_endpoint) {
        Ok(u) => u,
        Err(e) => {
            return Ok(Err(failure(
                "unknown_err",
                format!("The authorization_endpoint is not a URL: {e}"),
            )));
        }
    };
    {
        let mut pairs = url.query_pairs_mut();
        pairs
            .append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("redirect_uri", &callback_url)
            .append_pair("state", &state);
        if let Some(scopes) = &found.scopes {
            pairs.append_pair("scope", scopes);
        }
        if let Some(resource) = &found.resource {
            pairs.append_pair("resource", resource);
        }
    }
    config.insert("mcp_server_url".into(), Value::String(server));
    config.insert(
        "oauth_token_url".into(),
        Value::String(found.token_endpoint.clone()),
    );
    config.insert(
        "oauth_metadata".into(),
        Value::String(Value::Object(found.metadata).to_string()),
    );
    if let Some(resource) = found.resource {
        config.insert("oauth_resource_url".into(), Value::String(resource));
    }
    config.insert("oauth_client_auth".into(), Value::String(client_auth));
    let flow = Flow {
        provider_config_key: key.to_string(),
        provider: integration.provider.clone(),
        connection_id,
        callback_url,
        code_verifier: Some(verifier),
        connection_config: config,
        end_user: session.end_user.clone(),
        tags: session.tags.clone(),
        webhook_url_override: session.webhook_url_override.clone(),
        ws_client_id: q.get("ws_client_id").map(str::to_string),
        reconnect: session.connection_id.is_some(),
        trusted,
        // The connection's own client, kept in its credentials (a public
        // one's secret empty).
        client_override: Some((client_id, client_secret.unwrap_or_default())),
        session_key: Some(session_key.to_string()),
        request_token: None,
        expires_at: Utc::now() + FLOW_TTL,
        sealed: None,
    };
    keep_flow(app, env, session, session_key, &state, &flow).await?;
    Ok(Ok(url.to_string()))
}

/// The connection a flow of `session` creates: the one it reconnects
/// (which must still exist), else a new id.
async fn flow_connection(
    env: &EnvState,
    session: &ConnectSession,
    key: &str,
) -> Result<String, ApiError> {
    let connection_id = session
        .connection_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if session.connection_id.is_some() && !env.store.connection_exists(key, &connection_id).await? {
        return Err(ApiError::bad_request(
            "invalid_connection",
            format!("the connection `{connection_id}` this session reconnects no longer exists"),
        ));
    }
    Ok(connection_id)
}

/// Stores flow `flow` under its `state` until the browser comes back; a
/// session keeps its last [`MAX_FLOWS_PER_SESSION`].
async fn keep_flow(
    app: &App,
    env: &EnvState,
    session: &ConnectSession,
    session_key: &str,
    state: &str,
    flow: &Flow,
) -> Result<(), ApiError> {
    // Its websocket waits for the result (not closed as unused): named
    // before the flow is stored, so the grace cannot close it between.
    if let Some(id) = &flow.ws_client_id {
        app.oauth_clients.named(id);
    }
    env.store
        .put_doc(FLOWS, state, &flow.sealed(env, state).await?)
        .await?;
    if let Some(replaced) = app
        .oauth_clients
        .started(session_key, session.expires_at, state)
    {
        env.store.delete_doc(FLOWS, &replaced).await?;
    }
    Ok(())
}

/// A definition's strings of `key` (`request_params`, `token_params`…) as
/// parameters.
fn string_params(definition: &Map<String, Value>, key: &str) -> Vec<(String, String)> {
    definition
        .get(key)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k.clone(), s.clone())),
            Value::Number(n) => Some((k.clone(), n.to_string())),
            Value::Bool(b) => Some((k.clone(), b.to_string())),
            _ => None,
        })
        .collect()
}

/// The OAuth 1.0a flow (`OAUTH1`: Trello, Twitter, Garmin, SmugMug): a
/// request token asked for with the integration's app as the consumer
/// (the provider's `request_url`, its `request_params`, this server's
/// callback with the flow's `state`), then the browser sent to the
/// provider's `authorization_url` with it; the provider sends the user
/// back with the token and a verifier, exchanged at its `token_url`.
#[allow(clippy::too_many_arguments)]
async fn oauth1_flow(
    app: &App,
    env: &EnvState,
    session: &ConnectSession,
    session_key: &str,
    key: &str,
    q: &Query,
    headers: &HeaderMap,
    integration: &sluice_store::Integration,
    definition: &Map<String, Value>,
) -> Result<Result<String, Failure>, ApiError> {
    let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let (Some(client_id), Some(client_secret)) = (
        set(&integration.oauth_client_id),
        set(&integration.oauth_client_secret),
    ) else {
        return Ok(Err(failure(
            "provider_config_err",
            format!("Provider Config \"{key}\" is missing client ID, secret and/or scopes."),
        )));
    };
    let (Some(request_url), Some(authorization_url)) = (
        definition.get("request_url").and_then(Value::as_str),
        definition.get("authorization_url").and_then(Value::as_str),
    ) else {
        return Ok(Err(failure(
            "provider_config_err",
            format!(
                "The provider `{}` has no `request_url` or `authorization_url`.",
                integration.provider
            ),
        )));
    };
    let Some(mut url) = url::Url::parse(authorization_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
    else {
        return Ok(Err(failure(
            "url_param_err",
            format!(
                "The provider's authorization URL `{authorization_url}` is not an http(s) URL."
            ),
        )));
    };
    let defaults = session.defaults(key);
    let (mut config, trusted) = session_config(q, &defaults);
    let _ = take_client_override(&mut config);
    let connection_id = flow_connection(env, session, key).await?;
    let state = uuid::Uuid::new_v4().to_string();
    let callback_url = format!("{}/oauth/callback", super::base_url(app, headers));
    let mut with_state = url::Url::parse(&callback_url)
        .map_err(|e| ApiError::bad_request("invalid_request", format!("the callback URL: {e}")))?;
    with_state.query_pairs_mut().append_pair("state", &state);
    let signature_method = definition
        .get("signature_method")
        .and_then(Value::as_str)
        .unwrap_or("HMAC-SHA1");
    let mut params = vec![("oauth_callback".to_string(), with_state.to_string())];
    params.extend(string_params(definition, "request_params"));
    let method = definition
        .get("request_http_method")
        .and_then(Value::as_str)
        .unwrap_or("POST");
    let answer = match env
        .connections
        .oauth1_step(
            request_url,
            method,
            (&client_id, &client_secret),
            ("", ""),
            signature_method,
            &params,
        )
        .await
    {
        Ok(answer) => answer,
        Err(e) => {
            return Ok(Err(failure(
                "token_err",
                format!("Error in the OAuth1 request token: {e}"),
            )));
        }
    };
    let field = |k: &str| {
        answer
            .iter()
            .find(|(have, _)| have == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let (Some(request_token), Some(request_token_secret)) =
        (field("oauth_token"), field("oauth_token_secret"))
    else {
        return Ok(Err(failure(
            "token_err",
            "Error in the OAuth1 request token: the provider's answer has no oauth_token and oauth_token_secret.",
        )));
    };
    let scopes: Vec<&str> = integration
        .oauth_scopes
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let separator = definition
        .get("scope_separator")
        .and_then(Value::as_str)
        .unwrap_or(" ");
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("oauth_token", &request_token);
        query.append_pair("scope", &scopes.join(separator));
        for (k, v) in string_params(definition, "authorization_params") {
            if k != "oauth_token" && k != "oauth_callback" && k != "scope" {
                query.append_pair(&k, &v);
            }
        }
        query.append_pair("oauth_callback", with_state.as_str());
    }
    let flow = Flow {
        provider_config_key: key.to_string(),
        provider: integration.provider.clone(),
        connection_id,
        callback_url: with_state.to_string(),
        code_verifier: None,
        connection_config: config,
        end_user: session.end_user.clone(),
        tags: session.tags.clone(),
        webhook_url_override: session.webhook_url_override.clone(),
        ws_client_id: q.get("ws_client_id").map(str::to_string),
        reconnect: session.connection_id.is_some(),
        trusted,
        client_override: None,
        session_key: Some(session_key.to_string()),
        request_token: Some((request_token, request_token_secret)),
        expires_at: Utc::now() + FLOW_TTL,
        sealed: None,
    };
    keep_flow(app, env, session, session_key, &state, &flow).await?;
    Ok(Ok(url.to_string()))
}

/// The OAuth 1.0a callback (`oauth_token`, `oauth_verifier`): the
/// granted request token exchanged at the provider's `token_url` for the
/// connection's token and secret.
async fn oauth1_exchange(
    app: &Arc<App>,
    env: &Arc<EnvState>,
    q: &Query,
    flow: Flow,
    integration: &sluice_store::Integration,
    definition: &Map<String, Value>,
) -> Result<(), Failure> {
    if let Some(denied) = q.get("denied") {
        return Err(failure(
            "callback_err",
            format!("The user did not grant access (denied: {denied})."),
        ));
    }
    let (Some(token), Some(verifier)) = (q.get("oauth_token"), q.get("oauth_verifier")) else {
        return Err(failure(
            "invalid_callback",
            "The OAuth1 callback has no oauth_token or oauth_verifier.",
        ));
    };
    let (expected, request_token_secret) = flow.request_token.clone().unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        token.as_bytes(),
        expected.as_bytes(),
    )) {
        return Err(failure(
            "invalid_callback",
            "The OAuth1 callback names another request token than this flow's.",
        ));
    }
    let token_url = definition_url(definition, "token_url")
        .ok_or_else(|| failure("provider_config_err", "The provider has no `token_url`."))?;
    let method = definition
        .get("token_http_method")
        .and_then(Value::as_str)
        .unwrap_or("POST");
    let signature_method = definition
        .get("signature_method")
        .and_then(Value::as_str)
        .unwrap_or("HMAC-SHA1");
    let mut params = vec![("oauth_verifier".to_string(), verifier.to_string())];
    params.extend(string_params(definition, "token_params"));
    let answer = env
        .connections
        .oauth1_step(
            &token_url,
            method,
            (
                integration.oauth_client_id.as_deref().unwrap_or(""),
                integration.oauth_client_secret.as_deref().unwrap_or(""),
            ),
            (token, &request_token_secret),
            signature_method,
            &params,
        )
        .await
        .map_err(|e| {
            failure(
                "unknown_err",
                format!("Unknown error during the Oauth flow. {e}"),
            )
        })?;
    let raw: Map<String, Value> = answer
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let text = |k: &str| raw.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
    let (Some(oauth_token), Some(oauth_token_secret)) =
        (text("oauth_token"), text("oauth_token_secret"))
    else {
        return Err(failure(
            "unknown_err",
            "Unknown error during the Oauth flow. The provider's answer has no oauth_token and oauth_token_secret.",
        ));
    };
    let credentials: Credentials = serde_json::from_value(json!({
        "type": "OAUTH1",
        "oauth_token": oauth_token,
        "oauth_token_secret": oauth_token_secret,
        "raw": raw,
    }))
    .map_err(|e| {
        failure(
            "unknown_err",
            format!("Unknown error during the Oauth flow. {e}"),
        )
    })?;
    let config = flow.connection_config.clone();
    store_flow_connection(app, env, flow, credentials, config).await
}

/// A GitHub App's installation flow (`APP`, `github-app`): the browser
/// goes to the app's public page (the provider's `authorization_url`,
/// `${connectionConfig.appPublicLink}/installations/new`, the
/// integration's `app_link`) with the flow's `state`; GitHub sends it
/// back to the app's Setup URL, `<public url>/app-auth/connect` (or the
/// OAuth callback), with the installation it made, as the original's
/// flow goes.
#[allow(clippy::too_many_arguments)]
async fn app_flow(
    app: &App,
    env: &EnvState,
    session: &ConnectSession,
    session_key: &str,
    key: &str,
    q: &Query,
    headers: &HeaderMap,
    integration: &sluice_store::Integration,
    definition: &Map<String, Value>,
) -> Result<Result<String, Failure>, ApiError> {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let link = integration.app_link.clone().filter(|s| !s.is_empty());
    let (Some(link), true, true) = (
        link,
        set(&integration.oauth_client_id),
        set(&integration.oauth_client_secret),
    ) else {
        return Ok(Err(failure(
            "provider_config_err",
            format!(
                "Provider Config \"{key}\" has no GitHub App: give it `credentials: {{type: APP, app_id, app_link, private_key}}`."
            ),
        )));
    };
    let defaults = session.defaults(key);
    let (mut config, trusted) = session_config(q, &defaults);
    // The connect session's configuration only, as the original keeps:
    // nothing the browser says (an installation it names) is taken.
    config.retain(|k, _| trusted.contains(k));
    // Nothing to do with an OAuth app here; never stored.
    let _ = take_client_override(&mut config);
    // The app's own page.
    config.insert("appPublicLink".into(), Value::String(link));
    let connection_id = flow_connection(env, session, key).await?;
    let c = template_connection(key, &connection_id, &integration.provider, &config);
    let template = definition
        .get("authorization_url")
        .and_then(Value::as_str)
        .unwrap_or("${connectionConfig.appPublicLink}/installations/new");
    let url = sluice_runtime::template::expand_url(template, &|k| c.lookup(k))
        .ok()
        .and_then(|e| url::Url::parse(&e.url).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    let Some(mut url) = url else {
        return Ok(Err(failure(
            "url_param_err",
            format!(
                "The app's installation URL `{template}` cannot be made from the integration's app_link."
            ),
        )));
    };
    let state = uuid::Uuid::new_v4().to_string();
    url.query_pairs_mut().append_pair("state", &state);
    let flow = Flow {
        provider_config_key: key.to_string(),
        provider: integration.provider.clone(),
        connection_id,
        callback_url: format!("{}/app-auth/connect", super::base_url(app, headers)),
        code_verifier: None,
        connection_config: config,
        end_user: session.end_user.clone(),
        tags: session.tags.clone(),
        webhook_url_override: session.webhook_url_override.clone(),
        ws_client_id: q.get("ws_client_id").map(str::to_string),
        reconnect: session.connection_id.is_some(),
        trusted,
        client_override: None,
        session_key: Some(session_key.to_string()),
        request_token: None,
        expires_at: Utc::now() + FLOW_TTL,
        sealed: None,
    };
    keep_flow(app, env, session, session_key, &state, &flow).await?;
    Ok(Ok(url.to_string()))
}

/// The authorization URL as the provider's definition asks, in the
/// original's order: the scopes unencoded (`authorization_url_skip_encode`
/// naming `scopes`), the query after a fragment
/// (`authorization_url_fragment`), text replaced
/// (`authorization_url_replacements`, each key's first occurrence), and
/// empty parameters dropped (`authorization_url_skip_empty`).
fn rewritten(definition: &Map<String, Value>, mut url: url::Url, scopes: &str) -> String {
    let skip_encode = match definition.get("authorization_url_skip_encode") {
        Some(Value::String(s)) => s.contains("scopes"),
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some("scopes")),
        _ => false,
    };
    if skip_encode {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "scope")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&kept)
            .finish();
        if !scopes.is_empty() {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str("scope=");
            query.push_str(scopes);
        }
        url.set_query(Some(&query));
    }
    let mut uri = url.to_string();
    if let Some(fragment) = definition
        .get("authorization_url_fragment")
        .and_then(Value::as_str)
    {
        let search = url.query().map(|q| format!("?{q}")).unwrap_or_default();
        let mut bare = url.clone();
        bare.set_query(None);
        uri = format!("{bare}#{fragment}{search}");
    }
    if let Some(Value::Object(replacements)) = definition.get("authorization_url_replacements") {
        for (from, to) in replacements {
            if let Some(to) = to.as_str() {
                uri = uri.replacen(from.as_str(), to, 1);
            }
        }
    }
    if definition
        .get("authorization_url_skip_empty")
        .is_some_and(|v| v == &Value::Bool(true))
        && let Ok(mut parsed) = url::Url::parse(&uri)
    {
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(&kept);
        }
        uri = parsed.to_string();
    }
    uri
}

/// A provider's URL template (`authorization_url`, `token_url`: a string,
/// or for `token_url` one per grant type, OAuth2's used).
fn definition_url(definition: &Map<String, Value>, key: &str) -> Option<String> {
    match definition.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m
            .get("OAUTH2")
            .or_else(|| m.values().next())
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// A `connection_config` key that the app did not give (`trusted`) and
/// that chooses the host of `template` as `values` expand it (the first
/// of its `A || B` alternatives they complete).
fn untrusted_host_key(
    template: &str,
    trusted: &[String],
    values: &Map<String, Value>,
) -> Option<String> {
    let lookup = |k: &str| {
        k.strip_prefix("connectionConfig.")
            .and_then(|k| values.get(k))
            .and_then(text)
    };
    let used = template
        .split(" || ")
        .find(|alternative| sluice_runtime::template::expand(alternative, &lookup).is_some())?;
    sluice_runtime::template::host_choosing_keys(used)
        .into_iter()
        .filter_map(|k| k.strip_prefix("connectionConfig.").map(str::to_string))
        .find(|k| values.contains_key(k) && !trusted.contains(k))
}

/// A `connection_config` key the app did not give whose value goes into
/// `template` (a path segment, a query value) and holds more than
/// letters, digits and `._~-` (or is `.` or `..`): such a value could
/// move the request, with the client secret, elsewhere on the host.
fn untrusted_url_value(
    template: &str,
    trusted: &[String],
    values: &Map<String, Value>,
) -> Option<String> {
    values
        .iter()
        .filter(|(k, _)| !trusted.contains(k))
        .filter(|(k, _)| template.contains(&format!("connectionConfig.{k}}}")))
        .find(|(_, v)| {
            let v = v.as_str().unwrap_or("");
            v == "."
                || v == ".."
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c))
        })
        .map(|(k, _)| k.clone())
}

fn value_refused(key: String, which: &str) -> Failure {
    failure(
        "url_param_err",
        format!(
            "`{key}` goes into the provider's {which}: a value from the browser or the provider's redirect may hold letters, digits and `._~-` only"
        ),
    )
}

fn host_refused(key: String, which: &str) -> Failure {
    failure(
        "url_param_err",
        format!(
            "`{key}` makes up the whole host of the provider's {which}: only the app may give it (the connect session's integrations_config_defaults.<integration>.connection_config), not the browser or the provider's redirect"
        ),
    )
}

/// Deletes an environment's flows that lapsed (called now and then).
pub(crate) async fn sweep(env: &EnvState) {
    let now = Utc::now();
    let mut after: Option<String> = None;
    loop {
        let Ok(page) = env
            .store
            .docs::<Flow>(FLOWS, "", after.as_deref(), 256, false)
            .await
        else {
            return;
        };
        for (key, f) in &page {
            if f.expires_at <= now {
                let _ = env.store.delete_doc(FLOWS, key).await;
            }
        }
        match page.last() {
            Some((key, _)) if page.len() == 256 => after = Some(key.clone()),
            _ => break,
        }
    }
}

/// `GET /oauth/callback?code&state`: the provider sends the browser back
/// here. The code is exchanged and the connection stored; the work runs
/// to its end even if the browser goes away.
pub async fn callback(
    State(app): State<Arc<App>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    // A link checker's HEAD neither exchanges the code nor uses the state.
    if method == axum::http::Method::HEAD {
        return StatusCode::OK.into_response();
    }
    let query = uri.query().map(str::to_string);
    let referer = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match tokio::spawn(finish(app, query, referer)).await {
        Ok(response) => response,
        Err(e) => page(Some((
            "unknown_err",
            &format!("Unknown error during the Oauth flow. {e}"),
        ))),
    }
}

/// What a provider says in the callback's query when it refused.
const PROVIDER_ERRORS: [&str; 6] = [
    "error",
    "error_description",
    "error_reason",
    "error_uri",
    "status_code",
    "error_message",
];

async fn finish(app: Arc<App>, query: Option<String>, referer: Option<String>) -> Response {
    let q = match Query::parse(query.as_deref()) {
        Ok(q) => q,
        Err(e) => return page(Some(("invalid_query_params", &e.message))),
    };
    let Some(state) = q.get("state") else {
        // GitHub sends an installation an organization's owner approved
        // (or changed) later without the state of any flow: the browser
        // goes back where it came from, as in the original.
        if q.get("installation_id").is_some()
            && matches!(q.get("setup_action"), Some("install" | "update"))
        {
            let back = referer
                .filter(|r| {
                    url::Url::parse(r).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
                })
                .unwrap_or_else(|| "https://github.com".into());
            return (StatusCode::FOUND, [(header::LOCATION, back)]).into_response();
        }
        return page(Some(("invalid_oauth_state", "No state found in callback")));
    };
    // The flow is found in its environment and used once.
    let Some(_taking) = Taking::new(&app.oauth_clients, state) else {
        return page(Some((
            "invalid_oauth_state",
            &format!("No session found for state: \"{state}\""),
        )));
    };
    finish_state(&app, &q, state).await
}

/// A callback's hold on its `state`, let go when it ends (a panic too).
struct Taking<'a>(&'a Clients, String);

impl<'a> Taking<'a> {
    fn new(clients: &'a Clients, state: &str) -> Option<Self> {
        clients
            .take(state)
            .then(|| Taking(clients, state.to_string()))
    }
}

impl Drop for Taking<'_> {
    fn drop(&mut self) {
        self.0.taken(&self.1);
    }
}

async fn finish_state(app: &Arc<App>, q: &Query, state: &str) -> Response {
    let mut found = None;
    for env in app.envs() {
        let read = match env.store.doc::<Flow>(FLOWS, state).await {
            Ok(Some(flow)) => flow.opened(env, state).await.map(Some),
            other => other,
        };
        match read {
            Ok(Some(flow)) => {
                if let Err(e) = env.store.delete_doc(FLOWS, state).await {
                    return page(Some((
                        "unknown_err",
                        &format!("Unknown error during the Oauth flow. {e}"),
                    )));
                }
                found = Some((env.clone(), flow));
                break;
            }
            Ok(None) => {}
            Err(e) => {
                return page(Some((
                    "invalid_oauth_state",
                    &format!("the flow of state {state} cannot be read: {e}"),
                )));
            }
        }
    }
    let Some((env, flow)) = found.filter(|(_, f)| f.expires_at > Utc::now()) else {
        return page(Some((
            "invalid_oauth_state",
            &format!("No session found for state: \"{state}\""),
        )));
    };
    let ws = flow.ws_client_id.clone();
    let (pck, cid) = (flow.provider_config_key.clone(), flow.connection_id.clone());
    let mut failed = template_connection(&pck, &cid, &flow.provider, &Map::new());
    failed.webhook_url_override = flow.webhook_url_override.clone();
    let reconnect = flow.reconnect;
    let auth_mode = app
        .providers
        .get(&flow.provider)
        .and_then(|p| p.auth_mode.clone())
        .unwrap_or_else(|| "OAUTH2".into());
    match exchange(app, &env, q, flow).await {
        Ok(()) => {
            app.oauth_clients.notify(
                ws.as_deref(),
                json!({
                    "message_type": "success",
                    "provider_config_key": pck,
                    "connection_id": cid,
                    "is_pending": false,
                }),
            );
            page(None)
        }
        Err(f) => {
            // The app hears of a failed creation too (`success: false`;
            // `creation` even for a reconnect, as the original's), unless
            // the reconnected connection's own check refused it, which
            // told the app already (`override`).
            if !(reconnect && f.kind == "connection_validation_failed") {
                let event = crate::webhooks::AuthEvent {
                    connection: &failed,
                    auth_mode: &auth_mode,
                    operation: "creation",
                    end_user: false,
                    error: Some(json!({"type": f.kind, "description": f.message})),
                };
                connections::tell(app, &env, event).await;
            }
            fail(app, ws.as_deref(), &pck, &cid, f)
        }
    }
}

/// A dot path into a JSON value (`team.id`).
fn at_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// The callback's code exchanged for tokens, and the connection stored.
async fn exchange(
    app: &Arc<App>,
    env: &Arc<EnvState>,
    q: &Query,
    mut flow: Flow,
) -> Result<(), Failure> {
    let provider = app.providers.get(&flow.provider).ok_or_else(|| {
        failure(
            "unknown_config_key",
            format!(
                "The provider `{}` is not in the server's catalogue.",
                flow.provider
            ),
        )
    })?;
    let definition = &provider.definition;
    let installing = provider.auth_mode.as_deref() == Some("APP");
    let oauth1 = provider.auth_mode.as_deref() == Some("OAUTH1");
    let code_param = definition
        .get("authorization_code_param_in_callback")
        .and_then(Value::as_str)
        .unwrap_or("code");
    let code = q.get(code_param);
    if code.is_none() && !installing && !oauth1 {
        let said: Vec<String> = PROVIDER_ERRORS
            .iter()
            .filter_map(|k| q.get(k).map(|v| format!("{k}: {v}")))
            .collect();
        let mut message = "Did not get authorization code in the callback.".to_string();
        if !said.is_empty() {
            message = format!("{message} Provider error: {}", said.join("; "));
        }
        return Err(failure("callback_err", message));
    }
    let integration = env
        .store
        .integration(&flow.provider_config_key)
        .await
        .map_err(|e| {
            failure(
                "unknown_err",
                format!("Unknown error during the Oauth flow. {e}"),
            )
        })?
        .ok_or_else(|| {
            failure(
                "provider_config_err",
                format!(
                    "Could not find a Provider Config matching the \"{}\" key.",
                    flow.provider_config_key
                ),
            )
        })?;
    if let Some(session) = &flow.session_key
        && env
            .store
            .doc::<ConnectSession>(connect::SESSIONS, session)
            .await
            .map_err(|e| {
                failure(
                    "unknown_err",
                    format!("Unknown error during the Oauth flow. {e}"),
                )
            })?
            .is_none_or(|s| s.ended)
    {
        return Err(failure(
            "unknown_err",
            "Unknown error during the Oauth flow: its connect session was deleted.",
        ));
    }
    if flow.reconnect
        && !env
            .store
            .connection_exists(&flow.provider_config_key, &flow.connection_id)
            .await
            .map_err(|e| {
                failure(
                    "unknown_err",
                    format!("Unknown error during the Oauth flow. {e}"),
                )
            })?
    {
        return Err(failure(
            "invalid_connection",
            format!(
                "The connection `{}` this flow reconnects was deleted.",
                flow.connection_id
            ),
        ));
    }
    if integration.provider != flow.provider {
        return Err(failure(
            "provider_config_err",
            format!(
                "Integration \"{}\" changed its provider during the flow; start again.",
                flow.provider_config_key
            ),
        ));
    }
    if oauth1 {
        return oauth1_exchange(app, env, q, flow, &integration, definition).await;
    }
    let Some(code) = code.filter(|_| !installing) else {
        return install(app, env, q, flow, &integration).await;
    };
    let (client_id, client_secret) = flow.client_override.clone().unwrap_or_else(|| {
        (
            integration.oauth_client_id.clone().unwrap_or_default(),
            integration.oauth_client_secret.clone().unwrap_or_default(),
        )
    });
    // The callback's values a provider sends there (`redirect_uri_metadata`).
    let mut callback_metadata = Map::new();
    for k in definition
        .get("redirect_uri_metadata")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if let Some(v) = q.get(k) {
            callback_metadata.insert(k.to_string(), Value::String(v.to_string()));
        }
    }
    let mut values = callback_metadata.clone();
    values.extend(flow.connection_config.clone());
    let client = ProviderClient::of(&flow.provider);
    let refresh_url = client.is_some_and(ProviderClient::uses_refresh_url);
    for which in ["token_url", "refresh_url"]
        .into_iter()
        .filter(|w| *w != "refresh_url" || refresh_url)
    {
        let Some(template) = definition_url(definition, which) else {
            continue;
        };
        if let Some(key) = untrusted_host_key(&template, &flow.trusted, &values) {
            return Err(host_refused(key, which));
        }
        if let Some(key) = untrusted_url_value(&template, &flow.trusted, &values) {
            return Err(value_refused(key, which));
        }
    }
    let c = template_connection(
        &flow.provider_config_key,
        &flow.connection_id,
        &flow.provider,
        &values,
    );
    let raw = match client {
        Some(client) => {
            client_tokens(env, &c, client, code, &flow, (&client_id, &client_secret)).await?
        }
        None => {
            generic_tokens(env, &c, provider, code, &flow, (&client_id, &client_secret)).await?
        }
    };
    let raw_value = Value::Object(raw.clone());
    // `access_token`, else where the provider says it is; an object there
    // holds the token's fields (as the original reads them).
    let tokens = match raw.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => &raw_value,
        _ => definition
            .get("alternate_access_token_response_path")
            .and_then(Value::as_str)
            .and_then(|p| at_path(&raw_value, p))
            .unwrap_or(&raw_value),
    };
    let (access_token, tokens) = match tokens {
        Value::String(t) => (Some(t.as_str()), &raw_value),
        Value::Object(m) => (m.get("access_token").and_then(Value::as_str), tokens),
        _ => (None, tokens),
    };
    let access_token = access_token.filter(|t| !t.is_empty()).ok_or_else(|| {
        failure(
            "unknown_err",
            "Unknown error during the Oauth flow. The token endpoint's answer has no access_token.",
        )
    })?;
    let mut creds = Map::new();
    creds.insert("type".into(), Value::String("OAUTH2".into()));
    creds.insert(
        "access_token".into(),
        Value::String(access_token.to_string()),
    );
    if let Some(r) = tokens.get("refresh_token").and_then(Value::as_str) {
        creds.insert("refresh_token".into(), Value::String(r.to_string()));
    }
    if let Some(at) = tokens.as_object().and_then(crate::refresh::token_expiry) {
        creds.insert(
            "expires_at".into(),
            Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
    }
    creds.insert("raw".into(), raw_value.clone());
    if let Some((id, secret)) = &flow.client_override {
        creds.insert(
            "config_override".into(),
            json!({"client_id": id, "client_secret": secret}),
        );
    }
    let credentials: Credentials = serde_json::from_value(Value::Object(creds)).map_err(|e| {
        failure(
            "unknown_err",
            format!("Unknown error during the Oauth flow. {e}"),
        )
    })?;
    // The token answer's values the provider lists
    // (`token_response_metadata`, strings and booleans), then the
    // callback's, then the flow's own (an empty one filled from them).
    let mut config = Map::new();
    for k in definition
        .get("token_response_metadata")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if let Some(v) = at_path(&raw_value, k).filter(|v| v.is_string() || v.is_boolean()) {
            config.insert(k.to_string(), v.clone());
        }
    }
    config.extend(callback_metadata);
    for (k, v) in std::mem::take(&mut flow.connection_config) {
        // An empty value the browser gave is filled from the provider's
        // answer; the app's stands.
        if v.as_str() == Some("") && config.contains_key(&k) && !flow.trusted.contains(&k) {
            continue;
        }
        config.insert(k, v);
    }
    store_flow_connection(app, env, flow, credentials, config).await
}

/// The token endpoint's answer to `code` asked the generic OAuth2 way:
/// the grant, the provider's `token_params`, PKCE's verifier, the client
/// as the provider takes it.
async fn generic_tokens(
    env: &EnvState,
    c: &Connection,
    provider: &sluice_runtime::providers::Provider,
    code: &str,
    flow: &Flow,
    (client_id, client_secret): (&str, &str),
) -> Result<Map<String, Value>, Failure> {
    let definition = &provider.definition;
    let mut form: Vec<(String, String)> = vec![
        ("grant_type".into(), "authorization_code".into()),
        ("code".into(), code.to_string()),
        ("redirect_uri".into(), flow.callback_url.clone()),
    ];
    if let Some(v) = &flow.code_verifier {
        form.push(("code_verifier".into(), v.clone()));
    }
    let token_params = expanded_params(definition, "token_params", c).map_err(|missing| {
        failure(
            "url_param_err",
            format!(
                "Missing Connection Config param(s) for the token request: {}",
                missing.join(", ")
            ),
        )
    })?;
    for (k, v) in token_params {
        form.retain(|(have, _)| *have != k);
        form.push((k, v));
    }
    // A generic MCP server's token names its resource (RFC 8707).
    if provider.auth_mode.as_deref() == Some("MCP_OAUTH2_GENERIC")
        && let Some(resource) = flow
            .connection_config
            .get("oauth_resource_url")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
    {
        form.push(("resource".into(), resource.to_string()));
    }
    env.connections
        .token_grant(c, form, (client_id, client_secret), &[code])
        .await
        .map_err(|e| {
            failure(
                "unknown_err",
                format!("Unknown error during the Oauth flow. {e}"),
            )
        })
}

/// What the connection keeps of the answer to `code` from a provider the
/// original asks its own way (see [`crate::provider_clients`]).
async fn client_tokens(
    env: &EnvState,
    c: &Connection,
    client: ProviderClient,
    code: &str,
    flow: &Flow,
    (client_id, client_secret): (&str, &str),
) -> Result<Map<String, Value>, Failure> {
    let refused = |e: String| {
        failure(
            "unknown_err",
            format!("Unknown error during the Oauth flow. {e}"),
        )
    };
    let asked = client
        .code_request(
            &flow.provider,
            code,
            &flow.callback_url,
            flow.code_verifier.as_deref(),
            (client_id, client_secret),
        )
        .map_err(|e| failure("unsupported_provider", e))?;
    let mut secrets = vec![code];
    if !client_secret.is_empty() {
        secrets.push(client_secret);
    }
    env.connections
        .client_grant(c, asked, &secrets, |answer| client.code_tokens(answer))
        .await
        .map_err(refused)
}

/// GitHub's return from an app's installation page (`installation_id`,
/// `setup_action`): the installation's token asked for by the app, and
/// the connection stored with the installation in its configuration.
async fn install(
    app: &Arc<App>,
    env: &Arc<EnvState>,
    q: &Query,
    flow: Flow,
    integration: &sluice_store::Integration,
) -> Result<(), Failure> {
    if q.get("setup_action") == Some("request") {
        return Err(failure(
            "wrong_auth_mode",
            "The installation waits for an organization owner's approval: GitHub App (APP) connections are made once the app is installed (the request flow is github-app-oauth's).",
        ));
    }
    // The installation GitHub names, and no other.
    let mut config = flow.connection_config.clone();
    config.remove("installation_id");
    if let Some(id) = q.get("installation_id") {
        config.insert("installation_id".into(), Value::String(id.to_string()));
    }
    if crate::github_app::installation_id(&config).is_none() {
        return Err(failure(
            "missing_installation_id",
            "GitHub sent no installation (`installation_id`, digits) back from the app's installation page.",
        ));
    }
    if let Some(id) = integration.oauth_client_id.as_deref() {
        config.insert("app_id".into(), Value::String(id.to_string()));
    }
    let c = template_connection(
        &flow.provider_config_key,
        &flow.connection_id,
        &flow.provider,
        &config,
    );
    let credentials = env
        .connections
        .app_token(&c, integration)
        .await
        .map_err(|e| {
            failure(
                "github_app_token_fetch_error",
                format!("GitHub gave no installation token: {e}"),
            )
        })?;
    store_flow_connection(app, env, flow, credentials, config).await
}

/// Stores the connection a flow made, as an import is stored.
async fn store_flow_connection(
    app: &Arc<App>,
    env: &Arc<EnvState>,
    flow: Flow,
    credentials: Credentials,
    config: Map<String, Value>,
) -> Result<(), Failure> {
    let draft = Draft {
        provider_config_key: flow.provider_config_key,
        connection_id: flow.connection_id,
        credentials,
        metadata: None,
        connection_config: Some(config),
        end_user: if flow.reconnect { None } else { flow.end_user },
        tags: (!flow.reconnect || !flow.tags.is_empty()).then_some(flow.tags),
        webhook_url: flow.webhook_url_override.map(Some),
        tell_end_user: true,
        reconnect: flow.reconnect,
        // An OAuth flow refuses a token URL host the browser chose.
        token_host_from_browser: false,
    };
    connections::store(app, env, draft, |pck| {
        ApiError::not_found(
            "not_found",
            format!("Integration `{pck}` does not exist in this environment"),
        )
    })
    .await
    .map_err(|e| {
        let kind = match e.code.as_str() {
            "connection_test_failed" => "connection_validation_failed",
            "invalid_connection" => "invalid_connection",
            _ => "unknown_err",
        };
        failure(kind, e.message)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(yaml: Value) -> Map<String, Value> {
        yaml.as_object().cloned().unwrap_or_default()
    }

    fn url(query: &[(&str, &str)]) -> url::Url {
        let mut u =
            url::Url::parse("https://p.example/authorize").unwrap_or_else(|e| panic!("{e}"));
        u.query_pairs_mut().extend_pairs(query);
        u
    }

    #[test]
    fn the_authorization_url_is_rewritten_as_the_provider_asks() {
        let q = [
            ("client_id", "c"),
            ("scope", "a b"),
            ("state", "s"),
            ("empty", ""),
        ];
        // Untouched without options.
        assert_eq!(
            rewritten(&Map::new(), url(&q), "a b"),
            "https://p.example/authorize?client_id=c&scope=a+b&state=s&empty="
        );
        assert_eq!(
            rewritten(
                &definition(json!({"authorization_url_skip_encode": ["scopes"]})),
                url(&q),
                "a:b,c"
            ),
            "https://p.example/authorize?client_id=c&state=s&empty=&scope=a:b,c"
        );
        assert_eq!(
            rewritten(
                &definition(json!({"authorization_url_fragment": "/login"})),
                url(&q[..1]),
                ""
            ),
            "https://p.example/authorize#/login?client_id=c"
        );
        assert_eq!(
            rewritten(
                &definition(json!({"authorization_url_replacements": {"client_id": "app_id"}})),
                url(&q[..1]),
                ""
            ),
            "https://p.example/authorize?app_id=c"
        );
        assert_eq!(
            rewritten(
                &definition(json!({"authorization_url_skip_empty": true})),
                url(&q),
                ""
            ),
            "https://p.example/authorize?client_id=c&scope=a+b&state=s"
        );
    }
}
