//! Connections: who a script acts for, with which credentials and metadata.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A connection as stored by the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub connection_id: String,
    pub provider_config_key: String,
    /// The provider's name in the catalogue (`github`, `hubspot`, ...).
    pub provider: String,
    pub credentials: Credentials,
    #[serde(default)]
    pub connection_config: Map<String, Value>,
    /// `null` when the connection has none.
    #[serde(default)]
    pub metadata: Value,
    #[serde(default = "Utc::now")]
    pub created_at: DateTime<Utc>,
    #[serde(default = "Utc::now")]
    pub updated_at: DateTime<Utc>,
    /// The app's user this connection is for, as the API gave it
    /// (`{id, email?, display_name?, tags?}`); `null` when none was given.
    #[serde(default)]
    pub end_user: Value,
    /// The app's labels: lowercase keys to values (at most ten).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Where this connection's webhooks to the app go instead of the
    /// environment's URLs; `None` for those.
    #[serde(default)]
    pub webhook_url_override: Option<String>,
    /// The host of the provider's token URL was chosen by a value a
    /// browser gave (a connect session's TWO_STEP or client-credentials
    /// connection): every token request then goes to a public address
    /// only, whatever the environment's `allowed_hosts` opens to scripts.
    /// Kept by the platform's store; never shown (not serialised).
    #[serde(skip)]
    pub token_host_from_browser: bool,
}

/// Whether `key` names a refresh token (`refresh_token`, `RefreshToken`,
/// `refreshToken`, `refresh-token`).
pub fn is_refresh_token_key(key: &str) -> bool {
    let mut letters = key
        .chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .map(|c| c.to_ascii_lowercase());
    "refreshtoken".chars().all(|c| letters.next() == Some(c)) && letters.next().is_none()
}

/// Credentials in the original's shape: an object with a `type` discriminator
/// (`OAUTH2`, `API_KEY`, `BASIC`, ...) and the fields of that type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>", into = "Map<String, Value>")]
pub struct Credentials(Map<String, Value>);

impl Credentials {
    /// The credential type; empty for an unauthenticated connection.
    pub fn kind(&self) -> &str {
        self.0.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// A string field (`access_token`, `apiKey`, `username`, ...).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// The bearer token of the token-based types.
    pub fn token(&self) -> Option<&str> {
        self.field("access_token")
            .or_else(|| self.field("token"))
            // A Bill.com session stands for its token.
            .or_else(|| self.field("session_id").filter(|_| self.kind() == "BILL"))
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The credentials as `getConnection` shows them: a refresh token is
    /// removed, also from `raw` (at any depth, however the provider spells
    /// it: `refresh_token`, `RefreshToken`, `refreshToken`), and so is a
    /// private key given only to sign assertions (`assertionOption`).
    pub fn redacted_for_script(&self) -> Value {
        self.shown(false)
    }

    /// The credentials as the API shows them: without the private key a
    /// user gave to sign assertions, and, unless `refresh_tokens`, without
    /// refresh tokens (see [`Credentials::redacted_for_script`]).
    pub fn shown(&self, refresh_tokens: bool) -> Value {
        fn strip(v: &mut Value) {
            match v {
                Value::Object(m) => {
                    m.retain(|k, _| !is_refresh_token_key(k));
                    m.values_mut().for_each(strip);
                }
                Value::Array(items) => items.iter_mut().for_each(strip),
                _ => {}
            }
        }
        let mut map = self.0.clone();
        map.remove("assertionOption");
        if !refresh_tokens {
            map.remove("refresh_token");
            if let Some(raw) = map.get_mut("raw") {
                strip(raw);
            }
        }
        Value::Object(map)
    }

    /// The secret values, to keep them out of logs.
    pub fn secrets(&self) -> Vec<String> {
        // TWO_STEP, JWT and SIGNATURE credentials are the user's own
        // fields, named as each provider names them (`clientSecret`,
        // `userPassword`, `privateKey`, `apiSecretKey`…): every one is
        // kept out.
        // Nested ones too (Ghost's key as `{id, secret}`), and the part
        // of a value after its first `:` (Ghost's `id:secret`, whose
        // secret half is what signs).
        if matches!(self.kind(), "TWO_STEP" | "JWT" | "SIGNATURE") {
            fn collect(v: &Value, halves: bool, out: &mut Vec<String>) {
                match v {
                    Value::String(s) => {
                        out.push(s.clone());
                        if let Some((_, after)) = s.split_once(':').filter(|_| halves) {
                            out.push(after.to_string());
                        }
                    }
                    Value::Object(m) => m.values().for_each(|v| collect(v, halves, out)),
                    Value::Array(items) => items.iter().for_each(|v| collect(v, halves, out)),
                    _ => {}
                }
            }
            let halves = self.kind() == "JWT";
            let mut out = Vec::new();
            for (k, v) in &self.0 {
                if !matches!(k.as_str(), "type" | "expires_at" | "raw") {
                    collect(v, halves, &mut out);
                }
            }
            out.retain(|s| s.len() >= 4);
            return out;
        }
        const SECRET_FIELDS: &[&str] = &[
            "session_id",
            "dev_key",
            "access_token",
            "refresh_token",
            "token",
            "apiKey",
            "password",
            "client_secret",
            "private_key",
            "token_secret",
            "pat_secret",
            "oauth_token_secret",
        ];
        // A connection's own OAuth app (`config_override`) has a secret too.
        let own_client = self
            .0
            .get("config_override")
            .and_then(|o| o.get("client_secret"))
            .and_then(Value::as_str);
        SECRET_FIELDS
            .iter()
            .filter_map(|f| self.field(f))
            .chain(own_client)
            .filter(|s| s.len() >= 4)
            .map(str::to_string)
            .collect()
    }
}

impl TryFrom<Map<String, Value>> for Credentials {
    type Error = String;

    fn try_from(map: Map<String, Value>) -> Result<Self, String> {
        let creds = Credentials(map);
        let required: &[&str] = match creds.kind() {
            "OAUTH2" | "APP" | "APP_STORE" => &["access_token"],
            "OAUTH2_CC" => &["token"],
            "BASIC" => &["username"],
            "API_KEY" => &["apiKey"],
            "OAUTH1" => &["oauth_token", "oauth_token_secret"],
            "" if creds.0.is_empty() => &[],
            "" => return Err("credentials need a `type` (OAUTH2, API_KEY, BASIC, ...)".into()),
            _ => &[],
        };
        for field in required {
            if creds.field(field).is_none() {
                return Err(format!(
                    "{} credentials need a string `{field}`",
                    creds.kind()
                ));
            }
        }
        Ok(creds)
    }
}

impl From<Credentials> for Map<String, Value> {
    fn from(c: Credentials) -> Self {
        c.0
    }
}

impl Connection {
    /// The original's `getConnection` response shape.
    pub fn to_script_json(&self) -> Value {
        self.to_script_json_with(false)
    }

    /// [`Connection::to_script_json`], with the refresh tokens in the
    /// credentials when `refresh_token` (`getConnection`'s option).
    pub fn to_script_json_with(&self, refresh_token: bool) -> Value {
        // The private key a user gave to sign assertions is never shown,
        // to a script either.
        let credentials = self.credentials.shown(refresh_token);
        serde_json::json!({
            "id": self.connection_id,
            "connection_id": self.connection_id,
            "provider_config_key": self.provider_config_key,
            "provider": self.provider,
            "connection_config": self.connection_config,
            "metadata": self.metadata,
            "credentials": credentials,
            "created_at": self.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "updated_at": self.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "last_fetched_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "errors": [],
            "end_user": self.end_user_view(),
            "tags": self.tags,
        })
    }

    /// The end user as the original's API shows one: every field present,
    /// `null` where not given; `null` without an end user.
    pub fn end_user_view(&self) -> Value {
        match &self.end_user {
            Value::Object(u) => serde_json::json!({
                "id": u.get("id").cloned().unwrap_or(Value::Null),
                "display_name": u.get("display_name").cloned().unwrap_or(Value::Null),
                "email": u.get("email").cloned().unwrap_or(Value::Null),
                "tags": u.get("tags").cloned().unwrap_or(Value::Null),
                "organization": null,
            }),
            _ => Value::Null,
        }
    }

    /// Resolves a `providers.yaml` placeholder against this connection.
    pub fn lookup(&self, key: &str) -> Option<String> {
        fn text(v: &Value) -> Option<String> {
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        }
        if let Some(k) = key.strip_prefix("connectionConfig.") {
            return self.connection_config.get(k).and_then(text);
        }
        if let Some(k) = key.strip_prefix("metadata.") {
            return self.metadata.get(k).and_then(text);
        }
        if let Some(k) = key.strip_prefix("credentials.") {
            return self.credentials.as_map().get(k).and_then(text);
        }
        match key {
            "apiKey" => self.credentials.field("apiKey").map(str::to_string),
            "accessToken" => self.credentials.token().map(str::to_string),
            _ => None,
        }
    }
}

/// Errors of a connection store.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("unknown connection `{connection_id}` for integration `{provider_config_key}`")]
    NotFound {
        provider_config_key: String,
        connection_id: String,
    },
    #[error("metadata must be a JSON object, got {0}")]
    InvalidMetadata(String),
    #[error("the metadata would have more than {max} bytes after this update; nothing was changed")]
    MetadataTooLarge { max: usize },
    #[error("connection store failed: {0}")]
    Backend(String),
    /// Refused with the original's error code (a stand-in store, or a
    /// failed token refresh).
    #[error("{message}")]
    Refused { code: String, message: String },
}

/// Where connections live: one environment's connections (the server gives
/// each execution its environment's store, so a script cannot name another
/// tenant's connection), or a stand-in for them. The runtime reads them and
/// updates metadata through it.
#[async_trait::async_trait]
pub trait ConnectionStore: Send + Sync {
    /// The connection with usable credentials: a store that can refresh
    /// OAuth tokens does so first when they expired or are about to.
    async fn get(
        &self,
        provider_config_key: &str,
        connection_id: &str,
    ) -> Result<Connection, ConnectionError>;

    /// Replaces the metadata.
    async fn set_metadata(
        &self,
        provider_config_key: &str,
        connection_id: &str,
        metadata: Value,
    ) -> Result<(), ConnectionError>;

    /// Shallow-merges `patch` into the metadata, unless the result would
    /// pass `max_bytes` serialised ([`merge_metadata`]).
    async fn update_metadata(
        &self,
        provider_config_key: &str,
        connection_id: &str,
        patch: Map<String, Value>,
        max_bytes: usize,
    ) -> Result<(), ConnectionError>;

    /// Called when the upstream refused the credentials (401): a store that
    /// can refresh them does (the next `get` returns the new ones).
    async fn credentials_refused(
        &self,
        _provider_config_key: &str,
        _connection_id: &str,
    ) -> Result<(), ConnectionError> {
        Ok(())
    }

    /// What `getConnection` answers.
    async fn script_view(
        &self,
        provider_config_key: &str,
        connection_id: &str,
    ) -> Result<Value, ConnectionError> {
        Ok(self
            .get(provider_config_key, connection_id)
            .await?
            .to_script_json())
    }

    /// What `getConnection(…, {forceRefresh, refreshToken})` answers: a
    /// store that can refresh OAuth2 tokens refreshes first when
    /// `force_refresh`; the refresh tokens stay in the credentials when
    /// `refresh_token`. Without either, [`ConnectionStore::script_view`].
    async fn script_view_with(
        &self,
        provider_config_key: &str,
        connection_id: &str,
        _force_refresh: bool,
        refresh_token: bool,
    ) -> Result<Value, ConnectionError> {
        if !refresh_token {
            return self.script_view(provider_config_key, connection_id).await;
        }
        Ok(self
            .get(provider_config_key, connection_id)
            .await?
            .to_script_json_with(true))
    }

    /// What `getIntegration` answers for the integration
    /// `provider_config_key` (`connection_id` is the calling script's own
    /// connection): the API's view of it, with its `credentials` when
    /// `with_credentials`. A store that knows integrations only through
    /// their connections answers with the key and the connection's provider.
    async fn integration(
        &self,
        provider_config_key: &str,
        connection_id: &str,
        _with_credentials: bool,
    ) -> Result<Value, ConnectionError> {
        let c = self.get(provider_config_key, connection_id).await?;
        Ok(serde_json::json!({
            "unique_key": provider_config_key,
            "provider": c.provider,
            "display_name": c.provider,
        }))
    }

    /// What `getMetadata` answers.
    async fn metadata(
        &self,
        provider_config_key: &str,
        connection_id: &str,
    ) -> Result<Value, ConnectionError> {
        Ok(self.get(provider_config_key, connection_id).await?.metadata)
    }
}

/// Connections held in memory (dry runs and tests).
#[derive(Debug, Default)]
pub struct MemoryConnections {
    inner: RwLock<HashMap<(String, String), Connection>>,
}

impl MemoryConnections {
    pub fn new(connections: impl IntoIterator<Item = Connection>) -> Self {
        let store = Self::default();
        for c in connections {
            store.insert(c);
        }
        store
    }

    pub fn insert(&self, connection: Connection) {
        let key = (
            connection.provider_config_key.clone(),
            connection.connection_id.clone(),
        );
        self.write().insert(key, connection);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<(String, String), Connection>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn modify(
        &self,
        pck: &str,
        cid: &str,
        f: impl FnOnce(&mut Connection) -> Result<(), ConnectionError>,
    ) -> Result<(), ConnectionError> {
        let mut map = self.write();
        let conn = map
            .get_mut(&(pck.to_string(), cid.to_string()))
            .ok_or_else(|| not_found(pck, cid))?;
        f(conn)?;
        conn.updated_at = Utc::now();
        Ok(())
    }
}

/// `patch` shallow-merged into `metadata` (the original's
/// `updateMetadata`), or `MetadataTooLarge` when the result would pass
/// `max_bytes` serialised: each update is bounded by the request or
/// payload limit, but updates adding keys one after another would grow a
/// connection's metadata — read by every execution of it — without end.
pub fn merge_metadata(
    metadata: &Value,
    patch: Map<String, Value>,
    max_bytes: usize,
) -> Result<Value, ConnectionError> {
    let mut merged = metadata.as_object().cloned().unwrap_or_default();
    merged.extend(patch);
    let merged = Value::Object(merged);
    // Past the bound, a merge may still leave the metadata as large as it
    // was or smaller (set by a request with a larger limit).
    if !crate::records::fits_json(&merged, max_bytes)
        && crate::records::json_size(&merged) > crate::records::json_size(metadata)
    {
        return Err(ConnectionError::MetadataTooLarge { max: max_bytes });
    }
    Ok(merged)
}

fn not_found(pck: &str, cid: &str) -> ConnectionError {
    ConnectionError::NotFound {
        provider_config_key: pck.to_string(),
        connection_id: cid.to_string(),
    }
}

#[async_trait::async_trait]
impl ConnectionStore for MemoryConnections {
    async fn get(&self, pck: &str, cid: &str) -> Result<Connection, ConnectionError> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(pck.to_string(), cid.to_string()))
            .cloned()
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
        self.modify(pck, cid, |c| {
            c.metadata = metadata;
            Ok(())
        })
    }

    async fn update_metadata(
        &self,
        pck: &str,
        cid: &str,
        patch: Map<String, Value>,
        max_bytes: usize,
    ) -> Result<(), ConnectionError> {
        self.modify(pck, cid, |c| {
            c.metadata = merge_metadata(&c.metadata, patch, max_bytes)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_of_credentials_named_by_their_provider_is_a_secret() {
        let c: Credentials = serde_json::from_value(serde_json::json!({
            "type": "JWT",
            "privateKey": {"id": "65a1b2", "secret": "0a0b0c0d"},
            "issuerId": "issuer-1",
            "token": "eyJ.x.y",
            "expires_at": "2030-01-01T00:00:00Z",
        }))
        .unwrap();
        let secrets = c.secrets();
        for s in ["65a1b2", "0a0b0c0d", "issuer-1", "eyJ.x.y"] {
            assert!(secrets.iter().any(|have| have == s), "{s}: {secrets:?}");
        }
        assert!(
            !secrets.iter().any(|s| s.starts_with("2030")),
            "{secrets:?}"
        );
        let c: Credentials = serde_json::from_value(
            serde_json::json!({"type": "JWT", "privateKey": "65a1b2:0a0b0c0d"}),
        )
        .unwrap();
        assert!(
            c.secrets().iter().any(|s| s == "0a0b0c0d"),
            "{:?}",
            c.secrets()
        );
    }

    #[test]
    fn a_connections_own_client_secret_is_among_its_secrets() {
        let c: Credentials = serde_json::from_value(serde_json::json!({
            "type": "OAUTH2", "access_token": "token-1",
            "config_override": {"client_id": "own", "client_secret": "own-secret"},
        }))
        .unwrap();
        assert_eq!(
            c.secrets(),
            vec!["token-1".to_string(), "own-secret".to_string()]
        );
    }

    #[test]
    fn credentials_are_checked_on_load() {
        let err = serde_json::from_value::<Credentials>(serde_json::json!({"type": "OAUTH2"}))
            .unwrap_err();
        assert!(err.to_string().contains("access_token"), "{err}");
        let ok: Credentials =
            serde_json::from_value(serde_json::json!({"type": "API_KEY", "apiKey": "k"})).unwrap();
        assert_eq!(ok.kind(), "API_KEY");
    }

    #[test]
    fn refresh_token_is_hidden_from_scripts() {
        let c: Credentials = serde_json::from_value(serde_json::json!({
            "type": "OAUTH2", "access_token": "a", "refresh_token": "r",
            "raw": {"refresh_token": "r", "scope": "x"}
        }))
        .unwrap();
        let shown = c.redacted_for_script();
        assert!(shown.get("refresh_token").is_none());
        assert!(shown["raw"].get("refresh_token").is_none());
        // Nested in a token response too.
        let c: Credentials = serde_json::from_value(serde_json::json!({
            "type": "OAUTH2", "access_token": "a",
            "raw": {"credentials": {"refresh_token": "r"}, "list": [{"refresh_token": "r"}]}
        }))
        .unwrap();
        assert!(!c.redacted_for_script().to_string().contains("\"r\""));
        assert_eq!(shown["raw"]["scope"], "x");
    }

    #[test]
    fn a_scripts_connection_never_shows_the_assertion_key() {
        let c = Connection {
            connection_id: "c".into(),
            provider_config_key: "p".into(),
            provider: "p".into(),
            credentials: serde_json::from_value(serde_json::json!({
                "type": "TWO_STEP", "token": "t", "refresh_token": "r",
                "assertionOption": {"privateKey": "-----BEGIN PRIVATE KEY-----k"},
            }))
            .unwrap(),
            connection_config: Map::new(),
            metadata: Value::Null,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            end_user: Value::Null,
            tags: Default::default(),
            webhook_url_override: None,
            token_host_from_browser: false,
        };
        for refresh_token in [false, true] {
            let shown = c.to_script_json_with(refresh_token);
            assert!(!shown.to_string().contains("PRIVATE KEY"), "{shown}");
            assert_eq!(shown["credentials"]["token"], "t", "{shown}");
            assert_eq!(
                shown["credentials"].get("refresh_token").is_some(),
                refresh_token,
                "{shown}"
            );
        }
    }

    #[tokio::test]
    async fn metadata_update_is_shallow_merge() {
        let store = MemoryConnections::new([Connection {
            connection_id: "c".into(),
            provider_config_key: "p".into(),
            provider: "p".into(),
            credentials: serde_json::from_value(serde_json::json!({})).unwrap(),
            connection_config: Map::new(),
            metadata: serde_json::json!({"a": {"x": 1}, "b": 2}),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            end_user: serde_json::Value::Null,
            tags: Default::default(),
            webhook_url_override: None,
            token_host_from_browser: false,
        }]);
        let patch = serde_json::json!({"a": {"y": 1}})
            .as_object()
            .cloned()
            .unwrap();
        store
            .update_metadata("p", "c", patch, 1 << 20)
            .await
            .unwrap();
        assert_eq!(
            store.get("p", "c").await.unwrap().metadata,
            serde_json::json!({"a": {"y": 1}, "b": 2})
        );
        // A merge past the bound changes nothing.
        let big = serde_json::json!({"c": "x".repeat(100)})
            .as_object()
            .cloned()
            .unwrap();
        assert!(matches!(
            store.update_metadata("p", "c", big, 64).await,
            Err(ConnectionError::MetadataTooLarge { max: 64 })
        ));
        assert_eq!(
            store.get("p", "c").await.unwrap().metadata,
            serde_json::json!({"a": {"y": 1}, "b": 2})
        );
        assert!(matches!(
            store.get("p", "zz").await,
            Err(ConnectionError::NotFound { .. })
        ));
    }
}
