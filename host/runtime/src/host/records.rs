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

    /// Acts on a batch's schema violations: invalid records are saved with
    /// a warning (one sampled record logged), or refused with
    /// `invalid_sync_record` when validation is strict.
    fn report_violations(
        &mut self,
        model: &str,
        records: &[Value],
        infos: &mut [RecordInfo],
    ) -> Result<(), NangoError> {
        let strict = self
            .exec
            .validation
            .as_ref()
            .is_some_and(|v| v.schema.strict);
        let mut failed = 0;
        let mut sample = None;
        // The records are checked without `_nango_metadata` (the original
        // validates a record as JSON would carry it).
        for (r, info) in records.iter().zip(infos) {
            if info.violations.is_empty() {
                continue;
            }
            failed += 1;
            if sample.is_none() {
                let errors = std::mem::take(&mut info.violations);
                // The record itself when it is small; a big one is not
                // copied into the log (its id says which it was).
                let data = if crate::exec::value_weight(r) <= MAX_SAMPLE_WEIGHT {
                    r.clone()
                } else {
                    serde_json::json!({ "id": r.get("id") })
                };
                sample =
                    Some(serde_json::json!({ "data": data, "validation": errors, "model": model }));
            }
            if strict {
                break;
            }
        }
        let Some(sample) = sample else {
            return Ok(());
        };
        if strict {
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
        let too_many = || {
            nango_error(
                "invalid_request",
                format!(
                    "{call}: at most {} records per call (the SDKs split longer arrays)",
                    batch::MAX_RECORDS_PER_CALL
                ),
            )
        };
        let limit = self.limits().max_payload_bytes;
        let max_values = batch::max_values(limit);
        let read = match batch::read(Arc::clone(&json), check.clone(), max_values).await {
            Ok(read) => read,
            Err(batch::Unread::TooMany) => return Err(too_many()),
            Err(batch::Unread::TooManyValues { max }) => {
                return Err(nango_error(
                    "payload_too_large",
                    format!(
                        "{call}: the records hold more than {max} JSON values, the most one call may hold (one per {} bytes of the payload limit of {limit} bytes): send fewer records per call, or records of fewer values",
                        batch::BYTES_PER_VALUE
                    ),
                ));
            }
            Err(batch::Unread::Record { index, error }) => {
                return Err(nango_error(
                    "invalid_request",
                    format!("{call}: record {index} is not JSON: {error}"),
                ));
            }
            // Not shaped like an array: say what it is, as JSON.parse
            // would, building nothing (a valid array is never here), a
            // large text off the async worker.
            Err(batch::Unread::NotAnArray) => {
                let text = Arc::clone(&json);
                let is_null = move || {
                    serde_json::from_slice::<serde::de::IgnoredAny>(&text)
                        .map(|_| text.trim_ascii() == b"null")
                };
                let is_null = if json.len() < batch::OFF_WORKER_AT {
                    is_null()
                } else {
                    // Checking does not panic; were it to, not an array.
                    tokio::task::spawn_blocking(is_null)
                        .await
                        .unwrap_or(Ok(false))
                };
                return match is_null {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(nango_error(
                        "invalid_request",
                        format!("{call}: records must be a JSON array"),
                    )),
                    Err(e) => Err(nango_error(
                        "invalid_request",
                        format!("{call}: records are not JSON: {e}"),
                    )),
                };
            }
        };
        drop(json);
        if read.is_empty() {
            return Ok(());
        }
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
            self.report_violations(model, &records, &mut infos)?;
        }
        let mut objects = Vec::with_capacity(records.len());
        for (index, (r, info)) in records.into_iter().zip(infos).enumerate() {
            match (r, info.hash) {
                (Value::Object(m), Some(hash)) => objects.push((m, hash)),
                _ => return Err(record_error(RecordError::NotAnObject { index })),
            }
        }
        let ctx = WriteContext {
            sync_id: self.exec.sync.sync_id.clone(),
            job_id: self.exec.sync.job_id,
            job_run: self.exec.sync.job_run,
            max_record_bytes: Some(self.limits().max_payload_bytes),
        };
        let mut merging = self.merging.get(&full).cloned().unwrap_or_default();
        let conn = self.exec.connection.clone();
        let mut first_index = 0;
        let mut iter = objects.into_iter().peekable();
        while iter.peek().is_some() {
            let chunk: Vec<_> = iter.by_ref().take(CHUNK_SIZE).collect();
            let len = chunk.len();
            let keep_last = self.exec.duplicates_keep_last;
            let (chunk, duplicates) = match prepare_hashed_chunk(chunk, first_index, keep_last) {
                Ok(prepared) => prepared,
                Err(e) => return Err(self.keep_merging(full, merging, e)),
            };
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
            let written = self
                .services
                .records
                .write(kind, &conn, &full, chunk, &ctx, &mut merging)
                .await;
            let changes = match written {
                Ok(changes) => changes,
                Err(e) => return Err(self.keep_merging(full, merging, e)),
            };
            self.changes.entry(full.clone()).or_default().add(changes);
            first_index += len;
        }
        // Set from here on, as the original's: a `setMergingStrategy`
        // after a write is skipped (with a warning).
        self.merging.insert(full, merging);
        Ok(())
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
        Ok(self.list_page(&model, cursor, limit).await)
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
        Ok(self
            .services
            .records
            .checkpoint(&self.exec.connection, &key)
            .await
            .map(|v| v.map(|v| v.to_string().into_bytes()))
            .map_err(record_error))
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
