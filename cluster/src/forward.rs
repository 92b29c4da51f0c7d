//! Lock calls between nodes: what a node sends the leader on behalf of its client, and what
//! the leader answers.
//!
//! Every lock-service call of a cluster node becomes a [`Call`], handled by the leader — in
//! the same process when this node leads, over the peer service otherwise — and answered with
//! an [`Answer`] or a [`CallError`]. An acquire carries its request id (owner, sequence
//! number): if the call is re-sent (the leader died or the connection broke before the answer
//! arrived), the leader that gets it answers with the grant already made for it, never a
//! second one.

use serde::{Deserialize, Serialize};

use ldlm_engine::LockError;

use crate::command::GlobalOwner;
use crate::raft::NodeId;

/// Which transport the client used (for the leader's metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Via {
    /// gRPC.
    Grpc,
    /// REST.
    Rest,
}

/// A lock-service call, as the leader handles it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// Lock (`wait`) or TryLock.
    Acquire {
        /// The client.
        owner: GlobalOwner,
        /// The request's number among the owner's requests (never 0).
        seq: u64,
        /// Lock name.
        name: String,
        /// Requested size (absent: 1).
        size: Option<i32>,
        /// Lease in seconds.
        lock_timeout_seconds: Option<i32>,
        /// Longest wait in seconds (Lock only). A re-send carries what is left of it.
        wait_timeout_seconds: Option<i32>,
        /// Lock (queue) rather than TryLock.
        wait: bool,
        /// The client's transport.
        via: Via,
    },
    /// Unlock.
    Unlock {
        /// Lock name.
        name: String,
        /// The hold's key.
        key: String,
        /// The client's transport.
        via: Via,
    },
    /// Refresh / Renew.
    Refresh {
        /// Lock name.
        name: String,
        /// The hold's key.
        key: String,
        /// The new lease in seconds.
        lock_timeout_seconds: i32,
        /// The client's transport.
        via: Via,
    },
    /// Admin unlock (`ldlm-lock unlock`).
    ForceUnlock {
        /// Lock name.
        name: String,
        /// The key, or none for the only holder.
        key: Option<String>,
    },
    /// Every hold (`ldlm-lock list`).
    List,
    /// A node started again: the clients of its earlier runs are gone with them.
    NodeRestarted {
        /// The node.
        node: NodeId,
        /// Its current run (see [`crate::owners::run_of`]).
        run: u64,
    },
    /// A client's connection closed.
    Disconnect {
        /// The client.
        owner: GlobalOwner,
    },
    /// A new REST session.
    OpenSession,
    /// A live session, its idle timer restarted.
    TouchSession {
        /// The session id.
        id: u128,
    },
    /// End a REST session.
    CloseSession {
        /// The session id.
        id: u128,
    },
    /// Adds node `id` at peer address `address`: a learner first, a voter once caught up.
    AddMember {
        /// The new node.
        id: NodeId,
        /// Its peer address.
        address: String,
    },
    /// Removes node `id` (voter or learner).
    RemoveMember {
        /// The node.
        id: NodeId,
    },
    /// A follower checking that it is in contact with a leader that is in contact with a
    /// quorum (see [`Answer::Pong`]).
    Ping {
        /// The follower.
        from: NodeId,
    },
    /// An Unlock sent again after an attempt whose answer was lost: if its hold was released
    /// recently, it is answered "unlocked" (see [`crate::released`]). Last, so that the
    /// encoding of every other call stays as it was.
    UnlockAgain {
        /// Lock name.
        name: String,
        /// The hold's key.
        key: String,
        /// The client's transport.
        via: Via,
    },
    /// An acquire whose caller went away, or gave up, with no sure answer (see
    /// [`crate::forwarder`]): a grant committed for it is released, and the request is
    /// refused if it arrives later. Answered [`Answer::Unlocked`] once that is committed. Last,
    /// after `UnlockAgain`, for the same reason.
    Abandon {
        /// The client.
        owner: GlobalOwner,
        /// The request's number among the owner's requests.
        seq: u64,
    },
}

impl Call {
    /// The transport of the client that made this call, for the calls of lock clients.
    pub fn via(&self) -> Option<Via> {
        match self {
            Call::Acquire { via, .. }
            | Call::Unlock { via, .. }
            | Call::UnlockAgain { via, .. }
            | Call::Refresh { via, .. } => Some(*via),
            _ => None,
        }
    }

    /// Whether the call may share a message to the leader with others (see
    /// [`crate::forwarder`]): the calls the leader answers as soon as their change is
    /// committed. A Lock that waits goes alone, to be cancelled alone when its caller goes;
    /// a node's housekeeping and pings go alone, never behind its clients' calls.
    pub fn travels_in_batches(&self) -> bool {
        matches!(
            self,
            Call::Acquire { wait: false, .. }
                | Call::Unlock { .. }
                | Call::UnlockAgain { .. }
                | Call::Refresh { .. }
                | Call::TouchSession { .. }
        )
    }

    /// About how many bytes the call takes in a message: its strings, and a little for the
    /// rest.
    pub fn size_hint(&self) -> usize {
        let strings = match self {
            Call::Acquire { name, .. } => name.len(),
            Call::Unlock { name, key, .. }
            | Call::UnlockAgain { name, key, .. }
            | Call::Refresh { name, key, .. } => name.len() + key.len(),
            Call::ForceUnlock { name, key } => name.len() + key.as_ref().map_or(0, String::len),
            Call::AddMember { address, .. } => address.len(),
            _ => 0,
        };
        strings + 64
    }

    /// A node's own bookkeeping of its clients (a closed connection, a restart), not a
    /// client's request: sent even while the node is cut off from its cluster.
    pub fn is_housekeeping(&self) -> bool {
        matches!(self, Call::Disconnect { .. } | Call::NodeRestarted { .. })
    }
}

/// A grant as the client is told it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantView {
    /// The hold's key.
    pub key: u128,
    /// Its fencing token.
    pub token: u64,
}

/// A hold as `ldlm-lock list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    /// Lock name.
    pub name: String,
    /// The hold's key.
    pub key: u128,
    /// The lock's size.
    pub size: u32,
    /// Its owner (the engine's id of it).
    pub owner: u64,
    /// Its fencing token.
    pub token: u64,
    /// Milliseconds left on its lease.
    pub lease_remaining_ms: Option<u64>,
}

/// The leader's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// A membership change is committed, at this log index.
    MembershipChanged {
        /// The index of the log entry of the resulting membership.
        index: u64,
    },
    /// Ping: this leader heard from a quorum this many milliseconds before it answered.
    Pong {
        /// Milliseconds since the leader's last quorum acknowledgement.
        quorum_ack_ms: u64,
    },
    /// Acquire: the grant, or `None` for a busy TryLock.
    Acquired(Option<GrantView>),
    /// Unlock done.
    Unlocked,
    /// Refresh done.
    Refreshed(GrantView),
    /// Admin unlock: the key released.
    ForceUnlocked(u128),
    /// The holds.
    Holds(Vec<HoldView>),
    /// Disconnect: holds released (or kept) and waiters cancelled.
    Disconnected {
        /// Holds released.
        released: usize,
        /// Holds kept (`--no_clear_on_disconnect`).
        kept: usize,
        /// Waiters cancelled.
        waiters_cancelled: usize,
    },
    /// A new session: its id and owner.
    SessionOpened(u128, GlobalOwner),
    /// The session's owner, if it is live.
    Session(Option<GlobalOwner>),
    /// The session ended: holds released.
    SessionClosed(usize),
}

/// Why the leader did not answer the call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CallError {
    /// The lock domain said no (go-ldlm's errors).
    #[error(transparent)]
    Lock(LockError),
    /// The change could not be committed (and was undone).
    #[error("{0}")]
    NotCommitted(String),
    /// This node is not the leader (it names the one it knows of): send the call there.
    #[error("not the leader (the leader is {leader:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// Too many REST sessions.
    #[error("too many REST sessions: the limit is {limit}")]
    TooManySessions {
        /// The limit.
        limit: usize,
    },
    /// No live session with this id.
    #[error("session not found")]
    SessionNotFound,
    /// An administrative request that cannot be carried out as asked (the text says why).
    #[error("{0}")]
    Refused(String),
}
