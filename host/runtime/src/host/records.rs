//! `nango:scripts/records` and `nango:scripts/sync-context`.

use std::sync::Arc;

use serde_json::Value;

use super::HostState;
use crate::ScriptKind;
use crate::batch::{self, Check, RecordInfo};
use crate::bindings::records::{self, MergingStrategy};
use crate::bindings::sync_context;
use crate::bindings::types::NangoError;
use crate::exec::{LogLevel, TrackedDeletes};
use crate::proxy::nango_error;
use crate::records::{
    BatchCall, CHUNK_SIZE, IDS_PER_LOOKUP, Merging, RecordError, WriteContext, WriteKind,
    prepare_hashed_chunk,
};

/// The largest record (at its in-memory size) a validation warning copies
/// into the log.
const MAX_SAMPLE_WEIGHT: usize = 64 << 10;

fn record_error(e: RecordError) -> NangoError {
    let code = match &e {
        RecordError::InvalidId { .. } | RecordError::NotAnObject { .. } => "invalid_sync_record",
        RecordError::TooLarge { .. } => "payload_too_large",
        RecordError::Backend(_) => "records_store_error",
    };
    nango_error(code, e.to_string())
}

impl HostState {
    fn require_sync(&self, call: &str) -> Result<(), NangoError> {
        if self.kind == ScriptKind::Sync {
            Ok(())
        } else {
            Err(nango_error(
                "invalid_request",
                format!("{call} is only available in syncs"),
            ))
        }
    }

    /// The full model name, after checking it is a declared output.
    fn model_name(&self, model: &str) -> Result<String, NangoError> {
        if let Some(declared) = &self.exec.sync.models
            && !declared.iter().any(|m| m == model)
        {
            return Err(nango_error(
                "invalid_model",
                format!(
                    "The model '{model}' is not included in the declared sync models: {}.",
                    declared.join(", ")
                ),
            ));
        }
        Ok(self.exec.sync.model_full_name(model))
    }

    /// What a batch's records are checked against: the model's schema, for
    /// a batchSave of a model that has one.
    fn record_check(&self, kind: WriteKind, model: &str) -> Option<Arc<Check>> {
        let v = self.exec.validation.as_ref()?;
        (kind == WriteKind::Save && v.schema.has_model(model)).then(|| {
            Arc::new(Check {
                validation: Arc::clone(&v.schema),
                model: model.to_string(),
            })
        })
    }

    /// Notes the schema violations of `records` (their infos) in `tally`:
    /// how many failed, and one sampled record.
    fn tally_violations(
        &self,
        tally: &mut Violations,
        model: &str,
        records: &[Value],
        infos: &mut [RecordInfo],
    ) {
        let strict = self.strict();
        // The records are checked without `_nango_metadata` (the original
        // validates a record as JSON would carry it).
        for (r, info) in records.iter().zip(infos) {
            if info.violations.is_empty() {
                continue;
            }
            tally.failed += 1;
            if tally.sample.is_none() {
                let errors = std::mem::take(&mut info.violations);
                // The record itself when it is small; a big one is not
                // copied into the log (its id says which it was).
                let data = if crate::exec::value_weight(r) <= MAX_SAMPLE_WEIGHT {
                    r.clone()
                } else {
                    serde_json::json!({ "id": r.get("id") })
                };
                tally.sample =
                    Some(serde_json::json!({ "data": data, "validation": errors, "model": model }));
            }
            if strict {
                break;
            }
        }
    }

    fn strict(&self) -> bool {
        self.exec
            .validation
            .as_ref()
            .is_some_and(|v| v.schema.strict)
    }

    /// Acts on a batch's schema violations: invalid records are saved with
    /// a warning (one sampled record logged), or refused with
    /// `invalid_sync_record` when validation is strict.
    fn report_violations(&mut self, model: &str, tally: Violations) -> Result<(), NangoError> {
        let Violations { failed, sample } = tally;
        let Some(sample) = sample else {
            return Ok(());
        };
        if self.strict() {
            let mut e = nango_error(
                "invalid_sync_record",
                format!(
                    "Invalid record payload for model {model}: {}",
                    sample["validation"]
                ),
            );
            e.payload = Some(sample.to_string().into());
            return Err(e);
        }
        self.internal_log(
            LogLevel::Warn,
            format!("Invalid records: {failed} failed (sampled to 1)"),
        );
        self.push_log(crate::exec::LogEntry {
            meta: Some(sample),
            ..crate::exec::LogEntry::internal(LogLevel::Warn, "Invalid record payload".into())
        });
        Ok(())
    }

    async fn write_records(
        &mut self,
        kind: WriteKind,
        call: &str,
        model: &str,
        json: Vec<u8>,
    ) -> Result<(), NangoError> {
        self.require_sync(call)?;
        self.check_payload(&format!("the {call} batch"), json.len())?;
        let check = self.record_check(kind, model);
        let json = Arc::new(json);
        let limit = self.limits().max_payload_bytes;
        let max_values = batch::max_values(limit);
        let split = match batch::split(&json, max_values).await {
            Ok(split) => split,
            Err(batch::Unread::NotAnArray) => return not_an_array(call, json).await,
            Err(e) => return Err(unread_error(call, limit, e)),
        };
        if split.is_empty() {
            return Ok(());
        }
        let all = 0..split.len();
        if split.values(all.clone()) > max_values {
            return self
                .write_dense(kind, call, model, &json, &split, check)
                .await;
        }
        let read = batch::read_range(&json, &split, all, check.clone())
            .await
            .map_err(|e| unread_error(call, limit, e))?;
        drop((json, split));
        let (records, mut infos): (Vec<Value>, Vec<RecordInfo>) =
            read.into_iter().map(|r| (r.value, r.info)).unzip();
        let call = BatchCall {
            kind: kind.into(),
            model: model.to_string(),
            records,
        };
        if self.services.records.keep_call(&call) {
            return Ok(());
        }
        let mut records = call.records;
        let full = self.model_name(model)?;
        for (r, info) in records.iter_mut().zip(&infos) {
            if let (true, Value::Object(m)) = (info.has_metadata, r) {
                batch::strip_metadata(m);
            }
        }
        if check.is_some() {
            let mut tally = Violations::default();
            self.tally_violations(&mut tally, model, &records, &mut infos);
            self.report_violations(model, tally)?;
        }
        let mut objects = Vec::with_capacity(records.len());
        for (index, (r, info)) in records.into_iter().zip(infos).enumerate() {
            match (r, info.hash) {
                (Value::Object(m), Some(hash)) => objects.push((m, hash)),
                _ => return Err(record_error(RecordError::NotAnObject { index })),
            }
        }
        let mut merging = self.merging.get(&full).cloned().unwrap_or_default();
        let mut first_index = 0;
        let mut iter = objects.into_iter().peekable();
        while iter.peek().is_some() {
            let chunk: Vec<_> = iter.by_ref().take(CHUNK_SIZE).collect();
            let len = chunk.len();
            if let Err(e) = self
                .write_chunk(kind, &full, chunk, first_index, &mut merging)
                .await
            {
                return Err(self.keep_merging(full, merging, e));
            }
            first_index += len;
        }
        // Set from here on, as the original's: a `setMergingStrategy`
        // after a write is skipped (with a warning).
        self.merging.insert(full, merging);
        Ok(())
    }

    /// [`Self::write_records`] of a batch of more JSON values than are
    /// parsed at once (`max_values` of the payload limit): the same checks
    /// and the same writes of [`CHUNK_SIZE`] records, with at most one
    /// chunk parsed at a time. Every record is parsed and checked (JSON,
    /// an object, its model's schema) before anything is written, as a
    /// batch parsed whole is, then parsed again a chunk at a time to be
    /// written; a chunk's records, which are written together, must hold
    /// at most `max_values` values in all.
    async fn write_dense(
        &mut self,
        kind: WriteKind,
        call: &str,
        model: &str,
        json: &Arc<Vec<u8>>,
        split: &Arc<batch::Split>,
        check: Option<Arc<Check>>,
    ) -> Result<(), NangoError> {
        let limit = self.limits().max_payload_bytes;
        let max_values = batch::max_values(limit);
        let n = split.len();
        let chunks: Vec<std::ops::Range<usize>> = (0..n)
            .step_by(CHUNK_SIZE)
            .map(|start| start..(start + CHUNK_SIZE).min(n))
            .collect();
        if let Some(c) = chunks
            .iter()
            .find(|c| split.values((*c).clone()) > max_values)
        {
            return Err(nango_error(
                "payload_too_large",
                format!(
                    "{call}: records {} to {}, which are written together, hold more than {max_values} JSON values, the most parsed at once (one per {} bytes of the payload limit of {limit} bytes): send records of fewer values",
                    c.start,
                    c.end - 1,
                    batch::BYTES_PER_VALUE
                ),
            ));
        }
        let read = |range: std::ops::Range<usize>, check: Option<Arc<Check>>| {
            let (json, split) = (Arc::clone(json), Arc::clone(split));
            async move {
                batch::read_range(&json, &split, range, check)
                    .await
                    .map_err(|e| unread_error(call, limit, e))
            }
        };
        // A store that keeps the calls as they came (a test's) is given
        // them a chunk at a time, unchecked, as a batch read whole is.
        let first = read(chunks[0].clone(), None).await?;
        let first = BatchCall {
            kind: kind.into(),
            model: model.to_string(),
            records: first.into_iter().map(|r| r.value).collect(),
        };
        if self.services.records.keep_call(&first) {
            drop(first);
            for c in &chunks[1..] {
                let records = read(c.clone(), None).await?;
                self.services.records.keep_call(&BatchCall {
                    kind: kind.into(),
                    model: model.to_string(),
                    records: records.into_iter().map(|r| r.value).collect(),
                });
            }
            return Ok(());
        }
        drop(first);
        let full = self.model_name(model)?;
        // Every record checked; only what is reported kept.
        let mut tally = Violations::default();
        let mut not_an_object = None;
        for c in &chunks {
            let (mut records, mut infos): (Vec<Value>, Vec<RecordInfo>) =
                read(c.clone(), check.clone())
                    .await?
                    .into_iter()
                    .map(|r| (r.value, r.info))
                    .unzip();
            for (i, (r, info)) in records.iter_mut().zip(&infos).enumerate() {
                match r {
                    Value::Object(m) if info.has_metadata => batch::strip_metadata(m),
                    Value::Object(_) => {}
                    _ => {
                        not_an_object.get_or_insert(c.start + i);
                    }
                }
            }
            if check.is_some() {
                self.tally_violations(&mut tally, model, &records, &mut infos);
                if self.strict() && tally.sample.is_some() {
                    break;
                }
            }
        }
        self.report_violations(model, tally)?;
        if let Some(index) = not_an_object {
            return Err(record_error(RecordError::NotAnObject { index }));
        }
        let mut merging = self.merging.get(&full).cloned().unwrap_or_default();
        for c in chunks {
            let chunk = match read(c.clone(), None).await {
                Ok(read) => read,
                Err(e) => {
                    self.merging.insert(full, merging);
                    return Err(e);
                }
            };
            let mut objects = Vec::with_capacity(chunk.len());
            for (i, r) in chunk.into_iter().enumerate() {
                match (r.value, r.info.hash) {
                    (Value::Object(mut m), Some(hash)) => {
                        if r.info.has_metadata {
                            batch::strip_metadata(&mut m);
                        }
                        objects.push((m, hash));
                    }
                    _ => {
                        let e = RecordError::NotAnObject { index: c.start + i };
                        return Err(self.keep_merging(full, merging, e));
                    }
                }
            }
            if let Err(e) = self
                .write_chunk(kind, &full, objects, c.start, &mut merging)
                .await
            {
                return Err(self.keep_merging(full, merging, e));
            }
        }
        self.merging.insert(full, merging);
        Ok(())
    }

    /// Writes one chunk of a batch (its first record the batch's
    /// `first_index`), logging the duplicates it dropped.
    async fn write_chunk(
        &mut self,
        kind: WriteKind,
        full: &str,
        chunk: Vec<(serde_json::Map<String, Value>, String)>,
        first_index: usize,
        merging: &mut Merging,
    ) -> Result<(), RecordError> {
        let keep_last = self.exec.duplicates_keep_last;
        let (chunk, duplicates) = prepare_hashed_chunk(chunk, first_index, keep_last)?;
        for id in duplicates {
            let message = if keep_last {
                format!(
                    "batchSave detected duplicate records for ID: {id}. Keeping the last occurrence."
                )
            } else {
                format!("Found duplicate key '{id}' for model {full}. The record was ignored.")
            };
            self.internal_log(LogLevel::Warn, message);
        }
        let ctx = WriteContext {
            sync_id: self.exec.sync.sync_id.clone(),
            job_id: self.exec.sync.job_id,
            job_run: self.exec.sync.job_run,
            max_record_bytes: Some(self.limits().max_payload_bytes),
        };
        let conn = self.exec.connection.clone();
        let changes = self
            .services
            .records
            .write(kind, &conn, full, chunk, &ctx, merging)
            .await?;
        self.changes
            .entry(full.to_string())
            .or_default()
            .add(changes);
        Ok(())
    }
}

/// A batch's schema violations: how many records failed, and one of them.
#[derive(Default)]
struct Violations {
    failed: usize,
    sample: Option<Value>,
}

/// The error of a batch that was not read (but for a text not shaped like
/// an array: [`not_an_array`]).
fn unread_error(call: &str, limit: usize, e: batch::Unread) -> NangoError {
    match e {
        batch::Unread::TooMany => nango_error(
            "invalid_request",
            format!(
                "{call}: at most {} records per call (the SDKs split longer arrays)",
                batch::MAX_RECORDS_PER_CALL
            ),
        ),
        batch::Unread::TooManyValues { index, max } => nango_error(
            "payload_too_large",
            format!(
                "{call}: record {index} holds more than {max} JSON values, the most one record may hold (one per {} bytes of the payload limit of {limit} bytes)",
                batch::BYTES_PER_VALUE
            ),
        ),
        batch::Unread::Record { index, error } => nango_error(
            "invalid_request",
            format!("{call}: record {index} is not JSON: {error}"),
        ),
        batch::Unread::NotAnArray => nango_error(
            "invalid_request",
            format!("{call}: records must be a JSON array"),
        ),
    }
}

/// A batch not shaped like an array: nothing to write when it is `null`,
/// else what it is, as JSON.parse would say, building nothing (a valid
/// array is never here), a large text off the async worker.
async fn not_an_array(call: &str, json: Arc<Vec<u8>>) -> Result<(), NangoError> {
    let large = json.len() >= batch::OFF_WORKER_AT;
    let is_null = move || {
        serde_json::from_slice::<serde::de::IgnoredAny>(&json).map(|_| json.trim_ascii() == b"null")
    };
    let is_null = if large {
        // Checking does not panic; were it to, not an array.
        batch::off_worker(is_null).await.unwrap_or(Ok(false))
    } else {
        is_null()
    };
    match is_null {
        Ok(true) => Ok(()),
        Ok(false) => Err(nango_error(
            "invalid_request",
            format!("{call}: records must be a JSON array"),
        )),
        Err(e) => Err(nango_error(
            "invalid_request",
            format!("{call}: records are not JSON: {e}"),
        )),
    }
}

impl HostState {
    /// A batch failed after some of its chunks were written: the merging
    /// strategy's cursor keeps what those moved (else the script's own
    /// writes would later look newer than its strategy allows), and the
    /// error goes to the script.
    fn keep_merging(&mut self, model: String, merging: Merging, e: RecordError) -> NangoError {
        self.merging.insert(model, merging);
        record_error(e)
    }

    async fn records_by_ids(&mut self, model: &str, ids: &[u8]) -> Result<Vec<u8>, NangoError> {
        self.require_sync("getRecordsByIds")?;
        self.check_payload("the getRecordsByIds ids", ids.len())?;
        // At most MAX_IDS_PER_CALL ids, refused while they are read: a
        // payload of millions of short ids would cost the host tens of
        // times its size in strings.
        let BoundedIds(mut ids) = serde_json::from_slice(ids).map_err(|e| {
            nango_error(
                "invalid_request",
                format!("getRecordsByIds: ids must be a JSON array of at most {MAX_IDS_PER_CALL} strings: {e}"),
            )
        })?;
        let full = self.model_name(model)?;
        // An id asked for twice is answered once, and the answer stops at
        // the payload limit: what the host builds stays bounded by what a
        // script may send, however its ids repeat or its records weigh.
        let first: Vec<bool> = {
            let mut seen = std::collections::HashSet::with_capacity(ids.len());
            ids.iter().map(|id| seen.insert(id.as_str())).collect()
        };
        let mut first = first.into_iter();
        ids.retain(|_| first.next().unwrap_or(false));
        let max = self.limits().max_payload_bytes;
        let mut out = vec![b'['];
        // The store reads a group's records whole before their size is
        // known, and a record may be as large as a batch: the groups start
        // small and are sized from the largest record so far, so what one
        // group holds stays near what is left of the answer's limit.
        let mut largest = 0usize;
        let mut at = 0;
        // Until a record is found, the groups double from FIRST_LOOKUP.
        let mut blind = FIRST_LOOKUP;
        while at < ids.len() {
            let fit = max.saturating_sub(out.len()) / largest.max(1 << 10);
            let group = if largest == 0 {
                let group = blind;
                blind = (blind * 2).min(IDS_PER_LOOKUP);
                group
            } else {
                fit.clamp(1, IDS_PER_LOOKUP)
            };
            let chunk = &ids[at..(at + group).min(ids.len())];
            at += chunk.len();
            let rows = self
                .services
                .records
                .get_by_ids(&self.exec.connection, &full, chunk)
                .await
                .map_err(record_error)?;
            for r in rows {
                if out.len() > 1 {
                    out.push(b',');
                }
                let before = out.len();
                serde_json::to_writer(&mut out, &r.to_view())
                    .map_err(|e| nango_error("invalid_request", format!("getRecordsByIds: {e}")))?;
                largest = largest.max(out.len() - before);
                if out.len() > max {
                    return Err(nango_error(
                        "payload_too_large",
                        format!(
                            "getRecordsByIds: the records found pass the limit of {max} bytes; ask for fewer ids at a time"
                        ),
                    ));
                }
            }
        }
        out.push(b']');
        Ok(out)
    }
}

/// The ids of a `getRecordsByIds` call's first store lookup, before any
/// record's size is known.
const FIRST_LOOKUP: usize = 10;

/// The most ids one `getRecordsByIds` call takes (as many as one
/// `batchSave` takes records).
const MAX_IDS_PER_CALL: usize = batch::MAX_RECORDS_PER_CALL;

/// A JSON array of at most [`MAX_IDS_PER_CALL`] strings, refused at the
/// next one while it is read.
struct BoundedIds(Vec<String>);

impl<'de> serde::Deserialize<'de> for BoundedIds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ids;
        impl<'de> serde::de::Visitor<'de> for Ids {
            type Value = BoundedIds;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "an array of at most {MAX_IDS_PER_CALL} strings")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BoundedIds, A::Error> {
                let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(id) = seq.next_element::<String>()? {
                    if ids.len() == MAX_IDS_PER_CALL {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_IDS_PER_CALL} ids; ask for fewer at a time"
                        )));
                    }
                    ids.push(id);
                }
                Ok(BoundedIds(ids))
            }
        }
        d.deserialize_seq(Ids)
    }
}

impl HostState {
    async fn list_page(
        &mut self,
        model: &str,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<records::RecordPage, NangoError> {
        if !(1..=1000).contains(&limit) {
            return Err(nango_error(
                "invalid_request",
                format!("listRecords: the page size must be 1 to 1000, got {limit}"),
            ));
        }
        let after = match cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(crate::records::decode_cursor(c).ok_or_else(|| {
                nango_error(
                    "invalid_request",
                    format!("listRecords: `{c}` is not a records cursor"),
                )
            })?),
        };
        let full = self.model_name(model)?;
        let (rows, next) = self
            .services
            .records
            .list(&self.exec.connection, &full, after, limit as usize)
            .await
            .map_err(record_error)?;
        let records: Vec<Value> = rows.iter().map(|r| r.to_view()).collect();
        Ok(records::RecordPage {
            records: Value::Array(records).to_string().into(),
            next_cursor: next.as_ref().map(crate::records::encode_cursor),
        })
    }
}

impl records::Host for HostState {
    async fn list_records(
        &mut self,
        model: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<records::RecordPage, NangoError>> {
        let page = self.list_page(&model, cursor, limit).await;
        // Its records read, decoded and serialised: paid for by the page's
        // size.
        let size = page.as_ref().map_or(0, |p| p.records.len());
        self.charge(crate::locks::CALL_WORK_BYTES + size);
        Ok(page)
    }

    async fn batch_save(
        &mut self,
        model: String,
        records: Vec<u8>,
    ) -> wasmtime::Result<Result<(), NangoError>> {
        self.charge(records.len());
        Ok(self
            .write_records(WriteKind::Save, "batchSave", &model, records)
            .await)
    }

    async fn batch_delete(
        &mut self,
        model: String,
        records: Vec<u8>,
    ) -> wasmtime::Result<Result<(), NangoError>> {
        self.charge(records.len());
        Ok(self
            .write_records(WriteKind::Delete, "batchDelete", &model, records)
            .await)
    }

    async fn batch_update(
        &mut self,
        model: String,
        records: Vec<u8>,
    ) -> wasmtime::Result<Result<(), NangoError>> {
        self.charge(records.len());
        Ok(self
            .write_records(WriteKind::Update, "batchUpdate", &model, records)
            .await)
    }

    async fn get_records_by_ids(
        &mut self,
        model: String,
        ids: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, NangoError>> {
        self.charge(ids.len());
        let found = self.records_by_ids(&model, &ids).await;
        if let Ok(records) = &found {
            self.charge(records.len());
        }
        Ok(found)
    }

    async fn set_merging_strategy(
        &mut self,
        model: String,
        strategy: MergingStrategy,
    ) -> wasmtime::Result<Result<(), NangoError>> {
        if let Err(e) = self.require_sync("setMergingStrategy") {
            return Ok(Err(e));
        }
        let full = match self.model_name(&model) {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        if self.merging.contains_key(&full) {
            self.internal_log(
                LogLevel::Warn,
                format!("Merging strategy for model {full} is already set. Skipping"),
            );
            return Ok(Ok(()));
        }
        let merging = match strategy {
            MergingStrategy::Override => Merging::Override,
            MergingStrategy::IgnoreIfModifiedAfter => {
                let cursor = match self
                    .services
                    .records
                    .newest_position(&self.exec.connection, &full)
                    .await
                {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(record_error(e))),
                };
                Merging::IgnoreIfModifiedAfter { cursor }
            }
        };
        self.merging.insert(full, merging);
        Ok(Ok(()))
    }

    async fn get_checkpoint(&mut self) -> wasmtime::Result<Result<Option<Vec<u8>>, NangoError>> {
        if let Err(e) = self.require_sync("getCheckpoint") {
            return Ok(Err(e));
        }
        let key = self.checkpoint_key();
        let found = self
            .services
            .records
            .checkpoint(&self.exec.connection, &key)
            .await
            .map(|v| v.map(|v| v.to_string().into_bytes()))
            .map_err(record_error);
        // Read, decoded and serialised: paid for by its size.
        let size = found.as_ref().map_or(0, |c| c.as_ref().map_or(0, Vec::len));
        self.charge(crate::locks::CALL_WORK_BYTES + size);
        Ok(found)
    }

    async fn save_checkpoint(
        &mut self,
        checkpoint: Vec<u8>,
    ) -> wasmtime::Result<Result<(), NangoError>> {
        if checkpoint.len() > MAX_CHECKPOINT_BYTES {
            return Ok(Err(nango_error(
                "invalid_checkpoint",
                format!(
                    "Invalid checkpoint: {} bytes, more than the {MAX_CHECKPOINT_BYTES} a checkpoint may hold",
                    checkpoint.len()
                ),
            )));
        }
        let value: Value = match serde_json::from_slice(&checkpoint) {
            Ok(v) => v,
            Err(e) => {
                return Ok(Err(nango_error(
                    "invalid_checkpoint",
                    format!("Invalid checkpoint: not JSON ({e})"),
                )));
            }
        };
        if let Err(why) = check_checkpoint(&value) {
            return Ok(Err(nango_error(
                "invalid_checkpoint",
                format!("Invalid checkpoint: {why}"),
            )));
        }
        Ok(self.checkpoint_call("saveCheckpoint", Some(value)).await)
    }

    async fn clear_checkpoint(&mut self) -> wasmtime::Result<Result<(), NangoError>> {
        Ok(self.checkpoint_call("clearCheckpoint", None).await)
    }

    async fn track_deletes_start(
        &mut self,
        model: String,
    ) -> wasmtime::Result<Result<(), NangoError>> {
        if let Err(e) = self.require_sync("trackDeletesStart") {
            return Ok(Err(e));
        }
        let full = match self.model_name(&model) {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        // A start made stands until its end, as the original's: another
        // start changes nothing.
        if self.tracked.contains_key(&full) {
            return Ok(Ok(()));
        }
        let tracked = match self.kept_start(&model).await {
            Ok(Some((key, Some(since)))) => TrackedDeletes {
                model: full.clone(),
                since_job: Some(since),
                start_key: Some(key),
                ended: false,
            },
            Ok(Some((key, None))) => {
                let job = self.exec.sync.job_id.unwrap_or_default();
                let start = serde_json::json!({ "syncJobId": job });
                if let Err(e) = self
                    .services
                    .records
                    .set_checkpoint(&self.exec.connection, &key, Some(start))
                    .await
                {
                    return Ok(Err(record_error(e)));
                }
                TrackedDeletes {
                    model: full.clone(),
                    since_job: Some(job),
                    start_key: Some(key),
                    ended: false,
                }
            }
            Ok(None) => TrackedDeletes {
                model: full.clone(),
                since_job: None,
                start_key: None,
                ended: false,
            },
            Err(e) => return Ok(Err(e)),
        };
        self.tracked.insert(full, tracked);
        Ok(Ok(()))
    }

    async fn track_deletes_end(
        &mut self,
        model: String,
    ) -> wasmtime::Result<Result<(), NangoError>> {
        if let Err(e) = self.require_sync("trackDeletesEnd") {
            return Ok(Err(e));
        }
        let full = match self.model_name(&model) {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(t) = self.tracked.get_mut(&full) {
            t.ended = true;
            return Ok(Ok(()));
        }
        let tracked = match self.kept_start(&model).await {
            // An earlier run's start (a sync resuming from a checkpoint).
            Ok(Some((key, Some(since)))) => TrackedDeletes {
                model: full.clone(),
                since_job: Some(since),
                start_key: Some(key),
                ended: true,
            },
            Ok(Some((_, None))) => {
                return Ok(Err(nango_error(
                    "invalid_request",
                    format!("No track deletes starting point found for model '{model}'."),
                )));
            }
            // Outside a job run (a dry run, a test) an end alone tracks
            // this run's saves.
            Ok(None) => TrackedDeletes {
                model: full.clone(),
                since_job: None,
                start_key: None,
                ended: true,
            },
            Err(e) => return Ok(Err(e)),
        };
        self.tracked.insert(full, tracked);
        Ok(Ok(()))
    }
}

impl HostState {
    /// In a sync's job run: where its start of `model` is kept and the job
    /// of the start kept there, if any; `None` outside a job run.
    async fn kept_start(
        &mut self,
        model: &str,
    ) -> Result<Option<(String, Option<u64>)>, NangoError> {
        if !self.exec.sync.job_run || self.exec.sync.job_id.is_none() {
            return Ok(None);
        }
        let key = crate::exec::track_deletes_key(&self.checkpoint_key(), model);
        let kept = self
            .services
            .records
            .checkpoint(&self.exec.connection, &key)
            .await
            .map_err(record_error)?;
        // A start of a later job than this one is another life's: a sync
        // state made again (a variant deleted and made again) counts its
        // jobs from 1. Taken as none.
        let job = self.exec.sync.job_id.unwrap_or_default();
        Ok(Some((
            key,
            kept.and_then(|v| v.get("syncJobId").and_then(Value::as_u64))
                .filter(|since| *since <= job),
        )))
    }
}

/// The largest checkpoint a sync may save.
const MAX_CHECKPOINT_BYTES: usize = 64 << 10;

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What `saveCheckpoint` accepts: a flat object of strings, numbers and
/// booleans (the original's validator).
fn check_checkpoint(value: &Value) -> Result<(), String> {
    let Value::Object(m) = value else {
        return Err(format!("expected an object, got {}", type_name(value)));
    };
    for (k, v) in m {
        if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            return Err(format!(
                "`{k}` is {}: values must be strings, numbers or booleans",
                type_name(v)
            ));
        }
    }
    Ok(())
}

impl HostState {
    /// The key a sync's checkpoint is kept under: the script and variant.
    fn checkpoint_key(&self) -> String {
        self.exec.sync.model_full_name(&self.exec.script_name)
    }

    async fn checkpoint_call(
        &mut self,
        call: &str,
        value: Option<Value>,
    ) -> Result<(), NangoError> {
        self.require_sync(call)?;
        let key = self.checkpoint_key();
        self.services
            .records
            .set_checkpoint(&self.exec.connection, &key, value)
            .await
            .map_err(record_error)
    }
}

impl sync_context::Host for HostState {
    fn last_sync_date(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self
            .exec
            .sync
            .last_sync_date
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
    }

    fn variant(&mut self) -> wasmtime::Result<String> {
        Ok(self.exec.sync.variant.clone())
    }

    fn track_deletes(&mut self) -> wasmtime::Result<bool> {
        Ok(self.exec.sync.track_deletes)
    }
}

#[cfg(test)]
mod tests {
    use super::{BoundedIds, MAX_IDS_PER_CALL};

    /// A component that calls the import itself (not through an SDK,
    /// which sends parts) is refused past the limit, by name, as the ids
    /// are read.
    #[test]
    fn a_lookup_takes_at_most_its_limit_of_ids() {
        let ids = |n: usize| {
            serde_json::to_vec(&(0..n).map(|i| i.to_string()).collect::<Vec<_>>()).unwrap()
        };
        let BoundedIds(read) = serde_json::from_slice(&ids(MAX_IDS_PER_CALL)).unwrap();
        assert_eq!(read.len(), MAX_IDS_PER_CALL);
        let err = serde_json::from_slice::<BoundedIds>(&ids(MAX_IDS_PER_CALL + 1))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("more than 100000 ids; ask for fewer at a time"),
            "{err}"
        );
        let err = serde_json::from_slice::<BoundedIds>(br#"{"a":1}"#)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("an array of at most 100000 strings"),
            "{err}"
        );
    }
}
