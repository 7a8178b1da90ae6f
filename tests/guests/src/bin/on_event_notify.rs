//! An event script that tells the upstream it ran: `POST /events` with its
//! script name and connection, and fails when the connection's metadata
//! says `{"fail_events": true}` (an event script's failure must not block
//! what it is about).

use serde_json::{Value, json};
use sluice_sdk::{Error, Nango, on_event};

#[on_event]
fn run(nango: &Nango) -> Result<(), Error> {
    let info = nango.info();
    nango
        .post("/events")
        .json(&json!({"script": info.script_name, "connection": info.connection_id}))
        .send()?;
    let metadata: Value = nango.metadata().unwrap_or(Value::Null);
    if metadata["fail_events"] == json!(true) {
        return Err(Error::msg("the event script was told to fail"));
    }
    Ok(())
}

fn main() {}
