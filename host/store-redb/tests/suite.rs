//! The shared store suite on redb, each case in its own temporary directory.
// Test code: helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use sluice_store::testsuite::Reopen;
use sluice_store_redb::RedbBackend;

fn redb_in_tempdir() -> Reopen {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    Reopen::new(move || {
        // The closure owns the directory: it lives as long as the case.
        let _dir = &dir;
        Arc::new(RedbBackend::open(&path).unwrap())
    })
}

sluice_store::backend_tests!(redb_in_tempdir);

/// A new database is created beside its path and moved into place whole:
/// what a first start killed midway leaves (`<name>.creating`, half a
/// header) is replaced by the next start, which opens a new database; it
/// was refused for ever when the half-written file sat at the path itself.
/// A file at the path that is not a database is still refused, untouched.
#[test]
fn a_half_created_database_is_replaced_and_a_foreign_file_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let stray = dir.path().join("store.redb.creating");
    std::fs::write(&stray, b"redb\x1a\x0a\xa9\x0d\x0a half a header").unwrap();
    let db = RedbBackend::open(&path).unwrap();
    drop(db);
    assert!(!stray.exists(), "the stray file was left");
    RedbBackend::open(&path).unwrap();

    let foreign = dir.path().join("other.redb");
    std::fs::write(&foreign, b"not a database").unwrap();
    let err = match RedbBackend::open(&foreign) {
        Ok(_) => panic!("a file that is not a database was opened"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&foreign.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&foreign).unwrap(), b"not a database");
}
