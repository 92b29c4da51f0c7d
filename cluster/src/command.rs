//! What the replicated log carries: the leader's lock-table changes and REST sessions.
//!
//! The leader runs the engine exactly as a single server does; its event sink turns each
//! engine event into a [`ReplicatedEvent`], and many events share one log entry (group commit,
//! as the state file shares one fsync). Followers apply them to a [`crate::Replica`]: the
//! committed holds, sessions and fencing tokens a new leader restores its engine from.
//!
//! Owners are cluster-wide ([`GlobalOwner`]: the node a client is connected to, and that
//! node's own id for the connection or session), so a leader can release the holds of a node
//! that is gone, and a REST session works at every node.

use serde::{Deserialize, Serialize};

use crate::raft::NodeId;

/// A connection or session, cluster-wide: (node it belongs to, that node's local id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GlobalOwner {
    /// The node whose client it is (0: REST sessions and the admin, which belong to no node).
    pub node: NodeId,
    /// The node's own id for it.
    pub local: u64,
}

/// Identifies one client request across re-sends: (owner, the owner's sequence number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId {
    /// Whose request.
    pub owner: GlobalOwner,
    /// Its number among the owner's requests.
    pub seq: u64,
}

/// One change to the set of holds, as the leader's engine made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicatedEvent {
    /// A slot was granted.
    Granted {
        /// Lock name.
        name: String,
        /// The hold's key (a UUID's 128 bits).
        key: u128,
        /// The lock's size.
        size: u32,
        /// Who holds it.
        owner: GlobalOwner,
        /// Its fencing token.
        token: u64,
        /// Its lease length in seconds (0: none).
        lease_secs: u32,
        /// The request that asked for it, so a re-sent request gets this grant back.
        request: Option<RequestId>,
    },
    /// A refresh changed a hold's lease length.
    LeaseChanged {
        /// Lock name.
        name: String,
        /// The hold's key.
        key: u128,
        /// The new lease length in seconds.
        lease_secs: u32,
    },
    /// A hold ended.
    Released {
        /// Lock name.
        name: String,
        /// The hold's key.
        key: u128,
    },
}

/// One log entry's command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Lock-table changes, in the order the leader's engine made them.
    Events(Vec<ReplicatedEvent>),
    /// A REST session was opened.
    SessionOpened {
        /// The session id (the cookie's 128 bits).
        id: u128,
        /// Its owner.
        owner: GlobalOwner,
        /// How long it lives without use, in milliseconds.
        idle_ms: u64,
    },
    /// A REST session ended (deleted, or idle too long).
    SessionClosed {
        /// The session id.
        id: u128,
    },
    /// An owner ended (its connection closed, or its node is gone): its request ids are
    /// forgotten. Its holds are released by `Released` events of their own.
    OwnerEnded {
        /// The owner.
        owner: GlobalOwner,
    },
}

/// What applying a command answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Events that contradicted the replica and were refused (a bug if ever non-zero; the
    /// replica stays as it was for those).
    pub refused: u32,
}
