//! The HTTP API: one module per resource, the extractors they share
//! (the authenticated environment, JSON bodies with clear errors, the
//! connection headers) and the router.

pub mod actions;
pub mod config_legacy;
pub mod connect;
pub mod connect_ui;
pub mod connections;
pub mod deploy;
pub mod end_users;
pub mod incoming;
pub mod integrations;
pub mod logs;
pub mod mcp_tools;
pub mod oauth;
pub mod providers;
pub mod proxy;
pub mod records;
pub mod scripts;
pub mod syncs;
pub mod v1;
pub mod webhook_settings;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{any, get, patch, post, put};
use serde::de::DeserializeOwned;

use crate::app::{App, EnvState};
use crate::error::ApiError;

/// The environment a request's secret key names. Everything a handler
/// reaches goes through it, so a key of one environment cannot name
/// another's data.
pub struct Env(pub Arc<EnvState>);

impl FromRequestParts<Arc<App>> for Env {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let key = bearer_key(&parts.headers)?;
        let env = app
            .store
            .environment_by_key(key)
            .and_then(|e| app.env(&e))
            .ok_or_else(unknown_account)?;
        Ok(Env(env))
    }
}

/// Where this server is reached, for the URLs the API hands out:
/// `public_url` when set, else the request's `Host` (with the scheme of
/// `X-Forwarded-Proto`, else http); empty when there is neither.
pub fn base_url(app: &App, headers: &axum::http::HeaderMap) -> String {
    if let Some(u) = &app.config.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let Some(host) = header("host").filter(|h| {
        h.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
    }) else {
        return String::new();
    };
    let scheme = match header("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// A JSON object body: 413 past the size limit, 400 naming what is wrong
/// (an array is refused: serde would read it into a struct by position).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let DecodedBody(bytes) = DecodedBody::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A body as sent, decompressed when its `Content-Encoding` is `gzip` or
/// `deflate` (as the original's body parser does), held to the route's
/// size limit once decompressed too; another encoding is 415.
pub struct DecodedBody(pub Bytes);

/// The size limit of the route a request is for (set by
/// [`refuse_declared_oversize`]).
#[derive(Clone, Copy)]
struct BodyLimit(usize);

impl<S: Send + Sync> FromRequest<S> for DecodedBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let encoding = content_encoding(req.headers());
        let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
        let bytes = body_bytes(req, state).await?;
        decoded(encoding, bytes, limit.unwrap_or(usize::MAX))
            .await
            .map(DecodedBody)
    }
}

/// The `Content-Encoding` a request's body was sent with (`None`: as is).
pub fn content_encoding(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e != "identity")
}

/// Decompressions running at once, process-wide: each may hold up to a
/// route's limit of memory and a core.
static DECOMPRESSING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// `bytes` decompressed per `encoding` (as is without one), at most
/// `limit` bytes of it, off the async workers.
pub async fn decoded(
    encoding: Option<String>,
    bytes: Bytes,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let Some(encoding) = encoding else {
        return Ok(bytes);
    };
    // Nothing to decompress (a GET that names an encoding).
    if bytes.is_empty() {
        return Ok(bytes);
    }
    let _turn = DECOMPRESSING
        .acquire()
        .await
        .map_err(|e| ApiError::internal(format!("decompressing the body failed: {e}")))?;
    tokio::task::spawn_blocking(move || decode(&encoding, &bytes, limit))
        .await
        .map_err(|e| ApiError::internal(format!("decompressing the body failed: {e}")))?
}

/// `bytes` decompressed, at most `limit` bytes of it.
fn decode(encoding: &str, bytes: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    use std::io::Read as _;
    let reader: Box<dyn std::io::Read> = match encoding {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(bytes)),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(bytes)),
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_encoding",
                format!(
                    "The content encoding `{other}` is not supported: send gzip, deflate or none."
                ),
            ));
        }
    };
    let mut out = Vec::new();
    reader
        .take((limit as u64).saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::invalid_body(format!("the {encoding} body does not decompress: {e}"))
        })?;
    if out.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "The request body is over the size limit of {limit} bytes ({} MiB) once decompressed.",
                limit >> 20
            ),
        ));
    }
    Ok(Bytes::from(out))
}

/// A JSON array body, as [`JsonBody`] otherwise.
pub struct JsonList<T>(pub Vec<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonList<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let DecodedBody(bytes) = DecodedBody::from_request(req, state).await?;
        if bytes.is_empty() {
            return Err(ApiError::invalid_body(
                "the request body is empty; send a JSON array",
            ));
        }
        deserialize_body(&bytes).map(JsonList)
    }
}

/// Deserialises a request body, the error naming where in the body it is
/// (`end_user.email`, `syncs[1]`: serde's own message names the field only
/// when one is missing or unknown).
fn deserialize_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Tracking the path costs an allocation per key: only a body that
    // fails is read again with it.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let invalid = |e: String| ApiError::invalid_body(format!("the request body is not valid: {e}"));
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let e = e.into_inner();
        // Syntax errors have no place in the data, only a line and column.
        if path == "." || !e.is_data() {
            invalid(e.to_string())
        } else {
            invalid(format!("at `{path}`: {e}"))
        }
    })?;
    de.end().map_err(|e| invalid(e.to_string()))?;
    Ok(value)
}

/// When a request's body must have arrived whole (set by [`router`]).
#[derive(Clone, Copy)]
pub(crate) struct BodyDeadline(pub(crate) tokio::time::Instant);

/// A request's body, 413 past the route's limit, 408 `request_timeout`
/// when it has not arrived whole by the request's deadline.
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let deadline = req.extensions().get::<BodyDeadline>().copied();
    let read = Bytes::from_request(req, state);
    let read = match deadline {
        Some(BodyDeadline(at)) => match tokio::time::timeout_at(at, read).await {
            Ok(read) => read,
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "The request body did not arrive in time.",
                ));
            }
        },
        None => read.await,
    };
    read.map_err(|e| {
        let text = e.body_text();
        if let Some(at) = text.find(NO_ROOM_FOR_BODY) {
            // [`book_body`]'s refusal of a chunked body, as it answers a
            // declared one.
            let rest = &text[at + NO_ROOM_FOR_BODY.len()..];
            return match rest.strip_prefix(" (413)") {
                Some(_) => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    rest.trim_start_matches(" (413): ").to_string(),
                ),
                None => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_busy",
                    rest.trim_start_matches(" (503): ").to_string(),
                ),
            };
        }
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is over the size limit.",
            )
        } else {
            ApiError::invalid_body(format!("cannot read the request body: {e}"))
        }
    })
}

/// Parses any JSON value (an action's input, say), naming the problem.
pub fn parse_any_json(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_body(format!("the request body is not valid: {e}")))
}

/// Parses a JSON object, naming the problem and where it is.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::invalid_body(
            "the request body is empty; send JSON",
        ));
    }
    let kind = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => Some("an array"),
        Some(b'"') => Some("a string"),
        Some(b'-' | b'0'..=b'9') => Some("a number"),
        Some(b't' | b'f') if serde_json::from_slice::<bool>(bytes).is_ok() => Some("a boolean"),
        Some(b'n') if serde_json::from_slice::<()>(bytes).is_ok() => Some("null"),
        _ => None,
    };
    if let Some(kind) = kind {
        return Err(ApiError::invalid_body(format!(
            "the request body must be a JSON object, not {kind}"
        )));
    }
    deserialize_body(bytes)
}

/// Path parameters: 400 `invalid_uri_params` naming what does not parse
/// (a version that is not a number, a segment that is not UTF-8).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|e| ApiError::bad_request("invalid_uri_params", e.body_text()))
    }
}

/// Query parameters: 400 `invalid_query_params` naming what does not parse.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request("invalid_query_params", e.body_text()))
    }
}

/// A raw body: 413 `payload_too_large` past the route's limit, like
/// [`JsonBody`].
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        body_bytes(req, state).await.map(RawBody)
    }
}

/// The secret key of `Authorization: Bearer <key>`, or the original's
/// 401 naming what is wrong with the header.
pub fn bearer_key(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_auth_header",
                "Authentication failed. The request is missing the Authorization header.",
            )
        })?;
    let malformed = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "malformed_auth_header",
            "Authentication failed. The Authorization header must be `Bearer <secret key>`.",
        )
    };
    let text = header.to_str().map_err(|_| malformed())?;
    text.strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(malformed)
}

/// The 401 of a secret key no environment has.
pub fn unknown_account() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unknown_account",
        "Authentication failed. The secret key is not valid for any environment.",
    )
}

/// The `Connection-Id` and `Provider-Config-Key` headers.
pub struct ConnectionHeaders {
    pub connection_id: Option<String>,
    pub provider_config_key: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ConnectionHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        ConnectionHeaders::from_headers(&parts.headers)
    }
}

impl ConnectionHeaders {
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Result<Self, ApiError> {
        // Present but not text is said as such, not as missing.
        let get = |name: &str, shown: &str| match headers.get(name) {
            None => Ok(None),
            Some(v) => match v.to_str() {
                Ok(s) => Ok(Some(s.to_string()).filter(|s| !s.is_empty())),
                Err(_) => Err(ApiError::bad_request(
                    "invalid_headers",
                    format!("the {shown} header is not text (visible ASCII)"),
                )),
            },
        };
        Ok(ConnectionHeaders {
            connection_id: get("connection-id", "Connection-Id")?,
            provider_config_key: get("provider-config-key", "Provider-Config-Key")?,
        })
    }
}

/// `{"result": "ok"}` while the store takes writes; 503 naming the
/// failure when it does not (a full disk), so a load balancer or a
/// supervisor sees it.
async fn health(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match app.check_store().await {
        Ok(()) => axum::Json(serde_json::json!({ "result": "ok" })).into_response(),
        Err(message) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "result": "error",
                "error": { "code": "storage_error", "message": message },
            })),
        )
            .into_response(),
    }
}

/// The routes the original's API takes JSON on: a request to one with a
/// `Content-Type` that is not JSON is refused, as there.
const JSON_ROUTES: [&str; 16] = [
    "/integrations",
    "/config",
    "/mcp",
    "/connect",
    "/api-auth",
    "/oauth2",
    "/connection",
    "/connections",
    "/environment-variables",
    "/environment",
    "/sync",
    "/records",
    "/scripts",
    "/action",
    "/v1",
    "/providers",
];

/// 415 `invalid_content_type` for a body declared other than JSON on a
/// JSON route (it was parsed as JSON whatever it said), as the original's
/// `jsonContentTypeMiddleware`.
async fn json_content_type(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if let Some(refused) = content_type_refused(req.uri().path(), req.headers()) {
        return refused.into_response();
    }
    next.run(req).await
}

/// The 415 of a request to one of the original's JSON routes whose
/// `Content-Type` is not JSON.
pub fn content_type_refused(path: &str, headers: &axum::http::HeaderMap) -> Option<ApiError> {
    let json_route = JSON_ROUTES.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    let ct = headers.get(axum::http::header::CONTENT_TYPE)?;
    (json_route
        && !ct
            .as_bytes()
            .get(..16)
            .is_some_and(|t| t.eq_ignore_ascii_case(b"application/json")))
    .then(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_content_type",
            "Content-Type header must be application/json",
        )
    })
}

/// A request that may change something runs to its end even when its
/// client goes away: its handler runs in a task of its own, which a
/// dropped connection does not cancel (a `DELETE` whose client timed out
/// had deleted a connection's records and left the connection, or some of
/// an integration's connections), and a panic in it is a 500. (With
/// `half_close`, hyper does not watch the socket while a handler runs, so
/// no request is cancelled by its client; this holds whatever hyper does.)
async fn run_to_completion(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    ) {
        return next.run(req).await;
    }
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(e) => ApiError::internal(format!("the request's handler failed: {e}")).into_response(),
    }
}

/// Tells the operator of a request the store failed ([`crate::health`]).
async fn note_storage_failure(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    response: axum::response::Response,
) -> axum::response::Response {
    if let Some(f) = response.extensions().get::<crate::error::StorageFailed>() {
        app.health.failed(&app.config.events, &f.0);
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// A body whose declared length passes `max` is refused at once (413),
/// before any of it is read: a client announcing a terabyte gets its
/// answer now, not after sending it.
async fn refuse_declared_oversize(
    max: usize,
    mut req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    req.extensions_mut().insert(BodyLimit(max));
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return axum::response::IntoResponse::into_response(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "The request body is over the size limit of {} bytes ({} MiB).",
                max,
                max >> 20
            ),
        ));
    }
    next.run(req).await
}

/// What a chunked body's read error starts with when [`book_body`] found
/// no room for it.
const NO_ROOM_FOR_BODY: &str = "no room for the request body";

/// Books the room a request's body takes in memory while it is handled
/// (`ServerConfig::max_held_body_bytes`, for the environment its key
/// names): a declared length before anything is read, a body of unknown
/// length a MiB at a time as it arrives. Past the environment's share a
/// request is 413; when no room frees in time, 503 `server_busy` (a body
/// of unknown length the same, through its read's error). A compressed
/// body books the route's limit (it is held decompressed). Webhooks have a
/// room of their own (`incoming`), uploads too (`deploy`).
async fn book_body(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    use axum::response::IntoResponse as _;
    use futures_util::StreamExt as _;
    // (HTTP/1.1: a body is declared by its length or its chunks; the
    // body's own size hint is lost in the layers that time it.)
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = declared.is_none() && req.headers().contains_key(TRANSFER_ENCODING);
    if !(chunked || declared.is_some_and(|n| n > 0)) || req.uri().path().starts_with("/webhook/") {
        return next.run(req).await;
    }
    let env = bearer_key(req.headers())
        .ok()
        .and_then(|key| app.store.environment_by_key(key))
        .map_or_else(uuid::Uuid::nil, |e| e.id());
    let rooms = app.config.budgets.get(&app.config);
    let refused = |refused: crate::budget::Refused| match refused {
        crate::budget::Refused::TooLarge { needed, most } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "this request's body ({} MiB) is more than an environment's requests may hold at once (at most {} MiB)",
                needed.div_ceil(1 << 20),
                most >> 20
            ),
        ),
        crate::budget::Refused::Busy { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy",
            "the server is holding as many request bodies as it takes at once: retry later",
        ),
    };
    if let Some(declared) = declared {
        // A compressed body is held decompressed (up to the route's
        // limit): that is what it books.
        let bytes = match content_encoding(req.headers()) {
            Some(_) => app.config.max_body_bytes,
            None => usize::try_from(declared).unwrap_or(usize::MAX),
        };
        let held = match rooms.bodies.book(env, bytes, rooms.wait).await {
            Ok(held) => held,
            Err(e) => return refused(e).into_response(),
        };
        let response = next.run(req).await;
        drop(held);
        return response;
    }
    let held: Arc<std::sync::Mutex<Vec<crate::budget::Booking>>> = Arc::default();
    let (parts, body) = req.into_parts();
    let state = (body.into_data_stream(), 0usize, 0usize, false);
    let (app_for_body, held_for_body) = (app.clone(), held.clone());
    let booked = futures_util::stream::unfold(state, move |(mut stream, got, booked, failed)| {
        let (app, held) = (app_for_body.clone(), held_for_body.clone());
        async move {
            if failed {
                return None;
            }
            let chunk = stream.next().await?;
            let got = got + chunk.as_ref().map_or(0, |c| c.len());
            let mut booked = booked;
            let rooms = app.config.budgets.get(&app.config);
            while got > booked {
                let step = (got - booked).max(1 << 20);
                match rooms.bodies.book(env, step, rooms.wait).await {
                    Ok(b) => {
                        booked += b.bytes();
                        held.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(b);
                    }
                    Err(e) => {
                        // Told apart by `body_bytes` (503 or 413, not a
                        // body that could not be read).
                        let e = refused(e);
                        let e = axum::Error::new(std::io::Error::other(format!(
                            "{NO_ROOM_FOR_BODY} ({}): {}",
                            e.status.as_u16(),
                            e.message
                        )));
                        return Some((Err(e), (stream, got, booked, true)));
                    }
                }
            }
            Some((chunk, (stream, got, booked, false)))
        }
    });
    let req = Request::from_parts(parts, axum::body::Body::from_stream(booked));
    let response = next.run(req).await;
    drop(held);
    response
}

/// Every route, reached with or without one trailing slash.
pub fn router(app: Arc<App>) -> Router {
    // A layer of the router that holds the routes runs after routing: the
    // rewrite runs in an outer router, before the inner one routes.
    let metrics = app.metrics.clone();
    Router::new()
        .fallback_service(routes(app))
        .layer(axum::middleware::from_fn(trim_trailing_slash))
        .layer(axum::middleware::from_fn(move |req, next| {
            measure(metrics.clone(), req, next)
        }))
}

/// The route template a request matched (`/connection/{id}`), carried
/// out on its response for [`measure`], which runs before routing.
#[derive(Clone)]
struct RouteTemplate(String);

async fn tag_route(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string());
    let mut response = next.run(req).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteTemplate(route));
    }
    response
}

/// Counts and times every request (`sluice_http_requests_total`), by its
/// route's template; one that matched none is `unmatched`.
async fn measure(
    metrics: Arc<crate::metrics::Metrics>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    // A fixed set: a client may send any token as a method, and each
    // label value is a series kept for good.
    let method = match *req.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let response = next.run(req).await;
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map_or("unmatched", |r| r.0.as_str());
    metrics.request(
        method,
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `/records/` is `/records`, as the original's (Express's) routing has
/// it: `@nangohq/node`'s `listRecords` asks for `/records/?model=…`. A
/// proxied path keeps its slash: it is the upstream's path; so does a
/// `/v1` path: a script may declare `/things/` (`v1::dispatch` tries it
/// without the slash next).
async fn trim_trailing_slash(
    mut req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    if path.len() > 1
        && path.ends_with('/')
        && !path.starts_with("/proxy/")
        && !path.starts_with("/v1/")
    {
        let trimmed = &path[..path.len() - 1];
        let path_and_query = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = path_and_query.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    next.run(req).await
}

/// The routes a browser sends a user's credentials to, with a connect
/// session: the session is checked before the body is read, and the body
/// is small.
fn browser_credentials(app: Arc<App>) -> Router<Arc<App>> {
    let limit = oauth::MAX_BROWSER_CREDENTIALS;
    Router::new()
        .route("/api-auth/api-key/{key}", post(oauth::api_key))
        .route("/api-auth/basic/{key}", post(oauth::basic))
        .route("/auth/unauthenticated/{key}", post(oauth::unauthenticated))
        .route("/oauth2/auth/{key}", post(oauth::client_credentials))
        .route("/auth/two-step/{key}", post(oauth::two_step))
        .route("/auth/jwt/{key}", post(oauth::jwt))
        .route("/auth/signature/{key}", post(oauth::signature))
        .route("/auth/bill/{key}", post(oauth::bill))
        .route("/auth/tba/{key}", post(oauth::tba))
        .route_layer(axum::middleware::from_fn_with_state(
            app,
            oauth::session_first,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(move |req, next| {
            refuse_declared_oversize(limit, req, next)
        }))
}

fn routes(app: Arc<App>) -> Router {
    let body_limit = app.config.max_body_bytes;
    let component_limit = app.config.max_component_bytes;
    let body_timeout = app.config.body_timeout;
    let components = Router::new()
        .route("/sluice/components/{sha256}", put(deploy::put_component))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(component_limit))
        .layer(axum::middleware::from_fn(move |req, next| {
            refuse_declared_oversize(component_limit, req, next)
        }));
    Router::new()
        .route("/health", get(health))
        .route("/", get(oauth::websocket))
        .route("/connect", get(connect_ui::page))
        .route("/connect/sessions", post(connect::create))
        .route("/connect/sessions/reconnect", post(connect::reconnect))
        .route(
            "/connect/session",
            get(connect::get).delete(connect::delete),
        )
        .route("/oauth/connect/{key}", get(oauth::connect))
        .route("/oauth/callback", get(oauth::callback))
        .route("/app-auth/connect", get(oauth::callback))
        .merge(browser_credentials(app.clone()))
        .route("/records", get(records::get_records))
        .route("/records/prune", patch(records::prune))
        .route("/action/trigger", post(actions::trigger))
        .route("/action/{id}", get(actions::status))
        .route("/sync/trigger", post(syncs::trigger))
        .route("/sync/start", post(syncs::start))
        .route("/sync/pause", post(syncs::pause))
        .route("/sync/status", get(syncs::status))
        .route(
            "/sync/{name}/variant/{variant}",
            post(syncs::create_variant).delete(syncs::delete_variant),
        )
        .route(
            "/sync/update-connection-frequency",
            axum::routing::put(syncs::update_frequency),
        )
        .route(
            "/connection",
            get(connections::list).post(connections::create_legacy),
        )
        .route(
            "/connection/metadata",
            post(connections::set_metadata).patch(connections::update_metadata),
        )
        .route(
            "/connection/{id}",
            get(connections::get).delete(connections::delete),
        )
        // The current names (`@nangohq/node` 0.67 and later); the
        // singular ones above are the original's deprecated aliases.
        .route(
            "/connections",
            get(connections::list).post(connections::create_public),
        )
        .route(
            "/connections/metadata",
            post(connections::set_metadata).patch(connections::update_metadata),
        )
        .route(
            "/connections/{id}",
            get(connections::get)
                .delete(connections::delete)
                .patch(connections::patch),
        )
        .route(
            "/connection/{id}/metadata",
            post(connections::legacy_metadata).patch(connections::legacy_metadata),
        )
        .route(
            "/config",
            get(config_legacy::list)
                .post(config_legacy::create)
                .put(config_legacy::update),
        )
        .route(
            "/config/{key}",
            get(config_legacy::get).delete(config_legacy::delete),
        )
        .route("/providers", get(providers::list))
        .route("/providers/{provider}", get(providers::get))
        .route(
            "/integrations",
            get(integrations::list).post(integrations::create),
        )
        .route(
            "/integrations/{key}",
            get(integrations::get)
                .patch(integrations::update)
                .delete(integrations::delete),
        )
        .route(
            "/environment-variables",
            get(integrations::get_variables).put(integrations::put_variables),
        )
        .route("/sluice/deploy", post(deploy::deploy))
        .route(
            "/webhook/{environment}/{integration}",
            post(incoming::receive),
        )
        .route("/sluice/environment", get(webhook_settings::environment))
        .route("/sluice/scheduler", get(webhook_settings::scheduler))
        .route("/logs", get(logs::search))
        .route("/logs/export", get(logs::export))
        .route("/executions", get(logs::executions))
        .route(
            "/sluice/webhook-settings",
            get(webhook_settings::get)
                .put(webhook_settings::put)
                .patch(webhook_settings::put),
        )
        .route("/sluice/deployments", get(deploy::list))
        .route(
            "/sluice/deployments/{version}/activate",
            post(deploy::activate),
        )
        .route("/mcp", get(mcp_tools::get).post(mcp_tools::post))
        .route("/openapi.json", get(v1::openapi))
        .route("/scripts/config", get(scripts::config))
        .route("/v1/{*path}", any(v1::dispatch))
        .route("/proxy/{*path}", any(proxy::forward))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(app.clone(), book_body))
        .layer(axum::middleware::from_fn(move |req, next| {
            refuse_declared_oversize(body_limit, req, next)
        }))
        .merge(components)
        .route_layer(axum::middleware::from_fn(tag_route))
        .layer(axum::middleware::from_fn(
            move |mut req: Request, next: axum::middleware::Next| {
                // A large body (a component, up to 256 MiB) gets a second
                // more per 64 KiB it declares: a slow link can deploy.
                let declared = req
                    .headers()
                    .get(axum::http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                let more = std::time::Duration::from_secs(declared / (64 << 10));
                let at = tokio::time::Instant::now() + body_timeout + more;
                req.extensions_mut().insert(BodyDeadline(at));
                next.run(req)
            },
        ))
        .layer(axum::middleware::from_fn(run_to_completion))
        .layer(axum::middleware::from_fn(json_content_type))
        .layer(axum::middleware::map_response_with_state(
            app.clone(),
            note_storage_failure,
        ))
        .layer(axum::middleware::from_fn(cors))
        .with_state(app)
}

/// Browsers may call the API from any origin, as the original's public
/// API lets them (`Access-Control-Allow-Origin: *`; every route
/// authenticates by header, none by cookie): the Connect UI and the
/// frontend SDK call `/api-auth/*` and `/connect/session` from the app's
/// pages. A preflight is answered here, before any route.
async fn cors(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::{HeaderValue, Method, header};
    use axum::response::IntoResponse as _;
    if req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return (
            StatusCode::NO_CONTENT,
            [
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                (
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
                ),
                (
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    "Authorization, Content-Type, Accept, Origin, X-Requested-With, Provider-Config-Key, Connection-Id, X-Async, X-Max-Retries, Nango-Is-Dry-Run, Nango-Is-Sync",
                ),
                (header::ACCESS_CONTROL_MAX_AGE, "600"),
            ],
        )
            .into_response();
    }
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Type, Content-Length, Location, X-Nango-Signature"),
    );
    response
}
