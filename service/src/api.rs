//! [`LockService`]: the one interface every transport calls.
//!
//! A transport decodes a request, makes one call here, and encodes the answer. Everything
//! between — reading the clock, the engine call, waiting until a grant is durable, giving a
//! grant back when its caller left, metrics — is the service's. Two implementations plug in
//! behind it: [`LocalLockService`](crate::LocalLockService) runs the engine in this process
//! (a single server, or a cluster's leader); cluster mode adds one that forwards to the leader.
//! So a transport never learns where a lock is decided.
//!
//! Owners: every hold belongs to an owner, a gRPC connection ([`LockService::connect`]) or a
//! REST session ([`LockService::open_session`]). Ending an owner releases its holds (unless
//! the server keeps them, `--no_clear_on_disconnect`) and cancels its waiters.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ldlm_engine::{Grant, LockKey, LockRequest, OwnerId, ReleaseSummary};

use crate::error::ServiceError;
use crate::metrics::Transport;
use crate::sessions::SessionId;

/// How an acquire behaves when every slot is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// TryLock: answer "not locked" at once.
    Try,
    /// Lock: queue (FIFO) until a slot is handed over or the wait times out.
    Wait,
}

/// What happened to a connection's holds when it closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnected {
    /// The owner ended: its holds were released (or kept under `--no_clear_on_disconnect`)
    /// and its waiters cancelled.
    Released(ReleaseSummary),
    /// The server is shutting down gracefully: holds are kept for the restart.
    Kept,
}

/// One held slot, as `ldlm-lock list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedHold {
    /// Lock name.
    pub name: Arc<str>,
    /// The hold's key.
    pub key: LockKey,
    /// The lock's size.
    pub size: u32,
    /// Who holds it (a connection or session; [`OwnerId::RESTORED`] after a restart).
    pub owner: OwnerId,
    /// The grant's fencing token.
    pub fencing_token: u64,
    /// Time left on its lease, if it has one.
    pub lease_remaining: Option<Duration>,
}

impl ListedHold {
    /// Time left on its lease in whole milliseconds, as listings on the wire carry it
    /// (saturating: a lease never outlives `u64::MAX` ms).
    pub fn lease_remaining_ms(&self) -> Option<u64> {
        self.lease_remaining
            .map(|left| u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Counts for `/metrics` (read on each scrape; O(1) per engine shard).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Locks in the table (held or not yet collected).
    pub locks: usize,
    /// Held slots.
    pub holds: usize,
    /// Queued Lock calls.
    pub waiters: usize,
    /// Live REST sessions.
    pub sessions: usize,
}

/// A cluster member's role, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    /// It leads.
    Leader,
    /// It follows (a voter).
    Follower,
    /// It receives the log but does not vote (joining).
    Learner,
    /// It is asking for votes.
    Candidate,
}

impl MemberRole {
    /// The role's name: `leader`, `follower`, `learner` or `candidate`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Leader => "leader",
            MemberRole::Follower => "follower",
            MemberRole::Learner => "learner",
            MemberRole::Candidate => "candidate",
        }
    }
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its node id.
    pub id: u64,
    /// Its peer address.
    pub address: String,
    /// Its role.
    pub role: MemberRole,
    /// Milliseconds since this node last heard from it (0 for itself; `None`: never).
    pub last_contact_ms: Option<u64>,
}

/// A change of a cluster's members (`ldlm-lock cluster add` / `remove`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add node `id`, listening for peers at `address`: first as a learner that catches up,
    /// then as a voter.
    Add {
        /// The new node's id.
        id: u64,
        /// Its peer address (host:port).
        address: String,
    },
    /// Remove node `id` (a voter or a learner).
    Remove {
        /// The node's id.
        id: u64,
    },
}

/// This node's view of its cluster (`ldlm-lock cluster status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This node's id.
    pub node_id: u64,
    /// The cluster's id, from the member list it was formed with (`None`: formed by a version
    /// without ids, or a joining node not reached yet).
    pub cluster_id: Option<String>,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// The current term.
    pub term: u64,
    /// The highest log index known committed.
    pub commit_index: Option<u64>,
    /// The highest log index applied to this node's replica.
    pub applied_index: Option<u64>,
    /// The members.
    pub members: Vec<MemberStatus>,
}

/// The lock service. See the module doc.
///
/// Futures returned here may be dropped at any time (a client cancels, a connection closes):
/// dropping an acquire leaves the queue, and a grant that was made but not yet answered is
/// given back, so no slot is ever held under a key nobody learned.
pub trait LockService: Send + Sync + 'static {
    /// A client's owner: a gRPC connection's or a REST session's.
    type Owner: Clone + Send + Sync + Unpin + 'static;

    /// The owner's id, for logs.
    fn owner_id(owner: &Self::Owner) -> OwnerId;

    /// A new owner for a client connection (gRPC: one HTTP/2 connection is one owner).
    fn connect(&self) -> Self::Owner;

    /// The connection of `owner` closed.
    fn disconnect(&self, owner: &Self::Owner) -> Disconnected;

    /// A new REST session; it ends after `session_timeout` without use.
    fn open_session(&self) -> impl Future<Output = Result<SessionId, ServiceError>> + Send;

    /// The owner of live session `id`, its idle timer restarted; `Ok(None)` if there is none,
    /// an error if that cannot be known now (cluster mode: no leader reachable).
    fn session(
        &self,
        id: SessionId,
    ) -> impl Future<Output = Result<Option<Self::Owner>, ServiceError>> + Send;

    /// Ends session `id` (its holds released); [`ServiceError::SessionNotFound`] if it is not
    /// live.
    fn close_session(
        &self,
        id: SessionId,
    ) -> impl Future<Output = Result<ReleaseSummary, ServiceError>> + Send;

    /// How long a REST session lives without use.
    fn session_timeout(&self) -> Duration;

    /// Owners that ended on their own (REST sessions that expired), as they end.
    fn expired_owners(&self) -> tokio::sync::broadcast::Receiver<OwnerId>;

    /// Lock or TryLock for `owner`. `Ok(None)`: TryLock found every slot taken. A grant is
    /// returned only once it is durable.
    fn acquire(
        &self,
        via: Transport,
        owner: &Self::Owner,
        request: &LockRequest<'_>,
        mode: Acquire,
    ) -> impl Future<Output = Result<Option<Grant>, ServiceError>> + Send;

    /// Unlock: name + key release that hold, whoever presents them. If the slot is handed to a
    /// waiter, the waiter's grant is sent before this answers.
    fn unlock(
        &self,
        via: Transport,
        owner: &Self::Owner,
        name: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;

    /// Refresh (Renew): the hold's lease becomes `lock_timeout_seconds` from now.
    fn refresh(
        &self,
        via: Transport,
        owner: &Self::Owner,
        name: &str,
        key: &str,
        lock_timeout_seconds: i32,
    ) -> impl Future<Output = Result<Grant, ServiceError>> + Send;

    /// Admin unlock (`ldlm-lock unlock`): by key, or without one the only holder. Returns the
    /// key released.
    fn force_unlock(
        &self,
        name: &str,
        key: Option<&str>,
    ) -> impl Future<Output = Result<LockKey, ServiceError>> + Send;

    /// Every held slot (`ldlm-lock list`).
    fn list(&self) -> impl Future<Output = Result<Vec<ListedHold>, ServiceError>> + Send;

    /// Current counts.
    fn stats(&self) -> ServiceStats;

    /// Changes whenever the service needs every client connection closed (cluster mode: this
    /// node was cut off from the cluster long enough that its clients' locks may be given to
    /// others; closing tells them so). `None`: never.
    fn connection_resets(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// This node's view of its cluster; `None` for a single server.
    fn cluster_status(&self) -> Option<ClusterStatus> {
        None
    }

    /// Adds or removes a cluster member (through the leader); answers the cluster's status
    /// once the change is committed.
    fn change_membership(
        &self,
        change: MembershipChange,
    ) -> impl Future<Output = Result<ClusterStatus, ServiceError>> + Send {
        let _ = change;
        std::future::ready(Err(ServiceError::Unavailable(
            "this server is not in cluster mode (no --cluster_node_id)".into(),
        )))
    }

    /// Graceful shutdown: stop granting (waiters are told), keep every hold.
    fn shutdown(&self);

    /// True once [`LockService::shutdown`] was called.
    fn is_shut_down(&self) -> bool;
}
