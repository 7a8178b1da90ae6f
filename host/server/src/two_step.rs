//! TWO_STEP connections (58 providers of the catalogue: Workday, Tableau,
//! Toast, NetSuite client credentials…): the user gives their own
//! credentials, and the token scripts' requests carry is what the
//! provider's token endpoint answers for them. The token is asked for when
//! the connection is made (imported with `credentials.type: TWO_STEP` and
//! no token, or from the browser at `POST /auth/two-step/:key`), and
//! again with the same credentials once it expires.
//!
//! The provider's definition says how: `token_url`, `token_params` (a
//! body whose strings are templates of the credentials, the connection's
//! configuration and `${now}`), `token_headers`, `body_format` (`json`, the
//! default, or `form`), `token_request_method` (`GET` sends no body), and
//! where the answer holds the token and its expiry (`token_response`:
//! dotted paths; `token_expiration_strategy` `expireIn`, seconds or a
//! duration such as `1h`, or `expireAt`, a date, the default), else
//! `token_expires_in_ms`; a token that is a JWT with an `exp` and no
//! expiry in the answer expires then. `token_response_metadata` names
//! fields of the answer kept in the connection's configuration.
//! What a few definitions add (a JWT signed with the user's key, a SAML or
//! JWT assertion, further steps, XML bodies, a separate refresh request)
//! is refused with a message naming it.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sluice_runtime::connection::{Connection, Credentials};

/// What a token request sends.
pub(crate) struct TokenRequest {
    pub get: bool,
    pub headers: Vec<(String, String)>,
    /// The content type and the body (none for `GET`).
    pub body: Option<(&'static str, String)>,
    /// Where a refresh goes instead of the token URL (`refresh_url`).
    pub url: Option<String>,
    /// What was made for it (a signed JWT, an assertion): kept out of a
    /// refusal's text like the user's secrets.
    pub made: Vec<String>,
    /// A refresh request (the stored refresh token sent).
    pub refreshing: bool,
}

/// The credential field listing the fields the last answer's headers gave
/// (replaced by the next answer's, never the user's).
const HEADER_KEYS: &str = "_header_keys";

/// The credential fields that are the token's, not the user's.
const TOKEN_FIELDS: &[&str] = &["type", "token", "refresh_token", "expires_at", "raw"];

/// Why a provider's TWO_STEP definition cannot be followed, if it cannot.
pub(crate) fn unsupported(definition: &Map<String, Value>) -> Option<String> {
    // Computed template values other than the ones sluice computes
    // (`base64`, `fingerprint`): Avanan's `sha256Hex(…)` signatures.
    let text = Value::Object(definition.clone()).to_string();
    for (at, _) in text.match_indices("${") {
        let name: String = text[at + 2..]
            .chars()
            .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
            .collect();
        if !name.is_empty()
            && text[at + 2 + name.len()..].starts_with('(')
            && !matches!(name.as_str(), "base64" | "fingerprint")
        {
            return Some(format!(
                "its templates compute `{name}(…)`, which sluice's TWO_STEP connections do not do yet"
            ));
        }
    }
    if definition.contains_key("additional_steps") {
        return Some(
            "its definition asks for further requests after the first (`additional_steps`), which sluice's TWO_STEP connections do not do yet"
                .into(),
        );
    }
    if let Some(assertion) = definition.get("assertion") {
        let kind = assertion.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "jwt" {
            return Some(format!(
                "its definition asks for a `{kind}` assertion (`assertion.type`), which sluice does not make (JWT assertions it does)"
            ));
        }
        let alg = assertion
            .get("header")
            .and_then(|h| h.get("alg"))
            .and_then(Value::as_str)
            .unwrap_or("HS256");
        if !crate::jwt::ALGORITHMS.contains(&alg) {
            return Some(format!(
                "its assertion is signed `{alg}` (`assertion.header.alg`); sluice signs {}",
                crate::jwt::ALGORITHMS.join(", ")
            ));
        }
    }
    match definition.get("body_format").and_then(Value::as_str) {
        None | Some("json") | Some("form") => None,
        Some(other) => Some(format!(
            "its token request is `{other}` (`body_format`); sluice sends `json` and `form`"
        )),
    }
}

/// What a token request makes before it is sent: the JWT its definition's
/// `signature` asks for, its JWT `assertion`, and whether it is a
/// refresh (the stored refresh token sent).
struct Made {
    signed: Option<String>,
    assertion: Option<String>,
    refreshing: bool,
}

/// The value of template placeholder `key` for connection `c`: its
/// credentials (`credentials.x`, or `x` alone, as the original resolves
/// them; not the token it is asking to replace), its configuration
/// (`connectionConfig.x`), `now`, `random`, or what the request made
/// (`token`, `assertion`, a refresh's `refresh_token`).
fn lookup(c: &Connection, made: &Made, key: &str) -> Option<String> {
    match key {
        "now" => return Some(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "token" | "credentials.token" => return made.signed.clone(),
        "assertion" | "credentials.assertion" => return made.assertion.clone(),
        // A refresh request's (`refresh_token_params`,
        // `refresh_token_headers`).
        "refresh_token" | "credentials.refresh_token" if made.refreshing => {
            return c.credentials.field("refresh_token").map(str::to_string);
        }
        "random" => return Some(uuid::Uuid::new_v4().to_string()),
        _ if key.starts_with("now") => return now_expression(key, Utc::now()),
        _ => {}
    }
    let bare = key.strip_prefix("credentials.").unwrap_or(key);
    if TOKEN_FIELDS.contains(&bare) {
        return None;
    }
    c.lookup(key)
        .or_else(|| match c.credentials.as_map().get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
}

/// `now:FORMAT` and `now+N:UNIT:FORMAT` (`${now+7:days:YYYY-MM-DD}`,
/// Tripletex's): the time, moved by `N` units (`seconds`, `minutes`,
/// `hours`, `days`, `weeks`), formatted with `YYYY`, `MM`, `DD`, `HH`,
/// `mm`, `ss`, `X` (epoch seconds) or `x` (milliseconds).
fn now_expression(key: &str, now: DateTime<Utc>) -> Option<String> {
    let rest = key.strip_prefix("now")?;
    let (at, format) = if let Some(format) = rest.strip_prefix(':') {
        (now, format)
    } else {
        let (amount, rest) = rest.split_once(':')?;
        let (unit, format) = rest.split_once(':')?;
        let n: i64 = amount.parse().ok()?;
        let step = match unit.trim_end_matches('s') {
            "second" => chrono::Duration::try_seconds(n)?,
            "minute" => chrono::Duration::try_minutes(n)?,
            "hour" => chrono::Duration::try_hours(n)?,
            "day" => chrono::Duration::try_days(n)?,
            "week" => chrono::Duration::try_weeks(n)?,
            _ => return None,
        };
        (now.checked_add_signed(step)?, format)
    };
    Some(match format {
        "X" => at.timestamp().to_string(),
        "x" => at.timestamp_millis().to_string(),
        _ => {
            use chrono::{Datelike as _, Timelike as _};
            format
                .replace("YYYY", &format!("{:04}", at.year()))
                .replace("MM", &format!("{:02}", at.month()))
                .replace("DD", &format!("{:02}", at.day()))
                .replace("HH", &format!("{:02}", at.hour()))
                .replace("mm", &format!("{:02}", at.minute()))
                .replace("ss", &format!("{:02}", at.second()))
        }
    })
}

/// `v` with every string expanded as a template with `look`; a string with
/// a placeholder it cannot fill is left out (its key, or its array item).
fn expand(v: &Value, look: &dyn Fn(&str) -> Option<String>) -> Option<Value> {
    Some(match v {
        Value::String(t) => Value::String(sluice_runtime::template::expand(t, look)?),
        Value::Object(m) => Value::Object(
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), expand(v, look)?)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().filter_map(|v| expand(v, look)).collect()),
        other => other.clone(),
    })
}

/// The JWT a definition's `signature` asks for (see [`crate::jwt`]), or
/// `None` for a definition without one.
fn signed_token(definition: &Map<String, Value>, c: &Connection) -> Result<Option<String>, String> {
    if definition.get("signature").is_none() {
        return Ok(None);
    }
    crate::jwt::make(definition, c, Utc::now().timestamp()).map(|made| Some(made.token))
}

/// The token request for connection `c` as `definition` describes it.
pub(crate) fn request(
    definition: &Map<String, Value>,
    c: &Connection,
) -> Result<TokenRequest, String> {
    if let Some(why) = unsupported(definition) {
        return Err(why);
    }
    // A definition with a refresh request of its own (Aspire's, SalesMsg's)
    // sends it while the connection holds a refresh token.
    let refreshing = (definition.contains_key("refresh_token_params")
        || definition.contains_key("refresh_token_headers"))
        && c.credentials.field("refresh_token").is_some();
    let made = Made {
        signed: signed_token(definition, c)?,
        assertion: crate::jwt::assertion(definition, c, Utc::now().timestamp())?,
        refreshing,
    };
    let look = |k: &str| lookup(c, &made, k);
    let get = definition
        .get("token_request_method")
        .and_then(Value::as_str)
        .is_some_and(|m| m.eq_ignore_ascii_case("GET"));
    let (params_key, headers_key) = if refreshing {
        (
            "refresh_token_params",
            if definition.contains_key("refresh_token_headers") {
                "refresh_token_headers"
            } else {
                "token_headers"
            },
        )
    } else {
        ("token_params", "token_headers")
    };
    let url = refreshing
        .then(|| definition.get("refresh_url").and_then(Value::as_str))
        .flatten()
        .map(str::to_string);
    let mut headers = Vec::new();
    for (name, value) in definition
        .get(headers_key)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let Some(Value::String(value)) = expand(value, &look) else {
            continue;
        };
        headers.push((name.clone(), value));
    }
    let body = if get {
        None
    } else {
        let params = definition
            .get(params_key)
            .and_then(|p| expand(p, &look))
            .unwrap_or_else(|| Value::Object(Map::new()));
        Some(
            if definition.get("body_format").and_then(Value::as_str) == Some("form") {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in params.as_object().into_iter().flatten() {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => continue,
                        other => other.to_string(),
                    };
                    form.append_pair(k, &text);
                }
                ("application/x-www-form-urlencoded", form.finish())
            } else {
                ("application/json", params.to_string())
            },
        )
    };
    Ok(TokenRequest {
        get,
        headers,
        body,
        url,
        made: made
            .signed
            .iter()
            .chain(made.assertion.iter())
            .cloned()
            .collect(),
        refreshing,
    })
}

fn at_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A duration as `1h`, `30m`, `45s`, `500ms`, `2d` (or a bare number of
/// milliseconds), in milliseconds.
fn duration_ms(text: &str) -> Option<i64> {
    let t = text.trim();
    let split = t
        .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().ok()?;
    let per = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        _ => return None,
    };
    let ms = n * per;
    (0.0..1e15).contains(&ms).then_some(ms as i64)
}

/// A date as an answer gives one: RFC 3339, or seconds (milliseconds past
/// 10^11) since the epoch.
fn date(v: &Value) -> Option<DateTime<Utc>> {
    let number = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match DateTime::parse_from_rfc3339(s.trim()) {
            Ok(d) => return Some(d.with_timezone(&Utc)),
            Err(_) => s.trim().parse::<f64>().ok(),
        },
        _ => None,
    }?;
    let ms = if number > 1e11 {
        number
    } else {
        number * 1000.0
    };
    (ms.is_finite() && ms.abs() < 1e15)
        .then(|| DateTime::from_timestamp_millis(ms as i64))
        .flatten()
}

/// Tableau's `estimatedTimeToExpiration`, `D:HH:MM` from now.
fn day_hour_minute(v: &Value, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut parts = v.as_str()?.split(':');
    let (Some(d), Some(h), Some(m), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let (d, h, m): (i64, i64, i64) = (d.parse().ok()?, h.parse().ok()?, m.parse().ok()?);
    if !(0..24).contains(&h) || !(0..60).contains(&m) || !(0..100_000).contains(&d) {
        return None;
    }
    now.checked_add_signed(chrono::Duration::minutes((d * 24 + h) * 60 + m))
}

/// When a JWT says it expires (`exp`), if `token` is one.
fn jwt_expiry(token: &str) -> Option<DateTime<Utc>> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    (exp.is_finite() && exp.abs() < 1e12)
        .then(|| DateTime::from_timestamp(exp as i64, 0))
        .flatten()
}

/// The credentials to keep for connection `c` from its token endpoint's
/// answer `raw`: the user's own fields, the token, when it expires, a
/// refresh token if the answer has one, and the answer itself.
pub(crate) fn credentials(
    definition: &Map<String, Value>,
    c: &Connection,
    answer: Value,
    from_headers: Map<String, Value>,
) -> Result<Credentials, String> {
    let shape = definition
        .get("token_response")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let path = |k: &str| {
        shape
            .get(k)
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
    };
    let token = match path("token") {
        Some(p) => at_path(&answer, p).and_then(text).ok_or_else(|| {
            format!("the token endpoint's answer has no token at `{p}` (`token_response.token`)")
        })?,
        // No path: the answer is the token (JobDiva's).
        // A page of text (an HTML error answered 200) is not one.
        None => text(&answer)
            .map(|t| t.trim().to_string())
            .filter(|t| {
                !t.is_empty()
                    && t.len() <= 4096
                    && !t.chars().any(|ch| ch.is_whitespace() || ch.is_control() || ch == '<')
            })
            .ok_or("the token endpoint's answer is not a token (the provider's definition takes the whole answer as one: at most 4 KiB, no spaces or markup)")?,
    };
    let now = Utc::now();
    let expiration = path("token_expiration").and_then(|p| at_path(&answer, p));
    let strategy = path("token_expiration_strategy").unwrap_or("expireAt");
    // An expiry that is empty, zero or not understood is none (as the
    // original leaves it), and the definition's fixed lifetime applies.
    let expiration = expiration.filter(|v| match v {
        Value::String(s) => {
            let s = s.trim();
            !s.is_empty() && s.parse::<f64>().ok().is_none_or(|n| n > 0.0)
        }
        Value::Number(n) => n.as_f64().is_some_and(|n| n > 0.0),
        _ => false,
    });
    let given = match (expiration, strategy) {
        (Some(v), "expireIn") => match v {
            Value::Number(n) => n.as_f64().map(|s| s * 1000.0),
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(secs) => Some(secs * 1000.0),
                Err(_) => duration_ms(s).map(|ms| ms as f64),
            },
            _ => None,
        }
        .filter(|ms| (1.0..1e15).contains(ms))
        .and_then(|ms| now.checked_add_signed(chrono::Duration::milliseconds(ms as i64))),
        (Some(v), _) => date(v).or_else(|| day_hour_minute(v, now)),
        (None, _) => None,
    }
    // An expiry already past (`0:00:00`, a date gone) would ask for a
    // token at every use: none.
    .filter(|at| *at > now);
    let mut expires_at = given.or_else(|| {
        match definition
            .get("token_expires_in_ms")
            .and_then(Value::as_i64)
        {
            Some(ms) if ms > 0 && ms < 1_000_000_000_000 => {
                Some(now + chrono::Duration::milliseconds(ms))
            }
            _ => None,
        }
    });
    if given.is_none()
        && let Some(exp) = jwt_expiry(&token)
    {
        expires_at = Some(expires_at.map_or(exp, |at| at.min(exp)));
    }
    // The user's own fields: not the token's, nor what the previous
    // answer's headers gave (listed in `_header_keys`).
    let previous: Vec<String> = c
        .credentials
        .as_map()
        .get(HEADER_KEYS)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let mut creds: Map<String, Value> = c
        .credentials
        .as_map()
        .iter()
        .filter(|(k, _)| {
            !TOKEN_FIELDS.contains(&k.as_str())
                && k.as_str() != HEADER_KEYS
                && !previous.contains(k)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Values of the answer's headers the definition names (SAP Business
    // One's session cookie as `_cookies`), never in place of the user's.
    let mut taken = Vec::new();
    for (k, v) in from_headers {
        if !TOKEN_FIELDS.contains(&k.as_str()) && k != HEADER_KEYS && !creds.contains_key(&k) {
            taken.push(Value::String(k.clone()));
            creds.insert(k, v);
        }
    }
    if !taken.is_empty() {
        creds.insert(HEADER_KEYS.into(), Value::Array(taken));
    }
    creds.insert("type".into(), Value::String("TWO_STEP".into()));
    creds.insert("token".into(), Value::String(token));
    if let Some(r) = path("refresh_token")
        .and_then(|p| at_path(&answer, p))
        .and_then(text)
    {
        creds.insert("refresh_token".into(), Value::String(r));
    }
    if let Some(at) = expires_at {
        creds.insert(
            "expires_at".into(),
            Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
    }
    creds.insert("raw".into(), answer);
    Credentials::try_from(creds)
}

/// The values of an answer's headers a definition names
/// (`token_response_headers`): each cookie of `set-cookie` by its name and
/// all of them as `_cookies` (`a=1; b=2`, for a `cookie` header), any
/// other header by its name, as the original takes them.
pub(crate) fn header_values(
    definition: &Map<String, Value>,
    headers: &reqwest::header::HeaderMap,
) -> Map<String, Value> {
    let mut out = Map::new();
    let mut cookies = Vec::new();
    for name in definition
        .get("token_response_headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let name = name.to_ascii_lowercase();
        if name == "set-cookie" {
            for value in headers.get_all("set-cookie") {
                let Ok(value) = value.to_str() else { continue };
                let pair = value.split(';').next().unwrap_or_default();
                if let Some((k, v)) = pair.split_once('=')
                    && !k.trim().is_empty()
                {
                    let (k, v) = (k.trim(), v.trim());
                    out.insert(k.to_string(), Value::String(v.to_string()));
                    cookies.push(format!("{k}={v}"));
                }
            }
        } else if let Some(v) = headers.get(&name).and_then(|v| v.to_str().ok()) {
            out.insert(name, Value::String(v.to_string()));
        }
    }
    if !cookies.is_empty() {
        out.insert("_cookies".into(), Value::String(cookies.join("; ")));
    }
    out
}

/// The fields of the answer the definition keeps in the connection's
/// configuration (`token_response_metadata`).
pub(crate) fn metadata(definition: &Map<String, Value>, creds: &Credentials) -> Map<String, Value> {
    let raw = creds.as_map().get("raw").cloned().unwrap_or_default();
    definition
        .get("token_response_metadata")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|k| {
            let v =
                at_path(&raw, k).filter(|v| v.is_string() || v.is_number() || v.is_boolean())?;
            Some((k.to_string(), v.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn connection(creds: Value, config: Value) -> Connection {
        serde_json::from_value(json!({
            "connection_id": "c", "provider_config_key": "p", "provider": "x",
            "credentials": creds, "connection_config": config,
        }))
        .unwrap()
    }

    fn definition(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_request_is_built_from_the_credentials_and_the_configuration() {
        let c = connection(
            json!({"type": "TWO_STEP", "clientId": "id", "clientSecret": "s3cret"}),
            json!({"tenant": "t1"}),
        );
        let d = definition(json!({
            "token_response": {"token": "access_token"},
            "token_params": {"client_id": "${credentials.clientId}", "secret": "${clientSecret}",
                "nested": {"tenant": "${connectionConfig.tenant}", "n": 3}, "missing": "${credentials.nope}"},
            "token_headers": {"authorization": "Basic ${base64(${credentials.clientId}:${credentials.clientSecret})}"},
        }));
        let r = request(&d, &c).unwrap();
        assert!(!r.get);
        let (content_type, body) = r.body.unwrap();
        assert_eq!(content_type, "application/json");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            json!({"client_id": "id", "secret": "s3cret", "nested": {"tenant": "t1", "n": 3}})
        );
        assert_eq!(
            r.headers,
            [(
                "authorization".to_string(),
                "Basic aWQ6czNjcmV0".to_string()
            )]
        );
        let mut form = d.clone();
        form.insert("body_format".into(), json!("form"));
        let (content_type, body) = request(&form, &c).unwrap().body.unwrap();
        assert_eq!(content_type, "application/x-www-form-urlencoded");
        assert!(
            body.starts_with("client_id=id&secret=s3cret&nested="),
            "{body}"
        );
        let mut get = d.clone();
        get.insert("token_request_method".into(), json!("GET"));
        assert!(request(&get, &c).unwrap().body.is_none());
        let mut xml = d;
        xml.insert("body_format".into(), json!("xml"));
        let Err(e) = request(&xml, &c) else {
            panic!("an XML body was built")
        };
        assert!(e.contains("`xml`"), "{e}");
    }

    #[test]
    fn the_answer_gives_the_token_its_expiry_and_the_metadata() {
        let c = connection(
            json!({"type": "TWO_STEP", "clientId": "id", "token": "old", "expires_at": "2020-01-01T00:00:00Z"}),
            json!({}),
        );
        let d = definition(json!({
            "token_response": {"token": "token.accessToken", "token_expiration": "token.expiresIn",
                "token_expiration_strategy": "expireIn"},
            "token_response_metadata": ["region"],
        }));
        let creds = credentials(
            &d,
            &c,
            json!({"token": {"accessToken": "new", "expiresIn": 3600}, "region": "eu"}),
            Map::new(),
        )
        .unwrap();
        assert_eq!(creds.field("token"), Some("new"));
        assert_eq!(creds.field("clientId"), Some("id"));
        let at = DateTime::parse_from_rfc3339(creds.field("expires_at").unwrap()).unwrap();
        let left = at.with_timezone(&Utc) - Utc::now();
        assert!((3590..=3600).contains(&left.num_seconds()), "{left}");
        assert_eq!(metadata(&d, &creds), definition(json!({"region": "eu"})));
        // A duration, a date, a fixed lifetime, none, a JWT's own `exp`.
        let with = |shape: Value, extra: Value, answer: Value| {
            let mut d = definition(json!({"token_response": shape}));
            d.extend(definition(extra));
            credentials(&d, &c, answer, Map::new())
                .map(|c| c.field("expires_at").map(str::to_string))
        };
        let hour = with(
            json!({"token": "t", "token_expiration": "e", "token_expiration_strategy": "expireIn"}),
            json!({}),
            json!({"t": "x", "e": "1h"}),
        )
        .unwrap()
        .unwrap();
        let left = DateTime::parse_from_rfc3339(&hour)
            .unwrap()
            .with_timezone(&Utc)
            - Utc::now();
        assert!((3590..=3600).contains(&left.num_seconds()), "{left}");
        assert_eq!(
            with(
                json!({"token": "t", "token_expiration": "e"}),
                json!({}),
                json!({"t": "x", "e": "2030-05-01T10:00:00Z"})
            ),
            Ok(Some("2030-05-01T10:00:00.000Z".into()))
        );
        assert_eq!(
            with(
                json!({"token": "t", "token_expiration": "e"}),
                json!({}),
                json!({"t": "x", "e": 1_900_000_000})
            ),
            Ok(Some("2030-03-17T17:46:40.000Z".into()))
        );
        assert_eq!(
            with(
                json!({"token": "t"}),
                json!({"token_expires_in_ms": 0}),
                json!({"t": "x"})
            ),
            Ok(None)
        );
        assert!(
            with(
                json!({"token": "t"}),
                json!({"token_expires_in_ms": 60000}),
                json!({"t": "x"})
            )
            .unwrap()
            .is_some()
        );
        let claims =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1900000000}"#);
        assert_eq!(
            with(
                json!({"token": "t"}),
                json!({}),
                json!({"t": format!("e30.{claims}.sig")})
            ),
            Ok(Some("2030-03-17T17:46:40.000Z".into()))
        );
        // No token where the definition says: named.
        let Err(e) = with(json!({"token": "a.b"}), json!({}), json!({"a": {}})) else {
            panic!("a token was found")
        };
        assert!(e.contains("`a.b`"), "{e}");
        // An expiry not understood, empty or zero is none: the fixed
        // lifetime applies, if any.
        let expire_in =
            json!({"token": "t", "token_expiration": "e", "token_expiration_strategy": "expireIn"});
        for e in [
            json!("soon"),
            json!(""),
            json!(0),
            json!("0"),
            json!(-5),
            Value::Null,
        ] {
            assert_eq!(
                with(expire_in.clone(), json!({}), json!({"t": "x", "e": e})),
                Ok(None),
                "{e}"
            );
        }
        assert!(
            with(
                expire_in,
                json!({"token_expires_in_ms": 60000}),
                json!({"t": "x", "e": 0})
            )
            .unwrap()
            .is_some()
        );

        let expire_at = json!({"token": "t", "token_expiration": "e"});
        for e in [json!("0"), json!("0:00:00"), json!("2001-01-01T00:00:00Z")] {
            assert_eq!(
                with(expire_at.clone(), json!({}), json!({"t": "x", "e": e})),
                Ok(None),
                "{e}"
            );
        } // Tableau's `D:HH:MM`.
        let tableau = with(
            json!({"token": "t", "token_expiration": "e"}),
            json!({}),
            json!({"t": "x", "e": "177:05:38"}),
        )
        .unwrap()
        .unwrap();
        let left = DateTime::parse_from_rfc3339(&tableau)
            .unwrap()
            .with_timezone(&Utc)
            - Utc::now();
        assert_eq!(left.num_minutes() + 1, (177 * 24 + 5) * 60 + 38, "{left}");
    }

    #[test]
    fn answers_taken_whole_and_header_values_keep_to_their_place() {
        let c = connection(
            json!({"type": "TWO_STEP", "userName": "ann", "password": "pw",
                   "_cookies": "OLD=1", "OLD": "1", "_header_keys": ["_cookies", "OLD"]}),
            json!({}),
        );
        let whole = definition(json!({"token_response": {"token": ""}}));
        let creds = credentials(&whole, &c, json!(" jd-token\n"), Map::new()).unwrap();
        assert_eq!(creds.field("token"), Some("jd-token"));
        // A page answered 200 is not a token.
        for page in ["<html><body>Sign in</body></html>", "two words", ""] {
            assert!(
                credentials(&whole, &c, json!(page), Map::new()).is_err(),
                "{page}"
            );
        }
        // The answer's headers never replace the user's fields; the last
        // answer's are replaced by this one's.
        let from_headers: Map<String, Value> = definition(json!({
            "password": "from-a-cookie", "B1SESSION": "s-2", "_cookies": "B1SESSION=s-2"}));
        let d = definition(json!({"token_response": {"token": "SessionId"}}));
        let creds = credentials(&d, &c, json!({"SessionId": "s-2"}), from_headers).unwrap();
        assert_eq!(creds.field("password"), Some("pw"));
        assert_eq!(creds.field("_cookies"), Some("B1SESSION=s-2"));
        assert_eq!(creds.field("OLD"), None);
        assert_eq!(
            creds.as_map()["_header_keys"],
            json!(["B1SESSION", "_cookies"])
        );
    }

    #[test]
    fn now_expressions_and_odd_keys() {
        let at = DateTime::parse_from_rfc3339("2026-12-30T08:09:10Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            now_expression("now+7:days:YYYY-MM-DD", at).as_deref(),
            Some("2027-01-06")
        );
        assert_eq!(
            now_expression("now-1:hours:HH:mm:ss", at).as_deref(),
            Some("07:09:10")
        );
        assert_eq!(now_expression("now:X", at).as_deref(), Some("1798618150"));
        assert_eq!(now_expression("now+1:fortnights:YYYY", at), None);
        assert_eq!(now_expression("now+99999999999999:days:YYYY", at), None);
    }

    use crate::jwt::tests::RSA_KEY as TEST_KEY;

    #[test]
    fn a_signed_definition_sends_a_jwt_signed_with_the_users_key() {
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        use rsa::signature::Verifier as _;
        let d = definition(json!({
            "token_response": {"token": "access_token"},
            "signature": {"protocol": "RSA"},
            "body_format": "form",
            "token": {"signing_key": "${credentials.privateKey}", "expires_in_ms": 3600000,
                "header": {"alg": "RS256", "typ": "JWT"},
                "payload": {"iss": "${credentials.clientId}", "aud": "https://${connectionConfig.host}",
                    "sub": "${credentials.username}"}},
            "token_params": {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "${token}"},
        }));
        // The key as pasted on one line, its breaks written `\\n`.
        let one_line = TEST_KEY.replace('\n', "\\n");
        for pasted in [TEST_KEY.to_string(), one_line] {
            let c = connection(
                json!({"type": "TWO_STEP", "clientId": "app", "privateKey": pasted}),
                json!({"host": "login.example.com"}),
            );
            let (_, body) = request(&d, &c).unwrap().body.unwrap();
            let form: std::collections::HashMap<String, String> =
                url::form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect();
            let jwt = &form["assertion"];
            let parts: Vec<&str> = jwt.split('.').collect();
            assert_eq!(parts.len(), 3, "{jwt}");
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
            assert_eq!(claims["iss"], "app");
            assert_eq!(claims["aud"], "https://login.example.com");
            assert!(claims.get("sub").is_none(), "no username: no claim");
            assert_eq!(
                claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
                3600
            );
            let key = crate::jwt::rsa_key(TEST_KEY).unwrap();
            let verifier = VerifyingKey::<sha2::Sha256>::new(key.to_public_key());
            let signature = Signature::try_from(b64.decode(parts[2]).unwrap().as_slice()).unwrap();
            verifier
                .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
                .unwrap();
        }
        let c = connection(
            json!({"type": "TWO_STEP", "clientId": "app", "privateKey": "not a key"}),
            json!({}),
        );
        let Err(e) = request(&d, &c) else {
            panic!("a token was signed with no key")
        };
        assert!(e.contains("PEM"), "{e}");
    }
}
