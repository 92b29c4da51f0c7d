//! The leader engine's event sink and the committer: engine events become log entries, and
//! grants become answerable once their entry is committed. See the parent module's doc.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ldlm_engine::{Event, EventSink};
use ldlm_service::CommitSender;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::command::{Command, ReplicatedEvent, RequestId};
use crate::owners;
use crate::raft::TypeConfig;
use crate::storage::StateMachine;

/// Log entries the committer may have handed to Raft and not yet seen committed, beyond the
/// one it is waiting for: with one more, the next entry is on its way while one commits.
///
/// Group commit. Events that arrive while the pipeline is full wait in the sink and go out
/// together as the next entry, so each entry, log write and fsync carries many grants and
/// releases. With a deep pipeline every event left at once in an entry of its own, and each
/// fsync covered about two requests: a 3-node cluster did half the TryLock+Unlock cycles per
/// second with 16 clients (BENCHMARKS.md).
pub const MAX_IN_FLIGHT: usize = 1;

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

    fn last_seq(&self) -> u64 {
        self.queued.lock().seq
    }
}

impl RaftSink {
    pub(super) fn take(&self) -> (Vec<ReplicatedEvent>, u64) {
        let mut queued = self.queued.lock();
        (std::mem::take(&mut queued.events), queued.seq)
    }
}

/// Starts the committer's two tasks (see the module doc).
pub(super) fn start_committer(
    raft: openraft::Raft<TypeConfig>,
    machine: StateMachine,
    sink: Arc<RaftSink>,
    commits: Arc<CommitSender>,
    deposed: Arc<AtomicBool>,
    broken: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (in_flight, mut pending) = mpsc::channel(MAX_IN_FLIGHT);
    let send = tokio::spawn(async move {
        loop {
            sink.wake.notified().await;
            // Wait for room in the pipeline first, so events that arrive meanwhile join
            // this entry instead of making entries of their own.
            let Ok(permit) = in_flight.reserve().await else {
                return;
            };
            if broken {
                tokio::time::sleep(super::broken_double::COMMIT_DELAY).await;
            }
            let (events, last) = sink.take();
            if events.is_empty() {
                continue;
            }
            // The state machine reports the commit as it applies the entry; openraft's answer
            // (awaited below) comes three task hand-offs later, and reports failures.
            machine.expect_commit(last);
            match raft.client_write_ff(Command::Events(events)).await {
                Ok(receiver) => permit.send((receiver, last)),
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
