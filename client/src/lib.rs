//! A Rust client for LDLM, the lightweight distributed lock manager (also works with go-ldlm).
//!
//! - [`Client::connect`]: one gRPC connection (plaintext, TLS or mTLS; optional password), to
//!   one server or to one node of a cluster (`"a:3144,b:3144,c:3144"`: the client moves to
//!   another node when its node stops answering).
//! - [`Client::lock`] (waits), [`Client::try_lock`] (does not): a [`LockGuard`] with the key
//!   and the **fencing token** of the grant.
//! - With a lease ([`LockOptions::lock_timeout`]) the guard **renews it in the background**
//!   every third of the lease, so short leases (seconds) are safe to use: they only bound how
//!   long a crashed holder keeps the lock. (go-ldlm's own client waits max(lease − 30 s, 10 s)
//!   and so lets leases under ~10 s lapse.) If renewal fails for good the guard **reports the
//!   loss**: [`LockGuard::lost`] resolves and [`LockGuard::is_lost`] turns true.
//! - [`LockGuard::unlock`] releases the lock; dropping the guard releases it in the background.
//! - [`Client::unlock`] and [`Client::refresh`] work on a `(name, key)` directly.
//! - Typed errors: [`Error::Lock`] carries the server's [`LockErrorCode`] and message;
//!   [`Error::Unauthenticated`], [`Error::Connect`], [`Error::Transport`], ...
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use ldlm_client::{Client, ClientConfig, LockErrorCode, LockOptions};
//!
//! # async fn write_report(_fencing_token: u64) {}
//! # async fn example() -> Result<(), ldlm_client::Error> {
//! let client = Client::connect(ClientConfig::new("localhost:3144")).await?;
//!
//! // Wait up to 30 s for the lock; hold it with a 5 s lease that the guard keeps renewing.
//! let options = LockOptions::new()
//!     .with_lock_timeout(Duration::from_secs(5))
//!     .with_wait_timeout(Duration::from_secs(30));
//! let guard = match client.lock("nightly-report", options).await {
//!     Ok(guard) => guard,
//!     Err(error) if error.lock_code() == Some(LockErrorCode::LockWaitTimeout) => {
//!         println!("someone else is writing the report");
//!         return Ok(());
//!     }
//!     Err(error) => return Err(error),
//! };
//!
//! // Do the work unless the lock is lost first (the server went away, the lease lapsed).
//! tokio::select! {
//!     () = write_report(guard.fencing_token()) => guard.unlock().await?,
//!     reason = guard.lost() => eprintln!("stopped: lost the lock: {reason}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Retries
//!
//! Connecting is retried with exponential backoff (and jitter), and so are TryLock, Unlock and
//! Renew when the server is `UNAVAILABLE` or the connection failed under them (with a list of
//! nodes, the retry goes to the next node). A blocking Lock is **never** retried: if its call
//! fails without telling whether the lock was granted (a broken connection, a deadline), the
//! error is [`Error::OutcomeUnknown`]. A grant nobody received is released when the
//! connection's session ends (or its lease runs out).
//!
//! # Sessions
//!
//! The server ties locks to the connection that took them: when a [`Client`] (all its clones
//! and guards) is dropped or its connection breaks, the server releases its locks. A guard's
//! renewal through a new connection then fails, and the guard reports the loss.
//!
//! In a cluster, a session whose node dies (or is cut off from the others) is ended by the
//! cluster after its session grace (`--cluster_session_grace`, 10 s by default), not at once.
//! Until then the client's guards keep renewing their leases through the node the client
//! moved to, and the locks stay theirs; when the cluster releases them, the next renewal is
//! refused and the guard reports [`LostReason::Rejected`]. A lock taken without a lease is not
//! renewed, so its guard cannot notice: give locks that must survive a node's death a lease.

mod client;
mod config;
mod connect;
mod error;
mod guard;
mod retry;

pub use client::Client;
pub use config::{ClientConfig, LockOptions, TlsConfig};
pub use error::{Error, LockError, LockErrorCode, LostReason};
pub use guard::LockGuard;
