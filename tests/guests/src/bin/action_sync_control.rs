//! `triggerSync` or `startSync` as its input says; answers `{"ok": true}`
//! or the refusal (`code`, `message`, the API's `status`).

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_sdk::{Error, Nango, action};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    /// (integration, connection, sync, mode)
    trigger: Option<(String, String, String, Option<String>)>,
    /// (integration, syncs, connection)
    start: Option<(String, Vec<String>, Option<String>)>,
}

#[action]
fn run(nango: &Nango, input: Input) -> Result<Value, Error> {
    let result = match (input.trigger, input.start) {
        (Some((pck, cid, sync, mode)), _) => nango.trigger_sync(&pck, &cid, &sync, mode.as_deref()),
        (None, Some((pck, syncs, cid))) => {
            let syncs: Vec<&str> = syncs.iter().map(String::as_str).collect();
            nango.start_sync(&pck, &syncs, cid.as_deref())
        }
        (None, None) => Ok(()),
    };
    match result {
        Ok(()) => Ok(json!({"ok": true})),
        Err(Error::Sdk {
            code,
            message,
            payload,
        }) => Ok(json!({"error": {
            "code": code,
            "message": message,
            "status": payload.and_then(|p| p.get("status").cloned()),
        }})),
        Err(e) => Err(e),
    }
}

fn main() {}
