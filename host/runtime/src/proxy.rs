//! `nango.proxy`: the original's request construction and retry policy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use serde_json::Value;
use url::Url;

use crate::bindings::http::{Body, HttpError, Method, Query, Request};
use crate::bindings::types::{NangoError, Response};
use crate::connection::Connection;
use crate::exec::{LogEntry, LogLevel, LogSource, Services};
use crate::host::HostState;
use crate::providers::Provider;
use crate::template::{ExpandedUrl, UrlTemplateError};

/// The user agent of every upstream request (the original overwrites it too).
pub const USER_AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));

/// Redirects followed within one origin by the client, and to other
/// origins by [`follow_redirects`] (each of those hops may take this many
/// within its own origin): axios's limit.
const MAX_REDIRECTS: usize = 5;

/// The HTTP client every execution shares (keep-alive, as the original's
/// agent): built once per process, since building one loads the TLS roots
/// (milliseconds), and cheap to clone.
pub fn default_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(build_client).clone()
}

/// The client for requests to a host a connection's configuration chose
/// (`https://${connectionConfig.subdomain}.zendesk.com`): its host names
/// resolve to public addresses only, so a name pointing at the server's own
/// network (`127.0.0.1`, `169.254.169.254`, …) is refused like an address
/// written as such. The check is on the addresses it then connects to.
pub fn public_only_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| build_client_with(Some(Resolver::system(true))))
        .clone()
}

/// How a client resolves a host name (`host` → its addresses): the
/// system's resolver, or a stand-in.
pub type Lookup = Arc<
    dyn Fn(
            String,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>,
        > + Send
        + Sync,
>;

/// A plain client and a public-only one that resolve through `lookup`
/// (tests give names that the system does not know).
pub fn clients_with_lookup(lookup: Lookup) -> (reqwest::Client, reqwest::Client) {
    (
        build_client_with(Some(Arc::new(Resolver {
            lookup: lookup.clone(),
            public_only: false,
        }))),
        build_client_with(Some(Arc::new(Resolver {
            lookup,
            public_only: true,
        }))),
    )
}

/// A host name that resolves to no public address, refused by a
/// public-only client.
#[derive(Debug)]
pub struct NotPublicAddress(pub String);

impl std::fmt::Display for NotPublicAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host `{}` resolves to no public address", self.0)
    }
}

impl std::error::Error for NotPublicAddress {}

struct Resolver {
    lookup: Lookup,
    public_only: bool,
}

impl Resolver {
    fn system(public_only: bool) -> Arc<Self> {
        Arc::new(Resolver {
            lookup: Arc::new(|host: String| {
                Box::pin(async move {
                    tokio::net::lookup_host((host.as_str(), 0))
                        .await
                        .map(|addrs| addrs.collect())
                })
            }),
            public_only,
        })
    }
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let lookup = self.lookup.clone();
        let public_only = self.public_only;
        Box::pin(async move {
            let mut addrs = lookup(host.clone()).await?;
            if public_only {
                addrs.retain(|a| public_ip(a.ip()));
                if addrs.is_empty() {
                    return Err(Box::new(NotPublicAddress(host)) as _);
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn build_client() -> reqwest::Client {
    build_client_with(None)
}

fn build_client_with(resolver: Option<Arc<Resolver>>) -> reqwest::Client {
    let builder = reqwest::Client::builder();
    let builder = match resolver {
        // Directly, never through `HTTP(S)_PROXY`: a proxy would resolve
        // the name itself, past the resolver's check.
        Some(r) => builder.dns_resolver(r).no_proxy(),
        None => builder,
    };
    builder
        .user_agent(USER_AGENT)
        .pool_idle_timeout(Duration::from_secs(30))
        // A redirect is followed here only to the same origin (scheme,
        // host and port): the request's credentials go with it, and
        // another port of the provider's host is another service. One to
        // another origin comes back as the 3xx it is, and
        // [`follow_redirects`] follows it past the egress check, without
        // the credentials. No `Referer` either: it would carry a
        // query-string credential to wherever it points.
        .referer(false)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let same_origin = attempt.previous().last().is_some_and(|prev| {
                let next = attempt.url();
                let same = prev.scheme() == next.scheme()
                    && prev.port_or_known_default() == next.port_or_known_default();
                // http to https on the default ports: the same site, secured.
                let upgrade = prev.scheme() == "http"
                    && prev.port().is_none()
                    && next.scheme() == "https"
                    && next.port().is_none();
                prev.host_str() == next.host_str() && (same || upgrade)
            });
            if attempt.previous().len() > MAX_REDIRECTS || !same_origin {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .build()
        .unwrap_or_default()
}

pub(crate) fn nango_error(code: &str, message: impl Into<String>) -> NangoError {
    NangoError {
        code: code.to_string(),
        message: message.into(),
        payload: None,
    }
}

fn failed(code: &str, message: impl Into<String>) -> HttpError {
    HttpError::Failed(nango_error(code, message))
}

/// The request after URL building and credential injection.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Body>,
    /// Its host is one a connection chose: resolved to public addresses
    /// only ([`public_only_client`]).
    pub public_only: bool,
    /// `uncontrolledFetch`'s request: fetch's defaults (`Accept: */*`, no
    /// content type the script did not give), not axios's.
    pub fetch: bool,
    /// The query parameters the host added from the connection (an
    /// API key's), left out of a redirect's URL to another origin.
    pub credential_query: Vec<String>,
}

pub(crate) fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
    }
}

/// Joins the base URL and the endpoint the way the original does.
pub(crate) fn join_url(base: &str, endpoint: &str) -> String {
    let base = base.trim_end_matches('/');
    let endpoint = endpoint.strip_prefix(base).unwrap_or(endpoint);
    let endpoint = endpoint.trim_start_matches('/');
    if endpoint.is_empty() {
        base.to_string()
    } else {
        format!("{base}/{endpoint}")
    }
}

/// `searchParams.set` for each pair: a later value replaces an earlier one
/// (the first pair of that name takes the value, the others go). Linear in
/// the pairs: each is looked up by name, and each pair goes at most once.
pub(crate) fn set_query(url: &mut Url, pairs: &[(String, String)]) {
    if pairs.is_empty() {
        return;
    }
    let mut out: Vec<Option<(String, String)>> = url
        .query_pairs()
        .map(|(k, v)| Some((k.into_owned(), v.into_owned())))
        .collect();
    // Where each name is, first place first.
    let mut places: std::collections::HashMap<String, Vec<usize>> =
        std::collections::HashMap::new();
    for (i, pair) in out.iter().enumerate() {
        if let Some((k, _)) = pair {
            places.entry(k.clone()).or_default().push(i);
        }
    }
    for (k, v) in pairs {
        match places.get_mut(k) {
            Some(at) => {
                for &later in &at[1..] {
                    out[later] = None;
                }
                at.truncate(1);
                if let Some(pair) = &mut out[at[0]] {
                    pair.1 = v.clone();
                }
            }
            None => {
                places.insert(k.clone(), vec![out.len()]);
                out.push(Some((k.clone(), v.clone())));
            }
        }
    }
    url.query_pairs_mut()
        .clear()
        .extend_pairs(out.into_iter().flatten());
}

/// The query pairs of the object form of `params`: each value as
/// JavaScript's `String()` prints it, `null` values left out.
pub(crate) fn query_pairs(json: &[u8]) -> Result<Vec<(String, String)>, HttpError> {
    match serde_json::from_slice(json) {
        Ok(Value::Object(map)) => Ok(map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), crate::js::to_string(v)))
            .collect()),
        Ok(_) | Err(_) => Err(failed(
            "invalid_request",
            "params must be a JSON object of strings, numbers, booleans or arrays",
        )),
    }
}

/// The provider's base URL for this connection, templates expanded.
pub(crate) fn provider_base_url(
    provider: &Provider,
    connection: &Connection,
) -> Result<Option<ExpandedUrl>, NangoError> {
    let Some(template) = &provider.proxy.base_url else {
        return Ok(None);
    };
    crate::template::expand_url(template, &|k| connection.lookup(k))
        .map(Some)
        .map_err(|e| match e {
            UrlTemplateError::Missing => nango_error(
                "invalid_request",
                format!(
                    "the base URL of provider `{}` ({template}) needs values this connection does not have",
                    provider.name
                ),
            ),
            e @ UrlTemplateError::HostValue { .. } => nango_error(
                "invalid_request",
                format!("the base URL of provider `{}` ({template}): {e}", provider.name),
            ),
        })
}

/// The host a provider's base URL lets a connection's scripts call
/// without the allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProviderHost {
    /// No base URL (or one this connection cannot build).
    None,
    /// `host:port` of the base URL.
    Own(String),
    /// `host:port` of a base URL whose host a connection's value chose, a
    /// name or a public address: called, with names resolved to public
    /// addresses only.
    Chosen(String),
    /// `host:port` of a base URL whose host a connection's value chose and
    /// which is not a public address: the connection cannot make the
    /// server call its own network (only the allowlist can).
    NotPublic(String),
}

impl ProviderHost {
    pub(crate) fn of(provider: &Provider, connection: &Connection) -> Self {
        let Some(base) = provider_base_url(provider, connection).ok().flatten() else {
            return ProviderHost::None;
        };
        let Some(url) = Url::parse(&base.url).ok() else {
            return ProviderHost::None;
        };
        let Some(host) = host_port(&url) else {
            return ProviderHost::None;
        };
        if !base.host_from_connection {
            ProviderHost::Own(host)
        } else if public_host(&url) {
            ProviderHost::Chosen(host)
        } else {
            ProviderHost::NotPublic(host)
        }
    }

    /// Whether a request to `url` must resolve to public addresses only:
    /// it goes to the host a connection chose, and the allowlist does not
    /// name it.
    pub(crate) fn public_only(&self, url: &Url, allowed: &[String]) -> bool {
        let chosen =
            matches!(self, ProviderHost::Chosen(own) if host_port(url).as_ref() == Some(own));
        // Another host of the provider's domain: its name is the
        // provider's to point, but never at this server's own network.
        let sibling = matches!(self, ProviderHost::Own(own) if host_port(url).as_ref() != Some(own))
            && provider_sibling(url, self);
        (chosen || sibling) && !in_allowlist(url, allowed)
    }
}

/// Whether `url`'s host is a public address: a name of at least two labels
/// outside the private suffixes (`localhost`, `.internal`, `.local`, …),
/// or an IP address outside the loopback, private, link-local, shared,
/// multicast and reserved ranges (IPv4 written in any form the URL
/// standard accepts — `2130706433`, `0x7f.1` — is parsed to its address
/// first).
pub fn public_host(url: &Url) -> bool {
    match url.host() {
        None => false,
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            // A single label (`redis`, `instance-data`) or a private
            // suffix names a host of the local network, not the internet.
            name.contains('.')
                && !INTERNAL_SUFFIXES
                    .iter()
                    .any(|s| name.ends_with(s) || name == s[1..])
        }
        Some(url::Host::Ipv4(ip)) => public_v4(ip),
        Some(url::Host::Ipv6(ip)) => public_v6(ip),
    }
}

/// Name suffixes of private networks (`metadata.google.internal`,
/// `printer.local`, Kubernetes services…).
const INTERNAL_SUFFIXES: [&str; 9] = [
    ".localhost",
    ".local",
    ".internal",
    ".localdomain",
    ".lan",
    ".home.arpa",
    ".intranet",
    ".svc",
    ".cluster.local",
];

/// Whether `ip` is a public address ([`public_host`]'s ranges).
pub fn public_ip(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(ip) => public_v4(ip),
        std::net::IpAddr::V6(ip) => public_v6(ip),
    }
}

fn public_v4(ip: std::net::Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19)))
}

fn public_v6(ip: std::net::Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address too.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0) {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return public_v4(std::net::Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        || (s[0..6].iter().all(|x| *x == 0)))
}

/// Builds the request: URL, credentials, provider headers, script headers.
pub(crate) fn prepare(
    req: &Request,
    provider: &Provider,
    connection: &Connection,
) -> Result<Prepared, HttpError> {
    let base = match &req.base_url_override {
        Some(b) => b.clone(),
        None => provider_base_url(provider, connection)
            .map_err(HttpError::Failed)?
            .map(|b| b.url)
            .ok_or_else(|| {
                failed(
                    "invalid_request",
                    format!(
                        "provider `{}` has no proxy.base_url: pass baseUrlOverride",
                        provider.name
                    ),
                )
            })?,
    };
    if req.endpoint.is_empty() && req.base_url_override.is_none() {
        return Err(failed("invalid_request", "endpoint is required"));
    }
    let joined = join_url(&base, &req.endpoint);
    check_url_length(&joined).map_err(HttpError::Failed)?;
    let mut url = Url::parse(&joined)
        .map_err(|e| failed("invalid_request", format!("invalid URL `{joined}`: {e}")))?;
    match &req.params {
        None => {}
        Some(Query::Object(json)) => {
            // Every accepted URL's query is at most MAX_URL_BYTES; its
            // params as JSON (quotes, colons, commas) at most about three
            // times that. Larger ones are refused before they are parsed.
            if json.len() > 4 * MAX_URL_BYTES {
                return Err(failed(
                    "invalid_request",
                    format!(
                        "params of {} bytes cannot fit in a URL of at most {MAX_URL_BYTES} bytes",
                        json.len()
                    ),
                ));
            }
            set_query(&mut url, &query_pairs(json)?);
            check_url_length(url.as_str()).map_err(HttpError::Failed)?;
        }
        Some(Query::Text(text)) => {
            if url.query().is_some() {
                return Err(failed(
                    "invalid_query_params",
                    "Can not set query params in endpoint and in params",
                ));
            }
            // Refused before it is encoded into the URL (which may triple
            // it), as the object form is.
            if text.len() > MAX_URL_BYTES {
                return Err(failed(
                    "invalid_request",
                    format!(
                        "params of {} bytes cannot fit in a URL of at most {MAX_URL_BYTES} bytes",
                        text.len()
                    ),
                ));
            }
            url.set_query(Some(text.trim_start_matches('?')));
            check_url_length(url.as_str()).map_err(HttpError::Failed)?;
        }
    }

    let creds = &connection.credentials;
    let mut headers: Vec<(String, String)> = Vec::new();
    let bearer = |t: Option<&str>| t.map(|t| ("authorization".to_string(), format!("Bearer {t}")));
    let auth = match creds.kind() {
        "OAUTH2" | "APP" | "APP_STORE" => bearer(creds.field("access_token")),
        // A TWO_STEP provider whose own headers carry the token
        // (`${accessToken}`: Tableau's `x-tableau-auth`) or a session
        // cookie gets no `Authorization` besides, as in the original.
        "TWO_STEP"
            if provider.proxy.headers.iter().any(|(name, template)| {
                template.contains("${accessToken}")
                    || (name.eq_ignore_ascii_case("cookie")
                        && template.contains("${credentials._cookies}"))
            }) =>
        {
            None
        }
        "OAUTH2_CC" | "JWT" | "SIGNATURE" | "TWO_STEP" => bearer(creds.token()),
        "BASIC" => {
            let user = creds.field("username").unwrap_or_default();
            let pass = creds.field("password").unwrap_or_default();
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            Some(("authorization".to_string(), format!("Basic {encoded}")))
        }
        "TABLEAU" => creds
            .field("token")
            .map(|t| ("x-tableau-auth".to_string(), t.to_string())),
        "TBA" => {
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            tba_header(method_name(req.method), &url, connection, &nonce, now)
                .map(|h| ("authorization".to_string(), h))
        }
        // Signed as the provider's definition says (`signature_method`,
        // HMAC-SHA1 unless it names another), for the integration's app.
        "OAUTH1" => {
            let method = provider
                .definition
                .get("signature_method")
                .and_then(Value::as_str)
                .unwrap_or("HMAC-SHA1");
            if !matches!(method, "HMAC-SHA1" | "HMAC-SHA256" | "PLAINTEXT") {
                return Err(failed(
                    "unsupported_auth",
                    format!(
                        "OAuth1 signatures `{method}` are not made by sluice (HMAC-SHA1, HMAC-SHA256 and PLAINTEXT are)"
                    ),
                ));
            }
            let (Some(consumer), Some(token), Some(secret)) = (
                consumer(connection),
                creds.field("oauth_token"),
                creds.field("oauth_token_secret"),
            ) else {
                return Err(failed(
                    "unsupported_auth",
                    "OAuth1 requires the integration's oauth_client_id and oauth_client_secret and the connection's oauth_token and oauth_token_secret",
                ));
            };
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            oauth1_authorization(&OAuth1 {
                method: method_name(req.method),
                url: &url,
                consumer,
                token: (token, secret),
                signature_method: method,
                realm: None,
                nonce: &nonce,
                timestamp: now,
                params: &[],
            })
            .map(|h| ("authorization".to_string(), h))
        }
        _ => None,
    };
    headers.extend(auth);
    for (name, template) in &provider.proxy.headers {
        if let Some(value) = crate::template::expand(template, &|k| connection.lookup(k)) {
            put_header(&mut headers, name, value);
        }
    }
    let mut credential_query = Vec::new();
    if creds.kind() == "API_KEY"
        && let Some((name, _)) = provider.proxy.query.first()
        && let Some(key) = creds.field("apiKey")
    {
        set_query(&mut url, &[(name.clone(), key.to_string())]);
        credential_query.push(name.clone());
    }
    check_script_headers(&req.headers).map_err(HttpError::Failed)?;
    for (name, value) in &req.headers {
        // The Host header comes from the URL, which passed the egress
        // check; a script's own would reach another site on that address.
        if !name.eq_ignore_ascii_case("host") {
            put_header(&mut headers, name, value.clone());
        }
    }
    put_header(&mut headers, "user-agent", USER_AGENT.to_string());

    let body = match req.method {
        Method::Get => None,
        _ => req.data.clone(),
    };
    Ok(Prepared {
        method: req.method,
        url,
        headers,
        body,
        public_only: false,
        fetch: false,
        credential_query,
    })
}

/// RFC 3986 percent-encoding (all but the unreserved characters), as
/// OAuth 1.0a signs and sends its values.
fn oauth_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query's name or value as OAuth 1.0a signs it (RFC 5849 §3.4.1.3.1:
/// decoded as a form, a `+` a space, as the provider decodes it); a `%`
/// that starts no escape stays itself, and bytes that are not UTF-8 are
/// taken as lossy text.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// NetSuite's token-based authentication (`TBA` credentials): an OAuth
/// 1.0a `Authorization` signed with HMAC-SHA256 over the method, the URL
/// and its query, for the consumer (`credentials.config_override`'s
/// `client_id` and `client_secret`, else the connection configuration's
/// `oauth_client_id` and `oauth_client_secret`) and the token
/// (`token_id`, `token_secret`), with the account as its realm
/// (`connection_config.accountId`, its first `-` an `_`, upper-cased), as
/// the original signs it. `None` when the connection lacks any of them
/// (the request then goes without, and the provider refuses it).
pub(crate) fn tba_header(
    method: &str,
    url: &Url,
    connection: &Connection,
    nonce: &str,
    timestamp: u64,
) -> Option<String> {
    let creds = &connection.credentials;
    let realm = connection
        .connection_config
        .get("accountId")
        .and_then(Value::as_str)?
        .replacen('-', "_", 1)
        .to_uppercase();
    oauth1_authorization(&OAuth1 {
        method,
        url,
        consumer: consumer(connection)?,
        token: (creds.field("token_id")?, creds.field("token_secret")?),
        signature_method: "HMAC-SHA256",
        realm: Some(&realm),
        nonce,
        timestamp,
        params: &[],
    })
}

/// The OAuth 1.0a consumer of connection `c`: its
/// `credentials.config_override` (`client_id`, `client_secret`; for an
/// OAUTH1 connection, the integration's app, which the request path puts
/// there), else its configuration's `oauth_client_id` and
/// `oauth_client_secret`.
fn consumer(c: &Connection) -> Option<(&str, &str)> {
    let own = c.credentials.as_map().get("config_override");
    // A browser's `params` may fill the configuration: only TBA's
    // consumer is read there (the original's), never OAUTH1's.
    let tba = c.credentials.kind() == "TBA";
    let config = |k: &str| {
        c.connection_config
            .get(k)
            .and_then(Value::as_str)
            .filter(|_| tba)
    };
    let pick = |own_key: &str, config_key: &str| {
        own.and_then(|o| o.get(own_key))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .or_else(|| config(config_key).filter(|v| !v.is_empty()))
    };
    Some((
        pick("client_id", "oauth_client_id")?,
        pick("client_secret", "oauth_client_secret")?,
    ))
}

/// What an OAuth 1.0a request signature is made of.
#[derive(Clone, Copy)]
pub struct OAuth1<'a> {
    pub method: &'a str,
    pub url: &'a Url,
    /// The consumer's key and secret.
    pub consumer: (&'a str, &'a str),
    /// The token and its secret (a request token's before the user's
    /// grant: none).
    pub token: (&'a str, &'a str),
    /// `HMAC-SHA1`, `HMAC-SHA256` or `PLAINTEXT`.
    pub signature_method: &'a str,
    pub realm: Option<&'a str>,
    pub nonce: &'a str,
    pub timestamp: u64,
    /// Further parameters signed: a form body's, and `oauth_` fields of
    /// the flow (`oauth_callback`, `oauth_verifier`), which the header
    /// carries too.
    pub params: &'a [(String, String)],
}

/// An OAuth 1.0a `Authorization` header (RFC 5849): the base string of
/// the method, the URL and its query (read as a form: `+` is a space) and
/// the `oauth_` fields, signed with the consumer's and the token's
/// secrets. `None` for a signature method sluice does not make.
pub fn oauth1_authorization(o: &OAuth1<'_>) -> Option<String> {
    use hmac::Mac as _;
    let timestamp = o.timestamp.to_string();
    let mut oauth: Vec<(&str, &str)> = vec![
        ("oauth_consumer_key", o.consumer.0),
        ("oauth_nonce", o.nonce),
        ("oauth_signature_method", o.signature_method),
        ("oauth_timestamp", &timestamp),
        ("oauth_version", "1.0"),
    ];
    if !o.token.0.is_empty() {
        oauth.push(("oauth_token", o.token.0));
    }
    for (k, v) in o.params {
        if k.starts_with("oauth_") {
            oauth.push((k, v));
        }
    }
    let key = format!("{}&{}", oauth_encode(o.consumer.1), oauth_encode(o.token.1));
    let signature = if o.signature_method == "PLAINTEXT" {
        key
    } else {
        let mut params: Vec<(String, String)> = oauth
            .iter()
            .map(|(k, v)| (oauth_encode(k), oauth_encode(v)))
            .chain(
                o.params
                    .iter()
                    .filter(|(k, _)| !k.starts_with("oauth_"))
                    .map(|(k, v)| (oauth_encode(k), oauth_encode(v))),
            )
            .collect();
        for pair in o
            .url
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.push((oauth_encode(&form_decode(k)), oauth_encode(&form_decode(v))));
        }
        params.sort();
        let joined = params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        // Scheme, host, a port that is not the scheme's, path: no user
        // or password (the Host header carries none), no query.
        let base_url = format!(
            "{}://{}{}{}",
            o.url.scheme(),
            o.url.host_str().unwrap_or_default(),
            o.url.port().map(|p| format!(":{p}")).unwrap_or_default(),
            o.url.path()
        );
        let base = format!(
            "{}&{}&{}",
            o.method.to_ascii_uppercase(),
            oauth_encode(&base_url),
            oauth_encode(&joined)
        );
        let digest = match o.signature_method {
            "HMAC-SHA256" => {
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).ok()?;
                mac.update(base.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            "HMAC-SHA1" => {
                let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).ok()?;
                mac.update(base.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            _ => return None,
        };
        base64::engine::general_purpose::STANDARD.encode(digest)
    };
    oauth.push(("oauth_signature", &signature));
    oauth.sort();
    let fields = oauth
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", oauth_encode(k), oauth_encode(v)))
        .collect::<Vec<_>>()
        .join(", ");
    Some(match o.realm {
        Some(realm) => format!("OAuth realm=\"{realm}\", {fields}"),
        None => format!("OAuth {fields}"),
    })
}

/// Most headers a script may set on one request.
const MAX_SCRIPT_HEADERS: usize = 256;

/// Longest URL a request may have (what the HTTP client can send).
const MAX_URL_BYTES: usize = 65_534;

/// At most [`MAX_SCRIPT_HEADERS`] headers, each a valid name and value (a
/// line break in a value was sent as a network error, and retried).
fn check_script_headers(headers: &[(String, String)]) -> Result<(), NangoError> {
    if headers.len() > MAX_SCRIPT_HEADERS {
        return Err(nango_error(
            "invalid_request",
            format!(
                "a request has at most {MAX_SCRIPT_HEADERS} headers, this one {}",
                headers.len()
            ),
        ));
    }
    for (name, value) in headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(nango_error(
                "invalid_request",
                format!("`{}` is not a valid header name", prefix(name, 200)),
            ));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(nango_error(
                "invalid_request",
                format!(
                    "the value of header `{name}` is not valid (line breaks and control characters are not allowed)"
                ),
            ));
        }
    }
    Ok(())
}

/// At most [`MAX_URL_BYTES`] of URL.
fn check_url_length(url: &str) -> Result<(), NangoError> {
    if url.len() > MAX_URL_BYTES {
        return Err(nango_error(
            "invalid_request",
            format!(
                "the URL is {} bytes, longer than the {MAX_URL_BYTES} a request can carry: {}…",
                url.len(),
                prefix(url, 200)
            ),
        ));
    }
    Ok(())
}

/// The first `max` bytes of `text`, cut on a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn put_header(headers: &mut Vec<(String, String)>, name: &str, value: String) {
    let name = name.to_ascii_lowercase();
    headers.retain(|(n, _)| *n != name);
    headers.push((name, value));
}

/// `host:port` of `url` (the scheme's default port when none is written),
/// for the egress check: another port of the same host is another service.
fn host_port(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

/// Whether `url` may be called: the provider's own host, another host of
/// its domain, or the allowlist.
pub(crate) fn egress_allowed(url: &Url, provider_host: &ProviderHost, allowed: &[String]) -> bool {
    let Some(host_port) = host_port(url) else {
        return false;
    };
    if matches!(provider_host, ProviderHost::Own(own) | ProviderHost::Chosen(own) if *own == host_port)
    {
        return true;
    }
    provider_sibling(url, provider_host) || in_allowlist(url, allowed)
}

/// Whether `url` is another host of the provider's own registrable domain
/// (by the public suffix list, whose private section keeps shared hosting
/// such as `*.herokuapp.com` apart), over https on the default port: the
/// provider's other APIs, which templates reach with `baseUrlOverride`
/// (`api2.amplitude.com` beside `amplitude.com`, `upload.box.com` beside
/// `api.box.com`). Only for a base URL the provider's definition fixes,
/// not one a connection's value chose.
fn provider_sibling(url: &Url, provider_host: &ProviderHost) -> bool {
    let ProviderHost::Own(own) = provider_host else {
        return false;
    };
    if url.scheme() != "https" || url.port_or_known_default() != Some(443) {
        return false;
    }
    let Some(url::Host::Domain(host)) = url.host() else {
        return false;
    };
    let own_host = own.rsplit_once(':').map_or(own.as_str(), |(h, _)| h);
    if own_host.starts_with('[') || own_host.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    match (psl::domain_str(host), psl::domain_str(own_host)) {
        (Some(theirs), Some(ours)) => theirs.eq_ignore_ascii_case(ours),
        _ => false,
    }
}

/// Whether the environment's `allowed_hosts` names `url`'s host: a host
/// name, `*.example.com`, or `host:port`.
pub fn in_allowlist(url: &Url, allowed: &[String]) -> bool {
    let (Some(host), Some(host_port)) = (url.host_str(), host_port(url)) else {
        return false;
    };
    allowed.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        if let Some(suffix) = entry.strip_prefix("*.") {
            host.ends_with(&format!(".{suffix}"))
        } else {
            entry == host || entry == host_port
        }
    })
}

/// [`egress_allowed`], or the `egress_denied` error naming the host.
fn egress_check(
    url: &Url,
    provider_host: &ProviderHost,
    allowed: &[String],
) -> Result<(), NangoError> {
    if egress_allowed(url, provider_host, allowed) {
        return Ok(());
    }
    // With its port: the provider's host on another port is refused too.
    let host = host_port(url).unwrap_or_else(|| url.host_str().unwrap_or("").to_string());
    let message = match provider_host {
        ProviderHost::NotPublic(own) if host_port(url).as_ref() == Some(own) => format!(
            "requests to host `{host}` are not allowed: the connection's configuration chose the provider's host, and it is not a public address (loopback, private, link-local…); only the environment's allowed_hosts may name such a host"
        ),
        ProviderHost::Own(own) => format!(
            "requests to host `{host}` are not allowed: only the provider's host ({own}), other hosts of its domain over https, and the environment's allowed_hosts may be called"
        ),
        ProviderHost::Chosen(own) => format!(
            "requests to host `{host}` are not allowed: only the provider's host ({own}) and the environment's allowed_hosts may be called"
        ),
        _ => format!(
            "requests to host `{host}` are not allowed: only the provider's host (none) and the environment's allowed_hosts may be called"
        ),
    };
    Err(nango_error("egress_denied", message))
}

/// How long to wait before the next attempt (0-based `attempt`), in the
/// original's order: script header, provider header, provider body rule,
/// exponential backoff.
pub(crate) fn retry_wait(
    req: &Request,
    provider: &Provider,
    response: Option<&Response>,
    attempt: u32,
    base: Duration,
    max: Duration,
) -> Duration {
    if let Some(resp) = response {
        if let Some(rh) = &req.retry_header
            && let Some(wait) = wait_from_headers(resp, rh.at.as_deref(), rh.after.as_deref())
        {
            return wait.min(max);
        }
        if let Some(retry) = &provider.proxy.retry {
            if let Some(wait) = wait_from_headers(resp, retry.at.as_deref(), retry.after.as_deref())
            {
                return wait.min(max);
            }
            if let Some(rule) = &retry.in_body
                && let Some(wait) = wait_from_body(resp, rule)
            {
                return wait.min(max);
            }
        }
    }
    let factor = 2u32.saturating_pow(attempt);
    base.saturating_mul(factor).min(max)
}

fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn wait_from_headers(resp: &Response, at: Option<&str>, after: Option<&str>) -> Option<Duration> {
    if let Some(v) = at.and_then(|h| header(resp, h)) {
        return wait_until(v);
    }
    if let Some(v) = after.and_then(|h| header(resp, h)) {
        return wait_after(v);
    }
    None
}

fn wait_until(value: &str) -> Option<Duration> {
    let now = SystemTime::now();
    let when = if let Ok(secs) = value.trim().parse::<f64>() {
        SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(secs).ok()?)?
    } else {
        httpdate::parse_http_date(value.trim()).ok().or_else(|| {
            chrono::DateTime::parse_from_rfc3339(value.trim())
                .ok()
                .map(SystemTime::from)
        })?
    };
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

fn wait_after(value: &str) -> Option<Duration> {
    let secs = value.trim().parse::<f64>().ok()?;
    Duration::try_from_secs_f64(secs.max(0.0)).ok()
}

fn wait_from_body(resp: &Response, rule: &crate::providers::RetryInBody) -> Option<Duration> {
    let body: Value = serde_json::from_slice(&resp.body).ok()?;
    let text = crate::paginate::get_path(&body, &rule.path)?
        .as_str()?
        .to_string();
    let pattern = rule.value.trim_matches('/');
    let value = capture_first_group(pattern, &text)?;
    match rule.strategy.as_str() {
        "at" => wait_until(&value),
        _ => wait_after(&value),
    }
}

/// Group 1 of a small regular expression. Providers use patterns of the form
/// `literal text (.+)` with escaped dots; that subset is matched here without
/// a regex engine: escapes are unescaped, ` +` means one or more spaces, and
/// the group captures the rest of the text.
fn capture_first_group(pattern: &str, text: &str) -> Option<String> {
    let (prefix, group) = pattern.split_once('(')?;
    if !group.starts_with(".+)") && !group.starts_with(".*)") {
        return None;
    }
    let mut literal = String::new();
    let mut chars = prefix.chars().peekable();
    let mut parts: Vec<String> = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    literal.push(n);
                }
            }
            ' ' if chars.peek() == Some(&'+') => {
                chars.next();
                parts.push(std::mem::take(&mut literal));
            }
            c => literal.push(c),
        }
    }
    parts.push(literal);
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        let at = rest.find(part.as_str())?;
        rest = &rest[at + part.len()..];
        if i + 1 < parts.len() {
            let trimmed = rest.trim_start_matches(' ');
            if trimmed.len() == rest.len() {
                return None;
            }
            rest = trimmed;
        }
    }
    let value = rest.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// Why a response should be retried; `None` means it should not.
pub(crate) fn should_retry(
    req: &Request,
    provider: &Provider,
    resp: &Response,
    seen_401: bool,
    creds_changed: bool,
) -> Option<String> {
    let status = resp.status;
    let reason = if status == 401 {
        if !seen_401 || creds_changed {
            "401 unauthorized".to_string()
        } else {
            return None;
        }
    } else if status >= 500 {
        format!("status code {status}")
    } else if status == 429 {
        "429 too many requests".to_string()
    } else if req.retry_on.contains(&status) {
        format!("status code {status} in retryOn")
    } else if let Some(retry) = &provider.proxy.retry {
        if retry.error_code == Some(status) {
            format!("status code {status} (provider error_code)")
        } else if retry
            .remaining
            .as_deref()
            .and_then(|h| header(resp, h))
            .is_some_and(|v| v.trim() == "0")
        {
            "rate limit remaining is 0".to_string()
        } else {
            return None;
        }
    } else {
        return None;
    };
    Some(reason)
}

/// Who sends a proxied request: a script's execution, or the API's
/// `/proxy` route ([`ApiProxy`]). The request goes out the same way for
/// both: credentials, provider headers, egress check, retries, a refresh
/// on 401, and a log line per attempt.
pub(crate) trait Sender {
    fn services(&self) -> &Arc<Services>;
    /// The first retry's wait and the longest.
    fn retry_delays(&self) -> (Duration, Duration);
    /// A connection of the sender's environment, with usable credentials.
    async fn connection(&mut self, pck: &str, cid: &str) -> Result<Connection, NangoError>;
    /// Fetches the connection again next time (its credentials were refused).
    fn forget_connection(&mut self, pck: &str, cid: &str);
    /// Keeps the connection's secrets out of the logs.
    fn note_secrets(&mut self, c: &Connection);
    /// `text` with every noted secret replaced.
    fn redact(&self, text: &str) -> String;
    fn push_log(&mut self, entry: LogEntry);
}

impl Sender for HostState {
    fn services(&self) -> &Arc<Services> {
        &self.services
    }

    fn retry_delays(&self) -> (Duration, Duration) {
        let config = self.runtime.config();
        (config.retry_base_delay, config.retry_max_delay)
    }

    async fn connection(&mut self, pck: &str, cid: &str) -> Result<Connection, NangoError> {
        HostState::connection(self, pck, cid).await
    }

    fn forget_connection(&mut self, pck: &str, cid: &str) {
        HostState::forget_connection(self, pck, cid)
    }

    fn note_secrets(&mut self, c: &Connection) {
        note_secrets(&mut self.secrets, c)
    }

    fn redact(&self, text: &str) -> String {
        redact(&self.secrets, text)
    }

    fn push_log(&mut self, entry: LogEntry) {
        HostState::push_log(self, entry)
    }
}

/// Secret values, each with the forms a URL or a JSON text gives it
/// ([`note_secret`]), to be shown as `***`: one pass over a text finds
/// them all (an automaton built once for what is noted), so redacting
/// costs the text's length, not the text's length times the secrets'
/// number (a TWO_STEP connection's every value is a secret).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    list: Vec<String>,
    seen: std::collections::HashSet<String>,
    matcher: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>>,
}

impl Secrets {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn push(&mut self, s: String) {
        if !s.is_empty() && self.seen.insert(s.clone()) {
            self.list.push(s);
            self.matcher = std::sync::OnceLock::new();
        }
    }

    /// Adds `other`'s secrets (a nested action's, whose failure its
    /// caller passes on).
    pub fn extend(&mut self, other: &Secrets) {
        for s in &other.list {
            self.push(s.clone());
        }
    }

    /// `text` with every secret replaced by `***` (the longest where two
    /// start at one place).
    pub fn redact(&self, text: &str) -> String {
        if self.list.is_empty() {
            return text.to_string();
        }
        let matcher = self.matcher.get_or_init(|| {
            aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(&self.list)
                .ok()
        });
        match matcher {
            Some(m) => m.replace_all(text, &vec!["***"; self.list.len()]),
            // Beyond what the automaton takes: one secret at a time,
            // longest first, so a short secret inside a longer one does
            // not cut the longer one into pieces that are then not found.
            None => {
                let mut order: Vec<&String> = self.list.iter().collect();
                order.sort_by_key(|s| std::cmp::Reverse(s.len()));
                let mut out = text.to_string();
                for s in order {
                    out = out.replace(s.as_str(), "***");
                }
                out
            }
        }
    }
}

/// Notes a connection's secrets for [`redact`] (see [`note_secret`]).
fn note_secrets(secrets: &mut Secrets, c: &Connection) {
    for s in c.credentials.secrets() {
        note_secret(secrets, s);
    }
    // A TBA consumer's secret may be in the configuration (where the
    // original keeps the integration's).
    if c.credentials.kind() == "TBA"
        && let Some(s) = c
            .connection_config
            .get("oauth_client_secret")
            .and_then(Value::as_str)
            .filter(|s| s.len() >= 4)
    {
        note_secret(secrets, s.to_string());
    }
}

/// `text` with each of `values` of at least 4 characters, as written and
/// as a URL carries it, replaced by `***` (what a log line or an error
/// message must not show: a refresh token, a client secret).
pub fn redact_values<'a>(text: &str, values: impl IntoIterator<Item = &'a str>) -> String {
    let mut secrets = Secrets::default();
    for v in values.into_iter().filter(|v| v.len() >= 4) {
        note_secret(&mut secrets, v.to_string());
    }
    secrets.redact(text)
}

/// Notes a secret for [`redact`], also as a URL carries it: a key put in a
/// query (`api_key=${apiKey}`) is form-encoded there (`Sk+k/y==` is
/// `Sk%2Bk%2Fy%3D%3D`), in a path percent-encoded.
fn note_secret(secrets: &mut Secrets, s: String) {
    let form: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
    let strict = percent_encoded(&s, |_| false);
    // `encodeURIComponent`'s, which a script may build a URL with.
    let component = percent_encoded(&s, |b| b"!'()*".contains(&b));
    // The URL parser's in a path: `+`, `/`, `=` and the like as they are.
    let path = percent_encoded(&s, |b| b.is_ascii_graphic() && !b"\"#<>?`{}".contains(&b));
    // As a JSON string holds it (`\"`, `\\`, `\u0001`), and with `\/`
    // as well, as some token endpoints answer.
    let json = serde_json::to_string(&s).unwrap_or_default();
    let json = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or(&s)
        .to_string();
    let json_slashes = json.replace('/', "\\/");
    for variant in [s, form, strict, component, path, json, json_slashes] {
        secrets.push(variant);
    }
}

/// Every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) and those
/// `keep` keeps as `%XX`.
fn percent_encoded(text: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn redact(secrets: &Secrets, text: &str) -> String {
    secrets.redact(text)
}

/// Sends a request for the running script, with retries.
pub(crate) async fn send(state: &mut HostState, req: &Request) -> Result<Response, HttpError> {
    if let Some(answer) =
        state
            .services
            .upstream
            .answer(&state.exec.script_name, &state.exec.sync.variant, req)
    {
        // Recordings answer as the test harness does: whatever status was
        // recorded is the script's response.
        return answer.map_err(HttpError::Failed);
    }
    let current = state.exec.connection.clone();
    let max_response_bytes = state.limits().max_response_bytes;
    send_as(state, &current, max_response_bytes, req).await
}

/// An OAUTH1 connection with its integration's app as its consumer
/// (`credentials.config_override`, in memory only), as the original signs
/// for it, and a TBA connection naming no consumer of its own likewise;
/// unchanged when the store knows none.
async fn with_oauth1_consumer(
    services: &Services,
    pck: &str,
    cid: &str,
    mut connection: Connection,
) -> Connection {
    // OAUTH1: the integration's app signs, as in the original (none given:
    // a `config_override` the connection's store put there). TBA: the
    // connection's own consumer, else the integration's.
    match connection.credentials.kind() {
        "OAUTH1" => {}
        "TBA" if consumer(&connection).is_none() => {}
        _ => return connection,
    }
    let Ok(integration) = services.connections.integration(pck, cid, true).await else {
        return connection;
    };
    let field = |k: &str| {
        integration["credentials"][k]
            .as_str()
            .filter(|v| !v.is_empty())
    };
    let (Some(id), Some(secret)) = (field("client_id"), field("client_secret")) else {
        return connection;
    };
    let mut map = connection.credentials.as_map().clone();
    map.insert(
        "config_override".into(),
        serde_json::json!({"client_id": id, "client_secret": secret}),
    );
    if let Ok(creds) = crate::connection::Credentials::try_from(map) {
        connection.credentials = creds;
    }
    connection
}

/// Sends `req` for `sender`, whose own connection is `current` (the one
/// whose provider the request goes to), with retries.
async fn send_as<S: Sender>(
    state: &mut S,
    current: &crate::records::ConnectionRef,
    max_response_bytes: usize,
    req: &Request,
) -> Result<Response, HttpError> {
    let pck = req
        .provider_config_key
        .clone()
        .unwrap_or_else(|| current.provider_config_key.clone());
    let cid = req
        .connection_id
        .clone()
        .unwrap_or_else(|| current.connection_id.clone());
    // The provider template is always the current script's.
    let own = state
        .connection(&current.provider_config_key, &current.connection_id)
        .await
        .map_err(HttpError::Failed)?;
    let services = state.services().clone();
    let provider = services
        .providers
        .get(&own.provider)
        .cloned()
        .ok_or_else(|| {
            failed(
                "unknown_provider_template_in_config",
                format!(
                    "provider `{}` is not in the providers catalogue",
                    own.provider
                ),
            )
        })?;
    let provider_host = ProviderHost::of(&provider, &own);
    let allowed = &services.environment.limits.allowed_hosts;
    // For an answer from another origin: the script's retry rules and the
    // general ones (5xx, 429), not the provider's headers or codes.
    let elsewhere = std::sync::OnceLock::new();
    let elsewhere = || {
        elsewhere.get_or_init(|| {
            let mut p = provider.clone();
            p.proxy.retry = None;
            p
        })
    };

    let mut seen_401 = false;
    let mut last_creds = None;
    let mut attempt = 0u32;
    loop {
        let connection = state
            .connection(&pck, &cid)
            .await
            .map_err(unauthorized_when_refused)?;
        let creds_changed = last_creds
            .as_ref()
            .is_some_and(|c| *c != connection.credentials);
        last_creds = Some(connection.credentials.clone());
        let connection = with_oauth1_consumer(&services, &pck, &cid, connection).await;
        state.note_secrets(&connection);
        let mut prepared = prepare(req, &provider, &connection)?;
        egress_check(&prepared.url, &provider_host, allowed).map_err(HttpError::Failed)?;
        prepared.public_only = provider_host.public_only(&prepared.url, allowed);
        let started = Instant::now();
        let outcome = services
            .upstream
            .transmit(&prepared, max_response_bytes)
            .await;
        log_http(
            state,
            &prepared,
            outcome.as_ref().ok().map(|r| r.status),
            started.elapsed(),
        );
        let mut foreign = false;
        let outcome = match outcome {
            Ok(resp) => {
                let to = Egress {
                    provider_host: &provider_host,
                    allowed,
                };
                follow_redirects(state, &services, &prepared, resp, to, max_response_bytes)
                    .await
                    .map(|answer| {
                        foreign = answer.foreign;
                        answer.resp
                    })
            }
            Err(e) => Err(e),
        };
        let wait_reason = match &outcome {
            Ok(resp) => {
                if (200..300).contains(&resp.status) {
                    services.upstream.observe(req, resp);
                    return outcome.map_err(HttpError::Failed);
                }
                // An answer from another origin (a redirect followed there,
                // without the credentials) says nothing of the
                // connection's credentials nor of the provider's limits.
                if foreign {
                    (resp.status != 401)
                        .then(|| should_retry(req, elsewhere(), resp, true, false))
                        .flatten()
                } else {
                    let decision = should_retry(req, &provider, resp, seen_401, creds_changed);
                    if resp.status == 401 {
                        seen_401 = true;
                        state.forget_connection(&pck, &cid);
                        if let Err(e) = services.connections.credentials_refused(&pck, &cid).await {
                            state.push_log(LogEntry::internal(
                                LogLevel::Warn,
                                format!("Refreshing the credentials of {cid} failed: {e}"),
                            ));
                        }
                    }
                    decision
                }
            }
            Err(e) => (e.code == "script_network_error"
                && !e.message.starts_with(TLS_FAILURE)
                && !e.message.starts_with(TOO_MANY_REDIRECTS))
            .then(|| e.message.clone()),
        };
        match wait_reason {
            Some(reason) if attempt < req.retries => {
                let (base, max) = state.retry_delays();
                let rules = if foreign { elsewhere() } else { &provider };
                let wait = retry_wait(req, rules, outcome.as_ref().ok(), attempt, base, max);
                attempt += 1;
                let message = format!(
                    "Retrying HTTP call (reason: {}). Waiting for {}ms [{attempt}/{}]",
                    state.redact(prefix(&reason, 2048)),
                    wait.as_millis(),
                    req.retries
                );
                state.push_log(LogEntry::internal(LogLevel::Warn, message));
                tokio::time::sleep(wait).await;
            }
            _ => {
                return match outcome {
                    Ok(resp) => {
                        services.upstream.observe(req, &resp);
                        Err(HttpError::Status(resp))
                    }
                    Err(mut e) => {
                        // The connection's secrets out of what the script,
                        // the logs and the app's webhooks are told.
                        e.message = state.redact(&e.message);
                        Err(HttpError::Failed(e))
                    }
                };
            }
        }
    }
}

/// A request an app sends through the API's `/proxy` route, on one of its
/// connections: what the original's `nango.proxy()` SDK call sends.
#[derive(Debug, Clone)]
pub struct AppRequest {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// The path and query after `/proxy`, as received.
    pub endpoint: String,
    /// The headers the app asked for (`Nango-Proxy-*`, the prefix removed).
    pub headers: Vec<(String, String)>,
    /// Sent for every method but `GET`.
    pub body: Option<Vec<u8>>,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Statuses retried besides the provider's rules and 5xx/429.
    pub retry_on: Vec<u16>,
    pub base_url_override: Option<String>,
    /// Kept out of the log lines and the call's name besides the
    /// connection's credentials (the secret key the app authenticated
    /// with, which it may forward in a query or a header).
    pub secrets: Vec<String>,
}

/// The upstream's answer to an [`AppRequest`], whatever its status.
#[derive(Debug, Clone)]
pub struct AppResponse {
    pub status: u16,
    /// Lower-case names; repeated headers joined by `, `.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why an [`AppRequest`] got no upstream answer: refused (egress, an
/// invalid request, credentials that could not be refreshed) or the
/// network failed. `code` is the runtime's error code (`egress_denied`,
/// `invalid_request`, `script_network_error`, …).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AppRequestError {
    pub code: String,
    pub message: String,
}

/// Sends an app's request on `connection` of the environment `services`
/// serve, as a script's would go (credentials, provider headers, egress
/// check, retries, a refresh on 401), within the environment's action
/// timeout (`proxy_timeout` past it). Returns the outcome, the log lines
/// of its attempts and the call's name (`GET /path`, without its query),
/// credentials and `req.secrets` scrubbed from each, whether the request
/// ended or timed out.
pub async fn send_for_app(
    services: Arc<Services>,
    config: &crate::RuntimeConfig,
    connection: &crate::records::ConnectionRef,
    req: AppRequest,
) -> (Result<AppResponse, AppRequestError>, Vec<LogEntry>, String) {
    let mut secrets = Secrets::default();
    for s in req.secrets {
        note_secret(&mut secrets, s);
    }
    let path = req.endpoint.split('?').next().unwrap_or_default();
    let call = format!("{} {path}", req.method);
    let method = match req.method.as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        other => {
            let e = AppRequestError {
                code: "invalid_request".into(),
                message: format!(
                    "method {other} cannot be proxied: GET, POST, PUT, PATCH or DELETE"
                ),
            };
            return (Err(e), Vec::new(), redact(&secrets, &call));
        }
    };
    let mut headers = req.headers;
    // Given by the app's own header when it sent a body: a JSON body is
    // sent as JSON.
    if req.body.is_some()
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let request = Request {
        method,
        endpoint: req.endpoint,
        headers,
        params: None,
        data: req.body.map(Body::Bytes),
        retries: req.retries,
        retry_on: req.retry_on,
        retry_header: None,
        base_url_override: req.base_url_override,
        decompress: false,
        provider_config_key: None,
        connection_id: None,
    };
    let max_response_bytes = services.environment.limits.max_response_bytes;
    // As long as an action may take: retries that wait on an upstream's
    // rate limit, or an upstream that never answers, do not hold the
    // request for ever.
    let limit = services.environment.limits.timeouts.action;
    let mut sender = AppSender {
        services,
        delays: (config.retry_base_delay, config.retry_max_delay),
        secrets,
        logs: Vec::new(),
        noted: false,
    };
    let sent = tokio::time::timeout(
        limit,
        send_as(&mut sender, connection, max_response_bytes, &request),
    )
    .await;
    let timed_out = sent.is_err();
    let outcome = match sent {
        Ok(Ok(r) | Err(HttpError::Status(r))) => Ok(AppResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }),
        Ok(Err(HttpError::Failed(e))) => Err(AppRequestError {
            code: e.code,
            message: sender.redact(&e.message),
        }),
        Err(_) => Err(AppRequestError {
            code: "proxy_timeout".into(),
            message: format!(
                "the request and its retries took longer than {} s",
                limit.as_secs()
            ),
        }),
    };
    // Cut short before the connection was read, its credentials are not
    // known: the call is named by its method alone.
    let call = if timed_out && !sender.noted {
        method_of(&call)
    } else {
        sender.redact(&call)
    };
    (outcome, sender.logs, call)
}

/// The method of a call's name (`GET /path` → `GET`).
fn method_of(call: &str) -> String {
    call.split(' ').next().unwrap_or_default().to_string()
}

/// The sender of an app's request: no execution, its environment's
/// services, its log lines kept (as many as a script's).
struct AppSender {
    services: Arc<Services>,
    delays: (Duration, Duration),
    secrets: Secrets,
    logs: Vec<LogEntry>,
    /// The connection's secrets are among `secrets`.
    noted: bool,
}

impl Sender for AppSender {
    fn services(&self) -> &Arc<Services> {
        &self.services
    }

    fn retry_delays(&self) -> (Duration, Duration) {
        self.delays
    }

    async fn connection(&mut self, pck: &str, cid: &str) -> Result<Connection, NangoError> {
        self.services
            .connections
            .get(pck, cid)
            .await
            .map_err(crate::host::connection::store_error)
    }

    fn forget_connection(&mut self, _: &str, _: &str) {}

    fn note_secrets(&mut self, c: &Connection) {
        note_secrets(&mut self.secrets, c);
        self.noted = true;
    }

    fn redact(&self, text: &str) -> String {
        redact(&self.secrets, text)
    }

    fn push_log(&mut self, entry: LogEntry) {
        if self.logs.len() < self.services.environment.limits.max_log_entries {
            self.logs.push(entry);
        }
    }
}

/// A URL as a log line shows it: a user name or password in it as `***`.
fn shown_url(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    let _ = shown.set_username("***");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// `nango.uncontrolledFetch`: the script's own request to an absolute URL,
/// with no credentials, provider headers or retries; the egress check is
/// the proxy's (the provider's host or the environment's `allowed_hosts`).
/// Any status is a response.
pub(crate) async fn uncontrolled_fetch(
    state: &mut HostState,
    req: crate::bindings::http::FetchRequest,
) -> Result<Response, NangoError> {
    check_url_length(&req.url)?;
    check_script_headers(&req.headers)?;
    let url = Url::parse(&req.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .ok_or_else(|| {
            nango_error(
                "invalid_request",
                format!(
                    "uncontrolledFetch needs an absolute http(s) URL, got `{}`",
                    req.url
                ),
            )
        })?;
    let current = state.exec.connection.clone();
    let own = state
        .connection(&current.provider_config_key, &current.connection_id)
        .await?;
    // A header the script filled with one of them is left out of a
    // redirect to another origin.
    Sender::note_secrets(state, &own);
    let provider_host = state
        .services
        .providers
        .get(&own.provider)
        .map_or(ProviderHost::None, |p| ProviderHost::of(p, &own));
    let allowed = state.limits().allowed_hosts.clone();
    egress_check(&url, &provider_host, &allowed)?;
    let public_only = provider_host.public_only(&url, &allowed);
    let prepared = Prepared {
        public_only,
        method: req.method,
        url,
        headers: req
            .headers
            .into_iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .filter(|(n, _)| n != "host")
            .collect(),
        body: req.body.map(Body::Bytes),
        fetch: true,
        credential_query: Vec::new(),
    };
    let started = Instant::now();
    let services = state.services.clone();
    let max_response_bytes = state.limits().max_response_bytes;
    let outcome = services
        .upstream
        .transmit(&prepared, max_response_bytes)
        .await;
    log_http(
        state,
        &prepared,
        outcome.as_ref().ok().map(|r| r.status),
        started.elapsed(),
    );
    let to = Egress {
        provider_host: &provider_host,
        allowed: &allowed,
    };
    follow_redirects(
        state,
        &services,
        &prepared,
        outcome?,
        to,
        max_response_bytes,
    )
    .await
    .map(|answer| answer.resp)
}

/// The code a redirect chain too long to follow fails with (follow-redirects',
/// which the original's axios uses).
const TOO_MANY_REDIRECTS: &str = "ERR_FR_TOO_MANY_REDIRECTS";

/// Where requests may go: what [`egress_check`] takes.
#[derive(Clone, Copy)]
struct Egress<'a> {
    provider_host: &'a ProviderHost,
    allowed: &'a [String],
}

/// What answered a request: the answer, and whether it came from another
/// origin than the one asked (a redirect followed there, without the
/// credentials: a 401 from it says nothing of the connection's).
pub(crate) struct Answer {
    pub resp: Response,
    pub foreign: bool,
}

/// Follows `resp`, the answer to `sent`, while it redirects to another
/// origin (the client follows one within the origin itself), as the
/// original's axios does, at most [`MAX_REDIRECTS`] times (sluice's
/// limit; axios's is 21): each target must pass the egress check every
/// request passes (a refused one is answered as it came, a log line
/// naming the host and the rule). A redirect from a host a connection
/// chose (a self-hosted instance, a server the user named) that
/// `allowed_hosts` does not name is not followed: whoever answers there
/// could send the request on to a private host `allowed_hosts` names.
/// Leaving an origin keeps only the headers that say
/// how to read or send the request (`accept*`, `content-*`, `user-agent`,
/// `range`, `if-*`), none holding one of the connection's secrets, and
/// leaves the connection's query parameters out of the target; a body
/// holding a secret is not sent on (the redirect is answered as it came).
/// A 303, or a 301/302 after a POST, is followed with a GET without the
/// body, as axios does. Each hop is logged.
async fn follow_redirects<S: Sender>(
    state: &mut S,
    services: &Services,
    sent: &Prepared,
    mut resp: Response,
    to: Egress<'_>,
    max_response_bytes: usize,
) -> Result<Answer, NangoError> {
    let mut hops = 0;
    let mut current: Option<Prepared> = None;
    loop {
        let from = current.as_ref().unwrap_or(sent);
        let foreign = current.is_some();
        let Some(mut next) = redirect_target(from, &resp, |v| state.redact(v) != v) else {
            return Ok(Answer { resp, foreign });
        };
        // From a host a connection chose, unless the operator named it.
        let chosen = match to.provider_host {
            ProviderHost::Chosen(h) | ProviderHost::NotPublic(h) => Some(h),
            _ => None,
        };
        if chosen.is_some_and(|h| host_port(&from.url).as_ref() == Some(h))
            && !in_allowlist(&from.url, to.allowed)
        {
            let message = format!(
                "Not following the redirect ({}) from `{}` to `{}`: the provider's host is one a connection chose",
                resp.status,
                host_port(&from.url).unwrap_or_default(),
                host_port(&next.url).unwrap_or_default()
            );
            state.push_log(LogEntry::internal(LogLevel::Warn, message));
            return Ok(Answer { resp, foreign });
        }
        let body_secret = next.body.as_ref().is_some_and(|b| {
            let text = match b {
                Body::Text(bytes) | Body::Json(bytes) | Body::Bytes(bytes) => {
                    String::from_utf8_lossy(bytes)
                }
                Body::Multipart(fields) => std::borrow::Cow::Owned(
                    fields
                        .iter()
                        .flat_map(|(k, v)| [k.as_str(), v.as_str()])
                        .collect::<Vec<_>>()
                        .join("\n"),
                ),
            };
            state.redact(&text) != text
        });
        if body_secret {
            let message = format!(
                "Not following the redirect ({}) from `{}` to `{}`: the request's body holds one of the connection's secrets",
                resp.status,
                host_port(&from.url).unwrap_or_default(),
                host_port(&next.url).unwrap_or_default()
            );
            state.push_log(LogEntry::internal(LogLevel::Warn, message));
            return Ok(Answer { resp, foreign });
        }
        if hops == MAX_REDIRECTS {
            return Err(nango_error(
                "script_network_error",
                format!(
                    "{TOO_MANY_REDIRECTS}: Maximum number of redirects exceeded ({MAX_REDIRECTS} to other origins followed; the next, a {}, was to `{}`)",
                    resp.status,
                    host_port(&next.url).unwrap_or_default()
                ),
            ));
        }
        if let Err(e) = egress_check(&next.url, to.provider_host, to.allowed) {
            // Answered as it came (the caller may follow it itself), with
            // the reason in the logs.
            let message = format!(
                "Not following the redirect ({}) from `{}`: {}",
                resp.status,
                host_port(&from.url).unwrap_or_default(),
                e.message
            );
            state.push_log(LogEntry::internal(LogLevel::Warn, message));
            return Ok(Answer { resp, foreign });
        }
        hops += 1;
        next.public_only = to.provider_host.public_only(&next.url, to.allowed);
        // The redirect's own body is not kept while the next is read.
        resp.body = Vec::new();
        let started = Instant::now();
        let outcome = services.upstream.transmit(&next, max_response_bytes).await;
        log_http(
            state,
            &next,
            outcome.as_ref().ok().map(|r| r.status),
            started.elapsed(),
        );
        resp = outcome?;
        current = Some(next);
    }
}

/// The request a redirect to another origin asks for: `None` when `resp`
/// is not a redirect, names no usable `Location`, or stays in `from`'s
/// origin (the client follows those itself, so one that comes back
/// reached its limit). `secret` tells a value holding a connection's
/// secret.
fn redirect_target(
    from: &Prepared,
    resp: &Response,
    secret: impl Fn(&str) -> bool,
) -> Option<Prepared> {
    if !matches!(resp.status, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = header(resp, "location")?;
    let target = from.url.join(location.trim()).ok()?;
    if !matches!(target.scheme(), "http" | "https") || !target.has_host() {
        return None;
    }
    let same_origin = from.url.host_str() == target.host_str()
        && ((from.url.scheme() == target.scheme()
            && from.url.port_or_known_default() == target.port_or_known_default())
            // http to https on the default ports, as the client's policy.
            || (from.url.scheme() == "http"
                && from.url.port().is_none()
                && target.scheme() == "https"
                && target.port().is_none()));
    if same_origin {
        return None;
    }
    let to_get = resp.status == 303 && from.method != Method::Get
        || matches!(resp.status, 301 | 302) && from.method == Method::Post;
    // Only what says how to read or send the request goes on: a header
    // the script or the provider set may carry a credential in any form.
    let safe = |name: &str| {
        matches!(name, "user-agent" | "range")
            || name.starts_with("accept")
            || name.starts_with("if-")
            || (name.starts_with("content-") && !to_get)
    };
    let headers = from
        .headers
        .iter()
        .filter(|(name, value)| safe(name) && !secret(value))
        .cloned()
        .collect();
    let mut url = target;
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, value)| !from.credential_query.iter().any(|c| c == name) && !secret(value))
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect();
    if kept.len() != url.query_pairs().count() {
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(&kept);
        }
    }
    Some(Prepared {
        method: if to_get { Method::Get } else { from.method },
        url,
        headers,
        body: if to_get { None } else { from.body.clone() },
        public_only: false,
        fetch: from.fetch,
        credential_query: from.credential_query.clone(),
    })
}

/// A connection whose credentials could not be refreshed answers as the
/// upstream would: HTTP 401, so the script sees a `script_http_error`.
fn unauthorized_when_refused(e: NangoError) -> HttpError {
    if e.code != INVALID_CREDENTIALS {
        return HttpError::Failed(e);
    }
    let body = serde_json::json!({ "error": { "code": e.code, "message": e.message } });
    HttpError::Status(Response {
        status: 401,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
    })
}

/// The code of a connection whose credentials are invalid and could not be
/// refreshed (`ConnectionError::Refused`).
pub const INVALID_CREDENTIALS: &str = "invalid_credentials";

/// axios's default `Accept`.
const AXIOS_ACCEPT: &str = "application/json, text/plain, */*";

/// One attempt on the wire.
pub(crate) async fn transmit(
    http: &reqwest::Client,
    redirect: Option<&Url>,
    max_response_bytes: usize,
    p: &Prepared,
) -> Result<Response, NangoError> {
    let mut url = p.url.clone();
    if let Some(redirect) = redirect {
        let _ = url.set_scheme(redirect.scheme());
        let _ = url.set_host(redirect.host_str());
        let _ = url.set_port(redirect.port_or_known_default());
    }
    let method = reqwest::Method::from_bytes(method_name(p.method).as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let mut builder = http.request(method, url);
    let has_content_type = p.headers.iter().any(|(n, _)| n == "content-type");
    let multipart = matches!(p.body, Some(Body::Multipart(_)));
    // What the original's axios sends when the script does not say: its
    // `Accept`, and a form content type on a POST, PUT or PATCH whose body
    // is not JSON (none, text or bytes). Some APIs answer by them (XML
    // unless JSON is accepted). `uncontrolledFetch` is fetch: `*/*`, and
    // the content type the SDK gave from the body's type or none.
    if !p.headers.iter().any(|(n, _)| n == "accept") {
        builder = builder.header("accept", if p.fetch { "*/*" } else { AXIOS_ACCEPT });
    }
    if !has_content_type
        && !p.fetch
        && matches!(p.method, Method::Post | Method::Put | Method::Patch)
        && matches!(p.body, None | Some(Body::Text(_) | Body::Bytes(_)))
    {
        builder = builder.header("content-type", "application/x-www-form-urlencoded");
    }
    for (name, value) in &p.headers {
        // A script's `content-type: multipart/form-data` has no boundary;
        // reqwest sets the real one.
        if multipart && name == "content-type" {
            continue;
        }
        builder = builder.header(name, value);
    }
    builder = match &p.body {
        None => builder,
        Some(Body::Json(text)) => {
            if !has_content_type {
                builder = builder.header("content-type", "application/json");
            }
            let form = p.headers.iter().any(|(n, v)| {
                n == "content-type"
                    && v.to_ascii_lowercase()
                        .contains("application/x-www-form-urlencoded")
            });
            match serde_json::from_slice::<Value>(text) {
                Ok(Value::Object(data)) if form => builder.body(form_encoded(&data)),
                _ => builder.body(text.clone()),
            }
        }
        Some(Body::Text(text)) => builder.body(text.clone()),
        Some(Body::Bytes(bytes)) => builder.body(bytes.clone()),
        Some(Body::Multipart(fields)) => {
            let mut form = reqwest::multipart::Form::new();
            for (k, v) in fields {
                form = form.text(k.clone(), v.clone());
            }
            builder.multipart(form)
        }
    };
    receive(builder.send().await, max_response_bytes).await
}

/// An object as axios encodes a form-urlencoded request's data (its
/// `toFormData`): nested keys in brackets (`a[b]=c`, arrays by index), a
/// top-level array of plain values as `key[]` (a key's own trailing `[]`
/// dropped first), a `key{}` as its JSON, null left out at every level;
/// spaces as `+`, as `URLSearchParams` writes them.
pub(crate) fn form_encoded(data: &serde_json::Map<String, Value>) -> String {
    fn strip(k: &str) -> &str {
        k.strip_suffix("[]").unwrap_or(k)
    }
    fn plain(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    fn visit(
        out: &mut url::form_urlencoded::Serializer<'_, String>,
        value: &Value,
        key: &str,
        path: Option<&[String]>,
    ) {
        match value {
            Value::Null => {}
            Value::Array(items) if path.is_none() && key.ends_with("{}") => {
                out.append_pair(key, &Value::Array(items.clone()).to_string());
            }
            Value::Object(m) if path.is_none() && key.ends_with("{}") => {
                out.append_pair(key, &Value::Object(m.clone()).to_string());
            }
            Value::Array(items)
                if path.is_none() && !items.iter().any(|v| v.is_object() || v.is_array()) =>
            {
                let name = format!("{}[]", strip(key));
                for item in items.iter().filter(|v| !v.is_null()) {
                    out.append_pair(&name, &plain(item));
                }
            }
            Value::Array(_) | Value::Object(_) => {
                let mut at: Vec<String> = path.map(<[String]>::to_vec).unwrap_or_default();
                at.push(key.to_string());
                let children: Vec<(String, &Value)> = match value {
                    Value::Array(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i.to_string(), v))
                        .collect(),
                    Value::Object(m) => m.iter().map(|(k, v)| (k.trim().to_string(), v)).collect(),
                    _ => Vec::new(),
                };
                for (k, v) in children {
                    visit(out, v, &k, Some(&at));
                }
            }
            leaf => {
                let mut name = String::new();
                for (i, token) in path
                    .unwrap_or(&[])
                    .iter()
                    .chain([&key.to_string()])
                    .enumerate()
                {
                    if i == 0 {
                        name.push_str(strip(token));
                    } else {
                        name.push('[');
                        name.push_str(strip(token));
                        name.push(']');
                    }
                }
                out.append_pair(&name, &plain(leaf));
            }
        }
    }
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in data {
        visit(&mut out, v, k.trim(), None);
    }
    out.finish()
}

/// The code a failed TLS handshake gets (a certificate refused, a peer
/// that does not speak TLS): such a request is not tried again.
const TLS_FAILURE: &str = "EPROTO";

/// How rustls words a failed handshake, in a connection error's chain.
const TLS_FAILURES: &[&str] = &[
    "invalid peer certificate",
    "received corrupt message",
    "received fatal alert",
    "peer is incompatible",
    "peer misbehaved",
    "peer sent no certificates",
];

fn network_error(e: reqwest::Error) -> NangoError {
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = source {
        if let Some(NotPublicAddress(host)) = s.downcast_ref::<NotPublicAddress>() {
            return nango_error(
                "egress_denied",
                format!(
                    "requests to host `{host}` are not allowed: the connection's configuration chose it, and it resolves to no public address (loopback, private, link-local…); only the environment's allowed_hosts may name such a host"
                ),
            );
        }
        source = s.source();
    }
    // The URL without its query: a query can carry a key (an API key
    // sent as `?api_key=`), and the message reaches the script, the logs
    // and the app's webhooks.
    let url = e.url().map(|u| {
        let mut shown = u.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        match u.query() {
            Some(_) => format!("{shown}?…"),
            None => shown.to_string(),
        }
    });
    let e = e.without_url();
    let mut source: &dyn std::error::Error = &e;
    let mut message = match url {
        Some(url) => format!("{e} for url ({url})"),
        None => e.to_string(),
    };
    while let Some(s) = source.source() {
        message = format!("{message}: {s}");
        source = s;
    }
    let kind = if e.is_timeout() {
        "ETIMEDOUT"
    } else if TLS_FAILURES.iter().any(|t| message.contains(t)) {
        // Node's code for a TLS failure: not a network blip, and not
        // retried (the original's retries leave it out too).
        TLS_FAILURE
    } else if e.is_connect() && message.contains("dns error") {
        // Node's code for a name that does not resolve.
        "ENOTFOUND"
    } else if e.is_connect() {
        "ECONNREFUSED"
    } else {
        "ECONNRESET"
    };
    nango_error("script_network_error", format!("{kind}: {message}"))
}

async fn receive(
    sent: Result<reqwest::Response, reqwest::Error>,
    max: usize,
) -> Result<Response, NangoError> {
    let mut resp = sent.map_err(network_error)?;
    let status = resp.status().as_u16();
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in resp.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        // Cookies cannot be joined (an `Expires` date has a comma).
        if name == reqwest::header::SET_COOKIE {
            headers.push((name.as_str().to_string(), value));
            continue;
        }
        match headers.iter_mut().find(|(n, _)| n == name.as_str()) {
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(&value);
            }
            None => headers.push((name.as_str().to_string(), value)),
        }
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(network_error)? {
        if body.len() + chunk.len() > max {
            return Err(nango_error(
                "response_too_large",
                format!("the upstream response is larger than the limit of {max} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// An `http` log line for one attempt, credentials scrubbed.
fn log_http<S: Sender>(state: &mut S, p: &Prepared, status: Option<u16>, elapsed: Duration) {
    let url = state.redact(&shown_url(&p.url));
    // Cut after the redaction: a secret across the cut leaves nothing.
    let url = if url.len() > 2048 {
        format!("{}…", prefix(&url, 2048))
    } else {
        url
    };
    let outcome = status.map_or_else(|| "no response".to_string(), |s| s.to_string());
    let level = match status {
        Some(s) if s < 400 => LogLevel::Info,
        _ => LogLevel::Warn,
    };
    state.push_log(LogEntry {
        at: chrono::Utc::now(),
        level,
        source: LogSource::Internal,
        message: format!(
            "{} {url} -> {outcome} ({}ms)",
            method_name(p.method),
            elapsed.as_millis()
        ),
        meta: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth1_requests_are_signed_as_rfc_5849_says() {
        // From an independent RFC 5849 signer (Python's hmac over the same
        // base string): the query read as a form, `+` a space.
        let url = Url::parse("https://api.trello.com/1/members/me?fields=all&x=a+b").unwrap();
        let o = OAuth1 {
            method: "get",
            url: &url,
            consumer: ("ck", "c secret"),
            token: ("tok", "t&secret"),
            signature_method: "HMAC-SHA1",
            realm: None,
            nonce: "n0nce",
            timestamp: 1_700_000_000,
            params: &[],
        };
        assert_eq!(
            oauth1_authorization(&o).as_deref(),
            Some(
                "OAuth oauth_consumer_key=\"ck\", oauth_nonce=\"n0nce\", oauth_signature=\"%2FzxSbaqG9f8EZ7La1g7nT60Gt0c%3D\", oauth_signature_method=\"HMAC-SHA1\", oauth_timestamp=\"1700000000\", oauth_token=\"tok\", oauth_version=\"1.0\""
            )
        );
        // PLAINTEXT (SmugMug's): the secrets themselves.
        let plain = oauth1_authorization(&OAuth1 {
            signature_method: "PLAINTEXT",
            ..o
        })
        .unwrap();
        assert!(
            plain.contains("oauth_signature=\"c%2520secret%26t%2526secret\""),
            "{plain}"
        );
        assert!(
            oauth1_authorization(&OAuth1 {
                signature_method: "RSA-SHA1",
                ..o
            })
            .is_none()
        );
    }

    /// The signature checked against an independent computation of OAuth
    /// 1.0a HMAC-SHA256 (Python's `hmac`, `urllib.parse.quote` with `-._~`
    /// safe) for the same inputs: the query `limit=2`, `q=name IS "A B"`.
    #[test]
    fn a_tba_request_is_signed_as_netsuite_checks_it() {
        let c = |creds: Value, config: Value| -> Connection {
            serde_json::from_value(serde_json::json!({
                "connection_id": "c", "provider_config_key": "netsuite", "provider": "netsuite-tba",
                "credentials": creds, "connection_config": config,
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let connection = c(
            serde_json::json!({"type": "TBA", "token_id": "tid", "token_secret": "ts",
                "config_override": {"client_id": "ck", "client_secret": "cs"}}),
            serde_json::json!({"accountId": "123456-sb1"}),
        );
        let url = Url::parse(
            "https://123456-sb1.suitetalk.api.netsuite.com/services/rest/record/v1/customer?limit=2&q=name+IS%20%22A+B%22",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            tba_header("get", &url, &connection, "abc123", 1_700_000_000).as_deref(),
            Some(
                "OAuth realm=\"123456_SB1\", oauth_consumer_key=\"ck\", oauth_nonce=\"abc123\", oauth_signature=\"s3jC%2BlDujHy%2BBWylZA5QfQ09j0JYmLH2Nvv95%2BEwhsI%3D\", oauth_signature_method=\"HMAC-SHA256\", oauth_timestamp=\"1700000000\", oauth_token=\"tid\", oauth_version=\"1.0\""
            )
        );
        // The consumer from the connection's configuration instead.
        let from_config = c(
            serde_json::json!({"type": "TBA", "token_id": "tid", "token_secret": "ts"}),
            serde_json::json!({"accountId": "123456-sb1", "oauth_client_id": "ck", "oauth_client_secret": "cs"}),
        );
        assert_eq!(
            tba_header("GET", &url, &from_config, "abc123", 1_700_000_000),
            tba_header("GET", &url, &connection, "abc123", 1_700_000_000)
        );
        // A `%` that starts no escape is signed as itself, not dropped.
        let odd = Url::parse("https://x.example/p?a=100%&b=%zz").unwrap_or_else(|e| panic!("{e}"));
        assert!(tba_header("GET", &odd, &connection, "n", 1).is_some());
        assert_eq!(form_decode("a+b%20c%2Bd%"), "a b c+d%");
        // Without a consumer, no header (and no panic).
        let without = c(
            serde_json::json!({"type": "TBA", "token_id": "tid", "token_secret": "ts"}),
            serde_json::json!({"accountId": "1"}),
        );
        assert_eq!(tba_header("GET", &url, &without, "n", 1), None);
    }

    #[test]
    fn a_redirect_to_another_origin_leaves_the_credentials_behind() {
        let from = Prepared {
            method: Method::Post,
            url: Url::parse("https://api.box.com/2.0/files/1/content?api_key=k1").unwrap(),
            headers: vec![
                ("authorization".into(), "Bearer tok".into()),
                ("cookie".into(), "s=1".into()),
                ("x-api-key".into(), "k1".into()),
                ("x-mine".into(), "kept".into()),
                ("x-carried".into(), "token tok".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: Some(Body::Json(b"{}".to_vec())),
            public_only: false,
            fetch: false,
            credential_query: vec!["api_key".into()],
        };
        let secret = |v: &str| v.contains("tok");
        let redirect = |status: u16, location: &str| Response {
            status,
            headers: vec![("location".into(), location.into())],
            body: vec![],
        };
        let next = redirect_target(
            &from,
            &redirect(307, "https://dl.boxcloud.com/d/1?sig=abc&api_key=k1&t=tok"),
            secret,
        )
        .unwrap();
        assert_eq!(next.url.as_str(), "https://dl.boxcloud.com/d/1?sig=abc");
        assert_eq!(next.method, Method::Post, "a 307 keeps the method");
        assert!(next.body.is_some(), "and the body");
        let names: Vec<&str> = next.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["content-type"],
            "only what says how to read or send it"
        );

        // A 303, or a 302 after a POST, is a GET without the body.
        for status in [302, 303] {
            let next =
                redirect_target(&from, &redirect(status, "//dl.boxcloud.com/d/1"), secret).unwrap();
            assert_eq!(next.url.as_str(), "https://dl.boxcloud.com/d/1");
            assert_eq!((next.method, next.body.is_none()), (Method::Get, true));
            assert!(next.headers.iter().all(|(n, _)| n != "content-type"));
        }

        // Within the origin, the client follows (one that comes back
        // reached its limit); anything else is no redirect.
        for (status, location) in [
            (302, "/2.0/files/1/other"),
            (302, "https://api.box.com:443/x"),
            (304, "https://dl.boxcloud.com/d/1"),
            (302, "ftp://dl.boxcloud.com/d/1"),
            (302, "http://[::1"),
        ] {
            assert!(
                redirect_target(&from, &redirect(status, location), secret).is_none(),
                "{status} {location}"
            );
        }
        let without_location = Response {
            status: 302,
            headers: vec![],
            body: vec![],
        };
        assert!(redirect_target(&from, &without_location, secret).is_none());
    }

    #[test]
    fn form_bodies_are_encoded_as_axios_does() {
        let data = serde_json::json!({
            "a b": "c&d", "n": 1, "t": true, "nil": null,
            "list": [1, null, "x y"], "ids[]": [3],
            "nested": {"k": [1, {"z": 2}], "none": null},
            "meta{}": {"j": 1}
        });
        let Value::Object(m) = data else {
            unreachable!()
        };
        assert_eq!(
            form_encoded(&m),
            "a+b=c%26d&n=1&t=true&list%5B%5D=1&list%5B%5D=x+y&ids%5B%5D=3\
             &nested%5Bk%5D%5B0%5D=1&nested%5Bk%5D%5B1%5D%5Bz%5D=2&meta%7B%7D=%7B%22j%22%3A1%7D"
        );
    }

    #[test]
    fn a_secret_is_redacted_as_a_url_carries_it_too() {
        let c: Connection = serde_json::from_value(serde_json::json!({
            "connection_id": "c", "provider_config_key": "p", "provider": "p",
            "credentials": {"type": "API_KEY", "apiKey": "Sk+SECRET/key= é"}
        }))
        .unwrap();
        let mut secrets = Secrets::default();
        note_secrets(&mut secrets, &c);
        let mut url = Url::parse("https://a.com/x").unwrap();
        set_query(&mut url, &[("api_key".into(), "Sk+SECRET/key= é".into())]);
        assert_eq!(
            redact(&secrets, url.as_str()),
            "https://a.com/x?api_key=***"
        );
        assert_eq!(
            redact(
                &secrets,
                "/k/Sk%2BSECRET%2Fkey%3D%20%C3%A9/v and Sk+SECRET/key= é"
            ),
            "/k/***/v and ***"
        );
        // In a path, as the URL parser leaves it; and as a script's
        // `encodeURIComponent` writes it.
        let url = Url::parse("https://a.com/bot/Sk+SECRET/key= é/x").unwrap();
        assert_eq!(redact(&secrets, url.as_str()), "https://a.com/bot/***/x");
        let c: Connection = serde_json::from_value(serde_json::json!({
            "connection_id": "c", "provider_config_key": "p", "provider": "p",
            "credentials": {"type": "API_KEY", "apiKey": "ab!c/d(e)"}
        }))
        .unwrap();
        note_secrets(&mut secrets, &c);
        assert_eq!(redact(&secrets, "?k=ab!c%2Fd(e)"), "?k=***");
        // As a JSON text may escape it; and a secret inside a longer one
        // leaves no piece of the longer one.
        assert_eq!(redact(&secrets, r#"{"k":"ab!c\/d(e)"}"#), r#"{"k":"***"}"#);
        assert_eq!(
            redact_values("token abcdefgh and abcd", ["abcd", "abcdefgh"]),
            "token *** and ***"
        );
        // A JSON string's escapes of a quote and a backslash.
        assert_eq!(
            redact_values(r#"{"s":"se\"cr\\et"}"#, [r#"se"cr\et"#]),
            r#"{"s":"***"}"#
        );
        // A connection whose every value is a secret (TWO_STEP): thousands,
        // each found, a nested action's added to its caller's.
        let values: Vec<String> = (0..2_000).map(|i| format!("value-{i:05}")).collect();
        let c: Connection = serde_json::from_value(serde_json::json!({
            "connection_id": "c", "provider_config_key": "p", "provider": "p",
            "credentials": {"type": "TWO_STEP", "k": values}
        }))
        .unwrap();
        let mut many = Secrets::default();
        note_secrets(&mut many, &c);
        let text: String = (0..2_000)
            .rev()
            .map(|i| format!("[value-{i:05}]"))
            .collect();
        assert_eq!(many.redact(&text), "[***]".repeat(2_000));
        let mut caller = Secrets::default();
        caller.extend(&many);
        assert_eq!(caller.redact("x value-01999 y"), "x *** y");
    }

    #[test]
    fn a_logged_url_shows_no_user_or_password() {
        let url = Url::parse("https://admin:s3cret@api.example.com/x?a=1").unwrap();
        assert_eq!(shown_url(&url), "https://***@api.example.com/x?a=1");
        let url = Url::parse("https://api.example.com/x").unwrap();
        assert_eq!(shown_url(&url), "https://api.example.com/x");
    }

    #[test]
    fn url_joining_follows_the_original() {
        assert_eq!(join_url("https://a.com/", "/x/y"), "https://a.com/x/y");
        assert_eq!(join_url("https://a.com", "x"), "https://a.com/x");
        assert_eq!(
            join_url("https://a.com/v1", "https://a.com/v1/x"),
            "https://a.com/v1/x"
        );
    }

    #[test]
    fn query_set_replaces() {
        let mut url = Url::parse("https://a.com/x?a=1&b=2").unwrap();
        set_query(
            &mut url,
            &[("a".into(), "9".into()), ("c".into(), "3".into())],
        );
        assert_eq!(url.query(), Some("a=9&b=2&c=3"));
        // As URLSearchParams.set: the first of a repeated name takes the
        // value, the others go; a name set twice keeps the last value.
        let mut url = Url::parse("https://a.com/x?a=1&b=2&a=3&c=4&a=5").unwrap();
        set_query(
            &mut url,
            &[
                ("a".into(), "x".into()),
                ("d".into(), "1".into()),
                ("d".into(), "2".into()),
            ],
        );
        assert_eq!(url.query(), Some("a=x&b=2&c=4&d=2"));
        // Many names cost in proportion (this took minutes when each name
        // was looked for in a list).
        let pairs: Vec<(String, String)> = (0..200_000)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        let mut url = Url::parse("https://a.com/x").unwrap();
        set_query(&mut url, &pairs);
        assert!(url.as_str().ends_with("&k199999="));
    }

    /// Another host of the provider's registrable domain is the provider's
    /// too (over https on 443), as templates call it with
    /// `baseUrlOverride`; not a host of another domain, nor one under a
    /// shared-hosting suffix, nor for a host a connection chose.
    #[test]
    fn egress_takes_the_providers_other_hosts() {
        let own = |base: &str| ProviderHost::Own(host_port(&Url::parse(base).unwrap()).unwrap());
        let url = |u: &str| Url::parse(u).unwrap();
        let amplitude = own("https://amplitude.com/api");
        assert!(egress_allowed(
            &url("https://api2.amplitude.com/2/httpapi"),
            &amplitude,
            &[]
        ));
        assert!(amplitude.public_only(&url("https://api2.amplitude.com/x"), &[]));
        assert!(!amplitude.public_only(&url("https://amplitude.com/x"), &[]));
        let box_api = own("https://api.box.com/2.0");
        assert!(egress_allowed(
            &url("https://upload.box.com/api/2.0/files"),
            &box_api,
            &[]
        ));
        // Over http, or on another port: no.
        assert!(!egress_allowed(
            &url("http://upload.box.com/x"),
            &box_api,
            &[]
        ));
        assert!(!egress_allowed(
            &url("https://upload.box.com:8443/x"),
            &box_api,
            &[]
        ));
        // Another domain, a look-alike, a public suffix itself: no.
        for other in [
            "https://box.com.evil.io/x",
            "https://evilbox.com/x",
            "https://co.uk/x",
        ] {
            assert!(!egress_allowed(&url(other), &box_api, &[]), "{other}");
        }
        let uk = own("https://api.shop.co.uk/v1");
        assert!(egress_allowed(&url("https://files.shop.co.uk/x"), &uk, &[]));
        assert!(!egress_allowed(&url("https://other.co.uk/x"), &uk, &[]));
        // Shared hosting: each customer's name is its own domain.
        let heroku = own("https://tenant-a.herokuapp.com/api");
        assert!(!egress_allowed(
            &url("https://tenant-b.herokuapp.com/api"),
            &heroku,
            &[]
        ));
        // A host a connection chose keeps to that host.
        let chosen = ProviderHost::Chosen("acme.zendesk.com:443".into());
        assert!(!egress_allowed(
            &url("https://other.zendesk.com/api"),
            &chosen,
            &[]
        ));
        // An address is no domain.
        let ip = own("https://10.0.0.1/api");
        assert!(!egress_allowed(&url("https://10.0.0.2/api"), &ip, &[]));
    }

    #[test]
    fn egress_allowlist() {
        let url = Url::parse("https://api.x.com/v").unwrap();
        let own =
            ProviderHost::Own(host_port(&Url::parse("https://api.x.com/base").unwrap()).unwrap());
        assert!(egress_allowed(&url, &own, &[]));
        assert!(!egress_allowed(
            &url,
            &ProviderHost::Own("y.com:443".into()),
            &[]
        ));
        // Another port or scheme of the provider's host is not the provider.
        for other in ["http://api.x.com/v", "https://api.x.com:6379/v"] {
            let other = Url::parse(other).unwrap();
            assert!(!egress_allowed(&other, &own, &[]), "{other}");
        }
        assert!(egress_allowed(
            &url,
            &ProviderHost::None,
            &["*.x.com".into()]
        ));
        assert!(!egress_allowed(
            &url,
            &ProviderHost::None,
            &["x.com".into()]
        ));
        let local = Url::parse("http://127.0.0.1:8080/").unwrap();
        assert!(egress_allowed(
            &local,
            &ProviderHost::Own("127.0.0.1:8080".into()),
            &[]
        ));
        assert!(!egress_allowed(
            &local,
            &ProviderHost::Own("127.0.0.1:9090".into()),
            &[]
        ));
        // A non-public host a connection's value chose: only the allowlist.
        let chosen = ProviderHost::NotPublic("127.0.0.1:8080".into());
        assert!(!egress_allowed(&local, &chosen, &[]));
        assert!(egress_allowed(&local, &chosen, &["127.0.0.1:8080".into()]));
        let refused = egress_check(&local, &chosen, &[]).unwrap_err();
        assert_eq!(refused.code, "egress_denied");
        assert!(
            refused.message.contains("not a public address"),
            "{}",
            refused.message
        );
    }

    /// A lookup that sends every name to 127.0.0.1, as a name the
    /// connection chose might.
    fn to_loopback() -> Lookup {
        Arc::new(|_host: String| {
            Box::pin(async { Ok(vec![SocketAddr::from(([127, 0, 0, 1], 0))]) })
        })
    }

    /// A server that does not speak TLS, asked over https: `EPROTO`, as
    /// Node names it (it was `ECONNREFUSED`, and retried).
    #[tokio::test]
    async fn a_failed_tls_handshake_is_eproto() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let failed = default_client()
            .get(format!("https://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        let e = network_error(failed);
        assert_eq!(e.code, "script_network_error");
        assert!(e.message.starts_with("EPROTO: "), "{}", e.message);
    }

    #[tokio::test]
    async fn a_public_only_client_refuses_names_that_resolve_to_private_addresses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            }
        });
        let (plain, public_only) = clients_with_lookup(to_loopback());
        let url = format!("http://api.chosen.example:{port}/");
        // The name does lead to the listener...
        let answer = plain.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        // ...and a public-only client does not go there.
        let refused = public_only.get(&url).send().await.unwrap_err();
        let e = network_error(refused);
        assert_eq!(e.code, "egress_denied", "{}", e.message);
        assert!(e.message.contains("api.chosen.example"), "{}", e.message);
    }

    #[test]
    fn public_hosts() {
        for private in [
            "http://localhost/",
            "http://LOCALHOST./",
            "http://db.localhost/",
            "http://redis:6379/",
            "http://instance-data/latest/meta-data/",
            "http://metadata.google.internal/",
            "http://printer.local/",
            "http://api.default.svc.cluster.local/",
            "http://router.home.arpa/",
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0.0.0.0/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::a00:1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
        ] {
            assert!(!public_host(&Url::parse(private).unwrap()), "{private}");
        }
        for public in [
            "https://acme.zendesk.com/",
            "http://8.8.8.8/",
            "http://[2606:4700::1111]/",
            "http://[::ffff:8.8.8.8]/",
        ] {
            assert!(public_host(&Url::parse(public).unwrap()), "{public}");
        }
    }

    #[test]
    fn a_reset_time_past_what_a_clock_holds_is_no_wait_not_a_panic() {
        assert_eq!(wait_until("1e19"), None);
        assert_eq!(wait_until("not a date"), None);
        assert_eq!(wait_until("0"), Some(Duration::ZERO));
        let soon = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let wait = wait_until(&soon.to_string()).unwrap();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
    }

    #[test]
    fn body_retry_rule() {
        assert_eq!(
            capture_first_group(
                "User-rate limit exceeded\\. +Retry after (.+)",
                "User-rate limit exceeded.  Retry after 2024-01-01T00:00:00Z"
            )
            .as_deref(),
            Some("2024-01-01T00:00:00Z")
        );
        assert_eq!(capture_first_group("nope (.+)", "something"), None);
    }

    /// Params too long for a URL are refused before the request is made
    /// (as text or as an object), as `invalid_request`, which no retry
    /// repeats.
    #[test]
    fn params_longer_than_a_url_are_refused() {
        let provider = Provider {
            name: "p".into(),
            auth_mode: None,
            proxy: Default::default(),
            token_url: None,
            definition: Default::default(),
        };
        let connection: Connection = serde_json::from_value(serde_json::json!({
            "connection_id": "c", "provider_config_key": "p", "provider": "p",
            "credentials": {"type": "API_KEY", "apiKey": "k"},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let request = |params: Query| Request {
            method: Method::Get,
            endpoint: "/items".into(),
            headers: vec![],
            params: Some(params),
            data: None,
            retries: 3,
            retry_on: vec![],
            retry_header: None,
            base_url_override: Some("https://api.example.com".into()),
            decompress: false,
            provider_config_key: None,
            connection_id: None,
        };
        let long = "é".repeat(40_000);
        for params in [
            Query::Text(format!("q={long}")),
            Query::Text(format!("q={}", "a".repeat(70_000))),
            Query::Object(serde_json::json!({ "q": long }).to_string().into()),
        ] {
            match prepare(&request(params), &provider, &connection) {
                Err(HttpError::Failed(e)) => assert_eq!(e.code, "invalid_request", "{}", e.message),
                Err(other) => panic!("{other:?}"),
                Ok(p) => panic!("prepared a URL of {} bytes", p.url.as_str().len()),
            }
        }
        let ok = prepare(
            &request(Query::Text("q=a b".into())),
            &provider,
            &connection,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(ok.url.as_str(), "https://api.example.com/items?q=a%20b");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let req = Request {
            method: Method::Get,
            endpoint: "/".into(),
            headers: vec![],
            params: None,
            data: None,
            retries: 3,
            retry_on: vec![],
            retry_header: None,
            base_url_override: None,
            decompress: false,
            provider_config_key: None,
            connection_id: None,
        };
        let provider = Provider {
            name: "p".into(),
            auth_mode: None,
            proxy: Default::default(),
            token_url: None,
            definition: Default::default(),
        };
        let base = Duration::from_secs(3);
        let max = Duration::from_secs(600);
        assert_eq!(retry_wait(&req, &provider, None, 0, base, max), base);
        assert_eq!(retry_wait(&req, &provider, None, 2, base, max), base * 4);
        assert_eq!(retry_wait(&req, &provider, None, 30, base, max), max);
    }
}
