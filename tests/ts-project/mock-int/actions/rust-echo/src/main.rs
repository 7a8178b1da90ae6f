//! The same contract from Rust: `sluice compile` builds this crate because
//! nango.yaml declares an action named after it.

use serde_json::{Value, json};
use sluice_sdk::{Error, Nango, action};

#[action]
fn run(nango: &Nango, input: Value) -> Result<Value, Error> {
    Ok(json!({
        "input": input,
        "language": "rust",
        "script": nango.info().script_name,
    }))
}

fn main() {}
