//! What the crate's unit tests share.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_store::{Backend, BackendError, MemoryBackend, Op, PendingWrite, Table};

/// A memory store whose writes fail while `full` is set, as a full
/// disk's do.
pub(crate) struct Full {
    pub inner: MemoryBackend,
    pub full: Arc<AtomicBool>,
}

fn no_space() -> BackendError {
    BackendError::Storage("IO error: No space left on device".into())
}

#[async_trait::async_trait]
impl Backend for Full {
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.inner.get(table, key).await
    }
    async fn get_many(
        &self,
        table: Table,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        self.inner.get_many(table, keys).await
    }
    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BackendError> {
        self.inner.scan(table, prefix, after, limit, reverse).await
    }
    async fn apply(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        if self.full.load(Ordering::SeqCst) {
            return Err(no_space());
        }
        self.inner.apply(ops).await
    }
    fn start_unflushed_in_order(&self, ops: Vec<Op>) -> PendingWrite {
        if self.full.load(Ordering::SeqCst) {
            return Box::pin(async { Err(no_space()) });
        }
        self.inner.start_unflushed_in_order(ops)
    }
}
