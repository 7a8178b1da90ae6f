//! `nango:scripts/http`: proxy and the paginator resource.

use serde_json::Value;
use wasmtime::component::Resource;

use super::HostState;
use crate::bindings::http::{self, Body, HttpError, Page, PageResponse, Query, Request};
use crate::bindings::types::{self, Response};
use crate::paginate::Pager;
use crate::proxy::nango_error;

impl types::Host for HostState {}

impl HostState {
    fn check_body(&self, req: &Request) -> Result<(), HttpError> {
        self.check_payload("the request body", body_bytes(req))
            .map_err(HttpError::Failed)
    }
}

/// What a paginator holds beside its request's text (its state, the
/// table's entry), counted so that empty requests are bounded too.
const PAGER_OVERHEAD: usize = 1024;

/// The bytes of a request's body.
fn body_bytes(req: &Request) -> usize {
    match &req.data {
        None => 0,
        Some(Body::Json(t) | Body::Text(t)) => t.len(),
        Some(Body::Bytes(b)) => b.len(),
        Some(Body::Multipart(fields)) => fields.iter().map(|(k, v)| k.len() + v.len()).sum(),
    }
}

/// The bytes a request holds: its text and values.
fn request_bytes(req: &Request) -> usize {
    let body = body_bytes(req);
    let params = match &req.params {
        None => 0,
        Some(Query::Text(t)) => t.len(),
        Some(Query::Object(j)) => j.len(),
    };
    let headers: usize = req.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    let strings = [
        Some(&req.endpoint),
        req.base_url_override.as_ref(),
        req.provider_config_key.as_ref(),
        req.connection_id.as_ref(),
    ];
    body + params
        + headers
        + strings.iter().flatten().map(|s| s.len()).sum::<usize>()
        + req.retry_on.len() * 2
}

impl http::Host for HostState {
    async fn proxy(&mut self, req: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        if let Err(e) = self.check_body(&req) {
            return Ok(Err(e));
        }
        self.charge(body_bytes(&req));
        let answer = crate::proxy::send(self, &req).await;
        if let Ok(response) = &answer {
            self.charge(response.body.len());
        }
        Ok(answer)
    }

    async fn uncontrolled_fetch(
        &mut self,
        req: http::FetchRequest,
    ) -> wasmtime::Result<Result<Response, types::NangoError>> {
        let size = req.body.as_ref().map_or(0, Vec::len);
        if let Err(e) = self.check_payload("the request body", size) {
            return Ok(Err(e));
        }
        self.charge(size);
        let answer = crate::proxy::uncontrolled_fetch(self, req).await;
        if let Ok(response) = &answer {
            self.charge(response.body.len());
        }
        Ok(answer)
    }

    async fn paginate(
        &mut self,
        req: Request,
        config: Option<Vec<u8>>,
    ) -> wasmtime::Result<Result<Resource<Pager>, HttpError>> {
        if let Err(e) = self.check_body(&req) {
            return Ok(Err(e));
        }
        // The request and its config, all of which the host parses or
        // copies (the params and a body again on every page), within the
        // payload limit before any of it is parsed, and paid for as other
        // calls pay for what they send.
        let text = request_bytes(&req).saturating_add(config.as_ref().map_or(0, Vec::len));
        if let Err(e) = self.check_payload(
            "the paginated request (body, params, headers and config)",
            text,
        ) {
            return Ok(Err(HttpError::Failed(e)));
        }
        self.charge(text);
        let held = text.saturating_add(PAGER_OVERHEAD);
        let max = self.limits().max_payload_bytes;
        // One open paginator is always allowed: its request is within the
        // payload limit (checked above).
        if self.pager_bytes > 0 && self.pager_bytes.saturating_add(held) > max {
            return Ok(Err(HttpError::Failed(nango_error(
                "payload_too_large",
                format!(
                    "the execution's open paginators hold {} bytes, and this one {held} more, over the limit of {max} bytes (a paginator is released when its pages are read to the end or its loop is left)",
                    self.pager_bytes
                ),
            ))));
        }
        let config = match config.as_deref().map(serde_json::from_slice::<Value>) {
            None | Some(Ok(Value::Null)) => None,
            Some(Ok(Value::Object(m))) => Some(m),
            Some(_) => {
                return Ok(Err(HttpError::Failed(nango_error(
                    "invalid_pagination_config",
                    "the paginate config must be a JSON object",
                ))));
            }
        };
        let current = self.exec.connection.clone();
        let connection = match self
            .connection(&current.provider_config_key, &current.connection_id)
            .await
        {
            Ok(c) => c,
            Err(e) => return Ok(Err(HttpError::Failed(e))),
        };
        let Some(provider) = self.services.providers.get(&connection.provider).cloned() else {
            return Ok(Err(HttpError::Failed(nango_error(
                "unknown_provider_template_in_config",
                format!(
                    "provider `{}` is not in the providers catalogue",
                    connection.provider
                ),
            ))));
        };
        let pager = crate::paginate::merged_config(&provider, config).and_then(|config| {
            self.services
                .upstream
                .pager(req, config, self.exec.zero_yaml)
        });
        match pager {
            Ok(p) => {
                let handle = self.table.push(p)?;
                self.pagers.insert(handle.rep(), held);
                self.pager_bytes += held;
                Ok(Ok(handle))
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

impl http::HostPaginator for HostState {
    async fn next_page(
        &mut self,
        handle: Resource<Pager>,
    ) -> wasmtime::Result<Result<Option<Page>, HttpError>> {
        self.last_page = None;
        let mut pager = self.table.get(&handle)?.clone();
        let page = match &mut pager {
            Pager::Live(p) => p.next_page(self).await,
            Pager::Replay(p) => {
                let services = self.services.clone();
                let page = match services.upstream.recordings() {
                    Some(replay) => {
                        p.next_page(replay, &self.exec.script_name, &self.exec.sync.variant)
                    }
                    None => Ok(None),
                };
                if let Some(path) = p.nested_cursor.take() {
                    self.push_log(crate::exec::LogEntry::internal(
                        crate::exec::LogLevel::Warn,
                        format!(
                            "paginate stopped: the cursor path `{path}` is read as one property name when recordings are replayed, as the original's test harness reads it, and this page has it nested (a dry run or the server follows the path)"
                        ),
                    ));
                }
                page
            }
        };
        *self.table.get_mut(&handle)? = pager;
        // The page as fetched (parsed, then written out again for the
        // script): its items are most of it.
        if let Ok(Some(p)) = &page {
            self.charge(p.items.len());
        }
        Ok(page)
    }

    async fn last_page(
        &mut self,
        _handle: Resource<Pager>,
    ) -> wasmtime::Result<Option<PageResponse>> {
        // One slot for every paginator: a script reads it right after the
        // `next-page` call it belongs to (both are synchronous for it).
        Ok(self.last_page.take().map(|(response, next)| PageResponse {
            response,
            next_page_param: next.to_string().into_bytes(),
        }))
    }

    async fn drop(&mut self, handle: Resource<Pager>) -> wasmtime::Result<()> {
        if let Some(held) = self.pagers.remove(&handle.rep()) {
            self.pager_bytes -= held;
        }
        self.table.delete(handle)?;
        Ok(())
    }
}
