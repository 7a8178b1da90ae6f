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
//! `oauth_resource_url` and `oauth_metadata` (the authorization server's
//! metadata, as the original's) in its configuration; its client in its
//! credentials' `config_override` (encrypted, its secret never shown).

use serde_json::{Map, Value};

use crate::refresh::{Connections, json_answer};

/// A generic MCP connection's token URL: the one its authorization
/// server's metadata named, kept in its configuration.
pub(crate) const TOKEN_URL_TEMPLATE: &str = "${connectionConfig.oauth_token_url}";

/// The configuration keys sluice sets from discovery: never taken from a
/// browser's `params` or a session.
pub(crate) const DISCOVERED_KEYS: [&str; 4] = [
    "oauth_token_url",
    "oauth_resource_url",
    "oauth_metadata",
    "oauth_client_info",
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
    // The resource's metadata is optional: without it the server's own
    // origin is its authorization server.
    let mut resource_metadata = None;
    for url in resource_metadata_urls(&server_url) {
        if let Ok(m) = get_json(connections, &url).await {
            resource_metadata = Some(m);
            break;
        }
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
        .filter(|r| url::Url::parse(r).is_ok())
        .map(str::to_string);
    Ok(Discovered {
        authorization_endpoint,
        token_endpoint,
        registration_endpoint,
        scopes: (!scopes.is_empty()).then(|| scopes.join(" ")),
        resource,
        metadata,
    })
}

/// Registers a public client for one connection at `endpoint`, its
/// redirect `callback`: the client's id, and its secret if the server
/// gave one anyway.
pub(crate) async fn register(
    connections: &Connections,
    endpoint: &str,
    callback: &str,
    name: &str,
    scopes: Option<&str>,
) -> Result<(String, Option<String>), String> {
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
