//! Paginates the endpoint described by the input and returns every page.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sluice_sdk::{Error, Method, Nango, action};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    endpoint: String,
    post: bool,
    params: Map<String, Value>,
    config: Option<Value>,
}

#[action]
fn run(nango: &Nango, input: Input) -> Result<Value, Error> {
    let method = if input.post {
        Method::Post
    } else {
        Method::Get
    };
    let mut req = nango.request(method, input.endpoint);
    for (k, v) in input.params {
        req = req.param(k, v);
    }
    if input.post {
        req = req.json(&json!({}));
    }
    let mut pages = Vec::new();
    for page in req.paginate::<Value>(input.config) {
        pages.push(Value::Array(page?));
    }
    Ok(json!({ "pages": pages }))
}

fn main() {}
