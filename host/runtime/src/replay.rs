//! Recorded responses instead of the network: the original's `mocks/`
//! layout, replayed with its test harness's rules (`sluice test`).
//!
//! A request is looked up by its identity (method, endpoint, the script's
//! params and headers with their JSON types, body) hashed with SHA-1, under
//! `mocks/nango/<method>/proxy/<endpoint>/<script>/<hash>.json`, or, when
//! that directory does not exist, the legacy `…/<script>.json` holding one
//! response body. Pagination over recordings follows the harness too (see
//! [`ReplayPager`]): a legacy file is one page, cursor and link paths are
//! plain properties.

use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};
use sha1::Digest as _;

use crate::bindings::http::{Body, HttpError, Method, Page, Query, Request};
use crate::bindings::types::{NangoError, Response};
use crate::connection::{Connection, ConnectionError, ConnectionStore};
use crate::js;
use crate::proxy::nango_error;

/// Headers a recording's identity leaves out.
const IGNORED_HEADERS: [&str; 8] = [
    "authorization",
    "user-agent",
    "nango-proxy-user-agent",
    "accept-encoding",
    "retries",
    "host",
    "connection-id",
    "provider-config-key",
];

/// Bodies longer than this (in UTF-16 units) are identified by their SHA-1.
const MAX_INLINE_DATA: usize = 1000;

/// An integration's `mocks/` folder.
#[derive(Debug, Clone)]
pub struct Replay {
    dir: PathBuf,
}

/// A recorded response; `legacy` when it came from a body-only file.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub response: Response,
    pub data: Value,
    pub legacy: bool,
}

fn mock_error(message: String) -> NangoError {
    nango_error("mock_not_found", message)
}

impl Replay {
    pub fn new(mocks_dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: mocks_dir.into(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A JSON file under `mocks/`, by its name without `.json`.
    pub fn file(&self, name: &str) -> Result<Value, NangoError> {
        let path = self.dir.join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            mock_error(format!(
                "Failed to load mock data from {}: {e}",
                path.display()
            ))
        })?;
        serde_json::from_str(&text).map_err(|e| {
            mock_error(format!(
                "Failed to load mock data from {}: {e}",
                path.display()
            ))
        })
    }

    /// The recorded response to `req` made by `script` (run as `variant`:
    /// recordings of a variant may sit in a `<script>/<variant>/` folder).
    pub(crate) fn answer(
        &self,
        script: &str,
        variant: &str,
        req: &Request,
    ) -> Result<Answer, NangoError> {
        let (identity, hash) = identity(req);
        let method = method_name(req.method);
        let endpoint = req.endpoint.strip_prefix('/').unwrap_or(&req.endpoint);
        let dir = resolve(
            &self.dir,
            &format!("nango/{method}/proxy/{endpoint}/{script}"),
        );
        let (file, legacy) = if dir.exists() {
            let dir = match dir.join(variant) {
                v if v.is_dir() => v,
                _ => dir,
            };
            (dir.join(format!("{hash}.json")), false)
        } else {
            let mut legacy = dir.clone().into_os_string();
            legacy.push(".json");
            (PathBuf::from(legacy), true)
        };
        let text = std::fs::read_to_string(&file).map_err(|e| {
            mock_error(format!(
                "Failed to load mock data from {}: {e}; the request's identity is {identity}",
                file.display()
            ))
        })?;
        let content: Value = serde_json::from_str(&text).map_err(|e| {
            mock_error(format!(
                "Failed to load mock data from {}: {e}",
                file.display()
            ))
        })?;
        if legacy {
            return Ok(Answer {
                response: response(200, Vec::new(), &content),
                data: content,
                legacy: true,
            });
        }
        let data = content.get("response").cloned().unwrap_or(Value::Null);
        let status = content
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(200);
        let headers = content.get("headers").and_then(Value::as_object);
        let pairs = headers
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), js::to_string(v)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Answer {
            response: response(status, pairs, &data),
            data,
            // The harness treats a recording without headers as legacy too.
            legacy: headers.is_none(),
        })
    }
}

fn response(status: u16, headers: Vec<(String, String)>, data: &Value) -> Response {
    Response {
        status,
        headers,
        body: serde_json::to_vec(data).unwrap_or_default(),
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "get",
        Method::Post => "post",
        Method::Put => "put",
        Method::Patch => "patch",
        Method::Delete => "delete",
    }
}

/// `path.resolve(base, rel)` kept inside `base`: `//` collapses, `.` and
/// `..` resolve, and a `..` with nothing of `rel` left to climb out of stays
/// at `base` (a script's endpoint or name cannot reach a file outside the
/// mocks folder; `RecordedCall::path`, with an empty base, writes the same
/// path a replay then reads).
fn resolve(base: &Path, rel: &str) -> PathBuf {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for part in Path::new(rel).components() {
        match part {
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(p) => parts.push(p),
            _ => {}
        }
    }
    let mut out = base.to_path_buf();
    out.extend(parts);
    out
}

/// Connections as the test harness gives them: `getConnection` and
/// `getMetadata` answer the recorded `nango/getConnection.json` and
/// `nango/getMetadata.json`, metadata writes go nowhere, and the connection
/// itself (its provider, for pagination settings) comes from `inner`.
pub struct RecordedConnections {
    replay: std::sync::Arc<Replay>,
    inner: std::sync::Arc<dyn ConnectionStore>,
}

impl RecordedConnections {
    pub fn new(replay: std::sync::Arc<Replay>, inner: std::sync::Arc<dyn ConnectionStore>) -> Self {
        Self { replay, inner }
    }

    fn file(&self, name: &str) -> Result<Value, ConnectionError> {
        self.replay
            .file(name)
            .map_err(|e| ConnectionError::Refused {
                code: e.code,
                message: e.message,
            })
    }
}

#[async_trait::async_trait]
impl ConnectionStore for RecordedConnections {
    async fn get(&self, pck: &str, cid: &str) -> Result<Connection, ConnectionError> {
        self.inner.get(pck, cid).await
    }

    async fn set_metadata(&self, _: &str, _: &str, _: Value) -> Result<(), ConnectionError> {
        Ok(())
    }

    async fn update_metadata(
        &self,
        _: &str,
        _: &str,
        _: Map<String, Value>,
        _: usize,
    ) -> Result<(), ConnectionError> {
        Ok(())
    }

    async fn script_view(&self, _: &str, _: &str) -> Result<Value, ConnectionError> {
        self.file("nango/getConnection")
    }

    /// The recording, whatever the options (as the original's harness).
    async fn script_view_with(
        &self,
        _: &str,
        _: &str,
        _: bool,
        _: bool,
    ) -> Result<Value, ConnectionError> {
        self.file("nango/getConnection")
    }

    async fn metadata(&self, _: &str, _: &str) -> Result<Value, ConnectionError> {
        self.file("nango/getMetadata")
    }
}

/// The request's identity as the harness writes it (JSON) and its SHA-1.
pub fn identity(req: &Request) -> (String, String) {
    let method = method_name(req.method);
    let endpoint = req.endpoint.strip_prefix('/').unwrap_or(&req.endpoint);
    let mut params: Vec<(String, Value)> = match &req.params {
        None => Vec::new(),
        Some(Query::Object(json)) => match serde_json::from_slice::<Value>(json) {
            Ok(Value::Object(m)) => m.into_iter().collect(),
            _ => Vec::new(),
        },
        // `Object.entries` of a string: its characters by index.
        Some(Query::Text(text)) => text
            .chars()
            .enumerate()
            .map(|(i, c)| (i.to_string(), Value::String(c.to_string())))
            .collect(),
    };
    params.sort_by(|a, b| js::compare(&a.0, &b.0));
    let mut headers: Vec<(String, Value)> = req
        .headers
        .iter()
        .filter(|(k, _)| !IGNORED_HEADERS.contains(&k.to_ascii_lowercase().as_str()))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    headers.sort_by(|a, b| js::compare(&a.0, &b.0));
    let data = req.data.as_ref().map(|body| {
        let text = match body {
            Body::Json(t) | Body::Text(t) => String::from_utf8_lossy(t).into_owned(),
            Body::Bytes(b) => base64::engine::general_purpose::STANDARD.encode(b),
            Body::Multipart(fields) => js::stringify(&Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )),
        };
        if js::length(&text) > MAX_INLINE_DATA {
            format!("sha1:{}", sha1_hex(text.as_bytes()))
        } else {
            text
        }
    });
    let text = identity_text(method, endpoint, params, headers, data.as_deref());
    let hash = sha1_hex(text.as_bytes());
    (text, hash)
}

/// The compact JSON of `{method, endpoint, params, headers, data}` (in
/// that order, `data` left out when absent; params and headers as pairs,
/// in the order given) that an identity's hash is taken of (§7.5.7).
fn identity_text(
    method: &str,
    endpoint: &str,
    params: Vec<(String, Value)>,
    headers: Vec<(String, Value)>,
    data: Option<&str>,
) -> String {
    let pairs = |entries: Vec<(String, Value)>| {
        Value::Array(
            entries
                .into_iter()
                .map(|(k, v)| Value::Array(vec![Value::String(k), v]))
                .collect(),
        )
    };
    let mut object = Map::new();
    object.insert("method".into(), Value::String(method.into()));
    object.insert("endpoint".into(), Value::String(endpoint.into()));
    object.insert("params".into(), pairs(params));
    object.insert("headers".into(), pairs(headers));
    if let Some(d) = data {
        object.insert("data".into(), Value::String(d.into()));
    }
    js::stringify(&Value::Object(object))
}

/// The hash a unified recording (`<script>.test.json`) keeps with each
/// `api` entry: SHA-1 of the compact JSON of `{method, endpoint, params,
/// headers, data}` (nango-zero §7.5.7), from the request as the entry
/// records it: the endpoint path (a leading `/proxy/` or `/` removed), its
/// params and headers as strings, sorted by key in code-unit order, and
/// the body's data identity. The original's test harness matches an entry
/// by this hash before it compares the request.
pub fn unified_hash(
    method: &str,
    path: &str,
    params: &[(String, String)],
    headers: &[(String, String)],
    data: Option<&str>,
) -> String {
    let endpoint = path
        .strip_prefix("/proxy/")
        .or_else(|| path.strip_prefix('/'))
        .unwrap_or(path);
    let sorted = |entries: &[(String, String)]| {
        let mut out: Vec<(String, Value)> = entries
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        out.sort_by(|a, b| js::compare(&a.0, &b.0));
        out
    };
    let text = identity_text(method, endpoint, sorted(params), sorted(headers), data);
    sha1_hex(text.as_bytes())
}

fn sha1_hex(bytes: &[u8]) -> String {
    sha1::Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One upstream exchange as a mock recording names and holds it
/// (`dryrun --save-responses`).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    /// Lower-case, as in the mocks layout.
    pub method: String,
    /// Without its leading `/`.
    pub endpoint: String,
    /// The request's identity (see [`identity`]) and its SHA-1.
    pub identity: Value,
    pub hash: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The endpoint as the script gave it, and its `params` when they were
    /// a string: what the zero-yaml harness's identity (WHATWG URL, the
    /// string appended as a query) is computed from, which the legacy
    /// `identity` (a string's characters by index) does not keep.
    pub target: String,
    pub params_text: Option<String>,
}

impl RecordedCall {
    pub(crate) fn new(req: &Request, response: &Response) -> Self {
        let (text, hash) = identity(req);
        Self {
            method: method_name(req.method).to_string(),
            endpoint: req
                .endpoint
                .strip_prefix('/')
                .unwrap_or(&req.endpoint)
                .to_string(),
            identity: serde_json::from_str(&text).unwrap_or(Value::Null),
            hash,
            status: response.status,
            headers: response.headers.clone(),
            body: response.body.clone(),
            target: req.endpoint.clone(),
            params_text: match &req.params {
                Some(Query::Text(text)) => Some(text.clone()),
                _ => None,
            },
        }
    }

    /// The recording's file in the hashed layout, relative to `mocks/`.
    pub fn path(&self, script: &str) -> PathBuf {
        resolve(
            Path::new(""),
            &format!(
                "nango/{}/proxy/{}/{script}/{}.json",
                self.method, self.endpoint, self.hash
            ),
        )
    }

    /// The file's content: the response body as JSON when it is JSON.
    pub fn file(&self) -> Value {
        let response = serde_json::from_slice::<Value>(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()));
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut m = Map::new();
        m.insert("method".into(), Value::String(self.method.clone()));
        m.insert("endpoint".into(), Value::String(self.endpoint.clone()));
        m.insert(
            "requestIdentityHash".into(),
            Value::String(self.hash.clone()),
        );
        m.insert("requestIdentity".into(), self.identity.clone());
        m.insert("response".into(), response);
        m.insert("status".into(), Value::from(self.status));
        m.insert("headers".into(), Value::Object(headers));
        Value::Object(m)
    }
}

/// JavaScript truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// A JavaScript number as JSON: whole numbers as integers.
fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// `value.length` when it has one.
fn length(v: &Value) -> Option<usize> {
    match v {
        Value::Array(a) => Some(a.len()),
        Value::String(s) => Some(js::length(s)),
        _ => None,
    }
}

#[derive(Debug, Clone)]
enum Kind {
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
        per_page: bool,
    },
}

/// Pagination over recordings, as the original's test harness does it: the
/// parameters keep their JSON types, cursor and link paths are plain
/// properties, and a legacy recording is yielded once (the array it is, or
/// the array at `response_path`, or each array property).
#[derive(Debug, Clone)]
pub struct ReplayPager {
    req: Request,
    kind: Kind,
    in_body: bool,
    bag: Map<String, Value>,
    response_path: Option<String>,
    limit: Option<Value>,
    cursor: Option<Value>,
    offset: f64,
    pending: VecDeque<Value>,
    started: bool,
    done: bool,
    /// A cursor path with dots that the page has nested, not as one
    /// property: the harness stops there (said once, in the run's log).
    pub(crate) nested_cursor: Option<String>,
}

fn text(config: &Map<String, Value>, key: &str) -> Option<String> {
    config.get(key).and_then(Value::as_str).map(str::to_string)
}

impl ReplayPager {
    /// `config` is the provider's `proxy.paginate` with the script's over it.
    pub(crate) fn new(req: Request, config: Map<String, Value>) -> Result<Self, HttpError> {
        let in_body = matches!(req.method, Method::Post | Method::Put | Method::Patch);
        let kind = match config.get("type").and_then(Value::as_str) {
            Some("cursor") => Kind::Cursor {
                name: text(&config, "cursor_name_in_request").unwrap_or_default(),
                path: text(&config, "cursor_path_in_response").unwrap_or_default(),
            },
            Some("link") => Kind::Link {
                rel: text(&config, "link_rel_in_response_header"),
                body_path: text(&config, "link_path_in_response_body"),
            },
            Some("offset") => Kind::Offset {
                name: text(&config, "offset_name_in_request").unwrap_or_default(),
                per_page: text(&config, "offset_calculation_method").as_deref() == Some("per-page"),
            },
            other => {
                return Err(HttpError::Failed(nango_error(
                    "invalid_pagination_config",
                    format!("Invalid pagination type: {}", other.unwrap_or("undefined")),
                )));
            }
        };
        let bag = match (&req.data, &req.params, in_body) {
            (Some(Body::Json(t)), _, true) => serde_json::from_slice(t).unwrap_or_default(),
            (_, Some(Query::Object(t)), false) => serde_json::from_slice(t).unwrap_or_default(),
            _ => Map::new(),
        };
        let offset = config
            .get("offset_start_value")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let mut pager = Self {
            req,
            kind,
            in_body,
            bag,
            response_path: text(&config, "response_path").filter(|p| !p.is_empty()),
            limit: config.get("limit").filter(|l| truthy(l)).cloned(),
            cursor: None,
            offset,
            pending: VecDeque::new(),
            started: false,
            done: false,
            nested_cursor: None,
        };
        if let Some(limit) = pager.limit.clone() {
            let name = text(&config, "limit_name_in_request").unwrap_or_else(|| "undefined".into());
            pager.bag.insert(name, limit);
        }
        Ok(pager)
    }

    /// Writes the parameter bag back into the request, as the harness does.
    fn assign(&mut self) {
        let json = js::stringify(&Value::Object(self.bag.clone()));
        if self.in_body {
            self.req.data = Some(Body::Json(json.into()));
        } else {
            self.req.params = Some(Query::Object(json.into()));
        }
    }

    fn legacy_pages(&mut self, data: &Value) {
        if data.is_array() {
            self.pending.push_back(data.clone());
        }
        match &self.response_path {
            Some(p) => self
                .pending
                .push_back(data.get(p).cloned().unwrap_or(Value::Null)),
            None => {
                if let Value::Object(m) = data {
                    self.pending
                        .extend(m.values().filter(|v| v.is_array()).cloned());
                }
            }
        }
        self.done = true;
    }

    pub(crate) fn next_page(
        &mut self,
        replay: &Replay,
        script: &str,
        variant: &str,
    ) -> Result<Option<Page>, HttpError> {
        if let Some(page) = self.pending.pop_front() {
            return Ok(Some(Page {
                items: page.to_string().into(),
                next: None,
            }));
        }
        if self.done {
            return Ok(None);
        }
        match self.kind.clone() {
            Kind::Cursor { name, .. } => {
                if let Some(c) = self.cursor.take() {
                    self.bag.insert(name, c);
                }
                self.assign();
            }
            Kind::Link { .. } => {
                if !self.started {
                    self.assign();
                }
            }
            Kind::Offset { name, .. } => {
                let value = if self.in_body {
                    number(self.offset)
                } else {
                    Value::String(js::to_string(&number(self.offset)))
                };
                self.bag.insert(name, value);
                self.assign();
            }
        }
        self.started = true;
        let answer = replay
            .answer(script, variant, &self.req)
            .map_err(HttpError::Failed)?;
        if answer.legacy {
            self.legacy_pages(&answer.data);
            return self.next_page(replay, script, variant);
        }
        let data = answer.data;
        let page = match (&self.kind, &self.response_path) {
            (Kind::Offset { .. }, Some(p)) => crate::paginate::get_path(&data, p)
                .cloned()
                .unwrap_or(Value::Null),
            (_, Some(p)) => data.get(p).cloned().unwrap_or(Value::Null),
            (_, None) => data.clone(),
        };
        let len = length(&page).unwrap_or(0);
        if !truthy(&page) || len == 0 {
            self.done = true;
            return Ok(None);
        }
        let next = match self.kind.clone() {
            Kind::Cursor { path, .. } => {
                let cursor = match data.get(&path) {
                    Some(Value::String(s)) if !s.trim().is_empty() => {
                        Some(Value::String(s.trim().to_string()))
                    }
                    Some(n @ Value::Number(_)) => Some(n.clone()),
                    _ => None,
                };
                match cursor {
                    Some(c) => {
                        let shown = js::to_string(&c);
                        self.cursor = Some(c);
                        Some(shown)
                    }
                    None => {
                        if data.get(&path).is_none()
                            && crate::paginate::get_path(&data, &path).is_some_and(truthy)
                        {
                            self.nested_cursor = Some(path.clone());
                        }
                        self.done = true;
                        None
                    }
                }
            }
            Kind::Link { rel, body_path } => {
                let link = match (rel, body_path) {
                    (Some(rel), _) => answer
                        .response
                        .headers
                        .iter()
                        .find(|(n, _)| n == "link")
                        .and_then(|(_, v)| crate::paginate::link_with_rel(v, &rel)),
                    (None, Some(path)) => crate::paginate::get_path(&data, &path)
                        .filter(|v| truthy(v))
                        .map(js::to_string),
                    (None, None) => None,
                };
                match link {
                    Some(link) => {
                        self.req.endpoint = match url::Url::parse(&link) {
                            Ok(u) if matches!(u.scheme(), "http" | "https") => match u.query() {
                                Some(q) => format!("{}?{q}", u.path()),
                                None => u.path().to_string(),
                            },
                            _ => link.clone(),
                        };
                        self.req.params = Some(Query::Object("{}".into()));
                        Some(link)
                    }
                    None => {
                        self.done = true;
                        None
                    }
                }
            }
            Kind::Offset { per_page, .. } => {
                let limit = self.limit.as_ref().and_then(|l| match l {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                });
                if limit.is_some_and(|l| (len as f64) < l) {
                    self.done = true;
                    None
                } else {
                    self.offset += if per_page { 1.0 } else { len as f64 };
                    Some(js::to_string(&number(self.offset)))
                }
            }
        };
        Ok(Some(Page {
            items: page.to_string().into(),
            next,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, endpoint: &str) -> Request {
        Request {
            method,
            endpoint: endpoint.into(),
            headers: Vec::new(),
            params: None,
            data: None,
            retries: 0,
            retry_on: Vec::new(),
            retry_header: None,
            base_url_override: None,
            decompress: false,
            provider_config_key: None,
            connection_id: None,
        }
    }

    #[test]
    fn identity_sorts_params_keeps_types_and_drops_transport_headers() {
        let mut req = request(Method::Get, "/crm/v3/objects");
        req.params = Some(Query::Object(r#"{"limit":100,"after":"x"}"#.into()));
        req.headers = vec![
            ("Authorization".into(), "Bearer t".into()),
            ("X-B".into(), "1".into()),
            ("Content-Type".into(), "application/json".into()),
        ];
        let (text, hash) = identity(&req);
        assert_eq!(
            text,
            r#"{"method":"get","endpoint":"crm/v3/objects","params":[["after","x"],["limit",100]],"headers":[["Content-Type","application/json"],["X-B","1"]]}"#
        );
        assert_eq!(hash.len(), 40);
    }

    #[test]
    fn long_bodies_are_hashed() {
        let mut req = request(Method::Post, "q");
        req.data = Some(Body::Json(format!("\"{}\"", "a".repeat(1200)).into()));
        let (text, _) = identity(&req);
        assert!(text.contains(r#""data":"sha1:"#), "{text}");
        req.data = Some(Body::Text("short".into()));
        assert!(identity(&req).0.ends_with(r#""data":"short"}"#));
    }

    /// The harness reads a cursor path as one property name: a page that
    /// has it nested ends the pagination, and the pager says why.
    #[test]
    fn a_nested_cursor_path_ends_the_replay_and_is_noted() {
        let dir = tempfile::tempdir().unwrap();
        let config: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "type": "cursor",
            "cursor_name_in_request": "cursor",
            "cursor_path_in_response": "meta.next",
            "response_path": "items",
        }))
        .unwrap();
        let mut pager = ReplayPager::new(request(Method::Get, "/items"), config).unwrap();
        // The first request as the pager sends it (its parameters written
        // back), recorded with a nested cursor.
        let mut first = request(Method::Get, "/items");
        first.params = Some(Query::Object("{}".into()));
        let (_, hash) = identity(&first);
        let folder = dir.path().join("nango/get/proxy/items/s");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(
            folder.join(format!("{hash}.json")),
            r#"{"status": 200, "headers": {}, "response": {"items": [1, 2], "meta": {"next": "page-2"}}}"#,
        )
        .unwrap();
        let replay = Replay::new(dir.path());
        let page = pager.next_page(&replay, "s", "base").unwrap().unwrap();
        assert_eq!(page.items, b"[1,2]".to_vec());
        assert!(pager.next_page(&replay, "s", "base").unwrap().is_none());
        assert_eq!(pager.nested_cursor.as_deref(), Some("meta.next"));
    }

    #[test]
    fn resolve_collapses_like_node() {
        assert_eq!(
            resolve(Path::new("/m"), "nango/get/proxy//a/./b/../c/s"),
            PathBuf::from("/m/nango/get/proxy/a/c/s")
        );
    }

    /// A script's `..` does not climb above mocks/ (it read any
    /// `<dir>/<script>.json` and could echo it).
    #[test]
    fn resolve_stays_inside_the_mocks_folder() {
        let mocks = Path::new("/p/acme/mocks");
        for rel in [
            "nango/get/proxy/../../../../../../etc/s",
            "nango/get/proxy//../../../../../../../../etc/s",
            "../../etc/s",
        ] {
            assert_eq!(resolve(mocks, rel), mocks.join("etc/s"), "{rel}");
        }
        assert_eq!(
            resolve(Path::new(""), "nango/get/proxy/../../../../etc/s"),
            PathBuf::from("etc/s")
        );
    }

    /// The same through a replayed request: the file looked up is under
    /// mocks/, whatever the endpoint.
    #[test]
    fn a_replayed_endpoint_cannot_leave_the_mocks_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let mocks = tmp.path().join("acme").join("mocks");
        std::fs::create_dir_all(&mocks).unwrap();
        // What a climb out of mocks/ would reach: `<tmp>/secret/s.json`.
        std::fs::create_dir_all(tmp.path().join("secret")).unwrap();
        std::fs::write(tmp.path().join("secret").join("s.json"), "{\"key\": 1}").unwrap();
        let replay = Replay::new(&mocks);
        let req = request(Method::Get, "/../../../../../secret");
        let err = replay.answer("s", "base", &req).unwrap_err();
        assert!(
            err.message.contains(&mocks.display().to_string()),
            "{}",
            err.message
        );
    }
}
