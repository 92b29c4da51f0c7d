//! Owners: who holds a lock. Every hold and every waiter belongs to one owner — a gRPC
//! connection, a REST session, the admin channel, or the pseudo-owner of restored holds.
//!
//! An [`Owner`] is a cheap handle (an `Arc`) that the transport keeps for the lifetime of the
//! connection or session. Its `ended` flag is the heart of "no grant after release began":
//! [`crate::Engine::release_owner`] sets it before visiting any shard, and every grant checks it
//! under the shard mutex, so a grant either happens before the owner's shard is swept (and is
//! swept) or sees the flag and is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::time::Tick;

/// The identity of an owner, stable for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(pub u64);

impl OwnerId {
    /// The owner of holds restored from a state file: never ends, never released.
    pub const RESTORED: OwnerId = OwnerId(0);
}

impl std::fmt::Display for OwnerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Handle to an owner. Clones refer to the same owner.
#[derive(Clone, Debug)]
pub struct Owner {
    pub(crate) state: Arc<OwnerState>,
}

#[derive(Debug)]
pub(crate) struct OwnerState {
    pub(crate) id: OwnerId,
    /// Set once, when the owner is released; never cleared.
    pub(crate) ended: AtomicBool,
    /// Idle expiry of a session owner, in ticks (`u64::MAX`: none). Touching the session only
    /// moves this value; the timer wheel entry is re-filed lazily when it fires.
    pub(crate) idle_deadline: AtomicU64,
    /// Idle timeout of a session owner in milliseconds (0: not a session).
    pub(crate) idle_timeout_ms: u64,
}

impl Owner {
    pub(crate) fn new(id: OwnerId, idle_timeout_ms: u64, idle_deadline: u64) -> Owner {
        Owner {
            state: Arc::new(OwnerState {
                id,
                ended: AtomicBool::new(false),
                idle_deadline: AtomicU64::new(idle_deadline),
                idle_timeout_ms,
            }),
        }
    }

    /// This owner's id.
    pub fn id(&self) -> OwnerId {
        self.state.id
    }

    /// True once the owner has been released (its connection closed or session expired).
    pub fn has_ended(&self) -> bool {
        self.state.ended.load(Ordering::Acquire)
    }

    /// When an idle session owner expires, if it is a session.
    pub fn idle_deadline(&self) -> Option<Tick> {
        match self.state.idle_deadline.load(Ordering::Acquire) {
            u64::MAX => None,
            ms => Some(Tick::from_millis(ms)),
        }
    }
}
