//! The platform store of sluice: environments and their secret keys,
//! integrations, connections, environment variables, the records cache and
//! the server's own documents, over a small key-value port ([`Backend`]).
//!
//! - [`Backend`] is the port: point reads, prefix scans and one atomic,
//!   durable multi-table write. [`MemoryBackend`] is the in-memory twin;
//!   `sluice-store-sled` the embedded one. Every backend passes the same
//!   suite ([`testsuite`], feature `testsuite`).
//! - [`Store`] opens a backend with a [`MasterKey`], creates the first
//!   environments on first start and finds an environment by name, id or
//!   secret key.
//! - [`EnvStore`] is one environment. Tenant scoping lives in its type: every
//!   key it builds starts with its environment's id and no method takes an
//!   environment, so a handler holding one cannot reach another tenant.
//!   It implements the runtime's `RecordStore` and `ConnectionStore`.
//! - Secrets (credentials, OAuth client secrets, webhook secrets,
//!   environment variables) are sealed with a per-environment data key
//!   wrapped by the master key ([`crypto`](crate::MasterKey)).
//!
//! The store knows no HTTP, no wasm and no configuration files; the caller
//! reads the master key and the initial secret keys and passes them in.

mod backend;
mod copy;
mod crypto;
mod env;
mod error;
pub mod keys;
mod records;
mod rows;
mod store;
pub mod writer;

/// Decodes a stored JSON value. serde_json's parser stops at 128 levels
/// of nesting but its writer has no limit, and a value read from outside
/// at the parser's limit (a webhook body, an upstream's error, metadata) is
/// stored a few levels deeper inside its document: read with the limit,
/// that document could never be read back, failing every run, status or
/// start that reads it. What is stored was written by sluice from values
/// that were parsed with the limit and wrapped a few levels, so its depth
/// stays bounded.
pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let value = T::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use backend::{
    Backend, BackendError, INLINE_READ_KEYS, KeyRange, MemoryBackend, Op, PendingWrite, ReadOnly,
    Table, on_multi_thread_runtime, prefix_end, scan_range,
};
pub use copy::{CopyError, CopyReport, check_destination, check_source, copy_store};
pub use crypto::MasterKey;
pub use env::{DocBatch, Integration};
pub use error::StoreError;
pub use records::{PAGE_BYTES, Pruned, RawRecordsPage, RecordFilter, RecordsPage, RecordsQuery};
pub use rows::RawRecord;
pub use store::{EnvStore, SECRET_KEY, Store};

#[cfg(test)]
mod memory_suite {
    use crate::MemoryBackend;
    use crate::testsuite::Reopen;

    crate::backend_tests!(|| Reopen::memory(MemoryBackend::new()));
}
