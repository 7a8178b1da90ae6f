//! Reading a connection and an environment's variables from a running
//! server, so `sluice dryrun --from-server` runs a script with the real
//! credentials without copying them into a file (the original's dry run
//! asks its server the same way).

use serde::Deserialize;
use serde_json::Value;
use sluice_runtime::connection::{Connection, ConnectionError, ConnectionStore, MemoryConnections};

/// A server and the secret key of the environment to read.
#[derive(Debug, Clone)]
pub struct ServerSource {
    /// `http://host:port`, as `NANGO_HOSTPORT` gives it.
    pub host: String,
    pub secret_key: String,
}

/// Why the server could not give what the dry run needs.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot reach the server at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the server answered {url} with HTTP {status}: {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the server's answer to {url} is not what sluice expects: {message}")]
    Malformed { url: String, message: String },
}

impl ServerSource {
    fn client(&self) -> Result<reqwest::Client, RemoteError> {
        reqwest::Client::builder()
            .user_agent(sluice_runtime::proxy::USER_AGENT)
            .build()
            .map_err(|source| RemoteError::Unreachable {
                url: self.host.clone(),
                source,
            })
    }

    /// GETs the path made of `path`'s segments (each escaped).
    async fn get(
        &self,
        path: &[&str],
        query: &[(&str, &str)],
    ) -> Result<(String, Value), RemoteError> {
        let mut url = url::Url::parse(&self.host).map_err(|e| RemoteError::Malformed {
            url: self.host.clone(),
            message: format!("not a URL: {e}"),
        })?;
        url.path_segments_mut()
            .map_err(|()| RemoteError::Malformed {
                url: self.host.clone(),
                message: "not a base URL".into(),
            })?
            .pop_if_empty()
            .extend(path);
        url.query_pairs_mut().extend_pairs(query);
        if query.is_empty() {
            url.set_query(None);
        }
        let url = url.to_string();
        let resp = self
            .client()?
            .get(&url)
            .bearer_auth(&self.secret_key)
            .send()
            .await
            .map_err(|source| RemoteError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|source| RemoteError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !(200..300).contains(&status) {
            // The API's error shape: {"error":{"code","message"}}.
            let message = match &body["error"] {
                Value::Object(e) => format!(
                    "{} ({})",
                    e.get("message").and_then(Value::as_str).unwrap_or(""),
                    e.get("code").and_then(Value::as_str).unwrap_or("")
                ),
                _ => body.to_string(),
            };
            return Err(RemoteError::Refused {
                url,
                status,
                message,
            });
        }
        Ok((url, body))
    }

    /// The connection with its credentials, refreshed by the server when
    /// its token is about to expire.
    pub async fn connection(
        &self,
        provider_config_key: &str,
        connection_id: &str,
    ) -> Result<Connection, RemoteError> {
        let (url, body) = self
            .get(
                &["connection", connection_id],
                &[("provider_config_key", provider_config_key)],
            )
            .await?;
        serde_json::from_value(body).map_err(|e| RemoteError::Malformed {
            url,
            message: e.to_string(),
        })
    }

    /// The environment's variables (`GET /environment-variables`).
    pub async fn environment_variables(&self) -> Result<Vec<(String, String)>, RemoteError> {
        #[derive(Deserialize)]
        struct Variable {
            name: String,
            value: String,
        }
        let (url, body) = self.get(&["environment-variables"], &[]).await?;
        let vars: Vec<Variable> =
            serde_json::from_value(body).map_err(|e| RemoteError::Malformed {
                url,
                message: e.to_string(),
            })?;
        Ok(vars.into_iter().map(|v| (v.name, v.value)).collect())
    }
}

/// The connections a dry run with `--from-server` may name: its own, given
/// first, and any other of the environment's, read from the server the
/// first time a script names it (`getConnection`, `proxy({connectionId})`,
/// `triggerAction`), as the original's dry run asks its server. Metadata a
/// script writes is kept in the dry run, not sent to the server.
pub struct ServerConnections {
    server: ServerSource,
    read: MemoryConnections,
}

impl ServerConnections {
    pub fn new(server: ServerSource, own: Connection) -> Self {
        ServerConnections {
            server,
            read: MemoryConnections::new([own]),
        }
    }

    /// Reads the connection from the server unless it was read already.
    async fn ensure(&self, pck: &str, cid: &str) -> Result<(), ConnectionError> {
        if self.read.get(pck, cid).await.is_ok() {
            return Ok(());
        }
        match self.server.connection(pck, cid).await {
            Ok(c) => {
                // Two executions reading it at once keep the first copy.
                if self.read.get(pck, cid).await.is_err() {
                    self.read.insert(c);
                }
                Ok(())
            }
            Err(RemoteError::Refused { status: 404, .. }) => Err(ConnectionError::NotFound {
                provider_config_key: pck.to_string(),
                connection_id: cid.to_string(),
            }),
            Err(e) => Err(ConnectionError::Backend(e.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl ConnectionStore for ServerConnections {
    async fn get(&self, pck: &str, cid: &str) -> Result<Connection, ConnectionError> {
        self.ensure(pck, cid).await?;
        self.read.get(pck, cid).await
    }

    async fn set_metadata(
        &self,
        pck: &str,
        cid: &str,
        metadata: Value,
    ) -> Result<(), ConnectionError> {
        self.ensure(pck, cid).await?;
        self.read.set_metadata(pck, cid, metadata).await
    }

    async fn update_metadata(
        &self,
        pck: &str,
        cid: &str,
        patch: serde_json::Map<String, Value>,
        max_bytes: usize,
    ) -> Result<(), ConnectionError> {
        self.ensure(pck, cid).await?;
        self.read.update_metadata(pck, cid, patch, max_bytes).await
    }
}
