//! What only the sled backend has: a directory on disk.
// Test code: helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use sluice_runtime::connection::Connection;
use sluice_store::{Backend, BackendError, MasterKey, Op, Store, Table};
use sluice_store_sled::SledBackend;

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        table: Table::Docs,
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
}

fn open_err(dir: &Path) -> String {
    match SledBackend::open(dir) {
        Ok(_) => panic!("{} was opened", dir.display()),
        Err(e @ BackendError::Open { .. }) => e.to_string(),
        Err(e) => panic!("not an open error: {e}"),
    }
}

/// Every file under `dir`, read whole.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn on_disk(dir: &Path, needle: &str) -> bool {
    files(dir)
        .iter()
        .any(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

#[tokio::test]
async fn reopening_after_drop_keeps_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let backend = SledBackend::open(&db).unwrap();
    let mut ops = Vec::new();
    for table in Table::ALL {
        ops.push(Op::Put {
            table,
            key: b"k".to_vec(),
            value: table.name().as_bytes().to_vec(),
        });
    }
    backend.apply(ops).await.unwrap();
    backend
        .apply(vec![put("a", "1"), put("b", "2")])
        .await
        .unwrap();
    backend
        .apply(vec![Op::Delete {
            table: Table::Docs,
            key: b"a".to_vec(),
        }])
        .await
        .unwrap();
    drop(backend);

    let backend = SledBackend::open(&db).unwrap();
    for table in Table::ALL {
        let expected = if table == Table::Docs {
            "docs"
        } else {
            table.name()
        };
        assert_eq!(
            backend.get(table, b"k").await.unwrap().as_deref(),
            Some(expected.as_bytes()),
            "{table:?}"
        );
    }
    let docs = backend
        .scan(Table::Docs, b"", None, 10, false)
        .await
        .unwrap();
    let keys: Vec<_> = docs.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, [&b"b"[..], b"k"]);
}

#[test]
fn a_file_where_the_database_should_be_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db");
    std::fs::write(&file, b"not a database").unwrap();
    let err = open_err(&file);
    assert!(
        err.contains(&file.display().to_string()) && err.contains("not a directory"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"not a database",
        "left as it was"
    );
}

/// A first start killed while sled created its files leaves only its empty
/// `blobs/` folder: that holds no data and opens as a new database (it was
/// refused for ever); a folder with a file in it is still refused.
#[test]
fn a_directory_of_empty_folders_opens_as_new_and_one_with_files_does_not() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("blobs")).unwrap();
    SledBackend::open(dir.path()).unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir(other.path().join("blobs")).unwrap();
    std::fs::write(other.path().join("blobs").join("x"), b"mine").unwrap();
    let err = open_err(other.path());
    assert!(err.contains("not a sled database"), "{err}");
}

#[test]
fn a_directory_of_other_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let err = open_err(dir.path());
    assert!(err.contains("not a sled database"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing was added"
    );
}

#[test]
fn a_damaged_database_is_refused_not_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    drop(SledBackend::open(&db).unwrap());
    // Garbage in place of sled's configuration…
    let conf = db.join("conf");
    std::fs::write(&conf, b"garbage garbage garbage").unwrap();
    let err = open_err(&db);
    assert!(
        err.contains(&db.display().to_string()) && err.contains("unreadable"),
        "{err}"
    );
    assert_eq!(std::fs::read(&conf).unwrap(), b"garbage garbage garbage");

    // …or only garbage files under sled's names.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("conf"), vec![0xA5; 4096]).unwrap();
    std::fs::write(other.join("db"), vec![0x5A; 1 << 20]).unwrap();
    let err = open_err(&other);
    assert!(err.contains("unreadable"), "{err}");
}

/// sled recovers a log damaged early on as an empty database: a store
/// that was made there is then refused, never replaced by a new one with
/// new keys written over what is left of the old.
#[tokio::test]
async fn a_store_whose_database_comes_back_empty_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let master = MasterKey::generate();
    let dev = [("dev".to_string(), None)];
    let backend = Arc::new(SledBackend::open(&db).unwrap());
    let (store, created) = Store::open(backend, master.clone(), &dev).await.unwrap();
    assert_eq!(created.len(), 1);
    drop(store);
    // What sled shows after such damage: the files, every tree empty.
    {
        let raw = sled::open(&db).unwrap();
        for name in raw.tree_names() {
            raw.open_tree(&name).unwrap().clear().unwrap();
        }
        raw.flush().unwrap();
    }
    let backend = Arc::new(SledBackend::open(&db).unwrap());
    let Err(err) = Store::open(backend, master.clone(), &dev).await else {
        panic!("a new store was made over the damaged one");
    };
    assert!(err.to_string().contains("no format marker"), "{err}");

    // A first start cut short before the store was made is a new store.
    let fresh = dir.path().join("fresh");
    drop(SledBackend::open(&fresh).unwrap());
    let backend = Arc::new(SledBackend::open(&fresh).unwrap());
    let (store, created) = Store::open(backend, master.clone(), &dev).await.unwrap();
    assert_eq!(created.len(), 1, "made on the second start");
    drop(store);
    let backend = Arc::new(SledBackend::open(&fresh).unwrap());
    let (_, created) = Store::open(backend, master, &dev).await.unwrap();
    assert!(created.is_empty(), "opened, not made again");
}

#[test]
fn a_database_open_in_this_process_is_not_opened_twice() {
    let dir = tempfile::tempdir().unwrap();
    let first = SledBackend::open(dir.path()).unwrap();
    let err = open_err(dir.path());
    assert!(
        err.contains(&dir.path().display().to_string()) && err.contains("already open"),
        "{err}"
    );
    drop(first);
    // sled's flusher thread lets go of the database (and its lock) within
    // its flush period after the last handle is dropped.
    let started = std::time::Instant::now();
    loop {
        match SledBackend::open(dir.path()) {
            Ok(_) => break,
            Err(e) if started.elapsed() < std::time::Duration::from_secs(10) => {
                assert!(e.to_string().contains("already open"), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("still not reopenable 10 s after the drop: {e}"),
        }
    }
}

#[tokio::test]
async fn no_file_holds_a_secret_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let backend = Arc::new(SledBackend::open(&db).unwrap());
    let (store, _) = Store::open(backend, MasterKey::generate(), &[("dev".into(), None)])
        .await
        .unwrap();
    let env = store.environment("dev").unwrap();
    env.put_connection(&Connection {
        connection_id: "c1".into(),
        provider_config_key: "github".into(),
        provider: "github".into(),
        credentials: serde_json::from_value(json!({
            "type": "OAUTH2", "access_token": "sekret-token-123"
        }))
        .unwrap(),
        connection_config: Default::default(),
        metadata: json!({"note": "plaintext-marker-000"}),
        created_at: Utc::now(),
        updated_at: Utc::now(),
        end_user: serde_json::Value::Null,
        tags: Default::default(),
        webhook_url_override: None,
        token_host_from_browser: false,
    })
    .await
    .unwrap();
    // The write was flushed before it returned: the plain fields are on
    // disk now, and the check can see them.
    assert!(on_disk(&db, "plaintext-marker-000"));
    assert!(!on_disk(&db, "sekret-token-123"));
    drop((env, store));
    assert!(!on_disk(&db, "sekret-token-123"), "nor after closing");
}

/// Env var naming the directory the SIGKILL child writes to.
const CHILD_DIR: &str = "SLUICE_STORE_SLED_CHILD_DIR";

/// The child half of `acknowledged_writes_survive_sigkill`: writes batches
/// and prints each one's number once `apply` has returned, until killed.
#[tokio::test]
#[ignore = "run by acknowledged_writes_survive_sigkill in a child process"]
async fn sigkill_child() {
    let dir = std::env::var(CHILD_DIR).expect("run by acknowledged_writes_survive_sigkill");
    let backend = SledBackend::open(Path::new(&dir)).unwrap();
    for i in 0u32.. {
        let ops = vec![
            put(&format!("doc-{i:06}"), &"x".repeat(512)),
            Op::Put {
                table: Table::Records,
                key: format!("rec-{i:06}").into_bytes(),
                value: vec![1; 256],
            },
        ];
        backend.apply(ops).await.unwrap();
        println!("applied {i}");
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, &db)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut last = None;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if let Some(n) = line.unwrap().strip_prefix("applied ") {
            let n: u32 = n.parse().unwrap();
            last = Some(n);
            if n >= 200 {
                // SIGKILL right after an acknowledgement, well within
                // sled's own 500 ms flush interval.
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    let last = last.expect("the child acknowledged writes");
    let backend = SledBackend::open(&db).unwrap();
    let docs = backend
        .scan(Table::Docs, b"doc-", None, usize::MAX, false)
        .await
        .unwrap();
    let recs = backend
        .scan(Table::Records, b"rec-", None, usize::MAX, false)
        .await
        .unwrap();
    assert!(
        docs.len() as u32 > last,
        "{} docs, {last} acknowledged",
        docs.len()
    );
    // Both tables of every batch, or neither.
    assert_eq!(docs.len(), recs.len());
}
