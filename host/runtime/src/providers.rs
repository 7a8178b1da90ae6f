//! Provider definitions in the format of Nango's `providers.yaml`.
//!
//! Only what the runtime needs is read (`auth_mode` and the `proxy` block);
//! every other key of a provider is accepted and ignored, so a user can point
//! sluice at the original catalogue or at a file of their own. `alias: other`
//! inherits every top-level key of `other` that the provider does not set.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

/// A catalogue of providers, by name.
#[derive(Debug, Clone, Default)]
pub struct ProviderCatalog {
    providers: HashMap<String, Provider>,
}

/// One provider's definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    /// `OAUTH2`, `API_KEY`, `BASIC`, ... (informational: injection follows the
    /// connection's credential type, as in the original).
    pub auth_mode: Option<String>,
    pub proxy: ProxyDefaults,
    /// Where OAuth2 tokens are obtained and refreshed (may hold templates).
    pub token_url: Option<String>,
    /// The whole definition, for the platform's other uses (webhook
    /// routing, token request parameters).
    pub definition: Map<String, Value>,
}

/// The `proxy` block of a provider.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ProxyDefaults {
    /// May contain `${connectionConfig.x}`-style templates and `A || B`.
    pub base_url: Option<String>,
    /// Header templates (`${accessToken}`, `${apiKey}`, `${base64(...)}`, ...).
    #[serde(deserialize_with = "ordered_strings")]
    pub headers: Vec<(String, String)>,
    /// For API_KEY providers the first key receives the API key.
    #[serde(deserialize_with = "ordered_strings")]
    pub query: Vec<(String, String)>,
    pub retry: Option<RetryDefaults>,
    pub decompress: bool,
    /// The `paginate` block, kept as JSON: scripts override it key by key.
    pub paginate: Option<Map<String, Value>>,
}

/// The `proxy.retry` block.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RetryDefaults {
    /// Header holding the time to retry at (epoch seconds or a date).
    /// Newer catalogues give a list of names: the first is used.
    #[serde(deserialize_with = "one_or_first")]
    pub at: Option<String>,
    /// Header holding the seconds to wait (a name or a list, as `at`).
    #[serde(deserialize_with = "one_or_first")]
    pub after: Option<String>,
    /// Header that means "rate limited" when it equals `0`.
    pub remaining: Option<String>,
    /// An extra status code that is retried (a list in newer catalogues:
    /// the first is used).
    #[serde(deserialize_with = "status_code")]
    pub error_code: Option<u16>,
    pub in_body: Option<RetryInBody>,
}

/// A value, or the first value of a list.
fn one_or_first<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match Option::<OneOrMany<T>>::deserialize(d)? {
        None => None,
        Some(OneOrMany::One(s)) => Some(s),
        Some(OneOrMany::Many(v)) => v.into_iter().next(),
    })
}

/// A status code as a number or a string, or the first of a list of them.
fn status_code<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Code {
        Number(u16),
        Text(String),
    }
    Ok(one_or_first::<D, Code>(d)?.and_then(|c| match c {
        Code::Number(n) => Some(n),
        Code::Text(t) => t.trim().parse().ok(),
    }))
}

/// `proxy.retry.in_body`: the wait is found in the response body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RetryInBody {
    /// Dot path into the JSON body.
    pub path: String,
    /// A regular expression (optionally between slashes) whose group 1 is the value.
    pub value: String,
    /// `at` or `after`.
    pub strategy: String,
}

/// Errors reading a provider catalogue.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot read providers file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("providers file {origin} is not valid YAML: {message}")]
    Yaml { origin: String, message: String },
    #[error("providers file {origin}: provider `{name}`: {message}")]
    Invalid {
        origin: String,
        name: String,
        message: String,
    },
}

/// The small catalogue shipped with sluice for its examples.
const BUILTIN: &str = include_str!("../providers.yaml");

impl ProviderCatalog {
    /// The catalogue shipped with sluice.
    pub fn builtin() -> Result<Self, ProviderError> {
        Self::from_yaml(BUILTIN, "<builtin>")
    }

    /// Reads a catalogue in the format of Nango's `providers.yaml`.
    pub fn from_file(path: &Path) -> Result<Self, ProviderError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProviderError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses a catalogue; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ProviderError> {
        let raw: Map<String, Value> = if text.trim().is_empty() {
            Map::new()
        } else {
            serde_norway::from_str(text).map_err(|e| ProviderError::Yaml {
                origin: origin.to_string(),
                message: e.to_string(),
            })?
        };
        let mut providers = HashMap::with_capacity(raw.len());
        for (name, value) in &raw {
            let resolved = resolve_alias(&raw, name, value, origin)?;
            let provider = parse_provider(name, resolved, origin)?;
            providers.insert(name.clone(), provider);
        }
        Ok(Self { providers })
    }

    /// Adds `other`'s providers, replacing those with the same name.
    pub fn extend(&mut self, other: ProviderCatalog) {
        self.providers.extend(other.providers);
    }

    /// Adds those of `other`'s providers whose names it lacks, keeping its
    /// own; how many were added.
    pub fn extend_missing(&mut self, other: ProviderCatalog) -> usize {
        let mut added = 0;
        for (name, provider) in other.providers {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.providers.entry(name) {
                slot.insert(provider);
                added += 1;
            }
        }
        added
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.providers.get(name)
    }

    /// Every provider, by name.
    pub fn sorted(&self) -> Vec<&Provider> {
        let mut all: Vec<&Provider> = self.providers.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn insert(&mut self, provider: Provider) {
        self.providers.insert(provider.name.clone(), provider);
    }

    pub fn len(&self) -> usize {
        self.providers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

/// How many aliases may lead to a provider.
const MAX_ALIAS_DEPTH: u32 = 8;

fn resolve_alias(
    raw: &Map<String, Value>,
    name: &str,
    value: &Value,
    origin: &str,
) -> Result<Value, ProviderError> {
    resolve_alias_at(raw, name, value, origin, 0)
}

fn resolve_alias_at(
    raw: &Map<String, Value>,
    name: &str,
    value: &Value,
    origin: &str,
    depth: u32,
) -> Result<Value, ProviderError> {
    let invalid = |message: String| ProviderError::Invalid {
        origin: origin.to_string(),
        name: name.to_string(),
        message,
    };
    let Some(own) = value.as_object() else {
        return Err(invalid("expected a mapping".into()));
    };
    let Some(alias) = own.get("alias").and_then(Value::as_str) else {
        return Ok(value.clone());
    };
    let Some(base) = raw.get(alias) else {
        return Err(invalid(format!(
            "alias `{alias}` is not a provider in this file"
        )));
    };
    // An alias of an alias takes its target's resolved fields; a cycle
    // would never end, so the chain is bounded.
    let base = if base.get("alias").is_some() {
        if name == alias {
            return Err(invalid(format!("alias `{alias}` refers to itself")));
        }
        if depth >= MAX_ALIAS_DEPTH {
            return Err(invalid(format!(
                "alias `{alias}`: the chain of aliases is longer than {MAX_ALIAS_DEPTH} or a cycle"
            )));
        }
        resolve_alias_at(raw, alias, base, origin, depth + 1)?
    } else {
        base.clone()
    };
    let Some(base) = base.as_object() else {
        return Err(invalid(format!("alias `{alias}` is not a mapping")));
    };
    let mut merged = base.clone();
    for (k, v) in own {
        merged.insert(k.clone(), v.clone());
    }
    Ok(Value::Object(merged))
}

fn parse_provider(name: &str, value: Value, origin: &str) -> Result<Provider, ProviderError> {
    let invalid = |message: String| ProviderError::Invalid {
        origin: origin.to_string(),
        name: name.to_string(),
        message,
    };
    let auth_mode = value
        .get("auth_mode")
        .and_then(Value::as_str)
        .map(str::to_string);
    let proxy = match value.get("proxy") {
        None | Some(Value::Null) => ProxyDefaults::default(),
        Some(p) => serde_json::from_value(normalize_proxy(p.clone()))
            .map_err(|e| invalid(format!("proxy: {e}")))?,
    };
    let token_url = match value.get("token_url") {
        Some(Value::String(s)) => Some(s.clone()),
        // Some providers key the URL by grant type; refresh uses the OAuth2 one.
        Some(Value::Object(m)) => m
            .get("OAUTH2")
            .or_else(|| m.values().next())
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    };
    Ok(Provider {
        name: name.to_string(),
        auth_mode,
        proxy,
        token_url,
        definition: value.as_object().cloned().unwrap_or_default(),
    })
}

/// YAML lets `decompress: 'true'` and `error_code: '403'` through as strings.
fn normalize_proxy(mut proxy: Value) -> Value {
    if let Some(d) = proxy.get_mut("decompress")
        && let Some(s) = d.as_str()
    {
        *d = Value::Bool(s == "true");
    }
    if let Some(code) = proxy.pointer_mut("/retry/error_code")
        && let Some(n) = code.as_str().and_then(|s| s.parse::<u16>().ok())
    {
        *code = Value::from(n);
    }
    proxy
}

fn ordered_strings<'de, D>(d: D) -> Result<Vec<(String, String)>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let map: Option<Map<String, Value>> = Option::deserialize(d)?;
    Ok(map
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses() {
        let catalog = ProviderCatalog::builtin().unwrap();
        let hubspot = catalog.get("hubspot").unwrap();
        assert_eq!(
            hubspot.proxy.base_url.as_deref(),
            Some("https://api.hubapi.com")
        );
        assert_eq!(
            hubspot.proxy.paginate.as_ref().unwrap()["type"],
            Value::from("cursor")
        );
        // Their webhooks are routed (and their signatures checked) as the
        // original's catalogue says.
        for (name, script) in [
            ("hubspot", "hubspotWebhookRouting"),
            ("linear", "linearWebhookRouting"),
        ] {
            assert_eq!(
                catalog.get(name).unwrap().definition["webhook_routing_script"],
                Value::from(script)
            );
        }
    }

    #[test]
    fn alias_inherits_and_overrides() {
        let catalog = ProviderCatalog::from_yaml(
            "a:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: https://a.example\n    decompress: 'true'\nb:\n  alias: a\n  auth_mode: BASIC\n",
            "t",
        )
        .unwrap();
        let b = catalog.get("b").unwrap();
        assert_eq!(b.auth_mode.as_deref(), Some("BASIC"));
        assert_eq!(b.proxy.base_url.as_deref(), Some("https://a.example"));
        assert!(b.proxy.decompress);
    }

    #[test]
    fn bad_alias_and_bad_yaml_name_the_problem() {
        let err = ProviderCatalog::from_yaml("b:\n  alias: nope\n", "t.yaml").unwrap_err();
        assert!(err.to_string().contains("provider `b`"), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
        let err = ProviderCatalog::from_yaml("a: [unclosed", "t.yaml").unwrap_err();
        assert!(err.to_string().contains("t.yaml"), "{err}");
    }

    #[test]
    fn header_order_is_kept() {
        let catalog = ProviderCatalog::from_yaml(
            "p:\n  proxy:\n    query:\n      KEY: ${apiKey}\n      other: x\n",
            "t",
        )
        .unwrap();
        assert_eq!(catalog.get("p").unwrap().proxy.query[0].0, "KEY");
    }
}
