//! Generic MCP servers' OAuth (`MCP_OAUTH2_GENERIC`: the catalogue's
//! `mcp-generic` and `cloudflare-mcp`). The user names the server
//! (`mcp_server_url`); sluice finds its authorization server (the
//! server's protected resource metadata, RFC 9728, else the server's own
//! origin) and that server's metadata (RFC 8414, or OpenID discovery),
//! registers a public client for the connection (RFC 7591), and runs
//! OAuth2's authorization code with PKCE, naming the resource (RFC 8707)
//! — as the original does with the MCP SDK.
//!
//! Every URL here is chosen by the user or by the metadata the user's
//! server serves: https, a public domain name, resolved to public
//! addresses only ([`Connections::chosen_target`]). The connection keeps
//! `mcp_server_url` (its proxy's base URL), `oauth_token_url`,
//! `oauth_resource_url`, `oauth_metadata` (the authorization server's
//! metadata, as the original's, its endpoints and capabilities only) and
//! `oauth_client_auth` (how its client authenticates) in its
//! configuration; its client in its credentials' `config_override`
//! (encrypted at rest, as every credential).

use serde_json::{Map, Value};

use crate::refresh::{Connections, Registered, json_answer};

/// A generic MCP connection's token URL: the one its authorization
/// server's metadata named, kept in its configuration.
pub(crate) const TOKEN_URL_TEMPLATE: &str = "${connectionConfig.oauth_token_url}";

/// The configuration keys sluice sets from discovery: never taken from a
/// browser's `params` or a session.
pub(crate) const DISCOVERED_KEYS: [&str; 6] = [
    "oauth_token_url",
    "oauth_resource_url",
    "oauth_metadata",
    "oauth_client_info",
    "oauth_client_auth",
    "oauth_code_verifier",
];

/// The authorization server metadata a connection keeps: what sluice
/// uses or a script may want, not whatever else the server sent.
const KEPT_METADATA: [&str; 9] = [
    "issuer",
    "authorization_endpoint",
    "token_endpoint",
    "registration_endpoint",
    "scopes_supported",
    "response_types_supported",
    "grant_types_supported",
    "code_challenge_methods_supported",
    "token_endpoint_auth_methods_supported",
];

/// What discovery found for a server.
pub(crate) struct Discovered {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub registration_endpoint: Option<String>,
    /// The scopes to ask for (the resource's, else the authorization
    /// server's), space-separated.
    pub scopes: Option<String>,
    pub resource: Option<String>,
    pub metadata: Map<String, Value>,
}

/// Where a server's protected resource metadata may be (path-aware first).
fn resource_metadata_urls(server: &url::Url) -> Vec<String> {
    let origin = server.origin().ascii_serialization();
    let path = server.path().trim_end_matches('/');
    let mut urls = Vec::new();
    if !path.is_empty() {
        urls.push(format!(
            "{origin}/.well-known/oauth-protected-resource{path}"
        ));
    }
    urls.push(format!("{origin}/.well-known/oauth-protected-resource"));
    urls
}

/// Where an authorization server's metadata may be, in the order the MCP
/// specification gives.
fn server_metadata_urls(issuer: &url::Url) -> Vec<String> {
    let origin = issuer.origin().ascii_serialization();
    let path = issuer.path().trim_end_matches('/');
    if path.is_empty() {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server"),
            format!("{origin}/.well-known/openid-configuration"),
        ]
    } else {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{origin}{path}/.well-known/openid-configuration"),
        ]
    }
}

async fn get_json(connections: &Connections, url: &str) -> Result<Map<String, Value>, String> {
    let (http, target) = connections.chosen_target(url, "a metadata URL")?;
    json_answer(
        http.get(target)
            .header("user-agent", "Nango")
            .header("mcp-protocol-version", "2025-06-18"),
        &format!("`{url}`"),
    )
    .await
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// Finds the authorization server of the MCP server at `server` and reads
/// its metadata. An error says what is missing or refused.
pub(crate) async fn discover(
    connections: &Connections,
    server: &str,
) -> Result<Discovered, String> {
    connections.chosen_target(server, "the MCP server URL")?;
    let server_url =
        url::Url::parse(server).map_err(|e| format!("the MCP server URL `{server}`: {e}"))?;
    // It becomes the connection's base URL: paths are put after it.
    if server_url.query().is_some() || server_url.fragment().is_some() {
        return Err(format!(
            "the MCP server URL `{server}` must have no query or fragment"
        ));
    }
    // The resource's metadata is optional: without it the server's own
    // origin is its authorization server.
    let mut resource_metadata = None;
    for url in resource_metadata_urls(&server_url) {
        if let Ok(m) = get_json(connections, &url).await {
            resource_metadata = Some(m);
            break;
        }
    }
    // The resource it describes must be this server (RFC 9728 §3.3),
    // else a token for another would be sent here.
    if let Some(named) = resource_metadata
        .as_ref()
        .and_then(|m| m.get("resource"))
        .and_then(Value::as_str)
        && !resource_covers(named, &server_url)
    {
        return Err(format!(
            "the server's protected resource metadata describes `{named}`, not `{server}`"
        ));
    }
    let issuer = match resource_metadata
        .as_ref()
        .and_then(|m| m.get("authorization_servers"))
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
    {
        Some(named) => {
            connections.chosen_target(named, "the MCP server's authorization server")?;
            url::Url::parse(named).map_err(|e| format!("authorization server `{named}`: {e}"))?
        }
        None => {
            let mut origin = server_url.clone();
            origin.set_path("/");
            origin.set_query(None);
            origin.set_fragment(None);
            origin
        }
    };
    let mut metadata = None;
    let mut last = String::new();
    for url in server_metadata_urls(&issuer) {
        match get_json(connections, &url).await {
            Ok(m) => {
                metadata = Some(m);
                break;
            }
            Err(e) => last = e,
        }
    }
    let metadata = metadata.ok_or_else(|| {
        format!("found no OAuth metadata for the authorization server `{issuer}` (last: {last})")
    })?;
    // Metadata speaks for the server it names (RFC 8414 §3.3).
    if let Some(named) = metadata.get("issuer").and_then(Value::as_str)
        && named.trim_end_matches('/') != issuer.as_str().trim_end_matches('/')
    {
        return Err(format!(
            "the authorization server metadata found for `{issuer}` names another issuer, `{named}`"
        ));
    }
    let endpoint = |key: &str| {
        metadata
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let authorization_endpoint = endpoint("authorization_endpoint")
        .ok_or("the authorization server's metadata names no authorization_endpoint")?;
    match url::Url::parse(&authorization_endpoint) {
        Ok(u) if u.scheme() == "https" => {}
        _ => {
            return Err(format!(
                "the authorization_endpoint `{authorization_endpoint}` is not an https URL"
            ));
        }
    }
    let token_endpoint = endpoint("token_endpoint")
        .ok_or("the authorization server's metadata names no token_endpoint")?;
    connections.chosen_target(&token_endpoint, "the token_endpoint")?;
    // One that is not a public https URL is left out, as the original's.
    let registration_endpoint = endpoint("registration_endpoint").filter(|r| {
        connections
            .chosen_target(r, "the registration_endpoint")
            .is_ok()
    });
    let response_types = strings(metadata.get("response_types_supported"));
    if metadata.contains_key("response_types_supported")
        && !response_types.iter().any(|t| t == "code")
    {
        return Err("the authorization server does not take the authorization code flow (`response_types_supported` has no `code`)".into());
    }
    let methods = strings(metadata.get("code_challenge_methods_supported"));
    if metadata.contains_key("code_challenge_methods_supported")
        && !methods.iter().any(|m| m == "S256")
    {
        return Err("the authorization server does not take PKCE's S256 (`code_challenge_methods_supported`)".into());
    }
    let resource_scopes = strings(
        resource_metadata
            .as_ref()
            .and_then(|m| m.get("scopes_supported")),
    );
    let scopes = if resource_scopes.is_empty() {
        strings(metadata.get("scopes_supported"))
    } else {
        resource_scopes
    };
    let resource = resource_metadata
        .as_ref()
        .and_then(|m| m.get("resource"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let metadata = metadata
        .into_iter()
        .filter(|(k, _)| KEPT_METADATA.contains(&k.as_str()))
        .collect();
    Ok(Discovered {
        authorization_endpoint,
        token_endpoint,
        registration_endpoint,
        scopes: (!scopes.is_empty()).then(|| scopes.join(" ")),
        resource,
        metadata,
    })
}

/// Whether resource `named` is the server at `server` (the same origin,
/// the server's path within the resource's), as the MCP SDK checks it.
fn resource_covers(named: &str, server: &url::Url) -> bool {
    let Ok(named) = url::Url::parse(named) else {
        return false;
    };
    if named.origin() != server.origin() {
        return false;
    }
    let within = named.path().trim_end_matches('/');
    let path = server.path().trim_end_matches('/');
    path == within || path.starts_with(&format!("{within}/"))
}

/// How a registered client authenticates at the token endpoint: as the
/// server said, else (a secret given) Basic, RFC 7591's default, else
/// none (a public client).
pub(crate) fn client_auth(client: &Registered) -> &str {
    match (&client.client_secret, client.auth_method.as_deref()) {
        (None, _) => "none",
        (Some(_), Some(method @ ("client_secret_post" | "client_secret_basic"))) => method,
        (Some(_), _) => "client_secret_basic",
    }
}

/// An imported connection of a generic MCP server, in the original's
/// shape (its client as `oauth_client_info`, JSON text in the
/// configuration, and no `oauth_token_url`) or in sluice's: its token URL
/// taken from `oauth_metadata`, its client moved into the credentials
/// (`config_override`, a public client's secret empty), out of the
/// configuration the API shows.
pub(crate) fn imported(
    config: &mut Map<String, Value>,
    credentials: &mut Map<String, Value>,
    given_client: Option<&Value>,
) {
    if !config.contains_key("oauth_token_url")
        && let Some(endpoint) = config
            .get("oauth_metadata")
            .and_then(Value::as_str)
            .and_then(|m| serde_json::from_str::<Value>(m).ok())
            .and_then(|m| {
                m.get("token_endpoint")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
    {
        config.insert("oauth_token_url".into(), Value::String(endpoint));
    }
    let info = config.remove("oauth_client_info").and_then(|i| {
        i.as_str()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
    });
    // The client given with the credentials, else the original's info.
    let client = given_client.or(info.as_ref());
    let Some(id) = client
        .and_then(|c| c.get("client_id"))
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
    else {
        return;
    };
    let secret = client
        .and_then(|c| c.get("client_secret"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !credentials.contains_key("config_override") {
        credentials.insert(
            "config_override".into(),
            serde_json::json!({"client_id": id, "client_secret": secret}),
        );
    }
    if !config.contains_key("oauth_client_auth") {
        let registered = Registered {
            client_id: id.to_string(),
            client_secret: (!secret.is_empty()).then(|| secret.to_string()),
            auth_method: client
                .and_then(|c| c.get("token_endpoint_auth_method"))
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        config.insert(
            "oauth_client_auth".into(),
            Value::String(client_auth(&registered).to_string()),
        );
    }
}

/// Registers a public client for one connection at `endpoint`, its
/// redirect `callback` (the server may give it a secret anyway).
pub(crate) async fn register(
    connections: &Connections,
    endpoint: &str,
    callback: &str,
    name: &str,
    scopes: Option<&str>,
) -> Result<Registered, String> {
    let (http, target) = connections.chosen_target(endpoint, "the registration_endpoint")?;
    let mut body = Map::new();
    body.insert("redirect_uris".into(), serde_json::json!([callback]));
    body.insert("token_endpoint_auth_method".into(), "none".into());
    body.insert(
        "grant_types".into(),
        serde_json::json!(["authorization_code", "refresh_token"]),
    );
    body.insert("response_types".into(), serde_json::json!(["code"]));
    body.insert("client_name".into(), name.into());
    body.insert("scope".into(), scopes.unwrap_or("").into());
    Connections::register_at(http, &target, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_covers_its_own_server_only() {
        let server = url::Url::parse("https://mcp.example.com/v1/mcp").unwrap();
        assert!(resource_covers("https://mcp.example.com/v1/mcp", &server));
        assert!(resource_covers("https://mcp.example.com/v1/", &server));
        assert!(resource_covers("https://mcp.example.com", &server));
        assert!(!resource_covers("https://mcp.example.com/v1/m", &server));
        assert!(!resource_covers(
            "https://other.example.com/v1/mcp",
            &server
        ));
        assert!(!resource_covers("http://mcp.example.com/v1/mcp", &server));
        assert!(!resource_covers("not a url", &server));
    }

    #[test]
    fn an_original_import_gets_its_token_url_and_its_client_out_of_sight() {
        let mut config = serde_json::json!({
            "mcp_server_url": "https://mcp.example.com/mcp",
            "oauth_metadata": "{\"token_endpoint\":\"https://auth.example.com/token\"}",
            "oauth_client_info": "{\"client_id\":\"c1\",\"client_secret\":\"s1\"}"
        })
        .as_object()
        .unwrap()
        .clone();
        let mut credentials = Map::new();
        imported(&mut config, &mut credentials, None);
        assert_eq!(config["oauth_token_url"], "https://auth.example.com/token");
        assert_eq!(config["oauth_client_auth"], "client_secret_basic");
        assert!(!config.contains_key("oauth_client_info"));
        assert_eq!(
            credentials["config_override"],
            serde_json::json!({"client_id": "c1", "client_secret": "s1"})
        );
        // A public client given with the credentials.
        let mut config = Map::new();
        let mut credentials = Map::new();
        imported(
            &mut config,
            &mut credentials,
            Some(&serde_json::json!({"client_id": "pub"})),
        );
        assert_eq!(config["oauth_client_auth"], "none");
        assert_eq!(credentials["config_override"]["client_secret"], "");
    }

    #[test]
    fn metadata_is_looked_for_where_the_specifications_say() {
        let server = url::Url::parse("https://mcp.example.com/v1/mcp/").unwrap();
        assert_eq!(
            resource_metadata_urls(&server),
            [
                "https://mcp.example.com/.well-known/oauth-protected-resource/v1/mcp",
                "https://mcp.example.com/.well-known/oauth-protected-resource"
            ]
        );
        let root = url::Url::parse("https://mcp.example.com").unwrap();
        assert_eq!(
            resource_metadata_urls(&root),
            ["https://mcp.example.com/.well-known/oauth-protected-resource"]
        );
        assert_eq!(
            server_metadata_urls(&root),
            [
                "https://mcp.example.com/.well-known/oauth-authorization-server",
                "https://mcp.example.com/.well-known/openid-configuration"
            ]
        );
        let tenant = url::Url::parse("https://auth.example.com/tenant1").unwrap();
        assert_eq!(
            server_metadata_urls(&tenant),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example.com/.well-known/openid-configuration/tenant1",
                "https://auth.example.com/tenant1/.well-known/openid-configuration"
            ]
        );
    }
}
