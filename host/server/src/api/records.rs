//! `GET /records` (§3.6): a model's records of one connection in
//! `(updated_at, id)` order, by cursor, with `modified_after`, `filter`,
//! `ids`, `limit` and `variant`.

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sluice_runtime::records::{ConnectionRef, decode_cursor, encode_cursor};
use sluice_store::{EnvStore, RecordFilter, RecordsQuery};

use super::{ConnectionHeaders, Env};
use crate::app::{App, EnvState};
use crate::error::{ApiError, ApiResult};

/// Most records one page may ask for.
pub const MAX_LIMIT: usize = 10_000;
/// Most `ids` one request may name.
pub const MAX_IDS: usize = 100;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_query_params", message)
}

/// The parsed query of a records request.
pub struct RecordsRequest {
    pub model: String,
    pub query: RecordsQuery,
}

/// Parses the query string with the original's rules; `model` may come
/// from the route instead (`/v1/*` sync endpoints).
pub fn parse_query(raw: Option<&str>, model: Option<&str>) -> ApiResult<RecordsRequest> {
    // A `/v1` sync endpoint's model is its own: `model=` does not change it.
    let fixed = model.is_some();
    let mut model = model.map(str::to_string);
    let mut variant = None;
    let mut query = RecordsQuery::default();
    // A parameter given twice (but `ids`) is refused, as the original's
    // validation refuses the array a repeated key makes; the last one won.
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let single = !matches!(k.as_ref(), "ids" | "ids[]");
        if single {
            let name = if k == "delta" {
                "modified_after"
            } else {
                k.as_ref()
            };
            if seen.iter().any(|s| s == name) {
                return Err(invalid(format!("`{k}` is given more than once")));
            }
            seen.push(name.to_string());
        }
        match k.as_ref() {
            "model" if fixed => {}
            "model" => model = Some(v.into_owned()),
            "variant" => variant = Some(v.into_owned()),
            "modified_after" | "delta" => {
                let at = DateTime::parse_from_rfc3339(&v).map_err(|_| {
                    invalid(format!("`{k}` must be an ISO 8601 date-time, got `{v}`"))
                })?;
                query.modified_after = Some(at.with_timezone(&Utc));
            }
            "limit" => {
                let n: usize = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        invalid(format!(
                            "`limit` must be a number from 1 to {MAX_LIMIT}, got `{v}`"
                        ))
                    })?;
                query.limit = n;
            }
            "cursor" => {
                if v.is_empty() || v.len() > 1000 {
                    return Err(invalid("`cursor` must be 1 to 1000 characters"));
                }
                query.after = Some(
                    decode_cursor(&v)
                        .ok_or_else(|| invalid(format!("`cursor` is not a cursor: `{v}`")))?,
                );
            }
            "filter" => {
                query.filter = Some(RecordFilter::parse(&v).ok_or_else(|| {
                    invalid(format!(
                        "`filter` is a comma list of added, updated, deleted; got `{v}`"
                    ))
                })?);
            }
            "ids" | "ids[]" => {
                if v.is_empty() || v.chars().count() > 256 {
                    return Err(invalid("each of `ids` must be 1 to 256 characters"));
                }
                query.ids.push(v.into_owned());
                if query.ids.len() > MAX_IDS {
                    return Err(invalid(format!("at most {MAX_IDS} `ids` per request")));
                }
            }
            other => {
                return Err(invalid(format!("unknown query parameter `{other}`")));
            }
        }
    }
    let model = model.ok_or_else(|| invalid("`model` is required"))?;
    let model = stored_model(&model, variant.as_deref()).map_err(invalid)?;
    Ok(RecordsRequest { model, query })
}

/// The model records are kept under: `model`, checked as the original
/// checks it, and `::variant` unless the variant is the base one.
fn stored_model(model: &str, variant: Option<&str>) -> Result<String, String> {
    let valid = model.len() <= 255
        && model.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && model.len() >= 2
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(format!(
            "`model` must match ^[A-Z][a-zA-Z0-9_-]+$, got `{model}`"
        ));
    }
    Ok(match variant {
        None | Some("base") => model.to_string(),
        Some(v)
            if v.is_empty()
                || v.len() > 255
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            return Err(format!(
                "`variant` must match ^[a-zA-Z0-9_-]+$ (at most 255 characters), got `{v}`"
            ));
        }
        Some(v) => format!("{model}::{v}"),
    })
}

/// The body of `PATCH /records/prune`, as the original's: strict.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneBody {
    model: String,
    variant: Option<String>,
    until_cursor: String,
    /// A number, or its text (the original coerces it).
    limit: Option<Value>,
}

/// How many records a prune empties when the body does not say.
pub const PRUNE_DEFAULT_LIMIT: usize = 1000;

/// `PATCH /records/prune`: empties the payload of a connection's records
/// of a model up to and including `until_cursor` (a record's
/// `_nango_metadata.cursor`), at most `limit` (1 to 10,000, 1,000 when
/// not given) at a time, oldest first. Each keeps its id and metadata and
/// shows `pruned_at`; a later sync that saves it fills it again.
/// `{count, has_more}`: with `has_more`, the same request prunes more.
pub async fn prune(
    Env(env): Env,
    headers: ConnectionHeaders,
    RawQuery(raw): RawQuery,
    super::JsonBody(body): super::JsonBody<PruneBody>,
) -> ApiResult<axum::Json<Value>> {
    if raw.as_deref().is_some_and(|q| !q.is_empty()) {
        return Err(invalid("`PATCH /records/prune` takes no query parameters"));
    }
    let bad = |m: String| ApiError::invalid_body(m);
    let model = stored_model(&body.model, body.variant.as_deref()).map_err(bad)?;
    if body.until_cursor.is_empty() || body.until_cursor.len() > 1000 {
        return Err(bad("`until_cursor` must be 1 to 1000 characters".into()));
    }
    let until = decode_cursor(&body.until_cursor).ok_or_else(|| {
        bad(format!(
            "`until_cursor` is not a records cursor: `{}`",
            body.until_cursor
        ))
    })?;
    let limit = match &body.limit {
        None | Some(Value::Null) => PRUNE_DEFAULT_LIMIT,
        Some(v) => match v {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 1.0 && *f <= MAX_LIMIT as f64)
                    .map(|f| f as u64)
            }),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        }
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| bad(format!("`limit` must be 1 to {MAX_LIMIT}, got {v}")))?,
    };
    let conn = connection_ref(&env.store, &headers).await?;
    // One at a time with the connection's deletion: a prune's writes
    // must not outlive the connection.
    let _running = env.runs.enter(&conn).await;
    let conn = connection_ref(&env.store, &headers).await?;
    let pruned = env
        .store
        .prune_records(&conn, &model, &until, limit)
        .await?;
    Ok(axum::Json(serde_json::json!({
        "count": pruned.count,
        "has_more": pruned.has_more,
    })))
}

/// The connection the headers name, checked to exist.
pub async fn connection_ref(
    store: &EnvStore,
    headers: &ConnectionHeaders,
) -> ApiResult<ConnectionRef> {
    // 400 `invalid_headers` naming the header, as the original's.
    let cid =
        (headers.connection_id.clone()).ok_or_else(|| ApiError::missing_header("Connection-Id"))?;
    let pck = (headers.provider_config_key.clone())
        .ok_or_else(|| ApiError::missing_header("Provider-Config-Key"))?;
    if !store.connection_exists(&pck, &cid).await? {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "unknown_connection",
            format!("No connection `{cid}` for integration `{pck}`"),
        ));
    }
    Ok(ConnectionRef {
        provider_config_key: pck,
        connection_id: cid,
    })
}

/// One page as the API returns it, written from the stored JSON text
/// without parsing each record.
pub async fn page(
    store: &EnvStore,
    conn: &ConnectionRef,
    req: RecordsRequest,
) -> ApiResult<Response> {
    if variant_deleted(store, conn, &req.model).await? {
        // Its records are on their way out (a DELETE cut short leaves
        // them until it is repeated): gone for readers already.
        let empty = serde_json::json!({ "records": [], "next_cursor": null });
        return Ok(axum::Json(empty).into_response());
    }
    let page = store.records_page_raw(conn, &req.model, &req.query).await?;
    // Each record's view is its stored JSON and at most ~290 bytes of
    // metadata: sized once, the page is written without growing.
    let size: usize = page.records.iter().map(|r| r.json().len() + 300).sum();
    let mut out = Vec::with_capacity(64 + size);
    out.extend_from_slice(b"{\"records\":[");
    for (i, r) in page.records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        r.write_view(&mut out)?;
    }
    out.extend_from_slice(b"],\"next_cursor\":");
    match &page.next {
        Some(p) => out.extend_from_slice(Value::String(encode_cursor(p)).to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

pub async fn get_records(
    State(_app): State<std::sync::Arc<App>>,
    Env(env): Env,
    headers: ConnectionHeaders,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let req = parse_query(raw.as_deref(), None)?;
    connection_page(&env, &headers, req).await
}

/// The page of the headers' connection. A deletion of it under way (its
/// records go a chunk at a time, the connection last) is waited for, then
/// finds no connection: a page is never of a connection half deleted.
pub async fn connection_page(
    env: &EnvState,
    headers: &ConnectionHeaders,
    req: RecordsRequest,
) -> ApiResult<Response> {
    let conn = connection_ref(&env.store, headers).await?;
    let _inside = env.runs.enter(&conn).await;
    let conn = connection_ref(&env.store, headers).await?;
    page(&env.store, &conn, req).await
}

/// `GET /records` as a standby answers it, from the store another server
/// writes (read over its own connections, so each page is as the store
/// is): the environment from the secret key, the connection's headers,
/// the same query rules and page. A connection that server is deleting
/// (its mark stored before its records go) reads as unknown, since the
/// standby cannot wait for that deletion as the server's own readers do.
pub async fn standby_page(
    store: &sluice_store::Store,
    headers: &axum::http::HeaderMap,
    raw: Option<&str>,
) -> ApiResult<Response> {
    // In the server's order: the content type, the key, the headers, the
    // query, the connection.
    if let Some(refused) = super::content_type_refused("/records", headers) {
        return Err(refused);
    }
    let key = super::bearer_key(headers)?;
    let env = store
        .environment_by_key(key)
        .ok_or_else(super::unknown_account)?;
    let headers = ConnectionHeaders::from_headers(headers)?;
    let req = parse_query(raw, None)?;
    let conn = connection_ref(&env, &headers).await?;
    let gone = || {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "unknown_connection",
            format!(
                "No connection `{}` for integration `{}`",
                conn.connection_id, conn.provider_config_key
            ),
        )
    };
    if being_deleted(&env, &conn).await? {
        return Err(gone());
    }
    let page = page(&env, &conn, req).await?;
    // A deletion that began while the page was read may have taken part
    // of it: not shown.
    if being_deleted(&env, &conn).await?
        || !env
            .connection_exists(&conn.provider_config_key, &conn.connection_id)
            .await?
    {
        return Err(gone());
    }
    Ok(page)
}

/// Whether the server holding the store is deleting `conn` or its
/// integration (their marks are stored before anything goes).
async fn being_deleted(env: &EnvStore, conn: &ConnectionRef) -> ApiResult<bool> {
    let (pck, cid) = (&conn.provider_config_key, &conn.connection_id);
    Ok(env
        .doc::<Value>(
            super::connections::DELETIONS,
            &format!("connection/{pck}/{cid}"),
        )
        .await?
        .is_some()
        || env
            .doc::<Value>(super::connections::DELETIONS, &format!("integration/{pck}"))
            .await?
            .is_some())
}

/// Whether `model` (`Model::variant`) is a model of a sync variant of
/// `conn` marked deleted.
async fn variant_deleted(store: &EnvStore, conn: &ConnectionRef, model: &str) -> ApiResult<bool> {
    let Some((base, variant)) = model.split_once("::") else {
        return Ok(false);
    };
    // Every variant document of the connection, a page at a time (not the
    // first page only): the model names its variant, not its sync, so the
    // documents of variant `variant` of each sync are looked at.
    let suffix = format!("\u{1f}{variant}");
    let prefix = crate::runner::sync_key_prefix(conn);
    let mut after: Option<String> = None;
    loop {
        let docs: Vec<(String, serde_json::Value)> = store
            .docs(
                crate::runner::SYNC_VARIANTS,
                &prefix,
                after.as_deref(),
                1000,
                false,
            )
            .await?;
        let Some((last, _)) = docs.last() else {
            return Ok(false);
        };
        after = Some(last.clone());
        if docs.iter().any(|(key, doc)| {
            key.ends_with(&suffix)
                && doc["deleting"] == true
                && doc["models"]
                    .as_array()
                    .is_none_or(|models| models.iter().any(|m| m == base))
        }) {
            return Ok(true);
        }
    }
}
