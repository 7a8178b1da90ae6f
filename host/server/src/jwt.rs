//! Tokens made here from a connection's own credentials, with no request
//! to the provider: JWT connections (Apple App Store, Ghost Admin,
//! Heymarket, Snowflake key pairs: the provider's API takes the signed
//! JWT itself), the JWT a TWO_STEP definition's `signature` asks for
//! before its token request (Google service accounts, Salesforce JWT), and
//! SIGNATURE connections' WSSE header (Emarsys). Each is made when the
//! connection is, and again shortly before it expires, as the original
//! makes them.
//!
//! A definition's `token` says how: `header` and `payload` (templates of
//! the credentials, `${credentials.x}` or `${x}`, dotted for nested
//! values, and of the configuration, `${connectionConfig.x}`; a string
//! left with a placeholder nothing fills is left out, as the original
//! leaves it out), `signing_key`, `expires_in_ms`; `signature.protocol`
//! `HMAC` (a key in hex, or `hmac_secret_encoding: utf8`), `RSA` or `EC`
//! (a PEM private key, its line breaks real, written `\n`, or lost).
//! `${fingerprint(…)}` is the SHA-256 of a private key's public half,
//! as Snowflake names key pairs.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sluice_runtime::connection::{Connection, Credentials};

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The credential fields that are the token's, not the user's.
const TOKEN_FIELDS: &[&str] = &["type", "token", "refresh_token", "expires_at", "raw"];

/// How long a token lives when its definition does not say.
const DEFAULT_LIFETIME_MS: i64 = 3_600_000;

/// A token sluice made, and how long it lives.
pub(crate) struct Made {
    pub token: String,
    pub lifetime_ms: i64,
}

/// How long a definition's tokens live (`token.expires_in_ms`), in
/// milliseconds: a second to a day.
pub(crate) fn lifetime_ms(definition: &Map<String, Value>) -> i64 {
    definition
        .get("token")
        .and_then(|t| t.get("expires_in_ms"))
        .and_then(Value::as_f64)
        .filter(|ms| ms.is_finite())
        .map_or(DEFAULT_LIFETIME_MS, |ms| ms as i64)
        .clamp(1_000, 86_400_000)
}

/// The values connection `c`'s templates name: its credentials (not the
/// token being replaced), and its configuration as `connectionConfig`.
/// Ghost's Admin API key is given as `id:secret` and named by its halves
/// (`privateKey.id`, `privateKey.secret`), as the original splits it.
fn replacers(c: &Connection) -> Map<String, Value> {
    let mut values: Map<String, Value> = c
        .credentials
        .as_map()
        .iter()
        .filter(|(k, _)| !TOKEN_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ghost = c.provider == "ghost-admin" || c.provider_config_key.contains("ghost-admin");
    if ghost && let Some(Value::String(key)) = values.get("privateKey") {
        let mut halves = key.splitn(2, ':');
        let id = halves.next().unwrap_or_default().to_string();
        let secret = halves.next().map(str::to_string);
        let mut split = Map::new();
        split.insert("id".into(), Value::String(id));
        split.insert("secret".into(), secret.map_or(Value::Null, Value::String));
        values.insert("privateKey".into(), Value::Object(split));
    }
    values.insert(
        "connectionConfig".into(),
        Value::Object(c.connection_config.clone()),
    );
    values
}

/// The text of value `name` (`a.b` a nested one), if it is a string or a
/// number.
fn resolve(values: &Map<String, Value>, name: &str) -> Option<String> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    if let Some(v) = values.get(name).and_then(text) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let first = values.get(parts.next()?)?;
    parts.try_fold(first, |v, k| v.get(k)).and_then(text)
}

/// Template `s` with its placeholders filled from `values`; one nothing
/// fills is left as written (see [`unresolved`]). `${fingerprint(…)}` is
/// the fingerprint of the private key its argument expands to.
fn interpolate(s: &str, values: &Map<String, Value>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        if let Some(inner) = after.strip_prefix("fingerprint(")
            && let Some(end) = inner.find(")}")
        {
            let key = interpolate(&inner[..end], values)?;
            out.push_str(&fingerprint(&key)?);
            rest = &inner[end + 2..];
            continue;
        }
        match after.find(['}', '{']) {
            Some(end) if after.as_bytes()[end] == b'}' => {
                match resolve(values, after[..end].trim()) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&rest[start..start + 2 + end + 1]),
                }
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `s` still holds a placeholder (`${…}` with no brace inside).
fn unresolved(s: &str) -> bool {
    s.match_indices("${").any(|(i, _)| {
        s[i + 2..]
            .find(['}', '{'])
            .is_some_and(|e| s.as_bytes()[i + 2 + e] == b'}')
    })
}

/// A definition's value with `credentials.` taken out of its strings, as
/// the original reads `${credentials.x}` as `${x}`.
fn strip_credentials(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("credentials.", "")),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), strip_credentials(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// An object's values expanded (nested objects kept whole, placeholders
/// nothing fills left as written).
fn interpolate_object(
    m: &Map<String, Value>,
    values: &Map<String, Value>,
) -> Result<Value, String> {
    let mut out = Map::new();
    for (k, v) in m {
        let v = match v {
            Value::String(s) => Value::String(interpolate(s, values)?),
            Value::Object(inner) => interpolate_object(inner, values)?,
            other => other.clone(),
        };
        out.insert(k.clone(), v);
    }
    Ok(Value::Object(out))
}

/// The claims or header fields of `template`: a string whose placeholders
/// are not all filled is left out; in an array, such items are, and the
/// others are split at commas (an array left empty is left out).
fn fields(
    template: Option<&Value>,
    values: &Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (key, value) in template.and_then(Value::as_object).into_iter().flatten() {
        if let Value::Array(items) = value {
            let mut resolved = Vec::new();
            for item in items {
                let Value::String(s) = strip_credentials(item) else {
                    continue;
                };
                let s = interpolate(&s, values)?;
                if unresolved(&s) {
                    continue;
                }
                resolved.extend(
                    s.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(|p| Value::String(p.to_string())),
                );
            }
            if !resolved.is_empty() {
                out.insert(key.clone(), Value::Array(resolved));
            }
            continue;
        }
        match strip_credentials(value) {
            Value::String(s) => {
                let s = interpolate(&s, values)?;
                if !unresolved(&s) {
                    out.insert(key.clone(), Value::String(s));
                }
            }
            Value::Object(m) => {
                out.insert(key.clone(), interpolate_object(&m, values)?);
            }
            other => {
                out.insert(key.clone(), other);
            }
        }
    }
    Ok(out)
}

/// The JWT definition `definition` describes for connection `c`, issued
/// at `now` (seconds): its claims `token.payload` with `iat` and `exp`
/// (`now` plus `token.expires_in_ms`), signed as `signature.protocol` and
/// `token.header.alg` say with `token.signing_key`.
pub(crate) fn make(
    definition: &Map<String, Value>,
    c: &Connection,
    now: i64,
) -> Result<Made, String> {
    let spec = definition
        .get("token")
        .and_then(Value::as_object)
        .ok_or("its definition has no `token` saying what to sign")?;
    let protocol = definition
        .get("signature")
        .and_then(|s| s.get("protocol"))
        .and_then(Value::as_str)
        .ok_or("its definition has no `signature.protocol` saying how to sign")?;
    let values = replacers(c);
    let lifetime_ms = lifetime_ms(definition);
    let mut claims = fields(spec.get("payload"), &values)?;
    claims.insert("iat".into(), Value::from(now));
    let exp = now as f64 + lifetime_ms as f64 / 1000.0;
    claims.insert(
        "exp".into(),
        if lifetime_ms % 1000 == 0 {
            Value::from(now + lifetime_ms / 1000)
        } else {
            Value::from(exp)
        },
    );
    // A definition that names no algorithm gets its protocol's first.
    let alg = spec
        .get("header")
        .and_then(|h| h.get("alg"))
        .and_then(Value::as_str)
        .unwrap_or(match protocol {
            "RSA" => "RS256",
            "EC" => "ES256",
            _ => "HS256",
        })
        .to_string();
    let mut header = Map::new();
    header.insert("alg".into(), Value::String(alg.clone()));
    header.insert("typ".into(), Value::String("JWT".into()));
    header.extend(fields(spec.get("header"), &values)?);
    let key_template = match spec.get("signing_key").map(strip_credentials) {
        Some(Value::String(s)) => s,
        _ => return Err("its definition has no `token.signing_key`".into()),
    };
    let key_text = interpolate(&key_template, &values)?;
    if unresolved(&key_text) || key_text.trim().is_empty() {
        let named = spec
            .get("signing_key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(format!(
            "the credentials do not hold the signing key the provider names (`{named}`)"
        ));
    }
    let key = match protocol {
        "HMAC" => {
            let utf8 = definition
                .get("signature")
                .and_then(|s| s.get("hmac_secret_encoding"))
                .and_then(Value::as_str)
                == Some("utf8");
            Key::Hmac(if utf8 {
                key_text.into_bytes()
            } else {
                hex_prefix(&key_text)
            })
        }
        "RSA" | "EC" => Key::Pem(key_text),
        other => {
            return Err(format!(
                "its token is to be signed with `{other}` (`signature.protocol`); sluice signs with HMAC, RSA and EC"
            ));
        }
    };
    let token = sign(&alg, &Value::Object(header), &claims, &key)?;
    Ok(Made { token, lifetime_ms })
}

/// The algorithms [`sign`] makes.
pub(crate) const ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256",
];

/// The JWT assertion a TWO_STEP definition's `assertion` (`type: jwt`)
/// describes for connection `c` at `now` (NetSuite's and Apple Business
/// Manager's client credentials): `assertion.header` and
/// `assertion.payload` filled from `${credentials.x}`,
/// `${connectionConfig.x}`, `${assertionOption.x}` (what the user gave
/// besides: their private key) and `${random}`, with `iat` and `exp`
/// (`lifetimeInSeconds`, an hour by default), signed with `assertion.key`
/// as the header's `alg` says. `None` for a definition without one.
pub(crate) fn assertion(
    definition: &Map<String, Value>,
    c: &Connection,
    now: i64,
) -> Result<Option<String>, String> {
    let Some(spec) = definition.get("assertion").and_then(Value::as_object) else {
        return Ok(None);
    };
    let creds: Map<String, Value> = c
        .credentials
        .as_map()
        .iter()
        .filter(|(k, _)| !TOKEN_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut values = Map::new();
    values.insert(
        "assertionOption".into(),
        creds.get("assertionOption").cloned().unwrap_or_default(),
    );
    values.insert("credentials".into(), Value::Object(creds));
    values.insert(
        "connectionConfig".into(),
        Value::Object(c.connection_config.clone()),
    );
    values.insert(
        "random".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    let text = |v: &Value| -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => Value::String(interpolate(s, &values)?),
            other => other.clone(),
        })
    };
    let lifetime = spec
        .get("lifetimeInSeconds")
        .and_then(|v| v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()))
        .unwrap_or(3600)
        .clamp(1, 10 * 366 * 86_400);
    let mut claims = Map::new();
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now + lifetime));
    for (k, v) in spec
        .get("payload")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        claims.insert(k.clone(), text(v)?);
    }
    let mut header = Map::new();
    header.insert("typ".into(), Value::String("JWT".into()));
    for (k, v) in spec
        .get("header")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        header.insert(k.clone(), text(v)?);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or("HS256")
        .to_string();
    header.insert("alg".into(), Value::String(alg.clone()));
    let key = spec
        .get("key")
        .and_then(Value::as_str)
        .ok_or("its `assertion` names no `key`")?;
    let key_text = interpolate(key, &values)?;
    if unresolved(&key_text) || key_text.trim().is_empty() {
        // A connection made by the original holds its assertion and not
        // the key: used while it lasts (a minute's margin).
        if let Some(given) = c.credentials.field("assertion")
            && jwt_exp(given).is_some_and(|exp| exp > now + 60)
        {
            return Ok(Some(given.to_string()));
        }
        return Err(format!(
            "the credentials do not hold the key the assertion is signed with (`{key}`: give it as `credentials.assertionOption.privateKey`)"
        ));
    }
    let key = if alg.starts_with("HS") {
        Key::Hmac(key_text.into_bytes())
    } else {
        Key::Pem(key_text)
    };
    sign(&alg, &Value::Object(header), &claims, &key).map(Some)
}

/// The `exp` of JWT `token`, if it is one.
fn jwt_exp(token: &str) -> Option<i64> {
    let claims = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&B64URL.decode(claims).ok()?).ok()?;
    claims.get("exp")?.as_i64()
}

/// A signing key: an HMAC secret, or a PEM private key's text.
pub(crate) enum Key {
    Hmac(Vec<u8>),
    Pem(String),
}

/// The bytes of `text` read as hex up to its first character that is not
/// (as Node's `Buffer.from(text, 'hex')`, which the original uses).
fn hex_prefix(text: &str) -> Vec<u8> {
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks_exact(2)
        .map_while(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// A JWT of `header` and `claims` signed `alg` with `key`: `HS256`,
/// `HS384`, `HS512`, `RS256`, `RS384`, `RS512` or `ES256`.
pub(crate) fn sign(
    alg: &str,
    header: &Value,
    claims: &Map<String, Value>,
    key: &Key,
) -> Result<String, String> {
    let input = format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(Value::Object(claims.clone()).to_string())
    );
    let signature = match (alg, key) {
        ("HS256" | "HS384" | "HS512", Key::Hmac(secret)) => {
            if secret.is_empty() {
                return Err("the HMAC signing key is empty (it is read as hex unless the provider says `utf8`)".into());
            }
            hmac_sign(alg, secret, input.as_bytes())
        }
        ("RS256" | "RS384" | "RS512", Key::Pem(text)) => {
            rsa_sign(alg, &rsa_key(text)?, input.as_bytes())?
        }
        ("ES256", Key::Pem(text)) => {
            use p256::ecdsa::signature::Signer as _;
            let key = p256::ecdsa::SigningKey::from(ec_key(text)?);
            let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
            signature.to_bytes().to_vec()
        }
        ("HS256" | "HS384" | "HS512", Key::Pem(_))
        | ("RS256" | "RS384" | "RS512" | "ES256", Key::Hmac(_)) => {
            return Err(format!(
                "`{alg}` (`token.header.alg`) does not go with the provider's `signature.protocol`"
            ));
        }
        (other, _) => {
            return Err(format!(
                "its token is to be signed `{other}` (`token.header.alg`); sluice signs HS256, HS384, HS512, RS256, RS384, RS512 and ES256"
            ));
        }
    };
    Ok(format!("{input}.{}", B64URL.encode(signature)))
}

fn hmac_sign(alg: &str, secret: &[u8], input: &[u8]) -> Vec<u8> {
    use hmac::{Mac as _, SimpleHmac};
    macro_rules! mac {
        ($d:ty) => {{
            // An HMAC takes a key of any length.
            let Ok(mut mac) = SimpleHmac::<$d>::new_from_slice(secret) else {
                return Vec::new();
            };
            mac.update(input);
            mac.finalize().into_bytes().to_vec()
        }};
    }
    match alg {
        "HS384" => mac!(sha2::Sha384),
        "HS512" => mac!(sha2::Sha512),
        _ => mac!(sha2::Sha256),
    }
}

/// PKCS#1 v1.5 with the key blinded by a fresh random value (the same
/// signature; no timing to learn the key from).
fn rsa_sign(alg: &str, key: &rsa::RsaPrivateKey, input: &[u8]) -> Result<Vec<u8>, String> {
    use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
    let key = key.clone();
    let mut rng = rsa::rand_core::OsRng;
    let signed = match alg {
        "RS384" => rsa::pkcs1v15::SigningKey::<sha2::Sha384>::new(key)
            .try_sign_with_rng(&mut rng, input)
            .map(|s| s.to_vec()),
        "RS512" => rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(key)
            .try_sign_with_rng(&mut rng, input)
            .map(|s| s.to_vec()),
        _ => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key)
            .try_sign_with_rng(&mut rng, input)
            .map(|s| s.to_vec()),
    };
    signed.map_err(|e| format!("the token could not be signed: {e}"))
}

/// The largest RSA key sluice signs with, in bits of its modulus. The
/// work of a signature grows with the cube of the key's size, and a key
/// comes from a user (a connect session's browser, an import): a made-up
/// key of 32,768 bits held a thread for seconds per request. Keys in use
/// are 2,048 to 4,096 bits.
pub(crate) const MAX_RSA_BITS: usize = 8192;

/// The most DER bytes a private key may have: an 8,192-bit RSA key in
/// PKCS#8 is about 4,800 bytes (a P-256 key 138), so this is well past
/// any key [`MAX_RSA_BITS`] allows, and nothing larger is parsed.
const MAX_KEY_DER: usize = 8 << 10;

/// The most bytes a private key's text may have: [`MAX_KEY_DER`] in
/// base64 with its armour and its line breaks written `\r\n`.
const MAX_KEY_TEXT: usize = 16 << 10;

/// Why a private key's text was not read.
enum KeyText {
    /// It is no PEM (nor base64).
    NotPem,
    /// It is larger than any key sluice signs with: the message says so.
    TooLarge(String),
}

/// A PEM private key as users paste one: its armour's label (`PRIVATE
/// KEY` when it has none) and its DER bytes. Line breaks may be real,
/// written `\n`, or lost; the base64 may come without its armour lines.
/// A text or DER larger than [`MAX_KEY_TEXT`] or [`MAX_KEY_DER`] is
/// refused before it is decoded or parsed.
fn pem(text: &str) -> Result<(String, Vec<u8>), KeyText> {
    let refused = || KeyText::NotPem;
    if text.len() > MAX_KEY_TEXT {
        return Err(KeyText::TooLarge(format!(
            "the signing key is {} bytes long; sluice takes keys of at most {MAX_KEY_TEXT} bytes of text (an RSA key of at most {MAX_RSA_BITS} bits, or a P-256 key)",
            text.len()
        )));
    }
    let text = text.replace("\\n", "\n");
    let mut label = None;
    let mut body = String::with_capacity(text.len());
    let mut rest = text.as_str();
    // Armour lines (`-----BEGIN X-----`, `-----END X-----`) out; the
    // first one's label kept.
    while let Some(start) = rest.find("-----") {
        body.push_str(&rest[..start]);
        let after = &rest[start + 5..];
        let end = after.find("-----").ok_or_else(refused)?;
        let armour = &after[..end];
        if let Some(l) = armour.strip_prefix("BEGIN ")
            && label.is_none()
        {
            label = Some(l.trim().to_string());
        } else if !armour.starts_with("BEGIN ") && !armour.starts_with("END ") {
            return Err(refused());
        }
        rest = &after[end + 5..];
    }
    body.push_str(rest);
    let body: String = body.chars().filter(|ch| !ch.is_whitespace()).collect();
    if body.is_empty() {
        return Err(refused());
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim_end_matches('='))
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(body.trim_end_matches('='))
        })
        .map_err(|_| refused())?;
    if der.len() > MAX_KEY_DER {
        return Err(KeyText::TooLarge(format!(
            "the signing key is {} bytes of DER; sluice takes keys of at most {MAX_KEY_DER} bytes (an RSA key of at most {MAX_RSA_BITS} bits, or a P-256 key)",
            der.len()
        )));
    }
    Ok((label.unwrap_or_else(|| "PRIVATE KEY".into()), der))
}

/// An RSA private key in PEM, PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1
/// (`BEGIN RSA PRIVATE KEY`) (see [`pem`]), of at most [`MAX_RSA_BITS`]
/// bits.
pub(crate) fn rsa_key(text: &str) -> Result<rsa::RsaPrivateKey, String> {
    let refused = || {
        "the signing key is not an RSA private key in PEM (`-----BEGIN PRIVATE KEY-----` or `-----BEGIN RSA PRIVATE KEY-----`)".to_string()
    };
    let der = match pem(text) {
        Ok((_, der)) => der,
        Err(KeyText::TooLarge(why)) => return Err(why),
        Err(KeyText::NotPem) => return Err(refused()),
    };
    rsa_from_der(&der)?.ok_or_else(refused)
}

/// The RSA private key DER `der` holds (PKCS#8, or PKCS#1); `None` if it
/// holds none. Its modulus is measured before the key is built: the
/// checks `rsa` makes of a key's numbers (and every signature after)
/// cost more the larger it is, so a key past [`MAX_RSA_BITS`] is refused
/// without them.
fn rsa_from_der(der: &[u8]) -> Result<Option<rsa::RsaPrivateKey>, String> {
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    use rsa::pkcs1::der::Decode as _;
    let pkcs1 = match rsa::pkcs8::PrivateKeyInfo::from_der(der) {
        Ok(info) if info.algorithm.oid == rsa::pkcs1::ALGORITHM_OID => info.private_key,
        // Another algorithm's key (P-256's).
        Ok(_) => return Ok(None),
        Err(_) => der,
    };
    let Ok(parts) = rsa::pkcs1::RsaPrivateKey::from_der(pkcs1) else {
        return Ok(None);
    };
    let bits = bit_length(parts.modulus.as_bytes());
    if bits > MAX_RSA_BITS {
        return Err(format!(
            "the signing key is an RSA key of {bits} bits; sluice signs with RSA keys of at most {MAX_RSA_BITS} bits"
        ));
    }
    Ok(rsa::RsaPrivateKey::from_pkcs1_der(pkcs1).ok())
}

/// The bits of the big-endian unsigned number `bytes`.
fn bit_length(bytes: &[u8]) -> usize {
    let bytes = &bytes[bytes.iter().take_while(|b| **b == 0).count()..];
    match bytes.first() {
        Some(first) => bytes.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// A P-256 private key in PEM, PKCS#8 (`BEGIN PRIVATE KEY`, as Apple
/// gives them) or SEC1 (`BEGIN EC PRIVATE KEY`) (see [`pem`]). Its size
/// is the curve's: nothing in it makes the work larger (and its text is
/// bounded by [`pem`]).
fn ec_key(text: &str) -> Result<p256::SecretKey, String> {
    let refused = || {
        "the signing key is not a P-256 (ES256) private key in PEM (`-----BEGIN PRIVATE KEY-----` or `-----BEGIN EC PRIVATE KEY-----`)".to_string()
    };
    let der = match pem(text) {
        Ok((_, der)) => der,
        Err(KeyText::TooLarge(why)) => return Err(why),
        Err(KeyText::NotPem) => return Err(refused()),
    };
    ec_from_der(&der).ok_or_else(refused)
}

fn ec_from_der(der: &[u8]) -> Option<p256::SecretKey> {
    use p256::pkcs8::DecodePrivateKey as _;
    p256::SecretKey::from_pkcs8_der(der)
        .or_else(|_| p256::SecretKey::from_sec1_der(der))
        .ok()
}

/// `SHA256:` and the base64 of the SHA-256 of the public half of private
/// key `text` (its SubjectPublicKeyInfo), as Snowflake names a user's key.
fn fingerprint(text: &str) -> Result<String, String> {
    use sha2::Digest as _;
    let key = match pem(text) {
        Ok((_, der)) => der,
        Err(KeyText::TooLarge(why)) => return Err(why),
        Err(KeyText::NotPem) => Vec::new(),
    };
    let der = if let Some(key) = rsa_from_der(&key)? {
        use rsa::pkcs8::EncodePublicKey as _;
        key.to_public_key()
            .to_public_key_der()
            .map_err(|e| format!("the key's public half could not be encoded: {e}"))?
            .into_vec()
    } else if let Some(key) = ec_from_der(&key) {
        use p256::pkcs8::EncodePublicKey as _;
        key.public_key()
            .to_public_key_der()
            .map_err(|e| format!("the key's public half could not be encoded: {e}"))?
            .into_vec()
    } else {
        return Err(
            "`${fingerprint(…)}` names no private key in PEM (RSA or P-256) in the credentials"
                .into(),
        );
    };
    Ok(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&der))
    ))
}

/// A SIGNATURE connection's WSSE token (`UsernameToken Username=…,
/// PasswordDigest=…, Nonce=…, Created=…`), made at `now` with a fresh
/// nonce, as the original makes Emarsys's.
pub(crate) fn wsse(username: &str, password: &str, nonce: &str, now: DateTime<Utc>) -> String {
    use sha1::Digest as _;
    let created = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let hex: String = sha1::Sha1::digest(format!("{nonce}{created}{password}"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let digest = base64::engine::general_purpose::STANDARD.encode(hex);
    format!(
        "UsernameToken Username=\"{username}\", PasswordDigest=\"{digest}\", Nonce=\"{nonce}\", Created=\"{created}\""
    )
}

/// Runs `work` (making a token: an RSA signature takes milliseconds, a
/// large key's much longer in a debug build) on a blocking thread, so the
/// server's async workers go on answering meanwhile.
pub(crate) async fn off_workers<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("the token could not be made: {e}"))?
}

/// Connection `c`'s credentials with a new token made for it (a `JWT` or
/// `SIGNATURE` connection of a provider whose definition is
/// `definition`): the user's own fields, `token`, and `expires_at`.
pub(crate) fn renewed(
    definition: &Map<String, Value>,
    c: &Connection,
) -> Result<Credentials, String> {
    let now = Utc::now();
    let (token, lifetime_ms) = match c.credentials.kind() {
        "SIGNATURE" => {
            let protocol = definition
                .get("signature")
                .and_then(|s| s.get("protocol"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if protocol != "WSSE" {
                return Err(format!(
                    "its signature is `{protocol}` (`signature.protocol`); sluice makes WSSE signatures"
                ));
            }
            let field = |k: &str| c.credentials.field(k).filter(|v| !v.is_empty());
            let (Some(username), Some(password)) = (field("username"), field("password")) else {
                return Err("SIGNATURE credentials need a `username` and a `password`".into());
            };
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            (
                wsse(username, password, &nonce, now),
                lifetime_ms(definition),
            )
        }
        _ => {
            let made = make(definition, c, now.timestamp())?;
            (made.token, made.lifetime_ms)
        }
    };
    let at = now + chrono::TimeDelta::milliseconds(lifetime_ms);
    let mut creds = c.credentials.as_map().clone();
    creds.insert("token".into(), Value::String(token));
    creds.insert(
        "expires_at".into(),
        Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    serde_json::from_value(Value::Object(creds)).map_err(|e| e.to_string())
}

/// A made-up RSA key of about `a + b` bits in PKCS#1 PEM whose
/// numbers `rsa` takes without any prime: p = 2^a + 1, q = 2^b + 1,
/// n = pq, e = 3 and d = (2^(a+1) + 1) / 3 (`0xAA…AB`), so that de ≡ 1
/// modulo p - 1 and q - 1 (`a` and `b` multiples of 8, `b` < `a`): what
/// a user could send to keep a server that signs with it busy, for tests.
#[doc(hidden)]
pub fn made_up_rsa_key(a: usize, b: usize) -> String {
    fn number(bits: &[usize]) -> Vec<u8> {
        let len = bits.iter().max().copied().unwrap_or(0) / 8 + 1;
        let mut out = vec![0u8; len];
        for bit in bits {
            out[len - 1 - bit / 8] |= 1 << (bit % 8);
        }
        out
    }
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let len = content.len();
        let mut out = vec![tag];
        match len {
            0..128 => out.push(len as u8),
            128..256 => out.extend([0x81, len as u8]),
            _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
        }
        out.extend_from_slice(content);
        out
    }
    fn int(bytes: &[u8]) -> Vec<u8> {
        let mut content = bytes.to_vec();
        if content.first().is_none_or(|b| b & 0x80 != 0) {
            content.insert(0, 0);
        }
        der(2, &content)
    }
    let mut d = vec![0xaa; a / 8];
    if let Some(last) = d.last_mut() {
        *last = 0xab;
    }
    let fields = [
        int(&[0]),
        int(&number(&[a + b, a, b, 0])),
        int(&[3]),
        int(&d),
        int(&number(&[a, 0])),
        int(&number(&[b, 0])),
        int(&[1]),
        int(&[1]),
        int(&[1]),
    ];
    let body = base64::engine::general_purpose::STANDARD.encode(der(0x30, &fields.concat()));
    format!("-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A key made for these tests alone (`openssl genpkey`, RSA 1024).
    pub(crate) const RSA_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIICeAIBADANBgkqhkiG9w0BAQEFAASCAmIwggJeAgEAAoGBANrxS7bpvixLGk01\n5IM+k7OiwUJwjuxAdQa9jArPt8LlFFPwBWKB7AsKIjQJKp+I3owo5cM/MoSJtOfn\njh9ry7M7BLLJZIn1xB7LB/3t4dCm8yZXLhP6XJtv+HwIDgAmNFhKUoDGP6G7szoO\nROLT5PKlMVNCXKEjQyNjwTTaaQAjAgMBAAECgYEAwvuTn3FpMM8tvEdbm9qV9avj\niwTs88+vqPITjulQURxsTxh54zGrgmVi8o6bS/q7n30oqgpVNh3hY4ofUzJP9EfM\nsRcf8ODvC56Pn80EJ5pnDoFu4/NK9gY+5cVsVDHUhrh7HB9qzbX+Ao1dtytVkoHo\nDBc0sJWsUH5SAsngXjECQQDvURVkItCXW3i3uS765Smm6bhWRE7BVQOpBhcSshwk\nUkWDG9TMVtJZkByEKQvuP0+duWd27gycMCHwoSJ0ownZAkEA6jSb2RdsdR3OA27j\nLOt/51FYmMiEWscDe8fy+jxnY/6gAlO1ySp/Qv8W1xJyPhdfFuELfzbOajxIiu1K\n3siAWwJAE2IB1YZsVpX2BQtenruI0BgF8ha+OjJkhYAUxlLerKJtNt0+Mv6lMtPV\nO28HpFhEXoXxt1Q4eT38wbyLSd8aoQJBAKadHI4ZYtgChw/cMBNByjEmpq+yXq4x\nzGGfwlSQ6kCx4OUm5jkhWX2w+W+xuMJBYC1nlgU/WSMslbL30v6ghucCQQCs1H6u\nU6ft/14uegGE5HJ1vDCqGgfuALcklf5xYqDyXhJmCZZb1aO0B1BUWkxKK2GBo9/Q\n5T5tpHyl6tkbnLx/\n-----END PRIVATE KEY-----";

    /// A P-256 key made for these tests alone (`openssl genpkey`), PKCS#8
    /// as Apple gives them, and the same key in SEC1.
    pub(crate) const EC_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgxdiIEI+nMrhWCb8y\nRuK0EX6b6DKDyw/JOYoUZ6V+oIKhRANCAAQuy3HRKiiVCkOMj4V/JxN6Hu3LNwtZ\nBjvnYR4rVWCngiim1YGYyVLk/0d4yoS98pGBcoSUcNYNwnarYbg/DX/k\n-----END PRIVATE KEY-----";
    const EC_KEY_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIMXYiBCPpzK4Vgm/MkbitBF+m+gyg8sPyTmKFGelfqCCoAoGCCqGSM49\nAwEHoUQDQgAELstx0SoolQpDjI+FfycTeh7tyzcLWQY752EeK1Vgp4IoptWBmMlS\n5P9HeMqEvfKRgXKElHDWDcJ2q2G4Pw1/5A==\n-----END EC PRIVATE KEY-----";

    /// A 2,048-bit key made for these tests alone (`openssl genpkey`).
    const RSA_KEY_2048: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDoglkSKGokJ4Uv\naZ5IKNeFO0i65pkcBWzt5f/4avg+qUmWqvu7b4f6Kr5yC/a3g52k6O6ins8bs0cY\n7L3+rAUqrH7csdvAx/dEviFVjqswkeSkuWZBrX2UxaxeVdT1kLi+9Thyp3gE+jTc\neYQCsVi/N69zDdT+Qf4zIXx5mtSq70QBXJG3QQQHlP7lwd44tLgH0NiV2k/Kn7xd\nhVNQP2HFWStmorOXJdlTnLXH44WmvC6ZT1I4NCcJa3p1IuUlbCsMc9XdnHdb2cLp\n066BPidUXwAxQVs6ernZoGzOPEeDyEGQl51lgEiMV2S52cH4wX9GfHFTyNSYS8yC\nu4iQmpH1AgMBAAECggEAAUk3ad7HycbnlO3V3wirdn8aZZiDFh3fodknTbRcSuiQ\n5OpCwWmxsW0dQ4OFU4jjJLZgpC9SLkz1Q7IT62l//khQZWIQQXIpsiP1AgJajXnN\noo+sSd4CAORmiWorr4TjrtXFSPkxYzLcNvSRCcU9xuc+hxmiEZJH+Kt17axTHAkd\na4tkP5F1/0ksjBV8MSwdQWZ6wmtZZOA0mcXXcRpmofyYEaaYPpTCseou9Lyk6vTu\nkMNNgDeFFYRF2M9vqDQGZ9wZCD3KbQhazaIhkLGN9SHf22LuByOxvWp5oUdi20XC\nWcouQor6/DnqtvzPfpulRtVMU12cDRkCkW15EfWKqQKBgQD4ZM2ilXtnUc1jJHZn\nVoMPl3kDOSIl/AsaTAJ8P4j57rFyFW/Rz6r+jm7pi/n5jwWniXRrfN5HH+WGoaWf\n1ijYrUMdTsBrvSA4E+Yjki757y2IqkCL4wZT3nmCrlYUCrj02Jqd4p2Y4kXtOHAX\n1UJkR8LAXQYawNEGfucae8RBrQKBgQDvoQXesXMl1yt7joRSY6eppxZVqcOVSmuF\n5JyMdHBMO7j/zbX8pSo4C+yM1a8aRQrBJFvEvG1hR/1bLDF0mY9sraCkWwFhqKY8\nlL3EQ1XD4XH6R6asARnrjxw9z6i1r3/truQRa9ttZxFzGaX3b2yW2VwJpWOGVwfA\nU6EiktJqaQKBgQDDtQigNQ7J1RXyK2Ru/ya8PihGddmF/BPzYDgFFTojUgHVVTaJ\nJQohDrAsqvEFw748xnxHxFaNy3/Yl7wbN21vavQaP1Y0jQq5pFQLar5AhkZmC15X\n2UO/CObMI/gGSnx3zcHk7AwnzQAza+hFnu10fWXgkmqg4ZLPf2Uu5J048QKBgHAk\nPSkAhlC5J6JFCeu8s2QTy8H/FoaxMyyP1its+njSojskO/ymFuHvwp4OCkoS8Xt9\n1mx1egLCu/CE+AgHLTXA86K27CiV0mYbfctxb5uhz8M+8OMiCM1SRfcvTVbpcMb8\nx8LXZPMH/wSMhj0LqhfWVNo2yiK+a+Q3vvr9FvexAoGBAO2cDCulOB+Lo6YHbvRJ\nU7AJeRN/dDrRW84ekJqoJXC/FnRdg7yPxsUSn5Bgfma8z//lPW6cL9dbM/lvTXHP\n2LL/G6MUaJXXl6oPLqSNnanO9IBLJZ9okOSWZKkOut5igg+h1Qpk/aGrBhaco+M5\nJAoFRi9b5U106Okd8W4GRlcw\n-----END PRIVATE KEY-----";

    fn connection(provider: &str, credentials: Value, config: Value) -> Connection {
        serde_json::from_value(json!({
            "provider_config_key": provider,
            "connection_id": "c1",
            "provider": provider,
            "credentials": credentials,
            "connection_config": config,
        }))
        .unwrap()
    }

    fn parts(jwt: &str) -> (Value, Value, Vec<u8>) {
        let p: Vec<&str> = jwt.split('.').collect();
        assert_eq!(p.len(), 3, "{jwt}");
        (
            serde_json::from_slice(&B64URL.decode(p[0]).unwrap()).unwrap(),
            serde_json::from_slice(&B64URL.decode(p[1]).unwrap()).unwrap(),
            B64URL.decode(p[2]).unwrap(),
        )
    }

    fn definition(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn hs256_matches_an_independent_signer() {
        // From Python's hmac and base64 over the same header, claims and
        // key: `00ff10` read as hex.
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "abc"});
        let claims = definition(json!({"aud": "/admin/", "iat": 1000, "exp": 1300}));
        let jwt = sign("HS256", &header, &claims, &Key::Hmac(hex_prefix("00ff10"))).unwrap();
        assert_eq!(
            jwt,
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImFiYyJ9.eyJhdWQiOiIvYWRtaW4vIiwiaWF0IjoxMDAwLCJleHAiOjEzMDB9.McRzz8vFJWeFQPsyiBB9wcANVorDDhEF2i5COPD51JY"
        );
    }

    #[test]
    fn every_algorithm_verifies_independently() {
        use hmac::Mac as _;
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        use rsa::signature::Verifier as _;
        let claims = definition(json!({"iss": "x"}));
        let input_of = |jwt: &str| jwt.rsplit_once('.').unwrap().0.to_string();
        for alg in ["HS256", "HS384", "HS512"] {
            let jwt = sign(
                alg,
                &json!({"alg": alg}),
                &claims,
                &Key::Hmac(b"k3y".to_vec()),
            )
            .unwrap();
            let signature = parts(&jwt).2;
            let input = input_of(&jwt);
            let ok = match alg {
                "HS384" => {
                    let mut m = hmac::Hmac::<sha2::Sha384>::new_from_slice(b"k3y").unwrap();
                    m.update(input.as_bytes());
                    m.verify_slice(&signature).is_ok()
                }
                "HS512" => {
                    let mut m = hmac::Hmac::<sha2::Sha512>::new_from_slice(b"k3y").unwrap();
                    m.update(input.as_bytes());
                    m.verify_slice(&signature).is_ok()
                }
                _ => {
                    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"k3y").unwrap();
                    m.update(input.as_bytes());
                    m.verify_slice(&signature).is_ok()
                }
            };
            assert!(ok, "{alg}");
        }
        let public = rsa_key(RSA_KEY).unwrap().to_public_key();
        for alg in ["RS256", "RS384", "RS512"] {
            let jwt = sign(
                alg,
                &json!({"alg": alg}),
                &claims,
                &Key::Pem(RSA_KEY.into()),
            )
            .unwrap();
            let signature = Signature::try_from(parts(&jwt).2.as_slice()).unwrap();
            let input = input_of(&jwt);
            let verified = match alg {
                "RS384" => VerifyingKey::<sha2::Sha384>::new(public.clone())
                    .verify(input.as_bytes(), &signature),
                "RS512" => VerifyingKey::<sha2::Sha512>::new(public.clone())
                    .verify(input.as_bytes(), &signature),
                _ => VerifyingKey::<sha2::Sha256>::new(public.clone())
                    .verify(input.as_bytes(), &signature),
            };
            assert!(verified.is_ok(), "{alg}");
        }
    }

    #[test]
    fn heymarket_signs_with_its_utf8_key_as_the_original_reads_it() {
        use hmac::Mac as _;
        // `${a}||${b}` is not an alternative in a signing key: the original
        // fills both in, and signs with the text.
        let d = definition(json!({
            "auth_mode": "JWT",
            "signature": {"protocol": "HMAC", "hmac_secret_encoding": "utf8"},
            "token": {"signing_key": "${credentials.apiSecretId}||${credentials.apiSecretKey}",
                "expires_in_ms": 300000, "header": {"alg": "HS256", "typ": "JWT"},
                "payload": {"iss": "${credentials.apiSecretId}"}},
        }));
        let c = connection(
            "heymarket",
            json!({"type": "JWT", "apiSecretId": "id-1", "apiSecretKey": "sekret"}),
            json!({}),
        );
        let made = make(&d, &c, 1_800_000_000).unwrap();
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"id-1||sekret").unwrap();
        m.update(made.token.rsplit_once('.').unwrap().0.as_bytes());
        m.verify_slice(&parts(&made.token).2).unwrap();
        // No algorithm named: the protocol's (RSA: RS256).
        let d = definition(json!({
            "signature": {"protocol": "RSA"},
            "token": {"signing_key": "${credentials.privateKey}", "payload": {}},
        }));
        let c = connection(
            "custom",
            json!({"type": "JWT", "privateKey": RSA_KEY}),
            json!({}),
        );
        let made = make(&d, &c, 1_800_000_000).unwrap();
        assert_eq!(parts(&made.token).0["alg"], "RS256");
    }

    #[test]
    fn assertions_are_signed_with_the_key_the_user_gave_besides() {
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        use rsa::signature::Verifier as _;
        let d = definition(json!({
            "assertion": {"type": "jwt", "key": "${assertionOption.privateKey}",
                "lifetimeInSeconds": 3600,
                "header": {"alg": "RS256", "kid": "${credentials.certificateId}"},
                "payload": {"iss": "${credentials.clientId}", "jti": "${random}",
                    "aud": "https://${connectionConfig.accountId}.example.com/token"}},
        }));
        let c = connection(
            "netsuite-client-credentials",
            json!({"type": "TWO_STEP", "clientId": "c-1", "certificateId": "k-1",
                   "assertionOption": {"privateKey": RSA_KEY}}),
            json!({"accountId": "123"}),
        );
        let jwt = assertion(&d, &c, 1_800_000_000).unwrap().unwrap();
        let (header, claims, signature) = parts(&jwt);
        assert_eq!(
            (&header["alg"], &header["kid"]),
            (&json!("RS256"), &json!("k-1"))
        );
        assert_eq!(claims["iss"], "c-1");
        assert_eq!(claims["aud"], "https://123.example.com/token");
        assert_eq!(claims["exp"], 1_800_003_600);
        assert_eq!(claims["jti"].as_str().map(str::len), Some(36));
        VerifyingKey::<sha2::Sha256>::new(rsa_key(RSA_KEY).unwrap().to_public_key())
            .verify(
                jwt.rsplit_once('.').unwrap().0.as_bytes(),
                &Signature::try_from(signature.as_slice()).unwrap(),
            )
            .unwrap();
        // Without the key: named.
        let c = connection(
            "x",
            json!({"type": "TWO_STEP", "clientId": "c-1"}),
            json!({}),
        );
        let Err(e) = assertion(&d, &c, 0) else {
            panic!("signed without a key")
        };
        assert!(e.contains("assertionOption.privateKey"), "{e}");
        assert_eq!(assertion(&definition(json!({})), &c, 0), Ok(None));
    }

    #[test]
    fn hex_keys_are_read_as_node_reads_them() {
        assert_eq!(hex_prefix("00ff10"), vec![0, 255, 16]);
        // Up to the first pair that is not hex; an odd digit left out.
        assert_eq!(hex_prefix("abzz01"), vec![0xab]);
        assert_eq!(hex_prefix("abc"), vec![0xab]);
        assert!(hex_prefix("secret").is_empty());
    }

    #[test]
    fn ghost_admin_keys_are_split_and_signed_hs256_from_hex() {
        use hmac::Mac as _;
        let d = definition(json!({
            "auth_mode": "JWT",
            "signature": {"protocol": "HMAC"},
            "token": {"signing_key": "${credentials.privateKey.secret}", "expires_in_ms": 300000,
                "header": {"alg": "HS256", "kid": "${credentials.privateKey.id}"},
                "payload": {"aud": "/admin/"}},
        }));
        let c = connection(
            "ghost-admin",
            json!({"type": "JWT", "privateKey": "6489ab:0a0b0c0d"}),
            json!({}),
        );
        let made = make(&d, &c, 1_800_000_000).unwrap();
        assert_eq!(made.lifetime_ms, 300_000);
        let (header, claims, signature) = parts(&made.token);
        assert_eq!(
            header,
            json!({"alg": "HS256", "typ": "JWT", "kid": "6489ab"})
        );
        assert_eq!(
            claims,
            json!({"aud": "/admin/", "iat": 1_800_000_000, "exp": 1_800_000_300})
        );
        let input = made.token.rsplit_once('.').unwrap().0;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&[10, 11, 12, 13]).unwrap();
        mac.update(input.as_bytes());
        mac.verify_slice(&signature).unwrap();
        // A key without its secret half: named, not signed with nothing.
        let c = connection(
            "ghost-admin",
            json!({"type": "JWT", "privateKey": "6489ab"}),
            json!({}),
        );
        let Err(e) = make(&d, &c, 0) else {
            panic!("signed without a secret")
        };
        assert!(e.contains("privateKey.secret"), "{e}");
    }

    #[test]
    fn es256_tokens_verify_with_the_public_key_and_empty_arrays_go() {
        use p256::ecdsa::signature::Verifier as _;
        let d = definition(json!({
            "auth_mode": "JWT",
            "signature": {"protocol": "EC"},
            "token": {"signing_key": "${credentials.privateKey}", "expires_in_ms": 900000,
                "header": {"alg": "ES256", "kid": "${credentials.privateKeyId}", "typ": "JWT"},
                "payload": {"iss": "${credentials.issuerId}", "aud": "appstoreconnect-v1",
                    "scope": ["${connectionConfig.scope}"]}},
        }));
        for (key, scope, expected) in [
            (EC_KEY.to_string(), json!({}), None),
            (
                EC_KEY_SEC1.replace('\n', "\\n"),
                json!({"scope": "GET /v1/apps, GET /v1/users"}),
                Some(json!(["GET /v1/apps", "GET /v1/users"])),
            ),
        ] {
            let c = connection(
                "apple-app-store",
                json!({"type": "JWT", "privateKey": key, "privateKeyId": "K1", "issuerId": "I1"}),
                scope,
            );
            let made = make(&d, &c, 1_800_000_000).unwrap();
            let (header, claims, signature) = parts(&made.token);
            assert_eq!(header, json!({"alg": "ES256", "typ": "JWT", "kid": "K1"}));
            assert_eq!(claims["iss"], "I1");
            assert_eq!(claims["exp"], 1_800_000_900);
            assert_eq!(claims.get("scope").cloned(), expected);
            let public = p256::ecdsa::VerifyingKey::from(ec_key(EC_KEY).unwrap().public_key());
            let signature = p256::ecdsa::Signature::from_slice(&signature).unwrap();
            let input = made.token.rsplit_once('.').unwrap().0;
            public.verify(input.as_bytes(), &signature).unwrap();
        }
    }

    #[test]
    fn snowflake_names_its_key_by_fingerprint_and_signs_rs256() {
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        use rsa::signature::Verifier as _;
        // Both fingerprints from `openssl pkey -pubout -outform DER | sha256`.
        assert_eq!(
            fingerprint(RSA_KEY).unwrap(),
            "SHA256:iQDvzYxeV3+xj8PUgJGydHx6OMqyTxwhVzq88/XxPWg="
        );
        assert_eq!(
            fingerprint(EC_KEY).unwrap(),
            "SHA256:3LMQc6aVJQeFF33TsJfFU2J532ti9eq+KtYl3uP9v/g="
        );
        let d = definition(json!({
            "auth_mode": "JWT",
            "signature": {"protocol": "RSA"},
            "token": {"signing_key": "${credentials.privateKey}", "expires_in_ms": 3600000,
                "header": {"alg": "RS256", "typ": "JWT"},
                "payload": {
                    "iss": "${credentials.accountIdentifier}.${credentials.userName}.${fingerprint(${credentials.privateKey})}",
                    "sub": "${credentials.accountIdentifier}.${credentials.userName}"}},
        }));
        // The key's base64 alone, its armour and breaks lost.
        let bare: String = RSA_KEY
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let c = connection(
            "snowflake-jwt",
            json!({"type": "JWT", "privateKey": bare, "accountIdentifier": "ACME", "userName": "BOB"}),
            json!({}),
        );
        let made = make(&d, &c, 1_800_000_000).unwrap();
        let (_, claims, signature) = parts(&made.token);
        assert_eq!(
            claims["iss"],
            "ACME.BOB.SHA256:iQDvzYxeV3+xj8PUgJGydHx6OMqyTxwhVzq88/XxPWg="
        );
        assert_eq!(claims["sub"], "ACME.BOB");
        let verifier = VerifyingKey::<sha2::Sha256>::new(rsa_key(RSA_KEY).unwrap().to_public_key());
        let input = made.token.rsplit_once('.').unwrap().0;
        verifier
            .verify(
                input.as_bytes(),
                &Signature::try_from(signature.as_slice()).unwrap(),
            )
            .unwrap();
    }

    #[test]
    fn wsse_matches_an_independent_digest() {
        // From Python: base64(sha1(nonce + created + password).hexdigest()).
        let at = DateTime::parse_from_rfc3339("2026-12-06T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            wsse("acme001", "s3cret", "0123456789abcdef0123456789abcdef", at),
            "UsernameToken Username=\"acme001\", PasswordDigest=\"ZmI1MjY4NzJiYTBjYzg0ODI1Mjg1MjQyNmQ0YmIzZWMyZjkwMTJjZQ==\", Nonce=\"0123456789abcdef0123456789abcdef\", Created=\"2026-12-06T10:00:00.123Z\""
        );
    }

    #[test]
    fn bad_keys_and_algorithms_are_named_not_a_panic() {
        for key in [
            "-----BEGIN X-----END X-----",
            "-----BEGIN -----END -----",
            "-----BEGIN é",
            "-----BEGIN X-----\n-----END Y-----",
            "not a key",
            "",
        ] {
            assert!(rsa_key(key).is_err(), "{key}");
            assert!(ec_key(key).is_err(), "{key}");
            assert!(fingerprint(key).is_err(), "{key}");
        }
        let claims = Map::new();
        let header = json!({"alg": "PS256"});
        let Err(e) = sign("PS256", &header, &claims, &Key::Pem(RSA_KEY.into())) else {
            panic!("signed PS256")
        };
        assert!(e.contains("PS256"), "{e}");
        let Err(e) = sign("ES256", &header, &claims, &Key::Pem(RSA_KEY.into())) else {
            panic!("an RSA key signed ES256")
        };
        assert!(e.contains("P-256"), "{e}");
        let Err(e) = sign("HS256", &header, &claims, &Key::Hmac(Vec::new())) else {
            panic!("signed with an empty secret")
        };
        assert!(e.contains("empty"), "{e}");
        assert!(unresolved("a ${b} c"));
        assert!(!unresolved("a ${ c"));
        assert!(!unresolved("plain"));
    }

    #[test]
    fn rsa_keys_past_8192_bits_are_refused_before_they_are_built() {
        use rsa::traits::PublicKeyParts as _;
        // The made-up keys are keys `rsa` takes: up to the limit, read.
        let at_limit = rsa_key(&made_up_rsa_key(4096, 4088)).unwrap();
        assert_eq!(at_limit.n().bits(), 8185);
        // Past it: refused by their size, named, at once, wherever a key
        // is read (a signature, a fingerprint, an assertion).
        let Err(e) = rsa_key(&made_up_rsa_key(4104, 4096)) else {
            panic!("a key of 8,201 bits was read")
        };
        assert!(
            e.contains("8201 bits") && e.contains("at most 8192 bits"),
            "{e}"
        );
        // 16,377 bits: `rsa` alone would take it, and sign with it for
        // seconds.
        let huge = made_up_rsa_key(8192, 8184);
        let started = std::time::Instant::now();
        let claims = Map::new();
        let header = json!({"alg": "RS256"});
        let d = definition(json!({
            "assertion": {"type": "jwt", "key": "${assertionOption.privateKey}",
                "header": {"alg": "RS256"}, "payload": {}},
        }));
        let c = connection(
            "x",
            json!({"type": "TWO_STEP", "assertionOption": {"privateKey": huge}}),
            json!({}),
        );
        for refused in [
            rsa_key(&huge).err(),
            sign("RS256", &header, &claims, &Key::Pem(huge.clone())).err(),
            fingerprint(&huge).err(),
            interpolate("${fingerprint(${k})}", &definition(json!({"k": huge}))).err(),
            assertion(&d, &c, 0).err(),
        ] {
            let e = refused.expect("refused");
            assert!(
                e.contains("16377 bits") && e.contains("at most 8192 bits"),
                "{e}"
            );
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Larger than any key it takes: refused before it is parsed (its
        // DER), or decoded (its text); EC keys alike.
        let Err(e) = rsa_key(&made_up_rsa_key(16384, 16376)) else {
            panic!("a key of 32,761 bits was read")
        };
        assert!(e.contains("bytes of DER") && e.contains("8192 bits"), "{e}");
        let long = "A".repeat(20_000);
        for e in [
            rsa_key(&long).err(),
            ec_key(&long).err(),
            fingerprint(&long).err(),
        ] {
            let e = e.expect("refused");
            assert!(e.contains("20000 bytes long"), "{e}");
        }
        assert_eq!(bit_length(&[0, 0, 1, 0]), 9);
        assert_eq!(bit_length(&[]), 0);
    }

    #[test]
    fn a_2048_bit_key_signs_and_verifies() {
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        use rsa::signature::Verifier as _;
        let claims = definition(json!({"iss": "x"}));
        let jwt = sign(
            "RS256",
            &json!({"alg": "RS256"}),
            &claims,
            &Key::Pem(RSA_KEY_2048.into()),
        )
        .unwrap();
        let public = rsa_key(RSA_KEY_2048).unwrap().to_public_key();
        VerifyingKey::<sha2::Sha256>::new(public)
            .verify(
                jwt.rsplit_once('.').unwrap().0.as_bytes(),
                &Signature::try_from(parts(&jwt).2.as_slice()).unwrap(),
            )
            .unwrap();
    }
}
