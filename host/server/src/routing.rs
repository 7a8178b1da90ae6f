//! Providers' incoming webhooks (§4.6): for each `webhook_routing_script`
//! of the providers catalogue, how its signature is checked and which
//! connections and webhook subscriptions a payload is for. Pure functions
//! over the request: the handler checks and stores, a worker routes.
//!
//! Where the original fails with a 500 on a malformed signature header (a
//! length mismatch thrown by `timingSafeEqual`), sluice answers 401; where
//! it computes a signature and ignores the result (Checkr), sluice refuses
//! a bad one when the integration has a webhook secret. Where it throws a
//! `NangoError` of a type its error table lacks (so a 500 `unhandled_…`)
//! for a request that names no connection or shop, sluice answers 400.
//!
//! The scripts beyond the first few are in `providers`, one function
//! each; `crypto` has SHA-1 and RSA signature verification, which the
//! server's dependencies lack.

mod crypto;
mod providers;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// The secrets an integration holds.
pub struct Secrets<'a> {
    pub webhook_secret: Option<&'a str>,
    pub oauth_client_id: Option<&'a str>,
    pub oauth_client_secret: Option<&'a str>,
    /// The metadata of the connection [`connection_to_read`] named, when
    /// that connection exists (`null` when it has none): GitLab's and
    /// PagerDuty's secrets are the connection's `metadata.webhookSecret`.
    pub connection_metadata: Option<&'a Value>,
}

/// The request as received.
pub struct Incoming<'a> {
    /// Lower-case names.
    pub headers: &'a [(String, String)],
    pub raw: &'a [u8],
    /// The body parsed (JSON, or a form as an object).
    pub body: &'a Value,
    pub content_type: &'a str,
    /// The query string of the webhook URL (without `?`): GitLab's,
    /// Cal.com's and Folk's `nangoConnectionId`, Microsoft Graph's
    /// `validationToken` (each script reads only the parameter the
    /// original's catalogue lets through to it).
    pub query: &'a str,
    /// When it was received, in seconds since the epoch (signatures with a
    /// timestamp are refused outside five minutes of it).
    pub now: i64,
}

impl Incoming<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header that is there and not empty (JavaScript's truthiness).
    fn header_set(&self, name: &str) -> Option<&str> {
        self.header(name).filter(|v| !v.is_empty())
    }

    /// A query parameter as the original's server passes it: not empty,
    /// repeated ones joined with `,` (`String` of the array).
    fn query_param(&self, name: &str) -> Option<String> {
        let values: Vec<String> = url::form_urlencoded::parse(self.query.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .collect();
        Some(values.join(",")).filter(|v| !v.is_empty())
    }
}

/// How to find the connections a payload is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Lookup {
    ConnectionId(String),
    /// A metadata key whose value is, or (an array) contains, the value.
    Metadata(String, String),
    /// A `connection_config` field whose value (as text) is the value.
    ConnectionConfig(String, String),
    /// Every connection of the integration: the original's
    /// `executeScriptForWebhooks` given neither an identifier path nor a
    /// value (JobDiva, Affinity, HighLevel without an id, Fathom without
    /// an email).
    All,
    /// These lookups (never `ConnectionId`) tried in turn: the connections
    /// of the first that finds any, as the original's fallbacks (Google
    /// Calendar, Google Drive, Gmail). See [`matching`].
    FirstOf(Vec<Lookup>),
}

/// One `executeScriptForWebhooks`: the script input, its type, and whose.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Route {
    pub input: Value,
    /// The type the subscriptions are compared with. Where the original
    /// has no type at all, the scripts of `providers` give `*`: the
    /// original then runs only the syncs subscribed to `*`.
    pub kind: Option<String>,
    /// The event a header names (GitHub's `x-github-event`, GitLab's
    /// `x-gitlab-event`), the original's `webhookHeaderValue`: a sync
    /// subscribed to it runs as one subscribed to the type does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_kind: Option<String>,
    pub lookup: Option<Lookup>,
}

impl Route {
    /// Whether a sync with these webhook subscriptions runs for this route:
    /// one naming its type, its header's event, or `*`.
    pub fn runs(&self, subscriptions: &[String]) -> bool {
        subscriptions.iter().any(|w| {
            w == "*" || self.kind.as_deref() == Some(w) || self.header_kind.as_deref() == Some(w)
        })
    }
}

/// What the handler answers and what happens after.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub status: u16,
    /// JSON, or text (Slack's challenge).
    pub response: Result<Value, String>,
    pub routes: Vec<Route>,
    /// What is forwarded to the app.
    pub forward: Value,
}

/// Why a webhook is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

fn missing() -> Refused {
    Refused {
        status: 401,
        code: "webhook_missing_signature",
        message: "Missing webhook signature".into(),
    }
}

fn invalid() -> Refused {
    Refused {
        status: 401,
        code: "webhook_invalid_signature",
        message: "Invalid webhook signature".into(),
    }
}

fn bad_body(message: &str) -> Refused {
    Refused {
        status: 400,
        code: "webhook_invalid_body",
        message: message.into(),
    }
}

fn missing_connection_id() -> Refused {
    Refused {
        status: 400,
        code: "webhook_missing_connection_id",
        message: "Webhook payload is missing nangoConnectionId".into(),
    }
}

fn missing_token() -> Refused {
    Refused {
        status: 401,
        code: "webhook_missing_token",
        message: "Missing webhook token".into(),
    }
}

/// The original's `webhook_missing_nango_connection_id` (a 500 there).
fn missing_nango_connection_id() -> Refused {
    Refused {
        status: 400,
        code: "webhook_missing_nango_connection_id",
        message: "Missing the x-nango-connection-id header".into(),
    }
}

/// The original's `webhook_missing_shop_domain` (a 500 there).
fn missing_shop_domain() -> Refused {
    Refused {
        status: 400,
        code: "webhook_missing_shop_domain",
        message: "Missing or invalid x-shopify-shop-domain header".into(),
    }
}

/// A connection's webhook secret that is not usable: the configuration is
/// at fault, not the request (a 500, as the original's).
fn invalid_secret(message: &str) -> Refused {
    Refused {
        status: 500,
        code: "webhook_invalid_secret",
        message: message.into(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn same(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A secret as the original tests it (`if (secret)`): there, not empty.
fn set(secret: Option<&str>) -> Option<&str> {
    secret.filter(|s| !s.is_empty())
}

/// JavaScript's truthiness of a value (`undefined` is `None`).
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

/// lodash `get` on a dotted path.
pub fn get<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |v, k| match v {
        Value::Object(m) => m.get(k),
        Value::Array(a) => a.get(k.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A value as the original compares it: strings as they are, numbers and
/// booleans as their text; nothing for empty, null, `0` or `false` (falsy).
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.as_f64() != Some(0.0) => Some(n.to_string()),
        Value::Bool(true) => Some("true".into()),
        _ => None,
    }
}

/// The type at a path of the input: a string only (the original compares
/// with `===`, so a number or a boolean matches no subscription).
fn kind_at(input: &Value, type_path: &str) -> Option<String> {
    get(input, type_path).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        _ => None,
    })
}

/// How the original finds connections by `propName` for a value.
fn lookup_for(prop: &str, value: String) -> Lookup {
    match prop {
        "connectionId" => Lookup::ConnectionId(value),
        p => match p.strip_prefix("metadata.") {
            Some(key) => Lookup::Metadata(key.to_string(), value),
            None => Lookup::ConnectionConfig(p.to_string(), value),
        },
    }
}

/// The lookup for the value at a path of the input (none without one).
fn lookup_at(input: &Value, id_path: &str, prop: Option<&str>) -> Option<Lookup> {
    text(get(input, id_path)).map(|v| lookup_for(prop.unwrap_or(id_path), v))
}

fn route(input: &Value, type_path: &str, id_path: &str, prop: Option<&str>) -> Route {
    Route {
        input: input.clone(),
        kind: kind_at(input, type_path),
        header_kind: None,
        lookup: lookup_at(input, id_path, prop),
    }
}

/// A route without a type made one of `*` (see [`Route::kind`]).
fn star(mut route: Route) -> Route {
    if route.kind.is_none() {
        route.kind = Some("*".into());
    }
    route
}

/// A route whose type (a value, not a path; empty is none) and lookup the
/// script found itself.
fn direct(input: &Value, kind: Option<String>, lookup: Option<Lookup>) -> Route {
    star(Route {
        input: input.clone(),
        kind: kind.filter(|k| !k.is_empty()),
        header_kind: None,
        lookup,
    })
}

/// One lookup, or several tried in turn, or none.
fn first_of(mut lookups: Vec<Lookup>) -> Option<Lookup> {
    match lookups.len() {
        0 => None,
        1 => lookups.pop(),
        _ => Some(Lookup::FirstOf(lookups)),
    }
}

fn ok(routes: Vec<Route>, forward: Value) -> Result<Routed, Refused> {
    Ok(Routed {
        status: 200,
        response: Ok(json!({"status": "success"})),
        routes,
        forward,
    })
}

/// Checks and routes a webhook for the provider's `script`; `None` when
/// sluice knows no such script (the original answers 204 then).
pub fn route_webhook(
    script: &str,
    req: &Incoming<'_>,
    secrets: &Secrets<'_>,
) -> Option<Result<Routed, Refused>> {
    let body = req.body;
    Some(match script {
        "unauthenticatedWebhookRouting" => ok(
            vec![route(body, "type", "connectionId", Some("connectionId"))],
            body.clone(),
        ),
        "linearWebhookRouting" => (|| {
            let sig = req.header("linear-signature").ok_or_else(missing)?;
            let secret = set(secrets.webhook_secret).ok_or_else(invalid)?;
            if !same(&hex(&hmac256(secret.as_bytes(), req.raw)), sig) {
                return Err(invalid());
            }
            ok(
                vec![route(body, "type", "organizationId", None)],
                body.clone(),
            )
        })(),
        "hubspotWebhookRouting" => (|| {
            let sig = req.header("x-hubspot-signature").ok_or_else(missing)?;
            // Without the client secret anyone could sign: refused.
            let secret = set(secrets.oauth_client_secret).ok_or_else(invalid)?;
            let mut h = Sha256::new();
            h.update(secret.as_bytes());
            h.update(req.raw);
            if !same(&hex(&h.finalize()), &sig.to_ascii_lowercase()) {
                return Err(invalid());
            }
            let routes = match body {
                Value::Array(events) => hubspot_order(events)
                    .into_iter()
                    .map(|e| route(e, "subscriptionType", "portalId", None))
                    .collect(),
                _ => vec![route(body, "subscriptionType", "portalId", None)],
            };
            ok(routes, body.clone())
        })(),
        "airtableWebhookRouting" => {
            let mut input = body.clone();
            if let Value::Object(m) = &mut input {
                m.insert("type".into(), json!("*"));
            }
            ok(
                vec![route(
                    &input,
                    "type",
                    "webhook.id",
                    Some("metadata.webhooks"),
                )],
                body.clone(),
            )
        }
        "calendlyWebhookRouting" => ok(
            vec![route(body, "event", "created_by", Some("owner"))],
            body.clone(),
        ),
        "checkrPartnerWebhookRouting" => (|| {
            let sig = req.header("x-checkr-signature").ok_or_else(missing)?;
            if let Some(secret) = set(secrets.webhook_secret)
                && !same(&hex(&hmac256(secret.as_bytes(), req.raw)), sig)
            {
                return Err(invalid());
            }
            ok(
                vec![route(body, "type", "account_id", Some("checkr_account_id"))],
                body.clone(),
            )
        })(),
        "githubAppWebhookRouting" | "githubAppOauthWebhookRouting" => (|| {
            // The original derives the secret from the app's settings and
            // lets an unsigned webhook through; sluice takes the
            // integration's webhook secret and, when there is one,
            // requires the signature.
            let sig = req.header("x-hub-signature-256");
            if set(secrets.webhook_secret).is_some() && sig.is_none() {
                return Err(missing());
            }
            if let Some(sig) = sig {
                let secret = set(secrets.webhook_secret).ok_or_else(invalid)?;
                let want = format!("sha256={}", hex(&hmac256(secret.as_bytes(), req.raw)));
                if !same(&want, sig) {
                    return Err(invalid());
                }
            }
            // The original gives no type, only the header's event.
            let mut r = route(body, "", "installation.id", Some("installation_id"));
            r.kind = None;
            r.header_kind = req.header("x-github-event").map(str::to_string);
            ok(vec![r], body.clone())
        })(),
        "jiraWebhookRouting" => {
            let events: Vec<&Value> = match body {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            ok(
                events
                    .into_iter()
                    .map(|e| {
                        route(
                            e,
                            "payload.webhookEvent",
                            "payload.user.accountId",
                            Some("accountId"),
                        )
                    })
                    .collect(),
                body.clone(),
            )
        }
        "microsoftTeamsWebhookRouting" => ok(
            vec![route(
                body,
                "type",
                "channelData.tenant.id",
                Some("tenantId"),
            )],
            body.clone(),
        ),
        "salesforceWebhookRouting" => ok(
            vec![route(
                body,
                "nango.eventType",
                "nango.connectionId",
                Some("connectionId"),
            )],
            body.clone(),
        ),
        "slackWebhookRouting" => (|| {
            let payload = if req
                .content_type
                .starts_with("application/x-www-form-urlencoded")
            {
                body.get("payload")
                    .and_then(Value::as_str)
                    .and_then(|p| serde_json::from_str(p).ok())
                    .unwrap_or_else(|| body.clone())
            } else {
                body.clone()
            };
            if payload["type"] == "url_verification" {
                return Ok(Routed {
                    status: 200,
                    response: Err(body["challenge"].as_str().unwrap_or("").to_string()),
                    routes: Vec::new(),
                    forward: body.clone(),
                });
            }
            let team = text(payload.get("team_id"))
                .or_else(|| text(get(&payload, "team.id")))
                .ok_or_else(|| {
                    bad_body("a Slack payload names no team (`team_id` or `team.id`)")
                })?;
            let mut input = payload.clone();
            if let Value::Object(m) = &mut input {
                m.insert("teamId".into(), json!(team));
            }
            ok(
                vec![route(&input, "type", "teamId", Some("team.id"))],
                payload,
            )
        })(),
        "xeroWebhookRouting" => (|| {
            let sig = req.header("x-xero-signature").ok_or_else(missing)?;
            let secret = set(secrets.webhook_secret).ok_or_else(invalid)?;
            let want = base64::engine::general_purpose::STANDARD
                .encode(hmac256(secret.as_bytes(), req.raw));
            if !same(&want, sig) {
                return Err(invalid());
            }
            let events = body["events"]
                .as_array()
                .ok_or_else(|| bad_body("a Xero payload has no `events` list"))?;
            ok(
                events
                    .iter()
                    .map(|e| route(e, "eventType", "tenantId", Some("tenant_id")))
                    .collect(),
                body.clone(),
            )
        })(),
        "shopifyWebhookRouting" => providers::shopify(req, secrets),
        "shipstationWebhookRouting" => providers::shipstation(req),
        "sellsyWebhookRouting" => providers::sellsy(req, secrets),
        "highlevelWebhookRouting" => providers::highlevel(req, secrets),
        "gitlabWebhookRouting" => providers::gitlab(req, secrets),
        "filloutWebhookRouting" => providers::fillout(req),
        "fathomWebhookRouting" => providers::fathom(req, secrets),
        "connectwisePsaWebhookRouting" => providers::connectwise_psa(req, secrets),
        "calComWebhookRouting" => providers::cal_com(req, secrets),
        "videoaskWebhookRouting" => providers::videoask(req, secrets),
        "streakWebhookRouting" => providers::streak(req),
        "sentryOauthWebhookRouting" => providers::sentry_oauth(req, secrets),
        "pagerdutyWebhookRouting" => providers::pagerduty(req, secrets),
        "notionWebhookRouting" => providers::notion(req, secrets),
        "microsoftClientCredentialsWebhookRouting" => {
            providers::microsoft_client_credentials(req, secrets)
        }
        "jobdivaWebhookRouting" => providers::jobdiva(req, secrets),
        "jobberWebhookRouting" => providers::jobber(req, secrets),
        "googleWebhookRouting" => providers::google(req),
        "googleDriveWebhookRouting" => providers::google_drive(req),
        "googleCalendarWebhookRouting" => providers::google_calendar(req),
        "gmailWebhookRouting" => providers::gmail(req),
        "folkWebhookRouting" => providers::folk(req, secrets),
        "autotaskWebhookRouting" => providers::autotask(req, secrets),
        "attioWebhookRouting" => providers::attio(req, secrets),
        "affinityWebhookRouting" => providers::affinity(req),
        _ => return None,
    })
}

/// The scripts whose signature check reads only the raw body, the
/// headers, the query and the integration's secrets, and comes before
/// anything the parsed body could refuse: [`check_before_parsing`] makes it
/// before the body is parsed. (Not GitLab's and PagerDuty's, keyed by a
/// connection the body may name; not ConnectWise's, keyed from the body;
/// not Notion's, which lets a verification body through unsigned; not
/// Sentry's, which also accepts a signature of the body re-serialised;
/// not Microsoft Graph's, whose secret is in each notification.)
const CHECKED_BEFORE_PARSING: [&str; 18] = [
    "linearWebhookRouting",
    "hubspotWebhookRouting",
    "checkrPartnerWebhookRouting",
    "githubAppWebhookRouting",
    "githubAppOauthWebhookRouting",
    "xeroWebhookRouting",
    "shopifyWebhookRouting",
    "sellsyWebhookRouting",
    "highlevelWebhookRouting",
    "fathomWebhookRouting",
    "calComWebhookRouting",
    "videoaskWebhookRouting",
    "jobdivaWebhookRouting",
    "jobberWebhookRouting",
    "folkWebhookRouting",
    "autotaskWebhookRouting",
    "attioWebhookRouting",
    "gmailWebhookRouting",
];

/// Checks a webhook's signature on its bytes, before its body is parsed
/// (`req.body` is not read: give `Value::Null`), for the scripts that can
/// ([`CHECKED_BEFORE_PARSING`]): a webhook with a bad signature is refused
/// for the cost of its bytes, never of its parse (a 30 MiB `[0,0,…]`
/// parses into over a gigabyte). `Ok` when it passes, or when the script
/// checks only once the body is parsed; [`route_webhook`] checks again.
pub fn check_before_parsing(
    script: &str,
    req: &Incoming<'_>,
    secrets: &Secrets<'_>,
) -> Result<(), Refused> {
    if !CHECKED_BEFORE_PARSING.contains(&script) {
        return Ok(());
    }
    let unparsed = Incoming {
        headers: req.headers,
        raw: req.raw,
        body: &Value::Null,
        content_type: req.content_type,
        query: req.query,
        now: req.now,
    };
    match route_webhook(script, &unparsed, secrets) {
        // What the signature (or the secret it needs) refuses; a refusal
        // of the (here absent) body is left to the real routing.
        Some(Err(refused))
            if matches!(
                refused.code,
                "webhook_missing_signature"
                    | "webhook_invalid_signature"
                    | "webhook_invalid_secret"
            ) =>
        {
            Err(refused)
        }
        _ => Ok(()),
    }
}

/// The most copies of the parsed body a script holds at once while it
/// routes (the body, the forward made of it, its routes' inputs): the
/// handler books memory for that many before parsing. Airtable's, Slack's
/// and Gmail's input is the body with a field added, copied again into
/// its route.
pub fn parsed_copies(script: &str) -> usize {
    match script {
        "airtableWebhookRouting" | "slackWebhookRouting" | "gmailWebhookRouting" => 4,
        _ => 3,
    }
}

/// The connection whose metadata a script's signature check needs (GitLab:
/// `nangoConnectionId`; PagerDuty: `x-nango-connection-id`): the handler
/// reads it and gives its metadata in [`Secrets::connection_metadata`].
pub fn connection_to_read(script: &str, req: &Incoming<'_>) -> Option<String> {
    match script {
        "gitlabWebhookRouting" => providers::gitlab_connection(req),
        "pagerdutyWebhookRouting" => providers::pagerduty_connection(req),
        _ => None,
    }
}

/// Whether a script takes a webhook with an empty body (read as `{}`):
/// Google's push notifications are all headers, and Microsoft Graph's
/// subscription validation is an empty POST with a `validationToken`.
/// Every other empty webhook is answered 204.
pub fn accepts_empty_body(script: &str) -> bool {
    matches!(
        script,
        "googleWebhookRouting"
            | "googleDriveWebhookRouting"
            | "googleCalendarWebhookRouting"
            | "microsoftClientCredentialsWebhookRouting"
    )
}

/// HubSpot events grouped by object (integer ids ascending, then the
/// others in order of appearance), creations first, then by time.
fn hubspot_order(events: &[Value]) -> Vec<&Value> {
    let mut groups: Vec<(String, Vec<&Value>)> = Vec::new();
    // Each object's group, found by its key (not by a scan of the groups:
    // a batch of thousands of objects would cost their square).
    let mut group_of: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for e in events {
        let key = match &e["objectId"] {
            Value::String(s) => s.clone(),
            Value::Null => "undefined".into(),
            other => other.to_string(),
        };
        match group_of.get(&key) {
            Some(&i) => groups[i].1.push(e),
            None => {
                group_of.insert(key.clone(), groups.len());
                groups.push((key, vec![e]));
            }
        }
    }
    let index = |k: &str| {
        k.parse::<u64>()
            .ok()
            .filter(|n| *n <= 4_294_967_294 && n.to_string() == k)
    };
    let (mut ints, others): (Vec<_>, Vec<_>) =
        groups.into_iter().partition(|(k, _)| index(k).is_some());
    ints.sort_by_key(|(k, _)| index(k));
    ints.into_iter()
        .chain(others)
        .flat_map(|(_, mut g)| {
            g.sort_by_key(|e| {
                let creation = e["subscriptionType"]
                    .as_str()
                    .is_some_and(|t| t.ends_with(".creation"));
                (!creation, e["occurredAt"].as_i64().unwrap_or(0))
            });
            g
        })
        .collect()
}

/// Which connections a webhook's lookups find, fed the integration's
/// connections one at a time in connection id order, keeping only the
/// ids that match (so an integration's connections are never all in
/// memory). `ConnectionId` lookups are not its business: the caller reads
/// the one connection.
pub struct Matcher<'a> {
    /// Each lookup matched on its own: a `FirstOf`'s steps one by one, so
    /// the first step finding any can be chosen at the end.
    steps: Vec<&'a Lookup>,
    index: std::collections::HashMap<&'a Lookup, usize>,
    ids: Vec<Vec<String>>,
}

impl<'a> Matcher<'a> {
    pub fn new(lookups: impl IntoIterator<Item = &'a Lookup>) -> Self {
        let mut m = Matcher {
            steps: Vec::new(),
            index: std::collections::HashMap::new(),
            ids: Vec::new(),
        };
        let add = |m: &mut Matcher<'a>, l: &'a Lookup| {
            if !m.index.contains_key(l) {
                m.index.insert(l, m.steps.len());
                m.steps.push(l);
                m.ids.push(Vec::new());
            }
        };
        for lookup in lookups {
            match lookup {
                Lookup::ConnectionId(_) => {}
                Lookup::FirstOf(list) => list.iter().for_each(|l| add(&mut m, l)),
                other => add(&mut m, other),
            }
        }
        m
    }

    /// Whether there is nothing to match (no connection need be read).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Notes the next connection.
    pub fn see(&mut self, c: &sluice_runtime::connection::Connection) {
        for (step, ids) in self.steps.iter().zip(self.ids.iter_mut()) {
            if matches(step, &c.metadata, &c.connection_config) {
                ids.push(c.connection_id.clone());
            }
        }
    }

    /// The ids a lookup given to [`Matcher::new`] found, in order; for
    /// `FirstOf`, those of its first step that finds any.
    pub fn found(&self, lookup: &Lookup) -> Vec<String> {
        let of = |l: &Lookup| {
            self.index
                .get(l)
                .map(|&i| self.ids[i].clone())
                .unwrap_or_default()
        };
        match lookup {
            Lookup::FirstOf(list) => list
                .iter()
                .map(of)
                .find(|ids| !ids.is_empty())
                .unwrap_or_default(),
            other => of(other),
        }
    }
}

/// Whether a connection matches a lookup (metadata and configuration as
/// stored).
pub fn matches(lookup: &Lookup, metadata: &Value, config: &Map<String, Value>) -> bool {
    let eq = |v: &Value, want: &str| match v {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => b.to_string() == want,
        _ => false,
    };
    match lookup {
        Lookup::ConnectionId(_) => false,
        Lookup::All => true,
        // Whether one step matches; which step wins is [`matching`]'s.
        Lookup::FirstOf(lookups) => lookups.iter().any(|l| matches(l, metadata, config)),
        Lookup::Metadata(key, want) => match metadata.get(key) {
            Some(Value::Array(a)) => a.iter().any(|v| eq(v, want)),
            Some(Value::Object(o)) => o.contains_key(want),
            Some(v) => eq(v, want),
            None => false,
        },
        Lookup::ConnectionConfig(key, want) => config.get(key).is_some_and(|v| eq(v, want)),
    }
}

/// The incoming headers forwarded to the app: all but these prefixes
/// (credentials, the message's framing and hop-by-hop headers, which
/// describe the provider's request, not the one sent to the app), and at
/// most [`MAX_FORWARDED_HEADER_BYTES`] of them.
pub fn forwarded_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    const DROP: [&str; 20] = [
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "host",
        "authorization",
        "connection",
        "keep-alive",
        "content-length",
        "content-type",
        "content-encoding",
        "cookie",
        "set-cookie",
        "referer",
        "user-agent",
        "sec-",
        "proxy-",
        "www-authenticate",
        "server",
    ];
    let mut room = MAX_FORWARDED_HEADER_BYTES;
    headers
        .iter()
        .filter(|(k, _)| {
            !DROP
                .iter()
                .any(|d| k == d || (d.ends_with('-') && k.starts_with(d)))
        })
        .filter(|(k, _)| !k.starts_with("webhook-") && !k.starts_with("x-nango-"))
        // Past the bound, a header is left out (a receiver refuses a
        // request whose headers are too large, and the provider was
        // answered already).
        .filter(|(k, v)| {
            let size = k.len() + v.len() + 4;
            let fits = size <= room;
            if fits {
                room -= size;
            }
            fits
        })
        .cloned()
        .collect()
}

/// The most header bytes a forwarded webhook carries from the provider's.
pub const MAX_FORWARDED_HEADER_BYTES: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// A signature made over the body's bytes is checked before the body
    /// is parsed (it is not read: a forged webhook costs no parse), with
    /// the refusal routing gives; what only the parsed body can refuse is
    /// left to routing, as are the scripts that need the body to check.
    #[test]
    fn a_signature_over_the_bytes_is_checked_before_parsing() {
        let raw = br#"{"type":"Issue","organizationId":"org-1"}"#;
        let secrets = webhook_secret("s3cret");
        let check = |script: &str, headers: &[(String, String)], secrets: &Secrets<'_>| {
            check_before_parsing(script, &incoming(headers, raw, &Value::Null), secrets)
                .map_err(|e| (e.status, e.code))
        };
        let good = vec![(
            "linear-signature".to_string(),
            hex(&hmac256(b"s3cret", raw)),
        )];
        let forged = vec![("linear-signature".to_string(), "00".repeat(32))];
        assert_eq!(check("linearWebhookRouting", &good, &secrets), Ok(()));
        assert_eq!(
            check("linearWebhookRouting", &forged, &secrets),
            Err(INVALID)
        );
        assert_eq!(check("linearWebhookRouting", &[], &secrets), Err(MISSING));
        let github = vec![(
            "x-hub-signature-256".to_string(),
            format!("sha256={}", "0".repeat(64)),
        )];
        assert_eq!(
            check("githubAppWebhookRouting", &github, &secrets),
            Err(INVALID)
        );
        // Xero's signature passes; its body (here none) is routing's to
        // refuse.
        let xero = vec![(
            "x-xero-signature".to_string(),
            b64(&hmac256(b"s3cret", raw)),
        )];
        assert_eq!(check("xeroWebhookRouting", &xero, &secrets), Ok(()));
        // Notion lets a verification body through unsigned: checked only
        // once parsed.
        assert_eq!(check("notionWebhookRouting", &forged, &secrets), Ok(()));
        assert_eq!(check("unauthenticatedWebhookRouting", &[], &NONE), Ok(()));
        // Every script checked early is one routing knows.
        for script in CHECKED_BEFORE_PARSING {
            assert!(
                route_webhook(script, &incoming(&[], raw, &Value::Null), &NONE).is_some(),
                "{script}"
            );
        }
    }

    /// A forward carries the provider's own headers, not those that framed
    /// its request (a `Transfer-Encoding: chunked` sent on made a receiver
    /// read an empty body), and not megabytes of them.
    #[test]
    fn a_forward_leaves_out_hop_by_hop_headers_and_stops_at_its_bound() {
        let h = |k: &str, v: &str| (k.to_string(), v.to_string());
        let sent = forwarded_headers(&[
            h("transfer-encoding", "chunked"),
            h("te", "trailers"),
            h("expect", "100-continue"),
            h("upgrade", "h2c"),
            h("proxy-authorization", "x"),
            h("tenant-id", "t1"),
            h("x-hub-signature-256", "sha256=ab"),
            h("x-big", &"b".repeat(MAX_FORWARDED_HEADER_BYTES)),
            h("x-after", "kept"),
        ]);
        assert_eq!(
            sent,
            [
                h("tenant-id", "t1"),
                h("x-hub-signature-256", "sha256=ab"),
                h("x-after", "kept"),
            ]
        );
    }

    fn incoming<'a>(
        headers: &'a [(String, String)],
        raw: &'a [u8],
        body: &'a Value,
    ) -> Incoming<'a> {
        Incoming {
            headers,
            raw,
            body,
            content_type: "application/json",
            query: "",
            now: NOW,
        }
    }

    const NOW: i64 = 1_700_000_000;

    const NONE: Secrets<'static> = Secrets {
        webhook_secret: None,
        oauth_client_id: None,
        oauth_client_secret: None,
        connection_metadata: None,
    };

    fn webhook_secret(secret: &str) -> Secrets<'_> {
        Secrets {
            webhook_secret: Some(secret),
            ..NONE
        }
    }

    fn client_secret(secret: &str) -> Secrets<'_> {
        Secrets {
            oauth_client_secret: Some(secret),
            ..NONE
        }
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Routes `raw` (JSON; empty is `{}`) with these headers and query.
    fn call(
        script: &str,
        headers: &[(&str, &str)],
        raw: &str,
        query: &str,
        secrets: &Secrets<'_>,
    ) -> Result<Routed, Refused> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let body: Value = if raw.is_empty() {
            json!({})
        } else {
            serde_json::from_str(raw).unwrap()
        };
        let req = Incoming {
            headers: &headers,
            raw: raw.as_bytes(),
            body: &body,
            content_type: "application/json",
            query,
            now: NOW,
        };
        route_webhook(script, &req, secrets).expect("a script sluice knows")
    }

    /// The status and code of a refusal.
    fn refusal(r: Result<Routed, Refused>) -> (u16, &'static str) {
        let e = r.expect_err("refused");
        (e.status, e.code)
    }

    const INVALID: (u16, &str) = (401, "webhook_invalid_signature");
    const MISSING: (u16, &str) = (401, "webhook_missing_signature");

    /// Each route's type and lookup.
    fn routes(r: Result<Routed, Refused>) -> Vec<(Option<String>, Option<Lookup>)> {
        let r = r.expect("routed");
        assert_eq!(r.status, 200);
        assert_eq!(r.response, Ok(json!({"status": "success"})));
        r.routes.into_iter().map(|r| (r.kind, r.lookup)).collect()
    }

    fn typed(kind: &str, lookup: Lookup) -> (Option<String>, Option<Lookup>) {
        (Some(kind.to_string()), Some(lookup))
    }

    fn cc(key: &str, value: &str) -> Lookup {
        Lookup::ConnectionConfig(key.into(), value.into())
    }

    fn meta(key: &str, value: &str) -> Lookup {
        Lookup::Metadata(key.into(), value.into())
    }

    fn cid(id: &str) -> Lookup {
        Lookup::ConnectionId(id.into())
    }

    #[test]
    fn linear_checks_its_hmac_and_routes_by_organization() {
        let raw = br#"{"type":"Issue","organizationId":"org-1"}"#;
        let body: Value = serde_json::from_slice(raw).unwrap();
        let secrets = Secrets {
            webhook_secret: Some("s3cret"),
            ..NONE
        };
        let good = vec![(
            "linear-signature".to_string(),
            hex(&hmac256(b"s3cret", raw)),
        )];
        let r = route_webhook(
            "linearWebhookRouting",
            &incoming(&good, raw, &body),
            &secrets,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            r.routes,
            vec![Route {
                input: body.clone(),
                kind: Some("Issue".into()),
                header_kind: None,
                lookup: Some(Lookup::ConnectionConfig(
                    "organizationId".into(),
                    "org-1".into()
                )),
            }]
        );
        let forged = vec![("linear-signature".to_string(), "ab".repeat(32))];
        let e = route_webhook(
            "linearWebhookRouting",
            &incoming(&forged, raw, &body),
            &secrets,
        )
        .unwrap()
        .unwrap_err();
        assert_eq!((e.status, e.code), (401, "webhook_invalid_signature"));
        let e = route_webhook("linearWebhookRouting", &incoming(&[], raw, &body), &secrets)
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code, "webhook_missing_signature");
        // A header of the wrong length: 401, not a crash.
        let short = vec![("linear-signature".to_string(), "x".into())];
        let e = route_webhook(
            "linearWebhookRouting",
            &incoming(&short, raw, &body),
            &secrets,
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(e.status, 401);
    }

    #[test]
    fn hubspot_signs_secret_plus_body_and_orders_events() {
        let body = json!([
            {"objectId": 7, "subscriptionType": "contact.propertyChange", "occurredAt": 2, "portalId": 99},
            {"objectId": "x", "subscriptionType": "contact.creation", "occurredAt": 1, "portalId": 99},
            {"objectId": 7, "subscriptionType": "contact.creation", "occurredAt": 3, "portalId": 99},
            {"objectId": 3, "subscriptionType": "contact.deletion", "occurredAt": 0, "portalId": 98},
        ]);
        let raw = body.to_string();
        let mut h = Sha256::new();
        h.update(b"client-secret");
        h.update(raw.as_bytes());
        let headers = vec![("x-hubspot-signature".to_string(), hex(&h.finalize()))];
        let secrets = Secrets {
            oauth_client_secret: Some("client-secret"),
            ..NONE
        };
        let r = route_webhook(
            "hubspotWebhookRouting",
            &incoming(&headers, raw.as_bytes(), &body),
            &secrets,
        )
        .unwrap()
        .unwrap();
        let order: Vec<(String, Option<String>)> = r
            .routes
            .iter()
            .map(|r| (r.input["objectId"].to_string(), r.kind.clone()))
            .collect();
        assert_eq!(
            order,
            vec![
                ("3".into(), Some("contact.deletion".into())),
                ("7".into(), Some("contact.creation".into())),
                ("7".into(), Some("contact.propertyChange".into())),
                ("\"x\"".into(), Some("contact.creation".into())),
            ]
        );
        assert_eq!(
            r.routes[0].lookup,
            Some(Lookup::ConnectionConfig("portalId".into(), "98".into()))
        );
    }

    #[test]
    fn unsigned_webhooks_are_refused_where_a_secret_could_sign_them() {
        let body = json!({"action": "created", "installation": {"id": 5}});
        let raw = body.to_string();
        let with_secret = Secrets {
            webhook_secret: Some("gh"),
            ..NONE
        };
        let e = route_webhook(
            "githubAppWebhookRouting",
            &incoming(&[], raw.as_bytes(), &body),
            &with_secret,
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(e.code, "webhook_missing_signature");
        let good = vec![
            (
                "x-hub-signature-256".to_string(),
                format!("sha256={}", hex(&hmac256(b"gh", raw.as_bytes()))),
            ),
            ("x-github-event".to_string(), "issues".to_string()),
        ];
        let r = route_webhook(
            "githubAppWebhookRouting",
            &incoming(&good, raw.as_bytes(), &body),
            &with_secret,
        )
        .unwrap()
        .unwrap();
        // A sync runs when subscribed to the event the header names or to
        // `*`; not to another event, nor to the body's action (the
        // original gives GitHub's webhooks no type but the header's).
        let subs = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!r.routes[0].runs(&subs(&["created"])));
        assert!(r.routes[0].runs(&subs(&["pull_request", "issues"])));
        assert!(r.routes[0].runs(&subs(&["*"])));
        assert!(!r.routes[0].runs(&subs(&["pull_request"])));
        assert!(!r.routes[0].runs(&[]));
        assert_eq!(
            r.routes[0].lookup,
            Some(Lookup::ConnectionConfig(
                "installation_id".into(),
                "5".into()
            ))
        );
        // HubSpot without a client secret: anyone could compute the hash.
        let forged = vec![(
            "x-hubspot-signature".to_string(),
            hex(&Sha256::digest(raw.as_bytes())),
        )];
        let e = route_webhook(
            "hubspotWebhookRouting",
            &incoming(&forged, raw.as_bytes(), &body),
            &NONE,
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(e.code, "webhook_invalid_signature");
    }

    /// An empty secret (how one is cleared) signs nothing: Linear and Xero
    /// refuse every webhook as without one, GitHub and Checkr route as
    /// without one; a forged signature keyed with "" never passes.
    #[test]
    fn an_empty_secret_lets_no_forgery_through() {
        let body = json!({"type": "Issue", "organizationId": "o1", "events": []});
        let raw = body.to_string();
        let empty = Secrets {
            webhook_secret: Some(""),
            ..NONE
        };
        let forged_hex = hex(&hmac256(b"", raw.as_bytes()));
        let forged_b64 =
            base64::engine::general_purpose::STANDARD.encode(hmac256(b"", raw.as_bytes()));
        for (script, header, sig) in [
            (
                "linearWebhookRouting",
                "linear-signature",
                forged_hex.clone(),
            ),
            ("xeroWebhookRouting", "x-xero-signature", forged_b64),
        ] {
            let headers = vec![(header.to_string(), sig)];
            let e = route_webhook(script, &incoming(&headers, raw.as_bytes(), &body), &empty)
                .unwrap()
                .unwrap_err();
            assert_eq!(e.code, "webhook_invalid_signature", "{script}");
        }
        // Unsigned GitHub with an empty secret: routed as with none (not
        // refused as missing a signature an empty key cannot make).
        let gh = json!({"action": "created", "installation": {"id": 5}});
        let gh_raw = gh.to_string();
        assert!(
            route_webhook(
                "githubAppWebhookRouting",
                &incoming(&[], gh_raw.as_bytes(), &gh),
                &empty
            )
            .unwrap()
            .is_ok()
        );
    }

    /// A type is compared as the original compares it (`===`): a number
    /// or a boolean at the type's path is no type.
    #[test]
    fn only_a_string_is_a_type() {
        let body = json!({"type": 1, "organizationId": "o1"});
        let r = route(&body, "type", "organizationId", None);
        assert_eq!(r.kind, None);
        assert!(!r.runs(&["1".to_string()]));
        assert!(r.runs(&["*".to_string()]));
    }

    #[test]
    fn slack_answers_its_challenge_and_routes_by_team() {
        let body = json!({"type": "url_verification", "challenge": "c-123"});
        let r = route_webhook("slackWebhookRouting", &incoming(&[], b"", &body), &NONE)
            .unwrap()
            .unwrap();
        assert_eq!(r.response, Err("c-123".to_string()));
        assert!(r.routes.is_empty());
        let body = json!({"type": "event_callback", "team_id": "T1"});
        let r = route_webhook("slackWebhookRouting", &incoming(&[], b"", &body), &NONE)
            .unwrap()
            .unwrap();
        assert_eq!(
            r.routes[0].lookup,
            Some(Lookup::ConnectionConfig("team.id".into(), "T1".into()))
        );
        assert_eq!(r.routes[0].input["teamId"], "T1");
    }

    #[test]
    fn lookups_match_metadata_lists_and_config_text() {
        let meta = json!({"webhooks": ["a", "b"], "n": 5});
        let mut config = Map::new();
        config.insert("installation_id".into(), json!(42));
        assert!(matches(
            &Lookup::Metadata("webhooks".into(), "b".into()),
            &meta,
            &config
        ));
        assert!(matches(
            &Lookup::Metadata("n".into(), "5".into()),
            &meta,
            &config
        ));
        assert!(!matches(
            &Lookup::Metadata("webhooks".into(), "c".into()),
            &meta,
            &config
        ));
        assert!(matches(
            &Lookup::ConnectionConfig("installation_id".into(), "42".into()),
            &meta,
            &config
        ));
        assert!(route_webhook("noSuchRouting", &incoming(&[], b"", &meta), &NONE).is_none());
    }

    /// The routing scripts of the original's `webhook/index.ts`.
    const ORIGINAL_SCRIPTS: [&str; 38] = [
        "githubAppOauthWebhookRouting",
        "githubAppWebhookRouting",
        "gitlabWebhookRouting",
        "hubspotWebhookRouting",
        "jiraWebhookRouting",
        "linearWebhookRouting",
        "salesforceWebhookRouting",
        "slackWebhookRouting",
        "checkrPartnerWebhookRouting",
        "microsoftTeamsWebhookRouting",
        "microsoftClientCredentialsWebhookRouting",
        "unauthenticatedWebhookRouting",
        "airtableWebhookRouting",
        "calendlyWebhookRouting",
        "xeroWebhookRouting",
        "sentryOauthWebhookRouting",
        "attioWebhookRouting",
        "gmailWebhookRouting",
        "filloutWebhookRouting",
        "jobdivaWebhookRouting",
        "highlevelWebhookRouting",
        "notionWebhookRouting",
        "affinityWebhookRouting",
        "shopifyWebhookRouting",
        "pagerdutyWebhookRouting",
        "autotaskWebhookRouting",
        "connectwisePsaWebhookRouting",
        "shipstationWebhookRouting",
        "googleCalendarWebhookRouting",
        "googleDriveWebhookRouting",
        "googleWebhookRouting",
        "sellsyWebhookRouting",
        "fathomWebhookRouting",
        "calComWebhookRouting",
        "streakWebhookRouting",
        "folkWebhookRouting",
        "videoaskWebhookRouting",
        "jobberWebhookRouting",
    ];

    #[test]
    fn every_routing_script_is_known() {
        let catalogue = include_str!("../../runtime/providers.yaml");
        let named = catalogue
            .lines()
            .filter_map(|l| l.trim().strip_prefix("webhook_routing_script:"))
            .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"'))
            .filter(|s| !s.is_empty());
        for script in ORIGINAL_SCRIPTS.iter().copied().chain(named) {
            let body = json!({});
            let known = route_webhook(script, &incoming(&[], b"{}", &body), &NONE);
            assert!(known.is_some(), "{script} is unknown");
        }
    }

    #[test]
    fn shopify_checks_its_base64_hmac_with_the_client_secret_or_the_webhook_secret() {
        let raw = r#"{"id":1}"#;
        let sig = b64(&hmac256(b"shh", raw.as_bytes()));
        let headers = |sig: &str| {
            vec![
                ("x-shopify-hmac-sha256", sig.to_string()),
                ("x-shopify-topic", "orders/create".to_string()),
                ("x-shopify-shop-domain", "my-shop.myshopify.com".to_string()),
            ]
        };
        let run = |h: &[(&str, String)], secrets: &Secrets<'_>| {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call("shopifyWebhookRouting", &h, raw, "", secrets)
        };
        let want = vec![typed("orders/create", cc("subdomain", "my-shop"))];
        assert_eq!(routes(run(&headers(&sig), &client_secret("shh"))), want);
        assert_eq!(routes(run(&headers(&sig), &webhook_secret("shh"))), want);
        // The client secret comes first.
        let both = Secrets {
            oauth_client_secret: Some("other"),
            ..webhook_secret("shh")
        };
        assert_eq!(refusal(run(&headers(&sig), &both)), INVALID);
        let forged = b64(&hmac256(b"guess", raw.as_bytes()));
        assert_eq!(
            refusal(run(&headers(&forged), &client_secret("shh"))),
            INVALID
        );
        assert_eq!(refusal(run(&headers("x"), &client_secret("shh"))), INVALID);
        assert_eq!(
            refusal(run(&headers("")[1..], &client_secret("shh"))),
            MISSING
        );
        // Unsigned without a secret, as the original.
        assert_eq!(routes(run(&headers("")[1..], &NONE)), want);
        let no_shop = &headers(&sig)[..2];
        assert_eq!(
            refusal(run(no_shop, &client_secret("shh"))),
            (400, "webhook_missing_shop_domain")
        );
    }

    #[test]
    fn shipstation_routes_by_header_or_store_id() {
        let raw = r#"{"resource_type":"ORDER_NOTIFY","resource_url":"https://ssapi.shipstation.com/orders?storeID=se-123&importBatch=1"}"#;
        let r = call(
            "shipstationWebhookRouting",
            &[("x-nango-connection-id", "c1")],
            raw,
            "",
            &NONE,
        );
        assert_eq!(routes(r), vec![typed("ORDER_NOTIFY", cid("c1"))]);
        let r = call("shipstationWebhookRouting", &[], raw, "", &NONE);
        assert_eq!(
            routes(r),
            vec![typed("ORDER_NOTIFY", meta("storeId", "123"))]
        );
        let r = call(
            "shipstationWebhookRouting",
            &[],
            r#"{"resource_type":"ORDER_NOTIFY","resource_url":"https://x.test/orders"}"#,
            "",
            &NONE,
        );
        assert_eq!(refusal(r), (400, "webhook_missing_nango_connection_id"));
    }

    #[test]
    fn sellsy_checks_sha1_of_secret_and_body_and_builds_its_type() {
        let raw = r#"{"eventType":"ThirdLog","relatedtype":"third","event":"updated","corpid":"77","thirdtype":"prospect"}"#;
        let sig = hex(&crypto::sha1(format!("shh{raw}").as_bytes()));
        let secrets = webhook_secret("shh");
        let r = call(
            "sellsyWebhookRouting",
            &[("x-webhook-signature", &sig)],
            raw,
            "",
            &secrets,
        );
        assert_eq!(
            routes(r),
            vec![typed("prospect.updated", cc("corpid", "77"))]
        );
        let forged = hex(&crypto::sha1(raw.as_bytes()));
        let r = call(
            "sellsyWebhookRouting",
            &[("x-webhook-signature", &forged)],
            raw,
            "",
            &secrets,
        );
        assert_eq!(refusal(r), INVALID);
        let r = call("sellsyWebhookRouting", &[], raw, "", &secrets);
        assert_eq!(refusal(r), MISSING);
        // The other types, unsigned without a secret.
        let r = call(
            "sellsyWebhookRouting",
            &[],
            r#"{"eventType":"thirdlog","relatedtype":"third","event":"created","corpid":7}"#,
            "",
            &NONE,
        );
        assert_eq!(
            routes(r),
            vec![typed("third.thirdlog.created", cc("corpid", "7"))]
        );
        let r = call(
            "sellsyWebhookRouting",
            &[],
            r#"{"eventType":"docslog","relatedtype":"invoice","event":"created","corpid":"7"}"#,
            "",
            &NONE,
        );
        assert_eq!(routes(r), vec![typed("invoice.created", cc("corpid", "7"))]);
    }

    #[test]
    fn highlevel_checks_its_rsa_signature_and_routes_by_location_or_company() {
        let raw = std::str::from_utf8(crypto::tests::MESSAGE).unwrap();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            crypto::tests::PUBLIC_KEY
        );
        let secrets = webhook_secret(&pem);
        let r = call(
            "highlevelWebhookRouting",
            &[("x-wh-signature", crypto::tests::SIGNATURE)],
            raw,
            "",
            &secrets,
        );
        assert_eq!(
            routes(r),
            vec![typed("ContactCreate", cc("locationId", "loc-1"))]
        );
        // The same signature over another body, or none.
        let other = r#"{"type":"ContactCreate","locationId":"loc-2"}"#;
        let r = call(
            "highlevelWebhookRouting",
            &[("x-wh-signature", crypto::tests::SIGNATURE)],
            other,
            "",
            &secrets,
        );
        assert_eq!(refusal(r), INVALID);
        let r = call("highlevelWebhookRouting", &[], raw, "", &secrets);
        assert_eq!(refusal(r), MISSING);
        let r = call(
            "highlevelWebhookRouting",
            &[("x-wh-signature", crypto::tests::SIGNATURE)],
            raw,
            "",
            &webhook_secret("not a key!"),
        );
        assert_eq!(refusal(r), INVALID);
        // Unsigned without a key: by company, else every connection; a
        // location named only as `altId` finds none (as the original).
        let r = call(
            "highlevelWebhookRouting",
            &[],
            r#"{"type":"AppInstall","companyId":"co-1"}"#,
            "",
            &NONE,
        );
        assert_eq!(
            routes(r),
            vec![typed("AppInstall", cc("companyId", "co-1"))]
        );
        let r = call("highlevelWebhookRouting", &[], r#"{"type":"X"}"#, "", &NONE);
        assert_eq!(routes(r), vec![typed("X", Lookup::All)]);
        let r = call(
            "highlevelWebhookRouting",
            &[],
            r#"{"type":"X","altType":"location","altId":"loc-9","companyId":"co-1"}"#,
            "",
            &NONE,
        );
        assert_eq!(routes(r), vec![(Some("X".into()), None)]);
    }

    /// GitLab's signing-token headers for a body at a time.
    fn gitlab_signed(key: &[u8], raw: &str, at: i64) -> Vec<(&'static str, String)> {
        let sig = b64(&hmac256(key, format!("msg-1.{at}.{raw}").as_bytes()));
        vec![
            ("webhook-id", "msg-1".into()),
            ("webhook-timestamp", at.to_string()),
            ("webhook-signature", format!("v1,bogus v1,{sig}")),
            ("x-gitlab-event", "Issue Hook".into()),
        ]
    }

    #[test]
    fn gitlab_checks_the_connections_signing_token_or_legacy_token() {
        let key = [7u8; 32];
        let secret = format!("whsec_{}", b64(&key));
        let metadata = json!({"webhookSecret": secret});
        let secrets = Secrets {
            connection_metadata: Some(&metadata),
            ..NONE
        };
        let raw = r#"{"object_kind":"issue"}"#;
        let run = |h: &[(&str, String)], query: &str, secrets: &Secrets<'_>| {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call("gitlabWebhookRouting", &h, raw, query, secrets)
        };
        let q = "nangoConnectionId=c1";
        let want = vec![typed("Issue Hook", cid("c1"))];
        assert_eq!(
            routes(run(&gitlab_signed(&key, raw, NOW), q, &secrets)),
            want
        );
        // Six minutes old, another key, a tampered signature.
        assert_eq!(
            refusal(run(&gitlab_signed(&key, raw, NOW - 360), q, &secrets)),
            INVALID
        );
        assert_eq!(
            refusal(run(&gitlab_signed(&[8; 32], raw, NOW), q, &secrets)),
            INVALID
        );
        let mut tampered = gitlab_signed(&key, raw, NOW);
        tampered[2].1 = "v1,AAAA".into();
        assert_eq!(refusal(run(&tampered, q, &secrets)), INVALID);
        // A signature present is never downgraded to the legacy token.
        tampered.push(("x-gitlab-token", secret.clone()));
        assert_eq!(refusal(run(&tampered, q, &secrets)), INVALID);
        let event = vec![("x-gitlab-event", "Issue Hook".to_string())];
        assert_eq!(refusal(run(&event, q, &secrets)), MISSING);
        // The legacy token is the secret itself.
        let legacy = json!({"webhookSecret": "legacy-token"});
        let legacy = Secrets {
            connection_metadata: Some(&legacy),
            ..NONE
        };
        let mut token = event.clone();
        token.push(("x-gitlab-token", "legacy-token".into()));
        assert_eq!(routes(run(&token, q, &legacy)), want);
        token[1].1 = "legacy-tokem".into();
        assert_eq!(refusal(run(&token, q, &legacy)), INVALID);
        // No secret: unsigned passes; no connection: nothing routed.
        let none = json!(null);
        let unsigned = Secrets {
            connection_metadata: Some(&none),
            ..NONE
        };
        assert_eq!(routes(run(&event, q, &unsigned)), want);
        assert_eq!(routes(run(&event, q, &NONE)), vec![]);
        let bad = json!({"webhookSecret": 5});
        let bad = Secrets {
            connection_metadata: Some(&bad),
            ..NONE
        };
        assert_eq!(
            refusal(run(&event, q, &bad)),
            (500, "webhook_invalid_secret")
        );
        assert_eq!(
            refusal(run(&event, "", &secrets)),
            (400, "webhook_missing_connection_id")
        );
        // The connection the handler reads: the query's, else the body's.
        let body = json!({"nangoConnectionId": "c2"});
        let headers = Vec::new();
        let mut req = incoming(&headers, b"", &body);
        assert_eq!(
            connection_to_read("gitlabWebhookRouting", &req),
            Some("c2".into())
        );
        req.query = "nangoConnectionId=c3";
        assert_eq!(
            connection_to_read("gitlabWebhookRouting", &req),
            Some("c3".into())
        );
        assert_eq!(connection_to_read("linearWebhookRouting", &req), None);
    }

    #[test]
    fn fillout_routes_each_event_by_form() {
        let raw = r#"[{"type":"submission","formId":"f1"},{"formId":"f2"}]"#;
        let r = call("filloutWebhookRouting", &[], raw, "", &NONE);
        assert_eq!(
            routes(r),
            vec![
                typed("submission", meta("formId", "f1")),
                typed("*", meta("formId", "f2"))
            ]
        );
    }

    /// Svix's headers (Fathom's, Folk's) for a body at a time.
    fn svix(key: &[u8], raw: &str, at: i64) -> Vec<(&'static str, String)> {
        let sig = b64(&hmac256(key, format!("msg-1.{at}.{raw}").as_bytes()));
        vec![
            ("webhook-id", "msg-1".into()),
            ("webhook-timestamp", at.to_string()),
            ("webhook-signature", format!("v1,{sig}")),
        ]
    }

    #[test]
    fn fathom_checks_its_svix_signature_and_routes_by_recorder() {
        let key = b"fathom signing key";
        let secret = format!("whsec_{}", b64(key));
        let secrets = webhook_secret(&secret);
        let raw = r#"{"recorded_by":{"email":"a@b.co"}}"#;
        let run = |h: &[(&str, String)], raw: &str, secrets: &Secrets<'_>| {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call("fathomWebhookRouting", &h, raw, "", secrets)
        };
        let want = vec![typed("*", meta("emailAddress", "a@b.co"))];
        assert_eq!(routes(run(&svix(key, raw, NOW), raw, &secrets)), want);
        // svix- names too.
        let renamed: Vec<(&str, String)> = svix(key, raw, NOW)
            .into_iter()
            .map(|(k, v)| {
                let k = match k {
                    "webhook-id" => "svix-id",
                    "webhook-timestamp" => "svix-timestamp",
                    _ => "svix-signature",
                };
                (k, v)
            })
            .collect();
        assert_eq!(routes(run(&renamed, raw, &secrets)), want);
        assert_eq!(
            refusal(run(&svix(b"other", raw, NOW), raw, &secrets)),
            INVALID
        );
        assert_eq!(
            refusal(run(&svix(key, raw, NOW - 400), raw, &secrets)),
            INVALID
        );
        // A secret that decodes to no key bytes signs nothing.
        let keyless = webhook_secret("whsec_");
        assert_eq!(refusal(run(&svix(b"", raw, NOW), raw, &keyless)), INVALID);
        assert_eq!(
            refusal(run(&svix(key, raw, NOW)[1..], raw, &secrets)),
            MISSING
        );
        // No email: every connection, as the original's lookup without a value.
        assert_eq!(
            routes(run(&[], r#"{"title":"x"}"#, &NONE)),
            vec![typed("*", Lookup::All)]
        );
    }

    #[test]
    fn connectwise_checks_its_hmac_with_the_hashed_signing_key() {
        let raw = r#"{"Type":"ticket","ProductInstanceId":"pi-1","Metadata":{"key_url":"https://api-na.myconnectwise.net/v4_6_release/apis/3.0/system/callbackentry/key/1"}}"#;
        let hashed = Sha256::digest(b"signing-key");
        let sig = b64(&hmac256(&hashed, raw.as_bytes()));
        let secrets = webhook_secret("signing-key");
        let run = |h: &[(&str, &str)], raw: &str, secrets: &Secrets<'_>| {
            call("connectwisePsaWebhookRouting", h, raw, "", secrets)
        };
        assert_eq!(
            routes(run(&[("x-content-signature", &sig)], raw, &secrets)),
            vec![typed("ticket", meta("productInstanceId", "pi-1"))]
        );
        let forged = b64(&hmac256(b"signing-key", raw.as_bytes()));
        assert_eq!(
            refusal(run(&[("x-content-signature", &forged)], raw, &secrets)),
            INVALID
        );
        assert_eq!(refusal(run(&[], raw, &secrets)), MISSING);
        // Nothing to check with: refused.
        assert_eq!(
            refusal(run(&[("x-content-signature", &sig)], raw, &NONE)),
            INVALID
        );
        // A key URL that is not ConnectWise's.
        let elsewhere = raw.replace("api-na.myconnectwise.net", "evil.test");
        let sig = b64(&hmac256(&hashed, elsewhere.as_bytes()));
        assert_eq!(
            refusal(run(&[("x-content-signature", &sig)], &elsewhere, &secrets)),
            INVALID
        );
    }

    #[test]
    fn cal_com_checks_its_hex_hmac_and_routes_by_connection_id() {
        let raw = r#"{"triggerEvent":"BOOKING_CREATED","nangoConnectionId":"c-body"}"#;
        let sig = hex(&hmac256(b"shh", raw.as_bytes()));
        let secrets = webhook_secret("shh");
        let run =
            |h: &[(&str, &str)], query: &str| call("calComWebhookRouting", h, raw, query, &secrets);
        assert_eq!(
            routes(run(
                &[("x-cal-signature-256", &sig)],
                "nangoConnectionId=c-q"
            )),
            vec![typed("BOOKING_CREATED", cid("c-q"))]
        );
        assert_eq!(
            routes(run(&[("x-cal-signature-256", &sig.to_uppercase())], "")),
            vec![typed("BOOKING_CREATED", cid("c-body"))]
        );
        assert_eq!(
            refusal(run(&[("x-cal-signature-256", &"00".repeat(32))], "")),
            INVALID
        );
        assert_eq!(refusal(run(&[], "")), MISSING);
        let r = call(
            "calComWebhookRouting",
            &[],
            r#"{"triggerEvent":"BOOKING_CREATED"}"#,
            "",
            &NONE,
        );
        assert_eq!(refusal(r), (400, "webhook_missing_connection_id"));
    }

    #[test]
    fn videoask_compares_its_secret_header() {
        let raw = r#"{"type":"form_response"}"#;
        let secrets = webhook_secret("shh");
        let run = |h: &[(&str, &str)]| call("videoaskWebhookRouting", h, raw, "", &secrets);
        assert_eq!(
            routes(run(&[
                ("nango-webhook-secret", "shh"),
                ("nango-connection-id", "c1")
            ])),
            vec![typed("form_response", cid("c1"))]
        );
        assert_eq!(
            refusal(run(&[
                ("nango-webhook-secret", "shg"),
                ("nango-connection-id", "c1")
            ])),
            INVALID
        );
        assert_eq!(refusal(run(&[("nango-connection-id", "c1")])), INVALID);
        assert_eq!(
            refusal(run(&[("nango-webhook-secret", "shh")])),
            (400, "webhook_missing_connection_id")
        );
    }

    #[test]
    fn streak_routes_by_its_token() {
        let r = call(
            "streakWebhookRouting",
            &[("x-streak-webhook-token", "tok")],
            r#"{"event":"BOX_CREATE"}"#,
            "",
            &NONE,
        );
        assert_eq!(routes(r), vec![typed("*", cc("streakWebhookToken", "tok"))]);
        let r = call("streakWebhookRouting", &[], "{}", "", &NONE);
        assert_eq!(refusal(r), (401, "webhook_missing_token"));
    }

    #[test]
    fn sentry_checks_its_hmac_with_the_client_secret() {
        // Spaced: signed as JSON.stringify prints it, or as sent.
        let raw = r#"{"action": "created", "installation": {"id": 12}}"#;
        let compact = r#"{"action":"created","installation":{"id":12}}"#;
        let secrets = client_secret("shh");
        let run = |h: &[(&str, &str)], secrets: &Secrets<'_>| {
            call("sentryOauthWebhookRouting", h, raw, "", secrets)
        };
        let want = vec![typed("created", cc("installation_id", "12"))];
        for signed in [compact, raw] {
            let sig = hex(&hmac256(b"shh", signed.as_bytes()));
            assert_eq!(
                routes(run(&[("sentry-hook-signature", &sig)], &secrets)),
                want
            );
        }
        let forged = hex(&hmac256(b"shg", compact.as_bytes()));
        assert_eq!(
            refusal(run(&[("sentry-hook-signature", &forged)], &secrets)),
            INVALID
        );
        assert_eq!(refusal(run(&[], &secrets)), MISSING);
        assert_eq!(
            refusal(run(&[("sentry-hook-signature", &forged)], &NONE)),
            INVALID
        );
        assert_eq!(routes(run(&[], &NONE)), want);
    }

    #[test]
    fn pagerduty_checks_the_connections_secret() {
        let raw = r#"{"event":{"event_type":"incident.triggered"}}"#;
        let sig = format!("v1=00, v1={}", hex(&hmac256(b"shh", raw.as_bytes())));
        let metadata = json!({"webhookSecret": ["shh"]});
        let secrets = Secrets {
            connection_metadata: Some(&metadata),
            ..NONE
        };
        let run = |h: &[(&str, &str)], secrets: &Secrets<'_>| {
            call("pagerdutyWebhookRouting", h, raw, "", secrets)
        };
        let named = ("x-nango-connection-id", "c1");
        let want = vec![typed("incident.triggered", cid("c1"))];
        assert_eq!(
            routes(run(&[named, ("x-pagerduty-signature", &sig)], &secrets)),
            want
        );
        assert_eq!(
            refusal(run(&[named, ("x-pagerduty-signature", "v1=00")], &secrets)),
            INVALID
        );
        assert_eq!(refusal(run(&[named], &secrets)), MISSING);
        let two = json!({"webhookSecret": ["shh", "other"]});
        let two = Secrets {
            connection_metadata: Some(&two),
            ..NONE
        };
        assert_eq!(
            refusal(run(&[named, ("x-pagerduty-signature", &sig)], &two)),
            (500, "webhook_invalid_secret")
        );
        // An empty secret in the list signs nothing.
        let empty = json!({"webhookSecret": [""]});
        let empty = Secrets {
            connection_metadata: Some(&empty),
            ..NONE
        };
        let keyless = format!("v1={}", hex(&hmac256(b"", raw.as_bytes())));
        assert_eq!(
            refusal(run(&[named, ("x-pagerduty-signature", &keyless)], &empty)),
            (500, "webhook_invalid_secret")
        );
        // No such connection: nothing routed; no header: 400.
        assert_eq!(routes(run(&[named], &NONE)), vec![]);
        assert_eq!(
            refusal(run(&[], &secrets)),
            (400, "webhook_missing_nango_connection_id")
        );
        let headers = vec![("x-nango-connection-id".to_string(), "c1".to_string())];
        let body = json!({});
        assert_eq!(
            connection_to_read("pagerdutyWebhookRouting", &incoming(&headers, b"{}", &body)),
            Some("c1".into())
        );
    }

    #[test]
    fn notion_forwards_its_verification_and_checks_its_hmac() {
        let secrets = webhook_secret("verif");
        let r = call(
            "notionWebhookRouting",
            &[],
            r#"{"verification_token":"secret_abc","workspace_id":"w1","type":"page.created"}"#,
            "",
            &secrets,
        )
        .unwrap();
        assert!(r.routes.is_empty());
        // The token alone: an unsigned body's other fields are not passed on.
        assert_eq!(r.forward, json!({"verification_token": "secret_abc"}));
        let raw = r#"{"type":"page.created","workspace_id":"w1"}"#;
        let sig = format!("sha256={}", hex(&hmac256(b"verif", raw.as_bytes())));
        let run = |h: &[(&str, &str)]| call("notionWebhookRouting", h, raw, "", &secrets);
        assert_eq!(
            routes(run(&[("x-notion-signature", &sig)])),
            vec![typed("page.created", cc("workspace_id", "w1"))]
        );
        assert_eq!(
            refusal(run(&[("x-notion-signature", &sig.replace("sha256=", ""))])),
            INVALID
        );
        assert_eq!(refusal(run(&[])), MISSING);
    }

    #[test]
    fn microsoft_graph_answers_its_validation_and_checks_client_state() {
        let r = call(
            "microsoftClientCredentialsWebhookRouting",
            &[],
            "",
            "validationToken=Validation%3A+abc",
            &NONE,
        )
        .unwrap();
        assert_eq!((r.status, r.response), (200, Err("Validation: abc".into())));
        assert!(r.routes.is_empty());
        assert!(accepts_empty_body(
            "microsoftClientCredentialsWebhookRouting"
        ));
        assert!(!accepts_empty_body("linearWebhookRouting"));
        let raw = r#"{"value":[
            {"changeType":"created","tenantId":"t1","clientState":"shh"},
            {"changeType":"updated","tenantId":"t2","clientState":"guess"}]}"#;
        let secrets = webhook_secret("shh");
        let r = call(
            "microsoftClientCredentialsWebhookRouting",
            &[],
            raw,
            "",
            &secrets,
        );
        let forward = r.as_ref().unwrap().forward.clone();
        assert_eq!(routes(r), vec![typed("created", cc("tenantId", "t1"))]);
        assert_eq!(forward["value"].as_array().map(Vec::len), Some(1));
        let r = call(
            "microsoftClientCredentialsWebhookRouting",
            &[],
            raw,
            "",
            &webhook_secret("other"),
        );
        assert_eq!(refusal(r), INVALID);
        let r = call(
            "microsoftClientCredentialsWebhookRouting",
            &[],
            raw,
            "",
            &NONE,
        );
        assert_eq!(routes(r).len(), 2);
    }

    #[test]
    fn jobdiva_checks_its_sha1_hmac_and_routes_to_every_connection() {
        let raw = r#"{"type":"contact","operation":"Insert","id":"1"}"#;
        let sig = format!(
            "sha1={}",
            hex(&crypto::hmac_sha1(b"shh", raw.as_bytes()).unwrap())
        );
        let secrets = webhook_secret("shh");
        let run = |h: &[(&str, &str)]| call("jobdivaWebhookRouting", h, raw, "", &secrets);
        assert_eq!(
            routes(run(&[("x-hub-signature", &sig)])),
            vec![typed("*", Lookup::All)]
        );
        let sha256 = format!("sha1={}", hex(&hmac256(b"shh", raw.as_bytes())));
        assert_eq!(refusal(run(&[("x-hub-signature", &sha256)])), INVALID);
        assert_eq!(refusal(run(&[])), MISSING);
    }

    #[test]
    fn jobber_checks_its_base64_hmac_with_the_client_secret() {
        let raw = r#"{"data":{"webHookEvent":{"topic":"CLIENT_CREATE","accountId":"acc-1","itemId":"i"}}}"#;
        let sig = b64(&hmac256(b"shh", raw.as_bytes()));
        let run = |h: &[(&str, &str)], raw: &str, secrets: &Secrets<'_>| {
            call("jobberWebhookRouting", h, raw, "", secrets)
        };
        let secrets = client_secret("shh");
        let r = run(&[("x-jobber-hmac-sha256", &sig)], raw, &secrets);
        assert_eq!(r.as_ref().unwrap().routes[0].input["itemId"], "i");
        assert_eq!(
            routes(r),
            vec![typed("CLIENT_CREATE", cc("accountId", "acc-1"))]
        );
        assert_eq!(
            refusal(run(&[("x-jobber-hmac-sha256", &sig)], raw, &NONE)),
            INVALID
        );
        assert_eq!(
            refusal(run(
                &[("x-jobber-hmac-sha256", &b64(&[0; 32]))],
                raw,
                &secrets
            )),
            INVALID
        );
        assert_eq!(refusal(run(&[], raw, &secrets)), MISSING);
        let sig = b64(&hmac256(b"shh", b"{}"));
        assert_eq!(
            routes(run(&[("x-jobber-hmac-sha256", &sig)], "{}", &secrets)),
            vec![]
        );
    }

    #[test]
    fn google_push_notifications_route_by_their_headers() {
        let headers = [
            ("x-goog-resource-state", "exists"),
            ("x-goog-resource-id", "res-1"),
            (
                "x-goog-resource-uri",
                "https://www.googleapis.com/calendar/v3/calendars/Jane%40Example.com/events?alt=json",
            ),
        ];
        let uri = headers[2].1;
        assert!(accepts_empty_body("googleCalendarWebhookRouting"));
        let r = call("googleWebhookRouting", &headers, "", "", &NONE).unwrap();
        assert_eq!(r.forward["x-goog-resource-id"], "res-1");
        assert_eq!(r.routes[0].input, r.forward);
        assert_eq!(
            routes(Ok(r)),
            vec![typed(
                "exists",
                meta("googleCalendarWatchResourceUris", uri)
            )]
        );
        let r = call("googleDriveWebhookRouting", &headers, "", "", &NONE);
        assert_eq!(
            routes(r),
            vec![typed(
                "exists",
                Lookup::FirstOf(vec![
                    meta("googleDriveWatchResourceIds", "res-1"),
                    meta("googleCalendarWatchResourceUris", uri)
                ])
            )]
        );
        let hash = hex(&Sha256::digest(
            b"nango.emailAddressHash.v1:jane@example.com",
        ));
        let r = call("googleCalendarWebhookRouting", &headers, "", "", &NONE);
        assert_eq!(
            routes(r),
            vec![typed(
                "exists",
                Lookup::FirstOf(vec![
                    meta("googleCalendarWatchResourceUris", uri),
                    cc("emailAddressHash", &hash),
                    meta("emailAddress", "Jane@Example.com"),
                    meta("email", "Jane@Example.com"),
                ])
            )]
        );
        let r = call("googleCalendarWebhookRouting", &headers[..2], "", "", &NONE);
        assert_eq!(routes(r), vec![]);
    }

    fn jwt(claims: Value) -> String {
        let part =
            |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "Bearer {}.{}.c2ln",
            part(json!({"alg": "RS256", "kid": "k"})),
            part(claims)
        )
    }

    #[test]
    fn gmail_routes_by_mailbox_and_refuses_implausible_tokens() {
        let data = b64(br#"{"emailAddress":"Jane@Example.com","historyId":"9"}"#);
        let raw = json!({"message": {"data": data}, "subscription": "s"}).to_string();
        let hash = hex(&Sha256::digest(
            b"nango.emailAddressHash.v1:jane@example.com",
        ));
        let run = |h: &[(&str, &str)]| call("gmailWebhookRouting", h, &raw, "", &NONE);
        let r = run(&[]).unwrap();
        assert_eq!(r.routes[0].input["emailAddressHash"], json!(hash));
        assert_eq!(r.routes[0].input["subscription"], "s");
        assert_eq!(r.forward, serde_json::from_str::<Value>(&raw).unwrap());
        assert_eq!(
            routes(Ok(r)),
            vec![typed(
                "*",
                Lookup::FirstOf(vec![
                    cc("emailAddressHash", &hash),
                    meta("emailAddress", "Jane@Example.com"),
                    meta("email", "Jane@Example.com"),
                ])
            )]
        );
        let google = jwt(json!({"iss": "https://accounts.google.com", "exp": NOW + 60}));
        assert_eq!(routes(run(&[("authorization", &google)])).len(), 1);
        let expired = jwt(json!({"iss": "https://accounts.google.com", "exp": NOW - 60}));
        assert_eq!(refusal(run(&[("authorization", &expired)])), INVALID);
        let other = jwt(json!({"iss": "https://evil.test", "exp": NOW + 60}));
        assert_eq!(refusal(run(&[("authorization", &other)])), INVALID);
        assert_eq!(refusal(run(&[("authorization", "Basic eDp5")])), INVALID);
        let r = call("gmailWebhookRouting", &[], r#"{"message":{}}"#, "", &NONE);
        assert_eq!(refusal(r), (400, "webhook_invalid_body"));
    }

    #[test]
    fn folk_checks_its_svix_signature_and_routes_by_connection_id() {
        let key = b"folk signing key";
        let secret = format!("whsec_{}", b64(key));
        let secrets = webhook_secret(&secret);
        let raw = r#"{"type":"person.created"}"#;
        let run = |h: &[(&str, String)], query: &str, secrets: &Secrets<'_>| {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call("folkWebhookRouting", &h, raw, query, secrets)
        };
        let q = "nangoConnectionId=c1";
        assert_eq!(
            routes(run(&svix(key, raw, NOW), q, &secrets)),
            vec![typed("person.created", cid("c1"))]
        );
        assert_eq!(
            refusal(run(&svix(b"other", raw, NOW), q, &secrets)),
            INVALID
        );
        // Missing headers are an invalid signature, as in the original.
        assert_eq!(
            refusal(run(&svix(key, raw, NOW)[..2], q, &secrets)),
            INVALID
        );
        assert_eq!(routes(run(&[], q, &NONE)).len(), 1);
        assert_eq!(
            refusal(run(&[], "", &NONE)),
            (400, "webhook_missing_connection_id")
        );
        // A secret that decodes to no key bytes signs nothing.
        let keyless = webhook_secret("whsec_!!!");
        assert_eq!(
            refusal(run(&svix(b"", raw, NOW), q, &keyless)),
            (500, "webhook_invalid_secret")
        );
    }

    #[test]
    fn autotask_checks_its_base64_sha1_hmac() {
        let raw = r#"{"EntityType":"Ticket","Guid":"g-1","Id":5}"#;
        let sig = b64(&crypto::hmac_sha1(b"shh", raw.as_bytes()).unwrap());
        let secrets = webhook_secret("shh");
        let run = |h: &[(&str, &str)], secrets: &Secrets<'_>| {
            call("autotaskWebhookRouting", h, raw, "", secrets)
        };
        let want = vec![typed("Ticket", cc("webhookGuid", "g-1"))];
        assert_eq!(routes(run(&[("x-hook-signature", &sig)], &secrets)), want);
        let prefixed = format!("sha1={sig}");
        assert_eq!(
            routes(run(&[("x-hook-signature", &prefixed)], &secrets)),
            want
        );
        let forged = b64(&crypto::hmac_sha1(b"shg", raw.as_bytes()).unwrap());
        assert_eq!(
            refusal(run(&[("x-hook-signature", &forged)], &secrets)),
            INVALID
        );
        assert_eq!(refusal(run(&[], &secrets)), MISSING);
        assert_eq!(refusal(run(&[("x-hook-signature", &sig)], &NONE)), INVALID);
    }

    #[test]
    fn attio_checks_its_hmac_and_routes_each_event_by_workspace() {
        let raw = r#"{"webhook_id":"w","events":[
            {"event_type":"record.created","id":{"workspace_id":"ws-1"}},
            {"event_type":"note.created","id":{"workspace_id":"ws-2"}}]}"#;
        let sig = hex(&hmac256(b"shh", raw.as_bytes()));
        let secrets = webhook_secret("shh");
        let run = |h: &[(&str, &str)], raw: &str| call("attioWebhookRouting", h, raw, "", &secrets);
        assert_eq!(
            routes(run(&[("x-attio-signature", &sig)], raw)),
            vec![
                typed("record.created", cc("workspace_id", "ws-1")),
                typed("note.created", cc("workspace_id", "ws-2")),
            ]
        );
        assert_eq!(refusal(run(&[("x-attio-signature", "00")], raw)), INVALID);
        assert_eq!(refusal(run(&[], raw)), MISSING);
        let empty = r#"{"events":[]}"#;
        let sig = hex(&hmac256(b"shh", empty.as_bytes()));
        assert_eq!(routes(run(&[("x-attio-signature", &sig)], empty)), vec![]);
        // As the original: falsy `events` route nothing; an object is bad.
        for (raw, ok) in [
            (r#"{"events":""}"#, true),
            (r#"{"events":0}"#, true),
            (r#"{"events":{}}"#, false),
        ] {
            let sig = hex(&hmac256(b"shh", raw.as_bytes()));
            let r = run(&[("x-attio-signature", &sig)], raw);
            assert_eq!(r.is_ok(), ok, "{raw}");
        }
    }

    #[test]
    fn affinity_routes_to_every_connection_with_the_originals_type() {
        let r = call(
            "affinityWebhookRouting",
            &[],
            r#"{"type":"person.created","body":{}}"#,
            "",
            &NONE,
        );
        assert_eq!(routes(r), vec![typed("*", Lookup::All)]);
        // `type` is a path: it names a type only when the body has it.
        let r = call(
            "affinityWebhookRouting",
            &[],
            r#"{"type":"body.kind","body":{"kind":"k"}}"#,
            "",
            &NONE,
        );
        assert_eq!(routes(r), vec![typed("k", Lookup::All)]);
    }

    #[test]
    fn every_and_first_of_lookups_match_by_connection() {
        let meta_v = json!({"emailAddress": "a@b.co"});
        let mut config = Map::new();
        config.insert("emailAddressHash".into(), json!("h"));
        assert!(matches(&Lookup::All, &Value::Null, &Map::new()));
        let any = Lookup::FirstOf(vec![
            cc("emailAddressHash", "x"),
            meta("emailAddress", "a@b.co"),
        ]);
        assert!(matches(&any, &meta_v, &Map::new()));
        assert!(matches(
            &Lookup::FirstOf(vec![cc("emailAddressHash", "h")]),
            &Value::Null,
            &config
        ));
        assert!(!matches(&any, &json!({"emailAddress": "c@d.co"}), &config));
        // The first step that finds a connection decides: a later step's
        // connections are not added to it.
        let conn = |id: &str, metadata: Value, config: Value| {
            serde_json::from_value::<sluice_runtime::connection::Connection>(json!({
                "connection_id": id, "provider_config_key": "g", "provider": "google",
                "credentials": {}, "metadata": metadata, "connection_config": config,
            }))
            .unwrap()
        };
        let all = [
            conn("by-meta", meta_v.clone(), json!({})),
            conn("by-hash", Value::Null, json!({"emailAddressHash": "h"})),
            conn("other", json!({"emailAddress": "c@d.co"}), json!({})),
        ];
        let steps = Lookup::FirstOf(vec![
            cc("emailAddressHash", "h"),
            meta("emailAddress", "a@b.co"),
        ]);
        let matching = |lookup: &Lookup, all: &[sluice_runtime::connection::Connection]| {
            let mut m = Matcher::new([lookup]);
            all.iter().for_each(|c| m.see(c));
            m.found(lookup)
        };
        assert_eq!(matching(&steps, &all), ["by-hash"]);
        let steps = Lookup::FirstOf(vec![
            cc("emailAddressHash", "none"),
            meta("emailAddress", "a@b.co"),
        ]);
        assert_eq!(matching(&steps, &all), ["by-meta"]);
        let none = Lookup::FirstOf(vec![cc("emailAddressHash", "none")]);
        assert!(matching(&none, &all).is_empty());
        assert_eq!(matching(&Lookup::All, &all).len(), 3);
        // Lookups sharing a step, matched in one pass over the connections.
        let steps = Lookup::FirstOf(vec![
            cc("emailAddressHash", "none"),
            meta("emailAddress", "a@b.co"),
        ]);
        let shared = meta("emailAddress", "a@b.co");
        let by_id = Lookup::ConnectionId("other".into());
        let mut m = Matcher::new([&steps, &shared, &Lookup::All, &by_id]);
        all.iter().for_each(|c| m.see(c));
        assert_eq!(m.found(&steps), ["by-meta"]);
        assert_eq!(m.found(&shared), ["by-meta"]);
        assert_eq!(m.found(&Lookup::All), ["by-meta", "by-hash", "other"]);
        assert!(m.found(&by_id).is_empty(), "read by the caller");
    }

    #[test]
    fn no_input_makes_a_script_panic() {
        let bodies = [
            "{}",
            "[]",
            "null",
            "\"text\"",
            "12",
            r#"{"events":5,"value":"x","message":{"data":"!!"},"Metadata":{"key_url":7},"data":{"webHookEvent":[]}}"#,
            r#"{"recorded_by":{"email":{}},"type":"a.b.c.d","locationId":0,"altType":"location"}"#,
        ];
        let odd = "\u{0}\u{ffff}%zz%";
        let headers: Vec<(&str, &str)> = [
            "x-shopify-hmac-sha256",
            "x-shopify-shop-domain",
            "x-wh-signature",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "svix-id",
            "svix-timestamp",
            "svix-signature",
            "x-gitlab-token",
            "x-content-signature",
            "x-cal-signature-256",
            "sentry-hook-signature",
            "x-nango-connection-id",
            "x-pagerduty-signature",
            "x-notion-signature",
            "x-hub-signature",
            "x-jobber-hmac-sha256",
            "x-goog-resource-uri",
            "x-goog-resource-id",
            "authorization",
            "x-hook-signature",
            "x-attio-signature",
            "x-streak-webhook-token",
            "nango-connection-id",
            "x-webhook-signature",
        ]
        .into_iter()
        .map(|h| (h, odd))
        .collect();
        let metadata = json!({"webhookSecret": [1]});
        let secrets = Secrets {
            webhook_secret: Some("whsec_%%"),
            oauth_client_id: Some(odd),
            oauth_client_secret: Some(odd),
            connection_metadata: Some(&metadata),
        };
        for script in ORIGINAL_SCRIPTS {
            for raw in bodies {
                for h in [&headers[..], &[]] {
                    for s in [&secrets, &NONE] {
                        let _ = call(script, h, raw, "nangoConnectionId=%ff&validationToken=", s);
                    }
                }
            }
        }
        // A huge timestamp, or one past an i64.
        for ts in ["99999999999999999999999", "-9223372036854775808", "1e400"] {
            let h = [
                ("webhook-id", "i"),
                ("webhook-timestamp", ts),
                ("webhook-signature", "v1,x"),
            ];
            let _ = call(
                "fathomWebhookRouting",
                &h,
                "{}",
                "",
                &webhook_secret("whsec_AAAA"),
            );
            let _ = call(
                "folkWebhookRouting",
                &h,
                "{}",
                "",
                &webhook_secret("whsec_AAAA"),
            );
        }
    }
}
