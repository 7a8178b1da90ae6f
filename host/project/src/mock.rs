//! A mock upstream API on 127.0.0.1: a handler function per request, or
//! routes read from a fixture file (`dryrun --mock-upstream`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A request as the mock received it.
#[derive(Debug, Clone, PartialEq)]
pub struct MockRequest {
    pub method: String,
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl MockRequest {
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The mock's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct MockResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Option<std::time::Duration>,
}

impl MockResponse {
    pub fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            delay: None,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delayed(mut self, delay: std::time::Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

pub type Handler = Arc<dyn Fn(&MockRequest) -> MockResponse + Send + Sync>;

/// A running mock; stops when dropped.
pub struct MockServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<MockRequest>>>,
    _stop: oneshot::Sender<()>,
}

impl MockServer {
    /// Serves `handler` on 127.0.0.1 at a free port.
    pub async fn start(handler: Handler) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let log = requests.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = &mut stopped => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                // Answers go out at once (no Nagle delay on small writes).
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let handler = handler.clone();
                        let log = log.clone();
                        async move { Ok::<_, Infallible>(answer(req, &handler, &log).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            requests,
            _stop: stop,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<MockRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    handler: &Handler,
    log: &Mutex<Vec<MockRequest>>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let query = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let request = MockRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query,
        headers,
        body,
    };
    log.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request.clone());
    let response = handler(&request);
    if let Some(delay) = response.delay {
        tokio::time::sleep(delay).await;
    }
    let mut builder = hyper::Response::builder().status(response.status);
    for (k, v) in &response.headers {
        builder = builder.header(k, v);
    }
    // A response HTTP cannot carry (a fixture's are checked when it is
    // read) is a 500 saying why, not an empty 200.
    builder
        .body(Full::new(Bytes::from(response.body)))
        .unwrap_or_else(|e| {
            let mut resp = hyper::Response::new(Full::new(Bytes::from(format!(
                "the mock's response for {} {} is not one HTTP can carry: {e}",
                request.method, request.path
            ))));
            *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            resp
        })
}

/// Errors reading a fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read mock fixture {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("mock fixture {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

/// A fixture: routes matched in order of specificity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub routes: Vec<Route>,
}

/// One canned answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    /// Query parameters that must be present with these values.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Headers the request must carry (else 401): shows credential injection.
    #[serde(default)]
    pub require_headers: BTreeMap<String, String>,
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Value,
}

fn get() -> String {
    "GET".into()
}

fn ok() -> u16 {
    200
}

impl Fixture {
    pub fn from_file(path: &Path) -> Result<Self, FixtureError> {
        let text = sluice_nango_yaml::read_text_file(path, sluice_nango_yaml::MAX_FILE_BYTES)
            .map_err(|source| FixtureError::Read {
                path: path.display().to_string(),
                source,
            })?;
        let invalid = |message: String| FixtureError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let fixture: Fixture = serde_norway::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        // A header HTTP cannot carry made the answer an empty 200 (and a
        // required one could never match).
        for (i, r) in fixture.routes.iter().enumerate() {
            let listed = r
                .headers
                .iter()
                .map(|h| ("headers", h))
                .chain(r.require_headers.iter().map(|h| ("require_headers", h)));
            for (field, (name, value)) in listed {
                let problem = if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    "is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)"
                } else if hyper::header::HeaderValue::from_str(value).is_err() {
                    "has a value a header cannot hold (a control character or a line break)"
                } else {
                    continue;
                };
                return Err(invalid(format!(
                    "routes[{i}] ({} {}): {field}: `{}` {problem}",
                    r.method,
                    r.path,
                    name.escape_debug()
                )));
            }
        }
        // A status HTTP has no use for was served as a 200.
        if let Some((i, r)) = fixture
            .routes
            .iter()
            .enumerate()
            .find(|(_, r)| !(200..=599).contains(&r.status))
        {
            return Err(invalid(format!(
                "routes[{i}] ({} {}): status {} is not an HTTP status a response can have (200 to 599)",
                r.method, r.path, r.status
            )));
        }
        Ok(fixture)
    }

    /// A handler answering from the routes: the matching route with the most
    /// query constraints wins; no match is a 404 naming the request.
    pub fn handler(self) -> Handler {
        Arc::new(move |req: &MockRequest| {
            let found = self
                .routes
                .iter()
                .filter(|r| r.method.eq_ignore_ascii_case(&req.method) && r.path == req.path)
                .filter(|r| {
                    r.query
                        .iter()
                        .all(|(k, v)| req.query_param(k) == Some(v.as_str()))
                })
                .max_by_key(|r| r.query.len());
            let Some(route) = found else {
                let query = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&req.query)
                    .finish();
                let shown = if query.is_empty() {
                    req.path.clone()
                } else {
                    format!("{}?{query}", req.path)
                };
                // Routes of the path whose query constraints did not hold:
                // the usual cause, named.
                let wanted: Vec<String> = self
                    .routes
                    .iter()
                    .filter(|r| r.method.eq_ignore_ascii_case(&req.method) && r.path == req.path)
                    .map(|r| {
                        r.query
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join("&")
                    })
                    .collect();
                let mut error = format!("no mock route for {} {shown}", req.method);
                if !wanted.is_empty() {
                    error.push_str(&format!(
                        " (the routes of this path want the query {})",
                        wanted.join(" or ")
                    ));
                }
                return MockResponse::json(404, &serde_json::json!({ "error": error }));
            };
            for (name, value) in &route.require_headers {
                if req.header(&name.to_ascii_lowercase()) != Some(value.as_str()) {
                    return MockResponse::json(
                        401,
                        &serde_json::json!({"error": format!("missing or wrong header `{name}`")}),
                    );
                }
            }
            let mut resp = MockResponse::json(route.status, &route.body);
            for (k, v) in &route.headers {
                resp = resp.with_header(k, v);
            }
            resp
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(text: &str) -> Result<Fixture, FixtureError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mock.yaml");
        std::fs::write(&path, text).unwrap();
        Fixture::from_file(&path)
    }

    #[test]
    fn a_header_http_cannot_carry_is_refused_naming_its_route() {
        let err = fixture(
            "routes:\n  - path: /ok\n  - path: /users\n    headers:\n      x-fine: yes\n      'bad name': v\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with(
                "is not valid: routes[1] (GET /users): headers: `bad name` is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)"
            ),
            "{err}"
        );
        let err = fixture(
            "routes:\n  - path: /u\n    method: POST\n    headers:\n      x-a: \"one\\ntwo\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with(
                "routes[0] (POST /u): headers: `x-a` has a value a header cannot hold (a control character or a line break)"
            ),
            "{err}"
        );
        let err =
            fixture("routes:\n  - path: /u\n    require_headers:\n      'authorization:': x\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("require_headers: `authorization:` is not a header name"),
            "{err}"
        );
        let ok =
            fixture("routes:\n  - path: /u\n    headers:\n      X-Total-Count: '3'\n").unwrap();
        assert_eq!(ok.routes.len(), 1);
    }

    /// A handler's answer HTTP cannot carry is a 500 that says so.
    #[tokio::test]
    async fn an_answer_http_cannot_carry_is_a_500() {
        let server = MockServer::start(Arc::new(|_: &MockRequest| {
            MockResponse::json(200, &serde_json::json!({})).with_header("bad name", "v")
        }))
        .await
        .unwrap();
        let resp = reqwest::get(format!("{}/x", server.url())).await.unwrap();
        assert_eq!(resp.status().as_u16(), 500);
        let text = resp.text().await.unwrap();
        assert!(
            text.starts_with("the mock's response for GET /x is not one HTTP can carry"),
            "{text}"
        );
    }
}
