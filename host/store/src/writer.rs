//! The writer thread an embedded backend hands its writes to.
//!
//! One thread owns a database's writing side: [`WriterThread::write`]
//! queues a [`WriteRequest`] and waits for its answer, the backend's loop
//! takes every request that is waiting ([`take_group`]), writes them and
//! answers each. So writes, flushes and the wake-ups of waiting writers
//! never run on a tokio worker, and concurrent durable writes share one
//! flush (group commit).

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::backend::{BackendError, Op, PendingWrite};

/// One write handed to a writer thread.
pub struct WriteRequest {
    pub ops: Vec<Op>,
    /// Answered only once the ops are on disk.
    pub durable: bool,
    /// All ops or none; otherwise in order, each atomic alone (see
    /// [`Backend::apply_unflushed_in_order`](crate::Backend::apply_unflushed_in_order)).
    pub atomic: bool,
    /// Where the answer goes.
    pub done: tokio::sync::oneshot::Sender<Result<(), BackendError>>,
}

/// A backend's writer thread and the queue to it. Dropping it closes the
/// queue, so the thread ends once it has answered every request, and joins
/// the thread: whatever the thread held of the database (and its file
/// lock) is released when the drop returns.
pub struct WriterThread {
    requests: Option<mpsc::Sender<WriteRequest>>,
    thread: Option<JoinHandle<()>>,
}

impl WriterThread {
    /// Starts thread `name` running `run` over the queue.
    pub fn spawn(
        name: &str,
        run: impl FnOnce(mpsc::Receiver<WriteRequest>) + Send + 'static,
    ) -> std::io::Result<WriterThread> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(rx))?;
        Ok(WriterThread {
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `ops` and waits for the writer's answer.
    pub async fn write(
        &self,
        ops: Vec<Op>,
        durable: bool,
        atomic: bool,
    ) -> Result<(), BackendError> {
        self.submit(ops, durable, atomic).await
    }

    /// Queues `ops` now and returns the wait for the writer's answer: the
    /// write happens whether or not the answer is awaited, after every
    /// write queued before it.
    pub fn submit(&self, ops: Vec<Op>, durable: bool, atomic: bool) -> PendingWrite {
        if ops.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        let closed = || BackendError::Storage("the database's writer has stopped".into());
        let (done, answer) = tokio::sync::oneshot::channel();
        let queued = match &self.requests {
            Some(requests) => requests
                .send(WriteRequest {
                    ops,
                    durable,
                    atomic,
                    done,
                })
                .is_ok(),
            None => false,
        };
        if !queued {
            return Box::pin(std::future::ready(Err(closed())));
        }
        Box::pin(async move { answer.await.map_err(|_| closed())? })
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The ops a writer takes into one group at most (summed over its
/// requests), so a burst of writes is answered in bounded steps.
pub const GROUP_OPS: usize = 64 * 1024;

/// `first` and the requests waiting behind it, up to [`GROUP_OPS`] ops.
pub fn take_group(
    first: WriteRequest,
    requests: &mpsc::Receiver<WriteRequest>,
) -> Vec<WriteRequest> {
    let mut ops = first.ops.len();
    let mut group = vec![first];
    while ops < GROUP_OPS {
        match requests.try_recv() {
            Ok(next) => {
                ops += next.ops.len();
                group.push(next);
            }
            Err(_) => break,
        }
    }
    group
}
