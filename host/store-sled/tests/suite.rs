//! The shared store suite on sled, each case in its own temporary directory.
// Test code: helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use sluice_store::testsuite::Reopen;
use sluice_store_sled::SledBackend;

fn sled_in_tempdir() -> Reopen {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    Reopen::new(move || {
        // The closure owns the directory: it lives as long as the case.
        let _dir = &dir;
        Arc::new(SledBackend::open(&path).unwrap())
    })
}

sluice_store::backend_tests!(sled_in_tempdir);
