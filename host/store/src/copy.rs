//! Copying a whole store from one backend to another (`sluice
//! copy-store`): an embedded store onto PostgreSQL when one machine is no
//! longer enough, or back, or between sled and redb.
//!
//! The copy is of the stored bytes, so credentials stay sealed under the
//! same master key, which the copy's server needs. Environments are
//! written first and the format marker last: a copy cut short has
//! environments without a marker, which `Store::open` refuses (never
//! taking it for a new store), and copying again needs an empty store.

use crate::store::{FORMAT, FORMAT_1, FORMAT_2, FORMAT_3, FORMAT_KEY};
use crate::{Backend, BackendError, Op, StoreError, Table};

/// About this many bytes of keys and values go in one write (a write is
/// sent once this much is held), and about as many are read per scan.
const BATCH_BYTES: usize = 32 << 20;
/// The most entries read per scan (fewer once large ones are seen: a scan
/// reads about [`BATCH_BYTES`]).
const SCAN_ENTRIES: usize = 1_000;

/// What [`copy_store`] copied: per table, rows and bytes of keys and
/// values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<(Table, u64, u64)>,
    /// Whether the store is of this build's format; an older one is
    /// migrated by the first server that opens the copy.
    pub current_format: bool,
}

impl CopyReport {
    /// Rows in all.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, rows, _)| rows).sum()
    }

    /// Bytes of keys and values in all.
    pub fn bytes(&self) -> u64 {
        self.tables.iter().map(|(_, _, bytes)| bytes).sum()
    }
}

/// The format marker of the store `from` holds, when it is one this build
/// copies whole: this format or an older one it migrates (a newer store
/// may have tables this build does not know, and would lose them).
pub async fn check_source(from: &dyn Backend) -> Result<Vec<u8>, StoreError> {
    let Some(format) = from.get(Table::Meta, FORMAT_KEY).await? else {
        return Err(StoreError::Invalid(
            "the source holds no sluice store (it has no format marker)".into(),
        ));
    };
    if ![FORMAT, FORMAT_3, FORMAT_2, FORMAT_1].contains(&format.as_slice()) {
        return Err(StoreError::Invalid(format!(
            "the source is a store of format {:?}, which this sluice does not know (a newer one wrote it): copy it with that version",
            String::from_utf8_lossy(&format)
        )));
    }
    Ok(format)
}

/// Why [`copy_store`] failed, and whether it had written to the
/// destination: a copy refused left the destination as it was (it may be
/// a whole store: never to be emptied for the copy's sake); one stopped
/// after it began writing may have left part of the copy there.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The destination holds rows already (it may be a whole store).
    /// Nothing was written to it.
    #[error(
        "the destination is not empty (its table `{table}` has rows): nothing was written to it; copy into a new, empty store"
    )]
    NotEmpty { table: &'static str },
    /// Refused before anything was written to the destination: the
    /// source holds no store this build copies, or a read failed, or the
    /// destination could not be opened.
    #[error("{0} (nothing was written to the destination)")]
    Refused(StoreError),
    /// The copy stopped after it began writing to the destination, which
    /// may hold part of it (`Store::open` refuses such a store).
    #[error(transparent)]
    Stopped(StoreError),
}

impl CopyError {
    /// Whether the copy wrote to the destination before it failed: the
    /// destination may hold part of it, to be emptied before copying
    /// again. When false, the destination is as it was.
    pub fn wrote(&self) -> bool {
        matches!(self, CopyError::Stopped(_))
    }
}

impl From<BackendError> for CopyError {
    /// A failure before the copy writes (opening or reading).
    fn from(e: BackendError) -> Self {
        CopyError::Refused(StoreError::Backend(e))
    }
}

/// Refuses a destination that holds any row ([`CopyError::NotEmpty`]);
/// reads only.
pub async fn check_destination(to: &dyn Backend) -> Result<(), CopyError> {
    for table in Table::ALL {
        if !to.scan(table, &[], None, 1, false).await?.is_empty() {
            return Err(CopyError::NotEmpty {
                table: table.name(),
            });
        }
    }
    Ok(())
}

/// Copies every row of `from` into `to`, which must be empty; `from`
/// must hold a store (its format marker) and must not change meanwhile
/// (open it exclusively: no server on it). `progress` is told each table
/// and the rows copied of it so far. Nothing of `from` is changed; a
/// destination with rows, or a source that is no store, is refused
/// before anything is written ([`CopyError::wrote`] is false); when the
/// copy fails after it began writing, `to` may hold part of it (refused
/// by `Store::open`; empty it and copy again).
pub async fn copy_store(
    from: &dyn Backend,
    to: &dyn Backend,
    progress: impl FnMut(Table, u64),
) -> Result<CopyReport, CopyError> {
    let format = check_source(from).await.map_err(CopyError::Refused)?;
    check_destination(to).await?;
    copy_rows(from, to, format, progress)
        .await
        .map_err(CopyError::Stopped)
}

/// [`copy_store`]'s writing part, once both ends are checked.
async fn copy_rows(
    from: &dyn Backend,
    to: &dyn Backend,
    format: Vec<u8>,
    mut progress: impl FnMut(Table, u64),
) -> Result<CopyReport, StoreError> {
    let order = std::iter::once(Table::Environments)
        .chain(Table::ALL.into_iter().filter(|t| *t != Table::Environments));
    let mut report = CopyReport {
        current_format: format == FORMAT,
        ..CopyReport::default()
    };
    for table in order {
        let (mut rows, mut bytes) = (0u64, 0u64);
        let mut after: Option<Vec<u8>> = None;
        let mut ops = Vec::new();
        let mut held = 0usize;
        // One entry first; then as many as make about BATCH_BYTES at the
        // largest size seen.
        let (mut limit, mut largest) = (1usize, 0usize);
        loop {
            let entries = from
                .scan(table, &[], after.as_deref(), limit, false)
                .await?;
            largest = entries
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .fold(largest, usize::max);
            limit = (BATCH_BYTES / largest.max(1)).clamp(1, SCAN_ENTRIES);
            let Some((last, _)) = entries.last() else {
                break;
            };
            after = Some(last.clone());
            for (key, value) in entries {
                if table == Table::Meta && key == FORMAT_KEY {
                    continue;
                }
                rows += 1;
                let size = key.len() + value.len();
                bytes += size as u64;
                held += size;
                ops.push(Op::Put { table, key, value });
            }
            if held >= BATCH_BYTES || ops.len() >= SCAN_ENTRIES {
                // Unflushed: the marker's durable write at the end makes
                // everything before it durable.
                to.apply_unflushed(std::mem::take(&mut ops)).await?;
                held = 0;
                progress(table, rows);
            }
        }
        if table == Table::Environments {
            // Durable before anything else is written: whatever of a copy
            // cut short survives has them, and is refused for it.
            to.apply(ops).await?;
        } else if !ops.is_empty() {
            to.apply_unflushed(ops).await?;
        }
        progress(table, rows);
        report.tables.push((table, rows, bytes));
    }
    let marker = (FORMAT_KEY.len() + format.len()) as u64;
    to.apply(vec![Op::Put {
        table: Table::Meta,
        key: FORMAT_KEY.to_vec(),
        value: format,
    }])
    .await?;
    if let Some(meta) = report.tables.iter_mut().find(|(t, ..)| *t == Table::Meta) {
        meta.1 += 1;
        meta.2 += marker;
    }
    Ok(report)
}
