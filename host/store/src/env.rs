//! An environment's integrations, connections, variables and documents.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sluice_runtime::connection::{Connection, ConnectionError, ConnectionStore, Credentials};
use sluice_runtime::records::ConnectionRef;

use crate::backend::{Op, Table};
use crate::crypto::Keyring;
use crate::error::StoreError;
use crate::keys::{self, KeyBuf};
use crate::store::EnvStore;

/// How many rows one scan reads while listing or sweeping: big enough to
/// amortise a backend round trip, small enough to bound memory.
pub(crate) const SCAN_BATCH: usize = 1000;

/// An integration (the original's provider config): which provider, the
/// OAuth app's client, the webhook secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    pub unique_key: String,
    pub provider: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub oauth_client_id: Option<String>,
    /// Encrypted at rest.
    #[serde(default)]
    pub oauth_client_secret: Option<String>,
    #[serde(default)]
    pub oauth_scopes: Option<String>,
    /// Encrypted at rest.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Whether the provider's webhooks are forwarded to the app (the
    /// original's `forward_webhooks`, `true` unless set).
    #[serde(default = "yes")]
    pub forward_webhooks: bool,
    /// A GitHub App's public page (`APP` integrations: its id is
    /// `oauth_client_id`, its private key `oauth_client_secret`).
    #[serde(default)]
    pub app_link: Option<String>,
    /// The redirect URI an OAuth client was registered with by sluice
    /// (`MCP_OAUTH2` providers' dynamic registration): the one its flows
    /// send.
    #[serde(default)]
    pub registered_redirect: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn yes() -> bool {
    true
}

/// An integration as stored: its secrets sealed.
#[derive(Serialize, Deserialize)]
struct IntegrationRow {
    unique_key: String,
    provider: String,
    display_name: Option<String>,
    oauth_client_id: Option<String>,
    oauth_client_secret: Option<String>,
    oauth_scopes: Option<String>,
    webhook_secret: Option<String>,
    #[serde(default = "yes")]
    forward_webhooks: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    app_link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registered_redirect: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A connection as stored: its credentials sealed.
#[derive(Serialize, Deserialize)]
struct ConnectionRow {
    connection_id: String,
    provider_config_key: String,
    provider: String,
    credentials: String,
    connection_config: Map<String, Value>,
    metadata: Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[serde(default)]
    end_user: Value,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webhook_url_override: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    token_host_from_browser: bool,
}

/// Associated data of a sealed field: the table, the row's key and the
/// field, so a sealed value only opens where it was written.
pub(crate) fn aad(table: Table, key: &[u8], field: &str) -> Vec<u8> {
    [table.name().as_bytes(), b"\0", key, b"\0", field.as_bytes()].concat()
}

fn seal_opt(
    ring: &Keyring,
    key: &[u8],
    field: &str,
    value: Option<&str>,
) -> Result<Option<String>, StoreError> {
    value
        .map(|v| ring.seal_text(&aad(Table::Integrations, key, field), v.as_bytes()))
        .transpose()
}

fn open_opt(
    ring: &Keyring,
    key: &[u8],
    field: &str,
    value: Option<&str>,
) -> Result<Option<String>, StoreError> {
    value
        .map(|v| {
            let what = format!("integration {field}");
            let bytes = ring.open_text(&aad(Table::Integrations, key, field), v, &what)?;
            String::from_utf8(bytes).map_err(|e| StoreError::corrupt(what, e))
        })
        .transpose()
}

fn encode_integration(ring: &Keyring, key: &[u8], i: &Integration) -> Result<Vec<u8>, StoreError> {
    let row = IntegrationRow {
        unique_key: i.unique_key.clone(),
        provider: i.provider.clone(),
        display_name: i.display_name.clone(),
        oauth_client_id: i.oauth_client_id.clone(),
        oauth_client_secret: seal_opt(
            ring,
            key,
            "oauth_client_secret",
            i.oauth_client_secret.as_deref(),
        )?,
        oauth_scopes: i.oauth_scopes.clone(),
        webhook_secret: seal_opt(ring, key, "webhook_secret", i.webhook_secret.as_deref())?,
        forward_webhooks: i.forward_webhooks,
        app_link: i.app_link.clone(),
        registered_redirect: i.registered_redirect.clone(),
        created_at: i.created_at,
        updated_at: i.updated_at,
    };
    serde_json::to_vec(&row).map_err(|e| StoreError::encode("an integration", e))
}

fn decode_integration(ring: &Keyring, key: &[u8], bytes: &[u8]) -> Result<Integration, StoreError> {
    let row: IntegrationRow =
        crate::decode(bytes).map_err(|e| StoreError::corrupt("integration row", e))?;
    Ok(Integration {
        oauth_client_secret: open_opt(
            ring,
            key,
            "oauth_client_secret",
            row.oauth_client_secret.as_deref(),
        )?,
        webhook_secret: open_opt(ring, key, "webhook_secret", row.webhook_secret.as_deref())?,
        unique_key: row.unique_key,
        provider: row.provider,
        display_name: row.display_name,
        oauth_client_id: row.oauth_client_id,
        oauth_scopes: row.oauth_scopes,
        forward_webhooks: row.forward_webhooks,
        app_link: row.app_link,
        registered_redirect: row.registered_redirect,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn encode_connection(ring: &Keyring, key: &[u8], c: &Connection) -> Result<Vec<u8>, StoreError> {
    let credentials = serde_json::to_vec(&c.credentials)
        .map_err(|e| StoreError::encode("connection credentials", e))?;
    let row = ConnectionRow {
        connection_id: c.connection_id.clone(),
        provider_config_key: c.provider_config_key.clone(),
        provider: c.provider.clone(),
        credentials: ring.seal_text(&aad(Table::Connections, key, "credentials"), &credentials)?,
        connection_config: c.connection_config.clone(),
        metadata: c.metadata.clone(),
        created_at: c.created_at,
        updated_at: c.updated_at,
        end_user: c.end_user.clone(),
        tags: c.tags.clone(),
        webhook_url_override: c.webhook_url_override.clone(),
        token_host_from_browser: c.token_host_from_browser,
    };
    serde_json::to_vec(&row).map_err(|e| StoreError::encode("a connection", e))
}

fn decode_connection(ring: &Keyring, key: &[u8], bytes: &[u8]) -> Result<Connection, StoreError> {
    let row: ConnectionRow =
        crate::decode(bytes).map_err(|e| StoreError::corrupt("connection row", e))?;
    let credentials = ring.open_text(
        &aad(Table::Connections, key, "credentials"),
        &row.credentials,
        "connection credentials",
    )?;
    let credentials: Credentials = crate::decode(&credentials)
        .map_err(|e| StoreError::corrupt("connection credentials", e))?;
    Ok(Connection {
        connection_id: row.connection_id,
        provider_config_key: row.provider_config_key,
        provider: row.provider,
        credentials,
        connection_config: row.connection_config,
        metadata: row.metadata,
        created_at: row.created_at,
        updated_at: row.updated_at,
        end_user: row.end_user,
        tags: row.tags,
        webhook_url_override: row.webhook_url_override,
        token_host_from_browser: row.token_host_from_browser,
    })
}

fn encode_variables(
    ring: &Keyring,
    key: &[u8],
    vars: &[(String, String)],
) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(vars).map_err(|e| StoreError::encode("variables", e))?;
    ring.seal(&aad(Table::Variables, key, "variables"), &json)
}

fn decode_variables(
    ring: &Keyring,
    key: &[u8],
    bytes: &[u8],
) -> Result<Vec<(String, String)>, StoreError> {
    let json = ring.open(
        &aad(Table::Variables, key, "variables"),
        bytes,
        "environment variables",
    )?;
    crate::decode(&json).map_err(|e| StoreError::corrupt("environment variables", e))
}

/// The row key of an environment's secret `name`.
fn secret_key_of(env_prefix: KeyBuf, name: &str) -> Vec<u8> {
    env_prefix.part("secret").tail(name)
}

/// The write of an environment's secret, sealed with `ring`.
pub(crate) fn seal_secret_op(
    ring: &Keyring,
    env_prefix: KeyBuf,
    name: &str,
    value: &str,
) -> Result<Op, StoreError> {
    let key = secret_key_of(env_prefix, name);
    let value = ring.seal(&aad(Table::Variables, &key, "secret"), value.as_bytes())?;
    Ok(Op::Put {
        table: Table::Variables,
        key,
        value,
    })
}

/// Where a document lives: the environment, or one connection (deleted
/// with it).
#[derive(Clone, Copy)]
pub(crate) enum DocSpace<'a> {
    Env,
    Connection(&'a ConnectionRef),
}

impl EnvStore {
    fn integration_key(&self, unique_key: &str) -> Vec<u8> {
        self.prefix().part(unique_key).into_bytes()
    }

    fn connection_key(&self, pck: &str, cid: &str) -> Vec<u8> {
        keys::connection(self.inner.id, pck, cid).into_bytes()
    }

    fn connection_lock(&self, pck: &str, cid: &str) -> Vec<u8> {
        [b"c".as_slice(), &self.connection_key(pck, cid)].concat()
    }

    // ---- integrations ----

    /// Creates or replaces an integration.
    pub async fn put_integration(&self, integration: &Integration) -> Result<(), StoreError> {
        let key = self.integration_key(&integration.unique_key);
        let ring = self.inner.keyring.read().await;
        let value = encode_integration(&ring, &key, integration)?;
        self.backend()
            .apply(vec![Op::Put {
                table: Table::Integrations,
                key,
                value,
            }])
            .await?;
        Ok(())
    }

    pub async fn integration(&self, unique_key: &str) -> Result<Option<Integration>, StoreError> {
        let key = self.integration_key(unique_key);
        let ring = self.inner.keyring.read().await;
        match self.backend().get(Table::Integrations, &key).await? {
            Some(bytes) => Ok(Some(decode_integration(&ring, &key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every integration, by unique key.
    pub async fn integrations(&self) -> Result<Vec<Integration>, StoreError> {
        let ring = self.inner.keyring.read().await;
        let mut out = Vec::new();
        self.scan_all(
            Table::Integrations,
            self.prefix().as_bytes(),
            |key, value| {
                out.push(decode_integration(&ring, key, value)?);
                Ok(())
            },
        )
        .await?;
        Ok(out)
    }

    /// Deletes an integration; `false` when there was none. Its connections
    /// are the caller's to delete first.
    pub async fn delete_integration(&self, unique_key: &str) -> Result<bool, StoreError> {
        let key = self.integration_key(unique_key);
        self.delete_if_present(Table::Integrations, key).await
    }

    // ---- connections ----

    /// Creates or replaces a connection; its credentials are encrypted.
    pub async fn put_connection(&self, connection: &Connection) -> Result<(), StoreError> {
        let _lock = self
            .lock(self.connection_lock(&connection.provider_config_key, &connection.connection_id))
            .await?;
        self.write_connection(connection).await
    }

    /// Writes `connection` (an import) under its lock, first letting
    /// `keep` carry over what the import keeps of the stored one, read
    /// under the same lock: a change made meanwhile (metadata, end user,
    /// tags) is then not written back stale. Whether one was stored.
    pub async fn put_connection_keeping(
        &self,
        connection: &mut Connection,
        keep: impl FnOnce(Connection, &mut Connection),
    ) -> Result<bool, StoreError> {
        let _lock = self
            .lock(self.connection_lock(&connection.provider_config_key, &connection.connection_id))
            .await?;
        let stored = self
            .connection(&connection.provider_config_key, &connection.connection_id)
            .await?;
        let existed = stored.is_some();
        if let Some(stored) = stored {
            keep(stored, connection);
        }
        self.write_connection(connection).await?;
        Ok(existed)
    }

    /// Replaces a connection's credentials with `new` if they are still
    /// `old`, under the connection's lock: a token refresh read the
    /// connection before a request to the provider, and meanwhile the
    /// connection may have been deleted (it is not made again), imported
    /// again with other credentials (they stay) or given new metadata (it
    /// stays). The connection as it now is; `None` when it is gone.
    pub async fn refresh_credentials(
        &self,
        pck: &str,
        cid: &str,
        old: &Credentials,
        new: Credentials,
    ) -> Result<Option<Connection>, StoreError> {
        let _lock = self.lock(self.connection_lock(pck, cid)).await?;
        let Some(mut connection) = self.connection(pck, cid).await? else {
            return Ok(None);
        };
        if connection.credentials != *old {
            return Ok(Some(connection));
        }
        connection.credentials = new;
        connection.updated_at = Utc::now();
        self.write_connection(&connection).await?;
        Ok(Some(connection))
    }

    /// Puts back what a write changed, under the connection's lock, if
    /// its credentials are still `written`: `restore` makes the connection
    /// from the stored one. A connection deleted or given other
    /// credentials since is left as it is (`false`).
    pub async fn restore_connection(
        &self,
        pck: &str,
        cid: &str,
        written: &Credentials,
        restore: impl FnOnce(Connection) -> Connection,
    ) -> Result<bool, StoreError> {
        let _lock = self.lock(self.connection_lock(pck, cid)).await?;
        let Some(stored) = self.connection(pck, cid).await? else {
            return Ok(false);
        };
        if stored.credentials != *written {
            return Ok(false);
        }
        self.write_connection(&restore(stored)).await?;
        Ok(true)
    }

    async fn write_connection(&self, connection: &Connection) -> Result<(), StoreError> {
        let key = self.connection_key(&connection.provider_config_key, &connection.connection_id);
        let ring = self.inner.keyring.read().await;
        let value = encode_connection(&ring, &key, connection)?;
        self.backend()
            .apply(vec![Op::Put {
                table: Table::Connections,
                key,
                value,
            }])
            .await?;
        Ok(())
    }

    /// Whether the connection exists, without opening its credentials
    /// (what the records API asks on every page).
    pub async fn connection_exists(&self, pck: &str, cid: &str) -> Result<bool, StoreError> {
        let key = self.connection_key(pck, cid);
        Ok(self
            .backend()
            .get(Table::Connections, &key)
            .await?
            .is_some())
    }

    pub async fn connection(&self, pck: &str, cid: &str) -> Result<Option<Connection>, StoreError> {
        let key = self.connection_key(pck, cid);
        let ring = self.inner.keyring.read().await;
        match self.backend().get(Table::Connections, &key).await? {
            Some(bytes) => Ok(Some(decode_connection(&ring, &key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The connections of one integration, or of all, ordered by
    /// integration and connection id. One prefix scan: the cost is that of
    /// the connections listed, whatever else is stored.
    pub async fn connections(&self, pck: Option<&str>) -> Result<Vec<Connection>, StoreError> {
        let prefix = match pck {
            Some(pck) => self.prefix().part(pck),
            None => self.prefix(),
        };
        let ring = self.inner.keyring.read().await;
        let mut out = Vec::new();
        self.scan_all(Table::Connections, prefix.as_bytes(), |key, value| {
            out.push(decode_connection(&ring, key, value)?);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Calls `f` with each connection of integration `pck` (every
    /// integration's: `None`) in turn, holding one at a time (a listing
    /// keeps what it needs, not every connection's metadata at once).
    pub async fn each_connection(
        &self,
        pck: Option<&str>,
        mut f: impl FnMut(Connection),
    ) -> Result<(), StoreError> {
        let prefix = match pck {
            Some(pck) => self.prefix().part(pck),
            None => self.prefix(),
        };
        let ring = self.inner.keyring.read().await;
        self.scan_all(Table::Connections, prefix.as_bytes(), |key, value| {
            f(decode_connection(&ring, key, value)?);
            Ok(())
        })
        .await
    }

    /// The ids of the connections of integration `pck`, in order.
    pub async fn connection_ids(&self, pck: &str) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        self.each_connection(Some(pck), |c| ids.push(c.connection_id))
            .await?;
        Ok(ids)
    }

    /// Deletes a connection with its records (every model) and the
    /// documents scoped to it; `false` when there was no connection (its
    /// records, if any, are deleted all the same). The records go first,
    /// so a crash midway leaves the connection to delete again rather than
    /// records without a connection.
    pub async fn delete_connection(&self, pck: &str, cid: &str) -> Result<bool, StoreError> {
        let _lock = self.lock(self.connection_lock(pck, cid)).await?;
        let conn = ConnectionRef {
            provider_config_key: pck.to_string(),
            connection_id: cid.to_string(),
        };
        for model in self.models(&conn).await? {
            self.clear_records(&conn, &model).await?;
        }
        // Anything left under the connection (none unless a write raced
        // with this delete).
        let prefix = keys::connection(self.inner.id, pck, cid);
        for table in [
            Table::Records,
            Table::RecordIndex,
            Table::RecordStamps,
            Table::RecordSeen,
            Table::RecordCounts,
        ] {
            self.delete_prefix(table, prefix.as_bytes()).await?;
        }
        self.delete_prefix(
            Table::Docs,
            self.doc_space(DocSpace::Connection(&conn)).as_bytes(),
        )
        .await?;
        self.delete_legacy_checkpoints(&conn).await?;
        self.delete_if_present(Table::Connections, prefix.into_bytes())
            .await
    }

    /// Gives a connection its end user (when `end_user` is some), tags
    /// (when `tags` is some) and webhook URL override (when
    /// `webhook_url_override` is some; `Some(None)` removes it), under its
    /// lock: a token refresh meanwhile keeps its credentials.
    pub async fn set_labels(
        &self,
        pck: &str,
        cid: &str,
        end_user: Option<Value>,
        tags: Option<std::collections::BTreeMap<String, String>>,
        webhook_url_override: Option<Option<String>>,
    ) -> Result<(), ConnectionError> {
        self.modify_connection(pck, cid, |c| {
            if let Some(u) = end_user {
                c.end_user = u;
            }
            if let Some(t) = tags {
                c.tags = t;
            }
            if let Some(w) = webhook_url_override {
                c.webhook_url_override = w;
            }
            Ok(())
        })
        .await
    }

    /// Reads, changes and writes a connection under its lock.
    async fn modify_connection(
        &self,
        pck: &str,
        cid: &str,
        change: impl FnOnce(&mut Connection) -> Result<(), ConnectionError>,
    ) -> Result<(), ConnectionError> {
        let _lock = self
            .lock(self.connection_lock(pck, cid))
            .await
            .map_err(backend_error)?;
        let mut connection = self
            .connection(pck, cid)
            .await
            .map_err(backend_error)?
            .ok_or_else(|| not_found(pck, cid))?;
        change(&mut connection)?;
        connection.updated_at = Utc::now();
        self.write_connection(&connection)
            .await
            .map_err(backend_error)
    }

    // ---- environment variables ----

    /// The environment variables, in the order they were set.
    pub async fn variables(&self) -> Result<Vec<(String, String)>, StoreError> {
        let key = self.prefix().into_bytes();
        let ring = self.inner.keyring.read().await;
        match self.backend().get(Table::Variables, &key).await? {
            Some(bytes) => decode_variables(&ring, &key, &bytes),
            None => Ok(Vec::new()),
        }
    }

    /// Replaces the environment variables (encrypted: they often hold API
    /// keys).
    pub async fn set_variables(&self, vars: Vec<(String, String)>) -> Result<(), StoreError> {
        let key = self.prefix().into_bytes();
        let ring = self.inner.keyring.read().await;
        let value = encode_variables(&ring, &key, &vars)?;
        self.backend()
            .apply(vec![Op::Put {
                table: Table::Variables,
                key,
                value,
            }])
            .await?;
        Ok(())
    }

    // ---- the environment's own secrets ----

    /// The row of secret `name` (beside the variables, sealed the same way).
    fn secret_row_key(&self, name: &str) -> Vec<u8> {
        secret_key_of(self.prefix(), name)
    }

    /// A secret of the environment's own (its secret key for signing
    /// webhooks, its webhook signing secret), opened.
    pub async fn secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        let key = self.secret_row_key(name);
        let ring = self.inner.keyring.read().await;
        match self.backend().get(Table::Variables, &key).await? {
            Some(bytes) => {
                let what = format!("the environment's secret `{name}`");
                let plain = ring.open(&aad(Table::Variables, &key, "secret"), &bytes, &what)?;
                Ok(Some(
                    String::from_utf8(plain).map_err(|e| StoreError::corrupt(what, e))?,
                ))
            }
            None => Ok(None),
        }
    }

    /// Stores secret `name`, sealed, durably.
    pub async fn set_secret(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let ring = self.inner.keyring.read().await;
        let op = seal_secret_op(&ring, self.prefix(), name, value)?;
        self.backend().apply(vec![op]).await?;
        Ok(())
    }

    // ---- documents ----

    fn doc_space(&self, space: DocSpace<'_>) -> KeyBuf {
        match space {
            DocSpace::Env => self.prefix().part("e"),
            DocSpace::Connection(c) => self
                .prefix()
                .part("c")
                .part(&c.provider_config_key)
                .part(&c.connection_id),
        }
    }

    pub(crate) fn doc_key(&self, space: DocSpace<'_>, collection: &str, key: &str) -> Vec<u8> {
        self.doc_space(space).part(collection).tail(key)
    }

    async fn put_doc_in<T: Serialize + ?Sized>(
        &self,
        space: DocSpace<'_>,
        collection: &str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let ops = self.doc_put(space, collection, key, value)?;
        self.backend().apply(ops).await?;
        Ok(())
    }

    pub(crate) fn doc_put<T: Serialize + ?Sized>(
        &self,
        space: DocSpace<'_>,
        collection: &str,
        key: &str,
        value: &T,
    ) -> Result<Vec<Op>, StoreError> {
        let value = serde_json::to_vec(value)
            .map_err(|e| StoreError::encode(format!("document {collection}/{key}"), e))?;
        Ok(vec![Op::Put {
            table: Table::Docs,
            key: self.doc_key(space, collection, key),
            value,
        }])
    }

    async fn doc_in<T: DeserializeOwned>(
        &self,
        space: DocSpace<'_>,
        collection: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let bytes = self
            .backend()
            .get(Table::Docs, &self.doc_key(space, collection, key))
            .await?;
        bytes
            .map(|b| {
                crate::decode(&b)
                    .map_err(|e| StoreError::corrupt(format!("document {collection}/{key}"), e))
            })
            .transpose()
    }

    async fn docs_in<T: DeserializeOwned>(
        &self,
        space: DocSpace<'_>,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let base = self.doc_space(space).part(collection);
        let scan_prefix = base.clone().tail(prefix);
        let after = after.map(|a| base.clone().tail(a));
        let rows = self
            .backend()
            .scan(Table::Docs, &scan_prefix, after.as_deref(), limit, reverse)
            .await?;
        rows.into_iter()
            .map(|(k, v)| {
                let key = String::from_utf8_lossy(&k[base.as_bytes().len()..]).into_owned();
                let value = crate::decode(&v)
                    .map_err(|e| StoreError::corrupt(format!("document {collection}/{key}"), e))?;
                Ok((key, value))
            })
            .collect()
    }

    /// Creates or replaces the document `key` of `collection` (the server's
    /// own state: deployments, sync state, executions, async actions).
    pub async fn put_doc<T: Serialize + ?Sized>(
        &self,
        collection: &str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        self.put_doc_in(DocSpace::Env, collection, key, value).await
    }

    /// [`EnvStore::put_doc`] only while the connection `pck`/`cid` exists,
    /// checked under its lock (which [`EnvStore::delete_connection`]
    /// holds): a note about a connection (its last error) that a deletion
    /// overtook is not written after the deletion removed the older one.
    /// Whether it was written.
    pub async fn put_doc_for_connection<T: Serialize + ?Sized>(
        &self,
        pck: &str,
        cid: &str,
        collection: &str,
        key: &str,
        value: &T,
    ) -> Result<bool, StoreError> {
        let _lock = self.lock(self.connection_lock(pck, cid)).await?;
        if !self.connection_exists(pck, cid).await? {
            return Ok(false);
        }
        self.put_doc(collection, key, value).await?;
        Ok(true)
    }

    /// `value` sealed for document `collection`/`key` (bound to that
    /// place: it opens nowhere else), as text to keep in the document:
    /// the secrets of a short-lived document (an OAuth flow's client
    /// secret, a connect session's defaults). A data key rotation does not
    /// re-seal documents, so after one such a value no longer opens: keep
    /// it only in documents that live minutes.
    pub async fn seal_for_doc<T: Serialize + ?Sized>(
        &self,
        collection: &str,
        key: &str,
        value: &T,
    ) -> Result<String, StoreError> {
        let what = format!("document {collection}/{key}");
        let plain = serde_json::to_vec(value).map_err(|e| StoreError::encode(&what, e))?;
        let ring = self.inner.keyring.read().await;
        let aad = aad(
            Table::Docs,
            &self.doc_key(DocSpace::Env, collection, key),
            "sealed",
        );
        ring.seal_text(&aad, &plain)
    }

    /// Opens what [`EnvStore::seal_for_doc`] sealed for `collection`/`key`.
    pub async fn open_for_doc<T: DeserializeOwned>(
        &self,
        collection: &str,
        key: &str,
        sealed: &str,
    ) -> Result<T, StoreError> {
        let what = format!("the sealed part of document {collection}/{key}");
        let ring = self.inner.keyring.read().await;
        let aad = aad(
            Table::Docs,
            &self.doc_key(DocSpace::Env, collection, key),
            "sealed",
        );
        let plain = ring.open_text(&aad, sealed, &what)?;
        serde_json::from_slice(&plain).map_err(|e| StoreError::corrupt(what, e))
    }

    /// Like [`EnvStore::put_doc`], acknowledged before it is flushed: for
    /// history a crash may lose (sled flushes within 500 ms by itself).
    pub async fn put_doc_unflushed<T: Serialize + ?Sized>(
        &self,
        collection: &str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let ops = self.doc_put(DocSpace::Env, collection, key, value)?;
        self.backend().apply_unflushed(ops).await?;
        Ok(())
    }

    /// Documents written together: one atomic write for several puts.
    pub fn doc_batch(&self) -> DocBatch<'_> {
        DocBatch {
            store: self,
            ops: Vec::new(),
        }
    }

    pub async fn doc<T: DeserializeOwned>(
        &self,
        collection: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        self.doc_in(DocSpace::Env, collection, key).await
    }

    /// The documents of `collection` whose keys start with `prefix`, in key
    /// order (descending when `reverse`), strictly after `after` (a whole
    /// key, as returned) in that order, at most `limit`.
    pub async fn docs<T: DeserializeOwned>(
        &self,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(String, T)>, StoreError> {
        self.docs_in(DocSpace::Env, collection, prefix, after, limit, reverse)
            .await
    }

    /// [`EnvStore::docs`] as the stored JSON bytes, for callers that decode
    /// them in place (borrowing, or only in part), and only of the
    /// documents `keep` accepts: the others come with their key alone, and
    /// their bytes, looked at in the store, are not copied out (a text
    /// search over large documents).
    pub async fn docs_raw(
        &self,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        reverse: bool,
        keep: &mut (dyn for<'v> FnMut(&'v [u8]) -> bool + Send),
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, StoreError> {
        let base = self.doc_space(DocSpace::Env).part(collection);
        let scan_prefix = base.clone().tail(prefix);
        let after = after.map(|a| base.clone().tail(a));
        let rows = self
            .backend()
            .scan_where(
                Table::Docs,
                &scan_prefix,
                after.as_deref(),
                limit,
                reverse,
                keep,
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(k, v)| {
                let key = String::from_utf8_lossy(&k[base.as_bytes().len()..]).into_owned();
                (key, v)
            })
            .collect())
    }

    /// Deletes a document; `false` when there was none.
    pub async fn delete_doc(&self, collection: &str, key: &str) -> Result<bool, StoreError> {
        self.delete_if_present(Table::Docs, self.doc_key(DocSpace::Env, collection, key))
            .await
    }

    /// Writes document `new_key` and deletes `old_key` of the same
    /// collection in one atomic, flushed write (a queue entry moving to its
    /// next time, say).
    pub async fn move_doc<T: Serialize + ?Sized>(
        &self,
        collection: &str,
        old_key: &str,
        new_key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let mut ops = vec![Op::Delete {
            table: Table::Docs,
            key: self.doc_key(DocSpace::Env, collection, old_key),
        }];
        ops.extend(self.doc_put(DocSpace::Env, collection, new_key, value)?);
        self.backend().apply(ops).await?;
        Ok(())
    }

    /// Deletes a document, acknowledged before it is flushed: for work
    /// that is done and may be done again if a crash brings it back.
    pub async fn delete_doc_unflushed(
        &self,
        collection: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        self.backend()
            .apply_unflushed(vec![Op::Delete {
                table: Table::Docs,
                key: self.doc_key(DocSpace::Env, collection, key),
            }])
            .await?;
        Ok(())
    }

    /// [`EnvStore::put_doc`] for a document that belongs to a connection
    /// (say its sync state): [`EnvStore::delete_connection`] deletes it.
    pub async fn put_connection_doc<T: Serialize + ?Sized>(
        &self,
        conn: &ConnectionRef,
        collection: &str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        self.put_doc_in(DocSpace::Connection(conn), collection, key, value)
            .await
    }

    pub async fn connection_doc<T: DeserializeOwned>(
        &self,
        conn: &ConnectionRef,
        collection: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        self.doc_in(DocSpace::Connection(conn), collection, key)
            .await
    }

    /// [`EnvStore::docs`] among one connection's documents.
    pub async fn connection_docs<T: DeserializeOwned>(
        &self,
        conn: &ConnectionRef,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(String, T)>, StoreError> {
        self.docs_in(
            DocSpace::Connection(conn),
            collection,
            prefix,
            after,
            limit,
            reverse,
        )
        .await
    }

    pub async fn delete_connection_doc(
        &self,
        conn: &ConnectionRef,
        collection: &str,
        key: &str,
    ) -> Result<bool, StoreError> {
        self.delete_if_present(
            Table::Docs,
            self.doc_key(DocSpace::Connection(conn), collection, key),
        )
        .await
    }

    // ---- helpers ----

    /// Calls `f` on every entry under `prefix`, a batch at a time.
    pub(crate) async fn scan_all(
        &self,
        table: Table,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch = self
                .backend()
                .scan(table, prefix, after.as_deref(), SCAN_BATCH, false)
                .await?;
            for (k, v) in &batch {
                f(k, v)?;
            }
            if batch.len() < SCAN_BATCH {
                return Ok(());
            }
            after = batch.into_iter().next_back().map(|(k, _)| k);
        }
    }

    /// Deletes every key under `prefix`, a batch per write.
    pub(crate) async fn delete_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let batch = self
                .backend()
                .scan(table, prefix, None, SCAN_BATCH, false)
                .await?;
            if batch.is_empty() {
                return Ok(deleted);
            }
            deleted += batch.len() as u64;
            let ops = batch
                .into_iter()
                .map(|(key, _)| Op::Delete { table, key })
                .collect();
            self.backend().apply(ops).await?;
        }
    }

    async fn delete_if_present(&self, table: Table, key: Vec<u8>) -> Result<bool, StoreError> {
        if self.backend().get(table, &key).await?.is_none() {
            return Ok(false);
        }
        self.backend()
            .apply(vec![Op::Delete { table, key }])
            .await?;
        Ok(true)
    }

    /// Re-seals every secret of the environment with the ring's current
    /// key (a rotation; the caller holds the keyring exclusively).
    pub(crate) async fn reseal_all(&self, ring: &Keyring) -> Result<(), StoreError> {
        let prefix = self.prefix();
        let mut ops = Vec::new();
        self.scan_all(Table::Integrations, prefix.as_bytes(), |key, value| {
            let i = decode_integration(ring, key, value)?;
            ops.push(Op::Put {
                table: Table::Integrations,
                key: key.to_vec(),
                value: encode_integration(ring, key, &i)?,
            });
            Ok(())
        })
        .await?;
        self.apply_in_batches(&mut ops).await?;
        let mut ops = Vec::new();
        let mut pending = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        // Connections may be many: re-seal a batch, write it, go on.
        loop {
            let batch = self
                .backend()
                .scan(
                    Table::Connections,
                    prefix.as_bytes(),
                    after.as_deref(),
                    SCAN_BATCH,
                    false,
                )
                .await?;
            for (key, value) in &batch {
                let c = decode_connection(ring, key, value)?;
                pending.push(Op::Put {
                    table: Table::Connections,
                    key: key.clone(),
                    value: encode_connection(ring, key, &c)?,
                });
            }
            self.apply_in_batches(&mut pending).await?;
            if batch.len() < SCAN_BATCH {
                break;
            }
            after = batch.into_iter().next_back().map(|(k, _)| k);
        }
        let secrets = prefix.clone().part("secret");
        self.scan_all(Table::Variables, secrets.as_bytes(), |key, value| {
            let plain = ring.open(
                &aad(Table::Variables, key, "secret"),
                value,
                "an environment secret",
            )?;
            ops.push(Op::Put {
                table: Table::Variables,
                key: key.to_vec(),
                value: ring.seal(&aad(Table::Variables, key, "secret"), &plain)?,
            });
            Ok(())
        })
        .await?;
        let key = prefix.into_bytes();
        if let Some(bytes) = self.backend().get(Table::Variables, &key).await? {
            let vars = decode_variables(ring, &key, &bytes)?;
            ops.push(Op::Put {
                table: Table::Variables,
                value: encode_variables(ring, &key, &vars)?,
                key,
            });
        }
        self.apply_in_batches(&mut ops).await
    }

    async fn apply_in_batches(&self, ops: &mut Vec<Op>) -> Result<(), StoreError> {
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(SCAN_BATCH));
            let batch = std::mem::replace(ops, rest);
            self.backend().apply(batch).await?;
        }
        Ok(())
    }
}

fn not_found(pck: &str, cid: &str) -> ConnectionError {
    ConnectionError::NotFound {
        provider_config_key: pck.to_string(),
        connection_id: cid.to_string(),
    }
}

fn backend_error(e: StoreError) -> ConnectionError {
    ConnectionError::Backend(e.to_string())
}

/// The runtime reads connections and writes metadata through this. OAuth
/// refresh is not the store's: the server wraps this in a refreshing
/// decorator.
#[async_trait::async_trait]
impl ConnectionStore for EnvStore {
    async fn get(&self, pck: &str, cid: &str) -> Result<Connection, ConnectionError> {
        self.connection(pck, cid)
            .await
            .map_err(backend_error)?
            .ok_or_else(|| not_found(pck, cid))
    }

    async fn set_metadata(
        &self,
        pck: &str,
        cid: &str,
        metadata: Value,
    ) -> Result<(), ConnectionError> {
        if !(metadata.is_object() || metadata.is_null()) {
            return Err(ConnectionError::InvalidMetadata(metadata.to_string()));
        }
        self.modify_connection(pck, cid, |c| {
            c.metadata = metadata;
            Ok(())
        })
        .await
    }

    async fn update_metadata(
        &self,
        pck: &str,
        cid: &str,
        patch: Map<String, Value>,
        max_bytes: usize,
    ) -> Result<(), ConnectionError> {
        self.modify_connection(pck, cid, |c| {
            c.metadata = sluice_runtime::connection::merge_metadata(&c.metadata, patch, max_bytes)?;
            Ok(())
        })
        .await
    }
}

/// Puts of several documents of one environment, applied in one write
/// ([`EnvStore::doc_batch`]).
pub struct DocBatch<'a> {
    store: &'a EnvStore,
    ops: Vec<Op>,
}

impl DocBatch<'_> {
    /// Adds the put of `key` in `collection`; returns the document's size
    /// in bytes as stored.
    pub fn put<T: Serialize + ?Sized>(
        &mut self,
        collection: &str,
        key: &str,
        value: &T,
    ) -> Result<usize, StoreError> {
        let ops = self.store.doc_put(DocSpace::Env, collection, key, value)?;
        let size = ops
            .iter()
            .map(|op| match op {
                Op::Put { value, .. } => value.len(),
                Op::Delete { .. } => 0,
            })
            .sum();
        self.ops.extend(ops);
        Ok(size)
    }

    /// Applies every put at once, flushed before it returns.
    pub async fn apply(self) -> Result<(), StoreError> {
        self.store.backend().apply(self.ops).await?;
        Ok(())
    }

    /// Applies every put at once, acknowledged before it is flushed (see
    /// [`EnvStore::put_doc_unflushed`]).
    pub async fn apply_unflushed(self) -> Result<(), StoreError> {
        self.store.backend().apply_unflushed(self.ops).await?;
        Ok(())
    }

    /// Applies the puts in order, each atomic on its own, acknowledged
    /// before they are flushed: a crash may keep the first ones without
    /// the later ones, never the reverse (see
    /// [`Backend::apply_unflushed_in_order`](crate::Backend::apply_unflushed_in_order)).
    pub async fn apply_unflushed_in_order(self) -> Result<(), StoreError> {
        self.store
            .backend()
            .apply_unflushed_in_order(self.ops)
            .await?;
        Ok(())
    }
}
