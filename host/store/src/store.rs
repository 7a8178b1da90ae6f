//! [`Store`] (one process's platform store) and [`EnvStore`] (one
//! environment's view of it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use crate::backend::{Backend, Op, Table};
use crate::crypto::{DataKey, Keyring, MasterKey};
use crate::error::StoreError;
use crate::keys::{self, KeyBuf};

/// `Meta` key of the format marker.
pub(crate) const FORMAT_KEY: &[u8] = b"format";

/// The environment secret ([`EnvStore::secret`]) holding the environment's
/// secret key, sealed, for signing webhooks the original's way.
pub const SECRET_KEY: &str = "secret-key";
/// The layout this code reads and writes. A store with another marker is
/// refused rather than misread, except [`FORMAT_1`], [`FORMAT_2`] and
/// [`FORMAT_3`], which are migrated.
pub(crate) const FORMAT: &[u8] = b"sluice-store 4";
/// The layout before a connection could have its own webhook URL: its rows
/// read as they are, so opening such a store only moves the marker on, and
/// a build that would drop the URL when it rewrites a connection refuses
/// the store instead (its webhooks would go elsewhere without a word).
pub(crate) const FORMAT_3: &[u8] = b"sluice-store 3";
/// The layout before a record's header could mark it pruned
/// ([`crate::rows`]): its rows read as they are, so opening such a store
/// only moves the marker on, and a build that cannot read a pruned row
/// refuses the store instead of failing on the row.
pub(crate) const FORMAT_2: &[u8] = b"sluice-store 2";
/// The layout before records moved into their paging entries
/// ([`crate::rows`]); opening such a store migrates it.
pub(crate) const FORMAT_1: &[u8] = b"sluice-store 1";

/// An environment's row: what is needed to authenticate it and to open its
/// secrets. Requests are checked against the secret key's SHA-256 (keys
/// are 122 random bits, so a fast hash cannot be brute-forced); the key
/// itself is kept only sealed, as the environment's secret `SECRET_KEY`
/// (webhooks to the app are signed with it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EnvRow {
    id: Uuid,
    name: String,
    secret_key_sha256: String,
    current_key: u32,
    data_keys: Vec<WrappedKey>,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WrappedKey {
    id: u32,
    wrapped: String,
}

/// What every [`EnvStore`] of a process shares.
pub(crate) struct Shared {
    pub backend: Arc<dyn Backend>,
    master: RwLock<MasterKey>,
    pub locks: ScopeLocks,
}

impl Shared {
    fn master(&self) -> MasterKey {
        self.master
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The platform store of one process: the environments, each reached by
/// name, id or secret key. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    envs: Arc<Vec<EnvStore>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("environments", &self.envs)
            .finish_non_exhaustive()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Store {
    /// Opens the store over `backend`.
    ///
    /// On first start (an empty backend) it creates the environments named
    /// in `initial`, each with its secret key: the one given (say from
    /// `NANGO_SECRET_KEY_DEV`) or a new random UUID v4, like Nango's keys.
    /// Only a hash of each key is stored; the keys of the environments
    /// created are returned so the caller can show them once. On later
    /// starts nothing is created and the list is empty.
    ///
    /// A store whose metadata cannot be read, or whose environments' data
    /// keys `master` does not decrypt, is refused with an error saying so;
    /// nothing is changed or recreated.
    pub async fn open(
        backend: Arc<dyn Backend>,
        master: MasterKey,
        initial: &[(String, Option<String>)],
    ) -> Result<(Store, Vec<(String, String)>), StoreError> {
        let shared = Arc::new(Shared {
            backend,
            master: RwLock::new(master),
            locks: ScopeLocks::default(),
        });
        let format = shared.backend.get(Table::Meta, FORMAT_KEY).await?;
        // An older format is migrated only once the master key has opened
        // every environment: a refused start changes nothing.
        let mut migrate_from = None;
        let (rows, created) = match format {
            Some(f) if f == FORMAT => (Self::load_rows(&shared).await?, Vec::new()),
            Some(f) if f == FORMAT_1 || f == FORMAT_2 || f == FORMAT_3 => {
                migrate_from = Some(f);
                (Self::load_rows(&shared).await?, Vec::new())
            }
            Some(f) => {
                return Err(StoreError::Metadata(format!(
                    "unknown format marker {:?} (this build reads {:?})",
                    String::from_utf8_lossy(&f),
                    String::from_utf8_lossy(FORMAT)
                )));
            }
            None if shared.backend.may_create() => Self::create(&shared, initial).await?,
            None => {
                let environments = !shared
                    .backend
                    .scan(Table::Environments, &[], None, 1, false)
                    .await?
                    .is_empty();
                return Err(StoreError::Metadata(if environments {
                    "environments exist but the format marker is missing (a `sluice copy-store` \
                     cut short? copy again into an empty store)"
                        .into()
                } else {
                    "the database holds no store (no format marker, no environments): it is \
                     damaged (sled recovers a damaged log as an empty database; PostgreSQL \
                     tables emptied), or a first start of an older sluice did not finish \
                     making it; refusing to write a new \
                     store over it (restore it from a backup; if it never held a store, delete \
                     it to start a new one)"
                        .into()
                }));
            }
        };
        shared.backend.holds_store().await?;
        let master = shared.master();
        let mut envs = Vec::with_capacity(rows.len());
        for row in rows {
            envs.push(EnvStore::from_row(&shared, &master, row)?);
        }
        // The key hash is plain, the key sealed under the master key: one
        // who can write the store but lacks the master key could put the
        // hash of a key of their own in place, and read every credential
        // with it. The sealed key must match (a store from before keys
        // were kept sealed has none to check).
        for env in &envs {
            if let Some(key) = env.secret(SECRET_KEY).await?
                && !bool::from(sha256(key.as_bytes()).ct_eq(&env.inner.secret_hash))
            {
                return Err(StoreError::Metadata(format!(
                    "environment `{}`'s secret-key hash is not the hash of its sealed key: the \
                     store was changed by someone without the master key; refusing to open it",
                    env.name()
                )));
            }
        }
        if let Some(f) = migrate_from {
            if f == FORMAT_1 {
                crate::records::migrate_from_format_1(&*shared.backend).await?;
            }
            shared
                .backend
                .apply(vec![Op::Put {
                    table: Table::Meta,
                    key: FORMAT_KEY.to_vec(),
                    value: FORMAT.to_vec(),
                }])
                .await?;
        }
        envs.sort_by(|a, b| a.name().cmp(b.name()));
        Ok((
            Store {
                shared,
                envs: Arc::new(envs),
            },
            created,
        ))
    }

    async fn load_rows(shared: &Shared) -> Result<Vec<EnvRow>, StoreError> {
        let entries = shared
            .backend
            .scan(Table::Environments, &[], None, usize::MAX, false)
            .await?;
        if entries.is_empty() {
            return Err(StoreError::Metadata(
                "the store is marked as created but has no environments".into(),
            ));
        }
        entries
            .into_iter()
            .map(|(key, value)| {
                let row: EnvRow = crate::decode(&value).map_err(|e| {
                    StoreError::Metadata(format!("an environment row does not decode: {e}"))
                })?;
                if key != keys::env(row.id).into_bytes() {
                    return Err(StoreError::Metadata(format!(
                        "environment `{}` is stored under another id's key",
                        row.name
                    )));
                }
                Ok(row)
            })
            .collect()
    }

    async fn create(
        shared: &Shared,
        initial: &[(String, Option<String>)],
    ) -> Result<(Vec<EnvRow>, Vec<(String, String)>), StoreError> {
        // An empty store: but environments without the marker mean a
        // half-written or foreign store, not a new one.
        if !shared
            .backend
            .scan(Table::Environments, &[], None, 1, false)
            .await?
            .is_empty()
        {
            return Err(StoreError::Metadata(
                "environments exist but the format marker is missing (a `sluice copy-store` cut short? copy again into an empty store)".into(),
            ));
        }
        if initial.is_empty() {
            return Err(StoreError::Invalid(
                "a new store needs at least one environment".into(),
            ));
        }
        let master = shared.master();
        let mut rows = Vec::new();
        let mut keys_out = Vec::new();
        let mut ops = Vec::new();
        for (name, given) in initial {
            if name.is_empty() {
                return Err(StoreError::Invalid("an environment name is empty".into()));
            }
            if rows.iter().any(|r: &EnvRow| &r.name == name) {
                return Err(StoreError::Invalid(format!(
                    "environment `{name}` is named twice"
                )));
            }
            let secret = match given {
                Some(k) => {
                    check_secret_key(name, k)?;
                    k.clone()
                }
                None => Uuid::new_v4().to_string(),
            };
            if keys_out.iter().any(|(_, k)| k == &secret) {
                return Err(StoreError::Invalid(format!(
                    "environment `{name}` is given the same secret key as another environment"
                )));
            }
            let id = Uuid::new_v4();
            let key = DataKey::generate(1);
            let row = EnvRow {
                id,
                name: name.clone(),
                secret_key_sha256: hex(&sha256(secret.as_bytes())),
                current_key: key.id,
                data_keys: vec![WrappedKey {
                    id: key.id,
                    wrapped: master.wrap(id, &key)?,
                }],
                created_at: Utc::now(),
            };
            ops.push(env_row_op(&row)?);
            // The key itself, sealed: webhooks to the app are signed with
            // it (`X-Nango-Signature`), as the original signs them.
            ops.push(crate::env::seal_secret_op(
                &Keyring::new(key),
                keys::env(id),
                SECRET_KEY,
                &secret,
            )?);
            rows.push(row);
            keys_out.push((name.clone(), secret));
        }
        // The marker goes in the same atomic write: a store is either
        // complete or untouched.
        ops.push(Op::Put {
            table: Table::Meta,
            key: FORMAT_KEY.to_vec(),
            value: FORMAT.to_vec(),
        });
        shared.backend.apply(ops).await?;
        Ok((rows, keys_out))
    }

    /// The environment of this name.
    pub fn environment(&self, name: &str) -> Option<EnvStore> {
        self.envs.iter().find(|e| e.name() == name).cloned()
    }

    /// The environment of this id (the `environmentUuid` of webhook URLs).
    pub fn environment_by_id(&self, id: Uuid) -> Option<EnvStore> {
        self.envs.iter().find(|e| e.id() == id).cloned()
    }

    /// The environment whose secret key this is. Compares hashes in
    /// constant time.
    pub fn environment_by_key(&self, secret: &str) -> Option<EnvStore> {
        let hash = sha256(secret.as_bytes());
        let mut found = None;
        for env in self.envs.iter() {
            if bool::from(env.inner.secret_hash.ct_eq(&hash)) {
                found = Some(env.clone());
            }
        }
        found
    }

    /// Every environment, by name.
    pub fn environments(&self) -> Vec<EnvStore> {
        self.envs.to_vec()
    }

    /// Resolves, with the reason, once another process has taken the
    /// store over ([`Backend::taken_over`]).
    pub async fn taken_over(&self) -> String {
        self.shared.backend.taken_over().await
    }

    /// Makes every write acknowledged so far durable, those acknowledged
    /// unflushed included (a stop calls it last): one durable write, which
    /// the backends flush with all that came before it.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.shared
            .backend
            .apply(vec![Op::Put {
                table: Table::Meta,
                key: b"last-flush".to_vec(),
                value: chrono::Utc::now().to_rfc3339().into_bytes(),
            }])
            .await?;
        Ok(())
    }

    /// Gives each named environment a new secret key — the one given, or a
    /// new random one — in one atomic write, and returns the store as it
    /// now is with the keys set (to show once): the old keys stop
    /// authenticating. For a lost or leaked key; whoever holds the data
    /// directory and the master key may do it.
    /// Whether [`Store::replace_secret_keys`] would take these: each
    /// environment named once and existing, each given key well formed,
    /// new, and no other environment's. Nothing is written.
    pub fn check_new_keys(&self, replace: &[(String, Option<String>)]) -> Result<(), StoreError> {
        // Every environment's key once these are taken (a generated key is
        // no other's: all zeros here stands for it).
        let mut after: Vec<(String, [u8; 32])> = self
            .envs
            .iter()
            .map(|e| (e.name().to_string(), e.inner.secret_hash))
            .collect();
        for (i, (name, given)) in replace.iter().enumerate() {
            if replace[..i].iter().any(|(n, _)| n == name) {
                return Err(StoreError::Invalid(format!(
                    "environment `{name}` is named twice for a new key"
                )));
            }
            if self.environment(name).is_none() {
                return Err(StoreError::Invalid(format!(
                    "there is no environment `{name}` to give a new key"
                )));
            }
            if let Some(k) = given {
                check_secret_key(name, k)?;
            }
            let hash = given.as_ref().map_or([0; 32], |k| sha256(k.as_bytes()));
            for (n, h) in after.iter_mut() {
                if n == name {
                    *h = hash;
                }
            }
        }
        for (name, given) in replace {
            let Some(k) = given else { continue };
            let hash = sha256(k.as_bytes());
            if self
                .environment(name)
                .is_some_and(|env| bool::from(env.inner.secret_hash.ct_eq(&hash)))
            {
                return Err(StoreError::Invalid(format!(
                    "the key given for environment `{name}` is the one it has: a new key must differ (leave it unset to have one generated)"
                )));
            }
            if after.iter().any(|(n, h)| n != name && *h == hash) {
                return Err(StoreError::Invalid(format!(
                    "environment `{name}` is given the same secret key as another environment"
                )));
            }
        }
        Ok(())
    }

    pub async fn replace_secret_keys(
        self,
        replace: &[(String, Option<String>)],
    ) -> Result<(Store, Vec<(String, String)>), StoreError> {
        // Every given key checked before anything is written.
        self.check_new_keys(replace)?;
        let master = self.shared.master();
        let mut ops = Vec::new();
        let mut out = Vec::new();
        for (name, given) in replace {
            let env = self.environment(name).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "there is no environment `{name}` to give a new key"
                ))
            })?;
            // A generated one is new, and no other environment's.
            let secret = given.clone().unwrap_or_else(|| Uuid::new_v4().to_string());
            let hash = sha256(secret.as_bytes());
            let ring = env.inner.keyring.read().await;
            let mut row = env.row(&master, &ring)?;
            row.secret_key_sha256 = hex(&hash);
            ops.push(env_row_op(&row)?);
            ops.push(crate::env::seal_secret_op(
                &ring,
                keys::env(env.id()),
                SECRET_KEY,
                &secret,
            )?);
            out.push((name.clone(), secret));
        }
        if ops.is_empty() {
            return Ok((self, out));
        }
        self.shared.backend.apply(ops).await?;
        let backend = Arc::clone(&self.shared.backend);
        drop(self);
        let (store, _) = Store::open(backend, master, &[]).await?;
        Ok((store, out))
    }

    /// Re-wraps every environment's data keys with `new_master` in one
    /// atomic write; from then on the store opens only with `new_master`.
    /// Keep the new key safe before calling: after this returns the old one
    /// no longer opens the store.
    pub async fn rewrap(&self, new_master: MasterKey) -> Result<(), StoreError> {
        // Hold every keyring so no rotation runs meanwhile.
        let mut guards = Vec::with_capacity(self.envs.len());
        for env in self.envs.iter() {
            guards.push(env.inner.keyring.write().await);
        }
        let mut ops = Vec::new();
        for (env, ring) in self.envs.iter().zip(&guards) {
            ops.push(env_row_op(&env.row(&new_master, ring)?)?);
        }
        self.shared.backend.apply(ops).await?;
        *self
            .shared
            .master
            .write()
            .unwrap_or_else(|e| e.into_inner()) = new_master;
        Ok(())
    }

    /// The store opened again over the same backend and master key: its
    /// environments (names, secret keys, data keys) as they are stored
    /// now. For a reader of a store another process writes (a standby),
    /// which sees a key replaced there only so.
    pub async fn reload(&self) -> Result<Store, StoreError> {
        let open = || Store::open(self.shared.backend.clone(), self.shared.master(), &[]);
        match open().await {
            // A key replaced by the writer between the reads of its hash
            // and its sealed key (separate reads of a networked store)
            // reads as a mismatch once: read again.
            Err(StoreError::Metadata(m)) if m.contains("sealed key") => Ok(open().await?.0),
            other => Ok(other?.0),
        }
    }

    /// Copies the whole store as it is now into `to`, an empty backend
    /// (an online backup: the store goes on meanwhile), through a
    /// [`Backend::snapshot`]; `None` when this store's backend takes none
    /// (PostgreSQL: its own tools back it up). The snapshot is let go as
    /// soon as it is read (sled holds its writes back until then).
    pub async fn back_up_into(
        &self,
        to: &dyn Backend,
    ) -> Result<Option<crate::CopyReport>, crate::CopyError> {
        let Some(snapshot) = self.shared.backend.snapshot().await? else {
            return Ok(None);
        };
        let report = crate::copy_store(&*snapshot, to, |_, _| {}).await;
        drop(snapshot);
        report.map(Some)
    }

    /// Stores a blob (a component file) under its SHA-256, returned as hex.
    pub async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        put_blob(&self.shared, bytes).await
    }

    /// The blob with this SHA-256 (hex).
    pub async fn blob(&self, sha256_hex: &str) -> Result<Option<Vec<u8>>, StoreError> {
        blob(&self.shared, sha256_hex).await
    }

    /// Whether a blob with this SHA-256 (hex) is stored; it is not read.
    pub async fn has_blob(&self, sha256_hex: &str) -> Result<bool, StoreError> {
        let hash = unhex32(&sha256_hex.to_ascii_lowercase()).ok_or_else(|| {
            StoreError::Invalid(format!("`{sha256_hex}` is not a SHA-256 in hex"))
        })?;
        let found = self
            .shared
            .backend
            .scan_where(Table::Blobs, &hash, None, 1, false, &mut |_| false)
            .await?;
        Ok(!found.is_empty())
    }

    /// Deletes the blob with this SHA-256 (hex); deleting a missing one is
    /// no error.
    pub async fn delete_blob(&self, sha256_hex: &str) -> Result<(), StoreError> {
        let hash = unhex32(&sha256_hex.to_ascii_lowercase()).ok_or_else(|| {
            StoreError::Invalid(format!("`{sha256_hex}` is not a SHA-256 in hex"))
        })?;
        self.shared
            .backend
            .apply(vec![Op::Delete {
                table: Table::Blobs,
                key: hash.to_vec(),
            }])
            .await?;
        Ok(())
    }

    /// The SHA-256 (hex) of every stored blob, in order; the blobs
    /// themselves are not read.
    pub async fn blob_hashes(&self) -> Result<Vec<String>, StoreError> {
        const PAGE: usize = 1000;
        let mut hashes = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .shared
                .backend
                .scan_where(
                    Table::Blobs,
                    b"",
                    after.as_deref(),
                    PAGE,
                    false,
                    &mut |_| false,
                )
                .await?;
            let full = page.len() == PAGE;
            after = page.last().map(|(k, _)| k.clone());
            hashes.extend(page.iter().map(|(k, _)| hex(k)));
            if !full {
                return Ok(hashes);
            }
        }
    }
}

pub(crate) async fn put_blob(shared: &Shared, bytes: &[u8]) -> Result<String, StoreError> {
    let hash = sha256(bytes);
    shared
        .backend
        .apply(vec![Op::Put {
            table: Table::Blobs,
            key: hash.to_vec(),
            value: bytes.to_vec(),
        }])
        .await?;
    Ok(hex(&hash))
}

pub(crate) async fn blob(shared: &Shared, sha256_hex: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let hash = unhex32(&sha256_hex.to_ascii_lowercase())
        .ok_or_else(|| StoreError::Invalid(format!("`{sha256_hex}` is not a SHA-256 in hex")))?;
    Ok(shared.backend.get(Table::Blobs, &hash).await?)
}

fn env_row_op(row: &EnvRow) -> Result<Op, StoreError> {
    Ok(Op::Put {
        table: Table::Environments,
        key: keys::env(row.id).into_bytes(),
        value: serde_json::to_vec(row).map_err(|e| StoreError::encode("an environment", e))?,
    })
}

/// One environment's store. Everything it reaches is in its environment by
/// construction: every key it builds starts with the environment's id, and
/// no method takes an environment. Cheap to clone; clones share the
/// environment's keys and locks.
#[derive(Clone)]
pub struct EnvStore {
    pub(crate) inner: Arc<EnvInner>,
}

pub(crate) struct EnvInner {
    pub id: Uuid,
    pub name: String,
    secret_hash: [u8; 32],
    created_at: DateTime<Utc>,
    /// Readers and writers of secrets hold it shared; a key rotation holds
    /// it exclusively, so no value is sealed with a key being retired.
    pub keyring: tokio::sync::RwLock<Keyring>,
    pub shared: Arc<Shared>,
}

impl std::fmt::Debug for EnvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvStore")
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl EnvStore {
    fn from_row(shared: &Arc<Shared>, master: &MasterKey, row: EnvRow) -> Result<Self, StoreError> {
        let wrong = || StoreError::WrongMasterKey {
            environment: row.name.clone(),
        };
        let mut keys = std::collections::BTreeMap::new();
        for wk in &row.data_keys {
            let key = master
                .unwrap_key(row.id, wk.id, &wk.wrapped)
                .ok_or_else(wrong)?;
            keys.insert(wk.id, key);
        }
        if !keys.contains_key(&row.current_key) {
            return Err(StoreError::Metadata(format!(
                "environment `{}` names data key {} but does not hold it",
                row.name, row.current_key
            )));
        }
        let secret_hash = unhex32(&row.secret_key_sha256).ok_or_else(|| {
            StoreError::Metadata(format!(
                "environment `{}` has no valid secret-key hash",
                row.name
            ))
        })?;
        Ok(EnvStore {
            inner: Arc::new(EnvInner {
                id: row.id,
                name: row.name,
                secret_hash,
                created_at: row.created_at,
                keyring: tokio::sync::RwLock::new(Keyring {
                    current: row.current_key,
                    keys,
                }),
                shared: Arc::clone(shared),
            }),
        })
    }

    fn row(&self, master: &MasterKey, ring: &Keyring) -> Result<EnvRow, StoreError> {
        let mut data_keys = Vec::with_capacity(ring.keys.len());
        for key in ring.keys.values() {
            data_keys.push(WrappedKey {
                id: key.id,
                wrapped: master.wrap(self.inner.id, key)?,
            });
        }
        Ok(EnvRow {
            id: self.inner.id,
            name: self.inner.name.clone(),
            secret_key_sha256: hex(&self.inner.secret_hash),
            current_key: ring.current,
            data_keys,
            created_at: self.inner.created_at,
        })
    }

    /// The environment's id (stable; it appears in webhook URLs).
    pub fn id(&self) -> Uuid {
        self.inner.id
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn created_at(&self) -> DateTime<Utc> {
        self.inner.created_at
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        self.inner.shared.backend.as_ref()
    }

    pub(crate) fn prefix(&self) -> KeyBuf {
        keys::env(self.inner.id)
    }

    /// The id of the data key that seals new secrets.
    pub async fn data_key_id(&self) -> u32 {
        self.inner.keyring.read().await.current
    }

    /// Replaces the environment's data key with a new random one and
    /// re-encrypts every secret of the environment with it; returns the
    /// new key's id. The old key stays in the environment's row until every
    /// value is re-encrypted, so a crash midway loses nothing (a later call
    /// finishes the job). Secrets of this environment cannot be read or
    /// written while it runs.
    pub async fn rotate_data_key(&self) -> Result<u32, StoreError> {
        let mut ring = self.inner.keyring.write().await;
        let master = self.inner.shared.master();
        let next = ring.keys.keys().next_back().map_or(1, |id| id + 1);
        let mut rotated = ring.clone();
        rotated.keys.insert(next, DataKey::generate(next));
        rotated.current = next;
        // 1. The new key is stored (old ones kept) before anything uses it.
        self.backend()
            .apply(vec![env_row_op(&self.row(&master, &rotated)?)?])
            .await?;
        *ring = rotated;
        // 2. Every secret is re-sealed.
        self.reseal_all(&ring).await?;
        // 3. The old keys are dropped.
        let mut retired = ring.clone();
        retired.keys.retain(|id, _| *id == next);
        self.backend()
            .apply(vec![env_row_op(&self.row(&master, &retired)?)?])
            .await?;
        *ring = retired;
        Ok(next)
    }

    /// Serialises writers of one lock key (a records scope, a connection)
    /// within this process. Fails with the error of a write a previous
    /// holder started under this key and left to finish after it
    /// ([`ScopeGuard::release_after`]), which the holder before could not
    /// report.
    pub(crate) async fn lock(&self, key: Vec<u8>) -> Result<ScopeGuard, StoreError> {
        let mut guard = self.inner.shared.locks.lock(key).await;
        match guard.failure().take() {
            Some(e) => Err(e),
            None => Ok(guard),
        }
    }
}

/// What a lock keeps between holders: the failure of a write a holder
/// started and did not wait for.
type LockState = Option<StoreError>;

/// Every lock in use, by key.
type LockMap = Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<LockState>>>>;

/// Async locks by key, made on demand and dropped when nobody holds or
/// waits for them: one per records scope `(connection, model)` being
/// written (the original's advisory lock), one per connection being
/// modified. Writers of different keys never wait for each other.
///
/// They serialise writers within one process, which is all an embedded
/// backend has; a shared database backend will need its own (advisory
/// locks or transactions with conflict checks).
#[derive(Default)]
pub(crate) struct ScopeLocks {
    map: Arc<LockMap>,
}

impl ScopeLocks {
    pub async fn lock(&self, key: Vec<u8>) -> ScopeGuard {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(map.entry(key.clone()).or_default())
        };
        let guard = mutex.lock_owned().await;
        ScopeGuard {
            map: Arc::clone(&self.map),
            key,
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

pub(crate) struct ScopeGuard {
    map: Arc<LockMap>,
    key: Vec<u8>,
    guard: Option<OwnedMutexGuard<LockState>>,
}

impl ScopeGuard {
    fn failure(&mut self) -> &mut LockState {
        // Only `Drop` takes the guard out.
        self.guard.as_mut().map_or_else(
            || unreachable!("a scope guard is held until dropped"),
            |g| &mut **g,
        )
    }

    /// Keeps the key locked until `work` (a write already started, or
    /// reads and writes to do) is done, without waiting for it here: the
    /// next holder gets the lock once it is, or its error if it failed.
    /// Needs a tokio runtime to run on; without one, waits here.
    pub async fn release_after(
        mut self,
        work: impl Future<Output = Result<(), StoreError>> + Send + 'static,
    ) -> Result<(), StoreError> {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = work.await {
                        *self.failure() = Some(e);
                    }
                });
                Ok(())
            }
            Err(_) => work.await,
        }
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        // Release first, then forget the lock if nobody else holds a handle
        // to it (waiters took theirs under the map's lock, so none can
        // appear between the check and the removal) and it keeps no
        // failure for the next holder.
        let Some(guard) = self.guard.take() else {
            return;
        };
        let keeps_failure = guard.is_some();
        drop(guard);
        if keeps_failure {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// The fewest characters a given secret key may have (a generated one is a
/// UUID, 36).
pub const MIN_SECRET_KEY_CHARS: usize = 16;

/// A key an operator gives: long enough not to be guessed, and only
/// visible ASCII (it travels in an `Authorization` header).
fn check_secret_key(name: &str, key: &str) -> Result<(), StoreError> {
    if key.trim().is_empty() {
        return Err(StoreError::Invalid(format!(
            "the secret key given for environment `{name}` is empty"
        )));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StoreError::Invalid(format!(
            "the secret key given for environment `{name}` has a space or a character that is not visible ASCII (it travels in an `Authorization: Bearer` header)"
        )));
    }
    if key.len() < MIN_SECRET_KEY_CHARS {
        return Err(StoreError::Invalid(format!(
            "the secret key given for environment `{name}` has {} characters, fewer than {MIN_SECRET_KEY_CHARS}: give a longer one (a UUID, as Nango's keys are), or none to have one generated",
            key.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn scope_locks_serialise_one_key_and_are_forgotten() {
        let locks = Arc::new(ScopeLocks::default());
        let a = locks.lock(b"a".to_vec()).await;
        // Another key is free.
        let b = locks.lock(b"b".to_vec()).await;
        drop(b);
        let waiter = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move {
                let _g = locks.lock(b"a".to_vec()).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits while `a` is held");
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(locks.len(), 0);
    }

    #[test]
    fn hex_round_trips() {
        let bytes = sha256(b"x");
        assert_eq!(unhex32(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex32("zz"), None);
    }
}
