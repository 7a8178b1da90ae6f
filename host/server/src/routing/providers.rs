//! One function a routing script, each as the original's
//! `packages/server/lib/webhook/<provider>-webhook-routing.ts` checks and
//! routes; its comment says where sluice differs. A script's `ok` answers
//! `200 {"status": "success"}` and forwards what it is given (the body,
//! unless the original forwards something else).

use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::crypto::{base64_loose, hmac_sha1, pem_body, rsa_sha256_verify, sha1};
use super::{
    Incoming, Lookup, Refused, Routed, Secrets, bad_body, direct, first_of, get, hex, hmac256,
    invalid, invalid_secret, kind_at, lookup_at, missing, missing_connection_id,
    missing_nango_connection_id, missing_shop_domain, missing_token, ok, route, same, same_bytes,
    set, star, text, truthy,
};

type Answer = Result<Routed, Refused>;

/// How far a signed timestamp may be from now (GitLab's, Fathom's), in
/// seconds.
const TOLERANCE: i64 = 5 * 60;

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The raw body after a signed prefix.
fn prefixed(prefix: &str, raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + raw.len());
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(raw);
    out
}

/// Shopify: `x-shopify-hmac-sha256` is the base64 HMAC-SHA256 of the body
/// with the OAuth client secret, or else the integration's webhook secret
/// (custom apps); unsigned webhooks pass when there is neither, as in the
/// original. The type is `x-shopify-topic`, the connection the one whose
/// `connection_config.subdomain` is the first label of
/// `x-shopify-shop-domain`. The original reads a missing shop header as the
/// shop `undefined` (and crashes on one that is not a host name); sluice
/// answers 400 `webhook_missing_shop_domain` to both.
pub(super) fn shopify(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    let body = req.body;
    let domain = req
        .header("x-shopify-shop-domain")
        .ok_or_else(missing_shop_domain)?;
    let subdomain = url::Url::parse(&format!("https://{domain}"))
        .ok()
        .and_then(|u| Some(u.host_str()?.split('.').next()?.to_string()))
        .filter(|s| !s.is_empty())
        .ok_or_else(missing_shop_domain)?;
    if let Some(secret) = set(secrets.oauth_client_secret).or(set(secrets.webhook_secret)) {
        let sig = req
            .header_set("x-shopify-hmac-sha256")
            .ok_or_else(missing)?;
        if !same_bytes(&hmac256(secret.as_bytes(), req.raw), &base64_loose(sig)) {
            return Err(invalid());
        }
    }
    let topic = req.header("x-shopify-topic").map(str::to_string);
    ok(
        vec![direct(
            body,
            topic,
            Some(Lookup::ConnectionConfig("subdomain".into(), subdomain)),
        )],
        body.clone(),
    )
}

/// ShipStation: no signature. The connection is `x-nango-connection-id`
/// (v2 lets a webhook carry headers), or else the connection whose
/// `metadata.storeId` is the `storeID`/`store_id` of the `resource_url`
/// (after its first `-`, v2's prefix); the type is `resource_type`.
/// Without either, 400 (the original's is a 500).
pub(super) fn shipstation(req: &Incoming<'_>) -> Answer {
    let body = req.body;
    let lookup = match req.header_set("x-nango-connection-id") {
        Some(cid) => Lookup::ConnectionId(cid.to_string()),
        None => Lookup::Metadata(
            "storeId".into(),
            shipstation_store(body).ok_or_else(missing_nango_connection_id)?,
        ),
    };
    ok(
        vec![direct(body, kind_at(body, "resource_type"), Some(lookup))],
        body.clone(),
    )
}

fn shipstation_store(body: &Value) -> Option<String> {
    let url = url::Url::parse(body.get("resource_url")?.as_str()?).ok()?;
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    };
    let id = param("storeID").or_else(|| param("store_id"))?;
    let id = match id.split_once('-') {
        Some((_, rest)) => rest.to_string(),
        None => id,
    };
    Some(id).filter(|id| !id.is_empty())
}

/// Sellsy: `x-webhook-signature` is the hex SHA-1 of the webhook secret
/// followed by the body (unsigned webhooks pass without a secret, as in
/// the original). The type is `<relatedtype>.<event>`, or for a
/// `thirdlog` `<thirdtype>.<event>` (`<relatedtype>.<eventType>.<event>`
/// without a `thirdtype`), each part as JavaScript prints it; the
/// connection is the one whose `connection_config.corpid` is `corpid`.
pub(super) fn sellsy(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    if let Some(secret) = set(secrets.webhook_secret) {
        let sig = req.header_set("x-webhook-signature").ok_or_else(missing)?;
        if !same(&hex(&sha1(&prefixed(secret, req.raw))), sig) {
            return Err(invalid());
        }
    }
    let body = req.body;
    let part = |k: &str| match body.get(k) {
        Some(v) => sluice_runtime::js::to_string(v),
        None => "undefined".to_string(),
    };
    let third_log = body
        .get("eventType")
        .and_then(Value::as_str)
        .is_some_and(|t| t.to_lowercase() == "thirdlog");
    let kind = if !third_log {
        format!("{}.{}", part("relatedtype"), part("event"))
    } else if truthy(body.get("thirdtype")) {
        format!("{}.{}", part("thirdtype"), part("event"))
    } else {
        format!(
            "{}.{}.{}",
            part("relatedtype"),
            part("eventType"),
            part("event")
        )
    };
    ok(
        vec![direct(
            body,
            Some(kind),
            lookup_at(body, "corpid", Some("corpid")),
        )],
        body.clone(),
    )
}

/// HighLevel: `x-wh-signature` is a base64 RSA (PKCS #1 v1.5, SHA-256)
/// signature of the body; the integration's webhook secret is HighLevel's
/// public key (PEM, or its base64 alone). Unsigned webhooks pass without a
/// key, as in the original; a key that is not base64 refuses them (401;
/// the original crashes into a 500). The type is `type`; the connection
/// the one whose `connection_config.locationId` is `locationId`, else
/// whose `companyId` is `companyId`, else every connection. Like the
/// original, a payload naming its location only as `altId` (with
/// `altType: location`) finds none: the original then looks up the
/// absent `locationId`.
pub(super) fn highlevel(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    if let Some(key) = set(secrets.webhook_secret) {
        let sig = req.header_set("x-wh-signature").ok_or_else(missing)?;
        let key = pem_body(key).ok_or_else(invalid)?;
        if !rsa_sha256_verify(&key, req.raw, &base64_loose(sig.trim())) {
            return Err(invalid());
        }
    }
    let body = req.body;
    let kind = body.get("type").and_then(Value::as_str).map(str::to_string);
    let location_absent = matches!(body.get("locationId"), None | Some(Value::Null));
    let lookup = if truthy(body.get("locationId")) {
        lookup_at(body, "locationId", Some("locationId"))
    } else if location_absent
        && body.get("altType").and_then(Value::as_str) == Some("location")
        && truthy(body.get("altId"))
    {
        None
    } else if truthy(body.get("companyId")) {
        lookup_at(body, "companyId", Some("companyId"))
    } else {
        Some(Lookup::All)
    };
    ok(vec![direct(body, kind, lookup)], body.clone())
}

/// The connection a GitLab webhook names: `nangoConnectionId` in the query,
/// or else in the body.
pub(super) fn gitlab_connection(req: &Incoming<'_>) -> Option<String> {
    req.query_param("nangoConnectionId").or_else(|| {
        req.body
            .get("nangoConnectionId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    })
}

/// GitLab: the connection is `nangoConnectionId` (query, else body; 400
/// without), and its secret its `metadata.webhookSecret`: the handler
/// reads the connection first ([`super::connection_to_read`]). With a
/// secret, a `webhook-signature` (GitLab's signing token: `v1,` and the
/// base64 HMAC-SHA256 of `<webhook-id>.<webhook-timestamp>.<body>` with
/// the 32 bytes after `whsec_`, within five minutes) is checked, or else
/// the legacy `x-gitlab-token`, which is the secret itself. Unsigned
/// webhooks pass without a secret, as in the original; a connection that
/// does not exist gets 200 and routes nothing. The type is
/// `x-gitlab-event`.
pub(super) fn gitlab(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    let body = req.body;
    let cid = gitlab_connection(req).ok_or_else(missing_connection_id)?;
    let Some(metadata) = secrets.connection_metadata else {
        return ok(Vec::new(), body.clone());
    };
    let secret = match metadata.get("webhookSecret") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            return Err(invalid_secret(
                "the connection's metadata.webhookSecret is not a string",
            ));
        }
    };
    if let Some(secret) = set(secret) {
        let signature = req.header_set("webhook-signature");
        let token = req.header_set("x-gitlab-token");
        let valid = match signature {
            Some(_) => gitlab_signed(secret, req),
            None => token.is_some_and(|t| same(secret, t)),
        };
        if !valid {
            return Err(if signature.is_some() || token.is_some() {
                invalid()
            } else {
                missing()
            });
        }
    }
    let kind = req.header("x-gitlab-event").map(str::to_string);
    ok(
        vec![direct(body, kind, Some(Lookup::ConnectionId(cid)))],
        body.clone(),
    )
}

fn gitlab_signed(secret: &str, req: &Incoming<'_>) -> bool {
    let (Some(id), Some(ts), Some(sigs)) = (
        req.header_set("webhook-id"),
        req.header_set("webhook-timestamp"),
        req.header_set("webhook-signature"),
    ) else {
        return false;
    };
    let Some(key) = secret.strip_prefix("whsec_") else {
        return false;
    };
    let Some(at) = js_safe_integer(ts) else {
        return false;
    };
    if (i128::from(req.now) - i128::from(at)).abs() > i128::from(TOLERANCE) {
        return false;
    }
    let key = base64_loose(key);
    if key.len() != 32 {
        return false;
    }
    let want = format!(
        "v1,{}",
        base64(&hmac256(&key, &prefixed(&format!("{id}.{ts}."), req.raw)))
    );
    sigs.split(' ').any(|sig| same(&want, sig))
}

/// JavaScript's `Number(s)` when it is a safe integer.
fn js_safe_integer(s: &str) -> Option<i64> {
    let f: f64 = s.trim().parse().ok()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0).then_some(f as i64)
}

/// JavaScript's `parseInt(s, 10)` (leading digits), `None` for `NaN` or
/// past an `i64`.
fn js_parse_int(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    let n: i64 = digits[..end].parse().ok()?;
    Some(if negative { -n } else { n })
}

/// Fillout: no signature (Fillout offers none). Each event of the body
/// (or the body) goes to the connections whose `metadata.formId` is its
/// `formId`; the type is `type`.
pub(super) fn fillout(req: &Incoming<'_>) -> Answer {
    let body = req.body;
    let events: Vec<&Value> = match body {
        Value::Array(events) => events.iter().collect(),
        other => vec![other],
    };
    ok(
        events
            .into_iter()
            .map(|e| star(route(e, "type", "formId", Some("metadata.formId"))))
            .collect(),
        body.clone(),
    )
}

/// Fathom (Svix): with a webhook secret, `webhook-id`, `webhook-timestamp`
/// and `webhook-signature` (or their `svix-` names) are required, and one
/// of the signature's `v1,<base64>` must be the HMAC-SHA256 of
/// `<id>.<timestamp>.<body>` with the secret's bytes (base64 after
/// `whsec_`), the timestamp within five minutes. Unsigned webhooks pass
/// without a secret, as in the original. The connections are those whose
/// `metadata.emailAddress` is `recorded_by.email`, or every connection
/// when there is none (the original's lookup without a value); there is
/// no type.
pub(super) fn fathom(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    if let Some(secret) = set(secrets.webhook_secret) {
        let either = |a: &str, b: &str| req.header_set(a).or_else(|| req.header_set(b));
        let (Some(id), Some(sigs), Some(ts)) = (
            either("webhook-id", "svix-id"),
            either("webhook-signature", "svix-signature"),
            either("webhook-timestamp", "svix-timestamp"),
        ) else {
            return Err(missing());
        };
        if !fathom_signed(secret, id, sigs, ts, req) {
            return Err(invalid());
        }
    }
    let body = req.body;
    let email = get(body, "recorded_by.email");
    let lookup = if truthy(email) {
        text(email).map(|e| Lookup::Metadata("emailAddress".into(), e))
    } else {
        Some(Lookup::All)
    };
    ok(vec![direct(body, None, lookup)], body.clone())
}

fn fathom_signed(secret: &str, id: &str, sigs: &str, ts: &str, req: &Incoming<'_>) -> bool {
    let key = base64_loose(secret.strip_prefix("whsec_").unwrap_or(secret));
    // A secret that decodes to no key would let anyone sign.
    if key.is_empty() {
        return false;
    }
    let Some(at) = js_parse_int(ts) else {
        return false;
    };
    if req.now.saturating_sub(at) > TOLERANCE || at > req.now.saturating_add(TOLERANCE) {
        return false;
    }
    let want = hmac256(&key, &prefixed(&format!("{id}.{at}."), req.raw));
    for versioned in sigs.split(' ') {
        // As the original: an entry without a signature ends the check.
        let Some(sig) = versioned.split(',').nth(1).filter(|s| !s.is_empty()) else {
            return false;
        };
        if same_bytes(&base64_loose(sig), &want) {
            return true;
        }
    }
    false
}

/// The ConnectWise hosts the original fetches signing keys from.
const CONNECTWISE_HOSTS: [&str; 9] = [
    "api-au",
    "api-eu",
    "api-na",
    "sandbox-au",
    "sandbox-eu",
    "sandbox-na",
    "na",
    "eu",
    "au",
];

/// ConnectWise PSA: `x-content-signature` is the base64 HMAC-SHA256 of the
/// body keyed with the SHA-256 of the callback's signing key. The original
/// fetches that key from the payload's `Metadata.key_url` (an `https` URL
/// on one of ConnectWise's hosts, else refused); sluice fetches nothing
/// while routing, so the signing key is the integration's webhook secret
/// (the `signing_key` that URL answers), and without one every webhook is
/// refused (401), as the original refuses what it cannot check. A
/// `key_url` that is missing or not ConnectWise's is refused as in the
/// original. The type is `Type`; the connections are those whose
/// `metadata.productInstanceId` is `ProductInstanceId`. (The original
/// answers every refusal with a 500 `internal_error`; sluice with 401.)
pub(super) fn connectwise_psa(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    let body = req.body;
    let sig = req.header_set("x-content-signature").ok_or_else(missing)?;
    let key_url = get(body, "Metadata.key_url")
        .and_then(Value::as_str)
        .ok_or_else(invalid)?;
    let trusted = url::Url::parse(key_url).ok().is_some_and(|u| {
        u.scheme() == "https"
            && u.port().is_none()
            && u.host_str()
                .and_then(|h| h.strip_suffix(".myconnectwise.net"))
                .is_some_and(|sub| CONNECTWISE_HOSTS.contains(&sub))
    });
    if !trusted {
        return Err(invalid());
    }
    let key = set(secrets.webhook_secret).ok_or_else(invalid)?;
    let want = base64(&hmac256(&Sha256::digest(key.as_bytes()), req.raw));
    if !same(&want, sig) {
        return Err(invalid());
    }
    ok(
        vec![star(route(
            body,
            "Type",
            "ProductInstanceId",
            Some("metadata.productInstanceId"),
        ))],
        body.clone(),
    )
}

/// Cal.com: with a webhook secret, `x-cal-signature-256` must be the hex
/// HMAC-SHA256 of the body (unsigned webhooks pass without one, as in the
/// original). The connection is `nangoConnectionId` (query, else body;
/// 400 without); the type `triggerEvent`.
pub(super) fn cal_com(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    let body = req.body;
    if let Some(secret) = set(secrets.webhook_secret) {
        let sig = req.header_set("x-cal-signature-256").ok_or_else(missing)?;
        if !same(
            &hex(&hmac256(secret.as_bytes(), req.raw)),
            &sig.to_ascii_lowercase(),
        ) {
            return Err(invalid());
        }
    }
    let cid = req
        .query_param("nangoConnectionId")
        .or_else(|| text(body.get("nangoConnectionId")))
        .ok_or_else(missing_connection_id)?;
    ok(
        vec![direct(
            body,
            kind_at(body, "triggerEvent"),
            Some(Lookup::ConnectionId(cid)),
        )],
        body.clone(),
    )
}

/// VideoAsk: with a webhook secret, the `nango-webhook-secret` header the
/// webhook was registered with must be it (401 `webhook_invalid_signature`
/// otherwise, missing included, as in the original). The connection is
/// the `nango-connection-id` header (400 without); the type `type`.
pub(super) fn videoask(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    if let Some(secret) = set(secrets.webhook_secret)
        && !req
            .header("nango-webhook-secret")
            .is_some_and(|h| same(secret, h))
    {
        return Err(invalid());
    }
    let body = req.body;
    let cid = req
        .header_set("nango-connection-id")
        .ok_or_else(missing_connection_id)?;
    ok(
        vec![direct(
            body,
            kind_at(body, "type"),
            Some(Lookup::ConnectionId(cid.to_string())),
        )],
        body.clone(),
    )
}

/// Streak: `x-streak-webhook-token` (set when the webhook was registered)
/// is required (401 `webhook_missing_token`) and names the connections
/// whose `connection_config.streakWebhookToken` it is; there is no type.
pub(super) fn streak(req: &Incoming<'_>) -> Answer {
    let body = req.body;
    let token = req
        .header_set("x-streak-webhook-token")
        .ok_or_else(missing_token)?;
    ok(
        vec![direct(
            body,
            None,
            Some(Lookup::ConnectionConfig(
                "streakWebhookToken".into(),
                token.to_string(),
            )),
        )],
        body.clone(),
    )
}

/// Sentry (OAuth): `sentry-hook-signature` is the hex HMAC-SHA256, with the
/// OAuth client secret, of the body as `JSON.stringify` prints it (sluice
/// also takes one of the raw body, which Sentry signs as sent). The
/// original lets an unsigned webhook through and crashes on a signed one
/// without a client secret; sluice requires the signature when there is a
/// client secret and refuses a signed one without (401). The type is
/// `action`; the connections are those whose
/// `connection_config.installation_id` is `installation.id`. The original
/// also completes a pending OAuth connection when an installation is
/// created; sluice does not (its connections are made by its own flow).
pub(super) fn sentry_oauth(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    let body = req.body;
    match (
        req.header_set("sentry-hook-signature"),
        set(secrets.oauth_client_secret),
    ) {
        (None, None) => {}
        (None, Some(_)) => return Err(missing()),
        (Some(_), None) => return Err(invalid()),
        (Some(sig), Some(secret)) => {
            let stringified = sluice_runtime::js::stringify(body);
            let signed = |data: &[u8]| same(&hex(&hmac256(secret.as_bytes(), data)), sig);
            if !signed(stringified.as_bytes()) && !signed(req.raw) {
                return Err(invalid());
            }
        }
    }
    ok(
        vec![star(route(
            body,
            "action",
            "installation.id",
            Some("installation_id"),
        ))],
        body.clone(),
    )
}

/// The connection a PagerDuty webhook names: `x-nango-connection-id` (a
/// custom header of the subscription).
pub(super) fn pagerduty_connection(req: &Incoming<'_>) -> Option<String> {
    req.header_set("x-nango-connection-id").map(str::to_string)
}

/// PagerDuty: the connection is `x-nango-connection-id` (400 without; the
/// original's is a 500), and its secret its `metadata.webhookSecret` (one
/// string, or a list of exactly one): the handler reads the connection
/// first. With a secret, one of `x-pagerduty-signature`'s comma-separated
/// `v1=<hex HMAC-SHA256 of the body>` must match. Unsigned webhooks pass
/// without a secret, as in the original; a connection that does not exist
/// gets 200 and routes nothing. The type is `event.event_type`. The
/// original schedules the scripts before it checks the signature; sluice
/// schedules nothing for a refused webhook.
pub(super) fn pagerduty(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    let body = req.body;
    let cid = pagerduty_connection(req).ok_or_else(missing_nango_connection_id)?;
    let Some(metadata) = secrets.connection_metadata else {
        return ok(Vec::new(), body.clone());
    };
    let configured = metadata.get("webhookSecret");
    if truthy(configured) {
        let header = req
            .header_set("x-pagerduty-signature")
            .ok_or_else(missing)?;
        let secret = match configured {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Array(list)) => match list.as_slice() {
                [] => return Err(invalid_secret("No webhook secret configured")),
                // An empty one would let anyone sign.
                [Value::String(s)] if !s.is_empty() => s.as_str(),
                [_] => return Err(invalid_secret("Invalid webhook secret")),
                _ => {
                    return Err(invalid_secret(
                        "Multiple webhook secrets configured. Only one secret is allowed.",
                    ));
                }
            },
            _ => return Err(invalid_secret("Invalid webhook secret")),
        };
        let want = format!("v1={}", hex(&hmac256(secret.as_bytes(), req.raw)));
        if !header.split(',').any(|s| same(&want, s.trim())) {
            return Err(invalid());
        }
    }
    ok(
        vec![direct(
            body,
            kind_at(body, "event.event_type"),
            Some(Lookup::ConnectionId(cid)),
        )],
        body.clone(),
    )
}

/// Notion: with a webhook secret (the subscription's verification token),
/// `x-notion-signature` must be `sha256=` and the hex HMAC-SHA256 of the
/// body; unsigned webhooks pass without one, as in the original. Notion's
/// verification request (a body with `verification_token`) is not
/// checked and its token (alone: whatever else an unsigned body carries
/// is dropped) is forwarded to the app, which needs it; the original also
/// routes it, so a forged body with a `verification_token` reaches
/// scripts unsigned there, while sluice routes it nowhere. The
/// type is `type`; the connections are those whose
/// `connection_config.workspace_id` is `workspace_id`.
pub(super) fn notion(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    let body = req.body;
    if let Some(token) = body.as_object().and_then(|m| m.get("verification_token")) {
        // Unsigned by nature: only the token (all Notion sends) goes on.
        return ok(Vec::new(), json!({ "verification_token": token }));
    }
    if let Some(secret) = set(secrets.webhook_secret) {
        let sig = req.header_set("x-notion-signature").ok_or_else(missing)?;
        let want = format!("sha256={}", hex(&hmac256(secret.as_bytes(), req.raw)));
        if !same(&want, sig) {
            return Err(invalid());
        }
    }
    ok(
        vec![star(route(
            body,
            "type",
            "workspace_id",
            Some("workspace_id"),
        ))],
        body.clone(),
    )
}

/// Microsoft Graph (client credentials): a subscription's validation (a
/// `validationToken` query parameter) is answered with the token as
/// text. Each notification of `value` is checked against the webhook
/// secret (its `clientState` must be it; those that are not are dropped,
/// and none left is 401) and goes to the connections whose
/// `connection_config.tenantId` is its `tenantId`, typed by `changeType`;
/// the notifications kept are what is forwarded.
pub(super) fn microsoft_client_credentials(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    let body = req.body;
    if let Some(token) = req.query_param("validationToken") {
        return Ok(Routed {
            status: 200,
            response: Err(token),
            routes: Vec::new(),
            forward: body.clone(),
        });
    }
    let Some(notifications) = body
        .get("value")
        .and_then(Value::as_array)
        .filter(|n| !n.is_empty())
    else {
        return ok(Vec::new(), body.clone());
    };
    let kept: Vec<&Value> = match set(secrets.webhook_secret) {
        Some(state) => notifications
            .iter()
            .filter(|n| {
                n.get("clientState")
                    .and_then(Value::as_str)
                    .is_some_and(|c| same(c, state))
            })
            .collect(),
        None => notifications.iter().collect(),
    };
    if kept.is_empty() {
        return Err(invalid());
    }
    ok(
        kept.iter()
            .map(|n| star(route(n, "changeType", "tenantId", Some("tenantId"))))
            .collect(),
        json!({ "value": kept }),
    )
}

/// JobDiva: with a webhook secret, `x-hub-signature` must be `sha1=` and the
/// hex HMAC-SHA1 of the body (unsigned webhooks pass without one). The
/// original reads the header as `X-Hub-Signature`, a name its server never
/// gives (header names are lower case), so with a secret it refuses every
/// webhook; sluice checks it. Every connection of the integration is
/// routed to; the original takes `<type> <operation>` as the *path* of the
/// type in the body, which is none (so only `*` subscriptions run), and so
/// does sluice.
pub(super) fn jobdiva(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    if let Some(secret) = set(secrets.webhook_secret) {
        let sig = req.header_set("x-hub-signature").ok_or_else(missing)?;
        let mac = hmac_sha1(secret.as_bytes(), req.raw).ok_or_else(invalid)?;
        let want = format!("sha1={}", hex(&mac));
        if !same(&want, sig) {
            return Err(invalid());
        }
    }
    let body = req.body;
    let js = |k: &str| match body.get(k) {
        Some(v) => sluice_runtime::js::to_string(v),
        None => "undefined".to_string(),
    };
    let path = format!("{} {}", js("type"), js("operation"));
    ok(
        vec![direct(body, kind_at(body, &path), Some(Lookup::All))],
        body.clone(),
    )
}

/// Jobber: `x-jobber-hmac-sha256` is required and must be the base64
/// HMAC-SHA256 of the body with the OAuth client secret (none: 401). The
/// event is `data.webHookEvent` (none: 200, nothing routed): it is the
/// script's input, typed by `topic`, for the connections whose
/// `connection_config.accountId` is its `accountId`.
pub(super) fn jobber(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    let sig = req.header_set("x-jobber-hmac-sha256").ok_or_else(missing)?;
    let secret = set(secrets.oauth_client_secret).ok_or_else(invalid)?;
    if !same_bytes(&hmac256(secret.as_bytes(), req.raw), &base64_loose(sig)) {
        return Err(invalid());
    }
    let body = req.body;
    let event = get(body, "data.webHookEvent").filter(|e| truthy(Some(e)));
    let routes = match event {
        Some(event) => vec![star(route(event, "topic", "accountId", Some("accountId")))],
        None => Vec::new(),
    };
    ok(routes, body.clone())
}

/// The headers as an object (Google's push notifications are all
/// headers): repeated ones joined with `, `, as Node's server does.
fn headers_object(req: &Incoming<'_>) -> Value {
    let mut out = Map::new();
    for (k, v) in req.headers {
        match out.get_mut(k) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(v);
            }
            _ => {
                out.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    Value::Object(out)
}

/// A route for Google's push notifications: the headers are the input and
/// what is forwarded, `x-goog-resource-state` the type.
fn google_answer(req: &Incoming<'_>, lookup: Option<Lookup>) -> Answer {
    let headers = headers_object(req);
    let kind = req.header("x-goog-resource-state").map(str::to_string);
    ok(vec![direct(&headers, kind, lookup)], headers)
}

/// Google (Calendar push on the base integration): no signature. The
/// connections are those whose `metadata.googleCalendarWatchResourceUris`
/// has `x-goog-resource-uri`. (An empty header routes to every connection
/// in the original, as a lookup without a value; sluice routes it
/// nowhere.)
pub(super) fn google(req: &Incoming<'_>) -> Answer {
    let lookup = req
        .header_set("x-goog-resource-uri")
        .map(|uri| Lookup::Metadata("googleCalendarWatchResourceUris".into(), uri.to_string()));
    google_answer(req, lookup)
}

/// Google Drive: no signature. The connections are those whose
/// `metadata.googleDriveWatchResourceIds` has `x-goog-resource-id`, or (the
/// original's fallback, when none has) whose
/// `metadata.googleCalendarWatchResourceUris` has `x-goog-resource-uri`:
/// see [`Lookup::FirstOf`]. (An empty URI header routes nowhere, not to every
/// connection.)
pub(super) fn google_drive(req: &Incoming<'_>) -> Answer {
    let mut lookups = Vec::new();
    if let Some(id) = req.header_set("x-goog-resource-id") {
        lookups.push(Lookup::Metadata(
            "googleDriveWatchResourceIds".into(),
            id.to_string(),
        ));
    }
    if let Some(uri) = req.header_set("x-goog-resource-uri") {
        lookups.push(Lookup::Metadata(
            "googleCalendarWatchResourceUris".into(),
            uri.to_string(),
        ));
    }
    google_answer(req, first_of(lookups))
}

/// The original's `hashEmailAddress`: the hex SHA-256 of
/// `nango.emailAddressHash.v1:` and the address trimmed and in lower case.
fn email_hash(email: &str) -> String {
    hex(&Sha256::digest(
        format!("nango.emailAddressHash.v1:{}", email.trim().to_lowercase()).as_bytes(),
    ))
}

/// The connections of a mailbox: `connection_config.emailAddressHash`,
/// else `metadata.emailAddress`, else `metadata.email`.
fn email_lookups(email: &str) -> Vec<Lookup> {
    vec![
        Lookup::ConnectionConfig("emailAddressHash".into(), email_hash(email)),
        Lookup::Metadata("emailAddress".into(), email.to_string()),
        Lookup::Metadata("email".into(), email.to_string()),
    ]
}

/// Google Calendar: no signature; without `x-goog-resource-uri`, 200 and
/// nothing routed. The connections are those whose
/// `metadata.googleCalendarWatchResourceUris` has the URI or, the
/// original's fallbacks for a primary calendar, those of the mailbox in
/// the URI's `/calendars/<address>/` (see [`Lookup::FirstOf`]). The original
/// crashes on an address that does not percent-decode; sluice then only
/// looks up the URI.
pub(super) fn google_calendar(req: &Incoming<'_>) -> Answer {
    let Some(uri) = req.header_set("x-goog-resource-uri") else {
        return ok(Vec::new(), headers_object(req));
    };
    let mut lookups = vec![Lookup::Metadata(
        "googleCalendarWatchResourceUris".into(),
        uri.to_string(),
    )];
    if let Some(email) = calendar_address(uri) {
        lookups.extend(email_lookups(&email));
    }
    google_answer(req, first_of(lookups))
}

/// The first `/calendars/<x>/` of a URI, `<x>` percent-decoded.
fn calendar_address(uri: &str) -> Option<String> {
    const MARK: &str = "/calendars/";
    uri.match_indices(MARK).find_map(|(at, _)| {
        let rest = &uri[at + MARK.len()..];
        let end = rest.find('/').filter(|end| *end > 0)?;
        percent_decode(&rest[..end])
    })
}

/// `decodeURIComponent`, `None` where it throws.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = bytes.get(i + 1..i + 3)?;
            if !pair.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Gmail (Pub/Sub push): the original checks an `Authorization` bearer
/// token when there is one (a Google-signed JWT: Google's keys fetched,
/// issuer `https://accounts.google.com`, audience the webhook's URL, not
/// expired) and lets a webhook without one through. Sluice fetches no keys
/// while routing, so it does not verify the token's signature nor its
/// audience: it refuses one that is not a bearer JWT from that issuer or
/// that has expired (401), which is all it can check. The mailbox is
/// `emailAddress` in the base64 JSON of `message.data` (a body without it:
/// 400; the original's is a 500); the input is the body with `type: "*"`,
/// `emailAddress` and `emailAddressHash`, for the mailbox's connections
/// (see [`Lookup::FirstOf`]).
pub(super) fn gmail(req: &Incoming<'_>) -> Answer {
    if let Some(auth) = req.header_set("authorization")
        && !google_token_plausible(auth, req.now)
    {
        return Err(invalid());
    }
    let body = req.body;
    let data = get(body, "message.data")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_body("a Gmail notification has no `message.data`"))?;
    let decoded: Value = serde_json::from_slice(&base64_loose(data))
        .map_err(|_| bad_body("a Gmail notification's `message.data` is not base64 JSON"))?;
    let email = decoded
        .get("emailAddress")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty());
    let mut input = match body {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    input.insert("type".into(), json!("*"));
    if let Some(email) = email {
        input.insert("emailAddress".into(), json!(email));
        input.insert("emailAddressHash".into(), json!(email_hash(email)));
    }
    let lookup = email.and_then(|e| first_of(email_lookups(e)));
    ok(
        vec![direct(&Value::Object(input), Some("*".into()), lookup)],
        body.clone(),
    )
}

/// What can be checked of a Google OIDC token without Google's keys.
fn google_token_plausible(auth: &str, now: i64) -> bool {
    let Some(token) = auth
        .strip_prefix("Bearer ")
        .and_then(|t| t.split(' ').next())
    else {
        return false;
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return false;
    };
    if header.is_empty() || signature.is_empty() {
        return false;
    }
    if serde_json::from_slice::<Value>(&base64_loose(header)).is_err() {
        return false;
    }
    let Ok(claims) = serde_json::from_slice::<Value>(&base64_loose(payload)) else {
        return false;
    };
    let expired = claims
        .get("exp")
        .and_then(Value::as_f64)
        .is_some_and(|exp| exp < now as f64);
    claims.get("iss").and_then(Value::as_str) == Some("https://accounts.google.com") && !expired
}

/// Folk (Svix): with a webhook secret, `webhook-id`, `webhook-timestamp`
/// and `webhook-signature` are required (401
/// `webhook_invalid_signature` without, as in the original) and one of the
/// signatures (`v1,` optional) must be the base64 HMAC-SHA256 of
/// `<id>.<timestamp>.<body>` with the secret's bytes (base64 after
/// `whsec_`); like the original, the timestamp's age is not checked.
/// Unsigned webhooks pass without a secret, as in the original (Folk's
/// webhooks are per connection). The connection is `nangoConnectionId` in
/// the query (400 without); the type `type`.
pub(super) fn folk(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    if let Some(secret) = set(secrets.webhook_secret) {
        let (Some(id), Some(ts), Some(sigs)) = (
            req.header_set("webhook-id"),
            req.header_set("webhook-timestamp"),
            req.header_set("webhook-signature"),
        ) else {
            return Err(invalid());
        };
        let key = base64_loose(secret.strip_prefix("whsec_").unwrap_or(secret));
        if key.is_empty() {
            return Err(invalid_secret(
                "the integration's webhook secret decodes to no key bytes",
            ));
        }
        let want = hmac256(&key, &prefixed(&format!("{id}.{ts}."), req.raw));
        let signed = sigs
            .split(' ')
            .map(|s| s.strip_prefix("v1,").unwrap_or(s))
            .any(|s| same_bytes(&base64_loose(s), &want));
        if !signed {
            return Err(invalid());
        }
    }
    let body = req.body;
    let cid = req
        .query_param("nangoConnectionId")
        .ok_or_else(missing_connection_id)?;
    ok(
        vec![direct(
            body,
            kind_at(body, "type"),
            Some(Lookup::ConnectionId(cid)),
        )],
        body.clone(),
    )
}

/// Autotask: `x-hook-signature` is required and must be the base64
/// HMAC-SHA1 of the body with the webhook secret (`sha1=` optional); no
/// secret refuses every webhook (401), as in the original. The type is
/// `EntityType`; the connections are those whose
/// `connection_config.webhookGuid` is `Guid`.
pub(super) fn autotask(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    let sig = req.header_set("x-hook-signature").ok_or_else(missing)?;
    let secret = set(secrets.webhook_secret).ok_or_else(invalid)?;
    let given = sig.strip_prefix("sha1=").unwrap_or(sig);
    let mac = hmac_sha1(secret.as_bytes(), req.raw).ok_or_else(invalid)?;
    if !same(&base64(&mac), given) {
        return Err(invalid());
    }
    let body = req.body;
    ok(
        vec![star(route(body, "EntityType", "Guid", Some("webhookGuid")))],
        body.clone(),
    )
}

/// Attio: with a webhook secret, `x-attio-signature` must be the hex
/// HMAC-SHA256 of the body (unsigned webhooks pass without one, as in the
/// original). Each of `events` (none: 200, nothing routed; not a list:
/// 400, the original's is a 500) is typed by `event_type` and goes to the
/// connections whose `connection_config.workspace_id` is its
/// `id.workspace_id`.
pub(super) fn attio(req: &Incoming<'_>, secrets: &Secrets<'_>) -> Answer {
    if let Some(secret) = set(secrets.webhook_secret) {
        let sig = req.header_set("x-attio-signature").ok_or_else(missing)?;
        if !same(&hex(&hmac256(secret.as_bytes(), req.raw)), sig) {
            return Err(invalid());
        }
    }
    let body = req.body;
    let routes = match body.get("events") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(events)) => events
            .iter()
            .map(|e| {
                star(route(
                    e,
                    "event_type",
                    "id.workspace_id",
                    Some("workspace_id"),
                ))
            })
            .collect(),
        // The original crashes (500) on an object or a number, and
        // routes nothing for anything else.
        Some(Value::Object(_)) => {
            return Err(bad_body("an Attio payload's `events` is not a list"));
        }
        Some(Value::Number(n)) if n.as_f64() != Some(0.0) => {
            return Err(bad_body("an Attio payload's `events` is not a list"));
        }
        Some(_) => Vec::new(),
    };
    ok(routes, body.clone())
}

/// Affinity: no signature. Every connection of the integration is routed
/// to; the original takes the value of `type` as the *path* of the type in
/// the body (`person.created` looks up `body.person.created`), which is
/// almost always none (so only `*` subscriptions run), and so does
/// sluice.
pub(super) fn affinity(req: &Incoming<'_>) -> Answer {
    let body = req.body;
    let kind = body
        .get("type")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .and_then(|path| kind_at(body, path));
    ok(vec![direct(body, kind, Some(Lookup::All))], body.clone())
}
