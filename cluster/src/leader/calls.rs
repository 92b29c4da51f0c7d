//! The leader's side of every lock-service call of the cluster ([`Call`] → [`Answer`]), and
//! the expiry of idle REST sessions.
//!
//! Lock calls go to the leader's [`LocalLockService`](ldlm_service::LocalLockService), as a
//! single server's do. What the cluster adds here:
//!
//! - **Owners** are cluster-wide: an engine owner per client, made on its first call, with the
//!   client's [`GlobalOwner`] as its engine id; `Disconnect` ends it.
//! - **Exactly-once acquires.** An acquire carries its request id. A re-send of a request still
//!   being handled here waits for the first attempt to end; then, if the replica records a
//!   grant for that request and the engine still holds it, that grant is the answer (same key,
//!   same token). Otherwise (the first attempt never committed, or its grant was given back
//!   when its caller went away) the request is served afresh.
//! - **REST sessions** are in the log: opening one commits it before its id is answered, so
//!   its cookie works at every node and survives a failover; ending one (by DELETE or idle
//!   expiry) commits that too.

use std::sync::{Arc, Weak};

use ldlm_engine::{LockKey, LockRequest, Owner};
use ldlm_service::{Acquire, LockService as _, ServiceError, Transport};
use tokio::sync::watch;

use super::Leader;
use crate::command::{Command, GlobalOwner, RequestId};
use crate::forward::{Answer, Call, CallError, GrantView, HoldView, Via};
use crate::owners;

fn transport(via: Via) -> Transport {
    match via {
        Via::Grpc => Transport::Grpc,
        Via::Rest => Transport::Rest,
    }
}

fn service_error(error: ServiceError) -> CallError {
    match error {
        ServiceError::Lock(error) => CallError::Lock(error),
        ServiceError::TooManySessions { limit } => CallError::TooManySessions { limit },
        ServiceError::SessionNotFound => CallError::SessionNotFound,
        ServiceError::Refused(reason) => CallError::Refused(reason),
        other => CallError::NotCommitted(other.to_string()),
    }
}

fn view(grant: &ldlm_engine::Grant) -> GrantView {
    GrantView {
        key: grant.key.as_u128(),
        token: grant.fencing_token,
    }
}

/// Marks a request as being handled here; dropping it lets a waiting re-send go on.
struct InFlight<'a> {
    leader: &'a Leader,
    request: RequestId,
    _done: watch::Sender<()>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.leader.inflight.lock().remove(&self.request);
    }
}

impl Leader {
    /// Handles one call. See the module doc.
    pub async fn serve(&self, call: Call) -> Result<Answer, CallError> {
        if self.is_deposed() {
            return Err(CallError::NotLeader { leader: None });
        }
        let answer = self.answer(call).await;
        // A call that failed because this leader stepped down meanwhile (its waiters are told
        // the engine shut down, its commits fail) is for the next leader: the caller re-sends.
        match answer {
            Err(_) if self.is_deposed() => Err(CallError::NotLeader { leader: None }),
            answer => answer,
        }
    }

    async fn answer(&self, call: Call) -> Result<Answer, CallError> {
        match call {
            Call::Acquire {
                owner,
                seq,
                name,
                size,
                lock_timeout_seconds,
                wait_timeout_seconds,
                wait,
                via,
            } => {
                let request = RequestId { owner, seq };
                let _in_flight = self.enter(request).await;
                if self.abandoned.lock().contains(&request) {
                    return Err(CallError::Refused(
                        "the caller of this request went away".into(),
                    ));
                }
                if let Some(grant) = self.machine.grant_for(request).await
                    && grant.name == name
                    && self
                        .service
                        .engine()
                        .is_held(&name, LockKey::from_u128(grant.key))
                {
                    return Ok(Answer::Acquired(Some(GrantView {
                        key: grant.key,
                        token: grant.token,
                    })));
                }
                let client = self.owner(owner);
                let lock = LockRequest {
                    name: &name,
                    size,
                    lock_timeout_seconds,
                    wait_timeout_seconds,
                    tag: seq,
                };
                let mode = if wait { Acquire::Wait } else { Acquire::Try };
                let answer = self
                    .service
                    .acquire(transport(via), &client, &lock, mode)
                    .await
                    .map(|grant| Answer::Acquired(grant.as_ref().map(view)))
                    .map_err(service_error);
                if owner.node == 0
                    && matches!(
                        answer,
                        Err(CallError::Lock(ldlm_engine::LockError::SessionEnded))
                    )
                {
                    self.confirm_leading().await?;
                }
                answer
            }
            Call::Unlock { name, key, via } => self
                .service
                .unlock(transport(via), &self.admin(), &name, &key)
                .await
                .map(|()| Answer::Unlocked)
                .map_err(service_error),
            Call::UnlockAgain { name, key, via } => {
                let unlocked = self
                    .service
                    .unlock(transport(via), &self.admin(), &name, &key)
                    .await;
                match unlocked {
                    Err(ServiceError::Lock(
                        ldlm_engine::LockError::LockDoesNotExist
                        | ldlm_engine::LockError::InvalidLockKey,
                    )) if self.released_recently(&key).await => Ok(Answer::Unlocked),
                    unlocked => unlocked.map(|()| Answer::Unlocked).map_err(service_error),
                }
            }
            Call::Refresh {
                name,
                key,
                lock_timeout_seconds,
                via,
            } => self
                .service
                .refresh(
                    transport(via),
                    &self.admin(),
                    &name,
                    &key,
                    lock_timeout_seconds,
                )
                .await
                .map(|grant| Answer::Refreshed(view(&grant)))
                .map_err(service_error),
            Call::Abandon { owner, seq } => self.abandon(RequestId { owner, seq }).await,
            Call::ForceUnlock { name, key } => self
                .service
                .force_unlock(&name, key.as_deref())
                .await
                .map(|key| Answer::ForceUnlocked(key.as_u128()))
                .map_err(service_error),
            Call::AddMember { id, address } => self.add_member(id, address).await,
            Call::RemoveMember { id } => self.remove_member(id).await,
            // A node that is no longer a member gets no answer that would keep it serving.
            Call::Ping { from } if !self.is_member(from) => Err(CallError::Refused(format!(
                "node {from} is not a member of this cluster"
            ))),
            Call::Ping { .. } => {
                let quorum_ack_ms = self
                    .raft
                    .metrics()
                    .borrow()
                    .millis_since_quorum_ack
                    .ok_or(CallError::NotLeader { leader: None })?;
                Ok(Answer::Pong { quorum_ack_ms })
            }
            Call::List => {
                // A linearizable read: confirm with a quorum that this node still leads (a
                // leader cut off from the others must not answer from its stale table).
                self.raft
                    .ensure_linearizable()
                    .await
                    .map_err(|_| CallError::NotLeader { leader: None })?;
                let holds = self.service.list().await.map_err(service_error)?;
                Ok(Answer::Holds(
                    holds
                        .into_iter()
                        .map(|hold| HoldView {
                            name: hold.name.to_string(),
                            key: hold.key.as_u128(),
                            size: hold.size,
                            owner: hold.owner.0,
                            token: hold.fencing_token,
                            lease_remaining_ms: hold.lease_remaining_ms(),
                        })
                        .collect(),
                ))
            }
            Call::Disconnect { owner } => self.end_clients(&[owner]).await,
            Call::NodeRestarted { node, run } => {
                let earlier: Vec<GlobalOwner> = self
                    .owners_on(node)
                    .await
                    .into_iter()
                    .filter(|owner| owners::run_of(owner.local) != run)
                    .collect();
                if !earlier.is_empty() {
                    tracing::info!(
                        node,
                        clients = earlier.len(),
                        "Node restarted: releasing its earlier run's clients"
                    );
                }
                self.end_clients(&earlier).await
            }
            Call::OpenSession => self.open_session().await,
            Call::TouchSession { id } => match self.touch_session(id) {
                Some(owner) => Ok(Answer::Session(Some(owner))),
                // "No such session" must come from the leader: see `confirm_leading`.
                None => {
                    self.confirm_leading().await?;
                    Ok(Answer::Session(None))
                }
            },
            Call::CloseSession { id } => match self.close_session(id).await {
                Err(CallError::SessionNotFound) => {
                    self.confirm_leading().await?;
                    Err(CallError::SessionNotFound)
                }
                answer => answer,
            },
        }
    }

    /// Ends clients whose connections closed (one client, or every client of a node that is
    /// gone or restarted) and releases what they held, all together: none of them is handed
    /// what another lets go. Answered once the releases are committed: the node that asked
    /// re-sends until some leader has done it, so no leader restores holds of a closed
    /// connection.
    pub(super) async fn end_clients(&self, ended: &[GlobalOwner]) -> Result<Answer, CallError> {
        if ended.is_empty() {
            return Ok(Answer::Disconnected {
                released: 0,
                kept: 0,
                waiters_cancelled: 0,
            });
        }
        // An ended owner stays in the map for a while: a call of this client still on its way
        // (forwarded before the connection closed, or re-sent) then finds it ended and is
        // granted nothing, instead of making a fresh owner whose holds nobody would release.
        let clients: Vec<Owner> = ended.iter().map(|&owner| self.owner(owner)).collect();
        for &owner in ended {
            self.forget_ended_owners(owner);
        }
        let summary = match self.service.disconnect_all(&clients) {
            ldlm_service::Disconnected::Released(summary) => summary,
            ldlm_service::Disconnected::Kept => Default::default(),
        };
        self.all_recorded_committed().await?;
        // Their request ids are of no use any more; nothing waits for these commits.
        for &owner in ended {
            let _ = self
                .raft
                .client_write_ff(Command::OwnerEnded { owner })
                .await;
        }
        Ok(Answer::Disconnected {
            released: summary.released,
            kept: summary.kept,
            waiters_cancelled: summary.waiters_cancelled,
        })
    }

    /// Waits until every change this leader's engine recorded so far is committed (and
    /// applied to the replica).
    async fn all_recorded_committed(&self) -> Result<(), CallError> {
        self.commits
            .wait(self.service.engine().recorded_seq())
            .await
            .map_err(|e| CallError::NotCommitted(e.to_string()))
    }

    /// Confirms with a quorum that this node still leads. Needed before saying that a REST
    /// session does not exist: a leader cut off from the others does not know of sessions
    /// opened at the leader elected meanwhile, and a client told "no such session" gives up a
    /// session whose locks the real leader still holds for it.
    async fn confirm_leading(&self) -> Result<(), CallError> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|_| CallError::NotLeader { leader: None })
    }

    /// An acquire whose caller went away: from now on an attempt of it is refused here (one
    /// may still be on its way, overtaken by this call), and once an attempt under way has
    /// ended, a grant committed for it is released. Its answer may have been on its way to the
    /// caller when the caller left: nobody learned its key.
    ///
    /// Answered only once the outcome is committed. An attempt dropped while its grant was
    /// being committed gave the grant back in this engine, but that release may not be
    /// committed yet while the grant is: if this leader fell now, the next one would restore
    /// the grant from its replica, and nobody would ask it to give the grant back. So first
    /// everything this engine recorded so far is committed (and applied to the replica, where
    /// a grant for the request is then found). If that fails, this leader is falling, and the
    /// caller re-sends to the next one, which finds the grant in its replica if it was
    /// committed.
    async fn abandon(&self, request: RequestId) -> Result<Answer, CallError> {
        self.abandoned
            .lock()
            .insert(request, std::time::Instant::now());
        let _in_flight = self.enter(request).await;
        self.all_recorded_committed().await?;
        if let Some(grant) = self.machine.grant_for(request).await {
            let key = LockKey::from_u128(grant.key);
            if self.service.engine().is_held(&grant.name, key) {
                tracing::debug!(
                    name = grant.name,
                    "Giving back a grant whose caller went away"
                );
                return self
                    .service
                    .unlock(
                        Transport::Grpc,
                        &self.admin(),
                        &grant.name,
                        &key.to_string(),
                    )
                    .await
                    .map(|()| Answer::Unlocked)
                    .map_err(service_error);
            }
        }
        Ok(Answer::Unlocked)
    }

    /// Waits for an earlier attempt of `request` still handled here, then marks it as ours.
    async fn enter(&self, request: RequestId) -> InFlight<'_> {
        loop {
            let earlier = self.inflight.lock().get(&request).cloned();
            match earlier {
                Some(mut earlier) => {
                    // Resolves when the earlier attempt's marker is dropped.
                    let _ = earlier.changed().await;
                }
                None => {
                    let (done, waiting) = watch::channel(());
                    let mut inflight = self.inflight.lock();
                    if inflight.contains_key(&request) {
                        continue;
                    }
                    inflight.insert(request, waiting);
                    return InFlight {
                        leader: self,
                        request,
                        _done: done,
                    };
                }
            }
        }
    }

    fn engine_owner(&self, owner: GlobalOwner) -> Owner {
        self.service
            .engine()
            .owner_with_id(owners::engine_id(owner))
    }

    /// The engine owner of client `owner`: a REST session's own (so that a session that has
    /// ended is granted nothing more), or a connection's, made on its first call.
    fn owner(&self, owner: GlobalOwner) -> Owner {
        if owner.node == 0 {
            let id = owners::engine_id(owner);
            if let Some(session) = self.sessions.lock().by_owner(id) {
                return session.clone();
            }
            // Not a live session: an owner that has ended, so nothing is granted to it.
            let ended = self.engine_owner(owner);
            self.service
                .engine()
                .release_owner(&ended, self.service.clock().now());
            return ended;
        }
        self.owners
            .lock()
            .entry(owner)
            .or_insert_with(|| self.engine_owner(owner))
            .clone()
    }

    /// Keeps `ended` as a tombstone for [`ENDED_OWNER_KEPT`], and drops older tombstones.
    fn forget_ended_owners(&self, ended: GlobalOwner) {
        let now = std::time::Instant::now();
        let mut tombstones = self.tombstones.lock();
        tombstones.push_back((now, ended));
        let mut owners = self.owners.lock();
        while let Some(&(since, owner)) = tombstones.front() {
            if now.duration_since(since) < ENDED_OWNER_KEPT {
                break;
            }
            tombstones.pop_front();
            if owners.get(&owner).is_some_and(Owner::has_ended) {
                owners.remove(&owner);
            }
        }
    }

    /// The owner unlock and refresh pass (the key, not the owner, authorises them).
    /// Whether the hold with key `key` (as the client sent it) was released recently.
    async fn released_recently(&self, key: &str) -> bool {
        match LockKey::parse(key) {
            Some(key) => self.machine.was_released(key.as_u128()).await,
            None => false,
        }
    }

    fn admin(&self) -> Owner {
        self.engine_owner(GlobalOwner { node: 0, local: 0 })
    }

    async fn open_session(&self) -> Result<Answer, CallError> {
        if self.sessions.lock().len() >= self.max_sessions {
            return Err(CallError::TooManySessions {
                limit: self.max_sessions,
            });
        }
        // A session's owner is numbered from its random id: node 0 (sessions belong to no
        // node), the id's low 48 bits, drawn again in the unlikely case it is taken.
        let (id, owner) = loop {
            let id = uuid_v4();
            let owner = GlobalOwner {
                node: 0,
                local: (id as u64) & ((1 << 48) - 1),
            };
            let taken = self.sessions.lock().has_owner(owners::engine_id(owner));
            if owner.local != 0 && !taken {
                break (id, owner);
            }
        };
        let idle_ms = u64::try_from(self.session_timeout.as_millis()).unwrap_or(u64::MAX);
        self.commit(Command::SessionOpened { id, owner, idle_ms })
            .await?;
        let engine = self.service.engine();
        let session = engine.session_with_id(
            owners::engine_id(owner),
            self.session_timeout,
            self.service.clock().now(),
        );
        self.sessions.lock().insert(id, session);
        Ok(Answer::SessionOpened(id, owner))
    }

    fn touch_session(&self, id: u128) -> Option<GlobalOwner> {
        let owner = self.sessions.lock().get(id).cloned()?;
        let engine = self.service.engine();
        if engine.touch_session(&owner, self.service.clock().now()) {
            Some(owners::global(owner.id()))
        } else {
            None
        }
    }

    async fn close_session(&self, id: u128) -> Result<Answer, CallError> {
        let owner = self
            .sessions
            .lock()
            .remove(id)
            .ok_or(CallError::SessionNotFound)?;
        if owner.has_ended() {
            return Err(CallError::SessionNotFound);
        }
        // Releases first, committed, then the end of the session: ended, the owner is granted
        // nothing more, so no grant of it can follow the session's end in the log — a leader
        // taking over from that log never restores a hold whose session is gone.
        let summary = self
            .service
            .engine()
            .release_owner(&owner, self.service.clock().now());
        self.all_recorded_committed().await?;
        self.commit(Command::SessionClosed { id }).await?;
        Ok(Answer::SessionClosed(summary.released))
    }
}

/// How long an ended client's owner is remembered: longer than any call of it can still be on
/// its way (a call looks for a leader for at most `CALL_DEADLINE`, 10 s).
const ENDED_OWNER_KEPT: std::time::Duration = std::time::Duration::from_secs(60);

/// A random 128-bit session id (a UUID v4's bits, as single-server sessions use).
fn uuid_v4() -> u128 {
    LockKey::generate().as_u128()
}

/// Commits the end of every REST session the leader's engine expires (idle too long): the
/// engine released its holds already; the log must forget the session too.
pub(super) fn expire_sessions(leader: &Arc<Leader>) -> tokio::task::JoinHandle<()> {
    let weak: Weak<Leader> = Arc::downgrade(leader);
    let mut expired = leader.service.expired_owners();
    tokio::spawn(async move {
        loop {
            let owner = match expired.recv().await {
                Ok(owner) => owner,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "Missed expired sessions");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let Some(leader) = weak.upgrade() else {
                return;
            };
            let id = leader.sessions.lock().remove_owner(owner);
            let Some(id) = id else { continue };
            // The engine released the session's holds before it reported the expiry: those
            // releases are committed first (see `close_session`).
            let released = leader
                .commits
                .wait(leader.service.engine().recorded_seq())
                .await;
            let closed = match released {
                Ok(()) => leader.commit(Command::SessionClosed { id }).await,
                Err(error) => Err(CallError::NotCommitted(error.to_string())),
            };
            if let Err(error) = closed {
                tracing::warn!(%error, "Could not commit a session's expiry");
            }
        }
    })
}
