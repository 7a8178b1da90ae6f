//! Calls the connection, metadata, environment and trigger-action imports
//! and reports what it saw.

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_sdk::{Error, Nango, action};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    set_metadata: Option<Value>,
    update_metadata: Option<Value>,
    trigger: Option<(String, String, String, Value)>,
    /// Another connection to read: (integration, connection id).
    other: Option<(String, String)>,
    /// This connection again, `(force_refresh, refresh_token)`.
    refreshed: Option<(bool, bool)>,
}

#[action]
fn run(nango: &Nango, input: Input) -> Result<Value, Error> {
    let before: Value = nango.metadata()?;
    if let Some(m) = &input.set_metadata {
        nango.set_metadata(m)?;
    }
    if let Some(m) = &input.update_metadata {
        nango.update_metadata(m)?;
    }
    let after: Value = nango.metadata()?;
    let triggered = match &input.trigger {
        Some((pck, cid, name, action_input)) => {
            Some(nango.trigger_action::<Value>(pck, cid, name, action_input)?)
        }
        None => None,
    };
    let other = match &input.other {
        Some((pck, cid)) => Some(nango.connection_for(pck, cid)?),
        None => None,
    };
    let refreshed = match input.refreshed {
        Some((force, refresh_token)) => {
            Some(nango.connection_with(None, None, force, refresh_token)?)
        }
        None => None,
    };
    let info = nango.info();
    Ok(json!({
        "before": before,
        "after": after,
        "connection": nango.connection()?,
        "env": nango.environment_variables()?,
        "webhook_url": nango.webhook_url()?,
        "info": {
            "connection_id": info.connection_id,
            "provider_config_key": info.provider_config_key,
            "provider": info.provider,
            "environment": info.environment_name,
            "script": info.script_name,
        },
        "triggered": triggered,
        "other": other,
        "refreshed": refreshed,
    }))
}

fn main() {}
