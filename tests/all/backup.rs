//! Online backups (`serve --backup-dir`) next to what a server may be
//! serving: the pruning deletes old backups only, never a store in use,
//! never the backup just taken.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sluice_server::backup::{BackupConfig, BackupError};
use sluice_server::{EventLog, Server, StoreKind};
use sluice_store::MasterKey;
use sluice_tests::guests;

use crate::server::{Client, DEV_KEY, start_on, start_tuned};

/// No provider is called: any upstream will do.
const UPSTREAM: &str = "http://127.0.0.1:9";

/// What the server tells its operator, kept.
fn told() -> (EventLog, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let kept = lines.clone();
    let events = EventLog::new(move |line| kept.lock().unwrap().push(line.to_string()));
    (events, lines)
}

/// A server on `data` backing up into `dir`, `keep` kept.
async fn backing_up(
    kind: StoreKind,
    data: &Path,
    master: &MasterKey,
    dir: &Path,
    keep: usize,
    every: Option<Duration>,
    events: EventLog,
) -> Server {
    start_tuned(kind, data, master, UPSTREAM, |config| {
        config.backup = Some(BackupConfig {
            dir: dir.to_path_buf(),
            every,
            keep,
        });
        config.events = events;
    })
    .await
}

async fn set_region(server: &Server, value: &str) {
    let c = Client::new(server, DEV_KEY);
    let (status, body) = c
        .send(
            "PUT",
            "/environment-variables",
            Some(json!([{"name": "REGION", "value": value}])),
        )
        .await;
    assert!(status < 300, "{body}");
}

async fn region(server: &Server) -> String {
    let c = Client::new(server, DEV_KEY);
    let (status, body) = c.send("GET", "/environment-variables", None).await;
    assert_eq!(status, 200, "{body}");
    body[0]["value"].as_str().unwrap_or_default().to_string()
}

/// The folders in `dir`, by name, sorted.
fn folders(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A backup served where it was taken (as the README once said to), by a
/// second server: the first server's pruning leaves it, saying why, while
/// it deletes the old backups beside it; the second server goes on
/// writing, and its store is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_served_from_the_backup_folder_survives_another_servers_pruning() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, backups) = (tmp.path().join("data"), tmp.path().join("backups"));
    let master = MasterKey::generate();
    let (events, lines) = told();
    let first = backing_up(StoreKind::Sled, &data, &master, &backups, 1, None, events).await;
    set_region(&first, "before").await;
    let taken = first.back_up().await.unwrap().path;

    let served = start_on(StoreKind::Redb, &taken, &master, UPSTREAM).await;
    assert_eq!(region(&served).await, "before");
    set_region(&served, "served").await;

    // Keep 1: each new backup would delete every older one.
    let second = first.back_up().await.unwrap();
    assert_eq!(second.removed, 0, "{second:?}");
    let third = first.back_up().await.unwrap();
    assert_eq!(third.removed, 1, "the backup beside it was not deleted");
    assert!(
        taken.join("store.redb").exists(),
        "the served store was deleted"
    );
    assert!(!second.path.exists() && third.path.exists());
    let name = taken.file_name().unwrap().to_str().unwrap();
    {
        let lines = lines.lock().unwrap();
        assert!(
            lines
                .iter()
                .any(|l| l.contains(name) && l.contains("is left where it is")),
            "{lines:?}"
        );
    }
    set_region(&served, "after the pruning").await;
    assert_eq!(region(&served).await, "after the pruning");
    served.stop().await;
    let again = start_on(StoreKind::Redb, &taken, &master, UPSTREAM).await;
    assert_eq!(region(&again).await, "after the pruning");
    again.stop().await;
    first.stop().await;
}

/// A server whose data directory is inside its backup folder (a backup
/// served in place, with backups on): it says at start that it takes no
/// backup, refuses each one asked for, and its store stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_backs_up_nothing_into_the_folder_its_store_is_in() {
    let tmp = tempfile::tempdir().unwrap();
    let backups = tmp.path().join("backups");
    let data = backups.join("2026-12-01T00-00-00.000Z");
    std::fs::create_dir_all(&data).unwrap();
    let master = MasterKey::generate();
    let (events, lines) = told();
    let every = Some(Duration::from_secs(60));
    let server = backing_up(StoreKind::Redb, &data, &master, &backups, 1, every, events).await;
    set_region(&server, "kept").await;
    {
        let lines = lines.lock().unwrap();
        assert!(
            lines.iter().any(
                |l| l.contains("backups are refused") && l.contains("inside the backup folder")
            ),
            "{lines:?}"
        );
    }
    let err = server.back_up().await.unwrap_err();
    assert!(matches!(err, BackupError::DataInside { .. }), "{err}");
    assert!(err.to_string().contains("outside it"), "{err}");
    assert_eq!(folders(&backups), ["2026-12-01T00-00-00.000Z"]);
    assert_eq!(region(&server).await, "kept");
    server.stop().await;
}

/// `sluice serve` as a user runs it (in process).
async fn sluice(args: &[&str]) -> (i32, String, String) {
    let mut argv = vec!["sluice".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv.extend(["--cache-dir".to_string(), guests::CACHE_DIR.to_string()]);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let run = sluice::cli::run(argv.into_iter().map(Into::into), &mut out, &mut err);
    let code = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("sluice serve started instead of refusing its folders");
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// `sluice serve` refuses a data directory inside its backup folder, also
/// when the folder is named through a link; and a backup folder inside
/// the data directory reached through `..`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_data_directory_inside_its_backup_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let backups = tmp.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&backups, &link).unwrap();
    let data: PathBuf = backups.join("2026-12-01T00-00-00.000Z");
    let shown = |p: &Path| p.display().to_string();
    for dir in [&backups, &link] {
        let (code, _, err) = sluice(&[
            "serve",
            "--data",
            &shown(&data),
            "--listen",
            "127.0.0.1:0",
            "--backup-dir",
            &shown(dir),
        ])
        .await;
        assert_ne!(code, 0, "{err}");
        assert!(err.contains("is inside the backup folder"), "{err}");
        assert!(err.contains("outside it"), "{err}");
    }
    let other = tmp.path().join("data");
    let inside = tmp.path().join("elsewhere/../data/backups");
    let (code, _, err) = sluice(&[
        "serve",
        "--data",
        &shown(&other),
        "--listen",
        "127.0.0.1:0",
        "--backup-dir",
        &shown(&inside),
    ])
    .await;
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("is inside the data directory"), "{err}");
}

/// After a clock that was ahead left a backup named for 2099: the
/// schedule takes the first backup at once (the newest real one is none),
/// and each new backup is kept, the future one left and said, not
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_named_for_a_time_to_come_neither_delays_nor_displaces_new_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, backups) = (tmp.path().join("data"), tmp.path().join("backups"));
    let ahead = "2099-01-01T00-00-00.000Z";
    std::fs::create_dir_all(backups.join(ahead)).unwrap();
    let master = MasterKey::generate();
    let (events, lines) = told();
    let every = Some(Duration::from_secs(3600));
    let server = backing_up(StoreKind::Redb, &data, &master, &backups, 1, every, events).await;
    let taken = |lines: &Arc<Mutex<Vec<String>>>| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("backup: the store ("))
            .count()
    };
    let started = std::time::Instant::now();
    while taken(&lines) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no backup was taken at start: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let backup = server.back_up().await.unwrap();
    assert_eq!(backup.removed, 1, "{backup:?}");
    assert!(backup.path.exists(), "the backup just taken was deleted");
    let name = backup
        .path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(folders(&backups), [name, ahead.to_string()]);
    {
        let lines = lines.lock().unwrap();
        assert!(
            lines
                .iter()
                .any(|l| l.contains(ahead) && l.contains("named for a time to come")),
            "{lines:?}"
        );
    }
    server.stop().await;
}
