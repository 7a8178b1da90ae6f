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
}
