//! `POST /action/trigger` (§4.2), sync and async (`X-Async`), and
//! `GET /action/:id` for async results.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sluice_runtime::Report;
use sluice_runtime::records::ConnectionRef;

use super::{ApiPath, ConnectionHeaders, Env, JsonBody};
use crate::app::{App, EnvState};
use crate::error::{ApiError, ApiResult};
use crate::runner::{self, ASYNC_ACTIONS, AsyncAction};

/// Most retries an async action may ask for (the original's limit).
const MAX_RETRIES: u32 = 5;

#[derive(Deserialize)]
pub struct TriggerBody {
    action_name: Option<String>,
    /// As sent: it is only passed on to the script (parsed, it would
    /// take tens of times its bytes). None: `null`, or not given.
    #[serde(default)]
    input: Option<Box<RawValue>>,
}

/// `text`, if serde_json would parse it into a value (see
/// [`crate::budget::check_json`]), `at` naming where it is in the body in
/// the error.
fn checked(text: Box<RawValue>, at: &str) -> ApiResult<Box<RawValue>> {
    crate::budget::check_json(text.get().as_bytes())
        .map_err(|e| ApiError::invalid_body(format!("the request body is not valid: {at}{e}")))?;
    Ok(text)
}

/// A whole body as an action's input, kept as its text: 400 naming the
/// problem when it is not JSON.
pub fn parse_input(bytes: &[u8]) -> ApiResult<Box<RawValue>> {
    // Checked first, for the errors a value parse gives.
    crate::budget::check_json(bytes)
        .map_err(|e| ApiError::invalid_body(format!("the request body is not valid: {e}")))?;
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_body(format!("the request body is not valid: {e}")))
}

/// Runs action `name` for a connection now ([`runner::run_action`]).
pub async fn run_now(
    app: &App,
    env: &EnvState,
    conn: &ConnectionRef,
    name: &str,
    input: Option<Box<RawValue>>,
) -> ApiResult<Report> {
    runner::run_action(app, env, conn, name, input).await
}

fn legacy(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

pub async fn trigger(
    State(app): State<Arc<App>>,
    Env(env): Env,
    conn_headers: ConnectionHeaders,
    headers: HeaderMap,
    JsonBody(body): JsonBody<TriggerBody>,
) -> ApiResult<Response> {
    // `null` when not given, as a value's default was.
    let input = match body.input {
        Some(text) => checked(text, "at `input`: ")?,
        None => RawValue::NULL.to_owned(),
    };
    let Some(action) = body.action_name.filter(|a| !a.is_empty()) else {
        return Ok(legacy("Missing action name"));
    };
    let Some(cid) = conn_headers.connection_id else {
        return Ok(legacy("Missing connection id"));
    };
    let Some(pck) = conn_headers.provider_config_key else {
        return Ok(legacy("Missing provider config key"));
    };
    let conn = ConnectionRef {
        provider_config_key: pck,
        connection_id: cid,
    };
    run(&app, &env, conn, action, Some(input), &headers).await
}

/// Runs an action for `POST /action/trigger` and an action's `/v1`
/// endpoint: at once (200 with its output), or with `X-Async: true` queued
/// durably (202, `Location`, `X-Max-Retries`).
pub async fn run(
    app: &Arc<App>,
    env: &Arc<crate::app::EnvState>,
    conn: ConnectionRef,
    action: String,
    input: Option<Box<RawValue>>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let is_async = match headers.get("x-async") {
        None => false,
        Some(v) => {
            // zod's `stringbool`, as the original reads it.
            let v = v.to_str().map(str::trim).unwrap_or("(not text)");
            let is = |words: &[&str]| words.iter().any(|t| v.eq_ignore_ascii_case(t));
            if is(&["true", "1", "yes", "on", "y", "enabled"]) {
                true
            } else if is(&["false", "0", "no", "off", "n", "disabled"]) {
                false
            } else {
                // A misspelt value ran the action synchronously.
                return Err(ApiError::bad_request(
                    "invalid_headers",
                    format!("`X-Async` is `true` or `false`, not `{v}`"),
                ));
            }
        }
    };
    if !is_async {
        let report = run_now(app, env, &conn, &action, input).await?;
        return match report.outcome {
            Ok(output) => Ok(Json(output.unwrap_or(Value::Null)).into_response()),
            Err(e) => Err(runner::failure_error(&e)),
        };
    }
    let max_retries = match headers.get("x-max-retries") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|n| *n <= MAX_RETRIES)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_headers",
                    format!("X-Max-Retries must be a number from 0 to {MAX_RETRIES}"),
                )
            })?,
    };
    // Checked now, so a bad request is refused instead of failing later;
    // the connection first, 400 as the original's.
    let Some(stored) = env
        .store
        .connection(&conn.provider_config_key, &conn.connection_id)
        .await?
    else {
        let mut e = ApiError::unknown_connection(&conn.provider_config_key, &conn.connection_id);
        e.status = axum::http::StatusCode::BAD_REQUEST;
        return Err(e);
    };
    let catalog = env.catalog()?;
    if catalog
        .action_config(&conn.provider_config_key, &action)
        .is_none()
        && catalog
            .script(
                &conn.provider_config_key,
                &action,
                sluice_runtime::ScriptKind::Action,
            )
            .is_none()
    {
        return Err(ApiError::not_found(
            "not_found",
            format!(
                "integration `{}` has no action `{action}`",
                conn.provider_config_key
            ),
        ));
    }
    // An input its run could never find room to validate is refused now,
    // not failed later.
    if let Some(text) = &input
        && catalog
            .action_config(&conn.provider_config_key, &action)
            .is_some_and(|a| a.input.is_some())
    {
        crate::budget::check_parsed_share(
            &app.config,
            crate::budget::parse_cost(text.get().as_bytes()),
            "this action's input",
        )?;
    }
    // A place in the environment's queue, before anything is stored.
    let bytes = runner::input_bytes(&input);
    if bytes > app.config.max_async_action_bytes {
        // No wait would make room for it.
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "this async action's input takes {bytes} bytes in memory, more than an environment's waiting actions may hold ({}): run it without X-Async, or send a smaller input",
                app.config.max_async_action_bytes
            ),
        ));
    }
    let ticket = env
        .async_actions
        .admit(
            bytes,
            app.config.max_async_actions,
            app.config.max_async_action_bytes,
        )
        .map_err(|(actions, held)| {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_request",
                format!(
                    "environment `{}` has {actions} async actions waiting or running, holding {held} bytes of input (at most {} actions and {} bytes); this one ({bytes} bytes) was not queued: try again once some have ended",
                    env.name(),
                    app.config.max_async_actions,
                    app.config.max_async_action_bytes,
                ),
            );
            e.payload = Some(Box::new(json!({
                "waiting": actions,
                "waiting_bytes": held,
                "max_waiting": app.config.max_async_actions,
                "max_waiting_bytes": app.config.max_async_action_bytes,
            })));
            e
        })?;
    let now = Utc::now();
    let a = AsyncAction {
        id: uuid::Uuid::new_v4().to_string(),
        provider_config_key: conn.provider_config_key,
        connection_id: conn.connection_id,
        action,
        input,
        status: "pending".into(),
        attempts: 0,
        max_retries,
        output: None,
        error: None,
        created_at: now,
        updated_at: now,
        connection_created_at: Some(stored.created_at),
        webhook_queued: false,
        interrupted: 0,
    };
    // Durable before the 202: a restart resumes it.
    env.store.put_doc(ASYNC_ACTIONS, &a.id, &a).await?;
    let status_url = format!("/action/{}", a.id);
    let id = a.id.clone();
    tokio::spawn(runner::drive_async_action(
        app.clone(),
        env.clone(),
        a,
        ticket,
    ));
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, status_url.clone())],
        Json(json!({ "id": id, "statusUrl": status_url })),
    )
        .into_response())
}

/// The result of an async action: its output once it succeeded, its error
/// (with the status a sync trigger would have answered) once it failed,
/// 404 `not_found` (its state in the payload) while it is pending or
/// running.
pub async fn status(Env(env): Env, ApiPath(id): ApiPath<String>) -> ApiResult<Response> {
    // An id is a UUID, as the original checks it (400 before any lookup).
    let Some(parsed) = uuid::Uuid::parse_str(&id).ok().filter(|_| id.len() == 36) else {
        return Err(ApiError::bad_request(
            "invalid_uri_params",
            format!("`{id}` is not an async action's id (a UUID)"),
        ));
    };
    // Stored as written when made (lower case); a UUID in capitals is the
    // same one.
    let id = parsed.hyphenated().to_string();
    let a: AsyncAction = env
        .store
        .doc(ASYNC_ACTIONS, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("not_found", format!("no async action `{id}`")))?;
    match a.status.as_str() {
        "succeeded" => Ok(Json(a.output.unwrap_or(Value::Null)).into_response()),
        "failed" => {
            let e = a.error.unwrap_or(Value::Null);
            // A 404 would read as "not finished yet" to a poller (the
            // action, integration or connection gone by the time it ran):
            // an action that ended answers 500 then, with its own code.
            let status = e["status"]
                .as_u64()
                .and_then(|s| StatusCode::from_u16(s as u16).ok())
                .filter(|s| *s != StatusCode::NOT_FOUND)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut err = ApiError::new(
                status,
                e["code"].as_str().unwrap_or("action_script_failure"),
                e["message"].as_str().unwrap_or(""),
            );
            if !e["payload"].is_null() {
                err.payload = Some(Box::new(e["payload"].clone()));
            }
            // `upstream` of a `script_http_error`, as the direct answer has.
            if let Some(extra) = e["extra"].as_object() {
                err.extra = Some(Box::new(extra.clone()));
            }
            Err(err)
        }
        // Not finished: 404 `not_found`, as the original answers until
        // there is a result (`@nangohq/node`'s `getAsyncActionResult`
        // returns any 2xx body as the action's output); the payload says
        // where it is.
        _ => {
            let mut err = ApiError::not_found(
                "not_found",
                format!(
                    "No result for action '{}' yet: it is {} (attempt {})",
                    a.id, a.status, a.attempts
                ),
            );
            err.payload = Some(Box::new(
                json!({ "id": a.id, "status": a.status, "attempts": a.attempts }),
            ));
            Err(err)
        }
    }
}
