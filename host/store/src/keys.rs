//! Key encoding and the key layout of every table.
//!
//! A key is a sequence of components. Every component but the last is
//! written as a big-endian `u32` length followed by its bytes, so two
//! different sequences of strings never encode to the same bytes (`"a|b"` +
//! `"c"` vs `"a"` + `"b|c"`) and a key made of whole components is a prefix
//! of exactly the keys that continue it. The last component may be written
//! raw ([`KeyBuf::tail`]): nothing follows it, so it cannot be confused, and
//! raw bytes keep the natural string order and string-prefix scans (document
//! keys, record ids).
//!
//! Every key of per-environment data starts with the environment's id, so
//! a scan or a delete built from an [`crate::EnvStore`] cannot reach another
//! environment's rows.
//!
//! | table | key | value |
//! |---|---|---|
//! | `Meta` | `"format"` | format marker ([`crate::store`]) |
//! | `Environments` | `env` | JSON: name, secret-key hash, wrapped data keys |
//! | `Integrations` | `env · unique_key` | JSON, secrets sealed |
//! | `Connections` | `env · pck · cid` | JSON, credentials sealed |
//! | `Variables` | `env` | sealed JSON list of `[name, value]` |
//! | `Variables` | `env · "secret" · name` | a sealed secret of the environment (its secret key, its webhook signing secret) |
//! | `Records` | `env · pck · cid · model ·` raw external id | row ([`crate::rows`]) |
//! | `RecordIndex` | `env · pck · cid · model ·` updated_at (8 bytes) internal id (16 bytes) | external id |
//! | `RecordStamps` | `env · pck · cid · model ·` raw external id | stamp ([`crate::rows`]) |
//! | `RecordCounts` | `env · pck · cid ·` raw model | `u64` BE non-deleted records, then the syncs that stamp its records (`crate::records`) |
//! | `RecordSeen` | `env · pck · cid · model · sync id · job id (8 bytes) ·` sequence number (8 bytes) | external ids ([`crate::rows`]) |
//! | `Docs` | `env · "e" · collection ·` raw key, or `env · "c" · pck · cid · collection ·` raw key | JSON |
//! | `Blobs` | SHA-256 (32 bytes) | the bytes |
//!
//! (`·` separates length-prefixed components; `env` is the environment's
//! UUID as 16 bytes.)

use chrono::{DateTime, Utc};
use sluice_runtime::records::{ConnectionRef, Position};
use uuid::Uuid;

/// A key under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyBuf(Vec<u8>);

impl KeyBuf {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a length-prefixed component.
    pub fn part(mut self, bytes: impl AsRef<[u8]>) -> Self {
        let bytes = bytes.as_ref();
        // Components are names and ids (at most a few hundred bytes); a
        // component of 4 GiB cannot reach here through the store's API.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    /// Appends the raw last component.
    pub fn tail(mut self, bytes: impl AsRef<[u8]>) -> Vec<u8> {
        self.0.extend_from_slice(bytes.as_ref());
        self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// The key prefix of everything in an environment.
pub fn env(env: Uuid) -> KeyBuf {
    KeyBuf::new().part(env.as_bytes())
}

/// `env · pck · cid`: a connection's row, and the prefix of all its records.
pub fn connection(env_id: Uuid, pck: &str, cid: &str) -> KeyBuf {
    env(env_id).part(pck).part(cid)
}

/// `env · pck · cid · model`: the prefix of one model's records (a
/// records "scope", the unit the original locks).
pub fn scope(env_id: Uuid, conn: &ConnectionRef, model: &str) -> KeyBuf {
    connection(env_id, &conn.provider_config_key, &conn.connection_id).part(model)
}

/// Microseconds since the epoch as 8 bytes that sort like the times
/// (the sign bit flipped, big-endian), so `RecordIndex` keys sort by
/// `(updated_at, internal_id)` exactly as [`Position`]s do. Records keep
/// microsecond precision (`sluice_runtime::records::now`).
pub fn time_bytes(t: DateTime<Utc>) -> [u8; 8] {
    ((t.timestamp_micros() as u64) ^ (1 << 63)).to_be_bytes()
}

/// The length of a position at the end of a `RecordIndex` key.
pub const POSITION_LEN: usize = 24;

/// A position as the last [`POSITION_LEN`] bytes of its `RecordIndex` key.
pub fn index_key_tail(p: &Position) -> [u8; POSITION_LEN] {
    let mut tail = [0u8; POSITION_LEN];
    tail[..8].copy_from_slice(&time_bytes(p.updated_at));
    tail[8..].copy_from_slice(p.internal_id.as_bytes());
    tail
}

/// The `RecordIndex` key of a position within a scope.
pub fn index_key(scope: &KeyBuf, p: &Position) -> Vec<u8> {
    let mut key = Vec::with_capacity(scope.as_bytes().len() + POSITION_LEN);
    key.extend_from_slice(scope.as_bytes());
    key.extend_from_slice(&index_key_tail(p));
    key
}

/// The position a `RecordIndex` key (with its scope prefix) stands for.
pub fn index_position(scope: &KeyBuf, key: &[u8]) -> Option<Position> {
    let rest = key.strip_prefix(scope.as_bytes())?;
    if rest.len() != POSITION_LEN {
        return None;
    }
    let (time, id) = rest.split_at(8);
    let micros = (u64::from_be_bytes(time.try_into().ok()?) ^ (1 << 63)) as i64;
    Some(Position {
        updated_at: DateTime::from_timestamp_micros(micros)?,
        internal_id: Uuid::from_slice(id).ok()?,
    })
}

/// The key everything at or after `t` in a scope's index sorts after: the
/// scope and the time with no id. A scan "strictly after" it starts at the
/// first record with `updated_at >= t`.
pub fn index_time_floor(scope: &KeyBuf, t: DateTime<Utc>) -> Vec<u8> {
    let mut key = scope.as_bytes().to_vec();
    key.extend_from_slice(&time_bytes(t));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_cannot_collide() {
        let a = KeyBuf::new().part("a|b").part("c");
        let b = KeyBuf::new().part("a").part("b|c");
        assert_ne!(a, b);
        let c = KeyBuf::new().part("ab").tail("c");
        let d = KeyBuf::new().part("a").tail("bc");
        assert_ne!(c, d);
    }

    #[test]
    fn a_whole_component_prefix_matches_only_its_continuations() {
        let pck_a = KeyBuf::new().part("a");
        let under_ab = KeyBuf::new().part("ab").part("x").into_bytes();
        assert!(!under_ab.starts_with(pck_a.as_bytes()));
        let under_a = KeyBuf::new().part("a").part("x").into_bytes();
        assert!(under_a.starts_with(pck_a.as_bytes()));
    }

    #[test]
    fn index_keys_sort_like_positions_and_round_trip() {
        let scope = KeyBuf::new().part("s");
        let at = |micros: i64, id: u128| Position {
            updated_at: DateTime::from_timestamp_micros(micros).unwrap(),
            internal_id: Uuid::from_u128(id),
        };
        let mut positions = [
            at(-5, 1),
            at(0, 2),
            at(1_700_000_000_000_000, 1),
            at(1_700_000_000_000_000, 2),
            at(1_700_000_000_000_001, 0),
        ];
        positions.sort();
        let keys: Vec<_> = positions.iter().map(|p| index_key(&scope, p)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for (p, k) in positions.iter().zip(&keys) {
            assert_eq!(index_position(&scope, k).as_ref(), Some(p));
        }
        let floor = index_time_floor(&scope, positions[2].updated_at);
        assert!(floor.as_slice() < keys[2].as_slice() && floor.as_slice() > keys[1].as_slice());
    }
}
