//! Reading a records batch a script sent (`batchSave`, `batchDelete`,
//! `batchUpdate`): the JSON array split into its records, each parsed,
//! hashed and checked against its model — half of a large batch on a
//! second core when one is free, since the script waits for the batch.
//!
//! The hash of a record is [`crate::records::data_hash`]: SHA-256 of its
//! compact serialisation. A record the script already sent in exactly that
//! form (compact, the same escapes, integers only, no repeated keys: what
//! `JSON.stringify` and serde write for most records) is hashed from the
//! text it came in, without serialising it again; any other is serialised
//! first. Both give the same hash, so stored hashes stay comparable.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::records::{data_hash, text_hash};
use crate::validate::Validation;

/// The key a script's record may carry and which is never stored.
pub const METADATA_KEY: &str = "_nango_metadata";

/// Batches at least this long are split between two threads when a core
/// is free (below it, handing half over costs more than it saves).
const SPLIT_AT: usize = 128;

/// What a record is checked against: a model's schema.
pub struct Check {
    pub validation: Arc<Validation>,
    pub model: String,
}

/// One record of a batch, read.
#[derive(Debug)]
pub struct ReadRecord {
    /// The record as the script sent it.
    pub value: Value,
    /// What was computed of it.
    pub info: RecordInfo,
}

/// What reading a record computed, of the record without
/// [`METADATA_KEY`].
#[derive(Debug)]
pub struct RecordInfo {
    /// It carries [`METADATA_KEY`].
    pub has_metadata: bool,
    /// Its data hash, when it is an object.
    pub hash: Option<String>,
    /// Its violations of the model's schema, when there is one to check.
    pub violations: Vec<String>,
}

/// Most records one batchSave, batchDelete or batchUpdate call carries
/// (the SDKs split longer arrays into calls of [`SDK_CALL_RECORDS`]): what
/// the host holds of a call grows with its records, so a call of millions
/// of tiny ones would cost gigabytes within the payload limit.
pub const MAX_RECORDS_PER_CALL: usize = 100_000;

/// How many records the SDKs send per call; a multiple of the 1,000-record
/// chunk, so splitting a call changes no chunk.
pub const SDK_CALL_RECORDS: usize = 10_000;

/// Text bytes per JSON value of what the host parses at once at its
/// limit: a record, a write's [`crate::records::CHUNK_SIZE`] records, a
/// page, each at most its payload (or response) limit / 8 values
/// ([`max_values`]); a batch of more is parsed a chunk at a time. Parsed, every value takes 72 bytes
/// (`serde_json::Value` with `preserve_order`) and an object member
/// about 40 more (its key, hash and index), so a text of `[0,0,0,…]`, 2
/// bytes a value, would take ~36 times its size in memory (a 64 MiB
/// record, over 2 GiB); at 8 bytes a value it takes ~9–15 times. Records
/// as APIs give them average more than that (`"name":"Ada",` is 13
/// bytes, `1,` or `true,` inside an array is the densest real data
/// gets), so only records whose values are mostly one-digit numbers,
/// a thousand of them near the byte limit, are refused.
pub const BYTES_PER_VALUE: usize = 8;

/// The most JSON values a call whose text may be `limit` bytes holds.
pub fn max_values(limit: usize) -> usize {
    (limit / BYTES_PER_VALUE).max(1)
}

/// Batches (and pages) of at least this many bytes are scanned and parsed
/// on blocking threads, not on the async worker that runs the script (at
/// a few hundred megabytes a second, a quarter of a millisecond).
pub(crate) const OFF_WORKER_AT: usize = 64 << 10;

/// Why a batch was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum Unread {
    /// The text is not shaped like a JSON array (the caller's own check
    /// says why).
    NotAnArray,
    /// More than [`MAX_RECORDS_PER_CALL`] records.
    TooMany,
    /// The record at `index` holds more than `max` JSON values (see
    /// [`max_values`]); counted before any is parsed.
    TooManyValues { index: usize, max: usize },
    /// The record at `index` is not JSON serde_json reads: why.
    Record { index: usize, error: String },
}

/// A batch's text split into its records, with each record's count of
/// JSON values ([`value_count`]'s bound): what is parsed at once is
/// chosen from it.
#[derive(Debug)]
pub struct Split {
    spans: Vec<Range<usize>>,
    values: Vec<usize>,
}

impl Split {
    /// The batch's records.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The JSON values of records `range` (at most one more per record
    /// than parsing them builds).
    pub fn values(&self, range: Range<usize>) -> usize {
        self.values.get(range).map_or(0, |v| v.iter().sum())
    }

    /// The text bytes of records `range`.
    fn bytes(&self, range: Range<usize>) -> usize {
        match (self.spans.get(range.start), range.end.checked_sub(1)) {
            (Some(first), Some(last)) if range.start < range.end => {
                self.spans.get(last).map_or(0, |l| l.end - first.start)
            }
            _ => 0,
        }
    }
}

/// `text` split into its records, each of at most `max_values` values
/// ([`max_values`] of the payload limit); nothing is parsed. A large text
/// is scanned on a blocking thread.
pub async fn split(text: &Arc<Vec<u8>>, max_values: usize) -> Result<Arc<Split>, Unread> {
    if text.len() < OFF_WORKER_AT {
        return spans(text, max_values).map(Arc::new);
    }
    let text = Arc::clone(text);
    off_worker(move || spans(&text, max_values))
        .await
        .ok_or(Unread::NotAnArray)?
        .map(Arc::new)
}

/// The records `range` of `text` (as `split` split it), in order, each
/// parsed, hashed and checked; a large range on blocking threads, in
/// halves when a helper is free.
pub async fn read_range(
    text: &Arc<Vec<u8>>,
    split: &Arc<Split>,
    range: Range<usize>,
    check: Option<Arc<Check>>,
) -> Read {
    let spans = split.spans.get(range.clone()).ok_or(Unread::NotAnArray)?;
    if split.bytes(range.clone()) < OFF_WORKER_AT {
        return read_spans(text, spans, range.start, check.as_deref());
    }
    let (text, split) = (Arc::clone(text), Arc::clone(split));
    let (head, tail) = off_worker(move || read_blocking(&text, &split, range, check))
        .await
        .ok_or(Unread::NotAnArray)?;
    let mut records = head?;
    if let Some(tail) = tail {
        records.extend(tail.await.map_err(|_| Unread::NotAnArray)??);
    }
    Ok(records)
}

/// Every record of `text`, a JSON array whose records hold at most
/// `max_values` values each.
#[cfg(test)]
async fn read(
    text: Arc<Vec<u8>>,
    check: Option<Arc<Check>>,
    max_values: usize,
) -> Result<Vec<ReadRecord>, Unread> {
    let split = split(&text, max_values).await?;
    read_range(&text, &split, 0..split.len(), check).await
}

type Read = Result<Vec<ReadRecord>, Unread>;

/// [`read_range`] of a large range, on a blocking thread: its first half
/// read here, the second on another blocking thread when a helper is
/// free.
fn read_blocking(
    text: &Arc<Vec<u8>>,
    split: &Arc<Split>,
    range: Range<usize>,
    check: Option<Arc<Check>>,
) -> (Read, Option<tokio::task::JoinHandle<Read>>) {
    let spans = &split.spans[range.clone()];
    let helper = if spans.len() >= SPLIT_AT {
        helpers().try_acquire_owned().ok()
    } else {
        None
    };
    let Some(permit) = helper else {
        return (read_spans(text, spans, range.start, check.as_deref()), None);
    };
    let half = spans.len() / 2;
    let tail = {
        let text = Arc::clone(text);
        let split = Arc::clone(split);
        let check = check.clone();
        let tail = range.start + half..range.end;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            read_spans(
                &text,
                &split.spans[tail.clone()],
                tail.start,
                check.as_deref(),
            )
        })
    };
    let head = read_spans(text, &spans[..half], range.start, check.as_deref());
    (head, Some(tail))
}

/// Lets at most one helper per spare core read batches, so concurrent
/// scripts do not pile threads onto busy cores (they then read alone).
fn helpers() -> Arc<Semaphore> {
    static HELPERS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    Arc::clone(HELPERS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(Semaphore::new(cores - 1))
    }))
}

/// What `f` gives, run on a blocking thread once one of the process's
/// parse permits (one per core) is free: scanning and parsing large
/// batches and pages do not put more threads on the cores than there are
/// cores, however many executions send them (the script waits its turn
/// suspended, within its deadline). `None` if `f` panicked.
pub(crate) async fn off_worker<T, F>(f: F) -> Option<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    static PARSERS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    let parsers = PARSERS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(Semaphore::new(cores))
    });
    // Never closed.
    let permit = Arc::clone(parsers).acquire_owned().await.ok()?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .ok()
}

/// Where each element of the JSON array `text` is, and how many values
/// it holds, found by its brackets, commas and string quotes alone: each
/// element is parsed on its own afterwards, which rejects what this lets
/// through (so that a text it accepts whose elements all parse is a JSON
/// array of them). Refused when it is not shaped like an array, past
/// [`MAX_RECORDS_PER_CALL`] elements, and at an element of more than
/// `max_values` values, counted as [`value_count`] counts them.
fn spans(text: &[u8], max_values: usize) -> Result<Split, Unread> {
    const NOT: Unread = Unread::NotAnArray;
    let mut i = skip_space(text, 0);
    if text.get(i) != Some(&b'[') {
        return Err(NOT);
    }
    i = skip_space(text, i + 1);
    let mut split = Split {
        spans: Vec::new(),
        values: Vec::new(),
    };
    if text.get(i) == Some(&b']') {
        return only_space_after(text, i + 1).then_some(split).ok_or(NOT);
    }
    // Each element, each value inside one.
    loop {
        if split.spans.len() == MAX_RECORDS_PER_CALL {
            return Err(Unread::TooMany);
        }
        let start = i;
        let mut depth = 0usize;
        let mut values = 1usize;
        loop {
            match *text.get(i).ok_or(NOT)? {
                b'"' => i = after_string(text, i + 1).ok_or(NOT)?,
                b'[' | b'{' => {
                    depth += 1;
                    values += 1;
                    i += 1;
                }
                b']' | b'}' if depth > 0 => {
                    depth -= 1;
                    i += 1;
                }
                b']' | b'}' | b',' if depth == 0 => break,
                b',' => {
                    values += 1;
                    i += 1;
                }
                _ => i += 1,
            }
        }
        // No value of a record is built before it is counted.
        if values > max_values {
            return Err(Unread::TooManyValues {
                index: split.spans.len(),
                max: max_values,
            });
        }
        let mut end = i;
        while end > start && is_space(text[end - 1]) {
            end -= 1;
        }
        if end == start {
            return Err(NOT);
        }
        split.spans.push(start..end);
        split.values.push(values);
        match text[i] {
            b',' => i = skip_space(text, i + 1),
            b']' => return only_space_after(text, i + 1).then_some(split).ok_or(NOT),
            _ => return Err(NOT),
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_space(text: &[u8], mut i: usize) -> usize {
    while text.get(i).is_some_and(|&b| is_space(b)) {
        i += 1;
    }
    i
}

fn only_space_after(text: &[u8], i: usize) -> bool {
    skip_space(text, i) == text.len()
}

/// The index after the closing quote of the string whose contents start
/// at `i`.
fn after_string(text: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i += memchr::memchr2(b'"', b'\\', text.get(i..)?)?;
        if text[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
}

/// An upper bound of the JSON values `text` holds, what parsing it
/// builds: one, and one more for each `[`, `{` and `,` outside its
/// strings (every value but the first is a container's first or follows
/// a comma; an empty container counts one too many). Text that is not
/// JSON is counted all the same (its parse fails after).
pub(crate) fn value_count(text: &[u8]) -> usize {
    let mut count = 1usize;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'"' => match after_string(text, i + 1) {
                Some(end) => i = end,
                None => break,
            },
            b'[' | b'{' | b',' => {
                count += 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    count
}

/// The records at `spans` of `text`, the first of them the batch's
/// record number `first`.
fn read_spans(text: &[u8], spans: &[Range<usize>], first: usize, check: Option<&Check>) -> Read {
    spans
        .iter()
        .enumerate()
        .map(|(n, span)| {
            let raw = text.get(span.clone()).ok_or(Unread::NotAnArray)?;
            let value = serde_json::from_slice(raw).map_err(|e| Unread::Record {
                index: first + n,
                error: e.to_string(),
            })?;
            Ok(read_value(value, raw, check))
        })
        .collect()
}

/// Reads one record; `raw` is the text it was parsed from.
fn read_value(value: Value, raw: &[u8], check: Option<&Check>) -> ReadRecord {
    let has_metadata = value
        .as_object()
        .is_some_and(|m| m.contains_key(METADATA_KEY));
    let stripped = has_metadata.then(|| {
        let mut v = value.clone();
        if let Value::Object(m) = &mut v {
            m.shift_remove(METADATA_KEY);
        }
        v
    });
    let view = stripped.as_ref().unwrap_or(&value);
    let hash = view.as_object().map(|m| {
        if !has_metadata && is_serialisation_of(raw, &value) {
            text_hash(raw)
        } else {
            data_hash(m)
        }
    });
    let violations = check.map_or_else(Vec::new, |c| c.validation.check(&c.model, view));
    ReadRecord {
        value,
        info: RecordInfo {
            has_metadata,
            hash,
            violations,
        },
    }
}

/// Whether `raw`, the text `value` was parsed from, is byte for byte what
/// serde_json's compact serialisation of `value` is.
pub fn is_serialisation_of(raw: &[u8], value: &Value) -> bool {
    // A repeated key keeps one entry (the text has more keys than the
    // value), and is then the only way the two could differ that the scan
    // does not see.
    scan(raw).is_some_and(|keys| keys == entries(value))
}

/// The number of object entries in `value`, nested ones included.
fn entries(value: &Value) -> usize {
    match value {
        Value::Object(m) => m.len() + m.values().map(entries).sum::<usize>(),
        Value::Array(a) => a.iter().map(entries).sum(),
        _ => 0,
    }
}

/// For valid JSON text: the number of object keys in it, or `None` when it
/// is not in serde_json's compact form (whitespace between tokens, an
/// escape serde would write differently or not at all, a number that is
/// not a short integer, `-0`).
fn scan(raw: &[u8]) -> Option<usize> {
    let mut keys = 0;
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'"' => {
                i = string_end(raw, i + 1)?;
                if raw.get(i) == Some(&b':') {
                    keys += 1;
                }
            }
            b'-' | b'0'..=b'9' => {
                let negative = b == b'-';
                let digits = i + usize::from(negative);
                i = digits;
                while raw.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                // A fraction or exponent makes a float, which serde writes
                // its own way; 19 digits or more may not fit an integer.
                if matches!(raw.get(i), Some(b'.' | b'e' | b'E'))
                    || i - digits > 18
                    || (negative && &raw[digits..i] == b"0")
                {
                    return None;
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' => return None,
            _ => i += 1,
        }
    }
    Some(keys)
}

/// The index after the closing quote of the string whose contents start
/// at `i`, or `None` when it has an escape serde would not write.
fn string_end(raw: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i += memchr::memchr2(b'"', b'\\', raw.get(i..)?)?;
        if raw[i] == b'"' {
            return Some(i + 1);
        }
        match raw.get(i + 1)? {
            b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f' => i += 2,
            // serde writes `\u00xx` (lowercase) for control characters
            // without a short escape, and for nothing else.
            b'u' => {
                let &[b'0', b'0', hi @ (b'0' | b'1'), lo] = raw.get(i + 2..i + 6)? else {
                    return None;
                };
                let lo = match lo {
                    b'0'..=b'9' => lo - b'0',
                    b'a'..=b'f' => lo - b'a' + 10,
                    _ => return None,
                };
                if matches!((hi - b'0') * 16 + lo, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                    return None;
                }
                i += 6;
            }
            _ => return None,
        }
    }
}

/// A record's map without [`METADATA_KEY`].
pub fn strip_metadata(m: &mut Map<String, Value>) {
    m.shift_remove(METADATA_KEY);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Texts serde writes back unchanged, and texts it does not.
    const COMPACT: &[&str] = &[
        r#"{"id":"1","n":12,"neg":-7,"zero":0,"t":true,"f":false,"z":null}"#,
        r#"{"id":1,"a":[1,2,{"b":[]}],"o":{},"s":"é ü 😀 \u001f \u0000 \" \\ \n \r \t \b \f /"}"#,
        r#"{"id":"x","deep":{"a":{"b":{"c":"d"}}},"big":123456789012345678}"#,
        r#"{"id":"k:v","key":"a\":b"}"#,
        r#"{"id":"2","s":"],[{}\\","t":[[],{"u":"\"]"}]}"#,
    ];
    const NOT_COMPACT: &[&str] = &[
        r#"{ "id":"1"}"#,
        "{\"id\":\"1\",\n\"a\":1}",
        r#"{"id":"1","x":1.5}"#,
        r#"{"id":"1","x":1.0}"#,
        r#"{"id":"1","x":1e3}"#,
        r#"{"id":"1","x":-0}"#,
        r#"{"id":"1","x":12345678901234567890}"#,
        r#"{"id":"1","s":"\/"}"#,
        r#"{"id":"1","s":"\u0041"}"#,
        r#"{"id":"1","s":"\u001F"}"#,
        r#"{"id":"1","s":"\u0009"}"#,
        r#"{"id":"1","s":"\ud83d\ude00"}"#,
        r#"{"id":"1","a":1,"a":2}"#,
        r#"{"id":"1","o":{"a":1,"a":1}}"#,
    ];

    #[test]
    fn compact_texts_are_recognised_and_others_are_not() {
        for text in COMPACT {
            let v: Value = serde_json::from_str(text).unwrap();
            assert!(is_serialisation_of(text.as_bytes(), &v), "{text}");
            assert_eq!(serde_json::to_string(&v).unwrap(), *text);
        }
        for text in NOT_COMPACT {
            let v: Value = serde_json::from_str(text).unwrap();
            assert!(!is_serialisation_of(text.as_bytes(), &v), "{text}");
        }
    }

    #[test]
    fn the_hash_is_the_serialisations_whatever_the_text() {
        let texts: Vec<&str> = COMPACT.iter().chain(NOT_COMPACT).copied().collect();
        let batch = format!("[{}]", texts.join(" , "));
        let records = block(read(Arc::new(batch.into_bytes()), None, usize::MAX)).unwrap();
        assert_eq!(records.len(), texts.len());
        for (r, text) in records.iter().zip(&texts) {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(r.value, v);
            assert_eq!(
                r.info.hash,
                Some(data_hash(v.as_object().unwrap())),
                "{text}"
            );
        }
    }

    #[test]
    fn a_split_batch_keeps_its_order_and_checks_every_record() {
        let schema = serde_json::json!({"definitions": {"Item": {
            "type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]
        }}});
        let check = Arc::new(Check {
            validation: Arc::new(Validation::new(&schema, false)),
            model: "Item".into(),
        });
        let records: Vec<Value> = (0..1000)
            .map(|i| {
                if i % 100 == 99 {
                    serde_json::json!({"id": i, "_nango_metadata": {"x": 1}})
                } else {
                    serde_json::json!({"id": i.to_string(), "v": i})
                }
            })
            .collect();
        let text = serde_json::to_vec(&records).unwrap();
        let read = block(read(Arc::new(text), Some(check), usize::MAX)).unwrap();
        assert_eq!(read.len(), 1000);
        for (i, (r, v)) in read.iter().zip(&records).enumerate() {
            assert_eq!(&r.value, v);
            let mut stripped = v.as_object().unwrap().clone();
            stripped.shift_remove(METADATA_KEY);
            assert_eq!(r.info.has_metadata, i % 100 == 99);
            assert_eq!(r.info.hash, Some(data_hash(&stripped)));
            // A numeric id breaks the schema's `string`.
            assert_eq!(r.info.violations.is_empty(), i % 100 != 99, "{i}");
        }
    }

    #[test]
    fn what_is_not_an_array_is_not_read() {
        for text in [
            "{}",
            "null",
            "[1,",
            "\"x\"",
            "",
            "[1 2]",
            "[1,,2]",
            "[1,]",
            "[1]]",
            "[{]}",
            "[[1},2]",
            "[{\"a\":1}}, 2]",
            "[\"a]",
            "[1] x",
            "[\"\\\"]",
        ] {
            // Refused by its shape, or by the parse of the element it
            // lets through.
            assert!(
                matches!(
                    block(read(Arc::new(text.into()), None, usize::MAX)).err(),
                    Some(Unread::NotAnArray | Unread::Record { .. })
                ),
                "{text}"
            );
        }
        let read = block(read(Arc::new(b"[1, \"a\", []]".to_vec()), None, usize::MAX)).unwrap();
        assert!(read.iter().all(|r| r.info.hash.is_none()));
    }

    #[test]
    fn a_call_of_more_records_than_the_cap_is_not_read() {
        let array = |n: usize| {
            let mut text = vec![b'['];
            for i in 0..n {
                if i > 0 {
                    text.push(b',');
                }
                text.push(b'0');
            }
            text.push(b']');
            Arc::new(text)
        };
        let at_cap = block(read(array(MAX_RECORDS_PER_CALL), None, usize::MAX)).unwrap();
        assert_eq!(at_cap.len(), MAX_RECORDS_PER_CALL);
        assert_eq!(
            block(read(array(MAX_RECORDS_PER_CALL + 1), None, usize::MAX)).err(),
            Some(Unread::TooMany)
        );
    }

    /// A batch's JSON values are counted before any is parsed, one
    /// record's inner ones too: past the bound it is refused, however few
    /// its records; at it, read.
    #[test]
    fn the_values_of_a_batch_are_bounded_before_it_is_parsed() {
        let record = serde_json::json!({"id": "1", "a": vec![0; 50_000], "o": {"k": [1, {}]}});
        let count = value_count(&serde_json::to_vec(&record).unwrap());
        assert!(count > 50_000, "{count}");
        let text = serde_json::to_vec(&[json!({"id": "0"}), record]).unwrap();
        let read_with = |max| block(read(Arc::new(text.clone()), None, max));
        assert_eq!(read_with(count).map(|r| r.len()), Ok(2));
        assert_eq!(
            read_with(count - 1).err(),
            Some(Unread::TooManyValues {
                index: 1,
                max: count - 1
            })
        );
        // Counted per record: the batch's values may pass the bound.
        let split = block(split(&Arc::new(text.clone()), count)).unwrap();
        assert_eq!(split.values(0..2), count + 2);
        // A string is one value, whatever its length.
        assert_eq!(value_count(br#"{"a":"[,{,[,]}","b":[1,2]}"#), 5);
        assert_eq!(max_values(64 << 20), 8 << 20);
    }

    /// A batch past [`OFF_WORKER_AT`] is read on blocking threads, in
    /// halves when a helper is free: the same records, in order, and a
    /// record that does not parse named by its place in the whole batch.
    #[test]
    fn a_large_batch_is_read_whole_and_in_order() {
        let records: Vec<Value> = (0..5_000)
            .map(|i| serde_json::json!({"id": i.to_string(), "name": format!("record {i}")}))
            .collect();
        let text = serde_json::to_vec(&records).unwrap();
        assert!(text.len() >= OFF_WORKER_AT);
        for runtime in [true, false] {
            let run = |text: Vec<u8>| {
                let f = read(Arc::new(text), None, usize::MAX);
                if runtime {
                    block(f)
                } else {
                    tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap()
                        .block_on(f)
                }
            };
            let read = run(text.clone()).unwrap();
            assert_eq!(read.len(), records.len());
            for (r, v) in read.iter().zip(&records) {
                assert_eq!(&r.value, v);
                assert_eq!(r.info.hash, Some(data_hash(v.as_object().unwrap())));
            }
            // Record 4,000 (in the second half) with a bad number.
            let bad = String::from_utf8(text.clone()).unwrap().replacen(
                r#"{"id":"4000","#,
                r#"{"id":"4000","n":01,"#,
                1,
            );
            match run(bad.into_bytes()) {
                Err(Unread::Record { index, error }) => {
                    assert_eq!(index, 4000, "{error}");
                }
                other => panic!("{:?}", other.map(|r| r.len())),
            }
        }
    }
}
