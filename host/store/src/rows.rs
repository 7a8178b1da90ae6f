//! The binary layout of record rows, paging entries and stamps.
//!
//! A full row is a fixed header followed by the record's JSON text:
//!
//! ```text
//! [1: version = 1][16: internal id][8: created_at µs, i64 BE][8: updated_at µs]
//! [1: flags: 1 deleted, 2 pruned][8: deleted_at µs, only when deleted]
//! [8: pruned_at µs, only when pruned][1: hash length][hash]
//! [JSON text of the record, to the end]
//! ```
//!
//! The record lives in its paging entry (`RecordIndex`, keyed by position):
//! `[2: external id length, u16 BE][external id][full row]`, so a page of
//! `GET /records` is one range read. The row by id (`Records`) is the
//! header alone, version byte 2 and no JSON: what a batchSave reads to
//! decide whether a record changed (the hash) and where its entry is (the
//! position), a few dozen bytes instead of the record. Times are kept in
//! microseconds, the precision of the original's database and of cursors.
//!
//! A stamp (`RecordStamps`) is `[flags][job id: u64 BE if flags & 1][sync id
//! bytes if flags & 2, to the end]`: a few bytes, so that an unchanged
//! record costs one tiny write.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sluice_runtime::records::{Position, StoredRecord};
use uuid::Uuid;

use crate::error::StoreError;

/// A full row: header and JSON (inside a paging entry).
const ROW_FULL: u8 = 1;
/// A header-only row (the `Records` table).
const ROW_HEADER: u8 = 2;

/// A record row's header: everything but the JSON.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RowHeader {
    pub internal_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub pruned_at: Option<DateTime<Utc>>,
    pub data_hash: String,
}

impl RowHeader {
    pub fn of(r: &StoredRecord) -> Self {
        RowHeader {
            internal_id: r.internal_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
            deleted_at: r.deleted_at,
            pruned_at: r.pruned_at,
            data_hash: r.data_hash.clone(),
        }
    }

    pub fn position(&self) -> Position {
        Position {
            updated_at: self.updated_at,
            internal_id: self.internal_id,
        }
    }

    pub fn alive(&self) -> bool {
        self.deleted_at.is_none()
    }

    /// The header-only row kept by id.
    pub fn encode_header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(60 + self.data_hash.len());
        self.write(ROW_HEADER, &mut out);
        out
    }

    /// A paging entry: the external id and the full row, `json` already
    /// JSON text.
    pub fn encode_entry_with(&self, external_id: &str, json: &[u8]) -> Vec<u8> {
        let mut out = self.entry_start(external_id, json.len());
        out.extend_from_slice(json);
        out
    }

    /// A paging entry: the external id and the full row, `json` serialised.
    pub fn encode_entry(
        &self,
        external_id: &str,
        json: &Map<String, Value>,
    ) -> Result<Vec<u8>, StoreError> {
        let mut out = self.entry_start(external_id, 1024);
        serde_json::to_writer(&mut out, json).map_err(|e| StoreError::encode("a record", e))?;
        Ok(out)
    }

    fn entry_start(&self, external_id: &str, json_len: usize) -> Vec<u8> {
        // Ids are at most 255 characters (1,020 bytes); a longer one would
        // be cut to what two length bytes can say.
        let id = &external_id.as_bytes()[..external_id.len().min(u16::MAX as usize)];
        let mut out = Vec::with_capacity(62 + id.len() + self.data_hash.len() + json_len);
        out.extend_from_slice(&(id.len() as u16).to_be_bytes());
        out.extend_from_slice(id);
        self.write(ROW_FULL, &mut out);
        out
    }

    fn write(&self, version: u8, out: &mut Vec<u8>) {
        out.push(version);
        out.extend_from_slice(self.internal_id.as_bytes());
        out.extend_from_slice(&self.created_at.timestamp_micros().to_be_bytes());
        out.extend_from_slice(&self.updated_at.timestamp_micros().to_be_bytes());
        out.push(u8::from(self.deleted_at.is_some()) | (u8::from(self.pruned_at.is_some()) << 1));
        for t in [self.deleted_at, self.pruned_at].into_iter().flatten() {
            out.extend_from_slice(&t.timestamp_micros().to_be_bytes());
        }
        // The hash is 32 hex digits; a longer one would be truncated to
        // what one length byte can say.
        let hash = &self.data_hash.as_bytes()[..self.data_hash.len().min(255)];
        out.push(hash.len() as u8);
        out.extend_from_slice(hash);
    }
}

/// Splits a paging entry into the external id and the full row.
pub(crate) fn decode_entry(entry: &[u8]) -> Result<(&str, &[u8]), StoreError> {
    let bad = |why| StoreError::corrupt("record entry", why);
    let mut r = Reader(entry);
    let len = r.take(2).ok_or_else(|| bad("too short"))?;
    let len = u16::from_be_bytes([len[0], len[1]]) as usize;
    let id = r.take(len).ok_or_else(|| bad("too short"))?;
    let id = std::str::from_utf8(id).map_err(|_| bad("id not UTF-8"))?;
    if r.0.first() != Some(&ROW_FULL) {
        return Err(bad("no full row"));
    }
    Ok((id, r.0))
}

/// Whether a `Records` row is a header alone (the layout since store
/// format 2) rather than a full row (format 1).
pub(crate) fn is_header_only(row: &[u8]) -> bool {
    row.first() == Some(&ROW_HEADER)
}

/// Decodes a record's JSON text.
pub(crate) fn decode_json(json: &[u8]) -> Result<Map<String, Value>, StoreError> {
    crate::decode(json).map_err(|e| StoreError::corrupt("record JSON", e))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn time(&mut self) -> Option<DateTime<Utc>> {
        let micros = i64::from_be_bytes(self.take(8)?.try_into().ok()?);
        DateTime::from_timestamp_micros(micros)
    }
}

/// Splits a row (full or header-only) into its header and JSON text (empty
/// for a header-only row).
pub(crate) fn decode_header(row: &[u8]) -> Result<(RowHeader, &[u8]), StoreError> {
    decode_header_opt(row).ok_or_else(|| StoreError::corrupt("record row", "bad header"))
}

fn decode_header_opt(row: &[u8]) -> Option<(RowHeader, &[u8])> {
    let mut r = Reader(row);
    if !matches!(r.take(1)?, [ROW_FULL] | [ROW_HEADER]) {
        return None;
    }
    let internal_id = Uuid::from_slice(r.take(16)?).ok()?;
    let created_at = r.time()?;
    let updated_at = r.time()?;
    let flags = r.take(1)?[0];
    if flags > 3 {
        return None;
    }
    let deleted_at = if flags & 1 == 1 {
        Some(r.time()?)
    } else {
        None
    };
    let pruned_at = if flags & 2 == 2 {
        Some(r.time()?)
    } else {
        None
    };
    let hash_len = r.take(1)?[0] as usize;
    let data_hash = std::str::from_utf8(r.take(hash_len)?).ok()?.to_string();
    Some((
        RowHeader {
            internal_id,
            created_at,
            updated_at,
            deleted_at,
            pruned_at,
            data_hash,
        },
        r.0,
    ))
}

/// A row as a [`StoredRecord`]. With `with_json` false the record's `json`
/// is left empty (for a header-only row, or writes that replace the JSON
/// without reading it).
pub(crate) fn decode_record(
    external_id: String,
    row: &[u8],
    stamp: Option<&[u8]>,
    with_json: bool,
) -> Result<StoredRecord, StoreError> {
    let (h, json) = decode_header(row)?;
    let json = if with_json {
        decode_json(json)?
    } else {
        Map::new()
    };
    let stamp = stamp.map(decode_stamp).transpose()?.unwrap_or_default();
    Ok(StoredRecord {
        external_id,
        internal_id: h.internal_id,
        json,
        data_hash: h.data_hash,
        created_at: h.created_at,
        updated_at: h.updated_at,
        deleted_at: h.deleted_at,
        pruned_at: h.pruned_at,
        sync_id: stamp.sync_id,
        job_id: stamp.job_id,
    })
}

/// A stored record with its JSON as the stored text, for responses that
/// only pass it on (`GET /records`): no parsing, no re-serialising.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    pub external_id: String,
    pub internal_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub pruned_at: Option<DateTime<Utc>>,
    pub data_hash: String,
    /// The stored paging entry; the record's JSON starts at `json_start`.
    row: Vec<u8>,
    json_start: usize,
}

impl RawRecord {
    /// The record, a JSON object in compact `serde_json` text, keys in the
    /// order saved.
    pub fn json(&self) -> &[u8] {
        &self.row[self.json_start..]
    }

    pub fn position(&self) -> Position {
        Position {
            updated_at: self.updated_at,
            internal_id: self.internal_id,
        }
    }

    /// The record with its JSON decoded (and no stamps: they are not read
    /// for raw pages).
    pub fn to_stored(&self) -> Result<StoredRecord, StoreError> {
        Ok(StoredRecord {
            external_id: self.external_id.clone(),
            internal_id: self.internal_id,
            json: crate::decode(self.json()).map_err(|e| StoreError::corrupt("record JSON", e))?,
            data_hash: self.data_hash.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted_at: self.deleted_at,
            pruned_at: self.pruned_at,
            sync_id: None,
            job_id: None,
        })
    }

    /// Appends the record as the API returns it — byte for byte what
    /// `serde_json::to_vec(&record.to_view())` gives — by writing
    /// `_nango_metadata` into the stored text rather than decoding it.
    pub fn write_view(&self, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let json = self.json();
        let body = json
            .strip_prefix(b"{")
            .and_then(|j| j.strip_suffix(b"}"))
            .ok_or_else(|| StoreError::corrupt("record JSON", "not an object"))?;
        // A record that carries its own `_nango_metadata` key has it
        // replaced in place, and a pruned one gets its id back: leave
        // those rare cases to the general path.
        if self.pruned_at.is_some() || has_metadata_key(body) {
            let view = self.to_stored()?.to_view();
            return serde_json::to_writer(out, &view)
                .map_err(|e| StoreError::encode("a record view", e));
        }
        // The metadata's strings (timestamps, base64, fixed words) need no
        // escaping.
        let stored = |t: DateTime<Utc>| sluice_runtime::records::timestamp(t);
        // Formatting times is most of this function's cost: the modified
        // time is formatted once and reused for the first-seen time when
        // they are equal (every added record) and for the cursor, which is
        // `encode_cursor`'s `base64("<last_modified_at>||<internal id>")`.
        let modified = stored(self.updated_at);
        let created = if self.created_at == self.updated_at {
            None
        } else {
            Some(stored(self.created_at))
        };
        out.reserve(json.len() + 300);
        out.push(b'{');
        out.extend_from_slice(body);
        if !body.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"_nango_metadata\":{\"first_seen_at\":\"");
        out.extend_from_slice(created.as_deref().unwrap_or(&modified).as_bytes());
        out.extend_from_slice(b"\",\"last_modified_at\":\"");
        out.extend_from_slice(modified.as_bytes());
        out.extend_from_slice(b"\",\"last_action\":\"");
        out.extend_from_slice(self.last_action().as_bytes());
        out.extend_from_slice(b"\",\"deleted_at\":");
        match self.deleted_at {
            Some(t) => {
                out.push(b'"');
                out.extend_from_slice(stored(t).as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        // Not pruned: pruned records take the general path.
        out.extend_from_slice(b",\"pruned_at\":null,\"cursor\":\"");
        let cursor = format!("{modified}||{}", self.internal_id);
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(cursor)
                .as_bytes(),
        );
        out.extend_from_slice(b"\"}}");
        Ok(())
    }

    /// `ADDED`, `UPDATED` or `DELETED`, as `StoredRecord::last_action`.
    pub fn last_action(&self) -> &'static str {
        if self.deleted_at.is_some() {
            "DELETED"
        } else if self.created_at == self.updated_at {
            "ADDED"
        } else {
            "UPDATED"
        }
    }
}

/// Whether a record's JSON has its own `_nango_metadata` key (a finder
/// built once: building one per record cost more than the search).
fn has_metadata_key(json: &[u8]) -> bool {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"_nango_metadata\""));
    FINDER.find(json).is_some()
}

/// A paging entry as a [`RawRecord`].
pub(crate) fn decode_raw(entry: Vec<u8>) -> Result<RawRecord, StoreError> {
    let (id, row) = decode_entry(&entry)?;
    let (h, json) = decode_header(row)?;
    let external_id = id.to_string();
    let json_start = entry.len() - json.len();
    Ok(RawRecord {
        external_id,
        internal_id: h.internal_id,
        created_at: h.created_at,
        updated_at: h.updated_at,
        deleted_at: h.deleted_at,
        pruned_at: h.pruned_at,
        data_hash: h.data_hash,
        row: entry,
        json_start,
    })
}

/// Who last wrote a row (`sync_id`, `sync_job_id` in the original).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub sync_id: Option<String>,
    pub job_id: Option<u64>,
}

impl Stamp {
    /// The stamp of job `job` of sync `sync_id`.
    pub fn job(sync_id: &str, job: u64) -> Self {
        Stamp {
            sync_id: Some(sync_id.to_string()),
            job_id: Some(job),
        }
    }

    pub fn of(r: &StoredRecord) -> Self {
        Stamp {
            sync_id: r.sync_id.clone(),
            job_id: r.job_id,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8];
        if let Some(job) = self.job_id {
            out[0] |= 1;
            out.extend_from_slice(&job.to_be_bytes());
        }
        if let Some(sync) = &self.sync_id {
            out[0] |= 2;
            out.extend_from_slice(sync.as_bytes());
        }
        out
    }
}

/// A list of external ids (a `RecordSeen` entry): each as its length
/// (u16 BE; ids are at most 255 characters) and its bytes.
pub(crate) fn encode_ids<'a>(ids: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for id in ids {
        let len = u16::try_from(id.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&id[..usize::from(len)]);
    }
    out
}

pub(crate) fn decode_ids(mut bytes: &[u8]) -> Result<Vec<&[u8]>, StoreError> {
    let bad = || StoreError::corrupt("seen records entry", "bad layout");
    let mut ids = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<2>().ok_or_else(bad)?;
        let len = usize::from(u16::from_be_bytes(*len));
        let id = rest.get(..len).ok_or_else(bad)?;
        ids.push(id);
        bytes = &rest[len..];
    }
    Ok(ids)
}

pub(crate) fn decode_stamp(bytes: &[u8]) -> Result<Stamp, StoreError> {
    let bad = || StoreError::corrupt("record stamp", "bad layout");
    let mut r = Reader(bytes);
    let flags = r.take(1).ok_or_else(bad)?[0];
    let job_id = if flags & 1 != 0 {
        Some(u64::from_be_bytes(
            r.take(8).ok_or_else(bad)?.try_into().map_err(|_| bad())?,
        ))
    } else {
        None
    };
    let sync_id = if flags & 2 != 0 {
        Some(String::from_utf8(r.0.to_vec()).map_err(|_| bad())?)
    } else if r.0.is_empty() {
        None
    } else {
        return Err(bad());
    };
    Ok(Stamp { sync_id, job_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_with_and_without_json() {
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let json: Map<String, Value> =
            serde_json::from_str(r#"{"id":"1","b":[1,2],"a":{"z":1,"y":2}}"#).unwrap();
        let record = StoredRecord {
            external_id: "1".into(),
            internal_id: Uuid::new_v4(),
            json: json.clone(),
            data_hash: "0123456789abcdef0123456789abcdef".into(),
            created_at: t,
            updated_at: t,
            deleted_at: Some(t),
            pruned_at: Some(t + chrono::Duration::microseconds(5)),
            sync_id: Some("sync-1".into()),
            job_id: Some(7),
        };
        let header = RowHeader::of(&record);
        let entry = header.encode_entry("1", &record.json).unwrap();
        let (id, row) = decode_entry(&entry).unwrap();
        assert_eq!(id, "1");
        let stamp = Stamp::of(&record).encode();
        let back = decode_record("1".into(), row, Some(&stamp), true).unwrap();
        assert_eq!(back, record);
        assert_eq!(
            serde_json::to_string(&back.json).unwrap(),
            serde_json::to_string(&json).unwrap(),
            "key order is kept"
        );
        assert_eq!(
            entry,
            header.encode_entry_with("1", &serde_json::to_vec(&json).unwrap())
        );
        let raw = decode_raw(entry.clone()).unwrap();
        assert_eq!(raw.json(), serde_json::to_vec(&json).unwrap());
        assert_eq!(raw.to_stored().unwrap().json, json);

        let header_row = header.encode_header();
        assert!(is_header_only(&header_row) && !is_header_only(row));
        let header_only = decode_record("1".into(), &header_row, None, false).unwrap();
        assert!(header_only.json.is_empty());
        assert_eq!(header_only.position(), record.position());
        assert_eq!(header_only.data_hash, record.data_hash);
        assert_eq!(
            (header_only.deleted_at, header_only.pruned_at),
            (record.deleted_at, record.pruned_at)
        );
        assert_eq!((header_only.sync_id, header_only.job_id), (None, None));
        assert!(decode_header(&row[..20]).is_err());
        assert!(decode_entry(&entry[..3]).is_err());
        assert!(decode_entry(&header_row).is_err());
    }

    #[test]
    fn stamps_round_trip() {
        for stamp in [
            Stamp::default(),
            Stamp {
                sync_id: Some("s".into()),
                job_id: None,
            },
            Stamp {
                sync_id: None,
                job_id: Some(u64::MAX),
            },
            Stamp {
                sync_id: Some(String::new()),
                job_id: Some(1),
            },
        ] {
            assert_eq!(decode_stamp(&stamp.encode()).unwrap(), stamp);
        }
        assert!(decode_stamp(&[1, 0]).is_err());
        assert!(decode_stamp(&[0, 5]).is_err());
    }
}
