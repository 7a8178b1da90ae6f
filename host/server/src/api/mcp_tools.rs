//! `POST /mcp`: a connection's deployed actions as the tools of an MCP
//! server, as the original serves them (its "Connection Tools MCP
//! server"): an AI agent given the environment's secret key and the
//! connection's `Connection-Id` and `Provider-Config-Key` headers lists
//! the integration's actions (`tools/list`, each with its input model's
//! JSON schema) and runs one for the connection (`tools/call`, the
//! action's output as JSON text). The MCP Streamable HTTP transport
//! without sessions: each POST carries JSON-RPC messages and gets their
//! answers as JSON; `GET /mcp` (the server-sent stream) is refused with
//! the original's 405.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sluice_runtime::records::ConnectionRef;

use super::{ConnectionHeaders, DecodedBody, Env};
use crate::app::{App, EnvState};
use crate::error::{ApiError, ApiResult};

/// The protocol versions sluice answers in (the newest first); a client
/// asking for another gets the newest.
const VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;

/// The most messages one POST may carry (batches are the 2025-03-26
/// protocol's; each `tools/call` runs an action, one after another, within
/// the one request).
const MAX_BATCH: usize = 16;

fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// `GET /mcp`: no server-sent stream (the original's answer).
pub async fn get(Env(_env): Env) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(error(Value::Null, -32000, "Method not allowed.")),
    )
        .into_response()
}

/// `POST /mcp`.
pub async fn post(
    State(app): State<Arc<App>>,
    Env(env): Env,
    headers: ConnectionHeaders,
    DecodedBody(body): DecodedBody,
) -> ApiResult<Response> {
    let (Some(cid), Some(pck)) = (headers.connection_id, headers.provider_config_key) else {
        return Err(ApiError::bad_request(
            "invalid_headers",
            "the Connection-Id and Provider-Config-Key headers name the connection whose tools these are",
        ));
    };
    if !env.store.connection_exists(&pck, &cid).await? {
        // The original's words.
        return Err(ApiError::bad_request(
            "unknown_connection",
            "Provided connection-id and provider-config-key do not match a valid connection",
        ));
    }
    let conn = ConnectionRef {
        provider_config_key: pck,
        connection_id: cid,
    };
    let message: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Ok((
                StatusCode::BAD_REQUEST,
                Json(error(Value::Null, PARSE_ERROR, format!("Parse error: {e}"))),
            )
                .into_response());
        }
    };
    let (batch, messages) = match message {
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_BATCH => (true, items),
        Value::Array(items) if items.is_empty() => {
            return Ok((
                StatusCode::BAD_REQUEST,
                Json(error(
                    Value::Null,
                    INVALID_REQUEST,
                    "Invalid Request: an empty batch",
                )),
            )
                .into_response());
        }
        Value::Array(items) => {
            return Ok((
                StatusCode::BAD_REQUEST,
                Json(error(
                    Value::Null,
                    INVALID_REQUEST,
                    format!(
                        "Invalid Request: a batch of {} messages; at most {MAX_BATCH}",
                        items.len()
                    ),
                )),
            )
                .into_response());
        }
        one => (false, vec![one]),
    };
    let mut answers = Vec::new();
    for m in messages {
        if let Some(answer) = handle(&app, &env, &conn, m).await {
            answers.push(answer);
        }
    }
    // Only notifications (or answers of the client's): accepted.
    if answers.is_empty() {
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    Ok(if batch {
        Json(Value::Array(answers)).into_response()
    } else {
        let answer = answers.remove(0);
        // A message that is not one is refused as the transport refuses
        // it (400); a method's own error is still a 200 answer.
        let status = if answer["error"]["code"] == INVALID_REQUEST {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        (status, Json(answer)).into_response()
    })
}

/// One JSON-RPC message's answer (none for a notification).
async fn handle(app: &App, env: &EnvState, conn: &ConnectionRef, m: Value) -> Option<Value> {
    let Value::Object(m) = m else {
        return Some(error(
            Value::Null,
            INVALID_REQUEST,
            "Invalid Request: a message is an object",
        ));
    };
    let Some(method) = m.get("method").and_then(Value::as_str) else {
        // A response of the client's (it sends none this server asked
        // for) is taken and dropped; anything else is not a message.
        if m.contains_key("result") || m.contains_key("error") {
            return None;
        }
        return Some(error(
            m.get("id").cloned().unwrap_or(Value::Null),
            INVALID_REQUEST,
            "Invalid Request: no `method`",
        ));
    };
    // A notification (`notifications/initialized`…) needs no answer.
    let id = m.get("id").cloned()?;
    let params = m.get("params").cloned().unwrap_or(Value::Null);
    Some(match method {
        "initialize" => {
            let asked = params["protocolVersion"].as_str().unwrap_or_default();
            let version = VERSIONS
                .iter()
                .find(|v| **v == asked)
                .unwrap_or(&VERSIONS[0]);
            result(
                id,
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "Nango Connection Tools MCP server", "version": "1.0.0"},
                }),
            )
        }
        "ping" => result(id, json!({})),
        "tools/list" => result(id, json!({"tools": tools(env, &conn.provider_config_key)})),
        "tools/call" => call(app, env, conn, id, &params).await,
        other => error(id, METHOD_NOT_FOUND, format!("Method not found: {other}")),
    })
}

/// The deployed actions of integration `pck` as MCP tools, as the
/// original makes them: the action's name, its description (else its
/// name), and its input model's properties; an action whose input is not
/// an object is left out.
fn tools(env: &EnvState, pck: &str) -> Vec<Value> {
    let Some(d) = env.deployment() else {
        return Vec::new();
    };
    let definitions = models(&d, pck);
    let mut out = Vec::new();
    for i in d
        .catalog
        .config
        .integrations
        .iter()
        .filter(|i| i.provider_config_key == pck)
    {
        for a in &i.actions {
            let Some(input) = tool_input(a, definitions) else {
                continue;
            };
            let mut input_schema = Map::new();
            input_schema.insert("type".into(), json!("object"));
            if let (Some(s), Some(definitions)) = (input, definitions) {
                for k in ["properties", "required", "description"] {
                    if let Some(v) = s.get(k) {
                        input_schema.insert(k.into(), v.clone());
                    }
                }
                // The models its properties refer to, so the schema stands
                // alone.
                let used = referenced(s, definitions);
                if !used.is_empty() {
                    input_schema.insert("definitions".into(), Value::Object(used));
                }
            }
            out.push(json!({
                "name": a.name,
                "description": if a.description.is_empty() { &a.name } else { &a.description },
                "inputSchema": input_schema,
            }));
        }
    }
    out
}

/// Whether integration `pck` has the action `name` as a tool (as
/// [`tools`] lists it), without building the list.
fn is_tool(env: &EnvState, pck: &str, name: &str) -> bool {
    let Some(d) = env.deployment() else {
        return false;
    };
    let definitions = models(&d, pck);
    d.catalog
        .config
        .integrations
        .iter()
        .filter(|i| i.provider_config_key == pck)
        .flat_map(|i| i.actions.iter())
        .filter(|a| a.name == name)
        .any(|a| tool_input(a, definitions).is_some())
}

/// The models of integration `pck`'s scripts, borrowed (a project's may be
/// megabytes, and a request may hold 16 messages): its own, else the
/// project's.
fn models<'a>(d: &'a crate::app::Deployed, pck: &str) -> Option<&'a Map<String, Value>> {
    d.catalog
        .own_definitions(pck)
        .or_else(|| d.catalog.schema()["definitions"].as_object())
}

/// An action's input schema as a tool takes it (`Some(None)`: it has no
/// input); `None` when its input is not an object, which makes no tool.
fn tool_input<'a>(
    a: &sluice_nango_yaml::ActionConfig,
    definitions: Option<&'a Map<String, Value>>,
) -> Option<Option<&'a Value>> {
    let input = a
        .input
        .as_ref()
        .and_then(|m| definitions?.get(m))
        .filter(|s| s["type"] != "null");
    (!input.is_some_and(|s| s["type"] != "object")).then_some(input)
}

/// The definitions `schema` refers to (`#/definitions/X`), and theirs.
fn referenced(schema: &Value, definitions: &Map<String, Value>) -> Map<String, Value> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(name) = m
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix("#/definitions/"))
                {
                    out.push(name.to_string());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut todo = Vec::new();
    refs(schema, &mut todo);
    let mut found = Map::new();
    while let Some(name) = todo.pop() {
        if found.contains_key(&name) {
            continue;
        }
        if let Some(d) = definitions.get(&name) {
            refs(d, &mut todo);
            found.insert(name, d.clone());
        }
    }
    found
}

/// `tools/call`: runs the action for the connection, as `POST
/// /action/trigger` does; its output as the tool's text (JSON, indented as
/// the original's), a failure as the error's JSON.
async fn call(app: &App, env: &EnvState, conn: &ConnectionRef, id: Value, params: &Value) -> Value {
    let Some(name) = params["name"].as_str() else {
        return error(id, INVALID_PARAMS, "Invalid params: `name` names the tool");
    };
    // The tools `tools/list` shows, and no other action.
    let known = is_tool(env, &conn.provider_config_key, name);
    if !known {
        return error(id, INTERNAL_ERROR, format!("Action {name} not found"));
    }
    let input = match &params["arguments"] {
        Value::Null => json!({}),
        v @ Value::Object(_) => v.clone(),
        _ => {
            return error(
                id,
                INVALID_PARAMS,
                "Invalid params: `arguments` is an object",
            );
        }
    };
    let failed = |e: ApiError| {
        let mut body = json!({"code": e.code, "message": e.message});
        if let Some(p) = e.payload {
            body["payload"] = *p;
        }
        body.to_string()
    };
    match crate::runner::run_action(app, env, conn, name, Some(input)).await {
        Ok(report) => match report.outcome {
            Ok(output) => {
                let text = serde_json::to_string_pretty(&output.unwrap_or(Value::Null))
                    .unwrap_or_default();
                result(id, json!({"content": [{"type": "text", "text": text}]}))
            }
            Err(e) => error(id, INTERNAL_ERROR, failed(crate::runner::failure_error(&e))),
        },
        Err(e) => error(id, INTERNAL_ERROR, failed(e)),
    }
}
