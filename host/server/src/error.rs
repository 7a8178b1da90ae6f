//! The one error type of the API: the original's body shape
//! `{"error": {"code", "message", "payload"}}` and its status codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An API error: status, the original's code, a message naming the problem.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub payload: Option<Box<Value>>,
    /// Extra top-level keys of `error` (`upstream` of a `script_http_error`).
    pub extra: Option<Box<serde_json::Map<String, Value>>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            payload: None,
            extra: None,
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn with_payload(mut self, payload: Value) -> Self {
        self.payload = Some(Box::new(payload));
        self
    }

    pub fn unknown_connection(pck: &str, cid: &str) -> Self {
        Self::not_found(
            "unknown_connection",
            format!("No connection `{cid}` for integration `{pck}`"),
        )
    }

    /// 400, as the original's `unknown_provider_config` error.
    pub fn unknown_integration(pck: &str) -> Self {
        Self::bad_request(
            "unknown_provider_config",
            format!("No integration `{pck}` in this environment"),
        )
    }

    /// `/integrations/:key` of a key this environment does not have: 404
    /// `not_found`, as the original's.
    pub fn unknown_integration_key(key: &str) -> Self {
        Self::not_found(
            "not_found",
            format!("Integration `{key}` does not exist in this environment"),
        )
    }

    /// 400 `invalid_body` with the original's `errors` list of one field's
    /// problem (`{code, message, path}`), the message also as `message`.
    pub fn invalid_field(path: &[&str], message: &str) -> Self {
        let mut extra = serde_json::Map::new();
        extra.insert(
            "errors".into(),
            json!([{ "code": "invalid_string", "message": message, "path": path }]),
        );
        let mut e = Self::invalid_body(message);
        e.extra = Some(Box::new(extra));
        e
    }

    /// 400 `invalid_headers` for a required header that is missing, with
    /// the original's `errors` list naming it (zod's path: the header's
    /// lower-case name).
    pub fn missing_header(name: &str) -> Self {
        let message = format!("Missing the {name} header");
        let mut extra = serde_json::Map::new();
        extra.insert(
            "errors".into(),
            json!([{ "code": "invalid_type", "message": message, "path": [name.to_ascii_lowercase()] }]),
        );
        let mut e = Self::bad_request("invalid_headers", message);
        e.extra = Some(Box::new(extra));
        e
    }

    /// 400 `invalid_query_params` for a required query parameter that is
    /// missing, with the original's `errors` list naming it.
    pub fn missing_query_param(name: &str) -> Self {
        let message = format!("`{name}` is required");
        let mut extra = serde_json::Map::new();
        extra.insert(
            "errors".into(),
            json!([{ "code": "invalid_type", "message": message, "path": [name] }]),
        );
        let mut e = Self::bad_request("invalid_query_params", message);
        e.extra = Some(Box::new(extra));
        e
    }

    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::bad_request("invalid_body", message)
    }
}

/// The codes of the original's request validation errors, which carry an
/// `errors` list.
const VALIDATION_CODES: [&str; 5] = [
    "invalid_body",
    "invalid_query_params",
    "invalid_headers",
    "invalid_uri_params",
    "invalid_request",
];

/// How the message of a failing backend's error starts.
const BACKEND_FAILED: &str = "the store failed: ";

/// Marks a response that a failing store caused, for the operator's line
/// ([`crate::health`]).
#[derive(Debug, Clone)]
pub struct StorageFailed(pub String);

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl From<sluice_store::StoreError> for ApiError {
    fn from(e: sluice_store::StoreError) -> Self {
        // What the caller passed and the store cannot hold is the client's
        // to fix; everything else is the store's.
        if let sluice_store::StoreError::Invalid(message) = &e {
            return ApiError::bad_request("invalid_request", message.clone());
        }
        // Only a failing backend (a full disk, a failing device) is the
        // operator's to hear of ([`StorageFailed`]); a value that does not
        // decode is this request's.
        let message = match &e {
            sluice_store::StoreError::Backend(_) => format!("{BACKEND_FAILED}{e}"),
            _ => format!("the store cannot serve this: {e}"),
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_error", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::Map::new();
        error.insert("code".into(), Value::String(self.code));
        if !self.message.is_empty() {
            error.insert("message".into(), Value::String(self.message));
        }
        if let Some(p) = self.payload {
            error.insert("payload".into(), *p);
        }
        if let Some(extra) = self.extra {
            error.extend(*extra);
        }
        // The original's validation errors list their problems as
        // `errors: [{code, message, path}]` (zod's issues), which clients
        // show; ours name the problem in `message`, carried there as one
        // issue whose field is not singled out (`path: []`) unless the
        // error gave its own list.
        if VALIDATION_CODES.contains(&error.get("code").and_then(Value::as_str).unwrap_or(""))
            && !error.contains_key("errors")
            && let Some(message) = error.get("message").cloned()
        {
            error.insert(
                "errors".into(),
                json!([{ "code": "custom", "message": message, "path": [] }]),
            );
        }
        let failed = (self.status == StatusCode::SERVICE_UNAVAILABLE
            && error.get("code").and_then(Value::as_str) == Some("storage_error")
            && error
                .get("message")
                .and_then(Value::as_str)
                .is_some_and(|m| m.starts_with(BACKEND_FAILED)))
        .then(|| {
            StorageFailed(
                error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )
        });
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(f) = failed {
            response.extensions_mut().insert(f);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
