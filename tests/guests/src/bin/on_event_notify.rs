//! An event script that tells the upstream it ran: `POST /events` with its
//! script name and connection, and fails when the connection's metadata
//! says `{"fail_events": true}` (an event script's failure must not block
//! what it is about). With `{"trigger_sync": "<sync>"}` it first asks for
//! a run of that sync of its connection, and tells the upstream how that
//! went (`"trigger": "ok"` or the refusal's code).

use serde_json::{Value, json};
use sluice_sdk::{Error, Nango, on_event};

#[on_event]
fn run(nango: &Nango) -> Result<(), Error> {
    let info = nango.info();
    let metadata: Value = nango.metadata().unwrap_or(Value::Null);
    let trigger = match metadata["trigger_sync"].as_str() {
        Some(sync) => {
            match nango.trigger_sync(&info.provider_config_key, &info.connection_id, sync, None) {
                Ok(()) => json!("ok"),
                Err(Error::Sdk { code, .. }) => json!(code),
                Err(e) => return Err(e),
            }
        }
        None => Value::Null,
    };
    nango
        .post("/events")
        .json(&json!({"script": info.script_name, "connection": info.connection_id, "trigger": trigger}))
        .send()?;
    if metadata["fail_events"] == json!(true) {
        return Err(Error::msg("the event script was told to fail"));
    }
    Ok(())
}

fn main() {}
