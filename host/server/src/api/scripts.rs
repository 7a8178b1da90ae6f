//! `GET /scripts/config`: the deployed scripts of an environment as the
//! original's `getScriptsConfig` lists them (`@nangohq/node`'s
//! `getScriptsConfig`), or with `format=openai` as OpenAI function
//! definitions (what apps hand to a model as tools).

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::RawQuery;
use serde_json::{Map, Value, json};
use sluice_nango_yaml::{Endpoint, SyncType};

use super::Env;
use crate::error::ApiResult;

pub async fn config(Env(env): Env, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    // As the original reads it: `format=openai`, anything else the
    // original's shape.
    let openai = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "format" && v == "openai");
    let Some(d) = env.deployment() else {
        // The original's answer when nothing is deployed.
        return Ok(Json(json!([])));
    };
    let config = &d.catalog.config;
    let schema = d.catalog.schema();
    let definitions = schema["definitions"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let last_deployed = d
        .created_at
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut out = Vec::new();
    for i in &config.integrations {
        // An integration's own models (zero-yaml: two integrations may
        // each have a model of one name), else the project's.
        let own = d.catalog.own_definitions(&i.provider_config_key);
        let definitions = own.unwrap_or(&definitions);
        let provider = env
            .store
            .integration(&i.provider_config_key)
            .await?
            .map(|s| s.provider);
        let script = |name: &str,
                      kind: &str,
                      description: &str,
                      models: &[String],
                      input: Option<&String>,
                      endpoints: &[Endpoint],
                      scopes: &[String],
                      version: &str| {
            let used: Vec<&str> = models.iter().chain(input).map(String::as_str).collect();
            let defs = closure(definitions, &used);
            let mut script = json!({
                "name": name,
                "type": kind,
                "returns": models,
                "description": description,
                "attributes": {},
                "scopes": scopes,
                "version": version,
                "endpoints": endpoints.iter().map(|e| json!({
                    "method": e.method.as_str(),
                    "path": e.path,
                    "group": e.group,
                })).collect::<Vec<_>>(),
                "enabled": true,
                "last_deployed": last_deployed,
                "webhookSubscriptions": [],
                "json_schema": {
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "definitions": defs,
                },
                "sdk_version": null,
                "models": models.iter().map(|m| json!({"name": m, "fields": fields(own.is_none().then_some(config), definitions, m)})).collect::<Vec<_>>(),
                "features": [],
            });
            // Left out when there is none, as the original's.
            if let (Some(input), Some(v)) = (input, script.as_object_mut()) {
                v.insert("input".into(), json!(input));
            }
            script
        };
        let mut syncs = Vec::new();
        for s in i.distinct_syncs() {
            let mut v = script(
                &s.name,
                "sync",
                &s.description,
                &s.output,
                s.input.as_ref(),
                &s.endpoints,
                &s.scopes,
                &s.version,
            );
            v["webhookSubscriptions"] = json!(s.webhook_subscriptions);
            v["sync_type"] = json!(match s.sync_type {
                SyncType::Full => "full",
                SyncType::Incremental => "incremental",
            });
            v["auto_start"] = json!(s.auto_start);
            v["runs"] = json!(s.runs);
            v["track_deletes"] = json!(s.track_deletes);
            syncs.push(v);
        }
        let actions: Vec<Value> = i
            .actions
            .iter()
            .map(|a| {
                script(
                    &a.name,
                    "action",
                    &a.description,
                    &a.output,
                    a.input.as_ref(),
                    a.endpoint.as_slice(),
                    &a.scopes,
                    &a.version,
                )
            })
            .collect();
        let on_events: Vec<Value> = i
            .on_events
            .iter()
            .map(|e| json!({"name": e.name, "type": "on-event", "event": e.event}))
            .collect();
        out.push(json!({
            "providerConfigKey": i.provider_config_key,
            "provider": provider,
            "syncs": syncs,
            "actions": actions,
            "on-events": on_events,
        }));
    }
    if !openai {
        return Ok(Json(Value::Array(out)));
    }
    Ok(Json(json!({ "data": openai_functions(&out) })))
}

/// The definitions `roots` refer to, and those they refer to in turn.
fn closure(definitions: &Map<String, Value>, roots: &[&str]) -> Map<String, Value> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.iter().map(|r| r.to_string()).collect();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(d) = definitions.get(&name) {
            refs(d, &mut todo);
        }
    }
    seen.into_iter()
        .filter_map(|n| definitions.get(&n).map(|d| (n, d.clone())))
        .collect()
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str)
                && let Some(name) = r.strip_prefix("#/definitions/")
            {
                out.push(name.to_string());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The original's OpenAI shape: a sync takes no parameters; an action's
/// are its input model's properties, each described by a `- name: text`
/// line of the action's description when it has one.
fn openai_functions(configs: &[Value]) -> Vec<Value> {
    let mut functions = Vec::new();
    for c in configs {
        let provider = c["provider"]
            .as_str()
            .unwrap_or_else(|| c["providerConfigKey"].as_str().unwrap_or_default());
        for s in c["syncs"].as_array().into_iter().flatten() {
            let name = s["name"].as_str().unwrap_or_default();
            functions.push(json!({
                "name": name,
                "description": non_empty(&s["description"])
                    .unwrap_or_else(|| format!("Execute the {name} sync for {provider}")),
                "parameters": {"type": "object", "properties": {}, "required": []},
            }));
        }
        for a in c["actions"].as_array().into_iter().flatten() {
            let name = a["name"].as_str().unwrap_or_default();
            // From the action's own schema (its integration's models).
            let input = a["input"]
                .as_str()
                .and_then(|m| a["json_schema"]["definitions"].get(m));
            let mut properties = input
                .and_then(|i| i["properties"].as_object())
                .cloned()
                .unwrap_or_default();
            let description = non_empty(&a["description"]);
            for line in description.iter().flat_map(|d| d.lines()) {
                let Some(item) = line.trim().strip_prefix('-') else {
                    continue;
                };
                if let Some((param, text)) = item.trim().split_once(':')
                    && let Some(Value::Object(p)) = properties.get_mut(param.trim())
                {
                    p.insert("description".into(), json!(text.trim()));
                }
            }
            functions.push(json!({
                "name": name,
                "description": description
                    .unwrap_or_else(|| format!("Execute the {name} action for {provider}")),
                "parameters": {
                    "type": "object",
                    "properties": properties,
                    "required": input.map(|i| i["required"].clone()).filter(Value::is_array).unwrap_or(json!([])),
                },
            }));
        }
    }
    functions
}

fn non_empty(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// A model's fields as the original lists them (`{name, type}`): from
/// nango.yaml, the TypeScript type of each; for a zero-yaml script, whose
/// models are JSON schemas, each property's schema type (or the model it
/// names).
fn fields(
    config: Option<&sluice_nango_yaml::NangoYaml>,
    definitions: &Map<String, Value>,
    model: &str,
) -> Vec<Value> {
    if let Some(m) = config.and_then(|c| c.model(model)) {
        return m
            .fields
            .iter()
            .map(|f| {
                let mut field = json!({
                    "name": f.name,
                    "type": sluice_nango_yaml::generate::ts_type(&f.ty),
                });
                if f.optional {
                    field["optional"] = json!(true);
                }
                field
            })
            .collect();
    }
    let Some(properties) = definitions
        .get(model)
        .and_then(|d| d["properties"].as_object())
    else {
        return Vec::new();
    };
    let required: Vec<&str> = definitions[model]["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    properties
        .iter()
        .map(|(name, schema)| {
            let ty = match (&schema["type"], schema["$ref"].as_str()) {
                (Value::String(t), _) => t.clone(),
                (Value::Array(types), _) => types
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" | "),
                (_, Some(r)) => r.rsplit('/').next().unwrap_or(r).to_string(),
                _ => "any".to_string(),
            };
            let mut field = json!({"name": name, "type": ty});
            if !required.contains(&name.as_str()) {
                field["optional"] = json!(true);
            }
            field
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_actions_parameters_are_its_inputs_properties_described_by_its_description() {
        let definitions = json!({
            "Query": {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "number"}}, "required": ["q"]},
            "Page": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/definitions/Item"}}}},
            "Item": {"type": "object"},
            "Other": {"type": "object"},
        });
        let configs = [json!({
            "providerConfigKey": "gh",
            "provider": "github",
            "syncs": [{"name": "issues", "description": ""}],
            "actions": [
                {"name": "search", "description": "Searches.\n- q: what to look for\n  - n : how many\n- absent: nothing", "input": "Query",
                    "json_schema": {"definitions": {"Query": definitions["Query"]}}},
                {"name": "ping", "description": ""},
            ],
        })];
        let definitions = definitions.as_object().unwrap();
        let f = openai_functions(&configs);
        assert_eq!(f[0]["description"], "Execute the issues sync for github");
        assert_eq!(f[0]["parameters"]["properties"], json!({}));
        assert_eq!(
            f[1]["parameters"],
            json!({"type": "object", "properties": {
                "q": {"type": "string", "description": "what to look for"},
                "n": {"type": "number", "description": "how many"},
            }, "required": ["q"]})
        );
        assert_eq!(f[2]["description"], "Execute the ping action for github");
        assert_eq!(f[2]["parameters"]["required"], json!([]));
        // A script's schema holds its models and what they refer to.
        let c = closure(definitions, &["Page"]);
        assert_eq!(c.keys().collect::<Vec<_>>(), ["Item", "Page"]);
    }
}
