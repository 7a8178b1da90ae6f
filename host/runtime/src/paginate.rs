//! `nango.paginate`: cursor, link and offset pagination kept on the host.
//!
//! The effective config is the provider's `proxy.paginate` with the script's
//! keys over it. Stop conditions are the original's: an empty or missing page
//! ends the pagination before it is yielded; a cursor that is an empty string
//! or not a string/number ends it after; offset pagination with a `limit`
//! ends after a short page; link pagination ends when there is no next link.
//! A zero-yaml script's link pagination is the newer SDK's (nango-zero.md
//! §5.6 step 6): every page is yielded, empty or missing too, the body's
//! link is taken when the header gives none, and a link that repeats ends
//! it.

use serde_json::{Map, Value};
use url::Url;

use crate::bindings::http::{Body, HttpError, Method, Page, Query, Request};
use crate::host::HostState;
use crate::providers::Provider;
use crate::proxy::nango_error;

/// The state of one pagination (a `paginator` resource).
#[derive(Debug, Clone)]
pub struct Paginator {
    req: Request,
    strategy: Strategy,
    response_path: Option<String>,
    limit: Option<usize>,
    in_body: bool,
    done: bool,
    /// The zero-yaml SDK's link rules (see the module's doc).
    zero_yaml: bool,
    /// The last link followed (zero-yaml: the same one again ends it).
    previous_link: Option<String>,
}

#[derive(Debug, Clone)]
enum Strategy {
    Cursor {
        name: String,
        path: String,
    },
    Link {
        rel: Option<String>,
        body_path: Option<String>,
    },
    Offset {
        name: String,
        next: u64,
        per_page: bool,
    },
}

fn invalid(message: impl Into<String>) -> HttpError {
    HttpError::Failed(nango_error("invalid_pagination_config", message))
}

fn str_field<'a>(config: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    config
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The `paginator` resource: against the upstream, or over recordings.
#[derive(Debug, Clone)]
pub enum Pager {
    Live(Box<Paginator>),
    Replay(Box<crate::replay::ReplayPager>),
}

/// The provider's `proxy.paginate` with the script's keys over it.
pub(crate) fn merged_config(
    provider: &Provider,
    script_config: Option<Map<String, Value>>,
) -> Result<Map<String, Value>, HttpError> {
    let mut config = provider.proxy.paginate.clone().unwrap_or_default();
    if provider.proxy.paginate.is_none()
        && script_config
            .as_ref()
            .is_none_or(|c| c.get("type").is_none())
    {
        return Err(invalid(
            "There was no pagination configuration for this integration or configuration passed in.",
        ));
    }
    config.extend(script_config.unwrap_or_default());
    Ok(config)
}

impl Paginator {
    /// Validates the merged config and prepares the first request.
    pub(crate) fn new(req: Request, config: Map<String, Value>) -> Result<Self, HttpError> {
        let kind = str_field(&config, "type")
            .ok_or_else(|| invalid("Pagination type is required"))?
            .to_ascii_lowercase();
        let limit_value = config.get("limit").filter(|v| !v.is_null()).cloned();
        let limit_name = str_field(&config, "limit_name_in_request").map(str::to_string);
        let strategy = match kind.as_str() {
            "cursor" => {
                let name = str_field(&config, "cursor_name_in_request").ok_or_else(|| {
                    invalid("Param cursor_name_in_request is required for cursor pagination")
                })?;
                let path = str_field(&config, "cursor_path_in_response").ok_or_else(|| {
                    invalid("Param cursor_path_in_response is required for cursor pagination")
                })?;
                if limit_value.is_some() && limit_name.is_none() {
                    return Err(invalid(
                        "Param limit_name_in_request is required for cursor pagination when limit is set",
                    ));
                }
                Strategy::Cursor {
                    name: name.to_string(),
                    path: path.to_string(),
                }
            }
            "link" => {
                let rel = str_field(&config, "link_rel_in_response_header").map(str::to_string);
                let body_path =
                    str_field(&config, "link_path_in_response_body").map(str::to_string);
                if rel.is_none() && body_path.is_none() {
                    return Err(invalid(
                        "Either param link_rel_in_response_header or link_path_in_response_body is required for link pagination",
                    ));
                }
                Strategy::Link { rel, body_path }
            }
            "offset" => {
                let name = str_field(&config, "offset_name_in_request").ok_or_else(|| {
                    invalid("Param offset_name_in_request is required for offset pagination")
                })?;
                let start = match config.get("offset_start_value") {
                    Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
                    Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
                    _ => 0,
                };
                let per_page = str_field(&config, "offset_calculation_method") == Some("per-page");
                Strategy::Offset {
                    name: name.to_string(),
                    next: start,
                    per_page,
                }
            }
            other => {
                return Err(invalid(format!(
                    "Pagination type {other} is not supported. Only cursor, link and offset pagination types are supported."
                )));
            }
        };
        let in_body = match config.get("in_body") {
            Some(Value::Bool(b)) => *b,
            _ => matches!(req.method, Method::Post | Method::Put | Method::Patch),
        };
        let mut paginator = Paginator {
            req,
            strategy,
            response_path: str_field(&config, "response_path").map(str::to_string),
            limit: limit_value.as_ref().and_then(as_usize),
            in_body,
            done: false,
            zero_yaml: false,
            previous_link: None,
        };
        if let (Some(name), Some(limit)) = (limit_name, limit_value) {
            paginator.set_param(&name, limit)?;
        }
        Ok(paginator)
    }

    /// With the zero-yaml SDK's link rules (see the module's doc).
    pub(crate) fn zero_yaml(mut self, zero_yaml: bool) -> Self {
        self.zero_yaml = zero_yaml;
        self
    }

    /// Sets a pagination parameter in the query (as a string) or the body
    /// (as JSON, dotted names expanded into nested objects).
    fn set_param(&mut self, name: &str, value: Value) -> Result<(), HttpError> {
        if self.in_body {
            // Each dot nests one more object; past serde_json's own parse
            // limit the body could not be read back, and far past it
            // writing it would overflow the stack.
            if name.split('.').count() > MAX_NAME_DEPTH {
                return Err(invalid(format!(
                    "a pagination parameter name in the body nests at most {MAX_NAME_DEPTH} objects (dotted parts), this one has {}",
                    name.split('.').count()
                )));
            }
            let mut body = match self.req.data.take() {
                None => Map::new(),
                Some(Body::Json(text)) => match serde_json::from_slice(&text) {
                    Ok(Value::Object(m)) => m,
                    _ => return Err(invalid("pagination in the body needs a JSON object body")),
                },
                Some(_) => return Err(invalid("pagination in the body needs a JSON object body")),
            };
            set_dotted(&mut body, name, value);
            self.req.data = Some(Body::Json(Value::Object(body).to_string().into()));
        } else {
            let mut params = match self.req.params.take() {
                None => Map::new(),
                Some(Query::Object(json)) => match serde_json::from_slice(&json) {
                    Ok(Value::Object(m)) => m,
                    _ => return Err(invalid("params must be a JSON object")),
                },
                Some(Query::Text(t)) => {
                    url::form_urlencoded::parse(t.trim_start_matches('?').as_bytes())
                        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                        .collect()
                }
            };
            params.insert(name.to_string(), value);
            self.req.params = Some(Query::Object(Value::Object(params).to_string().into()));
        }
        Ok(())
    }

    /// Fetches the next page: the next non-empty one, but for a zero-yaml
    /// script's link pagination, which yields every page.
    pub(crate) async fn next_page(
        &mut self,
        state: &mut HostState,
    ) -> Result<Option<Page>, HttpError> {
        if self.done {
            return Ok(None);
        }
        if let Strategy::Offset { name, next, .. } = &self.strategy {
            let (name, next) = (name.clone(), *next);
            let value = if self.in_body {
                Value::from(next)
            } else {
                Value::String(next.to_string())
            };
            self.set_param(&name, value)?;
        }
        // The request is built and sent again for every page.
        state.charge(request_text(&self.req));
        let response = crate::proxy::send(state, &self.req).await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                self.done = true;
                return Err(e);
            }
        };
        let max_values = crate::batch::max_values(state.limits().max_response_bytes);
        let (response, data) = parse_page(response, max_values).await;
        let data = data.map_err(|e| {
            self.done = true;
            HttpError::Failed(match e {
                PageError::Json(e) => nango_error(
                    "invalid_response",
                    format!("pagination needs a JSON response: {e}"),
                ),
                PageError::TooManyValues { max } => nango_error(
                    "response_too_large",
                    format!(
                        "pagination: the page holds more than {max} JSON values, the most sluice parses of one page (one per {} bytes of the response limit)",
                        crate::batch::BYTES_PER_VALUE
                    ),
                ),
            })
        })?;
        // Borrowed, not copied (a page may be megabytes).
        let items: &Value = match (&data, &self.response_path) {
            (None, _) => &NO_ITEMS,
            (Some(data), Some(p)) => get_path(data, p).unwrap_or(&Value::Null),
            (Some(data), None) => data,
        };
        let len = match items {
            Value::Array(a) => a.len(),
            _ => 0,
        };
        let every_page = self.zero_yaml && matches!(self.strategy, Strategy::Link { .. });
        if len == 0 && !every_page {
            self.done = true;
            return Ok(None);
        }
        // What a script's `on_page` sees as `nextPageParam`: the cursor as
        // read, the link, or (as the original) the offset of this page.
        let mut next_param = Value::Null;
        // The original calls no `on_page` after an offset pagination's
        // short last page.
        let mut on_page = true;
        let next = match &mut self.strategy {
            Strategy::Cursor { name, path } => {
                let name = name.clone();
                let cursor = match data.as_ref().and_then(|d| get_path(d, path)) {
                    Some(Value::String(s)) if !s.trim().is_empty() => {
                        Some(Value::String(s.trim().to_string()))
                    }
                    Some(Value::Number(n)) => Some(Value::Number(n.clone())),
                    _ => None,
                };
                match cursor {
                    Some(c) => {
                        let shown = match &c {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        next_param = c.clone();
                        self.set_param(&name, c)?;
                        Some(shown)
                    }
                    None => {
                        self.done = true;
                        None
                    }
                }
            }
            Strategy::Link { rel, body_path } => {
                let from_header = rel.as_deref().and_then(|rel| {
                    response
                        .headers
                        .iter()
                        .find(|(n, _)| n == "link")
                        .and_then(|(_, v)| link_with_rel(v, rel))
                });
                let from_body = || {
                    body_path.as_deref().and_then(|path| {
                        data.as_ref()
                            .and_then(|d| get_path(d, path))
                            .and_then(Value::as_str)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                    })
                };
                let link = match (self.zero_yaml, rel.is_some()) {
                    // The newer SDK falls back to the body's link.
                    (true, _) => from_header.or_else(from_body),
                    (false, true) => from_header,
                    (false, false) => from_body(),
                };
                // The newer SDK stops at a link it just followed.
                let link = link.filter(|l| {
                    !(self.zero_yaml && self.previous_link.as_deref() == Some(l.as_str()))
                });
                if self.zero_yaml {
                    self.previous_link.clone_from(&link);
                }
                match link {
                    Some(link) => {
                        match Url::parse(&link) {
                            Ok(url) if url.has_host() => {
                                self.req.base_url_override =
                                    Some(url.origin().ascii_serialization());
                                let mut endpoint = url.path().to_string();
                                if let Some(q) = url.query() {
                                    endpoint.push('?');
                                    endpoint.push_str(q);
                                }
                                self.req.endpoint = endpoint;
                            }
                            _ => self.req.endpoint = link.clone(),
                        }
                        self.req.params = None;
                        next_param = Value::String(link.clone());
                        Some(link)
                    }
                    None => {
                        self.done = true;
                        None
                    }
                }
            }
            Strategy::Offset { next, per_page, .. } => {
                if self.limit.is_some_and(|limit| len < limit) {
                    self.done = true;
                    on_page = false;
                    None
                } else {
                    // The original's `on_page` gets this page's offset.
                    next_param = Value::from(*next);
                    *next = next.saturating_add(if *per_page { 1 } else { len as u64 });
                    Some(next.to_string())
                }
            }
        };
        state.last_page = on_page.then_some((response, next_param));
        Ok(Some(Page {
            items: items.to_string().into(),
            next,
        }))
    }
}

/// The bytes of a request the host copies and parses again for each page:
/// its body and params.
fn request_text(req: &Request) -> usize {
    let body = match &req.data {
        None => 0,
        Some(Body::Json(t) | Body::Text(t)) => t.len(),
        Some(Body::Bytes(b)) => b.len(),
        Some(Body::Multipart(fields)) => fields.iter().map(|(k, v)| k.len() + v.len()).sum(),
    };
    let params = match &req.params {
        None => 0,
        Some(Query::Text(t)) => t.len(),
        Some(Query::Object(j)) => j.len(),
    };
    body + params
}

/// Why a page's body was not read.
#[derive(Debug)]
enum PageError {
    Json(serde_json::Error),
    /// More JSON values than a page may hold
    /// ([`crate::batch::max_values`] of the response limit).
    TooManyValues {
        max: usize,
    },
}

/// [`page_data`] of a response, a large one on a blocking thread rather
/// than the async worker running the script.
async fn parse_page(
    mut response: crate::bindings::types::Response,
    max_values: usize,
) -> (
    crate::bindings::types::Response,
    Result<Option<Value>, PageError>,
) {
    if response.body.len() < crate::batch::OFF_WORKER_AT {
        let data = page_data(&response.body, max_values);
        return (response, data);
    }
    let body = std::mem::take(&mut response.body);
    let parsed = crate::batch::off_worker(move || {
        let data = page_data(&body, max_values);
        (body, data)
    })
    .await;
    match parsed {
        Some((body, data)) => {
            response.body = body;
            (response, data)
        }
        // Parsing does not panic; were it to, the page is not read.
        None => (
            response,
            Err(PageError::Json(serde::de::Error::custom(
                "the page's parse failed",
            ))),
        ),
    }
}

/// A page's body as JSON, as the original's axios reads it: a UTF-8 byte
/// order mark before it is dropped, and an empty body (a 204, or a last
/// page answered with nothing) is `None`, an empty page ([`NO_ITEMS`]),
/// which ends the pagination as one does, rather than an error that fails
/// the sync. One of more than `max_values` values
/// ([`crate::batch::value_count`]) is refused before it is parsed: a
/// page of `[0,0,…]` within the response limit would take ~40 times its
/// size. A page is one response, parsed whole: bounded as one record of
/// a batch is. A body shorter than `max_values` bytes is not counted: it
/// holds at most one value more than its bytes.
fn page_data(body: &[u8], max_values: usize) -> Result<Option<Value>, PageError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.trim_ascii().is_empty() {
        return Ok(None);
    }
    if body.len() >= max_values && crate::batch::value_count(body) > max_values {
        return Err(PageError::TooManyValues { max: max_values });
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(PageError::Json)
}

/// The items of a page answered with an empty body.
static NO_ITEMS: Value = Value::Array(Vec::new());

fn as_usize(v: &Value) -> Option<usize> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Most dotted parts of a pagination parameter name set in the body.
const MAX_NAME_DEPTH: usize = 32;

fn set_dotted(body: &mut Map<String, Value>, name: &str, value: Value) {
    let mut parts = name.split('.').peekable();
    let mut current = body;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_string(), value);
            return;
        }
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        current = next;
    }
}

/// A lodash-style path (`a.b`, `a[0].b`, `a.0.b`) into a JSON value; as
/// in lodash, a key that exists as written (`@odata.nextLink`) wins.
pub(crate) fn get_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = value.as_object().and_then(|m| m.get(path)) {
        return Some(v);
    }
    let mut current = value;
    for segment in path.split('.') {
        let mut rest = segment;
        let name_end = rest.find('[').unwrap_or(rest.len());
        let name = &rest[..name_end];
        if !name.is_empty() {
            current = match current {
                Value::Object(m) => m.get(name)?,
                Value::Array(a) => a.get(name.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        rest = &rest[name_end..];
        while let Some(inner) = rest.strip_prefix('[') {
            let close = inner.find(']')?;
            let index: usize = inner[..close].trim_matches(['"', '\'']).parse().ok()?;
            current = current.as_array()?.get(index)?;
            rest = &inner[close + 1..];
        }
    }
    Some(current)
}

/// The URL of the `rel` link in an RFC 8288 `Link` header, read as the
/// original's `parse-link-header` reads it: links are split where a comma
/// is followed by `<` (a comma inside a URL, `?fields=a,b`, stays), a
/// part that is not `<url>; params` is skipped, and of several links with
/// the same rel the last one is taken.
pub(crate) fn link_with_rel(header: &str, rel: &str) -> Option<String> {
    let mut found = None;
    for part in link_parts(header) {
        let part = part.trim();
        let Some((target, params)) = part.split_once('>') else {
            continue;
        };
        let url = target.strip_prefix('<').unwrap_or(target);
        let matches = params.split(';').skip(1).any(|param| {
            param.split_once('=').is_some_and(|(key, value)| {
                key.trim().eq_ignore_ascii_case("rel")
                    && value
                        .trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case(rel))
            })
        });
        if matches {
            found = Some(url.to_string());
        }
    }
    found
}

/// A `Link` header's links: split at each comma followed by optional
/// whitespace and `<` (`parse-link-header`'s `/,\s*</`), the `<` kept.
fn link_parts(header: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(header);
    std::iter::from_fn(move || {
        let text = rest?;
        let mut from = 0;
        while let Some(comma) = text[from..].find(',').map(|i| from + i) {
            let after = &text[comma + 1..];
            if after.trim_start().starts_with('<') {
                rest = Some(after);
                return Some(&text[..comma]);
            }
            from = comma + 1;
        }
        rest = None;
        Some(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        let v = json!({"a": {"b": [{"c": 1}]}, "x": [5, 6]});
        assert_eq!(get_path(&v, "a.b[0].c"), Some(&json!(1)));
        assert_eq!(get_path(&v, "a.b.0.c"), Some(&json!(1)));
        assert_eq!(get_path(&v, "x[1]"), Some(&json!(6)));
        assert_eq!(get_path(&v, "a.zz"), None);
    }

    #[test]
    fn link_header() {
        let h =
            r#"<https://api.x.com/i?page=2>; rel="next", <https://api.x.com/i?page=9>; rel="last""#;
        assert_eq!(
            link_with_rel(h, "next").as_deref(),
            Some("https://api.x.com/i?page=2")
        );
        assert_eq!(link_with_rel(h, "prev"), None);
    }

    #[test]
    fn a_link_header_is_split_only_where_a_link_starts() {
        // A comma inside a URL stays in it (split on every comma, the next
        // link was lost and pagination stopped after the first page).
        let h = r#"<https://api.x.com/i?fields=a,b&page=2>; rel="next", <https://api.x.com/i?fields=a,b&page=9>; rel="last""#;
        assert_eq!(
            link_with_rel(h, "next").as_deref(),
            Some("https://api.x.com/i?fields=a,b&page=2")
        );
        assert_eq!(
            link_with_rel(h, "last").as_deref(),
            Some("https://api.x.com/i?fields=a,b&page=9")
        );
        // A malformed part is skipped, not the end of the whole header.
        let h = r#"garbage, <https://api.x.com/i?page=2>; rel="next""#;
        assert_eq!(
            link_with_rel(h, "next").as_deref(),
            Some("https://api.x.com/i?page=2")
        );
        let h = r#"<https://api.x.com/i?page=1>; rel=prev,<https://api.x.com/i?page=3>;rel="next last""#;
        assert_eq!(
            link_with_rel(h, "next").as_deref(),
            Some("https://api.x.com/i?page=3")
        );
        assert_eq!(
            link_with_rel(h, "prev").as_deref(),
            Some("https://api.x.com/i?page=1")
        );
        assert_eq!(link_with_rel("", "next"), None);
        assert_eq!(link_with_rel(",,<", "next"), None);
    }

    #[test]
    fn a_page_body_may_be_empty_or_start_with_a_byte_order_mark() {
        let max = usize::MAX;
        assert_eq!(page_data(b"", max).ok(), Some(None));
        assert_eq!(page_data(b" \r\n", max).ok(), Some(None));
        assert_eq!(
            page_data(b"\xEF\xBB\xBF[1]", max).ok(),
            Some(Some(json!([1])))
        );
        assert!(page_data(b"<html>", max).is_err());
    }

    #[test]
    fn a_key_with_a_dot_is_found_as_written() {
        let body = serde_json::json!({"@odata.nextLink": "https://x/next", "a": {"b": 1}});
        assert_eq!(
            get_path(&body, "@odata.nextLink"),
            Some(&Value::String("https://x/next".into()))
        );
        assert_eq!(get_path(&body, "a.b"), Some(&serde_json::json!(1)));
    }

    #[test]
    fn a_body_parameter_name_nesting_past_the_cap_is_refused() {
        let req = |name: &str| {
            let config = json!({
                "type": "offset",
                "offset_name_in_request": "offset",
                "limit_name_in_request": name,
                "limit": 10,
            });
            let req = Request {
                method: Method::Post,
                endpoint: "/x".into(),
                headers: vec![],
                params: None,
                data: None,
                retries: 0,
                retry_on: vec![],
                retry_header: None,
                base_url_override: None,
                decompress: false,
                provider_config_key: None,
                connection_id: None,
            };
            Paginator::new(req, config.as_object().unwrap().clone())
        };
        let ok = req(&["a"; MAX_NAME_DEPTH].join(".")).map(|p| p.req.data);
        assert!(matches!(ok, Ok(Some(Body::Json(_)))));
        match req(&"a.".repeat(500_000)) {
            Err(HttpError::Failed(e)) => {
                assert_eq!(e.code, "invalid_pagination_config");
                assert!(e.message.contains("at most 32"), "{}", e.message);
            }
            _ => panic!("a name 500,000 objects deep was accepted"),
        }
    }

    #[test]
    fn dotted_body_keys_nest() {
        let mut body = Map::new();
        set_dotted(&mut body, "page.cursor", json!("c"));
        set_dotted(&mut body, "page.size", json!(10));
        assert_eq!(
            Value::Object(body),
            json!({"page": {"cursor": "c", "size": 10}})
        );
    }
}
