//! Online backups of an embedded store (`sluice serve --backup-dir`).
//!
//! A backup is the whole store at one moment ([`Store::back_up_into`]:
//! a snapshot of the backend, copied row by row) written as a redb store
//! in a folder of its own, `<dir>/<UTC time>`, which is a data directory
//! `sluice serve --data` opens (given the master key, which is not
//! copied: keep it apart from the backups) or `sluice copy-store` moves
//! into the store wanted. It is written as `<name>.partial` and renamed
//! once complete (and durable), so a folder without the suffix is a whole
//! backup; a partial one a crash left is removed by the next backup. The
//! newest `keep` are kept, the one just taken always among them. One
//! runs at a time: on a schedule (`--backup-every`, counted from the
//! newest backup there), and when the operator asks (SIGUSR1). On sled,
//! whose writes wait while a backup reads the store, a backup that takes
//! longer than [`SLED_HOLD_LIMIT`] is given up, the writes let go.
//!
//! Nothing a server may be using is deleted: the data directory may be
//! neither inside the backup folder nor hold it ([`BackupConfig::check`],
//! through links and `..`), and a backup's folder that holds anything a
//! backup does not (`cache/`, `master.key`: a server made it its data
//! directory) or whose store file is open is left where it is, and said,
//! as is one named for a time to come (taken while the clock was ahead):
//! a backup's age is its name's time.
//!
//! [`Store::back_up_into`]: sluice_store::Store::back_up_into

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::app::App;
use crate::config::StoreKind;

/// Where and how often the server backs its store up ([`BackupConfig::check`]
/// it against the data directory before serving).
#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// The folder holding the backups, one folder each.
    pub dir: PathBuf,
    /// How often one is taken on its own; never when `None` (only when
    /// asked).
    pub every: Option<Duration>,
    /// Backups kept; older ones are deleted after each new one.
    pub keep: usize,
}

/// A backup taken.
#[derive(Debug, Clone)]
pub struct Backup {
    /// Its folder.
    pub path: PathBuf,
    pub rows: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    pub took: Duration,
    /// Older backups deleted after it (past `keep`).
    pub removed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no backup folder is set (sluice serve --backup-dir)")]
    NotConfigured,
    #[error("a backup is already being taken")]
    Running,
    #[error(
        "a PostgreSQL store is backed up with PostgreSQL's own tools (pg_dump, base backups), not by sluice"
    )]
    NotEmbedded,
    #[error("backing up into {path}: {message}")]
    Failed { path: String, message: String },
    /// The data directory is inside the backup folder: a backup's pruning
    /// would delete the store being served.
    #[error(
        "the data directory {data} is inside the backup folder {dir} (--backup-dir): the backups' pruning would delete the store it serves; give the server a data directory outside it (to serve a backup, copy it out first: sluice copy-store --from redb:<backup> --to redb:<new data directory>)"
    )]
    DataInside { data: String, dir: String },
    /// The backup folder is inside the data directory.
    #[error(
        "--backup-dir {dir} is inside the data directory {data}: keep backups on another disk, or at least outside it"
    )]
    InsideData { data: String, dir: String },
    /// Where a path leads cannot be told (a folder of it cannot be read).
    #[error("cannot tell where {path} leads: {cause}")]
    Unresolved { path: String, cause: String },
}

impl BackupConfig {
    /// Refuses a backup folder and a data directory of which one is
    /// inside the other (or both the same), as the file system reaches
    /// them: symbolic links and `..` followed as far as the paths exist.
    /// A data directory inside the backup folder would be deleted by the
    /// pruning (it may be named as a backup is, after a backup it was
    /// made of); a backup folder inside the data directory is lost with
    /// it. The server takes no backup while this refuses.
    pub fn check(&self, data_dir: &Path) -> Result<(), BackupError> {
        let (data, dir) = (resolved(data_dir)?, resolved(&self.dir)?);
        let said = |p: &Path| p.display().to_string();
        if data.starts_with(&dir) {
            return Err(BackupError::DataInside {
                data: said(data_dir),
                dir: said(&self.dir),
            });
        }
        if dir.starts_with(&data) {
            return Err(BackupError::InsideData {
                data: said(data_dir),
                dir: said(&self.dir),
            });
        }
        Ok(())
    }
}

/// `path` as the file system reaches it: absolute, its links and `..`
/// resolved as far as it exists; the rest, not made yet (so no link),
/// appended with `..` taken from what comes before.
fn resolved(path: &Path) -> Result<PathBuf, BackupError> {
    let unresolved = |e: std::io::Error| BackupError::Unresolved {
        path: path.display().to_string(),
        cause: e.to_string(),
    };
    let absolute = std::path::absolute(path).map_err(unresolved)?;
    let parts: Vec<Component<'_>> = absolute.components().collect();
    for known in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..known].iter().collect();
        match std::fs::canonicalize(&prefix) {
            Ok(mut real) => {
                for part in &parts[known..] {
                    match part {
                        Component::ParentDir => {
                            real.pop();
                        }
                        Component::Normal(name) => real.push(name),
                        Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                    }
                }
                return Ok(real);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(unresolved(e)),
        }
    }
    // Not even the root exists.
    Ok(absolute)
}

/// One backup at a time.
#[derive(Default)]
pub struct Backups {
    running: tokio::sync::Mutex<()>,
    /// Set while one is taken (read by `/health`).
    busy: std::sync::atomic::AtomicBool,
}

impl Backups {
    /// Whether a backup is being taken (on sled, writes wait meanwhile).
    pub fn running(&self) -> bool {
        self.busy.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Clears [`Backups::busy`] when the backup ends, however it ends.
struct Busy<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The time format of a backup folder's name (UTC, no colons).
const NAME_FORMAT: &str = "%Y-%m-%dT%H-%M-%S%.3fZ";
const PARTIAL: &str = ".partial";
/// The store file in a backup's folder, and what redb makes beside it
/// first (a backup that stopped while it was made leaves it).
const STORE_FILE: &str = "store.redb";
const STORE_CREATING: &str = "store.redb.creating";

/// The longest a backup of a sled store may hold the store's writes back
/// (sled has no snapshots: they wait while it reads the store): a backup
/// still running then is given up, the writes let go. At the 211 MiB/s
/// measured on a 2-core machine, ten minutes back up a store of over
/// 100 GiB; `GET /health` does not count a write waiting for a backup as
/// a failing store, so without a bound a stuck backup would stop every
/// write with the server called healthy.
pub const SLED_HOLD_LIMIT: Duration = Duration::from_secs(600);

/// When the backup folder `name` was taken, if it is a whole backup.
fn taken_at(name: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(name, NAME_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

/// The whole backups in `dir`, oldest first.
fn backups_in(dir: &Path) -> std::io::Result<Vec<(DateTime<Utc>, PathBuf)>> {
    let mut found = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name();
                if let Some(at) = name.to_str().and_then(taken_at)
                    && entry.file_type()?.is_dir()
                {
                    found.push((at, entry.path()));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    found.sort();
    Ok(found)
}

/// Takes a backup now into the configured folder.
pub async fn back_up(app: &App) -> Result<Backup, BackupError> {
    let Some(config) = &app.config.backup else {
        return Err(BackupError::NotConfigured);
    };
    if matches!(app.config.store, StoreKind::Postgres(_)) {
        return Err(BackupError::NotEmbedded);
    }
    let Ok(_running) = app.backups.running.try_lock() else {
        return Err(BackupError::Running);
    };
    app.backups
        .busy
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let _busy = Busy(&app.backups.busy);
    let started = Instant::now();
    let name = Utc::now().format(NAME_FORMAT).to_string();
    let path = config.dir.join(&name);
    let partial = config.dir.join(format!("{name}{PARTIAL}"));
    let failed = |message: String| BackupError::Failed {
        path: path.display().to_string(),
        message,
    };
    // Checked again at every backup: a link may have changed since the
    // start, and a server embedding this crate may not have checked.
    {
        let (config, data) = (config.clone(), app.config.data_dir.clone());
        blocking(move || Ok(config.check(&data)))
            .await
            .map_err(failed)??;
    }
    let said = {
        let (dir, partial) = (config.dir.clone(), partial.clone());
        blocking(move || {
            let said = prepare(&dir)?;
            use std::os::unix::fs::DirBuilderExt as _;
            // Its owner's alone, as a data directory is.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&partial)
                .map_err(|e| format!("cannot create its folder: {e}"))?;
            Ok(said)
        })
        .await
        .map_err(failed)?
    };
    for line in said {
        app.config.events.say(&format!("backup: {line}"));
    }
    let copied = async {
        let file = partial.join(STORE_FILE);
        let to = blocking(move || {
            sluice_store_redb::RedbBackend::open(&file).map_err(|e| e.to_string())
        })
        .await
        .map_err(failed)?;
        let limit = matches!(app.config.store, StoreKind::Sled).then_some(SLED_HOLD_LIMIT);
        let report = copy_within(&app.store, &to, limit).await;
        // The destination closes (its writer joined, its last commit
        // synced) before the folder is renamed; off the workers.
        let _ = blocking(move || {
            drop(to);
            Ok(())
        })
        .await;
        report.map_err(failed)?.ok_or(BackupError::NotEmbedded)
    }
    .await;
    let finished = match copied {
        Ok(report) => {
            let (partial, path) = (partial.clone(), path.clone());
            blocking(move || finish(&partial, &path))
                .await
                .map(|()| report)
                .map_err(failed)
        }
        Err(e) => Err(e),
    };
    let report = match finished {
        Ok(report) => report,
        Err(e) => {
            // Nothing half-written is left to take for a backup.
            let partial = partial.clone();
            let _ = blocking(move || std::fs::remove_dir_all(&partial).map_err(|e| e.to_string()))
                .await;
            return Err(e);
        }
    };
    let (dir, keep, just) = (config.dir.clone(), config.keep, path.clone());
    // The backup is whole whatever the pruning does: its failure is said,
    // not the backup's.
    let removed = match blocking(move || prune(&dir, keep, &just, Utc::now())).await {
        Ok(pruned) => {
            for line in pruned.said {
                app.config.events.say(&format!("backup: {line}"));
            }
            pruned.removed
        }
        Err(e) => {
            app.config
                .events
                .say(&format!("backup: cannot remove older backups: {e}"));
            0
        }
    };
    Ok(Backup {
        path,
        rows: report.rows(),
        bytes: report.bytes(),
        took: started.elapsed(),
        removed,
    })
}

/// [`Store::back_up_into`] `to`, given up after `limit` when there is
/// one: the copy's snapshot dropped with it, so writes a sled store held
/// back go on.
///
/// [`Store::back_up_into`]: sluice_store::Store::back_up_into
async fn copy_within(
    store: &sluice_store::Store,
    to: &dyn sluice_store::Backend,
    limit: Option<Duration>,
) -> Result<Option<sluice_store::CopyReport>, String> {
    let copy = store.back_up_into(to);
    let copied = match limit {
        Some(limit) => tokio::time::timeout(limit, copy).await.map_err(|_| {
            format!(
                "given up after {} s, the longest a backup of a sled store may hold its writes back (writes go on); back a store this large up with its server stopped, or move it to redb (`sluice copy-store`), whose backups hold no write back",
                limit.as_secs()
            )
        })?,
        None => copy.await,
    };
    copied.map_err(|e| e.to_string())
}

/// Runs file-system work (removing a backup of gigabytes, syncing) off
/// the tokio workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("a file task failed: {e}"))?
}

/// Why the backup folder `path` must be left as it is, if it must: it
/// holds what a backup does not (a server made it its data directory:
/// `cache/`, `master.key`, a sled `db/`), or its store file is open (a
/// server serves it, a copy reads it, another server's backup is being
/// written into it). A folder that cannot be listed is left too.
fn in_use(path: &Path) -> Option<String> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => return Some(format!("cannot list it: {e}")),
    };
    for entry in entries {
        let name = match entry {
            Ok(entry) => entry.file_name(),
            Err(e) => return Some(format!("cannot list it: {e}")),
        };
        if name != STORE_FILE && name != STORE_CREATING {
            return Some(format!(
                "it holds {}, which a backup does not: a server may be using it as its data directory",
                name.to_string_lossy()
            ));
        }
    }
    for file in [STORE_FILE, STORE_CREATING] {
        match sluice_store_redb::in_use(&path.join(file)) {
            Ok(false) => {}
            Ok(true) => {
                return Some(format!(
                    "its {file} is open (a server serves it, a copy reads it, or another server is writing a backup into it)"
                ));
            }
            Err(e) => return Some(format!("cannot tell whether its {file} is open: {e}")),
        }
    }
    None
}

/// The line said of a folder the pruning leaves, and why.
fn left(path: &Path, why: &str) -> String {
    format!(
        "{} is left where it is, not deleted: {why}; a store to serve belongs outside the backup folder (sluice copy-store it out)",
        path.display()
    )
}

/// Creates the backup folder (owner only) and removes what a backup cut
/// short left in it, but what may be in use (said: the lines returned).
fn prepare(dir: &Path) -> Result<Vec<String>, String> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the folder: {e}"))?;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list the folder: {e}"))?;
    let mut said = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.strip_suffix(PARTIAL).and_then(taken_at).is_some() {
            if let Some(why) = in_use(&entry.path()) {
                said.push(left(&entry.path(), &why));
                continue;
            }
            std::fs::remove_dir_all(entry.path())
                .map_err(|e| format!("cannot remove the unfinished backup {name}: {e}"))?;
        }
    }
    Ok(said)
}

/// Renames the finished backup into place, durably (its own folder
/// synced first, so the name never stands for a folder without its file).
fn finish(partial: &Path, path: &Path) -> Result<(), String> {
    std::fs::File::open(partial)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync the backup's folder: {e}"))?;
    std::fs::rename(partial, path)
        .map_err(|e| format!("cannot rename the finished backup: {e}"))?;
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync the folder: {e}"))
}

/// What [`prune`] did.
struct Pruned {
    /// Backups deleted.
    removed: usize,
    /// Lines for the operator: what it left that it would otherwise have
    /// deleted or counted (in use, named for a time to come), and why.
    said: Vec<String>,
}

/// Deletes the oldest whole backups past `keep`, `just` (the one just
/// taken) counted among those kept and never deleted. A backup's age is
/// its name's time; one named for a time after `now` (the clock was
/// ahead when it was taken) is left and not counted, as is one that may
/// be in use ([`in_use`]): both said.
fn prune(dir: &Path, keep: usize, just: &Path, now: DateTime<Utc>) -> Result<Pruned, String> {
    let all = backups_in(dir).map_err(|e| format!("cannot list the folder: {e}"))?;
    let mut said = Vec::new();
    let mut older = Vec::new();
    for (at, path) in all {
        if path == just {
            continue;
        }
        if at > now {
            said.push(format!(
                "{} is named for a time to come (the clock was ahead when it was taken?): it is left where it is and not counted among the {keep} kept; delete it yourself once it is not needed",
                path.display()
            ));
            continue;
        }
        older.push(path);
    }
    // `just` is one of the `keep`.
    let past = older.len().saturating_sub(keep.max(1) - 1);
    let mut removed = 0;
    for path in &older[..past] {
        if let Some(why) = in_use(path) {
            said.push(left(path, &why));
            continue;
        }
        std::fs::remove_dir_all(path)
            .map_err(|e| format!("cannot remove the old backup {}: {e}", path.display()))?;
        removed += 1;
    }
    Ok(Pruned { removed, said })
}

/// When the newest backup in `dir` was taken, leaving out those named
/// for a time after `now`.
fn newest_in(dir: &Path, now: DateTime<Utc>) -> std::io::Result<Option<DateTime<Utc>>> {
    Ok(backups_in(dir)?
        .into_iter()
        .map(|(at, _)| at)
        .rfind(|at| *at <= now))
}

/// Takes a backup and tells the operator how it went (one line).
pub async fn back_up_and_tell(app: &App) -> Result<Backup, BackupError> {
    let result = back_up(app).await;
    let events = &app.config.events;
    match &result {
        Ok(b) => events.say(&format!(
            "backup: the store ({} rows, {:.1} MiB) copied in {:.1} s to {}{}{}",
            b.rows,
            b.bytes as f64 / (1024.0 * 1024.0),
            b.took.as_secs_f64(),
            b.path.display(),
            if matches!(app.config.store, StoreKind::Sled) {
                " (writes waited while it was read)"
            } else {
                ""
            },
            if b.removed > 0 {
                format!("; {} older removed", b.removed)
            } else {
                String::new()
            },
        )),
        Err(e) => events.say(&format!("backup failed: {e}")),
    }
    result
}

/// The task taking a backup every `every` (when set), the first one
/// `every` after the newest in the folder (at once when that is past;
/// a backup named for a time to come does not count). A backup folder
/// [`BackupConfig::check`] refuses is said at once, and no backup is
/// taken.
pub fn spawn_schedule(app: &Arc<App>) -> Option<tokio::task::JoinHandle<()>> {
    let config = app.config.backup.as_ref()?;
    if let Err(e) = config.check(&app.config.data_dir) {
        app.config
            .events
            .say(&format!("backups are refused, none will be taken: {e}"));
        return None;
    }
    let every = config.every?;
    let dir = config.dir.clone();
    let app: Weak<App> = Arc::downgrade(app);
    Some(tokio::spawn(async move {
        loop {
            let listed = dir.clone();
            let newest =
                blocking(move || newest_in(&listed, Utc::now()).map_err(|e| e.to_string()))
                    .await
                    .ok()
                    .flatten();
            let wait = newest
                .zip(chrono::Duration::from_std(every).ok())
                .and_then(|(at, every)| at.checked_add_signed(every))
                .and_then(|next| next.signed_duration_since(Utc::now()).to_std().ok())
                .unwrap_or(Duration::ZERO)
                .min(every);
            tokio::time::sleep(wait).await;
            let Some(app) = app.upgrade() else { return };
            if back_up_and_tell(&app).await.is_err() {
                drop(app);
                // Not again at once: a failing disk would be hammered.
                tokio::time::sleep(every.min(Duration::from_secs(600))).await;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backups_name_gives_its_time_and_nothing_else_does() {
        let at = Utc::now();
        let name = at.format(NAME_FORMAT).to_string();
        let back = taken_at(&name).unwrap();
        assert_eq!(back.timestamp_millis(), at.timestamp_millis());
        assert!(taken_at(&format!("{name}{PARTIAL}")).is_none());
        assert!(taken_at("store.redb").is_none());
        assert!(taken_at("2026-12-06").is_none());
    }

    /// A time for `now` in these tests, and the folder name of one.
    fn at(name: &str) -> DateTime<Utc> {
        taken_at(name).unwrap()
    }

    #[test]
    fn the_oldest_past_keep_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "2026-12-01T00-00-00.000Z",
            "2026-12-02T00-00-00.000Z",
            "2026-12-03T00-00-00.000Z",
        ];
        for n in names {
            std::fs::create_dir(dir.path().join(n)).unwrap();
        }
        std::fs::create_dir(dir.path().join("mine")).unwrap();
        std::fs::create_dir(dir.path().join("2026-12-04T00-00-00.000Z.partial")).unwrap();
        let just = dir.path().join(names[2]);
        let pruned = prune(dir.path(), 2, &just, at("2026-12-03T00-00-01.000Z")).unwrap();
        assert_eq!(pruned.removed, 1);
        assert!(pruned.said.is_empty(), "{:?}", pruned.said);
        assert!(!dir.path().join(names[0]).exists());
        assert!(dir.path().join(names[1]).exists() && just.exists());
        assert!(dir.path().join("mine").exists());
        assert!(prepare(dir.path()).unwrap().is_empty());
        assert!(!dir.path().join("2026-12-04T00-00-00.000Z.partial").exists());
        assert!(dir.path().join("mine").exists());
    }

    /// After a clock that was ahead: the backups named for a time to come
    /// are left, said, and counted neither among those kept nor as the
    /// newest; the backup just taken is kept, and the schedule counts
    /// from it.
    #[test]
    fn a_backup_named_for_a_time_to_come_neither_displaces_nor_delays_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let ahead = ["2027-06-01T00-00-00.000Z", "2027-06-02T00-00-00.000Z"];
        let (old, just) = ("2026-12-01T00-00-00.000Z", "2026-12-02T00-00-00.000Z");
        for n in ahead.iter().chain([&old, &just]) {
            std::fs::create_dir(dir.path().join(n)).unwrap();
        }
        let now = at("2026-12-02T00-00-01.000Z");
        let pruned = prune(dir.path(), 1, &dir.path().join(just), now).unwrap();
        assert_eq!(pruned.removed, 1);
        assert!(!dir.path().join(old).exists());
        assert!(
            dir.path().join(just).exists(),
            "the backup just taken was deleted"
        );
        for n in ahead {
            assert!(dir.path().join(n).exists());
            assert!(
                pruned
                    .said
                    .iter()
                    .any(|l| l.contains(n) && l.contains("named for a time to come")),
                "{:?}",
                pruned.said
            );
        }
        assert_eq!(newest_in(dir.path(), now).unwrap(), Some(at(just)));
        // Even with nothing else to keep, the one just taken stays.
        let pruned = prune(dir.path(), 0, &dir.path().join(just), now).unwrap();
        assert_eq!(pruned.removed, 0);
        assert!(dir.path().join(just).exists());
    }

    /// What a server may be using is never deleted: a backup folder made
    /// a data directory (`cache/`, `master.key`), a backup whose store is
    /// open, an unfinished backup being written; each is said. A crash's
    /// leftovers (a store file no one has open) are removed.
    #[test]
    fn a_store_in_use_in_the_backup_folder_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "2026-12-01T00-00-00.000Z",
            "2026-12-02T00-00-00.000Z",
            "2026-12-03T00-00-00.000Z",
            "2026-12-04T00-00-00.000Z",
        ];
        for n in names {
            std::fs::create_dir(dir.path().join(n)).unwrap();
        }
        std::fs::create_dir(dir.path().join(names[0]).join("cache")).unwrap();
        std::fs::write(dir.path().join(names[1]).join("master.key"), "k").unwrap();
        let served =
            sluice_store_redb::RedbBackend::open(&dir.path().join(names[2]).join(STORE_FILE))
                .unwrap();
        let partial = dir.path().join("2026-12-05T00-00-00.000Z.partial");
        let writing = sluice_store_redb::RedbBackend::open(&partial.join(STORE_FILE)).unwrap();
        let crashed = dir.path().join("2026-12-04T12-00-00.000Z.partial");
        drop(sluice_store_redb::RedbBackend::open(&crashed.join(STORE_FILE)).unwrap());

        let said = prepare(dir.path()).unwrap();
        assert!(partial.join(STORE_FILE).exists());
        assert!(!crashed.exists());
        assert!(said.len() == 1 && said[0].contains("is open"), "{said:?}");
        let just = dir.path().join(names[3]);
        let pruned = prune(dir.path(), 1, &just, at("2026-12-06T00-00-00.000Z")).unwrap();
        assert_eq!(pruned.removed, 0);
        for n in &names[..3] {
            assert!(dir.path().join(n).exists(), "{n} was deleted");
        }
        let said = pruned.said.join("\n");
        assert!(said.contains("it holds cache"), "{said}");
        assert!(said.contains("it holds master.key"), "{said}");
        assert!(said.contains("store.redb is open"), "{said}");
        // Let go of, the backup is an old one like any other.
        drop((served, writing));
        let pruned = prune(dir.path(), 1, &just, at("2026-12-06T00-00-00.000Z")).unwrap();
        assert_eq!(pruned.removed, 1);
        assert!(!dir.path().join(names[2]).exists());
    }

    /// The data directory inside the backup folder, or the backup folder
    /// inside it, is refused however the paths reach it; folders side by
    /// side are not.
    #[test]
    fn a_data_directory_and_a_backup_folder_inside_one_another_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let backups = root.join("backups");
        std::fs::create_dir(&backups).unwrap();
        std::os::unix::fs::symlink(&backups, root.join("link")).unwrap();
        let config = |dir: PathBuf| BackupConfig {
            dir,
            every: None,
            keep: 7,
        };
        let data_inside = [
            backups.join("2026-12-01T00-00-00.000Z"),
            root.join("link/2026-12-01T00-00-00.000Z"),
            root.join("elsewhere/../backups/data"),
            backups.clone(),
        ];
        for data in &data_inside {
            let err = config(backups.clone()).check(data).unwrap_err();
            assert!(
                matches!(err, BackupError::DataInside { .. }),
                "{data:?}: {err}"
            );
            assert!(err.to_string().contains("outside it"), "{err}");
        }
        let err = config(root.join("link"))
            .check(&backups.join("d"))
            .unwrap_err();
        assert!(matches!(err, BackupError::DataInside { .. }), "{err}");
        let err = config(root.join("data/../link/../data/backups"))
            .check(&root.join("data"))
            .unwrap_err();
        assert!(matches!(err, BackupError::InsideData { .. }), "{err}");
        assert!(
            err.to_string().contains("is inside the data directory"),
            "{err}"
        );
        config(backups.clone()).check(&root.join("data")).unwrap();
        config(root.join("backups-2")).check(&backups).unwrap();
    }

    /// A destination whose writes never end: the copy into it never
    /// ends. `reached` is told at the first write (the copy holds its
    /// snapshot by then).
    struct Stuck {
        reached: std::sync::Arc<tokio::sync::Notify>,
    }

    #[async_trait::async_trait]
    impl sluice_store::Backend for Stuck {
        async fn get(
            &self,
            _: sluice_store::Table,
            _: &[u8],
        ) -> Result<Option<Vec<u8>>, sluice_store::BackendError> {
            Ok(None)
        }
        async fn get_many(
            &self,
            _: sluice_store::Table,
            keys: &[Vec<u8>],
        ) -> Result<Vec<Option<Vec<u8>>>, sluice_store::BackendError> {
            Ok(vec![None; keys.len()])
        }
        async fn scan(
            &self,
            _: sluice_store::Table,
            _: &[u8],
            _: Option<&[u8]>,
            _: usize,
            _: bool,
        ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, sluice_store::BackendError> {
            Ok(Vec::new())
        }
        async fn apply(&self, _: Vec<sluice_store::Op>) -> Result<(), sluice_store::BackendError> {
            self.reached.notify_one();
            std::future::pending().await
        }
        fn start_unflushed_in_order(&self, _: Vec<sluice_store::Op>) -> sluice_store::PendingWrite {
            self.reached.notify_one();
            Box::pin(std::future::pending())
        }
    }

    /// A backup of a sled store that goes on past its limit is given up,
    /// saying so, and the writes it held back go on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sled_backup_past_its_limit_is_given_up_and_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let backend = std::sync::Arc::new(
            sluice_store_sled::SledBackend::open(&dir.path().join("db")).unwrap(),
        );
        let (store, _) = sluice_store::Store::open(
            backend,
            sluice_store::MasterKey::generate(),
            &[("dev".into(), None)],
        )
        .await
        .unwrap();
        let reached = std::sync::Arc::new(tokio::sync::Notify::new());
        let stuck = Stuck {
            reached: reached.clone(),
        };
        let limit = Duration::from_secs(2);
        let copy = async {
            let copied = copy_within(&store, &stuck, Some(limit)).await;
            (copied, Instant::now())
        };
        let write = async {
            // Once the backup holds the writes back.
            reached.notified().await;
            store.flush().await.unwrap();
            Instant::now()
        };
        let ((copied, given_up), written) =
            tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(copy, write) })
                .await
                .expect("the backup, or the write it held back, never ended");
        let err = copied.unwrap_err();
        assert!(err.contains("given up after"), "{err}");
        assert!(written >= given_up, "the write did not wait for the backup");
    }
}
