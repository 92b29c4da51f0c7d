//! A queued Lock: the handle a waiter holds until it is granted the lock, times out, or leaves.
//!
//! The grant arrives through a flume channel of capacity one, so async transports await it
//! ([`Pending::wait_async`]) and tests or the CLI block on it ([`Pending::wait`]). Dropping the
//! handle before the result is taken cancels the wait: the waiter leaves the queue, and a grant
//! that was already sent (the race between hand-off and cancel) is taken back and passed to the
//! next waiter, so no slot is lost and no departed client holds a lock.

use std::sync::Arc;

use crate::engine::Inner;
use crate::error::LockError;
use crate::shard::WaitResult;
use crate::types::Grant;

/// A waiter's place in a lock's queue. See the module documentation.
pub struct Pending {
    inner: Arc<Inner>,
    shard: usize,
    hash: u64,
    name: Arc<str>,
    waiter: u64,
    rx: flume::Receiver<WaitResult>,
    /// Set once the result has been taken: dropping then cancels nothing.
    settled: bool,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("name", &self.name)
            .field("waiter", &self.waiter)
            .field("settled", &self.settled)
            .finish()
    }
}

impl Pending {
    pub(crate) fn new(
        inner: Arc<Inner>,
        shard: usize,
        hash: u64,
        name: Arc<str>,
        waiter: u64,
        rx: flume::Receiver<WaitResult>,
    ) -> Pending {
        Pending {
            inner,
            shard,
            hash,
            name,
            waiter,
            rx,
            settled: false,
        }
    }

    /// The waiter's id (unique within its lock's shard).
    pub fn waiter_id(&self) -> u64 {
        self.waiter
    }

    fn settle(&mut self, result: Result<WaitResult, flume::RecvError>) -> Result<Grant, LockError> {
        self.settled = true;
        // The sender only disappears without a result if the engine itself is gone.
        result.unwrap_or(Err(LockError::Shutdown))
    }

    /// Blocks the thread until granted, timed out or cancelled.
    pub fn wait(mut self) -> Result<Grant, LockError> {
        let result = self.rx.recv();
        self.settle(result)
    }

    /// Waits asynchronously. If the returned future is dropped before it completes (a client
    /// that cancelled), the wait is cancelled as if the handle were dropped.
    pub async fn wait_async(mut self) -> Result<Grant, LockError> {
        let result = self.rx.recv_async().await;
        self.settle(result)
    }

    /// The result if it has arrived, without waiting.
    pub fn try_result(&mut self) -> Option<Result<Grant, LockError>> {
        if self.settled {
            return None;
        }
        match self.rx.try_recv() {
            Ok(result) => Some(self.settle(Ok(result))),
            Err(flume::TryRecvError::Empty) => None,
            Err(flume::TryRecvError::Disconnected) => {
                Some(self.settle(Err(flume::RecvError::Disconnected)))
            }
        }
    }

    /// Leaves the queue now (same as dropping the handle).
    pub fn cancel(self) {}
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.settled {
            self.inner
                .cancel_waiter(self.shard, self.hash, &self.name, self.waiter, &self.rx);
        }
    }
}
