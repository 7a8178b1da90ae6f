//! Write sluice integration scripts in Rust.
//!
//! A script is a function marked with [`sync`], [`action`] or [`on_event`];
//! it receives a [`Nango`] handle with the original helper's methods. Build
//! it for `wasm32-wasip2`: the result is a component sluice runs.
//!
//! ```ignore
//! use sluice_sdk::{Nango, Error, sync};
//!
//! #[sync]
//! fn fetch_data(nango: &Nango) -> Result<(), Error> {
//!     for page in nango.get("/crm/v3/objects/contacts").paginate::<serde_json::Value>(None) {
//!         nango.batch_save(&page?, "Contact")?;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Everything that is the same in every language — URL building,
//! credentials, retries, pagination state, record semantics — happens in the
//! host; this crate only makes the imports comfortable to call.

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use serde_json;
pub use sluice_sdk_macros::{action, on_event, sync};

/// The raw bindings of `wit/nango.wit` (imports of every script kind).
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "nango:scripts/sdk",
        pub_export_macro: false,
        generate_all,
    });
}

use bindings::nango::scripts::{connection, http, log, records, sync_context, types};

pub use http::Method;
pub use log::Level;
pub use records::MergingStrategy;

/// An HTTP response (Axios' `status`, `headers` and `data`).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body parsed as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Internal(format!("response body is not the expected JSON: {e}")))
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as the original's `response.data`: JSON when it parses, a string otherwise.
    pub fn data(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| Value::String(self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl From<types::Response> for Response {
    fn from(r: types::Response) -> Self {
        Self {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

/// Why a script call failed. Returned from a script, it reaches the caller
/// the way the original runner reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// `throw new nango.ActionError(payload)`.
    Action(Option<Value>),
    /// An SDK error: a code (`unknown_connection`, `egress_denied`, ...), a message, a payload.
    Sdk {
        code: String,
        message: String,
        payload: Option<Value>,
    },
    /// A request got a non-2xx response (after its retries).
    Http(Response),
    /// A request got no response.
    Network(String),
    /// Anything else.
    Internal(String),
}

impl Error {
    /// An `ActionError` with this payload (an internal error saying so when
    /// the payload does not serialise).
    pub fn action(payload: impl Serialize) -> Self {
        match serde_json::to_value(payload) {
            Ok(p) => Error::Action(Some(p)),
            Err(e) => Error::Internal(format!(
                "the ActionError payload cannot be written as JSON: {e}"
            )),
        }
    }

    /// An internal error with a message.
    pub fn msg(message: impl std::fmt::Display) -> Self {
        Error::Internal(message.to_string())
    }

    /// The status of an HTTP error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Http(r) => Some(r.status),
            _ => None,
        }
    }

    /// The SDK error code, if this is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Sdk { code, .. } => Some(code),
            _ => None,
        }
    }

    fn into_script_error(self) -> types::ScriptError {
        match self {
            Error::Action(p) => types::ScriptError::ActionError(p.map(|v| v.to_string().into())),
            Error::Sdk {
                code,
                message,
                payload,
            } => types::ScriptError::Sdk(types::NangoError {
                code,
                message,
                payload: payload.map(|v| v.to_string().into()),
            }),
            Error::Http(r) => types::ScriptError::Http(types::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Error::Network(m) => types::ScriptError::Network(m),
            Error::Internal(m) => types::ScriptError::Internal(m),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Action(p) => write!(f, "action error: {}", p.as_ref().unwrap_or(&Value::Null)),
            Error::Sdk { code, message, .. } => write!(f, "{message} ({code})"),
            Error::Http(r) => write!(f, "HTTP {}: {}", r.status, r.text()),
            Error::Network(m) | Error::Internal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<types::NangoError> for Error {
    fn from(e: types::NangoError) -> Self {
        if e.code == "script_network_error" {
            return Error::Network(e.message);
        }
        Error::Sdk {
            code: e.code,
            message: e.message,
            payload: e.payload.map(|p| payload_value(&p)),
        }
    }
}

/// An error's payload as the TypeScript SDK reads it: the JSON value, or
/// the text as a JSON string when it is not JSON.
fn payload_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

impl From<http::HttpError> for Error {
    fn from(e: http::HttpError) -> Self {
        match e {
            http::HttpError::Status(r) => Error::Http(r.into()),
            http::HttpError::Failed(e) => e.into(),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("JSON error: {e}"))
    }
}

/// `bytes` as a `T`, or an error naming `what` was read and as what:
/// `reading the connection's metadata as Meta: invalid type: null, …`.
fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::Internal(format!(
            "reading {what} as {}: {e}",
            short_type_name(std::any::type_name::<T>())
        ))
    })
}

/// A type's name without module paths: `alloc::vec::Vec<my_script::Item>`
/// as `Vec<Item>`.
fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        out.push_str(token.rsplit("::").next().unwrap_or(token));
        token.clear();
    };
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>, Error> {
    Ok(serde_json::to_vec(value)?)
}

/// Records per host call of batchSave, batchDelete and batchUpdate: the
/// host takes at most 100,000 per call, and commits every 1,000 on their
/// own, so a longer slice is sent in parts of this many (a multiple of
/// 1,000: the commits are the same).
const CALL_RECORDS: usize = 10_000;

/// The `nango` helper. Every method is a host call.
#[derive(Debug, Default, Clone, Copy)]
pub struct Nango {
    _private: (),
}

/// Facts about the running execution.
pub type ScriptInfo = connection::ScriptInfo;

impl Nango {
    #[doc(hidden)]
    pub fn new() -> Self {
        Self { _private: () }
    }

    /// A request to `endpoint` (relative to the provider's base URL).
    pub fn request(&self, method: Method, endpoint: impl Into<String>) -> RequestBuilder {
        RequestBuilder {
            req: http::Request {
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
            },
            refused: None,
        }
    }

    pub fn get(&self, endpoint: impl Into<String>) -> RequestBuilder {
        self.request(Method::Get, endpoint)
    }
    pub fn post(&self, endpoint: impl Into<String>) -> RequestBuilder {
        self.request(Method::Post, endpoint)
    }
    pub fn put(&self, endpoint: impl Into<String>) -> RequestBuilder {
        self.request(Method::Put, endpoint)
    }
    pub fn patch(&self, endpoint: impl Into<String>) -> RequestBuilder {
        self.request(Method::Patch, endpoint)
    }
    pub fn delete(&self, endpoint: impl Into<String>) -> RequestBuilder {
        self.request(Method::Delete, endpoint)
    }

    /// Logs a message at `level`, with optional JSON metadata.
    pub fn log_with(&self, level: Level, message: impl std::fmt::Display, meta: Option<&Value>) {
        log::log(
            level,
            message.to_string().as_bytes(),
            meta.map(|m| m.to_string()).as_deref().map(str::as_bytes),
        );
    }
    pub fn log(&self, message: impl std::fmt::Display) {
        self.log_with(Level::Info, message, None);
    }
    pub fn debug(&self, message: impl std::fmt::Display) {
        self.log_with(Level::Debug, message, None);
    }
    pub fn warn(&self, message: impl std::fmt::Display) {
        self.log_with(Level::Warn, message, None);
    }
    pub fn error(&self, message: impl std::fmt::Display) {
        self.log_with(Level::Error, message, None);
    }

    pub fn info(&self) -> ScriptInfo {
        connection::info()
    }
    pub fn connection_id(&self) -> String {
        self.info().connection_id
    }
    pub fn provider_config_key(&self) -> String {
        self.info().provider_config_key
    }

    /// The current connection (the original's `getConnection()` object).
    pub fn connection(&self) -> Result<Value, Error> {
        decode("the connection", &connection::get_connection(None, None)?)
    }

    /// `getConnection(key, id, {forceRefresh, refreshToken})`: a connection
    /// (this execution's when `None`), its OAuth2 token refreshed first
    /// when `force_refresh`, its refresh tokens shown when `refresh_token`.
    pub fn connection_with(
        &self,
        provider_config_key: Option<&str>,
        connection_id: Option<&str>,
        force_refresh: bool,
        refresh_token: bool,
    ) -> Result<Value, Error> {
        decode(
            "the connection",
            &connection::get_connection_with(
                provider_config_key,
                connection_id,
                force_refresh,
                refresh_token,
            )?,
        )
    }

    /// Another connection.
    pub fn connection_for(
        &self,
        provider_config_key: &str,
        connection_id: &str,
    ) -> Result<Value, Error> {
        decode(
            &format!("connection `{connection_id}` of `{provider_config_key}`"),
            &connection::get_connection(Some(provider_config_key), Some(connection_id))?,
        )
    }

    /// The connection's metadata as `T` (use `Option<T>` or `Value` when it may be null).
    pub fn metadata<T: DeserializeOwned>(&self) -> Result<T, Error> {
        decode("the connection's metadata", &connection::get_metadata()?)
    }

    /// Replaces the metadata.
    pub fn set_metadata(&self, metadata: &impl Serialize) -> Result<(), Error> {
        Ok(connection::set_metadata(&to_json(metadata)?)?)
    }

    /// Shallow-merges into the metadata.
    pub fn update_metadata(&self, metadata: &impl Serialize) -> Result<(), Error> {
        Ok(connection::update_metadata(&to_json(metadata)?)?)
    }

    /// The environment's variables as `(name, value)`.
    pub fn environment_variables(&self) -> Result<Vec<(String, String)>, Error> {
        Ok(connection::get_environment_variables()?
            .into_iter()
            .map(|v| (v.name, v.value))
            .collect())
    }

    pub fn webhook_url(&self) -> Result<Option<String>, Error> {
        Ok(connection::get_webhook_url()?)
    }

    /// `tryAcquireLock`: takes lock `key` of the environment for this
    /// execution, until `ttl` from now, [`Nango::release_lock`] or the
    /// execution's end. `false` while another execution holds it; this
    /// execution's own lock is renewed.
    pub fn try_acquire_lock(&self, key: &str, ttl: std::time::Duration) -> Result<bool, Error> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        // A ttl under a millisecond is one millisecond, not none.
        let ms = if ms == 0 && !ttl.is_zero() { 1 } else { ms };
        Ok(connection::try_acquire_lock(key, ms)?)
    }

    /// `releaseLock`: whether this execution held `key` (it no longer does).
    pub fn release_lock(&self, key: &str) -> Result<bool, Error> {
        Ok(connection::release_lock(key)?)
    }

    /// `releaseAllLocks`: releases every lock this execution holds.
    pub fn release_all_locks(&self) {
        connection::release_all_locks()
    }

    /// `triggerSync`: runs `sync` (`name` or `name::variant`) of a
    /// connection now (`POST /sync/trigger`), in `sync_mode`
    /// (`incremental`, `full_refresh`, `full_refresh_and_clear_cache`;
    /// none is incremental). A server's only: a dry run logs it.
    pub fn trigger_sync(
        &self,
        provider_config_key: &str,
        connection_id: &str,
        sync: &str,
        sync_mode: Option<&str>,
    ) -> Result<(), Error> {
        let body = serde_json::json!({
            "syncs": [sync],
            "provider_config_key": provider_config_key,
            "connection_id": connection_id,
            "sync_mode": sync_mode,
        });
        Ok(connection::trigger_sync(&to_json(&body)?)?)
    }

    /// `startSync`: un-pauses `syncs` of one connection, or of every
    /// connection of the integration (`POST /sync/start`).
    pub fn start_sync(
        &self,
        provider_config_key: &str,
        syncs: &[&str],
        connection_id: Option<&str>,
    ) -> Result<(), Error> {
        let body = serde_json::json!({
            "syncs": syncs,
            "provider_config_key": provider_config_key,
            "connection_id": connection_id,
        });
        Ok(connection::start_sync(&to_json(&body)?)?)
    }

    /// Runs another action and returns its output.
    pub fn trigger_action<O: DeserializeOwned>(
        &self,
        provider_config_key: &str,
        connection_id: &str,
        action: &str,
        input: &impl Serialize,
    ) -> Result<O, Error> {
        let input = to_json(input)?;
        let out =
            connection::trigger_action(provider_config_key, connection_id, action, Some(&input))?;
        decode(
            &format!("the output of action `{action}`"),
            out.as_deref().unwrap_or(b"null"),
        )
    }

    /// Saves records of `model` (each needs an `id`).
    pub fn batch_save<T: Serialize>(&self, records: &[T], model: &str) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        for part in records.chunks(CALL_RECORDS) {
            records::batch_save(model, &to_json(&part)?)?;
        }
        Ok(())
    }

    /// Marks records of `model` deleted (only `id` matters).
    pub fn batch_delete<T: Serialize>(&self, records: &[T], model: &str) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        for part in records.chunks(CALL_RECORDS) {
            records::batch_delete(model, &to_json(&part)?)?;
        }
        Ok(())
    }

    /// Deep-merges partial records into stored ones.
    pub fn batch_update<T: Serialize>(&self, records: &[T], model: &str) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        for part in records.chunks(CALL_RECORDS) {
            records::batch_update(model, &to_json(&part)?)?;
        }
        Ok(())
    }

    /// Stored records by id, keyed by the ids asked for; missing ids are absent.
    pub fn records_by_ids<T: DeserializeOwned>(
        &self,
        ids: &[impl ToString],
        model: &str,
    ) -> Result<HashMap<String, T>, Error> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let mut out = HashMap::new();
        // In parts, as the batches: the host takes at most 100,000 ids a
        // call (and at least one call, which an action is refused).
        let parts: Vec<&[String]> = match ids.is_empty() {
            true => vec![&[]],
            false => ids.chunks(CALL_RECORDS).collect(),
        };
        for part in parts {
            let found: Vec<Value> =
                serde_json::from_slice(&records::get_records_by_ids(model, &to_json(&part)?)?)?;
            for record in found {
                let id = match record.get("id") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => continue,
                };
                out.insert(id, serde_json::from_value(record)?);
            }
        }
        Ok(out)
    }

    pub fn set_merging_strategy(
        &self,
        strategy: MergingStrategy,
        model: &str,
    ) -> Result<(), Error> {
        Ok(records::set_merging_strategy(model, strategy)?)
    }

    /// One page of the connection's stored records of `model` in
    /// modification order (deleted ones included, as the records API
    /// lists them; zero-yaml `listRecords`): at most `limit` (1 to 1,000)
    /// after `cursor`, and the cursor of the next page, if any.
    pub fn list_records<T: DeserializeOwned>(
        &self,
        model: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<T>, Option<String>), Error> {
        let page = records::list_records(model, cursor, limit)?;
        let found: Vec<T> = decode(&format!("the records of `{model}`"), &page.records)?;
        Ok((found, page.next_cursor))
    }

    /// This script's integration as `GET /integrations/:key` shows it
    /// (zero-yaml `getIntegration`); `includes` may name `webhook` and
    /// `credentials`.
    pub fn integration(&self, includes: &[&str]) -> Result<Value, Error> {
        let includes: Vec<String> = includes.iter().map(|s| s.to_string()).collect();
        let out = connection::get_integration(&includes)?;
        decode("the integration", &out)
    }

    /// The checkpoint this sync last saved for the connection (zero-yaml
    /// `getCheckpoint`), if any.
    pub fn checkpoint<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        match records::get_checkpoint()? {
            Some(bytes) => Ok(Some(decode("the checkpoint", &bytes)?)),
            None => Ok(None),
        }
    }

    /// Replaces the checkpoint (a flat object of strings, numbers and
    /// booleans); durable when it returns.
    pub fn save_checkpoint<T: Serialize>(&self, checkpoint: &T) -> Result<(), Error> {
        Ok(records::save_checkpoint(&to_json(checkpoint)?)?)
    }

    pub fn clear_checkpoint(&self) -> Result<(), Error> {
        Ok(records::clear_checkpoint()?)
    }

    /// `trackDeletesStart(model)`: the sync refreshes every record of
    /// `model` from here on, until [`Nango::track_deletes_end`] in this
    /// run or a later one (a sync resuming from its checkpoint).
    pub fn track_deletes_start(&self, model: &str) -> Result<(), Error> {
        Ok(records::track_deletes_start(model)?)
    }

    /// `trackDeletesEnd(model)`: when the run succeeds, the records of
    /// `model` no run saved since the start are deleted.
    pub fn track_deletes_end(&self, model: &str) -> Result<(), Error> {
        Ok(records::track_deletes_end(model)?)
    }

    /// Start of the last successful run (RFC 3339).
    pub fn last_sync_date(&self) -> Option<String> {
        sync_context::last_sync_date()
    }

    pub fn variant(&self) -> String {
        sync_context::variant()
    }

    pub fn track_deletes(&self) -> bool {
        sync_context::track_deletes()
    }

    /// `model` for the base variant, `model::variant` otherwise.
    pub fn model_full_name(&self, model: &str) -> String {
        let variant = self.variant();
        if variant == "base" {
            model.to_string()
        } else {
            format!("{model}::{variant}")
        }
    }
}

/// A request being built; [`RequestBuilder::send`] or
/// [`RequestBuilder::paginate`] sends it.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    req: http::Request,
    /// Why the request cannot be sent (a body that does not serialise):
    /// `send` and `paginate` return it.
    refused: Option<String>,
}

impl RequestBuilder {
    /// Sets a query parameter (a later value for the same name wins). Numbers,
    /// booleans and arrays keep their JSON type: the host prints them as the
    /// original does (`1`, `true`, `a,b`).
    pub fn param(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let mut params = match &self.req.params {
            Some(http::Query::Object(json)) => {
                serde_json::from_slice::<serde_json::Map<String, Value>>(json).unwrap_or_default()
            }
            _ => serde_json::Map::new(),
        };
        params.insert(name.into(), value.into());
        self.req.params = Some(http::Query::Object(
            Value::Object(params).to_string().into(),
        ));
        self
    }

    /// The query as a string, appended as is.
    pub fn query(mut self, text: impl Into<String>) -> Self {
        self.req.params = Some(http::Query::Text(text.into()));
        self
    }

    /// A header; script headers win over injected ones.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.req.headers.push((name.into(), value.into()));
        self
    }

    /// A JSON body. One that does not serialise (a map with non-string
    /// keys, say) makes `send` return the error, not a `null` body.
    pub fn json(mut self, body: &impl Serialize) -> Self {
        match serde_json::to_vec(body) {
            Ok(json) => self.req.data = Some(http::Body::Json(json)),
            Err(e) => {
                self.refused = Some(format!("the request body cannot be written as JSON: {e}"))
            }
        }
        self
    }

    /// A text body.
    pub fn text(mut self, body: impl Into<String>) -> Self {
        self.req.data = Some(http::Body::Text(body.into().into_bytes()));
        self
    }

    /// A binary body, sent as it is. Give its content type with
    /// [`RequestBuilder::header`]: without one the request has the
    /// original's (axios') default, `application/x-www-form-urlencoded`.
    pub fn bytes(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.req.data = Some(http::Body::Bytes(body.into()));
        self
    }

    /// `multipart/form-data` fields.
    pub fn form(mut self, fields: Vec<(String, String)>) -> Self {
        self.req.data = Some(http::Body::Multipart(fields));
        self
    }

    /// Retries after the first attempt (none by default).
    pub fn retries(mut self, retries: u32) -> Self {
        self.req.retries = retries;
        self
    }

    /// Extra statuses to retry.
    pub fn retry_on(mut self, statuses: &[u16]) -> Self {
        self.req.retry_on = statuses.to_vec();
        self
    }

    /// Header names that carry the retry wait.
    pub fn retry_header(mut self, at: Option<&str>, after: Option<&str>) -> Self {
        self.req.retry_header = Some(http::RetryHeader {
            at: at.map(str::to_string),
            after: after.map(str::to_string),
        });
        self
    }

    pub fn base_url_override(mut self, base: impl Into<String>) -> Self {
        self.req.base_url_override = Some(base.into());
        self
    }

    pub fn decompress(mut self, on: bool) -> Self {
        self.req.decompress = on;
        self
    }

    /// Use another connection's credentials.
    pub fn connection(
        mut self,
        provider_config_key: impl Into<String>,
        connection_id: impl Into<String>,
    ) -> Self {
        self.req.provider_config_key = Some(provider_config_key.into());
        self.req.connection_id = Some(connection_id.into());
        self
    }

    /// Sends the request; a non-2xx response is an [`Error::Http`].
    pub fn send(self) -> Result<Response, Error> {
        if let Some(why) = self.refused {
            return Err(Error::Internal(why));
        }
        Ok(http::proxy(&self.req)?.into())
    }

    /// Pages of `T`: the provider's `paginate` defaults with `config`'s keys
    /// over them (`{"type": "cursor", "cursor_name_in_request": ...}`).
    /// [`Pages::with_page_info`] gives each page with what the original's
    /// `on_page` receives.
    pub fn paginate<T: DeserializeOwned>(self, config: Option<Value>) -> Pages<T> {
        let config = config.map(|c| c.to_string().into_bytes());
        let state = match &self.refused {
            Some(why) => PagesState::Failed(Some(Error::Internal(why.clone()))),
            None => match http::paginate(&self.req, config.as_deref()) {
                Ok(p) => PagesState::Running(p),
                Err(e) => PagesState::Failed(Some(e.into())),
            },
        };
        Pages {
            state,
            _items: std::marker::PhantomData,
        }
    }
}

/// An iterator of pages; it ends after the last page or the first error.
pub struct Pages<T> {
    state: PagesState,
    _items: std::marker::PhantomData<T>,
}

/// What the original's `paginate` gives its `on_page` callback after a
/// page: the next page's parameter and the page's whole response.
#[derive(Debug, Clone, PartialEq)]
pub struct PageInfo {
    /// The cursor as read (a string or a number), the next link, or the
    /// offset of this page (a number); null when there is no next page.
    pub next_page_param: Value,
    /// The page's response; none when the pages are recorded responses
    /// replayed (`sluice test`), as the original's harness gives none.
    pub response: Option<Response>,
}

/// Pages with their [`PageInfo`] ([`Pages::with_page_info`]).
pub struct PagesWithInfo<T>(Pages<T>);

/// A page's items and its [`PageInfo`], or why there is no page.
pub type PageWithInfo<T> = Result<(Vec<T>, Option<PageInfo>), Error>;

enum PagesState {
    Running(http::Paginator),
    Failed(Option<Error>),
    Done,
}

impl<T: DeserializeOwned> Pages<T> {
    /// Each page with what the original's `on_page({nextPageParam,
    /// response})` receives for it: `None` where the original calls no
    /// `on_page` (after an offset pagination's short last page).
    pub fn with_page_info(self) -> PagesWithInfo<T> {
        PagesWithInfo(self)
    }

    /// The next page, with its [`PageInfo`] when `info`.
    fn next_page(&mut self, info: bool) -> Option<PageWithInfo<T>> {
        match &mut self.state {
            PagesState::Done => None,
            PagesState::Failed(e) => {
                let e = e.take();
                self.state = PagesState::Done;
                e.map(Err)
            }
            PagesState::Running(p) => match p.next_page() {
                Ok(Some(page)) => {
                    // The host keeps a page's response until it is asked
                    // for, or the next page: asked only when wanted.
                    let seen = match info.then(|| p.last_page()).flatten() {
                        Some(last) => Some(PageInfo {
                            next_page_param: serde_json::from_slice(&last.next_page_param)
                                .unwrap_or(Value::Null),
                            response: Some(last.response.into()),
                        }),
                        None if info && connection::info().replaying => Some(PageInfo {
                            next_page_param: page.next.map_or(Value::Null, Value::String),
                            response: None,
                        }),
                        None => None,
                    };
                    Some(
                        decode("a page of paginate's items", &page.items)
                            .map(|items| (items, seen)),
                    )
                }
                Ok(None) => {
                    self.state = PagesState::Done;
                    None
                }
                Err(e) => {
                    self.state = PagesState::Done;
                    Some(Err(e.into()))
                }
            },
        }
    }
}

impl<T: DeserializeOwned> Iterator for Pages<T> {
    type Item = Result<Vec<T>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_page(false)
            .map(|page| page.map(|(items, _)| items))
    }
}

impl<T: DeserializeOwned> Iterator for PagesWithInfo<T> {
    type Item = PageWithInfo<T>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_page(true)
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use wit_bindgen;

    /// A panic is written as Rust writes it (`panicked at <place>:` and
    /// the message on the next line, which the host reads), without the
    /// `RUST_BACKTRACE` note a script cannot act on: it has no
    /// environment, and the host names the frames itself.
    fn quiet_panics() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("Box<dyn Any>");
                // A failed write is let go (`eprintln!` would panic in the
                // hook, and abort with a message about stderr instead).
                use std::io::Write as _;
                let mut stderr = std::io::stderr().lock();
                let _ = match info.location() {
                    Some(at) => writeln!(
                        stderr,
                        "thread 'main' panicked at {}:{}:{}:\n{message}",
                        at.file(),
                        at.line(),
                        at.column()
                    ),
                    None => writeln!(
                        stderr,
                        "thread 'main' panicked at (unknown place):\n{message}"
                    ),
                };
            }));
        });
    }

    pub fn run_script(f: fn(&Nango) -> Result<(), Error>) -> Result<(), types::ScriptError> {
        quiet_panics();
        f(&Nango::new()).map_err(Error::into_script_error)
    }

    /// An action's output: none when the function returns `()` (as a
    /// TypeScript action that returns nothing), else its JSON, `null`
    /// included (as a TypeScript action that returns `null`).
    pub fn run_action<I: DeserializeOwned, O: Serialize + 'static>(
        input: Option<Vec<u8>>,
        f: fn(&Nango, I) -> Result<O, Error>,
    ) -> Result<Option<Vec<u8>>, types::ScriptError> {
        quiet_panics();
        // No input (the original also turns `{}` into none) fits an
        // `Option` as `None`, and a struct whose fields are all optional as
        // `{}`.
        let input: Result<I, String> = match input.as_deref() {
            Some(json) => serde_json::from_slice(json).map_err(|e| {
                format!("the action input does not fit the script's input type: {e}")
            }),
            // Said as `{}` fails: what the script's type needs of an
            // input (`missing field `id``), not of a `null` nobody sent.
            None => serde_json::from_slice(b"null").or_else(|_| {
                serde_json::from_slice(b"{}").map_err(|e| {
                    format!(
                        "the action was given no input (none, or `{{}}`), and the script's input type needs one: {}",
                        e.to_string().trim_end_matches(" at line 1 column 2")
                    )
                })
            }),
        };
        let input = input.map_err(|message| {
            types::ScriptError::Sdk(types::NangoError {
                code: "invalid_action_input".into(),
                message,
                payload: None,
            })
        })?;
        let output = f(&Nango::new(), input).map_err(Error::into_script_error)?;
        if std::any::TypeId::of::<O>() == std::any::TypeId::of::<()>() {
            return Ok(None);
        }
        let json = serde_json::to_vec(&output).map_err(|e| Error::from(e).into_script_error())?;
        Ok(Some(json))
    }

    pub fn run_webhook(
        payload: Vec<u8>,
        f: fn(&Nango, Value) -> Result<Option<Value>, Error>,
    ) -> Result<Option<Vec<u8>>, types::ScriptError> {
        quiet_panics();
        let payload: Value = serde_json::from_slice(&payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into_owned()));
        let out = f(&Nango::new(), payload).map_err(Error::into_script_error)?;
        Ok(out.map(|v| v.to_string().into()))
    }

    pub fn no_webhook() -> Result<Option<Vec<u8>>, types::ScriptError> {
        let name = connection::info().script_name;
        Err(types::ScriptError::Internal(format!(
            "There is no onWebhookPayloadReceived export for {name}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sdk_error(payload: &[u8]) -> Error {
        types::NangoError {
            code: "some_code".into(),
            message: "it failed".into(),
            payload: Some(payload.to_vec()),
        }
        .into()
    }

    /// A payload that is not JSON reaches the script as a string, as in
    /// the TypeScript SDK (it was dropped).
    #[test]
    fn an_sdk_errors_payload_is_kept_as_a_string_when_it_is_not_json() {
        let payload = |e: Error| match e {
            Error::Sdk { payload, .. } => payload,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            payload(sdk_error(b"<html>Bad gateway</html>")),
            Some(json!("<html>Bad gateway</html>"))
        );
        assert_eq!(
            payload(sdk_error(br#"{"missing": ["id"]}"#)),
            Some(json!({"missing": ["id"]}))
        );
        assert_eq!(payload(sdk_error(b"\"text\"")), Some(json!("text")));
    }

    /// As a TypeScript action: one that returns `null` outputs `null`,
    /// one that returns nothing outputs nothing.
    #[test]
    fn an_action_returning_null_outputs_null_and_one_returning_nothing_none() {
        fn null(_: &Nango, _: Option<Value>) -> Result<Value, Error> {
            Ok(Value::Null)
        }
        fn none(_: &Nango, _: Option<Value>) -> Result<Option<String>, Error> {
            Ok(None)
        }
        fn nothing(_: &Nango, _: Option<Value>) -> Result<(), Error> {
            Ok(())
        }
        fn some(_: &Nango, input: Option<Value>) -> Result<Value, Error> {
            Ok(json!({"got": input}))
        }
        let out = |r: Result<Option<Vec<u8>>, types::ScriptError>| match r {
            Ok(out) => out.map(|b| String::from_utf8(b).unwrap()),
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(
            out(__private::run_action(None, null)).as_deref(),
            Some("null")
        );
        assert_eq!(
            out(__private::run_action(None, none)).as_deref(),
            Some("null")
        );
        assert_eq!(out(__private::run_action(None, nothing)), None);
        assert_eq!(
            out(__private::run_action(Some(b"[1]".to_vec()), some)).as_deref(),
            Some(r#"{"got":[1]}"#)
        );
    }

    /// A binary body goes to the host as bytes, whatever they are.
    #[test]
    fn a_binary_body_is_sent_as_bytes() {
        let bytes = vec![0u8, 159, 146, 150, 255];
        let req = Nango::new().post("/upload").bytes(bytes.clone());
        assert!(
            matches!(&req.req.data, Some(http::Body::Bytes(b)) if *b == bytes),
            "{:?}",
            req.req.data
        );
    }
}
