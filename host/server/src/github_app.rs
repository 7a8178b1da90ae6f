//! GitHub App connections (`APP`, the `github-app` provider): the
//! integration holds the app (its id and private key), a connection names
//! an installation (`connection_config.installation_id`), and the token
//! its requests carry is an installation token the app asks GitHub for
//! with a JWT it signs, valid an hour; asked for when the connection is
//! imported without one, and again before it expires, as the original
//! does.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sluice_runtime::connection::Credentials;

/// The app's private key as PEM: given as PEM, or as the base64 of a PEM
/// (as the original's API and dashboard keep it).
pub(crate) fn private_key_pem(given: &str) -> Result<String, String> {
    if given.contains("-----BEGIN ") {
        return Ok(given.to_string());
    }
    let refused = || {
        "the app's private key is neither a PEM key (`-----BEGIN RSA PRIVATE KEY-----`) nor the base64 of one".to_string()
    };
    let compact: String = given.chars().filter(|ch| !ch.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| refused())?;
    let text = String::from_utf8(bytes).map_err(|_| refused())?;
    if text.contains("-----BEGIN ") {
        Ok(text)
    } else {
        Err(refused())
    }
}

/// The JWT app `app_id` signs (RS256 with its private key `pem`) to ask
/// for an installation's token: issued a minute back (for clocks that
/// drift, as GitHub advises), valid nine minutes (GitHub takes ten at
/// most, by its own clock).
pub(crate) fn app_jwt(app_id: &str, pem: &str, now: i64) -> Result<String, String> {
    let mut claims = Map::new();
    claims.insert("iat".into(), Value::from(now - 60));
    claims.insert("exp".into(), Value::from(now + 540));
    claims.insert("iss".into(), Value::String(app_id.to_string()));
    crate::jwt::sign(
        "RS256",
        &serde_json::json!({"alg": "RS256", "typ": "JWT"}),
        &claims,
        &crate::jwt::Key::Pem(pem.to_string()),
    )
}

/// The installation a GitHub App connection names
/// (`connection_config.installation_id`): digits, as GitHub's ids are
/// (the id goes into the token URL's path).
pub(crate) fn installation_id(config: &Map<String, Value>) -> Option<String> {
    let id = match config.get("installation_id")? {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

/// An installation token's answer (`{token, expires_at, permissions…}`)
/// as the connection keeps it: `access_token`, `expires_at`, `raw`.
pub(crate) fn credentials(raw: Map<String, Value>) -> Result<Credentials, String> {
    let token = raw
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("GitHub's answer has no installation `token`")?
        .to_string();
    let mut creds = Map::new();
    creds.insert("type".into(), Value::String("APP".into()));
    creds.insert("access_token".into(), Value::String(token));
    if let Some(at) = raw
        .get("expires_at")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    {
        creds.insert(
            "expires_at".into(),
            Value::String(
                at.with_timezone(&Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
        );
    }
    creds.insert("raw".into(), Value::Object(raw));
    Credentials::try_from(creds)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn the_key_is_taken_as_pem_or_its_base64_and_the_answer_read() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(private_key_pem(pem).unwrap(), pem);
        let encoded = base64::engine::general_purpose::STANDARD.encode(pem);
        assert_eq!(private_key_pem(&encoded).unwrap(), pem);
        assert!(private_key_pem("c2VjcmV0").is_err(), "base64 of no PEM");
        assert!(private_key_pem("not base64 at all!").is_err());
        let creds = credentials(
            json!({"token": "ghs_1", "expires_at": "2026-12-06T20:00:00Z", "permissions": {"issues": "read"}})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
        assert_eq!(creds.kind(), "APP");
        assert_eq!(creds.field("access_token"), Some("ghs_1"));
        assert_eq!(creds.field("expires_at"), Some("2026-12-06T20:00:00.000Z"));
        assert!(credentials(Map::new()).is_err());
    }
}
