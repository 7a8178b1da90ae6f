//! Does nothing: the floor of instantiate + call.

use sluice_sdk::{Error, Nango, action};

#[action]
fn run(_nango: &Nango, _input: Option<serde_json::Value>) -> Result<(), Error> {
    Ok(())
}

fn main() {}
