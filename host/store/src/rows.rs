//! The binary layout of record rows and stamps.
//!
//! A record row is a fixed header followed by the record's JSON text:
//!
//! ```text
//! [1: version = 1][16: internal id][8: created_at µs, i64 BE][8: updated_at µs]
//! [1: deleted? 0|1][8: deleted_at µs, only when deleted][1: hash length][hash]
//! [JSON text of the record, to the end]
//! ```
//!
//! The header decodes without touching the JSON, which is most of a row:
//! a batchSave only needs the header of the rows it replaces (the hash says
//! whether a record changed), `track_deletes` and paging filters rewrite or
//! test the header and keep the JSON bytes as they are. Times are kept in
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

const ROW_V1: u8 = 1;

/// A record row's header: everything but the JSON.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RowHeader {
    pub internal_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub data_hash: String,
}

impl RowHeader {
    pub fn of(r: &StoredRecord) -> Self {
        RowHeader {
            internal_id: r.internal_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
            deleted_at: r.deleted_at,
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

    /// Writes the header and then `json` (already JSON text).
    pub fn encode_with(&self, json: &[u8]) -> Vec<u8> {
        let mut out = self.start(json.len());
        out.extend_from_slice(json);
        out
    }

    /// Writes the header and then `json` serialised.
    pub fn encode_json(&self, json: &Map<String, Value>) -> Result<Vec<u8>, StoreError> {
        let mut out = self.start(1024);
        serde_json::to_writer(&mut out, json).map_err(|e| StoreError::encode("a record", e))?;
        Ok(out)
    }

    fn start(&self, json_len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(60 + self.data_hash.len() + json_len);
        out.push(ROW_V1);
        out.extend_from_slice(self.internal_id.as_bytes());
        out.extend_from_slice(&self.created_at.timestamp_micros().to_be_bytes());
        out.extend_from_slice(&self.updated_at.timestamp_micros().to_be_bytes());
        match self.deleted_at {
            Some(t) => {
                out.push(1);
                out.extend_from_slice(&t.timestamp_micros().to_be_bytes());
            }
            None => out.push(0),
        }
        // md5 hex is 32 bytes; a longer hash would be truncated to what one
        // length byte can say.
        let hash = &self.data_hash.as_bytes()[..self.data_hash.len().min(255)];
        out.push(hash.len() as u8);
        out.extend_from_slice(hash);
        out
    }
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

/// Splits a row into its header and JSON text.
pub(crate) fn decode_header(row: &[u8]) -> Result<(RowHeader, &[u8]), StoreError> {
    decode_header_opt(row).ok_or_else(|| StoreError::corrupt("record row", "bad header"))
}

fn decode_header_opt(row: &[u8]) -> Option<(RowHeader, &[u8])> {
    let mut r = Reader(row);
    if r.take(1)? != [ROW_V1] {
        return None;
    }
    let internal_id = Uuid::from_slice(r.take(16)?).ok()?;
    let created_at = r.time()?;
    let updated_at = r.time()?;
    let deleted_at = match r.take(1)? {
        [0] => None,
        [1] => Some(r.time()?),
        _ => return None,
    };
    let hash_len = r.take(1)?[0] as usize;
    let data_hash = std::str::from_utf8(r.take(hash_len)?).ok()?.to_string();
    Some((
        RowHeader {
            internal_id,
            created_at,
            updated_at,
            deleted_at,
            data_hash,
        },
        r.0,
    ))
}

/// A row as a [`StoredRecord`]. With `with_json` false the record's `json`
/// is left empty (for writes that replace it without reading it).
pub(crate) fn decode_record(
    external_id: String,
    row: &[u8],
    stamp: Option<&[u8]>,
    with_json: bool,
) -> Result<StoredRecord, StoreError> {
    let (h, json) = decode_header(row)?;
    let json = if with_json {
        serde_json::from_slice(json).map_err(|e| StoreError::corrupt("record JSON", e))?
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
    pub data_hash: String,
    /// The stored row; the record's JSON starts at `json_start`.
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
            json: serde_json::from_slice(self.json())
                .map_err(|e| StoreError::corrupt("record JSON", e))?,
            data_hash: self.data_hash.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted_at: self.deleted_at,
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
        // replaced in place; leave that rare case to the general path.
        if has_metadata_key(body) {
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
        out.reserve(json.len() + 220);
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
        out.extend_from_slice(b",\"cursor\":\"");
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

/// A row as a [`RawRecord`].
pub(crate) fn decode_raw(external_id: String, row: Vec<u8>) -> Result<RawRecord, StoreError> {
    let (h, json) = decode_header(&row)?;
    let json_start = row.len() - json.len();
    Ok(RawRecord {
        external_id,
        internal_id: h.internal_id,
        created_at: h.created_at,
        updated_at: h.updated_at,
        deleted_at: h.deleted_at,
        data_hash: h.data_hash,
        row,
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
            sync_id: Some("sync-1".into()),
            job_id: Some(7),
        };
        let row = RowHeader::of(&record).encode_json(&record.json).unwrap();
        let stamp = Stamp::of(&record).encode();
        let back = decode_record("1".into(), &row, Some(&stamp), true).unwrap();
        assert_eq!(back, record);
        assert_eq!(
            serde_json::to_string(&back.json).unwrap(),
            serde_json::to_string(&json).unwrap(),
            "key order is kept"
        );
        let header_only = decode_record("1".into(), &row, None, false).unwrap();
        assert!(header_only.json.is_empty());
        assert_eq!((header_only.sync_id, header_only.job_id), (None, None));
        assert!(decode_header(&row[..20]).is_err());
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
