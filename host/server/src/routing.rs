//! Providers' incoming webhooks (§4.6): for each `webhook_routing_script`
//! of the providers catalogue, how its signature is checked and which
//! connections and webhook subscriptions a payload is for. Pure functions
//! over the request: the handler checks and stores, a worker routes.
//!
//! Where the original fails with a 500 on a malformed signature header (a
//! length mismatch thrown by `timingSafeEqual`), sluice answers 401; where
//! it computes a signature and ignores the result (Checkr), sluice refuses
//! a bad one when the integration has a webhook secret.

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
}

/// The request as received.
pub struct Incoming<'a> {
    /// Lower-case names.
    pub headers: &'a [(String, String)],
    pub raw: &'a [u8],
    /// The body parsed (JSON, or a form as an object).
    pub body: &'a Value,
    pub content_type: &'a str,
}

impl Incoming<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
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
}

/// One `executeScriptForWebhooks`: the script input, its type, and whose.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Route {
    pub input: Value,
    pub kind: Option<String>,
    pub lookup: Option<Lookup>,
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
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
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

fn route(input: &Value, type_path: &str, id_path: &str, prop: Option<&str>) -> Route {
    let kind = get(input, type_path).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    });
    let lookup = text(get(input, id_path)).map(|v| match prop.unwrap_or(id_path) {
        "connectionId" => Lookup::ConnectionId(v),
        p => match p.strip_prefix("metadata.") {
            Some(key) => Lookup::Metadata(key.to_string(), v),
            None => Lookup::ConnectionConfig(p.to_string(), v),
        },
    });
    Route {
        input: input.clone(),
        kind,
        lookup,
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
            let secret = secrets.webhook_secret.ok_or_else(invalid)?;
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
            let secret = secrets.oauth_client_secret.ok_or_else(invalid)?;
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
            if let Some(secret) = secrets.webhook_secret
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
            if secrets.webhook_secret.is_some() && sig.is_none() {
                return Err(missing());
            }
            if let Some(sig) = sig {
                let secret = secrets.webhook_secret.ok_or_else(invalid)?;
                let want = format!("sha256={}", hex(&hmac256(secret.as_bytes(), req.raw)));
                if !same(&want, sig) {
                    return Err(invalid());
                }
            }
            ok(
                vec![route(
                    body,
                    "action",
                    "installation.id",
                    Some("installation_id"),
                )],
                body.clone(),
            )
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
            let secret = secrets.webhook_secret.ok_or_else(invalid)?;
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
        _ => return None,
    })
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
        Lookup::Metadata(key, want) => match metadata.get(key) {
            Some(Value::Array(a)) => a.iter().any(|v| eq(v, want)),
            Some(Value::Object(o)) => o.contains_key(want),
            Some(v) => eq(v, want),
            None => false,
        },
        Lookup::ConnectionConfig(key, want) => config.get(key).is_some_and(|v| eq(v, want)),
    }
}

/// The incoming headers forwarded to the app: all but these prefixes.
pub fn forwarded_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    const DROP: [&str; 15] = [
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
    headers
        .iter()
        .filter(|(k, _)| !DROP.iter().any(|d| k.starts_with(d)))
        .filter(|(k, _)| !k.starts_with("webhook-") && !k.starts_with("x-nango-"))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    const NONE: Secrets<'static> = Secrets {
        webhook_secret: None,
        oauth_client_id: None,
        oauth_client_secret: None,
    };

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
        let good = vec![(
            "x-hub-signature-256".to_string(),
            format!("sha256={}", hex(&hmac256(b"gh", raw.as_bytes()))),
        )];
        let r = route_webhook(
            "githubAppWebhookRouting",
            &incoming(&good, raw.as_bytes(), &body),
            &with_secret,
        )
        .unwrap()
        .unwrap();
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
}
