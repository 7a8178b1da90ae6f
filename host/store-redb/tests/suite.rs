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
