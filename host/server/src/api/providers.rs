//! `GET /providers` and `GET /providers/:provider`: the provider catalogue
//! the server runs with (`--providers`), as the original lists it
//! (`@nangohq/node`'s `listProviders` and `getProvider`): each provider's
//! definition, aliases resolved, with its `name`. The original's
//! `logo_url` points at images its web app serves; sluice serves none and
//! leaves it out. A connect session's token reads them too (the Connect
//! UI shows each integration's fields from its provider's definition).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_runtime::providers::Provider;

use super::connect::KeyOrSession;
use super::{ApiPath, ApiQuery};
use crate::app::App;
use crate::error::{ApiError, ApiResult};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    search: Option<String>,
}

fn shown(p: &Provider) -> Value {
    let mut v = Value::Object(p.definition.clone());
    v["name"] = json!(p.name);
    v
}

/// The providers whose name or display name holds `search` (any case), or
/// all of them.
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    _auth: KeyOrSession,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    let search = match q.search {
        Some(s) if s.is_empty() || s.chars().count() > 255 => {
            return Err(ApiError::bad_request(
                "invalid_query_params",
                "`search` must be 1 to 255 characters",
            ));
        }
        s => s.map(|s| s.to_lowercase()),
    };
    let data: Vec<Value> = app
        .providers
        .sorted()
        .into_iter()
        .filter(|p| {
            search.as_ref().is_none_or(|s| {
                p.name.to_lowercase().contains(s)
                    || p.definition
                        .get("display_name")
                        .and_then(Value::as_str)
                        .is_some_and(|d| d.to_lowercase().contains(s))
            })
        })
        .map(shown)
        .collect();
    Ok(Json(json!({ "data": data })))
}

/// `GET /providers/:provider` takes no query parameters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

pub(crate) async fn get(
    State(app): State<Arc<App>>,
    _auth: KeyOrSession,
    ApiPath(name): ApiPath<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> ApiResult<Json<Value>> {
    let provider = app
        .providers
        .get(&name)
        .ok_or_else(|| ApiError::not_found("not_found", format!("Unknown provider {name}")))?;
    Ok(Json(json!({ "data": shown(provider) })))
}
