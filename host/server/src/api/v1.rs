//! `/v1/*` (§4.8): each deployed script's declared endpoints. A sync
//! endpoint reads its model's records as `GET /records` does; an action
//! endpoint triggers the action with the body (or, for a GET or DELETE
//! without one, the query) as
//! input. `GET /openapi.json` describes them, per environment.

use std::sync::Arc;

use axum::extract::{RawQuery, Request, State};
use axum::http::Method;
use axum::response::Response;
use serde_json::{Map, Value, json};
use sluice_runtime::records::ConnectionRef;

use super::{ApiPath, ConnectionHeaders, DecodedBody, Env, actions, records};
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use axum::extract::FromRequest as _;

enum Target {
    Records { model: String },
    Action { name: String },
}

/// An endpoint no script declares: 404 `{"message": "Unknown endpoint
/// 'GET /x'"}`, the original's body (not its usual error shape).
fn unknown(method: &Method, path: &str) -> Response {
    use axum::response::IntoResponse as _;
    (
        axum::http::StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({
            "message": format!("Unknown endpoint '{method} {path}'")
        })),
    )
        .into_response()
}

pub async fn dispatch(
    State(app): State<Arc<App>>,
    Env(env): Env,
    headers: ConnectionHeaders,
    ApiPath(path): ApiPath<String>,
    RawQuery(raw): RawQuery,
    req: Request,
) -> ApiResult<Response> {
    let method = req.method().clone();
    let request_headers = req.headers().clone();
    let path = format!("/{}", path.trim_start_matches('/'));
    // The connection first, as the original's: its headers, then whether
    // it exists (400 `unknown_connection`), then the endpoint.
    let pck = (headers.provider_config_key.clone())
        .ok_or_else(|| ApiError::missing_header("Provider-Config-Key"))?;
    let cid =
        (headers.connection_id.clone()).ok_or_else(|| ApiError::missing_header("Connection-Id"))?;
    if env.store.connection(&pck, &cid).await?.is_none() {
        let mut e = ApiError::unknown_connection(&pck, &cid);
        e.status = axum::http::StatusCode::BAD_REQUEST;
        return Err(e);
    }
    let Some(catalog) = env.deployment().map(|d| d.catalog.clone()) else {
        return Ok(unknown(&method, &path));
    };
    let Some(integration) = catalog.config.integration(&pck) else {
        return Ok(unknown(&method, &path));
    };
    let find = |path: &str| {
        let mut target = None;
        for s in integration.distinct_syncs() {
            for (i, e) in s.endpoints.iter().enumerate() {
                if e.method.as_str().eq_ignore_ascii_case(method.as_str()) && e.path == path {
                    let model = s.output.get(i).or_else(|| s.output.first()).cloned();
                    if let Some(model) = model {
                        target = Some(Target::Records { model });
                    }
                }
            }
        }
        for a in &integration.actions {
            if let Some(e) = &a.endpoint
                && e.method.as_str().eq_ignore_ascii_case(method.as_str())
                && e.path == path
            {
                target = Some(Target::Action {
                    name: a.name.clone(),
                });
            }
        }
        target
    };
    // The path as declared (`/things/` too), else without its trailing
    // slash (`/records/` is `/records` elsewhere in the API).
    let target = find(&path).or_else(|| {
        path.strip_suffix('/')
            .filter(|p| !p.is_empty())
            .and_then(find)
    });
    let Some(target) = target else {
        return Ok(unknown(&method, &path));
    };
    match target {
        Target::Records { model } => {
            let query = records::parse_query(raw.as_deref(), Some(&model))?;
            records::connection_page(&env, &headers, query).await
        }
        Target::Action { name } => {
            // The body, as the original's for every method (as sent: it
            // is only passed on); a GET or DELETE without one takes its
            // query's parameters (sluice's).
            let DecodedBody(bytes) = DecodedBody::from_request(req, &()).await?;
            let input = if !bytes.is_empty() {
                Some(actions::parse_input(&bytes)?)
            } else if method == Method::GET || method == Method::DELETE {
                let map: Map<String, Value> =
                    url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
                        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                        .collect();
                if map.is_empty() {
                    None
                } else {
                    Some(serde_json::value::to_raw_value(&map).map_err(|e| {
                        ApiError::internal(format!("the query cannot be written as JSON: {e}"))
                    })?)
                }
            } else {
                None
            };
            let conn = ConnectionRef {
                provider_config_key: pck,
                connection_id: cid,
            };
            actions::run(&app, &env, conn, name, input, &request_headers).await
        }
    }
}

/// Adds an endpoint's operation under `/v1` (where it is served). Several
/// integrations may declare the same method and path (`Provider-Config-Key`
/// picks one): the operation then lists them all, its parameters are all
/// of theirs (optional when not all of them take it), and its bodies are
/// any of theirs — any JSON when one of them declares none (an action
/// without an input model takes whatever is sent). The path is the
/// declared one, matched as written: its `{`/`}` (a `{Model:field}`) are
/// percent-encoded, not a template.
fn add_operation(paths: &mut Map<String, Value>, path: &str, method: &str, op: Value) {
    let path = path.replace('{', "%7B").replace('}', "%7D");
    let entry = paths
        .entry(format!("/v1{path}"))
        .or_insert_with(|| json!({}));
    let method = method.to_ascii_lowercase();
    let Some(existing) = entry.get_mut(&method) else {
        entry[method] = op;
        return;
    };
    let key = &op["tags"][0];
    if let Some(tags) = existing["tags"].as_array_mut() {
        tags.push(key.clone());
    }
    if let Some(keys) = existing["parameters"][1]["schema"]["enum"].as_array_mut() {
        keys.push(key.clone());
    }
    let summaries: Vec<&str> = [&existing["summary"], &op["summary"]]
        .into_iter()
        .filter_map(Value::as_str)
        .collect();
    existing["summary"] = json!(summaries.join("; "));
    let same = |a: &Value, b: &Value| a["name"] == b["name"] && a["in"] == b["in"];
    let theirs_params = op["parameters"].as_array().cloned().unwrap_or_default();
    if let Some(ours) = existing["parameters"].as_array_mut() {
        for p in ours.iter_mut() {
            if !theirs_params.iter().any(|t| same(p, t)) {
                p["required"] = json!(false);
            }
        }
        for mut t in theirs_params {
            if !ours.iter().any(|p| same(p, &t)) {
                t["required"] = json!(false);
                ours.push(t);
            }
        }
    }
    let schema = "/content/application~1json/schema";
    for (container, key) in [("", "requestBody"), ("/responses", "200")] {
        let their_body = op.pointer(&format!("{container}/{key}")).cloned();
        let theirs = their_body.as_ref().and_then(|b| b.pointer(schema)).cloned();
        let Some(ours) = existing.pointer_mut(container) else {
            continue;
        };
        let any = json!({});
        match (
            ours.get(key).and_then(|b| b.pointer(schema)).cloned(),
            theirs,
        ) {
            (None, None) => {}
            (Some(a), Some(b)) if a == b || a == any => {}
            (Some(_), Some(b)) if b == any => {
                ours[key]["content"] = json!({ "application/json": { "schema": any } });
            }
            (Some(_), Some(b)) => {
                let Some(a) = ours[key].pointer_mut(schema) else {
                    continue;
                };
                match a.get_mut("anyOf").and_then(Value::as_array_mut) {
                    Some(list) => {
                        if !list.contains(&b) {
                            list.push(b);
                        }
                    }
                    None => *a = json!({ "anyOf": [a.clone(), b] }),
                }
            }
            // One of them declares no body: any JSON.
            (Some(_), None) | (None, Some(_)) => {
                if ours.get(key).is_none() {
                    ours[key] = their_body.unwrap_or_else(|| json!({}));
                }
                ours[key]["content"] = json!({ "application/json": { "schema": any } });
            }
        }
    }
}

/// The prefix of an integration's own component names: its key with what
/// a component name cannot hold (`^[a-zA-Z0-9._-]+$`) as `_`, and a `.`.
fn component_prefix(pck: &str) -> String {
    let key: String = pck
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{key}.")
}

/// An OpenAPI 3.1 document of every endpoint deployed to the environment:
/// made once per deployment (off the async workers, one at a time per
/// environment) and kept until another is active.
pub async fn openapi(Env(env): Env) -> ApiResult<Response> {
    use axum::response::IntoResponse as _;
    let deployment = env.deployment();
    let version = deployment.as_ref().map_or(0, |d| d.version);
    let mut kept = env.openapi.lock().await;
    let body = match &*kept {
        Some((v, body)) if *v == version => body.clone(),
        _ => {
            let name = env.name().to_string();
            let made = tokio::task::spawn_blocking(move || {
                let doc = document(
                    deployment.as_ref().map(|d| d.catalog.as_ref()),
                    &name,
                    &version.to_string(),
                );
                serde_json::to_vec(&doc)
            })
            .await
            .map_err(|e| ApiError::internal(format!("the OpenAPI document was not made: {e}")))?
            .map_err(|e| {
                ApiError::internal(format!("the OpenAPI document cannot be written: {e}"))
            })?;
            let body = axum::body::Bytes::from(made);
            *kept = Some((version, body.clone()));
            body
        }
    };
    drop(kept);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// The component schema of a record's `_nango_metadata`.
const RECORD_METADATA: &str = "sluice.RecordMetadata";

/// The component schema of the API's error body.
const ERROR: &str = "sluice.Error";

/// A response with the API's error body.
fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{ERROR}") } } }
    })
}

/// The query parameters of a records page.
fn records_query() -> [Value; 5] {
    let param = |name: &str, description: &str, schema: Value| json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema });
    [
        param(
            "cursor",
            "The `next_cursor` of the page before",
            json!({ "type": "string" }),
        ),
        param(
            "limit",
            "Records per page (default 100)",
            json!({ "type": "integer", "minimum": 1, "maximum": 10000 }),
        ),
        param(
            "modified_after",
            "Only records changed at or after this time",
            json!({ "type": "string", "format": "date-time" }),
        ),
        param(
            "filter",
            "Only records last `added`, `updated` or `deleted` (comma-separated)",
            json!({ "type": "string" }),
        ),
        param(
            "ids",
            "Only these record ids",
            json!({ "type": "array", "items": { "type": "string" } }),
        ),
    ]
}

/// The schemas every document has beside the models'.
fn own_schemas() -> [(String, Value); 2] {
    let at = json!({ "type": "string", "format": "date-time" });
    let at_or_null = json!({ "type": ["string", "null"], "format": "date-time" });
    [
        (
            RECORD_METADATA.to_string(),
            json!({
                "type": "object",
                "required": ["first_seen_at", "last_modified_at", "last_action", "deleted_at", "cursor"],
                "properties": {
                    "first_seen_at": at,
                    "last_modified_at": at,
                    "last_action": { "type": "string", "enum": ["ADDED", "UPDATED", "DELETED"] },
                    "deleted_at": at_or_null,
                    "pruned_at": at_or_null,
                    "cursor": { "type": "string" }
                }
            }),
        ),
        (
            ERROR.to_string(),
            json!({
                "type": "object",
                "required": ["error"],
                "properties": { "error": {
                    "type": "object",
                    "required": ["code"],
                    "properties": {
                        "code": { "type": "string" },
                        "message": { "type": "string" },
                        "payload": {}
                    }
                }}
            }),
        ),
    ]
}

/// An operation's id, unique in the document as OpenAPI requires:
/// `{integration}-{script}`, with the script's kind when a sync and an
/// action share a name (or keys and names run together alike), then a
/// number.
fn operation_id(
    used: &mut std::collections::HashSet<String>,
    pck: &str,
    name: &str,
    kind: &str,
) -> String {
    let plain = format!("{pck}-{name}");
    let mut id = plain.clone();
    if used.contains(&id) {
        id = format!("{plain}-{kind}");
    }
    let mut n = 2;
    while used.contains(&id) {
        id = format!("{plain}-{kind}-{n}");
        n += 1;
    }
    used.insert(id.clone());
    id
}

/// A record of `model` as the records API answers it: the model's
/// properties and `_nango_metadata`, a schema of its own (an `allOf` of
/// the model and the metadata would refuse every record when the model
/// allows no additional properties, as models do), made once; an `allOf`
/// for a model that is not an object of properties.
fn record_ref(schemas: &mut Map<String, Value>, prefix: &str, model: &str) -> Value {
    let name = format!("{prefix}{model}");
    let record = format!("sluice.Record.{name}");
    let metadata = json!({ "$ref": format!("#/components/schemas/{RECORD_METADATA}") });
    if !schemas.contains_key(&record) {
        let mut schema = schemas.get(&name).cloned().unwrap_or(Value::Null);
        let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            return json!({ "allOf": [
                { "$ref": format!("#/components/schemas/{name}") },
                { "type": "object", "required": ["_nango_metadata"], "properties": { "_nango_metadata": metadata } }
            ]});
        };
        properties.insert("_nango_metadata".into(), metadata);
        // A record that failed its model's validation is stored all the
        // same (a warning, as the original's): the record lists the
        // model's fields and requires none, nor refuses others.
        schema["required"] = json!(["_nango_metadata"]);
        if let Some(o) = schema.as_object_mut() {
            o.remove("additionalProperties");
            o.remove("unevaluatedProperties");
        }
        schemas.insert(record.clone(), schema);
    }
    json!({ "$ref": format!("#/components/schemas/{record}") })
}

/// The OpenAPI document of a deployment's catalog.
fn document(catalog: Option<&sluice_project::catalog::Catalog>, env: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas: Map<String, Value> = own_schemas().into_iter().collect();
    let mut operation_ids = std::collections::HashSet::new();
    if let Some(catalog) = catalog {
        let config = &catalog.config;
        let schema = catalog.schema();
        if let Some(defs) = schema["definitions"].as_object() {
            for (name, s) in defs {
                let text = s
                    .to_string()
                    .replace("#/definitions/", "#/components/schemas/");
                schemas.insert(
                    name.clone(),
                    serde_json::from_str(&text).unwrap_or(Value::Null),
                );
            }
        }
        // An integration whose models differ from those of the same names
        // documented above (another integration's) has its own, under
        // names prefixed with its key.
        let mut prefixed: std::collections::BTreeSet<String> = Default::default();
        for i in &config.integrations {
            let pck = &i.provider_config_key;
            let Some(own) = catalog.own_definitions(pck) else {
                continue;
            };
            if own
                .iter()
                .all(|(name, s)| schema["definitions"].get(name) == Some(s))
            {
                continue;
            }
            let prefix = component_prefix(pck);
            for (name, s) in own {
                let text = s
                    .to_string()
                    .replace("#/definitions/", &format!("#/components/schemas/{prefix}"));
                schemas.insert(
                    format!("{prefix}{name}"),
                    serde_json::from_str(&text).unwrap_or(Value::Null),
                );
            }
            prefixed.insert(pck.clone());
        }
        for i in &config.integrations {
            let prefix = if prefixed.contains(&i.provider_config_key) {
                component_prefix(&i.provider_config_key)
            } else {
                String::new()
            };
            let model_ref =
                |m: &str| json!({ "$ref": format!("#/components/schemas/{prefix}{m}") });
            let headers = json!([
                { "name": "Connection-Id", "in": "header", "required": true, "schema": { "type": "string" } },
                { "name": "Provider-Config-Key", "in": "header", "required": true, "schema": { "type": "string", "enum": [i.provider_config_key] } },
            ]);
            for s in i.distinct_syncs() {
                for (n, e) in s.endpoints.iter().enumerate() {
                    let Some(model) = s.output.get(n).or_else(|| s.output.first()) else {
                        continue;
                    };
                    let mut parameters = headers.as_array().cloned().unwrap_or_default();
                    parameters.extend(records_query());
                    let op = json!({
                        "summary": s.description,
                        "operationId": operation_id(&mut operation_ids, &i.provider_config_key, &s.name, "sync"),
                        "tags": [i.provider_config_key],
                        "parameters": parameters,
                        "responses": {
                            "200": { "description": "A page of records", "content": { "application/json": { "schema": {
                                "type": "object",
                                "required": ["records", "next_cursor"],
                                "properties": {
                                    "records": { "type": "array", "items": record_ref(&mut schemas, &prefix, model) },
                                    "next_cursor": { "type": ["string", "null"] }
                                }
                            }}}},
                            "400": error_response("A query parameter or header the records API does not take, or an unknown connection"),
                            "401": error_response("A missing or unknown secret key"),
                        }
                    });
                    add_operation(&mut paths, &e.path, e.method.as_str(), op);
                }
            }
            for a in &i.actions {
                let Some(e) = &a.endpoint else { continue };
                let mut parameters = headers.as_array().cloned().unwrap_or_default();
                parameters.extend([
                    json!({ "name": "X-Async", "in": "header", "required": false, "description": "`true`: answer 202 at once and run the action in the background (`GET /action/{id}`)", "schema": { "type": "string" } }),
                    json!({ "name": "X-Max-Retries", "in": "header", "required": false, "description": "An async action's retries, 0 to 5", "schema": { "type": "string" } }),
                ]);
                let mut op = json!({
                    "summary": a.description,
                    "operationId": operation_id(&mut operation_ids, &i.provider_config_key, &a.name, "action"),
                    "tags": [i.provider_config_key],
                    "parameters": parameters,
                    "responses": {
                        "200": { "description": "The action's output" },
                        "202": { "description": "Started in the background (`X-Async`)", "content": { "application/json": { "schema": {
                            "type": "object",
                            "properties": { "id": { "type": "string" }, "statusUrl": { "type": "string" } }
                        }}}},
                        "400": error_response("An input the action's schema refuses, or an unknown connection"),
                        "401": error_response("A missing or unknown secret key"),
                        "424": error_response("The provider's API answered with an error (`script_http_error`, its answer in `upstream`)"),
                        "500": error_response("The script failed: an `ActionError` (`action_script_runtime_error`, its payload) or another failure"),
                    }
                });
                if let Some(input) = &a.input {
                    op["requestBody"] = json!({ "content": { "application/json": { "schema": model_ref(input) } } });
                }
                if let Some(output) = a.output.first() {
                    op["responses"]["200"]["content"] =
                        json!({ "application/json": { "schema": model_ref(output) } });
                }
                add_operation(&mut paths, &e.path, e.method.as_str(), op);
            }
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": format!("sluice — environment {env}"), "version": version },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "secretKey": { "type": "http", "scheme": "bearer" } }
        },
        "security": [{ "secretKey": [] }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, input: Option<&str>, output: &str) -> Value {
        let mut op = json!({
            "summary": format!("{key}'s"),
            "tags": [key],
            "parameters": [
                { "name": "Connection-Id", "in": "header" },
                { "name": "Provider-Config-Key", "in": "header", "schema": { "type": "string", "enum": [key] } },
            ],
            "responses": { "200": { "content": { "application/json": { "schema": { "$ref": output } } } } },
        });
        if let Some(input) = input {
            op["requestBody"] =
                json!({ "content": { "application/json": { "schema": { "$ref": input } } } });
        }
        op
    }

    /// Two zero-yaml integrations with a model of one name and different
    /// schemas: each endpoint names its own integration's (it named the
    /// first integration's for both).
    #[test]
    fn each_integration_documents_its_own_models() {
        let yaml = "
integrations:
  asana:
    syncs:
      users:
        runs: every day
        output: User
        endpoint: GET /users
  notion:
    syncs:
      users:
        runs: every day
        output: User
        endpoint: GET /users
models:
  User:
    id: string
";
        let config = sluice_nango_yaml::parse(yaml, "nango.yaml").unwrap().config;
        let user = |field: &str| json!({"type": "object", "properties": {"id": {"type": "string"}, field: {"type": "string"}}, "additionalProperties": false});
        let defs = |pck: &str, field: &str| json!({"providerConfigKey": pck, "syncs": [{"name": "users", "json_schema": {"definitions": {"User": user(field)}}}]});
        let catalog = sluice_project::catalog::Catalog::new(config, [])
            .with_definitions(&[defs("asana", "email"), defs("notion", "avatar_url")]);
        let doc = document(Some(&catalog), "dev", "1");
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                        out.push(r.rsplit('/').next().unwrap_or(r).to_string());
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut names = Vec::new();
        refs(
            &doc["paths"]["/v1/users"]["get"]["responses"]["200"],
            &mut names,
        );
        // Each integration's model as a record: its properties and the
        // records' metadata (an `allOf` of the two would refuse every
        // record, the model allowing no other properties).
        assert_eq!(names.len(), 2, "{doc}");
        let schemas = &doc["components"]["schemas"];
        let shown: Vec<Value> = names
            .iter()
            .map(|n| {
                let mut record = schemas[n.as_str()].clone();
                assert_eq!(record["required"], json!(["_nango_metadata"]), "{record}");
                let metadata = record["properties"]
                    .as_object_mut()
                    .and_then(|p| p.remove("_nango_metadata"));
                assert_eq!(
                    metadata,
                    Some(json!({"$ref": format!("#/components/schemas/{RECORD_METADATA}")}))
                );
                record.as_object_mut().map(|r| r.remove("required"));
                record
            })
            .collect();
        // (A record refuses no other property: one that failed its
        // model's validation is stored all the same.)
        let open = |field: &str| {
            let mut u = user(field);
            u.as_object_mut().map(|o| o.remove("additionalProperties"));
            u
        };
        assert!(shown.contains(&open("email")), "{doc}");
        assert!(shown.contains(&open("avatar_url")), "{doc}");
        // The models themselves are documented unchanged.
        assert_eq!(schemas["asana.User"], user("email"), "{doc}");
    }

    /// A sync and an action of one name (zero-yaml allows it), and keys
    /// and names that run together alike, get operation ids of their own.
    #[test]
    fn operation_ids_are_unique() {
        let mut used = std::collections::HashSet::new();
        let ids: Vec<String> = [
            ("gitlab", "issues", "sync"),
            ("gitlab", "issues", "action"),
            ("a-b", "c", "sync"),
            ("a", "b-c", "sync"),
            ("a", "b-c", "sync"),
        ]
        .into_iter()
        .map(|(pck, name, kind)| operation_id(&mut used, pck, name, kind))
        .collect();
        assert_eq!(
            ids,
            [
                "gitlab-issues",
                "gitlab-issues-action",
                "a-b-c",
                "a-b-c-sync",
                "a-b-c-sync-2"
            ]
        );
    }

    #[test]
    fn integrations_declaring_one_endpoint_share_its_operation() {
        let mut paths = Map::new();
        add_operation(&mut paths, "/things", "POST", op("a", None, "A"));
        add_operation(&mut paths, "/things", "POST", op("b", Some("In"), "B"));
        add_operation(&mut paths, "/things", "POST", op("c", Some("In"), "A"));
        add_operation(&mut paths, "/other", "GET", op("c", None, "C"));
        let things = &paths["/v1/things"]["post"];
        assert_eq!(things["tags"], json!(["a", "b", "c"]));
        assert_eq!(
            things["parameters"][1]["schema"]["enum"],
            json!(["a", "b", "c"])
        );
        assert_eq!(things["summary"], "a's; b's; c's");
        assert_eq!(
            things["responses"]["200"]["content"]["application/json"]["schema"],
            json!({ "anyOf": [{ "$ref": "A" }, { "$ref": "B" }] })
        );
        // `a` takes any body: so does the operation.
        assert_eq!(
            things["requestBody"]["content"]["application/json"]["schema"],
            json!({})
        );
        assert_eq!(paths["/v1/other"]["get"]["tags"], json!(["c"]));
        // A parameter one of them takes is in the operation, optional.
        let mut with_query = op("d", None, "C");
        with_query["parameters"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "name": "cursor", "in": "query", "required": true }));
        add_operation(&mut paths, "/other", "GET", with_query);
        assert_eq!(
            paths["/v1/other"]["get"]["parameters"][2],
            json!({ "name": "cursor", "in": "query", "required": false })
        );
        // `{…}` is matched literally: not a template.
        add_operation(
            &mut paths,
            "/things/{Contact:id}",
            "GET",
            op("a", None, "A"),
        );
        assert!(
            paths.contains_key("/v1/things/%7BContact:id%7D"),
            "{paths:?}"
        );
    }
}
