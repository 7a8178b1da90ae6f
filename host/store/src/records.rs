//! An environment's records cache: the runtime's [`RecordStore`] and the
//! reads of `GET /records`, `track_deletes` and full resyncs.
//!
//! A model's records (a "scope": connection and model) live in four tables
//! (see [`crate::keys`]): the paging entries by `(updated_at, internal id)`,
//! which hold the records, the small row headers by external id (position
//! and hash), the small stamps `(sync id, job id)` and the count of
//! non-deleted rows. Every write of a scope runs under the scope's
//! lock and changes all four in one atomic, durable [`Backend::apply`]:
//! one flush per chunk of up to 1,000 records. A chunk in which nothing
//! changed writes only stamps, unflushed and after the script has gone on
//! (see `write_records`), or in a sync job's run one note that lists the
//! chunk's records as seen (a fifth table, see [`Seen`]).
//!
//! [`Backend::apply`]: crate::Backend::apply

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, Utc};
use sluice_runtime::records::{
    self as rt, Changes, ChunkWrite, ConnectionRef, Incoming, Merging, Outcome, Position,
    RecordError, RecordStore, StoredRecord, WriteContext, WriteKind,
};

use crate::backend::{Backend, Op, Table};
use crate::env::{DocSpace, SCAN_BATCH};
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

    fn keeps_at(
        &self,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
        deleted_at: Option<DateTime<Utc>>,
    ) -> bool {
        if deleted_at.is_some() {
            self.deleted
        } else if created_at == updated_at {
            self.added
        } else {
            self.updated
        }
    }

    fn keeps_raw(&self, r: &RawRecord) -> bool {
        self.keeps_at(r.created_at, r.updated_at, r.deleted_at)
    }

    /// Whether a record passes the filter.
    pub fn matches(&self, r: &StoredRecord) -> bool {
        self.keeps_at(r.created_at, r.updated_at, r.deleted_at)
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

/// A scope's count row: its number of non-deleted records and, when
/// known, every sync that stamps a record of it (`None`: writes outside a
/// sync), so a job run that finds only itself there need not read the
/// stamps of the records it saw (see [`Seen`]).
///
/// Stored as the count (u64 BE), then, when the owners are known, a `1`
/// and each owner as its length (u16 BE; `u16::MAX` for none) and bytes.
/// A row of the count alone (written before owners were kept) leaves them
/// unknown; a scope without a row has no records, so no owners.
#[derive(Debug, Clone, PartialEq)]
struct CountRow {
    count: u64,
    owners: Option<Vec<Option<String>>>,
}

impl CountRow {
    fn decode(bytes: Option<Vec<u8>>) -> Result<Self, StoreError> {
        let Some(bytes) = bytes else {
            return Ok(CountRow {
                count: 0,
                owners: Some(Vec::new()),
            });
        };
        let bad = || StoreError::corrupt("record count", "bad layout");
        let (count, rest) = bytes.split_first_chunk::<8>().ok_or_else(bad)?;
        let count = u64::from_be_bytes(*count);
        let Some((&marker, mut rest)) = rest.split_first() else {
            return Ok(CountRow {
                count,
                owners: None,
            });
        };
        if marker != 1 {
            return Err(bad());
        }
        let mut owners = Vec::new();
        while let Some((len, tail)) = rest.split_first_chunk::<2>() {
            let len = u16::from_be_bytes(*len);
            if len == u16::MAX {
                owners.push(None);
                rest = tail;
                continue;
            }
            let len = usize::from(len);
            let name = tail.get(..len).ok_or_else(bad)?;
            owners.push(Some(String::from_utf8(name.to_vec()).map_err(|_| bad())?));
            rest = &tail[len..];
        }
        if !rest.is_empty() {
            return Err(bad());
        }
        Ok(CountRow {
            count,
            owners: Some(owners),
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = self.count.to_be_bytes().to_vec();
        if let Some(owners) = &self.owners {
            out.push(1);
            for owner in owners {
                match owner {
                    // Sync ids are a few dozen bytes; a longer one is cut
                    // to fit, which only makes the list a superset's
                    // stand-in that never equals a sync id: reads again.
                    Some(o) => {
                        let len = o.len().min(usize::from(u16::MAX - 1));
                        out.extend_from_slice(&(len as u16).to_be_bytes());
                        out.extend_from_slice(&o.as_bytes()[..len]);
                    }
                    None => out.extend_from_slice(&u16::MAX.to_be_bytes()),
                }
            }
        }
        out
    }

    /// Adds `owner` to known owners; `true` when the row changed.
    fn add_owner(&mut self, owner: Option<&str>) -> bool {
        match &mut self.owners {
            Some(owners) if !owners.iter().any(|o| o.as_deref() == owner) => {
                owners.push(owner.map(str::to_string));
                true
            }
            _ => false,
        }
    }

    /// Whether every stamp in the scope is known to be `sync_id`'s.
    fn only(&self, sync_id: &str) -> bool {
        self.owners
            .as_ref()
            .is_some_and(|o| o.iter().all(|o| o.as_deref() == Some(sync_id)))
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
        let lock = self.lock(scope.lock_key()).await?;
        let record_keys: Vec<Vec<u8>> = chunk
            .iter()
            .map(|i| scope.record_key(&i.external_id))
            .collect();
        let headers = self
            .backend()
            .get_many(Table::Records, &record_keys)
            .await?;
        // What is read of the records a chunk replaces is only what the
        // semantics look at: their headers (hash, times, position). A save
        // or delete replaces the JSON without reading it (an unchanged save
        // keeps the stored entry and only gets new stamps, which is all
        // that is written for it below, unless the record was pruned: then
        // its entry gets the JSON back), so only batchUpdate, which merges
        // into the stored JSON, reads the entries. No write keeps the old
        // stamps, so they are not read: every row written gets the
        // writer's. `existing[i]` is the row of `chunk[i]`.
        let mut existing: Vec<Option<StoredRecord>> = Vec::with_capacity(chunk.len());
        for (incoming, header) in chunk.iter().zip(headers) {
            existing.push(match header {
                Some(h) => Some(rows::decode_record(
                    incoming.external_id.clone(),
                    &h,
                    None,
                    false,
                )?),
                None => None,
            });
        }
        if kind == WriteKind::Update {
            let stored: Vec<usize> = (0..existing.len())
                .filter(|&i| existing[i].is_some())
                .collect();
            let keys: Vec<Vec<u8>> = stored
                .iter()
                .filter_map(|&i| existing[i].as_ref())
                .map(|r| scope.index_key(&r.position()))
                .collect();
            let entries = self.backend().get_many(Table::RecordIndex, &keys).await?;
            for (i, entry) in stored.into_iter().zip(entries) {
                if let Some(r) = existing[i].as_mut() {
                    let entry = entry.ok_or_else(|| missing_entry(&r.external_id))?;
                    let (_, row) = rows::decode_entry(&entry)?;
                    let (_, json) = rows::decode_header(row)?;
                    r.json = rows::decode_json(json)?;
                }
            }
        }
        // Where each stored row is and whether it counts, for after the
        // rows have gone into the plan.
        let old: Vec<Option<(Position, bool)>> = existing
            .iter()
            .map(|r| r.as_ref().map(|r| (r.position(), r.deleted_at.is_none())))
            .collect();
        // A pruned record saved unchanged gets its payload written back.
        let pruned: Vec<bool> = existing
            .iter()
            .map(|r| r.as_ref().is_some_and(|r| r.pruned_at.is_some()))
            .collect();
        let mut count_row = CountRow::decode(
            self.backend()
                .get(Table::RecordCounts, &scope.count_key)
                .await?,
        )?;
        let count_before = count_row.count;
        let write = ChunkWrite {
            kind,
            conn,
            model,
            ctx,
            now: self.write_time(&scope).await?,
        };
        // Should the write fail, the strategy's cursor must not have moved.
        let merging_before = merging.clone();
        let (planned, changes) = rt::plan_chunk(write, chunk, merging, existing)?;

        // A write order with one entry per id, the last write winning, as
        // it would if the rows were written one after another.
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(planned.len());
        for (i, (_, row, _)) in planned.iter().enumerate() {
            last.insert(row.external_id.as_str(), i);
        }
        let mut ops = Vec::with_capacity(planned.len() * 4 + 1);
        // Same JSON, same times: only who saw it last changes. Their
        // stamps are encoded below unless a job run notes them instead.
        let mut unchanged: Vec<(Vec<u8>, &StoredRecord)> = Vec::new();
        let mut alive: i64 = 0;
        let mut record_keys: Vec<Option<Vec<u8>>> = record_keys.into_iter().map(Some).collect();
        for (i, (index, row, outcome)) in planned.iter().enumerate() {
            if last.get(row.external_id.as_str()) != Some(&i) {
                continue;
            }
            let key = record_keys[*index]
                .take()
                .unwrap_or_else(|| scope.record_key(&row.external_id));
            if kind == WriteKind::Save && *outcome == Outcome::Unchanged && !pruned[*index] {
                unchanged.push((key, row));
                continue;
            }
            let stamp = Stamp::of(row).encode();
            let header = RowHeader::of(row);
            let position = header.position();
            if let Some((old_position, old_alive)) = &old[*index] {
                alive -= i64::from(*old_alive);
                if *old_position != position {
                    ops.push(Op::Delete {
                        table: Table::RecordIndex,
                        key: scope.index_key(old_position),
                    });
                }
            }
            alive += i64::from(header.alive());
            ops.push(Op::Put {
                table: Table::RecordIndex,
                key: scope.index_key(&position),
                value: header.encode_entry(&row.external_id, &row.json)?,
            });
            ops.push(Op::Put {
                table: Table::Records,
                key: key.clone(),
                value: header.encode_header(),
            });
            ops.push(Op::Put {
                table: Table::RecordStamps,
                key,
                value: stamp,
            });
        }
        let count_after = count_before.saturating_add_signed(alive);
        // Every row written is stamped with the writer's sync (a job run's
        // note stamps those another sync stamped, with its own).
        let writes = !ops.is_empty() || !unchanged.is_empty();
        let new_owner = writes && count_row.add_owner(ctx.sync_id.as_deref());
        let all_ours = ctx.sync_id.as_deref().is_some_and(|s| count_row.only(s));
        if count_after != count_before || (writes && count_before == 0) || new_owner {
            // The count row also marks the model as present (`models`).
            count_row.count = count_after;
            ops.push(Op::Put {
                table: Table::RecordCounts,
                key: scope.count_key.clone(),
                value: count_row.encode(),
            });
        }
        // A chunk of unchanged records only moves their stamps, which
        // matter only to this run's `track_deletes`: that runs only if the
        // run succeeds (a crash fails it), reads them as written, and its
        // own durable write puts them on disk with it. A later run stamps
        // what it saves again. So they are written without a flush, and
        // without waiting: the scope stays locked until they are written
        // (whoever reads or writes the scope next sees them, or fails with
        // their error), while the script goes on to its next batch. A job
        // run notes them as seen instead (see [`Seen`]).
        if !writes {
            return Ok(changes);
        }
        fn stamps(unchanged: Vec<(Vec<u8>, &StoredRecord)>) -> impl Iterator<Item = Op> + '_ {
            unchanged.into_iter().map(|(key, row)| Op::Put {
                table: Table::RecordStamps,
                key,
                value: Stamp::of(row).encode(),
            })
        }
        if ops.is_empty() {
            match (ctx.job_run, &ctx.sync_id, ctx.job_id) {
                (true, Some(sync_id), Some(job)) => {
                    let keys = unchanged.into_iter().map(|(key, _)| key).collect();
                    let seen = Seen {
                        backend: Arc::clone(&self.inner.shared.backend),
                        scope: scope.prefix.clone(),
                        sync_id: sync_id.clone(),
                        job,
                        all_ours,
                    };
                    lock.release_after(seen.note(keys)).await?;
                }
                _ => {
                    let write = self
                        .backend()
                        .start_unflushed_in_order(stamps(unchanged).collect());
                    lock.release_after(async move { Ok(write.await?) }).await?;
                }
            }
            return Ok(changes);
        }
        ops.extend(stamps(unchanged));
        if let Err(e) = self.backend().apply(ops).await {
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
        let found = self.entries_by_ids(&scope, ids).await?;
        let keys: Vec<Vec<u8>> = found.iter().map(|(id, _)| scope.record_key(id)).collect();
        let stamps = self.backend().get_many(Table::RecordStamps, &keys).await?;
        let mut out = Vec::with_capacity(found.len());
        for ((id, entry), stamp) in found.into_iter().zip(stamps) {
            let (_, row) = rows::decode_entry(&entry)?;
            out.push(rows::decode_record(id, row, stamp.as_deref(), true)?);
        }
        Ok(out)
    }

    /// The paging entries of these ids (each once, in the order of `ids`;
    /// unknown ids are absent): their headers say where the entries are.
    /// Reads without the scope's lock, so a record rewritten between the
    /// two reads has moved its entry; it is looked up again.
    async fn entries_by_ids(
        &self,
        scope: &Scope,
        ids: &[String],
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut seen = HashSet::with_capacity(ids.len());
        let ids: Vec<&String> = ids.iter().filter(|id| seen.insert(*id)).collect();
        let mut found: Vec<Option<Vec<u8>>> = vec![None; ids.len()];
        let mut todo: Vec<usize> = (0..ids.len()).collect();
        for _ in 0..ENTRY_RETRIES {
            let keys: Vec<Vec<u8>> = todo.iter().map(|&i| scope.record_key(ids[i])).collect();
            let headers = self.backend().get_many(Table::Records, &keys).await?;
            let mut wanted = Vec::new();
            let mut index_keys = Vec::new();
            for (&i, header) in todo.iter().zip(headers) {
                if let Some(header) = header {
                    let (h, _) = rows::decode_header(&header)?;
                    wanted.push(i);
                    index_keys.push(scope.index_key(&h.position()));
                }
            }
            let entries = self
                .backend()
                .get_many(Table::RecordIndex, &index_keys)
                .await?;
            todo.clear();
            for (i, entry) in wanted.into_iter().zip(entries) {
                match entry {
                    Some(e) => found[i] = Some(e),
                    None => todo.push(i),
                }
            }
            if todo.is_empty() {
                break;
            }
        }
        if let Some(&i) = todo.first() {
            return Err(missing_entry(ids[i]));
        }
        Ok(ids
            .into_iter()
            .zip(found)
            .filter_map(|(id, e)| e.map(|e| (id.clone(), e)))
            .collect())
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
        let (mut records, cut) = if query.ids.is_empty() {
            self.page_by_index(&scope, query, want).await?
        } else {
            (self.page_by_ids(&scope, query, want).await?, false)
        };
        let next = if records.len() > query.limit {
            records.truncate(query.limit);
            records.last().map(RawRecord::position)
        } else if cut {
            // Fewer than asked, at the byte bound: the rest on the next page.
            records.last().map(RawRecord::position)
        } else {
            None
        };
        Ok(RawRecordsPage { records, next })
    }

    /// Up to `want` records after the query's cursor and time, in index
    /// order, passing the filter: one range read of the paging entries
    /// (a few when records are large: after a first read of at most
    /// [`PAGE_FIRST_READ`] entries, each read is sized from the largest
    /// entry so far, at most [`PAGE_MAX_READ`]).
    /// Stops early, `true`, once the records kept hold [`PAGE_BYTES`]: a
    /// page of 10,000 records of megabytes each would not fit in memory.
    /// No read copies out more than that bound and one entry: the entries
    /// past it are only looked at in place (`scan_where`), and read again
    /// by the next read or page.
    async fn page_by_index(
        &self,
        scope: &Scope,
        query: &RecordsQuery,
        want: usize,
    ) -> Result<(Vec<RawRecord>, bool), StoreError> {
        // Both bounds are "strictly after" keys; the later one wins.
        let from_cursor = query.after.as_ref().map(|p| scope.index_key(p));
        let from_time = query
            .modified_after
            .map(|t| keys::index_time_floor(&scope.prefix, t));
        let mut after = match (from_cursor, from_time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        // No read holds a snapshot across the scans (nor, on sled, within
        // one): a record a sync moves to the end of the order meanwhile
        // can be read at its old place and its new one. The later, newer,
        // one is kept, as the record is once in a page.
        let mut out: Vec<Option<RawRecord>> = Vec::with_capacity(want.min(PAGE_FIRST_READ));
        let mut at: HashMap<uuid::Uuid, usize> = HashMap::with_capacity(want.min(PAGE_FIRST_READ));
        let mut live = 0usize;
        let done =
            |out: Vec<Option<RawRecord>>, cut: bool| Ok((out.into_iter().flatten().collect(), cut));
        // Bytes of the records kept, and the largest entry read.
        let (mut kept, mut largest) = (0usize, 0usize);
        loop {
            // With a filter, rows are dropped after reading; read ahead more.
            let batch = if query.filter.is_some() {
                (want - live).max(SCAN_BATCH)
            } else {
                want - live
            };
            // As many as fit in what is left of the byte bound at the size
            // of the largest read so far, and never more than
            // PAGE_MAX_READ in one read (sizes vary): a page overshoots
            // the bound by at most that many records.
            let fit = PAGE_BYTES
                .saturating_sub(kept)
                .checked_div(largest)
                .map_or(PAGE_FIRST_READ, |n| n.min(PAGE_MAX_READ));
            let batch = batch.min(fit.max(1));
            let budget = PAGE_BYTES.saturating_sub(kept);
            let mut taken = 0usize;
            let entries = self
                .backend()
                .scan_where(
                    Table::RecordIndex,
                    scope.prefix.as_bytes(),
                    after.as_deref(),
                    batch,
                    false,
                    &mut |entry: &[u8]| {
                        let take = taken < budget;
                        if take {
                            taken = taken.saturating_add(entry.len());
                        }
                        take
                    },
                )
                .await?;
            let read = entries.len();
            let mut last = entries.last().map(|(k, _)| k.clone());
            let mut over = false;
            for (key, entry) in entries {
                let Some(entry) = entry else {
                    // Past this read's bytes: the next read starts here.
                    over = true;
                    break;
                };
                last = Some(key);
                let size = entry.len();
                largest = largest.max(size);
                let record = rows::decode_raw(entry)?;
                if query.filter.is_some_and(|f| !f.keeps_raw(&record)) {
                    continue;
                }
                kept = kept.saturating_add(size);
                if let Some(earlier) = at.insert(record.internal_id, out.len()) {
                    out[earlier] = None;
                    live -= 1;
                }
                out.push(Some(record));
                live += 1;
                if live == want {
                    return done(out, false);
                }
                if kept >= PAGE_BYTES {
                    return done(out, true);
                }
            }
            if read < batch && !over {
                return done(out, false);
            }
            after = last;
        }
    }

    async fn page_by_ids(
        &self,
        scope: &Scope,
        query: &RecordsQuery,
        want: usize,
    ) -> Result<Vec<RawRecord>, StoreError> {
        let mut records = Vec::new();
        for (_, entry) in self.entries_by_ids(scope, &query.ids).await? {
            let record = rows::decode_raw(entry)?;
            let position = record.position();
            if query.after.as_ref().is_some_and(|a| position <= *a)
                || query.modified_after.is_some_and(|t| record.updated_at < t)
                || query.filter.is_some_and(|f| !f.keeps_raw(&record))
            {
                continue;
            }
            records.push(record);
        }
        records.sort_by_key(RawRecord::position);
        records.truncate(want);
        Ok(records)
    }

    /// `track_deletes` after a successful run: soft-deletes every
    /// non-deleted record of the model last written by `sync_id` in a job
    /// before `since_job` (the run's own job, or the job of a
    /// `trackDeletesStart` an earlier run made) (`deleted_at = updated_at
    /// = now`), and returns how many. Reads the small stamps, not the rows,
    /// to find them; writes a batch at a time.
    pub async fn delete_stale(
        &self,
        conn: &ConnectionRef,
        model: &str,
        sync_id: &str,
        since_job: u64,
    ) -> Result<u64, StoreError> {
        let scope = self.scope(conn, model);
        let _lock = self.lock(scope.lock_key()).await?;
        // What the sync's jobs saw unchanged gets its stamps now.
        self.settle_seen(&scope, sync_id, true).await?;
        let mut count_row = CountRow::decode(
            self.backend()
                .get(Table::RecordCounts, &scope.count_key)
                .await?,
        )?;
        let mut count = count_row.count;
        // The scan reads every stamp of the scope: what it finds is the
        // scope's exact owner list.
        let mut owners: Vec<Option<String>> = Vec::new();
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
                if !owners.contains(&stamp.sync_id) {
                    owners.push(stamp.sync_id.clone());
                }
                if stamp.sync_id.as_deref() == Some(sync_id)
                    && stamp.job_id.is_some_and(|j| j < since_job)
                {
                    stale.push(key.clone());
                }
            }
            let headers = self.backend().get_many(Table::Records, &stale).await?;
            let mut alive = Vec::new();
            for (key, header) in stale.into_iter().zip(headers) {
                let Some(header) = header else { continue };
                let (header, _) = rows::decode_header(&header)?;
                if header.alive() {
                    alive.push((key, header));
                }
            }
            let index_keys: Vec<Vec<u8>> = alive
                .iter()
                .map(|(_, h)| scope.index_key(&h.position()))
                .collect();
            let entries = self
                .backend()
                .get_many(Table::RecordIndex, &index_keys)
                .await?;
            // Each batch lands after everything written before it, the
            // batches before it included: a client paging by cursor
            // between two batches (no lock keeps it out) finds the later
            // ones after its cursor, where one time for all would put
            // some of them behind it, by id.
            let now = self.write_time(&scope).await?;
            let mut ops = Vec::new();
            for (((key, mut header), old_key), entry) in
                alive.into_iter().zip(index_keys).zip(entries)
            {
                let external_id = scope.external_id(&key);
                let entry = entry.ok_or_else(|| missing_entry(&external_id))?;
                let (_, row) = rows::decode_entry(&entry)?;
                let (_, json) = rows::decode_header(row)?;
                header.deleted_at = Some(now);
                header.updated_at = now;
                ops.push(Op::Delete {
                    table: Table::RecordIndex,
                    key: old_key,
                });
                ops.push(Op::Put {
                    table: Table::RecordIndex,
                    key: scope.index_key(&header.position()),
                    value: header.encode_entry_with(&external_id, json),
                });
                ops.push(Op::Put {
                    table: Table::Records,
                    value: header.encode_header(),
                    key,
                });
                deleted += 1;
                count = count.saturating_sub(1);
            }
            if !ops.is_empty() {
                count_row.count = count;
                ops.push(Op::Put {
                    table: Table::RecordCounts,
                    key: scope.count_key.clone(),
                    value: count_row.encode(),
                });
                self.backend().apply(ops).await?;
            }
            if stamps.len() < SCAN_BATCH {
                // Keep the exact owners (fewer than the list had, or known
                // where they were not): a crash losing this keeps the old
                // list, which was a superset or unknown.
                let exact = count_row.owners.as_ref().is_some_and(|o| {
                    o.len() == owners.len() && o.iter().all(|x| owners.contains(x))
                });
                if !exact {
                    count_row.owners = Some(owners);
                    self.backend()
                        .apply_unflushed(vec![Op::Put {
                            table: Table::RecordCounts,
                            key: scope.count_key.clone(),
                            value: count_row.encode(),
                        }])
                        .await?;
                }
                return Ok(deleted);
            }
            after = stamps.into_iter().next_back().map(|(k, _)| k);
        }
    }

    /// Forgets what sync `sync_id`'s jobs noted as seen in this model (see
    /// `Seen`): the server calls it when a job run has ended (after its
    /// `track_deletes`, if any), so the notes of a run whose deletes were
    /// not tracked (or that failed, or a crash cut short) do not pile up.
    pub async fn forget_seen(
        &self,
        conn: &ConnectionRef,
        model: &str,
        sync_id: &str,
    ) -> Result<(), StoreError> {
        let scope = self.scope(conn, model);
        let _lock = self.lock(scope.lock_key()).await?;
        self.settle_seen(&scope, sync_id, false).await
    }

    /// Stamps what sync `sync_id`'s jobs noted as seen in this model, each
    /// record with the job that saw it, then deletes the notes: the
    /// server calls it instead of [`EnvStore::forget_seen`] when a
    /// `trackDeletesStart` is still open, so a later run's
    /// `trackDeletesEnd` keeps what this one saw.
    pub async fn keep_seen(
        &self,
        conn: &ConnectionRef,
        model: &str,
        sync_id: &str,
    ) -> Result<(), StoreError> {
        let scope = self.scope(conn, model);
        let _lock = self.lock(scope.lock_key()).await?;
        self.settle_seen(&scope, sync_id, true).await
    }

    /// Deletes sync `sync_id`'s seen notes in a scope (the caller holds its
    /// lock), first (`stamp`) stamping the records each note lists with the
    /// note's job where the sync still stamps them with an older one (a
    /// record another writer stamped since keeps that stamp, as it would
    /// had the job stamped it when it saw it).
    async fn settle_seen(
        &self,
        scope: &Scope,
        sync_id: &str,
        stamp: bool,
    ) -> Result<(), StoreError> {
        let notes = scope.prefix.clone().part(sync_id);
        loop {
            let entries = self
                .backend()
                .scan(Table::RecordSeen, notes.as_bytes(), None, SEEN_BATCH, false)
                .await?;
            if entries.is_empty() {
                return Ok(());
            }
            let mut ops = Vec::new();
            for (key, value) in &entries {
                // The note's key: the sync's prefix, its job (a part: its
                // length, 8, then the job), a number.
                let at = notes.as_bytes().len() + 4;
                let job = key
                    .get(at..at + 8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes);
                if stamp && let Some(job) = job {
                    let keys: Vec<Vec<u8>> = rows::decode_ids(value)?
                        .into_iter()
                        .map(|id| scope.prefix.clone().tail(id))
                        .collect();
                    let stamps = self.backend().get_many(Table::RecordStamps, &keys).await?;
                    let stamp = Stamp::job(sync_id, job).encode();
                    for (key, old) in keys.into_iter().zip(stamps) {
                        let Some(old) = old else { continue };
                        let old = rows::decode_stamp(&old)?;
                        if old.sync_id.as_deref() == Some(sync_id)
                            && old.job_id.is_none_or(|j| j < job)
                        {
                            ops.push(Op::Put {
                                table: Table::RecordStamps,
                                key,
                                value: stamp.clone(),
                            });
                        }
                    }
                }
                ops.push(Op::Delete {
                    table: Table::RecordSeen,
                    key: key.clone(),
                });
            }
            self.backend().apply_unflushed(ops).await?;
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
        let _lock = self.lock(scope.lock_key()).await?;
        let mut count_row = CountRow::decode(
            self.backend()
                .get(Table::RecordCounts, &scope.count_key)
                .await?,
        )?;
        let mut count = count_row.count;
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
            count_row.count = count;
            ops.push(Op::Put {
                table: Table::RecordCounts,
                key: scope.count_key.clone(),
                value: count_row.encode(),
            });
            self.backend().apply(ops).await?;
        }
        // Entries without a row (none unless the store was damaged).
        self.delete_prefix(Table::RecordIndex, scope.prefix.as_bytes())
            .await?;
        self.delete_prefix(Table::RecordStamps, scope.prefix.as_bytes())
            .await?;
        self.delete_prefix(Table::RecordSeen, scope.prefix.as_bytes())
            .await?;
        self.backend()
            .apply(vec![Op::Delete {
                table: Table::RecordCounts,
                key: scope.count_key.clone(),
            }])
            .await?;
        Ok(removed)
    }

    /// `PATCH /records/prune`: empties the payload of up to `limit`
    /// records of a model, oldest first, among those at or before `until`
    /// in `(updated_at, internal id)` order and not pruned yet. Each keeps
    /// its id, times and place (so cursors stay valid and the count is
    /// unchanged) and gets a `pruned_at`; a later write of the record
    /// (even an unchanged save) fills its payload again. Writes a batch at
    /// a time, each flushed, so a crash leaves some pruned and the rest
    /// whole. `has_more`: records to prune are left at or before `until`.
    pub async fn prune_records(
        &self,
        conn: &ConnectionRef,
        model: &str,
        until: &Position,
        limit: usize,
    ) -> Result<Pruned, StoreError> {
        let scope = self.scope(conn, model);
        let _lock = self.lock(scope.lock_key()).await?;
        let now = rt::now();
        // Keys order as positions do.
        let until = scope.index_key(until);
        let mut pruned = Pruned::default();
        let mut after: Option<Vec<u8>> = None;
        // Entries hold whole records: each read is sized from the largest
        // entry of the one before, to hold about a page's bytes.
        let mut batch = PAGE_FIRST_READ;
        loop {
            let entries = self
                .backend()
                .scan(
                    Table::RecordIndex,
                    scope.prefix.as_bytes(),
                    after.as_deref(),
                    batch,
                    false,
                )
                .await?;
            let mut ops = Vec::new();
            let mut done = entries.len() < batch;
            let largest = entries.iter().map(|(_, e)| e.len()).max().unwrap_or(1);
            batch = (PAGE_BYTES / largest.max(1)).clamp(1, SCAN_BATCH);
            for (key, entry) in &entries {
                if key.as_slice() > until.as_slice() {
                    done = true;
                    break;
                }
                let (external_id, row) = rows::decode_entry(entry)?;
                let (mut header, _) = rows::decode_header(row)?;
                if header.pruned_at.is_some() {
                    continue;
                }
                if pruned.count == limit as u64 {
                    pruned.has_more = true;
                    done = true;
                    break;
                }
                header.pruned_at = Some(now);
                ops.push(Op::Put {
                    table: Table::RecordIndex,
                    key: key.clone(),
                    value: header.encode_entry_with(external_id, b"{}"),
                });
                ops.push(Op::Put {
                    table: Table::Records,
                    key: scope.record_key(external_id),
                    value: header.encode_header(),
                });
                pruned.count += 1;
            }
            if !ops.is_empty() {
                self.backend().apply(ops).await?;
            }
            if done {
                return Ok(pruned);
            }
            after = entries.into_iter().next_back().map(|(k, _)| k);
        }
    }

    /// The number of non-deleted records of a model: a counter kept in step
    /// by every write, so reading it costs one lookup.
    pub async fn record_count(&self, conn: &ConnectionRef, model: &str) -> Result<u64, StoreError> {
        let scope = self.scope(conn, model);
        Ok(CountRow::decode(
            self.backend()
                .get(Table::RecordCounts, &scope.count_key)
                .await?,
        )?
        .count)
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

/// What [`EnvStore::prune_records`] did: how many records it pruned, and
/// whether more are left to prune up to its cursor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub count: u64,
    pub has_more: bool,
}

/// How many bytes of records a page reads at most (one record more than
/// that can be in it): `GET /records` and `listRecords` answer fewer than
/// their limit, with a cursor, rather than hold gigabytes.
pub const PAGE_BYTES: usize = 32 << 20;

/// The most entries a page reads before it knows how big they are, and
/// in any one read after.
const PAGE_FIRST_READ: usize = 128;
const PAGE_MAX_READ: usize = 256;

/// The document collection of syncs' checkpoints, among each
/// connection's documents (so deleting a connection deletes them; a new
/// connection of the same id starts without).
const CHECKPOINTS: &str = "checkpoints";

/// Where earlier versions kept checkpoints: among
/// the environment's documents, keyed by connection and sync separated by
/// a byte neither holds. Read when a connection has none of its own,
/// deleted when one is written or the connection is deleted.
fn legacy_checkpoint_key(conn: &ConnectionRef, key: &str) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{key}",
        conn.provider_config_key, conn.connection_id
    )
}

impl EnvStore {
    /// Deletes the connection's checkpoints of the earlier layout (a
    /// connection deleted by an earlier version left them: a new one of
    /// its id calls this so as not to read them).
    pub async fn delete_legacy_checkpoints(&self, conn: &ConnectionRef) -> Result<(), StoreError> {
        let prefix = self.doc_key(DocSpace::Env, CHECKPOINTS, &legacy_checkpoint_key(conn, ""));
        self.delete_prefix(Table::Docs, &prefix).await?;
        Ok(())
    }
}

/// Rewrites a format-1 store's records into format 2's layout: each
/// record's JSON moves from its row by id into its paging entry, the row
/// keeps the header, and the hash is recomputed with today's
/// [`rt::text_hash`] (so that the next save of an unchanged record finds
/// it unchanged). An entry that names no record at its position (which
/// the format-1 reader passed over) is deleted. A batch at a time, each
/// batch atomic; an entry already rewritten (a crash during the
/// migration) is recognised and kept, so running it again finishes the
/// job. Returns how many records it moved.
pub(crate) async fn migrate_from_format_1(backend: &dyn crate::Backend) -> Result<u64, StoreError> {
    let mut moved = 0u64;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let batch = backend
            .scan(Table::RecordIndex, b"", after.as_deref(), SCAN_BATCH, false)
            .await?;
        let Some((last, _)) = batch.last() else {
            return Ok(moved);
        };
        after = Some(last.clone());
        // A format-1 entry's value is the bare external id, and its row by
        // id is the full row at the entry's position. An entry already
        // rewritten holds the id and the full row, and its row by id is a
        // header at the same position.
        let scope_of = |k: &[u8]| k[..k.len().saturating_sub(keys::POSITION_LEN)].to_vec();
        let at_entry = |k: &[u8], header: &RowHeader| {
            k.len() >= keys::POSITION_LEN
                && keys::index_key_tail(&header.position()) == k[k.len() - keys::POSITION_LEN..]
        };
        let bare_keys: Vec<Vec<u8>> = batch
            .iter()
            .map(|(k, v)| [scope_of(k).as_slice(), v].concat())
            .collect();
        let moved_keys: Vec<Vec<u8>> = batch
            .iter()
            .map(|(k, v)| match rows::decode_entry(v) {
                Ok((id, _)) => [scope_of(k).as_slice(), id.as_bytes()].concat(),
                Err(_) => Vec::new(),
            })
            .collect();
        let bare_rows = backend.get_many(Table::Records, &bare_keys).await?;
        let moved_rows = backend.get_many(Table::Records, &moved_keys).await?;
        let mut ops = Vec::new();
        for ((((index_key, value), row_key), bare), moved_row) in
            batch.iter().zip(bare_keys).zip(bare_rows).zip(moved_rows)
        {
            let full = bare
                .filter(|row| !rows::is_header_only(row))
                .and_then(|row| {
                    let (header, json) = rows::decode_header(&row).ok()?;
                    let id = std::str::from_utf8(value).ok()?;
                    at_entry(index_key, &header).then(|| (header, id.to_string(), json.to_vec()))
                });
            if let Some((mut header, id, json)) = full {
                header.data_hash = rt::text_hash(&json);
                ops.push(Op::Put {
                    table: Table::RecordIndex,
                    key: index_key.clone(),
                    value: header.encode_entry_with(&id, &json),
                });
                ops.push(Op::Put {
                    table: Table::Records,
                    key: row_key,
                    value: header.encode_header(),
                });
                moved += 1;
                continue;
            }
            let done = moved_row.is_some_and(|row| {
                rows::is_header_only(&row)
                    && rows::decode_header(&row).is_ok_and(|(h, _)| at_entry(index_key, &h))
            });
            if !done {
                // An entry naming no record at its position (which the
                // format-1 reader passed over): it would only stand in the
                // way of the pages.
                ops.push(Op::Delete {
                    table: Table::RecordIndex,
                    key: index_key.clone(),
                });
            }
        }
        if !ops.is_empty() {
            backend.apply(ops).await?;
        }
    }
}

/// How often [`EnvStore::entries_by_ids`] looks again for entries that
/// moved while it read; more would mean a write per read, endlessly.
const ENTRY_RETRIES: usize = 8;

/// How many seen notes [`EnvStore::settle_seen`] takes at a time (each
/// lists up to a chunk's records).
const SEEN_BATCH: usize = 16;

/// Numbers a process's seen notes: a job runs in one process, so the
/// notes of one job never share a key.
static SEEN_NOTES: AtomicU64 = AtomicU64::new(0);

/// A job run's chunk of records saved unchanged, noted as seen.
///
/// Stamping each such record (a tiny write per record, on sled several
/// microseconds of its writer plus the garbage collection of the node
/// versions it leaves behind) is the largest part of an unchanged
/// batchSave, and only `track_deletes` reads stamps. So a job run writes,
/// for a chunk it saved unchanged, one note listing the chunk's records
/// (`RecordSeen`, keyed by scope, sync, job), and stamps only the records
/// another writer stamped last (the job takes them over, as the original
/// does), which it reads their stamps to find unless the scope's count
/// row says every stamp is this sync's ([`CountRow`]). `delete_stale` for that job first stamps what its notes list and
/// the sync still stamps; every job run's end deletes the sync's notes
/// (`forget_seen`). Notes are written unflushed, like the stamps they
/// stand for: a crash fails the run, and a failed run tracks no deletes.
struct Seen {
    backend: Arc<dyn Backend>,
    scope: KeyBuf,
    sync_id: String,
    job: u64,
    /// The scope's count row says every stamp is this sync's: none to
    /// take over, nothing to read.
    all_ours: bool,
}

impl Seen {
    /// Notes the records of `keys` (their `Records` keys) as seen.
    async fn note(self, keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
        let stamps = if self.all_ours {
            Vec::new()
        } else {
            self.backend.get_many(Table::RecordStamps, &keys).await?
        };
        let stamp = Stamp::job(&self.sync_id, self.job).encode();
        let mut ops = Vec::new();
        for (key, old) in keys.iter().zip(stamps) {
            let ours = match old {
                Some(old) => rows::decode_stamp(&old)?.sync_id.as_deref() == Some(&self.sync_id),
                None => false,
            };
            if !ours {
                ops.push(Op::Put {
                    table: Table::RecordStamps,
                    key: key.clone(),
                    value: stamp.clone(),
                });
            }
        }
        let start = self.scope.as_bytes().len();
        let ids = rows::encode_ids(keys.iter().map(|k| &k[start.min(k.len())..]));
        let n = SEEN_NOTES.fetch_add(1, Ordering::Relaxed);
        ops.push(Op::Put {
            table: Table::RecordSeen,
            key: self
                .scope
                .part(&self.sync_id)
                .part(self.job.to_be_bytes())
                .tail(n.to_be_bytes()),
            value: ids,
        });
        Ok(self.backend.start_unflushed_in_order(ops).await?)
    }
}

/// A header whose paging entry is not where it says: a damaged store.
fn missing_entry(external_id: &str) -> StoreError {
    StoreError::corrupt(
        "record index",
        format!("the entry of record {external_id:?} is missing"),
    )
}

fn record_error(e: StoreError) -> RecordError {
    match e {
        StoreError::Record(e) => e,
        e => RecordError::Backend(e.to_string()),
    }
}

#[async_trait::async_trait]
impl RecordStore for EnvStore {
    async fn checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
    ) -> Result<Option<serde_json::Value>, RecordError> {
        match self.connection_doc(conn, CHECKPOINTS, key).await {
            Ok(None) => {
                self.doc(CHECKPOINTS, &legacy_checkpoint_key(conn, key))
                    .await
            }
            other => other,
        }
        .map_err(record_error)
    }

    async fn set_checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
        value: Option<serde_json::Value>,
    ) -> Result<(), RecordError> {
        // One atomic write: this connection's checkpoint, and none left in
        // the earlier place.
        let mut ops = match &value {
            Some(v) => self
                .doc_put(DocSpace::Connection(conn), CHECKPOINTS, key, v)
                .map_err(record_error)?,
            None => vec![Op::Delete {
                table: Table::Docs,
                key: self.doc_key(DocSpace::Connection(conn), CHECKPOINTS, key),
            }],
        };
        ops.push(Op::Delete {
            table: Table::Docs,
            key: self.doc_key(
                DocSpace::Env,
                CHECKPOINTS,
                &legacy_checkpoint_key(conn, key),
            ),
        });
        self.backend()
            .apply(ops)
            .await
            .map_err(|e| record_error(e.into()))
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
