//! `GET` and `PUT /sluice/webhook-settings`: where an environment's
//! webhooks to the app go and which ones are sent, and the secret they
//! are signed with (Standard Webhooks).

use axum::Json;
use serde_json::{Value, json};

use super::{Env, JsonBody};
use crate::error::ApiResult;
use crate::webhooks::{self, SETTINGS, Settings};

fn view(s: &Settings, secret: &str) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    v["on_auth_creation"] = json!(s.on_auth_creation);
    v["on_auth_refresh_error"] = json!(s.on_auth_refresh_error);
    v["signing_secret"] = json!(secret);
    v
}

pub async fn get(Env(env): Env) -> ApiResult<Json<Value>> {
    let s = webhooks::settings(&env).await?;
    Ok(Json(view(&s, &webhooks::signing_secret(&env).await?)))
}

/// `PUT` (or `PATCH`): the settings named in the body change, the others
/// stay as they are (`null` removes a URL).
pub async fn put(
    Env(env): Env,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    // Read, merged and written one change at a time: two at once would
    // each write back what the other changed.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut merged = match serde_json::to_value(webhooks::settings(&env).await?) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let current = webhooks::signing_secret(&env).await?;
    let mut rotate = false;
    for (k, v) in body {
        match k.as_str() {
            // What GET answers can be sent back: the signing secret it
            // shows is not set here; another one is refused.
            "signing_secret" if v.as_str() == Some(current.as_str()) => {}
            "signing_secret" => {
                return Err(crate::error::ApiError::invalid_body(
                    "`signing_secret` is made by sluice, not set: send `\"rotate_signing_secret\": true` for a new one",
                ));
            }
            "rotate_signing_secret" => match v {
                Value::Bool(b) => rotate = b,
                _ => {
                    return Err(crate::error::ApiError::invalid_body(
                        "`rotate_signing_secret` must be true or false",
                    ));
                }
            },
            "primary_url" | "secondary_url" if !(v.is_string() || v.is_null()) => {
                return Err(crate::error::ApiError::invalid_body(format!(
                    "`{k}` must be a URL (a string), or null to remove it"
                )));
            }
            "on_sync_completion_always"
            | "on_sync_error"
            | "on_async_action_completion"
            | "on_auth_creation"
            | "on_auth_refresh_error"
                if !v.is_boolean() =>
            {
                return Err(crate::error::ApiError::invalid_body(format!(
                    "`{k}` must be true or false"
                )));
            }
            "primary_url"
            | "secondary_url"
            | "on_sync_completion_always"
            | "on_sync_error"
            | "on_async_action_completion"
            | "on_auth_creation"
            | "on_auth_refresh_error" => {
                merged.insert(k, v);
            }
            _ => {
                return Err(crate::error::ApiError::invalid_body(format!(
                    "unknown setting `{k}`: the settings are `primary_url`, `secondary_url`, `on_sync_completion_always`, `on_sync_error`, `on_async_action_completion`, `on_auth_creation`, `on_auth_refresh_error` and `rotate_signing_secret`"
                )));
            }
        }
    }
    let s: Settings = serde_json::from_value(Value::Object(merged)).map_err(|e| {
        crate::error::ApiError::invalid_body(format!("the request body is not valid: {e}"))
    })?;
    for url in [&s.primary_url, &s.secondary_url].into_iter().flatten() {
        if !url.is_empty() {
            webhooks::check_url(url)?;
        }
    }
    env.store.put_doc(SETTINGS, "settings", &s).await?;
    let secret = if rotate {
        let _guard = env.sync_lock(webhooks::SIGNING_SECRET).lock().await;
        webhooks::new_signing_secret(&env.store).await?
    } else {
        current
    };
    Ok(Json(view(&s, &secret)))
}

/// `GET /sluice/environment`: the environment the key names, and where its
/// providers' webhooks go (`POST /webhook/<id>/<integration>`).
pub async fn environment(
    axum::extract::State(app): axum::extract::State<std::sync::Arc<crate::app::App>>,
    headers: axum::http::HeaderMap,
    Env(env): Env,
) -> ApiResult<Json<Value>> {
    let id = env.store.id();
    let base = super::base_url(&app, &headers);
    Ok(Json(json!({
        "id": id,
        "name": env.name(),
        "webhook_url": format!("{base}/webhook/{id}/{{integration}}"),
        // What `POST /sluice/deploy` takes besides a whole project: a
        // deploy's `scope` (a CLI asks before sending one; a server
        // without this would take it for a whole project).
        "deploy_scopes": ["integration", "sync", "action"],
    })))
}

/// `GET /sluice/scheduler`: the environment's schedules, the runs going,
/// and how late (ms after their slot) its scheduled runs since the last
/// call were dispatched.
pub async fn scheduler(
    axum::extract::State(app): axum::extract::State<std::sync::Arc<crate::app::App>>,
    Env(env): Env,
) -> ApiResult<Json<Value>> {
    let mut delays = app.scheduler.dispatch_delays(&env);
    let (schedules, running) = app.scheduler.counts(&env);
    delays.sort_unstable();
    let at = |p: f64| {
        delays
            .get(((delays.len() as f64 * p) as usize).min(delays.len().saturating_sub(1)))
            .copied()
    };
    Ok(Json(json!({
        "schedules": schedules,
        "running": running,
        "dispatched": delays.len(),
        "dispatch_delay_ms": {"p50": at(0.5), "p99": at(0.99), "max": delays.last()},
    })))
}
