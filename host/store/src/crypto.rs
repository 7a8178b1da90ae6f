//! Encryption at rest: a master key wraps one data key per environment;
//! data keys seal the secrets (credentials, OAuth client secrets, webhook
//! secrets, environment variables).
//!
//! Envelope encryption keeps the master key out of the data path: rotating
//! an environment's data key re-encrypts only that environment's secrets,
//! and changing the master key re-wraps a few 32-byte keys, not every
//! secret. XChaCha20-Poly1305's 24-byte nonces are safe to draw at random
//! for every value, so no nonce counter has to be stored or synchronised.
//!
//! Every sealed value carries the id of the data key that sealed it, and its
//! associated data binds it to where it is stored (table, row key, field):
//! a ciphertext copied into another row or environment does not decrypt.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, OsRng, Payload};
use chacha20poly1305::{AeadCore, KeyInit, XChaCha20Poly1305, XNonce};
use uuid::Uuid;

use crate::error::StoreError;

const NONCE_LEN: usize = 24;
/// Version byte of a sealed value's layout:
/// `[version][key id: u32 BE][nonce: 24][ciphertext + tag]`.
const SEALED_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The process's master key: 32 random bytes, kept outside the database
/// (a key file or an environment variable), never stored in it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Self {
        MasterKey(XChaCha20Poly1305::generate_key(&mut OsRng).into())
    }

    /// A key from its base64 text (standard alphabet, 32 bytes), as
    /// [`MasterKey::to_base64`] writes it.
    pub fn from_base64(text: &str) -> Result<Self, StoreError> {
        let bytes = b64().decode(text.trim()).map_err(|e| {
            StoreError::InvalidMasterKey(format!("not base64 ({e}); expected 32 bytes in base64"))
        })?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            StoreError::InvalidMasterKey(format!(
                "{} bytes, expected 32 bytes in base64",
                bytes.len()
            ))
        })?;
        Ok(MasterKey(key))
    }

    pub fn to_base64(&self) -> String {
        b64().encode(self.0)
    }

    /// Reads the key file at `path`, or on first start creates it (and its
    /// directory) with a new random key, readable by the owner only (mode
    /// 0600). A file that is not exactly one base64 key is refused, never
    /// overwritten: losing the master key loses every secret in the store.
    pub fn load_or_create(path: &Path) -> Result<Self, StoreError> {
        let fail = |cause: String| StoreError::MasterKeyFile {
            path: path.display().to_string(),
            cause,
        };
        match std::fs::read(path) {
            Ok(bytes) => return Self::parse_file(&bytes).map_err(fail),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(format!("cannot read it: {e}"))),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create its directory: {e}")))?;
        }
        // Written whole beside it, then linked into place: a crash never
        // leaves a partial key file (it did: created, then written, so a
        // kill between left an empty file every later start refused).
        let key = MasterKey::generate();
        let staged = path.with_extension(format!("{}.new", std::process::id()));
        let _ = std::fs::remove_file(&staged);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let written = options
            .open(&staged)
            .and_then(|mut file| {
                file.write_all(format!("{}\n", key.to_base64()).as_bytes())?;
                file.sync_all()
            })
            .map_err(|e| fail(format!("cannot write it: {e}")));
        let linked = written.and_then(|()| match std::fs::hard_link(&staged, path) {
            Ok(()) => Ok(true),
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(fail(format!("cannot create it: {e}"))),
        });
        let _ = std::fs::remove_file(&staged);
        if !linked? {
            let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
            return Self::parse_file(&bytes).map_err(fail);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(key)
    }

    fn parse_file(bytes: &[u8]) -> Result<Self, String> {
        // 44 base64 characters, optionally followed by a line break.
        if !(44..=46).contains(&bytes.len()) {
            return Err(format!(
                "{} bytes, expected one base64 key of 32 bytes (44 characters); refusing to use or replace it",
                bytes.len()
            ));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "not text; expected one base64 key of 32 bytes".to_string())?;
        Self::from_base64(text).map_err(|e| format!("{e}; refusing to use or replace it"))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }

    /// Seals a data key for an environment's row.
    pub(crate) fn wrap(&self, env: Uuid, key: &DataKey) -> Result<String, StoreError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = wrap_aad(env, key.id);
        let ct = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: &key.raw,
                    aad: &aad,
                },
            )
            .map_err(|e| StoreError::encode("a data key", e))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(b64().encode(out))
    }

    /// Opens a data key wrapped by [`MasterKey::wrap`]; `None` when this is
    /// not the master key that wrapped it (or the row was altered).
    pub(crate) fn unwrap_key(&self, env: Uuid, id: u32, wrapped: &str) -> Option<DataKey> {
        let bytes = b64().decode(wrapped).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = bytes.split_at(NONCE_LEN);
        let aad = wrap_aad(env, id);
        let raw = self
            .cipher()
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .ok()?;
        let raw: [u8; 32] = raw.as_slice().try_into().ok()?;
        Some(DataKey::from_raw(id, raw))
    }
}

fn wrap_aad(env: Uuid, id: u32) -> Vec<u8> {
    let mut aad = b"sluice data key\0".to_vec();
    aad.extend_from_slice(env.as_bytes());
    aad.extend_from_slice(&id.to_be_bytes());
    aad
}

/// One environment data key.
#[derive(Clone)]
pub(crate) struct DataKey {
    pub(crate) id: u32,
    raw: [u8; 32],
    cipher: XChaCha20Poly1305,
}

impl DataKey {
    pub(crate) fn generate(id: u32) -> Self {
        Self::from_raw(id, XChaCha20Poly1305::generate_key(&mut OsRng).into())
    }

    fn from_raw(id: u32, raw: [u8; 32]) -> Self {
        DataKey {
            id,
            raw,
            cipher: XChaCha20Poly1305::new(&raw.into()),
        }
    }
}

/// An environment's data keys: the current one seals, any of them opens
/// (during a rotation, values sealed by the previous key are still found).
#[derive(Clone)]
pub(crate) struct Keyring {
    pub(crate) current: u32,
    pub(crate) keys: BTreeMap<u32, DataKey>,
}

impl Keyring {
    pub(crate) fn new(key: DataKey) -> Self {
        Keyring {
            current: key.id,
            keys: BTreeMap::from([(key.id, key)]),
        }
    }

    /// Seals `plaintext`; `aad` says where it will be stored.
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let key = self
            .keys
            .get(&self.current)
            .ok_or_else(|| StoreError::encode("a secret", "the current data key is missing"))?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + 16);
        out.push(SEALED_V1);
        out.extend_from_slice(&key.id.to_be_bytes());
        out.extend_from_slice(&nonce);
        let full_aad = [&out[..5], aad].concat();
        let ct = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &full_aad,
                },
            )
            .map_err(|e| StoreError::encode("a secret", e))?;
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a value sealed by [`Keyring::seal`] with the same `aad`.
    pub(crate) fn open(
        &self,
        aad: &[u8],
        sealed: &[u8],
        what: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let fail = || StoreError::Decrypt { what: what.into() };
        if sealed.len() < HEADER_LEN || sealed[0] != SEALED_V1 {
            return Err(fail());
        }
        let id = u32::from_be_bytes([sealed[1], sealed[2], sealed[3], sealed[4]]);
        let key = self.keys.get(&id).ok_or_else(fail)?;
        let full_aad = [&sealed[..5], aad].concat();
        key.cipher
            .decrypt(
                XNonce::from_slice(&sealed[5..HEADER_LEN]),
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad: &full_aad,
                },
            )
            .map_err(|_| fail())
    }

    /// [`Keyring::seal`] as base64 text, for JSON rows.
    pub(crate) fn seal_text(&self, aad: &[u8], plaintext: &[u8]) -> Result<String, StoreError> {
        Ok(b64().encode(self.seal(aad, plaintext)?))
    }

    /// Opens [`Keyring::seal_text`]'s output.
    pub(crate) fn open_text(
        &self,
        aad: &[u8],
        sealed: &str,
        what: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let bytes = b64()
            .decode(sealed)
            .map_err(|_| StoreError::Decrypt { what: what.into() })?;
        self.open(aad, &bytes, what)
    }
}

/// The key id a sealed value was sealed with.
#[cfg(any(test, feature = "testsuite"))]
pub(crate) fn sealed_key_id(sealed: &[u8]) -> Option<u32> {
    if sealed.len() < HEADER_LEN || sealed[0] != SEALED_V1 {
        return None;
    }
    Some(u32::from_be_bytes([
        sealed[1], sealed[2], sealed[3], sealed[4],
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_are_bound_to_their_place_and_key() {
        let ring = Keyring::new(DataKey::generate(1));
        let sealed = ring.seal(b"here", b"secret").unwrap();
        assert_eq!(ring.open(b"here", &sealed, "x").unwrap(), b"secret");
        assert!(ring.open(b"there", &sealed, "x").is_err());
        assert_eq!(sealed_key_id(&sealed), Some(1));
        let other = Keyring::new(DataKey::generate(1));
        assert!(other.open(b"here", &sealed, "x").is_err());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(ring.open(b"here", &flipped, "x").is_err());
    }

    #[test]
    fn wrapped_keys_open_only_with_their_master_and_env() {
        let master = MasterKey::generate();
        let env = Uuid::new_v4();
        let key = DataKey::generate(3);
        let wrapped = master.wrap(env, &key).unwrap();
        let back = master.unwrap_key(env, 3, &wrapped).unwrap();
        assert_eq!(back.raw, key.raw);
        assert!(master.unwrap_key(Uuid::new_v4(), 3, &wrapped).is_none());
        assert!(master.unwrap_key(env, 4, &wrapped).is_none());
        assert!(MasterKey::generate().unwrap_key(env, 3, &wrapped).is_none());
    }

    #[test]
    fn master_key_text_round_trips_and_bad_text_is_refused() {
        let key = MasterKey::generate();
        assert_eq!(MasterKey::from_base64(&key.to_base64()).unwrap().0, key.0);
        let short = MasterKey::from_base64("AAAA").unwrap_err();
        assert!(short.to_string().contains("3 bytes"), "{short}");
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert_eq!(format!("{key:?}"), "MasterKey(..)");
    }

    #[test]
    fn key_file_is_created_private_then_reused_and_bad_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/master.key");
        let first = MasterKey::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(first.0, again.0);

        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, b"too short").unwrap();
        let err = MasterKey::load_or_create(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.key") && err.contains("9 bytes"), "{err}");
        assert_eq!(std::fs::read(&bad).unwrap(), b"too short", "never replaced");
        std::fs::write(&bad, [b'!'; 44]).unwrap();
        let err = MasterKey::load_or_create(&bad).unwrap_err().to_string();
        assert!(err.contains("base64"), "{err}");
    }
}
