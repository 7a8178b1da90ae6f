//! Integrations (`/integrations`, §4.5) and environment variables.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use base64::Engine as _;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_runtime::records::ConnectionRef;
use sluice_store::Integration;

use super::connect::KeyOrSession;
use super::{ApiPath, Env, JsonBody};
use crate::app::App;
use crate::error::{ApiError, ApiResult};

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 255
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "~:.@ _-".contains(c))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationBody {
    unique_key: Option<String>,
    provider: Option<String>,
    display_name: Option<String>,
    #[serde(default, deserialize_with = "credentials_object")]
    credentials: Option<CredentialsBody>,
    webhook_secret: Option<String>,
    forward_webhooks: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scopes: Option<String>,
    webhook_secret: Option<String>,
    /// A GitHub App's (`APP`): its id, public page and private key.
    app_id: Option<String>,
    app_link: Option<String>,
    private_key: Option<String>,
}

/// `credentials` as an object only: serde would read an array into its
/// fields by position.
fn credentials_object<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<CredentialsBody>, D::Error> {
    use serde::de::Error;
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(v @ Value::Object(_)) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| D::Error::custom(format!("`credentials`: {e}"))),
        // Named by its type: the value may hold a secret.
        Some(other) => Err(D::Error::custom(format!(
            "`credentials` must be an object, got {}",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "something else",
            }
        ))),
    }
}

/// An integration as the API shows it; `auth_mode` (its provider's) is
/// the credentials' `type` when they are included. Without a display name
/// of its own it has its provider's (the catalogue's `display_name`, else
/// the provider's key).
pub(crate) fn view(
    providers: &sluice_runtime::providers::ProviderCatalog,
    i: &Integration,
    include_credentials: Option<Option<&str>>,
) -> Value {
    let display_name = i.display_name.clone().unwrap_or_else(|| {
        providers
            .get(&i.provider)
            .and_then(|p| p.definition.get("display_name"))
            .and_then(Value::as_str)
            .unwrap_or(&i.provider)
            .to_string()
    });
    let mut v = json!({
        "unique_key": i.unique_key,
        "provider": i.provider,
        "display_name": display_name,
        "forward_webhooks": i.forward_webhooks,
        "created_at": i.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "updated_at": i.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if let Some(auth_mode) = include_credentials {
        // As the original's: OAuth client credentials, or `null` for a
        // provider that has none; sluice takes a webhook secret for any
        // auth mode, shown alone when there is one.
        v["credentials"] = if auth_mode == Some("APP") {
            json!({
                "type": "APP",
                "app_id": i.oauth_client_id,
                "app_link": i.app_link,
                "private_key": i.oauth_client_secret.as_deref().map(shown_private_key),
                "webhook_secret": i.webhook_secret,
            })
        } else if auth_mode.is_some_and(|m| OAUTH_MODES.contains(&m)) {
            json!({
                "type": auth_mode,
                "client_id": i.oauth_client_id,
                "client_secret": i.oauth_client_secret,
                "scopes": i.oauth_scopes,
                "webhook_secret": i.webhook_secret,
            })
        } else if let Some(secret) = &i.webhook_secret {
            json!({ "type": auth_mode, "webhook_secret": secret })
        } else {
            Value::Null
        };
    }
    v
}

/// A GitHub App's private key as the original stores and shows it: the
/// base64 of its PEM (one stored as PEM, before sluice kept it so, is
/// encoded when shown).
fn shown_private_key(stored: &str) -> String {
    if stored.contains("-----BEGIN ") {
        base64::engine::general_purpose::STANDARD.encode(stored)
    } else {
        stored.to_string()
    }
}

/// The longest `webhook_secret`, as the original's.
const MAX_WEBHOOK_SECRET: usize = 255;
/// The longest client secret, private key (a GitHub App's, or a provider
/// whose client secret is a key) and scope list: keys of 4096 bits and
/// long lists fit many times over.
const MAX_CREDENTIAL: usize = 16 << 10;
/// The longest `app_link` (a URL).
const MAX_APP_LINK: usize = 2 << 10;

/// Refuses a credential field longer than its bound in UTF-16 units (a
/// JavaScript string's length), as the original's validation does (400
/// `invalid_body`, zod's `too_big` in `errors`):
/// a request body may be far longer, and these are decrypted and shown.
fn check_sizes(body: &IntegrationBody) -> ApiResult<()> {
    let too_long = |path: &[&str], value: Option<&String>, max: usize| -> ApiResult<()> {
        match value {
            Some(v) if v.len() > max && v.encode_utf16().count() > max => {
                let message = format!("`{}` must be at most {max} characters", path.join("."));
                let mut e = ApiError::invalid_field(path, &message);
                let mut extra = serde_json::Map::new();
                extra.insert(
                    "errors".into(),
                    json!([{"code": "too_big", "maximum": max, "message": message, "path": path}]),
                );
                e.extra = Some(Box::new(extra));
                Err(e)
            }
            _ => Ok(()),
        }
    };
    too_long(
        &["webhook_secret"],
        body.webhook_secret.as_ref(),
        MAX_WEBHOOK_SECRET,
    )?;
    if let Some(c) = &body.credentials {
        too_long(
            &["credentials", "webhook_secret"],
            c.webhook_secret.as_ref(),
            MAX_WEBHOOK_SECRET,
        )?;
        too_long(
            &["credentials", "client_secret"],
            c.client_secret.as_ref(),
            MAX_CREDENTIAL,
        )?;
        too_long(
            &["credentials", "private_key"],
            c.private_key.as_ref(),
            MAX_CREDENTIAL,
        )?;
        too_long(
            &["credentials", "scopes"],
            c.scopes.as_ref(),
            MAX_CREDENTIAL,
        )?;
        too_long(
            &["credentials", "app_link"],
            c.app_link.as_ref(),
            MAX_APP_LINK,
        )?;
    }
    Ok(())
}

/// `s` as JavaScript's `encodeURIComponent` gives it (as the original
/// puts a unique key into its webhook URL).
fn encode_uri_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The auth modes whose integrations hold OAuth client credentials.
const OAUTH_MODES: [&str; 4] = ["OAUTH1", "OAUTH2", "TBA", "MCP_OAUTH2"];

/// How an MCP server's OAuth client comes to be (`client_registration`):
/// `dynamic` (registered by sluice when the integration is created,
/// RFC 7591), else `static` (the app's own, given as OAuth2's).
fn registers_itself(definition: &serde_json::Map<String, Value>) -> bool {
    definition
        .get("client_registration")
        .and_then(Value::as_str)
        == Some("dynamic")
        && definition.contains_key("registration_url")
}

/// Checks an integration's `credentials` as the original's API does: of
/// the provider's auth mode (`type`), and for OAuth a `client_id` and a
/// `client_secret`, and `scopes` as a comma-separated list.
fn check_credentials(auth_mode: Option<&str>, c: &CredentialsBody) -> ApiResult<()> {
    let mode = auth_mode.unwrap_or("NONE");
    let Some(kind) = c.kind.as_deref() else {
        return Err(ApiError::invalid_body(format!(
            "`credentials.type` is required: the provider's auth mode, `{mode}`"
        )));
    };
    if kind != mode {
        return Err(ApiError::invalid_body(format!(
            "incompatible credentials auth type `{kind}` and provider auth `{mode}`"
        )));
    }
    if kind != "APP" && (c.app_id.is_some() || c.app_link.is_some() || c.private_key.is_some()) {
        return Err(ApiError::invalid_body(format!(
            "`app_id`, `app_link` and `private_key` are for GitHub App integrations; provider auth is `{mode}`"
        )));
    }
    if kind == "APP" {
        if c.client_id.is_some() || c.client_secret.is_some() || c.scopes.is_some() {
            return Err(ApiError::invalid_body(
                "a GitHub App integration takes `app_id`, `app_link` and `private_key`, not OAuth client credentials",
            ));
        }
        // Each given is checked (an update may change one, or only the
        // webhook secret); a connection's token needs all three.
        if let Some(id) = c.app_id.as_deref()
            && (id.is_empty() || id.len() > 255)
        {
            return Err(ApiError::invalid_body(
                "`credentials.app_id` must be 1 to 255 characters",
            ));
        }
        if let Some(link) = c.app_link.as_deref()
            && url::Url::parse(link).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
        {
            return Err(ApiError::invalid_body(
                "`credentials.app_link` must be the app's public page, https://github.com/apps/<name>",
            ));
        }
        if let Some(key) = c.private_key.as_deref() {
            let pem = crate::github_app::private_key_pem(key).map_err(ApiError::invalid_body)?;
            crate::github_app::app_jwt("check", &pem, 0)
                .map_err(|e| ApiError::invalid_body(format!("`credentials.private_key`: {e}")))?;
        }
        return Ok(());
    }
    if !OAUTH_MODES.contains(&kind) {
        if c.client_id.is_some() || c.client_secret.is_some() || c.scopes.is_some() {
            return Err(ApiError::invalid_body(format!(
                "`client_id`, `client_secret` and `scopes` are for OAuth integrations; provider auth is `{mode}`"
            )));
        }
        return Ok(());
    }
    // An MCP server's client may be registered by sluice (none given),
    // and may be public (no secret).
    let mcp = kind == "MCP_OAUTH2";
    match c.client_id.as_deref() {
        None if mcp => {}
        Some(id) if !id.is_empty() && id.len() <= 255 => {}
        _ => {
            return Err(ApiError::invalid_body(
                "`credentials.client_id` is required (1 to 255 characters)",
            ));
        }
    }
    if !mcp && c.client_secret.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::invalid_body(
            "`credentials.client_secret` is required",
        ));
    }
    let scope_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || ":/_.-".contains(c))
    };
    if let Some(scopes) = c.scopes.as_deref()
        && !scopes.is_empty()
        && !scopes.split(',').all(scope_ok)
    {
        return Err(ApiError::invalid_body(format!(
            "`credentials.scopes` must be scopes separated by commas (letters, digits and `:/_.-`), got `{scopes}`"
        )));
    }
    Ok(())
}

/// A `display_name` of 1 to 255 characters, as the original's.
fn check_display_name(body: &IntegrationBody) -> ApiResult<()> {
    match body.display_name.as_deref() {
        Some(d) if d.is_empty() || d.chars().count() > 255 => Err(ApiError::invalid_field(
            &["display_name"],
            "`display_name` must be 1 to 255 characters",
        )),
        _ => Ok(()),
    }
}

fn apply(i: &mut Integration, body: IntegrationBody) {
    if let Some(d) = body.display_name {
        i.display_name = Some(d);
    }
    if let Some(c) = body.credentials {
        if c.app_id.is_some() {
            i.oauth_client_id = c.app_id;
        }
        if let Some(key) = c.private_key {
            // As the original keeps it: the base64 of the PEM (checked by
            // `check_credentials`; the server reads either).
            i.oauth_client_secret = Some(match crate::github_app::private_key_pem(&key) {
                Ok(pem) => base64::engine::general_purpose::STANDARD.encode(pem),
                Err(_) => key,
            });
        }
        if c.app_link.is_some() {
            i.app_link = c.app_link;
        }
        if c.client_id.is_some() {
            i.oauth_client_id = c.client_id;
        }
        if c.client_secret.is_some() {
            i.oauth_client_secret = c.client_secret;
        }
        if c.scopes.is_some() {
            i.oauth_scopes = c.scopes;
        }
        if c.webhook_secret.is_some() {
            i.webhook_secret = c.webhook_secret;
        }
    }
    if body.webhook_secret.is_some() {
        i.webhook_secret = body.webhook_secret;
    }
    if let Some(f) = body.forward_webhooks {
        i.forward_webhooks = f;
    }
}

pub async fn create(
    State(app): State<Arc<App>>,
    headers: axum::http::HeaderMap,
    Env(env): Env,
    JsonBody(body): JsonBody<IntegrationBody>,
) -> ApiResult<Json<Value>> {
    let key = body
        .unique_key
        .clone()
        .ok_or_else(|| ApiError::invalid_body("`unique_key` is required"))?;
    if !valid_key(&key) {
        return Err(ApiError::invalid_body(format!(
            "`unique_key` must match ^[a-zA-Z0-9~:.@ _-]+$ (at most 255), got `{key}`"
        )));
    }
    let provider = body
        .provider
        .clone()
        .ok_or_else(|| ApiError::invalid_body("`provider` is required"))?;
    let Some(definition) = app.providers.get(&provider) else {
        return Err(ApiError::invalid_field(
            &["provider"],
            &format!(
                "unknown provider `{provider}`: it is not in the server's providers catalogue (the built-in one, the original's when the server starts in a folder with `nango` installed, and --providers FILE)"
            ),
        ));
    };
    check_display_name(&body)?;
    check_sizes(&body)?;
    if let Some(c) = &body.credentials {
        check_credentials(definition.auth_mode.as_deref(), c)?;
    }
    let client_given = body
        .credentials
        .as_ref()
        .is_some_and(|c| c.client_id.is_some() || c.client_secret.is_some());
    let mcp = definition.auth_mode.as_deref() == Some("MCP_OAUTH2");
    let registering = mcp && registers_itself(&definition.definition);
    if registering && client_given {
        return Err(ApiError::invalid_body(format!(
            "provider `{provider}` registers sluice's OAuth client itself when the integration is created: give no `client_id` or `client_secret`"
        )));
    }
    if mcp && !registering && !client_given {
        return Err(ApiError::invalid_body(format!(
            "provider `{provider}` takes the app's own OAuth client: `credentials: {{type: MCP_OAUTH2, client_id, client_secret}}`"
        )));
    }
    let taken = || {
        // The original's answer, naming the field as it does.
        ApiError::invalid_field(&["uniqueKey"], "Unique key already exists")
    };
    // The MCP server registers a client for this integration (as the
    // original's), redirected to this server's OAuth callback; asked
    // before the creation lock is taken (a slow server holds up no other
    // creation), the key checked free first and again below.
    let registered = if registering {
        if env.store.integration(&key).await?.is_some() {
            return Err(taken());
        }
        Some(register(&app, &env, &headers, &definition.definition, &provider).await?)
    } else {
        None
    };
    // One creator at a time: two requests for the same key must not both
    // find it free and both answer 200, the second overwriting the first.
    let _one_creator = env.integrations_created.lock().await;
    if env.store.integration(&key).await?.is_some() {
        return Err(taken());
    }
    let now = Utc::now();
    let mut i = Integration {
        unique_key: key,
        provider,
        display_name: None,
        oauth_client_id: None,
        oauth_client_secret: None,
        oauth_scopes: None,
        webhook_secret: None,
        forward_webhooks: true,
        app_link: None,
        registered_redirect: None,
        created_at: now,
        updated_at: now,
    };
    apply(&mut i, body);
    if let Some((id, secret, redirect)) = registered {
        i.oauth_client_id = Some(id);
        i.oauth_client_secret = Some(secret.unwrap_or_default());
        i.registered_redirect = Some(redirect);
    }
    // A deletion of an integration of this key that failed half way (a
    // store error) left its mark: this new one must not be deleted at the
    // next start.
    env.store
        .delete_doc(
            super::connections::DELETIONS,
            &format!("integration/{}", i.unique_key),
        )
        .await?;
    env.store.put_integration(&i).await?;
    Ok(Json(json!({ "data": view(&app.providers, &i, None) })))
}

/// A client registered with an MCP server for a new integration of
/// `provider`: its id, its secret if it has one, and the redirect it was
/// registered with (`--public-url`'s callback, else the one this
/// request's host makes, which the browser must then reach the server
/// by).
async fn register(
    app: &App,
    env: &crate::app::EnvState,
    headers: &axum::http::HeaderMap,
    definition: &serde_json::Map<String, Value>,
    provider: &str,
) -> ApiResult<(String, Option<String>, String)> {
    let base = super::base_url(app, headers);
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(ApiError::invalid_body(
            "the MCP server must be told where users come back to, and this request names no host: start the server with --public-url",
        ));
    }
    let callback = format!("{base}/oauth/callback");
    let name = format!(
        "sluice - {} - {}",
        env.store.name(),
        definition
            .get("display_name")
            .and_then(Value::as_str)
            .unwrap_or(provider)
    );
    let (id, secret) = env
        .connections
        .register_client(definition, &callback, &name)
        .await
        .map_err(|e| {
            ApiError::bad_request(
                "client_registration_failed",
                format!("the MCP server registered no OAuth client: {e}"),
            )
        })?;
    Ok((id, secret, callback))
}

/// `GET /integrations`, with the environment's secret key or a connect
/// session's token (the Connect UI's list: the integrations the session
/// allows).
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    auth: KeyOrSession,
) -> ApiResult<Json<Value>> {
    // A session naming its integrations reads those only (each decrypts
    // its secrets, which a listing does not show); a key, or a session of
    // every integration, reads them all.
    let all = match &auth {
        KeyOrSession::Session(env, session) if session.allowed_integrations.is_some() => {
            let mut keys: Vec<&String> = session.allowed_integrations.iter().flatten().collect();
            keys.sort();
            keys.dedup();
            let mut found = Vec::with_capacity(keys.len());
            for key in keys {
                if let Some(i) = env.store.integration(key).await? {
                    found.push(i);
                }
            }
            found
        }
        _ => auth.env().store.integrations().await?,
    };
    Ok(Json(json!({
        "data": all
            .iter()
            .filter(|i| auth.shows(&i.unique_key))
            .map(|i| view(&app.providers, i, None))
            .collect::<Vec<_>>()
    })))
}

/// `GET /integrations/:key?include=webhook&include=credentials` (also
/// `include=webhook,credentials` and `include[]=…`).
pub async fn get(
    State(app): State<Arc<App>>,
    headers: axum::http::HeaderMap,
    Env(env): Env,
    ApiPath(key): ApiPath<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let mut credentials = false;
    let mut webhook = false;
    for (k, v) in url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        if k != "include" && k != "include[]" {
            continue;
        }
        for word in v.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "credentials" => credentials = true,
                "webhook" => webhook = true,
                other => {
                    return Err(ApiError::bad_request(
                        "invalid_query_params",
                        format!("`include` takes `webhook` and `credentials`, not `{other}`"),
                    ));
                }
            }
        }
    }
    let i = env
        .store
        .integration(&key)
        .await?
        .ok_or_else(|| ApiError::unknown_integration_key(&key))?;
    let auth_mode = app
        .providers
        .get(&i.provider)
        .and_then(|p| p.auth_mode.clone());
    let mut data = view(
        &app.providers,
        &i,
        credentials.then_some(auth_mode.as_deref()),
    );
    if webhook {
        // Where its provider sends webhooks; `null` for a provider without
        // a webhook routing script, which sends none, as the original's.
        let routed = app
            .providers
            .get(&i.provider)
            .is_some_and(|p| p.definition.contains_key("webhook_routing_script"));
        data["webhook_url"] = if routed {
            let base = super::base_url(&app, &headers);
            json!(format!(
                "{base}/webhook/{}/{}",
                env.store.id(),
                encode_uri_component(&key)
            ))
        } else {
            Value::Null
        };
    }
    Ok(Json(json!({ "data": data })))
}

pub async fn update(
    State(app): State<Arc<App>>,
    Env(env): Env,
    ApiPath(key): ApiPath<String>,
    JsonBody(body): JsonBody<IntegrationBody>,
) -> ApiResult<Json<Value>> {
    // One at a time with a deletion's mark (`app::IntegrationLock`): read,
    // change and write must not put back an integration being deleted.
    let lock = env.integration_lock(&key);
    let _not_deleted_meanwhile = lock.kept.write().await;
    let mut i = env
        .store
        .integration(&key)
        .await?
        .ok_or_else(|| ApiError::unknown_integration_key(&key))?;
    if being_deleted(&env, &key).await? {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "integration_being_deleted",
            format!("the integration `{key}` is being deleted: it cannot change"),
        ));
    }
    if body.provider.as_ref().is_some_and(|p| *p != i.provider) {
        return Err(ApiError::invalid_body(
            "the provider of an integration cannot change; create another integration",
        ));
    }
    // Its connections, records and deployed scripts are under its key.
    if body.unique_key.as_ref().is_some_and(|k| *k != key) {
        return Err(ApiError::invalid_body(
            "the `unique_key` of an integration cannot change; create another integration",
        ));
    }
    check_display_name(&body)?;
    check_sizes(&body)?;
    if let Some(c) = &body.credentials {
        let provider = app.providers.get(&i.provider);
        let auth_mode = provider.and_then(|p| p.auth_mode.clone());
        check_credentials(auth_mode.as_deref(), c)?;
        // The original's refusal: a client sluice registered stays.
        if i.registered_redirect.is_some() && (c.client_id.is_some() || c.client_secret.is_some()) {
            return Err(ApiError::invalid_body(
                "Client credentials can't be updated for dynamic client registration",
            ));
        }
    }
    apply(&mut i, body);
    i.updated_at = Utc::now();
    env.store.put_integration(&i).await?;
    Ok(Json(json!({ "data": view(&app.providers, &i, None) })))
}

/// Deletes an integration and, as the original does, its connections
/// (with their records and schedules; their `pre-connection-deletion`
/// scripts do not run, as they do not in the original). Marked first: a
/// deletion a crash cuts short is finished at the next start, not left
/// with some of its connections.
pub async fn delete(
    State(app): State<Arc<App>>,
    Env(env): Env,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    if !deletion(&app, &env, &key, true).await? {
        return Err(ApiError::unknown_integration_key(&key));
    }
    Ok(Json(json!({ "success": true })))
}

/// Whether integration `key` has a deletion mark: its deletion is under
/// way, or stopped half way (finished at the next start).
async fn being_deleted(env: &crate::app::EnvState, key: &str) -> ApiResult<bool> {
    Ok(env
        .store
        .doc::<Value>(super::connections::DELETIONS, &format!("integration/{key}"))
        .await?
        .is_some())
}

/// Deletes integration `key` with its connections, marked (flushed) first
/// and unmarked last; `false` when there was none.
pub(crate) async fn delete_all(
    app: &App,
    env: &crate::app::EnvState,
    key: &str,
) -> ApiResult<bool> {
    deletion(app, env, key, false).await
}

/// [`delete_all`]; with `existing`, nothing is done (`false`) unless the
/// integration exists when the deletion begins. Only the mark is written
/// under the integration's exclusive lock (`app::IntegrationLock`): the
/// connections of other integrations are created meanwhile, and its own
/// are refused (409 `integration_being_deleted`) rather than held up.
async fn deletion(
    app: &App,
    env: &crate::app::EnvState,
    key: &str,
    existing: bool,
) -> ApiResult<bool> {
    let lock = env.integration_lock(key);
    let _one_deletion = lock.deletion.lock().await;
    let mark = format!("integration/{key}");
    {
        let _no_connection_created_meanwhile = lock.kept.write().await;
        if existing && env.store.integration(key).await?.is_none() {
            return Ok(false);
        }
        env.store
            .put_doc(super::connections::DELETIONS, &mark, &json!({}))
            .await?;
    }
    // Every connection stored from here on was written before the mark
    // (a creation that comes after it is refused): listed here.
    for cid in env.store.connection_ids(key).await? {
        let conn = ConnectionRef {
            provider_config_key: key.to_string(),
            connection_id: cid,
        };
        super::connections::delete_one(app, env, &conn).await?;
    }
    let deleted = env.store.delete_integration(key).await?;
    env.store
        .delete_doc(super::connections::DELETIONS, &mark)
        .await?;
    Ok(deleted)
}

pub async fn get_variables(Env(env): Env) -> ApiResult<Json<Value>> {
    let vars = env.store.variables().await?;
    Ok(Json(Value::Array(
        vars.into_iter()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect(),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    name: String,
    value: String,
}

/// The original's bounds on an environment's variables.
const MAX_VARIABLES: usize = 100;
const MAX_VARIABLE_NAME: usize = 256;
const MAX_VARIABLE_VALUE: usize = 4000;

pub async fn put_variables(
    Env(env): Env,
    super::JsonList(vars): super::JsonList<Variable>,
) -> ApiResult<Json<Value>> {
    let vars: Vec<(String, String)> = vars.into_iter().map(|v| (v.name, v.value)).collect();
    if vars.iter().any(|(n, _)| n.trim().is_empty()) {
        return Err(ApiError::invalid_body(
            "every variable needs a non-blank `name`",
        ));
    }
    if vars.len() > MAX_VARIABLES {
        return Err(ApiError::invalid_body(format!(
            "{} variables given; an environment has at most {MAX_VARIABLES}",
            vars.len()
        )));
    }
    for (name, value) in &vars {
        let shown: String = name.chars().take(40).collect();
        if name.chars().count() > MAX_VARIABLE_NAME {
            return Err(ApiError::invalid_body(format!(
                "variable `{shown}…`: a name has at most {MAX_VARIABLE_NAME} characters"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(ApiError::invalid_body(format!(
                "variable `{}`: a name has no control characters",
                shown.escape_debug()
            )));
        }
        if value.chars().count() > MAX_VARIABLE_VALUE {
            return Err(ApiError::invalid_body(format!(
                "variable `{shown}`: a value has at most {MAX_VARIABLE_VALUE} characters"
            )));
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some((name, _)) = vars.iter().find(|(n, _)| !seen.insert(n.as_str())) {
        return Err(ApiError::invalid_body(format!(
            "variable `{name}` is given twice"
        )));
    }
    // The store and memory change together, one request at a time.
    let _one_at_a_time = env.config_lock.lock().await;
    env.store.set_variables(vars.clone()).await?;
    env.set_variables(vars);
    Ok(Json(json!({ "success": true })))
}
