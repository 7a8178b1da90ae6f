//! Reading a connection and an environment's variables from a running
//! server, so `sluice dryrun --from-server` runs a script with the real
//! credentials without copying them into a file (the original's dry run
//! asks its server the same way).

use std::time::Duration;

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

/// How long the server may take to accept the connection, as for a
/// deploy: a host that never answers is said, not waited on for ever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one request may take, its answer read: the server may first
/// refresh the connection's token with the provider (bounded by its own
/// timeouts). A deploy waits up to an hour, for the server's compile; these
/// reads have none.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The largest answer read: a connection (credentials and metadata) or
/// the environment's variables, both far smaller.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The most of an error answer kept for the message (a proxy's page may
/// be any size).
const MAX_ERROR_BYTES: usize = 16 << 10;

/// Reads `resp`'s body, at most `max` bytes of it, and whether there was
/// more (the deploy client's answers too).
pub(crate) async fn read_at_most(
    resp: &mut reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = max - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

impl ServerSource {
    fn client(&self, timeout: Duration) -> Result<reqwest::Client, RemoteError> {
        reqwest::Client::builder()
            .user_agent(sluice_runtime::proxy::USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
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
        self.get_within(path, query, REQUEST_TIMEOUT).await
    }

    /// [`ServerSource::get`], given up on after `timeout`.
    async fn get_within(
        &self,
        path: &[&str],
        query: &[(&str, &str)],
        timeout: Duration,
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
        let unreachable = |source| RemoteError::Unreachable {
            url: url.clone(),
            source,
        };
        let mut resp = self
            .client(timeout)?
            .get(&url)
            .bearer_auth(&self.secret_key)
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let ok = (200..300).contains(&status);
        let max = if ok {
            MAX_ANSWER_BYTES
        } else {
            MAX_ERROR_BYTES
        };
        let (bytes, more) = read_at_most(&mut resp, max).await.map_err(unreachable)?;
        if ok && more {
            return Err(RemoteError::Malformed {
                url,
                message: format!("the answer is larger than {} MiB", MAX_ANSWER_BYTES >> 20),
            });
        }
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if more {
            text.push_str(&format!(
                "… (the first {} KiB shown)",
                MAX_ERROR_BYTES >> 10
            ));
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !ok {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts connections and answers each with `answer`
    /// (read once the request's head arrived), or never when `None`.
    async fn server(answer: Option<Vec<u8>>) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head).await;
                match &answer {
                    Some(bytes) => {
                        let _ = stream.write_all(bytes).await;
                    }
                    // Kept open, never answered.
                    None => held.push(stream),
                }
            }
        });
        url
    }

    fn source(host: String) -> ServerSource {
        ServerSource {
            host,
            secret_key: "k".into(),
        }
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up_on() {
        let host = server(None).await;
        let server = source(host);
        let read = server.get_within(&["connection", "c"], &[], Duration::from_millis(300));
        // The guard only keeps a regression from hanging the suite.
        let err = tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("the request was not given up on")
            .unwrap_err();
        assert!(
            matches!(&err, RemoteError::Unreachable { source, .. } if source.is_timeout()),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_error_answer_is_kept_only_in_part() {
        let page = "x".repeat(1 << 20);
        let answer = format!(
            "HTTP/1.1 502 Bad Gateway\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
            page.len()
        );
        let host = server(Some(answer.into_bytes())).await;
        let err = source(host)
            .get(&["environment-variables"], &[])
            .await
            .unwrap_err();
        let RemoteError::Refused {
            status, message, ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(*status, 502);
        assert!(message.len() < MAX_ERROR_BYTES + 100, "{}", message.len());
        assert!(
            message.ends_with("(the first 16 KiB shown)\""),
            "{message:.100}"
        );
    }
}
