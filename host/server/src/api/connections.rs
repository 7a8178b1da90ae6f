//! Connections (§4.4): import with credentials by the provider's auth mode,
//! list, get (refreshing an expired token first), delete, and metadata.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sluice_runtime::connection::{Connection, ConnectionError, ConnectionStore as _, Credentials};
use sluice_runtime::records::ConnectionRef;

use super::{ApiPath, ApiQuery, Env, JsonBody, end_users};
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::refresh::CONNECTION_ERRORS;

/// Longest connection id, as the original.
const MAX_ID: usize = 255;

fn valid_connection_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= MAX_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ",.;:=+~[]|@${}\"'\\/_ -".contains(c))
}

fn text(body: &Map<String, Value>, key: &str) -> Option<String> {
    body.get(key).and_then(Value::as_str).map(str::to_string)
}

fn required(body: &Map<String, Value>, key: &str, mode: &str) -> ApiResult<String> {
    text(body, key).filter(|v| !v.is_empty()).ok_or_else(|| {
        let message = format!(
            "{mode} connections need a non-empty string `{key}` (in the body, or in its `credentials`)"
        );
        // The original's codes for the ones it names.
        match key {
            "access_token" | "api_key" => ApiError::bad_request(&format!("missing_{key}"), message),
            "username" => ApiError::bad_request("missing_basic_username", message),
            _ => ApiError::invalid_body(message),
        }
    })
}

/// An optional string field: absent or `null` is none, anything else but
/// a string is refused (a number for a token or a date would otherwise be
/// dropped without a word).
fn optional_text(body: &Map<String, Value>, key: &str) -> ApiResult<Option<String>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::invalid_body(format!(
            "`{key}` must be a string, got {other}"
        ))),
    }
}

/// The body with the fields of its `credentials` object, when it has one
/// in the credentials' own shape (as `connections.yaml` and `GET
/// /connection` show them: `{type, access_token}`, `{type, apiKey}`,
/// `{type, token}`…), where the body does not give them itself: the
/// original's import takes them at the top only, and a body with them in
/// `credentials` was refused as lacking them.
fn with_credentials(body: &Map<String, Value>) -> std::borrow::Cow<'_, Map<String, Value>> {
    let Some(Value::Object(given)) = body.get("credentials") else {
        return std::borrow::Cow::Borrowed(body);
    };
    let mut out = body.clone();
    for (k, v) in given {
        let key = match k.as_str() {
            "type" => continue,
            "apiKey" => "api_key",
            "token" => "access_token",
            other => other,
        };
        out.entry(key.to_string()).or_insert_with(|| v.clone());
    }
    std::borrow::Cow::Owned(out)
}

/// The credential types `POST /connections` imports, and the fields each
/// takes in its `credentials` object besides `type` (the original's, with
/// the spellings the top of a body takes too: `api_key`, `access_token`
/// for a client-credentials token, `expires_in`, `no_expiration`, `raw`).
const CREDENTIAL_FIELDS: &[(&str, &[&str])] = &[
    (
        "OAUTH2",
        &[
            "access_token",
            "refresh_token",
            "expires_at",
            "expires_in",
            "no_expiration",
            "raw",
            "config_override",
        ],
    ),
    (
        "OAUTH2_CC",
        &[
            "token",
            "access_token",
            "client_id",
            "client_secret",
            "client_certificate",
            "client_private_key",
            "expires_at",
            "expires_in",
            "raw",
        ],
    ),
    ("OAUTH1", &["oauth_token", "oauth_token_secret", "raw"]),
    ("API_KEY", &["apiKey", "api_key"]),
    ("BASIC", &["username", "password"]),
    ("NONE", &[]),
    ("TBA", &["token_id", "token_secret", "config_override"]),
    (
        "APP",
        &[
            "app_id",
            "installation_id",
            "access_token",
            "expires_at",
            "expires_in",
            "raw",
        ],
    ),
    ("CUSTOM", &["app_id", "installation_id"]),
];

/// The fields of a `POST /connection(s)` body that are the connection's
/// own, not its token (left out of the default `raw`).
const CONNECTION_FIELDS: &[&str] = &[
    "provider_config_key",
    "connection_id",
    "metadata",
    "connection_config",
    "end_user",
    "tags",
    "webhook_url_override",
    "credentials",
];

/// The token fields the older `POST /connection` takes at the top of its
/// body, which sluice's `POST /connections` takes too.
const TOKEN_FIELDS: &[&str] = &[
    "access_token",
    "refresh_token",
    "expires_at",
    "expires_in",
    "no_expiration",
    "raw",
    "api_key",
    "username",
    "password",
    "oauth_token",
    "oauth_token_secret",
    "oauth_client_id_override",
    "oauth_client_secret_override",
];

/// The fields naming a connection's own OAuth app (kept out of `raw`).
const CLIENT_OVERRIDE_FIELDS: &[&str] = &[
    "config_override",
    "oauth_client_id_override",
    "oauth_client_secret_override",
];

/// The auth mode of a body's credentials: its `credentials.type`, which
/// must be a type the original imports (or the provider's own mode) and
/// the provider's mode when it has one, with no field its type does not
/// take; else the provider's mode. `public`: `POST /connections`, whose
/// body takes no field it does not know either.
fn credentials_mode(
    body: &Map<String, Value>,
    provider_mode: Option<&str>,
    public: bool,
) -> ApiResult<String> {
    if public
        && let Some(unknown) = body.keys().find(|k| {
            !CONNECTION_FIELDS.contains(&k.as_str()) && !TOKEN_FIELDS.contains(&k.as_str())
        })
    {
        return Err(ApiError::invalid_body(format!(
            "unknown field `{unknown}`; a connection takes {}, {}",
            CONNECTION_FIELDS.join(", "),
            TOKEN_FIELDS.join(", ")
        )));
    }
    let given = match body.get("credentials") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => match c.get("type") {
            // The original's public import picks the credentials' shape by
            // their type.
            None | Some(Value::Null) if public => {
                return Err(ApiError::invalid_body(
                    "`credentials.type` is required (OAUTH2, API_KEY, BASIC, …)",
                ));
            }
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some((t.as_str(), c)),
            Some(other) => {
                return Err(ApiError::invalid_body(format!(
                    "`credentials.type` must be a string, got {other}"
                )));
            }
        },
        Some(other) => {
            return Err(ApiError::invalid_body(format!(
                "`credentials` must be an object, got {other}"
            )));
        }
    };
    // An MCP server's tokens are OAuth2's, whichever type names them.
    let mcp = |mode: &str| matches!(mode, "MCP_OAUTH2" | "MCP_OAUTH2_GENERIC");
    let oauth2 = |mode: &str| {
        if mcp(mode) {
            "OAUTH2".to_string()
        } else {
            mode.to_string()
        }
    };
    let Some((given, fields)) = given else {
        return Ok(oauth2(provider_mode.unwrap_or_default()));
    };
    let given = if mcp(given) && provider_mode == Some(given) {
        "OAUTH2"
    } else {
        given
    };
    let known = CREDENTIAL_FIELDS.iter().find(|(t, _)| *t == given);
    if known.is_none() && provider_mode != Some(given) {
        return Err(ApiError::invalid_body(format!(
            "`credentials.type` `{given}` is not a credential type; one of {}",
            CREDENTIAL_FIELDS
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // An MCP server's tokens are OAuth2's.
    if let Some(mode) = provider_mode
        && mode != given
        && !(mcp(mode) && given == "OAUTH2")
    {
        // The original's words.
        return Err(ApiError::invalid_body(format!(
            "Provider {mode} does not support {given} auth"
        )));
    }
    if let Some((_, allowed)) = known
        && let Some(unknown) = fields
            .keys()
            .find(|k| k.as_str() != "type" && !allowed.contains(&k.as_str()))
    {
        return Err(ApiError::invalid_body(format!(
            "unknown field `credentials.{unknown}` for {given} credentials; they take {}",
            if allowed.is_empty() {
                "no other field".to_string()
            } else {
                allowed.join(", ")
            }
        )));
    }
    Ok(given.to_string())
}

/// The credentials a `POST /connection` body carries, by auth mode;
/// `public`: `POST /connections`.
fn credentials(mode: &str, body: &Map<String, Value>, public: bool) -> ApiResult<Value> {
    let raw = match body.get("raw") {
        // As the original keeps it: the import's token fields (what a
        // token response would have been), for `getRawTokenResponse`;
        // not the connection's own settings, which change later.
        None | Some(Value::Null) => Value::Object(
            body.iter()
                .filter(|(k, _)| {
                    k.as_str() != "type"
                        && !CONNECTION_FIELDS.contains(&k.as_str())
                        && !CLIENT_OVERRIDE_FIELDS.contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        Some(Value::Object(raw)) => Value::Object(raw.clone()),
        Some(other) => {
            return Err(ApiError::invalid_body(format!(
                "`raw` must be an object, got {other}"
            )));
        }
    };
    let expires_at = || -> ApiResult<Option<String>> {
        if let Some(at) = optional_text(body, "expires_at")? {
            let parsed = DateTime::parse_from_rfc3339(&at).map_err(|_| {
                ApiError::invalid_body(format!(
                    "`expires_at` must be an ISO 8601 date-time, got `{at}`"
                ))
            })?;
            let parsed = parsed.with_timezone(&Utc);
            // Stored as RFC 3339, which has four-digit years: a date
            // whose UTC year has more (or is negative) could not be read
            // back, and the token would never be refreshed.
            if !(0..=9999).contains(&parsed.year()) {
                return Err(ApiError::invalid_body(format!(
                    "`expires_at` must fall within the years 0000 to 9999 in UTC, got `{at}`"
                )));
            }
            return Ok(Some(
                parsed.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ));
        }
        let expires_in = match body.get("expires_in") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                ApiError::invalid_body(format!(
                    "`expires_in` must be a whole number of seconds, got {v}"
                ))
            })?),
        };
        if let Some(secs) = expires_in {
            let at = crate::refresh::expires_after(secs)
                .filter(|at| at.year() <= 9999)
                .ok_or_else(|| {
                ApiError::invalid_body(format!(
                    "`expires_in` must be a number of seconds a date can be counted from now, got {secs}"
                ))
            })?;
            return Ok(Some(
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ));
        }
        Ok(None)
    };
    Ok(match mode {
        "OAUTH2" => {
            let mut c = json!({
                "type": "OAUTH2",
                "access_token": required(body, "access_token", mode)?,
                "raw": raw,
            });
            if let Some(r) = optional_text(body, "refresh_token")? {
                c["refresh_token"] = json!(r);
            }
            let no_expiration = body.get("no_expiration").and_then(Value::as_bool) == Some(true);
            if !no_expiration && let Some(at) = expires_at()? {
                c["expires_at"] = json!(at);
            }
            // The connection's own OAuth app, for its refreshes: the
            // original's `config_override`, or the top-level
            // `oauth_client_{id,secret}_override`; taken when both are
            // non-empty strings (anything else is left out, as before).
            let given = match body.get("config_override") {
                Some(Value::Object(o)) => (o.get("client_id"), o.get("client_secret")),
                _ => (
                    body.get("oauth_client_id_override"),
                    body.get("oauth_client_secret_override"),
                ),
            };
            if let (Some(Value::String(id)), Some(Value::String(secret))) = given
                && !id.is_empty()
                && !secret.is_empty()
            {
                c["config_override"] = json!({"client_id": id, "client_secret": secret});
            }
            c
        }
        "OAUTH2_CC" => {
            let mut c = json!({
                "type": "OAUTH2_CC",
                "token": required(body, "access_token", mode)?,
                "raw": raw,
            });
            if let Some(at) = expires_at()? {
                c["expires_at"] = json!(at);
            }
            // The client it was issued to: a new token is asked for with
            // it when this one expires.
            for field in [
                "client_id",
                "client_secret",
                "client_certificate",
                "client_private_key",
            ] {
                if let Some(v) = optional_text(body, field)? {
                    c[field] = json!(v);
                }
            }
            if let Some(raw) = c["raw"].as_object_mut()
                && !body.contains_key("raw")
            {
                // Not a token's answer: the client's secrets stay out.
                raw.remove("client_secret");
                raw.remove("client_private_key");
            }
            c
        }
        "OAUTH1" => json!({
            "type": "OAUTH1",
            "oauth_token": required(body, "oauth_token", mode)?,
            "oauth_token_secret": required(body, "oauth_token_secret", mode)?,
            "raw": raw,
        }),
        // The original's public import takes an empty username (some
        // providers use the password alone), its older one does not.
        "BASIC" => json!({
            "type": "BASIC",
            "username": if public {
                text(body, "username").ok_or_else(|| {
                    ApiError::invalid_body("BASIC connections need a string `username` (it may be empty)")
                })?
            } else {
                required(body, "username", mode)?
            },
            "password": text(body, "password").unwrap_or_default(),
        }),
        "API_KEY" => json!({ "type": "API_KEY", "apiKey": required(body, "api_key", mode)? }),
        // A GitHub App installation's token given as it is (without one,
        // the app asks for it: see `create`).
        "APP" => {
            let mut c = json!({
                "type": "APP",
                "access_token": required(body, "access_token", mode)?,
                "raw": raw,
            });
            if let Some(at) = expires_at()? {
                c["expires_at"] = json!(at);
            }
            c
        }
        "NONE" | "" => json!({}),
        other => match body.get("credentials") {
            Some(Value::Object(c)) => Value::Object(c.clone()),
            _ => {
                return Err(ApiError::invalid_body(format!(
                    "connections of auth mode {other} are imported with a `credentials` object in the original's shape"
                )));
            }
        },
    })
}

/// The connection as the API shows it: the script's view with the full
/// credentials and any recorded error.
async fn view(env: &crate::app::EnvState, c: &Connection) -> Value {
    let mut v = c.to_script_json();
    // Never the private key a user gave to sign assertions.
    v["credentials"] = c.credentials.shown(true);
    v["webhook_url_override"] = json!(c.webhook_url_override);
    let catalog = env.catalog().ok();
    v["errors"] = errors_of(
        &env.store,
        catalog.as_deref(),
        &c.provider_config_key,
        &c.connection_id,
    )
    .await;
    v
}

/// A connection's `errors` (§1.5: `[{type, log_id}]`): its credentials'
/// (`auth`: a refresh or a validate-connection check that failed), then
/// each deployed sync whose last run failed (`sync`, naming that run's
/// execution in the logs), until a run of it succeeds. `catalog` is the
/// environment's deployment: a sync no longer deployed has no error.
pub async fn errors_of(
    store: &sluice_store::EnvStore,
    catalog: Option<&sluice_project::catalog::Catalog>,
    pck: &str,
    cid: &str,
) -> Value {
    let mut errors = Vec::new();
    if let Ok(Some(e)) = store
        .doc::<Value>(CONNECTION_ERRORS, &format!("{pck}/{cid}"))
        .await
    {
        errors.push(e);
    }
    let conn = ConnectionRef {
        provider_config_key: pck.to_string(),
        connection_id: cid.to_string(),
    };
    let prefix = crate::runner::sync_key_prefix(&conn);
    let mut after: Option<String> = None;
    // A connection has a state per sync and variant: a page at a time.
    while let Ok(states) = store
        .docs::<crate::runner::SyncState>(
            crate::runner::SYNC_STATE,
            &prefix,
            after.as_deref(),
            500,
            false,
        )
        .await
    {
        let Some((last, _)) = states.last() else {
            break;
        };
        after = Some(last.clone());
        for (key, state) in &states {
            let Some(run) = state.last_run.as_ref().filter(|r| !r.success) else {
                continue;
            };
            let deployed = crate::runner::parse_sync_key(key).is_some_and(|(_, sync, _)| {
                catalog.is_some_and(|c| c.sync_config(pck, sync).is_some())
            });
            // A run recorded by an older version has no log to name.
            if let (true, Some(log_id)) = (deployed, &run.log_id) {
                errors.push(json!({ "type": "sync", "log_id": log_id }));
            }
        }
        if states.len() < 500 {
            break;
        }
    }
    Value::Array(errors)
}

/// `end_user` and `tags` of a create or update: each `None` when the body
/// does not give it; the tags merged with the end user's when either is
/// given (as the original makes them).
fn labels(body: &Map<String, Value>) -> ApiResult<(Option<Value>, Option<end_users::Tags>)> {
    let end_user = match body.get("end_user") {
        None | Some(Value::Null) => None,
        Some(v) => Some(end_users::parse_end_user(v).map_err(ApiError::invalid_body)?),
    };
    let tags = match body.get("tags") {
        None | Some(Value::Null) => None,
        Some(v) => Some(end_users::parse_tags(v).map_err(ApiError::invalid_body)?),
    };
    if end_user.is_none() && tags.is_none() {
        return Ok((None, None));
    }
    let tags = end_users::merged(end_user.as_ref(), tags).map_err(ApiError::invalid_body)?;
    Ok((end_user, Some(tags)))
}

/// The longest `webhook_url_override` taken.
const MAX_WEBHOOK_URL: usize = 2048;

/// A `webhook_url_override` given in a body: `Some(None)` for `""` (no
/// override), `Some(Some(url))` for an http(s) URL, `None` when left out.
/// Anything else is refused, naming the field.
fn webhook_url_override(body: &Map<String, Value>) -> ApiResult<Option<Option<String>>> {
    let refused = |why: String| ApiError::invalid_body(format!("`webhook_url_override`: {why}"));
    match body.get("webhook_url_override") {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(Some(None)),
        Some(Value::String(s)) if s.len() > MAX_WEBHOOK_URL => Err(refused(format!(
            "a URL of at most {MAX_WEBHOOK_URL} bytes, got {}",
            s.len()
        ))),
        Some(Value::String(s)) => {
            crate::webhooks::check_url(s).map_err(|e| refused(e.message))?;
            Ok(Some(Some(s.clone())))
        }
        Some(other) => Err(refused(format!(
            "must be a string (an http or https URL, or \"\" for none), got {other}"
        ))),
    }
}

/// A body's `provider_config_key`: `None` when it is left out, `null` or
/// `""` (the original takes those as missing); anything but a string is
/// refused, naming what it is.
fn body_pck(body: &Map<String, Value>) -> ApiResult<Option<String>> {
    match body.get("provider_config_key") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::invalid_body(format!(
            "`provider_config_key` must be a string, got {other}"
        ))),
    }
}

/// `POST /connection`, the original's older import route: a missing
/// `provider_config_key` is 400 `missing_provider_config`, an unknown one
/// 400 `unknown_provider_config`, as there.
pub async fn create_legacy(
    State(app): State<Arc<App>>,
    env: Env,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    let Some(pck) = body_pck(&body)? else {
        return Err(ApiError::bad_request(
            "missing_provider_config",
            "`provider_config_key` is required",
        ));
    };
    create(
        app,
        env,
        body,
        pck,
        |pck| {
            ApiError::bad_request(
                "unknown_provider_config",
                format!("No integration `{pck}` in this environment"),
            )
        },
        false,
    )
    .await
}

/// `POST /connections`, the original's public route: a missing
/// `provider_config_key` is 400 `invalid_body`, an unknown one 404
/// `not_found`, as there.
pub async fn create_public(
    State(app): State<Arc<App>>,
    env: Env,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    let pck = body_pck(&body)?
        .ok_or_else(|| ApiError::invalid_body("`provider_config_key` is required"))?;
    create(
        app,
        env,
        body,
        pck,
        |pck| {
            ApiError::not_found(
                "not_found",
                format!("Integration `{pck}` does not exist in this environment"),
            )
        },
        true,
    )
    .await
}

/// Imports a connection of integration `pck`; `unknown` is the error for
/// an integration this environment does not have.
async fn create(
    app: Arc<App>,
    Env(env): Env,
    body: Map<String, Value>,
    pck: String,
    unknown: fn(&str) -> ApiError,
    public: bool,
) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    let integration = env
        .store
        .integration(&pck)
        .await?
        .ok_or_else(|| unknown(&pck))?;
    let cid = match body.get("connection_id") {
        None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(id)) => id.clone(),
        Some(other) => {
            return Err(ApiError::invalid_body(format!(
                "`connection_id` must be a string, got {other}"
            )));
        }
    };
    if !valid_connection_id(&cid) {
        return Err(ApiError::invalid_body(format!(
            "`connection_id` must be 1 to {MAX_ID} characters of letters, digits and ,.;:=+~[]|@${{}}\"'\\/_ -"
        )));
    }
    let provider_mode = app
        .providers
        .get(&integration.provider)
        .and_then(|p| p.auth_mode.clone());
    let mode = credentials_mode(&body, provider_mode.as_deref(), public)?;
    // A GitHub App connection imported without a token: the app asks for
    // one (below).
    let app_install = mode == "APP"
        && with_credentials(&body)
            .get("access_token")
            .is_none_or(Value::is_null);
    let creds: Credentials = if app_install {
        Credentials::try_from(Map::new()).map_err(ApiError::invalid_body)?
    } else {
        serde_json::from_value(credentials(&mode, &with_credentials(&body), public)?)
            .map_err(|e| ApiError::invalid_body(format!("invalid credentials: {e}")))?
    };
    // A re-import that leaves out `metadata` or `connection_config` keeps
    // the stored ones (it is usually new credentials); `null` clears them.
    let metadata = match body.get("metadata") {
        None => None,
        Some(Value::Null) => Some(Value::Null),
        Some(Value::Object(m)) => Some(Value::Object(m.clone())),
        Some(_) => return Err(ApiError::invalid_body("`metadata` must be an object")),
    };
    let connection_config = match body.get("connection_config") {
        None => None,
        Some(Value::Null) => Some(Map::new()),
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => {
            return Err(ApiError::invalid_body(
                "`connection_config` must be an object",
            ));
        }
    };
    // Like them, an end user, tags or a webhook URL override left out are
    // kept.
    let (end_user, tags) = labels(&body)?;
    let webhook_url = webhook_url_override(&body)?;
    // A GitHub App's installation, named in the credentials as the
    // original's import takes it (or at the top of the older route's
    // body), is kept in the connection's configuration, where its tokens
    // are asked for.
    let installation = (mode == "APP")
        .then(|| with_credentials(&body).get("installation_id").cloned())
        .flatten()
        .filter(|v| !v.is_null());
    let connection_config = match installation {
        Some(id) => {
            let mut config = match connection_config {
                Some(config) => config,
                None => env
                    .store
                    .connection(&pck, &cid)
                    .await?
                    .map(|c| c.connection_config)
                    .unwrap_or_default(),
            };
            config.entry("installation_id").or_insert(id);
            Some(config)
        }
        None => connection_config,
    };
    // A TWO_STEP connection imported without its token, or a GitHub App
    // installation's: asked for now (the rest of the body checked first),
    // with the credentials and configuration given (or, on a re-import
    // leaving the configuration out, the stored one).
    let needs_token = app_install || (mode == "TWO_STEP" && creds.field("token").is_none());
    // A Bill.com connection without its session: logged in now.
    let creds = if mode == "BILL" && creds.field("session_id").is_none() {
        let mut c = super::oauth::template_connection(
            &pck,
            &cid,
            &integration.provider,
            &connection_config.clone().unwrap_or_default(),
        );
        c.credentials = creds;
        env.connections.bill_session(&c).await.map_err(|e| {
            ApiError::bad_request(
                "bill_tokens_fetch_error",
                format!("Bill gave no session for these credentials: {e}"),
            )
        })?
    } else {
        creds
    };
    // A JWT or SIGNATURE connection without its token: made now, from the
    // credentials given (no request; see `crate::jwt`).
    let creds = if matches!(mode.as_str(), "JWT" | "SIGNATURE") && creds.field("token").is_none() {
        // Made with the configuration given, or (a re-import leaving it
        // out) the stored one.
        let config = match &connection_config {
            Some(config) => config.clone(),
            None => env
                .store
                .connection(&pck, &cid)
                .await?
                .map(|c| c.connection_config)
                .unwrap_or_default(),
        };
        made_token(&app, &pck, &cid, &integration.provider, creds, &config).await?
    } else {
        creds
    };
    let (creds, connection_config) = if needs_token {
        let config = match &connection_config {
            Some(config) => config.clone(),
            None => env
                .store
                .connection(&pck, &cid)
                .await?
                .map(|c| c.connection_config)
                .unwrap_or_default(),
        };
        let (creds, config) = if app_install {
            app_token(&env, &pck, &cid, &integration, config).await?
        } else {
            two_step_token(
                &app,
                &env.connections,
                &pck,
                &cid,
                &integration.provider,
                creds,
                config,
            )
            .await?
        };
        (creds, Some(config))
    } else {
        (creds, connection_config)
    };
    // A generic MCP server's connection keeps its token URL and client
    // as sluice's flow leaves them (an export of the original's has them
    // elsewhere).
    let (creds, connection_config) = if provider_mode.as_deref() == Some("MCP_OAUTH2_GENERIC") {
        let mut config = match connection_config {
            Some(config) => config,
            None => env
                .store
                .connection(&pck, &cid)
                .await?
                .map(|c| c.connection_config)
                .unwrap_or_default(),
        };
        let mut map = creds.as_map().clone();
        let body = with_credentials(&body);
        crate::mcp::imported(&mut config, &mut map, body.get("config_override"));
        let creds = Credentials::try_from(map).map_err(ApiError::invalid_body)?;
        (creds, Some(config))
    } else {
        (creds, connection_config)
    };
    let draft = Draft {
        provider_config_key: pck,
        connection_id: cid,
        credentials: creds,
        metadata,
        connection_config,
        end_user,
        tags,
        webhook_url,
        tell_end_user: false,
        reconnect: false,
        // The app's values: its `allowed_hosts` hold for them.
        token_host_from_browser: false,
    };
    let c = store(&app, &env, draft, unknown).await?;
    // 201 on every import, new or not, as the original answers.
    Ok((axum::http::StatusCode::CREATED, Json(view(&env, &c).await)))
}

/// A new GitHub App connection's first installation token, asked for by
/// the integration's app for `config.installation_id`. A refusal is 400
/// `github_app_token_fetch_error`, naming GitHub's answer.
async fn app_token(
    env: &Arc<crate::app::EnvState>,
    pck: &str,
    cid: &str,
    integration: &sluice_store::Integration,
    config: Map<String, Value>,
) -> ApiResult<(Credentials, Map<String, Value>)> {
    if crate::github_app::installation_id(&config).is_none() {
        return Err(ApiError::invalid_body(
            "`credentials.installation_id` (or `connection_config.installation_id`) is required: the id (digits) of the GitHub App installation this connection is for",
        ));
    }
    let empty = Credentials::try_from(Map::new()).map_err(ApiError::invalid_body)?;
    let mut c = super::oauth::template_connection(pck, cid, &integration.provider, &config);
    c.credentials = empty;
    let creds = env
        .connections
        .app_token(&c, integration)
        .await
        .map_err(|e| {
            ApiError::bad_request(
                "github_app_token_fetch_error",
                format!("GitHub gave no installation token: {e}"),
            )
        })?;
    Ok((creds, config))
}

/// A new JWT or SIGNATURE connection's token, made from the user's
/// credentials `creds` and configuration `config` as the provider's
/// definition says (see [`crate::jwt`]). A refusal is 400
/// `failed_to_generate` (the original's code), naming what is missing.
/// The token is signed off the async workers (see
/// [`crate::jwt::off_workers`]).
pub(crate) async fn made_token(
    app: &App,
    pck: &str,
    cid: &str,
    provider: &str,
    creds: Credentials,
    config: &Map<String, Value>,
) -> ApiResult<Credentials> {
    let refused = |e: String| {
        ApiError::bad_request(
            "failed_to_generate",
            format!("no token could be made from these credentials: {e}"),
        )
    };
    let definition = app
        .providers
        .get(provider)
        .map(|p| p.definition.clone())
        .ok_or_else(|| refused(format!("the provider `{provider}` is not in the catalogue")))?;
    let mut c = super::oauth::template_connection(pck, cid, provider, config);
    c.credentials = creds;
    crate::jwt::off_workers(move || crate::jwt::renewed(&definition, &c))
        .await
        .map_err(refused)
}

/// A new TWO_STEP connection's first token, asked for with the user's
/// credentials `creds` and configuration `config`: the credentials to
/// store, and the configuration with what the provider's answer adds to
/// it (`token_response_metadata`). A refusal is 400
/// `two_step_credentials_fetch_error`, naming the endpoint's answer.
pub(crate) async fn two_step_token(
    app: &Arc<App>,
    connections: &crate::refresh::Connections,
    pck: &str,
    cid: &str,
    provider: &str,
    creds: Credentials,
    mut config: Map<String, Value>,
) -> ApiResult<(Credentials, Map<String, Value>)> {
    let mut c = super::oauth::template_connection(pck, cid, provider, &config);
    c.credentials = creds;
    let creds = connections.two_step_token(&c).await.map_err(|e| {
        ApiError::bad_request(
            "two_step_credentials_fetch_error",
            format!("the provider gave no token for these credentials: {e}"),
        )
    })?;
    if let Some(p) = app.providers.get(provider) {
        config.extend(crate::two_step::metadata(&p.definition, &creds));
    }
    Ok((creds, config))
}

/// A connection to store: what a request gives. Each `None` is left as
/// stored (a new connection: none); `Some(None)` of `webhook_url` removes
/// the override.
pub(crate) struct Draft {
    pub provider_config_key: String,
    pub connection_id: String,
    pub credentials: Credentials,
    pub metadata: Option<Value>,
    pub connection_config: Option<Map<String, Value>>,
    pub end_user: Option<Value>,
    pub tags: Option<end_users::Tags>,
    pub webhook_url: Option<Option<String>>,
    /// The `auth` webhook names the end user (a connect session's).
    pub tell_end_user: bool,
    /// A reconnect: the connection must still exist (one deleted
    /// meanwhile is not created again).
    pub reconnect: bool,
    /// The token URL's host is one a browser's value chose (see
    /// [`Connection::token_host_from_browser`]); kept with the stored
    /// configuration when the draft has none.
    pub token_host_from_browser: bool,
}

/// Stores a connection, new or not, as an import does: checked by the
/// integration's `validate-connection` scripts (a new one that fails is
/// deleted again), its errors cleared, its syncs scheduled, and a new
/// one's `post-connection-creation` scripts started. `unknown` is the
/// error for an integration this environment does not have.
pub(crate) async fn store(
    app: &Arc<App>,
    env: &Arc<crate::app::EnvState>,
    draft: Draft,
    unknown: fn(&str) -> ApiError,
) -> ApiResult<Connection> {
    let Draft {
        provider_config_key: pck,
        connection_id: cid,
        credentials: creds,
        metadata,
        connection_config,
        end_user,
        tags,
        webhook_url,
        tell_end_user,
        reconnect,
        token_host_from_browser,
    } = draft;
    // Held from reading the integration and its deletion mark until the
    // connection is written (`app::IntegrationLock`'s invariant): a
    // deletion either lists this connection or is seen here. Not across
    // the `validate-connection` scripts: a deletion that lists the
    // connection meanwhile deletes it, and the check below that it still
    // exists answers 409, as for a connection's own deletion.
    let integration_lock = env.integration_lock(&pck);
    let integration_kept = integration_lock.kept.read().await;
    // One import of this connection at a time, until its answer.
    let one_import = env.import_lock(&pck, &cid).lock().await;
    let integration = env
        .store
        .integration(&pck)
        .await?
        .ok_or_else(|| unknown(&pck))?;
    let now = Utc::now();
    // A deletion of this id under way is waited for: what it deletes is
    // not this import's. One that comes after waits until the connection
    // is written (and its deletion mark cleared), not for the check.
    let entered = env
        .runs
        .enter(&ConnectionRef {
            provider_config_key: pck.clone(),
            connection_id: cid.clone(),
        })
        .await;
    // An integration being deleted, or whose deletion failed half way (it
    // is deleted at the next start, with every connection it then has):
    // none is added to it.
    if env
        .store
        .doc::<Value>(DELETIONS, &format!("integration/{pck}"))
        .await?
        .is_some()
    {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "integration_being_deleted",
            format!(
                "the integration `{pck}` is being deleted (or its deletion stopped half way and finishes at the next start: then delete it again, and create it anew)"
            ),
        ));
    }
    let is_new = !env.store.connection_exists(&pck, &cid).await?;
    if reconnect && is_new {
        return Err(ApiError::bad_request(
            "invalid_connection",
            format!("the connection `{cid}` being reconnected was deleted"),
        ));
    }
    // What the request leaves out is kept from the stored connection, read
    // when it is written (under its lock).
    let keep = (
        metadata.is_none(),
        connection_config.is_none(),
        end_user.is_none(),
        tags.is_none(),
        webhook_url.is_none(),
    );
    let mut c = Connection {
        connection_id: cid,
        provider_config_key: pck,
        provider: integration.provider,
        credentials: creds,
        connection_config: connection_config.unwrap_or_default(),
        // A new connection without metadata has none (`null`), as in a
        // dry run; the original shows `{}`, which a Rust script reading
        // `Option<T>` would take for metadata of the wrong shape.
        metadata: metadata.unwrap_or(Value::Null),
        created_at: now,
        updated_at: now,
        end_user: end_user.unwrap_or(Value::Null),
        tags: tags.unwrap_or_default(),
        webhook_url_override: webhook_url.flatten(),
        token_host_from_browser,
    };
    let conn = ConnectionRef {
        provider_config_key: c.provider_config_key.clone(),
        connection_id: c.connection_id.clone(),
    };
    let setup_key = format!("{}/{}", conn.provider_config_key, conn.connection_id);
    // A deletion of this connection that failed half way left its mark:
    // imported again, it must not be deleted at the next start.
    env.store
        .delete_doc(DELETIONS, &format!("connection/{setup_key}"))
        .await?;
    if is_new {
        // Stored first: a crash before the check passes leaves a
        // connection that the next start deletes, not one kept unchecked.
        let setup = Setup {
            stage: SetupStage::Validating,
            restarts: 0,
        };
        env.store
            .put_doc(CONNECTION_SETUP, &setup_key, &setup)
            .await?;
    }
    // The connection as it was, read under its lock as it is replaced: put
    // back if the new credentials fail its `validate-connection` check.
    let mut before = None;
    env.store
        .put_connection_keeping(&mut c, |stored, c| {
            before = Some(stored.clone());
            c.created_at = stored.created_at;
            let (metadata, config, end_user, tags, webhook_url) = keep;
            if metadata {
                c.metadata = stored.metadata;
            }
            if config {
                c.connection_config = stored.connection_config;
                c.token_host_from_browser = stored.token_host_from_browser;
            }
            if end_user {
                c.end_user = stored.end_user;
            }
            if tags {
                c.tags = stored.tags;
            }
            if webhook_url {
                c.webhook_url_override = stored.webhook_url_override;
            }
        })
        .await?;
    drop(entered);
    drop(integration_kept);
    // `validate-connection` scripts (zero-yaml) run before the answer, with
    // the stored credentials: a failure refuses a new connection (it is
    // deleted again) and marks an existing one's credentials as failed,
    // as the original does on a reconnect.
    if let Err(failure) = crate::runner::validate_connection(app, env, &conn).await {
        let message = failure.message;
        let key = format!("{}/{}", conn.provider_config_key, conn.connection_id);
        if is_new {
            env.store
                .delete_connection(&conn.provider_config_key, &conn.connection_id)
                .await?;
            env.store.delete_doc(CONNECTION_SETUP, &setup_key).await?;
        } else {
            // Wrong credentials lose nothing stored: the connection's own
            // are put back, and what this request changed with them.
            if let Some(old) = before {
                let (metadata, config, end_user, tags, webhook_url) = keep;
                env.store
                    .restore_connection(
                        &conn.provider_config_key,
                        &conn.connection_id,
                        &c.credentials,
                        |stored| Connection {
                            credentials: old.credentials,
                            updated_at: old.updated_at,
                            metadata: if metadata {
                                stored.metadata
                            } else {
                                old.metadata
                            },
                            connection_config: if config {
                                stored.connection_config
                            } else {
                                old.connection_config
                            },
                            token_host_from_browser: if config {
                                stored.token_host_from_browser
                            } else {
                                old.token_host_from_browser
                            },
                            end_user: if end_user {
                                stored.end_user
                            } else {
                                old.end_user
                            },
                            tags: if tags { stored.tags } else { old.tags },
                            webhook_url_override: if webhook_url {
                                stored.webhook_url_override
                            } else {
                                old.webhook_url_override
                            },
                            ..stored
                        },
                    )
                    .await?;
            }
            let record = json!({
                "type": "auth",
                "log_id": failure.log_id,
                "message": message,
                "at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            });
            // Not for a connection deleted meanwhile (a new one of its
            // id would show this error).
            env.store
                .put_doc_for_connection(
                    &conn.provider_config_key,
                    &conn.connection_id,
                    CONNECTION_ERRORS,
                    &key,
                    &record,
                )
                .await?;
            // As the original's failed reconnection.
            let event = crate::webhooks::AuthEvent {
                connection: &c,
                auth_mode: &auth_mode(app, &c),
                operation: "override",
                end_user: false,
                error: Some(
                    json!({"type": "connection_validation_failed", "description": message}),
                ),
            };
            tell(app, env, event).await;
        }
        return Err(ApiError::bad_request(
            "connection_test_failed",
            format!(
                "connection `{}` failed its validate-connection check: {message}",
                conn.connection_id
            ),
        ));
    }
    if is_new {
        // Checkpoints an earlier version left behind for a deleted
        // connection of this id are not this one's.
        env.store.delete_legacy_checkpoints(&conn).await?;
    }
    // New credentials (or a new connection where one of the same id was
    // before): an error recorded for the old ones is stale.
    let key = format!("{}/{}", conn.provider_config_key, conn.connection_id);
    env.store.delete_doc(CONNECTION_ERRORS, &key).await?;
    (env.connections).forget_failure(&conn.provider_config_key, &conn.connection_id);
    if is_new {
        // Checked: what is left is its `post-connection-creation` scripts,
        // which a start runs if a crash comes first.
        let setup = Setup {
            stage: SetupStage::PostCreation,
            restarts: 0,
        };
        env.store
            .put_doc(CONNECTION_SETUP, &setup_key, &setup)
            .await?;
    }
    // The `auto_start` syncs start now; the others are scheduled paused.
    app.scheduler.connection_created(env, &conn).await?;
    // A deletion that began after the wait above and went first leaves no
    // connection: its schedules go again, and the import is not answered
    // as stored.
    if !env
        .store
        .connection_exists(&conn.provider_config_key, &conn.connection_id)
        .await?
    {
        app.scheduler.connection_gone(env, &conn).await?;
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "connection_deleted",
            format!(
                "connection `{}` was deleted while this request stored it: it is not stored; send it again",
                conn.connection_id
            ),
        ));
    }
    if is_new {
        // `post-connection-creation` scripts run after the answer.
        tokio::spawn(post_creation(app.clone(), env.clone(), conn));
    }
    // The app hears of it (`type: "auth"`), as from the original.
    let event = crate::webhooks::AuthEvent {
        connection: &c,
        auth_mode: &auth_mode(app, &c),
        operation: if is_new { "creation" } else { "override" },
        end_user: tell_end_user,
        error: None,
    };
    tell(app, env, event).await;
    drop(one_import);
    Ok(c)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchQuery {
    provider_config_key: Option<String>,
}

/// `PATCH /connections/:id?provider_config_key=`: a connection's
/// `end_user` and `tags`, as the original's: given an end user, the tags
/// become the end user's then the body's (the ones before are dropped);
/// given tags only, they replace the tags. `webhook_url_override` sets
/// where the connection's webhooks go (`""` removes it).
pub async fn patch(
    Env(env): Env,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PatchQuery>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    for key in body.keys() {
        if !["end_user", "tags", "webhook_url_override"].contains(&key.as_str()) {
            return Err(ApiError::invalid_body(format!(
                "unknown field `{key}` (a connection's end_user, tags and webhook_url_override can be changed)"
            )));
        }
    }
    if let Some(key) = ["end_user", "tags", "webhook_url_override"]
        .into_iter()
        .find(|k| body.get(*k) == Some(&Value::Null))
    {
        return Err(ApiError::invalid_body(format!(
            "`{key}` cannot be null (leave it out to keep it)"
        )));
    }
    let webhook_url = webhook_url_override(&body)?;
    let (end_user, tags) = labels(&body)?;
    let pck = q.provider_config_key.ok_or_else(|| {
        ApiError::bad_request(
            "missing_provider_config_key",
            "`provider_config_key` is required",
        )
    })?;
    if env.store.integration(&pck).await?.is_none() {
        // 400 here, as the original answers a PATCH.
        return Err(ApiError::bad_request(
            "unknown_provider_config",
            format!("No integration `{pck}`"),
        ));
    }
    env.store
        .set_labels(&pck, &id, end_user, tags, webhook_url)
        .await
        .map_err(|e| match e {
            ConnectionError::NotFound { .. } => ApiError::not_found(
                "not_found",
                format!("No connection `{id}` for integration `{pck}`"),
            ),
            other => ApiError::internal(other.to_string()),
        })?;
    Ok(Json(json!({ "success": true })))
}

/// Where a new connection's creation is: stored (flushed) before each
/// step, deleted when it is done, so a crash midway is finished at the
/// next start ([`finish_setups`]).
pub const CONNECTION_SETUP: &str = "connection-setup";

/// Deletions begun and not finished, by `connection/<pck>/<id>` or
/// `integration/<key>`: written (flushed) before anything is deleted, gone
/// once everything is, and finished at the next start when a crash cut one
/// short (see [`finish_deletions`]).
pub const DELETIONS: &str = "deletions";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    stage: SetupStage,
    /// Starts that found it unfinished after its scripts began.
    #[serde(default)]
    restarts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SetupStage {
    /// Stored, its `validate-connection` check not passed yet.
    Validating,
    /// Checked and answered; its `post-connection-creation` scripts to run.
    PostCreation,
}

/// Whether `conn` is a new connection whose `validate-connection` check has
/// not passed yet: not created as far as anyone else is concerned (its
/// syncs are scheduled once it passes; should it fail, it is deleted).
pub(crate) async fn validating(
    env: &crate::app::EnvState,
    conn: &ConnectionRef,
) -> Result<bool, sluice_store::StoreError> {
    let key = format!("{}/{}", conn.provider_config_key, conn.connection_id);
    Ok(env
        .store
        .doc::<Setup>(CONNECTION_SETUP, &key)
        .await?
        .is_some_and(|s| s.stage == SetupStage::Validating))
}

/// The auth mode the `auth` webhook names: the provider's, else the
/// credentials' type (`NONE` for none).
pub(crate) fn auth_mode(app: &App, c: &Connection) -> String {
    app.providers
        .get(&c.provider)
        .and_then(|p| p.auth_mode.clone())
        .or_else(|| Some(c.credentials.kind().to_string()).filter(|k| !k.is_empty()))
        .unwrap_or_else(|| "NONE".into())
}

/// Queues an `auth` webhook; a store that cannot take it is told to the
/// operator (what it is about is stored already).
pub(crate) async fn tell(
    app: &App,
    env: &crate::app::EnvState,
    event: crate::webhooks::AuthEvent<'_>,
) {
    let cid = event.connection.connection_id.clone();
    if let Err(e) = app.webhooks.auth(env, event).await {
        app.config.events.say(&format!(
            "the auth webhook of connection `{cid}` could not be queued: {}",
            e.message
        ));
    }
}

/// Runs a new connection's `post-connection-creation` scripts, then
/// forgets its setup.
async fn post_creation(app: Arc<App>, env: Arc<crate::app::EnvState>, conn: ConnectionRef) {
    crate::runner::run_event_scripts(
        &app,
        &env,
        &conn,
        sluice_nango_yaml::EventKind::PostConnectionCreation,
    )
    .await;
    let key = format!("{}/{}", conn.provider_config_key, conn.connection_id);
    let _ = env.store.delete_doc(CONNECTION_SETUP, &key).await;
}

/// At start, before the schedules load: a connection a crash caught
/// before its check passed is deleted (its creation was never answered;
/// the client's retry makes it again), and one whose
/// `post-connection-creation` scripts had not finished runs them (three
/// starts at most, as a triggered run).
pub async fn finish_setups(app: &Arc<App>) -> Result<(), crate::ServerError> {
    for env in app.envs() {
        let mut after: Option<String> = None;
        loop {
            let page: Vec<(String, Setup)> = env
                .store
                .docs(CONNECTION_SETUP, "", after.as_deref(), 500, false)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (key, mut setup) in page {
                let Some((pck, cid)) = key.split_once('/') else {
                    env.store.delete_doc(CONNECTION_SETUP, &key).await?;
                    continue;
                };
                let conn = ConnectionRef {
                    provider_config_key: pck.to_string(),
                    connection_id: cid.to_string(),
                };
                match setup.stage {
                    SetupStage::Validating => {
                        env.store.delete_connection(pck, cid).await?;
                        env.store.delete_doc(CONNECTION_SETUP, &key).await?;
                    }
                    SetupStage::PostCreation => {
                        // Only a crash counts towards giving them up.
                        if !env.after_clean_stop() {
                            setup.restarts += 1;
                        }
                        let alive = env.store.connection_exists(pck, cid).await?;
                        if !alive || setup.restarts >= crate::runner::TRIGGER_ATTEMPTS {
                            env.store.delete_doc(CONNECTION_SETUP, &key).await?;
                            continue;
                        }
                        env.store.put_doc(CONNECTION_SETUP, &key, &setup).await?;
                        tokio::spawn(post_creation(app.clone(), env.clone(), conn));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The filters of `GET /connections` (and the legacy `GET /connection`),
/// as the original's: `connectionId`, `integrationId` (a comma-separated
/// list), `search` (part of the connection id, or of the end user's email
/// or display name, any case), `endUserId`,
/// `endUserOrganizationId` (sluice keeps no organizations: it matches
/// nothing) and `tags[k]=v` (every one), `limit` (1..2000, 10,000 when not
/// given), `page` (from 0); newest first. `provider_config_key` is
/// sluice's own, kept for its earlier clients. Anything else is 400
/// `invalid_query_params`, as the original's strict query.
#[derive(Default)]
struct ListFilter {
    connection_id: Option<String>,
    integrations: Option<Vec<String>>,
    search: Option<String>,
    end_user_id: Option<String>,
    /// `tags[key]=value`, keys lowercased: a connection has them all.
    tags: Vec<(String, String)>,
    /// An organization asked for (sluice keeps none): nothing matches.
    unmatchable: bool,
    limit: usize,
    page: usize,
}

fn list_filter(pairs: Vec<(String, String)>) -> Result<ListFilter, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_query_params", m);
    let mut f = ListFilter {
        limit: 10_000,
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    for (key, value) in pairs {
        if !key.starts_with("tags[") && !seen.insert(key.clone()) {
            return Err(bad(format!("`{key}` is given more than once")));
        }
        let text = |name: &str, max: usize| {
            if value.is_empty() || value.chars().count() > max {
                Err(bad(format!("`{name}` must be 1 to {max} characters")))
            } else {
                Ok(value.clone())
            }
        };
        match key.as_str() {
            "connectionId" => f.connection_id = Some(text("connectionId", 255)?),
            "search" => f.search = Some(text("search", 255)?.to_lowercase()),
            "integrationId" | "provider_config_key" => {
                let keys: Vec<String> = text(&key, 1024)?
                    .split(',')
                    .map(|k| k.trim().to_string())
                    .collect();
                f.integrations = Some(match f.integrations.take() {
                    // Both given: what both name.
                    Some(before) => before.into_iter().filter(|k| keys.contains(k)).collect(),
                    None => keys,
                });
            }
            "endUserId" => f.end_user_id = Some(text("endUserId", 255)?),
            "endUserOrganizationId" => {
                text(&key, 255)?;
                f.unmatchable = true;
            }
            "limit" => {
                f.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=2000).contains(l))
                    .ok_or_else(|| bad(format!("`limit` must be 1 to 2000, got `{value}`")))?;
            }
            "page" => {
                f.page = value
                    .parse::<usize>()
                    .map_err(|_| bad(format!("`page` must be 0 or more, got `{value}`")))?;
            }
            k if k.starts_with("tags[") && k.ends_with(']') => {
                let tag = &k["tags[".len()..k.len() - 1];
                if let Some(problem) = end_users::key_problem(tag) {
                    return Err(bad(format!("`tags[{tag}]`: {problem}")));
                }
                if f.tags.iter().any(|(t, _)| t.eq_ignore_ascii_case(tag)) {
                    return Err(bad(format!("`tags[{tag}]` is given more than once")));
                }
                f.tags.push((tag.to_lowercase(), text(k, 255)?));
                if f.tags.len() > 10 {
                    return Err(bad("at most 10 `tags[key]` filters".into()));
                }
            }
            other => return Err(bad(format!("unknown query parameter `{other}`"))),
        }
    }
    Ok(f)
}

pub async fn list(
    Env(env): Env,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let f = list_filter(pairs)?;
    // What the page is chosen by, per matching connection: its metadata
    // is not kept (each connection is read again if it is on the page).
    let mut all: Vec<(chrono::DateTime<chrono::Utc>, String, String)> = Vec::new();
    if !f.unmatchable {
        let scope = match f.integrations.as_deref() {
            Some([one]) => Some(one.as_str()),
            _ => None,
        };
        env.store
            .each_connection(scope, |c| {
                if list_matches(&f, &c) {
                    all.push((c.created_at, c.provider_config_key, c.connection_id));
                }
            })
            .await?;
    }
    // Newest first.
    all.sort_by(|a, b| b.cmp(a));
    let mut connections = Vec::new();
    let catalog = env.catalog().ok();
    for (_, pck, cid) in all.iter().skip(f.page.saturating_mul(f.limit)) {
        if connections.len() >= f.limit {
            break;
        }
        // Deleted, or no longer matching, since it was listed: the next
        // one takes its place, so the page stays full.
        let Some(c) = env.store.connection(pck, cid).await? else {
            continue;
        };
        if !list_matches(&f, &c) {
            continue;
        }
        let errors = errors_of(
            &env.store,
            catalog.as_deref(),
            &c.provider_config_key,
            &c.connection_id,
        )
        .await;
        connections.push(json!({
            "id": c.connection_id,
            "connection_id": c.connection_id,
            "provider_config_key": c.provider_config_key,
            "provider": c.provider,
            "errors": errors,
            "end_user": c.end_user_view(),
            "tags": c.tags,
            "metadata": c.metadata,
            "created": c.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }));
    }
    Ok(Json(json!({ "connections": connections })))
}

/// Whether connection `c` is one `GET /connection` lists under filter `f`.
fn list_matches(f: &ListFilter, c: &sluice_runtime::connection::Connection) -> bool {
    f.connection_id
        .as_ref()
        .is_none_or(|id| &c.connection_id == id)
        && f.integrations
            .as_ref()
            .is_none_or(|keys| keys.contains(&c.provider_config_key))
        && f.search.as_ref().is_none_or(|s| {
            // The connection id, or the end user's email or display
            // name, as the original's search.
            let field = |k: &str| {
                c.end_user
                    .get(k)
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.to_lowercase().contains(s))
            };
            c.connection_id.to_lowercase().contains(s) || field("email") || field("display_name")
        })
        && f.end_user_id
            .as_ref()
            .is_none_or(|id| c.end_user.get("id").and_then(Value::as_str) == Some(id))
        && f.tags.iter().all(|(k, v)| c.tags.get(k) == Some(v))
}

/// A connection's query, as the original's: strict (a misspelt
/// `force_refresh` would otherwise be dropped without a word).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneQuery {
    provider_config_key: Option<String>,
    #[serde(default)]
    force_refresh: Option<bool>,
    #[serde(default)]
    refresh_token: Option<bool>,
    /// Sent by the official SDK's `getConnection` (GitHub App JWTs, which
    /// sluice does not mint): taken and ignored, as a strict query would
    /// otherwise refuse every such call.
    #[serde(default, rename = "refresh_github_app_jwt_token")]
    _refresh_github_app_jwt_token: Option<bool>,
}

fn connection_error(e: ConnectionError) -> ApiError {
    match e {
        ConnectionError::NotFound {
            provider_config_key,
            connection_id,
        } => ApiError::not_found(
            "not_found",
            format!("No connection `{connection_id}` for integration `{provider_config_key}`"),
        ),
        ConnectionError::Refused { code, message } => {
            ApiError::new(axum::http::StatusCode::BAD_REQUEST, &code, message)
        }
        other => ApiError::internal(other.to_string()),
    }
}

pub async fn get(
    Env(env): Env,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<OneQuery>,
) -> ApiResult<Json<Value>> {
    let pck = (q.provider_config_key)
        .ok_or_else(|| ApiError::missing_query_param("provider_config_key"))?;
    if env.store.integration(&pck).await?.is_none() {
        return Err(ApiError::bad_request(
            "unknown_provider_config",
            format!("No integration `{pck}` in this environment"),
        ));
    }
    let shown = |mut v: Value| {
        if let Some(creds) = v
            .get("credentials")
            .cloned()
            .and_then(|c| Credentials::try_from(c.as_object()?.clone()).ok())
        {
            v["credentials"] = creds.shown(q.refresh_token == Some(true));
        }
        v
    };
    let fresh = env
        .connections
        .fresh(
            &pck,
            &id,
            if q.force_refresh.unwrap_or(false) {
                crate::refresh::Force::Asked
            } else {
                crate::refresh::Force::No
            },
        )
        .await;
    let c = match fresh {
        Ok(c) => c,
        // As the original's: a refusal carries the connection as stored,
        // for an app that marks it broken from the answer.
        Err(e @ ConnectionError::Refused { .. }) => {
            let stored = env.store.connection(&pck, &id).await?;
            let mut error = connection_error(e);
            if let Some(c) = stored {
                error = error.with_payload(json!({ "connection": shown(view(&env, &c).await) }));
            }
            return Err(error);
        }
        Err(e) => return Err(connection_error(e)),
    };
    Ok(Json(shown(view(&env, &c).await)))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Env(env): Env,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<OneQuery>,
) -> ApiResult<Json<Value>> {
    let pck = (q.provider_config_key)
        .ok_or_else(|| ApiError::missing_query_param("provider_config_key"))?;
    let conn = ConnectionRef {
        provider_config_key: pck.clone(),
        connection_id: id.clone(),
    };
    // 400, as the original's.
    let unknown = || {
        let mut e = ApiError::unknown_connection(&pck, &id);
        e.status = axum::http::StatusCode::BAD_REQUEST;
        e
    };
    if !env.store.connection_exists(&pck, &id).await? {
        return Err(unknown());
    }
    // `pre-connection-deletion` scripts run first; their failure is kept
    // in the history and does not keep the connection.
    crate::runner::run_event_scripts(
        &app,
        &env,
        &conn,
        sluice_nango_yaml::EventKind::PreConnectionDeletion,
    )
    .await;
    if !delete_one(&app, &env, &conn).await? {
        return Err(unknown());
    }
    Ok(Json(json!({ "success": true })))
}

/// Deletes connection `conn` with its records, schedules and documents;
/// `false` when there was none.
pub(crate) async fn delete_one(
    app: &App,
    env: &crate::app::EnvState,
    conn: &ConnectionRef,
) -> ApiResult<bool> {
    // Its executions stop first (a sync still running would save records
    // after the deletion); new ones wait for the deletion, then find no
    // connection.
    let _closed = env.runs.close(conn).await;
    let (pck, id) = (&conn.provider_config_key, &conn.connection_id);
    // Marked first: a deletion a crash cuts short (its schedules gone, some
    // of its records) is finished at the next start, not left half done
    // with a live connection.
    let mark = format!("connection/{pck}/{id}");
    let exists = env.store.connection_exists(pck, id).await?;
    if exists {
        env.store.put_doc(DELETIONS, &mark, &json!({})).await?;
    }
    app.scheduler.connection_deleted(env, conn).await?;
    let deleted = env.store.delete_connection(pck, id).await?;
    // Again, now that the connection is gone: a deploy, a rollback or an
    // import that read it while its records went may have scheduled it
    // again; none reads it from here on (an import that made it again
    // since keeps its own).
    app.scheduler.connection_gone(env, conn).await?;
    env.store
        .delete_doc(CONNECTION_ERRORS, &format!("{pck}/{id}"))
        .await?;
    env.connections.forget_failure(pck, id);
    if exists {
        env.store.delete_doc(DELETIONS, &mark).await?;
    }
    Ok(deleted)
}

/// At start, before the schedules load: the deletions of connections and
/// integrations a crash cut short are finished (connections first, an
/// integration's then the integration).
pub async fn finish_deletions(app: &Arc<App>) -> Result<(), crate::ServerError> {
    for env in app.envs() {
        let mut marks: Vec<(String, Value)> = Vec::new();
        loop {
            let after = marks.last().map(|(k, _)| k.clone());
            let page: Vec<(String, Value)> = env
                .store
                .docs(DELETIONS, "", after.as_deref(), 500, false)
                .await?;
            let full = page.len() == 500;
            marks.extend(page);
            if !full {
                break;
            }
        }
        let (integrations, connections): (Vec<&str>, Vec<&str>) = marks
            .iter()
            .map(|(k, _)| k.as_str())
            .partition(|k| k.starts_with("integration/"));
        for key in connections {
            if let Some((pck, id)) = key
                .strip_prefix("connection/")
                .and_then(|k| k.split_once('/'))
            {
                let conn = ConnectionRef {
                    provider_config_key: pck.to_string(),
                    connection_id: id.to_string(),
                };
                delete_one(app, env, &conn).await.map_err(|e| {
                    crate::ServerError::Deletion(format!("{key}: {}: {}", e.code, e.message))
                })?;
            }
            env.store.delete_doc(DELETIONS, key).await?;
        }
        for key in integrations {
            if let Some(unique) = key.strip_prefix("integration/") {
                super::integrations::delete_all(app, env, unique)
                    .await
                    .map_err(|e| {
                        crate::ServerError::Deletion(format!("{key}: {}: {}", e.code, e.message))
                    })?;
            }
            env.store.delete_doc(DELETIONS, key).await?;
        }
        if !marks.is_empty() {
            app.config.events.say(&format!(
                "{}: finished {} deletion(s) a stop had cut short",
                env.name(),
                marks.len()
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "`connection_id` must be a connection id (a string) or a list of them"
)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
pub struct MetadataBody {
    connection_id: OneOrMany,
    provider_config_key: String,
    metadata: Value,
}

/// `replace` (POST) or merge (PATCH) `body.metadata` into each connection.
/// A merge may make the metadata at most as large as one request could
/// set (`max_body_bytes`).
async fn write_metadata(
    app_env: &crate::app::EnvState,
    body: MetadataBody,
    replace: bool,
    max_bytes: usize,
) -> ApiResult<Json<Value>> {
    let Value::Object(metadata) = body.metadata else {
        return Err(ApiError::invalid_body("`metadata` must be an object"));
    };
    let (ids, sent) = match body.connection_id {
        OneOrMany::One(id) => (vec![id.clone()], json!(id)),
        OneOrMany::Many(ids) => (ids.clone(), json!(ids)),
    };
    if ids.is_empty() {
        return Err(ApiError::invalid_body(
            "`connection_id` must name at least one connection",
        ));
    }
    let pck = &body.provider_config_key;
    // Every connection is checked before any changes: an unknown id or a
    // merge too large leaves all of them as they were.
    for cid in &ids {
        let Some(current) = app_env.store.connection(pck, cid).await? else {
            return Err(ApiError::unknown_connection(pck, cid));
        };
        if !replace
            && sluice_runtime::connection::merge_metadata(
                &current.metadata,
                metadata.clone(),
                max_bytes,
            )
            .is_err()
        {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the metadata of connection `{cid}` would have more than {max_bytes} bytes after this update; no connection was changed"
                ),
            ));
        }
    }
    for (done, cid) in ids.iter().enumerate() {
        let result = if replace {
            app_env
                .store
                .set_metadata(pck, cid, Value::Object(metadata.clone()))
                .await
        } else {
            app_env
                .store
                .update_metadata(pck, cid, metadata.clone(), max_bytes)
                .await
        };
        // Changed since the check (deleted, or its metadata grown by a
        // script): what was already written is said.
        let changed = || {
            let mut written: Vec<&String> = ids[..done].iter().filter(|c| *c != cid).collect();
            written.sort();
            written.dedup();
            if written.is_empty() {
                return String::new();
            }
            let names: Vec<String> = written.iter().map(|c| format!("`{c}`")).collect();
            format!(
                "; this request had already changed the metadata of {}",
                names.join(", ")
            )
        };
        result.map_err(|e| match e {
            ConnectionError::NotFound { .. } => {
                let e = ApiError::unknown_connection(pck, cid);
                let message = format!("{}{}", e.message, changed());
                ApiError { message, ..e }
            }
            e @ ConnectionError::MetadataTooLarge { .. } => ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("connection `{cid}`: {e}{}", changed()),
            ),
            other => ApiError::internal(format!("{other}{}", changed())),
        })?;
    }
    Ok(Json(json!({
        "connection_id": sent,
        "provider_config_key": body.provider_config_key,
        "metadata": metadata,
    })))
}

/// `POST /connection(s)/metadata`: 201, as the original's.
pub async fn set_metadata(
    State(app): State<Arc<App>>,
    Env(env): Env,
    JsonBody(body): JsonBody<MetadataBody>,
) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    let written = write_metadata(&env, body, true, app.config.max_body_bytes).await?;
    Ok((axum::http::StatusCode::CREATED, written))
}

pub async fn update_metadata(
    State(app): State<Arc<App>>,
    Env(env): Env,
    JsonBody(body): JsonBody<MetadataBody>,
) -> ApiResult<Json<Value>> {
    write_metadata(&env, body, false, app.config.max_body_bytes).await
}

/// The legacy `POST`/`PATCH /connection/:id/metadata`: the body is the
/// metadata, the integration in the `Provider-Config-Key` header (or the
/// `provider_config_key` query parameter); answered with the metadata
/// sent, 201 for a POST, as the original's.
pub async fn legacy_metadata(
    State(app): State<Arc<App>>,
    Env(env): Env,
    method: axum::http::Method,
    headers: super::ConnectionHeaders,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<OneQuery>,
    JsonBody(metadata): JsonBody<Value>,
) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    let pck = headers
        .provider_config_key
        .or(q.provider_config_key)
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing_provider_config_key",
                "the Provider-Config-Key header (or `provider_config_key`) is required",
            )
        })?;
    let body = MetadataBody {
        connection_id: OneOrMany::One(id),
        provider_config_key: pck,
        metadata,
    };
    let replace = method == axum::http::Method::POST;
    let Json(written) = write_metadata(&env, body, replace, app.config.max_body_bytes).await?;
    let status = if replace {
        axum::http::StatusCode::CREATED
    } else {
        axum::http::StatusCode::OK
    };
    Ok((status, Json(written["metadata"].clone())))
}
