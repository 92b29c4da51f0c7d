//! The leader's lock service: the single-server engine, with its changes committed through the
//! Raft log instead of a state file.
//!
//! - [`RaftSink`] is the engine's event sink: each event becomes a [`ReplicatedEvent`] with a
//!   sequence number, queued under a short mutex (the engine calls it under a shard mutex).
//! - The **committer** moves everything queued into one log entry (group commit) and hands it
//!   to Raft without waiting. The entry's last sequence number is reported to the lock
//!   service's [`Commits`] once it is committed on a quorum: by this node's state machine as it
//!   applies the entry (the commit hook of [`StateMachine`], the earliest point openraft shows
//!   a commit), and again by a second task that awaits openraft's answers in log order and
//!   reports failures. Raft commits in log order, so a committed entry means every earlier one
//!   is too. At most [`MAX_IN_FLIGHT`] + 1 entries are pending (two): meanwhile events wait in
//!   the sink and the next entry grows (more events per entry, per log write and per fsync)
//!   instead of the queue.
//! - [`Leader::take_over`] builds it all when this node becomes leader: it first waits until
//!   everything committed before its term is applied (openraft's blank entry of the new term),
//!   then restores every hold of the replica into a fresh engine — same key, owner and token,
//!   a lease of its own length from now (it may end late, never early) — with tokens
//!   continuing above the highest ever committed. Only then does it answer anything.
//! - If a commit fails (leadership lost, or Raft stopped), every grant waiting for it fails and
//!   is given back, and the leader is [`Leader::is_deposed`]: its engine must not be used
//!   again, since it may hold changes the log will not have.

mod abandoned;
mod broken_double;
mod calls;
mod gone;
mod membership;
mod sessions;
mod sink;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ldlm_engine::{Engine, EngineConfig, HoldRecord, LockKey, Owner};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::command::{Command, GlobalOwner, RequestId};
use crate::raft::{CommittedLeaderId, TypeConfig};
use crate::storage::StateMachine;
use ldlm_service::{
    Clock, LocalLockService, LocalOptions, LockService as _, TimerDriver, commit_channel,
};

use crate::node::ClusterNode;
use crate::owners;

use sink::start_committer;
pub use sink::{MAX_IN_FLIGHT, RaftSink};

/// This node's term as leader: the engine, its lock service and the committer.
pub struct Leader {
    service: Arc<LocalLockService>,
    /// The term and this node: what the log ids of this term's entries carry.
    leader_id: CommittedLeaderId,
    deposed: Arc<AtomicBool>,
    raft: openraft::Raft<TypeConfig>,
    machine: StateMachine,
    /// Durable progress of this term's events.
    commits: ldlm_service::Commits,
    /// Engine owners of the clients that called, by cluster-wide id (ended ones too, for a
    /// while: see `calls.rs`).
    owners: Mutex<HashMap<GlobalOwner, Owner>>,
    /// Ended owners in the order they ended, to forget them after a while.
    tombstones: Mutex<std::collections::VecDeque<(std::time::Instant, GlobalOwner)>>,
    /// Live REST sessions.
    sessions: Mutex<sessions::LiveSessions>,
    session_timeout: Duration,
    max_sessions: usize,
    /// Acquires being handled here, by request id: a re-send waits for the first one.
    inflight: Mutex<HashMap<RequestId, watch::Receiver<()>>>,
    /// Acquires whose callers went away, for a while (see `abandoned.rs`).
    abandoned: Mutex<abandoned::Abandoned>,
    _timers: TimerDriver,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader")
            .field("term", &self.leader_id.term)
            .field("deposed", &self.is_deposed())
            .finish_non_exhaustive()
    }
}

/// Why a node could not take over as leader.
#[derive(Debug, thiserror::Error)]
pub enum TakeOverError {
    /// It is not the leader (any more).
    #[error("not the leader: {0}")]
    NotLeader(String),
    /// The replica could not be restored into an engine (a bug: it was checked when applied).
    #[error("cannot restore the replica: {0}")]
    Restore(String),
}

impl Leader {
    /// Takes over as leader of `node` in `term`. See the module doc.
    pub async fn take_over(
        node: &ClusterNode,
        term: u64,
        engine: EngineConfig,
        options: LocalOptions,
    ) -> Result<Arc<Leader>, TakeOverError> {
        let raft = node.raft().clone();
        raft.ensure_linearizable()
            .await
            .map_err(|e| TakeOverError::NotLeader(e.to_string()))?;
        let replica = node.replica().await;
        let clock = Clock::new();
        let sink = Arc::new(RaftSink::default());
        let engine = Engine::with_event_sink(engine, clock.now(), sink.clone())
            .map_err(|e| TakeOverError::Restore(e.to_string()))?;
        let records: Vec<HoldRecord> = replica
            .locks()
            .iter()
            .flat_map(|(name, lock)| {
                lock.holders.iter().map(move |hold| HoldRecord {
                    name: name.clone(),
                    key: LockKey::from_u128(hold.key),
                    size: lock.size,
                    fencing_token: hold.token,
                    lease_seconds: (hold.lease_secs > 0).then_some(hold.lease_secs),
                    owner: owners::engine_id(hold.owner),
                })
            })
            .collect();
        engine
            .restore(&records, None, replica.max_token(), clock.now())
            .map_err(|e| TakeOverError::Restore(e.to_string()))?;
        // Sessions restart their idle timer: a session may live a little longer, never less.
        let mut sessions = sessions::LiveSessions::default();
        for (&id, session) in replica.sessions() {
            let idle = Duration::from_millis(session.idle_ms);
            let owner = owners::engine_id(session.owner);
            sessions.insert(id, engine.session_with_id(owner, idle, clock.now()));
        }
        let (sender, commits) = commit_channel();
        let sender = Arc::new(sender);
        let deposed = Arc::new(AtomicBool::new(false));
        let broken = broken_double::answers_before_commit();
        let leader_id = CommittedLeaderId::new(term, node.id());
        node.machine().watch_commits(leader_id, sender.clone());
        let mut tasks = start_committer(
            raft.clone(),
            node.machine().clone(),
            sink,
            sender,
            deposed.clone(),
            broken,
        );
        let session_timeout = options.session_timeout;
        let max_sessions = options.max_sessions;
        let service = LocalLockService::new(
            engine,
            clock,
            LocalOptions {
                commits: (!broken).then(|| commits.clone()),
                // "unlocked" only once the release is committed: the next leader must not
                // bring back a lock its holder was told it had let go.
                commit_releases: !broken,
                ..options
            },
        );
        let timers = service.start_timers();
        tracing::info!(
            term,
            holds = records.len(),
            sessions = sessions.len(),
            max_token = replica.max_token(),
            applied = ?raft.metrics().borrow().last_applied,
            "Took over as cluster leader"
        );
        ldlm_service::metrics::record_takeover();
        let leader = Arc::new(Leader {
            service,
            leader_id,
            deposed,
            raft,
            machine: node.machine().clone(),
            commits,
            owners: Mutex::new(HashMap::new()),
            tombstones: Mutex::new(std::collections::VecDeque::new()),
            sessions: Mutex::new(sessions),
            session_timeout,
            max_sessions,
            inflight: Mutex::new(HashMap::new()),
            abandoned: Mutex::default(),
            _timers: timers,
            tasks: Mutex::new(Vec::new()),
        });
        tasks.push(calls::expire_sessions(&leader));
        tasks.push(gone::start(
            &leader,
            node.id(),
            node.liveness().clone(),
            node.session_grace(),
        ));
        *leader.tasks.lock() = tasks;
        Ok(leader)
    }

    /// The lock service of this term.
    pub fn service(&self) -> &Arc<LocalLockService> {
        &self.service
    }

    /// The term this node leads.
    pub fn term(&self) -> u64 {
        self.leader_id.term
    }

    /// True once a commit failed: this engine may hold changes the log will not have.
    pub fn is_deposed(&self) -> bool {
        self.deposed.load(Ordering::Acquire)
    }

    /// Appends `command` and waits until it is committed.
    async fn commit(&self, command: Command) -> Result<(), crate::forward::CallError> {
        self.raft
            .client_write(command)
            .await
            .map(|_| ())
            .map_err(|e| crate::forward::CallError::NotCommitted(format!("not committed: {e}")))
    }

    /// Steps down: stops granting (waiters are told) and stops committing.
    pub fn step_down(&self) {
        self.deposed.store(true, Ordering::Release);
        self.machine.stop_watching(self.leader_id);
        self.service.shutdown();
        for task in self.tasks.lock().iter() {
            task.abort();
        }
    }
}
