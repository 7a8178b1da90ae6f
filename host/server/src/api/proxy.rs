//! `ALL /proxy/*` (§4.8): an app's request to a provider's API with one of
//! its connections' credentials, as the original's `nango.proxy()` SDK
//! call sends it. The request goes out as a script's would — the
//! connection's credentials (refreshed when expired, and on a 401), the
//! provider's headers, the egress check, retries — and the upstream's
//! answer comes back as it is, whatever its status.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use sluice_runtime::proxy::{AppRequest, AppRequestError, send_for_app};

use super::{ConnectionHeaders, Env, body_bytes, records};
use crate::app::App;
use crate::error::{ApiError, ApiResult};

/// Most retries an app may ask for: each waits up to the runtime's longest
/// retry delay, while the app's request is held open.
const MAX_RETRIES: u32 = 10;

/// The prefix of the headers an app sends on to the upstream.
const FORWARD_PREFIX: &str = "nango-proxy-";

/// Headers of the upstream's answer that describe that one hop, not the
/// content: the server writes its own.
const HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

pub async fn forward(
    State(app): State<Arc<App>>,
    Env(env): Env,
    headers: ConnectionHeaders,
    req: Request,
) -> ApiResult<Response> {
    if let Some(pck) = &headers.provider_config_key
        && env.store.integration(pck).await?.is_none()
    {
        // 404 here, as the original's proxy answers.
        return Err(ApiError::not_found(
            "unknown_provider_config",
            format!("No integration `{pck}` in this environment"),
        ));
    }
    let conn = records::connection_ref(&env.store, &headers).await?;
    let method = req.method().clone();
    let endpoint = {
        let uri = req.uri();
        let path = uri.path().strip_prefix("/proxy").unwrap_or(uri.path());
        match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        }
    };
    // The key the app authenticated with, kept out of the logs should it
    // forward it (in a query, a `Nango-Proxy-*` header).
    let key = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty());
    let mut options = Options::of(req.headers())?;
    let body = body_bytes(req, &()).await?;
    let body = (method != Method::GET && !body.is_empty()).then(|| body.to_vec());
    if body.is_some()
        && let Some(ct) = options.body_type
    {
        options.forwarded.push(("content-type".into(), ct));
    }
    let call = AppRequest {
        method: method.as_str().to_string(),
        endpoint: endpoint.clone(),
        headers: options.forwarded,
        body,
        retries: options.retries,
        retry_on: options.retry_on,
        base_url_override: options.base_url_override,
        secrets: key.into_iter().collect(),
    };
    let started = chrono::Utc::now();
    // An execution's permit, as a script's: what one environment's app
    // requests hold (each response up to the runtime's response limit) is
    // bounded, and never all of the server's.
    let _permit = app.execution_permit(&env).await;
    let services = app.services(&env, None);
    // Within the environment's action timeout (`proxy_timeout` past it),
    // the call named with the connection's credentials and the key
    // scrubbed whether it ended or timed out: the runtime holds them.
    let (outcome, lines, call) = send_for_app(services, app.runtime.config(), &conn, call).await;
    let error = match &outcome {
        Ok(r) if r.status < 400 => None,
        Ok(r) => Some(format!("the upstream answered {}", r.status)),
        Err(e) => Some(e.to_string()),
    };
    app.logs
        .record_proxy(&env, &conn, &call, started, error, outcome.is_ok(), lines)
        .await;
    match outcome {
        Ok(r) => Ok(answer(r.status, &r.headers, r.body)),
        Err(e) => Err(refused(e)),
    }
}

/// What the app's headers ask of the request.
struct Options {
    forwarded: Vec<(String, String)>,
    /// The request's own `Content-Type`: sent upstream with its body (a
    /// request without one has no type to name), unless the app named
    /// another with `Nango-Proxy-Content-Type`.
    body_type: Option<String>,
    retries: u32,
    retry_on: Vec<u16>,
    base_url_override: Option<String>,
}

impl Options {
    fn of(headers: &HeaderMap) -> ApiResult<Self> {
        let text = |name: &str| -> ApiResult<Option<String>> {
            match headers.get(name) {
                None => Ok(None),
                Some(v) => v.to_str().map(|s| Some(s.trim().to_string())).map_err(|_| {
                    ApiError::bad_request(
                        "invalid_request",
                        format!("the {name} header is not text"),
                    )
                }),
            }
        };
        let retries = match text("retries")? {
            None => 0,
            Some(r) if r.is_empty() => 0,
            Some(r) => r
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= MAX_RETRIES)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_request",
                        format!("Retries must be a number from 0 to {MAX_RETRIES}, got `{r}`"),
                    )
                })?,
        };
        let retry_on = match text("retry-on")? {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<u16>().ok().filter(|n| (100..600).contains(n)).ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_request",
                            format!("Retry-On lists HTTP statuses separated by commas; `{s}` is not one"),
                        )
                    })
                })
                .collect::<ApiResult<_>>()?,
        };
        let base_url_override = text("base-url-override")?.filter(|s| !s.is_empty());
        let mut forwarded = Vec::new();
        let mut content_type = None;
        for (name, value) in headers {
            let name = name.as_str();
            if name == "content-type" {
                content_type = value.to_str().ok().map(str::to_string);
            }
            let Some(rest) = name.strip_prefix(FORWARD_PREFIX) else {
                continue;
            };
            let value = value.to_str().map_err(|_| {
                ApiError::bad_request("invalid_request", format!("the {name} header is not text"))
            })?;
            // The body's framing is the server's to write for the request
            // it sends (a forwarded length would cut the body short or
            // leave the upstream waiting for more).
            if !rest.is_empty() && !HOP_HEADERS.contains(&rest) {
                forwarded.push((rest.to_string(), value.to_string()));
            }
        }
        let body_type =
            content_type.filter(|_| !forwarded.iter().any(|(n, _)| n == "content-type"));
        Ok(Options {
            forwarded,
            body_type,
            retries,
            retry_on,
            base_url_override,
        })
    }
}

/// The upstream's answer as the app gets it.
fn answer(status: u16, headers: &[(String, String)], body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if HOP_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            out.append(n, v);
        }
    }
    // Only the upstream's headers: no `Content-Type` of ours for an
    // answer that had none (a 204).
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = out;
    response
}

/// Why the request got no upstream answer, as the API's error shape.
fn refused(e: AppRequestError) -> ApiError {
    let status = match e.code.as_str() {
        "egress_denied" => StatusCode::FORBIDDEN,
        "script_network_error" | "response_too_large" => StatusCode::BAD_GATEWAY,
        "proxy_timeout" => StatusCode::GATEWAY_TIMEOUT,
        "connection_store_error" => StatusCode::SERVICE_UNAVAILABLE,
        // The request or the connection is at fault, not the server (a
        // token that could not be refreshed is `invalid_credentials`):
        // not an error to retry as is.
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, &e.code, e.message)
}
