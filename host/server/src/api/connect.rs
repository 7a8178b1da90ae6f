//! Connect sessions: a token an app's backend creates (with its secret
//! key) for one end user and hands to a browser, which then connects an
//! account through the OAuth flow (`GET /oauth/connect/:key`, see
//! [`super::oauth`]) without ever holding the secret key. As the
//! original's: `nango_connect_session_` and 64 hex digits, valid 30
//! minutes, kept only as its SHA-256 (the store never holds a token that
//! works).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use super::{Env, JsonBody, end_users};
use crate::app::{App, EnvState};
use crate::error::{ApiError, ApiResult};

/// The document collection of an environment's connect sessions, keyed by
/// the SHA-256 of their token.
pub(crate) const SESSIONS: &str = "connect_sessions";

const TOKEN_PREFIX: &str = "nango_connect_session_";

/// The most integrations one session names.
const MAX_NAMED: usize = 1_000;

/// How long a session's token works (the original's 30 minutes).
const SESSION_TTL: chrono::Duration = chrono::Duration::minutes(30);

/// A connect session as stored.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct ConnectSession {
    #[serde(default)]
    pub end_user: Option<Value>,
    #[serde(default)]
    pub organization: Option<Value>,
    /// The integrations it may connect (all when `None`).
    #[serde(default)]
    pub allowed_integrations: Option<Vec<String>>,
    /// Per integration: `{user_scopes?, authorization_params?,
    /// connection_config?}`, which win over what the browser sends.
    #[serde(default)]
    pub integrations_config_defaults: Map<String, Value>,
    #[serde(default)]
    pub webhook_url_override: Option<String>,
    /// The tags its connections get (the end user's and organization's,
    /// then the request's own).
    #[serde(default)]
    pub tags: end_users::Tags,
    /// A reconnect session's connection: the flow replaces its
    /// credentials, and its integration is the only one allowed.
    #[serde(default)]
    pub connection_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `integrations_config_defaults` (which may hold a client secret),
    /// sealed with the environment's data key while the session is
    /// stored; there the map is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_defaults: Option<String>,
    /// Ended (`DELETE /connect/session`): its token no longer works, and
    /// the document keeps nothing but its dates, saying only that this
    /// server issued the token (see [`issued`]) until the sweep deletes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
}

impl ConnectSession {
    /// Whether it may connect integration `key`.
    pub fn allows(&self, key: &str) -> bool {
        self.allowed_integrations
            .as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k == key))
    }

    /// Its defaults for integration `key` (`{}` when none).
    pub fn defaults(&self, key: &str) -> Map<String, Value> {
        self.integrations_config_defaults
            .get(key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a token's session is kept.
pub(crate) fn token_key(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// 32 random bytes as hex (the operating system's randomness, through
/// two UUID v4s: 244 random bits).
pub(crate) fn random_hex() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("{}{}", hex(a.as_bytes()), hex(b.as_bytes()))
}

fn unauthorized(code: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// The session of `token` and its environment; 401 with the original's
/// codes for a token of the wrong form, unknown or expired.
pub(crate) async fn find(app: &App, token: &str) -> ApiResult<(Arc<EnvState>, ConnectSession)> {
    let well_formed = token.strip_prefix(TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() == 64
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if !well_formed {
        return Err(unauthorized(
            "invalid_connect_session_token_format",
            "Authentication failed. The provided connect session token is not following correct format: nango_connect_session_RANDOM",
        ));
    }
    let key = token_key(token);
    for env in app.envs() {
        if let Some(mut session) = env.store.doc::<ConnectSession>(SESSIONS, &key).await? {
            // Expired or ended: refused (the sweep deletes it later, once
            // the flows it started cannot need it).
            if session.ended || session.expires_at <= Utc::now() {
                break;
            }
            if let Some(sealed) = session.sealed_defaults.take() {
                session.integrations_config_defaults =
                    env.store.open_for_doc(SESSIONS, &key, &sealed).await?;
            }
            return Ok((env.clone(), session));
        }
    }
    Err(unauthorized(
        "unknown_connect_session_token",
        "Authentication failed. The provided connect session token does not match any account.",
    ))
}

/// Whether `token` is the token of a connect session this server issued:
/// in force, expired, or ended, until the sweep deletes it (an hour past
/// its expiry). A browser holding one is told on its websocket why its
/// flow does not start.
pub(crate) async fn issued(app: &App, token: &str) -> bool {
    let well_formed = token
        .strip_prefix(TOKEN_PREFIX)
        .is_some_and(|rest| rest.len() == 64);
    if !well_formed {
        return false;
    }
    let key = token_key(token);
    for env in app.envs() {
        if let Ok(Some(_)) = env.store.doc::<Value>(SESSIONS, &key).await {
            return true;
        }
    }
    false
}

/// A request authenticated by a connect session token
/// (`Authorization: Bearer nango_connect_session_…`).
pub struct SessionAuth {
    env: Arc<EnvState>,
    token: String,
    session: ConnectSession,
}

impl axum::extract::FromRequestParts<Arc<App>> for SessionAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                unauthorized(
                    "missing_auth_header",
                    "Authentication failed. The request is missing the Authorization header.",
                )
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|t| t.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                unauthorized(
                    "malformed_auth_header",
                    "Authentication failed. The Authorization header must be `Bearer <connect session token>`.",
                )
            })?;
        let (env, session) = find(app, token).await?;
        Ok(SessionAuth {
            env,
            token: token.to_string(),
            session,
        })
    }
}

/// A request authenticated by a secret key or by a connect session's
/// token, as the original's `GET /integrations` and `/providers` are: the
/// Connect UI reads them with its session's token.
pub(crate) enum KeyOrSession {
    Key(Arc<EnvState>),
    Session(Arc<EnvState>, Box<ConnectSession>),
}

impl KeyOrSession {
    /// The environment either names.
    pub(crate) fn env(&self) -> &Arc<EnvState> {
        match self {
            KeyOrSession::Key(env) | KeyOrSession::Session(env, _) => env,
        }
    }

    /// Whether integration `key` may be shown: all of the environment's
    /// to a key, a session's allowed ones to a session.
    pub(crate) fn shows(&self, key: &str) -> bool {
        match self {
            KeyOrSession::Key(_) => true,
            KeyOrSession::Session(_, session) => session.allows(key),
        }
    }
}

impl axum::extract::FromRequestParts<Arc<App>> for KeyOrSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let token = super::bearer_key(&parts.headers)?;
        if token.starts_with(TOKEN_PREFIX) {
            let (env, session) = find(app, token).await?;
            return Ok(KeyOrSession::Session(env, Box::new(session)));
        }
        let super::Env(env) = super::Env::from_request_parts(parts, app).await?;
        Ok(KeyOrSession::Key(env))
    }
}

/// `POST /connect/sessions` and `/connect/sessions/reconnect` bodies.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    #[serde(default)]
    end_user: Option<Value>,
    #[serde(default)]
    organization: Option<Value>,
    #[serde(default)]
    allowed_integrations: Option<Vec<String>>,
    #[serde(default)]
    integrations_config_defaults: Option<Map<String, Value>>,
    #[serde(default)]
    webhook_url_override: Option<String>,
    #[serde(default)]
    tags: Option<Value>,
    /// Per integration, what its Connect UI page shows otherwise
    /// (`{docs_connect?}`, the original's 0.69): checked, not kept (see
    /// [`check_overrides`]).
    #[serde(default)]
    overrides: Option<Value>,
    /// Reconnect only.
    #[serde(default)]
    connection_id: Option<String>,
    /// Reconnect only.
    #[serde(default)]
    integration_id: Option<String>,
}

/// An `organization`: `{id, display_name?}`, strings of at most 255
/// characters (empty ones taken, as the original's schema takes them,
/// and giving no tag, as the original gives none).
fn organization(value: &Value) -> ApiResult<end_users::Tags> {
    let refused = |why: &str| ApiError::invalid_body(format!("`organization`: {why}"));
    let Value::Object(map) = value else {
        return Err(refused("must be an object {id, display_name?}"));
    };
    let mut tags = end_users::Tags::new();
    for (k, v) in map {
        let tag = match k.as_str() {
            "id" => "organization_id",
            "display_name" => "organization_display_name",
            other => return Err(refused(&format!("unknown field `{other}`"))),
        };
        match v.as_str() {
            Some(s) if s.chars().count() <= 255 => {
                if !s.is_empty() {
                    tags.insert(tag.into(), s.to_string());
                }
            }
            _ => {
                return Err(refused(&format!(
                    "`{k}` must be a string of at most 255 characters"
                )));
            }
        }
    }
    if !map.contains_key("id") {
        return Err(refused("`id` is required"));
    }
    Ok(tags)
}

/// A body's `overrides`: an object of integration keys, each an object
/// whose `docs_connect` (the link to the integration's docs the original's
/// Connect UI shows), if given, is a string; other members are let go, as
/// the original's schema lets them go. Returns whether a `docs_connect`
/// is set: the original refuses that (403) without a plan that allows
/// it, as a self-hosted one has, and so does sluice.
fn check_overrides(value: &Map<String, Value>) -> ApiResult<bool> {
    let mut docs = false;
    for (key, v) in value {
        let Value::Object(map) = v else {
            return Err(ApiError::invalid_body(format!(
                "`overrides.{key}` must be an object ({{docs_connect?}})"
            )));
        };
        match map.get("docs_connect") {
            None => {}
            Some(Value::String(s)) => docs |= !s.is_empty(),
            Some(_) => {
                return Err(ApiError::invalid_body(format!(
                    "`overrides.{key}.docs_connect` must be a string"
                )));
            }
        }
    }
    Ok(docs)
}

/// An `integrations_config_defaults` entry: `{user_scopes?: string,
/// authorization_params?: {string: string}, connection_config?: object}`.
fn check_defaults(key: &str, value: &Value) -> ApiResult<()> {
    let refused = |why: String| {
        ApiError::invalid_body(format!("`integrations_config_defaults.{key}`: {why}"))
    };
    let Value::Object(map) = value else {
        return Err(refused("must be an object".into()));
    };
    for (k, v) in map {
        match k.as_str() {
            "user_scopes" if v.is_string() => {}
            "authorization_params"
                if v.as_object()
                    .is_some_and(|m| m.values().all(Value::is_string)) => {}
            "connection_config" if v.is_object() => {}
            "user_scopes" | "authorization_params" | "connection_config" => {
                return Err(refused(format!(
                    "`{k}` must be {}",
                    match k.as_str() {
                        "user_scopes" => "a string",
                        "authorization_params" => "an object of strings",
                        _ => "an object",
                    }
                )));
            }
            other => {
                return Err(refused(format!(
                    "unknown field `{other}` (it takes user_scopes, authorization_params and connection_config)"
                )));
            }
        }
    }
    Ok(())
}

/// The session a body describes, checked against the environment's
/// integrations.
async fn session_from(
    env: &EnvState,
    body: SessionBody,
    reconnect: Option<(String, String)>,
) -> ApiResult<ConnectSession> {
    let end_user = match &body.end_user {
        None | Some(Value::Null) => None,
        Some(v) => Some(end_users::parse_end_user(v).map_err(ApiError::invalid_body)?),
    };
    let own_tags = match &body.tags {
        None | Some(Value::Null) => None,
        Some(v) => Some(end_users::parse_tags(v).map_err(ApiError::invalid_body)?),
    };
    if reconnect.is_none() && end_user.is_none() && own_tags.is_none() {
        return Err(ApiError::invalid_body(
            "`end_user` is required unless `tags` are given",
        ));
    }
    let mut tags = match &body.organization {
        None | Some(Value::Null) => end_users::Tags::new(),
        Some(o) => organization(o)?,
    };
    tags.extend(end_users::merged(end_user.as_ref(), own_tags).map_err(ApiError::invalid_body)?);
    let webhook_url_override = match body.webhook_url_override {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => {
            crate::webhooks::check_url(&s).map_err(|e| {
                ApiError::invalid_body(format!("`webhook_url_override`: {}", e.message))
            })?;
            Some(s)
        }
    };
    let defaults = body.integrations_config_defaults.unwrap_or_default();
    let overrides = match body.overrides {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(ApiError::invalid_body(
                "`overrides` must be an object of integrations ({\"<integration>\": {docs_connect?}})",
            ));
        }
    };
    let named =
        body.allowed_integrations.as_ref().map_or(0, Vec::len) + defaults.len() + overrides.len();
    if named > MAX_NAMED {
        return Err(ApiError::invalid_body(format!(
            "a session names at most {MAX_NAMED} integrations (`allowed_integrations`, `integrations_config_defaults` and `overrides`), got {named}"
        )));
    }
    for (key, value) in &defaults {
        check_defaults(key, value)?;
    }
    let docs_connect = check_overrides(&overrides)?;
    let (allowed, connection_id) = match reconnect {
        Some((integration, connection)) => (Some(vec![integration]), Some(connection)),
        None => (body.allowed_integrations, None),
    };
    for key in allowed
        .iter()
        .flatten()
        .chain(defaults.keys())
        .chain(overrides.keys())
    {
        if env.store.integration(key).await?.is_none() {
            return Err(ApiError::invalid_body(format!(
                "Integration `{key}` does not exist in this environment"
            )));
        }
    }
    if docs_connect {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "You are not allowed to override the docs connect url",
        ));
    }
    let now = Utc::now();
    Ok(ConnectSession {
        end_user,
        organization: body.organization.filter(|o| !o.is_null()),
        allowed_integrations: allowed.filter(|a| !a.is_empty()),
        integrations_config_defaults: defaults,
        webhook_url_override,
        tags,
        connection_id,
        created_at: now,
        expires_at: now + SESSION_TTL,
        sealed_defaults: None,
        ended: false,
    })
}

/// Stores `session` under a new token; answers the original's 201
/// `{data: {token, connect_link, expires_at}}`.
async fn issue(
    app: &App,
    env: &EnvState,
    headers: &axum::http::HeaderMap,
    session: ConnectSession,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let token = format!("{TOKEN_PREFIX}{}", random_hex());
    let key = token_key(&token);
    let mut stored = session.clone();
    if !stored.integrations_config_defaults.is_empty() {
        let defaults = std::mem::take(&mut stored.integrations_config_defaults);
        stored.sealed_defaults = Some(env.store.seal_for_doc(SESSIONS, &key, &defaults).await?);
    }
    env.store.put_doc(SESSIONS, &key, &stored).await?;
    sweep(env).await;
    // The link opens this server's Connect UI with the session, as the
    // original's opens its hosted one; empty when the server knows no
    // address of its own (no `--public-url` and no `Host`).
    let base = super::base_url(app, headers);
    let connect_link = if base.is_empty() {
        String::new()
    } else {
        format!("{base}/connect?session_token={token}")
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "data": {
                "token": token,
                "connect_link": connect_link,
                "expires_at": session.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            }
        })),
    ))
}

/// Expired sessions (and OAuth flows never finished) are deleted now and
/// then, as sessions are created.
async fn sweep(env: &EnvState) {
    use std::sync::Mutex;
    static LAST: Mutex<Option<std::collections::HashMap<String, std::time::Instant>>> =
        Mutex::new(None);
    let id = env.store.id().to_string();
    {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        let map = last.get_or_insert_with(Default::default);
        if map
            .get(&id)
            .is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(600))
        {
            return;
        }
        map.insert(id, std::time::Instant::now());
    }
    let now = Utc::now();
    let mut after: Option<String> = None;
    loop {
        let Ok(page) = env
            .store
            .docs::<ConnectSession>(SESSIONS, "", after.as_deref(), 256, false)
            .await
        else {
            return;
        };
        for (key, s) in &page {
            // Kept an hour past its expiry: a flow it started (an hour
            // at most) still finds it.
            if s.expires_at + chrono::Duration::hours(1) <= now {
                let _ = env.store.delete_doc(SESSIONS, key).await;
            }
        }
        match page.last() {
            Some((key, _)) if page.len() == 256 => after = Some(key.clone()),
            _ => break,
        }
    }
    super::oauth::sweep(env).await;
}

/// `POST /connect/sessions`.
pub async fn create(
    State(app): State<Arc<App>>,
    Env(env): Env,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<SessionBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if body.connection_id.is_some() || body.integration_id.is_some() {
        return Err(ApiError::invalid_body(
            "`connection_id` and `integration_id` belong to POST /connect/sessions/reconnect",
        ));
    }
    let session = session_from(&env, body, None).await?;
    issue(&app, &env, &headers, session).await
}

/// `POST /connect/sessions/reconnect`: a session whose flow gives an
/// existing connection new credentials.
pub async fn reconnect(
    State(app): State<Arc<App>>,
    Env(env): Env,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<SessionBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (Some(cid), Some(key)) = (body.connection_id.clone(), body.integration_id.clone()) else {
        return Err(ApiError::invalid_body(
            "`connection_id` and `integration_id` are required",
        ));
    };
    if body.allowed_integrations.is_some() {
        return Err(ApiError::invalid_body(
            "a reconnect session allows its connection's integration only: `allowed_integrations` is not taken",
        ));
    }
    if !env.store.connection_exists(&key, &cid).await? {
        return Err(ApiError::invalid_body(
            "ConnectionID or IntegrationId does not exists",
        ));
    }
    let session = session_from(&env, body, Some((key, cid))).await?;
    issue(&app, &env, &headers, session).await
}

/// `GET /connect/session` (authenticated by the session's token).
pub async fn get(auth: SessionAuth) -> Json<Value> {
    let s = &auth.session;
    let mut data = json!({
        "endUser": s.end_user.as_ref().map(|e| {
            let mut e = e.clone();
            e["organization"] = s.organization.clone().unwrap_or(Value::Null);
            e
        }),
        "expires_at": s.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        // Where the frontend SDK opens its websocket (a self-hosted
        // original's default too).
        "websocketsPath": "/",
    });
    if let Some(a) = &s.allowed_integrations {
        data["allowed_integrations"] = json!(a);
    }
    if !s.integrations_config_defaults.is_empty() {
        // The browser holds the session's token: the app's defaults go to
        // it without their secrets (a client secret override).
        data["integrations_config_defaults"] =
            without_secrets(Value::Object(s.integrations_config_defaults.clone()));
    }
    if s.connection_id.is_some() {
        data["isReconnecting"] = Value::Bool(true);
    }
    Json(json!({ "data": data }))
}

/// `value` with the values of the object members whose name says they
/// are secret (`oauth_client_secret_override`, a `password`, an `apiKey`,
/// a `token`, a `private_key`) masked, at any depth: the keys stay, so
/// the Connect UI still takes those fields as given by the app (what the
/// flow uses is the session's own, never the browser's).
pub(crate) fn without_secrets(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let name = k.to_ascii_lowercase().replace(['_', '-'], "");
                    let secret = ["secret", "password", "privatekey", "apikey", "token"]
                        .iter()
                        .any(|s| name.contains(s));
                    if secret && !v.is_null() {
                        (k, Value::String("********".into()))
                    } else {
                        (k, without_secrets(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_secrets).collect()),
        other => other,
    }
}

/// Deletes every connect session of an environment and every browser flow
/// one started (the environment's secret key was replaced: whoever held
/// the old one may have made sessions, reconnect sessions included, and
/// they must not outlive it). Returns how many were deleted.
pub(crate) async fn forget_all(
    env: &sluice_store::EnvStore,
) -> Result<usize, sluice_store::StoreError> {
    let mut deleted = 0;
    for collection in [SESSIONS, crate::api::oauth::FLOWS] {
        loop {
            let page = env
                .docs_raw(collection, "", None, 256, false, &mut |_| false)
                .await?;
            if page.is_empty() {
                break;
            }
            for (key, _) in &page {
                if env.delete_doc(collection, key).await? {
                    deleted += 1;
                }
            }
        }
    }
    Ok(deleted)
}

/// `DELETE /connect/session`: the token stops working. The session is
/// replaced by a mark that it ended (no end user, no defaults), which the
/// sweep deletes with the expired ones: a browser still holding the token
/// is told on its websocket that the session ended (see [`issued`]).
pub async fn delete(auth: SessionAuth) -> ApiResult<StatusCode> {
    let ended = ConnectSession {
        end_user: None,
        organization: None,
        allowed_integrations: None,
        integrations_config_defaults: Map::new(),
        webhook_url_override: None,
        tags: end_users::Tags::new(),
        connection_id: None,
        created_at: auth.session.created_at,
        expires_at: auth.session.expires_at,
        sealed_defaults: None,
        ended: true,
    };
    auth.env
        .store
        .put_doc(SESSIONS, &token_key(&auth.token), &ended)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
