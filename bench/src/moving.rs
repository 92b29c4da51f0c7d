//! Connections that move to another node of a cluster when theirs fails.
//!
//! Given several gRPC addresses, each connection starts at one of them (in turn) and, when a
//! call shows its node failed (the connection broke, or the node answered `UNAVAILABLE`
//! because it is cut off from its cluster), opens a new connection to the next address; the
//! workers sharing the connection pick the new one up at their next call. An answer saying the
//! node is shutting down moves it too. The failed call is still counted as an error: a
//! benchmark reports what its clients saw. With one address,
//! connections are used as they are (a failed one is not reopened).
//!
//! A move starts a new server session, as any client reconnecting does: what the old session
//! held is released by the cluster (at once if its node is alive, after the session grace if
//! it died). The checker is unaffected: a worker counts a hold as ended when it sends its
//! Unlock, and the server only ever ends holds later than that. An Unlock that finds its hold
//! gone after a move is counted apart (the hold ended with its session), not as a lost lock.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::client::{CallError, Grant, LockClient, Unlocked, node_failed};

/// Opens a connection to an address.
pub(crate) type Opener<C> =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = anyhow::Result<C>> + Send>> + Send + Sync>;

/// One connection shared by several workers, and where it is.
struct Connection<C> {
    addresses: Vec<String>,
    open: Opener<C>,
    /// Bumped by every move (after `current` is replaced); workers compare it with the
    /// generation of their copy.
    generation: AtomicU64,
    /// (index of the address, client).
    current: Mutex<(usize, C)>,
    /// Held while moving, so that workers failing together move once.
    moving: tokio::sync::Mutex<()>,
    /// Moves made, over every connection of the run.
    moves: Arc<AtomicU64>,
}

/// A worker's handle on a [`Connection`].
pub(crate) struct Moving<C> {
    connection: Arc<Connection<C>>,
    generation: u64,
    client: C,
}

/// Wraps the clients of each connection (`in_flight` consecutive clients share one, as the
/// drivers return them) so that they move over `addresses`. Connection `i` was opened to
/// address `i % addresses.len()`.
pub(crate) fn wrap<C: LockClient + Clone + Sync>(
    clients: Vec<C>,
    in_flight: usize,
    addresses: Vec<String>,
    open: Opener<C>,
    moves: Arc<AtomicU64>,
) -> Vec<Moving<C>> {
    let mut wrapped = Vec::with_capacity(clients.len());
    for (index, group) in clients.chunks(in_flight.max(1)).enumerate() {
        let connection = Arc::new(Connection {
            current: Mutex::new((index % addresses.len(), group[0].clone())),
            addresses: addresses.clone(),
            open: open.clone(),
            generation: AtomicU64::new(0),
            moving: tokio::sync::Mutex::new(()),
            moves: moves.clone(),
        });
        for client in group {
            wrapped.push(Moving {
                connection: connection.clone(),
                generation: 0,
                client: client.clone(),
            });
        }
    }
    wrapped
}

impl<C: LockClient + Clone + Sync> Connection<C> {
    fn lock_current(&self) -> std::sync::MutexGuard<'_, (usize, C)> {
        // Replaced whole, so never left torn by a panic.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves to the next address that accepts a connection (the failed one last), unless the
    /// failure seen on `generation` was already acted on. If none does, stays: the next
    /// failure tries again.
    async fn move_on(&self, generation: u64) {
        let _moving = self.moving.lock().await;
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let from = self.lock_current().0;
        for offset in 1..=self.addresses.len() {
            let index = (from + offset) % self.addresses.len();
            if let Ok(client) = (self.open)(self.addresses[index].clone()).await {
                *self.lock_current() = (index, client);
                self.generation.store(generation + 1, Ordering::Release);
                self.moves.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

impl<C: LockClient + Clone + Sync> Moving<C> {
    /// Takes up the connection's newest client if it moved since this worker's last call.
    fn catch_up(&mut self) {
        let generation = self.connection.generation.load(Ordering::Acquire);
        if generation != self.generation {
            // The client under the lock is at least as new as `generation` (it is replaced
            // before the generation is bumped); if newer, the next call catches up again.
            self.generation = generation;
            self.client = self.connection.lock_current().1.clone();
        }
    }

    /// Moves on if the call's outcome says the node failed or is shutting down.
    async fn after<T>(
        &mut self,
        result: Result<T, CallError>,
        shutting_down: impl Fn(&T) -> bool,
    ) -> Result<T, CallError> {
        if node_failed(&result, shutting_down) {
            self.connection.move_on(self.generation).await;
        }
        result
    }
}

impl<C: LockClient + Clone + Sync> LockClient for Moving<C> {
    async fn try_lock(
        &mut self,
        name: &str,
        lock_timeout: u32,
        size: u32,
    ) -> Result<Grant, CallError> {
        self.catch_up();
        let result = self.client.try_lock(name, lock_timeout, size).await;
        self.after(result, Grant::shutting_down).await
    }

    async fn lock(
        &mut self,
        name: &str,
        wait_timeout: u32,
        lock_timeout: u32,
        size: u32,
    ) -> Result<Grant, CallError> {
        self.catch_up();
        let result = self
            .client
            .lock(name, wait_timeout, lock_timeout, size)
            .await;
        self.after(result, Grant::shutting_down).await
    }

    async fn unlock(&mut self, name: &str, key: String) -> Result<Unlocked, CallError> {
        self.catch_up();
        let result = self.client.unlock(name, key).await;
        self.after(result, Unlocked::shutting_down).await
    }

    async fn refresh(
        &mut self,
        name: &str,
        key: &str,
        lock_timeout: u32,
    ) -> Result<Grant, CallError> {
        self.catch_up();
        let result = self.client.refresh(name, key, lock_timeout).await;
        self.after(result, Grant::shutting_down).await
    }

    async fn close(self) {
        self.client.close().await;
    }

    fn session(&self) -> u64 {
        // The connection's generation once this worker's next call catches up with it.
        self.connection.generation.load(Ordering::Acquire)
    }
}
