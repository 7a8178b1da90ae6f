//! `POST /sync/trigger` (§4.3): run syncs now for one connection (or every
//! connection of the integration), with a sync mode.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_runtime::records::ConnectionRef;

use super::{ConnectionHeaders, Env, JsonBody};
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::runner::{self, SyncMode};

#[derive(Deserialize)]
#[serde(untagged)]
pub enum SyncName {
    Name(String),
    Variant { name: String, variant: String },
}

#[derive(Deserialize)]
pub struct TriggerBody {
    syncs: Vec<SyncName>,
    provider_config_key: Option<String>,
    connection_id: Option<String>,
    #[serde(default)]
    sync_mode: Option<SyncMode>,
    /// Deprecated: `true` means `full_refresh_and_clear_cache`.
    #[serde(default)]
    full_resync: Option<bool>,
}

pub async fn trigger(
    State(app): State<Arc<App>>,
    Env(env): Env,
    headers: ConnectionHeaders,
    JsonBody(body): JsonBody<TriggerBody>,
) -> ApiResult<Json<Value>> {
    let pck = body
        .provider_config_key
        .or(headers.provider_config_key)
        .ok_or_else(|| ApiError::invalid_body("`provider_config_key` is required"))?;
    let mode = match (body.sync_mode, body.full_resync) {
        (Some(m), _) => m,
        (None, Some(true)) => SyncMode::FullRefreshAndClearCache,
        _ => SyncMode::Incremental,
    };
    if body.syncs.is_empty() {
        return Err(ApiError::invalid_body(
            "`syncs` must name at least one sync",
        ));
    }
    let connections: Vec<String> = match body.connection_id.or(headers.connection_id) {
        Some(cid) => vec![cid],
        None => env
            .store
            .connections(Some(&pck))
            .await?
            .into_iter()
            .map(|c| c.connection_id)
            .collect(),
    };
    let mut runs = Vec::new();
    for cid in connections {
        let conn = ConnectionRef {
            provider_config_key: pck.clone(),
            connection_id: cid,
        };
        for s in &body.syncs {
            let (name, variant) = match s {
                SyncName::Name(n) => match n.split_once("::") {
                    Some((n, v)) => (n.to_string(), v.to_string()),
                    None => (n.clone(), "base".to_string()),
                },
                SyncName::Variant { name, variant } => (name.clone(), variant.clone()),
            };
            let summary = runner::run_sync(&app, &env, &conn, &name, &variant, mode).await?;
            runs.push(json!({
                "connection_id": conn.connection_id,
                "sync": name,
                "variant": variant,
                "success": summary.success,
                "results": summary.results,
                "error": summary.error,
            }));
        }
    }
    Ok(Json(json!({ "success": true, "runs": runs })))
}
