//! The older clients' `/config` routes (`@nangohq/node` up to 0.62.1:
//! `getIntegration('key', includeCredentials)`, `createIntegration(provider,
//! key, credentials)` and `updateIntegration(…)`, which some apps still
//! call), answered in their `{config}` / `{configs}` shapes and done by the
//! `/integrations` handlers, so both routes keep the same rules.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::integrations;
use super::{ApiPath, Env, JsonBody};
use crate::app::App;
use crate::error::{ApiError, ApiResult};

/// `POST`/`PUT /config`: the original's body (the node client spreads the
/// credentials it is given into it).
#[derive(Deserialize)]
pub struct LegacyBody {
    provider: Option<String>,
    provider_config_key: Option<String>,
    oauth_client_id: Option<String>,
    oauth_client_secret: Option<String>,
    oauth_scopes: Option<Value>,
    app_link: Option<String>,
    /// The original's CUSTOM-mode credentials, which sluice does not take:
    /// refused rather than dropped.
    custom: Option<Value>,
}

fn refused(code: &str, message: &str) -> ApiError {
    ApiError::bad_request(code, message)
}

/// The `/integrations` body the legacy one means, for integration `key`
/// of `provider` (whose auth mode says which credentials these are).
fn integration_body(
    app: &App,
    key: &str,
    provider: &str,
    b: &LegacyBody,
) -> ApiResult<integrations::IntegrationBody> {
    let mode = app
        .providers
        .get(provider)
        .and_then(|p| p.auth_mode.clone())
        .unwrap_or_default();
    // As the original stores them: commas or spaces between, none empty.
    let scopes = match &b.oauth_scopes {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            s.split([',', ' '])
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .collect::<Vec<_>>()
                .join(","),
        )
        .filter(|s| !s.is_empty()),
        Some(_) => {
            return Err(refused(
                "invalid_oauth_scopes",
                "`oauth_scopes` is a comma-separated string",
            ));
        }
    };
    let given = b.oauth_client_id.is_some()
        || b.oauth_client_secret.is_some()
        || scopes.is_some()
        || b.app_link.is_some();
    let mut body = json!({"unique_key": key, "provider": provider});
    if given {
        body["credentials"] = if mode == "APP" {
            json!({"type": "APP", "app_id": b.oauth_client_id, "app_link": b.app_link,
                   "private_key": b.oauth_client_secret})
        } else {
            json!({"type": mode, "client_id": b.oauth_client_id,
                   "client_secret": b.oauth_client_secret, "scopes": scopes})
        };
        // Absent, not null: an update changes only what it names.
        if let Some(c) = body["credentials"].as_object_mut() {
            c.retain(|_, v| !v.is_null());
        }
    }
    serde_json::from_value(body).map_err(|e| ApiError::invalid_body(e.to_string()))
}

/// The key and provider a legacy body must name, with the original's
/// codes; the provider must be in the catalogue.
fn named(app: &App, b: &LegacyBody) -> ApiResult<(String, String)> {
    if b.custom.as_ref().is_some_and(|c| !c.is_null()) {
        return Err(refused(
            "invalid_body",
            "`custom` (CUSTOM-mode app credentials) is not taken by sluice",
        ));
    }
    let key = b
        .provider_config_key
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            refused(
                "missing_provider_config",
                "Missing Provider Config unique key (provider_config_key)",
            )
        })?;
    let provider = b
        .provider
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            refused(
                "missing_provider_template",
                "Missing Provider Template (provider)",
            )
        })?;
    if app.providers.get(&provider).is_none() {
        return Err(refused(
            "unknown_provider_template",
            &format!(
                "Unknown provider `{provider}`: it is not in the server's providers catalogue"
            ),
        ));
    }
    Ok((key, provider))
}

/// The original's 400 for an integration the environment does not have.
fn unknown_config(key: &str) -> ApiError {
    refused(
        "unknown_provider_config",
        &format!("Integration `{key}` does not exist in this environment"),
    )
}

/// `POST /config`: `{config: {unique_key, provider}}`.
pub async fn create(
    State(app): State<Arc<App>>,
    headers: axum::http::HeaderMap,
    Env(env): Env,
    JsonBody(b): JsonBody<LegacyBody>,
) -> ApiResult<Json<Value>> {
    let (key, provider) = named(&app, &b)?;
    // The original's checks and codes, before anything is made.
    let mode = app
        .providers
        .get(&provider)
        .and_then(|p| p.auth_mode.clone())
        .unwrap_or_default();
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let missing = match mode.as_str() {
        "OAUTH1" | "OAUTH2" if !set(&b.oauth_client_id) => {
            Some(("missing_client_id", "Missing Client ID (oauth_client_id)"))
        }
        "OAUTH1" | "OAUTH2" if !set(&b.oauth_client_secret) => Some((
            "missing_client_secret",
            "Missing Client Secret (oauth_client_secret)",
        )),
        "APP" if !set(&b.oauth_client_id) => {
            Some(("missing_app_id", "Missing App ID (oauth_client_id)"))
        }
        "APP" if !set(&b.oauth_client_secret) => Some((
            "missing_app_secret",
            "Missing App private key (oauth_client_secret)",
        )),
        _ => None,
    };
    if let Some((code, message)) = missing {
        return Err(refused(code, message));
    }
    if env.store.integration(&key).await?.is_some() {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "duplicate_provider_config",
            format!("There is already an integration `{key}` in this environment"),
        ));
    }
    let body = integration_body(&app, &key, &provider, &b)?;
    let _created = integrations::create(State(app), headers, Env(env), JsonBody(body)).await?;
    Ok(Json(
        json!({"config": {"unique_key": key, "provider": provider}}),
    ))
}

/// `PUT /config`: `{config: {unique_key, provider}}`.
pub async fn update(
    State(app): State<Arc<App>>,
    Env(env): Env,
    JsonBody(b): JsonBody<LegacyBody>,
) -> ApiResult<Json<Value>> {
    let (key, provider) = named(&app, &b)?;
    if env.store.integration(&key).await?.is_none() {
        return Err(unknown_config(&key));
    }
    let body = integration_body(&app, &key, &provider, &b)?;
    let _updated =
        integrations::update(State(app), Env(env), ApiPath(key.clone()), JsonBody(body)).await?;
    Ok(Json(
        json!({"config": {"unique_key": key, "provider": provider}}),
    ))
}

/// `GET /config`: `{configs: [...]}`, each as `GET /integrations` lists it.
pub async fn list(State(app): State<Arc<App>>, Env(env): Env) -> ApiResult<Json<Value>> {
    let all = env.store.integrations().await?;
    Ok(Json(json!({
        "configs": all.iter().map(|i| integrations::view(&app.providers, i, None)).collect::<Vec<_>>()
    })))
}

/// `GET /config/:key?include_creds=true`: `{config: {unique_key, provider,
/// syncs, actions}}`, with the credentials `GET /integrations/:key?
/// include=credentials` shows, the auth mode and the connection count when
/// asked.
pub async fn get(
    State(app): State<Arc<App>>,
    Env(env): Env,
    ApiPath(key): ApiPath<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let with_credentials = url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .any(|(k, v)| k == "include_creds" && v == "true");
    let i = env
        .store
        .integration(&key)
        .await?
        .ok_or_else(|| unknown_config(&key))?;
    let provider = app.providers.get(&i.provider);
    let deployed = env.deployment();
    let declared = deployed.as_ref().and_then(|d| {
        d.catalog
            .config
            .integrations
            .iter()
            .find(|c| c.provider_config_key == key)
            .cloned()
    });
    let when = deployed.as_ref().map(|d| {
        d.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    });
    let syncs: Vec<Value> = declared
        .iter()
        .flat_map(|c| c.distinct_syncs())
        .map(|s| {
            json!({"name": s.name, "created_at": when, "updated_at": when,
                   "description": if s.description.is_empty() { None } else { Some(&s.description) }})
        })
        .collect();
    let actions: Vec<Value> = declared
        .iter()
        .flat_map(|c| c.actions.iter())
        .map(|a| json!({"name": a.name, "created_at": when, "updated_at": when}))
        .collect();
    let mut config = json!({
        "unique_key": i.unique_key,
        "provider": i.provider,
        "syncs": syncs,
        "actions": actions,
    });
    if with_credentials {
        let connections = env.store.connection_ids(&key).await?.len();
        let auth_mode = provider.and_then(|p| p.auth_mode.clone());
        // What `GET /integrations/:key?include=credentials` shows, and no
        // more (a provider of no OAuth client shows none).
        let shown = integrations::view(&app.providers, &i, Some(auth_mode.as_deref()));
        let c = &shown["credentials"];
        let app_mode = auth_mode.as_deref() == Some("APP");
        let field = |k: &str| c.get(k).cloned().unwrap_or(Value::Null);
        config["client_id"] = field(if app_mode { "app_id" } else { "client_id" });
        config["client_secret"] = field(if app_mode {
            "private_key"
        } else {
            "client_secret"
        });
        config["scopes"] = field("scopes");
        config["app_link"] = field("app_link");
        config["webhook_secret"] = field("webhook_secret");
        config["auth_mode"] = json!(auth_mode);
        config["created_at"] = json!(
            i.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        config["docs"] = provider
            .and_then(|p| p.definition.get("docs").cloned())
            .unwrap_or(Value::Null);
        config["connection_count"] = json!(connections);
    }
    Ok(Json(json!({ "config": config })))
}

/// `DELETE /config/:key`: as `DELETE /integrations/:key` (its connections
/// go with it), `{success: true}`; the original's 404 `not_found` for an
/// unknown one.
pub async fn delete(
    State(app): State<Arc<App>>,
    Env(env): Env,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    integrations::delete(State(app), Env(env), ApiPath(key)).await
}
