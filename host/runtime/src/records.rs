//! The records cache: the storage trait and the original's record semantics.
//!
//! The semantics (what counts as added, updated, unchanged or deleted, how
//! duplicates, undeletes, deep merges and merging strategies behave) are plain
//! functions over [`StoredRecord`], so every backend applies the same rules;
//! a backend only stores rows and applies a chunk atomically.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Timelike as _, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// Records are written in chunks of this many, each committed on its own.
pub const CHUNK_SIZE: usize = 1000;
/// Longest record id, as in the original (a varchar(255)).
pub const MAX_ID_LEN: usize = 255;
/// `getRecordsByIds` looks up at most this many ids per store call.
pub const IDS_PER_LOOKUP: usize = 100;

/// The connection a record belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnectionRef {
    pub provider_config_key: String,
    pub connection_id: String,
}

/// Who is writing: stamps rows so `track_deletes` can find stale ones.
#[derive(Debug, Clone, Default)]
pub struct WriteContext {
    pub sync_id: Option<String>,
    pub job_id: Option<u64>,
    /// The writes are a sync job's run, one at a time per sync and
    /// connection, whose end the server settles (`track_deletes`, then
    /// forgetting what the run saw): a store may note the records a run
    /// saved unchanged per chunk and stamp them only when `track_deletes`
    /// needs it. False for everything else (a webhook script's saves).
    pub job_run: bool,
    /// The most bytes a record may have after a batchUpdate's merge
    /// (serialised): without it, updates adding a key each time grow one
    /// record without end. The server and the CLI pass the environment's
    /// `max_payload_bytes`, what one batchSave can write at most.
    pub max_record_bytes: Option<usize>,
}

/// A position in the `(updated_at, internal id)` order of a model's records.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub updated_at: DateTime<Utc>,
    pub internal_id: Uuid,
}

/// `setMergingStrategy`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Merging {
    /// Writes always apply.
    #[default]
    Override,
    /// Updates apply only to rows at or before `cursor`; inserts always apply.
    IgnoreIfModifiedAfter { cursor: Option<Position> },
}

/// What one write did, per model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub added: u64,
    pub updated: u64,
    pub deleted: u64,
    pub unchanged: u64,
}

impl Changes {
    pub fn add(&mut self, other: Changes) {
        self.added += other.added;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.unchanged += other.unchanged;
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub external_id: String,
    pub internal_id: Uuid,
    pub json: Map<String, Value>,
    pub data_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// When `PATCH /records/prune` emptied its payload (`json` is then
    /// empty); any write of the record fills it again.
    #[serde(default)]
    pub pruned_at: Option<DateTime<Utc>>,
    pub sync_id: Option<String>,
    pub job_id: Option<u64>,
}

impl StoredRecord {
    pub fn position(&self) -> Position {
        Position {
            updated_at: self.updated_at,
            internal_id: self.internal_id,
        }
    }

    /// `ADDED`, `UPDATED` or `DELETED`, as `_nango_metadata.last_action`.
    pub fn last_action(&self) -> &'static str {
        if self.deleted_at.is_some() {
            "DELETED"
        } else if self.created_at == self.updated_at {
            "ADDED"
        } else {
            "UPDATED"
        }
    }

    /// The record as the API and `getRecordsByIds` return it.
    /// A pruned record is its id and metadata.
    pub fn to_view(&self) -> Value {
        let mut json = self.json.clone();
        if self.pruned_at.is_some() {
            json.insert("id".into(), Value::String(self.external_id.clone()));
        }
        json.insert(
            "_nango_metadata".into(),
            serde_json::json!({
                "first_seen_at": timestamp(self.created_at),
                "last_modified_at": timestamp(self.updated_at),
                "last_action": self.last_action(),
                "deleted_at": self.deleted_at.map(timestamp),
                "pruned_at": self.pruned_at.map(timestamp),
                "cursor": encode_cursor(&self.position()),
            }),
        );
        Value::Object(json)
    }
}

/// The current time at the precision records keep (microseconds, as the
/// original's database does), so cursors round-trip exactly.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

/// The original's timestamp form: `2024-01-01T10:00:00.123456+00:00`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// The opaque records cursor: base64 of `<last_modified_at>||<internal id>`.
pub fn encode_cursor(p: &Position) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!(
        "{}||{}",
        timestamp(p.updated_at),
        p.internal_id
    ))
}

/// Decodes a cursor made by [`encode_cursor`].
pub fn decode_cursor(cursor: &str) -> Option<Position> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (at, id) = text.split_once("||")?;
    Some(Position {
        updated_at: DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc),
        internal_id: Uuid::parse_str(id).ok()?,
    })
}

/// Errors of record writes and reads.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(
        "record at index {index} has no valid `id`: it must be a string of 1 to 255 characters or a number"
    )]
    InvalidId { index: usize },
    #[error("record at index {index} is not a JSON object")]
    NotAnObject { index: usize },
    #[error(
        "record `{id}` would have more than {max} bytes after this batchUpdate (a record may have at most max_payload_bytes); nothing of its chunk was written"
    )]
    TooLarge { id: String, max: usize },
    #[error("records store failed: {0}")]
    Backend(String),
}

/// The record id as the original keys it: `String(id)` without NUL bytes.
pub fn external_id(record: &Map<String, Value>, index: usize) -> Result<String, RecordError> {
    let id = match record.get("id") {
        Some(Value::String(s)) => s.replace('\0', ""),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(RecordError::InvalidId { index }),
    };
    if id.is_empty() || id.chars().count() > MAX_ID_LEN {
        return Err(RecordError::InvalidId { index });
    }
    Ok(id)
}

/// The hash of the record's JSON text (key order matters, as with
/// `JSON.stringify`): [`text_hash`] of its compact serialisation.
pub fn data_hash(record: &Map<String, Value>) -> String {
    let mut text = Vec::with_capacity(1024);
    data_hash_with(record, &mut text)
}

/// [`data_hash`] serialising into `buf` (cleared first), so a batch reuses
/// one buffer.
fn data_hash_with(record: &Map<String, Value>, buf: &mut Vec<u8>) -> String {
    buf.clear();
    // Writing a map of JSON values into memory cannot fail.
    let _ = serde_json::to_writer(&mut *buf, record);
    text_hash(buf)
}

/// The hash that decides whether a saved record changed: the first 128
/// bits of SHA-256 of its JSON text, as 32 hex digits. The original uses
/// md5 for the same decision; SHA-256 runs several times faster on CPUs
/// with SHA extensions and is not open to crafted collisions.
pub fn text_hash(text: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(text);
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

/// The stable internal id of `(connection, model, id)`.
pub fn internal_id(conn: &ConnectionRef, model: &str, external_id: &str) -> Uuid {
    let name = format!(
        "{}\u{0}{}\u{0}{model}\u{0}{external_id}",
        conn.provider_config_key, conn.connection_id
    );
    Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes())
}

/// A record ready to write, with its id and hash computed once.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub external_id: String,
    pub json: Map<String, Value>,
    pub hash: String,
}

/// Turns a batch into keyed records; the first occurrence of an id wins
/// (the original's rule within a chunk). Returns the duplicates dropped.
pub fn prepare_chunk(
    records: Vec<Map<String, Value>>,
    first_index: usize,
) -> Result<(Vec<Incoming>, Vec<String>), RecordError> {
    let mut buf = Vec::with_capacity(2048);
    let hashed = records
        .into_iter()
        .map(|json| {
            let hash = data_hash_with(&json, &mut buf);
            (json, hash)
        })
        .collect();
    prepare_hashed_chunk(hashed, first_index, false)
}

/// [`prepare_chunk`] of records whose [`data_hash`] is known.
/// A duplicate id keeps its first record, or (`keep_last`, the original
/// CLI's dry run) its last, where the last is.
pub fn prepare_hashed_chunk(
    records: Vec<(Map<String, Value>, String)>,
    first_index: usize,
    keep_last: bool,
) -> Result<(Vec<Incoming>, Vec<String>), RecordError> {
    let mut ids = Vec::with_capacity(records.len());
    for (i, (json, _)) in records.iter().enumerate() {
        ids.push(external_id(json, first_index + i)?);
    }
    // With `keep_last`, each id's last position.
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    if keep_last {
        for (i, id) in ids.iter().enumerate() {
            last.insert(id.as_str(), i);
        }
    }
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    let mut out: Vec<Incoming> = Vec::with_capacity(records.len());
    let mut duplicates = Vec::new();
    for (i, ((json, hash), external_id)) in records.into_iter().zip(ids.iter()).enumerate() {
        let kept = if keep_last {
            last.get(external_id.as_str()) == Some(&i)
        } else {
            seen.insert(external_id.as_str())
        };
        if !kept {
            duplicates.push(external_id.clone());
            continue;
        }
        let external_id = external_id.clone();
        out.push(Incoming {
            external_id,
            json,
            hash,
        });
    }
    Ok((out, duplicates))
}

fn allowed_by(merging: &Merging, existing: &StoredRecord) -> bool {
    match merging {
        Merging::Override => true,
        Merging::IgnoreIfModifiedAfter { cursor: None } => true,
        Merging::IgnoreIfModifiedAfter { cursor: Some(c) } => existing.position() <= *c,
    }
}

/// The outcome of one record's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Added,
    Updated,
    Deleted,
    Unchanged,
    /// Skipped: an unknown id for an update, or blocked by the merging strategy.
    Skipped,
}

impl Changes {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Added => self.added += 1,
            Outcome::Updated => self.updated += 1,
            Outcome::Deleted => self.deleted += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Skipped => {}
        }
    }
}

/// batchSave of one record.
pub fn apply_save(
    conn: &ConnectionRef,
    model: &str,
    existing: Option<StoredRecord>,
    incoming: Incoming,
    ctx: &WriteContext,
    merging: &Merging,
    now: DateTime<Utc>,
) -> (Option<StoredRecord>, Outcome) {
    let stamp = |mut r: StoredRecord| {
        r.sync_id = ctx.sync_id.clone();
        r.job_id = ctx.job_id;
        r
    };
    match existing {
        None => (
            Some(stamp(StoredRecord {
                internal_id: internal_id(conn, model, &incoming.external_id),
                external_id: incoming.external_id,
                json: incoming.json,
                data_hash: incoming.hash,
                created_at: now,
                updated_at: now,
                deleted_at: None,
                pruned_at: None,
                sync_id: None,
                job_id: None,
            })),
            Outcome::Added,
        ),
        Some(old) if !allowed_by(merging, &old) => (None, Outcome::Skipped),
        Some(mut r) if r.deleted_at.is_some() => {
            r.json = incoming.json;
            r.data_hash = incoming.hash;
            r.created_at = now;
            r.updated_at = now;
            r.deleted_at = None;
            (Some(stamp(r)), Outcome::Added)
        }
        Some(mut old) if old.data_hash == incoming.hash => {
            // A pruned record gets its payload back, times unchanged.
            if old.pruned_at.is_some() {
                old.json = incoming.json;
            }
            (Some(stamp(old)), Outcome::Unchanged)
        }
        Some(mut r) => {
            r.json = incoming.json;
            r.data_hash = incoming.hash;
            r.updated_at = now;
            (Some(stamp(r)), Outcome::Updated)
        }
    }
}

/// When a record passed to batchDelete says it was deleted (its
/// `deletedAt`), read as the original reads it (`dayjs(deletedAt)`): a
/// time with an offset (`Z`, `+02:00` or `+0200`), a date or a time
/// without one (UTC, the server's zone), or epoch milliseconds. `None`
/// for anything else (the delete is then dated now).
pub fn deleted_at_of(value: &Value) -> Option<DateTime<Utc>> {
    use chrono::{NaiveDate, NaiveDateTime};
    match value {
        Value::Number(n) => {
            let ms = n.as_f64()?;
            if !ms.is_finite() || ms.abs() > 8.64e15 {
                return None;
            }
            DateTime::from_timestamp_millis(ms as i64)
        }
        Value::String(s) => {
            let s = s.trim();
            if let Ok(d) = DateTime::parse_from_rfc3339(s) {
                return Some(d.with_timezone(&Utc));
            }
            for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
                if let Ok(d) = DateTime::parse_from_str(s, format) {
                    return Some(d.with_timezone(&Utc));
                }
            }
            for format in [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
                "%Y-%m-%d %H:%M",
            ] {
                if let Ok(d) = NaiveDateTime::parse_from_str(s, format) {
                    return Some(d.and_utc());
                }
            }
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc())
        }
        _ => None,
    }
}

/// batchDelete of one record: a soft delete that keeps the json passed in.
/// Counted as deleted only when the record was there and not deleted (an
/// unknown id is stored as already deleted, as the original inserts it);
/// a record the merging strategy protects is left alone.
pub fn apply_delete(
    conn: &ConnectionRef,
    model: &str,
    existing: Option<&StoredRecord>,
    incoming: Incoming,
    ctx: &WriteContext,
    merging: &Merging,
    now: DateTime<Utc>,
) -> (Option<StoredRecord>, Outcome) {
    let deleted_at = incoming
        .json
        .get("deletedAt")
        .and_then(deleted_at_of)
        .unwrap_or(now);
    let (mut r, outcome) = match existing {
        Some(old) if !allowed_by(merging, old) => return (None, Outcome::Skipped),
        Some(old) => {
            let outcome = if old.deleted_at.is_some() {
                Outcome::Unchanged
            } else {
                Outcome::Deleted
            };
            (old.clone(), outcome)
        }
        None => (
            StoredRecord {
                internal_id: internal_id(conn, model, &incoming.external_id),
                external_id: incoming.external_id.clone(),
                json: Map::new(),
                data_hash: String::new(),
                created_at: now,
                updated_at: now,
                deleted_at: None,
                pruned_at: None,
                sync_id: None,
                job_id: None,
            },
            Outcome::Unchanged,
        ),
    };
    r.json = incoming.json;
    r.data_hash = incoming.hash;
    r.updated_at = now;
    r.deleted_at = Some(deleted_at);
    r.sync_id = ctx.sync_id.clone();
    r.job_id = ctx.job_id;
    (Some(r), outcome)
}

/// batchUpdate of one record: deep merge (arrays replaced), undeletes.
pub fn apply_update(
    existing: Option<&StoredRecord>,
    incoming: Incoming,
    ctx: &WriteContext,
    merging: &Merging,
    now: DateTime<Utc>,
) -> Result<(Option<StoredRecord>, Outcome), RecordError> {
    let Some(old) = existing else {
        return Ok((None, Outcome::Skipped));
    };
    if !allowed_by(merging, old) {
        return Ok((None, Outcome::Skipped));
    }
    let mut merged = old.json.clone();
    deep_merge(&mut merged, incoming.json);
    if merged == old.json && old.deleted_at.is_none() {
        // Nothing changes but who saw it last, as for a save: the run's
        // deletion tracking must not take it for gone.
        let mut seen = old.clone();
        seen.sync_id = ctx.sync_id.clone();
        seen.job_id = ctx.job_id;
        return Ok((Some(seen), Outcome::Unchanged));
    }
    // Past the limit, a merge may still leave the record as large as it
    // was or smaller (one stored before the limit was lowered).
    if let Some(max) = ctx.max_record_bytes
        && !fits(&merged, max)
        && json_size(&merged) > json_size(&old.json)
    {
        return Err(RecordError::TooLarge {
            id: old.external_id.clone(),
            max,
        });
    }
    let mut r = old.clone();
    r.json = merged;
    // The original stores the hash of the partial payload.
    r.data_hash = incoming.hash;
    r.updated_at = now;
    r.deleted_at = None;
    r.sync_id = ctx.sync_id.clone();
    r.job_id = ctx.job_id;
    Ok((Some(r), Outcome::Updated))
}

/// How many bytes `value` serialises to (counted, not built).
pub(crate) fn json_size<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Whether `record` serialises to at most `max` bytes.
fn fits(record: &Map<String, Value>, max: usize) -> bool {
    fits_json(record, max)
}

/// Whether `value` serialises to at most `max` bytes (counted, not built;
/// the count stops past `max`).
pub(crate) fn fits_json<T: Serialize + ?Sized>(value: &T, max: usize) -> bool {
    struct Count {
        bytes: usize,
        max: usize,
    }
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes += buf.len();
            if self.bytes > self.max {
                return Err(std::io::Error::other("too large"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(&mut Count { bytes: 0, max }, value).is_ok()
}

fn deep_merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => deep_merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Which write a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Save,
    Delete,
    Update,
}

/// One chunk's write: what, where, by whom, when.
#[derive(Debug, Clone, Copy)]
pub struct ChunkWrite<'a> {
    pub kind: WriteKind,
    pub conn: &'a ConnectionRef,
    pub model: &'a str,
    pub ctx: &'a WriteContext,
    pub now: DateTime<Utc>,
}

/// A chunk's rows to write (each with the index of its record and what its
/// write is) and its changes: what [`plan_chunk`] gives.
pub type ChunkPlan = (Vec<(usize, StoredRecord, Outcome)>, Changes);

/// Applies one chunk to the rows stored for it (`existing[i]` is the row
/// of `chunk[i]`'s id, if any), returning the rows to write, each with the
/// index of the record it is for and what its write is (an `Unchanged` row
/// only carries new stamps), and the changes; or why the chunk cannot be
/// written (then nothing of it is, and `merging` has not moved). Backends
/// call this inside their own transaction.
pub fn plan_chunk(
    write: ChunkWrite<'_>,
    chunk: Vec<Incoming>,
    merging: &mut Merging,
    existing: Vec<Option<StoredRecord>>,
) -> Result<ChunkPlan, RecordError> {
    let ChunkWrite {
        kind,
        conn,
        model,
        ctx,
        now,
    } = write;
    let mut writes = Vec::with_capacity(chunk.len());
    let mut changes = Changes::default();
    let mut newest: Option<Position> = None;
    let mut existing = existing.into_iter();
    for (index, incoming) in chunk.into_iter().enumerate() {
        let existing = existing.next().flatten();
        let (row, outcome) = match kind {
            WriteKind::Save => apply_save(conn, model, existing, incoming, ctx, merging, now),
            WriteKind::Delete => {
                apply_delete(conn, model, existing.as_ref(), incoming, ctx, merging, now)
            }
            WriteKind::Update => apply_update(existing.as_ref(), incoming, ctx, merging, now)?,
        };
        changes.count(outcome);
        if let Some(mut row) = row {
            // Every write fills the record's payload.
            row.pruned_at = None;
            // Every row this write moved (dated now) is the sync's own.
            if row.updated_at == now && newest.as_ref().is_none_or(|n| row.position() > *n) {
                newest = Some(row.position());
            }
            writes.push((index, row, outcome));
        }
    }
    if let (Merging::IgnoreIfModifiedAfter { cursor }, Some(n)) = (merging, newest)
        && cursor.as_ref().is_none_or(|c| n > *c)
    {
        *cursor = Some(n);
    }
    Ok((writes, changes))
}

/// Where records live: one environment's records, or a stand-in for them.
/// Each `write` is one chunk (at most [`CHUNK_SIZE`] records), committed
/// (and, for a durable backend, flushed) before it returns.
///
/// The methods are async so a backend can do I/O without blocking the
/// threads that poll guests; the record semantics are [`plan_chunk`]'s,
/// which every backend calls inside its own transaction.
#[async_trait::async_trait]
pub trait RecordStore: Send + Sync {
    async fn write(
        &self,
        kind: WriteKind,
        conn: &ConnectionRef,
        model: &str,
        chunk: Vec<Incoming>,
        ctx: &WriteContext,
        merging: &mut Merging,
    ) -> Result<Changes, RecordError>;

    /// The stored records with these ids (deleted ones included); missing ids
    /// are absent.
    async fn get_by_ids(
        &self,
        conn: &ConnectionRef,
        model: &str,
        ids: &[String],
    ) -> Result<Vec<StoredRecord>, RecordError>;

    /// The position of the most recently modified record of a model.
    async fn newest_position(
        &self,
        conn: &ConnectionRef,
        model: &str,
    ) -> Result<Option<Position>, RecordError>;

    /// One page of the model's records in `(updated_at, internal id)` order
    /// strictly after `after` (deleted ones included), and the position the
    /// next page starts after when more follow (`listRecords`). A store
    /// holding no earlier runs' records lists none.
    async fn list(
        &self,
        _conn: &ConnectionRef,
        _model: &str,
        _after: Option<Position>,
        _limit: usize,
    ) -> Result<(Vec<StoredRecord>, Option<Position>), RecordError> {
        Ok((Vec::new(), None))
    }

    /// The checkpoint saved under `key` (a sync's name and variant) for
    /// this connection.
    async fn checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
    ) -> Result<Option<Value>, RecordError>;

    /// Replaces (or with `None` removes) that checkpoint, durably.
    async fn set_checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
        value: Option<Value>,
    ) -> Result<(), RecordError>;

    /// Offered every records call as the script made it, before it is
    /// checked and chunked; `true` means the store kept the call itself and
    /// nothing is written. Only [`CallLog`] (test replay) keeps calls.
    fn keep_call(&self, _call: &BatchCall) -> bool {
        false
    }
}

/// Which records call a [`BatchCall`] was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BatchKind {
    BatchSave,
    BatchDelete,
    BatchUpdate,
}

impl From<WriteKind> for BatchKind {
    fn from(k: WriteKind) -> Self {
        match k {
            WriteKind::Save => BatchKind::BatchSave,
            WriteKind::Delete => BatchKind::BatchDelete,
            WriteKind::Update => BatchKind::BatchUpdate,
        }
    }
}

/// One records call as the script made it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchCall {
    pub kind: BatchKind,
    pub model: String,
    pub records: Vec<Value>,
}

/// Checkpoints in memory, for the stores that keep nothing on disk.
#[derive(Debug, Default)]
pub struct MemoryCheckpoints {
    inner: std::sync::Mutex<HashMap<(String, String, String), Value>>,
}

impl MemoryCheckpoints {
    fn key(conn: &ConnectionRef, key: &str) -> (String, String, String) {
        (
            conn.provider_config_key.clone(),
            conn.connection_id.clone(),
            key.to_string(),
        )
    }

    pub fn get(&self, conn: &ConnectionRef, key: &str) -> Option<Value> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&Self::key(conn, key))
            .cloned()
    }

    pub fn set(&self, conn: &ConnectionRef, key: &str, value: Option<Value>) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match value {
            Some(v) => {
                map.insert(Self::key(conn, key), v);
            }
            None => {
                map.remove(&Self::key(conn, key));
            }
        }
    }
}

/// A records store that stores nothing and keeps every call as the script
/// made it, as the original test harness's spies do (`sluice test`).
#[derive(Debug, Default)]
pub struct CallLog {
    calls: std::sync::Mutex<Vec<BatchCall>>,
    checkpoints: MemoryCheckpoints,
}

impl CallLog {
    /// The calls kept so far, in order.
    pub fn calls(&self) -> Vec<BatchCall> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl RecordStore for CallLog {
    async fn checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
    ) -> Result<Option<Value>, RecordError> {
        Ok(self.checkpoints.get(conn, key))
    }

    async fn set_checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
        value: Option<Value>,
    ) -> Result<(), RecordError> {
        self.checkpoints.set(conn, key, value);
        Ok(())
    }

    async fn write(
        &self,
        _kind: WriteKind,
        _conn: &ConnectionRef,
        _model: &str,
        _chunk: Vec<Incoming>,
        _ctx: &WriteContext,
        _merging: &mut Merging,
    ) -> Result<Changes, RecordError> {
        Ok(Changes::default())
    }

    async fn get_by_ids(
        &self,
        _conn: &ConnectionRef,
        _model: &str,
        _ids: &[String],
    ) -> Result<Vec<StoredRecord>, RecordError> {
        Ok(Vec::new())
    }

    async fn newest_position(
        &self,
        _conn: &ConnectionRef,
        _model: &str,
    ) -> Result<Option<Position>, RecordError> {
        Ok(None)
    }

    fn keep_call(&self, call: &BatchCall) -> bool {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call.clone());
        true
    }
}

type ModelKey = (ConnectionRef, String);

/// Records held in memory (dry runs and tests).
#[derive(Debug, Default)]
pub struct MemoryRecords {
    inner: RwLock<HashMap<ModelKey, BTreeMap<String, StoredRecord>>>,
    checkpoints: MemoryCheckpoints,
}

impl MemoryRecords {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record of a model in `(updated_at, id)` order.
    pub fn all(&self, conn: &ConnectionRef, model: &str) -> Vec<StoredRecord> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = map
            .get(&(conn.clone(), model.to_string()))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        rows.sort_by_key(StoredRecord::position);
        rows
    }

    fn write_now(
        &self,
        kind: WriteKind,
        conn: &ConnectionRef,
        model: &str,
        chunk: Vec<Incoming>,
        ctx: &WriteContext,
        merging: &mut Merging,
    ) -> Result<Changes, RecordError> {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let rows = map.entry((conn.clone(), model.to_string())).or_default();
        let write = ChunkWrite {
            kind,
            conn,
            model,
            ctx,
            now: now(),
        };
        let existing = chunk
            .iter()
            .map(|i| rows.get(&i.external_id).cloned())
            .collect();
        let (writes, changes) = plan_chunk(write, chunk, merging, existing)?;
        for (_, row, _) in writes {
            rows.insert(row.external_id.clone(), row);
        }
        Ok(changes)
    }
}

#[async_trait::async_trait]
impl RecordStore for MemoryRecords {
    async fn checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
    ) -> Result<Option<Value>, RecordError> {
        Ok(self.checkpoints.get(conn, key))
    }

    async fn set_checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
        value: Option<Value>,
    ) -> Result<(), RecordError> {
        self.checkpoints.set(conn, key, value);
        Ok(())
    }

    async fn write(
        &self,
        kind: WriteKind,
        conn: &ConnectionRef,
        model: &str,
        chunk: Vec<Incoming>,
        ctx: &WriteContext,
        merging: &mut Merging,
    ) -> Result<Changes, RecordError> {
        self.write_now(kind, conn, model, chunk, ctx, merging)
    }

    async fn get_by_ids(
        &self,
        conn: &ConnectionRef,
        model: &str,
        ids: &[String],
    ) -> Result<Vec<StoredRecord>, RecordError> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let Some(rows) = map.get(&(conn.clone(), model.to_string())) else {
            return Ok(Vec::new());
        };
        Ok(ids.iter().filter_map(|id| rows.get(id).cloned()).collect())
    }

    async fn newest_position(
        &self,
        conn: &ConnectionRef,
        model: &str,
    ) -> Result<Option<Position>, RecordError> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .get(&(conn.clone(), model.to_string()))
            .and_then(|rows| rows.values().map(StoredRecord::position).max()))
    }

    async fn list(
        &self,
        conn: &ConnectionRef,
        model: &str,
        after: Option<Position>,
        limit: usize,
    ) -> Result<(Vec<StoredRecord>, Option<Position>), RecordError> {
        let mut rows: Vec<StoredRecord> = self
            .all(conn, model)
            .into_iter()
            .filter(|r| after.as_ref().is_none_or(|a| r.position() > *a))
            .take(limit.saturating_add(1))
            .collect();
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(StoredRecord::position)
        } else {
            None
        };
        Ok((rows, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn conn() -> ConnectionRef {
        ConnectionRef {
            provider_config_key: "p".into(),
            connection_id: "c".into(),
        }
    }

    fn objs(v: Value) -> Vec<Map<String, Value>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_object().unwrap().clone())
            .collect()
    }

    fn write(store: &MemoryRecords, kind: WriteKind, v: Value) -> Changes {
        let (chunk, _) = prepare_chunk(objs(v), 0).unwrap();
        store
            .write_now(
                kind,
                &conn(),
                "M",
                chunk,
                &WriteContext::default(),
                &mut Merging::Override,
            )
            .unwrap()
    }

    #[test]
    fn save_counts_added_updated_unchanged_and_undeletes() {
        let s = MemoryRecords::new();
        let c = write(&s, WriteKind::Save, json!([{"id": 1, "a": 1}, {"id": "2"}]));
        assert_eq!((c.added, c.updated, c.unchanged), (2, 0, 0));
        let c = write(&s, WriteKind::Save, json!([{"id": 1, "a": 2}, {"id": "2"}]));
        assert_eq!((c.added, c.updated, c.unchanged), (0, 1, 1));
        let c = write(&s, WriteKind::Delete, json!([{"id": "2"}, {"id": "9"}]));
        assert_eq!(
            (c.deleted, c.unchanged),
            (1, 1),
            "an unknown id is stored deleted but not counted as a deletion"
        );
        let rows = block(s.get_by_ids(&conn(), "M", &["9".into()])).unwrap();
        assert_eq!(rows[0].last_action(), "DELETED");
        let c = write(&s, WriteKind::Save, json!([{"id": "2"}]));
        assert_eq!(c.added, 1, "re-saving a deleted record undeletes it");
    }

    #[test]
    fn deleted_at_is_read_as_the_original_reads_it() {
        let at = |v: Value| deleted_at_of(&v).map(|d| d.to_rfc3339());
        let day = Some("2024-01-15T00:00:00+00:00".to_string());
        let ten = Some("2024-01-15T10:00:00+00:00".to_string());
        assert_eq!(at(json!("2024-01-15")), day);
        assert_eq!(at(json!("2024-01-15T12:00:00+0200")), ten);
        assert_eq!(at(json!("2024-01-15T12:00:00+02:00")), ten);
        assert_eq!(at(json!("2024-01-15T10:00:00")), ten);
        assert_eq!(at(json!("2024-01-15 10:00:00.000Z")), ten);
        assert_eq!(at(json!(1_705_312_800_000_i64)), ten);
        assert_eq!(at(json!("yesterday")), None);
        assert_eq!(at(json!(true)), None);
        assert_eq!(at(json!(1e300)), None);
    }

    #[test]
    fn a_delete_leaves_a_record_the_merging_strategy_protects() {
        let s = MemoryRecords::new();
        write(&s, WriteKind::Save, json!([{"id": "a"}, {"id": "b"}]));
        // The sync's cursor is before both rows (a webhook wrote them after it).
        let mut merging = Merging::IgnoreIfModifiedAfter {
            cursor: Some(Position {
                updated_at: DateTime::UNIX_EPOCH,
                internal_id: Uuid::nil(),
            }),
        };
        let (chunk, _) = prepare_chunk(objs(json!([{"id": "a"}, {"id": "new"}])), 0).unwrap();
        let c = s
            .write_now(
                WriteKind::Delete,
                &conn(),
                "M",
                chunk,
                &WriteContext::default(),
                &mut merging,
            )
            .unwrap();
        assert_eq!((c.deleted, c.unchanged), (0, 1));
        let rows = block(s.get_by_ids(&conn(), "M", &["a".into(), "new".into()])).unwrap();
        let action = |id: &str| {
            rows.iter()
                .find(|r| r.external_id == id)
                .map(|r| r.last_action())
        };
        assert_eq!(action("a"), Some("ADDED"), "the protected row is kept");
        assert_eq!(action("new"), Some("DELETED"));
    }

    #[test]
    fn an_update_that_changes_nothing_still_marks_the_record_seen() {
        let s = MemoryRecords::new();
        write(&s, WriteKind::Save, json!([{"id": "a", "v": 1}]));
        let ctx = WriteContext {
            sync_id: Some("sync".into()),
            job_id: Some(7),
            ..WriteContext::default()
        };
        let (chunk, _) = prepare_chunk(objs(json!([{"id": "a", "v": 1}])), 0).unwrap();
        let c = s
            .write_now(
                WriteKind::Update,
                &conn(),
                "M",
                chunk,
                &ctx,
                &mut Merging::Override,
            )
            .unwrap();
        assert_eq!(c.unchanged, 1);
        let rows = block(s.get_by_ids(&conn(), "M", &["a".into()])).unwrap();
        assert_eq!(rows[0].job_id, Some(7));
        assert_eq!(rows[0].last_action(), "ADDED", "its times do not move");
    }

    #[test]
    fn first_duplicate_wins_within_a_chunk() {
        let (chunk, dups) =
            prepare_chunk(objs(json!([{"id": 1, "v": "a"}, {"id": 1, "v": "b"}])), 0).unwrap();
        assert_eq!(chunk.len(), 1);
        assert_eq!(chunk[0].json["v"], "a");
        assert_eq!(dups, vec!["1".to_string()]);
        // The CLI dry run's rule: the last occurrence, in its place.
        let hashed = objs(json!([{"id": 1, "v": "a"}, {"id": 2}, {"id": 1, "v": "b"}]))
            .into_iter()
            .map(|m| {
                let h = data_hash(&m);
                (m, h)
            })
            .collect();
        let (chunk, dups) = prepare_hashed_chunk(hashed, 0, true).unwrap();
        assert_eq!(chunk.len(), 2);
        assert_eq!(chunk[0].external_id, "2");
        assert_eq!(chunk[1].json["v"], "b", "the last, where it is");
        assert_eq!(chunk[1].hash, data_hash(&chunk[1].json));
        assert_eq!(dups, vec!["1".to_string()]);
    }

    #[test]
    fn ids_are_validated() {
        let err = prepare_chunk(objs(json!([{"id": 1}, {"name": "x"}])), 0).unwrap_err();
        assert!(err.to_string().contains("index 1"), "{err}");
        let long = "x".repeat(256);
        assert!(prepare_chunk(objs(json!([{ "id": long }])), 0).is_err());
        assert!(prepare_chunk(objs(json!([{"id": ""}])), 0).is_err());
    }

    #[test]
    fn update_deep_merges_replaces_arrays_and_skips_unknown() {
        let s = MemoryRecords::new();
        write(
            &s,
            WriteKind::Save,
            json!([{"id": "1", "o": {"a": 1, "b": 2}, "l": [1, 2]}]),
        );
        let c = write(
            &s,
            WriteKind::Update,
            json!([{"id": "1", "o": {"b": 3}, "l": [9]}, {"id": "404", "x": 1}]),
        );
        assert_eq!(c.updated, 1);
        let row = &block(s.get_by_ids(&conn(), "M", &["1".into()])).unwrap()[0];
        assert_eq!(
            Value::Object(row.json.clone()),
            json!({"id": "1", "o": {"a": 1, "b": 3}, "l": [9]})
        );
        assert!(
            block(s.get_by_ids(&conn(), "M", &["404".into()]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_update_cannot_grow_a_record_past_the_limit() {
        let s = MemoryRecords::new();
        write(
            &s,
            WriteKind::Save,
            json!([{"id": "a", "v": 0}, {"id": "b"}]),
        );
        let ctx = WriteContext {
            max_record_bytes: Some(200),
            ..WriteContext::default()
        };
        let update = |v: Value| {
            let (chunk, _) = prepare_chunk(objs(v), 0).unwrap();
            s.write_now(
                WriteKind::Update,
                &conn(),
                "M",
                chunk,
                &ctx,
                &mut Merging::Override,
            )
        };
        // Each update adds a key: the fourth would pass 200 bytes.
        for n in 0..3 {
            let c = update(json!([{"id": "a", format!("k{n}"): "x".repeat(40)}])).unwrap();
            assert_eq!(c.updated, 1);
        }
        let err =
            update(json!([{"id": "b", "w": 1}, {"id": "a", "k3": "x".repeat(40)}])).unwrap_err();
        assert!(
            matches!(&err, RecordError::TooLarge { id, max: 200 } if id == "a"),
            "{err}"
        );
        // Nothing of that chunk was written, `b` included.
        let rows = block(s.get_by_ids(&conn(), "M", &["a".into(), "b".into()])).unwrap();
        let a = rows.iter().find(|r| r.external_id == "a").unwrap();
        let b = rows.iter().find(|r| r.external_id == "b").unwrap();
        assert!(!a.json.contains_key("k3"));
        assert!(!b.json.contains_key("w"));
        // Smaller updates still go.
        assert_eq!(update(json!([{"id": "a", "v": 1}])).unwrap().updated, 1);

        // Under a lower limit than the record already passes, an update
        // that does not grow it goes; one that grows it does not.
        let lower = WriteContext {
            max_record_bytes: Some(50),
            ..WriteContext::default()
        };
        let update_lower = |v: Value| {
            let (chunk, _) = prepare_chunk(objs(v), 0).unwrap();
            s.write_now(
                WriteKind::Update,
                &conn(),
                "M",
                chunk,
                &lower,
                &mut Merging::Override,
            )
        };
        let c = update_lower(json!([{"id": "a", "k0": "short"}])).unwrap();
        assert_eq!(c.updated, 1);
        assert!(matches!(
            update_lower(json!([{"id": "a", "k9": 1}])),
            Err(RecordError::TooLarge { .. })
        ));
    }

    #[test]
    fn ignore_if_modified_after_protects_newer_rows() {
        let s = MemoryRecords::new();
        write(&s, WriteKind::Save, json!([{"id": "old", "v": 1}]));
        let mut merging = Merging::IgnoreIfModifiedAfter {
            cursor: block(s.newest_position(&conn(), "M")).unwrap(),
        };
        // Another execution modifies the row after our strategy was set.
        std::thread::sleep(std::time::Duration::from_millis(2));
        write(&s, WriteKind::Save, json!([{"id": "old", "v": 2}]));
        let (chunk, _) =
            prepare_chunk(objs(json!([{"id": "old", "v": 3}, {"id": "new"}])), 0).unwrap();
        let c = s
            .write_now(
                WriteKind::Save,
                &conn(),
                "M",
                chunk,
                &WriteContext::default(),
                &mut merging,
            )
            .unwrap();
        assert_eq!(c.added, 1);
        let row = &block(s.get_by_ids(&conn(), "M", &["old".into()])).unwrap()[0];
        assert_eq!(row.json["v"], 2);
    }

    #[test]
    fn cursor_round_trips() {
        let s = MemoryRecords::new();
        write(&s, WriteKind::Save, json!([{"id": "1"}]));
        let row = &block(s.get_by_ids(&conn(), "M", &["1".into()])).unwrap()[0];
        let view = row.to_view();
        let cursor = view["_nango_metadata"]["cursor"].as_str().unwrap();
        assert_eq!(decode_cursor(cursor), Some(row.position()));
        assert_eq!(view["_nango_metadata"]["last_action"], "ADDED");
    }
}
