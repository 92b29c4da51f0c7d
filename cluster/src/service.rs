//! [`ClusterLockService`]: the lock service of a cluster node, behind the same interface every
//! transport already uses.
//!
//! Every call goes to the leader: to this node's own leader state when it leads, over the peer
//! service otherwise. The client sees only the added latency of one hop. A call re-sends
//! itself when the answer cannot come from where it went — the leader changed, its node died,
//! the connection broke — to whichever node leads next, with what is left of its wait: an
//! acquire carries its request id, so a re-send gets the grant already made for it, never a
//! second one. A node that knows no leader yet (an election is running) waits, up to the
//! call's own deadline, instead of failing at once.
//!
//! The **seat** task watches Raft: when this node becomes leader it takes over (see
//! [`Leader::take_over`]) and publishes its leader state; when it stops leading, the state is
//! withdrawn and its engine shut down, so waiting calls fail and are re-sent by their nodes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ldlm_engine::{EngineConfig, Grant, LockKey, LockRequest, OwnerId, ReleaseSummary};
use ldlm_service::{
    Acquire, ClusterStatus, Disconnected, ListedHold, LocalOptions, LockService, MemberRole,
    MemberStatus, MembershipChange, ServiceError, ServiceStats, SessionId, Transport,
};
use openraft::ServerState;
use tokio::sync::mpsc;

use crate::command::GlobalOwner;
use crate::forward::{Answer, Call, CallError, GrantView, Via};
use crate::forwarder::{Forwarder, Unanswered};
use crate::leader::Leader;
use crate::node::ClusterNode;
use crate::owners;
use crate::raft::NodeId;

/// How long a call that does not wait for a lock may look for a leader and wait for its commit
/// before it answers "unavailable" (at this node's own leader too).
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// Pause between attempts while there is no leader to send a call to.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A client of this node: its cluster-wide id and the numbers of its requests.
#[derive(Clone, Debug)]
pub struct ClusterOwner {
    inner: Arc<OwnerState>,
}

#[derive(Debug)]
struct OwnerState {
    global: GlobalOwner,
    /// This node's id in the top bits, a counter below: request numbers of an owner that is
    /// used at several nodes (a REST session) never collide.
    next_seq: AtomicU64,
}

impl ClusterOwner {
    fn new(global: GlobalOwner, node: u64) -> ClusterOwner {
        ClusterOwner {
            inner: Arc::new(OwnerState {
                global,
                next_seq: AtomicU64::new(node << 48 | 1),
            }),
        }
    }

    /// Its cluster-wide id.
    pub fn global(&self) -> GlobalOwner {
        self.inner.global
    }

    fn next_seq(&self) -> u64 {
        self.inner.next_seq.fetch_add(1, Ordering::Relaxed)
    }
}

/// The lock service of one cluster node. See the module doc.
pub struct ClusterLockService {
    router: Arc<Router>,
    next_local: AtomicU64,
    session_timeout: Duration,
    expired: tokio::sync::broadcast::Sender<OwnerId>,
    seat: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Sends calls to the leader (see [`Router::call`]); shared with background re-sends.
struct Router {
    node: Arc<ClusterNode>,
    forwarder: Forwarder,
    shut_down: std::sync::atomic::AtomicBool,
    /// Out of contact with the cluster for half the session grace (see [`watch_contact`]).
    cut_off: std::sync::atomic::AtomicBool,
    /// Bumped to close every client connection.
    resets: tokio::sync::watch::Sender<u64>,
    /// When [`watch_contact`] last looked, in milliseconds since `started`: a node that was
    /// stopped (SIGSTOP, a long pause) sees it lag on its first steps after waking, before the
    /// watcher itself has run.
    last_contact_check: AtomicU64,
    started: Instant,
    /// This node's last round trip with its leader (see [`ping_leader`]): the leader, and
    /// the moment it is known to have been in contact with a quorum and this node alike.
    leader_contact: parking_lot::Mutex<Option<(NodeId, Instant)>>,
}

impl std::fmt::Debug for ClusterLockService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLockService")
            .field("node", &self.router.node.id())
            .finish_non_exhaustive()
    }
}

impl ClusterLockService {
    /// The lock service of `node`; it takes over as leader whenever the node is elected, with
    /// an engine configured by `engine` and sessions by `options`.
    pub fn start(
        node: Arc<ClusterNode>,
        engine: EngineConfig,
        options: LocalOptions,
    ) -> Arc<ClusterLockService> {
        let service = Arc::new(ClusterLockService {
            router: Arc::new(Router {
                node: node.clone(),
                forwarder: Forwarder::new(
                    node.password(),
                    node.tls().cloned(),
                    node.identity().clone(),
                )
                .expect("the password was checked when the node started"),
                shut_down: std::sync::atomic::AtomicBool::new(false),
                cut_off: std::sync::atomic::AtomicBool::new(false),
                resets: tokio::sync::watch::channel(0).0,
                last_contact_check: AtomicU64::new(0),
                started: Instant::now(),
                leader_contact: parking_lot::Mutex::new(None),
            }),
            next_local: AtomicU64::new(owners::first_local(node.incarnation())),
            session_timeout: options.session_timeout,
            expired: tokio::sync::broadcast::channel(16).0,
            seat: parking_lot::Mutex::new(Vec::new()),
        });
        // The clients of this node's earlier run (a crash, a kill) are gone: have the leader
        // release what they held, re-sending until one has.
        let router = service.router.clone();
        let restarted = Call::NodeRestarted {
            node: node.id(),
            run: owners::run_of(owners::first_local(node.incarnation())),
        };
        let cleanup = tokio::spawn(async move {
            loop {
                let deadline = Some(Instant::now() + CALL_DEADLINE);
                match router.call(restarted.clone(), deadline).await {
                    Ok(_) => return,
                    Err(error) => tracing::debug!(%error, "Releasing the earlier run's clients"),
                }
            }
        });
        let seat = tokio::spawn(seat(node, engine, options));
        let contact = tokio::spawn(watch_contact(Arc::downgrade(&service.router)));
        let ping = tokio::spawn(ping_leader(Arc::downgrade(&service.router)));
        let unanswered = service
            .router
            .forwarder
            .take_unanswered()
            .expect("the forwarder was just made");
        let give_back = tokio::spawn(give_back(Arc::downgrade(&service.router), unanswered));
        *service.seat.lock() = vec![seat, contact, ping, cleanup, give_back];
        service
    }

    /// The node this service runs on.
    pub fn node(&self) -> &Arc<ClusterNode> {
        &self.router.node
    }

    /// Resolves once the node's Raft core has stopped on its own (see
    /// [`ClusterNode::failure`]), with why, after cutting the node off for good: every client
    /// connection closed, every call answered `UNAVAILABLE`. A server that stops then must not
    /// keep its clients for a graceful shutdown's grace: the leader's session grace for them
    /// started when the core stopped.
    pub async fn failed(&self) -> String {
        let failure = self.node().failed().await;
        self.router.fail(&failure);
        failure
    }

    async fn call(&self, call: Call, deadline: Option<Instant>) -> Result<Answer, ServiceError> {
        self.router.call(call, deadline).await
    }

    fn deadline() -> Option<Instant> {
        Some(Instant::now() + CALL_DEADLINE)
    }
}

impl Router {
    /// Cuts this node off for good: its Raft core stopped (`failure`). See [`watch_contact`].
    fn fail(&self, failure: &str) {
        if !self.cut_off.swap(true, Ordering::AcqRel) {
            self.report_failure(failure);
        }
    }

    /// Logs a failed core and closes every client connection (the node was just cut off).
    fn report_failure(&self, failure: &str) {
        tracing::error!(
            %failure,
            "This node's Raft core stopped: closing client connections (their locks will be \
             released), answering UNAVAILABLE; restart the node once its data directory can \
             be written"
        );
        self.resets.send_modify(|epoch| *epoch += 1);
    }

    fn millis_since_start(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// True if this node stayed in contact with its cluster since [`Router::resets`] was at
    /// `resets_seen`: no lost contact was noticed, and the contact watcher has run within half
    /// the session grace (else this node was stopped, and its clients' locks may have been
    /// released by the leader meanwhile, unnoticed yet).
    fn kept_contact(&self, resets_seen: u64) -> bool {
        let limit = u64::try_from((self.node.session_grace() / 2).as_millis()).unwrap_or(u64::MAX);
        let since_check = self
            .millis_since_start()
            .saturating_sub(self.last_contact_check.load(Ordering::Acquire));
        *self.resets.borrow() == resets_seen
            && !self.cut_off.load(Ordering::Acquire)
            && since_check <= limit
    }

    /// `forwarded`, unless — for a call that waits for a lock — the cluster elects another
    /// leader than `leader` first: then `None`, and the call is re-sent there. A leader that
    /// is paused or cut off neither answers nor closes the connection; without this a Lock
    /// waiting there would wait for it to come back. Dropping the call cancels it at the old
    /// leader if it still runs (the waiter leaves its queue), and a grant it had already
    /// committed is found by the re-send's request id.
    async fn unless_leader_changes<T>(
        &self,
        leader: u64,
        waits: bool,
        forwarded: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        if !waits {
            return Some(forwarded.await);
        }
        let mut roles = self.node.roles();
        let changed = roles.wait_for(|m| m.current_leader.is_some_and(|l| l != leader));
        tokio::select! {
            answer = forwarded => Some(answer),
            _ = changed => None,
        }
    }

    /// Sends `call` to the leader, re-sending as the leader changes, until `deadline` (none:
    /// no limit).
    async fn call(&self, call: Call, deadline: Option<Instant>) -> Result<Answer, ServiceError> {
        let abandon = AbandonOnDrop::of(&self.forwarder, &call);
        let answer = self.attempts(call, deadline, &abandon.exposed).await;
        // An acquire given up without a sure answer (no leader answered in time, or one fell
        // before its commit) may still have been granted: abandoned as if its caller had gone.
        if !matches!(
            answer,
            Err(ServiceError::Unavailable(_) | ServiceError::NotCommitted(_))
        ) {
            abandon.disarm();
        }
        answer
    }

    /// [`Router::call`]'s attempts; `exposed` is set once one may have left a grant that
    /// only an abandon gives back (see [`AbandonOnDrop`]).
    async fn attempts(
        &self,
        mut call: Call,
        deadline: Option<Instant>,
        exposed: &AtomicBool,
    ) -> Result<Answer, ServiceError> {
        let started = Instant::now();
        let resets_seen = *self.resets.borrow();
        let waits = matches!(call, Call::Acquire { wait: true, .. });
        let original_wait = match &call {
            Call::Acquire {
                wait_timeout_seconds,
                wait: true,
                ..
            } => *wait_timeout_seconds,
            _ => None,
        };
        loop {
            if self.shut_down.load(Ordering::Acquire) {
                return Err(ServiceError::Lock(ldlm_engine::LockError::Shutdown));
            }
            // A cut-off node refuses its clients' calls, not its own housekeeping: the
            // release of a closed connection's locks goes out as soon as it can.
            if self.cut_off.load(Ordering::Acquire) && !call.is_housekeeping() {
                return Err(ServiceError::Unavailable(
                    "this node is cut off from its cluster: retry at another node".into(),
                ));
            }
            // A re-send waits only for what is left of the client's wait.
            if let (
                Some(secs),
                Call::Acquire {
                    wait_timeout_seconds,
                    ..
                },
            ) = (original_wait.filter(|&s| s > 0), &mut call)
            {
                let left = Duration::from_secs(secs as u64).saturating_sub(started.elapsed());
                *wait_timeout_seconds = Some(left.as_secs_f64().ceil().max(1.0) as i32);
            }
            let attempt = match self.node.leading() {
                Some(leader) if !leader.is_deposed() => {
                    exposed.store(true, Ordering::Relaxed);
                    // The deadline binds here too, as it binds a forwarded call's message: a
                    // leader that lost its quorum commits nothing and may not notice for long.
                    // Past it the call is dropped (its grant given back in the engine) and,
                    // below, answered "unavailable".
                    let served = leader.serve(call.clone());
                    match deadline {
                        Some(deadline) => {
                            tokio::time::timeout_at(deadline.into(), served).await.ok()
                        }
                        None => Some(served.await),
                    }
                }
                _ => match self.node.leader() {
                    Some(id) if id != self.node.id() => match self.node.address_of(id) {
                        Some(addr) => {
                            ldlm_service::metrics::record_forwarded();
                            let timeout =
                                deadline.map(|d| d.saturating_duration_since(Instant::now()));
                            let forwarded = self.forwarder.call(id, &addr, &call, timeout);
                            // A call that shares messages is given back by the forwarder if
                            // its caller goes away meanwhile.
                            if !call.travels_in_batches() {
                                exposed.store(true, Ordering::Relaxed);
                            }
                            let attempt = match self
                                .unless_leader_changes(id, waits, forwarded)
                                .await
                            {
                                Some(Ok(answer)) => Some(answer),
                                Some(Err(no_answer)) => {
                                    tracing::debug!(%no_answer, "Forwarded call got no answer; re-sending");
                                    ldlm_service::metrics::record_resent();
                                    None
                                }
                                None => {
                                    tracing::debug!(
                                        "The leader changed under a waiting call; re-sending"
                                    );
                                    ldlm_service::metrics::record_resent();
                                    None
                                }
                            };
                            // No sure answer: it may have been granted all the same, and from
                            // here it is this caller's to give back, not the forwarder's.
                            if matches!(
                                attempt,
                                None | Some(Err(
                                    CallError::NotLeader { .. } | CallError::NotCommitted(_)
                                ))
                            ) {
                                exposed.store(true, Ordering::Relaxed);
                            }
                            attempt
                        }
                        None => None,
                    },
                    _ => None,
                },
            };
            // A gRPC client holds its locks through its connection to this node, and takes
            // any answer on it as proof that the connection — and so its locks — are alive.
            // If this node lost contact with the cluster while the call was under way (or
            // was stopped before it), the leader may have released them by now and the
            // connection is about to be closed: no answer may go out on it any more.
            let answered = matches!(
                attempt,
                Some(Ok(_)) | Some(Err(CallError::Lock(_) | CallError::NotCommitted(_)))
            );
            if answered && call.via() == Some(Via::Grpc) && !self.kept_contact(resets_seen) {
                return Err(ServiceError::Unavailable(
                    "this node lost contact with its cluster while the call was under way; \
                     retry, here or at another node"
                        .into(),
                ));
            }
            match attempt {
                Some(Ok(answer)) => return Ok(answer),
                Some(Err(CallError::NotLeader { .. })) => ldlm_service::metrics::record_resent(),
                None => {}
                Some(Err(error)) => return Err(service_error(error)),
            }
            // The attempt may have been carried out with its answer lost: an Unlock sent again
            // must then be answered "unlocked", not "no such lock".
            if let Call::Unlock { name, key, via } = call {
                call = Call::UnlockAgain { name, key, via };
            }
            // Past the deadline nothing is re-sent. This matters for a call that shared a
            // message to the leader and got no answer because its deadline passed: if a grant
            // comes for it after all, the forwarder gives it back, so the same request must
            // not be granted to this caller again by a re-send.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(ServiceError::Unavailable(format!(
                    "no cluster leader answered within {:.1} s; retry, here or at another node",
                    started.elapsed().as_secs_f64()
                )));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// While [`Router::call`] serves an acquire: if its caller goes away, or gives up without a
/// sure answer (this is dropped armed), after an attempt that may have been granted with
/// nobody told, the leader is asked to give back whatever was granted for the request.
///
/// The attempts concerned ([`AbandonOnDrop::exposed`]) are those whose grant the forwarder
/// does not give back itself:
///
/// - a Lock that waits, sent alone and cancelled with its caller (so that it leaves the
///   leader's queue): a grant whose answer was on its way stays held;
/// - any attempt at this node's own leader: cancelled while its grant is being committed, it
///   is given back in the leader's engine, but if the leader falls before that release is
///   committed, the next leader restores the grant from its replica;
/// - an attempt whose outcome reached this caller without saying (no answer in time, or the
///   leader fell before its commit): the next leader may have the grant, and if the caller
///   does not re-send (it went away, or its deadline passed), nobody learns its key.
struct AbandonOnDrop<'a> {
    forwarder: &'a Forwarder,
    request: Option<(GlobalOwner, u64)>,
    /// Set by [`Router::attempts`] once an attempt may have been granted with nobody told.
    exposed: AtomicBool,
}

impl<'a> AbandonOnDrop<'a> {
    fn of(forwarder: &'a Forwarder, call: &Call) -> AbandonOnDrop<'a> {
        let request = match call {
            Call::Acquire { owner, seq, .. } => Some((*owner, *seq)),
            _ => None,
        };
        AbandonOnDrop {
            forwarder,
            request,
            exposed: AtomicBool::new(false),
        }
    }

    /// The call ended with its caller still there.
    fn disarm(mut self) {
        self.request = None;
    }
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        if let Some((owner, seq)) = self.request
            && self.exposed.load(Ordering::Relaxed)
        {
            self.forwarder.abandon(owner, seq);
        }
    }
}

fn service_error(error: CallError) -> ServiceError {
    match error {
        CallError::Lock(error) => ServiceError::Lock(error),
        CallError::NotCommitted(reason) => {
            ServiceError::NotCommitted(ldlm_service::NotCommitted(reason))
        }
        CallError::NotLeader { leader } => {
            ServiceError::Unavailable(format!("not the leader (the leader is {leader:?})"))
        }
        CallError::TooManySessions { limit } => ServiceError::TooManySessions { limit },
        CallError::SessionNotFound => ServiceError::SessionNotFound,
        CallError::Refused(reason) => ServiceError::Refused(reason),
    }
}

fn via(transport: Transport) -> Via {
    match transport {
        Transport::Grpc => Via::Grpc,
        Transport::Rest => Via::Rest,
    }
}

fn grant(view: GrantView) -> Grant {
    Grant {
        key: LockKey::from_u128(view.key),
        fencing_token: view.token,
        lease_deadline: None,
        durable_seq: 0,
    }
}

fn unexpected(answer: Answer) -> ServiceError {
    ServiceError::Unavailable(format!("unexpected answer from the leader: {answer:?}"))
}

impl LockService for ClusterLockService {
    type Owner = ClusterOwner;

    fn owner_id(owner: &ClusterOwner) -> OwnerId {
        owners::engine_id(owner.global())
    }

    fn connect(&self) -> ClusterOwner {
        let global = GlobalOwner {
            node: self.node().id(),
            local: self.next_local.fetch_add(1, Ordering::Relaxed),
        };
        ClusterOwner::new(global, self.node().id())
    }

    fn disconnect(&self, owner: &ClusterOwner) -> Disconnected {
        if self.is_shut_down() {
            return Disconnected::Kept;
        }
        // Told to the leader in the background (a closing connection waits for nobody), and
        // re-sent until a leader has committed the releases: giving up would leave the
        // client's locks held for ever, since this node is not gone and the leader never
        // releases them on its own. (If this node dies first, its restart releases them.)
        let call = Call::Disconnect {
            owner: owner.global(),
        };
        let router = self.router.clone();
        tokio::spawn(async move {
            let mut attempts = 0u32;
            loop {
                match router
                    .call(call.clone(), Some(Instant::now() + CALL_DEADLINE))
                    .await
                {
                    Ok(_) => return,
                    Err(_) if router.shut_down.load(Ordering::Acquire) => return,
                    Err(error) => {
                        attempts += 1;
                        if attempts == 1 {
                            tracing::warn!(%error, "A closed connection's locks are not released yet; retrying");
                        }
                        tokio::time::sleep(RETRY_PAUSE * attempts.min(20)).await;
                    }
                }
            }
        });
        Disconnected::Released(ReleaseSummary::default())
    }

    async fn open_session(&self) -> Result<SessionId, ServiceError> {
        match self.call(Call::OpenSession, Self::deadline()).await? {
            Answer::SessionOpened(id, _) => Ok(SessionId::from_u128(id)),
            other => Err(unexpected(other)),
        }
    }

    async fn session(&self, id: SessionId) -> Result<Option<ClusterOwner>, ServiceError> {
        let call = Call::TouchSession { id: id.as_u128() };
        match self.call(call, Self::deadline()).await? {
            Answer::Session(global) => {
                Ok(global.map(|global| ClusterOwner::new(global, self.node().id())))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn close_session(&self, id: SessionId) -> Result<ReleaseSummary, ServiceError> {
        match self
            .call(Call::CloseSession { id: id.as_u128() }, Self::deadline())
            .await?
        {
            Answer::SessionClosed(released) => Ok(ReleaseSummary {
                released,
                ..ReleaseSummary::default()
            }),
            other => Err(unexpected(other)),
        }
    }

    fn session_timeout(&self) -> Duration {
        self.session_timeout
    }

    fn expired_owners(&self) -> tokio::sync::broadcast::Receiver<OwnerId> {
        self.expired.subscribe()
    }

    async fn acquire(
        &self,
        transport: Transport,
        owner: &ClusterOwner,
        request: &LockRequest<'_>,
        mode: Acquire,
    ) -> Result<Option<Grant>, ServiceError> {
        let wait = mode == Acquire::Wait;
        let call = Call::Acquire {
            owner: owner.global(),
            seq: owner.next_seq(),
            name: request.name.to_owned(),
            size: request.size,
            lock_timeout_seconds: request.lock_timeout_seconds,
            wait_timeout_seconds: request.wait_timeout_seconds,
            wait,
            via: via(transport),
        };
        // A Lock waits as long as the client asked (forever without a wait timeout); the rest
        // of the time it looks for a leader to serve it.
        let deadline = if wait { None } else { Self::deadline() };
        match self.call(call, deadline).await? {
            Answer::Acquired(view) => Ok(view.map(grant)),
            other => Err(unexpected(other)),
        }
    }

    async fn unlock(
        &self,
        transport: Transport,
        _owner: &ClusterOwner,
        name: &str,
        key: &str,
    ) -> Result<(), ServiceError> {
        let call = Call::Unlock {
            name: name.to_owned(),
            key: key.to_owned(),
            via: via(transport),
        };
        match self.call(call, Self::deadline()).await? {
            Answer::Unlocked => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn refresh(
        &self,
        transport: Transport,
        _owner: &ClusterOwner,
        name: &str,
        key: &str,
        lock_timeout_seconds: i32,
    ) -> Result<Grant, ServiceError> {
        let call = Call::Refresh {
            name: name.to_owned(),
            key: key.to_owned(),
            lock_timeout_seconds,
            via: via(transport),
        };
        match self.call(call, Self::deadline()).await? {
            Answer::Refreshed(view) => Ok(grant(view)),
            other => Err(unexpected(other)),
        }
    }

    async fn force_unlock(&self, name: &str, key: Option<&str>) -> Result<LockKey, ServiceError> {
        let call = Call::ForceUnlock {
            name: name.to_owned(),
            key: key.map(str::to_owned),
        };
        match self.call(call, Self::deadline()).await? {
            Answer::ForceUnlocked(key) => Ok(LockKey::from_u128(key)),
            other => Err(unexpected(other)),
        }
    }

    async fn list(&self) -> Result<Vec<ListedHold>, ServiceError> {
        match self.call(Call::List, Self::deadline()).await? {
            Answer::Holds(holds) => Ok(holds
                .into_iter()
                .map(|hold| ListedHold {
                    name: hold.name.into(),
                    key: LockKey::from_u128(hold.key),
                    size: hold.size,
                    owner: OwnerId(hold.owner),
                    fencing_token: hold.token,
                    lease_remaining: hold.lease_remaining_ms.map(Duration::from_millis),
                })
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    fn stats(&self) -> ServiceStats {
        match self.node().leading() {
            Some(leader) => leader.service().stats(),
            None => ServiceStats::default(),
        }
    }

    fn connection_resets(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.router.resets.subscribe())
    }

    async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<ClusterStatus, ServiceError> {
        let call = match change {
            MembershipChange::Add { id, address } => {
                if id == 0 || id > 65_535 {
                    return Err(ServiceError::Refused(format!(
                        "{id} is not a node id: 1 to 65535"
                    )));
                }
                Call::AddMember { id, address }
            }
            MembershipChange::Remove { id } => Call::RemoveMember { id },
        };
        // A new member may take a while to catch up; the leader bounds it.
        let deadline = Some(Instant::now() + Duration::from_secs(80));
        let index = match self.call(call, deadline).await? {
            Answer::MembershipChanged { index } => index,
            other => return Err(unexpected(other)),
        };
        // This node's view once it has applied the change too (a follower learns of it a
        // heartbeat later).
        let mut metrics = self.node().metrics();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            metrics.wait_for(|m| m.last_applied.is_some_and(|id| id.index >= index)),
        )
        .await;
        self.cluster_status()
            .ok_or_else(|| ServiceError::Unavailable("no cluster status".into()))
    }

    fn cluster_status(&self) -> Option<ClusterStatus> {
        let node = self.node();
        let metrics = node.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(&id, member)| MemberStatus {
                id,
                address: member.addr.clone(),
                role: if Some(id) == metrics.current_leader {
                    MemberRole::Leader
                } else if id == node.id() && metrics.state == ServerState::Candidate {
                    MemberRole::Candidate
                } else if voters.contains(&id) {
                    MemberRole::Follower
                } else {
                    MemberRole::Learner
                },
                last_contact_ms: if id == node.id() {
                    Some(0)
                } else {
                    node.liveness()
                        .last_contact(id)
                        .map(|silence| u64::try_from(silence.as_millis()).unwrap_or(u64::MAX))
                },
            })
            .collect();
        let cluster_id = node.identity().id();
        Some(ClusterStatus {
            node_id: node.id(),
            cluster_id: (!cluster_id.is_nil()).then(|| cluster_id.to_string()),
            leader: metrics.current_leader,
            term: metrics.current_term,
            commit_index: node.committed().map(|id| id.index),
            applied_index: metrics.last_applied.map(|id| id.index),
            members,
        })
    }

    fn shutdown(&self) {
        self.router.shut_down.store(true, Ordering::Release);
        for task in self.seat.lock().drain(..) {
            task.abort();
        }
        // A leader that shuts down steps down: calls other nodes forwarded to it are re-sent
        // to the next leader, and the cluster goes on.
        if let Some(leader) = self.node().set_leading(None) {
            leader.step_down();
        }
    }

    fn is_shut_down(&self) -> bool {
        self.router.shut_down.load(Ordering::Acquire)
    }
}

/// How often a node checks whether it is in contact with its cluster.
const CONTACT_CHECK: Duration = Duration::from_millis(100);

/// Watches this node's contact with the cluster: a follower that has not heard from its leader
/// (or known any leader), or a leader that has not heard from a quorum, for half the session
/// grace is **cut off**. It closes every client connection — so each client learns it may have
/// lost its locks before the leader, after the whole grace, gives them to anyone else (the
/// factor 2 is the margin for clocks that run at different rates) — and answers `UNAVAILABLE`
/// until it is back in contact.
async fn watch_contact(router: Weak<Router>) {
    let mut ticks = tokio::time::interval(CONTACT_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leader_seen: (Option<u64>, Instant) = (None, Instant::now());
    let mut last_tick = Instant::now();
    loop {
        ticks.tick().await;
        let Some(router) = router.upgrade() else {
            return;
        };
        let node = &router.node;
        let limit = node.session_grace() / 2;
        let metrics = node.metrics().borrow().clone();
        if metrics.current_leader != leader_seen.0 {
            leader_seen = (metrics.current_leader, Instant::now());
        }
        // Silence counts from when this node learned of its leader, not from before: a new
        // leader is heard from within a heartbeat.
        let known_for = leader_seen.1.elapsed();
        let silence = match metrics.current_leader {
            Some(leader) if leader == node.id() => metrics
                .millis_since_quorum_ack
                .map_or(Duration::ZERO, Duration::from_millis),
            // Only since this node knows it as leader: a leader counts this node's silence
            // from its own election.
            Some(leader) => {
                let contact = *router.leader_contact.lock();
                contact
                    .filter(|&(id, _)| id == leader)
                    .map_or(Duration::MAX, |(_, at)| at.elapsed())
                    .min(known_for)
            }
            None => known_for,
        };
        // This node itself may have been stopped (SIGSTOP, a long pause): then its clients
        // were out of contact for that long, even if the leader is heard from again by now.
        let stalled = last_tick.elapsed();
        last_tick = Instant::now();
        // A Raft core that stopped on an error (its log could not be written) leaves its last
        // metrics behind, as if nothing had happened: a leader's quorum contact stays as
        // recent as it was. Meanwhile the others elect a leader without this node and, after
        // the grace, release its clients' locks; so it is cut off for good.
        let failure = node.failure();
        let cut_off = silence > limit || failure.is_some();
        let lost_contact = cut_off || stalled > limit;
        let was_cut_off = router.cut_off.swap(cut_off, Ordering::AcqRel);
        if let Some(failure) = failure.filter(|_| !was_cut_off) {
            router.report_failure(&failure);
        } else if lost_contact && !was_cut_off {
            tracing::warn!(
                silence_ms = silence.max(stalled).as_millis() as u64,
                "Out of contact with the cluster: closing client connections (their locks may \
                 be released), answering UNAVAILABLE until back in contact"
            );
            router.resets.send_modify(|epoch| *epoch += 1);
        } else if was_cut_off && !cut_off {
            tracing::warn!("Back in contact with the cluster");
        }
        // Only now, after any reset above: a call that sees this check as recent also sees
        // the reset.
        router
            .last_contact_check
            .store(router.millis_since_start(), Ordering::Release);
    }
}

/// Keeps [`Router::leader_contact`] current: while this node follows, it pings its leader ten
/// times per half session grace (a lost ping or two must not cut it off). An answer proves a round trip: the leader heard this
/// node after the ping was sent (so the leader does not count it as gone before then), and it
/// was itself in contact with a quorum `quorum_ack_ms` before it answered (so it still led
/// then: a leader cut off from the others, which a new leader is elected without, answers a
/// stale number and this node counts its contact as that old). One-way contact — heartbeats
/// arriving, or answers getting out — is not enough: under a one-way network failure the
/// leader would release this node's clients while this node, hearing the leader, served them.
async fn ping_leader(router: Weak<Router>) {
    loop {
        let Some(router) = router.upgrade() else {
            return;
        };
        let node = &router.node;
        let limit = node.session_grace() / 2;
        // A node whose Raft core stopped does not ping: it must look gone to the leader, which
        // then releases its clients' locks after the grace.
        if node.failure().is_none()
            && let Some(leader) = node.leader().filter(|&id| id != node.id())
            && let Some(addr) = node.address_of(leader)
        {
            let sent = Instant::now();
            let ping = Call::Ping { from: node.id() };
            // A leader that does not answer (paused, cut off) must not hold up the pings to
            // the next one: give up when another is elected, and within half the limit.
            let answer = router
                .unless_leader_changes(
                    leader,
                    true,
                    router.forwarder.call(leader, &addr, &ping, Some(limit / 2)),
                )
                .await;
            if let Some(Ok(Ok(Answer::Pong { quorum_ack_ms }))) = answer
                && let Some(contact) = sent.checked_sub(Duration::from_millis(quorum_ack_ms))
            {
                *router.leader_contact.lock() = Some((leader, contact));
            }
        }
        let pause = (limit / 10).max(Duration::from_millis(10));
        drop(router);
        tokio::time::sleep(pause).await;
    }
}

/// Gives back what was granted to callers that had gone (see [`crate::forwarder`]): no slot
/// may stay held under a key nobody learned. Each is re-sent until the cluster has done it, or
/// says there is nothing to give back (its lease ran out, its client's connection closed), for
/// at most a minute: a leader of an older build cannot read an abandoned request, and a hold
/// left then ends with its lease or its client's connection, as it did before.
async fn give_back(router: Weak<Router>, mut unanswered: mpsc::UnboundedReceiver<Unanswered>) {
    const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
    while let Some(unanswered) = unanswered.recv().await {
        let Some(router) = router.upgrade() else {
            return;
        };
        let call = match unanswered {
            Unanswered::Grant { name, key, via } => Call::Unlock {
                name,
                key: LockKey::from_u128(key).to_string(),
                via,
            },
            Unanswered::Request { owner, seq } => Call::Abandon { owner, seq },
        };
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                match router
                    .call(call.clone(), Some(Instant::now() + CALL_DEADLINE))
                    .await
                {
                    Ok(_) | Err(ServiceError::Lock(_)) => return,
                    Err(error) if started.elapsed() >= GIVE_UP_AFTER => {
                        tracing::warn!(%error, ?call, "Could not give back a grant nobody received");
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "Giving back a grant nobody received; retrying");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
        });
    }
}

/// The seat task: takes over when this node is elected, steps down when it is not any more.
async fn seat(node: Arc<ClusterNode>, engine: EngineConfig, options: LocalOptions) {
    let mut roles = node.roles();
    loop {
        let (state, term) = {
            let m = roles.borrow_and_update();
            (m.state, m.vote.leader_id().term)
        };
        let current = node.leading();
        let leads = state == ServerState::Leader;
        match current {
            Some(leader) if !leads || leader.term() != term || leader.is_deposed() => {
                tracing::info!(term = leader.term(), "Stepping down as cluster leader");
                node.set_leading(None);
                leader.step_down();
                continue;
            }
            None if leads => {
                match Leader::take_over(&node, term, engine.clone(), options.clone()).await {
                    Ok(leader) => {
                        node.set_leading(Some(leader));
                    }
                    Err(error) => tracing::warn!(%error, term, "Could not take over as leader"),
                }
            }
            _ => {}
        }
        if roles.changed().await.is_err() {
            return;
        }
    }
}
