//! Sends one request described by the input and returns what came back.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sluice_sdk::{Error, Method, Nango, action};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    method: Option<String>,
    endpoint: String,
    params: Map<String, Value>,
    query: Option<String>,
    headers: Map<String, Value>,
    json: Option<Value>,
    retries: u32,
    retry_on: Vec<u16>,
    retry_after_header: Option<String>,
    retry_at_header: Option<String>,
    base_url_override: Option<String>,
    connection: Option<(String, String)>,
}

#[action]
fn run(nango: &Nango, input: Input) -> Result<Value, Error> {
    let method = match input
        .method
        .as_deref()
        .unwrap_or("GET")
        .to_ascii_uppercase()
        .as_str()
    {
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        _ => Method::Get,
    };
    let mut req = nango
        .request(method, input.endpoint)
        .retries(input.retries)
        .retry_on(&input.retry_on);
    for (k, v) in input.params {
        req = req.param(k, v);
    }
    if let Some(q) = input.query {
        req = req.query(q);
    }
    for (k, v) in input.headers {
        req = req.header(k, v.as_str().unwrap_or_default());
    }
    if let Some(body) = &input.json {
        req = req.json(body);
    }
    if input.retry_at_header.is_some() || input.retry_after_header.is_some() {
        req = req.retry_header(
            input.retry_at_header.as_deref(),
            input.retry_after_header.as_deref(),
        );
    }
    if let Some(b) = input.base_url_override {
        req = req.base_url_override(b);
    }
    if let Some((pck, cid)) = input.connection {
        req = req.connection(pck, cid);
    }
    let resp = req.send()?;
    let headers: Map<String, Value> = resp
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
        .collect();
    Ok(json!({ "status": resp.status, "headers": headers, "data": resp.data() }))
}

fn main() {}
