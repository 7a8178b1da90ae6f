//! An environment's records cache: the runtime's [`RecordStore`] and the
//! reads of `GET /records`, `track_deletes` and full resyncs.
//!
//! A model's records (a "scope": connection and model) live in four tables
//! (see [`crate::keys`]): the rows by external id, the paging index by
//! `(updated_at, internal id)`, the small stamps `(sync id, job id)` and the
//! count of non-deleted rows. Every write of a scope runs under the scope's
//! lock and changes all four in one atomic, durable [`Backend::apply`]:
//! one flush per chunk of up to 1,000 records.
//!
//! [`Backend::apply`]: crate::Backend::apply

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use sluice_runtime::records::{
    self as rt, Changes, ChunkWrite, ConnectionRef, Incoming, Merging, Outcome, Position,
    RecordError, RecordStore, StoredRecord, WriteContext, WriteKind,
};

use crate::backend::{Op, Table};
use crate::env::SCAN_BATCH;
use crate::error::StoreError;
use crate::keys::{self, KeyBuf};
use crate::rows::{self, RawRecord, RowHeader, Stamp};
use crate::store::EnvStore;

/// Which records `GET /records?filter=` keeps (§3.6): `added` = not deleted
/// and never updated, `updated` = not deleted and updated, `deleted` =
/// soft-deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordFilter {
    pub added: bool,
    pub updated: bool,
    pub deleted: bool,
}

impl RecordFilter {
    /// Parses the query's comma list (`added,updated,deleted`, any case);
    /// `None` for an unknown word or an empty list.
    pub fn parse(text: &str) -> Option<Self> {
        let mut f = RecordFilter::default();
        for word in text.split(',') {
            match word.trim().to_ascii_lowercase().as_str() {
                "added" => f.added = true,
                "updated" => f.updated = true,
                "deleted" => f.deleted = true,
                _ => return None,
            }
        }
        Some(f)
    }

    fn keeps(&self, h: &RowHeader) -> bool {
        if h.deleted_at.is_some() {
            self.deleted
        } else if h.created_at == h.updated_at {
            self.added
        } else {
            self.updated
        }
    }

    /// Whether a record passes the filter.
    pub fn matches(&self, r: &StoredRecord) -> bool {
        self.keeps(&RowHeader::of(r))
    }
}

/// One `GET /records` page request.
#[derive(Debug, Clone)]
pub struct RecordsQuery {
    /// The decoded cursor: only records strictly after it.
    pub after: Option<Position>,
    /// Only records with `updated_at >= modified_after`.
    pub modified_after: Option<DateTime<Utc>>,
    pub filter: Option<RecordFilter>,
    /// Only these external ids (when not empty).
    pub ids: Vec<String>,
    /// Records per page, at least 1.
    pub limit: usize,
}

impl Default for RecordsQuery {
    fn default() -> Self {
        RecordsQuery {
            after: None,
            modified_after: None,
            filter: None,
            ids: Vec::new(),
            limit: 100,
        }
    }
}

/// One page of records in `(updated_at, internal id)` order.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordsPage {
    pub records: Vec<StoredRecord>,
    /// Where the next page starts (the last record's position), only when
    /// more records follow.
    pub next: Option<Position>,
}

/// [`EnvStore::records_page_raw`]'s page.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecordsPage {
    pub records: Vec<RawRecord>,
    pub next: Option<Position>,
}

/// A scope's keys.
struct Scope {
    prefix: KeyBuf,
    count_key: Vec<u8>,
}

impl Scope {
    fn record_key(&self, external_id: &str) -> Vec<u8> {
        self.prefix.clone().tail(external_id)
    }

    fn external_id(&self, record_key: &[u8]) -> String {
        String::from_utf8_lossy(&record_key[self.prefix.as_bytes().len()..]).into_owned()
    }

    fn index_key(&self, p: &Position) -> Vec<u8> {
        keys::index_key(&self.prefix, p)
    }

    fn lock_key(&self) -> Vec<u8> {
        [b"r".as_slice(), self.prefix.as_bytes()].concat()
    }
}

fn count_value(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

fn decode_count(bytes: Option<Vec<u8>>) -> Result<u64, StoreError> {
    match bytes {
        None => Ok(0),
        Some(b) => b
            .as_slice()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::corrupt("record count", "not 8 bytes")),
    }
}

impl EnvStore {
    fn scope(&self, conn: &ConnectionRef, model: &str) -> Scope {
        let id = self.inner.id;
        Scope {
            prefix: keys::scope(id, conn, model),
            count_key: keys::connection(id, &conn.provider_config_key, &conn.connection_id)
                .tail(model),
        }
    }

    async fn newest_in(&self, scope: &Scope) -> Result<Option<Position>, StoreError> {
        let last = self
            .backend()
            .scan(Table::RecordIndex, scope.prefix.as_bytes(), None, 1, true)
            .await?;
        Ok(last
            .first()
            .and_then(|(k, _)| keys::index_position(&scope.prefix, k)))
    }

    /// The time a write stamps its rows with: now, but always after every
    /// row already in the scope (the caller holds the scope's lock). A
    /// reader paging by cursor has then seen nothing after the rows a
    /// write adds, so it finds them on a later page, even when the clock
    /// steps back or two writes fall in one microsecond.
    async fn write_time(&self, scope: &Scope) -> Result<DateTime<Utc>, StoreError> {
        let now = rt::now();
        Ok(match self.newest_in(scope).await? {
            Some(p) if p.updated_at >= now => p.updated_at + Duration::microseconds(1),
            _ => now,
        })
    }

    /// One chunk of batchSave, batchDelete or batchUpdate, with
    /// [`rt::plan_chunk`]'s semantics, written in one atomic apply.
    pub async fn write_records(
        &self,
        kind: WriteKind,
        conn: &ConnectionRef,
        model: &str,
        chunk: Vec<Incoming>,
        ctx: &WriteContext,
        merging: &mut Merging,
    ) -> Result<Changes, StoreError> {
        let scope = self.scope(conn, model);
        let _lock = self.lock(scope.lock_key()).await;
        let ids: Vec<String> = chunk.iter().map(|i| i.external_id.clone()).collect();
        let record_keys: Vec<Vec<u8>> = ids.iter().map(|id| scope.record_key(id)).collect();
        let bodies = self
            .backend()
            .get_many(Table::Records, &record_keys)
            .await?;
        // What is read of the rows a chunk replaces is only what the
        // semantics look at. batchSave and batchDelete replace a row's JSON
        // without reading it (an unchanged save keeps the stored JSON and
        // only gets new stamps, which is all that is written for it below),
        // so only batchUpdate, which merges into it, decodes the stored
        // JSON. No write keeps the old stamps, so they are not read: every
        // row written gets the writer's.
        let with_json = kind == WriteKind::Update;
        let mut existing: HashMap<String, StoredRecord> = HashMap::with_capacity(ids.len());
        for (id, body) in ids.into_iter().zip(bodies) {
            if let Some(body) = body {
                let record = rows::decode_record(id.clone(), &body, None, with_json)?;
                existing.insert(id, record);
            }
        }
        let count_before = decode_count(
            self.backend()
                .get(Table::RecordCounts, &scope.count_key)
                .await?,
        )?;
        let write = ChunkWrite {
            kind,
            conn,
            model,
            ctx,
            now: self.write_time(&scope).await?,
        };
        // Should the write fail, the strategy's cursor must not have moved.
        let merging_before = merging.clone();
        let (planned, changes) =
            rt::plan_chunk(write, chunk, merging, |id| existing.get(id).cloned());

        // A write order with one entry per id, the last write winning, as
        // it would if the rows were written one after another.
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(planned.len());
        for (i, (row, _)) in planned.iter().enumerate() {
            last.insert(row.external_id.as_str(), i);
        }
        let mut ops = Vec::with_capacity(planned.len() * 4 + 1);
        let mut alive: i64 = 0;
        for (i, (row, outcome)) in planned.iter().enumerate() {
            if last.get(row.external_id.as_str()) != Some(&i) {
                continue;
            }
            let key = scope.record_key(&row.external_id);
            let old = existing.get(&row.external_id);
            let stamp = Op::Put {
                table: Table::RecordStamps,
                key: key.clone(),
                value: Stamp::of(row).encode(),
            };
            if kind == WriteKind::Save && *outcome == Outcome::Unchanged {
                // Same JSON, same times: only who saw it last changes.
                ops.push(stamp);
                continue;
            }
            let header = RowHeader::of(row);
            let position = header.position();
            if let Some(old) = old {
                alive -= i64::from(old.deleted_at.is_none());
                if old.position() != position {
                    ops.push(Op::Delete {
                        table: Table::RecordIndex,
                        key: scope.index_key(&old.position()),
                    });
                }
            }
            alive += i64::from(header.alive());
            ops.push(Op::Put {
                table: Table::RecordIndex,
                key: scope.index_key(&position),
                value: row.external_id.as_bytes().to_vec(),
            });
            ops.push(Op::Put {
                table: Table::Records,
                key,
                value: header.encode_json(&row.json)?,
            });
            ops.push(stamp);
        }
        let count_after = count_before.saturating_add_signed(alive);
        if count_after != count_before || (!ops.is_empty() && count_before == 0) {
            // The count row also marks the model as present (`models`).
            ops.push(Op::Put {
                table: Table::RecordCounts,
                key: scope.count_key.clone(),
                value: count_value(count_after),
            });
        }
        if !ops.is_empty()
            && let Err(e) = self.backend().apply(ops).await
        {
            *merging = merging_before;
            return Err(e.into());
        }
        Ok(changes)
    }

    /// Stored records by external id, deleted ones included, in the order
    /// of `ids`; unknown ids are absent.
    pub async fn records_by_ids(
        &self,
        conn: &ConnectionRef,
        model: &str,
        ids: &[String],
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let scope = self.scope(conn, model);
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| scope.record_key(id)).collect();
        let bodies = self.backend().get_many(Table::Records, &keys).await?;
        let stamps = self.backend().get_many(Table::RecordStamps, &keys).await?;
        let mut out = Vec::with_capacity(ids.len());
        for ((id, body), stamp) in ids.iter().zip(bodies).zip(stamps) {
            if let Some(body) = body {
                out.push(rows::decode_record(
                    id.clone(),
                    &body,
                    stamp.as_deref(),
                    true,
                )?);
            }
        }
        Ok(out)
    }

    /// The position of the most recently modified record of a model.
    pub async fn newest_record_position(
        &self,
        conn: &ConnectionRef,
        model: &str,
    ) -> Result<Option<Position>, StoreError> {
        self.newest_in(&self.scope(conn, model)).await
    }

    /// One page of a model's records in `(updated_at, internal id)` order,
    /// deleted ones included (§3.6). Without `ids` it seeks the paging index
    /// to the cursor (or `modified_after`) and reads about `limit + 1`
    /// entries, so a page deep in the records costs what the first costs;
    /// with `ids` it looks the ids up directly and orders them.
    pub async fn records_page(
        &self,
        conn: &ConnectionRef,
        model: &str,
        query: &RecordsQuery,
    ) -> Result<RecordsPage, StoreError> {
        let raw = self.records_page_raw(conn, model, query).await?;
        let scope = self.scope(conn, model);
        let keys: Vec<Vec<u8>> = raw
            .records
            .iter()
            .map(|r| scope.record_key(&r.external_id))
            .collect();
        let stamps = self.backend().get_many(Table::RecordStamps, &keys).await?;
        let records = raw
            .records
            .into_iter()
            .zip(stamps)
            .map(|(r, stamp)| {
                let mut record = r.to_stored()?;
                let stamp = stamp.as_deref().map(rows::decode_stamp).transpose()?;
                let stamp = stamp.unwrap_or_default();
                record.sync_id = stamp.sync_id;
                record.job_id = stamp.job_id;
                Ok(record)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(RecordsPage {
            records,
            next: raw.next,
        })
    }

    /// [`EnvStore::records_page`] without decoding the records' JSON or
    /// reading their stamps: what `GET /records` needs, at the cost of
    /// reading the rows. [`RawRecord::write_view`] writes each record's
    /// response JSON by splicing its stored text.
    pub async fn records_page_raw(
        &self,
        conn: &ConnectionRef,
        model: &str,
        query: &RecordsQuery,
    ) -> Result<RawRecordsPage, StoreError> {
        if query.limit == 0 {
            return Err(StoreError::Invalid(
                "a page needs a limit of at least 1".into(),
            ));
        }
        let scope = self.scope(conn, model);
        let want = query.limit.saturating_add(1);
        let found: Vec<(String, Vec<u8>)> = if query.ids.is_empty() {
            self.page_by_index(&scope, query, want).await?
        } else {
            self.page_by_ids(&scope, query, want).await?
        };
        let mut records = found
            .into_iter()
            .map(|(id, row)| rows::decode_raw(id, row))
            .collect::<Result<Vec<_>, _>>()?;
        let next = if records.len() > query.limit {
            records.truncate(query.limit);
            records.last().map(RawRecord::position)
        } else {
            None
        };
        Ok(RawRecordsPage { records, next })
    }

    /// Up to `want` rows (external id, row) after the query's cursor and
    /// time, in index order, passing the filter.
    async fn page_by_index(
        &self,
        scope: &Scope,
        query: &RecordsQuery,
        want: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        // Both bounds are "strictly after" keys; the later one wins.
        let from_cursor = query.after.as_ref().map(|p| scope.index_key(p));
        let from_time = query
            .modified_after
            .map(|t| keys::index_time_floor(&scope.prefix, t));
        let mut after = match (from_cursor, from_time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let mut out = Vec::with_capacity(want);
        loop {
            // With a filter, rows are dropped after reading; read ahead more.
            let batch = if query.filter.is_some() {
                (want - out.len()).max(SCAN_BATCH)
            } else {
                want - out.len()
            };
            let entries = self
                .backend()
                .scan_join(
                    Table::RecordIndex,
                    scope.prefix.as_bytes(),
                    after.as_deref(),
                    batch,
                    Table::Records,
                    scope.prefix.as_bytes(),
                )
                .await?;
            let read = entries.len();
            let last = entries.last().map(|e| e.key.clone());
            for entry in entries {
                let Some(body) = entry.row else {
                    // Cleared between the two reads.
                    continue;
                };
                let (header, _) = rows::decode_header(&body)?;
                // A row rewritten between the two reads has moved on to a
                // later index entry; it is returned there.
                if scope.index_key(&header.position()) != entry.key {
                    continue;
                }
                if query.filter.is_some_and(|f| !f.keeps(&header)) {
                    continue;
                }
                out.push((String::from_utf8_lossy(&entry.value).into_owned(), body));
                if out.len() == want {
                    return Ok(out);
                }
            }
            if read < batch {
                return Ok(out);
            }
            after = last;
        }
    }

    async fn page_by_ids(
        &self,
        scope: &Scope,
        query: &RecordsQuery,
        want: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut seen = HashSet::new();
        let ids: Vec<&String> = query.ids.iter().filter(|id| seen.insert(*id)).collect();
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| scope.record_key(id)).collect();
        let bodies = self.backend().get_many(Table::Records, &keys).await?;
        let mut rows = Vec::new();
        for (id, body) in ids.into_iter().zip(bodies) {
            let Some(body) = body else { continue };
            let (header, _) = rows::decode_header(&body)?;
            let position = header.position();
            if query.after.as_ref().is_some_and(|a| position <= *a)
                || query.modified_after.is_some_and(|t| header.updated_at < t)
                || query.filter.is_some_and(|f| !f.keeps(&header))
            {
                continue;
            }
            rows.push((position, id.clone(), body));
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.truncate(want);
        Ok(rows.into_iter().map(|(_, id, body)| (id, body)).collect())
    }

    /// `track_deletes` after a successful run: soft-deletes every
    /// non-deleted record of the model last written by `sync_id` in a job
    /// before `current_job` (`deleted_at = updated_at = now`), and returns
    /// how many. Reads the small stamps, not the rows, to find them; writes
    /// a batch at a time.
    pub async fn delete_stale(
        &self,
        conn: &ConnectionRef,
        model: &str,
        sync_id: &str,
        current_job: u64,
    ) -> Result<u64, StoreError> {
        let scope = self.scope(conn, model);
        let _lock = self.lock(scope.lock_key()).await;
        let now = self.write_time(&scope).await?;
        let mut count = decode_count(
            self.backend()
                .get(Table::RecordCounts, &scope.count_key)
                .await?,
        )?;
        let mut deleted = 0u64;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let stamps = self
                .backend()
                .scan(
                    Table::RecordStamps,
                    scope.prefix.as_bytes(),
                    after.as_deref(),
                    SCAN_BATCH,
                    false,
                )
                .await?;
            let mut stale = Vec::new();
            for (key, value) in &stamps {
                let stamp = rows::decode_stamp(value)?;
                if stamp.sync_id.as_deref() == Some(sync_id)
                    && stamp.job_id.is_some_and(|j| j < current_job)
                {
                    stale.push(key.clone());
                }
            }
            let bodies = self.backend().get_many(Table::Records, &stale).await?;
            let mut ops = Vec::new();
            for (key, body) in stale.into_iter().zip(bodies) {
                let Some(body) = body else { continue };
                let (mut header, json) = rows::decode_header(&body)?;
                if !header.alive() {
                    continue;
                }
                ops.push(Op::Delete {
                    table: Table::RecordIndex,
                    key: scope.index_key(&header.position()),
                });
                header.deleted_at = Some(now);
                header.updated_at = now;
                ops.push(Op::Put {
                    table: Table::RecordIndex,
                    key: scope.index_key(&header.position()),
                    value: scope.external_id(&key).into_bytes(),
                });
                ops.push(Op::Put {
                    table: Table::Records,
                    value: header.encode_with(json),
                    key,
                });
                deleted += 1;
                count = count.saturating_sub(1);
            }
            if !ops.is_empty() {
                ops.push(Op::Put {
                    table: Table::RecordCounts,
                    key: scope.count_key.clone(),
                    value: count_value(count),
                });
                self.backend().apply(ops).await?;
            }
            if stamps.len() < SCAN_BATCH {
                return Ok(deleted);
            }
            after = stamps.into_iter().next_back().map(|(k, _)| k);
        }
    }

    /// Hard-deletes every record of a model (`full_refresh_and_clear_cache`)
    /// and returns how many rows were removed, deleted ones included. Runs
    /// a batch per write, each keeping the count right, so a crash midway
    /// leaves a consistent, partly cleared model.
    pub async fn clear_records(
        &self,
        conn: &ConnectionRef,
        model: &str,
    ) -> Result<u64, StoreError> {
        let scope = self.scope(conn, model);
        let _lock = self.lock(scope.lock_key()).await;
        let mut count = decode_count(
            self.backend()
                .get(Table::RecordCounts, &scope.count_key)
                .await?,
        )?;
        let mut removed = 0u64;
        loop {
            let batch = self
                .backend()
                .scan(
                    Table::Records,
                    scope.prefix.as_bytes(),
                    None,
                    SCAN_BATCH,
                    false,
                )
                .await?;
            if batch.is_empty() {
                break;
            }
            let mut ops = Vec::with_capacity(batch.len() * 3 + 1);
            for (key, body) in batch {
                let (header, _) = rows::decode_header(&body)?;
                if header.alive() {
                    count = count.saturating_sub(1);
                }
                ops.push(Op::Delete {
                    table: Table::RecordIndex,
                    key: scope.index_key(&header.position()),
                });
                ops.push(Op::Delete {
                    table: Table::RecordStamps,
                    key: key.clone(),
                });
                ops.push(Op::Delete {
                    table: Table::Records,
                    key,
                });
                removed += 1;
            }
            ops.push(Op::Put {
                table: Table::RecordCounts,
                key: scope.count_key.clone(),
                value: count_value(count),
            });
            self.backend().apply(ops).await?;
        }
        // Entries without a row (none unless the store was damaged).
        self.delete_prefix(Table::RecordIndex, scope.prefix.as_bytes())
            .await?;
        self.delete_prefix(Table::RecordStamps, scope.prefix.as_bytes())
            .await?;
        self.backend()
            .apply(vec![Op::Delete {
                table: Table::RecordCounts,
                key: scope.count_key.clone(),
            }])
            .await?;
        Ok(removed)
    }

    /// The number of non-deleted records of a model: a counter kept in step
    /// by every write, so reading it costs one lookup.
    pub async fn record_count(&self, conn: &ConnectionRef, model: &str) -> Result<u64, StoreError> {
        let scope = self.scope(conn, model);
        decode_count(
            self.backend()
                .get(Table::RecordCounts, &scope.count_key)
                .await?,
        )
    }

    /// The models a connection has records of (written and not cleared),
    /// in byte order.
    pub async fn models(&self, conn: &ConnectionRef) -> Result<Vec<String>, StoreError> {
        let prefix = keys::connection(
            self.inner.id,
            &conn.provider_config_key,
            &conn.connection_id,
        );
        let mut out = Vec::new();
        self.scan_all(Table::RecordCounts, prefix.as_bytes(), |key, _| {
            out.push(String::from_utf8_lossy(&key[prefix.as_bytes().len()..]).into_owned());
            Ok(())
        })
        .await?;
        Ok(out)
    }
}

/// The document collection of syncs' checkpoints.
const CHECKPOINTS: &str = "checkpoints";

/// A checkpoint's document key: connection and sync, separated by a byte
/// neither holds.
fn checkpoint_key(conn: &ConnectionRef, key: &str) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{key}",
        conn.provider_config_key, conn.connection_id
    )
}

fn record_error(e: StoreError) -> RecordError {
    RecordError::Backend(e.to_string())
}

#[async_trait::async_trait]
impl RecordStore for EnvStore {
    async fn checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
    ) -> Result<Option<serde_json::Value>, RecordError> {
        self.doc(CHECKPOINTS, &checkpoint_key(conn, key))
            .await
            .map_err(record_error)
    }

    async fn set_checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
        value: Option<serde_json::Value>,
    ) -> Result<(), RecordError> {
        let doc = checkpoint_key(conn, key);
        match value {
            Some(v) => self.put_doc(CHECKPOINTS, &doc, &v).await,
            None => self.delete_doc(CHECKPOINTS, &doc).await.map(|_| ()),
        }
        .map_err(record_error)
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
        self.write_records(kind, conn, model, chunk, ctx, merging)
            .await
            .map_err(record_error)
    }

    async fn get_by_ids(
        &self,
        conn: &ConnectionRef,
        model: &str,
        ids: &[String],
    ) -> Result<Vec<StoredRecord>, RecordError> {
        self.records_by_ids(conn, model, ids)
            .await
            .map_err(record_error)
    }

    async fn newest_position(
        &self,
        conn: &ConnectionRef,
        model: &str,
    ) -> Result<Option<Position>, RecordError> {
        self.newest_record_position(conn, model)
            .await
            .map_err(record_error)
    }

    async fn list(
        &self,
        conn: &ConnectionRef,
        model: &str,
        after: Option<Position>,
        limit: usize,
    ) -> Result<(Vec<StoredRecord>, Option<Position>), RecordError> {
        let query = RecordsQuery {
            after,
            limit: limit.max(1),
            ..RecordsQuery::default()
        };
        let page = self
            .records_page(conn, model, &query)
            .await
            .map_err(record_error)?;
        Ok((page.records, page.next))
    }
}
