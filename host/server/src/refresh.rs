//! OAuth2 token refresh: one environment's connections as scripts and the
//! API see them, with expired (or soon-expiring) access tokens refreshed
//! first through the provider's token URL and the integration's client
//! credentials. One refresh at a time per connection, however many
//! executions ask; a failed refresh marks the connection's error and answers
//! `invalid_credentials`, which the proxy turns into an upstream 401.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sluice_runtime::connection::{Connection, ConnectionError, ConnectionStore, Credentials};
use sluice_runtime::providers::ProviderCatalog;
use sluice_runtime::proxy::INVALID_CREDENTIALS;
use sluice_store::EnvStore;

use crate::provider_clients::{Body, ClientRequest, Endpoint, ProviderClient, Renewal};

/// A token expiring within this margin is refreshed before use, so a
/// request never starts with a token about to lapse (the original uses
/// 15 minutes; a request rarely takes more than a few).
const REFRESH_MARGIN: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// When a token that has not expired is refreshed all the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Force {
    /// Only an expired (or expiring) token.
    No,
    /// `GET /connection/:id?force_refresh=true`: always, as the original's
    /// manual refresh, unless another refresh replaced the token while
    /// this one waited for the connection's lock.
    Asked,
    /// A script's request the provider refused (401): unless the token was
    /// refreshed within the last five minutes (a burst of executions
    /// refused at once is one refresh), or a refresh of the same tokens
    /// failed within the cooldown (as `No`).
    Refused,
}

/// Now plus `secs` seconds (an `expires_in` from a client or a token
/// endpoint), or `None` when that is not a date chrono can hold.
pub(crate) fn expires_after(secs: i64) -> Option<DateTime<Utc>> {
    Utc::now().checked_add_signed(chrono::TimeDelta::try_seconds(secs)?)
}

/// When an OAuth2 token endpoint's answer says its token expires: its own
/// `expires_at`, else now plus `expires_in` (seconds, a number or a
/// numeric string; under a second, or beyond what a date can hold: none).
/// `None`: the token does not expire. The code exchange and a refresh read
/// an answer alike.
pub(crate) fn token_expiry(tokens: &serde_json::Map<String, Value>) -> Option<DateTime<Utc>> {
    let given_at = tokens
        .get("expires_at")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc));
    let expires_in = tokens.get("expires_in").and_then(|v| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()))
            .filter(|secs| secs.is_finite() && *secs >= 1.0 && *secs < 1e12)
            .map(|secs| secs as i64)
    });
    // RFC 3339 as stored has four-digit years: a later date is read
    // back as none, a token that does not expire.
    given_at
        .or_else(|| expires_in.and_then(expires_after))
        .filter(|at| (0..=9999).contains(&chrono::Datelike::year(at)))
}

/// The largest token endpoint answer read (tokens are kilobytes).
const MAX_TOKEN_RESPONSE: usize = 1 << 20;

/// How long a token endpoint may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The collection of connection errors (`{pck}/{cid}` → the error).
pub const CONNECTION_ERRORS: &str = "connection-errors";

/// Held while a connection's token is refreshed: one refresh at a time
/// per connection.
type RefreshLock = Arc<tokio::sync::Mutex<RefreshState>>;

/// What this process knows of a connection's refreshes.
#[derive(Default)]
struct RefreshState {
    /// When it last refreshed the connection, and the access token it got.
    refreshed: Option<(std::time::Instant, String)>,
    /// When a refresh last failed, for which credentials (a digest), and
    /// why.
    failed: Option<(std::time::Instant, [u8; 32], String)>,
    /// When the app was last told of a failed refresh (its `auth`
    /// webhook): once per failing stretch, then at most every
    /// [`TELL_AGAIN_AFTER`], however often the refresh is tried.
    told: Option<std::time::Instant>,
    /// Credentials a refresh got that the store did not take (it failed
    /// on each try), with the ones they replace: a provider that rotates
    /// refresh tokens has already revoked the stored one, so the next
    /// refresh writes these instead of asking the provider again.
    unsaved: Option<(Credentials, Credentials)>,
}

/// Tries of the write of a refresh's credentials, and the wait before
/// the first retry (doubling).
const SAVE_TRIES: u32 = 4;
const SAVE_RETRY: Duration = Duration::from_millis(100);

/// How often the app is told again of a connection whose refreshes keep
/// failing.
const TELL_AGAIN_AFTER: Duration = Duration::from_secs(3600);

/// After a failed refresh, the same credentials are not sent to the
/// token endpoint again for this long, unless the app asks
/// (`force_refresh`): as the original's cooldown, so executions and apps
/// using a dead connection do not hammer the provider.
const REFRESH_FAILURE_COOLDOWN: Duration = Duration::from_secs(30);

/// A digest of the tokens a refresh sends (a re-import with new ones is
/// tried at once).
fn tokens_digest(c: &Connection) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for field in ["refresh_token", "access_token", "token", "session_id"] {
        h.update(c.credentials.field(field).unwrap_or_default().as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// One environment's connections, refreshing OAuth2 tokens.
pub struct Connections {
    store: EnvStore,
    providers: Arc<ProviderCatalog>,
    http: reqwest::Client,
    /// The environment's `allowed_hosts`: the only way to a token URL whose
    /// host a connection's value chose and that is not a public address.
    allowed_hosts: Vec<String>,
    /// `ServerConfig::upstream_redirect`: token requests go there too.
    redirect: Option<url::Url>,
    /// Where a failed refresh is kept (kind `auth`, named
    /// `refresh_token`), so the connection's error names its log.
    logs: Option<Arc<crate::logs::Logs>>,
    locks: Mutex<HashMap<(String, String), RefreshLock>>,
    /// Where a failed refresh is told (the app's `auth` webhook with
    /// `operation: "refresh"`); full, a failure is not told.
    failures: Option<tokio::sync::mpsc::Sender<(Connection, String)>>,
}

fn backend(e: impl std::fmt::Display) -> ConnectionError {
    ConnectionError::Backend(e.to_string())
}

fn not_found(pck: &str, cid: &str) -> ConnectionError {
    ConnectionError::NotFound {
        provider_config_key: pck.to_string(),
        connection_id: cid.to_string(),
    }
}

fn expires_at(c: &Credentials) -> Option<DateTime<Utc>> {
    c.field("expires_at")
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
}

/// The provider's token URL for connection `c`, and whether its host is one
/// the connection chose (then resolved to public addresses only). Its
/// client secret and the refresh token go there: a connection whose values
/// choose the host (`https://${connectionConfig.subdomain}.zendesk.com/…`)
/// can neither move it out of the template's domain nor point it at a
/// non-public address (unless `allowed_hosts` names it).
fn token_url(
    template: &str,
    c: &Connection,
    allowed_hosts: &[String],
) -> Result<(String, bool), String> {
    use sluice_runtime::template::UrlTemplateError;
    let expanded = sluice_runtime::template::expand_url_encoded(template, &|k| c.lookup(k))
        .map_err(|e| match e {
            UrlTemplateError::Missing => format!("cannot build the token URL `{template}`"),
            e => format!("the token URL `{template}`: {e}"),
        })?;
    if !expanded.host_from_connection {
        return Ok((expanded.url, false));
    }
    let url = url::Url::parse(&expanded.url)
        // The template, not the URL made from it: that may hold credentials
        // (`?password=${credentials.password}`), and this message reaches
        // the connection's errors, its logs and the script.
        .map_err(|e| {
            format!("the token URL `{template}` with this connection's values is not a URL: {e}")
        })?;
    if sluice_runtime::proxy::in_allowlist(&url, allowed_hosts) {
        return Ok((expanded.url, false));
    }
    if !sluice_runtime::proxy::public_host(&url) {
        return Err(format!(
            "the token URL's host `{}` comes from the connection's configuration and is not a public address (loopback, private, link-local…); only the environment's allowed_hosts may name such a host",
            url.host_str().unwrap_or("")
        ));
    }
    Ok((expanded.url, true))
}

/// `e` and its sources, as one line.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

/// Whether a connection's token should be refreshed before use.
fn expiring(c: &Connection, now: DateTime<Utc>, providers: &ProviderCatalog) -> bool {
    if !refreshable(c, providers) {
        return false;
    }
    match expires_at(&c.credentials) {
        Some(at) => at - margin(c, providers) <= now,
        // A token sluice makes is short-lived: one imported without its
        // expiry is made again before use (and then has one).
        None => matches!(c.credentials.kind(), "JWT" | "SIGNATURE" | "BILL"),
    }
}

/// How long before it expires a connection's token is replaced: the
/// provider's `token_expiration_buffer` when it has one (Exact Online
/// refuses to refresh a token with more than 30 s left), else five
/// minutes, or a fifth of the lifetime of a token sluice makes itself
/// (Ghost's and Emarsys's live five minutes: made again in the last one,
/// not before every request).
fn margin(c: &Connection, providers: &ProviderCatalog) -> chrono::TimeDelta {
    if let Some(buffer) = buffer_of(c, providers) {
        return buffer;
    }
    match (c.credentials.kind(), providers.get(&c.provider)) {
        ("JWT" | "SIGNATURE", Some(p)) => REFRESH_MARGIN.min(chrono::TimeDelta::milliseconds(
            crate::jwt::lifetime_ms(&p.definition) / 5,
        )),
        // A provider's token shorter-lived than the margin (from when it
        // was stored) is replaced in the last fifth of its life, not at
        // every use.
        ("TWO_STEP", _) => expires_at(&c.credentials)
            .map(|at| (at - c.updated_at) / 5)
            .map_or(REFRESH_MARGIN, |fifth| {
                REFRESH_MARGIN.min(fifth.max(chrono::TimeDelta::seconds(1)))
            }),
        _ => REFRESH_MARGIN,
    }
}

/// The provider's own margin, `token_expiration_buffer` (seconds), as
/// the original reads it for every token it refreshes.
fn buffer_of(c: &Connection, providers: &ProviderCatalog) -> Option<chrono::TimeDelta> {
    let secs = providers
        .get(&c.provider)?
        .definition
        .get("token_expiration_buffer")?
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)?;
    Some(chrono::TimeDelta::milliseconds((secs * 1000.0) as i64))
}

/// Whether a connection's token can be renewed: an OAuth2 one with a
/// refresh token, or a client-credentials one (`OAUTH2_CC`) with its
/// client id (a new token is asked for with it, as the original does).
fn refreshable(c: &Connection, providers: &ProviderCatalog) -> bool {
    match c.credentials.kind() {
        // A provider the original renews its own way says how (Facebook
        // with the access token, TikTok Ads never).
        "OAUTH2" => match ProviderClient::of(&c.provider).map(ProviderClient::renewal) {
            Some(Renewal::Never) => false,
            Some(Renewal::AccessToken) => c
                .credentials
                .field("access_token")
                .is_some_and(|t| !t.is_empty()),
            Some(Renewal::RefreshToken) | None => c.credentials.field("refresh_token").is_some(),
        },
        "OAUTH2_CC" => c
            .credentials
            .field("client_id")
            .is_some_and(|id| !id.is_empty()),
        // An installation token, asked for again by the app.
        "APP" => {
            crate::github_app::installation_id(&c.connection_config).is_some()
                && providers
                    .get(&c.provider)
                    .is_some_and(|p| p.auth_mode.as_deref() == Some("APP"))
        }
        // Asked for again with the user's credentials it keeps, when its
        // provider's definition is one sluice follows (else the token it
        // was imported with is used as it is).
        "TWO_STEP" => providers
            .get(&c.provider)
            .is_some_and(|p| crate::two_step::unsupported(&p.definition).is_none()),
        // Made again from the user's credentials it keeps, when its
        // provider makes such tokens (or, BILL, logs in).
        kind @ ("JWT" | "SIGNATURE" | "BILL") => providers
            .get(&c.provider)
            .is_some_and(|p| p.auth_mode.as_deref() == Some(kind)),
        _ => false,
    }
}

/// A provider's parameters for a token request (`token_params`,
/// `refresh_params`), but the `skip`ped ones: a number or boolean as its
/// text, a template expanded with connection `c`'s values; one the
/// connection cannot complete is left out (not sent as `${…}`).
fn provider_params(params: Option<&Value>, c: &Connection, skip: &[&str]) -> Vec<(String, String)> {
    params
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            let v = match v {
                Value::String(t) => sluice_runtime::template::expand(t, &|name| c.lookup(name))?,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((k.clone(), v))
        })
        .collect()
}

/// The OAuth client a connection's token is refreshed with: its own
/// (`credentials.config_override`, a user's own OAuth app: both id and
/// secret), else the integration's.
fn client_of<'a>(
    c: &'a Connection,
    integration: &'a sluice_store::Integration,
) -> (&'a str, &'a str) {
    let own = c.credentials.as_map().get("config_override");
    let field = |k: &str| {
        own.and_then(|o| o.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    // A public client (a generic MCP server's, registered for the
    // connection) has an empty secret, given as such.
    let public = own
        .and_then(|o| o.get("client_secret"))
        .and_then(Value::as_str)
        == Some("");
    match (field("client_id"), field("client_secret")) {
        (Some(id), Some(secret)) => (id, secret),
        (Some(id), None) if public => (id, ""),
        _ => (
            integration.oauth_client_id.as_deref().unwrap_or(""),
            integration.oauth_client_secret.as_deref().unwrap_or(""),
        ),
    }
}

/// Sends a token request and reads its JSON answer, a chunk at a time up
/// to a bound (decompressed): a token is a few kilobytes, and an endpoint
/// streaming gigabytes must not fill the server's memory. A refusal's
/// text is shown with `secrets` redacted (an endpoint may echo what it
/// was sent).
async fn token_answer<'a>(
    request: reqwest::RequestBuilder,
    secrets: impl IntoIterator<Item = &'a str>,
) -> Result<Map<String, Value>, String> {
    read_token_answer(request.header("accept", "application/json"), secrets).await
}

/// [`token_answer`] for a request that says itself what it accepts.
async fn read_token_answer<'a>(
    request: reqwest::RequestBuilder,
    secrets: impl IntoIterator<Item = &'a str>,
) -> Result<Map<String, Value>, String> {
    let body = token_answer_text(request, secrets).await?;
    serde_json::from_str(&body)
        .map_err(|e| format!("the token endpoint's answer is not a JSON object: {e}"))
}

/// A token endpoint's answer as text, read a chunk at a time up to
/// [`MAX_TOKEN_RESPONSE`]; a refusal named with its status and words,
/// `secrets` redacted.
async fn token_answer_text<'a>(
    request: reqwest::RequestBuilder,
    secrets: impl IntoIterator<Item = &'a str>,
) -> Result<String, String> {
    token_answer_with_headers(request, secrets)
        .await
        .map(|(body, _)| body)
}

/// [`token_answer_text`] and the answer's headers.
async fn token_answer_with_headers<'a>(
    request: reqwest::RequestBuilder,
    secrets: impl IntoIterator<Item = &'a str>,
) -> Result<(String, reqwest::header::HeaderMap), String> {
    answer_with_headers(request, secrets, "the token endpoint").await
}

/// The JSON object `what` (an endpoint named for messages) answers,
/// read as a token endpoint's is: bounded, a refusal named with its
/// status and words.
pub(crate) async fn json_answer(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<Map<String, Value>, String> {
    let (body, _) =
        answer_with_headers(request.header("accept", "application/json"), [], what).await?;
    serde_json::from_str(&body).map_err(|e| format!("{what}'s answer is not a JSON object: {e}"))
}

async fn answer_with_headers<'a>(
    request: reqwest::RequestBuilder,
    secrets: impl IntoIterator<Item = &'a str>,
    what: &str,
) -> Result<(String, reqwest::header::HeaderMap), String> {
    let mut response = request
        .timeout(TOKEN_TIMEOUT)
        .send()
        .await
        // Without the URL, whose query may carry credentials.
        .map_err(|e| format!("{what} did not answer: {}", with_sources(&e.without_url())))?;
    let status = response.status();
    let headers = response.headers().clone();
    let mut bytes: Vec<u8> = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("{what}'s answer was cut: {}", e.without_url()))?
    {
        if bytes.len() + chunk.len() > MAX_TOKEN_RESPONSE {
            return Err(format!(
                "{what}'s answer is longer than {MAX_TOKEN_RESPONSE} bytes"
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    let body = String::from_utf8_lossy(&bytes).into_owned();
    if !status.is_success() {
        let body = sluice_runtime::proxy::redact_values(&body, secrets);
        let shown: String = body.chars().take(300).collect();
        return Err(format!("{what} answered HTTP {status}: {shown}"));
    }
    Ok((body, headers))
}

/// A client an authorization server registered (RFC 7591).
pub(crate) struct Registered {
    pub client_id: String,
    pub client_secret: Option<String>,
    /// How it authenticates at the token endpoint, as the server said.
    pub auth_method: Option<String>,
}

impl Connections {
    /// Connection `c`'s provider and the template of its token URL.
    fn token_source(
        &self,
        c: &Connection,
    ) -> Result<(&sluice_runtime::providers::Provider, &str), String> {
        let provider = self
            .providers
            .get(&c.provider)
            .ok_or_else(|| format!("provider `{}` is not in the catalogue", c.provider))?;
        // A generic MCP server's is the one its metadata named when the
        // user connected, kept in the connection's configuration: a host
        // the connection chose, so public addresses only.
        if provider.auth_mode.as_deref() == Some("MCP_OAUTH2_GENERIC") {
            return Ok((provider, crate::mcp::TOKEN_URL_TEMPLATE));
        }
        let template = provider
            .token_url
            .as_deref()
            .ok_or_else(|| format!("provider `{}` has no token_url", c.provider))?;
        Ok((provider, template))
    }

    /// The client and URL for a request to `url`, which a user or a
    /// server's metadata chose (a generic MCP server's, its authorization
    /// server's): https, a domain name that is public, resolved to public
    /// addresses only — whatever `allowed_hosts` says, since that list is
    /// the operator's for scripts, not for what a browser or a remote
    /// server names; sent to the mock upstream when the server has one.
    pub(crate) fn chosen_target(
        &self,
        url: &str,
        what: &str,
    ) -> Result<(reqwest::Client, String), String> {
        let mut parsed =
            url::Url::parse(url).map_err(|e| format!("{what} `{url}` is not a URL: {e}"))?;
        if parsed.scheme() != "https" {
            return Err(format!("{what} `{url}` must be an https URL"));
        }
        if !matches!(parsed.host(), Some(url::Host::Domain(_))) {
            return Err(format!(
                "{what} `{url}` must name its host (a domain name, not an address)"
            ));
        }
        if !sluice_runtime::proxy::public_host(&parsed) {
            return Err(format!(
                "{what} `{url}` is not a public host (localhost, an internal name…)"
            ));
        }
        if let Some(to) = &self.redirect {
            parsed
                .set_scheme(to.scheme())
                .and_then(|()| parsed.set_host(to.host_str()).map_err(|_| ()))
                .and_then(|()| parsed.set_port(to.port_or_known_default()))
                .map_err(|()| format!("{what} cannot be sent to the mock upstream {to}"))?;
            return Ok((self.http.clone(), parsed.to_string()));
        }
        Ok((
            sluice_runtime::proxy::public_only_client(),
            parsed.to_string(),
        ))
    }

    /// The client and URL a token request for connection `c` goes to:
    /// `template` expanded with its values (a host they choose must be a
    /// public address), or the mock upstream when the server has one.
    fn token_target(
        &self,
        template: &str,
        c: &Connection,
    ) -> Result<(reqwest::Client, String), String> {
        // A generic MCP server's: checked as discovery checked it, at
        // every use (an import may have set it).
        if template == crate::mcp::TOKEN_URL_TEMPLATE {
            let url = c
                .connection_config
                .get("oauth_token_url")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                .ok_or(
                    "the connection has no `oauth_token_url` (its MCP server's token endpoint)",
                )?;
            return self.chosen_target(url, "the token URL");
        }
        // A host a browser chose, at creation or at any later request:
        // `allowed_hosts` is the operator's list for scripts and the app,
        // not for what a browser names.
        let allowed_hosts: &[String] = if c.token_host_from_browser {
            &[]
        } else {
            &self.allowed_hosts
        };
        let (mut url, public_only) = token_url(template, c, allowed_hosts)?;
        let http = if public_only && self.redirect.is_none() {
            sluice_runtime::proxy::public_only_client()
        } else {
            self.http.clone()
        };
        if let Some(to) = &self.redirect {
            // Refused rather than sent to the real host (with the client
            // secret) should the URL not take the mock's address.
            let mut u = url::Url::parse(&url).map_err(|e| format!("token URL `{url}`: {e}"))?;
            u.set_scheme(to.scheme())
                .and_then(|()| u.set_host(to.host_str()).map_err(|_| ()))
                .and_then(|()| u.set_port(to.port_or_known_default()))
                .map_err(|()| {
                    format!("token URL `{url}` cannot be sent to the mock upstream {to}")
                })?;
            url = u.to_string();
        }
        Ok((http, url))
    }

    /// A token request to the provider's token URL for connection `c`
    /// (expanded with its values): `form` plus the client's credentials
    /// as the provider takes them (in the body, or Basic with
    /// `authorization_method: header`, and Basic too with
    /// `token_request_auth_method: basic`), as a form or as JSON
    /// (`body_format: json`), as the original's OAuth client sends them.
    /// A refusal's text is shown with `secrets` and the client secret
    /// redacted. Returns the endpoint's answer.
    pub(crate) async fn token_grant(
        &self,
        c: &Connection,
        mut form: Vec<(String, String)>,
        (client_id, client_secret): (&str, &str),
        secrets: &[&str],
    ) -> Result<Map<String, Value>, String> {
        let (provider, template) = self.token_source(c)?;
        let (http, url) = self.token_target(template, c)?;
        let definition = &provider.definition;
        let said = |key: &str| definition.get(key).and_then(Value::as_str);
        // A client an MCP server registered for the connection says how
        // it authenticates (RFC 7591: Basic unless it said otherwise).
        let header_auth = said("authorization_method") == Some("header")
            || (template == crate::mcp::TOKEN_URL_TEMPLATE
                && c.connection_config
                    .get("oauth_client_auth")
                    .and_then(Value::as_str)
                    == Some("client_secret_basic"));
        let mut request = http.post(&url).header("user-agent", "Nango");
        if !header_auth {
            for (k, v) in [("client_id", client_id), ("client_secret", client_secret)] {
                if !v.is_empty() && !form.iter().any(|(have, _)| have == k) {
                    form.push((k.to_string(), v.to_string()));
                }
            }
        }
        if header_auth && !client_id.is_empty() {
            // As RFC 6749 §2.3.1 (and the original's OAuth client) has
            // it: each form-encoded before they are joined.
            let encode =
                |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            request = request.basic_auth(encode(client_id), Some(encode(client_secret)));
        } else if said("token_request_auth_method") == Some("basic") && !client_id.is_empty() {
            // The original builds this one itself, unencoded.
            request = request.basic_auth(client_id, Some(client_secret));
        }
        request = if said("body_format") == Some("json") {
            let body: Map<String, Value> = form
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            request
                .header("content-type", "application/json")
                .body(Value::Object(body).to_string())
        } else {
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&form)
                .finish();
            request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encoded)
        };
        // An endpoint that echoes the request may show the Basic header:
        // its base64 is the client secret too.
        let basic: Vec<String> = if client_secret.is_empty() {
            Vec::new()
        } else {
            let encode =
                |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            [
                format!("{client_id}:{client_secret}"),
                format!("{}:{}", encode(client_id), encode(client_secret)),
            ]
            .iter()
            .map(|pair| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair))
            .collect()
        };
        let redacted = secrets
            .iter()
            .copied()
            .chain(Some(client_secret).filter(|s| !s.is_empty()))
            .chain(basic.iter().map(String::as_str));
        token_answer(request, redacted).await
    }

    /// A token request of a provider the original asks its own way
    /// (see [`crate::provider_clients`]) for connection `c`: sent to the
    /// provider's `token_url` or `refresh_url`, each expanded with `c`'s
    /// values and checked as [`Self::token_grant`]'s (and to the mock
    /// upstream when the server has one), with the same bound and
    /// timeout; `read` takes what the connection keeps of the answer. A
    /// refusal's text, and `read`'s, are shown with `secrets` and the
    /// Basic header redacted.
    pub(crate) async fn client_grant(
        &self,
        c: &Connection,
        asked: ClientRequest,
        secrets: &[&str],
        read: impl FnOnce(&Map<String, Value>) -> Result<Map<String, Value>, String>,
    ) -> Result<Map<String, Value>, String> {
        let (provider, token_template) = self.token_source(c)?;
        let template = match asked.endpoint {
            Endpoint::Token => token_template,
            Endpoint::Refresh => provider
                .definition
                .get("refresh_url")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                .ok_or_else(|| format!("provider `{}` has no refresh_url", c.provider))?,
        };
        let (http, url) = self.token_target(template, c)?;
        // The URL's own error, not the URL (it may hold credentials).
        let mut url =
            url::Url::parse(&url).map_err(|e| format!("the token URL `{template}`: {e}"))?;
        if !asked.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&asked.query);
        }
        let mut request = http.post(url.as_str()).header("user-agent", "Nango");
        request = match &asked.body {
            Body::Empty => request,
            Body::Json(body) => request
                .header("content-type", "application/json")
                .body(Value::Object(body.clone()).to_string()),
            Body::Form(form) => request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(form)
                        .finish(),
                ),
        };
        let mut hidden: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        if let Some((user, password)) = &asked.basic {
            request = request.basic_auth(user, Some(password));
            // An endpoint that echoes the request may show the header.
            hidden.push(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:{password}"),
            ));
        }
        let answer = token_answer(request, hidden.iter().map(String::as_str)).await?;
        read(&answer).map_err(|e| {
            sluice_runtime::proxy::redact_values(&e, hidden.iter().map(String::as_str))
        })
    }

    pub fn new(
        store: EnvStore,
        providers: Arc<ProviderCatalog>,
        http: reqwest::Client,
        allowed_hosts: Vec<String>,
    ) -> Self {
        Self {
            store,
            providers,
            http,
            allowed_hosts,
            redirect: None,
            logs: None,
            locks: Mutex::new(HashMap::new()),
            failures: None,
        }
    }

    /// These connections for a token request whose host a browser's
    /// value chose (a connect session's TWO_STEP or client-credentials
    /// first token): `allowed_hosts` is the operator's list for scripts
    /// and the app, not for what a browser names, so that host must be a
    /// public address (else anyone holding a connect session could make
    /// the server post to an internal host the operator opened for
    /// scripts and read the start of its answer in the refusal).
    pub(crate) fn for_browser(&self) -> Connections {
        Connections {
            store: self.store.clone(),
            providers: self.providers.clone(),
            http: self.http.clone(),
            allowed_hosts: Vec::new(),
            redirect: self.redirect.clone(),
            logs: None,
            locks: Mutex::new(HashMap::new()),
            failures: None,
        }
    }

    /// Failed refreshes are sent to `to` as well.
    pub fn reporting(mut self, to: tokio::sync::mpsc::Sender<(Connection, String)>) -> Self {
        self.failures = Some(to);
        self
    }

    /// Token requests go to `to` instead of the provider's host (path and
    /// query kept): the mock upstream of `serve --mock-upstream`.
    pub fn redirected(mut self, to: Option<url::Url>) -> Self {
        self.redirect = to;
        self
    }

    /// Failed refreshes are kept in `logs`.
    pub fn logged(mut self, logs: Arc<crate::logs::Logs>) -> Self {
        self.logs = Some(logs);
        self
    }

    /// The connection was imported anew (or deleted): a refresh that
    /// failed before is no reason to refuse the next one.
    pub fn forget_failure(&self, pck: &str, cid: &str) {
        let lock = self.existing_lock(pck, cid);
        // A refresh under way records its own outcome; waiting for it
        // (up to the token endpoint's timeout) would hold the request.
        if let Some(mut state) = lock.as_ref().and_then(|l| l.try_lock().ok()) {
            state.failed = None;
            // Replaced or gone: what a refresh could not store is moot.
            state.unsaved = None;
        }
    }

    fn lock_for(&self, pck: &str, cid: &str) -> RefreshLock {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // A lock only the map holds guards no refresh: past a thousand,
        // those go (one per connection ever refreshed, deleted ones too,
        // would otherwise stay for the life of the process).
        // A failure still in its cooldown stays too, and credentials the
        // store did not take.
        if locks.len() >= 1024 {
            locks.retain(|_, l| {
                Arc::strong_count(l) > 1
                    || l.try_lock().map_or(true, |s| {
                        s.unsaved.is_some()
                            || s.failed
                                .as_ref()
                                .is_some_and(|(at, ..)| at.elapsed() < REFRESH_FAILURE_COOLDOWN)
                    })
            });
        }
        locks
            .entry((pck.to_string(), cid.to_string()))
            .or_default()
            .clone()
    }

    /// Whether a refresh of connection `pck`/`cid` holds credentials the
    /// store refused (a refresh under way, holding the lock, says no).
    fn has_unsaved(&self, pck: &str, cid: &str) -> bool {
        self.existing_lock(pck, cid)
            .is_some_and(|l| l.try_lock().is_ok_and(|s| s.unsaved.is_some()))
    }

    /// The refresh lock of connection `pck`/`cid`, if one was made.
    fn existing_lock(&self, pck: &str, cid: &str) -> Option<RefreshLock> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(pck.to_string(), cid.to_string()))
            .cloned()
    }

    /// Writes a refresh's credentials `new` over `old` (see
    /// [`sluice_store::EnvStore::refresh_credentials`]), trying again
    /// over a failing store.
    async fn save_refreshed(
        &self,
        pck: &str,
        cid: &str,
        old: &Credentials,
        new: Credentials,
    ) -> Result<Connection, ConnectionError> {
        let mut wait = SAVE_RETRY;
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .store
                .refresh_credentials(pck, cid, old, new.clone())
                .await
            {
                Ok(Some(c)) => return Ok(c),
                Ok(None) => return Err(not_found(pck, cid)),
                Err(e) if tries >= SAVE_TRIES => return Err(backend(e)),
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }

    async fn stored(&self, pck: &str, cid: &str) -> Result<Connection, ConnectionError> {
        self.store
            .connection(pck, cid)
            .await
            .map_err(backend)?
            .ok_or_else(|| not_found(pck, cid))
    }

    /// The connection, refreshed first when its token expired or is about
    /// to, or whenever `force` says (see [`Force`]).
    pub async fn fresh(
        &self,
        pck: &str,
        cid: &str,
        force: Force,
    ) -> Result<Connection, ConnectionError> {
        let c = self.stored(pck, cid).await?;
        let forced = force != Force::No && refreshable(&c, &self.providers);
        if !(expiring(&c, Utc::now(), &self.providers) || forced || self.has_unsaved(pck, cid)) {
            return Ok(c);
        }
        let seen = c.credentials.token().map(str::to_string);
        let lock = self.lock_for(pck, cid);
        let mut state = lock.lock().await;
        // Another execution may have refreshed while this one waited; a
        // burst of forced refreshes is one refresh. An import or a
        // metadata change is not a refresh: `force` still refreshes after
        // one.
        let c = self.stored(pck, cid).await?;
        let token = c.credentials.token();
        let skip_forced = match force {
            Force::No => true,
            // Refreshed while this request waited for the lock.
            Force::Asked => token != seen.as_deref(),
            // Every execution's request refused at once: the token they
            // were refused may already have been replaced, by a refresh
            // that ended before this one began.
            Force::Refused => state.refreshed.as_ref().is_some_and(|(at, refreshed)| {
                at.elapsed() < REFRESH_MARGIN.to_std().unwrap_or_default()
                    && token == Some(refreshed.as_str())
            }),
        };
        // A refresh the store did not take: written now, if the
        // connection still has the credentials it replaced. Still
        // refused, they are the connection's as far as this refresh goes
        // (handed out, or refreshed in turn when they expire), and the
        // stored ones stay what a write must find.
        let mut c = c;
        let mut stored = c.credentials.clone();
        if let Some((old, new)) = state.unsaved.take()
            && c.credentials == old
        {
            match self.save_refreshed(pck, cid, &old, new.clone()).await {
                Ok(saved) => return Ok(saved),
                Err(ConnectionError::Backend(_)) => {
                    state.unsaved = Some((old.clone(), new.clone()));
                    stored = old;
                    c = Connection {
                        credentials: new,
                        ..c
                    };
                }
                Err(e) => return Err(e),
            }
        }
        if !expiring(&c, Utc::now(), &self.providers) && skip_forced {
            return Ok(c);
        }
        // A refresh begun before the token lapsed that fails leaves the
        // token in use until it does (the failure is recorded and told all
        // the same): a provider down for a minute, or one that refuses an
        // early refresh, does not make a valid token unusable.
        let still_valid =
            force == Force::No && expires_at(&c.credentials).is_some_and(|at| at > Utc::now());
        let digest = tokens_digest(&c);
        if still_valid
            && let Some((at, failed_for, _)) = &state.failed
            && at.elapsed() < REFRESH_FAILURE_COOLDOWN
            && *failed_for == digest
        {
            return Ok(c);
        }
        if force != Force::Asked
            && let Some((at, failed_for, message)) = &state.failed
            && at.elapsed() < REFRESH_FAILURE_COOLDOWN
            && *failed_for == digest
        {
            return Err(ConnectionError::Refused {
                code: INVALID_CREDENTIALS.into(),
                message: format!(
                    "the access token of connection `{cid}` expired and could not be refreshed: {message} (not tried again for {} s after a failure; force_refresh=true tries now)",
                    REFRESH_FAILURE_COOLDOWN.as_secs()
                ),
            });
        }
        let started = Utc::now();
        match self.refresh(&c).await {
            Ok(credentials) => {
                state.failed = None;
                state.told = None;
                // Only the credentials are written, and only if nothing
                // replaced them (or deleted the connection) meanwhile;
                // tried again over a store's passing failure, then kept
                // for the next refresh (the provider may have revoked the
                // stored refresh token already).
                let c = match self
                    .save_refreshed(pck, cid, &stored, credentials.clone())
                    .await
                {
                    Ok(saved) => saved,
                    Err(ConnectionError::Backend(e)) => {
                        eprintln!(
                            "sluice: the token refreshed for connection `{cid}` ({pck}) could not be stored ({e}); it is kept in memory and stored by the next refresh"
                        );
                        state.unsaved = Some((stored, credentials.clone()));
                        Connection { credentials, ..c }
                    }
                    Err(e) => return Err(e),
                };
                if let Some(token) = c.credentials.token() {
                    state.refreshed = Some((std::time::Instant::now(), token.to_string()));
                }
                let _ = self
                    .store
                    .delete_doc(CONNECTION_ERRORS, &format!("{pck}/{cid}"))
                    .await;
                Ok(c)
            }
            Err(message) => {
                state.failed = Some((std::time::Instant::now(), digest, message.clone()));
                let refused = || ConnectionError::Refused {
                    code: INVALID_CREDENTIALS.into(),
                    message: format!(
                        "the access token of connection `{cid}` expired and could not be refreshed: {message}"
                    ),
                };
                // As the original's `errors: [{type: "auth", log_id}]`.
                // The same failure within half a minute keeps the log it
                // already has: an app polling a connection whose refresh
                // fails must not fill the logs (and evict others).
                let key = format!("{pck}/{cid}");
                let previous: Option<serde_json::Value> =
                    self.store.doc(CONNECTION_ERRORS, &key).await.ok().flatten();
                let repeated = previous.filter(|p| {
                    p["message"].as_str() == Some(message.as_str())
                        && p["log_id"].is_string()
                        && p["at"]
                            .as_str()
                            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                            .is_some_and(|at| {
                                Utc::now() - at.with_timezone(&Utc) < chrono::Duration::seconds(30)
                            })
                });
                if repeated.is_some() {
                    return if still_valid { Ok(c) } else { Err(refused()) };
                }
                let log_id = match &self.logs {
                    Some(logs) => {
                        let conn = sluice_runtime::records::ConnectionRef {
                            provider_config_key: pck.to_string(),
                            connection_id: cid.to_string(),
                        };
                        let id = logs
                            .record_failure_in(
                                &self.store,
                                &conn,
                                "auth",
                                "refresh_token",
                                started,
                                message.clone(),
                            )
                            .await;
                        Some(id)
                    }
                    None => None,
                };
                let record = serde_json::json!({
                    "type": "auth",
                    "log_id": log_id,
                    "message": message,
                    "at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                });
                let _ = self
                    .store
                    .put_doc_for_connection(pck, cid, CONNECTION_ERRORS, &key, &record)
                    .await;
                if let Some(to) = &self.failures
                    && state.told.is_none_or(|at| at.elapsed() >= TELL_AGAIN_AFTER)
                    && to.try_send((c.clone(), message.clone())).is_ok()
                {
                    state.told = Some(std::time::Instant::now());
                }
                if still_valid { Ok(c) } else { Err(refused()) }
            }
        }
    }

    /// A client-credentials connection's new token: the provider's token
    /// URL asked with the connection's client (`grant_type` from the
    /// provider's `token_params`, `client_credentials` by default; the
    /// scopes of its `connection_config.oauth_scopes`), as the original
    /// renews one.
    pub(crate) async fn renew_client_credentials(
        &self,
        c: &Connection,
        definition: &Map<String, Value>,
    ) -> Result<Credentials, String> {
        let field = |k: &str| c.credentials.field(k).unwrap_or("");
        let (client_id, client_secret) = (field("client_id"), field("client_secret"));
        let mut form = provider_params(definition.get("token_params"), c, &[]);
        if !form.iter().any(|(k, _)| k == "grant_type") {
            form.insert(0, ("grant_type".into(), "client_credentials".into()));
        }
        if let Some(scopes) = c
            .connection_config
            .get("oauth_scopes")
            .and_then(Value::as_str)
        {
            let separator = definition
                .get("scope_separator")
                .and_then(Value::as_str)
                .unwrap_or(" ");
            form.push((
                "scope".into(),
                scopes.split(',').collect::<Vec<_>>().join(separator),
            ));
        }
        let secrets = c.credentials.secrets();
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let raw = self
            .token_grant(c, form, (client_id, client_secret), &secrets)
            .await?;
        let raw_value = Value::Object(raw.clone());
        let token = raw
            .get("access_token")
            .or_else(|| raw.get("data").and_then(|d| d.get("token")))
            .or_else(|| raw.get("jwt"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or("the token endpoint's answer has no access_token")?;
        let multiplier =
            if definition.get("expires_in_unit").and_then(Value::as_str) == Some("milliseconds") {
                0.001
            } else {
                1.0
            };
        let expires_in = raw.get("expires_in").and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()))
                .map(|n| n * multiplier)
                .filter(|secs| secs.is_finite() && *secs >= 1.0 && *secs < 1e12)
                .map(|secs| secs as i64)
        });
        // None given: 55 minutes, as the original assumes.
        let at = raw
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc))
            .or_else(|| expires_after(expires_in.unwrap_or(55 * 60)))
            .ok_or("the token endpoint's answer has an expiry out of range")?;
        let mut creds = c.credentials.as_map().clone();
        creds.insert("token".into(), Value::String(token.to_string()));
        creds.insert(
            "expires_at".into(),
            Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        creds.insert("raw".into(), raw_value);
        serde_json::from_value(Value::Object(creds)).map_err(|e| e.to_string())
    }

    /// A TWO_STEP connection's token, asked for with the credentials and
    /// configuration `c` holds as the provider's definition says (see
    /// [`crate::two_step`]); the credentials to keep with it.
    pub(crate) async fn two_step_token(&self, c: &Connection) -> Result<Credentials, String> {
        match self.two_step_request(c).await {
            // A refresh request the provider refused (its refresh token gone
            // stale): asked for anew with the credentials the connection
            // keeps. Not on a timeout or a 5xx, which the token URL would
            // only see more of.
            Err((true, e))
                if ["HTTP 400", "HTTP 401", "HTTP 403"]
                    .iter()
                    .any(|status| e.contains(status)) =>
            {
                let mut fresh = c.clone();
                let mut map = c.credentials.as_map().clone();
                map.remove("refresh_token");
                fresh.credentials = Credentials::try_from(map)?;
                self.two_step_request(&fresh)
                    .await
                    .map_err(|(_, again)| format!("{e}; asked anew: {again}"))
            }
            other => other.map_err(|(_, e)| e),
        }
    }

    /// One TWO_STEP token request; an error says whether it was a
    /// refresh.
    async fn two_step_request(&self, c: &Connection) -> Result<Credentials, (bool, String)> {
        let (provider, template) = self.token_source(c).map_err(|e| (false, e))?;
        let definition = &provider.definition;
        // Made off the async workers: it may sign a JWT or an assertion
        // with the user's key.
        let asked = {
            let (definition, c) = (definition.clone(), c.clone());
            crate::jwt::off_workers(move || crate::two_step::request(&definition, &c))
                .await
                .map_err(|e| (false, e))?
        };
        let refreshing = asked.refreshing;
        self.send_two_step(c, definition, template, asked)
            .await
            .map_err(|e| (refreshing, e))
    }

    async fn send_two_step(
        &self,
        c: &Connection,
        definition: &Map<String, Value>,
        template: &str,
        asked: crate::two_step::TokenRequest,
    ) -> Result<Credentials, String> {
        let template = asked.url.as_deref().unwrap_or(template);
        let (http, url) = self.token_target(template, c)?;
        let mut request = if asked.get {
            http.get(&url)
        } else {
            http.post(&url)
        };
        request = request.header("user-agent", "Nango");
        let (mut typed, mut accepts) = (false, false);
        for (name, value) in &asked.headers {
            typed |= name.eq_ignore_ascii_case("content-type");
            accepts |= name.eq_ignore_ascii_case("accept");
            request = request.header(name.as_str(), value.as_str());
        }
        if !accepts {
            request = request.header("accept", "application/json");
        }
        if let Some((content_type, body)) = asked.body {
            if !typed {
                request = request.header("content-type", content_type);
            }
            request = request.body(body);
        }
        // The user's secrets, and what was signed with them, are kept out
        // of a refusal's text.
        let mut secrets = c.credentials.secrets();
        secrets.extend(asked.made.iter().cloned());
        let (body, headers) =
            token_answer_with_headers(request, secrets.iter().map(String::as_str)).await?;
        // JSON, or (a definition taking the whole answer as the token)
        // the text itself.
        let answer = serde_json::from_str::<Value>(&body)
            .unwrap_or_else(|_| Value::String(body.trim().to_string()));
        let named_path = definition
            .get("token_response")
            .and_then(|r| r.get("token"))
            .and_then(Value::as_str)
            .is_some_and(|p| !p.is_empty());
        if named_path && !answer.is_object() {
            return Err("the token endpoint's answer is not a JSON object".into());
        }
        let from_headers = crate::two_step::header_values(definition, &headers);
        crate::two_step::credentials(definition, c, answer, from_headers)
    }

    /// A Bill.com connection's session (`BILL`): a login at the
    /// provider's token URL with the user's `username`, `password`,
    /// `organization_id` and `dev_key`, as the original logs in; the
    /// session lasts 35 minutes from its last use there: it expires after
    /// 35 minutes here, and is renewed five minutes before.
    pub(crate) async fn bill_session(&self, c: &Connection) -> Result<Credentials, String> {
        let (_, template) = self.token_source(c)?;
        let field = |k: &str| c.credentials.field(k).filter(|v| !v.is_empty());
        let (Some(username), Some(password), Some(organization), Some(dev_key)) = (
            field("username"),
            field("password"),
            field("organization_id"),
            field("dev_key"),
        ) else {
            return Err(
                "BILL credentials need a `username`, a `password`, an `organization_id` and a `dev_key`"
                    .into(),
            );
        };
        let (http, url) = self.token_target(template, c)?;
        let body = serde_json::json!({
            "username": username,
            "password": password,
            "organizationId": organization,
            "devKey": dev_key,
        });
        let request = http
            .post(&url)
            .header("user-agent", "Nango")
            .header("content-type", "application/json")
            .body(body.to_string());
        let raw = token_answer(request, [password, dev_key]).await?;
        let session = raw
            .get("sessionId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("Bill's answer has no `sessionId`")?;
        let mut creds = Map::new();
        creds.insert("type".into(), Value::String("BILL".into()));
        creds.insert("username".into(), Value::String(username.into()));
        creds.insert("password".into(), Value::String(password.into()));
        // Bill's own spelling of the organization when it gives one, else
        // the user's (the next login needs it).
        let organization = raw
            .get("organizationId")
            .and_then(Value::as_str)
            .filter(|o| !o.is_empty())
            .unwrap_or(organization);
        creds.insert(
            "organization_id".into(),
            Value::String(organization.to_string()),
        );
        creds.insert("dev_key".into(), Value::String(dev_key.into()));
        creds.insert("session_id".into(), Value::String(session.into()));
        if let Some(user) = raw.get("userId") {
            creds.insert("user_id".into(), user.clone());
        }
        let at = Utc::now() + chrono::TimeDelta::minutes(35);
        creds.insert(
            "expires_at".into(),
            Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        creds.insert("raw".into(), Value::Object(raw));
        Credentials::try_from(creds)
    }

    /// An installation token for GitHub App connection `c`
    /// (`connection_config.installation_id`), asked for by the app
    /// `integration` holds with a JWT it signs (see [`crate::github_app`]).
    pub(crate) async fn app_token(
        &self,
        c: &Connection,
        integration: &sluice_store::Integration,
    ) -> Result<Credentials, String> {
        let (_, template) = self.token_source(c)?;
        let (Some(app_id), Some(key)) = (
            integration
                .oauth_client_id
                .as_deref()
                .filter(|s| !s.is_empty()),
            integration
                .oauth_client_secret
                .as_deref()
                .filter(|s| !s.is_empty()),
        ) else {
            return Err(format!(
                "integration `{}` has no GitHub App (`credentials: {{type: APP, app_id, app_link, private_key}}`)",
                integration.unique_key
            ));
        };
        if crate::github_app::installation_id(&c.connection_config).is_none() {
            return Err(
                "the connection names no installation: `connection_config.installation_id` must be the installation's id (digits)"
                    .into(),
            );
        }
        let pem = crate::github_app::private_key_pem(key)?;
        let jwt = {
            let app_id = app_id.to_string();
            crate::jwt::off_workers(move || {
                crate::github_app::app_jwt(&app_id, &pem, Utc::now().timestamp())
            })
            .await?
        };
        let (http, url) = self.token_target(template, c)?;
        let request = http
            .post(&url)
            .header("user-agent", "Nango")
            .header("accept", "application/vnd.github.v3+json")
            .bearer_auth(&jwt);
        let raw = read_token_answer(request, [jwt.as_str()]).await?;
        crate::github_app::credentials(raw)
    }

    /// One step of the OAuth 1.0a flow (a request token, or the access
    /// token for one the user granted): `params` sent as a form to `url`
    /// (the provider's, from the catalogue) by `method`, signed
    /// (`signature_method`) for `consumer` and `token`; the form the
    /// provider answers.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn oauth1_step(
        &self,
        url: &str,
        method: &str,
        consumer: (&str, &str),
        token: (&str, &str),
        signature_method: &str,
        params: &[(String, String)],
    ) -> Result<Vec<(String, String)>, String> {
        let mut url = url::Url::parse(url).map_err(|e| format!("`{url}`: {e}"))?;
        if let Some(to) = &self.redirect {
            url.set_scheme(to.scheme())
                .and_then(|()| url.set_host(to.host_str()).map_err(|_| ()))
                .and_then(|()| url.set_port(to.port_or_known_default()))
                .map_err(|()| format!("`{url}` cannot be sent to the mock upstream {to}"))?;
        }
        let method = if method.eq_ignore_ascii_case("GET") {
            "GET"
        } else {
            "POST"
        };
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let header = sluice_runtime::proxy::oauth1_authorization(&sluice_runtime::proxy::OAuth1 {
            method,
            url: &url,
            consumer,
            token,
            signature_method,
            realm: None,
            nonce: &nonce,
            timestamp: Utc::now().timestamp().max(0) as u64,
            params,
        })
        .ok_or_else(|| {
            format!("OAuth1 signatures `{signature_method}` are not made by sluice (HMAC-SHA1, HMAC-SHA256 and PLAINTEXT are)")
        })?;
        // The `oauth_` parameters go in the header alone (RFC 5849 §3.5:
        // in one place only), the others in the form or the query.
        let others: Vec<&(String, String)> = params
            .iter()
            .filter(|(k, _)| !k.starts_with("oauth_"))
            .collect();
        let form = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(others.iter().copied())
            .finish();
        let request = if method == "GET" {
            let mut with_query = url.clone();
            if !others.is_empty() {
                with_query
                    .query_pairs_mut()
                    .extend_pairs(others.iter().copied());
            }
            self.http.get(with_query.as_str())
        } else {
            self.http
                .post(url.as_str())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
        };
        let request = request
            .header("user-agent", "Nango")
            .header("authorization", header);
        let body = token_answer_text(request, [consumer.1, token.1]).await?;
        Ok(url::form_urlencoded::parse(body.trim().as_bytes())
            .into_owned()
            .collect())
    }

    /// An OAuth client registered with an MCP server (RFC 7591, the
    /// provider's `registration_url`): a public client
    /// (`token_endpoint_auth_method: none`) named `name` whose redirect is
    /// `callback`, with the `grant_types` and `response_types` of the
    /// provider's `registration_params`. Its id, and its secret if the
    /// server gave one.
    pub(crate) async fn register_client(
        &self,
        definition: &Map<String, Value>,
        callback: &str,
        name: &str,
    ) -> Result<(String, Option<String>), String> {
        let url = definition
            .get("registration_url")
            .and_then(Value::as_str)
            .ok_or("the provider has no `registration_url`")?;
        let mut url =
            url::Url::parse(url).map_err(|e| format!("`registration_url` `{url}`: {e}"))?;
        if let Some(to) = &self.redirect {
            url.set_scheme(to.scheme())
                .and_then(|()| url.set_host(to.host_str()).map_err(|_| ()))
                .and_then(|()| url.set_port(to.port_or_known_default()))
                .map_err(|()| {
                    format!("`registration_url` cannot be sent to the mock upstream {to}")
                })?;
        }
        let mut body = Map::new();
        body.insert("redirect_uris".into(), serde_json::json!([callback]));
        body.insert("token_endpoint_auth_method".into(), "none".into());
        body.insert("client_name".into(), name.into());
        for (k, v) in definition
            .get("registration_params")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if k == "response_types" || k == "grant_types" {
                body.insert(k.clone(), v.clone());
            }
        }
        let client = Self::register_at(self.http.clone(), url.as_str(), body).await?;
        Ok((client.client_id, client.client_secret))
    }

    /// Registers a client at `url` (RFC 7591) with `body`: its id, and its
    /// secret if the server gave one.
    pub(crate) async fn register_at(
        http: reqwest::Client,
        url: &str,
        body: Map<String, Value>,
    ) -> Result<Registered, String> {
        let request = http
            .post(url)
            .header("user-agent", "Nango")
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(Value::Object(body).to_string());
        let answer = read_token_answer(request, []).await?;
        let id = answer
            .get("client_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty() && id.len() <= 255)
            .ok_or("its answer has no `client_id` (of at most 255 characters)")?;
        let secret = answer
            .get("client_secret")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        Ok(Registered {
            client_id: id.to_string(),
            client_secret: secret.map(str::to_string),
            auth_method: answer
                .get("token_endpoint_auth_method")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// Asks the provider's token URL for a new access token (or makes a
    /// JWT or SIGNATURE connection's, which needs no request).
    async fn refresh(&self, c: &Connection) -> Result<Credentials, String> {
        if matches!(c.credentials.kind(), "JWT" | "SIGNATURE") {
            let provider = self
                .providers
                .get(&c.provider)
                .ok_or_else(|| format!("provider `{}` is not in the catalogue", c.provider))?;
            // Signed off the async workers (an RSA key's signature).
            let (definition, c) = (provider.definition.clone(), c.clone());
            return crate::jwt::off_workers(move || crate::jwt::renewed(&definition, &c)).await;
        }
        let (provider, template) = self.token_source(c)?;
        // Refused before anything is read or sent (a host the
        // connection chose that is not public).
        self.token_target(template, c)?;
        let integration = self
            .store
            .integration(&c.provider_config_key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("integration `{}` does not exist", c.provider_config_key))?;
        if c.credentials.kind() == "OAUTH2_CC" {
            return self.renew_client_credentials(c, &provider.definition).await;
        }
        if c.credentials.kind() == "TWO_STEP" {
            return self.two_step_token(c).await;
        }
        if c.credentials.kind() == "APP" {
            return self.app_token(c, &integration).await;
        }
        if c.credentials.kind() == "BILL" {
            return self.bill_session(c).await;
        }
        if let Some(client) = ProviderClient::of(&c.provider) {
            return self.client_refresh(c, client, &integration).await;
        }
        let refresh_token = c
            .credentials
            .field("refresh_token")
            .ok_or("the connection has no refresh token")?;
        let mut form = vec![
            ("grant_type".to_string(), "refresh_token".to_string()),
            ("refresh_token".to_string(), refresh_token.to_string()),
        ];
        // The provider's `refresh_params`, else its `token_params` (as the
        // original's refresh), without replacing the grant itself.
        let definition = &provider.definition;
        let extra = definition
            .get("refresh_params")
            .or_else(|| definition.get("token_params"));
        form.extend(provider_params(extra, c, &["grant_type", "refresh_token"]));
        // A generic MCP server's token names its resource (RFC 8707).
        if provider.auth_mode.as_deref() == Some("MCP_OAUTH2_GENERIC")
            && let Some(resource) = c
                .connection_config
                .get("oauth_resource_url")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
        {
            form.push(("resource".into(), resource.to_string()));
        }
        // An endpoint may echo what it was sent: the refresh token and the
        // client secret are not shown (nor stored in the errors and the
        // logs this message goes to).
        let secrets = c.credentials.secrets();
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let raw = self
            .token_grant(c, form, client_of(c, &integration), &secrets)
            .await?;
        refreshed(c, raw)
    }

    /// A refresh of a provider the original renews its own way (see
    /// [`crate::provider_clients`]), with the client the generic refresh
    /// would use.
    async fn client_refresh(
        &self,
        c: &Connection,
        client: ProviderClient,
        integration: &sluice_store::Integration,
    ) -> Result<Credentials, String> {
        let (client_id, client_secret) = client_of(c, integration);
        let asked =
            client.refresh_request(&c.provider, &c.credentials, (client_id, client_secret))?;
        // What the provider may echo: the connection's tokens and the
        // client secret.
        let secrets = c.credentials.secrets();
        let secrets: Vec<&str> = secrets
            .iter()
            .map(String::as_str)
            .chain(Some(client_secret).filter(|s| !s.is_empty()))
            .collect();
        let raw = self
            .client_grant(c, asked, &secrets, |answer| {
                client.refresh_tokens(answer, &c.credentials)
            })
            .await?;
        refreshed(c, raw)
    }
}

/// Connection `c`'s credentials after a refresh that answered `raw`: its
/// access token, its refresh token if it gave one (else the connection's
/// stays), its expiry (none if it gave none) and `raw` itself.
fn refreshed(c: &Connection, raw: Map<String, Value>) -> Result<Credentials, String> {
    let token = raw
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or("the token endpoint's answer has no access_token")?;
    let mut creds = c.credentials.as_map().clone();
    creds.insert("access_token".into(), Value::String(token.to_string()));
    if let Some(r) = raw.get("refresh_token").and_then(Value::as_str) {
        creds.insert("refresh_token".into(), Value::String(r.to_string()));
    }
    match token_expiry(&raw) {
        Some(at) => {
            creds.insert(
                "expires_at".into(),
                Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            );
        }
        None => {
            creds.remove("expires_at");
        }
    }
    creds.insert("raw".into(), Value::Object(raw));
    serde_json::from_value(Value::Object(creds)).map_err(|e| e.to_string())
}

#[async_trait::async_trait]
impl ConnectionStore for Connections {
    async fn get(&self, pck: &str, cid: &str) -> Result<Connection, ConnectionError> {
        self.fresh(pck, cid, Force::No).await
    }

    async fn set_metadata(
        &self,
        pck: &str,
        cid: &str,
        metadata: Value,
    ) -> Result<(), ConnectionError> {
        self.store.set_metadata(pck, cid, metadata).await
    }

    async fn update_metadata(
        &self,
        pck: &str,
        cid: &str,
        patch: Map<String, Value>,
        max_bytes: usize,
    ) -> Result<(), ConnectionError> {
        self.store.update_metadata(pck, cid, patch, max_bytes).await
    }

    async fn credentials_refused(&self, pck: &str, cid: &str) -> Result<(), ConnectionError> {
        self.fresh(pck, cid, Force::Refused).await.map(|_| ())
    }

    async fn integration(
        &self,
        pck: &str,
        _cid: &str,
        with_credentials: bool,
    ) -> Result<Value, ConnectionError> {
        match self.store.integration(pck).await.map_err(backend)? {
            Some(i) => {
                let auth_mode = self
                    .providers
                    .get(&i.provider)
                    .and_then(|p| p.auth_mode.clone());
                Ok(crate::api::integrations::view(
                    &self.providers,
                    &i,
                    with_credentials.then_some(auth_mode.as_deref()),
                ))
            }
            None => Err(ConnectionError::Refused {
                code: "unknown_provider_config".into(),
                message: format!("unknown integration `{pck}`"),
            }),
        }
    }
}

/// An environment's connections as one execution's scripts see them: the
/// environment's [`Connections`], with `getConnection` answering the
/// connection's `errors` as `GET /connection/:id` does (those of the syncs
/// of `catalog`, the deployment the execution runs).
pub struct ScriptConnections {
    pub inner: Arc<Connections>,
    pub catalog: Option<Arc<sluice_project::catalog::Catalog>>,
}

#[async_trait::async_trait]
impl ConnectionStore for ScriptConnections {
    async fn get(&self, pck: &str, cid: &str) -> Result<Connection, ConnectionError> {
        self.inner.get(pck, cid).await
    }

    async fn set_metadata(
        &self,
        pck: &str,
        cid: &str,
        metadata: Value,
    ) -> Result<(), ConnectionError> {
        self.inner.set_metadata(pck, cid, metadata).await
    }

    async fn update_metadata(
        &self,
        pck: &str,
        cid: &str,
        patch: Map<String, Value>,
        max_bytes: usize,
    ) -> Result<(), ConnectionError> {
        self.inner.update_metadata(pck, cid, patch, max_bytes).await
    }

    async fn credentials_refused(&self, pck: &str, cid: &str) -> Result<(), ConnectionError> {
        self.inner.credentials_refused(pck, cid).await
    }

    async fn script_view(&self, pck: &str, cid: &str) -> Result<Value, ConnectionError> {
        self.script_view_with(pck, cid, false, false).await
    }

    /// As `GET /connection/:id` with `force_refresh` and `refresh_token`.
    async fn script_view_with(
        &self,
        pck: &str,
        cid: &str,
        force_refresh: bool,
        refresh_token: bool,
    ) -> Result<Value, ConnectionError> {
        let force = if force_refresh {
            Force::Asked
        } else {
            Force::No
        };
        let mut view = self
            .inner
            .fresh(pck, cid, force)
            .await?
            .to_script_json_with(refresh_token);
        view["errors"] = crate::api::connections::errors_of(
            &self.inner.store,
            self.catalog.as_deref(),
            pck,
            cid,
        )
        .await;
        Ok(view)
    }

    async fn integration(
        &self,
        pck: &str,
        cid: &str,
        with_credentials: bool,
    ) -> Result<Value, ConnectionError> {
        self.inner.integration(pck, cid, with_credentials).await
    }

    async fn metadata(&self, pck: &str, cid: &str) -> Result<Value, ConnectionError> {
        self.inner.metadata(pck, cid).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use serde_json::json;
    use sluice_runtime::connection::Connection;
    use sluice_runtime::providers::ProviderCatalog;
    use sluice_store::{MasterKey, MemoryBackend, Store};

    use super::{Connections, Force};
    use crate::test_support::Full;

    /// A provider that rotates refresh tokens has revoked the stored one
    /// once it answers: a refresh whose credentials the store refuses
    /// (on every try) still gives the caller the new token, and the next
    /// refresh stores them without asking the provider again.
    #[tokio::test]
    async fn a_refresh_the_store_refused_is_stored_by_the_next_one() {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        // Each refresh token works once: the answer's replaces it.
        let token = axum::Router::new().route(
            "/token",
            axum::routing::post(move |body: String| {
                let n = counted.load(Ordering::SeqCst);
                let ok = body.contains(&format!("refresh_token=rt-{n}"));
                if ok {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                async move {
                    if ok {
                        let n = n + 1;
                        let tokens = json!({"access_token": format!("at-{n}"),
                            "refresh_token": format!("rt-{n}"), "expires_in": 3600});
                        (axum::http::StatusCode::OK, axum::Json(tokens))
                    } else {
                        let refused = json!({"error": "invalid_grant"});
                        (axum::http::StatusCode::BAD_REQUEST, axum::Json(refused))
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, token).await });

        let fail = Arc::new(AtomicBool::new(false));
        let backend = Arc::new(Full {
            inner: MemoryBackend::new(),
            full: fail.clone(),
        });
        let (store, _) = Store::open(backend, MasterKey::generate(), &[("dev".into(), None)])
            .await
            .unwrap();
        let env = store.environment("dev").unwrap();
        let providers = ProviderCatalog::from_yaml(
            &format!(
                "rotating:\n  auth_mode: OAUTH2\n  authorization_url: http://{addr}/authorize\n  token_url: http://{addr}/token\n"
            ),
            "test",
        )
        .unwrap();
        env.put_integration(
            &serde_json::from_value(json!({"unique_key": "r", "provider": "rotating",
                "oauth_client_id": "cid", "oauth_client_secret": "csecret",
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}))
            .unwrap(),
        )
        .await
        .unwrap();
        let expired: Connection = serde_json::from_value(json!({
            "connection_id": "c1", "provider_config_key": "r", "provider": "rotating",
            "credentials": {"type": "OAUTH2", "access_token": "at-0", "refresh_token": "rt-0",
                "expires_at": "2020-01-01T00:00:00Z"}}))
        .unwrap();
        env.put_connection(&expired).await.unwrap();
        let connections = Connections::new(
            env.clone(),
            Arc::new(providers),
            reqwest::Client::new(),
            Vec::new(),
        );

        fail.store(true, Ordering::SeqCst);
        let c = connections.fresh("r", "c1", Force::No).await.unwrap();
        assert_eq!(
            c.credentials.token(),
            Some("at-1"),
            "the caller gets the new token"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let stored = env.connection("r", "c1").await.unwrap().unwrap();
        assert_eq!(
            stored.credentials, expired.credentials,
            "nothing was stored"
        );

        // Still refused: the next caller gets the new token too, and the
        // provider is not asked again.
        let c = connections.fresh("r", "c1", Force::No).await.unwrap();
        assert_eq!(c.credentials.token(), Some("at-1"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A refresh asked for meanwhile sends the refresh token the
        // provider gave last (the stored one no longer works).
        let c = connections.fresh("r", "c1", Force::Asked).await.unwrap();
        assert_eq!(c.credentials.token(), Some("at-2"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        fail.store(false, Ordering::SeqCst);
        let c = connections.fresh("r", "c1", Force::No).await.unwrap();
        assert_eq!(c.credentials.token(), Some("at-2"));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the provider was not asked again"
        );
        let stored = env.connection("r", "c1").await.unwrap().unwrap();
        assert_eq!(stored.credentials.token(), Some("at-2"));
        assert_eq!(
            serde_json::to_value(&stored.credentials).unwrap()["refresh_token"],
            "rt-2",
            "the rotated refresh token is kept"
        );
    }

    /// A refresh begun before the token lapsed that fails leaves the token
    /// in use (a provider down for a moment does not break a valid token);
    /// an expired one, or a refresh asked for, fails. A provider's
    /// `token_expiration_buffer` is its margin (Exact Online refuses to
    /// refresh a token with more than 30 s left).
    #[tokio::test]
    async fn a_failed_early_refresh_keeps_the_valid_token_and_a_providers_buffer_is_its_margin() {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let token = axum::Router::new().route(
            "/token",
            axum::routing::post(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    let refused = json!({"error": "temporarily_unavailable"});
                    (axum::http::StatusCode::BAD_REQUEST, axum::Json(refused))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, token).await });

        let (store, _) = Store::open(
            Arc::new(MemoryBackend::new()),
            MasterKey::generate(),
            &[("dev".into(), None)],
        )
        .await
        .unwrap();
        let env = store.environment("dev").unwrap();
        let providers = ProviderCatalog::from_yaml(
            &format!(
                "plain:\n  auth_mode: OAUTH2\n  authorization_url: http://{addr}/authorize\n  token_url: http://{addr}/token\n\
                 buffered:\n  auth_mode: OAUTH2\n  authorization_url: http://{addr}/authorize\n  token_url: http://{addr}/token\n  token_expiration_buffer: 30\n"
            ),
            "test",
        )
        .unwrap();
        for (key, provider) in [("p", "plain"), ("b", "buffered")] {
            env.put_integration(
                &serde_json::from_value(json!({"unique_key": key, "provider": provider,
                    "oauth_client_id": "cid", "oauth_client_secret": "csecret",
                    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}))
                .unwrap(),
            )
            .await
            .unwrap();
        }
        let in_four_minutes = (chrono::Utc::now() + chrono::TimeDelta::minutes(4))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for (key, provider, cid, expires) in [
            ("p", "plain", "soon", in_four_minutes.as_str()),
            ("p", "plain", "gone", "2020-01-01T00:00:00Z"),
            ("b", "buffered", "soon", in_four_minutes.as_str()),
        ] {
            let c: Connection = serde_json::from_value(json!({
                "connection_id": cid, "provider_config_key": key, "provider": provider,
                "credentials": {"type": "OAUTH2", "access_token": format!("{key}-{cid}"),
                    "refresh_token": "rt", "expires_at": expires}}))
            .unwrap();
            env.put_connection(&c).await.unwrap();
        }
        let connections = Connections::new(
            env.clone(),
            Arc::new(providers),
            reqwest::Client::new(),
            Vec::new(),
        );

        // Four minutes left, inside the five-minute margin: the refresh
        // is tried, fails, and the token still serves (twice: the second
        // within the cooldown does not ask again).
        for _ in 0..2 {
            let c = connections.fresh("p", "soon", Force::No).await.unwrap();
            assert_eq!(c.credentials.token(), Some("p-soon"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let error: Option<serde_json::Value> =
            env.doc(super::CONNECTION_ERRORS, "p/soon").await.unwrap();
        assert!(
            error.is_some_and(|e| e["type"] == "auth"),
            "the failed refresh is the connection's error"
        );
        // Asked for, it fails as the original's manual refresh does.
        let asked = connections.fresh("p", "soon", Force::Asked).await;
        assert!(asked.is_err(), "{asked:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Expired, it fails.
        let gone = connections.fresh("p", "gone", Force::No).await;
        assert!(
            gone.as_ref()
                .is_err_and(|e| e.to_string().contains("could not be refreshed")),
            "{gone:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // The provider's 30 s buffer: four minutes left is not expiring.
        let c = connections.fresh("b", "soon", Force::No).await.unwrap();
        assert_eq!(c.credentials.token(), Some("b-soon"));
        assert_eq!(calls.load(Ordering::SeqCst), 3, "no refresh was tried");
    }

    /// A connection whose token URL host a browser chose (a connect
    /// session's TWO_STEP or client-credentials connection) keeps that
    /// mark in the store: every later token request goes to a public
    /// address only, whatever `allowed_hosts` opens to scripts; the app's
    /// own import of the same values may use `allowed_hosts`. The mark is
    /// never shown.
    #[tokio::test]
    async fn a_host_a_browser_chose_stays_public_only_for_later_refreshes() {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let token = axum::Router::new().route(
            "/token",
            axum::routing::post(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    axum::Json(json!({"access_token": "fresh", "refresh_token": "rt",
                        "expires_in": 3600}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, token).await });

        let (store, _) = Store::open(
            Arc::new(MemoryBackend::new()),
            MasterKey::generate(),
            &[("dev".into(), None)],
        )
        .await
        .unwrap();
        let env = store.environment("dev").unwrap();
        let providers = ProviderCatalog::from_yaml(
            "hosted:\n  auth_mode: OAUTH2\n  authorization_url: https://auth.example.com/authorize\n  token_url: http://${connectionConfig.host}/token\n",
            "test",
        )
        .unwrap();
        env.put_integration(
            &serde_json::from_value(json!({"unique_key": "h", "provider": "hosted",
                "oauth_client_id": "cid", "oauth_client_secret": "csecret",
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}))
            .unwrap(),
        )
        .await
        .unwrap();
        let mut c: Connection = serde_json::from_value(json!({
            "connection_id": "c1", "provider_config_key": "h", "provider": "hosted",
            "connection_config": {"host": addr.to_string()},
            "credentials": {"type": "OAUTH2", "access_token": "old", "refresh_token": "rt",
                "expires_at": "2020-01-01T00:00:00Z"}}))
        .unwrap();
        c.token_host_from_browser = true;
        env.put_connection(&c).await.unwrap();
        let connections = Connections::new(
            env.clone(),
            Arc::new(providers),
            reqwest::Client::new(),
            vec![addr.to_string()],
        );

        let refused = connections.fresh("h", "c1", Force::Asked).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("not a public address")),
            "{refused:?}"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "the loopback host was asked"
        );
        let stored = env.connection("h", "c1").await.unwrap().unwrap();
        assert!(stored.token_host_from_browser, "the mark is stored");
        let shown = serde_json::to_value(&stored).unwrap();
        assert!(shown.get("token_host_from_browser").is_none(), "{shown}");

        // The app's values: allowed_hosts holds for them.
        c.token_host_from_browser = false;
        env.put_connection(&c).await.unwrap();
        let fresh = connections.fresh("h", "c1", Force::Asked).await.unwrap();
        assert_eq!(fresh.credentials.token(), Some("fresh"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let stored = env.connection("h", "c1").await.unwrap().unwrap();
        assert!(!stored.token_host_from_browser);
    }
}
