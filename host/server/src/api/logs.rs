//! `GET /logs` (search, newest first, by page), `GET /logs/export` (NDJSON,
//! oldest first, streamed in constant memory) and `GET /executions` (a
//! connection's execution history).

use axum::Json;
use axum::body::Body;
use axum::extract::RawQuery;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::Env;
use crate::error::{ApiError, ApiResult};
use crate::logs::{EXECUTIONS, Filter, LOGS, level_rank};

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_query_params", message)
}

fn time(k: &str, v: &str) -> ApiResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| invalid(format!("`{k}` must be an ISO 8601 date-time, got `{v}`")))
}

/// Where a page of lines starts: an execution id and a line index.
type Cursor = (String, usize);

/// The filter, limit and cursor of a query string.
fn parse(raw: Option<&str>, paged: bool) -> ApiResult<(Filter, usize, Option<Cursor>)> {
    let mut f = Filter::default();
    let mut limit = 100;
    let mut cursor = None;
    let mut seen = std::collections::HashSet::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let v = v.into_owned();
        // One value a filter (under either of its names): a second would
        // silently replace the first.
        let canonical = match k.as_ref() {
            "integration" => "provider_config_key",
            "text" => "q",
            other => other,
        };
        if !seen.insert(canonical.to_string()) {
            return Err(invalid(format!("`{k}` is given more than once")));
        }
        match k.as_ref() {
            "provider_config_key" | "integration" => f.provider_config_key = Some(v),
            "connection_id" => f.connection_id = Some(v),
            "script" => f.script = Some(v),
            "execution_id" => f.execution_id = Some(v),
            "q" | "text" => f.text = Some(v),
            "level" => {
                f.level = Some(level_rank(&v).ok_or_else(|| {
                    invalid(format!("`level` is debug, info, warn or error, got `{v}`"))
                })?)
            }
            "from" => f.from = Some(time("from", &v)?),
            "to" => f.to = Some(time("to", &v)?),
            "limit" if paged => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| invalid(format!("`limit` is 1 to 1000, got `{v}`")))?;
            }
            "cursor" if paged => {
                let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&v)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| invalid(format!("`cursor` is not a cursor: `{v}`")))?;
                let (id, i) = text
                    .rsplit_once('|')
                    .and_then(|(id, i)| Some((id.to_string(), i.parse().ok()?)))
                    .ok_or_else(|| invalid(format!("`cursor` is not a cursor: `{v}`")))?;
                cursor = Some((id, i));
            }
            other => return Err(invalid(format!("unknown query parameter `{other}`"))),
        }
    }
    Ok((f, limit, cursor))
}

/// A page of `GET /logs`: its lines written out as they were made.
#[derive(serde::Serialize)]
pub struct LogPage {
    logs: Vec<Box<serde_json::value::RawValue>>,
    next_cursor: Option<String>,
}

pub async fn search(Env(env): Env, RawQuery(raw): RawQuery) -> ApiResult<Json<LogPage>> {
    let (filter, limit, cursor) = parse(raw.as_deref(), true)?;
    let (lines, next) = filter.search(&env, limit, cursor).await?;
    let next = next.map(|(id, i)| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{id}|{i}"))
    });
    Ok(Json(LogPage {
        logs: lines,
        next_cursor: next,
    }))
}

/// Every line the filter keeps, oldest first, one JSON object per line.
pub async fn export(Env(env): Env, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let (filter, _, _) = parse(raw.as_deref(), false)?;
    let start = filter.floor(&env);
    // A page of executions at a time: memory is one page whatever the size
    // of the export, and a page is small (16 executions of at most about
    // 300 KiB each): an export a slow client reads holds a few MiB.
    const PAGE: usize = 16;
    let stream = futures_util::stream::unfold(
        (env, filter, start, false),
        |(env, filter, after, done)| async move {
            if done {
                return None;
            }
            let page: Vec<(String, Option<Vec<u8>>)> = match env
                .store
                // Other executions' logs are passed over in the store.
                .docs_raw(LOGS, "", after.as_deref(), PAGE, false, &mut |raw| {
                    filter.may_keep(raw)
                })
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    let line = json!({"error": e.to_string()}).to_string() + "\n";
                    return Some((Ok::<_, std::io::Error>(line), (env, filter, after, true)));
                }
            };
            let (last, _) = page.last()?;
            let next = Some(last.clone());
            let done = page.len() < PAGE;
            let mut chunk = String::new();
            // Executions that started after `to` (their ids say when)
            // have no line before it: the export ends there.
            let end = filter
                .to
                .map(|t| format!("{:020}-~", t.timestamp_micros().max(0)));
            for (key, raw) in &page {
                if end.as_ref().is_some_and(|e| key > e) {
                    return Some((Ok(chunk), (env, filter, next, true)));
                }
                for line in raw
                    .as_deref()
                    .map(|r| filter.lines_of(r))
                    .unwrap_or_default()
                {
                    chunk.push_str(line.get());
                    chunk.push('\n');
                }
            }
            Some((Ok(chunk), (env, filter, next, done)))
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `GET /executions?provider_config_key=&connection_id=&limit=`: newest
/// first.
pub async fn executions(Env(env): Env, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    // Only these select executions; the log filters (`q`, `level`,
    // `from`…) and cursors are `/logs`', and were once accepted here and
    // ignored.
    for (k, _) in url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        if !matches!(
            k.as_ref(),
            "provider_config_key" | "integration" | "connection_id" | "limit"
        ) {
            return Err(invalid(format!(
                "`/executions` takes `provider_config_key`, `connection_id` and `limit`, not `{k}` (search lines with `/logs`)"
            )));
        }
    }
    let (filter, limit, _) = parse(raw.as_deref(), true)?;
    let (Some(pck), Some(cid)) = (&filter.provider_config_key, &filter.connection_id) else {
        return Err(invalid(
            "`provider_config_key` and `connection_id` are required",
        ));
    };
    let prefix = format!("{pck}\u{1f}{cid}\u{1f}");
    let list: Vec<(String, Value)> = env
        .store
        .docs(EXECUTIONS, &prefix, None, limit, true)
        .await?;
    Ok(Json(json!({
        "executions": list.into_iter().map(|(_, v)| v).collect::<Vec<_>>()
    })))
}
