//! The leader's lock service: the single-server engine, with its changes committed through the
//! Raft log instead of a state file.
//!
//! - [`RaftSink`] is the engine's event sink: each event becomes a [`ReplicatedEvent`] with a
//!   sequence number, queued under a short mutex (the engine calls it under a shard mutex).
//! - The **committer** moves everything queued into one log entry (group commit) and hands it
//!   to Raft without waiting; a second task awaits the entries in log order and reports each
//!   one's last sequence number to the lock service's [`Commits`] once it is committed on a
//!   quorum. Raft commits in log order, so a committed entry means every earlier one is too. At
//!   most [`MAX_IN_FLIGHT`] entries are pending: beyond that, events wait and later entries
//!   grow (more events per entry) instead of the queue.
//! - [`Leader::take_over`] builds it all when this node becomes leader: it first waits until
//!   everything committed before its term is applied (openraft's blank entry of the new term),
//!   then restores every hold of the replica into a fresh engine — same key, owner and token,
//!   a lease of its own length from now (it may end late, never early) — with tokens
//!   continuing above the highest ever committed. Only then does it answer anything.
//! - If a commit fails (leadership lost, or Raft stopped), every grant waiting for it fails and
//!   is given back, and the leader is [`Leader::is_deposed`]: its engine must not be used
//!   again, since it may hold changes the log will not have.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ldlm_engine::{Engine, EngineConfig, Event, EventSink, HoldRecord, LockKey};
use ldlm_service::{
    Clock, CommitSender, LocalLockService, LocalOptions, LockService as _, TimerDriver,
    commit_channel,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::command::{Command, ReplicatedEvent, RequestId};
use crate::node::ClusterNode;
use crate::owners;
use crate::raft::TypeConfig;

/// Most log entries the committer has handed to Raft and not yet seen committed.
pub const MAX_IN_FLIGHT: usize = 64;

/// Events waiting to be handed to Raft.
#[derive(Default)]
struct Queued {
    events: Vec<ReplicatedEvent>,
    /// Sequence number of the last event queued.
    seq: u64,
}

/// The leader engine's event sink. See the module doc.
#[derive(Default)]
pub struct RaftSink {
    queued: Mutex<Queued>,
    wake: Notify,
}

impl EventSink for RaftSink {
    fn record(&self, event: Event<'_>) -> u64 {
        let replicated = match event {
            Event::Granted {
                name,
                key,
                size,
                owner,
                fencing_token,
                lease_seconds,
                tag,
            } => {
                let owner = owners::global(owner);
                ReplicatedEvent::Granted {
                    name: name.to_owned(),
                    key: key.as_u128(),
                    size,
                    owner,
                    token: fencing_token,
                    lease_secs: lease_seconds.unwrap_or(0),
                    // A tagged request's tag is its number among its owner's requests.
                    request: (tag != 0).then_some(RequestId { owner, seq: tag }),
                }
            }
            Event::LeaseChanged {
                name,
                key,
                lease_seconds,
            } => ReplicatedEvent::LeaseChanged {
                name: name.to_owned(),
                key: key.as_u128(),
                lease_secs: lease_seconds,
            },
            Event::Released { name, key } => ReplicatedEvent::Released {
                name: name.to_owned(),
                key: key.as_u128(),
            },
        };
        let seq = {
            let mut queued = self.queued.lock();
            queued.events.push(replicated);
            queued.seq += 1;
            queued.seq
        };
        self.wake.notify_one();
        seq
    }
}

impl RaftSink {
    fn take(&self) -> (Vec<ReplicatedEvent>, u64) {
        let mut queued = self.queued.lock();
        (std::mem::take(&mut queued.events), queued.seq)
    }
}

/// This node's term as leader: the engine, its lock service and the committer.
pub struct Leader {
    service: Arc<LocalLockService>,
    term: u64,
    deposed: Arc<AtomicBool>,
    _timers: TimerDriver,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader")
            .field("term", &self.term)
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
    ) -> Result<Leader, TakeOverError> {
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
        let (sender, commits) = commit_channel();
        let deposed = Arc::new(AtomicBool::new(false));
        let tasks = start_committer(raft, sink, sender, deposed.clone());
        let service = LocalLockService::new(
            engine,
            clock,
            LocalOptions {
                commits: Some(commits),
                ..options
            },
        );
        let timers = service.start_timers();
        tracing::info!(term, holds = records.len(), "Took over as cluster leader");
        Ok(Leader {
            service,
            term,
            deposed,
            _timers: timers,
            tasks,
        })
    }

    /// The lock service of this term.
    pub fn service(&self) -> &Arc<LocalLockService> {
        &self.service
    }

    /// The term this node leads.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// True once a commit failed: this engine may hold changes the log will not have.
    pub fn is_deposed(&self) -> bool {
        self.deposed.load(Ordering::Acquire)
    }

    /// Steps down: stops granting (waiters are told) and stops committing.
    pub fn step_down(self) {
        self.deposed.store(true, Ordering::Release);
        self.service.shutdown();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the committer's two tasks (see the module doc).
fn start_committer(
    raft: openraft::Raft<TypeConfig>,
    sink: Arc<RaftSink>,
    commits: CommitSender,
    deposed: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (in_flight, mut pending) = mpsc::channel(MAX_IN_FLIGHT);
    let send = tokio::spawn(async move {
        loop {
            sink.wake.notified().await;
            let (events, last) = sink.take();
            if events.is_empty() {
                continue;
            }
            match raft.client_write_ff(Command::Events(events)).await {
                Ok(receiver) => {
                    if in_flight.send((receiver, last)).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "Raft stopped: cannot commit");
                    return;
                }
            }
        }
    });
    let confirm = tokio::spawn(async move {
        while let Some((receiver, last)) = pending.recv().await {
            let committed: Result<_, String> = match receiver.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("Raft stopped".into()),
            };
            match committed {
                Ok(()) => commits.committed(last),
                Err(reason) => {
                    deposed.store(true, Ordering::Release);
                    commits.failed(&format!(
                        "not committed: this node is no longer the leader ({reason}); retry"
                    ));
                    tracing::warn!(%reason, "A commit failed: stepping down");
                    return;
                }
            }
        }
        // The sender stopped (Raft stopped): nothing queued can be committed by this leader.
        deposed.store(true, Ordering::Release);
        commits.failed("not committed: this node stopped being the leader; retry");
    });
    vec![send, confirm]
}
