//! # ldlm-engine
//!
//! The lock table of LDLM: a sharded map of named locks with FIFO hand-off, leases on a
//! hierarchical timer wheel, owners that can be released atomically, and fencing tokens.
//!
//! **This crate does no IO and never reads a clock.** Every operation that needs time takes a
//! [`Tick`]; a small driver in the server sleeps until [`Engine::next_deadline`] and calls
//! [`Engine::advance`]. Tests therefore run on virtual time and never sleep. It depends on
//! neither tokio nor the wire protocol: waiting goes through runtime-agnostic flume channels
//! ([`Pending`]), and errors map one-to-one onto the proto's `ErrorCode` ([`LockError::code`]).
//!
//! ## Semantics (go-ldlm's, with the fixes listed in `docs/go-ldlm-differences.md`)
//!
//! - A lock has a `size` (a counting semaphore) fixed by the request that creates it; any other
//!   size is `LockSizeMismatch` until the idle lock is garbage-collected.
//! - Every grant gets a fresh UUID v4 key; the key, not the owner, authorises unlock and refresh.
//! - A released slot goes to the oldest live waiter; TryLock fails while anyone waits.
//! - Leases (`lock_timeout_seconds`) start at the grant; refresh sets a new lease from now and
//!   also works on a hold that had none (go-ldlm refuses).
//! - Fencing tokens are strictly increasing over all grants (one counter), and continue above
//!   the highest restored token.
//!
//! ## Consistency
//!
//! All state of one lock lives in one shard behind one mutex, so every operation on a lock is
//! linearizable, and a hand-off (release plus grant to the next waiter) is a single atomic step.
//! Operations on different shards are independent. [`Engine::list`] and [`Engine::stats`] visit
//! shards one after another: they are consistent per shard, not a global snapshot.
//! [`Engine::release_owner`] marks the owner ended before visiting any shard, so no grant to it
//! can happen after the release began (go-ldlm's B7).
//!
//! ## Lock order
//!
//! A shard mutex is never held while taking another shard's mutex or the session wheel's. The
//! event sink is called with a shard mutex held and must not call back into the engine.

mod config;
mod engine;
mod error;
mod owner;
mod pending;
mod shard;
mod time;
mod types;
pub mod wheel;

#[cfg(any(test, feature = "model"))]
pub mod model;

pub use config::{ConfigError, EngineConfig};
pub use engine::{Engine, LockOutcome, PARALLEL_ADVANCE_AFTER, ReleaseSummary};
pub use error::{ErrorCode, LockError, RestoreError};
pub use owner::{Owner, OwnerId};
pub use pending::Pending;
pub use shard::ShardStats;
pub use time::Tick;
pub use types::{
    AdvanceReport, Event, EventSink, Grant, HoldInfo, HoldRecord, LockKey, LockRequest,
    TryLockOutcome, Unlocked,
};
