//! The provider templates of `providers.yaml`: `${connectionConfig.x}`,
//! `${metadata.x}`, `${credentials.x}`, `${apiKey}`, `${accessToken}`,
//! `${base64(...)}`, and `A || B` (A if every placeholder in it resolved).

use base64::Engine as _;

/// Expands `template`; `None` when a placeholder has no value.
pub fn expand(template: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if let Some((first, rest)) = template.split_once(" || ") {
        return expand(first, lookup).or_else(|| expand(rest, lookup));
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        if let Some(inner) = after.strip_prefix("base64(") {
            let end = matching_close(inner)?;
            let encoded = expand(&inner[..end], lookup)?;
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(encoded));
            // Skip `)` and `}`.
            rest = inner[end + 1..].strip_prefix('}')?;
        } else {
            let end = after.find('}')?;
            out.push_str(&lookup(after[..end].trim())?);
            rest = &after[end + 1..];
        }
    }
    out.push_str(rest);
    Some(out)
}

/// A URL expanded from a provider's template (a base URL, a token URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandedUrl {
    pub url: String,
    /// A connection's value chose the host: the template's host has a
    /// placeholder (`https://${connectionConfig.subdomain}.x.com`) or the
    /// whole URL is one (`${connectionConfig.instance_url}`). Such a host
    /// is only as trustworthy as whoever created the connection.
    pub host_from_connection: bool,
}

/// Why a URL template could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlTemplateError {
    #[error("a placeholder has no value")]
    Missing,
    /// A value placed beside fixed text in the host could leave it
    /// (`evil.com/?` before `.zendesk.com`).
    #[error(
        "the value of `{key}` (`{value}`) cannot be part of a host name: only letters, digits, `.`, `-` and `_` can"
    )]
    HostValue { key: String, value: String },
}

/// Expands a URL template like [`expand`], keeping what a connection's
/// values may do to the host: a placeholder that shares the host with
/// fixed text takes only host-name characters, and the result says whether
/// the host came from a value.
pub fn expand_url(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<ExpandedUrl, UrlTemplateError> {
    expand_url_with(template, lookup, false)
}

/// Like [`expand_url`], with every value placed after the host
/// percent-encoded as JavaScript's `encodeURIComponent` does, as the
/// original builds token URLs: a password with a `&` in a query
/// (`?password=${credentials.password}`) stays one value.
pub fn expand_url_encoded(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<ExpandedUrl, UrlTemplateError> {
    expand_url_with(template, lookup, true)
}

/// `value` percent-encoded as `encodeURIComponent` encodes it: all but
/// letters, digits and `-_.!~*'()`.
pub fn encode_uri_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn expand_url_with(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    encode: bool,
) -> Result<ExpandedUrl, UrlTemplateError> {
    let refused = std::cell::RefCell::new(None);
    for alternative in template.split(" || ") {
        let (host_keys, whole_host) = host_placeholders(alternative);
        // The placeholder that is the whole URL (`${connectionConfig.instance_url}/token`)
        // keeps its `://` and slashes.
        let leading = alternative
            .trim()
            .strip_prefix("${")
            .and_then(|r| r.find('}').map(|end| r[..end].trim().to_string()));
        // A computed value (`${base64(…)}`) in a host is not checked
        // character by character: refused.
        if let Some(key) = host_keys.iter().find(|k| k.starts_with("base64(")) {
            return Err(UrlTemplateError::HostValue {
                key: key.clone(),
                value: "(computed)".into(),
            });
        }
        let checked = |key: &str| -> Option<String> {
            let value = lookup(key)?;
            let host_safe = value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !whole_host && host_keys.iter().any(|k| k == key) && !host_safe {
                refused
                    .borrow_mut()
                    .get_or_insert(UrlTemplateError::HostValue {
                        key: key.to_string(),
                        value: value.chars().take(100).collect(),
                    });
                return None;
            }
            if encode && !host_keys.iter().any(|k| k == key) && leading.as_deref() != Some(key) {
                return Some(encode_uri_component(&value));
            }
            Some(value)
        };
        if let Some(url) = expand(alternative, &checked) {
            return Ok(ExpandedUrl {
                url,
                host_from_connection: whole_host || !host_keys.is_empty(),
            });
        }
        if let Some(e) = refused.borrow_mut().take() {
            return Err(e);
        }
    }
    Err(UrlTemplateError::Missing)
}

/// The placeholders of one URL template alternative (no `A || B`) whose
/// value can choose the URL's registrable domain: the whole host, the
/// whole URL, or any placeholder of a host that does not end in fixed
/// text naming a domain (`.zendesk.com` after
/// `${connectionConfig.subdomain}` keeps it within zendesk.com;
/// `accounts.zoho.${connectionConfig.extension}` or `api.${x}.com` do
/// not). Whoever gives one of them chooses where the URL goes.
pub fn host_choosing_keys(alternative: &str) -> Vec<String> {
    let alternative = alternative.trim();
    if let Some(rest) = alternative.strip_prefix("${") {
        return rest
            .find('}')
            .map(|end| rest[..end].trim().to_string())
            .into_iter()
            .collect();
    }
    let (host_keys, whole) = host_placeholders(alternative);
    if host_keys.is_empty() || whole {
        return host_keys;
    }
    // The fixed text after the last placeholder (its port aside) must be
    // a label and a top-level domain at least: `.x.com`.
    let suffix = host_suffix(alternative);
    let suffix = suffix.split(':').next().unwrap_or("");
    let labels: Vec<&str> = suffix.split('.').collect();
    let names_a_domain =
        labels.len() >= 3 && labels[0].is_empty() && labels[1..].iter().all(|l| !l.is_empty());
    if names_a_domain {
        Vec::new()
    } else {
        host_keys
    }
}

/// The fixed text of a URL template's host after its last placeholder.
fn host_suffix(template: &str) -> &str {
    let authority = authority(template);
    match authority.rfind('}') {
        Some(last) => &authority[last + 1..],
        None => "",
    }
}

/// A URL template's authority (`host[:port]`, its placeholders whole): up
/// to the first `/`, `?` or `#` outside a placeholder.
fn authority(template: &str) -> &str {
    let Some(scheme_end) = template.find("://") else {
        return "";
    };
    let authority = &template[scheme_end + 3..];
    let mut depth = 0usize;
    let bytes = authority.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth > 0 => depth -= 1,
            b'/' | b'?' | b'#' if depth == 0 => return &authority[..i],
            _ => {}
        }
        i += 1;
    }
    authority
}

/// The placeholders in the host of a URL template, and whether one of them
/// is the whole host (nothing fixed beside it: the value may carry its own
/// path, `https://${connectionConfig.baseUrl}`) or the whole URL.
fn host_placeholders(template: &str) -> (Vec<String>, bool) {
    let template = template.trim();
    if template.starts_with("${") {
        return (Vec::new(), true);
    }
    if !template.contains("://") {
        return (Vec::new(), false);
    }
    let authority = authority(template);
    let mut keys = Vec::new();
    let mut rest = authority;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(close) = after.find('}') else {
            break;
        };
        keys.push(after[..close].trim().to_string());
        rest = &after[close + 1..];
    }
    let whole = keys.len() == 1
        && authority.starts_with("${")
        && authority.ends_with('}')
        && authority.matches("${").count() == 1;
    (keys, whole)
}

/// Index of the `)` that closes a `base64(` whose content starts `s`,
/// skipping nested `${...}` placeholders.
fn matching_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth > 0 => depth -= 1,
            b')' if depth == 0 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_that_choose_a_host_are_named() {
        let keys = |t: &str| host_choosing_keys(t);
        let one = |k: &str| vec![format!("connectionConfig.{k}")];
        assert_eq!(
            keys("https://${connectionConfig.domain}/oauth/token"),
            one("domain")
        );
        assert_eq!(
            keys("${connectionConfig.instance_url}/token"),
            one("instance_url")
        );
        assert_eq!(
            keys("https://accounts.zoho.${connectionConfig.extension}/t"),
            one("extension")
        );
        assert_eq!(
            keys("https://api.${connectionConfig.domain}.com/t"),
            one("domain")
        );
        assert_eq!(
            keys("https://${connectionConfig.domain}:8443/t"),
            one("domain")
        );
        assert!(keys("https://${connectionConfig.subdomain}.zendesk.com/t").is_empty());
        assert!(keys("https://${connectionConfig.subdomain}.zendesk.com:443/t").is_empty());
        assert!(keys("https://x.com/${connectionConfig.path}").is_empty());
        assert!(keys("https://x.com/t").is_empty());
    }

    fn lookup(key: &str) -> Option<String> {
        match key {
            "connectionConfig.subdomain" => Some("acme".into()),
            "apiKey" => Some("k".into()),
            "credentials.username" => Some("u".into()),
            "credentials.password" => Some("p".into()),
            _ => None,
        }
    }

    #[test]
    fn placeholders_and_fallbacks() {
        assert_eq!(
            expand("https://${connectionConfig.subdomain}.x.com", &lookup).as_deref(),
            Some("https://acme.x.com")
        );
        assert_eq!(
            expand("https://${connectionConfig.nope}.x.com", &lookup),
            None
        );
        assert_eq!(
            expand("${connectionConfig.version} || 2022-11-28", &lookup).as_deref(),
            Some("2022-11-28")
        );
        assert_eq!(
            expand("Bearer ${apiKey}", &lookup).as_deref(),
            Some("Bearer k")
        );
    }

    #[test]
    fn base64_with_nested_placeholders() {
        assert_eq!(
            expand(
                "Basic ${base64(${credentials.username}:${credentials.password})}",
                &lookup
            )
            .as_deref(),
            Some("Basic dTpw")
        );
        assert_eq!(
            expand("${base64(${apiKey}:)}", &lookup).as_deref(),
            Some("azo=")
        );
    }

    #[test]
    fn url_templates_say_whether_a_value_chose_the_host() {
        let values = |key: &str| -> Option<String> {
            match key {
                "connectionConfig.subdomain" => Some("acme".into()),
                "connectionConfig.evil" => Some("evil.com/x?".into()),
                "connectionConfig.instance_url" => Some("https://na1.example.com/x".into()),
                "connectionConfig.tenant" => Some("a/b".into()),
                _ => None,
            }
        };
        let fixed = expand_url("https://api.x.com/${connectionConfig.tenant}", &values).unwrap();
        assert_eq!(fixed.url, "https://api.x.com/a/b");
        assert!(!fixed.host_from_connection);

        let sub = expand_url("https://${connectionConfig.subdomain}.x.com/api", &values).unwrap();
        assert_eq!(sub.url, "https://acme.x.com/api");
        assert!(sub.host_from_connection);

        // A value that would end the host before the fixed suffix.
        assert_eq!(
            expand_url("https://${connectionConfig.evil}.x.com", &values),
            Err(UrlTemplateError::HostValue {
                key: "connectionConfig.evil".into(),
                value: "evil.com/x?".into()
            })
        );
        assert!(matches!(
            expand_url(
                "https://${base64(${connectionConfig.subdomain})}.x.com",
                &values
            ),
            Err(UrlTemplateError::HostValue { .. })
        ));
        // The whole host, or the whole URL, from one value: taken as is.
        let whole = expand_url("https://${connectionConfig.evil}", &values).unwrap();
        assert_eq!(whole.url, "https://evil.com/x?");
        assert!(whole.host_from_connection);
        let url = expand_url("${connectionConfig.instance_url}", &values).unwrap();
        assert_eq!(url.url, "https://na1.example.com/x");
        assert!(url.host_from_connection);

        // Fallbacks: the first alternative that resolves.
        // Token URLs: values after the host encoded, the host's not.
        let values = |k: &str| match k {
            "credentials.password" => Some("p&ss=w/rd é".to_string()),
            "connectionConfig.subdomain" => Some("acme".to_string()),
            "connectionConfig.instance_url" => Some("https://x.example.com".to_string()),
            _ => None,
        };
        let token = expand_url_encoded(
            "https://${connectionConfig.subdomain}.jobs.com/auth?password=${credentials.password}",
            &values,
        )
        .unwrap();
        assert_eq!(
            token.url,
            "https://acme.jobs.com/auth?password=p%26ss%3Dw%2Frd%20%C3%A9"
        );
        let whole =
            expand_url_encoded("${connectionConfig.instance_url}/oauth/token", &values).unwrap();
        assert_eq!(whole.url, "https://x.example.com/oauth/token");
        let fallback = expand_url(
            "https://${connectionConfig.nope}.x.com || https://api.x.com",
            &values,
        )
        .unwrap();
        assert_eq!(fallback.url, "https://api.x.com");
        assert!(!fallback.host_from_connection);
        assert_eq!(
            expand_url("https://${connectionConfig.nope}.x.com", &values),
            Err(UrlTemplateError::Missing)
        );
    }
}
