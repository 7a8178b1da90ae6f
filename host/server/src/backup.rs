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
//! newest `keep` are kept. One runs at a time: on a schedule
//! (`--backup-every`, counted from the newest backup there), and when the
//! operator asks (SIGUSR1).
//!
//! [`Store::back_up_into`]: sluice_store::Store::back_up_into

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::app::App;
use crate::config::StoreKind;

/// Where and how often the server backs its store up.
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
    {
        let (dir, partial) = (config.dir.clone(), partial.clone());
        blocking(move || {
            prepare(&dir)?;
            use std::os::unix::fs::DirBuilderExt as _;
            // Its owner's alone, as a data directory is.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&partial)
                .map_err(|e| format!("cannot create its folder: {e}"))
        })
        .await
        .map_err(failed)?;
    }
    let copied = async {
        let file = partial.join("store.redb");
        let to = blocking(move || {
            sluice_store_redb::RedbBackend::open(&file).map_err(|e| e.to_string())
        })
        .await
        .map_err(failed)?;
        let report = app.store.back_up_into(&to).await;
        // The destination closes (its writer joined, its last commit
        // synced) before the folder is renamed; off the workers.
        let _ = blocking(move || {
            drop(to);
            Ok(())
        })
        .await;
        report
            .map_err(|e| failed(e.to_string()))?
            .ok_or(BackupError::NotEmbedded)
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
    let (dir, keep) = (config.dir.clone(), config.keep);
    // The backup is whole whatever the pruning does: its failure is said,
    // not the backup's.
    let removed = match blocking(move || prune(&dir, keep)).await {
        Ok(n) => n,
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

/// Runs file-system work (removing a backup of gigabytes, syncing) off
/// the tokio workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("a file task failed: {e}"))?
}

/// Creates the backup folder (owner only) and removes what a backup cut
/// short left in it.
fn prepare(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the folder: {e}"))?;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list the folder: {e}"))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.strip_suffix(PARTIAL).and_then(taken_at).is_some() {
            std::fs::remove_dir_all(entry.path())
                .map_err(|e| format!("cannot remove the unfinished backup {name}: {e}"))?;
        }
    }
    Ok(())
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

/// Deletes the oldest whole backups past `keep`; how many.
fn prune(dir: &Path, keep: usize) -> Result<usize, String> {
    let all = backups_in(dir).map_err(|e| format!("cannot list the folder: {e}"))?;
    let old = all.len().saturating_sub(keep.max(1));
    for (_, path) in &all[..old] {
        std::fs::remove_dir_all(path)
            .map_err(|e| format!("cannot remove the old backup {}: {e}", path.display()))?;
    }
    Ok(old)
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
/// `every` after the newest in the folder (at once when that is past).
pub fn spawn_schedule(app: &Arc<App>) -> Option<tokio::task::JoinHandle<()>> {
    let config = app.config.backup.as_ref()?;
    let every = config.every?;
    let dir = config.dir.clone();
    let app: Weak<App> = Arc::downgrade(app);
    Some(tokio::spawn(async move {
        loop {
            let listed = dir.clone();
            let newest = blocking(move || backups_in(&listed).map_err(|e| e.to_string()))
                .await
                .ok()
                .and_then(|all| all.last().map(|(at, _)| *at));
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
        assert_eq!(prune(dir.path(), 2).unwrap(), 1);
        assert!(!dir.path().join(names[0]).exists());
        assert!(dir.path().join(names[1]).exists() && dir.path().join(names[2]).exists());
        assert!(dir.path().join("mine").exists());
        prepare(dir.path()).unwrap();
        assert!(!dir.path().join("2026-12-04T00-00-00.000Z.partial").exists());
        assert!(dir.path().join("mine").exists());
    }
}
