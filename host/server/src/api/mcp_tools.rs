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
use serde::Serialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
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

/// A JSON-RPC answer. The request's `id` is echoed as it was sent, and
/// nothing of a message is parsed into values but the members read
/// (`method`, `params.name`…): a tool's `arguments` reach the action as
/// their text, and a message of megabytes costs what its bytes do (its
/// values would cost tens of times more).
#[derive(Serialize)]
struct Answer<'a> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

fn error(id: &RawValue, code: i64, message: impl Into<String>) -> Answer<'_> {
    Answer {
        jsonrpc: "2.0",
        id,
        result: None,
        error: Some(json!({"code": code, "message": message.into()})),
    }
}

fn result(id: &RawValue, result: Value) -> Answer<'_> {
    Answer {
        jsonrpc: "2.0",
        id,
        result: Some(result),
        error: None,
    }
}

/// The members `names` of JSON text `text`, each as its text (the last of
/// a name given twice, as a parse keeps it), the others skipped
/// unparsed; `None` when `text` is not an object.
fn members<'a, const N: usize>(
    text: &'a RawValue,
    names: [&str; N],
) -> Option<[Option<&'a RawValue>; N]> {
    struct Members<'n, const N: usize>(&'n [&'n str; N]);
    impl<'de, const N: usize> Visitor<'de> for Members<'_, N> {
        type Value = Option<[Option<&'de RawValue>; N]>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = [None; N];
            while let Some(key) = map.next_key::<String>()? {
                match self.0.iter().position(|n| *n == key) {
                    Some(i) => found[i] = Some(map.next_value::<&'de RawValue>()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(Some(found))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    impl<'de, const N: usize> DeserializeSeed<'de> for Members<'_, N> {
        type Value = Option<[Option<&'de RawValue>; N]>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    // (The body was checked whole before: the text is JSON.)
    Members(&names)
        .deserialize(&mut serde_json::Deserializer::from_str(text.get()))
        .ok()
        .flatten()
}

/// `text` as a string, when it is one.
fn string(text: Option<&RawValue>) -> Option<String> {
    serde_json::from_str(text?.get()).ok()
}

/// A POST's messages: the one message, or a batch's (its first
/// [`MAX_BATCH`] and how many it has).
enum Messages<'a> {
    One(&'a RawValue),
    Batch(Vec<&'a RawValue>, usize),
}

/// A batch read into its first [`MAX_BATCH`] messages (as text), the
/// rest counted.
struct Items<'v, 'de>(&'v mut Vec<&'de RawValue>);

impl<'de> Visitor<'de> for Items<'_, 'de> {
    type Value = usize;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if self.0.len() < MAX_BATCH {
                self.0.push(item);
            }
            n += 1;
        }
        Ok(n)
    }
}

impl<'de> DeserializeSeed<'de> for Items<'_, 'de> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_seq(self)
    }
}

/// The messages of a body that is JSON.
fn messages(body: &[u8]) -> Result<Messages<'_>, serde_json::Error> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
        return serde_json::from_slice(body).map(Messages::One);
    }
    let mut items = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let n = Items(&mut items).deserialize(&mut de)?;
    de.end()?;
    Ok(Messages::Batch(items, n))
}

/// `GET /mcp`: no server-sent stream (the original's answer).
pub async fn get(Env(_env): Env) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(error(RawValue::NULL, -32000, "Method not allowed.")),
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
    // What a value parse takes (and its error), then read as text.
    let parsed = crate::budget::check_json(&body).and_then(|()| messages(&body));
    let (batch, messages) = match parsed {
        Err(e) => {
            return Ok((
                StatusCode::BAD_REQUEST,
                Json(error(
                    RawValue::NULL,
                    PARSE_ERROR,
                    format!("Parse error: {e}"),
                )),
            )
                .into_response());
        }
        Ok(Messages::Batch(_, 0)) => {
            return Ok((
                StatusCode::BAD_REQUEST,
                Json(error(
                    RawValue::NULL,
                    INVALID_REQUEST,
                    "Invalid Request: an empty batch",
                )),
            )
                .into_response());
        }
        Ok(Messages::Batch(_, n)) if n > MAX_BATCH => {
            return Ok((
                StatusCode::BAD_REQUEST,
                Json(error(
                    RawValue::NULL,
                    INVALID_REQUEST,
                    format!("Invalid Request: a batch of {n} messages; at most {MAX_BATCH}"),
                )),
            )
                .into_response());
        }
        Ok(Messages::Batch(items, _)) => (true, items),
        Ok(Messages::One(one)) => (false, vec![one]),
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
        Json(answers).into_response()
    } else {
        let answer = answers.remove(0);
        // A message that is not one is refused as the transport refuses
        // it (400); a method's own error is still a 200 answer.
        let status = if answer
            .error
            .as_ref()
            .is_some_and(|e| e["code"] == INVALID_REQUEST)
        {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        (status, Json(answer)).into_response()
    })
}

/// One JSON-RPC message's answer (none for a notification).
async fn handle<'a>(
    app: &App,
    env: &EnvState,
    conn: &ConnectionRef,
    m: &'a RawValue,
) -> Option<Answer<'a>> {
    let Some([id, method, params, result_, error_]) =
        members(m, ["id", "method", "params", "result", "error"])
    else {
        return Some(error(
            RawValue::NULL,
            INVALID_REQUEST,
            "Invalid Request: a message is an object",
        ));
    };
    let Some(method) = string(method) else {
        // A response of the client's (it sends none this server asked
        // for) is taken and dropped; anything else is not a message.
        if result_.is_some() || error_.is_some() {
            return None;
        }
        return Some(error(
            id.unwrap_or(RawValue::NULL),
            INVALID_REQUEST,
            "Invalid Request: no `method`",
        ));
    };
    // A notification (`notifications/initialized`…) needs no answer.
    let id = id?;
    Some(match method.as_str() {
        "initialize" => {
            let asked = params
                .and_then(|p| members(p, ["protocolVersion"]))
                .and_then(|[v]| string(v))
                .unwrap_or_default();
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
        "tools/call" => call(app, env, conn, id, params).await,
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
/// /action/trigger` does, its `arguments` passed on as their text; its
/// output as the tool's text (JSON, indented as the original's), a
/// failure as the error's JSON.
async fn call<'a>(
    app: &App,
    env: &EnvState,
    conn: &ConnectionRef,
    id: &'a RawValue,
    params: Option<&RawValue>,
) -> Answer<'a> {
    let [name, arguments] = params
        .and_then(|p| members(p, ["name", "arguments"]))
        .unwrap_or_default();
    let Some(name) = string(name) else {
        return error(id, INVALID_PARAMS, "Invalid params: `name` names the tool");
    };
    // The tools `tools/list` shows, and no other action.
    let known = is_tool(env, &conn.provider_config_key, &name);
    if !known {
        return error(id, INTERNAL_ERROR, format!("Action {name} not found"));
    }
    let failed = |e: ApiError| {
        let mut body = json!({"code": e.code, "message": e.message});
        if let Some(p) = e.payload {
            body["payload"] = *p;
        }
        body.to_string()
    };
    let input = match arguments.map(RawValue::get) {
        None | Some("null") => RawValue::from_string("{}".into()),
        Some(text) if text.starts_with('{') => RawValue::from_string(text.into()),
        Some(_) => {
            return error(
                id,
                INVALID_PARAMS,
                "Invalid params: `arguments` is an object",
            );
        }
    };
    let input = match input {
        Ok(input) => input,
        Err(e) => return error(id, INTERNAL_ERROR, format!("Internal error: {e}")),
    };
    match super::actions::run_now(app, env, conn, &name, Some(input)).await {
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
